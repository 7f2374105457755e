//! Property test of [`SimDisk`]'s crash model against a model written differently:
//! the model keeps the history of every operation and, at a crash, replays it with
//! the durability rules (data durable up to a file's last successful fsync, minus what
//! a failed fsync dropped; names durable up to their directory's last fsync).
//!
//! Random sequences of create / write / truncate / fsync / failing fsync / dir fsync /
//! rename / remove over two directories, then a crash:
//! - losing everything pending: the disk holds exactly the model's durable state;
//! - keeping everything pending: exactly the model's "written back" state (fsync-
//!   dropped data still lost), and the model carries on from there for another round;
//! - random: each directory holds its durable entries plus a prefix of its pending
//!   operations, and every byte of every file is a durable byte, a byte a pending
//!   write put at that position, or zero.
//!
//! **Invariants checked**
//! - Every operation's result (done / not found) and every read match the model.
//! - Durable state after a crash follows the prefix rules above; nothing is invented.
//! - `SimDisk::check_invariants` holds after every operation and crash.

use aof2_io_sim::core::driver::DiskPort;
use aof2_io_sim::core::io::{DiskErrorKind, LocalPath};
use aof2_io_sim::core::retry::DetRng;
use aof2_io_sim::{CrashMode, DiskFaultPlan, PPM_ONE, SimDisk};
use bytes::Bytes;
use futures::executor::block_on;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const FILES: [&str; 6] = ["a/0", "a/1", "a/2", "b/0", "b/1", "b/2"];
const DIRS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Write {
        file: usize,
        offset: u16,
        length: u16,
    },
    Truncate {
        file: usize,
        length: u16,
    },
    SyncFile(usize),
    FailingSyncFile(usize),
    SyncDir(usize),
    Rename {
        from: usize,
        to: usize,
    },
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..FILES.len();
    prop_oneof![
        3 => file.clone().prop_map(Op::Create),
        6 => (file.clone(), 0..6_000_u16, 1..3_000_u16)
            .prop_map(|(file, offset, length)| Op::Write { file, offset, length }),
        1 => (file.clone(), 0..8_000_u16).prop_map(|(file, length)| Op::Truncate { file, length }),
        3 => file.clone().prop_map(Op::SyncFile),
        1 => file.clone().prop_map(Op::FailingSyncFile),
        2 => (0..DIRS.len()).prop_map(Op::SyncDir),
        2 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => file.prop_map(Op::Remove),
    ]
}

fn mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::LosePending),
        Just(CrashMode::KeepPending),
        Just(CrashMode::Random),
    ]
}

fn path(name: &str) -> LocalPath {
    LocalPath::from_components(&name.split('/').collect::<Vec<_>>())
}

fn dir_of(name: &str) -> &str {
    name.split_once('/')
        .expect("model files live in a directory")
        .0
}

/// Bytes of write number `serial`: never zero, and different for each write at most
/// positions, so a surviving byte's origin shows.
fn fill(serial: u64, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| ((serial * 131 + index as u64 * 7) % 255) as u8 + 1)
        .collect()
}

#[derive(Debug, Clone)]
enum NameOp {
    Link {
        name: String,
        inode: u64,
    },
    Unlink {
        name: String,
        inode: u64,
    },
    Rename {
        from: String,
        to: String,
        inode: u64,
    },
}

impl NameOp {
    fn apply(&self, names: &mut BTreeMap<String, u64>) {
        match self {
            NameOp::Link { name, inode } => {
                names.insert(name.clone(), *inode);
            }
            NameOp::Unlink { name, inode } => {
                if names.get(name) == Some(inode) {
                    names.remove(name);
                }
            }
            NameOp::Rename { from, to, inode } => {
                if names.get(from) == Some(inode) {
                    names.remove(from);
                }
                names.insert(to.clone(), *inode);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: usize, bytes: Vec<u8> },
    Truncate { length: usize },
}

impl DataOp {
    fn apply(&self, file: &mut Vec<u8>) {
        match self {
            DataOp::Write { offset, bytes } => {
                let end = offset + bytes.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[*offset..end].copy_from_slice(bytes);
            }
            DataOp::Truncate { length } => file.resize(*length, 0),
        }
    }

    fn extent(&self) -> usize {
        match self {
            DataOp::Write { offset, bytes } => offset + bytes.len(),
            DataOp::Truncate { length } => *length,
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Name { dir: String, op: NameOp },
    Data { inode: u64, op: DataOp },
    SyncFile { inode: u64, ok: bool },
    SyncDir { dir: String },
}

/// The durable state at the start of a round, and the round's history.
#[derive(Debug, Default)]
struct Model {
    base_names: BTreeMap<String, u64>,
    base_data: BTreeMap<u64, Vec<u8>>,
    events: Vec<Event>,
    /// Current names (what `list` and `read` see).
    names: BTreeMap<String, u64>,
    next_inode: u64,
    writes: u64,
}

impl Model {
    /// The data of `inode` as durable state after the round: base data, then every
    /// pending batch made durable by a successful fsync; the still-pending operations
    /// are returned alongside (without those a failed fsync dropped).
    fn data(&self, inode: u64) -> (Vec<u8>, Vec<DataOp>) {
        let mut durable = self.base_data.get(&inode).cloned().unwrap_or_default();
        let mut pending = Vec::new();
        for event in &self.events {
            match event {
                Event::Data { inode: of, op } if *of == inode => pending.push(op.clone()),
                Event::SyncFile { inode: of, ok } if *of == inode => {
                    if *ok {
                        for op in &pending {
                            op.apply(&mut durable);
                        }
                    }
                    pending.clear();
                }
                _ => {}
            }
        }
        (durable, pending)
    }

    /// Every data operation of the round, synced or not: the page cache.
    fn current_data(&self, inode: u64) -> Vec<u8> {
        let mut file = self.base_data.get(&inode).cloned().unwrap_or_default();
        for event in &self.events {
            if let Event::Data { inode: of, op } = event
                && *of == inode
            {
                op.apply(&mut file);
            }
        }
        file
    }

    /// Per directory: the namespace operations its last `sync_dir` made durable, and
    /// the ones still pending after it.
    fn name_ops(&self) -> BTreeMap<String, (Vec<NameOp>, Vec<NameOp>)> {
        let mut split: BTreeMap<String, (Vec<NameOp>, Vec<NameOp>)> = BTreeMap::new();
        for event in &self.events {
            match event {
                Event::Name { dir, op } => split.entry(dir.clone()).or_default().1.push(op.clone()),
                Event::SyncDir { dir } => {
                    let (durable, pending) = split.entry(dir.clone()).or_default();
                    durable.append(pending);
                }
                _ => {}
            }
        }
        split
    }

    /// The names a crash leaves: base names, every durable operation, and (if
    /// `keep_pending`) every pending one.
    fn names_after_crash(&self, keep_pending: bool) -> BTreeMap<String, u64> {
        let mut names = self.base_names.clone();
        for (durable, pending) in self.name_ops().values() {
            for op in durable {
                op.apply(&mut names);
            }
            if keep_pending {
                for op in pending {
                    op.apply(&mut names);
                }
            }
        }
        names
    }

    /// The files a crash in `mode` (not random) leaves.
    fn files_after_crash(&self, keep_pending: bool) -> BTreeMap<String, Vec<u8>> {
        self.names_after_crash(keep_pending)
            .into_iter()
            .map(|(name, inode)| {
                let (mut durable, pending) = self.data(inode);
                if keep_pending {
                    for op in &pending {
                        op.apply(&mut durable);
                    }
                }
                (name, durable)
            })
            .collect()
    }

    /// Starts a new round from the state a crash left.
    fn restart(&mut self, keep_pending: bool) {
        let names = self.names_after_crash(keep_pending);
        let data = names
            .values()
            .map(|inode| {
                let (mut durable, pending) = self.data(*inode);
                if keep_pending {
                    for op in &pending {
                        op.apply(&mut durable);
                    }
                }
                (*inode, durable)
            })
            .collect();
        self.base_names = names.clone();
        self.base_data = data;
        self.names = names;
        self.events.clear();
    }

    /// Applies `op` to the model; returns the result the disk must give.
    fn step(&mut self, op: &Op) -> Result<(), DiskErrorKind> {
        let name_of = |file: usize| FILES[file].to_owned();
        let found = |names: &BTreeMap<String, u64>, file: usize| {
            names
                .get(FILES[file])
                .copied()
                .ok_or(DiskErrorKind::NotFound)
        };
        match *op {
            Op::Create(file) => {
                if let Some(&inode) = self.names.get(FILES[file]) {
                    self.events.push(Event::Data {
                        inode,
                        op: DataOp::Truncate { length: 0 },
                    });
                } else {
                    let inode = self.next_inode;
                    self.next_inode += 1;
                    self.names.insert(name_of(file), inode);
                    self.events.push(Event::Name {
                        dir: dir_of(FILES[file]).to_owned(),
                        op: NameOp::Link {
                            name: name_of(file),
                            inode,
                        },
                    });
                }
            }
            Op::Write {
                file,
                offset,
                length,
            } => {
                let inode = found(&self.names, file)?;
                self.writes += 1;
                self.events.push(Event::Data {
                    inode,
                    op: DataOp::Write {
                        offset: offset.into(),
                        bytes: fill(self.writes, length.into()),
                    },
                });
            }
            Op::Truncate { file, length } => {
                let inode = found(&self.names, file)?;
                self.events.push(Event::Data {
                    inode,
                    op: DataOp::Truncate {
                        length: length.into(),
                    },
                });
            }
            Op::SyncFile(file) => {
                let inode = found(&self.names, file)?;
                self.events.push(Event::SyncFile { inode, ok: true });
            }
            Op::FailingSyncFile(file) => {
                let inode = found(&self.names, file)?;
                self.events.push(Event::SyncFile { inode, ok: false });
                return Err(DiskErrorKind::Io);
            }
            Op::SyncDir(dir) => self.events.push(Event::SyncDir {
                dir: DIRS[dir].to_owned(),
            }),
            Op::Rename { from, to } => {
                let inode = found(&self.names, from)?;
                if from == to {
                    return Ok(());
                }
                self.names.remove(FILES[from]);
                self.names.insert(name_of(to), inode);
                let (from_dir, to_dir) = (dir_of(FILES[from]), dir_of(FILES[to]));
                if from_dir == to_dir {
                    self.events.push(Event::Name {
                        dir: from_dir.to_owned(),
                        op: NameOp::Rename {
                            from: name_of(from),
                            to: name_of(to),
                            inode,
                        },
                    });
                } else {
                    self.events.push(Event::Name {
                        dir: to_dir.to_owned(),
                        op: NameOp::Link {
                            name: name_of(to),
                            inode,
                        },
                    });
                    self.events.push(Event::Name {
                        dir: from_dir.to_owned(),
                        op: NameOp::Unlink {
                            name: name_of(from),
                            inode,
                        },
                    });
                }
            }
            Op::Remove(file) => {
                let inode = found(&self.names, file)?;
                self.names.remove(FILES[file]);
                self.events.push(Event::Name {
                    dir: dir_of(FILES[file]).to_owned(),
                    op: NameOp::Unlink {
                        name: name_of(file),
                        inode,
                    },
                });
            }
        }
        Ok(())
    }
}

/// Runs `op` on the disk (a failing fsync through a plan that fails every sync).
fn run(disk: &SimDisk, op: &Op, writes: u64) -> Result<(), DiskErrorKind> {
    block_on(async {
        match *op {
            Op::Create(file) => disk.create(&path(FILES[file])).await,
            Op::Write {
                file,
                offset,
                length,
            } => {
                let bytes = Bytes::from(fill(writes, length.into()));
                disk.write_at(&path(FILES[file]), offset.into(), bytes)
                    .await
            }
            Op::Truncate { file, length } => disk.truncate(&path(FILES[file]), length.into()).await,
            Op::SyncFile(file) => disk.sync_file(&path(FILES[file])).await,
            Op::FailingSyncFile(file) => {
                let plan = disk.plan();
                disk.set_plan(DiskFaultPlan {
                    sync_error_ppm: PPM_ONE,
                    ..plan
                });
                let result = disk.sync_file(&path(FILES[file])).await;
                disk.set_plan(plan);
                result
            }
            Op::SyncDir(dir) => disk.sync_dir(&path(DIRS[dir])).await,
            Op::Rename { from, to } => disk.rename(&path(FILES[from]), &path(FILES[to])).await,
            Op::Remove(file) => disk.remove(&path(FILES[file])).await,
        }
    })
}

fn disk_files(disk: &SimDisk) -> BTreeMap<String, Vec<u8>> {
    disk.current_paths()
        .into_iter()
        .map(|name| {
            let bytes = disk.current_file(&name).expect("a listed file exists");
            (name, bytes)
        })
        .collect()
}

/// After a random crash: each directory's entries are its durable ones plus a prefix
/// of its pending operations, and every byte has an origin.
fn check_random_crash(model: &Model, disk: &SimDisk) -> Result<(), TestCaseError> {
    let after = disk_files(disk);
    let durable_names = model.names_after_crash(false);
    let name_ops = model.name_ops();
    for dir in DIRS {
        let in_dir = |names: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
            names
                .iter()
                .filter(|(name, _)| dir_of(name) == dir)
                .map(|(name, inode)| (name.clone(), *inode))
                .collect()
        };
        let pending = name_ops.get(dir).map(|(_, pending)| pending.clone());
        let pending = pending.unwrap_or_default();
        // The entries after each prefix of the pending operations.
        let mut prefixes = vec![in_dir(&durable_names)];
        let mut names = durable_names.clone();
        for op in &pending {
            op.apply(&mut names);
            prefixes.push(in_dir(&names));
        }
        let on_disk: BTreeSet<&String> = after.keys().filter(|name| dir_of(name) == dir).collect();
        let matching: Vec<&BTreeMap<String, u64>> = prefixes
            .iter()
            .filter(|prefix| prefix.keys().collect::<BTreeSet<_>>() == on_disk)
            .collect();
        prop_assert!(
            !matching.is_empty(),
            "{dir}: {on_disk:?} is no prefix of the pending operations"
        );
        for name in on_disk {
            let bytes = &after[name];
            let explained = matching.iter().any(|prefix| {
                let (durable, pending) = model.data(prefix[name]);
                let longest = pending
                    .iter()
                    .map(DataOp::extent)
                    .chain([durable.len()])
                    .max()
                    .unwrap_or(0);
                bytes.len() <= longest
                    && bytes.iter().enumerate().all(|(position, byte)| {
                        *byte == 0
                            || durable.get(position) == Some(byte)
                            || pending.iter().any(|op| match op {
                                DataOp::Write { offset, bytes } => {
                                    position >= *offset
                                        && bytes.get(position - offset) == Some(byte)
                                }
                                DataOp::Truncate { .. } => false,
                            })
                    })
            });
            prop_assert!(explained, "{name}: bytes with no origin: {bytes:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn durable_state_after_a_crash_follows_the_prefix_rules(
        rounds in prop::collection::vec((prop::collection::vec(op(), 1..60), mode()), 1..4),
        crash_seed: u64,
    ) {
        let disk = SimDisk::new(crash_seed, DiskFaultPlan {
            sector_bytes: if crash_seed % 2 == 0 { 512 } else { 4_096 },
            ..DiskFaultPlan::none()
        });
        let mut model = Model::default();
        let mut rng = DetRng::new(crash_seed);
        for (ops, mode) in rounds {
            for op in &ops {
                let expected = model.step(op);
                let actual = run(&disk, op, model.writes);
                prop_assert_eq!(actual, expected, "{:?}", op);
                disk.check_invariants();
            }
            let current: BTreeMap<String, Vec<u8>> = model
                .names
                .iter()
                .map(|(name, inode)| (name.clone(), model.current_data(*inode)))
                .collect();
            prop_assert_eq!(&disk_files(&disk), &current, "reads see the latest state");
            let durable: BTreeMap<String, Vec<u8>> = disk
                .durable_paths()
                .into_iter()
                .map(|name| {
                    let bytes = disk.durable_file(&name).expect("a durable path has bytes");
                    (name, bytes)
                })
                .collect();
            prop_assert_eq!(&durable, &model.files_after_crash(false));

            disk.crash_with(mode, &mut rng);
            match mode {
                CrashMode::LosePending | CrashMode::KeepPending => {
                    let keep_pending = mode == CrashMode::KeepPending;
                    prop_assert_eq!(disk_files(&disk), model.files_after_crash(keep_pending));
                    model.restart(keep_pending);
                }
                CrashMode::Random => {
                    check_random_crash(&model, &disk)?;
                    // The model cannot follow a random outcome further.
                    break;
                }
            }
        }
    }
}
