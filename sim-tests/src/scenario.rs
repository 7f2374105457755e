//! What one seed runs: the streams, the store configuration, the fault plans and the
//! shape of the workload, all drawn from the seed's `workload` and `*-plan` children
//! (swarm testing: different seeds stress different mixes).
//!
//! **Invariants**
//! - [`Scenario::from_seed`] is a pure function of the seed and the [`WorkloadSize`].
//! - Every drawn [`StoreConfig`] passes `StoreConfig::validate` (asserted: a scenario
//!   that draws an invalid config is a bug of the generator).
//! - Tier 0 and Tier 1 get their smallest budgets and segments are small, so a seed
//!   with a few megabytes of appends seals, compresses, uploads, evicts and reads
//!   cold.

use aof2_core::limits::{
    MANIFEST_CHUNK_BYTES_MIN, SEGMENT_MAX_AGE_MS_MIN, SEGMENT_TARGET_BYTES_MIN,
    TIER0_CLUSTER_MAX_BYTES_MIN, TIER1_MAX_BYTES_MIN,
};
use aof2_core::retry::DetRng;
use aof2_core::store::StoreConfig;
use aof2_core::stream::FlushPolicy;
use aof2_core::tier2::RetentionPolicy;
use aof2_io_sim::{SeedTree, SimPlans};

/// How big a seed's workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadSize {
    /// Sessions (process lifetimes, each ended by a crash or a clean close) before the
    /// final, fault-free one: `1..=sessions_max`.
    pub sessions_max: u32,
    /// Commands per session: `1..=ops_per_session_max`.
    pub ops_per_session_max: u32,
}

impl WorkloadSize {
    /// The size CI runs hundreds of seeds of (and the runner's default).
    pub const DEFAULT: WorkloadSize = WorkloadSize {
        sessions_max: 5,
        ops_per_session_max: 160,
    };
    /// A few seeds in a plain `cargo test`.
    pub const SMALL: WorkloadSize = WorkloadSize {
        sessions_max: 3,
        ops_per_session_max: 60,
    };
}

impl Default for WorkloadSize {
    fn default() -> Self {
        WorkloadSize::DEFAULT
    }
}

/// Largest record payload any scenario draws: moderate, so seeds stay fast.
pub const PAYLOAD_BYTES_MAX: u32 = 16 * 1024;

/// Everything one seed runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub seed: u64,
    /// Stream names (`s0`, `s1`, ...).
    pub streams: Vec<String>,
    /// Record payloads are `0..=payload_bytes_max` bytes.
    pub payload_bytes_max: u32,
    pub config: StoreConfig,
    /// The fault plans while faults are on (the final session always runs without).
    pub plans: SimPlans,
    /// Whether faults are on at all before the final session.
    pub faults: bool,
    /// Sessions before the final one.
    pub sessions: u32,
    pub ops_per_session_max: u32,
    /// Whether a session may also end at a random instant (dropping the driver in the
    /// middle of whatever it does), not only between two commands.
    pub timed_crashes: bool,
    /// Whether the seed ends with the loss of the whole disk, Tier 2 surviving.
    pub disk_loss: bool,
    /// Whether retention is configured (reads below the start offset are then
    /// expected to fail with `OffsetBelowStart`).
    pub retention: bool,
}

fn pick<T: Copy>(rng: &mut DetRng, choices: &[T]) -> T {
    choices[rng.below(choices.len() as u64) as usize]
}

impl Scenario {
    /// The scenario of `seed`.
    #[must_use]
    pub fn from_seed(seed: u64, size: WorkloadSize) -> Scenario {
        let tree = SeedTree::new(seed);
        let mut rng = tree.child("workload").rng();
        let stream_count = 1 + rng.below(3) as usize;
        let streams = (0..stream_count).map(|i| format!("s{i}")).collect();
        let payload_bytes_max = pick(
            &mut rng,
            &[0, 64, 1024, 4096, PAYLOAD_BYTES_MAX, PAYLOAD_BYTES_MAX],
        );

        let mut config = StoreConfig {
            rng_seed: tree.child("store").seed(),
            ..StoreConfig::default()
        };
        config.tier0.cluster_max_bytes = TIER0_CLUSTER_MAX_BYTES_MIN;
        config.tier1.max_bytes = TIER1_MAX_BYTES_MIN;
        config.stream.segment_target_bytes = pick(
            &mut rng,
            &[SEGMENT_TARGET_BYTES_MIN, 4096, 16 * 1024, 64 * 1024],
        );
        config.stream.segment_max_age_ms = pick(&mut rng, &[SEGMENT_MAX_AGE_MS_MIN, 60_000]);
        config.stream.flush = pick(
            &mut rng,
            &[
                FlushPolicy::EveryAppend,
                FlushPolicy::Bytes(4096),
                FlushPolicy::IntervalMs(50),
            ],
        );
        config.manifest.chunk_capacity_bytes = MANIFEST_CHUNK_BYTES_MIN;
        config.snapshot_every_records = pick(&mut rng, &[0, 40, 200]);
        let retention = rng.below(4) == 0;
        if retention {
            config.tier2.retention = pick(
                &mut rng,
                &[
                    RetentionPolicy {
                        max_age_ms: Some(20_000),
                        max_bytes: None,
                    },
                    RetentionPolicy {
                        max_age_ms: None,
                        max_bytes: Some(256 * 1024),
                    },
                ],
            );
        }
        config
            .validate()
            .unwrap_or_else(|error| panic!("seed {seed}: the scenario drew a bad config: {error}"));

        let faults = rng.below(8) != 0;
        let sessions = 1 + rng.below(u64::from(size.sessions_max)) as u32;
        let timed_crashes = rng.below(2) == 0;
        let disk_loss = rng.below(8) == 0;
        Scenario {
            seed,
            streams,
            payload_bytes_max,
            config,
            plans: SimPlans::from_seed(seed),
            faults,
            sessions,
            ops_per_session_max: size.ops_per_session_max,
            timed_crashes,
            disk_loss,
            retention,
        }
    }
}
