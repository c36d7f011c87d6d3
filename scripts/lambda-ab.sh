#!/usr/bin/env bash
# The A/B test the Flask prediction API's README asks for: Kubernetes or AWS Lambda, on
# response time and cost. The same k6 traffic (loadtest/daily-1m.js, MODE=peak, the realistic
# mix with TRAIN=0) against
#   A  the chart's shape: 2 `ml-api serve` replicas behind nginx with the Redis registry
#      (scripts/cluster-up.sh; the chart's CPU limit, 2, is the whole machine here), and
#   B  INSTANCES copies of the same binary as Lambda functions (`ml-api` with
#      AWS_LAMBDA_RUNTIME_API) behind cargo-lambda's Runtime API emulator, called at its
#      function URL; each instance in its own cgroup with a CPU quota of MEMORY_MB / 1,769 CPUs
#      (Lambda's CPU share: 1,024 MB ≈ 0.58 vCPU).
# Measured for each: cold start (process start → first answered /predict), p50/p95/p99 at each
# rate of RATES (the 1M/day peak and 10×), CPU used (→ throughput per core) and RSS.
#
# Usage: scripts/lambda-ab.sh   (make lambda-ab; needs root for the cgroup quota)
#   RATES="116 1160"  DURATION=60s  INSTANCES=4  MEMORY_MB=1024  COLD_STARTS=5
#   ML_API_BIN=target/release/ml-api
# Output: .run/lambda-ab/<UTC time>/: k6 summaries, logs, measurements.json, and ab.md (the
# table docs/k8s-vs-lambda.md shows), also printed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh

RATES="${RATES:-116 1160}"
DURATION="${DURATION:-60s}"
INSTANCES="${INSTANCES:-4}"
MEMORY_MB="${MEMORY_MB:-1024}"
COLD_STARTS="${COLD_STARTS:-5}"
ML_API_BIN="${ML_API_BIN:-${CARGO_TARGET_DIR:-target}/release/ml-api}"
[[ "$ML_API_BIN" == /* ]] || ML_API_BIN="$PWD/$ML_API_BIN"
CARGO_LAMBDA="$PWD/.tools/venv-lambda/bin/cargo-lambda"
OUT="$PWD/.run/lambda-ab/$(date -u +%Y%m%dT%H%M%SZ)"
export MEMORY_MB
[[ -x "$ML_API_BIN" ]] || lib_fail "no binary at $ML_API_BIN (make build)"
[[ -x "$CARGO_LAMBDA" ]] || lib_fail "no cargo-lambda (scripts/install-test-tools.sh)"
ensure_k6
mkdir -p "$OUT"
CPU_SHARE="$(python3 -c "print(round($MEMORY_MB / 1769, 3))")"
say() { echo "lambda-ab: $*"; }
duration_s() { python3 -c "import re,sys; v,u=re.fullmatch(r'([0-9.]+)(s|m)', sys.argv[1]).groups(); print(float(v)*(60 if u=='m' else 1))" "$1"; }
RUN_S="$(duration_s "$DURATION")"

# CPU seconds (user + system) of the processes given, from /proc/PID/stat.
cpu_seconds() {
  local ticks=0 pid t
  for pid in "$@"; do
    t="$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0)"
    ticks=$((ticks + t))
  done
  python3 -c "print($ticks / $(getconf CLK_TCK))"
}
# The machine while a run lasts: load average and the share of both cores busy (/proc/stat).
machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
rss_json() { # PID...: [{"rss_mib": .., "hwm_mib": ..}, ...]
  local pid sep="" out="["
  for pid in "$@"; do
    out+="$sep$(awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{printf "{\"rss_mib\": %.1f, \"hwm_mib\": %.1f}", r/1024, h/1024}' "/proc/$pid/status")"
    sep=", "
  done
  echo "$out]"
}

# k6_run SIDE RATE BASE_URL SERVER_PIDS PROXY_PIDS: one run; appends its JSON to RUNS.
k6_run() {
  local side="$1" rate="$2" base="$3" server=($4) proxy=($5) s0 p0 s1 p1 b0 b1 rc=0
  local summary="$side-$rate.json"
  s0="$(cpu_seconds "${server[@]}")"; p0="$(cpu_seconds "${proxy[@]}")"; b0="$(machine_busy)"
  "$K6" run -q -e BASE_URL="$base" -e MODE=peak -e RATE="$rate" -e DURATION="$DURATION" -e TRAIN=0 \
    -e ADMIN_API_KEY="$AB_ADMIN_KEY" --summary-export "$OUT/$summary" loadtest/daily-1m.js \
    >"$OUT/$side-$rate.k6.txt" 2>&1 || rc=$?
  s1="$(cpu_seconds "${server[@]}")"; p1="$(cpu_seconds "${proxy[@]}")"; b1="$(machine_busy)"
  [[ -f "$OUT/$summary" ]] || { tail -n 30 "$OUT/$side-$rate.k6.txt" >&2; lib_fail "k6 ($side, $rate req/s) wrote no summary"; }
  local load
  load="$(python3 -c "
b0, t0 = map(float, '$b0'.split()); b1, t1 = map(float, '$b1'.split())
print(f'load average {open(\"/proc/loadavg\").read().split()[0]}, both cores {100 * (b1 - b0) / (t1 - t0):.0f} % busy; k6 exit {$rc}')")"
  RUNS+=("{\"summary\": \"$summary\", \"seconds\": $RUN_S, \"server_cpu_s\": $(python3 -c "print($s1 - $s0)"), \"proxy_cpu_s\": $(python3 -c "print($p1 - $p0)"), \"load\": \"$load\"}")
  say "$side at $rate req/s: $(jq -r '.metrics["http_req_duration{scenario:peak}"] | "p50 \(.med) ms, p95 \(."p(95)") ms, p99 \(."p(99)") ms"' "$OUT/$summary") ($load)"
}

AB_ADMIN_KEY="ab-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
SIDES=()

# --- A: two replicas behind nginx -----------------------------------------------------------
say "A: cold starts of ml-api serve (bundled model, no CPU quota)"
cold_a="$(python3 loadtest/lambda_ab.py coldstart serve "$ML_API_BIN" "$COLD_STARTS" -)"
export CLUSTER_DIR="$OUT/cluster" PROMETHEUS=0 ML_API_BIN
cluster_init
trap 'scripts/cluster-down.sh >/dev/null 2>&1 || true' EXIT
scripts/cluster-up.sh >"$OUT/cluster-up.log" 2>&1 || { tail -n 30 "$OUT/cluster-up.log" >&2; lib_fail "cluster-up failed"; }
cluster_load_env
# The replicas require the cluster's admin key; k6 sends it for the 401 check of the mix.
AB_ADMIN_KEY="$ADMIN_API_KEY"
replicas=()
for f in "$PID_DIR"/replica-*.pid; do replicas+=("$(pidfile_pid "$(basename "$f" .pid)")"); done
nginx_pids="$(pgrep -d ' ' -P "$(pidfile_pid nginx)" || true) $(pidfile_pid nginx)"
RUNS=()
for rate in $RATES; do k6_run a "$rate" "$BASE_URL" "${replicas[*]}" "$nginx_pids"; done
SIDES+=("{\"label\": \"A: 2 replicas behind nginx (Kubernetes shape)\", \"proxy\": \"nginx\", \"coldstart_ms\": $(jq -c .ms <<<"$cold_a"), \"runs\": [$(IFS=,; echo "${RUNS[*]}")], \"rss\": $(rss_json "${replicas[@]}")}")
scripts/cluster-down.sh >/dev/null
trap - EXIT

# --- B: Lambda instances behind the emulator ------------------------------------------------
# Each instance (and each cold start) in a cgroup with the CPU quota of MEMORY_MB.
export CLUSTER_DIR="$OUT/lambda" REPLICA_CPU_LIMIT="$CPU_SHARE"
cluster_init
PIDS=()
cleanup_b() {
  local pid
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  cluster_remove_cgroups
}
trap cleanup_b EXIT
mkdir -p "$LOG_DIR"
say "B: cold starts of the Lambda function at $CPU_SHARE CPU ($MEMORY_MB MB)"
cold_b="$(python3 loadtest/lambda_ab.py coldstart lambda "$ML_API_BIN" "$COLD_STARTS" "$(replica_cgroup 0)" "$CARGO_LAMBDA")"
free_ports port
spawn emulator "$LOG_DIR/emulator.log" "$CARGO_LAMBDA" lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port"
emulator_pid="$SPAWNED_PID"
deadline=$((SECONDS + 60))
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  ((SECONDS < deadline)) || lib_fail "the emulator did not listen on :$port"
  sleep 0.02
done
instances=()
for i in $(seq 1 "$INSTANCES"); do
  # shellcheck disable=SC2016  # expanded by that sh
  spawn "instance-$i" "$LOG_DIR/instance-$i.log" env -i "PATH=$PATH" \
    "AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:$port/.rt/ml-api" AWS_LAMBDA_FUNCTION_NAME=ml-api \
    AWS_LAMBDA_FUNCTION_VERSION=1 "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=$MEMORY_MB" \
    "ORT_DYLIB_PATH=$PWD/.ort/lib/libonnxruntime.so.1.31.1" "ML_API_MODEL_DIR=$PWD/models" \
    ML_API_LOG_FORMAT=json RUST_LOG=info,ort=warn "ML_API_ADMIN_API_KEY=$AB_ADMIN_KEY" \
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$1"' "$(replica_cgroup "$i")" "$ML_API_BIN"
  instances+=("$SPAWNED_PID")
done
for i in $(seq 1 "$INSTANCES"); do
  deadline=$((SECONDS + 60))
  until grep -q '"serving Lambda invocations"' "$LOG_DIR/instance-$i.log"; do
    pid_alive "${instances[$((i - 1))]}" || { tail -n 20 "$LOG_DIR/instance-$i.log" >&2; lib_fail "instance $i exited"; }
    ((SECONDS < deadline)) || lib_fail "instance $i did not start"
    sleep 0.02
  done
done
RUNS=()
for rate in $RATES; do
  k6_run b "$rate" "http://127.0.0.1:$port/lambda-url/ml-api" "${instances[*]}" "$emulator_pid"
done
SIDES+=("{\"label\": \"B: $INSTANCES Lambda instances at $MEMORY_MB MB ($CPU_SHARE CPU each) behind the emulator\", \"proxy\": \"emulator\", \"coldstart_ms\": $(jq -c .ms <<<"$cold_b"), \"runs\": [$(IFS=,; echo "${RUNS[*]}")], \"rss\": $(rss_json "${instances[@]}")}")
cleanup_b
trap - EXIT

rates_json="[$(tr ' ' ',' <<<"$RATES")]"
echo "{\"rates\": $rates_json, \"duration\": \"$DURATION\", \"sides\": [$(IFS=,; echo "${SIDES[*]}")]}" | jq . >"$OUT/measurements.json"
python3 loadtest/lambda_ab.py report "$OUT" | tee "$OUT/ab.md"
say "results in ${OUT#"$PWD"/} (command: RATES=\"$RATES\" DURATION=$DURATION INSTANCES=$INSTANCES MEMORY_MB=$MEMORY_MB scripts/lambda-ab.sh)"
