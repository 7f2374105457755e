//! A real S3 server's failures through `Tier2Store`, with every log line captured:
//! SeaweedFS started by the test (see `s3.rs` and `common::SeaweedServer`).
//!
//! A test binary of its own because it installs the process-wide log subscriber, so
//! every log line of the process, from any thread, reaches the capture.
//!
//! **Invariants checked**
//! - A wrong secret key is `Permanent`; a refused connection is `Transient` (retryable).
//! - The failures are logged, and the secret appears in no log line, nor in the
//!   store's `Debug` or `Display`.

mod common;

use aof2_core::driver::ObjectStorePort;
use aof2_core::io::{ObjectErrorKind, PutMode};
use aof2_io_real::{S3Settings, Tier2Backend, Tier2Store};
use bytes::Bytes;
use common::SeaweedServer;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failures_classify_and_never_show_the_secret() {
    if !common::s3_tests_enabled("s3_failures_classify_and_never_show_the_secret") {
        return;
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only test of this binary sets the global subscriber");

    let mut server = SeaweedServer::start().await;
    let secret = "wrong-secret-0f1e2d3c4b5a69788796";
    let wrong = Tier2Store::new(Tier2Backend::S3(S3Settings {
        secret_key: Some(secret.to_owned()),
        ..server.settings()
    }))
    .unwrap();
    let put = wrong
        .put(
            "segments/s/1.zst",
            Bytes::from_static(b"x"),
            PutMode::IfAbsent,
        )
        .await;
    assert_eq!(
        put,
        Err(ObjectErrorKind::Permanent),
        "a bad signature is permanent"
    );
    assert_eq!(
        wrong.get("segments/s/1.zst").await,
        Err(ObjectErrorKind::Permanent)
    );

    server.kill();
    let refused = wrong.head("segments/s/1.zst").await;
    assert_eq!(
        refused,
        Err(ObjectErrorKind::Transient),
        "a refused connection is transient"
    );
    assert!(refused.unwrap_err().is_retryable());

    let logs = captured.text();
    assert!(
        logs.contains("object_request_failed"),
        "failures are logged: {logs}"
    );
    assert!(!logs.contains(secret), "the secret is never logged: {logs}");
    let shown = format!("{wrong:?} {wrong}");
    assert!(!shown.contains(secret), "{shown}");
}
