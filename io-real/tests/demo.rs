//! `aof2-demo`, the README's run command, on a small workload.
//!
//! **Invariants checked**
//! - It appends, tiers, reads back and verifies every record, exits 0 and prints its
//!   summary table.
//! - A reader that closes the pipe before the first line (`| head -0`) ends it quietly
//!   with 0, never a panic.

use std::process::{Command, Stdio};

fn demo(root: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aof2-demo"));
    command
        .args(["--records", "2000", "--stream", "demo", "--root"])
        .arg(root)
        .env_remove("AOF2_CONFIG");
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
