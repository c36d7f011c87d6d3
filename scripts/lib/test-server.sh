# Sourced by check scripts: starts the debug `ml-api serve` (bundled model, embedded registry,
# rate limiting off) on a free loopback port, gRPC on another, and waits until it is ready.
# Sets BASE_URL, GRPC_ADDR (host:port), SERVER_PID and RUN_DIR; stops the server by PID and
# removes RUN_DIR on exit.
# shellcheck source=ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

start_test_server() {
  local bin="${ML_API_BIN:-${CARGO_TARGET_DIR:-target}/debug/ml-api}"
  [[ -x "$bin" ]] || cargo build --locked
  RUN_DIR="$(mktemp -d)"
  local port grpc_port
  free_ports port grpc_port
  BASE_URL="http://127.0.0.1:$port"
  GRPC_ADDR="127.0.0.1:$grpc_port"
  "$bin" --log-format json serve --addr "127.0.0.1:$port" --grpc-addr "$GRPC_ADDR" --rate-limit false \
    --dataset-store "$RUN_DIR/datasets" >"$RUN_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; rm -rf "$RUN_DIR"' EXIT
  for _ in $(seq 1 200); do
    curl -fsS "$BASE_URL/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$RUN_DIR/server.log" >&2
  echo "$(basename "$0"): the server did not become ready" >&2
  exit 1
}
