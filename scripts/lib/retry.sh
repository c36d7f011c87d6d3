# Sourced by the install steps. `retry CMD ARGS...` runs a download or install up to three
# times: pip retries a failed connection by itself but not a read that times out halfway
# through a wheel, and one such stall on PyPI failed a whole CI run. Every command wrapped
# here is idempotent (pip install, pip download into a fresh directory, npm install).
retry() {
  local attempt
  for attempt in 1 2 3; do
    "$@" && return 0
    echo "$(basename "$0"): attempt $attempt of 3 failed: $*" >&2
    ((attempt < 3)) && sleep $((attempt * 10))
  done
  echo "$(basename "$0"): giving up after 3 attempts: $*" >&2
  return 1
}
