//! [`SimDisk`]: a simulated local disk with a page cache, a crash model and seeded
//! fault injection, implementing [`DiskPort`].
//!
//! # State
//!
//! Files are inodes named by paths. There are two namespaces: the *current* one (what
//! `list`, `read_at`, ... see) and the *durable* one (what survives a crash). Each
//! inode holds its *durable* bytes, its *current* bytes (the page cache) and the data
//! operations (writes, truncates) issued since its last successful `sync_file`, in
//! order: its *pending* data. Namespace operations (create, rename, remove) are
//! pending, in one global order, until `sync_dir` of the directory they touch.
//!
//! # Durability (POSIX, taken strictly)
//!
//! - `sync_file(path)` makes that inode's pending data durable. It does not make the
//!   file's name durable.
//! - `sync_dir(dir)` makes every pending namespace operation in `dir` durable. A
//!   rename within one directory is one operation; a rename across directories is two:
//!   the new name (durable with the target directory) and the removal of the old one
//!   (durable with the source directory), so a crash may leave both names.
//! - Directories exist implicitly; a file at the root (no parent) has a name no
//!   `sync_dir` can reach, so only a crash that keeps it makes it durable.
//! - `create` of an existing path truncates it to empty (a pending data operation).
//!
//! # Crash ([`SimDisk::crash`])
//!
//! A crash throws away everything not durable. It picks a [`CrashMode`] from the RNG
//! (lose all pending state 1/4, keep all of it 1/4, decide piece by piece 1/2), then:
//! - namespace: a prefix of the pending namespace operations, in issue order, is kept
//!   (none, all, or a uniform length); the rest are lost;
//! - data: each pending write is independently lost, kept, or torn: split at sector
//!   boundaries (absolute file offsets; sector size 512 B or 4 KiB from the plan) with
//!   each piece independently kept; each pending truncate is kept or lost;
//! - survivors are applied in issue order to the durable state, which becomes the
//!   current state; inodes no durable name reaches are gone.
//!
//! So after a crash every byte of a file is a durable byte at that position, a byte
//! some pending write put at that position, or zero (a hole); nothing is invented.
//!
//! # Faults ([`DiskFaultPlan`])
//!
//! Each has a probability per operation, drawn from the disk's seeded RNG:
//! - `read_error_ppm`: `read_at` fails with `Io`;
//! - `write_error_ppm`: `write_at` fails with `Io`; half the time a strict prefix of
//!   its sector pieces has reached the page cache anyway (pending, visible to reads);
//! - `sync_error_ppm`: `sync_file` or `sync_dir` fails with `Io`. A failed `sync_file`
//!   **drops that file's pending data** (fsyncgate): reads still see it (the page
//!   cache keeps the pages), but it never becomes durable, and a later successful
//!   `sync_file` does not bring it back. A failed `sync_dir` leaves its operations
//!   pending (a crash may keep or lose them);
//! - `metadata_error_ppm`: create, truncate, rename, remove, list, length fail with
//!   `Io` and no effect;
//! - `bit_rot_ppm`: a successful non-empty read returns one flipped bit (the returned
//!   copy only; the stored bytes are intact);
//! - `capacity_bytes`: a create-extend (write, truncate) that would take the bytes of
//!   all live inodes above it fails with `NoSpace` and no effect;
//! - `latency`: a seeded delay (`madsim::time::sleep`), split around the moment the
//!   operation takes effect.
//!
//! An operation that started before a crash and had not taken effect yet fails with
//! `Io` and no effect (`stale_operations`): a dead process's IO never lands after the
//! restart. [`SimDisk::set_faults_enabled`]`(false)` turns off every error, ENOSPC and
//! bit rot (latency stays: it is timing, not failure) for a liveness phase.
//!
//! **Invariants**
//! - A byte is durable only after a successful `sync_file` of its inode made it so;
//!   a name only after a successful `sync_dir` of its directory (or a crash that kept
//!   it). Durable state never changes except by those two and by crash and wipe.
//! - Reads see the latest state (including pending and fsync-dropped data).
//! - The durable entries of a directory are always its namespace operations applied in
//!   issue order up to some point (asserted when they are applied).
//! - Every current name, durable name and pending namespace operation refers to an
//!   existing inode ([`SimDisk::check_invariants`]).
//! - The same seed, plan and sequence of calls give the same results, faults and
//!   crash outcome.

// The disk is shared by concurrently running IO tasks, so its state sits behind a lock
// that is never held across an await. Under madsim everything runs on one thread.

use crate::seed::{Delay, LatencyPlan, PPM_ONE, chance, pause, swarm_rate_ppm};
use aof2_core::driver::DiskPort;
use aof2_core::io::{DiskErrorKind, LocalPath};
use aof2_core::retry::DetRng;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// The largest file the simulated disk holds; a write or truncate past it fails with
/// `NoSpace` (a real filesystem's EFBIG), so a wild offset cannot exhaust memory.
pub const SIM_FILE_BYTES_MAX: u64 = 1 << 30;

/// Sector sizes a seeded plan picks from.
pub const SECTOR_BYTES_CHOICES: [u64; 2] = [512, 4_096];

/// Which faults are on, and how likely; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFaultPlan {
    /// The unit a pending write tears at in a crash.
    pub sector_bytes: u64,
    pub read_error_ppm: u32,
    pub write_error_ppm: u32,
    pub sync_error_ppm: u32,
    pub metadata_error_ppm: u32,
    pub bit_rot_ppm: u32,
    /// Total bytes of live files above which writes fail with `NoSpace`.
    pub capacity_bytes: Option<u64>,
    pub latency: LatencyPlan,
}

impl DiskFaultPlan {
    /// No faults, no latency, no capacity limit; 4 KiB sectors.
    #[must_use]
    pub const fn none() -> Self {
        DiskFaultPlan {
            sector_bytes: 4_096,
            read_error_ppm: 0,
            write_error_ppm: 0,
            sync_error_ppm: 0,
            metadata_error_ppm: 0,
            bit_rot_ppm: 0,
            capacity_bytes: None,
            latency: LatencyPlan::NONE,
        }
    }

    /// Swarm testing: the seed decides which faults are on (each half the time) and
    /// how likely each is, the sector size, whether there is a capacity (a quarter of
    /// the time, 1 .. 256 MiB) and the latency distribution.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        const CAPACITIES_BYTES: [u64; 4] = [1 << 20, 8 << 20, 64 << 20, 256 << 20];
        let mut rng = DetRng::new(seed);
        let sector_bytes =
            SECTOR_BYTES_CHOICES[rng.below(SECTOR_BYTES_CHOICES.len() as u64) as usize];
        let read_error_ppm = swarm_rate_ppm(&mut rng);
        let write_error_ppm = swarm_rate_ppm(&mut rng);
        let sync_error_ppm = swarm_rate_ppm(&mut rng);
        let metadata_error_ppm = swarm_rate_ppm(&mut rng);
        let bit_rot_ppm = swarm_rate_ppm(&mut rng);
        let capacity_bytes = (rng.below(4) == 0)
            .then(|| CAPACITIES_BYTES[rng.below(CAPACITIES_BYTES.len() as u64) as usize]);
        let latency = LatencyPlan::from_rng(&mut rng);
        DiskFaultPlan {
            sector_bytes,
            read_error_ppm,
            write_error_ppm,
            sync_error_ppm,
            metadata_error_ppm,
            bit_rot_ppm,
            capacity_bytes,
            latency,
        }
    }

    /// This plan without latency (for tests that run without a runtime).
    #[must_use]
    pub const fn without_latency(self) -> Self {
        DiskFaultPlan {
            latency: LatencyPlan::NONE,
            ..self
        }
    }

    fn validate(&self) {
        assert!(
            SECTOR_BYTES_CHOICES.contains(&self.sector_bytes),
            "sector_bytes must be 512 or 4096, not {}",
            self.sector_bytes
        );
        for ppm in [
            self.read_error_ppm,
            self.write_error_ppm,
            self.sync_error_ppm,
            self.metadata_error_ppm,
            self.bit_rot_ppm,
            self.latency.tail_ppm,
        ] {
            assert!(ppm <= PPM_ONE, "a probability is at most {PPM_ONE} ppm");
        }
    }
}

/// How a crash treats what was not durable. [`SimDisk::crash`] draws one; tests that
/// want an exact outcome name one with [`SimDisk::crash_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every pending namespace operation and data operation is lost.
    LosePending,
    /// Every pending operation survives (as if written back just before the crash).
    /// Data dropped by a failed `sync_file` is still lost.
    KeepPending,
    /// A random prefix of the namespace operations; each write lost, kept or torn;
    /// each truncate lost or kept.
    Random,
}

/// What one crash (or all crashes, in [`SimDiskStats::crash_totals`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub writes_kept: u64,
    pub writes_lost: u64,
    pub writes_torn: u64,
    pub truncates_kept: u64,
    pub truncates_lost: u64,
    pub namespace_ops_kept: u64,
    pub namespace_ops_lost: u64,
}

impl CrashReport {
    fn add(&mut self, other: &CrashReport) {
        self.writes_kept += other.writes_kept;
        self.writes_lost += other.writes_lost;
        self.writes_torn += other.writes_torn;
        self.truncates_kept += other.truncates_kept;
        self.truncates_lost += other.truncates_lost;
        self.namespace_ops_kept += other.namespace_ops_kept;
        self.namespace_ops_lost += other.namespace_ops_lost;
    }
}

/// Counters of every fault injected, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub read_errors: u64,
    pub write_errors: u64,
    /// Write errors that left a prefix of the write in the page cache.
    pub partial_writes: u64,
    pub sync_file_errors: u64,
    pub sync_dir_errors: u64,
    /// Pending data operations dropped by failed `sync_file`s (fsyncgate).
    pub pending_ops_dropped: u64,
    pub metadata_errors: u64,
    pub no_space_errors: u64,
    pub bit_rot: u64,
    /// Operations that were delayed.
    pub delayed_operations: u64,
    /// Operations that began before a crash or wipe and were refused after it.
    pub stale_operations: u64,
    pub crashes: u64,
    pub wipes: u64,
    pub crash_totals: CrashReport,
}

type InodeId = u64;

/// A data operation not yet durable.
#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, bytes: Bytes },
    Truncate { length: u64 },
}

impl DataOp {
    fn apply(&self, file: &mut Vec<u8>) {
        match self {
            DataOp::Write { offset, bytes } => write_into(file, *offset, bytes),
            DataOp::Truncate { length } => file.resize(to_index(*length), 0),
        }
    }
}

/// Writes `bytes` at `offset`, zero-filling any hole.
fn write_into(file: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = to_index(offset);
    let end = start + bytes.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[start..end].copy_from_slice(bytes);
}

/// Offsets and lengths are checked against [`SIM_FILE_BYTES_MAX`] before they reach
/// the byte vectors.
fn to_index(value: u64) -> usize {
    assert!(
        value <= SIM_FILE_BYTES_MAX,
        "a checked offset exceeds the simulated file size maximum"
    );
    usize::try_from(value).expect("SIM_FILE_BYTES_MAX fits usize")
}

/// The pieces of `offset..offset + length` cut at absolute multiples of
/// `sector_bytes`, as `(start, end)` offsets within the write.
pub(crate) fn sector_pieces(offset: u64, length: u64, sector_bytes: u64) -> Vec<(u64, u64)> {
    assert!(sector_bytes > 0);
    let mut pieces = Vec::new();
    let mut at = offset;
    let end = offset + length;
    while at < end {
        let next = ((at / sector_bytes) + 1) * sector_bytes;
        let piece_end = next.min(end);
        pieces.push((at - offset, piece_end - offset));
        at = piece_end;
    }
    pieces
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    /// The page cache: what reads see.
    current: Vec<u8>,
    /// Data operations since the last successful `sync_file` (or since the last
    /// failed one dropped them), in issue order.
    pending: Vec<DataOp>,
}

/// A namespace operation not yet durable.
#[derive(Debug, Clone)]
enum NamespaceOp {
    /// `path` names `inode` (a create, or the new name of a cross-directory rename).
    Link { path: String, inode: InodeId },
    /// `path` stops naming `inode` (a remove, or the old name of a cross-directory
    /// rename).
    Unlink { path: String, inode: InodeId },
    /// A rename within one directory, atomic.
    Rename {
        from: String,
        to: String,
        inode: InodeId,
    },
}

impl NamespaceOp {
    fn dir(&self) -> &str {
        match self {
            NamespaceOp::Link { path, .. } | NamespaceOp::Unlink { path, .. } => dir_of(path),
            NamespaceOp::Rename { from, .. } => dir_of(from),
        }
    }

    fn inode(&self) -> InodeId {
        match self {
            NamespaceOp::Link { inode, .. }
            | NamespaceOp::Unlink { inode, .. }
            | NamespaceOp::Rename { inode, .. } => *inode,
        }
    }

    /// Applies this operation to the durable namespace. Operations of one directory
    /// are applied in issue order, so an unlinked name always names the inode it did
    /// when the operation was issued.
    fn apply(&self, names: &mut BTreeMap<String, InodeId>) {
        match self {
            NamespaceOp::Link { path, inode } => {
                names.insert(path.clone(), *inode);
            }
            NamespaceOp::Unlink { path, inode } => {
                let removed = names.remove(path);
                assert_eq!(
                    removed,
                    Some(*inode),
                    "durable {path} names the inode its unlink was issued for"
                );
            }
            NamespaceOp::Rename { from, to, inode } => {
                let removed = names.remove(from);
                assert_eq!(
                    removed,
                    Some(*inode),
                    "durable {from} names the inode its rename was issued for"
                );
                names.insert(to.clone(), *inode);
            }
        }
    }
}

/// The directory part of a path (`""` at the root).
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The entries directly under `dir` (files, and implicit subdirectories), sorted.
fn list_names(names: &BTreeMap<String, InodeId>, dir: &str) -> Vec<String> {
    let prefix = format!("{dir}/");
    let entries: BTreeSet<String> = names
        .range(prefix.clone()..)
        .map(|(path, _)| path)
        .take_while(|path| path.starts_with(&prefix))
        .map(|path| {
            let rest = &path[prefix.len()..];
            rest.split('/').next().unwrap_or(rest).to_owned()
        })
        .collect();
    entries.into_iter().collect()
}

#[derive(Debug)]
struct DiskState {
    plan: DiskFaultPlan,
    faults_enabled: bool,
    rng: DetRng,
    /// Bumped by every crash and wipe.
    generation: u64,
    next_inode: InodeId,
    inodes: BTreeMap<InodeId, Inode>,
    current_names: BTreeMap<String, InodeId>,
    durable_names: BTreeMap<String, InodeId>,
    /// In issue order.
    pending_namespace: Vec<NamespaceOp>,
    stats: SimDiskStats,
}

impl DiskState {
    fn fault(&mut self, ppm: u32) -> bool {
        self.faults_enabled && chance(&mut self.rng, ppm)
    }

    fn metadata_fault(&mut self) -> Result<(), DiskErrorKind> {
        if self.fault(self.plan.metadata_error_ppm) {
            self.stats.metadata_errors += 1;
            return Err(DiskErrorKind::Io);
        }
        Ok(())
    }

    fn resolve(&self, path: &LocalPath) -> Result<InodeId, DiskErrorKind> {
        self.current_names
            .get(path.as_str())
            .copied()
            .ok_or(DiskErrorKind::NotFound)
    }

    fn inode_mut(&mut self, inode: InodeId) -> &mut Inode {
        self.inodes
            .get_mut(&inode)
            .expect("a named inode exists (check_invariants)")
    }

    fn usage_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| inode.current.len() as u64)
            .sum()
    }

    /// Refuses growing `inode` to `new_length` bytes if that passes the file maximum
    /// or (with faults on) the capacity.
    fn check_space(&mut self, inode: InodeId, new_length: u64) -> Result<(), DiskErrorKind> {
        if new_length > SIM_FILE_BYTES_MAX {
            self.stats.no_space_errors += 1;
            return Err(DiskErrorKind::NoSpace);
        }
        let length = self.inodes[&inode].current.len() as u64;
        let growth = new_length.saturating_sub(length);
        if let (true, Some(capacity)) = (self.faults_enabled, self.plan.capacity_bytes)
            && growth > 0
            && self.usage_bytes() + growth > capacity
        {
            self.stats.no_space_errors += 1;
            return Err(DiskErrorKind::NoSpace);
        }
        Ok(())
    }

    /// Issues a data operation: visible at once, durable at the next `sync_file`.
    fn push_data(&mut self, inode: InodeId, op: DataOp) {
        let inode = self.inode_mut(inode);
        op.apply(&mut inode.current);
        inode.pending.push(op);
    }

    fn create(&mut self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.metadata_fault()?;
        if let Some(&inode) = self.current_names.get(path.as_str()) {
            self.push_data(inode, DataOp::Truncate { length: 0 });
        } else {
            let inode = self.next_inode;
            self.next_inode += 1;
            self.inodes.insert(inode, Inode::default());
            self.current_names.insert(path.to_string(), inode);
            self.pending_namespace.push(NamespaceOp::Link {
                path: path.to_string(),
                inode,
            });
        }
        Ok(())
    }

    fn write_at(
        &mut self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind> {
        let inode = self.resolve(path)?;
        let end = offset.saturating_add(bytes.len() as u64);
        self.check_space(inode, end)?;
        if self.fault(self.plan.write_error_ppm) {
            self.stats.write_errors += 1;
            if self.rng.below(2) == 0 {
                let pieces = sector_pieces(offset, bytes.len() as u64, self.plan.sector_bytes);
                let kept = self.rng.below(pieces.len().max(1) as u64) as usize;
                if kept > 0 {
                    self.stats.partial_writes += 1;
                    let prefix_end = to_index(pieces[kept - 1].1);
                    self.push_data(
                        inode,
                        DataOp::Write {
                            offset,
                            bytes: bytes.slice(..prefix_end),
                        },
                    );
                }
            }
            return Err(DiskErrorKind::Io);
        }
        if !bytes.is_empty() {
            self.push_data(inode, DataOp::Write { offset, bytes });
        }
        Ok(())
    }

    fn read_at(
        &mut self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind> {
        let inode = self.resolve(path)?;
        if self.fault(self.plan.read_error_ppm) {
            self.stats.read_errors += 1;
            return Err(DiskErrorKind::Io);
        }
        let file = &self.inodes[&inode].current;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.len());
        let end = start
            .saturating_add(usize::try_from(length).unwrap_or(usize::MAX))
            .min(file.len());
        let mut copy = file[start..end].to_vec();
        if !copy.is_empty() && self.fault(self.plan.bit_rot_ppm) {
            self.stats.bit_rot += 1;
            let bit = self.rng.below(copy.len() as u64 * 8);
            copy[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        Ok(Bytes::from(copy))
    }

    fn truncate(&mut self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
        let inode = self.resolve(path)?;
        self.metadata_fault()?;
        self.check_space(inode, length)?;
        self.push_data(inode, DataOp::Truncate { length });
        Ok(())
    }

    fn sync_file(&mut self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        let inode_id = self.resolve(path)?;
        if self.fault(self.plan.sync_error_ppm) {
            self.stats.sync_file_errors += 1;
            let inode = self.inode_mut(inode_id);
            let dropped = inode.pending.len() as u64;
            inode.pending.clear();
            self.stats.pending_ops_dropped += dropped;
            return Err(DiskErrorKind::Io);
        }
        let inode = self.inode_mut(inode_id);
        for op in inode.pending.drain(..) {
            op.apply(&mut inode.durable);
        }
        Ok(())
    }

    fn sync_dir(&mut self, dir: &LocalPath) -> Result<(), DiskErrorKind> {
        if self.fault(self.plan.sync_error_ppm) {
            self.stats.sync_dir_errors += 1;
            return Err(DiskErrorKind::Io);
        }
        let (synced, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_namespace)
            .into_iter()
            .partition(|op| op.dir() == dir.as_str());
        self.pending_namespace = rest;
        for op in &synced {
            op.apply(&mut self.durable_names);
        }
        self.collect_garbage();
        Ok(())
    }

    fn rename(&mut self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
        let inode = self.resolve(from)?;
        self.metadata_fault()?;
        if from == to {
            return Ok(());
        }
        self.current_names.remove(from.as_str());
        self.current_names.insert(to.to_string(), inode);
        if dir_of(from.as_str()) == dir_of(to.as_str()) {
            self.pending_namespace.push(NamespaceOp::Rename {
                from: from.to_string(),
                to: to.to_string(),
                inode,
            });
        } else {
            self.pending_namespace.push(NamespaceOp::Link {
                path: to.to_string(),
                inode,
            });
            self.pending_namespace.push(NamespaceOp::Unlink {
                path: from.to_string(),
                inode,
            });
        }
        Ok(())
    }

    fn remove(&mut self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        let inode = self.resolve(path)?;
        self.metadata_fault()?;
        self.current_names.remove(path.as_str());
        self.pending_namespace.push(NamespaceOp::Unlink {
            path: path.to_string(),
            inode,
        });
        Ok(())
    }

    fn list(&mut self, dir: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
        self.metadata_fault()?;
        Ok(list_names(&self.current_names, dir.as_str()))
    }

    /// Directories exist implicitly in this model, so creating one changes nothing;
    /// it can still fail with an injected metadata fault, as `mkdir` can.
    fn create_dir(&mut self, _dir: &LocalPath) -> Result<(), DiskErrorKind> {
        self.metadata_fault()
    }

    fn length(&mut self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
        let inode = self.resolve(path)?;
        self.metadata_fault()?;
        Ok(self.inodes[&inode].current.len() as u64)
    }

    /// Drops inodes that no name (current or durable) and no pending namespace
    /// operation refers to: nothing can reach them again.
    fn collect_garbage(&mut self) {
        let reachable: BTreeSet<InodeId> = self
            .current_names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .chain(self.pending_namespace.iter().map(NamespaceOp::inode))
            .collect();
        self.inodes.retain(|id, _| reachable.contains(id));
    }

    fn crash(&mut self, mode: CrashMode, rng: &mut DetRng) -> CrashReport {
        let mut report = CrashReport::default();
        let pending = std::mem::take(&mut self.pending_namespace);
        let kept = match mode {
            CrashMode::LosePending => 0,
            CrashMode::KeepPending => pending.len(),
            CrashMode::Random => rng.below(pending.len() as u64 + 1) as usize,
        };
        for op in &pending[..kept] {
            op.apply(&mut self.durable_names);
        }
        report.namespace_ops_kept = kept as u64;
        report.namespace_ops_lost = (pending.len() - kept) as u64;
        self.current_names = self.durable_names.clone();
        self.collect_garbage();

        let sector_bytes = self.plan.sector_bytes;
        for inode in self.inodes.values_mut() {
            for op in std::mem::take(&mut inode.pending) {
                match op {
                    DataOp::Write { offset, bytes } => {
                        let fate = match mode {
                            CrashMode::LosePending => 0,
                            CrashMode::KeepPending => 1,
                            CrashMode::Random => rng.below(3),
                        };
                        match fate {
                            0 => report.writes_lost += 1,
                            1 => {
                                report.writes_kept += 1;
                                write_into(&mut inode.durable, offset, &bytes);
                            }
                            _ => {
                                report.writes_torn += 1;
                                for (start, end) in
                                    sector_pieces(offset, bytes.len() as u64, sector_bytes)
                                {
                                    if rng.below(2) == 0 {
                                        write_into(
                                            &mut inode.durable,
                                            offset + start,
                                            &bytes[to_index(start)..to_index(end)],
                                        );
                                    }
                                }
                            }
                        }
                    }
                    DataOp::Truncate { length } => {
                        let keep = match mode {
                            CrashMode::LosePending => false,
                            CrashMode::KeepPending => true,
                            CrashMode::Random => rng.below(2) == 0,
                        };
                        if keep {
                            report.truncates_kept += 1;
                            DataOp::Truncate { length }.apply(&mut inode.durable);
                        } else {
                            report.truncates_lost += 1;
                        }
                    }
                }
            }
            inode.current = inode.durable.clone();
        }
        self.generation += 1;
        self.stats.crashes += 1;
        self.stats.crash_totals.add(&report);
        report
    }
}

/// A simulated disk; see the module doc for its model. Share it as an
/// `Arc<SimDisk>`: the port trait is implemented on `SimDisk` itself, and the
/// inspection methods read the same state.
#[derive(Debug)]
pub struct SimDisk {
    state: Mutex<DiskState>,
}

impl SimDisk {
    /// An empty disk whose faults draw from `seed`.
    #[must_use]
    pub fn new(seed: u64, plan: DiskFaultPlan) -> Self {
        plan.validate();
        SimDisk {
            state: Mutex::new(DiskState {
                plan,
                faults_enabled: true,
                rng: DetRng::new(seed),
                generation: 0,
                next_inode: 0,
                inodes: BTreeMap::new(),
                current_names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending_namespace: Vec::new(),
                stats: SimDiskStats::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.state
            .lock()
            .expect("no thread panics while holding the simulated disk's lock")
    }

    /// Runs one port operation: delay, then (unless a crash came in between) the
    /// operation, then the rest of the delay.
    async fn operate<T>(
        &self,
        operation: impl FnOnce(&mut DiskState) -> Result<T, DiskErrorKind> + Send,
    ) -> Result<T, DiskErrorKind> {
        let (generation, delay) = {
            let mut state = self.state();
            let latency = state.plan.latency;
            let delay: Delay = latency.draw(&mut state.rng);
            if !delay.is_zero() {
                state.stats.delayed_operations += 1;
            }
            (state.generation, delay)
        };
        pause(delay.before_us).await;
        let result = {
            let mut state = self.state();
            if state.generation == generation {
                operation(&mut state)
            } else {
                state.stats.stale_operations += 1;
                Err(DiskErrorKind::Io)
            }
        };
        pause(delay.after_us).await;
        result
    }

    /// Crashes the machine: everything not durable is lost, kept or torn as a
    /// [`CrashMode`] drawn from `rng` decides (see the module doc).
    pub fn crash(&self, rng: &mut DetRng) -> CrashReport {
        let mode = match rng.below(4) {
            0 => CrashMode::LosePending,
            1 => CrashMode::KeepPending,
            _ => CrashMode::Random,
        };
        self.crash_with(mode, rng)
    }

    /// Crashes with a chosen mode; `rng` decides the details of [`CrashMode::Random`].
    pub fn crash_with(&self, mode: CrashMode, rng: &mut DetRng) -> CrashReport {
        let mut state = self.state();
        let report = state.crash(mode, rng);
        drop(state);
        self.check_invariants();
        report
    }

    /// Whole-disk loss: every file, durable or not, is gone (restore-from-Tier-2
    /// scenarios). Operations in flight are refused like after a crash.
    pub fn wipe(&self) {
        let mut state = self.state();
        state.inodes.clear();
        state.current_names.clear();
        state.durable_names.clear();
        state.pending_namespace.clear();
        state.generation += 1;
        state.stats.wipes += 1;
    }

    /// Turns every error, ENOSPC and bit rot on or off (latency stays).
    pub fn set_faults_enabled(&self, enabled: bool) {
        self.state().faults_enabled = enabled;
    }

    #[must_use]
    pub fn faults_enabled(&self) -> bool {
        self.state().faults_enabled
    }

    /// Replaces the fault plan (e.g. to change phases); the RNG continues.
    pub fn set_plan(&self, plan: DiskFaultPlan) {
        plan.validate();
        self.state().plan = plan;
    }

    #[must_use]
    pub fn plan(&self) -> DiskFaultPlan {
        self.state().plan
    }

    #[must_use]
    pub fn stats(&self) -> SimDiskStats {
        self.state().stats
    }

    /// How many crashes and wipes happened: an operation begun in one generation does
    /// not take effect in a later one.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// The bytes a crash losing everything pending would leave at `path`, if any.
    #[must_use]
    pub fn durable_file(&self, path: &str) -> Option<Vec<u8>> {
        let state = self.state();
        let inode = state.durable_names.get(path)?;
        Some(state.inodes[inode].durable.clone())
    }

    /// The bytes reads see at `path` now, if it exists.
    #[must_use]
    pub fn current_file(&self, path: &str) -> Option<Vec<u8>> {
        let state = self.state();
        let inode = state.current_names.get(path)?;
        Some(state.inodes[inode].current.clone())
    }

    /// Whether `path` is fully durable: its durable name and current name are the
    /// same inode, and its durable bytes are what reads see, with nothing pending.
    #[must_use]
    pub fn file_is_durable(&self, path: &str) -> bool {
        let state = self.state();
        match (state.current_names.get(path), state.durable_names.get(path)) {
            (Some(current), Some(durable)) if current == durable => {
                let inode = &state.inodes[current];
                inode.pending.is_empty() && inode.current == inode.durable
            }
            _ => false,
        }
    }

    /// The durable entries directly under `dir` (files and implicit subdirectories).
    #[must_use]
    pub fn list_durable(&self, dir: &str) -> Vec<String> {
        list_names(&self.state().durable_names, dir)
    }

    /// The current entries directly under `dir`.
    #[must_use]
    pub fn list_current(&self, dir: &str) -> Vec<String> {
        list_names(&self.state().current_names, dir)
    }

    /// Every durable file path, sorted.
    #[must_use]
    pub fn durable_paths(&self) -> Vec<String> {
        self.state().durable_names.keys().cloned().collect()
    }

    /// Every current file path, sorted.
    #[must_use]
    pub fn current_paths(&self) -> Vec<String> {
        self.state().current_names.keys().cloned().collect()
    }

    /// Bytes held by live files (what the capacity limits).
    #[must_use]
    pub fn usage_bytes(&self) -> u64 {
        self.state().usage_bytes()
    }

    /// Asserts the model's internal consistency. Cheap enough to call after every
    /// step of a test.
    pub fn check_invariants(&self) {
        let state = self.state();
        for (path, inode) in &state.current_names {
            assert!(
                state.inodes.contains_key(inode),
                "current {path} names a live inode"
            );
        }
        for (path, inode) in &state.durable_names {
            assert!(
                state.inodes.contains_key(inode),
                "durable {path} names a live inode"
            );
        }
        for op in &state.pending_namespace {
            assert!(
                state.inodes.contains_key(&op.inode()),
                "a pending namespace operation names a live inode"
            );
        }
        for (id, inode) in &state.inodes {
            assert!(id < &state.next_inode, "inode ids come from the counter");
            assert!(inode.current.len() as u64 <= SIM_FILE_BYTES_MAX);
            assert!(inode.durable.len() as u64 <= SIM_FILE_BYTES_MAX);
        }
    }
}

#[async_trait]
impl DiskPort for SimDisk {
    async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.create(path)).await
    }

    async fn write_at(
        &self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.write_at(path, offset, bytes))
            .await
    }

    async fn read_at(
        &self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind> {
        self.operate(|state| state.read_at(path, offset, length))
            .await
    }

    async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.truncate(path, length)).await
    }

    async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.sync_file(path)).await
    }

    async fn sync_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.sync_dir(path)).await
    }

    async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.rename(from, to)).await
    }

    async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.remove(path)).await
    }

    async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
        self.operate(|state| state.list(path)).await
    }

    async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
        self.operate(|state| state.length(path)).await
    }

    async fn create_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.operate(|state| state.create_dir(path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn path(text: &str) -> LocalPath {
        LocalPath::from_components(&text.split('/').collect::<Vec<_>>())
    }

    fn disk(plan: DiskFaultPlan) -> SimDisk {
        SimDisk::new(1, plan)
    }

    /// Creates `name`, writes `bytes`, and makes both durable.
    fn write_durably(disk: &SimDisk, name: &str, bytes: &[u8]) {
        let file = path(name);
        block_on(async {
            disk.create(&file).await.unwrap();
            disk.write_at(&file, 0, Bytes::copy_from_slice(bytes))
                .await
                .unwrap();
            disk.sync_file(&file).await.unwrap();
            disk.sync_dir(&file.parent().unwrap()).await.unwrap();
        });
        assert!(disk.file_is_durable(name));
    }

    const MODES: [CrashMode; 3] = [
        CrashMode::LosePending,
        CrashMode::KeepPending,
        CrashMode::Random,
    ];

    #[test]
    fn sector_pieces_cut_at_absolute_boundaries() {
        assert_eq!(
            sector_pieces(100, 1_000, 512),
            [(0, 412), (412, 924), (924, 1_000)]
        );
        assert_eq!(sector_pieces(512, 512, 512), [(0, 512)]);
        assert!(sector_pieces(7, 0, 512).is_empty());
    }

    #[test]
    fn synced_data_survives_every_crash() {
        for seed in 0..50 {
            let disk = disk(DiskFaultPlan::none());
            write_durably(&disk, "d/a", b"durable bytes");
            let mut rng = DetRng::new(seed);
            let mode = MODES[seed as usize % 3];
            disk.crash_with(mode, &mut rng);
            assert_eq!(disk.durable_file("d/a").unwrap(), b"durable bytes");
            assert_eq!(disk.current_file("d/a").unwrap(), b"durable bytes");
            assert_eq!(disk.list_current("d"), ["a"]);
            disk.crash(&mut rng);
            assert_eq!(disk.current_file("d/a").unwrap(), b"durable bytes");
        }
    }

    /// Bytes no write uses, so a surviving byte's origin is unambiguous.
    fn pattern(tag: u8, length: usize) -> Vec<u8> {
        (0..length)
            .map(|index| tag.wrapping_mul(31).wrapping_add(index as u8) | 1)
            .collect()
    }

    #[test]
    fn unsynced_writes_are_lost_kept_or_torn_but_never_invented() {
        let (mut saw_lost, mut saw_kept, mut saw_torn) = (false, false, false);
        for seed in 0..200 {
            let sector_bytes = SECTOR_BYTES_CHOICES[seed as usize % 2];
            let disk = disk(DiskFaultPlan {
                sector_bytes,
                ..DiskFaultPlan::none()
            });
            let durable = pattern(1, 3 * 4_096 + 10);
            write_durably(&disk, "d/f", &durable);
            let file = path("d/f");
            let writes = [
                (2, 300_u64, 9_000_usize),
                (3, 5_000, 4_000),
                (4, 12_000, 6_000),
            ];
            block_on(async {
                for (tag, offset, length) in writes {
                    let bytes = Bytes::from(pattern(tag, length));
                    disk.write_at(&file, offset, bytes).await.unwrap();
                }
            });
            let mut rng = DetRng::new(seed);
            let report = disk.crash_with(CrashMode::Random, &mut rng);
            assert_eq!(
                report.writes_kept + report.writes_lost + report.writes_torn,
                3
            );
            let after = disk.durable_file("d/f").unwrap();
            assert_eq!(disk.current_file("d/f").unwrap(), after);
            let longest = writes
                .iter()
                .map(|(_, offset, length)| *offset as usize + length)
                .max()
                .unwrap()
                .max(durable.len());
            assert!(after.len() <= longest);
            assert!(after.len() >= durable.len(), "no truncate was pending");
            let written: Vec<(usize, Vec<u8>)> = writes
                .iter()
                .map(|(tag, offset, length)| (*offset as usize, pattern(*tag, *length)))
                .collect();
            for (position, byte) in after.iter().enumerate() {
                let from_durable = durable.get(position) == Some(byte);
                let from_write = written.iter().any(|(offset, bytes)| {
                    position >= *offset && bytes.get(position - offset) == Some(byte)
                });
                assert!(
                    from_durable || from_write || *byte == 0,
                    "seed {seed}: byte {byte} at {position} was never written there"
                );
            }
            saw_lost |= report.writes_lost > 0;
            saw_kept |= report.writes_kept > 0;
            saw_torn |= report.writes_torn > 0 && after != durable;
        }
        assert!(saw_lost && saw_kept && saw_torn);
    }

    #[test]
    fn losing_all_pending_state_leaves_exactly_the_durable_state() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/f", b"0123456789");
        let file = path("d/f");
        block_on(async {
            disk.write_at(&file, 5, Bytes::from_static(b"xxxxxxxx"))
                .await
                .unwrap();
            disk.truncate(&file, 3).await.unwrap();
        });
        assert_eq!(disk.current_file("d/f").unwrap(), b"012");
        assert!(!disk.file_is_durable("d/f"));
        disk.crash_with(CrashMode::LosePending, &mut DetRng::new(0));
        assert_eq!(disk.current_file("d/f").unwrap(), b"0123456789");
    }

    #[test]
    fn keeping_all_pending_state_leaves_what_reads_saw() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/f", b"0123456789");
        let file = path("d/f");
        block_on(async {
            disk.write_at(&file, 5, Bytes::from_static(b"xxxxxxxx"))
                .await
                .unwrap();
            disk.truncate(&file, 7).await.unwrap();
            disk.create(&path("d/g")).await.unwrap();
        });
        disk.crash_with(CrashMode::KeepPending, &mut DetRng::new(0));
        assert_eq!(disk.current_file("d/f").unwrap(), b"01234xx");
        assert_eq!(disk.list_current("d"), ["f", "g"]);
    }

    #[test]
    fn create_rename_remove_without_sync_dir_are_undone_by_a_crash() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/old", b"old");
        write_durably(&disk, "d/gone", b"gone");
        block_on(async {
            let new = path("d/new");
            disk.create(&new).await.unwrap();
            disk.write_at(&new, 0, Bytes::from_static(b"new"))
                .await
                .unwrap();
            // The data is durable; the name is not.
            disk.sync_file(&new).await.unwrap();
            disk.rename(&path("d/old"), &path("d/renamed"))
                .await
                .unwrap();
            disk.remove(&path("d/gone")).await.unwrap();
        });
        assert_eq!(disk.list_current("d"), ["new", "renamed"]);
        assert_eq!(disk.list_durable("d"), ["gone", "old"]);
        disk.crash_with(CrashMode::LosePending, &mut DetRng::new(0));
        assert_eq!(disk.list_current("d"), ["gone", "old"]);
        assert_eq!(disk.current_file("d/old").unwrap(), b"old");
        assert_eq!(disk.current_file("d/gone").unwrap(), b"gone");
    }

    #[test]
    fn create_rename_remove_with_sync_dir_survive_a_crash() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/old", b"old");
        write_durably(&disk, "d/gone", b"gone");
        block_on(async {
            let new = path("d/new.tmp");
            disk.create(&new).await.unwrap();
            disk.write_at(&new, 0, Bytes::from_static(b"new"))
                .await
                .unwrap();
            disk.sync_file(&new).await.unwrap();
            disk.rename(&new, &path("d/new")).await.unwrap();
            disk.rename(&path("d/old"), &path("d/renamed"))
                .await
                .unwrap();
            disk.remove(&path("d/gone")).await.unwrap();
            // Another directory's sync does not help.
            disk.sync_dir(&path("e")).await.unwrap();
            assert_eq!(disk.list_durable("d"), ["gone", "old"]);
            disk.sync_dir(&path("d")).await.unwrap();
        });
        for seed in 0..20 {
            let mut rng = DetRng::new(seed);
            disk.crash(&mut rng);
            assert_eq!(disk.list_current("d"), ["new", "renamed"]);
            assert_eq!(disk.current_file("d/new").unwrap(), b"new");
            assert_eq!(disk.current_file("d/renamed").unwrap(), b"old");
        }
    }

    #[test]
    fn a_cross_directory_rename_needs_both_directories_synced() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "a/f", b"f");
        block_on(async {
            disk.rename(&path("a/f"), &path("b/f")).await.unwrap();
            disk.sync_dir(&path("b")).await.unwrap();
        });
        disk.crash_with(CrashMode::LosePending, &mut DetRng::new(0));
        // The new name is durable, the removal of the old one is not.
        assert_eq!(disk.current_paths(), ["a/f", "b/f"]);
        block_on(async {
            disk.rename(&path("a/f"), &path("b/g")).await.unwrap();
            disk.sync_dir(&path("a")).await.unwrap();
            disk.sync_dir(&path("b")).await.unwrap();
        });
        disk.crash_with(CrashMode::LosePending, &mut DetRng::new(0));
        assert_eq!(disk.current_paths(), ["b/f", "b/g"]);
    }

    #[test]
    fn a_failed_fsync_drops_pending_data_for_good() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/f", b"old");
        let file = path("d/f");
        block_on(async {
            disk.write_at(&file, 3, Bytes::from_static(b"+lost"))
                .await
                .unwrap();
            disk.set_plan(DiskFaultPlan {
                sync_error_ppm: PPM_ONE,
                ..DiskFaultPlan::none()
            });
            assert_eq!(disk.sync_file(&file).await, Err(DiskErrorKind::Io));
            disk.set_plan(DiskFaultPlan::none());
            // The page cache still shows the data, and a retried fsync succeeds...
            assert_eq!(
                disk.read_at(&file, 0, 100).await.unwrap(),
                Bytes::from_static(b"old+lost")
            );
            disk.sync_file(&file).await.unwrap();
        });
        // ...but the data is not durable and never will be.
        assert!(!disk.file_is_durable("d/f"));
        assert_eq!(disk.durable_file("d/f").unwrap(), b"old");
        assert_eq!(disk.stats().sync_file_errors, 1);
        assert_eq!(disk.stats().pending_ops_dropped, 1);
        disk.crash_with(CrashMode::KeepPending, &mut DetRng::new(0));
        assert_eq!(disk.current_file("d/f").unwrap(), b"old");
    }

    #[test]
    fn a_failed_sync_dir_leaves_the_names_pending() {
        let disk = disk(DiskFaultPlan {
            sync_error_ppm: PPM_ONE,
            ..DiskFaultPlan::none()
        });
        block_on(async {
            disk.create(&path("d/f")).await.unwrap();
            assert_eq!(disk.sync_dir(&path("d")).await, Err(DiskErrorKind::Io));
        });
        assert!(disk.list_durable("d").is_empty());
        disk.crash_with(CrashMode::LosePending, &mut DetRng::new(0));
        assert!(disk.current_paths().is_empty());
        assert_eq!(disk.stats().sync_dir_errors, 1);
    }

    #[test]
    fn writes_past_the_capacity_fail_with_no_space() {
        let disk = disk(DiskFaultPlan {
            capacity_bytes: Some(10_000),
            ..DiskFaultPlan::none()
        });
        let file = path("d/f");
        block_on(async {
            disk.create(&file).await.unwrap();
            disk.write_at(&file, 0, Bytes::from(vec![1; 8_000]))
                .await
                .unwrap();
            // Overwriting in place needs no space.
            disk.write_at(&file, 0, Bytes::from(vec![2; 8_000]))
                .await
                .unwrap();
            assert_eq!(
                disk.write_at(&file, 8_000, Bytes::from(vec![3; 2_001]))
                    .await,
                Err(DiskErrorKind::NoSpace)
            );
            assert_eq!(
                disk.truncate(&file, 10_001).await,
                Err(DiskErrorKind::NoSpace)
            );
            assert_eq!(disk.length(&file).await.unwrap(), 8_000);
            disk.write_at(&file, 8_000, Bytes::from(vec![3; 2_000]))
                .await
                .unwrap();
            disk.set_faults_enabled(false);
            disk.write_at(&file, 10_000, Bytes::from(vec![4; 5]))
                .await
                .unwrap();
        });
        assert_eq!(disk.usage_bytes(), 10_005);
        assert_eq!(disk.stats().no_space_errors, 2);
    }

    #[test]
    fn bit_rot_flips_one_bit_of_the_returned_copy_only() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/f", &[0xAA; 64]);
        disk.set_plan(DiskFaultPlan {
            bit_rot_ppm: PPM_ONE,
            ..DiskFaultPlan::none()
        });
        let read = block_on(disk.read_at(&path("d/f"), 0, 64)).unwrap();
        let flipped: u32 = read.iter().map(|byte| (byte ^ 0xAA).count_ones()).sum();
        assert_eq!(flipped, 1);
        assert_eq!(disk.current_file("d/f").unwrap(), [0xAA; 64]);
        assert_eq!(disk.durable_file("d/f").unwrap(), [0xAA; 64]);
        assert_eq!(disk.stats().bit_rot, 1);
    }

    #[test]
    fn read_and_metadata_errors_change_nothing() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/f", b"f");
        disk.set_plan(DiskFaultPlan {
            read_error_ppm: PPM_ONE,
            metadata_error_ppm: PPM_ONE,
            ..DiskFaultPlan::none()
        });
        let f = path("d/f");
        block_on(async {
            assert_eq!(disk.read_at(&f, 0, 1).await, Err(DiskErrorKind::Io));
            assert_eq!(disk.create(&path("d/g")).await, Err(DiskErrorKind::Io));
            assert_eq!(disk.rename(&f, &path("d/h")).await, Err(DiskErrorKind::Io));
            assert_eq!(disk.remove(&f).await, Err(DiskErrorKind::Io));
            assert_eq!(disk.truncate(&f, 0).await, Err(DiskErrorKind::Io));
            assert_eq!(disk.list(&path("d")).await, Err(DiskErrorKind::Io));
            assert_eq!(disk.length(&f).await, Err(DiskErrorKind::Io));
        });
        assert_eq!(disk.current_paths(), ["d/f"]);
        assert!(disk.file_is_durable("d/f"));
        let stats = disk.stats();
        assert_eq!((stats.read_errors, stats.metadata_errors), (1, 6));
    }

    #[test]
    fn a_failed_write_leaves_nothing_or_a_sector_prefix() {
        let disk = disk(DiskFaultPlan {
            sector_bytes: 512,
            write_error_ppm: PPM_ONE,
            ..DiskFaultPlan::none()
        });
        let f = path("d/f");
        let bytes = pattern(5, 2_000);
        let mut saw_partial = false;
        for _ in 0..20 {
            block_on(async {
                disk.create(&f).await.unwrap();
                let result = disk.write_at(&f, 100, Bytes::from(bytes.clone())).await;
                assert_eq!(result, Err(DiskErrorKind::Io));
            });
            let current = disk.current_file("d/f").unwrap();
            if !current.is_empty() {
                saw_partial = true;
                let end = current.len();
                assert!([512, 1_024, 1_536, 2_048].contains(&end), "{end}");
                assert_eq!(current[..100], [0; 100]);
                assert_eq!(current[100..], bytes[..end - 100]);
            }
        }
        assert!(saw_partial);
        assert_eq!(disk.stats().write_errors, 20);
    }

    #[test]
    fn missing_files_are_not_found() {
        let disk = disk(DiskFaultPlan::none());
        let f = path("d/missing");
        block_on(async {
            assert_eq!(disk.read_at(&f, 0, 1).await, Err(DiskErrorKind::NotFound));
            assert_eq!(
                disk.write_at(&f, 0, Bytes::new()).await,
                Err(DiskErrorKind::NotFound)
            );
            assert_eq!(disk.sync_file(&f).await, Err(DiskErrorKind::NotFound));
            assert_eq!(
                disk.rename(&f, &path("d/x")).await,
                Err(DiskErrorKind::NotFound)
            );
            assert_eq!(disk.remove(&f).await, Err(DiskErrorKind::NotFound));
            assert_eq!(disk.list(&path("nowhere")).await, Ok(Vec::new()));
        });
    }

    #[test]
    fn wipe_loses_everything() {
        let disk = disk(DiskFaultPlan::none());
        write_durably(&disk, "d/f", b"f");
        disk.wipe();
        assert!(disk.current_paths().is_empty());
        assert!(disk.durable_paths().is_empty());
        assert_eq!(disk.usage_bytes(), 0);
        assert_eq!(disk.stats().wipes, 1);
    }

    /// Runs a fixed script of operations under `plan`, crashes, and records every
    /// result, the stats and the surviving files.
    fn trace(seed: u64, plan: DiskFaultPlan) -> String {
        let disk = SimDisk::new(seed, plan);
        let mut out = String::new();
        block_on(async {
            for round in 0..40_u64 {
                let f = path(&format!("d/{}", round % 5));
                let g = path(&format!("d/{}", (round + 2) % 5));
                let results = [
                    format!("{:?}", disk.create(&f).await),
                    format!(
                        "{:?}",
                        disk.write_at(&f, round * 100, Bytes::from(pattern(round as u8, 700)))
                            .await
                    ),
                    format!("{:?}", disk.sync_file(&f).await),
                    format!("{:?}", disk.read_at(&f, 0, 4_096).await),
                    format!("{:?}", disk.rename(&f, &g).await),
                    format!("{:?}", disk.sync_dir(&path("d")).await),
                ];
                out.push_str(&results.join("\n"));
            }
        });
        let report = disk.crash(&mut DetRng::new(seed));
        out.push_str(&format!("{report:?}\n{:?}\n", disk.stats()));
        for file in disk.current_paths() {
            out.push_str(&format!("{file}: {:?}\n", disk.current_file(&file)));
        }
        disk.check_invariants();
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_crash() {
        let mut distinct = BTreeSet::new();
        for seed in 0..8 {
            let plan = DiskFaultPlan::from_seed(seed).without_latency();
            let first = trace(seed, plan);
            assert_eq!(first, trace(seed, plan), "seed {seed} replays");
            distinct.insert(first);
        }
        assert!(distinct.len() > 1, "different seeds give different runs");
    }

    #[test]
    fn seeded_plans_switch_faults_on_and_off() {
        let plans: Vec<_> = (0..64).map(DiskFaultPlan::from_seed).collect();
        assert!(plans.iter().any(|plan| plan.write_error_ppm == 0));
        assert!(plans.iter().any(|plan| plan.write_error_ppm > 0));
        assert!(plans.iter().any(|plan| plan.sector_bytes == 512));
        assert!(plans.iter().any(|plan| plan.sector_bytes == 4_096));
        assert!(plans.iter().any(|plan| plan.capacity_bytes.is_some()));
        assert!(plans.iter().any(|plan| !plan.latency.is_none()));
        assert_eq!(DiskFaultPlan::from_seed(9), DiskFaultPlan::from_seed(9));
    }

    /// A seed whose first latency draw waits at least 100 ms before applying.
    fn seed_with_slow_start(plan: &LatencyPlan) -> u64 {
        (0..)
            .find(|seed| plan.draw(&mut DetRng::new(*seed)).before_us >= 100_000)
            .expect("some seed waits long enough")
    }

    #[madsim::test]
    async fn an_operation_begun_before_a_crash_does_not_land_after_it() {
        let latency = LatencyPlan {
            base_us_max: 0,
            tail_ppm: PPM_ONE,
            tail_us_max: 400_000,
        };
        let plan = DiskFaultPlan {
            latency,
            ..DiskFaultPlan::none()
        };
        let disk = std::sync::Arc::new(SimDisk::new(seed_with_slow_start(&latency), plan));
        let in_flight = {
            let disk = disk.clone();
            madsim::task::spawn(async move { disk.create(&path("d/f")).await })
        };
        madsim::time::sleep(std::time::Duration::from_millis(5)).await;
        disk.crash_with(CrashMode::KeepPending, &mut DetRng::new(0));
        assert_eq!(in_flight.await.unwrap(), Err(DiskErrorKind::Io));
        assert!(disk.current_paths().is_empty());
        assert_eq!(disk.stats().stale_operations, 1);
        assert!(disk.stats().delayed_operations >= 1);
    }
}
