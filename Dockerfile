# syntax=docker/dockerfile:1
#
# ml-api container image: one binary, two roles (`serve`, `worker`).
#
#   docker build -t ml-api:local .                       (BuildKit: cache mounts below)
#   docker run --rm -p 5001:5001 --read-only --tmpfs /tmp ml-api:local
#   docker run --rm ml-api:local worker --registry redis --redis-url redis://redis:6379
#
# Builder: the release binary, plus ONNX Runtime fetched exactly as `make run` does
# (scripts/fetch-onnxruntime.sh: the official `onnxruntime` wheel from PyPI).
# Runtime: distroless cc (glibc, libstdc++, libgcc; no shell, no package manager), running as
# the numeric non-root user 65532. Nothing is written outside /tmp, so the root filesystem
# can be mounted read-only. scripts/check-docker.sh lints this file and checks its paths.

ARG RUST_VERSION=1.95
ARG ORT_VERSION=1.31.1

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG ORT_VERSION
# The build context has no .git: the revision for ml_api_build_info comes in as a build arg.
ARG REVISION=unknown
ENV ML_API_GIT_REVISION=${REVISION}
# pip is what scripts/fetch-onnxruntime.sh downloads the onnxruntime wheel with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip=23.0.1+dfsg-1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build

# ONNX Runtime first: it changes far less often than the sources.
COPY scripts/fetch-onnxruntime.sh scripts/fetch-onnxruntime.sh
RUN --mount=type=cache,target=/root/.cache/pip \
    ORT_VERSION="${ORT_VERSION}" scripts/fetch-onnxruntime.sh /out/lib

COPY Cargo.toml Cargo.lock build.rs ./
# build.rs generates the ONNX protobuf types from proto/onnx-ml.proto.
COPY proto proto
COPY src src
COPY benches benches
# target/ is a cache mount, so the binary is copied out within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin ml-api \
 && install -D -m 0755 target/release/ml-api /out/bin/ml-api

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG ORT_VERSION
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ml-api" \
      org.opencontainers.image.description="Fast, operable ONNX model serving for Kubernetes: predictor replicas (serve) and training workers (worker)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/bin/ml-api /usr/local/bin/ml-api
COPY --from=builder /out/lib/libonnxruntime.so.${ORT_VERSION} /out/lib/libonnxruntime_providers_shared.so /usr/lib/ml-api/
COPY models/santander/model.onnx models/santander/card.json /usr/share/ml-api/models/santander/

ENV ORT_DYLIB_PATH=/usr/lib/ml-api/libonnxruntime.so.${ORT_VERSION} \
    ML_API_MODEL_DIR=/usr/share/ml-api/models \
    ML_API_LOG_FORMAT=json

USER 65532:65532
# 5001: `serve` (API, /healthz, /readyz, /metrics). 8001: `serve`'s gRPC (Open Inference
# Protocol, grpc.health.v1). 9091: `worker` (/healthz, /metrics).
EXPOSE 5001 8001 9091
# No HEALTHCHECK: distroless has no shell or HTTP client to run one, and the orchestrator
# probes /healthz and /readyz itself (Kubernetes probes; see deploy/docker-compose.yml).
# checkov:skip=CKV_DOCKER_2: distroless has no shell/curl for a HEALTHCHECK; Kubernetes probes /healthz and /readyz
ENTRYPOINT ["/usr/local/bin/ml-api"]
CMD ["serve"]
