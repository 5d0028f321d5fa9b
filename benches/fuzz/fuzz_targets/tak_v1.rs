#![no_main]
//! See `bluelight_fuzz::tak_v1`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::tak_v1(data));
