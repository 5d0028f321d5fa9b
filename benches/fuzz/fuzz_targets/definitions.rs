#![no_main]
//! See `bluelight_fuzz::definitions`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::definitions(data));
