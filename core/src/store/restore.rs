//! Restoring a stream from Tier 2 alone: the local manifest directory holds no chunk
//! (a new disk, or a whole-disk loss), so before a stream is created anew the store
//! asks Tier 2 whether it already has a history (durability rule 7: everything local
//! can be rebuilt from Tier 2).
//!
//! The steps, one request at a time (object requests go straight to the object-store
//! port, routed to the store like its disk requests; a failed one fails the open with
//! [`StoreError::Tier2Request`], and opening again starts over):
//!
//! 1. **List** `manifest/<stream>/`, `snapshots/<stream>/` and `segments/<stream>/`.
//!    Keys that do not parse as this stream's keys of that kind are ignored. Nothing
//!    listed: a new stream, exactly as before. Otherwise the stream is restored.
//! 2. **Snapshot** (unless [`StoreConfig::manifest_log_only`](super::StoreConfig)):
//!    the newest snapshot objects are fetched in turn (at most
//!    [`STORE_RECOVERY_SNAPSHOTS_TRIED_MAX`]) until one decodes under its own id; the
//!    others are skipped and counted. Its bytes are held until step 6.
//! 3. **Manifest chunks** from the snapshot's chunk on (every chunk without a
//!    snapshot): they must be contiguous (from chunk 0 without a snapshot; the
//!    snapshot's own chunk may be missing only if no later chunk is present, since it
//!    was then the active chunk). Each is fetched, replayed into a *planning*
//!    [`Replayer`], and written to its temp file (create, write, fsync). Nothing is
//!    visible under a final name yet.
//! 4. **Plan** against the planned index and the segment listing: a segment the
//!    manifest records as uploaded must have its object (same size); an object the
//!    manifest does not record as uploaded is **adopted** (its `UploadDone`, and its
//!    `SegmentOpened`/`SealSegment` too, were in the lost unsealed chunk); a segment
//!    whose delete was queued and whose object is gone gets its `Tier2Deleted`.
//!    Under a retention policy, an uploaded segment whose object is gone and which is
//!    older than every object Tier 2 holds was deleted by retention (its
//!    `Tier2DeleteQueued` was in the lost unsealed chunk: retention deletes only the
//!    oldest segments): it gets both records, a
//!    [`RecoveryEvent::SegmentPresumedDeleted`](super::recovery::RecoveryEvent), and
//!    the restored stream starts after it. Retention deletes finish out of order, so
//!    a missing uploaded object may also lie *between* present ones (an older delete
//!    was pinned or failing when the disk was lost). That is taken as retention's too
//!    only if the policy, applied now to the segments the manifest knows, would
//!    delete through it anyway: then every older segment is deleted, the missing ones
//!    as above and the present ones by a `Tier2DeleteQueued` that the restored
//!    stream carries on. Otherwise, and always without a retention policy, a missing
//!    object is a loss, and refused.
//!    Adopting an object reads its artifact's tail ([`ArtifactIndex::decode_tail`],
//!    ranged GETs), its first frame (the segment header) and its last frame (the
//!    footer), and checks them against each other, the key and the manifest's seal.
//!    The segments that remain must have dense ids and dense offsets. The restored
//!    history ends at the last segment Tier 2 holds: the active segment (and the
//!    unsealed chunk) never reached Tier 2, so the new active segment takes the next
//!    id at the next offset. A missing object between two present ones, a sealed
//!    segment the manifest has but Tier 2 lacks, or any disagreement is a
//!    [`StoreError::Recovery`] naming what is missing or what disagrees; nothing is
//!    truncated silently, and no final file was written yet.
//! 5. **Durable files**: the snapshot is written to its temp file (create, write,
//!    fsync); the restore marker ([`RESTORE_MARKER_FILE_NAME`]) is created in the
//!    manifest directory and the directory fsynced; then the snapshot and every chunk
//!    are renamed into place (the snapshot first, chunks in index order), the
//!    snapshots and manifest directories are fsynced (the durable-file rule), and the
//!    marker is removed (and the directory fsynced). A manifest directory that holds
//!    the marker is restored again on the next open, so a crash during the renames
//!    never leaves a partial manifest that a later open would take for a local one.
//! 6. **Local recovery** (`recovery.rs`) runs on the written files, so one code path
//!    replays the manifest the stream runs on. It is handed the [`RestorePlan`]: the
//!    stream machine starts the new active segment at the planned id and offset, and
//!    reconciliation first journals the planned records (`SegmentOpened`,
//!    `SealSegment`, `UploadDone`, `LocalEvicted`, `Tier2Deleted`), then treats
//!    every restored segment as held by Tier 2 only (residency `UploadedToTier2`:
//!    reads hydrate it). What was restored is counted in the stream's
//!    [`RecoverySummary`].
//!
//! **Invariants** (checked by [`Restoring::check_invariants`])
//! - At most one request of a restoring stream is in flight.
//! - No file gets its final name before the plan is complete and consistent; until
//!   then only temp files exist, which a later open ignores and overwrites. Final
//!   names appear only while the restore marker is durable.
//! - Chunks are fetched, replayed and written in increasing index order, each once.
//! - An adopted segment is journaled only after its header, footer and artifact index
//!   agreed with each other and with the manifest.
//! - Listings never hold more than their limits ([`STORE_RESTORE_CHUNKS_MAX`],
//!   [`SNAPSHOT_SEGMENTS_MAX`] segment objects, [`STORE_RESTORE_SNAPSHOTS_LISTED_MAX`]).

use super::recovery::{RecoveryEvent, RecoverySummary};
use super::{Phase, Route, Store, StoreError, StoreOp, StreamEntry};
use crate::SegmentId;
use crate::artifact::{ArtifactIndex, TailDecode, decode_frame};
use crate::io::{
    DiskCompletion, DiskRequest, IoCompletion, IoRequest, LocalPath, ObjectCompletion,
    ObjectErrorKind, ObjectMeta, ObjectRequest,
};
use crate::limits::{
    ARTIFACT_TAIL_PROBE_BYTES, MANIFEST_CHUNK_BYTES_MAX, SEGMENT_FOOTER_BYTES,
    SEGMENT_HEADER_BYTES, SNAPSHOT_SEGMENTS_MAX, STORE_RECOVERY_SNAPSHOTS_TRIED_MAX,
    STORE_RESTORE_CHUNKS_MAX, STORE_RESTORE_SNAPSHOTS_LISTED_MAX, STORE_SNAPSHOT_FILE_BYTES_MAX,
};
use crate::manifest::chunk::{chunk_file_name, chunk_temp_file_name};
use crate::manifest::index::{Lifecycle, ManifestIndex};
use crate::manifest::record::{ManifestRecord, ReasonCode, Tier};
use crate::manifest::replay::Replayer;
use crate::manifest::snapshot::Snapshot;
use crate::names::{
    ObjectKey, StreamName, manifest_chunk_object_key, manifest_dir, segment_object_key,
    snapshot_file_name, snapshot_object_key, snapshot_path, snapshots_dir,
};
use crate::segment::{SegmentFooter, SegmentHeader};
use crate::tier2::{RetainedSegment, RetentionPolicy, select_retention};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What the restore decided; local recovery carries it out (`recovery.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RestorePlan {
    /// The new active segment: id and base offset.
    pub(super) start: (SegmentId, u64),
    /// Journaled first, in order, by reconciliation.
    pub(super) records: Vec<ManifestRecord>,
    /// Segments adopted from their objects.
    pub(super) adopted: BTreeSet<SegmentId>,
    /// Segments whose `Tier2Deleted` the plan journals.
    pub(super) deleted: BTreeSet<SegmentId>,
    /// The highest snapshot id Tier 2 holds (new snapshots take ids above it).
    pub(super) newest_snapshot_id: Option<u64>,
    /// What the restore counted, the seed of the stream's recovery summary.
    pub(super) summary: RecoverySummary,
}

/// One request of a restoring stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RestoreOp {
    ListManifest,
    ListSnapshots,
    ListSegments,
    GetSnapshot(u64),
    GetChunk(u64),
    CreateDir(LocalPath),
    CreateTemp(LocalPath),
    WriteTemp(LocalPath),
    SyncTemp(LocalPath),
    /// The artifact tail of a segment object, `tail_bytes` long.
    GetTail {
        segment_id: SegmentId,
        tail_bytes: u64,
        probe: bool,
    },
    /// One frame of a segment object.
    GetFrame {
        segment_id: SegmentId,
        frame: u32,
    },
    /// Creating the restore marker in the manifest directory.
    PlaceMarker,
    Rename(LocalPath),
    SyncDir(LocalPath),
    /// Removing the restore marker.
    RemoveMarker,
}

/// Name of the marker file a restore keeps in the manifest directory while it renames
/// files into place: a manifest directory that holds it is restored again, never
/// reopened as a (partial) local manifest.
pub(super) const RESTORE_MARKER_FILE_NAME: &str = "restore-in-progress";

fn marker_path(stream: &StreamName) -> LocalPath {
    manifest_dir(stream).join(RESTORE_MARKER_FILE_NAME)
}

/// Where the restore marker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    NotPlaced,
    Placed,
    Removed,
}

impl RestoreOp {
    fn what(&self) -> &'static str {
        match self {
            RestoreOp::ListManifest => "list manifest chunk objects",
            RestoreOp::ListSnapshots => "list snapshot objects",
            RestoreOp::ListSegments => "list segment objects",
            RestoreOp::GetSnapshot(_) => "get snapshot object",
            RestoreOp::GetChunk(_) => "get manifest chunk object",
            RestoreOp::CreateDir(_) => "create directory",
            RestoreOp::CreateTemp(_) => "create temp file",
            RestoreOp::WriteTemp(_) => "write temp file",
            RestoreOp::SyncTemp(_) => "fsync temp file",
            RestoreOp::GetTail { .. } => "get segment artifact tail",
            RestoreOp::GetFrame { .. } => "get segment artifact frame",
            RestoreOp::PlaceMarker => "create restore marker",
            RestoreOp::Rename(_) => "rename into place",
            RestoreOp::SyncDir(_) => "fsync directory",
            RestoreOp::RemoveMarker => "remove restore marker",
        }
    }
}

/// A segment object being adopted.
#[derive(Debug, Clone)]
struct Adopting {
    segment_id: SegmentId,
    index: Option<ArtifactIndex>,
    header: Option<SegmentHeader>,
}

/// What an adopted object's artifact says about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdoptedSegment {
    header: SegmentHeader,
    footer: SegmentFooter,
}

/// A segment object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListedObject {
    size: u64,
    etag: Option<String>,
}

/// The sub-state of [`Phase::Restoring`].
#[derive(Debug)]
pub(super) struct Restoring {
    expected: Option<RestoreOp>,
    /// Chunk index -> object size.
    chunk_objects: BTreeMap<u64, u64>,
    /// Snapshot id -> object size.
    snapshot_objects: BTreeMap<u64, u64>,
    segment_objects: BTreeMap<SegmentId, ListedObject>,
    /// Snapshot ids still to try, ascending (the newest is tried first).
    snapshot_candidates: Vec<u64>,
    snapshots_tried: usize,
    /// The snapshot replay starts from: id and bytes.
    snapshot: Option<(u64, Bytes)>,
    /// The chunk the chosen snapshot's position is in (0 without one).
    first_chunk: u64,
    replayer: Option<Replayer>,
    /// Chunks still to fetch, ascending.
    chunks_to_fetch: VecDeque<u64>,
    /// The chunk being written to its temp file.
    chunk_in_hand: Option<(u64, Bytes)>,
    /// Chunks written to their temp files, ascending.
    chunks_written: Vec<u64>,
    index: Option<ManifestIndex>,
    to_adopt: VecDeque<SegmentId>,
    adopting: Option<Adopting>,
    adopted: BTreeMap<SegmentId, AdoptedSegment>,
    plan: Option<RestorePlan>,
    /// Temp file -> final file, renamed in order once the plan is complete.
    renames: VecDeque<(LocalPath, LocalPath)>,
    /// Directories to create before the first temp file.
    dirs_to_create: VecDeque<LocalPath>,
    dirs_to_sync: VecDeque<LocalPath>,
    marker: Marker,
    summary: RecoverySummary,
    /// Set when a retention policy is configured (the reason its deletes carry): the
    /// oldest segments may have been deleted from Tier 2 by a `Tier2DeleteQueued`
    /// that was in the lost unsealed chunk.
    retention_reason: Option<ReasonCode>,
    /// The retention policy the store runs under.
    retention: RetentionPolicy,
    /// Segments the manifest records as uploaded whose objects are gone, taken as
    /// deleted by retention (see the module doc).
    presumed_deleted: BTreeSet<SegmentId>,
    /// Segments whose objects are still present below a gap retention left: their
    /// deletion was queued, and the restored stream carries it on.
    deletion_requeued: BTreeSet<SegmentId>,
}

impl Restoring {
    pub(super) fn check_invariants(&self) {
        assert!(
            self.chunks_written.windows(2).all(|pair| pair[0] < pair[1]),
            "chunks are written in increasing index order"
        );
        if let (Some(last), Some(next)) = (self.chunks_written.last(), self.chunks_to_fetch.front())
        {
            assert!(last < next, "chunks are fetched in increasing index order");
        }
        assert!(self.chunk_objects.len() <= STORE_RESTORE_CHUNKS_MAX);
        assert!(self.snapshot_objects.len() <= STORE_RESTORE_SNAPSHOTS_LISTED_MAX);
        assert!(self.segment_objects.len() <= SNAPSHOT_SEGMENTS_MAX as usize);
        assert!(self.snapshots_tried <= STORE_RECOVERY_SNAPSHOTS_TRIED_MAX);
        assert!(
            self.renames.is_empty() || self.plan.is_some(),
            "nothing is renamed into place before the plan is complete"
        );
        assert!(
            self.marker == Marker::NotPlaced || self.plan.is_some() || self.expected.is_none(),
            "the marker is placed only once the plan is complete"
        );
        for segment_id in self.adopted.keys() {
            assert!(
                self.segment_objects.contains_key(segment_id),
                "only a listed object is adopted"
            );
        }
    }
}

/// What to do after a restore step.
enum Next {
    Issue(RestoreOp, IoRequest),
    /// Tier 2 holds nothing of the stream.
    NewStream,
    /// The files are written: run local recovery on them with this plan.
    Recover(RestorePlan, Vec<String>),
}

fn recovery_error(stream: &StreamName, reason: String) -> StoreError {
    StoreError::Recovery {
        stream: stream.as_str().to_owned(),
        reason,
    }
}

fn object_error(stream: &StreamName, op: &RestoreOp, key: String, reason: String) -> StoreError {
    StoreError::Tier2Request {
        stream: stream.as_str().to_owned(),
        what: op.what(),
        key,
        reason,
    }
}

fn disk_error(stream: &StreamName, op: &RestoreOp, completion: &DiskCompletion) -> StoreError {
    StoreError::Disk {
        stream: stream.as_str().to_owned(),
        what: op.what(),
        reason: format!("{completion:?}"),
    }
}

/// The reason retention's deletes carry under `policy`; `None` without retention.
fn retention_reason(policy: &RetentionPolicy) -> Option<ReasonCode> {
    match (policy.max_age_ms, policy.max_bytes) {
        (None, None) => None,
        (_, Some(_)) => Some(ReasonCode::RetentionSize),
        (Some(_), None) => Some(ReasonCode::RetentionAge),
    }
}

fn list(prefix: String) -> IoRequest {
    IoRequest::Object(ObjectRequest::List { prefix })
}

fn disk(request: DiskRequest) -> IoRequest {
    IoRequest::Disk(request)
}

impl Store {
    /// `OpenStream` found no manifest chunk locally: ask Tier 2 before creating.
    pub(super) fn start_restore_probe(&mut self, stream: &StreamName) {
        let restoring = Restoring {
            expected: None,
            chunk_objects: BTreeMap::new(),
            snapshot_objects: BTreeMap::new(),
            segment_objects: BTreeMap::new(),
            snapshot_candidates: Vec::new(),
            snapshots_tried: 0,
            snapshot: None,
            first_chunk: 0,
            replayer: None,
            chunks_to_fetch: VecDeque::new(),
            chunk_in_hand: None,
            chunks_written: Vec::new(),
            index: None,
            to_adopt: VecDeque::new(),
            adopting: None,
            adopted: BTreeMap::new(),
            plan: None,
            renames: VecDeque::new(),
            dirs_to_create: VecDeque::new(),
            dirs_to_sync: VecDeque::new(),
            marker: Marker::NotPlaced,
            summary: RecoverySummary::default(),
            retention_reason: retention_reason(&self.config.tier2.retention),
            retention: self.config.tier2.retention,
            presumed_deleted: BTreeSet::new(),
            deletion_requeued: BTreeSet::new(),
        };
        let Some(entry) = self.streams.get_mut(stream) else {
            return;
        };
        entry.phase = Phase::Restoring(Box::new(restoring));
        self.issue_restore(
            stream,
            RestoreOp::ListManifest,
            list(ObjectKey::manifest_prefix(stream)),
        );
    }

    fn issue_restore(&mut self, stream: &StreamName, op: RestoreOp, request: IoRequest) {
        let Some(StreamEntry {
            phase: Phase::Restoring(restoring),
            ..
        }) = self.streams.get_mut(stream)
        else {
            unreachable!("issued while restoring");
        };
        assert!(
            restoring.expected.is_none(),
            "one restore request at a time"
        );
        restoring.expected = Some(op.clone());
        self.route(Route::Store(stream.clone(), StoreOp::Restore(op)), request);
    }

    pub(super) fn handle_restore_completion(
        &mut self,
        now_ms: u64,
        stream: &StreamName,
        op: RestoreOp,
        completion: IoCompletion,
    ) {
        let log_only = self.config.manifest_log_only;
        let Some(StreamEntry {
            phase: Phase::Restoring(restoring),
            ..
        }) = self.streams.get_mut(stream)
        else {
            return; // The open already failed; a late completion.
        };
        if restoring.expected.as_ref() != Some(&op) {
            return; // Issued for an earlier open of this name that failed.
        }
        restoring.expected = None;
        match advance(log_only, now_ms, stream, restoring, &op, completion) {
            Ok(Next::Issue(op, request)) => self.issue_restore(stream, op, request),
            Ok(Next::NewStream) => self.create_stream_dirs(stream.clone()),
            Ok(Next::Recover(plan, names)) => {
                self.start_recovery(now_ms, stream, &names, Some(plan))
            }
            Err(error) => self.fail_opening(stream, error),
        }
    }
}

/// Takes one restore step's result; says what comes next.
fn advance(
    log_only: bool,
    now_ms: u64,
    stream: &StreamName,
    restoring: &mut Restoring,
    op: &RestoreOp,
    completion: IoCompletion,
) -> Result<Next, StoreError> {
    match (op, completion) {
        (RestoreOp::ListManifest, IoCompletion::Object(ObjectCompletion::Listed(metas))) => {
            for (key, meta) in parsed(&metas) {
                if let ObjectKey::ManifestChunk {
                    stream: owner,
                    chunk_index,
                } = key
                    && &owner == stream
                {
                    restoring.chunk_objects.insert(chunk_index, meta.size);
                }
                listing_limit(
                    stream,
                    "manifest chunk",
                    restoring.chunk_objects.len(),
                    STORE_RESTORE_CHUNKS_MAX,
                )?;
            }
            Ok(Next::Issue(
                RestoreOp::ListSnapshots,
                list(ObjectKey::snapshots_prefix(stream)),
            ))
        }
        (RestoreOp::ListSnapshots, IoCompletion::Object(ObjectCompletion::Listed(metas))) => {
            for (key, meta) in parsed(&metas) {
                if let ObjectKey::Snapshot {
                    stream: owner,
                    snapshot_id,
                } = key
                    && &owner == stream
                {
                    restoring.snapshot_objects.insert(snapshot_id, meta.size);
                }
                listing_limit(
                    stream,
                    "snapshot",
                    restoring.snapshot_objects.len(),
                    STORE_RESTORE_SNAPSHOTS_LISTED_MAX,
                )?;
            }
            Ok(Next::Issue(
                RestoreOp::ListSegments,
                list(ObjectKey::segments_prefix(stream)),
            ))
        }
        (RestoreOp::ListSegments, IoCompletion::Object(ObjectCompletion::Listed(metas))) => {
            for (key, meta) in parsed(&metas) {
                if let ObjectKey::Segment {
                    stream: owner,
                    segment_id,
                } = key
                    && &owner == stream
                {
                    let object = ListedObject {
                        size: meta.size,
                        etag: meta.etag.clone(),
                    };
                    restoring.segment_objects.insert(segment_id, object);
                }
                listing_limit(
                    stream,
                    "segment",
                    restoring.segment_objects.len(),
                    SNAPSHOT_SEGMENTS_MAX as usize,
                )?;
            }
            if restoring.chunk_objects.is_empty()
                && restoring.snapshot_objects.is_empty()
                && restoring.segment_objects.is_empty()
            {
                return Ok(Next::NewStream);
            }
            restoring.summary.restored_from_tier2 = true;
            if !log_only {
                restoring.snapshot_candidates =
                    restoring.snapshot_objects.keys().copied().collect();
            }
            next_snapshot(stream, restoring)
        }
        (RestoreOp::GetSnapshot(snapshot_id), IoCompletion::Object(completion)) => {
            let key = snapshot_object_key(stream, *snapshot_id);
            let bytes = match completion {
                ObjectCompletion::Got { bytes, .. } => bytes,
                // Listed, then gone: try the next one.
                ObjectCompletion::Failed(ObjectErrorKind::NotFound) => {
                    return next_snapshot(stream, restoring);
                }
                other => return Err(object_error(stream, op, key, format!("{other:?}"))),
            };
            match Snapshot::decode(&bytes) {
                Ok(snapshot) if snapshot.snapshot_id() == *snapshot_id => {
                    restoring.summary.snapshot_id = Some(*snapshot_id);
                    restoring.first_chunk = snapshot.position().chunk_index;
                    restoring.snapshot = Some((*snapshot_id, bytes));
                    restoring.replayer = Some(Replayer::new(Some(snapshot)));
                    start_chunks(stream, restoring)
                }
                Ok(snapshot) => {
                    let reason = format!(
                        "the object holds snapshot {} (its key says {snapshot_id})",
                        snapshot.snapshot_id()
                    );
                    skip_snapshot(stream, restoring, key, reason);
                    next_snapshot(stream, restoring)
                }
                Err(error) => {
                    skip_snapshot(stream, restoring, key, error.to_string());
                    next_snapshot(stream, restoring)
                }
            }
        }
        (RestoreOp::CreateDir(_), IoCompletion::Disk(DiskCompletion::Done)) => {
            if let Some(path) = restoring.dirs_to_create.pop_front() {
                return Ok(Next::Issue(
                    RestoreOp::CreateDir(path.clone()),
                    disk(DiskRequest::CreateDir { path }),
                ));
            }
            next_chunk(now_ms, stream, restoring)
        }
        (RestoreOp::GetChunk(chunk_index), IoCompletion::Object(completion)) => {
            let key = manifest_chunk_object_key(stream, *chunk_index);
            let bytes = match completion {
                ObjectCompletion::Got { bytes, .. } => bytes,
                other => return Err(object_error(stream, op, key, format!("{other:?}"))),
            };
            // As local recovery does: a longer object is cut at the limit and the chunk
            // decoder judges it.
            let limit = MANIFEST_CHUNK_BYTES_MAX as usize;
            let bytes = if bytes.len() > limit {
                bytes.slice(..limit)
            } else {
                bytes
            };
            let replayer = restoring.replayer.as_mut().expect("replay started");
            replayer
                .replay_chunk(now_ms, *chunk_index, &bytes)
                .expect("chunks are replayed in increasing index order (sorted listing)");
            restoring.chunk_in_hand = Some((*chunk_index, bytes));
            let path = manifest_dir(stream).join(&chunk_temp_file_name(*chunk_index));
            Ok(Next::Issue(
                RestoreOp::CreateTemp(path.clone()),
                disk(DiskRequest::Create { path }),
            ))
        }
        (RestoreOp::CreateTemp(path), IoCompletion::Disk(DiskCompletion::Done)) => {
            let bytes = match (&restoring.chunk_in_hand, &restoring.plan) {
                (Some((_, bytes)), _) => bytes.clone(),
                (None, Some(_)) => restoring
                    .snapshot
                    .as_ref()
                    .expect("only a chosen snapshot is written after the plan")
                    .1
                    .clone(),
                (None, None) => unreachable!("a temp file is written for a chunk or the snapshot"),
            };
            Ok(Next::Issue(
                RestoreOp::WriteTemp(path.clone()),
                disk(DiskRequest::WriteAt {
                    path: path.clone(),
                    offset: 0,
                    bytes,
                }),
            ))
        }
        (RestoreOp::WriteTemp(path), IoCompletion::Disk(DiskCompletion::Done)) => Ok(Next::Issue(
            RestoreOp::SyncTemp(path.clone()),
            disk(DiskRequest::SyncFile { path: path.clone() }),
        )),
        (RestoreOp::SyncTemp(_), IoCompletion::Disk(DiskCompletion::Done)) => {
            if let Some((chunk_index, _)) = restoring.chunk_in_hand.take() {
                restoring.chunks_written.push(chunk_index);
                restoring.summary.chunks_restored += 1;
                return next_chunk(now_ms, stream, restoring);
            }
            // The snapshot's temp file is durable: rename everything into place.
            Ok(next_rename(stream, restoring))
        }
        (
            RestoreOp::GetTail {
                segment_id,
                tail_bytes,
                probe,
            },
            IoCompletion::Object(completion),
        ) => {
            let key = segment_object_key(stream, *segment_id);
            let (bytes, object_size) = match completion {
                ObjectCompletion::Got { bytes, object_size } => (bytes, object_size),
                ObjectCompletion::Failed(ObjectErrorKind::NotFound) => {
                    return Err(recovery_error(
                        stream,
                        format!("segment object {key} vanished while it was being adopted"),
                    ));
                }
                other => return Err(object_error(stream, op, key, format!("{other:?}"))),
            };
            let corrupt = |reason: String| {
                recovery_error(
                    stream,
                    format!("segment object {key} cannot be adopted: {reason}"),
                )
            };
            if bytes.len() as u64 != *tail_bytes {
                return Err(corrupt(format!(
                    "asked for its last {tail_bytes} bytes, got {}",
                    bytes.len()
                )));
            }
            match ArtifactIndex::decode_tail(&bytes, object_size) {
                Ok(TailDecode::Complete(index)) => {
                    if index.artifact_bytes() != object_size {
                        return Err(corrupt(format!(
                            "its index describes {} bytes, the object has {object_size}",
                            index.artifact_bytes()
                        )));
                    }
                    let adopting = restoring.adopting.as_mut().expect("adopting a segment");
                    let first = index.frames()[0];
                    adopting.index = Some(index);
                    Ok(get_frame(stream, *segment_id, &first))
                }
                Ok(TailDecode::NeedTail { tail_bytes }) if *probe => {
                    let start = object_size - tail_bytes;
                    Ok(Next::Issue(
                        RestoreOp::GetTail {
                            segment_id: *segment_id,
                            tail_bytes,
                            probe: false,
                        },
                        IoRequest::Object(ObjectRequest::GetRange {
                            key,
                            start,
                            end: object_size,
                        }),
                    ))
                }
                Ok(TailDecode::NeedTail { tail_bytes }) => Err(corrupt(format!(
                    "its tail asks for {tail_bytes} bytes after it was given the tail it asked for"
                ))),
                Err(error) => Err(corrupt(error.to_string())),
            }
        }
        (RestoreOp::GetFrame { segment_id, frame }, IoCompletion::Object(completion)) => {
            let key = segment_object_key(stream, *segment_id);
            let bytes = match completion {
                ObjectCompletion::Got { bytes, .. } => bytes,
                other => return Err(object_error(stream, op, key, format!("{other:?}"))),
            };
            adopt_frame(stream, restoring, *segment_id, *frame, &bytes, &key)
        }
        (RestoreOp::PlaceMarker, IoCompletion::Disk(DiskCompletion::Done)) => {
            restoring.marker = Marker::Placed;
            let path = manifest_dir(stream);
            Ok(Next::Issue(
                RestoreOp::SyncDir(path.clone()),
                disk(DiskRequest::SyncDir { path }),
            ))
        }
        (RestoreOp::RemoveMarker, IoCompletion::Disk(DiskCompletion::Done)) => {
            restoring.marker = Marker::Removed;
            let path = manifest_dir(stream);
            Ok(Next::Issue(
                RestoreOp::SyncDir(path.clone()),
                disk(DiskRequest::SyncDir { path }),
            ))
        }
        (RestoreOp::Rename(_), IoCompletion::Disk(DiskCompletion::Done)) => {
            Ok(next_rename(stream, restoring))
        }
        (RestoreOp::SyncDir(_), IoCompletion::Disk(DiskCompletion::Done)) => {
            Ok(next_rename(stream, restoring))
        }
        (op, IoCompletion::Object(completion)) => Err(object_error(
            stream,
            op,
            op_key(stream, op),
            format!("{completion:?}"),
        )),
        (op, IoCompletion::Disk(completion)) => Err(disk_error(stream, op, &completion)),
        (op, completion) => panic!("restore op {op:?} got a CPU completion {completion:?}"),
    }
}

/// The object key (or listed prefix) an object request of `op` names.
fn op_key(stream: &StreamName, op: &RestoreOp) -> String {
    match op {
        RestoreOp::ListManifest => ObjectKey::manifest_prefix(stream),
        RestoreOp::ListSnapshots => ObjectKey::snapshots_prefix(stream),
        RestoreOp::ListSegments => ObjectKey::segments_prefix(stream),
        RestoreOp::GetSnapshot(snapshot_id) => snapshot_object_key(stream, *snapshot_id),
        RestoreOp::GetChunk(chunk_index) => manifest_chunk_object_key(stream, *chunk_index),
        RestoreOp::GetTail { segment_id, .. } | RestoreOp::GetFrame { segment_id, .. } => {
            segment_object_key(stream, *segment_id)
        }
        RestoreOp::PlaceMarker | RestoreOp::RemoveMarker => marker_path(stream).to_string(),
        RestoreOp::CreateDir(path)
        | RestoreOp::CreateTemp(path)
        | RestoreOp::WriteTemp(path)
        | RestoreOp::SyncTemp(path)
        | RestoreOp::Rename(path)
        | RestoreOp::SyncDir(path) => path.to_string(),
    }
}

/// The listed objects whose keys parse (others are not ours and are ignored).
fn parsed(metas: &[ObjectMeta]) -> impl Iterator<Item = (ObjectKey, &ObjectMeta)> {
    metas
        .iter()
        .filter_map(|meta| ObjectKey::parse(&meta.key).ok().map(|key| (key, meta)))
}

fn listing_limit(
    stream: &StreamName,
    what: &str,
    count: usize,
    limit: usize,
) -> Result<(), StoreError> {
    if count > limit {
        return Err(recovery_error(
            stream,
            format!("Tier 2 lists more than {limit} {what} objects of the stream"),
        ));
    }
    Ok(())
}

fn skip_snapshot(stream: &StreamName, restoring: &mut Restoring, key: String, reason: String) {
    restoring.summary.snapshots_skipped += 1;
    restoring.summary.push(
        stream,
        super::RecoveryEvent::SnapshotSkipped { path: key, reason },
    );
}

/// Tries the next snapshot object, newest first; with none left, replays every chunk.
fn next_snapshot(stream: &StreamName, restoring: &mut Restoring) -> Result<Next, StoreError> {
    while restoring.snapshots_tried < STORE_RECOVERY_SNAPSHOTS_TRIED_MAX
        && let Some(snapshot_id) = restoring.snapshot_candidates.pop()
    {
        restoring.snapshots_tried += 1;
        let key = snapshot_object_key(stream, snapshot_id);
        let size = restoring.snapshot_objects[&snapshot_id];
        if size > STORE_SNAPSHOT_FILE_BYTES_MAX {
            let reason =
                format!("{size} bytes exceeds the limit of {STORE_SNAPSHOT_FILE_BYTES_MAX} bytes");
            skip_snapshot(stream, restoring, key, reason);
            continue;
        }
        return Ok(Next::Issue(
            RestoreOp::GetSnapshot(snapshot_id),
            IoRequest::Object(ObjectRequest::Get { key }),
        ));
    }
    restoring.replayer = Some(Replayer::new(None));
    start_chunks(stream, restoring)
}

/// Picks the chunks to fetch (checking they are contiguous) and creates the
/// directories the files go to.
fn start_chunks(stream: &StreamName, restoring: &mut Restoring) -> Result<Next, StoreError> {
    let first = restoring.first_chunk;
    let chunks: Vec<u64> = restoring
        .chunk_objects
        .range(first..)
        .map(|(&index, _)| index)
        .collect();
    // Contiguous from `first`: the snapshot's own chunk may be missing only as the
    // lost active chunk, that is when no later chunk is present either.
    for (expected, &chunk_index) in (first..).zip(chunks.iter()) {
        if chunk_index != expected {
            return Err(recovery_error(
                stream,
                format!(
                    "manifest chunk object {} is missing from Tier 2 (chunk {chunk_index} \
                     after it is present)",
                    manifest_chunk_object_key(stream, expected)
                ),
            ));
        }
    }
    restoring.chunks_to_fetch = chunks.into();
    restoring
        .dirs_to_create
        .extend(restoring.snapshot.is_some().then(|| snapshots_dir(stream)));
    let path = manifest_dir(stream);
    Ok(Next::Issue(
        RestoreOp::CreateDir(path.clone()),
        disk(DiskRequest::CreateDir { path }),
    ))
}

fn next_chunk(
    now_ms: u64,
    stream: &StreamName,
    restoring: &mut Restoring,
) -> Result<Next, StoreError> {
    if let Some(chunk_index) = restoring.chunks_to_fetch.pop_front() {
        return Ok(Next::Issue(
            RestoreOp::GetChunk(chunk_index),
            IoRequest::Object(ObjectRequest::Get {
                key: manifest_chunk_object_key(stream, chunk_index),
            }),
        ));
    }
    let replayer = restoring.replayer.take().expect("replay started");
    // The planning replay's time figures are not kept: local recovery replays again.
    let outcome = replayer.finish(0);
    let index = outcome.index;
    let choice = choose_adoptions(now_ms, stream, restoring, &index)?;
    restoring.presumed_deleted = choice.presumed_deleted;
    restoring.deletion_requeued = choice.deletion_requeued;
    let to_adopt = choice.adopt;
    restoring.index = Some(index);
    restoring.to_adopt = to_adopt.into();
    next_adoption(stream, restoring)
}

/// What the plan does with each segment object, before any artifact is read.
struct Adoptions {
    adopt: Vec<SegmentId>,
    presumed_deleted: BTreeSet<SegmentId>,
    deletion_requeued: BTreeSet<SegmentId>,
}

/// Which objects to adopt, which missing objects retention deleted, and which
/// present ones it was deleting; the errors that need no artifact read.
fn choose_adoptions(
    now_ms: u64,
    stream: &StreamName,
    restoring: &Restoring,
    index: &ManifestIndex,
) -> Result<Adoptions, StoreError> {
    let objects = &restoring.segment_objects;
    let first_object = objects.keys().next().copied();
    let last_object = objects.keys().next_back().copied();
    let newest_known = index.segments().keys().next_back().copied();
    let mut adopt = Vec::new();
    let mut presumed_deleted = BTreeSet::new();
    // Uploaded segments whose objects are gone while a later object is present.
    let mut gaps: Vec<SegmentId> = Vec::new();
    for (&segment_id, entry) in index.segments() {
        let key = segment_object_key(stream, segment_id);
        match (objects.get(&segment_id), &entry.tier2_object) {
            (Some(object), Some(recorded)) => {
                if object.size != recorded.object_bytes {
                    return Err(recovery_error(
                        stream,
                        format!(
                            "segment object {key} has {} bytes, the manifest recorded {}",
                            object.size, recorded.object_bytes
                        ),
                    ));
                }
            }
            (Some(_), None) => adopt.push(segment_id),
            // Its deletion finished; the `Tier2Deleted` record was lost.
            (None, _) if entry.jobs.tier2_delete.is_some() => {}
            // Retention deletes only the oldest segments, after journaling their
            // `Tier2DeleteQueued` locally; a record the lost unsealed chunk held. A
            // missing object older than every present one is that, and only that,
            // when a retention policy is configured (without one, it is a loss).
            (None, Some(_))
                if restoring.retention_reason.is_some()
                    && first_object.is_some_and(|first| segment_id < first) =>
            {
                presumed_deleted.insert(segment_id);
            }
            (None, _) if last_object.is_none_or(|last| segment_id > last) => {
                if let Lifecycle::Sealed(seal) = entry.lifecycle {
                    return Err(recovery_error(
                        stream,
                        format!(
                            "segment {segment_id} (offsets {}..{}) is sealed in the manifest, \
                             but Tier 2 holds no object {key} for it: its records exist \
                             nowhere",
                            entry.base_offset,
                            entry.base_offset.saturating_add(seal.record_count)
                        ),
                    ));
                }
                // The active segment when the disk was lost: never in Tier 2.
            }
            (None, Some(_)) if restoring.retention_reason.is_some() => gaps.push(segment_id),
            (None, _) => {
                return Err(recovery_error(
                    stream,
                    format!(
                        "segment object {key} is missing from Tier 2: the manifest records \
                         segment {segment_id}, and a later segment object is present"
                    ),
                ));
            }
        }
    }
    for &segment_id in objects.keys() {
        if index.segment(segment_id).is_some() {
            continue;
        }
        if let Some(newest) = newest_known
            && segment_id < newest
        {
            return Err(recovery_error(
                stream,
                format!(
                    "Tier 2 holds segment object {} which the manifest does not know, \
                     although it knows the later segment {newest}",
                    segment_object_key(stream, segment_id)
                ),
            ));
        }
        adopt.push(segment_id);
    }
    adopt.sort_unstable();
    let mut deletion_requeued = BTreeSet::new();
    if let Some(&through) = gaps.last() {
        if !retention_deletes_through(now_ms, &restoring.retention, index, through) {
            return Err(recovery_error(
                stream,
                format!(
                    "segment object {} is missing from Tier 2: the manifest records segment \
                     {}, a later segment object is present, and the retention policy would \
                     not have deleted it yet",
                    segment_object_key(stream, gaps[0]),
                    gaps[0]
                ),
            ));
        }
        for (&segment_id, entry) in index.segments().range(..=through) {
            if entry.jobs.tier2_delete.is_some() {
                continue; // Already queued: the usual paths handle it.
            }
            if objects.contains_key(&segment_id) {
                deletion_requeued.insert(segment_id);
            } else {
                presumed_deleted.insert(segment_id);
            }
        }
    }
    Ok(Adoptions {
        adopt,
        presumed_deleted,
        deletion_requeued,
    })
}

/// Whether the retention policy, applied at `now_ms` to the sealed uploaded segments
/// the manifest knows (those not already queued for deletion, then an empty active
/// segment, as a retention pass sees them), deletes a prefix through `through`.
/// Retention only deletes more as time passes and the stream grows, so a segment it
/// would delete now it may have deleted before the disk was lost; one it would keep,
/// it cannot have deleted.
fn retention_deletes_through(
    now_ms: u64,
    policy: &RetentionPolicy,
    index: &ManifestIndex,
    through: SegmentId,
) -> bool {
    let mut list: Vec<RetainedSegment> = Vec::new();
    for entry in index.segments().values() {
        if entry.jobs.tier2_delete.is_some() {
            continue;
        }
        let (Lifecycle::Sealed(seal), Some(object)) = (entry.lifecycle, &entry.tier2_object) else {
            break;
        };
        if list
            .last()
            .is_some_and(|previous| previous.next_offset != entry.base_offset)
        {
            break;
        }
        let Some(next_offset) = entry.base_offset.checked_add(seal.record_count) else {
            break;
        };
        list.push(RetainedSegment {
            segment_id: entry.segment_id,
            base_offset: entry.base_offset,
            next_offset,
            sealed_at_ms: seal.sealed_at_ms,
            object_bytes: object.object_bytes,
        });
    }
    let Some(last) = list.last() else {
        return false;
    };
    let end = last.next_offset;
    list.push(RetainedSegment {
        segment_id: SegmentId(last.segment_id.0.saturating_add(1)),
        base_offset: end,
        next_offset: end,
        sealed_at_ms: now_ms,
        object_bytes: 0,
    });
    select_retention(now_ms, policy, &list)
        .delete
        .contains(&through)
}

fn next_adoption(stream: &StreamName, restoring: &mut Restoring) -> Result<Next, StoreError> {
    if let Some(segment_id) = restoring.to_adopt.pop_front() {
        let size = restoring.segment_objects[&segment_id].size;
        restoring.adopting = Some(Adopting {
            segment_id,
            index: None,
            header: None,
        });
        let tail_bytes = size.min(u64::from(ARTIFACT_TAIL_PROBE_BYTES));
        return Ok(Next::Issue(
            RestoreOp::GetTail {
                segment_id,
                tail_bytes,
                probe: true,
            },
            IoRequest::Object(ObjectRequest::GetRange {
                key: segment_object_key(stream, segment_id),
                start: size - tail_bytes,
                end: size,
            }),
        ));
    }
    let plan = make_plan(stream, restoring)?;
    restoring.plan = Some(plan);
    // Every chunk temp file is durable; now the snapshot's, then the renames.
    for &chunk_index in &restoring.chunks_written {
        let directory = manifest_dir(stream);
        restoring.renames.push_back((
            directory.join(&chunk_temp_file_name(chunk_index)),
            directory.join(&chunk_file_name(chunk_index)),
        ));
    }
    if let Some((snapshot_id, _)) = &restoring.snapshot {
        let temp = snapshot_temp_path(stream, *snapshot_id);
        restoring
            .renames
            .push_front((temp.clone(), snapshot_path(stream, *snapshot_id)));
        return Ok(Next::Issue(
            RestoreOp::CreateTemp(temp.clone()),
            disk(DiskRequest::Create { path: temp }),
        ));
    }
    Ok(next_rename(stream, restoring))
}

fn snapshot_temp_path(stream: &StreamName, snapshot_id: u64) -> LocalPath {
    snapshots_dir(stream).join(&format!("{}.tmp", snapshot_file_name(snapshot_id)))
}

fn get_frame(
    stream: &StreamName,
    segment_id: SegmentId,
    location: &crate::artifact::FrameLocation,
) -> Next {
    let range = location.compressed_range();
    Next::Issue(
        RestoreOp::GetFrame {
            segment_id,
            frame: location.frame,
        },
        IoRequest::Object(ObjectRequest::GetRange {
            key: segment_object_key(stream, segment_id),
            start: range.start,
            end: range.end,
        }),
    )
}

/// A frame of an adopted object arrived: the first one holds the header, the last one
/// the footer (one frame may hold both).
fn adopt_frame(
    stream: &StreamName,
    restoring: &mut Restoring,
    segment_id: SegmentId,
    frame: u32,
    compressed: &[u8],
    key: &str,
) -> Result<Next, StoreError> {
    let corrupt = |reason: String| {
        recovery_error(
            stream,
            format!("segment object {key} cannot be adopted: {reason}"),
        )
    };
    let adopting = restoring.adopting.as_mut().expect("adopting a segment");
    assert_eq!(adopting.segment_id, segment_id, "one adoption at a time");
    let index = adopting.index.as_ref().expect("the tail is read first");
    let location = index.frames()[frame as usize];
    let raw = decode_frame(compressed, &location).map_err(|error| corrupt(error.to_string()))?;
    let last = index.frame_count() - 1;
    if frame == 0 {
        let header = SegmentHeader::decode(&raw).map_err(|error| corrupt(error.to_string()))?;
        if header.segment_id != segment_id {
            return Err(corrupt(format!(
                "its header names segment {}",
                header.segment_id
            )));
        }
        adopting.header = Some(header);
        if last != 0 {
            let location = index.frames()[last as usize];
            return Ok(get_frame(stream, segment_id, &location));
        }
    }
    let footer_bytes = u64::from(SEGMENT_FOOTER_BYTES);
    let raw_len = raw.len() as u64;
    if raw_len < footer_bytes
        || (frame == 0 && raw_len < footer_bytes + u64::from(SEGMENT_HEADER_BYTES))
    {
        return Err(corrupt(format!(
            "its last frame holds only {raw_len} bytes"
        )));
    }
    let footer_at = location.raw_range().end - footer_bytes;
    let footer = SegmentFooter::decode(&raw[(raw_len - footer_bytes) as usize..], footer_at)
        .map_err(|error| corrupt(error.to_string()))?;
    let header = adopting
        .header
        .expect("the first frame is read before the last");
    if footer.record_count != index.record_count() {
        return Err(corrupt(format!(
            "its footer counts {} records, its index {}",
            footer.record_count,
            index.record_count()
        )));
    }
    if footer.durable_bytes + footer_bytes != index.segment_raw_bytes() {
        return Err(corrupt(format!(
            "its footer says {} durable bytes, its index {} segment bytes",
            footer.durable_bytes,
            index.segment_raw_bytes()
        )));
    }
    if index.record_count() > 0 && index.first_record_offset() != header.base_offset {
        return Err(corrupt(format!(
            "its header says base offset {}, its index {}",
            header.base_offset,
            index.first_record_offset()
        )));
    }
    let known = restoring
        .index
        .as_ref()
        .expect("planned before adopting")
        .segment(segment_id);
    if let Some(entry) = known {
        if entry.base_offset != header.base_offset {
            return Err(corrupt(format!(
                "its base offset is {}, the manifest says {}",
                header.base_offset, entry.base_offset
            )));
        }
        if let Lifecycle::Sealed(seal) = entry.lifecycle
            && (seal.record_count != footer.record_count
                || seal.durable_bytes != footer.durable_bytes
                || seal.checksum != footer.segment_crc)
        {
            return Err(corrupt(format!(
                "its footer ({} records, {} bytes, crc {:#x}) disagrees with the manifest's \
                 seal ({} records, {} bytes, crc {:#x})",
                footer.record_count,
                footer.durable_bytes,
                footer.segment_crc,
                seal.record_count,
                seal.durable_bytes,
                seal.checksum
            )));
        }
    }
    restoring.adopting = None;
    restoring
        .adopted
        .insert(segment_id, AdoptedSegment { header, footer });
    next_adoption(stream, restoring)
}

/// Checks the restored segments are dense and decides the records and the start.
fn make_plan(stream: &StreamName, restoring: &mut Restoring) -> Result<RestorePlan, StoreError> {
    let index = restoring.index.as_ref().expect("planned");
    let mut records = Vec::new();
    let mut summary_events = Vec::new();
    let mut deleted = BTreeSet::new();
    for (&segment_id, entry) in index.segments() {
        if !restoring.segment_objects.contains_key(&segment_id) && entry.jobs.tier2_delete.is_some()
        {
            deleted.insert(segment_id);
        }
    }
    // (base offset, record count) of every segment Tier 2 holds.
    let mut held: BTreeMap<SegmentId, (u64, u64)> = BTreeMap::new();
    for &segment_id in restoring.segment_objects.keys() {
        if restoring.deletion_requeued.contains(&segment_id) {
            continue; // Being deleted: below the restored stream's start.
        }
        if let Some(adopted) = restoring.adopted.get(&segment_id) {
            held.insert(
                segment_id,
                (adopted.header.base_offset, adopted.footer.record_count),
            );
            continue;
        }
        let entry = index
            .segment(segment_id)
            .expect("an object not adopted is one the manifest records");
        let Lifecycle::Sealed(seal) = entry.lifecycle else {
            unreachable!("an uploaded segment is sealed");
        };
        held.insert(segment_id, (entry.base_offset, seal.record_count));
    }
    let mut previous: Option<(SegmentId, u64)> = None;
    for (&segment_id, &(base_offset, record_count)) in &held {
        if let Some((before, end)) = previous {
            if segment_id.0 != before.0 + 1 {
                return Err(recovery_error(
                    stream,
                    format!(
                        "segment object {} is missing from Tier 2, between segments {before} \
                         and {segment_id}",
                        segment_object_key(stream, SegmentId(before.0 + 1))
                    ),
                ));
            }
            if base_offset != end {
                return Err(recovery_error(
                    stream,
                    format!(
                        "segment {segment_id} starts at offset {base_offset}, but segment \
                         {before} ends at {end}: offsets are not dense"
                    ),
                ));
            }
        }
        let end = base_offset
            .checked_add(record_count)
            .ok_or_else(|| recovery_error(stream, format!("segment {segment_id} ends past u64")))?;
        previous = Some((segment_id, end));
    }
    let open = index.segments().values().find(|entry| {
        entry.lifecycle == Lifecycle::Open && !restoring.adopted.contains_key(&entry.segment_id)
    });
    let start = match previous {
        Some((last, end)) => {
            let next = last
                .0
                .checked_add(1)
                .filter(|&id| id != u64::MAX)
                .ok_or_else(|| recovery_error(stream, "segment ids are exhausted".into()))?;
            (SegmentId(next), end)
        }
        None => open.map_or((SegmentId(0), 0), |entry| {
            (entry.segment_id, entry.base_offset)
        }),
    };
    if let Some(entry) = open
        && (entry.segment_id != start.0 || entry.base_offset != start.1)
    {
        return Err(recovery_error(
            stream,
            format!(
                "the manifest's active segment {} starts at offset {}, but Tier 2's history \
                 continues with segment {} at offset {}",
                entry.segment_id, entry.base_offset, start.0, start.1
            ),
        ));
    }
    for (&segment_id, adopted) in &restoring.adopted {
        let key = segment_object_key(stream, segment_id);
        let known = index.segment(segment_id);
        if known.is_none() {
            records.push(ManifestRecord::SegmentOpened {
                segment_id,
                base_offset: adopted.header.base_offset,
                opened_at_ms: adopted.header.created_at_ms,
            });
        }
        if !known.is_some_and(|entry| matches!(entry.lifecycle, Lifecycle::Sealed(_))) {
            records.push(seal_record(segment_id, adopted));
        }
        let object = &restoring.segment_objects[&segment_id];
        records.push(ManifestRecord::UploadDone {
            segment_id,
            key,
            etag: object.etag.clone().unwrap_or_default(),
            object_bytes: object.size,
        });
        // A segment the manifest knows gets its evictions from reconciliation.
        if known.is_none() {
            records.push(ManifestRecord::LocalEvicted {
                segment_id,
                tier: Tier::Tier0,
            });
        }
    }
    // Retention's deletes the lost chunk held: queued again for objects still
    // present, queued and done for the missing ones.
    let requeued = restoring.deletion_requeued.iter().map(|&id| (id, true));
    let presumed = restoring.presumed_deleted.iter().map(|&id| (id, false));
    for (segment_id, present) in requeued.chain(presumed) {
        let key = segment_object_key(stream, segment_id);
        records.push(ManifestRecord::Tier2DeleteQueued {
            segment_id,
            key: key.clone(),
            reason: restoring
                .retention_reason
                .expect("taken as retention's only under a retention policy"),
        });
        summary_events.push(if present {
            RecoveryEvent::SegmentDeletionRequeued { key, segment_id }
        } else {
            deleted.insert(segment_id);
            RecoveryEvent::SegmentPresumedDeleted { key, segment_id }
        });
    }
    for &segment_id in &deleted {
        // The restore lost every local copy: evictions first, so the `Tier2Deleted`
        // leaves the entry with no copy and removes it.
        let local = index.segment(segment_id).map(|entry| entry.local);
        for (held, tier) in [
            (local.is_some_and(|local| local.tier0), Tier::Tier0),
            (local.is_some_and(|local| local.tier1), Tier::Tier1),
        ] {
            if held {
                records.push(ManifestRecord::LocalEvicted { segment_id, tier });
            }
        }
        records.push(ManifestRecord::Tier2Deleted {
            segment_id,
            key: segment_object_key(stream, segment_id),
        });
    }
    let mut summary = std::mem::take(&mut restoring.summary);
    summary.segments_presumed_deleted = restoring.presumed_deleted.len() as u64;
    summary.segment_deletions_requeued = restoring.deletion_requeued.len() as u64;
    for event in summary_events {
        summary.push(stream, event);
    }
    summary.segments_restored = held.len() as u64;
    summary.segments_adopted = restoring.adopted.len() as u64;
    Ok(RestorePlan {
        start,
        records,
        adopted: restoring.adopted.keys().copied().collect(),
        deleted,
        newest_snapshot_id: restoring.snapshot_objects.keys().next_back().copied(),
        summary,
    })
}

fn seal_record(segment_id: SegmentId, adopted: &AdoptedSegment) -> ManifestRecord {
    let footer = adopted.footer;
    ManifestRecord::SealSegment {
        segment_id,
        base_offset: adopted.header.base_offset,
        record_count: footer.record_count,
        durable_bytes: footer.durable_bytes,
        checksum: footer.segment_crc,
        last_ext_id: footer.last_ext_id,
        coordinator_watermark: footer.coordinator_watermark,
        flush_failure: footer.flush_failure,
        sealed_at_ms: footer.sealed_at_ms,
    }
}

/// Renames the next temp file into place, then fsyncs the directories; then hands
/// the files to local recovery.
fn next_rename(stream: &StreamName, restoring: &mut Restoring) -> Next {
    if restoring.marker == Marker::NotPlaced {
        return Next::Issue(
            RestoreOp::PlaceMarker,
            disk(DiskRequest::Create {
                path: marker_path(stream),
            }),
        );
    }
    if let Some((from, to)) = restoring.renames.pop_front() {
        if let Some(directory) = to.parent()
            && !restoring.dirs_to_sync.contains(&directory)
        {
            restoring.dirs_to_sync.push_back(directory);
        }
        return Next::Issue(
            RestoreOp::Rename(to.clone()),
            disk(DiskRequest::Rename { from, to }),
        );
    }
    if let Some(path) = restoring.dirs_to_sync.pop_front() {
        return Next::Issue(
            RestoreOp::SyncDir(path.clone()),
            disk(DiskRequest::SyncDir { path }),
        );
    }
    if restoring.marker == Marker::Placed {
        return Next::Issue(
            RestoreOp::RemoveMarker,
            disk(DiskRequest::Remove {
                path: marker_path(stream),
            }),
        );
    }
    let plan = restoring.plan.take().expect("the plan is complete");
    let names = restoring
        .chunks_written
        .iter()
        .map(|&chunk_index| chunk_file_name(chunk_index))
        .collect();
    Next::Recover(plan, names)
}
