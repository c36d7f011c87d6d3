#![no_main]
//! See `ml_api::fuzz::onnx_import`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ml_api::fuzz::onnx_import(data));
