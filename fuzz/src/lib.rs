//! Bodies of AOF2's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` and by `tests/corpus.rs`, which replays the committed corpus on the
//! stable toolchain so CI checks every corpus input without nightly.
//!
//! **Invariants checked** (by every target)
//! - Decoding arbitrary bytes never panics; it returns a value or a typed error.
//! - Whatever decodes re-encodes to bytes that decode to the same value.

#![deny(unsafe_code)]

use aof2_core::ack_hint::AckHint;
use aof2_core::artifact::{self, ArtifactIndex, TailDecode};
use aof2_core::codec::Reader;
use aof2_core::manifest::chunk::decode_chunk;
use aof2_core::manifest::record::{DecodedFrame, decode_frame};
use aof2_core::manifest::replay::Replayer;
use aof2_core::manifest::snapshot::Snapshot;
use aof2_core::pointer::SealedPointer;
use aof2_core::segment::{SealedSegment, TailScan, scan_tail};

/// The body of a fuzz target.
pub type Target = fn(&[u8]);

/// Every fuzz target, by name, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest_record_decode", manifest_record_decode),
    ("segment_tail_scan", segment_tail_scan),
    ("artifact_decode", artifact_decode),
    ("manifest_chunk_replay", manifest_chunk_replay),
    ("snapshot_decode", snapshot_decode),
];

/// Decodes a sequence of manifest record frames, as replay does inside a chunk.
///
/// **Invariants checked**: no panic; a decoded known frame re-encodes to the exact
/// bytes it was decoded from (the format has one encoding per record).
pub fn manifest_record_decode(data: &[u8]) {
    let mut reader = Reader::new(data, 0, "manifest record");
    while reader.remaining() > 0 {
        let start = reader.position();
        match decode_frame(&mut reader) {
            Ok(DecodedFrame::Known(frame)) => {
                let bytes = frame.record.to_frame(frame.ordinal, frame.timestamp_ms);
                assert_eq!(
                    bytes.as_slice(),
                    &data[start..reader.position()],
                    "a decoded record must re-encode to its own bytes"
                );
            }
            Ok(DecodedFrame::Unknown { .. }) => {}
            Err(_) => break,
        }
    }
}

/// Scans arbitrary bytes as a segment file found on disk after a crash, and decodes
/// them as a sealed segment, as a `current.sealed` pointer and as an `acknowledged`
/// hint (the small files recovery reads next to the segments).
///
/// **Invariants checked**: no panic; an active tail accounts for every byte
/// (`valid_bytes + dropped_bytes == len`); truncating to `valid_bytes` and scanning
/// again keeps the same records and drops nothing; a scan that says sealed agrees with
/// `SealedSegment::decode`; a decoded sealed segment re-encodes its records densely; a
/// decoded pointer or hint re-encodes to exactly the input bytes.
pub fn segment_tail_scan(data: &[u8]) {
    match scan_tail(data) {
        Ok(TailScan::Active(tail)) => {
            assert_eq!(tail.valid_bytes + tail.dropped_bytes, data.len() as u64);
            let kept = &data[..usize::try_from(tail.valid_bytes).expect("fits")];
            match scan_tail(kept) {
                Ok(TailScan::Active(again)) => {
                    assert_eq!(again.record_count, tail.record_count);
                    assert_eq!(again.next_offset, tail.next_offset);
                    assert_eq!(again.dropped_bytes, 0);
                }
                other => panic!("a truncated valid prefix must scan as active: {other:?}"),
            }
        }
        Ok(TailScan::Sealed { footer, .. }) => {
            let sealed = SealedSegment::decode(data).expect("a scan that says sealed decodes");
            assert_eq!(sealed.footer(), &footer);
        }
        Err(_) => {}
    }
    if let Ok(sealed) = SealedSegment::decode(data) {
        let mut expected = sealed.base_offset();
        for framed in sealed.records() {
            assert_eq!(framed.record.offset, expected, "offsets are dense");
            expected += 1;
        }
        assert_eq!(expected, sealed.next_offset());
    }
    if let Ok(pointer) = SealedPointer::decode(data) {
        assert_eq!(pointer.to_bytes(), data, "a pointer has one encoding");
    }
    if let Ok(hint) = AckHint::decode(data) {
        assert_eq!(hint.to_bytes(), data, "a hint has one encoding");
    }
}

/// Decodes arbitrary bytes as a seekable artifact: whole, and the cold-read way (tail
/// then one frame at a time).
///
/// **Invariants checked**: no panic; a whole decode yields exactly the raw length the
/// index records; every frame the index locates either fails with an error or
/// decodes to exactly its raw size, and those frames concatenated equal the whole
/// decode.
pub fn artifact_decode(data: &[u8]) {
    let whole = artifact::decode_all(data);
    let length = data.len() as u64;
    let Ok(TailDecode::Complete(index)) = ArtifactIndex::decode_tail(data, length) else {
        return;
    };
    let mut joined = Vec::new();
    let mut every_frame_ok = true;
    for location in index.frames() {
        let range = location.compressed_range();
        let Some(frame) = data.get(range.start as usize..range.end as usize) else {
            every_frame_ok = false;
            continue;
        };
        match artifact::decode_frame(frame, location) {
            Ok(raw) => {
                assert_eq!(raw.len() as u64, u64::from(location.raw_size));
                joined.extend_from_slice(&raw);
            }
            Err(_) => every_frame_ok = false,
        }
    }
    if let Ok(raw) = whole {
        assert_eq!(raw.len() as u64, index.segment_raw_bytes());
        assert!(
            every_frame_ok,
            "a whole decode succeeded but a frame failed"
        );
        assert_eq!(raw, joined, "frame by frame equals whole");
    }
}

/// Decodes arbitrary bytes as a manifest chunk and replays them; the first byte
/// chooses whether the input is one chunk or split into two consecutive chunks.
///
/// **Invariants checked**: no panic; a decoded chunk passes its own postconditions
/// (`DecodedChunk::check_invariants`); committed record bytes plus trimmed bytes never
/// exceed the input; the replayer and the rebuilt index pass `check_invariants()`
/// after every chunk; replay counts every corruption it reports.
pub fn manifest_chunk_replay(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let chunks: Vec<&[u8]> = if selector & 1 == 0 || rest.len() < 2 {
        vec![rest]
    } else {
        let cut = usize::from(selector >> 1) * rest.len() / 128;
        vec![&rest[..cut], &rest[cut..]]
    };
    for (index, chunk) in chunks.iter().enumerate() {
        let decoded = decode_chunk(index as u64, chunk);
        decoded.check_invariants();
        if let Some(commit) = &decoded.commit {
            assert!(commit.committed_end() + decoded.trimmed_bytes <= chunk.len() as u64);
        }
    }
    let mut replayer = Replayer::new(None);
    for (index, chunk) in chunks.iter().enumerate() {
        replayer
            .replay_chunk(index as u64 * 10, index as u64, chunk)
            .expect("chunks are given in increasing index order");
        replayer.check_invariants();
    }
    let outcome = replayer.finish(100);
    outcome.index.check_invariants();
    assert!(outcome.figures.corruption_events >= outcome.corruptions.len() as u64);
    assert_eq!(outcome.figures.chunk_count, chunks.len() as u64);
}

/// Decodes arbitrary bytes as a snapshot file.
///
/// **Invariants checked**: no panic; a decoded snapshot's index passes
/// `check_invariants()` and re-encodes to exactly the input bytes.
pub fn snapshot_decode(data: &[u8]) {
    if let Ok(snapshot) = Snapshot::decode(data) {
        snapshot.index().check_invariants();
        assert_eq!(snapshot.to_bytes(), data, "a snapshot has one encoding");
    }
}
