#!/usr/bin/env bash
# Runs docs/model-lifecycle.md: every ```sh block after the first (the setup block, which this
# script replaces with a fresh `ml-api serve` on an embedded registry, like `make run`), in
# order, in one bash with `set -euo pipefail`, then checks that the answers are what the page
# says: the contract was recorded, the out-of-range record was counted as a warning, the
# gated promotion was refused and then swapped champion and challenger, and after the
# shifted traffic only petal_length's PSI is above 0.2.
#
# CLUSTER=1: the same through the local cluster (scripts/cluster-up.sh: nginx, 2 replicas,
# Redis, a worker, the admin key), which it starts and stops unless one is already up.
set -euo pipefail
cd "$(dirname "$0")/.."
DOC=docs/model-lifecycle.md
command -v jq >/dev/null || { echo "check-lifecycle-doc: jq is required" >&2; exit 1; }
if [[ "${CLUSTER:-0}" == 1 ]]; then
  source scripts/lib/cluster.sh
  cluster_init
  if ! cluster_is_up; then
    trap 'scripts/cluster-down.sh >/dev/null || true' EXIT
    scripts/cluster-up.sh
  fi
  cluster_load_env                     # BASE_URL (nginx), ADMIN_API_KEY, REPLICA_URLS
  RUN_DIR="$(mktemp -d)"
  AUTH_HEADER=(-H "Authorization: Bearer $ADMIN_API_KEY")
  METRICS_FROM="$REPLICA_URLS"
else
  source scripts/lib/test-server.sh
  start_test_server                    # BASE_URL, SERVER_PID, RUN_DIR; stopped on exit
  AUTH_HEADER=()
  METRICS_FROM="$BASE_URL"
fi

SCRIPT="$RUN_DIR/lifecycle.sh"
python3 - "$DOC" "$SCRIPT" <<'PY'
import re, sys
doc, out = sys.argv[1:]
blocks = re.findall(r"^```sh\n(.*?)^```", open(doc).read(), re.M | re.S)
if len(blocks) < 4:
    sys.exit(f"check-lifecycle-doc: only {len(blocks)} sh blocks in {doc}")
with open(out, "w") as f:
    f.write("set -euo pipefail\n")
    for i, block in enumerate(blocks[1:], start=2):
        f.write(f"echo '--- {doc} block {i}' >&2\n{block}\n")
    f.write('declare -p V1 V2 > "$STATE"\n')
PY
export BASE="$BASE_URL" STATE="$RUN_DIR/state" REPLICAS="$METRICS_FROM"
( AUTH=("${AUTH_HEADER[@]}"); source "$SCRIPT" ) >"$RUN_DIR/lifecycle.out" 2>&1 || {
  cat "$RUN_DIR/lifecycle.out" >&2; echo "check-lifecycle-doc: a block of $DOC failed" >&2; exit 1; }

fail() { cat "$RUN_DIR/lifecycle.out" >&2; echo "check-lifecycle-doc: FAILED: $*" >&2; exit 1; }
source "$STATE"
contract="$(curl -sf "$BASE/models/$V1" | jq '.card.contract')"
[[ "$(jq -r '.fields.petal_length.type' <<<"$contract")" == numeric ]] || fail "no contract recorded"
warned="$(for r in $METRICS_FROM; do curl -sf "$r/metrics"; done | grep -c 'ml_api_validation_failures_total{action="warn",feature="petal_length",model="iris",reason="range"}' || true)"
((warned >= 1)) || fail "the out-of-range record was not counted as a warning"
drift="$(curl -sf "$BASE/models/iris/drift")"
jq -e '[.features[] | select(.feature == "petal_length") | .psi > 0.2] == [true]' <<<"$drift" >/dev/null \
  || fail "petal_length PSI not above 0.2: $drift"
jq -e '[.features[] | select(.feature != "petal_length") | .psi < 0.1] | all' <<<"$drift" >/dev/null \
  || fail "an unshifted feature has PSI >= 0.1: $drift"
comparison="$(curl -sf "$BASE/models/iris/aliases/prod/comparison")"
jq -e --arg v2 "$V2" --arg v1 "$V1" '.champion.model_id == $v2 and .challenger.model_id == $v1' <<<"$comparison" >/dev/null \
  || fail "the promotion did not swap champion (v2) and challenger (v1): $comparison"
grep -q '^409$' "$RUN_DIR/lifecycle.out" || fail "the gated promotion was not refused with 409 first"
echo "check-lifecycle-doc: every block of $DOC ran against ml-api; contract, warning, shadow, promotion and drift as described"
