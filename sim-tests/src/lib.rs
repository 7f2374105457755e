//! # aof2-sim-tests
//!
//! The seeded simulator of AOF2: a workload ([`scenario`], [`sim`]) runs the
//! production store and driver loop (`aof2_core::store::Store` pumped by
//! `aof2_core::driver::run`) over the simulated disk and object store of
//! `aof2-io-sim`, crashes and restarts it, and checks every reply and every recovery
//! against a reference model ([`model`]) and the durable state left by each crash
//! ([`durable`]). The runner binary `aof2-sim` replays one seed or runs many
//! ([`summary`]).
//!
//! One root seed decides everything: the scenario (streams, record sizes, store
//! knobs, whether and how faults strike), the fault plans, the client's choices and
//! each crash's outcome. Under `--cfg madsim` the runtime is madsim's, so a seed
//! replays exactly; see `docs/testing.md`.
//!
//! **Invariants checked**: the ten checkers of [`model::Checker`], listed with what
//! each asserts in [`sim`] and `docs/testing.md`.

#![deny(unsafe_code)]

pub mod durable;
pub mod model;
pub mod runtime;
pub mod scenario;
pub mod sim;
pub mod summary;

pub use model::{Checker, Violation};
pub use scenario::{Scenario, WorkloadSize};
pub use sim::{DiskLoss, RunOptions, SeedReport, run_seed};
pub use summary::Summary;

/// The command that replays `seed` with the same build settings and workload size.
#[must_use]
pub fn replay_command(seed: u64, size: WorkloadSize) -> String {
    let mut command = String::new();
    if cfg!(madsim) {
        command.push_str("RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim ");
    }
    command.push_str("cargo run --release -p aof2-sim-tests");
    if cfg!(feature = "canary") {
        command.push_str(" --features canary");
    }
    command.push_str(&format!(" --bin aof2-sim -- --seed {seed} --trace"));
    if size != WorkloadSize::DEFAULT {
        command.push_str(&format!(
            " --sessions-max {} --ops-max {}",
            size.sessions_max, size.ops_per_session_max
        ));
    }
    command
}

/// Replaces the panic hook with one that prints nothing: the runner reports a panic
/// as a checker-10 violation of its seed (with the message), and a thousand seeds'
/// backtraces would bury the summary.
pub fn silence_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}
