//! # aof2-io-sim
//!
//! The simulated ports of AOF2: a disk with a crash model and an object store with
//! fault injection, driven by a seeded deterministic runtime. The ports arrive with the
//! simulator work; the crate exists now so the workspace has its final shape.

#![deny(unsafe_code)]

pub use aof2_core as core;
