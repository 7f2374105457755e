//! The read path of the coordinator: a record by offset, from whichever tier holds it.
//!
//! A read of `offset` in a stream goes, in order:
//!
//! 1. below the stream's start offset (retention deleted it): [`StoreError::OffsetBelowStart`];
//! 2. in the active segment: served from memory by the stream machine when durable,
//!    `WouldBlock(Tail)` at or past the durable end (a tail follower), an error past
//!    the next offset;
//! 3. in a sealed segment resident in Tier 0: one `ReadAt` of the record's frame,
//!    whose CRC and offset are checked. The frame's position comes from the segment's
//!    *record index* (the frame positions, built by reading and verifying the whole
//!    sealed file once; at most [`STORE_RECORD_INDEXES_MAX`] are kept, least recently
//!    used dropped first). The segment is pinned in Tier 0 while a request on it is in
//!    flight, so it cannot be evicted under the read;
//! 4. in a sealed segment not in Tier 0: a hydration is started (Tier 0 space is
//!    reserved with `admit(Hydrated)`, or queued with `enqueue_activation` when Tier 0
//!    is full; Tier 1 then restores the file from its artifact or from Tier 2) and the
//!    read gets `WouldBlock(Hydration)`.
//!
//! A read with `wait` set parks instead of returning `WouldBlock`: on its segment
//! (woken when the hydration or the record-index load ends) or, for a tail follower,
//! on its stream (woken when the durable watermark passes its offset). A woken read
//! runs from step 1 again. A `sequential` read also prefetches: when it is served from
//! a sealed segment, the next segment is hydrated too if it is cold and fits in Tier 0
//! without queueing.
//!
//! **Invariants** (checked by [`Reads::check_invariants`] and
//! [`Store::check_read_invariants`](super::Store))
//! - Every read parked on a segment has something under way that will wake it: the
//!   segment's hydration in Tier 1, its activation queued in Tier 0, or its record
//!   index loading.
//! - Every tail follower waits for an offset at or past its stream's durable end.
//! - A segment whose record index is loading is pinned in Tier 0.
//! - At most [`STORE_RECORD_INDEXES_MAX`] record indexes are held; each holds one
//!   strictly increasing frame position per record plus the end of the last frame,
//!   and the use order lists exactly the held indexes.

use super::{Phase, Route, Store, StoreError, StoreOp, StoreReply};
use crate::SegmentId;
use crate::backpressure::BackpressureKind;
use crate::driver::CommandToken;
use crate::io::{DiskCompletion, DiskRequest, IoCompletion, IoRequest};
use crate::limits::{
    SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES, STORE_PARKED_READS_MAX, STORE_RECORD_INDEXES_MAX,
};
use crate::manifest::index::{Lifecycle, ManifestIndex, SegmentEntry};
use crate::manifest::record::ManifestRecord;
use crate::names::{SegmentKey, StreamName, segment_path};
use crate::segment::{SealedSegment, StoredRecord};
use crate::stream::{ReadError, ReadOutcome};
use crate::tier0::{ActivationPriority, AdmitKind, Tier0Error};
use crate::tier1::{HydrationPriority, HydrationSource};
use serde::Serialize;
use std::collections::BTreeMap;

/// Priority of a hydration a reader waits for.
pub(super) const READ_PRIORITY: u8 = 128;
/// Priority of a prefetch: below every reader.
const PREFETCH_PRIORITY: u8 = 16;

/// How a read behaves when the record is not readable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadMode {
    /// Park until readable instead of replying `WouldBlock(Hydration | Tail)`.
    pub wait: bool,
    /// The caller reads in offset order: prefetch the next segment.
    pub sequential: bool,
}

/// Read-path counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReadMetricsSnapshot {
    /// Reads served from the active segment in memory.
    pub hot_reads: u64,
    /// Reads served from a sealed segment file in Tier 0.
    pub sealed_reads: u64,
    /// Reads that found their segment cold (not in Tier 0).
    pub cold_misses: u64,
    /// Hydrations started for readers, and for prefetches.
    pub hydrations_requested: u64,
    pub prefetches: u64,
    /// Record indexes built by reading a whole sealed segment.
    pub record_index_loads: u64,
    /// Reads parked right now (on segments, and tail followers).
    pub parked_segment_reads: u64,
    pub tail_followers: u64,
}

/// A parked read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parked {
    token: CommandToken,
    offset: u64,
    mode: ReadMode,
}

/// Frame positions of one sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordIndex {
    base_offset: u64,
    /// One start per record, then the end of the last frame.
    positions: Vec<u64>,
    use_sequence: u64,
}

impl RecordIndex {
    /// `(position, length)` of the frame of `offset`.
    fn frame(&self, offset: u64) -> Option<(u64, u64)> {
        let index = usize::try_from(offset.checked_sub(self.base_offset)?).ok()?;
        let start = *self.positions.get(index)?;
        let end = *self.positions.get(index + 1)?;
        Some((start, end - start))
    }
}

/// The read path's state, one per store.
#[derive(Debug, Default)]
pub(super) struct Reads {
    indexes: BTreeMap<SegmentKey, RecordIndex>,
    /// use sequence -> key, least recently used first.
    index_use: BTreeMap<u64, SegmentKey>,
    next_use_sequence: u64,
    /// Segments whose record index is being read.
    loading: BTreeMap<SegmentKey, ()>,
    segment_waiters: BTreeMap<SegmentKey, Vec<Parked>>,
    tail_waiters: BTreeMap<StreamName, Vec<Parked>>,
    counters: ReadMetricsSnapshot,
}

impl Reads {
    fn parked_count(&self) -> usize {
        let segments: usize = self.segment_waiters.values().map(Vec::len).sum();
        let tails: usize = self.tail_waiters.values().map(Vec::len).sum();
        segments + tails
    }

    fn insert_index(&mut self, key: SegmentKey, base_offset: u64, positions: Vec<u64>) {
        self.remove_index(&key);
        while self.indexes.len() >= STORE_RECORD_INDEXES_MAX {
            let (_, oldest) = self
                .index_use
                .pop_first()
                .expect("indexes are in the use order");
            self.indexes.remove(&oldest);
        }
        let use_sequence = self.take_use_sequence();
        self.index_use.insert(use_sequence, key.clone());
        let index = RecordIndex {
            base_offset,
            positions,
            use_sequence,
        };
        self.indexes.insert(key, index);
    }

    fn remove_index(&mut self, key: &SegmentKey) {
        if let Some(index) = self.indexes.remove(key) {
            self.index_use.remove(&index.use_sequence);
        }
    }

    /// The frame of `offset` in `key`'s index, marking the index used.
    fn frame(&mut self, key: &SegmentKey, offset: u64) -> Option<Option<(u64, u64)>> {
        let use_sequence = self.take_use_sequence();
        let index = self.indexes.get_mut(key)?;
        self.index_use.remove(&index.use_sequence);
        index.use_sequence = use_sequence;
        self.index_use.insert(use_sequence, key.clone());
        Some(index.frame(offset))
    }

    fn take_use_sequence(&mut self) -> u64 {
        let sequence = self.next_use_sequence;
        self.next_use_sequence += 1;
        sequence
    }

    pub(super) fn metrics(&self) -> ReadMetricsSnapshot {
        let segments: usize = self.segment_waiters.values().map(Vec::len).sum();
        let tails: usize = self.tail_waiters.values().map(Vec::len).sum();
        ReadMetricsSnapshot {
            parked_segment_reads: segments as u64,
            tail_followers: tails as u64,
            ..self.counters
        }
    }

    /// The invariants that need no other component.
    pub(super) fn check_invariants(&self) {
        assert!(self.indexes.len() <= STORE_RECORD_INDEXES_MAX);
        assert_eq!(
            self.indexes.len(),
            self.index_use.len(),
            "use order is complete"
        );
        for (sequence, key) in &self.index_use {
            let index = self.indexes.get(key).expect("use order lists held indexes");
            assert_eq!(index.use_sequence, *sequence, "use order is current");
            assert!(*sequence < self.next_use_sequence);
        }
        for (key, index) in &self.indexes {
            assert!(
                !index.positions.is_empty(),
                "{key}: an index ends somewhere"
            );
            assert!(
                index.positions.windows(2).all(|pair| pair[0] < pair[1]),
                "{key}: frame positions increase"
            );
            assert!(
                index.positions[0] >= u64::from(SEGMENT_HEADER_BYTES),
                "{key}: frames follow the header"
            );
        }
        assert!(self.parked_count() <= STORE_PARKED_READS_MAX);
        for waiters in self.segment_waiters.values() {
            assert!(!waiters.is_empty(), "empty waiter lists are dropped");
        }
        for waiters in self.tail_waiters.values() {
            assert!(!waiters.is_empty(), "empty waiter lists are dropped");
        }
    }
}

/// Where the record of a read lives.
enum Located {
    /// Replied (served from memory, or refused).
    Done(StoreReply),
    /// Parked or answered `WouldBlock(Tail)`: see the caller.
    Tail,
    /// In sealed segment `segment_id` (of `file_bytes`), `record_count` records from
    /// `base_offset`.
    Sealed {
        segment_id: SegmentId,
        base_offset: u64,
        file_bytes: u64,
    },
}

/// The sealed segment of the index that holds `offset`, if any.
fn sealed_segment_of(index: &ManifestIndex, offset: u64) -> Option<&SegmentEntry> {
    let entry = index
        .segments()
        .values()
        .rev()
        .find(|entry| entry.base_offset <= offset)?;
    match entry.lifecycle {
        Lifecycle::Sealed(seal) if offset < entry.base_offset + seal.record_count => Some(entry),
        _ => None,
    }
}

/// Offset of the stream's first readable record per its manifest: the base of its
/// oldest segment not queued for deletion (0 for an empty index).
pub(super) fn start_offset_of(index: &ManifestIndex) -> u64 {
    index
        .segments()
        .values()
        .find(|entry| entry.jobs.tier2_delete.is_none())
        .map_or(0, |entry| entry.base_offset)
}

impl Store {
    /// Reads the record at `offset` of `stream` (see the module doc).
    pub(super) fn read(
        &mut self,
        token: CommandToken,
        stream: &StreamName,
        offset: u64,
        mode: ReadMode,
    ) {
        if self.closing {
            return self.reply(token, StoreReply::Error(StoreError::Closed));
        }
        let located = match self.locate(stream, offset) {
            Ok(located) => located,
            Err(error) => return self.reply(token, StoreReply::Error(error)),
        };
        match located {
            Located::Done(reply) => {
                self.reads.counters.hot_reads += u64::from(matches!(reply, StoreReply::Record(_)));
                self.reply(token, reply);
            }
            Located::Tail => {
                if mode.wait && self.reads.parked_count() < STORE_PARKED_READS_MAX {
                    let parked = Parked {
                        token,
                        offset,
                        mode,
                    };
                    self.reads
                        .tail_waiters
                        .entry(stream.clone())
                        .or_default()
                        .push(parked);
                } else {
                    self.reply(token, StoreReply::WouldBlock(BackpressureKind::Tail));
                }
            }
            Located::Sealed {
                segment_id,
                base_offset,
                file_bytes,
            } => {
                let key = SegmentKey::new(stream.clone(), segment_id);
                let parked = Parked {
                    token,
                    offset,
                    mode,
                };
                self.read_sealed(key, base_offset, file_bytes, parked);
            }
        }
    }

    fn locate(&self, stream: &StreamName, offset: u64) -> Result<Located, StoreError> {
        let name = || stream.as_str().to_owned();
        let Some(entry) = self.streams.get(stream) else {
            return Err(StoreError::UnknownStream(name()));
        };
        let (machine, index) = match &entry.phase {
            Phase::Ready { stream, index, .. } => (stream, index),
            Phase::Failed(error) => return Err(error.clone()),
            _ => return Err(StoreError::Opening(name())),
        };
        let start_offset = self
            .start_offset(stream)
            .expect("a ready stream has a start offset");
        if offset < start_offset {
            return Err(StoreError::OffsetBelowStart {
                stream: name(),
                offset,
                start_offset,
            });
        }
        match machine.read_active(offset) {
            Ok(ReadOutcome::Ready(record)) => Ok(Located::Done(StoreReply::Record(record))),
            Ok(ReadOutcome::WouldBlock(_)) => Ok(Located::Tail),
            Err(ReadError::BeforeActiveSegment { .. }) => match sealed_segment_of(index, offset) {
                Some(segment) => {
                    let Lifecycle::Sealed(seal) = segment.lifecycle else {
                        unreachable!("sealed_segment_of returns sealed segments");
                    };
                    Ok(Located::Sealed {
                        segment_id: segment.segment_id,
                        base_offset: segment.base_offset,
                        file_bytes: seal.durable_bytes + u64::from(SEGMENT_FOOTER_BYTES),
                    })
                }
                // Offsets below the active segment and above the start belong to a
                // sealed segment; none found means retention is removing it.
                None => Err(StoreError::OffsetBelowStart {
                    stream: name(),
                    offset,
                    start_offset: machine
                        .active_segment()
                        .map_or(start_offset, |(_, base)| base),
                }),
            },
            Err(ReadError::OutOfRange {
                offset,
                next_offset,
            }) => Err(StoreError::NotAppended {
                stream: name(),
                offset,
                next_offset,
            }),
            Err(ReadError::Recovering) => Err(StoreError::Opening(name())),
            Err(error) => Err(StoreError::StreamFailed {
                stream: name(),
                reason: error.to_string(),
            }),
        }
    }

    /// A read of sealed segment `key`: from its file if Tier 0 holds it, else hydrate.
    fn read_sealed(&mut self, key: SegmentKey, base_offset: u64, file_bytes: u64, read: Parked) {
        let now_ms = self.now_ms;
        let resident = self
            .tier0
            .segment(&key)
            .is_some_and(|state| state.phase != crate::tier0::SegmentPhase::Evicting);
        let hydrating = self.tier1.is_hydrating(&key) || self.tier0.is_queued(&key);
        if resident && !hydrating {
            if self.reads.loading.contains_key(&key) {
                return self.park_on_segment(key, read);
            }
            match self.reads.frame(&key, read.offset) {
                Some(Some((position, length))) => {
                    if let Err(error) = self.tier0.pin(now_ms, &key) {
                        return self.reply_tier0_error(read, &key, error);
                    }
                    let path = segment_path(&key.stream, key.segment_id);
                    let op = StoreOp::ReadRecord {
                        segment_id: key.segment_id,
                        position,
                        token: read.token,
                        offset: read.offset,
                        sequential: read.mode.sequential,
                    };
                    self.route(
                        Route::Store(key.stream, op),
                        IoRequest::Disk(DiskRequest::ReadAt {
                            path,
                            offset: position,
                            length,
                        }),
                    );
                }
                Some(None) => {
                    // The index does not cover an offset the manifest places in this
                    // segment: the file and the manifest disagree.
                    let error = StoreError::Corrupt {
                        stream: key.stream.as_str().to_owned(),
                        path: segment_path(&key.stream, key.segment_id).to_string(),
                        position: 0,
                        reason: format!(
                            "the segment file holds no record {} (its manifest entry does)",
                            read.offset
                        ),
                    };
                    self.reply(read.token, StoreReply::Error(error));
                }
                None => {
                    if let Err(error) = self.tier0.pin(now_ms, &key) {
                        return self.reply_tier0_error(read, &key, error);
                    }
                    self.reads.loading.insert(key.clone(), ());
                    self.park_on_segment(key.clone(), read);
                    let path = segment_path(&key.stream, key.segment_id);
                    let op = StoreOp::LoadRecordIndex {
                        segment_id: key.segment_id,
                        base_offset,
                    };
                    self.route(
                        Route::Store(key.stream, op),
                        IoRequest::Disk(DiskRequest::ReadAt {
                            path,
                            offset: 0,
                            length: file_bytes,
                        }),
                    );
                }
            }
            return;
        }
        self.reads.counters.cold_misses += 1;
        if !hydrating {
            match self.start_hydration(&key, file_bytes, READ_PRIORITY, true) {
                Ok(()) => self.reads.counters.hydrations_requested += 1,
                Err(error) => return self.reply(read.token, StoreReply::Error(error)),
            }
        }
        let hydrating = self.tier1.is_hydrating(&key) || self.tier0.is_queued(&key);
        if read.mode.wait && hydrating {
            self.park_on_segment(key, read);
        } else {
            self.reply(
                read.token,
                StoreReply::WouldBlock(BackpressureKind::Hydration),
            );
        }
    }

    fn park_on_segment(&mut self, key: SegmentKey, read: Parked) {
        if self.reads.parked_count() >= STORE_PARKED_READS_MAX {
            let reply = StoreReply::WouldBlock(BackpressureKind::Hydration);
            return self.reply(read.token, reply);
        }
        self.reads
            .segment_waiters
            .entry(key)
            .or_default()
            .push(read);
    }

    fn reply_tier0_error(&mut self, read: Parked, key: &SegmentKey, error: Tier0Error) {
        let reply = match error.would_block() {
            Some(kind) => StoreReply::WouldBlock(kind),
            None => StoreReply::Error(StoreError::ColdRead {
                stream: key.stream.as_str().to_owned(),
                segment_id: key.segment_id,
                reason: error.to_string(),
            }),
        };
        self.reply(read.token, reply);
    }

    /// Brings `key` (a sealed segment of `file_bytes`) back into Tier 0: reserves the
    /// space (or, if `queue`, waits for it in the activation queue), then asks Tier 1.
    /// Nothing happens when Tier 0 is full and `queue` is false (a prefetch).
    fn start_hydration(
        &mut self,
        key: &SegmentKey,
        file_bytes: u64,
        priority: u8,
        queue: bool,
    ) -> Result<(), StoreError> {
        let now_ms = self.now_ms;
        let refused = |error: Tier0Error| StoreError::ColdRead {
            stream: key.stream.as_str().to_owned(),
            segment_id: key.segment_id,
            reason: error.to_string(),
        };
        match self
            .tier0
            .admit(now_ms, key.clone(), file_bytes, AdmitKind::Hydrated)
        {
            Ok(admitted) => {
                assert!(admitted.pin_held, "a hydrated admission holds a pin");
                self.request_tier1_hydration(key, priority);
                Ok(())
            }
            Err(error) if error.would_block() == Some(BackpressureKind::Admission) => {
                if !queue {
                    return Ok(());
                }
                match self.tier0.enqueue_activation(
                    now_ms,
                    ActivationPriority(priority),
                    key.clone(),
                    file_bytes,
                ) {
                    Ok(()) => Ok(()),
                    // The activation queue is full: the reader retries later.
                    Err(error) if error.would_block().is_some() => Ok(()),
                    Err(error) => Err(refused(error)),
                }
            }
            Err(error) => Err(refused(error)),
        }
    }

    /// Tier 0 space for `key` is reserved (one pin held): Tier 1 restores the file.
    pub(super) fn request_tier1_hydration(&mut self, key: &SegmentKey, priority: u8) {
        let now_ms = self.now_ms;
        let requested =
            self.tier1
                .request_hydration(now_ms, key.clone(), HydrationPriority(priority));
        if let Err(error) = requested {
            // Give the reserved space back; the waiting readers learn why.
            self.tier0.unpin(key);
            self.tier0.handle_removed(key);
            let reply = match error.would_block() {
                Some(kind) => StoreReply::WouldBlock(kind),
                None => StoreReply::Error(StoreError::ColdRead {
                    stream: key.stream.as_str().to_owned(),
                    segment_id: key.segment_id,
                    reason: error.to_string(),
                }),
            };
            self.reply_segment_waiters(key, &reply);
        }
    }

    /// A hydration of `key` ended: release its Tier 0 reservation, record it, and wake
    /// or fail the readers waiting for it.
    pub(super) fn hydration_ended(
        &mut self,
        key: &SegmentKey,
        source: HydrationSource,
        outcome: Result<u64, StoreError>,
    ) {
        let now_ms = self.now_ms;
        self.tier0.unpin(key);
        match outcome {
            Ok(bytes) => {
                let record = ManifestRecord::HydrationDone {
                    segment_id: key.segment_id,
                    source: source.tier(),
                    bytes,
                };
                self.journal(now_ms, &key.stream, &record);
                self.wake_segment_waiters(key);
            }
            Err(error) => {
                self.tier0.handle_removed(key);
                self.reads.remove_index(key);
                self.reply_segment_waiters(key, &StoreReply::Error(error));
            }
        }
    }

    /// Journals `HydrationStarted` (once per hydration: its first attempt).
    pub(super) fn hydration_started(&mut self, key: &SegmentKey, source: HydrationSource) {
        let now_ms = self.now_ms;
        let record = ManifestRecord::HydrationStarted {
            segment_id: key.segment_id,
            source: source.tier(),
        };
        self.journal(now_ms, &key.stream, &record);
    }

    fn wake_segment_waiters(&mut self, key: &SegmentKey) {
        for read in self.reads.segment_waiters.remove(key).unwrap_or_default() {
            self.read(read.token, &key.stream, read.offset, read.mode);
        }
    }

    fn reply_segment_waiters(&mut self, key: &SegmentKey, reply: &StoreReply) {
        for read in self.reads.segment_waiters.remove(key).unwrap_or_default() {
            self.reply(read.token, reply.clone());
        }
    }

    /// The durable end of `stream` moved to `next_offset`: wake the tail followers it
    /// passed.
    pub(super) fn wake_tail_followers(&mut self, stream: &StreamName, next_offset: u64) {
        let Some(waiters) = self.reads.tail_waiters.get_mut(stream) else {
            return;
        };
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = waiters
            .drain(..)
            .partition(|read| read.offset < next_offset);
        if waiting.is_empty() {
            self.reads.tail_waiters.remove(stream);
        } else {
            self.reads.tail_waiters.insert(stream.clone(), waiting);
        }
        for read in ready {
            self.read(read.token, stream, read.offset, read.mode);
        }
    }

    /// Every parked read of `stream` (or of every stream) gets `error`.
    pub(super) fn fail_parked_reads(&mut self, stream: Option<&StreamName>, error: &StoreError) {
        let matches = |name: &StreamName| stream.is_none_or(|stream| stream == name);
        let mut tokens = Vec::new();
        self.reads.tail_waiters.retain(|name, waiters| {
            if matches(name) {
                tokens.extend(waiters.iter().map(|read| read.token));
            }
            !matches(name)
        });
        self.reads.segment_waiters.retain(|key, waiters| {
            if matches(&key.stream) {
                tokens.extend(waiters.iter().map(|read| read.token));
            }
            !matches(&key.stream)
        });
        for token in tokens {
            self.reply(token, StoreReply::Error(error.clone()));
        }
    }

    /// Tier 0 is evicting `key`: its record index goes with the file.
    pub(super) fn forget_record_index(&mut self, key: &SegmentKey) {
        self.reads.remove_index(key);
    }

    /// The whole sealed file of `key` was read to build its record index.
    pub(super) fn record_index_loaded(
        &mut self,
        key: SegmentKey,
        base_offset: u64,
        completion: IoCompletion,
    ) {
        self.tier0.unpin(&key);
        self.reads.loading.remove(&key);
        let path = segment_path(&key.stream, key.segment_id);
        let corrupt = |position: u64, reason: String| StoreError::Corrupt {
            stream: key.stream.as_str().to_owned(),
            path: path.to_string(),
            position,
            reason,
        };
        let outcome = match completion {
            IoCompletion::Disk(DiskCompletion::Read(bytes)) => {
                match SealedSegment::decode(&bytes) {
                    Ok(segment) if segment.base_offset() != base_offset => Err(corrupt(
                        0,
                        format!(
                            "base offset {} but the manifest says {base_offset}",
                            segment.base_offset()
                        ),
                    )),
                    Ok(segment) => {
                        let mut positions: Vec<u64> = segment
                            .record_boundaries()
                            .map(|boundary| boundary.position)
                            .collect();
                        positions.push(segment.footer().durable_bytes);
                        Ok(positions)
                    }
                    Err(error) => Err(corrupt(error.position(), error.to_string())),
                }
            }
            other => Err(StoreError::Disk {
                stream: key.stream.as_str().to_owned(),
                what: "read sealed segment",
                reason: format!("{other:?}"),
            }),
        };
        match outcome {
            Ok(positions) => {
                self.reads.counters.record_index_loads += 1;
                self.reads.insert_index(key.clone(), base_offset, positions);
                self.wake_segment_waiters(&key);
            }
            Err(error) => self.reply_segment_waiters(&key, &StoreReply::Error(error)),
        }
    }

    /// One record frame was read from sealed segment `key`.
    pub(super) fn record_read(
        &mut self,
        key: SegmentKey,
        position: u64,
        token: CommandToken,
        offset: u64,
        sequential: bool,
        completion: IoCompletion,
    ) {
        self.tier0.unpin(&key);
        let reply = match completion {
            IoCompletion::Disk(DiskCompletion::Read(bytes)) => {
                match StoredRecord::decode(&bytes, position, offset) {
                    Ok(record) => {
                        self.reads.counters.sealed_reads += 1;
                        StoreReply::Record(record)
                    }
                    Err(error) => StoreReply::Error(StoreError::Corrupt {
                        stream: key.stream.as_str().to_owned(),
                        path: segment_path(&key.stream, key.segment_id).to_string(),
                        position: error.position(),
                        reason: error.to_string(),
                    }),
                }
            }
            other => StoreReply::Error(StoreError::Disk {
                stream: key.stream.as_str().to_owned(),
                what: "read record",
                reason: format!("{other:?}"),
            }),
        };
        let served = matches!(reply, StoreReply::Record(_));
        self.reply(token, reply);
        if served && sequential {
            self.prefetch_after(&key);
        }
    }

    /// Hydrates the segment after `key` if it is sealed, cold and fits in Tier 0.
    fn prefetch_after(&mut self, key: &SegmentKey) {
        let next = SegmentKey::new(key.stream.clone(), SegmentId(key.segment_id.0 + 1));
        let Some(file_bytes) = self.sealed_file_bytes(&next) else {
            return;
        };
        let cold = self.tier0.segment(&next).is_none()
            && !self.tier0.is_queued(&next)
            && !self.tier1.is_hydrating(&next);
        if cold
            && self
                .start_hydration(&next, file_bytes, PREFETCH_PRIORITY, false)
                .is_ok()
            && self.tier1.is_hydrating(&next)
        {
            self.reads.counters.prefetches += 1;
        }
    }

    /// The file size of sealed segment `key`, per the manifest.
    fn sealed_file_bytes(&self, key: &SegmentKey) -> Option<u64> {
        let entry = self.streams.get(&key.stream)?;
        let Phase::Ready { index, .. } = &entry.phase else {
            return None;
        };
        match index.segment(key.segment_id)?.lifecycle {
            Lifecycle::Sealed(seal) => Some(seal.durable_bytes + u64::from(SEGMENT_FOOTER_BYTES)),
            Lifecycle::Open => None,
        }
    }

    /// The invariants that tie the read path to Tier 0, Tier 1 and the streams.
    pub(super) fn check_read_invariants(&self) {
        self.reads.check_invariants();
        for key in self.reads.segment_waiters.keys() {
            assert!(
                self.tier1.is_hydrating(key)
                    || self.tier0.is_queued(key)
                    || self.reads.loading.contains_key(key),
                "reads parked on {key} with nothing under way to wake them"
            );
        }
        for key in self.reads.loading.keys() {
            assert!(
                self.tier0.segment(key).is_some_and(|state| state.pins > 0),
                "{key} is read whole while unpinned"
            );
        }
        for (name, waiters) in &self.reads.tail_waiters {
            let durable = self.durable_next_offset(name);
            for read in waiters {
                assert!(
                    durable.is_some_and(|durable| read.offset >= durable),
                    "tail follower of {name} at {} left waiting (durable end {durable:?})",
                    read.offset
                );
            }
        }
    }
}
