#![no_main]
//! See `ml_api::fuzz::training_csv`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ml_api::fuzz::training_csv(data));
