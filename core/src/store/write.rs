//! Appends that wait out backpressure, and seals on demand.
//!
//! An `Append` with `wait` set that the stream refuses with `WouldBlock(Rollover)` or
//! `WouldBlock(Flush)` is parked instead of answered. Parked appends of a stream are
//! retried in arrival order after every event of its stream machine (`Durable`,
//! `Sealed`, `SegmentOpened`, ...: the only things that lift those two kinds), and a
//! waiting append that arrives while others are parked queues behind them, so offsets
//! follow arrival order. A `Seal` starts a rollover of the active segment and is
//! answered once the `SealSegment` record of that segment (or a later one) is
//! committed; if a rollover in flight already committed it, at once. A seal the stream cannot start yet (a flush retry or another rollover in
//! flight) is retried after every event of the stream, like a parked append.
//!
//! **Invariants** (checked by [`Writes::check_invariants`])
//! - At most [`STORE_PARKED_APPENDS_MAX`] appends are parked; no stream keeps an empty
//!   queue or an empty list of seal waiters.
//! - No seal waits for a segment whose `SealSegment` is already committed (it would
//!   never be answered).

use super::{Phase, Store, StoreError, StoreReply};
use crate::SegmentId;
use crate::backpressure::BackpressureKind;
use crate::driver::CommandToken;
use crate::limits::STORE_PARKED_APPENDS_MAX;
use crate::names::StreamName;
use crate::stream::SealOutcome;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq)]
struct ParkedAppend {
    token: CommandToken,
    payload: Bytes,
    ext_id: Option<u64>,
}

/// Parked appends and seal waiters, one store's worth.
#[derive(Debug, Default)]
pub(super) struct Writes {
    parked: BTreeMap<StreamName, VecDeque<ParkedAppend>>,
    parked_count: usize,
    /// (token, the segment that was active when the seal was asked for).
    seal_waiters: BTreeMap<StreamName, Vec<(CommandToken, SegmentId)>>,
    /// The newest segment per stream whose `SealSegment` is committed.
    sealed_committed: BTreeMap<StreamName, SegmentId>,
}

impl Writes {
    pub(super) fn check_invariants(&self) {
        let count: usize = self.parked.values().map(VecDeque::len).sum();
        assert_eq!(count, self.parked_count, "the parked count is exact");
        assert!(self.parked_count <= STORE_PARKED_APPENDS_MAX);
        assert!(self.parked.values().all(|queue| !queue.is_empty()));
        assert!(self.seal_waiters.values().all(|tokens| !tokens.is_empty()));
        for (stream, waiters) in &self.seal_waiters {
            if let Some(&sealed) = self.sealed_committed.get(stream) {
                assert!(
                    waiters.iter().all(|&(_, asked)| asked > sealed),
                    "a seal of {stream} waits for a segment whose seal is committed"
                );
            }
        }
    }
}

/// The reply to an append the stream machine answered.
enum Attempt {
    Replied(StoreReply),
    Blocked(BackpressureKind),
}

impl Store {
    /// Appends one record (see the module doc for `wait`).
    pub(super) fn append(
        &mut self,
        token: CommandToken,
        stream: &StreamName,
        payload: Bytes,
        ext_id: Option<u64>,
        wait: bool,
    ) {
        if self.closing {
            return self.reply(token, StoreReply::Error(StoreError::Closed));
        }
        let queued_behind = self.writes.parked.contains_key(stream);
        if wait && queued_behind {
            return self.park_append(token, stream, payload, ext_id);
        }
        match self.try_append(stream, &payload, ext_id) {
            Attempt::Replied(reply) => self.reply(token, reply),
            Attempt::Blocked(kind) => {
                if wait && matches!(kind, BackpressureKind::Rollover | BackpressureKind::Flush) {
                    self.park_append(token, stream, payload, ext_id);
                } else {
                    self.reply(token, StoreReply::WouldBlock(kind));
                }
            }
        }
    }

    fn park_append(
        &mut self,
        token: CommandToken,
        stream: &StreamName,
        payload: Bytes,
        ext_id: Option<u64>,
    ) {
        if self.writes.parked_count >= STORE_PARKED_APPENDS_MAX {
            // Too many waiting: the caller backs off on its own.
            let reply = StoreReply::WouldBlock(BackpressureKind::Flush);
            return self.reply(token, reply);
        }
        self.writes.parked_count += 1;
        self.writes
            .parked
            .entry(stream.clone())
            .or_default()
            .push_back(ParkedAppend {
                token,
                payload,
                ext_id,
            });
    }

    fn try_append(&mut self, stream: &StreamName, payload: &Bytes, ext_id: Option<u64>) -> Attempt {
        let now_ms = self.now_ms;
        let entry = match self.ready(stream) {
            Ok(entry) => entry,
            Err(error) => return Attempt::Replied(StoreReply::Error(error)),
        };
        let Phase::Ready { stream, .. } = &mut entry.phase else {
            unreachable!("ready() checked the phase");
        };
        match stream.append(now_ms, payload.clone(), ext_id) {
            Ok(offset) => Attempt::Replied(StoreReply::Appended(offset)),
            Err(error) => match error.would_block() {
                Some(kind) => Attempt::Blocked(kind),
                None => Attempt::Replied(StoreReply::Error(StoreError::Append(error))),
            },
        }
    }

    /// Something moved in `stream`: retry its parked appends, in order, until one is
    /// refused again.
    pub(super) fn retry_parked_appends(&mut self, stream: &StreamName) {
        while let Some(parked) = self
            .writes
            .parked
            .get_mut(stream)
            .and_then(VecDeque::pop_front)
        {
            self.writes.parked_count -= 1;
            match self.try_append(stream, &parked.payload, parked.ext_id) {
                Attempt::Replied(reply) => self.reply(parked.token, reply),
                Attempt::Blocked(BackpressureKind::Rollover | BackpressureKind::Flush) => {
                    self.writes.parked_count += 1;
                    let queue = self.writes.parked.get_mut(stream).expect("popped from it");
                    queue.push_front(parked);
                    return;
                }
                Attempt::Blocked(kind) => self.reply(parked.token, StoreReply::WouldBlock(kind)),
            }
        }
        self.writes.parked.remove(stream);
    }

    /// Seals the active segment of `stream` now (the admin `seal`).
    pub(super) fn seal(&mut self, token: CommandToken, stream: &StreamName) {
        match self.try_seal(stream) {
            Err(error) => self.reply(token, StoreReply::Error(error)),
            Ok((SealOutcome::Empty, _)) => {
                self.reply(token, StoreReply::Sealed { segment_id: None });
            }
            Ok((SealOutcome::Started | SealOutcome::InProgress, active)) => {
                // A rollover already in flight may have committed the seal of the
                // segment active before it (only the next one's opening is pending).
                if let Some(&sealed) = self.writes.sealed_committed.get(stream)
                    && sealed >= active
                {
                    let reply = StoreReply::Sealed {
                        segment_id: Some(sealed),
                    };
                    return self.reply(token, reply);
                }
                self.writes
                    .seal_waiters
                    .entry(stream.clone())
                    .or_default()
                    .push((token, active));
            }
        }
    }

    /// Asks the stream machine to seal; also returns the segment active before.
    fn try_seal(&mut self, stream: &StreamName) -> Result<(SealOutcome, SegmentId), StoreError> {
        let now_ms = self.now_ms;
        let entry = self.ready(stream)?;
        let Phase::Ready { stream, .. } = &mut entry.phase else {
            unreachable!("ready() checked the phase");
        };
        let (active, _) = stream
            .active_segment()
            .ok_or_else(|| StoreError::Opening(stream.stream().as_str().to_owned()))?;
        let outcome = stream.seal(now_ms).map_err(StoreError::Append)?;
        Ok((outcome, active))
    }

    /// Something moved in `stream`: a seal that could not start may start now.
    pub(super) fn retry_parked_seals(&mut self, stream: &StreamName) {
        let Some(waiters) = self.writes.seal_waiters.get(stream) else {
            return;
        };
        let active = match &self.streams.get(stream).map(|entry| &entry.phase) {
            Some(Phase::Ready { stream, .. }) => stream.active_segment().map(|(id, _)| id),
            _ => None,
        };
        // Only a seal whose segment is still the active one has anything left to do.
        if active.is_none() || !waiters.iter().any(|&(_, segment)| Some(segment) == active) {
            return;
        }
        match self.try_seal(stream) {
            Ok((SealOutcome::Started | SealOutcome::InProgress, _)) => {}
            Ok((SealOutcome::Empty, _)) => {
                self.answer_seals(stream, |segment| Some(segment) == active, None);
            }
            Err(error) => {
                let reply = StoreReply::Error(error);
                let waiters = self.writes.seal_waiters.remove(stream).unwrap_or_default();
                for (token, _) in waiters {
                    self.reply(token, reply.clone());
                }
            }
        }
    }

    /// The `SealSegment` of `segment_id` is committed: answer the seals it covers.
    pub(super) fn seal_committed(&mut self, stream: &StreamName, segment_id: SegmentId) {
        let newest = self
            .writes
            .sealed_committed
            .entry(stream.clone())
            .or_insert(segment_id);
        *newest = (*newest).max(segment_id);
        self.answer_seals(stream, |asked| asked <= segment_id, Some(segment_id));
    }

    fn answer_seals(
        &mut self,
        stream: &StreamName,
        covered: impl Fn(SegmentId) -> bool,
        segment_id: Option<SegmentId>,
    ) {
        let Some(waiters) = self.writes.seal_waiters.remove(stream) else {
            return;
        };
        let (done, waiting): (Vec<_>, Vec<_>) =
            waiters.into_iter().partition(|&(_, asked)| covered(asked));
        if !waiting.is_empty() {
            self.writes.seal_waiters.insert(stream.clone(), waiting);
        }
        for (token, _) in done {
            self.reply(token, StoreReply::Sealed { segment_id });
        }
    }

    /// Every parked append and seal of `stream` (or of every stream) gets `error`.
    pub(super) fn fail_parked_writes(&mut self, stream: Option<&StreamName>, error: &StoreError) {
        let matches = |name: &StreamName| stream.is_none_or(|stream| stream == name);
        let mut tokens = Vec::new();
        self.writes.parked.retain(|name, queue| {
            if matches(name) {
                tokens.extend(queue.iter().map(|parked| parked.token));
            }
            !matches(name)
        });
        self.writes.parked_count = self.writes.parked.values().map(VecDeque::len).sum();
        self.writes.seal_waiters.retain(|name, waiters| {
            if matches(name) {
                tokens.extend(waiters.iter().map(|&(token, _)| token));
            }
            !matches(name)
        });
        for token in tokens {
            self.reply(token, StoreReply::Error(error.clone()));
        }
    }
}
