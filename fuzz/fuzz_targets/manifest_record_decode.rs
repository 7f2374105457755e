//! Fuzz target: manifest record frame decoding.
//!
//! **Invariants checked**: see `aof2_fuzz::manifest_record_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aof2_fuzz::manifest_record_decode(data));
