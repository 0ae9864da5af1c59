//! Fuzzes `postern::fuzzing::tunnel_hello` (see its documentation for the oracles).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::fuzzing::tunnel_hello(data));
