//! Append throughput with an fsync per 1 MiB, beside a plain `write` + `fdatasync`
//! loop of the same bytes on the same disk: what the store costs over the raw disk.
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

fn main() {
    let base = std::env::var_os("AOF2_BENCH_DIR").map_or_else(|| ".".into(), Into::into);
    let dir = tempfile::tempdir_in::<std::path::PathBuf>(base).expect("a bench directory");
    let plain_time = plain(dir.path());
    let store_time = store(dir.path());
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
}
