//! The active segment as the stream holds it in memory: every record frame, the
//! footer once sealing starts, and four byte watermarks into the file.
//!
//! ```text
//! 0      header      durable         written        issued         appended
//! |------|-----------|---------------|--------------|--------------|
//!        fsynced      writes done,    write in       buffered, not
//!                     not fsynced     flight         yet written
//! ```
//!
//! **Invariants** (checked by [`ActiveSegment::check_invariants`])
//! - `header <= durable <= written <= issued <= appended <= SEGMENT_BYTES_MAX`, and
//!   each watermark is a frame boundary (or the end of the footer).
//! - Frames are contiguous from the header: frame `i` carries offset
//!   `base_offset + i` and starts where frame `i - 1` ends; the last frame (or the
//!   footer, once sealing started) ends at `appended`.
//! - `durable_records` counts exactly the frames that end at or before `durable`.
//! - The digest covers header and every frame, so the footer built from it seals
//!   exactly the bytes held here.

use crate::SegmentId;
use crate::io::LocalPath;
use crate::limits::{
    SEGMENT_BYTES_MAX, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
    SEGMENT_RECORD_FRAME_HEADER_BYTES,
};
use crate::segment::{Record, SegmentDigest, SegmentFooter, SegmentHeader, StoredRecord};
use bytes::{Bytes, BytesMut};

const HEADER_BYTES: u64 = SEGMENT_HEADER_BYTES as u64;
const FOOTER_BYTES: u64 = SEGMENT_FOOTER_BYTES as u64;
const FRAME_HEADER_BYTES: usize = SEGMENT_RECORD_FRAME_HEADER_BYTES as usize;

/// One record frame held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldRecord {
    /// Absolute position of the frame in the segment file.
    position: u64,
    /// The encoded frame.
    frame: Bytes,
    timestamp_ms: u64,
    ext_id: u64,
}

impl HeldRecord {
    fn end(&self) -> u64 {
        self.position + self.frame.len() as u64
    }
}

/// The active segment in memory.
#[derive(Debug, Clone)]
pub(super) struct ActiveSegment {
    pub path: LocalPath,
    pub header: SegmentHeader,
    records: Vec<HeldRecord>,
    digest: SegmentDigest,
    /// Set when sealing starts; its bytes follow the last frame.
    footer: Option<SegmentFooter>,
    pub appended_bytes: u64,
    pub issued_bytes: u64,
    pub written_bytes: u64,
    pub durable_bytes: u64,
    durable_records: u64,
    /// A sync must cover at least this position (a `flush`, backpressure, the flush
    /// interval, or a retry asked for it).
    pub force_sync_bytes: u64,
    /// A flush of this segment failed at least once (the footer's flag).
    pub flush_failed: bool,
}

impl ActiveSegment {
    /// A freshly created segment: its header was written, fsynced and renamed into place.
    pub fn new(path: LocalPath, header: SegmentHeader) -> Self {
        let mut digest = SegmentDigest::new();
        digest.update_header(&header.to_bytes());
        let segment = ActiveSegment {
            path,
            header,
            records: Vec::new(),
            digest,
            footer: None,
            appended_bytes: HEADER_BYTES,
            issued_bytes: HEADER_BYTES,
            written_bytes: HEADER_BYTES,
            durable_bytes: HEADER_BYTES,
            durable_records: 0,
            force_sync_bytes: HEADER_BYTES,
            flush_failed: false,
        };
        segment.check_invariants();
        segment
    }

    /// The valid prefix of a segment found by recovery (`scan_tail` verified every
    /// frame of `valid`). Nothing counts as durable until recovery's fsync of these
    /// bytes completes ([`ActiveSegment::mark_all_durable`]).
    pub fn recovered(
        path: LocalPath,
        header: SegmentHeader,
        valid: &Bytes,
        digest: SegmentDigest,
    ) -> Self {
        let valid_bytes = valid.len() as u64;
        assert_eq!(digest.durable_bytes(), valid_bytes, "digest of the prefix");
        let mut records = Vec::new();
        let mut position = HEADER_BYTES;
        while position < valid_bytes {
            let index = usize::try_from(position).expect("positions index the buffer");
            let framed = Record::decode(&valid[index..], position)
                .expect("scan_tail verified every frame of the valid prefix");
            assert_eq!(
                framed.record.offset,
                header.base_offset + records.len() as u64,
                "scan_tail verified dense offsets"
            );
            let end = framed.end();
            let end_index = usize::try_from(end).expect("frames end inside the buffer");
            records.push(HeldRecord {
                position,
                frame: valid.slice(index..end_index),
                timestamp_ms: framed.record.timestamp_ms,
                ext_id: framed.record.ext_id,
            });
            position = end;
        }
        assert_eq!(position, valid_bytes, "frames end at the valid length");
        assert_eq!(digest.record_count(), records.len() as u64);
        let segment = ActiveSegment {
            path,
            header,
            records,
            digest,
            footer: None,
            appended_bytes: valid_bytes,
            issued_bytes: valid_bytes,
            written_bytes: valid_bytes,
            durable_bytes: HEADER_BYTES,
            durable_records: 0,
            force_sync_bytes: HEADER_BYTES,
            flush_failed: false,
        };
        segment.check_invariants();
        segment
    }

    pub fn segment_id(&self) -> SegmentId {
        self.header.segment_id
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    pub fn record_count(&self) -> u64 {
        self.records.len() as u64
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.base_offset() + self.record_count()
    }

    /// Every offset below this is durable.
    pub fn durable_next_offset(&self) -> u64 {
        self.base_offset() + self.durable_records
    }

    pub fn footer(&self) -> Option<SegmentFooter> {
        self.footer
    }

    /// Appended bytes not yet durable.
    pub fn backlog_bytes(&self) -> u64 {
        self.appended_bytes - self.durable_bytes
    }

    /// Appends one record at `next_offset()`; returns its offset.
    pub fn append(&mut self, now_ms: u64, payload: &[u8], ext_id: u64) -> u64 {
        assert!(self.footer.is_none(), "no append after sealing started");
        let offset = self.next_offset();
        assert_ne!(offset, u64::MAX, "u64::MAX is never a record offset");
        let record = Record {
            offset,
            timestamp_ms: now_ms,
            ext_id,
            flags: 0,
            payload,
        };
        let frame_bytes = record.frame_bytes();
        let mut frame = BytesMut::with_capacity(
            usize::try_from(frame_bytes).expect("a frame fits memory: its payload does"),
        );
        record.encode(&mut frame);
        let frame = frame.freeze();
        assert_eq!(frame.len() as u64, frame_bytes);
        self.digest.update_frames(&frame);
        let position = self.appended_bytes;
        self.records.push(HeldRecord {
            position,
            frame,
            timestamp_ms: now_ms,
            ext_id,
        });
        self.appended_bytes += frame_bytes;
        assert!(self.appended_bytes + FOOTER_BYTES <= SEGMENT_BYTES_MAX);
        assert_eq!(self.digest.durable_bytes(), self.appended_bytes);
        offset
    }

    /// Starts sealing: the footer's bytes follow the last frame.
    pub fn start_seal(&mut self, footer: SegmentFooter) {
        assert!(self.footer.is_none(), "sealed twice");
        assert_eq!(footer.durable_bytes, self.appended_bytes, "footer position");
        assert_eq!(footer.record_count, self.record_count());
        self.footer = Some(footer);
        self.appended_bytes += FOOTER_BYTES;
    }

    /// Replaces the footer before any of it is durable (a flush failed while sealing,
    /// so its flag must say so).
    pub fn replace_footer(&mut self, footer: SegmentFooter) {
        let old = self.footer.expect("sealing started");
        assert!(
            self.durable_bytes <= old.durable_bytes,
            "no footer byte is durable yet"
        );
        assert_eq!(footer.durable_bytes, old.durable_bytes);
        assert_eq!(footer.record_count, old.record_count);
        self.footer = Some(footer);
    }

    /// The footer this segment would be sealed with now.
    pub fn footer_now(&self, coordinator_watermark: u64, sealed_at_ms: u64) -> SegmentFooter {
        self.digest
            .footer(coordinator_watermark, self.flush_failed, sealed_at_ms)
    }

    /// The file bytes `start..end` (frames, and the footer if `end` reaches it), copied
    /// into one buffer for one `WriteAt`.
    pub fn bytes_between(&self, start: u64, end: u64) -> Bytes {
        assert!(HEADER_BYTES <= start && start < end && end <= self.appended_bytes);
        let first = self
            .records
            .partition_point(|record| record.position < start);
        let frames_end = self.frames_end();
        assert!(
            self.records
                .get(first)
                .map_or(start == frames_end, |record| record.position == start),
            "writes start at a frame boundary"
        );
        let length = usize::try_from(end - start).expect("a write fits memory");
        let mut bytes = BytesMut::with_capacity(length);
        for record in &self.records[first..] {
            if record.position >= end {
                break;
            }
            assert!(record.end() <= end, "writes end at a frame boundary");
            bytes.extend_from_slice(&record.frame);
        }
        if end > frames_end {
            let footer = self.footer.expect("only the footer follows the frames");
            assert_eq!(
                end,
                frames_end + FOOTER_BYTES,
                "the footer is written whole"
            );
            bytes.extend_from_slice(&footer.to_bytes());
        }
        assert_eq!(bytes.len(), length, "the write covers exactly start..end");
        bytes.freeze()
    }

    /// The durable next offset once the bytes up to `covers` are durable: records that
    /// end within `covers` count.
    pub fn next_offset_durable_at(&self, covers: u64) -> u64 {
        let records = self
            .records
            .partition_point(|record| record.end() <= covers);
        self.base_offset() + records as u64
    }

    /// A sync that covered `covers` completed: those bytes are durable. Returns whether
    /// more records became durable.
    pub fn mark_durable(&mut self, covers: u64) -> bool {
        assert!(self.durable_bytes <= covers && covers <= self.written_bytes);
        self.durable_bytes = covers;
        let durable_records = self
            .records
            .partition_point(|record| record.end() <= covers);
        let advanced = durable_records as u64 > self.durable_records;
        self.durable_records = durable_records as u64;
        advanced
    }

    /// Recovery fsynced every recovered byte.
    pub fn mark_all_durable(&mut self) -> bool {
        assert_eq!(self.written_bytes, self.appended_bytes);
        self.mark_durable(self.appended_bytes)
    }

    /// A write or sync failed: nothing after `durable` can be trusted to reach the disk,
    /// so all of it is rewritten from memory.
    pub fn rewind_to_durable(&mut self) {
        self.written_bytes = self.durable_bytes;
        self.issued_bytes = self.durable_bytes;
        self.flush_failed = true;
        self.force_sync_bytes = self.appended_bytes;
    }

    /// The record at `offset`, if this segment holds it (its payload shares the
    /// frame held in memory).
    pub fn record(&self, offset: u64) -> Option<StoredRecord> {
        let index = usize::try_from(offset.checked_sub(self.base_offset())?).ok()?;
        let record = self.records.get(index)?;
        Some(StoredRecord {
            offset,
            timestamp_ms: record.timestamp_ms,
            ext_id: record.ext_id,
            payload: record.frame.slice(FRAME_HEADER_BYTES..),
        })
    }

    /// Append time of the first record (the segment's age counts from it).
    pub fn first_timestamp_ms(&self) -> Option<u64> {
        self.records.first().map(|record| record.timestamp_ms)
    }

    /// Append time of the first record that no sync yet covers or is asked to cover.
    pub fn oldest_unforced_timestamp_ms(&self) -> Option<u64> {
        let covered = self.durable_bytes.max(self.force_sync_bytes);
        let index = self
            .records
            .partition_point(|record| record.end() <= covered);
        self.records.get(index).map(|record| record.timestamp_ms)
    }

    fn frames_end(&self) -> u64 {
        self.records.last().map_or(HEADER_BYTES, HeldRecord::end)
    }

    /// Checks the module invariants; panics on the first broken one. Linear in the
    /// records held.
    pub fn check_invariants(&self) {
        assert!(
            HEADER_BYTES <= self.durable_bytes,
            "durable below the header"
        );
        assert!(
            self.durable_bytes <= self.written_bytes,
            "durable > written"
        );
        assert!(self.written_bytes <= self.issued_bytes, "written > issued");
        assert!(
            self.issued_bytes <= self.appended_bytes,
            "issued > appended"
        );
        assert!(
            self.appended_bytes <= SEGMENT_BYTES_MAX,
            "segment too large"
        );
        assert!(
            self.force_sync_bytes <= self.appended_bytes,
            "force past the end"
        );
        let mut position = HEADER_BYTES;
        for record in &self.records {
            assert_eq!(record.position, position, "frames are contiguous");
            assert!(record.frame.len() >= FRAME_HEADER_BYTES, "whole frames");
            position = record.end();
        }
        let frames_end = position;
        assert_eq!(self.frames_end(), frames_end);
        let footer_bytes = if let Some(footer) = self.footer {
            assert_eq!(
                footer.durable_bytes, frames_end,
                "footer follows the frames"
            );
            assert_eq!(footer.record_count, self.record_count(), "footer count");
            assert_eq!(footer.segment_crc, self.digest.segment_crc(), "footer CRC");
            FOOTER_BYTES
        } else {
            0
        };
        assert_eq!(
            frames_end + footer_bytes,
            self.appended_bytes,
            "appended end"
        );
        assert_eq!(self.digest.durable_bytes(), frames_end, "digest length");
        assert_eq!(
            self.digest.record_count(),
            self.record_count(),
            "digest count"
        );
        let durable_records = self
            .records
            .partition_point(|r| r.end() <= self.durable_bytes);
        assert_eq!(
            self.durable_records, durable_records as u64,
            "durable records"
        );
        for watermark in [self.durable_bytes, self.written_bytes, self.issued_bytes] {
            let index = self.records.partition_point(|r| r.position < watermark);
            let boundary = watermark == HEADER_BYTES
                || watermark == self.appended_bytes
                || self
                    .records
                    .get(index)
                    .is_some_and(|r| r.position == watermark)
                || (watermark == frames_end && self.footer.is_some());
            assert!(boundary, "watermark {watermark} is not a frame boundary");
        }
        // The first and last frames carry the offsets their places say (the frames in
        // between were encoded by `append` or verified by the tail scan).
        for index in [0, self.records.len().saturating_sub(1)] {
            if let Some(record) = self.records.get(index) {
                let framed =
                    Record::decode(&record.frame, record.position).expect("held frames are valid");
                assert_eq!(framed.record.offset, self.base_offset() + index as u64);
                assert_eq!(framed.end(), record.end());
            }
        }
    }
}
