//! The configuration file of an AOF2 manager (`AofManagerConfig` in the runbook): TOML
//! read from `--config` or `AOF2_CONFIG`, environment overrides for Tier 2 and the
//! manifest, embedded defaults when there is no file at all, and the mapping onto the
//! core's [`StoreConfig`].
//!
//! The file is the operator's schema, not the core's structs: durations are written
//! with units (`retry_backoff = "50ms"`), sizes as integers of bytes or with a binary
//! unit (`cluster_max_bytes = "1GiB"`), and every table rejects unknown keys so a typo
//! is an error naming the key. Values are range-checked by the core's own `validate()`s
//! ([`AofManagerConfig::to_store_config`]); a failure names the file, the full key path
//! (`store.tier0.cluster_max_bytes`) and the value as the file spells it, with the line
//! and column of the value whenever the file holds it (syntax errors always have one).
//!
//! [`AofManagerConfig::load`] applies, lowest precedence first: the defaults, the file
//! (the explicit path, else `AOF2_CONFIG`, else none), then the environment
//! (`AOF2_TIER2_ENDPOINT`, `AOF2_TIER2_ACCESS_KEY`, `AOF2_TIER2_SECRET_KEY`,
//! `AOF2_MANIFEST_LOG_ONLY`). Setting any of the three Tier 2 variables sets
//! `store.tier2.backend = "s3"`: credentials or an endpoint in the environment only
//! make sense for S3. The environment is passed in as a function, never read here.
//! docs/operations.md ("Configuration file") is the operator's reference;
//! docs/aof2.example.toml lists every key with its default.
//!
//! **Invariants**
//! - A config returned by [`AofManagerConfig::load`] or [`AofManagerConfig::from_toml`]
//!   passed [`AofManagerConfig::validate`]: [`AofManagerConfig::to_store_config`] and
//!   [`AofManagerConfig::tier2_backend`] succeed on it.
//! - [`AofManagerConfig::default`] is valid and maps to [`StoreConfig::default`].
//! - Serialising a config to TOML and reading it back gives an equal config (durations
//!   are whole milliseconds, sizes are exact).
//! - A [`Secret`] (`access_key`, `secret_key`) never appears in `Debug` output or in a
//!   [`ConfigError`]: `Secret`'s `Debug` redacts, it has no `Display`, and errors quote
//!   TOML messages without the source line.

use aof2_core::manifest::writer::{ConfigError as ManifestConfigError, ManifestWriterConfig};
use aof2_core::retry::{Jitter, RetryConfigError, RetryPolicy};
use aof2_core::store::{StoreConfig, StoreError};
use aof2_core::stream::{FlushPolicy, StreamConfig, StreamConfigError};
use aof2_core::tier0::{Tier0CacheConfig, Tier0ConfigError};
use aof2_core::tier1::{Tier1Config, Tier1ConfigError};
use aof2_core::tier2::{RetentionPolicy, Tier2Config, Tier2ConfigError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Names the config file when no `path` is given to [`AofManagerConfig::load`].
pub const ENV_CONFIG: &str = "AOF2_CONFIG";
/// Overrides `store.tier2.endpoint` and sets `store.tier2.backend = "s3"`.
pub const ENV_TIER2_ENDPOINT: &str = "AOF2_TIER2_ENDPOINT";
/// Overrides `store.tier2.access_key` and sets `store.tier2.backend = "s3"`.
pub const ENV_TIER2_ACCESS_KEY: &str = "AOF2_TIER2_ACCESS_KEY";
/// Overrides `store.tier2.secret_key` and sets `store.tier2.backend = "s3"`.
pub const ENV_TIER2_SECRET_KEY: &str = "AOF2_TIER2_SECRET_KEY";
/// Overrides `manifest.log_only` (the runbook's `tier1_manifest_log_only`): `1`,
/// `true`, `0` or `false`.
pub const ENV_MANIFEST_LOG_ONLY: &str = "AOF2_MANIFEST_LOG_ONLY";

/// Where local data lives when the file does not say.
pub const ROOT_DEFAULT: &str = "./aof2-data";
/// The directory of the `local` Tier 2 backend, under the root, when the file does not
/// say.
pub const TIER2_LOCAL_DIR_DEFAULT: &str = "tier2";

/// The process environment, for [`AofManagerConfig::load`] in binaries. A value that is
/// not UTF-8 is converted lossily (and then refused by whatever checks it).
#[must_use]
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
}

// ---- The file ----

/// Everything an AOF2 manager is configured with (`AofManagerConfig` in the runbook).
///
/// Missing keys take their defaults; unknown keys are errors. Build it with
/// [`AofManagerConfig::load`] (file and environment) or [`AofManagerConfig::from_toml`];
/// a value built or edited in code is checked by [`AofManagerConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AofManagerConfig {
    /// Directory of all local data (Tier 0 segments, Tier 1 artifacts, manifests).
    /// Relative paths are relative to the working directory of the process.
    pub root: PathBuf,
    /// The three tiers.
    pub store: StoreSection,
    /// Segment rollover and record size of every stream.
    pub stream: StreamSection,
    /// When every stream fsyncs.
    pub flush: FlushSection,
    /// The manifest writer of every stream.
    pub manifest: ManifestSection,
}

impl Default for AofManagerConfig {
    fn default() -> Self {
        AofManagerConfig {
            root: PathBuf::from(ROOT_DEFAULT),
            store: StoreSection::default(),
            stream: StreamSection::default(),
            flush: FlushSection::default(),
            manifest: ManifestSection::default(),
        }
    }
}

/// `[store]`: the tiers, and the seed of their retry jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Seeds the retry jitter of Tier 1 and Tier 2 ([`StoreConfig::rng_seed`]). Give
    /// each node its own value so that their retries spread out.
    pub rng_seed: u64,
    pub tier0: Tier0Section,
    pub tier1: Tier1Section,
    pub tier2: Tier2Section,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            rng_seed: StoreConfig::default().rng_seed,
            tier0: Tier0Section::default(),
            tier1: Tier1Section::default(),
            tier2: Tier2Section::default(),
        }
    }
}

/// `[store.tier0]`: the hot cache ([`Tier0CacheConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tier0Section {
    #[serde(with = "size")]
    pub cluster_max_bytes: u64,
    pub activation_queue_warn_threshold: u32,
}

impl Default for Tier0Section {
    fn default() -> Self {
        let core = Tier0CacheConfig::default();
        Tier0Section {
            cluster_max_bytes: core.cluster_max_bytes,
            activation_queue_warn_threshold: core.activation_queue_warn_threshold,
        }
    }
}

/// `[store.tier1]`: the warm cache ([`Tier1Config`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tier1Section {
    #[serde(with = "size")]
    pub max_bytes: u64,
    /// Attempts, the first try included.
    pub max_retries: u32,
    /// Backoff after the first failed attempt (whole milliseconds).
    #[serde(with = "duration")]
    pub retry_backoff: Duration,
    pub compression_level: i32,
    #[serde(with = "size")]
    pub frame_raw_bytes_target: u64,
    pub compression_concurrency: u32,
    pub hydration_concurrency: u32,
}

impl Default for Tier1Section {
    fn default() -> Self {
        let core = Tier1Config::default();
        Tier1Section {
            max_bytes: core.max_bytes,
            max_retries: core.max_retries,
            retry_backoff: Duration::from_millis(core.retry_backoff_ms),
            compression_level: core.compression_level,
            frame_raw_bytes_target: u64::from(core.frame_raw_bytes_target),
            compression_concurrency: core.compression_concurrency,
            hydration_concurrency: core.hydration_concurrency,
        }
    }
}

/// Which object store Tier 2 is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier2BackendKind {
    /// A local directory (`store.tier2.path`, default `<root>/tier2`): works on a fresh
    /// machine with no server, but is only as durable as that disk.
    #[default]
    Local,
    /// An S3-compatible object store.
    S3,
    /// In memory, lost at exit: for tests and demos only.
    Memory,
}

impl Tier2BackendKind {
    /// The name used in the file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier2BackendKind::Local => "local",
            Tier2BackendKind::S3 => "s3",
            Tier2BackendKind::Memory => "memory",
        }
    }
}

/// `[store.tier2]`: the object store and its transfers ([`Tier2Config`]).
///
/// The backend's keys sit in the same table as the transfer knobs; a key of another
/// backend than the chosen one is an error ([`AofManagerConfig::tier2_backend`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tier2Section {
    pub backend: Tier2BackendKind,
    /// `local` only: the directory (default `<root>/tier2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `s3` only: the endpoint URL; absent means AWS's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `s3` only: absent means the S3 client's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `s3` only, required there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `s3` only; given together with `secret_key`, or neither (the client's own
    /// credential chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<Secret>,
    /// `s3` only; see `access_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    /// `s3` only: allow an `http://` endpoint (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    pub upload_concurrency: u32,
    pub delete_concurrency: u32,
    pub fetch_concurrency: u32,
    pub retry: RetrySection,
    pub retention: RetentionSection,
    /// The environment variable that set `backend = "s3"`, for error messages.
    #[serde(skip)]
    backend_set_by: Option<&'static str>,
}

impl Default for Tier2Section {
    fn default() -> Self {
        let core = Tier2Config::default();
        Tier2Section {
            backend: Tier2BackendKind::default(),
            path: None,
            endpoint: None,
            region: None,
            bucket: None,
            access_key: None,
            secret_key: None,
            allow_http: None,
            upload_concurrency: core.upload_concurrency,
            delete_concurrency: core.delete_concurrency,
            fetch_concurrency: core.fetch_concurrency,
            retry: RetrySection::default(),
            retention: RetentionSection::default(),
            backend_set_by: None,
        }
    }
}

/// `[store.tier2.retry]`: retries of uploads, deletes and fetches ([`RetryPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts, the first try included.
    pub max_attempts: u32,
    /// Backoff after the first failed attempt; doubles after each further failure.
    #[serde(with = "duration")]
    pub base_delay: Duration,
    /// Cap on one backoff, before jitter.
    #[serde(with = "duration")]
    pub max_delay: Duration,
    pub jitter: Jitter,
}

impl Default for RetrySection {
    fn default() -> Self {
        let core = Tier2Config::default().retry;
        RetrySection {
            max_attempts: core.max_attempts,
            base_delay: Duration::from_millis(core.base_delay_ms),
            max_delay: Duration::from_millis(core.max_delay_ms),
            jitter: core.jitter,
        }
    }
}

/// `[store.tier2.retention]`: how long cold segments are kept ([`RetentionPolicy`]).
/// Both rules are off when absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    #[serde(with = "duration_option", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(with = "size_option", skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// `[stream]`: segment rollover and record size ([`StreamConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSection {
    #[serde(with = "size")]
    pub segment_target_bytes: u64,
    #[serde(with = "duration")]
    pub segment_max_age: Duration,
    #[serde(with = "size")]
    pub record_payload_bytes_max: u64,
}

impl Default for StreamSection {
    fn default() -> Self {
        let core = StreamConfig::default();
        StreamSection {
            segment_target_bytes: core.segment_target_bytes,
            segment_max_age: Duration::from_millis(core.segment_max_age_ms),
            record_payload_bytes_max: u64::from(core.record_payload_bytes_max),
        }
    }
}

/// When appends are fsynced: `policy = "every_append"`, `policy = { bytes = "1MiB" }`
/// or `policy = { interval = "5ms" }` ([`FlushPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FlushPolicySetting {
    #[default]
    EveryAppend,
    Bytes(#[serde(with = "size")] u64),
    Interval(#[serde(with = "duration")] Duration),
}

/// `[flush]`: the stream's flush knobs ([`StreamConfig`]'s `flush`,
/// `max_unflushed_bytes`, `flush_max_retries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlushSection {
    pub policy: FlushPolicySetting,
    #[serde(with = "size")]
    pub max_unflushed_bytes: u64,
    /// Rewrite-and-fsync retries after a failed flush before the stream is poisoned.
    pub max_retries: u32,
}

impl Default for FlushSection {
    fn default() -> Self {
        let core = StreamConfig::default();
        FlushSection {
            policy: match core.flush {
                FlushPolicy::EveryAppend => FlushPolicySetting::EveryAppend,
                FlushPolicy::Bytes(bytes) => FlushPolicySetting::Bytes(bytes),
                FlushPolicy::IntervalMs(ms) => {
                    FlushPolicySetting::Interval(Duration::from_millis(ms))
                }
            },
            max_unflushed_bytes: core.max_unflushed_bytes,
            max_retries: core.flush_max_retries,
        }
    }
}

/// `[manifest]`: the manifest chunk writer ([`ManifestWriterConfig`]) and log-only
/// bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestSection {
    #[serde(with = "size")]
    pub chunk_capacity_bytes: u64,
    #[serde(with = "duration")]
    pub rotation_period: Duration,
    /// Bootstrap from the manifest log alone (the runbook's `tier1_manifest_log_only`,
    /// env `AOF2_MANIFEST_LOG_ONLY`): recovery ignores snapshots and replays every
    /// chunk (`StoreConfig::manifest_log_only`).
    pub log_only: bool,
    /// Snapshot a stream after this many manifest records (0 = off).
    pub snapshot_every_records: u64,
    /// Snapshot a stream this long after its last snapshot ("0s" = off).
    #[serde(with = "duration")]
    pub snapshot_interval: Duration,
}

impl Default for ManifestSection {
    fn default() -> Self {
        let core = ManifestWriterConfig::default();
        ManifestSection {
            chunk_capacity_bytes: u64::from(core.chunk_capacity_bytes),
            rotation_period: Duration::from_millis(core.rotation_period_ms),
            log_only: false,
            snapshot_every_records: StoreConfig::default().snapshot_every_records,
            snapshot_interval: Duration::from_millis(StoreConfig::default().snapshot_interval_ms),
        }
    }
}

/// A credential. Its `Debug` prints `Secret(<redacted>)` and it has no `Display`, so it
/// cannot end up in a log line or an error by accident; [`Secret::expose`] gives the
/// value to the code that needs it. Serialising writes the value (a config written back
/// to TOML keeps its credentials, like the file it came from).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the client that authenticates with it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        // Serde's default "invalid type" message quotes the value; a mistyped secret
        // (`secret_key = 12345`) must not be echoed, so every non-string is refused
        // with a message of our own.
        const NOT_A_STRING: &str = "must be a string (the value is not shown)";

        impl<'de> serde::de::Visitor<'de> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_owned()))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }

        deserializer.deserialize_str(SecretVisitor)
    }
}

// ---- The resolved Tier 2 backend ----

/// The object store Tier 2 is, checked and with its defaults filled in
/// ([`AofManagerConfig::tier2_backend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier2Backend {
    /// A local directory (already joined to the root when relative).
    Local {
        path: PathBuf,
    },
    S3(S3Settings),
    Memory,
}

/// The settings of an S3-compatible Tier 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `http://` or `https://` URL; `None` means AWS's own endpoint.
    pub endpoint: Option<String>,
    /// `None` means the S3 client's default region.
    pub region: Option<String>,
    pub bucket: String,
    /// Access key and secret key, or `None` for the client's own credential chain.
    pub credentials: Option<(Secret, Secret)>,
    pub allow_http: bool,
}

impl Tier2Backend {
    /// The backend as the object-store port takes it. An S3 region left out is
    /// `us-east-1`, which is also what S3-compatible servers accept by default.
    #[must_use]
    pub fn into_store_backend(self) -> crate::tier2_store::Tier2Backend {
        use crate::tier2_store::{S3Settings as StoreS3, Tier2Backend as Store};
        match self {
            Tier2Backend::Local { path } => Store::LocalDir(path),
            Tier2Backend::Memory => Store::Memory,
            Tier2Backend::S3(s3) => {
                let (access_key, secret_key) = match s3.credentials {
                    Some((access, secret)) => (
                        Some(access.expose().to_owned()),
                        Some(secret.expose().to_owned()),
                    ),
                    None => (None, None),
                };
                Store::S3(StoreS3 {
                    endpoint: s3.endpoint,
                    region: s3.region.unwrap_or_else(|| S3_REGION_DEFAULT.to_owned()),
                    bucket: s3.bucket,
                    access_key,
                    secret_key,
                    allow_http: s3.allow_http,
                })
            }
        }
    }
}

/// The region of an S3 backend that does not name one.
pub const S3_REGION_DEFAULT: &str = "us-east-1";

// ---- Errors ----

/// Why a configuration was refused. Every message says where (file, key path or
/// environment variable) and what (the value as written), except that credentials are
/// never quoted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: TOML syntax error: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// An unknown key, a value of the wrong type, a bad unit.
    #[error("{}{}: {key}: {message}", file.display(), Position(*position))]
    Key {
        file: PathBuf,
        /// `(line, column)`, both from 1.
        position: Option<(usize, usize)>,
        /// The key path, e.g. `store.tier1.retry_backoff`.
        key: String,
        message: String,
    },
    /// A value out of range, or keys that do not go together.
    #[error("{}{}: {key} = {value}: {reason}", file.display(), Position(*position))]
    Invalid {
        /// The config file, or `<defaults>` / `<string>` when there was none.
        file: PathBuf,
        /// `(line, column)` of the value in the file; `None` when the value is a
        /// default, is absent, or came from the environment.
        position: Option<(usize, usize)>,
        key: String,
        /// The value as the file spells it (durations and sizes with units).
        value: String,
        reason: String,
    },
    #[error("environment variable {name} = {value:?}: {reason}")]
    Env {
        name: &'static str,
        /// The value. Credential variables are only ever refused when empty, so no
        /// credential is quoted here.
        value: String,
        reason: String,
    },
}

/// `:line:column`, or nothing.
struct Position(Option<(usize, usize)>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// The file name in errors about a config that came from no file.
const NO_FILE_DEFAULTS: &str = "<defaults>";
/// The file name in errors about a config parsed from a string.
const NO_FILE_STRING: &str = "<string>";

impl ConfigError {
    /// Names `file` in an [`ConfigError::Invalid`], with the position of its key in
    /// `text` (the file's contents, if any) unless the environment set that key, in
    /// which case the reason says which variable did.
    fn in_file(self, file: &Path, text: Option<&str>, from_env: &[EnvOverride]) -> Self {
        match self {
            ConfigError::Invalid {
                key,
                value,
                mut reason,
                ..
            } => {
                let set_by = from_env.iter().find(|done| done.key == key);
                if let Some(done) = set_by {
                    reason.push_str(&format!(" (the value comes from {})", done.variable));
                }
                let position = match (text, set_by) {
                    (Some(text), None) => locate(text, &key),
                    _ => None,
                };
                ConfigError::Invalid {
                    file: file.to_path_buf(),
                    position,
                    key,
                    value,
                    reason,
                }
            }
            other => other,
        }
    }
}

/// A key the environment set.
#[derive(Debug, Clone, Copy)]
struct EnvOverride {
    key: &'static str,
    variable: &'static str,
}

/// The `(line, column)` of the value at the dotted `key` path in the TOML `text`, if
/// the text sets it.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = table.get(part)?;
        if parts.peek().is_none() {
            return Some(line_column(text, value.span().start));
        }
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    None
}

fn invalid(
    key: impl Into<String>,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        file: PathBuf::from(NO_FILE_DEFAULTS),
        position: None,
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// A value the core refused: `known` is the key (under `section`) and its value as the
/// file spells it; `None` for a core error this mapping does not know yet, which is
/// then named by its section and the core's reason alone.
fn refused(section: &str, known: Option<(&str, String)>, reason: impl fmt::Display) -> ConfigError {
    match known {
        Some((key, value)) => invalid(format!("{section}.{key}"), value, reason.to_string()),
        None => invalid(section, "(see the reason)", reason.to_string()),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

// ---- Loading ----

impl AofManagerConfig {
    /// Reads the configuration: the file at `path`, else the file named by
    /// `AOF2_CONFIG`, else the defaults; then the environment overrides; then
    /// [`AofManagerConfig::validate`]. `env` looks a variable up (pass
    /// [`process_env`] in a binary, a map in tests).
    pub fn load(
        path: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => Some(path.to_path_buf()),
            None => match env(ENV_CONFIG) {
                Some(value) if value.is_empty() => {
                    return Err(ConfigError::Env {
                        name: ENV_CONFIG,
                        value,
                        reason: "is empty: unset it to run on the defaults, or name a file".into(),
                    });
                }
                Some(value) => Some(PathBuf::from(value)),
                None => None,
            },
        };
        let (mut config, text) = match &file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                    path: file.clone(),
                    source,
                })?;
                (Self::parse(&text, file)?, Some(text))
            }
            None => (AofManagerConfig::default(), None),
        };
        let from_env = config.apply_env(env)?;
        let named = file.unwrap_or_else(|| PathBuf::from(NO_FILE_DEFAULTS));
        config
            .validate()
            .map_err(|error| error.in_file(&named, text.as_deref(), &from_env))?;
        Ok(config)
    }

    /// Reads a configuration from TOML text and validates it; no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file = Path::new(NO_FILE_STRING);
        let config = Self::parse(text, file)?;
        config
            .validate()
            .map_err(|error| error.in_file(file, Some(text), &[]))?;
        Ok(config)
    }

    /// Deserialises without range checks; `file` names the source in errors.
    fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let deserializer = toml::de::Deserializer::parse(text).map_err(|error| {
            let (line, column) = line_column(text, error.span().map_or(0, |span| span.start));
            ConfigError::Syntax {
                file: file.to_path_buf(),
                line,
                column,
                message: error.message().to_owned(),
            }
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            ConfigError::Key {
                file: file.to_path_buf(),
                position: inner.span().map(|span| line_column(text, span.start)),
                key,
                message: inner.message().to_owned(),
            }
        })
    }

    /// Applies the environment overrides (see the module docs) and says which keys
    /// they set.
    fn apply_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<EnvOverride>, ConfigError> {
        let mut done = Vec::new();
        let tier2 = &mut self.store.tier2;
        if let Some(endpoint) = env(ENV_TIER2_ENDPOINT) {
            if endpoint.is_empty() {
                return Err(ConfigError::Env {
                    name: ENV_TIER2_ENDPOINT,
                    value: endpoint,
                    reason: "is empty: unset it, or give an http:// or https:// URL".into(),
                });
            }
            tier2.endpoint = Some(endpoint);
            tier2.set_backend_s3(ENV_TIER2_ENDPOINT);
            done.push(EnvOverride {
                key: "store.tier2.endpoint",
                variable: ENV_TIER2_ENDPOINT,
            });
        }
        for name in [ENV_TIER2_ACCESS_KEY, ENV_TIER2_SECRET_KEY] {
            if let Some(value) = env(name) {
                if value.is_empty() {
                    return Err(ConfigError::Env {
                        name,
                        value,
                        reason: "is empty: unset it, or give the credential".into(),
                    });
                }
                let (key, slot) = if name == ENV_TIER2_ACCESS_KEY {
                    ("store.tier2.access_key", &mut tier2.access_key)
                } else {
                    ("store.tier2.secret_key", &mut tier2.secret_key)
                };
                *slot = Some(Secret(value));
                tier2.set_backend_s3(name);
                done.push(EnvOverride {
                    key,
                    variable: name,
                });
            }
        }
        if let Some(value) = env(ENV_MANIFEST_LOG_ONLY) {
            self.manifest.log_only = match value.to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: ENV_MANIFEST_LOG_ONLY,
                        value,
                        reason: "must be 1, true, 0 or false".into(),
                    });
                }
            };
            done.push(EnvOverride {
                key: "manifest.log_only",
                variable: ENV_MANIFEST_LOG_ONLY,
            });
        }
        if let Some(variable) = self.store.tier2.backend_set_by {
            done.push(EnvOverride {
                key: "store.tier2.backend",
                variable,
            });
        }
        Ok(done)
    }

    /// Checks everything: [`AofManagerConfig::to_store_config`] and
    /// [`AofManagerConfig::tier2_backend`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.to_store_config()?;
        self.tier2_backend()?;
        Ok(())
    }

    /// The root directory of local data.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the manifest bootstraps from its log alone (`manifest.log_only`).
    #[must_use]
    pub fn manifest_log_only(&self) -> bool {
        self.manifest.log_only
    }
}

impl Tier2Section {
    fn set_backend_s3(&mut self, by: &'static str) {
        if self.backend != Tier2BackendKind::S3 {
            self.backend = Tier2BackendKind::S3;
            self.backend_set_by.get_or_insert(by);
        }
    }

    /// ` (backend = "s3" because AOF2_... is set)`, or nothing.
    fn backend_note(&self) -> String {
        self.backend_set_by.map_or_else(String::new, |name| {
            format!(" (backend = \"s3\" because {name} is set)")
        })
    }
}

// ---- Mapping onto the core ----

/// Milliseconds of `duration` at `key`, refusing fractions and overflow.
fn millis(key: &str, duration: Duration) -> Result<u64, ConfigError> {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(invalid(
            key,
            duration_text(duration),
            "must be a whole number of milliseconds",
        ));
    }
    u64::try_from(duration.as_millis())
        .map_err(|_| invalid(key, duration_text(duration), "is too long"))
}

/// `bytes` at `key` as a `u32`.
fn bytes_u32(key: &str, bytes: u64) -> Result<u32, ConfigError> {
    u32::try_from(bytes).map_err(|_| {
        invalid(
            key,
            size_text(bytes),
            format!("must be at most {} bytes", u32::MAX),
        )
    })
}

fn quoted(text: impl fmt::Display) -> String {
    format!("\"{text}\"")
}

/// A duration as the file spells it, quoted.
fn duration_text(duration: Duration) -> String {
    quoted(humantime::format_duration(duration))
}

/// A size as the file spells it: an integer, or quoted with a unit.
fn size_text(bytes: u64) -> String {
    match size::unit_form(bytes) {
        Some(text) => quoted(text),
        None => bytes.to_string(),
    }
}

impl AofManagerConfig {
    /// The core's configuration, every part checked by its own `validate()`. An error
    /// names the key path and the value as the file spells it, followed by the core's
    /// reason (which names its own knob and range).
    pub fn to_store_config(&self) -> Result<StoreConfig, ConfigError> {
        let config = StoreConfig {
            tier0: self.tier0_config()?,
            tier1: self.tier1_config()?,
            tier2: self.tier2_config()?,
            stream: self.stream_config()?,
            manifest: self.manifest_config()?,
            rng_seed: self.store.rng_seed,
            manifest_log_only: self.manifest_log_only(),
            snapshot_every_records: self.manifest.snapshot_every_records,
            snapshot_interval_ms: millis(
                "manifest.snapshot_interval",
                self.manifest.snapshot_interval,
            )?,
        };
        // Every part passed above but the snapshot knobs; this is the store's own check.
        config.validate().map_err(|error| match &error {
            StoreError::Config {
                what: "snapshot_every_records",
                ..
            } => invalid(
                "manifest.snapshot_every_records",
                self.manifest.snapshot_every_records.to_string(),
                error.to_string(),
            ),
            StoreError::Config {
                what: "snapshot_interval_ms",
                ..
            } => invalid(
                "manifest.snapshot_interval",
                duration_text(self.manifest.snapshot_interval),
                error.to_string(),
            ),
            _ => invalid("store", "(whole store)", error.to_string()),
        })?;
        Ok(config)
    }

    fn tier0_config(&self) -> Result<Tier0CacheConfig, ConfigError> {
        let section = &self.store.tier0;
        let config = Tier0CacheConfig {
            cluster_max_bytes: section.cluster_max_bytes,
            activation_queue_warn_threshold: section.activation_queue_warn_threshold,
        };
        config.validate().map_err(|error| {
            let known = match error {
                Tier0ConfigError::ClusterMaxBytesTooSmall { .. } => {
                    Some(("cluster_max_bytes", size_text(section.cluster_max_bytes)))
                }
                Tier0ConfigError::WarnThresholdZero
                | Tier0ConfigError::WarnThresholdTooLarge { .. } => Some((
                    "activation_queue_warn_threshold",
                    section.activation_queue_warn_threshold.to_string(),
                )),
                _ => None,
            };
            refused("store.tier0", known, &error)
        })?;
        Ok(config)
    }

    fn tier1_config(&self) -> Result<Tier1Config, ConfigError> {
        let section = &self.store.tier1;
        let config = Tier1Config {
            max_bytes: section.max_bytes,
            max_retries: section.max_retries,
            retry_backoff_ms: millis("store.tier1.retry_backoff", section.retry_backoff)?,
            compression_level: section.compression_level,
            frame_raw_bytes_target: bytes_u32(
                "store.tier1.frame_raw_bytes_target",
                section.frame_raw_bytes_target,
            )?,
            compression_concurrency: section.compression_concurrency,
            hydration_concurrency: section.hydration_concurrency,
        };
        config.validate().map_err(|error| {
            let known = match error {
                Tier1ConfigError::MaxBytesTooSmall { .. } => {
                    Some(("max_bytes", size_text(section.max_bytes)))
                }
                Tier1ConfigError::MaxRetriesOutOfRange { .. } => {
                    Some(("max_retries", section.max_retries.to_string()))
                }
                Tier1ConfigError::RetryBackoffTooLarge { .. } => {
                    Some(("retry_backoff", duration_text(section.retry_backoff)))
                }
                Tier1ConfigError::CompressionLevelOutOfRange { .. } => {
                    Some(("compression_level", section.compression_level.to_string()))
                }
                Tier1ConfigError::FrameRawBytesTargetOutOfRange { .. } => Some((
                    "frame_raw_bytes_target",
                    size_text(section.frame_raw_bytes_target),
                )),
                Tier1ConfigError::CompressionConcurrencyOutOfRange { .. } => Some((
                    "compression_concurrency",
                    section.compression_concurrency.to_string(),
                )),
                Tier1ConfigError::HydrationConcurrencyOutOfRange { .. } => Some((
                    "hydration_concurrency",
                    section.hydration_concurrency.to_string(),
                )),
                _ => None,
            };
            refused("store.tier1", known, &error)
        })?;
        Ok(config)
    }

    fn tier2_config(&self) -> Result<Tier2Config, ConfigError> {
        let section = &self.store.tier2;
        let retry = &section.retry;
        let retention = &section.retention;
        let config = Tier2Config {
            retry: RetryPolicy {
                max_attempts: retry.max_attempts,
                base_delay_ms: millis("store.tier2.retry.base_delay", retry.base_delay)?,
                max_delay_ms: millis("store.tier2.retry.max_delay", retry.max_delay)?,
                jitter: retry.jitter,
            },
            upload_concurrency: section.upload_concurrency,
            delete_concurrency: section.delete_concurrency,
            fetch_concurrency: section.fetch_concurrency,
            retention: RetentionPolicy {
                max_age_ms: retention
                    .max_age
                    .map(|age| millis("store.tier2.retention.max_age", age))
                    .transpose()?,
                max_bytes: retention.max_bytes,
            },
        };
        config.validate().map_err(|error| {
            let known = match &error {
                Tier2ConfigError::Retry(retry_error) => match retry_error {
                    RetryConfigError::MaxAttemptsZero
                    | RetryConfigError::MaxAttemptsTooLarge { .. } => {
                        Some(("retry.max_attempts", retry.max_attempts.to_string()))
                    }
                    RetryConfigError::MaxDelayTooLarge { .. } => {
                        Some(("retry.max_delay", duration_text(retry.max_delay)))
                    }
                    RetryConfigError::BaseAboveMax { .. } => {
                        Some(("retry.base_delay", duration_text(retry.base_delay)))
                    }
                    _ => None,
                },
                Tier2ConfigError::ConcurrencyZero { knob }
                | Tier2ConfigError::ConcurrencyTooLarge { knob, .. } => match *knob {
                    "upload_concurrency" => Some(section.upload_concurrency),
                    "delete_concurrency" => Some(section.delete_concurrency),
                    "fetch_concurrency" => Some(section.fetch_concurrency),
                    _ => None,
                }
                .map(|value| (*knob, value.to_string())),
                Tier2ConfigError::RetentionZero { knob } => match *knob {
                    "max_bytes" => retention
                        .max_bytes
                        .map(|bytes| ("retention.max_bytes", size_text(bytes))),
                    "max_age_ms" => retention
                        .max_age
                        .map(|age| ("retention.max_age", duration_text(age))),
                    _ => None,
                },
                _ => None,
            };
            refused("store.tier2", known, &error)
        })?;
        Ok(config)
    }

    fn stream_config(&self) -> Result<StreamConfig, ConfigError> {
        let stream = &self.stream;
        let flush = &self.flush;
        let config = StreamConfig {
            segment_target_bytes: stream.segment_target_bytes,
            segment_max_age_ms: millis("stream.segment_max_age", stream.segment_max_age)?,
            flush: match flush.policy {
                FlushPolicySetting::EveryAppend => FlushPolicy::EveryAppend,
                FlushPolicySetting::Bytes(bytes) => FlushPolicy::Bytes(bytes),
                FlushPolicySetting::Interval(interval) => {
                    FlushPolicy::IntervalMs(millis("flush.policy.interval", interval)?)
                }
            },
            max_unflushed_bytes: flush.max_unflushed_bytes,
            flush_max_retries: flush.max_retries,
            record_payload_bytes_max: bytes_u32(
                "stream.record_payload_bytes_max",
                stream.record_payload_bytes_max,
            )?,
        };
        config.validate().map_err(|error| {
            let known = match error {
                StreamConfigError::SegmentTargetBytes { .. } => Some((
                    "stream.segment_target_bytes",
                    size_text(stream.segment_target_bytes),
                )),
                StreamConfigError::SegmentMaxAgeMs { .. } => Some((
                    "stream.segment_max_age",
                    duration_text(stream.segment_max_age),
                )),
                StreamConfigError::RecordPayloadBytesMax { .. } => Some((
                    "stream.record_payload_bytes_max",
                    size_text(stream.record_payload_bytes_max),
                )),
                StreamConfigError::MaxUnflushedBytes { .. } => Some((
                    "flush.max_unflushed_bytes",
                    size_text(flush.max_unflushed_bytes),
                )),
                StreamConfigError::FlushMaxRetries { .. } => {
                    Some(("flush.max_retries", flush.max_retries.to_string()))
                }
                StreamConfigError::FlushBytes { value, .. } => {
                    Some(("flush.policy.bytes", size_text(value)))
                }
                StreamConfigError::FlushIntervalMs { .. } => match flush.policy {
                    FlushPolicySetting::Interval(interval) => {
                        Some(("flush.policy.interval", duration_text(interval)))
                    }
                    _ => None,
                },
                _ => None,
            };
            // The keys above are whole paths: the core's stream knobs live in two
            // tables of the file.
            match known {
                Some((key, value)) => invalid(key, value, error.to_string()),
                None => refused("stream", None, &error),
            }
        })?;
        Ok(config)
    }

    fn manifest_config(&self) -> Result<ManifestWriterConfig, ConfigError> {
        let section = &self.manifest;
        let config = ManifestWriterConfig {
            chunk_capacity_bytes: bytes_u32(
                "manifest.chunk_capacity_bytes",
                section.chunk_capacity_bytes,
            )?,
            rotation_period_ms: millis("manifest.rotation_period", section.rotation_period)?,
        };
        config.validate().map_err(|error| {
            let known = match error {
                ManifestConfigError::ChunkCapacityOutOfRange { .. } => Some((
                    "chunk_capacity_bytes",
                    size_text(section.chunk_capacity_bytes),
                )),
                ManifestConfigError::RotationPeriodOutOfRange { .. } => {
                    Some(("rotation_period", duration_text(section.rotation_period)))
                }
                _ => None,
            };
            refused("manifest", known, &error)
        })?;
        Ok(config)
    }

    /// The Tier 2 backend, checked: the keys of the chosen backend only, `bucket`
    /// required for `s3`, `access_key` and `secret_key` together, an `http://`
    /// endpoint only with `allow_http = true`.
    pub fn tier2_backend(&self) -> Result<Tier2Backend, ConfigError> {
        let section = &self.store.tier2;
        let backend = section.backend;
        let note = section.backend_note();
        let foreign = |key: &str, value: String, belongs: &str| {
            invalid(
                format!("store.tier2.{key}"),
                value,
                format!(
                    "applies only to backend = \"{belongs}\", and the backend is \"{}\"{note}",
                    backend.as_str()
                ),
            )
        };
        if let Some(path) = &section.path
            && backend != Tier2BackendKind::Local
        {
            return Err(foreign("path", quoted(path.display()), "local"));
        }
        if backend != Tier2BackendKind::S3 {
            let text = |value: &Option<String>| value.as_deref().map(quoted);
            for (key, value) in [
                ("endpoint", text(&section.endpoint)),
                ("region", text(&section.region)),
                ("bucket", text(&section.bucket)),
                (
                    "access_key",
                    section.access_key.as_ref().map(|_| quoted("<redacted>")),
                ),
                (
                    "secret_key",
                    section.secret_key.as_ref().map(|_| quoted("<redacted>")),
                ),
                (
                    "allow_http",
                    section.allow_http.map(|allow| allow.to_string()),
                ),
            ] {
                if let Some(value) = value {
                    return Err(foreign(key, value, "s3"));
                }
            }
        }
        match backend {
            Tier2BackendKind::Local => {
                let path = section
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(TIER2_LOCAL_DIR_DEFAULT));
                if path.as_os_str().is_empty() {
                    return Err(invalid(
                        "store.tier2.path",
                        quoted(""),
                        "must name a directory",
                    ));
                }
                Ok(Tier2Backend::Local {
                    path: self.root.join(path),
                })
            }
            Tier2BackendKind::Memory => Ok(Tier2Backend::Memory),
            Tier2BackendKind::S3 => self.s3_settings(),
        }
    }

    fn s3_settings(&self) -> Result<Tier2Backend, ConfigError> {
        let section = &self.store.tier2;
        let note = section.backend_note();
        for (key, value) in [
            ("endpoint", &section.endpoint),
            ("region", &section.region),
            ("bucket", &section.bucket),
        ] {
            if value.as_deref() == Some("") {
                return Err(invalid(
                    format!("store.tier2.{key}"),
                    quoted(""),
                    "must not be empty (omit the key for the default)",
                ));
            }
        }
        let Some(bucket) = section.bucket.clone() else {
            return Err(invalid(
                "store.tier2.bucket",
                "(absent)",
                format!("is required with backend = \"s3\"{note}"),
            ));
        };
        let allow_http = section.allow_http.unwrap_or(false);
        if let Some(endpoint) = &section.endpoint {
            if let Some(rest) = endpoint.strip_prefix("http://") {
                if !allow_http {
                    return Err(invalid(
                        "store.tier2.endpoint",
                        quoted(endpoint),
                        "is plain http: set store.tier2.allow_http = true to allow it",
                    ));
                }
                if rest.is_empty() {
                    return Err(invalid(
                        "store.tier2.endpoint",
                        quoted(endpoint),
                        "has no host",
                    ));
                }
            } else if let Some(rest) = endpoint.strip_prefix("https://") {
                if rest.is_empty() {
                    return Err(invalid(
                        "store.tier2.endpoint",
                        quoted(endpoint),
                        "has no host",
                    ));
                }
            } else {
                return Err(invalid(
                    "store.tier2.endpoint",
                    quoted(endpoint),
                    "must start with https:// (or http:// with allow_http = true)",
                ));
            }
        }
        let credentials = match (&section.access_key, &section.secret_key) {
            (Some(access), Some(secret)) => Some((access.clone(), secret.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "store.tier2.secret_key",
                    "(absent)",
                    "is required when access_key is set (AOF2_TIER2_SECRET_KEY in the environment)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "store.tier2.access_key",
                    "(absent)",
                    "is required when secret_key is set (AOF2_TIER2_ACCESS_KEY in the environment)",
                ));
            }
        };
        for (key, secret) in [
            ("access_key", &section.access_key),
            ("secret_key", &section.secret_key),
        ] {
            if secret
                .as_ref()
                .is_some_and(|secret| secret.expose().is_empty())
            {
                return Err(invalid(
                    format!("store.tier2.{key}"),
                    quoted(""),
                    "must not be empty",
                ));
            }
        }
        Ok(Tier2Backend::S3(S3Settings {
            endpoint: section.endpoint.clone(),
            region: section.region.clone(),
            bucket,
            credentials,
            allow_http,
        }))
    }
}

// ---- Units ----

/// Durations in the file: a string with units, parsed by `humantime` (`"50ms"`,
/// `"5s"`, `"10m"`, `"1h 30m"`, `"7days"`). A bare number is refused: its unit would be
/// a guess. Values must be whole milliseconds.
mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration with a unit, like \"50ms\", \"5s\" or \"10m\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let duration = humantime::parse_duration(text).map_err(|error| {
            format!(
                "\"{text}\" is not a duration ({error}); write it like \"50ms\", \"5s\" or \"10m\""
            )
        })?;
        if !duration.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(format!("\"{text}\" is not a whole number of milliseconds"));
        }
        Ok(duration)
    }

    #[derive(Deserialize)]
    #[serde(transparent)]
    pub(super) struct Wrapped(#[serde(deserialize_with = "deserialize")] pub Duration);
}

/// `Option<Duration>` in the file, for keys that are off when absent.
mod duration_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Some(super::duration::Wrapped::deserialize(deserializer)?.0))
    }
}

/// Sizes in the file: an integer of bytes, or a string of an integer and a binary unit
/// (`"64MiB"`, `"1 GiB"`; units `B`, `KiB`, `MiB`, `GiB`, `TiB`). Written by hand
/// rather than with a size crate because those accept decimal units (`MB`, `k`)
/// and fractions and saturate on overflow; a budget must be exact, so anything but an
/// integer times a binary unit is refused, as is overflow. Serialised with the
/// largest unit that divides the value exactly, else as an integer.
mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    const UNITS: [(&str, u32); 5] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];

    /// The value with the largest binary unit that divides it, or `None` for 0 and
    /// values that are not a whole number of KiB.
    pub fn unit_form(bytes: u64) -> Option<String> {
        UNITS[..4].iter().find_map(|&(unit, shift)| {
            (bytes != 0 && bytes.trailing_zeros() >= shift)
                .then(|| format!("{}{unit}", bytes >> shift))
        })
    }

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        match unit_form(*value) {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_u64(*value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = u64;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: an integer of bytes, or a string like \"64MiB\"")
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
                Ok(value)
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom(format!("{value} is negative: a size is at least 0")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
                parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }

    pub fn parse(text: &str) -> Result<u64, String> {
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, rest) = text.split_at(digits_end);
        let unit = rest.strip_prefix(' ').unwrap_or(rest);
        let bad = || {
            format!(
                "\"{text}\" is not a size: write an integer and one of B, KiB, MiB, GiB, TiB, \
                 like \"64MiB\""
            )
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let shift = UNITS
            .iter()
            .find_map(|&(name, shift)| (name == unit).then_some(shift))
            .ok_or_else(bad)?;
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("\"{text}\" is too large: a size is at most 16EiB - 1"))?;
        number
            .checked_mul(1u64 << shift)
            .ok_or_else(|| format!("\"{text}\" is too large: a size is at most 16EiB - 1"))
    }

    #[derive(Deserialize)]
    #[serde(transparent)]
    pub(super) struct Wrapped(#[serde(deserialize_with = "deserialize")] pub u64);
}

/// `Option<u64>` sizes in the file, for keys that are off when absent.
mod size_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::size::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        Ok(Some(super::size::Wrapped::deserialize(deserializer)?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_exactly_or_are_refused() {
        assert_eq!(size::parse("0B"), Ok(0));
        assert_eq!(size::parse("64MiB"), Ok(64 << 20));
        assert_eq!(size::parse("1 GiB"), Ok(1 << 30));
        assert_eq!(size::parse("3KiB"), Ok(3072));
        assert_eq!(size::parse("16777215TiB"), Ok(16_777_215 << 40));
        for bad in [
            "",
            "MiB",
            "64",
            "64 ",
            "64MB",
            "64mib",
            "1.5GiB",
            "-1KiB",
            "64  MiB",
            "16777216TiB",
        ] {
            assert!(size::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            size::parse("99999999999999999999B")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn sizes_print_with_the_largest_exact_unit() {
        assert_eq!(size::unit_form(0), None);
        assert_eq!(size::unit_form(1000), None);
        assert_eq!(size::unit_form(1024).as_deref(), Some("1KiB"));
        assert_eq!(size::unit_form(3 << 20).as_deref(), Some("3MiB"));
        assert_eq!(size::unit_form(1536 << 20).as_deref(), Some("1536MiB"));
        assert_eq!(size::unit_form(4 << 40).as_deref(), Some("4TiB"));
        for bytes in [1, 1000, 1024, 1536 << 20, 4 << 40, u64::MAX, 1 << 63] {
            let text = size_text(bytes);
            let parsed = if text.starts_with('"') {
                size::parse(text.trim_matches('"')).unwrap()
            } else {
                text.parse().unwrap()
            };
            assert_eq!(parsed, bytes, "{text}");
        }
    }

    #[test]
    fn durations_need_a_unit_and_whole_milliseconds() {
        assert_eq!(duration::parse("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(duration::parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration::parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(duration::parse("50").is_err());
        assert!(duration::parse("50 parsecs").is_err());
        assert!(
            duration::parse("1500us")
                .unwrap_err()
                .contains("whole number of milliseconds")
        );
        assert_eq!(
            millis("k", Duration::from_micros(1500))
                .unwrap_err()
                .to_string(),
            "<defaults>: k = \"1ms 500us\": must be a whole number of milliseconds"
        );
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "bé = " : the 'é' is two bytes, one character.
        assert_eq!(line_column(text, 6 + "bé = ".len()), (2, 6));
        assert_eq!(line_column(text, 10_000), (3, 1));
    }
}
