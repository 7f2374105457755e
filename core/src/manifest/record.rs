//! Manifest records: the sixteen tier-transition record types, their payloads, reason
//! codes, and the record frame that carries one record inside a chunk.
//!
//! A frame is a fixed 32-byte header followed by the record payload:
//!
//! ```text
//! 0   u32 payload_length     (<= MANIFEST_RECORD_PAYLOAD_BYTES_MAX)
//! 4   u32 crc32              over bytes 8..32 and the payload
//! 8   u16 record_type        (RecordType; unknown values are skipped, not fatal)
//! 10  u8  payload_version    (1)
//! 11  u8  flags              (0 in version 1; anything else is rejected)
//! 12  u64 ordinal            (position of the record in the stream's manifest, dense)
//! 20  u64 timestamp_ms       (`now` when the record was appended)
//! 28  u32 reserved           (0; anything else is rejected)
//! 32  payload
//! ```
//!
//! **Invariants**
//! - `encode_frame` followed by `decode_frame` yields the same record, ordinal and
//!   timestamp; the encoded length equals `frame_length()`.
//! - Every string and blob is checked against its limit before it is encoded and
//!   before it is read back; decode never allocates past a limit.
//! - A frame whose CRC does not match is an error, never a record.
//! - A frame with an unknown record type but a valid CRC is reported as
//!   [`DecodedFrame::Unknown`] and its length is still honoured, so replay can skip it.

use crate::SegmentId;
use crate::codec::{DecodeError, Reader, crc32_parts, put_length_prefixed};
use crate::limits::{
    CUSTOM_EVENT_BLOB_BYTES_MAX, ETAG_BYTES_MAX, MANIFEST_RECORD_FRAME_HEADER_BYTES,
    MANIFEST_RECORD_PAYLOAD_BYTES_MAX, OBJECT_KEY_BYTES_MAX,
};
use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the record payload layouts written by this build.
pub const PAYLOAD_VERSION: u8 = 1;

const _: () = assert!(MANIFEST_RECORD_FRAME_HEADER_BYTES == 32);

/// Why a transition happened or failed. Stored as a `u16`; values this build does not
/// know are kept as [`ReasonCode::Other`] so newer writers stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    Unspecified,
    IoError,
    ChecksumMismatch,
    NotFound,
    Timeout,
    Throttled,
    NoSpace,
    BudgetExceeded,
    RetentionAge,
    RetentionSize,
    Compaction,
    Operator,
    Fenced,
    Other(u16),
}

impl ReasonCode {
    #[must_use]
    pub fn to_u16(self) -> u16 {
        match self {
            ReasonCode::Unspecified => 0,
            ReasonCode::IoError => 1,
            ReasonCode::ChecksumMismatch => 2,
            ReasonCode::NotFound => 3,
            ReasonCode::Timeout => 4,
            ReasonCode::Throttled => 5,
            ReasonCode::NoSpace => 6,
            ReasonCode::BudgetExceeded => 7,
            ReasonCode::RetentionAge => 8,
            ReasonCode::RetentionSize => 9,
            ReasonCode::Compaction => 10,
            ReasonCode::Operator => 11,
            ReasonCode::Fenced => 12,
            ReasonCode::Other(code) => code,
        }
    }

    #[must_use]
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => ReasonCode::Unspecified,
            1 => ReasonCode::IoError,
            2 => ReasonCode::ChecksumMismatch,
            3 => ReasonCode::NotFound,
            4 => ReasonCode::Timeout,
            5 => ReasonCode::Throttled,
            6 => ReasonCode::NoSpace,
            7 => ReasonCode::BudgetExceeded,
            8 => ReasonCode::RetentionAge,
            9 => ReasonCode::RetentionSize,
            10 => ReasonCode::Compaction,
            11 => ReasonCode::Operator,
            12 => ReasonCode::Fenced,
            other => ReasonCode::Other(other),
        }
    }

    /// Canonical form: `Other(c)` for a known `c` is normalised to the named variant.
    #[must_use]
    pub fn canonical(self) -> Self {
        Self::from_u16(self.to_u16())
    }
}

/// A storage tier, as named in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// Hot local segment files.
    Tier0,
    /// Warm local seekable zstd artifacts.
    Tier1,
    /// Object storage, the system of record.
    Tier2,
}

impl Tier {
    #[must_use]
    pub fn to_u8(self) -> u8 {
        match self {
            Tier::Tier0 => 0,
            Tier::Tier1 => 1,
            Tier::Tier2 => 2,
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8()? {
            0 => Ok(Tier::Tier0),
            1 => Ok(Tier::Tier1),
            2 => Ok(Tier::Tier2),
            other => Err(reader.invalid(format!("unknown tier {other}"))),
        }
    }
}

/// The record type code stored in every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum RecordType {
    SegmentOpened = 1,
    SealSegment = 2,
    CompressionStarted = 3,
    CompressionDone = 4,
    CompressionFailed = 5,
    UploadStarted = 6,
    UploadDone = 7,
    UploadFailed = 8,
    Tier2DeleteQueued = 9,
    Tier2Deleted = 10,
    HydrationStarted = 11,
    HydrationDone = 12,
    HydrationFailed = 13,
    LocalEvicted = 14,
    SnapshotMarker = 15,
    CustomEvent = 16,
}

impl RecordType {
    /// All sixteen types, in code order.
    pub const ALL: [RecordType; 16] = [
        RecordType::SegmentOpened,
        RecordType::SealSegment,
        RecordType::CompressionStarted,
        RecordType::CompressionDone,
        RecordType::CompressionFailed,
        RecordType::UploadStarted,
        RecordType::UploadDone,
        RecordType::UploadFailed,
        RecordType::Tier2DeleteQueued,
        RecordType::Tier2Deleted,
        RecordType::HydrationStarted,
        RecordType::HydrationDone,
        RecordType::HydrationFailed,
        RecordType::LocalEvicted,
        RecordType::SnapshotMarker,
        RecordType::CustomEvent,
    ];

    #[must_use]
    pub fn from_u16(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u16 == code)
    }
}

/// One manifest record: a tier transition of one segment, a snapshot marker, or an
/// embedder's custom event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRecord {
    /// A new active segment file exists (created durably).
    SegmentOpened {
        segment_id: SegmentId,
        base_offset: u64,
        opened_at_ms: u64,
    },
    /// The segment's footer is durable and `current.sealed` points at it.
    SealSegment {
        segment_id: SegmentId,
        base_offset: u64,
        record_count: u64,
        durable_bytes: u64,
        checksum: u32,
        last_ext_id: u64,
        coordinator_watermark: u64,
        flush_failure: bool,
        sealed_at_ms: u64,
    },
    CompressionStarted {
        segment_id: SegmentId,
        job_id: u64,
    },
    /// The Tier 1 artifact is durable (written, fsynced, renamed, directory fsynced).
    CompressionDone {
        segment_id: SegmentId,
        job_id: u64,
        original_bytes: u64,
        compressed_bytes: u64,
        frame_count: u32,
        artifact_checksum: u32,
    },
    CompressionFailed {
        segment_id: SegmentId,
        job_id: u64,
        reason: ReasonCode,
        attempt: u32,
    },
    UploadStarted {
        segment_id: SegmentId,
        key: String,
        attempt: u32,
    },
    /// The Tier 2 object is durable under `key`.
    UploadDone {
        segment_id: SegmentId,
        key: String,
        etag: String,
        object_bytes: u64,
    },
    UploadFailed {
        segment_id: SegmentId,
        key: String,
        reason: ReasonCode,
        attempt: u32,
    },
    Tier2DeleteQueued {
        segment_id: SegmentId,
        key: String,
        reason: ReasonCode,
    },
    Tier2Deleted {
        segment_id: SegmentId,
        key: String,
    },
    HydrationStarted {
        segment_id: SegmentId,
        source: Tier,
    },
    /// The segment is readable in Tier 0 again, fetched from `source`.
    HydrationDone {
        segment_id: SegmentId,
        source: Tier,
        bytes: u64,
    },
    HydrationFailed {
        segment_id: SegmentId,
        source: Tier,
        reason: ReasonCode,
        attempt: u32,
    },
    /// The local copy in `tier` (Tier 0 or Tier 1) was removed.
    LocalEvicted {
        segment_id: SegmentId,
        tier: Tier,
    },
    /// Snapshot `snapshot_id` covers every record before (`chunk_index`, `chunk_offset`).
    SnapshotMarker {
        snapshot_id: u64,
        chunk_index: u64,
        chunk_offset: u64,
        record_ordinal: u64,
    },
    /// An embedder's event (e.g. a compaction outcome), opaque to AOF2.
    CustomEvent {
        kind: u32,
        blob: Bytes,
    },
}

/// A record that cannot be encoded because a field breaks a limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("manifest record {record_type:?}: {field} is {length} bytes, the limit is {limit}")]
    FieldTooLong {
        record_type: RecordType,
        field: &'static str,
        length: usize,
        limit: u32,
    },
    #[error("manifest record {record_type:?}: {field} must not be {value:?}")]
    InvalidField {
        record_type: RecordType,
        field: &'static str,
        value: String,
    },
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedFrame {
    /// A record of a known type.
    Known(RecordFrame),
    /// A well-formed frame of a type this build does not know: skip it.
    Unknown {
        record_type: u16,
        ordinal: u64,
        frame_length: u32,
    },
}

/// A known record with the frame fields around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFrame {
    pub ordinal: u64,
    pub timestamp_ms: u64,
    pub record: ManifestRecord,
    /// Header plus payload bytes.
    pub frame_length: u32,
}

impl ManifestRecord {
    #[must_use]
    pub fn record_type(&self) -> RecordType {
        match self {
            ManifestRecord::SegmentOpened { .. } => RecordType::SegmentOpened,
            ManifestRecord::SealSegment { .. } => RecordType::SealSegment,
            ManifestRecord::CompressionStarted { .. } => RecordType::CompressionStarted,
            ManifestRecord::CompressionDone { .. } => RecordType::CompressionDone,
            ManifestRecord::CompressionFailed { .. } => RecordType::CompressionFailed,
            ManifestRecord::UploadStarted { .. } => RecordType::UploadStarted,
            ManifestRecord::UploadDone { .. } => RecordType::UploadDone,
            ManifestRecord::UploadFailed { .. } => RecordType::UploadFailed,
            ManifestRecord::Tier2DeleteQueued { .. } => RecordType::Tier2DeleteQueued,
            ManifestRecord::Tier2Deleted { .. } => RecordType::Tier2Deleted,
            ManifestRecord::HydrationStarted { .. } => RecordType::HydrationStarted,
            ManifestRecord::HydrationDone { .. } => RecordType::HydrationDone,
            ManifestRecord::HydrationFailed { .. } => RecordType::HydrationFailed,
            ManifestRecord::LocalEvicted { .. } => RecordType::LocalEvicted,
            ManifestRecord::SnapshotMarker { .. } => RecordType::SnapshotMarker,
            ManifestRecord::CustomEvent { .. } => RecordType::CustomEvent,
        }
    }

    /// The segment this record is about, if any.
    #[must_use]
    pub fn segment_id(&self) -> Option<SegmentId> {
        match self {
            ManifestRecord::SegmentOpened { segment_id, .. }
            | ManifestRecord::SealSegment { segment_id, .. }
            | ManifestRecord::CompressionStarted { segment_id, .. }
            | ManifestRecord::CompressionDone { segment_id, .. }
            | ManifestRecord::CompressionFailed { segment_id, .. }
            | ManifestRecord::UploadStarted { segment_id, .. }
            | ManifestRecord::UploadDone { segment_id, .. }
            | ManifestRecord::UploadFailed { segment_id, .. }
            | ManifestRecord::Tier2DeleteQueued { segment_id, .. }
            | ManifestRecord::Tier2Deleted { segment_id, .. }
            | ManifestRecord::HydrationStarted { segment_id, .. }
            | ManifestRecord::HydrationDone { segment_id, .. }
            | ManifestRecord::HydrationFailed { segment_id, .. }
            | ManifestRecord::LocalEvicted { segment_id, .. } => Some(*segment_id),
            ManifestRecord::SnapshotMarker { .. } | ManifestRecord::CustomEvent { .. } => None,
        }
    }

    /// Checks every variable-length field against its limit. Encoding a record that
    /// fails this is a bug, so the writer calls it on append and returns the error.
    pub fn validate(&self) -> Result<(), RecordError> {
        let record_type = self.record_type();
        let check = |field: &'static str, length: usize, limit: u32| {
            if length > limit as usize {
                Err(RecordError::FieldTooLong {
                    record_type,
                    field,
                    length,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        let check_key = |key: &str| {
            check("key", key.len(), OBJECT_KEY_BYTES_MAX)?;
            if key.is_empty() {
                return Err(RecordError::InvalidField {
                    record_type,
                    field: "key",
                    value: String::new(),
                });
            }
            Ok(())
        };
        match self {
            ManifestRecord::UploadStarted { key, .. }
            | ManifestRecord::UploadFailed { key, .. }
            | ManifestRecord::Tier2DeleteQueued { key, .. }
            | ManifestRecord::Tier2Deleted { key, .. } => check_key(key),
            ManifestRecord::UploadDone { key, etag, .. } => {
                check_key(key)?;
                check("etag", etag.len(), ETAG_BYTES_MAX)
            }
            ManifestRecord::CustomEvent { blob, .. } => {
                check("blob", blob.len(), CUSTOM_EVENT_BLOB_BYTES_MAX)
            }
            ManifestRecord::LocalEvicted { tier, .. } if *tier == Tier::Tier2 => {
                Err(RecordError::InvalidField {
                    record_type,
                    field: "tier",
                    value: "Tier2 (local eviction is of Tier 0 or Tier 1)".to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Bytes of the encoded payload.
    #[must_use]
    pub fn payload_length(&self) -> u32 {
        let mut payload = Vec::with_capacity(64);
        self.encode_payload(&mut payload);
        u32::try_from(payload.len()).expect("validated records are far below u32::MAX")
    }

    /// Bytes of the whole frame (header plus payload).
    #[must_use]
    pub fn frame_length(&self) -> u32 {
        MANIFEST_RECORD_FRAME_HEADER_BYTES + self.payload_length()
    }

    /// Writes the payload. The record must have passed [`ManifestRecord::validate`].
    pub fn encode_payload(&self, buf: &mut impl BufMut) {
        debug_assert!(
            self.validate().is_ok(),
            "encoding an invalid record: {self:?}"
        );
        match self {
            ManifestRecord::SegmentOpened {
                segment_id,
                base_offset,
                opened_at_ms,
            } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u64_le(*base_offset);
                buf.put_u64_le(*opened_at_ms);
            }
            ManifestRecord::SealSegment {
                segment_id,
                base_offset,
                record_count,
                durable_bytes,
                checksum,
                last_ext_id,
                coordinator_watermark,
                flush_failure,
                sealed_at_ms,
            } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u64_le(*base_offset);
                buf.put_u64_le(*record_count);
                buf.put_u64_le(*durable_bytes);
                buf.put_u32_le(*checksum);
                buf.put_u64_le(*last_ext_id);
                buf.put_u64_le(*coordinator_watermark);
                buf.put_u8(u8::from(*flush_failure));
                buf.put_u64_le(*sealed_at_ms);
            }
            ManifestRecord::CompressionStarted { segment_id, job_id } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u64_le(*job_id);
            }
            ManifestRecord::CompressionDone {
                segment_id,
                job_id,
                original_bytes,
                compressed_bytes,
                frame_count,
                artifact_checksum,
            } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u64_le(*job_id);
                buf.put_u64_le(*original_bytes);
                buf.put_u64_le(*compressed_bytes);
                buf.put_u32_le(*frame_count);
                buf.put_u32_le(*artifact_checksum);
            }
            ManifestRecord::CompressionFailed {
                segment_id,
                job_id,
                reason,
                attempt,
            } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u64_le(*job_id);
                buf.put_u16_le(reason.to_u16());
                buf.put_u32_le(*attempt);
            }
            ManifestRecord::UploadStarted {
                segment_id,
                key,
                attempt,
            } => {
                buf.put_u64_le(segment_id.0);
                put_length_prefixed(buf, key.as_bytes());
                buf.put_u32_le(*attempt);
            }
            ManifestRecord::UploadDone {
                segment_id,
                key,
                etag,
                object_bytes,
            } => {
                buf.put_u64_le(segment_id.0);
                put_length_prefixed(buf, key.as_bytes());
                put_length_prefixed(buf, etag.as_bytes());
                buf.put_u64_le(*object_bytes);
            }
            ManifestRecord::UploadFailed {
                segment_id,
                key,
                reason,
                attempt,
            } => {
                buf.put_u64_le(segment_id.0);
                put_length_prefixed(buf, key.as_bytes());
                buf.put_u16_le(reason.to_u16());
                buf.put_u32_le(*attempt);
            }
            ManifestRecord::Tier2DeleteQueued {
                segment_id,
                key,
                reason,
            } => {
                buf.put_u64_le(segment_id.0);
                put_length_prefixed(buf, key.as_bytes());
                buf.put_u16_le(reason.to_u16());
            }
            ManifestRecord::Tier2Deleted { segment_id, key } => {
                buf.put_u64_le(segment_id.0);
                put_length_prefixed(buf, key.as_bytes());
            }
            ManifestRecord::HydrationStarted { segment_id, source } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u8(source.to_u8());
            }
            ManifestRecord::HydrationDone {
                segment_id,
                source,
                bytes,
            } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u8(source.to_u8());
                buf.put_u64_le(*bytes);
            }
            ManifestRecord::HydrationFailed {
                segment_id,
                source,
                reason,
                attempt,
            } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u8(source.to_u8());
                buf.put_u16_le(reason.to_u16());
                buf.put_u32_le(*attempt);
            }
            ManifestRecord::LocalEvicted { segment_id, tier } => {
                buf.put_u64_le(segment_id.0);
                buf.put_u8(tier.to_u8());
            }
            ManifestRecord::SnapshotMarker {
                snapshot_id,
                chunk_index,
                chunk_offset,
                record_ordinal,
            } => {
                buf.put_u64_le(*snapshot_id);
                buf.put_u64_le(*chunk_index);
                buf.put_u64_le(*chunk_offset);
                buf.put_u64_le(*record_ordinal);
            }
            ManifestRecord::CustomEvent { kind, blob } => {
                buf.put_u32_le(*kind);
                put_length_prefixed(buf, blob);
            }
        }
    }

    /// Decodes a payload of a known type. `reader` must cover exactly the payload.
    pub fn decode_payload(
        record_type: RecordType,
        reader: &mut Reader<'_>,
    ) -> Result<Self, DecodeError> {
        let segment = |reader: &mut Reader<'_>| reader.u64().map(SegmentId);
        let reason = |reader: &mut Reader<'_>| reader.u16().map(ReasonCode::from_u16);
        let record = match record_type {
            RecordType::SegmentOpened => ManifestRecord::SegmentOpened {
                segment_id: segment(reader)?,
                base_offset: reader.u64()?,
                opened_at_ms: reader.u64()?,
            },
            RecordType::SealSegment => ManifestRecord::SealSegment {
                segment_id: segment(reader)?,
                base_offset: reader.u64()?,
                record_count: reader.u64()?,
                durable_bytes: reader.u64()?,
                checksum: reader.u32()?,
                last_ext_id: reader.u64()?,
                coordinator_watermark: reader.u64()?,
                flush_failure: decode_bool(reader)?,
                sealed_at_ms: reader.u64()?,
            },
            RecordType::CompressionStarted => ManifestRecord::CompressionStarted {
                segment_id: segment(reader)?,
                job_id: reader.u64()?,
            },
            RecordType::CompressionDone => ManifestRecord::CompressionDone {
                segment_id: segment(reader)?,
                job_id: reader.u64()?,
                original_bytes: reader.u64()?,
                compressed_bytes: reader.u64()?,
                frame_count: reader.u32()?,
                artifact_checksum: reader.u32()?,
            },
            RecordType::CompressionFailed => ManifestRecord::CompressionFailed {
                segment_id: segment(reader)?,
                job_id: reader.u64()?,
                reason: reason(reader)?,
                attempt: reader.u32()?,
            },
            RecordType::UploadStarted => ManifestRecord::UploadStarted {
                segment_id: segment(reader)?,
                key: decode_key(reader)?,
                attempt: reader.u32()?,
            },
            RecordType::UploadDone => ManifestRecord::UploadDone {
                segment_id: segment(reader)?,
                key: decode_key(reader)?,
                etag: decode_string(reader, ETAG_BYTES_MAX)?,
                object_bytes: reader.u64()?,
            },
            RecordType::UploadFailed => ManifestRecord::UploadFailed {
                segment_id: segment(reader)?,
                key: decode_key(reader)?,
                reason: reason(reader)?,
                attempt: reader.u32()?,
            },
            RecordType::Tier2DeleteQueued => ManifestRecord::Tier2DeleteQueued {
                segment_id: segment(reader)?,
                key: decode_key(reader)?,
                reason: reason(reader)?,
            },
            RecordType::Tier2Deleted => ManifestRecord::Tier2Deleted {
                segment_id: segment(reader)?,
                key: decode_key(reader)?,
            },
            RecordType::HydrationStarted => ManifestRecord::HydrationStarted {
                segment_id: segment(reader)?,
                source: Tier::decode(reader)?,
            },
            RecordType::HydrationDone => ManifestRecord::HydrationDone {
                segment_id: segment(reader)?,
                source: Tier::decode(reader)?,
                bytes: reader.u64()?,
            },
            RecordType::HydrationFailed => ManifestRecord::HydrationFailed {
                segment_id: segment(reader)?,
                source: Tier::decode(reader)?,
                reason: reason(reader)?,
                attempt: reader.u32()?,
            },
            RecordType::LocalEvicted => {
                let segment_id = segment(reader)?;
                let tier = Tier::decode(reader)?;
                if tier == Tier::Tier2 {
                    return Err(reader.invalid("LocalEvicted names Tier2, which is not local"));
                }
                ManifestRecord::LocalEvicted { segment_id, tier }
            }
            RecordType::SnapshotMarker => ManifestRecord::SnapshotMarker {
                snapshot_id: reader.u64()?,
                chunk_index: reader.u64()?,
                chunk_offset: reader.u64()?,
                record_ordinal: reader.u64()?,
            },
            RecordType::CustomEvent => ManifestRecord::CustomEvent {
                kind: reader.u32()?,
                blob: Bytes::copy_from_slice(reader.length_prefixed(CUSTOM_EVENT_BLOB_BYTES_MAX)?),
            },
        };
        reader.finish()?;
        Ok(record)
    }

    /// Writes a whole frame. The record must have passed [`ManifestRecord::validate`].
    pub fn encode_frame(&self, ordinal: u64, timestamp_ms: u64, buf: &mut impl BufMut) {
        let mut payload = Vec::with_capacity(64);
        self.encode_payload(&mut payload);
        let payload_length =
            u32::try_from(payload.len()).expect("validated payloads are below the limit");
        assert!(
            payload_length <= MANIFEST_RECORD_PAYLOAD_BYTES_MAX,
            "payload over the limit"
        );

        let mut covered = [0u8; 24];
        covered[0..2].copy_from_slice(&(self.record_type() as u16).to_le_bytes());
        covered[2] = PAYLOAD_VERSION;
        covered[3] = 0; // flags
        covered[4..12].copy_from_slice(&ordinal.to_le_bytes());
        covered[12..20].copy_from_slice(&timestamp_ms.to_le_bytes());
        // covered[20..24]: reserved, zero.
        let crc = crc32_parts(&[&covered, &payload]);

        buf.put_u32_le(payload_length);
        buf.put_u32_le(crc);
        buf.put_slice(&covered);
        buf.put_slice(&payload);
    }

    /// Encodes a frame into a fresh vector.
    #[must_use]
    pub fn to_frame(&self, ordinal: u64, timestamp_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.frame_length() as usize);
        self.encode_frame(ordinal, timestamp_ms, &mut out);
        debug_assert_eq!(out.len(), self.frame_length() as usize);
        out
    }
}

/// Decodes one frame from the front of `reader`, consuming it.
///
/// Errors: truncated header or payload, a length over the limit, a CRC mismatch, an
/// unsupported payload version, or a payload that does not parse.
pub fn decode_frame(reader: &mut Reader<'_>) -> Result<DecodedFrame, DecodeError> {
    let what = reader.what();
    let frame_start = reader.offset();
    let payload_length = reader.u32()?;
    if payload_length > MANIFEST_RECORD_PAYLOAD_BYTES_MAX {
        return Err(DecodeError::LimitExceeded {
            what,
            offset: frame_start,
            length: u64::from(payload_length),
            limit: u64::from(MANIFEST_RECORD_PAYLOAD_BYTES_MAX),
        });
    }
    let stored = reader.u32()?;
    let covered: [u8; 24] = reader.array()?;
    let payload_start = reader.offset();
    let payload = reader.bytes(payload_length as usize)?;
    let computed = crc32_parts(&[&covered, payload]);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch {
            what,
            offset: frame_start,
            stored,
            computed,
        });
    }
    let field = |range: std::ops::Range<usize>| &covered[range];
    let record_type = u16::from_le_bytes(field(0..2).try_into().expect("2 bytes"));
    let payload_version = covered[2];
    let ordinal = u64::from_le_bytes(field(4..12).try_into().expect("8 bytes"));
    let timestamp_ms = u64::from_le_bytes(field(12..20).try_into().expect("8 bytes"));
    let frame_length = MANIFEST_RECORD_FRAME_HEADER_BYTES + payload_length;

    let Some(known) = RecordType::from_u16(record_type) else {
        return Ok(DecodedFrame::Unknown {
            record_type,
            ordinal,
            frame_length,
        });
    };
    if payload_version != PAYLOAD_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            what,
            offset: frame_start + 10,
            found: u16::from(payload_version),
            supported: u16::from(PAYLOAD_VERSION),
        });
    }
    // Version 1 defines no flags and no use of the reserved word: they must be zero, so
    // every record has exactly one encoding.
    if covered[3] != 0 {
        return Err(DecodeError::Invalid {
            what,
            offset: frame_start + 11,
            reason: format!(
                "frame flags are {:#04x}; version 1 defines none",
                covered[3]
            ),
        });
    }
    if covered[20..24] != [0u8; 4] {
        return Err(DecodeError::Invalid {
            what,
            offset: frame_start + 28,
            reason: "reserved frame bytes are not zero".to_owned(),
        });
    }
    let mut payload_reader = Reader::new(payload, payload_start, "manifest record payload");
    let record = ManifestRecord::decode_payload(known, &mut payload_reader)?;
    Ok(DecodedFrame::Known(RecordFrame {
        ordinal,
        timestamp_ms,
        record,
        frame_length,
    }))
}

fn decode_bool(reader: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(reader.invalid(format!("boolean byte is {other}, expected 0 or 1"))),
    }
}

fn decode_string(reader: &mut Reader<'_>, limit: u32) -> Result<String, DecodeError> {
    let at = reader.offset();
    let bytes = reader.length_prefixed(limit)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
        what: reader.what(),
        offset: at,
        reason: "string is not UTF-8".to_owned(),
    })
}

fn decode_key(reader: &mut Reader<'_>) -> Result<String, DecodeError> {
    let at = reader.offset();
    let key = decode_string(reader, OBJECT_KEY_BYTES_MAX)?;
    if key.is_empty() {
        return Err(DecodeError::Invalid {
            what: reader.what(),
            offset: at,
            reason: "object key is empty".to_owned(),
        });
    }
    Ok(key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_reason() -> impl Strategy<Value = ReasonCode> {
        any::<u16>().prop_map(ReasonCode::from_u16)
    }

    pub(crate) fn arb_tier() -> impl Strategy<Value = Tier> {
        prop_oneof![Just(Tier::Tier0), Just(Tier::Tier1), Just(Tier::Tier2)]
    }

    pub(crate) fn arb_key() -> impl Strategy<Value = String> {
        "[a-z0-9/._-]{1,64}"
    }

    /// Any valid record.
    pub(crate) fn arb_record() -> impl Strategy<Value = ManifestRecord> {
        let segment = any::<u64>().prop_map(SegmentId);
        prop_oneof![
            (segment.clone(), any::<u64>(), any::<u64>()).prop_map(|(s, b, t)| {
                ManifestRecord::SegmentOpened {
                    segment_id: s,
                    base_offset: b,
                    opened_at_ms: t,
                }
            }),
            (
                segment.clone(),
                any::<[u64; 6]>(),
                any::<u32>(),
                any::<bool>()
            )
                .prop_map(|(s, v, c, f)| ManifestRecord::SealSegment {
                    segment_id: s,
                    base_offset: v[0],
                    record_count: v[1],
                    durable_bytes: v[2],
                    checksum: c,
                    last_ext_id: v[3],
                    coordinator_watermark: v[4],
                    flush_failure: f,
                    sealed_at_ms: v[5],
                }),
            (segment.clone(), any::<u64>()).prop_map(|(s, j)| {
                ManifestRecord::CompressionStarted {
                    segment_id: s,
                    job_id: j,
                }
            }),
            (segment.clone(), any::<[u64; 3]>(), any::<[u32; 2]>()).prop_map(|(s, v, w)| {
                ManifestRecord::CompressionDone {
                    segment_id: s,
                    job_id: v[0],
                    original_bytes: v[1],
                    compressed_bytes: v[2],
                    frame_count: w[0],
                    artifact_checksum: w[1],
                }
            }),
            (segment.clone(), any::<u64>(), arb_reason(), any::<u32>()).prop_map(|(s, j, r, a)| {
                ManifestRecord::CompressionFailed {
                    segment_id: s,
                    job_id: j,
                    reason: r,
                    attempt: a,
                }
            }),
            (segment.clone(), arb_key(), any::<u32>()).prop_map(|(s, k, a)| {
                ManifestRecord::UploadStarted {
                    segment_id: s,
                    key: k,
                    attempt: a,
                }
            }),
            (segment.clone(), arb_key(), "[ -~]{0,64}", any::<u64>()).prop_map(|(s, k, e, b)| {
                ManifestRecord::UploadDone {
                    segment_id: s,
                    key: k,
                    etag: e,
                    object_bytes: b,
                }
            }),
            (segment.clone(), arb_key(), arb_reason(), any::<u32>()).prop_map(|(s, k, r, a)| {
                ManifestRecord::UploadFailed {
                    segment_id: s,
                    key: k,
                    reason: r,
                    attempt: a,
                }
            }),
            (segment.clone(), arb_key(), arb_reason()).prop_map(|(s, k, r)| {
                ManifestRecord::Tier2DeleteQueued {
                    segment_id: s,
                    key: k,
                    reason: r,
                }
            }),
            (segment.clone(), arb_key()).prop_map(|(s, k)| ManifestRecord::Tier2Deleted {
                segment_id: s,
                key: k,
            }),
            (segment.clone(), arb_tier()).prop_map(|(s, t)| ManifestRecord::HydrationStarted {
                segment_id: s,
                source: t,
            }),
            (segment.clone(), arb_tier(), any::<u64>()).prop_map(|(s, t, b)| {
                ManifestRecord::HydrationDone {
                    segment_id: s,
                    source: t,
                    bytes: b,
                }
            }),
            (segment.clone(), arb_tier(), arb_reason(), any::<u32>()).prop_map(|(s, t, r, a)| {
                ManifestRecord::HydrationFailed {
                    segment_id: s,
                    source: t,
                    reason: r,
                    attempt: a,
                }
            }),
            (segment, prop_oneof![Just(Tier::Tier0), Just(Tier::Tier1)]).prop_map(|(s, t)| {
                ManifestRecord::LocalEvicted {
                    segment_id: s,
                    tier: t,
                }
            }),
            any::<[u64; 4]>().prop_map(|v| ManifestRecord::SnapshotMarker {
                snapshot_id: v[0],
                chunk_index: v[1],
                chunk_offset: v[2],
                record_ordinal: v[3],
            }),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(k, b)| {
                ManifestRecord::CustomEvent {
                    kind: k,
                    blob: Bytes::from(b),
                }
            }),
        ]
    }

    fn decode_one(bytes: &[u8]) -> Result<DecodedFrame, DecodeError> {
        let mut reader = Reader::new(bytes, 0, "manifest record");
        let frame = decode_frame(&mut reader)?;
        assert_eq!(reader.remaining(), 0, "a frame consumes exactly its bytes");
        Ok(frame)
    }

    proptest! {
        #[test]
        fn frame_round_trip(record in arb_record(), ordinal in any::<u64>(), timestamp in any::<u64>()) {
            prop_assert!(record.validate().is_ok());
            let bytes = record.to_frame(ordinal, timestamp);
            prop_assert_eq!(bytes.len() as u32, record.frame_length());
            let decoded = decode_one(&bytes).unwrap();
            prop_assert_eq!(decoded, DecodedFrame::Known(RecordFrame {
                ordinal,
                timestamp_ms: timestamp,
                record: record.clone(),
                frame_length: record.frame_length(),
            }));
        }

        #[test]
        fn any_single_bit_flip_is_detected(record in arb_record(), bit in any::<prop::sample::Index>()) {
            let mut bytes = record.to_frame(7, 9);
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            // CRC32 detects every single-bit error; a flip in the length field makes
            // the frame truncated, over the limit, or fail its CRC.
            prop_assert!(decode_one(&bytes).is_err(), "bit {} flip accepted", bit);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut reader = Reader::new(&bytes, 0, "manifest record");
            let _ = decode_frame(&mut reader);
        }

        #[test]
        fn truncated_frames_are_errors(record in arb_record(), cut in any::<prop::sample::Index>()) {
            let bytes = record.to_frame(1, 2);
            let cut = cut.index(bytes.len());
            let error = decode_one(&bytes[..cut]).unwrap_err();
            let is_truncated = matches!(error, DecodeError::Truncated { .. });
            prop_assert!(is_truncated, "{:?}", error);
        }
    }

    #[test]
    fn every_record_type_has_a_distinct_code() {
        for (index, record_type) in RecordType::ALL.iter().enumerate() {
            assert_eq!(*record_type as u16, index as u16 + 1);
            assert_eq!(
                RecordType::from_u16(*record_type as u16),
                Some(*record_type)
            );
        }
        assert_eq!(RecordType::from_u16(0), None);
        assert_eq!(RecordType::from_u16(17), None);
    }

    #[test]
    fn unknown_record_types_are_skippable() {
        let record = ManifestRecord::CompressionStarted {
            segment_id: SegmentId(3),
            job_id: 4,
        };
        let mut bytes = record.to_frame(5, 6);
        bytes[8..10].copy_from_slice(&999u16.to_le_bytes());
        // Re-seal the CRC as a newer writer would have written it.
        let crc = crc32_parts(&[&bytes[8..32], &bytes[32..]]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_one(&bytes).unwrap(),
            DecodedFrame::Unknown {
                record_type: 999,
                ordinal: 5,
                frame_length: record.frame_length(),
            }
        );
    }

    /// Found by the `manifest_record_decode` fuzz target: a frame with a non-zero
    /// reserved word and a matching CRC decoded, so one record had two encodings.
    #[test]
    fn nonzero_flags_or_reserved_bytes_are_rejected() {
        let record = ManifestRecord::LocalEvicted {
            segment_id: SegmentId(9),
            tier: Tier::Tier0,
        };
        for position in [11usize, 28, 29, 30, 31] {
            let mut bytes = record.to_frame(1, 2);
            bytes[position] = 0x40;
            let crc = crc32_parts(&[&bytes[8..32], &bytes[32..]]);
            bytes[4..8].copy_from_slice(&crc.to_le_bytes());
            let error = decode_one(&bytes).unwrap_err();
            assert!(
                matches!(error, DecodeError::Invalid { .. }),
                "byte {position}: {error:?}"
            );
        }
    }

    #[test]
    fn oversized_fields_are_rejected_before_encoding() {
        let record = ManifestRecord::UploadDone {
            segment_id: SegmentId(1),
            key: "k".repeat(OBJECT_KEY_BYTES_MAX as usize + 1),
            etag: String::new(),
            object_bytes: 0,
        };
        let error = record.validate().unwrap_err();
        assert!(error.to_string().contains("key is 1025 bytes"), "{error}");
        let evicted = ManifestRecord::LocalEvicted {
            segment_id: SegmentId(1),
            tier: Tier::Tier2,
        };
        assert!(evicted.validate().is_err());
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let mut bytes = vec![0u8; 32];
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_one(&bytes).unwrap_err(),
            DecodeError::LimitExceeded { offset: 0, .. }
        ));
    }

    #[test]
    fn reason_codes_round_trip() {
        for code in 0..=u16::MAX {
            assert_eq!(ReasonCode::from_u16(code).to_u16(), code);
        }
    }
}
