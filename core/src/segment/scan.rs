//! The recovery scan of a segment file found on disk after a restart.
//!
//! An active segment is header + frames with no footer. A crash may leave a torn or
//! garbage tail after the last complete frame: a partial frame, zeros from a file
//! extended before its data reached the disk, or junk. [`scan_tail`] walks the frames
//! from the header and stops at the first position that does not hold a valid frame
//! with the next dense offset. Then it decides:
//!
//! - **Torn tail** (safe to truncate): no valid frame starts anywhere after the bad
//!   position. The bytes from the bad position on were never a complete, acknowledged
//!   frame followed by more; truncating them loses nothing that can be read.
//! - **Corruption** (an error, never a truncation): a valid frame starts somewhere
//!   after the bad position. Complete records were written after the bad one, so the
//!   bad one was once complete too and may have been acknowledged.
//!
//! **Searching for a later valid frame.** Checking the CRC at every byte would cost
//! `O(n * frame)`. A candidate position `p` is checksummed only if it is plausible:
//! its payload length is within [`RECORD_PAYLOAD_BYTES_MAX`] and fits the bytes left,
//! and its offset field lies in `[e, e + (p - bad) / 36]`, where `e` is the offset the
//! bad frame should have carried and 36 the smallest frame: a real record written
//! after the bad one has an offset at least `e` and at most one more per 36 bytes.
//! Runs of zero bytes are skipped without checksumming, because an all-zero frame
//! header never verifies (its stored CRC 0 is not the CRC of 32 zero bytes). The CRC
//! work is capped by [`TAIL_SCAN_VERIFY_BYTES_MAX`]; past it the scan refuses to
//! decide ([`SegmentError::ScanBudgetExceeded`]) rather than truncate.
//!
//! **False positives** (garbage taken for a valid frame, so a torn tail is reported as
//! corruption; the safe direction): for random bytes a position passes the offset
//! filter with probability at most `(n / 36 + 1) / 2^64` and then the CRC with
//! `2^-32`; over a whole 4 GiB segment the expected count is below `2^-36`. Structured
//! garbage can do better only by containing real AOF2 frames with nearby offsets (e.g.
//! payloads that embed frames of a similar stream); that also fails safe.
//!
//! **False negatives** (acknowledged data truncated silently): bit rot in the *last*
//! record looks exactly like a torn write of it, and bytes alone cannot tell them
//! apart. A caller that knows how far appends were acknowledged checks it with
//! [`ActiveTail::check_acknowledged`].
//!
//! A file ending with a footer that verifies is reported as [`TailScan::Sealed`] after
//! a full [`SealedSegment::decode`]. A footer that does not verify (a torn seal) is
//! treated like any other bytes after the records.
//!
//! **Invariants**
//! - `Active` reports `valid_bytes + dropped_bytes == file length`, and the first
//!   `valid_bytes` hold the header and exactly `record_count` valid dense frames.
//! - `Active` with `dropped_bytes > 0` means no valid frame starts after `valid_bytes`.
//! - A CRC-valid frame with the wrong offset is an error, never a torn tail.
//!
//! [`RECORD_PAYLOAD_BYTES_MAX`]: crate::limits::RECORD_PAYLOAD_BYTES_MAX

use super::record::peek_length_and_offset;
use super::{
    Record, SealedSegment, SegmentDigest, SegmentError, SegmentFooter, SegmentHeader, check_dense,
    to_index,
};
use crate::codec::crc32;
use crate::limits::{
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
    SEGMENT_RECORD_FRAME_HEADER_BYTES, TAIL_SCAN_VERIFY_BYTES_MAX,
};

const FRAME_HEADER_BYTES: usize = SEGMENT_RECORD_FRAME_HEADER_BYTES as usize;

/// What the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailScan {
    /// The file carries a verified footer; the whole segment verified.
    Sealed {
        header: SegmentHeader,
        footer: SegmentFooter,
    },
    /// No footer: the valid prefix, and how much to truncate.
    Active(ActiveTail),
}

/// The last valid record of an active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LastRecord {
    pub offset: u64,
    /// Absolute byte position of its frame.
    pub position: u64,
    pub ext_id: u64,
    pub timestamp_ms: u64,
}

/// The valid prefix of an active segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTail {
    pub header: SegmentHeader,
    /// `None` when the segment holds no valid record.
    pub last_record: Option<LastRecord>,
    pub record_count: u64,
    /// Offset the next append gets: `base_offset + record_count`.
    pub next_offset: u64,
    /// Length to truncate the file to: header plus every valid frame.
    pub valid_bytes: u64,
    /// Bytes after `valid_bytes` that truncation drops.
    pub dropped_bytes: u64,
    /// Why the walk stopped before the end of the file; `None` when nothing is dropped.
    pub stop_reason: Option<SegmentError>,
    /// Digest of the valid prefix, for the writer to continue appending from.
    pub digest: SegmentDigest,
}

impl ActiveTail {
    /// Fails if the valid prefix ends before `acknowledged_next_offset`, the offset
    /// after the last record known to have been acknowledged durable.
    pub fn check_acknowledged(&self, acknowledged_next_offset: u64) -> Result<(), SegmentError> {
        if self.next_offset < acknowledged_next_offset {
            return Err(SegmentError::AcknowledgedRecordsMissing {
                position: self.valid_bytes,
                next_offset: self.next_offset,
                acknowledged_next_offset,
            });
        }
        Ok(())
    }
}

/// Scans a segment file (see the module doc): reports a sealed segment, the valid
/// prefix of an active one, or corruption that must not be truncated away.
pub fn scan_tail(bytes: &[u8]) -> Result<TailScan, SegmentError> {
    scan_tail_with_budget(bytes, TAIL_SCAN_VERIFY_BYTES_MAX)
}

fn scan_tail_with_budget(bytes: &[u8], verify_bytes_max: u64) -> Result<TailScan, SegmentError> {
    let length = bytes.len() as u64;
    if length > SEGMENT_BYTES_MAX {
        return Err(SegmentError::TooLarge {
            length,
            limit: SEGMENT_BYTES_MAX,
        });
    }
    let header = SegmentHeader::decode(bytes)?;
    let footer_bytes = u64::from(SEGMENT_FOOTER_BYTES);
    if length >= u64::from(SEGMENT_HEADER_BYTES) + footer_bytes
        && SegmentFooter::has_trailing_magic(bytes)
    {
        let footer_position = length - footer_bytes;
        let footer = &bytes[to_index(footer_position)..];
        if SegmentFooter::decode(footer, footer_position).is_ok() {
            let sealed = SealedSegment::decode(bytes)?;
            return Ok(TailScan::Sealed {
                header: *sealed.header(),
                footer: *sealed.footer(),
            });
        }
    }

    let mut position = u64::from(SEGMENT_HEADER_BYTES);
    let mut expected_offset = header.base_offset;
    let mut record_count = 0u64;
    let mut last_record = None;
    let mut stop_reason = None;
    while position < length {
        match Record::decode(&bytes[to_index(position)..], position) {
            Ok(framed) => {
                // A complete frame with a valid CRC is no torn write: a wrong offset
                // in it is corruption.
                expected_offset = check_dense(&framed, expected_offset)?;
                record_count += 1;
                last_record = Some(LastRecord {
                    offset: framed.record.offset,
                    position,
                    ext_id: framed.record.ext_id,
                    timestamp_ms: framed.record.timestamp_ms,
                });
                position = framed.end();
            }
            Err(cause) => {
                search_after_bad_frame(bytes, position, expected_offset, &cause, verify_bytes_max)?;
                stop_reason = Some(cause);
                break;
            }
        }
    }
    let valid_bytes = position;
    assert!(valid_bytes <= length, "frames end inside the file");
    assert_eq!(
        header.base_offset + record_count,
        expected_offset,
        "offsets are dense from the base"
    );
    let valid = &bytes[..to_index(valid_bytes)];
    let digest = SegmentDigest::from_parts(
        crc32(valid),
        valid_bytes,
        record_count,
        last_record.map_or(0, |last: LastRecord| last.ext_id),
    );
    Ok(TailScan::Active(ActiveTail {
        header,
        last_record,
        record_count,
        next_offset: expected_offset,
        valid_bytes,
        dropped_bytes: length - valid_bytes,
        stop_reason,
        digest,
    }))
}

/// Fails if a valid frame starts anywhere after `bad_position`, where the frame with
/// `expected_offset` should have been; see the module doc for the method.
fn search_after_bad_frame(
    bytes: &[u8],
    bad_position: u64,
    expected_offset: u64,
    cause: &SegmentError,
    verify_bytes_max: u64,
) -> Result<(), SegmentError> {
    let bad_index = to_index(bad_position);
    let mut verified_bytes = 0u64;
    let mut index = bad_index + 1;
    while index + FRAME_HEADER_BYTES <= bytes.len() {
        if bytes[index] == 0 {
            let zeros = bytes[index..].iter().take_while(|byte| **byte == 0).count();
            if zeros >= FRAME_HEADER_BYTES {
                // Every candidate whose frame header lies inside this run is all zero
                // and fails its CRC; resume at the first one that reaches past it.
                index += zeros - FRAME_HEADER_BYTES + 1;
                continue;
            }
        }
        let (length, offset) =
            peek_length_and_offset(&bytes[index..]).expect("the loop condition leaves a header");
        let left_after_header = (bytes.len() - index - FRAME_HEADER_BYTES) as u64;
        let records_between = ((index - bad_index) / FRAME_HEADER_BYTES) as u64;
        let plausible = length <= RECORD_PAYLOAD_BYTES_MAX
            && u64::from(length) <= left_after_header
            && offset >= expected_offset
            && offset <= expected_offset.saturating_add(records_between);
        if plausible {
            verified_bytes += FRAME_HEADER_BYTES as u64 + u64::from(length);
            if verified_bytes > verify_bytes_max {
                return Err(SegmentError::ScanBudgetExceeded {
                    position: bad_position,
                    remaining_bytes: (bytes.len() - bad_index) as u64,
                    limit: verify_bytes_max,
                });
            }
            if let Ok(framed) = Record::decode(&bytes[index..], index as u64) {
                return Err(SegmentError::CorruptBeforeValidRecord {
                    position: bad_position,
                    expected_offset,
                    cause: Box::new(cause.clone()),
                    valid_position: framed.position,
                    valid_offset: framed.record.offset,
                });
            }
        }
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentId;

    fn active(base_offset: u64, payloads: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        SegmentHeader {
            segment_id: SegmentId(3),
            base_offset,
            created_at_ms: 1,
        }
        .encode(&mut bytes);
        let mut positions = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            positions.push(bytes.len() as u64);
            Record {
                offset: base_offset + index as u64,
                timestamp_ms: 2,
                ext_id: index as u64,
                flags: 0,
                payload,
            }
            .encode(&mut bytes);
        }
        (bytes, positions)
    }

    fn scan_active(bytes: &[u8]) -> ActiveTail {
        match scan_tail(bytes).unwrap() {
            TailScan::Active(tail) => tail,
            sealed @ TailScan::Sealed { .. } => panic!("expected active, got {sealed:?}"),
        }
    }

    #[test]
    fn long_zero_tail_is_skipped_and_truncated() {
        let (mut bytes, _) = active(0, &[b"one", b"two"]);
        let valid = bytes.len() as u64;
        bytes.resize(bytes.len() + 100_000, 0);
        let tail = scan_active(&bytes);
        assert_eq!(tail.valid_bytes, valid);
        assert_eq!(tail.dropped_bytes, 100_000);
        assert_eq!(tail.next_offset, 2);
    }

    #[test]
    fn valid_frame_after_a_zeroed_frame_is_found() {
        // Base offset 0 makes zero offset fields plausible, the hardest case for the
        // zero-run skip.
        let (mut bytes, positions) = active(0, &[&[0u8; 100], &[0u8; 50], b"x"]);
        let (first, second) = (to_index(positions[0]), to_index(positions[1]));
        bytes[first..second].fill(0);
        let error = scan_tail(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::CorruptBeforeValidRecord {
                    position,
                    expected_offset: 0,
                    valid_offset: 1,
                    ..
                } if position == positions[0]
            ),
            "{error}"
        );
    }

    #[test]
    fn empty_frame_right_after_a_zero_run_is_found() {
        // The valid frame starts with its zero length field, inside the zero run.
        let (mut bytes, positions) = active(0, &[b"a", &[9u8; 100], b""]);
        let (zeroed, after) = (to_index(positions[1]), to_index(positions[2]));
        bytes[zeroed..after].fill(0);
        let error = scan_tail(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::CorruptBeforeValidRecord {
                    position,
                    valid_position,
                    valid_offset: 2,
                    ..
                } if position == positions[1] && valid_position == positions[2]
            ),
            "{error}"
        );
    }

    #[test]
    fn valid_frame_at_the_edge_of_the_offset_window_is_found() {
        // Minimal frames: the record after the bad one sits 36 bytes on and carries
        // the largest offset the window admits there.
        let (mut bytes, positions) = active(50, &[b"a", b"", b""]);
        bytes[to_index(positions[1]) + 4] ^= 1;
        let error = scan_tail(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::CorruptBeforeValidRecord {
                    position,
                    expected_offset: 51,
                    valid_position,
                    valid_offset: 52,
                    ..
                } if position == positions[1] && valid_position == positions[2]
            ),
            "{error}"
        );
    }

    #[test]
    fn budget_exhaustion_refuses_to_truncate() {
        let (mut bytes, _) = active(5, &[b"a"]);
        let bad = bytes.len() as u64;
        // Garbage of plausible frame headers (offset 6, long lengths, bad CRCs).
        for _ in 0..8 {
            let mut frame = Vec::new();
            Record {
                offset: 6,
                timestamp_ms: 0,
                ext_id: 0,
                flags: 0,
                payload: &[7u8; 200],
            }
            .encode(&mut frame);
            frame[4] ^= 1;
            bytes.extend_from_slice(&frame);
        }
        let error = scan_tail_with_budget(&bytes, 500).unwrap_err();
        assert!(
            matches!(error, SegmentError::ScanBudgetExceeded { position, limit: 500, .. } if position == bad),
            "{error}"
        );
        // With the real budget the same bytes are a torn tail.
        assert_eq!(scan_active(&bytes).valid_bytes, bad);
    }

    #[test]
    fn crc_valid_frame_with_wrong_offset_is_corruption() {
        let (mut bytes, _) = active(10, &[b"a"]);
        let position = bytes.len() as u64;
        Record {
            offset: 12,
            timestamp_ms: 0,
            ext_id: 0,
            flags: 0,
            payload: b"b",
        }
        .encode(&mut bytes);
        let error = scan_tail(&bytes).unwrap_err();
        assert_eq!(
            error,
            SegmentError::OffsetNotDense {
                position,
                expected: 11,
                found: 12
            }
        );
    }

    #[test]
    fn digest_of_the_prefix_continues_like_a_fresh_one() {
        let (bytes, _) = active(0, &[b"a", b"bb"]);
        let tail = scan_active(&bytes);
        let mut fresh = SegmentDigest::new();
        fresh.update_header(&bytes[..SEGMENT_HEADER_BYTES as usize]);
        fresh.update_frames(&bytes[SEGMENT_HEADER_BYTES as usize..]);
        assert_eq!(tail.digest, fresh);
    }

    #[test]
    fn acknowledged_records_must_be_in_the_prefix() {
        let (bytes, _) = active(100, &[b"a", b"b"]);
        let tail = scan_active(&bytes);
        assert_eq!(tail.check_acknowledged(102), Ok(()));
        let error = tail.check_acknowledged(103).unwrap_err();
        assert_eq!(error.position(), bytes.len() as u64);
    }
}
