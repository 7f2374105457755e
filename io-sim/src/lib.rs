//! # aof2-io-sim
//!
//! The simulated ports of AOF2: a disk with a crash model ([`SimDisk`]) and an object
//! store ([`SimObjectStore`]), both with seeded fault injection, plus a clock and a
//! spawner on madsim ([`SimPorts`]). The simulator runs the driver loop production
//! runs (`aof2_core::driver::run`) against these ports, so a bug in the store or in
//! that loop is found by a seed and replayed from the same seed.
//!
//! # Seeds
//!
//! One root seed ([`SeedTree`]) splits by name into every component's seed (`disk`,
//! `object-store`, `disk-plan`, `store-plan`, `crash`, ...). All randomness is drawn
//! from `aof2_core::retry::DetRng`s seeded that way; state lives in `BTreeMap`s, so
//! nothing depends on hash order. Under madsim the task schedule is a function of
//! madsim's seed too, so the order of calls (and so of draws) repeats.
//!
//! # Fault model (details in [`disk`] and [`store`])
//!
//! - Disk: POSIX durability taken strictly (data after `sync_file`, names after
//!   `sync_dir` of the parent); a crash loses, keeps or tears (at 512 B or 4 KiB
//!   sectors) each pending write and keeps a prefix of the pending namespace
//!   operations; EIO on read, write (possibly after part of it reached the page
//!   cache), fsync and metadata operations; a failed fsync drops that file's pending
//!   data for good while reads still see it (fsyncgate); ENOSPC above a capacity; bit
//!   rot in the returned copy of a read; latency; whole-disk loss.
//! - Object store: exact conditional puts; latency; transient errors before the
//!   operation applies and after it applied (the ambiguous timeout); 503 SlowDown
//!   bursts; object loss on request.
//! - Plans: `*FaultPlan::none()` or `*FaultPlan::from_seed(seed)` (swarm testing: the
//!   seed picks which faults are on and how likely); `set_faults_enabled(false)` for a
//!   liveness phase; counters of every fault injected ([`SimDiskStats`],
//!   [`SimStoreStats`]).
//!
//! # Running under madsim
//!
//! The tests build and pass normally (`cargo test -p aof2-io-sim`, madsim then
//! re-exports tokio). For the deterministic runtime, use a separate target dir:
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p aof2-io-sim
//! ```
//!
//! **Invariants**
//! - Nothing is durable on the simulated disk unless a successful sync made it so (or
//!   a crash happened to keep it); a crash never invents a byte: every byte that
//!   survives is a durable byte or one some write put at that position, or zero.
//! - A failed `sync_file` never leaves the data it covered able to become durable.
//! - An object-store call that answers an error before applying changed nothing; an
//!   error after applying leaves the operation's effect in place.
//! - One root seed, the same plans and the same sequence of calls give the same
//!   faults, results and crash outcomes.

#![deny(unsafe_code)]

pub mod disk;
pub mod ports;
pub mod seed;
pub mod store;

pub use aof2_core as core;
pub use disk::{CrashMode, CrashReport, DiskFaultPlan, SimDisk, SimDiskStats};
pub use ports::{InlineCpu, SIM_CLOCK_START_MS, SimClock, SimPlans, SimPorts, SimSpawner};
pub use seed::{LatencyPlan, PPM_ONE, SeedTree};
pub use store::{SimObjectStore, SimStoreStats, StoreFaultPlan};
