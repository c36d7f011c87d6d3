#![no_main]
//! See `ml_api::fuzz::v2_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ml_api::fuzz::v2_request(data));
