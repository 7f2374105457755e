//! The summary of many seeds: throughput, faults injected by kind, crashes, restores
//! and the checkers' results, and the one command that replays each failing seed.
//!
//! **Invariants**
//! - Counters only add up [`SeedReport`]s; the summary of a set of seeds does not
//!   depend on the order they are added in.

use crate::model::Checker;
use crate::sim::{DiskLoss, SeedReport};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Totals over many seeds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seeds: u64,
    pub failing_seeds: Vec<u64>,
    /// Seeds that ran into a known, documented store issue (and stopped there).
    pub known_issue_seeds: Vec<u64>,
    /// Faults injected, by kind (disk and object store).
    pub faults: BTreeMap<&'static str, u64>,
    /// Checks run and violations, by checker.
    pub checks: BTreeMap<Checker, (u64, u64)>,
    pub sessions: u64,
    pub crashes: u64,
    pub clean_closes: u64,
    pub open_failures: u64,
    pub failed_sessions: u64,
    pub disk_losses_restored: u64,
    pub disk_losses_not_supported: u64,
    /// Restores refused with a typed error (a known issue).
    pub disk_losses_refused: u64,
    pub appends: u64,
    pub records_read: u64,
    pub cold_misses: u64,
    pub operator_deletes: u64,
    pub read_errors_under_faults: u64,
    pub durable_streams_skipped: u64,
    pub sim_elapsed_ms: u64,
}

impl Summary {
    pub fn add(&mut self, report: &SeedReport) {
        self.seeds += 1;
        if !report.violations.is_empty() {
            self.failing_seeds.push(report.seed);
        }
        if !report.known_issues.is_empty() {
            self.known_issue_seeds.push(report.seed);
        }
        let disk = &report.disk;
        let store = &report.store;
        for (kind, count) in [
            ("disk read error", disk.read_errors),
            ("disk write error", disk.write_errors),
            ("disk partial write", disk.partial_writes),
            ("disk fsync error", disk.sync_file_errors),
            ("disk dir fsync error", disk.sync_dir_errors),
            (
                "disk pending ops dropped by failed fsync",
                disk.pending_ops_dropped,
            ),
            ("disk metadata error", disk.metadata_errors),
            ("disk no space", disk.no_space_errors),
            ("disk bit rot", disk.bit_rot),
            ("disk delayed op", disk.delayed_operations),
            ("disk stale op after crash", disk.stale_operations),
            ("disk crash: writes lost", disk.crash_totals.writes_lost),
            ("disk crash: writes torn", disk.crash_totals.writes_torn),
            (
                "disk crash: namespace ops lost",
                disk.crash_totals.namespace_ops_lost,
            ),
            ("store error before apply", store.errors_before),
            ("store error after apply", store.errors_after),
            ("store 503 burst", store.throttle_bursts),
            ("store 503 answer", store.throttled_calls),
            ("store delayed call", store.delayed_calls),
            ("store object lost", store.objects_lost),
        ] {
            *self.faults.entry(kind).or_default() += count;
        }
        for checker in Checker::ALL {
            let entry = self.checks.entry(checker).or_default();
            entry.0 += report.checks.get(&checker).copied().unwrap_or(0);
            entry.1 += report
                .violations
                .iter()
                .filter(|violation| violation.checker == checker)
                .count() as u64;
        }
        self.sessions += report.sessions;
        self.crashes += report.crashes;
        self.clean_closes += report.clean_closes;
        self.open_failures += report.open_failures;
        self.failed_sessions += report.failed_sessions;
        match report.disk_loss {
            DiskLoss::NotPlanned => {}
            DiskLoss::Restored => self.disk_losses_restored += 1,
            DiskLoss::NotSupported => self.disk_losses_not_supported += 1,
            DiskLoss::Refused => self.disk_losses_refused += 1,
        }
        self.appends += report.appends;
        self.records_read += report.records_read;
        self.cold_misses += report.cold_misses;
        self.operator_deletes += report.operator_deletes;
        self.read_errors_under_faults += report.read_errors_under_faults;
        self.durable_streams_skipped += report.durable_streams_skipped;
        self.sim_elapsed_ms += report.sim_elapsed_ms;
    }

    /// The printed summary; `elapsed_s` is the real time the seeds took.
    #[must_use]
    pub fn render(&self, elapsed_s: f64) -> String {
        let mut out = String::new();
        let rate = if elapsed_s > 0.0 {
            self.seeds as f64 / elapsed_s
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "seeds: {} in {elapsed_s:.1} s ({rate:.2} seeds/s), {} failing",
            self.seeds,
            self.failing_seeds.len()
        );
        let _ = writeln!(
            out,
            "sessions {}, crashes {}, clean closes {}, failed opens {}, sessions ended by a \
             failed command {}",
            self.sessions,
            self.crashes,
            self.clean_closes,
            self.open_failures,
            self.failed_sessions
        );
        let _ = writeln!(
            out,
            "whole-disk loss with Tier 2 surviving: restored {}, not supported by the store {}, \
             restore refused (known issue) {}",
            self.disk_losses_restored, self.disk_losses_not_supported, self.disk_losses_refused
        );
        let _ = writeln!(
            out,
            "appends {}, records read back {}, cold misses {}, operator deletes {}, read errors \
             under faults {}, streams the durable checker could not replay {}, simulated time {} s",
            self.appends,
            self.records_read,
            self.cold_misses,
            self.operator_deletes,
            self.read_errors_under_faults,
            self.durable_streams_skipped,
            self.sim_elapsed_ms / 1000
        );
        if !self.known_issue_seeds.is_empty() {
            let _ = writeln!(
                out,
                "known issues (docs/testing.md; violations with --strict): {} seeds {:?}",
                self.known_issue_seeds.len(),
                self.known_issue_seeds
            );
        }
        let _ = writeln!(out, "faults injected:");
        for (kind, count) in &self.faults {
            let _ = writeln!(out, "  {kind:<42} {count}");
        }
        let _ = writeln!(out, "checkers (checks run, violations):");
        for (checker, (runs, violations)) in &self.checks {
            let _ = writeln!(
                out,
                "  {:>2} {:<28} {runs:>10} {violations:>4}",
                checker.number(),
                checker.name()
            );
        }
        out
    }
}
