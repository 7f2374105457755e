//! Tier 1: the warm cache of seekable zstd artifacts, shared by every stream of a
//! manager, as a sans-IO state machine.
//!
//! Tier 1 does three kinds of work, each as a sequence of IO requests the driver carries
//! out ([`Tier1Cache::poll_request`] / [`Tier1Cache::handle_completion`]):
//!
//! - **Compression** of a sealed Tier 0 segment into its artifact: read the segment
//!   file, compress it (a [`CpuJob`]), and write the artifact by the durable-file rule
//!   (create `<artifact>.tmp`, write, fsync, rename, fsync the directory). Only then is
//!   [`Tier1Event::CompressionSucceeded`] emitted.
//! - **Hydration** of a segment that left Tier 0: from the Tier 1 artifact if there is
//!   one, else from the Tier 2 object (whose bytes are first validated by decompressing
//!   them, then stored durably as the Tier 1 artifact); the decompressed segment file
//!   is written by the same durable-file rule. Waiting hydrations form a priority queue
//!   (higher first, then arrival order) and at most `hydration_concurrency` run at once.
//! - **Eviction** of artifacts to keep the bytes under `max_bytes`, least recently used
//!   first, and only of artifacts Tier 2 holds ([`Tier1Cache::mark_uploaded`]):
//!   remove, then fsync the directory, then [`Tier1Event::Evicted`].
//!
//! Failures are retried with the config's [`RetryPolicy`] (`max_retries` attempts,
//! `retry_backoff_ms` doubling, equal jitter drawn from the machine's own [`DetRng`]);
//! the delay is a timer ([`Tier1Cache::poll_timeout`] / [`Tier1Cache::handle_timeout`]).
//! A failed write or fsync is never retried on the same pages: the retry writes a fresh
//! temp file from the bytes held in memory (fsyncgate). A Tier 2 `NotFound` (or another
//! error retrying cannot fix) is not retried. A hydration that runs out of attempts
//! leaves its segment [`Residency::NeedsRecovery`].
//!
//! Residency: Tier 1 keeps, per segment it knows, where its readable copy is
//! ([`Residency`]) and a gauge of the counts. The brief's four states miss one case:
//! Tier 0 may evict a segment whose only other copy is its Tier 1 artifact (the
//! artifact *is* durable elsewhere), so there is a fifth, [`Residency::WarmInTier1`].
//!
//! Byte accounting: `total_bytes` counts every artifact whose final file exists,
//! including those whose eviction is under way; the budget is enforced on the *claimed*
//! bytes, `total_bytes - evicting_bytes`. Temp files being written are not counted.
//!
//! **Invariants** (checked by [`Tier1Cache::check_invariants`])
//! - An artifact is removed only if Tier 2 holds it (marked uploaded), no hydration of
//!   its segment is pending, and it is resident (not already being removed).
//! - A compression or hydration is reported successful only after the create, write,
//!   fsync, rename and directory fsync of its file all succeeded, in that order, within
//!   one attempt.
//! - At most `compression_concurrency` compressions and `hydration_concurrency`
//!   hydrations run at once; at most [`TIER1_COMPRESSION_QUEUE_MAX`] and
//!   [`TIER1_HYDRATION_QUEUE_MAX`] are held. A running job has exactly one request in
//!   flight; a waiting job sits in its queue exactly once; a backing-off job has exactly
//!   one timer; every in-flight request id belongs to exactly one job or eviction.
//! - A compression is pending only for a segment resident in Tier 0 and without an
//!   artifact. A hydration is pending exactly when the residency is `StagedForTier0`; a
//!   running hydration's artifact is never being removed, and an artifact is marked
//!   hydrating exactly when it is resident and a hydration of its segment is pending.
//! - `total_bytes`, `evicting_bytes`, the eviction index and the residency gauge equal
//!   what they summarise. At rest the claimed bytes are within `max_bytes` or nothing is
//!   evictable (over budget, the data is kept).
//! - `WarmInTier1` means an artifact exists and Tier 2 does not hold the segment;
//!   `UploadedToTier2` means Tier 2 holds it.
//! - The latency window holds at most [`TIER1_HYDRATION_LATENCY_SAMPLES_MAX`] samples;
//!   `now_ms` never goes backwards.

mod config;

pub use config::{Tier1Config, Tier1ConfigError};

use crate::backpressure::BackpressureKind;
use crate::io::{
    CpuJob, CpuResult, DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoId, IoRequest,
    LocalPath, ObjectCompletion, ObjectErrorKind, ObjectRequest,
};
use crate::limits::{
    SEGMENT_BYTES_MAX, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES, TIER1_COMPRESSION_QUEUE_MAX,
    TIER1_HYDRATION_LATENCY_SAMPLES_MAX, TIER1_HYDRATION_QUEUE_MAX, TIER1_OUTPUTS_QUEUED_MAX,
};
use crate::manifest::record::{ReasonCode, Tier};
use crate::names::{self, SegmentKey};
use crate::retry::{DetRng, RetryPolicy};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use thiserror::Error;

/// Log target of every Tier 1 event.
pub const LOG_TARGET_TIER1: &str = "aof2::tier1";

/// Suffix of the temp file a durable write goes through.
const TEMP_SUFFIX: &str = ".tmp";

/// Smallest sealed segment: a header and a footer.
const SEGMENT_BYTES_MIN: u64 = SEGMENT_HEADER_BYTES as u64 + SEGMENT_FOOTER_BYTES as u64;

// ---- Public types ----

/// Priority of a hydration: higher values start first; equal priorities start in
/// arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HydrationPriority(pub u8);

/// Where a hydration reads the artifact from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HydrationSource {
    /// The local warm artifact.
    Tier1,
    /// The object store.
    Tier2,
}

impl HydrationSource {
    /// The tier, as manifest records name it.
    #[must_use]
    pub fn tier(self) -> Tier {
        match self {
            HydrationSource::Tier1 => Tier::Tier1,
            HydrationSource::Tier2 => Tier::Tier2,
        }
    }

    /// `"tier1"` or `"tier2"`, for logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HydrationSource::Tier1 => "tier1",
            HydrationSource::Tier2 => "tier2",
        }
    }
}

/// Where the readable copy of a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Residency {
    /// The segment file is in Tier 0.
    ResidentInTier0,
    /// A hydration into Tier 0 is queued or running.
    StagedForTier0,
    /// Not in Tier 0; the Tier 1 artifact is the only local copy and Tier 2 does not
    /// hold the segment yet.
    WarmInTier1,
    /// Not in Tier 0; Tier 2 holds the segment (Tier 1 may too).
    UploadedToTier2,
    /// A hydration failed after its retries: the warm file is missing or corrupt, or
    /// the Tier 2 fetch failed. Hydrate again, or recover the segment.
    NeedsRecovery,
}

/// Segments per residency: the runbook's residency gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ResidencyGauge {
    pub resident_in_tier0: u64,
    pub staged_for_tier0: u64,
    pub warm_in_tier1: u64,
    pub uploaded_to_tier2: u64,
    /// Alert if non-zero for five minutes.
    pub needs_recovery: u64,
}

impl ResidencyGauge {
    fn count_mut(&mut self, residency: Residency) -> &mut u64 {
        match residency {
            Residency::ResidentInTier0 => &mut self.resident_in_tier0,
            Residency::StagedForTier0 => &mut self.staged_for_tier0,
            Residency::WarmInTier1 => &mut self.warm_in_tier1,
            Residency::UploadedToTier2 => &mut self.uploaded_to_tier2,
            Residency::NeedsRecovery => &mut self.needs_recovery,
        }
    }

    /// Segments counted.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.resident_in_tier0
            + self.staged_for_tier0
            + self.warm_in_tier1
            + self.uploaded_to_tier2
            + self.needs_recovery
    }
}

/// The IO step a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum IoStep {
    ReadSegment,
    ReadArtifact,
    GetObject,
    Compress,
    Decompress,
    CreateTemp,
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
    Remove,
}

impl IoStep {
    /// Snake-case name for logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            IoStep::ReadSegment => "read_segment",
            IoStep::ReadArtifact => "read_artifact",
            IoStep::GetObject => "get_object",
            IoStep::Compress => "compress",
            IoStep::Decompress => "decompress",
            IoStep::CreateTemp => "create_temp",
            IoStep::WriteTemp => "write_temp",
            IoStep::SyncTemp => "sync_temp",
            IoStep::Rename => "rename",
            IoStep::SyncDir => "sync_dir",
            IoStep::Remove => "remove",
        }
    }
}

/// Why one attempt of a compression, hydration or eviction failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier1Failure {
    /// A disk request failed.
    Disk { step: IoStep, kind: DiskErrorKind },
    /// The object store refused the GET.
    Object { kind: ObjectErrorKind },
    /// A read returned fewer bytes than the file or object holds.
    ShortRead {
        step: IoStep,
        expected_bytes: u64,
        read_bytes: u64,
    },
    /// Compression or decompression refused its input (corrupt bytes).
    Cpu { step: IoStep, reason: String },
}

impl Tier1Failure {
    /// Whether another attempt can succeed. Everything is retried except an object
    /// store answer that retrying cannot change (`NotFound`, `Permanent`, ...).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Tier1Failure::Object { kind } => kind.is_retryable(),
            Tier1Failure::Disk { .. }
            | Tier1Failure::ShortRead { .. }
            | Tier1Failure::Cpu { .. } => true,
        }
    }

    /// The reason code a manifest record stores for this failure.
    #[must_use]
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Tier1Failure::Disk { kind, .. } => match kind {
                DiskErrorKind::NotFound => ReasonCode::NotFound,
                DiskErrorKind::NoSpace => ReasonCode::NoSpace,
                DiskErrorKind::Io => ReasonCode::IoError,
            },
            Tier1Failure::Object { kind } => match kind {
                ObjectErrorKind::NotFound => ReasonCode::NotFound,
                ObjectErrorKind::Throttled => ReasonCode::Throttled,
                ObjectErrorKind::Transient => ReasonCode::Timeout,
                ObjectErrorKind::AlreadyExists
                | ObjectErrorKind::PreconditionFailed
                | ObjectErrorKind::Permanent => ReasonCode::IoError,
            },
            Tier1Failure::ShortRead { .. } => ReasonCode::IoError,
            Tier1Failure::Cpu { .. } => ReasonCode::ChecksumMismatch,
        }
    }
}

impl fmt::Display for Tier1Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tier1Failure::Disk { step, kind } => {
                write!(f, "{}: disk error {kind:?}", step.as_str())
            }
            Tier1Failure::Object { kind } => write!(f, "get_object: object store error {kind:?}"),
            Tier1Failure::ShortRead {
                step,
                expected_bytes,
                read_bytes,
            } => write!(
                f,
                "{}: read {read_bytes} of {expected_bytes} bytes",
                step.as_str()
            ),
            Tier1Failure::Cpu { step, reason } => write!(f, "{}: {reason}", step.as_str()),
        }
    }
}

/// A structured log event. [`Tier1Event::name`] is its event name and
/// [`Tier1Event::target`] its log target ([`LOG_TARGET_TIER1`]). Log `*_failed`,
/// `*_retry_scheduled`, `tier1_artifact_missing` and `tier1_artifact_corrupt` at WARN,
/// the others at INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier1Event {
    /// `tier1_compression_started`: attempt `attempt` (from 1) of a compression began.
    CompressionStarted { key: SegmentKey, attempt: u32 },
    /// `tier1_compression_retry_scheduled`: attempt `attempt` failed; the next starts
    /// after `delay_ms`.
    CompressionRetryScheduled {
        key: SegmentKey,
        attempt: u32,
        delay_ms: u64,
        reason: Tier1Failure,
    },
    /// `tier1_compression_succeeded`: the artifact is durable (written, fsynced,
    /// renamed, directory fsynced). The coordinator records `CompressionDone`.
    CompressionSucceeded {
        key: SegmentKey,
        original_bytes: u64,
        compressed_bytes: u64,
        frame_count: u32,
        checksum: u32,
    },
    /// `tier1_compression_failed`: the last of `attempts` attempts failed.
    CompressionFailed {
        key: SegmentKey,
        reason: Tier1Failure,
        attempts: u32,
    },
    /// `tier1_hydration_started`: attempt `attempt` (from 1) began reading `source`.
    /// A warm file found missing switches the attempt to Tier 2 with a second event.
    HydrationStarted {
        key: SegmentKey,
        source: HydrationSource,
        attempt: u32,
    },
    /// `tier1_hydration_retry_scheduled`: attempt `attempt` failed; the next starts
    /// after `delay_ms`.
    HydrationRetryScheduled {
        key: SegmentKey,
        source: HydrationSource,
        attempt: u32,
        delay_ms: u64,
        reason: Tier1Failure,
    },
    /// `tier1_hydration_succeeded`: the segment file (`bytes`) is durable in Tier 0;
    /// `latency_ms` runs from the request.
    HydrationSucceeded {
        key: SegmentKey,
        source: HydrationSource,
        bytes: u64,
        latency_ms: u64,
    },
    /// `tier1_hydration_failed`: the last of `attempts` attempts failed (or the failure
    /// cannot be retried); the segment needs recovery.
    HydrationFailed {
        key: SegmentKey,
        source: HydrationSource,
        reason: Tier1Failure,
        attempts: u32,
    },
    /// `tier1_artifact_stored`: a hydration from Tier 2 stored the artifact durably in
    /// Tier 1 (`bytes` now count against the budget; Tier 2 holds it, so it is
    /// evictable).
    ArtifactStored { key: SegmentKey, bytes: u64 },
    /// `tier1_artifact_missing`: a hydration found the warm file gone; Tier 1 forgot it
    /// and the hydration reads Tier 2 instead.
    ArtifactMissing { key: SegmentKey, bytes: u64 },
    /// `tier1_artifact_corrupt`: the warm file did not decompress; the hydration's
    /// next attempts read Tier 2.
    ArtifactCorrupt {
        key: SegmentKey,
        bytes: u64,
        reason: String,
    },
    /// `tier1_artifact_evicted`: the artifact was removed. `dir_synced` is false when
    /// the directory fsync after the removal failed (a crash may bring the file back;
    /// Tier 2 holds it either way).
    Evicted {
        key: SegmentKey,
        bytes: u64,
        dir_synced: bool,
    },
    /// `tier1_eviction_failed`: removing the artifact failed; it stays and counts.
    /// `retry_in_ms` is `None` once attempts are exhausted: the artifact is then never
    /// evicted again by this instance.
    EvictionFailed {
        key: SegmentKey,
        bytes: u64,
        attempt: u32,
        retry_in_ms: Option<u64>,
        reason: Tier1Failure,
    },
}

impl Tier1Event {
    /// The structured event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Tier1Event::CompressionStarted { .. } => "tier1_compression_started",
            Tier1Event::CompressionRetryScheduled { .. } => "tier1_compression_retry_scheduled",
            Tier1Event::CompressionSucceeded { .. } => "tier1_compression_succeeded",
            Tier1Event::CompressionFailed { .. } => "tier1_compression_failed",
            Tier1Event::HydrationStarted { .. } => "tier1_hydration_started",
            Tier1Event::HydrationRetryScheduled { .. } => "tier1_hydration_retry_scheduled",
            Tier1Event::HydrationSucceeded { .. } => "tier1_hydration_succeeded",
            Tier1Event::HydrationFailed { .. } => "tier1_hydration_failed",
            Tier1Event::ArtifactStored { .. } => "tier1_artifact_stored",
            Tier1Event::ArtifactMissing { .. } => "tier1_artifact_missing",
            Tier1Event::ArtifactCorrupt { .. } => "tier1_artifact_corrupt",
            Tier1Event::Evicted { .. } => "tier1_artifact_evicted",
            Tier1Event::EvictionFailed { .. } => "tier1_eviction_failed",
        }
    }

    /// The log target.
    #[must_use]
    pub fn target(&self) -> &'static str {
        LOG_TARGET_TIER1
    }

    /// Emits the event to `tracing` under [`LOG_TARGET_TIER1`] at its level (WARN for
    /// failures, retries and a missing or corrupt warm file, INFO otherwise), with the
    /// fields of the runbook's event table (docs/operations.md).
    pub fn log(&self) {
        const T: &str = LOG_TARGET_TIER1;
        match self {
            Tier1Event::CompressionStarted { key, attempt } => {
                tracing::info!(target: T, key = %key, attempt, "tier1_compression_started");
            }
            Tier1Event::CompressionRetryScheduled {
                key,
                attempt,
                delay_ms,
                reason,
            } => tracing::warn!(
                target: T,
                key = %key, attempt, delay_ms, reason = %reason,
                "tier1_compression_retry_scheduled"
            ),
            Tier1Event::CompressionSucceeded {
                key,
                original_bytes,
                compressed_bytes,
                frame_count,
                checksum,
            } => tracing::info!(
                target: T,
                key = %key, original_bytes, compressed_bytes, frame_count, checksum,
                "tier1_compression_succeeded"
            ),
            Tier1Event::CompressionFailed {
                key,
                reason,
                attempts,
            } => tracing::warn!(
                target: T,
                key = %key, reason = %reason, attempts,
                "tier1_compression_failed"
            ),
            Tier1Event::HydrationStarted {
                key,
                source,
                attempt,
            } => tracing::info!(
                target: T,
                key = %key, source = source.as_str(), attempt,
                "tier1_hydration_started"
            ),
            Tier1Event::HydrationRetryScheduled {
                key,
                source,
                attempt,
                delay_ms,
                reason,
            } => tracing::warn!(
                target: T,
                key = %key, source = source.as_str(), attempt, delay_ms, reason = %reason,
                "tier1_hydration_retry_scheduled"
            ),
            Tier1Event::HydrationSucceeded {
                key,
                source,
                bytes,
                latency_ms,
            } => tracing::info!(
                target: T,
                key = %key, source = source.as_str(), bytes, latency_ms,
                "tier1_hydration_succeeded"
            ),
            Tier1Event::HydrationFailed {
                key,
                source,
                reason,
                attempts,
            } => tracing::warn!(
                target: T,
                key = %key, source = source.as_str(), reason = %reason, attempts,
                "tier1_hydration_failed"
            ),
            Tier1Event::ArtifactStored { key, bytes } => {
                tracing::info!(target: T, key = %key, bytes, "tier1_artifact_stored");
            }
            Tier1Event::ArtifactMissing { key, bytes } => {
                tracing::warn!(target: T, key = %key, bytes, "tier1_artifact_missing");
            }
            Tier1Event::ArtifactCorrupt { key, bytes, reason } => tracing::warn!(
                target: T,
                key = %key, bytes, reason = %reason,
                "tier1_artifact_corrupt"
            ),
            Tier1Event::Evicted {
                key,
                bytes,
                dir_synced,
            } => tracing::info!(
                target: T,
                key = %key, bytes, dir_synced,
                "tier1_artifact_evicted"
            ),
            Tier1Event::EvictionFailed {
                key,
                bytes,
                attempt,
                retry_in_ms,
                reason,
            } => tracing::warn!(
                target: T,
                key = %key, bytes, attempt, retry_in_ms = ?retry_in_ms, reason = %reason,
                "tier1_eviction_failed"
            ),
        }
    }

    /// The segment the event is about.
    #[must_use]
    pub fn key(&self) -> &SegmentKey {
        match self {
            Tier1Event::CompressionStarted { key, .. }
            | Tier1Event::CompressionRetryScheduled { key, .. }
            | Tier1Event::CompressionSucceeded { key, .. }
            | Tier1Event::CompressionFailed { key, .. }
            | Tier1Event::HydrationStarted { key, .. }
            | Tier1Event::HydrationRetryScheduled { key, .. }
            | Tier1Event::HydrationSucceeded { key, .. }
            | Tier1Event::HydrationFailed { key, .. }
            | Tier1Event::ArtifactStored { key, .. }
            | Tier1Event::ArtifactMissing { key, .. }
            | Tier1Event::ArtifactCorrupt { key, .. }
            | Tier1Event::Evicted { key, .. }
            | Tier1Event::EvictionFailed { key, .. } => key,
        }
    }
}

/// What [`Tier1Cache::request_hydration`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HydrationRequested {
    /// A new hydration was queued.
    Queued,
    /// One was already pending; it was kept (its priority raised if this one's is
    /// higher). Wait for its outcome.
    AlreadyPending,
}

/// Errors of Tier 1 inputs: full queues (retry later) and requests that do not fit the
/// segment's state. Broken call contracts (time going backwards, unknown completion
/// ids, impossible residency transitions) panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tier1Error {
    #[error("Tier 1 compression queue is full ({limit} jobs); retry later")]
    CompressionQueueFull { limit: u32 },
    #[error("Tier 1 hydration queue is full ({limit} hydrations); retry later")]
    HydrationQueueFull { limit: u32 },
    #[error("segment {key} is already queued for compression")]
    CompressionPending { key: SegmentKey },
    #[error("segment {key} is being hydrated")]
    HydrationPending { key: SegmentKey },
    #[error("segment {key} already has a Tier 1 artifact")]
    ArtifactPresent { key: SegmentKey },
    #[error("segment {key} has no Tier 1 artifact")]
    NotPresent { key: SegmentKey },
    #[error("the Tier 1 artifact of segment {key} is being evicted")]
    ArtifactEvicting { key: SegmentKey },
    #[error("segment {key} is resident in Tier 0: nothing to hydrate")]
    ResidentInTier0 { key: SegmentKey },
    #[error("segment {key} is {residency:?}, not resident in Tier 0: nothing to compress")]
    NotInTier0 {
        key: SegmentKey,
        residency: Residency,
    },
    #[error("segment {key} is {bytes} bytes; a sealed segment is {min}..={max} bytes")]
    SegmentSize {
        key: SegmentKey,
        bytes: u64,
        min: u64,
        max: u64,
    },
    #[error("artifact of segment {key} is empty")]
    EmptyArtifact { key: SegmentKey },
    #[error("segment {key} has Tier 1 work pending or an artifact; cannot forget it")]
    Busy { key: SegmentKey },
    #[error("the Tier 1 artifact of segment {key} cannot be evicted now: {reason}")]
    NotEvictable {
        key: SegmentKey,
        reason: &'static str,
    },
}

impl Tier1Error {
    /// The backpressure kind, if the caller should wait and retry (a full hydration
    /// queue is `WouldBlock(Hydration)` to a reader).
    #[must_use]
    pub fn would_block(&self) -> Option<BackpressureKind> {
        match self {
            Tier1Error::HydrationQueueFull { .. } => Some(BackpressureKind::Hydration),
            _ => None,
        }
    }
}

/// A read-only view of one artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArtifactState {
    pub bytes: u64,
    /// Tier 2 holds it ([`Tier1Cache::mark_uploaded`]).
    pub uploaded: bool,
    /// A hydration of its segment is pending (it is not evictable meanwhile).
    pub hydrating: bool,
    /// Its removal is under way.
    pub evicting: bool,
    /// Whether it is a candidate for eviction now.
    pub evictable: bool,
    pub last_access_ms: u64,
}

/// Tier 1 metrics, as in the runbook's monitoring checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tier1MetricsSnapshot {
    /// Bytes of all artifacts (including those being evicted).
    pub total_bytes: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Claimed bytes above the budget that nothing evictable can relieve (artifacts
    /// Tier 2 does not hold yet are kept).
    pub over_budget_bytes: u64,
    /// Hydrations not running: waiting for a slot or backing off before a retry.
    /// Alert if it exceeds the number of reader workers for more than a minute.
    pub hydration_queue_depth: u64,
    /// Compressions not running: waiting for a slot or backing off.
    pub compression_queue_depth: u64,
    pub hydrations_in_flight: u64,
    pub compressions_in_flight: u64,
    /// Latency percentiles (request to durable segment file) of the most recent
    /// successful hydrations; 0 without samples.
    pub hydration_latency_p50_ms: u64,
    pub hydration_latency_p90_ms: u64,
    /// Alert if above 2000 (warm) or 5000 (Tier 2 fetches).
    pub hydration_latency_p99_ms: u64,
    /// Samples behind the percentiles (at most `TIER1_HYDRATION_LATENCY_SAMPLES_MAX`).
    pub hydration_latency_samples: u64,
    pub residency: ResidencyGauge,
    /// Artifacts held.
    pub artifacts: u64,
    /// Successful compressions, since start.
    pub compressions: u64,
    /// Compressions that ran out of attempts, since start.
    pub compression_failures: u64,
    /// Compression retries scheduled, since start.
    pub compression_retries: u64,
    /// Successful hydrations, since start.
    pub hydrations: u64,
    /// Hydrations that failed for good, since start.
    pub hydration_failures: u64,
    /// Hydration retries scheduled (`tier1_hydration_retry_scheduled`), since start.
    pub hydration_retries: u64,
    /// Artifacts evicted, since start.
    pub evictions: u64,
}

// ---- Internals: jobs ----

/// One step of writing a file by the durable-file rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteStep {
    CreateTemp,
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
}

/// Writing `bytes` to `target` by the durable-file rule: create `<target>.tmp`, write,
/// fsync, rename onto `target`, fsync the directory. Any failure abandons the temp
/// file's pages; a retry starts a new `DurableWrite` from the bytes in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DurableWrite {
    target: LocalPath,
    bytes: Bytes,
    step: WriteStep,
}

impl DurableWrite {
    fn new(target: LocalPath, bytes: Bytes) -> Self {
        assert!(!bytes.is_empty(), "a durable write of {target} has bytes");
        DurableWrite {
            target,
            bytes,
            step: WriteStep::CreateTemp,
        }
    }

    fn temp(&self) -> LocalPath {
        let parent = self.target.parent().expect("targets live in a directory");
        parent.join(&format!("{}{TEMP_SUFFIX}", self.target.file_name()))
    }

    fn request(&self) -> DiskRequest {
        match self.step {
            WriteStep::CreateTemp => DiskRequest::Create { path: self.temp() },
            WriteStep::WriteTemp => DiskRequest::WriteAt {
                path: self.temp(),
                offset: 0,
                bytes: self.bytes.clone(),
            },
            WriteStep::SyncTemp => DiskRequest::SyncFile { path: self.temp() },
            WriteStep::Rename => DiskRequest::Rename {
                from: self.temp(),
                to: self.target.clone(),
            },
            WriteStep::SyncDir => DiskRequest::SyncDir {
                path: self.target.parent().expect("targets live in a directory"),
            },
        }
    }

    fn io_step(&self) -> IoStep {
        match self.step {
            WriteStep::CreateTemp => IoStep::CreateTemp,
            WriteStep::WriteTemp => IoStep::WriteTemp,
            WriteStep::SyncTemp => IoStep::SyncTemp,
            WriteStep::Rename => IoStep::Rename,
            WriteStep::SyncDir => IoStep::SyncDir,
        }
    }

    /// The next step after the current one succeeded; `None` once the directory fsync
    /// succeeded and the file is durable.
    fn advance(self) -> Option<Self> {
        let step = match self.step {
            WriteStep::CreateTemp => WriteStep::WriteTemp,
            WriteStep::WriteTemp => WriteStep::SyncTemp,
            WriteStep::SyncTemp => WriteStep::Rename,
            WriteStep::Rename => WriteStep::SyncDir,
            WriteStep::SyncDir => return None,
        };
        Some(DurableWrite { step, ..self })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Compressed {
    original_bytes: u64,
    artifact: Bytes,
    frame_count: u32,
    checksum: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CompressionPhase {
    /// In the compression queue, waiting for a slot.
    Waiting,
    /// Waiting for its retry timer.
    Backoff {
        deadline_ms: u64,
    },
    ReadingSegment {
        io: IoId,
    },
    Compressing {
        io: IoId,
    },
    WritingArtifact {
        io: IoId,
        write: DurableWrite,
    },
}

#[derive(Debug, Clone)]
struct CompressionJob {
    segment_bytes: u64,
    /// Queue position: arrival order, kept across retries.
    sequence: u64,
    /// Attempts started.
    attempt: u32,
    /// The artifact, once compressed; kept across retries so a failed write is redone
    /// from memory into a fresh temp file.
    compressed: Option<Compressed>,
    phase: CompressionPhase,
}

impl CompressionJob {
    fn io(&self) -> Option<IoId> {
        match &self.phase {
            CompressionPhase::Waiting | CompressionPhase::Backoff { .. } => None,
            CompressionPhase::ReadingSegment { io }
            | CompressionPhase::Compressing { io }
            | CompressionPhase::WritingArtifact { io, .. } => Some(*io),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HydrationPhase {
    /// In the hydration queue, waiting for a slot (and for its artifact's removal to
    /// finish, if one is under way).
    Waiting,
    /// Waiting for its retry timer.
    Backoff {
        deadline_ms: u64,
    },
    ReadingArtifact {
        io: IoId,
    },
    Fetching {
        io: IoId,
    },
    Decompressing {
        io: IoId,
    },
    StoringArtifact {
        io: IoId,
        write: DurableWrite,
    },
    WritingSegment {
        io: IoId,
        write: DurableWrite,
    },
}

#[derive(Debug, Clone)]
struct HydrationJob {
    priority: HydrationPriority,
    /// Arrival order, kept across retries.
    sequence: u64,
    requested_at_ms: u64,
    /// Attempts started.
    attempt: u32,
    /// Source of the current (or last) attempt.
    source: HydrationSource,
    /// The warm artifact failed to decompress: read Tier 2 from now on.
    avoid_tier1: bool,
    /// Object bytes from Tier 2, validated by decompression, still to be stored as the
    /// Tier 1 artifact.
    to_store: Option<Bytes>,
    /// The decompressed segment, kept across retries so a failed write is redone from
    /// memory into a fresh temp file.
    segment: Option<Bytes>,
    phase: HydrationPhase,
}

impl HydrationJob {
    fn io(&self) -> Option<IoId> {
        match &self.phase {
            HydrationPhase::Waiting | HydrationPhase::Backoff { .. } => None,
            HydrationPhase::ReadingArtifact { io }
            | HydrationPhase::Fetching { io }
            | HydrationPhase::Decompressing { io }
            | HydrationPhase::StoringArtifact { io, .. }
            | HydrationPhase::WritingSegment { io, .. } => Some(*io),
        }
    }

    fn queue_position(&self) -> HydrationQueuePosition {
        (Reverse(self.priority), self.sequence)
    }
}

/// Position in the hydration queue: priority descending, then arrival.
type HydrationQueuePosition = (Reverse<HydrationPriority>, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArtifactPhase {
    Resident,
    Removing { io: IoId },
    SyncingDir { io: IoId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Artifact {
    bytes: u64,
    uploaded: bool,
    hydrating: bool,
    /// Failed removals so far.
    eviction_failures: u32,
    /// Set while a failed removal backs off; the timer's deadline.
    eviction_retry_at_ms: Option<u64>,
    last_access_ms: u64,
    /// Position in the LRU: unique, grows with every access.
    access_sequence: u64,
    phase: ArtifactPhase,
}

impl Artifact {
    fn is_evicting(&self) -> bool {
        self.phase != ArtifactPhase::Resident
    }

    fn is_evictable(&self, max_attempts: u32) -> bool {
        self.phase == ArtifactPhase::Resident
            && self.uploaded
            && !self.hydrating
            && self.eviction_retry_at_ms.is_none()
            && self.eviction_failures < max_attempts
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentRecord {
    residency: Residency,
    /// Tier 2 holds the segment.
    uploaded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum IoOwner {
    Compression(SegmentKey),
    Hydration(SegmentKey),
    Eviction(SegmentKey),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RetryTimer {
    Compression(SegmentKey),
    Hydration(SegmentKey),
    Eviction(SegmentKey),
}

// ---- The machine ----

/// The Tier 1 warm cache state machine. One per manager, shared by all its streams.
///
/// Call order: feed one input (`enqueue_compression`, `request_hydration`,
/// `mark_uploaded`, `touch`, `register_artifact`, the residency setters,
/// [`Tier1Cache::handle_completion`], [`Tier1Cache::handle_timeout`]), then drain
/// [`Tier1Cache::poll_request`] and [`Tier1Cache::poll_event`] until both return
/// `None`. Carry out every request (concurrently is fine) and deliver its outcome, once,
/// with `handle_completion` and the request's id, only after the request was polled.
/// After draining, arm a timer for [`Tier1Cache::poll_timeout`] and call
/// `handle_timeout` once it has passed. `now_ms` must never go backwards.
#[derive(Debug, Clone)]
pub struct Tier1Cache {
    config: Tier1Config,
    policy: RetryPolicy,
    rng: DetRng,
    now_ms: u64,
    segments: BTreeMap<SegmentKey, SegmentRecord>,
    artifacts: BTreeMap<SegmentKey, Artifact>,
    /// Evictable artifacts by access sequence, least recently used first.
    evictable: BTreeMap<u64, SegmentKey>,
    compressions: BTreeMap<SegmentKey, CompressionJob>,
    compression_queue: BTreeMap<u64, SegmentKey>,
    hydrations: BTreeMap<SegmentKey, HydrationJob>,
    hydration_queue: BTreeMap<HydrationQueuePosition, SegmentKey>,
    timers: BTreeSet<(u64, RetryTimer)>,
    io_owners: BTreeMap<IoId, IoOwner>,
    requests: VecDeque<(IoId, IoRequest)>,
    events: VecDeque<Tier1Event>,
    next_io_id: u64,
    next_access_sequence: u64,
    next_job_sequence: u64,
    total_bytes: u64,
    evicting_bytes: u64,
    compressions_in_flight: u32,
    hydrations_in_flight: u32,
    gauge: ResidencyGauge,
    latency_window_ms: VecDeque<u64>,
    compressions_succeeded: u64,
    compression_failures: u64,
    compression_retries: u64,
    hydrations_succeeded: u64,
    hydration_failures: u64,
    hydration_retries: u64,
    evictions: u64,
}

impl Tier1Cache {
    /// An empty cache. The config must be valid (deserialising validates it); `rng`
    /// draws the retry jitter (seed it from the simulator's root seed).
    #[must_use]
    pub fn new(config: Tier1Config, rng: DetRng) -> Self {
        assert!(
            config.validate().is_ok(),
            "Tier 1 config used without validation: {config:?}"
        );
        let cache = Tier1Cache {
            config,
            policy: config.retry_policy(),
            rng,
            now_ms: 0,
            segments: BTreeMap::new(),
            artifacts: BTreeMap::new(),
            evictable: BTreeMap::new(),
            compressions: BTreeMap::new(),
            compression_queue: BTreeMap::new(),
            hydrations: BTreeMap::new(),
            hydration_queue: BTreeMap::new(),
            timers: BTreeSet::new(),
            io_owners: BTreeMap::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            next_io_id: 0,
            next_access_sequence: 0,
            next_job_sequence: 0,
            total_bytes: 0,
            evicting_bytes: 0,
            compressions_in_flight: 0,
            hydrations_in_flight: 0,
            gauge: ResidencyGauge::default(),
            latency_window_ms: VecDeque::new(),
            compressions_succeeded: 0,
            compression_failures: 0,
            compression_retries: 0,
            hydrations_succeeded: 0,
            hydration_failures: 0,
            hydration_retries: 0,
            evictions: 0,
        };
        cache.check_invariants();
        cache
    }

    #[must_use]
    pub fn config(&self) -> &Tier1Config {
        &self.config
    }

    // ---- Inputs ----

    /// Queues the compression of the sealed segment `key` (`segment_bytes_len` bytes,
    /// resident in Tier 0) into its artifact. Compressions start in arrival order as
    /// slots free. A segment unknown to Tier 1 is recorded as resident in Tier 0.
    pub fn enqueue_compression(
        &mut self,
        now_ms: u64,
        key: SegmentKey,
        segment_bytes_len: u64,
    ) -> Result<(), Tier1Error> {
        self.advance(now_ms);
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes_len) {
            return Err(Tier1Error::SegmentSize {
                key,
                bytes: segment_bytes_len,
                min: SEGMENT_BYTES_MIN,
                max: SEGMENT_BYTES_MAX,
            });
        }
        if self.compressions.contains_key(&key) {
            return Err(Tier1Error::CompressionPending { key });
        }
        if self.hydrations.contains_key(&key) {
            return Err(Tier1Error::HydrationPending { key });
        }
        if self.artifacts.contains_key(&key) {
            return Err(Tier1Error::ArtifactPresent { key });
        }
        if let Some(record) = self.segments.get(&key)
            && record.residency != Residency::ResidentInTier0
        {
            let residency = record.residency;
            return Err(Tier1Error::NotInTier0 { key, residency });
        }
        if self.compressions.len() >= TIER1_COMPRESSION_QUEUE_MAX as usize {
            return Err(Tier1Error::CompressionQueueFull {
                limit: TIER1_COMPRESSION_QUEUE_MAX,
            });
        }
        if !self.segments.contains_key(&key) {
            self.set_residency(&key, Residency::ResidentInTier0);
        }
        let sequence = self.take_job_sequence();
        let job = CompressionJob {
            segment_bytes: segment_bytes_len,
            sequence,
            attempt: 0,
            compressed: None,
            phase: CompressionPhase::Waiting,
        };
        self.compressions.insert(key.clone(), job);
        self.compression_queue.insert(sequence, key);
        self.pump();
        Ok(())
    }

    /// Requests the hydration of `key` into Tier 0: from its Tier 1 artifact if there is
    /// one, else from Tier 2. Hydrations start by priority, then arrival, as slots free.
    /// A second request while one is pending is coalesced into it. The residency becomes
    /// `StagedForTier0` until the outcome.
    pub fn request_hydration(
        &mut self,
        now_ms: u64,
        key: SegmentKey,
        priority: HydrationPriority,
    ) -> Result<HydrationRequested, Tier1Error> {
        self.advance(now_ms);
        if let Some(job) = self.hydrations.get_mut(&key) {
            if priority > job.priority {
                if job.phase == HydrationPhase::Waiting {
                    let removed = self.hydration_queue.remove(&job.queue_position());
                    assert_eq!(removed.as_ref(), Some(&key), "queue and jobs agree");
                    job.priority = priority;
                    self.hydration_queue.insert(job.queue_position(), key);
                } else {
                    job.priority = priority;
                }
                self.pump();
            }
            return Ok(HydrationRequested::AlreadyPending);
        }
        if let Some(record) = self.segments.get(&key)
            && record.residency == Residency::ResidentInTier0
        {
            return Err(Tier1Error::ResidentInTier0 { key });
        }
        assert!(
            !self.compressions.contains_key(&key),
            "compression of {key} pending while it is not in Tier 0"
        );
        if self.hydrations.len() >= TIER1_HYDRATION_QUEUE_MAX as usize {
            return Err(Tier1Error::HydrationQueueFull {
                limit: TIER1_HYDRATION_QUEUE_MAX,
            });
        }
        self.set_residency(&key, Residency::StagedForTier0);
        if self
            .artifacts
            .get(&key)
            .is_some_and(|artifact| !artifact.is_evicting())
        {
            self.update_artifact(&key, |artifact| artifact.hydrating = true);
        }
        let job = HydrationJob {
            priority,
            sequence: self.take_job_sequence(),
            requested_at_ms: now_ms,
            attempt: 0,
            source: HydrationSource::Tier1,
            avoid_tier1: false,
            to_store: None,
            segment: None,
            phase: HydrationPhase::Waiting,
        };
        self.hydration_queue
            .insert(job.queue_position(), key.clone());
        self.hydrations.insert(key, job);
        self.pump();
        Ok(HydrationRequested::Queued)
    }

    /// Tier 2 holds `key` and the manifest's `UploadDone` is committed: its artifact
    /// may be evicted from now on. Idempotent. A segment unknown to Tier 1 is recorded
    /// as `UploadedToTier2` (call [`Tier1Cache::set_resident_in_tier0`] if it is).
    pub fn mark_uploaded(&mut self, key: &SegmentKey) {
        match self.segments.get(key).copied() {
            None => {
                self.set_residency(key, Residency::UploadedToTier2);
                self.segments.get_mut(key).expect("just set").uploaded = true;
            }
            Some(record) => {
                self.segments
                    .get_mut(key)
                    .expect("looked up above")
                    .uploaded = true;
                if record.residency == Residency::WarmInTier1 {
                    self.set_residency(key, Residency::UploadedToTier2);
                }
            }
        }
        if self
            .artifacts
            .get(key)
            .is_some_and(|artifact| !artifact.uploaded)
        {
            self.update_artifact(key, |artifact| artifact.uploaded = true);
        }
        self.pump();
    }

    /// Records a read of `key`'s artifact, moving it to the most recent end of the LRU.
    pub fn touch(&mut self, now_ms: u64, key: &SegmentKey) -> Result<(), Tier1Error> {
        self.advance(now_ms);
        match self.artifacts.get(key) {
            None => Err(Tier1Error::NotPresent { key: key.clone() }),
            Some(artifact) if artifact.is_evicting() => {
                Err(Tier1Error::ArtifactEvicting { key: key.clone() })
            }
            Some(_) => {
                self.access(key);
                Ok(())
            }
        }
    }

    /// Adopts an artifact found on disk at recovery (`bytes` long; `uploaded` if the
    /// manifest says Tier 2 holds it). A segment unknown to Tier 1 is recorded as
    /// `UploadedToTier2` or `WarmInTier1`.
    pub fn register_artifact(
        &mut self,
        now_ms: u64,
        key: SegmentKey,
        bytes: u64,
        uploaded: bool,
    ) -> Result<(), Tier1Error> {
        self.advance(now_ms);
        if bytes == 0 {
            return Err(Tier1Error::EmptyArtifact { key });
        }
        if self.artifacts.contains_key(&key) {
            return Err(Tier1Error::ArtifactPresent { key });
        }
        if self.compressions.contains_key(&key) {
            return Err(Tier1Error::CompressionPending { key });
        }
        if self.hydrations.contains_key(&key) {
            return Err(Tier1Error::HydrationPending { key });
        }
        let uploaded = match self.segments.get_mut(&key) {
            Some(record) => {
                record.uploaded |= uploaded;
                record.uploaded
            }
            None => {
                let residency = if uploaded {
                    Residency::UploadedToTier2
                } else {
                    Residency::WarmInTier1
                };
                self.set_residency(&key, residency);
                self.segments.get_mut(&key).expect("just set").uploaded = uploaded;
                uploaded
            }
        };
        self.insert_artifact(key, bytes, uploaded, false);
        self.pump();
        Ok(())
    }

    /// The segment file of `key` is in Tier 0 (a sealed segment, or one recovery
    /// restored). Panics while a hydration of `key` is pending (Tier 1 owns that
    /// transition).
    pub fn set_resident_in_tier0(&mut self, key: &SegmentKey) {
        assert!(
            !self.hydrations.contains_key(key),
            "segment {key} set resident in Tier 0 while Tier 1 hydrates it"
        );
        self.set_residency(key, Residency::ResidentInTier0);
    }

    /// Tier 0 dropped the segment file of `key`. It becomes `UploadedToTier2` if Tier 2
    /// holds it, else `WarmInTier1`. Panics if it was not resident in Tier 0, is still
    /// being compressed, or has no other copy (Tier 0 evicted it too early).
    pub fn note_evicted_from_tier0(&mut self, key: &SegmentKey) {
        let record = *self
            .segments
            .get(key)
            .unwrap_or_else(|| panic!("segment {key} evicted from Tier 0 unknown to Tier 1"));
        assert_eq!(
            record.residency,
            Residency::ResidentInTier0,
            "segment {key} evicted from Tier 0 while not resident there"
        );
        assert!(
            !self.compressions.contains_key(key),
            "segment {key} evicted from Tier 0 while being compressed"
        );
        let residency = if record.uploaded {
            Residency::UploadedToTier2
        } else {
            assert!(
                self.artifacts.contains_key(key),
                "segment {key} evicted from Tier 0 with no copy in Tier 1 or Tier 2"
            );
            Residency::WarmInTier1
        };
        self.set_residency(key, residency);
    }

    /// Starts removing the artifact of `key` now, whatever the budget: retention is
    /// deleting the segment from every tier. The eviction rules hold (Tier 2 holds it,
    /// no hydration of it is pending) and it ends like a budget eviction, in
    /// [`Tier1Event::Evicted`] or [`Tier1Event::EvictionFailed`].
    ///
    /// `Ok(true)`: the removal started. `Ok(false)`: nothing to do, no artifact is held
    /// or its removal is under way. `HydrationPending` or `NotEvictable` (not uploaded,
    /// backing off after a failed removal, or out of attempts): retry later.
    pub fn evict_now(&mut self, now_ms: u64, key: &SegmentKey) -> Result<bool, Tier1Error> {
        self.advance(now_ms);
        let Some(artifact) = self.artifacts.get(key).copied() else {
            return Ok(false);
        };
        if artifact.is_evicting() {
            return Ok(false);
        }
        if self.hydrations.contains_key(key) {
            return Err(Tier1Error::HydrationPending { key: key.clone() });
        }
        let not_evictable = |reason| Tier1Error::NotEvictable {
            key: key.clone(),
            reason,
        };
        if !artifact.uploaded {
            return Err(not_evictable("Tier 2 does not hold it yet"));
        }
        if artifact.eviction_retry_at_ms.is_some() {
            return Err(not_evictable("a failed removal is backing off"));
        }
        if artifact.eviction_failures >= self.policy.max_attempts {
            return Err(not_evictable("its removal failed too often"));
        }
        assert!(artifact.is_evictable(self.policy.max_attempts));
        self.start_eviction(key.clone());
        self.pump();
        Ok(true)
    }

    /// Forgets `key` (retention deleted it everywhere). Fails if work is pending or an
    /// artifact is held.
    pub fn forget_segment(&mut self, key: &SegmentKey) -> Result<(), Tier1Error> {
        if self.compressions.contains_key(key)
            || self.hydrations.contains_key(key)
            || self.artifacts.contains_key(key)
        {
            return Err(Tier1Error::Busy { key: key.clone() });
        }
        if let Some(record) = self.segments.remove(key) {
            *self.gauge.count_mut(record.residency) -= 1;
        }
        Ok(())
    }

    /// Delivers the outcome of request `id`. Panics on an id that is unknown, not yet
    /// polled or already completed, or a completion of the wrong kind (driver bugs).
    pub fn handle_completion(&mut self, now_ms: u64, id: IoId, completion: IoCompletion) {
        self.advance(now_ms);
        if let Some((front, _)) = self.requests.front() {
            assert!(
                id < *front,
                "completion of request {id:?} before it was polled"
            );
        }
        let owner = self
            .io_owners
            .remove(&id)
            .unwrap_or_else(|| panic!("completion of unknown request {id:?}"));
        match owner {
            IoOwner::Compression(key) => self.handle_compression_completion(key, id, completion),
            IoOwner::Hydration(key) => self.handle_hydration_completion(key, id, completion),
            IoOwner::Eviction(key) => self.handle_eviction_completion(key, id, completion),
        }
        self.pump();
    }

    /// Fires every timer due at `now_ms` (retries start, evictions may be tried again).
    /// Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        // Each timer fires once and is not re-armed here, so the timer count bounds the
        // loop.
        while let Some((deadline_ms, _)) = self.timers.first() {
            if *deadline_ms > now_ms {
                break;
            }
            let (deadline_ms, timer) = self.timers.pop_first().expect("peeked above");
            match timer {
                RetryTimer::Compression(key) => {
                    let job = self.compressions.get_mut(&key).expect("timer of a job");
                    assert_eq!(job.phase, CompressionPhase::Backoff { deadline_ms });
                    job.phase = CompressionPhase::Waiting;
                    let previous = self.compression_queue.insert(job.sequence, key);
                    assert!(previous.is_none(), "queue positions are unique");
                }
                RetryTimer::Hydration(key) => {
                    let job = self.hydrations.get_mut(&key).expect("timer of a job");
                    assert_eq!(job.phase, HydrationPhase::Backoff { deadline_ms });
                    job.phase = HydrationPhase::Waiting;
                    let previous = self.hydration_queue.insert(job.queue_position(), key);
                    assert!(previous.is_none(), "queue positions are unique");
                }
                RetryTimer::Eviction(key) => {
                    self.update_artifact(&key, |artifact| {
                        assert_eq!(artifact.eviction_retry_at_ms, Some(deadline_ms));
                        artifact.eviction_retry_at_ms = None;
                    });
                }
            }
        }
        self.pump();
    }

    // ---- Outputs ----

    /// The next IO request for the driver.
    pub fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
        self.requests.pop_front()
    }

    /// The next log event.
    pub fn poll_event(&mut self) -> Option<Tier1Event> {
        self.events.pop_front()
    }

    /// When [`Tier1Cache::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|(deadline_ms, _)| *deadline_ms)
    }

    // ---- Queries ----

    /// The residency of `key`, if Tier 1 knows it.
    #[must_use]
    pub fn residency(&self, key: &SegmentKey) -> Option<Residency> {
        self.segments.get(key).map(|record| record.residency)
    }

    /// The artifact of `key`, if held.
    #[must_use]
    pub fn artifact(&self, key: &SegmentKey) -> Option<ArtifactState> {
        self.artifacts.get(key).map(|artifact| ArtifactState {
            bytes: artifact.bytes,
            uploaded: artifact.uploaded,
            hydrating: artifact.hydrating,
            evicting: artifact.is_evicting(),
            evictable: artifact.is_evictable(self.policy.max_attempts),
            last_access_ms: artifact.last_access_ms,
        })
    }

    /// Whether a compression of `key` is pending.
    #[must_use]
    pub fn is_compressing(&self, key: &SegmentKey) -> bool {
        self.compressions.contains_key(key)
    }

    /// Whether a hydration of `key` is pending.
    #[must_use]
    pub fn is_hydrating(&self, key: &SegmentKey) -> bool {
        self.hydrations.contains_key(key)
    }

    /// Evictable artifacts, least recently used first: the order evictions take.
    pub fn eviction_order(&self) -> impl Iterator<Item = &SegmentKey> {
        self.evictable.values()
    }

    /// The metrics snapshot. Cost: sorting the latency window.
    #[must_use]
    pub fn metrics(&self) -> Tier1MetricsSnapshot {
        let mut sorted: Vec<u64> = self.latency_window_ms.iter().copied().collect();
        sorted.sort_unstable();
        Tier1MetricsSnapshot {
            total_bytes: self.total_bytes,
            max_bytes: self.config.max_bytes,
            over_budget_bytes: self.claimed_bytes().saturating_sub(self.config.max_bytes),
            hydration_queue_depth: self.hydrations.len() as u64
                - u64::from(self.hydrations_in_flight),
            compression_queue_depth: self.compressions.len() as u64
                - u64::from(self.compressions_in_flight),
            hydrations_in_flight: u64::from(self.hydrations_in_flight),
            compressions_in_flight: u64::from(self.compressions_in_flight),
            hydration_latency_p50_ms: percentile(&sorted, 50),
            hydration_latency_p90_ms: percentile(&sorted, 90),
            hydration_latency_p99_ms: percentile(&sorted, 99),
            hydration_latency_samples: sorted.len() as u64,
            residency: self.gauge,
            artifacts: self.artifacts.len() as u64,
            compressions: self.compressions_succeeded,
            compression_failures: self.compression_failures,
            compression_retries: self.compression_retries,
            hydrations: self.hydrations_succeeded,
            hydration_failures: self.hydration_failures,
            hydration_retries: self.hydration_retries,
            evictions: self.evictions,
        }
    }

    /// Checks every invariant in the module doc; panics on the first broken one. Cost
    /// is linear in segments, artifacts, jobs and outstanding requests.
    pub fn check_invariants(&self) {
        assert!(self.config.validate().is_ok());
        assert_eq!(self.policy, self.config.retry_policy());
        let max_attempts = self.policy.max_attempts;
        let mut owners_seen = 0usize;
        let owner_of = |id: IoId| self.io_owners.get(&id);

        // Segments and the gauge.
        let mut gauge = ResidencyGauge::default();
        for (key, record) in &self.segments {
            *gauge.count_mut(record.residency) += 1;
            assert_eq!(
                record.residency == Residency::StagedForTier0,
                self.hydrations.contains_key(key),
                "{key}: StagedForTier0 exactly while a hydration is pending"
            );
            match record.residency {
                Residency::WarmInTier1 => {
                    assert!(!record.uploaded, "{key}: warm-only but uploaded");
                    assert!(self.artifacts.contains_key(key), "{key}: warm, no artifact");
                }
                Residency::UploadedToTier2 => assert!(record.uploaded, "{key}: not uploaded"),
                Residency::ResidentInTier0
                | Residency::StagedForTier0
                | Residency::NeedsRecovery => {}
            }
        }
        assert_eq!(self.gauge, gauge, "residency gauge");

        // Artifacts and byte accounting.
        let mut total_bytes = 0u64;
        let mut evicting_bytes = 0u64;
        let mut evictable_count = 0usize;
        let mut access_sequences = BTreeSet::new();
        for (key, artifact) in &self.artifacts {
            let record = self
                .segments
                .get(key)
                .expect("an artifact's segment is known");
            assert_eq!(artifact.uploaded, record.uploaded, "{key}: uploaded flag");
            assert!(artifact.bytes > 0, "{key}: empty artifact");
            assert!(artifact.last_access_ms <= self.now_ms, "{key}: access time");
            assert!(artifact.access_sequence < self.next_access_sequence);
            assert!(
                access_sequences.insert(artifact.access_sequence),
                "{key}: access sequence not unique"
            );
            assert!(
                !self.compressions.contains_key(key),
                "{key}: compression pending with an artifact"
            );
            assert!(artifact.eviction_failures <= max_attempts);
            match artifact.phase {
                ArtifactPhase::Resident => {
                    assert_eq!(
                        artifact.hydrating,
                        self.hydrations.contains_key(key),
                        "{key}: hydrating flag"
                    );
                }
                ArtifactPhase::Removing { io } | ArtifactPhase::SyncingDir { io } => {
                    assert!(
                        artifact.uploaded,
                        "{key}: removing an artifact not uploaded"
                    );
                    assert!(!artifact.hydrating, "{key}: removing while hydrating");
                    assert_eq!(artifact.eviction_retry_at_ms, None);
                    assert_eq!(owner_of(io), Some(&IoOwner::Eviction(key.clone())));
                    owners_seen += 1;
                    evicting_bytes += artifact.bytes;
                }
            }
            if let Some(deadline_ms) = artifact.eviction_retry_at_ms {
                assert!(
                    self.timers
                        .contains(&(deadline_ms, RetryTimer::Eviction(key.clone()))),
                    "{key}: eviction backoff without its timer"
                );
            }
            if artifact.is_evictable(max_attempts) {
                assert_eq!(
                    self.evictable.get(&artifact.access_sequence),
                    Some(key),
                    "{key}: missing from the eviction index"
                );
                evictable_count += 1;
            }
            total_bytes += artifact.bytes;
        }
        assert_eq!(
            self.evictable.len(),
            evictable_count,
            "stale eviction index"
        );
        assert_eq!(self.total_bytes, total_bytes, "total_bytes");
        assert_eq!(self.evicting_bytes, evicting_bytes, "evicting_bytes");
        assert!(
            self.claimed_bytes() <= self.config.max_bytes || self.evictable.is_empty(),
            "over budget while something is evictable"
        );

        // Compressions.
        assert!(self.compressions.len() <= TIER1_COMPRESSION_QUEUE_MAX as usize);
        let mut running = 0u32;
        let mut waiting = 0usize;
        for (key, job) in &self.compressions {
            let record = self.segments.get(key).expect("a job's segment is known");
            assert_eq!(
                record.residency,
                Residency::ResidentInTier0,
                "{key}: compressing"
            );
            assert!(job.attempt <= max_attempts, "{key}: attempts");
            assert!(job.sequence < self.next_job_sequence);
            assert!(
                (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&job.segment_bytes),
                "{key}: segment size"
            );
            match &job.phase {
                CompressionPhase::Waiting => {
                    assert_eq!(self.compression_queue.get(&job.sequence), Some(key));
                    waiting += 1;
                }
                CompressionPhase::Backoff { deadline_ms } => {
                    assert!(job.attempt >= 1 && job.attempt < max_attempts);
                    assert!(
                        self.timers
                            .contains(&(*deadline_ms, RetryTimer::Compression(key.clone())))
                    );
                }
                CompressionPhase::ReadingSegment { .. }
                | CompressionPhase::Compressing { .. }
                | CompressionPhase::WritingArtifact { .. } => {
                    assert!(job.attempt >= 1, "{key}: running before its first attempt");
                    let io = job.io().expect("a running job has a request");
                    assert_eq!(owner_of(io), Some(&IoOwner::Compression(key.clone())));
                    owners_seen += 1;
                    running += 1;
                }
            }
            if let CompressionPhase::WritingArtifact { write, .. } = &job.phase {
                let compressed = job
                    .compressed
                    .as_ref()
                    .expect("writing what was compressed");
                assert_eq!(write.bytes, compressed.artifact);
                assert_eq!(
                    write.target,
                    names::artifact_path(&key.stream, key.segment_id)
                );
            }
        }
        assert_eq!(self.compression_queue.len(), waiting, "compression queue");
        assert_eq!(
            self.compressions_in_flight, running,
            "compressions in flight"
        );
        assert!(running <= self.config.compression_concurrency);

        // Hydrations.
        assert!(self.hydrations.len() <= TIER1_HYDRATION_QUEUE_MAX as usize);
        let mut running = 0u32;
        let mut waiting = 0usize;
        for (key, job) in &self.hydrations {
            assert!(job.attempt <= max_attempts, "{key}: attempts");
            assert!(job.sequence < self.next_job_sequence);
            assert!(job.requested_at_ms <= self.now_ms);
            let artifact = self.artifacts.get(key);
            match &job.phase {
                HydrationPhase::Waiting => {
                    assert_eq!(self.hydration_queue.get(&job.queue_position()), Some(key));
                    waiting += 1;
                }
                HydrationPhase::Backoff { deadline_ms } => {
                    assert!(job.attempt >= 1 && job.attempt < max_attempts);
                    assert!(
                        self.timers
                            .contains(&(*deadline_ms, RetryTimer::Hydration(key.clone())))
                    );
                }
                phase => {
                    assert!(job.attempt >= 1, "{key}: running before its first attempt");
                    assert!(
                        artifact.is_none_or(|artifact| !artifact.is_evicting()),
                        "{key}: hydrating while its artifact is removed"
                    );
                    let io = job.io().expect("a running job has a request");
                    assert_eq!(owner_of(io), Some(&IoOwner::Hydration(key.clone())));
                    owners_seen += 1;
                    running += 1;
                    match phase {
                        HydrationPhase::ReadingArtifact { .. } => {
                            assert_eq!(job.source, HydrationSource::Tier1);
                            assert!(artifact.is_some(), "{key}: reading a missing artifact");
                            assert!(!job.avoid_tier1);
                        }
                        HydrationPhase::Fetching { .. } => {
                            assert_eq!(job.source, HydrationSource::Tier2);
                        }
                        HydrationPhase::StoringArtifact { write, .. } => {
                            assert_eq!(job.source, HydrationSource::Tier2);
                            assert!(artifact.is_none(), "{key}: storing over an artifact");
                            assert_eq!(Some(&write.bytes), job.to_store.as_ref());
                            assert!(job.segment.is_some(), "{key}: stored before validated");
                        }
                        HydrationPhase::WritingSegment { write, .. } => {
                            assert_eq!(Some(&write.bytes), job.segment.as_ref());
                            assert!(job.to_store.is_none(), "{key}: segment before artifact");
                            assert_eq!(
                                write.target,
                                names::segment_path(&key.stream, key.segment_id)
                            );
                        }
                        _ => {}
                    }
                }
            }
            if job.to_store.is_some() {
                assert!(artifact.is_none(), "{key}: would store over an artifact");
            }
        }
        assert_eq!(self.hydration_queue.len(), waiting, "hydration queue");
        assert_eq!(self.hydrations_in_flight, running, "hydrations in flight");
        assert!(running <= self.config.hydration_concurrency);

        // Every outstanding request belongs to exactly one phase holding it.
        assert_eq!(self.io_owners.len(), owners_seen, "orphan request ids");
        for id in self.io_owners.keys() {
            assert!(id.0 < self.next_io_id);
        }
        for (deadline_ms, timer) in &self.timers {
            match timer {
                RetryTimer::Compression(key) => assert_eq!(
                    self.compressions.get(key).map(|job| &job.phase),
                    Some(&CompressionPhase::Backoff {
                        deadline_ms: *deadline_ms
                    })
                ),
                RetryTimer::Hydration(key) => assert_eq!(
                    self.hydrations.get(key).map(|job| &job.phase),
                    Some(&HydrationPhase::Backoff {
                        deadline_ms: *deadline_ms
                    })
                ),
                RetryTimer::Eviction(key) => assert_eq!(
                    self.artifacts
                        .get(key)
                        .and_then(|artifact| artifact.eviction_retry_at_ms),
                    Some(*deadline_ms)
                ),
            }
        }
        assert!(self.latency_window_ms.len() <= TIER1_HYDRATION_LATENCY_SAMPLES_MAX as usize);
        assert!(self.requests.len() + self.events.len() <= TIER1_OUTPUTS_QUEUED_MAX as usize);
        for (id, _) in &self.requests {
            assert!(
                self.io_owners.contains_key(id),
                "queued request {id:?} owned"
            );
        }
    }

    // ---- Internals: bookkeeping ----

    fn advance(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms,
            "time went backwards: {now_ms} < {}",
            self.now_ms
        );
        self.now_ms = now_ms;
    }

    fn claimed_bytes(&self) -> u64 {
        assert!(self.evicting_bytes <= self.total_bytes);
        self.total_bytes - self.evicting_bytes
    }

    fn take_job_sequence(&mut self) -> u64 {
        let sequence = self.next_job_sequence;
        self.next_job_sequence += 1;
        sequence
    }

    fn take_access_sequence(&mut self) -> u64 {
        let sequence = self.next_access_sequence;
        self.next_access_sequence += 1;
        sequence
    }

    fn set_residency(&mut self, key: &SegmentKey, residency: Residency) {
        match self.segments.get_mut(key) {
            Some(record) => {
                *self.gauge.count_mut(record.residency) -= 1;
                record.residency = residency;
            }
            None => {
                self.segments.insert(
                    key.clone(),
                    SegmentRecord {
                        residency,
                        uploaded: false,
                    },
                );
            }
        }
        *self.gauge.count_mut(residency) += 1;
    }

    fn push_event(&mut self, event: Tier1Event) {
        assert!(
            self.requests.len() + self.events.len() < TIER1_OUTPUTS_QUEUED_MAX as usize,
            "Tier 1 outputs not drained"
        );
        self.events.push_back(event);
    }

    /// Queues `request` for the driver on behalf of `owner`; returns its id.
    fn issue(&mut self, owner: IoOwner, request: IoRequest) -> IoId {
        assert!(
            self.requests.len() + self.events.len() < TIER1_OUTPUTS_QUEUED_MAX as usize,
            "Tier 1 outputs not drained"
        );
        let id = IoId(self.next_io_id);
        self.next_io_id += 1;
        let previous = self.io_owners.insert(id, owner);
        assert!(previous.is_none(), "request ids are unique");
        self.requests.push_back((id, request));
        id
    }

    fn issue_write(&mut self, owner: IoOwner, write: &DurableWrite) -> IoId {
        self.issue(owner, IoRequest::Disk(write.request()))
    }

    /// Adds `artifact`'s share to the counters and the eviction index.
    fn account(&mut self, key: &SegmentKey, artifact: &Artifact) {
        self.total_bytes = self
            .total_bytes
            .checked_add(artifact.bytes)
            .expect("bytes of artifacts fit u64");
        if artifact.is_evicting() {
            self.evicting_bytes += artifact.bytes;
        }
        if artifact.is_evictable(self.policy.max_attempts) {
            let previous = self.evictable.insert(artifact.access_sequence, key.clone());
            assert!(previous.is_none(), "access sequences are unique");
        }
    }

    /// Removes `artifact`'s share from the counters and the eviction index.
    fn unaccount(&mut self, key: &SegmentKey, artifact: &Artifact) {
        self.total_bytes -= artifact.bytes;
        if artifact.is_evicting() {
            self.evicting_bytes -= artifact.bytes;
        }
        if artifact.is_evictable(self.policy.max_attempts) {
            let removed = self.evictable.remove(&artifact.access_sequence);
            assert_eq!(removed.as_ref(), Some(key), "eviction index out of date");
        }
    }

    /// Changes the artifact of `key` through `change`, keeping counters and the index in
    /// step. Panics if there is none.
    fn update_artifact<R>(
        &mut self,
        key: &SegmentKey,
        change: impl FnOnce(&mut Artifact) -> R,
    ) -> R {
        let mut artifact = *self
            .artifacts
            .get(key)
            .unwrap_or_else(|| panic!("segment {key} has no artifact"));
        self.unaccount(key, &artifact);
        let result = change(&mut artifact);
        self.account(key, &artifact);
        *self.artifacts.get_mut(key).expect("looked up above") = artifact;
        result
    }

    fn insert_artifact(&mut self, key: SegmentKey, bytes: u64, uploaded: bool, hydrating: bool) {
        assert!(!self.artifacts.contains_key(&key), "{key}: artifact twice");
        assert!(bytes > 0);
        let artifact = Artifact {
            bytes,
            uploaded,
            hydrating,
            eviction_failures: 0,
            eviction_retry_at_ms: None,
            last_access_ms: self.now_ms,
            access_sequence: self.take_access_sequence(),
            phase: ArtifactPhase::Resident,
        };
        self.account(&key, &artifact);
        self.artifacts.insert(key, artifact);
    }

    fn remove_artifact(&mut self, key: &SegmentKey) -> Artifact {
        let artifact = self
            .artifacts
            .remove(key)
            .expect("callers checked presence");
        self.unaccount(key, &artifact);
        if let Some(deadline_ms) = artifact.eviction_retry_at_ms {
            let removed = self
                .timers
                .remove(&(deadline_ms, RetryTimer::Eviction(key.clone())));
            assert!(removed, "eviction backoff had its timer");
        }
        artifact
    }

    fn access(&mut self, key: &SegmentKey) {
        let access_sequence = self.take_access_sequence();
        let now_ms = self.now_ms;
        self.update_artifact(key, |artifact| {
            assert!(
                !artifact.is_evicting(),
                "access to an artifact being removed"
            );
            artifact.access_sequence = access_sequence;
            artifact.last_access_ms = now_ms;
        });
    }

    /// Schedules a retry of an attempt that failed with `reason`, if one is allowed;
    /// returns the delay. Draws jitter from the RNG only when a retry is scheduled.
    fn retry_delay_ms(&mut self, attempt: u32, reason: &Tier1Failure) -> Option<u64> {
        if !reason.is_retryable() {
            return None;
        }
        self.policy.delay_ms(attempt, &mut self.rng)
    }

    /// Brings the machine to rest: starts jobs into free slots and sheds bytes over
    /// budget.
    fn pump(&mut self) {
        // Each round starts one queued job, so the queue length bounds the loop.
        while self.compressions_in_flight < self.config.compression_concurrency {
            let Some((_, key)) = self.compression_queue.pop_first() else {
                break;
            };
            self.start_compression(key);
        }
        let free = self.config.hydration_concurrency - self.hydrations_in_flight;
        let startable: Vec<SegmentKey> = self
            .hydration_queue
            .values()
            .filter(|key| {
                // A hydration waits while its artifact is being removed: it must
                // neither read it nor write a new one under the removal.
                self.artifacts
                    .get(key)
                    .is_none_or(|artifact| !artifact.is_evicting())
            })
            .take(free as usize)
            .cloned()
            .collect();
        for key in startable {
            let position = self.hydrations[&key].queue_position();
            let removed = self.hydration_queue.remove(&position);
            assert_eq!(removed.as_ref(), Some(&key));
            self.start_hydration(key);
        }
        assert!(self.hydrations_in_flight <= self.config.hydration_concurrency);
        // Each round starts one eviction, so the artifact count bounds the loop.
        while self.claimed_bytes() > self.config.max_bytes {
            let Some((_, key)) = self.evictable.first_key_value() else {
                break;
            };
            let key = key.clone();
            self.start_eviction(key);
        }
    }

    // ---- Internals: compression ----

    fn start_compression(&mut self, key: SegmentKey) {
        let mut job = self.compressions.remove(&key).expect("queued job exists");
        assert_eq!(job.phase, CompressionPhase::Waiting);
        assert!(
            job.attempt < self.policy.max_attempts,
            "{key}: attempts left"
        );
        job.attempt += 1;
        self.compressions_in_flight += 1;
        self.push_event(Tier1Event::CompressionStarted {
            key: key.clone(),
            attempt: job.attempt,
        });
        let owner = IoOwner::Compression(key.clone());
        job.phase = match &job.compressed {
            Some(compressed) => {
                let write = DurableWrite::new(
                    names::artifact_path(&key.stream, key.segment_id),
                    compressed.artifact.clone(),
                );
                let io = self.issue_write(owner, &write);
                CompressionPhase::WritingArtifact { io, write }
            }
            None => {
                let request = DiskRequest::ReadAt {
                    path: names::segment_path(&key.stream, key.segment_id),
                    offset: 0,
                    length: job.segment_bytes,
                };
                let io = self.issue(owner, IoRequest::Disk(request));
                CompressionPhase::ReadingSegment { io }
            }
        };
        self.compressions.insert(key, job);
    }

    fn handle_compression_completion(
        &mut self,
        key: SegmentKey,
        id: IoId,
        completion: IoCompletion,
    ) {
        let mut job = self
            .compressions
            .remove(&key)
            .expect("owner map and jobs agree");
        assert_eq!(job.io(), Some(id), "{key}: completion of another request");
        let phase = std::mem::replace(&mut job.phase, CompressionPhase::Waiting);
        let owner = IoOwner::Compression(key.clone());
        let outcome = match (phase, completion) {
            (CompressionPhase::ReadingSegment { .. }, IoCompletion::Disk(disk)) => match disk {
                DiskCompletion::Read(segment) => {
                    let read_bytes = segment.len() as u64;
                    assert!(
                        read_bytes <= job.segment_bytes,
                        "{key}: read returned more than asked"
                    );
                    if read_bytes == job.segment_bytes {
                        let request = CpuJob::Compress {
                            segment,
                            frame_raw_bytes_target: self.config.frame_raw_bytes_target,
                            compression_level: self.config.compression_level,
                        };
                        let io = self.issue(owner, IoRequest::Cpu(request));
                        job.phase = CompressionPhase::Compressing { io };
                        Ok(())
                    } else {
                        Err(Tier1Failure::ShortRead {
                            step: IoStep::ReadSegment,
                            expected_bytes: job.segment_bytes,
                            read_bytes,
                        })
                    }
                }
                DiskCompletion::Failed(kind) => Err(Tier1Failure::Disk {
                    step: IoStep::ReadSegment,
                    kind,
                }),
                other => panic!("{key}: read of the segment completed as {other:?}"),
            },
            (CompressionPhase::Compressing { .. }, IoCompletion::Cpu(result)) => match result {
                CpuResult::Compressed {
                    artifact,
                    frame_count,
                    checksum,
                } => {
                    assert!(!artifact.is_empty(), "{key}: compression gave no bytes");
                    assert!(frame_count >= 1, "{key}: compression gave no frame");
                    let write = DurableWrite::new(
                        names::artifact_path(&key.stream, key.segment_id),
                        artifact.clone(),
                    );
                    job.compressed = Some(Compressed {
                        original_bytes: job.segment_bytes,
                        artifact,
                        frame_count,
                        checksum,
                    });
                    let io = self.issue_write(owner, &write);
                    job.phase = CompressionPhase::WritingArtifact { io, write };
                    Ok(())
                }
                CpuResult::Failed { reason } => Err(Tier1Failure::Cpu {
                    step: IoStep::Compress,
                    reason,
                }),
                other @ CpuResult::Decompressed { .. } => {
                    panic!("{key}: compression completed as {other:?}")
                }
            },
            (CompressionPhase::WritingArtifact { write, .. }, IoCompletion::Disk(disk)) => {
                match disk {
                    DiskCompletion::Done => match write.advance() {
                        Some(next) => {
                            let io = self.issue_write(owner, &next);
                            job.phase = CompressionPhase::WritingArtifact { io, write: next };
                            Ok(())
                        }
                        None => {
                            self.finish_compression(key, job);
                            return;
                        }
                    },
                    DiskCompletion::Failed(kind) => Err(Tier1Failure::Disk {
                        step: write.io_step(),
                        kind,
                    }),
                    other => panic!("{key}: {:?} completed as {other:?}", write.step),
                }
            }
            (phase, completion) => {
                panic!("{key}: compression in {phase:?} got the wrong completion {completion:?}")
            }
        };
        match outcome {
            Ok(()) => {
                self.compressions.insert(key, job);
            }
            Err(reason) => self.fail_compression(key, job, reason),
        }
    }

    fn finish_compression(&mut self, key: SegmentKey, job: CompressionJob) {
        self.compressions_in_flight -= 1;
        let compressed = job.compressed.expect("a written artifact was compressed");
        let uploaded = self.segments[&key].uploaded;
        let compressed_bytes = compressed.artifact.len() as u64;
        self.insert_artifact(key.clone(), compressed_bytes, uploaded, false);
        self.compressions_succeeded += 1;
        self.push_event(Tier1Event::CompressionSucceeded {
            key,
            original_bytes: compressed.original_bytes,
            compressed_bytes,
            frame_count: compressed.frame_count,
            checksum: compressed.checksum,
        });
    }

    fn fail_compression(&mut self, key: SegmentKey, mut job: CompressionJob, reason: Tier1Failure) {
        self.compressions_in_flight -= 1;
        match self.retry_delay_ms(job.attempt, &reason) {
            Some(delay_ms) => {
                let deadline_ms = self.now_ms + delay_ms;
                job.phase = CompressionPhase::Backoff { deadline_ms };
                self.timers
                    .insert((deadline_ms, RetryTimer::Compression(key.clone())));
                self.compression_retries += 1;
                self.push_event(Tier1Event::CompressionRetryScheduled {
                    key: key.clone(),
                    attempt: job.attempt,
                    delay_ms,
                    reason,
                });
                self.compressions.insert(key, job);
            }
            None => {
                self.compression_failures += 1;
                self.push_event(Tier1Event::CompressionFailed {
                    key,
                    reason,
                    attempts: job.attempt,
                });
            }
        }
    }

    // ---- Internals: hydration ----

    fn start_hydration(&mut self, key: SegmentKey) {
        let mut job = self.hydrations.remove(&key).expect("queued job exists");
        assert_eq!(job.phase, HydrationPhase::Waiting);
        assert!(
            job.attempt < self.policy.max_attempts,
            "{key}: attempts left"
        );
        job.attempt += 1;
        self.hydrations_in_flight += 1;
        let owner = IoOwner::Hydration(key.clone());
        match (&job.segment, &job.to_store) {
            // Validated bytes are in memory: redo the failed write from a fresh temp file.
            (Some(segment), to_store) => {
                self.push_event(Tier1Event::HydrationStarted {
                    key: key.clone(),
                    source: job.source,
                    attempt: job.attempt,
                });
                job.phase = match to_store {
                    Some(artifact) => {
                        let write = DurableWrite::new(
                            names::artifact_path(&key.stream, key.segment_id),
                            artifact.clone(),
                        );
                        let io = self.issue_write(owner, &write);
                        HydrationPhase::StoringArtifact { io, write }
                    }
                    None => {
                        let write = DurableWrite::new(
                            names::segment_path(&key.stream, key.segment_id),
                            segment.clone(),
                        );
                        let io = self.issue_write(owner, &write);
                        HydrationPhase::WritingSegment { io, write }
                    }
                };
            }
            (None, to_store) => {
                assert!(
                    to_store.is_none(),
                    "{key}: stored bytes are validated first"
                );
                self.begin_fetch(&key, &mut job);
            }
        }
        self.hydrations.insert(key, job);
    }

    /// Starts reading the artifact: from Tier 1 if it is there (and not known corrupt),
    /// else from Tier 2.
    fn begin_fetch(&mut self, key: &SegmentKey, job: &mut HydrationJob) {
        assert!(job.segment.is_none() && job.to_store.is_none());
        let owner = IoOwner::Hydration(key.clone());
        let artifact = self.artifacts.get(key).copied();
        if let Some(artifact) = artifact {
            assert!(
                !artifact.is_evicting(),
                "{key}: hydration started during removal"
            );
            assert!(
                artifact.hydrating,
                "{key}: artifact not held for the hydration"
            );
        }
        job.phase = match artifact {
            Some(artifact) if !job.avoid_tier1 => {
                job.source = HydrationSource::Tier1;
                let request = DiskRequest::ReadAt {
                    path: names::artifact_path(&key.stream, key.segment_id),
                    offset: 0,
                    length: artifact.bytes,
                };
                let io = self.issue(owner, IoRequest::Disk(request));
                HydrationPhase::ReadingArtifact { io }
            }
            _ => {
                job.source = HydrationSource::Tier2;
                let request = ObjectRequest::Get {
                    key: names::segment_object_key(&key.stream, key.segment_id),
                };
                let io = self.issue(owner, IoRequest::Object(request));
                HydrationPhase::Fetching { io }
            }
        };
        self.push_event(Tier1Event::HydrationStarted {
            key: key.clone(),
            source: job.source,
            attempt: job.attempt,
        });
    }

    fn handle_hydration_completion(&mut self, key: SegmentKey, id: IoId, completion: IoCompletion) {
        let mut job = self
            .hydrations
            .remove(&key)
            .expect("owner map and jobs agree");
        assert_eq!(job.io(), Some(id), "{key}: completion of another request");
        let phase = std::mem::replace(&mut job.phase, HydrationPhase::Waiting);
        let owner = IoOwner::Hydration(key.clone());
        let outcome = match (phase, completion) {
            (HydrationPhase::ReadingArtifact { .. }, IoCompletion::Disk(disk)) => {
                let expected_bytes = self.artifacts[&key].bytes;
                match disk {
                    DiskCompletion::Read(artifact) => {
                        let read_bytes = artifact.len() as u64;
                        assert!(read_bytes <= expected_bytes, "{key}: read more than asked");
                        if read_bytes == expected_bytes {
                            self.access(&key);
                            let request = CpuJob::Decompress { artifact };
                            let io = self.issue(owner, IoRequest::Cpu(request));
                            job.phase = HydrationPhase::Decompressing { io };
                            Ok(())
                        } else {
                            Err(Tier1Failure::ShortRead {
                                step: IoStep::ReadArtifact,
                                expected_bytes,
                                read_bytes,
                            })
                        }
                    }
                    DiskCompletion::Failed(DiskErrorKind::NotFound) => {
                        // The warm file is gone: forget it, and read Tier 2 within this
                        // same attempt.
                        let artifact = self.remove_artifact(&key);
                        let record = self.segments[&key];
                        assert_eq!(record.residency, Residency::StagedForTier0);
                        self.push_event(Tier1Event::ArtifactMissing {
                            key: key.clone(),
                            bytes: artifact.bytes,
                        });
                        self.begin_fetch(&key, &mut job);
                        Ok(())
                    }
                    DiskCompletion::Failed(kind) => Err(Tier1Failure::Disk {
                        step: IoStep::ReadArtifact,
                        kind,
                    }),
                    other => panic!("{key}: read of the artifact completed as {other:?}"),
                }
            }
            (HydrationPhase::Fetching { .. }, IoCompletion::Object(object)) => match object {
                ObjectCompletion::Got { bytes, object_size } => {
                    let read_bytes = bytes.len() as u64;
                    if read_bytes == object_size && read_bytes > 0 {
                        if !self.artifacts.contains_key(&key) {
                            job.to_store = Some(bytes.clone());
                        }
                        let request = CpuJob::Decompress { artifact: bytes };
                        let io = self.issue(owner, IoRequest::Cpu(request));
                        job.phase = HydrationPhase::Decompressing { io };
                        Ok(())
                    } else {
                        Err(Tier1Failure::ShortRead {
                            step: IoStep::GetObject,
                            expected_bytes: object_size,
                            read_bytes,
                        })
                    }
                }
                ObjectCompletion::Failed(kind) => Err(Tier1Failure::Object { kind }),
                other => panic!("{key}: get of the object completed as {other:?}"),
            },
            (HydrationPhase::Decompressing { .. }, IoCompletion::Cpu(result)) => match result {
                CpuResult::Decompressed { segment } => {
                    assert!(!segment.is_empty(), "{key}: decompression gave no bytes");
                    job.segment = Some(segment.clone());
                    job.phase = match &job.to_store {
                        Some(artifact) => {
                            let write = DurableWrite::new(
                                names::artifact_path(&key.stream, key.segment_id),
                                artifact.clone(),
                            );
                            let io = self.issue_write(owner, &write);
                            HydrationPhase::StoringArtifact { io, write }
                        }
                        None => {
                            let write = DurableWrite::new(
                                names::segment_path(&key.stream, key.segment_id),
                                segment,
                            );
                            let io = self.issue_write(owner, &write);
                            HydrationPhase::WritingSegment { io, write }
                        }
                    };
                    Ok(())
                }
                CpuResult::Failed { reason } => {
                    job.to_store = None;
                    if job.source == HydrationSource::Tier1 {
                        job.avoid_tier1 = true;
                        let bytes = self.artifacts[&key].bytes;
                        self.push_event(Tier1Event::ArtifactCorrupt {
                            key: key.clone(),
                            bytes,
                            reason: reason.clone(),
                        });
                    }
                    Err(Tier1Failure::Cpu {
                        step: IoStep::Decompress,
                        reason,
                    })
                }
                other @ CpuResult::Compressed { .. } => {
                    panic!("{key}: decompression completed as {other:?}")
                }
            },
            (HydrationPhase::StoringArtifact { write, .. }, IoCompletion::Disk(disk)) => {
                match disk {
                    DiskCompletion::Done => match write.advance() {
                        Some(next) => {
                            let io = self.issue_write(owner, &next);
                            job.phase = HydrationPhase::StoringArtifact { io, write: next };
                            Ok(())
                        }
                        None => {
                            // Durable in Tier 1 now; being from Tier 2, it is uploaded.
                            let stored = job.to_store.take().expect("storing what was fetched");
                            let bytes = stored.len() as u64;
                            self.segments
                                .get_mut(&key)
                                .expect("a hydrating segment is known")
                                .uploaded = true;
                            self.insert_artifact(key.clone(), bytes, true, true);
                            self.push_event(Tier1Event::ArtifactStored {
                                key: key.clone(),
                                bytes,
                            });
                            let segment = job.segment.clone().expect("validated before storing");
                            let write = DurableWrite::new(
                                names::segment_path(&key.stream, key.segment_id),
                                segment,
                            );
                            let io = self.issue_write(owner, &write);
                            job.phase = HydrationPhase::WritingSegment { io, write };
                            Ok(())
                        }
                    },
                    DiskCompletion::Failed(kind) => Err(Tier1Failure::Disk {
                        step: write.io_step(),
                        kind,
                    }),
                    other => panic!("{key}: {:?} completed as {other:?}", write.step),
                }
            }
            (HydrationPhase::WritingSegment { write, .. }, IoCompletion::Disk(disk)) => {
                match disk {
                    DiskCompletion::Done => match write.advance() {
                        Some(next) => {
                            let io = self.issue_write(owner, &next);
                            job.phase = HydrationPhase::WritingSegment { io, write: next };
                            Ok(())
                        }
                        None => {
                            self.finish_hydration(key, job);
                            return;
                        }
                    },
                    DiskCompletion::Failed(kind) => Err(Tier1Failure::Disk {
                        step: write.io_step(),
                        kind,
                    }),
                    other => panic!("{key}: {:?} completed as {other:?}", write.step),
                }
            }
            (phase, completion) => {
                panic!("{key}: hydration in {phase:?} got the wrong completion {completion:?}")
            }
        };
        match outcome {
            Ok(()) => {
                self.hydrations.insert(key, job);
            }
            Err(reason) => self.fail_hydration(key, job, reason),
        }
    }

    fn release_artifact_hold(&mut self, key: &SegmentKey) {
        if self
            .artifacts
            .get(key)
            .is_some_and(|artifact| artifact.hydrating)
        {
            self.update_artifact(key, |artifact| artifact.hydrating = false);
        }
    }

    fn finish_hydration(&mut self, key: SegmentKey, job: HydrationJob) {
        self.hydrations_in_flight -= 1;
        self.release_artifact_hold(&key);
        self.set_residency(&key, Residency::ResidentInTier0);
        let latency_ms = self.now_ms - job.requested_at_ms;
        if self.latency_window_ms.len() == TIER1_HYDRATION_LATENCY_SAMPLES_MAX as usize {
            self.latency_window_ms.pop_front();
        }
        self.latency_window_ms.push_back(latency_ms);
        self.hydrations_succeeded += 1;
        let bytes = job
            .segment
            .expect("a written segment was decompressed")
            .len() as u64;
        self.push_event(Tier1Event::HydrationSucceeded {
            key,
            source: job.source,
            bytes,
            latency_ms,
        });
    }

    fn fail_hydration(&mut self, key: SegmentKey, mut job: HydrationJob, reason: Tier1Failure) {
        self.hydrations_in_flight -= 1;
        match self.retry_delay_ms(job.attempt, &reason) {
            Some(delay_ms) => {
                let deadline_ms = self.now_ms + delay_ms;
                job.phase = HydrationPhase::Backoff { deadline_ms };
                self.timers
                    .insert((deadline_ms, RetryTimer::Hydration(key.clone())));
                self.hydration_retries += 1;
                self.push_event(Tier1Event::HydrationRetryScheduled {
                    key: key.clone(),
                    source: job.source,
                    attempt: job.attempt,
                    delay_ms,
                    reason,
                });
                self.hydrations.insert(key, job);
            }
            None => {
                self.release_artifact_hold(&key);
                self.set_residency(&key, Residency::NeedsRecovery);
                self.hydration_failures += 1;
                self.push_event(Tier1Event::HydrationFailed {
                    key,
                    source: job.source,
                    reason,
                    attempts: job.attempt,
                });
            }
        }
    }

    // ---- Internals: eviction ----

    fn start_eviction(&mut self, key: SegmentKey) {
        let artifact = self.artifacts[&key];
        assert!(
            artifact.is_evictable(self.policy.max_attempts),
            "{key}: evicting what is not evictable"
        );
        assert!(
            artifact.uploaded,
            "{key}: evicting an artifact Tier 2 does not hold"
        );
        assert!(
            !self.hydrations.contains_key(&key),
            "{key}: evicting while hydrating"
        );
        let request = DiskRequest::Remove {
            path: names::artifact_path(&key.stream, key.segment_id),
        };
        let io = self.issue(IoOwner::Eviction(key.clone()), IoRequest::Disk(request));
        self.update_artifact(&key, |artifact| {
            artifact.phase = ArtifactPhase::Removing { io }
        });
    }

    fn handle_eviction_completion(&mut self, key: SegmentKey, id: IoId, completion: IoCompletion) {
        let artifact = *self
            .artifacts
            .get(&key)
            .expect("owner map and artifacts agree");
        let IoCompletion::Disk(disk) = completion else {
            panic!("{key}: eviction got the wrong completion {completion:?}");
        };
        match artifact.phase {
            ArtifactPhase::Resident => panic!("{key}: eviction completion while resident"),
            ArtifactPhase::Removing { io } => {
                assert_eq!(io, id, "{key}: completion of another request");
                match disk {
                    // Gone either way (NotFound: someone else removed it).
                    DiskCompletion::Done | DiskCompletion::Failed(DiskErrorKind::NotFound) => {
                        let request = DiskRequest::SyncDir {
                            path: names::tier1_dir(&key.stream),
                        };
                        let io =
                            self.issue(IoOwner::Eviction(key.clone()), IoRequest::Disk(request));
                        self.update_artifact(&key, |artifact| {
                            artifact.phase = ArtifactPhase::SyncingDir { io };
                        });
                    }
                    DiskCompletion::Failed(kind) => {
                        let attempt = artifact.eviction_failures + 1;
                        let retry_in_ms = self.policy.delay_ms(attempt, &mut self.rng);
                        let retry_at_ms = retry_in_ms.map(|delay_ms| self.now_ms + delay_ms);
                        let hydrating = self.hydrations.contains_key(&key);
                        self.update_artifact(&key, |artifact| {
                            artifact.phase = ArtifactPhase::Resident;
                            artifact.eviction_failures = attempt;
                            artifact.eviction_retry_at_ms = retry_at_ms;
                            artifact.hydrating = hydrating;
                        });
                        if let Some(deadline_ms) = retry_at_ms {
                            self.timers
                                .insert((deadline_ms, RetryTimer::Eviction(key.clone())));
                        }
                        self.push_event(Tier1Event::EvictionFailed {
                            key,
                            bytes: artifact.bytes,
                            attempt,
                            retry_in_ms,
                            reason: Tier1Failure::Disk {
                                step: IoStep::Remove,
                                kind,
                            },
                        });
                    }
                    other => panic!("{key}: remove completed as {other:?}"),
                }
            }
            ArtifactPhase::SyncingDir { io } => {
                assert_eq!(io, id, "{key}: completion of another request");
                let dir_synced = match disk {
                    DiskCompletion::Done => true,
                    DiskCompletion::Failed(_) => false,
                    other => panic!("{key}: directory sync completed as {other:?}"),
                };
                let artifact = self.remove_artifact(&key);
                assert_ne!(
                    self.segments[&key].residency,
                    Residency::WarmInTier1,
                    "{key}: evicted its only local copy"
                );
                self.evictions += 1;
                self.push_event(Tier1Event::Evicted {
                    key,
                    bytes: artifact.bytes,
                    dir_synced,
                });
            }
        }
    }
}

/// The nearest-rank percentile of `sorted` (ascending); 0 when empty.
fn percentile(sorted: &[u64], percent: u64) -> u64 {
    assert!((1..=100).contains(&percent));
    if sorted.is_empty() {
        return 0;
    }
    let count = sorted.len() as u64;
    let rank = (percent * count).div_ceil(100).max(1);
    assert!(rank <= count);
    sorted[usize::try_from(rank - 1).expect("a window index fits usize")]
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
