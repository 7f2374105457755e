//! Reopening streams: the store driven by the real `driver::run` over in-memory ports,
//! every component's invariants checked after every step.
//!
//! **Invariants checked**
//! - After a clean close, a reopen gives the same next offset and the same manifest
//!   index, and every record reads back from the files and objects.
//! - After a crash at any point of a workload (the disk freezes after `k` requests and
//!   the store is dropped without `Close`), a reopen never panics, every offset
//!   acknowledged durable is present with its payload, offsets are dense up to the
//!   recovered next offset, and the index agrees with the files.
//! - A torn tail is cut; a snapshot plus the chunks after it rebuilds the index a full
//!   replay rebuilds; a corrupt snapshot is skipped; a corrupt sealed segment is a
//!   typed error naming file and byte, or repaired from Tier 2 when uploaded.

// Test ports share state between IO tasks behind a lock.
#![allow(clippy::disallowed_types)]

use aof2_core::SegmentId;
use aof2_core::artifact::decode_all;
use aof2_core::driver::{
    ClockPort, CommandSender, DiskPort, DriverLimits, Machine, ObjectStorePort, Ports,
    command_channel, run,
};
use aof2_core::io::{DiskErrorKind, LocalPath, ObjectErrorKind, ObjectMeta, PutMode};
use aof2_core::manifest::chunk::parse_chunk_file_name;
use aof2_core::manifest::index::{Lifecycle, ManifestIndex};
use aof2_core::manifest::replay::Replayer;
use aof2_core::manifest::snapshot::Snapshot;
use aof2_core::memory_ports::{MemoryDisk, MemoryPorts};
use aof2_core::names::{StreamName, manifest_dir, segments_dir, snapshot_path};
use aof2_core::segment::{Record, SealedSegment, TailScan, scan_tail};
use aof2_core::store::{Store, StoreCommand, StoreConfig, StoreError, StoreReply};
use async_trait::async_trait;
use bytes::Bytes;
use futures::executor::block_on;
use futures::future::{Either, join, select};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const STREAM: &str = "orders";

fn limits() -> DriverLimits {
    DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    }
}

fn name() -> StreamName {
    StreamName::new(STREAM).unwrap()
}

fn payload(i: u64) -> Bytes {
    let size = 200 + (i * 37) % 1800;
    let mut bytes = format!("record-{i:08}-").into_bytes();
    bytes.resize(size as usize, b'a' + (i % 26) as u8);
    Bytes::from(bytes)
}

/// Small segments (many seals, compressions and uploads) and the smallest Tier 0
/// budget (evictions once a megabyte is sealed).
fn config() -> StoreConfig {
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 16 * 1024;
    config.tier0.cluster_max_bytes = 1024 * 1024;
    config
}

fn ports_with(memory: &MemoryPorts, disk: Arc<dyn DiskPort>) -> Ports {
    Ports {
        disk,
        ..memory.ports.clone()
    }
}

async fn append(sender: &CommandSender<Store>, payload: Bytes) -> Option<u64> {
    for _ in 0..100_000 {
        match sender
            .call(StoreCommand::Append {
                stream: name(),
                payload: payload.clone(),
                ext_id: None,
                wait: false,
            })
            .await
            .ok()?
        {
            StoreReply::Appended(offset) => return Some(offset),
            StoreReply::WouldBlock(_) => {}
            other => panic!("append failed: {other:?}"),
        }
    }
    panic!("append stayed blocked");
}

async fn open(sender: &CommandSender<Store>) -> StoreReply {
    sender
        .call(StoreCommand::OpenStream {
            name: STREAM.into(),
        })
        .await
        .unwrap()
}

/// Opens, appends `records` from `first`, waits for them to be durable, closes.
/// Returns the reply to the open.
fn run_session(
    memory: &MemoryPorts,
    ports: Ports,
    config: StoreConfig,
    first: u64,
    records: u64,
) -> (Store, StoreReply) {
    let store = Store::new(config, memory.clock.now_ms()).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, ports, receiver, limits());
    let calls = async move {
        let opened = open(&sender).await;
        if !matches!(opened, StoreReply::Opened { .. }) {
            return opened;
        }
        for i in first..first + records {
            assert_eq!(append(&sender, payload(i)).await, Some(i));
        }
        if records > 0 {
            let durable = sender
                .call(StoreCommand::WaitDurable {
                    stream: name(),
                    offset: first + records - 1,
                })
                .await
                .unwrap();
            assert!(matches!(durable, StoreReply::Durable { .. }), "{durable:?}");
        }
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        opened
    };
    let (store, opened) = block_on(join(driver, calls));
    store.check_invariants();
    (store, opened)
}

/// Every record readable from the stream's local segment files, Tier 1 artifacts and
/// Tier 2 objects: `offset -> payload`. A record found twice must be identical.
fn all_records(memory: &MemoryPorts) -> BTreeMap<u64, Vec<u8>> {
    let mut records = BTreeMap::new();
    let segments = format!("{}/", segments_dir(&name()));
    for path in memory.disk.paths() {
        let bytes = memory.disk.file(&path).unwrap();
        if path.starts_with(&segments) && path.ends_with(".seg") {
            collect_segment(&path, &bytes, &mut records);
        } else if path.starts_with(&format!("streams/{STREAM}/tier1/")) && path.ends_with(".zst") {
            let segment = decode_all(&bytes).unwrap_or_else(|error| panic!("{path}: {error}"));
            collect_segment(&path, &segment, &mut records);
        }
    }
    for key in memory.object_store.keys() {
        if key.starts_with(&format!("segments/{STREAM}/")) {
            let object = memory.object_store.object(&key).unwrap();
            let segment = decode_all(&object).unwrap_or_else(|error| panic!("{key}: {error}"));
            collect_segment(&key, &segment, &mut records);
        }
    }
    records
}

fn collect_segment(path: &str, bytes: &[u8], records: &mut BTreeMap<u64, Vec<u8>>) {
    let mut add = |offset: u64, payload: &[u8]| {
        if let Some(previous) = records.insert(offset, payload.to_vec()) {
            assert_eq!(
                previous, payload,
                "{path}: offset {offset} differs between copies"
            );
        }
    };
    match scan_tail(bytes).unwrap_or_else(|error| panic!("{path}: {error}")) {
        TailScan::Sealed { .. } => {
            for framed in SealedSegment::decode(bytes).unwrap().records() {
                add(framed.record.offset, framed.record.payload);
            }
        }
        TailScan::Active(tail) => {
            let mut position = 40u64;
            while position < tail.valid_bytes {
                let framed = Record::decode_at(bytes, position).unwrap();
                add(framed.record.offset, framed.record.payload);
                position = framed.end();
            }
        }
    }
}

/// Offsets `0..next_offset` are all there with the payloads appended.
fn check_records(memory: &MemoryPorts, next_offset: u64) {
    let records = all_records(memory);
    for offset in 0..next_offset {
        let found = records
            .get(&offset)
            .unwrap_or_else(|| panic!("offset {offset} of {next_offset} is missing"));
        assert_eq!(
            found.as_slice(),
            payload(offset).as_ref(),
            "offset {offset}"
        );
    }
    assert!(
        records.keys().all(|&offset| offset < next_offset),
        "no record at or past the next offset {next_offset}"
    );
}

/// The index's segments continue densely and end where the stream continues.
fn check_index(index: &ManifestIndex, next_offset: u64) {
    index.check_invariants();
    let mut expected_base = None;
    let mut open = 0;
    for entry in index.segments().values() {
        if let Some(base) = expected_base {
            assert_eq!(
                entry.base_offset, base,
                "segment {} is dense",
                entry.segment_id
            );
        }
        match entry.lifecycle {
            Lifecycle::Sealed(seal) => expected_base = Some(entry.base_offset + seal.record_count),
            Lifecycle::Open => {
                open += 1;
                assert!(entry.base_offset <= next_offset);
                expected_base = None;
            }
        }
    }
    assert_eq!(open, 1, "exactly the active segment is open");
}

fn opened_offset(reply: &StoreReply) -> u64 {
    match reply {
        StoreReply::Opened { next_offset, .. } => *next_offset,
        other => panic!("open failed: {other:?}"),
    }
}

#[test]
fn close_then_reopen_keeps_every_record_and_the_index() {
    let memory = MemoryPorts::new(10_000, 2);
    let (first, _) = run_session(&memory, memory.ports.clone(), config(), 0, 900);
    let before = first.manifest_index(&name()).unwrap().clone();
    assert!(before.segments().len() > 20, "many segments sealed");
    let evicted = before
        .segments()
        .values()
        .filter(|entry| !entry.local.tier0)
        .count();
    assert!(evicted > 0, "Tier 0 evicted uploaded segments");
    drop(first);

    let (second, opened) = run_session(&memory, memory.ports.clone(), config(), 900, 0);
    assert_eq!(opened_offset(&opened), 900);
    assert_eq!(second.manifest_index(&name()), Some(&before));
    let summary = second.recovery_summary(&name()).unwrap();
    assert_eq!(summary.records_journaled, 0, "{summary:?}");
    assert_eq!(summary.segments_repaired, 0);
    let figures = second.replay_figures(&name()).unwrap();
    assert!(figures.chunk_count >= 1 && figures.records_applied > 0);
    assert_eq!(figures.corruption_events, 0, "{figures:?}");
    check_records(&memory, 900);

    // Appends continue densely, and survive one more reopen.
    let (third, opened) = run_session(&memory, memory.ports.clone(), config(), 900, 100);
    assert_eq!(opened_offset(&opened), 900);
    check_index(third.manifest_index(&name()).unwrap(), 1000);
    drop(third);
    let (fourth, opened) = run_session(&memory, memory.ports.clone(), config(), 1000, 0);
    assert_eq!(opened_offset(&opened), 1000);
    check_index(fourth.manifest_index(&name()).unwrap(), 1000);
    check_records(&memory, 1000);
}

#[test]
fn commands_during_recovery_get_opening() {
    let memory = MemoryPorts::new(10_000, 2);
    run_session(&memory, memory.ports.clone(), config(), 0, 50);
    let store = Store::new(config(), 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opening = sender.call(StoreCommand::OpenStream {
            name: STREAM.into(),
        });
        let append = sender.call(StoreCommand::Append {
            stream: name(),
            payload: payload(50),
            ext_id: None,
            wait: false,
        });
        let (opened, appended) = join(opening, append).await;
        assert_eq!(opened_offset(&opened.unwrap()), 50);
        assert_eq!(
            appended.unwrap(),
            StoreReply::Error(StoreError::Opening(STREAM.into()))
        );
    };
    block_on(join(driver, calls));
}

#[test]
fn torn_tail_is_truncated_on_reopen() {
    let memory = MemoryPorts::new(10_000, 2);
    let (first, _) = run_session(&memory, memory.ports.clone(), config(), 0, 30);
    let index = first.manifest_index(&name()).unwrap();
    let (active, _) = index
        .segments()
        .iter()
        .find(|(_, entry)| matches!(entry.lifecycle, Lifecycle::Open))
        .unwrap();
    let path = segments_dir(&name()).join(&format!("{:020}.seg", active.0));
    let length = memory.disk.file(path.as_str()).unwrap().len() as u64;
    // Half a frame header: a write the crash tore.
    block_on(
        memory
            .disk
            .write_at(&path, length, Bytes::from_static(&[7u8; 17])),
    )
    .unwrap();

    let (second, opened) = run_session(&memory, memory.ports.clone(), config(), 30, 0);
    assert_eq!(opened_offset(&opened), 30);
    let summary = second.recovery_summary(&name()).unwrap();
    assert_eq!(summary.torn_tail_bytes_truncated, 17);
    assert_eq!(
        memory.disk.file(path.as_str()).unwrap().len() as u64,
        length
    );
    check_records(&memory, 30);
}

/// A copy of every file of `disk`.
fn copy_disk(disk: &MemoryDisk) -> Arc<MemoryDisk> {
    let copy = Arc::new(MemoryDisk::default());
    for path in disk.paths() {
        let path_ref = LocalPath::from_components(&path.split('/').collect::<Vec<_>>());
        block_on(copy.create(&path_ref)).unwrap();
        block_on(copy.write_at(&path_ref, 0, Bytes::from(disk.file(&path).unwrap()))).unwrap();
    }
    copy
}

/// A snapshot of the manifest after its first `chunks` chunks, as a snapshot writer
/// would take it.
fn snapshot_after(disk: &MemoryDisk, chunks: usize, snapshot_id: u64) -> Snapshot {
    let directory = format!("{}/", manifest_dir(&name()));
    let mut replayer = Replayer::new(None);
    let mut files: Vec<(u64, String)> = disk
        .paths()
        .into_iter()
        .filter_map(|path| {
            let file = path.strip_prefix(&directory)?;
            Some((parse_chunk_file_name(file)?, path.clone()))
        })
        .collect();
    files.sort();
    assert!(files.len() > chunks, "{} chunks", files.len());
    for (chunk_index, path) in files.iter().take(chunks) {
        replayer
            .replay_chunk(0, *chunk_index, &disk.file(path).unwrap())
            .unwrap();
    }
    let outcome = replayer.finish(0);
    Snapshot::new(snapshot_id, outcome.position, outcome.index).unwrap()
}

#[test]
fn snapshot_plus_later_chunks_equals_full_replay_and_corrupt_snapshots_are_skipped() {
    let memory = MemoryPorts::new(10_000, 2);
    let mut small_chunks = config();
    small_chunks.manifest.chunk_capacity_bytes = 16 * 1024;
    // No periodic snapshot: one would let the store remove chunks it covers, and the
    // log-only replay below reads the local chunks from the first.
    small_chunks.snapshot_interval_ms = 0;
    small_chunks.snapshot_every_records = 0;
    let (first, _) = run_session(&memory, memory.ports.clone(), small_chunks, 0, 900);
    let before = first.manifest_index(&name()).unwrap().clone();
    drop(first);

    let snapshot = snapshot_after(&memory.disk, 2, 5);
    let snap_path = snapshot_path(&name(), 5);
    block_on(memory.disk.create(&snap_path)).unwrap();
    block_on(
        memory
            .disk
            .write_at(&snap_path, 0, Bytes::from(snapshot.to_bytes())),
    )
    .unwrap();
    // A newer snapshot that does not decode.
    let corrupt_path = snapshot_path(&name(), 9);
    let mut corrupt = snapshot.to_bytes();
    corrupt[40] ^= 0xFF;
    block_on(memory.disk.create(&corrupt_path)).unwrap();
    block_on(memory.disk.write_at(&corrupt_path, 0, Bytes::from(corrupt))).unwrap();

    let mut results = Vec::new();
    for log_only in [true, false] {
        let disk = copy_disk(&memory.disk);
        let mut config = small_chunks;
        config.manifest_log_only = log_only;
        let (store, opened) = run_session(&memory, ports_with(&memory, disk), config, 900, 0);
        assert_eq!(opened_offset(&opened), 900);
        let summary = store.recovery_summary(&name()).unwrap().clone();
        let figures = *store.replay_figures(&name()).unwrap();
        results.push((
            store.manifest_index(&name()).unwrap().clone(),
            summary,
            figures,
        ));
    }
    let (log_index, log_summary, log_figures) = &results[0];
    let (snap_index, snap_summary, snap_figures) = &results[1];
    assert_eq!(log_index, &before);
    assert_eq!(snap_index, log_index, "snapshot + chunks == full replay");
    assert_eq!(log_summary.snapshot_id, None);
    assert_eq!(log_figures.records_covered_by_snapshot, 0);
    assert_eq!(snap_summary.snapshot_id, Some(5));
    assert_eq!(snap_summary.snapshots_skipped, 1, "{snap_summary:?}");
    assert!(
        snap_figures.records_covered_by_snapshot > 0
            || snap_figures.chunk_count < log_figures.chunk_count
    );
    assert!(
        snap_figures.chunk_count < log_figures.chunk_count,
        "{snap_figures:?} {log_figures:?}"
    );
}

/// An object store whose puts always fail: nothing reaches Tier 2.
#[derive(Debug, Default)]
struct RefusingObjectStore;

#[async_trait]
impl ObjectStorePort for RefusingObjectStore {
    async fn put(&self, _: &str, _: Bytes, _: PutMode) -> Result<Option<String>, ObjectErrorKind> {
        Err(ObjectErrorKind::Permanent)
    }
    async fn get(&self, _: &str) -> Result<Bytes, ObjectErrorKind> {
        Err(ObjectErrorKind::NotFound)
    }
    async fn get_range(&self, _: &str, _: u64, _: u64) -> Result<(Bytes, u64), ObjectErrorKind> {
        Err(ObjectErrorKind::NotFound)
    }
    async fn head(&self, _: &str) -> Result<ObjectMeta, ObjectErrorKind> {
        Err(ObjectErrorKind::NotFound)
    }
    async fn delete(&self, _: &str) -> Result<(), ObjectErrorKind> {
        Ok(())
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind> {
        Ok(Vec::new())
    }
}

fn flip_byte_in_segment(memory: &MemoryPorts, segment_id: SegmentId) -> String {
    let path = segments_dir(&name()).join(&format!("{:020}.seg", segment_id.0));
    let mut bytes = memory.disk.file(path.as_str()).unwrap();
    bytes[300] ^= 0x55;
    block_on(memory.disk.write_at(&path, 0, Bytes::from(bytes))).unwrap();
    path.to_string()
}

#[test]
fn corrupt_sealed_segment_not_in_tier2_is_a_typed_error() {
    let memory = MemoryPorts::new(10_000, 2);
    let mut config = config();
    config.tier0.cluster_max_bytes = 1024 * 1024 * 1024;
    let refusing = Ports {
        object_store: Arc::new(RefusingObjectStore),
        ..memory.ports.clone()
    };
    run_session(&memory, refusing, config, 0, 100);
    let path = flip_byte_in_segment(&memory, SegmentId(0));
    let (store, opened) = run_session(&memory, memory.ports.clone(), config, 100, 0);
    match opened {
        StoreReply::Error(StoreError::CorruptSegment {
            path: named,
            position,
            ..
        }) => {
            assert_eq!(named, path);
            assert!(position > 0 && position <= 300, "position {position}");
        }
        other => panic!("expected a corrupt-segment error, got {other:?}"),
    }
    assert!(store.manifest_index(&name()).is_none());
    assert!(memory.disk.file(&path).is_some(), "nothing was deleted");
}

#[test]
fn corrupt_sealed_segment_in_tier2_is_repaired() {
    let memory = MemoryPorts::new(10_000, 2);
    let mut config = config();
    config.tier0.cluster_max_bytes = 1024 * 1024 * 1024;
    run_session(&memory, memory.ports.clone(), config, 0, 100);
    let path = flip_byte_in_segment(&memory, SegmentId(0));
    let (store, opened) = run_session(&memory, memory.ports.clone(), config, 100, 0);
    assert_eq!(opened_offset(&opened), 100);
    let summary = store.recovery_summary(&name()).unwrap();
    assert_eq!(summary.segments_repaired, 1, "{summary:?}");
    assert!(
        memory.disk.file(&path).is_none(),
        "the corrupt copy is dropped"
    );
    let entry = store
        .manifest_index(&name())
        .unwrap()
        .segment(SegmentId(0))
        .unwrap();
    assert!(!entry.local.tier0 && entry.tier2_object.is_some());
    check_records(&memory, 100);
}

// ---- Crashes ----

/// A disk that freezes for good after `crash_after` requests: later requests never
/// complete (and never apply), as if the machine stopped there.
struct FreezingDisk {
    inner: Arc<MemoryDisk>,
    requests: AtomicU64,
    crash_after: u64,
    crashed: AtomicBool,
    signal: Mutex<Option<futures::channel::oneshot::Sender<()>>>,
}

impl FreezingDisk {
    async fn gate(&self) {
        if !self.crashed.load(Ordering::SeqCst)
            && self.requests.fetch_add(1, Ordering::SeqCst) < self.crash_after
        {
            return;
        }
        if !self.crashed.swap(true, Ordering::SeqCst)
            && let Some(signal) = self.signal.lock().unwrap().take()
        {
            let _ = signal.send(());
        }
        futures::future::pending::<()>().await;
    }
}

#[async_trait]
impl DiskPort for FreezingDisk {
    async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.create(path).await
    }
    async fn create_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.create_dir(path).await
    }
    async fn write_at(
        &self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.write_at(path, offset, bytes).await
    }
    async fn read_at(
        &self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind> {
        self.gate().await;
        self.inner.read_at(path, offset, length).await
    }
    async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.truncate(path, length).await
    }
    async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.sync_file(path).await
    }
    async fn sync_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.sync_dir(path).await
    }
    async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.rename(from, to).await
    }
    async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.gate().await;
        self.inner.remove(path).await
    }
    async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
        self.gate().await;
        self.inner.list(path).await
    }
    async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
        self.gate().await;
        self.inner.length(path).await
    }
}

/// Runs `sessions` workloads of `records` appends each (waiting for durability every
/// `wait_every`), the last one crashing after `crash_after` disk requests; reopens
/// and checks. Returns whether the crash happened and how many manifest records the
/// reopen had to journal.
fn crash_and_reopen(sessions: u64, records: u64, wait_every: u64, crash_after: u64) -> (bool, u64) {
    let memory = MemoryPorts::new(10_000, 2);
    let mut acknowledged = 0;
    for session in 0..sessions - 1 {
        let first = session * records;
        let (_, opened) = run_session(&memory, memory.ports.clone(), config(), first, records);
        assert_eq!(opened_offset(&opened), first);
        acknowledged = first + records;
    }
    let first = (sessions - 1) * records;
    let (signal, crashed) = futures::channel::oneshot::channel();
    let disk = Arc::new(FreezingDisk {
        inner: memory.disk.clone(),
        requests: AtomicU64::new(0),
        crash_after,
        crashed: AtomicBool::new(false),
        signal: Mutex::new(Some(signal)),
    });
    let acked = Arc::new(AtomicU64::new(acknowledged));
    let store = Store::new(config(), memory.clock.now_ms()).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, ports_with(&memory, disk.clone()), receiver, limits());
    let acked_in = acked.clone();
    let calls = async move {
        let opened = open(&sender).await;
        if first > 0 {
            assert_eq!(opened_offset(&opened), first);
        }
        for i in first..first + records {
            assert_eq!(append(&sender, payload(i)).await, Some(i));
            if (i + 1) % wait_every == 0 {
                let reply = sender
                    .call(StoreCommand::WaitDurable {
                        stream: name(),
                        offset: i,
                    })
                    .await
                    .unwrap();
                assert!(matches!(reply, StoreReply::Durable { .. }), "{reply:?}");
                acked_in.fetch_max(i + 1, Ordering::SeqCst);
            }
        }
        let _ = sender.call(StoreCommand::Close).await;
    };
    let workload = Box::pin(join(driver, calls));
    let did_crash = match block_on(select(workload, crashed)) {
        Either::Left(_) => false,
        // The store is dropped here, mid-flight, without Close.
        Either::Right((_, workload)) => {
            drop(workload);
            true
        }
    };
    let acknowledged = acked.load(Ordering::SeqCst);

    let (store, opened) = run_session(&memory, memory.ports.clone(), config(), 0, 0);
    let next_offset = opened_offset(&opened);
    assert!(
        next_offset >= acknowledged,
        "recovered next offset {next_offset} below the acknowledged {acknowledged}"
    );
    assert!(next_offset <= first + records);
    check_index(store.manifest_index(&name()).unwrap(), next_offset);
    check_records(&memory, next_offset);
    let journaled = store
        .recovery_summary(&name())
        .map_or(0, |summary| summary.records_journaled);
    (did_crash, journaled)
}

#[test]
fn crash_at_many_points_of_a_first_session() {
    let mut crashes = 0;
    let mut caught_up = 0;
    for crash_after in (0..400).step_by(7) {
        let (crashed, journaled) = crash_and_reopen(1, 120, 10, crash_after);
        crashes += u32::from(crashed);
        caught_up += u32::from(journaled > 0);
    }
    assert!(
        crashes > 40,
        "the disk froze mid-workload in most runs: {crashes}"
    );
    // Some crashes fall between a file operation and its manifest record.
    assert!(caught_up > 0, "no reopen had to journal a record");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn crash_at_any_point_after_earlier_sessions(
        sessions in 1u64..3,
        records in 20u64..120,
        wait_every in 1u64..40,
        crash_after in 0u64..900,
    ) {
        let _ = crash_and_reopen(sessions, records, wait_every, crash_after);
    }
}
