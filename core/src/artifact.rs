//! The seekable zstd artifact of a sealed segment: the Tier 1 file and the Tier 2 object.
//!
//! A sealed segment file (header, records, footer) is compressed into independent zstd
//! frames that each hold whole records, followed by two zstd skippable frames: our
//! **index** and the standard **seek table** of the Zstandard Seekable Format (written
//! and parsed by `zeekstd`). The stock `zstd -d` skips both skippable frames and turns
//! the artifact back into the exact segment bytes. A cold reader of one record needs
//! only the tail of the object (index + seek table, see [`ArtifactIndex::decode_tail`])
//! and one frame ([`decode_frame`]): two range GETs.
//!
//! ```text
//! [frame 0: header + records] [frame 1: records] ... [frame F-1: records + footer]
//! [index skippable frame (magic 0x184D2A5A)] [seek table skippable frame (0x184D2A5E)]
//! ```
//!
//! docs/format.md draws the index byte by byte.
//!
//! **Invariants**
//! - Every frame holds whole records: frame 0 starts at segment byte 0 (the header),
//!   every later frame starts at a record boundary, the last frame ends at the end of
//!   the segment (the footer). Frames are contiguous in both raw and compressed bytes.
//! - A frame ends at the first record boundary where it holds at least
//!   `frame_raw_bytes_target` raw bytes, or just before a record at least that large,
//!   which then gets a frame of its own (with the header or footer if it is the first
//!   or last record). No frame exceeds
//!   [`ARTIFACT_FRAME_RAW_BYTES_MAX`] raw or [`ARTIFACT_FRAME_COMPRESSED_BYTES_MAX`]
//!   compressed bytes; there are at most [`ARTIFACT_FRAMES_MAX`] frames.
//! - Every byte of the artifact is checked on read: frame bytes by zstd (content
//!   checksum) and by the CRC32 of the raw frame stored in the index; the index by its
//!   own CRC32; the seek table by cross-checking every entry against the index.
//! - Decompression of a frame never writes more than the raw size the index records: a
//!   frame that would decompress to more is an error, not an allocation.
//! - Decoders never panic on any bytes, and check every length against a limit before
//!   allocating.
//! - Encoding is deterministic for a given input, options and zstd version (the
//!   committed golden file pins it).
//!
//! [`ARTIFACT_FRAME_RAW_BYTES_MAX`]: crate::limits::ARTIFACT_FRAME_RAW_BYTES_MAX
//! [`ARTIFACT_FRAME_COMPRESSED_BYTES_MAX`]: crate::limits::ARTIFACT_FRAME_COMPRESSED_BYTES_MAX
//! [`ARTIFACT_FRAMES_MAX`]: crate::limits::ARTIFACT_FRAMES_MAX

mod decode;
mod encode;
mod index;

pub use decode::{decode_all, decode_frame};
pub use encode::{ArtifactOptions, encode};
pub use index::{
    ArtifactIndex, FrameLocation, INDEX_ENTRY_BYTES, INDEX_FRAME_FIXED_BYTES, INDEX_HEADER_BYTES,
    INDEX_MAGIC, INDEX_SKIPPABLE_MAGIC, INDEX_TRAILER_BYTES, INDEX_VERSION, SEEK_TABLE_ENTRY_BYTES,
    SEEK_TABLE_FIXED_BYTES, TailDecode, index_frame_bytes, seek_table_bytes,
};

use crate::codec::DecodeError;
use crate::limits::{ARTIFACT_FRAME_RAW_BYTES_MAX, ARTIFACT_FRAMES_MAX, ARTIFACT_TAIL_PROBE_BYTES};
use thiserror::Error;

/// Where one record starts in a segment file; the encoder takes these sorted.
pub use crate::segment::RecordBoundary;

/// What went wrong while encoding or decoding an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The encoder was given something it must not compress: unsorted or non-dense
    /// record boundaries, an out-of-range option, a frame over a limit.
    #[error("artifact input invalid: {reason}")]
    InvalidInput { reason: String },
    /// zstd failed while compressing (out of memory or a bug).
    #[error("artifact compression failed: {reason}")]
    Compression { reason: String },
    /// The index, the seek table or the tail is malformed or fails its checksum.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A compressed frame is not a valid zstd frame of the recorded size.
    #[error("artifact frame {frame} at byte {offset}: corrupt: {reason}")]
    FrameCorrupt {
        frame: u32,
        offset: u64,
        reason: String,
    },
    /// A frame would decompress to more bytes than the index records; decompression
    /// stopped at that bound.
    #[error(
        "artifact frame {frame} at byte {offset}: decompresses to more than the {raw_size} bytes the index records"
    )]
    FrameTooLarge {
        frame: u32,
        offset: u64,
        raw_size: u32,
    },
    /// A frame decompressed, but its bytes do not match the CRC32 in the index.
    #[error(
        "artifact frame {frame} at byte {offset}: checksum mismatch, stored {stored:#010x}, computed {computed:#010x}"
    )]
    FrameChecksum {
        frame: u32,
        offset: u64,
        stored: u32,
        computed: u32,
    },
}

const _: () = assert!(
    ARTIFACT_FRAME_RAW_BYTES_MAX as usize <= zeekstd::SEEKABLE_MAX_FRAME_SIZE,
    "zeekstd must never cut a frame on its own"
);
const _: () = assert!(
    ARTIFACT_FRAMES_MAX <= zeekstd::SEEKABLE_MAX_FRAMES,
    "every artifact frame count must fit the seekable format"
);
const _: () = assert!(
    index::INDEX_SKIPPABLE_MAGIC & 0xFFFF_FFF0
        == zstd::zstd_safe::zstd_sys::ZSTD_MAGIC_SKIPPABLE_START,
    "the index must sit in a zstd skippable frame"
);
const _: () = assert!(
    index::INDEX_SKIPPABLE_MAGIC != zstd::zstd_safe::zstd_sys::ZSTD_MAGIC_SKIPPABLE_START | 0xE,
    "the index must not use the seek table's skippable magic"
);
const _: () = assert!(
    (ARTIFACT_TAIL_PROBE_BYTES as u64) >= index::tail_bytes_min(),
    "the tail probe must at least hold the tail of a one-frame artifact"
);
