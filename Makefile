# ml-api — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ORT_VERSION ?= 1.31.1
ORT_DYLIB_PATH ?= $(CURDIR)/.ort/lib/libonnxruntime.so.$(ORT_VERSION)
export ORT_DYLIB_PATH
ADDR ?= 0.0.0.0:5001
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: ort
ort: ## Fetch the ONNX Runtime shared library from PyPI into .ort/lib (idempotent)
	@ORT_VERSION=$(ORT_VERSION) scripts/fetch-onnxruntime.sh .ort/lib

.PHONY: build
build: ort ## Build the release binary
	$(CARGO) build --release --locked

.PHONY: run
run: build ## Serve the bundled santander model on :5001 (embedded registry)
	$${CARGO_TARGET_DIR:-target}/release/ml-api serve --addr $(ADDR) --model-dir models --default-model santander

.PHONY: test-tools
test-tools: ## Install what the tests need (idempotent)
	@scripts/install-test-tools.sh

.PHONY: lint
lint: ## rustfmt and clippy, warnings denied
	$(CARGO) fmt --all -- --check
	scripts/check-module-graph.py
	$(CARGO) clippy --locked --all-targets -- -D warnings

.PHONY: test
test: ort test-tools lint ## Install test tools, lint, and run every test
	$(CARGO) build --locked --example bench_rate
	$(CARGO) test --locked --all-targets
	scripts/check-swagger-ui.sh
	scripts/check-openapi-conformance.sh
	scripts/check-v2-tritonclient.sh
	scripts/check-kubernetes.sh
	scripts/check-docker.sh
	scripts/check-observability.sh
	scripts/check-lifecycle-doc.sh
	scripts/loadtest.sh ci

.PHONY: openapi-explore
openapi-explore: ## schemathesis with a fresh random seed and 3000 examples per operation (the deep run; make test's run is derandomized)
	SCHEMATHESIS_MODE=explore scripts/check-openapi-conformance.sh

FUZZ_SECONDS ?= 600
.PHONY: fuzz
fuzz: ## cargo-fuzz every decoder of client bytes for FUZZ_SECONDS each (docs/fuzzing.md); make test replays the corpus
	scripts/fuzz.sh $(FUZZ_SECONDS)

.PHONY: k8s-check
k8s-check: ## Chart + k8s/: lint, render, schemas 1.30-1.35, checkov, drift
	scripts/check-kubernetes.sh

.PHONY: k8s-render
k8s-render: ## Regenerate k8s/ and the chart's copies of deploy/ (alerts, dashboards)
	scripts/render-k8s.sh

.PHONY: docker-check
docker-check: ort ## Dockerfile: hadolint, checkov, paths, runtime stage emulated (no Docker engine)
	scripts/check-docker.sh

.PHONY: observability-check
observability-check: ort ## deploy/: promtool rules and tests, dashboards, compose, nginx; real Prometheus vs ml-api
	scripts/check-observability.sh

.PHONY: lifecycle-check
lifecycle-check: ## Run docs/model-lifecycle.md's commands against a fresh ml-api and check the answers
	scripts/check-lifecycle-doc.sh

.PHONY: image
image: ## Build the ml-api image (docker or podman; IMAGE=repo TAG=tag, default ml-api:<appVersion>)
	scripts/publish.sh image

.PHONY: chart-package
chart-package: ## helm package the chart (lint --strict first) into .run/charts
	scripts/publish.sh package

.PHONY: publish
publish: ## Push the image and the chart to your registries (IMAGE=..., CHART_REPO=oci://...)
	scripts/publish.sh all

.PHONY: cluster-up
cluster-up: build ## Local replica of the Kubernetes topology on loopback (Redis, 2 replicas, worker, nginx, Prometheus)
	scripts/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster (by PID)
	scripts/cluster-down.sh

.PHONY: loadtest
loadtest: build ## k6 daily-1m.js against the local cluster; non-zero when a threshold fails
	scripts/loadtest.sh

.PHONY: lambda-package
lambda-package: build ## AWS Lambda zip (bootstrap + models + ONNX Runtime) in .run/lambda for deploy/lambda/template.yaml (SAM)
	scripts/lambda-package.sh

.PHONY: lambda-ab
lambda-ab: build test-tools ## A/B test: k6 mix vs 2 replicas behind nginx and vs Lambda instances under the emulator; see docs/k8s-vs-lambda.md
	scripts/lambda-ab.sh

.PHONY: bench
bench: ort ## Performance bar: ml-api vs a bare axum baseline (wrk, oha, h2load for gRPC), targets, criterion benches; BENCH_SCENARIOS=... for a subset; see docs/performance.md
	scripts/bench.sh

.PHONY: bench-train
bench-train: ort ## Training bar: ml-api from a data set vs pandas + scikit-learn (one thread), 100k x 50, 1M x 10, 10M x 20 on the fly; see docs/performance.md
	scripts/bench-train.sh

.PHONY: santander-api
santander-api: ort ## Train santander through the API from a Kaggle-layout CSV, serve it at /predict, compare with the skl2onnx pipeline
	scripts/santander-api.sh

.PHONY: model
model: ## Regenerate the bundled model, its card and golden outputs (Python tooling)
	scripts/python-venv.sh >/dev/null
	.tools/venv-model/bin/python models/santander/train.py
	.tools/venv-model/bin/python tests/fixtures/make_fixtures.py

.PHONY: clean
clean: ## Remove build outputs (keeps .ort and .tools)
	$(CARGO) clean
