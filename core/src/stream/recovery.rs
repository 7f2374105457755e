//! Recovery: read what is on disk, decide, and plan the script that brings the
//! stream up (see "Recovery" in the module doc of [`super`]).
//!
//! **Invariants**
//! - One read at a time, in the order: list, `acknowledged` hint, pointer, previous
//!   segment's length, header and footer (if present), newest segment's length and
//!   bytes. A hint that does not decode is read once more. The newest
//!   segment is read a second time when the first read would cut bytes or finds
//!   corruption; of two reads that differ, the one whose scan keeps more is used.
//! - Nothing is truncated unless [`scan_tail`] called it a torn tail, or the
//!   acknowledged next offset (the caller's, or the `acknowledged` file's, whichever
//!   is higher) proves the cut bytes were never acknowledged durable; every other
//!   defect is a typed [`RecoveryError`].
//! - The active segment comes up only after the hint names its recovered next offset.
//! - Names from a directory listing become paths only if they are valid components.

use super::steps::{
    Step, Steps, ack_hint_path, ack_hint_steps, ack_hint_temp_path, open_steps, pointer_path,
    pointer_steps, pointer_temp_path, recovery_step, remove_temp_step,
};
use super::{
    ActiveSegment, IoStep, Phase, Purpose, RecoveryError, RecoveryReport, SealedSegmentInfo,
    StreamFailure, StreamMachine, TEMP_FILE_SUFFIX, next_segment_id,
};
use crate::SegmentId;
use crate::ack_hint::AckHint;
use crate::codec::DecodeError;
use crate::io::{DiskCompletion, DiskErrorKind, DiskRequest, IoId, LocalPath};
use crate::limits::{
    ACK_HINT_BYTES, SEALED_POINTER_BYTES, SEGMENT_BYTES_MAX, SEGMENT_FOOTER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::names::{parse_segment_file_name, segment_path, segments_dir};
use crate::pointer::SealedPointer;
use crate::segment::{SegmentError, SegmentFooter, SegmentHeader, TailScan, scan_tail};
use bytes::Bytes;
use std::collections::VecDeque;

const HEADER_BYTES: u64 = SEGMENT_HEADER_BYTES as u64;
const FOOTER_BYTES: u64 = SEGMENT_FOOTER_BYTES as u64;

/// Which read recovery is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    List,
    /// The `acknowledged` hint; read a second time if the first read does not decode.
    ReadAckHint {
        again: bool,
    },
    ReadPointer,
    PreviousLength,
    PreviousHeader,
    PreviousFooter,
    NewestLength,
    NewestRead,
    /// The newest segment read again: the first read would cut bytes or found
    /// corruption, and a truncation is never decided on one read (a read can return
    /// flipped bits that the disk does not hold).
    NewestConfirm,
}

/// The recovery scan's state.
#[derive(Debug, Clone)]
pub(super) struct Recovering {
    acknowledged_next_offset: Option<u64>,
    ack_hint: Option<AckHint>,
    stage: Stage,
    in_flight: Option<IoId>,
    newest: Option<SegmentId>,
    previous_present: bool,
    temp_files: Vec<LocalPath>,
    pointer: Option<SealedPointer>,
    previous_length: u64,
    previous_header: Option<SegmentHeader>,
    previous_next_offset: Option<u64>,
    newest_length: u64,
    /// The first read of the newest segment, while it is being read again.
    first_newest_read: Option<Box<ScannedRead>>,
}

impl Recovering {
    pub fn new(acknowledged_next_offset: Option<u64>) -> Self {
        Recovering {
            acknowledged_next_offset,
            ack_hint: None,
            stage: Stage::List,
            in_flight: None,
            newest: None,
            previous_present: false,
            temp_files: Vec::new(),
            pointer: None,
            previous_length: 0,
            previous_header: None,
            previous_next_offset: None,
            newest_length: 0,
            first_newest_read: None,
        }
    }

    pub fn in_flight(&self) -> Option<IoId> {
        self.in_flight
    }

    /// The offset every acknowledged record is below, if known: the caller's or the
    /// hint file's, whichever is higher (both are upper bounds that may lag the other).
    fn acknowledged(&self) -> Option<u64> {
        let hinted = self.ack_hint.map(|hint| hint.next_offset);
        self.acknowledged_next_offset.max(hinted)
    }

    fn previous(&self) -> SegmentId {
        let newest = self.newest.expect("a previous segment needs a newest");
        SegmentId(newest.0 - 1)
    }
}

impl StreamMachine {
    /// Issues the current stage's read if none is in flight.
    pub(super) fn pump_recovery(&mut self) -> bool {
        let Phase::Recovering(recovering) = &self.phase else {
            unreachable!("called while recovering");
        };
        if recovering.in_flight.is_some() {
            return false;
        }
        let (_, request) = self.stage_request(recovering);
        let id = self.issue(request, Purpose::Recovery);
        let Phase::Recovering(recovering) = &mut self.phase else {
            unreachable!("still recovering");
        };
        recovering.in_flight = Some(id);
        false
    }

    fn stage_request(&self, recovering: &Recovering) -> (IoStep, DiskRequest) {
        let stream = &self.stream;
        match recovering.stage {
            Stage::List => (
                IoStep::ListSegments,
                DiskRequest::ListDir {
                    path: segments_dir(stream),
                },
            ),
            Stage::ReadAckHint { .. } => (
                IoStep::ReadAckHint,
                DiskRequest::ReadAt {
                    path: ack_hint_path(stream),
                    offset: 0,
                    // One more than a hint, so a longer file is caught.
                    length: u64::from(ACK_HINT_BYTES) + 1,
                },
            ),
            Stage::ReadPointer => (
                IoStep::ReadPointer,
                DiskRequest::ReadAt {
                    path: pointer_path(stream),
                    offset: 0,
                    // One more than a pointer, so a longer file is caught.
                    length: u64::from(SEALED_POINTER_BYTES) + 1,
                },
            ),
            Stage::PreviousLength => (
                IoStep::SegmentLength,
                DiskRequest::Length {
                    path: segment_path(stream, recovering.previous()),
                },
            ),
            Stage::PreviousHeader => (
                IoStep::ReadSegment,
                DiskRequest::ReadAt {
                    path: segment_path(stream, recovering.previous()),
                    offset: 0,
                    length: HEADER_BYTES,
                },
            ),
            Stage::PreviousFooter => (
                IoStep::ReadSegment,
                DiskRequest::ReadAt {
                    path: segment_path(stream, recovering.previous()),
                    offset: recovering.previous_length - FOOTER_BYTES,
                    length: FOOTER_BYTES,
                },
            ),
            Stage::NewestLength => (
                IoStep::SegmentLength,
                DiskRequest::Length {
                    path: segment_path(stream, recovering.newest.expect("a newest segment")),
                },
            ),
            Stage::NewestRead | Stage::NewestConfirm => (
                IoStep::ReadSegment,
                DiskRequest::ReadAt {
                    path: segment_path(stream, recovering.newest.expect("a newest segment")),
                    offset: 0,
                    length: recovering.newest_length,
                },
            ),
        }
    }

    pub(super) fn handle_recovery_completion(&mut self, id: IoId, completion: DiskCompletion) {
        let phase = std::mem::replace(&mut self.phase, Phase::Switching);
        let Phase::Recovering(mut recovering) = phase else {
            panic!(
                "stream {}: recovery completion {id:?} outside recovery",
                self.stream
            );
        };
        assert_eq!(
            recovering.in_flight.take(),
            Some(id),
            "the one recovery read"
        );
        let (step, request) = self.stage_request(&recovering);
        let path = super::steps::request_path(&request).clone();
        match self.advance_recovery(&mut recovering, step, path, completion) {
            Ok(None) => self.phase = Phase::Recovering(recovering),
            Ok(Some(bytes)) => match self.plan_recovery(&recovering, bytes) {
                Ok(steps) => self.phase = Phase::Steps(steps),
                Err(error) => self.fail_recovery(error),
            },
            Err(error) => self.fail_recovery(error),
        }
    }

    fn fail_recovery(&mut self, error: RecoveryError) {
        self.segment = None;
        self.phase = Phase::Switching;
        self.poison(StreamFailure::Recovery(error));
    }

    /// Takes one read's result; returns the newest segment's bytes (or empty bytes
    /// when there is no segment file) once everything is read.
    fn advance_recovery(
        &self,
        recovering: &mut Recovering,
        step: IoStep,
        path: LocalPath,
        completion: DiskCompletion,
    ) -> Result<Option<Option<ScannedRead>>, RecoveryError> {
        let io_error = |kind| RecoveryError::Io {
            step,
            path: path.clone(),
            kind,
        };
        let corrupt = |source: SegmentError| RecoveryError::CorruptSegment {
            path: path.clone(),
            position: source.position(),
            source,
        };
        match (recovering.stage, completion) {
            (Stage::List, DiskCompletion::Listed(names)) => {
                self.take_listing(recovering, &names);
                recovering.stage = Stage::ReadAckHint { again: false };
            }
            (Stage::List, DiskCompletion::Failed(DiskErrorKind::NotFound)) => {
                recovering.stage = Stage::ReadAckHint { again: false };
            }
            (Stage::ReadAckHint { again }, DiskCompletion::Read(bytes)) => {
                // A hint that does not decode is no hint: recovery then cuts nothing
                // it cannot call a torn tail by itself (the safe direction).
                match AckHint::decode(&bytes) {
                    Ok(hint) => {
                        recovering.ack_hint = Some(hint);
                        recovering.stage = Stage::ReadPointer;
                    }
                    Err(_) if !again => recovering.stage = Stage::ReadAckHint { again: true },
                    Err(_) => recovering.stage = Stage::ReadPointer,
                }
            }
            (Stage::ReadAckHint { .. }, DiskCompletion::Failed(DiskErrorKind::NotFound)) => {
                recovering.stage = Stage::ReadPointer;
            }
            (Stage::ReadPointer, DiskCompletion::Read(bytes)) => {
                let pointer = SealedPointer::decode(&bytes).map_err(|source| {
                    RecoveryError::CorruptPointer {
                        path: path.clone(),
                        position: source.position(),
                        source,
                    }
                })?;
                recovering.pointer = Some(pointer);
                return Ok(self.after_pointer(recovering));
            }
            (Stage::ReadPointer, DiskCompletion::Failed(DiskErrorKind::NotFound)) => {
                return Ok(self.after_pointer(recovering));
            }
            (Stage::PreviousLength, DiskCompletion::Length(length)) => {
                if length < HEADER_BYTES + FOOTER_BYTES {
                    return Err(corrupt(
                        DecodeError::Truncated {
                            what: "sealed segment",
                            offset: 0,
                            needed: HEADER_BYTES + FOOTER_BYTES,
                            available: length,
                        }
                        .into(),
                    ));
                }
                recovering.previous_length = length;
                recovering.stage = Stage::PreviousHeader;
            }
            (Stage::PreviousHeader, DiskCompletion::Read(bytes)) => {
                let header = SegmentHeader::decode(&bytes).map_err(corrupt)?;
                let expected = recovering.previous();
                if header.segment_id != expected {
                    return Err(RecoveryError::SegmentIdMismatch {
                        path,
                        expected,
                        found: header.segment_id,
                    });
                }
                recovering.previous_header = Some(header);
                recovering.stage = Stage::PreviousFooter;
            }
            (Stage::PreviousFooter, DiskCompletion::Read(bytes)) => {
                let position = recovering.previous_length - FOOTER_BYTES;
                let footer = SegmentFooter::decode(&bytes, position).map_err(corrupt)?;
                let header = recovering.previous_header.expect("read before the footer");
                let next_offset = header.base_offset.checked_add(footer.record_count);
                let next_offset = next_offset.ok_or_else(|| {
                    corrupt(
                        DecodeError::Invalid {
                            what: "segment footer",
                            offset: position,
                            reason: "base offset plus record count overflows u64".into(),
                        }
                        .into(),
                    )
                })?;
                recovering.previous_next_offset = Some(next_offset);
                recovering.stage = Stage::NewestLength;
            }
            (Stage::NewestLength, DiskCompletion::Length(length)) => {
                if length > SEGMENT_BYTES_MAX {
                    return Err(corrupt(SegmentError::TooLarge {
                        length,
                        limit: SEGMENT_BYTES_MAX,
                    }));
                }
                recovering.newest_length = length;
                recovering.stage = Stage::NewestRead;
            }
            (stage @ (Stage::NewestRead | Stage::NewestConfirm), DiskCompletion::Read(bytes)) => {
                if bytes.len() as u64 != recovering.newest_length {
                    return Err(RecoveryError::ShortRead {
                        path,
                        expected_bytes: recovering.newest_length,
                        read_bytes: bytes.len() as u64,
                    });
                }
                let scan = scan_tail(&bytes);
                let read = (bytes, scan);
                if stage == Stage::NewestRead {
                    if scan_keeps(&read) == Some(recovering.newest_length) {
                        return Ok(Some(Some(read)));
                    }
                    recovering.first_newest_read = Some(Box::new(read));
                    recovering.stage = Stage::NewestConfirm;
                    return Ok(None);
                }
                let first = recovering
                    .first_newest_read
                    .take()
                    .expect("the first read is kept for the confirmation");
                return Ok(Some(Some(more_trusted_read(*first, read))));
            }
            (_, DiskCompletion::Failed(kind)) => return Err(io_error(kind)),
            (stage, other) => panic!(
                "stream {}: completion {other:?} does not fit recovery stage {stage:?}",
                self.stream
            ),
        }
        Ok(None)
    }

    fn after_pointer(&self, recovering: &mut Recovering) -> Option<Option<ScannedRead>> {
        if recovering.newest.is_none() {
            return Some(None);
        }
        recovering.stage = if recovering.previous_present {
            Stage::PreviousLength
        } else {
            Stage::NewestLength
        };
        None
    }

    fn take_listing(&self, recovering: &mut Recovering, names: &[String]) {
        let directory = segments_dir(&self.stream);
        let mut ids = Vec::new();
        for name in names {
            if !LocalPath::component_is_valid(name) {
                continue; // Not ours; never made into a path.
            }
            if name.ends_with(TEMP_FILE_SUFFIX) {
                recovering.temp_files.push(directory.join(name));
            } else if let Ok(segment_id) = parse_segment_file_name(name) {
                ids.push(segment_id);
            }
        }
        let newest = ids.iter().max().copied();
        recovering.newest = newest;
        recovering.previous_present =
            newest.is_some_and(|newest| newest.0 > 0 && ids.contains(&SegmentId(newest.0 - 1)));
    }

    /// Decides from what was read (see the module doc) and plans the script.
    fn plan_recovery(
        &mut self,
        recovering: &Recovering,
        newest_read: Option<ScannedRead>,
    ) -> Result<Steps, RecoveryError> {
        let stream = self.stream.clone();
        let mut remaining: VecDeque<Step> = recovering
            .temp_files
            .iter()
            .cloned()
            .map(remove_temp_step)
            .collect();
        remaining.push_back(remove_temp_step(pointer_temp_path(&stream)));
        remaining.push_back(remove_temp_step(ack_hint_temp_path(&stream)));
        let acknowledged = recovering.acknowledged();
        let mut report = RecoveryReport {
            segment_id: SegmentId(0),
            base_offset: 0,
            next_offset: 0,
            truncated_bytes: 0,
            removed_temp_files: 0,
            newest_was_sealed: false,
            pointer_republished: false,
            acknowledged_hint: recovering.ack_hint.map(|hint| hint.next_offset),
        };
        let disagrees =
            |pointer: SealedPointer, reason: &'static str| RecoveryError::PointerDisagrees {
                path: pointer_path(&stream),
                pointer,
                reason,
            };
        let (Some(newest), Some(read)) = (recovering.newest, newest_read) else {
            if let Some(pointer) = recovering.pointer {
                return Err(disagrees(pointer, "no segment file exists"));
            }
            if let Some(acknowledged) = acknowledged.filter(|acknowledged| *acknowledged > 0) {
                return Err(RecoveryError::CorruptSegment {
                    path: segment_path(&stream, SegmentId(0)),
                    position: 0,
                    source: SegmentError::AcknowledgedRecordsMissing {
                        position: 0,
                        next_offset: 0,
                        acknowledged_next_offset: acknowledged,
                    },
                });
            }
            let header = SegmentHeader {
                segment_id: SegmentId(0),
                base_offset: 0,
                created_at_ms: self.now_ms,
            };
            remaining.extend(open_steps(&stream, &header));
            return Ok(Steps {
                remaining,
                in_flight: None,
                recovery: Some(report),
            });
        };
        let path = segment_path(&stream, newest);
        let Some(next_id) = next_segment_id(newest) else {
            return Err(RecoveryError::SegmentIdsExhausted { path });
        };
        let bytes = read.0.clone();
        let scan = scan_newest(&path, read, acknowledged)?;
        let header = match &scan {
            TailScan::Active(tail) => tail.header,
            TailScan::Sealed { header, .. } => *header,
        };
        if header.segment_id != newest {
            return Err(RecoveryError::SegmentIdMismatch {
                path,
                expected: newest,
                found: header.segment_id,
            });
        }
        if let Some(previous_next_offset) = recovering.previous_next_offset
            && header.base_offset != previous_next_offset
        {
            return Err(RecoveryError::NotDenseAcrossSegments {
                path,
                base_offset: header.base_offset,
                previous_path: segment_path(&stream, recovering.previous()),
                previous_next_offset,
            });
        }
        let corrupt = |source: SegmentError| RecoveryError::CorruptSegment {
            path: path.clone(),
            position: source.position(),
            source,
        };
        let segments = segments_dir(&stream);
        match scan {
            TailScan::Active(tail) => {
                if let Some(pointer) = recovering.pointer
                    && pointer.segment_id >= newest
                {
                    return Err(disagrees(
                        pointer,
                        if pointer.segment_id == newest {
                            "that segment file has no valid footer"
                        } else {
                            "no segment file that new exists"
                        },
                    ));
                }
                if let Some(acknowledged) = acknowledged {
                    tail.check_acknowledged(acknowledged).map_err(corrupt)?;
                }
                let valid_bytes = tail.valid_bytes;
                let valid = bytes.slice(..usize::try_from(valid_bytes).expect("in the buffer"));
                if tail.dropped_bytes > 0 {
                    remaining.push_back(recovery_step(
                        IoStep::TruncateTornTail,
                        DiskRequest::Truncate {
                            path: path.clone(),
                            length: valid_bytes,
                        },
                    ));
                    report.truncated_bytes = tail.dropped_bytes;
                }
                remaining.extend([
                    recovery_step(
                        IoStep::RewriteSegment,
                        DiskRequest::WriteAt {
                            path: path.clone(),
                            offset: 0,
                            bytes: valid.clone(),
                        },
                    ),
                    recovery_step(
                        IoStep::SyncSegment,
                        DiskRequest::SyncFile { path: path.clone() },
                    ),
                    recovery_step(
                        IoStep::SyncSegmentsDir,
                        DiskRequest::SyncDir { path: segments },
                    ),
                ]);
                let hint = AckHint {
                    segment_id: newest,
                    next_offset: tail.next_offset,
                };
                remaining.extend(ack_hint_steps(&stream, &hint));
                remaining.push_back(Step::MarkRecoveredDurable);
                if let Some(pointer) = recovering.pointer {
                    self.coordinator_watermark = pointer.coordinator_watermark;
                }
                self.segment = Some(ActiveSegment::recovered(
                    path,
                    tail.header,
                    &valid,
                    tail.digest,
                ));
            }
            TailScan::Sealed { header, footer } => {
                let info = SealedSegmentInfo {
                    segment_id: newest,
                    base_offset: header.base_offset,
                    footer,
                    recovered: true,
                };
                let next_offset = info.next_offset();
                if let Some(acknowledged) = acknowledged
                    && next_offset < acknowledged
                {
                    return Err(corrupt(SegmentError::AcknowledgedRecordsMissing {
                        position: footer.durable_bytes,
                        next_offset,
                        acknowledged_next_offset: acknowledged,
                    }));
                }
                let publish = match recovering.pointer {
                    None => true,
                    Some(pointer) if pointer.segment_id < newest => true,
                    Some(pointer) if pointer.segment_id > newest => {
                        return Err(disagrees(pointer, "no segment file that new exists"));
                    }
                    Some(pointer) if pointer.durable_bytes != footer.durable_bytes => {
                        return Err(disagrees(pointer, "that segment's footer disagrees"));
                    }
                    Some(_) => false,
                };
                remaining.extend([
                    recovery_step(
                        IoStep::RewriteSegment,
                        DiskRequest::WriteAt {
                            path: path.clone(),
                            offset: 0,
                            bytes,
                        },
                    ),
                    recovery_step(
                        IoStep::SyncSegment,
                        DiskRequest::SyncFile { path: path.clone() },
                    ),
                    recovery_step(
                        IoStep::SyncSegmentsDir,
                        DiskRequest::SyncDir { path: segments },
                    ),
                ]);
                if publish {
                    remaining.extend(pointer_steps(
                        &stream,
                        &SealedPointer {
                            segment_id: newest,
                            durable_bytes: footer.durable_bytes,
                            coordinator_watermark: footer.coordinator_watermark,
                        },
                    ));
                }
                remaining.push_back(Step::EmitSealed(info));
                remaining.extend(open_steps(
                    &stream,
                    &SegmentHeader {
                        segment_id: next_id,
                        base_offset: next_offset,
                        created_at_ms: self.now_ms,
                    },
                ));
                self.coordinator_watermark = footer.coordinator_watermark;
                report.newest_was_sealed = true;
                report.pointer_republished = publish;
            }
        }
        Ok(Steps {
            remaining,
            in_flight: None,
            recovery: Some(report),
        })
    }
}

/// A read of the newest segment and its [`scan_tail`].
type ScannedRead = (Bytes, Result<TailScan, SegmentError>);

/// How many bytes of a newest segment its scan keeps: all of them for a sealed one,
/// the valid prefix of an active one, `None` when the scan found corruption.
fn scan_keeps((bytes, scan): &ScannedRead) -> Option<u64> {
    match scan {
        Ok(TailScan::Sealed { .. }) => Some(bytes.len() as u64),
        Ok(TailScan::Active(tail)) => Some(tail.valid_bytes),
        Err(_) => None,
    }
}

/// Of two reads of the same file, the one to recover from. Equal reads are the
/// disk's bytes. Reads that differ mean one returned flipped bits: a flip can only
/// break a checksum, never make one verify, so the read whose scan keeps more is the
/// disk's (a clean scan beats one that finds corruption).
fn more_trusted_read(first: ScannedRead, second: ScannedRead) -> ScannedRead {
    if first.0 != second.0 && scan_keeps(&second) > scan_keeps(&first) {
        second
    } else {
        first
    }
}

/// Judges the newest segment from its scan. A bad record followed by valid ones (or
/// a scan that cannot decide) is cut like a torn tail only if the valid prefix
/// before it already holds every acknowledged record: the bytes after it were never
/// acknowledged durable, so they are an unsynced write that reached the disk out of
/// order.
fn scan_newest(
    path: &LocalPath,
    (bytes, scan): ScannedRead,
    acknowledged_next_offset: Option<u64>,
) -> Result<TailScan, RecoveryError> {
    let corrupt = |source: SegmentError| RecoveryError::CorruptSegment {
        path: path.clone(),
        position: source.position(),
        source,
    };
    let error = match scan {
        Ok(scan) => return Ok(scan),
        Err(error) => error,
    };
    let cut_at = match &error {
        SegmentError::CorruptBeforeValidRecord { position, .. }
        | SegmentError::ScanBudgetExceeded { position, .. } => *position,
        _ => return Err(corrupt(error)),
    };
    let Some(acknowledged) = acknowledged_next_offset else {
        return Err(corrupt(error));
    };
    let prefix = &bytes[..usize::try_from(cut_at).expect("positions index the buffer")];
    match scan_tail(prefix) {
        Ok(TailScan::Active(mut tail))
            if tail.dropped_bytes == 0 && tail.next_offset >= acknowledged =>
        {
            assert_eq!(tail.valid_bytes, cut_at, "the prefix is all valid frames");
            tail.dropped_bytes = bytes.len() as u64 - cut_at;
            tail.stop_reason = Some(error);
            Ok(TailScan::Active(tail))
        }
        _ => Err(corrupt(error)),
    }
}
