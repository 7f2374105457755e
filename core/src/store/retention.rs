//! Retention in the coordinator: which sealed segments of a stream go, and deleting
//! them from every tier.
//!
//! A pass ([`Store::run_retention`]) runs after every committed seal and upload, and
//! on the upkeep timer (every [`STORE_UPKEEP_INTERVAL_MS`], armed only while a pass
//! could change something). It lists the stream's segments from its manifest index,
//! oldest first, with the active segment last (so the newest sealed segment may go
//! too, but never the active one), and asks [`select_retention`] for a prefix to delete
//! by age and size under `tier2.retention`. The prefix is then cut at the first segment
//! that may not go yet: one whose upload is not committed (no Tier 2 object, or an
//! `UploadDone` journaled but not durable), one a reader pins in Tier 0, or one Tier 1
//! is hydrating. The default policy keeps everything and no pass does anything.
//!
//! For each chosen segment, oldest first:
//! 1. journal `Tier2DeleteQueued` (reason `RetentionAge` or `RetentionSize`), and move
//!    the stream's start offset past the segment at once: reads below
//!    [`Store::start_offset`] are out of range from now on;
//! 2. once that record is committed (so replay knows the segment is going), evict the
//!    Tier 0 file ([`Tier0Cache::evict_now`]: remove, fsync the directory, then
//!    `LocalEvicted { Tier0 }` as for any eviction) and the Tier 1 artifact
//!    ([`Tier1Cache::evict_now`]: remove, fsync the directory, then
//!    `LocalEvicted { Tier1 }`);
//! 3. once no local copy is left, delete the Tier 2 object
//!    ([`Tier2Transfers::enqueue_delete`](crate::tier2::Tier2Transfers::enqueue_delete), retried by the Tier 2 retry policy); on
//!    `Deleted` journal `Tier2Deleted` (the index then drops the segment) and forget
//!    the segment in Tier 1.
//!
//! An operator's deletion (`StoreCommand::DeleteSegments`, reason `Operator`, see
//! [`Store::delete_segments`]) takes the same steps, except that its Tier 2 object is
//! deleted only once a snapshot that covers its `Tier2DeleteQueued` is complete (so in
//! Tier 2): the store asks for one. Retention's gaps are recognised by a restore from
//! the policy, but an operator's are not; without the snapshot, a disk lost before the
//! chunk holding the record reached Tier 2 would leave a restore finding objects
//! missing that its manifest still lists, and refusing. A reopen asks for a new
//! snapshot before it carries such a deletion on.
//!
//! A step that cannot run now (pinned, queue full, eviction backing off) is retried on
//! the upkeep timer. A Tier 2 delete that ends in `DeleteFailed` is enqueued again on
//! the timer, at most [`STORE_UPKEEP_ROUNDS_MAX`] times; then it is abandoned (counted
//! in `deletes_abandoned`; the manifest still holds the pending delete job). A reopen
//! carries on every deletion the manifest holds queued ([`Store::resume_deletions`]),
//! whatever the policy is by then: the records are already below the start offset.
//!
//! **Invariants** (checked by `check_retention_invariants`)
//! - Segments being deleted are the oldest of the stream: every one has a smaller id
//!   than every other segment the index holds, and the start offset is the base offset
//!   of the first segment not being deleted.
//! - The start offset never passes the durable watermark, and never moves back.
//! - A segment being deleted is sealed and had a committed Tier 2 object when chosen;
//!   its Tier 2 delete is requested only once neither Tier 0 nor Tier 1 holds it.
//! - A segment whose `UploadDone` is not committed is never chosen.
//! - An operator's deletion reaches Tier 2 only after a completed snapshot covers its
//!   `Tier2DeleteQueued`.

use super::{AfterCommit, Phase, StoreError, StoreReply, StreamEntry};
use crate::SegmentId;
use crate::driver::CommandToken;
use crate::limits::{STORE_UPKEEP_INTERVAL_MS, STORE_UPKEEP_ROUNDS_MAX};
use crate::manifest::index::{Lifecycle, ManifestIndex, SegmentEntry};
use crate::manifest::record::{ManifestRecord, ReasonCode};
use crate::names::{SegmentKey, StreamName};
use crate::store::Store;
use crate::stream::StreamMachine;
use crate::tier0::Tier0Cache;
use crate::tier1::Tier1Cache;
use crate::tier2::{RetainedSegment, RetentionPolicy, Tier2Event, select_retention};
use std::collections::{BTreeMap, BTreeSet};

/// Where the Tier 2 object of a segment being deleted is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier2Step {
    /// Not asked yet (local copies remain, or the queue was full).
    Waiting,
    /// Held by [`Tier2Transfers`].
    Queued,
    /// The last delete ended in `DeleteFailed`; enqueued again on the upkeep timer.
    Failed,
    /// Given up after [`STORE_UPKEEP_ROUNDS_MAX`] failed rounds.
    Abandoned,
}

/// One segment retention is deleting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Deletion {
    reason: ReasonCode,
    object_bytes: u64,
    /// The `Tier2DeleteQueued` record is committed: copies may be deleted.
    committed: bool,
    tier2: Tier2Step,
    /// Tier 2 deletes that ended in `DeleteFailed`.
    failed_rounds: u32,
    /// An operator's deletion: the Tier 2 object is deleted only once a snapshot in
    /// Tier 2 covers the manifest record at this ordinal (see the module doc).
    snapshot_before_delete: Option<u64>,
}

/// Per-stream retention state.
#[derive(Debug, Clone, Default)]
pub(super) struct RetentionState {
    /// Reads below this offset are out of range.
    start_offset: u64,
    /// Segments whose `UploadDone` is journaled but not yet committed.
    uploads_uncommitted: BTreeSet<SegmentId>,
    /// Segments being deleted, oldest first.
    deleting: BTreeMap<SegmentId, Deletion>,
    /// When the upkeep timer last ran retention for the stream.
    last_pass_ms: u64,
    pub(super) segments_deleted: u64,
    pub(super) bytes_deleted: u64,
    pub(super) delete_failures: u64,
    pub(super) deletes_abandoned: u64,
}

impl RetentionState {
    pub(super) fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// Deletions not finished and not abandoned.
    pub(super) fn deletes_pending(&self) -> u64 {
        self.deleting
            .values()
            .filter(|deletion| deletion.tier2 != Tier2Step::Abandoned)
            .count() as u64
    }

    /// Whether the upkeep timer has a retry to make.
    fn has_retry(&self) -> bool {
        self.deleting.values().any(|deletion| {
            deletion.committed && matches!(deletion.tier2, Tier2Step::Waiting | Tier2Step::Failed)
        })
    }
}

/// Why the sealed segment `entry` may not be deleted now (retention's or an
/// operator's), or `None` if it may.
fn deletion_blocked(
    name: &StreamName,
    state: &RetentionState,
    entry: &SegmentEntry,
    tier0: &Tier0Cache,
    tier1: &Tier1Cache,
) -> Option<&'static str> {
    let key = SegmentKey::new(name.clone(), entry.segment_id);
    if entry.tier2_object.is_none() {
        Some("Tier 2 does not hold it yet (its upload has not finished); wait and try again")
    } else if state.uploads_uncommitted.contains(&entry.segment_id) {
        Some("its upload is not committed yet; try again")
    } else if tier0.segment(&key).is_some_and(|segment| segment.pins > 0) {
        Some("a reader holds it in Tier 0; try again")
    } else if tier1.is_hydrating(&key) {
        Some("Tier 1 is hydrating it for a reader; try again")
    } else {
        None
    }
}

/// The stream's segments as retention sees them: sealed ones not already being deleted,
/// oldest first, then the active one; and how many leading ones may go now.
fn retention_view(
    now_ms: u64,
    name: &StreamName,
    state: &RetentionState,
    index: &ManifestIndex,
    tier0: &Tier0Cache,
    tier1: &Tier1Cache,
) -> (Vec<RetainedSegment>, usize) {
    let mut list: Vec<RetainedSegment> = Vec::new();
    let mut eligible = 0;
    let mut eligible_so_far = true;
    for entry in index.segments().values() {
        if state.deleting.contains_key(&entry.segment_id) {
            continue;
        }
        if list
            .last()
            .is_some_and(|previous| previous.next_offset != entry.base_offset)
        {
            // A hole in the offsets (never written by this store): stop at it.
            break;
        }
        match entry.lifecycle {
            Lifecycle::Open => {
                // The active segment: never deleted, never old, holds no object.
                list.push(RetainedSegment {
                    segment_id: entry.segment_id,
                    base_offset: entry.base_offset,
                    next_offset: entry.base_offset,
                    sealed_at_ms: now_ms,
                    object_bytes: 0,
                });
                break;
            }
            Lifecycle::Sealed(seal) => {
                let may_go = deletion_blocked(name, state, entry, tier0, tier1).is_none();
                eligible_so_far &= may_go;
                if eligible_so_far {
                    eligible += 1;
                }
                list.push(RetainedSegment {
                    segment_id: entry.segment_id,
                    base_offset: entry.base_offset,
                    next_offset: entry.base_offset + seal.record_count,
                    sealed_at_ms: seal.sealed_at_ms,
                    object_bytes: entry.tier2_object.as_ref().map_or(0, |o| o.object_bytes),
                });
            }
        }
    }
    (list, eligible)
}

impl Store {
    /// The first offset of `stream` that may still be read: retention deleted
    /// everything below it (0 until retention deletes anything). `None` for a stream
    /// that is not open.
    #[must_use]
    pub fn start_offset(&self, stream: &StreamName) -> Option<u64> {
        let entry = self.streams.get(stream)?;
        match &entry.phase {
            // After a restart the deletions journaled before it are only in the
            // index: its first segment not queued for deletion bounds the start too.
            Phase::Ready { index, .. } => Some(
                entry
                    .retention
                    .start_offset
                    .max(super::read::start_offset_of(index)),
            ),
            _ => None,
        }
    }

    /// An `UploadDone` for `segment_id` was journaled (not yet committed).
    pub(super) fn upload_journaled(&mut self, name: &StreamName, segment_id: SegmentId) {
        if let Some(entry) = self.streams.get_mut(name) {
            entry.retention.uploads_uncommitted.insert(segment_id);
        }
    }

    /// The `UploadDone` of `segment_id` is committed: it may be chosen from now on.
    pub(super) fn upload_committed(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        segment_id: SegmentId,
    ) {
        if let Some(entry) = self.streams.get_mut(name) {
            entry.retention.uploads_uncommitted.remove(&segment_id);
        }
        self.run_retention(now_ms, name);
    }

    /// One retention pass over `name`: choose, journal and start deleting.
    pub(super) fn run_retention(&mut self, now_ms: u64, name: &StreamName) {
        let policy = self.config.tier2.retention;
        if policy == RetentionPolicy::KEEP_ALL || self.closing {
            return;
        }
        let Some(entry) = self.streams.get(name) else {
            return;
        };
        let Phase::Ready { index, .. } = &entry.phase else {
            return;
        };
        let (list, eligible) = retention_view(
            now_ms,
            name,
            &entry.retention,
            index,
            &self.tier0,
            &self.tier1,
        );
        let decision = select_retention(now_ms, &policy, &list);
        let count = decision.delete.len().min(eligible);
        if count == 0 {
            return;
        }
        self.queue_deletions(now_ms, name, &list[..=count], |position| {
            decision.reason(position)
        });
    }

    /// Journals `Tier2DeleteQueued` for every segment of `list` but the last (oldest
    /// first, each with its `reason`), starts deleting each once its record is
    /// committed, and moves the start offset to the last one's base. Returns the
    /// ordinal of the last record journaled, `None` if the stream failed.
    fn queue_deletions(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        list: &[RetainedSegment],
        reason: impl Fn(usize) -> ReasonCode,
    ) -> Option<u64> {
        let (first_kept, going) = list.split_last().expect("the first segment kept is listed");
        let mut last_ordinal = None;
        for (position, segment) in going.iter().enumerate() {
            let key = self
                .streams
                .get(name)
                .and_then(|entry| match &entry.phase {
                    Phase::Ready { index, .. } => index.segment(segment.segment_id),
                    _ => None,
                })
                .and_then(|entry| entry.tier2_object.as_ref())
                .map(|object| object.key.clone())
                .expect("a chosen segment has its Tier 2 object");
            let reason = reason(position);
            let record = ManifestRecord::Tier2DeleteQueued {
                segment_id: segment.segment_id,
                key,
                reason,
            };
            // None: the stream failed, nothing more to do.
            let ordinal = self.journal(now_ms, name, &record)?;
            last_ordinal = Some(ordinal);
            let entry = self.streams.get_mut(name).expect("journaled just now");
            entry.retention.deleting.insert(
                segment.segment_id,
                Deletion {
                    reason,
                    object_bytes: segment.object_bytes,
                    committed: false,
                    tier2: Tier2Step::Waiting,
                    failed_rounds: 0,
                    snapshot_before_delete: (reason == ReasonCode::Operator).then_some(ordinal),
                },
            );
            let work = AfterCommit::RetentionQueued {
                segment_id: segment.segment_id,
            };
            self.after_commit(name, ordinal, work);
        }
        let entry = self.streams.get_mut(name).expect("journaled just now");
        assert!(
            first_kept.base_offset > entry.retention.start_offset,
            "retention moves the start offset forward"
        );
        entry.retention.start_offset = first_kept.base_offset;
        last_ordinal
    }

    /// `DeleteSegments`: queues the deletion of every segment of `name` below
    /// `before` (reason `Operator`), all or none, and answers once the records are
    /// committed.
    pub(super) fn delete_segments(
        &mut self,
        now_ms: u64,
        token: CommandToken,
        name: &StreamName,
        before: SegmentId,
    ) {
        let list = match self.operator_deletion(now_ms, name, before) {
            Ok(list) => list,
            Err(error) => return self.reply(token, StoreReply::Error(error)),
        };
        let start_offset = self.start_offset(name).unwrap_or(0);
        if list.len() < 2 {
            let reply = StoreReply::SegmentsDeleting {
                segments: 0,
                start_offset,
            };
            return self.reply(token, reply);
        }
        let reply = StoreReply::SegmentsDeleting {
            segments: list.len() as u64 - 1,
            start_offset: list.last().expect("at least two").base_offset,
        };
        match self.queue_deletions(now_ms, name, &list, |_| ReasonCode::Operator) {
            Some(ordinal) => self.after_commit(name, ordinal, AfterCommit::Answer { token, reply }),
            None => {
                let error = self
                    .ready(name)
                    .err()
                    .unwrap_or_else(|| StoreError::UnknownStream(name.as_str().to_owned()));
                self.reply(token, StoreReply::Error(error));
            }
        }
    }

    /// The segments `DeleteSegments` would delete, then the first one kept; or why one
    /// of them may not go.
    fn operator_deletion(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        before: SegmentId,
    ) -> Result<Vec<RetainedSegment>, StoreError> {
        if self.closing {
            return Err(StoreError::Closed);
        }
        self.ready(name)?;
        let entry = &self.streams[name];
        let Phase::Ready { index, .. } = &entry.phase else {
            unreachable!("ready() checked the phase");
        };
        let not_deletable =
            |segment_id: SegmentId, reason: String| StoreError::SegmentNotDeletable {
                stream: name.as_str().to_owned(),
                segment_id,
                reason,
            };
        let (list, eligible) = retention_view(
            now_ms,
            name,
            &entry.retention,
            index,
            &self.tier0,
            &self.tier1,
        );
        let wanted = list
            .iter()
            .take_while(|segment| segment.segment_id < before)
            .count();
        let Some(first_kept) = list.get(wanted) else {
            // The active segment is always listed last and never below the bound.
            let active = list.last().map_or(before, |segment| segment.segment_id);
            return Err(not_deletable(
                active,
                format!(
                    "it is the active segment, and deleting below {} would delete it; seal \
                     it first, then delete below the next one",
                    before.0
                ),
            ));
        };
        if wanted > eligible {
            let blocked = list[eligible].segment_id;
            let segment = index.segment(blocked).expect("listed from the index");
            let reason =
                deletion_blocked(name, &entry.retention, segment, &self.tier0, &self.tier1)
                    .expect("a listed sealed segment that may not go has a reason");
            return Err(not_deletable(blocked, reason.to_owned()));
        }
        let first_kept = first_kept.segment_id;
        Ok(list
            .into_iter()
            .take_while(|segment| segment.segment_id <= first_kept)
            .collect())
    }

    /// `Tier2DeleteQueued` of `segment_id` is committed: delete its copies.
    pub(super) fn deletion_committed(
        &mut self,
        now_ms: u64,
        name: &StreamName,
        segment_id: SegmentId,
    ) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        if let Some(deletion) = entry.retention.deleting.get_mut(&segment_id) {
            deletion.committed = true;
        }
        self.drive_deletion(now_ms, name, segment_id);
    }

    /// After a reopen: every deletion the manifest holds queued (`Tier2DeleteQueued`
    /// committed, no `Tier2Deleted` yet) carries on where it stopped. A crash or a
    /// restart would otherwise leave it unfinished for good: its local copies and its
    /// Tier 2 object would stay while the segments after it are deleted, and a restore
    /// would find a gap in Tier 2. Only the leading run of queued segments is taken
    /// (retention deletes a prefix; the manifest never holds anything else). Returns
    /// how many were resumed.
    pub(super) fn resume_deletions(&mut self, now_ms: u64, name: &StreamName) -> u64 {
        let Some(entry) = self.streams.get_mut(name) else {
            return 0;
        };
        let Phase::Ready { index, .. } = &entry.phase else {
            return 0;
        };
        let queued: Vec<(SegmentId, ReasonCode, u64)> = index
            .segments()
            .values()
            .map_while(|segment| {
                let job = segment.jobs.tier2_delete.as_ref()?;
                let object_bytes = segment
                    .tier2_object
                    .as_ref()
                    .map_or(0, |object| object.object_bytes);
                Some((segment.segment_id, job.reason, object_bytes))
            })
            .collect();
        if queued.is_empty() {
            return 0;
        }
        let start_offset = super::read::start_offset_of(index);
        // Whether Tier 2 already holds the records is not known here: an operator's
        // deletion waits for a snapshot taken in this run.
        let last_replayed = index.next_ordinal().saturating_sub(1);
        let state = &mut entry.retention;
        for &(segment_id, reason, object_bytes) in &queued {
            state.deleting.entry(segment_id).or_insert(Deletion {
                reason,
                object_bytes,
                committed: true,
                tier2: Tier2Step::Waiting,
                failed_rounds: 0,
                snapshot_before_delete: (reason == ReasonCode::Operator).then_some(last_replayed),
            });
        }
        state.start_offset = state.start_offset.max(start_offset);
        let resumed = queued.len() as u64;
        for (segment_id, _, _) in queued {
            self.drive_deletion(now_ms, name, segment_id);
        }
        resumed
    }

    /// Moves the deletion of `segment_id` as far as it can go now (idempotent).
    pub(super) fn drive_deletion(&mut self, now_ms: u64, name: &StreamName, segment_id: SegmentId) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        if !matches!(entry.phase, Phase::Ready { .. }) {
            return;
        }
        let Some(deletion) = entry.retention.deleting.get_mut(&segment_id) else {
            return;
        };
        if !deletion.committed || matches!(deletion.tier2, Tier2Step::Queued | Tier2Step::Abandoned)
        {
            return;
        }
        let key = SegmentKey::new(name.clone(), segment_id);
        let mut local_left = false;
        if self.tier0.segment(&key).is_some() {
            local_left = true;
            // Pinned or not yet marked durable: the upkeep timer tries again.
            let _ = self.tier0.evict_now(now_ms, &key);
        }
        if self.tier1.artifact(&key).is_some() {
            local_left = true;
            // Hydrating or backing off: the upkeep timer tries again.
            let _ = self.tier1.evict_now(now_ms, &key);
        }
        if local_left {
            return;
        }
        if let Some(ordinal) = deletion.snapshot_before_delete {
            let covered = entry
                .snapshots
                .last
                .as_ref()
                .is_some_and(|last| last.position.record_ordinal > ordinal);
            if !covered {
                // Asked for; `snapshot_marked` (or the upkeep timer) drives it again.
                entry.snapshots.want_snapshot();
                return;
            }
            deletion.snapshot_before_delete = None;
        }
        let reason = deletion.reason;
        if self
            .tier2
            .enqueue_delete(now_ms, name.clone(), segment_id, reason)
            .is_ok()
        {
            deletion.tier2 = Tier2Step::Queued;
        }
        // Queue full or key busy: stays `Waiting`/`Failed`, retried by the timer.
    }

    /// A snapshot of `name` is complete (in Tier 2): operator deletions waiting for one
    /// carry on.
    pub(super) fn snapshot_covers_deletions(&mut self, now_ms: u64, name: &StreamName) {
        let Some(entry) = self.streams.get(name) else {
            return;
        };
        let held: Vec<SegmentId> = entry
            .retention
            .deleting
            .iter()
            .filter(|(_, deletion)| deletion.snapshot_before_delete.is_some())
            .map(|(segment_id, _)| *segment_id)
            .collect();
        for segment_id in held {
            self.drive_deletion(now_ms, name, segment_id);
        }
    }

    /// A Tier 2 delete ended (`Deleted` or `DeleteFailed`).
    pub(super) fn delete_ended(&mut self, now_ms: u64, event: &Tier2Event) {
        let (segment, deleted) = match event {
            Tier2Event::Deleted { segment, .. } => (segment, true),
            Tier2Event::DeleteFailed { segment, .. } => (segment, false),
            other => unreachable!("not a terminal delete event: {other:?}"),
        };
        let name = &segment.stream;
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        let Some(deletion) = entry.retention.deleting.get_mut(&segment.segment_id) else {
            return;
        };
        assert_eq!(deletion.tier2, Tier2Step::Queued, "a delete ended unasked");
        if !deleted {
            deletion.failed_rounds += 1;
            entry.retention.delete_failures += 1;
            if deletion.failed_rounds >= STORE_UPKEEP_ROUNDS_MAX {
                deletion.tier2 = Tier2Step::Abandoned;
                entry.retention.deletes_abandoned += 1;
            } else {
                deletion.tier2 = Tier2Step::Failed;
            }
            return;
        }
        let deletion = entry
            .retention
            .deleting
            .remove(&segment.segment_id)
            .expect("looked up above");
        entry.retention.segments_deleted += 1;
        entry.retention.bytes_deleted += deletion.object_bytes;
        let record = ManifestRecord::Tier2Deleted {
            segment_id: segment.segment_id,
            key: event.key().to_owned(),
        };
        self.journal(now_ms, name, &record);
        // Nothing of it is left in Tier 1 (both local copies went before the delete was
        // asked, and reads below the start offset never hydrate it).
        let forgotten = self.tier1.forget_segment(segment);
        debug_assert!(forgotten.is_ok(), "{segment}: {forgotten:?}");
    }

    /// Upkeep timer: a retention pass, and another round for every stalled deletion.
    pub(super) fn retention_timeout(&mut self, now_ms: u64, name: &StreamName) {
        let Some(entry) = self.streams.get_mut(name) else {
            return;
        };
        if retention_deadline(&self.config.tier2.retention, entry).is_none_or(|at| at > now_ms) {
            return;
        }
        entry.retention.last_pass_ms = now_ms;
        let stalled: Vec<SegmentId> = entry
            .retention
            .deleting
            .iter()
            .filter(|(_, deletion)| deletion.tier2 != Tier2Step::Queued)
            .map(|(segment_id, _)| *segment_id)
            .collect();
        for segment_id in stalled {
            self.drive_deletion(now_ms, name, segment_id);
        }
        self.run_retention(now_ms, name);
    }

    pub(super) fn check_retention_invariants(
        &self,
        name: &StreamName,
        entry: &StreamEntry,
        stream: &StreamMachine,
        index: &ManifestIndex,
    ) {
        let state = &entry.retention;
        assert!(
            state.start_offset <= stream.durable_next_offset(),
            "{name}: the start offset {} passed the durable watermark {}",
            state.start_offset,
            stream.durable_next_offset()
        );
        if let Some((&newest_deleting, _)) = state.deleting.last_key_value() {
            for (segment_id, segment) in index.segments() {
                if state.deleting.contains_key(segment_id) {
                    assert!(
                        matches!(segment.lifecycle, Lifecycle::Sealed(_)),
                        "{name}: deleting unsealed segment {segment_id}"
                    );
                } else {
                    assert!(
                        *segment_id > newest_deleting,
                        "{name}: retention deletes a prefix, {segment_id} is kept below {newest_deleting}"
                    );
                }
            }
            if let Some(first_kept) = index
                .segments()
                .values()
                .find(|segment| !state.deleting.contains_key(&segment.segment_id))
            {
                assert_eq!(
                    state.start_offset, first_kept.base_offset,
                    "{name}: the start offset is the first kept segment's base"
                );
            }
        }
        for (segment_id, deletion) in &state.deleting {
            let key = SegmentKey::new(name.clone(), *segment_id);
            if deletion.tier2 == Tier2Step::Queued {
                assert!(
                    self.tier0.segment(&key).is_none() && self.tier1.artifact(&key).is_none(),
                    "{name}: Tier 2 delete of {segment_id} asked while a local copy remains"
                );
            }
            if !deletion.committed {
                assert_eq!(deletion.tier2, Tier2Step::Waiting);
            }
        }
    }
}

impl Store {
    /// The next upkeep deadline over every stream (retention passes and retries,
    /// periodic snapshots, chunk retries), if any stream has upkeep work.
    pub(super) fn upkeep_deadline(&self) -> Option<u64> {
        let policy = self.config.tier2.retention;
        let interval_ms = self.config.snapshot_interval_ms;
        self.streams
            .values()
            .flat_map(|entry| {
                let retention =
                    if policy == RetentionPolicy::KEEP_ALL && !entry.retention.has_retry() {
                        None
                    } else {
                        retention_deadline(&policy, entry)
                    };
                let snapshot = super::snapshot::snapshot_deadline(interval_ms, entry, self.closing);
                retention.into_iter().chain(snapshot)
            })
            .min()
    }

    /// Runs the upkeep that is due at `now_ms`.
    pub(super) fn handle_upkeep_timeout(&mut self, now_ms: u64) {
        let names: Vec<StreamName> = self.streams.keys().cloned().collect();
        for name in &names {
            self.retention_timeout(now_ms, name);
            self.snapshot_timeout(now_ms, name);
        }
    }
}

/// When the upkeep timer has retention work for `entry`, if ever.
pub(super) fn retention_deadline(policy: &RetentionPolicy, entry: &StreamEntry) -> Option<u64> {
    let Phase::Ready { index, .. } = &entry.phase else {
        return None;
    };
    let state = &entry.retention;
    let next_pass_ms = state.last_pass_ms.saturating_add(STORE_UPKEEP_INTERVAL_MS);
    if state.has_retry() {
        return Some(next_pass_ms);
    }
    // By age, a kept sealed segment goes once it is old enough: wake then (at the
    // earliest on the interval).
    let max_age_ms = policy.max_age_ms?;
    let oldest_kept = index.segments().values().find_map(|segment| {
        match (
            state.deleting.contains_key(&segment.segment_id),
            segment.lifecycle,
        ) {
            (false, Lifecycle::Sealed(seal)) => Some(seal.sealed_at_ms),
            _ => None,
        }
    })?;
    Some(
        oldest_kept
            .saturating_add(max_age_ms)
            .saturating_add(1)
            .max(next_pass_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier2::RetentionDecision;

    #[test]
    fn the_decision_reason_names_the_rule() {
        let decision = RetentionDecision {
            delete: vec![SegmentId(0), SegmentId(1)],
            new_start_offset: Some(10),
            deleted_by_age: 1,
        };
        assert_eq!(decision.reason(0), ReasonCode::RetentionAge);
        assert_eq!(decision.reason(1), ReasonCode::RetentionSize);
    }

    #[test]
    fn a_state_with_a_failed_delete_has_a_retry() {
        let mut state = RetentionState::default();
        assert!(!state.has_retry());
        state.deleting.insert(
            SegmentId(0),
            Deletion {
                reason: ReasonCode::RetentionAge,
                object_bytes: 1,
                committed: true,
                tier2: Tier2Step::Failed,
                failed_rounds: 1,
                snapshot_before_delete: None,
            },
        );
        assert!(state.has_retry());
        assert_eq!(state.deletes_pending(), 1);
        state.deleting.get_mut(&SegmentId(0)).unwrap().tier2 = Tier2Step::Abandoned;
        assert!(!state.has_retry());
        assert_eq!(state.deletes_pending(), 0);
    }
}
