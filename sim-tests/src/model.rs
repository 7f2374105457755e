//! The reference model of one stream and the checkers' vocabulary.
//!
//! The model knows exactly what the client was told, and assumes nothing else:
//! - an offset is *appended* once an `Appended(offset)` reply names it; an append in
//!   flight when the process died (no reply seen) may or may not have happened;
//! - an offset is *acknowledged durable* once a `Durable { next_offset }` reply (to
//!   `Flush` or `WaitDurable`) covers it; only those must survive a crash;
//! - recovery may drop any suffix of what was not acknowledged durable (so it yields a
//!   prefix of what was attempted), and may keep the append that was in flight;
//! - a record read back must carry the bytes appended at its offset; a record the
//!   model has never seen at that offset was never appended.
//!
//! **Invariants**
//! - `durable_floor <= next_offset`: the model never believes more is durable than
//!   was appended.
//! - `records` holds only offsets below `next_offset` (older ones may be dropped once
//!   retention moved past them). The start offset may only grow within one process
//!   lifetime; a restart may bring it back (retention decisions are not promises).

use aof2_core::segment::StoredRecord;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;

/// The checkers of the simulator, numbered as in `docs/testing.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    /// 1. Every record acknowledged durable survives and reads back byte-identical.
    DurableSurvives,
    /// 2. Recovery yields a prefix of what was attempted; nothing never appended is read.
    PrefixOnly,
    /// 3. Offsets are dense and never duplicated across tiers.
    DenseOffsets,
    /// 4. The manifest never references an object or file that is not durable.
    ManifestReferencesDurable,
    /// 5. No local copy is removed before the next tier's copy is durable and recorded.
    CopyBeforeRemove,
    /// 6. Hydrated bytes equal appended bytes; a Tier 1 artifact equals its Tier 2 object.
    TierBytesEqual,
    /// 7. Tier 0 and Tier 1 byte budgets hold.
    Budgets,
    /// 8. A failed fsync is never reported as durability.
    FailedFsyncNotDurable,
    /// 9. Once faults stop, every sealed segment reaches Tier 2 and queues drain.
    Liveness,
    /// 10. Every state machine's `check_invariants()` holds after every step.
    MachineInvariants,
}

impl Checker {
    pub const ALL: [Checker; 10] = [
        Checker::DurableSurvives,
        Checker::PrefixOnly,
        Checker::DenseOffsets,
        Checker::ManifestReferencesDurable,
        Checker::CopyBeforeRemove,
        Checker::TierBytesEqual,
        Checker::Budgets,
        Checker::FailedFsyncNotDurable,
        Checker::Liveness,
        Checker::MachineInvariants,
    ];

    #[must_use]
    pub fn number(self) -> u8 {
        Checker::ALL
            .iter()
            .position(|checker| *checker == self)
            .map(|index| index as u8 + 1)
            .expect("every checker is in ALL")
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Checker::DurableSurvives => "durable-survives",
            Checker::PrefixOnly => "prefix-only",
            Checker::DenseOffsets => "dense-offsets",
            Checker::ManifestReferencesDurable => "manifest-references-durable",
            Checker::CopyBeforeRemove => "copy-before-remove",
            Checker::TierBytesEqual => "tier-bytes-equal",
            Checker::Budgets => "budgets",
            Checker::FailedFsyncNotDurable => "failed-fsync-not-durable",
            Checker::Liveness => "liveness",
            Checker::MachineInvariants => "machine-invariants",
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    pub message: String,
}

impl Violation {
    #[must_use]
    pub fn new(checker: Checker, message: impl Into<String>) -> Self {
        Violation {
            checker,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checker {} ({}): {}",
            self.checker.number(),
            self.checker.name(),
            self.message
        )
    }
}

/// What the client knows about one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamModel {
    /// Payload by offset; `None`: an append whose reply was lost, kept by recovery,
    /// whose bytes have not been read back yet (the first read fixes them).
    pub records: BTreeMap<u64, Option<Bytes>>,
    /// The offset the next append must get.
    pub next_offset: u64,
    /// Every offset below this was acknowledged durable.
    pub durable_floor: u64,
    /// The highest start offset seen (retention removed everything below).
    pub start_floor: u64,
    /// The payload of an append sent whose reply was not seen (at most one: the
    /// client sends one command at a time).
    pub append_in_flight: Option<Bytes>,
    /// Whether an fsync failed since the last recovery (a lost durable record is
    /// then reported under checker 8 as well).
    pub fsync_failed_since_recovery: bool,
}

impl StreamModel {
    pub fn check_invariants(&self) {
        assert!(
            self.durable_floor <= self.next_offset,
            "the model believes more durable than appended"
        );
        if let Some((&last, _)) = self.records.last_key_value() {
            assert!(
                last < self.next_offset,
                "the model holds an unappended offset"
            );
        }
    }

    /// `Appended(offset)` for an append of `payload`.
    pub fn on_appended(&mut self, offset: u64, payload: Bytes) -> Result<(), Violation> {
        self.append_in_flight = None;
        if offset != self.next_offset {
            return Err(Violation::new(
                Checker::DenseOffsets,
                format!(
                    "append got offset {offset}, the next offset is {}",
                    self.next_offset
                ),
            ));
        }
        self.records.insert(offset, Some(payload));
        self.next_offset += 1;
        Ok(())
    }

    /// A `Durable { next_offset }` reply (or a `WaitDurable` of `next_offset - 1`).
    pub fn on_durable(&mut self, next_offset: u64) -> Result<(), Violation> {
        if next_offset > self.next_offset {
            return Err(Violation::new(
                Checker::PrefixOnly,
                format!(
                    "durable up to {next_offset}, but only {} appended",
                    self.next_offset
                ),
            ));
        }
        self.durable_floor = self.durable_floor.max(next_offset);
        Ok(())
    }

    /// Checks a record read back at `offset`.
    pub fn check_record(&mut self, offset: u64, record: &StoredRecord) -> Result<(), Violation> {
        if record.offset != offset {
            return Err(Violation::new(
                Checker::DenseOffsets,
                format!(
                    "a read of offset {offset} returned offset {}",
                    record.offset
                ),
            ));
        }
        if offset >= self.next_offset {
            return Err(Violation::new(
                Checker::PrefixOnly,
                format!(
                    "read offset {offset} ({} bytes), never appended (next offset {})",
                    record.payload.len(),
                    self.next_offset
                ),
            ));
        }
        match self.records.get_mut(&offset) {
            Some(Some(expected)) if *expected == record.payload => Ok(()),
            Some(Some(expected)) => {
                let checker = if offset < self.durable_floor {
                    Checker::DurableSurvives
                } else {
                    Checker::PrefixOnly
                };
                Err(Violation::new(
                    checker,
                    format!(
                        "offset {offset} reads back {} bytes (crc {:08x}), appended {} bytes \
                         (crc {:08x})",
                        record.payload.len(),
                        crc32fast::hash(&record.payload),
                        expected.len(),
                        crc32fast::hash(expected)
                    ),
                ))
            }
            Some(unknown @ None) => {
                *unknown = Some(record.payload.clone());
                Ok(())
            }
            // Below what the model keeps (retention moved past it): nothing to compare.
            None => Ok(()),
        }
    }

    /// The stream reopened with `next_offset` after a crash or a clean close.
    pub fn on_reopened(&mut self, next_offset: u64) -> Vec<Violation> {
        let mut violations = Vec::new();
        if next_offset < self.durable_floor {
            let message = format!(
                "recovered next offset {next_offset}, but offsets below {} were acknowledged \
                 durable",
                self.durable_floor
            );
            if self.fsync_failed_since_recovery {
                violations.push(Violation::new(
                    Checker::FailedFsyncNotDurable,
                    message.clone(),
                ));
            }
            violations.push(Violation::new(Checker::DurableSurvives, message));
        }
        let attempted = self.next_offset + u64::from(self.append_in_flight.is_some());
        if next_offset > attempted {
            violations.push(Violation::new(
                Checker::PrefixOnly,
                format!(
                    "recovered next offset {next_offset}, but only {attempted} offsets were \
                     attempted"
                ),
            ));
        }
        // What recovery kept is now the stream: later recoveries must keep agreeing.
        self.records.retain(|offset, _| *offset < next_offset);
        if next_offset == self.next_offset + 1 {
            let kept = self.append_in_flight.take();
            self.records.insert(self.next_offset, kept);
        }
        self.append_in_flight = None;
        self.next_offset = next_offset;
        self.durable_floor = self.durable_floor.min(next_offset);
        self.fsync_failed_since_recovery = false;
        // A start offset is no promise: one raised by a retention decision a crash
        // kept from being committed comes back lower (the records are still there).
        self.start_floor = 0;
        violations
    }

    /// Retention moved the start offset to `start_offset`.
    pub fn on_start_offset(&mut self, start_offset: u64) -> Result<(), Violation> {
        if start_offset < self.start_floor {
            return Err(Violation::new(
                Checker::PrefixOnly,
                format!(
                    "start offset went back from {} to {start_offset}",
                    self.start_floor
                ),
            ));
        }
        self.start_floor = start_offset;
        self.records.retain(|offset, _| *offset >= start_offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, payload: &'static [u8]) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: 0,
            ext_id: 0,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn checker_numbers_follow_the_docs() {
        assert_eq!(Checker::DurableSurvives.number(), 1);
        assert_eq!(Checker::MachineInvariants.number(), 10);
    }

    #[test]
    fn the_model_flags_what_it_must() {
        let mut model = StreamModel::default();
        model.on_appended(0, Bytes::from_static(b"a")).unwrap();
        assert!(model.on_appended(5, Bytes::new()).is_err(), "a gap");
        model.on_appended(1, Bytes::from_static(b"b")).unwrap();
        model.on_durable(1).unwrap();
        assert!(model.on_durable(3).is_err(), "durable beyond appended");
        model.check_record(0, &record(0, b"a")).unwrap();
        assert!(
            model.check_record(1, &record(1, b"x")).is_err(),
            "wrong bytes"
        );
        assert!(
            model.check_record(2, &record(2, b"c")).is_err(),
            "never appended"
        );
        // Offset 1 was not durable: recovery may drop it, not offset 0.
        assert!(model.clone().on_reopened(1).is_empty());
        assert_eq!(model.clone().on_reopened(0).len(), 1);
        model.append_in_flight = Some(Bytes::from_static(b"c"));
        assert!(
            model.clone().on_reopened(3).is_empty(),
            "the in-flight append kept"
        );
        assert_eq!(model.on_reopened(4).len(), 1, "one more than attempted");
    }
}
