#![no_main]
//! See `ml_api::fuzz::multipart_upload`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ml_api::fuzz::multipart_upload(data));
