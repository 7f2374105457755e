//! The production [`ObjectStorePort`]: Tier 2 over the `object_store` crate, with one
//! of three backends chosen by configuration ([`Tier2Backend`]):
//!
//! | backend | `object_store` type | use |
//! | --- | --- | --- |
//! | [`Tier2Backend::S3`] | `AmazonS3` | Amazon S3 or any S3-compatible server (path-style addressing) |
//! | [`Tier2Backend::LocalDir`] | `LocalFileSystem` (fsync on) | the embedded default, `<root>/tier2` |
//! | [`Tier2Backend::Memory`] | `InMemory` | tests |
//!
//! The port's put modes map onto `object_store`'s: `Overwrite` to `Overwrite`,
//! `IfAbsent` to `Create` (`If-None-Match: *` on S3), `IfMatch { etag }` to
//! `Update` (`If-Match` on S3). `LocalFileSystem` has no `Update`, so the local
//! directory does compare-and-swap itself: every mutation of that backend holds one
//! lock, and `IfMatch` reads the current etag and writes only if it matches. That is
//! atomic for one process, which is what the embedded default is (one store per
//! directory); it is not a lock between processes.
//!
//! Errors map onto [`ObjectErrorKind`] by what the caller should do ([`classify`]):
//! `NotFound`, `AlreadyExists`, `Precondition` map to their kinds; 503, 429 and
//! `SlowDown` are `Throttled`; timeouts, connection failures and other 5xx are
//! `Transient`; credentials, permissions and other 4xx are `Permanent`. The detail is
//! logged under `aof2::tier2::store`; the core only needs the kind.
//!
//! `object_store`'s own retries are switched off (`max_retries = 0`): the core's
//! Tier 2 machine retries every retryable failure itself, with seeded jitter, a
//! bounded attempt count and a manifest-visible event per attempt. Retrying inside the
//! client as well would multiply the attempts (10 x 3 with the defaults), hide them
//! from the events and metrics, and stretch one attempt to minutes.
//!
//! Credentials never reach logs, `Debug` output or error messages: [`S3Settings`] has a
//! redacting `Debug`, [`Tier2Store`]'s `Debug` names only the backend, bucket and
//! endpoint, and every message built from a settings value or a store error passes
//! through [`Redactor`], which replaces the secret key wherever it appears.
//!
//! **Invariants**
//! - Only keys that parse as `object_store` paths are used; a key that does not is a
//!   `Permanent` failure, never a rewritten key.
//! - `list` returns keys in byte order of the key, each starting with the prefix.
//! - `get_range` returns bytes `start.min(size)..end.clamp(start, size)` and the size.
//! - Deleting a missing key succeeds.
//! - Plain HTTP is used only with `allow_http` set and a loopback endpoint.

use aof2_core::driver::ObjectStorePort;
use aof2_core::io::{ObjectErrorKind, ObjectMeta, PutMode};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutOptions,
    RetryConfig, UpdateVersion,
};
use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Log target of object-store failures.
pub const LOG_TARGET_TIER2_STORE: &str = "aof2::tier2::store";

/// How long one HTTP request to S3 may take, connect to last byte. Large enough for a
/// segment artifact over a slow link; a request that takes longer fails `Transient`
/// and the core retries it.
pub const S3_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// How long connecting to S3 may take.
pub const S3_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Where an S3 or S3-compatible Tier 2 lives and how to sign requests to it.
///
/// Plain data, converted from the configuration layer; [`Tier2Store::new`] validates
/// it. `Debug` never shows the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `https://host[:port]` of an S3-compatible server; `None` is Amazon S3 in
    /// `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Both keys or neither: with neither, credentials come from the instance
    /// metadata service (no environment is read here).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Allows an `http://` endpoint, and only a loopback one (a local test server).
    pub allow_http: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |key: &Option<String>| key.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &redacted(&self.access_key))
            .field("secret_key", &redacted(&self.secret_key))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Which object store holds Tier 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier2Backend {
    /// Amazon S3 or an S3-compatible server.
    S3(S3Settings),
    /// Objects as files under a local directory (created if missing). The embedded
    /// default is `<root>/tier2`.
    LocalDir(PathBuf),
    /// Objects in memory, gone when the store is dropped (tests).
    Memory,
}

/// A Tier 2 configuration that cannot work; the message says which setting and why.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Tier2StoreError {
    #[error("tier2 S3 bucket is empty: set the bucket name")]
    BucketEmpty,
    #[error(
        "tier2 S3 region is empty: set a region (any name, e.g. us-east-1, for S3-compatible servers)"
    )]
    RegionEmpty,
    #[error("tier2 S3 credentials are incomplete: set both access_key and secret_key, or neither")]
    CredentialsIncomplete,
    #[error("tier2 S3 endpoint {endpoint:?} is not a valid URL: {reason}")]
    EndpointInvalid { endpoint: String, reason: String },
    #[error(
        "tier2 S3 endpoint {endpoint:?} carries user info: put credentials in access_key/secret_key, not in the URL"
    )]
    EndpointHasUserInfo { endpoint: String },
    #[error("tier2 S3 endpoint {endpoint:?}: scheme must be http or https")]
    EndpointScheme { endpoint: String },
    #[error(
        "tier2 S3 endpoint {endpoint:?} uses plain HTTP but allow_http is off: use https, or set allow_http for a loopback test server"
    )]
    HttpNotAllowed { endpoint: String },
    #[error(
        "tier2 S3 endpoint {endpoint:?} uses plain HTTP to a non-loopback host: credentials and data would cross the network unencrypted; use https"
    )]
    HttpNotLoopback { endpoint: String },
    #[error("tier2 S3 client for bucket {bucket:?} could not be built: {message}")]
    S3Build { bucket: String, message: String },
    #[error("tier2 local directory {path:?} could not be opened: {message}")]
    LocalDir { path: PathBuf, message: String },
}

/// Replaces a secret wherever it appears in a message built from a store error.
#[derive(Clone, Default)]
struct Redactor {
    secret: Option<String>,
}

impl Redactor {
    fn redact(&self, message: String) -> String {
        match &self.secret {
            Some(secret) if !secret.is_empty() => message.replace(secret.as_str(), "<redacted>"),
            _ => message,
        }
    }
}

/// What the store is, for `Debug` and logs (never a credential).
#[derive(Debug, Clone)]
enum Description {
    S3 {
        bucket: String,
        endpoint: Option<String>,
    },
    LocalDir(PathBuf),
    Memory,
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Description::S3 {
                bucket,
                endpoint: Some(endpoint),
            } => write!(f, "s3 bucket {bucket} at {endpoint}"),
            Description::S3 {
                bucket,
                endpoint: None,
            } => write!(f, "s3 bucket {bucket}"),
            Description::LocalDir(path) => write!(f, "local directory {}", path.display()),
            Description::Memory => f.write_str("memory"),
        }
    }
}

/// Tier 2 over `object_store`. Cheap to share behind an `Arc`.
pub struct Tier2Store {
    store: Arc<dyn ObjectStore>,
    description: Description,
    redactor: Redactor,
    /// Held by every mutation of the local-directory backend, whose conditional puts
    /// are done here (see the module doc); `None` for backends that do them natively.
    local_mutations: Option<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Tier2Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier2Store")
            .field("backend", &self.description)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Tier2Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tier2 on {}", self.description)
    }
}

impl Tier2Store {
    /// Opens Tier 2 on `backend`. Validates S3 settings (see [`Tier2StoreError`]);
    /// creates a local directory if missing. Makes no request.
    pub fn new(backend: Tier2Backend) -> Result<Self, Tier2StoreError> {
        match backend {
            Tier2Backend::S3(settings) => Self::s3(&settings),
            Tier2Backend::LocalDir(path) => Self::local_dir(path),
            Tier2Backend::Memory => Ok(Tier2Store {
                store: Arc::new(InMemory::new()),
                description: Description::Memory,
                redactor: Redactor::default(),
                local_mutations: None,
            }),
        }
    }

    fn s3(settings: &S3Settings) -> Result<Self, Tier2StoreError> {
        let redactor = Redactor {
            secret: settings.secret_key.clone(),
        };
        if settings.bucket.trim().is_empty() {
            return Err(Tier2StoreError::BucketEmpty);
        }
        if settings.region.trim().is_empty() {
            return Err(Tier2StoreError::RegionEmpty);
        }
        let uses_http = match &settings.endpoint {
            Some(endpoint) => check_endpoint(endpoint, settings.allow_http)?,
            None => false,
        };
        // Off: the core's Tier 2 machine owns retries (see the module doc).
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: Duration::from_millis(S3_REQUEST_TIMEOUT_MS),
        };
        let client = ClientOptions::new()
            .with_allow_http(uses_http)
            .with_timeout(Duration::from_millis(S3_REQUEST_TIMEOUT_MS))
            .with_connect_timeout(Duration::from_millis(S3_CONNECT_TIMEOUT_MS));
        let mut builder = AmazonS3Builder::new()
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(client);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (&settings.access_key, &settings.secret_key) {
            (Some(access_key), Some(secret_key)) => {
                builder = builder
                    .with_access_key_id(access_key)
                    .with_secret_access_key(secret_key);
            }
            (None, None) => {}
            _ => return Err(Tier2StoreError::CredentialsIncomplete),
        }
        let store = builder.build().map_err(|error| Tier2StoreError::S3Build {
            bucket: settings.bucket.clone(),
            message: redactor.redact(error.to_string()),
        })?;
        Ok(Tier2Store {
            store: Arc::new(store),
            description: Description::S3 {
                bucket: settings.bucket.clone(),
                endpoint: settings.endpoint.clone(),
            },
            redactor,
            local_mutations: None,
        })
    }

    fn local_dir(path: PathBuf) -> Result<Self, Tier2StoreError> {
        let local_error = |message: String| Tier2StoreError::LocalDir {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(&path).map_err(|error| local_error(error.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(&path)
            .map_err(|error| local_error(error.to_string()))?
            // Durable on return: the core records UploadDone once the put completes.
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Tier2Store {
            store: Arc::new(store),
            description: Description::LocalDir(path),
            redactor: Redactor::default(),
            local_mutations: Some(tokio::sync::Mutex::new(())),
        })
    }

    /// Classifies `error` and logs its detail (redacted).
    fn fail(
        &self,
        operation: &'static str,
        key: &str,
        error: &object_store::Error,
    ) -> ObjectErrorKind {
        let kind = classify(error);
        let detail = self.redactor.redact(error_chain(error));
        match kind {
            // Answers the caller expects and handles (a cold key, a taken key, a fenced
            // writer): not worth a warning.
            ObjectErrorKind::NotFound
            | ObjectErrorKind::AlreadyExists
            | ObjectErrorKind::PreconditionFailed => tracing::debug!(
                target: LOG_TARGET_TIER2_STORE,
                store = %self.description,
                operation,
                key,
                kind = ?kind,
                error = %detail,
                "object_request_failed"
            ),
            _ => tracing::warn!(
                target: LOG_TARGET_TIER2_STORE,
                store = %self.description,
                operation,
                key,
                kind = ?kind,
                error = %detail,
                "object_request_failed"
            ),
        }
        kind
    }

    /// The `object_store` path of `key`, which must be exactly `key` (`Path::parse`
    /// would quietly drop a leading or trailing `/`; a key is never rewritten).
    fn path(&self, operation: &'static str, key: &str) -> Result<StorePath, ObjectErrorKind> {
        let invalid = |reason: String| {
            tracing::error!(
                target: LOG_TARGET_TIER2_STORE,
                store = %self.description,
                operation,
                key,
                reason,
                "object_key_invalid"
            );
            ObjectErrorKind::Permanent
        };
        let path = StorePath::parse(key).map_err(|error| invalid(error.to_string()))?;
        if path.as_ref() != key {
            return Err(invalid(format!("the store would name it {path:?}")));
        }
        Ok(path)
    }

    async fn put_native(
        &self,
        key: &str,
        path: &StorePath,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, ObjectErrorKind> {
        let if_match = matches!(mode, PutMode::IfMatch { .. });
        let mode = match mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::IfAbsent => object_store::PutMode::Create,
            PutMode::IfMatch { etag } => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(etag),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.store.put_opts(path, bytes.into(), options).await {
            Ok(result) => Ok(result.e_tag),
            // S3 answers concurrent If-Match puts with 409 Conflict, which
            // object_store reports as AlreadyExists: a race to retry, not a taken key.
            Err(object_store::Error::AlreadyExists { .. }) if if_match => {
                tracing::warn!(
                    target: LOG_TARGET_TIER2_STORE,
                    operation = "put",
                    key,
                    "conditional_put_conflict"
                );
                Err(ObjectErrorKind::Transient)
            }
            Err(error) => Err(self.fail("put", key, &error)),
        }
    }

    /// `IfMatch` on the local directory: compare the current etag, then overwrite,
    /// under the caller's hold of `local_mutations`.
    async fn put_local_if_match(
        &self,
        key: &str,
        path: &StorePath,
        bytes: Bytes,
        etag: &str,
    ) -> Result<Option<String>, ObjectErrorKind> {
        let current = match self.store.head(path).await {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ObjectErrorKind::PreconditionFailed);
            }
            Err(error) => return Err(self.fail("put", key, &error)),
        };
        if current.as_deref() != Some(etag) {
            return Err(ObjectErrorKind::PreconditionFailed);
        }
        self.put_native(key, path, bytes, PutMode::Overwrite).await
    }
}

/// Checks an S3 endpoint; returns whether it is plain HTTP.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<bool, Tier2StoreError> {
    let url = url::Url::parse(endpoint).map_err(|error| Tier2StoreError::EndpointInvalid {
        endpoint: endpoint.to_owned(),
        reason: error.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo the URL: its user info may be a credential.
        return Err(Tier2StoreError::EndpointHasUserInfo {
            endpoint: format!(
                "{}://<redacted>@{}",
                url.scheme(),
                url.host_str().unwrap_or("")
            ),
        });
    }
    match url.scheme() {
        "https" => Ok(false),
        "http" => {
            if !allow_http {
                return Err(Tier2StoreError::HttpNotAllowed {
                    endpoint: endpoint.to_owned(),
                });
            }
            let loopback = match url.host() {
                Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(address)) => address.is_loopback(),
                Some(url::Host::Ipv6(address)) => address.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(true)
            } else {
                Err(Tier2StoreError::HttpNotLoopback {
                    endpoint: endpoint.to_owned(),
                })
            }
        }
        _ => Err(Tier2StoreError::EndpointScheme {
            endpoint: endpoint.to_owned(),
        }),
    }
}

/// The error and its sources, joined with `: `.
fn error_chain(error: &object_store::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = next.source();
    }
    message
}

/// Which [`ObjectErrorKind`] an `object_store` error is.
///
/// `object_store` reports a failed HTTP response as a `Generic` error whose source is
/// a crate-private type, so the status is not reachable as a value: it is read from
/// the message (`... status code: 503 Service Unavailable ...`), which that type
/// formats from the status. Transport failures are reachable as [`HttpError`] and
/// classified by their kind.
#[must_use]
pub fn classify(error: &object_store::Error) -> ObjectErrorKind {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => ObjectErrorKind::NotFound,
        E::AlreadyExists { .. } => ObjectErrorKind::AlreadyExists,
        E::Precondition { .. } => ObjectErrorKind::PreconditionFailed,
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::NotModified { .. } => ObjectErrorKind::Permanent,
        // A blocking task of the local backend was cancelled (runtime shutting down).
        E::JoinError { .. } => ObjectErrorKind::Transient,
        _ => classify_generic(error),
    }
}

fn classify_generic(error: &object_store::Error) -> ObjectErrorKind {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
                | HttpErrorKind::Decode => ObjectErrorKind::Transient,
                // Unclassified transport failures are retried: the core's attempts are
                // bounded, so a wrong guess costs two retries, while calling a network
                // blip permanent would fail an upload.
                _ => ObjectErrorKind::Transient,
            };
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted => ObjectErrorKind::Transient,
                _ => ObjectErrorKind::Permanent,
            };
        }
        source = current.source();
    }
    let message = error_chain(error);
    if message.contains("SlowDown") {
        return ObjectErrorKind::Throttled;
    }
    if message.contains("InternalError") {
        return ObjectErrorKind::Transient;
    }
    match status_in(&message) {
        Some(503 | 429) => ObjectErrorKind::Throttled,
        Some(408) => ObjectErrorKind::Transient,
        Some(status) if status >= 500 => ObjectErrorKind::Transient,
        _ => ObjectErrorKind::Permanent,
    }
}

/// The HTTP status in an `object_store` response-failure message, if any.
fn status_in(message: &str) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let start = message.find(MARKER)? + MARKER.len();
    let digits = message.get(start..start + 3)?;
    digits
        .parse()
        .ok()
        .filter(|status| (100..600).contains(status))
}

#[async_trait]
impl ObjectStorePort for Tier2Store {
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, ObjectErrorKind> {
        let path = self.path("put", key)?;
        match &self.local_mutations {
            None => self.put_native(key, &path, bytes, mode).await,
            Some(lock) => {
                let _held = lock.lock().await;
                match mode {
                    PutMode::IfMatch { etag } => {
                        self.put_local_if_match(key, &path, bytes, &etag).await
                    }
                    mode => self.put_native(key, &path, bytes, mode).await,
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectErrorKind> {
        let path = self.path("get", key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|error| self.fail("get", key, &error))?;
        result
            .bytes()
            .await
            .map_err(|error| self.fail("get", key, &error))
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<(Bytes, u64), ObjectErrorKind> {
        let path = self.path("get_range", key)?;
        // An empty range cannot be asked of S3 (and one past the end is refused):
        // the answer is empty bytes and the size, which `head` gives.
        let empty = |size: u64| (Bytes::new(), size);
        if start >= end {
            return self.head(key).await.map(|meta| empty(meta.size));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        match self.store.get_opts(&path, options).await {
            Ok(result) => {
                let size = result.meta.size;
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|error| self.fail("get_range", key, &error))?;
                let expected = end.min(size).saturating_sub(start);
                if bytes.len() as u64 != expected {
                    tracing::warn!(
                        target: LOG_TARGET_TIER2_STORE,
                        key,
                        start,
                        end,
                        size,
                        got = bytes.len(),
                        "object_range_short"
                    );
                    return Err(ObjectErrorKind::Transient);
                }
                Ok((bytes, size))
            }
            Err(object_store::Error::NotFound { .. }) => Err(ObjectErrorKind::NotFound),
            Err(error) => {
                // A start at or past the end is refused by the store; if that is
                // why, the clamped answer is empty. Otherwise report the failure.
                match self.store.head(&path).await {
                    Ok(meta) if start >= meta.size => Ok(empty(meta.size)),
                    _ => Err(self.fail("get_range", key, &error)),
                }
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectErrorKind> {
        let path = self.path("head", key)?;
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|error| self.fail("head", key, &error))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.size,
            etag: meta.e_tag,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectErrorKind> {
        let path = self.path("delete", key)?;
        let _held = match &self.local_mutations {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.fail("delete", key, &error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind> {
        // object_store lists whole path segments; list the directory part of the
        // prefix and keep the keys that start with the whole prefix.
        let directory = prefix
            .rsplit_once('/')
            .map_or("", |(directory, _)| directory);
        let directory = if directory.is_empty() {
            None
        } else {
            Some(self.path("list", directory)?)
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(directory.as_ref())
            .try_collect()
            .await
            .map_err(|error| self.fail("list", prefix, &error))?;
        let mut objects: Vec<ObjectMeta> = listed
            .into_iter()
            .map(|meta| ObjectMeta {
                key: meta.location.to_string(),
                size: meta.size,
                etag: meta.e_tag,
            })
            .filter(|meta| meta.key.starts_with(prefix))
            .collect();
        // S3 lists in key order already; the local directory does not.
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>, allow_http: bool) -> S3Settings {
        S3Settings {
            endpoint: endpoint.map(str::to_owned),
            region: "us-east-1".to_owned(),
            bucket: "aof2".to_owned(),
            access_key: Some("AKIDEXAMPLE".to_owned()),
            secret_key: Some("wJalrXUtnFEMI-very-secret".to_owned()),
            allow_http,
        }
    }

    #[test]
    fn plain_http_only_for_loopback_with_allow_http() {
        for endpoint in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            assert!(
                Tier2Store::new(Tier2Backend::S3(settings(Some(endpoint), true))).is_ok(),
                "{endpoint}"
            );
            let error = Tier2Store::new(Tier2Backend::S3(settings(Some(endpoint), false)))
                .expect_err("http without allow_http");
            assert!(
                matches!(error, Tier2StoreError::HttpNotAllowed { .. }),
                "{error}"
            );
        }
        let error = Tier2Store::new(Tier2Backend::S3(settings(
            Some("http://s3.example.com"),
            true,
        )))
        .expect_err("http to a remote host");
        assert!(
            matches!(error, Tier2StoreError::HttpNotLoopback { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("s3.example.com"), "{error}");
        assert!(
            Tier2Store::new(Tier2Backend::S3(settings(
                Some("https://s3.example.com"),
                false
            )))
            .is_ok()
        );
        assert!(Tier2Store::new(Tier2Backend::S3(settings(None, false))).is_ok());
    }

    #[test]
    fn bad_settings_are_named() {
        let mut bad = settings(None, false);
        bad.bucket = String::new();
        assert!(matches!(
            Tier2Store::new(Tier2Backend::S3(bad)),
            Err(Tier2StoreError::BucketEmpty)
        ));
        let mut bad = settings(None, false);
        bad.region = " ".to_owned();
        assert!(matches!(
            Tier2Store::new(Tier2Backend::S3(bad)),
            Err(Tier2StoreError::RegionEmpty)
        ));
        let mut bad = settings(None, false);
        bad.access_key = None;
        assert!(matches!(
            Tier2Store::new(Tier2Backend::S3(bad)),
            Err(Tier2StoreError::CredentialsIncomplete)
        ));
        let error = Tier2Store::new(Tier2Backend::S3(settings(Some("ftp://host"), false)))
            .expect_err("ftp scheme");
        assert!(
            matches!(error, Tier2StoreError::EndpointScheme { .. }),
            "{error}"
        );
        let error = Tier2Store::new(Tier2Backend::S3(settings(Some("not a url"), false)))
            .expect_err("not a URL");
        assert!(
            matches!(error, Tier2StoreError::EndpointInvalid { .. }),
            "{error}"
        );
        let error = Tier2Store::new(Tier2Backend::S3(settings(
            Some("https://user:hunter2@s3.example.com"),
            false,
        )))
        .expect_err("user info");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn statuses_are_read_from_messages() {
        assert_eq!(
            status_in(
                "Error performing PUT http://x in 2ms - Server returned non-2xx status code: 503 Service Unavailable: "
            ),
            Some(503)
        );
        assert_eq!(status_in("no status here"), None);
        assert_eq!(status_in("status code: 9"), None);
    }

    #[test]
    fn errors_classify_by_what_to_do() {
        let boxed =
            |message: &str| -> Box<dyn StdError + Send + Sync> { message.to_owned().into() };
        let generic = |message: &str| object_store::Error::Generic {
            store: "S3",
            source: boxed(message),
        };
        let path = || "k".to_owned();
        let cases = [
            (
                object_store::Error::NotFound {
                    path: path(),
                    source: boxed(""),
                },
                ObjectErrorKind::NotFound,
            ),
            (
                object_store::Error::AlreadyExists {
                    path: path(),
                    source: boxed(""),
                },
                ObjectErrorKind::AlreadyExists,
            ),
            (
                object_store::Error::Precondition {
                    path: path(),
                    source: boxed(""),
                },
                ObjectErrorKind::PreconditionFailed,
            ),
            (
                object_store::Error::PermissionDenied {
                    path: path(),
                    source: boxed(""),
                },
                ObjectErrorKind::Permanent,
            ),
            (
                object_store::Error::Unauthenticated {
                    path: path(),
                    source: boxed(""),
                },
                ObjectErrorKind::Permanent,
            ),
            (
                generic(
                    "Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>",
                ),
                ObjectErrorKind::Throttled,
            ),
            (
                generic("Server returned non-2xx status code: 503 Service Unavailable: "),
                ObjectErrorKind::Throttled,
            ),
            (
                generic("Server returned non-2xx status code: 500 Internal Server Error: "),
                ObjectErrorKind::Transient,
            ),
            (
                generic("Server returned error response: <Code>InternalError</Code>"),
                ObjectErrorKind::Transient,
            ),
            (
                generic("Server returned non-2xx status code: 400 Bad Request: "),
                ObjectErrorKind::Permanent,
            ),
            (
                object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(HttpError::new(
                        HttpErrorKind::Connect,
                        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                    )),
                },
                ObjectErrorKind::Transient,
            ),
            (
                object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(HttpError::new(
                        HttpErrorKind::Timeout,
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    )),
                },
                ObjectErrorKind::Transient,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(classify(&error), kind, "{error}");
            assert_eq!(classify(&error).is_retryable(), kind.is_retryable());
        }
    }
}
