//! Decompressing and checking artifact frames.
//!
//! **Invariants**
//! - A frame is decompressed into a buffer of exactly the raw size the index records;
//!   zstd cannot write past it, so a frame claiming more is an error, not an allocation.
//! - Bytes are returned only after their length and CRC32 match the index.

use super::ArtifactError;
use super::index::{ArtifactIndex, FrameLocation, TailDecode};
use crate::codec::{DecodeError, crc32};
use crate::limits::{ARTIFACT_FRAME_COMPRESSED_BYTES_MAX, ARTIFACT_FRAME_RAW_BYTES_MAX};
use zstd::zstd_safe::{self, DCtx, zstd_sys::ZSTD_ErrorCode};

/// Decompresses one frame, `compressed` being the bytes at
/// `location.compressed_range()` of the artifact, and checks its size and CRC32.
/// Returns the segment bytes at `location.raw_range()`.
pub fn decode_frame(compressed: &[u8], location: &FrameLocation) -> Result<Vec<u8>, ArtifactError> {
    let frame = location.frame;
    let offset = location.compressed_offset;
    let corrupt = |reason: String| ArtifactError::FrameCorrupt {
        frame,
        offset,
        reason,
    };
    if location.raw_size > ARTIFACT_FRAME_RAW_BYTES_MAX {
        return Err(DecodeError::LimitExceeded {
            what: "artifact frame raw size",
            offset,
            length: u64::from(location.raw_size),
            limit: u64::from(ARTIFACT_FRAME_RAW_BYTES_MAX),
        }
        .into());
    }
    if location.compressed_size > ARTIFACT_FRAME_COMPRESSED_BYTES_MAX {
        return Err(DecodeError::LimitExceeded {
            what: "artifact frame compressed size",
            offset,
            length: u64::from(location.compressed_size),
            limit: u64::from(ARTIFACT_FRAME_COMPRESSED_BYTES_MAX),
        }
        .into());
    }
    if compressed.len() as u64 != u64::from(location.compressed_size) {
        return Err(corrupt(format!(
            "got {} compressed bytes, the index records {}",
            compressed.len(),
            location.compressed_size
        )));
    }
    // Only a current zstd frame: no skippable frame, no legacy format.
    let magic = compressed
        .first_chunk::<4>()
        .map(|bytes| u32::from_le_bytes(*bytes));
    if magic != Some(zstd_safe::MAGICNUMBER) {
        return Err(corrupt(format!("no zstd frame magic (found {magic:#x?})")));
    }
    // Exactly one frame: no trailing frame that would add bytes.
    match zstd_safe::find_frame_compressed_size(compressed) {
        Ok(size) if size == compressed.len() => {}
        Ok(size) => {
            return Err(corrupt(format!(
                "zstd frame is {size} bytes, the index records {}",
                compressed.len()
            )));
        }
        Err(code) => return Err(corrupt(zstd_safe::get_error_name(code).to_string())),
    }
    let mut raw = vec![0u8; location.raw_size as usize];
    let mut context = DCtx::try_create()
        .ok_or_else(|| corrupt("cannot allocate a zstd decompression context".to_string()))?;
    let written = match context.decompress(&mut raw[..], compressed) {
        Ok(written) => written,
        // zstd error results are the negated `ZSTD_ErrorCode`.
        Err(code)
            if 0usize.wrapping_sub(code)
                == ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall as usize =>
        {
            return Err(ArtifactError::FrameTooLarge {
                frame,
                offset,
                raw_size: location.raw_size,
            });
        }
        Err(code) => return Err(corrupt(zstd_safe::get_error_name(code).to_string())),
    };
    if written != raw.len() {
        return Err(corrupt(format!(
            "decompressed to {written} bytes, the index records {}",
            location.raw_size
        )));
    }
    let computed = crc32(&raw);
    if computed != location.raw_crc32 {
        return Err(ArtifactError::FrameChecksum {
            frame,
            offset,
            stored: location.raw_crc32,
            computed,
        });
    }
    Ok(raw)
}

/// Decodes a whole artifact back into the exact segment bytes, checking the index, the
/// seek table and every frame.
pub fn decode_all(artifact: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let index = match ArtifactIndex::decode_tail(artifact, artifact.len() as u64)? {
        TailDecode::Complete(index) => index,
        TailDecode::NeedTail { tail_bytes } => {
            unreachable!(
                "the whole artifact was given, yet the decoder asked for {tail_bytes} tail bytes"
            )
        }
    };
    // Grow frame by frame rather than trusting the segment length up front: every byte
    // reserved is backed by a frame that decompressed and checked.
    let mut segment = Vec::new();
    for location in index.frames() {
        let range = location.compressed_range();
        let compressed = &artifact[range.start as usize..range.end as usize];
        segment.extend_from_slice(&decode_frame(compressed, location)?);
    }
    assert_eq!(
        segment.len() as u64,
        index.segment_raw_bytes(),
        "frames cover the segment"
    );
    Ok(segment)
}
