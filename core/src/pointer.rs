//! The `current.sealed` pointer file: which segment of a stream was sealed last, and
//! how many of its bytes are durable.
//!
//! Sealing writes the footer, fsyncs the segment, then publishes this pointer by
//! write temp -> fsync -> rename -> fsync dir. Recovery reads it to know which sealed
//! segment is the newest without scanning the directory.
//!
//! ```text
//! 0   [u8; 8] magic                  "AOF2SPTR"
//! 8   u16     version                1
//! 10  u16     flags                  0 (no flags are defined in version 1)
//! 12  u64     segment_id
//! 20  u64     durable_bytes          header + frames of that segment (footer position)
//! 28  u64     coordinator_watermark
//! 36  u32     crc32                  over bytes 0..36
//! 40
//! ```
//!
//! **Invariants**
//! - The file is exactly [`SEALED_POINTER_BYTES`] long; a longer or shorter file is an
//!   error.
//! - Every byte is covered by the CRC; a pointer decodes only if magic, version and
//!   CRC match and no unknown flag is set.

use crate::SegmentId;
use crate::codec::{DecodeError, Reader, crc32};
use crate::limits::SEALED_POINTER_BYTES;
use bytes::BufMut;
use thiserror::Error;

/// Name of the pointer file in a stream's directory.
pub const CURRENT_SEALED_FILE_NAME: &str = "current.sealed";

/// Version of the pointer layout written by this build.
pub const POINTER_FORMAT_VERSION: u16 = 1;

/// First eight bytes of the pointer file.
pub const POINTER_MAGIC: [u8; 8] = *b"AOF2SPTR";

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const FLAGS_AT: usize = VERSION_AT + 2;
const SEGMENT_ID_AT: usize = FLAGS_AT + 2;
const DURABLE_BYTES_AT: usize = SEGMENT_ID_AT + 8;
const COORDINATOR_WATERMARK_AT: usize = DURABLE_BYTES_AT + 8;
const CRC_AT: usize = COORDINATOR_WATERMARK_AT + 8;
const END: usize = CRC_AT + 4;
const _: () = assert!(END == SEALED_POINTER_BYTES as usize);

const WHAT: &str = "current.sealed pointer";

/// A `current.sealed` file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PointerError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl PointerError {
    /// The absolute byte offset the error refers to.
    #[must_use]
    pub fn position(&self) -> u64 {
        match self {
            PointerError::Decode(error) => error.offset(),
        }
    }
}

/// The newest sealed segment of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealedPointer {
    pub segment_id: SegmentId,
    /// Header and frame bytes of that segment: the position of its footer.
    pub durable_bytes: u64,
    /// The coordinator's watermark when the segment was sealed.
    pub coordinator_watermark: u64,
}

impl SealedPointer {
    /// Writes the [`SEALED_POINTER_BYTES`] of the pointer file.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.to_bytes());
    }

    /// The encoded pointer file as an array.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; SEALED_POINTER_BYTES as usize] {
        let mut bytes = [0u8; END];
        bytes[MAGIC_AT..VERSION_AT].copy_from_slice(&POINTER_MAGIC);
        bytes[VERSION_AT..FLAGS_AT].copy_from_slice(&POINTER_FORMAT_VERSION.to_le_bytes());
        bytes[FLAGS_AT..SEGMENT_ID_AT].copy_from_slice(&0u16.to_le_bytes());
        bytes[SEGMENT_ID_AT..DURABLE_BYTES_AT].copy_from_slice(&self.segment_id.0.to_le_bytes());
        bytes[DURABLE_BYTES_AT..COORDINATOR_WATERMARK_AT]
            .copy_from_slice(&self.durable_bytes.to_le_bytes());
        bytes[COORDINATOR_WATERMARK_AT..CRC_AT]
            .copy_from_slice(&self.coordinator_watermark.to_le_bytes());
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..END].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes the whole pointer file.
    pub fn decode(bytes: &[u8]) -> Result<Self, PointerError> {
        let mut reader = Reader::new(bytes, 0, WHAT);
        debug_assert_eq!(reader.offset(), MAGIC_AT as u64);
        reader.expect_magic(u64::from_le_bytes(POINTER_MAGIC))?;
        debug_assert_eq!(reader.offset(), VERSION_AT as u64);
        reader.expect_version(POINTER_FORMAT_VERSION)?;
        let flags = reader.u16()?;
        let segment_id = SegmentId(reader.u64()?);
        let durable_bytes = reader.u64()?;
        let coordinator_watermark = reader.u64()?;
        let stored = reader.u32()?;
        reader.finish()?;
        let computed = crc32(&bytes[..CRC_AT]);
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
        Ok(SealedPointer {
            segment_id,
            durable_bytes,
            coordinator_watermark,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer() -> SealedPointer {
        SealedPointer {
            segment_id: SegmentId(41),
            durable_bytes: 4096,
            coordinator_watermark: 999,
        }
    }

    #[test]
    fn round_trip_is_fixed_size() {
        let mut buf = Vec::new();
        pointer().encode(&mut buf);
        assert_eq!(buf.len(), SEALED_POINTER_BYTES as usize);
        assert_eq!(SealedPointer::decode(&buf).unwrap(), pointer());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut buf = pointer().to_bytes().to_vec();
        buf.push(0);
        let error = SealedPointer::decode(&buf).unwrap_err();
        assert_eq!(error.position(), END as u64);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = pointer().to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SealedPointer::decode(&flipped).is_err(),
                "bit {bit} undetected"
            );
        }
    }

    #[test]
    fn unknown_flags_are_rejected_even_with_a_valid_crc() {
        let mut bytes = pointer().to_bytes();
        bytes[FLAGS_AT] = 4;
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SealedPointer::decode(&bytes).unwrap_err().position(),
            FLAGS_AT as u64
        );
    }
}
