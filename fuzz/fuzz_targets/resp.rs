#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockloop::codec::fuzz::resp(data));
