//! Unit tests of the Tier 1 machine, driven through a small simulated world: a map of
//! files, a map of objects, and a CPU that runs the real artifact encoder and decoder
//! (or, for the random tests, a cheap synthetic stand-in).

use super::*;
use crate::SegmentId;
use crate::artifact::{self, ArtifactOptions};
use crate::codec::crc32;
use crate::limits::{TIER1_HYDRATION_LATENCY_SAMPLES_MAX, TIER1_MAX_BYTES_MIN};
use crate::names::StreamName;
use crate::segment::{Record, SealedSegment, SegmentDigest, SegmentHeader};

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * 1024;

pub(super) fn key(stream: &str, id: u64) -> SegmentKey {
    SegmentKey::new(StreamName::new(stream).unwrap(), SegmentId(id))
}

pub(super) fn temp_of(path: &LocalPath) -> LocalPath {
    path.parent()
        .unwrap()
        .join(&format!("{}{TEMP_SUFFIX}", path.file_name()))
}

/// A real sealed segment with `records` records of varied payloads.
pub(super) fn sealed_segment(segment_id: u64, records: u64) -> Vec<u8> {
    let header = SegmentHeader {
        segment_id: SegmentId(segment_id),
        base_offset: segment_id * 1000,
        created_at_ms: 1_700_000_000_000,
    };
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    let mut digest = SegmentDigest::new();
    digest.update_header(&bytes);
    for index in 0..records {
        let payload: Vec<u8> = (0..(index * 53 % 700))
            .map(|i| (i * 7 + index + segment_id) as u8)
            .collect();
        let position = bytes.len();
        Record {
            offset: header.base_offset + index,
            timestamp_ms: 1_700_000_000_000 + index,
            ext_id: index + 1,
            flags: 0,
            payload: &payload,
        }
        .encode(&mut bytes);
        digest.update_frames(&bytes[position..]);
    }
    digest
        .footer(0, false, 1_700_000_100_000)
        .encode(&mut bytes);
    bytes
}

/// The real artifact of `segment`.
pub(super) fn real_artifact(segment: &[u8], frame_raw_bytes_target: u32) -> Vec<u8> {
    let sealed = SealedSegment::decode(segment).unwrap();
    let boundaries: Vec<_> = sealed.record_boundaries().collect();
    let options = ArtifactOptions {
        frame_raw_bytes_target,
        ..ArtifactOptions::default()
    };
    let mut out = Vec::new();
    artifact::encode(segment, &boundaries, &options, &mut out).unwrap();
    out
}

/// How the simulated CPU answers jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CpuMode {
    /// The real artifact encoder and decoder.
    Real,
    /// A cheap stand-in: an "artifact" is `ART ` followed by the segment bytes; only
    /// segments starting with `SEG ` compress.
    Synthetic,
}

pub(super) const SYNTHETIC_SEGMENT_MAGIC: &[u8] = b"SEG ";
pub(super) const SYNTHETIC_ARTIFACT_MAGIC: &[u8] = b"ART ";

/// Files, objects and a CPU: carries out requests successfully, like a healthy driver.
#[derive(Debug, Clone)]
pub(super) struct World {
    pub(super) files: BTreeMap<LocalPath, Vec<u8>>,
    pub(super) objects: BTreeMap<String, Bytes>,
    pub(super) cpu: CpuMode,
}

impl World {
    pub(super) fn new(cpu: CpuMode) -> Self {
        World {
            files: BTreeMap::new(),
            objects: BTreeMap::new(),
            cpu,
        }
    }

    pub(super) fn execute(&mut self, request: &IoRequest) -> IoCompletion {
        match request {
            IoRequest::Disk(disk) => IoCompletion::Disk(self.execute_disk(disk)),
            IoRequest::Object(ObjectRequest::Get { key }) => {
                IoCompletion::Object(match self.objects.get(key) {
                    Some(bytes) => ObjectCompletion::Got {
                        bytes: bytes.clone(),
                        object_size: bytes.len() as u64,
                    },
                    None => ObjectCompletion::Failed(ObjectErrorKind::NotFound),
                })
            }
            IoRequest::Object(other) => panic!("Tier 1 never sends {other:?}"),
            IoRequest::Cpu(job) => IoCompletion::Cpu(self.execute_cpu(job)),
        }
    }

    fn execute_disk(&mut self, request: &DiskRequest) -> DiskCompletion {
        let not_found = DiskCompletion::Failed(DiskErrorKind::NotFound);
        match request {
            DiskRequest::Create { path } => {
                self.files.insert(path.clone(), Vec::new());
                DiskCompletion::Done
            }
            DiskRequest::WriteAt {
                path,
                offset,
                bytes,
            } => {
                let Some(file) = self.files.get_mut(path) else {
                    return not_found;
                };
                let start = usize::try_from(*offset).unwrap();
                if file.len() < start + bytes.len() {
                    file.resize(start + bytes.len(), 0);
                }
                file[start..start + bytes.len()].copy_from_slice(bytes);
                DiskCompletion::Done
            }
            DiskRequest::ReadAt {
                path,
                offset,
                length,
            } => {
                let Some(file) = self.files.get(path) else {
                    return not_found;
                };
                let start = usize::try_from(*offset).unwrap().min(file.len());
                let end = (start + usize::try_from(*length).unwrap()).min(file.len());
                DiskCompletion::Read(Bytes::copy_from_slice(&file[start..end]))
            }
            DiskRequest::SyncFile { path } => {
                if self.files.contains_key(path) {
                    DiskCompletion::Done
                } else {
                    not_found
                }
            }
            DiskRequest::SyncDir { .. } => DiskCompletion::Done,
            DiskRequest::Rename { from, to } => match self.files.remove(from) {
                Some(file) => {
                    self.files.insert(to.clone(), file);
                    DiskCompletion::Done
                }
                None => not_found,
            },
            DiskRequest::Remove { path } => match self.files.remove(path) {
                Some(_) => DiskCompletion::Done,
                None => not_found,
            },
            other => panic!("Tier 1 never sends {other:?}"),
        }
    }

    fn execute_cpu(&mut self, job: &CpuJob) -> CpuResult {
        match (self.cpu, job) {
            (
                CpuMode::Real,
                CpuJob::Compress {
                    segment,
                    frame_raw_bytes_target,
                    compression_level,
                },
            ) => {
                let sealed = match SealedSegment::decode(segment) {
                    Ok(sealed) => sealed,
                    Err(error) => {
                        return CpuResult::Failed {
                            reason: error.to_string(),
                        };
                    }
                };
                let boundaries: Vec<_> = sealed.record_boundaries().collect();
                let options = ArtifactOptions {
                    frame_raw_bytes_target: *frame_raw_bytes_target,
                    compression_level: *compression_level,
                };
                let mut out = Vec::new();
                match artifact::encode(segment, &boundaries, &options, &mut out) {
                    Ok(index) => CpuResult::Compressed {
                        checksum: crc32(&out),
                        artifact: Bytes::from(out),
                        frame_count: index.frame_count(),
                    },
                    Err(error) => CpuResult::Failed {
                        reason: error.to_string(),
                    },
                }
            }
            (CpuMode::Real, CpuJob::Decompress { artifact }) => {
                match artifact::decode_all(artifact) {
                    Ok(segment) => CpuResult::Decompressed {
                        segment: Bytes::from(segment),
                    },
                    Err(error) => CpuResult::Failed {
                        reason: error.to_string(),
                    },
                }
            }
            (CpuMode::Synthetic, CpuJob::Compress { segment, .. }) => {
                if segment.starts_with(SYNTHETIC_SEGMENT_MAGIC) {
                    let mut artifact = SYNTHETIC_ARTIFACT_MAGIC.to_vec();
                    artifact.extend_from_slice(segment);
                    CpuResult::Compressed {
                        checksum: crc32(&artifact),
                        artifact: Bytes::from(artifact),
                        frame_count: 1,
                    }
                } else {
                    CpuResult::Failed {
                        reason: "not a segment".to_owned(),
                    }
                }
            }
            (CpuMode::Synthetic, CpuJob::Decompress { artifact }) => {
                match artifact.strip_prefix(SYNTHETIC_ARTIFACT_MAGIC) {
                    Some(segment) if !segment.is_empty() => CpuResult::Decompressed {
                        segment: Bytes::copy_from_slice(segment),
                    },
                    _ => CpuResult::Failed {
                        reason: "not an artifact".to_owned(),
                    },
                }
            }
        }
    }
}

/// A short, exact description of a request, for comparing request sequences.
pub(super) fn describe(request: &IoRequest) -> String {
    match request {
        IoRequest::Disk(disk) => match disk {
            DiskRequest::Create { path } => format!("create {path}"),
            DiskRequest::WriteAt {
                path,
                offset,
                bytes,
            } => format!("write {path} @{offset} +{}", bytes.len()),
            DiskRequest::ReadAt {
                path,
                offset,
                length,
            } => format!("read {path} @{offset} +{length}"),
            DiskRequest::SyncFile { path } => format!("sync {path}"),
            DiskRequest::SyncDir { path } => format!("sync_dir {path}"),
            DiskRequest::Rename { from, to } => format!("rename {from} -> {to}"),
            DiskRequest::Remove { path } => format!("remove {path}"),
            other => format!("{other:?}"),
        },
        IoRequest::Object(ObjectRequest::Get { key }) => format!("get {key}"),
        IoRequest::Object(other) => format!("{other:?}"),
        IoRequest::Cpu(CpuJob::Compress { segment, .. }) => format!("compress +{}", segment.len()),
        IoRequest::Cpu(CpuJob::Decompress { artifact }) => {
            format!("decompress +{}", artifact.len())
        }
    }
}

/// The five requests of a durable write of `length` bytes to `target`, in order.
fn durable_write(target: &LocalPath, length: u64) -> Vec<String> {
    let temp = temp_of(target);
    vec![
        format!("create {temp}"),
        format!("write {temp} @0 +{length}"),
        format!("sync {temp}"),
        format!("rename {temp} -> {target}"),
        format!("sync_dir {}", target.parent().unwrap()),
    ]
}

pub(super) fn test_config() -> Tier1Config {
    Tier1Config {
        max_bytes: MIB,
        frame_raw_bytes_target: 4096,
        ..Tier1Config::default()
    }
}

fn new_cache(config: Tier1Config) -> Tier1Cache {
    Tier1Cache::new(config, DetRng::new(7))
}

fn poll_all(cache: &mut Tier1Cache) -> Vec<(IoId, IoRequest)> {
    std::iter::from_fn(|| cache.poll_request()).collect()
}

fn events(cache: &mut Tier1Cache) -> Vec<Tier1Event> {
    std::iter::from_fn(|| cache.poll_event()).collect()
}

fn one_request(cache: &mut Tier1Cache) -> (IoId, IoRequest) {
    let mut requests = poll_all(cache);
    assert_eq!(requests.len(), 1, "expected one request: {requests:?}");
    requests.pop().unwrap()
}

/// Polls the one pending request, carries it out in `world`, delivers the outcome.
fn step(cache: &mut Tier1Cache, world: &mut World, now_ms: u64) -> String {
    let (id, request) = one_request(cache);
    let completion = world.execute(&request);
    cache.handle_completion(now_ms, id, completion);
    cache.check_invariants();
    describe(&request)
}

/// Polls the one pending request and answers it with `completion` instead.
fn step_with(cache: &mut Tier1Cache, now_ms: u64, completion: IoCompletion) -> String {
    let (id, request) = one_request(cache);
    cache.handle_completion(now_ms, id, completion);
    cache.check_invariants();
    describe(&request)
}

/// Carries out every request, concurrently issued ones included, until none is left.
fn run_until_idle(cache: &mut Tier1Cache, world: &mut World, now_ms: u64) -> Vec<String> {
    let mut done = Vec::new();
    for _ in 0..10_000 {
        let requests = poll_all(cache);
        if requests.is_empty() {
            return done;
        }
        for (id, request) in requests {
            let completion = world.execute(&request);
            cache.handle_completion(now_ms, id, completion);
            cache.check_invariants();
            done.push(describe(&request));
        }
    }
    panic!("the machine never went idle");
}

fn disk_failed(kind: DiskErrorKind) -> IoCompletion {
    IoCompletion::Disk(DiskCompletion::Failed(kind))
}

fn object_failed(kind: ObjectErrorKind) -> IoCompletion {
    IoCompletion::Object(ObjectCompletion::Failed(kind))
}

/// A world holding a sealed segment file for `key`, and the segment.
fn world_with_segment(key: &SegmentKey) -> (World, Vec<u8>) {
    let mut world = World::new(CpuMode::Real);
    let segment = sealed_segment(key.segment_id.0, 40);
    world.files.insert(
        names::segment_path(&key.stream, key.segment_id),
        segment.clone(),
    );
    (world, segment)
}

/// Compresses `key` to completion; returns the artifact bytes.
fn compress_fully(cache: &mut Tier1Cache, world: &mut World, key: &SegmentKey) -> Vec<u8> {
    let segment_bytes = world.files[&names::segment_path(&key.stream, key.segment_id)].len();
    cache
        .enqueue_compression(0, key.clone(), segment_bytes as u64)
        .unwrap();
    run_until_idle(cache, world, 0);
    let events = events(cache);
    assert!(
        matches!(events.last(), Some(Tier1Event::CompressionSucceeded { .. })),
        "{events:?}"
    );
    world.files[&names::artifact_path(&key.stream, key.segment_id)].clone()
}

// ---- Configuration ----

#[test]
fn config_defaults_match_the_runbook_and_round_trip_toml() {
    let config = Tier1Config::default();
    config.validate().unwrap();
    assert_eq!(config.max_retries, 3);
    assert_eq!(config.retry_backoff_ms, 50);
    assert_eq!(config.retry_policy(), RetryPolicy::tier1_default());
    let parsed: Tier1Config = toml::from_str("").unwrap();
    assert_eq!(parsed, config);
    let parsed: Tier1Config =
        toml::from_str("max_bytes = 8388608\nmax_retries = 5\nretry_backoff_ms = 10").unwrap();
    assert_eq!(parsed.max_bytes, 8 * MIB);
    assert_eq!(parsed.retry_policy().max_attempts, 5);
    assert_eq!(parsed.retry_policy().base_delay_ms, 10);
    let text = toml::to_string(&parsed).unwrap();
    assert_eq!(toml::from_str::<Tier1Config>(&text).unwrap(), parsed);
    let slow = Tier1Config {
        retry_backoff_ms: 60_000,
        ..config
    };
    assert_eq!(
        slow.retry_policy().max_delay_ms,
        60_000,
        "cap never below base"
    );
}

#[test]
fn config_errors_name_the_key_and_value() {
    let base = Tier1Config::default();
    let cases = [
        (
            Tier1Config {
                max_bytes: 10,
                ..base
            },
            "tier1.max_bytes = 10: must be at least 1048576 bytes",
        ),
        (
            Tier1Config {
                max_retries: 0,
                ..base
            },
            "tier1.max_retries = 0: must be in 1..=32",
        ),
        (
            Tier1Config {
                max_retries: 33,
                ..base
            },
            "tier1.max_retries = 33: must be in 1..=32",
        ),
        (
            Tier1Config {
                retry_backoff_ms: 600_001,
                ..base
            },
            "tier1.retry_backoff_ms = 600001: must be at most 600000",
        ),
        (
            Tier1Config {
                compression_level: 20,
                ..base
            },
            "tier1.compression_level = 20: must be in 1..=19",
        ),
        (
            Tier1Config {
                frame_raw_bytes_target: 0,
                ..base
            },
            "tier1.frame_raw_bytes_target = 0: must be in 1..=16777216",
        ),
        (
            Tier1Config {
                compression_concurrency: 0,
                ..base
            },
            "tier1.compression_concurrency = 0: must be in 1..=64",
        ),
        (
            Tier1Config {
                hydration_concurrency: 65,
                ..base
            },
            "tier1.hydration_concurrency = 65: must be in 1..=64",
        ),
    ];
    for (config, message) in cases {
        let error = config.validate().unwrap_err();
        assert!(error.to_string().starts_with(message), "{error}");
    }
    let error = toml::from_str::<Tier1Config>("hydration_concurrency = 0").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("tier1.hydration_concurrency = 0"),
        "{error}"
    );
    let error = toml::from_str::<Tier1Config>("retry_backoff = 50").unwrap_err();
    assert!(error.to_string().contains("retry_backoff"), "{error}");
}

// ---- Compression ----

#[test]
fn compression_success_writes_the_artifact_durably_in_order() {
    let key = key("orders", 3);
    let (mut world, segment) = world_with_segment(&key);
    let mut cache = new_cache(test_config());
    let length = segment.len() as u64;
    cache.enqueue_compression(5, key.clone(), length).unwrap();
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::CompressionStarted {
            key: key.clone(),
            attempt: 1
        }]
    );
    let segment_path = names::segment_path(&key.stream, key.segment_id);
    assert_eq!(
        step(&mut cache, &mut world, 6),
        format!("read {segment_path} @0 +{length}")
    );
    assert_eq!(
        step(&mut cache, &mut world, 7),
        format!("compress +{length}")
    );
    let artifact_path = names::artifact_path(&key.stream, key.segment_id);
    let mut done = Vec::new();
    for _ in 0..5 {
        assert!(
            events(&mut cache).is_empty(),
            "no success before the dir fsync"
        );
        assert_eq!(cache.artifact(&key), None);
        done.push(step(&mut cache, &mut world, 8));
    }
    let artifact = world.files[&artifact_path].clone();
    assert_eq!(done, durable_write(&artifact_path, artifact.len() as u64));
    assert_eq!(
        artifact::decode_all(&artifact).unwrap(),
        segment,
        "the stored artifact is the segment's"
    );
    assert_eq!(
        real_artifact(&segment, 4096),
        artifact,
        "the encoder is deterministic"
    );
    let events = events(&mut cache);
    assert_eq!(events.len(), 1);
    let Tier1Event::CompressionSucceeded {
        key: done_key,
        original_bytes,
        compressed_bytes,
        frame_count,
        checksum,
    } = &events[0]
    else {
        panic!("{events:?}");
    };
    assert_eq!(done_key, &key);
    assert_eq!(*original_bytes, length);
    assert_eq!(*compressed_bytes, artifact.len() as u64);
    assert!(*frame_count > 1, "a 4 KiB frame target cuts several frames");
    assert_eq!(*checksum, crc32(&artifact));
    assert!(poll_all(&mut cache).is_empty());
    let state = cache.artifact(&key).unwrap();
    assert_eq!(state.bytes, artifact.len() as u64);
    assert!(!state.uploaded && !state.evictable);
    let metrics = cache.metrics();
    assert_eq!(metrics.compressions, 1);
    assert_eq!(metrics.total_bytes, artifact.len() as u64);
    assert_eq!(metrics.compressions_in_flight, 0);
    assert_eq!(cache.residency(&key), Some(Residency::ResidentInTier0));
}

#[test]
fn failed_fsync_restarts_from_a_fresh_temp_file() {
    let key = key("orders", 1);
    let (mut world, segment) = world_with_segment(&key);
    let mut cache = new_cache(test_config());
    cache
        .enqueue_compression(0, key.clone(), segment.len() as u64)
        .unwrap();
    step(&mut cache, &mut world, 0); // read
    step(&mut cache, &mut world, 0); // compress
    step(&mut cache, &mut world, 0); // create temp
    step(&mut cache, &mut world, 0); // write temp
    let artifact_path = names::artifact_path(&key.stream, key.segment_id);
    let temp = temp_of(&artifact_path);
    assert_eq!(
        step_with(&mut cache, 10, disk_failed(DiskErrorKind::Io)),
        format!("sync {temp}")
    );
    let events_after_failure = events(&mut cache);
    let Some(Tier1Event::CompressionRetryScheduled {
        attempt: 1,
        delay_ms,
        reason,
        ..
    }) = events_after_failure.last()
    else {
        panic!("{events_after_failure:?}");
    };
    assert_eq!(
        reason,
        &Tier1Failure::Disk {
            step: IoStep::SyncTemp,
            kind: DiskErrorKind::Io
        }
    );
    assert!((25..=50).contains(delay_ms), "{delay_ms}");
    assert!(
        events_after_failure
            .iter()
            .all(|event| !matches!(event, Tier1Event::CompressionSucceeded { .. })),
        "a failed fsync is not success"
    );
    assert!(poll_all(&mut cache).is_empty(), "no retry before the timer");
    let deadline_ms = cache.poll_timeout().unwrap();
    assert_eq!(deadline_ms, 10 + delay_ms);
    cache.handle_timeout(deadline_ms - 1);
    assert!(poll_all(&mut cache).is_empty(), "the timer is not due yet");
    cache.handle_timeout(deadline_ms);
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::CompressionStarted {
            key: key.clone(),
            attempt: 2
        }]
    );
    // Attempt 2 rewrites the artifact from memory: a fresh temp file, never a second
    // fsync of the pages whose fsync failed, and no re-read or re-compression.
    let artifact_len = real_artifact(&segment, 4096).len() as u64;
    let retried: Vec<String> = (0..5)
        .map(|_| step(&mut cache, &mut world, deadline_ms))
        .collect();
    assert_eq!(retried, durable_write(&artifact_path, artifact_len));
    assert!(matches!(
        events(&mut cache).as_slice(),
        [Tier1Event::CompressionSucceeded { .. }]
    ));
    let metrics = cache.metrics();
    assert_eq!(metrics.compression_retries, 1);
    assert_eq!(metrics.compressions, 1);
}

#[test]
fn compression_retries_exhausted_fail_with_growing_delays() {
    let key = key("orders", 1);
    let mut cache = new_cache(test_config());
    cache.enqueue_compression(0, key.clone(), 4096).unwrap();
    let mut now_ms = 0;
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let failed_at_ms = now_ms;
        let request = step_with(&mut cache, now_ms, disk_failed(DiskErrorKind::Io));
        assert!(
            request.starts_with("read "),
            "attempt {attempt} re-reads: {request}"
        );
        let all = events(&mut cache);
        assert!(
            matches!(all.first(), Some(Tier1Event::CompressionStarted { attempt: a, .. }) if *a == attempt),
            "{all:?}"
        );
        match all.last().unwrap() {
            Tier1Event::CompressionRetryScheduled {
                attempt: failed,
                delay_ms,
                ..
            } => {
                assert_eq!(*failed, attempt);
                delays.push(*delay_ms);
                now_ms = cache.poll_timeout().unwrap();
                assert_eq!(now_ms, failed_at_ms + delay_ms);
                cache.handle_timeout(now_ms);
            }
            Tier1Event::CompressionFailed {
                attempts, reason, ..
            } => {
                assert_eq!(attempt, 3);
                assert_eq!(*attempts, 3);
                assert_eq!(reason.reason_code(), ReasonCode::IoError);
                assert_eq!(
                    reason.to_string(),
                    "read_segment: disk error Io",
                    "the reason names the step"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays.len(), 2);
    assert!((25..=50).contains(&delays[0]), "{delays:?}");
    assert!((50..=100).contains(&delays[1]), "{delays:?}");
    assert_eq!(cache.poll_timeout(), None);
    assert!(!cache.is_compressing(&key));
    assert_eq!(cache.artifact(&key), None);
    let metrics = cache.metrics();
    assert_eq!(metrics.compression_failures, 1);
    assert_eq!(metrics.compression_retries, 2);
    assert_eq!(metrics.compression_queue_depth, 0);
    assert_eq!(cache.residency(&key), Some(Residency::ResidentInTier0));
    // The segment can be compressed again later.
    cache.enqueue_compression(now_ms, key, 4096).unwrap();
}

#[test]
fn a_short_read_or_a_refused_segment_is_retried_from_the_read() {
    let key = key("orders", 2);
    let (mut world, segment) = world_with_segment(&key);
    let mut cache = new_cache(test_config());
    let length = segment.len() as u64;
    cache.enqueue_compression(0, key.clone(), length).unwrap();
    let short = IoCompletion::Disk(DiskCompletion::Read(Bytes::from(vec![0u8; 10])));
    step_with(&mut cache, 0, short);
    assert!(matches!(
        events(&mut cache).last(),
        Some(Tier1Event::CompressionRetryScheduled {
            reason: Tier1Failure::ShortRead {
                expected_bytes,
                read_bytes: 10,
                ..
            },
            ..
        }) if *expected_bytes == length
    ));
    cache.handle_timeout(cache.poll_timeout().unwrap());
    step(&mut cache, &mut world, 100);
    let refused = IoCompletion::Cpu(CpuResult::Failed {
        reason: "bad footer".to_owned(),
    });
    assert_eq!(
        step_with(&mut cache, 100, refused),
        format!("compress +{length}")
    );
    let timeout = cache.poll_timeout().unwrap();
    cache.handle_timeout(timeout);
    assert!(
        step(&mut cache, &mut world, timeout).starts_with("read "),
        "a refused compression starts over from the read"
    );
}

// ---- Budget and eviction ----

/// Registers an uploaded-or-not artifact of `bytes` (with a file in `world`).
fn add_artifact(
    cache: &mut Tier1Cache,
    world: &mut World,
    now_ms: u64,
    key: &SegmentKey,
    bytes: u64,
) {
    world.files.insert(
        names::artifact_path(&key.stream, key.segment_id),
        vec![1; bytes as usize],
    );
    cache
        .register_artifact(now_ms, key.clone(), bytes, false)
        .unwrap();
    cache.check_invariants();
}

#[test]
fn eviction_waits_for_mark_uploaded_and_takes_the_least_recently_used() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let [a, b, c, d] = [0, 1, 2, 3].map(|id| key("s", id));
    for (now_ms, artifact_key) in [&a, &b, &c].into_iter().enumerate() {
        add_artifact(
            &mut cache,
            &mut world,
            now_ms as u64,
            artifact_key,
            400 * KIB,
        );
    }
    assert!(
        poll_all(&mut cache).is_empty(),
        "nothing uploaded: nothing evicted"
    );
    assert_eq!(cache.metrics().over_budget_bytes, 1200 * KIB - MIB);
    cache.touch(3, &a).unwrap();
    // Only c is in Tier 2: it goes, though a and b are older.
    cache.mark_uploaded(&c);
    let artifact_c = names::artifact_path(&c.stream, c.segment_id);
    assert_eq!(
        step(&mut cache, &mut world, 4),
        format!("remove {artifact_c}")
    );
    assert!(
        events(&mut cache).is_empty(),
        "evicted only after the dir fsync"
    );
    assert_eq!(
        step(&mut cache, &mut world, 4),
        format!("sync_dir {}", names::tier1_dir(&c.stream))
    );
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::Evicted {
            key: c.clone(),
            bytes: 400 * KIB,
            dir_synced: true
        }]
    );
    assert!(!world.files.contains_key(&artifact_c));
    assert_eq!(cache.artifact(&c), None);
    assert_eq!(cache.residency(&c), Some(Residency::UploadedToTier2));

    // a and b go to Tier 2 while within budget: nothing to evict yet.
    cache.mark_uploaded(&a);
    cache.mark_uploaded(&b);
    assert!(poll_all(&mut cache).is_empty());
    assert_eq!(
        cache.eviction_order().cloned().collect::<Vec<_>>(),
        vec![b.clone(), a.clone()],
        "least recently used first"
    );
    // d pushes the bytes over: the LRU among the evictable goes (b, accessed at 1,
    // not a, touched at 3; d is not in Tier 2).
    add_artifact(&mut cache, &mut world, 5, &d, 400 * KIB);
    let artifact_b = names::artifact_path(&b.stream, b.segment_id);
    assert_eq!(
        step(&mut cache, &mut world, 6),
        format!("remove {artifact_b}")
    );
    step(&mut cache, &mut world, 6);
    assert!(poll_all(&mut cache).is_empty(), "back within budget");
    let metrics = cache.metrics();
    assert_eq!(metrics.evictions, 2);
    assert_eq!(metrics.total_bytes, 800 * KIB);
    assert_eq!(metrics.over_budget_bytes, 0);
}

#[test]
fn over_budget_with_nothing_evictable_keeps_every_artifact() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let keys: Vec<SegmentKey> = (0..4).map(|id| key("s", id)).collect();
    for artifact_key in &keys {
        add_artifact(&mut cache, &mut world, 0, artifact_key, 600 * KIB);
    }
    // One is in Tier 2 but a hydration reads it: still not evictable.
    cache.mark_uploaded(&keys[0]);
    assert_eq!(cache.residency(&keys[0]), Some(Residency::UploadedToTier2));
    let requests = poll_all(&mut cache);
    assert_eq!(
        requests.len(),
        1,
        "the uploaded one is evicted: {requests:?}"
    );
    let (id, request) = &requests[0];
    cache.handle_completion(1, *id, world.execute(request));
    let (id, request) = one_request(&mut cache);
    cache.handle_completion(1, id, world.execute(&request));
    cache
        .request_hydration(2, keys[1].clone(), HydrationPriority(0))
        .unwrap();
    cache.mark_uploaded(&keys[1]);
    let requests = poll_all(&mut cache);
    assert_eq!(requests.len(), 1, "only the hydration's read: {requests:?}");
    assert!(describe(&requests[0].1).starts_with("read "));
    assert!(cache.artifact(&keys[1]).unwrap().hydrating);
    cache.check_invariants();
    let metrics = cache.metrics();
    assert_eq!(metrics.total_bytes, 1800 * KIB);
    assert_eq!(metrics.over_budget_bytes, 1800 * KIB - MIB);
    for artifact_key in &keys[1..] {
        assert!(
            cache.artifact(artifact_key).is_some(),
            "{artifact_key} kept"
        );
    }
}

#[test]
fn a_failed_removal_backs_off_then_gives_up_keeping_the_artifact() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let a = key("s", 0);
    add_artifact(&mut cache, &mut world, 0, &a, 2 * MIB);
    cache.mark_uploaded(&a);
    let mut now_ms = 0;
    for attempt in 1..=3u32 {
        let request = step_with(&mut cache, now_ms, disk_failed(DiskErrorKind::Io));
        assert!(request.starts_with("remove "), "{request}");
        let all = events(&mut cache);
        let [
            Tier1Event::EvictionFailed {
                attempt: failed,
                retry_in_ms,
                ..
            },
        ] = all.as_slice()
        else {
            panic!("{all:?}");
        };
        assert_eq!(*failed, attempt);
        let state = cache.artifact(&a).unwrap();
        assert!(!state.evicting && !state.evictable);
        assert!(poll_all(&mut cache).is_empty());
        if attempt < 3 {
            let delay_ms = retry_in_ms.unwrap();
            now_ms = cache.poll_timeout().unwrap();
            cache.handle_timeout(now_ms);
            assert!(now_ms >= delay_ms);
        } else {
            assert_eq!(*retry_in_ms, None);
            assert_eq!(cache.poll_timeout(), None);
        }
    }
    cache.handle_timeout(now_ms + 1_000_000);
    assert!(poll_all(&mut cache).is_empty(), "never tried again");
    assert_eq!(cache.metrics().over_budget_bytes, MIB);
    assert!(
        world
            .files
            .contains_key(&names::artifact_path(&a.stream, a.segment_id))
    );
}

#[test]
fn a_failed_dir_fsync_still_evicts_and_says_so() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let a = key("s", 0);
    add_artifact(&mut cache, &mut world, 0, &a, 2 * MIB);
    cache.mark_uploaded(&a);
    step(&mut cache, &mut world, 0);
    step_with(&mut cache, 0, disk_failed(DiskErrorKind::Io));
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::Evicted {
            key: a,
            bytes: 2 * MIB,
            dir_synced: false
        }]
    );
    assert_eq!(cache.metrics().total_bytes, 0);
}

// ---- Hydration ----

#[test]
fn hydration_from_tier1_decompresses_into_a_durable_segment_file() {
    let key = key("orders", 9);
    let (mut world, segment) = world_with_segment(&key);
    let mut cache = new_cache(test_config());
    let artifact = compress_fully(&mut cache, &mut world, &key);
    world
        .files
        .remove(&names::segment_path(&key.stream, key.segment_id));
    cache.note_evicted_from_tier0(&key);
    assert_eq!(cache.residency(&key), Some(Residency::WarmInTier1));
    assert_eq!(cache.metrics().residency.warm_in_tier1, 1);

    assert_eq!(
        cache
            .request_hydration(100, key.clone(), HydrationPriority(1))
            .unwrap(),
        HydrationRequested::Queued
    );
    assert_eq!(cache.residency(&key), Some(Residency::StagedForTier0));
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::HydrationStarted {
            key: key.clone(),
            source: HydrationSource::Tier1,
            attempt: 1
        }]
    );
    let artifact_path = names::artifact_path(&key.stream, key.segment_id);
    let segment_path = names::segment_path(&key.stream, key.segment_id);
    let mut done = vec![
        step(&mut cache, &mut world, 110),
        step(&mut cache, &mut world, 120),
    ];
    for _ in 0..5 {
        assert!(
            events(&mut cache).is_empty(),
            "no success before the dir fsync"
        );
        done.push(step(&mut cache, &mut world, 130));
    }
    let mut expected = vec![
        format!("read {artifact_path} @0 +{}", artifact.len()),
        format!("decompress +{}", artifact.len()),
    ];
    expected.extend(durable_write(&segment_path, segment.len() as u64));
    assert_eq!(done, expected);
    assert_eq!(
        world.files[&segment_path], segment,
        "the segment is restored"
    );
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::HydrationSucceeded {
            key: key.clone(),
            source: HydrationSource::Tier1,
            bytes: segment.len() as u64,
            latency_ms: 30
        }]
    );
    assert_eq!(cache.residency(&key), Some(Residency::ResidentInTier0));
    let state = cache.artifact(&key).unwrap();
    assert!(!state.hydrating);
    assert_eq!(state.last_access_ms, 110, "a read is an access");
    let metrics = cache.metrics();
    assert_eq!(metrics.hydrations, 1);
    assert_eq!(metrics.hydration_latency_samples, 1);
    assert_eq!(metrics.hydration_latency_p99_ms, 30);
    assert_eq!(metrics.residency.resident_in_tier0, 1);
    assert_eq!(metrics.residency.warm_in_tier1, 0);
}

#[test]
fn hydration_from_tier2_validates_stores_the_artifact_then_writes_the_segment() {
    let key = key("orders", 4);
    let segment = sealed_segment(4, 30);
    let artifact = real_artifact(&segment, 4096);
    let mut world = World::new(CpuMode::Real);
    let object_key = names::segment_object_key(&key.stream, key.segment_id);
    world
        .objects
        .insert(object_key.clone(), Bytes::from(artifact.clone()));
    let mut cache = new_cache(test_config());
    cache.mark_uploaded(&key);
    assert_eq!(cache.residency(&key), Some(Residency::UploadedToTier2));
    cache
        .request_hydration(0, key.clone(), HydrationPriority(0))
        .unwrap();
    let artifact_path = names::artifact_path(&key.stream, key.segment_id);
    let segment_path = names::segment_path(&key.stream, key.segment_id);
    let mut done = vec![
        step(&mut cache, &mut world, 0),
        step(&mut cache, &mut world, 0),
    ];
    for _ in 0..5 {
        assert_eq!(cache.artifact(&key), None, "not warm before durable");
        done.push(step(&mut cache, &mut world, 0));
    }
    let stored = events(&mut cache);
    assert_eq!(
        stored.last(),
        Some(&Tier1Event::ArtifactStored {
            key: key.clone(),
            bytes: artifact.len() as u64
        })
    );
    for _ in 0..5 {
        done.push(step(&mut cache, &mut world, 40));
    }
    let mut expected = vec![
        format!("get {object_key}"),
        format!("decompress +{}", artifact.len()),
    ];
    expected.extend(durable_write(&artifact_path, artifact.len() as u64));
    expected.extend(durable_write(&segment_path, segment.len() as u64));
    assert_eq!(done, expected);
    assert_eq!(world.files[&artifact_path], artifact);
    assert_eq!(world.files[&segment_path], segment);
    assert!(matches!(
        events(&mut cache).as_slice(),
        [Tier1Event::HydrationSucceeded {
            source: HydrationSource::Tier2,
            latency_ms: 40,
            ..
        }]
    ));
    let state = cache.artifact(&key).unwrap();
    assert!(state.uploaded && state.evictable && !state.hydrating);
    assert_eq!(cache.residency(&key), Some(Residency::ResidentInTier0));
}

#[test]
fn tier2_not_found_is_not_retried_and_needs_recovery() {
    let key = key("orders", 4);
    let mut cache = new_cache(test_config());
    cache.mark_uploaded(&key);
    cache
        .request_hydration(0, key.clone(), HydrationPriority(0))
        .unwrap();
    let mut world = World::new(CpuMode::Real);
    assert!(step(&mut cache, &mut world, 3).starts_with("get "));
    let all = events(&mut cache);
    assert_eq!(
        all.last(),
        Some(&Tier1Event::HydrationFailed {
            key: key.clone(),
            source: HydrationSource::Tier2,
            reason: Tier1Failure::Object {
                kind: ObjectErrorKind::NotFound
            },
            attempts: 1
        })
    );
    assert_eq!(all.last().unwrap().name(), "tier1_hydration_failed");
    assert_eq!(cache.poll_timeout(), None, "no retry timer");
    assert!(poll_all(&mut cache).is_empty());
    assert_eq!(cache.residency(&key), Some(Residency::NeedsRecovery));
    let metrics = cache.metrics();
    assert_eq!(metrics.residency.needs_recovery, 1);
    assert_eq!(metrics.hydration_failures, 1);
    assert_eq!(metrics.hydration_retries, 0);
    assert_eq!(metrics.hydration_latency_samples, 0);
}

#[test]
fn transient_tier2_errors_retry_on_timers_then_recover_or_fail() {
    let key = key("orders", 4);
    let segment = sealed_segment(4, 10);
    let mut world = World::new(CpuMode::Real);
    world.objects.insert(
        names::segment_object_key(&key.stream, key.segment_id),
        Bytes::from(real_artifact(&segment, 4096)),
    );
    let mut cache = new_cache(test_config());
    cache
        .request_hydration(0, key.clone(), HydrationPriority(0))
        .unwrap();
    let mut now_ms = 0;
    for (attempt, kind) in [
        (1, ObjectErrorKind::Throttled),
        (2, ObjectErrorKind::Transient),
    ] {
        let failed_at_ms = now_ms;
        step_with(&mut cache, now_ms, object_failed(kind));
        let all = events(&mut cache);
        let Some(
            event @ Tier1Event::HydrationRetryScheduled {
                attempt: failed,
                delay_ms,
                ..
            },
        ) = all.last()
        else {
            panic!("{all:?}");
        };
        assert!(event.name().starts_with("tier1_hydration_retry_"));
        assert_eq!(event.target(), "aof2::tier1");
        assert_eq!(*failed, attempt);
        let backoff = 50 << (attempt - 1);
        assert!((backoff / 2..=backoff).contains(delay_ms), "{delay_ms}");
        assert_eq!(
            cache.metrics().hydration_queue_depth,
            1,
            "backing off counts"
        );
        now_ms = cache.poll_timeout().unwrap();
        assert_eq!(now_ms, failed_at_ms + delay_ms);
        cache.handle_timeout(now_ms);
        assert!(matches!(
            events(&mut cache).as_slice(),
            [Tier1Event::HydrationStarted { attempt: next, .. }] if *next == attempt + 1
        ));
    }
    run_until_idle(&mut cache, &mut world, now_ms);
    assert!(matches!(
        events(&mut cache).last(),
        Some(Tier1Event::HydrationSucceeded { latency_ms, .. }) if *latency_ms == now_ms
    ));
    assert_eq!(cache.metrics().hydration_retries, 2);

    // Three failures in a row: failed for good, then a new request recovers it.
    let other = super::tests::key("orders", 5);
    cache
        .request_hydration(now_ms, other.clone(), HydrationPriority(0))
        .unwrap();
    for _ in 0..3 {
        step_with(
            &mut cache,
            now_ms,
            object_failed(ObjectErrorKind::Transient),
        );
        if let Some(deadline_ms) = cache.poll_timeout() {
            now_ms = deadline_ms;
            cache.handle_timeout(now_ms);
        }
    }
    assert!(matches!(
        events(&mut cache).last(),
        Some(Tier1Event::HydrationFailed { attempts: 3, .. })
    ));
    assert_eq!(cache.residency(&other), Some(Residency::NeedsRecovery));
    world.objects.insert(
        names::segment_object_key(&other.stream, other.segment_id),
        Bytes::from(real_artifact(&sealed_segment(5, 3), 4096)),
    );
    cache
        .request_hydration(now_ms, other.clone(), HydrationPriority(0))
        .unwrap();
    run_until_idle(&mut cache, &mut world, now_ms);
    assert_eq!(cache.residency(&other), Some(Residency::ResidentInTier0));
    assert_eq!(cache.metrics().residency.needs_recovery, 0);
}

#[test]
fn a_missing_warm_file_falls_back_to_tier2_within_the_attempt() {
    let key = key("orders", 6);
    let segment = sealed_segment(6, 12);
    let artifact = real_artifact(&segment, 4096);
    let mut world = World::new(CpuMode::Real);
    world.objects.insert(
        names::segment_object_key(&key.stream, key.segment_id),
        Bytes::from(artifact.clone()),
    );
    let mut cache = new_cache(test_config());
    cache
        .register_artifact(0, key.clone(), artifact.len() as u64, true)
        .unwrap();
    cache
        .request_hydration(0, key.clone(), HydrationPriority(0))
        .unwrap();
    // The file is not in `world`: the read finds nothing.
    assert!(step(&mut cache, &mut world, 1).starts_with("read "));
    assert_eq!(
        events(&mut cache),
        vec![
            Tier1Event::HydrationStarted {
                key: key.clone(),
                source: HydrationSource::Tier1,
                attempt: 1
            },
            Tier1Event::ArtifactMissing {
                key: key.clone(),
                bytes: artifact.len() as u64
            },
            Tier1Event::HydrationStarted {
                key: key.clone(),
                source: HydrationSource::Tier2,
                attempt: 1
            },
        ]
    );
    assert_eq!(cache.artifact(&key), None);
    assert_eq!(cache.metrics().total_bytes, 0);
    assert!(step(&mut cache, &mut world, 1).starts_with("get "));
    run_until_idle(&mut cache, &mut world, 2);
    let all = events(&mut cache);
    assert!(matches!(
        all.first(),
        Some(Tier1Event::ArtifactStored { .. })
    ));
    assert!(matches!(
        all.last(),
        Some(Tier1Event::HydrationSucceeded {
            source: HydrationSource::Tier2,
            ..
        })
    ));
    assert_eq!(cache.metrics().hydration_retries, 0);
    assert_eq!(
        world.files[&names::segment_path(&key.stream, key.segment_id)],
        segment
    );
}

#[test]
fn a_corrupt_warm_file_is_retried_from_tier2_without_storing_over_it() {
    let key = key("orders", 6);
    let segment = sealed_segment(6, 12);
    let artifact = real_artifact(&segment, 4096);
    let mut world = World::new(CpuMode::Real);
    world.objects.insert(
        names::segment_object_key(&key.stream, key.segment_id),
        Bytes::from(artifact.clone()),
    );
    let artifact_path = names::artifact_path(&key.stream, key.segment_id);
    let mut corrupt = artifact.clone();
    corrupt[10] ^= 0xFF;
    world.files.insert(artifact_path.clone(), corrupt);
    let mut cache = new_cache(test_config());
    cache
        .register_artifact(0, key.clone(), artifact.len() as u64, true)
        .unwrap();
    cache
        .request_hydration(0, key.clone(), HydrationPriority(0))
        .unwrap();
    step(&mut cache, &mut world, 0); // read
    step(&mut cache, &mut world, 0); // decompress: fails
    let all = events(&mut cache);
    assert!(
        all.iter()
            .any(|event| matches!(event, Tier1Event::ArtifactCorrupt { .. })),
        "{all:?}"
    );
    assert!(matches!(
        all.last(),
        Some(Tier1Event::HydrationRetryScheduled {
            source: HydrationSource::Tier1,
            reason: Tier1Failure::Cpu {
                step: IoStep::Decompress,
                ..
            },
            ..
        })
    ));
    let now_ms = cache.poll_timeout().unwrap();
    cache.handle_timeout(now_ms);
    let done = run_until_idle(&mut cache, &mut world, now_ms);
    let segment_path = names::segment_path(&key.stream, key.segment_id);
    let mut expected = vec![
        format!(
            "get {}",
            names::segment_object_key(&key.stream, key.segment_id)
        ),
        format!("decompress +{}", artifact.len()),
    ];
    expected.extend(durable_write(&segment_path, segment.len() as u64));
    assert_eq!(
        done, expected,
        "the artifact entry is kept, not overwritten"
    );
    assert_eq!(world.files[&segment_path], segment);
    assert!(matches!(
        events(&mut cache).as_slice(),
        [
            Tier1Event::HydrationStarted {
                source: HydrationSource::Tier2,
                attempt: 2,
                ..
            },
            Tier1Event::HydrationSucceeded {
                source: HydrationSource::Tier2,
                ..
            }
        ]
    ));
}

#[test]
fn a_failed_segment_write_is_redone_from_memory_into_a_fresh_temp_file() {
    let key = key("orders", 8);
    let mut world = World::new(CpuMode::Real);
    let segment = sealed_segment(8, 5);
    world.objects.insert(
        names::segment_object_key(&key.stream, key.segment_id),
        Bytes::from(real_artifact(&segment, 4096)),
    );
    let mut cache = new_cache(test_config());
    cache
        .request_hydration(0, key.clone(), HydrationPriority(0))
        .unwrap();
    for _ in 0..7 {
        step(&mut cache, &mut world, 0); // get, decompress, store the artifact
    }
    step(&mut cache, &mut world, 0); // create the segment temp file
    step(&mut cache, &mut world, 0); // write it
    let sync = step_with(&mut cache, 0, disk_failed(DiskErrorKind::Io));
    assert!(sync.starts_with("sync "), "{sync}");
    let now_ms = cache.poll_timeout().unwrap();
    cache.handle_timeout(now_ms);
    let done = run_until_idle(&mut cache, &mut world, now_ms);
    let segment_path = names::segment_path(&key.stream, key.segment_id);
    assert_eq!(done, durable_write(&segment_path, segment.len() as u64));
    assert_eq!(world.files[&segment_path], segment);
}

#[test]
fn hydrations_start_by_priority_then_arrival() {
    let config = Tier1Config {
        hydration_concurrency: 1,
        ..test_config()
    };
    let mut cache = new_cache(config);
    let [a, b, c, d] = [0, 1, 2, 3].map(|id| key("s", id));
    cache
        .request_hydration(0, a.clone(), HydrationPriority(0))
        .unwrap();
    let (first_id, first) = one_request(&mut cache);
    assert_eq!(
        describe(&first),
        format!("get {}", names::segment_object_key(&a.stream, a.segment_id))
    );
    for (queued_key, priority) in [(&b, 1), (&c, 1), (&d, 2)] {
        cache
            .request_hydration(0, queued_key.clone(), HydrationPriority(priority))
            .unwrap();
    }
    assert!(poll_all(&mut cache).is_empty(), "one slot, taken");
    assert_eq!(
        cache
            .request_hydration(0, c.clone(), HydrationPriority(3))
            .unwrap(),
        HydrationRequested::AlreadyPending
    );
    assert_eq!(cache.metrics().hydration_queue_depth, 3);
    cache.handle_completion(0, first_id, object_failed(ObjectErrorKind::NotFound));
    let mut order = Vec::new();
    for _ in 0..3 {
        let (id, request) = one_request(&mut cache);
        order.push(describe(&request));
        cache.handle_completion(0, id, object_failed(ObjectErrorKind::NotFound));
        cache.check_invariants();
    }
    let expected: Vec<String> = [&c, &d, &b]
        .iter()
        .map(|k| format!("get {}", names::segment_object_key(&k.stream, k.segment_id)))
        .collect();
    assert_eq!(order, expected, "raised c first, then d (2), then b (1)");
}

#[test]
fn concurrency_bounds_running_jobs_and_the_rest_queue() {
    let config = Tier1Config {
        hydration_concurrency: 2,
        compression_concurrency: 1,
        ..test_config()
    };
    let mut cache = new_cache(config);
    for id in 0..5 {
        cache
            .request_hydration(0, key("h", id), HydrationPriority(0))
            .unwrap();
    }
    for id in 0..3 {
        cache.enqueue_compression(0, key("c", id), 4096).unwrap();
    }
    let requests = poll_all(&mut cache);
    let gets = requests
        .iter()
        .filter(|(_, request)| describe(request).starts_with("get "))
        .count();
    let reads = requests
        .iter()
        .filter(|(_, request)| describe(request).starts_with("read "))
        .count();
    assert_eq!((gets, reads, requests.len()), (2, 1, 3));
    let metrics = cache.metrics();
    assert_eq!(metrics.hydrations_in_flight, 2);
    assert_eq!(metrics.hydration_queue_depth, 3);
    assert_eq!(metrics.compressions_in_flight, 1);
    assert_eq!(metrics.compression_queue_depth, 2);
    // Finishing one of each starts exactly one more of each.
    let mut world = World::new(CpuMode::Real);
    for (id, request) in requests.iter().take(2) {
        cache.handle_completion(1, *id, world.execute(request));
    }
    let next = poll_all(&mut cache);
    assert_eq!(next.len(), 2, "{next:?}");
    let metrics = cache.metrics();
    assert_eq!(metrics.hydrations_in_flight, 2);
    assert_eq!(metrics.compressions_in_flight, 1);
    cache.check_invariants();
}

#[test]
fn a_hydration_waits_for_its_artifact_removal_to_finish() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let a = key("s", 0);
    add_artifact(&mut cache, &mut world, 0, &a, 2 * MIB);
    cache.mark_uploaded(&a);
    let (remove_id, remove) = one_request(&mut cache);
    assert!(describe(&remove).starts_with("remove "));
    assert_eq!(
        cache.touch(1, &a),
        Err(Tier1Error::ArtifactEvicting { key: a.clone() })
    );
    cache
        .request_hydration(1, a.clone(), HydrationPriority(9))
        .unwrap();
    assert!(poll_all(&mut cache).is_empty(), "waits for the removal");
    assert_eq!(cache.metrics().hydration_queue_depth, 1);
    cache.handle_completion(2, remove_id, world.execute(&remove));
    assert_eq!(step(&mut cache, &mut world, 2), "sync_dir streams/s/tier1");
    let next = poll_all(&mut cache);
    assert_eq!(next.len(), 1);
    assert!(describe(&next[0].1).starts_with("get "), "{next:?}");
}

#[test]
fn latency_percentiles_use_nearest_rank_over_a_bounded_window() {
    assert_eq!(percentile(&[], 99), 0);
    assert_eq!(percentile(&[7], 50), 7);
    let hundred: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&hundred, 50), 50);
    assert_eq!(percentile(&hundred, 90), 90);
    assert_eq!(percentile(&hundred, 99), 99);

    // Through the machine: hydration i takes i ms; the window keeps the last 1024.
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Synthetic);
    let count = u64::from(TIER1_HYDRATION_LATENCY_SAMPLES_MAX) + 76;
    let mut now_ms = 0;
    for id in 1..=count {
        let hydrated = key("l", id);
        let mut segment = SYNTHETIC_SEGMENT_MAGIC.to_vec();
        segment.extend_from_slice(&id.to_le_bytes());
        let mut object = SYNTHETIC_ARTIFACT_MAGIC.to_vec();
        object.extend_from_slice(&segment);
        world.objects.insert(
            names::segment_object_key(&hydrated.stream, hydrated.segment_id),
            Bytes::from(object),
        );
        cache
            .request_hydration(now_ms, hydrated, HydrationPriority(0))
            .unwrap();
        now_ms += id;
        // Not `run_until_idle`: checking invariants after every step is quadratic here.
        while let Some((io, request)) = cache.poll_request() {
            let completion = world.execute(&request);
            cache.handle_completion(now_ms, io, completion);
        }
        assert!(matches!(
            events(&mut cache).last(),
            Some(Tier1Event::HydrationSucceeded { latency_ms, .. }) if *latency_ms == id
        ));
    }
    cache.check_invariants();
    let metrics = cache.metrics();
    let window = u64::from(TIER1_HYDRATION_LATENCY_SAMPLES_MAX);
    assert_eq!(metrics.hydration_latency_samples, window);
    let oldest = count - window + 1; // 77
    assert_eq!(metrics.hydration_latency_p50_ms, oldest + 511);
    assert_eq!(metrics.hydration_latency_p90_ms, oldest + 921);
    assert_eq!(metrics.hydration_latency_p99_ms, oldest + 1013);
    assert_eq!(metrics.hydrations, count);
}

// ---- Inputs that do not fit ----

#[test]
fn queue_limits_return_typed_errors() {
    let mut cache = new_cache(test_config());
    for id in 0..u64::from(TIER1_COMPRESSION_QUEUE_MAX) {
        cache.enqueue_compression(0, key("c", id), 4096).unwrap();
    }
    assert_eq!(
        cache.enqueue_compression(0, key("c", u64::MAX), 4096),
        Err(Tier1Error::CompressionQueueFull {
            limit: TIER1_COMPRESSION_QUEUE_MAX
        })
    );
    for id in 0..u64::from(TIER1_HYDRATION_QUEUE_MAX) {
        cache
            .request_hydration(0, key("h", id), HydrationPriority(0))
            .unwrap();
    }
    let error = cache
        .request_hydration(0, key("h", u64::MAX), HydrationPriority(0))
        .unwrap_err();
    assert_eq!(
        error,
        Tier1Error::HydrationQueueFull {
            limit: TIER1_HYDRATION_QUEUE_MAX
        }
    );
    assert_eq!(error.would_block(), Some(BackpressureKind::Hydration));
    assert_eq!(
        cache
            .request_hydration(0, key("h", 0), HydrationPriority(0))
            .unwrap(),
        HydrationRequested::AlreadyPending,
        "a pending one is coalesced even when the queue is full"
    );
    cache.check_invariants();
    let metrics = cache.metrics();
    assert_eq!(
        metrics.compression_queue_depth + metrics.compressions_in_flight,
        u64::from(TIER1_COMPRESSION_QUEUE_MAX)
    );
}

#[test]
fn requests_that_do_not_fit_the_segment_state_are_errors() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let a = key("s", 0);
    assert!(matches!(
        cache.enqueue_compression(0, a.clone(), 10),
        Err(Tier1Error::SegmentSize { bytes: 10, .. })
    ));
    assert!(matches!(
        cache.enqueue_compression(0, a.clone(), SEGMENT_BYTES_MAX + 1),
        Err(Tier1Error::SegmentSize { .. })
    ));
    cache.set_resident_in_tier0(&a);
    assert_eq!(
        cache.request_hydration(0, a.clone(), HydrationPriority(0)),
        Err(Tier1Error::ResidentInTier0 { key: a.clone() })
    );
    cache.enqueue_compression(0, a.clone(), 4096).unwrap();
    assert_eq!(
        cache.enqueue_compression(0, a.clone(), 4096),
        Err(Tier1Error::CompressionPending { key: a.clone() })
    );
    assert_eq!(
        cache.register_artifact(0, a.clone(), 10, false),
        Err(Tier1Error::CompressionPending { key: a.clone() })
    );
    assert_eq!(
        cache.forget_segment(&a),
        Err(Tier1Error::Busy { key: a.clone() })
    );
    let b = key("s", 1);
    assert_eq!(
        cache.touch(0, &b),
        Err(Tier1Error::NotPresent { key: b.clone() })
    );
    assert_eq!(
        cache.register_artifact(0, b.clone(), 0, false),
        Err(Tier1Error::EmptyArtifact { key: b.clone() })
    );
    add_artifact(&mut cache, &mut world, 0, &b, 10);
    assert_eq!(cache.residency(&b), Some(Residency::WarmInTier1));
    assert_eq!(
        cache.register_artifact(0, b.clone(), 10, false),
        Err(Tier1Error::ArtifactPresent { key: b.clone() })
    );
    assert_eq!(
        cache.enqueue_compression(0, b.clone(), 4096),
        Err(Tier1Error::ArtifactPresent { key: b.clone() })
    );
    let c = key("s", 2);
    cache.mark_uploaded(&c);
    assert_eq!(
        cache.enqueue_compression(0, c.clone(), 4096),
        Err(Tier1Error::NotInTier0 {
            key: c.clone(),
            residency: Residency::UploadedToTier2
        })
    );
    cache
        .request_hydration(0, c.clone(), HydrationPriority(0))
        .unwrap();
    assert_eq!(
        cache.register_artifact(0, c.clone(), 10, true),
        Err(Tier1Error::HydrationPending { key: c.clone() })
    );
    let d = key("s", 3);
    cache.set_resident_in_tier0(&d);
    cache.forget_segment(&d).unwrap();
    assert_eq!(cache.residency(&d), None);
    cache.check_invariants();
}

#[test]
fn residency_follows_the_segment_and_the_gauge_counts_it() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let a = key("s", 0);
    cache.set_resident_in_tier0(&a);
    add_artifact(&mut cache, &mut world, 0, &a, 10);
    assert_eq!(cache.residency(&a), Some(Residency::ResidentInTier0));
    cache.note_evicted_from_tier0(&a);
    assert_eq!(cache.residency(&a), Some(Residency::WarmInTier1));
    cache.mark_uploaded(&a);
    assert_eq!(cache.residency(&a), Some(Residency::UploadedToTier2));
    cache.mark_uploaded(&a);
    let b = key("s", 1);
    cache.set_resident_in_tier0(&b);
    cache.mark_uploaded(&b);
    assert_eq!(cache.residency(&b), Some(Residency::ResidentInTier0));
    cache.note_evicted_from_tier0(&b);
    assert_eq!(cache.residency(&b), Some(Residency::UploadedToTier2));
    cache
        .request_hydration(0, b.clone(), HydrationPriority(0))
        .unwrap();
    let gauge = cache.metrics().residency;
    assert_eq!(
        gauge,
        ResidencyGauge {
            resident_in_tier0: 0,
            staged_for_tier0: 1,
            warm_in_tier1: 0,
            uploaded_to_tier2: 1,
            needs_recovery: 0
        }
    );
    assert_eq!(gauge.total(), 2);
    let text = toml::to_string(&cache.metrics()).unwrap();
    for field in [
        "hydration_queue_depth",
        "hydration_latency_p99_ms",
        "over_budget_bytes",
        "needs_recovery",
        "staged_for_tier0",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

#[test]
fn events_have_runbook_names_and_the_tier1_target() {
    let k = key("s", 0);
    let failure = Tier1Failure::Object {
        kind: ObjectErrorKind::Transient,
    };
    let cases = [
        (
            Tier1Event::HydrationRetryScheduled {
                key: k.clone(),
                source: HydrationSource::Tier2,
                attempt: 1,
                delay_ms: 30,
                reason: failure.clone(),
            },
            "tier1_hydration_retry_scheduled",
        ),
        (
            Tier1Event::HydrationFailed {
                key: k.clone(),
                source: HydrationSource::Tier2,
                reason: failure.clone(),
                attempts: 3,
            },
            "tier1_hydration_failed",
        ),
        (
            Tier1Event::CompressionStarted {
                key: k.clone(),
                attempt: 1,
            },
            "tier1_compression_started",
        ),
        (
            Tier1Event::Evicted {
                key: k.clone(),
                bytes: 1,
                dir_synced: true,
            },
            "tier1_artifact_evicted",
        ),
    ];
    for (event, name) in cases {
        assert_eq!(event.name(), name);
        assert_eq!(event.target(), LOG_TARGET_TIER1);
        assert_eq!(event.key(), &k);
    }
    assert_eq!(LOG_TARGET_TIER1, "aof2::tier1");
    assert_eq!(failure.reason_code(), ReasonCode::Timeout);
    assert!(failure.is_retryable());
    assert!(
        !Tier1Failure::Object {
            kind: ObjectErrorKind::NotFound
        }
        .is_retryable()
    );
    assert_eq!(HydrationSource::Tier2.tier(), Tier::Tier2);
}

// ---- Broken contracts panic ----

#[test]
#[should_panic(expected = "unknown request")]
fn a_completion_of_an_unknown_request_is_a_bug() {
    let mut cache = new_cache(test_config());
    cache.handle_completion(0, IoId(42), disk_failed(DiskErrorKind::Io));
}

#[test]
#[should_panic(expected = "wrong completion")]
fn a_completion_of_the_wrong_kind_is_a_bug() {
    let mut cache = new_cache(test_config());
    cache.enqueue_compression(0, key("s", 0), 4096).unwrap();
    let (id, _) = one_request(&mut cache);
    cache.handle_completion(0, id, object_failed(ObjectErrorKind::Transient));
}

#[test]
#[should_panic(expected = "before it was polled")]
fn a_completion_before_its_request_was_polled_is_a_bug() {
    let mut cache = new_cache(test_config());
    cache.enqueue_compression(0, key("s", 0), 4096).unwrap();
    cache.handle_completion(0, IoId(0), disk_failed(DiskErrorKind::Io));
}

#[test]
#[should_panic(expected = "unknown request")]
fn a_second_completion_of_one_request_is_a_bug() {
    let mut cache = new_cache(test_config());
    cache.enqueue_compression(0, key("s", 0), 4096).unwrap();
    let (id, _) = one_request(&mut cache);
    cache.handle_completion(0, id, disk_failed(DiskErrorKind::Io));
    cache.handle_completion(0, id, disk_failed(DiskErrorKind::Io));
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_going_backwards_is_a_bug() {
    let mut cache = new_cache(test_config());
    cache.handle_timeout(10);
    cache.handle_timeout(9);
}

#[test]
#[should_panic(expected = "no copy in Tier 1 or Tier 2")]
fn tier0_evicting_the_only_copy_is_a_bug() {
    let mut cache = new_cache(test_config());
    let a = key("s", 0);
    cache.set_resident_in_tier0(&a);
    cache.note_evicted_from_tier0(&a);
}

#[test]
fn the_smallest_budget_is_the_limit() {
    let config = Tier1Config {
        max_bytes: TIER1_MAX_BYTES_MIN,
        ..test_config()
    };
    new_cache(config).check_invariants();
}

#[test]
fn evict_now_removes_an_uploaded_artifact_within_budget_and_then_forgets_it() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let [a, b] = [0, 1].map(|id| key("s", id));
    add_artifact(&mut cache, &mut world, 0, &a, 100 * KIB);
    add_artifact(&mut cache, &mut world, 1, &b, 100 * KIB);
    assert!(poll_all(&mut cache).is_empty(), "well within budget");
    // Not in Tier 2 yet: refused, the artifact stays.
    assert!(matches!(
        cache.evict_now(2, &a),
        Err(Tier1Error::NotEvictable { .. })
    ));
    assert!(poll_all(&mut cache).is_empty());
    cache.mark_uploaded(&a);
    assert!(
        poll_all(&mut cache).is_empty(),
        "uploaded, still within budget"
    );
    assert_eq!(cache.evict_now(3, &a), Ok(true));
    cache.check_invariants();
    assert_eq!(cache.evict_now(3, &a), Ok(false), "already under way");
    let artifact_a = names::artifact_path(&a.stream, a.segment_id);
    assert_eq!(
        step(&mut cache, &mut world, 3),
        format!("remove {artifact_a}")
    );
    assert!(matches!(
        cache.forget_segment(&a),
        Err(Tier1Error::Busy { .. })
    ));
    step(&mut cache, &mut world, 3);
    assert_eq!(
        events(&mut cache),
        vec![Tier1Event::Evicted {
            key: a.clone(),
            bytes: 100 * KIB,
            dir_synced: true
        }]
    );
    cache.check_invariants();
    assert!(!world.files.contains_key(&artifact_a));
    assert_eq!(cache.evict_now(4, &a), Ok(false), "nothing held");
    cache.forget_segment(&a).unwrap();
    assert_eq!(cache.residency(&a), None);
    cache.check_invariants();
    assert_eq!(cache.metrics().artifacts, 1);
    assert_eq!(cache.metrics().evictions, 1);
}

#[test]
fn evict_now_after_a_failed_removal_waits_for_the_backoff() {
    let mut cache = new_cache(test_config());
    let mut world = World::new(CpuMode::Real);
    let a = key("s", 0);
    add_artifact(&mut cache, &mut world, 0, &a, 100 * KIB);
    cache.mark_uploaded(&a);
    assert_eq!(cache.evict_now(1, &a), Ok(true));
    let request = step_with(&mut cache, 1, disk_failed(DiskErrorKind::Io));
    assert!(request.starts_with("remove "), "{request}");
    assert!(matches!(
        events(&mut cache).as_slice(),
        [Tier1Event::EvictionFailed { attempt: 1, .. }]
    ));
    assert!(matches!(
        cache.evict_now(1, &a),
        Err(Tier1Error::NotEvictable { .. })
    ));
    let now_ms = cache.poll_timeout().unwrap();
    cache.handle_timeout(now_ms);
    assert!(
        poll_all(&mut cache).is_empty(),
        "within budget: no eviction of its own"
    );
    assert_eq!(cache.evict_now(now_ms, &a), Ok(true));
    run_until_idle(&mut cache, &mut world, now_ms);
    assert!(matches!(
        events(&mut cache).as_slice(),
        [Tier1Event::Evicted { .. }]
    ));
    cache.check_invariants();
}
