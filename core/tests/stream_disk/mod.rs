//! A test-only in-memory disk that carries out `DiskRequest`s, with a crash model, and
//! a small driver that pumps a `StreamMachine` against it.
//!
//! Crash model (POSIX as the stream assumes it, adversarial where POSIX allows):
//! - Each file (inode) has the bytes reads see (`current`), the bytes that survive a
//!   crash (`durable`), and the data operations since its last fsync (`pending`).
//!   `SyncFile` applies `pending` to `durable`.
//! - A *failed* `SyncFile` is fsyncgate: some prefix of the pending operations may have
//!   reached the disk, the rest are lost for good, yet reads keep returning them; a
//!   later successful fsync does not bring them back (only rewriting them does).
//! - Creates, renames and removes change the namespace reads see at once and become
//!   durable with `SyncDir` of their directory.
//! - `crash()` keeps the durable state plus, chosen by a seed, a prefix of each file's
//!   pending operations (the last one possibly torn) and a prefix of the pending
//!   directory operations (in order, as a journal commits them).
//!
//! **Invariants checked** by users of [`Driver`]: `check_invariants()` after every
//! step; `Durable` events never decrease; a failed fsync never raises the durable
//! watermark.

#![allow(dead_code)]

use aof2_core::io::{DiskCompletion, DiskErrorKind, DiskRequest, IoCompletion, IoId, IoRequest};
use aof2_core::retry::DetRng;
use aof2_core::segment::{Record, SealedSegment, TailScan, scan_tail};
use aof2_core::stream::{StreamConfig, StreamEvent, StreamMachine};
use bytes::Bytes;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum DataOp {
    Write { offset: u64, bytes: Bytes },
    Truncate { length: u64 },
}

impl DataOp {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            DataOp::Write {
                offset,
                bytes: data,
            } => {
                let start = *offset as usize;
                let end = start + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[start..end].copy_from_slice(data);
            }
            DataOp::Truncate { length } => bytes.resize(*length as usize, 0),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct File {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DirOp {
    Link {
        name: String,
        inode: u64,
    },
    Rename {
        from: String,
        to: String,
        inode: u64,
    },
    Unlink {
        name: String,
    },
}

impl DirOp {
    fn apply(&self, names: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link { name, inode } => {
                names.insert(name.clone(), *inode);
            }
            DirOp::Rename { from, to, inode } => {
                names.remove(from);
                names.insert(to.clone(), *inode);
            }
            DirOp::Unlink { name } => {
                names.remove(name);
            }
        }
    }

    fn directory(&self) -> &str {
        let name = match self {
            DirOp::Link { name, .. } | DirOp::Unlink { name } => name,
            DirOp::Rename { to, .. } => to,
        };
        parent(name)
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails without effect; a failed sync loses every pending operation of the file
    /// (fsyncgate at its worst).
    Before,
    /// Fails without effect; a failed sync keeps a random prefix of the pending
    /// operations (some pages made it) and loses the rest.
    BeforePartial,
    /// Takes effect, then reports failure (the ambiguous timeout).
    After,
}

/// The in-memory disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    files: BTreeMap<u64, File>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    dir_pending: Vec<DirOp>,
    next_inode: u64,
    /// Requests carried out, for assertions.
    pub log: Vec<DiskRequest>,
}

impl SimDisk {
    pub fn new() -> Self {
        SimDisk::default()
    }

    /// Carries out `request`, failing it with `fault` if given; `rng` picks what a
    /// failed fsync keeps.
    pub fn execute(
        &mut self,
        request: &DiskRequest,
        fault: Option<Fault>,
        rng: &mut DetRng,
    ) -> DiskCompletion {
        self.log.push(request.clone());
        if matches!(fault, Some(Fault::Before | Fault::BeforePartial)) {
            if let DiskRequest::SyncFile { path } = request
                && let Some(&inode) = self.names.get(path.as_str())
            {
                let file = self.files.get_mut(&inode).unwrap();
                let kept = if fault == Some(Fault::BeforePartial) {
                    rng.below(file.pending.len() as u64 + 1) as usize
                } else {
                    0
                };
                for op in file.pending.drain(..).take(kept) {
                    op.apply(&mut file.durable);
                }
                file.pending.clear();
            }
            return DiskCompletion::Failed(DiskErrorKind::Io);
        }
        let completion = self.apply(request);
        match (fault, completion) {
            (Some(Fault::After), DiskCompletion::Done) => DiskCompletion::Failed(DiskErrorKind::Io),
            (_, completion) => completion,
        }
    }

    fn apply(&mut self, request: &DiskRequest) -> DiskCompletion {
        let not_found = DiskCompletion::Failed(DiskErrorKind::NotFound);
        match request {
            // Directories are implicit in this model.
            DiskRequest::CreateDir { .. } => DiskCompletion::Done,
            DiskRequest::Create { path } => {
                let path = path.as_str().to_owned();
                if let Some(&inode) = self.names.get(&path) {
                    self.data_op(inode, DataOp::Truncate { length: 0 });
                } else {
                    let inode = self.next_inode;
                    self.next_inode += 1;
                    self.files.insert(inode, File::default());
                    self.names.insert(path.clone(), inode);
                    self.dir_pending.push(DirOp::Link { name: path, inode });
                }
                DiskCompletion::Done
            }
            DiskRequest::WriteAt {
                path,
                offset,
                bytes,
            } => match self.names.get(path.as_str()) {
                Some(&inode) => {
                    self.data_op(
                        inode,
                        DataOp::Write {
                            offset: *offset,
                            bytes: bytes.clone(),
                        },
                    );
                    DiskCompletion::Done
                }
                None => not_found,
            },
            DiskRequest::ReadAt {
                path,
                offset,
                length,
            } => match self.names.get(path.as_str()) {
                Some(inode) => {
                    let current = &self.files[inode].current;
                    let start = (*offset as usize).min(current.len());
                    let end = (start + *length as usize).min(current.len());
                    DiskCompletion::Read(Bytes::copy_from_slice(&current[start..end]))
                }
                None => not_found,
            },
            DiskRequest::Truncate { path, length } => match self.names.get(path.as_str()) {
                Some(&inode) => {
                    self.data_op(inode, DataOp::Truncate { length: *length });
                    DiskCompletion::Done
                }
                None => not_found,
            },
            DiskRequest::SyncFile { path } => match self.names.get(path.as_str()) {
                Some(inode) => {
                    let file = self.files.get_mut(inode).unwrap();
                    for op in file.pending.drain(..) {
                        op.apply(&mut file.durable);
                    }
                    assert_eq!(file.durable, file.current, "a synced file is durable");
                    DiskCompletion::Done
                }
                None => not_found,
            },
            DiskRequest::SyncDir { path } => {
                let directory = path.as_str();
                let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dir_pending)
                    .into_iter()
                    .partition(|op| op.directory() == directory);
                for op in mine {
                    op.apply(&mut self.durable_names);
                }
                self.dir_pending = others;
                DiskCompletion::Done
            }
            DiskRequest::Rename { from, to } => match self.names.remove(from.as_str()) {
                Some(inode) => {
                    assert_eq!(parent(from.as_str()), parent(to.as_str()), "same directory");
                    self.names.insert(to.as_str().to_owned(), inode);
                    self.dir_pending.push(DirOp::Rename {
                        from: from.as_str().to_owned(),
                        to: to.as_str().to_owned(),
                        inode,
                    });
                    DiskCompletion::Done
                }
                None => not_found,
            },
            DiskRequest::Remove { path } => match self.names.remove(path.as_str()) {
                Some(_) => {
                    self.dir_pending.push(DirOp::Unlink {
                        name: path.as_str().to_owned(),
                    });
                    DiskCompletion::Done
                }
                None => not_found,
            },
            DiskRequest::ListDir { path } => {
                let prefix = format!("{}/", path.as_str());
                let names: Vec<String> = self
                    .names
                    .keys()
                    .filter_map(|name| name.strip_prefix(&prefix))
                    .filter(|rest| !rest.contains('/'))
                    .map(str::to_owned)
                    .collect();
                DiskCompletion::Listed(names)
            }
            DiskRequest::Length { path } => match self.names.get(path.as_str()) {
                Some(inode) => DiskCompletion::Length(self.files[inode].current.len() as u64),
                None => not_found,
            },
        }
    }

    fn data_op(&mut self, inode: u64, op: DataOp) {
        let file = self.files.get_mut(&inode).unwrap();
        op.apply(&mut file.current);
        file.pending.push(op);
    }

    /// An OS crash: only durable state survives, plus what `seed` picks of the pending
    /// operations (see the module doc).
    pub fn crash(&mut self, seed: u64) {
        let mut rng = DetRng::new(seed);
        let kept_dir_ops = rng.below(self.dir_pending.len() as u64 + 1) as usize;
        for op in self.dir_pending.drain(..).take(kept_dir_ops) {
            op.apply(&mut self.durable_names);
        }
        self.dir_pending.clear();
        for file in self.files.values_mut() {
            let kept = rng.below(file.pending.len() as u64 + 1) as usize;
            let torn = file.pending.get(kept).cloned();
            for op in file.pending.drain(..).take(kept) {
                op.apply(&mut file.durable);
            }
            if let Some(DataOp::Write { offset, bytes }) = torn
                && rng.below(2) == 0
            {
                let cut = rng.below(bytes.len() as u64 + 1) as usize;
                DataOp::Write {
                    offset,
                    bytes: bytes.slice(..cut),
                }
                .apply(&mut file.durable);
            }
            file.pending.clear();
            file.current = file.durable.clone();
        }
        self.names = self.durable_names.clone();
        let live: Vec<u64> = self.names.values().copied().collect();
        self.files.retain(|inode, _| live.contains(inode));
    }

    /// The harshest crash: nothing pending survives.
    pub fn crash_losing_everything_pending(&mut self) {
        self.dir_pending.clear();
        for file in self.files.values_mut() {
            file.pending.clear();
            file.current = file.durable.clone();
        }
        self.names = self.durable_names.clone();
        let live: Vec<u64> = self.names.values().copied().collect();
        self.files.retain(|inode, _| live.contains(inode));
    }

    /// What reads of `path` return now.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.names
            .get(path)
            .map(|inode| self.files[inode].current.clone())
    }

    /// Writes a file directly and durably (test setup).
    pub fn put_durable(&mut self, path: &str, bytes: &[u8]) {
        let inode = self.next_inode;
        self.next_inode += 1;
        self.files.insert(
            inode,
            File {
                current: bytes.to_vec(),
                durable: bytes.to_vec(),
                pending: Vec::new(),
            },
        );
        self.names.insert(path.to_owned(), inode);
        self.durable_names.insert(path.to_owned(), inode);
    }

    /// Every path reads see, in order.
    pub fn paths(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    /// Every record readable from the segment files of `segments_dir` (as reads see
    /// them): `offset -> payload`. Sealed files must verify; the newest active one is
    /// read up to its valid prefix. Panics on anything else.
    pub fn records(&self, segments_dir: &str) -> BTreeMap<u64, Vec<u8>> {
        let prefix = format!("{segments_dir}/");
        let mut records = BTreeMap::new();
        for (path, inode) in &self.names {
            let Some(name) = path.strip_prefix(&prefix) else {
                continue;
            };
            if !name.ends_with(".seg") {
                continue;
            }
            let bytes = &self.files[inode].current;
            collect_records(path, bytes, &mut records);
        }
        records
    }
}

fn collect_records(path: &str, bytes: &[u8], records: &mut BTreeMap<u64, Vec<u8>>) {
    match scan_tail(bytes).unwrap_or_else(|error| panic!("{path}: {error}")) {
        TailScan::Sealed { .. } => {
            let sealed = SealedSegment::decode(bytes).unwrap();
            for framed in sealed.records() {
                let previous = records.insert(framed.record.offset, framed.record.payload.to_vec());
                assert!(
                    previous.is_none(),
                    "{path}: offset {} twice",
                    framed.record.offset
                );
            }
        }
        TailScan::Active(tail) => {
            let mut position = 40u64;
            while position < tail.valid_bytes {
                let framed = Record::decode_at(bytes, position).unwrap();
                let previous = records.insert(framed.record.offset, framed.record.payload.to_vec());
                assert!(
                    previous.is_none(),
                    "{path}: offset {} twice",
                    framed.record.offset
                );
                position = framed.end();
            }
        }
    }
}

/// Pumps a `StreamMachine` against a `SimDisk`, checking invariants after every step.
#[derive(Debug)]
pub struct Driver {
    pub machine: StreamMachine,
    pub disk: SimDisk,
    pub now_ms: u64,
    /// Requests polled and not yet completed, in issue order.
    pub in_flight: Vec<(IoId, DiskRequest)>,
    /// Every event, in order.
    pub events: Vec<StreamEvent>,
    /// Highest `Durable` seen.
    pub durable_seen: u64,
    pub rng: DetRng,
}

impl Driver {
    pub fn new(machine: StreamMachine, disk: SimDisk, now_ms: u64) -> Self {
        let mut driver = Driver {
            machine,
            disk,
            now_ms,
            in_flight: Vec::new(),
            events: Vec::new(),
            durable_seen: 0,
            rng: DetRng::new(7),
        };
        driver.drain();
        driver
    }

    /// A recovering machine on `disk`.
    pub fn recover(
        config: StreamConfig,
        disk: SimDisk,
        now_ms: u64,
        acknowledged_next_offset: Option<u64>,
    ) -> Self {
        let machine =
            StreamMachine::recover(config, stream_name(), now_ms, acknowledged_next_offset);
        Driver::new(machine, disk, now_ms)
    }

    /// Polls every request and event; checks invariants.
    pub fn drain(&mut self) {
        while let Some((id, request)) = self.machine.poll_request() {
            let IoRequest::Disk(request) = request else {
                panic!("a stream only asks for disk IO");
            };
            self.in_flight.push((id, request));
        }
        while let Some(event) = self.machine.poll_event() {
            if let StreamEvent::Durable { next_offset } = event {
                assert!(next_offset > self.durable_seen, "Durable never decreases");
                self.durable_seen = next_offset;
            }
            self.events.push(event);
        }
        assert!(
            self.durable_seen <= self.machine.durable_next_offset(),
            "events never run ahead of the watermark"
        );
        self.machine.check_invariants();
    }

    /// Completes in-flight request `index`, failing it with `fault` if given.
    pub fn complete(&mut self, index: usize, fault: Option<Fault>) -> DiskRequest {
        let (id, request) = self.in_flight.remove(index);
        let completion = self.disk.execute(&request, fault, &mut self.rng);
        let durable_before = self.machine.durable_next_offset();
        let failed = matches!(completion, DiskCompletion::Failed(_));
        self.machine
            .handle_completion(self.now_ms, id, IoCompletion::Disk(completion));
        if failed {
            assert_eq!(
                self.machine.durable_next_offset(),
                durable_before,
                "a failed request never raises the durable watermark"
            );
        }
        self.drain();
        request
    }

    /// Completes in-flight request `index` with `completion`, whatever the disk holds
    /// (a read that returns other bytes than the disk's, for example).
    pub fn complete_with(&mut self, index: usize, completion: DiskCompletion) -> DiskRequest {
        let (id, request) = self.in_flight.remove(index);
        self.machine
            .handle_completion(self.now_ms, id, IoCompletion::Disk(completion));
        self.drain();
        request
    }

    /// Completes the oldest in-flight request successfully.
    pub fn step(&mut self) -> DiskRequest {
        assert!(!self.in_flight.is_empty(), "nothing in flight");
        self.complete(0, None)
    }

    /// Completes requests until none is in flight.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            if self.in_flight.is_empty() {
                return;
            }
            self.step();
        }
        panic!("the machine never came to rest");
    }

    /// Moves time on and fires due timers.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        if self
            .machine
            .poll_timeout()
            .is_some_and(|deadline| deadline <= self.now_ms)
        {
            self.machine.handle_timeout(self.now_ms);
        }
        self.drain();
    }

    pub fn append(&mut self, payload: &[u8]) -> Result<u64, aof2_core::stream::AppendError> {
        let result = self
            .machine
            .append(self.now_ms, Bytes::copy_from_slice(payload), None);
        self.drain();
        result
    }

    /// Index of the first in-flight request matching `wanted`.
    pub fn find(&self, wanted: impl Fn(&DiskRequest) -> bool) -> Option<usize> {
        self.in_flight
            .iter()
            .position(|(_, request)| wanted(request))
    }

    /// Takes the events seen so far.
    pub fn take_events(&mut self) -> Vec<StreamEvent> {
        std::mem::take(&mut self.events)
    }
}

pub fn stream_name() -> aof2_core::names::StreamName {
    aof2_core::names::StreamName::new("orders").unwrap()
}

pub const SEGMENTS_DIR: &str = "streams/orders/segments";
pub const POINTER: &str = "streams/orders/current.sealed";
pub const ACK_HINT: &str = "streams/orders/acknowledged";

pub fn segment_file(id: u64) -> String {
    format!("{SEGMENTS_DIR}/{id:020}.seg")
}
