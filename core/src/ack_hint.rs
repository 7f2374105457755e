//! The `acknowledged` hint file: the offset after the last record a stream reported
//! durable, so that recovery can tell a torn unsynced write from corruption.
//!
//! After a crash the active segment may hold a bad frame followed by valid ones. If
//! the bad frame lies in bytes that were fsynced, the disk lost acknowledged data and
//! recovery must refuse; if it lies in bytes that were never fsynced, it is a write
//! the crash tore (pages of unsynced writes reach the disk in any order) and the cut
//! is safe. The frames alone cannot tell the two apart. So after every fsync of the
//! active segment that makes new records durable, the stream overwrites this file
//! with their next offset and fsyncs it, and only then reports those records durable.
//! The hint on disk is therefore never below what was acknowledged, and recovery cuts
//! a bad frame and everything after it only if the valid frames before it reach the
//! hint. A hint that cannot be read is no hint: recovery then refuses such a segment,
//! the safe direction.
//!
//! The file is written whole by temp -> fsync -> rename -> fsync dir when recovery or
//! [`StreamMachine::create`](crate::stream::StreamMachine::create) brings a stream up,
//! and overwritten in place (one sector, one write) after each fsync of new records.
//!
//! ```text
//! 0   [u8; 8] magic          "AOF2ACKH"
//! 8   u16     version        1
//! 10  u16     flags          0 (no flags are defined in version 1)
//! 12  u64     segment_id     the active segment when the hint was written
//! 20  u64     next_offset    offset after the last record reported durable
//! 28  u32     crc32          over bytes 0..28
//! 32
//! ```
//!
//! **Invariants**
//! - The file is exactly [`ACK_HINT_BYTES`] long; a longer or shorter file is an error.
//! - Every byte is covered by the CRC; a hint decodes only if magic, version and CRC
//!   match and no unknown flag is set.

use crate::SegmentId;
use crate::codec::{DecodeError, Reader, crc32};
use crate::limits::ACK_HINT_BYTES;

/// Name of the hint file in a stream's directory.
pub const ACK_HINT_FILE_NAME: &str = "acknowledged";

/// Version of the hint layout written by this build.
pub const ACK_HINT_FORMAT_VERSION: u16 = 1;

/// First eight bytes of the hint file.
pub const ACK_HINT_MAGIC: [u8; 8] = *b"AOF2ACKH";

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const FLAGS_AT: usize = VERSION_AT + 2;
const SEGMENT_ID_AT: usize = FLAGS_AT + 2;
const NEXT_OFFSET_AT: usize = SEGMENT_ID_AT + 8;
const CRC_AT: usize = NEXT_OFFSET_AT + 8;
const END: usize = CRC_AT + 4;
const _: () = assert!(END == ACK_HINT_BYTES as usize);

const WHAT: &str = "acknowledged hint";

/// What a stream last reported durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckHint {
    /// The active segment when the hint was written.
    pub segment_id: SegmentId,
    /// The offset after the last record reported durable: every acknowledged record
    /// is below it.
    pub next_offset: u64,
}

impl AckHint {
    /// The encoded hint file.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; ACK_HINT_BYTES as usize] {
        let mut bytes = [0u8; END];
        bytes[MAGIC_AT..VERSION_AT].copy_from_slice(&ACK_HINT_MAGIC);
        bytes[VERSION_AT..FLAGS_AT].copy_from_slice(&ACK_HINT_FORMAT_VERSION.to_le_bytes());
        bytes[FLAGS_AT..SEGMENT_ID_AT].copy_from_slice(&0u16.to_le_bytes());
        bytes[SEGMENT_ID_AT..NEXT_OFFSET_AT].copy_from_slice(&self.segment_id.0.to_le_bytes());
        bytes[NEXT_OFFSET_AT..CRC_AT].copy_from_slice(&self.next_offset.to_le_bytes());
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..END].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes the whole hint file.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes, 0, WHAT);
        reader.expect_magic(u64::from_le_bytes(ACK_HINT_MAGIC))?;
        reader.expect_version(ACK_HINT_FORMAT_VERSION)?;
        let flags = reader.u16()?;
        let segment_id = SegmentId(reader.u64()?);
        let next_offset = reader.u64()?;
        let stored = reader.u32()?;
        reader.finish()?;
        let computed = crc32(&bytes[..CRC_AT]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                offset: 0,
                stored,
                computed,
            });
        }
        if flags != 0 {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: FLAGS_AT as u64,
                reason: format!("unknown flags {flags:#06x}"),
            });
        }
        Ok(AckHint {
            segment_id,
            next_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint() -> AckHint {
        AckHint {
            segment_id: SegmentId(7),
            next_offset: 123_456,
        }
    }

    #[test]
    fn round_trip_is_fixed_size() {
        let bytes = hint().to_bytes();
        assert_eq!(bytes.len(), ACK_HINT_BYTES as usize);
        assert_eq!(AckHint::decode(&bytes).unwrap(), hint());
    }

    #[test]
    fn short_and_long_files_are_rejected() {
        let bytes = hint().to_bytes();
        assert!(AckHint::decode(&bytes[..END - 1]).is_err());
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(AckHint::decode(&long).unwrap_err().offset(), END as u64);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = hint().to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(AckHint::decode(&flipped).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn unknown_flags_are_rejected_even_with_a_valid_crc() {
        let mut bytes = hint().to_bytes();
        bytes[FLAGS_AT] = 1;
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            AckHint::decode(&bytes).unwrap_err().offset(),
            FLAGS_AT as u64
        );
    }
}
