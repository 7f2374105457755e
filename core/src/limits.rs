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
//! - Every configurable value has a default inside its `_MIN`/`_MAX` range.
//! - Every Tier 2 concurrency fits its queue, and a drained driver never reaches the
//!   Tier 2 output limit.
//! - The largest retry backoff (`RETRY_DELAY_MS_MAX` doubled once per attempt) fits
//!   a `u64`, so backoff arithmetic cannot overflow.

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
/// Smallest frame target the artifact encoder accepts (tiny targets are for tests: a
/// large segment with a tiny target may exceed `ARTIFACT_FRAMES_MAX`, which the encoder
/// reports as an error).
pub const ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN: u32 = 1;
/// Largest frame target the artifact encoder accepts.
pub const ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX: u32 = 16 * 1024 * 1024;
/// Room in one artifact frame beyond twice its target or one full record payload: record
/// framing, the segment header (first frame) and the segment footer (last frame).
pub const ARTIFACT_FRAME_RAW_BYTES_SLACK: u32 = 1024 * 1024;
/// Largest uncompressed size of one artifact frame. Decoders refuse larger frames and
/// never let decompression write past the size the index records.
pub const ARTIFACT_FRAME_RAW_BYTES_MAX: u32 = 2 * ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX
    + RECORD_PAYLOAD_BYTES_MAX
    + ARTIFACT_FRAME_RAW_BYTES_SLACK;
/// Largest compressed size of one artifact frame: above zstd's worst-case expansion
/// (`compress_bound`, about 1/256 more) of the largest raw frame.
pub const ARTIFACT_FRAME_COMPRESSED_BYTES_MAX: u32 =
    ARTIFACT_FRAME_RAW_BYTES_MAX + ARTIFACT_FRAME_RAW_BYTES_MAX / 128 + 64 * 1024;
/// Bytes a cold reader GETs first from the end of an artifact, hoping the seek table and
/// index fit; if not, the index decoder says exactly how many tail bytes it needs.
pub const ARTIFACT_TAIL_PROBE_BYTES: u32 = 64 * 1024;
/// Lowest zstd level the artifact encoder accepts.
pub const ARTIFACT_COMPRESSION_LEVEL_MIN: i32 = 1;
/// Default zstd level of artifact frames.
pub const ARTIFACT_COMPRESSION_LEVEL_DEFAULT: i32 = 3;
/// Highest zstd level the artifact encoder accepts (levels above 19 need windows that
/// stock decoders refuse by default).
pub const ARTIFACT_COMPRESSION_LEVEL_MAX: i32 = 19;

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

// Segment files (`segment` module, docs/format.md).

/// Bytes of the fixed segment header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: u32 = 40;
/// Bytes of a segment record frame before its payload.
pub const SEGMENT_RECORD_FRAME_HEADER_BYTES: u32 = 36;
/// Bytes of the fixed footer a sealed segment ends with.
pub const SEGMENT_FOOTER_BYTES: u32 = 60;
/// Bytes of the `current.sealed` pointer file.
pub const SEALED_POINTER_BYTES: u32 = 40;
/// Bytes of the `acknowledged` hint file.
pub const ACK_HINT_BYTES: u32 = 32;
/// Most bytes the tail scanner checksums while it looks for a valid record after a bad
/// one. Past this budget it refuses to decide (an error), rather than truncate.
pub const TAIL_SCAN_VERIFY_BYTES_MAX: u64 = 64 * RECORD_PAYLOAD_BYTES_MAX as u64;

const _: () = assert!(
    SEGMENT_HEADER_BYTES as u64
        + SEGMENT_RECORD_FRAME_HEADER_BYTES as u64
        + RECORD_PAYLOAD_BYTES_MAX as u64
        + SEGMENT_FOOTER_BYTES as u64
        <= SEGMENT_BYTES_MAX,
    "a sealed segment holding one largest record must fit the segment limit"
);
const _: () = assert!(
    TAIL_SCAN_VERIFY_BYTES_MAX
        >= SEGMENT_RECORD_FRAME_HEADER_BYTES as u64 + RECORD_PAYLOAD_BYTES_MAX as u64,
    "the tail scanner can verify at least one largest candidate record"
);
const _: () = assert!(ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN >= 1);
const _: () = assert!(ARTIFACT_FRAME_RAW_BYTES_TARGET_MIN <= ARTIFACT_FRAME_RAW_BYTES_TARGET);
const _: () = assert!(ARTIFACT_FRAME_RAW_BYTES_TARGET <= ARTIFACT_FRAME_RAW_BYTES_TARGET_MAX);
const _: () = assert!(
    SEGMENT_BYTES_MAX / (ARTIFACT_FRAME_RAW_BYTES_TARGET as u64) < ARTIFACT_FRAMES_MAX as u64,
    "a largest segment at the default frame target must fit the frame limit"
);
const _: () = assert!(
    ARTIFACT_FRAME_RAW_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX,
    "one frame never needs to be larger than a segment"
);
const _: () = assert!(ARTIFACT_FRAME_RAW_BYTES_MAX < ARTIFACT_FRAME_COMPRESSED_BYTES_MAX);
const _: () = assert!(ARTIFACT_COMPRESSION_LEVEL_MIN <= ARTIFACT_COMPRESSION_LEVEL_DEFAULT);
const _: () = assert!(ARTIFACT_COMPRESSION_LEVEL_DEFAULT <= ARTIFACT_COMPRESSION_LEVEL_MAX);
// ---- Retries (Tier 1 and Tier 2 share `retry::RetryPolicy`) ----

/// Most attempts (the first try included) a `RetryPolicy` may allow.
pub const RETRY_ATTEMPTS_MAX: u32 = 32;
/// Longest delay between two attempts a `RetryPolicy` may configure.
pub const RETRY_DELAY_MS_MAX: u64 = 10 * 60 * 1000;
/// Default attempts of a Tier 2 (and Tier 1) `RetryPolicy`, the first try included.
pub const RETRY_MAX_ATTEMPTS_DEFAULT: u32 = 3;
/// Default base delay of the Tier 2 `RetryPolicy`.
pub const TIER2_RETRY_BASE_DELAY_MS_DEFAULT: u64 = 100;
/// Default base delay (`retry_backoff`) of Tier 1 compression and hydration retries.
pub const TIER1_RETRY_BASE_DELAY_MS_DEFAULT: u64 = 50;
/// Default cap on one backoff delay.
pub const RETRY_MAX_DELAY_MS_DEFAULT: u64 = 5 * 1000;

// ---- Tier 0 cache ----

/// Smallest configurable Tier 0 budget (`cluster_max_bytes`); smaller values are
/// almost certainly a unit mistake.
pub const TIER0_CLUSTER_MAX_BYTES_MIN: u64 = 1024 * 1024;
/// Default Tier 0 budget (`cluster_max_bytes`).
pub const TIER0_CLUSTER_MAX_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Most hydrations that may wait for Tier 0 space at once.
pub const ACTIVATION_QUEUE_MAX: u32 = 4096;
/// Default `activation_queue_warn_threshold` (the runbook alerts at depth >= 4).
pub const ACTIVATION_QUEUE_WARN_THRESHOLD_DEFAULT: u32 = 4;
/// Most readers that may pin one Tier 0 segment at once.
pub const TIER0_SEGMENT_PINS_MAX: u32 = 1 << 16;
/// Most actions plus events Tier 0 holds for its driver; a driver that drains after
/// every input never comes close, so reaching it is a driver bug.
pub const TIER0_OUTPUTS_QUEUED_MAX: u32 = 1 << 20;

const _: () = assert!(RETRY_ATTEMPTS_MAX >= 1);
const _: () =
    assert!(RETRY_MAX_ATTEMPTS_DEFAULT >= 1 && RETRY_MAX_ATTEMPTS_DEFAULT <= RETRY_ATTEMPTS_MAX);
const _: () = assert!(TIER1_RETRY_BASE_DELAY_MS_DEFAULT <= RETRY_MAX_DELAY_MS_DEFAULT);
const _: () = assert!(TIER2_RETRY_BASE_DELAY_MS_DEFAULT <= RETRY_MAX_DELAY_MS_DEFAULT);
const _: () = assert!(RETRY_MAX_DELAY_MS_DEFAULT <= RETRY_DELAY_MS_MAX);
const _: () = assert!(
    (RETRY_DELAY_MS_MAX as u128) << (RETRY_ATTEMPTS_MAX - 1) <= u64::MAX as u128,
    "the largest uncapped backoff must not overflow u64"
);
const _: () = assert!(TIER0_CLUSTER_MAX_BYTES_MIN <= TIER0_CLUSTER_MAX_BYTES_DEFAULT);
const _: () = assert!(ACTIVATION_QUEUE_WARN_THRESHOLD_DEFAULT >= 1);
const _: () = assert!(ACTIVATION_QUEUE_WARN_THRESHOLD_DEFAULT <= ACTIVATION_QUEUE_MAX);
const _: () = assert!(
    ACTIVATION_QUEUE_MAX < TIER0_OUTPUTS_QUEUED_MAX,
    "granting the whole queue at once must fit the output queue"
);
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

// ---- Tier 2 transfers ----

/// Most uploads the Tier 2 machine holds at once (waiting, in flight or backing off);
/// `tier2_upload_queue_max`. Enqueuing more is refused with `Tier2Error::QueueFull`.
pub const TIER2_UPLOAD_QUEUE_MAX: u32 = 4096;
/// Most deletes held at once (`tier2_delete_queue_max`). Larger than the upload queue:
/// one retention pass may delete many segments, and a delete carries no payload.
pub const TIER2_DELETE_QUEUE_MAX: u32 = 16 * 1024;
/// Most fetches (hydrations and cold reads) held at once (`tier2_fetch_queue_max`).
pub const TIER2_FETCH_QUEUE_MAX: u32 = 4096;
/// Largest configurable concurrency of each Tier 2 queue (`upload_concurrency`,
/// `delete_concurrency`, `fetch_concurrency`).
pub const TIER2_CONCURRENCY_MAX: u32 = 256;
/// Default `upload_concurrency`.
pub const TIER2_UPLOAD_CONCURRENCY_DEFAULT: u32 = 4;
/// Default `delete_concurrency`.
pub const TIER2_DELETE_CONCURRENCY_DEFAULT: u32 = 4;
/// Default `fetch_concurrency` (readers wait on fetches, so more of them run at once).
pub const TIER2_FETCH_CONCURRENCY_DEFAULT: u32 = 8;
/// Most requests plus events the Tier 2 machine holds for its driver; a driver that
/// drains after every input never comes close, so reaching it is a driver bug.
pub const TIER2_OUTPUTS_QUEUED_MAX: u32 = 1 << 20;

const _: () = assert!(TIER2_CONCURRENCY_MAX >= 1);
const _: () = assert!(
    TIER2_UPLOAD_CONCURRENCY_DEFAULT >= 1
        && TIER2_UPLOAD_CONCURRENCY_DEFAULT <= TIER2_CONCURRENCY_MAX
);
const _: () = assert!(
    TIER2_DELETE_CONCURRENCY_DEFAULT >= 1
        && TIER2_DELETE_CONCURRENCY_DEFAULT <= TIER2_CONCURRENCY_MAX
);
const _: () = assert!(
    TIER2_FETCH_CONCURRENCY_DEFAULT >= 1
        && TIER2_FETCH_CONCURRENCY_DEFAULT <= TIER2_CONCURRENCY_MAX
);
const _: () = assert!(
    TIER2_CONCURRENCY_MAX <= TIER2_UPLOAD_QUEUE_MAX
        && TIER2_CONCURRENCY_MAX <= TIER2_DELETE_QUEUE_MAX
        && TIER2_CONCURRENCY_MAX <= TIER2_FETCH_QUEUE_MAX,
    "every in-flight slot can be filled from its queue"
);
const _: () = assert!(
    // Between two drains one input emits at most one event per held operation plus one
    // request and one event per slot; the sum of the queues bounds both.
    2 * (TIER2_UPLOAD_QUEUE_MAX + TIER2_DELETE_QUEUE_MAX + TIER2_FETCH_QUEUE_MAX)
        < TIER2_OUTPUTS_QUEUED_MAX,
    "a drained driver never reaches the output limit"
);

// ---- Tier 1 warm cache ----

/// Smallest configurable Tier 1 budget (`max_bytes`); smaller values are almost
/// certainly a unit mistake.
pub const TIER1_MAX_BYTES_MIN: u64 = 1024 * 1024;
/// Default Tier 1 budget (`max_bytes`): should cover the working set of sealed
/// segments.
pub const TIER1_MAX_BYTES_DEFAULT: u64 = 4 * 1024 * 1024 * 1024;
/// Default number of compression jobs running at once.
pub const TIER1_COMPRESSION_CONCURRENCY_DEFAULT: u32 = 2;
/// Most compression jobs that may run at once.
pub const TIER1_COMPRESSION_CONCURRENCY_MAX: u32 = 64;
/// Default number of hydrations running at once (bounded so cold reads cannot starve
/// appends of disk bandwidth).
pub const TIER1_HYDRATION_CONCURRENCY_DEFAULT: u32 = 4;
/// Most hydrations that may run at once.
pub const TIER1_HYDRATION_CONCURRENCY_MAX: u32 = 64;
/// Most compression jobs Tier 1 holds at once: waiting, running or backing off.
pub const TIER1_COMPRESSION_QUEUE_MAX: u32 = 4096;
/// Most hydrations Tier 1 holds at once: waiting, running or backing off.
pub const TIER1_HYDRATION_QUEUE_MAX: u32 = 4096;
/// Hydration latency samples kept for the percentiles (the most recent ones).
pub const TIER1_HYDRATION_LATENCY_SAMPLES_MAX: u32 = 1024;
/// Most requests plus events Tier 1 holds for its driver; a driver that drains after
/// every input never comes close, so reaching it is a driver bug.
pub const TIER1_OUTPUTS_QUEUED_MAX: u32 = 1 << 20;

const _: () = assert!(TIER1_MAX_BYTES_MIN <= TIER1_MAX_BYTES_DEFAULT);
const _: () = assert!(TIER1_COMPRESSION_CONCURRENCY_DEFAULT >= 1);
const _: () = assert!(TIER1_COMPRESSION_CONCURRENCY_DEFAULT <= TIER1_COMPRESSION_CONCURRENCY_MAX);
const _: () = assert!(TIER1_HYDRATION_CONCURRENCY_DEFAULT >= 1);
const _: () = assert!(TIER1_HYDRATION_CONCURRENCY_DEFAULT <= TIER1_HYDRATION_CONCURRENCY_MAX);
const _: () = assert!(
    TIER1_COMPRESSION_CONCURRENCY_MAX <= TIER1_COMPRESSION_QUEUE_MAX,
    "every running compression is also a held job"
);
const _: () = assert!(
    TIER1_HYDRATION_CONCURRENCY_MAX <= TIER1_HYDRATION_QUEUE_MAX,
    "every running hydration is also a held job"
);
const _: () = assert!(
    TIER1_HYDRATION_LATENCY_SAMPLES_MAX >= 100,
    "p99 needs at least 100 samples to differ from the maximum"
);
const _: () = assert!(
    (TIER1_COMPRESSION_QUEUE_MAX as u64 + TIER1_HYDRATION_QUEUE_MAX as u64) * 4
        < TIER1_OUTPUTS_QUEUED_MAX as u64,
    "every job's request and a few events each fit the output queue"
);

// ---- Stream (the active-segment writer, `stream` module) ----

/// Smallest configurable `segment_target_bytes`. Tiny, so tests and simulations roll
/// over often; real deployments use megabytes.
pub const SEGMENT_TARGET_BYTES_MIN: u64 = 1024;
/// Default `segment_target_bytes`: a segment is sealed once it holds this many bytes.
pub const SEGMENT_TARGET_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Largest configurable `segment_target_bytes`. The active segment is held in memory
/// (hot-tail reads and fsync-failure rewrites), so this bounds a stream's memory.
pub const SEGMENT_TARGET_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Smallest configurable `segment_max_age_ms` (smaller is almost certainly seconds
/// written as milliseconds).
pub const SEGMENT_MAX_AGE_MS_MIN: u64 = 1000;
/// Default `segment_max_age_ms`: a segment is sealed at most this long after its first
/// record was appended.
pub const SEGMENT_MAX_AGE_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Largest configurable `segment_max_age_ms`.
pub const SEGMENT_MAX_AGE_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1000;
/// Largest `flush = { interval_ms = n }`.
pub const FLUSH_INTERVAL_MS_MAX: u64 = 60 * 1000;
/// Default `max_unflushed_bytes`: acknowledged-but-not-durable bytes a stream buffers
/// before appends get `WouldBlock(Flush)`.
pub const STREAM_UNFLUSHED_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;
/// Largest configurable `max_unflushed_bytes` (held in memory).
pub const STREAM_UNFLUSHED_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Default `flush_max_retries`: rewrites after failed flushes before the stream is
/// poisoned.
pub const FLUSH_MAX_RETRIES_DEFAULT: u32 = 3;
/// Largest configurable `flush_max_retries`.
pub const FLUSH_RETRIES_MAX: u32 = 32;
/// Most requests a stream has in flight at once: writes and syncs of the active
/// segment never overlap (a write in flight while an fsync fails could land beyond
/// the lost pages), and recovery and metadata steps run one at a time.
pub const STREAM_IO_IN_FLIGHT_MAX: u32 = 1;
/// Most events a stream holds for its driver; `Durable` events coalesce, so a driver
/// that drains after every input never comes close, and reaching it is a driver bug.
pub const STREAM_EVENTS_QUEUED_MAX: u32 = 1 << 16;

const _: () = assert!(SEGMENT_TARGET_BYTES_MIN > SEGMENT_HEADER_BYTES as u64);
const _: () = assert!(SEGMENT_TARGET_BYTES_MIN <= SEGMENT_TARGET_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_TARGET_BYTES_DEFAULT <= SEGMENT_TARGET_BYTES_MAX);
const _: () = assert!(
    SEGMENT_TARGET_BYTES_MAX
        + SEGMENT_RECORD_FRAME_HEADER_BYTES as u64
        + RECORD_PAYLOAD_BYTES_MAX as u64
        + SEGMENT_FOOTER_BYTES as u64
        <= SEGMENT_BYTES_MAX,
    "a segment at its largest target plus one largest record and the footer fits a segment"
);
const _: () = assert!(SEGMENT_MAX_AGE_MS_MIN <= SEGMENT_MAX_AGE_MS_DEFAULT);
const _: () = assert!(SEGMENT_MAX_AGE_MS_DEFAULT <= SEGMENT_MAX_AGE_MS_MAX);
const _: () = assert!(
    STREAM_UNFLUSHED_BYTES_DEFAULT
        >= SEGMENT_RECORD_FRAME_HEADER_BYTES as u64 + RECORD_PAYLOAD_BYTES_MAX as u64,
    "the default backlog admits one largest record"
);
const _: () = assert!(STREAM_UNFLUSHED_BYTES_DEFAULT <= STREAM_UNFLUSHED_BYTES_MAX);
const _: () = assert!(
    STREAM_UNFLUSHED_BYTES_MAX
        >= SEGMENT_RECORD_FRAME_HEADER_BYTES as u64 + RECORD_PAYLOAD_BYTES_MAX as u64,
    "the largest backlog admits one largest record"
);
const _: () = assert!(FLUSH_MAX_RETRIES_DEFAULT <= FLUSH_RETRIES_MAX);
const _: () = assert!(STREAM_IO_IN_FLIGHT_MAX >= 1);

/// Streams one [`Store`](crate::store::Store) keeps open at once.
pub const STORE_STREAMS_MAX: usize = 4096;

/// Record indexes (frame positions of a sealed segment) the store keeps for reads;
/// the least recently used is dropped first and rebuilt by reading its file again.
pub const STORE_RECORD_INDEXES_MAX: usize = 256;

/// Reads parked at once (waiting for a hydration, a record index or, as tail
/// followers, for durability); past it a read gets `WouldBlock` instead of waiting.
pub const STORE_PARKED_READS_MAX: usize = 65_536;

/// Appends parked at once waiting out `WouldBlock(Rollover | Flush)`; past it a
/// waiting append is answered `WouldBlock(Flush)`.
pub const STORE_PARKED_APPENDS_MAX: usize = 65_536;

/// Largest snapshot file recovery reads; a longer one is skipped as corrupt.
pub const STORE_SNAPSHOT_FILE_BYTES_MAX: u64 = 1 << 30;
/// Most snapshot files recovery tries (newest first) before it replays every chunk.
pub const STORE_RECOVERY_SNAPSHOTS_TRIED_MAX: usize = 8;
/// Most manifest chunk objects a restore from Tier 2 lists for one stream.
pub const STORE_RESTORE_CHUNKS_MAX: usize = 1 << 20;
/// Most snapshot objects a restore from Tier 2 lists for one stream.
pub const STORE_RESTORE_SNAPSHOTS_LISTED_MAX: usize = 1 << 16;
/// Most recovery events a stream keeps in detail (all of them are counted).
pub const STORE_RECOVERY_EVENTS_KEPT_MAX: usize = 64;
/// Reads of a Tier 1 artifact for its upload whose bytes do not match the length and
/// CRC its `CompressionDone` recorded (a read that returned a bad copy), before the
/// upload is journaled as failed (`UploadFailed`, `ChecksumMismatch`). Bad bytes are
/// never uploaded.
pub const STORE_ARTIFACT_READ_ATTEMPTS_MAX: u32 = 3;

/// How often the store re-runs retention for each stream (besides after every seal
/// and every committed upload), retries the retention deletes and manifest-chunk
/// uploads and removals that failed, and checks the snapshot interval.
pub const STORE_UPKEEP_INTERVAL_MS: u64 = 60_000;
/// Rounds the store gives one retention delete, manifest-chunk upload or chunk
/// removal whose machine reported a terminal failure, before it gives up on it (the
/// manifest keeps the pending delete; a chunk stays local).
pub const STORE_UPKEEP_ROUNDS_MAX: u32 = 5;
/// Default manifest records between two periodic snapshots of a stream.
pub const STORE_SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 10_000;
/// Largest configurable `snapshot_every_records`.
pub const STORE_SNAPSHOT_EVERY_RECORDS_MAX: u64 = 1 << 32;
/// Default time between two periodic snapshots of a stream that journaled records (the
/// maintenance handbook asks for at least one every 30 minutes).
pub const STORE_SNAPSHOT_INTERVAL_MS_DEFAULT: u64 = 30 * 60 * 1000;
/// Shortest configurable `snapshot_interval_ms`.
pub const STORE_SNAPSHOT_INTERVAL_MS_MIN: u64 = 1_000;
/// Longest configurable `snapshot_interval_ms` (seven days).
pub const STORE_SNAPSHOT_INTERVAL_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1000;
/// On-demand snapshot commands one stream holds waiting at once.
pub const STORE_SNAPSHOT_WAITERS_MAX: usize = 64;

const _: () = assert!(STORE_SNAPSHOT_EVERY_RECORDS_DEFAULT <= STORE_SNAPSHOT_EVERY_RECORDS_MAX);
const _: () = assert!(STORE_SNAPSHOT_INTERVAL_MS_MIN <= STORE_SNAPSHOT_INTERVAL_MS_DEFAULT);
const _: () = assert!(STORE_SNAPSHOT_INTERVAL_MS_DEFAULT <= STORE_SNAPSHOT_INTERVAL_MS_MAX);
const _: () = assert!(STORE_UPKEEP_ROUNDS_MAX >= 1);
