//! `aof2-sim`: replays one seed of the simulator (`--seed S`, with `--trace` for a
//! readable trace) or runs many (`--seeds N --from S`) and prints a summary. Exits
//! non-zero on any violation and prints the command that replays each failing seed.
//!
//! Deterministic only when built with `--cfg madsim` (see docs/testing.md):
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim \
//!   cargo run --release -p aof2-sim-tests --bin aof2-sim -- --seeds 500 --from 0
//! ```

use aof2_sim_tests::{RunOptions, Summary, WorkloadSize, replay_command, run_seed, silence_panics};
use clap::Parser;
use std::process::ExitCode;
use std::time::Instant;

/// The AOF2 simulator: seeded workloads, crashes and faults, checked invariants.
#[derive(Debug, Parser)]
#[command(name = "aof2-sim", version)]
struct Args {
    /// Replay this one seed.
    #[arg(long, conflicts_with_all = ["seeds", "from"])]
    seed: Option<u64>,
    /// With --seed: print the trace of the run.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Run this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Sessions with faults per seed: 1..=this.
    #[arg(long, default_value_t = WorkloadSize::DEFAULT.sessions_max, value_parser = clap::value_parser!(u32).range(1..))]
    sessions_max: u32,
    /// Commands per session: 1..=this.
    #[arg(long, default_value_t = WorkloadSize::DEFAULT.ops_per_session_max, value_parser = clap::value_parser!(u32).range(1..))]
    ops_max: u32,
    /// Print a line per seed.
    #[arg(long)]
    verbose: bool,
    /// Report known store issues (docs/testing.md) as violations.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let size = WorkloadSize {
        sessions_max: args.sessions_max,
        ops_per_session_max: args.ops_max,
    };
    if let Some(seed) = args.seed {
        let report = run_seed(
            seed,
            RunOptions {
                size,
                keep_trace: args.trace,
                strict: args.strict,
            },
        );
        for line in &report.trace {
            println!("{line}");
        }
        println!("seed {seed}: trace hash {:016x}", report.trace_hash);
        let mut summary = Summary::default();
        summary.add(&report);
        print!("{}", summary.render(0.0));
        if report.violations.is_empty() {
            return ExitCode::SUCCESS;
        }
        for issue in &report.known_issues {
            println!("KNOWN ISSUE {issue}");
        }
        for violation in &report.violations {
            println!("VIOLATION {violation}");
        }
        println!("replay: {}", replay_command(seed, size));
        return ExitCode::FAILURE;
    }
    silence_panics();
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in args.from..args.from.saturating_add(args.seeds) {
        let report = run_seed(
            seed,
            RunOptions {
                size,
                keep_trace: false,
                strict: args.strict,
            },
        );
        if args.verbose {
            println!(
                "seed {seed}: {} violations, trace hash {:016x}",
                report.violations.len(),
                report.trace_hash
            );
        }
        for violation in &report.violations {
            println!("seed {seed}: VIOLATION {violation}");
        }
        if !report.violations.is_empty() {
            println!("seed {seed}: replay: {}", replay_command(seed, size));
        }
        summary.add(&report);
    }
    print!("{}", summary.render(started.elapsed().as_secs_f64()));
    if summary.failing_seeds.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {:?}", summary.failing_seeds);
        ExitCode::FAILURE
    }
}
