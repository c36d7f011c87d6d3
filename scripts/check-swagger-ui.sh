#!/usr/bin/env bash
# Renders /docs in headless Chromium with every host but loopback unresolvable, and checks
# that Swagger UI drew the /predict operation: proof the UI works offline (vendored assets).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${ML_API_BIN:-${CARGO_TARGET_DIR:-target}/debug/ml-api}"
[[ -x "$BIN" ]] || cargo build --locked
RUN_DIR="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

"$BIN" --log-format json serve --addr "127.0.0.1:$PORT" --rate-limit false >"$RUN_DIR/server.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$RUN_DIR"' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$RUN_DIR/server.log"; echo "check-swagger-ui: server not ready" >&2; exit 1; }

timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --user-data-dir="$RUN_DIR/chromium" --virtual-time-budget=8000 \
  --dump-dom "http://127.0.0.1:$PORT/docs/" >"$RUN_DIR/dom.html" 2>"$RUN_DIR/chromium.log" || true

for want in 'data-path="/predict"' 'data-path="/healthz"' 'data-path="/readyz"' 'ml-api'; do
  if ! grep -q -- "$want" "$RUN_DIR/dom.html"; then
    echo "check-swagger-ui: FAILED, rendered /docs lacks $want" >&2
    head -c 2000 "$RUN_DIR/dom.html" >&2
    exit 1
  fi
done
echo "check-swagger-ui: Swagger UI rendered /predict, /healthz and /readyz offline"
