//! The embedding API: [`AofManager`] owns one store root and its streams.
//!
//! `AofManager::open(config)` takes an exclusive lock on the root (`<root>/LOCK`; a
//! second manager, in this process or another, gets [`AofError::Locked`] naming the
//! holder's pid), builds the production ports ([`crate::ports`]) and runs the core's
//! one driver loop on a tokio runtime of its own, so the synchronous calls below can
//! be made from any thread that is not one of that runtime's.
//!
//! Every call is a command to the core's coordinator (`aof2_core::store::Store`) and
//! waits for its one reply. The synchronous calls return backpressure as
//! [`AofError::WouldBlock`] (retry later); the `_async` calls wait it out instead: the
//! coordinator parks them and answers when the hydration, the rollover, the flush or
//! new durable data they wait for has happened (no polling, no sleeping).
//!
//! ```no_run
//! use aof2_io_real::config::AofManagerConfig;
//! use aof2_io_real::manager::AofManager;
//!
//! let manager = AofManager::open(AofManagerConfig::default())?;
//! let stream = manager.stream("orders")?;
//! let offset = stream.append("first record")?;
//! stream.wait_durable(offset)?;
//! assert_eq!(stream.read(offset)?.payload, "first record");
//! manager.close()?;
//! # Ok::<(), aof2_io_real::manager::AofError>(())
//! ```
//!
//! **Invariants**
//! - At most one manager holds a root at a time (the lock is held until the manager is
//!   closed or dropped).
//! - Every error is classified by what the caller should do ([`AofError::kind`]).

use crate::config::{AofManagerConfig, ConfigError};
use crate::runtime::{PortsError, ports};
use aof2_core::SegmentId;
use aof2_core::backpressure::BackpressureKind;
use aof2_core::driver::{CommandSender, DriverLimits, command_channel, run};
use aof2_core::names::{NameError, StreamName};
use aof2_core::segment::StoredRecord;
use aof2_core::store::{ReadMode, Store, StoreCommand, StoreError, StoreMetrics, StoreReply};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::runtime::Runtime;

/// Name of the lock file in the root.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// How long `close` waits for the runtime's threads after the store closed.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Worker threads of the manager's runtime (the driver loop and IO completions; disk
/// IO and compression run on its blocking pool).
const RUNTIME_WORKER_THREADS: usize = 2;

/// What the caller of a failed call should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Normal backpressure: retry later, or use the `_async` call.
    RetryLater,
    /// The input was refused: fix the call (name, offset, record size, config).
    InvalidInput,
    /// Stored data failed its checksum or disagrees with the manifest.
    Corrupt,
    /// The manager or stream is closed.
    Closed,
    /// IO failed for good or the stream is poisoned: operator attention needed.
    Failed,
}

/// An embedding-API error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AofError {
    /// Normal backpressure (see the runbook's troubleshooting table for each kind).
    #[error("would block: {0:?} backpressure; retry later")]
    WouldBlock(BackpressureKind),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("root {root:?} is in use by another manager ({holder}; lock file {lock:?})")]
    Locked {
        root: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("root {root:?}: {what}: {source}")]
    Root {
        root: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ports(#[from] PortsError),
    #[error("invalid stream name: {0}")]
    InvalidName(#[from] NameError),
    /// What the store refused or failed, as it said it.
    #[error(transparent)]
    Store(StoreError),
    #[error("the manager is closed")]
    Closed,
}

impl AofError {
    /// What the caller should do about it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            AofError::WouldBlock(_) => ErrorKind::RetryLater,
            AofError::Config(_) | AofError::InvalidName(_) => ErrorKind::InvalidInput,
            AofError::Locked { .. } | AofError::Root { .. } | AofError::Ports(_) => {
                ErrorKind::Failed
            }
            AofError::Closed => ErrorKind::Closed,
            AofError::Store(error) => match error {
                StoreError::Closed => ErrorKind::Closed,
                StoreError::Corrupt { .. } | StoreError::CorruptSegment { .. } => {
                    ErrorKind::Corrupt
                }
                StoreError::InvalidName(_)
                | StoreError::UnknownStream(_)
                | StoreError::NotAppended { .. }
                | StoreError::OffsetBelowStart { .. }
                | StoreError::Append(_)
                | StoreError::Config { .. }
                | StoreError::TooManyStreams { .. } => ErrorKind::InvalidInput,
                StoreError::Opening(_) | StoreError::AlreadyOpen(_) => ErrorKind::RetryLater,
                _ => ErrorKind::Failed,
            },
        }
    }
}

impl From<StoreError> for AofError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Closed => AofError::Closed,
            other => AofError::Store(other),
        }
    }
}

/// State shared by the manager and its stream handles.
struct Shared {
    sender: CommandSender<Store>,
    /// Streams this manager opened (an open is sent once per name).
    opened: Mutex<BTreeSet<StreamName>>,
}

impl Shared {
    async fn call(&self, command: StoreCommand) -> Result<StoreReply, AofError> {
        match self.sender.call(command).await {
            Ok(StoreReply::Error(error)) => Err(error.into()),
            Ok(StoreReply::WouldBlock(kind)) => Err(AofError::WouldBlock(kind)),
            Ok(reply) => Ok(reply),
            Err(_stopped) => Err(AofError::Closed),
        }
    }

    fn call_blocking(&self, command: StoreCommand) -> Result<StoreReply, AofError> {
        futures::executor::block_on(self.call(command))
    }
}

/// One store root and its streams. See the module doc.
pub struct AofManager {
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    root: PathBuf,
    _lock: File,
}

impl fmt::Debug for AofManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AofManager")
            .field("root", &self.root)
            .field("open", &self.runtime.is_some())
            .finish_non_exhaustive()
    }
}

impl AofManager {
    /// Opens the root of `config` (created if missing) and starts the store. With
    /// `AofManagerConfig::default()` that is `./aof2-data` with Tier 2 in
    /// `./aof2-data/tier2`: no server and no file needed.
    pub fn open(config: AofManagerConfig) -> Result<Self, AofError> {
        config.validate()?;
        let store_config = config.to_store_config()?;
        let backend = config.tier2_backend()?.into_store_backend();
        let root = config.root().to_owned();
        let root_error = |what: &'static str| {
            let root = root.clone();
            move |source| AofError::Root { root, what, source }
        };
        std::fs::create_dir_all(&root).map_err(root_error("create the root directory"))?;
        let lock = lock_root(&root)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKER_THREADS)
            .thread_name("aof2-io")
            .enable_all()
            .build()
            .map_err(root_error("start the IO runtime"))?;
        let ports = ports(&root, backend, runtime.handle().clone())?;
        let now_ms = ports.clock.now_ms();
        let store = Store::new(store_config, now_ms).map_err(AofError::Store)?;
        let (sender, receiver) = command_channel::<Store>();
        let limits = DriverLimits {
            check_invariants: false,
            ..DriverLimits::default()
        };
        runtime.spawn(run(store, ports, receiver, limits));
        Ok(AofManager {
            shared: Arc::new(Shared {
                sender,
                opened: Mutex::new(BTreeSet::new()),
            }),
            runtime: Some(runtime),
            root,
            _lock: lock,
        })
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stream `name`, created if new and recovered if it exists on disk. Names are
    /// `[A-Za-z0-9._-]`, at most 128 bytes, not `.` or `..`.
    pub fn stream(&self, name: &str) -> Result<Stream, AofError> {
        futures::executor::block_on(self.stream_async(name))
    }

    /// [`AofManager::stream`], awaiting the open (a recovery may read a lot).
    pub async fn stream_async(&self, name: &str) -> Result<Stream, AofError> {
        let stream = StreamName::new(name)?;
        let known = self
            .shared
            .opened
            .lock()
            .expect("no panic while holding the open set")
            .contains(&stream);
        if !known {
            let command = StoreCommand::OpenStream {
                name: stream.as_str().to_owned(),
            };
            match self.shared.call(command).await {
                Ok(_) | Err(AofError::Store(StoreError::AlreadyOpen(_))) => {}
                Err(error) => return Err(error),
            }
            self.shared
                .opened
                .lock()
                .expect("no panic while holding the open set")
                .insert(stream.clone());
        }
        Ok(Stream {
            shared: self.shared.clone(),
            name: stream,
        })
    }

    /// The metrics snapshots of every tier and stream (the runbook's
    /// `Tier0MetricsSnapshot`, `Tier1MetricsSnapshot`, `Tier2MetricsSnapshot`,
    /// `FlushMetricsSnapshot`, manifest and replay figures, read-path counters).
    pub fn metrics(&self) -> Result<StoreMetrics, AofError> {
        match self.shared.call_blocking(StoreCommand::Metrics)? {
            StoreReply::Metrics(metrics) => Ok(*metrics),
            other => unreachable!("Metrics is answered Metrics, not {other:?}"),
        }
    }

    /// Flushes every stream, commits every manifest, waits for the IO under way, and
    /// releases the root.
    pub fn close(mut self) -> Result<(), AofError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AofError> {
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let closed = self.shared.call_blocking(StoreCommand::Close);
        // The store is quiescent once it answered Close: nothing is left in flight.
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
        match closed {
            Ok(_) | Err(AofError::Closed) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Drop for AofManager {
    /// Closes the manager if `close` was not called (errors are lost: call `close`).
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Takes the exclusive lock of `root`, writing our pid into the lock file.
fn lock_root(root: &Path) -> Result<File, AofError> {
    let path = root.join(LOCK_FILE_NAME);
    let io_error = |what: &'static str| {
        let root = root.to_owned();
        move |source| AofError::Root { root, what, source }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("open the lock file"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "holder unknown".to_owned(),
                text => text.to_owned(),
            };
            return Err(AofError::Locked {
                root: root.to_owned(),
                lock: path,
                holder,
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_error("lock the root")(source)),
    }
    file.set_len(0).map_err(io_error("write the lock file"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_error("write the lock file"))?;
    writeln!(file, "pid {}", std::process::id()).map_err(io_error("write the lock file"))?;
    Ok(file)
}

/// A handle on one open stream. Cheap to clone; every handle talks to the same store.
#[derive(Clone)]
pub struct Stream {
    shared: Arc<Shared>,
    name: StreamName,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("name", &self.name).finish()
    }
}

impl Stream {
    /// The stream's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    fn append_command(&self, payload: Bytes, ext_id: Option<u64>, wait: bool) -> StoreCommand {
        StoreCommand::Append {
            stream: self.name.clone(),
            payload,
            ext_id,
            wait,
        }
    }

    /// Appends a record; returns its offset once accepted (not yet durable: see
    /// [`Stream::wait_durable`]). `WouldBlock(Rollover | Flush)` under pressure.
    pub fn append(&self, payload: impl Into<Bytes>) -> Result<u64, AofError> {
        self.append_with_ext_id(payload, None)
    }

    /// [`Stream::append`] with an external id (e.g. a Raft index) stored beside it.
    pub fn append_with_ext_id(
        &self,
        payload: impl Into<Bytes>,
        ext_id: Option<u64>,
    ) -> Result<u64, AofError> {
        let command = self.append_command(payload.into(), ext_id, false);
        appended(self.shared.call_blocking(command)?)
    }

    /// Appends, waiting out rollovers and flush backpressure.
    pub async fn append_async(
        &self,
        payload: impl Into<Bytes>,
        ext_id: Option<u64>,
    ) -> Result<u64, AofError> {
        let command = self.append_command(payload.into(), ext_id, true);
        appended(self.shared.call(command).await?)
    }

    /// Fsyncs everything appended so far; returns the durable end (every offset below
    /// it is durable).
    pub fn flush(&self) -> Result<u64, AofError> {
        futures::executor::block_on(self.flush_async())
    }

    /// [`Stream::flush`], awaited.
    pub async fn flush_async(&self) -> Result<u64, AofError> {
        let command = StoreCommand::Flush {
            stream: self.name.clone(),
        };
        durable(self.shared.call(command).await?)
    }

    /// Waits until the record at `offset` is durable; returns the durable end.
    pub fn wait_durable(&self, offset: u64) -> Result<u64, AofError> {
        futures::executor::block_on(self.wait_durable_async(offset))
    }

    /// [`Stream::wait_durable`], awaited.
    pub async fn wait_durable_async(&self, offset: u64) -> Result<u64, AofError> {
        let command = StoreCommand::WaitDurable {
            stream: self.name.clone(),
            offset,
        };
        durable(self.shared.call(command).await?)
    }

    fn read_command(&self, offset: u64, mode: ReadMode) -> StoreCommand {
        StoreCommand::Read {
            stream: self.name.clone(),
            offset,
            mode,
        }
    }

    /// The durable record at `offset`, from whichever tier holds it:
    /// `WouldBlock(Hydration)` while its segment is fetched, `WouldBlock(Tail)` at or
    /// past the durable end.
    pub fn read(&self, offset: u64) -> Result<StoredRecord, AofError> {
        let command = self.read_command(offset, ReadMode::default());
        record(self.shared.call_blocking(command)?)
    }

    /// [`Stream::read`], waiting for a hydration or for the record to become durable.
    pub async fn read_async(&self, offset: u64) -> Result<StoredRecord, AofError> {
        let mode = ReadMode {
            wait: true,
            sequential: false,
        };
        record(self.shared.call(self.read_command(offset, mode)).await?)
    }

    /// A reader of the records from `offset` on, across hot, warm and cold segments
    /// (it prefetches the next segment as it goes).
    #[must_use]
    pub fn open_reader(&self, offset: u64) -> Reader {
        Reader {
            stream: self.clone(),
            next_offset: offset,
        }
    }

    /// [`Stream::open_reader`]; the same reader type serves both.
    #[must_use]
    pub fn open_reader_async(&self, offset: u64) -> Reader {
        self.open_reader(offset)
    }

    /// Takes a snapshot of the stream's manifest now: returned once it is durable
    /// locally and in Tier 2 and its `SnapshotMarker` is committed.
    pub fn snapshot(&self) -> Result<SnapshotInfo, AofError> {
        let command = StoreCommand::Snapshot {
            stream: self.name.clone(),
        };
        match self.shared.call_blocking(command)? {
            StoreReply::Snapshot {
                snapshot_id,
                chunk_index,
                chunk_offset,
                record_ordinal,
            } => Ok(SnapshotInfo {
                snapshot_id,
                chunk_index,
                chunk_offset,
                record_ordinal,
            }),
            other => unreachable!("Snapshot is answered Snapshot, not {other:?}"),
        }
    }

    /// Seals the active segment now; returns its id (`None` if it held no record).
    pub fn seal(&self) -> Result<Option<SegmentId>, AofError> {
        let command = StoreCommand::Seal {
            stream: self.name.clone(),
        };
        match self.shared.call_blocking(command)? {
            StoreReply::Sealed { segment_id } => Ok(segment_id),
            other => unreachable!("Seal is answered Sealed, not {other:?}"),
        }
    }

    /// Deletes every segment below `before` from every tier (reason `Operator`), the
    /// way retention would: all of them must be sealed and in Tier 2 and not being
    /// read, or nothing is deleted and the error says which one and why. Returns once
    /// the deletion is durable in the manifest: how many segments it queued and the new
    /// start offset. The copies go after that; `retention.deletes_pending` in
    /// [`AofManager::metrics`] counts the ones left, and a reopen finishes them.
    pub fn delete_segments(&self, before: SegmentId) -> Result<SegmentsDeleting, AofError> {
        let command = StoreCommand::DeleteSegments {
            stream: self.name.clone(),
            before,
        };
        match self.shared.call_blocking(command)? {
            StoreReply::SegmentsDeleting {
                segments,
                start_offset,
            } => Ok(SegmentsDeleting {
                segments,
                start_offset,
            }),
            other => unreachable!("DeleteSegments is answered SegmentsDeleting, not {other:?}"),
        }
    }
}

/// What [`Stream::delete_segments`] queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentsDeleting {
    /// Segments newly queued for deletion (0 if none was left below the bound).
    pub segments: u64,
    /// Reads below this offset are out of range from now on.
    pub start_offset: u64,
}

/// A snapshot taken by [`Stream::snapshot`]: it covers every manifest record below
/// `record_ordinal`, which end at byte `chunk_offset` of chunk `chunk_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub snapshot_id: u64,
    pub chunk_index: u64,
    pub chunk_offset: u64,
    pub record_ordinal: u64,
}

/// Reads records in offset order. [`Reader::next_async`] waits for hydrations and,
/// at the durable end, for new records (a tail follower); [`Reader::try_next`] returns
/// `WouldBlock` instead; as an [`Iterator`] it blocks on hydrations and ends at the
/// durable end.
#[derive(Debug, Clone)]
pub struct Reader {
    stream: Stream,
    next_offset: u64,
}

impl Reader {
    /// The offset the next record will have.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    fn advance(&mut self, reply: Result<StoreReply, AofError>) -> Result<StoredRecord, AofError> {
        let record = record(reply?)?;
        debug_assert_eq!(record.offset, self.next_offset);
        self.next_offset += 1;
        Ok(record)
    }

    /// The next record, or `WouldBlock(Hydration | Tail)`.
    pub fn try_next(&mut self) -> Result<StoredRecord, AofError> {
        let mode = ReadMode {
            wait: false,
            sequential: true,
        };
        let command = self.stream.read_command(self.next_offset, mode);
        let reply = self.stream.shared.call_blocking(command);
        self.advance(reply)
    }

    /// The next record, waiting for it as long as it takes.
    pub async fn next_async(&mut self) -> Result<StoredRecord, AofError> {
        let mode = ReadMode {
            wait: true,
            sequential: true,
        };
        let command = self.stream.read_command(self.next_offset, mode);
        let reply = self.stream.shared.call(command).await;
        self.advance(reply)
    }
}

impl Iterator for Reader {
    type Item = Result<StoredRecord, AofError>;

    /// Blocks on hydrations; `None` at the durable end.
    fn next(&mut self) -> Option<Self::Item> {
        match self.try_next() {
            Err(AofError::WouldBlock(BackpressureKind::Tail)) => None,
            Err(AofError::WouldBlock(BackpressureKind::Hydration)) => {
                // The hydration has started; wait for it (a sealed offset, so this
                // read never parks as a tail follower).
                let mode = ReadMode {
                    wait: true,
                    sequential: true,
                };
                let command = self.stream.read_command(self.next_offset, mode);
                let reply = self.stream.shared.call_blocking(command);
                Some(self.advance(reply))
            }
            other => Some(other),
        }
    }
}

fn appended(reply: StoreReply) -> Result<u64, AofError> {
    match reply {
        StoreReply::Appended(offset) => Ok(offset),
        other => unreachable!("an append is answered Appended, not {other:?}"),
    }
}

fn durable(reply: StoreReply) -> Result<u64, AofError> {
    match reply {
        StoreReply::Durable { next_offset } => Ok(next_offset),
        other => unreachable!("a flush is answered Durable, not {other:?}"),
    }
}

fn record(reply: StoreReply) -> Result<StoredRecord, AofError> {
    match reply {
        StoreReply::Record(record) => Ok(record),
        other => unreachable!("a read is answered Record, not {other:?}"),
    }
}
