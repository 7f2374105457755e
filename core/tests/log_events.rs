//! The machines' events reach `tracing` as the operations guide documents them: the
//! store, driven by the real `driver::run` over `MemoryPorts`, writes, seals,
//! compresses, uploads (through retries), evicts, hydrates from Tier 1 and from Tier 2
//! (through a retry), and reopens; a subscriber captures every event.
//!
//! **Invariants checked**
//! - Every event under an `aof2::` target is listed in the "Log events" tables of
//!   docs/operations.md, with the target, the level and exactly the fields given
//!   there (the tables are parsed, so the guide cannot drift from the code).
//! - The runbook's events appear: `tiered_admit_segment`, `tier0_eviction_scheduled`,
//!   `tier0_segment_dropped`, the Tier 1 compression and hydration events (a missing
//!   warm file included), the Tier 2 upload and fetch events with their retries (a
//!   hydration's get is a Tier 2 fetch), and the stream's seal, durability and
//!   recovery.
//!
//! One test in this binary: it installs the process-wide subscriber.

// The subscriber is shared with the IO threads, so it locks.
#![allow(clippy::disallowed_types)]

use aof2_core::SegmentId;
use aof2_core::driver::{CommandSender, DiskPort, DriverLimits, Machine, command_channel, run};
use aof2_core::memory_ports::{FlakyObjectStore, MemoryPorts};
use aof2_core::names::{StreamName, artifact_path, segment_path};
use aof2_core::store::{ReadMode, Store, StoreCommand, StoreConfig, StoreReply};
use bytes::Bytes;
use futures::executor::block_on;
use futures::future::join;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One captured event.
#[derive(Debug, Clone)]
struct Captured {
    target: String,
    level: String,
    name: String,
    fields: BTreeSet<String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        let mut message = Message::default();
        event.record(&mut message);
        let fields = metadata
            .fields()
            .iter()
            .map(|field| field.name().to_owned())
            .filter(|field| field != "message")
            .collect();
        self.0.lock().unwrap().push(Captured {
            target: metadata.target().to_owned(),
            level: metadata.level().to_string(),
            name: message.0,
            fields,
        });
    }
}

/// What docs/operations.md says of one event.
#[derive(Debug)]
struct Documented {
    target: String,
    level: String,
    fields: BTreeSet<String>,
}

/// The backticked words of `text`.
fn quoted(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The backticked words of `text`, after dropping what is in parentheses.
fn backticked(text: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    quoted(&plain).map(str::to_owned).collect()
}

/// The event tables of the guide's "Log events" section, by event name. A subsection
/// names its target in its heading or in an "All under target" line unless its table
/// has a target column. The production ports' table is not about machine events.
fn documented_events() -> BTreeMap<String, Documented> {
    let guide = include_str!("../../docs/operations.md");
    let section = guide
        .split("\n## Log events\n")
        .nth(1)
        .expect("docs/operations.md has a Log events section");
    let section = section.split("\n## ").next().unwrap();
    let mut events = BTreeMap::new();
    for subsection in section.split("\n### ").skip(1) {
        let heading = subsection.lines().next().unwrap();
        if heading.starts_with("Production ports") {
            continue;
        }
        let default_target = subsection
            .lines()
            .take_while(|line| !line.starts_with('|'))
            .flat_map(quoted)
            .find(|word| word.starts_with("aof2::"))
            .map(str::to_owned);
        let mut columns: Vec<String> = Vec::new();
        for line in subsection.lines().filter(|line| line.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if columns.is_empty() {
                columns = cells.iter().map(|cell| (*cell).to_owned()).collect();
                continue;
            }
            if cells.iter().all(|cell| cell.starts_with("---")) {
                continue;
            }
            let cell = |name: &str| {
                columns
                    .iter()
                    .position(|column| column == name)
                    .map(|index| cells[index])
            };
            let name = backticked(cell("event").expect("an event column"))
                .into_iter()
                .next()
                .expect("an event name");
            let target = match cell("target") {
                Some(target) => backticked(target).into_iter().next().unwrap(),
                None => default_target
                    .clone()
                    .unwrap_or_else(|| panic!("no target for {name} in `### {heading}`")),
            };
            let documented = Documented {
                target,
                level: cell("level").expect("a level column").to_owned(),
                fields: backticked(cell("fields").expect("a fields column"))
                    .into_iter()
                    .collect(),
            };
            assert!(
                events.insert(name.clone(), documented).is_none(),
                "{name} is documented twice"
            );
        }
    }
    events
}

fn name(text: &str) -> StreamName {
    StreamName::new(text).unwrap()
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("{i:08}").repeat(512))
}

async fn call(sender: &CommandSender<Store>, command: StoreCommand) -> StoreReply {
    sender.call(command).await.unwrap()
}

async fn append(sender: &CommandSender<Store>, offset: u64) {
    for _ in 0..100_000 {
        let reply = call(
            sender,
            StoreCommand::Append {
                stream: name("logged"),
                payload: payload(offset),
                ext_id: None,
                wait: false,
            },
        )
        .await;
        match reply {
            StoreReply::Appended(got) => {
                assert_eq!(got, offset);
                return;
            }
            StoreReply::WouldBlock(_) => {}
            other => panic!("append {offset}: {other:?}"),
        }
    }
    panic!("append {offset} stayed blocked");
}

async fn read_waiting(sender: &CommandSender<Store>, offset: u64) {
    let mode = ReadMode {
        wait: true,
        sequential: false,
    };
    let reply = call(
        sender,
        StoreCommand::Read {
            stream: name("logged"),
            offset,
            mode,
        },
    )
    .await;
    match reply {
        StoreReply::Record(record) => assert_eq!(record.payload, payload(offset)),
        other => panic!("read {offset}: {other:?}"),
    }
}

fn config() -> StoreConfig {
    let mut config = StoreConfig::default();
    config.stream.segment_target_bytes = 64 * 1024;
    config.tier0.cluster_max_bytes = 1024 * 1024;
    config
}

/// One session on `memory`: `work` runs against an opened "logged" stream, then the
/// store closes.
fn session<F, Fut>(memory: &MemoryPorts, work: F)
where
    F: FnOnce(CommandSender<Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let store = Store::new(config(), 10_000).unwrap();
    let (sender, receiver) = command_channel::<Store>();
    let limits = DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    };
    let driver = run(store, memory.ports.clone(), receiver, limits);
    let calls = async move {
        let opened = call(
            &sender,
            StoreCommand::OpenStream {
                name: "logged".into(),
            },
        )
        .await;
        assert!(matches!(opened, StoreReply::Opened { .. }), "{opened:?}");
        work(sender.clone()).await;
        assert_eq!(call(&sender, StoreCommand::Close).await, StoreReply::Closed);
    };
    let (store, ()) = block_on(join(driver, calls));
    store.check_invariants();
}

#[test]
fn machine_events_reach_tracing_as_the_guide_documents_them() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let mut memory = MemoryPorts::new(10_000, 4);
    let objects = memory.object_store.clone();
    memory.ports.object_store = Arc::new(FlakyObjectStore {
        put_failures: AtomicU32::new(2),
        ..FlakyObjectStore::new(objects.clone())
    });
    let flaky = memory.ports.object_store.clone();
    let disk = memory.disk.clone();
    let records = 500u64;
    // About 2 MiB in 64 KiB segments, twice the Tier 0 budget: seals, compressions,
    // uploads (the first two puts fail), evictions.
    session(&memory, |sender| async move {
        for offset in 0..records {
            append(&sender, offset).await;
        }
        let durable = call(
            &sender,
            StoreCommand::WaitDurable {
                stream: name("logged"),
                offset: records - 1,
            },
        )
        .await;
        assert!(matches!(durable, StoreReply::Durable { .. }), "{durable:?}");
        let first = "streams/logged/segments/00000000000000000000.seg";
        let mut polls = 0;
        while disk.file(first).is_some() {
            polls += 1;
            assert!(polls < 100_000, "segment 0 was never evicted");
            let _ = call(&sender, StoreCommand::Metrics).await;
        }
        // Hydrated from the warm artifact.
        read_waiting(&sender, 3).await;
    });
    // Reopened without one evicted segment's warm artifact, the first get failing: its
    // hydration finds the file missing and reads Tier 2 through a retry.
    let flaky_gets = Arc::new(FlakyObjectStore {
        get_failures: AtomicU32::new(1),
        ..FlakyObjectStore::new(objects)
    });
    drop(flaky);
    memory.ports.object_store = flaky_gets;
    let disk = memory.disk.clone();
    session(&memory, |sender| async move {
        // The oldest segment held only as a warm artifact loses it.
        let cold = (0..records)
            .map(SegmentId)
            .find(|&id| {
                disk.file(segment_path(&name("logged"), id).as_str())
                    .is_none()
                    && disk
                        .file(artifact_path(&name("logged"), id).as_str())
                        .is_some()
            })
            .expect("a segment evicted from Tier 0 keeps its warm artifact");
        disk.remove(&artifact_path(&name("logged"), cold))
            .await
            .unwrap();
        for offset in 0..records {
            read_waiting(&sender, offset).await;
        }
    });

    let documented = documented_events();
    let captured = capture.0.lock().unwrap().clone();
    let machine_events: Vec<&Captured> = captured
        .iter()
        .filter(|event| event.target.starts_with("aof2::"))
        .collect();
    for event in &machine_events {
        let doc = documented.get(&event.name).unwrap_or_else(|| {
            panic!(
                "{} (target {}) is not in the Log events tables of docs/operations.md",
                event.name, event.target
            )
        });
        assert_eq!(event.target, doc.target, "target of {}", event.name);
        assert_eq!(event.level, doc.level, "level of {}", event.name);
        assert_eq!(event.fields, doc.fields, "fields of {}", event.name);
    }
    let seen: BTreeSet<&str> = machine_events
        .iter()
        .map(|event| event.name.as_str())
        .collect();
    for expected in [
        "tiered_admit_segment",
        "tier0_eviction_scheduled",
        "tier0_segment_dropped",
        "tier1_compression_started",
        "tier1_compression_succeeded",
        "tier1_hydration_started",
        "tier1_hydration_succeeded",
        "tier1_artifact_missing",
        "tier1_artifact_stored",
        "tier2_upload_started",
        "tier2_upload_retry",
        "tier2_upload_succeeded",
        "tier2_fetch_retry",
        "tier2_fetch_succeeded",
        "stream_segment_opened",
        "stream_segment_sealed",
        "stream_durable",
        "stream_recovered",
    ] {
        assert!(seen.contains(expected), "no {expected} event; saw {seen:?}");
    }
}
