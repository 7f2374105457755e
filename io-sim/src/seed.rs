//! One root seed for a whole run, split deterministically into per-component seeds,
//! and the small probability and latency helpers every fault injector shares.
//!
//! **Invariants**
//! - `SeedTree::child` is a pure function of the parent seed and the name: the same
//!   root seed gives the same seed to every component in every run, on every machine
//!   (pinned by a test vector, so it cannot drift silently).
//! - All randomness in io-sim is drawn from [`DetRng`]s derived from one seed; nothing
//!   reads the OS or a thread-local generator.
//! - A probability is in parts per million; `0` never fires and [`PPM_ONE`] always does.

use aof2_core::retry::DetRng;
use std::time::Duration;

/// One million parts per million: a certainty.
pub const PPM_ONE: u32 = 1_000_000;

/// Rates a seeded fault plan picks from when a fault is switched on: from one in ten
/// thousand up to one in twenty operations.
pub(crate) const SWARM_RATES_PPM: [u32; 4] = [100, 1_000, 10_000, 50_000];

/// A seed that splits into named children, so one number reproduces a whole run.
///
/// ```
/// use aof2_io_sim::SeedTree;
/// let root = SeedTree::new(42);
/// assert_eq!(root.child("disk"), SeedTree::new(42).child("disk"));
/// assert_ne!(root.child("disk"), root.child("object-store"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeedTree {
    seed: u64,
}

impl SeedTree {
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        SeedTree { seed }
    }

    /// The seed of this node.
    #[must_use]
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// The child named `name`: its seed mixes this seed with a FNV-1a hash of the name
    /// through one SplitMix64 step.
    #[must_use]
    pub fn child(&self, name: &str) -> SeedTree {
        const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
        let name_hash = name.bytes().fold(FNV_OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        });
        let mut rng = DetRng::new(self.seed ^ name_hash.rotate_left(17));
        SeedTree::new(rng.next_u64())
    }

    /// A generator seeded with this node's seed.
    #[must_use]
    pub fn rng(&self) -> DetRng {
        DetRng::new(self.seed)
    }
}

/// Whether an event of probability `ppm` (parts per million) happens. Draws one value
/// unless `ppm` is 0.
pub(crate) fn chance(rng: &mut DetRng, ppm: u32) -> bool {
    ppm > 0 && rng.below(u64::from(PPM_ONE)) < u64::from(ppm)
}

/// Off half the time, else one of [`SWARM_RATES_PPM`]: the swarm-testing draw of one
/// fault's rate.
pub(crate) fn swarm_rate_ppm(rng: &mut DetRng) -> u32 {
    if rng.below(2) == 0 {
        0
    } else {
        SWARM_RATES_PPM[rng.below(SWARM_RATES_PPM.len() as u64) as usize]
    }
}

/// How long an operation takes: a uniform base delay, plus now and then a long tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyPlan {
    /// Every operation waits uniformly `0..=base_us_max` microseconds.
    pub base_us_max: u64,
    /// Probability (ppm) that an operation also waits a tail delay.
    pub tail_ppm: u32,
    /// The tail delay is uniform in `0..=tail_us_max` microseconds.
    pub tail_us_max: u64,
}

impl LatencyPlan {
    /// No delay at all (and no draws from the RNG).
    pub const NONE: LatencyPlan = LatencyPlan {
        base_us_max: 0,
        tail_ppm: 0,
        tail_us_max: 0,
    };

    /// A seeded latency distribution: off half the time; else a base of up to 1 µs ..
    /// 2 ms and sometimes a tail of up to 10 .. 500 ms.
    #[must_use]
    pub fn from_rng(rng: &mut DetRng) -> LatencyPlan {
        if rng.below(2) == 0 {
            return LatencyPlan::NONE;
        }
        const BASES_US: [u64; 4] = [1, 100, 500, 2_000];
        const TAILS_US: [u64; 3] = [10_000, 100_000, 500_000];
        LatencyPlan {
            base_us_max: BASES_US[rng.below(BASES_US.len() as u64) as usize],
            tail_ppm: swarm_rate_ppm(rng),
            tail_us_max: TAILS_US[rng.below(TAILS_US.len() as u64) as usize],
        }
    }

    /// Whether this plan never delays.
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.base_us_max == 0 && (self.tail_ppm == 0 || self.tail_us_max == 0)
    }

    /// Draws one operation's delay, split at a random point into the part before the
    /// operation takes effect and the part after (so a caller may still be waiting
    /// for an operation that others can already see).
    pub(crate) fn draw(&self, rng: &mut DetRng) -> Delay {
        if self.is_none() {
            return Delay::default();
        }
        let base_us = if self.base_us_max > 0 {
            rng.below(self.base_us_max + 1)
        } else {
            0
        };
        let tail_us = if chance(rng, self.tail_ppm) {
            rng.below(self.tail_us_max + 1)
        } else {
            0
        };
        let total_us = base_us + tail_us;
        let before_us = rng.below(total_us + 1);
        Delay {
            before_us,
            after_us: total_us - before_us,
        }
    }
}

/// One operation's delay around the moment it takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delay {
    pub before_us: u64,
    pub after_us: u64,
}

impl Delay {
    pub fn is_zero(&self) -> bool {
        self.before_us == 0 && self.after_us == 0
    }
}

/// Waits `micros` of (simulated, under madsim) time; returns at once for zero, so a
/// plan without latency needs no runtime at all.
pub(crate) async fn pause(micros: u64) {
    if micros > 0 {
        madsim::time::sleep(Duration::from_micros(micros)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_pinned() {
        // Changing the split would change every recorded failing seed's meaning.
        let root = SeedTree::new(7);
        let disk = root.child("disk").seed();
        let store = root.child("object-store").seed();
        assert_eq!(disk, SeedTree::new(7).child("disk").seed());
        assert_ne!(disk, store);
        assert_ne!(root.child("disk"), SeedTree::new(8).child("disk"));
        assert_eq!(
            [disk, store],
            [PINNED_DISK_CHILD_OF_7, PINNED_STORE_CHILD_OF_7],
            "SeedTree::child changed"
        );
    }

    // Computed independently (a Python transcription of FNV-1a and SplitMix64).
    const PINNED_DISK_CHILD_OF_7: u64 = 972_100_350_151_883_476;
    const PINNED_STORE_CHILD_OF_7: u64 = 16_608_325_415_103_722_206;

    #[test]
    fn chance_bounds() {
        let mut rng = DetRng::new(1);
        assert!((0..1_000).all(|_| !chance(&mut rng, 0)));
        assert!((0..1_000).all(|_| chance(&mut rng, PPM_ONE)));
        let hits = (0..100_000).filter(|_| chance(&mut rng, 100_000)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }

    #[test]
    fn delays_stay_within_the_plan() {
        let plan = LatencyPlan {
            base_us_max: 10,
            tail_ppm: PPM_ONE / 2,
            tail_us_max: 1_000,
        };
        let mut rng = DetRng::new(3);
        let mut saw_tail = false;
        for _ in 0..1_000 {
            let delay = plan.draw(&mut rng);
            let total = delay.before_us + delay.after_us;
            assert!(total <= 1_010, "{delay:?}");
            saw_tail |= total > 10;
        }
        assert!(saw_tail);
        assert!(LatencyPlan::NONE.draw(&mut rng).is_zero());
    }
}
