#![no_main]
//! See `bluelight_fuzz::fix_flatbuffers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::fix_flatbuffers(data));
