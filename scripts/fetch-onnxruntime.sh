#!/usr/bin/env bash
# Fetches the official ONNX Runtime shared library from the `onnxruntime` wheel on PyPI.
#
# Why a wheel: the `ort` crate's own `download-binaries` feature pulls from a CDN that the
# build machines cannot reach; PyPI is reachable everywhere we build (dev boxes, CI, the
# Dockerfile's builder stage). We build `ort` with `load-dynamic` and point it at this file.
#
# Idempotent: does nothing when the library is already present.
# Usage: scripts/fetch-onnxruntime.sh [DEST_DIR]   (default: .ort/lib)
set -euo pipefail
# shellcheck source=lib/retry.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/retry.sh"

ORT_VERSION="${ORT_VERSION:-1.31.1}"
DEST="${1:-.ort/lib}"
LIB="libonnxruntime.so.${ORT_VERSION}"

if [[ -f "$DEST/$LIB" ]]; then
  exit 0
fi

mkdir -p "$DEST"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "fetch-onnxruntime: downloading onnxruntime==${ORT_VERSION} wheel from PyPI" >&2
# The wheel matching this machine's Python and architecture (manylinux, x86_64 or aarch64).
retry python3 -m pip download --quiet --no-deps --only-binary=:all: \
  -d "$WORK" "onnxruntime==${ORT_VERSION}"

python3 - "$WORK" "$DEST" "$LIB" <<'PY'
import glob, sys, zipfile, os
work, dest, lib = sys.argv[1:]
wheel = glob.glob(os.path.join(work, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in (f"onnxruntime/capi/{lib}", "onnxruntime/capi/libonnxruntime_providers_shared.so"):
        target = os.path.join(dest, os.path.basename(name))
        with z.open(name) as src, open(target + ".part", "wb") as out:
            out.write(src.read())
        os.replace(target + ".part", target)
PY
ln -sf "$LIB" "$DEST/libonnxruntime.so"
echo "fetch-onnxruntime: installed $DEST/$LIB" >&2
