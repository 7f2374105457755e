//! Tier 2: transfers to and from the object store (the system of record) as a sans-IO
//! state machine, and the retention rule that chooses which cold segments to delete.
//!
//! [`Tier2Transfers`] runs three queues, each with its own bounded concurrency:
//! - **uploads** of immutable objects under their deterministic keys, each named by
//!   its [`ObjectKey`]: sealed segment artifacts (`segments/<stream>/<segment_id:020>.zst`),
//!   sealed manifest chunks (`manifest/<stream>/<chunk_index:020>.mlog`) and manifest
//!   snapshots (`snapshots/<stream>/<snapshot_id:020>.snap`), always as a conditional put
//!   (`PutMode::IfAbsent`): an object is never overwritten. When the put finds the key
//!   taken (typically an earlier attempt applied but its response was lost: the
//!   ambiguous timeout), a `Head` decides: the same size is our own earlier upload, so
//!   success (objects are immutable and keys deterministic, so a retried upload is
//!   harmless); another size is a permanent failure naming the key;
//! - **deletes** of segment objects (idempotent: a missing object counts as deleted);
//! - **fetches** of whole objects or byte ranges, for hydrations and cold reads.
//!
//! A retryable failure ([`ObjectErrorKind::is_retryable`]) waits for a backoff delay
//! drawn from the [`RetryPolicy`] with the machine's own seeded [`DetRng`], as a timer
//! ([`Tier2Transfers::poll_timeout`]), never a sleep; it frees its slot meanwhile.
//! Every operation ends in exactly one terminal event, success or failure, which the
//! coordinator turns into manifest records (`UploadDone`, `UploadFailed`,
//! `Tier2Deleted`, ...). Events are data ([`Tier2Event`]) logged under
//! [`LOG_TARGET_TIER2`] with their attempt counts, as the runbook asks.
//!
//! Retention ([`select_retention`]) is a pure function: given a stream's sealed
//! segments, oldest first, it picks a prefix to delete by age and/or total size, never
//! the newest segment, and the stream's new start offset.
//!
//! **Invariants** (checked by [`Tier2Transfers::check_invariants`])
//! - Each accepted operation is in exactly one phase: ready (waiting for a slot of its
//!   queue), in flight (exactly one outstanding request, under a unique [`IoId`]), or
//!   backing off (exactly one timer).
//! - Per queue, operations in flight never exceed the configured concurrency, and an
//!   operation waits ready only while every slot is taken.
//! - Per queue, the depth (accepted, not finished) never exceeds its limit
//!   (`TIER2_*_QUEUE_MAX`), and `accepted = succeeded + failed + depth`: every accepted
//!   operation ends in exactly one terminal event.
//! - No operation makes more than `retry.max_attempts` attempts; a retry follows only
//!   a retryable failure, after a delay from the policy.
//! - An upload's key is its object's deterministic key (`ObjectKey`'s `Display`).
//! - At most one upload or delete per object key is held at a time, so a delete never
//!   races an upload of the same key; fetch ids are unique among held fetches.
//! - Only `Put` with `IfAbsent`, `Head`, `Delete`, `Get` and `GetRange` are issued.
//! - `now_ms` never goes backwards.
//! - Retention deletes only a prefix of a stream and never its newest segment.

use crate::SegmentId;
use crate::io::{IoCompletion, IoId, IoRequest, ObjectCompletion, ObjectErrorKind};
use crate::io::{ObjectRequest, PutMode};
use crate::limits::{
    ETAG_BYTES_MAX, OBJECT_KEY_BYTES_MAX, TIER2_CONCURRENCY_MAX, TIER2_DELETE_CONCURRENCY_DEFAULT,
    TIER2_DELETE_QUEUE_MAX, TIER2_FETCH_CONCURRENCY_DEFAULT, TIER2_FETCH_QUEUE_MAX,
    TIER2_OUTPUTS_QUEUED_MAX, TIER2_UPLOAD_CONCURRENCY_DEFAULT, TIER2_UPLOAD_QUEUE_MAX,
};
use crate::manifest::record::ReasonCode;
use crate::names::{ObjectKey, SegmentKey, StreamName, segment_object_key};
use crate::retry::{DetRng, RetryConfigError, RetryPolicy};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use thiserror::Error;

/// Log target of every Tier 2 event.
pub const LOG_TARGET_TIER2: &str = "aof2::tier2";

// ---- Configuration ----

/// How long cold segments are kept. Each rule is off when absent; with both, a segment
/// goes when either rule says so. See [`select_retention`].
///
/// Deserialising validates; unknown fields are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RetentionPolicyFields")]
pub struct RetentionPolicy {
    /// Delete a segment once it was sealed more than this long ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Delete the oldest segments while the stream's objects total more than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RetentionPolicyFields {
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
}

impl TryFrom<RetentionPolicyFields> for RetentionPolicy {
    type Error = Tier2ConfigError;

    fn try_from(fields: RetentionPolicyFields) -> Result<Self, Self::Error> {
        let policy = RetentionPolicy {
            max_age_ms: fields.max_age_ms,
            max_bytes: fields.max_bytes,
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl RetentionPolicy {
    /// Keeps everything forever.
    pub const KEEP_ALL: RetentionPolicy = RetentionPolicy {
        max_age_ms: None,
        max_bytes: None,
    };

    /// Checks each rule. Zero is refused: it would delete everything but the newest
    /// segment, which is never what a configuration means (omit the rule instead).
    pub fn validate(&self) -> Result<(), Tier2ConfigError> {
        if self.max_age_ms == Some(0) {
            return Err(Tier2ConfigError::RetentionZero { knob: "max_age_ms" });
        }
        if self.max_bytes == Some(0) {
            return Err(Tier2ConfigError::RetentionZero { knob: "max_bytes" });
        }
        Ok(())
    }
}

/// Tier 2 knobs (`AofManagerConfig::store.tier2` in the runbook).
///
/// Deserialising validates; missing fields take their defaults; unknown fields are
/// rejected so a misspelt knob is an error, not a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Tier2ConfigFields")]
pub struct Tier2Config {
    /// Upload/delete/fetch retries. Default: 3 attempts, 100 ms base delay, doubling,
    /// with equal jitter. Increase for flaky object stores; decrease if latency budgets
    /// cannot absorb repeated retries.
    pub retry: RetryPolicy,
    /// Uploads in flight at once.
    pub upload_concurrency: u32,
    /// Deletes in flight at once.
    pub delete_concurrency: u32,
    /// Fetches (hydrations and cold reads) in flight at once.
    pub fetch_concurrency: u32,
    /// How long cold segments are kept.
    pub retention: RetentionPolicy,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Tier2ConfigFields {
    retry: RetryPolicy,
    upload_concurrency: u32,
    delete_concurrency: u32,
    fetch_concurrency: u32,
    retention: RetentionPolicy,
}

impl Default for Tier2ConfigFields {
    fn default() -> Self {
        let config = Tier2Config::default();
        Tier2ConfigFields {
            retry: config.retry,
            upload_concurrency: config.upload_concurrency,
            delete_concurrency: config.delete_concurrency,
            fetch_concurrency: config.fetch_concurrency,
            retention: config.retention,
        }
    }
}

impl TryFrom<Tier2ConfigFields> for Tier2Config {
    type Error = Tier2ConfigError;

    fn try_from(fields: Tier2ConfigFields) -> Result<Self, Self::Error> {
        let config = Tier2Config {
            retry: fields.retry,
            upload_concurrency: fields.upload_concurrency,
            delete_concurrency: fields.delete_concurrency,
            fetch_concurrency: fields.fetch_concurrency,
            retention: fields.retention,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for Tier2Config {
    fn default() -> Self {
        Tier2Config {
            retry: RetryPolicy::tier2_default(),
            upload_concurrency: TIER2_UPLOAD_CONCURRENCY_DEFAULT,
            delete_concurrency: TIER2_DELETE_CONCURRENCY_DEFAULT,
            fetch_concurrency: TIER2_FETCH_CONCURRENCY_DEFAULT,
            retention: RetentionPolicy::KEEP_ALL,
        }
    }
}

/// A bad Tier 2 configuration value; the message names the knob and its value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tier2ConfigError {
    #[error("tier2.retry.{0}")]
    Retry(#[from] RetryConfigError),
    #[error("tier2.{knob} = 0: must be at least 1")]
    ConcurrencyZero { knob: &'static str },
    #[error("tier2.{knob} = {value}: must be at most {limit}")]
    ConcurrencyTooLarge {
        knob: &'static str,
        value: u32,
        limit: u32,
    },
    #[error("tier2.retention.{knob} = 0: must be at least 1 (omit it to disable the rule)")]
    RetentionZero { knob: &'static str },
}

impl Tier2Config {
    /// Checks every knob against its limit.
    pub fn validate(&self) -> Result<(), Tier2ConfigError> {
        self.retry.validate()?;
        for (knob, value) in [
            ("upload_concurrency", self.upload_concurrency),
            ("delete_concurrency", self.delete_concurrency),
            ("fetch_concurrency", self.fetch_concurrency),
        ] {
            if value == 0 {
                return Err(Tier2ConfigError::ConcurrencyZero { knob });
            }
            if value > TIER2_CONCURRENCY_MAX {
                return Err(Tier2ConfigError::ConcurrencyTooLarge {
                    knob,
                    value,
                    limit: TIER2_CONCURRENCY_MAX,
                });
            }
        }
        self.retention.validate()
    }

    /// The concurrency of `queue`.
    #[must_use]
    pub fn concurrency(&self, queue: Tier2Queue) -> u32 {
        match queue {
            Tier2Queue::Upload => self.upload_concurrency,
            Tier2Queue::Delete => self.delete_concurrency,
            Tier2Queue::Fetch => self.fetch_concurrency,
        }
    }
}

// ---- Inputs and outputs ----

/// One of the three transfer queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Tier2Queue {
    Upload,
    Delete,
    Fetch,
}

impl Tier2Queue {
    /// Every queue, in declaration order.
    pub const ALL: [Tier2Queue; 3] = [Tier2Queue::Upload, Tier2Queue::Delete, Tier2Queue::Fetch];

    /// Lowercase name for messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier2Queue::Upload => "upload",
            Tier2Queue::Delete => "delete",
            Tier2Queue::Fetch => "fetch",
        }
    }

    /// The most operations this queue holds at once.
    #[must_use]
    pub fn limit(self) -> u32 {
        match self {
            Tier2Queue::Upload => TIER2_UPLOAD_QUEUE_MAX,
            Tier2Queue::Delete => TIER2_DELETE_QUEUE_MAX,
            Tier2Queue::Fetch => TIER2_FETCH_QUEUE_MAX,
        }
    }

    fn index(self) -> usize {
        match self {
            Tier2Queue::Upload => 0,
            Tier2Queue::Delete => 1,
            Tier2Queue::Fetch => 2,
        }
    }
}

impl fmt::Display for Tier2Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller's name for a fetch; its terminal event carries it back. Unique among
/// the fetches the machine holds (it may be reused once its fetch finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FetchId(pub u64);

impl fmt::Display for FetchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fetch {}", self.0)
    }
}

/// Why an attempt, or a whole operation, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// The object store answered with this error.
    Store(ObjectErrorKind),
    /// An upload found its key taken by an object of another size: a different
    /// artifact under the same deterministic key. Never retried; needs an operator.
    SizeMismatch {
        key: String,
        expected_bytes: u64,
        found_bytes: u64,
    },
    /// A get answered with a body whose length disagrees with the object size it
    /// reported and the range asked (a truncated response). Retried.
    BadResponse {
        expected_bytes: u64,
        received_bytes: u64,
    },
}

impl FailureReason {
    /// The manifest reason code recorded for this failure (`UploadFailed`, ...).
    #[must_use]
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            FailureReason::Store(ObjectErrorKind::NotFound) => ReasonCode::NotFound,
            FailureReason::Store(ObjectErrorKind::Throttled) => ReasonCode::Throttled,
            FailureReason::Store(ObjectErrorKind::Transient) => ReasonCode::Timeout,
            FailureReason::Store(
                ObjectErrorKind::AlreadyExists
                | ObjectErrorKind::PreconditionFailed
                | ObjectErrorKind::Permanent,
            )
            | FailureReason::BadResponse { .. } => ReasonCode::IoError,
            FailureReason::SizeMismatch { .. } => ReasonCode::ChecksumMismatch,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Store(kind) => write!(f, "object store error {kind:?}"),
            FailureReason::SizeMismatch {
                key,
                expected_bytes,
                found_bytes,
            } => write!(
                f,
                "object {key} already exists with {found_bytes} bytes, expected \
                 {expected_bytes}: another artifact holds this key"
            ),
            FailureReason::BadResponse {
                expected_bytes,
                received_bytes,
            } => write!(
                f,
                "object store returned {received_bytes} bytes where {expected_bytes} were \
                 expected"
            ),
        }
    }
}

/// A structured log event. [`Tier2Event::name`] is the event name and
/// [`Tier2Event::target`] the log target ([`LOG_TARGET_TIER2`]); log failures at WARN
/// ([`Tier2Event::is_failure`]) and the rest at INFO.
///
/// Each operation ends in exactly one terminal event: `UploadSucceeded` or
/// `UploadFailed`, `Deleted` or `DeleteFailed`, `FetchSucceeded` or `FetchFailed`.
/// `attempt`s count from 1; a retry event's `attempt` is the one that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier2Event {
    /// `tier2_upload_started`: an upload attempt's put was issued.
    UploadStarted {
        /// What the object is (segment artifact, manifest chunk or snapshot).
        object: ObjectKey,
        key: String,
        attempt: u32,
    },
    /// `tier2_upload_succeeded`: the object is durable in Tier 2 (terminal).
    /// `already_present` when an earlier attempt had stored it (found by `Head`).
    UploadSucceeded {
        object: ObjectKey,
        key: String,
        /// The store's entity tag, if it gave one of at most `ETAG_BYTES_MAX` bytes.
        etag: Option<String>,
        object_bytes: u64,
        attempts: u32,
        already_present: bool,
    },
    /// `tier2_upload_retry`: attempt `attempt` failed; the next starts after `delay_ms`.
    UploadRetryScheduled {
        object: ObjectKey,
        key: String,
        attempt: u32,
        delay_ms: u64,
        error: FailureReason,
    },
    /// `tier2_upload_failed`: retries exhausted or a permanent error (terminal).
    UploadFailed {
        object: ObjectKey,
        key: String,
        reason: FailureReason,
        attempts: u32,
    },
    /// `tier2_delete_queued`: a delete was accepted.
    DeleteQueued {
        segment: SegmentKey,
        key: String,
        reason: ReasonCode,
    },
    /// `tier2_delete_succeeded`: the object is gone (terminal). `already_absent` when
    /// the store said it was not there (an earlier attempt deleted it, or it never
    /// was).
    Deleted {
        segment: SegmentKey,
        key: String,
        attempts: u32,
        already_absent: bool,
    },
    /// `tier2_delete_retry`: attempt `attempt` failed; the next starts after `delay_ms`.
    DeleteRetryScheduled {
        segment: SegmentKey,
        key: String,
        attempt: u32,
        delay_ms: u64,
        error: FailureReason,
    },
    /// `tier2_delete_failed`: retries exhausted or a permanent error (terminal).
    DeleteFailed {
        segment: SegmentKey,
        key: String,
        reason: FailureReason,
        attempts: u32,
    },
    /// `tier2_fetch_succeeded`: the body of a fetch (terminal).
    FetchSucceeded {
        fetch_id: FetchId,
        key: String,
        range: Option<(u64, u64)>,
        bytes: Bytes,
        object_size: u64,
        attempts: u32,
    },
    /// `tier2_fetch_retry`: attempt `attempt` failed; the next starts after `delay_ms`.
    FetchRetryScheduled {
        fetch_id: FetchId,
        key: String,
        attempt: u32,
        delay_ms: u64,
        error: FailureReason,
    },
    /// `tier2_fetch_failed`: retries exhausted, or a permanent error such as `NotFound`
    /// (terminal). The runbook alerts on more than two within five minutes.
    FetchFailed {
        fetch_id: FetchId,
        key: String,
        reason: FailureReason,
        attempts: u32,
    },
}

impl Tier2Event {
    /// The structured event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Tier2Event::UploadStarted { .. } => "tier2_upload_started",
            Tier2Event::UploadSucceeded { .. } => "tier2_upload_succeeded",
            Tier2Event::UploadRetryScheduled { .. } => "tier2_upload_retry",
            Tier2Event::UploadFailed { .. } => "tier2_upload_failed",
            Tier2Event::DeleteQueued { .. } => "tier2_delete_queued",
            Tier2Event::Deleted { .. } => "tier2_delete_succeeded",
            Tier2Event::DeleteRetryScheduled { .. } => "tier2_delete_retry",
            Tier2Event::DeleteFailed { .. } => "tier2_delete_failed",
            Tier2Event::FetchSucceeded { .. } => "tier2_fetch_succeeded",
            Tier2Event::FetchRetryScheduled { .. } => "tier2_fetch_retry",
            Tier2Event::FetchFailed { .. } => "tier2_fetch_failed",
        }
    }

    /// The log target, `aof2::tier2`.
    #[must_use]
    pub fn target(&self) -> &'static str {
        LOG_TARGET_TIER2
    }

    /// Emits the event to `tracing` under [`LOG_TARGET_TIER2`] at its level (WARN for
    /// a terminal failure, INFO otherwise), with the fields of the runbook's event
    /// table (docs/operations.md). A fetch's body is logged as its length.
    pub fn log(&self) {
        const T: &str = LOG_TARGET_TIER2;
        match self {
            Tier2Event::UploadStarted {
                object,
                key,
                attempt,
            } => tracing::info!(
                target: T,
                object = object.kind_name(), key = %key, attempt,
                "tier2_upload_started"
            ),
            Tier2Event::UploadSucceeded {
                object,
                key,
                etag,
                object_bytes,
                attempts,
                already_present,
            } => tracing::info!(
                target: T,
                object = object.kind_name(), key = %key, etag = etag.as_deref().unwrap_or_default(), object_bytes, attempts,
                already_present,
                "tier2_upload_succeeded"
            ),
            Tier2Event::UploadRetryScheduled {
                object,
                key,
                attempt,
                delay_ms,
                error,
            } => tracing::info!(
                target: T,
                object = object.kind_name(), key = %key, attempt, delay_ms, error = %error,
                "tier2_upload_retry"
            ),
            Tier2Event::UploadFailed {
                object,
                key,
                reason,
                attempts,
            } => tracing::warn!(
                target: T,
                object = object.kind_name(), key = %key, reason = %reason, attempts,
                "tier2_upload_failed"
            ),
            Tier2Event::DeleteQueued {
                segment,
                key,
                reason,
            } => tracing::info!(
                target: T,
                segment = %segment, key = %key, reason = ?reason,
                "tier2_delete_queued"
            ),
            Tier2Event::Deleted {
                segment,
                key,
                attempts,
                already_absent,
            } => tracing::info!(
                target: T,
                segment = %segment, key = %key, attempts, already_absent,
                "tier2_delete_succeeded"
            ),
            Tier2Event::DeleteRetryScheduled {
                segment,
                key,
                attempt,
                delay_ms,
                error,
            } => tracing::info!(
                target: T,
                segment = %segment, key = %key, attempt, delay_ms, error = %error,
                "tier2_delete_retry"
            ),
            Tier2Event::DeleteFailed {
                segment,
                key,
                reason,
                attempts,
            } => tracing::warn!(
                target: T,
                segment = %segment, key = %key, reason = %reason, attempts,
                "tier2_delete_failed"
            ),
            Tier2Event::FetchSucceeded {
                fetch_id,
                key,
                range,
                bytes,
                object_size,
                attempts,
            } => tracing::info!(
                target: T,
                fetch_id = %fetch_id, key = %key, range = ?range, bytes = bytes.len(),
                object_size, attempts,
                "tier2_fetch_succeeded"
            ),
            Tier2Event::FetchRetryScheduled {
                fetch_id,
                key,
                attempt,
                delay_ms,
                error,
            } => tracing::info!(
                target: T,
                fetch_id = %fetch_id, key = %key, attempt, delay_ms, error = %error,
                "tier2_fetch_retry"
            ),
            Tier2Event::FetchFailed {
                fetch_id,
                key,
                reason,
                attempts,
            } => tracing::warn!(
                target: T,
                fetch_id = %fetch_id, key = %key, reason = %reason, attempts,
                "tier2_fetch_failed"
            ),
        }
    }

    /// Whether this is a terminal failure (log at WARN).
    #[must_use]
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Tier2Event::UploadFailed { .. }
                | Tier2Event::DeleteFailed { .. }
                | Tier2Event::FetchFailed { .. }
        )
    }

    /// Whether this event ends its operation.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.is_failure()
            || matches!(
                self,
                Tier2Event::UploadSucceeded { .. }
                    | Tier2Event::Deleted { .. }
                    | Tier2Event::FetchSucceeded { .. }
            )
    }

    /// The object key the event is about.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Tier2Event::UploadStarted { key, .. }
            | Tier2Event::UploadSucceeded { key, .. }
            | Tier2Event::UploadRetryScheduled { key, .. }
            | Tier2Event::UploadFailed { key, .. }
            | Tier2Event::DeleteQueued { key, .. }
            | Tier2Event::Deleted { key, .. }
            | Tier2Event::DeleteRetryScheduled { key, .. }
            | Tier2Event::DeleteFailed { key, .. }
            | Tier2Event::FetchSucceeded { key, .. }
            | Tier2Event::FetchRetryScheduled { key, .. }
            | Tier2Event::FetchFailed { key, .. } => key,
        }
    }
}

/// Errors of enqueuing. All are the caller's to handle: retry later (`QueueFull`,
/// `KeyBusy`) or fix the input (`InvalidRange`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tier2Error {
    /// Backpressure: the queue holds its limit of operations; retry after some finish.
    #[error("the Tier 2 {queue} queue is full ({limit} operations held): retry after some finish")]
    QueueFull { queue: Tier2Queue, limit: u32 },
    /// An upload or delete of the same key is still held; a second one could race it
    /// (an upload and a delete of one key in flight together may leave the object
    /// either present or absent). Enqueue again after its terminal event.
    #[error("object {key} already has a {held} in progress; retry after it finishes")]
    KeyBusy { key: String, held: Tier2Queue },
    /// A fetch range must hold at least one byte: `start < end`.
    #[error("{fetch_id} of {key}: invalid range {start}..{end} (start must be below end)")]
    InvalidRange {
        fetch_id: FetchId,
        key: String,
        start: u64,
        end: u64,
    },
}

/// Tier 2 metrics, as in the runbook's monitoring checklist. A queue's depth counts the
/// operations it holds: waiting for a slot, in flight, or backing off before a retry;
/// depth above the concurrency means work waits (the runbook alerts on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tier2MetricsSnapshot {
    pub upload_queue_depth: u64,
    pub delete_queue_depth: u64,
    pub fetch_queue_depth: u64,
    pub uploads_in_flight: u64,
    pub deletes_in_flight: u64,
    pub fetches_in_flight: u64,
    /// Upload retries scheduled, since start. Baseline near zero; alert if it grows by
    /// more than 10 per minute.
    pub upload_retry_attempts: u64,
    /// Delete retries scheduled, since start.
    pub delete_retry_attempts: u64,
    /// Fetch retries scheduled, since start.
    pub fetch_retry_attempts: u64,
    /// Uploads that failed for good (`tier2_upload_failed`), since start.
    pub upload_failures: u64,
    /// Deletes that failed for good (`tier2_delete_failed`), since start.
    pub delete_failures: u64,
    /// Fetches that failed for good, after retries or on a permanent error such as
    /// `NotFound` (`tier2_fetch_failed`), since start.
    pub download_failures: u64,
    /// Uploads that succeeded, since start.
    pub uploads: u64,
    /// Deletes that succeeded, since start.
    pub deletes: u64,
    /// Fetches that succeeded, since start.
    pub fetches: u64,
    /// Bytes of the objects uploaded successfully, since start.
    pub uploaded_bytes: u64,
}

// ---- Retention ----

/// One sealed segment of a stream held in Tier 2, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedSegment {
    pub segment_id: SegmentId,
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// Offset after the segment's last record.
    pub next_offset: u64,
    pub sealed_at_ms: u64,
    /// Size of the segment's Tier 2 object.
    pub object_bytes: u64,
}

/// What retention decided for one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionDecision {
    /// Segments to delete, oldest first: always a prefix of the stream, never its
    /// newest segment.
    pub delete: Vec<SegmentId>,
    /// The first kept segment's base offset when anything is deleted: the stream's new
    /// start offset. Reads below it must fail with a clear out-of-range error naming
    /// the start offset (the readers machine enforces it), never a missing-object error
    /// or a hang.
    pub new_start_offset: Option<u64>,
    /// The first `deleted_by_age` segments of `delete` were past `max_age_ms`; the rest
    /// were deleted to bring the stream under `max_bytes`.
    pub deleted_by_age: usize,
}

impl RetentionDecision {
    /// The manifest reason code for deleting `delete[index]`.
    #[must_use]
    pub fn reason(&self, index: usize) -> ReasonCode {
        assert!(index < self.delete.len(), "no deletion {index}");
        if index < self.deleted_by_age {
            ReasonCode::RetentionAge
        } else {
            ReasonCode::RetentionSize
        }
    }
}

/// Chooses which of a stream's segments to delete under `policy` at `now_ms`.
///
/// `segments` are the stream's sealed segments held in Tier 2, oldest first, with
/// increasing ids and contiguous offsets (each `next_offset` is the following
/// `base_offset`); anything else is a caller bug and panics. Deleting from Tier 2
/// deletes the data (Tier 2 is the system of record), so the result is always a
/// prefix of the stream (never a hole) and never includes the newest segment:
/// - by age: the longest prefix whose segments were all sealed more than `max_age_ms`
///   before `now_ms` (a younger segment stops the scan even if later ones are older);
/// - by size: the shortest prefix whose removal brings the total `object_bytes` to at
///   most `max_bytes`;
/// - with both rules, the longer of the two prefixes.
#[must_use]
pub fn select_retention(
    now_ms: u64,
    policy: &RetentionPolicy,
    segments: &[RetainedSegment],
) -> RetentionDecision {
    assert!(
        policy.validate().is_ok(),
        "retention policy used without validation: {policy:?}"
    );
    for segment in segments {
        assert!(
            segment.base_offset <= segment.next_offset,
            "segment {} ends before it starts",
            segment.segment_id
        );
    }
    for pair in segments.windows(2) {
        assert!(
            pair[0].segment_id < pair[1].segment_id,
            "segments out of order: {} then {}",
            pair[0].segment_id,
            pair[1].segment_id
        );
        assert_eq!(
            pair[0].next_offset, pair[1].base_offset,
            "segments {} and {} are not contiguous",
            pair[0].segment_id, pair[1].segment_id
        );
    }
    // The newest segment is never deleted.
    let deletable = segments.len().saturating_sub(1);
    let by_age = policy.max_age_ms.map_or(0, |max_age_ms| {
        segments[..deletable]
            .iter()
            .take_while(|segment| now_ms.saturating_sub(segment.sealed_at_ms) > max_age_ms)
            .count()
    });
    let by_size = policy.max_bytes.map_or(0, |max_bytes| {
        // u128: the sum of any number of u64 sizes cannot overflow it in practice.
        let mut total: u128 = segments
            .iter()
            .map(|segment| u128::from(segment.object_bytes))
            .sum();
        let mut count = 0;
        while count < deletable && total > u128::from(max_bytes) {
            total -= u128::from(segments[count].object_bytes);
            count += 1;
        }
        count
    });
    let count = by_age.max(by_size);
    assert!(count <= deletable, "the newest segment is kept");
    let decision = RetentionDecision {
        delete: segments[..count]
            .iter()
            .map(|segment| segment.segment_id)
            .collect(),
        new_start_offset: (count > 0).then(|| segments[count].base_offset),
        deleted_by_age: by_age,
    };
    assert_eq!(decision.delete.len(), count);
    assert!(decision.deleted_by_age <= decision.delete.len());
    decision
}

// ---- The machine ----

/// Internal identity of one accepted operation, in acceptance order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct OperationId(u64);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    Upload {
        object: ObjectKey,
        key: String,
        artifact: Bytes,
    },
    Delete {
        segment: SegmentKey,
        key: String,
    },
    Fetch {
        fetch_id: FetchId,
        key: String,
        range: Option<(u64, u64)>,
    },
}

impl Work {
    fn queue(&self) -> Tier2Queue {
        match self {
            Work::Upload { .. } => Tier2Queue::Upload,
            Work::Delete { .. } => Tier2Queue::Delete,
            Work::Fetch { .. } => Tier2Queue::Fetch,
        }
    }

    fn key(&self) -> &str {
        match self {
            Work::Upload { key, .. } | Work::Delete { key, .. } | Work::Fetch { key, .. } => key,
        }
    }
}

/// Which request of an attempt is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Upload: the conditional put.
    Put,
    /// Upload: the head after the put found the key taken.
    Head,
    Delete,
    /// Fetch: a get or a range get.
    Get,
}

impl Step {
    fn belongs_to(self, queue: Tier2Queue) -> bool {
        match self {
            Step::Put | Step::Head => queue == Tier2Queue::Upload,
            Step::Delete => queue == Tier2Queue::Delete,
            Step::Get => queue == Tier2Queue::Fetch,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    io_id: IoId,
    step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting in its queue for a slot.
    Ready,
    /// Holds a slot; one request outstanding.
    InFlight(InFlight),
    /// Waiting for its retry timer; holds no slot.
    Backoff(Backoff),
}

#[derive(Debug, Clone)]
struct Operation {
    work: Work,
    /// Attempts started so far.
    attempts: u32,
    phase: Phase,
}

#[derive(Debug, Clone, Default)]
struct QueueState {
    /// Ready operations, in the order they became ready.
    ready: VecDeque<OperationId>,
    /// Operations held (any phase).
    depth: u32,
    /// Operations holding a slot.
    in_flight: u32,
    accepted: u64,
    succeeded: u64,
    failed: u64,
    retries: u64,
}

/// The Tier 2 transfer state machine. One per manager (or per object store).
///
/// Call order: feed an input (`enqueue_*`, [`Tier2Transfers::handle_completion`],
/// [`Tier2Transfers::handle_timeout`]), then drain [`Tier2Transfers::poll_request`] and
/// [`Tier2Transfers::poll_event`] until both return `None`, after every input; then
/// arm one timer for [`Tier2Transfers::poll_timeout`] and call `handle_timeout` when
/// it fires. Carry out each request concurrently and feed its completion back with the
/// same [`IoId`]. `now_ms` must never go backwards.
///
/// Randomness (retry jitter) comes only from a [`DetRng`] seeded at construction, so
/// the same seed and the same inputs give the same requests and events.
#[derive(Debug, Clone)]
pub struct Tier2Transfers {
    config: Tier2Config,
    rng: DetRng,
    now_ms: u64,
    operations: BTreeMap<OperationId, Operation>,
    /// Indexed by `Tier2Queue::index`.
    queues: [QueueState; 3],
    in_flight: BTreeMap<IoId, OperationId>,
    /// Backoff timers: (deadline, operation).
    timers: BTreeSet<(u64, OperationId)>,
    /// Keys of held uploads and deletes.
    busy_keys: BTreeMap<String, OperationId>,
    fetch_ids: BTreeMap<FetchId, OperationId>,
    requests: VecDeque<(IoId, IoRequest)>,
    events: VecDeque<Tier2Event>,
    next_operation_id: u64,
    next_io_id: u64,
    uploaded_bytes: u64,
}

impl Tier2Transfers {
    /// An idle machine whose retry jitter draws from `DetRng::new(rng_seed)`. The
    /// config must be valid (deserialising validates it).
    #[must_use]
    pub fn new(config: Tier2Config, rng_seed: u64) -> Self {
        assert!(
            config.validate().is_ok(),
            "Tier 2 config used without validation: {config:?}"
        );
        let machine = Tier2Transfers {
            config,
            rng: DetRng::new(rng_seed),
            now_ms: 0,
            operations: BTreeMap::new(),
            queues: Default::default(),
            in_flight: BTreeMap::new(),
            timers: BTreeSet::new(),
            busy_keys: BTreeMap::new(),
            fetch_ids: BTreeMap::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            next_operation_id: 0,
            next_io_id: 0,
            uploaded_bytes: 0,
        };
        machine.check_invariants();
        machine
    }

    #[must_use]
    pub fn config(&self) -> &Tier2Config {
        &self.config
    }

    // ---- Inputs ----

    /// Uploads the artifact of a sealed segment to `segments/<stream>/<segment_id>.zst`
    /// (an [`ObjectKey::Segment`] upload). Ends in `UploadSucceeded` or `UploadFailed`.
    ///
    /// Panics if `artifact` is empty (an artifact always holds at least its index).
    pub fn enqueue_upload(
        &mut self,
        now_ms: u64,
        stream: StreamName,
        segment_id: SegmentId,
        artifact: Bytes,
    ) -> Result<(), Tier2Error> {
        let object = ObjectKey::Segment { stream, segment_id };
        self.enqueue_object_upload(now_ms, object, artifact)
    }

    /// Uploads `bytes` as the immutable object `object` (a segment artifact, a sealed
    /// manifest chunk or a snapshot) under its deterministic key, by the same rules for
    /// every kind: conditional put, `Head` on a taken key, retries from the policy.
    /// Ends in `UploadSucceeded` or `UploadFailed`, which carry `object` back.
    ///
    /// Panics if `bytes` is empty (every object kind has a non-empty encoding).
    pub fn enqueue_object_upload(
        &mut self,
        now_ms: u64,
        object: ObjectKey,
        bytes: Bytes,
    ) -> Result<(), Tier2Error> {
        self.advance(now_ms);
        assert!(
            !bytes.is_empty(),
            "empty {} object {object}",
            object.kind_name()
        );
        let key = object.to_string();
        assert!(
            key.len() <= OBJECT_KEY_BYTES_MAX as usize,
            "validated stream names give keys within the limit"
        );
        self.check_accept(Tier2Queue::Upload, Some(&key))?;
        self.accept(Work::Upload {
            object,
            key,
            artifact: bytes,
        });
        self.pump();
        Ok(())
    }

    /// Deletes the object of a segment. `reason` is carried into `DeleteQueued` (and
    /// the coordinator's `Tier2DeleteQueued` record). Ends in `Deleted` or
    /// `DeleteFailed`.
    pub fn enqueue_delete(
        &mut self,
        now_ms: u64,
        stream: StreamName,
        segment_id: SegmentId,
        reason: ReasonCode,
    ) -> Result<(), Tier2Error> {
        self.advance(now_ms);
        let key = segment_object_key(&stream, segment_id);
        self.check_accept(Tier2Queue::Delete, Some(&key))?;
        let segment = SegmentKey::new(stream, segment_id);
        self.push_event(Tier2Event::DeleteQueued {
            segment: segment.clone(),
            key: key.clone(),
            reason,
        });
        self.accept(Work::Delete { segment, key });
        self.pump();
        Ok(())
    }

    /// Fetches the object `key`, whole or bytes `start..end` of it (clamped to its
    /// length by the store). Ends in `FetchSucceeded` or `FetchFailed`; `NotFound` is
    /// not retried.
    ///
    /// Panics if `fetch_id` is already held (ids are the caller's to keep unique).
    pub fn enqueue_fetch(
        &mut self,
        now_ms: u64,
        fetch_id: FetchId,
        key: &ObjectKey,
        range: Option<(u64, u64)>,
    ) -> Result<(), Tier2Error> {
        self.advance(now_ms);
        assert!(
            !self.fetch_ids.contains_key(&fetch_id),
            "{fetch_id} enqueued while still held"
        );
        let key = key.to_string();
        if let Some((start, end)) = range
            && start >= end
        {
            return Err(Tier2Error::InvalidRange {
                fetch_id,
                key,
                start,
                end,
            });
        }
        self.check_accept(Tier2Queue::Fetch, None)?;
        self.accept(Work::Fetch {
            fetch_id,
            key,
            range,
        });
        self.pump();
        Ok(())
    }

    /// The driver finished request `io_id`. A completion for an id this machine has no
    /// request outstanding under (unknown, already completed, or not yet polled), or of
    /// another kind than its request, is a driver bug and panics.
    pub fn handle_completion(&mut self, now_ms: u64, io_id: IoId, completion: IoCompletion) {
        self.advance(now_ms);
        let id = self
            .in_flight
            .remove(&io_id)
            .unwrap_or_else(|| panic!("Tier 2 completion for unknown request {io_id:?}"));
        assert!(
            self.requests.iter().all(|(pending, _)| *pending != io_id),
            "Tier 2 completion for {io_id:?} before its request was polled"
        );
        let IoCompletion::Object(completion) = completion else {
            panic!("Tier 2 issues only object requests; {io_id:?} completed with {completion:?}")
        };
        let mut operation = self
            .operations
            .remove(&id)
            .expect("every in-flight request has its operation");
        let Phase::InFlight(in_flight) = operation.phase else {
            panic!(
                "operation of {io_id:?} is not in flight: {:?}",
                operation.phase
            )
        };
        assert_eq!(in_flight.io_id, io_id, "in-flight index out of date");
        assert!(in_flight.step.belongs_to(operation.work.queue()));
        match (in_flight.step, completion) {
            (Step::Put, ObjectCompletion::Put { etag }) => {
                self.upload_succeeded(operation, checked_etag(etag), false);
            }
            (Step::Put, ObjectCompletion::Failed(ObjectErrorKind::AlreadyExists)) => {
                // Maybe an earlier attempt of ours applied (the ambiguous timeout): the
                // object's size tells.
                let key = operation.work.key().to_owned();
                self.issue(id, &mut operation, Step::Head, ObjectRequest::Head { key });
                self.operations.insert(id, operation);
            }
            (Step::Head, ObjectCompletion::Head(meta)) => {
                let Work::Upload { key, artifact, .. } = &operation.work else {
                    unreachable!("checked: a head belongs to an upload")
                };
                assert_eq!(&meta.key, key, "{io_id:?}: head answered for another key");
                let expected_bytes = artifact.len() as u64;
                if meta.size == expected_bytes {
                    self.upload_succeeded(operation, checked_etag(meta.etag), true);
                } else {
                    let reason = FailureReason::SizeMismatch {
                        key: key.clone(),
                        expected_bytes,
                        found_bytes: meta.size,
                    };
                    self.attempt_failed(id, operation, reason, false);
                }
            }
            (Step::Head, ObjectCompletion::Failed(ObjectErrorKind::NotFound)) => {
                // The object vanished between the put and the head: a new put is right.
                let reason = FailureReason::Store(ObjectErrorKind::NotFound);
                self.attempt_failed(id, operation, reason, true);
            }
            (Step::Delete, ObjectCompletion::Deleted) => self.delete_succeeded(operation, false),
            (Step::Delete, ObjectCompletion::Failed(ObjectErrorKind::NotFound)) => {
                self.delete_succeeded(operation, true);
            }
            (Step::Get, ObjectCompletion::Got { bytes, object_size }) => {
                let Work::Fetch { range, .. } = operation.work else {
                    unreachable!("checked: a get belongs to a fetch")
                };
                let expected_bytes = match range {
                    None => object_size,
                    Some((start, end)) => end.min(object_size).saturating_sub(start),
                };
                let received_bytes = bytes.len() as u64;
                if received_bytes == expected_bytes {
                    self.fetch_succeeded(operation, bytes, object_size);
                } else {
                    let reason = FailureReason::BadResponse {
                        expected_bytes,
                        received_bytes,
                    };
                    self.attempt_failed(id, operation, reason, true);
                }
            }
            (Step::Put | Step::Head | Step::Delete | Step::Get, ObjectCompletion::Failed(kind)) => {
                let retryable = kind.is_retryable();
                self.attempt_failed(id, operation, FailureReason::Store(kind), retryable);
            }
            (step, completion) => {
                panic!("Tier 2 {step:?} request {io_id:?} completed with {completion:?}")
            }
        }
        self.pump();
    }

    /// Fires every retry timer due at `now_ms`: those operations rejoin their queues
    /// (behind the ones already waiting) and start as slots allow.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        while let Some(&(deadline_ms, id)) = self.timers.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.timers.pop_first();
            let operation = self
                .operations
                .get_mut(&id)
                .expect("every timer has its operation");
            assert_eq!(
                operation.phase,
                Phase::Backoff(Backoff { deadline_ms }),
                "timer index out of date"
            );
            operation.phase = Phase::Ready;
            let queue = operation.work.queue();
            self.queues[queue.index()].ready.push_back(id);
        }
        self.pump();
    }

    // ---- Outputs ----

    /// The next object request for the driver.
    pub fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
        self.requests.pop_front()
    }

    /// The next log event.
    pub fn poll_event(&mut self) -> Option<Tier2Event> {
        self.events.pop_front()
    }

    /// The earliest retry deadline, if any operation is backing off.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    // ---- Queries ----

    /// Whether an upload or delete of object `key` is held (enqueuing another would
    /// get [`Tier2Error::KeyBusy`]).
    #[must_use]
    pub fn is_key_busy(&self, key: &str) -> bool {
        self.busy_keys.contains_key(key)
    }

    /// The metrics snapshot.
    #[must_use]
    pub fn metrics(&self) -> Tier2MetricsSnapshot {
        let [upload, delete, fetch] = &self.queues;
        Tier2MetricsSnapshot {
            upload_queue_depth: u64::from(upload.depth),
            delete_queue_depth: u64::from(delete.depth),
            fetch_queue_depth: u64::from(fetch.depth),
            uploads_in_flight: u64::from(upload.in_flight),
            deletes_in_flight: u64::from(delete.in_flight),
            fetches_in_flight: u64::from(fetch.in_flight),
            upload_retry_attempts: upload.retries,
            delete_retry_attempts: delete.retries,
            fetch_retry_attempts: fetch.retries,
            upload_failures: upload.failed,
            delete_failures: delete.failed,
            download_failures: fetch.failed,
            uploads: upload.succeeded,
            deletes: delete.succeeded,
            fetches: fetch.succeeded,
            uploaded_bytes: self.uploaded_bytes,
        }
    }

    /// Checks every invariant in the module doc; panics on the first broken one. Cost
    /// is linear in the operations held.
    pub fn check_invariants(&self) {
        assert!(self.config.validate().is_ok());
        let max_attempts = self.config.retry.max_attempts;
        let mut depth = [0u32; 3];
        let mut in_flight = [0u32; 3];
        let mut ready = [0usize; 3];
        let mut backing_off = 0usize;
        let mut keyed = 0usize;
        for (&id, operation) in &self.operations {
            assert!(id.0 < self.next_operation_id, "{id:?}: id from the future");
            let queue = operation.work.queue();
            depth[queue.index()] += 1;
            assert!(
                operation.attempts <= max_attempts,
                "{id:?}: too many attempts"
            );
            match operation.phase {
                Phase::Ready => {
                    assert!(
                        operation.attempts < max_attempts,
                        "{id:?}: ready, exhausted"
                    );
                    ready[queue.index()] += 1;
                }
                Phase::InFlight(request) => {
                    assert!(operation.attempts >= 1, "{id:?}: in flight, no attempt");
                    assert!(request.io_id.0 < self.next_io_id, "{id:?}: io id");
                    assert!(request.step.belongs_to(queue), "{id:?}: step of its queue");
                    assert_eq!(
                        self.in_flight.get(&request.io_id),
                        Some(&id),
                        "{id:?}: missing from the in-flight index"
                    );
                    in_flight[queue.index()] += 1;
                }
                Phase::Backoff(backoff) => {
                    assert!(operation.attempts >= 1, "{id:?}: backoff, no attempt");
                    assert!(
                        operation.attempts < max_attempts,
                        "{id:?}: backoff, exhausted"
                    );
                    assert!(
                        self.timers.contains(&(backoff.deadline_ms, id)),
                        "{id:?}: missing timer"
                    );
                    backing_off += 1;
                }
            }
            match &operation.work {
                Work::Upload {
                    object,
                    key,
                    artifact,
                } => {
                    assert_eq!(key, &object.to_string(), "{key}: the object's own key");
                    assert!(!artifact.is_empty());
                    assert_eq!(self.busy_keys.get(key), Some(&id), "{key}: busy index");
                    keyed += 1;
                }
                Work::Delete { segment, key } => {
                    assert_eq!(
                        key,
                        &segment_object_key(&segment.stream, segment.segment_id)
                    );
                    assert_eq!(self.busy_keys.get(key), Some(&id), "{key}: busy index");
                    keyed += 1;
                }
                Work::Fetch {
                    fetch_id, range, ..
                } => {
                    assert_eq!(self.fetch_ids.get(fetch_id), Some(&id), "{fetch_id}: index");
                    if let Some((start, end)) = range {
                        assert!(start < end, "{fetch_id}: empty range");
                    }
                }
            }
        }
        assert_eq!(self.busy_keys.len(), keyed, "stale busy-key index");
        let fetches = depth[Tier2Queue::Fetch.index()] as usize;
        assert_eq!(self.fetch_ids.len(), fetches, "stale fetch-id index");
        assert_eq!(self.timers.len(), backing_off, "stale timers");
        for &(deadline_ms, id) in &self.timers {
            let operation = self.operations.get(&id).expect("timer of a held operation");
            assert_eq!(operation.phase, Phase::Backoff(Backoff { deadline_ms }));
        }
        let in_flight_total: u32 = in_flight.iter().sum();
        assert_eq!(
            self.in_flight.len(),
            in_flight_total as usize,
            "stale in-flight index"
        );
        for queue in Tier2Queue::ALL {
            let state = &self.queues[queue.index()];
            let i = queue.index();
            assert_eq!(state.depth, depth[i], "{queue}: depth");
            assert_eq!(state.in_flight, in_flight[i], "{queue}: in flight");
            assert_eq!(state.ready.len(), ready[i], "{queue}: ready count");
            let unique: BTreeSet<_> = state.ready.iter().collect();
            assert_eq!(unique.len(), state.ready.len(), "{queue}: ready twice");
            for id in &state.ready {
                let operation = self.operations.get(id).expect("ready operation is held");
                assert_eq!(operation.phase, Phase::Ready, "{queue}: {id:?} not ready");
                assert_eq!(operation.work.queue(), queue, "{id:?}: in another queue");
            }
            let concurrency = self.config.concurrency(queue);
            assert!(state.in_flight <= concurrency, "{queue}: over concurrency");
            assert!(
                state.ready.is_empty() || state.in_flight == concurrency,
                "{queue}: work waits while a slot is free"
            );
            assert!(state.depth <= queue.limit(), "{queue}: over its limit");
            assert_eq!(
                state.accepted,
                state.succeeded + state.failed + u64::from(state.depth),
                "{queue}: accepted operations are conserved"
            );
        }
        assert!(self.requests.len() <= self.in_flight.len());
        let mut polled_ids = BTreeSet::new();
        for (io_id, request) in &self.requests {
            assert!(polled_ids.insert(*io_id), "{io_id:?} requested twice");
            assert!(
                self.in_flight.contains_key(io_id),
                "{io_id:?}: not in flight"
            );
            let IoRequest::Object(request) = request else {
                panic!("{io_id:?}: Tier 2 issues only object requests")
            };
            if let ObjectRequest::Put { mode, .. } = request {
                assert_eq!(mode, &PutMode::IfAbsent, "uploads never overwrite");
            }
        }
        assert!(self.requests.len() + self.events.len() <= TIER2_OUTPUTS_QUEUED_MAX as usize);
    }

    // ---- Internals ----

    fn advance(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms,
            "time went backwards: {now_ms} < {}",
            self.now_ms
        );
        self.now_ms = now_ms;
    }

    fn check_accept(&self, queue: Tier2Queue, key: Option<&str>) -> Result<(), Tier2Error> {
        if let Some(key) = key
            && let Some(held) = self.busy_keys.get(key)
        {
            let held = self.operations[held].work.queue();
            return Err(Tier2Error::KeyBusy {
                key: key.to_owned(),
                held,
            });
        }
        if self.queues[queue.index()].depth >= queue.limit() {
            return Err(Tier2Error::QueueFull {
                queue,
                limit: queue.limit(),
            });
        }
        Ok(())
    }

    fn accept(&mut self, work: Work) {
        let id = OperationId(self.next_operation_id);
        self.next_operation_id += 1;
        let queue = work.queue();
        match &work {
            Work::Upload { key, .. } | Work::Delete { key, .. } => {
                let previous = self.busy_keys.insert(key.clone(), id);
                assert!(previous.is_none(), "{key}: checked not busy");
            }
            Work::Fetch { fetch_id, .. } => {
                let previous = self.fetch_ids.insert(*fetch_id, id);
                assert!(previous.is_none(), "{fetch_id}: checked not held");
            }
        }
        self.operations.insert(
            id,
            Operation {
                work,
                attempts: 0,
                phase: Phase::Ready,
            },
        );
        let state = &mut self.queues[queue.index()];
        assert!(state.depth < queue.limit(), "{queue}: checked not full");
        state.depth += 1;
        state.accepted += 1;
        state.ready.push_back(id);
    }

    /// Starts ready operations while slots are free. Fetches first: readers wait on
    /// them. Each round starts one operation, so the queue limits bound the loop.
    fn pump(&mut self) {
        for queue in [Tier2Queue::Fetch, Tier2Queue::Upload, Tier2Queue::Delete] {
            let concurrency = self.config.concurrency(queue);
            for _ in 0..=queue.limit() {
                let state = &mut self.queues[queue.index()];
                if state.in_flight >= concurrency {
                    break;
                }
                let Some(id) = state.ready.pop_front() else {
                    break;
                };
                state.in_flight += 1;
                self.start_attempt(id);
            }
            let state = &self.queues[queue.index()];
            assert!(state.in_flight <= concurrency);
            assert!(state.ready.is_empty() || state.in_flight == concurrency);
        }
    }

    /// Starts the next attempt of a ready operation whose slot was just taken.
    fn start_attempt(&mut self, id: OperationId) {
        let mut operation = self
            .operations
            .remove(&id)
            .expect("ready operations are held");
        assert_eq!(operation.phase, Phase::Ready);
        assert!(operation.attempts < self.config.retry.max_attempts);
        operation.attempts += 1;
        let (step, request) = match &operation.work {
            Work::Upload {
                object,
                key,
                artifact,
            } => {
                self.push_event(Tier2Event::UploadStarted {
                    object: object.clone(),
                    key: key.clone(),
                    attempt: operation.attempts,
                });
                let request = ObjectRequest::Put {
                    key: key.clone(),
                    bytes: artifact.clone(),
                    mode: PutMode::IfAbsent,
                };
                (Step::Put, request)
            }
            Work::Delete { key, .. } => (Step::Delete, ObjectRequest::Delete { key: key.clone() }),
            Work::Fetch { key, range, .. } => {
                let key = key.clone();
                let request = match *range {
                    None => ObjectRequest::Get { key },
                    Some((start, end)) => ObjectRequest::GetRange { key, start, end },
                };
                (Step::Get, request)
            }
        };
        self.issue(id, &mut operation, step, request);
        self.operations.insert(id, operation);
    }

    /// Puts `operation` in flight with `request`. The caller holds its slot.
    fn issue(
        &mut self,
        id: OperationId,
        operation: &mut Operation,
        step: Step,
        request: ObjectRequest,
    ) {
        assert!(step.belongs_to(operation.work.queue()));
        let io_id = IoId(self.next_io_id);
        self.next_io_id += 1;
        operation.phase = Phase::InFlight(InFlight { io_id, step });
        let previous = self.in_flight.insert(io_id, id);
        assert!(previous.is_none(), "io ids are unique");
        assert!(
            self.requests.len() + self.events.len() < TIER2_OUTPUTS_QUEUED_MAX as usize,
            "Tier 2 outputs not drained"
        );
        self.requests.push_back((io_id, IoRequest::Object(request)));
    }

    fn push_event(&mut self, event: Tier2Event) {
        assert!(
            self.requests.len() + self.events.len() < TIER2_OUTPUTS_QUEUED_MAX as usize,
            "Tier 2 outputs not drained"
        );
        self.events.push_back(event);
    }

    /// Releases the slot of a finished attempt.
    fn release_slot(&mut self, queue: Tier2Queue) {
        let state = &mut self.queues[queue.index()];
        assert!(state.in_flight > 0, "{queue}: slot released twice");
        state.in_flight -= 1;
    }

    /// Ends an operation whose attempt just completed: frees its slot and its key.
    fn finish(&mut self, operation: &Operation, succeeded: bool) {
        let queue = operation.work.queue();
        self.release_slot(queue);
        match &operation.work {
            Work::Upload { key, .. } | Work::Delete { key, .. } => {
                let removed = self.busy_keys.remove(key);
                assert!(removed.is_some(), "{key}: busy while held");
            }
            Work::Fetch { fetch_id, .. } => {
                let removed = self.fetch_ids.remove(fetch_id);
                assert!(removed.is_some(), "{fetch_id}: indexed while held");
            }
        }
        let state = &mut self.queues[queue.index()];
        assert!(state.depth > 0);
        state.depth -= 1;
        if succeeded {
            state.succeeded += 1;
        } else {
            state.failed += 1;
        }
    }

    fn upload_succeeded(&mut self, operation: Operation, etag: Option<String>, present: bool) {
        self.finish(&operation, true);
        let Work::Upload {
            object,
            key,
            artifact,
        } = operation.work
        else {
            unreachable!("only uploads put")
        };
        let object_bytes = artifact.len() as u64;
        self.uploaded_bytes = self
            .uploaded_bytes
            .checked_add(object_bytes)
            .expect("uploaded bytes fit u64");
        self.push_event(Tier2Event::UploadSucceeded {
            object,
            key,
            etag,
            object_bytes,
            attempts: operation.attempts,
            already_present: present,
        });
    }

    fn delete_succeeded(&mut self, operation: Operation, already_absent: bool) {
        self.finish(&operation, true);
        let Work::Delete { segment, key } = operation.work else {
            unreachable!("only deletes delete")
        };
        self.push_event(Tier2Event::Deleted {
            segment,
            key,
            attempts: operation.attempts,
            already_absent,
        });
    }

    fn fetch_succeeded(&mut self, operation: Operation, bytes: Bytes, object_size: u64) {
        self.finish(&operation, true);
        let Work::Fetch {
            fetch_id,
            key,
            range,
        } = operation.work
        else {
            unreachable!("only fetches get")
        };
        self.push_event(Tier2Event::FetchSucceeded {
            fetch_id,
            key,
            range,
            bytes,
            object_size,
            attempts: operation.attempts,
        });
    }

    /// An attempt failed with `reason`: schedule a retry if `retryable` and attempts
    /// remain, else end the operation with its failure event.
    fn attempt_failed(
        &mut self,
        id: OperationId,
        mut operation: Operation,
        reason: FailureReason,
        retryable: bool,
    ) {
        let attempt = operation.attempts;
        assert!(attempt >= 1);
        // The RNG is drawn only for a retry, so traces stay aligned across runs.
        let delay_ms = if retryable {
            self.config.retry.delay_ms(attempt, &mut self.rng)
        } else {
            None
        };
        let Some(delay_ms) = delay_ms else {
            self.finish(&operation, false);
            let attempts = attempt;
            let event = match operation.work {
                Work::Upload { object, key, .. } => Tier2Event::UploadFailed {
                    object,
                    key,
                    reason,
                    attempts,
                },
                Work::Delete { segment, key } => Tier2Event::DeleteFailed {
                    segment,
                    key,
                    reason,
                    attempts,
                },
                Work::Fetch { fetch_id, key, .. } => Tier2Event::FetchFailed {
                    fetch_id,
                    key,
                    reason,
                    attempts,
                },
            };
            self.push_event(event);
            return;
        };
        assert!(
            attempt < self.config.retry.max_attempts,
            "policy allows a retry"
        );
        let queue = operation.work.queue();
        self.release_slot(queue);
        self.queues[queue.index()].retries += 1;
        let deadline_ms = self
            .now_ms
            .checked_add(delay_ms)
            .expect("now_ms plus a bounded delay fits u64");
        operation.phase = Phase::Backoff(Backoff { deadline_ms });
        let inserted = self.timers.insert((deadline_ms, id));
        assert!(inserted, "one timer per operation");
        let error = reason;
        let event = match &operation.work {
            Work::Upload { object, key, .. } => Tier2Event::UploadRetryScheduled {
                object: object.clone(),
                key: key.clone(),
                attempt,
                delay_ms,
                error,
            },
            Work::Delete { segment, key } => Tier2Event::DeleteRetryScheduled {
                segment: segment.clone(),
                key: key.clone(),
                attempt,
                delay_ms,
                error,
            },
            Work::Fetch { fetch_id, key, .. } => Tier2Event::FetchRetryScheduled {
                fetch_id: *fetch_id,
                key: key.clone(),
                attempt,
                delay_ms,
                error,
            },
        };
        self.operations.insert(id, operation);
        self.push_event(event);
    }
}

/// An etag from the store, dropped if longer than `ETAG_BYTES_MAX` (it could not be
/// recorded in the manifest; the upload itself succeeded).
fn checked_etag(etag: Option<String>) -> Option<String> {
    etag.filter(|etag| etag.len() <= ETAG_BYTES_MAX as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{DiskCompletion, ObjectMeta};
    use crate::retry::Jitter;
    use proptest::prelude::*;

    fn stream(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    fn object(name: &str, id: u64) -> ObjectKey {
        ObjectKey::Segment {
            stream: stream(name),
            segment_id: SegmentId(id),
        }
    }

    fn segment(name: &str, id: u64) -> SegmentKey {
        SegmentKey::new(stream(name), SegmentId(id))
    }

    fn key(name: &str, id: u64) -> String {
        segment_object_key(&stream(name), SegmentId(id))
    }

    /// No jitter, so delays are exactly 100, 200, 400, ... ms.
    fn plain_retry(max_attempts: u32) -> RetryPolicy {
        RetryPolicy::new(max_attempts, 100, 5000, Jitter::None).unwrap()
    }

    fn machine(concurrency: u32, retry: RetryPolicy) -> Tier2Transfers {
        Tier2Transfers::new(
            Tier2Config {
                retry,
                upload_concurrency: concurrency,
                delete_concurrency: concurrency,
                fetch_concurrency: concurrency,
                retention: RetentionPolicy::KEEP_ALL,
            },
            7,
        )
    }

    fn requests(machine: &mut Tier2Transfers) -> Vec<(IoId, ObjectRequest)> {
        let requests = std::iter::from_fn(|| machine.poll_request())
            .map(|(io_id, request)| match request {
                IoRequest::Object(request) => (io_id, request),
                other => panic!("not an object request: {other:?}"),
            })
            .collect();
        machine.check_invariants();
        requests
    }

    fn one_request(machine: &mut Tier2Transfers) -> (IoId, ObjectRequest) {
        let mut all = requests(machine);
        assert_eq!(all.len(), 1, "{all:?}");
        all.pop().unwrap()
    }

    fn events(machine: &mut Tier2Transfers) -> Vec<Tier2Event> {
        std::iter::from_fn(|| machine.poll_event()).collect()
    }

    fn complete(machine: &mut Tier2Transfers, now_ms: u64, io_id: IoId, done: ObjectCompletion) {
        machine.handle_completion(now_ms, io_id, IoCompletion::Object(done));
        machine.check_invariants();
    }

    fn failed(kind: ObjectErrorKind) -> ObjectCompletion {
        ObjectCompletion::Failed(kind)
    }

    fn put_ok() -> ObjectCompletion {
        ObjectCompletion::Put {
            etag: Some("etag-1".to_owned()),
        }
    }

    fn artifact() -> Bytes {
        Bytes::from_static(b"artifact bytes")
    }

    fn upload(machine: &mut Tier2Transfers, now_ms: u64, id: u64) {
        machine
            .enqueue_upload(now_ms, stream("s"), SegmentId(id), artifact())
            .unwrap();
        machine.check_invariants();
    }

    fn fetch_key() -> ObjectKey {
        ObjectKey::parse(&key("s", 1)).unwrap()
    }

    // ---- Configuration ----

    #[test]
    fn config_defaults_and_toml() {
        let config = Tier2Config::default();
        assert_eq!(config.retry, RetryPolicy::tier2_default());
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.base_delay_ms, 100);
        assert_eq!(config.upload_concurrency, TIER2_UPLOAD_CONCURRENCY_DEFAULT);
        assert_eq!(config.delete_concurrency, TIER2_DELETE_CONCURRENCY_DEFAULT);
        assert_eq!(config.fetch_concurrency, TIER2_FETCH_CONCURRENCY_DEFAULT);
        assert_eq!(config.retention, RetentionPolicy::KEEP_ALL);
        config.validate().unwrap();
        assert_eq!(toml::from_str::<Tier2Config>("").unwrap(), config);
        let text = "upload_concurrency = 2\n\
                    [retry]\nmax_attempts = 5\n\
                    [retention]\nmax_age_ms = 86400000\n";
        let parsed: Tier2Config = toml::from_str(text).unwrap();
        assert_eq!(parsed.upload_concurrency, 2);
        assert_eq!(parsed.delete_concurrency, TIER2_DELETE_CONCURRENCY_DEFAULT);
        assert_eq!(parsed.retry.max_attempts, 5);
        assert_eq!(parsed.retry.base_delay_ms, 100);
        assert_eq!(parsed.retention.max_age_ms, Some(86_400_000));
        assert_eq!(parsed.retention.max_bytes, None);
        let round = toml::to_string(&parsed).unwrap();
        assert_eq!(toml::from_str::<Tier2Config>(&round).unwrap(), parsed);
    }

    #[test]
    fn config_validation_names_the_knob_and_value() {
        let cases = [
            (
                Tier2Config {
                    upload_concurrency: 0,
                    ..Tier2Config::default()
                },
                "tier2.upload_concurrency = 0: must be at least 1",
            ),
            (
                Tier2Config {
                    delete_concurrency: 257,
                    ..Tier2Config::default()
                },
                "tier2.delete_concurrency = 257: must be at most 256",
            ),
            (
                Tier2Config {
                    fetch_concurrency: 0,
                    ..Tier2Config::default()
                },
                "tier2.fetch_concurrency = 0: must be at least 1",
            ),
            (
                Tier2Config {
                    retention: RetentionPolicy {
                        max_age_ms: Some(0),
                        max_bytes: None,
                    },
                    ..Tier2Config::default()
                },
                "tier2.retention.max_age_ms = 0: must be at least 1",
            ),
            (
                Tier2Config {
                    retention: RetentionPolicy {
                        max_age_ms: None,
                        max_bytes: Some(0),
                    },
                    ..Tier2Config::default()
                },
                "tier2.retention.max_bytes = 0: must be at least 1",
            ),
            (
                Tier2Config {
                    retry: RetryPolicy {
                        max_attempts: 0,
                        ..RetryPolicy::default()
                    },
                    ..Tier2Config::default()
                },
                "tier2.retry.max_attempts = 0: must be at least 1",
            ),
        ];
        for (config, message) in cases {
            let error = config.validate().unwrap_err();
            assert!(error.to_string().starts_with(message), "{error}");
        }
        for (text, needle) in [
            ("upload_concurrency = 0", "tier2.upload_concurrency = 0"),
            ("fetch_concurrency = 1000", "tier2.fetch_concurrency = 1000"),
            (
                "[retention]\nmax_bytes = 0",
                "tier2.retention.max_bytes = 0",
            ),
            ("[retry]\nmax_attempts = 0", "max_attempts = 0"),
            ("upload_concurency = 2", "upload_concurency"),
            ("[retention]\nmax_age = 5", "max_age"),
        ] {
            let error = toml::from_str::<Tier2Config>(text).unwrap_err();
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
    }

    #[test]
    #[should_panic(expected = "without validation")]
    fn invalid_config_use_is_a_bug() {
        let _ = Tier2Transfers::new(
            Tier2Config {
                upload_concurrency: 0,
                ..Tier2Config::default()
            },
            0,
        );
    }

    // ---- Uploads ----

    #[test]
    fn upload_succeeds_first_time() {
        let mut machine = machine(2, plain_retry(3));
        upload(&mut machine, 5, 1);
        let (io_id, request) = one_request(&mut machine);
        assert_eq!(
            request,
            ObjectRequest::Put {
                key: "segments/s/00000000000000000001.zst".to_owned(),
                bytes: artifact(),
                mode: PutMode::IfAbsent,
            }
        );
        assert_eq!(
            events(&mut machine),
            [Tier2Event::UploadStarted {
                object: object("s", 1),
                key: key("s", 1),
                attempt: 1
            }]
        );
        let metrics = machine.metrics();
        assert_eq!(metrics.upload_queue_depth, 1);
        assert_eq!(metrics.uploads_in_flight, 1);
        complete(&mut machine, 9, io_id, put_ok());
        assert_eq!(
            events(&mut machine),
            [Tier2Event::UploadSucceeded {
                object: object("s", 1),
                key: key("s", 1),
                etag: Some("etag-1".to_owned()),
                object_bytes: artifact().len() as u64,
                attempts: 1,
                already_present: false,
            }]
        );
        let metrics = machine.metrics();
        assert_eq!(metrics.uploads, 1);
        assert_eq!(metrics.uploaded_bytes, artifact().len() as u64);
        assert_eq!(metrics.upload_queue_depth, 0);
        assert_eq!(metrics.uploads_in_flight, 0);
        assert_eq!(metrics.upload_retry_attempts, 0);
        assert_eq!(machine.poll_timeout(), None);
        assert!(requests(&mut machine).is_empty());
    }

    #[test]
    fn upload_retry_waits_for_the_policy_delay_on_a_timer() {
        let mut machine = machine(2, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (first, _) = one_request(&mut machine);
        let _ = events(&mut machine);
        complete(&mut machine, 10, first, failed(ObjectErrorKind::Transient));
        assert_eq!(
            events(&mut machine),
            [Tier2Event::UploadRetryScheduled {
                object: object("s", 1),
                key: key("s", 1),
                attempt: 1,
                delay_ms: 100,
                error: FailureReason::Store(ObjectErrorKind::Transient),
            }]
        );
        assert!(
            requests(&mut machine).is_empty(),
            "no retry before the delay"
        );
        assert_eq!(machine.poll_timeout(), Some(110));
        let metrics = machine.metrics();
        assert_eq!(metrics.upload_retry_attempts, 1);
        assert_eq!(
            metrics.upload_queue_depth, 1,
            "a backing-off upload is held"
        );
        assert_eq!(metrics.uploads_in_flight, 0, "its slot is free");
        machine.handle_timeout(109);
        assert!(requests(&mut machine).is_empty(), "timer not due yet");
        machine.handle_timeout(110);
        let (second, request) = one_request(&mut machine);
        assert!(matches!(request, ObjectRequest::Put { .. }));
        assert_eq!(
            events(&mut machine),
            [Tier2Event::UploadStarted {
                object: object("s", 1),
                key: key("s", 1),
                attempt: 2
            }]
        );
        assert_eq!(machine.poll_timeout(), None);
        complete(&mut machine, 120, second, put_ok());
        let done = events(&mut machine);
        assert!(
            matches!(done[..], [Tier2Event::UploadSucceeded { attempts: 2, .. }]),
            "{done:?}"
        );
    }

    #[test]
    fn retry_jitter_comes_from_the_policy_and_the_seeded_rng() {
        let policy = RetryPolicy::new(3, 1000, 5000, Jitter::Full).unwrap();
        let mut machine = Tier2Transfers::new(
            Tier2Config {
                retry: policy,
                ..Tier2Config::default()
            },
            42,
        );
        let mut rng = DetRng::new(42);
        let expected = policy.delay_ms(1, &mut rng).unwrap();
        upload(&mut machine, 0, 1);
        let (io_id, _) = one_request(&mut machine);
        complete(&mut machine, 0, io_id, failed(ObjectErrorKind::Throttled));
        let retry = events(&mut machine).pop().unwrap();
        let Tier2Event::UploadRetryScheduled { delay_ms, .. } = retry else {
            panic!("{retry:?}")
        };
        assert_eq!(delay_ms, expected);
        assert_eq!(machine.poll_timeout(), Some(expected));
    }

    #[test]
    fn upload_retries_exhausted_fail_with_attempt_count() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let mut now_ms = 0;
        for attempt in 1..=3 {
            let (io_id, _) = one_request(&mut machine);
            complete(
                &mut machine,
                now_ms,
                io_id,
                failed(ObjectErrorKind::Throttled),
            );
            if attempt < 3 {
                now_ms = machine.poll_timeout().unwrap();
                machine.handle_timeout(now_ms);
            }
        }
        let all = events(&mut machine);
        let names: Vec<_> = all.iter().map(Tier2Event::name).collect();
        assert_eq!(
            names,
            [
                "tier2_upload_started",
                "tier2_upload_retry",
                "tier2_upload_started",
                "tier2_upload_retry",
                "tier2_upload_started",
                "tier2_upload_failed"
            ]
        );
        assert_eq!(
            all[5],
            Tier2Event::UploadFailed {
                object: object("s", 1),
                key: key("s", 1),
                reason: FailureReason::Store(ObjectErrorKind::Throttled),
                attempts: 3,
            }
        );
        assert!(matches!(
            all[3],
            Tier2Event::UploadRetryScheduled {
                attempt: 2,
                delay_ms: 200,
                ..
            }
        ));
        let metrics = machine.metrics();
        assert_eq!(metrics.upload_failures, 1);
        assert_eq!(metrics.upload_retry_attempts, 2);
        assert_eq!(metrics.upload_queue_depth, 0);
        assert_eq!(machine.poll_timeout(), None);
        assert!(!machine.is_key_busy(&key("s", 1)));
    }

    #[test]
    fn permanent_upload_errors_are_not_retried() {
        for kind in [
            ObjectErrorKind::Permanent,
            ObjectErrorKind::NotFound,
            ObjectErrorKind::PreconditionFailed,
        ] {
            let mut machine = machine(1, plain_retry(3));
            upload(&mut machine, 0, 1);
            let (io_id, _) = one_request(&mut machine);
            complete(&mut machine, 0, io_id, failed(kind));
            let last = events(&mut machine).pop().unwrap();
            assert_eq!(
                last,
                Tier2Event::UploadFailed {
                    object: object("s", 1),
                    key: key("s", 1),
                    reason: FailureReason::Store(kind),
                    attempts: 1,
                }
            );
            assert_eq!(machine.poll_timeout(), None);
            assert_eq!(machine.metrics().upload_retry_attempts, 0);
            assert_eq!(machine.metrics().upload_failures, 1);
        }
    }

    #[test]
    fn ambiguous_timeout_then_already_exists_with_matching_size_succeeds() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        // The first put applied, but its response was lost.
        let (first, _) = one_request(&mut machine);
        complete(&mut machine, 0, first, failed(ObjectErrorKind::Transient));
        machine.handle_timeout(machine.poll_timeout().unwrap());
        let (second, _) = one_request(&mut machine);
        complete(
            &mut machine,
            100,
            second,
            failed(ObjectErrorKind::AlreadyExists),
        );
        let (head, request) = one_request(&mut machine);
        assert_eq!(request, ObjectRequest::Head { key: key("s", 1) });
        assert_eq!(
            machine.metrics().uploads_in_flight,
            1,
            "the head holds the slot"
        );
        let meta = ObjectMeta {
            key: key("s", 1),
            size: artifact().len() as u64,
            etag: Some("etag-old".to_owned()),
        };
        complete(&mut machine, 101, head, ObjectCompletion::Head(meta));
        let last = events(&mut machine).pop().unwrap();
        assert_eq!(
            last,
            Tier2Event::UploadSucceeded {
                object: object("s", 1),
                key: key("s", 1),
                etag: Some("etag-old".to_owned()),
                object_bytes: artifact().len() as u64,
                attempts: 2,
                already_present: true,
            }
        );
        assert_eq!(machine.metrics().uploads, 1);
        assert_eq!(machine.metrics().upload_failures, 0);
    }

    #[test]
    fn already_exists_with_another_size_fails_naming_the_key() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (put, _) = one_request(&mut machine);
        complete(&mut machine, 0, put, failed(ObjectErrorKind::AlreadyExists));
        let (head, _) = one_request(&mut machine);
        let meta = ObjectMeta {
            key: key("s", 1),
            size: 3,
            etag: None,
        };
        complete(&mut machine, 0, head, ObjectCompletion::Head(meta));
        let last = events(&mut machine).pop().unwrap();
        let Tier2Event::UploadFailed {
            reason, attempts, ..
        } = &last
        else {
            panic!("{last:?}")
        };
        assert_eq!(*attempts, 1, "a size mismatch is not retried");
        assert_eq!(
            reason.to_string(),
            "object segments/s/00000000000000000001.zst already exists with 3 bytes, \
             expected 14: another artifact holds this key"
        );
        assert_eq!(reason.reason_code(), ReasonCode::ChecksumMismatch);
        assert_eq!(machine.poll_timeout(), None);
        assert_eq!(machine.metrics().upload_failures, 1);
    }

    #[test]
    fn object_vanishing_between_put_and_head_is_retried() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (put, _) = one_request(&mut machine);
        complete(&mut machine, 0, put, failed(ObjectErrorKind::AlreadyExists));
        let (head, _) = one_request(&mut machine);
        complete(&mut machine, 0, head, failed(ObjectErrorKind::NotFound));
        assert!(matches!(
            events(&mut machine).pop().unwrap(),
            Tier2Event::UploadRetryScheduled { attempt: 1, .. }
        ));
        machine.handle_timeout(100);
        let (retry, request) = one_request(&mut machine);
        assert!(matches!(request, ObjectRequest::Put { .. }));
        complete(&mut machine, 100, retry, put_ok());
        assert!(matches!(
            events(&mut machine).pop().unwrap(),
            Tier2Event::UploadSucceeded {
                attempts: 2,
                already_present: false,
                ..
            }
        ));
    }

    #[test]
    fn oversized_etag_is_dropped() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (put, _) = one_request(&mut machine);
        let etag = "e".repeat(ETAG_BYTES_MAX as usize + 1);
        complete(
            &mut machine,
            0,
            put,
            ObjectCompletion::Put { etag: Some(etag) },
        );
        assert!(matches!(
            events(&mut machine).pop().unwrap(),
            Tier2Event::UploadSucceeded { etag: None, .. }
        ));
    }

    // ---- Deletes ----

    #[test]
    fn delete_succeeds_and_not_found_counts_as_deleted() {
        let mut machine = machine(2, plain_retry(3));
        machine
            .enqueue_delete(0, stream("s"), SegmentId(1), ReasonCode::RetentionAge)
            .unwrap();
        machine
            .enqueue_delete(0, stream("s"), SegmentId(2), ReasonCode::Operator)
            .unwrap();
        assert_eq!(
            events(&mut machine),
            [
                Tier2Event::DeleteQueued {
                    segment: segment("s", 1),
                    key: key("s", 1),
                    reason: ReasonCode::RetentionAge,
                },
                Tier2Event::DeleteQueued {
                    segment: segment("s", 2),
                    key: key("s", 2),
                    reason: ReasonCode::Operator,
                },
            ]
        );
        let all = requests(&mut machine);
        assert_eq!(all[0].1, ObjectRequest::Delete { key: key("s", 1) });
        assert_eq!(all[1].1, ObjectRequest::Delete { key: key("s", 2) });
        complete(&mut machine, 1, all[0].0, ObjectCompletion::Deleted);
        complete(&mut machine, 1, all[1].0, failed(ObjectErrorKind::NotFound));
        assert_eq!(
            events(&mut machine),
            [
                Tier2Event::Deleted {
                    segment: segment("s", 1),
                    key: key("s", 1),
                    attempts: 1,
                    already_absent: false,
                },
                Tier2Event::Deleted {
                    segment: segment("s", 2),
                    key: key("s", 2),
                    attempts: 1,
                    already_absent: true,
                },
            ]
        );
        let metrics = machine.metrics();
        assert_eq!(metrics.deletes, 2);
        assert_eq!(metrics.delete_failures, 0);
        assert_eq!(metrics.delete_queue_depth, 0);
    }

    #[test]
    fn delete_retries_then_fails() {
        let mut machine = machine(1, plain_retry(2));
        machine
            .enqueue_delete(0, stream("s"), SegmentId(1), ReasonCode::RetentionSize)
            .unwrap();
        let (first, _) = one_request(&mut machine);
        complete(&mut machine, 0, first, failed(ObjectErrorKind::Throttled));
        assert_eq!(machine.poll_timeout(), Some(100));
        machine.handle_timeout(100);
        let (second, _) = one_request(&mut machine);
        complete(
            &mut machine,
            150,
            second,
            failed(ObjectErrorKind::Transient),
        );
        let names: Vec<_> = events(&mut machine).iter().map(Tier2Event::name).collect();
        assert_eq!(
            names,
            [
                "tier2_delete_queued",
                "tier2_delete_retry",
                "tier2_delete_failed"
            ]
        );
        let metrics = machine.metrics();
        assert_eq!(metrics.delete_retry_attempts, 1);
        assert_eq!(metrics.delete_failures, 1);
        assert_eq!(metrics.deletes, 0);
    }

    #[test]
    fn a_key_holds_one_upload_or_delete_at_a_time() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        assert!(machine.is_key_busy(&key("s", 1)));
        let error = machine
            .enqueue_delete(0, stream("s"), SegmentId(1), ReasonCode::Operator)
            .unwrap_err();
        assert_eq!(
            error,
            Tier2Error::KeyBusy {
                key: key("s", 1),
                held: Tier2Queue::Upload
            }
        );
        assert!(error.to_string().contains("segments/s/"), "{error}");
        let again = machine.enqueue_upload(0, stream("s"), SegmentId(1), artifact());
        assert!(matches!(again, Err(Tier2Error::KeyBusy { .. })));
        let (put, _) = one_request(&mut machine);
        complete(&mut machine, 0, put, put_ok());
        machine
            .enqueue_delete(0, stream("s"), SegmentId(1), ReasonCode::Operator)
            .unwrap();
        machine.check_invariants();
    }

    // ---- Fetches ----

    #[test]
    fn fetch_whole_and_range() {
        let mut machine = machine(2, plain_retry(3));
        machine
            .enqueue_fetch(0, FetchId(1), &fetch_key(), None)
            .unwrap();
        machine
            .enqueue_fetch(0, FetchId(2), &fetch_key(), Some((4, 100)))
            .unwrap();
        let all = requests(&mut machine);
        assert_eq!(all[0].1, ObjectRequest::Get { key: key("s", 1) });
        assert_eq!(
            all[1].1,
            ObjectRequest::GetRange {
                key: key("s", 1),
                start: 4,
                end: 100
            }
        );
        let body = Bytes::from_static(b"0123456789");
        let got = |bytes: Bytes| ObjectCompletion::Got {
            bytes,
            object_size: 10,
        };
        complete(&mut machine, 1, all[0].0, got(body.clone()));
        complete(&mut machine, 1, all[1].0, got(body.slice(4..)));
        assert_eq!(
            events(&mut machine),
            [
                Tier2Event::FetchSucceeded {
                    fetch_id: FetchId(1),
                    key: key("s", 1),
                    range: None,
                    bytes: body.clone(),
                    object_size: 10,
                    attempts: 1,
                },
                Tier2Event::FetchSucceeded {
                    fetch_id: FetchId(2),
                    key: key("s", 1),
                    range: Some((4, 100)),
                    bytes: body.slice(4..),
                    object_size: 10,
                    attempts: 1,
                },
            ]
        );
        assert_eq!(machine.metrics().fetches, 2);
    }

    #[test]
    fn fetch_not_found_fails_without_retry() {
        let mut machine = machine(1, plain_retry(3));
        machine
            .enqueue_fetch(0, FetchId(9), &fetch_key(), None)
            .unwrap();
        let (io_id, _) = one_request(&mut machine);
        complete(&mut machine, 0, io_id, failed(ObjectErrorKind::NotFound));
        let all = events(&mut machine);
        assert_eq!(
            all,
            [Tier2Event::FetchFailed {
                fetch_id: FetchId(9),
                key: key("s", 1),
                reason: FailureReason::Store(ObjectErrorKind::NotFound),
                attempts: 1,
            }]
        );
        assert_eq!(all[0].name(), "tier2_fetch_failed");
        assert!(all[0].is_failure());
        assert_eq!(machine.poll_timeout(), None);
        let metrics = machine.metrics();
        assert_eq!(metrics.download_failures, 1);
        assert_eq!(metrics.fetch_retry_attempts, 0);
        assert_eq!(metrics.fetch_queue_depth, 0);
    }

    #[test]
    fn truncated_fetch_body_is_retried_then_fails() {
        let mut machine = machine(1, plain_retry(2));
        machine
            .enqueue_fetch(0, FetchId(1), &fetch_key(), Some((0, 8)))
            .unwrap();
        let (first, _) = one_request(&mut machine);
        let short = ObjectCompletion::Got {
            bytes: Bytes::from_static(b"0123"),
            object_size: 10,
        };
        complete(&mut machine, 0, first, short.clone());
        let retry = events(&mut machine).pop().unwrap();
        let expected_error = FailureReason::BadResponse {
            expected_bytes: 8,
            received_bytes: 4,
        };
        assert_eq!(
            retry,
            Tier2Event::FetchRetryScheduled {
                fetch_id: FetchId(1),
                key: key("s", 1),
                attempt: 1,
                delay_ms: 100,
                error: expected_error.clone(),
            }
        );
        machine.handle_timeout(100);
        let (second, _) = one_request(&mut machine);
        complete(&mut machine, 100, second, short);
        assert_eq!(
            events(&mut machine),
            [Tier2Event::FetchFailed {
                fetch_id: FetchId(1),
                key: key("s", 1),
                reason: expected_error,
                attempts: 2,
            }]
        );
        assert_eq!(machine.metrics().download_failures, 1);
        assert_eq!(machine.metrics().fetch_retry_attempts, 1);
    }

    #[test]
    fn empty_or_reversed_range_is_a_typed_error() {
        let mut machine = machine(1, plain_retry(3));
        for (start, end) in [(5, 5), (6, 5)] {
            let error = machine
                .enqueue_fetch(0, FetchId(1), &fetch_key(), Some((start, end)))
                .unwrap_err();
            assert!(matches!(error, Tier2Error::InvalidRange { .. }));
            assert!(error.to_string().contains("invalid range"), "{error}");
        }
        assert_eq!(machine.metrics().fetch_queue_depth, 0);
        machine.check_invariants();
    }

    // ---- Concurrency and queue limits ----

    #[test]
    fn concurrency_bound_is_respected_per_queue() {
        let mut machine = machine(2, plain_retry(3));
        for id in 0..5 {
            upload(&mut machine, 0, id);
        }
        machine
            .enqueue_delete(0, stream("t"), SegmentId(0), ReasonCode::Operator)
            .unwrap();
        let first = requests(&mut machine);
        assert_eq!(first.len(), 3, "two uploads and the delete: {first:?}");
        let metrics = machine.metrics();
        assert_eq!(metrics.upload_queue_depth, 5);
        assert_eq!(metrics.uploads_in_flight, 2);
        assert_eq!(metrics.deletes_in_flight, 1);
        complete(&mut machine, 1, first[0].0, put_ok());
        let next = one_request(&mut machine);
        assert_eq!(
            next.1,
            ObjectRequest::Put {
                key: key("s", 2),
                bytes: artifact(),
                mode: PutMode::IfAbsent
            },
            "the oldest waiting upload starts"
        );
        assert_eq!(machine.metrics().uploads_in_flight, 2);
        assert_eq!(machine.metrics().upload_queue_depth, 4);
    }

    #[test]
    fn backing_off_frees_the_slot_and_retries_queue_behind_waiting_work() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        upload(&mut machine, 0, 2);
        let (first, _) = one_request(&mut machine);
        complete(&mut machine, 0, first, failed(ObjectErrorKind::Transient));
        let (second, request) = one_request(&mut machine);
        assert!(
            matches!(request, ObjectRequest::Put { key: ref put_key, .. } if *put_key == key("s", 2))
        );
        machine.handle_timeout(100);
        assert!(requests(&mut machine).is_empty(), "the slot is taken");
        complete(&mut machine, 100, second, put_ok());
        let (_, retry) = one_request(&mut machine);
        assert!(
            matches!(retry, ObjectRequest::Put { key: ref put_key, .. } if *put_key == key("s", 1))
        );
    }

    #[test]
    fn full_queues_refuse_with_a_typed_error() {
        let mut machine = machine(1, plain_retry(3));
        for id in 0..u64::from(TIER2_UPLOAD_QUEUE_MAX) {
            machine
                .enqueue_upload(0, stream("s"), SegmentId(id), artifact())
                .unwrap();
        }
        for id in 0..u64::from(TIER2_DELETE_QUEUE_MAX) {
            machine
                .enqueue_delete(0, stream("d"), SegmentId(id), ReasonCode::Operator)
                .unwrap();
        }
        for id in 0..u64::from(TIER2_FETCH_QUEUE_MAX) {
            machine
                .enqueue_fetch(0, FetchId(id), &fetch_key(), None)
                .unwrap();
        }
        machine.check_invariants();
        let upload = machine.enqueue_upload(0, stream("x"), SegmentId(0), artifact());
        assert_eq!(
            upload,
            Err(Tier2Error::QueueFull {
                queue: Tier2Queue::Upload,
                limit: TIER2_UPLOAD_QUEUE_MAX
            })
        );
        assert_eq!(
            upload.unwrap_err().to_string(),
            "the Tier 2 upload queue is full (4096 operations held): retry after some finish"
        );
        let delete = machine.enqueue_delete(0, stream("x"), SegmentId(0), ReasonCode::Operator);
        assert!(matches!(
            delete,
            Err(Tier2Error::QueueFull {
                queue: Tier2Queue::Delete,
                ..
            })
        ));
        let fetch = machine.enqueue_fetch(0, FetchId(u64::MAX), &fetch_key(), None);
        assert!(matches!(
            fetch,
            Err(Tier2Error::QueueFull {
                queue: Tier2Queue::Fetch,
                ..
            })
        ));
        let metrics = machine.metrics();
        assert_eq!(
            metrics.upload_queue_depth,
            u64::from(TIER2_UPLOAD_QUEUE_MAX)
        );
        // One finishing upload makes room for one more.
        let uploads: Vec<_> = requests(&mut machine)
            .into_iter()
            .filter(|(_, request)| matches!(request, ObjectRequest::Put { .. }))
            .collect();
        complete(&mut machine, 1, uploads[0].0, put_ok());
        machine
            .enqueue_upload(1, stream("x"), SegmentId(0), artifact())
            .unwrap();
        machine.check_invariants();
    }

    // ---- Contract violations ----

    #[test]
    #[should_panic(expected = "unknown request")]
    fn completion_for_unknown_id_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        complete(&mut machine, 0, IoId(99), put_ok());
    }

    #[test]
    #[should_panic(expected = "unknown request")]
    fn completing_twice_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (io_id, _) = one_request(&mut machine);
        complete(&mut machine, 0, io_id, failed(ObjectErrorKind::Transient));
        complete(&mut machine, 0, io_id, put_ok());
    }

    #[test]
    #[should_panic(expected = "completed with Deleted")]
    fn completion_of_the_wrong_kind_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (io_id, _) = one_request(&mut machine);
        complete(&mut machine, 0, io_id, ObjectCompletion::Deleted);
    }

    #[test]
    #[should_panic(expected = "only object requests")]
    fn disk_completion_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        let (io_id, _) = one_request(&mut machine);
        machine.handle_completion(0, io_id, IoCompletion::Disk(DiskCompletion::Done));
    }

    #[test]
    #[should_panic(expected = "before its request was polled")]
    fn completion_before_poll_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 0, 1);
        complete(&mut machine, 0, IoId(0), put_ok());
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn time_going_backwards_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        upload(&mut machine, 10, 1);
        machine.handle_timeout(9);
    }

    #[test]
    #[should_panic(expected = "still held")]
    fn duplicate_fetch_id_is_a_bug() {
        let mut machine = machine(1, plain_retry(3));
        machine
            .enqueue_fetch(0, FetchId(1), &fetch_key(), None)
            .unwrap();
        let _ = machine.enqueue_fetch(0, FetchId(1), &fetch_key(), None);
    }

    #[test]
    fn event_names_and_target() {
        let failure = FailureReason::Store(ObjectErrorKind::Transient);
        let cases = [
            (
                Tier2Event::UploadStarted {
                    object: object("s", 1),
                    key: key("s", 1),
                    attempt: 1,
                },
                "tier2_upload_started",
            ),
            (
                Tier2Event::UploadSucceeded {
                    object: object("s", 1),
                    key: key("s", 1),
                    etag: None,
                    object_bytes: 1,
                    attempts: 1,
                    already_present: false,
                },
                "tier2_upload_succeeded",
            ),
            (
                Tier2Event::UploadRetryScheduled {
                    object: object("s", 1),
                    key: key("s", 1),
                    attempt: 1,
                    delay_ms: 1,
                    error: failure.clone(),
                },
                "tier2_upload_retry",
            ),
            (
                Tier2Event::UploadFailed {
                    object: object("s", 1),
                    key: key("s", 1),
                    reason: failure.clone(),
                    attempts: 1,
                },
                "tier2_upload_failed",
            ),
            (
                Tier2Event::DeleteQueued {
                    segment: segment("s", 1),
                    key: key("s", 1),
                    reason: ReasonCode::Operator,
                },
                "tier2_delete_queued",
            ),
            (
                Tier2Event::Deleted {
                    segment: segment("s", 1),
                    key: key("s", 1),
                    attempts: 1,
                    already_absent: false,
                },
                "tier2_delete_succeeded",
            ),
            (
                Tier2Event::DeleteRetryScheduled {
                    segment: segment("s", 1),
                    key: key("s", 1),
                    attempt: 1,
                    delay_ms: 1,
                    error: failure.clone(),
                },
                "tier2_delete_retry",
            ),
            (
                Tier2Event::DeleteFailed {
                    segment: segment("s", 1),
                    key: key("s", 1),
                    reason: failure.clone(),
                    attempts: 1,
                },
                "tier2_delete_failed",
            ),
            (
                Tier2Event::FetchSucceeded {
                    fetch_id: FetchId(1),
                    key: key("s", 1),
                    range: None,
                    bytes: Bytes::new(),
                    object_size: 0,
                    attempts: 1,
                },
                "tier2_fetch_succeeded",
            ),
            (
                Tier2Event::FetchRetryScheduled {
                    fetch_id: FetchId(1),
                    key: key("s", 1),
                    attempt: 1,
                    delay_ms: 1,
                    error: failure.clone(),
                },
                "tier2_fetch_retry",
            ),
            (
                Tier2Event::FetchFailed {
                    fetch_id: FetchId(1),
                    key: key("s", 1),
                    reason: failure,
                    attempts: 1,
                },
                "tier2_fetch_failed",
            ),
        ];
        let terminal = [
            "tier2_upload_succeeded",
            "tier2_upload_failed",
            "tier2_delete_succeeded",
            "tier2_delete_failed",
            "tier2_fetch_succeeded",
            "tier2_fetch_failed",
        ];
        for (event, name) in cases {
            assert_eq!(event.name(), name);
            assert_eq!(event.target(), "aof2::tier2");
            assert_eq!(event.key(), key("s", 1));
            assert_eq!(event.is_terminal(), terminal.contains(&name), "{name}");
            assert_eq!(event.is_failure(), name.ends_with("_failed"), "{name}");
        }
    }

    // ---- Random operation sequences ----

    const SEGMENTS: u8 = 4;
    /// Size of every object a fetch reads.
    const FETCHED_OBJECT_BYTES: u64 = 64;

    #[derive(Debug, Clone)]
    enum Outcome {
        Success,
        /// A head answering another size (a success for other requests).
        HeadMismatch,
        /// A get answering a truncated body (a success for other requests).
        ShortBody,
        Error(ObjectErrorKind),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upload {
            segment: u8,
            bytes: u8,
        },
        Delete {
            segment: u8,
        },
        Fetch {
            segment: u8,
            range: Option<(u8, u8)>,
        },
        Complete {
            pick: u8,
            outcome: Outcome,
        },
        Advance {
            ms: u8,
        },
    }

    fn error_kind() -> impl Strategy<Value = ObjectErrorKind> {
        prop_oneof![
            Just(ObjectErrorKind::NotFound),
            Just(ObjectErrorKind::AlreadyExists),
            Just(ObjectErrorKind::PreconditionFailed),
            Just(ObjectErrorKind::Throttled),
            Just(ObjectErrorKind::Transient),
            Just(ObjectErrorKind::Permanent),
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            3 => Just(Outcome::Success),
            1 => Just(Outcome::HeadMismatch),
            1 => Just(Outcome::ShortBody),
            4 => error_kind().prop_map(Outcome::Error),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let segment = 0..SEGMENTS;
        prop_oneof![
            1 => (segment.clone(), any::<u8>())
                .prop_map(|(segment, bytes)| Op::Upload { segment, bytes }),
            1 => segment.clone().prop_map(|segment| Op::Delete { segment }),
            1 => (segment, proptest::option::of((0u8..80, 0u8..80)))
                .prop_map(|(segment, range)| Op::Fetch { segment, range }),
            3 => (any::<u8>(), outcome()).prop_map(|(pick, outcome)| Op::Complete { pick, outcome }),
            1 => any::<u8>().prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn config() -> impl Strategy<Value = Tier2Config> {
        (
            1u32..=4,
            0u64..=50,
            prop_oneof![Just(Jitter::Equal), Just(Jitter::Full)],
            1u32..=3,
            1u32..=3,
            1u32..=3,
        )
            .prop_map(
                |(attempts, base, jitter, upload, delete, fetch)| Tier2Config {
                    retry: RetryPolicy::new(attempts, base, 200, jitter).unwrap(),
                    upload_concurrency: upload,
                    delete_concurrency: delete,
                    fetch_concurrency: fetch,
                    retention: RetentionPolicy::KEEP_ALL,
                },
            )
    }

    fn queue_of(request: &ObjectRequest) -> Tier2Queue {
        match request {
            ObjectRequest::Put { .. } | ObjectRequest::Head { .. } => Tier2Queue::Upload,
            ObjectRequest::Delete { .. } => Tier2Queue::Delete,
            ObjectRequest::Get { .. } | ObjectRequest::GetRange { .. } => Tier2Queue::Fetch,
            ObjectRequest::List { .. } => panic!("Tier 2 never lists"),
        }
    }

    /// A driver that completes requests as told, and a model of what must happen.
    #[derive(Default)]
    struct Driver {
        now_ms: u64,
        outstanding: Vec<(IoId, ObjectRequest)>,
        /// Accepted uploads and deletes without a terminal event yet, by key.
        open_keys: BTreeMap<String, Tier2Queue>,
        /// Accepted fetches without a terminal event yet.
        open_fetches: BTreeSet<FetchId>,
        upload_bytes: BTreeMap<String, u64>,
        next_fetch_id: u64,
        accepted: [u64; 3],
        terminal: [u64; 3],
        /// Every request and event, in order: the run's trace.
        trace: Vec<String>,
        /// The request just completed and its completion, until the event it caused.
        last_completion: Option<(ObjectRequest, ObjectCompletion)>,
    }

    impl Driver {
        fn open(&mut self, queue: Tier2Queue, key: String) {
            self.accepted[queue.index()] += 1;
            let previous = self.open_keys.insert(key, queue);
            assert!(previous.is_none());
        }

        fn close(&mut self, queue: Tier2Queue, key: &str) {
            self.terminal[queue.index()] += 1;
            let open = self.open_keys.remove(key);
            assert_eq!(
                open,
                Some(queue),
                "{key}: terminal event without an operation"
            );
        }
    }

    fn completion_for(
        driver: &Driver,
        request: &ObjectRequest,
        outcome: &Outcome,
    ) -> ObjectCompletion {
        if let Outcome::Error(kind) = outcome {
            return ObjectCompletion::Failed(*kind);
        }
        match request {
            ObjectRequest::Put { .. } => ObjectCompletion::Put {
                etag: Some("etag".to_owned()),
            },
            ObjectRequest::Head { key } => {
                let size = driver.upload_bytes[key];
                let size = if matches!(outcome, Outcome::HeadMismatch) {
                    size + 1
                } else {
                    size
                };
                ObjectCompletion::Head(ObjectMeta {
                    key: key.clone(),
                    size,
                    etag: None,
                })
            }
            ObjectRequest::Delete { .. } => ObjectCompletion::Deleted,
            ObjectRequest::Get { .. } | ObjectRequest::GetRange { .. } => {
                let expected = match request {
                    ObjectRequest::GetRange { start, end, .. } => {
                        (*end).min(FETCHED_OBJECT_BYTES).saturating_sub(*start)
                    }
                    _ => FETCHED_OBJECT_BYTES,
                };
                let length = match (outcome, expected) {
                    (Outcome::ShortBody, 0) => 1,
                    (Outcome::ShortBody, expected) => expected - 1,
                    _ => expected,
                };
                ObjectCompletion::Got {
                    bytes: Bytes::from(vec![7; length as usize]),
                    object_size: FETCHED_OBJECT_BYTES,
                }
            }
            ObjectRequest::List { .. } => panic!("Tier 2 never lists"),
        }
    }

    fn is_retry(event: &Tier2Event) -> bool {
        matches!(
            event,
            Tier2Event::UploadRetryScheduled { .. }
                | Tier2Event::DeleteRetryScheduled { .. }
                | Tier2Event::FetchRetryScheduled { .. }
        )
    }

    fn request_key(request: &ObjectRequest) -> &str {
        match request {
            ObjectRequest::Put { key, .. }
            | ObjectRequest::Get { key }
            | ObjectRequest::GetRange { key, .. }
            | ObjectRequest::Head { key }
            | ObjectRequest::Delete { key } => key,
            ObjectRequest::List { .. } => panic!("Tier 2 never lists"),
        }
    }

    /// Checks a retry or terminal event against the completion that caused it: the
    /// oracle of what each answer of the store must lead to.
    fn check_outcome(
        config: &Tier2Config,
        driver: &Driver,
        event: &Tier2Event,
        request: &ObjectRequest,
        completion: &ObjectCompletion,
    ) {
        let context = format!("{request:?} -> {completion:?} gave {event:?}");
        assert_eq!(event.key(), request_key(request), "{context}");
        let max_attempts = config.retry.max_attempts;
        let is_head = matches!(request, ObjectRequest::Head { .. });
        // Whether the failure that `reason` reports may be retried.
        let retryable = |reason: &FailureReason| match (reason, completion) {
            (FailureReason::Store(kind), ObjectCompletion::Failed(answered)) => {
                assert_eq!(kind, answered, "{context}");
                kind.is_retryable() || (is_head && *kind == ObjectErrorKind::NotFound)
            }
            (FailureReason::BadResponse { .. }, ObjectCompletion::Got { .. }) => true,
            (FailureReason::SizeMismatch { found_bytes, .. }, ObjectCompletion::Head(meta)) => {
                assert_eq!(*found_bytes, meta.size, "{context}");
                assert_ne!(meta.size, driver.upload_bytes[&meta.key], "{context}");
                false
            }
            _ => panic!("reason does not match the answer: {context}"),
        };
        match event {
            Tier2Event::UploadRetryScheduled { error, attempt, .. }
            | Tier2Event::DeleteRetryScheduled { error, attempt, .. }
            | Tier2Event::FetchRetryScheduled { error, attempt, .. } => {
                assert!(retryable(error), "retried a permanent failure: {context}");
                assert!(*attempt < max_attempts, "{context}");
            }
            Tier2Event::UploadFailed {
                reason, attempts, ..
            }
            | Tier2Event::DeleteFailed {
                reason, attempts, ..
            }
            | Tier2Event::FetchFailed {
                reason, attempts, ..
            } => {
                if retryable(reason) {
                    assert_eq!(*attempts, max_attempts, "gave up early: {context}");
                }
                let deleted = matches!(event, Tier2Event::DeleteFailed { .. })
                    && *completion == ObjectCompletion::Failed(ObjectErrorKind::NotFound);
                assert!(!deleted, "a missing object counts as deleted: {context}");
            }
            Tier2Event::UploadSucceeded {
                already_present,
                object_bytes,
                ..
            } => match completion {
                ObjectCompletion::Put { .. } => assert!(!already_present, "{context}"),
                ObjectCompletion::Head(meta) => {
                    assert!(already_present, "{context}");
                    assert_eq!(meta.size, *object_bytes, "{context}");
                }
                _ => panic!("{context}"),
            },
            Tier2Event::Deleted { already_absent, .. } => match completion {
                ObjectCompletion::Deleted => assert!(!already_absent, "{context}"),
                ObjectCompletion::Failed(ObjectErrorKind::NotFound) => {
                    assert!(already_absent, "{context}");
                }
                _ => panic!("{context}"),
            },
            Tier2Event::FetchSucceeded {
                bytes, object_size, ..
            } => {
                let ObjectCompletion::Got {
                    bytes: answered, ..
                } = completion
                else {
                    panic!("{context}")
                };
                assert_eq!(bytes, answered, "{context}");
                let expected = match request {
                    ObjectRequest::GetRange { start, end, .. } => {
                        (*end).min(*object_size).saturating_sub(*start)
                    }
                    _ => *object_size,
                };
                assert_eq!(bytes.len() as u64, expected, "a truncated body: {context}");
            }
            _ => panic!("not a retry or terminal event: {context}"),
        }
    }

    /// Drains requests and events like a driver, checking them against the model.
    fn drain(machine: &mut Tier2Transfers, driver: &mut Driver) {
        machine.check_invariants();
        let config = *machine.config();
        while let Some((io_id, request)) = machine.poll_request() {
            let IoRequest::Object(request) = request else {
                panic!("{io_id:?}: not an object request")
            };
            if let ObjectRequest::Put { mode, .. } = &request {
                assert_eq!(mode, &PutMode::IfAbsent);
            }
            driver.trace.push(format!("{io_id:?} {request:?}"));
            driver.outstanding.push((io_id, request));
        }
        let mut completed = driver.last_completion.take();
        while let Some(event) = machine.poll_event() {
            driver.trace.push(format!("{event:?}"));
            if event.is_terminal() || is_retry(&event) {
                let (request, completion) = completed
                    .take()
                    .unwrap_or_else(|| panic!("{event:?} without a completion"));
                check_outcome(&config, driver, &event, &request, &completion);
            }
            match &event {
                Tier2Event::UploadStarted { attempt, .. } => {
                    assert!(*attempt >= 1 && *attempt <= config.retry.max_attempts);
                }
                Tier2Event::UploadRetryScheduled {
                    attempt, delay_ms, ..
                }
                | Tier2Event::DeleteRetryScheduled {
                    attempt, delay_ms, ..
                }
                | Tier2Event::FetchRetryScheduled {
                    attempt, delay_ms, ..
                } => {
                    assert!(
                        *attempt < config.retry.max_attempts,
                        "retry beyond the policy"
                    );
                    assert!(*delay_ms <= config.retry.backoff_ms(*attempt).unwrap());
                }
                Tier2Event::UploadSucceeded { key, attempts, .. }
                | Tier2Event::UploadFailed { key, attempts, .. } => {
                    assert!(*attempts >= 1 && *attempts <= config.retry.max_attempts);
                    driver.close(Tier2Queue::Upload, key);
                }
                Tier2Event::Deleted { key, attempts, .. }
                | Tier2Event::DeleteFailed { key, attempts, .. } => {
                    assert!(*attempts >= 1 && *attempts <= config.retry.max_attempts);
                    driver.close(Tier2Queue::Delete, key);
                }
                Tier2Event::FetchSucceeded {
                    fetch_id, attempts, ..
                }
                | Tier2Event::FetchFailed {
                    fetch_id, attempts, ..
                } => {
                    assert!(*attempts >= 1 && *attempts <= config.retry.max_attempts);
                    driver.terminal[Tier2Queue::Fetch.index()] += 1;
                    assert!(
                        driver.open_fetches.remove(fetch_id),
                        "{fetch_id}: ended twice"
                    );
                }
                Tier2Event::DeleteQueued { .. } => {}
            }
        }
        if let Some((request, completion)) = completed {
            assert!(
                matches!(request, ObjectRequest::Put { .. })
                    && completion == ObjectCompletion::Failed(ObjectErrorKind::AlreadyExists),
                "{request:?} -> {completion:?} caused no retry or terminal event"
            );
            let issued_head = driver.outstanding.last().map(|(_, request)| request);
            assert!(
                matches!(issued_head, Some(ObjectRequest::Head { .. })),
                "AlreadyExists is followed by a head"
            );
        }
        // Every request is polled now: the driver's view is the machine's.
        let metrics = machine.metrics();
        let in_flight = [
            metrics.uploads_in_flight,
            metrics.deletes_in_flight,
            metrics.fetches_in_flight,
        ];
        let depth = [
            metrics.upload_queue_depth,
            metrics.delete_queue_depth,
            metrics.fetch_queue_depth,
        ];
        for queue in Tier2Queue::ALL {
            let outstanding = driver
                .outstanding
                .iter()
                .filter(|(_, request)| queue_of(request) == queue)
                .count() as u64;
            assert!(
                outstanding <= u64::from(config.concurrency(queue)),
                "{queue}: concurrency"
            );
            assert_eq!(outstanding, in_flight[queue.index()], "{queue}: in flight");
            let open = driver.accepted[queue.index()] - driver.terminal[queue.index()];
            assert_eq!(open, depth[queue.index()], "{queue}: depth");
        }
    }

    fn apply(machine: &mut Tier2Transfers, driver: &mut Driver, op: &Op) {
        let now_ms = driver.now_ms;
        match op {
            Op::Upload { segment, bytes } => {
                let id = SegmentId(u64::from(*segment));
                let key = segment_object_key(&stream("s"), id);
                let artifact = Bytes::from(vec![1; usize::from(*bytes) + 1]);
                let length = artifact.len() as u64;
                match machine.enqueue_upload(now_ms, stream("s"), id, artifact) {
                    Ok(()) => {
                        driver.upload_bytes.insert(key.clone(), length);
                        driver.open(Tier2Queue::Upload, key);
                    }
                    Err(Tier2Error::KeyBusy { key: busy, held }) => {
                        assert_eq!(driver.open_keys.get(&busy), Some(&held));
                    }
                    Err(error) => panic!("unexpected {error}"),
                }
            }
            Op::Delete { segment } => {
                let id = SegmentId(u64::from(*segment));
                let key = segment_object_key(&stream("s"), id);
                match machine.enqueue_delete(now_ms, stream("s"), id, ReasonCode::Operator) {
                    Ok(()) => driver.open(Tier2Queue::Delete, key),
                    Err(Tier2Error::KeyBusy { key: busy, held }) => {
                        assert_eq!(driver.open_keys.get(&busy), Some(&held));
                    }
                    Err(error) => panic!("unexpected {error}"),
                }
            }
            Op::Fetch { segment, range } => {
                let fetch_id = FetchId(driver.next_fetch_id);
                driver.next_fetch_id += 1;
                let key = ObjectKey::Segment {
                    stream: stream("s"),
                    segment_id: SegmentId(u64::from(*segment)),
                };
                let range = range.map(|(start, end)| (u64::from(start), u64::from(end)));
                match machine.enqueue_fetch(now_ms, fetch_id, &key, range) {
                    Ok(()) => {
                        driver.accepted[Tier2Queue::Fetch.index()] += 1;
                        assert!(driver.open_fetches.insert(fetch_id));
                    }
                    Err(Tier2Error::InvalidRange { start, end, .. }) => assert!(start >= end),
                    Err(error) => panic!("unexpected {error}"),
                }
            }
            Op::Complete { pick, outcome } => {
                if driver.outstanding.is_empty() {
                    return;
                }
                let at = usize::from(*pick) % driver.outstanding.len();
                let (io_id, request) = driver.outstanding.remove(at);
                let completion = completion_for(driver, &request, outcome);
                driver.trace.push(format!("{io_id:?} -> {completion:?}"));
                driver.last_completion = Some((request, completion.clone()));
                machine.handle_completion(now_ms, io_id, IoCompletion::Object(completion));
            }
            Op::Advance { ms } => {
                driver.now_ms += u64::from(*ms);
                if machine
                    .poll_timeout()
                    .is_some_and(|deadline| deadline <= driver.now_ms)
                {
                    machine.handle_timeout(driver.now_ms);
                }
            }
        }
    }

    /// Runs `ops`, then lets every operation finish without faults; returns the trace.
    fn run(config: Tier2Config, seed: u64, ops: &[Op]) -> Vec<String> {
        let mut machine = Tier2Transfers::new(config, seed);
        let mut driver = Driver::default();
        for op in ops {
            apply(&mut machine, &mut driver, op);
            drain(&mut machine, &mut driver);
        }
        // Faults stop: complete everything with success, fire every timer.
        let mut settled = false;
        for _ in 0..10_000 {
            if !driver.outstanding.is_empty() {
                apply(
                    &mut machine,
                    &mut driver,
                    &Op::Complete {
                        pick: 0,
                        outcome: Outcome::Success,
                    },
                );
            } else if let Some(deadline_ms) = machine.poll_timeout() {
                driver.now_ms = driver.now_ms.max(deadline_ms);
                machine.handle_timeout(driver.now_ms);
            } else {
                settled = true;
                break;
            }
            drain(&mut machine, &mut driver);
        }
        assert!(settled, "operations still running after faults stopped");
        assert!(
            driver.open_keys.is_empty(),
            "no terminal event: {:?}",
            driver.open_keys
        );
        assert!(
            driver.open_fetches.is_empty(),
            "no terminal event: {:?}",
            driver.open_fetches
        );
        assert_eq!(driver.accepted, driver.terminal, "one terminal event each");
        let metrics = machine.metrics();
        assert_eq!(
            metrics.uploads + metrics.upload_failures,
            driver.accepted[Tier2Queue::Upload.index()]
        );
        assert_eq!(
            metrics.deletes + metrics.delete_failures,
            driver.accepted[Tier2Queue::Delete.index()]
        );
        assert_eq!(
            metrics.fetches + metrics.download_failures,
            driver.accepted[Tier2Queue::Fetch.index()]
        );
        assert!(machine.poll_request().is_none());
        assert!(machine.poll_event().is_none());
        driver.trace
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_faults_keep_invariants_and_end_every_operation_once(
            config in config(),
            seed: u64,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let trace = run(config, seed, &ops);
            let again = run(config, seed, &ops);
            prop_assert_eq!(trace, again, "same seed, same trace");
        }
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let config = Tier2Config {
            retry: RetryPolicy::new(4, 100, 200, Jitter::Full).unwrap(),
            ..Tier2Config::default()
        };
        let mut ops = Vec::new();
        for segment in 0..SEGMENTS {
            ops.push(Op::Upload { segment, bytes: 9 });
        }
        for _ in 0..8 {
            ops.push(Op::Complete {
                pick: 0,
                outcome: Outcome::Error(ObjectErrorKind::Transient),
            });
        }
        let traces: Vec<_> = (0..4).map(|seed| run(config, seed, &ops)).collect();
        assert_eq!(traces[0], run(config, 0, &ops));
        assert!(
            traces[1..].iter().any(|trace| *trace != traces[0]),
            "jitter depends on the seed"
        );
    }

    // ---- Retention ----

    /// Segments of 10 records each, sealed at `sealed_at_ms[i]`, of `bytes[i]`.
    fn segments(sealed_at_ms: &[u64], bytes: &[u64]) -> Vec<RetainedSegment> {
        assert_eq!(sealed_at_ms.len(), bytes.len());
        (0..sealed_at_ms.len())
            .map(|i| RetainedSegment {
                segment_id: SegmentId(100 + i as u64),
                base_offset: 10 * i as u64,
                next_offset: 10 * (i as u64 + 1),
                sealed_at_ms: sealed_at_ms[i],
                object_bytes: bytes[i],
            })
            .collect()
    }

    fn ids(range: std::ops::Range<u64>) -> Vec<SegmentId> {
        range.map(|i| SegmentId(100 + i)).collect()
    }

    #[test]
    fn retention_by_age_deletes_the_expired_prefix() {
        let policy = RetentionPolicy {
            max_age_ms: Some(1000),
            max_bytes: None,
        };
        let list = segments(&[0, 100, 500, 900], &[1; 4]);
        let decision = select_retention(1500, &policy, &list);
        // Ages 1500, 1400, 1000, 600: only strictly older than 1000 go.
        assert_eq!(decision.delete, ids(0..2));
        assert_eq!(decision.new_start_offset, Some(20));
        assert_eq!(decision.deleted_by_age, 2);
        assert_eq!(decision.reason(1), ReasonCode::RetentionAge);
        let none = select_retention(1000, &policy, &list);
        assert_eq!(none, RetentionDecision::default());
    }

    #[test]
    fn retention_by_bytes_deletes_the_oldest_until_under_the_limit() {
        let policy = RetentionPolicy {
            max_age_ms: None,
            max_bytes: Some(50),
        };
        let list = segments(&[0; 4], &[30, 20, 10, 20]);
        // Total 80: dropping 30 leaves 50, which fits.
        let decision = select_retention(0, &policy, &list);
        assert_eq!(decision.delete, ids(0..1));
        assert_eq!(decision.new_start_offset, Some(10));
        assert_eq!(decision.deleted_by_age, 0);
        assert_eq!(decision.reason(0), ReasonCode::RetentionSize);
        let tight = RetentionPolicy {
            max_bytes: Some(29),
            ..policy
        };
        let decision = select_retention(0, &tight, &list);
        assert_eq!(decision.delete, ids(0..3));
        assert_eq!(decision.new_start_offset, Some(30));
    }

    #[test]
    fn retention_deletes_only_a_prefix() {
        let policy = RetentionPolicy {
            max_age_ms: Some(100),
            max_bytes: None,
        };
        // Segment 1 is young: segments 2 and 3, though old, are not deleted past it.
        let list = segments(&[0, 950, 0, 0, 990], &[1; 5]);
        let decision = select_retention(1000, &policy, &list);
        assert_eq!(decision.delete, ids(0..1));
        assert_eq!(decision.new_start_offset, Some(10));
    }

    #[test]
    fn retention_never_deletes_the_newest_segment() {
        let list = segments(&[0, 0, 0], &[100, 100, 100]);
        let policy = RetentionPolicy {
            max_age_ms: Some(1),
            max_bytes: Some(1),
        };
        let decision = select_retention(1_000_000, &policy, &list);
        assert_eq!(decision.delete, ids(0..2));
        assert_eq!(decision.new_start_offset, Some(20));
        let single = &list[..1];
        assert_eq!(
            select_retention(1_000_000, &policy, single),
            RetentionDecision::default()
        );
        assert_eq!(
            select_retention(0, &policy, &[]),
            RetentionDecision::default()
        );
    }

    #[test]
    fn retention_with_both_rules_takes_the_longer_prefix() {
        let list = segments(&[0, 0, 900, 900], &[10, 10, 10, 10]);
        let policy = RetentionPolicy {
            max_age_ms: Some(500),
            max_bytes: Some(15),
        };
        let decision = select_retention(1000, &policy, &list);
        assert_eq!(decision.delete, ids(0..3));
        assert_eq!(decision.deleted_by_age, 2);
        assert_eq!(decision.reason(1), ReasonCode::RetentionAge);
        assert_eq!(decision.reason(2), ReasonCode::RetentionSize);
        assert_eq!(
            select_retention(1000, &RetentionPolicy::KEEP_ALL, &list),
            RetentionDecision::default()
        );
    }

    #[test]
    #[should_panic(expected = "not contiguous")]
    fn retention_of_a_stream_with_a_hole_is_a_bug() {
        let mut list = segments(&[0, 0, 0], &[1; 3]);
        list[1].next_offset += 1;
        list[1].base_offset += 1;
        let _ = select_retention(0, &RetentionPolicy::KEEP_ALL, &list);
    }

    proptest! {
        #[test]
        fn retention_keeps_a_suffix_and_respects_each_rule(
            ages in proptest::collection::vec(0u64..2000, 0..12),
            sizes in proptest::collection::vec(1u64..100, 12),
            max_age_ms in proptest::option::of(1u64..2000),
            max_bytes in proptest::option::of(1u64..600),
        ) {
            let now_ms = 2000;
            let sealed: Vec<u64> = ages.iter().map(|age| now_ms - age).collect();
            let list = segments(&sealed, &sizes[..ages.len()]);
            let policy = RetentionPolicy { max_age_ms, max_bytes };
            let decision = select_retention(now_ms, &policy, &list);
            let count = decision.delete.len();
            prop_assert!(list.is_empty() || count < list.len(), "the newest is kept");
            let expected_ids: Vec<_> = list[..count].iter().map(|s| s.segment_id).collect();
            prop_assert_eq!(&decision.delete, &expected_ids, "a prefix");
            prop_assert_eq!(
                decision.new_start_offset,
                (count > 0).then(|| list[count].base_offset)
            );
            let old = |segment: &RetainedSegment| {
                max_age_ms.is_some_and(|max| now_ms - segment.sealed_at_ms > max)
            };
            let too_big = |rest: &[RetainedSegment]| {
                let bytes: u64 = rest.iter().map(|segment| segment.object_bytes).sum();
                max_bytes.is_some_and(|max| bytes > max)
            };
            if list.len() - count > 1 {
                // Maximal: no rule asks to delete one more.
                prop_assert!(!list[..=count].iter().all(old), "age rule stopped early");
                prop_assert!(!too_big(&list[count..]), "size rule stopped early");
            }
            if count > 0 {
                // Minimal: some rule asked for the last deletion.
                prop_assert!(
                    list[..count].iter().all(old) || too_big(&list[count - 1..]),
                    "deleted more than a rule asked"
                );
            }
            for (index, segment) in list[..count].iter().enumerate() {
                let old = max_age_ms.is_some_and(|max| now_ms - segment.sealed_at_ms > max);
                if decision.reason(index) == ReasonCode::RetentionAge {
                    prop_assert!(old);
                }
            }
        }
    }
}
