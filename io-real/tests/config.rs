//! The configuration file: defaults, the example file, round trips, errors naming the
//! key and the value, environment overrides and their precedence, secret redaction.
//!
//! **Invariants checked**
//! - No file and no environment gives the defaults, which map to the core's defaults.
//! - docs/aof2.example.toml parses to the defaults and lists every key.
//! - Every section survives TOML serialisation and parsing unchanged.
//! - Each bad value, unknown key, bad unit or bad environment value is refused with a
//!   message naming the file or variable, the key path and the value.
//! - Precedence: environment over file, explicit path over `AOF2_CONFIG`.
//! - `access_key` and `secret_key` never appear in `Debug` output or in an error.

use aof2_io_real::config::{
    AofManagerConfig, ConfigError, FlushPolicySetting, Secret, Tier2Backend, Tier2BackendKind,
};
use aof2_io_real::core::retry::Jitter;
use aof2_io_real::core::store::StoreConfig;
use aof2_io_real::core::stream::FlushPolicy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../docs/aof2.example.toml");
const ACCESS: &str = "AKIAEXAMPLEACCESS";
const SECRET: &str = "wJalrXUtnFEMI-very-secret";

/// An environment of the given variables only.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// A file with `text` in a directory of its own, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("aof2-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("aof2.toml");
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn error_of(text: &str) -> String {
    match AofManagerConfig::from_toml(text) {
        Ok(config) => panic!("accepted {text:?} as {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn no_file_no_env_is_the_defaults() {
    let config = AofManagerConfig::load(None, &env(&[])).unwrap();
    assert_eq!(config, AofManagerConfig::default());
    assert_eq!(config.to_store_config().unwrap(), StoreConfig::default());
    assert_eq!(config.root(), Path::new("./aof2-data"));
    assert_eq!(
        config.tier2_backend().unwrap(),
        Tier2Backend::Local {
            path: PathBuf::from("./aof2-data/tier2")
        }
    );
    assert!(!config.manifest_log_only());
    // The runbook's defaults: Tier 1 3 attempts 50 ms, Tier 2 3 attempts 100 ms.
    let store = config.to_store_config().unwrap();
    assert_eq!(store.tier1.max_retries, 3);
    assert_eq!(store.tier1.retry_backoff_ms, 50);
    assert_eq!(store.tier2.retry.max_attempts, 3);
    assert_eq!(store.tier2.retry.base_delay_ms, 100);
    // An empty file is the defaults too.
    assert_eq!(
        AofManagerConfig::from_toml("").unwrap(),
        AofManagerConfig::default()
    );
}

#[test]
fn example_file_is_the_defaults_and_lists_every_key() {
    assert_eq!(
        AofManagerConfig::from_toml(EXAMPLE).unwrap(),
        AofManagerConfig::default()
    );
    // Every key the defaults serialise is set in the example, and nothing else.
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => keys(inner, &format!("{path}."), out),
                _ => out.push(path),
            }
        }
    }
    let mut example_keys = Vec::new();
    keys(&EXAMPLE.parse().unwrap(), "", &mut example_keys);
    let mut default_keys = Vec::new();
    let default_text = toml::to_string(&AofManagerConfig::default()).unwrap();
    keys(&default_text.parse().unwrap(), "", &mut default_keys);
    example_keys.sort();
    default_keys.sort();
    assert_eq!(example_keys, default_keys);
    // The keys that are absent by default are shown commented out.
    for key in [
        "path",
        "endpoint",
        "region",
        "bucket",
        "access_key",
        "secret_key",
        "allow_http",
        "max_age",
        "max_bytes",
    ] {
        assert!(
            EXAMPLE.contains(&format!("\n# {key} = ")),
            "the example does not show `{key}`"
        );
    }
}

/// A config that differs from the defaults in every section.
fn everything_changed() -> AofManagerConfig {
    let mut config = AofManagerConfig {
        root: PathBuf::from("/var/lib/aof2"),
        ..AofManagerConfig::default()
    };
    config.store.rng_seed = 42;
    config.store.tier0.cluster_max_bytes = 3 << 30;
    config.store.tier0.activation_queue_warn_threshold = 9;
    let tier1 = &mut config.store.tier1;
    tier1.max_bytes = 10 << 30;
    tier1.max_retries = 5;
    tier1.retry_backoff = Duration::from_millis(75);
    tier1.compression_level = 7;
    tier1.frame_raw_bytes_target = 1_000_000;
    tier1.compression_concurrency = 3;
    tier1.hydration_concurrency = 6;
    let tier2 = &mut config.store.tier2;
    tier2.backend = Tier2BackendKind::S3;
    tier2.endpoint = Some("https://s3.example.com".into());
    tier2.region = Some("eu-west-1".into());
    tier2.bucket = Some("logs".into());
    tier2.access_key = Some(Secret::new(ACCESS));
    tier2.secret_key = Some(Secret::new(SECRET));
    tier2.allow_http = Some(false);
    tier2.upload_concurrency = 16;
    tier2.delete_concurrency = 2;
    tier2.fetch_concurrency = 32;
    tier2.retry.max_attempts = 7;
    tier2.retry.base_delay = Duration::from_millis(250);
    tier2.retry.max_delay = Duration::from_secs(30);
    tier2.retry.jitter = Jitter::Full;
    tier2.retention.max_age = Some(Duration::from_secs(30 * 86_400));
    tier2.retention.max_bytes = Some(1 << 40);
    config.stream.segment_target_bytes = 128 << 20;
    config.stream.segment_max_age = Duration::from_secs(90);
    config.stream.record_payload_bytes_max = 1 << 20;
    config.flush.policy = FlushPolicySetting::Bytes(1 << 20);
    config.flush.max_unflushed_bytes = 64 << 20;
    config.flush.max_retries = 5;
    config.manifest.chunk_capacity_bytes = 512 << 10;
    config.manifest.rotation_period = Duration::from_millis(500);
    config.manifest.log_only = true;
    config
}

#[test]
fn every_section_round_trips() {
    let config = everything_changed();
    config.validate().unwrap();
    let text = toml::to_string(&config).unwrap();
    assert_eq!(
        AofManagerConfig::from_toml(&text).unwrap(),
        config,
        "{text}"
    );
    // Sizes are written with units where exact, durations always.
    assert!(text.contains("cluster_max_bytes = \"3GiB\""), "{text}");
    assert!(text.contains("frame_raw_bytes_target = 1000000"), "{text}");
    assert!(text.contains("retry_backoff = \"75ms\""), "{text}");
    assert!(text.contains("max_age = \"30days\""), "{text}");

    // The other flush policies and backends.
    for (policy, core) in [
        (FlushPolicySetting::EveryAppend, FlushPolicy::EveryAppend),
        (
            FlushPolicySetting::Interval(Duration::from_millis(5)),
            FlushPolicy::IntervalMs(5),
        ),
    ] {
        let mut config = config.clone();
        config.flush.policy = policy;
        let text = toml::to_string(&config).unwrap();
        let back = AofManagerConfig::from_toml(&text).unwrap();
        assert_eq!(back, config, "{text}");
        assert_eq!(back.to_store_config().unwrap().stream.flush, core);
    }
    for text in [
        "[store.tier2]\nbackend = \"memory\"\n",
        "[store.tier2]\nbackend = \"local\"\npath = \"/mnt/cold\"\n",
    ] {
        let config = AofManagerConfig::from_toml(text).unwrap();
        let again = toml::to_string(&config).unwrap();
        assert_eq!(AofManagerConfig::from_toml(&again).unwrap(), config);
    }

    // Each section's values reach the core's structs.
    let store = config.to_store_config().unwrap();
    assert_eq!(store.rng_seed, 42);
    assert_eq!(store.tier0.cluster_max_bytes, 3 << 30);
    assert_eq!(store.tier0.activation_queue_warn_threshold, 9);
    assert_eq!(store.tier1.max_bytes, 10 << 30);
    assert_eq!(store.tier1.max_retries, 5);
    assert_eq!(store.tier1.retry_backoff_ms, 75);
    assert_eq!(store.tier1.compression_level, 7);
    assert_eq!(store.tier1.frame_raw_bytes_target, 1_000_000);
    assert_eq!(store.tier1.compression_concurrency, 3);
    assert_eq!(store.tier1.hydration_concurrency, 6);
    assert_eq!(store.tier2.upload_concurrency, 16);
    assert_eq!(store.tier2.delete_concurrency, 2);
    assert_eq!(store.tier2.fetch_concurrency, 32);
    assert_eq!(store.tier2.retry.max_attempts, 7);
    assert_eq!(store.tier2.retry.base_delay_ms, 250);
    assert_eq!(store.tier2.retry.max_delay_ms, 30_000);
    assert_eq!(store.tier2.retry.jitter, Jitter::Full);
    assert_eq!(store.tier2.retention.max_age_ms, Some(30 * 86_400_000));
    assert_eq!(store.tier2.retention.max_bytes, Some(1 << 40));
    assert_eq!(store.stream.segment_target_bytes, 128 << 20);
    assert_eq!(store.stream.segment_max_age_ms, 90_000);
    assert_eq!(store.stream.record_payload_bytes_max, 1 << 20);
    assert_eq!(store.stream.flush, FlushPolicy::Bytes(1 << 20));
    assert_eq!(store.stream.max_unflushed_bytes, 64 << 20);
    assert_eq!(store.stream.flush_max_retries, 5);
    assert_eq!(store.manifest.chunk_capacity_bytes, 512 << 10);
    assert_eq!(store.manifest.rotation_period_ms, 500);
    assert!(config.manifest_log_only());
    let Tier2Backend::S3(s3) = config.tier2_backend().unwrap() else {
        panic!("not s3");
    };
    assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.com"));
    assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
    assert_eq!(s3.bucket, "logs");
    let (access, secret) = s3.credentials.unwrap();
    assert_eq!((access.expose(), secret.expose()), (ACCESS, SECRET));
    assert!(!s3.allow_http);
}

#[test]
fn sizes_and_durations_in_the_file() {
    let config = AofManagerConfig::from_toml(
        "[store.tier0]\ncluster_max_bytes = 2147483648\n\
         [store.tier1]\nmax_bytes = \"8 GiB\"\nretry_backoff = \"1s 500ms\"\n\
         [stream]\nsegment_max_age = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(config.store.tier0.cluster_max_bytes, 2 << 30);
    assert_eq!(config.store.tier1.max_bytes, 8 << 30);
    assert_eq!(
        config.store.tier1.retry_backoff,
        Duration::from_millis(1500)
    );
    assert_eq!(config.stream.segment_max_age, Duration::from_secs(3600));
}

#[test]
fn bad_values_name_the_key_and_the_value() {
    // (file text, key path, value as written) for each section.
    let cases = [
        (
            "[manifest]\nsnapshot_interval = \"10ms\"",
            "manifest.snapshot_interval",
            "\"10ms\"",
        ),
        (
            "[manifest]\nsnapshot_every_records = 99999999999",
            "manifest.snapshot_every_records",
            "99999999999",
        ),
        (
            "[store.tier0]\ncluster_max_bytes = 512",
            "store.tier0.cluster_max_bytes",
            "512",
        ),
        (
            "[store.tier0]\nactivation_queue_warn_threshold = 0",
            "store.tier0.activation_queue_warn_threshold",
            "0",
        ),
        (
            "[store.tier1]\nmax_bytes = \"512KiB\"",
            "store.tier1.max_bytes",
            "\"512KiB\"",
        ),
        (
            "[store.tier1]\nmax_retries = 0",
            "store.tier1.max_retries",
            "0",
        ),
        (
            "[store.tier1]\nretry_backoff = \"11m\"",
            "store.tier1.retry_backoff",
            "\"11m\"",
        ),
        (
            "[store.tier1]\ncompression_level = 30",
            "store.tier1.compression_level",
            "30",
        ),
        (
            "[store.tier1]\nframe_raw_bytes_target = \"32MiB\"",
            "store.tier1.frame_raw_bytes_target",
            "\"32MiB\"",
        ),
        (
            "[store.tier1]\nframe_raw_bytes_target = \"8GiB\"",
            "store.tier1.frame_raw_bytes_target",
            "\"8GiB\"",
        ),
        (
            "[store.tier1]\nhydration_concurrency = 65",
            "store.tier1.hydration_concurrency",
            "65",
        ),
        (
            "[store.tier2]\nfetch_concurrency = 0",
            "store.tier2.fetch_concurrency",
            "0",
        ),
        (
            "[store.tier2]\nupload_concurrency = 300",
            "store.tier2.upload_concurrency",
            "300",
        ),
        (
            "[store.tier2.retry]\nmax_attempts = 0",
            "store.tier2.retry.max_attempts",
            "0",
        ),
        (
            "[store.tier2.retry]\nmax_delay = \"1h\"",
            "store.tier2.retry.max_delay",
            "\"1h\"",
        ),
        (
            "[store.tier2.retry]\nbase_delay = \"10s\"",
            "store.tier2.retry.base_delay",
            "\"10s\"",
        ),
        (
            "[store.tier2.retention]\nmax_bytes = 0",
            "store.tier2.retention.max_bytes",
            "0",
        ),
        (
            "[store.tier2.retention]\nmax_age = \"0s\"",
            "store.tier2.retention.max_age",
            "\"0s\"",
        ),
        (
            "[stream]\nsegment_target_bytes = 100",
            "stream.segment_target_bytes",
            "100",
        ),
        (
            "[stream]\nsegment_max_age = \"8days\"",
            "stream.segment_max_age",
            "\"8days\"",
        ),
        (
            "[stream]\nrecord_payload_bytes_max = \"16MiB\"",
            "stream.record_payload_bytes_max",
            "\"16MiB\"",
        ),
        (
            "[flush]\nmax_unflushed_bytes = \"2GiB\"",
            "flush.max_unflushed_bytes",
            "\"2GiB\"",
        ),
        ("[flush]\nmax_retries = 33", "flush.max_retries", "33"),
        (
            "[flush]\npolicy = { bytes = \"64MiB\" }",
            "flush.policy.bytes",
            "\"64MiB\"",
        ),
        (
            "[flush]\npolicy = { interval = \"2m\" }",
            "flush.policy.interval",
            "\"2m\"",
        ),
        (
            "[manifest]\nchunk_capacity_bytes = \"4KiB\"",
            "manifest.chunk_capacity_bytes",
            "\"4KiB\"",
        ),
        (
            "[manifest]\nrotation_period = \"2h\"",
            "manifest.rotation_period",
            "\"2h\"",
        ),
    ];
    for (text, key, value) in cases {
        let message = error_of(text);
        // Each value sits on line 2, written as the error quotes it.
        let line = text.lines().nth(1).unwrap();
        let column = line.rfind(value).unwrap() + 1;
        let expected = format!("<string>:2:{column}: {key} = {value}: ");
        assert!(message.starts_with(&expected), "{text:?}: {message}");
    }
    // The core's reason, with its range, follows.
    assert_eq!(
        error_of("[store.tier0]\ncluster_max_bytes = 512"),
        "<string>:2:21: store.tier0.cluster_max_bytes = 512: tier0.cluster_max_bytes = 512: \
         must be at least 1048576 bytes (is the unit bytes?)"
    );
}

#[test]
fn unknown_keys_bad_types_and_bad_units_name_key_and_position() {
    let cases = [
        // (text, expected message)
        (
            "[store.tier0]\ncluster_max_byte = 5",
            "<string>:2:1: store.tier0.cluster_max_byte: unknown field `cluster_max_byte`, \
             expected `cluster_max_bytes` or `activation_queue_warn_threshold`",
        ),
        (
            "bogus = 1",
            "<string>:1:1: bogus: unknown field `bogus`, expected one of `root`, `store`, \
             `stream`, `flush`, `manifest`",
        ),
        (
            // The seed's name in the seed's place is accepted; the core's is not.
            "[store.tier1]\nretry_backoff_ms = 50",
            "<string>:2:1: store.tier1.retry_backoff_ms: unknown field `retry_backoff_ms`",
        ),
        (
            "[store.tier1]\n\nretry_backoff = \"50 parsecs\"",
            "<string>:3:17: store.tier1.retry_backoff: \"50 parsecs\" is not a duration",
        ),
        (
            "[store.tier1]\nretry_backoff = 50",
            "<string>:2:17: store.tier1.retry_backoff: invalid type: integer `50`, expected a \
             duration with a unit",
        ),
        (
            "[store.tier1]\nretry_backoff = \"1500us\"",
            "<string>:2:17: store.tier1.retry_backoff: \"1500us\" is not a whole number of \
             milliseconds",
        ),
        (
            "[store.tier0]\ncluster_max_bytes = \"64MB\"",
            "<string>:2:21: store.tier0.cluster_max_bytes: \"64MB\" is not a size: write an \
             integer and one of B, KiB, MiB, GiB, TiB",
        ),
        (
            "[store.tier0]\ncluster_max_bytes = -1",
            "<string>:2:21: store.tier0.cluster_max_bytes: -1 is negative",
        ),
        (
            "[flush]\npolicy = \"sometimes\"",
            "<string>:2:10: flush.policy: unknown variant `sometimes`",
        ),
        (
            "[store.tier2]\nbackend = \"ftp\"",
            "<string>:2:11: store.tier2.backend: unknown variant `ftp`, expected one of \
             `local`, `s3`, `memory`",
        ),
        (
            "[store.tier2.retry]\njitter = \"some\"",
            "<string>:2:10: store.tier2.retry.jitter: unknown variant `some`",
        ),
        (
            "[manifest]\nlog_only = \"yes\"",
            "<string>:2:12: manifest.log_only: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (text, expected) in cases {
        let message = error_of(text);
        assert!(
            message.starts_with(expected),
            "{text:?}:\n{message}\n{expected}"
        );
    }
}

#[test]
fn syntax_errors_give_file_line_and_column() {
    let file = TempFile::new(
        "syntax",
        "root = \"/data\"\n[store.tier0\ncluster_max_bytes = 1\n",
    );
    let error = AofManagerConfig::load(Some(&file.path), &env(&[])).unwrap_err();
    let ConfigError::Syntax { line, column, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((*line, *column), (2, 13), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{}:2:13: TOML syntax error: ",
            file.path.display()
        )),
        "{message}"
    );
}

#[test]
fn errors_name_the_file_they_came_from() {
    let file = TempFile::new("names-file", "[store.tier1]\nmax_retries = 99\n");
    let message = AofManagerConfig::load(Some(&file.path), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "{}:2:15: store.tier1.max_retries = 99: ",
            file.path.display()
        )),
        "{message}"
    );
    let missing = file.dir.join("absent.toml");
    let error = AofManagerConfig::load(Some(&missing), &env(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read config file {}: ", missing.display())),
        "{error}"
    );
}

#[test]
fn aof2_config_is_read_when_no_path_is_given() {
    let file = TempFile::new("env-file", "root = \"/from/env\"\n");
    let other = TempFile::new("explicit-file", "root = \"/from/path\"\n");
    let path = file.path.to_str().unwrap();
    let from_env = AofManagerConfig::load(None, &env(&[("AOF2_CONFIG", path)])).unwrap();
    assert_eq!(from_env.root(), Path::new("/from/env"));
    // An explicit path (--config) wins over AOF2_CONFIG.
    let explicit =
        AofManagerConfig::load(Some(&other.path), &env(&[("AOF2_CONFIG", path)])).unwrap();
    assert_eq!(explicit.root(), Path::new("/from/path"));
    // AOF2_CONFIG naming a missing file is an error, not the defaults.
    let missing = file.dir.join("absent.toml");
    let error = AofManagerConfig::load(None, &env(&[("AOF2_CONFIG", missing.to_str().unwrap())]))
        .unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    let error = AofManagerConfig::load(None, &env(&[("AOF2_CONFIG", "")])).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("environment variable AOF2_CONFIG = \"\": is empty"),
        "{error}"
    );
}

#[test]
fn environment_beats_the_file() {
    let file = TempFile::new(
        "env-beats",
        "[store.tier2]\nbackend = \"s3\"\nendpoint = \"https://file.example\"\n\
         bucket = \"logs\"\naccess_key = \"file-access\"\nsecret_key = \"file-secret\"\n\
         [manifest]\nlog_only = true\n",
    );
    let from_file = AofManagerConfig::load(Some(&file.path), &env(&[])).unwrap();
    assert!(from_file.manifest_log_only());
    assert_eq!(
        from_file.store.tier2.endpoint.as_deref(),
        Some("https://file.example")
    );
    let config = AofManagerConfig::load(
        Some(&file.path),
        &env(&[
            ("AOF2_TIER2_ENDPOINT", "https://env.example"),
            ("AOF2_TIER2_ACCESS_KEY", ACCESS),
            ("AOF2_TIER2_SECRET_KEY", SECRET),
            ("AOF2_MANIFEST_LOG_ONLY", "0"),
        ]),
    )
    .unwrap();
    assert!(!config.manifest_log_only());
    let Tier2Backend::S3(s3) = config.tier2_backend().unwrap() else {
        panic!("not s3");
    };
    assert_eq!(s3.endpoint.as_deref(), Some("https://env.example"));
    assert_eq!(s3.bucket, "logs");
    let (access, secret) = s3.credentials.unwrap();
    assert_eq!((access.expose(), secret.expose()), (ACCESS, SECRET));
    // Every spelling of the flag.
    for (value, expected) in [
        ("1", true),
        ("true", true),
        ("TRUE", true),
        ("false", false),
    ] {
        let config =
            AofManagerConfig::load(None, &env(&[("AOF2_MANIFEST_LOG_ONLY", value)])).unwrap();
        assert_eq!(config.manifest_log_only(), expected, "{value}");
    }
}

#[test]
fn tier2_environment_sets_the_s3_backend() {
    // On the default (local) backend, an endpoint in the environment means S3, which
    // then needs a bucket from the file.
    let error =
        AofManagerConfig::load(None, &env(&[("AOF2_TIER2_ENDPOINT", "https://s3.example")]))
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "<defaults>: store.tier2.bucket = (absent): is required with backend = \"s3\" \
         (backend = \"s3\" because AOF2_TIER2_ENDPOINT is set)"
    );
    let file = TempFile::new(
        "env-s3",
        "[store.tier2]\nbackend = \"memory\"\nbucket = \"b\"\n",
    );
    // The file's memory backend would refuse `bucket`; the environment's keys make it S3.
    assert!(AofManagerConfig::load(Some(&file.path), &env(&[])).is_err());
    let config = AofManagerConfig::load(
        Some(&file.path),
        &env(&[
            ("AOF2_TIER2_ACCESS_KEY", ACCESS),
            ("AOF2_TIER2_SECRET_KEY", SECRET),
        ]),
    )
    .unwrap();
    assert_eq!(config.store.tier2.backend, Tier2BackendKind::S3);
    let Tier2Backend::S3(s3) = config.tier2_backend().unwrap() else {
        panic!("not s3");
    };
    assert_eq!(s3.endpoint, None);
    assert_eq!(s3.bucket, "b");
    // A local path in the file conflicts with an S3 backend set by the environment.
    let file = TempFile::new(
        "env-s3-path",
        "[store.tier2]\npath = \"cold\"\nbucket = \"b\"\n",
    );
    let error = AofManagerConfig::load(
        Some(&file.path),
        &env(&[("AOF2_TIER2_ENDPOINT", "https://s3.example")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.ends_with(
            "store.tier2.path = \"cold\": applies only to backend = \"local\", and the backend \
             is \"s3\" (backend = \"s3\" because AOF2_TIER2_ENDPOINT is set)"
        ),
        "{error}"
    );
}

#[test]
fn bad_environment_values_name_the_variable_and_value() {
    let error =
        AofManagerConfig::load(None, &env(&[("AOF2_MANIFEST_LOG_ONLY", "yes")])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "environment variable AOF2_MANIFEST_LOG_ONLY = \"yes\": must be 1, true, 0 or false"
    );
    for name in [
        "AOF2_TIER2_ENDPOINT",
        "AOF2_TIER2_ACCESS_KEY",
        "AOF2_TIER2_SECRET_KEY",
    ] {
        let error = AofManagerConfig::load(None, &env(&[(name, "")])).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("environment variable {name} = \"\": is empty")),
            "{error}"
        );
    }
    let error = AofManagerConfig::load(None, &env(&[("AOF2_TIER2_ENDPOINT", "s3.example.com")]))
        .unwrap_err();
    // The bucket is checked first; give one to reach the endpoint check.
    assert!(error.to_string().contains("store.tier2.bucket"), "{error}");
    let file = TempFile::new("env-endpoint", "[store.tier2]\nbucket = \"b\"\n");
    let error = AofManagerConfig::load(
        Some(&file.path),
        &env(&[("AOF2_TIER2_ENDPOINT", "s3.example.com")]),
    )
    .unwrap_err()
    .to_string();
    // The file's own endpoint is overridden: the error points at the environment, not
    // at the file's line.
    let file_with_endpoint = TempFile::new(
        "env-endpoint-over-file",
        "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"https://file.example\"\n",
    );
    let overridden = AofManagerConfig::load(
        Some(&file_with_endpoint.path),
        &env(&[("AOF2_TIER2_ENDPOINT", "ftp://env.example")]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        overridden,
        format!(
            "{}: store.tier2.endpoint = \"ftp://env.example\": must start with https:// (or \
             http:// with allow_http = true) (the value comes from AOF2_TIER2_ENDPOINT)",
            file_with_endpoint.path.display()
        )
    );
    // No position: the file does not hold the value.
    assert_eq!(
        error,
        format!(
            "{}: store.tier2.endpoint = \"s3.example.com\": must start with https:// (or \
             http:// with allow_http = true) (the value comes from AOF2_TIER2_ENDPOINT)",
            file.path.display()
        )
    );
}

#[test]
fn tier2_backend_keys_are_checked() {
    let cases = [
        (
            "[store.tier2]\nendpoint = \"https://x\"",
            "<string>:2:12: store.tier2.endpoint = \"https://x\": applies only to backend = \"s3\", \
             and the backend is \"local\"",
        ),
        (
            "[store.tier2]\nbackend = \"memory\"\npath = \"p\"",
            "<string>:3:8: store.tier2.path = \"p\": applies only to backend = \"local\", and the \
             backend is \"memory\"",
        ),
        (
            "[store.tier2]\nbackend = \"s3\"",
            "<string>: store.tier2.bucket = (absent): is required with backend = \"s3\"",
        ),
        (
            "[store.tier2]\nbackend = \"s3\"\nbucket = \"\"",
            "<string>:3:10: store.tier2.bucket = \"\": must not be empty",
        ),
        (
            "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://minio:9000\"",
            "<string>:4:12: store.tier2.endpoint = \"http://minio:9000\": is plain http: set \
             store.tier2.allow_http = true",
        ),
        (
            "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"https://\"",
            "<string>:4:12: store.tier2.endpoint = \"https://\": has no host",
        ),
        (
            "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\naccess_key = \"a\"",
            "<string>: store.tier2.secret_key = (absent): is required when access_key is set",
        ),
        (
            "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\nsecret_key = \"s\"",
            "<string>: store.tier2.access_key = (absent): is required when secret_key is set",
        ),
    ];
    for (text, expected) in cases {
        let message = error_of(text);
        assert!(
            message.starts_with(expected),
            "{text:?}:\n{message}\n{expected}"
        );
    }
    let minio = AofManagerConfig::from_toml(
        "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://minio:9000\"\n\
         allow_http = true\n",
    )
    .unwrap();
    let Tier2Backend::S3(s3) = minio.tier2_backend().unwrap() else {
        panic!("not s3");
    };
    assert!(s3.allow_http);
    assert_eq!(s3.credentials, None);
    let local =
        AofManagerConfig::from_toml("root = \"/r\"\n[store.tier2]\npath = \"/cold\"\n").unwrap();
    assert_eq!(
        local.tier2_backend().unwrap(),
        Tier2Backend::Local {
            path: PathBuf::from("/cold")
        }
    );
    let relative =
        AofManagerConfig::from_toml("root = \"/r\"\n[store.tier2]\npath = \"cold\"\n").unwrap();
    assert_eq!(
        relative.tier2_backend().unwrap(),
        Tier2Backend::Local {
            path: PathBuf::from("/r/cold")
        }
    );
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let leaks = |text: &str| text.contains(ACCESS) || text.contains(SECRET);
    let config = everything_changed();
    let debug = format!("{config:?} {:?}", config.tier2_backend().unwrap());
    assert!(!leaks(&debug), "{debug}");
    assert!(debug.contains("Secret(<redacted>)"), "{debug}");
    assert_eq!(format!("{:?}", Secret::new(SECRET)), "Secret(<redacted>)");

    let mut errors: Vec<ConfigError> = Vec::new();
    let bad_files = [
        // A syntax error on the secret's own line.
        format!("[store.tier2]\nbackend = \"s3\"\nsecret_key = \"{SECRET}\" x\n"),
        // An unterminated secret string.
        format!("[store.tier2]\nbackend = \"s3\"\nsecret_key = \"{SECRET}\n"),
        // Credentials with the wrong backend.
        format!("[store.tier2]\naccess_key = \"{ACCESS}\"\nsecret_key = \"{SECRET}\"\n"),
        // A secret without its partner.
        format!("[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\nsecret_key = \"{SECRET}\"\n"),
        // A later bad value in a file with credentials.
        format!(
            "[store.tier2]\nbackend = \"s3\"\nbucket = \"b\"\naccess_key = \"{ACCESS}\"\n\
             secret_key = \"{SECRET}\"\nfetch_concurrency = 0\n"
        ),
        // A misspelt key holding the secret.
        format!("[store.tier2]\nsecret_kye = \"{SECRET}\"\n"),
    ];
    for text in &bad_files {
        errors.push(AofManagerConfig::from_toml(text).unwrap_err());
    }
    // A numeric "secret" is refused without echoing it.
    errors.push(AofManagerConfig::from_toml("[store.tier2]\nsecret_key = 8675309\n").unwrap_err());
    // Credentials from the environment.
    errors.push(
        AofManagerConfig::load(
            None,
            &env(&[
                ("AOF2_TIER2_ACCESS_KEY", ACCESS),
                ("AOF2_TIER2_SECRET_KEY", SECRET),
            ]),
        )
        .unwrap_err(),
    );
    errors.push(
        AofManagerConfig::load(None, &env(&[("AOF2_TIER2_SECRET_KEY", SECRET)])).unwrap_err(),
    );
    for error in &errors {
        let shown = format!("{error} {error:?}");
        assert!(!leaks(&shown), "{shown}");
        assert!(!shown.contains("8675309"), "{shown}");
    }
    // The redacted errors still say where.
    assert!(
        errors[2]
            .to_string()
            .starts_with("<string>:2:14: store.tier2.access_key = \"<redacted>\": applies only to"),
        "{}",
        errors[2]
    );
}
