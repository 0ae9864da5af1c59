//! Fuzzes `postern::fuzzing::sync_frames` (see its documentation for the oracles).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::fuzzing::sync_frames(data));
