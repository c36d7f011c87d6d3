#!/usr/bin/env bash
# Idempotent: creates .tools/venv-model (python3 -m venv) and installs
# models/santander/requirements.txt into it, only when the requirements changed
# since the last successful install (sha256 stamp). Last stdout line: the venv's python.
set -euo pipefail
# shellcheck source=lib/retry.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/retry.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/venv-model"
REQ="$ROOT/models/santander/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PY="$VENV/bin/python"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "$PY"
    exit 0
fi
if [[ ! -x "$PY" ]]; then
    mkdir -p "$ROOT/.tools"
    python3 -m venv "$VENV" >&2
fi
retry "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
echo "$want" > "$STAMP"
echo "$PY"
