//! Plain in-memory ports without faults, for tests of the driver and of whole
//! machines: a disk of byte vectors, an object store of byte strings, a clock whose
//! `sleep_until` jumps straight to the deadline, a thread-pool spawner and an inline
//! CPU port.
//!
//! Nothing here models crashes or random failures; io-sim does that. These ports only do
//! what each request says, exactly, so a test failure points at the machine or the
//! driver. The one exception is [`FlakyObjectStore`], which fails the requests a test
//! asks it to, for the retry paths.
//!
//! **Invariants**
//! - A put `IfAbsent` of an existing key fails with `AlreadyExists`; `IfMatch` with a
//!   different etag fails with `PreconditionFailed`; etags change with every put.
//! - The clock never goes backwards.

// The ports are shared by concurrently running IO tasks, so their state sits behind a
// lock. They are test infrastructure, not state machines; the sans-IO rules of the
// machines do not apply to them.
#![allow(clippy::disallowed_types)]

use crate::cpu;
use crate::driver::{ClockPort, CpuPort, DiskPort, ObjectStorePort, Ports, SpawnPort};
use crate::io::{
    CpuJob, CpuResult, DiskErrorKind, LocalPath, ObjectErrorKind, ObjectMeta, PutMode,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A disk of files held in memory. Directories exist implicitly.
#[derive(Debug, Default)]
pub struct MemoryDisk {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryDisk {
    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.files
            .lock()
            .expect("no test thread panics while holding the disk lock")
    }

    /// The bytes of `path`, if it exists.
    #[must_use]
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.files().get(path).cloned()
    }

    /// Every file path, sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<String> {
        self.files().keys().cloned().collect()
    }
}

#[async_trait]
impl DiskPort for MemoryDisk {
    async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.files().insert(path.to_string(), Vec::new());
        Ok(())
    }

    /// Directories exist implicitly here: nothing to do.
    async fn create_dir(&self, _path: &LocalPath) -> Result<(), DiskErrorKind> {
        Ok(())
    }

    async fn write_at(
        &self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind> {
        let mut files = self.files();
        let file = files
            .get_mut(path.as_str())
            .ok_or(DiskErrorKind::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| DiskErrorKind::Io)?;
        let end = start + bytes.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(&bytes);
        Ok(())
    }

    async fn read_at(
        &self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind> {
        let files = self.files();
        let file = files.get(path.as_str()).ok_or(DiskErrorKind::NotFound)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.len());
        let end = start
            .saturating_add(usize::try_from(length).unwrap_or(usize::MAX))
            .min(file.len());
        Ok(Bytes::copy_from_slice(&file[start..end]))
    }

    async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
        let mut files = self.files();
        let file = files
            .get_mut(path.as_str())
            .ok_or(DiskErrorKind::NotFound)?;
        file.resize(usize::try_from(length).map_err(|_| DiskErrorKind::Io)?, 0);
        Ok(())
    }

    async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        if self.files().contains_key(path.as_str()) {
            Ok(())
        } else {
            Err(DiskErrorKind::NotFound)
        }
    }

    async fn sync_dir(&self, _path: &LocalPath) -> Result<(), DiskErrorKind> {
        Ok(())
    }

    async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
        let mut files = self.files();
        let bytes = files.remove(from.as_str()).ok_or(DiskErrorKind::NotFound)?;
        files.insert(to.to_string(), bytes);
        Ok(())
    }

    async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.files()
            .remove(path.as_str())
            .map(|_| ())
            .ok_or(DiskErrorKind::NotFound)
    }

    async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
        let prefix = format!("{path}/");
        let names: BTreeSet<String> = self
            .files()
            .keys()
            .filter_map(|key| key.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
        self.files()
            .get(path.as_str())
            .map(|file| file.len() as u64)
            .ok_or(DiskErrorKind::NotFound)
    }
}

/// An object store held in memory.
#[derive(Debug, Default)]
pub struct MemoryObjectStore {
    objects: Mutex<BTreeMap<String, (Bytes, String)>>,
    puts: AtomicU64,
}

impl MemoryObjectStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, String)>> {
        self.objects
            .lock()
            .expect("no test thread panics while holding the store lock")
    }

    /// The bytes under `key`, if any.
    #[must_use]
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.objects().get(key).map(|(bytes, _)| bytes.clone())
    }

    /// Every key, sorted.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }
}

#[async_trait]
impl ObjectStorePort for MemoryObjectStore {
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, ObjectErrorKind> {
        let mut objects = self.objects();
        match (&mode, objects.get(key)) {
            (PutMode::IfAbsent, Some(_)) => return Err(ObjectErrorKind::AlreadyExists),
            (PutMode::IfMatch { etag }, Some((_, current))) if current != etag => {
                return Err(ObjectErrorKind::PreconditionFailed);
            }
            (PutMode::IfMatch { .. }, None) => return Err(ObjectErrorKind::PreconditionFailed),
            _ => {}
        }
        let etag = format!("etag-{}", self.puts.fetch_add(1, Ordering::Relaxed));
        objects.insert(key.to_owned(), (bytes, etag.clone()));
        Ok(Some(etag))
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectErrorKind> {
        self.objects()
            .get(key)
            .map(|(bytes, _)| bytes.clone())
            .ok_or(ObjectErrorKind::NotFound)
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<(Bytes, u64), ObjectErrorKind> {
        let objects = self.objects();
        let (bytes, _) = objects.get(key).ok_or(ObjectErrorKind::NotFound)?;
        let size = bytes.len() as u64;
        let start = start.min(size);
        let end = end.clamp(start, size);
        Ok((bytes.slice(start as usize..end as usize), size))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectErrorKind> {
        self.objects()
            .get(key)
            .map(|(bytes, etag)| ObjectMeta {
                key: key.to_owned(),
                size: bytes.len() as u64,
                etag: Some(etag.clone()),
            })
            .ok_or(ObjectErrorKind::NotFound)
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectErrorKind> {
        self.objects().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind> {
        Ok(self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (bytes, etag))| ObjectMeta {
                key: key.clone(),
                size: bytes.len() as u64,
                etag: Some(etag.clone()),
            })
            .collect())
    }
}

/// A [`MemoryObjectStore`] that fails on demand, before the request applies: the next
/// `put_failures` puts and `get_failures` gets (whole or ranged) answer `Transient`,
/// the next `delete_failures` deletes answer `Permanent`, and every put of
/// `refused_put` answers `Permanent`.
#[derive(Debug, Default)]
pub struct FlakyObjectStore {
    pub inner: Arc<MemoryObjectStore>,
    pub put_failures: AtomicU32,
    pub get_failures: AtomicU32,
    pub delete_failures: AtomicU32,
    pub refused_put: Option<String>,
}

impl FlakyObjectStore {
    /// Over `inner`, failing nothing yet.
    #[must_use]
    pub fn new(inner: Arc<MemoryObjectStore>) -> Self {
        FlakyObjectStore {
            inner,
            ..FlakyObjectStore::default()
        }
    }
}

/// Takes one failure from `counter`; false once it is at zero.
fn take_failure(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

#[async_trait]
impl ObjectStorePort for FlakyObjectStore {
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, ObjectErrorKind> {
        if self.refused_put.as_deref() == Some(key) {
            return Err(ObjectErrorKind::Permanent);
        }
        if take_failure(&self.put_failures) {
            return Err(ObjectErrorKind::Transient);
        }
        self.inner.put(key, bytes, mode).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectErrorKind> {
        if take_failure(&self.get_failures) {
            return Err(ObjectErrorKind::Transient);
        }
        self.inner.get(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<(Bytes, u64), ObjectErrorKind> {
        if take_failure(&self.get_failures) {
            return Err(ObjectErrorKind::Transient);
        }
        self.inner.get_range(key, start, end).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectErrorKind> {
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectErrorKind> {
        if take_failure(&self.delete_failures) {
            return Err(ObjectErrorKind::Permanent);
        }
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind> {
        self.inner.list(prefix).await
    }
}

/// A clock that jumps: `sleep_until` moves time to the deadline and returns at once,
/// so tests never wait and time only passes when the machine asks it to.
///
/// A frozen clock ([`JumpClock::freeze`]) never jumps: a sleep until a later deadline
/// never returns, so time passes only by [`JumpClock::advance`]. Tests that must not
/// see timers fire (segment age, manifest rotation) freeze it.
#[derive(Debug, Default)]
pub struct JumpClock {
    now_ms: AtomicU64,
    frozen: AtomicBool,
}

impl JumpClock {
    /// A clock starting at `now_ms`.
    #[must_use]
    pub fn starting_at(now_ms: u64) -> Self {
        JumpClock {
            now_ms: AtomicU64::new(now_ms),
            frozen: AtomicBool::new(false),
        }
    }

    /// Stops the clock from jumping to deadlines.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Moves time forward by `elapsed_ms`.
    pub fn advance(&self, elapsed_ms: u64) {
        self.now_ms.fetch_add(elapsed_ms, Ordering::SeqCst);
    }
}

#[async_trait]
impl ClockPort for JumpClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    async fn sleep_until(&self, deadline_ms: u64) {
        if self.frozen.load(Ordering::SeqCst) && deadline_ms > self.now_ms() {
            return futures::future::pending().await;
        }
        self.now_ms.fetch_max(deadline_ms, Ordering::SeqCst);
    }
}

/// Runs tasks on a `futures` thread pool.
#[derive(Debug)]
pub struct PoolSpawner(pub futures::executor::ThreadPool);

impl SpawnPort for PoolSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.0.spawn_ok(task);
    }
}

/// Runs CPU jobs inline.
#[derive(Debug, Default)]
pub struct InlineCpu;

#[async_trait]
impl CpuPort for InlineCpu {
    async fn run(&self, job: CpuJob) -> CpuResult {
        cpu::run(&job)
    }
}

/// The in-memory port set, with handles to inspect the disk, the store and the clock.
#[derive(Debug, Clone)]
pub struct MemoryPorts {
    pub disk: Arc<MemoryDisk>,
    pub object_store: Arc<MemoryObjectStore>,
    pub clock: Arc<JumpClock>,
    pub ports: Ports,
}

impl MemoryPorts {
    /// Fresh empty ports; time starts at `now_ms`; IO tasks run on a pool of
    /// `threads` threads.
    #[must_use]
    pub fn new(now_ms: u64, threads: usize) -> Self {
        Self::with_object_store(now_ms, threads, Arc::new(MemoryObjectStore::default()))
    }

    /// Ports with a fresh empty disk over an existing object store: a node that lost
    /// its whole disk and keeps its Tier 2.
    #[must_use]
    pub fn with_object_store(
        now_ms: u64,
        threads: usize,
        object_store: Arc<MemoryObjectStore>,
    ) -> Self {
        let disk = Arc::new(MemoryDisk::default());
        let clock = Arc::new(JumpClock::starting_at(now_ms));
        let pool = futures::executor::ThreadPool::builder()
            .pool_size(threads.max(1))
            .create()
            .expect("a thread pool can be created in tests");
        let ports = Ports {
            disk: disk.clone(),
            object_store: object_store.clone(),
            clock: clock.clone(),
            spawn: Arc::new(PoolSpawner(pool)),
            cpu: Arc::new(InlineCpu),
        };
        MemoryPorts {
            disk,
            object_store,
            clock,
            ports,
        }
    }
}
