//! Fuzzes `postern::fuzzing::socks5` (see its documentation for the oracles).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::fuzzing::socks5(data));
