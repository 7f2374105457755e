//! The production [`DiskPort`]: the core's [`DiskRequest`]s carried out on the local
//! filesystem under one root directory.
//!
//! Paths in requests are [`LocalPath`]s, relative to the store root and made only of
//! checked components (no empty, `.` or `..` component, no separator inside one), so
//! joining one to the root never leaves it. Writes are positional (`pwrite`),
//! `SyncFile` is `fdatasync`, `SyncDir` opens the directory and fsyncs it, which is
//! what makes creates, renames and removes durable on Linux.
//!
//! [`LocalDisk::execute`] is synchronous; the [`DiskPort`] implementation runs each
//! operation on tokio's blocking pool (`spawn_blocking`), so a slow disk never stalls
//! the runtime's workers. Io errors map onto [`DiskErrorKind`]: `ENOENT` is
//! `NotFound`, `ENOSPC`/`EDQUOT` are `NoSpace`, everything else is `Io`; the full error
//! is logged under `aof2::disk` (the core only needs its kind).
//!
//! **Invariants**
//! - Every path touched is `root` joined with a validated `LocalPath`.
//! - A request's completion has the shape of its request (`ReadAt` -> `Read`,
//!   `ListDir` -> `Listed`, `Length` -> `Length`, the rest -> `Done`) or is `Failed`.
//! - `ListDir` returns names sorted; a missing directory lists as empty.

use aof2_core::driver::DiskPort;
use aof2_core::io::{DiskCompletion, DiskErrorKind, DiskRequest, LocalPath};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Log target of disk failures.
pub const LOG_TARGET_DISK: &str = "aof2::disk";

/// The local filesystem under one root directory.
#[derive(Debug, Clone)]
pub struct LocalDisk {
    root: PathBuf,
}

impl LocalDisk {
    /// A disk rooted at `root`, creating the directory if needed.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(LocalDisk { root })
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `path`.
    #[must_use]
    pub fn resolve(&self, path: &LocalPath) -> PathBuf {
        // A LocalPath is relative and has no `..`, so the join stays under the root.
        assert!(
            !path.as_str().starts_with('/'),
            "a LocalPath is relative: {path}"
        );
        let full = self.root.join(path.as_str());
        debug_assert!(full.starts_with(&self.root), "{path} stays under the root");
        full
    }

    /// Carries out one request. Failures become [`DiskCompletion::Failed`]; the error
    /// detail is logged here because the core only needs its kind.
    pub fn execute(&self, request: &DiskRequest) -> DiskCompletion {
        match self.try_execute(request) {
            Ok(completion) => completion,
            Err(error) => {
                let kind = error_kind(&error);
                let request_kind = request_kind(request);
                let path = request_path(request);
                if kind == DiskErrorKind::NotFound {
                    // Often expected (recovery probes files that may be gone).
                    tracing::debug!(target: LOG_TARGET_DISK, kind = request_kind, %path, %error, "disk_request_failed");
                } else {
                    tracing::warn!(target: LOG_TARGET_DISK, kind = request_kind, %path, %error, "disk_request_failed");
                }
                DiskCompletion::Failed(kind)
            }
        }
    }

    fn try_execute(&self, request: &DiskRequest) -> io::Result<DiskCompletion> {
        match request {
            DiskRequest::Create { path } => {
                let full = self.resolve(path);
                if let Some(parent) = full.parent() {
                    fs::create_dir_all(parent)?;
                }
                File::create(full)?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::CreateDir { path } => {
                fs::create_dir_all(self.resolve(path))?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::WriteAt {
                path,
                offset,
                bytes,
            } => {
                let file = OpenOptions::new().write(true).open(self.resolve(path))?;
                file.write_all_at(bytes, *offset)?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::ReadAt {
                path,
                offset,
                length,
            } => {
                let file = File::open(self.resolve(path))?;
                let file_length = file.metadata()?.len();
                let available = file_length.saturating_sub(*offset).min(*length);
                let mut buffer = vec![0u8; usize::try_from(available).map_err(io::Error::other)?];
                file.read_exact_at(&mut buffer, *offset)?;
                Ok(DiskCompletion::Read(Bytes::from(buffer)))
            }
            DiskRequest::Truncate { path, length } => {
                let file = OpenOptions::new().write(true).open(self.resolve(path))?;
                file.set_len(*length)?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::SyncFile { path } => {
                File::open(self.resolve(path))?.sync_data()?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::SyncDir { path } => {
                File::open(self.resolve(path))?.sync_all()?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::Rename { from, to } => {
                fs::rename(self.resolve(from), self.resolve(to))?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::Remove { path } => {
                fs::remove_file(self.resolve(path))?;
                Ok(DiskCompletion::Done)
            }
            DiskRequest::ListDir { path } => {
                let mut names = Vec::new();
                match fs::read_dir(self.resolve(path)) {
                    Ok(entries) => {
                        for entry in entries {
                            if let Ok(name) = entry?.file_name().into_string() {
                                names.push(name);
                            }
                        }
                    }
                    Err(error) if error.kind() == ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
                names.sort();
                Ok(DiskCompletion::Listed(names))
            }
            DiskRequest::Length { path } => Ok(DiskCompletion::Length(
                fs::metadata(self.resolve(path))?.len(),
            )),
        }
    }
}

/// `ENOSPC` (no space left on device).
const ERRNO_NO_SPACE: i32 = 28;
/// `EDQUOT` (disk quota exceeded) on Linux.
const ERRNO_QUOTA_EXCEEDED: i32 = 122;

fn error_kind(error: &io::Error) -> DiskErrorKind {
    match error.kind() {
        ErrorKind::NotFound => DiskErrorKind::NotFound,
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => DiskErrorKind::NoSpace,
        _ => match error.raw_os_error() {
            Some(ERRNO_NO_SPACE | ERRNO_QUOTA_EXCEEDED) => DiskErrorKind::NoSpace,
            _ => DiskErrorKind::Io,
        },
    }
}

impl LocalDisk {
    /// Runs `request` on tokio's blocking pool. Must be called inside a tokio runtime.
    async fn execute_blocking(&self, request: DiskRequest) -> DiskCompletion {
        let disk = self.clone();
        match tokio::task::spawn_blocking(move || disk.execute(&request)).await {
            Ok(completion) => completion,
            // A panic in the executor is a bug: surface it where the port was awaited.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => {
                // The runtime is shutting down and dropped the task before it ran.
                tracing::warn!(target: LOG_TARGET_DISK, %error, "disk_request_cancelled");
                DiskCompletion::Failed(DiskErrorKind::Io)
            }
        }
    }

    /// Runs a request whose success is `Done`.
    async fn execute_done(&self, request: DiskRequest) -> Result<(), DiskErrorKind> {
        match self.execute_blocking(request).await {
            DiskCompletion::Done => Ok(()),
            DiskCompletion::Failed(kind) => Err(kind),
            other => unreachable!(
                "a create/write/truncate/sync/rename/remove completes with Done, not {other:?}"
            ),
        }
    }
}

#[async_trait]
impl DiskPort for LocalDisk {
    async fn create(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::Create { path: path.clone() })
            .await
    }

    async fn create_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::CreateDir { path: path.clone() })
            .await
    }

    async fn write_at(
        &self,
        path: &LocalPath,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::WriteAt {
            path: path.clone(),
            offset,
            bytes,
        })
        .await
    }

    async fn read_at(
        &self,
        path: &LocalPath,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, DiskErrorKind> {
        let request = DiskRequest::ReadAt {
            path: path.clone(),
            offset,
            length,
        };
        match self.execute_blocking(request).await {
            DiskCompletion::Read(bytes) => Ok(bytes),
            DiskCompletion::Failed(kind) => Err(kind),
            other => unreachable!("a read completes with Read, not {other:?}"),
        }
    }

    async fn truncate(&self, path: &LocalPath, length: u64) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::Truncate {
            path: path.clone(),
            length,
        })
        .await
    }

    async fn sync_file(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::SyncFile { path: path.clone() })
            .await
    }

    async fn sync_dir(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::SyncDir { path: path.clone() })
            .await
    }

    async fn rename(&self, from: &LocalPath, to: &LocalPath) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::Rename {
            from: from.clone(),
            to: to.clone(),
        })
        .await
    }

    async fn remove(&self, path: &LocalPath) -> Result<(), DiskErrorKind> {
        self.execute_done(DiskRequest::Remove { path: path.clone() })
            .await
    }

    async fn list(&self, path: &LocalPath) -> Result<Vec<String>, DiskErrorKind> {
        match self
            .execute_blocking(DiskRequest::ListDir { path: path.clone() })
            .await
        {
            DiskCompletion::Listed(names) => Ok(names),
            DiskCompletion::Failed(kind) => Err(kind),
            other => unreachable!("a list completes with Listed, not {other:?}"),
        }
    }

    async fn length(&self, path: &LocalPath) -> Result<u64, DiskErrorKind> {
        match self
            .execute_blocking(DiskRequest::Length { path: path.clone() })
            .await
        {
            DiskCompletion::Length(length) => Ok(length),
            DiskCompletion::Failed(kind) => Err(kind),
            other => unreachable!("a length request completes with Length, not {other:?}"),
        }
    }
}

fn request_kind(request: &DiskRequest) -> &'static str {
    match request {
        DiskRequest::Create { .. } => "create",
        DiskRequest::CreateDir { .. } => "create_dir",
        DiskRequest::WriteAt { .. } => "write_at",
        DiskRequest::ReadAt { .. } => "read_at",
        DiskRequest::Truncate { .. } => "truncate",
        DiskRequest::SyncFile { .. } => "sync_file",
        DiskRequest::SyncDir { .. } => "sync_dir",
        DiskRequest::Rename { .. } => "rename",
        DiskRequest::Remove { .. } => "remove",
        DiskRequest::ListDir { .. } => "list_dir",
        DiskRequest::Length { .. } => "length",
    }
}

fn request_path(request: &DiskRequest) -> &LocalPath {
    match request {
        DiskRequest::Create { path }
        | DiskRequest::CreateDir { path }
        | DiskRequest::WriteAt { path, .. }
        | DiskRequest::ReadAt { path, .. }
        | DiskRequest::Truncate { path, .. }
        | DiskRequest::SyncFile { path }
        | DiskRequest::SyncDir { path }
        | DiskRequest::Remove { path }
        | DiskRequest::ListDir { path }
        | DiskRequest::Length { path } => path,
        DiskRequest::Rename { from, .. } => from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("aof2-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn io_errors_map_to_kinds() {
        for (errno, kind) in [
            (2, DiskErrorKind::NotFound),
            (ERRNO_NO_SPACE, DiskErrorKind::NoSpace),
            (ERRNO_QUOTA_EXCEEDED, DiskErrorKind::NoSpace),
            (5, DiskErrorKind::Io),  // EIO
            (13, DiskErrorKind::Io), // EACCES
        ] {
            assert_eq!(
                error_kind(&io::Error::from_raw_os_error(errno)),
                kind,
                "errno {errno}"
            );
        }
        assert_eq!(
            error_kind(&io::Error::from(ErrorKind::StorageFull)),
            DiskErrorKind::NoSpace
        );
    }

    #[test]
    fn create_write_read_rename_remove() {
        let root = temp_root("basic");
        let disk = LocalDisk::open(&root).unwrap();
        let dir = LocalPath::from_components(&["streams", "s"]);
        let temp = dir.join("a.tmp");
        let path = dir.join("a");
        assert_eq!(
            disk.execute(&DiskRequest::Create { path: temp.clone() }),
            DiskCompletion::Done
        );
        let write = DiskRequest::WriteAt {
            path: temp.clone(),
            offset: 4,
            bytes: Bytes::from_static(b"abcd"),
        };
        assert_eq!(disk.execute(&write), DiskCompletion::Done);
        assert_eq!(
            disk.execute(&DiskRequest::SyncFile { path: temp.clone() }),
            DiskCompletion::Done
        );
        let rename = DiskRequest::Rename {
            from: temp,
            to: path.clone(),
        };
        assert_eq!(disk.execute(&rename), DiskCompletion::Done);
        assert_eq!(
            disk.execute(&DiskRequest::SyncDir { path: dir.clone() }),
            DiskCompletion::Done
        );
        let read = DiskRequest::ReadAt {
            path: path.clone(),
            offset: 2,
            length: 100,
        };
        assert_eq!(
            disk.execute(&read),
            DiskCompletion::Read(Bytes::from_static(b"\0\0abcd"))
        );
        assert_eq!(
            disk.execute(&DiskRequest::ListDir { path: dir.clone() }),
            DiskCompletion::Listed(vec!["a".to_owned()])
        );
        assert_eq!(
            disk.execute(&DiskRequest::Length { path: path.clone() }),
            DiskCompletion::Length(8)
        );
        assert_eq!(
            disk.execute(&DiskRequest::Remove { path: path.clone() }),
            DiskCompletion::Done
        );
        assert_eq!(
            disk.execute(&DiskRequest::Length { path }),
            DiskCompletion::Failed(DiskErrorKind::NotFound)
        );
        fs::remove_dir_all(root).unwrap();
    }
}
