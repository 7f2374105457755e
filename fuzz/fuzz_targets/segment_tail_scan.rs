//! Fuzz target: see `aof2_fuzz::segment_tail_scan`.
//!
//! **Invariants checked**: see `aof2_fuzz::segment_tail_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aof2_fuzz::segment_tail_scan(data));
