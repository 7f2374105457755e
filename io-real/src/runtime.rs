//! The tokio half of the production ports: a clock, a spawner and a CPU pool, and
//! [`ports`], which assembles the driver's whole [`Ports`] set from a root directory
//! and a Tier 2 backend.
//!
//! | port | production type | carries out |
//! | --- | --- | --- |
//! | `DiskPort` | [`LocalDisk`] | files under the root, on tokio's blocking pool |
//! | `ObjectStorePort` | [`Tier2Store`] | S3, a local directory or memory via `object_store` |
//! | `ClockPort` | [`TokioClock`] | milliseconds since the Unix epoch; tokio timers |
//! | `SpawnPort` | [`TokioSpawner`] | `spawn` on a runtime handle |
//! | `CpuPort` | [`BlockingCpu`] | `aof2_core::cpu::run` on tokio's blocking pool |
//!
//! **Invariants**
//! - `TokioClock::now_ms` never goes backwards (it is the wall clock read once at
//!   construction plus a monotonic elapsed time, so a wall-clock step cannot move it
//!   back), and `sleep_until(deadline)` returns only once `now_ms() >= deadline`.
//! - A panic inside a blocking CPU job is re-raised where the job was awaited; it is a
//!   bug, never a failed job.

use crate::disk::LocalDisk;
use crate::tier2_store::{Tier2Backend, Tier2Store, Tier2StoreError};
use aof2_core::cpu;
use aof2_core::driver::{ClockPort, CpuPort, Ports, SpawnPort};
use aof2_core::io::{CpuJob, CpuResult};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// The directory under the store root that holds the embedded default Tier 2.
pub const EMBEDDED_TIER2_DIR: &str = "tier2";

/// Wall-clock milliseconds since the Unix epoch, advancing monotonically.
#[derive(Debug)]
pub struct TokioClock {
    origin: Instant,
    origin_ms: u64,
}

impl TokioClock {
    /// A clock reading the wall clock now. Call inside a tokio runtime.
    #[must_use]
    pub fn new() -> Self {
        let origin_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        TokioClock {
            origin: Instant::now(),
            origin_ms,
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ClockPort for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.origin_ms.saturating_add(elapsed_ms)
    }

    async fn sleep_until(&self, deadline_ms: u64) {
        // Each sleep lasts at least what is left, so this ends; it loops only if a
        // timer ever fired a rounding step early, and never returns before the deadline.
        loop {
            let now_ms = self.now_ms();
            if now_ms >= deadline_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(deadline_ms - now_ms)).await;
        }
    }
}

/// Spawns tasks on one tokio runtime.
#[derive(Debug, Clone)]
pub struct TokioSpawner {
    handle: Handle,
}

impl TokioSpawner {
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        TokioSpawner { handle }
    }
}

impl SpawnPort for TokioSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Detached: the driver learns of the task's end through its completion channel.
        drop(self.handle.spawn(task));
    }
}

/// Runs CPU jobs (compression) on tokio's blocking pool, off the IO workers.
#[derive(Debug, Default, Clone, Copy)]
pub struct BlockingCpu;

#[async_trait]
impl CpuPort for BlockingCpu {
    async fn run(&self, job: CpuJob) -> CpuResult {
        match tokio::task::spawn_blocking(move || cpu::run(&job)).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => CpuResult::Failed {
                reason: format!("CPU job cancelled (runtime shutting down): {error}"),
            },
        }
    }
}

/// The production ports could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PortsError {
    #[error("store root {path:?} could not be opened: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tier2(#[from] Tier2StoreError),
}

/// The embedded default Tier 2: a local directory `<root>/tier2`.
#[must_use]
pub fn embedded_tier2(root: &Path) -> Tier2Backend {
    Tier2Backend::LocalDir(root.join(EMBEDDED_TIER2_DIR))
}

/// The production port set: the local disk under `root` (created if missing), Tier 2
/// on `tier2`, and the clock, spawner and CPU pool of the runtime `handle`.
pub fn ports(root: &Path, tier2: Tier2Backend, handle: Handle) -> Result<Ports, PortsError> {
    let disk = LocalDisk::open(root).map_err(|source| PortsError::Root {
        path: root.to_owned(),
        source,
    })?;
    let object_store = Tier2Store::new(tier2)?;
    // The clock's origin is read inside the runtime so tokio timers measure from it.
    let clock = {
        let _entered = handle.enter();
        TokioClock::new()
    };
    Ok(Ports {
        disk: Arc::new(disk),
        object_store: Arc::new(object_store),
        clock: Arc::new(clock),
        spawn: Arc::new(TokioSpawner::new(handle)),
        cpu: Arc::new(BlockingCpu),
    })
}
