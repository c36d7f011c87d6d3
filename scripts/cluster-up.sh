#!/usr/bin/env bash
# A local replica of the Helm deployment, as real processes on 127.0.0.1 (free ports):
#
#   nginx (deploy/nginx/nginx.conf: body sizes, timeouts, proxy_next_upstream, least_conn; gRPC
#   on its own h2c listener, GRPC_ADDR in the env file, with grpc_pass to each replica's gRPC port)
#     -> REPLICAS x `ml-api serve` (Redis registry, chart's rate limits, trusted proxy = nginx)
#        each serving a model directory delivered as the chart's model.source=fetch does it:
#        a tarball on a loopback HTTP server, fetched (sha256-checked) by the init container's
#        script, helm/ml-api/files/fetch-model.sh, into a fresh directory per replica
#   `ml-api worker` (trains what the replicas queue in Redis)
#   redis-server (AOF, as the chart's StatefulSet) + redis_exporter
#   Prometheus (deploy/prometheus/prometheus.yml's jobs and alerts.yml, targets rewritten)
#
# Every process is started detached and recorded by PID (+ start time) in $CLUSTER_DIR/pids;
# logs go to $CLUSTER_DIR/logs; $CLUSTER_DIR/env (BASE_URL, PROM_URL, ADMIN_API_KEY, ports)
# is written last, for scripts/loadtest.sh, rolling-restart-test.sh and you:
#   source .run/cluster/env && curl -H 'Content-Type: application/json' \
#     -d @tests/fixtures/seed_request.json "$BASE_URL/predict"
# scripts/cluster-down.sh stops it. Start-up times (spawn -> /readyz 200 -> first prediction)
# are appended to $CLUSTER_DIR/startup.tsv.
#
# Settings (environment):
#   CLUSTER_DIR=.run/cluster   REPLICAS=2
#   CLUSTER_PROFILE=release    binary target/$CLUSTER_PROFILE/ml-api (built if missing);
#                              ML_API_BIN overrides. `make test` uses debug.
#   SHUTDOWN_DELAY=3s          ML_API_SHUTDOWN_DELAY (docker-compose's; the chart's is 10s)
#   SHUTDOWN_GRACE=20s         ML_API_SHUTDOWN_GRACE
#   RATE_LIMIT=true RATE_LIMIT_RPS=100 RATE_LIMIT_BURST=200   the chart's defaults; the k6
#                              scripts spread traffic over many simulated clients (see
#                              loadtest/README.md), so the limiter stays on and realistic.
#   SCRAPE_INTERVAL=5s         Prometheus scrape/evaluation interval (the repo's is 15s)
#   REPLICA_CPUS=              taskset CPU list for the replicas (e.g. 1), for measurements
#   REPLICA_CPU_LIMIT=         a CFS CPU quota per replica (e.g. 0.5), as a Kubernetes CPU
#                              limit; needs root (a cgroup per replica, removed by cluster-down)
#   PROMETHEUS=1               0 skips Prometheus and redis_exporter
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh
cluster_init
say() { echo "cluster-up: $*"; }

REPLICAS="${REPLICAS:-2}"
CLUSTER_PROFILE="${CLUSTER_PROFILE:-release}"
SHUTDOWN_DELAY="${SHUTDOWN_DELAY:-3s}"
SHUTDOWN_GRACE="${SHUTDOWN_GRACE:-20s}"
RATE_LIMIT="${RATE_LIMIT:-true}"
RATE_LIMIT_RPS="${RATE_LIMIT_RPS:-100}"
RATE_LIMIT_BURST="${RATE_LIMIT_BURST:-200}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-5s}"
REPLICA_CPUS="${REPLICA_CPUS:-}"
REPLICA_CPU_LIMIT="${REPLICA_CPU_LIMIT:-}"
PROMETHEUS="${PROMETHEUS:-1}"
[[ "$REPLICAS" =~ ^[1-9][0-9]?$ ]] || lib_fail "REPLICAS=$REPLICAS: expected 1-99"

if cluster_is_up; then
  lib_fail "a cluster is already up in $CLUSTER_DIR (scripts/cluster-down.sh stops it)"
fi
if compgen -G "$PID_DIR/*.pid" >/dev/null; then
  say "stopping what is left of an earlier cluster in $CLUSTER_DIR"
  scripts/cluster-down.sh
fi

# Tools and binary ----------------------------------------------------------------------------
ensure_stack_tools
ORT_VERSION="${ORT_VERSION:-1.31.1}"
scripts/fetch-onnxruntime.sh .ort/lib
ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.$ORT_VERSION}"
[[ "$ORT_DYLIB_PATH" == /* ]] || ORT_DYLIB_PATH="$PWD/$ORT_DYLIB_PATH"
export ORT_DYLIB_PATH
if [[ -z "${ML_API_BIN:-}" ]]; then
  ML_API_BIN="${CARGO_TARGET_DIR:-target}/$CLUSTER_PROFILE/ml-api"
  [[ "$ML_API_BIN" == /* ]] || ML_API_BIN="$PWD/$ML_API_BIN"
  if [[ ! -x "$ML_API_BIN" ]]; then
    say "building the $CLUSTER_PROFILE binary"
    if [[ "$CLUSTER_PROFILE" == release ]]; then cargo build --release --locked; else cargo build --locked; fi
  fi
fi
[[ "$ML_API_BIN" == /* ]] || ML_API_BIN="$PWD/$ML_API_BIN"
[[ -x "$ML_API_BIN" ]] || lib_fail "no ml-api binary at $ML_API_BIN"

# Fresh state (results/ and startup.tsv are kept) ----------------------------------------------
mkdir -p "$CLUSTER_DIR"
rm -rf "$PID_DIR" "$LOG_DIR" "$CLUSTER_DIR/nginx" "$CLUSTER_DIR/redis" "$CLUSTER_DIR/prometheus" "$CLUSTER_DIR/models" "$CLUSTER_ENV"
mkdir -p "$PID_DIR" "$LOG_DIR" "$CLUSTER_DIR/results"
started=$SECONDS
ok=0
on_exit() { ((ok)) || { say "start-up failed: stopping what was started (logs in $LOG_DIR)" >&2; scripts/cluster-down.sh >&2 || true; }; }
trap on_exit EXIT

# gRPC: each replica's own port, nginx's h2c listener in front (grpc_pass).
free_ports REDIS_PORT NGINX_PORT WORKER_PORT EXPORTER_PORT PROM_PORT GRPC_PORT
REPLICA_PORTS="" REPLICA_GRPC_PORTS=""
for _ in $(seq 1 "$REPLICAS"); do
  free_ports http_port grpc_port
  REPLICA_PORTS+="$http_port " REPLICA_GRPC_PORTS+="$grpc_port "
done
REPLICA_PORTS="${REPLICA_PORTS% }" REPLICA_GRPC_PORTS="${REPLICA_GRPC_PORTS% }"
ADMIN_API_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"

start_redis redis "$REDIS_PORT" "$CLUSTER_DIR/redis" "$LOG_DIR/redis.log"
if ((PROMETHEUS)); then
  spawn redis-exporter "$LOG_DIR/redis-exporter.log" prometheus-redis-exporter \
    -redis.addr "redis://127.0.0.1:$REDIS_PORT" -web.listen-address "127.0.0.1:$EXPORTER_PORT"
fi

# The models, as the chart's fetch init container gets them (see scripts/lib/cluster.sh).
start_model_server
# Replica 1 first: it stores its model directory's models in the registry; then the others.
start_replica 1
wait_replica_ready 1
for i in $(seq 2 "$REPLICAS"); do start_replica "$i"; done
for i in $(seq 2 "$REPLICAS"); do wait_replica_ready "$i"; done

cluster_base_env
spawn worker "$LOG_DIR/worker.log" "${CLUSTER_PROC_ENV[@]}" ML_API_WORKER_NAME=cluster-worker \
  "ML_API_WORKER_METRICS_ADDR=127.0.0.1:$WORKER_PORT" "$ML_API_BIN" worker
wait_http "http://127.0.0.1:$WORKER_PORT/healthz" 30 || { tail -n 30 "$LOG_DIR/worker.log" >&2; lib_fail "the worker did not start"; }

# shellcheck disable=SC2086
GRPC_LISTEN_PORT="$GRPC_PORT" GRPC_UPSTREAM_PORTS="$REPLICA_GRPC_PORTS" \
  render_nginx "$CLUSTER_DIR/nginx" "$NGINX_PORT" $REPLICA_PORTS
nginx -t -q -p "$CLUSTER_DIR/nginx" -c "$CLUSTER_DIR/nginx/nginx.conf" -e stderr || lib_fail "nginx -t"
spawn nginx "$LOG_DIR/nginx.log" nginx -p "$CLUSTER_DIR/nginx" -c "$CLUSTER_DIR/nginx/nginx.conf" -e stderr -g 'daemon off;'
BASE_URL="http://127.0.0.1:$NGINX_PORT"
wait_http "$BASE_URL/readyz" 10 || { cat "$LOG_DIR/nginx.log" >&2; lib_fail "nginx did not start"; }

PROM_URL=""
if ((PROMETHEUS)); then
  mkdir -p "$CLUSTER_DIR/prometheus"
  replica_targets="$(for p in $REPLICA_PORTS; do printf '127.0.0.1:%s,' "$p"; done)"
  render_prometheus "$CLUSTER_DIR/prometheus/prometheus.yml" "$SCRAPE_INTERVAL" \
    "ml-api=$replica_targets" "ml-api-worker=127.0.0.1:$WORKER_PORT" \
    "ml-api-redis=127.0.0.1:$EXPORTER_PORT" "prometheus=127.0.0.1:$PROM_PORT"
  spawn prometheus "$LOG_DIR/prometheus.log" prometheus --config.file="$CLUSTER_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$CLUSTER_DIR/prometheus/tsdb" --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle --log.level=warn
  PROM_URL="http://127.0.0.1:$PROM_PORT"
  want=$((REPLICAS + 3))
  deadline=$((SECONDS + 60))
  until [[ "$(curl -fsS --get "$PROM_URL/api/v1/query" --data-urlencode 'query=count(up == 1)' 2>/dev/null \
              | jq -r '.data.result[0].value[1] // 0')" == "$want" ]]; do
    ((SECONDS < deadline)) || { tail -n 20 "$LOG_DIR/prometheus.log" >&2; lib_fail "Prometheus does not see $want targets up"; }
    sleep 0.5
  done
fi

REPLICA_URLS="$(for p in $REPLICA_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)"
umask 077
cat >"$CLUSTER_ENV.tmp" <<ENV
# Written by scripts/cluster-up.sh at $(date -u +%FT%TZ); removed by scripts/cluster-down.sh.
CLUSTER_DIR='$CLUSTER_DIR'
BASE_URL='$BASE_URL'
PROM_URL='$PROM_URL'
ADMIN_API_KEY='$ADMIN_API_KEY'
REPLICAS='$REPLICAS'
REPLICA_PORTS='$REPLICA_PORTS'
GRPC_ADDR='127.0.0.1:$GRPC_PORT'
REPLICA_GRPC_PORTS='$REPLICA_GRPC_PORTS'
REPLICA_URLS='${REPLICA_URLS% }'
WORKER_METRICS_URL='http://127.0.0.1:$WORKER_PORT'
REDIS_PORT='$REDIS_PORT'
NGINX_PORT='$NGINX_PORT'
ML_API_BIN='$ML_API_BIN'
MODEL_URL='$MODEL_URL'
MODEL_SHA256='$MODEL_SHA256'
ORT_DYLIB_PATH='$ORT_DYLIB_PATH'
CLUSTER_PROFILE='$CLUSTER_PROFILE'
SHUTDOWN_DELAY='$SHUTDOWN_DELAY'
SHUTDOWN_GRACE='$SHUTDOWN_GRACE'
RATE_LIMIT='$RATE_LIMIT'
RATE_LIMIT_RPS='$RATE_LIMIT_RPS'
RATE_LIMIT_BURST='$RATE_LIMIT_BURST'
REPLICA_CPUS='$REPLICA_CPUS'
REPLICA_CPU_LIMIT='$REPLICA_CPU_LIMIT'
ENV
mv "$CLUSTER_ENV.tmp" "$CLUSTER_ENV"
ok=1
say "up in $((SECONDS - started)) s: $REPLICAS x $(basename "$(dirname "$ML_API_BIN")") ml-api serve behind nginx $BASE_URL" \
  "(models fetched from $MODEL_URL, sha256 ${MODEL_SHA256:0:12}...)," \
  "worker, Redis :$REDIS_PORT${PROM_URL:+, Prometheus $PROM_URL}"
say "gRPC (Open Inference Protocol) through nginx: 127.0.0.1:$GRPC_PORT"
say "env: $CLUSTER_ENV   logs: $LOG_DIR   stop: scripts/cluster-down.sh"
