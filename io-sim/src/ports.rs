//! [`SimPorts`]: the driver's [`Ports`] built from one seed: the simulated disk and
//! object store, a clock and a spawner backed by madsim, and CPU jobs run inline.
//!
//! Under `--cfg madsim` the clock is madsim's simulated time and tasks are madsim
//! tasks, so a run is a pure function of its seeds. Without it, madsim re-exports
//! tokio: the clock is real (tokio) time and tasks are tokio tasks, which is enough to
//! run the same tests in a normal build (inside a tokio runtime).
//!
//! **Invariants**
//! - `SimClock::now_ms` never goes backwards, and `sleep_until(deadline)` returns only
//!   once `now_ms() >= deadline`.
//! - Every component's seed is a named child of the one root seed.

use crate::disk::{DiskFaultPlan, SimDisk};
use crate::seed::SeedTree;
use crate::store::{SimObjectStore, StoreFaultPlan};
use aof2_core::cpu;
use aof2_core::driver::{ClockPort, CpuPort, Ports, SpawnPort};
use aof2_core::io::{CpuJob, CpuResult};
use async_trait::async_trait;
use futures::future::{BoxFuture, poll_fn};
use madsim::time::{Duration, Instant};
use std::sync::Arc;
use std::task::Poll;

/// Where simulated time starts: 2023-11-14T22:13:20Z in milliseconds since the Unix
/// epoch, so age-based logic sees realistic wall-clock numbers.
pub const SIM_CLOCK_START_MS: u64 = 1_700_000_000_000;

/// A clock reading madsim time: `start_ms` plus the time elapsed since the clock was
/// made.
#[derive(Debug)]
pub struct SimClock {
    origin: Instant,
    start_ms: u64,
}

impl SimClock {
    /// A clock reading `start_ms` now. Under madsim, make it inside the runtime
    /// (simulated time only exists there).
    #[must_use]
    pub fn new(start_ms: u64) -> Self {
        #[cfg(madsim)]
        assert!(
            madsim::time::TimeHandle::try_current().is_some(),
            "a SimClock is made inside a madsim runtime"
        );
        SimClock {
            origin: Instant::now(),
            start_ms,
        }
    }
}

#[async_trait]
impl ClockPort for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed_ms = u64::try_from(self.origin.elapsed().as_millis())
            .expect("a simulation runs for less than 2^64 ms");
        self.start_ms + elapsed_ms
    }

    async fn sleep_until(&self, deadline_ms: u64) {
        let Some(after_start_ms) = deadline_ms.checked_sub(self.start_ms) else {
            return;
        };
        madsim::time::sleep_until(self.origin + Duration::from_millis(after_start_ms)).await;
        assert!(
            self.now_ms() >= deadline_ms,
            "sleep_until returns at or after its deadline"
        );
    }
}

/// Spawns with `madsim::task::spawn` (tokio's spawn without `--cfg madsim`).
///
/// A task belongs to the process that spawned it: once the disk crashed (or was
/// wiped) after the spawn, the task is never polled again. Without this, a dead
/// process's request that had not begun its disk operation yet (so [`SimDisk`]'s own
/// check of operations under way could not catch it) would land after the restart,
/// which no real crash allows.
#[derive(Debug)]
pub struct SimSpawner {
    disk: Arc<SimDisk>,
}

impl SimSpawner {
    /// A spawner whose tasks die with `disk`'s crashes.
    #[must_use]
    pub fn new(disk: Arc<SimDisk>) -> Self {
        SimSpawner { disk }
    }
}

impl SpawnPort for SimSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let disk = self.disk.clone();
        let generation = disk.generation();
        // Detached: the driver learns of the task's end through its completion channel.
        let mut task = task;
        drop(madsim::task::spawn(poll_fn(move |cx| {
            if disk.generation() != generation {
                return Poll::Ready(()); // The process died: its task ends unfinished.
            }
            task.as_mut().poll(cx)
        })));
    }
}

/// Runs CPU jobs inline: they are pure, so simulated time does not pass.
#[derive(Debug, Default)]
pub struct InlineCpu;

#[async_trait]
impl CpuPort for InlineCpu {
    async fn run(&self, job: CpuJob) -> CpuResult {
        cpu::run(&job)
    }
}

/// The fault plans of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimPlans {
    pub disk: DiskFaultPlan,
    pub store: StoreFaultPlan,
}

impl SimPlans {
    /// No faults, no latency.
    #[must_use]
    pub const fn none() -> Self {
        SimPlans {
            disk: DiskFaultPlan::none(),
            store: StoreFaultPlan::none(),
        }
    }

    /// Swarm plans drawn from the `disk-plan` and `store-plan` children of `seed`.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        let tree = SeedTree::new(seed);
        SimPlans {
            disk: DiskFaultPlan::from_seed(tree.child("disk-plan").seed()),
            store: StoreFaultPlan::from_seed(tree.child("store-plan").seed()),
        }
    }
}

/// The simulated port set, with handles to inspect and break the disk and the store.
#[derive(Debug, Clone)]
pub struct SimPorts {
    /// The root seed; components use its children `disk` and `object-store`, and
    /// tests take further ones (`crash`, ...) from it.
    pub seed: SeedTree,
    pub disk: Arc<SimDisk>,
    pub object_store: Arc<SimObjectStore>,
    pub clock: Arc<SimClock>,
    pub ports: Ports,
}

impl SimPorts {
    /// Fresh empty ports; the clock starts at [`SIM_CLOCK_START_MS`]. Under madsim,
    /// call inside the runtime.
    #[must_use]
    pub fn new(seed: u64, plans: SimPlans) -> Self {
        let seed = SeedTree::new(seed);
        let disk = Arc::new(SimDisk::new(seed.child("disk").seed(), plans.disk));
        let object_store = Arc::new(SimObjectStore::new(
            seed.child("object-store").seed(),
            plans.store,
        ));
        let clock = Arc::new(SimClock::new(SIM_CLOCK_START_MS));
        let ports = Ports {
            disk: disk.clone(),
            object_store: object_store.clone(),
            clock: clock.clone(),
            spawn: Arc::new(SimSpawner::new(disk.clone())),
            cpu: Arc::new(InlineCpu),
        };
        SimPorts {
            seed,
            disk,
            object_store,
            clock,
            ports,
        }
    }

    /// Turns the faults of the disk and the store off (or on again) together.
    pub fn set_faults_enabled(&self, enabled: bool) {
        self.disk.set_faults_enabled(enabled);
        self.object_store.set_faults_enabled(enabled);
    }
}
