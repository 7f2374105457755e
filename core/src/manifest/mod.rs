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

pub use chunk::{
    ChunkError, ChunkFlags, DecodedChunk, SlotHeader, chunk_file_name, decode_chunk,
    parse_chunk_file_name,
};
pub use index::{ApplyOutcome, Lifecycle, ManifestIndex, Residency, SegmentEntry};
pub use record::{DecodedFrame, ManifestRecord, ReasonCode, RecordFrame, RecordType, Tier};
pub use replay::{ReplayError, ReplayFigures, ReplayOutcome, ReplayTail, Replayer};
pub use snapshot::{ManifestPosition, Snapshot, SnapshotError};
pub use writer::{
    ConfigError, IoFailure, ManifestError, ManifestEvent, ManifestWriter, ManifestWriterConfig,
    WriterOperation, WriterStart,
};
