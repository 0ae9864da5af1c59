//! Fuzzes `postern::fuzzing::connect_head` (see its documentation for the oracles).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::fuzzing::connect_head(data));
