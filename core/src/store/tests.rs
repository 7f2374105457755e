//! Unit tests of the store, driven by the real driver over in-memory ports.

use super::*;
use crate::driver::{DriverLimits, command_channel, run};
use crate::memory_ports::MemoryPorts;
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

/// Appends, retrying while the stream says `WouldBlock` (the jump clock fires the
/// age-based rollover at once whenever the driver idles).
pub(super) async fn append_retrying(
    sender: &crate::driver::CommandSender<Store>,
    stream: &str,
    payload: String,
) -> u64 {
    for _ in 0..100_000 {
        let reply = sender
            .call(StoreCommand::Append {
                stream: name(stream),
                payload: Bytes::from(payload.clone()),
                ext_id: None,
                wait: false,
            })
            .await
            .unwrap();
        match reply {
            StoreReply::Appended(offset) => return offset,
            StoreReply::WouldBlock(_) => {}
            other => panic!("append failed: {other:?}"),
        }
    }
    panic!("append stayed blocked");
}

#[test]
fn open_append_wait_durable_close() {
    let memory = MemoryPorts::new(1_000, 2);
    let store = Store::new(StoreConfig::default(), 1_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let opened = sender
            .call(StoreCommand::OpenStream {
                name: "orders".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            opened,
            StoreReply::Opened {
                stream: name("orders"),
                next_offset: 0
            }
        );
        let mut last = 0;
        for i in 0..20u64 {
            let offset = append_retrying(&sender, "orders", format!("record {i}")).await;
            assert_eq!(offset, i);
            last = i;
        }
        let durable = sender
            .call(StoreCommand::WaitDurable {
                stream: name("orders"),
                offset: last,
            })
            .await
            .unwrap();
        assert!(
            matches!(durable, StoreReply::Durable { next_offset } if next_offset > last),
            "{durable:?}"
        );
        let flushed = sender
            .call(StoreCommand::Flush {
                stream: name("orders"),
            })
            .await
            .unwrap();
        assert!(
            matches!(flushed, StoreReply::Durable { next_offset } if next_offset >= 20),
            "{flushed:?}"
        );
        assert_eq!(
            sender.call(StoreCommand::Close).await.unwrap(),
            StoreReply::Closed
        );
    };
    let (store, ()) = block_on(join(driver, calls));
    assert!(store.is_finished());
    assert_eq!(store.durable_next_offset(&name("orders")), Some(20));
    assert!(
        memory
            .disk
            .paths()
            .iter()
            .any(|path| path.starts_with("streams/orders/manifest/")),
        "a manifest chunk exists: {:?}",
        memory.disk.paths()
    );
}

#[test]
fn bad_commands_get_typed_errors() {
    let memory = MemoryPorts::new(0, 1);
    let store = Store::new(StoreConfig::default(), 0).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let driver = run(store, memory.ports.clone(), receiver, limits());
    let calls = async move {
        let bad = sender
            .call(StoreCommand::OpenStream {
                name: "../etc".into(),
            })
            .await
            .unwrap();
        assert!(
            matches!(bad, StoreReply::Error(StoreError::InvalidName(_))),
            "{bad:?}"
        );
        let unknown = sender
            .call(StoreCommand::Append {
                stream: name("nope"),
                payload: Bytes::from_static(b"x"),
                ext_id: None,
                wait: false,
            })
            .await
            .unwrap();
        assert!(
            matches!(unknown, StoreReply::Error(StoreError::UnknownStream(_))),
            "{unknown:?}"
        );
        sender
            .call(StoreCommand::OpenStream { name: "a".into() })
            .await
            .unwrap();
        let again = sender
            .call(StoreCommand::OpenStream { name: "a".into() })
            .await
            .unwrap();
        assert!(
            matches!(again, StoreReply::Error(StoreError::AlreadyOpen(_))),
            "{again:?}"
        );
        let never = sender
            .call(StoreCommand::WaitDurable {
                stream: name("a"),
                offset: 0,
            })
            .await
            .unwrap();
        assert!(
            matches!(never, StoreReply::Error(StoreError::NotAppended { .. })),
            "{never:?}"
        );
    };
    let (store, ()) = block_on(join(driver, calls));
    assert!(store.is_finished());
}

#[test]
fn invalid_config_is_refused() {
    let mut config = StoreConfig::default();
    config.manifest.chunk_capacity_bytes = 0;
    assert!(matches!(
        Store::new(config, 0),
        Err(StoreError::Config {
            what: "manifest",
            ..
        })
    ));
}
