//! `aof2-admin` against a root written through the embedding API.
//!
//! **Invariants checked**
//! - `dump` prints the tier table and a JSON payload with the runbook's metric names.
//! - `segments list` lists every segment of the manifest with its residency.
//! - `manifest check` exits 0 on a sound manifest and 3 once a committed byte of a chunk
//!   is flipped; `seal` and `flush` work on a root no manager holds.
//! - A reader that closes the pipe early (`| head`) ends the output quietly with 0,
//!   never a panic.
//! - `segments delete --before N` deletes segments `0..N` from every tier (segment
//!   file, Tier 1 artifact, Tier 2 object) and nothing else; it refuses the active
//!   segment and a stream the root does not hold, with exit 1, and creates nothing.
//!   The offline commands still list and check the stream once its snapshot pruned
//!   the chunks it covers.

use aof2_io_real::config::AofManagerConfig;
use aof2_io_real::manager::AofManager;
use std::path::Path;
use std::process::{Command, Stdio};

fn admin(root: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_aof2-admin"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("AOF2_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

/// Writes 400 records of 800 bytes to stream `audit` under `root` in 64 KiB segments,
/// and waits (bounded) until every sealed segment is compressed and uploaded.
fn write_audit_stream(root: &Path) {
    let mut config = AofManagerConfig::from_toml(
        "[stream]\nsegment_target_bytes = \"64KiB\"\n[manifest]\nrotation_period = \"1ms\"",
    )
    .unwrap();
    config.root = root.to_owned();
    let manager = AofManager::open(config).unwrap();
    let stream = manager.stream("audit").unwrap();
    for i in 0..400u32 {
        let payload = format!("{i:08}").repeat(100);
        let offset = loop {
            match stream.append(payload.clone()) {
                Err(aof2_io_real::manager::AofError::WouldBlock(_)) => std::thread::yield_now(),
                result => break result.unwrap(),
            }
        };
        assert_eq!(offset, u64::from(i));
    }
    stream.flush().unwrap();
    for _ in 0..6000 {
        let metrics = manager.metrics().unwrap();
        let idle = metrics.tier1.compression_queue_depth == 0
            && metrics.tier1.compressions_in_flight == 0
            && metrics.tier2.upload_queue_depth == 0;
        if idle && metrics.tier2.uploads >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    manager.close().unwrap();
}

#[test]
fn dump_list_check_seal_flush() {
    let dir = tempfile::tempdir().unwrap();
    write_audit_stream(dir.path());

    let (code, out) = admin(dir.path(), &["dump"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("| Tier 0 |") && out.contains("| audit |"),
        "{out}"
    );
    assert!(out.contains("\"activation_queue_depth\""), "{out}");
    assert!(out.contains("\"hydration_latency_p99_ms\""), "{out}");
    assert!(out.contains("\"upload_retry_attempts\""), "{out}");

    let (code, out) = admin(dir.path(), &["segments", "list", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");
    let sealed = out.lines().filter(|line| line.contains("sealed")).count();
    assert!(sealed >= 3, "{out}");

    // `| head -0`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_aof2-admin"))
        .arg("--root")
        .arg(dir.path())
        .args(["manifest", "inspect", "--stream", "audit"])
        .env_remove("AOF2_CONFIG")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "nothing to report: {stderr}");

    let (code, out) = admin(dir.path(), &["flush", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("durable below offset 400"), "{out}");
    let (code, out) = admin(dir.path(), &["seal", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");

    let (code, out) = admin(dir.path(), &["manifest", "check", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is sound"), "{out}");

    // Flip a byte inside the committed records of the first chunk.
    let chunk = dir
        .path()
        .join("streams/audit/manifest/00000000000000000000.mlog");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let position = bytes.len() - 8;
    bytes[position] ^= 0x40;
    std::fs::write(&chunk, bytes).unwrap();
    let (code, out) = admin(dir.path(), &["manifest", "check", "--stream", "audit"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("corruption"), "{out}");

    let (code, out) = admin(dir.path(), &["segments", "list", "--stream", "no-such"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn segments_delete_removes_a_prefix_from_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    write_audit_stream(dir.path());
    let root = dir.path();
    let segment = |id: u64| root.join(format!("streams/audit/segments/{id:020}.seg"));
    let artifact = |id: u64| root.join(format!("streams/audit/tier1/{id:020}.zst"));
    let object = |id: u64| root.join(format!("tier2/segments/audit/{id:020}.zst"));
    assert!(object(0).exists() && object(1).exists() && object(2).exists());

    let (code, out) = admin(
        root,
        &["segments", "delete", "--stream", "audit", "--before", "2"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("queued 2 segments below segment 2"), "{out}");
    assert!(out.contains("deleted from every tier"), "{out}");
    for id in [0, 1] {
        assert!(!segment(id).exists(), "segment file {id} is gone");
        assert!(!artifact(id).exists(), "artifact {id} is gone");
        assert!(!object(id).exists(), "object {id} is gone");
    }
    assert!(object(2).exists(), "segment 2 stays");
    let (code, out) = admin(root, &["segments", "list", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");
    let first = out.lines().nth(1).unwrap_or_default();
    assert!(first.trim_start().starts_with("2 "), "{out}");
    // The delete took a snapshot, which pruned the chunks it covers: the offline
    // replay starts from it.
    let (code, out) = admin(root, &["manifest", "check", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is sound"), "{out}");
    let (code, out) = admin(root, &["manifest", "inspect", "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("snapshot "), "{out}");

    // Again: nothing left below 2.
    let (code, out) = admin(
        root,
        &["segments", "delete", "--stream", "audit", "--before", "2"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("queued 0 segments"), "{out}");

    let (code, out) = admin(
        root,
        &[
            "segments", "delete", "--stream", "audit", "--before", "100000",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("it is the active segment"), "{out}");
    assert!(object(2).exists(), "a refused delete deletes nothing");

    let (code, out) = admin(
        root,
        &["segments", "delete", "--stream", "other", "--before", "1"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no stream \"other\""), "{out}");
    assert!(
        !root.join("streams/other").exists(),
        "no stream was created"
    );
}
