//! Stream knobs: segment size and age, flush policy, backlog cap, flush retries, record
//! size.
//!
//! **Invariants**
//! - A `StreamConfig` that passed [`StreamConfig::validate`] admits one largest record
//!   into an empty backlog, and a `flush = { bytes = n }` threshold is reachable
//!   (`n <= max_unflushed_bytes`).
//! - Deserialising validates; missing keys take their defaults; unknown keys are
//!   rejected.

use crate::limits::{
    FLUSH_INTERVAL_MS_MAX, FLUSH_MAX_RETRIES_DEFAULT, FLUSH_RETRIES_MAX, RECORD_PAYLOAD_BYTES_MAX,
    SEGMENT_MAX_AGE_MS_DEFAULT, SEGMENT_MAX_AGE_MS_MAX, SEGMENT_MAX_AGE_MS_MIN,
    SEGMENT_RECORD_FRAME_HEADER_BYTES, SEGMENT_TARGET_BYTES_DEFAULT, SEGMENT_TARGET_BYTES_MAX,
    SEGMENT_TARGET_BYTES_MIN, STREAM_UNFLUSHED_BYTES_DEFAULT, STREAM_UNFLUSHED_BYTES_MAX,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// When the stream fsyncs what it wrote. Writes themselves always go out at once (group
/// commit); the policy only decides when a `SyncFile` follows. Whatever the policy, a
/// sync is also forced by [`super::StreamMachine::flush`], by an append refused with
/// `WouldBlock(Flush)`, by a retry after a failed flush, and by sealing.
///
/// In TOML: `flush = "every_append"`, `flush = { bytes = 1048576 }` or
/// `flush = { interval_ms = 5 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicy {
    /// Sync as soon as written bytes are not durable: every append becomes durable
    /// without waiting, and concurrent appends share a sync (group commit).
    EveryAppend,
    /// Sync once at least this many written bytes are not durable. A smaller tail waits
    /// for more appends, a `flush`, or the seal (bounded by `segment_max_age_ms`).
    Bytes(u64),
    /// Sync at most this many milliseconds after a record was appended.
    IntervalMs(u64),
}

/// One stream's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StreamConfigFields")]
pub struct StreamConfig {
    /// Seal the active segment once its file holds this many bytes (header and frames).
    pub segment_target_bytes: u64,
    /// Seal the active segment this long after its first record was appended.
    pub segment_max_age_ms: u64,
    /// When to fsync.
    pub flush: FlushPolicy,
    /// Cap on appended-but-not-durable bytes; past it appends get `WouldBlock(Flush)`.
    pub max_unflushed_bytes: u64,
    /// Rewrites after consecutive failed flushes before the stream is poisoned.
    pub flush_max_retries: u32,
    /// Largest record payload this stream accepts (at most
    /// [`RECORD_PAYLOAD_BYTES_MAX`]).
    pub record_payload_bytes_max: u32,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StreamConfigFields {
    segment_target_bytes: u64,
    segment_max_age_ms: u64,
    flush: FlushPolicy,
    max_unflushed_bytes: u64,
    flush_max_retries: u32,
    record_payload_bytes_max: u32,
}

impl Default for StreamConfigFields {
    fn default() -> Self {
        let config = StreamConfig::default();
        StreamConfigFields {
            segment_target_bytes: config.segment_target_bytes,
            segment_max_age_ms: config.segment_max_age_ms,
            flush: config.flush,
            max_unflushed_bytes: config.max_unflushed_bytes,
            flush_max_retries: config.flush_max_retries,
            record_payload_bytes_max: config.record_payload_bytes_max,
        }
    }
}

impl TryFrom<StreamConfigFields> for StreamConfig {
    type Error = StreamConfigError;

    fn try_from(fields: StreamConfigFields) -> Result<Self, Self::Error> {
        let config = StreamConfig {
            segment_target_bytes: fields.segment_target_bytes,
            segment_max_age_ms: fields.segment_max_age_ms,
            flush: fields.flush,
            max_unflushed_bytes: fields.max_unflushed_bytes,
            flush_max_retries: fields.flush_max_retries,
            record_payload_bytes_max: fields.record_payload_bytes_max,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            segment_target_bytes: SEGMENT_TARGET_BYTES_DEFAULT,
            segment_max_age_ms: SEGMENT_MAX_AGE_MS_DEFAULT,
            flush: FlushPolicy::EveryAppend,
            max_unflushed_bytes: STREAM_UNFLUSHED_BYTES_DEFAULT,
            flush_max_retries: FLUSH_MAX_RETRIES_DEFAULT,
            record_payload_bytes_max: RECORD_PAYLOAD_BYTES_MAX,
        }
    }
}

/// A bad stream configuration value; the message names the key, the value and the
/// allowed range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamConfigError {
    #[error("stream.segment_target_bytes = {value}: must be between {min} and {max} bytes")]
    SegmentTargetBytes { value: u64, min: u64, max: u64 },
    #[error("stream.segment_max_age_ms = {value}: must be between {min} and {max} ms")]
    SegmentMaxAgeMs { value: u64, min: u64, max: u64 },
    #[error("stream.record_payload_bytes_max = {value}: must be between 1 and {max} bytes")]
    RecordPayloadBytesMax { value: u32, max: u32 },
    #[error(
        "stream.max_unflushed_bytes = {value}: must be between {min} (one largest record \
         frame: {frame_header_bytes} + record_payload_bytes_max) and {max} bytes",
        frame_header_bytes = SEGMENT_RECORD_FRAME_HEADER_BYTES
    )]
    MaxUnflushedBytes { value: u64, min: u64, max: u64 },
    #[error("stream.flush_max_retries = {value}: must be at most {max}")]
    FlushMaxRetries { value: u32, max: u32 },
    #[error(
        "stream.flush.bytes = {value}: must be between 1 and max_unflushed_bytes ({max}), \
         or the threshold could never be reached"
    )]
    FlushBytes { value: u64, max: u64 },
    #[error("stream.flush.interval_ms = {value}: must be between 1 and {max} ms")]
    FlushIntervalMs { value: u64, max: u64 },
}

impl StreamConfig {
    /// Bytes of the frame of one largest record this config admits.
    #[must_use]
    pub fn frame_bytes_max(&self) -> u64 {
        u64::from(SEGMENT_RECORD_FRAME_HEADER_BYTES) + u64::from(self.record_payload_bytes_max)
    }

    /// Checks every knob against its limit.
    pub fn validate(&self) -> Result<(), StreamConfigError> {
        if !(SEGMENT_TARGET_BYTES_MIN..=SEGMENT_TARGET_BYTES_MAX)
            .contains(&self.segment_target_bytes)
        {
            return Err(StreamConfigError::SegmentTargetBytes {
                value: self.segment_target_bytes,
                min: SEGMENT_TARGET_BYTES_MIN,
                max: SEGMENT_TARGET_BYTES_MAX,
            });
        }
        if !(SEGMENT_MAX_AGE_MS_MIN..=SEGMENT_MAX_AGE_MS_MAX).contains(&self.segment_max_age_ms) {
            return Err(StreamConfigError::SegmentMaxAgeMs {
                value: self.segment_max_age_ms,
                min: SEGMENT_MAX_AGE_MS_MIN,
                max: SEGMENT_MAX_AGE_MS_MAX,
            });
        }
        if !(1..=RECORD_PAYLOAD_BYTES_MAX).contains(&self.record_payload_bytes_max) {
            return Err(StreamConfigError::RecordPayloadBytesMax {
                value: self.record_payload_bytes_max,
                max: RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        let min = self.frame_bytes_max();
        if !(min..=STREAM_UNFLUSHED_BYTES_MAX).contains(&self.max_unflushed_bytes) {
            return Err(StreamConfigError::MaxUnflushedBytes {
                value: self.max_unflushed_bytes,
                min,
                max: STREAM_UNFLUSHED_BYTES_MAX,
            });
        }
        if self.flush_max_retries > FLUSH_RETRIES_MAX {
            return Err(StreamConfigError::FlushMaxRetries {
                value: self.flush_max_retries,
                max: FLUSH_RETRIES_MAX,
            });
        }
        match self.flush {
            FlushPolicy::EveryAppend => {}
            FlushPolicy::Bytes(value) => {
                if !(1..=self.max_unflushed_bytes).contains(&value) {
                    return Err(StreamConfigError::FlushBytes {
                        value,
                        max: self.max_unflushed_bytes,
                    });
                }
            }
            FlushPolicy::IntervalMs(value) => {
                if !(1..=FLUSH_INTERVAL_MS_MAX).contains(&value) {
                    return Err(StreamConfigError::FlushIntervalMs {
                        value,
                        max: FLUSH_INTERVAL_MS_MAX,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_read_from_empty_toml() {
        let config = StreamConfig::default();
        config.validate().unwrap();
        assert_eq!(toml::from_str::<StreamConfig>("").unwrap(), config);
        assert_eq!(config.flush, FlushPolicy::EveryAppend);
        assert_eq!(config.flush_max_retries, 3);
    }

    #[test]
    fn flush_policy_toml_shapes() {
        let every: StreamConfig = toml::from_str("flush = \"every_append\"").unwrap();
        assert_eq!(every.flush, FlushPolicy::EveryAppend);
        let bytes: StreamConfig = toml::from_str("flush = { bytes = 4096 }").unwrap();
        assert_eq!(bytes.flush, FlushPolicy::Bytes(4096));
        let interval: StreamConfig = toml::from_str("flush = { interval_ms = 5 }").unwrap();
        assert_eq!(interval.flush, FlushPolicy::IntervalMs(5));
        for config in [every, bytes, interval] {
            let text = toml::to_string(&config).unwrap();
            assert_eq!(
                toml::from_str::<StreamConfig>(&text).unwrap(),
                config,
                "{text}"
            );
        }
    }

    #[test]
    fn errors_name_key_and_value() {
        let cases = [
            (
                "segment_target_bytes = 10",
                "stream.segment_target_bytes = 10",
            ),
            (
                "segment_max_age_ms = 600",
                "stream.segment_max_age_ms = 600",
            ),
            (
                "record_payload_bytes_max = 0",
                "stream.record_payload_bytes_max = 0",
            ),
            (
                "max_unflushed_bytes = 100",
                "stream.max_unflushed_bytes = 100",
            ),
            ("flush_max_retries = 99", "stream.flush_max_retries = 99"),
            ("flush = { bytes = 0 }", "stream.flush.bytes = 0"),
            (
                "max_unflushed_bytes = 9000000\nflush = { bytes = 9000001 }",
                "stream.flush.bytes = 9000001",
            ),
            (
                "flush = { interval_ms = 0 }",
                "stream.flush.interval_ms = 0",
            ),
            (
                "flush = { interval_ms = 60001 }",
                "stream.flush.interval_ms = 60001",
            ),
        ];
        for (text, expected) in cases {
            let error = toml::from_str::<StreamConfig>(text).unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
        let error = toml::from_str::<StreamConfig>("segment_target_byte = 10").unwrap_err();
        assert!(error.to_string().contains("segment_target_byte"), "{error}");
        let error = toml::from_str::<StreamConfig>("flush = \"sometimes\"").unwrap_err();
        assert!(error.to_string().contains("sometimes"), "{error}");
    }

    #[test]
    fn backlog_must_admit_one_largest_record() {
        let config = StreamConfig {
            record_payload_bytes_max: 100,
            max_unflushed_bytes: 135,
            ..StreamConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(StreamConfigError::MaxUnflushedBytes {
                value: 135,
                min: 136,
                max: STREAM_UNFLUSHED_BYTES_MAX
            })
        );
        let config = StreamConfig {
            max_unflushed_bytes: 136,
            ..config
        };
        config.validate().unwrap();
    }
}
