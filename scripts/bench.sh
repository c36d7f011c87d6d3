#!/usr/bin/env bash
# Load-tests a release build of ml-api on loopback with wrk, then runs the criterion bench.
# Called by `make bench` (after `make ort`); see docs/performance.md for what it measures.
#
# Steps: build (`cargo build --release --locked`); start `ml-api serve` on a free 127.0.0.1
# port with rate limiting off, pinned to CPU 1; time start -> first `/readyz` 200; drive
# `POST /predict` with wrk pinned to CPU 0 (warm-up; the seed request over 1, 16 and 64
# connections; a batch of 32 seed records over 16 connections); record the server's peak RSS;
# stop the server; print a table and write .run/bench/results.json; run
# `cargo bench --bench predict_path` unless BENCH_SKIP_CRITERION=1.
#
# Exits non-zero when any wrk run saw a non-2xx response or a socket error.
#
# Environment:
#   BENCH_WARMUP=5s  BENCH_DURATION=15s   wrk durations (warm-up, each measured run)
#   BENCH_SKIP_CRITERION=1                skip `cargo bench`
#   ORT_DYLIB_PATH                        ONNX Runtime library (default .ort/lib/...so.1.31.1)
#   CARGO_TARGET_DIR                      honoured when looking for the binary
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WARMUP="${BENCH_WARMUP:-5s}"
DURATION="${BENCH_DURATION:-15s}"
OUT=".run/bench"
LUA="loadtest/wrk/predict.lua"
SEED="tests/fixtures/seed_request.json"
BATCH_RECORDS=32
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.31.1}"
CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/ml-api"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ -f "$ORT_DYLIB_PATH" ]] || die "ONNX Runtime not found at $ORT_DYLIB_PATH: run \`make ort\`"
mkdir -p "$OUT"

# --- tools ---------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends wrk >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; } \
    || die "cannot install wrk (apt-get install wrk)"
fi
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required"

# Pin server and client to different CPUs when there are at least two.
SERVER_PIN=()
CLIENT_PIN=()
CPUS="$(nproc)"
if [[ "$CPUS" -ge 2 ]] && command -v taskset >/dev/null 2>&1; then
  SERVER_PIN=(taskset -c 1)
  CLIENT_PIN=(taskset -c 0)
else
  log "fewer than 2 CPUs (or no taskset): server and wrk are not pinned"
fi

# --- build ---------------------------------------------------------------------------------
log "building the release binary"
"$CARGO" build --release --locked
[[ -x "$BIN" ]] || die "no binary at $BIN"

# --- request bodies ------------------------------------------------------------------------
BATCH_BODY="$OUT/batch${BATCH_RECORDS}.json"
python3 - "$SEED" "$BATCH_BODY" "$BATCH_RECORDS" <<'PY'
import json, sys
seed, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
record = json.load(open(seed))
with open(out, "w") as f:
    json.dump([record] * n, f, separators=(",", ":"))
PY

# --- server --------------------------------------------------------------------------------
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
SERVER_LOG="$OUT/server.log"
SERVER_PID=""

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average before: $LOAD_BEFORE (on $CPUS CPUs)"

STARTED_NS="$(date +%s%N)"
RUST_LOG=warn "${SERVER_PIN[@]}" "$BIN" serve \
  --addr "127.0.0.1:$PORT" --model-dir models --default-model santander \
  --rate-limit false --log-format json >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

READY_MS=""
DEADLINE=$((STARTED_NS + 60 * 1000000000))
while :; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -n 20 "$SERVER_LOG" >&2 || true
    die "the server exited before it was ready (log: $SERVER_LOG)"
  fi
  if curl -fsS -o /dev/null --max-time 1 "$BASE/readyz" 2>/dev/null; then
    READY_MS=$((($(date +%s%N) - STARTED_NS) / 1000000))
    break
  fi
  [[ "$(date +%s%N)" -lt "$DEADLINE" ]] || die "/readyz not 200 after 60 s (log: $SERVER_LOG)"
  sleep 0.02
done
log "ready after ${READY_MS} ms on $BASE (pid $SERVER_PID)"

# Sanity: the seed answers 200 with predictions.
curl -fsS --max-time 5 -H 'Content-Type: application/json' --data-binary "@$SEED" \
  "$BASE/predict" | grep -q '"predictions"' || die "POST /predict with the seed did not answer 200"

# --- load ----------------------------------------------------------------------------------
RESULTS_JSONL="$OUT/runs.jsonl"
: >"$RESULTS_JSONL"

# run_wrk SCENARIO CONNECTIONS DURATION BODY RECORDS [record]
run_wrk() {
  local scenario="$1" conns="$2" duration="$3" body="$4" records="$5" keep="${6:-record}"
  local text="$OUT/wrk-$scenario-c$conns.txt"
  log "wrk: $scenario, $conns connections, $duration"
  WRK_BODY_FILE="$body" "${CLIENT_PIN[@]}" wrk -t1 -c"$conns" -d"$duration" --timeout 5s \
    -s "$LUA" "$BASE/predict" >"$text" 2>&1 || { cat "$text" >&2; die "wrk failed"; }
  local line
  line="$(grep '^WRK_RESULT ' "$text" | tail -n 1 | cut -d' ' -f2-)" \
    || { cat "$text" >&2; die "no WRK_RESULT line from wrk (see $text)"; }
  if [[ "$keep" == record ]]; then
    printf '{"scenario":"%s","connections":%d,"records_per_request":%d,"wrk":%s}\n' \
      "$scenario" "$conns" "$records" "$line" >>"$RESULTS_JSONL"
  fi
}

run_wrk warmup 16 "$WARMUP" "$SEED" 1 discard
run_wrk single 1 "$DURATION" "$SEED" 1
run_wrk single 16 "$DURATION" "$SEED" 1
run_wrk single 64 "$DURATION" "$SEED" 1
run_wrk batch$BATCH_RECORDS 16 "$DURATION" "$BATCH_BODY" "$BATCH_RECORDS"

PEAK_RSS_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
stop_server

# --- report --------------------------------------------------------------------------------
STATUS=0
python3 - "$RESULTS_JSONL" "$OUT/results.json" "$READY_MS" "$PEAK_RSS_KB" "$CPUS" \
  "$LOAD_BEFORE" "$LOAD_AFTER" "${#SERVER_PIN[@]}" "$DURATION" <<'PY' || STATUS=$?
import json, platform, sys, time
runs_path, out, ready_ms, rss_kb, cpus, load_before, load_after, pinned, duration = sys.argv[1:]
runs = [json.loads(line) for line in open(runs_path) if line.strip()]
failed = False
for run in runs:
    w = run["wrk"]
    run["records_per_s"] = round(w["rps"] * run["records_per_request"], 1)
    run["socket_errors_total"] = sum(w["socket_errors"].values())
    if w["non_2xx"] or run["socket_errors_total"] or not w["requests"]:
        failed = True
result = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": {"cpus": int(cpus), "arch": platform.machine(),
                "load_before": load_before, "load_after": load_after},
    "setup": {"server_cpu": "1" if int(pinned) else "any", "client_cpu": "0" if int(pinned) else "any",
              "wrk_threads": 1, "duration": duration, "rate_limit": False, "build": "release"},
    "server": {"startup_to_ready_ms": int(ready_ms), "peak_rss_kib": int(rss_kb)},
    "runs": runs,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
head = f"{'scenario':<10} {'conns':>5} {'req/s':>9} {'records/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'non-2xx':>7} {'sock err':>8}"
print()
print(head)
print("-" * len(head))
for run in runs:
    w, l = run["wrk"], run["wrk"]["latency_ms"]
    print(f"{run['scenario']:<10} {run['connections']:>5} {w['rps']:>9.0f} {run['records_per_s']:>10.0f} "
          f"{l['p50']:>8.2f} {l['p90']:>8.2f} {l['p99']:>8.2f} {w['non_2xx']:>7} {run['socket_errors_total']:>8}")
print(f"\nstartup to /readyz 200: {ready_ms} ms   peak RSS (VmHWM): {int(rss_kb)/1024:.1f} MiB")
print(f"load average before/after: {load_before} / {load_after}   results: {out}")
sys.exit(1 if failed else 0)
PY
if [[ "$STATUS" -ne 0 ]]; then
  log "FAILED: a wrk run saw non-2xx responses or socket errors (see $OUT/wrk-*.txt)"
fi

# --- criterion -----------------------------------------------------------------------------
# Criterion prints a confidence interval; the median of each benchmark is read from its
# estimates.json and added to results.json (only benchmarks written by this run).
if [[ "${BENCH_SKIP_CRITERION:-0}" != 1 ]]; then
  log "cargo bench --bench predict_path"
  touch "$OUT/.criterion-start"
  "$CARGO" bench --locked --bench predict_path 2>&1 | tee "$OUT/criterion.txt"
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
ORDER = ["json_decode", "validate", "infer", "infer_raw", "encode", "end_to_end"]
rows.sort(key=lambda r: (ORDER.index(r["id"].split("/")[0]) if r["id"].split("/")[0] in ORDER
                         else len(ORDER), r["id"]))
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
