//! Bodies of AOF2's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` and by `tests/corpus.rs`, which replays the committed corpus on the
//! stable toolchain so CI checks every corpus input without nightly.
//!
//! **Invariants checked** (by every target)
//! - Decoding arbitrary bytes never panics; it returns a value or a typed error.
//! - Whatever decodes re-encodes to bytes that decode to the same value.

#![deny(unsafe_code)]

use aof2_core::codec::Reader;
use aof2_core::manifest::record::{DecodedFrame, decode_frame};

/// Every fuzz target, by name, for the corpus replay test.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[("manifest_record_decode", manifest_record_decode)];

/// Decodes a sequence of manifest record frames, as replay does inside a chunk.
///
/// **Invariants checked**: no panic; a decoded known frame re-encodes to the exact
/// bytes it was decoded from (the format has one encoding per record).
pub fn manifest_record_decode(data: &[u8]) {
    let mut reader = Reader::new(data, 0, "manifest record");
    while reader.remaining() > 0 {
        let start = reader.position();
        match decode_frame(&mut reader) {
            Ok(DecodedFrame::Known(frame)) => {
                let bytes = frame.record.to_frame(frame.ordinal, frame.timestamp_ms);
                assert_eq!(
                    bytes.as_slice(),
                    &data[start..reader.position()],
                    "a decoded record must re-encode to its own bytes"
                );
            }
            Ok(DecodedFrame::Unknown { .. }) => {}
            Err(_) => break,
        }
    }
}
