//! Reads through the store, driven by the real `driver::run` over `MemoryPorts`, with
//! every component's `check_invariants()` after every step.
//!
//! **Invariants checked**
//! - A record reads back byte-identical (payload, offset, ext_id) from every tier: the
//!   active segment in memory, a sealed segment file in Tier 0, and a segment Tier 0
//!   evicted, which first answers `WouldBlock(Hydration)` and is then hydrated back.
//! - A hydrated segment file equals the uploaded artifact, decompressed.
//! - A tail follower parked at the durable end is woken by new durable data.
//! - Reads past the next offset are `NotAppended` errors, not `WouldBlock`.
//! - The whole chain append -> seal -> compress -> upload -> eviction -> cold read ->
//!   retention delete holds, and reads below the new start offset are out of range.
//! - Appends with `wait` are never answered `WouldBlock`; concurrent waiting writers
//!   get dense, distinct offsets in their own order.
//! - `Seal` is answered with the sealed segment once committed (also when a rollover
//!   in flight already sealed it), `None` when empty.
//! - A hydration from Tier 2 is a Tier 2 fetch: counted in `fetches`, and a missing
//!   object in `download_failures`, failing the waiting read with `ColdRead`.

use aof2_core::SegmentId;
use aof2_core::backpressure::BackpressureKind;
use aof2_core::driver::{
    CommandSender, DiskPort, DriverLimits, Machine, ObjectStorePort, command_channel, run,
};
use aof2_core::memory_ports::MemoryPorts;
use aof2_core::names::{StreamName, artifact_path, segment_object_key};
use aof2_core::store::{ReadMode, Store, StoreCommand, StoreConfig, StoreError, StoreReply};
use aof2_core::tier2::RetentionPolicy;
use bytes::Bytes;
use futures::executor::block_on;
use futures::future::join;

fn limits() -> DriverLimits {
    DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    }
}

fn name(text: &str) -> StreamName {
    StreamName::new(text).unwrap()
}

/// A payload that names its offset, 2 KiB to ~6 KiB.
fn payload(offset: u64) -> Bytes {
    let fill = 2048 + (offset * 97) % 4096;
    let mut bytes = format!("record-{offset:08}-").into_bytes();
    bytes.extend((0..fill).map(|i| (i * 31 + offset) as u8));
    Bytes::from(bytes)
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

async fn append(sender: &CommandSender<Store>, stream: &str, offset: u64) {
    for _ in 0..100_000 {
        let reply = sender
            .call(StoreCommand::Append {
                stream: name(stream),
                payload: payload(offset),
                ext_id: Some(offset + 1),
                wait: false,
            })
            .await
            .unwrap();
        match reply {
            StoreReply::Appended(appended) => {
                assert_eq!(appended, offset);
                return;
            }
            StoreReply::WouldBlock(_) => {}
            other => panic!("append {offset} failed: {other:?}"),
        }
    }
    panic!("append {offset} stayed blocked");
}

async fn read(
    sender: &CommandSender<Store>,
    stream: &str,
    offset: u64,
    mode: ReadMode,
) -> StoreReply {
    sender
        .call(StoreCommand::Read {
            stream: name(stream),
            offset,
            mode,
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

const WAIT: ReadMode = ReadMode {
    wait: true,
    sequential: false,
};
const SEQUENTIAL: ReadMode = ReadMode {
    wait: true,
    sequential: true,
};

fn segment_file(stream: &str, segment: u64) -> String {
    format!("streams/{stream}/segments/{segment:020}.seg")
}

#[test]
fn reads_from_every_tier_and_hydrates_evicted_segments() {
    let memory = MemoryPorts::new(10_000, 4);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    // Roll over by size only.
    memory.clock.freeze();
    config.tier0.cluster_max_bytes = 1024 * 1024;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let disk = memory.disk.clone();
    let records = 500u64;
    let calls = async move {
        open(&sender, "cold").await;
        // Unflushed records are not readable yet: a follower at offset 0 waits.
        for offset in 0..records {
            append(&sender, "cold", offset).await;
        }
        let durable = sender
            .call(StoreCommand::WaitDurable {
                stream: name("cold"),
                offset: records - 1,
            })
            .await
            .unwrap();
        assert!(matches!(durable, StoreReply::Durable { .. }), "{durable:?}");
        // The hot tail comes from memory.
        assert_record(
            &read(&sender, "cold", records - 1, ReadMode::default()).await,
            records - 1,
        );
        // Wait (bounded) for Tier 0 to evict segment 0 after its upload.
        let first = segment_file("cold", 0);
        let mut polls = 0;
        while disk.file(&first).is_some() {
            polls += 1;
            assert!(polls < 100_000, "segment 0 was never evicted");
            let _ = read(&sender, "cold", records - 1, ReadMode::default()).await;
        }
        let evicted_bytes = format!("segments/cold/{:020}.zst", 0);
        // A cold read without waiting: the hydration starts, the reader is told.
        let cold = read(&sender, "cold", 3, ReadMode::default()).await;
        assert_eq!(cold, StoreReply::WouldBlock(BackpressureKind::Hydration));
        // Waiting gets the record once the segment is back in Tier 0.
        assert_record(&read(&sender, "cold", 3, WAIT).await, 3);
        // Every record, in order, from whichever tier holds it.
        for offset in 0..records {
            assert_record(&read(&sender, "cold", offset, SEQUENTIAL).await, offset);
        }
        // Past the end: never appended.
        let past = read(&sender, "cold", records + 1, ReadMode::default()).await;
        assert!(
            matches!(past, StoreReply::Error(StoreError::NotAppended { offset, .. }) if offset == records + 1),
            "{past:?}"
        );
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        evicted_bytes
    };
    let (store, uploaded_key) = block_on(join(driver, calls));
    store.check_invariants();
    let metrics = store.read_metrics();
    assert!(metrics.cold_misses >= 1, "{metrics:?}");
    assert!(metrics.hydrations_requested >= 1, "{metrics:?}");
    assert!(metrics.sealed_reads >= 1, "{metrics:?}");
    assert!(metrics.hot_reads >= 1, "{metrics:?}");
    // One record index per segment read, unless Tier 0 evicted it in between.
    let segments = memory.object_store.keys().len() as u64;
    assert!(segments >= 20, "{segments} segments uploaded");
    assert!(metrics.record_index_loads >= segments / 2, "{metrics:?}");
    assert!(metrics.record_index_loads < records / 4, "{metrics:?}");
    assert!(metrics.prefetches >= 1, "{metrics:?}");
    // If Tier 0 still holds segment 0 (it may have evicted it again), the hydrated file
    // is the uploaded artifact, decompressed.
    let object = memory
        .object_store
        .object(&uploaded_key)
        .expect("segment 0 in Tier 2");
    let segment = aof2_core::artifact::decode_all(&object).expect("artifact decodes");
    if let Some(file) = memory.disk.file(&segment_file("cold", 0)) {
        assert_eq!(file, segment);
    }
}

#[test]
fn tail_follower_is_woken_by_new_durable_records() {
    let memory = MemoryPorts::new(10_000, 4);
    // No rollover by age: every read is a hot read from the active segment.
    memory.clock.freeze();
    let store = Store::new(StoreConfig::default(), 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "tail").await;
        append(&sender, "tail", 0).await;
        let follower = {
            let sender = sender.clone();
            async move {
                let mut seen = Vec::new();
                for offset in 0..20u64 {
                    let reply = read(&sender, "tail", offset, WAIT).await;
                    assert_record(&reply, offset);
                    seen.push(offset);
                }
                seen
            }
        };
        let writer = {
            let sender = sender.clone();
            async move {
                for offset in 1..20u64 {
                    append(&sender, "tail", offset).await;
                    let flushed = sender
                        .call(StoreCommand::Flush {
                            stream: name("tail"),
                        })
                        .await
                        .unwrap();
                    assert!(matches!(flushed, StoreReply::Durable { .. }), "{flushed:?}");
                }
            }
        };
        let (seen, ()) = join(follower, writer).await;
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        // Without waiting, the durable end answers WouldBlock(Tail).
        let at_end = read(&sender, "tail", 20, ReadMode::default()).await;
        assert_eq!(at_end, StoreReply::WouldBlock(BackpressureKind::Tail));
        // A parked follower at the end is answered when the store closes.
        let parked = read(&sender, "tail", 20, WAIT);
        let close = sender.call(StoreCommand::Close);
        let (parked, closed) = join(parked, close).await;
        assert_eq!(parked, StoreReply::Error(StoreError::Closed));
        assert_eq!(closed.unwrap(), StoreReply::Closed);
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
    assert!(store.read_metrics().hot_reads >= 20);
}

#[test]
fn waiting_appends_ride_out_rollovers_and_seal_answers_once_committed() {
    let memory = MemoryPorts::new(10_000, 4);
    memory.clock.freeze();
    let mut config = StoreConfig::default();
    // About three records per segment: a rollover every few appends.
    config.stream.segment_target_bytes = 12 * 1024;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        open(&sender, "seal").await;
        // Three writers at once, each waiting: no WouldBlock reaches them, offsets are
        // dense and every record reads back.
        let writer = |first: u64| {
            let sender = sender.clone();
            async move {
                let mut offsets = Vec::new();
                for i in 0..30u64 {
                    let reply = sender
                        .call(StoreCommand::Append {
                            stream: name("seal"),
                            payload: Bytes::from(vec![(first + i) as u8; 4000]),
                            ext_id: None,
                            wait: true,
                        })
                        .await
                        .unwrap();
                    match reply {
                        StoreReply::Appended(offset) => offsets.push(offset),
                        other => panic!("a waiting append got {other:?}"),
                    }
                }
                offsets
            }
        };
        let (a, (b, c)) = join(writer(0), join(writer(100), writer(200))).await;
        let mut all: Vec<u64> = a.iter().chain(&b).chain(&c).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..90).collect::<Vec<_>>(), "dense, no duplicates");
        for offsets in [&a, &b, &c] {
            assert!(
                offsets.windows(2).all(|pair| pair[0] < pair[1]),
                "{offsets:?}"
            );
        }
        // Seal the active segment: answered with its id once committed.
        append(&sender, "seal", 90).await;
        let sealed = sender
            .call(StoreCommand::Seal {
                stream: name("seal"),
            })
            .await
            .unwrap();
        let StoreReply::Sealed {
            segment_id: Some(segment_id),
        } = sealed
        else {
            panic!("seal of a non-empty segment: {sealed:?}");
        };
        assert!(segment_id.0 >= 20, "30 rollovers before: {segment_id:?}");
        // Nothing was appended since: the segment after it is empty (or, while its
        // opening is still in flight, the answer is the seal already covering every
        // record appended).
        let again = sender
            .call(StoreCommand::Seal {
                stream: name("seal"),
            })
            .await
            .unwrap();
        assert!(
            again == StoreReply::Sealed { segment_id: None }
                || again
                    == StoreReply::Sealed {
                        segment_id: Some(segment_id)
                    },
            "{again:?}"
        );
        // The sealed record reads back from its sealed segment file.
        assert_record(&read(&sender, "seal", 90, WAIT).await, 90);
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
}

/// The whole life of a record through the real driver: append -> seal -> compress ->
/// upload -> local eviction -> cold read (`WouldBlock(Hydration)`, then the right
/// bytes) -> retention delete (reads below the new start offset are out of range).
#[test]
fn full_chain_from_append_to_retention_delete() {
    let memory = MemoryPorts::new(10_000, 4);
    memory.clock.freeze();
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.tier0.cluster_max_bytes = 1024 * 1024;
    config.tier1.max_bytes = 1024 * 1024;
    config.tier2.retention = RetentionPolicy {
        max_age_ms: Some(60 * 60 * 1000),
        max_bytes: None,
    };
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let disk = memory.disk.clone();
    let clock = memory.clock.clone();
    let records = 500u64;
    let calls = async move {
        open(&sender, "life").await;
        for offset in 0..records {
            append(&sender, "life", offset).await;
        }
        let durable = sender
            .call(StoreCommand::WaitDurable {
                stream: name("life"),
                offset: records - 1,
            })
            .await
            .unwrap();
        assert!(matches!(durable, StoreReply::Durable { .. }), "{durable:?}");
        // Sealed, compressed, uploaded, then evicted from Tier 0 (bounded wait).
        let first = segment_file("life", 0);
        let mut polls = 0;
        while disk.file(&first).is_some() {
            polls += 1;
            assert!(polls < 100_000, "segment 0 was never evicted");
            let _ = read(&sender, "life", records - 1, ReadMode::default()).await;
        }
        // Cold: the reader is told, then waiting gets the right bytes.
        let cold = read(&sender, "life", 1, ReadMode::default()).await;
        assert_eq!(cold, StoreReply::WouldBlock(BackpressureKind::Hydration));
        assert_record(&read(&sender, "life", 1, WAIT).await, 1);
        // An hour later retention deletes every sealed segment.
        clock.advance(2 * 60 * 60 * 1000);
        let mut polls = 0;
        let start = loop {
            polls += 1;
            assert!(polls < 100_000, "retention never deleted anything");
            let StoreReply::Metrics(metrics) = sender.call(StoreCommand::Metrics).await.unwrap()
            else {
                panic!("Metrics is answered Metrics");
            };
            let stream = &metrics.streams["life"];
            if stream.retention.segments_deleted > 0 && stream.retention.deletes_pending == 0 {
                break stream.start_offset;
            }
        };
        assert!(start > 1, "start offset {start} moved past offset 1");
        let gone = read(&sender, "life", 1, ReadMode::default()).await;
        assert!(
            matches!(gone, StoreReply::Error(StoreError::OffsetBelowStart { offset: 1, start_offset, .. }) if start_offset == start),
            "{gone:?}"
        );
        // What retention kept still reads back.
        for offset in start..records {
            assert_record(&read(&sender, "life", offset, SEQUENTIAL).await, offset);
        }
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
        start
    };
    let (store, start) = block_on(join(driver, calls));
    store.check_invariants();
    let objects = memory.object_store.keys();
    assert!(
        !objects
            .iter()
            .any(|key| key == "segments/life/00000000000000000000.zst"),
        "segment 0 deleted from Tier 2: {objects:?}"
    );
    assert!(store.read_metrics().cold_misses >= 1);
    assert!(start <= records);
}

#[test]
fn a_hydration_from_tier2_is_a_counted_tier2_fetch() {
    for object_lost in [false, true] {
        let memory = MemoryPorts::new(10_000, 4);
        memory.clock.freeze();
        let mut config = StoreConfig::default();
        config.stream.segment_target_bytes = 64 * 1024;
        config.tier0.cluster_max_bytes = 1024 * 1024;
        let store = Store::new(config, 10_000).unwrap();
        let (sender, receiver) = command_channel::<Store>();
        let driver = run(store, memory.ports.clone(), receiver, limits());
        let disk = memory.disk.clone();
        let objects = memory.object_store.clone();
        let calls = async move {
            open(&sender, "cold").await;
            for offset in 0..500 {
                append(&sender, "cold", offset).await;
            }
            let mut polls = 0;
            while disk.file(&segment_file("cold", 0)).is_some() {
                polls += 1;
                assert!(polls < 100_000, "segment 0 was never evicted");
                let _ = read(&sender, "cold", 499, ReadMode::default()).await;
            }
            // Only Tier 2 holds segment 0 now (or nothing, once its object is lost).
            let artifact = artifact_path(&name("cold"), SegmentId(0));
            if disk.file(artifact.as_str()).is_some() {
                disk.remove(&artifact).await.unwrap();
            }
            if object_lost {
                let key = segment_object_key(&name("cold"), SegmentId(0));
                objects.delete(&key).await.unwrap();
            }
            let reply = read(&sender, "cold", 3, WAIT).await;
            assert_eq!(
                sender.call(StoreCommand::Close).await.unwrap(),
                StoreReply::Closed
            );
            reply
        };
        let (store, reply) = block_on(join(driver, calls));
        store.check_invariants();
        let tier2 = store.metrics().tier2;
        if object_lost {
            assert!(
                matches!(reply, StoreReply::Error(StoreError::ColdRead { .. })),
                "{reply:?}"
            );
            assert!(tier2.download_failures >= 1, "{tier2:?}");
        } else {
            assert_record(&reply, 3);
            assert!(tier2.fetches >= 1, "{tier2:?}");
            assert_eq!(tier2.download_failures, 0, "{tier2:?}");
        }
    }
}
