//! One stream's active-segment lifecycle as a sans-IO state machine: appends with dense
//! offsets and group commit, fsync per flush policy with a durable watermark,
//! backpressure, rollover (seal and open the next segment), hot-tail reads, and
//! crash recovery of the newest segment file.
//!
//! [`StreamMachine`] owns the stream's local segment files
//! (`streams/<stream>/segments/<id>.seg`) and its `current.sealed` pointer. It never
//! touches the manifest, Tier 0 or the other tiers: it tells the coordinator through
//! [`StreamEvent`]s (`Sealed`, `SegmentOpened`, `Durable`, `Recovered`, `Poisoned`).
//!
//! # Decisions
//!
//! - **Group commit.** Appends are encoded into frames in memory at once. When the
//!   previous request on the file completes, every buffered frame goes out as one
//!   `WriteAt` at the end of the file, and a `SyncFile` follows it when the policy
//!   wants one; appends arriving meanwhile form the next group. A sync covers the
//!   bytes whose writes had completed when it was issued, and only its success moves
//!   the durable watermark ([`StreamMachine::durable_next_offset`]).
//! - **The `acknowledged` hint before the watermark.** When a sync makes new records
//!   durable, the stream overwrites `streams/<stream>/acknowledged`
//!   ([`crate::ack_hint`]) with their next offset and fsyncs it, and only then moves
//!   the watermark. The hint on disk is thus never below what the active segment
//!   reported durable, which lets recovery cut a hole that a crash tore into unsynced
//!   writes (pages reach the disk in any order) without ever cutting an acknowledged
//!   record. The price is a second fsync per flush, of one 32-byte write; a flush that
//!   adds no record (the footer's) needs none. A failed hint write or fsync is a flush
//!   failure like any other.
//! - **Writes and syncs never overlap.** If a write were in flight while an fsync
//!   fails, its pages could reach the disk beyond pages the failed fsync lost: a hole
//!   followed by valid records, which recovery cannot tell from corruption. So the
//!   active segment has at most one data request in flight.
//! - **Flush policy** ([`FlushPolicy`]) decides when a sync follows the writes. A sync
//!   is forced regardless by [`StreamMachine::flush`], by an append refused with
//!   `WouldBlock(Flush)`, by a retry, and by sealing.
//! - **fsyncgate: rewrite from memory.** A failed `WriteAt` or `SyncFile` means the
//!   unsynced pages may be gone although reads still return them. The stream never
//!   fsyncs again and calls it durable: it rewinds to the durable watermark, rewrites
//!   every non-durable byte from memory at the same positions (one `WriteAt`), and
//!   fsyncs again. While retrying, appends get `WouldBlock(Flush)`. Each failure
//!   counts in `flush_failures`, each rewrite in `flush_retry_attempts`; after
//!   `flush_max_retries + 1` consecutive failures the stream is poisoned.
//! - **Poisoned is sticky** (like fjall's `Poisoned`): appends, seals and flushes are
//!   refused with [`AppendError::Poisoned`] naming the cause, until the driver drops the
//!   machine and recovers. Durable records can still be read.
//! - **Rollover blocks appends** (`WouldBlock(Rollover)`) from the moment sealing
//!   starts until the next segment file exists durably (`SegmentOpened`). Pre-opening
//!   the next segment would hide that latency but leaves two active files for recovery
//!   to reconcile and lets `SegmentOpened` overtake `SealSegment` in the manifest; a
//!   rollover is rare (once per `segment_target_bytes`), so we keep one active file.
//!   Rollover: frames not yet written -> write -> fsync, then the footer (built from
//!   the [`SegmentDigest`]) written after the last frame -> fsync. The footer is never
//!   in the same write as frames, nor written before they are durable: a crash may
//!   keep any sector of a pending write and lose another, and a kept footer claims
//!   every record (recovery then finds a sealed file whose frames are gone). Then
//!   `current.sealed` via temp (create, write, fsync, rename, fsync dir) ->
//!   `Sealed` -> next segment via temp (create, header, fsync, rename, fsync dir) ->
//!   `SegmentOpened`. A failed metadata step counts in `metadata_failures` and poisons.
//! - **The hot tail is served from memory.** The active segment's frames are held in
//!   memory (they are needed for rewrites anyway; `segment_target_bytes` bounds it), so
//!   [`StreamMachine::read_active`] needs no IO. It serves durable records only.
//! - **Recovery rewrites what it read.** A byte read back after a restart is no proof
//!   that it reached the disk (after a failed fsync, Linux may keep clean-marked pages
//!   that never will). So recovery truncates a torn tail, rewrites the verified prefix
//!   at the same positions, fsyncs, and only then reports it durable.
//!
//! # Recovery
//!
//! [`StreamMachine::recover`]: list the segments directory, read `current.sealed`,
//! read the header and footer of the segment before the newest (if present) to check
//! that offsets continue densely, read the newest segment file whole and
//! [`scan_tail`] it. A scan that would cut bytes or finds corruption is never acted
//! on after one read: the file is read again, and of two reads that differ the one
//! whose scan keeps more is used (a read may return flipped bits the disk does not
//! hold; a flip breaks a checksum, it never makes one verify). Then remove leftover
//! `*.tmp` files and:
//! - an **active** newest segment: truncate a torn tail (`Truncate`), rewrite, fsync,
//!   fsync the directory; appends continue at the next dense offset with the same
//!   digest. A bad record followed by a valid one ([`SegmentError::CorruptBeforeValidRecord`])
//!   is a [`RecoveryError::CorruptSegment`] naming file and position, never a silent
//!   truncation, unless the acknowledged next offset (the `acknowledged` file, read
//!   right after the listing, or the caller's `acknowledged_next_offset`, whichever is
//!   higher) proves that nothing from the bad record on was ever acknowledged durable
//!   (unsynced writes that reached the disk out of order): then it is cut like a torn
//!   tail. Writes and syncs never overlap, so the stream itself never leaves such a
//!   hole behind a failed fsync; but a crash while unsynced writes are pending may
//!   persist later pages and not earlier ones. Without a readable hint that case is
//!   reported as corruption too: the safe direction, at the price of an operator
//!   decision. The hint is then published again (temp, fsync, rename, fsync dir) with
//!   the recovered next offset before the stream reports it durable.
//! - a **sealed** newest segment: rewrite, fsync, republish `current.sealed` if it is
//!   missing or older, emit `Sealed { recovered: true }`, open the next segment.
//! - **no segment file**: open segment 0 at offset 0 (or fail if `current.sealed` says
//!   segments existed, or the hint names acknowledged records; the coordinator then
//!   restores them or uses [`StreamMachine::create`]).
//!
//! Opening any segment (create, rollover, recovery) first publishes the hint with the
//! new segment's base offset, so the file always exists for the in-place overwrites.
//!
//! The stream's directories must exist (the coordinator creates them with the stream).
//!
//! **Invariants** (checked by [`StreamMachine::check_invariants`])
//! - Offsets are dense: the active segment's frames carry `base_offset..next_offset`,
//!   and each new segment starts at the previous one's next offset.
//! - `durable_next_offset` never decreases and only a successful `SyncFile` (or
//!   recovery's fsync) of the bytes of those records, issued after their writes
//!   completed and after the last failure, moves it. A failed write or fsync is never
//!   reported durable.
//! - Appended-but-not-durable bytes never exceed `max_unflushed_bytes` (plus the
//!   footer while sealing).
//! - At most one request is in flight: a data write, a data sync, a recovery read or
//!   a step. At rest nothing that could be issued is left unissued.
//! - At most `flush_max_retries` consecutive flush failures unless poisoned; a poisoned
//!   stream issues no new request.
//! - Between calls no timer is overdue: `poll_timeout()` is in the future or `None`.
//! - `now_ms` never goes backwards.
//!
//! [`SegmentDigest`]: crate::segment::SegmentDigest
//! [`scan_tail`]: crate::segment::scan_tail
//! [`SegmentError::CorruptBeforeValidRecord`]: crate::segment::SegmentError::CorruptBeforeValidRecord

mod active;
mod config;
mod error;
mod event;
mod recovery;
mod steps;

pub use config::{FlushPolicy, StreamConfig, StreamConfigError};
pub use error::{AppendError, ReadError, ReadOutcome, RecoveryError, SealOutcome, StreamFailure};
pub use event::{
    FlushMetricsSnapshot, LOG_TARGET_STREAM, RecoveryReport, SealedSegmentInfo, StreamEvent,
};
pub use steps::{IoStep, TEMP_FILE_SUFFIX};

use crate::SegmentId;
use crate::ack_hint::AckHint;
use crate::backpressure::{BackpressureKind, WouldBlock};
use crate::io::{
    DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoId, IoRequest, LocalPath,
};
use crate::limits::{
    SEGMENT_FOOTER_BYTES, SEGMENT_RECORD_FRAME_HEADER_BYTES, STREAM_EVENTS_QUEUED_MAX,
    STREAM_IO_IN_FLIGHT_MAX,
};
use crate::names::{StreamName, segment_path};
use crate::pointer::SealedPointer;
use crate::segment::SegmentHeader;
use active::ActiveSegment;
use bytes::Bytes;
use recovery::Recovering;
use std::collections::{BTreeMap, VecDeque};
use steps::{Step, Steps, ack_hint_path, open_steps, pointer_steps, request_path};

/// Most phase transitions one input can cause (open -> draining -> steps milestones);
/// a bound on the pump loop, not a tuning knob.
const PUMP_ROUNDS_MAX: u32 = 16;

/// Where the machine is in its life. Phases that carry state hold it.
#[derive(Debug)]
enum Phase {
    /// Reading what is on disk.
    Recovering(Recovering),
    /// Running a script of disk steps: the tail of recovery, or the seal's pointer and
    /// the next segment's creation.
    Steps(Steps),
    /// Accepting appends.
    Open,
    /// Sealing: the footer follows the last frame; waiting for all of it to be durable.
    Draining,
    /// Failed; refuses writes until recovered.
    Poisoned(StreamFailure),
    /// Only while a transition consumes the old phase; never seen between calls.
    Switching,
}

/// What an in-flight request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Writes active-segment bytes `start..end`.
    DataWrite { start: u64, end: u64 },
    /// Fsyncs the active segment; covers bytes up to `covers`.
    DataSync { covers: u64 },
    /// Overwrites the `acknowledged` hint after the sync that covered `covers`.
    AckHintWrite { covers: u64 },
    /// Fsyncs the `acknowledged` hint; then the records within `covers` are durable.
    AckHintSync { covers: u64 },
    /// A read of the recovery scan.
    Recovery,
    /// A step of a script.
    Step,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    purpose: Purpose,
    /// Handed to the driver by `poll_request`.
    polled: bool,
}

/// The timers of a stream, indexing its table of deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Seal the active segment `segment_max_age_ms` after its first record.
    SegmentAge,
    /// `flush = { interval_ms = n }`: sync `n` ms after the oldest unsynced append.
    FlushInterval,
}

impl Timer {
    const ALL: [Timer; 2] = [Timer::SegmentAge, Timer::FlushInterval];
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    flush_failures: u64,
    metadata_failures: u64,
    flush_retry_attempts: u64,
    flushes: u64,
    segments_sealed: u64,
    torn_tail_bytes_truncated: u64,
}

/// One stream's active-segment writer.
///
/// Call order (quinn `Connection` style): after *every* input (`append`, `seal`,
/// `flush`, `handle_completion`, `handle_timeout`), drain [`StreamMachine::poll_request`]
/// and [`StreamMachine::poll_event`] until both return `None`, carry out the requests
/// (the machine has at most one in flight),
/// deliver each result with `handle_completion` (same id, once, after it was polled),
/// and arm a timer for [`StreamMachine::poll_timeout`], calling `handle_timeout` when it
/// fires (early calls are harmless). `now_ms` must never go backwards.
///
/// A driver writer loop: `append` -> on `Ok(offset)` wait until
/// `durable_next_offset() > offset` (a `Durable` event); on `WouldBlock(Flush)` wait for
/// `Durable`; on `WouldBlock(Rollover)` wait for `SegmentOpened`; on
/// `AppendError::Poisoned` drop the machine and recover.
#[derive(Debug)]
pub struct StreamMachine {
    config: StreamConfig,
    stream: StreamName,
    now_ms: u64,
    phase: Phase,
    /// The active segment (also while it is sealing, until the next one is installed).
    segment: Option<ActiveSegment>,
    /// Every offset below this is durable; never decreases.
    durable_next_offset: u64,
    coordinator_watermark: u64,
    write_in_flight: Option<IoId>,
    sync_in_flight: Option<IoId>,
    /// The write or fsync of the `acknowledged` hint that completes a flush.
    ack_in_flight: Option<IoId>,
    consecutive_flush_failures: u32,
    next_io_id: u64,
    /// Requests not yet handed to the driver, in issue order.
    outbox: VecDeque<(IoId, DiskRequest)>,
    in_flight: BTreeMap<IoId, InFlight>,
    events: VecDeque<StreamEvent>,
    counters: Counters,
}

impl StreamMachine {
    /// Starts recovering `stream` from its local files (see the module doc). Drain
    /// requests right away; appends are accepted after the `Recovered` event, or the
    /// stream ends `Poisoned` with a [`StreamFailure::Recovery`].
    ///
    /// `acknowledged_next_offset`, if the caller knows it, is the offset after the
    /// last record ever reported durable: recovery fails rather than lose any of them,
    /// and may cut out-of-order unsynced bytes beyond it.
    #[must_use]
    pub fn recover(
        config: StreamConfig,
        stream: StreamName,
        now_ms: u64,
        acknowledged_next_offset: Option<u64>,
    ) -> Self {
        let mut machine = Self::empty(config, stream, now_ms);
        machine.phase = Phase::Recovering(Recovering::new(acknowledged_next_offset));
        machine.pump();
        machine.check_invariants();
        machine
    }

    /// Starts a stream whose segments directory holds no segment file of `segment_id`
    /// or later: creates segment `segment_id` at `base_offset` (every offset below it
    /// is the coordinator's business, e.g. restored from Tier 2). Appends get
    /// `WouldBlock(Rollover)` until `SegmentOpened`.
    ///
    /// Panics if `segment_id` is `u64::MAX` (never a segment id).
    #[must_use]
    pub fn create(
        config: StreamConfig,
        stream: StreamName,
        now_ms: u64,
        segment_id: SegmentId,
        base_offset: u64,
    ) -> Self {
        assert_ne!(segment_id.0, u64::MAX, "u64::MAX is never a segment id");
        let mut machine = Self::empty(config, stream, now_ms);
        machine.durable_next_offset = base_offset;
        let header = SegmentHeader {
            segment_id,
            base_offset,
            created_at_ms: now_ms,
        };
        machine.phase = Phase::Steps(Steps {
            remaining: open_steps(&machine.stream, &header).into(),
            in_flight: None,
            recovery: None,
        });
        machine.pump();
        machine.check_invariants();
        machine
    }

    fn empty(config: StreamConfig, stream: StreamName, now_ms: u64) -> Self {
        assert!(
            config.validate().is_ok(),
            "stream config used without validation: {config:?}"
        );
        StreamMachine {
            config,
            stream,
            now_ms,
            phase: Phase::Switching,
            segment: None,
            durable_next_offset: 0,
            coordinator_watermark: 0,
            write_in_flight: None,
            sync_in_flight: None,
            ack_in_flight: None,
            consecutive_flush_failures: 0,
            next_io_id: 0,
            outbox: VecDeque::new(),
            in_flight: BTreeMap::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    #[must_use]
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    #[must_use]
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    // ---- Inputs ----

    /// Appends one record; returns its offset (dense: 0, 1, 2, ...). The record is
    /// acknowledged, not durable: it is durable once `durable_next_offset() > offset`.
    /// `ext_id` `None` is stored as 0, which reads back as "no ext_id".
    pub fn append(
        &mut self,
        now_ms: u64,
        payload: Bytes,
        ext_id: Option<u64>,
    ) -> Result<u64, AppendError> {
        self.advance(now_ms);
        let size = payload.len() as u64;
        if size > u64::from(self.config.record_payload_bytes_max) {
            return Err(AppendError::RecordTooLarge {
                size,
                limit: self.config.record_payload_bytes_max,
            });
        }
        self.check_writable()?;
        let retrying = self.consecutive_flush_failures > 0;
        let max_unflushed_bytes = self.config.max_unflushed_bytes;
        let segment = self.segment.as_mut().expect("an open stream has a segment");
        let next_offset = segment.next_offset();
        if next_offset == u64::MAX {
            return Err(AppendError::OffsetsExhausted { next_offset });
        }
        if retrying {
            return Err(WouldBlock(BackpressureKind::Flush).into());
        }
        let frame_bytes = u64::from(SEGMENT_RECORD_FRAME_HEADER_BYTES) + size;
        if segment.backlog_bytes() + frame_bytes > max_unflushed_bytes {
            // Whatever the policy, make the backlog drain.
            segment.force_sync_bytes = segment.appended_bytes;
            self.pump();
            return Err(WouldBlock(BackpressureKind::Flush).into());
        }
        let offset = segment.append(self.now_ms, &payload, ext_id.unwrap_or(0));
        assert_eq!(offset, next_offset, "offsets are dense");
        self.pump();
        Ok(offset)
    }

    /// Seals the active segment now (the admin `seal`), if it holds records.
    pub fn seal(&mut self, now_ms: u64) -> Result<SealOutcome, AppendError> {
        self.advance(now_ms);
        match self.check_writable() {
            Ok(()) => {}
            Err(AppendError::WouldBlock(_)) => return Ok(SealOutcome::InProgress),
            Err(error) => return Err(error),
        }
        let segment = self.segment.as_ref().expect("an open stream has a segment");
        if segment.record_count() == 0 {
            return Ok(SealOutcome::Empty);
        }
        self.start_rollover();
        self.pump();
        Ok(SealOutcome::Started)
    }

    /// Asks for everything appended so far to be fsynced now, whatever the flush
    /// policy (the admin `flush`). Returns the `durable_next_offset` to wait for.
    pub fn flush(&mut self, now_ms: u64) -> Result<u64, AppendError> {
        self.advance(now_ms);
        match (&self.phase, self.check_writable()) {
            (_, Ok(())) | (Phase::Draining, Err(AppendError::WouldBlock(_))) => {
                let segment = self.segment.as_mut().expect("writing has a segment");
                segment.force_sync_bytes = segment.appended_bytes;
                let target = segment.next_offset();
                self.pump();
                Ok(target)
            }
            // Between seal and the next segment's opening everything is durable.
            (_, Err(AppendError::WouldBlock(_))) => Ok(self.durable_next_offset),
            (_, Err(error)) => Err(error),
        }
    }

    /// The coordinator's watermark, stored verbatim in the footer and `current.sealed`
    /// of the next segment sealed.
    pub fn set_coordinator_watermark(&mut self, coordinator_watermark: u64) {
        self.coordinator_watermark = coordinator_watermark;
    }

    /// Delivers the result of request `id`.
    ///
    /// Panics if `id` is unknown, was not polled yet, or `completion` is of the wrong
    /// kind for the request (driver bugs).
    pub fn handle_completion(&mut self, now_ms: u64, id: IoId, completion: IoCompletion) {
        self.advance(now_ms);
        let IoCompletion::Disk(completion) = completion else {
            panic!(
                "stream {}: completion of {id:?} is not a disk completion",
                self.stream
            );
        };
        let in_flight = self
            .in_flight
            .remove(&id)
            .unwrap_or_else(|| panic!("stream {}: completion of unknown {id:?}", self.stream));
        assert!(
            in_flight.polled,
            "stream {}: completion of {id:?} before it was polled",
            self.stream
        );
        match in_flight.purpose {
            Purpose::DataWrite { start, end } => {
                assert_eq!(self.write_in_flight.take(), Some(id), "the one write");
                let result = done_or_failed(id, completion);
                self.handle_write_done(start, end, result);
            }
            Purpose::DataSync { covers } => {
                assert_eq!(self.sync_in_flight.take(), Some(id), "the one sync");
                let result = done_or_failed(id, completion);
                self.handle_sync_done(covers, result);
            }
            Purpose::AckHintWrite { covers } => {
                assert_eq!(self.ack_in_flight.take(), Some(id), "the one hint write");
                let result = done_or_failed(id, completion);
                self.handle_ack_hint_written(covers, result);
            }
            Purpose::AckHintSync { covers } => {
                assert_eq!(self.ack_in_flight.take(), Some(id), "the one hint sync");
                let result = done_or_failed(id, completion);
                self.handle_ack_hint_synced(covers, result);
            }
            Purpose::Recovery => self.handle_recovery_completion(id, completion),
            Purpose::Step => self.handle_step_completion(id, completion),
        }
        self.pump();
    }

    /// Fires due timers (segment age, flush interval). Early calls are harmless.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.pump();
    }

    // ---- Outputs ----

    /// The next disk request for the driver.
    pub fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
        let (id, request) = self.outbox.pop_front()?;
        let in_flight = self
            .in_flight
            .get_mut(&id)
            .expect("queued requests are tracked");
        assert!(!in_flight.polled, "a request is handed out once");
        in_flight.polled = true;
        Some((id, IoRequest::Disk(request)))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// The earliest timer deadline, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        Timer::ALL
            .into_iter()
            .filter_map(|timer| self.deadline(timer))
            .min()
    }

    // ---- Queries ----

    /// Every offset below this is durable (0 until recovery finds out more).
    #[must_use]
    pub fn durable_next_offset(&self) -> u64 {
        self.durable_next_offset
    }

    /// The offset the next append gets, once there is an active segment.
    #[must_use]
    pub fn next_offset(&self) -> Option<u64> {
        self.segment.as_ref().map(ActiveSegment::next_offset)
    }

    /// The active segment's id and base offset.
    #[must_use]
    pub fn active_segment(&self) -> Option<(SegmentId, u64)> {
        self.segment
            .as_ref()
            .map(|segment| (segment.segment_id(), segment.base_offset()))
    }

    /// Whether appends are accepted now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open) && self.consecutive_flush_failures == 0
    }

    /// Why the stream is poisoned, if it is.
    #[must_use]
    pub fn failure(&self) -> Option<&StreamFailure> {
        match &self.phase {
            Phase::Poisoned(failure) => Some(failure),
            _ => None,
        }
    }

    /// Reads the payload of `offset` from the active segment: `Ready` if it is
    /// durable, `WouldBlock(Tail)` if it is appended but not durable yet or is the next
    /// offset (a follower at the end of the log), an error before the active segment or
    /// beyond the next offset.
    pub fn read_active(&self, offset: u64) -> Result<ReadOutcome, ReadError> {
        let recovering = match &self.phase {
            Phase::Recovering(_) => true,
            Phase::Steps(steps) => steps.recovery.is_some(),
            _ => false,
        };
        let segment = match &self.segment {
            Some(segment) if !recovering => segment,
            _ => {
                return Err(match &self.phase {
                    Phase::Poisoned(failure) => ReadError::Poisoned {
                        offset,
                        failure: failure.clone(),
                    },
                    _ => ReadError::Recovering,
                });
            }
        };
        if offset < segment.base_offset() {
            return Err(ReadError::BeforeActiveSegment {
                offset,
                base_offset: segment.base_offset(),
            });
        }
        if offset < segment.durable_next_offset() {
            let record = segment.record(offset).expect("durable records are held");
            return Ok(ReadOutcome::Ready(record));
        }
        if offset > segment.next_offset() {
            return Err(ReadError::OutOfRange {
                offset,
                next_offset: segment.next_offset(),
            });
        }
        if let Phase::Poisoned(failure) = &self.phase {
            return Err(ReadError::Poisoned {
                offset,
                failure: failure.clone(),
            });
        }
        Ok(ReadOutcome::WouldBlock(WouldBlock(BackpressureKind::Tail)))
    }

    /// The flush metrics snapshot.
    #[must_use]
    pub fn metrics(&self) -> FlushMetricsSnapshot {
        let counters = self.counters;
        FlushMetricsSnapshot {
            flush_failures: counters.flush_failures,
            metadata_failures: counters.metadata_failures,
            flush_retry_attempts: counters.flush_retry_attempts,
            backlog_bytes: self
                .segment
                .as_ref()
                .map_or(0, ActiveSegment::backlog_bytes),
            flushes: counters.flushes,
            durable_next_offset: self.durable_next_offset,
            next_offset: self.next_offset().unwrap_or(self.durable_next_offset),
            segments_sealed: counters.segments_sealed,
            torn_tail_bytes_truncated: counters.torn_tail_bytes_truncated,
            poisoned: matches!(self.phase, Phase::Poisoned(_)),
        }
    }

    /// Checks every invariant of the module doc; panics on the first broken one.
    /// Linear in the records of the active segment.
    pub fn check_invariants(&self) {
        assert!(self.config.validate().is_ok(), "config");
        assert!(
            self.events.len() <= STREAM_EVENTS_QUEUED_MAX as usize,
            "events"
        );
        assert!(
            self.in_flight.len() <= STREAM_IO_IN_FLIGHT_MAX as usize,
            "requests in flight"
        );
        let unpolled = self
            .in_flight
            .values()
            .filter(|entry| !entry.polled)
            .count();
        assert_eq!(
            unpolled,
            self.outbox.len(),
            "outbox holds the unpolled requests"
        );
        for (id, _) in &self.outbox {
            assert!(
                !self.in_flight[id].polled,
                "queued request {id:?} is unpolled"
            );
            assert!(id.0 < self.next_io_id, "ids come from the counter");
        }
        let count = |wanted: fn(&Purpose) -> bool| {
            self.in_flight
                .values()
                .filter(|entry| wanted(&entry.purpose))
                .count()
        };
        let writes = count(|purpose| matches!(purpose, Purpose::DataWrite { .. }));
        let syncs = count(|purpose| matches!(purpose, Purpose::DataSync { .. }));
        let hints = count(|purpose| {
            matches!(
                purpose,
                Purpose::AckHintWrite { .. } | Purpose::AckHintSync { .. }
            )
        });
        let recovery_reads = count(|purpose| matches!(purpose, Purpose::Recovery));
        let steps = count(|purpose| matches!(purpose, Purpose::Step));
        assert_eq!(
            writes,
            usize::from(self.write_in_flight.is_some()),
            "writes"
        );
        assert_eq!(syncs, usize::from(self.sync_in_flight.is_some()), "syncs");
        assert_eq!(hints, usize::from(self.ack_in_flight.is_some()), "hints");
        if let Some(id) = self.write_in_flight {
            assert!(matches!(
                self.in_flight[&id].purpose,
                Purpose::DataWrite { .. }
            ));
        }
        if let Some(id) = self.sync_in_flight {
            assert!(matches!(
                self.in_flight[&id].purpose,
                Purpose::DataSync { .. }
            ));
        }
        let poisoned = matches!(self.phase, Phase::Poisoned(_));
        if !poisoned {
            assert!(
                self.consecutive_flush_failures <= self.config.flush_max_retries,
                "too many flush failures without poisoning"
            );
        }
        match &self.phase {
            Phase::Recovering(recovering) => {
                assert!(self.segment.is_none(), "no segment while scanning");
                assert_eq!(writes + syncs + hints + steps, 0, "only recovery reads");
                assert_eq!(
                    recovery_reads,
                    usize::from(recovering.in_flight().is_some())
                );
            }
            Phase::Steps(script) => {
                assert_eq!(
                    writes + syncs + hints + recovery_reads,
                    0,
                    "steps run alone"
                );
                assert_eq!(steps, usize::from(script.in_flight.is_some()), "one step");
                if let Some((id, step)) = &script.in_flight {
                    assert_eq!(self.in_flight[id].purpose, Purpose::Step);
                    assert!(matches!(step, Step::Io { .. }), "only IO steps wait");
                }
                if script.recovery.is_none()
                    && let Some(segment) = &self.segment
                {
                    assert!(segment.footer().is_some(), "a rollover's segment is sealed");
                    assert_eq!(segment.backlog_bytes(), 0, "a sealed segment is durable");
                }
            }
            Phase::Open | Phase::Draining => {
                assert_eq!(recovery_reads + steps, 0, "data IO only");
                let segment = self.segment.as_ref().expect("writing has a segment");
                let draining = matches!(self.phase, Phase::Draining);
                assert_eq!(segment.footer().is_some(), draining, "footer iff draining");
                let footer_bytes = if draining {
                    u64::from(SEGMENT_FOOTER_BYTES)
                } else {
                    0
                };
                assert!(
                    segment.backlog_bytes() <= self.config.max_unflushed_bytes + footer_bytes,
                    "backlog over max_unflushed_bytes"
                );
                assert_eq!(
                    self.durable_next_offset,
                    segment.durable_next_offset(),
                    "durable watermark"
                );
                if !draining {
                    if let Some(deadline) = self.poll_timeout() {
                        assert!(deadline > self.now_ms, "timer overdue at rest");
                    }
                    assert!(
                        segment.appended_bytes < self.config.segment_target_bytes,
                        "size rollover missed"
                    );
                }
                // Data IO in flight matches the watermarks.
                if let Some(id) = self.write_in_flight
                    && let Purpose::DataWrite { start, end } = self.in_flight[&id].purpose
                {
                    assert_eq!(start, segment.written_bytes, "writes are sequential");
                    assert_eq!(end, segment.issued_bytes, "one write covers the issued");
                }
                if let Some(id) = self.sync_in_flight
                    && let Purpose::DataSync { covers } = self.in_flight[&id].purpose
                {
                    assert!(segment.durable_bytes < covers, "a sync covers new bytes");
                    assert!(
                        covers <= segment.written_bytes,
                        "a sync covers written bytes"
                    );
                }
                if let Some(id) = self.ack_in_flight
                    && let Purpose::AckHintWrite { covers } | Purpose::AckHintSync { covers } =
                        self.in_flight[&id].purpose
                {
                    assert!(
                        segment.next_offset_durable_at(covers) > segment.durable_next_offset(),
                        "a hint is written for new durable records"
                    );
                    assert!(
                        covers <= segment.written_bytes,
                        "a hint covers written bytes"
                    );
                }
                assert!(
                    writes + syncs + hints <= 1,
                    "writes, syncs and hints never overlap"
                );
                if self.write_in_flight.is_none() {
                    assert_eq!(segment.issued_bytes, segment.written_bytes, "no write");
                }
                if writes + syncs + hints == 0 {
                    assert_eq!(segment.issued_bytes, segment.appended_bytes, "group commit");
                    assert!(
                        segment.written_bytes == segment.durable_bytes || !self.sync_wanted(),
                        "a wanted sync was not issued"
                    );
                }
            }
            Phase::Poisoned(_) => {
                assert!(
                    self.in_flight.is_empty(),
                    "a poisoned stream issues nothing"
                );
            }
            Phase::Switching => panic!("a transition was left unfinished"),
        }
        if let Some(segment) = &self.segment {
            segment.check_invariants();
            assert!(
                self.durable_next_offset <= segment.next_offset(),
                "durable beyond appended"
            );
        }
    }

    // ---- Internals ----

    fn advance(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms,
            "stream {}: now_ms went backwards from {} to {now_ms}",
            self.stream,
            self.now_ms
        );
        self.now_ms = now_ms;
    }

    /// `Ok` if appends are accepted now (flush backpressure aside).
    fn check_writable(&self) -> Result<(), AppendError> {
        match &self.phase {
            Phase::Open => Ok(()),
            Phase::Poisoned(failure) => Err(AppendError::Poisoned(failure.clone())),
            Phase::Recovering(_) => Err(AppendError::Recovering),
            Phase::Steps(steps) if steps.recovery.is_some() => Err(AppendError::Recovering),
            Phase::Steps(_) | Phase::Draining => Err(WouldBlock(BackpressureKind::Rollover).into()),
            Phase::Switching => unreachable!("never seen between calls"),
        }
    }

    fn deadline(&self, timer: Timer) -> Option<u64> {
        if !matches!(self.phase, Phase::Open) {
            return None;
        }
        let segment = self.segment.as_ref()?;
        match timer {
            Timer::SegmentAge => segment
                .first_timestamp_ms()
                .map(|first| first.saturating_add(self.config.segment_max_age_ms)),
            Timer::FlushInterval => match self.config.flush {
                FlushPolicy::IntervalMs(interval_ms) => segment
                    .oldest_unforced_timestamp_ms()
                    .map(|oldest| oldest.saturating_add(interval_ms)),
                FlushPolicy::EveryAppend | FlushPolicy::Bytes(_) => None,
            },
        }
    }

    fn issue(&mut self, request: DiskRequest, purpose: Purpose) -> IoId {
        assert!(
            self.in_flight.len() < STREAM_IO_IN_FLIGHT_MAX as usize,
            "too many requests in flight"
        );
        let id = IoId(self.next_io_id);
        self.next_io_id += 1;
        let previous = self.in_flight.insert(
            id,
            InFlight {
                purpose,
                polled: false,
            },
        );
        assert!(previous.is_none(), "ids are unique");
        self.outbox.push_back((id, request));
        id
    }

    fn emit(&mut self, event: StreamEvent) {
        if let (StreamEvent::Durable { next_offset }, Some(StreamEvent::Durable { .. })) =
            (&event, self.events.back())
        {
            let next_offset = *next_offset;
            *self.events.back_mut().expect("just matched") = StreamEvent::Durable { next_offset };
            return;
        }
        assert!(
            self.events.len() < STREAM_EVENTS_QUEUED_MAX as usize,
            "stream {}: the driver does not drain events",
            self.stream
        );
        self.events.push_back(event);
    }

    /// Raises the durable watermark to `next_offset` and tells followers.
    fn raise_durable(&mut self, next_offset: u64) {
        assert!(
            next_offset >= self.durable_next_offset,
            "the durable watermark never goes back"
        );
        if next_offset > self.durable_next_offset {
            self.durable_next_offset = next_offset;
            self.emit(StreamEvent::Durable { next_offset });
        }
    }

    /// Fails for good. Always on a completion, or after the data drained: with one
    /// request in flight at most, nothing else is in flight.
    fn poison(&mut self, failure: StreamFailure) {
        assert!(!matches!(self.phase, Phase::Poisoned(_)), "poisoned twice");
        assert!(
            self.in_flight.is_empty(),
            "nothing in flight when poisoning"
        );
        self.phase = Phase::Poisoned(failure.clone());
        self.emit(StreamEvent::Poisoned(failure));
    }

    /// Brings the machine to rest: issues what can be issued, runs milestones.
    fn pump(&mut self) {
        for _ in 0..PUMP_ROUNDS_MAX {
            let progressed = match &self.phase {
                Phase::Recovering(_) => self.pump_recovery(),
                Phase::Steps(_) => self.pump_steps(),
                Phase::Open => self.pump_open(),
                Phase::Draining => self.pump_draining(),
                Phase::Poisoned(_) => false,
                Phase::Switching => unreachable!("never seen between calls"),
            };
            if !progressed {
                return;
            }
        }
        panic!("stream {}: pump did not come to rest", self.stream);
    }

    fn pump_open(&mut self) -> bool {
        let now_ms = self.now_ms;
        let age_due = self
            .deadline(Timer::SegmentAge)
            .is_some_and(|deadline| deadline <= now_ms);
        let interval_due = self
            .deadline(Timer::FlushInterval)
            .is_some_and(|deadline| deadline <= now_ms);
        let segment = self.segment.as_mut().expect("open has a segment");
        if segment.appended_bytes >= self.config.segment_target_bytes || age_due {
            self.start_rollover();
            return true;
        }
        if interval_due {
            segment.force_sync_bytes = segment.appended_bytes;
        }
        self.pump_data();
        false
    }

    fn pump_draining(&mut self) -> bool {
        self.pump_data();
        let segment = self.segment.as_ref().expect("draining has a segment");
        if segment.durable_bytes < segment.appended_bytes {
            return false;
        }
        assert!(
            self.write_in_flight.is_none()
                && self.sync_in_flight.is_none()
                && self.ack_in_flight.is_none(),
            "a fully durable segment has no data IO in flight"
        );
        self.finish_draining();
        true
    }

    /// Issues the sync the policy asks for, else the group-commit write of everything
    /// buffered, if no data request is in flight.
    fn pump_data(&mut self) {
        if self.write_in_flight.is_some()
            || self.sync_in_flight.is_some()
            || self.ack_in_flight.is_some()
        {
            return;
        }
        let sync_wanted = self.sync_wanted();
        let segment = self.segment.as_mut().expect("data IO needs a segment");
        let path = segment.path.clone();
        if segment.written_bytes > segment.durable_bytes && sync_wanted {
            let covers = segment.written_bytes;
            self.sync_in_flight =
                Some(self.issue(DiskRequest::SyncFile { path }, Purpose::DataSync { covers }));
        } else if segment.issued_bytes < segment.appended_bytes {
            // Sealing: the frames are written and made durable before the footer is
            // written (see "Rollover" in the module doc).
            let frames_end = segment.footer().map(|footer| footer.durable_bytes);
            let end = match frames_end {
                Some(frames_end) if segment.issued_bytes < frames_end => frames_end,
                _ => segment.appended_bytes,
            };
            assert!(
                frames_end.is_none_or(
                    |frames_end| end <= frames_end || segment.durable_bytes >= frames_end
                ),
                "the footer is written only once the frames are durable"
            );
            let start = segment.issued_bytes;
            let bytes = segment.bytes_between(start, end);
            segment.issued_bytes = end;
            let request = DiskRequest::WriteAt {
                path,
                offset: start,
                bytes,
            };
            self.write_in_flight = Some(self.issue(request, Purpose::DataWrite { start, end }));
        }
    }

    fn sync_wanted(&self) -> bool {
        let segment = self.segment.as_ref().expect("data IO needs a segment");
        let unsynced_bytes = segment.written_bytes - segment.durable_bytes;
        matches!(self.phase, Phase::Draining)
            || self.consecutive_flush_failures > 0
            || segment.force_sync_bytes > segment.durable_bytes
            || match self.config.flush {
                FlushPolicy::EveryAppend => true,
                FlushPolicy::Bytes(threshold) => unsynced_bytes >= threshold,
                FlushPolicy::IntervalMs(_) => false,
            }
    }

    fn handle_write_done(&mut self, start: u64, end: u64, result: Result<(), DiskErrorKind>) {
        assert!(
            matches!(self.phase, Phase::Open | Phase::Draining),
            "data IO only while writing"
        );
        match result {
            Ok(()) => {
                let segment = self.segment.as_mut().expect("data IO needs a segment");
                assert_eq!(segment.written_bytes, start, "writes complete in order");
                assert_eq!(segment.issued_bytes, end, "one write at a time");
                segment.written_bytes = end;
                // The simulator's canary (never in a real build): count written bytes
                // as durable before any fsync, so a crash loses acknowledged records.
                #[cfg(feature = "canary")]
                if segment.mark_durable(end) {
                    let next_offset = segment.durable_next_offset();
                    self.raise_durable(next_offset);
                }
            }
            Err(kind) => self.handle_flush_failure(kind, None),
        }
    }

    /// The active segment is fsynced through `covers`. Records that became durable are
    /// reported only once the `acknowledged` hint names them (see [`crate::ack_hint`]):
    /// the hint is overwritten and fsynced first. A sync that adds no record (the
    /// footer's) completes at once.
    fn handle_sync_done(&mut self, covers: u64, result: Result<(), DiskErrorKind>) {
        assert!(
            matches!(self.phase, Phase::Open | Phase::Draining),
            "data IO only while writing"
        );
        if let Err(kind) = result {
            self.handle_flush_failure(kind, None);
            return;
        }
        let segment = self.segment.as_ref().expect("data IO needs a segment");
        let next_offset = segment.next_offset_durable_at(covers);
        if next_offset == segment.durable_next_offset() {
            self.finish_flush(covers);
            return;
        }
        let hint = AckHint {
            segment_id: segment.segment_id(),
            next_offset,
        };
        let request = DiskRequest::WriteAt {
            path: ack_hint_path(&self.stream),
            offset: 0,
            bytes: Bytes::copy_from_slice(&hint.to_bytes()),
        };
        self.ack_in_flight = Some(self.issue(request, Purpose::AckHintWrite { covers }));
    }

    fn handle_ack_hint_written(&mut self, covers: u64, result: Result<(), DiskErrorKind>) {
        let path = ack_hint_path(&self.stream);
        match result {
            Ok(()) => {
                let request = DiskRequest::SyncFile { path };
                self.ack_in_flight = Some(self.issue(request, Purpose::AckHintSync { covers }));
            }
            Err(kind) => self.handle_flush_failure(kind, Some(path)),
        }
    }

    fn handle_ack_hint_synced(&mut self, covers: u64, result: Result<(), DiskErrorKind>) {
        match result {
            Ok(()) => self.finish_flush(covers),
            Err(kind) => self.handle_flush_failure(kind, Some(ack_hint_path(&self.stream))),
        }
    }

    /// A flush through `covers` succeeded (and its hint, if it needed one).
    fn finish_flush(&mut self, covers: u64) {
        self.counters.flushes += 1;
        self.consecutive_flush_failures = 0;
        let segment = self.segment.as_mut().expect("data IO needs a segment");
        if segment.mark_durable(covers) {
            let next_offset = segment.durable_next_offset();
            self.raise_durable(next_offset);
        }
    }

    /// A write or fsync of the active segment, or of the hint after it, failed (see
    /// "fsyncgate" in the module doc): rewind to the durable watermark and rewrite, or
    /// poison. `path` names the hint file when its write or fsync failed.
    fn handle_flush_failure(&mut self, kind: DiskErrorKind, path: Option<LocalPath>) {
        self.counters.flush_failures += 1;
        self.consecutive_flush_failures += 1;
        let draining = matches!(self.phase, Phase::Draining);
        let segment = self.segment.as_mut().expect("data IO needs a segment");
        segment.rewind_to_durable();
        if draining {
            let footer = segment.footer().expect("draining has a footer");
            let flagged = segment.footer_now(footer.coordinator_watermark, footer.sealed_at_ms);
            assert!(flagged.flush_failure);
            segment.replace_footer(flagged);
        }
        let path = path.unwrap_or_else(|| segment.path.clone());
        let consecutive_failures = self.consecutive_flush_failures;
        let retrying = consecutive_failures <= self.config.flush_max_retries;
        self.emit(StreamEvent::FlushFailed {
            path: path.clone(),
            kind,
            consecutive_failures,
            retrying,
        });
        if retrying {
            self.counters.flush_retry_attempts += 1;
        } else {
            self.poison(StreamFailure::FlushRetriesExhausted {
                path,
                failures: consecutive_failures,
                max_retries: self.config.flush_max_retries,
                kind,
            });
        }
    }

    /// Seal: the footer follows the last frame and drains like data.
    fn start_rollover(&mut self) {
        assert!(matches!(self.phase, Phase::Open));
        let segment = self.segment.as_mut().expect("open has a segment");
        assert!(segment.record_count() > 0, "empty segments are not sealed");
        let footer = segment.footer_now(self.coordinator_watermark, self.now_ms);
        segment.start_seal(footer);
        self.phase = Phase::Draining;
    }

    /// The footer is durable: publish the pointer, announce the seal, open the next
    /// segment.
    fn finish_draining(&mut self) {
        let segment = self.segment.as_ref().expect("draining has a segment");
        let footer = segment.footer().expect("draining has a footer");
        let info = SealedSegmentInfo {
            segment_id: segment.segment_id(),
            base_offset: segment.base_offset(),
            footer,
            recovered: false,
        };
        let Some(next_segment_id) = next_segment_id(info.segment_id) else {
            self.poison(StreamFailure::SegmentIdsExhausted {
                path: segment.path.clone(),
            });
            return;
        };
        let pointer = SealedPointer {
            segment_id: info.segment_id,
            durable_bytes: footer.durable_bytes,
            coordinator_watermark: footer.coordinator_watermark,
        };
        let next = SegmentHeader {
            segment_id: next_segment_id,
            base_offset: info.next_offset(),
            created_at_ms: self.now_ms,
        };
        let mut remaining: VecDeque<Step> = pointer_steps(&self.stream, &pointer).into();
        remaining.push_back(Step::EmitSealed(info));
        remaining.extend(open_steps(&self.stream, &next));
        self.phase = Phase::Steps(Steps {
            remaining,
            in_flight: None,
            recovery: None,
        });
    }

    /// Runs the script: issues its next IO step, or runs milestones until one waits.
    fn pump_steps(&mut self) -> bool {
        let Phase::Steps(steps) = &mut self.phase else {
            unreachable!("called in the steps phase");
        };
        if steps.in_flight.is_some() {
            return false;
        }
        let Some(step) = steps.remaining.pop_front() else {
            let report = steps.recovery.take();
            self.phase = Phase::Open;
            let segment = self.segment.as_ref().expect("a script ends with a segment");
            if let Some(mut report) = report {
                report.segment_id = segment.segment_id();
                report.base_offset = segment.base_offset();
                report.next_offset = segment.next_offset();
                self.emit(StreamEvent::Recovered(report));
            }
            return true;
        };
        match step {
            Step::Io { ref request, .. } => {
                let id = self.issue(request.clone(), Purpose::Step);
                let Phase::Steps(steps) = &mut self.phase else {
                    unreachable!("still in the steps phase");
                };
                steps.in_flight = Some((id, step));
                false
            }
            Step::MarkRecoveredDurable => {
                let segment = self.segment.as_mut().expect("recovered a segment");
                segment.mark_all_durable();
                let next_offset = segment.durable_next_offset();
                self.raise_durable(next_offset);
                true
            }
            Step::EmitSealed(info) => {
                if !info.recovered {
                    self.counters.segments_sealed += 1;
                }
                self.raise_durable(info.next_offset());
                self.emit(StreamEvent::Sealed(info));
                true
            }
            Step::Install(header) => {
                assert_eq!(
                    header.base_offset, self.durable_next_offset,
                    "a new segment starts where the durable records end"
                );
                let path = segment_path(&self.stream, header.segment_id);
                self.segment = Some(ActiveSegment::new(path, header));
                self.emit(StreamEvent::SegmentOpened {
                    segment_id: header.segment_id,
                    base_offset: header.base_offset,
                    opened_at_ms: header.created_at_ms,
                });
                true
            }
        }
    }

    fn handle_step_completion(&mut self, id: IoId, completion: DiskCompletion) {
        let Phase::Steps(steps) = &mut self.phase else {
            panic!(
                "stream {}: step completion {id:?} outside a script",
                self.stream
            );
        };
        let (step_id, step) = steps.in_flight.take().expect("a step is in flight");
        assert_eq!(step_id, id, "the one step in flight");
        let Step::Io {
            step,
            request,
            metadata,
            not_found_ok,
        } = step
        else {
            unreachable!("only IO steps are in flight");
        };
        match done_or_failed(id, completion) {
            Ok(()) => {
                if let Some(report) = &mut steps.recovery {
                    match step {
                        IoStep::RemoveTempFile => report.removed_temp_files += 1,
                        IoStep::TruncateTornTail => {
                            self.counters.torn_tail_bytes_truncated += report.truncated_bytes;
                        }
                        _ => {}
                    }
                }
            }
            Err(DiskErrorKind::NotFound) if not_found_ok => {}
            Err(kind) => {
                let path = request_path(&request).clone();
                let failure = if metadata {
                    self.counters.metadata_failures += 1;
                    StreamFailure::Metadata { step, path, kind }
                } else {
                    StreamFailure::Recovery(RecoveryError::Io { step, path, kind })
                };
                self.poison(failure);
            }
        }
    }
}

/// The id after `segment_id`; `u64::MAX` is never a segment id.
fn next_segment_id(segment_id: SegmentId) -> Option<SegmentId> {
    segment_id
        .0
        .checked_add(1)
        .filter(|next| *next != u64::MAX)
        .map(SegmentId)
}

/// The result of a request that returns no data. Panics on a data-bearing completion
/// (a driver bug: the wrong completion for the request).
fn done_or_failed(id: IoId, completion: DiskCompletion) -> Result<(), DiskErrorKind> {
    match completion {
        DiskCompletion::Done => Ok(()),
        DiskCompletion::Failed(kind) => Err(kind),
        other => panic!("completion {other:?} of {id:?} does not fit its request"),
    }
}
