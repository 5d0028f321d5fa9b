#![no_main]
//! See `bluelight_fuzz::lip`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::lip(data));
