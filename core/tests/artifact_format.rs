//! Integration tests of the seekable artifact format (`aof2_core::artifact`).
//!
//! **Invariants checked**
//! - encode -> decode gives back the exact segment bytes, whole or one frame at a time,
//!   and every record is found in the frame the index names (proptest).
//! - The stock `zstd -d` turns an artifact back into the exact segment bytes; a
//!   standard seekable-format reader (zeekstd) reads it too.
//! - The committed golden artifact still decodes, and re-encoding its input gives it
//!   back byte for byte. Regenerate it after a deliberate format change with
//!   `AOF2_BLESS=1 cargo test -p aof2-core --test artifact_format golden`.
//! - Any single flipped bit gives an error or the exact original bytes, never wrong
//!   bytes or a panic; a flipped bit in the tail always gives an error.
//! - Random or truncated bytes never make a decoder panic; short tails ask for exactly
//!   the tail they need.

// Integration tests run the stock `zstd` binary, write temp files and read the golden
// file and the bless switch from the environment; core's sans-IO rules are for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use aof2_core::artifact::{
    ArtifactError, ArtifactIndex, ArtifactOptions, FrameLocation, RecordBoundary, TailDecode,
    decode_all, decode_frame, encode,
};
use aof2_core::limits::{ARTIFACT_FRAME_RAW_BYTES_MAX, ARTIFACT_TAIL_PROBE_BYTES};
use proptest::prelude::*;
use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;

/// A synthetic sealed segment: header, records, footer, and where each record starts.
#[derive(Debug, Clone)]
struct Segment {
    bytes: Vec<u8>,
    records: Vec<RecordBoundary>,
    /// Byte range of each record (without header or footer).
    record_ranges: Vec<Range<usize>>,
}

impl Segment {
    fn build(header: &[u8], payloads: &[Vec<u8>], footer: &[u8], first_offset: u64) -> Segment {
        let mut bytes = header.to_vec();
        let mut records = vec![];
        let mut record_ranges = vec![];
        for (index, payload) in payloads.iter().enumerate() {
            assert!(!payload.is_empty(), "records are at least one byte");
            records.push(RecordBoundary {
                offset: first_offset + index as u64,
                position: bytes.len() as u64,
            });
            record_ranges.push(bytes.len()..bytes.len() + payload.len());
            bytes.extend_from_slice(payload);
        }
        bytes.extend_from_slice(footer);
        Segment {
            bytes,
            records,
            record_ranges,
        }
    }

    fn encode(&self, options: &ArtifactOptions) -> (Vec<u8>, ArtifactIndex) {
        let mut artifact = vec![];
        let index = encode(&self.bytes, &self.records, options, &mut artifact).expect("encodes");
        assert_eq!(artifact.len() as u64, index.artifact_bytes());
        (artifact, index)
    }
}

fn options(frame_raw_bytes_target: u32) -> ArtifactOptions {
    ArtifactOptions {
        frame_raw_bytes_target,
        ..ArtifactOptions::default()
    }
}

/// The fixed input of the golden file: 12 records of growing size, 1000.. offsets.
fn golden_segment() -> Segment {
    let payloads: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            format!(
                "record {i:02}: the quick brown fox jumps over the lazy dog {}\n",
                "x".repeat(i * 7)
            )
            .into_bytes()
        })
        .collect();
    Segment::build(
        b"AOF2 golden segment header\0\0\0\0\0\0",
        &payloads,
        b"footer: 12 records\n",
        1000,
    )
}

fn golden_options() -> ArtifactOptions {
    options(128)
}

/// A larger, mildly compressible segment from a fixed LCG.
fn lcg_segment(record_count: usize, seed: u64) -> Segment {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let words = [
        "alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ",
    ];
    let payloads: Vec<Vec<u8>> = (0..record_count)
        .map(|_| {
            let length = 1 + next() as usize % 600;
            let mut payload = vec![];
            while payload.len() < length {
                if next() % 4 == 0 {
                    payload.push(next() as u8);
                } else {
                    payload.extend_from_slice(words[next() as usize % words.len()].as_bytes());
                }
            }
            payload.truncate(length);
            payload
        })
        .collect();
    Segment::build(b"HEADER--lcg-segment--", &payloads, b"--FOOTER--", 5_000)
}

/// Decodes the tail the way a cold reader does: GET `first_tail_bytes`, then exactly
/// what the decoder asks for. Returns the index and the number of rounds.
fn cold_read_index(artifact: &[u8], first_tail_bytes: usize) -> (ArtifactIndex, usize) {
    let len = artifact.len();
    let mut tail_bytes = first_tail_bytes.min(len);
    for round in 1..=3 {
        match ArtifactIndex::decode_tail(&artifact[len - tail_bytes..], len as u64)
            .expect("a valid tail decodes")
        {
            TailDecode::Complete(index) => return (index, round),
            TailDecode::NeedTail { tail_bytes: needed } => {
                assert!(needed as usize > tail_bytes, "asks for more than it had");
                assert!(needed as usize <= len, "never asks past the artifact");
                tail_bytes = needed as usize;
            }
        }
    }
    panic!("tail decode did not converge in 3 rounds from {first_tail_bytes} bytes");
}

fn frame_bytes<'a>(artifact: &'a [u8], location: &FrameLocation) -> &'a [u8] {
    let range = location.compressed_range();
    &artifact[range.start as usize..range.end as usize]
}

fn segment_strategy() -> impl Strategy<Value = (Segment, u32)> {
    (
        proptest::collection::vec(any::<u8>(), 0..48),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..160), 0..40),
        proptest::collection::vec(any::<u8>(), 0..48),
        0..u64::MAX / 2,
        1u32..1024,
    )
        .prop_map(|(header, payloads, footer, first_offset, target)| {
            (
                Segment::build(&header, &payloads, &footer, first_offset),
                target,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_gives_back_every_record((segment, target) in segment_strategy(), probe in 0usize..4096) {
        let (artifact, index) = segment.encode(&options(target));
        prop_assert_eq!(&decode_all(&artifact).expect("decodes"), &segment.bytes);

        let (cold_index, _) = cold_read_index(&artifact, probe);
        prop_assert_eq!(&cold_index, &index);
        prop_assert_eq!(index.record_count(), segment.records.len() as u64);

        for (record, range) in segment.records.iter().zip(&segment.record_ranges) {
            let location = cold_index.frame_for_record(record.offset).expect("record is in a frame");
            prop_assert!(location.record_offsets().contains(&record.offset));
            let raw = decode_frame(frame_bytes(&artifact, &location), &location).expect("frame decodes");
            let raw_range = location.raw_range();
            prop_assert!(raw_range.start <= range.start as u64 && range.end as u64 <= raw_range.end,
                "record {} at {:?} outside frame {} at {:?}", record.offset, range, location.frame, raw_range);
            prop_assert_eq!(&raw[..], &segment.bytes[raw_range.start as usize..raw_range.end as usize]);
        }
        if let Some(first) = segment.records.first() {
            prop_assert_eq!(cold_index.frame_for_record(first.offset - 1), None);
            prop_assert_eq!(cold_index.frame_for_record(first.offset + segment.records.len() as u64), None);
        } else {
            prop_assert_eq!(index.frame_count(), 1);
            prop_assert_eq!(cold_index.frame_for_record(0), None);
        }
    }

    #[test]
    fn frames_are_cut_at_the_first_boundary_past_the_target((segment, target) in segment_strategy()) {
        let (_, index) = segment.encode(&options(target));
        let target = u64::from(target);
        let positions: Vec<u64> = segment.records.iter().map(|r| r.position).collect();
        // A record's length for cutting includes the footer if it is the last one.
        let record_len = |i: usize| positions.get(i + 1).copied().unwrap_or(segment.bytes.len() as u64) - positions[i];
        let mut record = 0usize;
        for location in index.frames() {
            let records = record..record + location.record_count as usize;
            if records.len() > 1 {
                let last = records.end - 1;
                prop_assert!(positions[last] - location.raw_offset < target,
                    "frame {} reached the target before its last record", location.frame);
                for i in records.clone() {
                    prop_assert!(record_len(i) < target, "large record {i} shares frame {}", location.frame);
                }
            }
            if location.frame + 1 < index.frame_count() {
                let next_len = record_len(records.end);
                prop_assert!(u64::from(location.raw_size) >= target || next_len >= target,
                    "frame {} ended early", location.frame);
            }
            record = records.end;
        }
        prop_assert_eq!(record, segment.records.len());
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048), extra in 0u64..1_000_000) {
        let _ = decode_all(&bytes);
        let artifact_len = bytes.len() as u64 + extra;
        if let Ok(TailDecode::NeedTail { tail_bytes }) = ArtifactIndex::decode_tail(&bytes, artifact_len) {
            prop_assert!(tail_bytes > bytes.len() as u64);
            prop_assert!(tail_bytes <= artifact_len);
        }
    }

    #[test]
    fn random_frames_never_panic_decode_frame(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..512),
        zstd_magic in any::<bool>(),
        raw_size in prop_oneof![0u32..(1 << 16), Just(ARTIFACT_FRAME_RAW_BYTES_MAX + 1), Just(u32::MAX)],
        raw_crc32 in any::<u32>(),
        size_matches in any::<bool>(),
        compressed_size in any::<u32>(),
    ) {
        if zstd_magic && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
        }
        let location = FrameLocation {
            frame: 3,
            first_record_offset: 0,
            record_count: 1,
            raw_offset: 0,
            raw_size,
            raw_crc32,
            compressed_offset: 77,
            compressed_size: if size_matches { bytes.len() as u32 } else { compressed_size },
        };
        let _ = decode_frame(&bytes, &location);
    }

    #[test]
    fn mutated_artifacts_decode_to_an_error_or_the_original(
        (segment, target) in segment_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (mut artifact, index) = segment.encode(&options(target));
        for (at, value) in &edits {
            let at = at.index(artifact.len());
            artifact[at] = *value;
        }
        if let Ok(decoded) = decode_all(&artifact) {
            prop_assert_eq!(&decoded, &segment.bytes);
        }
        if let Ok(TailDecode::Complete(decoded)) = ArtifactIndex::decode_tail(&artifact, artifact.len() as u64) {
            prop_assert_eq!(&decoded, &index);
        }
    }
}

#[test]
fn stock_zstd_cli_decompresses_to_the_exact_segment() {
    let cases = [
        ("golden", golden_segment(), golden_options()),
        ("lcg", lcg_segment(400, 7), options(4096)),
        ("one-frame", lcg_segment(50, 8), ArtifactOptions::default()),
        (
            "no-records",
            Segment::build(b"header", &[], b"footer", 0),
            options(1),
        ),
        ("empty", Segment::build(b"", &[], b"", 0), options(1)),
    ];
    let dir = std::env::temp_dir().join(format!("aof2-artifact-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    for (name, segment, options) in cases {
        let (artifact, index) = segment.encode(&options);
        let path = dir.join(format!("{name}.zst"));
        std::fs::write(&path, &artifact).expect("write artifact");
        let output = match Command::new("zstd")
            .arg("-d")
            .arg("-c")
            .arg("-q")
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "the `zstd` CLI is not installed; install it (e.g. `apt-get install zstd`) — CI installs it and this test must run"
            ),
            Err(error) => panic!("cannot run `zstd`: {error}"),
        };
        assert!(
            output.status.success(),
            "zstd -d failed on {name} ({} frames): {}",
            index.frame_count(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stdout == segment.bytes,
            "zstd -d gave {} bytes for {name}, expected the {}-byte segment",
            output.stdout.len(),
            segment.bytes.len()
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[test]
fn standard_seekable_reader_reads_the_artifact() {
    let segment = lcg_segment(300, 11);
    let (artifact, index) = segment.encode(&options(2048));
    assert!(index.frame_count() > 10);
    let mut decoder =
        zeekstd::Decoder::new(zeekstd::BytesWrapper::new(&artifact)).expect("seek table found");
    assert_eq!(decoder.seek_table().num_frames(), index.frame_count());
    let mut decoded = vec![];
    let mut buf = vec![0u8; 4096];
    loop {
        let n = decoder.decompress(&mut buf).expect("decompresses");
        if n == 0 {
            break;
        }
        decoded.extend_from_slice(&buf[..n]);
    }
    assert!(decoded == segment.bytes, "zeekstd decoded different bytes");
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/artifact/artifact-v1.zst")
}

#[test]
fn golden_artifact_v1_decodes_and_reencodes_byte_for_byte() {
    let segment = golden_segment();
    let (encoded, index) = segment.encode(&golden_options());
    let path = golden_path();
    if std::env::var("AOF2_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create golden dir");
        std::fs::write(&path, &encoded).expect("write golden file");
    }
    let golden = std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; regenerate with AOF2_BLESS=1",
            path.display()
        )
    });
    assert!(
        decode_all(&golden).expect("golden file decodes") == segment.bytes,
        "golden file decodes to other bytes"
    );
    let golden_index = match ArtifactIndex::decode_tail(&golden, golden.len() as u64) {
        Ok(TailDecode::Complete(index)) => index,
        other => panic!("golden tail: {other:?}"),
    };
    assert_eq!(golden_index.record_count(), 12);
    assert_eq!(golden_index.first_record_offset(), 1000);
    assert!(
        golden_index.frame_count() >= 4,
        "golden file spans several frames"
    );
    assert_eq!(golden_index, index);
    assert!(
        encoded == golden,
        "re-encoding the golden input changed the artifact ({} bytes, golden {} bytes): \
         if the format changed on purpose, bump the version and bless with AOF2_BLESS=1",
        encoded.len(),
        golden.len()
    );
}

/// Flips `bit` of `artifact` and checks both decode paths.
fn check_flip(artifact: &[u8], index: &ArtifactIndex, segment: &[u8], bit: usize) {
    let mut flipped = artifact.to_vec();
    flipped[bit / 8] ^= 1 << (bit % 8);
    if let Ok(decoded) = decode_all(&flipped) {
        assert!(
            decoded == segment,
            "bit {bit}: decode_all returned wrong bytes"
        );
    }
    let in_tail = (bit / 8) as u64 >= index.frames_compressed_bytes();
    match ArtifactIndex::decode_tail(&flipped, flipped.len() as u64) {
        Ok(TailDecode::Complete(decoded)) => {
            assert!(!in_tail, "bit {bit} flipped in the tail went unnoticed");
            assert_eq!(&decoded, index, "bit {bit}");
        }
        Ok(TailDecode::NeedTail { tail_bytes }) => {
            panic!("bit {bit}: asked for {tail_bytes} tail bytes of a whole artifact")
        }
        Err(error) => assert!(in_tail, "bit {bit} in a frame broke the tail: {error}"),
    }
}

#[test]
fn every_single_bit_flip_is_detected_or_harmless() {
    let segment = golden_segment();
    let (artifact, index) = segment.encode(&golden_options());
    let mut errors = 0;
    for bit in 0..artifact.len() * 8 {
        check_flip(&artifact, &index, &segment.bytes, bit);
        let mut flipped = artifact.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        errors += usize::from(decode_all(&flipped).is_err());
    }
    // Nearly every flip must be an error; only a few zstd bits are don't-cares.
    assert!(
        errors * 100 >= artifact.len() * 8 * 95,
        "only {errors} of {} flips detected",
        artifact.len() * 8
    );
}

#[test]
fn sampled_bit_flips_in_a_larger_artifact_are_detected_or_harmless() {
    let segment = lcg_segment(400, 3);
    let (artifact, index) = segment.encode(&options(8192));
    assert!(artifact.len() > 20_000, "{} bytes", artifact.len());
    // A prime stride visits every byte position class and every bit index.
    for bit in (0..artifact.len() * 8).step_by(61) {
        check_flip(&artifact, &index, &segment.bytes, bit);
    }
    // And every bit of the tail.
    for bit in (index.frames_compressed_bytes() as usize * 8)..artifact.len() * 8 {
        check_flip(&artifact, &index, &segment.bytes, bit);
    }
}

#[test]
fn corruption_names_the_frame_and_its_offset() {
    let segment = lcg_segment(100, 5);
    let (mut artifact, index) = segment.encode(&options(4096));
    let location = index.frames()[2];
    let middle = location.compressed_offset + u64::from(location.compressed_size) / 2;
    artifact[middle as usize] ^= 0x10;
    match decode_all(&artifact) {
        Err(
            ArtifactError::FrameCorrupt { frame, offset, .. }
            | ArtifactError::FrameChecksum { frame, offset, .. }
            | ArtifactError::FrameTooLarge { frame, offset, .. },
        ) => {
            assert_eq!(frame, 2);
            assert_eq!(offset, location.compressed_offset);
        }
        other => panic!("expected a frame error, got {other:?}"),
    }
}

#[test]
fn a_frame_larger_than_the_index_says_is_an_error_not_an_allocation() {
    let segment = lcg_segment(20, 9);
    let (artifact, index) = segment.encode(&ArtifactOptions::default());
    let mut location = index.frames()[0];
    let compressed = frame_bytes(&artifact, &location);
    location.raw_size -= 1;
    assert!(matches!(
        decode_frame(compressed, &location),
        Err(ArtifactError::FrameTooLarge { frame: 0, .. })
    ));
    let mut location = index.frames()[0];
    location.raw_crc32 ^= 1;
    assert!(matches!(
        decode_frame(compressed, &location),
        Err(ArtifactError::FrameChecksum { frame: 0, .. })
    ));
    let mut location = index.frames()[0];
    location.raw_size += 1;
    assert!(matches!(
        decode_frame(compressed, &location),
        Err(ArtifactError::FrameCorrupt { frame: 0, .. })
    ));
}

#[test]
fn truncated_tails_ask_for_exactly_enough_or_fail() {
    let segment = lcg_segment(300, 13);
    let (artifact, index) = segment.encode(&options(1024));
    let len = artifact.len();
    let tail_len = index.tail_bytes() as usize;
    assert!(
        tail_len > 1000,
        "the tail is long enough to need a second GET from small probes"
    );
    for given in 0..=len {
        let tail = &artifact[len - given..];
        match ArtifactIndex::decode_tail(tail, len as u64)
            .expect("a valid short tail is not an error")
        {
            TailDecode::Complete(decoded) => {
                assert!(given >= tail_len, "complete from {given} bytes");
                assert_eq!(decoded, index);
            }
            TailDecode::NeedTail { tail_bytes } => {
                assert!(given < tail_len);
                assert!(tail_bytes as usize > given && tail_bytes as usize <= len);
                if given >= 9 {
                    assert_eq!(
                        tail_bytes as usize, tail_len,
                        "knows the exact tail from {given} bytes"
                    );
                }
            }
        }
    }
    let (_, rounds) = cold_read_index(&artifact, ARTIFACT_TAIL_PROBE_BYTES as usize);
    assert_eq!(rounds, 1, "a 64 KiB probe holds this tail");
    let (_, rounds) = cold_read_index(&artifact, 100);
    assert_eq!(rounds, 2);
    // A tail longer than the artifact it claims to end is an error.
    assert!(ArtifactIndex::decode_tail(&artifact, len as u64 - 1).is_err());
}

#[test]
fn truncated_artifacts_are_errors_never_panics() {
    let segment = golden_segment();
    let (artifact, _) = segment.encode(&golden_options());
    for cut in 0..artifact.len() {
        assert!(
            decode_all(&artifact[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
        assert!(
            decode_all(&artifact[cut + 1..]).is_err(),
            "suffix from {} decoded",
            cut + 1
        );
        assert!(
            ArtifactIndex::decode_tail(&artifact[..cut], cut as u64).is_err(),
            "prefix of {cut} bytes has a tail"
        );
    }
}

#[test]
fn encoder_rejects_bad_input() {
    let segment = golden_segment();
    let mut out = vec![];
    let mut records = segment.records.clone();
    records.swap(1, 2);
    assert!(matches!(
        encode(&segment.bytes, &records, &golden_options(), &mut out),
        Err(ArtifactError::InvalidInput { .. })
    ));
    for bad in [
        options(0),
        ArtifactOptions {
            compression_level: 99,
            ..golden_options()
        },
    ] {
        assert!(matches!(
            encode(&segment.bytes, &segment.records, &bad, &mut out),
            Err(ArtifactError::InvalidInput { .. })
        ));
    }
    assert!(out.is_empty(), "nothing is written on error");
}
