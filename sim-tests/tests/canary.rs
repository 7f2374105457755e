//! The canary: with the `canary` feature, aof2-core counts a record durable once it is
//! written, before its fsync (see `canary` in core/Cargo.toml). The simulator must
//! notice within 100 seeds, so a simulator that stops finding bugs is noticed too.
//!
//! ```sh
//! cargo test -p aof2-sim-tests --features canary --test canary
//! ```
//!
//! **Invariants checked**
//! - Within seeds 0..100 of the small workload, at least one seed reports a
//!   durability violation (checker 1 or 8): an acknowledged record lost in a crash.

#![cfg(feature = "canary")]

use aof2_sim_tests::{Checker, RunOptions, WorkloadSize, run_seed};

#[test]
fn the_simulator_finds_the_planted_bug_within_100_seeds() {
    for seed in 0..100 {
        let report = run_seed(
            seed,
            RunOptions {
                size: WorkloadSize::SMALL,
                keep_trace: false,
                strict: false,
            },
        );
        if let Some(violation) = report.violations.iter().find(|violation| {
            matches!(
                violation.checker,
                Checker::DurableSurvives | Checker::FailedFsyncNotDurable
            )
        }) {
            println!("seed {seed} found the canary: {violation}");
            return;
        }
    }
    panic!("100 seeds ran and none found the planted durability bug");
}
