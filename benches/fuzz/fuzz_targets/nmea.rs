#![no_main]
//! See `bluelight_fuzz::nmea`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bluelight_fuzz::nmea(data));
