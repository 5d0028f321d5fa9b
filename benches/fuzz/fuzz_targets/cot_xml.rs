#![no_main]
//! See `bluelight_fuzz::cot_xml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::cot_xml(data));
