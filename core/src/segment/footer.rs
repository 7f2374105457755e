//! The fixed footer appended once when a segment is sealed, found from the end of the
//! file by its trailing magic.
//!
//! ```text
//! 0   u64     record_count
//! 8   u64     durable_bytes          header + frames = position of this footer
//! 16  u64     last_ext_id            ext_id of the last record; 0 if none
//! 24  u64     coordinator_watermark  stored verbatim for the coordinator
//! 32  u64     sealed_at_ms
//! 40  u32     segment_crc            CRC32 of bytes 0..durable_bytes of the file
//! 44  u32     flags                  bit 0: flush failure; other bits 0
//! 48  u32     crc32                  over bytes 0..48 and 52..60 of the footer
//! 52  [u8; 8] magic                  "AOF2SEGF", the last bytes of the file
//! 60
//! ```
//!
//! **Invariants**
//! - The encoding is exactly [`SEGMENT_FOOTER_BYTES`] long and ends with
//!   [`SEGMENT_FOOTER_MAGIC`].
//! - A footer decodes only if magic and CRC match, no unknown flag is set, and
//!   `durable_bytes` equals the position it was found at.

use super::{SEGMENT_FOOTER_MAGIC, SegmentError};
use crate::codec::{DecodeError, Reader, crc32_parts};
use crate::limits::SEGMENT_FOOTER_BYTES;
use bytes::BufMut;

const RECORD_COUNT_AT: usize = 0;
const DURABLE_BYTES_AT: usize = RECORD_COUNT_AT + 8;
const LAST_EXT_ID_AT: usize = DURABLE_BYTES_AT + 8;
const COORDINATOR_WATERMARK_AT: usize = LAST_EXT_ID_AT + 8;
const SEALED_AT_MS_AT: usize = COORDINATOR_WATERMARK_AT + 8;
const SEGMENT_CRC_AT: usize = SEALED_AT_MS_AT + 8;
const FLAGS_AT: usize = SEGMENT_CRC_AT + 4;
const CRC_AT: usize = FLAGS_AT + 4;
const MAGIC_AT: usize = CRC_AT + 4;
const END: usize = MAGIC_AT + 8;
const _: () = assert!(END == SEGMENT_FOOTER_BYTES as usize);

/// Footer flag: the coordinator sealed this segment after its flushes failed.
const FLAG_FLUSH_FAILURE: u32 = 1;
const FLAGS_KNOWN: u32 = FLAG_FLUSH_FAILURE;

const WHAT: &str = "segment footer";

/// What a sealed segment's footer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentFooter {
    /// Number of record frames between header and footer.
    pub record_count: u64,
    /// Bytes of header and frames: the position of the footer in the file.
    pub durable_bytes: u64,
    /// ext_id of the last record; 0 when the segment has no records.
    pub last_ext_id: u64,
    /// The coordinator's watermark when it sealed the segment; stored verbatim.
    pub coordinator_watermark: u64,
    /// `now` when the segment was sealed.
    pub sealed_at_ms: u64,
    /// CRC32 of the first `durable_bytes` bytes of the file (header and frames).
    pub segment_crc: u32,
    /// The segment was sealed after flushes failed.
    pub flush_failure: bool,
}

impl SegmentFooter {
    /// Writes the [`SEGMENT_FOOTER_BYTES`] of the footer.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.to_bytes());
    }

    /// The encoded footer as an array.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; SEGMENT_FOOTER_BYTES as usize] {
        let mut bytes = [0u8; END];
        bytes[RECORD_COUNT_AT..DURABLE_BYTES_AT].copy_from_slice(&self.record_count.to_le_bytes());
        bytes[DURABLE_BYTES_AT..LAST_EXT_ID_AT].copy_from_slice(&self.durable_bytes.to_le_bytes());
        bytes[LAST_EXT_ID_AT..COORDINATOR_WATERMARK_AT]
            .copy_from_slice(&self.last_ext_id.to_le_bytes());
        bytes[COORDINATOR_WATERMARK_AT..SEALED_AT_MS_AT]
            .copy_from_slice(&self.coordinator_watermark.to_le_bytes());
        bytes[SEALED_AT_MS_AT..SEGMENT_CRC_AT].copy_from_slice(&self.sealed_at_ms.to_le_bytes());
        bytes[SEGMENT_CRC_AT..FLAGS_AT].copy_from_slice(&self.segment_crc.to_le_bytes());
        let flags = if self.flush_failure {
            FLAG_FLUSH_FAILURE
        } else {
            0
        };
        bytes[FLAGS_AT..CRC_AT].copy_from_slice(&flags.to_le_bytes());
        bytes[MAGIC_AT..END].copy_from_slice(&SEGMENT_FOOTER_MAGIC);
        let crc = crc32_parts(&[&bytes[..CRC_AT], &bytes[MAGIC_AT..]]);
        bytes[CRC_AT..MAGIC_AT].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Whether `segment` ends with the footer magic, i.e. looks sealed. Cheap; proves
    /// nothing until [`SegmentFooter::decode`] succeeds.
    #[must_use]
    pub fn has_trailing_magic(segment: &[u8]) -> bool {
        segment.ends_with(&SEGMENT_FOOTER_MAGIC)
    }

    /// Decodes the footer that starts at `bytes[0]`, found at absolute `position` of the
    /// segment file. Bytes after the footer are ignored.
    pub fn decode(bytes: &[u8], position: u64) -> Result<Self, SegmentError> {
        let mut reader = Reader::new(bytes, position, WHAT);
        let all = reader.bytes(END)?;
        let mut reader = Reader::new(all, position, WHAT);
        let record_count = reader.u64()?;
        let durable_bytes = reader.u64()?;
        let last_ext_id = reader.u64()?;
        let coordinator_watermark = reader.u64()?;
        let sealed_at_ms = reader.u64()?;
        let segment_crc = reader.u32()?;
        let flags = reader.u32()?;
        let stored = reader.u32()?;
        let magic = reader.array::<8>()?;
        reader.finish()?;
        if magic != SEGMENT_FOOTER_MAGIC {
            return Err(DecodeError::BadMagic {
                what: WHAT,
                offset: position + MAGIC_AT as u64,
                found: u64::from_le_bytes(magic),
                expected: u64::from_le_bytes(SEGMENT_FOOTER_MAGIC),
            }
            .into());
        }
        let computed = crc32_parts(&[&all[..CRC_AT], &all[MAGIC_AT..]]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                offset: position,
                stored,
                computed,
            }
            .into());
        }
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: position + FLAGS_AT as u64,
                reason: format!("unknown flags {flags:#010x}"),
            }
            .into());
        }
        if durable_bytes != position {
            return Err(SegmentError::FooterMismatch {
                position,
                field: "durable_bytes",
                stored: durable_bytes,
                computed: position,
            });
        }
        Ok(SegmentFooter {
            record_count,
            durable_bytes,
            last_ext_id,
            coordinator_watermark,
            sealed_at_ms,
            segment_crc,
            flush_failure: flags & FLAG_FLUSH_FAILURE != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer() -> SegmentFooter {
        SegmentFooter {
            record_count: 3,
            durable_bytes: 200,
            last_ext_id: 77,
            coordinator_watermark: 12,
            sealed_at_ms: 1_700_000_000_999,
            segment_crc: 0x1234_5678,
            flush_failure: true,
        }
    }

    #[test]
    fn round_trip_ends_with_magic() {
        let mut buf = Vec::new();
        footer().encode(&mut buf);
        assert_eq!(buf.len(), SEGMENT_FOOTER_BYTES as usize);
        assert!(SegmentFooter::has_trailing_magic(&buf));
        assert_eq!(SegmentFooter::decode(&buf, 200).unwrap(), footer());
    }

    #[test]
    fn footer_at_the_wrong_position_is_rejected() {
        let error = SegmentFooter::decode(&footer().to_bytes(), 260).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::FooterMismatch {
                    field: "durable_bytes",
                    stored: 200,
                    computed: 260,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn unknown_flags_are_rejected_even_with_a_valid_crc() {
        let mut bytes = footer().to_bytes();
        bytes[FLAGS_AT] |= 2;
        let crc = crc32_parts(&[&bytes[..CRC_AT], &bytes[MAGIC_AT..]]);
        bytes[CRC_AT..MAGIC_AT].copy_from_slice(&crc.to_le_bytes());
        let error = SegmentFooter::decode(&bytes, 200).unwrap_err();
        assert_eq!(error.position(), 200 + FLAGS_AT as u64);
    }

    #[test]
    fn corrupt_magic_is_named_at_its_position() {
        let mut bytes = footer().to_bytes();
        bytes[END - 1] ^= 0x80;
        let error = SegmentFooter::decode(&bytes, 200).unwrap_err();
        assert!(
            matches!(error, SegmentError::Decode(DecodeError::BadMagic { offset, .. }) if offset == 200 + MAGIC_AT as u64),
            "{error}"
        );
    }
}
