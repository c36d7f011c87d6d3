#!/usr/bin/env bash
# `make santander-api`: the santander model trained by ml-api's own training API from a CSV
# in the Kaggle train_ver2.csv layout, then served at /predict, and compared with the
# skl2onnx pipeline on the same rows (models/santander/through_api.py says how).
#
# Starts `ml-api serve` (release build, embedded registry, a fresh dataset store under
# .run/santander-api) on a free port, runs the script against it, stops the server (by PID).
#   SANTANDER_ROWS=N   synthetic customers (default: train.py's 80,000)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.31.1}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
"${CARGO:-cargo}" build --locked --release --bin ml-api
PY="$(scripts/python-venv.sh | tail -n 1)"
WORK=.run/santander-api
rm -rf "$WORK" && mkdir -p "$WORK"
"$TARGET_DIR/release/ml-api" --log-format json serve --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --rate-limit false \
    --dataset-store "$WORK/datasets" >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 1 600); do
    addr="$(grep -m1 '"message":"serving"' "$WORK/serve.log" | sed -E 's/.*"addr":"([^"]+)".*/\1/' || true)"
    [[ -n "$addr" ]] && break
    kill -0 "$SERVER" || { cat "$WORK/serve.log"; exit 1; }
    sleep 0.1
done
[[ -n "$addr" ]] || { echo "ml-api did not start" >&2; exit 1; }
args=(--base "http://$addr" --work-dir "$WORK")
if [[ -n "${SANTANDER_ROWS:-}" ]]; then
    args+=(--rows "$SANTANDER_ROWS")
fi
"$PY" models/santander/through_api.py "${args[@]}"
