//! Reopening a stream whose manifest exists: rebuild the manifest index, recover the
//! segment files, and reconcile the two with the tiers (the crash may have happened
//! between any file operation and the manifest record that follows it).
//!
//! The steps, one disk request at a time (the stream machine's own recovery runs
//! between them with its own requests):
//!
//! 1. **Segments directory**: `CreateDir` (idempotent), so the stream can create files.
//! 2. **Snapshot**: unless [`StoreConfig::manifest_log_only`], list the snapshots
//!    directory and try the newest snapshot files (at most
//!    [`STORE_RECOVERY_SNAPSHOTS_TRIED_MAX`]): length, read, [`Snapshot::decode`]. A
//!    file that does not decode on two reads is skipped with a
//!    [`RecoveryEvent::SnapshotSkipped`] and the next older one is tried; with none,
//!    replay starts from nothing.
//! 3. **Replay**: every chunk from the snapshot's chunk on (all of them without a
//!    snapshot), in index order: length, read, [`Replayer::replay_chunk`]; then
//!    [`Replayer::finish`]. A chunk whose read finds corruption is read again, and
//!    of two reads that differ the one that decodes more is replayed (a read may
//!    return flipped bits the disk does not hold; a replay never trusts one such
//!    read). The figures are kept on the stream entry.
//! 4. **Listings**: the segments directory and the Tier 1 directory.
//! 5. **Stream**: [`StreamMachine::recover`] (listing, `current.sealed`, footers, tail
//!    scan, torn-tail truncation, rewrite and fsync), or, when the index knows a newer
//!    sealed segment than any file on disk (its file was evicted),
//!    [`StreamMachine::create`] of the segment after it. Its requests go through the
//!    ordinary `Route::Stream` routing.
//! 6. **Verify**: every sealed local segment file other than the active one is read
//!    whole and checked by [`SealedSegment::decode`] and against the index's seal. A
//!    corrupt one fails the open with [`StoreError::CorruptSegment`] (file and byte)
//!    unless Tier 2 holds the segment: then it is repaired (step 7 removes it, step 8
//!    journals `LocalEvicted`, reads hydrate from Tier 2) with a
//!    [`RecoveryEvent::SegmentRepaired`].
//! 7. **Clean up**: remove leftover temp files (manifest chunks, Tier 1 artifacts,
//!    snapshots), stray files the index no longer counts as local copies (a segment
//!    file whose Tier 0 copy the index has evicted; an artifact whose
//!    `CompressionDone` was never committed), and repaired segments; fsync each
//!    directory that lost a file.
//! 8. **Reconcile** (the stream becomes `Ready`; a [`ManifestWriter`] resumes at
//!    [`ReplayOutcome::writer_start`]):
//!    - a segment file the index does not know -> journal `SegmentOpened`; a sealed
//!      file whose seal the index lacks -> journal `SealSegment` and queue its
//!      compression after the commit, as the seal path does;
//!    - a local copy the index records whose file is gone -> journal `LocalEvicted`
//!      (Tier 0 or Tier 1);
//!    - Tier 0: `admit(Active)` the active segment, `admit(Recovered)` each sealed
//!      local one, `mark_durable_elsewhere` those whose upload is committed; Tier 1:
//!      `register_artifact` each artifact present, `mark_uploaded`,
//!      `set_resident_in_tier0`;
//!    - unfinished work resumes: a sealed local segment without an artifact is
//!      compressed; an artifact not yet uploaded is read and uploaded (Tier 2's
//!      conditional put and head make a repeated upload harmless).
//!
//!    The open is replied `Opened { next_offset }` once every record journaled here
//!    is committed (at once if none was needed).
//!
//! **Invariants** (checked by [`Recovering::check_invariants`])
//! - At most one store request of a recovering stream is in flight, and the stream
//!   machine runs only while none is.
//! - Nothing is removed that the index counts as a copy, except a corrupt segment
//!   whose Tier 2 upload is committed.
//! - Replay figures and corruptions come from the [`Replayer`]; the index it builds
//!   is never modified before the writer resumes at its position.
//! - At most [`STORE_RECOVERY_EVENTS_KEPT_MAX`] events are kept; all are counted.

use super::restore::RestorePlan;
use super::{
    AfterCommit, Phase, Route, Store, StoreConfig, StoreError, StoreOp, StoreReply, StreamEntry,
};
use crate::SegmentId;
use crate::io::{
    DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoId, IoRequest, LocalPath,
};
use crate::limits::{
    MANIFEST_CHUNK_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
    STORE_RECOVERY_EVENTS_KEPT_MAX, STORE_RECOVERY_SNAPSHOTS_TRIED_MAX,
    STORE_SNAPSHOT_FILE_BYTES_MAX,
};
use crate::manifest::chunk::{
    CHUNK_TEMP_FILE_SUFFIX, chunk_file_name, decode_chunk, more_trusted_chunk_read,
    parse_chunk_file_name,
};
use crate::manifest::index::{Lifecycle, ManifestIndex, SegmentEntry};
use crate::manifest::record::{ManifestRecord, ReasonCode, RecordType, Tier};
use crate::manifest::replay::{ReplayOutcome, Replayer};
use crate::manifest::snapshot::Snapshot;
use crate::manifest::writer::ManifestWriter;
use crate::names::{
    SegmentKey, StreamName, artifact_path, manifest_dir, parse_artifact_file_name,
    parse_segment_file_name, parse_snapshot_file_name, segment_path, segments_dir, snapshot_path,
    snapshots_dir, tier1_dir,
};
use crate::segment::{SealedSegment, SegmentFooter, SegmentHeader};
use crate::stream::{RecoveryReport, StreamEvent, StreamMachine};
use crate::tier0::AdmitKind;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Log target of the store's recovery events.
pub const LOG_TARGET_STORE: &str = "aof2::store";

/// Suffix of every temp file a durable write goes through.
const TEMP_SUFFIX: &str = ".tmp";

/// Something recovery found that an operator should see (log it under
/// [`LOG_TARGET_STORE`]; each is also counted in [`RecoverySummary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// A snapshot file did not decode; an older one or a full replay is used.
    SnapshotSkipped { path: String, reason: String },
    /// A corrupt sealed local segment was dropped; Tier 2 holds it.
    SegmentRepaired {
        path: String,
        position: u64,
        reason: String,
    },
    /// A restore found no object for an uploaded segment, with a retention policy
    /// configured, older than every object Tier 2 holds or below a gap the policy
    /// would have deleted through: retention deleted it (its `Tier2DeleteQueued` was
    /// in the lost unsealed chunk), and the restored stream starts after it.
    SegmentPresumedDeleted { key: String, segment_id: SegmentId },
    /// A restore found a segment object still present below such a gap: retention
    /// was deleting it when the disk was lost. Its deletion is queued again and the
    /// restored stream starts after it.
    SegmentDeletionRequeued { key: String, segment_id: SegmentId },
    /// A record the crash kept from being committed was journaled now.
    RecordJournaled {
        record: RecordType,
        segment_id: SegmentId,
    },
}

impl RecoveryEvent {
    /// The structured event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            RecoveryEvent::SnapshotSkipped { .. } => "store_snapshot_skipped",
            RecoveryEvent::SegmentRepaired { .. } => "store_segment_repaired",
            RecoveryEvent::RecordJournaled { .. } => "store_recovery_record_journaled",
            RecoveryEvent::SegmentPresumedDeleted { .. } => {
                "store_restore_segment_presumed_deleted"
            }
            RecoveryEvent::SegmentDeletionRequeued { .. } => {
                "store_restore_segment_deletion_requeued"
            }
        }
    }

    /// Emits the event to `tracing` under [`LOG_TARGET_STORE`], with the stream's
    /// name: `store_recovery_record_journaled` at INFO, the others at WARN.
    pub fn log(&self, stream: &StreamName) {
        const T: &str = LOG_TARGET_STORE;
        match self {
            RecoveryEvent::SnapshotSkipped { path, reason } => tracing::warn!(
                target: T,
                stream = %stream, path = %path, reason = %reason,
                "store_snapshot_skipped"
            ),
            RecoveryEvent::SegmentRepaired {
                path,
                position,
                reason,
            } => tracing::warn!(
                target: T,
                stream = %stream, path = %path, position, reason = %reason,
                "store_segment_repaired"
            ),
            RecoveryEvent::SegmentPresumedDeleted { key, segment_id } => tracing::warn!(
                target: T,
                stream = %stream, key = %key, segment_id = segment_id.0,
                "store_restore_segment_presumed_deleted"
            ),
            RecoveryEvent::SegmentDeletionRequeued { key, segment_id } => tracing::warn!(
                target: T,
                stream = %stream, key = %key, segment_id = segment_id.0,
                "store_restore_segment_deletion_requeued"
            ),
            RecoveryEvent::RecordJournaled { record, segment_id } => tracing::info!(
                target: T,
                stream = %stream, record = ?record, segment_id = segment_id.0,
                "store_recovery_record_journaled"
            ),
        }
    }
}

/// What reopening a stream found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoverySummary {
    /// The snapshot replay started from, if any.
    pub snapshot_id: Option<u64>,
    /// Snapshot files that did not decode.
    pub snapshots_skipped: u64,
    /// Manifest records journaled to catch the manifest up with the files.
    pub records_journaled: u64,
    /// Corrupt sealed local segments dropped in favour of their Tier 2 copy.
    pub segments_repaired: u64,
    /// Torn-tail bytes the stream cut from its newest segment.
    pub torn_tail_bytes_truncated: u64,
    /// Leftover temp files removed (the stream's and the store's).
    pub temp_files_removed: u64,
    /// Files the index no longer counts as copies, removed.
    pub stray_files_removed: u64,
    /// Compressions queued again.
    pub compressions_resumed: u64,
    /// Uploads started again.
    pub uploads_resumed: u64,
    /// The offset the next append gets.
    pub next_offset: u64,
    /// The local manifest was empty and the stream was restored from Tier 2
    /// (`store/restore.rs`).
    pub restored_from_tier2: bool,
    /// `manifest_log_only` was asked for, but the oldest local chunks were pruned
    /// (a snapshot covers them), so the newest snapshot was used after all.
    pub log_only_unavailable: bool,
    /// Manifest chunks a restore downloaded and wrote locally.
    pub chunks_restored: u64,
    /// Segments a restore took as deleted by retention: their objects were gone (see
    /// [`RecoveryEvent::SegmentPresumedDeleted`]).
    pub segments_presumed_deleted: u64,
    /// Segment objects a restore found below a retention gap and queued for deletion
    /// again (see [`RecoveryEvent::SegmentDeletionRequeued`]).
    pub segment_deletions_requeued: u64,
    /// Retention deletions the manifest held queued, carried on after the reopen.
    pub deletions_resumed: u64,
    /// Segments whose history a restore found in Tier 2 (adopted ones included); they
    /// have no local copy and are hydrated on read.
    pub segments_restored: u64,
    /// Segment objects a restore adopted: their `UploadDone` (and possibly their
    /// `SegmentOpened` and `SealSegment`) were in the lost unsealed manifest chunk and
    /// were journaled again from the artifact's header, footer and index.
    pub segments_adopted: u64,
    /// Every event counted.
    pub event_count: u64,
    /// The first [`STORE_RECOVERY_EVENTS_KEPT_MAX`] events, in order.
    pub events: Vec<RecoveryEvent>,
}

impl RecoverySummary {
    /// Counts `event`, keeps it if there is room, and logs it.
    pub(super) fn push(&mut self, stream: &StreamName, event: RecoveryEvent) {
        event.log(stream);
        self.event_count += 1;
        if self.events.len() < STORE_RECOVERY_EVENTS_KEPT_MAX {
            self.events.push(event);
        }
    }
}

/// One store request of a recovering stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RecoveryOp {
    CreateSegmentsDir,
    ListSnapshots,
    SnapshotLength(u64),
    ReadSnapshot(u64),
    /// The snapshot read again: the first read did not decode, and a snapshot is
    /// never skipped on one read.
    ConfirmSnapshot(u64),
    ChunkLength(u64),
    ReadChunk(u64),
    /// The chunk read again: the first read found corruption, and a replay never
    /// trusts one read that did (a read may return flipped bits the disk does not
    /// hold).
    ConfirmChunk(u64),
    ListSegments,
    ListArtifacts,
    SegmentLength(SegmentId),
    ReadSegment(SegmentId),
    Remove(LocalPath),
    SyncDir(LocalPath),
}

impl RecoveryOp {
    fn what(&self) -> &'static str {
        match self {
            RecoveryOp::CreateSegmentsDir => "create segments directory",
            RecoveryOp::ListSnapshots => "list snapshots",
            RecoveryOp::SnapshotLength(_) => "snapshot length",
            RecoveryOp::ReadSnapshot(_) => "read snapshot",
            RecoveryOp::ConfirmSnapshot(_) => "read snapshot again",
            RecoveryOp::ChunkLength(_) => "manifest chunk length",
            RecoveryOp::ReadChunk(_) => "read manifest chunk",
            RecoveryOp::ConfirmChunk(_) => "read manifest chunk again",
            RecoveryOp::ListSegments => "list segments",
            RecoveryOp::ListArtifacts => "list Tier 1 artifacts",
            RecoveryOp::SegmentLength(_) => "sealed segment length",
            RecoveryOp::ReadSegment(_) => "read sealed segment",
            RecoveryOp::Remove(_) => "remove leftover file",
            RecoveryOp::SyncDir(_) => "fsync directory",
        }
    }
}

/// A sealed local segment file, as verification found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verified {
    Sound {
        header: SegmentHeader,
        footer: SegmentFooter,
    },
    /// Corrupt, and Tier 2 holds the segment: the file is dropped.
    Repaired,
}

/// The sub-state of [`Phase::Recovering`].
#[derive(Debug)]
pub(super) struct Recovering {
    /// The store request in flight, if any.
    expected: Option<RecoveryOp>,
    /// Manifest chunk indexes on disk, ascending.
    chunks: Vec<u64>,
    /// Snapshot ids still to try, ascending (the newest is tried first).
    snapshots: Vec<u64>,
    /// One past the highest snapshot id found on disk: new snapshots never reuse an
    /// id (the newest id is what the next recovery tries first).
    next_snapshot_id: u64,
    snapshots_tried: usize,
    replayer: Option<Replayer>,
    /// Position in `chunks` of the next chunk to replay.
    chunk_cursor: usize,
    /// The first read of the chunk being read again.
    first_chunk_read: Option<Bytes>,
    outcome: Option<ReplayOutcome>,
    segment_files: BTreeSet<SegmentId>,
    artifact_files: BTreeSet<SegmentId>,
    /// The stream machine, once started.
    stream: Option<StreamMachine>,
    /// The stream machine is open and the files are being verified and cleaned.
    files_started: bool,
    /// `SegmentOpened` times the stream reported while recovering.
    opened_at_ms: BTreeMap<SegmentId, u64>,
    to_verify: VecDeque<SegmentId>,
    verified: BTreeMap<SegmentId, Verified>,
    removals: VecDeque<LocalPath>,
    dirs_to_sync: BTreeSet<LocalPath>,
    summary: RecoverySummary,
    /// The highest snapshot id listed locally.
    newest_snapshot_id: Option<u64>,
    /// Set when the files were just restored from Tier 2: what the restore decided.
    restore: Option<RestorePlan>,
}

impl Recovering {
    /// Delivers a completion of the stream machine.
    pub(super) fn handle_stream_completion(
        &mut self,
        now_ms: u64,
        local: IoId,
        completion: IoCompletion,
    ) {
        let stream = self
            .stream
            .as_mut()
            .expect("stream requests are routed only once the stream machine runs");
        stream.handle_completion(now_ms, local, completion);
    }

    pub(super) fn check_invariants(&self, name: &StreamName) {
        if let Some(stream) = &self.stream {
            assert_eq!(
                stream.stream(),
                name,
                "a stream machine sits under its name"
            );
            stream.check_invariants();
        }
        if let Some(replayer) = &self.replayer {
            replayer.check_invariants();
            assert!(self.outcome.is_none(), "replay finishes once");
        }
        if let Some(outcome) = &self.outcome {
            outcome.index.check_invariants();
        }
        assert!(
            self.expected.is_none() || self.stream.as_ref().is_none_or(StreamMachine::is_open),
            "store requests wait while the stream machine recovers"
        );
        assert!(self.chunk_cursor <= self.chunks.len());
        assert!(self.chunks.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(self.snapshots_tried <= STORE_RECOVERY_SNAPSHOTS_TRIED_MAX);
        assert!(self.summary.events.len() <= STORE_RECOVERY_EVENTS_KEPT_MAX);
        assert!(self.summary.event_count >= self.summary.events.len() as u64);
    }

    fn index(&self) -> &ManifestIndex {
        &self
            .outcome
            .as_ref()
            .expect("the manifest is replayed before the files are looked at")
            .index
    }
}

/// What to do after a recovery step.
enum Next {
    Issue(RecoveryOp, DiskRequest),
    StartStream,
    Ready,
}

fn disk_error(stream: &StreamName, op: &RecoveryOp, completion: &DiskCompletion) -> StoreError {
    StoreError::Disk {
        stream: stream.as_str().to_owned(),
        what: op.what(),
        reason: format!("{completion:?}"),
    }
}

fn recovery_error(stream: &StreamName, reason: String) -> StoreError {
    StoreError::Recovery {
        stream: stream.as_str().to_owned(),
        reason,
    }
}

impl Store {
    /// `OpenStream` found manifest files: start reopening the stream.
    pub(super) fn start_recovery(
        &mut self,
        now_ms: u64,
        stream: &StreamName,
        names: &[String],
        restore: Option<RestorePlan>,
    ) {
        let directory = manifest_dir(stream);
        let mut chunks = Vec::new();
        let mut removals = VecDeque::new();
        for name in names {
            if !LocalPath::component_is_valid(name) {
                continue; // Not ours; never made into a path.
            }
            if let Some(chunk_index) = parse_chunk_file_name(name) {
                chunks.push(chunk_index);
            } else if name.ends_with(CHUNK_TEMP_FILE_SUFFIX) {
                removals.push_back(directory.join(name));
            }
        }
        chunks.sort_unstable();
        let recovering = Recovering {
            expected: None,
            chunks,
            snapshots: Vec::new(),
            next_snapshot_id: 0,
            snapshots_tried: 0,
            replayer: None,
            chunk_cursor: 0,
            first_chunk_read: None,
            outcome: None,
            segment_files: BTreeSet::new(),
            artifact_files: BTreeSet::new(),
            stream: None,
            files_started: false,
            opened_at_ms: BTreeMap::new(),
            to_verify: VecDeque::new(),
            verified: BTreeMap::new(),
            removals,
            dirs_to_sync: BTreeSet::new(),
            summary: restore
                .as_ref()
                .map(|plan| plan.summary.clone())
                .unwrap_or_default(),
            newest_snapshot_id: None,
            restore,
        };
        let Some(entry) = self.streams.get_mut(stream) else {
            return;
        };
        entry.phase = Phase::Recovering(recovering);
        let _ = now_ms;
        self.issue_recovery(
            stream,
            RecoveryOp::CreateSegmentsDir,
            DiskRequest::CreateDir {
                path: segments_dir(stream),
            },
        );
    }

    fn issue_recovery(&mut self, stream: &StreamName, op: RecoveryOp, request: DiskRequest) {
        let Some(StreamEntry {
            phase: Phase::Recovering(recovering),
            ..
        }) = self.streams.get_mut(stream)
        else {
            unreachable!("issued while recovering");
        };
        assert!(
            recovering.expected.is_none(),
            "one recovery request at a time"
        );
        recovering.expected = Some(op.clone());
        self.route(
            Route::Store(stream.clone(), StoreOp::Recovery(op)),
            IoRequest::Disk(request),
        );
    }

    pub(super) fn handle_recovery_completion(
        &mut self,
        now_ms: u64,
        stream: &StreamName,
        op: RecoveryOp,
        completion: IoCompletion,
    ) {
        let config = self.config;
        let Some(StreamEntry {
            phase: Phase::Recovering(recovering),
            ..
        }) = self.streams.get_mut(stream)
        else {
            return; // The open already failed; a late completion.
        };
        if recovering.expected.as_ref() != Some(&op) {
            return; // Issued for an earlier open of this name that failed.
        }
        recovering.expected = None;
        let IoCompletion::Disk(completion) = completion else {
            panic!("recovery op {op:?} got a non-disk completion {completion:?}");
        };
        let next = advance(&config, now_ms, stream, recovering, &op, completion);
        self.follow(now_ms, stream, next);
    }

    fn follow(&mut self, now_ms: u64, stream: &StreamName, next: Result<Next, StoreError>) {
        match next {
            Ok(Next::Issue(op, request)) => self.issue_recovery(stream, op, request),
            Ok(Next::StartStream) => {
                let config = self.config.stream;
                let Some(StreamEntry {
                    phase: Phase::Recovering(recovering),
                    ..
                }) = self.streams.get_mut(stream)
                else {
                    unreachable!("started while recovering");
                };
                match choose_stream_start(stream, recovering) {
                    Ok(None) => {
                        recovering.stream =
                            Some(StreamMachine::recover(config, stream.clone(), now_ms, None));
                    }
                    Ok(Some((segment_id, base_offset))) => {
                        recovering.stream = Some(StreamMachine::create(
                            config,
                            stream.clone(),
                            now_ms,
                            segment_id,
                            base_offset,
                        ));
                    }
                    Err(error) => self.fail_opening(stream, error),
                }
            }
            Ok(Next::Ready) => self.finish_recovery(now_ms, stream),
            Err(error) => self.fail_opening(stream, error),
        }
    }

    /// Drains the recovering stream machine; true if anything moved.
    pub(super) fn pump_recovering(&mut self, now_ms: u64, name: &StreamName) -> bool {
        let mut requests = Vec::new();
        let mut failure = None;
        let opened;
        {
            let Some(StreamEntry {
                phase: Phase::Recovering(recovering),
                ..
            }) = self.streams.get_mut(name)
            else {
                return false;
            };
            let Some(stream) = recovering.stream.as_mut() else {
                return false;
            };
            while let Some((local, request)) = stream.poll_request() {
                requests.push((Route::Stream(name.clone(), local), request));
            }
            while let Some(event) = stream.poll_event() {
                event.log(name);
                match event {
                    StreamEvent::Recovered(RecoveryReport {
                        truncated_bytes,
                        removed_temp_files,
                        ..
                    }) => {
                        recovering.summary.torn_tail_bytes_truncated += truncated_bytes;
                        recovering.summary.temp_files_removed += u64::from(removed_temp_files);
                    }
                    StreamEvent::SegmentOpened {
                        segment_id,
                        opened_at_ms,
                        ..
                    } => {
                        recovering.opened_at_ms.insert(segment_id, opened_at_ms);
                    }
                    StreamEvent::Poisoned(cause) => {
                        failure = Some(StoreError::StreamFailed {
                            stream: name.as_str().to_owned(),
                            reason: cause.to_string(),
                        });
                    }
                    // Sealed files are verified from disk; durability is reported once
                    // the stream runs.
                    StreamEvent::Sealed(_)
                    | StreamEvent::Durable { .. }
                    | StreamEvent::FlushFailed { .. } => {}
                }
            }
            opened = failure.is_none() && stream.is_open() && !recovering.files_started;
            if opened {
                recovering.files_started = true;
            }
        }
        let moved = !requests.is_empty() || failure.is_some() || opened;
        for (route, request) in requests {
            self.route(route, request);
        }
        if let Some(error) = failure {
            self.fail_opening(name, error);
            return true;
        }
        if opened {
            let next = {
                let Some(StreamEntry {
                    phase: Phase::Recovering(recovering),
                    ..
                }) = self.streams.get_mut(name)
                else {
                    unreachable!("still recovering");
                };
                start_verify(name, recovering)
            };
            self.follow(now_ms, name, next);
        }
        moved
    }

    /// Every file is looked at: the stream becomes `Ready` and the index is
    /// reconciled with what exists.
    fn finish_recovery(&mut self, now_ms: u64, name: &StreamName) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let Phase::Recovering(recovering) = std::mem::replace(&mut entry.phase, Phase::Probing)
        else {
            unreachable!("finished while recovering");
        };
        let mut recovering = recovering;
        let outcome = recovering.outcome.take().expect("replayed");
        let stream = recovering.stream.take().expect("the stream recovered");
        let plan = match plan_reconcile(name, &recovering, &outcome.index, &stream) {
            Ok(plan) => plan,
            Err(error) => return self.fail_opening(name, error),
        };
        let writer_start = outcome.writer_start();
        // Every local chunk below the writer's first is sealed, except the one it
        // reseals (which it reports sealed itself once that is durable).
        let resealed = writer_start.reseal.map(|commit| commit.chunk_index);
        let sealed_chunks: Vec<u64> = recovering
            .chunks
            .iter()
            .copied()
            .filter(|&chunk| chunk < writer_start.next_chunk_index && Some(chunk) != resealed)
            .collect();
        let manifest = match ManifestWriter::new(
            self.config.manifest,
            manifest_dir(name),
            writer_start,
            now_ms,
        ) {
            Ok(manifest) => manifest,
            Err(error) => {
                let error = StoreError::Manifest {
                    stream: name.as_str().to_owned(),
                    reason: error.to_string(),
                };
                return self.fail_opening(name, error);
            }
        };
        let next_offset = stream
            .next_offset()
            .expect("a recovered stream is open and has a next offset");
        recovering.summary.next_offset = next_offset;
        // New snapshots take ids above every one that exists, locally or in Tier 2.
        let newest_snapshot_id = recovering
            .newest_snapshot_id
            .max(
                recovering
                    .restore
                    .as_ref()
                    .and_then(|plan| plan.newest_snapshot_id),
            )
            .max(
                outcome
                    .index
                    .last_snapshot()
                    .map(|marker| marker.snapshot_id),
            );
        let entry = self.streams.get_mut(name).expect("looked up above");
        entry
            .snapshots
            .resume_after(newest_snapshot_id, outcome.index.next_ordinal());
        entry.replay_figures = Some(outcome.figures);
        let marked = outcome
            .index
            .last_snapshot()
            .map_or(0, |marker| marker.snapshot_id + 1);
        entry
            .snapshots
            .resume_ids_from(recovering.next_snapshot_id.max(marked));
        entry.phase = Phase::Ready {
            stream,
            manifest,
            index: outcome.index,
        };
        self.adopt_sealed_chunks(name, &sealed_chunks);
        let mut summary = recovering.summary;
        let last = self.apply_reconcile(now_ms, name, plan, &mut summary);
        summary.deletions_resumed = self.resume_deletions(now_ms, name);
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        entry.recovery = Some(summary);
        if !matches!(entry.phase, Phase::Ready { .. }) {
            return; // Journaling failed; the stream failed and replied.
        }
        match last {
            Some(ordinal) => entry.open_ordinal = Some(ordinal),
            None => {
                if let Some(token) = entry.open_token.take() {
                    self.reply(
                        token,
                        StoreReply::Opened {
                            stream: name.clone(),
                            next_offset,
                        },
                    );
                }
            }
        }
    }

    /// Journals `record` during reconciliation; returns its ordinal.
    fn journal_recovered(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        record: &ManifestRecord,
        summary: &mut RecoverySummary,
        last: &mut Option<u64>,
    ) -> Option<u64> {
        let ordinal = self.journal(now_ms, name, record)?;
        summary.records_journaled += 1;
        let segment_id = record
            .segment_id()
            .expect("recovery journals segment records only");
        summary.push(
            name,
            RecoveryEvent::RecordJournaled {
                record: record.record_type(),
                segment_id,
            },
        );
        *last = Some(ordinal);
        Some(ordinal)
    }

    fn apply_reconcile(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        plan: Plan,
        summary: &mut RecoverySummary,
    ) -> Option<u64> {
        let mut last = None;
        let header_bytes = u64::from(SEGMENT_HEADER_BYTES);
        for action in plan.actions {
            if !matches!(
                self.streams.get(name).map(|entry| &entry.phase),
                Some(Phase::Ready { .. })
            ) {
                break; // A journal failure failed the stream.
            }
            match action {
                Action::Journal(record) => {
                    self.journal_recovered(now_ms, name, &record, summary, &mut last);
                }
                Action::AdmitActive(segment_id) => {
                    let key = SegmentKey::new(name.clone(), segment_id);
                    if let Err(error) =
                        self.tier0
                            .admit(now_ms, key, header_bytes, AdmitKind::Active)
                    {
                        panic!("an active segment is always admitted: {error}");
                    }
                }
                Action::Seal {
                    segment_id,
                    record,
                    bytes,
                } => {
                    if let Some(ordinal) =
                        self.journal_recovered(now_ms, name, &record, summary, &mut last)
                    {
                        self.after_commit(name, ordinal, AfterCommit::Sealed { segment_id, bytes });
                        summary.compressions_resumed += 1;
                    }
                }
                Action::AdmitRecovered(segment_id, bytes) => {
                    let key = SegmentKey::new(name.clone(), segment_id);
                    if let Err(error) = self.tier0.admit(now_ms, key, bytes, AdmitKind::Recovered) {
                        panic!("a recovered segment is always admitted: {error}");
                    }
                }
                Action::RegisterArtifact {
                    segment_id,
                    bytes,
                    uploaded,
                } => {
                    let key = SegmentKey::new(name.clone(), segment_id);
                    if let Err(error) = self.tier1.register_artifact(now_ms, key, bytes, uploaded) {
                        panic!("a listed artifact registers once, before any Tier 1 work: {error}");
                    }
                }
                Action::ResidentInTier0(segment_id) => {
                    let key = SegmentKey::new(name.clone(), segment_id);
                    self.tier1.set_resident_in_tier0(&key);
                }
                Action::Uploaded {
                    segment_id,
                    in_tier0,
                } => {
                    let key = SegmentKey::new(name.clone(), segment_id);
                    if in_tier0 {
                        self.tier0
                            .mark_durable_elsewhere(&key)
                            .expect("admitted just before");
                    }
                    self.tier1.mark_uploaded(&key);
                }
                Action::Compress(segment_id, bytes) => {
                    let key = SegmentKey::new(name.clone(), segment_id);
                    summary.compressions_resumed += 1;
                    if self.tier1.enqueue_compression(now_ms, key, bytes).is_err() {
                        // As on the seal path: the segment stays in Tier 0 only.
                        let record = ManifestRecord::CompressionFailed {
                            segment_id,
                            job_id: 0,
                            reason: ReasonCode::Unspecified,
                            attempt: 0,
                        };
                        self.journal_recovered(now_ms, name, &record, summary, &mut last);
                    }
                }
                Action::Upload(segment_id, compressed_bytes) => {
                    summary.uploads_resumed += 1;
                    self.read_artifact(name.clone(), segment_id, compressed_bytes, 1);
                }
            }
        }
        last
    }
}

/// Takes one recovery step's result; says what comes next.
fn advance(
    config: &StoreConfig,
    now_ms: u64,
    stream: &StreamName,
    recovering: &mut Recovering,
    op: &RecoveryOp,
    completion: DiskCompletion,
) -> Result<Next, StoreError> {
    match (op, completion) {
        (RecoveryOp::CreateSegmentsDir, DiskCompletion::Done) => {
            // Log-only replays every chunk from the first; once local chunk retention
            // pruned chunks a snapshot covers, only the snapshot path can see them.
            let whole_log = recovering.chunks.first().is_none_or(|&first| first == 0);
            if config.manifest_log_only && !whole_log {
                recovering.summary.log_only_unavailable = true;
            }
            if config.manifest_log_only && whole_log {
                recovering.replayer = Some(Replayer::new(None));
                return Ok(next_chunk(now_ms, stream, recovering));
            }
            Ok(Next::Issue(
                RecoveryOp::ListSnapshots,
                DiskRequest::ListDir {
                    path: snapshots_dir(stream),
                },
            ))
        }
        (RecoveryOp::ListSnapshots, listing) => {
            let names = match listing {
                DiskCompletion::Listed(names) => names,
                DiskCompletion::Failed(DiskErrorKind::NotFound) => Vec::new(),
                other => return Err(disk_error(stream, op, &other)),
            };
            let directory = snapshots_dir(stream);
            for name in &names {
                if !LocalPath::component_is_valid(name) {
                    continue;
                }
                if let Ok(snapshot_id) = parse_snapshot_file_name(name) {
                    recovering.snapshots.push(snapshot_id);
                    recovering.newest_snapshot_id =
                        recovering.newest_snapshot_id.max(Some(snapshot_id));
                } else if name.ends_with(TEMP_SUFFIX) {
                    recovering.removals.push_back(directory.join(name));
                }
            }
            recovering.snapshots.sort_unstable();
            if let Some(newest) = recovering.snapshots.last() {
                recovering.next_snapshot_id = newest + 1;
            }
            Ok(next_snapshot(now_ms, stream, recovering))
        }
        (RecoveryOp::SnapshotLength(snapshot_id), DiskCompletion::Length(length)) => {
            if length > STORE_SNAPSHOT_FILE_BYTES_MAX {
                let reason = format!(
                    "{length} bytes exceeds the limit of {STORE_SNAPSHOT_FILE_BYTES_MAX} bytes"
                );
                skip_snapshot(stream, recovering, *snapshot_id, reason);
                return Ok(next_snapshot(now_ms, stream, recovering));
            }
            Ok(Next::Issue(
                RecoveryOp::ReadSnapshot(*snapshot_id),
                DiskRequest::ReadAt {
                    path: snapshot_path(stream, *snapshot_id),
                    offset: 0,
                    length,
                },
            ))
        }
        (
            RecoveryOp::ReadSnapshot(snapshot_id) | RecoveryOp::ConfirmSnapshot(snapshot_id),
            DiskCompletion::Read(bytes),
        ) => match Snapshot::decode(&bytes) {
            Ok(snapshot) if snapshot.snapshot_id() == *snapshot_id => {
                let chunk_index = snapshot.position().chunk_index;
                recovering.chunk_cursor = recovering
                    .chunks
                    .partition_point(|&index| index < chunk_index);
                recovering.summary.snapshot_id = Some(*snapshot_id);
                recovering.replayer = Some(Replayer::new(Some(snapshot)));
                Ok(next_chunk(now_ms, stream, recovering))
            }
            Ok(snapshot) => {
                let reason = format!(
                    "the file holds snapshot {} (its name says {snapshot_id})",
                    snapshot.snapshot_id()
                );
                skip_snapshot(stream, recovering, *snapshot_id, reason);
                Ok(next_snapshot(now_ms, stream, recovering))
            }
            Err(_) if matches!(op, RecoveryOp::ReadSnapshot(_)) => Ok(Next::Issue(
                RecoveryOp::ConfirmSnapshot(*snapshot_id),
                DiskRequest::ReadAt {
                    path: snapshot_path(stream, *snapshot_id),
                    offset: 0,
                    length: bytes.len() as u64,
                },
            )),
            Err(error) => {
                skip_snapshot(stream, recovering, *snapshot_id, error.to_string());
                Ok(next_snapshot(now_ms, stream, recovering))
            }
        },
        // A snapshot that vanished between the listing and the read: try the next.
        (
            RecoveryOp::SnapshotLength(_)
            | RecoveryOp::ReadSnapshot(_)
            | RecoveryOp::ConfirmSnapshot(_),
            DiskCompletion::Failed(DiskErrorKind::NotFound),
        ) => Ok(next_snapshot(now_ms, stream, recovering)),
        (RecoveryOp::ChunkLength(chunk_index), DiskCompletion::Length(length)) => Ok(Next::Issue(
            RecoveryOp::ReadChunk(*chunk_index),
            DiskRequest::ReadAt {
                path: manifest_dir(stream).join(&chunk_file_name(*chunk_index)),
                offset: 0,
                // A longer file is cut at the limit; the chunk decoder judges it.
                length: length.min(u64::from(MANIFEST_CHUNK_BYTES_MAX)),
            },
        )),
        (
            RecoveryOp::ReadChunk(chunk_index) | RecoveryOp::ConfirmChunk(chunk_index),
            DiskCompletion::Read(bytes),
        ) => {
            let decoded = match recovering.first_chunk_read.take() {
                None => {
                    let decoded = decode_chunk(*chunk_index, &bytes);
                    if !decoded.corruptions.is_empty() {
                        let length = bytes.len() as u64;
                        recovering.first_chunk_read = Some(bytes);
                        return Ok(Next::Issue(
                            RecoveryOp::ConfirmChunk(*chunk_index),
                            DiskRequest::ReadAt {
                                path: manifest_dir(stream).join(&chunk_file_name(*chunk_index)),
                                offset: 0,
                                length,
                            },
                        ));
                    }
                    decoded
                }
                Some(first) => {
                    let (trusted, _) = more_trusted_chunk_read(*chunk_index, first, bytes);
                    decode_chunk(*chunk_index, &trusted)
                }
            };
            let replayer = recovering.replayer.as_mut().expect("replay started");
            replayer
                .replay_decoded(now_ms, decoded)
                .expect("chunks are replayed in increasing index order (sorted listing)");
            recovering.chunk_cursor += 1;
            Ok(next_chunk(now_ms, stream, recovering))
        }
        (RecoveryOp::ListSegments, listing) => {
            for name in listed(stream, op, listing)? {
                if let Ok(segment_id) = parse_segment_file_name(&name) {
                    recovering.segment_files.insert(segment_id);
                }
                // Temp files here are the stream machine's to remove.
            }
            Ok(Next::Issue(
                RecoveryOp::ListArtifacts,
                DiskRequest::ListDir {
                    path: tier1_dir(stream),
                },
            ))
        }
        (RecoveryOp::ListArtifacts, listing) => {
            let directory = tier1_dir(stream);
            for name in listed(stream, op, listing)? {
                if !LocalPath::component_is_valid(&name) {
                    continue;
                }
                if let Ok(segment_id) = parse_artifact_file_name(&name) {
                    recovering.artifact_files.insert(segment_id);
                } else if name.ends_with(TEMP_SUFFIX) {
                    recovering.removals.push_back(directory.join(&name));
                }
            }
            Ok(Next::StartStream)
        }
        (RecoveryOp::SegmentLength(segment_id), DiskCompletion::Length(length)) => {
            if length > SEGMENT_BYTES_MAX {
                let reason = format!("{length} bytes exceeds the limit of {SEGMENT_BYTES_MAX}");
                corrupt_segment(stream, recovering, *segment_id, 0, reason)?;
                return Ok(next_verify(stream, recovering));
            }
            Ok(Next::Issue(
                RecoveryOp::ReadSegment(*segment_id),
                DiskRequest::ReadAt {
                    path: segment_path(stream, *segment_id),
                    offset: 0,
                    length,
                },
            ))
        }
        (RecoveryOp::ReadSegment(segment_id), DiskCompletion::Read(bytes)) => {
            match verify_sealed(recovering.index().segment(*segment_id), *segment_id, &bytes) {
                Ok((header, footer)) => {
                    recovering
                        .verified
                        .insert(*segment_id, Verified::Sound { header, footer });
                }
                Err((position, reason)) => {
                    corrupt_segment(stream, recovering, *segment_id, position, reason)?;
                }
            }
            Ok(next_verify(stream, recovering))
        }
        (RecoveryOp::Remove(path), completion) => match completion {
            DiskCompletion::Done | DiskCompletion::Failed(DiskErrorKind::NotFound) => {
                if let Some(directory) = path.parent() {
                    recovering.dirs_to_sync.insert(directory);
                }
                Ok(next_removal(recovering))
            }
            other => Err(disk_error(stream, op, &other)),
        },
        (RecoveryOp::SyncDir(_), DiskCompletion::Done) => Ok(next_removal(recovering)),
        (op, completion) => Err(disk_error(stream, op, &completion)),
    }
}

fn listed(
    stream: &StreamName,
    op: &RecoveryOp,
    listing: DiskCompletion,
) -> Result<Vec<String>, StoreError> {
    match listing {
        DiskCompletion::Listed(names) => Ok(names),
        DiskCompletion::Failed(DiskErrorKind::NotFound) => Ok(Vec::new()),
        other => Err(disk_error(stream, op, &other)),
    }
}

fn skip_snapshot(
    stream: &StreamName,
    recovering: &mut Recovering,
    snapshot_id: u64,
    reason: String,
) {
    recovering.summary.snapshots_skipped += 1;
    recovering.summary.push(
        stream,
        RecoveryEvent::SnapshotSkipped {
            path: snapshot_path(stream, snapshot_id).to_string(),
            reason,
        },
    );
}

fn next_snapshot(now_ms: u64, stream: &StreamName, recovering: &mut Recovering) -> Next {
    if recovering.snapshots_tried < STORE_RECOVERY_SNAPSHOTS_TRIED_MAX
        && let Some(snapshot_id) = recovering.snapshots.pop()
    {
        recovering.snapshots_tried += 1;
        return Next::Issue(
            RecoveryOp::SnapshotLength(snapshot_id),
            DiskRequest::Length {
                path: snapshot_path(stream, snapshot_id),
            },
        );
    }
    recovering.replayer = Some(Replayer::new(None));
    recovering.chunk_cursor = 0;
    next_chunk(now_ms, stream, recovering)
}

fn next_chunk(now_ms: u64, stream: &StreamName, recovering: &mut Recovering) -> Next {
    if let Some(&chunk_index) = recovering.chunks.get(recovering.chunk_cursor) {
        return Next::Issue(
            RecoveryOp::ChunkLength(chunk_index),
            DiskRequest::Length {
                path: manifest_dir(stream).join(&chunk_file_name(chunk_index)),
            },
        );
    }
    let replayer = recovering.replayer.take().expect("replay started");
    recovering.outcome = Some(replayer.finish(now_ms));
    Next::Issue(
        RecoveryOp::ListSegments,
        DiskRequest::ListDir {
            path: segments_dir(stream),
        },
    )
}

/// `None`: recover the files; `Some((id, base))`: the index knows a newer sealed
/// segment than any file left, so create the one after it.
fn choose_stream_start(
    stream: &StreamName,
    recovering: &Recovering,
) -> Result<Option<(SegmentId, u64)>, StoreError> {
    if let Some(plan) = &recovering.restore {
        return Ok(Some(plan.start));
    }
    let index = recovering.index();
    let Some((&newest, entry)) = index.segments().iter().next_back() else {
        return Ok(None);
    };
    if recovering
        .segment_files
        .last()
        .is_some_and(|&file| file >= newest)
    {
        return Ok(None);
    }
    match entry.lifecycle {
        Lifecycle::Sealed(seal) => {
            let next_id = newest
                .0
                .checked_add(1)
                .filter(|&id| id != u64::MAX)
                .ok_or_else(|| recovery_error(stream, "segment ids are exhausted".into()))?;
            let base_offset = entry
                .base_offset
                .checked_add(seal.record_count)
                .ok_or_else(|| {
                    recovery_error(stream, format!("segment {} ends past u64", newest.0))
                })?;
            Ok(Some((SegmentId(next_id), base_offset)))
        }
        Lifecycle::Open => Err(recovery_error(
            stream,
            format!(
                "the manifest's active segment file {} is missing",
                segment_path(stream, newest)
            ),
        )),
    }
}

/// The stream machine is open: queue the sealed files for verification and the
/// strays for removal.
fn start_verify(stream: &StreamName, recovering: &mut Recovering) -> Result<Next, StoreError> {
    let (active, _) = recovering
        .stream
        .as_ref()
        .and_then(StreamMachine::active_segment)
        .expect("an open stream has an active segment");
    let mut to_verify = VecDeque::new();
    let mut removals = Vec::new();
    let index = recovering.index();
    for &segment_id in &recovering.segment_files {
        if segment_id == active {
            continue;
        }
        match index.segment(segment_id) {
            Some(entry) if !entry.local.tier0 => {
                removals.push(segment_path(stream, segment_id));
            }
            _ => to_verify.push_back(segment_id),
        }
    }
    for &segment_id in &recovering.artifact_files {
        let counted = index
            .segment(segment_id)
            .is_some_and(|entry| entry.local.tier1 && entry.tier1_artifact.is_some());
        if !counted {
            removals.push(artifact_path(stream, segment_id));
        }
    }
    recovering.summary.stray_files_removed += removals.len() as u64;
    recovering.summary.temp_files_removed += recovering.removals.len() as u64;
    recovering.removals.extend(removals);
    recovering.to_verify = to_verify;
    Ok(next_verify(stream, recovering))
}

fn next_verify(stream: &StreamName, recovering: &mut Recovering) -> Next {
    match recovering.to_verify.pop_front() {
        Some(segment_id) => Next::Issue(
            RecoveryOp::SegmentLength(segment_id),
            DiskRequest::Length {
                path: segment_path(stream, segment_id),
            },
        ),
        None => next_removal(recovering),
    }
}

fn next_removal(recovering: &mut Recovering) -> Next {
    if let Some(path) = recovering.removals.pop_front() {
        return Next::Issue(
            RecoveryOp::Remove(path.clone()),
            DiskRequest::Remove { path },
        );
    }
    if let Some(path) = recovering.dirs_to_sync.pop_first() {
        return Next::Issue(
            RecoveryOp::SyncDir(path.clone()),
            DiskRequest::SyncDir { path },
        );
    }
    Next::Ready
}

/// A sealed file failed verification: repaired if Tier 2 holds it, else an error.
fn corrupt_segment(
    stream: &StreamName,
    recovering: &mut Recovering,
    segment_id: SegmentId,
    position: u64,
    reason: String,
) -> Result<(), StoreError> {
    let path = segment_path(stream, segment_id);
    let uploaded = recovering
        .index()
        .segment(segment_id)
        .is_some_and(|entry| entry.tier2_object.is_some());
    if !uploaded {
        return Err(StoreError::CorruptSegment {
            stream: stream.as_str().to_owned(),
            path: path.to_string(),
            position,
            reason,
        });
    }
    recovering.summary.segments_repaired += 1;
    recovering.summary.push(
        stream,
        RecoveryEvent::SegmentRepaired {
            path: path.to_string(),
            position,
            reason,
        },
    );
    recovering.verified.insert(segment_id, Verified::Repaired);
    recovering.removals.push_back(path);
    Ok(())
}

/// Verifies a sealed segment file against itself and the index's seal; the error is
/// (byte position, reason).
fn verify_sealed(
    entry: Option<&SegmentEntry>,
    segment_id: SegmentId,
    bytes: &[u8],
) -> Result<(SegmentHeader, SegmentFooter), (u64, String)> {
    let sealed =
        SealedSegment::decode(bytes).map_err(|error| (error.position(), error.to_string()))?;
    let header = *sealed.header();
    let footer = *sealed.footer();
    if header.segment_id != segment_id {
        return Err((
            0,
            format!("the header names segment {}", header.segment_id.0),
        ));
    }
    let footer_position = footer.durable_bytes;
    if let Some(entry) = entry {
        if entry.base_offset != header.base_offset {
            return Err((
                0,
                format!(
                    "base offset {} but the manifest says {}",
                    header.base_offset, entry.base_offset
                ),
            ));
        }
        if let Lifecycle::Sealed(seal) = entry.lifecycle
            && (seal.record_count != footer.record_count
                || seal.durable_bytes != footer.durable_bytes
                || seal.checksum != footer.segment_crc)
        {
            return Err((
                footer_position,
                format!(
                    "footer ({} records, {} bytes, crc {:#x}) disagrees with the manifest's seal \
                     ({} records, {} bytes, crc {:#x})",
                    footer.record_count,
                    footer.durable_bytes,
                    footer.segment_crc,
                    seal.record_count,
                    seal.durable_bytes,
                    seal.checksum
                ),
            ));
        }
    }
    Ok((header, footer))
}

/// One reconciliation step, decided before anything is changed.
enum Action {
    Journal(ManifestRecord),
    AdmitActive(SegmentId),
    /// Journal `SealSegment`, then (after its commit) the seal path.
    Seal {
        segment_id: SegmentId,
        record: ManifestRecord,
        bytes: u64,
    },
    AdmitRecovered(SegmentId, u64),
    RegisterArtifact {
        segment_id: SegmentId,
        bytes: u64,
        uploaded: bool,
    },
    ResidentInTier0(SegmentId),
    Uploaded {
        segment_id: SegmentId,
        in_tier0: bool,
    },
    Compress(SegmentId, u64),
    Upload(SegmentId, u64),
}

struct Plan {
    actions: Vec<Action>,
}

fn seal_record(
    segment_id: SegmentId,
    header: &SegmentHeader,
    footer: &SegmentFooter,
) -> ManifestRecord {
    ManifestRecord::SealSegment {
        segment_id,
        base_offset: header.base_offset,
        record_count: footer.record_count,
        durable_bytes: footer.durable_bytes,
        checksum: footer.segment_crc,
        last_ext_id: footer.last_ext_id,
        coordinator_watermark: footer.coordinator_watermark,
        flush_failure: footer.flush_failure,
        sealed_at_ms: footer.sealed_at_ms,
    }
}

/// Decides every reconciliation step (see the module doc) or the reason the stream
/// cannot be recovered.
fn plan_reconcile(
    stream: &StreamName,
    recovering: &Recovering,
    index: &ManifestIndex,
    machine: &StreamMachine,
) -> Result<Plan, StoreError> {
    let footer_bytes = u64::from(SEGMENT_FOOTER_BYTES);
    let (active, active_base) = machine
        .active_segment()
        .expect("a recovered stream has an active segment");
    let mut actions = Vec::new();
    let restore = recovering.restore.as_ref();

    // A restore from Tier 2: the records it planned come first (they complete the
    // history the lost unsealed chunk held); the segments it adopted that the
    // manifest did not know are held by Tier 2 only.
    if let Some(plan) = restore {
        actions.extend(plan.records.iter().cloned().map(Action::Journal));
        for &segment_id in &plan.adopted {
            if index.segment(segment_id).is_none() {
                actions.push(Action::Uploaded {
                    segment_id,
                    in_tier0: false,
                });
            }
        }
    }

    // Sealed files verified on disk.
    for (&segment_id, verified) in &recovering.verified {
        let entry = index.segment(segment_id);
        match *verified {
            Verified::Sound { header, footer } => {
                let bytes = footer.durable_bytes + footer_bytes;
                let sealed_in_index =
                    entry.is_some_and(|entry| matches!(entry.lifecycle, Lifecycle::Sealed(_)));
                if !sealed_in_index {
                    if entry.is_none() {
                        actions.push(Action::Journal(ManifestRecord::SegmentOpened {
                            segment_id,
                            base_offset: header.base_offset,
                            opened_at_ms: header.created_at_ms,
                        }));
                    }
                    actions.push(Action::AdmitActive(segment_id));
                    actions.push(Action::Seal {
                        segment_id,
                        record: seal_record(segment_id, &header, &footer),
                        bytes,
                    });
                    continue;
                }
                let entry = entry.expect("sealed in the index");
                actions.push(Action::AdmitRecovered(segment_id, bytes));
                let artifact = plan_artifact(recovering, entry, &mut actions);
                actions.push(Action::ResidentInTier0(segment_id));
                if entry.tier2_object.is_some() {
                    actions.push(Action::Uploaded {
                        segment_id,
                        in_tier0: true,
                    });
                } else if let Some(compressed_bytes) = artifact {
                    actions.push(Action::Upload(segment_id, compressed_bytes));
                } else {
                    actions.push(Action::Compress(segment_id, bytes));
                }
            }
            Verified::Repaired => {
                let entry = entry.expect("only a segment Tier 2 holds is repaired");
                actions.push(Action::Journal(ManifestRecord::LocalEvicted {
                    segment_id,
                    tier: Tier::Tier0,
                }));
                plan_artifact(recovering, entry, &mut actions);
                actions.push(Action::Uploaded {
                    segment_id,
                    in_tier0: false,
                });
            }
        }
    }

    // The active segment comes after every sealed one (its SegmentOpened follows
    // their seals, as in a run without a crash).
    match index.segment(active).map(|entry| entry.lifecycle) {
        None => {
            let opened_at_ms = recovering.opened_at_ms.get(&active).copied().unwrap_or(0);
            actions.push(Action::Journal(ManifestRecord::SegmentOpened {
                segment_id: active,
                base_offset: active_base,
                opened_at_ms,
            }));
        }
        Some(Lifecycle::Open) => {}
        Some(Lifecycle::Sealed(_)) => {
            return Err(recovery_error(
                stream,
                format!(
                    "the manifest says segment file {} is sealed, but it has no valid footer",
                    segment_path(stream, active)
                ),
            ));
        }
    }
    actions.push(Action::AdmitActive(active));

    // Segments the index knows that have no verified local file.
    for (&segment_id, entry) in index.segments() {
        if segment_id == active || recovering.verified.contains_key(&segment_id) {
            continue;
        }
        if restore.is_some_and(|plan| plan.deleted.contains(&segment_id)) {
            continue; // Its `Tier2Deleted` is journaled above: no copy is left.
        }
        let adopted = restore.is_some_and(|plan| plan.adopted.contains(&segment_id));
        let path = segment_path(stream, segment_id);
        if matches!(entry.lifecycle, Lifecycle::Open) && !adopted {
            return Err(recovery_error(
                stream,
                format!(
                    "the manifest says segment {segment_id} is open, but the active segment is \
                     {active} ({path} is not it)"
                ),
            ));
        }
        if entry.local.tier0 {
            // The eviction removed the file; its record was not committed.
            actions.push(Action::Journal(ManifestRecord::LocalEvicted {
                segment_id,
                tier: Tier::Tier0,
            }));
        }
        let artifact = plan_artifact(recovering, entry, &mut actions);
        if entry.tier2_object.is_some() || adopted {
            actions.push(Action::Uploaded {
                segment_id,
                in_tier0: false,
            });
        } else if let Some(compressed_bytes) = artifact {
            actions.push(Action::Upload(segment_id, compressed_bytes));
        } else {
            return Err(recovery_error(
                stream,
                format!(
                    "sealed segment {segment_id} has no copy left: {path} is gone, there is no \
                     Tier 1 artifact and no committed Tier 2 upload"
                ),
            ));
        }
    }
    Ok(Plan { actions })
}

/// Registers the segment's artifact if its file is there, or journals the Tier 1
/// eviction the crash lost; returns the artifact's bytes if it is there.
fn plan_artifact(
    recovering: &Recovering,
    entry: &SegmentEntry,
    actions: &mut Vec<Action>,
) -> Option<u64> {
    let segment_id = entry.segment_id;
    let artifact = entry.tier1_artifact.filter(|_| entry.local.tier1)?;
    debug_assert!(
        artifact.compressed_bytes > 0,
        "a recorded artifact has bytes"
    );
    if recovering.artifact_files.contains(&segment_id) {
        actions.push(Action::RegisterArtifact {
            segment_id,
            bytes: artifact.compressed_bytes,
            uploaded: entry.tier2_object.is_some(),
        });
        Some(artifact.compressed_bytes)
    } else {
        actions.push(Action::Journal(ManifestRecord::LocalEvicted {
            segment_id,
            tier: Tier::Tier1,
        }));
        None
    }
}
