#!/usr/bin/env bash
# Runs a k6 load test of loadtest/ against the local cluster (scripts/cluster-up.sh) and keeps
# its results; exits non-zero when a threshold fails.
#
# Usage: scripts/loadtest.sh [TEST] [k6 run options...]
#   daily-1m    (default) loadtest/daily-1m.js at the diurnal peak: RATE=116 req/s for
#               DURATION=2m; thresholds: errors < 0.1 %, p95 < 50 ms, p99 < 100 ms
#   compressed  loadtest/daily-1m.js MODE=compressed: FRACTION (0.05) of 1,000,000 requests as
#               fast as the stack answers (VUS=16); prints minutes per 1M requests
#   smoke       loadtest/smoke.js (seconds)
#   stress      loadtest/stress.js: stepped arrival rates; prints the knee
#   spike       loadtest/spike.js: a 20x burst; no 5xx, only the greedy client throttled
#   soak        loadtest/soak.js: SOAK_DURATION (30m) at the peak rate; flat RSS, no drift
#   ci          for `make test`: its own cluster (CLUSTER_DIR=.run/cluster-ci, debug binary),
#               tritonclient[grpc] through its nginx (tests/v2/tritonclient_grpc_check.py),
#               smoke.js, then scripts/rolling-restart-test.sh, then cluster-down
# Each script's header lists its settings (environment variables, passed through to k6).
#
# The cluster in CLUSTER_DIR (default .run/cluster) is used when it is up; otherwise one is
# started (release binary, 2 replicas; see scripts/cluster-up.sh for REPLICAS etc.) and stopped
# afterwards. BASE_URL in the environment targets any ml-api instead (kubectl port-forward, an
# ingress) and starts nothing; set ADMIN_API_KEY too if it requires one.
# K6_CPUS=0 pins k6 to CPU 0 (taskset), e.g. with a cluster started with REPLICA_CPUS=1.
# Results: $CLUSTER_DIR/results/<test>-<UTC time>.json (k6 --summary-export) and .txt (k6's
# output and the report of loadtest/report.py).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh
TEST="${1:-daily-1m}"
shift || true

if [[ "$TEST" == ci ]]; then
  # Small and quick: the debug binary `cargo test` has built, its own cluster directory.
  export CLUSTER_DIR="${CLUSTER_DIR:-.run/cluster-ci}" CLUSTER_PROFILE="${CLUSTER_PROFILE:-debug}"
  export SHUTDOWN_DELAY="${SHUTDOWN_DELAY:-2s}" SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-1s}"
  unset BASE_URL PROM_URL ADMIN_API_KEY   # always this cluster, never a sourced env file's
  started=$SECONDS
  cluster_init
  if cluster_is_up; then lib_fail "a cluster is already up in $CLUSTER_DIR"; fi
  trap 'scripts/cluster-down.sh >/dev/null || true' EXIT
  scripts/cluster-up.sh
  # gRPC through the cluster's nginx (grpc_pass to both replicas): tritonclient[grpc]'s answers
  # equal /predict's through its HTTP listener, errors keep their status codes.
  (
    source scripts/lib/test-venv.sh
    ensure_test_venv
    cluster_load_env
    ADMIN_API_KEY="$ADMIN_API_KEY" "$TEST_VENV/bin/python" tests/v2/tritonclient_grpc_check.py "$BASE_URL" "$GRPC_ADDR"
  )
  "$0" smoke "$@"
  # TRAIN=0 (the mode for production clusters) writes nothing: the registry's models are the
  # same before and after.
  registry_models() { ( cluster_load_env; curl -fsS "$BASE_URL/models" | jq -c '[.items[] | "\(.id) \(.name) \(.version) \(.status)"] | sort' ); }
  before="$(registry_models)"
  (( $(jq length <<<"$before") > 0 )) || lib_fail "GET /models lists no model: nothing to compare"
  TRAIN=0 SMOKE_DURATION=5s "$0" smoke "$@"
  [[ "$(registry_models)" == "$before" ]] || lib_fail "the TRAIN=0 smoke run changed the registry's models"
  echo "loadtest: TRAIN=0 smoke wrote nothing ($(jq length <<<"$before") models before and after)"
  scripts/rolling-restart-test.sh
  scripts/cluster-down.sh
  trap - EXIT
  echo "loadtest: ci (gRPC through nginx, smoke, TRAIN=0 smoke, rolling restart) passed in $((SECONDS - started)) s"
  exit 0
fi

case "$TEST" in
  daily-1m) SCRIPT=loadtest/daily-1m.js; export MODE=peak ;;
  compressed) SCRIPT=loadtest/daily-1m.js; export MODE=compressed ;;
  smoke | stress | spike | soak) SCRIPT="loadtest/$TEST.js" ;;
  *) lib_fail "unknown test '$TEST' (daily-1m, compressed, smoke, stress, spike, soak, ci)" ;;
esac

ensure_k6
cluster_init
own_cluster=0
if [[ -n "${BASE_URL:-}" ]]; then
  RESULTS="$CLUSTER_DIR/results"
  echo "loadtest: $TEST against BASE_URL=$BASE_URL (no local cluster)"
else
  if ! cluster_is_up; then
    own_cluster=1
    trap 'scripts/cluster-down.sh || true' EXIT
    scripts/cluster-up.sh
  fi
  cluster_load_env
  export BASE_URL PROM_URL ADMIN_API_KEY
  RESULTS="$CLUSTER_DIR/results"
  echo "loadtest: $TEST against the local cluster ($REPLICAS replicas, $CLUSTER_PROFILE) at $BASE_URL"
fi
mkdir -p "$RESULTS"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$RESULTS/$TEST-$stamp"
pin=()
[[ -n "${K6_CPUS:-}" ]] && pin=(taskset -c "$K6_CPUS")
quiet=()
[[ -t 1 ]] || quiet=(--quiet)   # no progress lines in logs and CI output (the summary stays)

{
  echo "# $TEST $(date -u +%FT%TZ) BASE_URL=$BASE_URL host: $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  env | grep -E '^(RATE|DURATION|MODE|TOTAL|FRACTION|VUS|MIX|CLIENTS|CHECK_EVERY|POOL_SIZE|SMOKE_|STRESS_|SPIKE_|SOAK_|K6_CPUS)' | sort | sed 's/^/# /' || true
} >"$OUT.txt"
set +e
"${pin[@]}" "$K6" run "${quiet[@]}" --summary-export "$OUT.json" "$@" "$SCRIPT" 2>&1 | tee -a "$OUT.txt"
rc=${PIPESTATUS[0]}
set -e
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT.txt"
if [[ -s "$OUT.json" ]]; then
  python3 loadtest/report.py "$TEST" "$OUT.json" | tee -a "$OUT.txt"
fi
echo "loadtest: results in ${OUT#"$PWD"/}.json and .txt (k6 exit $rc)"
if ((own_cluster)); then
  scripts/cluster-down.sh
  trap - EXIT
fi
exit "$rc"
