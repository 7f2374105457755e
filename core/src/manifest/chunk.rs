//! Manifest chunk files: two header slots, then record frames.
//!
//! A stream's manifest directory holds chunk files named `<chunk_index>.mlog`, the index
//! written as 20 decimal digits ([`chunk_file_name`]). Each file is laid out as:
//!
//! ```text
//! 0      slot 0   (512 bytes: one sector)
//! 512    slot 1   (512 bytes: one sector)
//! 1024   record frames (see `record`), densely packed; the first `committed_length`
//!        bytes of this area are committed, anything after them is trimmed on replay
//! ```
//!
//! A slot ([`SlotHeader`]) is:
//!
//! ```text
//! 0   u64 magic              "AOF2MCHK" (little-endian bytes 41 4f 46 32 4d 43 48 4b)
//! 8   u16 version            (1)
//! 10  u16 flags              bit 0 sealed, bit 1 uploaded, others 0
//! 12  u64 chunk_index        (equals the index in the file name)
//! 20  u64 base_ordinal       ordinal of the chunk's first record
//! 28  u64 commit_sequence    0 for the slot written at creation; +1 per commit
//! 36  u32 committed_length   bytes of record frames after the header area
//! 40  u32 record_count       records in the committed bytes
//! 44  u32 records_crc        CRC32 of the committed record bytes
//! 48  u32 header_crc         CRC32 of bytes 0..48 of this slot
//! 52  460 zero bytes         (checked: a non-zero byte makes the slot invalid)
//! ```
//!
//! A commit with sequence `s` is always written to slot `s % 2`, so the two slots
//! alternate and a commit never overwrites the slot it supersedes.
//!
//! # Commit protocol
//!
//! 1. write the new record frames right after the committed bytes;
//! 2. fsync the file;
//! 3. write the *other* slot with `commit_sequence + 1`, the new committed length,
//!    record count and records CRC;
//! 4. fsync the file.
//!
//! The design brief's rule 4 allows a single fsync (records, then length and CRC, then
//! fsync). We spend two so that **a slot on disk only ever points at record bytes that
//! were durable before the slot was written**. Then replay can tell a crash from
//! corruption:
//!
//! - a crash before step 4 completes leaves the new slot absent or torn (its header
//!   CRC fails) and the previous slot, which still verifies, wins: the commit simply
//!   did not happen, and the new record bytes are trimmed as uncommitted;
//! - a newest *valid* slot whose records CRC fails cannot come from a crash, so it is
//!   counted as a corruption event; replay falls back to the older slot if that one
//!   still verifies.
//!
//! With one fsync the disk may persist the slot and not the records it covers, and a
//! crash would look exactly like corruption.
//!
//! A new chunk becomes visible the brief's way: create `<index>.mlog.tmp`, write the
//! header area (slot 0: sequence 0, nothing committed; slot 1: zeros), fsync, rename to
//! `<index>.mlog`, fsync the directory. So a chunk file under its final name always has
//! a durable, valid slot 0.
//!
//! **Invariants**
//! - Decoding never panics, whatever the bytes: every failure is a [`ChunkError`]
//!   naming the chunk index and the byte offset.
//! - Only frames inside the committed range of a slot whose header CRC *and* records
//!   CRC verify are ever returned; their ordinals are dense from the slot's base
//!   ordinal.
//! - A slot's commit sequence has the parity of its position (slot `s % 2`).
//! - `committed_length` never exceeds [`MANIFEST_CHUNK_RECORD_BYTES_MAX`], so a header
//!   can never make a reader look past the largest chunk.

use crate::codec::{DecodeError, Reader, crc32};
use crate::limits::{
    MANIFEST_CHUNK_HEADER_AREA_BYTES, MANIFEST_CHUNK_RECORD_BYTES_MAX, MANIFEST_CHUNK_RECORDS_MAX,
    MANIFEST_CHUNK_SLOT_BYTES, MANIFEST_CHUNK_SLOT_FIELDS_BYTES,
    MANIFEST_RECORD_FRAME_HEADER_BYTES,
};
use crate::manifest::record::{DecodedFrame, decode_frame};
use bytes::{BufMut, Bytes};
use thiserror::Error;

/// Magic at the start of each header slot: the bytes `AOF2MCHK`.
pub const CHUNK_MAGIC: u64 = u64::from_le_bytes(*b"AOF2MCHK");
/// Version of the chunk layout written by this build.
pub const CHUNK_VERSION: u16 = 1;
/// Suffix of a chunk file name.
pub const CHUNK_FILE_SUFFIX: &str = ".mlog";
/// Suffix of a chunk file being created (before its rename).
pub const CHUNK_TEMP_FILE_SUFFIX: &str = ".mlog.tmp";

const FLAG_SEALED: u16 = 1 << 0;
const FLAG_UPLOADED: u16 = 1 << 1;
const FLAGS_KNOWN: u16 = FLAG_SEALED | FLAG_UPLOADED;

const OFFSET_MAGIC: usize = 0;
const OFFSET_VERSION: usize = OFFSET_MAGIC + 8;
const OFFSET_FLAGS: usize = OFFSET_VERSION + 2;
const OFFSET_CHUNK_INDEX: usize = OFFSET_FLAGS + 2;
const OFFSET_BASE_ORDINAL: usize = OFFSET_CHUNK_INDEX + 8;
const OFFSET_COMMIT_SEQUENCE: usize = OFFSET_BASE_ORDINAL + 8;
const OFFSET_COMMITTED_LENGTH: usize = OFFSET_COMMIT_SEQUENCE + 8;
const OFFSET_RECORD_COUNT: usize = OFFSET_COMMITTED_LENGTH + 4;
const OFFSET_RECORDS_CRC: usize = OFFSET_RECORD_COUNT + 4;
const OFFSET_HEADER_CRC: usize = OFFSET_RECORDS_CRC + 4;
const SLOT_FIELDS_END: usize = OFFSET_HEADER_CRC + 4;

const _: () = assert!(SLOT_FIELDS_END == MANIFEST_CHUNK_SLOT_FIELDS_BYTES as usize);
const _: () = assert!(OFFSET_HEADER_CRC == 48);
const _: () = assert!(MANIFEST_CHUNK_HEADER_AREA_BYTES == 2 * MANIFEST_CHUNK_SLOT_BYTES);

/// The file name of chunk `chunk_index`: 20 decimal digits and `.mlog`.
#[must_use]
pub fn chunk_file_name(chunk_index: u64) -> String {
    format!("{chunk_index:020}{CHUNK_FILE_SUFFIX}")
}

/// The temporary name chunk `chunk_index` has while it is being created.
#[must_use]
pub fn chunk_temp_file_name(chunk_index: u64) -> String {
    format!("{chunk_index:020}{CHUNK_TEMP_FILE_SUFFIX}")
}

/// The chunk index of a chunk file name, or `None` for any other name (temporary
/// files included), so a directory listing can be filtered safely.
#[must_use]
pub fn parse_chunk_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(CHUNK_FILE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Byte offset of header slot `slot` (0 or 1) in a chunk file.
#[must_use]
pub fn slot_offset(slot: u8) -> u64 {
    assert!(slot < 2, "a chunk has two slots");
    u64::from(slot) * u64::from(MANIFEST_CHUNK_SLOT_BYTES)
}

/// The flags of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkFlags {
    /// No more records will be committed to this chunk: it is ready for upload.
    pub sealed: bool,
    /// The chunk is held by Tier 2. (Reserved for the upload path; this build's
    /// writer never sets it.)
    pub uploaded: bool,
}

impl ChunkFlags {
    #[must_use]
    pub fn to_u16(self) -> u16 {
        let mut flags = 0;
        if self.sealed {
            flags |= FLAG_SEALED;
        }
        if self.uploaded {
            flags |= FLAG_UPLOADED;
        }
        flags
    }

    /// `None` when an unknown bit is set.
    #[must_use]
    pub fn from_u16(flags: u16) -> Option<Self> {
        if flags & !FLAGS_KNOWN != 0 {
            return None;
        }
        Some(ChunkFlags {
            sealed: flags & FLAG_SEALED != 0,
            uploaded: flags & FLAG_UPLOADED != 0,
        })
    }
}

/// The fields of one header slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotHeader {
    pub flags: ChunkFlags,
    pub chunk_index: u64,
    pub base_ordinal: u64,
    pub commit_sequence: u64,
    pub committed_length: u32,
    pub record_count: u32,
    pub records_crc: u32,
}

impl SlotHeader {
    /// The slot written when a chunk is created: sequence 0, nothing committed.
    #[must_use]
    pub fn empty(chunk_index: u64, base_ordinal: u64) -> Self {
        SlotHeader {
            flags: ChunkFlags::default(),
            chunk_index,
            base_ordinal,
            commit_sequence: 0,
            committed_length: 0,
            record_count: 0,
            records_crc: crc32(&[]),
        }
    }

    /// Which slot (0 or 1) this header is written to: `commit_sequence % 2`.
    #[must_use]
    pub fn slot(&self) -> u8 {
        u8::try_from(self.commit_sequence % 2).expect("a remainder of 2 fits u8")
    }

    /// Byte offset of this header's slot.
    #[must_use]
    pub fn slot_offset(&self) -> u64 {
        slot_offset(self.slot())
    }

    /// Byte offset just past the committed records.
    #[must_use]
    pub fn committed_end(&self) -> u64 {
        u64::from(MANIFEST_CHUNK_HEADER_AREA_BYTES) + u64::from(self.committed_length)
    }

    /// The ordinal one past the last committed record.
    #[must_use]
    pub fn end_ordinal(&self) -> u64 {
        self.base_ordinal + u64::from(self.record_count)
    }

    /// Writes the whole 512-byte slot (fields, header CRC, zero padding).
    pub fn encode(&self, buf: &mut impl BufMut) {
        assert!(
            self.committed_length <= MANIFEST_CHUNK_RECORD_BYTES_MAX,
            "committed length over the chunk limit"
        );
        assert!(self.record_count <= MANIFEST_CHUNK_RECORDS_MAX);
        let mut fields = [0u8; OFFSET_HEADER_CRC];
        fields[OFFSET_MAGIC..OFFSET_VERSION].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
        fields[OFFSET_VERSION..OFFSET_FLAGS].copy_from_slice(&CHUNK_VERSION.to_le_bytes());
        fields[OFFSET_FLAGS..OFFSET_CHUNK_INDEX]
            .copy_from_slice(&self.flags.to_u16().to_le_bytes());
        fields[OFFSET_CHUNK_INDEX..OFFSET_BASE_ORDINAL]
            .copy_from_slice(&self.chunk_index.to_le_bytes());
        fields[OFFSET_BASE_ORDINAL..OFFSET_COMMIT_SEQUENCE]
            .copy_from_slice(&self.base_ordinal.to_le_bytes());
        fields[OFFSET_COMMIT_SEQUENCE..OFFSET_COMMITTED_LENGTH]
            .copy_from_slice(&self.commit_sequence.to_le_bytes());
        fields[OFFSET_COMMITTED_LENGTH..OFFSET_RECORD_COUNT]
            .copy_from_slice(&self.committed_length.to_le_bytes());
        fields[OFFSET_RECORD_COUNT..OFFSET_RECORDS_CRC]
            .copy_from_slice(&self.record_count.to_le_bytes());
        fields[OFFSET_RECORDS_CRC..OFFSET_HEADER_CRC]
            .copy_from_slice(&self.records_crc.to_le_bytes());
        buf.put_slice(&fields);
        buf.put_u32_le(crc32(&fields));
        buf.put_bytes(0, (MANIFEST_CHUNK_SLOT_BYTES as usize) - SLOT_FIELDS_END);
    }

    /// The encoded 512-byte slot.
    #[must_use]
    pub fn to_slot_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_CHUNK_SLOT_BYTES as usize);
        self.encode(&mut out);
        assert_eq!(out.len(), MANIFEST_CHUNK_SLOT_BYTES as usize);
        out
    }

    /// Decodes slot `slot` of a chunk file whose bytes are `file` (the whole file, or
    /// at least its header area), expecting chunk `chunk_index`.
    ///
    /// Errors: the file is too short, or the magic, version, header CRC, flags, chunk
    /// index, sequence parity, padding or committed length is wrong.
    pub fn decode(file: &[u8], slot: u8, chunk_index: u64) -> Result<Self, DecodeError> {
        const WHAT: &str = "manifest chunk slot";
        let start = slot_offset(slot);
        let start_usize = usize::try_from(start).expect("slot offsets are below 1024");
        let available = file.get(start_usize..).unwrap_or(&[]);
        let mut reader = Reader::new(available, start, WHAT);
        let sector = reader.bytes(MANIFEST_CHUNK_SLOT_BYTES as usize)?;
        let mut reader = Reader::new(sector, start, WHAT);

        reader.expect_magic(CHUNK_MAGIC)?;
        debug_assert_eq!(reader.offset(), start + OFFSET_VERSION as u64);
        reader.expect_version(CHUNK_VERSION)?;
        let stored = u32::from_le_bytes(
            sector[OFFSET_HEADER_CRC..SLOT_FIELDS_END]
                .try_into()
                .expect("4 bytes"),
        );
        let computed = crc32(&sector[..OFFSET_HEADER_CRC]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                offset: start + OFFSET_HEADER_CRC as u64,
                stored,
                computed,
            });
        }
        let flags_at = reader.offset();
        let flags = ChunkFlags::from_u16(reader.u16()?).ok_or_else(|| DecodeError::Invalid {
            what: WHAT,
            offset: flags_at,
            reason: "unknown flag bits".to_owned(),
        })?;
        let index_at = reader.offset();
        let found_index = reader.u64()?;
        if found_index != chunk_index {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: index_at,
                reason: format!("slot names chunk {found_index}, the file is chunk {chunk_index}"),
            });
        }
        let base_ordinal = reader.u64()?;
        let sequence_at = reader.offset();
        let commit_sequence = reader.u64()?;
        if commit_sequence % 2 != u64::from(slot) {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: sequence_at,
                reason: format!("commit sequence {commit_sequence} does not belong in slot {slot}"),
            });
        }
        let length_at = reader.offset();
        let committed_length = reader.u32()?;
        if committed_length > MANIFEST_CHUNK_RECORD_BYTES_MAX {
            return Err(DecodeError::LimitExceeded {
                what: WHAT,
                offset: length_at,
                length: u64::from(committed_length),
                limit: u64::from(MANIFEST_CHUNK_RECORD_BYTES_MAX),
            });
        }
        let count_at = reader.offset();
        let record_count = reader.u32()?;
        if u64::from(record_count) * u64::from(MANIFEST_RECORD_FRAME_HEADER_BYTES)
            > u64::from(committed_length)
        {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: count_at,
                reason: format!("{record_count} records cannot fit in {committed_length} bytes"),
            });
        }
        if base_ordinal.checked_add(u64::from(record_count)).is_none() {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: count_at,
                reason: "ordinals overflow u64".to_owned(),
            });
        }
        let records_crc = reader.u32()?;
        let _header_crc = reader.u32()?;
        if let Some(position) = reader.rest().iter().position(|b| *b != 0) {
            return Err(DecodeError::Invalid {
                what: WHAT,
                offset: reader.offset() + position as u64,
                reason: "slot padding is not zero".to_owned(),
            });
        }
        Ok(SlotHeader {
            flags,
            chunk_index,
            base_ordinal,
            commit_sequence,
            committed_length,
            record_count,
            records_crc,
        })
    }
}

/// Writes the 1024-byte header area of a new chunk: `initial` in slot 0, slot 1 zero.
pub fn encode_header_area(initial: &SlotHeader, buf: &mut impl BufMut) {
    assert_eq!(initial.slot(), 0, "a new chunk starts with slot 0");
    assert_eq!(initial.committed_length, 0, "a new chunk has no records");
    initial.encode(buf);
    buf.put_bytes(0, MANIFEST_CHUNK_SLOT_BYTES as usize);
}

/// Why (part of) a chunk could not be replayed. Every variant names the chunk and a
/// byte offset in its file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error(
        "manifest chunk {chunk_index} at byte 0: no header slot is valid (slot 0: {slot0}; slot 1: {slot1})"
    )]
    NoValidSlot {
        chunk_index: u64,
        slot0: DecodeError,
        slot1: DecodeError,
    },
    #[error(
        "manifest chunk {chunk_index} at byte {offset}: the committed records of slot {slot} (commit {commit_sequence}) fail their checksum"
    )]
    RecordsChecksum {
        chunk_index: u64,
        /// The first record frame that does not verify (or where the bytes end).
        offset: u64,
        slot: u8,
        commit_sequence: u64,
    },
    #[error("manifest chunk {chunk_index} at byte {offset}: bad record frame: {source}")]
    BadFrame {
        chunk_index: u64,
        offset: u64,
        source: DecodeError,
    },
    #[error(
        "manifest chunk {chunk_index} at byte {offset}: record ordinal {found}, expected {expected}"
    )]
    OrdinalMismatch {
        chunk_index: u64,
        offset: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "manifest chunk {chunk_index} at byte {offset}: the header says {expected} records, the committed bytes hold {found}"
    )]
    RecordCountMismatch {
        chunk_index: u64,
        offset: u64,
        expected: u32,
        found: u32,
    },
    #[error(
        "manifest chunk {chunk_index} at byte {offset}: the chunk is not sealed although chunk {next_chunk_index} follows it; its last commit is lost"
    )]
    NotSealed {
        chunk_index: u64,
        /// The slot that was used (the newer one is the one lost).
        offset: u64,
        next_chunk_index: u64,
    },
    #[error(
        "manifest chunk {chunk_index} at byte {offset}: records are missing before ordinal {found} (expected {expected} next)"
    )]
    OrdinalGap {
        chunk_index: u64,
        offset: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "manifest chunk {chunk_index} at byte {offset}: record ordinal {found} was already replayed (expected {expected} next); skipped"
    )]
    OrdinalOverlap {
        chunk_index: u64,
        offset: u64,
        expected: u64,
        found: u64,
    },
}

impl ChunkError {
    /// The chunk the error is about.
    #[must_use]
    pub fn chunk_index(&self) -> u64 {
        match self {
            ChunkError::NoValidSlot { chunk_index, .. }
            | ChunkError::RecordsChecksum { chunk_index, .. }
            | ChunkError::BadFrame { chunk_index, .. }
            | ChunkError::OrdinalMismatch { chunk_index, .. }
            | ChunkError::RecordCountMismatch { chunk_index, .. }
            | ChunkError::NotSealed { chunk_index, .. }
            | ChunkError::OrdinalGap { chunk_index, .. }
            | ChunkError::OrdinalOverlap { chunk_index, .. } => *chunk_index,
        }
    }

    /// The byte offset in the chunk file the error is about.
    #[must_use]
    pub fn offset(&self) -> u64 {
        match self {
            ChunkError::NoValidSlot { .. } => 0,
            ChunkError::RecordsChecksum { offset, .. }
            | ChunkError::BadFrame { offset, .. }
            | ChunkError::OrdinalMismatch { offset, .. }
            | ChunkError::RecordCountMismatch { offset, .. }
            | ChunkError::NotSealed { offset, .. }
            | ChunkError::OrdinalGap { offset, .. }
            | ChunkError::OrdinalOverlap { offset, .. } => *offset,
        }
    }
}

/// One frame of a decoded chunk and where it starts in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFrame {
    pub offset: u64,
    pub frame: DecodedFrame,
}

impl ChunkFrame {
    /// The frame's ordinal.
    #[must_use]
    pub fn ordinal(&self) -> u64 {
        match &self.frame {
            DecodedFrame::Known(known) => known.ordinal,
            DecodedFrame::Unknown { ordinal, .. } => *ordinal,
        }
    }

    /// Byte offset just past the frame.
    #[must_use]
    pub fn end_offset(&self) -> u64 {
        let length = match &self.frame {
            DecodedFrame::Known(known) => known.frame_length,
            DecodedFrame::Unknown { frame_length, .. } => *frame_length,
        };
        self.offset + u64::from(length)
    }
}

/// What a chunk file holds, as far as it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedChunk {
    pub chunk_index: u64,
    /// The slot whose records verified; `None` when no slot did.
    pub commit: Option<SlotHeader>,
    /// The committed frames, in order, ordinals dense from `commit.base_ordinal`. Cut
    /// short at the first frame that fails to decode (see `corruptions`).
    pub frames: Vec<ChunkFrame>,
    /// Bytes after the committed records: written by a commit that did not complete.
    pub trimmed_bytes: u64,
    /// Corruption found in this chunk (empty for a clean chunk or a mere crash).
    pub corruptions: Vec<ChunkError>,
}

impl DecodedChunk {
    /// Checks the decoder's postconditions.
    pub fn check_invariants(&self) {
        match &self.commit {
            None => {
                assert!(self.frames.is_empty(), "frames without a verified slot");
                assert!(
                    !self.corruptions.is_empty(),
                    "no slot verified but no corruption"
                );
            }
            Some(commit) => {
                assert_eq!(commit.chunk_index, self.chunk_index);
                assert!(self.frames.len() <= commit.record_count as usize);
                let mut expected_offset = u64::from(MANIFEST_CHUNK_HEADER_AREA_BYTES);
                for (position, frame) in self.frames.iter().enumerate() {
                    assert_eq!(frame.ordinal(), commit.base_ordinal + position as u64);
                    assert_eq!(frame.offset, expected_offset);
                    expected_offset = frame.end_offset();
                }
                assert!(expected_offset <= commit.committed_end());
            }
        }
        for corruption in &self.corruptions {
            assert_eq!(corruption.chunk_index(), self.chunk_index);
        }
    }
}

/// Decodes chunk `chunk_index` from the bytes of its file. Never fails and never
/// panics: what could not be trusted is reported in [`DecodedChunk::corruptions`].
///
/// Rules: of the slots whose header verifies, the one with the highest commit sequence
/// whose records CRC also verifies is used; each slot that verifies but whose records
/// do not is a corruption (reported at its first bad frame), and the older slot is
/// tried next. A slot that does not verify at all is ignored silently: that is what a
/// crash during a slot write leaves (or a slot never written yet). Bytes after the
/// committed length are trimmed. Frames are then decoded one by one; the first that
/// fails to decode, or whose ordinal is not the next one, stops the chunk.
#[must_use]
pub fn decode_chunk(chunk_index: u64, file: &[u8]) -> DecodedChunk {
    let mut decoded = DecodedChunk {
        chunk_index,
        commit: None,
        frames: Vec::new(),
        trimmed_bytes: 0,
        corruptions: Vec::new(),
    };
    let slot0 = SlotHeader::decode(file, 0, chunk_index);
    let slot1 = SlotHeader::decode(file, 1, chunk_index);
    let mut valid: Vec<SlotHeader> = [&slot0, &slot1]
        .into_iter()
        .filter_map(|slot| slot.as_ref().ok().copied())
        .collect();
    if valid.is_empty() {
        decoded.corruptions.push(ChunkError::NoValidSlot {
            chunk_index,
            slot0: slot0.expect_err("no slot is valid"),
            slot1: slot1.expect_err("no slot is valid"),
        });
        decoded.check_invariants();
        return decoded;
    }
    valid.sort_by_key(|header| std::cmp::Reverse(header.commit_sequence));
    if valid.len() == 2 {
        assert_ne!(
            valid[0].commit_sequence, valid[1].commit_sequence,
            "slot parity makes sequences distinct"
        );
    }

    let header_area = MANIFEST_CHUNK_HEADER_AREA_BYTES as usize;
    for header in valid {
        let end = header_area + header.committed_length as usize;
        let verifies = file
            .get(header_area..end)
            .is_some_and(|records| crc32(records) == header.records_crc);
        if verifies {
            decoded.commit = Some(header);
            break;
        }
        let (_, stopped) = scan_frames(file, &header);
        decoded.corruptions.push(ChunkError::RecordsChecksum {
            chunk_index,
            offset: stopped.map_or_else(
                || end.min(file.len().max(header_area)) as u64,
                |error| error.offset(),
            ),
            slot: header.slot(),
            commit_sequence: header.commit_sequence,
        });
    }

    let Some(header) = decoded.commit else {
        decoded.check_invariants();
        return decoded;
    };
    let (frames, stopped) = scan_frames(file, &header);
    decoded.frames = frames;
    if let Some(error) = stopped {
        decoded.corruptions.push(error);
    } else if decoded.frames.len() != header.record_count as usize {
        decoded.corruptions.push(ChunkError::RecordCountMismatch {
            chunk_index,
            offset: header.committed_end(),
            expected: header.record_count,
            found: u32::try_from(decoded.frames.len()).expect("frames are below the record limit"),
        });
    }
    decoded.trimmed_bytes = (file.len() as u64).saturating_sub(header.committed_end());
    decoded.check_invariants();
    decoded
}

/// Decodes the frames in `header`'s committed range (as far as `file` holds it),
/// checking ordinals. Returns the frames before the first failure, and the failure.
fn scan_frames(file: &[u8], header: &SlotHeader) -> (Vec<ChunkFrame>, Option<ChunkError>) {
    let header_area = MANIFEST_CHUNK_HEADER_AREA_BYTES as usize;
    let end = (header_area + header.committed_length as usize).min(file.len());
    let records = file.get(header_area..end).unwrap_or(&[]);
    let mut reader = Reader::new(
        records,
        u64::from(MANIFEST_CHUNK_HEADER_AREA_BYTES),
        "manifest record frame",
    );
    let mut frames = Vec::new();
    let mut expected = header.base_ordinal;
    let committed_end = header.committed_end();
    while reader.offset() < committed_end {
        let offset = reader.offset();
        let frame = match decode_frame(&mut reader) {
            Ok(frame) => ChunkFrame { offset, frame },
            Err(source) => {
                let error = ChunkError::BadFrame {
                    chunk_index: header.chunk_index,
                    offset,
                    source,
                };
                return (frames, Some(error));
            }
        };
        if frame.ordinal() != expected {
            let error = ChunkError::OrdinalMismatch {
                chunk_index: header.chunk_index,
                offset,
                expected,
                found: frame.ordinal(),
            };
            return (frames, Some(error));
        }
        if frames.len() >= header.record_count as usize {
            let error = ChunkError::RecordCountMismatch {
                chunk_index: header.chunk_index,
                offset,
                expected: header.record_count,
                found: header.record_count.saturating_add(1),
            };
            return (frames, Some(error));
        }
        expected += 1;
        frames.push(frame);
    }
    (frames, None)
}

/// Of two reads of the same chunk file, the one to trust. Equal reads are the disk's
/// bytes. Reads that differ mean one returned flipped bits: a flip can only break a
/// checksum, never make one verify, so the read that decodes more frames (then the
/// one with fewer corruptions) is the disk's. Returns `(bytes, reads_agreed)`.
#[must_use]
pub fn more_trusted_chunk_read(chunk_index: u64, first: Bytes, second: Bytes) -> (Bytes, bool) {
    if first == second {
        return (first, true);
    }
    let rank = |bytes: &[u8]| {
        let decoded = decode_chunk(chunk_index, bytes);
        (
            decoded.frames.len(),
            std::cmp::Reverse(decoded.corruptions.len()),
        )
    };
    if rank(&second) > rank(&first) {
        (second, false)
    } else {
        (first, false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SegmentId;
    use crate::codec::crc32_parts;
    use crate::manifest::record::{ManifestRecord, RecordFrame};
    use proptest::prelude::*;

    /// Builds a chunk file by hand: header area, frames, and commits at the given
    /// record counts (each commit writes the next slot).
    pub(crate) fn build_chunk(
        chunk_index: u64,
        base_ordinal: u64,
        records: &[ManifestRecord],
        commits: &[usize],
        sealed: bool,
    ) -> Vec<u8> {
        let mut file = Vec::new();
        encode_header_area(&SlotHeader::empty(chunk_index, base_ordinal), &mut file);
        let mut ends = vec![0usize];
        for (position, record) in records.iter().enumerate() {
            record.encode_frame(
                base_ordinal + position as u64,
                1000 + position as u64,
                &mut file,
            );
            ends.push(file.len() - 1024);
        }
        for (sequence, &count) in commits.iter().enumerate() {
            let header = SlotHeader {
                flags: ChunkFlags {
                    sealed: sealed && sequence + 1 == commits.len(),
                    uploaded: false,
                },
                chunk_index,
                base_ordinal,
                commit_sequence: sequence as u64 + 1,
                committed_length: ends[count] as u32,
                record_count: count as u32,
                records_crc: crc32(&file[1024..1024 + ends[count]]),
            };
            let at = header.slot_offset() as usize;
            file[at..at + 512].copy_from_slice(&header.to_slot_bytes());
        }
        file
    }

    pub(crate) fn sample_records(count: usize) -> Vec<ManifestRecord> {
        (0..count)
            .map(|i| ManifestRecord::CompressionStarted {
                segment_id: SegmentId(i as u64),
                job_id: i as u64 * 7,
            })
            .collect()
    }

    fn known(chunk: &DecodedChunk) -> Vec<ManifestRecord> {
        chunk
            .frames
            .iter()
            .map(|frame| match &frame.frame {
                DecodedFrame::Known(RecordFrame { record, .. }) => record.clone(),
                DecodedFrame::Unknown { .. } => panic!("unexpected unknown frame"),
            })
            .collect()
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(chunk_file_name(7), "00000000000000000007.mlog");
        assert_eq!(parse_chunk_file_name(&chunk_file_name(7)), Some(7));
        assert_eq!(
            parse_chunk_file_name(&chunk_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "7.mlog",
            "00000000000000000007.mlog.tmp",
            "0000000000000000000x.mlog",
            "99999999999999999999.mlog",
            "+0000000000000000007.mlog",
        ] {
            assert_eq!(parse_chunk_file_name(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn slot_round_trip(
            chunk_index in any::<u64>(),
            base_ordinal in 0..u64::MAX / 2,
            commit_sequence in any::<u64>(),
            committed_length in 0..=MANIFEST_CHUNK_RECORD_BYTES_MAX,
            records_crc in any::<u32>(),
            sealed in any::<bool>(),
            uploaded in any::<bool>(),
            count_fraction in 0u32..=100,
        ) {
            let header = SlotHeader {
                flags: ChunkFlags { sealed, uploaded },
                chunk_index,
                base_ordinal,
                commit_sequence,
                committed_length,
                record_count: committed_length / 32 * count_fraction / 100,
                records_crc,
            };
            let bytes = header.to_slot_bytes();
            let mut file = vec![0u8; 1024];
            let at = header.slot_offset() as usize;
            file[at..at + 512].copy_from_slice(&bytes);
            prop_assert_eq!(SlotHeader::decode(&file, header.slot(), chunk_index), Ok(header));
            // The other slot is zero: invalid.
            prop_assert!(SlotHeader::decode(&file, 1 - header.slot(), chunk_index).is_err());
            // The wrong chunk index is refused.
            prop_assert!(SlotHeader::decode(&file, header.slot(), chunk_index ^ 1).is_err());
        }

        #[test]
        fn any_slot_bit_flip_is_detected(bit in 0usize..512 * 8, sequence in 0u64..8) {
            let header = SlotHeader {
                commit_sequence: sequence,
                committed_length: 40,
                record_count: 1,
                ..SlotHeader::empty(3, 9)
            };
            let mut file = vec![0u8; 1024];
            let at = header.slot_offset() as usize;
            file[at..at + 512].copy_from_slice(&header.to_slot_bytes());
            file[at + bit / 8] ^= 1 << (bit % 8);
            prop_assert!(SlotHeader::decode(&file, header.slot(), 3).is_err(), "bit {}", bit);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let decoded = decode_chunk(0, &bytes);
            decoded.check_invariants();
        }
    }

    #[test]
    fn newest_verified_slot_wins_and_tail_is_trimmed() {
        let records = sample_records(5);
        let mut file = build_chunk(4, 100, &records, &[2, 5], true);
        file.extend_from_slice(&[0xAB; 37]); // an uncommitted partial write
        let decoded = decode_chunk(4, &file);
        assert_eq!(decoded.corruptions, vec![]);
        let commit = decoded.commit.unwrap();
        assert_eq!(commit.commit_sequence, 2);
        assert!(commit.flags.sealed);
        assert_eq!(known(&decoded), records);
        assert_eq!(decoded.trimmed_bytes, 37);
        assert_eq!(decoded.frames[0].ordinal(), 100);
    }

    #[test]
    fn torn_newest_slot_falls_back_silently() {
        let records = sample_records(5);
        let mut file = build_chunk(4, 0, &records, &[2, 5], false);
        // Tear slot 0 (sequence 2): a crash mid-write.
        file[20] ^= 0xFF;
        let decoded = decode_chunk(4, &file);
        assert_eq!(
            decoded.corruptions,
            vec![],
            "a torn slot is a crash, not corruption"
        );
        assert_eq!(decoded.commit.unwrap().commit_sequence, 1);
        assert_eq!(known(&decoded), records[..2].to_vec());
        assert_eq!(
            decoded.trimmed_bytes,
            (file.len() - 1024) as u64 - u64::from(decoded.commit.unwrap().committed_length)
        );
    }

    #[test]
    fn bad_records_under_newest_slot_are_corruption_with_fallback() {
        let records = sample_records(5);
        let mut file = build_chunk(4, 0, &records, &[2, 5], false);
        // Corrupt the fourth record: inside slot 0's range, outside slot 1's.
        let frame_length = records[0].frame_length() as usize;
        let fourth = 1024 + 3 * frame_length;
        file[fourth + 40] ^= 1;
        let decoded = decode_chunk(4, &file);
        assert_eq!(
            decoded.corruptions,
            vec![ChunkError::RecordsChecksum {
                chunk_index: 4,
                offset: fourth as u64,
                slot: 0,
                commit_sequence: 2,
            }]
        );
        assert_eq!(decoded.commit.unwrap().commit_sequence, 1);
        assert_eq!(known(&decoded), records[..2].to_vec());
        let message = decoded.corruptions[0].to_string();
        assert!(message.contains("chunk 4 at byte"), "{message}");
    }

    #[test]
    fn nothing_verifies_nothing_is_returned() {
        let records = sample_records(3);
        let mut file = build_chunk(4, 0, &records, &[3], false);
        file[1024 + 5] ^= 1; // breaks slot 1's records; slot 0 is the empty commit
        let decoded = decode_chunk(4, &file);
        // Slot 0 (sequence 0, empty) still verifies: nothing applied, one corruption.
        assert_eq!(decoded.corruptions.len(), 1);
        assert_eq!(decoded.frames, vec![]);
        // Now kill slot 0 too.
        file[0] ^= 1;
        let decoded = decode_chunk(4, &file);
        assert_eq!(decoded.commit, None);
        assert_eq!(decoded.corruptions.len(), 1);
        let decoded = decode_chunk(4, &[]);
        assert!(matches!(
            decoded.corruptions[..],
            [ChunkError::NoValidSlot { chunk_index: 4, .. }]
        ));
    }

    #[test]
    fn ordinals_must_be_dense() {
        let records = sample_records(3);
        let mut file = Vec::new();
        encode_header_area(&SlotHeader::empty(0, 0), &mut file);
        records[0].encode_frame(0, 1, &mut file);
        records[1].encode_frame(2, 1, &mut file); // skips ordinal 1
        let length = (file.len() - 1024) as u32;
        let header = SlotHeader {
            commit_sequence: 1,
            committed_length: length,
            record_count: 2,
            records_crc: crc32(&file[1024..]),
            ..SlotHeader::empty(0, 0)
        };
        file[512..1024].copy_from_slice(&header.to_slot_bytes());
        let decoded = decode_chunk(0, &file);
        assert_eq!(decoded.frames.len(), 1);
        assert!(matches!(
            decoded.corruptions[..],
            [ChunkError::OrdinalMismatch {
                expected: 1,
                found: 2,
                ..
            }]
        ));
    }

    #[test]
    fn unknown_record_types_are_returned_for_skipping() {
        let records = sample_records(3);
        let mut file = Vec::new();
        encode_header_area(&SlotHeader::empty(0, 0), &mut file);
        for (ordinal, record) in records.iter().enumerate() {
            let mut frame = record.to_frame(ordinal as u64, 5);
            if ordinal == 1 {
                frame[8..10].copy_from_slice(&4242u16.to_le_bytes());
                let crc = crc32_parts(&[&frame[8..32], &frame[32..]]);
                frame[4..8].copy_from_slice(&crc.to_le_bytes());
            }
            file.extend_from_slice(&frame);
        }
        let header = SlotHeader {
            commit_sequence: 1,
            committed_length: (file.len() - 1024) as u32,
            record_count: 3,
            records_crc: crc32(&file[1024..]),
            ..SlotHeader::empty(0, 0)
        };
        file[512..1024].copy_from_slice(&header.to_slot_bytes());
        let decoded = decode_chunk(0, &file);
        assert_eq!(decoded.corruptions, vec![]);
        assert_eq!(decoded.frames.len(), 3);
        assert!(matches!(
            decoded.frames[1].frame,
            DecodedFrame::Unknown {
                record_type: 4242,
                ordinal: 1,
                ..
            }
        ));
    }
}
