#!/usr/bin/env bash
# Installs what `make test` needs beyond the Rust toolchain. Idempotent and quick when done.
#   - ONNX Runtime shared library (from the PyPI wheel): scripts/fetch-onnxruntime.sh
#   - headless Chromium (Debian) for the offline Swagger UI check
#   - redis-server (Debian): tests start their own, on a free loopback port
#   - nginx (Debian): the quota test runs the ingress configuration in front of two replicas
#   - cargo-lambda (PyPI, a static binary) in .tools/venv-lambda: the Lambda tests run the
#     prebuilt binary under its Runtime API emulator (`cargo lambda watch --only-lambda-apis`)
set -euo pipefail
# shellcheck source=lib/retry.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/retry.sh"
cd "$(dirname "$0")/.."

scripts/fetch-onnxruntime.sh .ort/lib

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)

if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "install-test-tools: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --no-deps: cargo-lambda's ziglang dependency (101 MB) is only needed to cross-compile.
CARGO_LAMBDA_VERSION=1.9.2
LAMBDA_VENV=.tools/venv-lambda
if [[ "$("$LAMBDA_VENV/bin/cargo-lambda" lambda --version 2>/dev/null)" != *" $CARGO_LAMBDA_VERSION"* ]]; then
  [[ -x "$LAMBDA_VENV/bin/python" ]] || python3 -m venv "$LAMBDA_VENV"
  retry "$LAMBDA_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "cargo-lambda==$CARGO_LAMBDA_VERSION"
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
