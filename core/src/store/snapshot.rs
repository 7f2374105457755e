//! Snapshots of a stream's manifest index, and the Tier 2 copies of sealed manifest
//! chunks with the pruning of local chunk files they allow.
//!
//! # Snapshots
//!
//! A snapshot is wanted on demand ([`StoreCommand::Snapshot`](super::StoreCommand)),
//! once `snapshot_every_records` manifest records were journaled since the last one,
//! or `snapshot_interval_ms` after the last one if any record was journaled since
//! (the `SnapshotMarker` itself does not count, so an idle stream is not snapshotted
//! again and again). It is taken only at a fully committed position: the store waits
//! until the stream's manifest writer has nothing buffered or in flight
//! ([`ManifestWriter::is_caught_up`]); then the index the store holds has applied
//! exactly the durable records, and the snapshot covers them up to the writer's
//! [`ManifestWriter::durable_position`]. (Snapshotting a committed prefix while newer
//! records are in flight would need a second index; waiting is short, because records
//! are journaled per segment transition, not per append.)
//!
//! Then, in order, each step after the previous one succeeded:
//! create `snapshots_dir`, create `<id>.snap.tmp`, write it, fsync it, rename it to
//! `<id>.snap`, fsync the directory (the durable-file rule); upload it to
//! `snapshots/<stream>/<id>.snap`; journal its `SnapshotMarker`
//! ([`Snapshot::marker_record`]); once the marker is committed the snapshot is
//! complete and on-demand callers get [`StoreReply::Snapshot`](super::StoreReply).
//! Any failed step ends the snapshot without a marker (a failed fsync is never
//! retried: the next snapshot writes a fresh file under a new id); callers get
//! [`StoreError::SnapshotFailed`]. Snapshot ids grow per stream, failed ones
//! included.
//!
//! # Manifest chunks
//!
//! Every sealed chunk (`ManifestEvent::ChunkSealed`) is read back and uploaded to
//! `manifest/<stream>/<chunk>.mlog`. No single read is trusted, not even one that
//! decodes cleanly (a chunk file holds bytes no checksum covers, and a flip in the
//! newest slot leaves an older commit that decodes): the chunk is read twice, and
//! only bytes both reads agree on are uploaded (Tier 2 holds what the disk holds, so
//! a restore replays what a local recovery would; a read that flipped bits never
//! reaches Tier 2). When a stream is reopened,
//! every chunk still on local disk below the writer's first is copied again: a crash
//! may have cut its copy short, and a gap in Tier 2 would make a restore refuse. A
//! local chunk file is removed (then the manifest directory fsynced) once its Tier 2
//! copy is confirmed and it is neither the newest sealed chunk (the active chunk is
//! never sealed, so that keeps the active and the previous one) nor at or after the
//! chunk the latest snapshot starts in. A failed
//! read, upload or removal is retried on the upkeep timer, at most
//! [`STORE_UPKEEP_ROUNDS_MAX`] rounds; then the chunk stays local.
//!
//! **Invariants** (checked by `check_snapshot_invariants`)
//! - At most one snapshot per stream is under way; its id is below the next id, and
//!   the latest completed snapshot's id is below the one under way.
//! - A snapshot under way covers exactly the records below its position's ordinal,
//!   which is at most the durable end of the manifest.
//! - A local chunk file is removed only when its Tier 2 copy is confirmed, it is older
//!   than the newest sealed chunk and older than the latest snapshot's chunk.
//! - Waiting on-demand callers never exceed [`STORE_SNAPSHOT_WAITERS_MAX`].

use super::{AfterCommit, Phase, Route, StoreError, StoreOp, StoreReply, StreamEntry};
use crate::driver::CommandToken;
use crate::io::{DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoRequest, LocalPath};
use crate::limits::{
    STORE_SNAPSHOT_EVERY_RECORDS_MAX, STORE_SNAPSHOT_INTERVAL_MS_MAX,
    STORE_SNAPSHOT_INTERVAL_MS_MIN, STORE_SNAPSHOT_WAITERS_MAX, STORE_UPKEEP_INTERVAL_MS,
    STORE_UPKEEP_ROUNDS_MAX,
};
use crate::manifest::chunk::chunk_file_name;
use crate::manifest::index::ManifestIndex;
use crate::manifest::snapshot::{ManifestPosition, Snapshot};
use crate::manifest::writer::ManifestWriter;
use crate::names::{
    ObjectKey, StreamName, manifest_dir, snapshot_file_name, snapshot_path, snapshots_dir,
};
use crate::store::{Store, StoreConfig};
use crate::tier2::Tier2Event;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Suffix of the temp file a snapshot is written to first.
const SNAPSHOT_TEMP_SUFFIX: &str = ".tmp";

fn snapshot_temp_path(stream: &StreamName, snapshot_id: u64) -> LocalPath {
    let name = format!("{}{SNAPSHOT_TEMP_SUFFIX}", snapshot_file_name(snapshot_id));
    snapshots_dir(stream).join(&name)
}

/// The step of a snapshot under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SnapshotStep {
    CreateDir,
    CreateTemp,
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
    /// Held by Tier 2.
    Upload,
    /// `SnapshotMarker` journaled, waiting for its commit.
    Marker,
}

impl SnapshotStep {
    fn name(self) -> &'static str {
        match self {
            SnapshotStep::CreateDir => "create snapshots directory",
            SnapshotStep::CreateTemp => "create temp file",
            SnapshotStep::WriteTemp => "write temp file",
            SnapshotStep::SyncTemp => "fsync temp file",
            SnapshotStep::Rename => "rename into place",
            SnapshotStep::SyncDir => "fsync snapshots directory",
            SnapshotStep::Upload => "upload to Tier 2",
            SnapshotStep::Marker => "journal SnapshotMarker",
        }
    }
}

#[derive(Debug, Clone)]
struct SnapshotJob {
    snapshot_id: u64,
    position: ManifestPosition,
    bytes: Bytes,
    step: SnapshotStep,
    waiters: Vec<CommandToken>,
}

/// The latest completed snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CompletedSnapshot {
    pub(super) snapshot_id: u64,
    pub(super) position: ManifestPosition,
}

/// The step of a manifest chunk's copy and local removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkStep {
    Read,
    Remove,
    SyncDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Being read back, or held by Tier 2 for upload.
    Copying,
    /// A read or upload failed; retried by the upkeep timer.
    CopyFailed,
    /// Tier 2 holds it.
    Uploaded,
    /// Being removed locally (remove, then directory fsync).
    Removing,
    /// The removal failed; retried by the upkeep timer.
    RemoveFailed,
    /// Out of rounds: stays local.
    GaveUp,
}

#[derive(Debug, Clone)]
struct LocalChunk {
    path: LocalPath,
    state: ChunkState,
    failed_rounds: u32,
    /// The first of the two reads a copy compares, kept while the chunk is read again.
    first_read: Option<Bytes>,
}

/// Per-stream snapshot and chunk state.
#[derive(Debug, Clone)]
pub(super) struct SnapshotState {
    next_snapshot_id: u64,
    /// Manifest records from this ordinal on count toward the next snapshot.
    count_from_ordinal: u64,
    /// When the last snapshot completed or failed (or the stream opened).
    last_attempt_ms: u64,
    /// A periodic snapshot is due.
    wanted: bool,
    job: Option<SnapshotJob>,
    /// On-demand callers waiting for a snapshot that starts after the one under way.
    waiters: Vec<CommandToken>,
    pub(super) last: Option<CompletedSnapshot>,
    /// Sealed chunk files still on local disk, by index.
    chunks: BTreeMap<u64, LocalChunk>,
    /// The newest chunk ever sealed.
    newest_sealed_chunk: Option<u64>,
    last_chunk_pass_ms: u64,
    pub(super) snapshots_taken: u64,
    pub(super) snapshot_failures: u64,
    pub(super) chunks_uploaded: u64,
    pub(super) chunks_removed: u64,
    pub(super) chunk_failures: u64,
}

impl SnapshotState {
    /// A reopened stream: new snapshots get ids from `next_snapshot_id` on (above every
    /// id on disk or marked in the manifest, so none is reused: recovery tries the
    /// highest id first, and a reused id could make an older snapshot the "newest").
    pub(super) fn resume_ids_from(&mut self, next_snapshot_id: u64) {
        assert!(
            self.job.is_none(),
            "no snapshot runs while a stream recovers"
        );
        self.next_snapshot_id = self.next_snapshot_id.max(next_snapshot_id);
    }

    pub(super) fn new(now_ms: u64) -> Self {
        SnapshotState {
            next_snapshot_id: 0,
            count_from_ordinal: 0,
            last_attempt_ms: now_ms,
            wanted: false,
            job: None,
            waiters: Vec::new(),
            last: None,
            chunks: BTreeMap::new(),
            newest_sealed_chunk: None,
            last_chunk_pass_ms: now_ms,
            snapshots_taken: 0,
            snapshot_failures: 0,
            chunks_uploaded: 0,
            chunks_removed: 0,
            chunk_failures: 0,
        }
    }

    /// A reopened stream: the next snapshot id follows `newest_snapshot_id`, the
    /// highest id any snapshot file, object or marker of the stream has (a reused id
    /// would replace a snapshot file and collide with the immutable object under its
    /// key), and only records journaled from `next_ordinal` on count toward the next
    /// snapshot (an idle reopened stream is not snapshotted again).
    pub(super) fn resume_after(&mut self, newest_snapshot_id: Option<u64>, next_ordinal: u64) {
        if let Some(newest) = newest_snapshot_id {
            self.next_snapshot_id = self.next_snapshot_id.max(newest.saturating_add(1));
        }
        self.count_from_ordinal = self.count_from_ordinal.max(next_ordinal);
    }

    /// Asks for a snapshot as soon as the manifest is caught up (not while closing).
    pub(super) fn want_snapshot(&mut self) {
        self.wanted = true;
    }

    /// No snapshot under way and nobody waiting for one.
    pub(super) fn is_idle(&self) -> bool {
        self.job.is_none() && self.waiters.is_empty()
    }

    /// Every waiting caller (the stream failed).
    pub(super) fn take_waiters(&mut self) -> Vec<CommandToken> {
        let mut tokens = std::mem::take(&mut self.waiters);
        if let Some(job) = &mut self.job {
            tokens.append(&mut job.waiters);
        }
        tokens
    }

    pub(super) fn local_chunks(&self) -> u64 {
        self.chunks.len() as u64
    }

    fn chunk_retry_due(&self) -> bool {
        self.chunks.values().any(|chunk| {
            matches!(
                chunk.state,
                ChunkState::CopyFailed | ChunkState::RemoveFailed
            )
        })
    }
}

impl StoreConfig {
    /// Checks `snapshot_every_records` and `snapshot_interval_ms`.
    pub(super) fn validate_snapshot_knobs(&self) -> Result<(), StoreError> {
        if self.snapshot_every_records > STORE_SNAPSHOT_EVERY_RECORDS_MAX {
            return Err(StoreError::Config {
                what: "snapshot_every_records",
                reason: format!(
                    "{} is above the limit {STORE_SNAPSHOT_EVERY_RECORDS_MAX} (0 turns it off)",
                    self.snapshot_every_records
                ),
            });
        }
        let interval = self.snapshot_interval_ms;
        if interval != 0
            && !(STORE_SNAPSHOT_INTERVAL_MS_MIN..=STORE_SNAPSHOT_INTERVAL_MS_MAX)
                .contains(&interval)
        {
            return Err(StoreError::Config {
                what: "snapshot_interval_ms",
                reason: format!(
                    "{interval} ms is outside {STORE_SNAPSHOT_INTERVAL_MS_MIN}..={STORE_SNAPSHOT_INTERVAL_MS_MAX} (0 turns it off)"
                ),
            });
        }
        Ok(())
    }
}

/// Records counted toward the next snapshot.
fn records_since(state: &SnapshotState, index: &ManifestIndex) -> u64 {
    index
        .next_ordinal()
        .saturating_sub(state.count_from_ordinal)
}

impl Store {
    /// `StoreCommand::Snapshot`: wait for a snapshot taken after now.
    pub(super) fn request_snapshot(&mut self, token: CommandToken, stream: &StreamName) {
        if self.closing {
            return self.reply(token, StoreReply::Error(StoreError::Closed));
        }
        let entry = match self.ready(stream) {
            Ok(entry) => entry,
            Err(error) => return self.reply(token, StoreReply::Error(error)),
        };
        let held = entry.snapshots.waiters.len()
            + entry
                .snapshots
                .job
                .as_ref()
                .map_or(0, |job| job.waiters.len());
        if held >= STORE_SNAPSHOT_WAITERS_MAX {
            let error = StoreError::SnapshotWaitersFull {
                stream: stream.as_str().to_owned(),
                limit: STORE_SNAPSHOT_WAITERS_MAX,
            };
            return self.reply(token, StoreReply::Error(error));
        }
        entry.snapshots.waiters.push(token);
    }

    /// Starts every wanted snapshot whose manifest is caught up; true if one started.
    pub(super) fn start_due_snapshots(&mut self, _now_ms: u64) -> bool {
        let every = self.config.snapshot_every_records;
        let closing = self.closing;
        let mut started = Vec::new();
        for (name, entry) in &mut self.streams {
            let Phase::Ready {
                manifest, index, ..
            } = &entry.phase
            else {
                continue;
            };
            let state = &mut entry.snapshots;
            if state.job.is_some() {
                continue;
            }
            let by_count = every > 0 && records_since(state, index) >= every;
            let periodic = (state.wanted || by_count) && !closing;
            if !periodic && state.waiters.is_empty() {
                continue;
            }
            if !manifest.is_caught_up() || index.next_ordinal() != manifest.next_ordinal() {
                continue;
            }
            let Some(position) = manifest.durable_position() else {
                continue;
            };
            let snapshot_id = state.next_snapshot_id;
            state.next_snapshot_id += 1;
            let snapshot = Snapshot::new(snapshot_id, position, index.clone())
                .expect("a caught-up index has applied exactly the durable records");
            state.wanted = false;
            state.job = Some(SnapshotJob {
                snapshot_id,
                position,
                bytes: Bytes::from(snapshot.to_bytes()),
                step: SnapshotStep::CreateDir,
                waiters: std::mem::take(&mut state.waiters),
            });
            started.push(name.clone());
        }
        for name in &started {
            let path = snapshots_dir(name);
            self.route(
                Route::Store(name.clone(), StoreOp::Snapshot(SnapshotStep::CreateDir)),
                IoRequest::Disk(DiskRequest::CreateDir { path }),
            );
        }
        !started.is_empty()
    }

    /// A disk step of the snapshot under way completed.
    pub(super) fn snapshot_io_done(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        step: SnapshotStep,
        completion: IoCompletion,
    ) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let Some(job) = &mut entry.snapshots.job else {
            return;
        };
        assert_eq!(job.step, step, "{name}: snapshot step out of order");
        if completion != IoCompletion::Disk(DiskCompletion::Done) {
            return self.snapshot_failed(now_ms, name, format!("{completion:?}"));
        }
        let id = job.snapshot_id;
        let temp = snapshot_temp_path(name, id);
        let (next, request) = match step {
            SnapshotStep::CreateDir => {
                (SnapshotStep::CreateTemp, DiskRequest::Create { path: temp })
            }
            SnapshotStep::CreateTemp => (
                SnapshotStep::WriteTemp,
                DiskRequest::WriteAt {
                    path: temp,
                    offset: 0,
                    bytes: job.bytes.clone(),
                },
            ),
            SnapshotStep::WriteTemp => {
                (SnapshotStep::SyncTemp, DiskRequest::SyncFile { path: temp })
            }
            SnapshotStep::SyncTemp => (
                SnapshotStep::Rename,
                DiskRequest::Rename {
                    from: temp,
                    to: snapshot_path(name, id),
                },
            ),
            SnapshotStep::Rename => (
                SnapshotStep::SyncDir,
                DiskRequest::SyncDir {
                    path: snapshots_dir(name),
                },
            ),
            SnapshotStep::SyncDir => {
                job.step = SnapshotStep::Upload;
                let bytes = job.bytes.clone();
                let object = ObjectKey::Snapshot {
                    stream: name.clone(),
                    snapshot_id: id,
                };
                if let Err(error) = self.tier2.enqueue_object_upload(now_ms, object, bytes) {
                    self.snapshot_failed(now_ms, name, error.to_string());
                }
                return;
            }
            SnapshotStep::Upload | SnapshotStep::Marker => {
                unreachable!("{name}: no disk request in step {step:?}")
            }
        };
        job.step = next;
        self.route(
            Route::Store(name.clone(), StoreOp::Snapshot(next)),
            IoRequest::Disk(request),
        );
    }

    /// Ends the snapshot under way without a marker.
    fn snapshot_failed(&mut self, now_ms: u64, name: &StreamName, reason: String) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let Some(job) = entry.snapshots.job.take() else {
            return;
        };
        let state = &mut entry.snapshots;
        state.snapshot_failures += 1;
        state.last_attempt_ms = now_ms;
        if let Phase::Ready { index, .. } = &entry.phase {
            // Count afresh: a failing disk is not hammered once per pump.
            state.count_from_ordinal = index.next_ordinal();
        }
        let error = StoreError::SnapshotFailed {
            stream: name.as_str().to_owned(),
            snapshot_id: job.snapshot_id,
            step: job.step.name(),
            reason,
        };
        for token in job.waiters {
            self.reply(token, StoreReply::Error(error.clone()));
        }
    }

    /// A Tier 2 upload of a manifest chunk or a snapshot ended.
    pub(super) fn object_upload_ended(
        &mut self,
        now_ms: u64,
        object: ObjectKey,
        succeeded: bool,
        event: &Tier2Event,
    ) {
        match object {
            ObjectKey::Segment { .. } => unreachable!("segment uploads are the seal pipeline's"),
            ObjectKey::ManifestChunk {
                stream,
                chunk_index,
            } => {
                let Some(entry) = self.streams.get_mut(&stream) else {
                    return;
                };
                let state = &mut entry.snapshots;
                let Some(chunk) = state.chunks.get_mut(&chunk_index) else {
                    return;
                };
                assert_eq!(
                    chunk.state,
                    ChunkState::Copying,
                    "{stream}: chunk {chunk_index}"
                );
                if succeeded {
                    chunk.state = ChunkState::Uploaded;
                    state.chunks_uploaded += 1;
                    self.prune_chunks(&stream);
                } else {
                    chunk_round_failed(state, chunk_index, ChunkState::CopyFailed);
                }
            }
            ObjectKey::Snapshot {
                stream,
                snapshot_id,
            } => {
                let Some(entry) = self.streams.get_mut(&stream) else {
                    return;
                };
                let Some(job) = &mut entry.snapshots.job else {
                    return;
                };
                assert_eq!(
                    job.snapshot_id, snapshot_id,
                    "{stream}: upload of another snapshot"
                );
                assert_eq!(job.step, SnapshotStep::Upload);
                if !succeeded {
                    let reason = match event {
                        Tier2Event::UploadFailed { reason, .. } => reason.to_string(),
                        other => format!("{other:?}"),
                    };
                    return self.snapshot_failed(now_ms, &stream, reason);
                }
                job.step = SnapshotStep::Marker;
                let record = crate::manifest::record::ManifestRecord::SnapshotMarker {
                    snapshot_id,
                    chunk_index: job.position.chunk_index,
                    chunk_offset: job.position.chunk_offset,
                    record_ordinal: job.position.record_ordinal,
                };
                if let Some(ordinal) = self.journal(now_ms, &stream, &record) {
                    let entry = self.streams.get_mut(&stream).expect("journaled just now");
                    entry.snapshots.count_from_ordinal = ordinal + 1;
                    self.after_commit(
                        &stream,
                        ordinal,
                        AfterCommit::SnapshotMarked { snapshot_id },
                    );
                }
            }
        }
    }

    /// The marker of `snapshot_id` is committed: the snapshot is complete.
    pub(super) fn snapshot_marked(&mut self, now_ms: u64, name: &StreamName, snapshot_id: u64) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let state = &mut entry.snapshots;
        let job = state
            .job
            .take()
            .expect("a marker is committed for the job under way");
        assert_eq!(job.snapshot_id, snapshot_id);
        assert_eq!(job.step, SnapshotStep::Marker);
        state.last = Some(CompletedSnapshot {
            snapshot_id,
            position: job.position,
        });
        state.snapshots_taken += 1;
        state.last_attempt_ms = now_ms;
        let reply = StoreReply::Snapshot {
            snapshot_id,
            chunk_index: job.position.chunk_index,
            chunk_offset: job.position.chunk_offset,
            record_ordinal: job.position.record_ordinal,
        };
        for token in job.waiters {
            self.reply(token, reply.clone());
        }
        self.prune_chunks(name);
        self.snapshot_covers_deletions(now_ms, name);
    }

    /// `ManifestEvent::ChunkSealed`: copy the chunk to Tier 2.
    pub(super) fn chunk_sealed(&mut self, name: &StreamName, chunk_index: u64, path: LocalPath) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let state = &mut entry.snapshots;
        assert!(
            state
                .newest_sealed_chunk
                .is_none_or(|newest| newest < chunk_index),
            "{name}: chunks are sealed in order"
        );
        state.newest_sealed_chunk = Some(chunk_index);
        state.chunks.insert(
            chunk_index,
            LocalChunk {
                path,
                state: ChunkState::Copying,
                failed_rounds: 0,
                first_read: None,
            },
        );
        self.read_chunk(name, chunk_index);
    }

    /// A reopened stream: the chunks `sealed_before` its writer's first chunk that
    /// are still on local disk are copied to Tier 2 again, as if just sealed. A crash
    /// may have cut a copy short, and a chunk missing from Tier 2 would leave a gap
    /// that a restore after a disk loss refuses. A copy that did land is confirmed by
    /// the conditional put (same key, same size), so copying again is harmless. Once
    /// confirmed, the usual rule prunes the local files.
    pub(super) fn adopt_sealed_chunks(&mut self, name: &StreamName, sealed_before: &[u64]) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let state = &mut entry.snapshots;
        assert!(
            state.chunks.is_empty() && state.newest_sealed_chunk.is_none(),
            "{name}: chunks are adopted once, before the writer seals any"
        );
        for &chunk_index in sealed_before {
            state.chunks.insert(
                chunk_index,
                LocalChunk {
                    path: manifest_dir(name).join(&chunk_file_name(chunk_index)),
                    state: ChunkState::Copying,
                    failed_rounds: 0,
                    first_read: None,
                },
            );
        }
        state.newest_sealed_chunk = sealed_before.iter().copied().max();
        for &chunk_index in sealed_before {
            self.read_chunk(name, chunk_index);
        }
    }

    fn read_chunk(&mut self, name: &StreamName, chunk_index: u64) {
        let Some(chunk) = self
            .streams
            .get(name)
            .and_then(|entry| entry.snapshots.chunks.get(&chunk_index))
        else {
            return;
        };
        let request = DiskRequest::ReadAt {
            path: chunk.path.clone(),
            offset: 0,
            length: u64::from(self.config.manifest.chunk_capacity_bytes),
        };
        self.route(
            Route::Store(name.clone(), StoreOp::Chunk(chunk_index, ChunkStep::Read)),
            IoRequest::Disk(request),
        );
    }

    /// A disk step of a chunk's copy or removal completed.
    pub(super) fn chunk_io_done(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        chunk_index: u64,
        step: ChunkStep,
        completion: IoCompletion,
    ) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let state = &mut entry.snapshots;
        let Some(chunk) = state.chunks.get_mut(&chunk_index) else {
            return;
        };
        match (step, completion) {
            (ChunkStep::Read, IoCompletion::Disk(DiskCompletion::Read(bytes)))
                if !bytes.is_empty() =>
            {
                // A chunk file holds bytes no checksum covers (the slot a commit
                // superseded, bytes past the committed length), and a flip in the newest
                // slot leaves an older commit that decodes cleanly: a clean decode is no
                // proof of the disk's bytes. Tier 2 gets them only when two reads agree.
                let bytes = match chunk.first_read.take() {
                    None => {
                        chunk.first_read = Some(bytes);
                        return self.read_chunk(name, chunk_index);
                    }
                    Some(first) if first == bytes => bytes,
                    Some(_) => {
                        return chunk_round_failed(state, chunk_index, ChunkState::CopyFailed);
                    }
                };
                let object = ObjectKey::ManifestChunk {
                    stream: name.clone(),
                    chunk_index,
                };
                if self
                    .tier2
                    .enqueue_object_upload(now_ms, object, bytes)
                    .is_err()
                {
                    chunk_round_failed(state, chunk_index, ChunkState::CopyFailed);
                }
            }
            (ChunkStep::Read, _) => {
                chunk_round_failed(state, chunk_index, ChunkState::CopyFailed);
            }
            (
                ChunkStep::Remove,
                IoCompletion::Disk(
                    DiskCompletion::Done | DiskCompletion::Failed(DiskErrorKind::NotFound),
                ),
            ) => {
                let _ = chunk;
                self.route(
                    Route::Store(
                        name.clone(),
                        StoreOp::Chunk(chunk_index, ChunkStep::SyncDir),
                    ),
                    IoRequest::Disk(DiskRequest::SyncDir {
                        path: manifest_dir(name),
                    }),
                );
            }
            (ChunkStep::SyncDir, IoCompletion::Disk(DiskCompletion::Done)) => {
                state.chunks.remove(&chunk_index);
                state.chunks_removed += 1;
            }
            (ChunkStep::Remove | ChunkStep::SyncDir, _) => {
                // A failed directory fsync may bring the file back after a crash; it
                // is removed again (Tier 2 holds it either way).
                chunk_round_failed(state, chunk_index, ChunkState::RemoveFailed);
            }
        }
    }

    /// Removes every local chunk file the rule lets go.
    fn prune_chunks(&mut self, name: &StreamName) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let state = &mut entry.snapshots;
        let (Some(newest), Some(last)) = (state.newest_sealed_chunk, state.last) else {
            return;
        };
        let keep_from = newest.min(last.position.chunk_index);
        let mut removing = Vec::new();
        for (&chunk_index, chunk) in state.chunks.range_mut(..keep_from) {
            if chunk.state == ChunkState::Uploaded {
                chunk.state = ChunkState::Removing;
                removing.push((chunk_index, chunk.path.clone()));
            }
        }
        for (chunk_index, path) in removing {
            self.route(
                Route::Store(name.clone(), StoreOp::Chunk(chunk_index, ChunkStep::Remove)),
                IoRequest::Disk(DiskRequest::Remove { path }),
            );
        }
    }

    /// Upkeep timer for snapshots and chunks of `name`.
    pub(super) fn snapshot_timeout(&mut self, now_ms: u64, name: &StreamName) {
        let interval = self.config.snapshot_interval_ms;
        let closing = self.closing;
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        if snapshot_deadline(interval, entry, closing).is_some_and(|at| at <= now_ms) {
            entry.snapshots.wanted = true;
        }
        let state = &mut entry.snapshots;
        if !(state.chunk_retry_due()
            && now_ms
                >= state
                    .last_chunk_pass_ms
                    .saturating_add(STORE_UPKEEP_INTERVAL_MS))
        {
            return;
        }
        state.last_chunk_pass_ms = now_ms;
        let mut reads = Vec::new();
        for (&chunk_index, chunk) in &mut state.chunks {
            match chunk.state {
                ChunkState::CopyFailed => {
                    chunk.state = ChunkState::Copying;
                    reads.push(chunk_index);
                }
                ChunkState::RemoveFailed => chunk.state = ChunkState::Uploaded,
                _ => {}
            }
        }
        for chunk_index in reads {
            self.read_chunk(name, chunk_index);
        }
        self.prune_chunks(name);
    }

    pub(super) fn check_snapshot_invariants(
        &self,
        name: &StreamName,
        entry: &StreamEntry,
        manifest: &ManifestWriter,
        index: &ManifestIndex,
    ) {
        let state = &entry.snapshots;
        if let Some(job) = &state.job {
            assert!(
                job.snapshot_id < state.next_snapshot_id,
                "{name}: snapshot id"
            );
            let durable_end = manifest.durable_ordinal().map_or(0, |ordinal| ordinal + 1);
            assert!(
                job.position.record_ordinal <= durable_end,
                "{name}: a snapshot covers only durable records"
            );
            assert!(job.position.record_ordinal <= index.next_ordinal());
            assert!(
                state.waiters.len() + job.waiters.len() <= STORE_SNAPSHOT_WAITERS_MAX,
                "{name}: snapshot waiters"
            );
        }
        if let Some(last) = &state.last {
            assert!(
                last.snapshot_id < state.next_snapshot_id,
                "{name}: snapshot ids grow"
            );
            if let Some(job) = &state.job {
                assert!(
                    last.snapshot_id < job.snapshot_id,
                    "{name}: snapshot ids grow"
                );
            }
        }
        assert!(state.waiters.len() <= STORE_SNAPSHOT_WAITERS_MAX);
        for (&chunk_index, chunk) in &state.chunks {
            assert!(
                state
                    .newest_sealed_chunk
                    .is_some_and(|newest| chunk_index <= newest),
                "{name}: chunk {chunk_index} is sealed"
            );
            assert!(chunk.failed_rounds <= STORE_UPKEEP_ROUNDS_MAX);
            assert!(
                chunk.first_read.is_none() || chunk.state == ChunkState::Copying,
                "{name}: chunk {chunk_index} is read again only while being copied"
            );
            if chunk.state == ChunkState::Removing {
                let last = state.last.expect("removal follows a snapshot");
                assert!(
                    chunk_index < last.position.chunk_index,
                    "{name}: chunk {chunk_index} is needed by snapshot {}",
                    last.snapshot_id
                );
                assert!(
                    state
                        .newest_sealed_chunk
                        .is_some_and(|newest| chunk_index < newest),
                    "{name}: the newest sealed chunk is kept"
                );
            }
        }
    }
}

/// A read, upload or removal of a chunk failed: count the round.
fn chunk_round_failed(state: &mut SnapshotState, chunk_index: u64, failed: ChunkState) {
    let chunk = state
        .chunks
        .get_mut(&chunk_index)
        .expect("the caller looked it up");
    chunk.failed_rounds += 1;
    chunk.first_read = None;
    state.chunk_failures += 1;
    chunk.state = if chunk.failed_rounds >= STORE_UPKEEP_ROUNDS_MAX {
        ChunkState::GaveUp
    } else {
        failed
    };
}

/// When the upkeep timer has snapshot work for `entry`, if ever.
pub(super) fn snapshot_deadline(
    interval_ms: u64,
    entry: &StreamEntry,
    closing: bool,
) -> Option<u64> {
    let Phase::Ready { index, .. } = &entry.phase else {
        return None;
    };
    let state = &entry.snapshots;
    let chunk_retry = state.chunk_retry_due().then(|| {
        state
            .last_chunk_pass_ms
            .saturating_add(STORE_UPKEEP_INTERVAL_MS)
    });
    let periodic = (interval_ms > 0
        && !closing
        && state.job.is_none()
        && !state.wanted
        && records_since(state, index) > 0)
        .then(|| state.last_attempt_ms.saturating_add(interval_ms));
    match (chunk_retry, periodic) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_file_names_sort_by_id() {
        assert_eq!(snapshot_file_name(7), "00000000000000000007.snap");
        let stream = StreamName::new("s").unwrap();
        assert_eq!(
            snapshot_path(&stream, 7).to_string(),
            "streams/s/snapshots/00000000000000000007.snap"
        );
    }

    #[test]
    fn snapshot_knobs_are_validated() {
        let mut config = StoreConfig::default();
        config.validate().unwrap();
        config.snapshot_interval_ms = 0;
        config.snapshot_every_records = 0;
        config.validate().unwrap();
        config.snapshot_interval_ms = STORE_SNAPSHOT_INTERVAL_MS_MIN - 1;
        let error = config.validate().unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Config {
                    what: "snapshot_interval_ms",
                    ..
                }
            ),
            "{error}"
        );
        config.snapshot_interval_ms = 0;
        config.snapshot_every_records = STORE_SNAPSHOT_EVERY_RECORDS_MAX + 1;
        let error = config.validate().unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Config {
                    what: "snapshot_every_records",
                    ..
                }
            ),
            "{error}"
        );
    }
}
