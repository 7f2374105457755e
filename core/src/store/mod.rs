//! The coordinator: one [`Store`] composes every sans-IO machine of a manager and is
//! itself a [`Machine`] the one [`driver::run`](crate::driver::run) loop pumps.
//!
//! Per manager it owns one [`Tier0Cache`], one [`Tier1Cache`] and one
//! [`Tier2Transfers`]; per open stream a [`StreamMachine`] and a [`ManifestWriter`].
//! Commands ([`StoreCommand`]) come from the embedding API; each gets exactly one
//! [`StoreReply`], possibly later (durability and flush waiters). Backpressure is a
//! normal reply: [`StoreReply::WouldBlock`].
//!
//! # Routing
//!
//! Every component numbers its own [`IoId`]s from zero, so they collide. The store
//! hands the driver *global* ids from one counter and keeps a table
//! `global id -> (component, local id)` ([`Route`]) for the requests in flight. A
//! completion is looked up (and removed) by its global id and handed to the owning
//! component with its local id. Requests the store issues itself (creating a stream's
//! directories) are routed to the store. After every input, [`Store`] pumps: it drains
//! every component's requests into one FIFO outbox (in component order) and every
//! component's events, which may feed other components (for example a stream's
//! `SegmentOpened` becomes a manifest record and a commit), until nothing moves.
//!
//! A Tier 1 hydration's get of a segment object is not routed to the store directly: it
//! becomes a Tier 2 fetch ([`Tier2Transfers::enqueue_fetch`]), so it is retried under
//! `tier2.retry`, logged as `tier2_fetch_*` and counted in the Tier 2 metrics
//! (`fetches`, `download_failures`) as the runbook expects; its terminal event is handed
//! back to Tier 1 as the get's completion. (Tier 1 retries the hydration on top under
//! its own policy.) If the fetch queue is full the get goes to the store directly.
//!
//! # Stream lifecycle
//!
//! `OpenStream` lists the manifest directory.
//!
//! - **No chunk file: restore or create** (the `restore` module). The stream is
//!   `Restoring`: the store lists the stream's manifest chunks, snapshots and segments
//!   in Tier 2. With nothing there it is a new stream (below). Otherwise it downloads
//!   the newest snapshot that decodes and the sealed chunks from it on, plans the
//!   restore against the segment objects (adopting the objects whose `UploadDone` was
//!   in the lost unsealed chunk, from their artifacts' tails, headers and footers;
//!   a gap or contradiction is [`StoreError::Recovery`]), writes the files locally
//!   by the durable-file rule and hands them to the reopen below with the plan. The
//!   restored history ends at the last segment Tier 2 holds; the new active segment
//!   follows it. A directory that still holds an unfinished restore's marker is
//!   restored again.
//! - **Tier 2 empty too: a new stream.** The store creates the segments and manifest directories
//!   (`CreateDir`), then starts a [`StreamMachine::create`] at segment 0, offset 0 and a
//!   fresh [`ManifestWriter`]. The stream's `SegmentOpened` is journaled and committed;
//!   the open is replied once that record is durable; the active segment is admitted
//!   to Tier 0.
//! - **Chunk files: a reopen** (the `recovery` module; also the last step of a
//!   restore, which then starts the new active segment where the plan says, journals
//!   the plan's records first and treats restored segments as held by Tier 2 only).
//!   The stream is
//!   `Recovering`: the manifest is replayed (from the newest snapshot that decodes,
//!   unless [`StoreConfig::manifest_log_only`]), [`StreamMachine::recover`] recovers
//!   the segment files, every sealed local segment is verified, leftovers are removed,
//!   and the index is reconciled with the files and the tiers: records a crash kept
//!   from being committed are journaled, Tier 0 and Tier 1 adopt what exists, and
//!   unfinished compressions and uploads resume. Commands other than the open get
//!   [`StoreError::Opening`] meanwhile. The open is replied `Opened { next_offset }`
//!   (the recovered next offset) once the records journaled by reconciliation are
//!   committed. A corrupt sealed segment no other tier holds fails the open with
//!   [`StoreError::CorruptSegment`]; one Tier 2 holds is dropped and counted in the
//!   stream's [`RecoverySummary`].
//!
//! # Seal pipeline
//!
//! Work that must follow a manifest commit waits in the stream's `after_commit` queue,
//! keyed by the record's ordinal, and runs on the `Committed` event that covers it.
//!
//! 1. `Sealed` -> journal `SealSegment`; committed -> `tier0.handle_sealed`,
//!    `tier1.enqueue_compression`.
//! 2. Tier 1 `CompressionStarted`/`Succeeded`/`Failed` -> journal
//!    `CompressionStarted`/`Done`/`Failed`; on success read the artifact file and
//!    `tier2.enqueue_upload` it, only if the bytes read match the length and CRC
//!    `CompressionDone` recorded (a mismatch is read again, then journaled as
//!    `UploadFailed`: a bad copy is never uploaded).
//! 3. Tier 2 `UploadStarted`/`Succeeded`/`Failed` -> journal `UploadStarted`/`Done`/
//!    `Failed`; `UploadDone` committed -> `tier0.mark_durable_elsewhere`,
//!    `tier1.mark_uploaded`.
//! 4. Tier 0 `Evict` -> remove the segment file, fsync the segments directory, then
//!    `tier0.handle_evicted`, `tier1.note_evicted_from_tier0` and journal
//!    `LocalEvicted`.
//!
//! # Reads
//!
//! `Read` serves a durable record from the active segment (memory), a sealed Tier 0
//! file (one frame read, located by the segment's record index), or starts the
//! hydration of a cold segment (`WouldBlock(Hydration)`, or a parked read with
//! `mode.wait`); tail followers park at the durable end. See `store/read.rs`.
//!
//! # Upkeep
//!
//! Retention (`retention.rs`), snapshots and the Tier 2 copies of sealed manifest
//! chunks (`snapshot.rs`) and the metrics snapshot (`metrics.rs`) live in child
//! modules; each module doc states its flow and invariants.
//!
//! **Invariants** (checked by [`Store::check_invariants`], which also runs every
//! component's own `check_invariants`)
//! - Every global id in the route table is below the next global id; the outbox holds
//!   only ids that are in the route table (a request is routed before it is handed
//!   out), and each id is handed out once.
//! - A stream's durability waiters all wait for offsets at or above its durable
//!   watermark (a waiter that is satisfied is replied at once).
//! - A stream is `Ready` only with a stream machine and a manifest writer; a
//!   `Recovering` stream has no waiters and at most one store request in flight.
//! - Once closed, no new stream is opened.
//! - A stream's after-commit work is ordered by ordinal and only waits for ordinals
//!   not yet committed.
//! - A local copy is deleted only after the next tier's copy is durable and its
//!   manifest record committed: Tier 0 may only evict what `mark_durable_elsewhere`
//!   marked, which runs only after `UploadDone` is committed (Tier 0 checks it).

use crate::SegmentId;
use crate::backpressure::BackpressureKind;
use crate::codec::crc32;
use crate::driver::{CommandToken, Machine};
use crate::io::{
    DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoId, IoRequest, ObjectCompletion,
    ObjectErrorKind, ObjectRequest,
};
use crate::limits::{SEGMENT_HEADER_BYTES, STORE_ARTIFACT_READ_ATTEMPTS_MAX, STORE_STREAMS_MAX};
use crate::manifest::chunk::parse_chunk_file_name;
use crate::manifest::index::ManifestIndex;
use crate::manifest::record::{ManifestRecord, ReasonCode, RecordFrame, Tier};
use crate::manifest::replay::ReplayFigures;
use crate::manifest::writer::{
    ManifestError, ManifestEvent, ManifestWriter, ManifestWriterConfig, WriterStart,
};
use crate::names::{
    NameError, ObjectKey, SegmentKey, StreamName, artifact_path, manifest_dir, segment_object_key,
    segment_path, segments_dir,
};
use crate::retry::DetRng;
use crate::segment::StoredRecord;
use crate::stream::{AppendError, StreamConfig, StreamEvent, StreamMachine};
use crate::tier0::{AdmitKind, Tier0Action, Tier0Cache, Tier0CacheConfig};
use crate::tier1::{Tier1Cache, Tier1Config, Tier1Event};
use crate::tier2::{FailureReason, FetchId, Tier2Config, Tier2Event, Tier2Transfers};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

mod metrics;
mod read;
mod recovery;
mod restore;
mod retention;
mod snapshot;
#[cfg(test)]
mod tests;
mod write;

pub use read::{ReadMetricsSnapshot, ReadMode};

pub use recovery::{LOG_TARGET_STORE, RecoveryEvent, RecoverySummary};
use recovery::{Recovering, RecoveryOp};

pub use metrics::{
    ManifestFigures, RetentionFigures, SegmentCounts, SnapshotFigures, StoreMetrics, StreamMetrics,
};

/// Everything a [`Store`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub tier0: Tier0CacheConfig,
    pub tier1: Tier1Config,
    /// Transfers, and the retention policy (`tier2.retention`; keeps everything by
    /// default).
    pub tier2: Tier2Config,
    pub stream: StreamConfig,
    pub manifest: ManifestWriterConfig,
    /// Seeds the retry jitter of Tier 1 and Tier 2 (deterministic).
    pub rng_seed: u64,
    /// Recovery ignores snapshots and replays every manifest chunk from the first
    /// (the operator's log-only bootstrap, `AOF2_MANIFEST_LOG_ONLY`).
    pub manifest_log_only: bool,
    /// A stream is snapshotted once it journaled this many manifest records since its
    /// last snapshot (`0..=STORE_SNAPSHOT_EVERY_RECORDS_MAX`, 0 = off; default
    /// 10 000).
    pub snapshot_every_records: u64,
    /// A stream that journaled records is snapshotted this long after its last
    /// snapshot (0 = off, else
    /// `STORE_SNAPSHOT_INTERVAL_MS_MIN..=STORE_SNAPSHOT_INTERVAL_MS_MAX`; default
    /// 30 minutes).
    pub snapshot_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tier0: Tier0CacheConfig::default(),
            tier1: Tier1Config::default(),
            tier2: Tier2Config::default(),
            stream: StreamConfig::default(),
            manifest: ManifestWriterConfig::default(),
            rng_seed: 0,
            snapshot_every_records: crate::limits::STORE_SNAPSHOT_EVERY_RECORDS_DEFAULT,
            snapshot_interval_ms: crate::limits::STORE_SNAPSHOT_INTERVAL_MS_DEFAULT,
            manifest_log_only: false,
        }
    }
}

impl StoreConfig {
    /// Checks every part.
    pub fn validate(&self) -> Result<(), StoreError> {
        let config = |what: &'static str, error: &dyn std::fmt::Display| StoreError::Config {
            what,
            reason: error.to_string(),
        };
        self.tier0.validate().map_err(|e| config("tier0", &e))?;
        self.tier1.validate().map_err(|e| config("tier1", &e))?;
        self.tier2.validate().map_err(|e| config("tier2", &e))?;
        self.stream.validate().map_err(|e| config("stream", &e))?;
        self.manifest
            .validate()
            .map_err(|e| config("manifest", &e))?;
        self.validate_snapshot_knobs()
    }
}

/// What the embedding API asks of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCommand {
    /// Opens (creates) a stream; the name is validated.
    OpenStream { name: String },
    /// Appends one record; replied `Appended(offset)` once accepted (not yet durable).
    /// With `wait`, `WouldBlock(Rollover | Flush)` is waited out instead of replied.
    Append {
        stream: StreamName,
        payload: Bytes,
        ext_id: Option<u64>,
        wait: bool,
    },
    /// Seals the active segment now; replied `Sealed` once its `SealSegment` record is
    /// committed (`segment_id: None` if it held no record).
    Seal { stream: StreamName },
    /// Fsyncs everything appended so far; replied `Durable` once it is.
    Flush { stream: StreamName },
    /// Replied `Durable` once the record at `offset` is durable; flushes the stream
    /// first if it is not (whatever the flush policy).
    WaitDurable { stream: StreamName, offset: u64 },
    /// Reads the durable record at `offset` from whichever tier holds it: replied
    /// `Record`, `WouldBlock(Hydration | Tail)` (unless `mode.wait`), or an error
    /// (below the start offset, never appended, corrupt). See `store/read.rs`.
    Read {
        stream: StreamName,
        offset: u64,
        mode: ReadMode,
    },
    /// Flushes everything and commits the manifests; replied `Closed` once done.
    Close,
    /// Replied `Metrics` at once.
    Metrics,
    /// Takes a snapshot of the stream's manifest index; replied `Snapshot` once the
    /// snapshot file is durable locally, uploaded to Tier 2 and its `SnapshotMarker`
    /// is committed.
    Snapshot { stream: StreamName },
    /// Deletes every segment of the stream below `before` from every tier, as
    /// retention does but now and with reason `Operator` (`aof2-admin segments
    /// delete`). All of them must be sealed and uploaded, and none read or hydrated
    /// right now, or nothing is deleted and the error names the first that is not.
    /// Replied `SegmentsDeleting` once their `Tier2DeleteQueued` records are
    /// committed; the copies are deleted after that (`retention.deletes_pending`).
    DeleteSegments {
        stream: StreamName,
        before: SegmentId,
    },
}

/// The store's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreReply {
    /// The stream is open and accepts appends from `next_offset`.
    Opened {
        stream: StreamName,
        next_offset: u64,
    },
    Appended(u64),
    /// A durable record, read back.
    Record(StoredRecord),
    /// Every offset below `next_offset` is durable.
    Durable {
        next_offset: u64,
    },
    Closed,
    Sealed {
        segment_id: Option<SegmentId>,
    },
    Metrics(Box<StoreMetrics>),
    /// A snapshot covering every manifest record below `record_ordinal`, which ends at
    /// (`chunk_index`, `chunk_offset`), is durable locally and in Tier 2, and its
    /// marker is committed.
    Snapshot {
        snapshot_id: u64,
        chunk_index: u64,
        chunk_offset: u64,
        record_ordinal: u64,
    },
    /// `segments` more segments are queued for deletion, durably; reads below
    /// `start_offset` are out of range from now on.
    SegmentsDeleting {
        segments: u64,
        start_offset: u64,
    },
    /// Normal backpressure: retry later.
    WouldBlock(BackpressureKind),
    Error(StoreError),
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("invalid stream name: {0}")]
    InvalidName(#[from] NameError),
    #[error("invalid store config ({what}): {reason}")]
    Config { what: &'static str, reason: String },
    #[error("unknown stream {0:?}: open it first")]
    UnknownStream(String),
    #[error("stream {0:?} is already open or opening")]
    AlreadyOpen(String),
    #[error("stream {0:?} is still opening")]
    Opening(String),
    /// `DeleteSegments` found a segment below its bound that may not go now.
    #[error("stream {stream:?}: segment {} cannot be deleted: {reason}", segment_id.0)]
    SegmentNotDeletable {
        stream: String,
        segment_id: SegmentId,
        reason: String,
    },
    /// A sealed local segment fails verification and no other tier holds it.
    #[error(
        "stream {stream:?}: sealed segment file {path} is corrupt at byte {position}: {reason}"
    )]
    CorruptSegment {
        stream: String,
        path: String,
        position: u64,
        reason: String,
    },
    /// What is on disk contradicts the manifest in a way recovery must not paper over.
    #[error("stream {stream:?} cannot be recovered: {reason}")]
    Recovery { stream: String, reason: String },
    /// A Tier 2 request of a restore failed (opening again retries it).
    #[error("stream {stream:?}: Tier 2 request {what} for {key} failed: {reason}")]
    Tier2Request {
        stream: String,
        what: &'static str,
        key: String,
        reason: String,
    },
    #[error("too many streams: the limit is {limit}")]
    TooManyStreams { limit: usize },
    #[error("the store is closed")]
    Closed,
    #[error("offset {offset} was never appended to stream {stream:?} (next offset {next_offset})")]
    NotAppended {
        stream: String,
        offset: u64,
        next_offset: u64,
    },
    #[error(
        "offset {offset} of stream {stream:?} is below its start offset {start_offset} \
         (retention removed it)"
    )]
    OffsetBelowStart {
        stream: String,
        offset: u64,
        start_offset: u64,
    },
    #[error("stream {stream:?}: {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        stream: String,
        path: String,
        position: u64,
        reason: String,
    },
    #[error("segment {segment_id} of stream {stream:?} cannot be read back: {reason}")]
    ColdRead {
        stream: String,
        segment_id: SegmentId,
        reason: String,
    },
    #[error("append refused: {0}")]
    Append(AppendError),
    #[error("manifest of stream {stream:?} failed: {reason}")]
    Manifest { stream: String, reason: String },
    #[error("disk request {what} for stream {stream:?} failed: {reason}")]
    Disk {
        stream: String,
        what: &'static str,
        reason: String,
    },
    #[error("stream {stream:?} failed: {reason}")]
    StreamFailed { stream: String, reason: String },
    #[error("snapshot {snapshot_id} of stream {stream:?} failed at {step}: {reason}")]
    SnapshotFailed {
        stream: String,
        snapshot_id: u64,
        step: &'static str,
        reason: String,
    },
    #[error("stream {stream:?} already has {limit} snapshot commands waiting: retry later")]
    SnapshotWaitersFull { stream: String, limit: usize },
}

/// Which component a global id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// The store's own request for a stream.
    Store(StreamName, StoreOp),
    Stream(StreamName, IoId),
    Manifest(StreamName, IoId),
    Tier1(IoId),
    Tier2(IoId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreOp {
    ListManifest,
    CreateSegmentsDir,
    CreateManifestDir,
    /// Reading the Tier 1 artifact to upload it; attempts count from 1.
    ReadArtifact {
        segment_id: SegmentId,
        attempt: u32,
    },
    /// Removing an evicted Tier 0 segment file.
    RemoveSegment(SegmentId),
    /// Fsyncing the segments directory after the removal.
    SyncSegmentsDir(SegmentId),
    /// Reading a whole sealed segment to build its record index.
    LoadRecordIndex {
        segment_id: SegmentId,
        base_offset: u64,
    },
    /// Reading one record frame of a sealed segment for a reader.
    ReadRecord {
        segment_id: SegmentId,
        position: u64,
        token: CommandToken,
        offset: u64,
        sequential: bool,
    },
    /// A step of reopening an existing stream (see `recovery`).
    Recovery(RecoveryOp),
    /// A step of restoring a stream from Tier 2 (see `restore`).
    Restore(restore::RestoreOp),
    /// A step of writing the snapshot file.
    Snapshot(snapshot::SnapshotStep),
    /// A step of copying a sealed manifest chunk to Tier 2 or removing it locally.
    Chunk(u64, snapshot::ChunkStep),
}

/// Work that waits for a manifest record to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AfterCommit {
    /// `SealSegment` is durable: hand the segment to Tier 0 (sealed) and Tier 1.
    Sealed { segment_id: SegmentId, bytes: u64 },
    /// `UploadDone` is durable: the local copies may go.
    Uploaded { segment_id: SegmentId },
    /// `Tier2DeleteQueued` is durable: retention may delete the segment's copies.
    RetentionQueued { segment_id: SegmentId },
    /// `SnapshotMarker` is durable: the snapshot is complete.
    SnapshotMarked { snapshot_id: u64 },
    /// The record is durable: answer the command that journaled it.
    Answer {
        token: CommandToken,
        reply: StoreReply,
    },
}

// `Ready` is the common, long-lived state; boxing it would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    /// Waiting for the manifest listing.
    Probing,
    /// Creating directories; counts those still outstanding.
    CreatingDirs(u8),
    /// Reopening a stream whose manifest exists: replaying it, recovering the
    /// segment files, reconciling both (see `recovery`).
    Recovering(Recovering),
    /// The local manifest holds no chunk: asking Tier 2 for the stream's history and
    /// restoring it (see `restore`).
    Restoring(Box<restore::Restoring>),
    /// Machines running (the open is replied once the first `SegmentOpened` is
    /// committed).
    Ready {
        stream: StreamMachine,
        manifest: ManifestWriter,
        /// Every record journaled so far, applied in ordinal order (committed or
        /// not): the store's view of where each segment lives. The read path,
        /// retention and snapshots look segments up here.
        index: ManifestIndex,
    },
    /// Failed for good: every command gets this error.
    Failed(StoreError),
}

#[derive(Debug)]
struct StreamEntry {
    phase: Phase,
    open_token: Option<CommandToken>,
    /// The manifest ordinal whose commit replies the open.
    open_ordinal: Option<u64>,
    /// (token, offset): replied once `durable_next_offset > offset`.
    durable_waiters: Vec<(CommandToken, u64)>,
    /// (token, target): replied once `durable_next_offset >= target`.
    flush_waiters: Vec<(CommandToken, u64)>,
    /// (manifest ordinal, work), run once the ordinal is committed; ordinals ascend.
    after_commit: VecDeque<(u64, AfterCommit)>,
    /// The manifest replay of a reopened stream (`aof_manifest_replay_*`).
    replay_figures: Option<ReplayFigures>,
    /// What reopening the stream found and did.
    recovery: Option<RecoverySummary>,
    /// Retention: start offset, deletions under way.
    retention: retention::RetentionState,
    /// Snapshots and the Tier 2 copies of sealed manifest chunks.
    snapshots: snapshot::SnapshotState,
}

/// The coordinator. See the module doc.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    now_ms: u64,
    tier0: Tier0Cache,
    tier1: Tier1Cache,
    tier2: Tier2Transfers,
    streams: BTreeMap<StreamName, StreamEntry>,
    next_global_id: u64,
    routes: BTreeMap<IoId, Route>,
    outbox: VecDeque<(IoId, IoRequest)>,
    /// Tier 1's object gets carried out as Tier 2 fetches: fetch id -> Tier 1's id.
    tier1_fetches: BTreeMap<FetchId, IoId>,
    next_fetch_id: u64,
    replies: VecDeque<(CommandToken, StoreReply)>,
    close_tokens: Vec<CommandToken>,
    closing: bool,
    reads: read::Reads,
    writes: write::Writes,
}

impl Store {
    /// A store with no stream open. The config must be valid.
    pub fn new(config: StoreConfig, now_ms: u64) -> Result<Self, StoreError> {
        config.validate()?;
        let store = Store {
            config,
            now_ms,
            tier0: Tier0Cache::new(config.tier0),
            tier1: Tier1Cache::new(config.tier1, DetRng::new(config.rng_seed)),
            tier2: Tier2Transfers::new(config.tier2, config.rng_seed ^ 0x5EED_7172),
            streams: BTreeMap::new(),
            next_global_id: 0,
            routes: BTreeMap::new(),
            outbox: VecDeque::new(),
            tier1_fetches: BTreeMap::new(),
            next_fetch_id: 0,
            replies: VecDeque::new(),
            close_tokens: Vec::new(),
            closing: false,
            reads: read::Reads::default(),
            writes: write::Writes::default(),
        };
        store.check_invariants();
        Ok(store)
    }

    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The durable watermark of an open stream.
    #[must_use]
    pub fn durable_next_offset(&self, stream: &StreamName) -> Option<u64> {
        match &self.streams.get(stream)?.phase {
            Phase::Ready { stream, .. } => Some(stream.durable_next_offset()),
            _ => None,
        }
    }

    /// The read path's counters.
    #[must_use]
    pub fn read_metrics(&self) -> ReadMetricsSnapshot {
        self.reads.metrics()
    }

    /// The manifest replay figures of a reopened stream (`None` for a new one).
    #[must_use]
    pub fn replay_figures(&self, stream: &StreamName) -> Option<&ReplayFigures> {
        self.streams.get(stream)?.replay_figures.as_ref()
    }

    /// What reopening `stream` found and did (`None` for a new stream).
    #[must_use]
    pub fn recovery_summary(&self, stream: &StreamName) -> Option<&RecoverySummary> {
        self.streams.get(stream)?.recovery.as_ref()
    }

    /// The manifest index of a running stream.
    #[must_use]
    pub fn manifest_index(&self, stream: &StreamName) -> Option<&ManifestIndex> {
        match &self.streams.get(stream)?.phase {
            Phase::Ready { index, .. } => Some(index),
            _ => None,
        }
    }

    /// The next offset an append to a running stream gets.
    #[must_use]
    pub fn next_offset(&self, stream: &StreamName) -> Option<u64> {
        match &self.streams.get(stream)?.phase {
            Phase::Ready { stream, .. } => stream.next_offset(),
            _ => None,
        }
    }

    /// Names of the streams open or opening.
    pub fn streams(&self) -> impl Iterator<Item = &StreamName> {
        self.streams.keys()
    }

    fn route(&mut self, route: Route, request: IoRequest) {
        let id = IoId(self.next_global_id);
        self.next_global_id += 1;
        let previous = self.routes.insert(id, route);
        assert!(previous.is_none(), "global ids are unique");
        self.outbox.push_back((id, request));
    }

    /// Routes one Tier 1 request: an object get becomes a Tier 2 fetch (see the module
    /// doc), anything else goes to the driver.
    fn route_tier1(&mut self, now_ms: u64, local: IoId, request: IoRequest) {
        let IoRequest::Object(ObjectRequest::Get { key }) = request else {
            return self.route(Route::Tier1(local), request);
        };
        let fetch_id = FetchId(self.next_fetch_id);
        let enqueued = ObjectKey::parse(&key).ok().is_some_and(|object| {
            self.tier2
                .enqueue_fetch(now_ms, fetch_id, &object, None)
                .is_ok()
        });
        if enqueued {
            self.next_fetch_id += 1;
            self.tier1_fetches.insert(fetch_id, local);
        } else {
            let request = IoRequest::Object(ObjectRequest::Get { key });
            self.route(Route::Tier1(local), request);
        }
    }

    /// Hands the end of a Tier 1 fetch back to Tier 1 as its get's completion.
    fn tier1_fetch_ended(&mut self, now_ms: u64, fetch_id: FetchId, completion: ObjectCompletion) {
        let local = self
            .tier1_fetches
            .remove(&fetch_id)
            .expect("every Tier 2 fetch is one of Tier 1's gets");
        self.tier1
            .handle_completion(now_ms, local, IoCompletion::Object(completion));
    }

    fn reply(&mut self, token: CommandToken, reply: StoreReply) {
        self.replies.push_back((token, reply));
    }

    fn open_stream(&mut self, token: CommandToken, name: String) {
        if self.closing {
            return self.reply(token, StoreReply::Error(StoreError::Closed));
        }
        let stream = match StreamName::new(name) {
            Ok(stream) => stream,
            Err(error) => return self.reply(token, StoreReply::Error(error.into())),
        };
        if self.streams.contains_key(&stream) {
            let name = stream.as_str().to_owned();
            return self.reply(token, StoreReply::Error(StoreError::AlreadyOpen(name)));
        }
        if self.streams.len() >= STORE_STREAMS_MAX {
            let error = StoreError::TooManyStreams {
                limit: STORE_STREAMS_MAX,
            };
            return self.reply(token, StoreReply::Error(error));
        }
        self.streams.insert(
            stream.clone(),
            StreamEntry {
                phase: Phase::Probing,
                open_token: Some(token),
                open_ordinal: None,
                durable_waiters: Vec::new(),
                flush_waiters: Vec::new(),
                after_commit: VecDeque::new(),
                replay_figures: None,
                recovery: None,
                retention: retention::RetentionState::default(),
                snapshots: snapshot::SnapshotState::new(self.now_ms),
            },
        );
        let path = manifest_dir(&stream);
        self.route(
            Route::Store(stream, StoreOp::ListManifest),
            IoRequest::Disk(DiskRequest::ListDir { path }),
        );
    }

    /// A new stream: create its segments and manifest directories; the machines start
    /// once both exist.
    fn create_stream_dirs(&mut self, stream: StreamName) {
        let Some(entry) = self.streams.get_mut(&stream) else {
            return;
        };
        entry.phase = Phase::CreatingDirs(2);
        let segments = segments_dir(&stream);
        let manifest = manifest_dir(&stream);
        self.route(
            Route::Store(stream.clone(), StoreOp::CreateSegmentsDir),
            IoRequest::Disk(DiskRequest::CreateDir { path: segments }),
        );
        self.route(
            Route::Store(stream, StoreOp::CreateManifestDir),
            IoRequest::Disk(DiskRequest::CreateDir { path: manifest }),
        );
    }

    /// The ready machines of `stream`, or the reply explaining why not.
    fn ready(&mut self, stream: &StreamName) -> Result<&mut StreamEntry, StoreError> {
        let Some(entry) = self.streams.get_mut(stream) else {
            return Err(StoreError::UnknownStream(stream.as_str().to_owned()));
        };
        match &entry.phase {
            Phase::Ready { .. } => Ok(entry),
            Phase::Failed(error) => Err(error.clone()),
            Phase::Probing
            | Phase::CreatingDirs(_)
            | Phase::Recovering(_)
            | Phase::Restoring(_) => Err(StoreError::Opening(stream.as_str().to_owned())),
        }
    }

    fn flush(&mut self, token: CommandToken, stream: &StreamName) {
        let now_ms = self.now_ms;
        let result = match self.ready(stream) {
            Err(error) => Err(error),
            Ok(entry) => {
                let Phase::Ready { stream, .. } = &mut entry.phase else {
                    unreachable!("ready() checked the phase");
                };
                match stream.flush(now_ms) {
                    Ok(target) => {
                        entry.flush_waiters.push((token, target));
                        Ok(stream.durable_next_offset())
                    }
                    Err(error) => Err(StoreError::Append(error)),
                }
            }
        };
        match result {
            Ok(durable) => self.durable_advanced(stream, durable),
            Err(error) => self.reply(token, StoreReply::Error(error)),
        }
    }

    /// Replies once `offset` is durable. Waiting asks for it: if `offset` is not
    /// durable yet the stream is flushed now, so a flush policy that batches by bytes
    /// or time never leaves a waiter hanging (like a synchronous write).
    fn wait_durable(&mut self, token: CommandToken, stream: &StreamName, offset: u64) {
        let now_ms = self.now_ms;
        let result = match self.ready(stream) {
            Err(error) => Err(error),
            Ok(entry) => {
                let Phase::Ready { stream, .. } = &mut entry.phase else {
                    unreachable!("ready() checked the phase");
                };
                let next_offset = stream.next_offset().unwrap_or(stream.durable_next_offset());
                if offset >= next_offset {
                    Err(StoreError::NotAppended {
                        stream: stream.stream().as_str().to_owned(),
                        offset,
                        next_offset,
                    })
                } else if offset >= stream.durable_next_offset()
                    && let Err(error) = stream.flush(now_ms)
                {
                    Err(StoreError::Append(error))
                } else {
                    entry.durable_waiters.push((token, offset));
                    Ok(stream.durable_next_offset())
                }
            }
        };
        match result {
            Ok(durable) => self.durable_advanced(stream, durable),
            Err(error) => self.reply(token, StoreReply::Error(error)),
        }
    }

    fn handle_store_completion(
        &mut self,
        now_ms: u64,
        stream: StreamName,
        op: StoreOp,
        completion: IoCompletion,
    ) {
        let Some(entry) = self.streams.get_mut(&stream) else {
            return;
        };
        let failed = |what: &'static str, reason: String| StoreError::Disk {
            stream: stream.as_str().to_owned(),
            what,
            reason,
        };
        match (op, completion) {
            (StoreOp::ListManifest, IoCompletion::Disk(DiskCompletion::Listed(names))) => {
                let _ = entry;
                // Only a chunk file is a manifest; a leftover temp file is not (it is
                // overwritten or removed by whichever path runs), and a directory an
                // unfinished restore marked is restored again.
                let restore_unfinished = names
                    .iter()
                    .any(|name| name == restore::RESTORE_MARKER_FILE_NAME);
                let chunks = names
                    .iter()
                    .any(|name| parse_chunk_file_name(name).is_some());
                if chunks && !restore_unfinished {
                    return self.start_recovery(now_ms, &stream, &names, None);
                }
                self.start_restore_probe(&stream);
            }
            (
                StoreOp::CreateSegmentsDir | StoreOp::CreateManifestDir,
                IoCompletion::Disk(DiskCompletion::Done),
            ) => {
                let Phase::CreatingDirs(left) = entry.phase else {
                    unreachable!("directories are created only while opening");
                };
                if left > 1 {
                    entry.phase = Phase::CreatingDirs(left - 1);
                    return;
                }
                let machine = StreamMachine::create(
                    self.config.stream,
                    stream.clone(),
                    now_ms,
                    SegmentId(0),
                    0,
                );
                match ManifestWriter::new(
                    self.config.manifest,
                    manifest_dir(&stream),
                    WriterStart::fresh(),
                    now_ms,
                ) {
                    Ok(manifest) => {
                        entry.phase = Phase::Ready {
                            stream: machine,
                            manifest,
                            index: ManifestIndex::new(),
                        };
                    }
                    Err(error) => {
                        let error = StoreError::Manifest {
                            stream: stream.as_str().to_owned(),
                            reason: error.to_string(),
                        };
                        self.fail_opening(&stream, error);
                    }
                }
            }
            (
                StoreOp::LoadRecordIndex {
                    segment_id,
                    base_offset,
                },
                completion,
            ) => {
                let key = SegmentKey::new(stream, segment_id);
                self.record_index_loaded(key, base_offset, completion);
            }
            (
                StoreOp::ReadRecord {
                    segment_id,
                    position,
                    token,
                    offset,
                    sequential,
                },
                completion,
            ) => {
                let key = SegmentKey::new(stream, segment_id);
                self.record_read(key, position, token, offset, sequential, completion);
            }
            (StoreOp::Recovery(op), completion) => {
                self.handle_recovery_completion(now_ms, &stream, op, completion);
            }
            (StoreOp::Restore(op), completion) => {
                self.handle_restore_completion(now_ms, &stream, op, completion);
            }
            (
                StoreOp::ReadArtifact {
                    segment_id,
                    attempt,
                },
                completion,
            ) => {
                self.artifact_read(now_ms, stream, segment_id, attempt, completion);
            }
            (StoreOp::RemoveSegment(segment_id), completion) => {
                // A file already gone is as good as removed.
                if matches!(
                    completion,
                    IoCompletion::Disk(
                        DiskCompletion::Done | DiskCompletion::Failed(DiskErrorKind::NotFound)
                    )
                ) {
                    let path = segments_dir(&stream);
                    self.route(
                        Route::Store(stream, StoreOp::SyncSegmentsDir(segment_id)),
                        IoRequest::Disk(DiskRequest::SyncDir { path }),
                    );
                } else {
                    let error = failed("remove evicted segment", format!("{completion:?}"));
                    self.fail_stream(&stream, error);
                }
            }
            (StoreOp::SyncSegmentsDir(segment_id), completion) => {
                if completion == IoCompletion::Disk(DiskCompletion::Done) {
                    let key = SegmentKey::new(stream.clone(), segment_id);
                    self.tier0.handle_evicted(&key);
                    self.tier1.note_evicted_from_tier0(&key);
                    let record = ManifestRecord::LocalEvicted {
                        segment_id,
                        tier: Tier::Tier0,
                    };
                    self.journal(now_ms, &stream, &record);
                    self.drive_deletion(now_ms, &stream, segment_id);
                } else {
                    let error = failed("fsync segments directory", format!("{completion:?}"));
                    self.fail_stream(&stream, error);
                }
            }
            (StoreOp::Snapshot(step), completion) => {
                self.snapshot_io_done(now_ms, &stream, step, completion);
            }
            (StoreOp::Chunk(chunk_index, step), completion) => {
                self.chunk_io_done(now_ms, &stream, chunk_index, step, completion);
            }
            (op, completion) => {
                let error = failed(
                    match op {
                        StoreOp::ListManifest => "list manifest directory",
                        StoreOp::CreateSegmentsDir => "create segments directory",
                        StoreOp::CreateManifestDir => "create manifest directory",
                        StoreOp::ReadArtifact { .. }
                        | StoreOp::RemoveSegment(_)
                        | StoreOp::SyncSegmentsDir(_)
                        | StoreOp::LoadRecordIndex { .. }
                        | StoreOp::ReadRecord { .. }
                        | StoreOp::Recovery(_)
                        | StoreOp::Restore(_)
                        | StoreOp::Snapshot(_)
                        | StoreOp::Chunk(..) => unreachable!("matched above"),
                    },
                    format!("{completion:?}"),
                );
                self.fail_opening(&stream, error);
            }
        }
    }

    /// An open that failed before any machine ran: reply and forget the stream.
    fn fail_opening(&mut self, stream: &StreamName, error: StoreError) {
        if let Some(entry) = self.streams.remove(stream)
            && let Some(token) = entry.open_token
        {
            self.reply(token, StoreReply::Error(error));
        }
    }

    /// Fails a running stream for good: every waiter gets the error.
    fn fail_stream(&mut self, stream: &StreamName, error: StoreError) {
        let Some(entry) = self.streams.get_mut(stream) else {
            return;
        };
        let mut tokens: Vec<CommandToken> = entry.open_token.take().into_iter().collect();
        tokens.extend(entry.durable_waiters.drain(..).map(|(token, _)| token));
        tokens.extend(entry.flush_waiters.drain(..).map(|(token, _)| token));
        tokens.extend(entry.snapshots.take_waiters());
        // Commands waiting for a commit that will never come.
        for (_, work) in std::mem::take(&mut entry.after_commit) {
            if let AfterCommit::Answer { token, .. } = work {
                tokens.push(token);
            }
        }
        entry.phase = Phase::Failed(error.clone());
        for token in tokens {
            self.reply(token, StoreReply::Error(error.clone()));
        }
        self.fail_parked_reads(Some(stream), &error);
        self.fail_parked_writes(Some(stream), &error);
    }

    /// Drains every component until nothing moves.
    fn pump(&mut self, now_ms: u64) {
        loop {
            let mut moved = false;
            let names: Vec<StreamName> = self.streams.keys().cloned().collect();
            for name in names {
                moved |= self.pump_stream(now_ms, &name);
            }
            while let Some(action) = self.tier0.poll_action() {
                self.handle_tier0_action(action);
                moved = true;
            }
            // Tier 0 events are log lines only.
            while let Some(event) = self.tier0.poll_event() {
                event.log();
            }
            while let Some(event) = self.tier1.poll_event() {
                event.log();
                self.handle_tier1_event(now_ms, event);
                moved = true;
            }
            while let Some(event) = self.tier2.poll_event() {
                event.log();
                self.handle_tier2_event(now_ms, event);
                moved = true;
            }
            while let Some((local, request)) = self.tier1.poll_request() {
                self.route_tier1(now_ms, local, request);
                moved = true;
            }
            while let Some((local, request)) = self.tier2.poll_request() {
                self.route(Route::Tier2(local), request);
                moved = true;
            }
            moved |= self.start_due_snapshots(now_ms);
            if !moved {
                break;
            }
        }
        self.reply_close_if_done();
    }

    /// Drains one stream's machines; true if anything moved.
    fn pump_stream(&mut self, now_ms: u64, name: &StreamName) -> bool {
        let mut moved = false;
        let mut requests = Vec::new();
        let mut stream_events = Vec::new();
        let mut manifest_events = Vec::new();
        {
            let Some(entry) = self.streams.get_mut(name) else {
                return false;
            };
            if matches!(entry.phase, Phase::Recovering(_)) {
                return self.pump_recovering(now_ms, name);
            }
            let Phase::Ready {
                stream, manifest, ..
            } = &mut entry.phase
            else {
                return false;
            };
            while let Some((local, request)) = stream.poll_request() {
                requests.push((Route::Stream(name.clone(), local), request));
            }
            while let Some((local, request)) = manifest.poll_request() {
                requests.push((
                    Route::Manifest(name.clone(), local),
                    IoRequest::Disk(request),
                ));
            }
            while let Some(event) = stream.poll_event() {
                stream_events.push(event);
            }
            while let Some(event) = manifest.poll_event() {
                manifest_events.push(event);
            }
        }
        for (route, request) in requests {
            self.route(route, request);
            moved = true;
        }
        for event in stream_events {
            event.log(name);
            self.handle_stream_event(now_ms, name, event);
            self.retry_parked_appends(name);
            self.retry_parked_seals(name);
            moved = true;
        }
        for event in manifest_events {
            self.handle_manifest_event(now_ms, name, event);
            moved = true;
        }
        moved
    }

    /// Journals `record` and commits; a refused record fails the stream.
    fn journal(&mut self, now_ms: u64, name: &StreamName, record: &ManifestRecord) -> Option<u64> {
        let entry = self.streams.get_mut(name)?;
        let Phase::Ready {
            manifest, index, ..
        } = &mut entry.phase
        else {
            return None;
        };
        let result: Result<u64, ManifestError> = manifest
            .append(now_ms, record)
            .and_then(|ordinal| manifest.commit(now_ms).map(|()| ordinal));
        match result {
            Ok(ordinal) => {
                let frame = RecordFrame {
                    ordinal,
                    timestamp_ms: now_ms,
                    record: record.clone(),
                    frame_length: record.frame_length(),
                };
                index.apply(&frame);
                Some(ordinal)
            }
            Err(error) => {
                let error = StoreError::Manifest {
                    stream: name.as_str().to_owned(),
                    reason: error.to_string(),
                };
                self.fail_stream(name, error);
                None
            }
        }
    }

    fn handle_stream_event(&mut self, now_ms: u64, name: &StreamName, event: StreamEvent) {
        match event {
            StreamEvent::Durable { next_offset } => self.durable_advanced(name, next_offset),
            StreamEvent::SegmentOpened {
                segment_id,
                base_offset,
                opened_at_ms,
            } => {
                let record = ManifestRecord::SegmentOpened {
                    segment_id,
                    base_offset,
                    opened_at_ms,
                };
                let key = SegmentKey::new(name.clone(), segment_id);
                let header = u64::from(SEGMENT_HEADER_BYTES);
                if let Err(error) = self.tier0.admit(now_ms, key, header, AdmitKind::Active) {
                    panic!("an active segment is always admitted: {error}");
                }
                let ordinal = self.journal(now_ms, name, &record);
                if let Some(entry) = self.streams.get_mut(name)
                    && entry.open_token.is_some()
                    && entry.open_ordinal.is_none()
                {
                    entry.open_ordinal = ordinal;
                }
            }
            StreamEvent::Sealed(info) => {
                let footer = info.footer;
                let record = ManifestRecord::SealSegment {
                    segment_id: info.segment_id,
                    base_offset: info.base_offset,
                    record_count: footer.record_count,
                    durable_bytes: footer.durable_bytes,
                    checksum: footer.segment_crc,
                    last_ext_id: footer.last_ext_id,
                    coordinator_watermark: footer.coordinator_watermark,
                    flush_failure: footer.flush_failure,
                    sealed_at_ms: footer.sealed_at_ms,
                };
                let bytes = info.file_bytes();
                if let Some(ordinal) = self.journal(now_ms, name, &record) {
                    self.after_commit(
                        name,
                        ordinal,
                        AfterCommit::Sealed {
                            segment_id: info.segment_id,
                            bytes,
                        },
                    );
                }
            }
            StreamEvent::FlushFailed { .. } | StreamEvent::Recovered(_) => {}
            StreamEvent::Poisoned(failure) => {
                let error = StoreError::StreamFailed {
                    stream: name.as_str().to_owned(),
                    reason: failure.to_string(),
                };
                self.fail_stream(name, error);
            }
        }
    }

    fn durable_advanced(&mut self, name: &StreamName, next_offset: u64) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let mut done = Vec::new();
        entry.durable_waiters.retain(|&(token, offset)| {
            let ready = offset < next_offset;
            if ready {
                done.push(token);
            }
            !ready
        });
        entry.flush_waiters.retain(|&(token, target)| {
            let ready = target <= next_offset;
            if ready {
                done.push(token);
            }
            !ready
        });
        for token in done {
            self.reply(token, StoreReply::Durable { next_offset });
        }
        self.wake_tail_followers(name, next_offset);
    }

    fn handle_manifest_event(&mut self, now_ms: u64, name: &StreamName, event: ManifestEvent) {
        match event {
            ManifestEvent::Committed { durable_ordinal } => {
                let Some(entry) = self.streams.get_mut(name) else {
                    return;
                };
                let mut ready = Vec::new();
                while entry
                    .after_commit
                    .front()
                    .is_some_and(|(ordinal, _)| *ordinal <= durable_ordinal)
                {
                    ready.extend(entry.after_commit.pop_front().map(|(_, work)| work));
                }
                if entry
                    .open_ordinal
                    .is_some_and(|ordinal| ordinal <= durable_ordinal)
                    && let Some(token) = entry.open_token.take()
                {
                    entry.open_ordinal = None;
                    let next_offset = match &entry.phase {
                        Phase::Ready { stream, .. } => stream.durable_next_offset(),
                        _ => 0,
                    };
                    self.reply(
                        token,
                        StoreReply::Opened {
                            stream: name.clone(),
                            next_offset,
                        },
                    );
                }
                for work in ready {
                    self.run_after_commit(now_ms, name, work);
                }
            }
            ManifestEvent::ChunkSealed { chunk_index, path } => {
                self.chunk_sealed(name, chunk_index, path);
            }
            ManifestEvent::Poisoned { error } => {
                let error = StoreError::Manifest {
                    stream: name.as_str().to_owned(),
                    reason: error.to_string(),
                };
                self.fail_stream(name, error);
            }
        }
    }

    fn after_commit(&mut self, name: &StreamName, ordinal: u64, work: AfterCommit) {
        if let Some(entry) = self.streams.get_mut(name) {
            assert!(
                entry
                    .after_commit
                    .back()
                    .is_none_or(|(last, _)| *last <= ordinal),
                "after-commit work is queued in ordinal order"
            );
            entry.after_commit.push_back((ordinal, work));
        }
    }

    fn run_after_commit(&mut self, now_ms: u64, name: &StreamName, work: AfterCommit) {
        match work {
            AfterCommit::Sealed { segment_id, bytes } => {
                self.seal_committed(name, segment_id);
                let key = SegmentKey::new(name.clone(), segment_id);
                self.tier0.handle_sealed(now_ms, &key, bytes);
                if let Err(error) = self.tier1.enqueue_compression(now_ms, key, bytes) {
                    // The segment stays in Tier 0 only; it is not evictable.
                    let record = ManifestRecord::CompressionFailed {
                        segment_id,
                        job_id: 0,
                        reason: ReasonCode::Unspecified,
                        attempt: 0,
                    };
                    debug_assert!(
                        !matches!(error, crate::tier1::Tier1Error::CompressionPending { .. }),
                        "a segment is sealed once: {error}"
                    );
                    self.journal(now_ms, name, &record);
                }
                self.run_retention(now_ms, name);
            }
            AfterCommit::Uploaded { segment_id } => {
                let key = SegmentKey::new(name.clone(), segment_id);
                // Not resident (already evicted) is fine.
                let _ = self.tier0.mark_durable_elsewhere(&key);
                self.tier1.mark_uploaded(&key);
                self.upload_committed(now_ms, name, segment_id);
            }
            AfterCommit::RetentionQueued { segment_id } => {
                self.deletion_committed(now_ms, name, segment_id);
            }
            AfterCommit::SnapshotMarked { snapshot_id } => {
                self.snapshot_marked(now_ms, name, snapshot_id);
            }
            AfterCommit::Answer { token, reply } => self.reply(token, reply),
        }
    }

    fn handle_tier0_action(&mut self, action: Tier0Action) {
        match action {
            Tier0Action::Evict { key, .. } => {
                self.forget_record_index(&key);
                let path = segment_path(&key.stream, key.segment_id);
                self.route(
                    Route::Store(key.stream, StoreOp::RemoveSegment(key.segment_id)),
                    IoRequest::Disk(DiskRequest::Remove { path }),
                );
            }
            // A queued hydration got its Tier 0 space (one pin held).
            Tier0Action::Activated { key, .. } => {
                self.request_tier1_hydration(&key, read::READ_PRIORITY);
            }
        }
    }

    fn handle_tier1_event(&mut self, now_ms: u64, event: Tier1Event) {
        match event {
            Tier1Event::CompressionStarted { key, attempt } => {
                let record = ManifestRecord::CompressionStarted {
                    segment_id: key.segment_id,
                    job_id: u64::from(attempt),
                };
                self.journal(now_ms, &key.stream, &record);
            }
            Tier1Event::CompressionSucceeded {
                key,
                original_bytes,
                compressed_bytes,
                frame_count,
                checksum,
            } => {
                let record = ManifestRecord::CompressionDone {
                    segment_id: key.segment_id,
                    job_id: 0,
                    original_bytes,
                    compressed_bytes,
                    frame_count,
                    artifact_checksum: checksum,
                };
                self.journal(now_ms, &key.stream, &record);
                self.read_artifact(key.stream, key.segment_id, compressed_bytes, 1);
            }
            Tier1Event::CompressionFailed {
                key,
                reason,
                attempts,
            } => {
                let record = ManifestRecord::CompressionFailed {
                    segment_id: key.segment_id,
                    job_id: 0,
                    reason: reason.reason_code(),
                    attempt: attempts,
                };
                self.journal(now_ms, &key.stream, &record);
            }
            Tier1Event::HydrationStarted {
                key,
                source,
                attempt: 1,
            } => self.hydration_started(&key, source),
            Tier1Event::HydrationSucceeded {
                key, source, bytes, ..
            } => self.hydration_ended(&key, source, Ok(bytes)),
            Tier1Event::HydrationFailed {
                key,
                source,
                reason,
                attempts,
            } => {
                let record = ManifestRecord::HydrationFailed {
                    segment_id: key.segment_id,
                    source: source.tier(),
                    reason: reason.reason_code(),
                    attempt: attempts,
                };
                self.journal(now_ms, &key.stream, &record);
                let error = StoreError::ColdRead {
                    stream: key.stream.as_str().to_owned(),
                    segment_id: key.segment_id,
                    reason: format!(
                        "hydration from {} failed after {attempts} attempts: {reason}",
                        source.as_str()
                    ),
                };
                self.hydration_ended(&key, source, Err(error));
            }
            Tier1Event::Evicted { key, .. } => {
                let record = ManifestRecord::LocalEvicted {
                    segment_id: key.segment_id,
                    tier: Tier::Tier1,
                };
                self.journal(now_ms, &key.stream, &record);
                self.drive_deletion(now_ms, &key.stream, key.segment_id);
            }
            _ => {}
        }
    }

    /// Reads the Tier 1 artifact of a segment to upload it (attempt `attempt`).
    pub(super) fn read_artifact(
        &mut self,
        stream: StreamName,
        segment_id: SegmentId,
        compressed_bytes: u64,
        attempt: u32,
    ) {
        let path = artifact_path(&stream, segment_id);
        self.route(
            Route::Store(
                stream,
                StoreOp::ReadArtifact {
                    segment_id,
                    attempt,
                },
            ),
            IoRequest::Disk(DiskRequest::ReadAt {
                path,
                offset: 0,
                length: compressed_bytes,
            }),
        );
    }

    /// The length and CRC the index recorded for a segment's Tier 1 artifact.
    fn recorded_artifact(&self, stream: &StreamName, segment_id: SegmentId) -> Option<(u64, u32)> {
        match &self.streams.get(stream)?.phase {
            Phase::Ready { index, .. } => {
                let artifact = index.segment(segment_id)?.tier1_artifact.as_ref()?;
                Some((artifact.compressed_bytes, artifact.checksum))
            }
            _ => None,
        }
    }

    /// The artifact was read for its upload. Only bytes that match the length and CRC
    /// its `CompressionDone` recorded are uploaded: Tier 2 is the system of record,
    /// and a read may return a bad copy of good bytes, so a mismatch is read again
    /// (up to [`STORE_ARTIFACT_READ_ATTEMPTS_MAX`] attempts) and then journaled as a
    /// failed upload, never uploaded.
    fn artifact_read(
        &mut self,
        now_ms: u64,
        stream: StreamName,
        segment_id: SegmentId,
        attempt: u32,
        completion: IoCompletion,
    ) {
        let reason = match completion {
            IoCompletion::Disk(DiskCompletion::Read(bytes)) if !bytes.is_empty() => {
                match self.recorded_artifact(&stream, segment_id) {
                    Some((length, checksum))
                        if bytes.len() as u64 == length && crc32(&bytes) == checksum =>
                    {
                        match self
                            .tier2
                            .enqueue_upload(now_ms, stream.clone(), segment_id, bytes)
                        {
                            Ok(()) => return,
                            Err(_) => ReasonCode::Unspecified,
                        }
                    }
                    Some((length, _)) if attempt < STORE_ARTIFACT_READ_ATTEMPTS_MAX => {
                        self.read_artifact(stream, segment_id, length, attempt + 1);
                        return;
                    }
                    Some(_) => ReasonCode::ChecksumMismatch,
                    None => ReasonCode::NotFound,
                }
            }
            IoCompletion::Disk(DiskCompletion::Failed(DiskErrorKind::NotFound)) => {
                ReasonCode::NotFound
            }
            _ => ReasonCode::IoError,
        };
        let record = ManifestRecord::UploadFailed {
            segment_id,
            key: segment_object_key(&stream, segment_id),
            reason,
            attempt: 0,
        };
        self.journal(now_ms, &stream, &record);
    }

    fn handle_tier2_event(&mut self, now_ms: u64, event: Tier2Event) {
        match event {
            Tier2Event::UploadStarted {
                object: ObjectKey::Segment { stream, segment_id },
                key,
                attempt,
            } => {
                let record = ManifestRecord::UploadStarted {
                    segment_id,
                    key,
                    attempt,
                };
                self.journal(now_ms, &stream, &record);
            }
            Tier2Event::UploadSucceeded {
                object: ObjectKey::Segment { stream, segment_id },
                key,
                etag,
                object_bytes,
                ..
            } => {
                let record = ManifestRecord::UploadDone {
                    segment_id,
                    key,
                    etag: etag.unwrap_or_default(),
                    object_bytes,
                };
                if let Some(ordinal) = self.journal(now_ms, &stream, &record) {
                    self.upload_journaled(&stream, segment_id);
                    let work = AfterCommit::Uploaded { segment_id };
                    self.after_commit(&stream, ordinal, work);
                }
            }
            Tier2Event::UploadFailed {
                object: ObjectKey::Segment { stream, segment_id },
                key,
                reason,
                attempts,
            } => {
                let record = ManifestRecord::UploadFailed {
                    segment_id,
                    key,
                    reason: reason.reason_code(),
                    attempt: attempts,
                };
                self.journal(now_ms, &stream, &record);
            }
            Tier2Event::UploadSucceeded { ref object, .. }
            | Tier2Event::UploadFailed { ref object, .. } => {
                let succeeded = matches!(event, Tier2Event::UploadSucceeded { .. });
                self.object_upload_ended(now_ms, object.clone(), succeeded, &event);
            }
            Tier2Event::Deleted { .. } | Tier2Event::DeleteFailed { .. } => {
                self.delete_ended(now_ms, &event);
            }
            Tier2Event::FetchSucceeded {
                fetch_id,
                bytes,
                object_size,
                ..
            } => {
                let completion = ObjectCompletion::Got { bytes, object_size };
                self.tier1_fetch_ended(now_ms, fetch_id, completion);
            }
            Tier2Event::FetchFailed {
                fetch_id, reason, ..
            } => {
                let kind = match reason {
                    FailureReason::Store(kind) => kind,
                    // A body that kept disagreeing with its size after the retries.
                    FailureReason::BadResponse { .. } | FailureReason::SizeMismatch { .. } => {
                        ObjectErrorKind::Transient
                    }
                };
                self.tier1_fetch_ended(now_ms, fetch_id, ObjectCompletion::Failed(kind));
            }
            _ => {}
        }
    }

    /// True when every stream's appends are durable and its manifest committed, and
    /// no IO is under way.
    fn quiescent(&self) -> bool {
        self.routes.is_empty()
            && self.outbox.is_empty()
            && self.streams.values().all(|entry| match &entry.phase {
                Phase::Ready {
                    stream, manifest, ..
                } => {
                    let appended = stream.next_offset().unwrap_or(stream.durable_next_offset());
                    let committed = manifest.durable_ordinal().map_or(0, |ordinal| ordinal + 1);
                    (stream.failure().is_some() || stream.durable_next_offset() >= appended)
                        && (manifest.poisoned().is_some() || committed >= manifest.next_ordinal())
                        && entry.durable_waiters.is_empty()
                        && entry.flush_waiters.is_empty()
                        && entry.after_commit.is_empty()
                        && entry.snapshots.is_idle()
                }
                Phase::Failed(_) => true,
                Phase::Probing
                | Phase::CreatingDirs(_)
                | Phase::Recovering(_)
                | Phase::Restoring(_) => false,
            })
    }

    fn start_close(&mut self, now_ms: u64) {
        self.closing = true;
        self.fail_parked_reads(None, &StoreError::Closed);
        self.fail_parked_writes(None, &StoreError::Closed);
        for entry in self.streams.values_mut() {
            if let Phase::Ready { stream, .. } = &mut entry.phase {
                // A refused flush (poisoned) leaves nothing to wait for.
                let _ = stream.flush(now_ms);
            }
        }
    }

    fn reply_close_if_done(&mut self) {
        if self.closing && !self.close_tokens.is_empty() && self.quiescent() {
            for token in std::mem::take(&mut self.close_tokens) {
                self.replies.push_back((token, StoreReply::Closed));
            }
        }
    }
}

impl Machine for Store {
    type Command = StoreCommand;
    type Reply = StoreReply;

    fn handle_command(&mut self, now_ms: u64, token: CommandToken, command: StoreCommand) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        match command {
            StoreCommand::OpenStream { name } => self.open_stream(token, name),
            StoreCommand::Append {
                stream,
                payload,
                ext_id,
                wait,
            } => self.append(token, &stream, payload, ext_id, wait),
            StoreCommand::Seal { stream } => self.seal(token, &stream),
            StoreCommand::Flush { stream } => self.flush(token, &stream),
            StoreCommand::WaitDurable { stream, offset } => {
                self.wait_durable(token, &stream, offset);
            }
            StoreCommand::Read {
                stream,
                offset,
                mode,
            } => self.read(token, &stream, offset, mode),
            StoreCommand::Close => {
                self.close_tokens.push(token);
                self.start_close(now_ms);
            }
            StoreCommand::Metrics => {
                let metrics = Box::new(self.metrics());
                self.reply(token, StoreReply::Metrics(metrics));
            }
            StoreCommand::Snapshot { stream } => self.request_snapshot(token, &stream),
            StoreCommand::DeleteSegments { stream, before } => {
                self.delete_segments(now_ms, token, &stream, before);
            }
        }
        self.pump(now_ms);
    }

    fn poll_reply(&mut self) -> Option<(CommandToken, StoreReply)> {
        self.replies.pop_front()
    }

    fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
        self.outbox.pop_front()
    }

    fn handle_completion(&mut self, now_ms: u64, id: IoId, completion: IoCompletion) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        let route = self
            .routes
            .remove(&id)
            .unwrap_or_else(|| panic!("completion for unknown global id {id:?}"));
        match route {
            Route::Store(stream, op) => {
                self.handle_store_completion(now_ms, stream, op, completion);
            }
            Route::Stream(name, local) => match self.streams.get_mut(&name) {
                Some(StreamEntry {
                    phase: Phase::Ready { stream, .. },
                    ..
                }) => stream.handle_completion(now_ms, local, completion),
                Some(StreamEntry {
                    phase: Phase::Recovering(recovering),
                    ..
                }) => recovering.handle_stream_completion(now_ms, local, completion),
                _ => {}
            },
            Route::Manifest(name, local) => {
                if let Some(StreamEntry {
                    phase: Phase::Ready { manifest, .. },
                    ..
                }) = self.streams.get_mut(&name)
                {
                    match completion {
                        IoCompletion::Disk(completion) => {
                            manifest.handle_completion(now_ms, local, completion);
                        }
                        other => panic!("manifest writer got a non-disk completion {other:?}"),
                    }
                }
            }
            Route::Tier1(local) => self.tier1.handle_completion(now_ms, local, completion),
            Route::Tier2(local) => self.tier2.handle_completion(now_ms, local, completion),
        }
        self.pump(now_ms);
    }

    fn poll_timeout(&self) -> Option<u64> {
        let streams = self
            .streams
            .values()
            .filter_map(|entry| match &entry.phase {
                Phase::Ready {
                    stream, manifest, ..
                } => match (stream.poll_timeout(), manifest.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                _ => None,
            });
        streams
            .chain(self.tier1.poll_timeout())
            .chain(self.tier2.poll_timeout())
            .chain(self.upkeep_deadline())
            .min()
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        for entry in self.streams.values_mut() {
            if let Phase::Ready {
                stream, manifest, ..
            } = &mut entry.phase
            {
                if stream.poll_timeout().is_some_and(|at| at <= now_ms) {
                    stream.handle_timeout(now_ms);
                }
                if manifest.poll_timeout().is_some_and(|at| at <= now_ms) {
                    manifest.handle_timeout(now_ms);
                }
            }
        }
        if self.tier1.poll_timeout().is_some_and(|at| at <= now_ms) {
            self.tier1.handle_timeout(now_ms);
        }
        if self.tier2.poll_timeout().is_some_and(|at| at <= now_ms) {
            self.tier2.handle_timeout(now_ms);
        }
        self.handle_upkeep_timeout(now_ms);
        self.pump(now_ms);
    }

    fn handle_shutdown(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        self.start_close(now_ms);
        self.pump(now_ms);
    }

    fn is_finished(&self) -> bool {
        self.closing && self.close_tokens.is_empty() && self.quiescent()
    }

    fn check_invariants(&self) {
        for fetch_id in self.tier1_fetches.keys() {
            assert!(
                fetch_id.0 < self.next_fetch_id,
                "fetch {fetch_id} was never issued"
            );
        }
        for id in self.routes.keys() {
            assert!(
                id.0 < self.next_global_id,
                "routed id {id:?} was never issued"
            );
        }
        for (id, _) in &self.outbox {
            assert!(
                self.routes.contains_key(id),
                "outbox id {id:?} is not routed"
            );
        }
        for (name, entry) in &self.streams {
            if let Phase::Ready {
                stream,
                manifest,
                index,
            } = &entry.phase
            {
                index.check_invariants();
                assert_eq!(
                    index.next_ordinal(),
                    manifest.next_ordinal(),
                    "the index has applied every journaled record"
                );
                assert_eq!(
                    stream.stream(),
                    name,
                    "a stream machine sits under its name"
                );
                stream.check_invariants();
                manifest.check_invariants();
                let durable = stream.durable_next_offset();
                for &(_, offset) in &entry.durable_waiters {
                    assert!(
                        offset >= durable,
                        "satisfied durability waiter left waiting"
                    );
                }
                for &(_, target) in &entry.flush_waiters {
                    assert!(target > durable, "satisfied flush waiter left waiting");
                }
                let committed = manifest.durable_ordinal();
                for (ordinal, _) in &entry.after_commit {
                    assert!(
                        committed.is_none_or(|committed| *ordinal > committed),
                        "after-commit work left behind its commit"
                    );
                }
                self.check_retention_invariants(name, entry, stream, index);
                self.check_snapshot_invariants(name, entry, manifest, index);
            } else {
                if let Phase::Recovering(recovering) = &entry.phase {
                    recovering.check_invariants(name);
                }
                if let Phase::Restoring(restoring) = &entry.phase {
                    restoring.check_invariants();
                }
                assert!(
                    entry.durable_waiters.is_empty() && entry.flush_waiters.is_empty(),
                    "only a running stream has waiters"
                );
            }
        }
        self.tier0.check_invariants();
        self.tier1.check_invariants();
        self.tier2.check_invariants();
        self.check_read_invariants();
        self.writes.check_invariants();
    }
}
