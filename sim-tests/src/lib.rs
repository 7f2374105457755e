//! # aof2-sim-tests
//!
//! Seeded simulation scenarios of AOF2 and the runner that replays any seed. The
//! scenarios arrive with the simulator work.

#![deny(unsafe_code)]
