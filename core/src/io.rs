//! IO requests as plain data: what a state machine asks its driver to do.
//!
//! State machines in `core` never touch a file, a socket or a CPU pool. They emit
//! [`IoRequest`]s ([`DiskRequest`], [`ObjectRequest`], [`CpuJob`]) tagged with an
//! [`IoId`]; the driver carries each out and hands back an [`IoCompletion`] with the
//! same id. Paths are [`LocalPath`]s: relative to the store root and built only from
//! validated components, so no user text ever becomes a path unchecked.
//!
//! **Invariants**
//! - A `LocalPath` is relative, uses `/` separators, and has no empty, `.` or `..`
//!   component.
//! - Ids are unique per issuing state machine (monotonic counters).

use bytes::Bytes;
use std::fmt;

/// Identifies one IO request; its completion carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);

/// A path relative to the store root, made only of checked components.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalPath(String);

impl LocalPath {
    /// Joins checked components. A component that is empty, `.`, `..`, or contains a
    /// separator or NUL is a bug in the caller (components come from validated names
    /// and formatted numbers), so it panics.
    #[must_use]
    pub fn from_components(components: &[&str]) -> Self {
        assert!(!components.is_empty(), "a path has at least one component");
        for component in components {
            assert!(
                Self::component_is_valid(component),
                "invalid path component {component:?}"
            );
        }
        LocalPath(components.join("/"))
    }

    /// Whether `component` is safe as one path component.
    #[must_use]
    pub fn component_is_valid(component: &str) -> bool {
        !component.is_empty()
            && component != "."
            && component != ".."
            && !component.contains(['/', '\\', '\0'])
    }

    /// This path with one more component.
    #[must_use]
    pub fn join(&self, component: &str) -> Self {
        assert!(
            Self::component_is_valid(component),
            "invalid path component {component:?}"
        );
        LocalPath(format!("{}/{}", self.0, component))
    }

    /// This path with a `/`-separated relative path appended (e.g. an object key,
    /// which the embedded default Tier 2 stores as a file). Every component must be
    /// valid; keys come from `names`, so an invalid one is a bug.
    #[must_use]
    pub fn join_relative(&self, relative: &str) -> Self {
        relative
            .split('/')
            .fold(self.clone(), |path, component| path.join(component))
    }

    /// The parent directory, if any.
    #[must_use]
    pub fn parent(&self) -> Option<LocalPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| LocalPath(parent.to_owned()))
    }

    /// The last component.
    #[must_use]
    pub fn file_name(&self) -> &str {
        self.0
            .rsplit_once('/')
            .map_or(self.0.as_str(), |(_, name)| name)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LocalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request to the local disk. Durability follows POSIX: data is durable after
/// `SyncFile`; a create, rename or remove is durable after `SyncDir` of the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskRequest {
    /// Create (or truncate to empty) a file.
    Create { path: LocalPath },
    /// Creates a directory and its missing parents; an existing one is fine.
    CreateDir { path: LocalPath },
    /// Write `bytes` at `offset`, extending the file if needed.
    WriteAt {
        path: LocalPath,
        offset: u64,
        bytes: Bytes,
    },
    /// Read up to `length` bytes at `offset`.
    ReadAt {
        path: LocalPath,
        offset: u64,
        length: u64,
    },
    /// Set the file length (used to cut a torn tail).
    Truncate { path: LocalPath, length: u64 },
    /// fsync/fdatasync the file.
    SyncFile { path: LocalPath },
    /// fsync the directory, making creates, renames and removes in it durable.
    SyncDir { path: LocalPath },
    /// Atomically rename `from` to `to` (replacing `to`).
    Rename { from: LocalPath, to: LocalPath },
    /// Remove a file.
    Remove { path: LocalPath },
    /// List the file names in a directory.
    ListDir { path: LocalPath },
    /// The file's current length.
    Length { path: LocalPath },
}

/// Why a disk request failed, as far as a state machine needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskErrorKind {
    NotFound,
    NoSpace,
    Io,
}

/// The outcome of a [`DiskRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskCompletion {
    /// Create, write, truncate, sync, rename or remove succeeded.
    Done,
    /// Bytes read (fewer than asked at end of file).
    Read(Bytes),
    /// Directory entries, sorted by name.
    Listed(Vec<String>),
    /// File length in bytes.
    Length(u64),
    /// The request failed.
    Failed(DiskErrorKind),
}

/// How a put treats an existing object (maps to `object_store::PutMode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write unconditionally (objects are immutable by key, so this is idempotent).
    Overwrite,
    /// Fail with [`ObjectErrorKind::AlreadyExists`] if the key exists.
    IfAbsent,
    /// Fail with [`ObjectErrorKind::PreconditionFailed`] unless the current etag matches.
    IfMatch { etag: String },
}

/// A request to the object store (Tier 2). Keys come from `names`, never from
/// unchecked user text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRequest {
    Put {
        key: String,
        bytes: Bytes,
        mode: PutMode,
    },
    /// The whole object.
    Get { key: String },
    /// Bytes `start..end` of the object (clamped to its length).
    GetRange { key: String, start: u64, end: u64 },
    /// Size and etag.
    Head { key: String },
    /// Deleting a missing key succeeds (idempotent).
    Delete { key: String },
    /// Every key under `prefix`, in key order.
    List { prefix: String },
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// Why an object request failed, classified by what the caller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectErrorKind {
    NotFound,
    /// `IfAbsent` found the key.
    AlreadyExists,
    /// `IfMatch` found another etag.
    PreconditionFailed,
    /// 503 SlowDown and friends: retry with backoff.
    Throttled,
    /// Timeouts, resets, 5xx: retry; the operation may or may not have applied.
    Transient,
    /// Credentials, permissions, bad request: retrying will not help.
    Permanent,
}

impl ObjectErrorKind {
    /// Whether retrying the same request can succeed.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ObjectErrorKind::Throttled | ObjectErrorKind::Transient
        )
    }
}

/// The outcome of an [`ObjectRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectCompletion {
    Put {
        etag: Option<String>,
    },
    /// Body of a `Get` or `GetRange`, and the object's total size.
    Got {
        bytes: Bytes,
        object_size: u64,
    },
    Head(ObjectMeta),
    Deleted,
    Listed(Vec<ObjectMeta>),
    Failed(ObjectErrorKind),
}

/// CPU-bound work the driver runs off the IO path (a blocking pool in production,
/// inline in simulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuJob {
    /// Compress a sealed segment into a seekable artifact.
    Compress {
        segment: Bytes,
        frame_raw_bytes_target: u32,
        compression_level: i32,
    },
    /// Decompress a whole artifact back into segment bytes, checking every frame.
    Decompress { artifact: Bytes },
}

/// The outcome of a [`CpuJob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuResult {
    Compressed {
        artifact: Bytes,
        frame_count: u32,
        checksum: u32,
    },
    Decompressed {
        segment: Bytes,
    },
    /// The input was corrupt or not compressible as asked; the message says why.
    Failed {
        reason: String,
    },
}

/// Any request a state machine emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoRequest {
    Disk(DiskRequest),
    Object(ObjectRequest),
    Cpu(CpuJob),
}

/// Any completion the driver delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoCompletion {
    Disk(DiskCompletion),
    Object(ObjectCompletion),
    Cpu(CpuResult),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_split() {
        let path =
            LocalPath::from_components(&["streams", "orders", "manifest"]).join("00000001.mlog");
        assert_eq!(path.as_str(), "streams/orders/manifest/00000001.mlog");
        assert_eq!(path.file_name(), "00000001.mlog");
        assert_eq!(path.parent().unwrap().as_str(), "streams/orders/manifest");
    }

    #[test]
    fn relative_paths_join_component_by_component() {
        let root = LocalPath::from_components(&["tier2"]);
        assert_eq!(
            root.join_relative("segments/s/1.zst").as_str(),
            "tier2/segments/s/1.zst"
        );
    }

    #[test]
    #[should_panic(expected = "invalid path component")]
    fn relative_paths_reject_dot_dot() {
        let _ = LocalPath::from_components(&["tier2"]).join_relative("segments/../x");
    }

    #[test]
    #[should_panic(expected = "invalid path component")]
    fn dot_dot_is_rejected() {
        let _ = LocalPath::from_components(&["streams", ".."]);
    }

    #[test]
    fn component_check() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b"] {
            assert!(!LocalPath::component_is_valid(bad), "{bad:?}");
        }
        assert!(LocalPath::component_is_valid("00000001.mlog"));
    }
}
