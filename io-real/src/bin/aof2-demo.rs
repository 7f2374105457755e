//! `aof2-demo`: ingests records into one stream, lets its segments move through every
//! tier (sealed, compressed into Tier 1, uploaded to Tier 2, evicted from Tier 0 and
//! Tier 1), reads every record back (cold reads hydrate from Tier 2) and verifies every
//! byte. With no `--config` it runs on the embedded default: local files and Tier 2 in
//! a local directory, no server.
//!
//! ```sh
//! cargo run --release --bin aof2-demo -- --records 200000 --stream demo
//! ```
//!
//! Without a config file the demo shrinks the Tier 0 and Tier 1 budgets and the
//! segment size (see `--help`) so that a short run still evicts to Tier 2 and reads
//! cold segments back; with `--config FILE` (or `AOF2_CONFIG`) it uses the file as is.

use aof2_io_real::config::{AofManagerConfig, process_env};
use aof2_io_real::core::backpressure::BackpressureKind;
use aof2_io_real::manager::{AofError, AofManager, Stream};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "common/stdout.rs"]
#[macro_use]
mod stdout;
use stdout::Failure;

/// Ingest, tier, evict, read back and verify one stream.
#[derive(Debug, Parser)]
#[command(name = "aof2-demo", version)]
struct Args {
    /// Records to append.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Stream to append to (created, or continued if it exists).
    #[arg(long, default_value = "demo")]
    stream: String,
    /// Root directory (default: the config's root, `./aof2-data`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 512)]
    record_bytes: usize,
    /// Config file (default: `AOF2_CONFIG`, else the embedded default with demo
    /// budgets: 1 MiB segments, 8 MiB Tier 0, 4 MiB Tier 1).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The payload of `offset`: its offset, then bytes derived from it, `bytes` long.
fn payload(offset: u64, bytes: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(bytes);
    payload.extend_from_slice(&offset.to_le_bytes());
    let mut state = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while payload.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.push(state as u8);
    }
    payload.truncate(bytes);
    payload
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

fn progress(length: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn load_config(args: &Args) -> Result<AofManagerConfig, String> {
    let explicit = args.config.is_some() || process_env("AOF2_CONFIG").is_some();
    let mut config =
        AofManagerConfig::load(args.config.as_deref(), &process_env).map_err(|e| e.to_string())?;
    if !explicit {
        let demo = r#"
[stream]
segment_target_bytes = "1MiB"
[store.tier0]
cluster_max_bytes = "8MiB"
[store.tier1]
max_bytes = "4MiB"
"#;
        let mut shrunk = AofManagerConfig::from_toml(demo).map_err(|e| e.to_string())?;
        shrunk.root = config.root.clone();
        shrunk.store.tier2 = config.store.tier2.clone();
        config = shrunk;
    }
    if let Some(root) = &args.root {
        config.root = root.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Appends, retrying normal backpressure; returns the offset and the latency.
fn append(
    stream: &Stream,
    payload: Vec<u8>,
    blocked: &mut u64,
) -> Result<(u64, Duration), AofError> {
    let payload = bytes::Bytes::from(payload);
    let started = Instant::now();
    loop {
        match stream.append(payload.clone()) {
            Ok(offset) => return Ok((offset, started.elapsed())),
            Err(AofError::WouldBlock(_)) => {
                *blocked += 1;
                std::thread::yield_now();
            }
            Err(error) => return Err(error),
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let config = load_config(args)?;
    let root = config.root.clone();
    let manager = AofManager::open(config).map_err(|e| e.to_string())?;
    let stream = manager.stream(&args.stream).map_err(|e| e.to_string())?;
    let first = stream.flush().map_err(|e| e.to_string())?;

    // Ingest.
    let bar = progress(args.records, "append");
    let mut latencies = Vec::with_capacity(args.records as usize);
    let mut blocked = 0u64;
    let started = Instant::now();
    for i in 0..args.records {
        let offset = first + i;
        let (appended, latency) = append(&stream, payload(offset, args.record_bytes), &mut blocked)
            .map_err(|e| format!("append {offset}: {e}"))?;
        if appended != offset {
            return Err(format!("append got offset {appended}, expected {offset}").into());
        }
        latencies.push(latency);
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    let end = first + args.records;
    stream.flush().map_err(|e| e.to_string())?;
    let ingest = started.elapsed();
    bar.finish_and_clear();
    stream.seal().map_err(|e| e.to_string())?;

    // Let the sealed segments reach Tier 2 and the local budgets shed them.
    let settle = Instant::now();
    loop {
        let metrics = manager.metrics().map_err(|e| e.to_string())?;
        let busy = metrics.tier1.compression_queue_depth
            + metrics.tier2.upload_queue_depth
            + metrics.tier2.uploads_in_flight;
        if busy == 0 {
            break;
        }
        if settle.elapsed() > Duration::from_secs(300) {
            return Err("segments did not reach Tier 2 within 5 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let tiered = manager.metrics().map_err(|e| e.to_string())?;

    // Read everything back, measuring the reads that had to hydrate.
    let bar = progress(args.records, "verify");
    let mut cold_latencies = Vec::new();
    let mut reader = stream.open_reader(first);
    let read_started = Instant::now();
    let mut offset = first;
    while offset < end {
        let record = match reader.try_next() {
            Ok(record) => record,
            Err(AofError::WouldBlock(BackpressureKind::Hydration)) => {
                let cold = Instant::now();
                let record = reader
                    .next()
                    .ok_or_else(|| format!("offset {offset}: the reader ended early"))?
                    .map_err(|e| format!("read {offset}: {e}"))?;
                cold_latencies.push(cold.elapsed());
                record
            }
            Err(error) => return Err(format!("read {offset}: {error}").into()),
        };
        if record.offset != offset || record.payload != payload(offset, args.record_bytes) {
            return Err(format!("offset {offset}: the record read back differs").into());
        }
        offset += 1;
        if offset % 1024 == 0 {
            bar.set_position(offset - first);
        }
    }
    let read = read_started.elapsed();
    bar.finish_and_clear();
    let after = manager.metrics().map_err(|e| e.to_string())?;
    manager.close().map_err(|e| e.to_string())?;

    latencies.sort_unstable();
    cold_latencies.sort_unstable();
    let bytes = args.records as f64 * args.record_bytes as f64;
    let mib = |bytes: f64, time: Duration| bytes / (1024.0 * 1024.0) / time.as_secs_f64();
    let segments = tiered
        .streams
        .get(&args.stream)
        .map(|stream| stream.segments)
        .unwrap_or_default();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    out!(
        "aof2-demo: stream {:?} under {}",
        args.stream,
        root.display()
    );
    out!("| figure | value |");
    out!("| --- | --- |");
    out!(
        "| records appended and verified | {} (offsets {first}..{end}) |",
        args.records
    );
    out!("| record payload | {} B |", args.record_bytes);
    out!(
        "| ingest | {:.1} MiB/s ({:.0} records/s) |",
        mib(bytes, ingest),
        args.records as f64 / ingest.as_secs_f64()
    );
    out!(
        "| append latency p50 / p99 | {:.3} ms / {:.3} ms |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );
    out!(
        "| segments after tiering: Tier 0 / Tier 1 / Tier 2 only | {} / {} / {} (of {}) |",
        segments.resident_in_tier0,
        segments.resident_in_tier1,
        segments.uploaded_to_tier2,
        segments.total
    );
    out!("| read back and verify | {:.1} MiB/s |", mib(bytes, read));
    out!(
        "| cold reads (hydrations waited for) | {} |",
        cold_latencies.len()
    );
    out!(
        "| cold-read latency p50 / p99 | {:.2} ms / {:.2} ms |",
        ms(percentile(&cold_latencies, 0.5)),
        ms(percentile(&cold_latencies, 0.99))
    );
    out!(
        "| hydrations (Tier 1 samples) / prefetches | {} / {} |",
        after.tier1.hydration_latency_samples,
        after.reads.prefetches
    );
    out!(
        "| Tier 2 uploads / upload retries | {} / {} |",
        after.tier2.uploads,
        after.tier2.upload_retry_attempts
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = aof2_io_real::logging::install_stderr_logging(process_env) {
        eprintln!("aof2-demo: {error}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        // A reader that closed the pipe early (`| head`) ends the output quietly.
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(error)) => {
            eprintln!("aof2-demo: {error}");
            ExitCode::FAILURE
        }
    }
}
