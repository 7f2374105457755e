//! `LocalDisk` as the driver's `DiskPort`, on a temp directory, inside tokio.
//!
//! **Invariants checked**
//! - Positional writes land at their offset (a gap reads back as zeros) and reads at
//!   or past the end return what exists.
//! - Sync file and sync dir succeed on what exists and fail `NotFound` on what does
//!   not; rename replaces the target; list is sorted and a missing directory is empty.
//! - Removing, reading, writing or syncing a missing file is `NotFound`; a full device
//!   is `NoSpace`.
//! - Every path stays under the root.

use aof2_core::driver::{DiskPort, execute_disk};
use aof2_core::io::{DiskCompletion, DiskErrorKind, DiskRequest, LocalPath};
use aof2_io_real::disk::LocalDisk;
use bytes::Bytes;

fn path(components: &[&str]) -> LocalPath {
    LocalPath::from_components(components)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positional_io_sync_rename_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let disk = LocalDisk::open(dir.path().join("root")).unwrap();
    let stream = path(&["streams", "orders"]);
    let temp = stream.join("00000001.seg.tmp");
    let file = stream.join("00000001.seg");

    disk.create(&temp).await.unwrap();
    assert_eq!(disk.length(&temp).await, Ok(0));
    disk.write_at(&temp, 8, Bytes::from_static(b"tail"))
        .await
        .unwrap();
    disk.write_at(&temp, 0, Bytes::from_static(b"head"))
        .await
        .unwrap();
    assert_eq!(disk.length(&temp).await, Ok(12));
    assert_eq!(
        disk.read_at(&temp, 0, 12).await,
        Ok(Bytes::from_static(b"head\0\0\0\0tail")),
        "a gap between positional writes reads as zeros"
    );
    assert_eq!(
        disk.read_at(&temp, 10, 100).await,
        Ok(Bytes::from_static(b"il"))
    );
    assert_eq!(
        disk.read_at(&temp, 12, 5).await,
        Ok(Bytes::new()),
        "at the end"
    );
    assert_eq!(
        disk.read_at(&temp, 50, 5).await,
        Ok(Bytes::new()),
        "past the end"
    );
    disk.sync_file(&temp).await.unwrap();

    // A file becomes visible by rename, durable by syncing its directory.
    disk.create(&file).await.unwrap();
    disk.write_at(&file, 0, Bytes::from_static(b"old"))
        .await
        .unwrap();
    disk.rename(&temp, &file).await.unwrap();
    disk.sync_dir(&stream).await.unwrap();
    assert_eq!(
        disk.read_at(&file, 0, 100).await,
        Ok(Bytes::from_static(b"head\0\0\0\0tail")),
        "rename replaces"
    );
    assert_eq!(disk.length(&temp).await, Err(DiskErrorKind::NotFound));

    disk.truncate(&file, 4).await.unwrap();
    assert_eq!(
        disk.read_at(&file, 0, 100).await,
        Ok(Bytes::from_static(b"head"))
    );

    // Listing is sorted; a missing directory lists as empty; directories are names too.
    for name in ["c", "a", "b"] {
        disk.create(&stream.join(name)).await.unwrap();
    }
    disk.create_dir(&stream.join("tier1").join("deep"))
        .await
        .unwrap();
    disk.create_dir(&stream.join("tier1")).await.unwrap();
    assert_eq!(
        disk.list(&stream).await,
        Ok(vec![
            "00000001.seg".into(),
            "a".into(),
            "b".into(),
            "c".into(),
            "tier1".into()
        ])
    );
    assert_eq!(
        disk.list(&path(&["streams", "missing"])).await,
        Ok(Vec::new())
    );

    // Missing files.
    let missing = stream.join("missing");
    assert_eq!(disk.remove(&missing).await, Err(DiskErrorKind::NotFound));
    assert_eq!(
        disk.read_at(&missing, 0, 1).await,
        Err(DiskErrorKind::NotFound)
    );
    assert_eq!(
        disk.write_at(&missing, 0, Bytes::from_static(b"x")).await,
        Err(DiskErrorKind::NotFound),
        "a write does not create a file"
    );
    assert_eq!(disk.sync_file(&missing).await, Err(DiskErrorKind::NotFound));
    assert_eq!(
        disk.sync_dir(&path(&["nowhere"])).await,
        Err(DiskErrorKind::NotFound)
    );
    assert_eq!(
        disk.rename(&missing, &file).await,
        Err(DiskErrorKind::NotFound)
    );

    disk.remove(&file).await.unwrap();
    assert_eq!(disk.length(&file).await, Err(DiskErrorKind::NotFound));

    // Everything stayed under the root.
    let mut outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, vec![std::ffi::OsString::from("root")]);
}

#[tokio::test]
async fn requests_through_the_driver_executor() {
    let dir = tempfile::tempdir().unwrap();
    let disk = LocalDisk::open(dir.path()).unwrap();
    let file = path(&["f"]);
    assert_eq!(
        execute_disk(&disk, DiskRequest::Create { path: file.clone() }).await,
        DiskCompletion::Done
    );
    assert_eq!(
        execute_disk(
            &disk,
            DiskRequest::WriteAt {
                path: file.clone(),
                offset: 0,
                bytes: Bytes::from_static(b"abc")
            }
        )
        .await,
        DiskCompletion::Done
    );
    assert_eq!(
        execute_disk(
            &disk,
            DiskRequest::ReadAt {
                path: file.clone(),
                offset: 1,
                length: 5
            }
        )
        .await,
        DiskCompletion::Read(Bytes::from_static(b"bc"))
    );
    assert_eq!(
        execute_disk(
            &disk,
            DiskRequest::ListDir {
                path: path(&["nothing"])
            }
        )
        .await,
        DiskCompletion::Listed(Vec::new())
    );
    assert_eq!(
        execute_disk(
            &disk,
            DiskRequest::Remove {
                path: path(&["nothing"])
            }
        )
        .await,
        DiskCompletion::Failed(DiskErrorKind::NotFound)
    );
}

/// `/dev/full` fails every write with `ENOSPC`: a real full device, reached through a
/// symlink under the root.
#[tokio::test]
async fn a_full_device_is_no_space() {
    if !std::path::Path::new("/dev/full").exists() {
        panic!("this test needs /dev/full (Linux)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("full")).unwrap();
    let disk = LocalDisk::open(dir.path()).unwrap();
    assert_eq!(
        disk.write_at(&path(&["full"]), 0, Bytes::from_static(b"no room"))
            .await,
        Err(DiskErrorKind::NoSpace)
    );
}
