//! Tier 0: the hot cache of local segment files, shared by every stream of a manager,
//! as a sans-IO state machine.
//!
//! Tier 0 holds active segments (always admitted, even over budget: a writer is never
//! refused for lack of cache) and recently used sealed ones, under one byte budget
//! (`cluster_max_bytes`). Sealed segments sit in an LRU by last access; readers pin
//! what they read. When space is needed, the least recently used sealed segment that
//! is unpinned and already durable elsewhere (a Tier 1 or Tier 2 copy exists and the
//! manifest record saying so is committed, see [`Tier0Cache::mark_durable_elsewhere`])
//! is scheduled for eviction. When nothing can be evicted, a hydration is refused with
//! `WouldBlock(Admission)` and may wait in the priority activation queue.
//!
//! The machine deletes nothing itself: it emits [`Tier0Action::Evict`], the driver
//! removes the file and confirms with [`Tier0Cache::handle_evicted`]. Log events are
//! data ([`Tier0Event`]) that the driver logs under [`LOG_TARGET_TIER0`] or
//! [`LOG_TARGET_TIERED`].
//!
//! Byte accounting: `total_bytes` counts every resident segment, including those whose
//! eviction is scheduled but not yet confirmed (their files still exist). Admission
//! decisions use the *claimed* bytes, `total_bytes - evicting_bytes`: an eviction, once
//! scheduled, is irrevocable, so its bytes are already promised back.
//!
//! **Invariants** (checked by [`Tier0Cache::check_invariants`])
//! - Only a sealed, unpinned segment that was marked durable elsewhere is ever
//!   scheduled for eviction, and a segment whose eviction is scheduled can be neither
//!   pinned nor touched until the driver confirms it gone.
//! - Active segments are never durable-marked and never evicted.
//! - `total_bytes`, `evicting_bytes`, `evictable_bytes` and `pinned_segments` equal the
//!   sums over the resident segments; the eviction index holds exactly the evictable
//!   segments, ordered by last access.
//! - At rest (between calls): the claimed bytes are within the budget, or nothing is
//!   evictable; and the head of the activation queue cannot be granted (its old copy
//!   is still being evicted, or it would not fit even after evicting everything
//!   evictable).
//! - A key is never both resident and queued, unless its resident copy is being
//!   evicted. The queue holds at most `ACTIVATION_QUEUE_MAX` entries.
//! - The activation-queue warning is armed exactly when the depth is below the
//!   threshold, so it fires once per crossing.
//! - `now_ms` never goes backwards.

use crate::backpressure::{BackpressureKind, WouldBlock};
use crate::limits::{
    ACTIVATION_QUEUE_MAX, ACTIVATION_QUEUE_WARN_THRESHOLD_DEFAULT, SEGMENT_BYTES_MAX,
    TIER0_CLUSTER_MAX_BYTES_DEFAULT, TIER0_CLUSTER_MAX_BYTES_MIN, TIER0_OUTPUTS_QUEUED_MAX,
    TIER0_SEGMENT_PINS_MAX,
};
use crate::names::SegmentKey;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

/// Log target of eviction and drop events.
pub const LOG_TARGET_TIER0: &str = "aof2::tier0";
/// Log target of admission events (shared with the tiered coordinator).
pub const LOG_TARGET_TIERED: &str = "aof2::tiered";

// ---- Configuration ----

/// Tier 0 knobs (`AofManagerConfig::store.tier0` in the runbook).
///
/// Deserialising validates; missing fields take their defaults; unknown fields are
/// rejected so a misspelt knob is an error, not a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Tier0CacheConfigFields")]
pub struct Tier0CacheConfig {
    /// Global hot cache budget in bytes. Size it so two full segments per writer plus
    /// 20-30% headroom fit; low values surface `WouldBlock(Admission)` frequently.
    pub cluster_max_bytes: u64,
    /// Activation queue depth at which a [`Tier0Event::ActivationQueueWarn`] is
    /// emitted (once per crossing). Tune to the number of readers that may hydrate at
    /// once.
    pub activation_queue_warn_threshold: u32,
}

/// The name used by the design brief; the runbook's name is [`Tier0CacheConfig`].
pub type Tier0Config = Tier0CacheConfig;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Tier0CacheConfigFields {
    cluster_max_bytes: u64,
    activation_queue_warn_threshold: u32,
}

impl Default for Tier0CacheConfigFields {
    fn default() -> Self {
        let config = Tier0CacheConfig::default();
        Tier0CacheConfigFields {
            cluster_max_bytes: config.cluster_max_bytes,
            activation_queue_warn_threshold: config.activation_queue_warn_threshold,
        }
    }
}

impl TryFrom<Tier0CacheConfigFields> for Tier0CacheConfig {
    type Error = Tier0ConfigError;

    fn try_from(fields: Tier0CacheConfigFields) -> Result<Self, Self::Error> {
        let config = Tier0CacheConfig {
            cluster_max_bytes: fields.cluster_max_bytes,
            activation_queue_warn_threshold: fields.activation_queue_warn_threshold,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for Tier0CacheConfig {
    fn default() -> Self {
        Tier0CacheConfig {
            cluster_max_bytes: TIER0_CLUSTER_MAX_BYTES_DEFAULT,
            activation_queue_warn_threshold: ACTIVATION_QUEUE_WARN_THRESHOLD_DEFAULT,
        }
    }
}

/// A bad Tier 0 configuration value; the message names the knob and its range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tier0ConfigError {
    #[error("tier0.cluster_max_bytes = {value}: must be at least {min} bytes (is the unit bytes?)")]
    ClusterMaxBytesTooSmall { value: u64, min: u64 },
    #[error("tier0.activation_queue_warn_threshold = 0: must be at least 1")]
    WarnThresholdZero,
    #[error(
        "tier0.activation_queue_warn_threshold = {value}: must be at most {limit} (the activation queue limit)"
    )]
    WarnThresholdTooLarge { value: u32, limit: u32 },
}

impl Tier0CacheConfig {
    /// Checks every knob against its limit.
    pub fn validate(&self) -> Result<(), Tier0ConfigError> {
        if self.cluster_max_bytes < TIER0_CLUSTER_MAX_BYTES_MIN {
            return Err(Tier0ConfigError::ClusterMaxBytesTooSmall {
                value: self.cluster_max_bytes,
                min: TIER0_CLUSTER_MAX_BYTES_MIN,
            });
        }
        if self.activation_queue_warn_threshold == 0 {
            return Err(Tier0ConfigError::WarnThresholdZero);
        }
        if self.activation_queue_warn_threshold > ACTIVATION_QUEUE_MAX {
            return Err(Tier0ConfigError::WarnThresholdTooLarge {
                value: self.activation_queue_warn_threshold,
                limit: ACTIVATION_QUEUE_MAX,
            });
        }
        Ok(())
    }
}

// ---- Inputs and outputs ----

/// How a segment enters Tier 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AdmitKind {
    /// A new active segment of a writer: always admitted, even over budget.
    Active,
    /// A sealed segment brought back from Tier 1 or Tier 2: admitted only if it fits
    /// (after scheduling evictions), else `WouldBlock(Admission)`. It is durable
    /// elsewhere by construction, and is admitted with one pin held for the hydrating
    /// reader.
    Hydrated,
    /// A sealed segment file found on local disk at recovery: always admitted (its
    /// bytes are already on disk). Not durable elsewhere until marked.
    Recovered,
}

impl AdmitKind {
    /// Lowercase name for logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AdmitKind::Active => "active",
            AdmitKind::Hydrated => "hydrated",
            AdmitKind::Recovered => "recovered",
        }
    }
}

/// Priority of a waiting hydration: higher values are granted first; equal
/// priorities are granted in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActivationPriority(pub u8);

/// A successful admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Whether the admission holds one pin for the caller (true for
    /// [`AdmitKind::Hydrated`]); the caller releases it with [`Tier0Cache::unpin`].
    pub pin_held: bool,
    /// `total_bytes` after the admission.
    pub total_bytes: u64,
}

/// Where a resident segment is in its Tier 0 life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SegmentPhase {
    /// Being written; never evicted.
    Active,
    /// Sealed (or hydrated, or recovered); in the LRU.
    Sealed,
    /// Eviction scheduled; the driver is removing the file.
    Evicting,
}

/// A read-only view of one resident segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentState {
    pub phase: SegmentPhase,
    pub bytes: u64,
    pub pins: u32,
    pub durable_elsewhere: bool,
    pub last_access_ms: u64,
}

/// A command for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier0Action {
    /// Remove the local segment file of `key` (the manifest's `LocalEvicted` record is
    /// the coordinator's business), then call [`Tier0Cache::handle_evicted`].
    Evict { key: SegmentKey, bytes: u64 },
    /// A queued hydration got its space: `bytes` are reserved, the segment is resident
    /// with one pin held for the waiting reader. Hydrate it, then unpin.
    Activated { key: SegmentKey, bytes: u64 },
}

/// Why a segment left Tier 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DropReason {
    /// Evicted by Tier 0 (durable elsewhere).
    Evicted,
    /// Removed by the driver for a reason outside Tier 0 (stream deleted, retention,
    /// failed hydration).
    Removed,
}

/// A structured log event. [`Tier0Event::name`] is the event name of the runbook and
/// [`Tier0Event::target`] the log target to emit it under, at INFO (WARN for
/// `ActivationQueueWarn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier0Event {
    /// `tiered_admit_segment`: a segment entered Tier 0.
    SegmentAdmitted {
        key: SegmentKey,
        bytes: u64,
        kind: AdmitKind,
        total_bytes: u64,
    },
    /// `tier0_eviction_scheduled`: a segment was chosen for eviction.
    EvictionScheduled {
        key: SegmentKey,
        bytes: u64,
        idle_ms: u64,
        total_bytes: u64,
    },
    /// `tier0_segment_dropped`: a segment left Tier 0.
    SegmentDropped {
        key: SegmentKey,
        bytes: u64,
        reason: DropReason,
        total_bytes: u64,
    },
    /// `tier0_activation_queue_warn`: the activation queue depth reached the threshold.
    ActivationQueueWarn { depth: u32, threshold: u32 },
}

impl Tier0Event {
    /// The structured event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Tier0Event::SegmentAdmitted { .. } => "tiered_admit_segment",
            Tier0Event::EvictionScheduled { .. } => "tier0_eviction_scheduled",
            Tier0Event::SegmentDropped { .. } => "tier0_segment_dropped",
            Tier0Event::ActivationQueueWarn { .. } => "tier0_activation_queue_warn",
        }
    }

    /// The log target.
    #[must_use]
    pub fn target(&self) -> &'static str {
        match self {
            Tier0Event::SegmentAdmitted { .. } => LOG_TARGET_TIERED,
            Tier0Event::EvictionScheduled { .. }
            | Tier0Event::SegmentDropped { .. }
            | Tier0Event::ActivationQueueWarn { .. } => LOG_TARGET_TIER0,
        }
    }

    /// Emits the event to `tracing` under its target and level, with the fields of
    /// the runbook's event table (docs/operations.md).
    pub fn log(&self) {
        match self {
            Tier0Event::SegmentAdmitted {
                key,
                bytes,
                kind,
                total_bytes,
            } => tracing::info!(
                target: LOG_TARGET_TIERED,
                key = %key, bytes, kind = kind.as_str(), total_bytes,
                "tiered_admit_segment"
            ),
            Tier0Event::EvictionScheduled {
                key,
                bytes,
                idle_ms,
                total_bytes,
            } => tracing::info!(
                target: LOG_TARGET_TIER0,
                key = %key, bytes, idle_ms, total_bytes,
                "tier0_eviction_scheduled"
            ),
            Tier0Event::SegmentDropped {
                key,
                bytes,
                reason,
                total_bytes,
            } => tracing::info!(
                target: LOG_TARGET_TIER0,
                key = %key, bytes, reason = ?reason, total_bytes,
                "tier0_segment_dropped"
            ),
            Tier0Event::ActivationQueueWarn { depth, threshold } => tracing::warn!(
                target: LOG_TARGET_TIER0,
                depth, threshold,
                "tier0_activation_queue_warn"
            ),
        }
    }
}

/// Errors of Tier 0 operations. `WouldBlock` is the normal retryable case; the others
/// are races a caller can lose legitimately (a reader finding its segment gone) or bad
/// sizes. Broken call contracts (admitting twice, unpinning below zero) panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tier0Error {
    #[error(transparent)]
    WouldBlock(#[from] WouldBlock),
    #[error("segment {key} is not resident in Tier 0")]
    NotResident { key: SegmentKey },
    #[error("segment {key} is being evicted from Tier 0")]
    EvictionScheduled { key: SegmentKey },
    #[error(
        "segment {key} is {bytes} bytes, larger than the whole Tier 0 budget \
         (cluster_max_bytes = {cluster_max_bytes})"
    )]
    LargerThanBudget {
        key: SegmentKey,
        bytes: u64,
        cluster_max_bytes: u64,
    },
    #[error("segment {key} already has {limit} readers pinning it")]
    TooManyPins { key: SegmentKey, limit: u32 },
    #[error("segment {key} is pinned by {pins} readers and cannot be evicted now")]
    Pinned { key: SegmentKey, pins: u32 },
    #[error("segment {key} has no durable copy in Tier 1 or Tier 2 yet and cannot be evicted")]
    NotDurableElsewhere { key: SegmentKey },
}

impl Tier0Error {
    /// The backpressure kind, if this is a `WouldBlock`.
    #[must_use]
    pub fn would_block(&self) -> Option<BackpressureKind> {
        match self {
            Tier0Error::WouldBlock(would_block) => Some(would_block.kind()),
            _ => None,
        }
    }
}

/// Tier 0 metrics, as in the runbook's monitoring checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tier0MetricsSnapshot {
    /// Bytes of all resident segments (including those being evicted).
    pub total_bytes: u64,
    /// The budget.
    pub cluster_max_bytes: u64,
    /// Hydrations waiting for space. Alert if >= 4 for more than 60 s.
    pub activation_queue_depth: u64,
    /// Evictions scheduled (`tier0_eviction_scheduled` events), since start.
    pub evictions: u64,
    /// Segments dropped (`tier0_segment_dropped` events), since start.
    pub drops: u64,
    /// Segments admitted (`tiered_admit_segment` events), since start.
    pub admitted: u64,
    /// Segments with at least one reader pin.
    pub pinned_segments: u64,
    /// Bytes whose eviction is scheduled but not yet confirmed.
    pub evicting_bytes: u64,
    /// Resident segments.
    pub resident_segments: u64,
}

// ---- The machine ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    phase: SegmentPhase,
    bytes: u64,
    pins: u32,
    durable_elsewhere: bool,
    last_access_ms: u64,
    /// Position in the LRU: unique, grows with every access.
    access_sequence: u64,
}

impl Entry {
    fn is_evictable(&self) -> bool {
        self.phase == SegmentPhase::Sealed && self.pins == 0 && self.durable_elsewhere
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    key: SegmentKey,
    bytes: u64,
}

/// Position in the activation queue: priority descending, then arrival.
type QueuePosition = (Reverse<ActivationPriority>, u64);

/// The Tier 0 cache state machine. One per manager, shared by all its streams.
///
/// Call order: feed inputs (`admit`, `handle_*`, `touch`, `pin`/`unpin`,
/// `mark_durable_elsewhere`, `enqueue_activation`, `cancel_activation`), then drain
/// [`Tier0Cache::poll_action`] and [`Tier0Cache::poll_event`] until both return
/// `None`, after every input. Tier 0 has no timers. `now_ms` must never go backwards.
///
/// A key handed out by an action may only be acted on after that action was polled.
#[derive(Debug, Clone)]
pub struct Tier0Cache {
    config: Tier0CacheConfig,
    now_ms: u64,
    entries: BTreeMap<SegmentKey, Entry>,
    /// Evictable segments (sealed, unpinned, durable elsewhere) by access sequence.
    evictable: BTreeMap<u64, SegmentKey>,
    queue: BTreeMap<QueuePosition, Waiting>,
    queued_keys: BTreeMap<SegmentKey, QueuePosition>,
    actions: VecDeque<Tier0Action>,
    events: VecDeque<Tier0Event>,
    next_access_sequence: u64,
    next_enqueue_sequence: u64,
    total_bytes: u64,
    evicting_bytes: u64,
    evictable_bytes: u64,
    pinned_segments: u64,
    evictions: u64,
    drops: u64,
    admitted: u64,
    queue_warning_armed: bool,
}

impl Tier0Cache {
    /// An empty cache. The config must be valid (deserialising validates it).
    #[must_use]
    pub fn new(config: Tier0CacheConfig) -> Self {
        assert!(
            config.validate().is_ok(),
            "Tier 0 config used without validation: {config:?}"
        );
        let cache = Tier0Cache {
            config,
            now_ms: 0,
            entries: BTreeMap::new(),
            evictable: BTreeMap::new(),
            queue: BTreeMap::new(),
            queued_keys: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_access_sequence: 0,
            next_enqueue_sequence: 0,
            total_bytes: 0,
            evicting_bytes: 0,
            evictable_bytes: 0,
            pinned_segments: 0,
            evictions: 0,
            drops: 0,
            admitted: 0,
            queue_warning_armed: true,
        };
        cache.check_invariants();
        cache
    }

    #[must_use]
    pub fn config(&self) -> &Tier0CacheConfig {
        &self.config
    }

    // ---- Inputs ----

    /// Admits `key` with `bytes`. Active and recovered segments are always admitted.
    /// A hydrated one is admitted if it fits once evictions are scheduled, and if no
    /// activation is queued ahead of it; otherwise `WouldBlock(Admission)` (then wait
    /// with [`Tier0Cache::enqueue_activation`]).
    ///
    /// Panics if `key` is queued, or resident other than being evicted (a caller bug).
    pub fn admit(
        &mut self,
        now_ms: u64,
        key: SegmentKey,
        bytes: u64,
        kind: AdmitKind,
    ) -> Result<Admitted, Tier0Error> {
        self.advance(now_ms);
        assert!(bytes <= SEGMENT_BYTES_MAX, "segment {key} of {bytes} bytes");
        assert!(
            !self.queued_keys.contains_key(&key),
            "segment {key} admitted while queued for activation"
        );
        let admitted = match kind {
            AdmitKind::Active | AdmitKind::Recovered => {
                self.assert_not_resident(&key);
                let phase = if kind == AdmitKind::Active {
                    SegmentPhase::Active
                } else {
                    SegmentPhase::Sealed
                };
                self.insert(key, bytes, phase, 0, false, kind);
                Admitted {
                    pin_held: false,
                    total_bytes: self.total_bytes,
                }
            }
            AdmitKind::Hydrated => {
                self.check_fits_budget(&key, bytes)?;
                if let Some(entry) = self.entries.get(&key) {
                    assert_eq!(
                        entry.phase,
                        SegmentPhase::Evicting,
                        "segment {key} hydrated while resident"
                    );
                    return Err(WouldBlock(BackpressureKind::Admission).into());
                }
                if !self.queue.is_empty() || !self.make_room(bytes) {
                    return Err(WouldBlock(BackpressureKind::Admission).into());
                }
                self.insert(key, bytes, SegmentPhase::Sealed, 1, true, kind);
                assert!(self.claimed_bytes() <= self.config.cluster_max_bytes);
                Admitted {
                    pin_held: true,
                    total_bytes: self.total_bytes,
                }
            }
        };
        self.pump();
        Ok(admitted)
    }

    /// The active segment `key` now holds `bytes` (it grew). May schedule evictions.
    pub fn handle_active_resized(&mut self, key: &SegmentKey, bytes: u64) {
        assert!(bytes <= SEGMENT_BYTES_MAX, "segment {key} of {bytes} bytes");
        self.update_entry(key, |entry| {
            assert_eq!(entry.phase, SegmentPhase::Active, "resized a sealed {key}");
            entry.bytes = bytes;
        });
        self.pump();
    }

    /// The active segment `key` was sealed with final size `bytes`; it joins the LRU as
    /// the most recently used.
    pub fn handle_sealed(&mut self, now_ms: u64, key: &SegmentKey, bytes: u64) {
        self.advance(now_ms);
        assert!(bytes <= SEGMENT_BYTES_MAX, "segment {key} of {bytes} bytes");
        let access_sequence = self.take_access_sequence();
        self.update_entry(key, |entry| {
            assert_eq!(entry.phase, SegmentPhase::Active, "sealed {key} twice");
            assert!(!entry.durable_elsewhere);
            entry.phase = SegmentPhase::Sealed;
            entry.bytes = bytes;
            entry.access_sequence = access_sequence;
            entry.last_access_ms = now_ms;
        });
        self.pump();
    }

    /// Tier 1 or Tier 2 now holds a copy of `key` and the manifest record saying so is
    /// committed: the Tier 0 copy may be evicted. Idempotent. A segment no longer
    /// resident is reported as `NotResident` (the caller may ignore it).
    ///
    /// Panics if `key` is active (an active segment has no other copy).
    pub fn mark_durable_elsewhere(&mut self, key: &SegmentKey) -> Result<(), Tier0Error> {
        let Some(entry) = self.entries.get(key) else {
            return Err(Tier0Error::NotResident { key: key.clone() });
        };
        assert_ne!(
            entry.phase,
            SegmentPhase::Active,
            "active segment {key} marked durable elsewhere"
        );
        if !entry.durable_elsewhere {
            self.update_entry(key, |entry| entry.durable_elsewhere = true);
            self.pump();
        }
        Ok(())
    }

    /// Records an access to `key`, moving it to the most recent end of the LRU.
    pub fn touch(&mut self, now_ms: u64, key: &SegmentKey) -> Result<(), Tier0Error> {
        self.advance(now_ms);
        self.check_accessible(key)?;
        self.access(key);
        Ok(())
    }

    /// Pins `key` for a reader (and records the access). A pinned segment is never
    /// evicted. Fails if `key` is not resident or already being evicted: the reader
    /// must treat it as cold.
    pub fn pin(&mut self, now_ms: u64, key: &SegmentKey) -> Result<(), Tier0Error> {
        self.advance(now_ms);
        let pins = self.check_accessible(key)?.pins;
        if pins >= TIER0_SEGMENT_PINS_MAX {
            return Err(Tier0Error::TooManyPins {
                key: key.clone(),
                limit: TIER0_SEGMENT_PINS_MAX,
            });
        }
        self.update_entry(key, |entry| entry.pins += 1);
        self.access(key);
        Ok(())
    }

    /// Releases one pin of `key`. Panics if `key` has no pin (a caller bug).
    pub fn unpin(&mut self, key: &SegmentKey) {
        self.update_entry(key, |entry| {
            assert!(entry.pins > 0, "unpin of {key} without a pin");
            assert_ne!(entry.phase, SegmentPhase::Evicting);
            entry.pins -= 1;
        });
        self.pump();
    }

    /// Queues a hydration of `key` (`bytes`) waiting for space. It is granted, as a
    /// [`Tier0Action::Activated`], in priority then arrival order as space frees
    /// (possibly at once). `WouldBlock(Admission)` when the queue is full.
    ///
    /// Panics if `key` is already queued, or resident other than being evicted.
    pub fn enqueue_activation(
        &mut self,
        now_ms: u64,
        priority: ActivationPriority,
        key: SegmentKey,
        bytes: u64,
    ) -> Result<(), Tier0Error> {
        self.advance(now_ms);
        assert!(bytes <= SEGMENT_BYTES_MAX, "segment {key} of {bytes} bytes");
        assert!(
            !self.queued_keys.contains_key(&key),
            "segment {key} queued twice"
        );
        if let Some(entry) = self.entries.get(&key) {
            assert_eq!(
                entry.phase,
                SegmentPhase::Evicting,
                "segment {key} queued while resident"
            );
        }
        self.check_fits_budget(&key, bytes)?;
        if self.queue.len() >= ACTIVATION_QUEUE_MAX as usize {
            return Err(WouldBlock(BackpressureKind::Admission).into());
        }
        let position = (Reverse(priority), self.next_enqueue_sequence);
        self.next_enqueue_sequence += 1;
        self.queued_keys.insert(key.clone(), position);
        let previous = self.queue.insert(position, Waiting { key, bytes });
        assert!(previous.is_none(), "queue positions are unique");
        self.pump();
        Ok(())
    }

    /// Withdraws a queued hydration (its reader gave up). Returns whether it was
    /// queued; a granted one is resident instead (unpin and remove it).
    pub fn cancel_activation(&mut self, key: &SegmentKey) -> bool {
        let Some(position) = self.queued_keys.remove(key) else {
            return false;
        };
        let waiting = self.queue.remove(&position).expect("queue and index agree");
        assert_eq!(&waiting.key, key);
        self.pump();
        true
    }

    /// The driver removed the file of `key` after a [`Tier0Action::Evict`].
    pub fn handle_evicted(&mut self, key: &SegmentKey) {
        let entry = self.entries.get(key).copied();
        let entry = entry.unwrap_or_else(|| panic!("eviction of unknown segment {key}"));
        assert_eq!(entry.phase, SegmentPhase::Evicting, "{key} evicted unasked");
        assert!(
            entry.durable_elsewhere,
            "evicted {key} must be durable elsewhere"
        );
        assert_eq!(entry.pins, 0, "evicted {key} must be unpinned");
        self.remove(key, DropReason::Evicted);
        self.pump();
    }

    /// The driver removed `key` for a reason outside Tier 0 (stream deleted, retention,
    /// failed hydration). Panics if it is pinned or being evicted.
    pub fn handle_removed(&mut self, key: &SegmentKey) {
        let entry = self.entries.get(key).copied();
        let entry = entry.unwrap_or_else(|| panic!("removal of unknown segment {key}"));
        assert_eq!(entry.pins, 0, "removal of pinned segment {key}");
        assert_ne!(
            entry.phase,
            SegmentPhase::Evicting,
            "removal of {key} while its eviction is pending"
        );
        self.remove(key, DropReason::Removed);
        self.pump();
    }

    /// Schedules the eviction of `key` now, whatever the budget: retention is deleting
    /// the segment from every tier. The usual rules hold: only a sealed, unpinned
    /// segment already durable elsewhere is evicted, through the same
    /// [`Tier0Action::Evict`] and [`Tier0Cache::handle_evicted`] as a budget eviction
    /// (and counted in `evictions`).
    ///
    /// `Ok(true)`: the eviction was scheduled. `Ok(false)`: nothing to do, `key` is not
    /// resident or its eviction is already scheduled. `Pinned` or
    /// `NotDurableElsewhere`: the caller retries later. Panics if `key` is active (the
    /// active segment is never deleted).
    pub fn evict_now(&mut self, now_ms: u64, key: &SegmentKey) -> Result<bool, Tier0Error> {
        self.advance(now_ms);
        let Some(entry) = self.entries.get(key).copied() else {
            return Ok(false);
        };
        match entry.phase {
            SegmentPhase::Active => panic!("evict_now of active segment {key}"),
            SegmentPhase::Evicting => return Ok(false),
            SegmentPhase::Sealed => {}
        }
        if entry.pins > 0 {
            return Err(Tier0Error::Pinned {
                key: key.clone(),
                pins: entry.pins,
            });
        }
        if !entry.durable_elsewhere {
            return Err(Tier0Error::NotDurableElsewhere { key: key.clone() });
        }
        assert!(entry.is_evictable(), "{key}: sealed, unpinned and durable");
        self.schedule_eviction(key.clone());
        self.pump();
        Ok(true)
    }

    // ---- Outputs ----

    /// The next command for the driver.
    pub fn poll_action(&mut self) -> Option<Tier0Action> {
        self.actions.pop_front()
    }

    /// The next log event.
    pub fn poll_event(&mut self) -> Option<Tier0Event> {
        self.events.pop_front()
    }

    // ---- Queries ----

    /// The state of a resident segment.
    #[must_use]
    pub fn segment(&self, key: &SegmentKey) -> Option<SegmentState> {
        self.entries.get(key).map(|entry| SegmentState {
            phase: entry.phase,
            bytes: entry.bytes,
            pins: entry.pins,
            durable_elsewhere: entry.durable_elsewhere,
            last_access_ms: entry.last_access_ms,
        })
    }

    /// Whether `key` waits in the activation queue.
    #[must_use]
    pub fn is_queued(&self, key: &SegmentKey) -> bool {
        self.queued_keys.contains_key(key)
    }

    /// Evictable segments, least recently used first: the order evictions take.
    pub fn eviction_order(&self) -> impl Iterator<Item = &SegmentKey> {
        self.evictable.values()
    }

    /// The metrics snapshot.
    #[must_use]
    pub fn metrics(&self) -> Tier0MetricsSnapshot {
        Tier0MetricsSnapshot {
            total_bytes: self.total_bytes,
            cluster_max_bytes: self.config.cluster_max_bytes,
            activation_queue_depth: self.queue.len() as u64,
            evictions: self.evictions,
            drops: self.drops,
            admitted: self.admitted,
            pinned_segments: self.pinned_segments,
            evicting_bytes: self.evicting_bytes,
            resident_segments: self.entries.len() as u64,
        }
    }

    /// Checks every invariant in the module doc; panics on the first broken one. Cost
    /// is linear in resident and queued segments.
    pub fn check_invariants(&self) {
        assert!(self.config.validate().is_ok());
        let mut total_bytes = 0u64;
        let mut evicting_bytes = 0u64;
        let mut evictable_bytes = 0u64;
        let mut evictable_count = 0usize;
        let mut pinned_segments = 0u64;
        let mut access_sequences = BTreeSet::new();
        for (key, entry) in &self.entries {
            assert!(entry.bytes <= SEGMENT_BYTES_MAX, "{key}: bytes");
            assert!(entry.pins <= TIER0_SEGMENT_PINS_MAX, "{key}: pins");
            assert!(entry.last_access_ms <= self.now_ms, "{key}: access time");
            assert!(
                entry.access_sequence < self.next_access_sequence,
                "{key}: access sequence"
            );
            assert!(
                access_sequences.insert(entry.access_sequence),
                "{key}: access sequence not unique"
            );
            match entry.phase {
                SegmentPhase::Active => {
                    assert!(!entry.durable_elsewhere, "{key}: active and durable");
                }
                SegmentPhase::Sealed => {}
                SegmentPhase::Evicting => {
                    assert!(entry.durable_elsewhere, "{key}: evicting, not durable");
                    assert_eq!(entry.pins, 0, "{key}: evicting while pinned");
                    evicting_bytes += entry.bytes;
                }
            }
            if entry.is_evictable() {
                assert_eq!(
                    self.evictable.get(&entry.access_sequence),
                    Some(key),
                    "{key}: missing from the eviction index"
                );
                evictable_bytes += entry.bytes;
                evictable_count += 1;
            }
            if entry.pins > 0 {
                pinned_segments += 1;
            }
            if self.queued_keys.contains_key(key) {
                assert_eq!(
                    entry.phase,
                    SegmentPhase::Evicting,
                    "{key}: queued while resident"
                );
            }
            total_bytes += entry.bytes;
        }
        assert_eq!(
            self.evictable.len(),
            evictable_count,
            "stale eviction index"
        );
        assert_eq!(self.total_bytes, total_bytes, "total_bytes");
        assert_eq!(self.evicting_bytes, evicting_bytes, "evicting_bytes");
        assert_eq!(self.evictable_bytes, evictable_bytes, "evictable_bytes");
        assert_eq!(self.pinned_segments, pinned_segments, "pinned_segments");

        assert!(self.queue.len() <= ACTIVATION_QUEUE_MAX as usize);
        assert_eq!(self.queue.len(), self.queued_keys.len());
        for (position, waiting) in &self.queue {
            assert_eq!(self.queued_keys.get(&waiting.key), Some(position));
            assert!(position.1 < self.next_enqueue_sequence);
            assert!(waiting.bytes <= self.config.cluster_max_bytes);
        }
        let depth = u32::try_from(self.queue.len()).expect("queue length is bounded");
        assert_eq!(
            self.queue_warning_armed,
            depth < self.config.activation_queue_warn_threshold,
            "warning armed exactly below the threshold"
        );

        // At rest: no pressure left that an eviction could relieve.
        let claimed_bytes = self.claimed_bytes();
        let max = self.config.cluster_max_bytes;
        assert!(
            claimed_bytes <= max || self.evictable.is_empty(),
            "over budget while something is evictable"
        );
        if let Some(head) = self.queue.values().next() {
            let old_copy_evicting = self.entries.contains_key(&head.key);
            assert!(
                old_copy_evicting || claimed_bytes - self.evictable_bytes + head.bytes > max,
                "queue head {} could have been granted",
                head.key
            );
        }

        assert!(self.actions.len() + self.events.len() <= TIER0_OUTPUTS_QUEUED_MAX as usize);
        for action in &self.actions {
            match action {
                Tier0Action::Evict { key, bytes } => {
                    let entry = self.entries.get(key).expect("pending eviction is resident");
                    assert_eq!(entry.phase, SegmentPhase::Evicting);
                    assert_eq!(entry.bytes, *bytes);
                }
                Tier0Action::Activated { key, .. } => {
                    assert!(self.entries.contains_key(key), "pending activation");
                }
            }
        }
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

    fn claimed_bytes(&self) -> u64 {
        assert!(self.evicting_bytes <= self.total_bytes);
        self.total_bytes - self.evicting_bytes
    }

    fn take_access_sequence(&mut self) -> u64 {
        let sequence = self.next_access_sequence;
        self.next_access_sequence += 1;
        sequence
    }

    fn assert_not_resident(&self, key: &SegmentKey) {
        assert!(
            !self.entries.contains_key(key),
            "segment {key} admitted twice"
        );
    }

    fn check_fits_budget(&self, key: &SegmentKey, bytes: u64) -> Result<(), Tier0Error> {
        if bytes > self.config.cluster_max_bytes {
            return Err(Tier0Error::LargerThanBudget {
                key: key.clone(),
                bytes,
                cluster_max_bytes: self.config.cluster_max_bytes,
            });
        }
        Ok(())
    }

    fn check_accessible(&self, key: &SegmentKey) -> Result<Entry, Tier0Error> {
        match self.entries.get(key) {
            None => Err(Tier0Error::NotResident { key: key.clone() }),
            Some(entry) if entry.phase == SegmentPhase::Evicting => {
                Err(Tier0Error::EvictionScheduled { key: key.clone() })
            }
            Some(entry) => Ok(*entry),
        }
    }

    fn access(&mut self, key: &SegmentKey) {
        let access_sequence = self.take_access_sequence();
        let now_ms = self.now_ms;
        self.update_entry(key, |entry| {
            assert_ne!(entry.phase, SegmentPhase::Evicting);
            entry.access_sequence = access_sequence;
            entry.last_access_ms = now_ms;
        });
    }

    fn push_action(&mut self, action: Tier0Action) {
        assert!(
            self.actions.len() + self.events.len() < TIER0_OUTPUTS_QUEUED_MAX as usize,
            "Tier 0 outputs not drained"
        );
        self.actions.push_back(action);
    }

    fn push_event(&mut self, event: Tier0Event) {
        assert!(
            self.actions.len() + self.events.len() < TIER0_OUTPUTS_QUEUED_MAX as usize,
            "Tier 0 outputs not drained"
        );
        self.events.push_back(event);
    }

    /// Adds `entry`'s share to the derived counters and indexes.
    fn account(&mut self, key: &SegmentKey, entry: &Entry) {
        self.total_bytes = self
            .total_bytes
            .checked_add(entry.bytes)
            .expect("bytes of resident segments fit u64");
        if entry.phase == SegmentPhase::Evicting {
            self.evicting_bytes += entry.bytes;
        }
        if entry.pins > 0 {
            self.pinned_segments += 1;
        }
        if entry.is_evictable() {
            let previous = self.evictable.insert(entry.access_sequence, key.clone());
            assert!(previous.is_none(), "access sequences are unique");
            self.evictable_bytes += entry.bytes;
        }
    }

    /// Removes `entry`'s share from the derived counters and indexes.
    fn unaccount(&mut self, key: &SegmentKey, entry: &Entry) {
        self.total_bytes -= entry.bytes;
        if entry.phase == SegmentPhase::Evicting {
            self.evicting_bytes -= entry.bytes;
        }
        if entry.pins > 0 {
            self.pinned_segments -= 1;
        }
        if entry.is_evictable() {
            let removed = self.evictable.remove(&entry.access_sequence);
            assert_eq!(removed.as_ref(), Some(key), "eviction index out of date");
            self.evictable_bytes -= entry.bytes;
        }
    }

    /// Changes the entry of `key` through `change`, keeping counters and indexes
    /// in step. Panics if `key` is not resident.
    fn update_entry<R>(&mut self, key: &SegmentKey, change: impl FnOnce(&mut Entry) -> R) -> R {
        let mut entry = *self
            .entries
            .get(key)
            .unwrap_or_else(|| panic!("segment {key} is not resident"));
        self.unaccount(key, &entry);
        let result = change(&mut entry);
        self.account(key, &entry);
        *self.entries.get_mut(key).expect("looked up above") = entry;
        result
    }

    fn insert(
        &mut self,
        key: SegmentKey,
        bytes: u64,
        phase: SegmentPhase,
        pins: u32,
        durable_elsewhere: bool,
        kind: AdmitKind,
    ) {
        assert!(!self.entries.contains_key(&key));
        assert!(!self.queued_keys.contains_key(&key));
        let entry = Entry {
            phase,
            bytes,
            pins,
            durable_elsewhere,
            last_access_ms: self.now_ms,
            access_sequence: self.take_access_sequence(),
        };
        self.account(&key, &entry);
        self.entries.insert(key.clone(), entry);
        self.admitted += 1;
        let total_bytes = self.total_bytes;
        self.push_event(Tier0Event::SegmentAdmitted {
            key,
            bytes,
            kind,
            total_bytes,
        });
    }

    fn remove(&mut self, key: &SegmentKey, reason: DropReason) {
        let entry = self.entries.remove(key).expect("callers checked residency");
        self.unaccount(key, &entry);
        self.drops += 1;
        let total_bytes = self.total_bytes;
        self.push_event(Tier0Event::SegmentDropped {
            key: key.clone(),
            bytes: entry.bytes,
            reason,
            total_bytes,
        });
    }

    /// Schedules the eviction of the least recently used evictable segment. Returns
    /// false when nothing is evictable.
    fn evict_least_recently_used(&mut self) -> bool {
        let Some((_, key)) = self.evictable.first_key_value() else {
            return false;
        };
        let key = key.clone();
        self.schedule_eviction(key);
        true
    }

    /// Schedules the eviction of the evictable segment `key`.
    fn schedule_eviction(&mut self, key: SegmentKey) {
        let now_ms = self.now_ms;
        let (bytes, last_access_ms) = self.update_entry(&key, |entry| {
            assert_eq!(entry.phase, SegmentPhase::Sealed, "only sealed are evicted");
            assert_eq!(entry.pins, 0, "pinned segments are never evicted");
            assert!(entry.durable_elsewhere, "only durable copies are evicted");
            entry.phase = SegmentPhase::Evicting;
            (entry.bytes, entry.last_access_ms)
        });
        self.evictions += 1;
        let total_bytes = self.total_bytes;
        self.push_event(Tier0Event::EvictionScheduled {
            key: key.clone(),
            bytes,
            idle_ms: now_ms - last_access_ms,
            total_bytes,
        });
        self.push_action(Tier0Action::Evict { key, bytes });
    }

    /// Makes the claimed bytes plus `bytes` fit the budget by scheduling evictions in
    /// LRU order, only if that suffices; returns whether it fits.
    fn make_room(&mut self, bytes: u64) -> bool {
        let max = self.config.cluster_max_bytes;
        if self.claimed_bytes() + bytes <= max {
            return true;
        }
        if self.claimed_bytes() - self.evictable_bytes + bytes > max {
            return false;
        }
        while self.claimed_bytes() + bytes > max {
            let evicted = self.evict_least_recently_used();
            assert!(evicted, "enough was evictable");
        }
        true
    }

    /// Brings the machine to rest: grants queued activations that fit, sheds bytes
    /// over budget, and updates the queue warning.
    fn pump(&mut self) {
        // Each round grants one activation, so the queue limit bounds the loop.
        for _ in 0..=ACTIVATION_QUEUE_MAX {
            let Some((&position, head)) = self.queue.first_key_value() else {
                break;
            };
            let (key, bytes) = (head.key.clone(), head.bytes);
            if !self.make_room(bytes) || self.entries.contains_key(&key) {
                // Blocked: not enough evictable, or its old copy is still being evicted
                // (the room is already reserved by the evictions just scheduled).
                break;
            }
            self.queue.remove(&position);
            let removed = self.queued_keys.remove(&key);
            assert_eq!(removed, Some(position));
            self.insert(
                key.clone(),
                bytes,
                SegmentPhase::Sealed,
                1,
                true,
                AdmitKind::Hydrated,
            );
            self.push_action(Tier0Action::Activated { key, bytes });
        }
        // Shed what active growth or recovery pushed over budget.
        while self.claimed_bytes() > self.config.cluster_max_bytes {
            if !self.evict_least_recently_used() {
                break;
            }
        }
        let depth = u32::try_from(self.queue.len()).expect("queue length is bounded");
        if depth >= self.config.activation_queue_warn_threshold {
            if self.queue_warning_armed {
                self.queue_warning_armed = false;
                self.push_event(Tier0Event::ActivationQueueWarn {
                    depth,
                    threshold: self.config.activation_queue_warn_threshold,
                });
            }
        } else {
            self.queue_warning_armed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentId;
    use crate::names::StreamName;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    fn key(stream: &str, id: u64) -> SegmentKey {
        SegmentKey::new(StreamName::new(stream).unwrap(), SegmentId(id))
    }

    fn cache(cluster_max_bytes: u64, warn: u32) -> Tier0Cache {
        Tier0Cache::new(Tier0CacheConfig {
            cluster_max_bytes,
            activation_queue_warn_threshold: warn,
        })
    }

    fn drain_actions(cache: &mut Tier0Cache) -> Vec<Tier0Action> {
        std::iter::from_fn(|| cache.poll_action()).collect()
    }

    fn drain_events(cache: &mut Tier0Cache) -> Vec<Tier0Event> {
        std::iter::from_fn(|| cache.poll_event()).collect()
    }

    fn evicted_keys(actions: &[Tier0Action]) -> Vec<SegmentKey> {
        actions
            .iter()
            .filter_map(|action| match action {
                Tier0Action::Evict { key, .. } => Some(key.clone()),
                Tier0Action::Activated { .. } => None,
            })
            .collect()
    }

    fn activated_keys(actions: &[Tier0Action]) -> Vec<SegmentKey> {
        actions
            .iter()
            .filter_map(|action| match action {
                Tier0Action::Activated { key, .. } => Some(key.clone()),
                Tier0Action::Evict { .. } => None,
            })
            .collect()
    }

    /// A sealed, durable-elsewhere, unpinned segment: admitted active, then sealed.
    fn add_sealed(cache: &mut Tier0Cache, now_ms: u64, key: &SegmentKey, bytes: u64) {
        cache
            .admit(now_ms, key.clone(), bytes, AdmitKind::Active)
            .unwrap();
        cache.handle_sealed(now_ms, key, bytes);
        cache.mark_durable_elsewhere(key).unwrap();
        cache.check_invariants();
    }

    fn is_admission_block(result: Result<Admitted, Tier0Error>) -> bool {
        matches!(result, Err(ref error) if error.would_block() == Some(BackpressureKind::Admission))
    }

    #[test]
    fn config_defaults_and_toml() {
        let config = Tier0CacheConfig::default();
        assert_eq!(config.cluster_max_bytes, TIER0_CLUSTER_MAX_BYTES_DEFAULT);
        assert_eq!(config.activation_queue_warn_threshold, 4);
        config.validate().unwrap();
        let parsed: Tier0CacheConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, config);
        let parsed: Tier0Config = toml::from_str("cluster_max_bytes = 8388608").unwrap();
        assert_eq!(parsed.cluster_max_bytes, 8 * MIB);
        assert_eq!(parsed.activation_queue_warn_threshold, 4);
        let text = toml::to_string(&parsed).unwrap();
        assert_eq!(toml::from_str::<Tier0CacheConfig>(&text).unwrap(), parsed);
    }

    #[test]
    fn bad_config_errors() {
        let small = Tier0CacheConfig {
            cluster_max_bytes: 512,
            ..Tier0CacheConfig::default()
        };
        assert_eq!(
            small.validate().unwrap_err().to_string(),
            "tier0.cluster_max_bytes = 512: must be at least 1048576 bytes (is the unit bytes?)"
        );
        let zero = Tier0CacheConfig {
            activation_queue_warn_threshold: 0,
            ..Tier0CacheConfig::default()
        };
        assert_eq!(zero.validate(), Err(Tier0ConfigError::WarnThresholdZero));
        let huge = Tier0CacheConfig {
            activation_queue_warn_threshold: ACTIVATION_QUEUE_MAX + 1,
            ..Tier0CacheConfig::default()
        };
        assert!(matches!(
            huge.validate(),
            Err(Tier0ConfigError::WarnThresholdTooLarge { .. })
        ));
        let error = toml::from_str::<Tier0CacheConfig>("cluster_max_bytes = 10").unwrap_err();
        assert!(
            error.to_string().contains("tier0.cluster_max_bytes = 10"),
            "{error}"
        );
        let error = toml::from_str::<Tier0CacheConfig>("cluster_max_byte = 10").unwrap_err();
        assert!(error.to_string().contains("cluster_max_byte"), "{error}");
    }

    #[test]
    #[should_panic(expected = "without validation")]
    fn invalid_config_use_is_a_bug() {
        let _ = cache(1, 1);
    }

    #[test]
    fn active_is_admitted_over_budget() {
        let mut cache = cache(MIB, 4);
        let first = cache.admit(0, key("a", 0), MIB, AdmitKind::Active).unwrap();
        assert!(!first.pin_held);
        let second = cache.admit(1, key("b", 0), MIB, AdmitKind::Active).unwrap();
        assert_eq!(second.total_bytes, 2 * MIB);
        cache.handle_active_resized(&key("b", 0), 3 * MIB);
        cache.check_invariants();
        let metrics = cache.metrics();
        assert_eq!(metrics.total_bytes, 4 * MIB);
        assert_eq!(metrics.admitted, 2);
        assert!(
            drain_actions(&mut cache).is_empty(),
            "active is never evicted"
        );
    }

    #[test]
    fn hydrated_admission_blocks_when_only_active_pinned_or_not_durable_remain() {
        let mut cache = cache(4 * MIB, 4);
        cache.admit(0, key("s", 0), MIB, AdmitKind::Active).unwrap();
        add_sealed(&mut cache, 1, &key("s", 1), MIB);
        cache.pin(2, &key("s", 1)).unwrap();
        cache.admit(3, key("s", 2), MIB, AdmitKind::Active).unwrap();
        cache.handle_sealed(3, &key("s", 2), MIB);
        cache
            .admit(4, key("s", 3), MIB, AdmitKind::Recovered)
            .unwrap();
        cache.check_invariants();
        // Full: one active, one pinned, two not durable elsewhere.
        assert!(is_admission_block(cache.admit(
            5,
            key("s", 9),
            MIB,
            AdmitKind::Hydrated
        )));
        assert!(cache.segment(&key("s", 9)).is_none());
        assert!(drain_actions(&mut cache).is_empty());
        cache.check_invariants();
        // Once one becomes durable elsewhere, the same admission evicts it and fits.
        cache.mark_durable_elsewhere(&key("s", 2)).unwrap();
        let admitted = cache
            .admit(6, key("s", 9), MIB, AdmitKind::Hydrated)
            .unwrap();
        assert!(admitted.pin_held);
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 2)]);
        cache.check_invariants();
    }

    #[test]
    fn evict_now_follows_the_eviction_rules_whatever_the_budget() {
        let mut cache = cache(64 * MIB, 4);
        cache.admit(0, key("s", 0), MIB, AdmitKind::Active).unwrap();
        add_sealed(&mut cache, 1, &key("s", 1), MIB);
        cache.admit(2, key("s", 2), MIB, AdmitKind::Active).unwrap();
        cache.handle_sealed(2, &key("s", 2), MIB);
        add_sealed(&mut cache, 3, &key("s", 3), MIB);
        cache.pin(4, &key("s", 3)).unwrap();
        drain_actions(&mut cache);
        // Far under budget, yet the durable, unpinned segment goes at once.
        assert_eq!(cache.evict_now(5, &key("s", 1)), Ok(true));
        cache.check_invariants();
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 1)]);
        // Asking again while the eviction runs, or for what is not resident: nothing.
        assert_eq!(cache.evict_now(5, &key("s", 1)), Ok(false));
        assert_eq!(cache.evict_now(5, &key("s", 9)), Ok(false));
        assert!(drain_actions(&mut cache).is_empty());
        // Not durable elsewhere, or pinned: refused, the caller retries later.
        assert_eq!(
            cache.evict_now(6, &key("s", 2)),
            Err(Tier0Error::NotDurableElsewhere { key: key("s", 2) })
        );
        assert_eq!(
            cache.evict_now(6, &key("s", 3)),
            Err(Tier0Error::Pinned {
                key: key("s", 3),
                pins: 1
            })
        );
        assert!(drain_actions(&mut cache).is_empty());
        cache.check_invariants();
        cache.handle_evicted(&key("s", 1));
        cache.unpin(&key("s", 3));
        assert_eq!(cache.evict_now(7, &key("s", 3)), Ok(true));
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 3)]);
        cache.handle_evicted(&key("s", 3));
        cache.check_invariants();
        assert_eq!(cache.metrics().evictions, 2);
        assert_eq!(cache.metrics().resident_segments, 2);
    }

    #[test]
    #[should_panic(expected = "evict_now of active segment")]
    fn evict_now_of_the_active_segment_is_a_bug() {
        let mut cache = cache(64 * MIB, 4);
        cache.admit(0, key("s", 0), MIB, AdmitKind::Active).unwrap();
        let _ = cache.evict_now(1, &key("s", 0));
    }

    #[test]
    fn eviction_follows_lru_order() {
        let mut cache = cache(3 * MIB, 4);
        for id in 0..3 {
            add_sealed(&mut cache, id, &key("s", id), MIB);
        }
        cache.touch(10, &key("s", 0)).unwrap();
        let order: Vec<_> = cache.eviction_order().cloned().collect();
        assert_eq!(order, [key("s", 1), key("s", 2), key("s", 0)]);
        cache
            .admit(11, key("s", 7), 2 * MIB, AdmitKind::Hydrated)
            .unwrap();
        cache.check_invariants();
        assert_eq!(
            evicted_keys(&drain_actions(&mut cache)),
            [key("s", 1), key("s", 2)]
        );
        assert_eq!(cache.metrics().evicting_bytes, 2 * MIB);
        assert_eq!(cache.metrics().total_bytes, 5 * MIB, "files not gone yet");
        cache.handle_evicted(&key("s", 1));
        cache.handle_evicted(&key("s", 2));
        cache.check_invariants();
        assert_eq!(cache.metrics().total_bytes, 3 * MIB);
        assert_eq!(cache.metrics().drops, 2);
    }

    #[test]
    fn pin_prevents_eviction() {
        let mut cache = cache(2 * MIB, 4);
        add_sealed(&mut cache, 0, &key("s", 0), MIB);
        add_sealed(&mut cache, 1, &key("s", 1), MIB);
        cache.pin(2, &key("s", 0)).unwrap();
        cache.pin(2, &key("s", 1)).unwrap();
        assert_eq!(cache.metrics().pinned_segments, 2);
        assert!(is_admission_block(cache.admit(
            3,
            key("s", 5),
            MIB,
            AdmitKind::Hydrated
        )));
        assert!(drain_actions(&mut cache).is_empty());
        cache.unpin(&key("s", 1));
        cache
            .admit(4, key("s", 5), MIB, AdmitKind::Hydrated)
            .unwrap();
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 1)]);
        // An evicting segment can no longer be pinned or touched.
        assert_eq!(
            cache.pin(5, &key("s", 1)),
            Err(Tier0Error::EvictionScheduled { key: key("s", 1) })
        );
        assert_eq!(
            cache.touch(5, &key("s", 1)),
            Err(Tier0Error::EvictionScheduled { key: key("s", 1) })
        );
        assert_eq!(
            cache.pin(5, &key("s", 42)),
            Err(Tier0Error::NotResident { key: key("s", 42) })
        );
        cache.check_invariants();
    }

    #[test]
    fn durable_elsewhere_is_required() {
        let mut cache = cache(2 * MIB, 4);
        for id in 0..2 {
            cache
                .admit(id, key("s", id), MIB, AdmitKind::Active)
                .unwrap();
            cache.handle_sealed(id, &key("s", id), MIB);
        }
        assert_eq!(cache.eviction_order().count(), 0);
        assert!(is_admission_block(cache.admit(
            5,
            key("s", 5),
            MIB,
            AdmitKind::Hydrated
        )));
        assert!(drain_actions(&mut cache).is_empty());
        assert_eq!(
            cache.mark_durable_elsewhere(&key("s", 9)),
            Err(Tier0Error::NotResident { key: key("s", 9) })
        );
        cache.mark_durable_elsewhere(&key("s", 1)).unwrap();
        cache.mark_durable_elsewhere(&key("s", 1)).unwrap();
        cache
            .admit(6, key("s", 5), MIB, AdmitKind::Hydrated)
            .unwrap();
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 1)]);
        cache.check_invariants();
    }

    #[test]
    #[should_panic(expected = "active segment")]
    fn active_marked_durable_is_a_bug() {
        let mut cache = cache(MIB, 4);
        cache.admit(0, key("s", 0), 10, AdmitKind::Active).unwrap();
        let _ = cache.mark_durable_elsewhere(&key("s", 0));
    }

    #[test]
    fn over_budget_growth_sheds_lru() {
        let mut cache = cache(2 * MIB, 4);
        add_sealed(&mut cache, 0, &key("s", 0), MIB);
        cache.admit(1, key("s", 1), 0, AdmitKind::Active).unwrap();
        assert!(drain_actions(&mut cache).is_empty());
        cache.handle_active_resized(&key("s", 1), MIB + 1);
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 0)]);
        cache.check_invariants();
        // Still over budget with nothing evictable: nothing else happens.
        cache.handle_active_resized(&key("s", 1), 3 * MIB);
        assert!(drain_actions(&mut cache).is_empty());
        cache.check_invariants();
    }

    #[test]
    fn activation_priority_then_fifo() {
        let mut cache = cache(4 * MIB, 100);
        for id in 0..4 {
            add_sealed(&mut cache, id, &key("s", id), MIB);
            cache.pin(id, &key("s", id)).unwrap();
        }
        let requests = [
            (10, 10, ActivationPriority(1)),
            (11, 11, ActivationPriority(5)),
            (12, 12, ActivationPriority(1)),
            (13, 13, ActivationPriority(5)),
        ];
        for (id, now_ms, priority) in requests {
            cache
                .enqueue_activation(now_ms, priority, key("r", id), MIB)
                .unwrap();
        }
        assert_eq!(cache.metrics().activation_queue_depth, 4);
        assert!(drain_actions(&mut cache).is_empty());
        // A direct admission does not overtake the queue even once space exists.
        cache.unpin(&key("s", 0));
        assert_eq!(activated_keys(&drain_actions(&mut cache)), [key("r", 11)]);
        cache.handle_evicted(&key("s", 0));
        assert!(drain_actions(&mut cache).is_empty());
        assert!(is_admission_block(cache.admit(
            20,
            key("x", 0),
            1,
            AdmitKind::Hydrated
        )));
        let mut granted = vec![];
        for id in 1..4 {
            cache.unpin(&key("s", id));
            let actions = drain_actions(&mut cache);
            for evicted in evicted_keys(&actions) {
                cache.handle_evicted(&evicted);
                granted.extend(activated_keys(&drain_actions(&mut cache)));
            }
            granted.extend(activated_keys(&actions));
            cache.check_invariants();
        }
        assert_eq!(granted, [key("r", 13), key("r", 10), key("r", 12)]);
        assert_eq!(cache.metrics().activation_queue_depth, 0);
        let state = cache.segment(&key("r", 10)).unwrap();
        assert_eq!(state.pins, 1, "the activation holds the reader's pin");
        assert!(state.durable_elsewhere);
    }

    #[test]
    fn activation_granted_at_once_when_it_fits() {
        let mut cache = cache(2 * MIB, 4);
        cache
            .enqueue_activation(0, ActivationPriority(0), key("s", 0), MIB)
            .unwrap();
        assert_eq!(
            drain_actions(&mut cache),
            [Tier0Action::Activated {
                key: key("s", 0),
                bytes: MIB
            }]
        );
        assert!(!cache.is_queued(&key("s", 0)));
        cache.check_invariants();
    }

    #[test]
    fn cancel_unblocks_the_next_waiter() {
        let mut cache = cache(2 * MIB, 4);
        cache.admit(0, key("a", 0), MIB, AdmitKind::Active).unwrap();
        cache
            .enqueue_activation(1, ActivationPriority(9), key("s", 0), 2 * MIB)
            .unwrap();
        cache
            .enqueue_activation(2, ActivationPriority(0), key("s", 1), MIB)
            .unwrap();
        assert!(drain_actions(&mut cache).is_empty(), "head of line blocks");
        assert!(cache.cancel_activation(&key("s", 0)));
        assert!(!cache.cancel_activation(&key("s", 0)));
        assert_eq!(activated_keys(&drain_actions(&mut cache)), [key("s", 1)]);
        cache.check_invariants();
    }

    #[test]
    fn activation_waits_for_its_own_eviction() {
        let mut cache = cache(MIB, 4);
        add_sealed(&mut cache, 0, &key("s", 0), MIB);
        cache.admit(1, key("a", 0), 1, AdmitKind::Active).unwrap();
        assert_eq!(evicted_keys(&drain_actions(&mut cache)), [key("s", 0)]);
        // A reader wants s/0 back while its old copy is being removed.
        assert!(is_admission_block(cache.admit(
            2,
            key("s", 0),
            MIB - 1,
            AdmitKind::Hydrated
        )));
        cache
            .enqueue_activation(2, ActivationPriority(0), key("s", 0), MIB - 1)
            .unwrap();
        assert!(drain_actions(&mut cache).is_empty());
        cache.check_invariants();
        cache.handle_evicted(&key("s", 0));
        assert_eq!(activated_keys(&drain_actions(&mut cache)), [key("s", 0)]);
        cache.check_invariants();
    }

    #[test]
    fn warn_threshold_crossing_fires_once() {
        let mut cache = cache(MIB, 2);
        cache.admit(0, key("a", 0), MIB, AdmitKind::Active).unwrap();
        drain_events(&mut cache);
        let warnings = |cache: &mut Tier0Cache| {
            drain_events(cache)
                .into_iter()
                .filter(|event| matches!(event, Tier0Event::ActivationQueueWarn { .. }))
                .collect::<Vec<_>>()
        };
        let enqueue = |cache: &mut Tier0Cache, id| {
            cache
                .enqueue_activation(1, ActivationPriority(0), key("w", id), 1)
                .unwrap();
        };
        enqueue(&mut cache, 0);
        assert!(warnings(&mut cache).is_empty());
        enqueue(&mut cache, 1);
        assert_eq!(
            warnings(&mut cache),
            [Tier0Event::ActivationQueueWarn {
                depth: 2,
                threshold: 2
            }]
        );
        enqueue(&mut cache, 2);
        assert!(warnings(&mut cache).is_empty(), "once per crossing");
        assert!(cache.cancel_activation(&key("w", 2)));
        assert!(warnings(&mut cache).is_empty(), "still at the threshold");
        assert!(cache.cancel_activation(&key("w", 1)));
        assert!(warnings(&mut cache).is_empty());
        enqueue(&mut cache, 3);
        assert_eq!(
            warnings(&mut cache).len(),
            1,
            "a second crossing warns again"
        );
        cache.check_invariants();
    }

    #[test]
    fn full_queue_and_oversized_segments_are_refused() {
        let mut cache = cache(MIB, 4);
        cache.admit(0, key("a", 0), MIB, AdmitKind::Active).unwrap();
        for id in 0..u64::from(ACTIVATION_QUEUE_MAX) {
            cache
                .enqueue_activation(0, ActivationPriority(0), key("q", id), 1)
                .unwrap();
        }
        let error = cache
            .enqueue_activation(0, ActivationPriority(0), key("q", 1 << 40), 1)
            .unwrap_err();
        assert_eq!(error.would_block(), Some(BackpressureKind::Admission));
        cache.check_invariants();
        let error = cache
            .admit(0, key("b", 0), MIB + 1, AdmitKind::Hydrated)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "segment b/00000000000000000000 is {} bytes, larger than the whole Tier 0 \
                 budget (cluster_max_bytes = {MIB})",
                MIB + 1
            )
        );
        assert!(matches!(
            cache.enqueue_activation(0, ActivationPriority(0), key("b", 0), MIB + 1),
            Err(Tier0Error::LargerThanBudget { .. })
        ));
    }

    #[test]
    fn removal_drops_and_frees_space() {
        let mut cache = cache(MIB, 4);
        cache
            .admit(0, key("s", 0), MIB, AdmitKind::Recovered)
            .unwrap();
        cache
            .enqueue_activation(1, ActivationPriority(0), key("s", 1), MIB)
            .unwrap();
        assert!(
            drain_actions(&mut cache).is_empty(),
            "not durable elsewhere"
        );
        drain_events(&mut cache);
        cache.handle_removed(&key("s", 0));
        assert_eq!(
            drain_events(&mut cache)[0],
            Tier0Event::SegmentDropped {
                key: key("s", 0),
                bytes: MIB,
                reason: DropReason::Removed,
                total_bytes: 0
            }
        );
        assert_eq!(activated_keys(&drain_actions(&mut cache)), [key("s", 1)]);
        cache.check_invariants();
    }

    #[test]
    fn events_carry_runbook_names_and_targets() {
        let mut cache = cache(MIB, 1);
        add_sealed(&mut cache, 5, &key("s", 0), MIB);
        cache.admit(9, key("a", 0), 1, AdmitKind::Active).unwrap();
        cache.handle_evicted(&key("s", 0));
        cache.admit(9, key("a", 1), MIB, AdmitKind::Active).unwrap();
        cache
            .enqueue_activation(9, ActivationPriority(0), key("h", 0), 1)
            .unwrap();
        let events = drain_events(&mut cache);
        let named: Vec<_> = events
            .iter()
            .map(|event| (event.name(), event.target()))
            .collect();
        assert_eq!(
            named,
            [
                ("tiered_admit_segment", "aof2::tiered"),
                ("tiered_admit_segment", "aof2::tiered"),
                ("tier0_eviction_scheduled", "aof2::tier0"),
                ("tier0_segment_dropped", "aof2::tier0"),
                ("tiered_admit_segment", "aof2::tiered"),
                ("tier0_activation_queue_warn", "aof2::tier0"),
            ]
        );
        assert_eq!(
            events[2],
            Tier0Event::EvictionScheduled {
                key: key("s", 0),
                bytes: MIB,
                idle_ms: 4,
                total_bytes: MIB + 1
            }
        );
        let metrics = cache.metrics();
        assert_eq!(metrics.admitted, 3);
        assert_eq!(metrics.evictions, 1);
        assert_eq!(metrics.drops, 1);
        assert_eq!(metrics.activation_queue_depth, 1);
        assert_eq!(metrics.cluster_max_bytes, MIB);
        assert_eq!(metrics.total_bytes, MIB + 1);
    }

    #[test]
    #[should_panic(expected = "admitted twice")]
    fn double_admission_is_a_bug() {
        let mut cache = cache(MIB, 4);
        cache.admit(0, key("s", 0), 1, AdmitKind::Active).unwrap();
        let _ = cache.admit(0, key("s", 0), 1, AdmitKind::Recovered);
    }

    #[test]
    #[should_panic(expected = "without a pin")]
    fn unpin_without_pin_is_a_bug() {
        let mut cache = cache(MIB, 4);
        cache.admit(0, key("s", 0), 1, AdmitKind::Active).unwrap();
        cache.unpin(&key("s", 0));
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn time_going_backwards_is_a_bug() {
        let mut cache = cache(MIB, 4);
        cache.admit(10, key("s", 0), 1, AdmitKind::Active).unwrap();
        let _ = cache.touch(9, &key("s", 0));
    }

    #[test]
    #[should_panic(expected = "evicted unasked")]
    fn confirming_an_unasked_eviction_is_a_bug() {
        let mut cache = cache(MIB, 4);
        add_sealed(&mut cache, 0, &key("s", 0), 1);
        cache.handle_evicted(&key("s", 0));
    }

    // ---- Random operation sequences ----

    const STREAMS: [&str; 2] = ["a", "b"];
    const SEGMENTS_PER_STREAM: u64 = 4;
    const UNIT_BYTES: u64 = MIB / 4;

    #[derive(Debug, Clone)]
    enum Op {
        Admit { key: u8, units: u8, kind: AdmitKind },
        Resize { key: u8, units: u8 },
        Seal { key: u8, units: u8 },
        MarkDurable { key: u8 },
        Touch { key: u8 },
        Pin { key: u8 },
        Unpin { key: u8 },
        Enqueue { key: u8, units: u8, priority: u8 },
        Cancel { key: u8 },
        ConfirmEviction { index: u8 },
        Remove { key: u8 },
        Advance { ms: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0u8..(STREAMS.len() as u8 * SEGMENTS_PER_STREAM as u8);
        let units = 0u8..=6;
        let kind = prop_oneof![
            Just(AdmitKind::Active),
            Just(AdmitKind::Hydrated),
            Just(AdmitKind::Recovered)
        ];
        prop_oneof![
            (key.clone(), units.clone(), kind).prop_map(|(key, units, kind)| Op::Admit {
                key,
                units,
                kind
            }),
            (key.clone(), units.clone()).prop_map(|(key, units)| Op::Resize { key, units }),
            (key.clone(), units.clone()).prop_map(|(key, units)| Op::Seal { key, units }),
            key.clone().prop_map(|key| Op::MarkDurable { key }),
            key.clone().prop_map(|key| Op::Touch { key }),
            key.clone().prop_map(|key| Op::Pin { key }),
            key.clone().prop_map(|key| Op::Unpin { key }),
            (key.clone(), units, 0u8..3).prop_map(|(key, units, priority)| Op::Enqueue {
                key,
                units,
                priority
            }),
            key.clone().prop_map(|key| Op::Cancel { key }),
            any::<u8>().prop_map(|index| Op::ConfirmEviction { index }),
            key.prop_map(|key| Op::Remove { key }),
            any::<u8>().prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn key_of(index: u8) -> SegmentKey {
        let index = u64::from(index);
        key(
            STREAMS[(index / SEGMENTS_PER_STREAM) as usize],
            index % SEGMENTS_PER_STREAM,
        )
    }

    /// What the driver knows, kept independently of the machine.
    #[derive(Default)]
    struct Model {
        durable: BTreeSet<SegmentKey>,
        pins: BTreeMap<SegmentKey, u32>,
        evictions_outstanding: Vec<SegmentKey>,
        admitted_events: u64,
        eviction_events: u64,
        dropped_events: u64,
        warn_events: u64,
        /// The driver's own LRU clock: every access it caused, in order.
        access_clock: u64,
        last_access: BTreeMap<SegmentKey, u64>,
    }

    impl Model {
        fn access(&mut self, key: &SegmentKey) {
            self.access_clock += 1;
            self.last_access.insert(key.clone(), self.access_clock);
        }
    }

    fn apply(cache: &mut Tier0Cache, model: &mut Model, now_ms: &mut u64, op: &Op) {
        let max = cache.config().cluster_max_bytes;
        match *op {
            Op::Admit { key, units, kind } => {
                let key = key_of(key);
                let bytes = u64::from(units) * UNIT_BYTES;
                if cache.is_queued(&key) {
                    return;
                }
                let state = cache.segment(&key);
                match (kind, state) {
                    (AdmitKind::Hydrated, Some(state)) if state.phase == SegmentPhase::Evicting => {
                        let result = cache.admit(*now_ms, key, bytes, kind);
                        if bytes > max {
                            assert!(matches!(result, Err(Tier0Error::LargerThanBudget { .. })));
                        } else {
                            assert!(is_admission_block(result));
                        }
                    }
                    (_, Some(_)) => {}
                    (AdmitKind::Hydrated, None) => {
                        let queued_before = cache.metrics().activation_queue_depth;
                        match cache.admit(*now_ms, key.clone(), bytes, kind) {
                            Ok(admitted) => {
                                assert!(admitted.pin_held);
                                assert_eq!(queued_before, 0, "admission overtook the queue");
                                model.access(&key);
                                model.durable.insert(key.clone());
                                *model.pins.entry(key).or_default() += 1;
                            }
                            Err(Tier0Error::LargerThanBudget { .. }) => assert!(bytes > max),
                            Err(error) => {
                                assert_eq!(error.would_block(), Some(BackpressureKind::Admission));
                            }
                        }
                    }
                    (_, None) => {
                        model.access(&key);
                        cache.admit(*now_ms, key, bytes, kind).unwrap();
                    }
                }
            }
            Op::Resize { key, units } => {
                let key = key_of(key);
                if cache.segment(&key).map(|state| state.phase) == Some(SegmentPhase::Active) {
                    cache.handle_active_resized(&key, u64::from(units) * UNIT_BYTES);
                }
            }
            Op::Seal { key, units } => {
                let key = key_of(key);
                if cache.segment(&key).map(|state| state.phase) == Some(SegmentPhase::Active) {
                    model.access(&key);
                    cache.handle_sealed(*now_ms, &key, u64::from(units) * UNIT_BYTES);
                }
            }
            Op::MarkDurable { key } => {
                let key = key_of(key);
                match cache.segment(&key).map(|state| state.phase) {
                    None => assert_eq!(
                        cache.mark_durable_elsewhere(&key),
                        Err(Tier0Error::NotResident { key })
                    ),
                    Some(SegmentPhase::Active) => {}
                    Some(_) => {
                        cache.mark_durable_elsewhere(&key).unwrap();
                        model.durable.insert(key);
                    }
                }
            }
            Op::Touch { key } | Op::Pin { key } => {
                let key = key_of(key);
                let expected = match cache.segment(&key) {
                    None => Err(Tier0Error::NotResident { key: key.clone() }),
                    Some(state) if state.phase == SegmentPhase::Evicting => {
                        Err(Tier0Error::EvictionScheduled { key: key.clone() })
                    }
                    Some(_) => Ok(()),
                };
                if expected.is_ok() {
                    model.access(&key);
                }
                if matches!(op, Op::Pin { .. }) {
                    assert_eq!(cache.pin(*now_ms, &key), expected);
                    if expected.is_ok() {
                        *model.pins.entry(key).or_default() += 1;
                    }
                } else {
                    assert_eq!(cache.touch(*now_ms, &key), expected);
                }
            }
            Op::Unpin { key } => {
                let key = key_of(key);
                if let Some(pins) = model.pins.get_mut(&key).filter(|pins| **pins > 0) {
                    *pins -= 1;
                    cache.unpin(&key);
                }
            }
            Op::Enqueue {
                key,
                units,
                priority,
            } => {
                let key = key_of(key);
                let bytes = u64::from(units) * UNIT_BYTES;
                let evicting_or_absent = cache
                    .segment(&key)
                    .is_none_or(|state| state.phase == SegmentPhase::Evicting);
                if cache.is_queued(&key) || !evicting_or_absent {
                    return;
                }
                let result =
                    cache.enqueue_activation(*now_ms, ActivationPriority(priority), key, bytes);
                match result {
                    Ok(()) => {}
                    Err(Tier0Error::LargerThanBudget { .. }) => assert!(bytes > max),
                    Err(error) => panic!("unexpected {error}"),
                }
            }
            Op::Cancel { key } => {
                let key = key_of(key);
                let queued = cache.is_queued(&key);
                assert_eq!(cache.cancel_activation(&key), queued);
            }
            Op::ConfirmEviction { index } => {
                if model.evictions_outstanding.is_empty() {
                    return;
                }
                let at = usize::from(index) % model.evictions_outstanding.len();
                let key = model.evictions_outstanding.swap_remove(at);
                assert!(model.durable.contains(&key));
                assert_eq!(model.pins.get(&key).copied().unwrap_or(0), 0);
                cache.handle_evicted(&key);
                model.durable.remove(&key);
                model.pins.remove(&key);
            }
            Op::Remove { key } => {
                let key = key_of(key);
                let Some(state) = cache.segment(&key) else {
                    return;
                };
                if state.pins == 0 && state.phase != SegmentPhase::Evicting {
                    cache.handle_removed(&key);
                    model.durable.remove(&key);
                    model.pins.remove(&key);
                }
            }
            Op::Advance { ms } => *now_ms += u64::from(ms),
        }
    }

    /// Drains outputs like a driver, checking every eviction against the model.
    fn drain(cache: &mut Tier0Cache, model: &mut Model) {
        let mut evicted_access = 0;
        while let Some(action) = cache.poll_action() {
            match action {
                Tier0Action::Evict { key, bytes } => {
                    let access = model.last_access[&key];
                    assert!(access > evicted_access, "evictions in LRU order");
                    evicted_access = access;
                    assert!(model.durable.contains(&key), "{key} evicted, not durable");
                    assert_eq!(
                        model.pins.get(&key).copied().unwrap_or(0),
                        0,
                        "{key} evicted while pinned"
                    );
                    let state = cache.segment(&key).unwrap();
                    assert_eq!(state.phase, SegmentPhase::Evicting);
                    assert_eq!(state.bytes, bytes);
                    model.evictions_outstanding.push(key);
                }
                Tier0Action::Activated { key, .. } => {
                    model.access(&key);
                    model.durable.insert(key.clone());
                    *model.pins.entry(key).or_default() += 1;
                }
            }
        }
        for key in cache.eviction_order() {
            assert!(
                model.last_access[key] > evicted_access,
                "{key} was less recently used than an evicted segment"
            );
        }
        while let Some(event) = cache.poll_event() {
            match event {
                Tier0Event::SegmentAdmitted { .. } => model.admitted_events += 1,
                Tier0Event::EvictionScheduled { .. } => model.eviction_events += 1,
                Tier0Event::SegmentDropped { .. } => model.dropped_events += 1,
                Tier0Event::ActivationQueueWarn { depth, threshold } => {
                    assert!(depth >= threshold);
                    model.warn_events += 1;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_operations_keep_invariants_and_evict_only_durable_unpinned(
            budget_units in 4u64..=12,
            warn in 1u32..=3,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut cache = cache(budget_units * UNIT_BYTES, warn);
            let mut model = Model::default();
            let mut now_ms = 0;
            let mut depth = 0;
            for op in &ops {
                apply(&mut cache, &mut model, &mut now_ms, op);
                cache.check_invariants();
                let warns_before = model.warn_events;
                drain(&mut cache, &mut model);
                cache.check_invariants();
                let depth_before = depth;
                depth = cache.metrics().activation_queue_depth;
                let crossed = depth_before < u64::from(warn) && depth >= u64::from(warn);
                prop_assert_eq!(
                    model.warn_events - warns_before,
                    u64::from(crossed),
                    "one warning per crossing ({} -> {})", depth_before, depth
                );
                for (key, pins) in &model.pins {
                    let resident = cache.segment(key).map_or(0, |state| state.pins);
                    prop_assert_eq!(resident, *pins, "pins of {}", key);
                }
            }
            let metrics = cache.metrics();
            prop_assert_eq!(metrics.admitted, model.admitted_events);
            prop_assert_eq!(metrics.evictions, model.eviction_events);
            prop_assert_eq!(metrics.drops, model.dropped_events);
        }
    }
}
