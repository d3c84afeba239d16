#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| authgate::fuzzing::cookie_header(data));
