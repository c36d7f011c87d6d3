#!/usr/bin/env bash
# Fuzzes every decoder that takes client bytes (fuzz/fuzz_targets, see docs/fuzzing.md) with
# cargo-fuzz (libFuzzer) for SECONDS each (default 600), one after the other.
#
# New inputs go to fuzz/corpus-run/<target> (not committed); the committed seed corpus
# fuzz/corpus/<target> is read only. FUZZ_MERGE=1 afterwards adds to fuzz/corpus the inputs that
# reach new coverage (libFuzzer -merge=1), for `cargo test`'s replay. A crash leaves its input
# in fuzz/artifacts/<target>/ and fails the script. Logs: fuzz/artifacts/<target>.log.
#
# Only the stable toolchain is installed here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z flags to it. No sanitizer: the code is safe Rust; what is sought is panics, aborts and
# allocations sized by unchecked input (-malloc_limit_mb).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
targets=(${FUZZ_TARGETS:-json_records v2_request training_csv multipart_upload onnx_import})
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
FUZZ=(cargo fuzz)
BUILD=(--sanitizer none --release --debug-assertions)

"${FUZZ[@]}" build "${BUILD[@]}"
mkdir -p fuzz/artifacts
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus-run/$target"
  echo "== $target: ${seconds}s"
  "${FUZZ[@]}" run "${BUILD[@]}" "$target" "fuzz/corpus-run/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -malloc_limit_mb=1024 -rss_limit_mb=2048 -timeout=10 \
    -max_len=262144 -print_final_stats=1 2>&1 | tee "fuzz/artifacts/$target.log" | grep -E '^(#[0-9]+ +(DONE|pulse)|stat::|==|.*(panicked|ERROR|SUMMARY))' || true
  status=${PIPESTATUS[0]}
  if [[ "$status" -ne 0 ]]; then
    echo "fuzz: $target found a failure (exit $status); see fuzz/artifacts/$target.log" >&2
    exit 1
  fi
  if [[ "${FUZZ_MERGE:-0}" == 1 ]]; then
    "${FUZZ[@]}" run "${BUILD[@]}" "$target" "fuzz/corpus/$target" "fuzz/corpus-run/$target" -- -merge=1 2>&1 | tail -1
  fi
done
