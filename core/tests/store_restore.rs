//! Restoring a stream from Tier 2 alone after its node lost the whole disk: the store
//! driven by the real `driver::run` over `MemoryPorts`, every component's invariants
//! checked after every step. A "disk loss" is a fresh `MemoryDisk` over the same
//! `MemoryObjectStore`.
//!
//! **Invariants checked**
//! - A restored stream's next offset is the end of the last segment Tier 2 holds;
//!   exactly the records of the never-uploaded active segment are gone.
//! - Every restored record reads back byte-identical (payload, offset, ext_id)
//!   through `StoreCommand::Read`, hydrated from Tier 2; appends continue densely
//!   from the restored next offset, and a later local reopen keeps all of it.
//! - A snapshot in Tier 2 is the replay's start: only the chunks from its chunk on
//!   are downloaded.
//! - Segment objects whose `UploadDone` records were only in the lost unsealed chunk
//!   are adopted from their artifacts, and the manifest is whole again.
//! - A segment object missing between two present ones is a typed
//!   `StoreError::Recovery` naming the missing key; nothing is written under a final
//!   name. Under a retention policy that, applied now, deletes through the gap, the
//!   gap is retention's: the restored stream starts after it, and the present objects
//!   below it are deleted again.
//! - An empty Tier 2 opens a new stream at offset 0.

use aof2_core::artifact::decode_all;
use aof2_core::driver::{
    CommandSender, DiskPort, DriverLimits, Machine, ObjectStorePort, command_channel, run,
};
use aof2_core::manifest::chunk::parse_chunk_file_name;
use aof2_core::manifest::index::{Lifecycle, ManifestIndex};
use aof2_core::manifest::replay::Replayer;
use aof2_core::memory_ports::MemoryPorts;
use aof2_core::names::{ObjectKey, StreamName, manifest_dir};
use aof2_core::segment::SealedSegment;
use aof2_core::store::{ReadMode, Store, StoreCommand, StoreConfig, StoreError, StoreReply};
use aof2_core::tier2::RetentionPolicy;
use bytes::Bytes;
use futures::executor::block_on;
use futures::future::join;
use std::collections::BTreeMap;

const STREAM: &str = "ledger";

const WAIT: ReadMode = ReadMode {
    wait: true,
    sequential: false,
};

fn limits() -> DriverLimits {
    DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    }
}

fn name() -> StreamName {
    StreamName::new(STREAM).unwrap()
}

/// A payload that names its offset, 600 bytes to ~1.6 KiB.
fn payload(offset: u64) -> Bytes {
    let fill = 600 + (offset * 97) % 1024;
    let mut bytes = format!("record-{offset:08}-").into_bytes();
    bytes.extend((0..fill).map(|i| (i * 31 + offset) as u8));
    Bytes::from(bytes)
}

/// Small segments (many seals and uploads), small manifest chunks (several seal and
/// reach Tier 2), no periodic snapshots.
fn config(chunk_capacity_bytes: u32) -> StoreConfig {
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 16 * 1024;
    config.tier0.cluster_max_bytes = 1024 * 1024;
    config.manifest.chunk_capacity_bytes = chunk_capacity_bytes;
    config.snapshot_every_records = 0;
    config.snapshot_interval_ms = 0;
    config
}

/// Ports over a fresh disk and a frozen clock: only sizes roll segments and chunks.
fn frozen(memory: MemoryPorts) -> MemoryPorts {
    memory.clock.freeze();
    memory
}

async fn open(sender: &CommandSender<Store>) -> StoreReply {
    sender
        .call(StoreCommand::OpenStream {
            name: STREAM.into(),
        })
        .await
        .unwrap()
}

async fn append(sender: &CommandSender<Store>, offset: u64) {
    let reply = sender
        .call(StoreCommand::Append {
            stream: name(),
            payload: payload(offset),
            ext_id: Some(offset + 1),
            wait: true,
        })
        .await
        .unwrap();
    assert_eq!(reply, StoreReply::Appended(offset), "append {offset}");
}

async fn wait_durable(sender: &CommandSender<Store>, offset: u64) {
    let durable = sender
        .call(StoreCommand::WaitDurable {
            stream: name(),
            offset,
        })
        .await
        .unwrap();
    assert!(matches!(durable, StoreReply::Durable { .. }), "{durable:?}");
}

async fn read(sender: &CommandSender<Store>, offset: u64) -> StoreReply {
    sender
        .call(StoreCommand::Read {
            stream: name(),
            offset,
            mode: WAIT,
        })
        .await
        .unwrap()
}

fn assert_record(reply: &StoreReply, offset: u64) {
    match reply {
        StoreReply::Record(record) => {
            assert_eq!(record.offset, offset);
            assert_eq!(record.ext_id, offset + 1, "ext_id of {offset}");
            assert_eq!(record.payload, payload(offset), "payload of {offset}");
        }
        other => panic!("read {offset}: expected a record, got {other:?}"),
    }
}

async fn close(sender: &CommandSender<Store>) {
    assert_eq!(
        sender.call(StoreCommand::Close).await.unwrap(),
        StoreReply::Closed
    );
}

/// The first life of the stream: appends `0..records`, optionally snapshots after
/// `snapshot_after` of them, waits until all are durable, closes.
fn write_stream(
    memory: &MemoryPorts,
    config: StoreConfig,
    records: u64,
    snapshot_after: Option<u64>,
) -> Store {
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        assert!(
            matches!(opened, StoreReply::Opened { next_offset: 0, .. }),
            "{opened:?}"
        );
        for offset in 0..records {
            append(&sender, offset).await;
            if snapshot_after == Some(offset + 1) {
                wait_durable(&sender, offset).await;
                let snapshot = sender
                    .call(StoreCommand::Snapshot { stream: name() })
                    .await
                    .unwrap();
                assert!(
                    matches!(snapshot, StoreReply::Snapshot { .. }),
                    "{snapshot:?}"
                );
            }
        }
        wait_durable(&sender, records - 1).await;
        close(&sender).await;
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
    store
}

/// What Tier 2 holds of the stream: segment id -> (base offset, record count), by
/// decompressing every segment object.
fn tier2_segments(memory: &MemoryPorts) -> BTreeMap<u64, (u64, u64)> {
    let mut segments = BTreeMap::new();
    for key in memory.object_store.keys() {
        let Ok(ObjectKey::Segment { segment_id, .. }) = ObjectKey::parse(&key) else {
            continue;
        };
        let bytes = decode_all(&memory.object_store.object(&key).unwrap()).unwrap();
        let sealed = SealedSegment::decode(&bytes).unwrap();
        let base = sealed.header().base_offset;
        segments.insert(segment_id.0, (base, sealed.footer().record_count));
    }
    segments
}

/// The manifest index the sealed chunks in Tier 2 alone rebuild (no snapshot).
fn tier2_manifest_index(memory: &MemoryPorts) -> ManifestIndex {
    let mut replayer = Replayer::new(None);
    for key in memory.object_store.keys() {
        if let Ok(ObjectKey::ManifestChunk { chunk_index, .. }) = ObjectKey::parse(&key) {
            let bytes = memory.object_store.object(&key).unwrap();
            replayer.replay_chunk(0, chunk_index, &bytes).unwrap();
        }
    }
    replayer.finish(0).index
}

fn chunk_objects(memory: &MemoryPorts) -> usize {
    memory
        .object_store
        .keys()
        .iter()
        .filter(|key| matches!(ObjectKey::parse(key), Ok(ObjectKey::ManifestChunk { .. })))
        .count()
}

/// The end of the last segment Tier 2 holds, checking the held segments are dense.
fn tier2_end(segments: &BTreeMap<u64, (u64, u64)>) -> u64 {
    let mut end = None;
    for (&id, &(base, count)) in segments {
        if let Some((previous, previous_end)) = end {
            assert_eq!(id, previous + 1, "segment ids in Tier 2 are dense");
            assert_eq!(base, previous_end, "segment offsets in Tier 2 are dense");
        }
        end = Some((id, base + count));
    }
    end.map_or(0, |(_, end)| end)
}

/// The second life, on a new disk: opens, reads back `0..restored`, appends
/// `restored..restored + more`, reads those, closes. Returns the store and the open's
/// reply.
fn restore_and_continue(memory: &MemoryPorts, config: StoreConfig, more: u64) -> (Store, u64) {
    let store = Store::new(config, 20_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let restored = match open(&sender).await {
            StoreReply::Opened { next_offset, .. } => next_offset,
            other => panic!("restore failed: {other:?}"),
        };
        for offset in 0..restored {
            assert_record(&read(&sender, offset).await, offset);
        }
        // Nothing past the restored end was ever appended in this life.
        let past = sender
            .call(StoreCommand::Read {
                stream: name(),
                offset: restored + 1,
                mode: ReadMode::default(),
            })
            .await
            .unwrap();
        assert!(
            matches!(past, StoreReply::Error(StoreError::NotAppended { .. })),
            "{past:?}"
        );
        for offset in restored..restored + more {
            append(&sender, offset).await;
        }
        wait_durable(&sender, restored + more - 1).await;
        for offset in restored..restored + more {
            assert_record(&read(&sender, offset).await, offset);
        }
        close(&sender).await;
        restored
    };
    let (store, restored) = block_on(join(driver, calls));
    store.check_invariants();
    (store, restored)
}

/// A third life on the restore's disk: a plain local reopen keeps everything.
fn reopen_locally(memory: &MemoryPorts, config: StoreConfig, next_offset: u64) {
    let store = Store::new(config, 30_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        assert_eq!(
            opened,
            StoreReply::Opened {
                stream: name(),
                next_offset
            }
        );
        for offset in (0..next_offset).step_by(7) {
            assert_record(&read(&sender, offset).await, offset);
        }
        close(&sender).await;
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
    let summary = store.recovery_summary(&name()).unwrap();
    assert!(!summary.restored_from_tier2, "a local reopen: {summary:?}");
}

/// The manifest index is dense, every sealed segment has a copy, and exactly one
/// segment, the newest, is open, at or below `next_offset`.
fn check_index(index: &ManifestIndex, next_offset: u64) {
    index.check_invariants();
    let mut expected = None;
    let mut open = Vec::new();
    for entry in index.segments().values() {
        if let Some(base) = expected {
            assert_eq!(
                entry.base_offset, base,
                "segment {} is dense",
                entry.segment_id
            );
        }
        match entry.lifecycle {
            Lifecycle::Sealed(seal) => {
                assert!(entry.tier2_object.is_some() || entry.local.tier0);
                expected = Some(entry.base_offset + seal.record_count);
            }
            Lifecycle::Open => {
                open.push(entry.base_offset);
                expected = None;
            }
        }
    }
    assert_eq!(
        open.len(),
        1,
        "exactly the active segment is open: {open:?}"
    );
    assert!(open[0] <= next_offset);
    assert!(expected.is_none(), "the open segment is the newest");
}

#[test]
fn a_lost_disk_is_rebuilt_from_tier2_up_to_the_last_uploaded_segment() {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    let config = config(16 * 1024);
    // Not a multiple of a segment's records: the active segment holds some.
    let records = 1_510;
    let first = write_stream(&memory, config, records, None);
    let before = first.manifest_index(&name()).unwrap().clone();
    let (&active_id, active) = before.segments().iter().next_back().unwrap();
    assert_eq!(
        active.lifecycle,
        Lifecycle::Open,
        "the active segment stays open"
    );
    let held = tier2_segments(&memory);
    let end = tier2_end(&held);
    assert!(
        held.len() > 20,
        "many segments reached Tier 2: {}",
        held.len()
    );
    let chunks = chunk_objects(&memory);
    assert!(chunks >= 2, "several manifest chunks sealed");
    // Exactly the active segment's records were never uploaded.
    assert_eq!(*held.keys().next_back().unwrap() + 1, active_id.0);
    assert_eq!(active.base_offset, end);
    assert!(end < records, "the active segment held records");

    let lost = MemoryPorts::with_object_store(20_000, 2, memory.object_store.clone());
    let lost = frozen(lost);
    let more = 200;
    let (second, restored) = restore_and_continue(&lost, config, more);
    assert_eq!(
        restored, end,
        "records {end}..{records} were only in the active segment"
    );
    let summary = second.recovery_summary(&name()).unwrap().clone();
    assert!(summary.restored_from_tier2, "{summary:?}");
    assert_eq!(summary.next_offset, end);
    assert_eq!(summary.segments_restored, held.len() as u64);
    assert_eq!(summary.chunks_restored, chunks as u64);
    let index = second.manifest_index(&name()).unwrap();
    check_index(index, end + more);
    // The restored chunks are local files again.
    let chunk_files = lost
        .disk
        .paths()
        .into_iter()
        .filter(|path| {
            path.strip_prefix(&format!("{}/", manifest_dir(&name())))
                .and_then(parse_chunk_file_name)
                .is_some()
        })
        .count();
    assert!(chunk_files > chunks, "restored chunks plus new ones");

    reopen_locally(&lost, config, end + more);
}

#[test]
fn a_snapshot_in_tier2_starts_the_replay() {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    let config = config(16 * 1024);
    let records = 1_500;
    write_stream(&memory, config, records, Some(1_000));
    let held = tier2_segments(&memory);
    let end = tier2_end(&held);
    let snapshots: Vec<String> = memory
        .object_store
        .keys()
        .into_iter()
        .filter(|key| matches!(ObjectKey::parse(key), Ok(ObjectKey::Snapshot { .. })))
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let chunks = chunk_objects(&memory);

    let lost = frozen(MemoryPorts::with_object_store(
        20_000,
        2,
        memory.object_store.clone(),
    ));
    let (second, restored) = restore_and_continue(&lost, config, 100);
    assert_eq!(restored, end);
    let summary = second.recovery_summary(&name()).unwrap();
    assert_eq!(summary.snapshot_id, Some(0), "{summary:?}");
    assert!(
        summary.chunks_restored < chunks as u64,
        "only the chunks from the snapshot's on: {summary:?}"
    );
    assert!(
        lost.disk.paths().iter().any(|path| path.ends_with(".snap")),
        "the snapshot is a local file again"
    );
    reopen_locally(&lost, config, end + 100);
    // A later snapshot takes a new id: the object under id 0 is immutable.
    let snapshot = snapshot_now(&lost, config);
    assert!(
        matches!(snapshot, StoreReply::Snapshot { snapshot_id: 1, .. }),
        "{snapshot:?}"
    );
}

/// Opens the stream on the ports' disk and takes a snapshot.
fn snapshot_now(memory: &MemoryPorts, config: StoreConfig) -> StoreReply {
    let store = Store::new(config, 40_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
        let snapshot = sender
            .call(StoreCommand::Snapshot { stream: name() })
            .await
            .unwrap();
        close(&sender).await;
        snapshot
    };
    let (store, snapshot) = block_on(join(driver, calls));
    store.check_invariants();
    snapshot
}

#[test]
fn uploads_recorded_only_in_the_lost_chunk_are_adopted_from_the_objects() {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    // The smallest chunk: a few seal, and the newest uploads are only recorded in the
    // active chunk, which never reaches Tier 2.
    let config = config(16 * 1024);
    write_stream(&memory, config, 1_500, None);
    let held = tier2_segments(&memory);
    let end = tier2_end(&held);
    let from_chunks = tier2_manifest_index(&memory);
    let unrecorded: Vec<u64> = held
        .keys()
        .copied()
        .filter(|&id| {
            from_chunks
                .segment(aof2_core::SegmentId(id))
                .is_none_or(|entry| entry.tier2_object.is_none())
        })
        .collect();
    assert!(
        !unrecorded.is_empty(),
        "some uploads are recorded only in the active chunk"
    );
    assert!(
        unrecorded
            .iter()
            .any(|&id| from_chunks.segment(aof2_core::SegmentId(id)).is_none()),
        "some segments are not even opened in the sealed chunks"
    );

    let lost = frozen(MemoryPorts::with_object_store(
        20_000,
        2,
        memory.object_store.clone(),
    ));
    let (second, restored) = restore_and_continue(&lost, config, 50);
    assert_eq!(restored, end);
    let summary = second.recovery_summary(&name()).unwrap();
    assert_eq!(
        summary.segments_adopted,
        unrecorded.len() as u64,
        "{summary:?}"
    );
    let index = second.manifest_index(&name()).unwrap();
    for &id in &unrecorded {
        let entry = index.segment(aof2_core::SegmentId(id)).unwrap();
        assert!(entry.tier2_object.is_some(), "segment {id} adopted");
        let Lifecycle::Sealed(seal) = entry.lifecycle else {
            panic!("segment {id} sealed")
        };
        assert_eq!((entry.base_offset, seal.record_count), held[&id]);
    }
    reopen_locally(&lost, config, end + 50);
}

#[test]
fn only_segment_objects_and_no_manifest_are_all_adopted() {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    // The default chunk is never filled: Tier 2 holds segments and no manifest.
    let config = config(256 * 1024);
    write_stream(&memory, config, 600, None);
    assert_eq!(chunk_objects(&memory), 0);
    let held = tier2_segments(&memory);
    let end = tier2_end(&held);
    assert!(held.len() > 5);

    let lost = frozen(MemoryPorts::with_object_store(
        20_000,
        2,
        memory.object_store.clone(),
    ));
    let (second, restored) = restore_and_continue(&lost, config, 50);
    assert_eq!(restored, end);
    let summary = second.recovery_summary(&name()).unwrap();
    assert_eq!(summary.segments_adopted, held.len() as u64, "{summary:?}");
    assert_eq!(summary.chunks_restored, 0);
    reopen_locally(&lost, config, end + 50);
}

/// Restores after `remove` deleted a middle segment object; returns the open's reply.
fn restore_with_object_removed(
    chunk_capacity_bytes: u32,
    pick: fn(&[u64]) -> u64,
) -> (StoreReply, String, MemoryPorts) {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    let config = config(chunk_capacity_bytes);
    write_stream(&memory, config, 1_500, None);
    let held: Vec<u64> = tier2_segments(&memory).keys().copied().collect();
    let victim = pick(&held);
    let key = format!("segments/{STREAM}/{victim:020}.zst");
    block_on(memory.object_store.delete(&key)).unwrap();

    let lost = frozen(MemoryPorts::with_object_store(
        20_000,
        2,
        memory.object_store.clone(),
    ));
    let store = Store::new(config, 20_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, lost.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        close(&sender).await;
        opened
    };
    let (store, opened) = block_on(join(driver, calls));
    store.check_invariants();
    (opened, key, lost)
}

fn assert_gap_error(opened: &StoreReply, key: &str, lost: &MemoryPorts) {
    match opened {
        StoreReply::Error(StoreError::Recovery { stream, reason }) => {
            assert_eq!(stream, STREAM);
            assert!(reason.contains(key), "the error names {key}: {reason}");
        }
        other => panic!("a gap must fail the open: {other:?}"),
    }
    // Nothing was written under a final name: a later open restores again.
    assert!(
        lost.disk.paths().iter().all(|path| path.ends_with(".tmp")),
        "{:?}",
        lost.disk.paths()
    );
}

#[test]
fn a_missing_middle_object_the_manifest_records_is_a_typed_error() {
    // An early segment: its upload is recorded in a sealed chunk.
    let (opened, key, lost) = restore_with_object_removed(16 * 1024, |held| held[3]);
    assert_gap_error(&opened, &key, &lost);
}

#[test]
fn a_missing_middle_object_among_adopted_ones_is_a_typed_error() {
    // No chunk sealed: every object is adopted, and one between two is missing.
    let (opened, key, lost) = restore_with_object_removed(256 * 1024, |held| held[held.len() / 2]);
    assert_gap_error(&opened, &key, &lost);
}

#[test]
fn an_empty_tier2_opens_a_new_stream() {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    let config = config(16 * 1024);
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        for offset in 0..10 {
            append(&sender, offset).await;
        }
        wait_durable(&sender, 9).await;
        assert_record(&read(&sender, 3).await, 3);
        close(&sender).await;
        opened
    };
    let (store, opened) = block_on(join(driver, calls));
    store.check_invariants();
    assert_eq!(
        opened,
        StoreReply::Opened {
            stream: name(),
            next_offset: 0
        }
    );
    assert!(store.recovery_summary(&name()).is_none(), "a new stream");
}

#[test]
fn a_restore_cut_short_during_its_renames_is_restored_again() {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    let config = config(16 * 1024);
    write_stream(&memory, config, 1_510, None);
    let end = tier2_end(&tier2_segments(&memory));
    assert!(chunk_objects(&memory) >= 2);

    // What a crash after the first rename leaves: the marker and chunk 0 under its
    // final name. Read as a local manifest, it would be a partial history.
    let lost = frozen(MemoryPorts::with_object_store(
        20_000,
        2,
        memory.object_store.clone(),
    ));
    let directory = manifest_dir(&name());
    let chunk = memory
        .object_store
        .object(&format!("manifest/{STREAM}/{:020}.mlog", 0))
        .unwrap();
    let chunk_path = directory.join(&format!("{:020}.mlog", 0));
    let marker = directory.join("restore-in-progress");
    block_on(async {
        lost.disk.create(&marker).await.unwrap();
        lost.disk.create(&chunk_path).await.unwrap();
        lost.disk.write_at(&chunk_path, 0, chunk).await.unwrap();
    });

    let (second, restored) = restore_and_continue(&lost, config, 20);
    assert_eq!(restored, end);
    let summary = second.recovery_summary(&name()).unwrap();
    assert!(summary.restored_from_tier2, "{summary:?}");
    assert!(
        !lost.disk.paths().contains(&marker.to_string()),
        "the marker is gone once the restore finished"
    );
    reopen_locally(&lost, config, end + 20);
}

/// Writes a stream with no retention, then removes the objects of the third and
/// fourth uploaded segments the Tier 2 manifest knows, keeping the two before them:
/// what retention leaves when the deletes of segments 2 and 3 finished and those of
/// 0 and 1 had not, and the disk is lost before their `Tier2DeleteQueued` reached
/// Tier 2. Returns the ports and the known uploaded segments (id, base, bytes).
fn retention_gap() -> (MemoryPorts, Vec<(u64, u64, u64)>) {
    let memory = frozen(MemoryPorts::new(10_000, 2));
    write_stream(&memory, config(16 * 1024), 1_500, None);
    let index = tier2_manifest_index(&memory);
    let known: Vec<(u64, u64, u64)> = index
        .segments()
        .values()
        .map_while(|entry| {
            let object = entry.tier2_object.as_ref()?;
            Some((entry.segment_id.0, entry.base_offset, object.object_bytes))
        })
        .collect();
    assert!(
        known.len() >= 6,
        "enough uploads recorded in Tier 2: {known:?}"
    );
    for &(id, _, _) in &known[2..4] {
        let key = format!("segments/{STREAM}/{id:020}.zst");
        block_on(memory.object_store.delete(&key)).unwrap();
    }
    (memory, known)
}

/// Opens the stream on a new disk over `memory`'s Tier 2 with `max_bytes` retention;
/// waits for retention to settle if it opened. Returns the open's reply, the store
/// and the new disk's ports.
fn restore_under_size_retention(
    memory: &MemoryPorts,
    max_bytes: u64,
) -> (StoreReply, Store, MemoryPorts) {
    let lost = frozen(MemoryPorts::with_object_store(
        20_000,
        2,
        memory.object_store.clone(),
    ));
    let mut config = config(16 * 1024);
    config.tier2.retention = RetentionPolicy {
        max_age_ms: None,
        max_bytes: Some(max_bytes),
    };
    let store = Store::new(config, 20_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, lost.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        if matches!(opened, StoreReply::Opened { .. }) {
            for _ in 0..20_000 {
                let StoreReply::Metrics(metrics) =
                    sender.call(StoreCommand::Metrics).await.unwrap()
                else {
                    panic!("metrics");
                };
                let tier2 = &metrics.tier2;
                if metrics.streams[STREAM].retention.deletes_pending == 0
                    && tier2.delete_queue_depth == 0
                    && tier2.deletes_in_flight == 0
                {
                    break;
                }
            }
        }
        close(&sender).await;
        opened
    };
    let (store, opened) = block_on(join(driver, calls));
    store.check_invariants();
    (opened, store, lost)
}

#[test]
fn a_retention_gap_the_policy_would_delete_through_is_restored_past() {
    let (memory, known) = retention_gap();
    // The policy keeps exactly the segments after the gap (of those the manifest
    // knows): applied now, it deletes 0..=3.
    let kept: u64 = known[4..].iter().map(|&(_, _, bytes)| bytes).sum();
    let (opened, store, _lost) = restore_under_size_retention(&memory, kept);
    assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
    let summary = store.recovery_summary(&name()).unwrap();
    assert!(summary.restored_from_tier2);
    assert_eq!(summary.segments_presumed_deleted, 2, "{summary:?}");
    assert_eq!(summary.segment_deletions_requeued, 2, "{summary:?}");
    let first_kept_base = known[4].1;
    assert!(
        store.start_offset(&name()).unwrap() >= first_kept_base,
        "the restored stream starts after the gap"
    );
    // The requeued deletes were carried on; what is left in Tier 2 is dense.
    let left = tier2_segments(&memory);
    for &(id, _, _) in &known[..4] {
        assert!(!left.contains_key(&id), "segment {id} is gone: {left:?}");
    }
    tier2_end(&left);
}

#[test]
fn a_retention_gap_the_policy_would_not_delete_through_is_refused() {
    let (memory, known) = retention_gap();
    // This policy, applied now, deletes only 0 and 1: it cannot have deleted 2 and 3.
    let kept: u64 = known[2..].iter().map(|&(_, _, bytes)| bytes).sum();
    let (opened, _store, lost) = restore_under_size_retention(&memory, kept);
    let key = format!("segments/{STREAM}/{:020}.zst", known[2].0);
    assert_gap_error(&opened, &key, &lost);
}

/// A session on `memory` that deletes every segment below `before` as an operator and
/// waits until the copies are gone. Returns the new start offset and how many
/// snapshots the store took meanwhile.
fn delete_as_operator(memory: &MemoryPorts, config: StoreConfig, before: u64) -> (u64, u64) {
    let store = Store::new(config, 50_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
        let reply = sender
            .call(StoreCommand::DeleteSegments {
                stream: name(),
                before: aof2_core::SegmentId(before),
            })
            .await
            .unwrap();
        let StoreReply::SegmentsDeleting {
            segments,
            start_offset,
        } = reply
        else {
            panic!("delete below {before}: {reply:?}")
        };
        assert_eq!(segments, before);
        let mut snapshots = 0;
        for _ in 0..100_000 {
            let StoreReply::Metrics(metrics) = sender.call(StoreCommand::Metrics).await.unwrap()
            else {
                unreachable!("Metrics is answered Metrics")
            };
            let stream = &metrics.streams[STREAM];
            snapshots = stream.snapshots.snapshots_taken;
            if stream.retention.deletes_pending == 0 {
                break;
            }
        }
        close(&sender).await;
        (start_offset, snapshots)
    };
    let (store, result) = block_on(join(driver, calls));
    store.check_invariants();
    result
}

#[test]
fn an_operator_delete_survives_a_lost_disk() {
    let memory = frozen(MemoryPorts::new(10_000, 4));
    // Chunks large enough that no chunk seals: only a snapshot carries the deletion
    // to Tier 2.
    write_stream(&memory, config(1 << 20), 300, None);
    let (start, snapshots) = delete_as_operator(&memory, config(1 << 20), 3);
    assert!(start > 0);
    assert!(
        snapshots >= 1,
        "the store took a snapshot before deleting objects"
    );
    let remaining = tier2_segments(&memory);
    assert!(
        remaining.keys().all(|&id| id >= 3),
        "segments 0..3 are gone from Tier 2: {remaining:?}"
    );

    let lost = frozen(MemoryPorts::with_object_store(
        60_000,
        4,
        memory.object_store.clone(),
    ));
    let store = Store::new(config(1 << 20), 60_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, lost.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        let StoreReply::Opened { next_offset, .. } = opened else {
            panic!("the restore refused: {opened:?}")
        };
        for offset in (start..next_offset).step_by(5) {
            assert_record(&read(&sender, offset).await, offset);
        }
        close(&sender).await;
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
    assert_eq!(store.start_offset(&name()), Some(start));
}
