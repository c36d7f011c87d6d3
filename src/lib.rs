//! ml-api: fast, operable ONNX model serving for Kubernetes.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod datasets;
pub mod drift;
pub mod fuzz;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod jobs;
pub mod lambda;
pub mod log_writer;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod onnx_import;
pub mod quota;
pub mod redis_link;
pub mod registry;
pub mod serving;
pub mod shadow;
pub mod shutdown;
pub mod spans;
pub mod startup;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;
pub mod training;
pub mod worker;
