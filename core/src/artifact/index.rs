//! The artifact's tail: our index skippable frame and the standard seek table.
//!
//! The index maps record offsets to frames and carries a CRC32 of every raw frame; the
//! seek table (Zstandard Seekable Format, written and parsed by `zeekstd`) maps frames
//! to compressed offsets for standard tools. Both are decoded together from the last
//! bytes of the artifact and every seek table entry must agree with the index.
//!
//! **Invariants**
//! - An [`ArtifactIndex`] is only built by the encoder or by a decode that checked
//!   every relation listed in [`ArtifactIndex::check`]; its frames are contiguous and
//!   cover the segment and the compressed region exactly.
//! - [`ArtifactIndex::decode_tail`] asks for more tail bytes only while the artifact
//!   is long enough to provide them; a request the artifact cannot satisfy is an error.

use super::ArtifactError;
use crate::codec::{DecodeError, Reader, crc32};
use crate::limits::{
    ARTIFACT_FRAME_COMPRESSED_BYTES_MAX, ARTIFACT_FRAME_RAW_BYTES_MAX, ARTIFACT_FRAMES_MAX,
    SEGMENT_BYTES_MAX,
};
use bytes::BufMut;
use std::ops::Range;
use zeekstd::{BytesWrapper, SeekTable};

/// Skippable-frame magic of the index (zstd reserves `0x184D2A50..=0x184D2A5F` for
/// skippable frames; `0x184D2A5E` is the seek table's, `0x184D2A50` is used by pzstd).
pub const INDEX_SKIPPABLE_MAGIC: u32 = 0x184D_2A5A;
/// Magic at the start of the index content: `AOFI` in ASCII.
pub const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"AOFI");
/// Index format version this build writes and reads.
pub const INDEX_VERSION: u16 = 1;
/// Bytes of the index frame before the first entry (skippable header included).
pub const INDEX_HEADER_BYTES: u32 = 56;
/// Bytes of one per-frame entry of the index.
pub const INDEX_ENTRY_BYTES: u32 = 40;
/// Bytes of the index frame after the last entry: the frame's length and its CRC32.
pub const INDEX_TRAILER_BYTES: u32 = 8;
/// Bytes of the index frame besides its entries.
pub const INDEX_FRAME_FIXED_BYTES: u32 = INDEX_HEADER_BYTES + INDEX_TRAILER_BYTES;
/// Bytes of the seek table frame besides its entries: skippable header (8) and the
/// seek table integrity field (9).
pub const SEEK_TABLE_FIXED_BYTES: u32 = 8 + zeekstd::SEEK_TABLE_INTEGRITY_SIZE as u32;
/// Bytes of one seek table entry (compressed size, decompressed size; no checksums).
pub const SEEK_TABLE_ENTRY_BYTES: u32 = 8;

const SKIPPABLE_HEADER_BYTES: u32 = 8;
/// Magic at the very end of a seek table frame (Zstandard Seekable Format).
const SEEK_TABLE_FOOTER_MAGIC: u32 = zeekstd::SEEKABLE_MAGIC_NUMBER;

// Field offsets of the index frame, each built from the previous one.
const AT_SKIPPABLE_MAGIC: usize = 0;
const AT_CONTENT_BYTES: usize = AT_SKIPPABLE_MAGIC + 4;
const AT_MAGIC: usize = AT_CONTENT_BYTES + 4;
const AT_VERSION: usize = AT_MAGIC + 4;
const AT_ENTRY_BYTES: usize = AT_VERSION + 2;
const AT_FRAME_COUNT: usize = AT_ENTRY_BYTES + 2;
const AT_FLAGS: usize = AT_FRAME_COUNT + 4;
const AT_SEGMENT_RAW_BYTES: usize = AT_FLAGS + 4;
const AT_RECORD_COUNT: usize = AT_SEGMENT_RAW_BYTES + 8;
const AT_FIRST_RECORD_OFFSET: usize = AT_RECORD_COUNT + 8;
const AT_FRAMES_COMPRESSED_BYTES: usize = AT_FIRST_RECORD_OFFSET + 8;
const AT_ENTRIES: usize = AT_FRAMES_COMPRESSED_BYTES + 8;
const _: () = assert!(AT_ENTRIES == INDEX_HEADER_BYTES as usize);

// Field offsets within one entry.
const ENTRY_AT_FIRST_RECORD_OFFSET: usize = 0;
const ENTRY_AT_RAW_OFFSET: usize = ENTRY_AT_FIRST_RECORD_OFFSET + 8;
const ENTRY_AT_COMPRESSED_OFFSET: usize = ENTRY_AT_RAW_OFFSET + 8;
const ENTRY_AT_RECORD_COUNT: usize = ENTRY_AT_COMPRESSED_OFFSET + 8;
const ENTRY_AT_RAW_SIZE: usize = ENTRY_AT_RECORD_COUNT + 4;
const ENTRY_AT_COMPRESSED_SIZE: usize = ENTRY_AT_RAW_SIZE + 4;
const ENTRY_AT_RAW_CRC32: usize = ENTRY_AT_COMPRESSED_SIZE + 4;
const ENTRY_END: usize = ENTRY_AT_RAW_CRC32 + 4;
const _: () = assert!(ENTRY_END == INDEX_ENTRY_BYTES as usize);
const _: () = assert!(
    ENTRY_AT_FIRST_RECORD_OFFSET == 0
        && ENTRY_AT_RAW_OFFSET == 8
        && ENTRY_AT_COMPRESSED_OFFSET == 16
        && ENTRY_AT_RECORD_COUNT == 24
        && ENTRY_AT_RAW_SIZE == 28
        && ENTRY_AT_COMPRESSED_SIZE == 32
        && ENTRY_AT_RAW_CRC32 == 36,
    "entry layout is drawn in docs/format.md"
);

/// Bytes of the index frame of an artifact with `frame_count` frames.
#[must_use]
pub const fn index_frame_bytes(frame_count: u32) -> u64 {
    INDEX_FRAME_FIXED_BYTES as u64 + INDEX_ENTRY_BYTES as u64 * frame_count as u64
}

/// Bytes of the seek table frame of an artifact with `frame_count` frames.
#[must_use]
pub const fn seek_table_bytes(frame_count: u32) -> u64 {
    SEEK_TABLE_FIXED_BYTES as u64 + SEEK_TABLE_ENTRY_BYTES as u64 * frame_count as u64
}

/// Tail bytes (index + seek table) of the smallest artifact: one frame.
pub(super) const fn tail_bytes_min() -> u64 {
    index_frame_bytes(1) + seek_table_bytes(1)
}

const _: () = assert!(
    index_frame_bytes(ARTIFACT_FRAMES_MAX) <= u32::MAX as u64,
    "the index frame length is stored as a u32"
);

/// One frame of an artifact: what a reader needs to GET it, decompress it, check it and
/// find records in it. Plain data, so a driver can carry it in a CPU job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLocation {
    /// The frame's number, counting from 0.
    pub frame: u32,
    /// Offset of the first record whose frame starts in this frame.
    pub first_record_offset: u64,
    /// Records starting in this frame (0 only for a segment with no records).
    pub record_count: u32,
    /// Where the frame's bytes start in the segment file.
    pub raw_offset: u64,
    /// Uncompressed size of the frame.
    pub raw_size: u32,
    /// CRC32 of the uncompressed frame.
    pub raw_crc32: u32,
    /// Where the compressed frame starts in the artifact.
    pub compressed_offset: u64,
    /// Compressed size of the frame.
    pub compressed_size: u32,
}

impl FrameLocation {
    /// Byte range of the compressed frame in the artifact: what to range-GET.
    #[must_use]
    pub fn compressed_range(&self) -> Range<u64> {
        self.compressed_offset..self.compressed_offset + u64::from(self.compressed_size)
    }

    /// Byte range of the frame's content in the segment file.
    #[must_use]
    pub fn raw_range(&self) -> Range<u64> {
        self.raw_offset..self.raw_offset + u64::from(self.raw_size)
    }

    /// Record offsets that start in this frame.
    #[must_use]
    pub fn record_offsets(&self) -> Range<u64> {
        self.first_record_offset..self.first_record_offset + u64::from(self.record_count)
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64_le(self.first_record_offset);
        buf.put_u64_le(self.raw_offset);
        buf.put_u64_le(self.compressed_offset);
        buf.put_u32_le(self.record_count);
        buf.put_u32_le(self.raw_size);
        buf.put_u32_le(self.compressed_size);
        buf.put_u32_le(self.raw_crc32);
    }

    fn decode(reader: &mut Reader<'_>, frame: u32) -> Result<Self, DecodeError> {
        let first_record_offset = reader.u64()?;
        let raw_offset = reader.u64()?;
        let compressed_offset = reader.u64()?;
        let record_count = reader.u32()?;
        let raw_size = reader.u32()?;
        let compressed_size = reader.u32()?;
        let raw_crc32 = reader.u32()?;
        Ok(FrameLocation {
            frame,
            first_record_offset,
            record_count,
            raw_offset,
            raw_size,
            raw_crc32,
            compressed_offset,
            compressed_size,
        })
    }
}

/// The decoded tail of an artifact: which frame holds which records and bytes.
///
/// Built by [`super::encode`] or by [`ArtifactIndex::decode_tail`]. All offsets are
/// relative to the first byte of the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactIndex {
    segment_raw_bytes: u64,
    record_count: u64,
    first_record_offset: u64,
    frames_compressed_bytes: u64,
    frames: Vec<FrameLocation>,
}

/// The result of [`ArtifactIndex::decode_tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailDecode {
    /// The tail held the whole index and seek table.
    Complete(ArtifactIndex),
    /// The tail was too short: GET the last `tail_bytes` bytes of the artifact (always
    /// more than were given, never more than the artifact holds) and decode again.
    NeedTail { tail_bytes: u64 },
}

impl ArtifactIndex {
    /// Builds an index from its parts and checks it; used by the encoder, where a failed
    /// check is a bug.
    pub(super) fn from_parts(
        segment_raw_bytes: u64,
        record_count: u64,
        first_record_offset: u64,
        frames: Vec<FrameLocation>,
    ) -> Result<Self, DecodeError> {
        let frames_compressed_bytes = frames.last().map_or(0, |last| last.compressed_range().end);
        let index = ArtifactIndex {
            segment_raw_bytes,
            record_count,
            first_record_offset,
            frames_compressed_bytes,
            frames,
        };
        index.check(0)?;
        Ok(index)
    }

    /// Bytes of the segment file this artifact holds.
    #[must_use]
    pub fn segment_raw_bytes(&self) -> u64 {
        self.segment_raw_bytes
    }

    /// Records in the segment.
    #[must_use]
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// Offset of the segment's first record (0 when it has none).
    #[must_use]
    pub fn first_record_offset(&self) -> u64 {
        self.first_record_offset
    }

    /// Every frame, in order.
    #[must_use]
    pub fn frames(&self) -> &[FrameLocation] {
        &self.frames
    }

    /// Number of frames (at least 1).
    #[must_use]
    pub fn frame_count(&self) -> u32 {
        u32::try_from(self.frames.len()).expect("checked against ARTIFACT_FRAMES_MAX")
    }

    /// Compressed bytes of all frames: where the index frame starts.
    #[must_use]
    pub fn frames_compressed_bytes(&self) -> u64 {
        self.frames_compressed_bytes
    }

    /// Bytes after the frames: the index frame and the seek table frame.
    #[must_use]
    pub fn tail_bytes(&self) -> u64 {
        index_frame_bytes(self.frame_count()) + seek_table_bytes(self.frame_count())
    }

    /// Total bytes of the artifact.
    #[must_use]
    pub fn artifact_bytes(&self) -> u64 {
        self.frames_compressed_bytes + self.tail_bytes()
    }

    /// The frame holding the record at `offset`, or `None` if the segment does not hold
    /// it. The record's frame starts in this frame and, since frames hold whole
    /// records, ends in it too.
    #[must_use]
    pub fn frame_for_record(&self, offset: u64) -> Option<FrameLocation> {
        let frame = self
            .frames
            .partition_point(|location| location.record_offsets().end <= offset);
        let location = self.frames.get(frame)?;
        location
            .record_offsets()
            .contains(&offset)
            .then_some(*location)
    }

    /// Encodes the index skippable frame.
    pub(super) fn encode_index_frame(&self, buf: &mut impl BufMut) {
        let frame_count = self.frame_count();
        let frame_bytes = u32::try_from(index_frame_bytes(frame_count))
            .expect("the frame count is within ARTIFACT_FRAMES_MAX, so the length fits a u32");
        let mut out = Vec::with_capacity(frame_bytes as usize);
        out.put_u32_le(INDEX_SKIPPABLE_MAGIC);
        out.put_u32_le(frame_bytes - SKIPPABLE_HEADER_BYTES);
        out.put_u32_le(INDEX_MAGIC);
        out.put_u16_le(INDEX_VERSION);
        out.put_u16_le(INDEX_ENTRY_BYTES as u16);
        out.put_u32_le(frame_count);
        out.put_u32_le(0); // flags, none defined in version 1
        out.put_u64_le(self.segment_raw_bytes);
        out.put_u64_le(self.record_count);
        out.put_u64_le(self.first_record_offset);
        out.put_u64_le(self.frames_compressed_bytes);
        assert_eq!(out.len(), AT_ENTRIES);
        for location in &self.frames {
            location.encode(&mut out);
        }
        out.put_u32_le(frame_bytes);
        let crc = crc32(&out);
        out.put_u32_le(crc);
        assert_eq!(out.len(), frame_bytes as usize);
        buf.put_slice(&out);
    }

    /// Decodes the index and seek table from the last `tail.len()` bytes of an
    /// artifact that is `artifact_len` bytes long.
    ///
    /// A driver GETs the last [`ARTIFACT_TAIL_PROBE_BYTES`] (or the whole artifact if
    /// smaller) and calls this; on [`TailDecode::NeedTail`] it GETs exactly the tail
    /// asked for and calls again. Errors name the absolute byte offset.
    ///
    /// [`ARTIFACT_TAIL_PROBE_BYTES`]: crate::limits::ARTIFACT_TAIL_PROBE_BYTES
    pub fn decode_tail(tail: &[u8], artifact_len: u64) -> Result<TailDecode, ArtifactError> {
        let tail_len = tail.len() as u64;
        if tail_len > artifact_len {
            return Err(DecodeError::Invalid {
                what: "artifact tail",
                offset: 0,
                reason: format!(
                    "tail of {tail_len} bytes is longer than the artifact ({artifact_len} bytes)"
                ),
            }
            .into());
        }
        let base = artifact_len - tail_len;
        let need = |tail_bytes: u64| -> Result<TailDecode, ArtifactError> {
            debug_assert!(tail_bytes > tail_len);
            if tail_bytes > artifact_len {
                return Err(DecodeError::Truncated {
                    what: "artifact tail",
                    offset: 0,
                    needed: tail_bytes,
                    available: artifact_len,
                }
                .into());
            }
            Ok(TailDecode::NeedTail { tail_bytes })
        };

        // The seek table integrity field (the last 9 bytes) says how many frames there
        // are, hence how long the seek table and our index are. zeekstd parses the
        // whole seek table below; this reads just enough to know how much tail to ask
        // for, which zeekstd has no call for.
        let integrity_bytes = u64::from(SEEK_TABLE_FIXED_BYTES - SKIPPABLE_HEADER_BYTES);
        if tail_len < integrity_bytes {
            return need(integrity_bytes.max(tail_bytes_min().min(artifact_len)));
        }
        let integrity_at = tail.len() - integrity_bytes as usize;
        let mut reader = Reader::new(
            &tail[integrity_at..],
            base + integrity_at as u64,
            "artifact seek table",
        );
        let frame_count_at = reader.offset();
        let frame_count = reader.u32()?;
        let descriptor_at = reader.offset();
        let descriptor = reader.u8()?;
        let magic_at = reader.offset();
        let magic = reader.u32()?;
        if magic != SEEK_TABLE_FOOTER_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "artifact seek table",
                offset: magic_at,
                found: u64::from(magic),
                expected: u64::from(SEEK_TABLE_FOOTER_MAGIC),
            }
            .into());
        }
        if descriptor != 0 {
            // We never write per-frame checksums into the seek table (the index holds
            // them), and the other bits are reserved.
            return Err(DecodeError::Invalid {
                what: "artifact seek table",
                offset: descriptor_at,
                reason: format!("descriptor {descriptor:#04x}, expected 0"),
            }
            .into());
        }
        if frame_count == 0 || frame_count > ARTIFACT_FRAMES_MAX {
            return Err(DecodeError::LimitExceeded {
                what: "artifact seek table frame count",
                offset: frame_count_at,
                length: u64::from(frame_count),
                limit: u64::from(ARTIFACT_FRAMES_MAX),
            }
            .into());
        }
        let seek_bytes = seek_table_bytes(frame_count);
        let index_bytes = index_frame_bytes(frame_count);
        let tail_needed = seek_bytes + index_bytes;
        if tail_needed > artifact_len {
            return Err(DecodeError::Truncated {
                what: "artifact tail",
                offset: 0,
                needed: tail_needed,
                available: artifact_len,
            }
            .into());
        }
        if tail_len < tail_needed {
            return need(tail_needed);
        }
        let tail = &tail[(tail_len - tail_needed) as usize..];
        let tail_base = artifact_len - tail_needed;
        let (index_frame, seek_frame) = tail.split_at(index_bytes as usize);
        let seek_base = tail_base + index_bytes;

        let index = Self::decode_index_frame(index_frame, tail_base, frame_count)?;
        let seek_table =
            SeekTable::from_seekable(&mut BytesWrapper::new(seek_frame)).map_err(|error| {
                DecodeError::Invalid {
                    what: "artifact seek table",
                    offset: seek_base,
                    reason: error.to_string(),
                }
            })?;
        index.check_seek_table(&seek_table, seek_base)?;
        if index.artifact_bytes() != artifact_len {
            return Err(DecodeError::Invalid {
                what: "artifact index",
                offset: tail_base + AT_FRAMES_COMPRESSED_BYTES as u64,
                reason: format!(
                    "frames ({} bytes) and tail ({} bytes) do not add up to the artifact ({artifact_len} bytes)",
                    index.frames_compressed_bytes,
                    index.tail_bytes()
                ),
            }
            .into());
        }
        Ok(TailDecode::Complete(index))
    }

    /// Decodes the index frame of an artifact whose seek table says `frame_count`
    /// frames; `base` is the frame's absolute offset.
    fn decode_index_frame(bytes: &[u8], base: u64, frame_count: u32) -> Result<Self, DecodeError> {
        assert_eq!(bytes.len() as u64, index_frame_bytes(frame_count));
        let mut reader = Reader::new(bytes, base, "artifact index");
        let skippable_magic = reader.u32()?;
        if skippable_magic != INDEX_SKIPPABLE_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "artifact index",
                offset: base,
                found: u64::from(skippable_magic),
                expected: u64::from(INDEX_SKIPPABLE_MAGIC),
            });
        }
        let content_bytes_at = reader.offset();
        let content_bytes = reader.u32()?;
        // The length is stored twice (skippable header, trailer); both must agree with
        // the frame count before the CRC is trusted to cover the right bytes.
        let expected_content = bytes.len() as u64 - u64::from(SKIPPABLE_HEADER_BYTES);
        if u64::from(content_bytes) != expected_content {
            return Err(DecodeError::Invalid {
                what: "artifact index",
                offset: content_bytes_at,
                reason: format!(
                    "skippable frame holds {content_bytes} bytes, the seek table implies {expected_content}"
                ),
            });
        }
        let crc_at = bytes.len() - 4;
        let frame_bytes_at = crc_at - 4;
        let mut trailer = Reader::new(
            &bytes[frame_bytes_at..],
            base + frame_bytes_at as u64,
            "artifact index",
        );
        let frame_bytes = trailer.u32()?;
        let stored_crc = trailer.u32()?;
        let computed_crc = crc32(&bytes[..crc_at]);
        if stored_crc != computed_crc {
            return Err(DecodeError::ChecksumMismatch {
                what: "artifact index",
                offset: base + crc_at as u64,
                stored: stored_crc,
                computed: computed_crc,
            });
        }
        if u64::from(frame_bytes) != bytes.len() as u64 {
            return Err(DecodeError::Invalid {
                what: "artifact index",
                offset: base + frame_bytes_at as u64,
                reason: format!(
                    "trailer says {frame_bytes} bytes, frame has {}",
                    bytes.len()
                ),
            });
        }

        let magic_at = reader.offset();
        let magic = reader.u32()?;
        if magic != INDEX_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "artifact index",
                offset: magic_at,
                found: u64::from(magic),
                expected: u64::from(INDEX_MAGIC),
            });
        }
        let version_at = reader.offset();
        let version = reader.u16()?;
        if version != INDEX_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "artifact index",
                offset: version_at,
                found: version,
                supported: INDEX_VERSION,
            });
        }
        let entry_bytes_at = reader.offset();
        let entry_bytes = reader.u16()?;
        if u32::from(entry_bytes) != INDEX_ENTRY_BYTES {
            return Err(DecodeError::Invalid {
                what: "artifact index",
                offset: entry_bytes_at,
                reason: format!("entry size {entry_bytes}, version 1 uses {INDEX_ENTRY_BYTES}"),
            });
        }
        let frame_count_at = reader.offset();
        let index_frame_count = reader.u32()?;
        if index_frame_count != frame_count {
            return Err(DecodeError::Invalid {
                what: "artifact index",
                offset: frame_count_at,
                reason: format!("{index_frame_count} frames, the seek table says {frame_count}"),
            });
        }
        let flags_at = reader.offset();
        let flags = reader.u32()?;
        if flags != 0 {
            return Err(DecodeError::Invalid {
                what: "artifact index",
                offset: flags_at,
                reason: format!("unknown flags {flags:#x}"),
            });
        }
        let segment_raw_bytes = reader.u64()?;
        let record_count = reader.u64()?;
        let first_record_offset = reader.u64()?;
        let frames_compressed_bytes = reader.u64()?;
        debug_assert_eq!(reader.position(), AT_ENTRIES);
        let mut frames = Vec::with_capacity(frame_count as usize);
        for frame in 0..frame_count {
            frames.push(FrameLocation::decode(&mut reader, frame)?);
        }
        assert_eq!(
            reader.position(),
            frame_bytes_at,
            "lengths were checked above"
        );
        let index = ArtifactIndex {
            segment_raw_bytes,
            record_count,
            first_record_offset,
            frames_compressed_bytes,
            frames,
        };
        index.check(base)?;
        Ok(index)
    }

    /// Checks every relation between the header and the entries; `base` is the index
    /// frame's absolute offset, for error positions.
    fn check(&self, base: u64) -> Result<(), DecodeError> {
        let invalid = |at: usize, reason: String| DecodeError::Invalid {
            what: "artifact index",
            offset: base + at as u64,
            reason,
        };
        let frame_count = self.frames.len() as u64;
        if frame_count == 0 || frame_count > u64::from(ARTIFACT_FRAMES_MAX) {
            return Err(DecodeError::LimitExceeded {
                what: "artifact index frame count",
                offset: base + AT_FRAME_COUNT as u64,
                length: frame_count,
                limit: u64::from(ARTIFACT_FRAMES_MAX),
            });
        }
        if self.segment_raw_bytes > SEGMENT_BYTES_MAX {
            return Err(DecodeError::LimitExceeded {
                what: "artifact index segment length",
                offset: base + AT_SEGMENT_RAW_BYTES as u64,
                length: self.segment_raw_bytes,
                limit: SEGMENT_BYTES_MAX,
            });
        }
        if self
            .first_record_offset
            .checked_add(self.record_count)
            .is_none()
        {
            return Err(invalid(
                AT_RECORD_COUNT,
                format!(
                    "first record offset {} plus record count {} overflows",
                    self.first_record_offset, self.record_count
                ),
            ));
        }
        if self.record_count == 0 && frame_count != 1 {
            return Err(invalid(
                AT_FRAME_COUNT,
                format!("a segment without records has one frame, not {frame_count}"),
            ));
        }
        let mut raw_offset = 0u64;
        let mut compressed_offset = 0u64;
        let mut record_offset = self.first_record_offset;
        for (frame, location) in self.frames.iter().enumerate() {
            let at = AT_ENTRIES + frame * INDEX_ENTRY_BYTES as usize;
            let at_field = |field: usize| at + field;
            assert_eq!(location.frame as usize, frame);
            if location.first_record_offset != record_offset {
                return Err(invalid(
                    at_field(ENTRY_AT_FIRST_RECORD_OFFSET),
                    format!(
                        "frame {frame} starts at record {}, expected {record_offset}",
                        location.first_record_offset
                    ),
                ));
            }
            if location.raw_offset != raw_offset {
                return Err(invalid(
                    at_field(ENTRY_AT_RAW_OFFSET),
                    format!(
                        "frame {frame} starts at raw byte {}, expected {raw_offset}",
                        location.raw_offset
                    ),
                ));
            }
            if location.compressed_offset != compressed_offset {
                return Err(invalid(
                    at_field(ENTRY_AT_COMPRESSED_OFFSET),
                    format!(
                        "frame {frame} starts at compressed byte {}, expected {compressed_offset}",
                        location.compressed_offset
                    ),
                ));
            }
            if self.record_count > 0 && location.record_count == 0 {
                return Err(invalid(
                    at_field(ENTRY_AT_RECORD_COUNT),
                    format!("frame {frame} holds no record"),
                ));
            }
            // Records are at least one byte long, so a frame holds no more records than
            // bytes; this also keeps the running record offset from overflowing.
            if location.record_count > location.raw_size {
                return Err(invalid(
                    at_field(ENTRY_AT_RECORD_COUNT),
                    format!(
                        "frame {frame} holds {} records in {} bytes",
                        location.record_count, location.raw_size
                    ),
                ));
            }
            if location.raw_size > ARTIFACT_FRAME_RAW_BYTES_MAX {
                return Err(DecodeError::LimitExceeded {
                    what: "artifact frame raw size",
                    offset: base + at_field(ENTRY_AT_RAW_SIZE) as u64,
                    length: u64::from(location.raw_size),
                    limit: u64::from(ARTIFACT_FRAME_RAW_BYTES_MAX),
                });
            }
            if location.raw_size == 0 && self.segment_raw_bytes != 0 {
                return Err(invalid(
                    at_field(ENTRY_AT_RAW_SIZE),
                    format!("frame {frame} is empty"),
                ));
            }
            if location.compressed_size > ARTIFACT_FRAME_COMPRESSED_BYTES_MAX {
                return Err(DecodeError::LimitExceeded {
                    what: "artifact frame compressed size",
                    offset: base + at_field(ENTRY_AT_COMPRESSED_SIZE) as u64,
                    length: u64::from(location.compressed_size),
                    limit: u64::from(ARTIFACT_FRAME_COMPRESSED_BYTES_MAX),
                });
            }
            if location.compressed_size == 0 {
                return Err(invalid(
                    at_field(ENTRY_AT_COMPRESSED_SIZE),
                    format!("frame {frame} has no compressed bytes"),
                ));
            }
            // No overflow: at most 2^20 frames of at most 2^26 bytes each.
            raw_offset += u64::from(location.raw_size);
            compressed_offset += u64::from(location.compressed_size);
            record_offset = record_offset
                .checked_add(u64::from(location.record_count))
                .ok_or_else(|| {
                    invalid(
                        at_field(ENTRY_AT_RECORD_COUNT),
                        format!("frame {frame}: record offsets overflow"),
                    )
                })?;
        }
        if raw_offset != self.segment_raw_bytes {
            return Err(invalid(
                AT_SEGMENT_RAW_BYTES,
                format!(
                    "segment is {} bytes, frames hold {raw_offset}",
                    self.segment_raw_bytes
                ),
            ));
        }
        if compressed_offset != self.frames_compressed_bytes {
            return Err(invalid(
                AT_FRAMES_COMPRESSED_BYTES,
                format!(
                    "frames are {} compressed bytes, entries add up to {compressed_offset}",
                    self.frames_compressed_bytes
                ),
            ));
        }
        if record_offset - self.first_record_offset != self.record_count {
            return Err(invalid(
                AT_RECORD_COUNT,
                format!(
                    "segment holds {} records, frames hold {}",
                    self.record_count,
                    record_offset - self.first_record_offset
                ),
            ));
        }
        Ok(())
    }

    /// Checks that the seek table (at absolute offset `base`) agrees with the index in
    /// every entry.
    fn check_seek_table(&self, seek_table: &SeekTable, base: u64) -> Result<(), DecodeError> {
        let mismatch = |frame: u32, reason: String| DecodeError::Invalid {
            what: "artifact seek table",
            offset: base
                + u64::from(SKIPPABLE_HEADER_BYTES)
                + u64::from(frame) * u64::from(SEEK_TABLE_ENTRY_BYTES),
            reason: format!("frame {frame}: {reason}"),
        };
        if seek_table.num_frames() != self.frame_count() {
            return Err(mismatch(
                0,
                format!(
                    "seek table has {} frames, index {}",
                    seek_table.num_frames(),
                    self.frame_count()
                ),
            ));
        }
        for location in &self.frames {
            let frame = location.frame;
            let seek = |value: zeekstd::Result<u64>| {
                value.map_err(|error| mismatch(frame, error.to_string()))
            };
            let compressed_start = seek(seek_table.frame_start_comp(frame))?;
            let compressed_size = seek(seek_table.frame_size_comp(frame))?;
            let raw_start = seek(seek_table.frame_start_decomp(frame))?;
            let raw_size = seek(seek_table.frame_size_decomp(frame))?;
            if compressed_start != location.compressed_offset
                || compressed_size != u64::from(location.compressed_size)
                || raw_start != location.raw_offset
                || raw_size != u64::from(location.raw_size)
            {
                return Err(mismatch(
                    frame,
                    format!(
                        "seek table says compressed {compressed_start}+{compressed_size}, raw {raw_start}+{raw_size}; index says compressed {}+{}, raw {}+{}",
                        location.compressed_offset,
                        location.compressed_size,
                        location.raw_offset,
                        location.raw_size
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArtifactIndex {
        ArtifactIndex::from_parts(
            30,
            5,
            100,
            vec![
                FrameLocation {
                    frame: 0,
                    first_record_offset: 100,
                    record_count: 2,
                    raw_offset: 0,
                    raw_size: 12,
                    raw_crc32: 1,
                    compressed_offset: 0,
                    compressed_size: 20,
                },
                FrameLocation {
                    frame: 1,
                    first_record_offset: 102,
                    record_count: 3,
                    raw_offset: 12,
                    raw_size: 18,
                    raw_crc32: 2,
                    compressed_offset: 20,
                    compressed_size: 25,
                },
            ],
        )
        .expect("sample is consistent")
    }

    #[test]
    fn frame_for_record_finds_the_frame_and_nothing_outside() {
        let index = sample();
        assert_eq!(index.frame_for_record(99), None);
        assert_eq!(index.frame_for_record(100).map(|l| l.frame), Some(0));
        assert_eq!(index.frame_for_record(101).map(|l| l.frame), Some(0));
        assert_eq!(index.frame_for_record(102).map(|l| l.frame), Some(1));
        assert_eq!(index.frame_for_record(104).map(|l| l.frame), Some(1));
        assert_eq!(index.frame_for_record(105), None);
        assert_eq!(index.frame_for_record(u64::MAX), None);
    }

    #[test]
    fn index_frame_has_the_documented_length_and_round_trips() {
        let index = sample();
        let mut bytes = vec![];
        index.encode_index_frame(&mut bytes);
        assert_eq!(bytes.len() as u64, index_frame_bytes(2));
        assert_eq!(bytes.len(), 64 + 2 * 40);
        let decoded = ArtifactIndex::decode_index_frame(&bytes, 0, 2).unwrap();
        assert_eq!(decoded, index);
    }

    #[test]
    fn check_rejects_gaps_between_frames() {
        let mut index = sample();
        index.frames[1].raw_offset = 13;
        let error = index.check(1000).unwrap_err();
        assert_eq!(error.offset(), 1000 + 56 + 40 + 8, "{error}");
    }

    #[test]
    fn unsupported_version_is_reported_after_the_checksum() {
        let index = sample();
        let mut bytes = vec![];
        index.encode_index_frame(&mut bytes);
        bytes[AT_VERSION] = 2;
        let crc_at = bytes.len() - 4;
        let crc = crc32(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        let error = ArtifactIndex::decode_index_frame(&bytes, 0, 2).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::UnsupportedVersion {
                    found: 2,
                    offset: 12,
                    ..
                }
            ),
            "{error}"
        );
    }
}
