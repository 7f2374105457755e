//! Segment file and `current.sealed` pointer formats: round trips, golden files,
//! corruption detection, the tail scanner, and decoders fed arbitrary bytes.
//!
//! **Invariants checked**
//! - Every encoder/decoder pair round-trips (header, record frame, footer, pointer,
//!   whole sealed segments), and record positions reported by decode are the ones the
//!   encoder wrote.
//! - The committed golden files still decode to the fixed input, and encoding the fixed
//!   input reproduces them byte for byte.
//! - Any single flipped bit of a sealed segment or a pointer is an error, never a panic
//!   and never a different record.
//! - The tail scanner keeps exactly the records wholly before a cut, truncates zero and
//!   junk tails, and reports a bad record followed by valid ones as corruption at the
//!   bad record's position.
//! - No decoder panics on arbitrary bytes.
//!
//! Golden files live in `core/tests/golden/segment/`. To regenerate them after a
//! deliberate format change (which also bumps the format version and adds new files
//! rather than replacing old ones):
//!
//! ```text
//! AOF2_BLESS=1 cargo test -p aof2-core --test segment_format
//! ```

// Golden files are read from and (when blessing) written to disk, and blessing is
// switched on by an environment variable; the sans-IO rules bind src/, not tests.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use aof2_core::SegmentId;
use aof2_core::ack_hint::AckHint;
use aof2_core::codec::DecodeError;
use aof2_core::limits::{
    SEALED_POINTER_BYTES, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
    SEGMENT_RECORD_FRAME_HEADER_BYTES,
};
use aof2_core::pointer::SealedPointer;
use aof2_core::segment::{
    ActiveTail, Record, RecordBoundary, SealedSegment, SegmentDigest, SegmentError, SegmentFooter,
    SegmentHeader, TailScan, scan_tail,
};
use proptest::prelude::*;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------
// Building segments

/// An owned record, for generating and comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRecord {
    timestamp_ms: u64,
    ext_id: u64,
    flags: u32,
    payload: Vec<u8>,
}

impl OwnedRecord {
    fn at(&self, offset: u64) -> Record<'_> {
        Record {
            offset,
            timestamp_ms: self.timestamp_ms,
            ext_id: self.ext_id,
            flags: self.flags,
            payload: &self.payload,
        }
    }
}

/// An active segment: its bytes, the position of each frame, and the writer's digest.
struct Built {
    bytes: Vec<u8>,
    positions: Vec<u64>,
    digest: SegmentDigest,
}

impl Built {
    /// End of frame `index`.
    fn frame_end(&self, index: usize) -> u64 {
        self.positions
            .get(index + 1)
            .copied()
            .unwrap_or(self.digest.durable_bytes())
    }
}

fn build_active(header: &SegmentHeader, records: &[OwnedRecord]) -> Built {
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    let mut digest = SegmentDigest::new();
    digest.update_header(&bytes);
    let mut positions = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let position = bytes.len();
        positions.push(position as u64);
        record
            .at(header.base_offset + index as u64)
            .encode(&mut bytes);
        digest.update_frames(&bytes[position..]);
    }
    assert_eq!(digest.durable_bytes(), bytes.len() as u64);
    Built {
        bytes,
        positions,
        digest,
    }
}

fn seal(mut built: Built, watermark: u64, flush_failure: bool, sealed_at_ms: u64) -> Built {
    built
        .digest
        .footer(watermark, flush_failure, sealed_at_ms)
        .encode(&mut built.bytes);
    built
}

fn scan_active(bytes: &[u8]) -> ActiveTail {
    match scan_tail(bytes) {
        Ok(TailScan::Active(tail)) => tail,
        other => panic!("expected an active tail, got {other:?}"),
    }
}

/// Checks that `tail` kept exactly the first `count` frames of `built`.
fn assert_prefix(tail: &ActiveTail, built: &Built, records: &[OwnedRecord], count: usize) {
    let base = tail.header.base_offset;
    assert_eq!(tail.record_count, count as u64, "record count");
    assert_eq!(tail.next_offset, base + count as u64, "next offset");
    let valid_bytes = if count == 0 {
        u64::from(SEGMENT_HEADER_BYTES)
    } else {
        built.frame_end(count - 1)
    };
    assert_eq!(tail.valid_bytes, valid_bytes, "valid bytes");
    match (count, tail.last_record) {
        (0, None) => {}
        (count, Some(last)) => {
            assert_eq!(last.offset, base + count as u64 - 1);
            assert_eq!(last.position, built.positions[count - 1]);
            assert_eq!(last.ext_id, records[count - 1].ext_id);
            assert_eq!(last.timestamp_ms, records[count - 1].timestamp_ms);
        }
        (count, None) => panic!("no last record but {count} records"),
    }
    // The digest of the prefix continues exactly like the writer's own.
    let mut expected = SegmentDigest::new();
    expected.update_header(&built.bytes[..SEGMENT_HEADER_BYTES as usize]);
    expected.update_frames(&built.bytes[SEGMENT_HEADER_BYTES as usize..valid_bytes as usize]);
    assert_eq!(tail.digest, expected, "digest");
}

// ---------------------------------------------------------------------------------
// Fixed input of the golden files

fn golden_header() -> SegmentHeader {
    SegmentHeader {
        segment_id: SegmentId(7),
        base_offset: 1000,
        created_at_ms: 1_700_000_000_000,
    }
}

fn golden_records() -> Vec<OwnedRecord> {
    vec![
        OwnedRecord {
            timestamp_ms: 1_700_000_000_001,
            ext_id: 0,
            flags: 0,
            payload: b"hello".to_vec(),
        },
        OwnedRecord {
            timestamp_ms: 1_700_000_000_002,
            ext_id: 41,
            flags: 1,
            payload: Vec::new(),
        },
        OwnedRecord {
            timestamp_ms: 1_700_000_000_002,
            ext_id: 42,
            flags: 0xffff_ffff,
            payload: b"aof2 segment golden record".to_vec(),
        },
        OwnedRecord {
            timestamp_ms: 1_700_000_000_010,
            ext_id: 0,
            flags: 0x10,
            payload: (0..300u32).map(|i| (i * 7 % 251) as u8).collect(),
        },
        OwnedRecord {
            timestamp_ms: 1_700_000_000_011,
            ext_id: 43,
            flags: 0,
            payload: vec![0, 0xff, 0, 0xff],
        },
    ]
}

const GOLDEN_WATERMARK: u64 = 1004;
const GOLDEN_SEALED_AT_MS: u64 = 1_700_000_060_000;

fn golden_sealed() -> Built {
    seal(
        build_active(&golden_header(), &golden_records()),
        GOLDEN_WATERMARK,
        false,
        GOLDEN_SEALED_AT_MS,
    )
}

/// Three whole records and the first 20 bytes of a fourth frame.
fn golden_active_torn() -> (Built, u64) {
    let records = golden_records();
    let mut built = build_active(&golden_header(), &records[..4]);
    let keep = built.positions[3] + 20;
    built.bytes.truncate(keep as usize);
    (built, keep)
}

fn golden_pointer(sealed_durable_bytes: u64) -> SealedPointer {
    SealedPointer {
        segment_id: SegmentId(7),
        durable_bytes: sealed_durable_bytes,
        coordinator_watermark: GOLDEN_WATERMARK,
    }
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/segment")
        .join(name)
}

/// Compares `encoded` with the committed golden file, or writes it when blessing.
/// Returns the committed bytes.
fn check_golden(name: &str, encoded: &[u8]) -> Vec<u8> {
    let path = golden_path(name);
    if std::env::var("AOF2_BLESS").is_ok_and(|value| value == "1") {
        std::fs::create_dir_all(path.parent().expect("golden files live in a directory"))
            .expect("create golden directory");
        std::fs::write(&path, encoded).expect("write golden file");
    }
    let committed = std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "read {}: {error} (regenerate with AOF2_BLESS=1)",
            path.display()
        )
    });
    assert!(
        committed == encoded,
        "{name}: encoding the fixed input no longer reproduces the committed file \
         ({} bytes encoded, {} committed); a format change needs a new version",
        encoded.len(),
        committed.len()
    );
    committed
}

// ---------------------------------------------------------------------------------
// Golden files

#[test]
fn golden_sealed_segment_encodes_and_decodes() {
    let committed = check_golden("sealed-v1.seg", &golden_sealed().bytes);
    assert_eq!(&committed[..8], b"AOF2SEGH");
    assert_eq!(&committed[committed.len() - 8..], b"AOF2SEGF");

    let sealed = SealedSegment::decode(&committed).expect("the committed file decodes");
    assert_eq!(*sealed.header(), golden_header());
    let records = golden_records();
    let footer = sealed.footer();
    assert_eq!(footer.record_count, records.len() as u64);
    assert_eq!(
        footer.durable_bytes,
        committed.len() as u64 - u64::from(SEGMENT_FOOTER_BYTES)
    );
    assert_eq!(footer.last_ext_id, 43);
    assert_eq!(footer.coordinator_watermark, GOLDEN_WATERMARK);
    assert_eq!(footer.sealed_at_ms, GOLDEN_SEALED_AT_MS);
    assert!(!footer.flush_failure);
    assert_eq!(sealed.next_offset(), 1005);

    let decoded: Vec<_> = sealed.records().collect();
    assert_eq!(decoded.len(), records.len());
    let mut position = u64::from(SEGMENT_HEADER_BYTES);
    for (index, (framed, expected)) in decoded.iter().zip(&records).enumerate() {
        assert_eq!(framed.record, expected.at(1000 + index as u64));
        assert_eq!(framed.position, position);
        position = framed.end();
    }
    assert_eq!(
        decoded[1].record.payload.len(),
        0,
        "the empty payload survives"
    );

    // A cold read of one record by its position.
    let third = Record::decode_at(&committed, decoded[2].position).unwrap();
    assert_eq!(third.record, records[2].at(1002));
    assert_eq!(sealed.record(1003).unwrap().record, records[3].at(1003));
    assert!(sealed.record(1005).is_none());

    match scan_tail(&committed).unwrap() {
        TailScan::Sealed { header, footer } => {
            assert_eq!(header, golden_header());
            assert_eq!(footer, *sealed.footer());
        }
        active => panic!("a sealed file scanned as {active:?}"),
    }
}

#[test]
fn golden_active_torn_segment_scans_to_its_whole_records() {
    let (built, keep) = golden_active_torn();
    let committed = check_golden("active-torn-v1.seg", &built.bytes);
    assert_eq!(committed.len() as u64, keep);
    let tail = scan_active(&committed);
    assert_prefix(&tail, &built, &golden_records(), 3);
    assert_eq!(tail.dropped_bytes, 20);
    assert!(
        matches!(
            tail.stop_reason,
            Some(SegmentError::Decode(DecodeError::Truncated { .. }))
        ),
        "{:?}",
        tail.stop_reason
    );
}

#[test]
fn golden_pointer_encodes_and_decodes() {
    let durable_bytes = golden_sealed().digest.durable_bytes();
    let pointer = golden_pointer(durable_bytes);
    let committed = check_golden("current-v1.sealed", &pointer.to_bytes());
    assert_eq!(committed.len(), SEALED_POINTER_BYTES as usize);
    assert_eq!(&committed[..8], b"AOF2SPTR");
    assert_eq!(SealedPointer::decode(&committed).unwrap(), pointer);
}

// ---------------------------------------------------------------------------------
// Single bit flips

#[test]
fn golden_ack_hint_encodes_and_decodes() {
    let hint = AckHint {
        segment_id: SegmentId(3),
        next_offset: 5,
    };
    let committed = check_golden("acknowledged-v1", &hint.to_bytes());
    assert_eq!(&committed[..8], b"AOF2ACKH");
    assert_eq!(AckHint::decode(&committed).unwrap(), hint);
}

#[test]
fn every_bit_flip_of_a_sealed_segment_is_detected() {
    let built = golden_sealed();
    let records = golden_records();
    for bit in 0..built.bytes.len() * 8 {
        let mut flipped = built.bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let byte = bit / 8;
        assert!(
            SealedSegment::decode(&flipped).is_err(),
            "flipped bit {bit} (byte {byte}) was accepted"
        );
        // The scanner never reports the damaged file as sealed, and whatever prefix it
        // keeps is made of the original records.
        match scan_tail(&flipped) {
            Err(_) => {}
            Ok(TailScan::Sealed { .. }) => panic!("flipped bit {bit} scanned as sealed"),
            Ok(TailScan::Active(tail)) => {
                let count = tail.record_count as usize;
                assert!(count <= records.len(), "bit {bit}");
                assert_prefix(&tail, &built, &records, count);
            }
        }
    }
}

#[test]
fn every_bit_flip_of_the_pointer_is_detected() {
    let bytes = golden_pointer(12345).to_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes;
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            SealedPointer::decode(&flipped).is_err(),
            "flipped bit {bit} was accepted"
        );
    }
}

#[test]
fn a_bit_flip_in_the_footer_leaves_all_records_recoverable() {
    // A torn or damaged seal must not cost records: the scanner falls back to the
    // active walk and keeps every frame.
    let built = golden_sealed();
    let footer_position = built.digest.durable_bytes() as usize;
    let mut flipped = built.bytes.clone();
    flipped[footer_position + 3] ^= 0x10;
    let tail = scan_active(&flipped);
    assert_prefix(&tail, &built, &golden_records(), 5);
    assert_eq!(tail.dropped_bytes, u64::from(SEGMENT_FOOTER_BYTES));
}

// ---------------------------------------------------------------------------------
// Tail scanner, exhaustive on a small segment

#[test]
fn cutting_an_active_segment_at_every_byte_keeps_the_whole_records() {
    let records = golden_records();
    let built = build_active(&golden_header(), &records);
    for cut in 0..=built.bytes.len() {
        let bytes = &built.bytes[..cut];
        if cut < SEGMENT_HEADER_BYTES as usize {
            let error = scan_tail(bytes).unwrap_err();
            assert!(
                matches!(error, SegmentError::Decode(DecodeError::Truncated { .. })),
                "cut {cut}: {error}"
            );
            continue;
        }
        let whole = (0..records.len())
            .filter(|index| built.frame_end(*index) <= cut as u64)
            .count();
        let tail = scan_active(bytes);
        assert_prefix(&tail, &built, &records, whole);
        assert_eq!(
            tail.valid_bytes + tail.dropped_bytes,
            cut as u64,
            "cut {cut}"
        );
        assert_eq!(
            tail.stop_reason.is_some(),
            tail.dropped_bytes > 0,
            "cut {cut}"
        );
    }
}

#[test]
fn zero_and_junk_tails_are_truncated() {
    let records = golden_records();
    let built = build_active(&golden_header(), &records);
    let mut zeros = built.bytes.clone();
    zeros.resize(zeros.len() + 4096, 0);
    let tail = scan_active(&zeros);
    assert_prefix(&tail, &built, &records, records.len());
    assert_eq!(tail.dropped_bytes, 4096);

    let mut junk = built.bytes.clone();
    junk.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let tail = scan_active(&junk);
    assert_prefix(&tail, &built, &records, records.len());
    assert_eq!(tail.dropped_bytes, 5000);
}

#[test]
fn corrupting_any_byte_of_a_middle_record_is_reported_at_that_record() {
    let records = golden_records();
    let built = build_active(&golden_header(), &records);
    for index in 0..records.len() - 1 {
        let start = built.positions[index];
        for byte in start..built.frame_end(index) {
            let mut corrupt = built.bytes.clone();
            corrupt[byte as usize] ^= 0x5a;
            let error = scan_tail(&corrupt).unwrap_err();
            match error {
                SegmentError::CorruptBeforeValidRecord {
                    position,
                    expected_offset,
                    valid_offset,
                    ..
                } => {
                    assert_eq!(position, start, "record {index} byte {byte}");
                    assert_eq!(expected_offset, 1000 + index as u64);
                    assert!(valid_offset > expected_offset);
                }
                other => panic!("record {index} byte {byte}: {other}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Property tests

fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..4096),
    )
        .prop_map(|(timestamp_ms, ext_id, flags, payload)| OwnedRecord {
            timestamp_ms,
            ext_id,
            flags,
            payload,
        })
}

fn records_strategy(max: usize) -> impl Strategy<Value = Vec<OwnedRecord>> {
    prop::collection::vec(record_strategy(), 0..max)
}

fn header_strategy() -> impl Strategy<Value = SegmentHeader> {
    // Leave room for the offsets of the records after the base.
    (any::<u64>(), 0..u64::MAX - 1_000, any::<u64>()).prop_map(
        |(segment_id, base_offset, created_at_ms)| SegmentHeader {
            segment_id: SegmentId(segment_id),
            base_offset,
            created_at_ms,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn record_frames_round_trip(record in record_strategy(), offset in 0..u64::MAX, position in any::<u64>()) {
        let mut buf = Vec::new();
        record.at(offset).encode(&mut buf);
        prop_assert_eq!(buf.len() as u64, record.at(offset).frame_bytes());
        let framed = Record::decode(&buf, position).unwrap();
        prop_assert_eq!(framed.record, record.at(offset));
        prop_assert_eq!(framed.position, position);
        prop_assert_eq!(framed.frame_bytes(), buf.len() as u64);
    }

    #[test]
    fn headers_round_trip(header in header_strategy()) {
        let mut buf = Vec::new();
        header.encode(&mut buf);
        prop_assert_eq!(buf.len(), SEGMENT_HEADER_BYTES as usize);
        prop_assert_eq!(SegmentHeader::decode(&buf).unwrap(), header);
    }

    #[test]
    fn footers_round_trip(
        record_count in any::<u64>(),
        position in any::<u64>(),
        last_ext_id in any::<u64>(),
        coordinator_watermark in any::<u64>(),
        sealed_at_ms in any::<u64>(),
        segment_crc in any::<u32>(),
        flush_failure in any::<bool>(),
    ) {
        let footer = SegmentFooter {
            record_count,
            durable_bytes: position,
            last_ext_id,
            coordinator_watermark,
            sealed_at_ms,
            segment_crc,
            flush_failure,
        };
        let mut buf = Vec::new();
        footer.encode(&mut buf);
        prop_assert_eq!(buf.len(), SEGMENT_FOOTER_BYTES as usize);
        prop_assert!(SegmentFooter::has_trailing_magic(&buf));
        prop_assert_eq!(SegmentFooter::decode(&buf, position).unwrap(), footer);
    }

    #[test]
    fn pointers_round_trip(segment_id in any::<u64>(), durable_bytes in any::<u64>(), coordinator_watermark in any::<u64>()) {
        let pointer = SealedPointer {
            segment_id: SegmentId(segment_id),
            durable_bytes,
            coordinator_watermark,
        };
        let mut buf = Vec::new();
        pointer.encode(&mut buf);
        prop_assert_eq!(SealedPointer::decode(&buf).unwrap(), pointer);
    }

    #[test]
    fn sealed_segments_round_trip(
        header in header_strategy(),
        records in records_strategy(12),
        watermark in any::<u64>(),
        flush_failure in any::<bool>(),
        sealed_at_ms in any::<u64>(),
    ) {
        let built = seal(build_active(&header, &records), watermark, flush_failure, sealed_at_ms);
        let sealed = SealedSegment::decode(&built.bytes).unwrap();
        prop_assert_eq!(*sealed.header(), header);
        prop_assert_eq!(sealed.footer().record_count, records.len() as u64);
        prop_assert_eq!(sealed.footer().coordinator_watermark, watermark);
        prop_assert_eq!(sealed.footer().flush_failure, flush_failure);
        prop_assert_eq!(sealed.footer().sealed_at_ms, sealed_at_ms);
        prop_assert_eq!(sealed.footer().last_ext_id, records.last().map_or(0, |r| r.ext_id));
        let decoded: Vec<_> = sealed.records().collect();
        prop_assert_eq!(decoded.len(), records.len());
        for (index, (framed, expected)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(framed.record, expected.at(header.base_offset + index as u64));
            prop_assert_eq!(framed.position, built.positions[index]);
        }
        let boundaries: Vec<_> = sealed.record_boundaries().collect();
        let expected: Vec<_> = built
            .positions
            .iter()
            .enumerate()
            .map(|(index, position)| RecordBoundary {
                offset: header.base_offset + index as u64,
                position: *position,
            })
            .collect();
        prop_assert_eq!(boundaries, expected);
        let is_sealed = matches!(scan_tail(&built.bytes), Ok(TailScan::Sealed { .. }));
        prop_assert!(is_sealed);
    }

    #[test]
    fn tail_scan_keeps_the_records_before_a_cut(
        header in header_strategy(),
        records in records_strategy(10),
        cut_fraction in 0.0..=1.0f64,
    ) {
        let built = build_active(&header, &records);
        let header_bytes = SEGMENT_HEADER_BYTES as usize;
        let cut = header_bytes + ((built.bytes.len() - header_bytes) as f64 * cut_fraction) as usize;
        let whole = (0..records.len())
            .filter(|index| built.frame_end(*index) <= cut as u64)
            .count();
        let tail = scan_active(&built.bytes[..cut]);
        assert_prefix(&tail, &built, &records, whole);
        prop_assert_eq!(tail.dropped_bytes, cut as u64 - tail.valid_bytes);
    }

    #[test]
    fn tail_scan_truncates_garbage_tails(
        header in header_strategy(),
        records in records_strategy(8),
        garbage in prop::collection::vec(any::<u8>(), 1..8192),
        zeros in 0..8192usize,
    ) {
        let built = build_active(&header, &records);
        let mut bytes = built.bytes.clone();
        bytes.extend_from_slice(&garbage);
        bytes.resize(bytes.len() + zeros, 0);
        let tail = scan_active(&bytes);
        assert_prefix(&tail, &built, &records, records.len());
        prop_assert_eq!(tail.dropped_bytes, (garbage.len() + zeros) as u64);
    }

    #[test]
    fn tail_scan_reports_a_corrupt_middle_record(
        header in header_strategy(),
        records in records_strategy(8),
        pick in any::<prop::sample::Index>(),
        byte_pick in any::<prop::sample::Index>(),
        mask in 1..=255u8,
        torn_tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assume!(records.len() >= 2);
        let built = build_active(&header, &records);
        let index = pick.index(records.len() - 1);
        let start = built.positions[index];
        let frame_bytes = built.frame_end(index) - start;
        let byte = start + byte_pick.index(frame_bytes as usize) as u64;
        let mut bytes = built.bytes.clone();
        bytes[byte as usize] ^= mask;
        // A torn tail after the valid records changes nothing.
        bytes.extend_from_slice(&torn_tail);
        match scan_tail(&bytes) {
            Err(SegmentError::CorruptBeforeValidRecord { position, expected_offset, .. }) => {
                prop_assert_eq!(position, start);
                prop_assert_eq!(expected_offset, header.base_offset + index as u64);
            }
            other => prop_assert!(false, "expected corruption at {start}, got {other:?}"),
        }
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        position in any::<u64>(),
    ) {
        let _ = SegmentHeader::decode(&bytes);
        let _ = Record::decode(&bytes, position);
        let _ = Record::decode_at(&bytes, position % (bytes.len() as u64 + 2));
        let _ = SegmentFooter::decode(&bytes, position);
        let _ = SealedSegment::decode(&bytes);
        let _ = scan_tail(&bytes);
        let _ = SealedPointer::decode(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_damaged_segments(
        records in records_strategy(6),
        sealed in any::<bool>(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        // Mostly-valid input reaches deeper than random bytes: past the magics and CRCs
        // of the header, into the frame walk, the footer and the tail search.
        let built = build_active(&golden_header(), &records);
        let built = if sealed { seal(built, 1, false, 2) } else { built };
        let mut bytes = built.bytes.clone();
        for (at, value) in &damage {
            let index = at.index(bytes.len());
            bytes[index] = *value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = SealedSegment::decode(&bytes);
        let _ = scan_tail(&bytes);
        let pointer = SealedPointer::decode(&bytes[..bytes.len().min(SEALED_POINTER_BYTES as usize)]);
        prop_assert!(pointer.is_err());
        if let Ok(sealed) = SealedSegment::decode(&bytes) {
            // Damage that still decodes must have been a no-op on the bytes.
            prop_assert_eq!(sealed.bytes(), &built.bytes[..]);
        }
    }
}

#[test]
fn frame_header_size_is_what_the_docs_draw() {
    // docs/format.md draws these sizes; a change must update the docs.
    assert_eq!(SEGMENT_HEADER_BYTES, 40);
    assert_eq!(SEGMENT_RECORD_FRAME_HEADER_BYTES, 36);
    assert_eq!(SEGMENT_FOOTER_BYTES, 60);
    assert_eq!(SEALED_POINTER_BYTES, 40);
}
