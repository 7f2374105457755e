//! The manifest chunk writer: a sans-IO state machine that turns appended records into
//! durable chunk commits (append -> commit -> rotate), in the style of quinn-proto.
//!
//! The writer never touches a file. It emits [`DiskRequest`]s one at a time (each
//! depends on the previous one having completed), and learns their outcome from
//! [`ManifestWriter::handle_completion`]. Time is always an argument.
//!
//! Life of a chunk (see [`chunk`](crate::manifest::chunk) for the layout and why a
//! commit needs two fsyncs):
//!
//! ```text
//! create:  Create <i>.mlog.tmp -> WriteAt header area -> SyncFile -> Rename to <i>.mlog -> SyncDir
//! commit:  WriteAt records -> SyncFile -> WriteAt other slot -> SyncFile   (-> Committed)
//! seal:    a commit whose slot has the sealed flag                        (-> ChunkSealed)
//! resume:  Truncate tail -> SyncFile -> WriteAt other slot, sealed -> SyncFile (-> ChunkSealed)
//! ```
//!
//! The writer opens the next chunk as soon as the previous one is sealed (and at
//! start), so a commit rarely waits for a chunk creation.
//!
//! Rotation: a commit seals its chunk when the next buffered record would not fit in
//! `chunk_capacity_bytes` (a record never spans chunks), or when `rotation_period_ms`
//! have passed since the first commit into the chunk. (The period is measured from the
//! first commit rather than from the creation, because chunks are created eagerly:
//! an idle chunk would otherwise be sealed with a single record after every pause.)
//!
//! Failure: any failed request poisons the writer for good. A failed fsync means the
//! unsynced data may be gone (fsyncgate), so the writer never retries it and never
//! reports the records durable; `append` and `commit` then fail with
//! [`ManifestError::Poisoned`]. The driver restarts from a replay.
//!
//! **Invariants** (checked by [`ManifestWriter::check_invariants`])
//! - At most one request is outstanding; a request is ready or outstanding exactly
//!   when a phase other than idle or poisoned is under way.
//! - Ordinals are accounted for: `next_ordinal = durable + in flight + buffered`, and
//!   buffered ordinals continue the in-flight ones densely.
//! - The open chunk's durable slot ends at the durable ordinal, its committed bytes
//!   never exceed the chunk capacity, and each commit's sequence is the previous + 1.
//! - A chunk is sealed durably before the next chunk is created.
//! - A record is reported durable (`Committed`) only after the slot covering it was
//!   fsynced, which itself follows the fsync of the record bytes.
//! - Poisoned means: no request ready or outstanding, and no further commit.
//! - The durable position ([`ManifestWriter::durable_position`]) ends at the durable
//!   ordinal, in a chunk already created.

use crate::io::{DiskCompletion, DiskErrorKind, DiskRequest, IoId, LocalPath};
use crate::limits::{
    MANIFEST_CHUNK_BYTES_DEFAULT, MANIFEST_CHUNK_BYTES_MAX, MANIFEST_CHUNK_BYTES_MIN,
    MANIFEST_CHUNK_HEADER_AREA_BYTES, MANIFEST_ROTATION_PERIOD_MS_DEFAULT,
    MANIFEST_ROTATION_PERIOD_MS_MAX, MANIFEST_ROTATION_PERIOD_MS_MIN,
    MANIFEST_WRITER_BUFFERED_BYTES_MAX, MANIFEST_WRITER_EVENTS_MAX,
};
use crate::manifest::chunk::{
    ChunkFlags, SlotHeader, chunk_file_name, chunk_temp_file_name, encode_header_area,
};
use crate::manifest::record::{ManifestRecord, RecordError};
use crate::manifest::snapshot::ManifestPosition;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use thiserror::Error;

/// Configuration of a [`ManifestWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestWriterConfig {
    /// Largest chunk file, header area included
    /// (`MANIFEST_CHUNK_BYTES_MIN..=MANIFEST_CHUNK_BYTES_MAX`, default 256 KiB).
    pub chunk_capacity_bytes: u32,
    /// A chunk is sealed this long after its first commit
    /// (`MANIFEST_ROTATION_PERIOD_MS_MIN..=MANIFEST_ROTATION_PERIOD_MS_MAX`, default
    /// 250 ms).
    pub rotation_period_ms: u64,
}

impl Default for ManifestWriterConfig {
    fn default() -> Self {
        ManifestWriterConfig {
            chunk_capacity_bytes: MANIFEST_CHUNK_BYTES_DEFAULT,
            rotation_period_ms: MANIFEST_ROTATION_PERIOD_MS_DEFAULT,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("manifest chunk_capacity_bytes is {value}, it must be between {min} and {max} bytes")]
    ChunkCapacityOutOfRange { value: u32, min: u32, max: u32 },
    #[error("manifest rotation_period_ms is {value}, it must be between {min} and {max} ms")]
    RotationPeriodOutOfRange { value: u64, min: u64, max: u64 },
}

impl ManifestWriterConfig {
    /// Checks every value against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MANIFEST_CHUNK_BYTES_MIN..=MANIFEST_CHUNK_BYTES_MAX)
            .contains(&self.chunk_capacity_bytes)
        {
            return Err(ConfigError::ChunkCapacityOutOfRange {
                value: self.chunk_capacity_bytes,
                min: MANIFEST_CHUNK_BYTES_MIN,
                max: MANIFEST_CHUNK_BYTES_MAX,
            });
        }
        if !(MANIFEST_ROTATION_PERIOD_MS_MIN..=MANIFEST_ROTATION_PERIOD_MS_MAX)
            .contains(&self.rotation_period_ms)
        {
            return Err(ConfigError::RotationPeriodOutOfRange {
                value: self.rotation_period_ms,
                min: MANIFEST_ROTATION_PERIOD_MS_MIN,
                max: MANIFEST_ROTATION_PERIOD_MS_MAX,
            });
        }
        Ok(())
    }
}

/// Where a writer starts: a fresh manifest, or after a replay
/// ([`ReplayOutcome::writer_start`](crate::manifest::replay::ReplayOutcome::writer_start)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStart {
    /// Index of the first chunk the writer creates.
    pub next_chunk_index: u64,
    /// Ordinal of the first record the writer appends.
    pub next_ordinal: u64,
    /// The verified slot of a last chunk that was left unsealed: the writer seals it
    /// (after cutting any uncommitted tail) before it opens the next chunk.
    pub reseal: Option<SlotHeader>,
}

impl WriterStart {
    /// A new, empty manifest.
    #[must_use]
    pub fn fresh() -> Self {
        WriterStart {
            next_chunk_index: 0,
            next_ordinal: 0,
            reseal: None,
        }
    }
}

/// The step of the writer's work that a failed request belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterOperation {
    CreateChunk,
    WriteChunkHeader,
    SyncNewChunk,
    RenameChunk,
    SyncDirectory,
    WriteRecords,
    SyncRecords,
    WriteSlot,
    SyncSlot,
    TruncateTail,
    SyncTruncatedTail,
}

impl fmt::Display for WriterOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriterOperation::CreateChunk => "creating the temporary chunk file",
            WriterOperation::WriteChunkHeader => "writing the header of a new chunk",
            WriterOperation::SyncNewChunk => "fsyncing a new chunk",
            WriterOperation::RenameChunk => "renaming a new chunk into place",
            WriterOperation::SyncDirectory => "fsyncing the manifest directory",
            WriterOperation::WriteRecords => "writing records",
            WriterOperation::SyncRecords => "fsyncing records",
            WriterOperation::WriteSlot => "writing a commit slot",
            WriterOperation::SyncSlot => "fsyncing a commit slot",
            WriterOperation::TruncateTail => "cutting the uncommitted tail",
            WriterOperation::SyncTruncatedTail => "fsyncing the cut tail",
        })
    }
}

/// The request that poisoned the writer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "manifest writer failed {operation} ({path}, chunk {chunk_index}): {kind:?}; records not yet committed may be lost, replay the manifest to continue"
)]
pub struct IoFailure {
    pub operation: WriterOperation,
    pub chunk_index: u64,
    pub path: LocalPath,
    pub kind: DiskErrorKind,
}

/// Why the writer refused a call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid start: {reason}")]
    InvalidStart { reason: String },
    #[error(transparent)]
    InvalidRecord(#[from] RecordError),
    /// A request failed earlier; the writer accepts nothing more.
    #[error("manifest writer is poisoned: {0}")]
    Poisoned(IoFailure),
    /// Too many bytes are waiting to become durable: commit and retry.
    #[error(
        "manifest writer buffer is full: {buffered_bytes} bytes wait to be committed, the limit is {limit}"
    )]
    BufferFull { buffered_bytes: u64, limit: u64 },
}

/// What the writer tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestEvent {
    /// Every record up to and including `durable_ordinal` is durable.
    Committed { durable_ordinal: u64 },
    /// Chunk `chunk_index` is sealed and durable at `path`: ready for upload.
    ChunkSealed { chunk_index: u64, path: LocalPath },
    /// The writer failed and accepts nothing more.
    Poisoned { error: IoFailure },
}

#[derive(Debug)]
struct BufferedRecord {
    ordinal: u64,
    frame: Vec<u8>,
}

/// The chunk accepting commits.
#[derive(Debug)]
struct OpenChunk {
    path: LocalPath,
    /// The newest durable slot.
    durable: SlotHeader,
    /// CRC state over the committed record bytes.
    records_hasher: crc32fast::Hasher,
    first_commit_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateStep {
    Create,
    WriteHeader,
    SyncFile,
    Rename,
    SyncDirectory,
}

#[derive(Debug)]
struct Creating {
    chunk_index: u64,
    base_ordinal: u64,
    temp_path: LocalPath,
    path: LocalPath,
    step: CreateStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitStep {
    WriteRecords,
    SyncRecords,
    WriteSlot,
    SyncSlot,
}

#[derive(Debug)]
struct Committing {
    step: CommitStep,
    records: Bytes,
    record_count: u32,
    header: SlotHeader,
    records_hasher: crc32fast::Hasher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResealStep {
    Truncate,
    SyncTruncate,
    WriteSlot,
    SyncSlot,
}

#[derive(Debug)]
struct Resealing {
    path: LocalPath,
    header: SlotHeader,
    step: ResealStep,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Resealing(Resealing),
    Creating(Creating),
    Committing(Committing),
    Poisoned,
}

/// The manifest chunk writer of one stream.
///
/// # Call order
///
/// 1. [`ManifestWriter::new`] with the directory and where to start.
/// 2. Any number of inputs: [`append`](Self::append) (buffers a record, not durable
///    yet), [`commit`](Self::commit) (asks for everything appended so far to become
///    durable; commits requested while one is in flight are merged into the next),
///    [`handle_completion`](Self::handle_completion) (the outcome of a request) and
///    [`handle_timeout`](Self::handle_timeout) (time passed).
/// 3. After **every** input, drain until idle: call [`poll_request`](Self::poll_request)
///    and carry out each request, call [`poll_event`](Self::poll_event) until it returns
///    `None`, and re-arm the timer from [`poll_timeout`](Self::poll_timeout).
///
/// At most one request is outstanding at a time: the next one appears from
/// `poll_request` after the completion of the previous one is handled. A record is
/// durable once a `Committed` event covers its ordinal, and not before.
#[derive(Debug)]
pub struct ManifestWriter {
    config: ManifestWriterConfig,
    dir: LocalPath,
    phase: Phase,
    chunk: Option<OpenChunk>,
    next_chunk_index: u64,
    reseal: Option<SlotHeader>,
    buffered: VecDeque<BufferedRecord>,
    buffered_bytes: u64,
    next_ordinal: u64,
    /// Ordinals below this are durable.
    durable_end: u64,
    /// Where the durable prefix ends in the chunk files (`None` for a writer resumed
    /// without a chunk to reseal, until its first commit).
    durable_position: Option<ManifestPosition>,
    /// Ordinals below this were asked to become durable.
    commit_target_end: u64,
    next_io_id: u64,
    ready: Option<(IoId, DiskRequest)>,
    outstanding: Option<(IoId, WriterOperation)>,
    events: VecDeque<ManifestEvent>,
    poison: Option<IoFailure>,
}

impl ManifestWriter {
    /// A writer for the manifest directory `dir`, starting at `start`. It immediately
    /// has a request ready: resealing the last chunk, or creating the first one.
    pub fn new(
        config: ManifestWriterConfig,
        dir: LocalPath,
        start: WriterStart,
        now_ms: u64,
    ) -> Result<Self, ManifestError> {
        config.validate()?;
        if let Some(reseal) = &start.reseal {
            if reseal.chunk_index >= start.next_chunk_index {
                return Err(ManifestError::InvalidStart {
                    reason: format!(
                        "chunk {} to reseal is not below the next chunk index {}",
                        reseal.chunk_index, start.next_chunk_index
                    ),
                });
            }
            if reseal.end_ordinal() > start.next_ordinal {
                return Err(ManifestError::InvalidStart {
                    reason: format!(
                        "chunk {} to reseal ends at ordinal {}, after the next ordinal {}",
                        reseal.chunk_index,
                        reseal.end_ordinal(),
                        start.next_ordinal
                    ),
                });
            }
            if reseal.flags.sealed {
                return Err(ManifestError::InvalidStart {
                    reason: format!("chunk {} is already sealed", reseal.chunk_index),
                });
            }
        }
        let fresh = start == WriterStart::fresh();
        let durable_position = match &start.reseal {
            Some(tail) if tail.end_ordinal() == start.next_ordinal => Some(ManifestPosition {
                chunk_index: tail.chunk_index,
                chunk_offset: tail.committed_end(),
                record_ordinal: tail.end_ordinal(),
            }),
            _ => fresh.then_some(ManifestPosition::START),
        };
        let mut writer = ManifestWriter {
            config,
            durable_position,
            dir,
            phase: Phase::Idle,
            chunk: None,
            next_chunk_index: start.next_chunk_index,
            reseal: start.reseal,
            buffered: VecDeque::new(),
            buffered_bytes: 0,
            next_ordinal: start.next_ordinal,
            durable_end: start.next_ordinal,
            commit_target_end: start.next_ordinal,
            next_io_id: 0,
            ready: None,
            outstanding: None,
            events: VecDeque::new(),
            poison: None,
        };
        writer.advance(now_ms);
        writer.check_invariants();
        Ok(writer)
    }

    /// Buffers `record` and returns its ordinal. Not durable until a `Committed` event
    /// covers the ordinal.
    pub fn append(&mut self, now_ms: u64, record: &ManifestRecord) -> Result<u64, ManifestError> {
        if let Some(failure) = &self.poison {
            return Err(ManifestError::Poisoned(failure.clone()));
        }
        record.validate()?;
        let frame_length = u64::from(record.frame_length());
        if self.buffered_bytes + frame_length > MANIFEST_WRITER_BUFFERED_BYTES_MAX {
            return Err(ManifestError::BufferFull {
                buffered_bytes: self.buffered_bytes,
                limit: MANIFEST_WRITER_BUFFERED_BYTES_MAX,
            });
        }
        let ordinal = self.next_ordinal;
        let mut frame =
            Vec::with_capacity(usize::try_from(frame_length).expect("frames are small"));
        record.encode_frame(ordinal, now_ms, &mut frame);
        assert_eq!(
            frame.len() as u64,
            frame_length,
            "frame_length matches encoding"
        );
        self.buffered.push_back(BufferedRecord { ordinal, frame });
        self.buffered_bytes += frame_length;
        self.next_ordinal = ordinal
            .checked_add(1)
            .expect("2^64 manifest records cannot be appended");
        self.check_invariants();
        Ok(ordinal)
    }

    /// Asks for every record appended so far to become durable.
    pub fn commit(&mut self, now_ms: u64) -> Result<(), ManifestError> {
        if let Some(failure) = &self.poison {
            return Err(ManifestError::Poisoned(failure.clone()));
        }
        self.commit_target_end = self.next_ordinal;
        self.advance(now_ms);
        self.check_invariants();
        Ok(())
    }

    /// The next request to carry out, if one is ready. At most one is outstanding.
    pub fn poll_request(&mut self) -> Option<(IoId, DiskRequest)> {
        let (id, request) = self.ready.take()?;
        let operation = self.current_operation();
        assert!(self.outstanding.is_none(), "one request at a time");
        self.outstanding = Some((id, operation));
        Some((id, request))
    }

    /// The outcome of request `id`.
    ///
    /// # Panics
    ///
    /// If `id` is not the outstanding request, or the completion is not of the kind
    /// the request produces: both are driver bugs.
    pub fn handle_completion(&mut self, now_ms: u64, id: IoId, completion: DiskCompletion) {
        let (expected, operation) = self
            .outstanding
            .take()
            .expect("a completion arrived while no request was outstanding");
        assert_eq!(
            id, expected,
            "completion for a request that is not outstanding"
        );
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match completion {
            DiskCompletion::Done => {
                self.phase = self.step_done(phase);
            }
            DiskCompletion::Failed(kind) => {
                let (chunk_index, path) = self.phase_target(&phase);
                let failure = IoFailure {
                    operation,
                    chunk_index,
                    path,
                    kind,
                };
                self.poison = Some(failure.clone());
                self.phase = Phase::Poisoned;
                self.push_event(ManifestEvent::Poisoned { error: failure });
            }
            other => panic!("manifest writer requests complete with Done or Failed, got {other:?}"),
        }
        self.advance(now_ms);
        self.check_invariants();
    }

    /// The deadline at which [`handle_timeout`](Self::handle_timeout) should be called:
    /// when the open chunk's rotation period ends. `None` while a request is under way
    /// (its completion re-arms it) or when no chunk holds records.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        if !matches!(self.phase, Phase::Idle) {
            return None;
        }
        let first_commit_ms = self.chunk.as_ref()?.first_commit_ms?;
        Some(first_commit_ms.saturating_add(self.config.rotation_period_ms))
    }

    /// Time passed: seals the open chunk if its rotation period is over.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.check_invariants();
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ManifestEvent> {
        self.events.pop_front()
    }

    /// The highest ordinal known durable (`None` before any record is).
    #[must_use]
    pub fn durable_ordinal(&self) -> Option<u64> {
        self.durable_end.checked_sub(1)
    }

    /// Where the durable records end: the chunk holding the newest durable record and
    /// the byte just past it (or the start of the manifest). This is the position a
    /// snapshot of the durable prefix covers. `None` only for a writer resumed without
    /// a chunk to reseal, before its first commit.
    #[must_use]
    pub fn durable_position(&self) -> Option<ManifestPosition> {
        self.durable_position
    }

    /// Whether every record appended so far is durable (nothing buffered or in flight).
    #[must_use]
    pub fn is_caught_up(&self) -> bool {
        self.poison.is_none() && self.durable_end == self.next_ordinal
    }

    /// The ordinal the next `append` gets.
    #[must_use]
    pub fn next_ordinal(&self) -> u64 {
        self.next_ordinal
    }

    /// The failure that poisoned the writer, if any.
    #[must_use]
    pub fn poisoned(&self) -> Option<&IoFailure> {
        self.poison.as_ref()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ManifestWriterConfig {
        &self.config
    }

    fn push_event(&mut self, event: ManifestEvent) {
        if let (
            ManifestEvent::Committed { durable_ordinal },
            Some(ManifestEvent::Committed {
                durable_ordinal: previous,
            }),
        ) = (&event, self.events.back_mut())
        {
            assert!(*durable_ordinal > *previous, "durability only grows");
            *previous = *durable_ordinal;
            return;
        }
        assert!(
            self.events.len() < MANIFEST_WRITER_EVENTS_MAX as usize,
            "the driver must drain poll_event after every input"
        );
        self.events.push_back(event);
    }

    fn issue(&mut self, request: DiskRequest) {
        assert!(self.ready.is_none(), "one request at a time");
        assert!(self.outstanding.is_none(), "one request at a time");
        let id = IoId(self.next_io_id);
        self.next_io_id += 1;
        self.ready = Some((id, request));
    }

    fn chunk_path(&self, chunk_index: u64) -> LocalPath {
        self.dir.join(&chunk_file_name(chunk_index))
    }

    /// The operation the current phase's step performs.
    fn current_operation(&self) -> WriterOperation {
        match &self.phase {
            Phase::Creating(creating) => match creating.step {
                CreateStep::Create => WriterOperation::CreateChunk,
                CreateStep::WriteHeader => WriterOperation::WriteChunkHeader,
                CreateStep::SyncFile => WriterOperation::SyncNewChunk,
                CreateStep::Rename => WriterOperation::RenameChunk,
                CreateStep::SyncDirectory => WriterOperation::SyncDirectory,
            },
            Phase::Committing(committing) => match committing.step {
                CommitStep::WriteRecords => WriterOperation::WriteRecords,
                CommitStep::SyncRecords => WriterOperation::SyncRecords,
                CommitStep::WriteSlot => WriterOperation::WriteSlot,
                CommitStep::SyncSlot => WriterOperation::SyncSlot,
            },
            Phase::Resealing(resealing) => match resealing.step {
                ResealStep::Truncate => WriterOperation::TruncateTail,
                ResealStep::SyncTruncate => WriterOperation::SyncTruncatedTail,
                ResealStep::WriteSlot => WriterOperation::WriteSlot,
                ResealStep::SyncSlot => WriterOperation::SyncSlot,
            },
            Phase::Idle | Phase::Poisoned => {
                unreachable!("a request is only ready while a phase is under way")
            }
        }
    }

    /// The chunk and file the outstanding request of `phase` was about.
    fn phase_target(&self, phase: &Phase) -> (u64, LocalPath) {
        match phase {
            Phase::Creating(creating) => {
                let path = match creating.step {
                    CreateStep::SyncDirectory => self.dir.clone(),
                    _ => creating.temp_path.clone(),
                };
                (creating.chunk_index, path)
            }
            Phase::Committing(committing) => {
                let chunk = self.chunk.as_ref().expect("a commit has an open chunk");
                (committing.header.chunk_index, chunk.path.clone())
            }
            Phase::Resealing(resealing) => (resealing.header.chunk_index, resealing.path.clone()),
            Phase::Idle | Phase::Poisoned => {
                unreachable!("a request is only outstanding while a phase is under way")
            }
        }
    }

    /// The outstanding request of `phase` completed: move to its next step.
    fn step_done(&mut self, phase: Phase) -> Phase {
        match phase {
            Phase::Creating(creating) => self.creating_step_done(creating),
            Phase::Committing(committing) => self.committing_step_done(committing),
            Phase::Resealing(resealing) => self.resealing_step_done(resealing),
            Phase::Idle | Phase::Poisoned => {
                unreachable!("a request is only outstanding while a phase is under way")
            }
        }
    }

    fn creating_step_done(&mut self, mut creating: Creating) -> Phase {
        creating.step = match creating.step {
            CreateStep::Create => {
                let mut header_area =
                    BytesMut::with_capacity(MANIFEST_CHUNK_HEADER_AREA_BYTES as usize);
                encode_header_area(
                    &SlotHeader::empty(creating.chunk_index, creating.base_ordinal),
                    &mut header_area,
                );
                self.issue(DiskRequest::WriteAt {
                    path: creating.temp_path.clone(),
                    offset: 0,
                    bytes: header_area.freeze(),
                });
                CreateStep::WriteHeader
            }
            CreateStep::WriteHeader => {
                self.issue(DiskRequest::SyncFile {
                    path: creating.temp_path.clone(),
                });
                CreateStep::SyncFile
            }
            CreateStep::SyncFile => {
                self.issue(DiskRequest::Rename {
                    from: creating.temp_path.clone(),
                    to: creating.path.clone(),
                });
                CreateStep::Rename
            }
            CreateStep::Rename => {
                self.issue(DiskRequest::SyncDir {
                    path: self.dir.clone(),
                });
                CreateStep::SyncDirectory
            }
            CreateStep::SyncDirectory => {
                assert!(self.chunk.is_none(), "one open chunk at a time");
                assert_eq!(creating.chunk_index, self.next_chunk_index);
                assert_eq!(creating.base_ordinal, self.durable_end);
                let durable = SlotHeader::empty(creating.chunk_index, creating.base_ordinal);
                self.chunk = Some(OpenChunk {
                    path: creating.path,
                    durable,
                    records_hasher: crc32fast::Hasher::new(),
                    first_commit_ms: None,
                });
                self.next_chunk_index = creating.chunk_index + 1;
                return Phase::Idle;
            }
        };
        Phase::Creating(creating)
    }

    fn committing_step_done(&mut self, mut committing: Committing) -> Phase {
        let chunk = self.chunk.as_ref().expect("a commit has an open chunk");
        let path = chunk.path.clone();
        committing.step = match committing.step {
            CommitStep::WriteRecords => {
                self.issue(DiskRequest::SyncFile { path });
                CommitStep::SyncRecords
            }
            CommitStep::SyncRecords => {
                self.issue(DiskRequest::WriteAt {
                    path,
                    offset: committing.header.slot_offset(),
                    bytes: Bytes::from(committing.header.to_slot_bytes()),
                });
                CommitStep::WriteSlot
            }
            CommitStep::WriteSlot => {
                self.issue(DiskRequest::SyncFile { path });
                CommitStep::SyncSlot
            }
            CommitStep::SyncSlot => {
                self.commit_done(committing);
                return Phase::Idle;
            }
        };
        Phase::Committing(committing)
    }

    fn commit_done(&mut self, committing: Committing) {
        let chunk = self.chunk.as_mut().expect("a commit has an open chunk");
        assert_eq!(
            committing.header.commit_sequence,
            chunk.durable.commit_sequence + 1
        );
        assert_eq!(
            committing.header.end_ordinal(),
            self.durable_end + u64::from(committing.record_count)
        );
        chunk.durable = committing.header;
        chunk.records_hasher = committing.records_hasher;
        self.durable_end = committing.header.end_ordinal();
        self.durable_position = Some(ManifestPosition {
            chunk_index: committing.header.chunk_index,
            chunk_offset: committing.header.committed_end(),
            record_ordinal: self.durable_end,
        });
        if committing.record_count > 0 {
            self.push_event(ManifestEvent::Committed {
                durable_ordinal: self.durable_end - 1,
            });
        }
        if committing.header.flags.sealed {
            let chunk = self.chunk.take().expect("checked above");
            self.push_event(ManifestEvent::ChunkSealed {
                chunk_index: committing.header.chunk_index,
                path: chunk.path,
            });
        }
    }

    fn resealing_step_done(&mut self, mut resealing: Resealing) -> Phase {
        let path = resealing.path.clone();
        resealing.step = match resealing.step {
            ResealStep::Truncate => {
                self.issue(DiskRequest::SyncFile { path });
                ResealStep::SyncTruncate
            }
            ResealStep::SyncTruncate => {
                self.issue(DiskRequest::WriteAt {
                    path,
                    offset: resealing.header.slot_offset(),
                    bytes: Bytes::from(resealing.header.to_slot_bytes()),
                });
                ResealStep::WriteSlot
            }
            ResealStep::WriteSlot => {
                self.issue(DiskRequest::SyncFile { path });
                ResealStep::SyncSlot
            }
            ResealStep::SyncSlot => {
                self.push_event(ManifestEvent::ChunkSealed {
                    chunk_index: resealing.header.chunk_index,
                    path,
                });
                return Phase::Idle;
            }
        };
        Phase::Resealing(resealing)
    }

    /// Starts the next piece of work if the writer is idle.
    fn advance(&mut self, now_ms: u64) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        assert!(self.poison.is_none(), "a poisoned writer is never idle");
        if let Some(tail) = self.reseal.take() {
            let header = SlotHeader {
                flags: ChunkFlags {
                    sealed: true,
                    ..tail.flags
                },
                commit_sequence: tail.commit_sequence + 1,
                ..tail
            };
            let path = self.chunk_path(tail.chunk_index);
            self.issue(DiskRequest::Truncate {
                path: path.clone(),
                length: tail.committed_end(),
            });
            self.phase = Phase::Resealing(Resealing {
                path,
                header,
                step: ResealStep::Truncate,
            });
            return;
        }
        let Some(chunk) = &self.chunk else {
            let chunk_index = self.next_chunk_index;
            let temp_path = self.dir.join(&chunk_temp_file_name(chunk_index));
            self.issue(DiskRequest::Create {
                path: temp_path.clone(),
            });
            self.phase = Phase::Creating(Creating {
                chunk_index,
                base_ordinal: self.durable_end,
                temp_path,
                path: self.chunk_path(chunk_index),
                step: CreateStep::Create,
            });
            return;
        };
        let commit_wanted = self.commit_target_end > self.durable_end;
        let rotation_due = chunk
            .first_commit_ms
            .is_some_and(|first| now_ms >= first.saturating_add(self.config.rotation_period_ms));
        if !commit_wanted && !rotation_due {
            return;
        }

        // Take the buffered records that fit in the chunk.
        let durable = chunk.durable;
        assert_eq!(durable.end_ordinal(), self.durable_end);
        if let Some(front) = self.buffered.front() {
            assert_eq!(
                front.ordinal, self.durable_end,
                "buffered records follow the durable ones"
            );
        }
        let capacity = u64::from(self.config.chunk_capacity_bytes);
        let room = capacity - durable.committed_end();
        let mut batch_bytes = 0u64;
        let mut batch_count = 0usize;
        for record in &self.buffered {
            let length = record.frame.len() as u64;
            if batch_bytes + length > room {
                break;
            }
            batch_bytes += length;
            batch_count += 1;
        }
        let overflow = batch_count < self.buffered.len();
        let seal = rotation_due || overflow;
        assert!(
            batch_count > 0 || seal,
            "a wanted commit has records, or the first one does not fit and seals"
        );
        let mut records =
            BytesMut::with_capacity(usize::try_from(batch_bytes).expect("a batch fits a chunk"));
        for record in self.buffered.drain(..batch_count) {
            records.extend_from_slice(&record.frame);
        }
        self.buffered_bytes -= batch_bytes;
        let records = records.freeze();
        let mut records_hasher = chunk.records_hasher.clone();
        records_hasher.update(&records);
        let record_count = u32::try_from(batch_count).expect("a batch fits a chunk");
        let header = SlotHeader {
            flags: ChunkFlags {
                sealed: seal,
                uploaded: false,
            },
            chunk_index: durable.chunk_index,
            base_ordinal: durable.base_ordinal,
            commit_sequence: durable.commit_sequence + 1,
            committed_length: durable.committed_length
                + u32::try_from(batch_bytes).expect("a batch fits a chunk"),
            record_count: durable.record_count + record_count,
            records_crc: records_hasher.clone().finalize(),
        };
        assert!(
            header.committed_end() <= capacity,
            "a commit never overflows its chunk"
        );
        let path = chunk.path.clone();
        let step = if record_count > 0 {
            let chunk = self.chunk.as_mut().expect("checked above");
            chunk.first_commit_ms.get_or_insert(now_ms);
            self.issue(DiskRequest::WriteAt {
                path,
                offset: durable.committed_end(),
                bytes: records.clone(),
            });
            CommitStep::WriteRecords
        } else {
            self.issue(DiskRequest::WriteAt {
                path,
                offset: header.slot_offset(),
                bytes: Bytes::from(header.to_slot_bytes()),
            });
            CommitStep::WriteSlot
        };
        self.phase = Phase::Committing(Committing {
            step,
            records,
            record_count,
            header,
            records_hasher,
        });
    }

    /// Checks the invariants of the module doc.
    pub fn check_invariants(&self) {
        assert!(self.events.len() <= MANIFEST_WRITER_EVENTS_MAX as usize);
        assert!(self.buffered_bytes <= MANIFEST_WRITER_BUFFERED_BYTES_MAX);
        assert_eq!(self.buffered.is_empty(), self.buffered_bytes == 0);
        assert!(self.commit_target_end <= self.next_ordinal);
        assert!(self.durable_end <= self.next_ordinal);
        if let Some(position) = &self.durable_position {
            assert_eq!(
                position.record_ordinal, self.durable_end,
                "the durable position ends at the durable ordinal"
            );
            assert!(
                position.chunk_index < self.next_chunk_index.max(1),
                "the durable position lies in a chunk already created"
            );
        }
        assert!(
            !(self.ready.is_some() && self.outstanding.is_some()),
            "one request at a time"
        );
        let request_under_way = self.ready.is_some() || self.outstanding.is_some();
        match &self.phase {
            Phase::Poisoned => {
                assert!(self.poison.is_some(), "poisoned phase without a failure");
                assert!(!request_under_way, "a poisoned writer issues nothing");
                return;
            }
            Phase::Idle => assert!(!request_under_way, "an idle writer has no request"),
            Phase::Resealing(_) | Phase::Creating(_) | Phase::Committing(_) => {
                assert!(request_under_way, "a phase under way has its request");
            }
        }
        assert!(self.poison.is_none());

        let in_flight = match &self.phase {
            Phase::Committing(committing) => u64::from(committing.record_count),
            _ => 0,
        };
        assert_eq!(
            self.next_ordinal,
            self.durable_end + in_flight + self.buffered.len() as u64,
            "every ordinal is durable, in flight or buffered"
        );
        if let (Some(front), Some(back)) = (self.buffered.front(), self.buffered.back()) {
            assert_eq!(front.ordinal, self.durable_end + in_flight);
            assert_eq!(back.ordinal, self.next_ordinal - 1);
        }

        let capacity = u64::from(self.config.chunk_capacity_bytes);
        match &self.phase {
            Phase::Creating(creating) => {
                assert!(self.chunk.is_none(), "creating while a chunk is open");
                assert!(self.reseal.is_none(), "the reseal comes first");
                assert_eq!(creating.chunk_index, self.next_chunk_index);
            }
            Phase::Committing(committing) => {
                let chunk = self.chunk.as_ref().expect("a commit has an open chunk");
                assert_eq!(committing.header.chunk_index, chunk.durable.chunk_index);
                assert_eq!(
                    committing.header.commit_sequence,
                    chunk.durable.commit_sequence + 1
                );
                assert_eq!(
                    committing.records.len() as u64 + chunk.durable.committed_end(),
                    committing.header.committed_end()
                );
                assert!(committing.header.committed_end() <= capacity);
            }
            Phase::Resealing(resealing) => {
                assert!(self.chunk.is_none(), "the reseal comes before any chunk");
                assert!(resealing.header.flags.sealed);
                assert!(resealing.header.chunk_index < self.next_chunk_index);
            }
            Phase::Idle | Phase::Poisoned => {}
        }
        if let Some(chunk) = &self.chunk {
            assert!(chunk.durable.committed_end() <= capacity);
            assert!(!chunk.durable.flags.sealed, "a sealed chunk is closed");
            assert_eq!(chunk.durable.chunk_index + 1, self.next_chunk_index);
            assert_eq!(chunk.durable.end_ordinal(), self.durable_end);
            assert_eq!(
                chunk.first_commit_ms.is_some(),
                chunk.durable.record_count > 0
                    || matches!(&self.phase, Phase::Committing(c) if c.record_count > 0)
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SegmentId;
    use crate::manifest::chunk::{decode_chunk, parse_chunk_file_name};
    use crate::manifest::index::tests::arb_stream_record;
    use crate::manifest::record::{DecodedFrame, RecordFrame};
    use crate::manifest::replay::{ReplayOutcome, Replayer};
    use crate::manifest::snapshot::Snapshot;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A disk in memory, for tests: executes [`DiskRequest`]s on a map of files.
    ///
    /// `files` is what a reader sees now; `synced` is each file's content as of its
    /// last `SyncFile` (what survives a crash that drops unsynced data). Renames and
    /// removes apply to both (the writer fsyncs a file before renaming it).
    #[derive(Debug, Clone, Default)]
    pub(crate) struct MemDisk {
        pub files: BTreeMap<LocalPath, Vec<u8>>,
        pub synced: BTreeMap<LocalPath, Vec<u8>>,
        /// Every request executed, in order.
        pub log: Vec<DiskRequest>,
        /// Request numbers (positions in `log`) that fail without taking effect.
        pub fail: BTreeSet<usize>,
    }

    impl MemDisk {
        pub(crate) fn execute(&mut self, request: &DiskRequest) -> DiskCompletion {
            let number = self.log.len();
            self.log.push(request.clone());
            if self.fail.contains(&number) {
                return DiskCompletion::Failed(DiskErrorKind::Io);
            }
            Self::apply(&mut self.files, &mut self.synced, request)
        }

        pub(crate) fn apply(
            files: &mut BTreeMap<LocalPath, Vec<u8>>,
            synced: &mut BTreeMap<LocalPath, Vec<u8>>,
            request: &DiskRequest,
        ) -> DiskCompletion {
            match request {
                // Directories are implicit in this model.
                DiskRequest::CreateDir { .. } => {}
                DiskRequest::Create { path } => {
                    files.insert(path.clone(), Vec::new());
                }
                DiskRequest::WriteAt {
                    path,
                    offset,
                    bytes,
                } => {
                    let file = files.entry(path.clone()).or_default();
                    let offset = *offset as usize;
                    if file.len() < offset + bytes.len() {
                        file.resize(offset + bytes.len(), 0);
                    }
                    file[offset..offset + bytes.len()].copy_from_slice(bytes);
                }
                DiskRequest::Truncate { path, length } => {
                    let Some(file) = files.get_mut(path) else {
                        return DiskCompletion::Failed(DiskErrorKind::NotFound);
                    };
                    file.resize(*length as usize, 0);
                }
                DiskRequest::SyncFile { path } => {
                    let Some(file) = files.get(path) else {
                        return DiskCompletion::Failed(DiskErrorKind::NotFound);
                    };
                    synced.insert(path.clone(), file.clone());
                }
                DiskRequest::SyncDir { .. } => {}
                DiskRequest::Rename { from, to } => {
                    let Some(file) = files.remove(from) else {
                        return DiskCompletion::Failed(DiskErrorKind::NotFound);
                    };
                    files.insert(to.clone(), file);
                    match synced.remove(from) {
                        Some(file) => synced.insert(to.clone(), file),
                        None => synced.remove(to),
                    };
                }
                DiskRequest::Remove { path } => {
                    files.remove(path);
                    synced.remove(path);
                }
                DiskRequest::ReadAt {
                    path,
                    offset,
                    length,
                } => {
                    let Some(file) = files.get(path) else {
                        return DiskCompletion::Failed(DiskErrorKind::NotFound);
                    };
                    let start = (*offset as usize).min(file.len());
                    let end = (start + *length as usize).min(file.len());
                    return DiskCompletion::Read(Bytes::copy_from_slice(&file[start..end]));
                }
                DiskRequest::ListDir { path } => {
                    let names = files
                        .keys()
                        .filter(|file| file.parent().as_ref() == Some(path))
                        .map(|file| file.file_name().to_owned())
                        .collect();
                    return DiskCompletion::Listed(names);
                }
                DiskRequest::Length { path } => {
                    let Some(file) = files.get(path) else {
                        return DiskCompletion::Failed(DiskErrorKind::NotFound);
                    };
                    return DiskCompletion::Length(file.len() as u64);
                }
            }
            DiskCompletion::Done
        }

        /// Carries out at most `limit` requests of `writer`, checking its invariants
        /// after each; returns how many ran.
        pub(crate) fn step(
            &mut self,
            writer: &mut ManifestWriter,
            now_ms: u64,
            limit: usize,
        ) -> usize {
            let mut ran = 0;
            while ran < limit {
                let Some((id, request)) = writer.poll_request() else {
                    break;
                };
                let completion = self.execute(&request);
                writer.handle_completion(now_ms, id, completion);
                writer.check_invariants();
                ran += 1;
            }
            ran
        }

        /// Carries out requests until the writer has none.
        pub(crate) fn run(&mut self, writer: &mut ManifestWriter, now_ms: u64) {
            self.step(writer, now_ms, usize::MAX);
        }
    }

    pub(crate) fn dir() -> LocalPath {
        LocalPath::from_components(&["streams", "s", "manifest"])
    }

    /// The chunk files of `dir` in `files`, by index.
    pub(crate) fn chunk_files(files: &BTreeMap<LocalPath, Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        files
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir()))
            .filter_map(|(path, bytes)| {
                parse_chunk_file_name(path.file_name()).map(|index| (index, bytes.clone()))
            })
            .collect()
    }

    /// Replays every chunk file of `files` (from `snapshot`, if given).
    pub(crate) fn replay_files(
        files: &BTreeMap<LocalPath, Vec<u8>>,
        snapshot: Option<Snapshot>,
    ) -> ReplayOutcome {
        let mut replayer = Replayer::new(snapshot);
        for (index, bytes) in chunk_files(files) {
            replayer.replay_chunk(0, index, &bytes).unwrap();
            replayer.check_invariants();
        }
        replayer.finish(0)
    }

    /// The known records of every chunk, decoded directly (no replay logic).
    pub(crate) fn decoded_records(files: &BTreeMap<LocalPath, Vec<u8>>) -> Vec<RecordFrame> {
        let mut out = Vec::new();
        for (index, bytes) in chunk_files(files) {
            let decoded = decode_chunk(index, &bytes);
            assert_eq!(decoded.corruptions, vec![], "chunk {index}");
            for frame in decoded.frames {
                if let DecodedFrame::Known(known) = frame.frame {
                    out.push(known);
                }
            }
        }
        out
    }

    fn small_config() -> ManifestWriterConfig {
        ManifestWriterConfig {
            chunk_capacity_bytes: MANIFEST_CHUNK_BYTES_MIN,
            rotation_period_ms: 100,
        }
    }

    fn new_writer(config: ManifestWriterConfig, disk: &mut MemDisk) -> ManifestWriter {
        let mut writer = ManifestWriter::new(config, dir(), WriterStart::fresh(), 0).unwrap();
        disk.run(&mut writer, 0);
        writer
    }

    fn custom(size: usize) -> ManifestRecord {
        ManifestRecord::CustomEvent {
            kind: 1,
            blob: Bytes::from(vec![7u8; size]),
        }
    }

    fn drain_events(writer: &mut ManifestWriter) -> Vec<ManifestEvent> {
        std::iter::from_fn(|| writer.poll_event()).collect()
    }

    #[test]
    fn config_out_of_range_is_refused() {
        for (capacity, period) in [
            (MANIFEST_CHUNK_BYTES_MIN - 1, 250),
            (MANIFEST_CHUNK_BYTES_MAX + 1, 250),
            (MANIFEST_CHUNK_BYTES_DEFAULT, 0),
            (
                MANIFEST_CHUNK_BYTES_DEFAULT,
                MANIFEST_ROTATION_PERIOD_MS_MAX + 1,
            ),
        ] {
            let config = ManifestWriterConfig {
                chunk_capacity_bytes: capacity,
                rotation_period_ms: period,
            };
            let error = ManifestWriter::new(config, dir(), WriterStart::fresh(), 0).unwrap_err();
            assert!(matches!(error, ManifestError::Config(_)), "{error}");
        }
        let error = ManifestWriterConfig {
            chunk_capacity_bytes: 1000,
            ..ManifestWriterConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "manifest chunk_capacity_bytes is 1000, it must be between 16384 and 1048576 bytes"
        );
        assert!(ManifestWriterConfig::default().validate().is_ok());
    }

    #[test]
    fn creation_and_commit_follow_the_durable_order() {
        let mut writer =
            ManifestWriter::new(small_config(), dir(), WriterStart::fresh(), 0).unwrap();
        let mut disk = MemDisk::default();
        disk.run(&mut writer, 0);
        assert_eq!(writer.append(5, &custom(3)).unwrap(), 0);
        assert_eq!(writer.append(5, &custom(4)).unwrap(), 1);
        assert_eq!(writer.durable_ordinal(), None);
        writer.commit(5).unwrap();
        disk.run(&mut writer, 6);
        assert_eq!(writer.durable_ordinal(), Some(1));
        assert_eq!(
            drain_events(&mut writer),
            vec![ManifestEvent::Committed { durable_ordinal: 1 }]
        );

        let temp = dir().join("00000000000000000000.mlog.tmp");
        let path = dir().join("00000000000000000000.mlog");
        let kinds: Vec<String> = disk
            .log
            .iter()
            .map(|request| match request {
                DiskRequest::Create { path } => format!("create {path}"),
                DiskRequest::WriteAt {
                    path,
                    offset,
                    bytes,
                } => {
                    format!("write {path} @{offset} +{}", bytes.len())
                }
                DiskRequest::SyncFile { path } => format!("sync {path}"),
                DiskRequest::Rename { from, to } => format!("rename {from} {to}"),
                DiskRequest::SyncDir { path } => format!("syncdir {path}"),
                other => format!("{other:?}"),
            })
            .collect();
        let frames = custom(3).frame_length() + custom(4).frame_length();
        assert_eq!(
            kinds,
            vec![
                format!("create {temp}"),
                format!("write {temp} @0 +1024"),
                format!("sync {temp}"),
                format!("rename {temp} {path}"),
                format!("syncdir {}", dir()),
                format!("write {path} @1024 +{frames}"),
                format!("sync {path}"),
                format!("write {path} @512 +512"),
                format!("sync {path}"),
            ]
        );
        let replayed = replay_files(&disk.files, None);
        assert_eq!(replayed.index.custom_event_count(), 2);
        assert_eq!(replayed.figures.corruption_events, 0);
    }

    #[test]
    fn commits_requested_in_flight_are_merged() {
        let mut disk = MemDisk::default();
        let mut writer = new_writer(small_config(), &mut disk);
        writer.append(1, &custom(1)).unwrap();
        writer.commit(1).unwrap();
        disk.step(&mut writer, 1, 1); // records written, not yet synced
        for _ in 0..5 {
            writer.append(2, &custom(1)).unwrap();
            writer.commit(2).unwrap();
        }
        disk.run(&mut writer, 3);
        let slot_writes = disk
            .log
            .iter()
            .filter(|request| matches!(request, DiskRequest::WriteAt { bytes, .. } if bytes.len() == 512))
            .count();
        assert_eq!(slot_writes, 2, "six commit calls, two commits");
        assert_eq!(writer.durable_ordinal(), Some(5));
        assert_eq!(
            drain_events(&mut writer),
            vec![ManifestEvent::Committed { durable_ordinal: 5 }],
            "consecutive Committed events coalesce"
        );
    }

    #[test]
    fn rotation_by_size_never_spans_chunks() {
        let mut disk = MemDisk::default();
        let mut writer = new_writer(small_config(), &mut disk);
        let record = custom(1000);
        let per_chunk =
            (MANIFEST_CHUNK_BYTES_MIN - MANIFEST_CHUNK_HEADER_AREA_BYTES) / record.frame_length();
        let total = per_chunk * 2 + 3;
        for _ in 0..total {
            writer.append(1, &record).unwrap();
        }
        writer.commit(1).unwrap();
        disk.run(&mut writer, 1);
        let events = drain_events(&mut writer);
        let sealed: Vec<u64> = events
            .iter()
            .filter_map(|event| match event {
                ManifestEvent::ChunkSealed { chunk_index, .. } => Some(*chunk_index),
                _ => None,
            })
            .collect();
        assert_eq!(sealed, vec![0, 1]);
        assert_eq!(writer.durable_ordinal(), Some(u64::from(total) - 1));
        for (index, bytes) in chunk_files(&disk.files) {
            assert!(
                bytes.len() <= MANIFEST_CHUNK_BYTES_MIN as usize,
                "chunk {index}"
            );
            let decoded = decode_chunk(index, &bytes);
            let expected = if index < 2 { per_chunk } else { 3 };
            assert_eq!(decoded.frames.len(), expected as usize, "chunk {index}");
            assert_eq!(decoded.commit.unwrap().flags.sealed, index < 2);
        }
        assert_eq!(decoded_records(&disk.files).len(), total as usize);
    }

    #[test]
    fn durable_position_follows_commits_and_a_snapshot_there_replays_the_same() {
        let mut disk = MemDisk::default();
        let mut writer = new_writer(small_config(), &mut disk);
        assert_eq!(writer.durable_position(), Some(ManifestPosition::START));
        assert!(writer.is_caught_up());
        let record = custom(1000);
        let per_chunk =
            (MANIFEST_CHUNK_BYTES_MIN - MANIFEST_CHUNK_HEADER_AREA_BYTES) / record.frame_length();
        let total = u64::from(per_chunk * 2 + 3);
        for _ in 0..total {
            writer.append(1, &record).unwrap();
        }
        assert!(!writer.is_caught_up(), "appended, not durable");
        assert_eq!(writer.durable_position(), Some(ManifestPosition::START));
        writer.commit(1).unwrap();
        disk.run(&mut writer, 1);
        assert!(writer.is_caught_up());
        let position = writer.durable_position().unwrap();
        let last = decode_chunk(2, &chunk_files(&disk.files)[2].1)
            .commit
            .unwrap();
        assert_eq!(
            position,
            ManifestPosition {
                chunk_index: 2,
                chunk_offset: last.committed_end(),
                record_ordinal: total,
            }
        );
        let full = replay_files(&disk.files, None);
        assert_eq!(full.position, position, "replay ends where the writer says");
        let snapshot = Snapshot::new(0, position, full.index.clone()).unwrap();
        let from_snapshot = replay_files(&disk.files, Some(snapshot));
        assert_eq!(from_snapshot.index, full.index);
        assert_eq!(from_snapshot.figures.records_applied, 0);
    }

    #[test]
    fn rotation_by_period_seals_after_the_first_commit() {
        let mut disk = MemDisk::default();
        let mut writer = new_writer(small_config(), &mut disk);
        assert_eq!(writer.poll_timeout(), None, "an empty chunk never rotates");
        writer.append(1000, &custom(1)).unwrap();
        writer.commit(1000).unwrap();
        disk.run(&mut writer, 1000);
        assert_eq!(writer.poll_timeout(), Some(1100));
        writer.handle_timeout(1099);
        assert!(writer.poll_request().is_none(), "not due yet");
        writer.append(1050, &custom(1)).unwrap(); // buffered, not requested
        writer.handle_timeout(1100);
        disk.run(&mut writer, 1100);
        assert_eq!(
            drain_events(&mut writer),
            vec![
                // The first commit's event coalesced with the sealing commit's.
                ManifestEvent::Committed { durable_ordinal: 1 },
                ManifestEvent::ChunkSealed {
                    chunk_index: 0,
                    path: dir().join("00000000000000000000.mlog"),
                },
            ]
        );
        assert_eq!(writer.poll_timeout(), None, "the next chunk is empty");
        let (index, bytes) = chunk_files(&disk.files).remove(0);
        let decoded = decode_chunk(index, &bytes);
        assert_eq!(decoded.frames.len(), 2);
        assert!(decoded.commit.unwrap().flags.sealed);
        assert_eq!(chunk_files(&disk.files).len(), 2, "chunk 1 was opened");
    }

    /// Sets up a writer whose next request (number 5, after the chunk creation) is the
    /// records write of a commit of two records.
    fn writer_with_pending_commit(disk: &mut MemDisk) -> ManifestWriter {
        let mut writer = new_writer(small_config(), disk);
        assert_eq!(disk.log.len(), 5, "creation takes five requests");
        writer.append(1, &custom(1)).unwrap();
        writer.append(1, &custom(2)).unwrap();
        writer.commit(1).unwrap();
        writer
    }

    fn assert_poisoned(writer: &mut ManifestWriter, operation: WriterOperation) {
        let failure = writer.poisoned().expect("poisoned").clone();
        assert_eq!(failure.operation, operation);
        assert_eq!(failure.kind, DiskErrorKind::Io);
        assert_eq!(
            drain_events(writer),
            vec![ManifestEvent::Poisoned {
                error: failure.clone()
            }]
        );
        assert_eq!(
            writer.append(2, &custom(1)),
            Err(ManifestError::Poisoned(failure.clone()))
        );
        assert_eq!(writer.commit(2), Err(ManifestError::Poisoned(failure)));
        writer.handle_timeout(10_000);
        assert_eq!(
            writer.poll_request(),
            None,
            "a poisoned writer issues nothing"
        );
        assert_eq!(writer.poll_timeout(), None);
        writer.check_invariants();
    }

    #[test]
    fn failed_write_poisons() {
        let mut disk = MemDisk::default();
        let mut writer = writer_with_pending_commit(&mut disk);
        disk.fail.insert(5);
        disk.run(&mut writer, 1);
        assert_poisoned(&mut writer, WriterOperation::WriteRecords);
        assert_eq!(writer.durable_ordinal(), None);
        let message = writer.poisoned().unwrap().to_string();
        assert!(message.contains("writing records"), "{message}");
        assert!(message.contains("00000000000000000000.mlog"), "{message}");
    }

    #[test]
    fn failed_fsync_poisons_and_is_never_retried() {
        for (failing, operation) in [
            (6, WriterOperation::SyncRecords),
            (7, WriterOperation::WriteSlot),
            (8, WriterOperation::SyncSlot),
        ] {
            let mut disk = MemDisk::default();
            let mut writer = writer_with_pending_commit(&mut disk);
            disk.fail.insert(failing);
            disk.run(&mut writer, 1);
            assert_eq!(
                disk.log.len(),
                failing + 1,
                "nothing after the failed request"
            );
            assert_poisoned(&mut writer, operation);
            assert_eq!(writer.durable_ordinal(), None, "never reported durable");
        }
    }

    #[test]
    fn failed_chunk_creation_poisons() {
        for (failing, operation) in [
            (0, WriterOperation::CreateChunk),
            (2, WriterOperation::SyncNewChunk),
            (3, WriterOperation::RenameChunk),
            (4, WriterOperation::SyncDirectory),
        ] {
            let mut disk = MemDisk {
                fail: [failing].into(),
                ..MemDisk::default()
            };
            let mut writer =
                ManifestWriter::new(small_config(), dir(), WriterStart::fresh(), 0).unwrap();
            disk.run(&mut writer, 0);
            assert_poisoned(&mut writer, operation);
        }
    }

    #[test]
    fn resume_reseals_an_unsealed_tail_and_cuts_its_garbage() {
        let mut disk = MemDisk::default();
        let mut writer = new_writer(small_config(), &mut disk);
        for size in [1, 2] {
            writer.append(1, &custom(size)).unwrap();
        }
        writer.commit(1).unwrap();
        disk.run(&mut writer, 1);
        // A crash while the next commit's records were being written.
        let path = dir().join("00000000000000000000.mlog");
        disk.files
            .get_mut(&path)
            .unwrap()
            .extend_from_slice(&[0x5A; 70]);
        drop(writer);

        let replayed = replay_files(&disk.files, None);
        assert_eq!(replayed.figures.journal_lag_bytes, 70);
        assert_eq!(replayed.figures.corruption_events, 0);
        let start = replayed.writer_start();
        assert_eq!(start.next_chunk_index, 1);
        assert_eq!(start.next_ordinal, 2);
        let reseal = start.reseal.expect("the tail is unsealed");
        assert_eq!(reseal.commit_sequence, 1);

        let mut writer = ManifestWriter::new(small_config(), dir(), start, 5).unwrap();
        let before = disk.log.len();
        disk.run(&mut writer, 5);
        assert!(matches!(
            disk.log[before],
            DiskRequest::Truncate { length, .. } if length == reseal.committed_end()
        ));
        assert_eq!(
            drain_events(&mut writer),
            vec![ManifestEvent::ChunkSealed {
                chunk_index: 0,
                path: path.clone()
            }]
        );
        assert_eq!(writer.append(6, &custom(3)).unwrap(), 2);
        writer.commit(6).unwrap();
        disk.run(&mut writer, 6);

        let replayed = replay_files(&disk.files, None);
        assert_eq!(
            replayed.figures.corruption_events, 0,
            "{:?}",
            replayed.corruptions
        );
        assert_eq!(replayed.figures.journal_lag_bytes, 0, "the garbage was cut");
        assert_eq!(replayed.index.custom_event_count(), 3);
        let chunk0 = decode_chunk(0, &disk.files[&path]);
        let commit = chunk0.commit.unwrap();
        assert!(commit.flags.sealed);
        assert_eq!(commit.commit_sequence, 2);
        assert_eq!(commit.record_count, 2);
    }

    #[test]
    fn invalid_start_is_refused() {
        let start = WriterStart {
            next_chunk_index: 3,
            next_ordinal: 0,
            reseal: Some(SlotHeader::empty(3, 0)),
        };
        let error = ManifestWriter::new(small_config(), dir(), start, 0).unwrap_err();
        assert!(
            matches!(error, ManifestError::InvalidStart { .. }),
            "{error}"
        );
        let overlapping = WriterStart {
            next_chunk_index: 4,
            next_ordinal: 1,
            reseal: Some(SlotHeader {
                commit_sequence: 1,
                committed_length: 64,
                record_count: 2,
                ..SlotHeader::empty(3, 0)
            }),
        };
        let error = ManifestWriter::new(small_config(), dir(), overlapping, 0).unwrap_err();
        assert!(error.to_string().contains("ends at ordinal 2"), "{error}");
    }

    #[test]
    fn a_full_buffer_refuses_appends_until_committed() {
        let mut disk = MemDisk::default();
        let mut writer = new_writer(small_config(), &mut disk);
        let record = custom(8000);
        let mut appended = 0u64;
        let error = loop {
            match writer.append(1, &record) {
                Ok(_) => appended += 1,
                Err(error) => break error,
            }
        };
        assert!(matches!(error, ManifestError::BufferFull { .. }), "{error}");
        assert!(appended * u64::from(record.frame_length()) <= MANIFEST_WRITER_BUFFERED_BYTES_MAX);
        writer.commit(1).unwrap();
        while disk.step(&mut writer, 1, 1) == 1 {
            drain_events(&mut writer); // the driver drains after every input
        }
        assert_eq!(writer.durable_ordinal(), Some(appended - 1));
        writer.append(2, &record).unwrap();
        let invalid = ManifestRecord::UploadDone {
            segment_id: SegmentId(1),
            key: String::new(),
            etag: String::new(),
            object_bytes: 0,
        };
        assert!(matches!(
            writer.append(2, &invalid),
            Err(ManifestError::InvalidRecord(_))
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(ManifestRecord),
        Commit,
        Tick(u64),
        Step(usize),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => arb_stream_record().prop_map(Op::Append),
            2 => (0usize..6000).prop_map(|size| Op::Append(custom(size))),
            2 => Just(Op::Commit),
            1 => (0u64..120).prop_map(Op::Tick),
            3 => (1usize..6).prop_map(Op::Step),
        ]
    }

    /// What a test driver saw of a writer: appended records and events.
    #[derive(Debug, Default)]
    struct Observed {
        appended: Vec<(u64, u64, ManifestRecord)>,
        durable: Option<u64>,
        sealed: Vec<u64>,
    }

    impl Observed {
        fn drain(&mut self, writer: &mut ManifestWriter) {
            while let Some(event) = writer.poll_event() {
                match event {
                    ManifestEvent::Committed { durable_ordinal } => {
                        assert!(self.durable < Some(durable_ordinal), "durability grows");
                        assert!(durable_ordinal < self.appended.len() as u64);
                        assert_eq!(
                            writer.durable_ordinal().map(|d| d >= durable_ordinal),
                            Some(true)
                        );
                        self.durable = Some(durable_ordinal);
                    }
                    ManifestEvent::ChunkSealed { chunk_index, path } => {
                        assert_eq!(
                            chunk_index,
                            self.sealed.len() as u64,
                            "chunks seal in order"
                        );
                        assert_eq!(path.file_name(), chunk_file_name(chunk_index));
                        self.sealed.push(chunk_index);
                    }
                    ManifestEvent::Poisoned { error } => panic!("unexpected failure: {error}"),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn writer_commits_exactly_what_was_appended(ops in proptest::collection::vec(arb_op(), 0..80)) {
            let config = small_config();
            let mut disk = MemDisk::default();
            let mut writer = ManifestWriter::new(config, dir(), WriterStart::fresh(), 0).unwrap();
            let mut observed = Observed::default();
            let mut now = 0;
            for op in ops {
                match op {
                    Op::Append(record) => {
                        let ordinal = writer.append(now, &record).unwrap();
                        prop_assert_eq!(ordinal, observed.appended.len() as u64);
                        observed.appended.push((ordinal, now, record));
                    }
                    Op::Commit => writer.commit(now).unwrap(),
                    Op::Tick(ms) => {
                        now += ms;
                        if writer.poll_timeout().is_some_and(|deadline| deadline <= now) {
                            writer.handle_timeout(now);
                        }
                    }
                    Op::Step(count) => {
                        disk.step(&mut writer, now, count);
                        // Acknowledged records survive a crash that drops unsynced data.
                        observed.drain(&mut writer);
                        let survived = replay_files(&disk.synced, None);
                        prop_assert_eq!(survived.figures.corruption_events, 0);
                        let durable_count = observed.durable.map_or(0, |d| d + 1);
                        prop_assert!(survived.index.next_ordinal() >= durable_count);
                    }
                }
                writer.check_invariants();
                observed.drain(&mut writer);
            }
            writer.commit(now).unwrap();
            disk.run(&mut writer, now);
            observed.drain(&mut writer);
            let appended = observed.appended.len() as u64;
            prop_assert_eq!(writer.durable_ordinal(), appended.checked_sub(1));
            prop_assert_eq!(observed.durable, appended.checked_sub(1));

            let replayed = replay_files(&disk.files, None);
            prop_assert_eq!(replayed.figures.corruption_events, 0);
            prop_assert_eq!(replayed.figures.journal_lag_bytes, 0);
            prop_assert_eq!(replayed.index.next_ordinal(), appended);
            let records = decoded_records(&disk.files);
            prop_assert_eq!(records.len() as u64, appended);
            for (frame, (ordinal, timestamp, record)) in records.iter().zip(&observed.appended) {
                prop_assert_eq!(frame.ordinal, *ordinal);
                prop_assert_eq!(frame.timestamp_ms, *timestamp);
                prop_assert_eq!(&frame.record, record);
            }
            let chunks = chunk_files(&disk.files);
            for (position, (index, bytes)) in chunks.iter().enumerate() {
                prop_assert_eq!(*index, position as u64);
                prop_assert!(bytes.len() <= config.chunk_capacity_bytes as usize);
                let sealed = decode_chunk(*index, bytes).commit.unwrap().flags.sealed;
                prop_assert_eq!(sealed, position + 1 < chunks.len(), "all but the last are sealed");
            }
            prop_assert_eq!(observed.sealed.len() + 1, chunks.len());
        }
    }

    /// The state of a disk after the first `count` requests of `log`, four ways:
    /// everything applied; only what was synced; the last write torn in half; and the
    /// last write persisted while every earlier unsynced write was lost (a disk may
    /// reorder writes between fsyncs).
    fn crash_views(
        log: &[DiskRequest],
        count: usize,
    ) -> Vec<(&'static str, BTreeMap<LocalPath, Vec<u8>>)> {
        let mut files = BTreeMap::new();
        let mut synced = BTreeMap::new();
        for request in &log[..count] {
            MemDisk::apply(&mut files, &mut synced, request);
        }
        let mut views = vec![("applied", files), ("synced", synced)];
        let Some(
            last @ DiskRequest::WriteAt {
                path,
                offset,
                bytes,
            },
        ) = count.checked_sub(1).map(|last| &log[last])
        else {
            return views;
        };
        let mut files = BTreeMap::new();
        let mut synced = BTreeMap::new();
        for request in &log[..count - 1] {
            MemDisk::apply(&mut files, &mut synced, request);
        }
        let torn = DiskRequest::WriteAt {
            path: path.clone(),
            offset: *offset,
            bytes: bytes.slice(..bytes.len() / 2),
        };
        let mut torn_files = files;
        MemDisk::apply(&mut torn_files, &mut BTreeMap::new(), &torn);
        views.push(("torn", torn_files));
        let mut reordered = synced;
        MemDisk::apply(&mut reordered, &mut BTreeMap::new(), last);
        views.push(("reordered", reordered));
        views
    }

    /// The highest record count a slot written by `request` makes visible.
    fn slot_end(request: &DiskRequest) -> Option<u64> {
        let DiskRequest::WriteAt {
            path,
            offset,
            bytes,
        } = request
        else {
            return None;
        };
        if bytes.len() != 512 || *offset >= 1024 {
            return None;
        }
        let index = parse_chunk_file_name(path.file_name())?;
        let mut area = vec![0u8; 1024];
        area[*offset as usize..*offset as usize + 512].copy_from_slice(bytes);
        let slot = u8::try_from(*offset / 512).unwrap();
        Some(SlotHeader::decode(&area, slot, index).ok()?.end_ordinal())
    }

    #[test]
    fn crash_at_every_request_keeps_exactly_the_committed_records() {
        // A run with commits, a rotation by size and one by period.
        let config = small_config();
        let mut disk = MemDisk::default();
        let mut writer = ManifestWriter::new(config, dir(), WriterStart::fresh(), 0).unwrap();
        let mut appended = Vec::new();
        let mut acked = vec![0u64]; // durable record count after each request
        let run = |writer: &mut ManifestWriter, disk: &mut MemDisk, acked: &mut Vec<u64>, now| {
            while disk.step(writer, now, 1) == 1 {
                acked.push(writer.durable_ordinal().map_or(0, |d| d + 1));
            }
        };
        run(&mut writer, &mut disk, &mut acked, 0);
        let script: Vec<(u64, Vec<usize>)> = vec![
            (1, vec![10, 20]),
            (2, vec![7000, 7000, 3000]),
            (3, vec![1]),
            (200, vec![5]),
            (201, vec![2, 2]),
        ];
        for (now, sizes) in script {
            for size in sizes {
                let record = custom(size);
                writer.append(now, &record).unwrap();
                appended.push(record);
            }
            writer.commit(now).unwrap();
            run(&mut writer, &mut disk, &mut acked, now);
            if writer
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now)
            {
                writer.handle_timeout(now);
                run(&mut writer, &mut disk, &mut acked, now);
            }
        }
        assert!(chunk_files(&disk.files).len() >= 3, "the script rotates");
        let log = disk.log.clone();
        assert_eq!(acked.len(), log.len() + 1);

        for count in 0..=log.len() {
            let upper = log[..count].iter().filter_map(slot_end).max().unwrap_or(0);
            for (view, files) in crash_views(&log, count) {
                let context = format!("crash after {count} requests, {view} view");
                let replayed = replay_files(&files, None);
                assert_eq!(
                    replayed.figures.corruption_events, 0,
                    "{context}: {:?}",
                    replayed.corruptions
                );
                let visible = replayed.index.next_ordinal();
                assert!(
                    visible >= acked[count],
                    "{context}: acknowledged records lost"
                );
                assert!(
                    visible <= upper,
                    "{context}: records visible without a slot"
                );
                let records: Vec<ManifestRecord> = decoded_records(&files)
                    .into_iter()
                    .map(|frame| frame.record)
                    .collect();
                assert_eq!(records, appended[..visible as usize].to_vec(), "{context}");

                // Resume: the writer reseals, continues, and nothing is lost or corrupt.
                let mut resumed_disk = MemDisk {
                    synced: files.clone(),
                    files,
                    ..MemDisk::default()
                };
                let mut resumed =
                    ManifestWriter::new(config, dir(), replayed.writer_start(), 1000).unwrap();
                resumed_disk.run(&mut resumed, 1000);
                assert_eq!(
                    resumed.append(1000, &custom(9)).unwrap(),
                    visible,
                    "{context}"
                );
                resumed.commit(1000).unwrap();
                resumed_disk.run(&mut resumed, 1000);
                assert_eq!(resumed.durable_ordinal(), Some(visible), "{context}");
                let again = replay_files(&resumed_disk.files, None);
                assert_eq!(
                    again.figures.corruption_events, 0,
                    "{context}: {:?}",
                    again.corruptions
                );
                assert_eq!(again.figures.journal_lag_bytes, 0, "{context}");
                assert_eq!(again.index.next_ordinal(), visible + 1, "{context}");
            }
        }
    }
}
