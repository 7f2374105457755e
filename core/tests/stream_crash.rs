//! Property tests of the stream machine: random appends, completions in any order,
//! failed writes and fsyncs (with and without effect), timeouts, seals, flushes, OS
//! crashes and process restarts, each crash followed by recovery.
//!
//! **Invariants checked**
//! - `check_invariants()` after every step, and a failed request never raises the
//!   durable watermark (the `Driver` does both).
//! - After every step, a crash that loses everything not yet durable keeps every
//!   offset ever reported durable, byte-identical: so a failed fsync is never reported
//!   durable, and its bytes are rewritten before they are.
//! - After every crash or restart, recovery succeeds, its next offset is at least every
//!   offset reported durable and at most every offset appended, the segment files hold
//!   exactly the dense offsets `0..next`, and each reads back byte-identical to what was
//!   appended at that offset (from the files and from `read_active`): nothing never
//!   appended is read.
//! - Offsets handed out by `append` are dense across rollovers, crashes and restarts.

mod stream_disk;

use aof2_core::stream::{AppendError, FlushPolicy, ReadOutcome, StreamConfig, StreamEvent};
use proptest::prelude::*;
use stream_disk::{Driver, Fault, SEGMENTS_DIR, SimDisk};

#[derive(Debug, Clone)]
enum Op {
    Append { size: usize, ext_id: Option<u64> },
    Complete { pick: usize },
    Fail { pick: usize, after: bool },
    Advance { ms: u64 },
    Seal,
    Flush,
    Crash { seed: u64, hint: bool },
    Restart { hint: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0usize..=104, proptest::option::of(1u64..1000))
            .prop_map(|(size, ext_id)| Op::Append { size, ext_id }),
        40 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, after)| Op::Fail { pick, after }),
        6 => (1u64..3000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Seal),
        3 => Just(Op::Flush),
        2 => (any::<u64>(), any::<bool>()).prop_map(|(seed, hint)| Op::Crash { seed, hint }),
        2 => any::<bool>().prop_map(|hint| Op::Restart { hint }),
    ]
}

fn config() -> impl Strategy<Value = StreamConfig> {
    let flush = prop_oneof![
        Just(FlushPolicy::EveryAppend),
        (50u64..=600).prop_map(FlushPolicy::Bytes),
        (1u64..100).prop_map(FlushPolicy::IntervalMs),
    ];
    (flush, 1024u64..2500, 136u64..600, 0u32..=3, 1000u64..5000).prop_map(
        |(flush, segment_target_bytes, max_unflushed_bytes, flush_max_retries, age)| {
            let flush = match flush {
                FlushPolicy::Bytes(bytes) => FlushPolicy::Bytes(bytes.min(max_unflushed_bytes)),
                other => other,
            };
            let config = StreamConfig {
                segment_target_bytes,
                segment_max_age_ms: age,
                flush,
                max_unflushed_bytes,
                flush_max_retries,
                record_payload_bytes_max: 100,
            };
            config.validate().unwrap();
            config
        },
    )
}

/// What the test knows: every payload appended, by offset, in the current history,
/// and the highest offset ever reported durable.
#[derive(Debug, Default)]
struct Model {
    payloads: Vec<Vec<u8>>,
    acknowledged: u64,
    serial: u64,
}

impl Model {
    fn next_payload(&mut self, size: usize) -> Vec<u8> {
        self.serial += 1;
        let stamp = self.serial.to_le_bytes();
        (0..size)
            .map(|index| stamp[index % 8] ^ index as u8)
            .collect()
    }
}

/// A crash now, losing everything not durable, must keep every acknowledged offset.
fn check_durable_survives(driver: &Driver, model: &Model) {
    let mut crashed = driver.disk.clone();
    crashed.crash_losing_everything_pending();
    let records = crashed.records(SEGMENTS_DIR);
    for offset in 0..model.acknowledged {
        assert_eq!(
            records.get(&offset),
            Some(&model.payloads[offset as usize]),
            "offset {offset} was reported durable but a crash now would lose it"
        );
    }
    for (offset, payload) in &records {
        assert!(
            (*offset as usize) < model.payloads.len(),
            "offset {offset} on disk was never appended"
        );
        assert_eq!(
            payload, &model.payloads[*offset as usize],
            "offset {offset}"
        );
    }
}

/// Recovers a new machine from `disk` and checks what it brings back.
fn recover(
    config: StreamConfig,
    disk: SimDisk,
    now_ms: u64,
    hint: bool,
    model: &mut Model,
) -> Driver {
    let acknowledged = hint.then_some(model.acknowledged);
    let mut driver = Driver::recover(config, disk, now_ms, acknowledged);
    driver.run();
    assert!(
        driver.machine.is_open(),
        "recovery failed: {:?}",
        driver.machine.failure()
    );
    // An age or size rollover may follow the `Recovered` event at once.
    assert!(
        driver
            .events
            .iter()
            .any(|event| matches!(event, StreamEvent::Recovered(_))),
        "{:?}",
        driver.events
    );
    let next = driver.machine.next_offset().expect("open");
    assert!(
        next >= model.acknowledged,
        "recovered up to {next}, but {} were reported durable",
        model.acknowledged
    );
    assert!(
        next as usize <= model.payloads.len(),
        "recovered up to {next}, but only {} were appended",
        model.payloads.len()
    );
    assert_eq!(
        driver.machine.durable_next_offset(),
        next,
        "recovered is durable"
    );
    model.payloads.truncate(next as usize);
    model.acknowledged = next;
    let records = driver.disk.records(SEGMENTS_DIR);
    assert_eq!(
        records.keys().copied().collect::<Vec<_>>(),
        (0..next).collect::<Vec<_>>(),
        "the segment files hold exactly the dense offsets 0..{next}"
    );
    for (offset, payload) in &records {
        assert_eq!(
            payload, &model.payloads[*offset as usize],
            "offset {offset}"
        );
    }
    let (_, base) = driver.machine.active_segment().expect("open");
    for offset in base..next {
        match driver.machine.read_active(offset) {
            Ok(ReadOutcome::Ready(record)) => {
                assert_eq!(record.offset, offset, "read_active({offset})");
                assert_eq!(
                    record.payload.as_ref(),
                    model.payloads[offset as usize].as_slice(),
                    "read_active({offset})"
                );
            }
            other => panic!("read_active({offset}): expected Ready, got {other:?}"),
        }
    }
    driver
}

fn run(config: StreamConfig, ops: Vec<Op>) {
    let mut model = Model::default();
    let mut driver = recover(config, SimDisk::new(), 0, false, &mut model);
    for op in ops {
        match op {
            Op::Append { size, ext_id } => {
                let payload = model.next_payload(size);
                let result = driver
                    .machine
                    .append(driver.now_ms, payload.clone().into(), ext_id);
                driver.drain();
                match result {
                    Ok(offset) => {
                        assert_eq!(offset as usize, model.payloads.len(), "dense offsets");
                        model.payloads.push(payload);
                    }
                    Err(AppendError::RecordTooLarge {
                        size: refused,
                        limit,
                    }) => {
                        assert_eq!(refused as usize, size);
                        assert!(size > limit as usize);
                    }
                    Err(AppendError::WouldBlock(_) | AppendError::Poisoned(_)) => {
                        assert!(size <= 100);
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            Op::Complete { pick } => {
                if !driver.in_flight.is_empty() {
                    let index = pick % driver.in_flight.len();
                    driver.complete(index, None);
                }
            }
            Op::Fail { pick, after } => {
                if !driver.in_flight.is_empty() {
                    let index = pick % driver.in_flight.len();
                    let fault = if after {
                        Fault::After
                    } else {
                        Fault::BeforePartial
                    };
                    driver.complete(index, Some(fault));
                }
            }
            Op::Advance { ms } => driver.advance(ms),
            Op::Seal => {
                let _ = driver.machine.seal(driver.now_ms);
                driver.drain();
            }
            Op::Flush => {
                let _ = driver.machine.flush(driver.now_ms);
                driver.drain();
            }
            Op::Crash { seed, hint } => {
                let mut disk = driver.disk.clone();
                disk.crash(seed);
                driver = recover(config, disk, driver.now_ms, hint, &mut model);
            }
            Op::Restart { hint } => {
                let disk = driver.disk.clone();
                driver = recover(config, disk, driver.now_ms, hint, &mut model);
            }
        }
        let durable = driver.machine.durable_next_offset();
        assert!(durable as usize <= model.payloads.len());
        model.acknowledged = model.acknowledged.max(durable);
        check_durable_survives(&driver, &model);
    }
    // Finally: everything in flight completes, and a last crash keeps it all.
    driver.run();
    if driver.machine.failure().is_none() {
        let _ = driver.machine.flush(driver.now_ms);
        driver.drain();
        driver.run();
        assert_eq!(
            driver.machine.durable_next_offset() as usize,
            model.payloads.len(),
            "a healthy stream makes everything durable once flushed"
        );
    }
    model.acknowledged = model.acknowledged.max(driver.machine.durable_next_offset());
    check_durable_survives(&driver, &model);
    let mut disk = driver.disk.clone();
    disk.crash(0);
    recover(config, disk, driver.now_ms, true, &mut model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn durable_records_survive_crashes_and_failures(
        config in config(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(config, ops);
    }
}

/// A long deterministic history with many rollovers, to exercise what short random
/// ones rarely reach.
#[test]
fn long_history_with_rollovers() {
    let config = StreamConfig {
        segment_target_bytes: 1024,
        segment_max_age_ms: 1000,
        flush: FlushPolicy::EveryAppend,
        max_unflushed_bytes: 300,
        flush_max_retries: 1,
        record_payload_bytes_max: 100,
    };
    let mut ops = Vec::new();
    for round in 0..2000usize {
        ops.push(Op::Append {
            size: round % 97,
            ext_id: Some(round as u64 + 1),
        });
        ops.push(Op::Complete { pick: round * 7 });
        if round.is_multiple_of(5) {
            ops.push(Op::Complete { pick: round });
        }
        if round.is_multiple_of(211) {
            ops.push(Op::Fail {
                pick: round,
                after: round.is_multiple_of(2),
            });
        }
        if round.is_multiple_of(97) {
            ops.push(Op::Advance { ms: 600 });
        }
        if round.is_multiple_of(499) {
            ops.push(Op::Crash {
                seed: round as u64,
                hint: !round.is_multiple_of(2),
            });
        }
        if round.is_multiple_of(701) {
            ops.push(Op::Restart { hint: true });
        }
    }
    run(config, ops);
}
