//! Compressing a sealed segment into an artifact.
//!
//! **Invariants**
//! - Frames are cut only at record boundaries (frame 0 also holds the header, the last
//!   frame also holds the footer), so every record lies wholly in one frame.
//! - The artifact written is exactly `ArtifactIndex::artifact_bytes()` long, and
//!   decoding its tail gives back the index returned (checked by tests and, in debug
//!   builds, after every encode).

use super::index::{ArtifactIndex, FrameLocation, TailDecode};
use super::{ArtifactError, RecordBoundary};
use crate::codec::crc32;
use crate::limits::{
    ARTIFACT_COMPRESSION_LEVEL_DEFAULT, ARTIFACT_COMPRESSION_LEVEL_MAX,
    ARTIFACT_COMPRESSION_LEVEL_MIN, ARTIFACT_FRAME_COMPRESSED_BYTES_MAX,
    ARTIFACT_FRAME_RAW_BYTES_MAX, ARTIFACT_FRAME_RAW_BYTES_TARGET,
    ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX, ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN, ARTIFACT_FRAMES_MAX,
    SEGMENT_BYTES_MAX,
};
use std::ops::Range;
use zeekstd::{EncodeOptions, FrameSizePolicy, RawEncoder};

/// How to compress an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactOptions {
    /// Once a frame holds at least this many raw bytes, it ends at the next record
    /// boundary. A record of at least this size gets a frame of its own.
    pub frame_raw_bytes_target: u32,
    /// zstd compression level.
    pub compression_level: i32,
}

impl Default for ArtifactOptions {
    fn default() -> Self {
        ArtifactOptions {
            frame_raw_bytes_target: ARTIFACT_FRAME_RAW_BYTES_TARGET,
            compression_level: ARTIFACT_COMPRESSION_LEVEL_DEFAULT,
        }
    }
}

/// A frame before compression: its raw byte range and the records starting in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedFrame {
    raw: Range<usize>,
    records: Range<usize>,
}

/// Compresses the sealed segment `segment`, whose records start at `records` (sorted,
/// dense offsets, strictly increasing positions), and appends the artifact to `out`.
///
/// Returns the artifact's index; its offsets count from the first byte appended.
/// A segment without records gives one frame holding all its bytes.
pub fn encode(
    segment: &[u8],
    records: &[RecordBoundary],
    options: &ArtifactOptions,
    out: &mut Vec<u8>,
) -> Result<ArtifactIndex, ArtifactError> {
    let invalid = |reason: String| ArtifactError::InvalidInput { reason };
    let target = options.frame_raw_bytes_target;
    if !(ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN..=ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX)
        .contains(&target)
    {
        return Err(invalid(format!(
            "frame target {target} bytes is outside {ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN}..={ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX}"
        )));
    }
    let level = options.compression_level;
    if !(ARTIFACT_COMPRESSION_LEVEL_MIN..=ARTIFACT_COMPRESSION_LEVEL_MAX).contains(&level) {
        return Err(invalid(format!(
            "compression level {level} is outside {ARTIFACT_COMPRESSION_LEVEL_MIN}..={ARTIFACT_COMPRESSION_LEVEL_MAX}"
        )));
    }
    if segment.len() as u64 > SEGMENT_BYTES_MAX {
        return Err(invalid(format!(
            "segment of {} bytes exceeds {SEGMENT_BYTES_MAX}",
            segment.len()
        )));
    }
    check_records(segment.len(), records)?;
    let plan = plan_frames(segment.len(), records, target as usize);
    if plan.len() > ARTIFACT_FRAMES_MAX as usize {
        return Err(invalid(format!(
            "{} frames exceed {ARTIFACT_FRAMES_MAX}: raise the frame target",
            plan.len()
        )));
    }
    if let Some(frame) = plan
        .iter()
        .position(|planned| planned.raw.len() > ARTIFACT_FRAME_RAW_BYTES_MAX as usize)
    {
        return Err(invalid(format!(
            "frame {frame} would hold {} raw bytes, more than {ARTIFACT_FRAME_RAW_BYTES_MAX}",
            plan[frame].raw.len()
        )));
    }

    let start = out.len();
    let frames = compress_frames(segment, records, &plan, level, out)?;
    let first_record_offset = records.first().map_or(0, |record| record.offset);
    let index = ArtifactIndex::from_parts(
        segment.len() as u64,
        records.len() as u64,
        first_record_offset,
        frames.locations,
    )
    .map_err(|error| ArtifactError::Compression {
        reason: format!("encoder built an inconsistent index (a bug): {error}"),
    })?;
    assert_eq!((out.len() - start) as u64, index.frames_compressed_bytes());

    index.encode_index_frame(out);
    let mut serializer = frames.seek_table.into_serializer();
    let seek_start = out.len();
    out.resize(seek_start + serializer.encoded_len(), 0);
    let written = serializer.write_into(&mut out[seek_start..]);
    assert_eq!(
        written,
        serializer.encoded_len(),
        "the buffer holds the whole seek table"
    );
    assert_eq!((out.len() - start) as u64, index.artifact_bytes());
    debug_assert_eq!(
        ArtifactIndex::decode_tail(&out[start..], index.artifact_bytes()),
        Ok(TailDecode::Complete(index.clone())),
        "an encoded tail decodes to the index it was built from"
    );
    Ok(index)
}

/// Checks that records have dense offsets and strictly increasing positions inside the
/// segment (so every record is at least one byte long).
fn check_records(segment_len: usize, records: &[RecordBoundary]) -> Result<(), ArtifactError> {
    let invalid = |reason: String| ArtifactError::InvalidInput { reason };
    for (index, pair) in records.windows(2).enumerate() {
        let (before, after) = (pair[0], pair[1]);
        if before.offset.checked_add(1) != Some(after.offset) {
            return Err(invalid(format!(
                "record {} has offset {}, not {} + 1: offsets must be dense",
                index + 1,
                after.offset,
                before.offset
            )));
        }
        if after.position <= before.position {
            return Err(invalid(format!(
                "record {} at position {} does not follow position {}",
                index + 1,
                after.position,
                before.position
            )));
        }
    }
    if let Some(last) = records.last()
        && last.position >= segment_len as u64
    {
        return Err(invalid(format!(
            "last record at position {} is not inside the {segment_len}-byte segment",
            last.position
        )));
    }
    Ok(())
}

/// Splits the segment into frames. A frame ends at record boundary `i` (never at the
/// first record, so the header stays with it) when it already holds at least `target`
/// bytes, or when record `i` alone is at least `target` bytes long.
fn plan_frames(segment_len: usize, records: &[RecordBoundary], target: usize) -> Vec<PlannedFrame> {
    let position = |record: usize| -> usize {
        records.get(record).map_or(segment_len, |boundary| {
            usize::try_from(boundary.position).expect("checked to be inside the segment")
        })
    };
    let mut plan = vec![];
    let mut frame_start = 0usize;
    let mut frame_first_record = 0usize;
    for record in 1..records.len() {
        let record_start = position(record);
        let record_len = position(record + 1) - record_start;
        if record_start - frame_start >= target || record_len >= target {
            plan.push(PlannedFrame {
                raw: frame_start..record_start,
                records: frame_first_record..record,
            });
            frame_start = record_start;
            frame_first_record = record;
        }
    }
    plan.push(PlannedFrame {
        raw: frame_start..segment_len,
        records: frame_first_record..records.len(),
    });
    assert_eq!(plan[0].raw.start, 0);
    assert_eq!(plan[plan.len() - 1].raw.end, segment_len);
    plan
}

struct CompressedFrames {
    locations: Vec<FrameLocation>,
    seek_table: zeekstd::SeekTable,
}

/// Compresses every planned frame with zeekstd (which also builds the seek table),
/// appending the frames to `out`.
fn compress_frames(
    segment: &[u8],
    records: &[RecordBoundary],
    plan: &[PlannedFrame],
    level: i32,
    out: &mut Vec<u8>,
) -> Result<CompressedFrames, ArtifactError> {
    let compression = |error: zeekstd::Error| ArtifactError::Compression {
        reason: error.to_string(),
    };
    let options = EncodeOptions::try_new()
        .ok_or_else(|| ArtifactError::Compression {
            reason: "cannot allocate a zstd compression context".to_string(),
        })?
        .compression_level(level)
        // zstd's own content checksum, so stock `zstd -d` also verifies every frame.
        .checksum_flag(true)
        // Frames are cut by hand at record boundaries; zeekstd must never cut one.
        .frame_size_policy(FrameSizePolicy::Uncompressed(
            u32::try_from(zeekstd::SEEKABLE_MAX_FRAME_SIZE).expect("1 GiB fits a u32"),
        ));
    let mut encoder: RawEncoder<'_> = options.into_raw_encoder().map_err(compression)?;
    let mut scratch = vec![0u8; zstd::zstd_safe::CCtx::out_size()];
    let mut locations = Vec::with_capacity(plan.len());
    let frames_start = out.len();
    for (frame, planned) in plan.iter().enumerate() {
        let frame_u32 =
            u32::try_from(frame).expect("frame count checked against ARTIFACT_FRAMES_MAX");
        let raw = &segment[planned.raw.clone()];
        let compressed_offset = (out.len() - frames_start) as u64;
        let mut consumed = 0;
        while consumed < raw.len() {
            let progress = encoder
                .compress(&raw[consumed..], &mut scratch)
                .map_err(compression)?;
            assert!(
                progress.in_progress() > 0 || progress.out_progress() > 0,
                "zstd makes progress with a non-empty output buffer"
            );
            out.extend_from_slice(&scratch[..progress.out_progress()]);
            consumed += progress.in_progress();
        }
        loop {
            let progress = encoder.end_frame(&mut scratch).map_err(compression)?;
            out.extend_from_slice(&scratch[..progress.out_progress()]);
            if progress.data_left() == 0 {
                break;
            }
        }
        let seek_table = encoder.seek_table();
        assert_eq!(
            seek_table.num_frames() as usize,
            frame + 1,
            "one seek entry per frame"
        );
        let compressed_size = seek_table.frame_size_comp(frame_u32).map_err(compression)?;
        assert_eq!(
            compressed_offset + compressed_size,
            (out.len() - frames_start) as u64
        );
        assert_eq!(
            seek_table
                .frame_size_decomp(frame_u32)
                .map_err(compression)?,
            raw.len() as u64
        );
        if compressed_size > u64::from(ARTIFACT_FRAME_COMPRESSED_BYTES_MAX) {
            return Err(ArtifactError::Compression {
                reason: format!(
                    "frame {frame} compressed to {compressed_size} bytes, over {ARTIFACT_FRAME_COMPRESSED_BYTES_MAX}"
                ),
            });
        }
        let first_record_offset = records
            .get(planned.records.start)
            .map_or(0, |record| record.offset);
        locations.push(FrameLocation {
            frame: frame_u32,
            first_record_offset,
            record_count: u32::try_from(planned.records.len())
                .expect("a frame holds at most one record per raw byte, and frames are small"),
            raw_offset: planned.raw.start as u64,
            raw_size: u32::try_from(raw.len())
                .expect("checked against ARTIFACT_FRAME_RAW_BYTES_MAX"),
            raw_crc32: crc32(raw),
            compressed_offset,
            compressed_size: u32::try_from(compressed_size)
                .expect("checked against ARTIFACT_FRAME_COMPRESSED_BYTES_MAX"),
        });
    }
    Ok(CompressedFrames {
        locations,
        seek_table: encoder.into_seek_table(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boundaries(positions: &[u64]) -> Vec<RecordBoundary> {
        positions
            .iter()
            .enumerate()
            .map(|(offset, &position)| RecordBoundary {
                offset: 10 + offset as u64,
                position,
            })
            .collect()
    }

    fn raws(plan: &[PlannedFrame]) -> Vec<Range<usize>> {
        plan.iter().map(|planned| planned.raw.clone()).collect()
    }

    #[test]
    fn frames_end_at_the_first_boundary_past_the_target() {
        // Header 0..4, records of 3 bytes at 4, 7, 10, 13, footer 16..20.
        let records = boundaries(&[4, 7, 10, 13]);
        assert_eq!(raws(&plan_frames(20, &records, 8)), vec![0..10, 10..20]);
        assert_eq!(raws(&plan_frames(20, &records, 1000)), vec![0..20]);
    }

    #[test]
    fn a_record_as_large_as_the_target_gets_its_own_frame() {
        // Records: 4..6, 6..16 (10 bytes), 16..18, then footer to 20.
        let records = boundaries(&[4, 6, 16, 18]);
        let plan = plan_frames(20, &records, 8);
        assert_eq!(raws(&plan), vec![0..6, 6..16, 16..20]);
        assert_eq!(plan[1].records, 1..2);
    }

    #[test]
    fn the_header_stays_with_the_first_record() {
        let records = boundaries(&[100, 101]);
        assert_eq!(raws(&plan_frames(103, &records, 1)), vec![0..101, 101..103]);
    }

    #[test]
    fn no_records_gives_one_frame() {
        let plan = plan_frames(7, &[], 1);
        assert_eq!(
            plan,
            vec![PlannedFrame {
                raw: 0..7,
                records: 0..0
            }]
        );
    }

    #[test]
    fn records_must_be_dense_and_increasing_and_inside() {
        let mut records = boundaries(&[1, 2, 3]);
        assert!(check_records(4, &records).is_ok());
        assert!(check_records(3, &records).is_err(), "last record outside");
        records[2].offset += 1;
        assert!(check_records(4, &records).is_err(), "offset gap");
        let records = boundaries(&[1, 2, 2]);
        assert!(check_records(4, &records).is_err(), "empty record");
    }

    #[test]
    fn compressed_frame_limit_covers_zstd_worst_case() {
        assert!(
            zstd::zstd_safe::compress_bound(ARTIFACT_FRAME_RAW_BYTES_MAX as usize)
                <= ARTIFACT_FRAME_COMPRESSED_BYTES_MAX as usize
        );
    }
}
