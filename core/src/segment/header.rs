//! The fixed segment header, written once when the segment file is created.
//!
//! ```text
//! 0   [u8; 8] magic          "AOF2SEGH"
//! 8   u16     version        1
//! 10  u16     flags          0 (no flags are defined in version 1)
//! 12  u64     segment_id
//! 20  u64     base_offset    offset of the first record
//! 28  u64     created_at_ms
//! 36  u32     crc32          over bytes 0..36
//! 40
//! ```
//!
//! **Invariants**
//! - The encoding is exactly [`SEGMENT_HEADER_BYTES`] long.
//! - A header decodes only if magic, version and CRC all match and no unknown flag is
//!   set.

use super::{SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_MAGIC, SegmentError};
use crate::SegmentId;
use crate::codec::{DecodeError, Reader, crc32};
use crate::limits::SEGMENT_HEADER_BYTES;
use bytes::BufMut;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const FLAGS_AT: usize = VERSION_AT + 2;
const SEGMENT_ID_AT: usize = FLAGS_AT + 2;
const BASE_OFFSET_AT: usize = SEGMENT_ID_AT + 8;
const CREATED_AT_MS_AT: usize = BASE_OFFSET_AT + 8;
const CRC_AT: usize = CREATED_AT_MS_AT + 8;
const END: usize = CRC_AT + 4;
const _: () = assert!(END == SEGMENT_HEADER_BYTES as usize);

const WHAT: &str = "segment header";

/// The header every segment file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    pub segment_id: SegmentId,
    /// Offset of the first record of the segment.
    pub base_offset: u64,
    /// `now` when the segment was created.
    pub created_at_ms: u64,
}

impl SegmentHeader {
    /// Writes the [`SEGMENT_HEADER_BYTES`] of the header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let mut bytes = [0u8; END];
        bytes[MAGIC_AT..VERSION_AT].copy_from_slice(&SEGMENT_HEADER_MAGIC);
        bytes[VERSION_AT..FLAGS_AT].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        bytes[FLAGS_AT..SEGMENT_ID_AT].copy_from_slice(&0u16.to_le_bytes());
        bytes[SEGMENT_ID_AT..BASE_OFFSET_AT].copy_from_slice(&self.segment_id.0.to_le_bytes());
        bytes[BASE_OFFSET_AT..CREATED_AT_MS_AT].copy_from_slice(&self.base_offset.to_le_bytes());
        bytes[CREATED_AT_MS_AT..CRC_AT].copy_from_slice(&self.created_at_ms.to_le_bytes());
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..END].copy_from_slice(&crc.to_le_bytes());
        buf.put_slice(&bytes);
    }

    /// The encoded header as an array.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES as usize];
        self.encode(&mut &mut out[..]);
        out
    }

    /// Decodes the header from the first [`SEGMENT_HEADER_BYTES`] of `bytes` (the start
    /// of a segment file; later bytes are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Self, SegmentError> {
        let mut reader = Reader::new(bytes, 0, WHAT);
        let all = reader.bytes(END)?;
        let mut reader = Reader::new(all, 0, WHAT);
        debug_assert_eq!(reader.offset(), MAGIC_AT as u64);
        reader.expect_magic(u64::from_le_bytes(SEGMENT_HEADER_MAGIC))?;
        debug_assert_eq!(reader.offset(), VERSION_AT as u64);
        reader.expect_version(SEGMENT_FORMAT_VERSION)?;
        let flags = reader.u16()?;
        let segment_id = SegmentId(reader.u64()?);
        let base_offset = reader.u64()?;
        let created_at_ms = reader.u64()?;
        let stored = reader.u32()?;
        reader.finish()?;
        let computed = crc32(&all[..CRC_AT]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                offset: 0,
                stored,
                computed,
            }
            .into());
        }
        if flags != 0 {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: FLAGS_AT as u64,
                reason: format!("unknown flags {flags:#06x}"),
            }
            .into());
        }
        Ok(SegmentHeader {
            segment_id,
            base_offset,
            created_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            segment_id: SegmentId(7),
            base_offset: 1000,
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip_is_fixed_size() {
        let mut buf = Vec::new();
        header().encode(&mut buf);
        assert_eq!(buf.len(), SEGMENT_HEADER_BYTES as usize);
        assert_eq!(buf, header().to_bytes());
        assert_eq!(SegmentHeader::decode(&buf).unwrap(), header());
    }

    #[test]
    fn short_header_is_truncated() {
        let bytes = header().to_bytes();
        let error = SegmentHeader::decode(&bytes[..39]).unwrap_err();
        assert!(
            matches!(error, SegmentError::Decode(DecodeError::Truncated { .. })),
            "{error}"
        );
    }

    #[test]
    fn unknown_flags_are_rejected_even_with_a_valid_crc() {
        let mut bytes = header().to_bytes();
        bytes[FLAGS_AT] = 1;
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        let error = SegmentHeader::decode(&bytes).unwrap_err();
        assert_eq!(error.position(), FLAGS_AT as u64);
    }

    #[test]
    fn other_version_is_unsupported() {
        let mut bytes = header().to_bytes();
        bytes[VERSION_AT] = 2;
        let error = SegmentHeader::decode(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::Decode(DecodeError::UnsupportedVersion { found: 2, .. })
            ),
            "{error}"
        );
    }
}
