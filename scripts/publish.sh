#!/usr/bin/env bash
# Builds the ml-api image and the Helm chart, and pushes both to a team's own registries, so the
# chart's defaults point at an image that exists:
#
#   scripts/publish.sh image          docker/podman build -t $IMAGE:$TAG . (the repo's Dockerfile)
#   scripts/publish.sh push-image     ... and push it
#   scripts/publish.sh package        helm package helm/ml-api -> .run/charts/ml-api-<version>.tgz
#                                     (lint --strict first; the chart's README, schema and LICENSE
#                                     go in the package)
#   scripts/publish.sh push-chart     ... and helm push it to $CHART_REPO (oci://...)
#   scripts/publish.sh all            push-image + push-chart
#
#   IMAGE       image repository, e.g. registry.example.com/ml/ml-api (default: ml-api)
#   TAG         image tag (default: the chart's appVersion)
#   CHART_REPO  OCI repository of the chart, e.g. oci://registry.example.com/charts
#   ENGINE      docker or podman (default: the first one found)
# Log in first (`docker login`, `helm registry login`). Then install with
#   helm install ml-api $CHART_REPO/ml-api --version <chart version> --set image.repository=$IMAGE
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/ml-api
chart_field() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" "$CHART/Chart.yaml"; }
APP_VERSION="$(chart_field appVersion)"
CHART_VERSION="$(chart_field version)"
IMAGE="${IMAGE:-ml-api}"
TAG="${TAG:-$APP_VERSION}"
OUT=.run/charts

engine() {
  if [[ -n "${ENGINE:-}" ]]; then echo "$ENGINE"; return; fi
  local e
  for e in docker podman; do command -v "$e" >/dev/null 2>&1 && { echo "$e"; return; }; done
  echo "publish: no docker or podman on PATH (set ENGINE)" >&2; exit 1
}

helm_bin() {
  if command -v helm >/dev/null 2>&1; then command -v helm; return; fi
  scripts/install-k8s-tools.sh
  echo "$PWD/.tools/k8s/bin/helm"
}

build_image() {
  local e; e="$(engine)"
  echo "publish: $e build -t $IMAGE:$TAG ."
  DOCKER_BUILDKIT=1 "$e" build -t "$IMAGE:$TAG" .
}

push_image() {
  build_image
  local e; e="$(engine)"
  "$e" push "$IMAGE:$TAG"
  echo "publish: pushed $IMAGE:$TAG (pin it in values with image.digest: $e inspect --format '{{index .RepoDigests 0}}' $IMAGE:$TAG)"
}

package_chart() {
  local helm; helm="$(helm_bin)"
  mkdir -p "$OUT"
  "$helm" lint --strict "$CHART" --set secrets.allowGeneratedWithoutLookup=true >/dev/null
  cp LICENSE "$CHART/LICENSE"
  trap 'rm -f "$CHART/LICENSE"' RETURN
  "$helm" package "$CHART" --destination "$OUT" >/dev/null
  echo "publish: $OUT/ml-api-$CHART_VERSION.tgz"
}

push_chart() {
  [[ "${CHART_REPO:-}" == oci://* ]] || { echo "publish: set CHART_REPO=oci://registry/path" >&2; exit 2; }
  package_chart
  "$(helm_bin)" push "$OUT/ml-api-$CHART_VERSION.tgz" "$CHART_REPO"
  echo "publish: helm install ml-api $CHART_REPO/ml-api --version $CHART_VERSION --set image.repository=$IMAGE"
}

case "${1:-}" in
  image) build_image ;;
  push-image) push_image ;;
  package) package_chart ;;
  push-chart) push_chart ;;
  all) push_image; push_chart ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
