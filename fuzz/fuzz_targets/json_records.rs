#![no_main]
//! See `ml_api::fuzz::json_records`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ml_api::fuzz::json_records(data));
