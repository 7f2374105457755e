//! The manifest index: per-segment state derived from manifest records.
//!
//! [`ManifestIndex::apply`] folds one record into the index. It is *total*: any record,
//! in any order, is accepted without panicking, and the result depends only on the
//! sequence of records applied. The rules for records that do not fit the current
//! state:
//!
//! - `SegmentOpened` creates the segment's entry (open, Tier 0 copy present). If the
//!   entry already exists it is ignored (the first opening wins). If the index already
//!   holds [`SNAPSHOT_SEGMENTS_MAX`] segments it is ignored.
//! - `SealSegment` seals the entry, creating it (sealed, Tier 0 copy present) if it
//!   does not exist; a later seal overwrites the seal fields.
//! - Every other segment record about a segment the index does not hold is ignored.
//!   (Replay from the start always sees `SegmentOpened` first; a segment deleted from
//!   every tier is removed from the index, so late records about it are ignored.)
//! - `LocalEvicted { Tier0 }` of an *open* segment is ignored: the active segment is
//!   never evicted.
//! - Ignored records are counted in [`ManifestIndex::ignored_record_count`], and
//!   `apply` says why in its [`ApplyOutcome`].
//!
//! Segment records drive the entry like this:
//!
//! | record | effect |
//! | --- | --- |
//! | `CompressionStarted` | compression job running (`attempts + 1`) |
//! | `CompressionFailed` | compression job not running, failure recorded |
//! | `CompressionDone` | job cleared; Tier 1 artifact recorded; local Tier 1 copy |
//! | `UploadStarted` | upload job running under `key` (`attempts + 1`) |
//! | `UploadFailed` | upload job not running, failure recorded |
//! | `UploadDone` | job cleared; Tier 2 object recorded |
//! | `Tier2DeleteQueued` | delete job queued for `key` |
//! | `Tier2Deleted` | the Tier 2 object (and delete job) of `key` cleared; an entry with no copy left anywhere is removed |
//! | `HydrationStarted` | hydration job running (`attempts + 1`) |
//! | `HydrationFailed` | hydration job not running, failure recorded |
//! | `HydrationDone` | job cleared; local Tier 0 copy |
//! | `LocalEvicted` | local Tier 0 or Tier 1 copy cleared |
//!
//! A failed job stays pending (with its attempt count and last failure) until its
//! `Done` record: the retry policy lives in the tier state machines, not here.
//!
//! Residency ([`SegmentEntry::residency`]) is derived, in this order: a running
//! hydration is `StagedForTier0`; a local Tier 0 copy is `ResidentInTier0`; a failed
//! hydration is `NeedsRecovery`; a local Tier 1 copy is `ResidentInTier1`; a Tier 2
//! object is `UploadedToTier2`; no copy at all is `NeedsRecovery`.
//!
//! **Invariants** (hold after any sequence of `apply`, checked by `check_invariants`)
//! - Each entry is stored under its own segment id; the index holds at most
//!   [`SNAPSHOT_SEGMENTS_MAX`] entries.
//! - A local Tier 1 copy implies a recorded Tier 1 artifact.
//! - An open segment has its local Tier 0 copy.
//! - Keys, etags and job counts are within their limits (they came from validated
//!   records), so every index can be written as a snapshot.

use crate::SegmentId;
use crate::limits::{ETAG_BYTES_MAX, OBJECT_KEY_BYTES_MAX, SNAPSHOT_SEGMENTS_MAX};
use crate::manifest::record::{ManifestRecord, ReasonCode, RecordFrame, Tier};
use std::collections::BTreeMap;

/// Whether a segment still takes appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Open,
    Sealed(SealInfo),
}

/// The fields of a segment's seal (its footer, as recorded by `SealSegment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealInfo {
    pub record_count: u64,
    pub durable_bytes: u64,
    pub checksum: u32,
    pub last_ext_id: u64,
    pub coordinator_watermark: u64,
    pub flush_failure: bool,
    pub sealed_at_ms: u64,
}

/// The Tier 1 (seekable zstd) artifact of a sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier1Artifact {
    pub job_id: u64,
    pub original_bytes: u64,
    pub compressed_bytes: u64,
    pub frame_count: u32,
    pub checksum: u32,
}

/// The Tier 2 object of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier2Object {
    pub key: String,
    pub etag: String,
    pub object_bytes: u64,
}

/// Which local copies of a segment exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalCopies {
    pub tier0: bool,
    pub tier1: bool,
}

/// The last failure of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFailure {
    pub reason: ReasonCode,
    /// The attempt number the failure record carried.
    pub attempt: u32,
}

/// A compression job (Tier 0 to Tier 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionJob {
    pub job_id: u64,
    /// `CompressionStarted` records seen for this job.
    pub attempts: u32,
    pub running: bool,
    pub last_failure: Option<JobFailure>,
}

/// An upload job (to Tier 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadJob {
    pub key: String,
    /// `UploadStarted` records seen for this job.
    pub attempts: u32,
    pub running: bool,
    pub last_failure: Option<JobFailure>,
}

/// A hydration job (back into Tier 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HydrationJob {
    pub source: Tier,
    /// `HydrationStarted` records seen for this job.
    pub attempts: u32,
    pub running: bool,
    pub last_failure: Option<JobFailure>,
}

/// A queued deletion of the segment's Tier 2 object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteJob {
    pub key: String,
    pub reason: ReasonCode,
}

/// The jobs pending for a segment, at most one of each kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingJobs {
    pub compression: Option<CompressionJob>,
    pub upload: Option<UploadJob>,
    pub hydration: Option<HydrationJob>,
    pub tier2_delete: Option<DeleteJob>,
}

impl PendingJobs {
    /// How many jobs are pending.
    #[must_use]
    pub fn count(&self) -> u32 {
        u32::from(self.compression.is_some())
            + u32::from(self.upload.is_some())
            + u32::from(self.hydration.is_some())
            + u32::from(self.tier2_delete.is_some())
    }
}

/// Where a segment's data can be read from (the seed's residency gauge names, plus
/// `ResidentInTier1`, which the seed has no name for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Residency {
    /// A local Tier 0 segment file exists.
    ResidentInTier0,
    /// A hydration into Tier 0 is in progress.
    StagedForTier0,
    /// Only the local Tier 1 artifact (and perhaps Tier 2) holds it.
    ResidentInTier1,
    /// Only Tier 2 holds it.
    UploadedToTier2,
    /// No copy is known, or the last hydration failed.
    NeedsRecovery,
}

/// Everything the manifest says about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub segment_id: SegmentId,
    pub lifecycle: Lifecycle,
    pub base_offset: u64,
    /// From `SegmentOpened` (0 if the entry was created by its seal).
    pub opened_at_ms: u64,
    pub local: LocalCopies,
    pub tier1_artifact: Option<Tier1Artifact>,
    pub tier2_object: Option<Tier2Object>,
    pub jobs: PendingJobs,
}

impl SegmentEntry {
    fn opened(segment_id: SegmentId, base_offset: u64, opened_at_ms: u64) -> Self {
        SegmentEntry {
            segment_id,
            lifecycle: Lifecycle::Open,
            base_offset,
            opened_at_ms,
            local: LocalCopies {
                tier0: true,
                tier1: false,
            },
            tier1_artifact: None,
            tier2_object: None,
            jobs: PendingJobs::default(),
        }
    }

    /// Where the segment can be read from (see the module doc for the order).
    #[must_use]
    pub fn residency(&self) -> Residency {
        let hydration = self.jobs.hydration.as_ref();
        if hydration.is_some_and(|job| job.running) {
            Residency::StagedForTier0
        } else if self.local.tier0 {
            Residency::ResidentInTier0
        } else if hydration.is_some_and(|job| job.last_failure.is_some()) {
            Residency::NeedsRecovery
        } else if self.local.tier1 {
            Residency::ResidentInTier1
        } else if self.tier2_object.is_some() {
            Residency::UploadedToTier2
        } else {
            Residency::NeedsRecovery
        }
    }

    /// Whether some tier still holds the segment's data.
    #[must_use]
    pub fn has_any_copy(&self) -> bool {
        self.local.tier0 || self.local.tier1 || self.tier2_object.is_some()
    }

    /// Checks the entry's invariants (see the module doc).
    pub fn check_invariants(&self) {
        if self.local.tier1 {
            assert!(
                self.tier1_artifact.is_some(),
                "segment {}: local Tier 1 copy without an artifact",
                self.segment_id
            );
        }
        if self.lifecycle == Lifecycle::Open {
            assert!(
                self.local.tier0,
                "segment {}: open without its Tier 0 file",
                self.segment_id
            );
        }
        if let Some(object) = &self.tier2_object {
            assert!(object.key.len() <= OBJECT_KEY_BYTES_MAX as usize);
            assert!(!object.key.is_empty());
            assert!(object.etag.len() <= ETAG_BYTES_MAX as usize);
        }
        if let Some(job) = &self.jobs.upload {
            assert!(job.key.len() <= OBJECT_KEY_BYTES_MAX as usize);
            assert!(!job.key.is_empty());
        }
        if let Some(job) = &self.jobs.tier2_delete {
            assert!(job.key.len() <= OBJECT_KEY_BYTES_MAX as usize);
            assert!(!job.key.is_empty());
        }
    }
}

/// The last `SnapshotMarker` record applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMarkerInfo {
    pub snapshot_id: u64,
    pub chunk_index: u64,
    pub chunk_offset: u64,
    pub record_ordinal: u64,
}

/// Why [`ManifestIndex::apply`] ignored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredReason {
    /// The record is about a segment the index does not hold.
    UnknownSegment,
    /// `SegmentOpened` for a segment the index already holds.
    SegmentExists,
    /// `SegmentOpened` while the index holds `SNAPSHOT_SEGMENTS_MAX` segments.
    SegmentLimit,
    /// `LocalEvicted { Tier0 }` of an open segment.
    EvictingOpenSegment,
}

/// What [`ManifestIndex::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    Ignored(IgnoredReason),
}

/// Per-segment state of a stream, derived from its manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestIndex {
    segments: BTreeMap<SegmentId, SegmentEntry>,
    next_ordinal: u64,
    last_snapshot: Option<SnapshotMarkerInfo>,
    custom_event_count: u64,
    unknown_records_skipped: u64,
    ignored_record_count: u64,
}

impl ManifestIndex {
    /// An empty index: nothing applied, next ordinal 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds an index from its parts (used by the snapshot decoder, which has
    /// already checked every part; a broken invariant here is a bug).
    pub(crate) fn from_parts(parts: IndexParts) -> Self {
        let index = ManifestIndex {
            segments: parts.segments,
            next_ordinal: parts.next_ordinal,
            last_snapshot: parts.last_snapshot,
            custom_event_count: parts.custom_event_count,
            unknown_records_skipped: parts.unknown_records_skipped,
            ignored_record_count: parts.ignored_record_count,
        };
        index.check_invariants();
        index
    }

    /// Folds one record into the index. Total: see the module doc for how records that
    /// do not fit the current state are handled.
    pub fn apply(&mut self, frame: &RecordFrame) -> ApplyOutcome {
        self.advance_ordinal(frame.ordinal);
        let outcome = self.apply_record(&frame.record);
        if let ApplyOutcome::Ignored(_) = outcome {
            self.ignored_record_count = self.ignored_record_count.saturating_add(1);
        }
        outcome
    }

    /// Accounts for a well-formed record of a type this build does not know.
    pub fn skip_unknown(&mut self, ordinal: u64) {
        self.advance_ordinal(ordinal);
        self.unknown_records_skipped = self.unknown_records_skipped.saturating_add(1);
    }

    fn advance_ordinal(&mut self, ordinal: u64) {
        self.next_ordinal = self.next_ordinal.max(ordinal.saturating_add(1));
    }

    fn apply_record(&mut self, record: &ManifestRecord) -> ApplyOutcome {
        use ApplyOutcome::{Applied, Ignored};
        match record {
            ManifestRecord::SegmentOpened {
                segment_id,
                base_offset,
                opened_at_ms,
            } => {
                if self.segments.contains_key(segment_id) {
                    return Ignored(IgnoredReason::SegmentExists);
                }
                if self.segments.len() >= SNAPSHOT_SEGMENTS_MAX as usize {
                    return Ignored(IgnoredReason::SegmentLimit);
                }
                self.segments.insert(
                    *segment_id,
                    SegmentEntry::opened(*segment_id, *base_offset, *opened_at_ms),
                );
                return Applied;
            }
            ManifestRecord::SealSegment {
                segment_id,
                base_offset,
                record_count,
                durable_bytes,
                checksum,
                last_ext_id,
                coordinator_watermark,
                flush_failure,
                sealed_at_ms,
            } => {
                if !self.segments.contains_key(segment_id)
                    && self.segments.len() >= SNAPSHOT_SEGMENTS_MAX as usize
                {
                    return Ignored(IgnoredReason::SegmentLimit);
                }
                let entry = self
                    .segments
                    .entry(*segment_id)
                    .or_insert_with(|| SegmentEntry::opened(*segment_id, *base_offset, 0));
                entry.base_offset = *base_offset;
                entry.lifecycle = Lifecycle::Sealed(SealInfo {
                    record_count: *record_count,
                    durable_bytes: *durable_bytes,
                    checksum: *checksum,
                    last_ext_id: *last_ext_id,
                    coordinator_watermark: *coordinator_watermark,
                    flush_failure: *flush_failure,
                    sealed_at_ms: *sealed_at_ms,
                });
                return Applied;
            }
            ManifestRecord::SnapshotMarker {
                snapshot_id,
                chunk_index,
                chunk_offset,
                record_ordinal,
            } => {
                self.last_snapshot = Some(SnapshotMarkerInfo {
                    snapshot_id: *snapshot_id,
                    chunk_index: *chunk_index,
                    chunk_offset: *chunk_offset,
                    record_ordinal: *record_ordinal,
                });
                return Applied;
            }
            ManifestRecord::CustomEvent { .. } => {
                self.custom_event_count = self.custom_event_count.saturating_add(1);
                return Applied;
            }
            _ => {}
        }

        let segment_id = record
            .segment_id()
            .expect("every other record names a segment");
        let Some(entry) = self.segments.get_mut(&segment_id) else {
            return Ignored(IgnoredReason::UnknownSegment);
        };
        match record {
            ManifestRecord::CompressionStarted { job_id, .. } => {
                let job = entry.jobs.compression.get_or_insert(CompressionJob {
                    job_id: *job_id,
                    attempts: 0,
                    running: false,
                    last_failure: None,
                });
                job.job_id = *job_id;
                job.attempts = job.attempts.saturating_add(1);
                job.running = true;
            }
            ManifestRecord::CompressionFailed {
                job_id,
                reason,
                attempt,
                ..
            } => {
                let job = entry.jobs.compression.get_or_insert(CompressionJob {
                    job_id: *job_id,
                    attempts: 0,
                    running: false,
                    last_failure: None,
                });
                job.job_id = *job_id;
                job.running = false;
                job.last_failure = Some(JobFailure {
                    reason: *reason,
                    attempt: *attempt,
                });
            }
            ManifestRecord::CompressionDone {
                job_id,
                original_bytes,
                compressed_bytes,
                frame_count,
                artifact_checksum,
                ..
            } => {
                entry.jobs.compression = None;
                entry.tier1_artifact = Some(Tier1Artifact {
                    job_id: *job_id,
                    original_bytes: *original_bytes,
                    compressed_bytes: *compressed_bytes,
                    frame_count: *frame_count,
                    checksum: *artifact_checksum,
                });
                entry.local.tier1 = true;
            }
            ManifestRecord::UploadStarted { key, .. } => {
                let job = entry.jobs.upload.get_or_insert_with(|| UploadJob {
                    key: key.clone(),
                    attempts: 0,
                    running: false,
                    last_failure: None,
                });
                key.clone_into(&mut job.key);
                job.attempts = job.attempts.saturating_add(1);
                job.running = true;
            }
            ManifestRecord::UploadFailed {
                key,
                reason,
                attempt,
                ..
            } => {
                let job = entry.jobs.upload.get_or_insert_with(|| UploadJob {
                    key: key.clone(),
                    attempts: 0,
                    running: false,
                    last_failure: None,
                });
                key.clone_into(&mut job.key);
                job.running = false;
                job.last_failure = Some(JobFailure {
                    reason: *reason,
                    attempt: *attempt,
                });
            }
            ManifestRecord::UploadDone {
                key,
                etag,
                object_bytes,
                ..
            } => {
                entry.jobs.upload = None;
                entry.tier2_object = Some(Tier2Object {
                    key: key.clone(),
                    etag: etag.clone(),
                    object_bytes: *object_bytes,
                });
            }
            ManifestRecord::Tier2DeleteQueued { key, reason, .. } => {
                entry.jobs.tier2_delete = Some(DeleteJob {
                    key: key.clone(),
                    reason: *reason,
                });
            }
            ManifestRecord::Tier2Deleted { key, .. } => {
                if entry
                    .jobs
                    .tier2_delete
                    .as_ref()
                    .is_some_and(|job| &job.key == key)
                {
                    entry.jobs.tier2_delete = None;
                }
                if entry
                    .tier2_object
                    .as_ref()
                    .is_some_and(|object| &object.key == key)
                {
                    entry.tier2_object = None;
                }
                if !entry.has_any_copy() && entry.lifecycle != Lifecycle::Open {
                    self.segments.remove(&segment_id);
                }
            }
            ManifestRecord::HydrationStarted { source, .. } => {
                let job = entry.jobs.hydration.get_or_insert(HydrationJob {
                    source: *source,
                    attempts: 0,
                    running: false,
                    last_failure: None,
                });
                job.source = *source;
                job.attempts = job.attempts.saturating_add(1);
                job.running = true;
            }
            ManifestRecord::HydrationFailed {
                source,
                reason,
                attempt,
                ..
            } => {
                let job = entry.jobs.hydration.get_or_insert(HydrationJob {
                    source: *source,
                    attempts: 0,
                    running: false,
                    last_failure: None,
                });
                job.source = *source;
                job.running = false;
                job.last_failure = Some(JobFailure {
                    reason: *reason,
                    attempt: *attempt,
                });
            }
            ManifestRecord::HydrationDone { .. } => {
                entry.jobs.hydration = None;
                entry.local.tier0 = true;
            }
            ManifestRecord::LocalEvicted { tier, .. } => match tier {
                Tier::Tier0 => {
                    if entry.lifecycle == Lifecycle::Open {
                        return Ignored(IgnoredReason::EvictingOpenSegment);
                    }
                    entry.local.tier0 = false;
                }
                Tier::Tier1 => entry.local.tier1 = false,
                // `validate` and the decoder refuse Tier 2 here; keep `apply` total.
                Tier::Tier2 => {}
            },
            ManifestRecord::SegmentOpened { .. }
            | ManifestRecord::SealSegment { .. }
            | ManifestRecord::SnapshotMarker { .. }
            | ManifestRecord::CustomEvent { .. } => unreachable!("handled above"),
        }
        Applied
    }

    /// The entry of `segment_id`, if the index holds it.
    #[must_use]
    pub fn segment(&self, segment_id: SegmentId) -> Option<&SegmentEntry> {
        self.segments.get(&segment_id)
    }

    /// Every entry, by segment id.
    #[must_use]
    pub fn segments(&self) -> &BTreeMap<SegmentId, SegmentEntry> {
        &self.segments
    }

    /// One past the highest ordinal applied (or skipped as unknown).
    #[must_use]
    pub fn next_ordinal(&self) -> u64 {
        self.next_ordinal
    }

    /// The last `SnapshotMarker` applied.
    #[must_use]
    pub fn last_snapshot(&self) -> Option<&SnapshotMarkerInfo> {
        self.last_snapshot.as_ref()
    }

    /// `CustomEvent` records applied.
    #[must_use]
    pub fn custom_event_count(&self) -> u64 {
        self.custom_event_count
    }

    /// Records of unknown types skipped.
    #[must_use]
    pub fn unknown_records_skipped(&self) -> u64 {
        self.unknown_records_skipped
    }

    /// Records `apply` ignored (see [`IgnoredReason`]).
    #[must_use]
    pub fn ignored_record_count(&self) -> u64 {
        self.ignored_record_count
    }

    /// How many segments are in each residency state.
    #[must_use]
    pub fn residency_counts(&self) -> BTreeMap<Residency, u64> {
        let mut counts = BTreeMap::new();
        for entry in self.segments.values() {
            *counts.entry(entry.residency()).or_insert(0) += 1;
        }
        counts
    }

    pub(crate) fn parts(&self) -> IndexPartsRef<'_> {
        IndexPartsRef {
            segments: &self.segments,
            next_ordinal: self.next_ordinal,
            last_snapshot: self.last_snapshot.as_ref(),
            custom_event_count: self.custom_event_count,
            unknown_records_skipped: self.unknown_records_skipped,
            ignored_record_count: self.ignored_record_count,
        }
    }

    /// Checks the invariants of the module doc.
    pub fn check_invariants(&self) {
        assert!(self.segments.len() <= SNAPSHOT_SEGMENTS_MAX as usize);
        for (segment_id, entry) in &self.segments {
            assert_eq!(
                *segment_id, entry.segment_id,
                "entry stored under another id"
            );
            entry.check_invariants();
        }
    }
}

/// The owned parts of an index (for the snapshot decoder).
#[derive(Debug)]
pub(crate) struct IndexParts {
    pub segments: BTreeMap<SegmentId, SegmentEntry>,
    pub next_ordinal: u64,
    pub last_snapshot: Option<SnapshotMarkerInfo>,
    pub custom_event_count: u64,
    pub unknown_records_skipped: u64,
    pub ignored_record_count: u64,
}

/// The borrowed parts of an index (for the snapshot encoder).
#[derive(Debug)]
pub(crate) struct IndexPartsRef<'a> {
    pub segments: &'a BTreeMap<SegmentId, SegmentEntry>,
    pub next_ordinal: u64,
    pub last_snapshot: Option<&'a SnapshotMarkerInfo>,
    pub custom_event_count: u64,
    pub unknown_records_skipped: u64,
    pub ignored_record_count: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::record::tests::arb_record;
    use proptest::prelude::*;

    /// The same record about segment `segment` (records without a segment unchanged).
    pub(crate) fn with_segment(mut record: ManifestRecord, segment: SegmentId) -> ManifestRecord {
        match &mut record {
            ManifestRecord::SegmentOpened { segment_id, .. }
            | ManifestRecord::SealSegment { segment_id, .. }
            | ManifestRecord::CompressionStarted { segment_id, .. }
            | ManifestRecord::CompressionDone { segment_id, .. }
            | ManifestRecord::CompressionFailed { segment_id, .. }
            | ManifestRecord::UploadStarted { segment_id, .. }
            | ManifestRecord::UploadDone { segment_id, .. }
            | ManifestRecord::UploadFailed { segment_id, .. }
            | ManifestRecord::Tier2DeleteQueued { segment_id, .. }
            | ManifestRecord::Tier2Deleted { segment_id, .. }
            | ManifestRecord::HydrationStarted { segment_id, .. }
            | ManifestRecord::HydrationDone { segment_id, .. }
            | ManifestRecord::HydrationFailed { segment_id, .. }
            | ManifestRecord::LocalEvicted { segment_id, .. } => *segment_id = segment,
            ManifestRecord::SnapshotMarker { .. } | ManifestRecord::CustomEvent { .. } => {}
        }
        record
    }

    /// Records about a handful of segments, with keys drawn from a small set so that
    /// deletes match uploads, and openings frequent enough that entries exist.
    pub(crate) fn arb_stream_record() -> impl Strategy<Value = ManifestRecord> {
        let keyed = (arb_record(), 0u64..4, 0usize..2).prop_map(|(record, segment, key)| {
            let mut record = with_segment(record, SegmentId(segment));
            let fixed_key = format!("segments/s/{segment:020}.{key}");
            match &mut record {
                ManifestRecord::UploadStarted { key, .. }
                | ManifestRecord::UploadDone { key, .. }
                | ManifestRecord::UploadFailed { key, .. }
                | ManifestRecord::Tier2DeleteQueued { key, .. }
                | ManifestRecord::Tier2Deleted { key, .. } => *key = fixed_key,
                _ => {}
            }
            record
        });
        let opened =
            (0u64..4, any::<u64>()).prop_map(|(segment, base)| ManifestRecord::SegmentOpened {
                segment_id: SegmentId(segment),
                base_offset: base,
                opened_at_ms: 1,
            });
        prop_oneof![4 => keyed, 1 => opened]
    }

    fn frame(ordinal: u64, record: ManifestRecord) -> RecordFrame {
        RecordFrame {
            ordinal,
            timestamp_ms: 0,
            frame_length: record.frame_length(),
            record,
        }
    }

    proptest! {
        #[test]
        fn any_record_order_is_accepted(records in proptest::collection::vec(arb_stream_record(), 0..80)) {
            let mut index = ManifestIndex::new();
            let mut ignored = 0;
            for (ordinal, record) in records.into_iter().enumerate() {
                if let ApplyOutcome::Ignored(_) = index.apply(&frame(ordinal as u64, record)) {
                    ignored += 1;
                }
                index.check_invariants();
                prop_assert_eq!(index.next_ordinal(), ordinal as u64 + 1);
            }
            prop_assert_eq!(index.ignored_record_count(), ignored);
        }

        #[test]
        fn apply_is_deterministic(records in proptest::collection::vec(arb_stream_record(), 0..60)) {
            let mut first = ManifestIndex::new();
            let mut second = ManifestIndex::new();
            for (ordinal, record) in records.into_iter().enumerate() {
                first.apply(&frame(ordinal as u64, record.clone()));
                second.apply(&frame(ordinal as u64, record));
            }
            prop_assert_eq!(first, second);
        }
    }

    #[test]
    fn a_segment_walks_through_the_tiers() {
        let s = SegmentId(1);
        let key = "segments/s/1.zst".to_owned();
        let mut index = ManifestIndex::new();
        let mut ordinal = 0;
        let mut apply = |index: &mut ManifestIndex, record| {
            let outcome = index.apply(&frame(ordinal, record));
            ordinal += 1;
            index.check_invariants();
            outcome
        };
        let residency = |index: &ManifestIndex| index.segment(s).unwrap().residency();

        apply(
            &mut index,
            ManifestRecord::SegmentOpened {
                segment_id: s,
                base_offset: 10,
                opened_at_ms: 5,
            },
        );
        assert_eq!(residency(&index), Residency::ResidentInTier0);
        assert_eq!(
            apply(
                &mut index,
                ManifestRecord::LocalEvicted {
                    segment_id: s,
                    tier: Tier::Tier0
                }
            ),
            ApplyOutcome::Ignored(IgnoredReason::EvictingOpenSegment)
        );
        apply(
            &mut index,
            ManifestRecord::SealSegment {
                segment_id: s,
                base_offset: 10,
                record_count: 3,
                durable_bytes: 300,
                checksum: 9,
                last_ext_id: 4,
                coordinator_watermark: 2,
                flush_failure: false,
                sealed_at_ms: 6,
            },
        );
        apply(
            &mut index,
            ManifestRecord::CompressionStarted {
                segment_id: s,
                job_id: 1,
            },
        );
        apply(
            &mut index,
            ManifestRecord::CompressionFailed {
                segment_id: s,
                job_id: 1,
                reason: ReasonCode::NoSpace,
                attempt: 1,
            },
        );
        apply(
            &mut index,
            ManifestRecord::CompressionStarted {
                segment_id: s,
                job_id: 1,
            },
        );
        let job = index.segment(s).unwrap().jobs.compression.unwrap();
        assert_eq!((job.attempts, job.running), (2, true));
        apply(
            &mut index,
            ManifestRecord::CompressionDone {
                segment_id: s,
                job_id: 1,
                original_bytes: 300,
                compressed_bytes: 100,
                frame_count: 1,
                artifact_checksum: 7,
            },
        );
        apply(
            &mut index,
            ManifestRecord::LocalEvicted {
                segment_id: s,
                tier: Tier::Tier0,
            },
        );
        assert_eq!(residency(&index), Residency::ResidentInTier1);
        apply(
            &mut index,
            ManifestRecord::UploadStarted {
                segment_id: s,
                key: key.clone(),
                attempt: 1,
            },
        );
        apply(
            &mut index,
            ManifestRecord::UploadDone {
                segment_id: s,
                key: key.clone(),
                etag: "e".into(),
                object_bytes: 100,
            },
        );
        apply(
            &mut index,
            ManifestRecord::LocalEvicted {
                segment_id: s,
                tier: Tier::Tier1,
            },
        );
        assert_eq!(residency(&index), Residency::UploadedToTier2);
        apply(
            &mut index,
            ManifestRecord::HydrationStarted {
                segment_id: s,
                source: Tier::Tier2,
            },
        );
        assert_eq!(residency(&index), Residency::StagedForTier0);
        apply(
            &mut index,
            ManifestRecord::HydrationFailed {
                segment_id: s,
                source: Tier::Tier2,
                reason: ReasonCode::Timeout,
                attempt: 3,
            },
        );
        assert_eq!(residency(&index), Residency::NeedsRecovery);
        apply(
            &mut index,
            ManifestRecord::HydrationStarted {
                segment_id: s,
                source: Tier::Tier2,
            },
        );
        apply(
            &mut index,
            ManifestRecord::HydrationDone {
                segment_id: s,
                source: Tier::Tier2,
                bytes: 300,
            },
        );
        assert_eq!(residency(&index), Residency::ResidentInTier0);
        assert_eq!(index.segment(s).unwrap().jobs.count(), 0);
        apply(
            &mut index,
            ManifestRecord::LocalEvicted {
                segment_id: s,
                tier: Tier::Tier0,
            },
        );
        apply(
            &mut index,
            ManifestRecord::Tier2DeleteQueued {
                segment_id: s,
                key: key.clone(),
                reason: ReasonCode::RetentionAge,
            },
        );
        apply(
            &mut index,
            ManifestRecord::Tier2Deleted { segment_id: s, key },
        );
        assert_eq!(
            index.segment(s),
            None,
            "a segment gone from every tier is retired"
        );
        assert_eq!(
            apply(
                &mut index,
                ManifestRecord::CompressionStarted {
                    segment_id: s,
                    job_id: 2
                }
            ),
            ApplyOutcome::Ignored(IgnoredReason::UnknownSegment)
        );
        assert_eq!(index.ignored_record_count(), 2);
        assert_eq!(index.next_ordinal(), ordinal);
    }

    #[test]
    fn first_opening_wins_and_seal_creates() {
        let mut index = ManifestIndex::new();
        let open = |base| ManifestRecord::SegmentOpened {
            segment_id: SegmentId(2),
            base_offset: base,
            opened_at_ms: 0,
        };
        assert_eq!(index.apply(&frame(0, open(5))), ApplyOutcome::Applied);
        assert_eq!(
            index.apply(&frame(1, open(6))),
            ApplyOutcome::Ignored(IgnoredReason::SegmentExists)
        );
        assert_eq!(index.segment(SegmentId(2)).unwrap().base_offset, 5);
        index.apply(&frame(
            2,
            ManifestRecord::SealSegment {
                segment_id: SegmentId(3),
                base_offset: 7,
                record_count: 0,
                durable_bytes: 0,
                checksum: 0,
                last_ext_id: 0,
                coordinator_watermark: 0,
                flush_failure: true,
                sealed_at_ms: 0,
            },
        ));
        let sealed = index.segment(SegmentId(3)).unwrap();
        assert!(matches!(
            sealed.lifecycle,
            Lifecycle::Sealed(SealInfo {
                flush_failure: true,
                ..
            })
        ));
        assert_eq!(sealed.residency(), Residency::ResidentInTier0);
        index.skip_unknown(3);
        assert_eq!(index.unknown_records_skipped(), 1);
        assert_eq!(index.next_ordinal(), 4);
    }
}
