//! One integration-test binary: every test starts the real server on a random port.

mod batching;
mod child;
mod cluster;
mod contract;
mod datasets;
mod edge;
mod grpc;
mod helpers;
mod import;
mod lambda;
mod nginx;
mod operations;
mod predict;
mod process;
mod quotas;
mod rate_limit;
mod redis_server;
mod registry;
mod replicas;
mod sentinel;
mod shadow;
mod training_api;
mod upload;
mod v2;
mod validation;
mod worker;
