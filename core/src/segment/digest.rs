//! What a segment writer accumulates while it appends, so that sealing can build the
//! footer without reading the file back.
//!
//! **Invariants**
//! - After the header and frames `f1..fn` were fed in order, `segment_crc()` equals
//!   the CRC32 of those bytes concatenated, `durable_bytes()` their total length, and
//!   `record_count()` equals `n`.
//! - The header is fed exactly once, before any frame.

use super::SegmentFooter;
use super::record::peek_length_and_ext_id;
use crate::limits::{SEGMENT_HEADER_BYTES, SEGMENT_RECORD_FRAME_HEADER_BYTES};

/// Running CRC, length, record count and last ext_id of a segment's header and frames.
///
/// Feed the encoded header with [`SegmentDigest::update_header`], then every encoded
/// batch of frames in file order with [`SegmentDigest::update_frames`]; seal with
/// [`SegmentDigest::footer`]. Recovery gets a digest of the valid prefix from
/// [`super::scan_tail`] and continues from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentDigest {
    segment_crc: u32,
    durable_bytes: u64,
    record_count: u64,
    last_ext_id: u64,
}

impl SegmentDigest {
    /// A digest of nothing; feed the header next.
    #[must_use]
    pub fn new() -> Self {
        SegmentDigest::default()
    }

    /// Feeds the encoded header.
    ///
    /// # Panics
    /// If called twice or with anything but a whole encoded header (a writer bug).
    pub fn update_header(&mut self, header: &[u8]) {
        assert_eq!(self.durable_bytes, 0, "the header is fed first and once");
        assert_eq!(
            header.len(),
            SEGMENT_HEADER_BYTES as usize,
            "a whole header"
        );
        self.update_crc(header);
    }

    /// Feeds one or more whole encoded frames, in file order.
    ///
    /// # Panics
    /// If the header was not fed yet or `frames` does not split into whole frames by
    /// their length fields (the writer feeds the frames it just encoded).
    pub fn update_frames(&mut self, frames: &[u8]) {
        assert!(
            self.durable_bytes >= u64::from(SEGMENT_HEADER_BYTES),
            "the header is fed before frames"
        );
        let mut rest = frames;
        while !rest.is_empty() {
            let (length, ext_id) =
                peek_length_and_ext_id(rest).expect("frames are fed whole: a frame header");
            let frame_bytes = SEGMENT_RECORD_FRAME_HEADER_BYTES as usize + length as usize;
            assert!(rest.len() >= frame_bytes, "frames are fed whole: a payload");
            rest = &rest[frame_bytes..];
            self.record_count += 1;
            self.last_ext_id = ext_id;
        }
        self.update_crc(frames);
    }

    fn update_crc(&mut self, bytes: &[u8]) {
        let mut hasher =
            crc32fast::Hasher::new_with_initial_len(self.segment_crc, self.durable_bytes);
        hasher.update(bytes);
        self.segment_crc = hasher.finalize();
        self.durable_bytes += bytes.len() as u64;
    }

    /// Restores a digest from values a scan computed over a valid prefix.
    pub(super) fn from_parts(
        segment_crc: u32,
        durable_bytes: u64,
        record_count: u64,
        last_ext_id: u64,
    ) -> Self {
        SegmentDigest {
            segment_crc,
            durable_bytes,
            record_count,
            last_ext_id,
        }
    }

    /// CRC32 of every byte fed so far.
    #[must_use]
    pub fn segment_crc(&self) -> u32 {
        self.segment_crc
    }

    /// Bytes fed so far: the position where the next frame (or the footer) goes.
    #[must_use]
    pub fn durable_bytes(&self) -> u64 {
        self.durable_bytes
    }

    /// Frames fed so far.
    #[must_use]
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// ext_id of the last frame fed; 0 before any.
    #[must_use]
    pub fn last_ext_id(&self) -> u64 {
        self.last_ext_id
    }

    /// The footer that seals the bytes fed so far.
    #[must_use]
    pub fn footer(
        &self,
        coordinator_watermark: u64,
        flush_failure: bool,
        sealed_at_ms: u64,
    ) -> SegmentFooter {
        assert!(
            self.durable_bytes >= u64::from(SEGMENT_HEADER_BYTES),
            "a segment is sealed after its header was written"
        );
        SegmentFooter {
            record_count: self.record_count,
            durable_bytes: self.durable_bytes,
            last_ext_id: self.last_ext_id,
            coordinator_watermark,
            sealed_at_ms,
            segment_crc: self.segment_crc,
            flush_failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentId;
    use crate::codec::crc32;
    use crate::segment::{Record, SegmentHeader};

    #[test]
    fn digest_matches_the_bytes_fed_in_any_batching() {
        let header = SegmentHeader {
            segment_id: SegmentId(1),
            base_offset: 10,
            created_at_ms: 5,
        }
        .to_bytes();
        let mut frames = Vec::new();
        for (index, payload) in [&b"a"[..], b"", b"ccc"].into_iter().enumerate() {
            Record {
                offset: 10 + index as u64,
                timestamp_ms: 0,
                ext_id: 100 + index as u64,
                flags: 0,
                payload,
            }
            .encode(&mut frames);
        }
        let mut one_batch = SegmentDigest::new();
        one_batch.update_header(&header);
        one_batch.update_frames(&frames);
        let mut split = SegmentDigest::new();
        split.update_header(&header);
        split.update_frames(&frames[..37]);
        split.update_frames(&frames[37..]);
        assert_eq!(one_batch, split);

        let whole: Vec<u8> = header.iter().chain(&frames).copied().collect();
        assert_eq!(one_batch.segment_crc(), crc32(&whole));
        assert_eq!(one_batch.durable_bytes(), whole.len() as u64);
        assert_eq!(one_batch.record_count(), 3);
        assert_eq!(one_batch.last_ext_id(), 102);
    }

    #[test]
    #[should_panic(expected = "a payload")]
    fn partial_frames_are_a_writer_bug() {
        let mut digest = SegmentDigest::new();
        digest.update_header(&[0u8; SEGMENT_HEADER_BYTES as usize]);
        let mut frame = Vec::new();
        Record {
            offset: 0,
            timestamp_ms: 0,
            ext_id: 0,
            flags: 0,
            payload: b"xyz",
        }
        .encode(&mut frame);
        digest.update_frames(&frame[..frame.len() - 1]);
    }
}
