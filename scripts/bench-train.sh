#!/usr/bin/env bash
# `make bench-train`: ml-api's training from data sets against pandas + scikit-learn (one
# thread), on synthetic CSVs written in the same run; then a 10,000,000 x 20 CSV generated on
# the fly. See scripts/bench_train.py for what is timed, and docs/performance.md (Training)
# for the last table.
#
# Environment:
#   BENCH_TRAIN_SKIP_HUGE=1     skip the 10M x 20 run (about 2 GB streamed)
#   BENCH_TRAIN_HUGE_ROWS=N     rows of that run (default 10,000,000)
#   BENCH_TRAIN_ROUNDS=N        paired rounds of the two compared cases (default 5)
#   CARGO_TARGET_DIR            honoured when looking for the binary
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.31.1}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
"${CARGO:-cargo}" build --locked --release --bin ml-api
PY="$(scripts/python-venv.sh | tail -n 1)"
args=(--bin "$TARGET_DIR/release/ml-api" --huge-rows "${BENCH_TRAIN_HUGE_ROWS:-10000000}"
    --rounds "${BENCH_TRAIN_ROUNDS:-5}")
if [[ "${BENCH_TRAIN_SKIP_HUGE:-0}" == "1" ]]; then
    args+=(--skip-huge)
fi
rm -rf .run/bench-train/store-*
exec "$PY" scripts/bench_train.py "${args[@]}"
