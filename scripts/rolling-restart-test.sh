#!/usr/bin/env bash
# Rolling restart under load, as a Kubernetes rolling update does it (maxUnavailable 1): while
# k6 (loadtest/rolling-restart.js, RR_RATE=50 req/s, realistic mix, every answer checked) sends
# traffic through nginx, each replica in turn gets SIGTERM, must turn /readyz 503 (draining),
# keeps serving for ML_API_SHUTDOWN_DELAY, closes its listener, finishes in-flight requests and
# exits; it is started again on the same port and the script waits until it is ready AND nginx
# sends it traffic again, and nginx's fail_timeout (10s) has passed since it was ready, before
# the next replica goes. (nginx has no active health checks: each of its workers skips a
# replica that refused connections for fail_timeout; this wait is the local stand-in for a new
# pod's endpoint reaching the ingress before the next old pod is terminated.) The test passes with 0 failed requests:
#   k6: http_req_failed == 0, no 5xx, every check passed (from the summary export);
#   nginx: no 5xx in its access log for the whole run.
# The replicas never get an unexpected request because nginx's proxy_next_upstream sends a
# request that meets a closed port (connection refused) to the other replica.
#
# Uses the cluster in CLUSTER_DIR (default .run/cluster) when up, else starts one and stops it.
# Results: $CLUSTER_DIR/results/rolling-restart-<UTC time>.{json,txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh
say() { echo "rolling-restart: $*"; }
started=$SECONDS
ensure_k6
cluster_init
own_cluster=0
K6_PID=
cleanup() {
  set +e
  if [[ -n "$K6_PID" ]]; then kill "$K6_PID" 2>/dev/null; wait "$K6_PID" 2>/dev/null; K6_PID=; fi
  if ((own_cluster)); then scripts/cluster-down.sh >/dev/null 2>&1; own_cluster=0; fi
  set -e
}
trap 'rc=$?; cleanup; exit $rc' EXIT
if ! cluster_is_up; then
  own_cluster=1
  scripts/cluster-up.sh
fi
cluster_load_env
((REPLICAS >= 2)) || lib_fail "a rolling restart needs at least 2 replicas (REPLICAS=$REPLICAS)"
export BASE_URL PROM_URL ADMIN_API_KEY
export CHECK_EVERY=1
RESULTS="$CLUSTER_DIR/results"
mkdir -p "$RESULTS"
OUT="$RESULTS/rolling-restart-$(date -u +%Y%m%dT%H%M%SZ)"
free_ports K6_API_PORT
NGINX_LOG="$LOG_DIR/nginx.log"
nginx_from=$(( $(wc -l <"$NGINX_LOG") + 1 ))

"$K6" run --address "127.0.0.1:$K6_API_PORT" --summary-export "$OUT.json" loadtest/rolling-restart.js >"$OUT.txt" 2>&1 &
K6_PID=$!

# Traffic must reach every replica before the first one goes.
declare -A before=()
for i in $(seq 1 "$REPLICAS"); do before[$i]="$(replica_api_requests "$i")"; done
deadline=$((SECONDS + 60))
for i in $(seq 1 "$REPLICAS"); do
  until (( $(replica_api_requests "$i") > before[$i] + 20 )); do
    kill -0 "$K6_PID" 2>/dev/null || { cat "$OUT.txt" >&2; lib_fail "k6 exited before the restarts"; }
    ((SECONDS < deadline)) || { tail -n 30 "$OUT.txt" >&2; lib_fail "no traffic reaches replica-$i"; }
    sleep 0.2
  done
done
say "k6 sends ${RR_RATE:-50} req/s through nginx $BASE_URL to $REPLICAS replicas; restarting them one by one"

delay_s="${SHUTDOWN_DELAY%s}"
fail_timeout_s="$(grep -oE 'fail_timeout=[0-9]+s' "$CLUSTER_DIR/nginx/nginx.conf" | head -n1 | tr -dc 0-9)"
fail_timeout_s="${fail_timeout_s:-10}"
for i in $(seq 1 "$REPLICAS"); do
  pid="$(pidfile_pid "replica-$i")"
  read -r _ start <"$PID_DIR/replica-$i.pid"
  url="http://127.0.0.1:$(replica_port "$i")"
  at_term="$(replica_api_requests "$i")"
  t0=$(date +%s%N)
  kill -TERM "$pid"
  # Draining: /readyz turns 503 at once while requests are still served (with a delay of 0
  # the listener closes at once instead: nothing to see).
  deadline=$((SECONDS + 5))
  until [[ "$delay_s" == 0 || "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/readyz")" == 503 ]]; do
    ((SECONDS < deadline)) || lib_fail "replica-$i: /readyz did not turn 503 after SIGTERM"
    sleep 0.05
  done
  # Until it exits: what it still answered while draining (nginx keeps sending it requests).
  last="$at_term"
  deadline=$((SECONDS + delay_s + ${SHUTDOWN_GRACE%s} + 10))
  while pid_alive "$pid" "$start"; do
    ((SECONDS < deadline)) || lib_fail "replica-$i did not exit"
    n="$(replica_api_requests "$i")"
    ((n > last)) && last=$n
    sleep 0.1
  done
  t_exit=$(date +%s%N)
  rm -f "$PID_DIR/replica-$i.pid"
  start_replica "$i"
  wait_replica_ready "$i"
  t_ready=$(date +%s%N)
  base="$(replica_api_requests "$i")"
  deadline=$((SECONDS + 30))
  until (( $(replica_api_requests "$i") > base + 5 )); do
    ((SECONDS < deadline)) || lib_fail "replica-$i: ready, but nginx sends it no traffic after 30 s"
    sleep 0.1
  done
  t_back=$(date +%s%N)
  # Each nginx worker keeps its own failure state (the upstream has no `zone`): one that saw
  # connections refused skips the replica until fail_timeout has passed since, even though
  # another worker already uses it again. Only then may the next replica go.
  until (( $(date +%s%N) >= t_ready + fail_timeout_s * 1000000000 )); do sleep 0.1; done
  ms() { echo $(( ($2 - $1) / 1000000 )); }
  drained="drain ${SHUTDOWN_DELAY}"
  [[ "$delay_s" == 0 ]] || drained+=", answering $((last - at_term)) more requests meanwhile"
  say "replica-$i: SIGTERM -> exited in $(ms "$t0" "$t_exit") ms ($drained)," \
    "ready $(ms "$t_exit" "$t_ready") ms after start, traffic from nginx again $(ms "$t_ready" "$t_back") ms later" \
    "(next replica after nginx's fail_timeout=${fail_timeout_s}s)"
done
sleep 3   # traffic on the restarted replicas

# Stop k6 (REST API): it exits with 103 ("stopped from REST API") after writing its summary.
curl -fsS -o /dev/null -X PATCH -H 'Content-Type: application/json' "http://127.0.0.1:$K6_API_PORT/v1/status" \
  -d '{"data":{"type":"status","id":"default","attributes":{"stopped":true}}}' || lib_fail "could not stop k6"
set +e
wait "$K6_PID"
rc=$?
set -e
K6_PID=
if [[ $rc -ne 0 ]] && ! { [[ $rc -eq 103 ]] && grep -q 'stopped from REST API' "$OUT.txt"; }; then
  tail -n 60 "$OUT.txt" >&2
  lib_fail "k6 exited with $rc"
fi
nginx_5xx="$(tail -n +"$nginx_from" "$NGINX_LOG" | grep -c '"status":5[0-9][0-9]' || true)"
retried="$(tail -n +"$nginx_from" "$NGINX_LOG" | grep -c '"upstream_status":"[0-9]*, ' || true)"
python3 - "$OUT.json" "$nginx_5xx" "$retried" <<'PY' | tee -a "$OUT.txt"
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
nginx_5xx, retried = int(sys.argv[2]), int(sys.argv[3])
reqs = m["http_reqs"]["count"]
failed = m["http_req_failed"]["passes"]          # Rate: `passes` = samples that were true
checks_failed = m["checks"]["fails"]
server_errors = m.get("server_errors", {}).get("count", 0)
d = m["http_req_duration{scenario:rolling}"]
broken = [name for name, v in m.items() for expr, crossed in v.get("thresholds", {}).items() if crossed]
print(f"rolling-restart: {reqs} requests, {failed} failed, {server_errors} 5xx, {checks_failed} failed checks; "
      f"p95 {d['p(95)']:.1f} ms, p99 {d['p(99)']:.1f} ms, max {d['max']:.1f} ms; nginx: {nginx_5xx} 5xx, "
      f"{retried} requests passed on to the other replica (proxy_next_upstream)")
if failed or server_errors or checks_failed or nginx_5xx or broken or reqs < 50:
    sys.exit(f"rolling-restart: FAILED ({', '.join(broken) or 'see above'})")
PY
trap - EXIT
cleanup
say "passed: 0 failed requests across the restart of $REPLICAS replicas ($((SECONDS - started)) s; ${OUT#"$PWD"/}.txt)"
