//! The one loop that pumps a sans-IO machine, written once against small port traits.
//!
//! A [`Machine`] never does IO: it takes commands, completions and timeouts as inputs
//! and yields IO requests, replies and a next deadline as outputs. [`run`] is the only
//! code that connects those outputs to the world, through five ports:
//!
//! | port | carries out |
//! | --- | --- |
//! | [`DiskPort`] | create, write at, read at, truncate, sync file, sync dir, rename, remove, list, length |
//! | [`ObjectStorePort`] | put (plain, if absent, if match), get, ranged get, head, delete, list |
//! | [`ClockPort`] | now, sleep until a deadline |
//! | [`SpawnPort`] | runs one IO request as a task of its own |
//! | [`CpuPort`] | compression jobs (a blocking pool in production, inline in simulation) |
//!
//! io-real plugs in tokio, the filesystem and `object_store`; io-sim plugs in its
//! simulated disk and object store under madsim. This module contains no runtime and
//! no `std::fs`, so the simulator runs exactly the loop production runs.
//!
//! One step of the loop: drain the machine's replies and requests; start requests up
//! to the per-kind in-flight limits ([`DriverLimits`]); then wait for whichever comes
//! first: an IO completion, a command from the embedding API, or the machine's next
//! deadline; feed it in; repeat. When several are ready, a completion goes first, but
//! never twice in a row ahead of a waiting command, so neither starves the other. After a deadline the loop yields to its executor
//! once: a clock whose sleeps end at once (a deadline already past, a test's jumping
//! clock) would otherwise keep it from ever returning `Pending` and starve the tasks
//! sharing its thread, the callers waiting for replies included. When every command
//! sender is gone the machine is told to shut down, and the loop ends once it says it
//! is finished and no IO is in flight.
//!
//! **Invariants**
//! - Every request the machine emits is carried out exactly once and its completion is
//!   delivered exactly once, with the request's id.
//! - At most `*_in_flight_max` requests of each kind run at once; the rest wait in FIFO
//!   order.
//! - A command that is ready waits behind at most one completion.
//! - The machine is only touched by this loop, one input at a time, and drained
//!   (`poll_reply`, `poll_request`) after every input.
//! - With `check_invariants` set, `Machine::check_invariants` runs after every input.

use crate::io::{
    CpuJob, CpuResult, DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoId, IoRequest,
    LocalPath, ObjectCompletion, ObjectErrorKind, ObjectMeta, ObjectRequest, PutMode,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use thiserror::Error;

/// The local disk.
#[async_trait]
pub trait DiskPort: Send + Sync + 'static {
    async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind>;
    /// Creates a directory and its missing parents; an existing one is fine.
    async fn create_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind>;
    async fn write_at(
        &self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind>;
    async fn read_at(
        &self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind>;
    async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind>;
    async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind>;
    async fn sync_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind>;
    async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind>;
    async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind>;
    /// File names in a directory, sorted; a missing directory lists as empty.
    async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind>;
    async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind>;
}

/// The object store (Tier 2).
#[async_trait]
pub trait ObjectStorePort: Send + Sync + 'static {
    /// Returns the new object's etag, if the store gives one.
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, ObjectErrorKind>;
    /// The whole object and its size.
    async fn get(&self, key: &str) -> Result<Bytes, ObjectErrorKind>;
    /// Bytes `start..end` (clamped to the object) and the object's total size.
    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<(Bytes, u64), ObjectErrorKind>;
    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectErrorKind>;
    /// Deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), ObjectErrorKind>;
    /// Keys under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind>;
}

/// Time. Milliseconds since an epoch the port chooses (wall clock in production,
/// simulated time under madsim).
#[async_trait]
pub trait ClockPort: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
    /// Returns at or after `deadline_ms`.
    async fn sleep_until(&self, deadline_ms: u64);
}

/// Runs a future as a task of its own.
pub trait SpawnPort: Send + Sync + 'static {
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// CPU-bound jobs.
#[async_trait]
pub trait CpuPort: Send + Sync + 'static {
    async fn run(&self, job: CpuJob) -> CpuResult;
}

/// The ports a driver runs a machine against.
#[derive(Clone)]
pub struct Ports {
    pub disk: Arc<dyn DiskPort>,
    pub object_store: Arc<dyn ObjectStorePort>,
    pub clock: Arc<dyn ClockPort>,
    pub spawn: Arc<dyn SpawnPort>,
    pub cpu: Arc<dyn CpuPort>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports { .. }")
    }
}

/// Identifies a command so its reply can find the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandToken(pub u64);

/// A sans-IO machine the driver can pump. See the module doc for the call order; the
/// driver drains `poll_reply` and `poll_request` until `None` after every input.
pub trait Machine: Send + 'static {
    /// What the embedding API asks of the machine.
    type Command: Send + 'static;
    /// The machine's answer to one command.
    type Reply: Send + 'static;

    /// A command from the API. Its reply comes later from `poll_reply` with `token`.
    fn handle_command(&mut self, now_ms: u64, token: CommandToken, command: Self::Command);
    fn poll_reply(&mut self) -> Option<(CommandToken, Self::Reply)>;
    fn poll_request(&mut self) -> Option<(IoId, IoRequest)>;
    fn handle_completion(&mut self, now_ms: u64, id: IoId, completion: IoCompletion);
    /// The next deadline, if any.
    fn poll_timeout(&self) -> Option<u64>;
    /// Called at or after the deadline `poll_timeout` returned.
    fn handle_timeout(&mut self, now_ms: u64);
    /// No more commands will come: finish what is under way.
    fn handle_shutdown(&mut self, now_ms: u64);
    /// After shutdown: nothing is left to do. The loop ends once no IO is in flight.
    fn is_finished(&self) -> bool;
    fn check_invariants(&self);
}

/// How many requests of each kind may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverLimits {
    pub disk_in_flight_max: u32,
    pub object_in_flight_max: u32,
    pub cpu_in_flight_max: u32,
    /// Run `Machine::check_invariants` after every input (tests and the simulator).
    pub check_invariants: bool,
}

impl Default for DriverLimits {
    fn default() -> Self {
        DriverLimits {
            disk_in_flight_max: 64,
            object_in_flight_max: 32,
            cpu_in_flight_max: 2,
            check_invariants: cfg!(debug_assertions),
        }
    }
}

/// The driver stopped before it could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the AOF2 driver has stopped")]
pub struct DriverStopped;

type Envelope<M> = (
    <M as Machine>::Command,
    oneshot::Sender<<M as Machine>::Reply>,
);

/// Sends commands to a running driver. Clone it freely; the driver shuts the machine
/// down when the last clone is dropped.
pub struct CommandSender<M: Machine> {
    sender: mpsc::UnboundedSender<Envelope<M>>,
}

impl<M: Machine> Clone for CommandSender<M> {
    fn clone(&self) -> Self {
        CommandSender {
            sender: self.sender.clone(),
        }
    }
}

impl<M: Machine> std::fmt::Debug for CommandSender<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandSender { .. }")
    }
}

impl<M: Machine> CommandSender<M> {
    /// Sends `command` and waits for the machine's reply.
    pub async fn call(&self, command: M::Command) -> Result<M::Reply, DriverStopped> {
        let (reply_sender, reply) = oneshot::channel();
        self.sender
            .unbounded_send((command, reply_sender))
            .map_err(|_| DriverStopped)?;
        reply.await.map_err(|_| DriverStopped)
    }
}

/// The receiving end, handed to [`run`].
pub struct CommandReceiver<M: Machine> {
    receiver: mpsc::UnboundedReceiver<Envelope<M>>,
}

impl<M: Machine> std::fmt::Debug for CommandReceiver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandReceiver { .. }")
    }
}

/// A command channel for a machine of type `M`.
#[must_use]
pub fn command_channel<M: Machine>() -> (CommandSender<M>, CommandReceiver<M>) {
    let (sender, receiver) = mpsc::unbounded();
    (CommandSender { sender }, CommandReceiver { receiver })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Disk,
    Object,
    Cpu,
}

fn kind_of(request: &IoRequest) -> Kind {
    match request {
        IoRequest::Disk(_) => Kind::Disk,
        IoRequest::Object(_) => Kind::Object,
        IoRequest::Cpu(_) => Kind::Cpu,
    }
}

/// Requests waiting for an in-flight slot, and the count running, per kind.
struct Scheduler {
    waiting: BTreeMap<Kind, VecDeque<(IoId, IoRequest)>>,
    running: BTreeMap<Kind, u32>,
    limits: DriverLimits,
}

impl Scheduler {
    fn limit(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Disk => self.limits.disk_in_flight_max,
            Kind::Object => self.limits.object_in_flight_max,
            Kind::Cpu => self.limits.cpu_in_flight_max,
        }
    }

    fn in_flight(&self) -> u32 {
        self.running.values().sum()
    }

    fn push(&mut self, id: IoId, request: IoRequest) {
        self.waiting
            .entry(kind_of(&request))
            .or_default()
            .push_back((id, request));
    }

    /// The next request that may start now.
    fn next_ready(&mut self) -> Option<(IoId, IoRequest)> {
        for kind in [Kind::Disk, Kind::Object, Kind::Cpu] {
            let running = self.running.get(&kind).copied().unwrap_or(0);
            if running >= self.limit(kind) {
                continue;
            }
            if let Some(next) = self.waiting.get_mut(&kind).and_then(VecDeque::pop_front) {
                *self.running.entry(kind).or_default() += 1;
                return Some(next);
            }
        }
        None
    }

    fn finished(&mut self, kind: Kind) {
        let running = self
            .running
            .get_mut(&kind)
            .expect("a finished request was running");
        assert!(*running > 0, "a finished request was counted as running");
        *running -= 1;
    }
}

/// What woke the loop.
enum Wake<M: Machine> {
    Completion(IoId, Kind, IoCompletion),
    Command(Envelope<M>),
    CommandsClosed,
    Deadline,
}

/// Pumps `machine` until every command sender is gone and the machine has finished.
/// Returns the machine, so tests and the simulator can inspect its final state.
pub async fn run<M: Machine>(
    mut machine: M,
    ports: Ports,
    mut commands: CommandReceiver<M>,
    limits: DriverLimits,
) -> M {
    assert!(
        limits.disk_in_flight_max > 0,
        "disk_in_flight_max must be positive"
    );
    assert!(
        limits.object_in_flight_max > 0,
        "object_in_flight_max must be positive"
    );
    assert!(
        limits.cpu_in_flight_max > 0,
        "cpu_in_flight_max must be positive"
    );
    let mut scheduler = Scheduler {
        waiting: BTreeMap::new(),
        running: BTreeMap::new(),
        limits,
    };
    let (completion_sender, mut completions) = mpsc::unbounded::<(IoId, Kind, IoCompletion)>();
    let mut replies: BTreeMap<CommandToken, oneshot::Sender<M::Reply>> = BTreeMap::new();
    let mut next_token = 0u64;
    let mut commands_open = true;
    // Whether a ready command is taken before a ready completion (see the wait below).
    let mut commands_turn = false;

    loop {
        // Drain the machine.
        while let Some((token, reply)) = machine.poll_reply() {
            let sender = replies
                .remove(&token)
                .expect("a reply answers a command that is waiting");
            // The caller may have given up waiting; that is not the machine's concern.
            let _ = sender.send(reply);
        }
        while let Some((id, request)) = machine.poll_request() {
            scheduler.push(id, request);
        }
        while let Some((id, request)) = scheduler.next_ready() {
            let kind = kind_of(&request);
            let ports = ports.clone();
            let sender = completion_sender.clone();
            ports.spawn.clone().spawn(
                async move {
                    let completion = execute(&ports, request).await;
                    // The loop outlives every task it spawns unless it was dropped.
                    let _ = sender.unbounded_send((id, kind, completion));
                }
                .boxed(),
            );
        }
        if !commands_open && machine.is_finished() && scheduler.in_flight() == 0 {
            assert!(
                replies.is_empty(),
                "a finished machine left commands unanswered"
            );
            return machine;
        }

        let deadline = machine.poll_timeout();
        assert!(
            commands_open || scheduler.in_flight() > 0 || deadline.is_some(),
            "the machine stalled: shut down, not finished, no IO in flight and no deadline"
        );
        let wake = {
            let completion = completions.next().map(|next| {
                let (id, kind, completion) = next.expect("the loop holds a completion sender");
                Wake::<M>::Completion(id, kind, completion)
            });
            let command = async {
                if commands_open {
                    match commands.receiver.next().await {
                        Some(envelope) => Wake::Command(envelope),
                        None => Wake::CommandsClosed,
                    }
                } else {
                    futures::future::pending().await
                }
            };
            let timer = async {
                match deadline {
                    Some(deadline_ms) => {
                        ports.clock.sleep_until(deadline_ms).await;
                        Wake::Deadline
                    }
                    None => futures::future::pending().await,
                }
            };
            futures::pin_mut!(completion, command, timer);
            // Completions first (they free in-flight slots), except that a waiting
            // command goes first after each completion: a steady stream of
            // completions never starves the callers, nor commands the IO.
            if commands_turn {
                futures::select_biased! {
                    wake = command.fuse() => wake,
                    wake = completion.fuse() => wake,
                    wake = timer.fuse() => wake,
                }
            } else {
                futures::select_biased! {
                    wake = completion.fuse() => wake,
                    wake = command.fuse() => wake,
                    wake = timer.fuse() => wake,
                }
            }
        };
        commands_turn = matches!(wake, Wake::Completion(..));

        let now_ms = ports.clock.now_ms();
        let woke_by_deadline = matches!(wake, Wake::Deadline);
        match wake {
            Wake::Completion(id, kind, completion) => {
                scheduler.finished(kind);
                machine.handle_completion(now_ms, id, completion);
            }
            Wake::Command((command, reply)) => {
                let token = CommandToken(next_token);
                next_token += 1;
                replies.insert(token, reply);
                machine.handle_command(now_ms, token, command);
            }
            Wake::CommandsClosed => {
                commands_open = false;
                machine.handle_shutdown(now_ms);
            }
            Wake::Deadline => machine.handle_timeout(now_ms),
        }
        if limits.check_invariants {
            machine.check_invariants();
        }
        if woke_by_deadline {
            // Never starve the executor's other tasks (see the module doc).
            yield_now().await;
        }
    }
}

/// Returns `Pending` once (waking itself at once), so the executor runs other tasks.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Carries out one request on the ports.
pub async fn execute(ports: &Ports, request: IoRequest) -> IoCompletion {
    match request {
        IoRequest::Disk(request) => {
            IoCompletion::Disk(execute_disk(ports.disk.as_ref(), request).await)
        }
        IoRequest::Object(request) => {
            IoCompletion::Object(execute_object(ports.object_store.as_ref(), request).await)
        }
        IoRequest::Cpu(job) => IoCompletion::Cpu(ports.cpu.run(job).await),
    }
}

/// Carries out one disk request.
pub async fn execute_disk(disk: &dyn DiskPort, request: DiskRequest) -> DiskCompletion {
    let done = |result: Result<(), DiskErrorKind>| match result {
        Ok(()) => DiskCompletion::Done,
        Err(kind) => DiskCompletion::Failed(kind),
    };
    match request {
        DiskRequest::Create { path } => done(disk.create(&path).await),
        DiskRequest::CreateDir { path } => done(disk.create_dir(&path).await),
        DiskRequest::WriteAt {
            path,
            offset,
            bytes,
        } => done(disk.write_at(&path, offset, bytes).await),
        DiskRequest::ReadAt {
            path,
            offset,
            length,
        } => match disk.read_at(&path, offset, length).await {
            Ok(bytes) => DiskCompletion::Read(bytes),
            Err(kind) => DiskCompletion::Failed(kind),
        },
        DiskRequest::Truncate { path, length } => done(disk.truncate(&path, length).await),
        DiskRequest::SyncFile { path } => done(disk.sync_file(&path).await),
        DiskRequest::SyncDir { path } => done(disk.sync_dir(&path).await),
        DiskRequest::Rename { from, to } => done(disk.rename(&from, &to).await),
        DiskRequest::Remove { path } => done(disk.remove(&path).await),
        DiskRequest::ListDir { path } => match disk.list(&path).await {
            Ok(names) => DiskCompletion::Listed(names),
            Err(kind) => DiskCompletion::Failed(kind),
        },
        DiskRequest::Length { path } => match disk.length(&path).await {
            Ok(length) => DiskCompletion::Length(length),
            Err(kind) => DiskCompletion::Failed(kind),
        },
    }
}

/// Carries out one object-store request.
pub async fn execute_object(
    store: &dyn ObjectStorePort,
    request: ObjectRequest,
) -> ObjectCompletion {
    let result = match request {
        ObjectRequest::Put { key, bytes, mode } => store
            .put(&key, bytes, mode)
            .await
            .map(|etag| ObjectCompletion::Put { etag }),
        ObjectRequest::Get { key } => store.get(&key).await.map(|bytes| ObjectCompletion::Got {
            object_size: bytes.len() as u64,
            bytes,
        }),
        ObjectRequest::GetRange { key, start, end } => store
            .get_range(&key, start, end)
            .await
            .map(|(bytes, object_size)| ObjectCompletion::Got { bytes, object_size }),
        ObjectRequest::Head { key } => store.head(&key).await.map(ObjectCompletion::Head),
        ObjectRequest::Delete { key } => {
            store.delete(&key).await.map(|()| ObjectCompletion::Deleted)
        }
        ObjectRequest::List { prefix } => store.list(&prefix).await.map(ObjectCompletion::Listed),
    };
    result.unwrap_or_else(ObjectCompletion::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_ports::MemoryPorts;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Commands of the toy machine.
    #[derive(Debug)]
    enum Command {
        /// Create, write and fsync a file; reply with its length.
        WriteFile { name: &'static str, bytes: Bytes },
        /// Put an object; reply with its etag.
        Put { key: &'static str, bytes: Bytes },
        /// Reply once the clock reaches `at_ms`.
        WakeAt { at_ms: u64 },
        /// Put `count` objects at once; reply at once, not when they are done.
        Flood { count: u32 },
        /// Reply at once with the number of completions handled so far.
        Ping,
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Reply {
        Written(u64),
        Put(Option<String>),
        Woke(u64),
        Flooding,
        Pong { completions: u64 },
        Failed,
    }

    #[derive(Debug)]
    enum Step {
        Created(CommandToken, LocalPath, Bytes),
        Wrote(CommandToken, LocalPath, u64),
        Synced(CommandToken, u64),
        Put(CommandToken),
        Flooded,
    }

    /// A small machine: each file write is three dependent requests; puts are one;
    /// wake-ups are timers.
    #[derive(Debug, Default)]
    struct ToyMachine {
        next_id: u64,
        requests: VecDeque<(IoId, IoRequest)>,
        steps: BTreeMap<IoId, Step>,
        replies: VecDeque<(CommandToken, Reply)>,
        timers: BTreeMap<u64, Vec<CommandToken>>,
        shut_down: bool,
        inputs: u64,
        completions: u64,
    }

    impl ToyMachine {
        fn request(&mut self, request: IoRequest, step: Step) {
            let id = IoId(self.next_id);
            self.next_id += 1;
            self.requests.push_back((id, request));
            self.steps.insert(id, step);
        }
    }

    impl Machine for ToyMachine {
        type Command = Command;
        type Reply = Reply;

        fn handle_command(&mut self, _now_ms: u64, token: CommandToken, command: Command) {
            self.inputs += 1;
            match command {
                Command::WriteFile { name, bytes } => {
                    let path = LocalPath::from_components(&["files", name]);
                    self.request(
                        IoRequest::Disk(DiskRequest::Create { path: path.clone() }),
                        Step::Created(token, path, bytes),
                    );
                }
                Command::Put { key, bytes } => self.request(
                    IoRequest::Object(ObjectRequest::Put {
                        key: key.to_owned(),
                        bytes,
                        mode: PutMode::IfAbsent,
                    }),
                    Step::Put(token),
                ),
                Command::WakeAt { at_ms } => self.timers.entry(at_ms).or_default().push(token),
                Command::Flood { count } => {
                    for i in 0..count {
                        self.request(
                            IoRequest::Object(ObjectRequest::Put {
                                key: format!("flood/{i}"),
                                bytes: Bytes::new(),
                                mode: PutMode::Overwrite,
                            }),
                            Step::Flooded,
                        );
                    }
                    self.replies.push_back((token, Reply::Flooding));
                }
                Command::Ping => {
                    let completions = self.completions;
                    self.replies.push_back((token, Reply::Pong { completions }));
                }
            }
        }

        fn poll_reply(&mut self) -> Option<(CommandToken, Reply)> {
            self.replies.pop_front()
        }

        fn poll_request(&mut self) -> Option<(IoId, IoRequest)> {
            self.requests.pop_front()
        }

        fn handle_completion(&mut self, _now_ms: u64, id: IoId, completion: IoCompletion) {
            self.inputs += 1;
            self.completions += 1;
            let step = self
                .steps
                .remove(&id)
                .expect("completion of a request we made");
            match (step, completion) {
                (Step::Created(token, path, bytes), IoCompletion::Disk(DiskCompletion::Done)) => {
                    let length = bytes.len() as u64;
                    self.request(
                        IoRequest::Disk(DiskRequest::WriteAt {
                            path: path.clone(),
                            offset: 0,
                            bytes,
                        }),
                        Step::Wrote(token, path, length),
                    );
                }
                (Step::Wrote(token, path, length), IoCompletion::Disk(DiskCompletion::Done)) => {
                    self.request(
                        IoRequest::Disk(DiskRequest::SyncFile { path }),
                        Step::Synced(token, length),
                    );
                }
                (Step::Synced(token, length), IoCompletion::Disk(DiskCompletion::Done)) => {
                    self.replies.push_back((token, Reply::Written(length)));
                }
                (Step::Put(token), IoCompletion::Object(ObjectCompletion::Put { etag })) => {
                    self.replies.push_back((token, Reply::Put(etag)));
                }
                (Step::Flooded, completion) => {
                    assert!(
                        matches!(
                            completion,
                            IoCompletion::Object(ObjectCompletion::Put { .. })
                        ),
                        "a flood put succeeds: {completion:?}"
                    );
                }
                (
                    Step::Created(token, ..)
                    | Step::Wrote(token, ..)
                    | Step::Synced(token, _)
                    | Step::Put(token),
                    _,
                ) => {
                    self.replies.push_back((token, Reply::Failed));
                }
            }
        }

        fn poll_timeout(&self) -> Option<u64> {
            self.timers.keys().next().copied()
        }

        fn handle_timeout(&mut self, now_ms: u64) {
            self.inputs += 1;
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
            self.shut_down && self.steps.is_empty() && self.timers.is_empty()
        }

        fn check_invariants(&self) {
            assert!(
                self.requests.len() <= self.steps.len(),
                "every queued request has a step"
            );
        }
    }

    /// A disk port that counts how many requests run at once.
    struct CountingDisk {
        inner: Arc<dyn DiskPort>,
        running: AtomicU32,
        peak: Arc<AtomicU32>,
    }

    impl CountingDisk {
        async fn counted<T>(&self, work: impl std::future::Future<Output = T>) -> T {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            // Hold the pool thread, so requests the driver starts together overlap.
            #[allow(clippy::disallowed_methods)] // a test port may block its own thread
            std::thread::sleep(std::time::Duration::from_millis(3));
            let out = work.await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            out
        }
    }

    #[async_trait]
    impl DiskPort for CountingDisk {
        async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.create(path)).await
        }
        async fn create_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.create_dir(path)).await
        }
        async fn write_at(
            &self,
            path: &LocalPath,
            offset: u64,
            bytes: Bytes,
        ) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.write_at(path, offset, bytes)).await
        }
        async fn read_at(
            &self,
            path: &LocalPath,
            offset: u64,
            length: u64,
        ) -> Result<Bytes, DiskErrorKind> {
            self.counted(self.inner.read_at(path, offset, length)).await
        }
        async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.truncate(path, length)).await
        }
        async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.sync_file(path)).await
        }
        async fn sync_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.sync_dir(path)).await
        }
        async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.rename(from, to)).await
        }
        async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
            self.counted(self.inner.remove(path)).await
        }
        async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
            self.counted(self.inner.list(path)).await
        }
        async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
            self.counted(self.inner.length(path)).await
        }
    }

    #[test]
    fn commands_requests_and_timers_all_complete() {
        let memory = MemoryPorts::new(1_000, 4);
        let (sender, receiver) = command_channel::<ToyMachine>();
        let limits = DriverLimits {
            check_invariants: true,
            ..DriverLimits::default()
        };
        let driver = run(
            ToyMachine::default(),
            memory.ports.clone(),
            receiver,
            limits,
        );
        let calls = async move {
            let written = sender
                .call(Command::WriteFile {
                    name: "a",
                    bytes: Bytes::from_static(b"hello"),
                })
                .await
                .unwrap();
            assert_eq!(written, Reply::Written(5));
            let first = sender
                .call(Command::Put {
                    key: "k",
                    bytes: Bytes::from_static(b"v"),
                })
                .await
                .unwrap();
            assert!(matches!(first, Reply::Put(Some(_))), "{first:?}");
            let again = sender
                .call(Command::Put {
                    key: "k",
                    bytes: Bytes::from_static(b"v"),
                })
                .await
                .unwrap();
            assert_eq!(again, Reply::Failed, "IfAbsent of an existing key fails");
            let woke = sender.call(Command::WakeAt { at_ms: 5_000 }).await.unwrap();
            assert_eq!(woke, Reply::Woke(5_000));
        };
        let (machine, ()) = futures::executor::block_on(futures::future::join(driver, calls));
        assert!(machine.is_finished());
        assert_eq!(memory.disk.file("files/a").unwrap(), b"hello");
        assert_eq!(
            memory.object_store.object("k").unwrap(),
            Bytes::from_static(b"v")
        );
        // Three disk completions + one command per write; two puts; one timer.
        assert_eq!(machine.inputs, 4 + 4 + 1 + 1);
    }

    #[test]
    fn in_flight_limits_hold() {
        let memory = MemoryPorts::new(0, 8);
        let peak = Arc::new(AtomicU32::new(0));
        let mut ports = memory.ports.clone();
        ports.disk = Arc::new(CountingDisk {
            inner: memory.ports.disk.clone(),
            running: AtomicU32::new(0),
            peak: peak.clone(),
        });
        let (sender, receiver) = command_channel::<ToyMachine>();
        let limits = DriverLimits {
            disk_in_flight_max: 2,
            check_invariants: true,
            ..DriverLimits::default()
        };
        let driver = run(ToyMachine::default(), ports, receiver, limits);
        let names = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"];
        let calls = async move {
            let writes = names.map(|name| {
                sender.call(Command::WriteFile {
                    name,
                    bytes: Bytes::from(name.as_bytes().to_vec()),
                })
            });
            for reply in futures::future::join_all(writes).await {
                assert_eq!(reply.unwrap(), Reply::Written(2));
            }
        };
        futures::executor::block_on(futures::future::join(driver, calls));
        assert!(
            peak.load(Ordering::SeqCst) <= 2,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
        assert!(peak.load(Ordering::SeqCst) >= 1);
        for name in names {
            assert_eq!(
                memory.disk.file(&format!("files/{name}")).unwrap(),
                name.as_bytes()
            );
        }
    }

    /// An object store whose puts all wait until the gate opens, then count
    /// themselves done.
    struct GatedObjects {
        inner: Arc<dyn ObjectStorePort>,
        gate: futures::future::Shared<futures::channel::oneshot::Receiver<()>>,
        done: Arc<AtomicU32>,
    }

    #[async_trait]
    impl ObjectStorePort for GatedObjects {
        async fn put(
            &self,
            key: &str,
            bytes: Bytes,
            mode: PutMode,
        ) -> Result<Option<String>, ObjectErrorKind> {
            let _ = self.gate.clone().await;
            let out = self.inner.put(key, bytes, mode).await;
            self.done.fetch_add(1, Ordering::SeqCst);
            out
        }
        async fn get(&self, key: &str) -> Result<Bytes, ObjectErrorKind> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            start: u64,
            end: u64,
        ) -> Result<(Bytes, u64), ObjectErrorKind> {
            self.inner.get_range(key, start, end).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectErrorKind> {
            self.inner.head(key).await
        }
        async fn delete(&self, key: &str) -> Result<(), ObjectErrorKind> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind> {
            self.inner.list(prefix).await
        }
    }

    #[test]
    fn a_waiting_command_is_not_starved_by_ready_completions() {
        const FLOOD: u32 = 200;
        let memory = MemoryPorts::new(0, 4);
        let (open, gate) = futures::channel::oneshot::channel::<()>();
        let done = Arc::new(AtomicU32::new(0));
        let mut ports = memory.ports.clone();
        ports.object_store = Arc::new(GatedObjects {
            inner: memory.ports.object_store.clone(),
            gate: gate.shared(),
            done: done.clone(),
        });
        let (sender, receiver) = command_channel::<ToyMachine>();
        let limits = DriverLimits {
            object_in_flight_max: FLOOD,
            check_invariants: true,
            ..DriverLimits::default()
        };
        let driver = run(ToyMachine::default(), ports, receiver, limits);
        let calls = async move {
            let flooding = sender.call(Command::Flood { count: FLOOD }).await.unwrap();
            assert_eq!(flooding, Reply::Flooding);
            // The ping is queued first; then every put completes while the driver
            // waits, so all their completions are ready with it.
            let ping = sender.call(Command::Ping);
            let release = async {
                open.send(()).unwrap();
                while done.load(Ordering::SeqCst) < FLOOD {
                    #[allow(clippy::disallowed_methods)] // the driver must not run yet
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let (pong, ()) = futures::future::join(ping, release).await;
            let Reply::Pong { completions } = pong.unwrap() else {
                panic!("a ping is answered with a pong")
            };
            assert!(
                completions <= 1,
                "the ping waited behind {completions} of {FLOOD} ready completions"
            );
        };
        let (machine, ()) = futures::executor::block_on(futures::future::join(driver, calls));
        assert_eq!(machine.completions, u64::from(FLOOD));
    }

    #[test]
    fn a_caller_gets_driver_stopped_after_the_driver_is_gone() {
        let (sender, receiver) = command_channel::<ToyMachine>();
        drop(receiver);
        let reply = futures::executor::block_on(sender.call(Command::WakeAt { at_ms: 1 }));
        assert_eq!(reply, Err(DriverStopped));
    }
}
