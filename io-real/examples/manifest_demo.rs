//! Writes a stream's history through every format of AOF2 on the local disk, then
//! replays it the way a restart does, and reads every record back cold.
//!
//! For each segment: the segment file is written and made durable (temp, fsync,
//! rename, dir fsync), compressed into a seekable artifact (verified by round trip)
//! stored durably in Tier 1, put into Tier 2 (on the embedded default, a local directory), and each transition
//! is journaled in the manifest log (`SegmentOpened`, `SealSegment`,
//! `CompressionStarted/Done`, `UploadStarted/Done`, `LocalEvicted` of the Tier 0
//! copy), committed with
//! the two-fsync protocol. Then the manifest is replayed from disk, its figures are
//! printed, and every record is read back from Tier 2 using only the artifact's tail
//! and one frame, and compared byte for byte with what was written.
//!
//! ```sh
//! cargo run --release -p aof2-io-real --example manifest_demo -- --records 20000
//! ```
//!
//! Run it twice with the same `--root` and the second run replays the first run's
//! manifest and continues the stream after it.

use aof2_core::SegmentId;
use aof2_core::artifact::{self, ArtifactIndex, TailDecode};
use aof2_core::cpu;
use aof2_core::io::{CpuJob, CpuResult, DiskCompletion, DiskRequest, LocalPath};
use aof2_core::limits::SEGMENT_HEADER_BYTES;
use aof2_core::manifest::record::{ManifestRecord, Tier};
use aof2_core::manifest::replay::{ReplayOutcome, Replayer};
use aof2_core::manifest::writer::{ManifestEvent, ManifestWriter, ManifestWriterConfig};
use aof2_core::manifest::{chunk, index::Lifecycle};
use aof2_core::names::{StreamName, artifact_path, manifest_dir, segment_object_key, segment_path};
use aof2_core::segment::{Record, SegmentDigest, SegmentHeader};
use aof2_io_real::disk::LocalDisk;
use bytes::Bytes;
use clap::Parser;
use std::error::Error;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(about = "Write, journal, replay and cold-read a stream on the embedded default")]
struct Arguments {
    /// Records to append.
    #[arg(long, default_value_t = 20_000)]
    records: u64,
    /// Bytes per record payload.
    #[arg(long, default_value_t = 256)]
    record_bytes: usize,
    /// Records per segment.
    #[arg(long, default_value_t = 4_000)]
    segment_records: u64,
    /// Stream name (`[A-Za-z0-9._-]`).
    #[arg(long, default_value = "demo")]
    stream: String,
    /// Store root; a fresh temporary directory (removed afterwards) when absent.
    #[arg(long)]
    root: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let arguments = Arguments::parse();
    let stream = StreamName::new(&arguments.stream)?;
    if arguments.segment_records == 0 {
        return Err("--segment-records must be at least 1".into());
    }
    let (root, temporary) = match &arguments.root {
        Some(root) => (root.clone(), false),
        None => (
            std::env::temp_dir().join(format!("aof2-demo-{}", std::process::id())),
            true,
        ),
    };
    let disk = LocalDisk::open(&root)?;
    println!(
        "store root: {} (Tier 2: {}/tier2)",
        root.display(),
        root.display()
    );

    // Restart: replay whatever manifest the root already holds.
    let started = Instant::now();
    let previous = replay(&disk, &stream)?;
    let next_segment = previous
        .index
        .segments()
        .keys()
        .next_back()
        .map_or(0, |id| id.0 + 1);
    let next_offset = previous
        .index
        .segments()
        .values()
        .map(next_offset_of)
        .max()
        .unwrap_or(0);
    if previous.figures.chunk_count > 0 {
        println!(
            "replayed {} chunks from a previous run: {} segments, next offset {next_offset}",
            previous.figures.chunk_count,
            previous.index.segments().len()
        );
    }

    let mut writer = ManifestWriter::new(
        ManifestWriterConfig::default(),
        manifest_dir(&stream),
        previous.writer_start(),
        now_ms(),
    )?;
    drive(&mut writer, &disk)?;

    let mut written = Vec::new();
    let mut offset = next_offset;
    let mut segment_id = next_segment;
    let end = next_offset + arguments.records;
    while offset < end {
        let count = arguments.segment_records.min(end - offset);
        let payloads: Vec<Vec<u8>> = (offset..offset + count)
            .map(|o| payload(o, arguments.record_bytes))
            .collect();
        write_segment(
            &disk,
            &mut writer,
            &stream,
            SegmentId(segment_id),
            offset,
            &payloads,
        )?;
        written.push((SegmentId(segment_id), offset, payloads));
        offset += count;
        segment_id += 1;
    }
    let ingest = started.elapsed();

    // Restart again: replay from disk and read every record back from Tier 2.
    let outcome = replay(&disk, &stream)?;
    print_summary(&outcome);
    let mut verified = 0u64;
    for (segment_id, base_offset, payloads) in &written {
        let key = segment_object_key(&stream, *segment_id);
        let object = std::fs::read(root.join("tier2").join(&key))?;
        for (i, expected) in payloads.iter().enumerate() {
            let got = cold_read(&object, *base_offset + i as u64)?;
            if &got != expected {
                return Err(format!(
                    "offset {} read back different bytes",
                    *base_offset + i as u64
                )
                .into());
            }
            verified += 1;
        }
    }
    let megabytes = (arguments.records * arguments.record_bytes as u64) as f64 / 1e6;
    println!(
        "appended {} records ({megabytes:.1} MB) in {:.2?}; verified {verified} records by cold read",
        arguments.records, ingest
    );
    if temporary {
        std::fs::remove_dir_all(&root)?;
    }
    Ok(())
}

/// Writes one sealed segment durably, compresses it, uploads it, evicts the local
/// copy, and journals each step.
fn write_segment(
    disk: &LocalDisk,
    writer: &mut ManifestWriter,
    stream: &StreamName,
    segment_id: SegmentId,
    base_offset: u64,
    payloads: &[Vec<u8>],
) -> Result<(), Box<dyn Error>> {
    let now = now_ms();
    journal(
        writer,
        disk,
        &ManifestRecord::SegmentOpened {
            segment_id,
            base_offset,
            opened_at_ms: now,
        },
    )?;

    let header = SegmentHeader {
        segment_id,
        base_offset,
        created_at_ms: now,
    };
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    let mut digest = SegmentDigest::new();
    digest.update_header(&bytes);
    for (i, payload) in payloads.iter().enumerate() {
        let position = bytes.len();
        let offset = base_offset + i as u64;
        Record {
            offset,
            timestamp_ms: now,
            ext_id: offset + 1,
            flags: 0,
            payload,
        }
        .encode(&mut bytes);
        digest.update_frames(&bytes[position..]);
    }
    let footer = digest.footer(base_offset + payloads.len() as u64, false, now_ms());
    footer.encode(&mut bytes);
    let path = segment_path(stream, segment_id);
    write_durably(disk, &path, Bytes::from(bytes.clone()))?;
    journal(
        writer,
        disk,
        &ManifestRecord::SealSegment {
            segment_id,
            base_offset,
            record_count: footer.record_count,
            durable_bytes: footer.durable_bytes,
            checksum: footer.segment_crc,
            last_ext_id: footer.last_ext_id,
            coordinator_watermark: footer.coordinator_watermark,
            flush_failure: false,
            sealed_at_ms: footer.sealed_at_ms,
        },
    )?;

    journal(
        writer,
        disk,
        &ManifestRecord::CompressionStarted {
            segment_id,
            job_id: segment_id.0,
        },
    )?;
    let job = CpuJob::Compress {
        segment: Bytes::from(bytes.clone()),
        frame_raw_bytes_target: 64 * 1024,
        compression_level: 3,
    };
    let CpuResult::Compressed {
        artifact,
        frame_count,
        checksum,
    } = cpu::run(&job)
    else {
        return Err(format!("compressing segment {segment_id} failed").into());
    };
    write_durably(disk, &artifact_path(stream, segment_id), artifact.clone())?;
    journal(
        writer,
        disk,
        &ManifestRecord::CompressionDone {
            segment_id,
            job_id: segment_id.0,
            original_bytes: bytes.len() as u64,
            compressed_bytes: artifact.len() as u64,
            frame_count,
            artifact_checksum: checksum,
        },
    )?;

    // Tier 2 on the embedded default is a directory: put = durable new file.
    let key = segment_object_key(stream, segment_id);
    journal(
        writer,
        disk,
        &ManifestRecord::UploadStarted {
            segment_id,
            key: key.clone(),
            attempt: 1,
        },
    )?;
    let object_path = LocalPath::from_components(&["tier2"]).join_relative(&key);
    let object_bytes = artifact.len() as u64;
    write_durably(disk, &object_path, artifact)?;
    journal(
        writer,
        disk,
        &ManifestRecord::UploadDone {
            segment_id,
            key,
            etag: format!("{checksum:08x}"),
            object_bytes,
        },
    )?;

    // Tier 2 holds it and the manifest says so: the local copy may go.
    expect_done(
        disk.execute(&DiskRequest::Remove { path: path.clone() }),
        "remove segment",
    )?;
    expect_done(
        disk.execute(&DiskRequest::SyncDir {
            path: path.parent().expect("has a parent"),
        }),
        "sync dir",
    )?;
    journal(
        writer,
        disk,
        &ManifestRecord::LocalEvicted {
            segment_id,
            tier: Tier::Tier0,
        },
    )?;
    Ok(())
}

/// Appends and commits one record, carrying out the writer's requests.
fn journal(
    writer: &mut ManifestWriter,
    disk: &LocalDisk,
    record: &ManifestRecord,
) -> Result<(), Box<dyn Error>> {
    let ordinal = writer.append(now_ms(), record)?;
    writer.commit(now_ms())?;
    drive(writer, disk)?;
    if writer
        .durable_ordinal()
        .is_none_or(|durable| durable < ordinal)
    {
        return Err(format!("manifest record {ordinal} was not committed").into());
    }
    Ok(())
}

/// Carries out the writer's requests until it is idle.
fn drive(writer: &mut ManifestWriter, disk: &LocalDisk) -> Result<(), Box<dyn Error>> {
    while let Some((id, request)) = writer.poll_request() {
        let completion = disk.execute(&request);
        writer.handle_completion(now_ms(), id, completion);
        while let Some(event) = writer.poll_event() {
            match event {
                ManifestEvent::Committed { .. } => {}
                ManifestEvent::ChunkSealed { chunk_index, .. } => {
                    println!("manifest chunk {chunk_index} sealed")
                }
                ManifestEvent::Poisoned { error } => return Err(error.to_string().into()),
            }
        }
    }
    Ok(())
}

/// The durable-file rule: write temp, fsync, rename, fsync the directory.
fn write_durably(disk: &LocalDisk, path: &LocalPath, bytes: Bytes) -> Result<(), Box<dyn Error>> {
    let temp = path
        .parent()
        .expect("has a parent")
        .join(&format!("{}.tmp", path.file_name()));
    expect_done(
        disk.execute(&DiskRequest::Create { path: temp.clone() }),
        "create",
    )?;
    expect_done(
        disk.execute(&DiskRequest::WriteAt {
            path: temp.clone(),
            offset: 0,
            bytes,
        }),
        "write",
    )?;
    expect_done(
        disk.execute(&DiskRequest::SyncFile { path: temp.clone() }),
        "fsync",
    )?;
    expect_done(
        disk.execute(&DiskRequest::Rename {
            from: temp,
            to: path.clone(),
        }),
        "rename",
    )?;
    expect_done(
        disk.execute(&DiskRequest::SyncDir {
            path: path.parent().expect("has a parent"),
        }),
        "dir fsync",
    )
}

fn expect_done(completion: DiskCompletion, what: &str) -> Result<(), Box<dyn Error>> {
    match completion {
        DiskCompletion::Done => Ok(()),
        other => Err(format!("{what} failed: {other:?}").into()),
    }
}

/// Replays the stream's manifest chunks from disk, in index order.
fn replay(disk: &LocalDisk, stream: &StreamName) -> Result<ReplayOutcome, Box<dyn Error>> {
    let dir = manifest_dir(stream);
    let DiskCompletion::Listed(names) = disk.execute(&DiskRequest::ListDir { path: dir.clone() })
    else {
        return Err("listing the manifest directory failed".into());
    };
    let mut indexes: Vec<u64> = names
        .iter()
        .filter_map(|name| chunk::parse_chunk_file_name(name))
        .collect();
    indexes.sort_unstable();
    let mut replayer = Replayer::new(None);
    for index in indexes {
        let path = dir.join(&chunk::chunk_file_name(index));
        let DiskCompletion::Read(bytes) = disk.execute(&DiskRequest::ReadAt {
            path,
            offset: 0,
            length: u64::MAX,
        }) else {
            return Err(format!("reading manifest chunk {index} failed").into());
        };
        replayer.replay_chunk(now_ms(), index, &bytes)?;
    }
    Ok(replayer.finish(now_ms()))
}

fn print_summary(outcome: &ReplayOutcome) {
    let figures = &outcome.figures;
    println!(
        "manifest replay: chunk_count={} chunk_lag_seconds={:.3} journal_lag_bytes={} corruption_events={} records_applied={}",
        figures.chunk_count,
        figures.chunk_lag_seconds(),
        figures.journal_lag_bytes,
        figures.corruption_events,
        figures.records_applied
    );
    println!(
        "{:>8} {:>12} {:>10} {:>18} {:<40}",
        "segment", "base_offset", "records", "residency", "tier2 key"
    );
    for entry in outcome.index.segments().values() {
        let records = match &entry.lifecycle {
            Lifecycle::Sealed(seal) => seal.record_count.to_string(),
            Lifecycle::Open => "open".to_owned(),
        };
        let key = entry
            .tier2_object
            .as_ref()
            .map_or("-", |object| object.key.as_str());
        println!(
            "{:>8} {:>12} {:>10} {:>18} {:<40}",
            entry.segment_id.0,
            entry.base_offset,
            records,
            format!("{:?}", entry.residency()),
            key
        );
    }
}

/// Reads one record the way a cold reader does: the object's tail, then one frame.
fn cold_read(object: &[u8], offset: u64) -> Result<Vec<u8>, Box<dyn Error>> {
    let length = object.len() as u64;
    let mut tail_bytes = length.min(64 * 1024);
    let index = loop {
        match ArtifactIndex::decode_tail(&object[(length - tail_bytes) as usize..], length)? {
            TailDecode::Complete(index) => break index,
            TailDecode::NeedTail { tail_bytes: needed } => tail_bytes = needed,
        }
    };
    let location = index
        .frame_for_record(offset)
        .ok_or_else(|| format!("no frame holds offset {offset}"))?;
    let range = location.compressed_range();
    let raw = artifact::decode_frame(&object[range.start as usize..range.end as usize], &location)?;
    let mut position = if location.frame == 0 {
        u64::from(SEGMENT_HEADER_BYTES)
    } else {
        0
    };
    loop {
        let framed = Record::decode(&raw[position as usize..], location.raw_offset + position)?;
        if framed.record.offset == offset {
            return Ok(framed.record.payload.to_vec());
        }
        position += framed.frame_bytes();
    }
}

fn next_offset_of(entry: &aof2_core::manifest::index::SegmentEntry) -> u64 {
    match &entry.lifecycle {
        Lifecycle::Sealed(seal) => entry.base_offset + seal.record_count,
        Lifecycle::Open => entry.base_offset,
    }
}

/// A payload that depends on its offset, so misplaced records are caught.
fn payload(offset: u64, length: usize) -> Vec<u8> {
    let mut state = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
