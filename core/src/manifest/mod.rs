//! The manifest log: a checksummed, chunked record of every tier transition of a
//! stream, replayed on restart; snapshots bound the replay.
//!
//! - [`record`]: the sixteen record types, their payloads and the record frame.
//! - [`chunk`]: the chunk file layout (two header slots, then record frames).
//! - [`writer`]: the sans-IO chunk writer (append, commit, rotate).
//! - [`replay`]: rebuilds a [`index::ManifestIndex`] from chunks and snapshots.
//! - [`index`]: per-segment state derived from the records.
//! - [`snapshot`]: the snapshot file format.

pub mod chunk;
pub mod index;
pub mod record;
pub mod replay;
pub mod snapshot;
pub mod writer;
