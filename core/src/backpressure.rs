//! Backpressure: the five reasons an AOF2 operation may answer "not now, retry".
//!
//! `WouldBlock(kind)` is a normal, retryable outcome, not a failure: the caller waits
//! for the notifier matching `kind` and tries again. Each kind's doc states its likely
//! cause and the operator's action, as in the runbook's "Troubleshooting by
//! BackpressureKind" table; [`BackpressureKind::likely_cause`] and
//! [`BackpressureKind::action`] return the same text for logs and admin output.
//!
//! **Invariants**
//! - `Display`, `as_str` and the serde form of a kind are the same string, the name the
//!   runbook uses (`Admission`, `Hydration`, `Rollover`, `Flush`, `Tail`).
//! - [`BackpressureKind::ALL`] lists every kind exactly once.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Why an operation would block. Names match the runbook and the metrics/log pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BackpressureKind {
    /// Tier 0 is full: every resident segment is active, pinned, or not yet durable
    /// elsewhere, so a sealed or hydrated segment cannot be admitted (the activation
    /// queue depth is > 0).
    ///
    /// Action: inspect `tier0_eviction_scheduled` logs, increase the Tier 0 budget
    /// (`cluster_max_bytes`), seal active segments sooner, or slow writers.
    Admission,
    /// The segment is cold: its warm file is missing or the hydrator has a backlog.
    ///
    /// Action: check `hydration_queue_depth` and `tier1_hydration_retry_*` logs. Ensure
    /// Tier 1 has space, confirm Tier 2 availability, and rerun the admin dump to verify
    /// residency.
    Hydration,
    /// The coordinator is still processing a seal/rollover.
    ///
    /// Action: watch `tiered_admit_segment` events; ensure the flush backlog is not
    /// growing. Usually transient.
    Rollover,
    /// The flush worker exhausted its retries.
    ///
    /// Action: investigate `flush_failures`, filesystem latency and disk saturation.
    /// Consider throttling writers until the backlog clears.
    Flush,
    /// A tail follower outran durability.
    ///
    /// Action: check the append rate against the flush rate; improves once the flush
    /// backlog drains.
    Tail,
}

impl BackpressureKind {
    /// Every kind, in declaration order.
    pub const ALL: [BackpressureKind; 5] = [
        BackpressureKind::Admission,
        BackpressureKind::Hydration,
        BackpressureKind::Rollover,
        BackpressureKind::Flush,
        BackpressureKind::Tail,
    ];

    /// The runbook name of this kind.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BackpressureKind::Admission => "Admission",
            BackpressureKind::Hydration => "Hydration",
            BackpressureKind::Rollover => "Rollover",
            BackpressureKind::Flush => "Flush",
            BackpressureKind::Tail => "Tail",
        }
    }

    /// The likely cause, as in the runbook's troubleshooting table.
    #[must_use]
    pub fn likely_cause(self) -> &'static str {
        match self {
            BackpressureKind::Admission => "Tier 0 full (activation queue depth > 0)",
            BackpressureKind::Hydration => "warm file missing or hydrator backlog",
            BackpressureKind::Rollover => "coordinator still processing seal/rollover",
            BackpressureKind::Flush => "flush worker exhausted retries",
            BackpressureKind::Tail => "tail follower outran durability",
        }
    }

    /// What an operator should do, as in the runbook's troubleshooting table.
    #[must_use]
    pub fn action(self) -> &'static str {
        match self {
            BackpressureKind::Admission => {
                "inspect tier0_eviction_scheduled logs, increase the Tier 0 budget \
                 (cluster_max_bytes), seal active segments sooner, or slow writers"
            }
            BackpressureKind::Hydration => {
                "check hydration_queue_depth and tier1_hydration_retry_* logs; ensure Tier 1 \
                 has space, confirm Tier 2 availability, and rerun the admin dump to verify \
                 residency"
            }
            BackpressureKind::Rollover => {
                "watch tiered_admit_segment events and ensure the flush backlog is not \
                 growing; usually transient"
            }
            BackpressureKind::Flush => {
                "investigate flush_failures, filesystem latency and disk saturation; consider \
                 throttling writers until the backlog clears"
            }
            BackpressureKind::Tail => {
                "check the append rate against the flush rate; improves once the flush \
                 backlog drains"
            }
        }
    }
}

impl fmt::Display for BackpressureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The normal, retryable "not now" outcome: wait for the notifier of `kind`, then retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error, Serialize, Deserialize)]
#[error("would block ({0}): {cause}", cause = .0.likely_cause())]
pub struct WouldBlock(pub BackpressureKind);

impl WouldBlock {
    /// The kind of backpressure.
    #[must_use]
    pub fn kind(self) -> BackpressureKind {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StrDeserializer};

    #[test]
    fn display_and_serde_use_runbook_names() {
        let names = ["Admission", "Hydration", "Rollover", "Flush", "Tail"];
        assert_eq!(BackpressureKind::ALL.len(), names.len());
        for (kind, name) in BackpressureKind::ALL.into_iter().zip(names) {
            assert_eq!(kind.to_string(), name);
            assert_eq!(kind.as_str(), name);
            let deserializer: StrDeserializer<'_, ValueError> = name.into_deserializer();
            assert_eq!(BackpressureKind::deserialize(deserializer).unwrap(), kind);
            #[derive(Serialize)]
            struct Wrapper {
                kind: BackpressureKind,
            }
            let toml = toml::to_string(&Wrapper { kind }).unwrap();
            assert_eq!(toml.trim(), format!("kind = \"{name}\""));
        }
    }

    #[test]
    fn unknown_name_is_rejected() {
        let deserializer: StrDeserializer<'_, ValueError> = "admission".into_deserializer();
        assert!(BackpressureKind::deserialize(deserializer).is_err());
    }

    #[test]
    fn every_kind_has_cause_and_action() {
        for kind in BackpressureKind::ALL {
            assert!(!kind.likely_cause().is_empty(), "{kind}");
            assert!(!kind.action().is_empty(), "{kind}");
        }
        assert!(
            BackpressureKind::Admission
                .action()
                .contains("tier0_eviction_scheduled")
        );
        assert!(
            BackpressureKind::Hydration
                .action()
                .contains("hydration_queue_depth")
        );
    }

    #[test]
    fn would_block_message_names_kind_and_cause() {
        let message = WouldBlock(BackpressureKind::Admission).to_string();
        assert_eq!(
            message,
            "would block (Admission): Tier 0 full (activation queue depth > 0)"
        );
        assert_eq!(
            WouldBlock(BackpressureKind::Tail).kind(),
            BackpressureKind::Tail
        );
    }
}
