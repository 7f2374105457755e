//! Runs [`CpuJob`]s: the compression work a driver hands to a blocking pool (in
//! production) or runs inline (in simulation). Pure functions of their input, so the
//! simulator and production compute byte-identical artifacts.
//!
//! **Invariants**
//! - `Compress` accepts only a verified sealed segment, and its artifact decompresses
//!   back to exactly the input (checked before returning, so a compressor bug is a
//!   failed job, never a bad artifact in Tier 1 or Tier 2).
//! - `Decompress` checks every frame (zstd checksum and the index CRC) before
//!   returning bytes, and the result verifies as a sealed segment.
//! - Bad input is a [`CpuResult::Failed`] with a message, never a panic.

use crate::artifact::{self, ArtifactOptions};
use crate::codec::crc32;
use crate::io::{CpuJob, CpuResult};
use crate::segment::SealedSegment;
use bytes::Bytes;

/// Runs one job to completion.
#[must_use]
pub fn run(job: &CpuJob) -> CpuResult {
    match job {
        CpuJob::Compress {
            segment,
            frame_raw_bytes_target,
            compression_level,
        } => compress(segment, *frame_raw_bytes_target, *compression_level),
        CpuJob::Decompress { artifact } => decompress(artifact),
    }
}

fn compress(segment: &Bytes, frame_raw_bytes_target: u32, compression_level: i32) -> CpuResult {
    let sealed = match SealedSegment::decode(segment) {
        Ok(sealed) => sealed,
        Err(error) => {
            return CpuResult::Failed {
                reason: format!("segment to compress does not verify: {error}"),
            };
        }
    };
    let boundaries: Vec<_> = sealed.record_boundaries().collect();
    let options = ArtifactOptions {
        frame_raw_bytes_target,
        compression_level,
    };
    let mut out = Vec::with_capacity(segment.len() / 2);
    let index = match artifact::encode(segment, &boundaries, &options, &mut out) {
        Ok(index) => index,
        Err(error) => {
            return CpuResult::Failed {
                reason: format!("compressing segment: {error}"),
            };
        }
    };
    // Verify before anything durable depends on it: the artifact is the only copy once
    // the local segment is evicted.
    match artifact::decode_all(&out) {
        Ok(round_trip) if round_trip == segment.as_ref() => {}
        Ok(_) => {
            return CpuResult::Failed {
                reason: "artifact does not decompress to the segment it was made from".to_owned(),
            };
        }
        Err(error) => {
            return CpuResult::Failed {
                reason: format!("artifact just written does not decode: {error}"),
            };
        }
    }
    let checksum = crc32(&out);
    CpuResult::Compressed {
        artifact: Bytes::from(out),
        frame_count: index.frame_count(),
        checksum,
    }
}

fn decompress(artifact_bytes: &Bytes) -> CpuResult {
    let segment = match artifact::decode_all(artifact_bytes) {
        Ok(segment) => segment,
        Err(error) => {
            return CpuResult::Failed {
                reason: format!("artifact does not decode: {error}"),
            };
        }
    };
    if let Err(error) = SealedSegment::decode(&segment) {
        return CpuResult::Failed {
            reason: format!("decompressed segment does not verify: {error}"),
        };
    }
    CpuResult::Decompressed {
        segment: Bytes::from(segment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentId;
    use crate::segment::{Record, SegmentDigest, SegmentHeader};

    fn sealed(count: u64) -> Bytes {
        let header = SegmentHeader {
            segment_id: SegmentId(1),
            base_offset: 10,
            created_at_ms: 5,
        };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        let mut digest = SegmentDigest::new();
        digest.update_header(&bytes);
        for index in 0..count {
            let payload = vec![index as u8; (index * 100) as usize];
            let position = bytes.len();
            Record {
                offset: 10 + index,
                timestamp_ms: index,
                ext_id: 0,
                flags: 0,
                payload: &payload,
            }
            .encode(&mut bytes);
            digest.update_frames(&bytes[position..]);
        }
        digest.footer(0, false, 9).encode(&mut bytes);
        Bytes::from(bytes)
    }

    #[test]
    fn compress_then_decompress_round_trips() {
        let segment = sealed(50);
        let CpuResult::Compressed {
            artifact,
            frame_count,
            checksum,
        } = run(&CpuJob::Compress {
            segment: segment.clone(),
            frame_raw_bytes_target: 4096,
            compression_level: 3,
        })
        else {
            panic!("compression of a valid segment succeeds");
        };
        assert!(frame_count > 1);
        assert_eq!(checksum, crc32(&artifact));
        assert_eq!(
            run(&CpuJob::Decompress { artifact }),
            CpuResult::Decompressed { segment }
        );
    }

    #[test]
    fn corrupt_inputs_fail_with_a_reason() {
        let mut segment = sealed(3).to_vec();
        segment[50] ^= 1;
        let result = run(&CpuJob::Compress {
            segment: Bytes::from(segment),
            frame_raw_bytes_target: 4096,
            compression_level: 3,
        });
        assert!(
            matches!(&result, CpuResult::Failed { reason } if reason.contains("does not verify")),
            "{result:?}"
        );
        let result = run(&CpuJob::Decompress {
            artifact: Bytes::from_static(b"not an artifact"),
        });
        assert!(matches!(result, CpuResult::Failed { .. }), "{result:?}");
    }
}
