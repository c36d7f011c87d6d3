#!/usr/bin/env bash
# The performance bar of ml-api (issue 7): load-tests a release build on loopback against a
# bare axum baseline, checks the targets, then runs the criterion benches.
# Called by `make bench` (after `make ort`); docs/performance.md says what it measures.
#
# The load generator (wrk, 1 thread; examples/bench_rate.rs for the constant-rate runs; oha
# for the 1M-request run; h2load, 1 thread, for gRPC) is pinned to CPU 0 and every server to
# CPU 1 with taskset. Steps:
#  1. build `ml-api`, the bench-only baseline (`examples/bench_baseline.rs`) and the
#     constant-rate generator (`examples/bench_rate.rs`), release;
# Every ml-api server runs the SHIPPED DEFAULTS (log level, JSON access log on stdout into a
# file) except rate limiting, which is off (one load generator is one client).
#  2. `baseline`: the bare axum handler, POST /predict with the seed record, wrk at 1, 16, 64
#     and 256 connections;
#  3. ml-api with batching OFF (`--batch-max-size 1`): POST /predict at 16, 64, 256; then
#     the drift histograms' cost as an A/B: a default server and a `--drift false` one, side
#     by side, driven in turn, 3 rounds of BENCH_AB_DURATION at 64 connections, medians;
#     the logs' cost the same way, three servers: default, `--access-log false`, and
#     `RUST_LOG=warn` (no info-level logs and no request spans: "logging off"), in
#     BENCH_LOG_ROUNDS rounds of BENCH_LOG_DURATION, the target on the median of the rounds'
#     own default / logging-off ratios;
#  4. ml-api with the default flags (batching ON, 64 rows, no delay): time exec -> first
#     `/readyz` 200; POST /predict at 1, 16, 64, 256; a batch of 32 records at 16; V2
#     `POST /v2/models/santander/infer` (the seed record as V2 JSON tensors, built from
#     `GET /v2/models/santander`) at 64 and 256, and the same tensors with the binary-data
#     extension (`Inference-Header-Content-Length`) at 64; gRPC `ModelInfer` with raw tensors,
#     64 calls in flight two ways: one channel (one HTTP/2 connection carrying 64 streams, as
#     a tritonclient or grpcio client multiplexes its concurrent calls) and 64 connections of
#     one stream each (h2load, posting one pre-encoded request frame written by
#     examples/grpc_frame.rs; see run_h2load for how its answers are checked, since h2load
#     sees HTTP statuses and not grpc-status); BENCH_RATE_RUNS constant-rate runs
#     (examples/bench_rate.rs: open loop, latency correction as oha's `-q
#     --latency-correction`, and nothing that grows while it runs; oha stalled itself each
#     time its result queue doubled) at half the highest /predict rate, each after
#     BENCH_RATE_WARMUP at the same rate (reported as its own row: the first second after the
#     server sat idle is slower, docs/performance.md) and each followed by the
#     bare baseline at the same rate (the load generator's and the host's share of the p99),
#     with the server-side latencies of each from its access lines, and how busy each
#     server was (its CPU time over the run, from /proc/PID/stat) and the host's steal time
#     (/proc/stat): half the highest rate is not half of the CPU, since a request costs more
#     CPU when fewer arrive together (docs/performance.md); then at least
#     1,000,000 more requests (oha `-n`) and VmRSS/VmHWM from /proc;
#  4b. `paired`: the ratios the targets compare, measured in rounds. The baseline runs beside
#     the default server (both on the server CPU, only one driven at a time); each of
#     BENCH_PAIRED_ROUNDS rounds drives, for BENCH_PAIRED_DURATION each, ml-api's /predict,
#     V2 JSON, V2 binary and gRPC raw (both shapes) at 64 in flight, then V2 JSON, V2 binary and
#     gRPC raw (one channel) again with BENCH_TENSOR_ROWS rows per tensor (the seed record
#     repeated: where the encodings differ; with one record the binary body is the larger), in an
#     order that rotates from round to round, with a run of the baseline's /predict before the first and after each. Every
#     ml-api run is taken relative to the geometric mean of the two baseline runs around it,
#     and the targets that compare two servers or two protocols take the median over rounds
#     of those relative figures' ratio: on a shared host the throughput of one server drifts
#     by 2x within minutes (docs/performance.md), and runs a few seconds apart see the same
#     host;
#  5. prints one table and PASS/MISS per target, writes .run/bench/results.json and (unless
#     BENCH_WRITE_DOC=0) the generated block of docs/performance.md;
#  6. `cargo bench --bench predict_path` and `--bench batcher` (pinned to CPU 1) unless
#     BENCH_SKIP_CRITERION=1; their medians go into results.json.
#
# Exits non-zero when any load run saw a non-2xx response or a socket/request error. A missed
# performance target prints a MISS line but does not change the exit code.
#
# Environment:
#   BENCH_WARMUP=5s  BENCH_DURATION=15s   wrk durations (warm-up, each measured run)
#   BENCH_RATE_RUNS=3  BENCH_RATE_DURATION=20s   the constant-rate (bench_rate) runs, and each one's length
#   BENCH_RATE_WARMUP=3s                  the same rate before each of them, reported apart (0: none)
#   BENCH_AB_DURATION=10s                 each run of the drift A/B
#   BENCH_LOG_ROUNDS=7  BENCH_LOG_DURATION=5s   the rounds of the log A/B/C, and each run's length
#   BENCH_PAIRED_ROUNDS=7  BENCH_PAIRED_DURATION=3s   the paired rounds (step 4b)
#   BENCH_TENSOR_ROWS=32                  rows per tensor of the second V2/gRPC shape (step 4b)
#   BENCH_MEMORY_REQUESTS=1000000         requests of the memory run (oha -n)
#   BENCH_SKIP_CRITERION=1                skip `cargo bench`
#   BENCH_WRITE_DOC=0                     do not rewrite docs/performance.md (trial runs)
#   BENCH_SCENARIOS=a,b,...               run only these scenarios (default: all), of
#       baseline predict-batch-off drift-ab log-ab predict batch32 v2-infer v2-infer-binary
#       grpc-infer-raw paired constant-rate memory criterion; e.g. `BENCH_SCENARIOS=v2-infer,grpc-infer-raw`
#       for the protocol comparison. constant-rate needs predict (its rate is half the best
#       /predict rate). A partial run checks only the targets whose runs it has, never
#       rewrites docs/performance.md and skips criterion unless it is listed.
#   ORT_DYLIB_PATH                        ONNX Runtime library (default .ort/lib/...so.1.31.1)
#   CARGO_TARGET_DIR                      honoured when looking for the binaries
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WARMUP="${BENCH_WARMUP:-5s}"
DURATION="${BENCH_DURATION:-15s}"
RATE_DURATION="${BENCH_RATE_DURATION:-20s}"
RATE_RUNS="${BENCH_RATE_RUNS:-3}"
RATE_WARMUP="${BENCH_RATE_WARMUP:-3s}"
AB_DURATION="${BENCH_AB_DURATION:-10s}"
LOG_ROUNDS="${BENCH_LOG_ROUNDS:-7}"
LOG_DURATION="${BENCH_LOG_DURATION:-5s}"
PAIRED_ROUNDS="${BENCH_PAIRED_ROUNDS:-7}"
PAIRED_DURATION="${BENCH_PAIRED_DURATION:-3s}"
MEMORY_REQUESTS="${BENCH_MEMORY_REQUESTS:-1000000}"
WRITE_DOC="${BENCH_WRITE_DOC:-1}"
OUT=".run/bench"
LUA="loadtest/wrk/predict.lua"
SEED="tests/fixtures/seed_request.json"
MODEL="santander"
BATCH_RECORDS=32
# Rows per tensor of the second V2/gRPC shape, where the tensor encodings differ most.
TENSOR_ROWS="${BENCH_TENSOR_ROWS:-32}"
OHA_VERSION="1.16.0"
OHA="$ROOT/.tools/oha/bin/oha"
SCENARIOS="${BENCH_SCENARIOS:-}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.31.1}"
CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/ml-api"
BASELINE_BIN="$TARGET_DIR/release/examples/bench_baseline"
GRPC_FRAME_BIN="$TARGET_DIR/release/examples/grpc_frame"
RATE_BIN="$TARGET_DIR/release/examples/bench_rate"
GRPC_PATH="/inference.GRPCInferenceService/ModelInfer"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ -f "$ORT_DYLIB_PATH" ]] || die "ONNX Runtime not found at $ORT_DYLIB_PATH: run \`make ort\`"
mkdir -p "$OUT"

ALL_SCENARIOS=" baseline predict-batch-off drift-ab log-ab predict batch32 v2-infer v2-infer-binary grpc-infer-raw paired constant-rate memory criterion "
# want NAME...: true when any of the scenarios NAME... is selected (all are by default).
want() {
  [[ -z "$SCENARIOS" ]] && return 0
  local name
  for name in "$@"; do
    [[ ",$SCENARIOS," == *",$name,"* ]] && return 0
  done
  return 1
}
if [[ -n "$SCENARIOS" ]]; then
  for name in ${SCENARIOS//,/ }; do
    [[ "$ALL_SCENARIOS" == *" $name "* ]] || die "unknown scenario '$name' in BENCH_SCENARIOS (known:$ALL_SCENARIOS)"
  done
  if want constant-rate && ! want predict; then
    die "BENCH_SCENARIOS: constant-rate needs predict (its rate is half the best /predict rate)"
  fi
  log "only the scenarios $SCENARIOS: docs/performance.md is not rewritten"
  WRITE_DOC=0
fi

# --- tools ---------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends wrk >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; } \
    || die "cannot install wrk (apt-get install wrk)"
fi
# oha (crates.io) sends the memory run's fixed number of requests.
if ! { [[ -x "$OHA" ]] && "$OHA" --version 2>/dev/null | grep -q " $OHA_VERSION"; }; then
  log "installing oha $OHA_VERSION (crates.io) into .tools/oha; this takes a few minutes once"
  "$CARGO" install --locked --quiet oha --version "$OHA_VERSION" --root "$ROOT/.tools/oha" \
    || die "cannot build oha (cargo install --locked oha --version $OHA_VERSION)"
fi
# h2load (nghttp2) drives gRPC as wrk drives HTTP/1.1: one native thread, a fixed body.
if ! command -v h2load >/dev/null 2>&1; then
  log "installing h2load (Debian package nghttp2-client)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends nghttp2-client >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends nghttp2-client >/dev/null; } \
    || die "cannot install h2load (apt-get install nghttp2-client)"
fi
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required"

# Pin servers and clients to different CPUs when there are at least two.
SERVER_PIN=()
CLIENT_PIN=()
CPUS="$(nproc)"
if [[ "$CPUS" -ge 2 ]] && command -v taskset >/dev/null 2>&1; then
  SERVER_PIN=(taskset -c 1)
  CLIENT_PIN=(taskset -c 0)
else
  log "fewer than 2 CPUs (or no taskset): servers and load generators are not pinned"
fi

# --- build ---------------------------------------------------------------------------------
log "building the release binaries (ml-api, examples/bench_baseline, bench_rate and grpc_frame)"
# Two commands: building the example enables the dev-dependencies' features, and ml-api must
# be the product binary exactly as `cargo build --release` makes it.
"$CARGO" build --release --locked
"$CARGO" build --release --locked --example bench_baseline --example bench_rate --example grpc_frame
[[ -x "$BIN" ]] || die "no binary at $BIN"
[[ -x "$BASELINE_BIN" ]] || die "no binary at $BASELINE_BIN"
[[ -x "$GRPC_FRAME_BIN" ]] || die "no binary at $GRPC_FRAME_BIN"
[[ -x "$RATE_BIN" ]] || die "no binary at $RATE_BIN"

# --- request bodies ------------------------------------------------------------------------
BATCH_BODY="$OUT/batch${BATCH_RECORDS}.json"
V2_BODY="$OUT/v2-infer.json"
V2_ROWS_BODY="$OUT/v2-infer-rows.json"
python3 - "$SEED" "$BATCH_BODY" "$BATCH_RECORDS" <<'PY'
import json, sys
seed, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
record = json.load(open(seed))
with open(out, "w") as f:
    json.dump([record] * n, f, separators=(",", ":"))
PY

# --- servers -------------------------------------------------------------------------------
# shellcheck source=scripts/lib/ports.sh
source scripts/lib/ports.sh

SERVER_PID=""
SERVER_ENV=()
SERVER_LOG=""
BASE=""
READY_MS=""

stop_server() {  # stop_server [PID]: the current server (SERVER_PID), or PID
  local pid="${1:-$SERVER_PID}"
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  [[ "$pid" != "$SERVER_PID" ]] || SERVER_PID=""
}

# start_beside NAME: starts the bare baseline beside the current (default) server, both on
# the server CPU and driven one at a time, and warms it up. BESIDE_BASE is its URL; BASE,
# SERVER_PID, SERVER_LOG and GRPC_ADDR still name the default server. stop_beside stops it.
BESIDE_PID="" BESIDE_BASE=""
start_beside() {
  local base="$BASE" pid="$SERVER_PID" log="$SERVER_LOG" grpc="$GRPC_ADDR"
  start_server "$1" "$BASELINE_BIN" "{addr}"
  BESIDE_BASE="$BASE" BESIDE_PID="$SERVER_PID"
  BASE="$base" SERVER_PID="$pid" SERVER_LOG="$log" GRPC_ADDR="$grpc"
  BASE="$BESIDE_BASE" run_wrk warmup "$1" /predict 64 "$WARMUP" "$SEED" 1 discard
}
stop_beside() {
  stop_server "$BESIDE_PID"
  BESIDE_PID="" BESIDE_BASE=""
}
trap 'stop_server "$BESIDE_PID"; stop_server' EXIT
trap 'exit 130' INT TERM

# start_server NAME CMD... : starts CMD pinned to the server CPU (with `{addr}` replaced by a
# free loopback address), waits for `/readyz` 200 and sets SERVER_PID, BASE and READY_MS.
start_server() {
  local name="$1"
  shift
  local port grpc_port
  free_ports port grpc_port
  BASE="http://127.0.0.1:$port"
  GRPC_ADDR="127.0.0.1:$grpc_port"
  SERVER_LOG="$OUT/server-$name.log"
  local args=() arg
  for arg in "$@"; do
    arg="${arg//\{addr\}/127.0.0.1:$port}"
    args+=("${arg//\{grpc\}/$GRPC_ADDR}")
  done
  local started_ns
  started_ns="$(date +%s%N)"
  # The shipped log level unless SERVER_ENV says otherwise (e.g. RUST_LOG=warn).
  env -u RUST_LOG "${SERVER_ENV[@]}" "${SERVER_PIN[@]}" "${args[@]}" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local deadline=$((started_ns + 60 * 1000000000))
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -n 20 "$SERVER_LOG" >&2 || true
      die "$name exited before it was ready (log: $SERVER_LOG)"
    fi
    if curl -fsS -o /dev/null --max-time 1 "$BASE/readyz" 2>/dev/null; then
      READY_MS=$((($(date +%s%N) - started_ns) / 1000000))
      break
    fi
    [[ "$(date +%s%N)" -lt "$deadline" ]] || die "$name: /readyz not 200 after 60 s (log: $SERVER_LOG)"
    sleep 0.02
  done
  log "$name ready after ${READY_MS} ms on $BASE (pid $SERVER_PID)"
}

ML_API=("$BIN" serve --addr "{addr}" --grpc-addr "{grpc}" --model-dir models --default-model "$MODEL"
  --rate-limit false --log-format json)

# --- load ----------------------------------------------------------------------------------
RESULTS_JSONL="$OUT/runs.jsonl"
: >"$RESULTS_JSONL"
rm -f "$OUT"/wrk-*.txt "$OUT"/oha-*.json "$OUT"/h2load-*

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# run_wrk SCENARIO SERVER PATH CONNECTIONS DURATION BODY RECORDS [record|discard]
run_wrk() {
  local scenario="$1" server="$2" path="$3" conns="$4" duration="$5" body="$6" records="$7"
  local keep="${8:-record}"
  local text="$OUT/wrk-$scenario-c$conns.txt"
  log "wrk: $scenario, $conns connections, $duration"
  WRK_BODY_FILE="$body" "${CLIENT_PIN[@]}" wrk -t1 -c"$conns" -d"$duration" --timeout 5s \
    -s "$LUA" "$BASE$path" >"$text" 2>&1 || { cat "$text" >&2; die "wrk failed"; }
  local line
  line="$(grep '^WRK_RESULT ' "$text" | tail -n 1 | cut -d' ' -f2-)" \
    || { cat "$text" >&2; die "no WRK_RESULT line from wrk (see $text)"; }
  if [[ "$keep" == record ]]; then
    printf '{"scenario":"%s","server":"%s","path":"%s","tool":"wrk","connections":%d,"records_per_request":%d,"round":%s,"load_after":"%s","wrk":%s}\n' \
      "$scenario" "$server" "$path" "$conns" "$records" "${ROUND:-null}" "$(loadavg)" "$line" >>"$RESULTS_JSONL"
  fi
}

# run_oha SCENARIO SERVER PATH CONNECTIONS BODY OHA-ARGS... : one oha run, JSON kept.
run_oha() {
  local scenario="$1" server="$2" path="$3" conns="$4" body="$5"
  shift 5
  local json="$OUT/oha-$scenario-c$conns.json"
  log "oha: $scenario, $conns connections, $*"
  "${CLIENT_PIN[@]}" "$OHA" --no-tui --output-format json -c "$conns" -m POST \
    -H 'Content-Type: application/json' -D "$body" "$@" "$BASE$path" >"$json" \
    || die "oha failed (see $json)"
  printf '{"scenario":"%s","server":"%s","path":"%s","tool":"oha","connections":%d,"records_per_request":1,"round":%s,"load_after":"%s","oha_args":"%s","oha":%s}\n' \
    "$scenario" "$server" "$path" "$conns" "${ROUND:-null}" "$(loadavg)" "$*" "$(tr -d '\n' <"$json")" \
    >>"$RESULTS_JSONL"
}

# cpu_sample PID: "<ns since the epoch> <PID's user+system ticks> <host steal ticks> <host ticks>"
# (ticks of USER_HZ, all CPUs summed for the host).
cpu_sample() {
  printf '%s %s %s\n' "$(date +%s%N)" \
    "$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat")" \
    "$(awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat)"
}

# cpu_used BEFORE AFTER: the JSON object run_rate records (the server's CPU seconds, the
# share of one CPU they are over the wall time, the host's steal share).
cpu_used() {
python3 - "$1" "$2" "$(getconf CLK_TCK)" <<'PY'
import json, sys
(ns0, p0, s0, t0), (ns1, p1, s1, t1) = ([int(x) for x in a.split()] for a in sys.argv[1:3])
hz, wall = int(sys.argv[3]), (ns1 - ns0) / 1e9
print(json.dumps({"wall_s": round(wall, 3), "server_cpu_s": (p1 - p0) / hz,
                  "server_busy": round((p1 - p0) / hz / wall, 3),
                  "host_steal": round((s1 - s0) / (t1 - t0), 4) if t1 > t0 else 0.0}))
PY
}

# server_latency LOG OFFSET: adds to the last run in RESULTS_JSONL the server-side latency
# percentiles of its /predict requests, from the JSON access lines LOG received after byte
# OFFSET. The log writer flushes in the background, so it waits (up to 10 s) until there are
# as many lines as the run had 2xx answers.
server_latency() {
python3 - "$1" "$2" "$RESULTS_JSONL" <<'PY' || die "no server-side latencies in $1"
import json, sys, time
log, offset, results = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(results).read().splitlines()
run = json.loads(lines[-1])
answered = sum(v for k, v in run["bench_rate"]["statuses"].items() if 200 <= int(k) < 300)
deadline = time.monotonic() + 10
while True:
    with open(log, "rb") as f:
        f.seek(offset)
        latencies = [json.loads(l)["latency_ms"] for l in f.read().splitlines()
                     if b'"route":"/predict"' in l and b'"latency_ms"' in l]
    if len(latencies) >= answered or time.monotonic() > deadline:
        break
    time.sleep(0.1)
if not latencies:
    sys.exit(1)
latencies.sort()
def pct(q):
    return latencies[min(len(latencies) - 1, int(q * len(latencies)))]
run["server_latency_ms"] = {"requests": len(latencies), "p50": pct(0.50), "p99": pct(0.99),
                            "p999": pct(0.999), "max": latencies[-1]}
lines[-1] = json.dumps(run, separators=(",", ":"))
open(results, "w").write("\n".join(lines) + "\n")
PY
}

LOAD_BEFORE="$(loadavg)"
log "load average before: $LOAD_BEFORE (on $CPUS CPUs)"

# 1. baseline: the bare axum handler.
BASELINE_READY_MS="" OFF_READY_MS="" DEFAULT_READY_MS="" RSS_KB="" HWM_KB="" MAX_RPS="" HALF_RPS=""
ACCESS_LINES=""
if want baseline; then
  start_server baseline "$BASELINE_BIN" "{addr}"
  BASELINE_READY_MS="$READY_MS"
  curl -fsS --max-time 5 -H 'Content-Type: application/json' --data-binary "@$SEED" \
    "$BASE/predict" | grep -q '"predictions"' || die "baseline POST /predict did not answer 200"
  run_wrk warmup baseline /predict 64 "$WARMUP" "$SEED" 1 discard
  for c in 1 16 64 256; do run_wrk baseline baseline /predict "$c" "$DURATION" "$SEED" 1; done
  stop_server
fi

# 2. ml-api, batching off.
if want predict-batch-off; then
  start_server batching-off "${ML_API[@]}" --batch-max-size 1
  OFF_READY_MS="$READY_MS"
  run_wrk warmup batching-off /predict 64 "$WARMUP" "$SEED" 1 discard
  for c in 16 64 256; do run_wrk predict-batch-off ml-api-batching-off /predict "$c" "$DURATION" "$SEED" 1; done
  stop_server
fi

# 2b. The drift histograms' cost, A/B: two servers side by side on the server CPU, default
#     flags and `--drift false`, driven in turn (3 rounds at 64 connections, the order swapped
#     from round to round) so that a change in the machine's load hits both alike; the
#     medians are compared.
if want drift-ab; then
  start_server drift-off "${ML_API[@]}" --drift false
  OFF_PID="$SERVER_PID" OFF_BASE="$BASE"
  start_server drift-on "${ML_API[@]}"
  ON_PID="$SERVER_PID" ON_BASE="$BASE"
  for base in "$OFF_BASE" "$ON_BASE"; do BASE="$base" run_wrk warmup drift-ab /predict 64 "$WARMUP" "$SEED" 1 discard; done
  drift_run() {  # drift_run on|off
    case "$1" in
      on) BASE="$ON_BASE" run_wrk drift-ab-on ml-api-drift-ab /predict 64 "$AB_DURATION" "$SEED" 1 ;;
      off) BASE="$OFF_BASE" run_wrk drift-ab-off ml-api-drift-ab /predict 64 "$AB_DURATION" "$SEED" 1 ;;
    esac
  }
  for round in 1 2 3; do
    if ((round % 2)); then drift_run on; drift_run off; else drift_run off; drift_run on; fi
  done
  SERVER_PID="$ON_PID"; stop_server
  SERVER_PID="$OFF_PID"; stop_server
fi

# 2c. The logs' cost, A/B/C in the same way: default flags (access log on, every request),
#     `--access-log false`, and `RUST_LOG=warn` (logging off: no info lines, no request span);
#     the order rotates from round to round. Each round's three runs are seconds apart, so
#     the target takes the median of the rounds' own ratios (as the paired rounds do): a
#     ratio of medians mixes runs minutes apart on a host whose speed drifts.
if want log-ab; then
  start_server log-default "${ML_API[@]}"
  LOG_ON_PID="$SERVER_PID" LOG_ON_BASE="$BASE"
  start_server access-log-off "${ML_API[@]}" --access-log false
  ACCESS_OFF_PID="$SERVER_PID" ACCESS_OFF_BASE="$BASE"
  SERVER_ENV=(RUST_LOG=warn)
  start_server logging-off "${ML_API[@]}"
  SERVER_ENV=()
  LOG_OFF_PID="$SERVER_PID" LOG_OFF_BASE="$BASE"
  for base in "$LOG_ON_BASE" "$ACCESS_OFF_BASE" "$LOG_OFF_BASE"; do
    BASE="$base" run_wrk warmup log-ab /predict 64 "$WARMUP" "$SEED" 1 discard
  done
  log_run() {  # log_run default|access-off|off
    case "$1" in
      default) BASE="$LOG_ON_BASE" run_wrk log-ab-default ml-api-log-ab /predict 64 "$LOG_DURATION" "$SEED" 1 ;;
      access-off) BASE="$ACCESS_OFF_BASE" run_wrk log-ab-access-off ml-api-log-ab /predict 64 "$LOG_DURATION" "$SEED" 1 ;;
      off) BASE="$LOG_OFF_BASE" run_wrk log-ab-off ml-api-log-ab /predict 64 "$LOG_DURATION" "$SEED" 1 ;;
    esac
  }
  LOG_KINDS=(default access-off off)
  for ((round = 1; round <= LOG_ROUNDS; round++)); do
    for i in 0 1 2; do ROUND="$round" log_run "${LOG_KINDS[(i + round) % 3]}"; done
  done
  ACCESS_LINES="$(grep -c '"ml_api::access"' "$OUT/server-log-default.log" || true)"
  for pid in "$LOG_ON_PID" "$ACCESS_OFF_PID" "$LOG_OFF_PID"; do SERVER_PID="$pid"; stop_server; done
  [[ "$ACCESS_LINES" -gt 0 ]] || die "the default server wrote no access-log line (see $OUT/server-log-default.log)"
  log "the default server wrote $ACCESS_LINES access-log lines"
fi

# 3. ml-api, default flags (batching on): the one whose start-up and memory are the targets.
#    (The body of this `if` is not indented: its heredocs end at the start of a line.)
if want predict batch32 v2-infer v2-infer-binary grpc-infer-raw paired constant-rate memory; then
start_server default "${ML_API[@]}"
DEFAULT_READY_MS="$READY_MS"
SERVER_UNDER_TEST_PID="$SERVER_PID"
curl -fsS --max-time 5 -H 'Content-Type: application/json' --data-binary "@$SEED" \
  "$BASE/predict" | grep -q '"predictions"' || die "POST /predict with the seed did not answer 200"
# The seed record as V2 JSON tensors: one [1, 1] tensor per model input, named and typed as
# the server's own model metadata says (as tritonclient builds them).
curl -fsS --max-time 5 "$BASE/v2/models/$MODEL" >"$OUT/v2-metadata.json" \
  || die "GET /v2/models/$MODEL failed"
# v2_json_body ROWS OUT: the seed record ROWS times, as [ROWS, 1] tensors.
v2_json_body() {
python3 - "$SEED" "$OUT/v2-metadata.json" "$1" "$2" <<'PY'
import json, sys
seed, metadata, rows, out = sys.argv[1:]
record = json.load(open(seed))
inputs = []
for spec in json.load(open(metadata))["inputs"]:
    value = record.get(spec["name"])
    if value is None:
        sys.exit(f"the seed record has no value for model input {spec['name']}")
    inputs.append({"name": spec["name"], "shape": [int(rows), 1], "datatype": spec["datatype"],
                   "data": [value] * int(rows)})
with open(out, "w") as f:
    json.dump({"id": "bench", "inputs": inputs}, f, separators=(",", ":"))
PY
}
v2_json_body 1 "$V2_BODY"
v2_json_body "$TENSOR_ROWS" "$V2_ROWS_BODY"
# The same tensors with the binary-data extension, as tritonclient[http] sends them by default:
# a JSON header (each input's `binary_data_size`, and `binary_data_output` so the answer comes
# back as raw bytes too), then the raw little-endian values (BYTES: 4-byte length + bytes).
# v2_binary_body JSON-BODY OUT: prints the header's length.
v2_binary_body() {
python3 - "$1" "$2" <<'PY'
import json, struct, sys
source, out = sys.argv[1:]
request = json.load(open(source))
blobs = []
for tensor in request["inputs"]:
    kind = tensor["datatype"]
    blob = b""
    for value in tensor.pop("data"):
        if kind == "BYTES":
            raw = str(value).encode()
            blob += struct.pack("<I", len(raw)) + raw
        elif kind == "BOOL":
            blob += struct.pack("<?", bool(value))
        else:
            fmt = {"FP32": "<f", "FP64": "<d", "INT64": "<q", "INT32": "<i", "INT8": "<b",
                   "INT16": "<h", "UINT8": "<B"}[kind]
            blob += struct.pack(fmt, float(value) if fmt in ("<f", "<d") else int(value))
    tensor["parameters"] = {"binary_data_size": len(blob)}
    blobs.append(blob)
request["parameters"] = {"binary_data_output": True}
header = json.dumps(request, separators=(",", ":")).encode()
with open(out, "wb") as f:
    f.write(header + b"".join(blobs))
print(len(header))
PY
}
V2_BINARY_BODY="$OUT/v2-infer-binary.bin"
V2_HEADER_LENGTH="$(v2_binary_body "$V2_BODY" "$V2_BINARY_BODY")"
V2_ROWS_BINARY_BODY="$OUT/v2-infer-binary-rows.bin"
V2_ROWS_HEADER_LENGTH="$(v2_binary_body "$V2_ROWS_BODY" "$V2_ROWS_BINARY_BODY")"
V2_PATH="/v2/models/$MODEL/infer"
curl -fsS --max-time 5 -H 'Content-Type: application/json' --data-binary "@$V2_BODY" \
  "$BASE$V2_PATH" | grep -q '"outputs"' || die "POST $V2_PATH did not answer 200"

curl -fsS --max-time 5 -H 'Content-Type: application/octet-stream' \
  -H "Inference-Header-Content-Length: $V2_HEADER_LENGTH" --data-binary "@$V2_BINARY_BODY" \
  "$BASE$V2_PATH" | grep -q '"outputs"' || die "POST $V2_PATH with binary tensors did not answer 200"
# The batch shape: JSON and binary must give the same TENSOR_ROWS x 22 probabilities.
curl -fsS --max-time 5 -H 'Content-Type: application/json' --data-binary "@$V2_ROWS_BODY" \
  "$BASE$V2_PATH" >"$OUT/v2-rows-check.json" || die "POST $V2_PATH with $TENSOR_ROWS rows did not answer 200"
curl -fsS --max-time 5 -H 'Content-Type: application/octet-stream' \
  -H "Inference-Header-Content-Length: $V2_ROWS_HEADER_LENGTH" -D "$OUT/v2-rows-binary-headers.txt" \
  --data-binary "@$V2_ROWS_BINARY_BODY" "$BASE$V2_PATH" >"$OUT/v2-rows-binary-check.bin" \
  || die "POST $V2_PATH with $TENSOR_ROWS rows of binary tensors did not answer 200"
python3 - "$OUT/v2-rows-check.json" "$OUT/v2-rows-binary-headers.txt" "$OUT/v2-rows-binary-check.bin" "$TENSOR_ROWS" <<'PY' \
  || die "V2 binary and JSON answers differ"
import json, re, struct, sys
rest, headers, raw, rows = sys.argv[1:]
expected = json.load(open(rest))["outputs"][0]
length = int(re.search(r"(?im)^inference-header-content-length: *(\d+)", open(headers).read()).group(1))
body = open(raw, "rb").read()
header = json.loads(body[:length])["outputs"][0]
values = struct.unpack(f"<{(len(body) - length) // 4}f", body[length:])
if header["shape"] != [int(rows), 22] or expected["shape"] != header["shape"] \
        or any(abs(x - y) > 1e-6 for x, y in zip(values, expected["data"])) \
        or len(values) != len(expected["data"]):
    sys.exit(f"binary {header} vs JSON {expected['shape']}")
PY

run_wrk warmup default /predict 64 "$WARMUP" "$SEED" 1 discard
if want predict; then
  for c in 1 16 64 256; do run_wrk predict ml-api /predict "$c" "$DURATION" "$SEED" 1; done
fi
if want batch32; then
  run_wrk batch$BATCH_RECORDS ml-api /predict 16 "$DURATION" "$BATCH_BODY" "$BATCH_RECORDS"
fi
if want v2-infer; then
  for c in 64 256; do run_wrk v2-infer ml-api "$V2_PATH" "$c" "$DURATION" "$V2_BODY" 1; done
fi
if want v2-infer-binary; then
  WRK_CONTENT_TYPE=application/octet-stream \
    WRK_HEADERS="Inference-Header-Content-Length: $V2_HEADER_LENGTH" \
    run_wrk v2-infer-binary ml-api "$V2_PATH" 64 "$DURATION" "$V2_BINARY_BODY" 1
fi

# gRPC ModelInfer with raw tensors, beside V2 over REST: h2load posts one pre-encoded gRPC
# request frame (examples/grpc_frame.rs: the seed record as raw tensors, as tritonclient[grpc]
# sends it) on every stream, one stream in flight per connection (`-m 1`, as wrk keeps one
# request in flight per connection). h2load counts HTTP statuses, and a failed gRPC call is an
# HTTP 200 too (its grpc-status is in the trailers). So: before the run, the same bytes must
# end with `grpc-status: 0` (curl, which prints trailers) and give the probabilities V2 JSON
# gives; after it, the server's own ml_api_grpc_requests_total{method="ModelInfer"} must have
# grown with code OK only, by at least the calls h2load counts as succeeded and at most the
# calls it started (those in flight when its clock stopped are answered but not counted).
GRPC_FRAME="$OUT/grpc-infer-raw.bin"
GRPC_ROWS_FRAME="$OUT/grpc-infer-raw-rows.bin"
grpc_infer_counts() {  # grpc_infer_counts OUT: the server's ModelInfer calls by code, as JSON
  curl -fsS --max-time 5 "$BASE/metrics" | python3 -c '
import json, re, sys
counts = {}
for line in sys.stdin:
    m = re.match(r"ml_api_grpc_requests_total\{(.*)\} (\S+)$", line.strip())
    if m and "method=\"ModelInfer\"" in m.group(1):
        counts[re.search(r"code=\"(\w+)\"", m.group(1)).group(1)] = int(float(m.group(2)))
json.dump(counts, sys.stdout)' >"$1" || die "cannot read the gRPC counters from $BASE/metrics"
}
# run_h2load SCENARIO CONNECTIONS DURATION [record|discard] [STREAMS]: STREAMS calls in flight
# on each connection (default 1), posting GRPC_FRAME (or H2LOAD_FRAME, a frame of
# H2LOAD_RECORDS rows).
run_h2load() {
  local scenario="$1" conns="$2" duration="$3" keep="${4:-record}" streams="${5:-1}"
  local text="$OUT/h2load-$scenario-c$conns-m$streams.txt" calls="$OUT/h2load-$scenario-c$conns-m$streams.log"
  log "h2load: $scenario, $conns connections x $streams streams, $duration"
  grpc_infer_counts "$OUT/h2load-$scenario-before.json"
  : >"$calls"  # h2load appends to its --log-file
  "${CLIENT_PIN[@]}" h2load -t 1 -c "$conns" -m "$streams" -D "$duration" -d "${H2LOAD_FRAME:-$GRPC_FRAME}" \
    -H 'content-type: application/grpc' -H 'te: trailers' --log-file "$calls" \
    "http://$GRPC_ADDR$GRPC_PATH" >"$text" 2>&1 || { cat "$text" >&2; die "h2load failed"; }
  grpc_infer_counts "$OUT/h2load-$scenario-after.json"
  local line
  line="$(python3 - "$text" "$calls" "${duration%s}" "$OUT/h2load-$scenario-before.json" \
    "$OUT/h2load-$scenario-after.json" <<'PY'
import json, re, sys
text, calls, seconds, before, after = sys.argv[1:]
out = open(text).read()
def field(pattern):
    m = re.search(pattern, out)
    if not m:
        sys.exit(f"h2load printed no line matching {pattern!r}")
    return [int(g) for g in m.groups()]
started, done, succeeded, failed, errored, timeout = field(
    r"requests: \d+ total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout")
non_2xx = sum(field(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx"))
# --log-file: one line per call of the measured run: start (us), HTTP status, duration (us).
times = sorted(int(l.split()[2]) for l in open(calls) if l.strip())
def pct(p):
    return times[round((len(times) - 1) * p)] / 1000 if times else 0.0
b, a = json.load(open(before)), json.load(open(after))
delta = {code: a.get(code, 0) - b.get(code, 0) for code in sorted(set(a) | set(b))}
server_ok = delta.pop("OK", 0)
other = {code: n for code, n in delta.items() if n}
# Calls h2load counts as succeeded that the server did not answer with OK (or OK answers to
# calls h2load never started): errors, however they were answered.
unmatched = max(succeeded - server_ok, server_ok - started, 0)
errors = failed + errored + timeout + non_2xx + max(sum(other.values()), unmatched)
if other:
    print(f"h2load: the server answered ModelInfer with other codes than OK: {other}", file=sys.stderr)
if unmatched:
    print(f"h2load: the server counted {server_ok} OK ModelInfer calls, h2load {succeeded} "
          f"succeeded of {started} started", file=sys.stderr)
print(json.dumps({"requests": done, "rps": round(succeeded / float(seconds), 2),
                  "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": errors,
                  "started": started, "succeeded": succeeded, "logged": len(times),
                  "server_ok": server_ok, "server_other": other}))
PY
)" || die "cannot read the h2load run (see $text)"
  if [[ "$keep" == record ]]; then
    printf '{"scenario":"%s","server":"ml-api","path":"%s","tool":"h2load","connections":%d,"streams":%d,"records_per_request":%d,"round":%s,"load_after":"%s","h2load":%s}\n' \
      "$scenario" "$GRPC_PATH" "$conns" "$streams" "${H2LOAD_RECORDS:-1}" "${ROUND:-null}" "$(loadavg)" "$line" >>"$RESULTS_JSONL"
  fi
}
if want grpc-infer-raw paired; then
  "$GRPC_FRAME_BIN" encode "$GRPC_ADDR" "$MODEL" "$GRPC_FRAME" || die "cannot write the gRPC request frame"
  "$GRPC_FRAME_BIN" encode "$GRPC_ADDR" "$MODEL" "$GRPC_ROWS_FRAME" "$TENSOR_ROWS" \
    || die "cannot write the gRPC request frame of $TENSOR_ROWS rows"
  curl -sS --max-time 5 --http2-prior-knowledge -H 'content-type: application/grpc' \
    -H 'te: trailers' --data-binary "@$GRPC_FRAME" -D "$OUT/grpc-check-headers.txt" \
    -o /dev/null "http://$GRPC_ADDR$GRPC_PATH" || die "curl could not post the gRPC frame"
  grep -qi '^grpc-status: 0' "$OUT/grpc-check-headers.txt" \
    || { cat "$OUT/grpc-check-headers.txt" >&2; die "the gRPC request frame did not end with grpc-status 0"; }
  "$GRPC_FRAME_BIN" check "$GRPC_ADDR" "$GRPC_FRAME" >"$OUT/grpc-check.json" \
    || die "ModelInfer with the gRPC request frame failed"
  curl -fsS --max-time 5 -H 'Content-Type: application/json' --data-binary "@$V2_BODY" \
    "$BASE$V2_PATH" >"$OUT/v2-check.json" || die "POST $V2_PATH did not answer 200"
  same_outputs() {  # same_outputs GRPC-JSON V2-JSON: the same outputs, shapes and values
  python3 - "$1" "$2" <<'PY' || die "gRPC and V2 JSON answers differ ($1, $2)"
import json, sys
grpc, rest = (json.load(open(p))["outputs"] for p in sys.argv[1:])
by_name = {o["name"]: o for o in grpc}
for o in rest:
    got = by_name.get(o["name"])
    if not got or got["shape"] != o["shape"] or len(got["data"]) != len(o["data"]) \
            or any(abs(x - y) > 1e-6 for x, y in zip(got["data"], o["data"])):
        sys.exit(f"output {o['name']}: gRPC {got} vs V2 JSON {o}")
PY
  }
  same_outputs "$OUT/grpc-check.json" "$OUT/v2-check.json"
  "$GRPC_FRAME_BIN" check "$GRPC_ADDR" "$GRPC_ROWS_FRAME" >"$OUT/grpc-rows-check.json" \
    || die "ModelInfer with the gRPC request frame of $TENSOR_ROWS rows failed"
  same_outputs "$OUT/grpc-rows-check.json" "$OUT/v2-rows-check.json"
  run_h2load warmup 64 "$WARMUP" discard
  if want grpc-infer-raw; then
    run_h2load grpc-infer-raw-channel 1 "$DURATION" record 64
    run_h2load grpc-infer-raw 64 "$DURATION"
  fi
fi

# 4b. Paired rounds (see the top of this file): the baseline beside the default server.
if want paired; then
  start_beside paired-baseline
  paired_run() {  # paired_run KIND: one run of the round
    case "$1" in
      baseline) BASE="$BESIDE_BASE" run_wrk paired-baseline baseline /predict 64 "$PAIRED_DURATION" "$SEED" 1 ;;
      predict) run_wrk paired-predict ml-api /predict 64 "$PAIRED_DURATION" "$SEED" 1 ;;
      v2-infer) run_wrk paired-v2-infer ml-api "$V2_PATH" 64 "$PAIRED_DURATION" "$V2_BODY" 1 ;;
      v2-infer-binary)
        WRK_CONTENT_TYPE=application/octet-stream \
          WRK_HEADERS="Inference-Header-Content-Length: $V2_HEADER_LENGTH" \
          run_wrk paired-v2-infer-binary ml-api "$V2_PATH" 64 "$PAIRED_DURATION" "$V2_BINARY_BODY" 1 ;;
      grpc-infer-raw-channel)
        run_h2load paired-grpc-infer-raw-channel 1 "$PAIRED_DURATION" record 64 ;;
      grpc-infer-raw) run_h2load paired-grpc-infer-raw 64 "$PAIRED_DURATION" ;;
      v2-infer-rows)
        run_wrk paired-v2-infer-rows ml-api "$V2_PATH" 64 "$PAIRED_DURATION" \
          "$V2_ROWS_BODY" "$TENSOR_ROWS" ;;
      v2-infer-binary-rows)
        WRK_CONTENT_TYPE=application/octet-stream \
          WRK_HEADERS="Inference-Header-Content-Length: $V2_ROWS_HEADER_LENGTH" \
          run_wrk paired-v2-infer-binary-rows ml-api "$V2_PATH" 64 "$PAIRED_DURATION" \
          "$V2_ROWS_BINARY_BODY" "$TENSOR_ROWS" ;;
      grpc-infer-raw-channel-rows)
        H2LOAD_FRAME="$GRPC_ROWS_FRAME" H2LOAD_RECORDS="$TENSOR_ROWS" \
          run_h2load paired-grpc-infer-raw-channel-rows 1 "$PAIRED_DURATION" record 64 ;;
    esac
  }
  # Each ml-api run between two baseline runs, which it is compared with.
  PAIRED_KINDS=(predict v2-infer v2-infer-binary grpc-infer-raw-channel grpc-infer-raw
    v2-infer-rows v2-infer-binary-rows grpc-infer-raw-channel-rows)
  for ((round = 1; round <= PAIRED_ROUNDS; round++)); do
    ROUND="$round" paired_run baseline
    for ((i = 0; i < ${#PAIRED_KINDS[@]}; i++)); do
      ROUND="$round" paired_run "${PAIRED_KINDS[(i + round - 1) % ${#PAIRED_KINDS[@]}]}"
      ROUND="$round" paired_run baseline
    done
  done
  stop_beside
fi

# Constant rate at half of the highest /predict (default flags) rate measured above, in
# RATE_RUNS rounds. Each round drives the default server, then the bare baseline (started
# beside it) at the same rate: the baseline's p99 is what the load generator and the host
# give a server that does almost nothing, the floor under ml-api's. The ml-api run's
# server-side latencies are read from the access lines it wrote during the run.
if want constant-rate; then
MAX_RPS="$(python3 - "$RESULTS_JSONL" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(int(max(r["wrk"]["rps"] for r in runs if r["scenario"] == "predict")))
PY
)"
HALF_RPS=$((MAX_RPS / 2))
start_beside rate-baseline
# run_rate SCENARIO SERVER DURATION: /predict at HALF_RPS for DURATION (64 connections,
# examples/bench_rate.rs: open loop, latency correction), its JSON kept. With CPU_OF=PID,
# the run also records the CPU time that process used during it and the host's steal time
# (`"cpu"`): how busy the server was at the rate, and how much of the machine the
# hypervisor took back.
run_rate() {
  local scenario="$1" server="$2" duration="$3" cpu_before="" cpu="null"
  local json="$OUT/rate-$scenario.json"
  log "bench_rate: $scenario, 64 connections, $HALF_RPS req/s for $duration"
  [[ -n "${CPU_OF:-}" ]] && cpu_before="$(cpu_sample "$CPU_OF")"
  "${CLIENT_PIN[@]}" "$RATE_BIN" --url "$BASE/predict" --body "$SEED" --rate "$HALF_RPS" \
    --duration "$duration" --connections 64 >"$json" || die "bench_rate failed (see $json)"
  [[ -n "$cpu_before" ]] && cpu="$(cpu_used "$cpu_before" "$(cpu_sample "$CPU_OF")")"
  printf '{"scenario":"%s","server":"%s","path":"/predict","tool":"bench_rate","connections":64,"records_per_request":1,"round":%s,"load_after":"%s","cpu":%s,"bench_rate":%s}\n' \
    "$scenario" "$server" "${ROUND:-null}" "$(loadavg)" "$cpu" "$(tr -d '\n' <"$json")" \
    >>"$RESULTS_JSONL"
}
# rate_warmup SCENARIO SERVER: BENCH_RATE_WARMUP of the constant rate before a measured run.
# Each server has sat idle while the other was driven: the first second after that is slower
# (both servers; docs/performance.md), and the wrk runs get a warm-up per server too. The
# warm-up's own p99 is kept in the results and the table, outside the target.
rate_warmup() {
  [[ "$RATE_WARMUP" =~ ^0[a-z]*$ ]] && return 0
  run_rate "$1" "$2" "$RATE_WARMUP"
}
for ((round = 1; round <= RATE_RUNS; round++)); do
  ROUND="$round" rate_warmup constant-rate-warmup ml-api
  log_from="$(stat -c %s "$SERVER_LOG")"
  CPU_OF="$SERVER_PID" ROUND="$round" run_rate constant-rate ml-api "$RATE_DURATION"
  server_latency "$SERVER_LOG" "$log_from"
  BASE="$BESIDE_BASE" ROUND="$round" rate_warmup constant-rate-baseline-warmup baseline
  CPU_OF="$BESIDE_PID" BASE="$BESIDE_BASE" ROUND="$round" \
    run_rate constant-rate-baseline baseline "$RATE_DURATION"
done
stop_beside
fi

# Memory: at least 1,000,000 more requests, then the server's resident set.
if want memory; then
  run_oha memory ml-api /predict 64 "$SEED" -n "$MEMORY_REQUESTS"
  RSS_KB="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_UNDER_TEST_PID/status")"
  HWM_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_UNDER_TEST_PID/status")"
fi
stop_server
fi
LOAD_AFTER="$(loadavg)"

# --- report --------------------------------------------------------------------------------
MACHINE_CPU="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
MACHINE_MEM_KB="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
VIRT="$(systemd-detect-virt 2>/dev/null || true)"
TOOLS="$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $("$OHA" --version); $(h2load --version | head -n 1); $(rustc --version | cut -d' ' -f1-2)"
STATUS=0
export DEFAULT_READY_MS OFF_READY_MS BASELINE_READY_MS RSS_KB HWM_KB MAX_RPS HALF_RPS \
  LOAD_BEFORE LOAD_AFTER CPUS MACHINE_CPU MACHINE_MEM_KB VIRT TOOLS DURATION WARMUP \
  RATE_DURATION RATE_RUNS RATE_WARMUP MEMORY_REQUESTS ACCESS_LINES TENSOR_ROWS
export PINNED="${#SERVER_PIN[@]}"
python3 - "$RESULTS_JSONL" "$OUT/results.json" "$OUT/table.md" <<'PY' || STATUS=$?
import json, os, platform, sys, time
E = os.environ
runs_path, out, table_md = sys.argv[1:]
def number(name):  # None when the scenario that measures it did not run (BENCH_SCENARIOS)
    return int(E[name]) if E.get(name) else None
env = {
    "ready_ms": {"default": number("DEFAULT_READY_MS"), "batching_off": number("OFF_READY_MS"),
                 "baseline": number("BASELINE_READY_MS")},
    "rss_kib": number("RSS_KB"), "hwm_kib": number("HWM_KB"),
    "max_rps": number("MAX_RPS"), "half_rps": number("HALF_RPS"),
}
runs = [json.loads(line) for line in open(runs_path) if line.strip()]

def norm(run):
    """requests, req/s, p50/p99 in ms and error count, whatever the tool."""
    if run["tool"] == "h2load":
        h = run["h2load"]
        return dict(requests=h["requests"], rps=h["rps"], p50=h["p50_ms"], p99=h["p99_ms"],
                    errors=h["errors"])
    if run["tool"] == "bench_rate":
        b = run["bench_rate"]
        ok = sum(v for k, v in b["statuses"].items() if 200 <= int(k) < 300)
        errors = b["requests"] - ok
        return dict(requests=b["requests"], rps=b["rps"], p50=b["latency_ms"]["p50"],
                    p99=b["latency_ms"]["p99"], errors=errors)
    if run["tool"] == "wrk":
        w = run["wrk"]
        errors = w["non_2xx"] + sum(w["socket_errors"].values())
        return dict(requests=w["requests"], rps=w["rps"], p50=w["latency_ms"]["p50"],
                    p99=w["latency_ms"]["p99"], errors=errors)
    o = run["oha"]
    codes = {int(k): v for k, v in (o.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    # oha runs only with -n (the memory run): every request it sent counts, none is cancelled.
    errors = (sum(v for k, v in codes.items() if not 200 <= k < 300)
              + sum((o.get("errorDistribution") or {}).values()))
    pct = o["latencyPercentiles"]
    return dict(requests=ok + errors, rps=o["summary"]["requestsPerSec"],
                p50=pct["p50"] * 1000, p99=pct["p99"] * 1000, errors=errors)

import statistics
for run in runs:
    run["result"] = norm(run)
baseline = {r["connections"]: r["result"]["rps"] for r in runs if r["scenario"] == "baseline"}

def flanking_baseline(index):
    """The baseline a paired run is compared with (step 4b): the geometric mean of the
    baseline runs just before and just after it, in its round."""
    run = runs[index]
    if run["scenario"] == "paired-baseline":
        return run["result"]["rps"]
    before = [r for r in runs[:index] if r["scenario"] == "paired-baseline"][-1:]
    after = [r for r in runs[index + 1:] if r["scenario"] == "paired-baseline"][:1]
    found = [r["result"]["rps"] for r in before + after if r["round"] == run["round"]]
    return statistics.geometric_mean(found) if found else None

for index, run in enumerate(runs):
    run["reference"] = flanking_baseline(index) if run["scenario"].startswith("paired-") else None
for run in runs:
    b = run["reference"] if run["scenario"].startswith("paired-") else baseline.get(run["connections"])
    run["pct_of_baseline"] = (round(100 * run["result"]["rps"] / b, 1)
                              if b and run["tool"] == "wrk" and run["records_per_request"] == 1
                              else None)

TENSOR_ROWS = int(E["TENSOR_ROWS"])
LABELS = {
    "baseline": "baseline (bare axum, no model)",
    "predict-batch-off": "ml-api /predict, batching off",
    "drift-ab-on": "ml-api /predict, drift A/B: on (default)",
    "drift-ab-off": "ml-api /predict, drift A/B: off",
    "predict": "ml-api /predict, batching on (default)",
    "batch32": "ml-api /predict, 32 records/request",
    "v2-infer": "ml-api V2 infer (JSON tensors), batching on",
    "v2-infer-binary": "ml-api V2 infer (binary tensors), batching on",
    "grpc-infer-raw": "ml-api gRPC ModelInfer (raw tensors), batching on",
    "grpc-infer-raw-channel": "ml-api gRPC ModelInfer (raw tensors), one channel x 64 streams",
    "log-ab-default": "ml-api /predict, log A/B: default (access log on)",
    "log-ab-access-off": "ml-api /predict, log A/B: --access-log false",
    "log-ab-off": "ml-api /predict, log A/B: RUST_LOG=warn (logging off)",
    "paired-baseline": "baseline (bare axum, no model)",
    "paired-predict": "ml-api /predict (default)",
    "paired-v2-infer": "ml-api V2 infer (JSON tensors)",
    "paired-v2-infer-binary": "ml-api V2 infer (binary tensors)",
    "paired-grpc-infer-raw": "ml-api gRPC ModelInfer (raw tensors)",
    "paired-grpc-infer-raw-channel": "ml-api gRPC ModelInfer (raw tensors), one channel x 64 streams",
    "paired-v2-infer-rows": f"ml-api V2 infer (JSON tensors), {TENSOR_ROWS} rows/request",
    "paired-v2-infer-binary-rows": f"ml-api V2 infer (binary tensors), {TENSOR_ROWS} rows/request",
    "paired-grpc-infer-raw-channel-rows": f"ml-api gRPC ModelInfer (raw tensors), one channel x 64 streams, {TENSOR_ROWS} rows/request",
    "constant-rate": f"ml-api /predict, constant {env['half_rps']} req/s (bench_rate)",
    "constant-rate-baseline": f"baseline (bare axum, no model), constant {env['half_rps']} req/s (bench_rate)",
    "constant-rate-warmup": f"ml-api /predict, constant {env['half_rps']} req/s, warm-up (bench_rate)",
    "constant-rate-baseline-warmup": f"baseline, constant {env['half_rps']} req/s, warm-up (bench_rate)",
    "memory": "ml-api /predict, memory run (oha)",
}
header = ["scenario", "conns", "req/s", "p50 ms", "p99 ms", "errors", "% of baseline"]
rows = []
for run in runs:
    r = run["result"]
    pct = run["pct_of_baseline"]
    label = LABELS.get(run["scenario"], run["scenario"])
    if run.get("round") is not None:
        kind = "paired round" if run["scenario"].startswith("paired-") else "round"
        label = f"{kind} {run['round']}: {label}"
    rows.append([label, str(run["connections"]),
                 f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", str(r["errors"]),
                 "-" if pct is None else f"{pct:.0f} %"])
widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]
def line(cells):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
print()
print(line(header))
print("-" * len(line(header)))
for row in rows:
    print(line(row))

# Targets: each is checked when the runs it needs are there (all of them in a full run).
served = sum(run["result"]["requests"] for run in runs if run["server"] == "ml-api")
ran = {run["scenario"] for run in runs}
def at(scenario, conns):
    return next(run for run in runs if run["scenario"] == scenario and run["connections"] == conns)
def median(scenario):
    return statistics.median(r["result"]["rps"] for r in runs if r["scenario"] == scenario)

def paired(a, b):
    """Median over the paired rounds of rps(a) / rps(b), each run taken relative to the
    baseline runs around it (step 4b), and each round's ratio."""
    relative = {(r["scenario"], r["round"]): r["result"]["rps"] / r["reference"] for r in runs
                if r["scenario"].startswith("paired-") and r["scenario"] != "paired-baseline"
                and r["reference"]}
    relative.update({("paired-baseline", r["round"]): 1.0 for r in runs
                     if r["scenario"] == "paired-baseline"})
    ratios = [relative[(a, n)] / relative[(b, n)] for (s, n) in sorted(relative, key=lambda k: k[1])
              if s == a and (b, n) in relative and relative[(b, n)]]
    return statistics.median(ratios), ratios

def paired_detail(a, b, unit="%"):
    mid, ratios = paired(a, b)
    each = ", ".join(f"{100 * r:.0f}" if unit == "%" else f"{r:.2f}" for r in ratios)
    return (f"paired median {100 * mid:.0f} % (rounds: {each})" if unit == "%"
            else f"paired median {mid:.2f}x (rounds: {each})")

def single(scenario, conns=64):
    """The one long run of a scenario, as a detail, when it ran."""
    run = next((r for r in runs if r["scenario"] == scenario and r["connections"] == conns), None)
    if run is None:
        return ""
    pct = run["pct_of_baseline"]
    return (f"; single {DURATION_TEXT} run: {run['result']['rps']:,.0f} req/s"
            + ("" if pct is None else f", {pct:.0f} % of baseline"))

DURATION_TEXT = E["DURATION"]
PAIRED = "paired-predict" in ran

def predict_target():
    errors = sum(run["result"]["errors"] for run in runs if run["path"] == "/predict"
                 and run["server"].startswith("ml-api"))
    if PAIRED:
        mid, _ = paired("paired-predict", "paired-baseline")
        return (mid >= 0.5 and errors == 0,
                f"{paired_detail('paired-predict', 'paired-baseline')}{single('predict')}; "
                f"{errors} errors on /predict")
    predict = [run for run in runs if run["scenario"] == "predict" and run["connections"] >= 16]
    worst = min(predict, key=lambda run: run["pct_of_baseline"])
    predict64 = at("predict", 64)
    return (predict64["pct_of_baseline"] >= 50 and errors == 0,
            f"{predict64['pct_of_baseline']:.0f} % at 64 conns (lowest of 16/64/256: "
            f"{worst['pct_of_baseline']:.0f} % at {worst['connections']}); {errors} errors on /predict")

def log_target():
    log_on, log_access_off, log_off = (median("log-ab-default"), median("log-ab-access-off"),
                                       median("log-ab-off"))
    by_round = {}
    for r in runs:
        if r["scenario"] in ("log-ab-default", "log-ab-off"):
            by_round.setdefault(r["round"], {})[r["scenario"]] = r["result"]["rps"]
    costs = [100 * (v["log-ab-off"] - v["log-ab-default"]) / v["log-ab-off"]
             for _, v in sorted(by_round.items(), key=lambda item: item[0] or 0)
             if "log-ab-off" in v and "log-ab-default" in v and v["log-ab-off"]]
    log_cost = statistics.median(costs)
    return (log_cost <= 10.0,
            f"paired median {log_cost:+.1f} % (rounds: {', '.join(f'{c:+.0f}' for c in costs)}); "
            f"medians {log_on:,.0f} req/s default, {log_access_off:,.0f} with --access-log false, "
            f"{log_off:,.0f} with RUST_LOG=warn; "
            f"{int(E['ACCESS_LINES']):,} access-log lines written")

def v2json_target():
    if PAIRED:
        mid, _ = paired("paired-v2-infer", "paired-baseline")
        return (mid >= 0.4, f"{paired_detail('paired-v2-infer', 'paired-baseline')}{single('v2-infer')}")
    v2json = at("v2-infer", 64)
    return (v2json["pct_of_baseline"] >= 40,
            f"{v2json['result']['rps']:,.0f} req/s, {v2json['pct_of_baseline']:.0f} % of baseline")

def v2bin_target(rows=""):
    """V2 binary against V2 JSON: in the paired rounds, of one record or (rows="-rows") of
    TENSOR_ROWS; else the single runs (one record)."""
    if PAIRED:
        binary, json_ = f"paired-v2-infer-binary{rows}", f"paired-v2-infer{rows}"
        mid, _ = paired(binary, json_)
        return (mid > 1.0, f"binary / JSON: {paired_detail(binary, json_, 'x')}")
    v2bin, v2json = at("v2-infer-binary", 64)["result"], at("v2-infer", 64)["result"]
    return (v2bin["rps"] > v2json["rps"],
            f"{v2bin['rps']:,.0f} req/s binary vs {v2json['rps']:,.0f} JSON")

def grpc_target(scenario, conns, rows=""):
    """gRPC raw (SCENARIO, driven over CONNS connections) against V2 JSON at 64 connections,
    in the paired rounds of one record or (rows="-rows") of TENSOR_ROWS."""
    if PAIRED:
        grpc, json_ = f"paired-{scenario}{rows}", f"paired-v2-infer{rows}"
        mid, _ = paired(grpc, json_)
        return (mid > 1.0, f"gRPC raw (h2load) / V2 JSON (wrk): {paired_detail(grpc, json_, 'x')}")
    grpc, v2json = at(scenario, conns)["result"], at("v2-infer", 64)["result"]
    return (grpc["rps"] > v2json["rps"],
            f"{grpc['rps']:,.0f} req/s gRPC raw (h2load) vs {v2json['rps']:,.0f} V2 JSON (wrk) "
            f"(p99 {grpc['p99']:.2f} ms vs {v2json['p99']:.2f} ms)")

def rate_target():
    """Every constant-rate round of ml-api within 5 ms at p99, with what the server itself
    measured and what the bare baseline got at the same rate in the same round."""
    rounds = [r for r in runs if r["scenario"] == "constant-rate"]
    floor = {r["round"]: r for r in runs if r["scenario"] == "constant-rate-baseline"}
    warmup = {r["round"]: r["result"] for r in runs if r["scenario"] == "constant-rate-warmup"}
    def busy(run):  # ", busy N %, M µs CPU/request": its server's CPU at this rate, if taken
        cpu = run.get("cpu")
        if not cpu:
            return ""
        per_request = 1e6 * cpu["server_cpu_s"] / max(1, run["result"]["requests"])
        return f", busy {100 * cpu['server_busy']:.0f} %, {per_request:.0f} µs CPU/request"
    def one(run):
        rate, server = run["result"], run.get("server_latency_ms")
        text = f"p99 {rate['p99']:.2f} ms (p50 {rate['p50']:.2f}, {rate['rps']:,.0f} req/s"
        text += busy(run)
        if server:
            text += f"; server-side p99 {server['p99']:.2f}, p99.9 {server['p999']:.2f}"
        if run["round"] in floor:
            base = floor[run["round"]]
            text += f"; baseline at the same rate p99 {base['result']['p99']:.2f}{busy(base)}"
        if run.get("cpu"):
            text += f"; host steal {100 * run['cpu']['host_steal']:.1f} %"
        if run["round"] in warmup:
            text += f"; its warm-up's p99 {warmup[run['round']]['p99']:.2f}"
        return text + ")"
    errors = sum(r["result"]["errors"] for r in rounds)
    return (all(r["result"]["p99"] <= 5.0 for r in rounds) and errors == 0,
            f"{len(rounds)} runs of {E['RATE_DURATION']}"
            + (f" (each after {E['RATE_WARMUP']} at the same rate)" if warmup else "") + ": "
            + "; ".join(f"{i}. {one(r)}" for i, r in enumerate(rounds, 1))
            + f"; {errors} errors")

def memory_target():
    return (served >= 1_000_000 and env["rss_kib"] <= 64 * 1024,
            f"VmRSS {env['rss_kib'] / 1024:.1f} MiB, VmHWM {env['hwm_kib'] / 1024:.1f} MiB "
            f"after {served:,} requests")

def drift_target():
    drift_on, drift_off = median("drift-ab-on"), median("drift-ab-off")
    drift_cost = 100 * (drift_off - drift_on) / drift_off
    return (drift_cost < 5.0,
            f"median {drift_on:,.0f} req/s with drift, {drift_off:,.0f} without: {drift_cost:+.1f} %")

def ready_target():
    ready = env["ready_ms"]
    return (ready["default"] < 1000,
            f"{ready['default']} ms (batching off: {ready['batching_off']} ms)")

CHECKS = [
    ("/predict >= 50 % of baseline req/s (default flags, 64 conns), 0 errors",
     {"paired-predict"} if PAIRED else {"baseline", "predict"}, predict_target),
    ("default logging within 10 % of logging off (/predict, 64 conns, default vs RUST_LOG=warn, median of the rounds' ratios)",
     {"log-ab-default"}, log_target),
    ("V2 infer (JSON tensors) >= 40 % of baseline req/s (64 conns)",
     {"paired-v2-infer"} if PAIRED else {"baseline", "v2-infer"}, v2json_target),
    (f"V2 infer with binary tensors faster than with JSON tensors ({TENSOR_ROWS} rows per "
     "tensor, binary inputs and outputs as tritonclient sends them by default, 64 conns)",
     {"paired-v2-infer-binary-rows"}, lambda: v2bin_target("-rows")),
    (f"gRPC ModelInfer with raw tensors faster than V2 infer with JSON tensors ({TENSOR_ROWS} "
     "rows per tensor; 64 in flight: one gRPC channel of 64 streams vs 64 HTTP/1.1 connections)",
     {"paired-grpc-infer-raw-channel-rows"}, lambda: grpc_target("grpc-infer-raw-channel", 1, "-rows")),
    (f"p99 <= 5 ms at half the max rate in every run ({env['half_rps']} of {env['max_rps']} req/s, constant rate)",
     {"constant-rate"}, rate_target),
    ("resident memory <= 64 MiB after >= 1,000,000 requests", {"memory"}, memory_target),
    ("drift histograms cost < 5 % of /predict req/s (64 conns, A/B medians of 3, drift on vs --drift false)",
     {"drift-ab-on"}, drift_target),
    ("exec -> /readyz 200 under 1 s (default model)", set(), ready_target),
]
targets = [(name, *check()) for name, needs, check in CHECKS
           if needs <= ran and (needs or env["ready_ms"]["default"] is not None)]
# Reported beside the targets, not targets themselves.
INFO = [
    ("V2 binary vs V2 JSON, one record per request (24 tensors of one value: the binary body "
     "is larger than the JSON one, nothing for the encoding to save)",
     {"paired-v2-infer-binary"} if PAIRED else {"v2-infer", "v2-infer-binary"}, v2bin_target),
    ("gRPC raw (one channel x 64 streams) vs V2 JSON (64 conns), one record per request",
     {"paired-grpc-infer-raw-channel"} if PAIRED else {"v2-infer", "grpc-infer-raw-channel"},
     lambda: grpc_target("grpc-infer-raw-channel", 1)),
    ("gRPC raw over 64 connections of one stream each vs V2 JSON (64 conns), one record per request",
     {"paired-grpc-infer-raw"} if PAIRED else {"v2-infer", "grpc-infer-raw"},
     lambda: grpc_target("grpc-infer-raw", 64)),
]
infos = [(name, check()[1]) for name, needs, check in INFO if needs <= ran]
print()
for name, ok, detail in targets:
    print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
for name, detail in infos:
    print(f"INFO  {name}: {detail}")
failed = any(run["result"]["errors"] or not run["result"]["requests"] for run in runs)
load_before, load_after = E["LOAD_BEFORE"], E["LOAD_AFTER"]
print(f"\nload average before/after: {load_before} / {load_after} (on {E['CPUS']} CPUs)")

machine = {"cpus": int(E["CPUS"]), "cpu_model": E["MACHINE_CPU"], "arch": platform.machine(),
           "mem_gib": round(int(E["MACHINE_MEM_KB"]) / 1024 / 1024, 1), "virt": E["VIRT"],
           "kernel": platform.release(), "load_before": load_before, "load_after": load_after}
result = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": machine,
    "setup": {"server_cpu": "1" if int(E["PINNED"]) else "any",
              "client_cpu": "0" if int(E["PINNED"]) else "any",
              "wrk_threads": 1, "duration": E["DURATION"], "warmup": E["WARMUP"],
              "rate_duration": E["RATE_DURATION"], "rate_runs": int(E["RATE_RUNS"]),
              "rate_warmup": E["RATE_WARMUP"],
              "memory_requests": int(E["MEMORY_REQUESTS"]),
              "rate_limit": False, "build": "release", "tools": E["TOOLS"]},
    "server": {"startup_to_ready_ms": env["ready_ms"], "rss_kib": env["rss_kib"],
               "peak_rss_kib": env["hwm_kib"], "requests_served": served},
    "targets": [{"target": n, "pass": ok, "detail": d} for n, ok, d in targets],
    "info": [{"what": n, "detail": d} for n, d in infos],
    "runs": runs,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

# The same as Markdown, for docs/performance.md.
md = [f"Generated by `make bench` on {result['when']}: {machine['cpus']} vCPUs "
      f"({machine['cpu_model']}{', ' + machine['virt'] if machine['virt'] else ''}), "
      f"{machine['mem_gib']} GiB RAM, Linux {machine['kernel']}; {result['setup']['tools']}. "
      f"Server on CPU {result['setup']['server_cpu']}, load generator on CPU "
      f"{result['setup']['client_cpu']}; wrk runs {result['setup']['duration']} each "
      f"(after a {result['setup']['warmup']} warm-up per server). "
      f"**Load average before/after: {load_before} / {load_after}.**", "",
      "| " + " | ".join(header) + " |",
      "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
md += ["| " + " | ".join(row) + " |" for row in rows]
md += ["", "| target | result | measured |", "| --- | --- | --- |"]
md += [f"| {n} | {'PASS' if ok else '**MISS**'} | {d} |" for n, ok, d in targets]
md += [f"| {n} | info | {d} |" for n, d in infos]
with open(table_md, "w") as f:
    f.write("\n".join(md) + "\n")
sys.exit(1 if failed else 0)
PY
if [[ "$STATUS" -ne 0 ]]; then
  log "FAILED: a load run saw non-2xx responses or request errors (see $OUT/wrk-*.txt, $OUT/oha-*.json, $OUT/h2load-*)"
fi

# The generated block of docs/performance.md (between the bench markers).
if [[ "$WRITE_DOC" == 1 ]]; then
  python3 - docs/performance.md "$OUT/table.md" <<'PY'
import sys
doc, table = sys.argv[1:]
text = open(doc).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if begin not in text or end not in text:
    sys.exit(f"{doc} has no {begin} ... {end} block")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + begin + "\n" + open(table).read() + end + tail)
PY
  log "wrote the table into docs/performance.md"
fi

# --- criterion -----------------------------------------------------------------------------
# Criterion prints a confidence interval; the median of each benchmark is read from its
# estimates.json and added to results.json (only benchmarks written by this run). The batcher
# bench runs pinned to the server's CPU, the shape the server has under taskset.
if [[ "${BENCH_SKIP_CRITERION:-0}" != 1 ]] && want criterion; then
  touch "$OUT/.criterion-start"
  "$CARGO" bench --locked --no-run --bench predict_path --bench batcher
  log "cargo bench --bench predict_path"
  "$CARGO" bench --locked --bench predict_path 2>&1 | tee "$OUT/criterion.txt"
  log "cargo bench --bench batcher (pinned like the server)"
  "${SERVER_PIN[@]}" "$CARGO" bench --locked --bench batcher 2>&1 | tee -a "$OUT/criterion.txt"
  python3 - "$TARGET_DIR/criterion" "$OUT/.criterion-start" "$OUT/results.json" <<'PY'
import json, os, sys
root, marker, out = sys.argv[1:]
since = os.path.getmtime(marker)
rows = []
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    est_path = os.path.join(dirpath, "estimates.json")
    if os.path.getmtime(est_path) < since:
        continue
    meta = json.load(open(os.path.join(dirpath, "benchmark.json")))
    est = json.load(open(est_path))
    median = est["median"]
    elements = (meta.get("throughput") or {}).get("Elements", 1)
    rows.append({
        "id": meta["full_id"],
        "median_ns": round(median["point_estimate"], 1),
        "median_ci_ns": [round(median["confidence_interval"]["lower_bound"], 1),
                         round(median["confidence_interval"]["upper_bound"], 1)],
        "records": elements,
        "records_per_s": round(elements * 1e9 / median["point_estimate"]),
    })
ORDER = ["json_decode", "validate", "contract_check", "drift_observe", "infer", "infer_raw", "encode", "end_to_end", "batcher"]
def key(r):
    parts = r["id"].split("/")
    group = ORDER.index(parts[0]) if parts[0] in ORDER else len(ORDER)
    return (group, [int(p) if p.isdigit() else 0 for p in parts[1:]], r["id"])
rows.sort(key=key)
result = json.load(open(out))
result["criterion"] = rows
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
def human(ns):
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"
print(f"\n{'criterion benchmark':<24} {'median':>11} {'records/s':>11}")
for r in rows:
    print(f"{r['id']:<24} {human(r['median_ns']):>11} {r['records_per_s']:>11}")
PY
fi

exit "$STATUS"
