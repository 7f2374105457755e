//! What a stream tells its driver and coordinator: events and the flush metrics.
//!
//! **Invariants**
//! - `Durable { next_offset }` values never decrease over a stream's life.
//! - A `Sealed` event is emitted only after the footer is durable (fsynced) and, unless
//!   it was already right, `current.sealed` points at the segment.

use super::StreamFailure;
use crate::SegmentId;
use crate::io::{DiskErrorKind, LocalPath};
use crate::names::StreamName;
use crate::segment::SegmentFooter;
use serde::Serialize;

/// Log target of stream events.
pub const LOG_TARGET_STREAM: &str = "aof2::stream";

/// A sealed segment, as the coordinator's `SealSegment` manifest record needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSegmentInfo {
    pub segment_id: SegmentId,
    pub base_offset: u64,
    /// The footer as written (record count, durable bytes, segment CRC, last ext_id,
    /// coordinator watermark, sealed time, flush-failure flag).
    pub footer: SegmentFooter,
    /// Found sealed by recovery rather than sealed in this run; the coordinator's
    /// `SealSegment` commit must be idempotent.
    pub recovered: bool,
}

impl SealedSegmentInfo {
    /// Offset after the segment's last record.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.footer.record_count
    }

    /// Bytes of the whole sealed file, footer included.
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        self.footer.durable_bytes + u64::from(crate::limits::SEGMENT_FOOTER_BYTES)
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The active segment appends now go to.
    pub segment_id: SegmentId,
    pub base_offset: u64,
    /// The next offset an append gets; every offset below it is durable.
    pub next_offset: u64,
    /// Torn-tail bytes cut from the newest segment.
    pub truncated_bytes: u64,
    /// Leftover `*.tmp` files removed.
    pub removed_temp_files: u32,
    /// The newest segment file was already sealed; a new active segment was opened
    /// after it.
    pub newest_was_sealed: bool,
    /// `current.sealed` was missing or stale and was published again.
    pub pointer_republished: bool,
    /// The `acknowledged` hint read from disk, if one decoded: every record reported
    /// durable before the crash is below it.
    pub acknowledged_hint: Option<u64>,
}

/// An event for the driver (log it under [`LOG_TARGET_STREAM`]) and the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Every offset below `next_offset` is durable: wake tail followers and writers
    /// waiting on durability or `WouldBlock(Flush)`. Consecutive ones coalesce.
    Durable { next_offset: u64 },
    /// A write or fsync of the active segment failed; the stream rewrites every
    /// non-durable byte from memory and fsyncs again (`retrying`), or is poisoned.
    FlushFailed {
        path: LocalPath,
        kind: DiskErrorKind,
        consecutive_failures: u32,
        retrying: bool,
    },
    /// A segment was sealed: footer durable, `current.sealed` published. The
    /// coordinator commits `SealSegment` and tells Tier 0.
    Sealed(SealedSegmentInfo),
    /// A new active segment file exists durably (temp, fsync, rename, directory fsync):
    /// the coordinator commits `SegmentOpened`; appends blocked on `Rollover` resume.
    SegmentOpened {
        segment_id: SegmentId,
        base_offset: u64,
        opened_at_ms: u64,
    },
    /// Recovery finished; the stream accepts appends.
    Recovered(RecoveryReport),
    /// The stream failed for good (until recovered); appends are refused.
    Poisoned(StreamFailure),
}

impl StreamEvent {
    /// The structured event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Durable { .. } => "stream_durable",
            StreamEvent::FlushFailed { .. } => "stream_flush_failed",
            StreamEvent::Sealed(_) => "stream_segment_sealed",
            StreamEvent::SegmentOpened { .. } => "stream_segment_opened",
            StreamEvent::Recovered(_) => "stream_recovered",
            StreamEvent::Poisoned(_) => "stream_poisoned",
        }
    }

    /// Emits the event to `tracing` under [`LOG_TARGET_STREAM`], with the stream's
    /// name: `stream_durable` at DEBUG (one per flush), `stream_flush_failed` at WARN,
    /// `stream_poisoned` at ERROR, the rest at INFO.
    pub fn log(&self, stream: &StreamName) {
        const T: &str = LOG_TARGET_STREAM;
        match self {
            StreamEvent::Durable { next_offset } => {
                tracing::debug!(target: T, stream = %stream, next_offset, "stream_durable");
            }
            StreamEvent::FlushFailed {
                path,
                kind,
                consecutive_failures,
                retrying,
            } => tracing::warn!(
                target: T,
                stream = %stream, path = %path, kind = ?kind, consecutive_failures, retrying,
                "stream_flush_failed"
            ),
            StreamEvent::Sealed(info) => tracing::info!(
                target: T,
                stream = %stream,
                segment_id = info.segment_id.0,
                base_offset = info.base_offset,
                record_count = info.footer.record_count,
                durable_bytes = info.footer.durable_bytes,
                recovered = info.recovered,
                "stream_segment_sealed"
            ),
            StreamEvent::SegmentOpened {
                segment_id,
                base_offset,
                opened_at_ms,
            } => tracing::info!(
                target: T,
                stream = %stream, segment_id = segment_id.0, base_offset, opened_at_ms,
                "stream_segment_opened"
            ),
            StreamEvent::Recovered(report) => tracing::info!(
                target: T,
                stream = %stream,
                segment_id = report.segment_id.0,
                next_offset = report.next_offset,
                truncated_bytes = report.truncated_bytes,
                removed_temp_files = report.removed_temp_files,
                newest_was_sealed = report.newest_was_sealed,
                pointer_republished = report.pointer_republished,
                acknowledged_hint = ?report.acknowledged_hint,
                "stream_recovered"
            ),
            StreamEvent::Poisoned(failure) => tracing::error!(
                target: T,
                stream = %stream, reason = %failure,
                "stream_poisoned"
            ),
        }
    }
}

/// Flush metrics, as in the runbook's monitoring checklist: any non-zero
/// `flush_failures` or `metadata_failures` requires intervention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FlushMetricsSnapshot {
    /// Failed writes or fsyncs of segment data, since start.
    pub flush_failures: u64,
    /// Failed metadata steps (pointer file, segment creation, rename, directory sync).
    pub metadata_failures: u64,
    /// Rewrites of non-durable bytes after a failed flush.
    pub flush_retry_attempts: u64,
    /// Appended bytes not yet durable.
    pub backlog_bytes: u64,
    /// Successful fsyncs of segment data.
    pub flushes: u64,
    /// Every offset below this is durable.
    pub durable_next_offset: u64,
    /// The offset the next append gets.
    pub next_offset: u64,
    /// Segments sealed in this run.
    pub segments_sealed: u64,
    /// Torn-tail bytes recovery cut off.
    pub torn_tail_bytes_truncated: u64,
    /// Whether the stream is poisoned.
    pub poisoned: bool,
}
