//! Build-time inputs: the git revision for `ml_api_build_info` (left "unknown" outside a git
//! checkout), the ONNX protobuf types generated from the vendored `proto/onnx-ml.proto`, and
//! the gRPC service generated from the vendored `proto/grpc_predict_v2.proto`.
use std::process::Command;

fn main() {
    record_git_revision();
    generate_onnx_types();
    generate_grpc_service();
}

fn record_git_revision() {
    println!("cargo:rerun-if-env-changed=ML_API_GIT_REVISION");
    // A container build has no .git: it passes the revision in (`--build-arg REVISION`).
    if let Some(revision) = std::env::var("ML_API_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
    {
        println!("cargo:rustc-env=ML_API_GIT_REVISION={revision}");
        return;
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ML_API_GIT_REVISION={revision}");
    // Watch the checkout only where there is one: a missing path would rebuild every time.
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The ONNX protobuf types (`$OUT_DIR/onnx.rs`, included by src/training/onnx.rs), generated
/// from the vendored `proto/onnx-ml.proto`. protox parses it in Rust: no system `protoc`.
fn generate_onnx_types() {
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");
    let descriptors = protox::compile(["onnx-ml.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/onnx-ml.proto does not parse: {e}"));
    prost_build::Config::new()
        // Tensor bytes borrow the decoded buffer instead of being copied.
        .bytes(["."])
        // The schema's comments hold indented text that rustdoc would run as doctests.
        .disable_comments(["."])
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("cannot generate the ONNX types: {e}"));
}

/// The Open Inference Protocol's gRPC messages, server and client (`$OUT_DIR/inference.rs`,
/// included by src/grpc/mod.rs) and their encoded descriptor set for server reflection
/// (`$OUT_DIR/inference_descriptor.bin`), from the vendored `proto/grpc_predict_v2.proto`.
/// protox parses it in Rust: no system `protoc`.
fn generate_grpc_service() {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let mut compiler =
        protox::Compiler::new(["proto"]).unwrap_or_else(|e| panic!("cannot read proto/: {e}"));
    compiler
        .include_imports(true)
        .open_files(["grpc_predict_v2.proto"])
        .unwrap_or_else(|e| panic!("proto/grpc_predict_v2.proto does not parse: {e}"));
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out_dir.join("inference_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .unwrap_or_else(|e| panic!("cannot write the gRPC descriptor set: {e}"));
    tonic_prost_build::configure()
        // Tensor bytes borrow the request's buffer instead of being copied.
        .bytes(".")
        // prost's codec, decoding each message from one contiguous buffer (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::ContiguousProstCodec")
        .compile_fds(compiler.file_descriptor_set())
        .unwrap_or_else(|e| panic!("cannot generate the gRPC service: {e}"));
}
