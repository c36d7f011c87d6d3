#!/usr/bin/env bash
# Stops the local cluster of scripts/cluster-up.sh, by the PIDs it recorded (a PID whose start
# time no longer matches is left alone): nginx first (SIGQUIT: finishes what it has in flight),
# then the replicas (SIGTERM: they drain for ML_API_SHUTDOWN_DELAY, then finish in-flight
# requests), the worker (finishes its current job), Prometheus, redis_exporter and Redis last.
# Logs and results/ stay in $CLUSTER_DIR (default .run/cluster); the env file is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh
cluster_init
rm -f "$CLUSTER_ENV"
if ! compgen -G "$PID_DIR/*.pid" >/dev/null; then
  echo "cluster-down: nothing running in $CLUSTER_DIR"
  exit 0
fi
stopped=()
stop() { # NAME SIGNAL TIMEOUT
  [[ -f "$PID_DIR/$1.pid" ]] || return 0
  stop_pid "$@"
  stopped+=("$1")
}
stop nginx QUIT 15
# Replicas in parallel: each drains for its shutdown delay.
replicas=()
for f in "$PID_DIR"/replica-*.pid; do [[ -e "$f" ]] && replicas+=("$(basename "$f" .pid)"); done
for r in "${replicas[@]}"; do
  if pidfile_alive "$r"; then kill -TERM "$(pidfile_pid "$r")" 2>/dev/null || true; fi
done
for r in "${replicas[@]}"; do stop "$r" TERM 60; done
stop worker TERM 120
stop prometheus TERM 30
stop redis-exporter TERM 10
stop redis TERM 30
for f in "$PID_DIR"/*.pid; do [[ -e "$f" ]] && stop "$(basename "$f" .pid)" TERM 30; done
cluster_remove_cgroups
echo "cluster-down: stopped ${stopped[*]} (logs in ${CLUSTER_DIR#"$PWD"/}/logs)"
