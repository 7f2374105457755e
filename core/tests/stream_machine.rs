//! The stream state machine, path by path, against the in-memory disk of
//! `stream_disk`.
//!
//! **Invariants checked**
//! - `check_invariants()` after every step (the `Driver` does it).
//! - Offsets are dense; appends are grouped into one write while a write is in flight;
//!   the durable watermark moves only when a sync covering the bytes completes.
//! - Every `WouldBlock` path: `Flush` (backlog cap, retry after a failed flush),
//!   `Rollover` (seal in flight), `Tail` (follower at the durable end).
//! - Every error path: record too large, poisoned after `flush_max_retries`, metadata
//!   failure, recovery corruption naming file and position, driver bugs panic.
//! - A failed fsync is never reported durable and its bytes are rewritten from memory.
//! - Recovery: torn tails cut and counted, corruption refused, sealed newest segments
//!   reopened, temp files removed, pointer republished, pages lost to a failed fsync
//!   rewritten before they are called durable.

mod stream_disk;

use aof2_core::SegmentId;
use aof2_core::ack_hint::AckHint;
use aof2_core::backpressure::{BackpressureKind, WouldBlock};
use aof2_core::io::{DiskCompletion, DiskRequest, IoCompletion, IoId, ObjectCompletion};
use aof2_core::pointer::SealedPointer;
use aof2_core::segment::{Record, SealedSegment, SegmentError, SegmentHeader};
use aof2_core::stream::{
    AppendError, FlushPolicy, IoStep, ReadError, ReadOutcome, RecoveryError, SealOutcome,
    StreamConfig, StreamEvent, StreamFailure, StreamMachine,
};
use bytes::Bytes;
use stream_disk::{
    ACK_HINT, Driver, Fault, POINTER, SEGMENTS_DIR, SimDisk, segment_file, stream_name,
};

fn config() -> StreamConfig {
    let config = StreamConfig {
        segment_target_bytes: 1024,
        segment_max_age_ms: 10_000,
        flush: FlushPolicy::EveryAppend,
        max_unflushed_bytes: 400,
        flush_max_retries: 2,
        record_payload_bytes_max: 100,
    };
    config.validate().unwrap();
    config
}

fn with_flush(flush: FlushPolicy) -> StreamConfig {
    StreamConfig { flush, ..config() }
}

/// A fresh stream, recovered from an empty disk and open.
fn fresh(config: StreamConfig) -> Driver {
    let mut driver = Driver::recover(config, SimDisk::new(), 0, None);
    driver.run();
    assert!(driver.machine.is_open());
    driver.take_events();
    driver
}

fn write_at(request: &DiskRequest) -> (u64, usize) {
    match request {
        DiskRequest::WriteAt { offset, bytes, .. } => (*offset, bytes.len()),
        other => panic!("expected a write, got {other:?}"),
    }
}

fn is_sync(request: &DiskRequest) -> bool {
    matches!(request, DiskRequest::SyncFile { .. })
}

/// The `acknowledged` hint a write in flight overwrites in place.
fn hint_written(request: &DiskRequest) -> AckHint {
    match request {
        DiskRequest::WriteAt {
            path,
            offset: 0,
            bytes,
        } if path.as_str() == ACK_HINT => AckHint::decode(bytes).unwrap(),
        other => panic!("expected the hint write, got {other:?}"),
    }
}

fn is_hint_sync(request: &DiskRequest) -> bool {
    matches!(request, DiskRequest::SyncFile { path } if path.as_str() == ACK_HINT)
}

/// Completes a data sync and the hint write and fsync that follow it; returns the
/// hint.
fn complete_sync_and_hint(driver: &mut Driver) -> AckHint {
    assert!(is_sync(&driver.in_flight[0].1));
    driver.step();
    let hint = hint_written(&driver.in_flight[0].1);
    driver.step();
    assert!(is_hint_sync(&driver.in_flight[0].1));
    driver.step();
    hint
}

fn would_block(kind: BackpressureKind) -> AppendError {
    AppendError::WouldBlock(WouldBlock(kind))
}

fn ready(driver: &Driver, offset: u64) -> Vec<u8> {
    match driver.machine.read_active(offset) {
        Ok(ReadOutcome::Ready(record)) => record.payload.to_vec(),
        other => panic!("offset {offset}: expected Ready, got {other:?}"),
    }
}

/// Header plus records with `payloads` from offset `base`.
fn segment_bytes(segment_id: u64, base: u64, payloads: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = Vec::new();
    SegmentHeader {
        segment_id: SegmentId(segment_id),
        base_offset: base,
        created_at_ms: 1,
    }
    .encode(&mut bytes);
    let mut positions = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        positions.push(bytes.len() as u64);
        Record {
            offset: base + index as u64,
            timestamp_ms: 1,
            ext_id: 0,
            flags: 0,
            payload,
        }
        .encode(&mut bytes);
    }
    (bytes, positions)
}

fn failure(driver: &Driver) -> StreamFailure {
    driver
        .machine
        .failure()
        .cloned()
        .unwrap_or_else(|| panic!("expected a poisoned stream, events {:?}", driver.events))
}

// ---- Appends, group commit, durability ----

#[test]
fn appends_get_dense_offsets_and_share_one_write() {
    let mut driver = fresh(config());
    assert_eq!(driver.append(b"a"), Ok(0));
    assert_eq!(driver.in_flight.len(), 1);
    assert_eq!(write_at(&driver.in_flight[0].1), (40, 37));
    assert_eq!(driver.append(b"bb"), Ok(1));
    assert_eq!(driver.append(b"ccc"), Ok(2));
    assert_eq!(
        driver.in_flight.len(),
        1,
        "later appends wait for the write in flight"
    );

    driver.step();
    // The write is done; its sync follows, while the later appends wait for the
    // next group.
    assert_eq!(driver.in_flight.len(), 1);
    assert!(is_sync(&driver.in_flight[0].1));
    assert_eq!(
        driver.machine.durable_next_offset(),
        0,
        "written is not durable"
    );
    assert_eq!(driver.machine.metrics().backlog_bytes, 37 + 38 + 39);
    driver.step();
    // The sync is done; the hint names record 0 before it is reported durable.
    assert_eq!(
        hint_written(&driver.in_flight[0].1),
        AckHint {
            segment_id: SegmentId(0),
            next_offset: 1
        }
    );
    driver.step();
    assert!(is_hint_sync(&driver.in_flight[0].1));
    assert_eq!(
        driver.machine.durable_next_offset(),
        0,
        "synced is not reported durable before the hint is"
    );
    driver.step();
    assert_eq!(
        driver.machine.durable_next_offset(),
        1,
        "the sync covered record 0"
    );
    // Then one write with both buffered frames, one sync, one hint.
    assert_eq!(driver.in_flight.len(), 1);
    assert_eq!(write_at(&driver.in_flight[0].1), (77, 38 + 39));
    driver.step();
    assert_eq!(complete_sync_and_hint(&mut driver).next_offset, 3);
    assert!(driver.in_flight.is_empty());
    assert_eq!(driver.machine.durable_next_offset(), 3);
    assert_eq!(
        driver.take_events(),
        [
            StreamEvent::Durable { next_offset: 1 },
            StreamEvent::Durable { next_offset: 3 }
        ]
    );
    assert_eq!(ready(&driver, 0), b"a");
    assert_eq!(ready(&driver, 1), b"bb");
    assert_eq!(ready(&driver, 2), b"ccc");
    let metrics = driver.machine.metrics();
    assert_eq!(metrics.flushes, 2);
    assert_eq!(metrics.backlog_bytes, 0);
    assert_eq!(metrics.next_offset, 3);
    // What is durable survives the harshest crash.
    let mut crashed = driver.disk.clone();
    crashed.crash_losing_everything_pending();
    assert_eq!(crashed.records(SEGMENTS_DIR).len(), 3);
}

#[test]
fn ext_id_and_timestamp_are_stored() {
    let mut driver = fresh(config());
    driver.now_ms = 77;
    driver
        .machine
        .append(77, Bytes::from_static(b"x"), Some(42))
        .unwrap();
    driver.drain();
    driver.run();
    let file = driver.disk.read(&segment_file(0)).unwrap();
    let framed = Record::decode_at(&file, 40).unwrap();
    assert_eq!(framed.record.ext_id, 42);
    assert_eq!(framed.record.timestamp_ms, 77);
}

#[test]
fn record_too_large_is_refused_with_the_limit() {
    let mut driver = fresh(config());
    let error = driver.append(&[0u8; 101]).unwrap_err();
    assert_eq!(
        error,
        AppendError::RecordTooLarge {
            size: 101,
            limit: 100
        }
    );
    assert!(
        error
            .to_string()
            .contains("stream.record_payload_bytes_max"),
        "{error}"
    );
    assert!(driver.in_flight.is_empty(), "nothing was written");
    assert_eq!(
        driver.append(&[0u8; 100]),
        Ok(0),
        "the limit itself is fine"
    );
}

// ---- Flush policies ----

#[test]
fn bytes_policy_syncs_at_the_threshold_and_on_flush() {
    let mut driver = fresh(with_flush(FlushPolicy::Bytes(200)));
    driver.append(&[1u8; 100]).unwrap();
    driver.step();
    assert!(
        driver.in_flight.is_empty(),
        "136 unsynced bytes < 200: no sync"
    );
    driver.append(&[2u8; 100]).unwrap();
    driver.step();
    assert!(is_sync(&driver.in_flight[0].1), "272 >= 200: sync");
    driver.run();
    assert_eq!(driver.machine.durable_next_offset(), 2);

    driver.append(b"tail").unwrap();
    driver.step();
    assert!(driver.in_flight.is_empty());
    assert_eq!(driver.machine.flush(driver.now_ms), Ok(3));
    driver.drain();
    assert!(is_sync(&driver.in_flight[0].1), "flush forces a sync");
    driver.run();
    assert_eq!(driver.machine.durable_next_offset(), 3);
}

#[test]
fn interval_policy_syncs_when_the_timer_fires() {
    let mut driver = fresh(with_flush(FlushPolicy::IntervalMs(50)));
    driver.now_ms = 1000;
    driver.append(b"a").unwrap();
    driver.step();
    assert!(driver.in_flight.is_empty(), "no sync before the interval");
    assert_eq!(driver.machine.poll_timeout(), Some(1050));
    driver.advance(49);
    assert!(driver.in_flight.is_empty());
    driver.advance(1);
    assert!(is_sync(&driver.in_flight[0].1));
    assert_eq!(
        driver.machine.poll_timeout(),
        Some(11_000),
        "only the segment age is left"
    );
    driver.run();
    assert_eq!(driver.machine.durable_next_offset(), 1);
}

// ---- WouldBlock(Flush) ----

#[test]
fn backlog_cap_blocks_with_flush_and_forces_a_sync() {
    let mut driver = fresh(with_flush(FlushPolicy::Bytes(400)));
    assert_eq!(driver.append(&[1u8; 100]), Ok(0));
    assert_eq!(driver.append(&[2u8; 100]), Ok(1));
    // 272 + 136 > 400.
    assert_eq!(
        driver.append(&[3u8; 100]),
        Err(would_block(BackpressureKind::Flush))
    );
    driver.run();
    assert_eq!(
        driver.machine.durable_next_offset(),
        2,
        "the refusal forced a sync although 272 < 400"
    );
    assert_eq!(driver.append(&[3u8; 100]), Ok(2));
    assert_eq!(
        would_block(BackpressureKind::Flush).would_block(),
        Some(BackpressureKind::Flush)
    );
}

// ---- fsyncgate ----

#[test]
fn failed_fsync_rewrites_every_non_durable_byte_then_syncs_again() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    driver.step(); // write of record 0 done; its sync is issued
    driver.append(b"b").unwrap(); // buffered: no write while the sync is in flight
    assert_eq!(driver.in_flight.len(), 1);
    driver.complete(0, Some(Fault::Before));
    assert_eq!(driver.machine.durable_next_offset(), 0);
    assert!(matches!(
        driver.take_events().as_slice(),
        [StreamEvent::FlushFailed {
            consecutive_failures: 1,
            retrying: true,
            ..
        }]
    ));
    assert_eq!(
        driver.append(b"c"),
        Err(would_block(BackpressureKind::Flush)),
        "appends wait while the failed flush is rewritten"
    );
    assert!(!driver.machine.is_open());
    // One rewrite of everything after the durable position, then a sync.
    assert_eq!(driver.in_flight.len(), 1);
    assert_eq!(write_at(&driver.in_flight[0].1), (40, 37 + 37));
    driver.step();
    assert_eq!(complete_sync_and_hint(&mut driver).next_offset, 2);
    assert_eq!(driver.machine.durable_next_offset(), 2);
    assert!(driver.machine.is_open());
    let metrics = driver.machine.metrics();
    assert_eq!(metrics.flush_failures, 1);
    assert_eq!(metrics.flush_retry_attempts, 1);
    assert_eq!(metrics.flushes, 1);
    // The rewrite, not the failed sync, made the records durable.
    let mut crashed = driver.disk.clone();
    crashed.crash_losing_everything_pending();
    let records = crashed.records(SEGMENTS_DIR);
    assert_eq!(records.get(&0).map(Vec::as_slice), Some(&b"a"[..]));
    assert_eq!(records.get(&1).map(Vec::as_slice), Some(&b"b"[..]));
    assert_eq!(driver.append(b"c"), Ok(2));
}

#[test]
fn failed_write_is_rewritten_too() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    driver.complete(0, Some(Fault::After));
    assert_eq!(driver.machine.metrics().flush_failures, 1);
    assert_eq!(write_at(&driver.in_flight[0].1), (40, 37));
    driver.run();
    assert_eq!(driver.machine.durable_next_offset(), 1);
}

#[test]
fn poisoned_after_flush_max_retries_and_sticky() {
    let mut driver = fresh(config());
    driver.append(b"durable").unwrap();
    driver.run();
    driver.append(b"doomed").unwrap();
    for attempt in 1..=3 {
        driver.step(); // the write (or rewrite)
        let sync = driver.find(is_sync).expect("a sync follows");
        driver.complete(sync, Some(Fault::Before));
        assert_eq!(driver.machine.durable_next_offset(), 1, "attempt {attempt}");
    }
    let expected = StreamFailure::FlushRetriesExhausted {
        path: aof2_core::names::segment_path(&stream_name(), SegmentId(0)),
        failures: 3,
        max_retries: 2,
        kind: aof2_core::io::DiskErrorKind::Io,
    };
    assert_eq!(failure(&driver), expected);
    assert!(
        expected
            .to_string()
            .contains("stream.flush_max_retries = 2"),
        "{expected}"
    );
    assert!(
        driver.in_flight.is_empty(),
        "a poisoned stream issues nothing"
    );
    assert_eq!(
        driver.events.last(),
        Some(&StreamEvent::Poisoned(expected.clone()))
    );
    for _ in 0..2 {
        assert_eq!(
            driver.append(b"more"),
            Err(AppendError::Poisoned(expected.clone()))
        );
    }
    assert_eq!(
        driver.machine.seal(driver.now_ms),
        Err(AppendError::Poisoned(expected.clone()))
    );
    assert_eq!(
        driver.machine.flush(driver.now_ms),
        Err(AppendError::Poisoned(expected.clone()))
    );
    assert!(
        AppendError::Poisoned(expected.clone())
            .to_string()
            .contains("poisoned"),
    );
    // Durable records stay readable; the doomed one never becomes durable.
    assert_eq!(ready(&driver, 0), b"durable");
    assert!(matches!(
        driver.machine.read_active(1),
        Err(ReadError::Poisoned { offset: 1, .. })
    ));
    let metrics = driver.machine.metrics();
    assert!(metrics.poisoned);
    assert_eq!(metrics.flush_failures, 3);
    assert_eq!(metrics.flush_retry_attempts, 2);
    assert_eq!(metrics.durable_next_offset, 1);
}

#[test]
fn zero_retries_poison_at_the_first_failure() {
    let mut driver = fresh(StreamConfig {
        flush_max_retries: 0,
        ..config()
    });
    driver.append(b"a").unwrap();
    driver.step();
    driver.complete(0, Some(Fault::Before));
    assert!(matches!(
        failure(&driver),
        StreamFailure::FlushRetriesExhausted { failures: 1, .. }
    ));
    assert_eq!(driver.machine.metrics().flush_retry_attempts, 0);
    assert!(driver.in_flight.is_empty());
}

// ---- Rollover and WouldBlock(Rollover) ----

/// Appends 100-byte records (each made durable) until one starts a rollover;
/// returns how many. The rollover itself is left in flight.
fn fill_segment(driver: &mut Driver, fill: u8) -> u64 {
    for count in 1..=100 {
        driver.append(&[fill; 100]).unwrap();
        if !driver.machine.is_open() {
            return count;
        }
        driver.run();
    }
    panic!("no rollover after 100 records");
}

#[test]
fn size_rollover_seals_publishes_the_pointer_and_opens_the_next_segment() {
    let mut driver = fresh(config());
    for index in 0..7u8 {
        assert_eq!(driver.append(&[index; 100]), Ok(u64::from(index)));
        driver.run();
    }
    // 40 + 7 * 136 = 992 < 1024; the eighth record crosses the target.
    assert_eq!(driver.append(&[7u8; 100]), Ok(7));
    assert_eq!(
        driver.append(b"x"),
        Err(would_block(BackpressureKind::Rollover))
    );
    assert_eq!(
        driver.machine.flush(driver.now_ms),
        Ok(8),
        "flush while draining"
    );
    driver.run();
    let events = driver.take_events();
    let sealed = events
        .iter()
        .find_map(|event| match event {
            StreamEvent::Sealed(info) => Some(*info),
            _ => None,
        })
        .expect("a Sealed event");
    assert_eq!(sealed.segment_id, SegmentId(0));
    assert_eq!(sealed.base_offset, 0);
    assert_eq!(sealed.footer.record_count, 8);
    assert_eq!(sealed.footer.durable_bytes, 40 + 8 * 136);
    assert!(!sealed.footer.flush_failure);
    assert!(!sealed.recovered);
    assert_eq!(sealed.next_offset(), 8);
    let opened_index = events
        .iter()
        .position(|event| {
            *event
                == StreamEvent::SegmentOpened {
                    segment_id: SegmentId(1),
                    base_offset: 8,
                    opened_at_ms: 0,
                }
        })
        .expect("a SegmentOpened event");
    let sealed_index = events
        .iter()
        .position(|event| matches!(event, StreamEvent::Sealed(_)))
        .unwrap();
    assert!(sealed_index < opened_index, "Sealed comes first");

    // On disk: a verified sealed segment, the pointer, the new segment, no temp file.
    let sealed_file = driver.disk.read(&segment_file(0)).unwrap();
    let decoded = SealedSegment::decode(&sealed_file).unwrap();
    assert_eq!(*decoded.footer(), sealed.footer);
    assert_eq!(decoded.records().count(), 8);
    let pointer = SealedPointer::decode(&driver.disk.read(POINTER).unwrap()).unwrap();
    assert_eq!(pointer.segment_id, SegmentId(0));
    assert_eq!(pointer.durable_bytes, sealed.footer.durable_bytes);
    let next = driver.disk.read(&segment_file(1)).unwrap();
    assert_eq!(SegmentHeader::decode(&next).unwrap().base_offset, 8);
    assert!(
        driver
            .disk
            .paths()
            .iter()
            .all(|path| !path.ends_with(".tmp")),
        "{:?}",
        driver.disk.paths()
    );
    // The whole rollover is durable: it survives the harshest crash.
    let mut crashed = driver.disk.clone();
    crashed.crash_losing_everything_pending();
    assert!(crashed.read(&segment_file(1)).is_some());
    assert!(crashed.read(POINTER).is_some());

    assert_eq!(driver.append(b"next"), Ok(8));
    assert_eq!(driver.machine.active_segment(), Some((SegmentId(1), 8)));
    assert_eq!(driver.machine.metrics().segments_sealed, 1);
    assert_eq!(
        driver.machine.read_active(3),
        Err(ReadError::BeforeActiveSegment {
            offset: 3,
            base_offset: 8
        })
    );
}

#[test]
fn seal_on_demand_and_its_outcomes() {
    let mut driver = fresh(config());
    assert_eq!(driver.machine.seal(0), Ok(SealOutcome::Empty));
    driver.append(b"a").unwrap();
    assert_eq!(driver.machine.seal(0), Ok(SealOutcome::Started));
    driver.drain();
    assert_eq!(driver.machine.seal(0), Ok(SealOutcome::InProgress));
    assert_eq!(
        driver.append(b"b"),
        Err(would_block(BackpressureKind::Rollover))
    );
    driver.run();
    assert_eq!(driver.machine.active_segment(), Some((SegmentId(1), 1)));
    assert_eq!(driver.append(b"b"), Ok(1));
    assert_eq!(driver.machine.metrics().segments_sealed, 1);
}

#[test]
fn rollover_blocks_appends_until_the_segment_is_opened() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    driver.run();
    driver.machine.seal(0).unwrap();
    driver.drain();
    let mut steps = 0;
    while !driver.in_flight.is_empty() {
        assert_eq!(
            driver.append(b"b"),
            Err(would_block(BackpressureKind::Rollover)),
            "after {steps} steps"
        );
        driver.step();
        steps += 1;
    }
    // Write + sync of the footer (no hint: it adds no record), five pointer steps,
    // five hint steps, five segment steps.
    assert_eq!(steps, 17);
    assert!(driver.machine.is_open());
}

#[test]
fn age_rollover_fires_from_the_first_record() {
    let mut driver = fresh(config());
    driver.now_ms = 5000;
    assert_eq!(
        driver.machine.poll_timeout(),
        None,
        "an empty segment does not age"
    );
    driver.append(b"a").unwrap();
    driver.run();
    assert_eq!(driver.machine.poll_timeout(), Some(15_000));
    driver.advance(9_999);
    assert!(driver.machine.is_open());
    driver.advance(1);
    assert_eq!(
        driver.append(b"b"),
        Err(would_block(BackpressureKind::Rollover))
    );
    driver.run();
    assert_eq!(driver.machine.active_segment(), Some((SegmentId(1), 1)));
    assert_eq!(driver.machine.poll_timeout(), None);
}

#[test]
fn flush_failure_while_sealing_sets_the_footer_flag() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    driver.run();
    driver.machine.seal(0).unwrap();
    driver.drain();
    driver.step(); // footer write
    let sync = driver.find(is_sync).unwrap();
    driver.complete(sync, Some(Fault::Before));
    driver.run();
    let sealed = driver
        .events
        .iter()
        .find_map(|event| match event {
            StreamEvent::Sealed(info) => Some(*info),
            _ => None,
        })
        .unwrap();
    assert!(sealed.footer.flush_failure);
    let file = driver.disk.read(&segment_file(0)).unwrap();
    assert!(SealedSegment::decode(&file).unwrap().footer().flush_failure);
}

#[test]
fn metadata_failure_poisons_and_recovery_republishes_the_pointer() {
    let mut driver = fresh(config());
    driver.machine.set_coordinator_watermark(99);
    fill_segment(&mut driver, 1);
    // Run the rollover until the pointer rename, and fail it.
    while !driver
        .in_flight
        .first()
        .is_some_and(|(_, request)| matches!(request, DiskRequest::Rename { .. }))
    {
        driver.step();
    }
    driver.complete(0, Some(Fault::Before));
    let expected = StreamFailure::Metadata {
        step: IoStep::RenamePointer,
        path: aof2_core::io::LocalPath::from_components(&[
            "streams",
            "orders",
            "current.sealed.tmp",
        ]),
        kind: aof2_core::io::DiskErrorKind::Io,
    };
    assert_eq!(failure(&driver), expected);
    assert!(expected.to_string().contains("renaming"), "{expected}");
    assert_eq!(driver.machine.metrics().metadata_failures, 1);
    assert_eq!(driver.machine.metrics().flush_failures, 0);
    assert_eq!(
        driver.append(b"x"),
        Err(AppendError::Poisoned(expected.clone()))
    );
    assert!(
        !driver
            .events
            .iter()
            .any(|e| matches!(e, StreamEvent::Sealed(_))),
        "no Sealed before the pointer is published"
    );
    let durable = driver.machine.durable_next_offset();

    // Restart on the same disk: the sealed newest segment is found, the pointer
    // published, the next segment opened.
    let mut restarted = Driver::recover(config(), driver.disk.clone(), 1, Some(durable));
    restarted.run();
    let events = restarted.take_events();
    let StreamEvent::Recovered(report) = events.last().unwrap() else {
        panic!("{events:?}");
    };
    assert!(report.newest_was_sealed);
    assert!(report.pointer_republished);
    assert_eq!(report.segment_id, SegmentId(1));
    assert_eq!(report.next_offset, durable);
    assert!(events.iter().any(|event| matches!(
        event,
        StreamEvent::Sealed(info) if info.recovered && info.next_offset() == durable
    )));
    let pointer = SealedPointer::decode(&restarted.disk.read(POINTER).unwrap()).unwrap();
    assert_eq!(pointer.segment_id, SegmentId(0));
    assert_eq!(pointer.coordinator_watermark, 99);
    assert_eq!(restarted.append(b"x"), Ok(durable));
    assert!(
        restarted
            .disk
            .paths()
            .iter()
            .all(|path| !path.ends_with(".tmp"))
    );
}

#[test]
fn segment_creation_failure_is_a_metadata_failure() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    driver.machine.seal(0).unwrap();
    driver.drain();
    while !driver.in_flight.first().is_some_and(|(_, request)| {
        matches!(request, DiskRequest::Create { path } if path.as_str().ends_with(".seg.tmp"))
    }) {
        driver.step();
    }
    driver.complete(0, Some(Fault::After));
    assert!(matches!(
        failure(&driver),
        StreamFailure::Metadata {
            step: IoStep::CreateSegmentTemp,
            ..
        }
    ));
    assert!(
        driver
            .events
            .iter()
            .any(|e| matches!(e, StreamEvent::Sealed(_))),
        "the seal itself completed"
    );
}

// ---- Tail reads and WouldBlock(Tail) ----

#[test]
fn tail_reads_serve_durable_records_and_block_at_the_end() {
    let mut driver = fresh(config());
    assert_eq!(
        driver.machine.read_active(0),
        Ok(ReadOutcome::WouldBlock(WouldBlock(BackpressureKind::Tail))),
        "a follower at the end of an empty log"
    );
    driver.append(b"one").unwrap();
    driver.run();
    driver.append(b"two").unwrap();
    assert_eq!(ready(&driver, 0), b"one");
    for offset in [1, 2] {
        assert_eq!(
            driver.machine.read_active(offset),
            Ok(ReadOutcome::WouldBlock(WouldBlock(BackpressureKind::Tail))),
            "offset {offset}"
        );
    }
    assert_eq!(
        driver.machine.read_active(3),
        Err(ReadError::OutOfRange {
            offset: 3,
            next_offset: 2
        })
    );
    driver.run();
    assert_eq!(ready(&driver, 1), b"two");
    assert_eq!(
        driver.events.last(),
        Some(&StreamEvent::Durable { next_offset: 2 }),
        "the event that wakes followers"
    );
}

// ---- Recovery ----

#[test]
fn fresh_recovery_opens_segment_zero() {
    let mut driver = Driver::recover(config(), SimDisk::new(), 0, None);
    assert_eq!(driver.append(b"a"), Err(AppendError::Recovering));
    assert_eq!(driver.machine.read_active(0), Err(ReadError::Recovering));
    driver.run();
    let events = driver.take_events();
    assert_eq!(
        events[0],
        StreamEvent::SegmentOpened {
            segment_id: SegmentId(0),
            base_offset: 0,
            opened_at_ms: 0
        }
    );
    let StreamEvent::Recovered(report) = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(report.next_offset, 0);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(driver.append(b"a"), Ok(0));
}

#[test]
fn recovery_cuts_a_torn_tail_and_continues_the_digest() {
    let (mut bytes, _) = segment_bytes(0, 0, &[b"a", b"bb", b"ccc"]);
    let valid = bytes.len() as u64;
    let (torn, _) = segment_bytes(0, 0, &[b"a", b"bb", b"ccc", b"dddd"]);
    bytes.extend_from_slice(&torn[bytes.len()..bytes.len() + 20]);
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    let mut driver = Driver::recover(config(), disk, 0, Some(3));
    driver.run();
    let events = driver.take_events();
    assert_eq!(events[0], StreamEvent::Durable { next_offset: 3 });
    let StreamEvent::Recovered(report) = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(report.truncated_bytes, 20);
    assert_eq!(report.next_offset, 3);
    assert!(!report.newest_was_sealed);
    assert_eq!(driver.machine.metrics().torn_tail_bytes_truncated, 20);
    assert!(driver.disk.log.contains(&DiskRequest::Truncate {
        path: aof2_core::names::segment_path(&stream_name(), SegmentId(0)),
        length: valid
    }));
    assert_eq!(ready(&driver, 2), b"ccc");
    assert_eq!(driver.append(b"dddd"), Ok(3));
    assert_eq!(driver.machine.seal(0), Ok(SealOutcome::Started));
    driver.drain();
    driver.run();
    // The footer built from the recovered digest verifies over the whole file.
    let file = driver.disk.read(&segment_file(0)).unwrap();
    let sealed = SealedSegment::decode(&file).unwrap();
    assert_eq!(sealed.record_count(), 4);
}

/// Index of the in-flight read of the whole newest segment file, if any.
fn whole_segment_read(driver: &Driver, length: usize) -> Option<usize> {
    driver.find(|request| {
        matches!(request, DiskRequest::ReadAt { offset: 0, length: l, .. } if *l == length as u64)
    })
}

#[test]
fn recovery_reads_again_before_it_cuts_and_trusts_the_read_that_keeps_more() {
    // A clean, durable segment whose first read returns a flipped bit in the last
    // record (so the scan would cut it as a torn tail): the second read is the disk's.
    let (bytes, positions) = segment_bytes(0, 0, &[b"a", b"bb", b"ccc"]);
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    let mut driver = Driver::recover(config(), disk, 0, None);
    let mut reads = 0;
    while !driver.in_flight.is_empty() {
        match whole_segment_read(&driver, bytes.len()) {
            Some(index) if reads == 0 => {
                let mut flipped = bytes.clone();
                flipped[positions[2] as usize + 37] ^= 0x01;
                driver.complete_with(index, DiskCompletion::Read(Bytes::from(flipped)));
                reads += 1;
            }
            Some(index) => {
                driver.complete(index, None);
                reads += 1;
            }
            None => {
                driver.step();
            }
        }
    }
    assert_eq!(reads, 2, "a cut is decided on two reads");
    assert!(driver.machine.is_open(), "{:?}", driver.machine.failure());
    assert_eq!(driver.machine.next_offset(), Some(3), "no record was cut");
    assert_eq!(driver.machine.metrics().torn_tail_bytes_truncated, 0);
    assert!(
        !driver
            .disk
            .log
            .iter()
            .any(|request| matches!(request, DiskRequest::Truncate { .. })),
        "nothing was cut"
    );
    assert_eq!(ready(&driver, 2), b"ccc");

    // A clean first read is acted on at once: one read.
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    let mut driver = Driver::recover(config(), disk, 0, None);
    let mut reads = 0;
    while !driver.in_flight.is_empty() {
        if whole_segment_read(&driver, bytes.len()).is_some() {
            reads += 1;
        }
        driver.step();
    }
    assert_eq!(reads, 1);
    assert_eq!(driver.machine.next_offset(), Some(3));
}

#[test]
fn recovery_refuses_a_bad_record_followed_by_valid_ones() {
    let (mut bytes, positions) = segment_bytes(0, 0, &[b"a", b"bb", b"ccc"]);
    bytes[positions[1] as usize + 36] ^= 0x40;
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    for hint in [None, Some(2)] {
        let mut driver = Driver::recover(config(), disk.clone(), 0, hint);
        driver.run();
        let StreamFailure::Recovery(error) = failure(&driver) else {
            panic!("{:?}", driver.machine.failure());
        };
        assert!(
            matches!(
                &error,
                RecoveryError::CorruptSegment {
                    position,
                    source: SegmentError::CorruptBeforeValidRecord { .. },
                    ..
                } if *position == positions[1]
            ),
            "{error}"
        );
        assert_eq!(error.path().as_str(), segment_file(0));
        assert_eq!(error.position(), Some(positions[1]));
        let message = error.to_string();
        assert!(message.contains(&segment_file(0)), "{message}");
        assert!(
            message.contains(&format!("byte {}", positions[1])),
            "{message}"
        );
        assert!(
            !driver.disk.log.iter().any(|request| matches!(
                request,
                DiskRequest::Truncate { .. } | DiskRequest::WriteAt { .. }
            )),
            "nothing was cut or written"
        );
        assert_eq!(
            driver.append(b"x"),
            Err(AppendError::Poisoned(failure(&driver)))
        );
    }
    // Proof that record 1 was never acknowledged durable lets recovery cut there.
    let mut driver = Driver::recover(config(), disk, 0, Some(1));
    driver.run();
    assert!(driver.machine.is_open(), "{:?}", driver.machine.failure());
    assert_eq!(driver.machine.next_offset(), Some(1));
    assert_eq!(
        driver.machine.metrics().torn_tail_bytes_truncated,
        bytes.len() as u64 - positions[1]
    );
}

/// Segment 0 with records `a`, `bb`, `ccc` whose middle record reads back as zeros
/// (a write the crash lost while a later one reached the disk), and the
/// `acknowledged` hint at `hinted`.
fn disk_with_a_hole(hinted: u64) -> (SimDisk, Vec<u8>, Vec<u64>) {
    let (mut bytes, positions) = segment_bytes(0, 0, &[b"a", b"bb", b"ccc"]);
    bytes[positions[1] as usize..positions[2] as usize].fill(0);
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    let hint = AckHint {
        segment_id: SegmentId(0),
        next_offset: hinted,
    };
    disk.put_durable(ACK_HINT, &hint.to_bytes());
    (disk, bytes, positions)
}

#[test]
fn recovery_cuts_a_hole_the_hint_proves_was_never_acknowledged() {
    let (disk, bytes, positions) = disk_with_a_hole(1);
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    assert!(driver.machine.is_open(), "{:?}", driver.machine.failure());
    assert_eq!(driver.machine.next_offset(), Some(1));
    assert_eq!(ready(&driver, 0), b"a");
    let report = driver
        .take_events()
        .into_iter()
        .find_map(|event| match event {
            StreamEvent::Recovered(report) => Some(report),
            _ => None,
        })
        .expect("a Recovered event");
    assert_eq!(report.acknowledged_hint, Some(1));
    assert_eq!(report.truncated_bytes, bytes.len() as u64 - positions[1]);
    // The hint was published again, durably, before the stream came up.
    let mut crashed = driver.disk.clone();
    crashed.crash_losing_everything_pending();
    let hint = AckHint::decode(&crashed.read(ACK_HINT).unwrap()).unwrap();
    assert_eq!(hint.next_offset, 1);
    assert_eq!(crashed.records(SEGMENTS_DIR).len(), 1);
    // Appends continue at the cut.
    assert_eq!(driver.append(b"d"), Ok(1));
}

#[test]
fn recovery_refuses_a_hole_below_the_hint() {
    // Record 1 was acknowledged durable: the zeros are lost acknowledged data.
    let (disk, _, positions) = disk_with_a_hole(2);
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    let StreamFailure::Recovery(error) = failure(&driver) else {
        panic!("{:?}", driver.machine.failure());
    };
    assert!(
        matches!(
            &error,
            RecoveryError::CorruptSegment {
                source: SegmentError::CorruptBeforeValidRecord { .. },
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.position(), Some(positions[1]));
}

#[test]
fn recovery_without_a_readable_hint_refuses_the_hole() {
    let (mut disk, _, _) = disk_with_a_hole(1);
    let mut rotten = disk.read(ACK_HINT).unwrap();
    rotten[20] ^= 1;
    disk.put_durable(ACK_HINT, &rotten);
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    assert!(
        matches!(
            failure(&driver),
            StreamFailure::Recovery(RecoveryError::CorruptSegment {
                source: SegmentError::CorruptBeforeValidRecord { .. },
                ..
            })
        ),
        "a hint that does not decode is no hint"
    );
    let hint_reads = driver
        .disk
        .log
        .iter()
        .filter(|request| {
            matches!(request, DiskRequest::ReadAt { path, .. } if path.as_str() == ACK_HINT)
        })
        .count();
    assert_eq!(hint_reads, 2, "a hint that does not decode is read again");
}

#[test]
fn recovery_refuses_a_stream_whose_segments_vanished_below_the_hint() {
    let mut disk = SimDisk::new();
    let hint = AckHint {
        segment_id: SegmentId(3),
        next_offset: 9,
    };
    disk.put_durable(ACK_HINT, &hint.to_bytes());
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    assert!(matches!(
        failure(&driver),
        StreamFailure::Recovery(RecoveryError::CorruptSegment {
            source: SegmentError::AcknowledgedRecordsMissing {
                next_offset: 0,
                acknowledged_next_offset: 9,
                ..
            },
            ..
        })
    ));
}

#[test]
fn a_failed_hint_write_or_fsync_is_a_flush_failure_and_is_redone() {
    for failing_step in [1, 2] {
        let mut driver = fresh(config());
        driver.append(b"a").unwrap();
        driver.step(); // written
        driver.step(); // synced: the hint write is in flight
        if failing_step == 2 {
            driver.step(); // the hint is written: its fsync is in flight
            assert!(is_hint_sync(&driver.in_flight[0].1));
        }
        driver.complete(0, Some(Fault::Before));
        assert_eq!(
            driver.machine.durable_next_offset(),
            0,
            "step {failing_step}"
        );
        let events = driver.take_events();
        assert!(
            matches!(
                events.as_slice(),
                [StreamEvent::FlushFailed { path, consecutive_failures: 1, retrying: true, .. }]
                    if path.as_str() == ACK_HINT
            ),
            "step {failing_step}: {events:?}"
        );
        // The rewrite from memory, its fsync, then the hint again.
        assert_eq!(write_at(&driver.in_flight[0].1), (40, 37));
        driver.step();
        assert_eq!(complete_sync_and_hint(&mut driver).next_offset, 1);
        assert_eq!(driver.machine.durable_next_offset(), 1);
        let metrics = driver.machine.metrics();
        assert_eq!(metrics.flush_failures, 1);
        assert_eq!(metrics.flushes, 1);
    }
}

#[test]
fn hint_failures_past_the_retries_poison_naming_the_hint() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    for _ in 0..=config().flush_max_retries {
        driver.step(); // written
        driver.step(); // synced
        let hint = driver
            .find(|request| matches!(request, DiskRequest::WriteAt { path, .. } if path.as_str() == ACK_HINT))
            .unwrap();
        driver.complete(hint, Some(Fault::Before));
    }
    assert!(matches!(
        failure(&driver),
        StreamFailure::FlushRetriesExhausted { path, failures: 3, .. } if path.as_str() == ACK_HINT
    ));
    assert_eq!(driver.machine.durable_next_offset(), 0);
}

#[test]
fn recovery_refuses_to_lose_acknowledged_records() {
    let (bytes, _) = segment_bytes(0, 0, &[b"a", b"b"]);
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    let mut driver = Driver::recover(config(), disk, 0, Some(3));
    driver.run();
    assert!(matches!(
        failure(&driver),
        StreamFailure::Recovery(RecoveryError::CorruptSegment {
            source: SegmentError::AcknowledgedRecordsMissing {
                next_offset: 2,
                acknowledged_next_offset: 3,
                ..
            },
            ..
        })
    ));
}

#[test]
fn recovery_removes_leftover_temp_files() {
    let mut disk = SimDisk::new();
    disk.put_durable(
        &format!("{SEGMENTS_DIR}/00000000000000000001.seg.tmp"),
        b"junk",
    );
    disk.put_durable("streams/orders/current.sealed.tmp", b"junk");
    disk.put_durable(&format!("{SEGMENTS_DIR}/notes.txt"), b"not ours");
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    let StreamEvent::Recovered(report) = driver.events.last().unwrap() else {
        panic!("{:?}", driver.events);
    };
    assert_eq!(report.removed_temp_files, 2);
    assert!(
        driver
            .disk
            .paths()
            .iter()
            .all(|path| !path.ends_with(".tmp"))
    );
    assert!(
        driver
            .disk
            .read(&format!("{SEGMENTS_DIR}/notes.txt"))
            .is_some()
    );
}

#[test]
fn recovery_checks_offsets_across_segments() {
    let (sealed, _) = segment_bytes(0, 0, &[b"a", b"b"]);
    let mut sealed = sealed;
    let mut digest = aof2_core::segment::SegmentDigest::new();
    digest.update_header(&sealed[..40]);
    digest.update_frames(&sealed[40..]);
    digest.footer(0, false, 1).encode(&mut sealed);
    let (active, _) = segment_bytes(1, 5, &[b"c"]);
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &sealed);
    disk.put_durable(&segment_file(1), &active);
    let mut driver = Driver::recover(config(), disk.clone(), 0, None);
    driver.run();
    assert!(matches!(
        failure(&driver),
        StreamFailure::Recovery(RecoveryError::NotDenseAcrossSegments {
            base_offset: 5,
            previous_next_offset: 2,
            ..
        })
    ));
    // With the right base it recovers.
    let (active, _) = segment_bytes(1, 2, &[b"c"]);
    disk.put_durable(&segment_file(1), &active);
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    assert_eq!(driver.machine.next_offset(), Some(3));
}

#[test]
fn recovery_refuses_a_pointer_ahead_of_the_files() {
    let (bytes, _) = segment_bytes(0, 0, &[b"a"]);
    let pointer = SealedPointer {
        segment_id: SegmentId(0),
        durable_bytes: bytes.len() as u64,
        coordinator_watermark: 0,
    };
    let mut disk = SimDisk::new();
    disk.put_durable(&segment_file(0), &bytes);
    disk.put_durable(POINTER, &pointer.to_bytes());
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    let StreamFailure::Recovery(error) = failure(&driver) else {
        panic!();
    };
    assert!(
        matches!(error, RecoveryError::PointerDisagrees { reason, .. } if reason.contains("no valid footer")),
        "{error}"
    );
    // No segment files at all but a pointer: the coordinator must restore or create.
    let mut disk = SimDisk::new();
    disk.put_durable(POINTER, &pointer.to_bytes());
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    assert!(matches!(
        failure(&driver),
        StreamFailure::Recovery(RecoveryError::PointerDisagrees { .. })
    ));
}

#[test]
fn recovery_reports_a_corrupt_pointer() {
    let mut disk = SimDisk::new();
    disk.put_durable(POINTER, b"garbage");
    let mut driver = Driver::recover(config(), disk, 0, None);
    driver.run();
    assert!(matches!(
        failure(&driver),
        StreamFailure::Recovery(RecoveryError::CorruptPointer { .. })
    ));
}

#[test]
fn recovery_io_failure_is_a_recovery_error() {
    let mut driver = Driver::recover(config(), SimDisk::new(), 0, None);
    driver.complete(0, Some(Fault::Before));
    assert!(matches!(
        failure(&driver),
        StreamFailure::Recovery(RecoveryError::Io {
            step: IoStep::ListSegments,
            ..
        })
    ));
    assert_eq!(
        driver.machine.read_active(0),
        Err(ReadError::Poisoned {
            offset: 0,
            failure: failure(&driver)
        })
    );
}

#[test]
fn recovery_rewrites_pages_a_failed_fsync_lost() {
    let mut driver = fresh(config());
    driver.append(b"lost pages").unwrap();
    driver.step(); // written
    let sync = driver.find(is_sync).unwrap();
    driver.complete(sync, Some(Fault::Before)); // fsyncgate: the pages are gone
    // The process dies before the rewrite; the OS keeps running, reads still see the
    // bytes although the disk does not have them.
    let disk = driver.disk.clone();
    let mut control = disk.clone();
    control.crash_losing_everything_pending();
    assert!(
        control.records(SEGMENTS_DIR).is_empty(),
        "the bytes are not durable"
    );

    let mut restarted = Driver::recover(config(), disk, 1, None);
    restarted.run();
    assert_eq!(
        restarted.machine.durable_next_offset(),
        1,
        "recovered and fsynced"
    );
    let mut crashed = restarted.disk.clone();
    crashed.crash_losing_everything_pending();
    assert_eq!(
        crashed.records(SEGMENTS_DIR).get(&0).map(Vec::as_slice),
        Some(&b"lost pages"[..]),
        "recovery rewrote the bytes before calling them durable"
    );
}

#[test]
fn create_opens_a_given_segment() {
    let machine = StreamMachine::create(config(), stream_name(), 0, SegmentId(5), 100);
    let mut driver = Driver::new(machine, SimDisk::new(), 0);
    assert_eq!(
        driver.append(b"a"),
        Err(would_block(BackpressureKind::Rollover))
    );
    driver.run();
    assert_eq!(
        driver.take_events(),
        [StreamEvent::SegmentOpened {
            segment_id: SegmentId(5),
            base_offset: 100,
            opened_at_ms: 0
        }]
    );
    assert_eq!(driver.append(b"a"), Ok(100));
    driver.run();
    assert_eq!(driver.machine.durable_next_offset(), 101);
}

// ---- Driver bugs panic ----

#[test]
#[should_panic(expected = "unknown")]
fn completion_of_an_unknown_id_panics() {
    let mut driver = fresh(config());
    driver
        .machine
        .handle_completion(0, IoId(9999), IoCompletion::Disk(DiskCompletion::Done));
}

#[test]
#[should_panic(expected = "does not fit")]
fn completion_of_the_wrong_kind_panics() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    let (id, _) = driver.in_flight.remove(0);
    driver.machine.handle_completion(
        0,
        id,
        IoCompletion::Disk(DiskCompletion::Listed(Vec::new())),
    );
}

#[test]
#[should_panic(expected = "not a disk completion")]
fn object_completion_panics() {
    let mut driver = fresh(config());
    driver.append(b"a").unwrap();
    let (id, _) = driver.in_flight.remove(0);
    driver
        .machine
        .handle_completion(0, id, IoCompletion::Object(ObjectCompletion::Deleted));
}

#[test]
#[should_panic(expected = "went backwards")]
fn time_going_backwards_panics() {
    let mut driver = fresh(config());
    driver.machine.handle_timeout(10);
    driver.machine.handle_timeout(9);
}

#[test]
#[should_panic(expected = "without validation")]
fn unvalidated_config_panics() {
    let _ = StreamMachine::recover(
        StreamConfig {
            segment_target_bytes: 1,
            ..config()
        },
        stream_name(),
        0,
        None,
    );
}

#[test]
fn data_requests_never_overlap() {
    let mut driver = fresh(config());
    let mut appended = 0u64;
    let mut round = 0u8;
    while appended < 20 {
        round += 1;
        match driver.append(&[round; 10]) {
            Ok(offset) => {
                assert_eq!(offset, appended);
                appended += 1;
            }
            Err(error) => {
                assert_eq!(error, would_block(BackpressureKind::Flush));
                driver.step();
            }
        }
        assert!(
            driver.in_flight.len() <= 1,
            "writes and syncs never overlap"
        );
        if round.is_multiple_of(3) {
            driver.step();
        }
    }
    driver.run();
    assert_eq!(driver.machine.durable_next_offset(), 20);
}
