//! [`SimPorts`] under the production driver loop (`aof2_core::driver::run`): a tiny
//! machine runs chains of IO requests (the temp-file -> fsync -> rename -> fsync-dir
//! protocol, then a conditional put) and a timer, with latency on every operation.
//!
//! Built normally, `#[madsim::test]` is `#[tokio::test]` and the latency is real
//! (a few milliseconds). Built with
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p aof2-io-sim`,
//! it runs on madsim's simulated clock, and `a_seed_replays_exactly_under_madsim`
//! also runs a faulty scenario twice on the same seed and compares the traces.
//!
//! **Invariants checked**
//! - Every request completes once, through the spawn port, and the completions of a
//!   chain arrive in order.
//! - A file written by the durable-visibility protocol is durable on the disk; a file
//!   only fsync'd is not (its name is pending).
//! - `sleep_until` returns at or after its deadline; time advances by the latency.
//! - (madsim) The same seed gives the same replies, faults, times and final state.

use aof2_io_sim::core::driver::{self, CommandToken, DriverLimits, Machine};
use aof2_io_sim::core::io::{
    DiskCompletion, DiskRequest, IoCompletion, IoId, IoRequest, LocalPath, ObjectRequest, PutMode,
};
use aof2_io_sim::{
    DiskFaultPlan, LatencyPlan, SIM_CLOCK_START_MS, SimPlans, SimPorts, StoreFaultPlan,
};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug)]
enum Command {
    /// Run these requests one after another; reply with every completion.
    Chain(Vec<IoRequest>),
    /// Reply once the clock reaches this time.
    WakeAt(u64),
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Chain(Vec<IoCompletion>),
    Woke(u64),
}

#[derive(Debug)]
struct ChainState {
    token: CommandToken,
    remaining: VecDeque<IoRequest>,
    completions: Vec<IoCompletion>,
}

/// Runs each command's chain sequentially; chains of different commands overlap.
#[derive(Debug, Default)]
struct ChainMachine {
    next_id: u64,
    requests: VecDeque<(IoId, IoRequest)>,
    chains: BTreeMap<IoId, ChainState>,
    replies: VecDeque<(CommandToken, Reply)>,
    timers: BTreeMap<u64, Vec<CommandToken>>,
    shut_down: bool,
}

impl ChainMachine {
    fn advance(&mut self, mut chain: ChainState) {
        match chain.remaining.pop_front() {
            Some(request) => {
                let id = IoId(self.next_id);
                self.next_id += 1;
                self.requests.push_back((id, request));
                self.chains.insert(id, chain);
            }
            None => self
                .replies
                .push_back((chain.token, Reply::Chain(chain.completions))),
        }
    }
}

impl Machine for ChainMachine {
    type Command = Command;
    type Reply = Reply;

    fn handle_command(&mut self, _now_ms: u64, token: CommandToken, command: Command) {
        match command {
            Command::Chain(requests) => self.advance(ChainState {
                token,
                remaining: requests.into(),
                completions: Vec::new(),
            }),
            Command::WakeAt(at_ms) => self.timers.entry(at_ms).or_default().push(token),
        }
    }

    fn poll_reply(&mut self) -> Option<(CommandToken, Reply)> {
        self.replies.pop_front()
    }

    fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
        self.requests.pop_front()
    }

    fn handle_completion(&mut self, _now_ms: u64, id: IoId, completion: IoCompletion) {
        let mut chain = self
            .chains
            .remove(&id)
            .expect("a completion answers a request of a chain");
        chain.completions.push(completion);
        self.advance(chain);
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.timers.keys().next().copied()
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            for token in entry.remove() {
                self.replies.push_back((token, Reply::Woke(now_ms)));
            }
        }
    }

    fn handle_shutdown(&mut self, _now_ms: u64) {
        self.shut_down = true;
    }

    fn is_finished(&self) -> bool {
        self.shut_down && self.chains.is_empty() && self.timers.is_empty()
    }

    fn check_invariants(&self) {
        assert!(self.requests.len() <= self.chains.len());
    }
}

fn path(components: &[&str]) -> LocalPath {
    LocalPath::from_components(components)
}

/// Write `data/<name>.tmp`, fsync, rename to `data/<name>`, fsync `data`, then put
/// `objects/<name>` if absent.
fn publish(name: &str, bytes: &'static [u8]) -> Vec<IoRequest> {
    let temp = path(&["data", &format!("{name}.tmp")]);
    let file = path(&["data", name]);
    vec![
        IoRequest::Disk(DiskRequest::Create { path: temp.clone() }),
        IoRequest::Disk(DiskRequest::WriteAt {
            path: temp.clone(),
            offset: 0,
            bytes: Bytes::from_static(bytes),
        }),
        IoRequest::Disk(DiskRequest::SyncFile { path: temp.clone() }),
        IoRequest::Disk(DiskRequest::Rename {
            from: temp,
            to: file,
        }),
        IoRequest::Disk(DiskRequest::SyncDir {
            path: path(&["data"]),
        }),
        IoRequest::Object(ObjectRequest::Put {
            key: format!("objects/{name}"),
            bytes: Bytes::from_static(bytes),
            mode: PutMode::IfAbsent,
        }),
    ]
}

/// Runs three chains and a timer `wake_after_ms` ahead through the driver on `ports`;
/// returns the replies and the times the timer woke and the scenario ended.
async fn scenario(ports: &SimPorts, wake_after_ms: u64) -> Vec<String> {
    let (sender, receiver) = driver::command_channel::<ChainMachine>();
    let limits = DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    };
    let driver = driver::run(
        ChainMachine::default(),
        ports.ports.clone(),
        receiver,
        limits,
    );
    let clock = ports.clock.clone();
    let calls = async move {
        let start_ms = aof2_io_sim::core::driver::ClockPort::now_ms(clock.as_ref());
        let unsynced = vec![
            IoRequest::Disk(DiskRequest::Create {
                path: path(&["scratch", "c"]),
            }),
            IoRequest::Disk(DiskRequest::SyncFile {
                path: path(&["scratch", "c"]),
            }),
        ];
        let (a, b, c, woke) = futures::join!(
            sender.call(Command::Chain(publish("a", b"alpha"))),
            sender.call(Command::Chain(publish("b", b"bravo"))),
            sender.call(Command::Chain(unsynced)),
            sender.call(Command::WakeAt(start_ms + wake_after_ms)),
        );
        let now_ms = aof2_io_sim::core::driver::ClockPort::now_ms(clock.as_ref());
        let mut trace: Vec<String> = [a, b, c]
            .into_iter()
            .map(|reply| format!("{:?}", reply.expect("the driver answers")))
            .collect();
        let Reply::Woke(woke_ms) = woke.expect("the driver answers") else {
            panic!("a timer command is answered by a wake-up");
        };
        assert!(woke_ms >= start_ms + wake_after_ms, "woke at {woke_ms}");
        assert!(now_ms >= woke_ms);
        trace.push(format!(
            "woke +{} now +{}",
            woke_ms - start_ms,
            now_ms - start_ms
        ));
        trace
    };
    let (machine, trace) = futures::join!(driver, calls);
    assert!(machine.is_finished());
    trace
}

fn latency() -> LatencyPlan {
    LatencyPlan {
        base_us_max: 2_000,
        tail_ppm: 0,
        tail_us_max: 0,
    }
}

#[madsim::test]
async fn a_driver_runs_io_chains_and_a_timer_through_sim_ports() {
    let plans = SimPlans {
        disk: DiskFaultPlan {
            latency: latency(),
            ..DiskFaultPlan::none()
        },
        store: StoreFaultPlan {
            latency: latency(),
            ..StoreFaultPlan::none()
        },
    };
    let sim = SimPorts::new(11, plans);
    let start_ms = aof2_io_sim::core::driver::ClockPort::now_ms(sim.clock.as_ref());
    assert!(start_ms >= SIM_CLOCK_START_MS);
    let trace = scenario(&sim, 50).await;
    for chain in &trace[..2] {
        let done = format!("{:?}", IoCompletion::Disk(DiskCompletion::Done));
        assert_eq!(chain.matches(&done).count(), 5, "{chain}");
        assert!(chain.contains("Put { etag: Some("), "{chain}");
    }
    assert_eq!(trace[2].matches("Done").count(), 2, "{}", trace[2]);

    assert!(sim.disk.file_is_durable("data/a"));
    assert!(sim.disk.file_is_durable("data/b"));
    assert_eq!(sim.disk.durable_file("data/a").unwrap(), b"alpha");
    assert_eq!(sim.disk.current_paths(), ["data/a", "data/b", "scratch/c"]);
    assert!(
        !sim.disk.file_is_durable("scratch/c"),
        "fsync alone does not make a new name durable"
    );
    assert!(sim.disk.list_durable("scratch").is_empty());
    assert_eq!(sim.disk.list_durable("data"), ["a", "b"]);
    assert_eq!(sim.object_store.keys(), ["objects/a", "objects/b"]);
    assert!(sim.disk.stats().delayed_operations > 0);
    assert!(sim.object_store.stats().delayed_calls > 0);
}

/// Under madsim: one seed, faults on, run twice in fresh runtimes: the same trace.
#[cfg(madsim)]
#[test]
fn a_seed_replays_exactly_under_madsim() {
    fn run(seed: u64) -> String {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async move {
            let mut plans = SimPlans::from_seed(seed);
            plans.disk.write_error_ppm = 200_000;
            plans.disk.latency = LatencyPlan {
                base_us_max: 5_000,
                tail_ppm: 100_000,
                tail_us_max: 2_000_000,
            };
            plans.store.error_after_ppm = 200_000;
            plans.store.latency = plans.disk.latency;
            let sim = SimPorts::new(seed, plans);
            let mut trace = scenario(&sim, 10_000).await;
            let report = sim.disk.crash(&mut sim.seed.child("crash").rng());
            trace.push(format!("{report:?}"));
            trace.push(format!("{:?}", sim.disk.stats()));
            trace.push(format!("{:?}", sim.object_store.stats()));
            trace.push(format!("{:?}", sim.disk.durable_paths()));
            trace.push(format!("{:?}", sim.object_store.keys()));
            trace.join("\n")
        })
    }
    let mut distinct = std::collections::BTreeSet::new();
    // Ten seconds of timer and up to seconds of latency per run, in simulated time.
    let real_start = std::time::Instant::now();
    for seed in 0..4 {
        let first = run(seed);
        assert_eq!(first, run(seed), "seed {seed} replays");
        distinct.insert(first);
    }
    assert!(distinct.len() > 1, "different seeds give different runs");
    assert!(
        real_start.elapsed() < std::time::Duration::from_secs(10),
        "time is simulated"
    );
}
