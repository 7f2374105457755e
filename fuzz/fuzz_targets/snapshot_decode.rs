//! Fuzz target: see `aof2_fuzz::snapshot_decode`.
//!
//! **Invariants checked**: see `aof2_fuzz::snapshot_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aof2_fuzz::snapshot_decode(data));
