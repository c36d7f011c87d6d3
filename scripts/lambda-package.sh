#!/usr/bin/env bash
# Writes the AWS Lambda package of ml-api: a zip for the `provided.al2023` (custom) runtime,
# deployed with deploy/lambda/template.yaml (AWS SAM, a function URL).
#
# Usage: scripts/lambda-package.sh [BINARY]   (default target/release/ml-api; `make lambda-package`
#        builds it first)
# Output: .run/lambda/ml-api-lambda.zip, laid out as Lambda unpacks it in /var/task:
#   bootstrap                          the ml-api binary; Lambda runs it with no arguments and
#                                      AWS_LAMBDA_RUNTIME_API set, which means `ml-api lambda`
#   models/<name>/model.onnx, card.json, golden.json   the bundled models (--model-dir)
#   lib/libonnxruntime.so.<version>    ONNX Runtime (ORT_DYLIB_PATH), from scripts/fetch-onnxruntime.sh
# The binary links against the build machine's glibc; provided.al2023 has glibc 2.34, so the
# script refuses a binary that needs a newer symbol version (build it on an older system, or
# with `cargo lambda build --release` and zig, in that case).
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY="${1:-${CARGO_TARGET_DIR:-target}/release/ml-api}"
ORT_VERSION="${ORT_VERSION:-1.31.1}"
ORT_LIB=".ort/lib/libonnxruntime.so.$ORT_VERSION"
OUT_DIR=.run/lambda
ZIP="$OUT_DIR/ml-api-lambda.zip"
AL2023_GLIBC=2.34

fail() { echo "lambda-package: $*" >&2; exit 1; }
[[ -x "$BINARY" ]] || fail "no binary at $BINARY (make build)"
[[ -f "$ORT_LIB" ]] || fail "no $ORT_LIB (make ort)"

# Every GLIBC_x.y the binary and ONNX Runtime ask for must exist in Amazon Linux 2023's glibc.
for file in "$BINARY" "$ORT_LIB"; do
  newest="$(objdump -T "$file" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
  if [[ "$(printf '%s\n%s\n' "$newest" "$AL2023_GLIBC" | sort -V | tail -1)" != "$AL2023_GLIBC" ]]; then
    fail "$file needs glibc $newest; provided.al2023 has $AL2023_GLIBC"
  fi
done

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$BINARY" "$stage/bootstrap"
mkdir -p "$stage/lib" "$stage/models"
install -m 0644 "$ORT_LIB" "$stage/lib/"
for dir in models/*/; do
  name="$(basename "$dir")"
  [[ -f "$dir/model.onnx" ]] || continue
  mkdir -p "$stage/models/$name"
  for file in model.onnx card.json golden.json; do
    [[ -f "$dir/$file" ]] && install -m 0644 "$dir/$file" "$stage/models/$name/"
  done
done

mkdir -p "$OUT_DIR"
rm -f "$ZIP"
# -X: no extra file attributes; modes are kept (bootstrap must stay executable).
(cd "$stage" && zip -q -r -X "$OLDPWD/$ZIP" bootstrap lib models)
unzip -Z1 "$ZIP" | grep -qx bootstrap || fail "bootstrap missing from $ZIP"
unzipped=$(du -sb "$stage" | cut -f1)
((unzipped < 250 * 1024 * 1024)) || fail "unzipped size $unzipped bytes is over Lambda's 250 MB"
# The package, unzipped as Lambda does and with the template's environment, answers /predict
# under cargo-lambda's Runtime API emulator (scripts/install-test-tools.sh installs it).
CARGO_LAMBDA=.tools/venv-lambda/bin/cargo-lambda
if [[ -x "$CARGO_LAMBDA" ]]; then
  task="$stage/task"
  mkdir -p "$task" && unzip -q "$ZIP" -d "$task"
  # shellcheck source=lib/ports.sh
  source scripts/lib/ports.sh
  free_ports port
  "$CARGO_LAMBDA" lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port" >"$stage/emulator.log" 2>&1 &
  emulator=$!
  trap 'kill "$emulator" ${function:+"$function"} 2>/dev/null || true; rm -rf "$stage"' EXIT
  deadline=$((SECONDS + 60))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || fail "the emulator did not listen"
    sleep 0.02
  done
  (cd "$task" && exec env -i "PATH=$PATH" "AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:$port/.rt/ml-api" \
    AWS_LAMBDA_FUNCTION_NAME=ml-api AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 \
    "ML_API_MODEL_DIR=$task/models" "ORT_DYLIB_PATH=$task/lib/libonnxruntime.so.$ORT_VERSION" \
    ML_API_DATASET_STORE=/tmp/datasets AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true ./bootstrap) \
    >"$stage/function.log" 2>&1 &
  function=$!
  answer="$(curl -fsS --max-time 60 -H 'Content-Type: application/json' \
    --data @tests/fixtures/seed_request.json "http://127.0.0.1:$port/lambda-url/ml-api/predict")" \
    || { tail -n 20 "$stage/function.log" >&2; fail "the packaged function did not answer /predict"; }
  [[ "$(jq '.predictions[0] | length' <<<"$answer")" == 22 ]] || fail "unexpected answer: $answer"
  echo "lambda-package: the unzipped package answers /predict under the Runtime API emulator (22 probabilities)"
fi
echo "lambda-package: $ZIP ($(du -h "$ZIP" | cut -f1) zipped, $((unzipped / 1024 / 1024)) MB unzipped; limits 50 MB for a direct upload, 250 MB unzipped)"
echo "lambda-package: deploy with: sam deploy --guided --template-file deploy/lambda/template.yaml"
