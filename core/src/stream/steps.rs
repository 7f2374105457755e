//! Scripts of one-at-a-time disk steps with milestones between them: publishing
//! `current.sealed`, creating the next segment file, and the tail of recovery.
//!
//! **Invariants**
//! - A new file becomes visible only by: create temp, write, fsync it, rename, fsync
//!   the directory ([`pointer_steps`], [`ack_hint_steps`], [`open_steps`]).
//! - A segment is opened only after the `acknowledged` hint names it durably, so the
//!   hint never trails what the active segment reported durable.
//! - Steps run strictly in order, one request at a time; a milestone runs only after
//!   every step before it succeeded.

use super::SealedSegmentInfo;
use crate::SegmentId;
use crate::ack_hint::{ACK_HINT_FILE_NAME, AckHint};
use crate::io::{DiskRequest, LocalPath};
use crate::names::{StreamName, segment_file_name, segment_path, segments_dir, stream_dir};
use crate::pointer::{CURRENT_SEALED_FILE_NAME, SealedPointer};
use crate::segment::SegmentHeader;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;

/// Suffix of temporary files; recovery removes every file of a stream's segments
/// directory that ends with it.
pub const TEMP_FILE_SUFFIX: &str = ".tmp";

/// One disk step of a stream, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoStep {
    WriteSegment,
    SyncSegment,
    ListSegments,
    ReadPointer,
    SegmentLength,
    ReadSegment,
    RemoveTempFile,
    TruncateTornTail,
    RewriteSegment,
    SyncSegmentsDir,
    CreatePointerTemp,
    WritePointerTemp,
    SyncPointerTemp,
    RenamePointer,
    SyncStreamDir,
    CreateSegmentTemp,
    WriteSegmentHeader,
    SyncSegmentTemp,
    RenameSegment,
    ReadAckHint,
    CreateAckHintTemp,
    WriteAckHintTemp,
    SyncAckHintTemp,
    RenameAckHint,
    WriteAckHint,
    SyncAckHint,
}

impl fmt::Display for IoStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoStep::WriteSegment => "writing segment data",
            IoStep::SyncSegment => "fsyncing the segment file",
            IoStep::ListSegments => "listing the segments directory",
            IoStep::ReadPointer => "reading current.sealed",
            IoStep::SegmentLength => "reading a segment file's length",
            IoStep::ReadSegment => "reading a segment file",
            IoStep::RemoveTempFile => "removing a leftover temp file",
            IoStep::TruncateTornTail => "truncating a torn tail",
            IoStep::RewriteSegment => "rewriting the recovered segment bytes",
            IoStep::SyncSegmentsDir => "fsyncing the segments directory",
            IoStep::CreatePointerTemp => "creating the current.sealed temp file",
            IoStep::WritePointerTemp => "writing the current.sealed temp file",
            IoStep::SyncPointerTemp => "fsyncing the current.sealed temp file",
            IoStep::RenamePointer => "renaming the current.sealed temp file",
            IoStep::SyncStreamDir => "fsyncing the stream directory",
            IoStep::CreateSegmentTemp => "creating the next segment's temp file",
            IoStep::WriteSegmentHeader => "writing the next segment's header",
            IoStep::SyncSegmentTemp => "fsyncing the next segment's temp file",
            IoStep::RenameSegment => "renaming the next segment's temp file",
            IoStep::ReadAckHint => "reading the acknowledged hint",
            IoStep::CreateAckHintTemp => "creating the acknowledged hint's temp file",
            IoStep::WriteAckHintTemp => "writing the acknowledged hint's temp file",
            IoStep::SyncAckHintTemp => "fsyncing the acknowledged hint's temp file",
            IoStep::RenameAckHint => "renaming the acknowledged hint's temp file",
            IoStep::WriteAckHint => "writing the acknowledged hint",
            IoStep::SyncAckHint => "fsyncing the acknowledged hint",
        })
    }
}

/// One entry of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// A disk request. A failure poisons the stream: as a metadata failure if
    /// `metadata`, else as a recovery failure. `not_found_ok` accepts `NotFound`.
    Io {
        step: IoStep,
        request: DiskRequest,
        metadata: bool,
        not_found_ok: bool,
    },
    /// The recovered active segment's bytes are fsynced: they are durable.
    MarkRecoveredDurable,
    /// Emit `Sealed` (the footer is durable and the pointer published).
    EmitSealed(SealedSegmentInfo),
    /// The new segment file exists durably: it becomes the active segment.
    Install(SegmentHeader),
}

/// A script in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Steps {
    pub remaining: VecDeque<Step>,
    /// The step whose request is in flight, with its id.
    pub in_flight: Option<(crate::io::IoId, Step)>,
    /// `Some` when this script ends a recovery: emitted as `Recovered` at the end.
    pub recovery: Option<super::RecoveryReport>,
}

/// `streams/<stream>/current.sealed`.
pub(super) fn pointer_path(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join(CURRENT_SEALED_FILE_NAME)
}

/// `streams/<stream>/current.sealed.tmp`.
pub(super) fn pointer_temp_path(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join(&format!("{CURRENT_SEALED_FILE_NAME}{TEMP_FILE_SUFFIX}"))
}

/// `streams/<stream>/acknowledged`.
pub(super) fn ack_hint_path(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join(ACK_HINT_FILE_NAME)
}

/// `streams/<stream>/acknowledged.tmp`.
pub(super) fn ack_hint_temp_path(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join(&format!("{ACK_HINT_FILE_NAME}{TEMP_FILE_SUFFIX}"))
}

/// `streams/<stream>/segments/<segment_id:020>.seg.tmp`.
pub(super) fn segment_temp_path(stream: &StreamName, segment_id: SegmentId) -> LocalPath {
    segments_dir(stream).join(&format!(
        "{}{TEMP_FILE_SUFFIX}",
        segment_file_name(segment_id)
    ))
}

fn io(step: IoStep, request: DiskRequest, metadata: bool) -> Step {
    Step::Io {
        step,
        request,
        metadata,
        not_found_ok: false,
    }
}

/// The steps of one small file published in the stream directory: create the temp,
/// write it, fsync it, rename it over the target, fsync the stream directory.
struct Publish {
    steps: [IoStep; 4],
    temp: LocalPath,
    target: LocalPath,
    bytes: Bytes,
}

fn publish_steps(stream: &StreamName, publish: Publish) -> Vec<Step> {
    let Publish {
        steps: [create, write, sync, rename],
        temp,
        target,
        bytes,
    } = publish;
    vec![
        io(create, DiskRequest::Create { path: temp.clone() }, true),
        io(
            write,
            DiskRequest::WriteAt {
                path: temp.clone(),
                offset: 0,
                bytes,
            },
            true,
        ),
        io(sync, DiskRequest::SyncFile { path: temp.clone() }, true),
        io(
            rename,
            DiskRequest::Rename {
                from: temp,
                to: target,
            },
            true,
        ),
        io(
            IoStep::SyncStreamDir,
            DiskRequest::SyncDir {
                path: stream_dir(stream),
            },
            true,
        ),
    ]
}

/// Publishes `pointer` as `current.sealed`: temp, write, fsync, rename, fsync the
/// stream directory.
pub(super) fn pointer_steps(stream: &StreamName, pointer: &SealedPointer) -> Vec<Step> {
    let publish = Publish {
        steps: [
            IoStep::CreatePointerTemp,
            IoStep::WritePointerTemp,
            IoStep::SyncPointerTemp,
            IoStep::RenamePointer,
        ],
        temp: pointer_temp_path(stream),
        target: pointer_path(stream),
        bytes: Bytes::copy_from_slice(&pointer.to_bytes()),
    };
    publish_steps(stream, publish)
}

/// Publishes `hint` as the `acknowledged` file: temp, write, fsync, rename, fsync the
/// stream directory. Overwriting it in place later needs it to exist.
pub(super) fn ack_hint_steps(stream: &StreamName, hint: &AckHint) -> Vec<Step> {
    let publish = Publish {
        steps: [
            IoStep::CreateAckHintTemp,
            IoStep::WriteAckHintTemp,
            IoStep::SyncAckHintTemp,
            IoStep::RenameAckHint,
        ],
        temp: ack_hint_temp_path(stream),
        target: ack_hint_path(stream),
        bytes: Bytes::copy_from_slice(&hint.to_bytes()),
    };
    publish_steps(stream, publish)
}

/// Creates the segment file of `header`: the `acknowledged` hint naming it (see
/// [`ack_hint_steps`]), then temp, header, fsync, rename, fsync the segments
/// directory; then installs it as the active segment.
pub(super) fn open_steps(stream: &StreamName, header: &SegmentHeader) -> Vec<Step> {
    let temp = segment_temp_path(stream, header.segment_id);
    let hint = AckHint {
        segment_id: header.segment_id,
        next_offset: header.base_offset,
    };
    let mut steps = ack_hint_steps(stream, &hint);
    steps.extend([
        io(
            IoStep::CreateSegmentTemp,
            DiskRequest::Create { path: temp.clone() },
            true,
        ),
        io(
            IoStep::WriteSegmentHeader,
            DiskRequest::WriteAt {
                path: temp.clone(),
                offset: 0,
                bytes: Bytes::copy_from_slice(&header.to_bytes()),
            },
            true,
        ),
        io(
            IoStep::SyncSegmentTemp,
            DiskRequest::SyncFile { path: temp.clone() },
            true,
        ),
        io(
            IoStep::RenameSegment,
            DiskRequest::Rename {
                from: temp,
                to: segment_path(stream, header.segment_id),
            },
            true,
        ),
        io(
            IoStep::SyncSegmentsDir,
            DiskRequest::SyncDir {
                path: segments_dir(stream),
            },
            true,
        ),
        Step::Install(*header),
    ]);
    steps
}

/// Removes a leftover temp file (a missing one is fine).
pub(super) fn remove_temp_step(path: LocalPath) -> Step {
    Step::Io {
        step: IoStep::RemoveTempFile,
        request: DiskRequest::Remove { path },
        metadata: false,
        not_found_ok: true,
    }
}

/// A recovery step on the newest segment file or the segments directory.
pub(super) fn recovery_step(step: IoStep, request: DiskRequest) -> Step {
    io(step, request, false)
}

/// The path a disk request acts on (its source, for a rename).
pub(super) fn request_path(request: &DiskRequest) -> &LocalPath {
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
