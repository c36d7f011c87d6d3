#!/usr/bin/env bash
# Renders /docs in headless Chromium with every host but loopback unresolvable, and checks
# that Swagger UI drew the /predict operation: proof the UI works offline (vendored assets).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/test-server.sh
start_test_server

timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --user-data-dir="$RUN_DIR/chromium" --virtual-time-budget=8000 \
  --dump-dom "$BASE_URL/docs/" >"$RUN_DIR/dom.html" 2>"$RUN_DIR/chromium.log" || true

for want in 'data-path="/predict"' 'data-path="/healthz"' 'data-path="/readyz"' 'ml-api'; do
  if ! grep -q -- "$want" "$RUN_DIR/dom.html"; then
    echo "check-swagger-ui: FAILED, rendered /docs lacks $want" >&2
    head -c 2000 "$RUN_DIR/dom.html" >&2
    exit 1
  fi
done
echo "check-swagger-ui: Swagger UI rendered /predict, /healthz and /readyz offline"
