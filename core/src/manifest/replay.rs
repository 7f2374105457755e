//! Manifest replay: rebuild a [`ManifestIndex`] from an optional snapshot and the
//! chunks after it. Incremental and sans-IO: the driver reads each chunk file and hands
//! its bytes over, in chunk index order.
//!
//! Call order: [`Replayer::new`] (with the newest snapshot that decodes, if any), then
//! [`Replayer::replay_chunk`] once per chunk file in increasing index order (the driver
//! may start at the snapshot's `chunk_index`), then [`Replayer::finish`].
//!
//! Rules:
//! - Each chunk is decoded by [`decode_chunk`]: only committed, verified frames are
//!   applied; bytes past the committed length are trimmed and counted in
//!   `journal_lag_bytes`; corruption stops that chunk and is counted, never applied.
//! - Records below the snapshot's `record_ordinal` are skipped (the snapshot holds
//!   their effect).
//! - Across chunks the ordinals must continue densely. A chunk whose first record comes
//!   after the expected ordinal is a corruption event ([`ChunkError::OrdinalGap`]:
//!   records were lost); its records are still applied, since each record states a
//!   fact that stays true. Records that were already applied are skipped and reported
//!   once per chunk ([`ChunkError::OrdinalOverlap`]).
//! - A chunk followed by another chunk must be sealed (the writer seals a chunk
//!   before it creates the next). If it is not, the slot of its last commit was lost:
//!   a corruption event ([`ChunkError::NotSealed`]). Only the *last* chunk can lose
//!   its newest slot silently, because there a damaged slot cannot be told apart from
//!   a crash during the slot write.
//! - Unknown record types are skipped and counted.
//!
//! Figures follow the seed metrics (`aof_manifest_replay_*`):
//! - `chunk_lag_ms` / [`ReplayFigures::chunk_lag_seconds`]: time between the `now_ms`
//!   given with the most recent chunk and the `now_ms` given to `finish` (the driver
//!   passes the wall-clock time it starts reading a chunk, and calls `finish` right
//!   after the last one, so this is the time spent trimming and replaying it);
//! - `journal_lag_bytes`: trailing uncommitted bytes trimmed, over all chunks;
//! - `chunk_count`: chunks inspected;
//! - `corruption_events`: CRC or decode failures, gaps, overlaps, unsealed chunks.
//!
//! **Invariants**
//! - Replay never panics on any bytes; a corrupt chunk contributes nothing unverified.
//! - The index's next ordinal equals `position.record_ordinal`: the position is just
//!   past the last record applied (or the snapshot's position).
//! - Chunk indexes strictly increase.
//! - `corruption_events >= corruptions.len()`, and at most
//!   [`MANIFEST_REPLAY_CORRUPTIONS_KEPT_MAX`] corruptions are kept in detail.

use crate::limits::MANIFEST_REPLAY_CORRUPTIONS_KEPT_MAX;
use crate::manifest::chunk::{ChunkError, DecodedChunk, SlotHeader, decode_chunk};
use crate::manifest::index::ManifestIndex;
use crate::manifest::record::DecodedFrame;
use crate::manifest::snapshot::{ManifestPosition, Snapshot};
use crate::manifest::writer::WriterStart;
use thiserror::Error;

/// Replay figures, named after the seed's `aof_manifest_replay_*` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayFigures {
    /// Milliseconds spent on the most recent chunk (see the module doc).
    pub chunk_lag_ms: u64,
    /// Trailing uncommitted bytes trimmed.
    pub journal_lag_bytes: u64,
    /// Chunks inspected.
    pub chunk_count: u64,
    /// CRC or decode failures, ordinal gaps and overlaps.
    pub corruption_events: u64,
    /// Well-formed records of types this build does not know.
    pub unknown_records_skipped: u64,
    /// Records applied to the index.
    pub records_applied: u64,
    /// Records skipped because the snapshot covers them.
    pub records_covered_by_snapshot: u64,
}

impl ReplayFigures {
    /// `aof_manifest_replay_chunk_lag_seconds`.
    #[must_use]
    pub fn chunk_lag_seconds(&self) -> f64 {
        // Milliseconds below 2^53 convert exactly.
        #[allow(clippy::cast_precision_loss)]
        let seconds = self.chunk_lag_ms as f64 / 1000.0;
        seconds
    }
}

/// The last chunk replayed, so the writer can resume after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayTail {
    pub chunk_index: u64,
    /// The slot whose records were used; `None` when no slot verified.
    pub commit: Option<SlotHeader>,
    /// Uncommitted bytes after the committed records.
    pub trimmed_bytes: u64,
}

/// A misuse of the replayer by its driver.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(
        "manifest chunk {chunk_index} given after chunk {previous_chunk_index}: chunks must be replayed in increasing index order"
    )]
    ChunkOutOfOrder {
        chunk_index: u64,
        previous_chunk_index: u64,
    },
}

/// What a replay produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOutcome {
    pub index: ManifestIndex,
    pub figures: ReplayFigures,
    /// The first corruptions found, in order (all are counted in the figures).
    pub corruptions: Vec<ChunkError>,
    /// The last chunk given, if any.
    pub tail: Option<ReplayTail>,
    /// Just past the last record applied (or the snapshot's position).
    pub position: ManifestPosition,
    /// The position of the snapshot replay started from.
    pub snapshot_position: Option<ManifestPosition>,
}

impl ReplayOutcome {
    /// Where a writer resumes: after the highest chunk index seen (or covered by the
    /// snapshot), at the next ordinal, resealing the last chunk if it was left open.
    #[must_use]
    pub fn writer_start(&self) -> WriterStart {
        let after_tail = self.tail.map_or(0, |tail| tail.chunk_index + 1);
        let after_snapshot = self
            .snapshot_position
            .map_or(0, |position| position.chunk_index + 1);
        let reseal = self
            .tail
            .and_then(|tail| tail.commit)
            .filter(|commit| !commit.flags.sealed);
        WriterStart {
            next_chunk_index: after_tail.max(after_snapshot),
            next_ordinal: self.index.next_ordinal(),
            reseal,
        }
    }
}

/// Incremental, sans-IO manifest replay. See the module doc for the call order.
#[derive(Debug)]
pub struct Replayer {
    index: ManifestIndex,
    covered_ordinal: u64,
    snapshot_position: Option<ManifestPosition>,
    position: ManifestPosition,
    figures: ReplayFigures,
    corruptions: Vec<ChunkError>,
    tail: Option<ReplayTail>,
    last_chunk_started_ms: Option<u64>,
}

impl Replayer {
    /// Starts from `snapshot` (or from nothing).
    #[must_use]
    pub fn new(snapshot: Option<Snapshot>) -> Self {
        let (index, position, snapshot_position) = match snapshot {
            Some(snapshot) => {
                let position = snapshot.position();
                (snapshot.into_index(), position, Some(position))
            }
            None => (ManifestIndex::new(), ManifestPosition::START, None),
        };
        let replayer = Replayer {
            covered_ordinal: position.record_ordinal,
            index,
            snapshot_position,
            position,
            figures: ReplayFigures::default(),
            corruptions: Vec::new(),
            tail: None,
            last_chunk_started_ms: None,
        };
        replayer.check_invariants();
        replayer
    }

    fn report(&mut self, corruption: ChunkError) {
        self.figures.corruption_events += 1;
        if self.corruptions.len() < MANIFEST_REPLAY_CORRUPTIONS_KEPT_MAX as usize {
            self.corruptions.push(corruption);
        }
    }

    /// Replays chunk `chunk_index` from the bytes of its file. `now_ms` is the time
    /// the driver started reading it.
    pub fn replay_chunk(
        &mut self,
        now_ms: u64,
        chunk_index: u64,
        bytes: &[u8],
    ) -> Result<(), ReplayError> {
        self.replay_decoded(now_ms, decode_chunk(chunk_index, bytes))
    }

    /// [`Replayer::replay_chunk`] for a chunk its driver already decoded (to judge
    /// the read before replaying it).
    pub fn replay_decoded(
        &mut self,
        now_ms: u64,
        decoded: DecodedChunk,
    ) -> Result<(), ReplayError> {
        let chunk_index = decoded.chunk_index;
        if let Some(tail) = &self.tail
            && chunk_index <= tail.chunk_index
        {
            return Err(ReplayError::ChunkOutOfOrder {
                chunk_index,
                previous_chunk_index: tail.chunk_index,
            });
        }
        self.last_chunk_started_ms = Some(now_ms);
        self.figures.chunk_count += 1;
        // The writer seals a chunk durably before it creates the next one, so a chunk
        // followed by another must be sealed. An unsealed one lost its last commit's
        // slot: the only way that is not reported as a checksum failure.
        if let Some(previous) = self.tail.and_then(|tail| tail.commit)
            && !previous.flags.sealed
        {
            self.report(ChunkError::NotSealed {
                chunk_index: previous.chunk_index,
                offset: previous.slot_offset(),
                next_chunk_index: chunk_index,
            });
        }

        self.figures.journal_lag_bytes += decoded.trimmed_bytes;
        self.tail = Some(ReplayTail {
            chunk_index,
            commit: decoded.commit,
            trimmed_bytes: decoded.trimmed_bytes,
        });

        let mut reported_overlap = false;
        let mut checked_gap = false;
        for frame in &decoded.frames {
            let ordinal = frame.ordinal();
            if ordinal < self.covered_ordinal {
                self.figures.records_covered_by_snapshot += 1;
                continue;
            }
            let expected = self.index.next_ordinal();
            if ordinal < expected {
                if !reported_overlap {
                    reported_overlap = true;
                    self.report(ChunkError::OrdinalOverlap {
                        chunk_index,
                        offset: frame.offset,
                        expected,
                        found: ordinal,
                    });
                }
                continue;
            }
            if !checked_gap {
                checked_gap = true;
                if ordinal > expected {
                    self.report(ChunkError::OrdinalGap {
                        chunk_index,
                        offset: frame.offset,
                        expected,
                        found: ordinal,
                    });
                }
            }
            match &frame.frame {
                DecodedFrame::Known(known) => {
                    self.index.apply(known);
                    self.figures.records_applied += 1;
                }
                DecodedFrame::Unknown { ordinal, .. } => {
                    self.index.skip_unknown(*ordinal);
                    self.figures.unknown_records_skipped += 1;
                }
            }
            self.position = ManifestPosition {
                chunk_index,
                chunk_offset: frame.end_offset(),
                record_ordinal: ordinal + 1,
            };
        }
        for corruption in decoded.corruptions {
            self.report(corruption);
        }
        self.check_invariants();
        Ok(())
    }

    /// Ends the replay. `now_ms` closes the timing of the most recent chunk.
    #[must_use]
    pub fn finish(mut self, now_ms: u64) -> ReplayOutcome {
        self.check_invariants();
        if let Some(started) = self.last_chunk_started_ms {
            self.figures.chunk_lag_ms = now_ms.saturating_sub(started);
        }
        ReplayOutcome {
            index: self.index,
            figures: self.figures,
            corruptions: self.corruptions,
            tail: self.tail,
            position: self.position,
            snapshot_position: self.snapshot_position,
        }
    }

    /// The index as replayed so far.
    #[must_use]
    pub fn index(&self) -> &ManifestIndex {
        &self.index
    }

    /// The figures so far.
    #[must_use]
    pub fn figures(&self) -> &ReplayFigures {
        &self.figures
    }

    /// Checks the invariants of the module doc.
    pub fn check_invariants(&self) {
        self.index.check_invariants();
        assert_eq!(
            self.index.next_ordinal(),
            self.position.record_ordinal,
            "the position follows the index"
        );
        assert!(self.position.record_ordinal >= self.covered_ordinal);
        assert!(self.figures.corruption_events >= self.corruptions.len() as u64);
        assert!(self.corruptions.len() <= MANIFEST_REPLAY_CORRUPTIONS_KEPT_MAX as usize);
        if let Some(tail) = &self.tail {
            assert!(self.position.chunk_index <= tail.chunk_index.max(self.covered_chunk()));
        }
    }

    fn covered_chunk(&self) -> u64 {
        self.snapshot_position
            .map_or(0, |position| position.chunk_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{crc32, crc32_parts};
    use crate::io::LocalPath;
    use crate::manifest::chunk::{ChunkFlags, decode_chunk, encode_header_area};
    use crate::manifest::index::tests::arb_stream_record;
    use crate::manifest::record::ManifestRecord;
    use crate::manifest::writer::tests::{
        MemDisk, chunk_files, decoded_records, dir, replay_files,
    };
    use crate::manifest::writer::{ManifestWriter, ManifestWriterConfig, WriterStart};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Files = BTreeMap<LocalPath, Vec<u8>>;

    /// Writes `records` through a real writer, committing where `commit_after` says
    /// and letting `tick_ms` pass after each record, so chunks rotate by size and time.
    fn write_manifest(records: &[(ManifestRecord, bool, u64)]) -> Files {
        let config = ManifestWriterConfig {
            chunk_capacity_bytes: crate::limits::MANIFEST_CHUNK_BYTES_MIN,
            rotation_period_ms: 50,
        };
        let mut disk = MemDisk::default();
        let mut writer = ManifestWriter::new(config, dir(), WriterStart::fresh(), 0).unwrap();
        let mut now = 0;
        disk.run(&mut writer, now);
        for (record, commit, tick_ms) in records {
            writer.append(now, record).unwrap();
            if *commit {
                writer.commit(now).unwrap();
            }
            now += tick_ms;
            if writer
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now)
            {
                writer.handle_timeout(now);
            }
            disk.run(&mut writer, now);
            while writer.poll_event().is_some() {}
        }
        writer.commit(now).unwrap();
        disk.run(&mut writer, now);
        assert_eq!(
            writer.durable_ordinal(),
            (records.len() as u64).checked_sub(1)
        );
        disk.files
    }

    fn arb_manifest() -> impl Strategy<Value = Vec<(ManifestRecord, bool, u64)>> {
        let big = (0usize..4000).prop_map(|size| ManifestRecord::CustomEvent {
            kind: 9,
            blob: bytes::Bytes::from(vec![1u8; size]),
        });
        let record = prop_oneof![6 => arb_stream_record(), 1 => big];
        proptest::collection::vec((record, any::<bool>(), 0u64..30), 0..120)
    }

    /// A snapshot after the first `covered` records, built by applying decoded frames
    /// directly (independently of the replayer's skipping logic).
    fn snapshot_at(files: &Files, covered: u64) -> Snapshot {
        let mut index = ManifestIndex::new();
        let mut position = ManifestPosition::START;
        for (chunk_index, bytes) in chunk_files(files) {
            for frame in decode_chunk(chunk_index, &bytes).frames {
                if frame.ordinal() >= covered {
                    break;
                }
                match &frame.frame {
                    DecodedFrame::Known(known) => {
                        index.apply(known);
                    }
                    DecodedFrame::Unknown { ordinal, .. } => index.skip_unknown(*ordinal),
                }
                position = ManifestPosition {
                    chunk_index,
                    chunk_offset: frame.end_offset(),
                    record_ordinal: frame.ordinal() + 1,
                };
            }
        }
        let snapshot = Snapshot::new(5, position, index).unwrap();
        // Through the file format, as a restart would read it.
        Snapshot::decode(&snapshot.to_bytes()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn snapshot_plus_later_chunks_equals_full_replay(
            manifest in arb_manifest(),
            point in any::<prop::sample::Index>(),
        ) {
            let files = write_manifest(&manifest);
            let full = replay_files(&files, None);
            prop_assert_eq!(full.figures.corruption_events, 0);
            prop_assert_eq!(full.index.next_ordinal(), manifest.len() as u64);

            let covered = point.index(manifest.len() + 1) as u64;
            let snapshot = snapshot_at(&files, covered);
            let snapshot_chunk = snapshot.position().chunk_index;

            // A driver starts at the snapshot's chunk...
            let mut replayer = Replayer::new(Some(snapshot.clone()));
            for (index, bytes) in chunk_files(&files) {
                if index >= snapshot_chunk {
                    replayer.replay_chunk(0, index, &bytes).unwrap();
                }
            }
            let from_snapshot = replayer.finish(0);
            prop_assert_eq!(from_snapshot.figures.corruption_events, 0);
            prop_assert_eq!(&from_snapshot.index, &full.index);
            prop_assert_eq!(from_snapshot.position, full.position);
            prop_assert_eq!(from_snapshot.tail, full.tail);
            prop_assert_eq!(from_snapshot.writer_start(), full.writer_start());

            // ...but giving it every chunk is just as right.
            let everything = replay_files(&files, Some(snapshot));
            prop_assert_eq!(&everything.index, &full.index);
            prop_assert_eq!(everything.figures.records_covered_by_snapshot, covered);
            prop_assert_eq!(everything.figures.records_applied, manifest.len() as u64 - covered);
        }
    }

    /// A small manifest: chunk 0 sealed (three commits, the last one sealing with a
    /// record), chunk 1 the open tail (two commits, the newest in slot 0).
    fn two_chunk_manifest() -> (Files, Vec<ManifestRecord>) {
        let records: Vec<ManifestRecord> = (0..6)
            .map(|i| ManifestRecord::CompressionStarted {
                segment_id: crate::SegmentId(i),
                job_id: i,
            })
            .collect();
        let mut disk = MemDisk::default();
        let config = ManifestWriterConfig {
            chunk_capacity_bytes: crate::limits::MANIFEST_CHUNK_BYTES_MIN,
            rotation_period_ms: 10,
        };
        let mut writer = ManifestWriter::new(config, dir(), WriterStart::fresh(), 0).unwrap();
        disk.run(&mut writer, 0);
        // Chunk 0: commits [0], [1], then [2] sealing it (its period is over at 20).
        // Chunk 1: commits [3], [4, 5]; left open.
        for (now, batch) in [
            (0, &records[0..1]),
            (1, &records[1..2]),
            (20, &records[2..3]),
            (21, &records[3..4]),
            (22, &records[4..6]),
        ] {
            for record in batch {
                writer.append(now, record).unwrap();
            }
            writer.commit(now).unwrap();
            disk.run(&mut writer, now);
        }
        let chunks = chunk_files(&disk.files);
        assert_eq!(chunks.len(), 2);
        let first = decode_chunk(0, &chunks[0].1).commit.unwrap();
        assert!(first.flags.sealed);
        assert_eq!(first.record_count, 3);
        assert_eq!(decode_chunk(1, &chunks[1].1).frames.len(), 3);
        (disk.files, records)
    }

    fn replay_list(chunks: &[(u64, Vec<u8>)]) -> ReplayOutcome {
        let mut replayer = Replayer::new(None);
        for (index, bytes) in chunks {
            replayer.replay_chunk(0, *index, bytes).unwrap();
            replayer.check_invariants();
        }
        replayer.finish(0)
    }

    #[test]
    fn truncating_a_chunk_anywhere_replays_a_prefix() {
        let (files, _) = two_chunk_manifest();
        let chunks = chunk_files(&files);
        for (victim, (victim_index, bytes)) in chunks.iter().enumerate() {
            let clean = decode_chunk(*victim_index, bytes);
            let committed_end = clean.commit.unwrap().committed_end();
            for cut in 0..=bytes.len() {
                let mut damaged = chunks.clone();
                damaged[victim].1.truncate(cut);
                let context = format!("chunk {victim_index} cut at {cut}");
                let outcome = replay_list(&damaged);
                let frames = decode_chunk(*victim_index, &damaged[victim].1).frames;
                assert!(frames.len() <= clean.frames.len(), "{context}");
                assert_eq!(
                    frames[..],
                    clean.frames[..frames.len()],
                    "{context}: not a prefix"
                );
                let applied: usize = damaged
                    .iter()
                    .map(|(index, bytes)| decode_chunk(*index, bytes).frames.len())
                    .sum();
                assert_eq!(outcome.figures.records_applied, applied as u64, "{context}");
                // Losing committed bytes is corruption, never a silent loss.
                assert_eq!(
                    outcome.figures.corruption_events > 0,
                    (cut as u64) < committed_end,
                    "{context}: {:?}",
                    outcome.corruptions
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_of_a_sealed_chunk_is_detected_or_harmless() {
        let (files, _) = two_chunk_manifest();
        let chunks = chunk_files(&files);
        let clean = replay_list(&chunks);
        assert_eq!(clean.figures.corruption_events, 0);
        let clean_records = decoded_records(&files);
        for bit in 0..chunks[0].1.len() * 8 {
            let mut damaged = chunks.clone();
            damaged[0].1[bit / 8] ^= 1 << (bit % 8);
            let outcome = replay_list(&damaged);
            let context = format!("bit {bit} (byte {})", bit / 8);
            if outcome.figures.corruption_events == 0 {
                assert_eq!(outcome.index, clean.index, "{context}: undetected change");
            } else {
                assert!(!outcome.corruptions.is_empty(), "{context}");
                assert!(
                    outcome.corruptions.iter().any(|c| c.chunk_index() == 0),
                    "{context}: {:?}",
                    outcome.corruptions
                );
            }
            // Whatever was applied is a prefix of chunk 0 plus all of chunk 1: never a
            // record that was not written.
            let applied: Vec<ManifestRecord> = damaged
                .iter()
                .flat_map(|(index, bytes)| decode_chunk(*index, bytes).frames)
                .filter_map(|frame| match frame.frame {
                    DecodedFrame::Known(known) => Some(known.record),
                    DecodedFrame::Unknown { .. } => None,
                })
                .collect();
            for record in &applied {
                assert!(
                    clean_records.iter().any(|clean| &clean.record == record),
                    "{context}"
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_of_the_tail_chunk_never_applies_a_wrong_record() {
        let (files, records) = two_chunk_manifest();
        let chunks = chunk_files(&files);
        let mut detected = 0;
        let mut silent_fallbacks = 0;
        for bit in 0..chunks[1].1.len() * 8 {
            let mut damaged = chunks.clone();
            damaged[1].1[bit / 8] ^= 1 << (bit % 8);
            let outcome = replay_list(&damaged);
            let context = format!("bit {bit}");
            let decoded = decode_chunk(1, &damaged[1].1);
            let tail_records: Vec<ManifestRecord> = decoded
                .frames
                .iter()
                .filter_map(|frame| match &frame.frame {
                    DecodedFrame::Known(known) => Some(known.record.clone()),
                    DecodedFrame::Unknown { .. } => None,
                })
                .collect();
            // Always a prefix of what the tail committed.
            assert!(tail_records.len() <= 3, "{context}");
            assert_eq!(
                tail_records[..],
                records[3..3 + tail_records.len()],
                "{context}"
            );
            if outcome.figures.corruption_events > 0 {
                detected += 1;
            } else if tail_records.len() < 3 {
                // A damaged newest slot of the last chunk reads as a torn slot write:
                // the previous commit wins and the newest records count as journal lag.
                silent_fallbacks += 1;
                assert!(outcome.figures.journal_lag_bytes > 0, "{context}");
                let newest_slot = 0..512 * 8;
                assert!(
                    newest_slot.contains(&bit),
                    "{context}: silent loss outside the slot"
                );
            }
        }
        assert!(detected > 0);
        assert!(silent_fallbacks > 0);
    }

    #[test]
    fn chunks_must_come_in_order() {
        let (files, _) = two_chunk_manifest();
        let chunks = chunk_files(&files);
        let mut replayer = Replayer::new(None);
        replayer.replay_chunk(0, 1, &chunks[1].1).unwrap();
        let error = replayer.replay_chunk(0, 0, &chunks[0].1).unwrap_err();
        assert_eq!(
            error,
            ReplayError::ChunkOutOfOrder {
                chunk_index: 0,
                previous_chunk_index: 1
            }
        );
        let error = replayer.replay_chunk(0, 1, &chunks[1].1).unwrap_err();
        assert!(
            error.to_string().contains("increasing index order"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_chunk_is_a_gap() {
        let (files, _) = two_chunk_manifest();
        let chunks = chunk_files(&files);
        let outcome = replay_list(&chunks[1..]);
        assert_eq!(outcome.figures.corruption_events, 1);
        assert!(matches!(
            outcome.corruptions[..],
            [ChunkError::OrdinalGap {
                chunk_index: 1,
                offset: 1024,
                expected: 0,
                found: 3
            }]
        ));
        // The facts after the gap are still applied.
        assert_eq!(outcome.figures.records_applied, 3);
        assert_eq!(outcome.index.next_ordinal(), 6);
    }

    #[test]
    fn an_unsealed_chunk_followed_by_another_is_corruption() {
        let (files, _) = two_chunk_manifest();
        let mut chunks = chunk_files(&files);
        // Destroy chunk 0's sealing slot (sequence 3, slot 1): slot 0 (sequence 2,
        // unsealed, two records) wins.
        chunks[0].1[512] ^= 0xFF;
        let outcome = replay_list(&chunks);
        let kinds: Vec<String> = outcome.corruptions.iter().map(|c| format!("{c}")).collect();
        assert!(
            matches!(
                outcome.corruptions[..],
                [
                    ChunkError::NotSealed {
                        chunk_index: 0,
                        offset: 0,
                        next_chunk_index: 1
                    },
                    ChunkError::OrdinalGap {
                        chunk_index: 1,
                        expected: 2,
                        found: 3,
                        ..
                    }
                ]
            ),
            "{kinds:?}"
        );
    }

    #[test]
    fn unknown_records_are_skipped_and_counted() {
        let mut file = Vec::new();
        encode_header_area(&SlotHeader::empty(0, 0), &mut file);
        let record = ManifestRecord::CustomEvent {
            kind: 1,
            blob: bytes::Bytes::from_static(b"x"),
        };
        for ordinal in 0..4u64 {
            let mut frame = record.to_frame(ordinal, 0);
            if ordinal % 2 == 1 {
                frame[8..10].copy_from_slice(&999u16.to_le_bytes());
                let crc = crc32_parts(&[&frame[8..32], &frame[32..]]);
                frame[4..8].copy_from_slice(&crc.to_le_bytes());
            }
            file.extend_from_slice(&frame);
        }
        let header = SlotHeader {
            flags: ChunkFlags::default(),
            commit_sequence: 1,
            committed_length: (file.len() - 1024) as u32,
            record_count: 4,
            records_crc: crc32(&file[1024..]),
            ..SlotHeader::empty(0, 0)
        };
        file[512..1024].copy_from_slice(&header.to_slot_bytes());
        let outcome = replay_list(&[(0, file)]);
        assert_eq!(outcome.figures.corruption_events, 0);
        assert_eq!(outcome.figures.unknown_records_skipped, 2);
        assert_eq!(outcome.index.unknown_records_skipped(), 2);
        assert_eq!(outcome.index.custom_event_count(), 2);
        assert_eq!(outcome.index.next_ordinal(), 4);
    }

    #[test]
    fn figures_follow_the_seed_metrics() {
        let (mut files, _) = two_chunk_manifest();
        let tail = dir().join(&crate::manifest::chunk::chunk_file_name(1));
        files.get_mut(&tail).unwrap().extend_from_slice(&[0; 100]);
        let mut replayer = Replayer::new(None);
        for (step, (index, bytes)) in chunk_files(&files).into_iter().enumerate() {
            replayer
                .replay_chunk(10_000 + step as u64 * 1000, index, &bytes)
                .unwrap();
        }
        let outcome = replayer.finish(13_500);
        assert_eq!(
            outcome.figures.chunk_lag_ms, 2500,
            "finish minus the last chunk's start"
        );
        assert!((outcome.figures.chunk_lag_seconds() - 2.5).abs() < 1e-9);
        assert_eq!(outcome.figures.journal_lag_bytes, 100);
        assert_eq!(outcome.figures.chunk_count, 2);
        assert_eq!(outcome.figures.corruption_events, 0);
        let start = outcome.writer_start();
        assert_eq!(start.next_chunk_index, 2);
        assert_eq!(start.next_ordinal, 6);
        assert_eq!(start.reseal.map(|header| header.chunk_index), Some(1));
    }

    #[test]
    fn snapshot_without_chunks_resumes_after_its_chunk() {
        let (files, _) = two_chunk_manifest();
        let snapshot = snapshot_at(&files, 6);
        let outcome = Replayer::new(Some(snapshot)).finish(0);
        let start = outcome.writer_start();
        assert_eq!(start.next_chunk_index, 2);
        assert_eq!(start.next_ordinal, 6);
        assert_eq!(start.reseal, None);
    }
}
