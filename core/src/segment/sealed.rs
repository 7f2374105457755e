//! A sealed segment, verified as a whole: header, every frame, footer, segment CRC.
//!
//! **Invariants**
//! - A [`SealedSegment`] exists only for bytes that passed every check of
//!   [`SealedSegment::decode`]; its iterators therefore cannot meet a bad frame.
//! - Records iterate in file order with offsets `base_offset..next_offset`, each with
//!   the absolute byte position of its frame.

use super::{
    FramedRecord, Record, SegmentError, SegmentFooter, SegmentHeader, check_dense, to_index,
};
use crate::codec::{DecodeError, crc32};
use crate::limits::{SEGMENT_BYTES_MAX, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES};

/// Where one record's frame starts: what a compressor needs to cut frames at record
/// boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordBoundary {
    /// Offset of the record.
    pub offset: u64,
    /// Absolute byte position of its frame in the segment file.
    pub position: u64,
}

/// The bytes of a sealed segment file, verified.
#[derive(Debug, Clone, Copy)]
pub struct SealedSegment<'a> {
    bytes: &'a [u8],
    header: SegmentHeader,
    footer: SegmentFooter,
}

impl<'a> SealedSegment<'a> {
    /// Verifies the whole file: the header; the footer found at the end; every frame
    /// between them (length within limit, CRC, dense offsets from `base_offset`); the
    /// footer's record count, last ext_id and segment CRC against the frames.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, SegmentError> {
        let length = bytes.len() as u64;
        if length > SEGMENT_BYTES_MAX {
            return Err(SegmentError::TooLarge {
                length,
                limit: SEGMENT_BYTES_MAX,
            });
        }
        let header = SegmentHeader::decode(bytes)?;
        let smallest = u64::from(SEGMENT_HEADER_BYTES) + u64::from(SEGMENT_FOOTER_BYTES);
        if length < smallest {
            return Err(DecodeError::Truncated {
                what: "segment footer",
                offset: u64::from(SEGMENT_HEADER_BYTES),
                needed: u64::from(SEGMENT_FOOTER_BYTES),
                available: length - u64::from(SEGMENT_HEADER_BYTES),
            }
            .into());
        }
        let footer_position = length - u64::from(SEGMENT_FOOTER_BYTES);
        let footer_index = to_index(footer_position);
        let footer = SegmentFooter::decode(&bytes[footer_index..], footer_position)?;

        let mut record_count = 0u64;
        let mut last_ext_id = 0u64;
        let mut expected_offset = header.base_offset;
        let mut position = u64::from(SEGMENT_HEADER_BYTES);
        while position < footer_position {
            // The slice ends at the footer, so no frame can claim footer bytes.
            let framed = Record::decode(&bytes[to_index(position)..footer_index], position)?;
            expected_offset = check_dense(&framed, expected_offset)?;
            record_count += 1;
            last_ext_id = framed.record.ext_id;
            position = framed.end();
        }
        debug_assert_eq!(
            position, footer_position,
            "frames end where the footer starts"
        );
        let mismatch = |field, stored, computed| SegmentError::FooterMismatch {
            position: footer_position,
            field,
            stored,
            computed,
        };
        if footer.record_count != record_count {
            return Err(mismatch("record_count", footer.record_count, record_count));
        }
        if footer.last_ext_id != last_ext_id {
            return Err(mismatch("last_ext_id", footer.last_ext_id, last_ext_id));
        }
        let segment_crc = crc32(&bytes[..footer_index]);
        if footer.segment_crc != segment_crc {
            return Err(mismatch(
                "segment_crc",
                u64::from(footer.segment_crc),
                u64::from(segment_crc),
            ));
        }
        Ok(SealedSegment {
            bytes,
            header,
            footer,
        })
    }

    #[must_use]
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    #[must_use]
    pub fn footer(&self) -> &SegmentFooter {
        &self.footer
    }

    /// The whole file.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the first record.
    #[must_use]
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset the next segment starts at: `base_offset + record_count`.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.header.base_offset + self.footer.record_count
    }

    #[must_use]
    pub fn record_count(&self) -> u64 {
        self.footer.record_count
    }

    /// Every record in file order, with its frame position.
    #[must_use]
    pub fn records(&self) -> Records<'a> {
        Records {
            frames: &self.bytes[..to_index(self.footer.durable_bytes)],
            position: u64::from(SEGMENT_HEADER_BYTES),
        }
    }

    /// `(offset, position)` of every record frame, in file order.
    pub fn record_boundaries(&self) -> impl Iterator<Item = RecordBoundary> + 'a {
        self.records().map(|framed| RecordBoundary {
            offset: framed.record.offset,
            position: framed.position,
        })
    }

    /// The record with `offset`, if the segment holds it (a walk over the frames).
    #[must_use]
    pub fn record(&self, offset: u64) -> Option<FramedRecord<'a>> {
        if offset < self.base_offset() || offset >= self.next_offset() {
            return None;
        }
        self.records().find(|framed| framed.record.offset == offset)
    }
}

/// Iterator over the records of a [`SealedSegment`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    /// Header and frames, without the footer.
    frames: &'a [u8],
    position: u64,
}

impl<'a> Iterator for Records<'a> {
    type Item = FramedRecord<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = to_index(self.position);
        if index >= self.frames.len() {
            return None;
        }
        let framed = Record::decode(&self.frames[index..], self.position)
            .expect("SealedSegment::decode verified every frame of these immutable bytes");
        self.position = framed.end();
        Some(framed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentId;
    use crate::segment::SegmentDigest;

    /// A segment whose footer is honestly encoded (valid CRC) but may lie.
    fn segment(offsets: &[u64], edit_footer: impl FnOnce(&mut SegmentFooter)) -> Vec<u8> {
        let mut bytes = Vec::new();
        SegmentHeader {
            segment_id: SegmentId(1),
            base_offset: 10,
            created_at_ms: 0,
        }
        .encode(&mut bytes);
        let mut digest = SegmentDigest::new();
        digest.update_header(&bytes);
        for (index, offset) in offsets.iter().enumerate() {
            let start = bytes.len();
            Record {
                offset: *offset,
                timestamp_ms: 0,
                ext_id: 100 + index as u64,
                flags: 0,
                payload: b"p",
            }
            .encode(&mut bytes);
            digest.update_frames(&bytes[start..]);
        }
        let mut footer = digest.footer(0, false, 0);
        edit_footer(&mut footer);
        footer.encode(&mut bytes);
        bytes
    }

    fn footer_field(error: SegmentError) -> &'static str {
        match error {
            SegmentError::FooterMismatch { field, .. } => field,
            other => panic!("expected a footer mismatch, got {other}"),
        }
    }

    #[test]
    fn honest_segment_decodes() {
        let bytes = segment(&[10, 11, 12], |_| {});
        let sealed = SealedSegment::decode(&bytes).unwrap();
        assert_eq!(sealed.next_offset(), 13);
        assert_eq!(sealed.footer().last_ext_id, 102);
    }

    #[test]
    fn footer_that_lies_is_rejected_field_by_field() {
        let lie = |edit: fn(&mut SegmentFooter)| {
            footer_field(SealedSegment::decode(&segment(&[10, 11], edit)).unwrap_err())
        };
        assert_eq!(lie(|footer| footer.record_count = 3), "record_count");
        assert_eq!(lie(|footer| footer.last_ext_id = 100), "last_ext_id");
        assert_eq!(lie(|footer| footer.segment_crc ^= 1), "segment_crc");
        assert_eq!(lie(|footer| footer.durable_bytes += 1), "durable_bytes");
    }

    #[test]
    fn offsets_must_be_dense_from_the_base() {
        let bytes = segment(&[10, 12], |_| {});
        let error = SealedSegment::decode(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::OffsetNotDense {
                    expected: 11,
                    found: 12,
                    ..
                }
            ),
            "{error}"
        );
        let bytes = segment(&[11], |_| {});
        assert!(SealedSegment::decode(&bytes).is_err());
    }

    #[test]
    fn offset_u64_max_is_never_a_record() {
        let mut bytes = Vec::new();
        SegmentHeader {
            segment_id: SegmentId(1),
            base_offset: u64::MAX,
            created_at_ms: 0,
        }
        .encode(&mut bytes);
        let mut digest = SegmentDigest::new();
        digest.update_header(&bytes);
        let start = bytes.len();
        Record {
            offset: u64::MAX,
            timestamp_ms: 0,
            ext_id: 0,
            flags: 0,
            payload: b"",
        }
        .encode(&mut bytes);
        digest.update_frames(&bytes[start..]);
        digest.footer(0, false, 0).encode(&mut bytes);
        let error = SealedSegment::decode(&bytes).unwrap_err();
        assert_eq!(error.position(), start as u64);
    }

    #[test]
    fn a_frame_cannot_run_into_the_footer() {
        // Claim a longer payload for the last frame: its bytes would reach into the
        // footer, which the walk never lets a frame read.
        let mut bytes = segment(&[10], |_| {});
        let frame = SEGMENT_HEADER_BYTES as usize;
        bytes[frame..frame + 4].copy_from_slice(&10u32.to_le_bytes());
        let error = SealedSegment::decode(&bytes).unwrap_err();
        assert!(
            matches!(error, SegmentError::Decode(DecodeError::Truncated { .. })),
            "{error}"
        );
    }
}
