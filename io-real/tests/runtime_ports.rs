//! The tokio ports (clock, spawner, CPU pool) and the whole production set from
//! `ports(...)`, driven by the core's one loop, `driver::run`.
//!
//! **Invariants checked**
//! - The clock reads milliseconds since the Unix epoch, never goes backwards, and
//!   `sleep_until` returns at or after its deadline.
//! - A spawned task runs; a CPU job compresses a sealed segment into an artifact that
//!   decompresses to it, and a corrupt input is a failed job, not a panic.
//! - Through `driver::run` on the ports from `ports(root, embedded_tier2(root), ..)`,
//!   the core's `Tier2Transfers` uploads an artifact into `<root>/tier2` and fetches a
//!   range of it back byte for byte; `check_invariants` holds after every input.
//! - `ports(...)` refuses a root that is not a directory and an invalid Tier 2 backend
//!   with errors that name the problem.

use aof2_core::SegmentId;
use aof2_core::driver::{
    ClockPort, CommandToken, CpuPort, DriverLimits, Machine, SpawnPort, command_channel, run,
};
use aof2_core::io::{CpuJob, CpuResult, IoCompletion, IoId, IoRequest};
use aof2_core::names::{ObjectKey, StreamName, segment_object_key};
use aof2_core::segment::{Record, SegmentDigest, SegmentHeader};
use aof2_core::tier2::{FetchId, Tier2Config, Tier2Event, Tier2Transfers};
use aof2_io_real::runtime::{BlockingCpu, TokioClock, TokioSpawner};
use aof2_io_real::{embedded_tier2, ports};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// A sealed segment of `count` records.
fn sealed_segment(count: u64) -> Bytes {
    let header = SegmentHeader {
        segment_id: SegmentId(1),
        base_offset: 0,
        created_at_ms: 1,
    };
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    let mut digest = SegmentDigest::new();
    digest.update_header(&bytes);
    for offset in 0..count {
        let payload = format!("record {offset} ").repeat(20);
        let position = bytes.len();
        Record {
            offset,
            timestamp_ms: offset,
            ext_id: 0,
            flags: 0,
            payload: payload.as_bytes(),
        }
        .encode(&mut bytes);
        digest.update_frames(&bytes[position..]);
    }
    digest.footer(0, false, 2).encode(&mut bytes);
    Bytes::from(bytes)
}

#[tokio::test]
async fn the_clock_reads_epoch_milliseconds_and_sleeps_to_deadlines() {
    let clock = TokioClock::new();
    let first = clock.now_ms();
    assert!(
        first > 1_600_000_000_000,
        "milliseconds since the Unix epoch: {first}"
    );
    let deadline = first + 25;
    clock.sleep_until(deadline).await;
    let after = clock.now_ms();
    assert!(after >= deadline, "{after} >= {deadline}");
    clock.sleep_until(first).await; // a past deadline returns at once
    assert!(clock.now_ms() >= after, "never backwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_run_and_cpu_jobs_round_trip() {
    let spawner = TokioSpawner::new(tokio::runtime::Handle::current());
    let (sender, receiver) = futures::channel::oneshot::channel();
    spawner.spawn(Box::pin(async move {
        sender.send(7u32).unwrap();
    }));
    assert_eq!(receiver.await, Ok(7));

    let segment = sealed_segment(200);
    let CpuResult::Compressed {
        artifact,
        frame_count,
        ..
    } = BlockingCpu
        .run(CpuJob::Compress {
            segment: segment.clone(),
            frame_raw_bytes_target: 4096,
            compression_level: 3,
        })
        .await
    else {
        panic!("a sealed segment compresses");
    };
    assert!(frame_count > 1);
    assert_eq!(
        BlockingCpu.run(CpuJob::Decompress { artifact }).await,
        CpuResult::Decompressed { segment }
    );
    let failed = BlockingCpu
        .run(CpuJob::Decompress {
            artifact: Bytes::from_static(b"not an artifact"),
        })
        .await;
    assert!(matches!(failed, CpuResult::Failed { .. }), "{failed:?}");
}

#[derive(Debug)]
enum Command {
    Upload {
        stream: StreamName,
        segment_id: SegmentId,
        artifact: Bytes,
    },
    Fetch {
        fetch_id: FetchId,
        key: ObjectKey,
        range: Option<(u64, u64)>,
    },
}

/// `Tier2Transfers` as a `driver::Machine`: each command is answered with its
/// operation's terminal event.
#[derive(Debug)]
struct Tier2Machine {
    transfers: Tier2Transfers,
    uploads: BTreeMap<String, CommandToken>,
    fetches: BTreeMap<FetchId, CommandToken>,
    replies: VecDeque<(CommandToken, Tier2Event)>,
    events: Vec<Tier2Event>,
    shut_down: bool,
}

impl Tier2Machine {
    fn drain_events(&mut self) {
        while let Some(event) = self.transfers.poll_event() {
            if event.is_terminal() {
                let token = match &event {
                    Tier2Event::FetchSucceeded { fetch_id, .. }
                    | Tier2Event::FetchFailed { fetch_id, .. } => self.fetches.remove(fetch_id),
                    other => self.uploads.remove(other.key()),
                };
                let token = token.expect("a terminal event answers a command");
                self.replies.push_back((token, event.clone()));
            }
            self.events.push(event);
        }
    }
}

impl Machine for Tier2Machine {
    type Command = Command;
    type Reply = Tier2Event;

    fn handle_command(&mut self, now_ms: u64, token: CommandToken, command: Command) {
        match command {
            Command::Upload {
                stream,
                segment_id,
                artifact,
            } => {
                self.uploads
                    .insert(segment_object_key(&stream, segment_id), token);
                self.transfers
                    .enqueue_upload(now_ms, stream, segment_id, artifact)
                    .expect("the upload queue has room");
            }
            Command::Fetch {
                fetch_id,
                key,
                range,
            } => {
                self.fetches.insert(fetch_id, token);
                self.transfers
                    .enqueue_fetch(now_ms, fetch_id, &key, range)
                    .expect("the fetch queue has room");
            }
        }
        self.drain_events();
    }

    fn poll_reply(&mut self) -> Option<(CommandToken, Tier2Event)> {
        self.replies.pop_front()
    }

    fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
        self.transfers.poll_request()
    }

    fn handle_completion(&mut self, now_ms: u64, id: IoId, completion: IoCompletion) {
        self.transfers.handle_completion(now_ms, id, completion);
        self.drain_events();
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.transfers.poll_timeout()
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        self.transfers.handle_timeout(now_ms);
        self.drain_events();
    }

    fn handle_shutdown(&mut self, _now_ms: u64) {
        self.shut_down = true;
    }

    fn is_finished(&self) -> bool {
        let metrics = self.transfers.metrics();
        self.shut_down && metrics.upload_queue_depth == 0 && metrics.fetch_queue_depth == 0
    }

    fn check_invariants(&self) {
        self.transfers.check_invariants();
        assert!(
            self.uploads.len() + self.fetches.len() <= 2,
            "at most two commands in this test"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_ports_drive_a_tier2_upload_and_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ports = ports(
        &root,
        embedded_tier2(&root),
        tokio::runtime::Handle::current(),
    )
    .unwrap();

    let CpuResult::Compressed { artifact, .. } = ports
        .cpu
        .run(CpuJob::Compress {
            segment: sealed_segment(500),
            frame_raw_bytes_target: 8192,
            compression_level: 3,
        })
        .await
    else {
        panic!("a sealed segment compresses");
    };
    let machine = Tier2Machine {
        transfers: Tier2Transfers::new(Tier2Config::default(), 1),
        uploads: BTreeMap::new(),
        fetches: BTreeMap::new(),
        replies: VecDeque::new(),
        events: Vec::new(),
        shut_down: false,
    };
    let (sender, receiver) = command_channel::<Tier2Machine>();
    let limits = DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    };
    let driver = tokio::spawn(run(machine, ports, receiver, limits));

    let stream = StreamName::new("orders").unwrap();
    let uploaded = sender
        .call(Command::Upload {
            stream: stream.clone(),
            segment_id: SegmentId(1),
            artifact: artifact.clone(),
        })
        .await
        .unwrap();
    assert!(
        matches!(uploaded, Tier2Event::UploadSucceeded { attempts: 1, object_bytes, .. } if object_bytes == artifact.len() as u64),
        "{uploaded:?}"
    );
    let key = segment_object_key(&stream, SegmentId(1));
    assert_eq!(
        std::fs::read(root.join("tier2").join(&key)).unwrap(),
        artifact.as_ref(),
        "the embedded default Tier 2 is files under <root>/tier2"
    );

    let (start, end) = (100, 1_100);
    let fetched = sender
        .call(Command::Fetch {
            fetch_id: FetchId(1),
            key: ObjectKey::parse(&key).unwrap(),
            range: Some((start, end)),
        })
        .await
        .unwrap();
    match fetched {
        Tier2Event::FetchSucceeded {
            bytes, object_size, ..
        } => {
            assert_eq!(bytes, artifact.slice(start as usize..end as usize));
            assert_eq!(object_size, artifact.len() as u64);
        }
        other => panic!("the fetch did not succeed: {other:?}"),
    }

    drop(sender);
    let machine = driver.await.unwrap();
    assert!(machine.is_finished());
    assert_eq!(
        machine
            .events
            .iter()
            .filter(|event| event.is_terminal())
            .count(),
        2
    );
}

#[tokio::test]
async fn ports_refuse_a_bad_root_or_tier2_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let handle = tokio::runtime::Handle::current();
    let error = ports(&file, aof2_io_real::Tier2Backend::Memory, handle.clone()).unwrap_err();
    assert!(
        matches!(error, aof2_io_real::PortsError::Root { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("not-a-dir"), "{error}");

    let remote_http = aof2_io_real::S3Settings {
        endpoint: Some("http://s3.example.com".to_owned()),
        region: "us-east-1".to_owned(),
        bucket: "b".to_owned(),
        access_key: None,
        secret_key: None,
        allow_http: true,
    };
    let error = ports(
        &dir.path().join("root"),
        aof2_io_real::Tier2Backend::S3(remote_http),
        handle,
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            aof2_io_real::PortsError::Tier2(aof2_io_real::Tier2StoreError::HttpNotLoopback { .. })
        ),
        "{error}"
    );
}
