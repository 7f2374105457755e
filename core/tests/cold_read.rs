//! A real sealed segment through the seekable artifact: the path a cold read takes.
//!
//! **Invariants checked**
//! - Compressing a sealed segment at its record boundaries and decompressing it gives
//!   back the exact segment bytes, both through `decode_all` and through the stock
//!   `zstd -d` command.
//! - Every record can be read from the artifact's tail (index + seek table) and the one
//!   frame that holds it, and is byte-identical to what was appended.

// This test runs the `zstd` CLI and writes a temporary file to check the artifact
// against an independent decoder.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use aof2_core::SegmentId;
use aof2_core::artifact::{self, ArtifactIndex, ArtifactOptions, TailDecode};
use aof2_core::segment::{Record, SealedSegment, SegmentDigest, SegmentHeader};
use std::process::Command;

/// A sealed segment of `count` records whose payloads vary in size (0 to ~3 KiB).
fn sealed_segment(count: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let header = SegmentHeader {
        segment_id: SegmentId(42),
        base_offset: 1_000,
        created_at_ms: 1_700_000_000_000,
    };
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    let mut digest = SegmentDigest::new();
    digest.update_header(&bytes);
    let mut payloads = Vec::new();
    for index in 0..count {
        let payload: Vec<u8> = (0..(index * 37 % 3_000))
            .map(|i| (i * 7 + index) as u8)
            .collect();
        let position = bytes.len();
        Record {
            offset: header.base_offset + index,
            timestamp_ms: 1_700_000_000_000 + index,
            ext_id: index + 1,
            flags: 0,
            payload: &payload,
        }
        .encode(&mut bytes);
        digest.update_frames(&bytes[position..]);
        payloads.push(payload);
    }
    digest
        .footer(7, false, 1_700_000_100_000)
        .encode(&mut bytes);
    (bytes, payloads)
}

fn compress(segment_bytes: &[u8], frame_target: u32) -> Vec<u8> {
    let segment = SealedSegment::decode(segment_bytes).expect("a freshly built segment decodes");
    let boundaries: Vec<_> = segment.record_boundaries().collect();
    let options = ArtifactOptions {
        frame_raw_bytes_target: frame_target,
        ..ArtifactOptions::default()
    };
    let mut out = Vec::new();
    artifact::encode(segment_bytes, &boundaries, &options, &mut out).expect("encode");
    out
}

#[test]
fn every_record_reads_back_from_the_tail_and_one_frame() {
    let (segment_bytes, payloads) = sealed_segment(400);
    let artifact_bytes = compress(&segment_bytes, 16 * 1024);
    assert_eq!(
        artifact::decode_all(&artifact_bytes).unwrap(),
        segment_bytes
    );

    // First range GET: the last 64 KiB (or less); retry with exactly enough if asked.
    let length = artifact_bytes.len() as u64;
    let mut tail_length = length.min(64 * 1024);
    let index = loop {
        let tail = &artifact_bytes[(length - tail_length) as usize..];
        match ArtifactIndex::decode_tail(tail, length).expect("tail decodes") {
            TailDecode::Complete(index) => break index,
            TailDecode::NeedTail { tail_bytes } => tail_length = tail_bytes,
        }
    };
    assert!(index.frame_count() > 1, "the test wants several frames");

    for (i, payload) in payloads.iter().enumerate() {
        let offset = 1_000 + i as u64;
        let location = index
            .frame_for_record(offset)
            .expect("every record has a frame");
        // Second range GET: one frame.
        let range = location.compressed_range();
        let frame = &artifact_bytes[range.start as usize..range.end as usize];
        let raw = artifact::decode_frame(frame, &location).expect("frame decodes");
        // Walk the frame's records to the one wanted (frame 0 starts with the header).
        let mut position = if location.frame == 0 {
            u64::from(aof2_core::limits::SEGMENT_HEADER_BYTES)
        } else {
            0
        };
        loop {
            let framed = Record::decode(&raw[position as usize..], location.raw_offset + position)
                .expect("record in frame decodes");
            if framed.record.offset == offset {
                assert_eq!(
                    framed.record.payload,
                    payload.as_slice(),
                    "payload of {offset}"
                );
                assert_eq!(framed.record.ext_id, i as u64 + 1);
                break;
            }
            position += framed.frame_bytes();
        }
    }
}

#[test]
fn stock_zstd_restores_a_real_segment() {
    let (segment_bytes, _) = sealed_segment(300);
    let artifact_bytes = compress(&segment_bytes, 8 * 1024);
    let path = std::env::temp_dir().join(format!("aof2-cold-read-{}.zst", std::process::id()));
    std::fs::write(&path, &artifact_bytes).unwrap();
    let output = Command::new("zstd")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("the zstd CLI must be installed (apt-get install zstd); .ci/run installs it");
    std::fs::remove_file(&path).unwrap();
    assert!(
        output.status.success(),
        "zstd -d failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.stdout, segment_bytes,
        "zstd -d must restore the exact segment bytes"
    );
}
