//! Retry policy: how many attempts, and how long to wait between them, with
//! exponential backoff and jitter drawn from a deterministic RNG passed in.
//!
//! Tier 2 uploads, gets and deletes use [`RetryPolicy::tier2_default`] (3 attempts,
//! 100 ms base); Tier 1 compression and hydration use [`RetryPolicy::tier1_default`]
//! (3 attempts, 50 ms base: the runbook's `max_retries` and `retry_backoff`).
//!
//! The delay before attempt `n + 1`, after attempt `n` failed, is
//! `backoff(n) = min(max_delay_ms, base_delay_ms * 2^(n - 1))`, then jittered (see
//! [`Jitter`]). Randomness comes from a [`DetRng`] owned by the caller, so a seed
//! replays the same delays.
//!
//! **Invariants**
//! - A policy that passed [`RetryPolicy::validate`] never overflows: every backoff is
//!   at most `max_delay_ms <= RETRY_DELAY_MS_MAX`.
//! - `delay_ms(n)` is `None` exactly when `n >= max_attempts`; otherwise it is at most
//!   `backoff(n)`, and at least `backoff(n) / 2` with [`Jitter::Equal`].
//! - `delay_ms` draws exactly one value from the RNG when it returns a jittered delay
//!   and none otherwise, so traces stay aligned across runs.

use crate::limits::{
    RETRY_ATTEMPTS_MAX, RETRY_DELAY_MS_MAX, RETRY_MAX_ATTEMPTS_DEFAULT, RETRY_MAX_DELAY_MS_DEFAULT,
    TIER1_RETRY_BASE_DELAY_MS_DEFAULT, TIER2_RETRY_BASE_DELAY_MS_DEFAULT,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A small deterministic RNG (SplitMix64) whose whole state is one `u64`.
///
/// Written by hand rather than taken from an RNG crate because:
/// - core must never reach for an ambient, thread-local or OS-seeded generator; the
///   state has to be an explicit input the simulator seeds and can record, and a
///   plain `u64` is trivially serialised into a trace or a snapshot;
/// - the output sequence is part of the simulator's reproducibility contract, so it is
///   pinned here by test vectors instead of following a crate's release notes;
/// - SplitMix64 is a dozen lines (Steele, Lea, Flood 2014; the seeder of xoshiro).
///
/// Not for cryptography.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetRng {
    state: u64,
}

impl DetRng {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator seeded with `seed` (every seed, including 0, is fine).
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        DetRng { state: seed }
    }

    /// The current state; `DetRng::new(rng.state())` continues the same sequence.
    #[must_use]
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`, by multiply-high (Lemire); the bias is below
    /// `bound / 2^64`, far under anything a backoff delay can notice.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no value to return");
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        let value = u64::try_from(wide >> 64).expect("the high half of a u64*u64 fits u64");
        assert!(value < bound);
        value
    }

    /// A child generator with its own seed, for splitting one root seed into
    /// per-component seeds.
    pub fn split(&mut self) -> DetRng {
        DetRng::new(self.next_u64())
    }
}

/// How a backoff delay is randomised so that retries of many clients spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the backoff; draws nothing from the RNG.
    None,
    /// Uniform in `0..=backoff`: spreads retries most, may retry at once.
    Full,
    /// `backoff / 2` plus uniform in `0..=backoff - backoff / 2`: spreads retries
    /// while keeping at least half of the backoff.
    Equal,
}

/// A bad retry configuration value; the message names the field and the allowed range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RetryConfigError {
    #[error("max_attempts = 0: must be at least 1 (the first try counts as an attempt)")]
    MaxAttemptsZero,
    #[error("max_attempts = {value}: must be at most {limit}")]
    MaxAttemptsTooLarge { value: u32, limit: u32 },
    #[error("max_delay_ms = {value}: must be at most {limit}")]
    MaxDelayTooLarge { value: u64, limit: u64 },
    #[error("base_delay_ms = {base_delay_ms} is larger than max_delay_ms = {max_delay_ms}")]
    BaseAboveMax {
        base_delay_ms: u64,
        max_delay_ms: u64,
    },
}

/// How many times to try an operation and how long to wait in between.
///
/// Deserialising validates (a TOML table with missing fields takes the Tier 2
/// defaults; unknown fields are rejected). A policy built by hand should go through
/// [`RetryPolicy::new`]; using an invalid one is a bug and panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RetryPolicyFields")]
pub struct RetryPolicy {
    /// Attempts in total, the first try included (`1` means never retry).
    pub max_attempts: u32,
    /// Backoff after the first failed attempt; doubles after each further failure.
    /// `0` retries at once (meant for tests).
    pub base_delay_ms: u64,
    /// Cap on one backoff, before jitter.
    pub max_delay_ms: u64,
    /// How the backoff is randomised.
    pub jitter: Jitter,
}

/// The unvalidated serde form of [`RetryPolicy`].
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RetryPolicyFields {
    max_attempts: u32,
    base_delay_ms: u64,
    max_delay_ms: u64,
    jitter: Jitter,
}

impl Default for RetryPolicyFields {
    fn default() -> Self {
        let policy = RetryPolicy::tier2_default();
        RetryPolicyFields {
            max_attempts: policy.max_attempts,
            base_delay_ms: policy.base_delay_ms,
            max_delay_ms: policy.max_delay_ms,
            jitter: policy.jitter,
        }
    }
}

impl TryFrom<RetryPolicyFields> for RetryPolicy {
    type Error = RetryConfigError;

    fn try_from(fields: RetryPolicyFields) -> Result<Self, Self::Error> {
        RetryPolicy::new(
            fields.max_attempts,
            fields.base_delay_ms,
            fields.max_delay_ms,
            fields.jitter,
        )
    }
}

impl Default for RetryPolicy {
    /// The Tier 2 default: 3 attempts, 100 ms base, equal jitter.
    fn default() -> Self {
        Self::tier2_default()
    }
}

impl RetryPolicy {
    /// A validated policy.
    pub fn new(
        max_attempts: u32,
        base_delay_ms: u64,
        max_delay_ms: u64,
        jitter: Jitter,
    ) -> Result<Self, RetryConfigError> {
        let policy = RetryPolicy {
            max_attempts,
            base_delay_ms,
            max_delay_ms,
            jitter,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Tier 2 uploads, gets and deletes: 3 attempts, 100 ms base delay.
    #[must_use]
    pub const fn tier2_default() -> Self {
        RetryPolicy {
            max_attempts: RETRY_MAX_ATTEMPTS_DEFAULT,
            base_delay_ms: TIER2_RETRY_BASE_DELAY_MS_DEFAULT,
            max_delay_ms: RETRY_MAX_DELAY_MS_DEFAULT,
            jitter: Jitter::Equal,
        }
    }

    /// Tier 1 compression and hydration: 3 attempts, 50 ms base delay.
    #[must_use]
    pub const fn tier1_default() -> Self {
        RetryPolicy {
            max_attempts: RETRY_MAX_ATTEMPTS_DEFAULT,
            base_delay_ms: TIER1_RETRY_BASE_DELAY_MS_DEFAULT,
            max_delay_ms: RETRY_MAX_DELAY_MS_DEFAULT,
            jitter: Jitter::Equal,
        }
    }

    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if self.max_attempts == 0 {
            return Err(RetryConfigError::MaxAttemptsZero);
        }
        if self.max_attempts > RETRY_ATTEMPTS_MAX {
            return Err(RetryConfigError::MaxAttemptsTooLarge {
                value: self.max_attempts,
                limit: RETRY_ATTEMPTS_MAX,
            });
        }
        if self.max_delay_ms > RETRY_DELAY_MS_MAX {
            return Err(RetryConfigError::MaxDelayTooLarge {
                value: self.max_delay_ms,
                limit: RETRY_DELAY_MS_MAX,
            });
        }
        if self.base_delay_ms > self.max_delay_ms {
            return Err(RetryConfigError::BaseAboveMax {
                base_delay_ms: self.base_delay_ms,
                max_delay_ms: self.max_delay_ms,
            });
        }
        Ok(())
    }

    /// The backoff before jitter after `attempt` attempts failed (`attempt >= 1`), or
    /// `None` when no attempt is left.
    #[must_use]
    pub fn backoff_ms(&self, attempt: u32) -> Option<u64> {
        assert!(attempt >= 1, "attempts are counted from 1");
        assert!(
            self.validate().is_ok(),
            "retry policy used without validation: {self:?}"
        );
        if attempt >= self.max_attempts {
            return None;
        }
        // attempt < max_attempts <= RETRY_ATTEMPTS_MAX, and limits.rs asserts that
        // RETRY_DELAY_MS_MAX << (RETRY_ATTEMPTS_MAX - 1) fits a u64.
        let doubled = self.base_delay_ms << (attempt - 1);
        assert!(
            doubled >> (attempt - 1) == self.base_delay_ms,
            "backoff overflowed"
        );
        let backoff = doubled.min(self.max_delay_ms);
        assert!(backoff <= self.max_delay_ms);
        Some(backoff)
    }

    /// The delay to wait after `attempt` attempts failed (`attempt >= 1`) before the
    /// next one, or `None` when attempts are exhausted. Jitter draws from `rng`.
    pub fn delay_ms(&self, attempt: u32, rng: &mut DetRng) -> Option<u64> {
        let backoff = self.backoff_ms(attempt)?;
        let delay = match self.jitter {
            Jitter::None => backoff,
            Jitter::Full => rng.below(backoff + 1),
            Jitter::Equal => {
                let floor = backoff / 2;
                floor + rng.below(backoff - floor + 1)
            }
        };
        assert!(delay <= backoff, "jitter never lengthens the backoff");
        assert!(
            self.jitter != Jitter::Equal || delay >= backoff / 2,
            "equal jitter keeps half the backoff"
        );
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splitmix64_matches_reference_vectors() {
        // Reference outputs of SplitMix64 seeded with 1234567 (the C reference code
        // by Vigna at prng.di.unimi.it/splitmix64.c).
        let mut rng = DetRng::new(1_234_567);
        let expected = [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for value in expected {
            assert_eq!(rng.next_u64(), value);
        }
    }

    #[test]
    fn rng_state_continues_the_sequence() {
        let mut rng = DetRng::new(42);
        let _ = rng.next_u64();
        let mut copy = DetRng::new(rng.state());
        assert_eq!(rng.next_u64(), copy.next_u64());
        let mut child_a = DetRng::new(7).split();
        let mut child_b = DetRng::new(7).split();
        assert_eq!(child_a.next_u64(), child_b.next_u64());
    }

    #[test]
    #[should_panic(expected = "below(0)")]
    fn below_zero_is_a_bug() {
        let _ = DetRng::new(1).below(0);
    }

    #[test]
    fn defaults_match_the_runbook() {
        let tier2 = RetryPolicy::default();
        assert_eq!(tier2, RetryPolicy::tier2_default());
        assert_eq!(tier2.max_attempts, 3);
        assert_eq!(tier2.base_delay_ms, 100);
        let tier1 = RetryPolicy::tier1_default();
        assert_eq!(tier1.max_attempts, 3);
        assert_eq!(tier1.base_delay_ms, 50);
        tier1.validate().unwrap();
        tier2.validate().unwrap();
    }

    #[test]
    fn exponential_backoff_capped_then_exhausted() {
        let policy = RetryPolicy::new(6, 100, 500, Jitter::None).unwrap();
        let mut rng = DetRng::new(9);
        let before = rng.clone();
        let delays: Vec<_> = (1..=6).map(|n| policy.delay_ms(n, &mut rng)).collect();
        assert_eq!(
            delays,
            [Some(100), Some(200), Some(400), Some(500), Some(500), None]
        );
        assert_eq!(rng, before, "no jitter draws nothing");
    }

    #[test]
    fn three_attempts_allow_two_retries() {
        let policy = RetryPolicy::tier2_default();
        let mut rng = DetRng::new(1);
        assert!(policy.delay_ms(1, &mut rng).is_some());
        assert!(policy.delay_ms(2, &mut rng).is_some());
        assert_eq!(policy.delay_ms(3, &mut rng), None);
        assert_eq!(policy.delay_ms(4, &mut rng), None);
        let once = RetryPolicy::new(1, 10, 10, Jitter::Full).unwrap();
        assert_eq!(once.delay_ms(1, &mut rng), None);
    }

    #[test]
    fn jitter_is_deterministic_per_seed() {
        let policy = RetryPolicy::new(10, 100, 10_000, Jitter::Full).unwrap();
        let run = |seed| {
            let mut rng = DetRng::new(seed);
            (1..10)
                .map(|n| policy.delay_ms(n, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    #[should_panic(expected = "counted from 1")]
    fn attempt_zero_is_a_bug() {
        let _ = RetryPolicy::default().delay_ms(0, &mut DetRng::new(0));
    }

    #[test]
    #[should_panic(expected = "without validation")]
    fn invalid_policy_use_is_a_bug() {
        let policy = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        let _ = policy.delay_ms(1, &mut DetRng::new(0));
    }

    #[test]
    fn bad_values_are_rejected_with_clear_errors() {
        let cases = [
            (
                RetryPolicy::new(0, 100, 1000, Jitter::Equal),
                "max_attempts = 0: must be at least 1",
            ),
            (
                RetryPolicy::new(33, 100, 1000, Jitter::Equal),
                "max_attempts = 33: must be at most 32",
            ),
            (
                RetryPolicy::new(3, 100, 600_001, Jitter::Equal),
                "max_delay_ms = 600001: must be at most 600000",
            ),
            (
                RetryPolicy::new(3, 2000, 1000, Jitter::Equal),
                "base_delay_ms = 2000 is larger than max_delay_ms = 1000",
            ),
        ];
        for (result, message) in cases {
            let error = result.unwrap_err();
            assert!(error.to_string().starts_with(message), "{error}");
        }
    }

    #[test]
    fn toml_defaults_validation_and_unknown_fields() {
        let policy: RetryPolicy = toml::from_str("").unwrap();
        assert_eq!(policy, RetryPolicy::tier2_default());
        let policy: RetryPolicy = toml::from_str("max_attempts = 5\njitter = \"full\"").unwrap();
        assert_eq!(policy.max_attempts, 5);
        assert_eq!(policy.jitter, Jitter::Full);
        assert_eq!(policy.base_delay_ms, 100);
        let error = toml::from_str::<RetryPolicy>("max_attempts = 0").unwrap_err();
        assert!(error.to_string().contains("max_attempts = 0"), "{error}");
        let error = toml::from_str::<RetryPolicy>("max_attempt = 4").unwrap_err();
        assert!(error.to_string().contains("max_attempt"), "{error}");
        let round = toml::to_string(&policy).unwrap();
        assert_eq!(toml::from_str::<RetryPolicy>(&round).unwrap(), policy);
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)]
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            max_attempts in 1..=RETRY_ATTEMPTS_MAX,
            max_delay_ms in 0..=RETRY_DELAY_MS_MAX,
            base_fraction in 0u64..=1000,
            jitter in jitter(),
            seed: u64,
        ) {
            let base_delay_ms = max_delay_ms * base_fraction / 1000;
            let policy = RetryPolicy::new(max_attempts, base_delay_ms, max_delay_ms, jitter).unwrap();
            let mut rng = DetRng::new(seed);
            let mut previous_backoff = 0;
            for attempt in 1..=RETRY_ATTEMPTS_MAX + 1 {
                let backoff = policy.backoff_ms(attempt);
                let delay = policy.delay_ms(attempt, &mut rng);
                prop_assert_eq!(backoff.is_none(), attempt >= max_attempts);
                prop_assert_eq!(delay.is_none(), backoff.is_none());
                if let (Some(backoff), Some(delay)) = (backoff, delay) {
                    prop_assert!(backoff >= previous_backoff, "backoff never shrinks");
                    prop_assert!(backoff <= max_delay_ms);
                    prop_assert!(delay <= backoff);
                    if jitter == Jitter::Equal {
                        prop_assert!(delay >= backoff / 2);
                    }
                    if jitter == Jitter::None {
                        prop_assert_eq!(delay, backoff);
                    }
                    previous_backoff = backoff;
                }
            }
        }
    }
}
