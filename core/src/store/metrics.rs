//! The store's metrics snapshot ([`StoreMetrics`]): the three tiers' own snapshots and,
//! per open stream, its flush figures, offsets, segments by residency, manifest
//! position, snapshot, retention and replay figures. Field names follow the runbook
//! (`Tier0MetricsSnapshot`, `Tier1MetricsSnapshot`, `Tier2MetricsSnapshot`,
//! `FlushMetricsSnapshot`, `snapshot_id`, `chunk_index`, `chunk_offset`,
//! `manifest.replay_version`, the `aof_manifest_replay_*` figures). It serialises to
//! the JSON that `aof2-admin dump` prints.
//!
//! **Invariants**
//! - A snapshot is read-only: taking one changes nothing in the store.
//! - Per stream, the residency counts add up to `segments.total`, which is the number
//!   of segments the manifest index holds.

use super::Phase;
use crate::manifest::chunk::CHUNK_VERSION;
use crate::manifest::index::Residency;
use crate::manifest::replay::ReplayFigures;

use crate::store::Store;
use crate::stream::FlushMetricsSnapshot;
use crate::tier0::Tier0MetricsSnapshot;
use crate::tier1::Tier1MetricsSnapshot;
use crate::tier2::Tier2MetricsSnapshot;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// Everything the store can say about itself at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreMetrics {
    pub tier0: Tier0MetricsSnapshot,
    pub tier1: Tier1MetricsSnapshot,
    pub tier2: Tier2MetricsSnapshot,
    /// The read path: hot, sealed and cold reads, hydrations, prefetches, waiters.
    pub reads: super::ReadMetricsSnapshot,
    /// Every open stream, by name.
    pub streams: BTreeMap<String, StreamMetrics>,
}

/// One open stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamMetrics {
    pub flush: FlushMetricsSnapshot,
    /// Every offset below this is durable.
    pub durable_next_offset: u64,
    /// The offset the next append gets.
    pub next_offset: u64,
    /// The first offset still readable: retention deleted everything below it.
    pub start_offset: u64,
    /// Segments the manifest index holds, by residency.
    pub segments: SegmentCounts,
    pub manifest: ManifestFigures,
    pub retention: RetentionFigures,
    pub snapshots: SnapshotFigures,
    /// What the replay that recovered the stream found; `None` for a stream created
    /// by this store (nothing was replayed).
    #[serde(serialize_with = "serialize_replay")]
    pub replay: Option<ReplayFigures>,
}

/// Segments by residency (the runbook's residency gauge, from the manifest index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SegmentCounts {
    pub resident_in_tier0: u64,
    pub staged_for_tier0: u64,
    pub resident_in_tier1: u64,
    pub uploaded_to_tier2: u64,
    /// Alert if non-zero for five minutes.
    pub needs_recovery: u64,
    pub total: u64,
}

/// Where the stream's manifest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ManifestFigures {
    /// The ordinal the next record gets.
    pub next_ordinal: u64,
    /// The newest durable record, if any.
    pub durable_ordinal: Option<u64>,
    /// The chunk holding the newest durable record, and the byte just past it.
    pub chunk_index: Option<u64>,
    pub chunk_offset: Option<u64>,
    /// The manifest chunk format version this build writes and replays
    /// (`manifest.replay_version` in the runbook).
    pub replay_version: u16,
    /// Sealed chunk files still on local disk.
    pub local_chunks: u64,
    /// The latest completed snapshot, and the position it covers.
    pub snapshot_id: Option<u64>,
    pub snapshot_chunk_index: Option<u64>,
    pub snapshot_chunk_offset: Option<u64>,
    pub snapshot_record_ordinal: Option<u64>,
}

/// Retention since the store started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionFigures {
    /// Segments deleted from every tier (`Tier2Deleted` journaled).
    pub segments_deleted: u64,
    /// Tier 2 bytes of those segments.
    pub bytes_deleted: u64,
    /// Deletions under way (queued, not yet deleted from Tier 2, not abandoned).
    pub deletes_pending: u64,
    /// Tier 2 deletes that ended in `tier2_delete_failed` (each is retried).
    pub delete_failures: u64,
    /// Deletes given up after `STORE_UPKEEP_ROUNDS_MAX` failed rounds.
    pub deletes_abandoned: u64,
}

/// Snapshots and manifest chunk copies since the store started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SnapshotFigures {
    /// Snapshots completed (marker committed).
    pub snapshots_taken: u64,
    /// Snapshots that failed at some step (no marker journaled).
    pub snapshot_failures: u64,
    /// Sealed chunks uploaded to Tier 2.
    pub manifest_chunks_uploaded: u64,
    /// Local chunk files removed after their Tier 2 copy and a later snapshot.
    pub manifest_chunks_removed: u64,
    /// Failed reads, uploads or removals of chunks (each is retried).
    pub manifest_chunk_failures: u64,
}

/// The replay figures under the runbook's metric names.
#[derive(Serialize)]
struct ReplayFiguresJson {
    /// `aof_manifest_replay_chunk_lag_seconds`.
    chunk_lag_seconds: f64,
    chunk_lag_ms: u64,
    /// `aof_manifest_replay_journal_lag_bytes`.
    journal_lag_bytes: u64,
    /// `aof_manifest_replay_chunk_count`.
    chunk_count: u64,
    /// `aof_manifest_replay_corruption_events`.
    corruption_events: u64,
    unknown_records_skipped: u64,
    records_applied: u64,
    records_covered_by_snapshot: u64,
}

fn serialize_replay<S: Serializer>(
    replay: &Option<ReplayFigures>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    replay
        .map(|figures| ReplayFiguresJson {
            chunk_lag_seconds: figures.chunk_lag_seconds(),
            chunk_lag_ms: figures.chunk_lag_ms,
            journal_lag_bytes: figures.journal_lag_bytes,
            chunk_count: figures.chunk_count,
            corruption_events: figures.corruption_events,
            unknown_records_skipped: figures.unknown_records_skipped,
            records_applied: figures.records_applied,
            records_covered_by_snapshot: figures.records_covered_by_snapshot,
        })
        .serialize(serializer)
}

impl Store {
    /// The metrics snapshot. Cost: one pass over every open stream's index.
    #[must_use]
    pub fn metrics(&self) -> StoreMetrics {
        let mut streams = BTreeMap::new();
        for (name, entry) in &self.streams {
            let Phase::Ready {
                stream,
                manifest,
                index,
            } = &entry.phase
            else {
                continue;
            };
            let mut segments = SegmentCounts::default();
            for (residency, count) in index.residency_counts() {
                *match residency {
                    Residency::ResidentInTier0 => &mut segments.resident_in_tier0,
                    Residency::StagedForTier0 => &mut segments.staged_for_tier0,
                    Residency::ResidentInTier1 => &mut segments.resident_in_tier1,
                    Residency::UploadedToTier2 => &mut segments.uploaded_to_tier2,
                    Residency::NeedsRecovery => &mut segments.needs_recovery,
                } += count;
                segments.total += count;
            }
            assert_eq!(segments.total, index.segments().len() as u64);
            let position = manifest.durable_position();
            let snapshot = entry.snapshots.last;
            let metrics = StreamMetrics {
                flush: stream.metrics(),
                durable_next_offset: stream.durable_next_offset(),
                next_offset: stream.next_offset().unwrap_or(stream.durable_next_offset()),
                start_offset: entry
                    .retention
                    .start_offset()
                    .max(super::read::start_offset_of(index)),
                segments,
                manifest: ManifestFigures {
                    next_ordinal: manifest.next_ordinal(),
                    durable_ordinal: manifest.durable_ordinal(),
                    chunk_index: position.map(|p| p.chunk_index),
                    chunk_offset: position.map(|p| p.chunk_offset),
                    replay_version: CHUNK_VERSION,
                    local_chunks: entry.snapshots.local_chunks(),
                    snapshot_id: snapshot.map(|s| s.snapshot_id),
                    snapshot_chunk_index: snapshot.map(|s| s.position.chunk_index),
                    snapshot_chunk_offset: snapshot.map(|s| s.position.chunk_offset),
                    snapshot_record_ordinal: snapshot.map(|s| s.position.record_ordinal),
                },
                retention: RetentionFigures {
                    segments_deleted: entry.retention.segments_deleted,
                    bytes_deleted: entry.retention.bytes_deleted,
                    deletes_pending: entry.retention.deletes_pending(),
                    delete_failures: entry.retention.delete_failures,
                    deletes_abandoned: entry.retention.deletes_abandoned,
                },
                snapshots: SnapshotFigures {
                    snapshots_taken: entry.snapshots.snapshots_taken,
                    snapshot_failures: entry.snapshots.snapshot_failures,
                    manifest_chunks_uploaded: entry.snapshots.chunks_uploaded,
                    manifest_chunks_removed: entry.snapshots.chunks_removed,
                    manifest_chunk_failures: entry.snapshots.chunk_failures,
                },
                replay: entry.replay_figures,
            };
            streams.insert(name.as_str().to_owned(), metrics);
        }
        StoreMetrics {
            tier0: self.tier0.metrics(),
            tier1: self.tier1.metrics(),
            tier2: self.tier2.metrics(),
            reads: self.reads.metrics(),
            streams,
        }
    }
}
