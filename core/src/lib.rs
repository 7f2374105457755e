//! # aof2-core
//!
//! The sans-IO heart of AOF2, an embeddable tiered append-only log store: binary
//! formats and the state machines that drive segments through the tiers.
//!
//! Nothing in this crate does IO, reads a clock, sleeps, spawns, locks or draws
//! randomness (`clippy.toml` enforces it). Time is an argument (`now_ms`); IO is an
//! output ([`io::DiskRequest`]) whose result comes back as an input.
//!
//! **Invariants**
//! - Bad bytes from disk or network decode to an error value, never a panic.
//! - A panic means a broken internal invariant, i.e. a bug.
//!
//! Modules:
//! - [`codec`]: shared encoding conventions, [`codec::DecodeError`].
//! - [`limits`]: every named limit and how they relate.
//! - [`io`]: IO requests and completions as data.
//! - [`cpu`]: runs compression jobs (pure functions, shared by every driver).
//! - [`driver`]: the one async loop that pumps a machine against port traits.
//! - [`memory_ports`]: plain in-memory ports without faults (tests; feature
//!   `memory-ports`).
//! - [`segment`]: segment file format and the tail scanner.
//! - [`pointer`](mod@pointer): the `current.sealed` pointer file.
//! - [`artifact`]: the seekable zstd artifact of a sealed segment (Tier 1 and Tier 2).
//! - [`manifest`]: manifest records, chunks, the chunk writer, replay, snapshots.
//! - [`backpressure`]: [`backpressure::BackpressureKind`] and `WouldBlock`.
//! - [`retry`]: `RetryPolicy` with exponential backoff and a deterministic RNG.
//! - [`names`]: validated stream names, object keys and local paths.
//! - [`tier0`]: the Tier 0 hot cache (budget, LRU, pins, activation queue).
//! - [`tier1`]: the Tier 1 warm cache (compression, artifact budget, hydration, residency).
//! - [`tier2`]: Tier 2 upload/delete/fetch queues with retries, and retention.
//! - [`stream`]: one stream's active segment: appends, group commit, flush, rollover,
//!   hot-tail reads, crash recovery.
//! - [`store`]: the coordinator composing streams, manifests and tiers into one
//!   [`driver::Machine`].

#![deny(unsafe_code)]

pub mod ack_hint;
pub mod artifact;
pub mod backpressure;
pub mod codec;
pub mod cpu;
pub mod driver;
pub mod io;
pub mod limits;
pub mod manifest;
#[cfg(any(test, feature = "memory-ports"))]
pub mod memory_ports;
pub mod names;
pub mod pointer;
pub mod retry;
pub mod segment;
pub mod store;
pub mod stream;
pub mod tier0;
pub mod tier1;
pub mod tier2;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a segment within its stream. Segment ids grow by one per rollover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}", self.0)
    }
}
