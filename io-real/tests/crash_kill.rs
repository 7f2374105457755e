//! A real crash: a child process ingests on the local filesystem and reports every
//! offset it saw acknowledged durable; the parent kills it with SIGKILL at a random
//! moment, many times, reopens the root and checks every acknowledged record.
//!
//! **Invariants checked**
//! - Every record acknowledged durable (`wait_durable` returned) before the kill is
//!   there after the restart, byte-identical at its offset.
//! - After a restart the next offset continues densely past every acknowledged one.
//! - The root's lock dies with the process: the parent can always reopen it.

use aof2_io_real::config::AofManagerConfig;
use aof2_io_real::manager::{AofError, AofManager};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "AOF2_CRASH_CHILD_ROOT";
const ROUNDS: u64 = 20;

fn config(root: &Path) -> AofManagerConfig {
    let text = format!(
        r#"
root = "{}"
[stream]
segment_target_bytes = "256KiB"
[store.tier0]
cluster_max_bytes = "1MiB"
[flush]
policy = {{ bytes = "64KiB" }}
"#,
        root.display()
    );
    AofManagerConfig::from_toml(&text).expect("a valid config")
}

fn payload(offset: u64) -> Vec<u8> {
    let mut bytes = offset.to_le_bytes().to_vec();
    bytes.extend((0..(200 + offset % 1800)).map(|i| (i ^ offset) as u8));
    bytes
}

/// The child: append forever, printing `ACK <durable end>` after each durable batch.
fn child(root: &Path) -> ! {
    let manager = AofManager::open(config(root)).expect("the child opens the root");
    let stream = manager.stream("crash").expect("the child opens the stream");
    // Every recovered record is durable: this is where appends continue.
    let mut next = stream.flush().expect("flush after recovery");
    println!("START {next}");
    let mut out = std::io::stdout();
    loop {
        for _ in 0..50 {
            let offset = loop {
                match stream.append(payload(next)) {
                    Err(AofError::WouldBlock(_)) => std::thread::yield_now(),
                    result => break result.expect("append"),
                }
            };
            assert_eq!(offset, next, "offsets are dense");
            next += 1;
        }
        let durable = stream.wait_durable(next - 1).expect("wait durable");
        writeln!(out, "ACK {durable}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Kills the child if the parent fails first, so that it never writes into a root the
/// failing test is deleting.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&root));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0u64;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..ROUNDS {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "sigkill_at_random_moments_loses_no_acknowledged_record",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to start, then kill it 50-450 ms later.
        let started = Instant::now();
        let start = loop {
            let line = received
                .recv_timeout(Duration::from_secs(120))
                .expect("the child starts");
            // The test harness prints on the same line before the child's output.
            if let Some((_, start)) = line.split_once("START ") {
                break start.trim().parse::<u64>().unwrap();
            }
        };
        assert!(
            start >= acknowledged,
            "round {round}: the child resumed at {start}, below the acknowledged {acknowledged}"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(50 + rng % 400);
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(ack) = line.strip_prefix("ACK ") {
                        acknowledged = acknowledged.max(ack.parse().unwrap());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the child died by itself"),
            }
        }
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();
        // Acks that were printed before the kill count too.
        while let Ok(line) = received.try_recv() {
            if let Some(ack) = line.strip_prefix("ACK ") {
                acknowledged = acknowledged.max(ack.parse().unwrap());
            }
        }
        eprintln!(
            "round {round}: started at {start}, killed after {:?}, acknowledged {acknowledged}",
            started.elapsed()
        );
    }
    assert!(acknowledged > 0, "the children acknowledged something");
    let manager = AofManager::open(config(dir.path())).unwrap();
    let stream = manager.stream("crash").unwrap();
    let end = stream.flush().unwrap();
    assert!(
        end >= acknowledged,
        "next offset {end} below acknowledged {acknowledged}"
    );
    let mut reader = stream.open_reader(0);
    for offset in 0..acknowledged {
        let record = reader
            .next()
            .unwrap_or_else(|| panic!("offset {offset} missing"))
            .unwrap();
        assert_eq!(record.offset, offset);
        assert_eq!(record.payload, payload(offset), "offset {offset}");
    }
    manager.close().unwrap();
}
