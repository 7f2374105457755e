//! `aof2-admin`: the operator's tool for one store root (the runbook's admin commands).
//!
//! - `dump`: opens the root, every stream under it (or `--stream`), prints a table of
//!   Tier 0/1/2 state and per-stream figures, then the whole metrics snapshot as JSON
//!   (archive it when escalating: it holds residency and queue depths).
//! - `seal --stream S`, `flush --stream S`: the same as the embedding API's calls.
//! - `hydrate --stream S --offset N`: brings the segment holding `N` back into Tier 0
//!   (waiting for it) and prints the record's size.
//! - `segments list --stream S`: the segments of the stream's manifest, with where
//!   each one lives (read offline from the newest snapshot and the manifest chunks
//!   after it, as a reopen reads them).
//! - `segments delete --stream S --before N`: deletes every segment below id `N` from
//!   every tier (reason `Operator`), all or none, then waits (bounded by `--wait`) for
//!   the copies to go.
//! - `manifest inspect --stream S`: every manifest chunk, its records and the replay
//!   figures; `manifest check --stream S`: the same replay, exit code 3 if it found
//!   corruption.
//!
//! `dump`, `seal`, `flush`, `hydrate` and `segments delete` open the root, so they need
//! the store not to
//! be running (the root is locked by its manager; the error names the holder).
//! `segments` and `manifest` only read files and work beside a running store.
//!
//! Exit codes: 0 success, 1 an error (the message says what and where), 2 bad usage,
//! 3 `manifest check` found corruption. A reader that goes away early (`| head`) ends
//! the output quietly with 0, as for any Unix filter.

use aof2_io_real::config::{AofManagerConfig, process_env};
use aof2_io_real::core::SegmentId;
use aof2_io_real::core::manifest::chunk::parse_chunk_file_name;
use aof2_io_real::core::manifest::index::{Lifecycle, ManifestIndex};
use aof2_io_real::core::manifest::replay::{ReplayOutcome, Replayer};
use aof2_io_real::core::manifest::snapshot::Snapshot;
use aof2_io_real::core::names::{StreamName, parse_snapshot_file_name};
use aof2_io_real::manager::{AofManager, Stream};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "common/stdout.rs"]
#[macro_use]
mod stdout;
use stdout::Failure;

#[derive(Debug, Parser)]
#[command(
    name = "aof2-admin",
    version,
    about = "Inspect and operate an AOF2 store root"
)]
struct Args {
    /// Store root (default: the config's root).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Config file (default: `AOF2_CONFIG`, else the embedded default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A table of Tier 0/1/2 and stream state, then the metrics as JSON.
    Dump {
        /// Streams to open (default: every stream under the root).
        #[arg(long)]
        stream: Vec<String>,
    },
    /// Seals the active segment of a stream.
    Seal {
        #[arg(long)]
        stream: String,
    },
    /// Fsyncs everything appended to a stream.
    Flush {
        #[arg(long)]
        stream: String,
    },
    /// Brings the segment holding an offset back into Tier 0.
    Hydrate {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        offset: u64,
    },
    /// The segments of a stream's manifest.
    Segments {
        #[command(subcommand)]
        command: SegmentsCommand,
    },
    /// The manifest log of a stream.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SegmentsCommand {
    /// Every segment with its offsets and residency.
    List {
        #[arg(long)]
        stream: String,
    },
    /// Deletes every segment below an id from every tier (all sealed and in Tier 2,
    /// or nothing is deleted).
    Delete {
        #[arg(long)]
        stream: String,
        /// Segment id: every segment below it goes (see `segments list`).
        #[arg(long)]
        before: u64,
        /// Seconds to wait for the copies to be deleted (0: only queue the deletion,
        /// which the next open of the stream carries on).
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ManifestCommand {
    /// Every chunk and the replay figures.
    Inspect {
        #[arg(long)]
        stream: String,
    },
    /// Replays the manifest; exit code 3 on corruption.
    Check {
        #[arg(long)]
        stream: String,
    },
}

/// Exit code of `manifest check` when the replay found corruption.
const EXIT_CORRUPT: u8 = 3;

/// How often `segments delete` looks whether the deletions are done.
const DELETION_POLL: Duration = Duration::from_millis(50);

fn config(args: &Args) -> Result<AofManagerConfig, String> {
    let mut config =
        AofManagerConfig::load(args.config.as_deref(), &process_env).map_err(|e| e.to_string())?;
    if let Some(root) = &args.root {
        config.root = root.clone();
    }
    Ok(config)
}

fn open(args: &Args) -> Result<AofManager, String> {
    AofManager::open(config(args)?).map_err(|e| e.to_string())
}

/// The stream names under `<root>/streams`, sorted.
/// Opens stream `name` of the root `manager` holds; refuses a name the root holds no
/// stream of (opening it would create one).
fn existing_stream(manager: &AofManager, name: &str) -> Result<Stream, String> {
    if !stream_names(manager.root())?
        .iter()
        .any(|held| held == name)
    {
        return Err(format!(
            "no stream {name:?} under {} (`aof2-admin dump` lists them)",
            manager.root().display()
        ));
    }
    manager
        .stream(name)
        .map_err(|e| format!("stream {name:?}: {e}"))
}

fn stream_names(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("streams");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("{}: {error}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str()
            && StreamName::validate(name).is_ok()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Replays the manifest chunk files of `stream` under `root`, read-only, printing each
/// chunk if `verbose`.
fn replay(root: &Path, stream: &str, verbose: bool) -> Result<ReplayOutcome, Failure> {
    let name = StreamName::new(stream).map_err(|e| e.to_string())?;
    let stream_dir = root.join("streams").join(name.as_str());
    let dir = stream_dir.join("manifest");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut chunks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_chunk_file_name) {
            chunks.push((index, entry.path()));
        }
    }
    chunks.sort();
    // Chunks a snapshot covers may be pruned: start from the newest snapshot that
    // decodes, as a reopen does.
    let snapshot = newest_snapshot(&stream_dir.join("snapshots"))?;
    let first_chunk = match &snapshot {
        Some((path, snapshot)) => {
            if verbose {
                out!(
                    "snapshot {:>4}  records 0..{}  {}",
                    snapshot.snapshot_id(),
                    snapshot.position().record_ordinal,
                    path.display()
                );
            }
            snapshot.position().chunk_index
        }
        None => 0,
    };
    let mut replayer = Replayer::new(snapshot.map(|(_, snapshot)| snapshot));
    for (index, path) in chunks.iter().filter(|(index, _)| *index >= first_chunk) {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let before = replayer.index().next_ordinal();
        replayer
            .replay_chunk(0, *index, &bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if verbose {
            out!(
                "chunk {index:>6}  {:>9} bytes  records {before}..{}  {}",
                bytes.len(),
                replayer.index().next_ordinal(),
                path.display()
            );
        }
    }
    Ok(replayer.finish(0))
}

/// The newest snapshot file in `dir` that decodes, with its path; `None` without one.
fn newest_snapshot(dir: &Path) -> Result<Option<(PathBuf, Snapshot)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", dir.display())),
    };
    let mut snapshots = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|file| parse_snapshot_file_name(file).ok())
        {
            snapshots.push((id, entry.path()));
        }
    }
    snapshots.sort();
    for (id, path) in snapshots.into_iter().rev() {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match Snapshot::decode(&bytes) {
            Ok(snapshot) if snapshot.snapshot_id() == id => return Ok(Some((path, snapshot))),
            // A damaged snapshot is skipped, as a reopen skips it.
            _ => eprintln!(
                "aof2-admin: skipping snapshot {} (it does not decode)",
                path.display()
            ),
        }
    }
    Ok(None)
}

fn print_segments(index: &ManifestIndex) -> Result<(), Failure> {
    out!(
        "{:>20}  {:>12}  {:>9}  {:>8}  {:<18}  tier2 object",
        "segment",
        "base offset",
        "records",
        "state",
        "residency"
    );
    for entry in index.segments().values() {
        let (state, records) = match entry.lifecycle {
            Lifecycle::Open => ("open", "-".to_owned()),
            Lifecycle::Sealed(seal) => ("sealed", seal.record_count.to_string()),
        };
        let object = entry
            .tier2_object
            .as_ref()
            .map_or("-".to_owned(), |object| object.key.clone());
        out!(
            "{:>20}  {:>12}  {:>9}  {:>8}  {:<18}  {object}",
            entry.segment_id.0,
            entry.base_offset,
            records,
            state,
            format!("{:?}", entry.residency()),
        );
    }
    Ok(())
}

/// Polls the metrics until no deletion of `stream` is pending or `patience` has passed;
/// returns how many are still pending.
fn wait_for_deletions(
    manager: &AofManager,
    stream: &str,
    patience: Duration,
) -> Result<u64, Failure> {
    let started = Instant::now();
    loop {
        let metrics = manager.metrics().map_err(|e| e.to_string())?;
        let pending = metrics
            .streams
            .get(stream)
            .map_or(0, |figures| figures.retention.deletes_pending);
        if pending == 0 || started.elapsed() >= patience {
            return Ok(pending);
        }
        std::thread::sleep(DELETION_POLL);
    }
}

fn run(args: &Args) -> Result<ExitCode, Failure> {
    match &args.command {
        Command::Dump { stream } => {
            let manager = open(args)?;
            let names = if stream.is_empty() {
                stream_names(manager.root())?
            } else {
                stream.clone()
            };
            for name in &names {
                existing_stream(&manager, name)?;
            }
            let metrics = manager.metrics().map_err(|e| e.to_string())?;
            out!("root {}", manager.root().display());
            out!("| tier | figures |");
            out!("| --- | --- |");
            let t0 = &metrics.tier0;
            out!(
                "| Tier 0 | {} of {} bytes, {} segments, activation queue {}, evictions {} |",
                t0.total_bytes,
                t0.cluster_max_bytes,
                t0.resident_segments,
                t0.activation_queue_depth,
                t0.evictions
            );
            let t1 = &metrics.tier1;
            out!(
                "| Tier 1 | {} of {} bytes, {} artifacts, hydration queue {}, compression queue {}, hydration p99 {} ms |",
                t1.total_bytes,
                t1.max_bytes,
                t1.artifacts,
                t1.hydration_queue_depth,
                t1.compression_queue_depth,
                t1.hydration_latency_p99_ms
            );
            let t2 = &metrics.tier2;
            out!(
                "| Tier 2 | uploads {} (queue {}, retries {}), deletes {} (queue {}, retries {}), download failures {} |",
                t2.uploads,
                t2.upload_queue_depth,
                t2.upload_retry_attempts,
                t2.deletes,
                t2.delete_queue_depth,
                t2.delete_retry_attempts,
                t2.download_failures
            );
            out!("");
            out!(
                "| stream | offsets | segments (T0 / T1 / T2 only / needs recovery) | flush failures |"
            );
            out!("| --- | --- | --- | --- |");
            for (name, stream) in &metrics.streams {
                let s = &stream.segments;
                out!(
                    "| {name} | {}..{} (durable to {}) | {} / {} / {} / {} | {} |",
                    stream.start_offset,
                    stream.next_offset,
                    stream.durable_next_offset,
                    s.resident_in_tier0,
                    s.resident_in_tier1,
                    s.uploaded_to_tier2,
                    s.needs_recovery,
                    stream.flush.flush_failures
                );
            }
            out!("");
            let json = serde_json::to_string_pretty(&metrics).map_err(|e| e.to_string())?;
            out!("{json}");
            manager.close().map_err(|e| e.to_string())?;
        }
        Command::Seal { stream } => {
            let manager = open(args)?;
            let sealed = existing_stream(&manager, stream)?
                .seal()
                .map_err(|e| format!("stream {stream:?}: {e}"))?;
            match sealed {
                Some(segment) => out!("sealed segment {}", segment.0),
                None => out!("the active segment holds no record: nothing to seal"),
            }
            manager.close().map_err(|e| e.to_string())?;
        }
        Command::Flush { stream } => {
            let manager = open(args)?;
            let durable = existing_stream(&manager, stream)?
                .flush()
                .map_err(|e| format!("stream {stream:?}: {e}"))?;
            out!("durable below offset {durable}");
            manager.close().map_err(|e| e.to_string())?;
        }
        Command::Hydrate { stream, offset } => {
            let manager = open(args)?;
            let handle = existing_stream(&manager, stream)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            let record = runtime
                .block_on(handle.read_async(*offset))
                .map_err(|e| format!("stream {stream:?} offset {offset}: {e}"))?;
            out!(
                "offset {} is in Tier 0 ({} payload bytes)",
                record.offset,
                record.payload.len()
            );
            manager.close().map_err(|e| e.to_string())?;
        }
        Command::Segments {
            command: SegmentsCommand::List { stream },
        } => {
            let outcome = replay(&config(args)?.root, stream, false)?;
            print_segments(&outcome.index)?;
        }
        Command::Segments {
            command:
                SegmentsCommand::Delete {
                    stream,
                    before,
                    wait,
                },
        } => {
            let manager = open(args)?;
            let queued = existing_stream(&manager, stream)?
                .delete_segments(SegmentId(*before))
                .map_err(|e| e.to_string())?;
            out!(
                "queued {} segments below segment {before} for deletion (reason Operator); \
                 the start offset is now {}",
                queued.segments,
                queued.start_offset
            );
            let pending = wait_for_deletions(&manager, stream, Duration::from_secs(*wait))?;
            if pending == 0 {
                out!("every queued segment of {stream:?} is deleted from every tier");
            } else {
                out!(
                    "{pending} segments of {stream:?} are still being deleted; the next \
                     open of the stream carries on"
                );
            }
            manager.close().map_err(|e| e.to_string())?;
        }
        Command::Manifest { command } => {
            let (stream, check) = match command {
                ManifestCommand::Inspect { stream } => (stream, false),
                ManifestCommand::Check { stream } => (stream, true),
            };
            let outcome = replay(&config(args)?.root, stream, !check)?;
            out!("{:#?}", outcome.figures);
            for corruption in &outcome.corruptions {
                out!("corruption: {corruption}");
            }
            if outcome.figures.corruption_events > 0 {
                out!(
                    "manifest of {stream:?}: {} corruption events",
                    outcome.figures.corruption_events
                );
                if check {
                    return Ok(ExitCode::from(EXIT_CORRUPT));
                }
            } else if check {
                out!(
                    "manifest of {stream:?} is sound: {} records in {} chunks",
                    outcome.index.next_ordinal(),
                    outcome.figures.chunk_count
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = aof2_io_real::logging::install_stderr_logging(process_env) {
        eprintln!("aof2-admin: {error}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(code) => code,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(error)) => {
            eprintln!("aof2-admin: {error}");
            ExitCode::FAILURE
        }
    }
}
