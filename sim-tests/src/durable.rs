//! Checkers of the durable state left by a crash (checkers 3 to 6), read straight from
//! the simulated disk and object store, independently of the store's own recovery.
//!
//! Per stream, the durable manifest is replayed the way recovery replays it (the
//! newest local snapshot that decodes, then every durable chunk from its chunk on),
//! and each segment the index holds is compared with the durable files and the
//! objects:
//! - the open segment the index records has a durable file (4);
//! - an object an `UploadDone` recorded exists (4);
//! - a sealed segment still has a durable copy somewhere: its file, its recorded
//!   artifact, or its recorded object (4 when the index names a local copy that is not
//!   durable; 5 when the local copies were given up with nothing recorded further up);
//! - a Tier 0 copy is only given up (`LocalEvicted`) once Tier 2 holds the segment (5);
//! - a durable Tier 1 artifact equals the segment's Tier 2 object byte for byte (6);
//! - segments tile the offsets: each sealed segment ends where the next begins (3).
//!
//! Segments with a retention delete pending are skipped: retention may remove their
//! copies in any order once it decided to.
//!
//! **Invariants**
//! - Reading never changes the disk or the store (durable views only).
//! - A stream whose manifest cannot be replayed here is counted as skipped, not
//!   passed.

use crate::model::{Checker, Violation};
use aof2_core::SegmentId;
use aof2_core::manifest::chunk::parse_chunk_file_name;
use aof2_core::manifest::index::{Lifecycle, ManifestIndex};
use aof2_core::manifest::replay::Replayer;
use aof2_core::manifest::snapshot::Snapshot;
use aof2_core::names::{
    StreamName, artifact_path, manifest_dir, parse_snapshot_file_name, segment_object_key,
    segment_path, snapshots_dir,
};
use aof2_io_sim::SimPorts;
use std::collections::BTreeMap;

/// The outcome of one pass over the durable state.
#[derive(Debug, Default)]
pub struct DurableCheck {
    pub violations: Vec<Violation>,
    /// Checks run, by checker.
    pub runs: BTreeMap<Checker, u64>,
    /// Streams whose durable manifest could not be replayed.
    pub skipped_streams: u64,
}

impl DurableCheck {
    fn ran(&mut self, checker: Checker) {
        *self.runs.entry(checker).or_default() += 1;
    }

    fn fail(&mut self, checker: Checker, stream: &StreamName, message: String) {
        self.violations.push(Violation::new(
            checker,
            format!("stream {stream}: {message}"),
        ));
    }
}

/// The manifest index the durable files of `stream` replay to, or why not.
pub fn durable_index(sim: &SimPorts, stream: &StreamName) -> Result<ManifestIndex, String> {
    let disk = &sim.disk;
    let snapshots = snapshots_dir(stream);
    let mut snapshot_ids: Vec<(u64, String)> = disk
        .list_durable(snapshots.as_str())
        .into_iter()
        .filter_map(|name| Some((parse_snapshot_file_name(&name).ok()?, name)))
        .collect();
    snapshot_ids.sort();
    let snapshot = snapshot_ids.iter().rev().find_map(|(_, name)| {
        let bytes = disk.durable_file(snapshots.join(name).as_str())?;
        Snapshot::decode(&bytes).ok()
    });
    let first_chunk = snapshot
        .as_ref()
        .map_or(0, |snapshot| snapshot.position().chunk_index);
    let manifest = manifest_dir(stream);
    let mut chunks: Vec<(u64, String)> = disk
        .list_durable(manifest.as_str())
        .into_iter()
        .filter_map(|name| Some((parse_chunk_file_name(&name)?, name)))
        .filter(|(index, _)| *index >= first_chunk)
        .collect();
    chunks.sort();
    let mut replayer = Replayer::new(snapshot);
    for (chunk_index, name) in chunks {
        let bytes = disk
            .durable_file(manifest.join(&name).as_str())
            .ok_or_else(|| format!("chunk {name} listed but not durable"))?;
        replayer
            .replay_chunk(0, chunk_index, &bytes)
            .map_err(|error| format!("chunk {name}: {error}"))?;
    }
    Ok(replayer.finish(0).index)
}

/// Runs checkers 3 to 6 over the durable state of every stream.
#[must_use]
pub fn check_durable_state(sim: &SimPorts, streams: &[StreamName]) -> DurableCheck {
    let mut check = DurableCheck::default();
    for stream in streams {
        match durable_index(sim, stream) {
            Ok(index) => check_stream(sim, stream, &index, &mut check),
            Err(_) => check.skipped_streams += 1,
        }
    }
    check
}

fn check_stream(
    sim: &SimPorts,
    stream: &StreamName,
    index: &ManifestIndex,
    check: &mut DurableCheck,
) {
    let disk = &sim.disk;
    let mut previous_end: Option<(SegmentId, u64)> = None;
    for (segment_id, entry) in index.segments() {
        if entry.jobs.tier2_delete.is_some() {
            continue;
        }
        check.ran(Checker::DenseOffsets);
        if let Some((previous_id, end)) = previous_end
            && end != entry.base_offset
        {
            check.fail(
                Checker::DenseOffsets,
                stream,
                format!(
                    "segment {previous_id} ends at offset {end}, segment {segment_id} starts \
                     at {}",
                    entry.base_offset
                ),
            );
        }
        previous_end = match entry.lifecycle {
            Lifecycle::Sealed(seal) => Some((*segment_id, entry.base_offset + seal.record_count)),
            Lifecycle::Open => None,
        };

        let file = segment_path(stream, *segment_id);
        let file_durable = disk.durable_file(file.as_str()).is_some();
        let artifact = disk.durable_file(artifact_path(stream, *segment_id).as_str());
        let key = segment_object_key(stream, *segment_id);
        let object = sim.object_store.object(&key);

        check.ran(Checker::ManifestReferencesDurable);
        if let Some(recorded) = &entry.tier2_object
            && sim.object_store.object(&recorded.key).is_none()
        {
            check.fail(
                Checker::ManifestReferencesDurable,
                stream,
                format!(
                    "segment {segment_id}: UploadDone is committed, object {} is missing",
                    recorded.key
                ),
            );
        }
        match entry.lifecycle {
            Lifecycle::Open => {
                if entry.local.tier0 && !file_durable {
                    check.fail(
                        Checker::ManifestReferencesDurable,
                        stream,
                        format!("open segment {segment_id}: recorded, but {file} is not durable"),
                    );
                }
            }
            Lifecycle::Sealed(_) => {
                let tier0 = entry.local.tier0 && file_durable;
                let tier1 =
                    entry.local.tier1 && entry.tier1_artifact.is_some() && artifact.is_some();
                let tier2 = entry.tier2_object.is_some() && object.is_some();
                if !(tier0 || tier1 || tier2) {
                    let checker = if entry.local.tier0 || entry.local.tier1 {
                        Checker::ManifestReferencesDurable
                    } else {
                        Checker::CopyBeforeRemove
                    };
                    check.fail(
                        checker,
                        stream,
                        format!(
                            "sealed segment {segment_id} has no durable copy (recorded: tier0 \
                             {}, tier1 {}, tier2 {}; durable: file {file_durable}, artifact {}, \
                             object {})",
                            entry.local.tier0,
                            entry.local.tier1,
                            entry.tier2_object.is_some(),
                            artifact.is_some(),
                            object.is_some()
                        ),
                    );
                }
                check.ran(Checker::CopyBeforeRemove);
                if !entry.local.tier0 && entry.tier2_object.is_none() {
                    check.fail(
                        Checker::CopyBeforeRemove,
                        stream,
                        format!(
                            "sealed segment {segment_id}: its Tier 0 copy was given up before \
                             Tier 2 held it"
                        ),
                    );
                }
            }
        }
        if let (Some(artifact), Some(object), true) =
            (&artifact, &object, entry.tier2_object.is_some())
        {
            check.ran(Checker::TierBytesEqual);
            if artifact.as_slice() != object.as_ref() {
                check.fail(
                    Checker::TierBytesEqual,
                    stream,
                    format!(
                        "segment {segment_id}: Tier 1 artifact ({} bytes) differs from object \
                         {key} ({} bytes)",
                        artifact.len(),
                        object.len()
                    ),
                );
            }
        }
    }
}
