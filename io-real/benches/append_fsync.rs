//! Append throughput with an fsync per 1 MiB, beside a plain `write` + `fdatasync`
//! loop of the same bytes on the same disk: what the store costs over the raw disk.
//! Then the latency of a durable append (flush policy `every_append`, each append
//! waits for its fsync) beside a plain `pwrite` + `fdatasync` per record: a durable
//! flush costs the segment's fsync and the fsync of the 32-byte `acknowledged` hint.
//!
//! ```sh
//! cargo bench -p aof2-io-real --bench append_fsync            # 64 MiB of 4 KiB records
//! AOF2_BENCH_DIR=/mnt/disk cargo bench -p aof2-io-real --bench append_fsync
//! ```
//!
//! Timing belongs here, not in tests: this prints figures and asserts nothing about
//! them. Both loops write under the same directory (`AOF2_BENCH_DIR`, default a
//! temporary directory in the working directory's file system).

use aof2_io_real::config::AofManagerConfig;
use aof2_io_real::manager::AofManager;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const TOTAL_BYTES: usize = 64 * 1024 * 1024;
const RECORD_BYTES: usize = 4096;
const FSYNC_EVERY_BYTES: usize = 1024 * 1024;
const DURABLE_APPENDS: usize = 2000;
const DURABLE_RECORD_BYTES: usize = 512;

fn mib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// The store: 4 KiB records, flush policy "fsync every 1 MiB", waiting for the end.
fn store(dir: &Path) -> Duration {
    let text = format!(
        r#"
root = "{}"
[flush]
policy = {{ bytes = "1MiB" }}
"#,
        dir.join("store").display()
    );
    let config = AofManagerConfig::from_toml(&text).expect("a valid bench config");
    let manager = AofManager::open(config).expect("open the bench root");
    let stream = manager.stream("bench").expect("open the bench stream");
    let payload = bytes::Bytes::from(vec![0xA5u8; RECORD_BYTES]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let mut last = 0;
        for _ in 0..TOTAL_BYTES / RECORD_BYTES {
            last = stream
                .append_async(payload.clone(), None)
                .await
                .expect("append");
        }
        stream.wait_durable_async(last).await.expect("durable");
    });
    let elapsed = started.elapsed();
    manager.close().expect("close");
    elapsed
}

/// The disk alone: the same bytes, `pwrite` per record, `fdatasync` per 1 MiB.
fn plain(dir: &Path) -> Duration {
    let path = dir.join("plain.dat");
    let file = std::fs::File::create(&path).expect("create the plain file");
    let record = vec![0xA5u8; RECORD_BYTES];
    let started = Instant::now();
    let mut written = 0usize;
    let mut since_sync = 0usize;
    while written < TOTAL_BYTES {
        file.write_all_at(&record, written as u64).expect("write");
        written += RECORD_BYTES;
        since_sync += RECORD_BYTES;
        if since_sync >= FSYNC_EVERY_BYTES {
            file.sync_data().expect("fdatasync");
            since_sync = 0;
        }
    }
    file.sync_data().expect("fdatasync");
    started.elapsed()
}

/// The p50 and p99 of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

/// The store: one append at a time, each waited for until durable.
fn store_durable(dir: &Path) -> Vec<Duration> {
    let text = format!(
        r#"
root = "{}"
[flush]
policy = "every_append"
"#,
        dir.join("durable").display()
    );
    let config = AofManagerConfig::from_toml(&text).expect("a valid bench config");
    let manager = AofManager::open(config).expect("open the bench root");
    let stream = manager.stream("bench").expect("open the bench stream");
    let payload = bytes::Bytes::from(vec![0x5Au8; DURABLE_RECORD_BYTES]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let samples = runtime.block_on(async {
        let mut samples = Vec::with_capacity(DURABLE_APPENDS);
        for _ in 0..DURABLE_APPENDS {
            let started = Instant::now();
            let offset = stream
                .append_async(payload.clone(), None)
                .await
                .expect("append");
            stream.wait_durable_async(offset).await.expect("durable");
            samples.push(started.elapsed());
        }
        samples
    });
    manager.close().expect("close");
    samples
}

/// The disk alone: `pwrite` + `fdatasync` per record.
fn plain_durable(dir: &Path) -> Vec<Duration> {
    let file = std::fs::File::create(dir.join("plain-durable.dat")).expect("create");
    let record = vec![0x5Au8; DURABLE_RECORD_BYTES];
    (0..DURABLE_APPENDS)
        .map(|index| {
            let started = Instant::now();
            file.write_all_at(&record, (index * DURABLE_RECORD_BYTES) as u64)
                .expect("write");
            file.sync_data().expect("fdatasync");
            started.elapsed()
        })
        .collect()
}

fn main() {
    let base = std::env::var_os("AOF2_BENCH_DIR").map_or_else(|| ".".into(), Into::into);
    let dir = tempfile::tempdir_in::<std::path::PathBuf>(base).expect("a bench directory");
    let plain_time = plain(dir.path());
    let store_time = store(dir.path());
    let plain_durable = percentiles(plain_durable(dir.path()));
    let store_durable = percentiles(store_durable(dir.path()));
    let mut out = std::io::stdout();
    writeln!(
        out,
        "{} MiB of {} B records, fsync per 1 MiB, under {}",
        TOTAL_BYTES / (1024 * 1024),
        RECORD_BYTES,
        dir.path().display()
    )
    .expect("stdout");
    writeln!(
        out,
        "plain pwrite + fdatasync: {:8.1} MiB/s",
        mib_per_s(TOTAL_BYTES, plain_time)
    )
    .expect("stdout");
    writeln!(
        out,
        "aof2 append_async:        {:8.1} MiB/s",
        mib_per_s(TOTAL_BYTES, store_time)
    )
    .expect("stdout");
    writeln!(
        out,
        "{DURABLE_APPENDS} durable appends of {DURABLE_RECORD_BYTES} B, one at a time (p50 / p99):"
    )
    .expect("stdout");
    writeln!(
        out,
        "plain pwrite + fdatasync: {:8.3} / {:8.3} ms",
        plain_durable.0, plain_durable.1
    )
    .expect("stdout");
    writeln!(
        out,
        "aof2 append + wait:       {:8.3} / {:8.3} ms",
        store_durable.0, store_durable.1
    )
    .expect("stdout");
}
