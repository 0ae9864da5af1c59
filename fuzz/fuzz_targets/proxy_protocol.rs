//! Fuzzes `postern::fuzzing::proxy_protocol` (see its documentation for the oracles).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::fuzzing::proxy_protocol(data));
