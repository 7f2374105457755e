//! `Tier2Store` against the `ObjectStorePort` contract on the backends that need no
//! server (a local directory and memory), and the redaction of credentials.
//!
//! **Invariants checked**
//! - The contract suite of `common::object_store_contract` holds on `LocalDir` and
//!   `Memory`.
//! - Objects in a local directory survive reopening the store (they are files).
//! - HTTP failures, as `object_store` really reports them (from a local server that
//!   answers each status), classify as the retry logic needs: 503/429 `Throttled`,
//!   500/502/504/408 `Transient`, 400/401/403 `Permanent`, 404 `NotFound`.
//! - No secret key appears in the `Debug` of the settings, the backend or the store, nor
//!   in the message of a configuration error.

mod common;

use aof2_core::driver::ObjectStorePort;
use aof2_core::io::PutMode;
use aof2_io_real::{S3Settings, Tier2Backend, Tier2Store, Tier2StoreError};
use bytes::Bytes;

#[tokio::test]
async fn local_dir_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Tier2Store::new(Tier2Backend::LocalDir(dir.path().join("tier2"))).unwrap();
    common::object_store_contract(&store, "contract").await;
}

#[tokio::test]
async fn memory_keeps_the_contract() {
    let store = Tier2Store::new(Tier2Backend::Memory).unwrap();
    common::object_store_contract(&store, "contract").await;
}

#[tokio::test]
async fn local_dir_objects_are_files_that_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tier2");
    let bytes = common::pseudo_random_bytes(100_000, 7);
    let key = "segments/orders/00000000000000000001.zst";
    {
        let store = Tier2Store::new(Tier2Backend::LocalDir(root.clone())).unwrap();
        store
            .put(key, bytes.clone(), PutMode::IfAbsent)
            .await
            .unwrap();
    }
    assert_eq!(std::fs::read(root.join(key)).unwrap(), bytes.as_ref());
    let reopened = Tier2Store::new(Tier2Backend::LocalDir(root)).unwrap();
    assert_eq!(reopened.get(key).await, Ok(bytes.clone()));
    assert_eq!(
        reopened.get_range(key, 99_990, 200_000).await,
        Ok((bytes.slice(99_990..), 100_000))
    );
}

#[test]
fn local_dir_that_cannot_be_created_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let error = Tier2Store::new(Tier2Backend::LocalDir(file.join("tier2"))).unwrap_err();
    assert!(matches!(error, Tier2StoreError::LocalDir { .. }), "{error}");
    assert!(error.to_string().contains("a-file"), "{error}");
}

const SECRET: &str = "s3cr3t-wJalrXUtnFEMI-K7MDENG";
const ACCESS: &str = "AKIA-ACCESS-ID-12345";

fn settings(endpoint: &str, allow_http: bool) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint.to_owned()),
        region: "us-east-1".to_owned(),
        bucket: "aof2".to_owned(),
        access_key: Some(ACCESS.to_owned()),
        secret_key: Some(SECRET.to_owned()),
        allow_http,
    }
}

#[test]
fn credentials_never_appear_in_debug_or_errors() {
    let good = settings("https://s3.example.com", false);
    let shown = format!("{good:?} {:?}", Tier2Backend::S3(good.clone()));
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains(ACCESS), "{shown}");
    assert!(
        shown.contains("s3.example.com"),
        "the endpoint is shown: {shown}"
    );

    let store = Tier2Store::new(Tier2Backend::S3(good)).unwrap();
    let shown = format!("{store:?} {store}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("aof2"), "the bucket is shown: {shown}");

    for bad in [
        settings("http://s3.example.com", true),
        settings("http://127.0.0.1:9000", false),
        settings("ftp://s3.example.com", false),
        S3Settings {
            access_key: None,
            ..settings("https://s3.example.com", false)
        },
        S3Settings {
            endpoint: Some(format!("https://{ACCESS}:{SECRET}@s3.example.com")),
            ..settings("https://s3.example.com", false)
        },
    ] {
        let error = Tier2Store::new(Tier2Backend::S3(bad)).unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

#[tokio::test]
async fn invalid_keys_are_permanent_failures_not_rewritten_keys() {
    let store = Tier2Store::new(Tier2Backend::Memory).unwrap();
    for key in ["a//b", "a/../b", "/leading"] {
        assert_eq!(
            store
                .put(key, Bytes::from_static(b"x"), PutMode::Overwrite)
                .await,
            Err(aof2_core::io::ObjectErrorKind::Permanent),
            "{key}"
        );
    }
    assert_eq!(
        store.list("").await.unwrap(),
        Vec::new(),
        "nothing was written"
    );
}

/// A one-thread HTTP server answering `GET /<bucket>/status/<code>` with that status
/// (and an S3 error body), so the error classification is checked against the
/// messages `object_store` really produces.
fn status_server() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            let status: u16 = request_line
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.rsplit('/').next())
                .and_then(|code| code.parse().ok())
                .unwrap_or(500);
            let code = match status {
                503 => "SlowDown",
                500 => "InternalError",
                _ => "SomethingElse",
            };
            let body = format!(
                "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
            );
            let response = format!(
                "HTTP/1.1 {status} Status\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    address
}

#[tokio::test]
async fn http_statuses_classify_as_object_store_reports_them() {
    use aof2_core::io::ObjectErrorKind;
    let address = status_server();
    let store = Tier2Store::new(Tier2Backend::S3(S3Settings {
        endpoint: Some(format!("http://{address}")),
        ..settings("http://127.0.0.1", true)
    }))
    .unwrap();
    for (status, kind) in [
        (503, ObjectErrorKind::Throttled),
        (429, ObjectErrorKind::Throttled),
        (500, ObjectErrorKind::Transient),
        (502, ObjectErrorKind::Transient),
        (504, ObjectErrorKind::Transient),
        (408, ObjectErrorKind::Transient),
        (400, ObjectErrorKind::Permanent),
        (403, ObjectErrorKind::Permanent),
        (401, ObjectErrorKind::Permanent),
        (404, ObjectErrorKind::NotFound),
    ] {
        let result = store.get(&format!("status/{status}")).await;
        assert_eq!(result, Err(kind), "HTTP {status}");
    }
}
