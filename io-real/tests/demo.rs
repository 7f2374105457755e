//! `aof2-demo`, the README's run command, on a small workload.
//!
//! **Invariants checked**
//! - It appends, tiers, reads back and verifies every record, exits 0 and prints its
//!   summary table.
//! - A reader that closes the pipe before the first line (`| head -0`) ends it quietly
//!   with 0, never a panic.
//! - With `AOF2_LOG=aof2=info` the machines' events reach standard error under their
//!   targets; by default (warnings only) a clean run logs nothing; a bad `AOF2_LOG` is
//!   refused with exit 1 and a message naming it.

use std::process::{Command, Stdio};

fn demo(root: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aof2-demo"));
    command
        .args(["--records", "2000", "--stream", "demo", "--root"])
        .arg(root)
        .env_remove("AOF2_CONFIG")
        .env_remove("AOF2_LOG");
    command
}

#[test]
fn the_demo_verifies_its_records_and_survives_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let output = demo(&dir.path().join("first")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("| records appended and verified | 2000 (offsets 0..2000) |"),
        "{stdout}"
    );
    assert!(
        !stderr.contains(" WARN "),
        "a clean run warns of nothing: {stderr}"
    );

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = demo(&dir.path().join("second"))
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn aof2_log_sends_the_machines_events_to_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = demo(dir.path())
        .env("AOF2_LOG", "aof2=info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for line in [
        "INFO aof2::stream: stream_segment_opened stream=demo segment_id=0",
        "INFO aof2::tiered: tiered_admit_segment key=demo/00000000000000000000",
        "INFO aof2::stream: stream_segment_sealed stream=demo segment_id=0",
        "INFO aof2::tier1: tier1_compression_succeeded key=demo/00000000000000000000",
        "INFO aof2::tier2: tier2_upload_succeeded object=\"segment\" key=segments/demo/00000000000000000000.zst",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }

    let output = demo(&dir.path().join("bad"))
        .env("AOF2_LOG", "aof2=loud")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("aof2-demo: environment variable AOF2_LOG = \"aof2=loud\""),
        "{stderr}"
    );
}
