//! Snapshot files: the whole [`ManifestIndex`] at a point of the manifest, so replay
//! only needs the chunks after it.
//!
//! A snapshot covers every record with an ordinal below `record_ordinal`; that point
//! lies at (`chunk_index`, `chunk_offset`): the byte just past the last covered record
//! in its chunk (or the start of chunk 0 when nothing is covered). Replay may start at
//! chunk `chunk_index`; records it meets below `record_ordinal` are skipped.
//!
//! Layout (little-endian; `lp` = `u32` length then bytes):
//!
//! ```text
//! 0    u64 magic                    "AOF2SNAP"
//! 8    u16 version                  (1)
//! 10   u16 flags                    (0)
//! 12   u32 reserved                 (0)
//! 16   u64 snapshot_id
//! 24   u64 chunk_index              position covered
//! 32   u64 chunk_offset
//! 40   u64 record_ordinal           = the index's next ordinal
//! 48   u64 custom_event_count
//! 56   u64 unknown_records_skipped
//! 64   u64 ignored_record_count
//! 72   u8  has_last_snapshot        0 or 1; if 1: 4 x u64 snapshot_id, chunk_index,
//!                                   chunk_offset, record_ordinal
//! ..   u32 segment_count            <= SNAPSHOT_SEGMENTS_MAX
//! ..   segment entries, by strictly increasing segment id
//! end  u32 crc32                    over every byte before it
//! ```
//!
//! Segment entry:
//!
//! ```text
//! u64 segment_id
//! u8  lifecycle          0 open, 1 sealed; if sealed:
//!                          u64 record_count, u64 durable_bytes, u32 checksum,
//!                          u64 last_ext_id, u64 coordinator_watermark,
//!                          u8 flush_failure, u64 sealed_at_ms
//! u64 base_offset
//! u64 opened_at_ms
//! u8  local copies       bit 0 Tier 0, bit 1 Tier 1, others 0
//! u8  has_tier1          if 1: u64 job_id, u64 original_bytes, u64 compressed_bytes,
//!                          u32 frame_count, u32 checksum
//! u8  has_tier2          if 1: lp key, lp etag, u64 object_bytes
//! u32 job_count          <= SNAPSHOT_SEGMENT_JOBS_MAX, then jobs by increasing kind,
//!                        each kind at most once:
//!   u8 kind 1 compression: u64 job_id, u32 attempts, u8 running, failure
//!   u8 kind 2 upload:      lp key, u32 attempts, u8 running, failure
//!   u8 kind 3 hydration:   u8 source tier, u32 attempts, u8 running, failure
//!   u8 kind 4 delete:      lp key, u16 reason
//!   failure: u8 present; if 1: u16 reason, u32 attempt
//! ```
//!
//! **Invariants**
//! - `decode(encode(s)) == s`, and every byte string `decode` accepts is the encoding
//!   of what it returns (there is one encoding per snapshot).
//! - The CRC is checked before any field is trusted; every count is checked against
//!   its limit and against the bytes left before anything is allocated.
//! - A decoded snapshot satisfies [`ManifestIndex::check_invariants`]; a snapshot whose
//!   parts would break it is a decode error, never a panic.
//! - `position.record_ordinal == index.next_ordinal()`.

use crate::SegmentId;
use crate::codec::{DecodeError, Reader, crc32, put_length_prefixed};
use crate::limits::{
    ETAG_BYTES_MAX, MANIFEST_CHUNK_HEADER_AREA_BYTES, OBJECT_KEY_BYTES_MAX,
    SNAPSHOT_SEGMENT_JOBS_MAX, SNAPSHOT_SEGMENTS_MAX,
};
use crate::manifest::index::{
    CompressionJob, DeleteJob, HydrationJob, IndexParts, JobFailure, Lifecycle, LocalCopies,
    ManifestIndex, PendingJobs, SealInfo, SegmentEntry, SnapshotMarkerInfo, Tier1Artifact,
    Tier2Object, UploadJob,
};
use crate::manifest::record::{ManifestRecord, ReasonCode, Tier};
use bytes::BufMut;
use std::collections::BTreeMap;
use thiserror::Error;

/// Magic at the start of a snapshot file: the bytes `AOF2SNAP`.
pub const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"AOF2SNAP");
/// Version of the snapshot layout written by this build.
pub const SNAPSHOT_VERSION: u16 = 1;

const WHAT: &str = "manifest snapshot";
/// Fixed bytes before the optional marker.
const HEADER_BYTES: usize = 73;
/// The smallest encoded segment entry (open, nothing optional).
const SEGMENT_ENTRY_BYTES_MIN: usize = 8 + 1 + 8 + 8 + 1 + 1 + 1 + 4;
const LOCAL_TIER0: u8 = 1 << 0;
const LOCAL_TIER1: u8 = 1 << 1;
const JOB_COMPRESSION: u8 = 1;
const JOB_UPLOAD: u8 = 2;
const JOB_HYDRATION: u8 = 3;
const JOB_DELETE: u8 = 4;

/// A point of a stream's manifest: just past the record `record_ordinal - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestPosition {
    pub chunk_index: u64,
    /// Byte offset in the chunk file just past the last covered record.
    pub chunk_offset: u64,
    /// The first ordinal *not* covered.
    pub record_ordinal: u64,
}

impl ManifestPosition {
    /// The start of the manifest: nothing covered.
    pub const START: ManifestPosition = ManifestPosition {
        chunk_index: 0,
        chunk_offset: MANIFEST_CHUNK_HEADER_AREA_BYTES as u64,
        record_ordinal: 0,
    };
}

/// A snapshot that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error(
        "snapshot position covers ordinals below {position_ordinal}, but the index has applied up to {index_next_ordinal}"
    )]
    OrdinalMismatch {
        position_ordinal: u64,
        index_next_ordinal: u64,
    },
}

/// A manifest snapshot: the index and the position it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    snapshot_id: u64,
    position: ManifestPosition,
    index: ManifestIndex,
}

impl Snapshot {
    /// A snapshot of `index`, which must have applied exactly the records below
    /// `position.record_ordinal`.
    pub fn new(
        snapshot_id: u64,
        position: ManifestPosition,
        index: ManifestIndex,
    ) -> Result<Self, SnapshotError> {
        if position.record_ordinal != index.next_ordinal() {
            return Err(SnapshotError::OrdinalMismatch {
                position_ordinal: position.record_ordinal,
                index_next_ordinal: index.next_ordinal(),
            });
        }
        index.check_invariants();
        Ok(Snapshot {
            snapshot_id,
            position,
            index,
        })
    }

    #[must_use]
    pub fn snapshot_id(&self) -> u64 {
        self.snapshot_id
    }

    #[must_use]
    pub fn position(&self) -> ManifestPosition {
        self.position
    }

    #[must_use]
    pub fn index(&self) -> &ManifestIndex {
        &self.index
    }

    #[must_use]
    pub fn into_index(self) -> ManifestIndex {
        self.index
    }

    /// The `SnapshotMarker` record to append once this snapshot is durable.
    #[must_use]
    pub fn marker_record(&self) -> ManifestRecord {
        ManifestRecord::SnapshotMarker {
            snapshot_id: self.snapshot_id,
            chunk_index: self.position.chunk_index,
            chunk_offset: self.position.chunk_offset,
            record_ordinal: self.position.record_ordinal,
        }
    }

    /// Writes the snapshot file.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let body = self.encode_body();
        buf.put_slice(&body);
        buf.put_u32_le(crc32(&body));
    }

    /// The encoded snapshot file.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = self.encode_body();
        let crc = crc32(&body);
        body.put_u32_le(crc);
        body
    }

    fn encode_body(&self) -> Vec<u8> {
        let parts = self.index.parts();
        assert_eq!(parts.next_ordinal, self.position.record_ordinal);
        let mut out = Vec::with_capacity(HEADER_BYTES + 40 + parts.segments.len() * 96);
        out.put_u64_le(SNAPSHOT_MAGIC);
        out.put_u16_le(SNAPSHOT_VERSION);
        out.put_u16_le(0);
        out.put_u32_le(0);
        out.put_u64_le(self.snapshot_id);
        out.put_u64_le(self.position.chunk_index);
        out.put_u64_le(self.position.chunk_offset);
        out.put_u64_le(self.position.record_ordinal);
        out.put_u64_le(parts.custom_event_count);
        out.put_u64_le(parts.unknown_records_skipped);
        out.put_u64_le(parts.ignored_record_count);
        assert_eq!(out.len(), HEADER_BYTES - 1);
        match parts.last_snapshot {
            None => out.put_u8(0),
            Some(marker) => {
                out.put_u8(1);
                out.put_u64_le(marker.snapshot_id);
                out.put_u64_le(marker.chunk_index);
                out.put_u64_le(marker.chunk_offset);
                out.put_u64_le(marker.record_ordinal);
            }
        }
        assert!(parts.segments.len() <= SNAPSHOT_SEGMENTS_MAX as usize);
        out.put_u32_le(u32::try_from(parts.segments.len()).expect("below the segment limit"));
        for entry in parts.segments.values() {
            encode_entry(entry, &mut out);
        }
        out
    }

    /// Decodes a snapshot file. Errors name the byte offset; nothing is trusted before
    /// the CRC verifies.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_BYTES + 4 + 4 {
            return Err(DecodeError::Truncated {
                what: WHAT,
                offset: 0,
                needed: (HEADER_BYTES + 8) as u64,
                available: bytes.len() as u64,
            });
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
        let mut reader = Reader::new(body, 0, WHAT);
        reader.expect_magic(SNAPSHOT_MAGIC)?;
        reader.expect_version(SNAPSHOT_VERSION)?;
        let stored = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
        let computed = crc32(body);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                offset: body.len() as u64,
                stored,
                computed,
            });
        }
        if reader.u16()? != 0 {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: 10,
                reason: "unknown flags".to_owned(),
            });
        }
        if reader.u32()? != 0 {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: 12,
                reason: "reserved bytes are not zero".to_owned(),
            });
        }
        let snapshot_id = reader.u64()?;
        let position = ManifestPosition {
            chunk_index: reader.u64()?,
            chunk_offset: reader.u64()?,
            record_ordinal: reader.u64()?,
        };
        let custom_event_count = reader.u64()?;
        let unknown_records_skipped = reader.u64()?;
        let ignored_record_count = reader.u64()?;
        let last_snapshot = if decode_bool(&mut reader)? {
            Some(SnapshotMarkerInfo {
                snapshot_id: reader.u64()?,
                chunk_index: reader.u64()?,
                chunk_offset: reader.u64()?,
                record_ordinal: reader.u64()?,
            })
        } else {
            None
        };
        let count_at = reader.offset();
        let segment_count = reader.u32()?;
        if segment_count > SNAPSHOT_SEGMENTS_MAX {
            return Err(DecodeError::LimitExceeded {
                what: WHAT,
                offset: count_at,
                length: u64::from(segment_count),
                limit: u64::from(SNAPSHOT_SEGMENTS_MAX),
            });
        }
        if segment_count as usize > reader.remaining() / SEGMENT_ENTRY_BYTES_MIN {
            return Err(DecodeError::Truncated {
                what: WHAT,
                offset: count_at,
                needed: u64::from(segment_count) * SEGMENT_ENTRY_BYTES_MIN as u64,
                available: reader.remaining() as u64,
            });
        }
        let mut segments = BTreeMap::new();
        let mut previous: Option<SegmentId> = None;
        for _ in 0..segment_count {
            let at = reader.offset();
            let entry = decode_entry(&mut reader)?;
            if previous.is_some_and(|previous| previous >= entry.segment_id) {
                return Err(DecodeError::Invalid {
                    what: WHAT,
                    offset: at,
                    reason: format!("segment {} is out of order", entry.segment_id),
                });
            }
            previous = Some(entry.segment_id);
            segments.insert(entry.segment_id, entry);
        }
        reader.finish()?;
        let index = ManifestIndex::from_parts(IndexParts {
            segments,
            next_ordinal: position.record_ordinal,
            last_snapshot,
            custom_event_count,
            unknown_records_skipped,
            ignored_record_count,
        });
        Ok(Snapshot {
            snapshot_id,
            position,
            index,
        })
    }
}

fn encode_failure(failure: Option<&JobFailure>, out: &mut Vec<u8>) {
    match failure {
        None => out.put_u8(0),
        Some(failure) => {
            out.put_u8(1);
            out.put_u16_le(failure.reason.to_u16());
            out.put_u32_le(failure.attempt);
        }
    }
}

fn encode_entry(entry: &SegmentEntry, out: &mut Vec<u8>) {
    out.put_u64_le(entry.segment_id.0);
    match entry.lifecycle {
        Lifecycle::Open => out.put_u8(0),
        Lifecycle::Sealed(seal) => {
            out.put_u8(1);
            out.put_u64_le(seal.record_count);
            out.put_u64_le(seal.durable_bytes);
            out.put_u32_le(seal.checksum);
            out.put_u64_le(seal.last_ext_id);
            out.put_u64_le(seal.coordinator_watermark);
            out.put_u8(u8::from(seal.flush_failure));
            out.put_u64_le(seal.sealed_at_ms);
        }
    }
    out.put_u64_le(entry.base_offset);
    out.put_u64_le(entry.opened_at_ms);
    let mut local = 0;
    if entry.local.tier0 {
        local |= LOCAL_TIER0;
    }
    if entry.local.tier1 {
        local |= LOCAL_TIER1;
    }
    out.put_u8(local);
    match &entry.tier1_artifact {
        None => out.put_u8(0),
        Some(artifact) => {
            out.put_u8(1);
            out.put_u64_le(artifact.job_id);
            out.put_u64_le(artifact.original_bytes);
            out.put_u64_le(artifact.compressed_bytes);
            out.put_u32_le(artifact.frame_count);
            out.put_u32_le(artifact.checksum);
        }
    }
    match &entry.tier2_object {
        None => out.put_u8(0),
        Some(object) => {
            out.put_u8(1);
            put_length_prefixed(out, object.key.as_bytes());
            put_length_prefixed(out, object.etag.as_bytes());
            out.put_u64_le(object.object_bytes);
        }
    }
    let jobs = &entry.jobs;
    out.put_u32_le(jobs.count());
    if let Some(job) = &jobs.compression {
        out.put_u8(JOB_COMPRESSION);
        out.put_u64_le(job.job_id);
        out.put_u32_le(job.attempts);
        out.put_u8(u8::from(job.running));
        encode_failure(job.last_failure.as_ref(), out);
    }
    if let Some(job) = &jobs.upload {
        out.put_u8(JOB_UPLOAD);
        put_length_prefixed(out, job.key.as_bytes());
        out.put_u32_le(job.attempts);
        out.put_u8(u8::from(job.running));
        encode_failure(job.last_failure.as_ref(), out);
    }
    if let Some(job) = &jobs.hydration {
        out.put_u8(JOB_HYDRATION);
        out.put_u8(job.source.to_u8());
        out.put_u32_le(job.attempts);
        out.put_u8(u8::from(job.running));
        encode_failure(job.last_failure.as_ref(), out);
    }
    if let Some(job) = &jobs.tier2_delete {
        out.put_u8(JOB_DELETE);
        put_length_prefixed(out, job.key.as_bytes());
        out.put_u16_le(job.reason.to_u16());
    }
}

fn decode_bool(reader: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(reader.invalid(format!("boolean byte is {other}, expected 0 or 1"))),
    }
}

fn decode_string(
    reader: &mut Reader<'_>,
    limit: u32,
    empty_ok: bool,
) -> Result<String, DecodeError> {
    let at = reader.offset();
    let bytes = reader.length_prefixed(limit)?;
    if bytes.is_empty() && !empty_ok {
        return Err(DecodeError::Invalid {
            what: WHAT,
            offset: at,
            reason: "object key is empty".to_owned(),
        });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
        what: WHAT,
        offset: at,
        reason: "string is not UTF-8".to_owned(),
    })
}

fn decode_tier(reader: &mut Reader<'_>) -> Result<Tier, DecodeError> {
    match reader.u8()? {
        0 => Ok(Tier::Tier0),
        1 => Ok(Tier::Tier1),
        2 => Ok(Tier::Tier2),
        other => Err(reader.invalid(format!("unknown tier {other}"))),
    }
}

fn decode_failure(reader: &mut Reader<'_>) -> Result<Option<JobFailure>, DecodeError> {
    if !decode_bool(reader)? {
        return Ok(None);
    }
    Ok(Some(JobFailure {
        reason: ReasonCode::from_u16(reader.u16()?),
        attempt: reader.u32()?,
    }))
}

fn decode_entry(reader: &mut Reader<'_>) -> Result<SegmentEntry, DecodeError> {
    let entry_at = reader.offset();
    let segment_id = SegmentId(reader.u64()?);
    let lifecycle = match reader.u8()? {
        0 => Lifecycle::Open,
        1 => Lifecycle::Sealed(SealInfo {
            record_count: reader.u64()?,
            durable_bytes: reader.u64()?,
            checksum: reader.u32()?,
            last_ext_id: reader.u64()?,
            coordinator_watermark: reader.u64()?,
            flush_failure: decode_bool(reader)?,
            sealed_at_ms: reader.u64()?,
        }),
        other => return Err(reader.invalid(format!("unknown lifecycle {other}"))),
    };
    let base_offset = reader.u64()?;
    let opened_at_ms = reader.u64()?;
    let local_bits = reader.u8()?;
    if local_bits & !(LOCAL_TIER0 | LOCAL_TIER1) != 0 {
        return Err(reader.invalid("unknown local copy bits"));
    }
    let local = LocalCopies {
        tier0: local_bits & LOCAL_TIER0 != 0,
        tier1: local_bits & LOCAL_TIER1 != 0,
    };
    let tier1_artifact = if decode_bool(reader)? {
        Some(Tier1Artifact {
            job_id: reader.u64()?,
            original_bytes: reader.u64()?,
            compressed_bytes: reader.u64()?,
            frame_count: reader.u32()?,
            checksum: reader.u32()?,
        })
    } else {
        None
    };
    let tier2_object = if decode_bool(reader)? {
        Some(Tier2Object {
            key: decode_string(reader, OBJECT_KEY_BYTES_MAX, false)?,
            etag: decode_string(reader, ETAG_BYTES_MAX, true)?,
            object_bytes: reader.u64()?,
        })
    } else {
        None
    };
    let count_at = reader.offset();
    let job_count = reader.u32()?;
    if job_count > SNAPSHOT_SEGMENT_JOBS_MAX {
        return Err(DecodeError::LimitExceeded {
            what: WHAT,
            offset: count_at,
            length: u64::from(job_count),
            limit: u64::from(SNAPSHOT_SEGMENT_JOBS_MAX),
        });
    }
    let mut jobs = PendingJobs::default();
    let mut last_kind = 0;
    for _ in 0..job_count {
        let kind_at = reader.offset();
        let kind = reader.u8()?;
        if kind <= last_kind {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: kind_at,
                reason: format!("job kind {kind} repeated or out of order"),
            });
        }
        last_kind = kind;
        match kind {
            JOB_COMPRESSION => {
                jobs.compression = Some(CompressionJob {
                    job_id: reader.u64()?,
                    attempts: reader.u32()?,
                    running: decode_bool(reader)?,
                    last_failure: decode_failure(reader)?,
                });
            }
            JOB_UPLOAD => {
                jobs.upload = Some(UploadJob {
                    key: decode_string(reader, OBJECT_KEY_BYTES_MAX, false)?,
                    attempts: reader.u32()?,
                    running: decode_bool(reader)?,
                    last_failure: decode_failure(reader)?,
                });
            }
            JOB_HYDRATION => {
                jobs.hydration = Some(HydrationJob {
                    source: decode_tier(reader)?,
                    attempts: reader.u32()?,
                    running: decode_bool(reader)?,
                    last_failure: decode_failure(reader)?,
                });
            }
            JOB_DELETE => {
                jobs.tier2_delete = Some(DeleteJob {
                    key: decode_string(reader, OBJECT_KEY_BYTES_MAX, false)?,
                    reason: ReasonCode::from_u16(reader.u16()?),
                });
            }
            other => {
                return Err(DecodeError::Invalid {
                    what: WHAT,
                    offset: kind_at,
                    reason: format!("unknown job kind {other}"),
                });
            }
        }
    }
    let entry = SegmentEntry {
        segment_id,
        lifecycle,
        base_offset,
        opened_at_ms,
        local,
        tier1_artifact,
        tier2_object,
        jobs,
    };
    // The index invariants, as errors: bytes from disk never panic.
    if entry.local.tier1 && entry.tier1_artifact.is_none() {
        return Err(DecodeError::Invalid {
            what: WHAT,
            offset: entry_at,
            reason: format!("segment {segment_id}: local Tier 1 copy without an artifact"),
        });
    }
    if entry.lifecycle == Lifecycle::Open && !entry.local.tier0 {
        return Err(DecodeError::Invalid {
            what: WHAT,
            offset: entry_at,
            reason: format!("segment {segment_id}: open without its Tier 0 copy"),
        });
    }
    Ok(entry)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::index::tests::arb_stream_record;
    use crate::manifest::record::RecordFrame;
    use proptest::prelude::*;

    pub(crate) fn index_of(records: &[ManifestRecord]) -> ManifestIndex {
        let mut index = ManifestIndex::new();
        for (ordinal, record) in records.iter().enumerate() {
            index.apply(&RecordFrame {
                ordinal: ordinal as u64,
                timestamp_ms: 0,
                frame_length: record.frame_length(),
                record: record.clone(),
            });
        }
        if !records.is_empty() {
            index.skip_unknown(records.len() as u64);
        }
        index
    }

    pub(crate) fn snapshot_of(records: &[ManifestRecord]) -> Snapshot {
        let index = index_of(records);
        let position = ManifestPosition {
            chunk_index: 3,
            chunk_offset: 2048,
            record_ordinal: index.next_ordinal(),
        };
        Snapshot::new(77, position, index).unwrap()
    }

    proptest! {
        #[test]
        fn round_trip_is_exact(records in proptest::collection::vec(arb_stream_record(), 0..80)) {
            let snapshot = snapshot_of(&records);
            let bytes = snapshot.to_bytes();
            let mut via_buf = Vec::new();
            snapshot.encode(&mut via_buf);
            prop_assert_eq!(&via_buf, &bytes);
            let decoded = Snapshot::decode(&bytes).unwrap();
            decoded.index().check_invariants();
            prop_assert_eq!(&decoded, &snapshot);
            prop_assert_eq!(decoded.to_bytes(), bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Snapshot::decode(&bytes);
        }

        #[test]
        fn truncation_is_an_error(records in proptest::collection::vec(arb_stream_record(), 0..30), cut in any::<prop::sample::Index>()) {
            let bytes = snapshot_of(&records).to_bytes();
            let cut = cut.index(bytes.len());
            prop_assert!(Snapshot::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let records = proptest::collection::vec(arb_stream_record(), 40)
            .new_tree(&mut runner)
            .expect("the strategy generates")
            .current();
        let snapshot = snapshot_of(&records);
        assert!(
            !snapshot.index().segments().is_empty(),
            "the sample must hold segments"
        );
        let bytes = snapshot.to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Snapshot::decode(&flipped).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn counts_are_checked_before_allocation() {
        let mut bytes = snapshot_of(&[]).to_bytes();
        bytes.truncate(bytes.len() - 4);
        let count_at = bytes.len() - 4;
        bytes[count_at..].copy_from_slice(&(SNAPSHOT_SEGMENTS_MAX + 1).to_le_bytes());
        let crc = crc32(&bytes);
        bytes.put_u32_le(crc);
        assert!(matches!(
            Snapshot::decode(&bytes),
            Err(DecodeError::LimitExceeded { length, .. }) if length == u64::from(SNAPSHOT_SEGMENTS_MAX) + 1
        ));
        bytes.truncate(bytes.len() - 4);
        bytes[count_at..].copy_from_slice(&1000u32.to_le_bytes());
        let crc = crc32(&bytes);
        bytes.put_u32_le(crc);
        assert!(matches!(
            Snapshot::decode(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn position_must_match_the_index() {
        let error = Snapshot::new(
            1,
            ManifestPosition::START,
            index_of(&[ManifestRecord::CustomEvent {
                kind: 1,
                blob: bytes::Bytes::new(),
            }]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("below 0"), "{error}");
    }
}
