#![no_main]
//! See `bluelight_fuzz::fix_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::fix_json(data));
