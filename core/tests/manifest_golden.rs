//! Golden files of the manifest formats (chunk and snapshot, version 1), compared byte
//! for byte, so a format change is always deliberate and an old file always still
//! reads.
//!
//! **Invariants checked**
//! - The writer, driven the same way, produces exactly `chunk_v1.mlog`.
//! - `chunk_v1.mlog` decodes to the expected records (all sixteen types), sealed, with
//!   no corruption and nothing trimmed.
//! - The snapshot of its replay encodes to exactly `snapshot_v1.snap`, and that file
//!   decodes back to the same snapshot.
//!
//! Regenerate after a deliberate format change (and bump the format version):
//!
//! ```text
//! AOF2_BLESS=1 cargo test -p aof2-core --test manifest_golden
//! ```

// Test code reads and writes the golden files on the real filesystem and reads the
// AOF2_BLESS switch from the environment; core itself stays sans-IO.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use aof2_core::SegmentId;
use aof2_core::io::{DiskCompletion, DiskRequest, LocalPath};
use aof2_core::manifest::{
    DecodedFrame, ManifestEvent, ManifestRecord, ManifestWriter, ManifestWriterConfig, ReasonCode,
    Replayer, Snapshot, Tier, WriterStart, chunk_file_name, decode_chunk,
};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/manifest")
        .join(name)
}

/// Compares `bytes` with the golden file `name`, or rewrites it under `AOF2_BLESS=1`.
fn check_golden(name: &str, bytes: &[u8]) {
    let path = golden_path(name);
    if std::env::var_os("AOF2_BLESS").is_some_and(|value| value == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let golden = std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run with AOF2_BLESS=1 to create it",
            path.display()
        )
    });
    if let Some(first) = golden.iter().zip(bytes).position(|(a, b)| a != b) {
        panic!(
            "{name} differs from the golden file at byte {first}; if the format change is deliberate, bump the version and run with AOF2_BLESS=1"
        );
    }
    assert_eq!(golden.len(), bytes.len(), "{name}: length differs");
}

/// One record of each of the sixteen types, in an order a stream could produce.
fn golden_records() -> Vec<ManifestRecord> {
    let s1 = SegmentId(1);
    let key = "segments/orders/00000000000000000001.zst".to_owned();
    vec![
        ManifestRecord::SegmentOpened {
            segment_id: s1,
            base_offset: 0,
            opened_at_ms: 1_700_000_000_000,
        },
        ManifestRecord::SealSegment {
            segment_id: s1,
            base_offset: 0,
            record_count: 1000,
            durable_bytes: 65_536,
            checksum: 0xDEAD_BEEF,
            last_ext_id: 999,
            coordinator_watermark: 1000,
            flush_failure: false,
            sealed_at_ms: 1_700_000_001_000,
        },
        ManifestRecord::CompressionStarted {
            segment_id: s1,
            job_id: 7,
        },
        ManifestRecord::CompressionFailed {
            segment_id: s1,
            job_id: 7,
            reason: ReasonCode::NoSpace,
            attempt: 1,
        },
        ManifestRecord::CompressionDone {
            segment_id: s1,
            job_id: 7,
            original_bytes: 65_536,
            compressed_bytes: 12_000,
            frame_count: 1,
            artifact_checksum: 0x0BAD_CAFE,
        },
        ManifestRecord::LocalEvicted {
            segment_id: s1,
            tier: Tier::Tier0,
        },
        ManifestRecord::UploadStarted {
            segment_id: s1,
            key: key.clone(),
            attempt: 1,
        },
        ManifestRecord::UploadFailed {
            segment_id: s1,
            key: key.clone(),
            reason: ReasonCode::Throttled,
            attempt: 1,
        },
        ManifestRecord::UploadDone {
            segment_id: s1,
            key: key.clone(),
            etag: "\"9b2cf535f27731c974343645a3985328\"".to_owned(),
            object_bytes: 12_000,
        },
        ManifestRecord::LocalEvicted {
            segment_id: s1,
            tier: Tier::Tier1,
        },
        ManifestRecord::HydrationStarted {
            segment_id: s1,
            source: Tier::Tier2,
        },
        ManifestRecord::HydrationFailed {
            segment_id: s1,
            source: Tier::Tier2,
            reason: ReasonCode::Timeout,
            attempt: 1,
        },
        ManifestRecord::HydrationDone {
            segment_id: s1,
            source: Tier::Tier2,
            bytes: 65_536,
        },
        ManifestRecord::Tier2DeleteQueued {
            segment_id: s1,
            key: key.clone(),
            reason: ReasonCode::RetentionAge,
        },
        ManifestRecord::Tier2Deleted {
            segment_id: s1,
            key,
        },
        ManifestRecord::SnapshotMarker {
            snapshot_id: 3,
            chunk_index: 0,
            chunk_offset: 1024,
            record_ordinal: 0,
        },
        ManifestRecord::CustomEvent {
            kind: 42,
            blob: Bytes::from_static(b"compaction: merged 1..4"),
        },
        ManifestRecord::SegmentOpened {
            segment_id: SegmentId(2),
            base_offset: 1000,
            opened_at_ms: 1_700_000_002_000,
        },
    ]
}

/// Drives a fresh writer over an in-memory disk: two commits, then a seal by the
/// rotation period. Returns the bytes of chunk 0.
fn write_golden_chunk(records: &[ManifestRecord]) -> Vec<u8> {
    let dir = LocalPath::from_components(&["streams", "orders", "manifest"]);
    let config = ManifestWriterConfig {
        chunk_capacity_bytes: 16 * 1024,
        rotation_period_ms: 250,
    };
    let mut files: BTreeMap<LocalPath, Vec<u8>> = BTreeMap::new();
    let mut writer = ManifestWriter::new(config, dir.clone(), WriterStart::fresh(), 0).unwrap();
    let mut run = |writer: &mut ManifestWriter, now_ms: u64| {
        while let Some((id, request)) = writer.poll_request() {
            match request {
                DiskRequest::Create { path } => {
                    files.insert(path, Vec::new());
                }
                DiskRequest::WriteAt {
                    path,
                    offset,
                    bytes,
                } => {
                    let file = files.entry(path).or_default();
                    let end = offset as usize + bytes.len();
                    if file.len() < end {
                        file.resize(end, 0);
                    }
                    file[offset as usize..end].copy_from_slice(&bytes);
                }
                DiskRequest::Rename { from, to } => {
                    let file = files.remove(&from).unwrap();
                    files.insert(to, file);
                }
                DiskRequest::SyncFile { .. } | DiskRequest::SyncDir { .. } => {}
                other => panic!("unexpected request {other:?}"),
            }
            writer.handle_completion(now_ms, id, DiskCompletion::Done);
            writer.check_invariants();
        }
    };
    run(&mut writer, 0);
    let (first, second) = records.split_at(records.len() / 2);
    for (now_ms, batch) in [(10, first), (20, second)] {
        for record in batch {
            writer.append(now_ms, record).unwrap();
        }
        writer.commit(now_ms).unwrap();
        run(&mut writer, now_ms);
    }
    assert_eq!(writer.poll_timeout(), Some(260));
    writer.handle_timeout(260);
    run(&mut writer, 260);
    let events: Vec<ManifestEvent> = std::iter::from_fn(|| writer.poll_event()).collect();
    assert!(
        events.contains(&ManifestEvent::ChunkSealed {
            chunk_index: 0,
            path: dir.join(&chunk_file_name(0)),
        }),
        "{events:?}"
    );
    files.remove(&dir.join(&chunk_file_name(0))).unwrap()
}

#[test]
fn golden_chunk_bytes_are_stable() {
    let records = golden_records();
    let mut types: Vec<u16> = records.iter().map(|r| r.record_type() as u16).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), 16, "the golden chunk holds every record type");
    check_golden("chunk_v1.mlog", &write_golden_chunk(&records));
}

#[test]
fn golden_chunk_still_decodes() {
    let bytes = std::fs::read(golden_path("chunk_v1.mlog")).unwrap();
    let decoded = decode_chunk(0, &bytes);
    assert_eq!(decoded.corruptions, vec![]);
    assert_eq!(decoded.trimmed_bytes, 0);
    let commit = decoded.commit.unwrap();
    assert!(commit.flags.sealed);
    assert_eq!(commit.commit_sequence, 3, "two commits and the seal");
    let expected = golden_records();
    assert_eq!(decoded.frames.len(), expected.len());
    for (position, (frame, record)) in decoded.frames.iter().zip(&expected).enumerate() {
        let DecodedFrame::Known(known) = &frame.frame else {
            panic!("frame {position} is not a known record");
        };
        assert_eq!(known.ordinal, position as u64);
        assert_eq!(&known.record, record, "frame {position}");
        let timestamp = if position < expected.len() / 2 {
            10
        } else {
            20
        };
        assert_eq!(known.timestamp_ms, timestamp);
    }
}

fn golden_snapshot() -> Snapshot {
    let bytes = std::fs::read(golden_path("chunk_v1.mlog")).unwrap();
    let mut replayer = Replayer::new(None);
    replayer.replay_chunk(0, 0, &bytes).unwrap();
    let outcome = replayer.finish(0);
    assert_eq!(outcome.figures.corruption_events, 0);
    assert_eq!(outcome.index.segments().len(), 2);
    Snapshot::new(1, outcome.position, outcome.index).unwrap()
}

#[test]
fn golden_snapshot_bytes_are_stable() {
    check_golden("snapshot_v1.snap", &golden_snapshot().to_bytes());
}

#[test]
fn golden_snapshot_still_decodes() {
    let bytes = std::fs::read(golden_path("snapshot_v1.snap")).unwrap();
    let decoded = Snapshot::decode(&bytes).unwrap();
    decoded.index().check_invariants();
    assert_eq!(decoded, golden_snapshot());
    assert_eq!(decoded.position().record_ordinal, 18);
    let segment = decoded.index().segment(SegmentId(1)).unwrap();
    assert!(segment.local.tier0, "hydrated back into Tier 0");
    assert_eq!(segment.tier2_object, None, "deleted from Tier 2");
    assert_eq!(decoded.index().custom_event_count(), 1);
    assert_eq!(decoded.index().last_snapshot().unwrap().snapshot_id, 3);
}
