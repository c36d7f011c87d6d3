#!/usr/bin/env bash
# Checks the Helm chart (helm/ml-api) and the kustomize manifests (k8s/) without a cluster:
#
#   1. drift        k8s/base, k8s/components and the chart's copies of deploy/ (alert rules,
#                   dashboards) are what scripts/render-k8s.sh generates now
#   2. helm lint    --strict, with the default values and with each helm/ml-api/ci/*-values.yaml
#                   (values.schema.json rejects unknown keys and wrong types)
#   3. render       helm template (defaults + each ci values file, helm test pods included) and
#                   kubectl kustomize of k8s/overlays/dev and k8s/overlays/prod
#   4. schemas      every rendered object against the Kubernetes 1.30 ... 1.35 schemas
#                   (kubernetes-validate, strict: unknown fields fail; a ci values file whose
#                   first line is `# min-kubernetes: 1.3x.0` from that version on). CRD objects
#                   (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) are
#                   validated, also strictly, against their upstream CRD schemas vendored in
#                   k8s/crd-schemas (kubernetes-validate has none for them); HTTPRoutes with the
#                   Gateway API validators of @kubernetes-models/gateway-api (npm), and strictly
#                   against its type declarations (unknown fields fail)
#   5. env names    every ML_API_* (RUST_LOG, SENTRY_*, OTEL_*) variable the chart gives ml-api
#                   is one the binary reads (an `env = "..."` in src/config.rs), and every one the
#                   binary reads is set by the chart in at least one values set: every setting is
#                   reachable from values
#   GitOps          rendering without cluster access (helm template) fails while the chart
#                   would have to generate the admin key or Redis password; it renders with
#                   secrets.existingSecret or explicit values (the default set below renders with
#                   secrets.allowGeneratedWithoutLookup=true, the preview switch)
#   6. checkov      the chart (--framework helm, once per values file) and both rendered
#                   overlays (--framework kubernetes): no failed check, a nonzero passed count
#                   (checkov passes silently when it finds nothing to scan), every skip listed
#                   with the reason the chart gives for it
#
# Exits non-zero on the first failing step. Tools: scripts/install-k8s-tools.sh (.tools/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

KUBE_VERSIONS=(1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0)
CHART=helm/ml-api
started=$SECONDS

scripts/install-k8s-tools.sh
export PATH="$ROOT/.tools/k8s/bin:$PATH"
PY="$ROOT/.tools/venv-k8s/bin/python"
CHECKOV="$ROOT/.tools/checkov/bin/checkov"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() {  # step "title" command...
  local title="$1" t0=$SECONDS; shift
  echo "==> $title"
  if ! "$@"; then
    echo "FAIL: $title" >&2
    exit 1
  fi
  echo "    ok ($((SECONDS - t0)) s)"
}

# The helm we run is the one checkov will find on PATH: without it checkov's helm framework
# finds "no runners" and passes silently.
helm_path="$(command -v helm)"
[[ "$helm_path" == "$ROOT/.tools/k8s/bin/helm" ]] || { echo "unexpected helm: $helm_path" >&2; exit 1; }
echo "tools: $(helm version --short), kubectl $(kubectl version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $("$PY" -m kubernetes_validate --version 2>/dev/null || .tools/venv-k8s/bin/kubernetes-validate --version), checkov $("$CHECKOV" --version)"

# The chart's defaults, rendered as a preview: without a cluster `lookup` cannot read the
# installed Secret, and the chart refuses to generate secrets then (checked below).
PREVIEW="$work/preview-values.yaml"
echo "secrets: {allowGeneratedWithoutLookup: true}" > "$PREVIEW"
values_sets=("$PREVIEW")
for f in "$CHART"/ci/*-values.yaml; do values_sets+=("$f"); done
label() { if [[ "$1" == "$PREVIEW" ]]; then echo default; else basename "$1" -values.yaml; fi; }

# 1 -------------------------------------------------------------------------------------------
step "drift: k8s/ and the chart's copies of deploy/ match scripts/render-k8s.sh" \
  scripts/render-k8s.sh --check

# 2 -------------------------------------------------------------------------------------------
lint_all() {
  local v
  for v in "${values_sets[@]}"; do
    echo "    helm lint --strict ($(label "$v"))"
    helm lint --strict --quiet "$CHART" --namespace ml-api -f "$v" > "$work/lint.log" 2>&1 \
      || { cat "$work/lint.log" >&2; return 1; }
  done
}
step "helm lint --strict: default values + $((${#values_sets[@]} - 1)) ci values files" lint_all

gitops_guard() {
  if helm template ml-api "$CHART" --namespace ml-api > /dev/null 2> "$work/gitops.err"; then
    echo "    helm template with generated secrets rendered; it must fail (GitOps would rotate them)" >&2; return 1
  fi
  grep -q 'secrets.existingSecret' "$work/gitops.err" \
    || { cat "$work/gitops.err" >&2; echo "    the failure does not name secrets.existingSecret" >&2; return 1; }
  helm template ml-api "$CHART" --namespace ml-api --set secrets.existingSecret=ml-api-credentials > /dev/null
  helm template ml-api "$CHART" --namespace ml-api --set secrets.adminApiKey=k --set redis.password=p > /dev/null
  echo "    helm template: refuses to generate secrets it cannot read back; renders with existingSecret or explicit values"
}
step "GitOps: no secret generated without lookup" gitops_guard

# 3 -------------------------------------------------------------------------------------------
mkdir -p "$work/rendered"
render_all() {
  local v o
  for v in "${values_sets[@]}"; do
    helm template ml-api "$CHART" --namespace ml-api -f "$v" > "$work/rendered/helm-$(label "$v").yaml"
    echo "    helm template ($(label "$v")) -> $(grep -c '^kind:' "$work/rendered/helm-$(label "$v").yaml") objects"
  done
  # NOTES.txt is not part of `helm template`: render it too, and check it prints the exact
  # port-forward and the seed curl.
  for v in "${values_sets[@]}"; do
    helm install ml-api "$CHART" --namespace ml-api --dry-run=client -f "$v" > "$work/install.txt"
    grep -q 'kubectl --namespace ml-api port-forward svc/ml-api 5001:5001' "$work/install.txt" \
      && grep -q "^curl --location 'http://127.0.0.1:5001/predict'" "$work/install.txt" \
      && grep -q 'must exist in a registry' "$work/install.txt" \
      || { echo "    NOTES.txt ($(label "$v")) lacks the port-forward, the seed curl or the image note" >&2; return 1; }
    if ! grep -q 'networkPolicy:' "$v" || ! grep -q 'enabled: false' "$v"; then
      grep -q 'ml-api-client: "true"' "$work/install.txt" \
        || { echo "    NOTES.txt ($(label "$v")) does not name the client label" >&2; return 1; }
    fi
  done
  echo "    NOTES.txt (helm install --dry-run=client) prints the port-forward, the seed curl, the client label and the image note"
  for o in dev prod; do
    kubectl kustomize "k8s/overlays/$o" > "$work/rendered/kustomize-$o.yaml"
    echo "    kubectl kustomize k8s/overlays/$o -> $(grep -c '^kind:' "$work/rendered/kustomize-$o.yaml") objects"
  done
}
step "render: helm template and kubectl kustomize" render_all

# 4 + 5 ---------------------------------------------------------------------------------------
validate() {
  "$PY" - "$work/rendered" "$ROOT/k8s/crd-schemas" "$ROOT/src/config.rs" "$CHART/ci" "${KUBE_VERSIONS[@]}" <<'PY'
import copy, functools, glob, json, os, re, sys
import jsonschema, yaml
from kubernetes_validate import utils as kv

rendered, crd_dir, config_rs, ci_dir, versions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]

def min_version(name):  # `# min-kubernetes: X` on the first line of helm-<label>.yaml's values file
    values = os.path.join(ci_dir, name[len("helm-"):-len(".yaml")] + "-values.yaml")
    if name.startswith("helm-") and os.path.exists(values):
        m = re.match(r"# min-kubernetes: ([0-9.]+)", open(values).readline())
        if m:
            return tuple(int(x) for x in m.group(1).split("."))
    return (0,)
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)  # load each schema once

def strict(schema):
    """Reject unknown fields like the API server's strict field validation does: every object
    schema with `properties` gets additionalProperties: false unless it preserves unknowns."""
    if isinstance(schema, dict):
        # Go's regexp allows `^(?i)...`; Python wants global flags first.
        if isinstance(schema.get("pattern"), str) and schema["pattern"].startswith("^(?i)"):
            schema["pattern"] = "(?i)^" + schema["pattern"][5:]
        if (schema.get("type") == "object" and "properties" in schema
                and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema

crds = {}  # (apiVersion, kind) -> validator
groups = {"monitoring": "monitoring.coreos.com", "keda": "keda.sh"}
for path in glob.glob(os.path.join(crd_dir, "*.json")):
    kind, group, version = os.path.basename(path)[:-5].split("-")
    schema = strict(json.load(open(path)))
    jsonschema.Draft7Validator.check_schema(schema)
    crds[(f"{groups[group]}/{version}", kind)] = jsonschema.Draft7Validator(schema)  # kind in lower case

env_read = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', open(config_rs).read()))
assert "ML_API_REDIS_URL" in env_read, "could not read the env names from src/config.rs"
# Settings the chart offers before src/config.rs has them: another branch adds them to the
# binary. Remove a name from here once src/config.rs reads it (a note below says when).
PENDING = set()
# Settings the binary reads that the chart deliberately does not offer, with the reason.
NOT_IN_CHART = {
    "ML_API_TRAINING_CONCURRENCY": "embedded registry only; the chart always runs Redis and `ml-api worker` pods",
    "ORT_DYLIB_PATH": "set by the image (the ONNX Runtime library it ships)",
}
OURS = re.compile(r"^(ML_API_|SENTRY_|OTEL_|RUST_LOG$)")  # extraEnv may add anything else
chart_sets = set()
httproutes = []

errors, counts = [], {}
for path in sorted(glob.glob(os.path.join(rendered, "*.yaml"))):
    name = os.path.basename(path)
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    seen, configmaps = set(), {}
    for d in docs:
        if d.get("kind") == "ConfigMap":
            configmaps[d["metadata"]["name"]] = d.get("data", {})
    n_builtin = n_crd = 0
    for d in docs:
        kind, api, meta = d.get("kind"), d.get("apiVersion"), d.get("metadata", {})
        ident = f"{name}: {kind}/{meta.get('name')}"
        key = (kind, meta.get("namespace"), meta.get("name"))
        if key in seen:
            errors.append(f"{ident}: defined twice")
        seen.add(key)
        if api == "gateway.networking.k8s.io/v1" and kind in ("HTTPRoute", "GRPCRoute"):
            n_crd += 1
            httproutes.append({"ident": ident, "kind": kind, "object": d})
        elif (api, str(kind).lower()) in crds:
            n_crd += 1
            for e in crds[(api, kind.lower())].iter_errors(d):
                errors.append(f"{ident} ({api} CRD schema): {'/'.join(map(str, e.absolute_path))}: {e.message}")
        else:
            n_builtin += 1
            for v in versions:
                if tuple(int(x) for x in v.split(".")) < min_version(name):
                    continue
                try:
                    kv.validate(d, v, strict=True)
                except kv.ValidationError as e:
                    errors.append(f"{ident} (Kubernetes {v}): {'/'.join(map(str, e.absolute_path))}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    errors.append(f"{ident}: {e.message}")
        # Environment of the ml-api containers: names the binary reads, nothing else.
        spec = d.get("spec", {})
        pod = spec.get("template", {}).get("spec") if kind in ("Deployment", "StatefulSet") else None
        for c in (pod or {}).get("containers", []):
            if not str(c.get("image", "")).split("@")[0].rsplit(":", 1)[0].endswith("ml-api"):
                continue
            names = [e["name"] for e in c.get("env", [])]
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm not in configmaps:
                    errors.append(f"{ident}: envFrom ConfigMap {cm} is not rendered")
                names += list(configmaps.get(cm, {}))
            chart_sets.update(names)
            for n in names:
                if OURS.match(n) and n not in env_read and n not in PENDING:
                    errors.append(f"{ident}: container {c['name']} gets {n}, which ml-api does not read (src/config.rs)")
    counts[name] = (n_builtin, n_crd)
    lo = ".".join(map(str, min_version(name))) if min_version(name) > (0,) else versions[0]
    print(f"    {name}: {n_builtin} objects x Kubernetes {lo}..{versions[-1]}, {n_crd} CRD objects")
unreachable = sorted(env_read - chart_sets - set(NOT_IN_CHART))
for n in unreachable:
    errors.append(f"{n} (src/config.rs) is set by no values set: the chart cannot reach it (add a value, or to NOT_IN_CHART with the reason)")
print(f"    env: {len(env_read & chart_sets)} of the binary's {len(env_read)} settings set from values; "
      f"not offered: {', '.join(f'{k} ({v})' for k, v in NOT_IN_CHART.items())}")
for n in sorted(PENDING & env_read):
    print(f"    note: {n} is in src/config.rs now; remove it from PENDING")
json.dump(httproutes, open(os.path.join(rendered, "..", "httproutes.json"), "w"))
for e in errors:
    print("    " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}
step "schemas: Kubernetes ${KUBE_VERSIONS[0]}..${KUBE_VERSIONS[-1]} (strict) + vendored CRD schemas; env names vs src/config.rs" validate

gateway_api() {  # the rendered HTTPRoutes and GRPCRoutes (collected by validate) against the Gateway API types
  local gw="$ROOT/.tools/gateway-api" n
  n="$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/httproutes.json")"
  ((n > 0)) || { echo "    no HTTPRoute rendered (gateway.enabled in a ci values file?)" >&2; return 1; }
  grep -q '"kind": "GRPCRoute"' "$work/httproutes.json" \
    || { echo "    no GRPCRoute rendered (gateway.grpc.enabled in a ci values file?)" >&2; return 1; }
  # 1. The validators @kubernetes-models/gateway-api generates from the upstream Go API types:
  #    types, enums, patterns, bounds and required fields.
  cat > "$gw/validate-httproutes.mjs" <<'JS'
import { readFileSync } from "node:fs";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";
import { GRPCRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/GRPCRoute";
const kinds = { HTTPRoute, GRPCRoute };
let failed = 0;
for (const { ident, kind, object } of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  try { new kinds[kind](object).validate(); } catch (e) { failed++; console.error(`    ${ident}: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
JS
  node "$gw/validate-httproutes.mjs" "$work/httproutes.json"
  # 2. Strict: every field of every object is one the types declare (the API server's strict
  #    field validation; the generated validators let unknown fields through).
  "$PY" - "$gw/node_modules/@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1" "$work/httproutes.json" <<'PY'
import glob, json, os, re, sys
types, parents = {}, {}  # IIoK8sSigsGatewayApiApisV1X -> {field: type}, [interfaces it extends]
for path in glob.glob(os.path.join(sys.argv[1], "*.d.ts")):
    text = open(path).read()
    for name, ext, body in re.findall(r"export interface (I\w+)(?: extends ([^{]+))?\s*\{(.*?)\n\}", text, re.S):
        fields = dict(re.findall(r'^\s*"([^"]+)"\??: ([^;]+);', body, re.M))
        bases = [b.strip() for b in ext.split(",")] if ext else []
        alias = re.search(rf"{name} as (IIoK8s\w+)", text)
        for n in [name] + ([alias.group(1)] if alias else []):
            types[n], parents[n] = fields, bases
def all_fields(name, seen=()):
    out = dict(types.get(name, {}))
    for b in parents.get(name, []):
        if b == "TypeMeta":
            out.update({"apiVersion": "string", "kind": "string"})
        elif b not in seen:
            out.update(all_fields(b, seen + (name,)))
    return out
types = {n: all_fields(n) for n in types}
errors = []
def walk(value, typ, where):
    typ = typ.strip()
    m = re.fullmatch(r"Array<(.+)>", typ)
    if m:
        for i, v in enumerate(value if isinstance(value, list) else []):
            walk(v, m.group(1), f"{where}/{i}")
        return
    fields = types.get(typ)
    if fields is None or not isinstance(value, dict):
        return  # a scalar type, or metadata (ObjectMeta, checked by the API machinery types)
    for k, v in value.items():
        if k not in fields:
            errors.append(f"{where}: unknown field `{k}` (known: {', '.join(sorted(fields))})")
        else:
            walk(v, fields[k], f"{where}/{k}")
routes = json.load(open(sys.argv[2]))
for r in routes:
    walk(r["object"], "I" + r["kind"], r["ident"])
for e in errors:
    print("    " + e, file=sys.stderr)
if not errors:
    print(f"    {len(routes)} HTTPRoute(s) and GRPCRoute(s): Gateway API v1 validators and strict fields ({len(types)} types) OK")
sys.exit(1 if errors else 0)
PY
}
step "Gateway API: HTTPRoutes and GRPCRoutes against @kubernetes-models/gateway-api (validators + strict fields)" gateway_api

# 6 -------------------------------------------------------------------------------------------
checkov_report() {  # checkov_report TITLE JSON: fail unless checks ran and none failed
  "$PY" - "$1" "$2" <<'PY'
import json, sys
title, path = sys.argv[1], sys.argv[2]
data = json.load(open(path))
reports = data if isinstance(data, list) else [data]
passed = failed = parse_errors = n_skipped = 0
skipped = []
for r in reports:
    if "summary" not in r:           # {"passed": 0, ...} when nothing was scanned
        continue
    s = r["summary"]
    passed += s["passed"]; failed += s["failed"]; parse_errors += s["parsing_errors"]
    n_skipped += s["skipped"]
    for c in r["results"].get("failed_checks", []):
        print(f"    FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c.get('file_path')})", file=sys.stderr)
    for c in r["results"].get("skipped_checks", []):
        skipped.append((c["check_id"], c["resource"], (c.get("check_result") or {}).get("suppress_comment", "")))
print(f"    {title}: {passed} passed, {failed} failed, {n_skipped} skipped, {parse_errors} parsing errors")
by_reason = {}
for check_id, resource, why in sorted(set(skipped)):
    by_reason.setdefault((check_id, why), []).append(resource)
for (check_id, why), resources in sorted(by_reason.items()):
    print(f"      skip {check_id} on {', '.join(resources)}\n        reason: {why}")
if passed == 0:
    print(f"    {title}: checkov ran no check (is helm on PATH?)", file=sys.stderr)
sys.exit(1 if failed or parse_errors or passed == 0 else 0)
PY
}

run_checkov() {
  local v pids=() titles=() i rc=0
  # The chart, once per values file (checkov renders it with `helm template`), in parallel.
  for v in "${values_sets[@]}"; do
    "$CHECKOV" -d "$CHART" --framework helm --config-file "$CHART/.checkov.yaml" \
      --var-file "$v" --skip-download -o json \
      > "$work/checkov-helm-$(label "$v").json" 2> "$work/checkov-helm-$(label "$v").log" &
    pids+=($!); titles+=("helm-$(label "$v")")
  done
  # The kustomize overlays, as rendered (all checks on, CKV_K8S_21 included).
  mkdir -p "$work/overlays"
  cp "$work/rendered/kustomize-dev.yaml" "$work/rendered/kustomize-prod.yaml" "$work/overlays/"
  "$CHECKOV" -d "$work/overlays" --framework kubernetes --skip-download -o json \
    > "$work/checkov-k8s-overlays.json" 2> "$work/checkov-k8s-overlays.log" &
  pids+=($!); titles+=("k8s-overlays")
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || true   # exit code 1 = findings; the report decides
    local t="${titles[$i]}" json="$work/checkov-${titles[$i]}.json"
    if [[ ! -s "$json" ]]; then
      echo "    checkov $t produced no report:" >&2; cat "$work/checkov-$t.log" >&2; rc=1; continue
    fi
    checkov_report "checkov $t" "$json" || rc=1
  done
  return $rc
}
step "checkov: chart (--framework helm) x ${#values_sets[@]} values files, k8s overlays (--framework kubernetes)" run_checkov

echo "check-kubernetes: all checks passed in $((SECONDS - started)) s"
