//! Every named limit of AOF2's formats and state machines, kept in one place.
//!
//! Units come last in each name (`_bytes`, `_ms`, `_count`). The const assertions at
//! the bottom pin how limits relate, so changing one that would break another fails
//! to compile.
//!
//! **Invariants**
//! - Every variable-length field on disk has a `*_max` here and decoders check it
//!   before allocating.
//! - The largest manifest record fits in the smallest manifest chunk.

/// Largest payload of one log record.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = 8 * 1024 * 1024;

/// Largest segment file, header and footer included.
pub const SEGMENT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Smallest configurable manifest chunk capacity.
pub const MANIFEST_CHUNK_BYTES_MIN: u32 = 16 * 1024;
/// Default manifest chunk capacity.
pub const MANIFEST_CHUNK_BYTES_DEFAULT: u32 = 256 * 1024;
/// Largest configurable manifest chunk capacity.
pub const MANIFEST_CHUNK_BYTES_MAX: u32 = 1024 * 1024;
/// Default period after which the active manifest chunk is rotated.
pub const MANIFEST_ROTATION_PERIOD_MS_DEFAULT: u64 = 250;

/// Longest object key (S3 allows 1024 bytes).
pub const OBJECT_KEY_BYTES_MAX: u32 = 1024;
/// Longest entity tag returned by an object store.
pub const ETAG_BYTES_MAX: u32 = 256;
/// Largest opaque blob carried by a `CustomEvent` manifest record.
pub const CUSTOM_EVENT_BLOB_BYTES_MAX: u32 = 8 * 1024;
/// Largest manifest record payload (the biggest record is a `CustomEvent` with a
/// full blob, or an `UploadDone` with a full key and etag).
pub const MANIFEST_RECORD_PAYLOAD_BYTES_MAX: u32 = 10 * 1024;

/// Longest stream name; names are `[A-Za-z0-9._-]` and become key and path parts.
pub const STREAM_NAME_BYTES_MAX: u32 = 128;

/// Most segments one manifest index (and so one snapshot) may describe.
pub const SNAPSHOT_SEGMENTS_MAX: u32 = 1 << 20;
/// Most pending jobs recorded per segment in a snapshot.
pub const SNAPSHOT_SEGMENT_JOBS_MAX: u32 = 16;

/// Target uncompressed size of one zstd frame of a seekable artifact.
pub const ARTIFACT_FRAME_RAW_BYTES_TARGET: u32 = 256 * 1024;
/// Most frames in one seekable artifact.
pub const ARTIFACT_FRAMES_MAX: u32 = 1 << 20;

/// Room a manifest chunk needs before its first record (two header slots).
pub const MANIFEST_CHUNK_HEADER_AREA_BYTES: u32 = 1024;
/// Bytes of a manifest record frame before its payload.
pub const MANIFEST_RECORD_FRAME_HEADER_BYTES: u32 = 32;

/// Bytes of one manifest chunk header slot: one 512-byte sector, so a torn write of one
/// slot never damages the other.
pub const MANIFEST_CHUNK_SLOT_BYTES: u32 = 512;
/// Bytes of a header slot that carry fields (the rest of the sector is zero).
pub const MANIFEST_CHUNK_SLOT_FIELDS_BYTES: u32 = 52;
/// Most record bytes one manifest chunk can hold (after its header area).
pub const MANIFEST_CHUNK_RECORD_BYTES_MAX: u32 =
    MANIFEST_CHUNK_BYTES_MAX - MANIFEST_CHUNK_HEADER_AREA_BYTES;
/// Most records one manifest chunk can hold (every frame is at least a frame header).
pub const MANIFEST_CHUNK_RECORDS_MAX: u32 =
    MANIFEST_CHUNK_RECORD_BYTES_MAX / MANIFEST_RECORD_FRAME_HEADER_BYTES;

/// Shortest configurable manifest rotation period.
pub const MANIFEST_ROTATION_PERIOD_MS_MIN: u64 = 1;
/// Longest configurable manifest rotation period (one hour).
pub const MANIFEST_ROTATION_PERIOD_MS_MAX: u64 = 60 * 60 * 1000;

/// Most bytes of record frames the manifest writer buffers before they are durable;
/// `append` past it fails with `BufferFull` until a commit drains the buffer.
pub const MANIFEST_WRITER_BUFFERED_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most events the manifest writer queues for its driver. Each input produces at most
/// two, and the driver drains `poll_event` after every input, so reaching this is a
/// driver bug.
pub const MANIFEST_WRITER_EVENTS_MAX: u32 = 1024;

/// Most chunk corruptions a replay keeps in detail (all of them are counted).
pub const MANIFEST_REPLAY_CORRUPTIONS_KEPT_MAX: u32 = 64;

const _: () = assert!(MANIFEST_CHUNK_BYTES_MIN <= MANIFEST_CHUNK_BYTES_DEFAULT);
const _: () = assert!(MANIFEST_CHUNK_BYTES_DEFAULT <= MANIFEST_CHUNK_BYTES_MAX);
const _: () = assert!(
    MANIFEST_CHUNK_HEADER_AREA_BYTES
        + MANIFEST_RECORD_FRAME_HEADER_BYTES
        + MANIFEST_RECORD_PAYLOAD_BYTES_MAX
        <= MANIFEST_CHUNK_BYTES_MIN,
    "the largest manifest record must fit in the smallest chunk"
);
const _: () = assert!(
    CUSTOM_EVENT_BLOB_BYTES_MAX + 64 <= MANIFEST_RECORD_PAYLOAD_BYTES_MAX,
    "a full custom event must fit a manifest record"
);
const _: () = assert!(
    2 * OBJECT_KEY_BYTES_MAX + ETAG_BYTES_MAX + 64 <= MANIFEST_RECORD_PAYLOAD_BYTES_MAX,
    "a record with a key and an etag must fit a manifest record"
);
const _: () = assert!((RECORD_PAYLOAD_BYTES_MAX as u64) < SEGMENT_BYTES_MAX);
const _: () = assert!(
    2 * MANIFEST_CHUNK_SLOT_BYTES == MANIFEST_CHUNK_HEADER_AREA_BYTES,
    "the header area is exactly two slots, each in its own sector"
);
const _: () = assert!(MANIFEST_CHUNK_SLOT_FIELDS_BYTES <= MANIFEST_CHUNK_SLOT_BYTES);
const _: () = assert!(MANIFEST_ROTATION_PERIOD_MS_MIN <= MANIFEST_ROTATION_PERIOD_MS_DEFAULT);
const _: () = assert!(MANIFEST_ROTATION_PERIOD_MS_DEFAULT <= MANIFEST_ROTATION_PERIOD_MS_MAX);
const _: () = assert!(
    MANIFEST_WRITER_BUFFERED_BYTES_MAX
        >= (MANIFEST_RECORD_FRAME_HEADER_BYTES + MANIFEST_RECORD_PAYLOAD_BYTES_MAX) as u64,
    "the writer buffer holds at least the largest record"
);
const _: () = assert!(
    SNAPSHOT_SEGMENT_JOBS_MAX >= 4,
    "a segment has at most four job kinds"
);
