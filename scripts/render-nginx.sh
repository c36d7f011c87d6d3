#!/usr/bin/env bash
# The one renderer of the local ingress: deploy/nginx/nginx.conf for loopback, used by the
# local cluster (scripts/lib/cluster.sh render_nginx) and by the Rust tests (tests/api/nginx.rs).
#
#   scripts/render-nginx.sh DIR LISTEN_PORT UPSTREAM_PORT...
#
# Writes DIR/nginx.conf: `listen 8080` -> 127.0.0.1:LISTEN_PORT, the upstream's
# `server predictor-N:5001 ...` lines replaced by one line per port (same max_fails and
# fail_timeout), every /tmp/ path moved under DIR. With NGINX_ACCESS_LOG=off the access log is
# off (tests). With GRPC_LISTEN_PORT and GRPC_UPSTREAM_PORTS (space-separated) the gRPC block
# (`listen 8081 http2`, upstream `predictor-N:8001`) is rewritten the same way; without them it
# is left out. Fails if the result still names a predictor or /tmp/.
set -euo pipefail
(($# >= 3)) || { echo "usage: $0 DIR LISTEN_PORT UPSTREAM_PORT..." >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
source_conf="$root/deploy/nginx/nginx.conf"
dir="$1" listen="$2"
shift 2
mkdir -p "$dir"
first="$(grep -m1 -E '^\s*server\s+predictor-[0-9]+:5001' "$source_conf")" || {
  echo "render-nginx: deploy/nginx/nginx.conf has no 'server predictor-N:5001' upstream line" >&2
  exit 1
}
servers=""
for port in "$@"; do
  servers+="$(sed -E "s#predictor-[0-9]+:5001#127.0.0.1:$port#" <<<"$first")"$'\n'
done
grpc_servers=""
if [[ -n "${GRPC_UPSTREAM_PORTS:-}" ]]; then
  [[ -n "${GRPC_LISTEN_PORT:-}" ]] || { echo "render-nginx: GRPC_UPSTREAM_PORTS needs GRPC_LISTEN_PORT" >&2; exit 2; }
  grpc_first="$(grep -m1 -E '^\s*server\s+predictor-[0-9]+:8001' "$source_conf")"
  for port in $GRPC_UPSTREAM_PORTS; do
    grpc_servers+="$(sed -E "s#predictor-[0-9]+:8001#127.0.0.1:$port#" <<<"$grpc_first")"$'\n'
  done
fi
access_log='s#^##'
[[ "${NGINX_ACCESS_LOG:-on}" == off ]] && access_log='s#access_log /dev/stdout#access_log off; \##'
awk -v servers="$servers" -v grpc_servers="$grpc_servers" '
  /# grpc-begin/ { in_grpc = 1; if (grpc_servers == "") skip = 1 }
  /# grpc-end/ { in_grpc = 0; if (skip) { skip = 0; next } }
  skip { next }
  /^[[:space:]]*server[[:space:]]+predictor-[0-9]+:5001/ { if (!done) { printf "%s", servers; done = 1 } next }
  /^[[:space:]]*server[[:space:]]+predictor-[0-9]+:8001/ { if (!grpc_done) { printf "%s", grpc_servers; grpc_done = 1 } next }
  { print }' "$source_conf" \
  | sed -e "s#/tmp/#$dir/#g" -e "s#listen 8080;#listen 127.0.0.1:$listen;#" \
    -e "s#listen 8081 http2;#listen 127.0.0.1:${GRPC_LISTEN_PORT:-0} http2;#" -e "$access_log" >"$dir/nginx.conf"
grpc_count=0
[[ -n "$grpc_servers" ]] && grpc_count="$(wc -w <<<"$GRPC_UPSTREAM_PORTS")"
if ! grep -q "listen 127.0.0.1:$listen;" "$dir/nginx.conf" \
  || [[ "$(grep -cE '^\s*server\s+127\.0\.0\.1:[0-9]+' "$dir/nginx.conf")" != "$(($# + grpc_count))" ]] \
  || grep -v '^[[:space:]]*#' "$dir/nginx.conf" | sed "s#$dir/##g" | grep -qE 'predictor-|/tmp/'; then
  echo "render-nginx: could not rewrite deploy/nginx/nginx.conf for loopback" >&2
  exit 1
fi
