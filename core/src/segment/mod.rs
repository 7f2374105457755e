//! The segment file: a fixed header, dense checksummed record frames, and (once sealed)
//! a fixed footer; plus the tail scanner that recovers an active segment after a crash.
//!
//! A segment holds the records of one stream with offsets `base_offset`,
//! `base_offset + 1`, ... An *active* segment is header + frames and grows by appends;
//! sealing appends the footer once. The byte layouts are drawn in
//! `docs/format.md`:
//!
//! ```text
//! header  (SEGMENT_HEADER_BYTES = 40)         magic, version, flags, segment id,
//!                                             base offset, created_at_ms, CRC
//! frame*  (SEGMENT_RECORD_FRAME_HEADER_BYTES  payload length, CRC, offset,
//!          = 36, then the payload)            timestamp_ms, ext_id, flags, payload
//! footer  (SEGMENT_FOOTER_BYTES = 60, sealed) record count, durable bytes, last ext_id,
//!                                             coordinator watermark, sealed_at_ms,
//!                                             segment CRC, flags, CRC, trailing magic
//! ```
//!
//! - [`SegmentHeader`], [`Record`], [`SegmentFooter`]: encode into a caller-owned
//!   [`bytes::BufMut`], decode from a slice.
//! - [`SegmentDigest`]: what a writer accumulates while appending, to build the footer.
//! - [`SealedSegment`]: a fully verified sealed segment; iterates records and their
//!   byte positions.
//! - [`scan_tail`]: the recovery scan of an active segment.
//!
//! **Invariants**
//! - Every byte of a segment is covered by a CRC32 or compared with a constant: the
//!   header CRC covers the header, each frame CRC covers every other byte of its frame,
//!   the footer CRC covers every other byte of the footer, and the footer's segment CRC
//!   covers header and frames once more.
//! - Record offsets are dense: frame `i` carries `base_offset + i`, and `u64::MAX` is
//!   never a record offset, so the next offset always fits a `u64`.
//! - A payload length is checked against [`RECORD_PAYLOAD_BYTES_MAX`] before anything
//!   after it is read; decoding never panics and never allocates.
//! - [`SealedSegment::decode`] accepts a segment only if header, every frame, the
//!   footer and the segment CRC all verify and the footer's counts match the frames.
//! - [`scan_tail`] truncates only bytes after which no valid record frame exists; a bad
//!   record followed by a valid one is an error, never a truncation.
//!
//! [`RECORD_PAYLOAD_BYTES_MAX`]: crate::limits::RECORD_PAYLOAD_BYTES_MAX

mod digest;
mod footer;
mod header;
mod record;
mod scan;
mod sealed;

pub use digest::SegmentDigest;
pub use footer::SegmentFooter;
pub use header::SegmentHeader;
pub use record::{FramedRecord, Record, StoredRecord};
pub use scan::{ActiveTail, LastRecord, TailScan, scan_tail};
pub use sealed::{RecordBoundary, Records, SealedSegment};

use crate::codec::DecodeError;
use thiserror::Error;

/// Version of the segment layout written by this build (header, frames and footer).
pub const SEGMENT_FORMAT_VERSION: u16 = 1;

/// First eight bytes of every segment file.
pub const SEGMENT_HEADER_MAGIC: [u8; 8] = *b"AOF2SEGH";

/// Last eight bytes of a sealed segment file.
pub const SEGMENT_FOOTER_MAGIC: [u8; 8] = *b"AOF2SEGF";

/// A segment that cannot be read as it stands. Every variant names the absolute byte
/// position it refers to ([`SegmentError::position`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// A header, frame or footer failed to decode (short, bad magic, bad CRC, ...).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame with a valid CRC carries the wrong record offset.
    #[error(
        "segment record frame at byte {position}: offset {found}, expected {expected} (offsets are dense)"
    )]
    OffsetNotDense {
        position: u64,
        expected: u64,
        found: u64,
    },
    /// The footer verifies but disagrees with the bytes it describes.
    #[error(
        "segment footer at byte {position}: {field} is {stored} but the segment has {computed}"
    )]
    FooterMismatch {
        position: u64,
        field: &'static str,
        stored: u64,
        computed: u64,
    },
    /// The file is larger than any segment may be.
    #[error("segment of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge { length: u64, limit: u64 },
    /// The tail scanner found a bad record with a valid record after it: this is
    /// corruption of data that may have been acknowledged, not a torn write.
    #[error(
        "segment record frame at byte {position} (expected offset {expected_offset}) is bad \
         ({cause}) but a valid record with offset {valid_offset} follows at byte \
         {valid_position}: refusing to truncate"
    )]
    CorruptBeforeValidRecord {
        position: u64,
        expected_offset: u64,
        cause: Box<SegmentError>,
        valid_position: u64,
        valid_offset: u64,
    },
    /// The tail scanner spent its verification budget without deciding whether the
    /// bytes after a bad record hold a valid record.
    #[error(
        "segment record frame at byte {position} is bad and checking the {remaining_bytes} \
         bytes after it would exceed the tail-scan budget of {limit} bytes: refusing to truncate"
    )]
    ScanBudgetExceeded {
        position: u64,
        remaining_bytes: u64,
        limit: u64,
    },
    /// The valid prefix of an active segment ends before records known to be
    /// acknowledged.
    #[error(
        "segment valid prefix ends at byte {position} with next offset {next_offset}, \
         but offsets below {acknowledged_next_offset} were acknowledged"
    )]
    AcknowledgedRecordsMissing {
        position: u64,
        next_offset: u64,
        acknowledged_next_offset: u64,
    },
}

impl SegmentError {
    /// The absolute byte position in the segment file the error refers to.
    #[must_use]
    pub fn position(&self) -> u64 {
        match self {
            SegmentError::Decode(error) => error.offset(),
            SegmentError::OffsetNotDense { position, .. }
            | SegmentError::FooterMismatch { position, .. }
            | SegmentError::CorruptBeforeValidRecord { position, .. }
            | SegmentError::ScanBudgetExceeded { position, .. }
            | SegmentError::AcknowledgedRecordsMissing { position, .. } => *position,
            SegmentError::TooLarge { .. } => 0,
        }
    }
}

/// `position` as a slice index. Positions come from slice lengths or were checked
/// against one, so they always fit.
fn to_index(position: u64) -> usize {
    usize::try_from(position).expect("positions are bounded by a slice length")
}

/// Checks that `framed` carries `expected`, the next dense offset, and returns the one
/// after it. The offset `u64::MAX` is never valid, so the next offset always fits.
fn check_dense(framed: &FramedRecord<'_>, expected: u64) -> Result<u64, SegmentError> {
    if framed.record.offset != expected {
        return Err(SegmentError::OffsetNotDense {
            position: framed.position,
            expected,
            found: framed.record.offset,
        });
    }
    expected.checked_add(1).ok_or_else(|| {
        DecodeError::Invalid {
            what: "segment record frame",
            offset: framed.position,
            reason: "offset u64::MAX is reserved: the next offset must fit u64".into(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES};

    #[test]
    fn magics_differ_and_fit_the_layout() {
        assert_ne!(SEGMENT_HEADER_MAGIC, SEGMENT_FOOTER_MAGIC);
        assert!(SEGMENT_HEADER_BYTES as usize > SEGMENT_HEADER_MAGIC.len());
        assert!(SEGMENT_FOOTER_BYTES as usize > SEGMENT_FOOTER_MAGIC.len());
    }

    #[test]
    fn errors_name_their_position() {
        let error = SegmentError::OffsetNotDense {
            position: 76,
            expected: 1,
            found: 2,
        };
        assert_eq!(error.position(), 76);
        assert!(error.to_string().contains("byte 76"), "{error}");
    }
}
