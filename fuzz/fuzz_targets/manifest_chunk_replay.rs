//! Fuzz target: see `aof2_fuzz::manifest_chunk_replay`.
//!
//! **Invariants checked**: see `aof2_fuzz::manifest_chunk_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aof2_fuzz::manifest_chunk_replay(data));
