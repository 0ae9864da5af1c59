//! Fuzzes `postern::fuzzing::oauth_inputs` (see its documentation for the oracles).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::fuzzing::oauth_inputs(data));
