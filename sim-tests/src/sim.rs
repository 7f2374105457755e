//! One seed, end to end: the workload, the crashes and restarts, the fault-free final
//! session and the checkers.
//!
//! A seed runs [`Scenario::sessions`] *sessions* with faults on (unless the scenario
//! turned them off), then a final session without faults, then (some seeds) a
//! whole-disk loss. A session is one process lifetime: a fresh
//! [`Store`] pumped by the production loop [`driver::run`] (with
//! `check_invariants` after every step) over the same [`SimPorts`]; it opens every
//! stream (creating or recovering it), runs random commands, and ends by a clean
//! close or by a crash: the driver future is dropped wherever it is (between two
//! commands, or at a random instant in the middle of one) and [`SimDisk::crash`]
//! throws away what was not durable. Commands that fail for good under faults end the
//! session the same way, so the next one exercises recovery.
//!
//! **Invariants checked** (numbers as in `docs/testing.md` and [`Checker`])
//! - After every restart: every stream reopens at a next offset between its durable
//!   floor and what was attempted (1, 2, 8), and every record from the start offset
//!   to it reads back with the bytes appended at that offset, from whichever tier
//!   holds it (1, 2, 6).
//! - Every reply: offsets are handed out densely (3); a read returns the appended
//!   bytes and never an offset not appended (1, 2); durability never covers more than
//!   was appended, and what was acknowledged durable stays readable (1, 2).
//! - After every crash: the durable manifest only references durable files and
//!   objects, no sealed segment lost its last copy, artifacts equal their objects (3
//!   to 6, `durable`).
//! - Final session, faults off: every stream reopens, every record reads back, then
//!   once sealed everything drains (no queued or running compression, upload,
//!   hydration, fetch, delete or activation) within [`LIVENESS_DEADLINE_MS`] of
//!   simulated time, the store shuts down, and every sealed segment of its index is
//!   in Tier 2 (9); Tier 0 and Tier 1 are within budget (7).
//! - Every step of every session: the store's `check_invariants` (10): a panic is a
//!   violation.

use crate::durable::{DurableCheck, check_durable_state};
use crate::model::{Checker, StreamModel, Violation};
use crate::scenario::{Scenario, WorkloadSize};
use aof2_core::SegmentId;
use aof2_core::backpressure::BackpressureKind;
use aof2_core::driver::{self, ClockPort, CommandSender, DriverLimits, Machine, command_channel};
use aof2_core::limits::{SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES};
use aof2_core::manifest::chunk::{chunk_file_name, parse_chunk_file_name};
use aof2_core::manifest::index::Lifecycle;
use aof2_core::names::{ObjectKey, StreamName, manifest_chunk_object_key, manifest_dir};
use aof2_core::retry::DetRng;
use aof2_core::store::{ReadMode, Store, StoreCommand, StoreError, StoreMetrics, StoreReply};
use aof2_io_sim::{SIM_CLOCK_START_MS, SimDiskStats, SimPlans, SimPorts, SimStoreStats};
use bytes::Bytes;
use futures::future::{Either, select};
use madsim::time::{Duration, sleep, timeout};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Simulated time the final session allows for everything to drain once faults stop.
pub const LIVENESS_DEADLINE_MS: u64 = 10 * 60 * 1000;
/// Simulated time one command of the final session may take.
pub const FINAL_COMMAND_TIMEOUT_MS: u64 = 2 * 60 * 1000;
/// Simulated time a session with faults may run before it is ended by a crash.
pub const SESSION_DEADLINE_MS: u64 = 30 * 60 * 1000;
/// A timed crash strikes within this much simulated time of the session's start.
pub const TIMED_CRASH_WITHIN_MS: u64 = 20_000;
/// Appends in one burst: `1..=APPEND_BURST_RECORDS_MAX`.
const APPEND_BURST_RECORDS_MAX: u64 = 16;
/// Records a background sequential reader reads.
const SEQUENTIAL_READ_RECORDS_MAX: u64 = 8;

/// What happened to the whole-disk loss at the end of a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskLoss {
    /// The seed did not lose its disk.
    #[default]
    NotPlanned,
    /// Every stream came back from Tier 2 alone with every record.
    Restored,
    /// The store reopened a stream whose data Tier 2 holds as a new, empty stream:
    /// it does not restore from Tier 2 alone.
    NotSupported,
    /// The restore refused with a typed error naming what Tier 2 lacks (a known
    /// issue, see docs/testing.md).
    Refused,
}

/// Everything one seed did and found.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub seed: u64,
    /// FNV-1a over every trace line: equal for two runs of one seed.
    pub trace_hash: u64,
    /// The trace lines (only when asked for).
    pub trace: Vec<String>,
    pub violations: Vec<Violation>,
    /// Checks run, by checker.
    pub checks: BTreeMap<Checker, u64>,
    pub disk: SimDiskStats,
    pub store: SimStoreStats,
    pub sessions: u64,
    pub crashes: u64,
    pub clean_closes: u64,
    /// Sessions whose opens failed under faults (retried by the next session).
    pub open_failures: u64,
    /// Sessions ended early because a command failed for good under faults.
    pub failed_sessions: u64,
    pub disk_loss: DiskLoss,
    pub appends: u64,
    pub records_read: u64,
    /// Reads answered `WouldBlock(Hydration)` (the segment was cold).
    pub cold_misses: u64,
    /// `DeleteSegments` commands answered `SegmentsDeleting` (seeds with retention).
    pub operator_deletes: u64,
    /// Read errors while faults were on (allowed then; a violation without faults).
    pub read_errors_under_faults: u64,
    /// Streams the durable-state checker could not replay.
    pub durable_streams_skipped: u64,
    pub sim_elapsed_ms: u64,
    /// Known, documented store issues this seed ran into (not violations unless
    /// [`RunOptions::strict`]); the seed stops there. See `docs/testing.md`.
    pub known_issues: Vec<String>,
}

/// How to run a seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub size: WorkloadSize,
    /// Keep the trace lines in the report.
    pub keep_trace: bool,
    /// Report known issues as violations.
    pub strict: bool,
}

#[derive(Debug, Default)]
struct Recorder {
    keep_trace: bool,
    report: SeedReport,
}

impl Recorder {
    fn line(&mut self, now_ms: u64, text: String) {
        let line = format!("[{:>9}ms] {text}", now_ms - SIM_CLOCK_START_MS);
        const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
        for byte in line.bytes().chain([b'\n']) {
            self.report.trace_hash =
                (self.report.trace_hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        if self.keep_trace {
            self.report.trace.push(line);
        }
    }

    fn ran(&mut self, checker: Checker) {
        *self.report.checks.entry(checker).or_default() += 1;
    }

    fn violation(&mut self, now_ms: u64, violation: Violation) {
        self.line(now_ms, format!("VIOLATION {violation}"));
        self.report.violations.push(violation);
    }
}

/// Results of background commands (parked reads, durability waits, snapshots),
/// checked against the model when the session ends.
#[derive(Debug)]
enum Background {
    Durable {
        stream: StreamName,
        offset: u64,
        reply: StoreReply,
    },
    Read {
        stream: StreamName,
        offset: u64,
        reply: StoreReply,
    },
    Snapshot {
        stream: StreamName,
        reply: StoreReply,
    },
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SessionEnd {
    /// The client chose to crash (or a timed crash struck).
    Crash,
    /// Flushed, then `Close` replied `Closed`.
    Closed,
    /// An open failed under faults.
    OpenFailed,
    /// A command failed for good under faults.
    Failed,
    /// The session ran past its deadline.
    Deadline,
    /// A violation made going on pointless.
    Violated,
    /// A documented known issue stops the seed (see [`SeedReport::known_issues`]).
    KnownIssue,
}

fn limits() -> DriverLimits {
    DriverLimits {
        check_invariants: true,
        ..DriverLimits::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere is reported by the runner; the data is still what it was.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A short, stable description of a reply for the trace.
fn describe(reply: &StoreReply) -> String {
    match reply {
        StoreReply::Record(record) => format!(
            "Record(offset {}, {} bytes, crc {:08x})",
            record.offset,
            record.payload.len(),
            crc32fast::hash(&record.payload)
        ),
        StoreReply::Metrics(_) => "Metrics".to_owned(),
        other => format!("{other:?}"),
    }
}

struct Simulation {
    scenario: Scenario,
    sim: SimPorts,
    names: Vec<StreamName>,
    models: BTreeMap<StreamName, StreamModel>,
    rng: DetRng,
    crash_rng: DetRng,
    /// Draws which Tier 2 objects a crash loses (apart from the store's own faults).
    loss_rng: DetRng,
    payload_count: u64,
    recorder: Arc<Mutex<Recorder>>,
    background: Arc<Mutex<Vec<Background>>>,
    tasks: Vec<madsim::task::JoinHandle<()>>,
    /// Whether the disk and store inject faults now.
    faults: bool,
    /// Whether the next session follows a crash or close (so recovery is checked).
    restarted: bool,
    /// Known issues are violations.
    strict: bool,
    /// A known issue stopped the seed.
    stopped: bool,
}

impl Simulation {
    fn new(scenario: Scenario, recorder: Arc<Mutex<Recorder>>) -> Self {
        let plans = if scenario.faults {
            scenario.plans
        } else {
            SimPlans::none()
        };
        let sim = SimPorts::new(scenario.seed, plans);
        let names: Vec<StreamName> = scenario
            .streams
            .iter()
            .map(|name| StreamName::new(name).expect("scenario stream names are valid"))
            .collect();
        let models = names
            .iter()
            .map(|name| (name.clone(), StreamModel::default()))
            .collect();
        let rng = sim.seed.child("client").rng();
        let crash_rng = sim.seed.child("crash").rng();
        let loss_rng = sim.seed.child("object-loss").rng();
        Simulation {
            faults: scenario.faults,
            scenario,
            sim,
            names,
            models,
            rng,
            crash_rng,
            loss_rng,
            payload_count: 0,
            recorder,
            background: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
            restarted: false,
            strict: false,
            stopped: false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.sim.clock.now_ms()
    }

    fn trace(&self, text: impl Into<String>) {
        let now_ms = self.now_ms();
        lock(&self.recorder).line(now_ms, text.into());
    }

    fn ran(&self, checker: Checker) {
        lock(&self.recorder).ran(checker);
    }

    fn violation(&self, violation: Violation) {
        let now_ms = self.now_ms();
        lock(&self.recorder).violation(now_ms, violation);
    }

    fn known_issue(&mut self, issue: String) {
        self.trace(format!("KNOWN ISSUE {issue}"));
        self.stopped = true;
        self.count(|report| report.known_issues.push(issue));
    }

    fn violations(&self) -> usize {
        lock(&self.recorder).report.violations.len()
    }

    fn count(&self, update: impl FnOnce(&mut SeedReport)) {
        update(&mut lock(&self.recorder).report);
    }

    fn model(&mut self, stream: &StreamName) -> &mut StreamModel {
        self.models
            .get_mut(stream)
            .expect("every stream has a model")
    }

    /// A payload of `0..=payload_bytes_max` bytes (empty and full-size ones more often
    /// than uniform), incompressible so artifacts fill Tier 1.
    fn payload(&mut self) -> Bytes {
        let max = u64::from(self.scenario.payload_bytes_max);
        let length = match self.rng.below(20) {
            0 | 1 => 0,
            2 => max,
            _ => self.rng.below(max + 1),
        };
        self.payload_count += 1;
        let mut filler = DetRng::new(
            self.scenario.seed ^ self.payload_count.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut bytes = Vec::with_capacity(length as usize);
        while (bytes.len() as u64) < length {
            bytes.extend_from_slice(&filler.next_u64().to_le_bytes());
        }
        bytes.truncate(length as usize);
        Bytes::from(bytes)
    }

    async fn run(&mut self) {
        self.trace(format!(
            "scenario: streams {:?}, payload <= {} B, sessions {}, faults {}, timed crashes {}, \
             retention {}, disk loss {}",
            self.scenario.streams,
            self.scenario.payload_bytes_max,
            self.scenario.sessions,
            self.scenario.faults,
            self.scenario.timed_crashes,
            self.scenario.retention,
            self.scenario.disk_loss
        ));
        for _ in 0..self.scenario.sessions {
            self.faulty_session().await;
            if self.violations() > 0 || self.stopped {
                return;
            }
        }
        self.faults = false;
        self.sim.set_faults_enabled(false);
        self.trace("faults off");
        self.final_session().await;
        if self.violations() == 0 && !self.stopped && self.scenario.disk_loss {
            self.disk_loss_session().await;
        }
    }

    /// One session with faults on.
    async fn faulty_session(&mut self) {
        self.count(|report| report.sessions += 1);
        self.ran(Checker::MachineInvariants);
        let store = Store::new(self.scenario.config, self.now_ms())
            .expect("the scenario's config is valid");
        let (sender, receiver) = command_channel::<Store>();
        let driver = Box::pin(driver::run(
            store,
            self.sim.ports.clone(),
            receiver,
            limits(),
        ));
        let crash_after_ms = (self.scenario.timed_crashes && self.rng.below(2) == 0)
            .then(|| 1 + self.rng.below(TIMED_CRASH_WITHIN_MS));
        let client = Box::pin(self.faulty_client(sender, crash_after_ms));
        let end = match select(driver, client).await {
            Either::Left(_) => None,
            // Dropping the driver here is the crash: whatever it was doing stops.
            Either::Right((end, _driver)) => Some(end),
        };
        let end = end.unwrap_or_else(|| {
            self.violation(Violation::new(
                Checker::MachineInvariants,
                "the driver stopped while the client still held a sender",
            ));
            SessionEnd::Violated
        });
        self.trace(format!("session ends: {end:?}"));
        match end {
            SessionEnd::Closed => self.count(|report| report.clean_closes += 1),
            SessionEnd::OpenFailed => self.count(|report| report.open_failures += 1),
            SessionEnd::Failed => self.count(|report| report.failed_sessions += 1),
            _ => {}
        }
        self.crash();
    }

    async fn faulty_client(
        &mut self,
        sender: CommandSender<Store>,
        crash_after_ms: Option<u64>,
    ) -> SessionEnd {
        let deadline_ms = crash_after_ms.unwrap_or(SESSION_DEADLINE_MS);
        let timed_crash = crash_after_ms.is_some();
        match timeout(
            Duration::from_millis(deadline_ms),
            self.faulty_body(&sender),
        )
        .await
        {
            Ok(end) => end,
            Err(_) if timed_crash => {
                self.trace("timed crash");
                SessionEnd::Crash
            }
            Err(_) => SessionEnd::Deadline,
        }
    }

    async fn faulty_body(&mut self, sender: &CommandSender<Store>) -> SessionEnd {
        if let Err(end) = self.open_all(sender).await {
            return end;
        }
        if self.restarted {
            self.restarted = false;
            if !self.verify_all(sender).await {
                return SessionEnd::Violated;
            }
        }
        let ops = 1 + self.rng.below(u64::from(self.scenario.ops_per_session_max));
        for _ in 0..ops {
            if let Some(end) = self.step(sender).await {
                return end;
            }
        }
        if self.rng.below(5) == 0 {
            if self.close(sender).await {
                SessionEnd::Closed
            } else {
                SessionEnd::Failed
            }
        } else {
            SessionEnd::Crash
        }
    }

    /// The process dies: background commands stop, their results are checked, the
    /// disk forgets what was not durable, and the durable state is checked.
    fn crash(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.apply_background();
        let report = self.sim.disk.crash(&mut self.crash_rng);
        self.sim.disk.check_invariants();
        self.count(|report| report.crashes += 1);
        self.trace(format!("crash: {report:?}"));
        if self.faults {
            self.lose_repairable_objects();
        }
        self.restarted = true;
        self.check_durable();
    }

    /// Tier 2 loses objects the store can repair: copies of sealed manifest chunks
    /// whose local file is durable (a reopened stream copies every local chunk below
    /// its writer's first chunk again, and a restore after a disk loss needs them).
    /// Segment objects and snapshots are never lost: the store has no repair for
    /// them yet (docs/testing.md).
    fn lose_repairable_objects(&mut self) {
        let disk = &self.sim.disk;
        let lost = self
            .sim
            .object_store
            .lose_objects_where(&mut self.loss_rng, |key| {
                let Ok(ObjectKey::ManifestChunk {
                    stream,
                    chunk_index,
                }) = ObjectKey::parse(key)
                else {
                    return false;
                };
                let path = manifest_dir(&stream).join(&chunk_file_name(chunk_index));
                disk.durable_file(path.as_str()).is_some()
            });
        if !lost.is_empty() {
            self.trace(format!("Tier 2 lost {lost:?}"));
        }
    }

    fn check_durable(&mut self) {
        let DurableCheck {
            violations,
            runs,
            skipped_streams,
        } = check_durable_state(&self.sim, &self.names);
        for (checker, count) in runs {
            *lock(&self.recorder)
                .report
                .checks
                .entry(checker)
                .or_default() += count;
        }
        self.count(|report| report.durable_streams_skipped += skipped_streams);
        for violation in violations {
            self.violation(violation);
        }
    }

    fn apply_background(&mut self) {
        let results = std::mem::take(&mut *lock(&self.background));
        for result in results {
            match result {
                Background::Durable {
                    stream,
                    offset,
                    reply,
                } => {
                    self.trace(format!(
                        "{stream} wait-durable {offset} -> {}",
                        describe(&reply)
                    ));
                    if let StoreReply::Durable { next_offset } = reply {
                        let model = self.model(&stream);
                        let checked = if next_offset <= offset {
                            Err(Violation::new(
                                Checker::DurableSurvives,
                                format!(
                                    "{stream}: WaitDurable({offset}) replied Durable({next_offset})"
                                ),
                            ))
                        } else {
                            model.on_durable(next_offset)
                        };
                        if let Err(violation) = checked {
                            self.violation(violation);
                        }
                    }
                }
                Background::Read {
                    stream,
                    offset,
                    reply,
                } => {
                    self.trace(format!(
                        "{stream} parked read {offset} -> {}",
                        describe(&reply)
                    ));
                    self.check_read_reply(&stream, offset, &reply, true);
                }
                Background::Snapshot { stream, reply } => {
                    self.trace(format!("{stream} snapshot -> {}", describe(&reply)));
                }
            }
        }
    }

    /// Checks the reply to a read of `offset`; returns whether it was a record.
    fn check_read_reply(
        &mut self,
        stream: &StreamName,
        offset: u64,
        reply: &StoreReply,
        parked: bool,
    ) -> bool {
        let faults = self.faults;
        let retention = self.scenario.retention;
        let model = self
            .models
            .get_mut(stream)
            .expect("every stream has a model");
        let result = match reply {
            StoreReply::Record(record) => {
                // A parked read may see the append whose reply the client had not
                // processed when the process died.
                if parked
                    && offset == model.next_offset
                    && model.append_in_flight.as_ref() == Some(&record.payload)
                {
                    Ok(())
                } else {
                    model.check_record(offset, record)
                }
            }
            StoreReply::WouldBlock(BackpressureKind::Tail) if offset < model.durable_floor => {
                Err(Violation::new(
                    Checker::DurableSurvives,
                    format!(
                        "{stream}: offset {offset} was acknowledged durable (floor {}), a read says \
                     WouldBlock(Tail)",
                        model.durable_floor
                    ),
                ))
            }
            StoreReply::WouldBlock(_) => Ok(()),
            // A parked read is answered `Closed` when the store closes under it.
            StoreReply::Error(StoreError::Closed) if parked => Ok(()),
            StoreReply::Error(StoreError::NotAppended { .. }) if offset >= model.next_offset => {
                Ok(())
            }
            // A parked read's answer may be older than what the client saw since.
            StoreReply::Error(StoreError::OffsetBelowStart { start_offset, .. })
                if retention && offset < *start_offset && parked =>
            {
                Ok(())
            }
            StoreReply::Error(StoreError::OffsetBelowStart { start_offset, .. })
                if retention && offset < *start_offset =>
            {
                model.on_start_offset(*start_offset)
            }
            StoreReply::Error(error)
                if faults && !matches!(error, StoreError::NotAppended { .. }) =>
            {
                self.count(|report| report.read_errors_under_faults += 1);
                return false;
            }
            other => Err(Violation::new(
                if offset < model.durable_floor {
                    Checker::DurableSurvives
                } else {
                    Checker::PrefixOnly
                },
                format!(
                    "{stream}: read of offset {offset} (next {}, durable floor {}) replied {}",
                    model.next_offset,
                    model.durable_floor,
                    describe(other)
                ),
            )),
        };
        let record = matches!(reply, StoreReply::Record(_));
        match reply {
            StoreReply::Record(_) => self.count(|report| report.records_read += 1),
            StoreReply::WouldBlock(BackpressureKind::Hydration) => {
                self.count(|report| report.cold_misses += 1)
            }
            _ => {}
        }
        self.ran(Checker::PrefixOnly);
        if let Err(violation) = result {
            self.violation(violation);
        }
        record
    }

    async fn call(&self, sender: &CommandSender<Store>, command: StoreCommand) -> StoreReply {
        sender
            .call(command)
            .await
            .expect("the driver runs as long as the client")
    }

    /// Opens every stream and checks what recovery yields. Under faults a failed open
    /// ends the session; without faults it is a violation.
    async fn open_all(&mut self, sender: &CommandSender<Store>) -> Result<(), SessionEnd> {
        for stream in self.names.clone() {
            let reply = self
                .call(
                    sender,
                    StoreCommand::OpenStream {
                        name: stream.to_string(),
                    },
                )
                .await;
            self.trace(format!("{stream} open -> {}", describe(&reply)));
            match reply {
                StoreReply::Opened { next_offset, .. } => {
                    self.ran(Checker::DurableSurvives);
                    self.ran(Checker::PrefixOnly);
                    if self.model(&stream).fsync_failed_since_recovery {
                        self.ran(Checker::FailedFsyncNotDurable);
                    }
                    let violations = self.model(&stream).on_reopened(next_offset);
                    let violated = !violations.is_empty();
                    for violation in violations {
                        self.violation(Violation::new(
                            violation.checker,
                            format!("{stream}: {}", violation.message),
                        ));
                    }
                    if violated {
                        return Err(SessionEnd::Violated);
                    }
                }
                StoreReply::Error(_) if self.faults => return Err(SessionEnd::OpenFailed),
                other => {
                    if let StoreReply::Error(error) = &other
                        && let Some(expected_offset) = torn_tail_refusal(error)
                    {
                        let floor = self.model(&stream).durable_floor;
                        if expected_offset < floor {
                            self.violation(Violation::new(
                                Checker::DurableSurvives,
                                format!(
                                    "{stream}: the record at offset {expected_offset}, acknowledged \
                                     durable (floor {floor}), is corrupt on disk: {error}"
                                ),
                            ));
                            return Err(SessionEnd::Violated);
                        }
                        if !self.strict {
                            self.known_issue(format!(
                                "{stream}: recovery refuses to truncate a torn tail at offset \
                                 {expected_offset}, none of it acknowledged durable (floor \
                                 {floor}): {error}"
                            ));
                            return Err(SessionEnd::KnownIssue);
                        }
                    }
                    self.violation(Violation::new(
                        Checker::Liveness,
                        format!("{stream}: open without faults replied {}", describe(&other)),
                    ));
                    return Err(SessionEnd::Violated);
                }
            }
        }
        Ok(())
    }

    /// Reads every record of every stream back (parking on hydrations and following
    /// prefetches) and checks it. Without faults every read must succeed in time.
    /// Returns false on a violation.
    async fn verify_all(&mut self, sender: &CommandSender<Store>) -> bool {
        let Some(metrics) = self.metrics(sender).await else {
            return self.faults;
        };
        for stream in self.names.clone() {
            let start_offset = metrics
                .streams
                .get(stream.as_str())
                .map_or(0, |figures| figures.start_offset);
            if let Err(violation) = self.model(&stream).on_start_offset(start_offset) {
                self.violation(violation);
                return false;
            }
            let next_offset = self.model(&stream).next_offset;
            let mut offset = start_offset;
            while offset < next_offset {
                let command = StoreCommand::Read {
                    stream: stream.clone(),
                    offset,
                    mode: ReadMode {
                        wait: true,
                        sequential: true,
                    },
                };
                let reply = timeout(
                    Duration::from_millis(FINAL_COMMAND_TIMEOUT_MS),
                    self.call(sender, command),
                )
                .await;
                let Ok(reply) = reply else {
                    if self.faults {
                        break;
                    }
                    self.violation(Violation::new(
                        Checker::Liveness,
                        format!("{stream}: reading offset {offset} back took over {FINAL_COMMAND_TIMEOUT_MS} ms"),
                    ));
                    return false;
                };
                self.ran(Checker::DurableSurvives);
                self.ran(Checker::TierBytesEqual);
                // Retention may run while the records are read back.
                if let StoreReply::Error(StoreError::OffsetBelowStart { start_offset, .. }) = &reply
                    && self.scenario.retention
                    && *start_offset > offset
                {
                    if let Err(violation) = self.model(&stream).on_start_offset(*start_offset) {
                        self.violation(violation);
                        return false;
                    }
                    offset = *start_offset;
                    continue;
                }
                let before = self.violations();
                if !self.check_read_reply(&stream, offset, &reply, false) {
                    self.trace(format!("{stream} verify {offset} -> {}", describe(&reply)));
                    if self.violations() > before {
                        return false;
                    }
                    if self.faults {
                        break;
                    }
                    self.violation(Violation::new(
                        Checker::DurableSurvives,
                        format!(
                            "{stream}: offset {offset} did not read back: {}",
                            describe(&reply)
                        ),
                    ));
                    return false;
                }
                offset += 1;
            }
            self.trace(format!("{stream} verified {start_offset}..{next_offset}"));
        }
        true
    }

    async fn metrics(&mut self, sender: &CommandSender<Store>) -> Option<StoreMetrics> {
        match self.call(sender, StoreCommand::Metrics).await {
            StoreReply::Metrics(metrics) => Some(*metrics),
            other => {
                self.violation(Violation::new(
                    Checker::MachineInvariants,
                    format!("Metrics replied {}", describe(&other)),
                ));
                None
            }
        }
    }

    /// A command failed. Under faults the session ends (the next one recovers);
    /// without, it is a violation.
    fn failed(&mut self, stream: &StreamName, what: &str, reply: &StoreReply) -> SessionEnd {
        if self.faults {
            if matches!(reply, StoreReply::Error(_)) {
                // A failed write or fsync may be why: a record lost now is reported
                // under checker 8 too.
                self.model(stream).fsync_failed_since_recovery = true;
            }
            SessionEnd::Failed
        } else {
            self.violation(Violation::new(
                Checker::Liveness,
                format!(
                    "{stream}: {what} without faults replied {}",
                    describe(reply)
                ),
            ));
            SessionEnd::Violated
        }
    }

    /// `DeleteSegments` below a segment id drawn from the ones the stream has had.
    async fn delete_segments(
        &mut self,
        sender: &CommandSender<Store>,
        stream: &StreamName,
    ) -> Option<SessionEnd> {
        let metrics = self.metrics(sender).await?;
        let figures = metrics.streams.get(stream.as_str())?;
        let known = figures.segments.total + figures.retention.segments_deleted;
        let before = self.rng.below(known + 1);
        let command = StoreCommand::DeleteSegments {
            stream: stream.clone(),
            before: SegmentId(before),
        };
        let reply = self.call(sender, command).await;
        self.trace(format!(
            "{stream} delete segments below {before} -> {}",
            describe(&reply)
        ));
        match reply {
            StoreReply::SegmentsDeleting { start_offset, .. } => {
                self.count(|report| report.operator_deletes += 1);
                let checked = self.model(stream).on_start_offset(start_offset);
                checked.err().map(|violation| {
                    self.violation(violation);
                    SessionEnd::Violated
                })
            }
            // Not uploaded yet, read, hydrated, or the active segment: refused whole.
            StoreReply::Error(StoreError::SegmentNotDeletable { .. }) => None,
            other => Some(self.failed(stream, "delete segments", &other)),
        }
    }

    async fn append(
        &mut self,
        sender: &CommandSender<Store>,
        stream: &StreamName,
        wait: bool,
    ) -> Option<SessionEnd> {
        let payload = self.payload();
        let ext_id = (self.rng.below(2) == 0).then_some(self.payload_count);
        self.model(stream).append_in_flight = Some(payload.clone());
        let reply = self
            .call(
                sender,
                StoreCommand::Append {
                    stream: stream.clone(),
                    payload: payload.clone(),
                    ext_id,
                    wait,
                },
            )
            .await;
        self.trace(format!(
            "{stream} append {} B (crc {:08x}, wait {wait}) -> {}",
            payload.len(),
            crc32fast::hash(&payload),
            describe(&reply)
        ));
        match reply {
            StoreReply::Appended(offset) => {
                self.count(|report| report.appends += 1);
                self.ran(Checker::DenseOffsets);
                if let Err(violation) = self.model(stream).on_appended(offset, payload) {
                    self.violation(violation);
                    return Some(SessionEnd::Violated);
                }
                None
            }
            StoreReply::WouldBlock(_) if !wait => {
                self.model(stream).append_in_flight = None;
                None
            }
            other => {
                self.model(stream).append_in_flight = None;
                Some(self.failed(stream, "append", &other))
            }
        }
    }

    async fn flush(
        &mut self,
        sender: &CommandSender<Store>,
        stream: &StreamName,
    ) -> Option<SessionEnd> {
        let reply = self
            .call(
                sender,
                StoreCommand::Flush {
                    stream: stream.clone(),
                },
            )
            .await;
        self.trace(format!("{stream} flush -> {}", describe(&reply)));
        match reply {
            StoreReply::Durable { next_offset } => {
                let model = self.model(stream);
                let appended = model.next_offset;
                let result = if next_offset < appended {
                    Err(Violation::new(
                        Checker::DurableSurvives,
                        format!(
                            "{stream}: Flush replied Durable({next_offset}) with {appended} appended"
                        ),
                    ))
                } else {
                    model.on_durable(next_offset)
                };
                self.ran(Checker::DurableSurvives);
                match result {
                    Ok(()) => None,
                    Err(violation) => {
                        self.violation(violation);
                        Some(SessionEnd::Violated)
                    }
                }
            }
            other => Some(self.failed(stream, "flush", &other)),
        }
    }

    fn spawn_background(&mut self, sender: &CommandSender<Store>, command: StoreCommand) {
        let sender = sender.clone();
        let results = self.background.clone();
        let task = madsim::task::spawn(async move {
            let (stream, offset) = match &command {
                StoreCommand::Read { stream, offset, .. }
                | StoreCommand::WaitDurable { stream, offset } => (stream.clone(), *offset),
                StoreCommand::Snapshot { stream } => (stream.clone(), 0),
                _ => {
                    unreachable!("only reads, durability waits and snapshots run in the background")
                }
            };
            let is_read = matches!(command, StoreCommand::Read { .. });
            let is_wait = matches!(command, StoreCommand::WaitDurable { .. });
            let Ok(reply) = sender.call(command).await else {
                return;
            };
            let result = if is_read {
                Background::Read {
                    stream,
                    offset,
                    reply,
                }
            } else if is_wait {
                Background::Durable {
                    stream,
                    offset,
                    reply,
                }
            } else {
                Background::Snapshot { stream, reply }
            };
            lock(&results).push(result);
        });
        self.tasks.push(task);
    }

    /// A background sequential reader: several offsets in order, parking as needed.
    fn spawn_sequential_reader(
        &mut self,
        sender: &CommandSender<Store>,
        stream: &StreamName,
        first: u64,
    ) {
        let sender = sender.clone();
        let results = self.background.clone();
        let stream = stream.clone();
        let task = madsim::task::spawn(async move {
            for offset in first..first + SEQUENTIAL_READ_RECORDS_MAX {
                let command = StoreCommand::Read {
                    stream: stream.clone(),
                    offset,
                    mode: ReadMode {
                        wait: true,
                        sequential: true,
                    },
                };
                let Ok(reply) = sender.call(command).await else {
                    return;
                };
                let record = matches!(reply, StoreReply::Record(_));
                lock(&results).push(Background::Read {
                    stream: stream.clone(),
                    offset,
                    reply,
                });
                if !record {
                    return;
                }
            }
        });
        self.tasks.push(task);
    }

    /// One random command.
    async fn step(&mut self, sender: &CommandSender<Store>) -> Option<SessionEnd> {
        let stream = self.names[self.rng.below(self.names.len() as u64) as usize].clone();
        let roll = self.rng.below(100);
        match roll {
            0..30 => self.append(sender, &stream, false).await,
            30..38 => {
                // A burst of appends without waiting: data volume, group commits.
                for _ in 0..1 + self.rng.below(APPEND_BURST_RECORDS_MAX) {
                    if let Some(end) = self.append(sender, &stream, false).await {
                        return Some(end);
                    }
                }
                None
            }
            38..45 => self.append(sender, &stream, true).await,
            45..51 => self.flush(sender, &stream).await,
            51..55 => {
                let next_offset = self.model(&stream).next_offset;
                if next_offset > 0 {
                    let offset = self.rng.below(next_offset);
                    self.spawn_background(sender, StoreCommand::WaitDurable { stream, offset });
                }
                None
            }
            55..75 => {
                let model = self.model(&stream);
                let (low, high) = (model.start_floor, model.next_offset + 2);
                let offset = low + self.rng.below(high - low);
                let mode = ReadMode {
                    wait: false,
                    sequential: self.rng.below(4) == 0,
                };
                let reply = self
                    .call(
                        sender,
                        StoreCommand::Read {
                            stream: stream.clone(),
                            offset,
                            mode,
                        },
                    )
                    .await;
                self.trace(format!("{stream} read {offset} -> {}", describe(&reply)));
                let before = self.violations();
                self.check_read_reply(&stream, offset, &reply, false);
                (self.violations() > before).then_some(SessionEnd::Violated)
            }
            75..78 => {
                // A tail follower parks at the end.
                let offset = self.model(&stream).next_offset;
                self.spawn_background(
                    sender,
                    StoreCommand::Read {
                        stream,
                        offset,
                        mode: ReadMode {
                            wait: true,
                            sequential: false,
                        },
                    },
                );
                None
            }
            78..80 => {
                let model = self.model(&stream);
                let (low, high) = (
                    model.start_floor,
                    model.next_offset.max(model.start_floor + 1),
                );
                let first = low + self.rng.below(high - low);
                self.spawn_sequential_reader(sender, &stream, first);
                None
            }
            80..83 => {
                let reply = self
                    .call(
                        sender,
                        StoreCommand::Seal {
                            stream: stream.clone(),
                        },
                    )
                    .await;
                self.trace(format!("{stream} seal -> {}", describe(&reply)));
                match reply {
                    StoreReply::Sealed { .. } | StoreReply::WouldBlock(_) => None,
                    other => Some(self.failed(&stream, "seal", &other)),
                }
            }
            83..85 => {
                self.spawn_background(sender, StoreCommand::Snapshot { stream });
                None
            }
            85..89 => {
                let metrics = self.metrics(sender).await?;
                self.check_metrics(&metrics).then_some(SessionEnd::Violated)
            }
            // Seeds with retention also delete as an operator would (the same model:
            // reads below the start offset are out of range).
            89..91 if self.scenario.retention => self.delete_segments(sender, &stream).await,
            _ => {
                let pause_ms = 1 + self.rng.below(3_000);
                self.trace(format!("sleep {pause_ms} ms"));
                sleep(Duration::from_millis(pause_ms)).await;
                None
            }
        }
    }

    /// Offsets in the metrics agree with the model. Returns true on a violation.
    fn check_metrics(&mut self, metrics: &StoreMetrics) -> bool {
        let before = self.violations();
        for stream in self.names.clone() {
            let Some(figures) = metrics.streams.get(stream.as_str()) else {
                continue;
            };
            self.ran(Checker::DenseOffsets);
            let model = self.model(&stream);
            let mut found = Vec::new();
            if figures.next_offset != model.next_offset {
                found.push(Violation::new(
                    Checker::DenseOffsets,
                    format!(
                        "{stream}: metrics next offset {}, the client was given {}",
                        figures.next_offset, model.next_offset
                    ),
                ));
            }
            if figures.durable_next_offset < model.durable_floor {
                found.push(Violation::new(
                    Checker::DurableSurvives,
                    format!(
                        "{stream}: durable watermark {} below the acknowledged {}",
                        figures.durable_next_offset, model.durable_floor
                    ),
                ));
            }
            if let Err(violation) = model.on_start_offset(figures.start_offset) {
                found.push(violation);
            }
            for violation in found {
                self.violation(violation);
            }
        }
        self.trace(format!(
            "metrics: tier0 {} B, tier1 {} B, uploads {}, evictions {}",
            metrics.tier0.total_bytes,
            metrics.tier1.total_bytes,
            metrics.tier2.uploads,
            metrics.tier0.evictions
        ));
        self.violations() > before
    }

    /// Flushes every stream, then closes. Returns whether `Closed` came back.
    async fn close(&mut self, sender: &CommandSender<Store>) -> bool {
        for stream in self.names.clone() {
            if self.flush(sender, &stream).await.is_some() {
                return false;
            }
        }
        let reply = self.call(sender, StoreCommand::Close).await;
        self.trace(format!("close -> {}", describe(&reply)));
        reply == StoreReply::Closed
    }

    /// Faults off: reopen, read everything back, append and seal, wait for every queue
    /// to drain, shut down and check that every sealed segment reached Tier 2.
    async fn final_session(&mut self) {
        self.count(|report| report.sessions += 1);
        self.ran(Checker::MachineInvariants);
        let store = Store::new(self.scenario.config, self.now_ms())
            .expect("the scenario's config is valid");
        let (sender, receiver) = command_channel::<Store>();
        let driver = Box::pin(driver::run(
            store,
            self.sim.ports.clone(),
            receiver,
            limits(),
        ));
        let client = Box::pin(self.final_client(sender));
        let finished = match select(driver, client).await {
            Either::Left(_) => None,
            Either::Right((ok, driver)) => Some((ok, driver)),
        };
        let Some((ok, driver)) = finished else {
            self.violation(Violation::new(
                Checker::MachineInvariants,
                "the driver stopped while the client still held a sender",
            ));
            return;
        };
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if !ok {
            return;
        }
        // Every sender is gone: the store shuts down and the loop ends.
        let Ok(store) = timeout(Duration::from_millis(FINAL_COMMAND_TIMEOUT_MS), driver).await
        else {
            self.violation(Violation::new(
                Checker::Liveness,
                format!("the store did not shut down within {FINAL_COMMAND_TIMEOUT_MS} ms"),
            ));
            return;
        };
        store.check_invariants();
        self.trace("store shut down");
        self.ran(Checker::Liveness);
        for stream in self.names.clone() {
            let Some(index) = store.manifest_index(&stream) else {
                continue;
            };
            for (segment_id, entry) in index.segments() {
                if matches!(entry.lifecycle, Lifecycle::Sealed(_))
                    && entry.tier2_object.is_none()
                    && entry.jobs.tier2_delete.is_none()
                {
                    self.violation(Violation::new(
                        Checker::Liveness,
                        format!("{stream}: sealed segment {segment_id} never reached Tier 2"),
                    ));
                }
            }
            self.check_chunk_copies(&stream);
        }
        drop(store);
        self.crash();
    }

    /// After the drain: every local manifest chunk but the newest (the writer's) has
    /// its Tier 2 copy, byte for byte, whatever Tier 2 lost before (see
    /// [`Simulation::lose_repairable_objects`]).
    fn check_chunk_copies(&mut self, stream: &StreamName) {
        self.ran(Checker::TierBytesEqual);
        let dir = manifest_dir(stream);
        let mut chunks: Vec<u64> = self
            .sim
            .disk
            .list_durable(dir.as_str())
            .iter()
            .filter_map(|name| parse_chunk_file_name(name))
            .collect();
        chunks.sort_unstable();
        chunks.pop();
        for chunk_index in chunks {
            let path = dir.join(&chunk_file_name(chunk_index));
            let local = self.sim.disk.durable_file(path.as_str());
            let key = manifest_chunk_object_key(stream, chunk_index);
            let copy = self.sim.object_store.object(&key);
            let problem = match (&local, &copy) {
                (Some(local), Some(copy)) if local.as_slice() == copy.as_ref() => continue,
                (_, None) => (Checker::Liveness, "is not in Tier 2"),
                _ => (Checker::TierBytesEqual, "differs from the local chunk"),
            };
            self.violation(Violation::new(
                problem.0,
                format!(
                    "{stream}: manifest chunk {chunk_index}'s copy {key} {}",
                    problem.1
                ),
            ));
        }
    }

    async fn final_client(&mut self, sender: CommandSender<Store>) -> bool {
        if self.open_all(&sender).await.is_err() {
            return false;
        }
        if !self.verify_all(&sender).await {
            return false;
        }
        for stream in self.names.clone() {
            for _ in 0..3 {
                if self.append(&sender, &stream, true).await.is_some() {
                    return false;
                }
            }
            if self.flush(&sender, &stream).await.is_some() {
                return false;
            }
            let reply = self
                .call(
                    &sender,
                    StoreCommand::Seal {
                        stream: stream.clone(),
                    },
                )
                .await;
            self.trace(format!("{stream} seal -> {}", describe(&reply)));
            if !matches!(reply, StoreReply::Sealed { .. }) {
                self.violation(Violation::new(
                    Checker::Liveness,
                    format!("{stream}: seal without faults replied {}", describe(&reply)),
                ));
                return false;
            }
        }
        let started_ms = self.now_ms();
        let mut quiet_polls = 0;
        let metrics = loop {
            let Some(metrics) = self.metrics(&sender).await else {
                return false;
            };
            if self.check_metrics(&metrics) {
                return false;
            }
            quiet_polls = if drained(&metrics) {
                quiet_polls + 1
            } else {
                0
            };
            if quiet_polls >= 3 {
                break metrics;
            }
            if self.now_ms() - started_ms > LIVENESS_DEADLINE_MS {
                self.violation(Violation::new(
                    Checker::Liveness,
                    format!(
                        "queues still busy {LIVENESS_DEADLINE_MS} ms after faults stopped: tier0 \
                         {:?}, tier1 {:?}, tier2 {:?}",
                        metrics.tier0, metrics.tier1, metrics.tier2
                    ),
                ));
                return false;
            }
            sleep(Duration::from_millis(1_000)).await;
        };
        self.trace(format!("drained after {} ms", self.now_ms() - started_ms));
        self.check_budgets(&metrics);
        self.violations() == 0
    }

    /// Tier 0 holds at most its budget plus the active segments; Tier 1 at most its
    /// budget once everything is in Tier 2.
    fn check_budgets(&mut self, metrics: &StoreMetrics) {
        self.ran(Checker::Budgets);
        let config = &self.scenario.config;
        let active_bytes_max = self.names.len() as u64
            * (config.stream.segment_target_bytes
                + u64::from(self.scenario.payload_bytes_max)
                + 64
                + SEGMENT_HEADER_BYTES as u64
                + SEGMENT_FOOTER_BYTES as u64);
        if metrics.tier0.total_bytes > config.tier0.cluster_max_bytes + active_bytes_max {
            self.violation(Violation::new(
                Checker::Budgets,
                format!(
                    "Tier 0 holds {} bytes, budget {} plus {} for active segments",
                    metrics.tier0.total_bytes, config.tier0.cluster_max_bytes, active_bytes_max
                ),
            ));
        }
        if metrics.tier1.total_bytes > config.tier1.max_bytes {
            self.violation(Violation::new(
                Checker::Budgets,
                format!(
                    "Tier 1 holds {} bytes with everything in Tier 2, budget {}",
                    metrics.tier1.total_bytes, config.tier1.max_bytes
                ),
            ));
        }
    }

    /// The whole disk is lost; Tier 2 survives. Reopen and see what comes back.
    async fn disk_loss_session(&mut self) {
        self.sim.disk.wipe();
        self.trace("disk lost");
        self.count(|report| report.sessions += 1);
        let store = Store::new(self.scenario.config, self.now_ms())
            .expect("the scenario's config is valid");
        let (sender, receiver) = command_channel::<Store>();
        let driver = Box::pin(driver::run(
            store,
            self.sim.ports.clone(),
            receiver,
            limits(),
        ));
        let client = Box::pin(self.disk_loss_client(sender));
        let outcome = match select(driver, client).await {
            Either::Left(_) => DiskLoss::NotPlanned,
            Either::Right((outcome, _driver)) => outcome,
        };
        self.trace(format!("disk loss: {outcome:?}"));
        self.count(|report| report.disk_loss = outcome);
    }

    async fn disk_loss_client(&mut self, sender: CommandSender<Store>) -> DiskLoss {
        let mut outcome = DiskLoss::Restored;
        for stream in self.names.clone() {
            let reply = self
                .call(
                    &sender,
                    StoreCommand::OpenStream {
                        name: stream.to_string(),
                    },
                )
                .await;
            self.trace(format!(
                "{stream} open after disk loss -> {}",
                describe(&reply)
            ));
            let expected = self.model(&stream).next_offset;
            match reply {
                StoreReply::Opened { next_offset, .. } if next_offset == expected => {}
                StoreReply::Opened { next_offset: 0, .. } => outcome = DiskLoss::NotSupported,
                // Known issue (docs/testing.md): in rare seeds with retention on, a
                // restore finds a segment object missing between two present ones and
                // refuses with a typed error naming it (safe, but the stream stays
                // unavailable until an operator acts). A violation with --strict.
                StoreReply::Error(StoreError::Recovery { reason, .. }) if !self.strict => {
                    self.known_issue(format!(
                        "{stream}: restore from Tier 2 after a disk loss refused: {reason}"
                    ));
                    return DiskLoss::Refused;
                }
                other => {
                    self.violation(Violation::new(
                        Checker::DurableSurvives,
                        format!(
                            "{stream}: after a disk loss the open replied {}, {expected} records were \
                             durable in Tier 2",
                            describe(&other)
                        ),
                    ));
                    return DiskLoss::Restored;
                }
            }
        }
        if outcome == DiskLoss::Restored {
            self.verify_all(&sender).await;
        }
        outcome
    }
}

/// The offset at which a segment recovery refused to truncate a bad frame followed by
/// a valid one (the store's tail scan treats that as corruption, never as a torn
/// tail), if `error` is that refusal.
fn torn_tail_refusal(error: &StoreError) -> Option<u64> {
    let text = error.to_string();
    if !text.contains("refusing to truncate") {
        return None;
    }
    let (_, after) = text.split_once("(expected offset ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Nothing queued or running in any tier, and no retention delete pending.
fn drained(metrics: &StoreMetrics) -> bool {
    let tier0 = &metrics.tier0;
    let tier1 = &metrics.tier1;
    let tier2 = &metrics.tier2;
    tier0.activation_queue_depth == 0
        && tier0.evicting_bytes == 0
        && tier1.compression_queue_depth == 0
        && tier1.compressions_in_flight == 0
        && tier1.hydration_queue_depth == 0
        && tier1.hydrations_in_flight == 0
        && tier2.upload_queue_depth == 0
        && tier2.uploads_in_flight == 0
        && tier2.delete_queue_depth == 0
        && tier2.deletes_in_flight == 0
        && tier2.fetch_queue_depth == 0
        && tier2.fetches_in_flight == 0
        && metrics
            .streams
            .values()
            .all(|stream| stream.retention.deletes_pending == 0)
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs one seed and reports what it did and found. A panic (a broken invariant in
/// the store, the driver or the simulator) is a checker-10 violation.
#[must_use]
pub fn run_seed(seed: u64, options: RunOptions) -> SeedReport {
    let scenario = Scenario::from_seed(seed, options.size);
    let recorder = Arc::new(Mutex::new(Recorder {
        keep_trace: options.keep_trace,
        report: SeedReport {
            seed,
            trace_hash: 0xCBF2_9CE4_8422_2325,
            ..SeedReport::default()
        },
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on_seed_run(seed, scenario, recorder.clone(), options.strict)
    }));
    let mut recorder = lock(&recorder);
    if let Err(payload) = result {
        let message = panic_message(payload.as_ref());
        recorder.line(SIM_CLOCK_START_MS, format!("PANIC {message}"));
        recorder.report.violations.push(Violation::new(
            Checker::MachineInvariants,
            format!("panic: {message}"),
        ));
    }
    std::mem::take(&mut recorder.report)
}

fn block_on_seed_run(seed: u64, scenario: Scenario, recorder: Arc<Mutex<Recorder>>, strict: bool) {
    crate::runtime::block_on_seed(seed, async move {
        let mut simulation = Simulation::new(scenario, recorder.clone());
        simulation.strict = strict;
        simulation.run().await;
        let elapsed_ms = simulation.now_ms() - SIM_CLOCK_START_MS;
        let disk = simulation.sim.disk.stats();
        let store = simulation.sim.object_store.stats();
        simulation.trace(format!("disk faults {disk:?}"));
        simulation.trace(format!("store faults {store:?}"));
        let mut recorder = lock(&recorder);
        recorder.report.disk = disk;
        recorder.report.store = store;
        recorder.report.sim_elapsed_ms = elapsed_ms;
    });
}
