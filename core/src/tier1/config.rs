//! Tier 1 knobs (`AofManagerConfig::store.tier1` in the runbook) and their validation.
//!
//! **Invariants**
//! - A config that passed [`Tier1Config::validate`] builds a valid [`RetryPolicy`]
//!   (so [`Tier1Config::retry_policy`] cannot fail) and every knob lies within its
//!   named limit.
//! - The defaults are valid and match the runbook: 3 attempts, 50 ms backoff.

use crate::limits::{
    ARTIFACT_COMPRESSION_LEVEL_DEFAULT, ARTIFACT_COMPRESSION_LEVEL_MAX,
    ARTIFACT_COMPRESSION_LEVEL_MIN, ARTIFACT_FRAME_RAW_BYTES_TARGET,
    ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX, ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN, RETRY_ATTEMPTS_MAX,
    RETRY_DELAY_MS_MAX, RETRY_MAX_ATTEMPTS_DEFAULT, RETRY_MAX_DELAY_MS_DEFAULT,
    TIER1_COMPRESSION_CONCURRENCY_DEFAULT, TIER1_COMPRESSION_CONCURRENCY_MAX,
    TIER1_HYDRATION_CONCURRENCY_DEFAULT, TIER1_HYDRATION_CONCURRENCY_MAX, TIER1_MAX_BYTES_DEFAULT,
    TIER1_MAX_BYTES_MIN, TIER1_RETRY_BASE_DELAY_MS_DEFAULT,
};
use crate::retry::{Jitter, RetryPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Tier 1 knobs (`AofManagerConfig::store.tier1` in the runbook).
///
/// Deserialising validates; missing fields take their defaults; unknown fields are
/// rejected so a misspelt knob is an error, not a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Tier1ConfigFields")]
pub struct Tier1Config {
    /// Warm cache budget in bytes of artifacts. Should cover the working set of sealed
    /// segments. Artifacts Tier 2 does not hold yet are kept even over budget.
    pub max_bytes: u64,
    /// Attempts of one compression or hydration, the first try included (the
    /// runbook's "3 attempts"; [`RetryPolicy::max_attempts`]). Increase if Tier 2 is
    /// eventually consistent; decrease to surface failures faster.
    pub max_retries: u32,
    /// Backoff after the first failed attempt (the runbook's `retry_backoff`); it
    /// doubles after each further failure and is jittered (equal jitter).
    pub retry_backoff_ms: u64,
    /// zstd level of artifact frames.
    pub compression_level: i32,
    /// Target uncompressed bytes of one artifact frame.
    pub frame_raw_bytes_target: u32,
    /// Compression jobs running at once.
    pub compression_concurrency: u32,
    /// Hydrations running at once; bounded so cold reads cannot starve appends.
    pub hydration_concurrency: u32,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Tier1ConfigFields {
    max_bytes: u64,
    max_retries: u32,
    retry_backoff_ms: u64,
    compression_level: i32,
    frame_raw_bytes_target: u32,
    compression_concurrency: u32,
    hydration_concurrency: u32,
}

impl Default for Tier1ConfigFields {
    fn default() -> Self {
        let config = Tier1Config::default();
        Tier1ConfigFields {
            max_bytes: config.max_bytes,
            max_retries: config.max_retries,
            retry_backoff_ms: config.retry_backoff_ms,
            compression_level: config.compression_level,
            frame_raw_bytes_target: config.frame_raw_bytes_target,
            compression_concurrency: config.compression_concurrency,
            hydration_concurrency: config.hydration_concurrency,
        }
    }
}

impl TryFrom<Tier1ConfigFields> for Tier1Config {
    type Error = Tier1ConfigError;

    fn try_from(fields: Tier1ConfigFields) -> Result<Self, Self::Error> {
        let config = Tier1Config {
            max_bytes: fields.max_bytes,
            max_retries: fields.max_retries,
            retry_backoff_ms: fields.retry_backoff_ms,
            compression_level: fields.compression_level,
            frame_raw_bytes_target: fields.frame_raw_bytes_target,
            compression_concurrency: fields.compression_concurrency,
            hydration_concurrency: fields.hydration_concurrency,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for Tier1Config {
    fn default() -> Self {
        Tier1Config {
            max_bytes: TIER1_MAX_BYTES_DEFAULT,
            max_retries: RETRY_MAX_ATTEMPTS_DEFAULT,
            retry_backoff_ms: TIER1_RETRY_BASE_DELAY_MS_DEFAULT,
            compression_level: ARTIFACT_COMPRESSION_LEVEL_DEFAULT,
            frame_raw_bytes_target: ARTIFACT_FRAME_RAW_BYTES_TARGET,
            compression_concurrency: TIER1_COMPRESSION_CONCURRENCY_DEFAULT,
            hydration_concurrency: TIER1_HYDRATION_CONCURRENCY_DEFAULT,
        }
    }
}

/// A bad Tier 1 configuration value; the message names the knob, its value and its
/// range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tier1ConfigError {
    #[error("tier1.max_bytes = {value}: must be at least {min} bytes (is the unit bytes?)")]
    MaxBytesTooSmall { value: u64, min: u64 },
    #[error(
        "tier1.max_retries = {value}: must be in 1..={limit} (attempts, the first try included)"
    )]
    MaxRetriesOutOfRange { value: u32, limit: u32 },
    #[error("tier1.retry_backoff_ms = {value}: must be at most {limit}")]
    RetryBackoffTooLarge { value: u64, limit: u64 },
    #[error("tier1.compression_level = {value}: must be in {min}..={max}")]
    CompressionLevelOutOfRange { value: i32, min: i32, max: i32 },
    #[error("tier1.frame_raw_bytes_target = {value}: must be in {min}..={max}")]
    FrameRawBytesTargetOutOfRange { value: u32, min: u32, max: u32 },
    #[error("tier1.compression_concurrency = {value}: must be in 1..={limit}")]
    CompressionConcurrencyOutOfRange { value: u32, limit: u32 },
    #[error("tier1.hydration_concurrency = {value}: must be in 1..={limit}")]
    HydrationConcurrencyOutOfRange { value: u32, limit: u32 },
}

impl Tier1Config {
    /// Checks every knob against its limit.
    pub fn validate(&self) -> Result<(), Tier1ConfigError> {
        if self.max_bytes < TIER1_MAX_BYTES_MIN {
            return Err(Tier1ConfigError::MaxBytesTooSmall {
                value: self.max_bytes,
                min: TIER1_MAX_BYTES_MIN,
            });
        }
        if !(1..=RETRY_ATTEMPTS_MAX).contains(&self.max_retries) {
            return Err(Tier1ConfigError::MaxRetriesOutOfRange {
                value: self.max_retries,
                limit: RETRY_ATTEMPTS_MAX,
            });
        }
        if self.retry_backoff_ms > RETRY_DELAY_MS_MAX {
            return Err(Tier1ConfigError::RetryBackoffTooLarge {
                value: self.retry_backoff_ms,
                limit: RETRY_DELAY_MS_MAX,
            });
        }
        let levels = ARTIFACT_COMPRESSION_LEVEL_MIN..=ARTIFACT_COMPRESSION_LEVEL_MAX;
        if !levels.contains(&self.compression_level) {
            return Err(Tier1ConfigError::CompressionLevelOutOfRange {
                value: self.compression_level,
                min: ARTIFACT_COMPRESSION_LEVEL_MIN,
                max: ARTIFACT_COMPRESSION_LEVEL_MAX,
            });
        }
        let targets = ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN..=ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX;
        if !targets.contains(&self.frame_raw_bytes_target) {
            return Err(Tier1ConfigError::FrameRawBytesTargetOutOfRange {
                value: self.frame_raw_bytes_target,
                min: ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN,
                max: ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX,
            });
        }
        if !(1..=TIER1_COMPRESSION_CONCURRENCY_MAX).contains(&self.compression_concurrency) {
            return Err(Tier1ConfigError::CompressionConcurrencyOutOfRange {
                value: self.compression_concurrency,
                limit: TIER1_COMPRESSION_CONCURRENCY_MAX,
            });
        }
        if !(1..=TIER1_HYDRATION_CONCURRENCY_MAX).contains(&self.hydration_concurrency) {
            return Err(Tier1ConfigError::HydrationConcurrencyOutOfRange {
                value: self.hydration_concurrency,
                limit: TIER1_HYDRATION_CONCURRENCY_MAX,
            });
        }
        assert!(
            self.retry_policy_unchecked().validate().is_ok(),
            "a valid Tier 1 config gives a valid retry policy"
        );
        Ok(())
    }

    /// The retry policy of compressions, hydrations and evictions: `max_retries`
    /// attempts, `retry_backoff_ms` base delay doubling per failure, capped at
    /// `max(retry_backoff_ms, RETRY_MAX_DELAY_MS_DEFAULT)`, equal jitter. With the
    /// defaults this is [`RetryPolicy::tier1_default`].
    ///
    /// Panics if the config is invalid (deserialising validates).
    #[must_use]
    pub fn retry_policy(&self) -> RetryPolicy {
        assert!(
            self.validate().is_ok(),
            "Tier 1 config used without validation: {self:?}"
        );
        self.retry_policy_unchecked()
    }

    fn retry_policy_unchecked(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_retries,
            base_delay_ms: self.retry_backoff_ms,
            max_delay_ms: self.retry_backoff_ms.max(RETRY_MAX_DELAY_MS_DEFAULT),
            jitter: Jitter::Equal,
        }
    }
}
