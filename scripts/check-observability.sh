#!/usr/bin/env bash
# Checks deploy/: Prometheus config and alert rules, Grafana dashboards, docker-compose and
# nginx, statically and then against the real thing:
#   1. promtool check config (deploy/prometheus/prometheus.yml), check rules, test rules
#      (alerts.test.yml: every alert fires and stays quiet where it should).
#      The chart's PrometheusRule rendered for two releases (team-a: defaults, team-b:
#      releases-values.yaml) passes alerts-releases.test.yml: each alert names its release only.
#   2. Dashboards: valid JSON, unique uids and panel ids, no overlapping panels (collapsed rows
#      apart), every panel and query on the `${datasource}` variable, only defined template
#      variables, and every series selector of every query (deploy annotations included) filtered
#      by $namespace and the release ($job, or the pod/HPA names derived from it), by $pod where
#      the series have pods, by $model where they have models; the Grafana provisioning files
#      point where docker-compose mounts the dashboards.
#   3. Every PromQL expression of the dashboards (template variables substituted) parses
#      (promtool check rules on a generated file).
#   4. docker-compose.yml against the compose-spec JSON schema, plus cross-references: mounted
#      files exist, services named by nginx/Prometheus/depends_on exist, ml-api variables are
#      documented ones, nginx's limits match ml-api's defaults. nginx -t on nginx.conf.
#   5. Live, two releases: release A (namespace team-a: Redis + redis_exporter, the debug
#      `ml-api serve` and an `ml-api worker`, nginx (deploy/nginx/nginx.conf) in front) and
#      release B (namespace team-b: its own Redis, exporter, serve and worker), both named ml-api
#      so their jobs have the same names, scraped every second by one Prometheus with the target
#      labels a ServiceMonitor gives (namespace, pod, job) and both releases' rendered alert
#      rules. A second Prometheus scrapes release A alone: the reference. Traffic goes to A
#      through nginx in two rounds (predictions, 422s, 400, 404, trainings) and, three times as
#      much, to B. Then every dashboard query with $namespace=team-a must return data, and the
#      same series and values (within 25 %) as on the reference: nothing of B leaks in; with
#      $namespace=team-b, every series that names a namespace names team-b. Every alert rule
#      evaluates without error. Finally A's Redis is stopped: POST /models must answer 503, and
#      release A's MlApiRegistryUnavailable and RedisDown, quiet before, fire on the real series
#      while release B's stay quiet.
# Usage: scripts/check-observability.sh            (about 50 s once the tools are installed)
#        OBS_VERBOSE=1 scripts/check-observability.sh   also prints what each dashboard query returned
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
say() { echo "check-observability: $*"; }
fail() { echo "check-observability: FAILED, $*" >&2; exit 1; }

# Tools (idempotent): Debian's redis, redis_exporter, nginx, Prometheus, curl, jq and a venv
# with PyYAML and check-jsonschema (scripts/lib/cluster.sh, shared with the local cluster).
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh
ensure_stack_tools
VENV="$STACK_VENV"
PY="$STACK_PY"

WORK="$(mktemp -d)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}" ${SERVER_PID:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}" ${SERVER_PID:-}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK" ${RUN_DIR:+"$RUN_DIR"}
}
trap cleanup EXIT

# 1. promtool --------------------------------------------------------------------------------
promtool check config deploy/prometheus/prometheus.yml >/dev/null
promtool check rules deploy/prometheus/alerts.yml >/dev/null
promtool test rules deploy/prometheus/alerts.test.yml >/dev/null || promtool test rules deploy/prometheus/alerts.test.yml
tests="$(grep -c '^  - name:' deploy/prometheus/alerts.test.yml)"
say "promtool: prometheus.yml and alerts.yml valid; $tests alert unit tests pass"
# The chart's rules for two releases named ml-api, in team-a (defaults) and team-b (tuned).
scripts/install-k8s-tools.sh
render_release_rules() { # NAMESPACE OUT [helm args...]: the PrometheusRule's groups as a rule file
  local ns="$1" out="$2"; shift 2
  .tools/k8s/bin/helm template ml-api helm/ml-api --namespace "$ns" --show-only templates/prometheusrule.yaml \
    --set metrics.prometheusRule.enabled=true --set secrets.existingSecret=ml-api "$@" \
    | "$PY" -c 'import sys, yaml
d = yaml.safe_load(sys.stdin)
yaml.safe_dump({"groups": [dict(g, name=g["name"] + "-" + sys.argv[2]) for g in d["spec"]["groups"]]}, open(sys.argv[1], "w"))' "$out" "$ns"
}
render_release_rules team-a "$WORK/team-a.rules.yml"
render_release_rules team-b "$WORK/team-b.rules.yml" -f deploy/prometheus/releases-values.yaml
cp deploy/prometheus/alerts-releases.test.yml "$WORK/"
promtool test rules "$WORK/alerts-releases.test.yml" >/dev/null || promtool test rules "$WORK/alerts-releases.test.yml"
say "promtool: the chart's rules for two releases (team-a, team-b) pass $(grep -c '^  - name:' deploy/prometheus/alerts-releases.test.yml) tests"

# 2-3. Dashboards -----------------------------------------------------------------------------
"$PY" - "$WORK" <<'PY'
import glob, json, os, re, sys
import yaml

work = sys.argv[1]
errors, queries, uids = [], [], {}
DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}

compose = yaml.safe_load(open("deploy/docker-compose.yml"))
mounts = {}
for v in compose["services"]["grafana"].get("volumes", []):
    src, dest = v.split(":")[:2]
    mounts[os.path.normpath(os.path.join("deploy", src))] = dest
dash_dir = "deploy/grafana/dashboards"
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/ml-api.yml"))
if prov["providers"][0]["options"]["path"] != mounts.get(dash_dir):
    errors.append(f"dashboard provider path {prov['providers'][0]['options']['path']} is not where "
                  f"docker-compose mounts {dash_dir} ({mounts.get(dash_dir)})")
if mounts.get("deploy/grafana/provisioning") != "/etc/grafana/provisioning":
    errors.append("docker-compose does not mount deploy/grafana/provisioning at /etc/grafana/provisioning")
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
if not any(d["type"] == "prometheus" and d.get("isDefault") for d in ds):
    errors.append("no default Prometheus data source is provisioned")

files = sorted(glob.glob(f"{dash_dir}/*.json"))
if not files:
    errors.append(f"no dashboards in {dash_dir}")
for path in files:
    name = os.path.basename(path)
    try:
        d = json.load(open(path))
    except ValueError as e:
        errors.append(f"{name}: invalid JSON: {e}")
        continue
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in d:
            errors.append(f"{name}: no `{key}`")
    if d.get("uid") in uids:
        errors.append(f"{name}: uid {d['uid']} also in {uids[d['uid']]}")
    uids[d.get("uid")] = name
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    for needed in ("namespace", "job", "pod", "model"):
        v = variables.get(needed)
        if not v or v.get("type") != "query" or not v.get("includeAll") or v.get("allValue") != ".*":
            errors.append(f"{name}: no ${needed} query variable with All = .* (series without the label still match)")
    dsvar = variables.get("datasource")
    if not dsvar or dsvar.get("type") != "datasource" or dsvar.get("query") != "prometheus":
        errors.append(f"{name}: no `datasource` variable of type datasource (prometheus)")
    for v in variables.values():
        if v.get("type") == "query" and v.get("datasource") != DS:
            errors.append(f"{name}: variable {v['name']} does not use ${{datasource}}")
    flat, layouts = [], [[]]  # layouts: the top level, then each collapsed row's own panels
    for p in d.get("panels", []):
        flat.append(p)
        layouts[0].append(p)
        if p.get("type") == "row" and p.get("panels"):
            if not p.get("collapsed"):
                errors.append(f"{name} row {p.get('title')}: holds panels but is not collapsed")
            flat.extend(p["panels"])
            layouts.append(p["panels"])
    rows = [p for p in d.get("panels", []) if p.get("type") == "row"]
    if sum(1 for r in rows if r.get("collapsed")) < len(rows) // 2:
        errors.append(f"{name}: secondary rows should be collapsed ({sum(1 for r in rows if r.get('collapsed'))} of {len(rows)})")
    for a in d.get("annotations", {}).get("list", []):
        if a.get("expr"):
            queries.append({"dashboard": name, "id": 0, "title": f"annotation {a.get('name')}",
                            "ref": "annotation", "expr": a["expr"]})
            if a.get("datasource") != DS:
                errors.append(f"{name}: annotation {a.get('name')} does not use ${{datasource}}")
    if not any("ml_api_build_info" in a.get("expr", "") for a in d.get("annotations", {}).get("list", [])):
        errors.append(f"{name}: no deploy annotation from ml_api_build_info")
    ids = [p.get("id") for p in flat]
    dupes = sorted({i for i in ids if ids.count(i) > 1 or not isinstance(i, int)}, key=str)
    if dupes:
        errors.append(f"{name}: panel ids not unique integers: {dupes}")
    for layout in layouts:
        boxes = []
        for p in layout:
            where = f"{name} panel {p.get('id')} ({p.get('title')})"
            g = p.get("gridPos", {})
            if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
                errors.append(f"{where}: bad gridPos {g}")
                continue
            for other, og in boxes:
                if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] and \
                   g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                    errors.append(f"{where}: overlaps panel {other}")
            boxes.append((p.get("id"), g))
    for p in flat:
        where = f"{name} panel {p.get('id')} ({p.get('title')})"
        if p.get("type") == "row":
            continue
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        exprs = " ".join(t.get("expr", "") for t in p.get("targets", []))
        ratio = re.search(r"\)\s*/\s*", exprs)  # a ratio of rates has no rate unit
        if p.get("type") == "timeseries" and "rate(" in exprs and unit == "short" and "* 60" not in exprs and not ratio:
            errors.append(f"{where}: a rate shown as `short`; use reqps or ops")
        if p.get("datasource") != DS:
            errors.append(f"{where}: datasource is {p.get('datasource')}, not {DS}")
        targets = p.get("targets", [])
        if not targets:
            errors.append(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            errors.append(f"{where}: duplicate refIds {refs}")
        for t in targets:
            if t.get("datasource", DS) != DS:
                errors.append(f"{where} {t.get('refId')}: datasource is {t.get('datasource')}")
            expr = t.get("expr", "").strip()
            if not expr:
                errors.append(f"{where} {t.get('refId')}: empty expr")
            for var in re.findall(r"\$\{?(\w+)", expr):
                if var not in variables and var not in BUILTINS:
                    errors.append(f"{where} {t.get('refId')}: unknown variable ${var}")
            queries.append({"dashboard": name, "id": p["id"], "title": p.get("title"),
                            "ref": t.get("refId"), "expr": expr})

if errors:
    print("check-observability: FAILED", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
# Every series selector names the release: $namespace, and $job (or the pod or HPA names the
# chart derives from it); ml-api's own series also $pod, those with a model label $model.
MODEL_METRICS = re.compile(r"^ml_api_(inference_duration|inference_batch_size|inference_queue_depth|predictions_total|model_info|model_load_duration|feature_drift_psi|prediction_drift_psi|drift_window_samples|shadow_|validation_failures_total)")
SELECTOR = re.compile(r'\b([a-zA-Z_:][\w:]*)\{((?:[^}"]|"[^"]*")*)\}')  # values may hold ${job}
for q in queries:
    where = f"{q['dashboard']} panel {q['id']} ({q['title']}) {q['ref']}"
    found = SELECTOR.findall(q["expr"])
    bare = [m for m in re.findall(r"\b((?:ml_api|process|redis|container|kube)_\w+|up)\b(?!\s*[{(\w])", q["expr"])]
    if bare or not found:
        errors.append(f"{where}: series without a label selector: {bare or q['expr']}")
    for metric, matchers in found:
        if metric in ("by", "without", "on", "ignoring"):
            continue
        if 'namespace=~"$namespace"' not in matchers:
            errors.append(f"{where}: {metric} is not filtered by $namespace")
        if not re.search(r'(job|horizontalpodautoscaler|pod)=~"[^"]*\$\{?job', matchers):
            errors.append(f"{where}: {metric} is not filtered by the release ($job)")
        if metric.startswith(("ml_api_", "process_", "container_", "kube_pod_")) and "ml_api_training_" not in metric \
                and "${job}-worker" not in matchers and 'pod=~"$pod"' not in matchers:
            errors.append(f"{where}: {metric} is not filtered by $pod")
        if MODEL_METRICS.match(metric) and 'model=~"$model"' not in matchers:
            errors.append(f"{where}: {metric} is not filtered by $model")
if errors:
    print("check-observability: FAILED", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
json.dump(queries, open(f"{work}/queries.json", "w"))
# Offline parse: each query (variables substituted) as a recording rule for promtool.
subst = lambda e: (e.replace("$__rate_interval", "1m").replace("$__interval", "15s")
                    .replace("$__range", "5m").replace("${job}", "ml-api").replace("$job", "ml-api")
                    .replace("$namespace", ".*").replace("$pod", ".*").replace("$model", ".*"))
rules = {"groups": [{"name": "dashboards", "rules": [
    {"record": f"dashboard:panel_{q['id']}_{q['ref'].replace('annotation', 'ann')}", "expr": subst(q["expr"])} for q in queries]}]}
yaml.safe_dump(rules, open(f"{work}/dashboard-queries.rules.yml", "w"))
print(f"check-observability: {len(files)} dashboard(s): JSON, {len(uids)} uid(s), "
      f"unique panel ids, layout, datasource references and variables OK; {len(queries)} queries, "
      f"each selector filtered by $namespace and the release")
PY
promtool check rules "$WORK/dashboard-queries.rules.yml" >"$WORK/parse.log" 2>&1 \
  || { cat "$WORK/parse.log" >&2; fail "a dashboard query does not parse"; }
say "every dashboard query parses (promtool)"

# 4. docker-compose and nginx ---------------------------------------------------------------
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml >/dev/null \
  || "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml
"$PY" - <<'PY'
import os, re, sys
import yaml

errors = []
c = yaml.safe_load(open("deploy/docker-compose.yml"))
services = c["services"]
readme = open("README.md").read()
for name, s in services.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.join("deploy", src)):
                errors.append(f"{name}: mounted {src} does not exist")
        elif src not in (c.get("volumes") or {}):
            errors.append(f"{name}: volume {src} is not declared")
    deps = s.get("depends_on", [])
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            errors.append(f"{name}: depends on unknown service {dep}")
    if "build" in s:
        ctx = os.path.normpath(os.path.join("deploy", s["build"]["context"]))
        if not os.path.isfile(os.path.join(ctx, s["build"].get("dockerfile", "Dockerfile"))):
            errors.append(f"{name}: no Dockerfile in build context {ctx}")
    if s.get("image") == "ml-api:local":
        env = s.get("environment", {})
        for k in env:
            if (k.startswith(("ML_API_", "OTEL_", "SENTRY_")) or k in ("RUST_LOG", "ORT_DYLIB_PATH")) \
                    and f"`{k}`" not in readme:
                errors.append(f"{name}: {k} is not a documented setting (README)")
        if env.get("ML_API_REGISTRY") != "redis":
            errors.append(f"{name}: ML_API_REGISTRY must be redis (shared by replicas and workers)")
        if "redis" not in env.get("ML_API_REDIS_URL", ""):
            errors.append(f"{name}: ML_API_REDIS_URL does not point at the redis service")
        if not s.get("read_only") or "ALL" not in s.get("cap_drop", []):
            errors.append(f"{name}: not read_only with cap_drop ALL")

predictors = sorted(n for n, s in services.items() if s.get("command") == ["serve"])
workers = sorted(n for n, s in services.items() if s.get("command") == ["worker"])
if len(predictors) != 2 or len(workers) != 1:
    errors.append(f"expected two `serve` replicas and one `worker`: {predictors}, {workers}")

# nginx: upstream = the predictors; limits = ml-api's defaults; trusted proxy = nginx's address.
conf = open("deploy/nginx/nginx.conf").read()
for name, port in (("ml_api", "5001"), ("ml_api_grpc", "8001")):
    block = re.search(r"upstream %s \{(.*?)\}" % name, conf, re.S)
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", block.group(1) if block else "", re.M)
    if sorted(h for h, _ in upstream) != predictors or any(p != port for _, p in upstream):
        errors.append(f"nginx upstream {name} {upstream} is not the predictors {predictors} on :{port}")
if "proxy_next_upstream error timeout http_502 http_503" not in conf:
    errors.append("nginx: no `proxy_next_upstream error timeout http_502 http_503`")
if "proxy_set_header X-Forwarded-For" not in conf:
    errors.append("nginx: X-Forwarded-For is not set")
config_rs = open("src/config.rs").read()
body = eval(re.search(r'"ML_API_MAX_BODY_BYTES", default_value_t = ([\d* ]+)\)', config_rs).group(1))
upload = eval(re.search(r'"ML_API_MAX_UPLOAD_BYTES", default_value_t = ([\d* ]+)\)', config_rs).group(1))
timeout = int(re.search(r'"ML_API_REQUEST_TIMEOUT", default_value = "(\d+)s"', config_rs).group(1))
sizes = [int(m) * 1024 * 1024 for m in re.findall(r"client_max_body_size (\d+)m;", conf)]
if sizes[:1] != [body] or upload not in sizes:
    errors.append(f"nginx client_max_body_size {sizes} vs ML_API_MAX_BODY_BYTES {body} / ML_API_MAX_UPLOAD_BYTES {upload}")
read = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))
if not timeout < read <= timeout + 5:
    errors.append(f"nginx proxy_read_timeout {read}s should be a little over ML_API_REQUEST_TIMEOUT {timeout}s")
published = lambda svc: {p.split(":")[-2] for p in services[svc].get("ports", [])}
if not {"5001", "8000"} <= published("nginx"):
    errors.append(f"nginx publishes {sorted(published('nginx'))}: the API belongs on 5001 and 8000 (the Celery training API's port)")
if "3000" not in published("grafana"):
    errors.append("grafana is not published on :3000")
if "docker compose -f deploy/docker-compose.yml up --build" not in readme:
    errors.append("README.md does not show `docker compose -f deploy/docker-compose.yml up --build`")
nginx_ip = services["nginx"]["networks"]["ml-api"]["ipv4_address"]
for p in predictors:
    if services[p]["environment"].get("ML_API_TRUSTED_PROXIES") != f"{nginx_ip}/32":
        errors.append(f"{p}: ML_API_TRUSTED_PROXIES is not nginx's address {nginx_ip}/32")

# Prometheus: scrape jobs = the services, on their metrics ports; rule files mounted beside it.
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
jobs = {j["job_name"]: [t for sc in j.get("static_configs", []) for t in sc["targets"]]
        for j in prom["scrape_configs"]}
want = {"ml-api": [f"{p}:5001" for p in predictors], "ml-api-worker": [f"{w}:9091" for w in workers],
        "ml-api-redis": ["redis-exporter:9121"]}
for job, targets in want.items():
    if sorted(jobs.get(job, [])) != sorted(targets):
        errors.append(f"prometheus job {job}: targets {jobs.get(job)}, expected {targets}")
pmounts = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
for rf in prom.get("rule_files", []):
    if f"/etc/prometheus/{rf}" not in pmounts:
        errors.append(f"prometheus rule file {rf} is not mounted at /etc/prometheus/{rf}")

if errors:
    print("check-observability: FAILED", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"check-observability: docker-compose.yml: compose-spec schema and cross-references OK "
      f"({len(services)} services)")
PY

NG="$WORK/nginx"
# deploy/nginx/nginx.conf with the compose hosts, port and /tmp rewritten for loopback (both
# upstream entries on the one test replica's port).
render_nginx_for() { render_nginx "$NG" "$2" "$1" "$1"; }   # APP_PORT NGINX_PORT
free_ports DEAD_PORT NGINX_PORT
declare -A NAME_OF=()   # the long-running processes, by PID: for the report of a failed wait
started() { PIDS+=("$1"); NAME_OF[$1]="$2"; }   # PID NAME
render_nginx_for "$DEAD_PORT" "$NGINX_PORT"   # replicas on a port where nothing listens
nginx -t -q -p "$NG" -c "$NG/nginx.conf" -e stderr || fail "nginx -t on deploy/nginx/nginx.conf"
# With every replica down, nginx answers in ml-api's error shape (503 unavailable, Retry-After).
nginx -p "$NG" -c "$NG/nginx.conf" -e stderr -g 'daemon off;' >"$WORK/nginx-dead.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")   # stopped below, on purpose: not NAME_OF's
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done
got="$(curl -sS -D "$WORK/dead.headers" -o "$WORK/dead.body" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data @tests/fixtures/seed_request.json "http://127.0.0.1:$NGINX_PORT/predict")"
if [[ "$got" != 503 ]] || ! grep -q '"unavailable"' "$WORK/dead.body" \
    || ! grep -qi '^retry-after: 1' "$WORK/dead.headers"; then
  cat "$WORK/dead.headers" "$WORK/dead.body" "$WORK/nginx-dead.log" >&2
  fail "nginx without replicas: $got"
fi
kill -QUIT "$NGINX_PID"
wait "$NGINX_PID" 2>/dev/null || true
say "nginx: deploy/nginx/nginx.conf passes nginx -t; with no replica up it answers 503 unavailable (JSON, Retry-After)"

# 5. Live ------------------------------------------------------------------------------------
free_ports REDIS_PORT EXPORTER_PORT WORKER_PORT PROM_PORT REF_PORT \
  B_REDIS_PORT B_EXPORTER_PORT B_WORKER_PORT B_PORT B_GRPC_PORT
start_redis redis "$REDIS_PORT" "$WORK/redis" "$WORK/redis.log"   # also in PIDS
REDIS_PID=$SPAWNED_PID
NAME_OF[$REDIS_PID]="A's redis-server"
prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$REDIS_PORT" \
  -web.listen-address "127.0.0.1:$EXPORTER_PORT" >"$WORK/exporter.log" 2>&1 &
started $! "A's redis_exporter"

# Release B: its own Redis and exporter (started before A's variables are exported).
start_redis redis-b "$B_REDIS_PORT" "$WORK/redis-b" "$WORK/redis-b.log"
NAME_OF[$SPAWNED_PID]="B's redis-server"
prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$B_REDIS_PORT" \
  -web.listen-address "127.0.0.1:$B_EXPORTER_PORT" >"$WORK/exporter-b.log" 2>&1 &
started $! "B's redis_exporter"

export ML_API_REGISTRY=redis ML_API_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" ML_API_REDIS_PREFIX=obs
export ML_API_DRIFT_MIN_SAMPLES=5   # the drift gauges appear after this check's few rows
source scripts/lib/test-server.sh
start_test_server              # the debug `ml-api serve`: BASE_URL, SERVER_PID, RUN_DIR
NAME_OF[$SERVER_PID]="A's ml-api serve"
trap cleanup EXIT              # (start_test_server set its own trap; ours also stops it)
BIN="${ML_API_BIN:-${CARGO_TARGET_DIR:-target}/debug/ml-api}"
"$BIN" --log-format json worker --metrics-addr "127.0.0.1:$WORKER_PORT" --name obs-worker \
  >"$WORK/worker.log" 2>&1 &
started $! "A's ml-api worker"
APP_PORT="${BASE_URL##*:}"
# Release B's predictor and worker: the same binary, B's Redis.
ML_API_REDIS_URL="redis://127.0.0.1:$B_REDIS_PORT" "$BIN" --log-format json serve --addr "127.0.0.1:$B_PORT" --grpc-addr "127.0.0.1:$B_GRPC_PORT" \
  --rate-limit false >"$WORK/serve-b.log" 2>&1 &
started $! "B's ml-api serve"
ML_API_REDIS_URL="redis://127.0.0.1:$B_REDIS_PORT" "$BIN" --log-format json worker \
  --metrics-addr "127.0.0.1:$B_WORKER_PORT" --name obs-worker-b >"$WORK/worker-b.log" 2>&1 &
started $! "B's ml-api worker"
render_nginx_for "$APP_PORT" "$NGINX_PORT"
nginx -p "$NG" -c "$NG/nginx.conf" -e stderr -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
started $! "nginx"

# One Prometheus for both releases, every second, with the target labels a ServiceMonitor gives
# (namespace, pod; job = the Service name, the same in both releases) and both releases' rules;
# a reference Prometheus with release A alone.
"$PY" - "$WORK" "$PROM_PORT" "$REF_PORT" "team-a=$APP_PORT,$WORKER_PORT,$EXPORTER_PORT" \
  "team-b=$B_PORT,$B_WORKER_PORT,$B_EXPORTER_PORT" <<'PY'
import sys
import yaml
work, prom_port, ref_port, *releases = sys.argv[1:]
def jobs(ns, ports):
    serve, worker, exporter = ports.split(",")
    hash_ = {"team-a": "6c9f7d8b5", "team-b": "7f5d6c9b8"}[ns]
    out = []
    for job, port, pod in (("ml-api", serve, f"ml-api-{hash_}-x2x4z"), ("ml-api-worker", worker, f"ml-api-worker-{hash_}-q8r7s"),
                           ("ml-api-redis", exporter, "ml-api-redis-0")):
        out.append({"job_name": f"{ns}/{job}", "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                    "labels": {"job": job, "namespace": ns, "pod": pod}}]})
    return out
rel = dict(r.split("=", 1) for r in releases)
glob = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
shared = {"global": glob, "rule_files": [f"{work}/team-a.rules.yml", f"{work}/team-b.rules.yml"],
          "scrape_configs": jobs("team-a", rel["team-a"]) + jobs("team-b", rel["team-b"])
          + [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]}]}
ref = {"global": glob, "scrape_configs": jobs("team-a", rel["team-a"])}
yaml.safe_dump(shared, open(f"{work}/prometheus.yml", "w"), sort_keys=False)
yaml.safe_dump(ref, open(f"{work}/prometheus-ref.yml", "w"), sort_keys=False)
PY
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
started $! "Prometheus (both releases)"
prometheus --config.file="$WORK/prometheus-ref.yml" --storage.tsdb.path="$WORK/tsdb-ref" \
  --web.listen-address="127.0.0.1:$REF_PORT" --log.level=warn >"$WORK/prometheus-ref.log" 2>&1 &
started $! "Prometheus (reference)"
PROM="http://127.0.0.1:$PROM_PORT"
REF="http://127.0.0.1:$REF_PORT"
NGX="http://127.0.0.1:$NGINX_PORT"

value_on() { curl -fsS --get "$1/api/v1/query" --data-urlencode "query=$2" | jq -r '.data.result[0].value[1] // empty'; }
query() { value_on "$PROM" "$1"; }
# What went wrong, printed after the logs' tails so that a truncated CI log still shows it: the
# processes that are no longer running, and what each Prometheus says of each of its targets.
report() {
  local pid url
  for pid in "${!NAME_OF[@]}"; do
    kill -0 "$pid" 2>/dev/null || echo "check-observability: ${NAME_OF[$pid]} (PID $pid) is not running" >&2
  done
  for url in "$PROM" "$REF"; do
    curl -sS --max-time 5 "$url/api/v1/targets" 2>&1 | jq -r --arg url "$url" '.data.activeTargets[]
      | "check-observability: \($url) scrapes \(.labels.namespace // "-")/\(.labels.job) at \(.scrapeUrl): \(.health) \(.lastError)"' >&2 \
      || echo "check-observability: Prometheus $url does not answer" >&2
  done
}
wait_for() { # DESCRIPTION SECONDS COMMAND...
  local what="$1" deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { tail -n 20 "$WORK"/*.log "$RUN_DIR/server.log" >&2; report; fail "timed out waiting for $what"; }
    sleep 0.2
  done
}
targets_up() { [[ "$(query 'count(up == 1)')" == 7 && "$(value_on "$REF" 'count(up == 1)')" == 3 ]]; }
wait_for "the worker" 20 curl -fsS "http://127.0.0.1:$WORKER_PORT/healthz"
wait_for "release B's worker" 20 curl -fsS "http://127.0.0.1:$B_WORKER_PORT/healthz"
wait_for "release B's replica" 60 curl -fsS "http://127.0.0.1:$B_PORT/readyz"
wait_for "nginx" 10 curl -fsS "$NGX/healthz"
wait_for "both Prometheus servers to start" 30 curl -fsS "$PROM/-/ready" "$REF/-/ready"
wait_for "both Prometheus servers to scrape all their targets (7 and 3)" 30 targets_up
say "live: two releases (Redis, redis_exporter, ml-api serve + worker each; nginx in front of A) and two Prometheus servers up"

expect() { # STATUS METHOD PATH [curl args...]: a request through nginx, checking its status
  local want="$1" method="$2" path="$3"; shift 3
  local got
  got="$(curl -sS -D "$WORK/headers" -o "$WORK/body" -w '%{http_code}' -X "$method" --max-time 20 "$@" "$NGX$path")"
  [[ "$got" == "$want" ]] || { cat "$WORK/body" >&2; echo >&2; fail "$method $path via nginx: $got, expected $want"; }
}
JSON=(-H 'Content-Type: application/json')
SEED=tests/fixtures/seed_request.json
"$PY" - "$SEED" "$WORK" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1]))
json.dump([seed, seed, seed], open(f"{sys.argv[2]}/batch.json", "w"))
json.dump({**seed, "age": "old", "sexo": "X"}, open(f"{sys.argv[2]}/invalid.json", "w"))
open(f"{sys.argv[2]}/big.json", "w").write('{"pad": "' + "x" * (3 * 1024 * 1024) + '"}')
PY
train_and_use() {
  expect 201 POST /models "${JSON[@]}" --data @train.json
  local id status
  id="$(jq -r .model_id "$WORK/body")"
  for _ in $(seq 1 100); do
    status="$(curl -fsS "$NGX/models/$id" | jq -r .status)"
    [[ "$status" == ready ]] && break
    [[ "$status" == failed ]] && fail "training $id failed"
    sleep 0.1
  done
  [[ "$status" == ready ]] || fail "training $id did not finish"
  TRAINED+=("$id")
  expect 200 GET "/models/$id?sepal_length=5.9&sepal_width=3.0&petal_length=5.1&petal_width=1.8"
  expect 200 GET "/models/$id?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
}
traffic_round() {
  for _ in 1 2 3 4 5; do expect 200 POST /predict "${JSON[@]}" --data @"$SEED"; done
  for _ in 1 2 3; do expect 200 POST /predict "${JSON[@]}" -H "X-API-Key: $API_KEY" --data @"$SEED"; done
  expect 200 POST /predict "${JSON[@]}" --data @"$WORK/batch.json"
  expect 200 POST '/predict?top_k=3' "${JSON[@]}" --data @"$SEED"
  expect 422 POST /predict "${JSON[@]}" --data @"$WORK/invalid.json"
  expect 422 POST /predict "${JSON[@]}" --data @"$WORK/invalid.json"
  expect 400 POST /predict "${JSON[@]}" --data '{"not json'
  expect 404 GET /no-such-route
  expect 200 GET /models
  train_and_use
}
# The dashboard comparison below needs both Prometheus servers to compute the same rates for
# release A although they scrape it at different moments. A rate over a window in which a series
# is born, or in which traffic is under way at either edge, depends on where the scrapes fell.
# So the traffic comes in two phases, each followed by a wait until release A is idle and both
# servers have scraped its final counters: the first phase makes every series, and the compared
# window starts after it and covers the second phase whole. Both servers then hold the same
# counts at both ends of the window and differ only in its sampled span (a scrape apart).
A_COUNTERS='sum({namespace="team-a", job=~"ml-api|ml-api-worker", __name__=~"ml_api_.+_(total|count)", route!~"/metrics|/healthz|/readyz"})'
scraped_since() { # BASE EPOCH: the server has scraped release A's predictor and worker after EPOCH
  local last
  last="$(value_on "$1" 'min(timestamp(up{namespace="team-a", job=~"ml-api|ml-api-worker"}))')"
  [[ -n "$last" ]] && awk -v last="$last" -v since="$2" 'BEGIN { exit !(last > since) }'
}
both_scraped_since() { scraped_since "$PROM" "$1" && scraped_since "$REF" "$1"; }
on_both() { # QUERY VALUE: both servers return VALUE
  [[ "$(value_on "$PROM" "$1")" == "$2" && "$(value_on "$REF" "$1")" == "$2" ]]
}
SEEN=  # "COUNTERS@EPOCH": the release A counters both servers were first seen to hold, and when
a_settled() { # both servers hold the same release A counters, unchanged in a scrape after that
  local shared alone
  shared="$(value_on "$PROM" "$A_COUNTERS")" alone="$(value_on "$REF" "$A_COUNTERS")"
  if [[ -z "$shared" || "$shared" != "$alone" ]]; then SEEN=; return 1; fi
  if [[ "${SEEN%@*}" != "$shared" ]]; then SEEN="$shared@$(date +%s.%N)"; return 1; fi
  both_scraped_since "${SEEN#*@}"
}
phase_scraped() { # TRAININGS SHADOW_SCORED: release A's work done, idle and scraped alike by both servers
  on_both 'sum(ml_api_training_jobs_total{namespace="team-a", job="ml-api-worker", status="ready"})' "$1" \
    && on_both 'sum(ml_api_shadow_requests_total{namespace="team-a", job="ml-api", outcome="scored"})' "$2" \
    && a_settled
}
shadow_burst() { # 10 predictions of `model:prod`, each scored by the challenger too
  for _ in $(seq 1 10); do
    expect 200 POST /models/model:prod/predict "${JSON[@]}" \
      --data '{"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}'
  done
}
TRAINED=()
expect 201 POST /keys "${JSON[@]}" --data '{"name": "obs-check", "rate_per_s": 100, "burst": 100}'
API_KEY="$(jq -r .key "$WORK/body")"
# Phase 1: every kind of request once, and a challenger on `model:prod` (versions 1 and 2 of
# `model`), shadow-scored.
traffic_round
train_and_use
expect 413 POST /predict "${JSON[@]}" --data @"$WORK/big.json"
grep -q '"payload_too_large"' "$WORK/body" || fail "nginx's 413 is not in ml-api's error shape"
expect 404 GET /metrics
grep -q '"not_found"' "$WORK/body" || fail "GET /metrics via nginx: not ml-api's error shape"
expect 200 GET /readyz -H 'X-Request-Id: obs-check-1'
grep -qi '^x-request-id: obs-check-1' "$WORK/headers" || fail "nginx did not pass the caller's X-Request-Id"
expect 200 GET /healthz
grep -qi '^x-request-id: [0-9a-f]\{32\}' "$WORK/headers" || fail "nginx did not give a request without one an X-Request-Id"
expect 200 PUT /models/model/aliases/prod "${JSON[@]}" \
  --data "{\"model_id\": \"${TRAINED[0]}\", \"challenger\": \"${TRAINED[1]}\", \"shadow_fraction\": 1.0}"
shadow_burst
wait_for "both Prometheus servers to scrape release A idle after the first phase" 30 phase_scraped 2 10
WINDOW_START="$(date +%s.%N)"
# The compared window starts within a second of WINDOW_START: each server scrapes the first
# phase's counts once more inside it before the second phase begins.
wait_for "both Prometheus servers to scrape release A inside the compared window" 10 \
  both_scraped_since "$(awk -v t="$WINDOW_START" 'BEGIN { printf "%.3f", t + 1 }')"
# Phase 2, measured: the same traffic again (a third training) and the challenger's shadow.
traffic_round
shadow_burst
# Release B: three times A's predictions, its own model name, one training.
BURL="http://127.0.0.1:$B_PORT"
for _ in $(seq 1 3); do
  for _ in $(seq 1 10); do
    curl -fsS -o /dev/null "${JSON[@]}" --data @"$SEED" "$BURL/predict"
    curl -fsS -o /dev/null "${JSON[@]}" --data @"$WORK/batch.json" "$BURL/predict"
  done
  curl -sS -o /dev/null "${JSON[@]}" --data @"$WORK/invalid.json" "$BURL/predict"
done
b_id="$("$PY" -c 'import json,sys; t=json.load(open(sys.argv[1])); t["name"]="model-b"; print(json.dumps(t))' train.json \
  | curl -fsS "${JSON[@]}" --data @- "$BURL/models" | jq -r .model_id)"
for _ in $(seq 1 100); do
  [[ "$(curl -fsS "$BURL/models/$b_id" | jq -r .status)" == ready ]] && break
  sleep 0.1
done
for _ in $(seq 1 10); do
  curl -fsS -o /dev/null "${JSON[@]}" "$BURL/models/model-b/predict" \
    --data '{"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}'
done
wait_for "both Prometheus servers to scrape release A idle after the second phase" 30 phase_scraped 3 20
# A window of at least 30 s (30 scrapes): a scrape's difference in the sampled span then moves
# a rate by under 4 %, well inside the comparison's 25 %.
window_long() { awk -v start="$WINDOW_START" -v now="$(date +%s.%N)" 'BEGIN { exit !(now - start >= 31) }'; }
wait_for "the compared window to span 30 s" 40 window_long
say "live: traffic sent through nginx to A in two phases, each scraped idle by both servers (predictions, keyed predictions, batches, 400/404/413/422, 3 trainings + predictions, a shadowed challenger) and directly to B (3x the predictions, a training)"

# Every dashboard query, variables substituted as Grafana would ($namespace = one release, the
# others All), must return data for release A, and exactly what the reference Prometheus (A
# alone) returns: the same series, values within 25 %. For B, every series naming a namespace
# names team-b.
"$PY" - "$WORK/queries.json" "$PROM" "$REF" "$WINDOW_START" <<'PY'
import json, math, os, sys, time, urllib.parse, urllib.request

queries, prom, ref, window_start = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], float(sys.argv[4])
# Panels that legitimately return nothing here, with the reason. Keep it short.
K8S_ONLY = "Kubernetes metrics (cAdvisor, kube-state-metrics): no kubelet in this check"
NO_DATA_EXPECTED = {"CPU throttled share by pod": K8S_ONLY, "HPA replicas: current and desired": K8S_ONLY,
                    "Container CPU (cores) by pod": K8S_ONLY, ("CPU (cores) against the limit", "B"): K8S_ONLY,
                    "annotation Deploys": "a deploy shows only while a new version's series is under 2 minutes old"}
at = time.time()
# $__rate_interval: the measured window, from just after the first phase to now (see above).
ALL = {"$__rate_interval": f"{math.floor(at - window_start)}s", "$__interval": "15s", "$__range": "5m", "${job}": "ml-api", "$job": "ml-api",
       "$pod": ".*", "$model": ".*"}

def get(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"]

def run(base, expr, ns):
    expr = expr.replace("$namespace", ns)
    for k, v in ALL.items():
        expr = expr.replace(k, v)
    return expr, get(base, "/api/v1/query", query=expr, time=f"{at:.3f}")["result"]

def close(a, b):
    a, b = float(a), float(b)
    if a != a or b != b:  # NaN
        return (a != a) == (b != b)
    return abs(a - b) <= max(1e-9, 0.25 * max(abs(a), abs(b)))

def spread(a, b):  # relative difference, for the summary
    a, b = float(a), float(b)
    return 0.0 if a == b or a != a or b != b else abs(a - b) / max(abs(a), abs(b))

failed, compared, empty, widest = [], 0, 0, 0.0
for q in queries:
    where = f"{q['dashboard']} panel {q['id']} ({q['title']}) {q['ref']}"
    expected_empty = NO_DATA_EXPECTED.get(q["title"]) or NO_DATA_EXPECTED.get((q["title"], q["ref"]))
    expr, shared = run(prom, q["expr"], "team-a")
    _, alone = run(ref, q["expr"], "team-a")
    if os.environ.get("OBS_VERBOSE"):
        print(f"  {where}: " + ", ".join(f"{r['metric']}={r['value'][1]}" for r in shared[:4]))
    values = [r["value"][1] for r in shared if r["value"][1] not in ("NaN", "+Inf", "-Inf")]
    if not values and not expected_empty:
        failed.append(f"{where}: no data for team-a\n    {expr}")
        continue
    empty += not values
    key = lambda r: json.dumps(r["metric"], sort_keys=True)
    s_by, a_by = {key(r): r["value"][1] for r in shared}, {key(r): r["value"][1] for r in alone}
    if set(s_by) != set(a_by):
        failed.append(f"{where}: series differ from release A alone: extra {sorted(set(s_by) - set(a_by))[:3]}, "
                      f"missing {sorted(set(a_by) - set(s_by))[:3]}\n    {expr}")
        continue
    widest = max([widest] + [spread(s_by[k], a_by[k]) for k in s_by])
    off = [k for k in s_by if not close(s_by[k], a_by[k])]
    if off:
        failed.append(f"{where}: values differ from release A alone: {[(k, s_by[k], a_by[k]) for k in off[:3]]}\n    {expr}")
    compared += 1
    _, other = run(prom, q["expr"], "team-b")
    leaked = [r["metric"] for r in other if r["metric"].get("namespace", "team-b") != "team-b"]
    if leaked:
        failed.append(f"{where}: $namespace=team-b returns {leaked[:3]}")
if failed:
    print("check-observability: FAILED, dashboard queries:", *failed, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"check-observability: live: {len(queries)} dashboard queries with $namespace=team-a return data "
      f"({empty} expected empty: Kubernetes-only or transient) and match release A alone over "
      f"{ALL['$__rate_interval']} (largest difference {widest:.1%}); "
      f"$namespace=team-b returns only team-b")

# Every alert rule of both releases evaluates on the real series without error.
groups = get(prom, "/api/v1/rules")["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [f"{r['name']}: {r.get('health')} {r.get('lastError', '')}" for r in rules if r.get("health") != "ok"]
if len(rules) < 20 or bad:
    sys.exit(f"check-observability: FAILED, alert rules on real data ({len(rules)}): {bad}")
print(f"check-observability: live: all {len(rules)} alert rules of the two releases evaluate without error")
PY

# Release A's Redis goes away: its registry routes answer 503, and release A's two Redis alert
# expressions fire; release B's stay quiet.
alert_expr() { "$PY" -c 'import sys, yaml
for g in yaml.safe_load(open(sys.argv[2]))["groups"]:
    for r in g["rules"]:
        if r.get("alert") == sys.argv[1]: print(r["expr"])' "$1" "$WORK/$2.rules.yml"; }
REGISTRY_EXPR="$(alert_expr MlApiRegistryUnavailable team-a)"
REDIS_EXPR="$(alert_expr RedisDown team-a)"
B_REGISTRY_EXPR="$(alert_expr MlApiRegistryUnavailable team-b)"
B_REDIS_EXPR="$(alert_expr RedisDown team-b)"
[[ -n "$REGISTRY_EXPR" && -n "$REDIS_EXPR" && -n "$B_REGISTRY_EXPR" && -n "$B_REDIS_EXPR" ]] \
  || fail "the rendered rules lack MlApiRegistryUnavailable or RedisDown"
[[ -z "$(query "$REGISTRY_EXPR")" && -z "$(query "$REDIS_EXPR")" ]] \
  || fail "MlApiRegistryUnavailable or RedisDown fire while Redis is up"
kill "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null || true
unset "NAME_OF[$REDIS_PID]"   # stopped on purpose
# The first sample of a new series is its baseline for increase(): two 503s, scraped, then
# four more.
for _ in 1 2; do expect 503 POST /models "${JSON[@]}" --data @train.json; done
first_503s() { [[ "$(query 'sum(ml_api_http_requests_total{namespace="team-a", job="ml-api", route="/models", status="503"})')" == 2 ]]; }
wait_for "Prometheus to scrape release A's first two 503s" 15 first_503s
for _ in 1 2 3 4; do expect 503 POST /models "${JSON[@]}" --data @train.json; done
grep -q '"unavailable"' "$WORK/body" || fail "POST /models without Redis: not 503 unavailable"
expect 200 POST /predict "${JSON[@]}" --data @"$SEED"   # loaded models keep serving
registry_fires() { [[ -n "$(query "$REGISTRY_EXPR")" && -n "$(query "$REDIS_EXPR")" ]]; }
wait_for "MlApiRegistryUnavailable and RedisDown to fire" 15 registry_fires
fired_ns() { curl -fsS --get "$PROM/api/v1/query" --data-urlencode "query=$1" | jq -r '[.data.result[].metric.namespace] | unique | join(",")'; }
[[ "$(fired_ns "$REGISTRY_EXPR")" == team-a && "$(fired_ns "$REDIS_EXPR")" == team-a ]] \
  || fail "release A's Redis alerts name $(fired_ns "$REGISTRY_EXPR") / $(fired_ns "$REDIS_EXPR"), not team-a alone"
[[ -z "$(query "$B_REGISTRY_EXPR")" && -z "$(query "$B_REDIS_EXPR")" ]] \
  || fail "release B's MlApiRegistryUnavailable or RedisDown fire while only A's Redis is down"
curl -fsS -o /dev/null "${JSON[@]}" --data @"$SEED" "http://127.0.0.1:$B_PORT/predict" || fail "release B stopped serving"
say "live: A's Redis stopped: POST /models answers 503, /predict still 200; A's MlApiRegistryUnavailable and RedisDown fire (namespace team-a only), B's stay quiet"

cleanup
trap - EXIT
say "passed in $((SECONDS - started)) s"
