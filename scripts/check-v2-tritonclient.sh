#!/usr/bin/env bash
# The Open Inference Protocol (V2), driven by the official tritonclient (PyPI): over REST with
# tritonclient[http], over gRPC with tritonclient[grpc].
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/test-venv.sh
ensure_test_venv

source scripts/lib/test-server.sh
start_test_server
"$TEST_VENV/bin/python" tests/v2/tritonclient_check.py "$BASE_URL"
"$TEST_VENV/bin/python" tests/v2/tritonclient_grpc_check.py "$BASE_URL" "$GRPC_ADDR"
