//! The store driven by the real `driver::run` over `MemoryPorts`, with every
//! component's invariants checked after every step (`DriverLimits::check_invariants`).

use aof2_core::driver::{CommandSender, DriverLimits, Machine, command_channel, run};
use aof2_core::memory_ports::MemoryPorts;
use aof2_core::names::StreamName;
use aof2_core::store::{Store, StoreCommand, StoreConfig, StoreReply};
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

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("payload-{i:06}-{}", "x".repeat((i % 50) as usize)))
}

#[test]
fn open_append_many_durable_then_close() {
    let memory = MemoryPorts::new(10_000, 4);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 4096;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        for stream in ["alpha", "beta"] {
            let opened = sender
                .call(StoreCommand::OpenStream {
                    name: stream.into(),
                })
                .await
                .unwrap();
            assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
        }
        for i in 0..300u64 {
            assert_eq!(append(&sender, "alpha", payload(i)).await, i);
            if i % 3 == 0 {
                assert_eq!(append(&sender, "beta", payload(i)).await, i / 3);
            }
        }
        let durable = sender
            .call(StoreCommand::WaitDurable {
                stream: name("alpha"),
                offset: 299,
            })
            .await
            .unwrap();
        assert!(
            matches!(durable, StoreReply::Durable { next_offset } if next_offset == 300),
            "{durable:?}"
        );
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
    assert!(store.is_finished());
    assert_eq!(store.durable_next_offset(&name("alpha")), Some(300));
    assert_eq!(store.durable_next_offset(&name("beta")), Some(100));
    let segments = memory
        .disk
        .paths()
        .into_iter()
        .filter(|path| path.starts_with("streams/alpha/segments/") && path.ends_with(".seg"))
        .count();
    assert!(segments > 1, "4 KiB segments rolled over: {segments}");
}

#[test]
fn seal_compress_upload_then_evict_locally() {
    let memory = MemoryPorts::new(10_000, 4);
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.tier0.cluster_max_bytes = 1024 * 1024;
    let store = Store::new(config, 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = sender
            .call(StoreCommand::OpenStream {
                name: "cold".into(),
            })
            .await
            .unwrap();
        assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
        // ~2 MiB in 64 KiB segments: twice the Tier 0 budget.
        let big = |i: u64| Bytes::from(format!("{i:08}").repeat(512));
        for i in 0..500u64 {
            assert_eq!(append(&sender, "cold", big(i)).await, i);
        }
        let durable = sender
            .call(StoreCommand::WaitDurable {
                stream: name("cold"),
                offset: 499,
            })
            .await
            .unwrap();
        assert!(matches!(durable, StoreReply::Durable { .. }), "{durable:?}");
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
    let paths = memory.disk.paths();
    let local_segments = paths
        .iter()
        .filter(|path| path.starts_with("streams/cold/segments/") && path.ends_with(".seg"))
        .count();
    let objects = memory.object_store.keys();
    let uploaded = objects
        .iter()
        .filter(|key| key.starts_with("segments/cold/"))
        .count();
    assert!(uploaded >= 20, "sealed segments uploaded: {objects:?}");
    assert!(
        local_segments < uploaded,
        "Tier 0 evicted uploaded segments: {local_segments} local, {uploaded} uploaded"
    );
    // Every uploaded segment object is the artifact Tier 1 wrote.
    for key in objects.iter().filter(|key| key.starts_with("segments/")) {
        let segment = key
            .strip_prefix("segments/cold/")
            .and_then(|rest| rest.strip_suffix(".zst"))
            .unwrap();
        let artifact = paths
            .iter()
            .find(|path| path.contains(segment) && path.ends_with(".zst"))
            .unwrap_or_else(|| panic!("artifact of {key} in {paths:?}"));
        assert_eq!(
            memory.disk.file(artifact).unwrap(),
            memory.object_store.object(key).unwrap().to_vec()
        );
    }
}
