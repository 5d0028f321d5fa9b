#![no_main]
//! See `bluelight_fuzz::ws_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::ws_request(data));
