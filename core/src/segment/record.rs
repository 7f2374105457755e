//! The record frame: one log record inside a segment.
//!
//! ```text
//! 0   u32     payload_length  <= RECORD_PAYLOAD_BYTES_MAX, checked before anything else
//! 4   u32     crc32           over bytes 0..4 and 8..36+payload_length
//! 8   u64     offset          base_offset + index of the record in the segment
//! 16  u64     timestamp_ms
//! 24  u64     ext_id          caller's external id (e.g. a Raft index); 0 = none
//! 32  u32     flags           carried verbatim; the segment layer gives them no meaning
//! 36  payload
//! ```
//!
//! **Invariants**
//! - An encoded frame is `SEGMENT_RECORD_FRAME_HEADER_BYTES + payload_length` bytes.
//! - A frame decodes only if its length is within the limit, all its bytes are present
//!   and its CRC matches; errors name the absolute position of the frame.

use super::SegmentError;
use crate::codec::{DecodeError, Reader, crc32_parts};
use crate::limits::{RECORD_PAYLOAD_BYTES_MAX, SEGMENT_RECORD_FRAME_HEADER_BYTES};
use bytes::{BufMut, Bytes};

pub(super) const LENGTH_AT: usize = 0;
pub(super) const CRC_AT: usize = LENGTH_AT + 4;
pub(super) const OFFSET_AT: usize = CRC_AT + 4;
pub(super) const TIMESTAMP_MS_AT: usize = OFFSET_AT + 8;
pub(super) const EXT_ID_AT: usize = TIMESTAMP_MS_AT + 8;
pub(super) const FLAGS_AT: usize = EXT_ID_AT + 8;
pub(super) const PAYLOAD_AT: usize = FLAGS_AT + 4;
const _: () = assert!(PAYLOAD_AT == SEGMENT_RECORD_FRAME_HEADER_BYTES as usize);

const WHAT: &str = "segment record frame";

/// One log record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Record<'a> {
    /// Dense offset of the record in its stream.
    pub offset: u64,
    pub timestamp_ms: u64,
    /// External id, e.g. a Raft index; 0 means none.
    pub ext_id: u64,
    /// Carried verbatim; the segment format gives them no meaning.
    pub flags: u32,
    pub payload: &'a [u8],
}

/// A record together with where its frame sits in the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FramedRecord<'a> {
    /// Absolute byte position of the frame's first byte.
    pub position: u64,
    pub record: Record<'a>,
}

impl FramedRecord<'_> {
    /// Bytes of the whole frame, header and payload.
    #[must_use]
    pub fn frame_bytes(&self) -> u64 {
        self.record.frame_bytes()
    }

    /// Position of the byte just after the frame.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.position + self.frame_bytes()
    }
}

/// A record read back, owning its payload (a slice of the bytes it was read from, not
/// a copy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: u64,
    /// External id, e.g. a Raft index; 0 means none.
    pub ext_id: u64,
    pub payload: Bytes,
}

impl StoredRecord {
    /// Decodes the frame at the start of `bytes`, which sits at absolute `position` in
    /// its segment file, checking its CRC and that it holds `offset`.
    pub fn decode(bytes: &Bytes, position: u64, offset: u64) -> Result<Self, SegmentError> {
        let framed = Record::decode(bytes, position)?;
        if framed.record.offset != offset {
            return Err(SegmentError::OffsetNotDense {
                position,
                expected: offset,
                found: framed.record.offset,
            });
        }
        Ok(StoredRecord {
            offset,
            timestamp_ms: framed.record.timestamp_ms,
            ext_id: framed.record.ext_id,
            payload: bytes.slice_ref(framed.record.payload),
        })
    }
}

impl<'a> Record<'a> {
    /// Bytes of this record's frame, header and payload.
    #[must_use]
    pub fn frame_bytes(&self) -> u64 {
        u64::from(SEGMENT_RECORD_FRAME_HEADER_BYTES) + self.payload.len() as u64
    }

    /// Writes the frame of this record.
    ///
    /// # Panics
    /// If the payload is longer than [`RECORD_PAYLOAD_BYTES_MAX`]: the stream layer
    /// rejects oversized appends as bad input before they reach the encoder.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let length = u32::try_from(self.payload.len())
            .ok()
            .filter(|length| *length <= RECORD_PAYLOAD_BYTES_MAX);
        let length = length.expect("the stream layer rejects payloads over the limit");
        let length_bytes = length.to_le_bytes();
        let mut fields = [0u8; PAYLOAD_AT - OFFSET_AT];
        fields[..TIMESTAMP_MS_AT - OFFSET_AT].copy_from_slice(&self.offset.to_le_bytes());
        fields[TIMESTAMP_MS_AT - OFFSET_AT..EXT_ID_AT - OFFSET_AT]
            .copy_from_slice(&self.timestamp_ms.to_le_bytes());
        fields[EXT_ID_AT - OFFSET_AT..FLAGS_AT - OFFSET_AT]
            .copy_from_slice(&self.ext_id.to_le_bytes());
        fields[FLAGS_AT - OFFSET_AT..].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32_parts(&[&length_bytes, &fields, self.payload]);
        buf.put_slice(&length_bytes);
        buf.put_u32_le(crc);
        buf.put_slice(&fields);
        buf.put_slice(self.payload);
    }

    /// Decodes the frame that starts at `bytes[0]`, which sits at absolute `position`
    /// in the segment file. Bytes after the frame are ignored. The caller checks that
    /// the offset is the one it expected.
    pub fn decode(bytes: &'a [u8], position: u64) -> Result<FramedRecord<'a>, SegmentError> {
        let mut reader = Reader::new(bytes, position, WHAT);
        let length_bytes = reader.array::<4>()?;
        let length = u32::from_le_bytes(length_bytes);
        if length > RECORD_PAYLOAD_BYTES_MAX {
            return Err(DecodeError::LimitExceeded {
                what: WHAT,
                offset: position,
                length: u64::from(length),
                limit: u64::from(RECORD_PAYLOAD_BYTES_MAX),
            }
            .into());
        }
        let stored = reader.u32()?;
        let covered_from = reader.position();
        let offset = reader.u64()?;
        let timestamp_ms = reader.u64()?;
        let ext_id = reader.u64()?;
        let flags = reader.u32()?;
        let payload = reader.bytes(length as usize)?;
        let computed = crc32_parts(&[&length_bytes, &bytes[covered_from..reader.position()]]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                offset: position,
                stored,
                computed,
            }
            .into());
        }
        Ok(FramedRecord {
            position,
            record: Record {
                offset,
                timestamp_ms,
                ext_id,
                flags,
                payload,
            },
        })
    }

    /// Decodes the frame at absolute `position` of `segment`, the bytes of a whole
    /// segment file (or of any prefix that holds the frame): the cold read of one
    /// record whose position is known.
    pub fn decode_at(segment: &'a [u8], position: u64) -> Result<FramedRecord<'a>, SegmentError> {
        let start = usize::try_from(position)
            .ok()
            .filter(|start| *start <= segment.len())
            .ok_or(DecodeError::Truncated {
                what: WHAT,
                offset: position,
                needed: u64::from(SEGMENT_RECORD_FRAME_HEADER_BYTES),
                available: 0,
            })?;
        Record::decode(&segment[start..], position)
    }
}

/// Reads `(payload_length, offset)` of a would-be frame at `bytes[0]` without checking
/// anything: the tail scanner's cheap plausibility filter. `None` if fewer than a frame
/// header of bytes remain.
pub(super) fn peek_length_and_offset(bytes: &[u8]) -> Option<(u32, u64)> {
    let header = bytes.get(..PAYLOAD_AT)?;
    let length = u32::from_le_bytes(header[LENGTH_AT..CRC_AT].try_into().ok()?);
    let offset = u64::from_le_bytes(header[OFFSET_AT..TIMESTAMP_MS_AT].try_into().ok()?);
    Some((length, offset))
}

/// Reads `(payload_length, ext_id)` of a frame the caller produced or verified.
pub(super) fn peek_length_and_ext_id(bytes: &[u8]) -> Option<(u32, u64)> {
    let header = bytes.get(..PAYLOAD_AT)?;
    let length = u32::from_le_bytes(header[LENGTH_AT..CRC_AT].try_into().ok()?);
    let ext_id = u64::from_le_bytes(header[EXT_ID_AT..FLAGS_AT].try_into().ok()?);
    Some((length, ext_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Record<'_> {
        Record {
            offset: 42,
            timestamp_ms: 1_700_000_000_123,
            ext_id: 9,
            flags: 0xdead_beef,
            payload,
        }
    }

    #[test]
    fn round_trip_with_position() {
        let mut buf = vec![0xaa; 3];
        record(b"hello").encode(&mut buf);
        assert_eq!(buf.len() as u64, 3 + record(b"hello").frame_bytes());
        let framed = Record::decode_at(&buf, 3).unwrap();
        assert_eq!(framed.record, record(b"hello"));
        assert_eq!(framed.position, 3);
        assert_eq!(framed.end(), buf.len() as u64);
    }

    #[test]
    fn empty_payload_round_trips() {
        let mut buf = Vec::new();
        record(b"").encode(&mut buf);
        assert_eq!(buf.len(), PAYLOAD_AT);
        assert_eq!(Record::decode(&buf, 0).unwrap().record, record(b""));
    }

    #[test]
    fn length_is_checked_before_the_rest_is_read() {
        let bytes = (RECORD_PAYLOAD_BYTES_MAX + 1).to_le_bytes();
        let error = Record::decode(&bytes, 500).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::Decode(DecodeError::LimitExceeded { offset: 500, .. })
            ),
            "{error}"
        );
    }

    #[test]
    fn checksum_error_names_the_frame_position() {
        let mut buf = Vec::new();
        record(b"payload").encode(&mut buf);
        buf[PAYLOAD_AT] ^= 1;
        let error = Record::decode(&buf, 1234).unwrap_err();
        assert!(
            matches!(
                error,
                SegmentError::Decode(DecodeError::ChecksumMismatch { offset: 1234, .. })
            ),
            "{error}"
        );
    }

    #[test]
    fn all_zero_frame_never_verifies() {
        // The tail scanner skips runs of zero bytes without checksumming them; that is
        // sound only because an all-zero frame header fails its CRC.
        let zeros = [0u8; PAYLOAD_AT];
        assert!(Record::decode(&zeros, 0).is_err());
        assert_ne!(crc32_parts(&[&zeros[..CRC_AT], &zeros[OFFSET_AT..]]), 0);
    }

    #[test]
    fn decode_at_past_the_end_is_an_error() {
        let error = Record::decode_at(&[0u8; 4], 5).unwrap_err();
        assert_eq!(error.position(), 5);
        assert!(Record::decode_at(&[0u8; 4], u64::MAX).is_err());
    }
}
