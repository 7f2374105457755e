//! Random operation sequences against the Tier 1 machine: a coordinator's calls, IO
//! completions that succeed, fail before or after taking effect, or come back short,
//! and timers, in any order.
//!
//! **Invariants checked** (after every step)
//! - `check_invariants()` holds.
//! - An artifact is removed only if its segment was uploaded and no hydration of it is
//!   pending.
//! - A temp file is fsynced only after a write since its creation succeeded, and
//!   renamed only after that fsync succeeded: a failed step restarts from a fresh temp
//!   file, never re-fsyncs the same pages.
//! - `CompressionSucceeded`, `ArtifactStored` and `HydrationSucceeded` come only once
//!   their file is durable (renamed from a synced temp file, directory fsynced after),
//!   and the file holds exactly the artifact of the segment, the Tier 2 object, or the
//!   segment itself.
//! - Outstanding requests of running compressions and hydrations never exceed the
//!   configured concurrency.
//! - The same operations and seed give the same requests and events.
//! - Drained with healthy IO and timers, every compression and hydration ends.

use super::tests::{
    CpuMode, KIB, MIB, SYNTHETIC_ARTIFACT_MAGIC, SYNTHETIC_SEGMENT_MAGIC, World, describe, key,
};
use super::*;
use crate::SegmentId;
use crate::names::StreamName;
use proptest::prelude::*;

const STREAMS: [&str; 2] = ["a", "b"];
const SEGMENTS_PER_STREAM: u8 = 4;
const KEY_COUNT: u8 = STREAMS.len() as u8 * SEGMENTS_PER_STREAM;
/// Fault selectors below this complete healthily; the five above pick a fault. A job
/// takes up to ten steps, so faults must be rare enough for most to get through.
const HEALTHY_FAULTS: u8 = 60;

fn key_of(index: u8) -> SegmentKey {
    let index = index % KEY_COUNT;
    let stream = usize::from(index / SEGMENTS_PER_STREAM);
    key(
        STREAMS[stream],
        u64::from(index % SEGMENTS_PER_STREAM) + 100 * stream as u64,
    )
}

/// The synthetic segment of `key`: 200 to 320 KiB, so a few artifacts fill the
/// smallest budget. Starts with its key, so every CPU job names its segment.
fn segment_of(key: &SegmentKey) -> Bytes {
    let mut bytes = SYNTHETIC_SEGMENT_MAGIC.to_vec();
    bytes.extend_from_slice(format!("{key} ").as_bytes());
    let length = (200 + 40 * (key.segment_id.0 % 4)) * KIB;
    let fill = key.segment_id.0 as u8;
    bytes.resize(length as usize, fill);
    Bytes::from(bytes)
}

fn synthetic_artifact(segment: &[u8]) -> Vec<u8> {
    let mut artifact = SYNTHETIC_ARTIFACT_MAGIC.to_vec();
    artifact.extend_from_slice(segment);
    artifact
}

/// The segment a request is about, if it names one (a directory fsync does not).
fn request_key(request: &IoRequest) -> Option<SegmentKey> {
    let from_path = |path: &LocalPath| {
        let parts: Vec<&str> = path.as_str().split('/').collect();
        let [_, stream, _, file] = parts.as_slice() else {
            return None;
        };
        let file = file.strip_suffix(TEMP_SUFFIX).unwrap_or(file);
        let id = names::parse_segment_file_name(file)
            .or_else(|_| names::parse_artifact_file_name(file))
            .ok()?;
        Some(SegmentKey::new(StreamName::new(*stream).ok()?, id))
    };
    let from_segment = |bytes: &[u8]| {
        let rest = bytes.strip_prefix(SYNTHETIC_SEGMENT_MAGIC)?;
        let end = rest.iter().position(|byte| *byte == b' ')?;
        let text = std::str::from_utf8(&rest[..end]).ok()?;
        let (stream, id) = text.split_once('/')?;
        Some(SegmentKey::new(
            StreamName::new(stream).ok()?,
            SegmentId(id.parse().ok()?),
        ))
    };
    match request {
        IoRequest::Disk(DiskRequest::SyncDir { .. }) => None,
        IoRequest::Disk(
            DiskRequest::Create { path }
            | DiskRequest::WriteAt { path, .. }
            | DiskRequest::ReadAt { path, .. }
            | DiskRequest::SyncFile { path }
            | DiskRequest::Remove { path }
            | DiskRequest::Rename { from: path, .. },
        ) => from_path(path),
        IoRequest::Disk(other) => panic!("Tier 1 never sends {other:?}"),
        IoRequest::Object(ObjectRequest::Get { key }) => {
            let (stream, id) = names::ObjectKey::parse_segment(key).ok()?;
            Some(SegmentKey::new(stream, id))
        }
        IoRequest::Object(other) => panic!("Tier 1 never sends {other:?}"),
        IoRequest::Cpu(CpuJob::Compress { segment, .. }) => from_segment(segment),
        IoRequest::Cpu(CpuJob::Decompress { artifact }) => {
            from_segment(artifact.strip_prefix(SYNTHETIC_ARTIFACT_MAGIC)?)
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A sealed segment appears in Tier 0 and is queued for compression.
    Seal {
        key: u8,
    },
    Compress {
        key: u8,
    },
    /// Tier 2 takes the artifact; the manifest commits `UploadDone`.
    Upload {
        key: u8,
    },
    /// Tier 0 drops its copy.
    EvictTier0 {
        key: u8,
    },
    Hydrate {
        key: u8,
        priority: u8,
    },
    Touch {
        key: u8,
    },
    /// Completes an outstanding request; `fault` picks success or a fault.
    Complete {
        index: u8,
        fault: u8,
    },
    Tick {
        ms: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEY_COUNT;
    prop_oneof![
        2 => key.clone().prop_map(|key| Op::Seal { key }),
        1 => key.clone().prop_map(|key| Op::Compress { key }),
        3 => key.clone().prop_map(|key| Op::Upload { key }),
        3 => key.clone().prop_map(|key| Op::EvictTier0 { key }),
        4 => (key.clone(), 0u8..3).prop_map(|(key, priority)| Op::Hydrate { key, priority }),
        1 => key.prop_map(|key| Op::Touch { key }),
        16 => (any::<u8>(), 0..HEALTHY_FAULTS + 5)
            .prop_map(|(index, fault)| Op::Complete { index, fault }),
        3 => (0u8..=120).prop_map(|ms| Op::Tick { ms }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TempStage {
    Created,
    Written,
    Synced,
}

/// What the driver knows, kept independently of the machine.
struct Harness {
    cache: Tier1Cache,
    world: World,
    now_ms: u64,
    originals: BTreeMap<SegmentKey, Bytes>,
    uploaded: BTreeSet<SegmentKey>,
    compressing: BTreeSet<SegmentKey>,
    hydrating: BTreeSet<SegmentKey>,
    temp_stages: BTreeMap<LocalPath, TempStage>,
    /// Renamed into place, waiting for a directory fsync.
    renamed: BTreeSet<LocalPath>,
    durable: BTreeSet<LocalPath>,
    outstanding: Vec<(IoId, IoRequest)>,
    trace: Vec<String>,
}

impl Harness {
    fn new(config: Tier1Config, seed: u64) -> Self {
        Harness {
            cache: Tier1Cache::new(config, DetRng::new(seed)),
            world: World::new(CpuMode::Synthetic),
            now_ms: 0,
            originals: (0..KEY_COUNT)
                .map(|index| {
                    let key = key_of(index);
                    let segment = segment_of(&key);
                    (key, segment)
                })
                .collect(),
            uploaded: BTreeSet::new(),
            compressing: BTreeSet::new(),
            hydrating: BTreeSet::new(),
            temp_stages: BTreeMap::new(),
            renamed: BTreeSet::new(),
            durable: BTreeSet::new(),
            outstanding: Vec::new(),
            trace: Vec::new(),
        }
    }

    fn segment_path(key: &SegmentKey) -> LocalPath {
        names::segment_path(&key.stream, key.segment_id)
    }

    fn artifact_path(key: &SegmentKey) -> LocalPath {
        names::artifact_path(&key.stream, key.segment_id)
    }

    fn apply(&mut self, op: &Op) {
        let now_ms = self.now_ms;
        match *op {
            Op::Seal { key } => {
                let key = key_of(key);
                if self.cache.residency(&key).is_none() {
                    let path = Self::segment_path(&key);
                    self.world
                        .files
                        .insert(path.clone(), self.originals[&key].to_vec());
                    self.durable.insert(path);
                    self.cache.set_resident_in_tier0(&key);
                    // The coordinator compresses what it seals.
                    let length = self.originals[&key].len() as u64;
                    self.cache
                        .enqueue_compression(now_ms, key.clone(), length)
                        .unwrap();
                    self.compressing.insert(key);
                }
            }
            Op::Compress { key } => {
                let key = key_of(key);
                if self.cache.residency(&key).is_none() {
                    return; // Nothing sealed to compress (unit tests cover that failure).
                }
                let expected = if self.cache.is_compressing(&key) {
                    Err(Tier1Error::CompressionPending { key: key.clone() })
                } else if self.cache.is_hydrating(&key) {
                    Err(Tier1Error::HydrationPending { key: key.clone() })
                } else if self.cache.artifact(&key).is_some() {
                    Err(Tier1Error::ArtifactPresent { key: key.clone() })
                } else {
                    match self.cache.residency(&key) {
                        None | Some(Residency::ResidentInTier0) => Ok(()),
                        Some(residency) => Err(Tier1Error::NotInTier0 {
                            key: key.clone(),
                            residency,
                        }),
                    }
                };
                let length = self.originals[&key].len() as u64;
                let result = self.cache.enqueue_compression(now_ms, key.clone(), length);
                assert_eq!(result, expected);
                if result.is_ok() {
                    assert!(self.compressing.insert(key));
                }
            }
            Op::Upload { key } => {
                let key = key_of(key);
                let path = Self::artifact_path(&key);
                if self.cache.artifact(&key).is_some()
                    && let Some(file) = self.world.files.get(&path)
                {
                    assert_eq!(
                        file.as_slice(),
                        synthetic_artifact(&self.originals[&key]).as_slice(),
                        "{key}: a held artifact is whole"
                    );
                    let object_key = names::segment_object_key(&key.stream, key.segment_id);
                    self.world
                        .objects
                        .insert(object_key, Bytes::from(file.clone()));
                    self.uploaded.insert(key.clone());
                    self.cache.mark_uploaded(&key);
                }
            }
            Op::EvictTier0 { key } => {
                let key = key_of(key);
                if self.cache.residency(&key) == Some(Residency::ResidentInTier0)
                    && !self.cache.is_compressing(&key)
                    && (self.uploaded.contains(&key) || self.cache.artifact(&key).is_some())
                {
                    let path = Self::segment_path(&key);
                    self.world.files.remove(&path);
                    self.durable.remove(&path);
                    self.renamed.remove(&path);
                    self.cache.note_evicted_from_tier0(&key);
                }
            }
            Op::Hydrate { key, priority } => {
                let key = key_of(key);
                if self.cache.residency(&key).is_none() {
                    return; // Never written: Tier 2 would say NotFound (a unit test).
                }
                let result =
                    self.cache
                        .request_hydration(now_ms, key.clone(), HydrationPriority(priority));
                if self.cache.residency(&key) == Some(Residency::ResidentInTier0) {
                    assert_eq!(result, Err(Tier1Error::ResidentInTier0 { key }));
                } else if self.hydrating.contains(&key) {
                    assert_eq!(result, Ok(HydrationRequested::AlreadyPending));
                } else {
                    assert_eq!(result, Ok(HydrationRequested::Queued));
                    self.hydrating.insert(key);
                }
            }
            Op::Touch { key } => {
                let key = key_of(key);
                let expected = match self.cache.artifact(&key) {
                    None => Err(Tier1Error::NotPresent { key: key.clone() }),
                    Some(state) if state.evicting => {
                        Err(Tier1Error::ArtifactEvicting { key: key.clone() })
                    }
                    Some(_) => Ok(()),
                };
                assert_eq!(self.cache.touch(now_ms, &key), expected);
            }
            Op::Complete { index, fault } => {
                if self.outstanding.is_empty() {
                    return;
                }
                let at = usize::from(index) % self.outstanding.len();
                let (id, request) = self.outstanding.swap_remove(at);
                self.complete(id, &request, fault);
            }
            Op::Tick { ms } => {
                self.now_ms += u64::from(ms);
                self.cache.handle_timeout(self.now_ms);
            }
        }
    }

    /// Carries out `request`, healthily if `fault < HEALTHY_FAULTS`, else with a fault:
    /// a disk error, an error after the operation took effect, a short read, an object
    /// store error or a short object, or a refused CPU job.
    fn complete(&mut self, id: IoId, request: &IoRequest, fault: u8) {
        let Some(fault) = fault.checked_sub(HEALTHY_FAULTS) else {
            let completion = self.world.execute(request);
            return self.deliver(id, request, completion);
        };
        let completion = match (request, fault) {
            (IoRequest::Disk(_), 0) => disk_failed(DiskErrorKind::Io),
            (IoRequest::Disk(_), 1) => disk_failed(DiskErrorKind::NoSpace),
            (IoRequest::Disk(_), 2) => disk_failed(DiskErrorKind::NotFound),
            (IoRequest::Disk(_), 3) => {
                // Took effect, then reported failed (the ambiguous case).
                let _ = self.world.execute(request);
                disk_failed(DiskErrorKind::Io)
            }
            (IoRequest::Disk(_), _) => match self.world.execute(request) {
                IoCompletion::Disk(DiskCompletion::Read(bytes)) if !bytes.is_empty() => {
                    IoCompletion::Disk(DiskCompletion::Read(bytes.slice(..bytes.len() - 1)))
                }
                _ => disk_failed(DiskErrorKind::Io),
            },
            (IoRequest::Object(_), 0..=3) => IoCompletion::Object(ObjectCompletion::Failed(
                [
                    ObjectErrorKind::Transient,
                    ObjectErrorKind::Throttled,
                    ObjectErrorKind::Permanent,
                    ObjectErrorKind::NotFound,
                ][usize::from(fault)],
            )),
            (IoRequest::Object(_), _) => match self.world.execute(request) {
                IoCompletion::Object(ObjectCompletion::Got { bytes, object_size }) => {
                    IoCompletion::Object(ObjectCompletion::Got {
                        bytes,
                        object_size: object_size + 1,
                    })
                }
                other => other,
            },
            (IoRequest::Cpu(_), _) => IoCompletion::Cpu(CpuResult::Failed {
                reason: "injected".to_owned(),
            }),
        };
        self.deliver(id, request, completion);
    }

    /// Updates the model from what the machine is told, then tells it.
    fn deliver(&mut self, id: IoId, request: &IoRequest, completion: IoCompletion) {
        match (&completion, request) {
            (IoCompletion::Disk(DiskCompletion::Done), IoRequest::Disk(disk)) => {
                self.record_success(disk);
            }
            (IoCompletion::Disk(DiskCompletion::Failed(_)), IoRequest::Disk(disk)) => {
                self.record_failure(disk);
            }
            _ => {}
        }
        self.trace
            .push(format!("complete {id:?} {}", summary(&completion)));
        self.cache.handle_completion(self.now_ms, id, completion);
    }

    fn record_success(&mut self, request: &DiskRequest) {
        match request {
            DiskRequest::Create { path } => {
                self.temp_stages.insert(path.clone(), TempStage::Created);
            }
            DiskRequest::WriteAt { path, .. } => {
                if self.temp_stages.get(path) == Some(&TempStage::Created) {
                    self.temp_stages.insert(path.clone(), TempStage::Written);
                } else {
                    self.temp_stages.remove(path);
                }
            }
            DiskRequest::SyncFile { path } => {
                if self.temp_stages.get(path) == Some(&TempStage::Written) {
                    self.temp_stages.insert(path.clone(), TempStage::Synced);
                } else {
                    self.temp_stages.remove(path);
                }
            }
            DiskRequest::Rename { from, to } => {
                self.durable.remove(to);
                if self.temp_stages.remove(from) == Some(TempStage::Synced) {
                    self.renamed.insert(to.clone());
                } else {
                    self.renamed.remove(to);
                }
            }
            DiskRequest::SyncDir { path } => {
                let now_durable: Vec<LocalPath> = self
                    .renamed
                    .iter()
                    .filter(|renamed| renamed.parent().as_ref() == Some(path))
                    .cloned()
                    .collect();
                for renamed in now_durable {
                    self.renamed.remove(&renamed);
                    self.durable.insert(renamed);
                }
            }
            DiskRequest::Remove { path } => {
                self.durable.remove(path);
                self.renamed.remove(path);
            }
            DiskRequest::ReadAt { .. } => {}
            other => panic!("Tier 1 never sends {other:?}"),
        }
    }

    /// A failed step loses the temp file's pages; a rename or removal that may have
    /// taken effect leaves the target not known durable.
    fn record_failure(&mut self, request: &DiskRequest) {
        match request {
            DiskRequest::Create { path }
            | DiskRequest::WriteAt { path, .. }
            | DiskRequest::SyncFile { path } => {
                self.temp_stages.remove(path);
            }
            DiskRequest::Rename { from, to } => {
                self.temp_stages.remove(from);
                self.durable.remove(to);
                self.renamed.remove(to);
            }
            DiskRequest::Remove { path } => {
                self.durable.remove(path);
                self.renamed.remove(path);
            }
            DiskRequest::ReadAt { .. } | DiskRequest::SyncDir { .. } => {}
            other => panic!("Tier 1 never sends {other:?}"),
        }
    }

    /// Drains events and requests like a driver, checking each against the model.
    /// Events first: a request issued in the same step may follow from an outcome (an
    /// artifact evicted as soon as its hydration finished).
    fn drain(&mut self) {
        while let Some(event) = self.cache.poll_event() {
            self.check_event(&event);
            self.trace.push(format!("event {event:?}"));
        }
        while let Some((id, request)) = self.cache.poll_request() {
            self.check_request(&request);
            self.trace
                .push(format!("request {id:?} {}", describe(&request)));
            self.outstanding.push((id, request));
        }
        self.cache.check_invariants();
        self.check_concurrency();
    }

    fn check_request(&self, request: &IoRequest) {
        let IoRequest::Disk(disk) = request else {
            return;
        };
        match disk {
            DiskRequest::SyncFile { path } => assert_eq!(
                self.temp_stages.get(path),
                Some(&TempStage::Written),
                "fsync of {path} without a successful write since its creation"
            ),
            DiskRequest::Rename { from, .. } => assert_eq!(
                self.temp_stages.get(from),
                Some(&TempStage::Synced),
                "rename of {from} before a successful fsync"
            ),
            DiskRequest::Remove { path } => {
                let key = request_key(request).expect("removals name their segment");
                assert_eq!(
                    path,
                    &Self::artifact_path(&key),
                    "only artifacts are removed"
                );
                assert!(self.uploaded.contains(&key), "{key} removed, not uploaded");
                assert!(
                    !self.hydrating.contains(&key),
                    "{key} removed while hydrating"
                );
            }
            _ => {}
        }
    }

    fn check_event(&mut self, event: &Tier1Event) {
        assert_eq!(event.target(), LOG_TARGET_TIER1);
        assert!(event.name().starts_with("tier1_"));
        match event {
            Tier1Event::CompressionSucceeded {
                key,
                original_bytes,
                compressed_bytes,
                ..
            } => {
                let path = Self::artifact_path(key);
                assert!(
                    self.durable.contains(&path),
                    "{key}: success before durable"
                );
                let expected = synthetic_artifact(&self.originals[key]);
                assert_eq!(self.world.files[&path], expected, "{key}: artifact content");
                assert_eq!(*compressed_bytes, expected.len() as u64);
                assert_eq!(*original_bytes, self.originals[key].len() as u64);
                assert!(self.compressing.remove(key));
            }
            Tier1Event::CompressionFailed { key, attempts, .. } => {
                assert!(*attempts >= 1 && *attempts <= self.cache.config().max_retries);
                assert!(self.compressing.remove(key));
            }
            Tier1Event::ArtifactStored { key, bytes } => {
                let path = Self::artifact_path(key);
                assert!(self.durable.contains(&path), "{key}: stored before durable");
                let object_key = names::segment_object_key(&key.stream, key.segment_id);
                assert_eq!(self.world.files[&path], self.world.objects[&object_key]);
                assert_eq!(*bytes, self.world.objects[&object_key].len() as u64);
                assert!(self.uploaded.contains(key), "objects come from uploads");
            }
            Tier1Event::HydrationSucceeded { key, bytes, .. } => {
                let path = Self::segment_path(key);
                assert!(
                    self.durable.contains(&path),
                    "{key}: hydrated before durable"
                );
                assert_eq!(
                    self.world.files[&path], self.originals[key],
                    "{key}: content"
                );
                assert_eq!(*bytes, self.originals[key].len() as u64);
                assert!(self.hydrating.remove(key));
                assert_eq!(self.cache.residency(key), Some(Residency::ResidentInTier0));
            }
            Tier1Event::HydrationFailed { key, attempts, .. } => {
                assert!(*attempts >= 1 && *attempts <= self.cache.config().max_retries);
                assert!(self.hydrating.remove(key));
                assert_eq!(self.cache.residency(key), Some(Residency::NeedsRecovery));
            }
            Tier1Event::Evicted { key, .. } => {
                assert!(self.uploaded.contains(key), "{key} evicted, not uploaded");
            }
            Tier1Event::CompressionStarted { .. }
            | Tier1Event::CompressionRetryScheduled { .. }
            | Tier1Event::HydrationStarted { .. }
            | Tier1Event::HydrationRetryScheduled { .. }
            | Tier1Event::ArtifactMissing { .. }
            | Tier1Event::ArtifactCorrupt { .. }
            | Tier1Event::EvictionFailed { .. } => {}
        }
    }

    fn check_concurrency(&self) {
        let config = self.cache.config();
        let running = |jobs: &BTreeSet<SegmentKey>| {
            self.outstanding
                .iter()
                .filter(|(_, request)| {
                    !matches!(request, IoRequest::Disk(DiskRequest::Remove { .. }))
                })
                .filter_map(|(_, request)| request_key(request))
                .filter(|key| jobs.contains(key))
                .count()
        };
        assert!(running(&self.compressing) <= config.compression_concurrency as usize);
        assert!(running(&self.hydrating) <= config.hydration_concurrency as usize);
        let metrics = self.cache.metrics();
        assert!(metrics.compressions_in_flight <= u64::from(config.compression_concurrency));
        assert!(metrics.hydrations_in_flight <= u64::from(config.hydration_concurrency));
    }

    /// Completes everything healthily and fires every timer until nothing is left.
    fn drain_to_idle(&mut self) {
        for _ in 0..100_000 {
            if let Some((id, request)) = self.outstanding.pop() {
                self.complete(id, &request, 0);
            } else if let Some(deadline_ms) = self.cache.poll_timeout() {
                self.now_ms = self.now_ms.max(deadline_ms);
                self.cache.handle_timeout(self.now_ms);
            } else {
                return;
            }
            self.drain();
        }
        panic!("Tier 1 never went idle");
    }
}

fn disk_failed(kind: DiskErrorKind) -> IoCompletion {
    IoCompletion::Disk(DiskCompletion::Failed(kind))
}

fn summary(completion: &IoCompletion) -> String {
    match completion {
        IoCompletion::Disk(DiskCompletion::Read(bytes)) => format!("read +{}", bytes.len()),
        IoCompletion::Object(ObjectCompletion::Got { bytes, object_size }) => {
            format!("got +{} of {object_size}", bytes.len())
        }
        IoCompletion::Cpu(CpuResult::Compressed { artifact, .. }) => {
            format!("compressed +{}", artifact.len())
        }
        IoCompletion::Cpu(CpuResult::Decompressed { segment }) => {
            format!("decompressed +{}", segment.len())
        }
        other => format!("{other:?}"),
    }
}

/// Runs `ops`, then drains to idle; returns the trace.
fn run(config: Tier1Config, seed: u64, ops: &[Op]) -> Vec<String> {
    let mut harness = Harness::new(config, seed);
    for op in ops {
        harness.trace.push(format!("op {op:?}"));
        harness.apply(op);
        harness.drain();
    }
    harness.drain_to_idle();
    for index in 0..KEY_COUNT {
        let key = key_of(index);
        assert!(
            !harness.cache.is_compressing(&key),
            "{key} still compressing"
        );
        assert!(!harness.cache.is_hydrating(&key), "{key} still hydrating");
    }
    assert!(harness.compressing.is_empty() && harness.hydrating.is_empty());
    let metrics = harness.cache.metrics();
    assert_eq!(
        metrics.compressions_in_flight + metrics.hydrations_in_flight,
        0
    );
    assert_eq!(
        metrics.compression_queue_depth + metrics.hydration_queue_depth,
        0
    );
    assert_eq!(metrics.residency.staged_for_tier0, 0);
    assert!(
        metrics.over_budget_bytes == 0 || harness.cache.eviction_order().next().is_none(),
        "idle over budget with something evictable"
    );
    harness.trace
}

fn config() -> impl Strategy<Value = Tier1Config> {
    (1u32..=4, 0u64..=60, 1u32..=3, 1u32..=3).prop_map(
        |(max_retries, retry_backoff_ms, compression_concurrency, hydration_concurrency)| {
            Tier1Config {
                max_bytes: MIB,
                max_retries,
                retry_backoff_ms,
                compression_concurrency,
                hydration_concurrency,
                ..Tier1Config::default()
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_and_faults_keep_every_invariant_and_replay(
        config in config(),
        seed: u64,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let trace = run(config, seed, &ops);
        prop_assert_eq!(run(config, seed, &ops), trace, "same seed, same trace");
    }
}

/// Guards the random test against losing its reach: over a fixed set of generated
/// runs, every kind of outcome happens.
#[test]
fn random_runs_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..100 {
        let config = config().new_tree(&mut runner).unwrap().current();
        let ops = proptest::collection::vec(op(), 100..200)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for line in run(config, seed, &ops) {
            if let Some(rest) = line.strip_prefix("event ") {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
                *counts.entry(name).or_default() += 1;
            }
            for source in ["source: Tier1", "source: Tier2"] {
                if line.starts_with("event HydrationSucceeded") && line.contains(source) {
                    *counts.entry(source.to_owned()).or_default() += 1;
                }
            }
        }
    }
    for outcome in [
        "CompressionSucceeded",
        "CompressionRetryScheduled",
        "CompressionFailed",
        "HydrationSucceeded",
        "HydrationRetryScheduled",
        "HydrationFailed",
        "source: Tier1",
        "source: Tier2",
        "ArtifactStored",
        "ArtifactCorrupt",
        "Evicted",
        "EvictionFailed",
    ] {
        assert!(
            counts.get(outcome).copied().unwrap_or(0) > 0,
            "{outcome} never happened: {counts:#?}"
        );
    }
}

#[test]
fn a_healthy_run_compresses_uploads_evicts_and_hydrates() {
    // A fixed sequence through every path, so the random test's harness is known to
    // see evictions and both hydration sources.
    let mut ops = Vec::new();
    for key in 0..KEY_COUNT {
        ops.push(Op::Seal { key });
        ops.push(Op::Compress { key });
    }
    let complete_all = |ops: &mut Vec<Op>| {
        for _ in 0..400 {
            ops.push(Op::Complete { index: 0, fault: 0 });
        }
    };
    complete_all(&mut ops);
    for key in 0..KEY_COUNT {
        ops.push(Op::Upload { key });
        ops.push(Op::EvictTier0 { key });
    }
    complete_all(&mut ops);
    for key in 0..KEY_COUNT {
        ops.push(Op::Hydrate {
            key,
            priority: key % 3,
        });
    }
    complete_all(&mut ops);
    let trace = run(
        Tier1Config {
            max_bytes: MIB,
            ..Tier1Config::default()
        },
        1,
        &ops,
    );
    let count = |name: &str| trace.iter().filter(|line| line.contains(name)).count();
    assert_eq!(count("event CompressionSucceeded"), usize::from(KEY_COUNT));
    assert!(count("event Evicted") >= 4, "the budget forced evictions");
    assert_eq!(count("event HydrationSucceeded"), usize::from(KEY_COUNT));
    assert!(count("source: Tier1") >= 1 && count("source: Tier2") >= 1);
    assert!(count("event ArtifactStored") >= 1);
}
