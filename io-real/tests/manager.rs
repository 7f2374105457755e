//! The embedding API on the embedded default (local disk, Tier 2 in `<root>/tier2`).
//!
//! **Invariants checked**
//! - Every appended record reads back byte-identical (payload, ext_id) at its offset,
//!   before and after a close and reopen, from hot, sealed and evicted segments.
//! - A second manager on the same root is refused with an error naming the holder.
//! - Bad input (stream names) is an `InvalidInput` error, never a panic.
//! - Async appends and readers wait out backpressure; a reader at the durable end
//!   ends as an iterator and reports `WouldBlock(Tail)` from `try_next`.

use aof2_io_real::config::AofManagerConfig;
use aof2_io_real::core::backpressure::BackpressureKind;
use aof2_io_real::manager::{AofError, AofManager, ErrorKind};
use std::path::Path;

fn config(root: &Path) -> AofManagerConfig {
    let text = format!(
        r#"
root = "{}"
[stream]
segment_target_bytes = "64KiB"
[store.tier0]
cluster_max_bytes = "1MiB"
"#,
        root.display()
    );
    AofManagerConfig::from_toml(&text).expect("a valid config")
}

fn payload(offset: u64) -> Vec<u8> {
    let fill = 1024 + (offset * 131) % 3072;
    let mut bytes = format!("record {offset} ").into_bytes();
    bytes.extend((0..fill).map(|i| (i * 7 + offset) as u8));
    bytes
}

#[test]
fn append_read_close_reopen_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let records = 1_000u64;
    {
        let manager = AofManager::open(config(dir.path())).unwrap();
        let stream = manager.stream("orders").unwrap();
        for offset in 0..records {
            let appended = loop {
                match stream.append_with_ext_id(payload(offset), Some(offset + 7)) {
                    Ok(appended) => break appended,
                    Err(AofError::WouldBlock(_)) => continue,
                    Err(error) => panic!("append {offset}: {error}"),
                }
            };
            assert_eq!(appended, offset);
        }
        assert_eq!(stream.wait_durable(records - 1).unwrap(), records);
        for (offset, record) in stream.open_reader(0).enumerate() {
            let record = record.unwrap();
            assert_eq!(record.offset, offset as u64);
            assert_eq!(record.payload, payload(offset as u64));
            assert_eq!(record.ext_id, offset as u64 + 7);
        }
        manager.close().unwrap();
    }
    // ~2.5 MiB in 64 KiB segments against a 1 MiB Tier 0: segments were uploaded to
    // the local Tier 2 directory.
    let objects = std::fs::read_dir(dir.path().join("tier2/segments/orders"))
        .unwrap()
        .count();
    assert!(objects >= 20, "{objects} segment objects in Tier 2");
    let manager = AofManager::open(config(dir.path())).unwrap();
    let stream = manager.stream("orders").unwrap();
    let mut reader = stream.open_reader(0);
    for offset in 0..records {
        let record = reader.next().expect("not at the end yet").unwrap();
        assert_eq!(record.offset, offset);
        assert_eq!(record.payload, payload(offset));
    }
    assert!(reader.next().is_none(), "the durable end ends the iterator");
    match reader.try_next() {
        Err(AofError::WouldBlock(BackpressureKind::Tail)) => {}
        other => panic!("at the end: {other:?}"),
    }
    assert_eq!(stream.append(payload(records)).unwrap(), records);
    manager.close().unwrap();
}

#[test]
fn a_second_manager_on_the_same_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = AofManager::open(config(dir.path())).unwrap();
    let error = AofManager::open(config(dir.path())).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, AofError::Locked { .. }), "{error:?}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    first.close().unwrap();
    // Released on close.
    AofManager::open(config(dir.path()))
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn bad_stream_names_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(config(dir.path())).unwrap();
    for name in [
        "",
        "..",
        "a/b",
        "../escape",
        "white space",
        &"x".repeat(300),
    ] {
        let error = manager.stream(name).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{name:?}: {error}");
    }
    let stream = manager.stream("ok").unwrap();
    let error = stream.read(5).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    manager.close().unwrap();
}

#[test]
fn async_appends_and_readers_wait_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(config(dir.path())).unwrap();
    let stream = manager.stream("async").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let follower = {
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut reader = stream.open_reader_async(0);
                let mut offsets = Vec::new();
                for _ in 0..500 {
                    offsets.push(reader.next_async().await.unwrap().offset);
                }
                offsets
            })
        };
        for offset in 0..500u64 {
            assert_eq!(
                stream.append_async(payload(offset), None).await.unwrap(),
                offset
            );
            if offset % 50 == 49 {
                stream.flush_async().await.unwrap();
            }
        }
        stream.flush_async().await.unwrap();
        let offsets = follower.await.unwrap();
        assert_eq!(offsets, (0..500).collect::<Vec<_>>());
        let record = stream.read_async(10).await.unwrap();
        assert_eq!(record.payload, payload(10));
    });
    manager.close().unwrap();
}

/// The local disk is lost, Tier 2 (a directory elsewhere) survives: reopening the
/// stream restores it from Tier 2 alone and every record of its sealed segments reads
/// back byte-identical; appends continue after them.
#[test]
fn local_disk_wiped_everything_sealed_reads_back_from_tier2() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
root = "{}"
[stream]
segment_target_bytes = "64KiB"
[store.tier2]
backend = "local"
path = "{}"
[manifest]
rotation_period = "1ms"
"#,
        local.path().display(),
        remote.path().display()
    );
    let records = 600u64;
    {
        let manager = AofManager::open(AofManagerConfig::from_toml(&text).unwrap()).unwrap();
        let stream = manager.stream("wiped").unwrap();
        for offset in 0..records {
            let appended = loop {
                match stream.append(payload(offset)) {
                    Err(AofError::WouldBlock(_)) => continue,
                    result => break result.unwrap(),
                }
            };
            assert_eq!(appended, offset);
        }
        stream.wait_durable(records - 1).unwrap();
        stream.seal().unwrap();
        // Every sealed segment reaches Tier 2 (bounded wait).
        let mut polls = 0;
        loop {
            let metrics = manager.metrics().unwrap();
            let busy = metrics.tier1.compression_queue_depth
                + metrics.tier2.upload_queue_depth
                + metrics.tier2.uploads_in_flight;
            if busy == 0 {
                break;
            }
            polls += 1;
            assert!(polls < 10_000, "uploads never drained");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        manager.close().unwrap();
    }
    // The whole local disk is gone.
    for entry in std::fs::read_dir(local.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let manager = AofManager::open(AofManagerConfig::from_toml(&text).unwrap()).unwrap();
    let stream = manager.stream("wiped").unwrap();
    let end = stream.flush().unwrap();
    assert_eq!(end, records, "every sealed record is restored");
    for (offset, record) in stream.open_reader(0).enumerate() {
        let record = record.unwrap();
        assert_eq!(record.offset, offset as u64);
        assert_eq!(record.payload, payload(offset as u64));
    }
    assert_eq!(stream.append(payload(records)).unwrap(), records);
    manager.close().unwrap();
}
