//! Retention, snapshots, manifest chunk copies and metrics of the store, driven by the
//! real `driver::run` over `MemoryPorts` (with an object store and a disk that fail on
//! demand), with every component's invariants checked after every step.
//!
//! **Invariants checked**
//! - Retention deletes the oldest segments from every tier (segment file, artifact,
//!   object), advances the start offset, and the metrics count it.
//! - A failed Tier 2 delete is retried and ends in a deletion.
//! - Snapshots land locally and in Tier 2 (the same bytes) and decode to the index the
//!   store holds; a failed snapshot write journals no marker.
//! - Every sealed manifest chunk is in Tier 2; old local chunk files are pruned.
//! - `DeleteSegments` deletes a prefix from every tier with reason `Operator`, all or
//!   none: it refuses (deleting nothing) while a segment below the bound lacks its
//!   Tier 2 object, and refuses the active segment.

use aof2_core::SegmentId;
use aof2_core::driver::{
    CommandSender, DiskPort, DriverLimits, Machine, ObjectStorePort, command_channel, run,
};
use aof2_core::io::{DiskErrorKind, LocalPath};
use aof2_core::manifest::chunk::decode_chunk;
use aof2_core::manifest::record::{DecodedFrame, ManifestRecord, ReasonCode};
use aof2_core::manifest::snapshot::Snapshot;
use aof2_core::memory_ports::{FlakyObjectStore, MemoryDisk, MemoryPorts};
use aof2_core::names::StreamName;
use aof2_core::store::{Store, StoreCommand, StoreConfig, StoreError, StoreMetrics, StoreReply};
use aof2_core::tier2::RetentionPolicy;
use async_trait::async_trait;
use bytes::Bytes;
use futures::executor::block_on;
use futures::future::join;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn limits() -> DriverLimits {
    DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    }
}

fn name(text: &str) -> StreamName {
    StreamName::new(text).unwrap()
}

/// Fails the fsync of every snapshot temp file while `snapshot_sync_failures` > 0.
struct FlakyDisk {
    inner: Arc<MemoryDisk>,
    snapshot_sync_failures: AtomicU32,
}

#[async_trait]
impl DiskPort for FlakyDisk {
    async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.inner.create(path).await
    }
    async fn create_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.inner.create_dir(path).await
    }
    async fn write_at(
        &self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind> {
        self.inner.write_at(path, offset, bytes).await
    }
    async fn read_at(
        &self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind> {
        self.inner.read_at(path, offset, length).await
    }
    async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
        self.inner.truncate(path, length).await
    }
    async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        if path.to_string().ends_with(".snap.tmp") {
            let left = self.snapshot_sync_failures.load(Ordering::SeqCst);
            if left > 0 {
                self.snapshot_sync_failures
                    .store(left - 1, Ordering::SeqCst);
                return Err(DiskErrorKind::Io);
            }
        }
        self.inner.sync_file(path).await
    }
    async fn sync_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.inner.sync_dir(path).await
    }
    async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
        self.inner.rename(from, to).await
    }
    async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.inner.remove(path).await
    }
    async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
        self.inner.list(path).await
    }
    async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
        self.inner.length(path).await
    }
}

/// Memory ports whose object store fails `delete_failures` deletes and whose disk
/// fails `snapshot_sync_failures` snapshot fsyncs.
fn flaky_ports(delete_failures: u32, snapshot_sync_failures: u32) -> MemoryPorts {
    let mut memory = MemoryPorts::new(10_000, 4);
    memory.ports.object_store = Arc::new(FlakyObjectStore {
        delete_failures: AtomicU32::new(delete_failures),
        ..FlakyObjectStore::new(memory.object_store.clone())
    });
    memory.ports.disk = Arc::new(FlakyDisk {
        inner: memory.disk.clone(),
        snapshot_sync_failures: AtomicU32::new(snapshot_sync_failures),
    });
    memory
}

async fn append(sender: &CommandSender<Store>, stream: &str, payload: Bytes) -> u64 {
    for _ in 0..100_000 {
        match sender
            .call(StoreCommand::Append {
                stream: name(stream),
                payload: payload.clone(),
                ext_id: None,
                wait: false,
            })
            .await
            .unwrap()
        {
            StoreReply::Appended(offset) => return offset,
            StoreReply::WouldBlock(_) => {}
            other => panic!("append failed: {other:?}"),
        }
    }
    panic!("append stayed blocked");
}

async fn metrics(sender: &CommandSender<Store>) -> StoreMetrics {
    match sender.call(StoreCommand::Metrics).await.unwrap() {
        StoreReply::Metrics(metrics) => *metrics,
        other => panic!("{other:?}"),
    }
}

/// Asks for metrics until `done` holds (each call lets the driver run completions).
async fn metrics_until(
    sender: &CommandSender<Store>,
    done: impl Fn(&StoreMetrics) -> bool,
) -> StoreMetrics {
    let mut last = None;
    for _ in 0..20_000 {
        let metrics = metrics(sender).await;
        if done(&metrics) {
            return metrics;
        }
        last = Some(metrics);
    }
    panic!("the store never reached the expected state: {last:#?}");
}

/// No compression or upload is waiting or running.
/// Nothing queued or in flight in Tier 1 and Tier 2, and every record journaled is
/// durable: an upload whose `UploadDone` is still committing has not been weighed by
/// retention yet, so an idle pipeline alone does not mean retention has settled.
fn pipeline_idle(metrics: &StoreMetrics) -> bool {
    metrics.tier1.compression_queue_depth == 0
        && metrics.tier1.compressions_in_flight == 0
        && metrics.tier2.upload_queue_depth == 0
        && metrics.tier2.uploads_in_flight == 0
        && metrics.tier2.delete_queue_depth == 0
        && metrics.tier2.deletes_in_flight == 0
        && metrics.streams.values().all(|stream| {
            let journaled = stream.manifest.next_ordinal;
            journaled == 0 || stream.manifest.durable_ordinal == Some(journaled - 1)
        })
}

fn big(i: u64) -> Bytes {
    Bytes::from(format!("{i:08}").repeat(512))
}

fn segment_ids(keys: &[String], prefix: &str, suffix: &str) -> Vec<u64> {
    keys.iter()
        .filter_map(|key| key.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect()
}

async fn open(sender: &CommandSender<Store>, stream: &str) {
    let opened = sender
        .call(StoreCommand::OpenStream {
            name: stream.into(),
        })
        .await
        .unwrap();
    assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
}

/// 64 KiB segments, retention by size at 8 KiB (every sealed segment but the newest
/// goes once uploaded), no periodic snapshots.
fn size_retention_config() -> StoreConfig {
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.tier2.retention = RetentionPolicy {
        max_age_ms: None,
        max_bytes: Some(8 * 1024),
    };
    config.snapshot_interval_ms = 0;
    config.snapshot_every_records = 0;
    config
}

#[test]
fn retention_by_size_deletes_the_oldest_segments_from_every_tier() {
    // Two delete failures: the first deletes are retried before they succeed.
    let memory = flaky_ports(2, 0);
    let config = size_retention_config();
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "big").await;
        for i in 0..400u64 {
            assert_eq!(append(&sender, "big", big(i)).await, i);
        }
        sender
            .call(StoreCommand::Flush {
                stream: name("big"),
            })
            .await
            .unwrap();
        // Wait until every sealed segment is uploaded and retention has settled.
        let settled = metrics_until(&sender, |metrics| {
            let stream = &metrics.streams["big"];
            stream.flush.segments_sealed > 0
                && stream.retention.segments_deleted > 0
                && stream.retention.deletes_pending == 0
                && pipeline_idle(metrics)
        })
        .await;
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        settled
    };
    let (store, settled) = block_on(join(driver, calls));
    store.check_invariants();
    assert!(settled.streams["big"].retention.segments_deleted > 0);
    // The figures as the close left them, like the objects and files: the store runs
    // on after the pipeline settled (a segment sealed by age meanwhile is uploaded).
    let settled = store.metrics();
    let stream = &settled.streams["big"];
    let objects = memory.object_store.keys();
    let paths = memory.disk.paths();
    let remaining = segment_ids(&objects, "segments/big/", ".zst");
    let deleted = stream.retention.segments_deleted;
    assert!(deleted >= 2, "{stream:?}");
    // The oldest went, the rest stayed: objects, files and artifacts alike.
    let first_kept = *remaining.iter().min().unwrap();
    assert_eq!(first_kept, deleted, "a prefix was deleted: {remaining:?}");
    for id in 0..deleted {
        let file = format!("streams/big/segments/{id:020}.seg");
        let artifact = format!("streams/big/tier1/{id:020}.zst");
        assert!(!paths.contains(&file), "{file} is gone");
        assert!(!paths.contains(&artifact), "{artifact} is gone");
    }
    // Within the budget (the active segment holds no object). A segment sealed while
    // the store was closing is not weighed (retention starts nothing during close), so
    // the newest object is left out.
    let newest = *remaining.iter().max().unwrap();
    let kept_bytes: usize = remaining
        .iter()
        .filter(|id| **id != newest)
        .map(|id| {
            memory
                .object_store
                .object(&format!("segments/big/{id:020}.zst"))
                .unwrap()
                .len()
        })
        .sum();
    assert!(kept_bytes <= 8 * 1024, "{kept_bytes} bytes kept");
    // The start offset is the first kept segment's base, and the metrics say so.
    let start = store.start_offset(&name("big")).unwrap();
    assert!(start > 0);
    assert_eq!(stream.start_offset, start);
    assert_eq!(
        stream.retention.delete_failures, 2,
        "two failed deletes, retried"
    );
    assert_eq!(settled.tier2.delete_failures, 2);
    assert_eq!(settled.tier2.deletes, deleted);
    assert_eq!(stream.retention.deletes_abandoned, 0);
    assert!(stream.retention.bytes_deleted > 0);
    let segment_objects = remaining.len() as u64 + deleted;
    let chunk_objects = segment_ids(&objects, "manifest/big/", ".mlog").len() as u64;
    assert_eq!(
        settled.tier2.uploads,
        segment_objects + stream.snapshots.manifest_chunks_uploaded,
        "uploads: every segment, every chunk"
    );
    assert!(chunk_objects >= stream.snapshots.manifest_chunks_uploaded);
    assert_eq!(
        stream.segments.total,
        segment_objects - deleted + 1,
        "plus the active one"
    );
    // The JSON of `aof2-admin dump` names the runbook's fields.
    let json = serde_json_like(&settled);
    for field in [
        "\"upload_retry_attempts\"",
        "\"activation_queue_depth\"",
        "\"hydration_queue_depth\"",
        "\"flush_failures\"",
        "\"start_offset\"",
        "\"snapshot_id\"",
        "\"replay_version\"",
        "\"replay\":null",
    ] {
        assert!(json.contains(field), "{field} in {json}");
    }
}

/// The metrics as JSON, as `aof2-admin dump` prints them.
fn serde_json_like(metrics: &StoreMetrics) -> String {
    serde_json::to_string(metrics).unwrap()
}

#[test]
fn retention_by_age_deletes_every_sealed_segment_once_old() {
    let memory = MemoryPorts::new(10_000, 4);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.tier2.retention = RetentionPolicy {
        max_age_ms: Some(10 * 60 * 1000),
        max_bytes: None,
    };
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "aged").await;
        for i in 0..100u64 {
            assert_eq!(append(&sender, "aged", big(i)).await, i);
        }
        sender
            .call(StoreCommand::Flush {
                stream: name("aged"),
            })
            .await
            .unwrap();
        // The clock jumps whenever the driver idles: everything sealed ages out.
        let settled = metrics_until(&sender, |metrics| {
            let stream = &metrics.streams["aged"];
            // The active segment holding the last records ages out too, so the end
            // state is one empty active segment at offset 100.
            stream.retention.segments_deleted > 0
                && stream.retention.deletes_pending == 0
                && stream.segments.total == 1
                && stream.durable_next_offset == 100
                && stream.start_offset == 100
        })
        .await;
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        settled
    };
    let (store, settled) = block_on(join(driver, calls));
    store.check_invariants();
    let stream = &settled.streams["aged"];
    assert_eq!(
        stream.start_offset, 100,
        "every record was in a sealed segment"
    );
    assert_eq!(store.start_offset(&name("aged")), Some(100));
    let objects = memory.object_store.keys();
    assert!(
        segment_ids(&objects, "segments/aged/", ".zst").is_empty(),
        "{objects:?}"
    );
    let local: Vec<String> = memory
        .disk
        .paths()
        .into_iter()
        .filter(|path| path.ends_with(".seg") || path.starts_with("streams/aged/tier1/"))
        .collect();
    assert_eq!(local.len(), 1, "only the active segment is left: {local:?}");
    assert_eq!(stream.retention.segments_deleted, settled.tier2.deletes);
}

#[test]
fn snapshots_land_locally_and_in_tier2_and_old_chunks_are_pruned() {
    // The first snapshot's fsync fails: no marker, an error reply, then a good one.
    let memory = flaky_ports(0, 1);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 4 * 1024;
    config.manifest.chunk_capacity_bytes = 16 * 1024;
    config.snapshot_every_records = 0;
    config.snapshot_interval_ms = 0;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    // No timer ever fires (no age rollover, no rotation, no interval flush): segments
    // roll by size, one record each, so the index the store ends with is exactly the
    // one the snapshot covers, plus its marker.
    memory.clock.freeze();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "snap").await;
        let failed = sender
            .call(StoreCommand::Snapshot {
                stream: name("snap"),
            })
            .await
            .unwrap();
        assert!(
            matches!(
                failed,
                StoreReply::Error(StoreError::SnapshotFailed { snapshot_id: 0, .. })
            ),
            "{failed:?}"
        );
        for i in 0..300u64 {
            assert_eq!(append(&sender, "snap", big(i)).await, i);
        }
        sender
            .call(StoreCommand::Flush {
                stream: name("snap"),
            })
            .await
            .unwrap();
        let before = metrics_until(&sender, |metrics| {
            let stream = &metrics.streams["snap"];
            // Each record fills a segment, which is sealed after it: 300 sealed and
            // the new active one, each through to Tier 2.
            pipeline_idle(metrics)
                && stream.segments.total == 301
                && stream.snapshots.manifest_chunks_uploaded >= 3
        })
        .await;
        let reply = sender
            .call(StoreCommand::Snapshot {
                stream: name("snap"),
            })
            .await
            .unwrap();
        let after = metrics_until(&sender, |metrics| {
            metrics.streams["snap"].snapshots.manifest_chunks_removed > 0
                && metrics.tier2.upload_queue_depth == 0
        })
        .await;
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        (before, reply, after)
    };
    let (store, (before, reply, after)) = block_on(join(driver, calls));
    store.check_invariants();
    let StoreReply::Snapshot {
        snapshot_id,
        chunk_index,
        chunk_offset,
        record_ordinal,
    } = reply
    else {
        panic!("{reply:?}");
    };
    assert_eq!(snapshot_id, 1, "ids grow, the failed one included");
    let stream = &after.streams["snap"];
    assert_eq!(stream.snapshots.snapshot_failures, 1);
    assert_eq!(stream.snapshots.snapshots_taken, 1);
    assert_eq!(stream.manifest.snapshot_id, Some(1));
    assert_eq!(stream.manifest.snapshot_chunk_index, Some(chunk_index));
    // The failed snapshot left no file under its final name and no object.
    let paths = memory.disk.paths();
    let objects = memory.object_store.keys();
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with("00000000000000000000.snap"))
    );
    assert!(
        !objects
            .iter()
            .any(|k| k.ends_with("00000000000000000000.snap"))
    );
    // The good one: the same bytes locally and in Tier 2, decoding to the position
    // replied and the index the store held (every record before its marker).
    let local = memory
        .disk
        .file("streams/snap/snapshots/00000000000000000001.snap")
        .expect("snapshot file");
    let object = memory
        .object_store
        .object("snapshots/snap/00000000000000000001.snap")
        .expect("snapshot object");
    assert_eq!(local, object.to_vec());
    let snapshot = Snapshot::decode(&local).unwrap();
    assert_eq!(snapshot.snapshot_id(), 1);
    let position = snapshot.position();
    assert_eq!(
        (
            position.chunk_index,
            position.chunk_offset,
            position.record_ordinal
        ),
        (chunk_index, chunk_offset, record_ordinal)
    );
    let held = store.manifest_index(&name("snap")).unwrap();
    assert_eq!(snapshot.index().segments(), held.segments());
    // It covers every record journaled before it was asked for; background work
    // (uploads finishing) may journal more before the manifest is caught up.
    assert!(record_ordinal >= before.streams["snap"].manifest.next_ordinal);
    assert_eq!(
        held.next_ordinal(),
        record_ordinal + 1,
        "then only its marker"
    );
    assert_eq!(held.last_snapshot().unwrap().snapshot_id, 1);
    // Every sealed chunk is in Tier 2; the local ones older than the snapshot's chunk
    // (and than the newest sealed one) are gone; those left match their copies.
    let remote = segment_ids(&objects, "manifest/snap/", ".mlog");
    let local_chunks = segment_ids(&paths, "streams/snap/manifest/", ".mlog");
    let newest_remote = *remote.iter().max().unwrap();
    assert_eq!(
        remote,
        (0..=newest_remote).collect::<Vec<_>>(),
        "no chunk missing"
    );
    assert!(
        local_chunks.len() < remote.len() + 1,
        "{local_chunks:?} vs {remote:?}"
    );
    for index in &remote {
        let key = format!("manifest/snap/{index:020}.mlog");
        let bytes = memory.object_store.object(&key).unwrap();
        assert!(
            decode_chunk(*index, &bytes).commit.unwrap().flags.sealed,
            "{key}"
        );
        let path = format!("streams/snap/manifest/{index:020}.mlog");
        match memory.disk.file(&path) {
            Some(file) => assert_eq!(file, bytes.to_vec(), "{path}"),
            None => assert!(
                *index < chunk_index.min(newest_remote),
                "{path} pruned too early"
            ),
        }
    }
    assert!(stream.snapshots.manifest_chunks_removed > 0);
}

#[test]
fn periodic_snapshots_by_record_count() {
    let memory = MemoryPorts::new(10_000, 4);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.snapshot_every_records = 20;
    config.snapshot_interval_ms = 0;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "p").await;
        for i in 0..200u64 {
            assert_eq!(append(&sender, "p", big(i)).await, i);
        }
        let settled = metrics_until(&sender, |metrics| {
            metrics.streams["p"].snapshots.snapshots_taken >= 2
        })
        .await;
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        settled
    };
    let (store, settled) = block_on(join(driver, calls));
    store.check_invariants();
    let objects = memory.object_store.keys();
    let ids = segment_ids(&objects, "snapshots/p/", ".snap");
    assert!(ids.len() >= 2, "{objects:?}");
    let mut last_ordinal = 0;
    for id in ids {
        let path = format!("streams/p/snapshots/{id:020}.snap");
        let local = memory.disk.file(&path).unwrap();
        let key = format!("snapshots/p/{id:020}.snap");
        assert_eq!(local, memory.object_store.object(&key).unwrap().to_vec());
        let snapshot = Snapshot::decode(&local).unwrap();
        assert_eq!(snapshot.snapshot_id(), id);
        assert!(
            snapshot.position().record_ordinal > last_ordinal,
            "snapshots move on"
        );
        last_ordinal = snapshot.position().record_ordinal;
    }
    assert!(settled.streams["p"].manifest.snapshot_id.is_some());
}

#[test]
fn a_reopened_stream_copies_again_the_sealed_chunks_tier2_lacks() {
    // A crash between a chunk's seal and its copy leaves Tier 2 without it; here the
    // copy is removed by hand after a clean close, which leaves the same state.
    let memory = MemoryPorts::new(10_000, 4);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.manifest.chunk_capacity_bytes = 16 * 1024;
    config.snapshot_every_records = 0;
    config.snapshot_interval_ms = 0;
    let session = |memory: &MemoryPorts, appends: u64| {
        let store = Store::new(config, 10_000).unwrap();
        let (sender, receiver) = command_channel::<Store>();
        let driver = run(store, memory.ports.clone(), receiver, limits());
        let calls = async move {
            open(&sender, "copy").await;
            for _ in 0..appends {
                append(&sender, "copy", big(7)).await;
            }
            let settled = metrics_until(&sender, |metrics| {
                pipeline_idle(metrics)
                    && metrics.streams["copy"].snapshots.manifest_chunks_uploaded >= 3
            })
            .await;
            assert_eq!(
                sender.call(StoreCommand::Close).await.unwrap(),
                StoreReply::Closed
            );
            settled
        };
        let (store, settled) = block_on(join(driver, calls));
        store.check_invariants();
        settled
    };
    session(&memory, 300);
    let chunk_key = "manifest/copy/00000000000000000001.mlog";
    let original = memory
        .object_store
        .object(chunk_key)
        .expect("chunk 1 was copied");
    block_on(memory.object_store.delete(chunk_key)).unwrap();
    assert!(memory.object_store.object(chunk_key).is_none());

    // Reopened: every local chunk below the writer's first is copied again; those
    // Tier 2 still holds are confirmed by the conditional put, the missing one lands.
    let reopened = session(&memory, 0);
    let stream = &reopened.streams["copy"];
    assert!(
        stream.snapshots.manifest_chunks_uploaded >= 3,
        "{:?}",
        stream.snapshots
    );
    let copied = memory
        .object_store
        .object(chunk_key)
        .expect("chunk 1 is copied again");
    assert_eq!(copied, original);
    let local = memory
        .disk
        .file("streams/copy/manifest/00000000000000000001.mlog")
        .expect("the local chunk is kept (no snapshot allows pruning it)");
    assert_eq!(copied.as_ref(), local.as_slice());
}

#[test]
fn a_deletion_queued_before_a_restart_is_finished_after_it() {
    // Every delete fails in the first session: retention queues the oldest segments
    // (start offset moved, `Tier2DeleteQueued` committed), then abandons the Tier 2
    // deletes. The second session has no retention policy at all, so nothing but the
    // queued jobs in the manifest can make it delete anything.
    let memory = flaky_ports(u32::MAX, 0);
    let mut config = size_retention_config();
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "queued").await;
        for i in 0..200u64 {
            append(&sender, "queued", big(i)).await;
        }
        sender
            .call(StoreCommand::Flush {
                stream: name("queued"),
            })
            .await
            .unwrap();
        let settled = metrics_until(&sender, |metrics| {
            let retention = &metrics.streams["queued"].retention;
            retention.deletes_abandoned > 0
                && retention.deletes_pending == 0
                && pipeline_idle(metrics)
        })
        .await;
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        settled
    };
    let (store, first) = block_on(join(driver, calls));
    store.check_invariants();
    let first = &first.streams["queued"];
    let start_offset = first.start_offset;
    let abandoned = first.retention.deletes_abandoned;
    assert!(start_offset > 0 && abandoned >= 2, "{first:?}");
    let before = segment_ids(&memory.object_store.keys(), "segments/queued/", ".zst");
    assert_eq!(before[0], 0, "no delete reached Tier 2: {before:?}");

    let mut ports = memory.ports.clone();
    ports.object_store = memory.object_store.clone();
    config.tier2.retention = RetentionPolicy::KEEP_ALL;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, ports, receiver, limits());
    let calls = async move {
        open(&sender, "queued").await;
        // The resumed deletions run at the open: pending until they are done.
        let settled = metrics_until(&sender, |metrics| {
            let retention = &metrics.streams["queued"].retention;
            retention.segments_deleted > 0
                && retention.deletes_pending == 0
                && pipeline_idle(metrics)
        })
        .await;
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        settled
    };
    let (store, second) = block_on(join(driver, calls));
    store.check_invariants();
    // Every abandoned deletion was queued; the first session may have queued a few
    // more while it closed, which the manifest holds too.
    let summary = store.recovery_summary(&name("queued")).unwrap();
    let resumed = summary.deletions_resumed;
    assert!(
        resumed >= abandoned,
        "{resumed} resumed, {abandoned} abandoned"
    );
    let second = &second.streams["queued"];
    assert_eq!(second.retention.segments_deleted, resumed);
    assert!(
        second.start_offset >= start_offset,
        "the start offset never goes back"
    );
    let after = segment_ids(&memory.object_store.keys(), "segments/queued/", ".zst");
    assert_eq!(
        after[0], resumed,
        "exactly the queued prefix is gone: {before:?} -> {after:?}"
    );
    assert_eq!(after.len() as u64 + resumed, before.len() as u64);
    let paths = memory.disk.paths();
    for id in 0..resumed {
        let file = format!("streams/queued/segments/{id:020}.seg");
        let artifact = format!("streams/queued/tier1/{id:020}.zst");
        assert!(!paths.contains(&file), "{file} is gone");
        assert!(!paths.contains(&artifact), "{artifact} is gone");
    }
}

#[test]
fn an_operator_deletes_a_prefix_all_or_none() {
    let mut memory = MemoryPorts::new(10_000, 4);
    memory.clock.freeze();
    let refused = "segments/ops/00000000000000000002.zst";
    memory.ports.object_store = Arc::new(FlakyObjectStore {
        refused_put: Some(refused.to_owned()),
        ..FlakyObjectStore::new(memory.object_store.clone())
    });
    let mut config = size_retention_config();
    config.tier2.retention = RetentionPolicy::KEEP_ALL;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let objects = memory.object_store.clone();
    let delete = |before: u64| StoreCommand::DeleteSegments {
        stream: name("ops"),
        before: SegmentId(before),
    };
    let calls = async move {
        open(&sender, "ops").await;
        for i in 0..100u64 {
            assert_eq!(append(&sender, "ops", big(i)).await, i);
        }
        // Segment 2's upload fails for good; the others are uploaded.
        metrics_until(&sender, |metrics| {
            metrics.tier2.upload_failures > 0
                && metrics.tier2.uploads >= 4
                && pipeline_idle(metrics)
        })
        .await;
        let refused_reply = sender.call(delete(4)).await.unwrap();
        let active_reply = sender.call(delete(1_000)).await.unwrap();
        let deleting = sender.call(delete(2)).await.unwrap();
        let settled = metrics_until(&sender, |metrics| {
            metrics.streams["ops"].retention.deletes_pending == 0 && pipeline_idle(metrics)
        })
        .await;
        let again = sender.call(delete(2)).await.unwrap();
        let below = sender
            .call(StoreCommand::Read {
                stream: name("ops"),
                offset: 0,
                mode: aof2_core::store::ReadMode::default(),
            })
            .await
            .unwrap();
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        (refused_reply, active_reply, deleting, settled, again, below)
    };
    let (store, (refused_reply, active_reply, deleting, settled, again, below)) =
        block_on(join(driver, calls));
    store.check_invariants();
    match refused_reply {
        StoreReply::Error(StoreError::SegmentNotDeletable {
            segment_id, reason, ..
        }) => {
            assert_eq!(segment_id, SegmentId(2));
            assert!(reason.contains("Tier 2 does not hold it"), "{reason}");
        }
        other => panic!("a segment without its object refuses the delete: {other:?}"),
    }
    assert!(
        matches!(
            &active_reply,
            StoreReply::Error(StoreError::SegmentNotDeletable { reason, .. })
                if reason.contains("active segment")
        ),
        "{active_reply:?}"
    );
    let StoreReply::SegmentsDeleting {
        segments,
        start_offset,
    } = deleting
    else {
        panic!("deleting below 2: {deleting:?}")
    };
    assert_eq!(segments, 2);
    assert!(start_offset > 0);
    assert_eq!(store.start_offset(&name("ops")), Some(start_offset));
    let stream = &settled.streams["ops"];
    assert_eq!(stream.retention.segments_deleted, 2);
    assert_eq!(
        again,
        StoreReply::SegmentsDeleting {
            segments: 0,
            start_offset
        }
    );
    assert!(
        matches!(below, StoreReply::Error(_)),
        "offset 0 is below the start: {below:?}"
    );
    // Segments 0 and 1 are gone from every tier; the refused delete took nothing.
    let keys = objects.keys();
    let remaining = segment_ids(&keys, "segments/ops/", ".zst");
    assert!(
        !remaining.contains(&0) && !remaining.contains(&1),
        "{remaining:?}"
    );
    assert!(remaining.contains(&3), "{remaining:?}");
    let paths = memory.disk.paths();
    for id in [0u64, 1] {
        assert!(!paths.contains(&format!("streams/ops/segments/{id:020}.seg")));
        assert!(!paths.contains(&format!("streams/ops/tier1/{id:020}.zst")));
    }
    assert!(paths.contains(&format!("streams/ops/segments/{:020}.seg", 2)));
    // The manifest says who deleted them.
    let mut reasons = Vec::new();
    for path in paths
        .iter()
        .filter(|path| path.starts_with("streams/ops/manifest/"))
    {
        let index: u64 = path
            .rsplit('/')
            .next()
            .and_then(|file| file.strip_suffix(".mlog"))
            .and_then(|stem| stem.parse().ok())
            .unwrap();
        let bytes = memory.disk.file(path).unwrap();
        for frame in decode_chunk(index, &bytes).frames {
            if let DecodedFrame::Known(frame) = frame.frame
                && let ManifestRecord::Tier2DeleteQueued {
                    segment_id, reason, ..
                } = frame.record
            {
                reasons.push((segment_id.0, reason));
            }
        }
    }
    assert_eq!(
        reasons,
        vec![(0, ReasonCode::Operator), (1, ReasonCode::Operator)]
    );
}
