//! What a stream's callers get back: append, read and recovery errors, and the sticky
//! failure that poisons a stream.
//!
//! **Invariants**
//! - `WouldBlock` is the only retryable case; every other variant is bad input, a
//!   failure that sticks until the stream is recovered, or corruption that names the
//!   file and the byte position.

use super::IoStep;
use crate::SegmentId;
use crate::backpressure::{BackpressureKind, WouldBlock};
use crate::io::{DiskErrorKind, LocalPath};
use crate::pointer::{PointerError, SealedPointer};
use crate::segment::{SegmentError, StoredRecord};
use thiserror::Error;

/// Why an append (or a `seal`/`flush` request) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Normal backpressure: `Rollover` while a seal and the next segment's creation
    /// are in flight; `Flush` while the backlog is at `max_unflushed_bytes` or a failed
    /// flush is being rewritten. Retry after the matching event (`SegmentOpened`,
    /// `Durable`).
    #[error(transparent)]
    WouldBlock(#[from] WouldBlock),
    /// The payload is larger than `record_payload_bytes_max`.
    #[error(
        "record payload of {size} bytes exceeds the limit of {limit} bytes \
         (stream.record_payload_bytes_max)"
    )]
    RecordTooLarge { size: u64, limit: u32 },
    /// The stream failed and refuses writes until it is dropped and recovered.
    #[error("stream is poisoned and refuses writes until it is recovered: {0}")]
    Poisoned(StreamFailure),
    /// Recovery has not finished; appends are accepted after the `Recovered` event.
    #[error("stream is recovering: appends are accepted after the Recovered event")]
    Recovering,
    /// The next offset would be `u64::MAX`, which is never a record offset.
    #[error("stream offsets are exhausted: offset {next_offset} cannot be assigned")]
    OffsetsExhausted { next_offset: u64 },
}

impl AppendError {
    /// The backpressure kind, if this is a `WouldBlock`.
    #[must_use]
    pub fn would_block(&self) -> Option<BackpressureKind> {
        match self {
            AppendError::WouldBlock(would_block) => Some(would_block.kind()),
            _ => None,
        }
    }
}

/// The answer to [`super::StreamMachine::read_active`] when it is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The record, durable.
    Ready(StoredRecord),
    /// `WouldBlock(Tail)`: the record is not durable yet (appended, or the next one to
    /// be appended). Wait for a `Durable` event.
    WouldBlock(WouldBlock),
}

/// Why [`super::StreamMachine::read_active`] cannot serve an offset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The record lives in an older, sealed segment: read it through Tier 0/1/2.
    #[error(
        "offset {offset} is before the active segment (base offset {base_offset}): \
         read it from its sealed segment"
    )]
    BeforeActiveSegment { offset: u64, base_offset: u64 },
    /// Beyond the next offset to be appended: never appended.
    #[error("offset {offset} was never appended (the next offset is {next_offset})")]
    OutOfRange { offset: u64, next_offset: u64 },
    /// No active segment yet.
    #[error("stream is recovering: reads are served after the Recovered event")]
    Recovering,
    /// The record is not durable and never will be in this run of the stream.
    #[error("offset {offset} is not durable and the stream is poisoned: {failure}")]
    Poisoned { offset: u64, failure: StreamFailure },
}

/// What [`super::StreamMachine::seal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealOutcome {
    /// A rollover started; `Sealed` and `SegmentOpened` events follow.
    Started,
    /// A rollover was already in flight.
    InProgress,
    /// The active segment holds no record: nothing to seal.
    Empty,
}

/// Why a stream stopped: sticky until the stream is dropped and recovered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamFailure {
    /// Writing or fsyncing the active segment failed `flush_max_retries + 1` times in a
    /// row (each retry rewrote every non-durable byte from memory, then fsynced).
    #[error(
        "flushing {path} failed {failures} times in a row (last error {kind:?}); \
         stream.flush_max_retries = {max_retries}"
    )]
    FlushRetriesExhausted {
        path: LocalPath,
        failures: u32,
        max_retries: u32,
        kind: DiskErrorKind,
    },
    /// A metadata step (pointer file, segment creation, rename, directory sync) failed.
    #[error("{step} ({path}) failed: {kind:?}")]
    Metadata {
        step: IoStep,
        path: LocalPath,
        kind: DiskErrorKind,
    },
    /// Recovery could not bring the stream up.
    #[error("recovery failed: {0}")]
    Recovery(RecoveryError),
    /// The active segment has the largest usable id: no segment can follow it.
    #[error("segment file {path} has the largest usable segment id: no segment can follow it")]
    SegmentIdsExhausted { path: LocalPath },
}

/// Why recovery failed. Corruption names the file and the byte position so the
/// coordinator can repair the segment from Tier 2 (or an operator can look at it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A disk request failed.
    #[error("{step} ({path}) failed: {kind:?}")]
    Io {
        step: IoStep,
        path: LocalPath,
        kind: DiskErrorKind,
    },
    /// A segment file does not verify: bad header or footer, a bad record followed by
    /// valid ones, offsets not dense, acknowledged records missing, too large.
    #[error("segment file {path} is corrupt at byte {position}: {source}")]
    CorruptSegment {
        path: LocalPath,
        position: u64,
        #[source]
        source: SegmentError,
    },
    /// The `current.sealed` pointer file does not decode.
    #[error("pointer file {path} is corrupt at byte {position}: {source}")]
    CorruptPointer {
        path: LocalPath,
        position: u64,
        #[source]
        source: PointerError,
    },
    /// A segment file's header names another segment than its file name.
    #[error("segment file {path}: its header says segment {found}, its name says {expected}")]
    SegmentIdMismatch {
        path: LocalPath,
        expected: SegmentId,
        found: SegmentId,
    },
    /// The newest segment does not start where the one before it ends.
    #[error(
        "segment file {path} starts at offset {base_offset}, but the previous segment \
         {previous_path} ends before offset {previous_next_offset}: offsets are not dense"
    )]
    NotDenseAcrossSegments {
        path: LocalPath,
        base_offset: u64,
        previous_path: LocalPath,
        previous_next_offset: u64,
    },
    /// `current.sealed` contradicts the segment files (it is written only after the
    /// footer it describes is durable, so this is lost or corrupt data).
    #[error(
        "pointer file {path} says segment {} is sealed with {} durable bytes, but {reason}",
        pointer.segment_id, pointer.durable_bytes
    )]
    PointerDisagrees {
        path: LocalPath,
        pointer: SealedPointer,
        reason: &'static str,
    },
    /// A read returned fewer bytes than the file's length (the file changed under
    /// recovery, or the driver is broken).
    #[error("reading {path} returned {read_bytes} of its {expected_bytes} bytes")]
    ShortRead {
        path: LocalPath,
        expected_bytes: u64,
        read_bytes: u64,
    },
    /// The newest segment id is `u64::MAX`: no segment can follow it.
    #[error("segment file {path} has the largest segment id: no segment can follow it")]
    SegmentIdsExhausted { path: LocalPath },
}

impl RecoveryError {
    /// The file the error is about.
    #[must_use]
    pub fn path(&self) -> &LocalPath {
        match self {
            RecoveryError::Io { path, .. }
            | RecoveryError::CorruptSegment { path, .. }
            | RecoveryError::CorruptPointer { path, .. }
            | RecoveryError::SegmentIdMismatch { path, .. }
            | RecoveryError::NotDenseAcrossSegments { path, .. }
            | RecoveryError::PointerDisagrees { path, .. }
            | RecoveryError::ShortRead { path, .. }
            | RecoveryError::SegmentIdsExhausted { path } => path,
        }
    }

    /// The byte position in [`RecoveryError::path`] the error is about, for corruption.
    #[must_use]
    pub fn position(&self) -> Option<u64> {
        match self {
            RecoveryError::CorruptSegment { position, .. }
            | RecoveryError::CorruptPointer { position, .. } => Some(*position),
            _ => None,
        }
    }
}
