//! Stream names, and every object key and local path derived from them.
//!
//! A [`StreamName`] is the only user text that ever becomes part of a key or a path,
//! and it is checked once, at construction. Keys and paths are then built by
//! formatting: ids are zero-padded to 20 digits (the width of `u64::MAX`), so keys
//! sort in id order in an object listing and every key parses back to what built it.
//!
//! Object keys (Tier 2):
//! - `segments/<stream>/<segment_id:020>.zst`
//! - `manifest/<stream>/<chunk_index:020>.mlog`
//! - `snapshots/<stream>/<snapshot_id:020>.snap`
//!
//! Local paths (relative to the store root):
//! - `streams/<stream>/segments/<segment_id:020>.seg` (Tier 0 segment files)
//! - `streams/<stream>/tier1/<segment_id:020>.zst` (Tier 1 artifacts)
//! - `streams/<stream>/manifest/`, `streams/<stream>/snapshots/`
//!
//! **Invariants**
//! - A `StreamName` is 1..=`STREAM_NAME_BYTES_MAX` bytes of `[A-Za-z0-9._-]` and is
//!   neither `.` nor `..`, so it is one safe path component and one key segment.
//! - `ObjectKey::parse(&key.to_string()) == Ok(key)` for every key, and every string
//!   that parses is exactly the string its key formats to (one spelling per key).
//! - Every key built here is at most `OBJECT_KEY_BYTES_MAX` bytes.

use crate::SegmentId;
use crate::io::LocalPath;
use crate::limits::{OBJECT_KEY_BYTES_MAX, STREAM_NAME_BYTES_MAX};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Digits of a formatted id: `u64::MAX` has 20.
pub const ID_DIGITS: usize = 20;

const _: () = assert!(u64::MAX.ilog10() + 1 == ID_DIGITS as u32);
const _: () = assert!(
    // "snapshots/" + stream + "/" + id + ".snap", the longest key shape.
    10 + STREAM_NAME_BYTES_MAX as usize + 1 + ID_DIGITS + 5 <= OBJECT_KEY_BYTES_MAX as usize,
    "every key built from a valid stream name fits an object key"
);

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("stream name is empty")]
    Empty,
    #[error("stream name is {length_bytes} bytes long, the limit is {limit_bytes}")]
    TooLong {
        length_bytes: usize,
        limit_bytes: u32,
    },
    #[error(
        "stream name has invalid character {character:?} (U+{code:04X}) at byte {byte_position}; \
         allowed are A-Z a-z 0-9 . _ -",
        code = u32::from(*character)
    )]
    InvalidCharacter {
        character: char,
        byte_position: usize,
    },
    #[error("stream name {name:?} is reserved (it would be a relative path component)")]
    Reserved { name: &'static str },
}

/// A validated stream name: `[A-Za-z0-9._-]{1,128}`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        Self::validate(&name)?;
        Ok(StreamName(name))
    }

    /// Checks `name` without building a `StreamName`.
    pub fn validate(name: &str) -> Result<(), NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > STREAM_NAME_BYTES_MAX as usize {
            return Err(NameError::TooLong {
                length_bytes: name.len(),
                limit_bytes: STREAM_NAME_BYTES_MAX,
            });
        }
        if let Some((byte_position, character)) = name
            .char_indices()
            .find(|(_, character)| !Self::character_is_allowed(*character))
        {
            return Err(NameError::InvalidCharacter {
                character,
                byte_position,
            });
        }
        match name {
            "." => Err(NameError::Reserved { name: "." }),
            ".." => Err(NameError::Reserved { name: ".." }),
            _ => {
                assert!(LocalPath::component_is_valid(name));
                Ok(())
            }
        }
    }

    fn character_is_allowed(character: char) -> bool {
        character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StreamName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StreamName::new(name)
    }
}

impl TryFrom<String> for StreamName {
    type Error = NameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        StreamName::new(name)
    }
}

impl From<StreamName> for String {
    fn from(name: StreamName) -> Self {
        name.0
    }
}

/// One segment of one stream: the key of every cache shared by a manager's streams.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentKey {
    pub stream: StreamName,
    pub segment_id: SegmentId,
}

impl SegmentKey {
    #[must_use]
    pub fn new(stream: StreamName, segment_id: SegmentId) -> Self {
        SegmentKey { stream, segment_id }
    }
}

impl fmt::Display for SegmentKey {
    /// `<stream>/<segment_id:020>`, the form used in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.segment_id)
    }
}

/// A Tier 2 object key, as data. `Display` formats it; [`ObjectKey::parse`] reads it
/// back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    /// `segments/<stream>/<segment_id:020>.zst`: a sealed segment's artifact.
    Segment {
        stream: StreamName,
        segment_id: SegmentId,
    },
    /// `manifest/<stream>/<chunk_index:020>.mlog`: a sealed manifest chunk.
    ManifestChunk {
        stream: StreamName,
        chunk_index: u64,
    },
    /// `snapshots/<stream>/<snapshot_id:020>.snap`: a manifest snapshot.
    Snapshot {
        stream: StreamName,
        snapshot_id: u64,
    },
}

/// Why a string is not an AOF2 object key (or not the kind expected).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyParseError {
    #[error("object key is {length_bytes} bytes long, the limit is {limit_bytes}")]
    TooLong {
        length_bytes: usize,
        limit_bytes: u32,
    },
    #[error("object key {key:?} is not <prefix>/<stream>/<file>")]
    Shape { key: String },
    #[error(
        "object key {key:?} has unknown prefix {prefix:?} (expected segments, manifest or snapshots)"
    )]
    UnknownPrefix { key: String, prefix: String },
    #[error("object key {key:?} has an invalid stream name: {source}")]
    Stream {
        key: String,
        #[source]
        source: NameError,
    },
    #[error("{what} {name:?} is not {ID_DIGITS} decimal digits followed by {extension:?}")]
    FileName {
        what: &'static str,
        name: String,
        extension: &'static str,
    },
    #[error("{what} {name:?}: id does not fit in 64 bits")]
    IdOutOfRange { what: &'static str, name: String },
    #[error("object key {key:?} is a {found} key, expected a {expected} key")]
    WrongKind {
        key: String,
        found: &'static str,
        expected: &'static str,
    },
}

impl ObjectKey {
    const SEGMENT_PREFIX: &'static str = "segments";
    const MANIFEST_PREFIX: &'static str = "manifest";
    const SNAPSHOT_PREFIX: &'static str = "snapshots";
    const SEGMENT_EXTENSION: &'static str = ".zst";
    const MANIFEST_EXTENSION: &'static str = ".mlog";
    const SNAPSHOT_EXTENSION: &'static str = ".snap";

    /// The stream this key belongs to.
    #[must_use]
    pub fn stream(&self) -> &StreamName {
        match self {
            ObjectKey::Segment { stream, .. }
            | ObjectKey::ManifestChunk { stream, .. }
            | ObjectKey::Snapshot { stream, .. } => stream,
        }
    }

    /// `"segment"`, `"manifest chunk"` or `"snapshot"`, for messages.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            ObjectKey::Segment { .. } => "segment",
            ObjectKey::ManifestChunk { .. } => "manifest chunk",
            ObjectKey::Snapshot { .. } => "snapshot",
        }
    }

    /// The prefix under which all keys of `stream` and this kind are listed, with the
    /// trailing `/` (e.g. `segments/orders/`).
    #[must_use]
    pub fn segments_prefix(stream: &StreamName) -> String {
        format!("{}/{stream}/", Self::SEGMENT_PREFIX)
    }

    /// `manifest/<stream>/`.
    #[must_use]
    pub fn manifest_prefix(stream: &StreamName) -> String {
        format!("{}/{stream}/", Self::MANIFEST_PREFIX)
    }

    /// `snapshots/<stream>/`.
    #[must_use]
    pub fn snapshots_prefix(stream: &StreamName) -> String {
        format!("{}/{stream}/", Self::SNAPSHOT_PREFIX)
    }

    /// Parses any AOF2 object key. Accepts exactly the strings `Display` produces.
    pub fn parse(key: &str) -> Result<Self, KeyParseError> {
        if key.len() > OBJECT_KEY_BYTES_MAX as usize {
            return Err(KeyParseError::TooLong {
                length_bytes: key.len(),
                limit_bytes: OBJECT_KEY_BYTES_MAX,
            });
        }
        let mut parts = key.split('/');
        let (Some(prefix), Some(stream), Some(file), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyParseError::Shape {
                key: key.to_owned(),
            });
        };
        let stream = StreamName::new(stream).map_err(|source| KeyParseError::Stream {
            key: key.to_owned(),
            source,
        })?;
        let parsed = match prefix {
            Self::SEGMENT_PREFIX => ObjectKey::Segment {
                stream,
                segment_id: SegmentId(parse_id_file_name(
                    "segment object name",
                    file,
                    Self::SEGMENT_EXTENSION,
                )?),
            },
            Self::MANIFEST_PREFIX => ObjectKey::ManifestChunk {
                stream,
                chunk_index: parse_id_file_name(
                    "manifest chunk object name",
                    file,
                    Self::MANIFEST_EXTENSION,
                )?,
            },
            Self::SNAPSHOT_PREFIX => ObjectKey::Snapshot {
                stream,
                snapshot_id: parse_id_file_name(
                    "snapshot object name",
                    file,
                    Self::SNAPSHOT_EXTENSION,
                )?,
            },
            _ => {
                return Err(KeyParseError::UnknownPrefix {
                    key: key.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
        };
        assert_eq!(parsed.to_string(), key, "a key has one spelling");
        Ok(parsed)
    }

    /// Parses a segment key: `segments/<stream>/<segment_id:020>.zst`.
    pub fn parse_segment(key: &str) -> Result<(StreamName, SegmentId), KeyParseError> {
        match Self::parse(key)? {
            ObjectKey::Segment { stream, segment_id } => Ok((stream, segment_id)),
            other => Err(other.wrong_kind(key, "segment")),
        }
    }

    /// Parses a manifest chunk key: `manifest/<stream>/<chunk_index:020>.mlog`.
    pub fn parse_manifest_chunk(key: &str) -> Result<(StreamName, u64), KeyParseError> {
        match Self::parse(key)? {
            ObjectKey::ManifestChunk {
                stream,
                chunk_index,
            } => Ok((stream, chunk_index)),
            other => Err(other.wrong_kind(key, "manifest chunk")),
        }
    }

    /// Parses a snapshot key: `snapshots/<stream>/<snapshot_id:020>.snap`.
    pub fn parse_snapshot(key: &str) -> Result<(StreamName, u64), KeyParseError> {
        match Self::parse(key)? {
            ObjectKey::Snapshot {
                stream,
                snapshot_id,
            } => Ok((stream, snapshot_id)),
            other => Err(other.wrong_kind(key, "snapshot")),
        }
    }

    fn wrong_kind(&self, key: &str, expected: &'static str) -> KeyParseError {
        KeyParseError::WrongKind {
            key: key.to_owned(),
            found: self.kind_name(),
            expected,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Segment { stream, segment_id } => write!(
                f,
                "{}/{stream}/{:020}{}",
                Self::SEGMENT_PREFIX,
                segment_id.0,
                Self::SEGMENT_EXTENSION
            ),
            ObjectKey::ManifestChunk {
                stream,
                chunk_index,
            } => write!(
                f,
                "{}/{stream}/{chunk_index:020}{}",
                Self::MANIFEST_PREFIX,
                Self::MANIFEST_EXTENSION
            ),
            ObjectKey::Snapshot {
                stream,
                snapshot_id,
            } => write!(
                f,
                "{}/{stream}/{snapshot_id:020}{}",
                Self::SNAPSHOT_PREFIX,
                Self::SNAPSHOT_EXTENSION
            ),
        }
    }
}

/// `segments/<stream>/<segment_id:020>.zst`.
#[must_use]
pub fn segment_object_key(stream: &StreamName, segment_id: SegmentId) -> String {
    let key = ObjectKey::Segment {
        stream: stream.clone(),
        segment_id,
    }
    .to_string();
    assert!(key.len() <= OBJECT_KEY_BYTES_MAX as usize);
    key
}

/// `manifest/<stream>/<chunk_index:020>.mlog`.
#[must_use]
pub fn manifest_chunk_object_key(stream: &StreamName, chunk_index: u64) -> String {
    let key = ObjectKey::ManifestChunk {
        stream: stream.clone(),
        chunk_index,
    }
    .to_string();
    assert!(key.len() <= OBJECT_KEY_BYTES_MAX as usize);
    key
}

/// `snapshots/<stream>/<snapshot_id:020>.snap`.
#[must_use]
pub fn snapshot_object_key(stream: &StreamName, snapshot_id: u64) -> String {
    let key = ObjectKey::Snapshot {
        stream: stream.clone(),
        snapshot_id,
    }
    .to_string();
    assert!(key.len() <= OBJECT_KEY_BYTES_MAX as usize);
    key
}

/// Parses `<20 digits><extension>`; anything else (a sign, fewer or more digits,
/// another extension) is an error.
fn parse_id_file_name(
    what: &'static str,
    name: &str,
    extension: &'static str,
) -> Result<u64, KeyParseError> {
    let bad_name = || KeyParseError::FileName {
        what,
        name: name.to_owned(),
        extension,
    };
    let digits = name.strip_suffix(extension).ok_or_else(bad_name)?;
    if digits.len() != ID_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad_name());
    }
    digits
        .parse::<u64>()
        .map_err(|_| KeyParseError::IdOutOfRange {
            what,
            name: name.to_owned(),
        })
}

// ---- Local paths ----

const STREAMS_DIR: &str = "streams";
const SEGMENT_FILE_EXTENSION: &str = ".seg";
const ARTIFACT_FILE_EXTENSION: &str = ".zst";
const SNAPSHOT_FILE_EXTENSION: &str = ".snap";

/// `streams/<stream>`: everything local of one stream.
#[must_use]
pub fn stream_dir(stream: &StreamName) -> LocalPath {
    LocalPath::from_components(&[STREAMS_DIR, stream.as_str()])
}

/// `streams/<stream>/segments`: Tier 0 segment files.
#[must_use]
pub fn segments_dir(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join("segments")
}

/// `streams/<stream>/manifest`: manifest chunk files.
#[must_use]
pub fn manifest_dir(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join("manifest")
}

/// `streams/<stream>/tier1`: Tier 1 artifacts.
#[must_use]
pub fn tier1_dir(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join("tier1")
}

/// `streams/<stream>/snapshots`: manifest snapshots.
#[must_use]
pub fn snapshots_dir(stream: &StreamName) -> LocalPath {
    stream_dir(stream).join("snapshots")
}

/// `<segment_id:020>.seg`.
#[must_use]
pub fn segment_file_name(segment_id: SegmentId) -> String {
    format!("{:020}{SEGMENT_FILE_EXTENSION}", segment_id.0)
}

/// `<segment_id:020>.zst`.
#[must_use]
pub fn artifact_file_name(segment_id: SegmentId) -> String {
    format!("{:020}{ARTIFACT_FILE_EXTENSION}", segment_id.0)
}

/// `<snapshot_id:020>.snap`: a manifest snapshot in [`snapshots_dir`].
#[must_use]
pub fn snapshot_file_name(snapshot_id: u64) -> String {
    format!("{snapshot_id:020}{SNAPSHOT_FILE_EXTENSION}")
}

/// `streams/<stream>/snapshots/<snapshot_id:020>.snap`.
#[must_use]
pub fn snapshot_path(stream: &StreamName, snapshot_id: u64) -> LocalPath {
    snapshots_dir(stream).join(&snapshot_file_name(snapshot_id))
}

/// `streams/<stream>/segments/<segment_id:020>.seg`.
#[must_use]
pub fn segment_path(stream: &StreamName, segment_id: SegmentId) -> LocalPath {
    segments_dir(stream).join(&segment_file_name(segment_id))
}

/// `streams/<stream>/tier1/<segment_id:020>.zst`.
#[must_use]
pub fn artifact_path(stream: &StreamName, segment_id: SegmentId) -> LocalPath {
    tier1_dir(stream).join(&artifact_file_name(segment_id))
}

/// Reads a segment id back from a `<segment_id:020>.seg` file name (a directory
/// listing entry); temp files and strangers are errors the caller may skip.
pub fn parse_segment_file_name(name: &str) -> Result<SegmentId, KeyParseError> {
    parse_id_file_name("segment file name", name, SEGMENT_FILE_EXTENSION).map(SegmentId)
}

/// Reads a segment id back from a `<segment_id:020>.zst` file name.
pub fn parse_artifact_file_name(name: &str) -> Result<SegmentId, KeyParseError> {
    parse_id_file_name("artifact file name", name, ARTIFACT_FILE_EXTENSION).map(SegmentId)
}

/// Reads a snapshot id back from a `<snapshot_id:020>.snap` file name.
pub fn parse_snapshot_file_name(name: &str) -> Result<u64, KeyParseError> {
    parse_id_file_name("snapshot file name", name, SNAPSHOT_FILE_EXTENSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(text: &str) -> StreamName {
        StreamName::new(text).unwrap()
    }

    #[test]
    fn valid_names() {
        for text in [
            "a",
            "orders",
            "Orders-2024_v1.0",
            "...",
            ".hidden",
            "-",
            "_",
        ] {
            assert_eq!(name(text).as_str(), text);
        }
        let longest = "x".repeat(STREAM_NAME_BYTES_MAX as usize);
        assert_eq!(name(&longest).as_str(), longest);
    }

    #[test]
    fn empty_and_too_long_are_rejected() {
        assert_eq!(StreamName::new(""), Err(NameError::Empty));
        let long = "x".repeat(STREAM_NAME_BYTES_MAX as usize + 1);
        let error = StreamName::new(long).unwrap_err();
        assert_eq!(
            error,
            NameError::TooLong {
                length_bytes: 129,
                limit_bytes: 128
            }
        );
        assert_eq!(
            error.to_string(),
            "stream name is 129 bytes long, the limit is 128"
        );
    }

    #[test]
    fn dot_and_dot_dot_are_reserved() {
        assert_eq!(StreamName::new("."), Err(NameError::Reserved { name: "." }));
        let error = StreamName::new("..").unwrap_err();
        assert_eq!(error, NameError::Reserved { name: ".." });
        assert!(error.to_string().contains("\"..\""), "{error}");
    }

    #[test]
    fn bad_characters_are_named_with_their_position() {
        let error = StreamName::new("a/b").unwrap_err();
        assert_eq!(
            error,
            NameError::InvalidCharacter {
                character: '/',
                byte_position: 1
            }
        );
        assert_eq!(
            error.to_string(),
            "stream name has invalid character '/' (U+002F) at byte 1; allowed are A-Z a-z 0-9 . _ -"
        );
        assert_eq!(
            StreamName::new("caf\u{e9}").unwrap_err(),
            NameError::InvalidCharacter {
                character: '\u{e9}',
                byte_position: 3
            }
        );
        assert_eq!(
            StreamName::new("\u{1F600}x").unwrap_err(),
            NameError::InvalidCharacter {
                character: '\u{1F600}',
                byte_position: 0
            }
        );
        for (text, character) in [
            ("a b", ' '),
            ("a\\b", '\\'),
            ("a\0b", '\0'),
            ("a\nb", '\n'),
            ("a:b", ':'),
            ("a*", '*'),
        ] {
            assert!(
                matches!(
                    StreamName::new(text),
                    Err(NameError::InvalidCharacter { character: c, .. }) if c == character
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn serde_validates_names() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Config {
            stream: StreamName,
        }
        let config: Config = toml::from_str("stream = \"orders\"").unwrap();
        assert_eq!(config.stream, name("orders"));
        assert_eq!(
            toml::to_string(&config).unwrap().trim(),
            "stream = \"orders\""
        );
        let error = toml::from_str::<Config>("stream = \"..\"").unwrap_err();
        assert!(error.to_string().contains("reserved"), "{error}");
        assert_eq!("orders".parse::<StreamName>().unwrap(), name("orders"));
    }

    #[test]
    fn object_keys_format_and_round_trip() {
        let stream = name("orders");
        let segment = segment_object_key(&stream, SegmentId(42));
        assert_eq!(segment, "segments/orders/00000000000000000042.zst");
        assert_eq!(
            ObjectKey::parse_segment(&segment).unwrap(),
            (stream.clone(), SegmentId(42))
        );
        let chunk = manifest_chunk_object_key(&stream, 7);
        assert_eq!(chunk, "manifest/orders/00000000000000000007.mlog");
        assert_eq!(
            ObjectKey::parse_manifest_chunk(&chunk).unwrap(),
            (stream.clone(), 7)
        );
        let snapshot = snapshot_object_key(&stream, u64::MAX);
        assert_eq!(snapshot, "snapshots/orders/18446744073709551615.snap");
        assert_eq!(
            ObjectKey::parse_snapshot(&snapshot).unwrap(),
            (stream.clone(), u64::MAX)
        );
        assert_eq!(ObjectKey::segments_prefix(&stream), "segments/orders/");
        assert!(segment.starts_with(&ObjectKey::segments_prefix(&stream)));
        assert!(chunk.starts_with(&ObjectKey::manifest_prefix(&stream)));
        assert!(snapshot.starts_with(&ObjectKey::snapshots_prefix(&stream)));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let cases: &[(&str, &str)] = &[
            ("", "is not <prefix>/<stream>/<file>"),
            ("segments/orders", "is not <prefix>/<stream>/<file>"),
            (
                "segments/orders/00000000000000000001.zst/x",
                "is not <prefix>/<stream>/<file>",
            ),
            (
                "/segments/orders/00000000000000000001.zst",
                "is not <prefix>",
            ),
            ("segments//00000000000000000001.zst", "stream name is empty"),
            ("segments/../00000000000000000001.zst", "reserved"),
            (
                "segments/a b/00000000000000000001.zst",
                "invalid character ' '",
            ),
            (
                "blobs/orders/00000000000000000001.zst",
                "unknown prefix \"blobs\"",
            ),
            ("segments/orders/1.zst", "is not 20 decimal digits"),
            (
                "segments/orders/00000000000000000001.seg",
                "followed by \".zst\"",
            ),
            (
                "segments/orders/00000000000000000001.zst.tmp",
                "followed by",
            ),
            ("segments/orders/+0000000000000000001.zst", "decimal digits"),
            (
                "segments/orders/000000000000000000001.zst",
                "decimal digits",
            ),
            (
                "manifest/orders/00000000000000000001.zst",
                "followed by \".mlog\"",
            ),
            (
                "snapshots/orders/00000000000000000001.mlog",
                "followed by \".snap\"",
            ),
            (
                "segments/orders/99999999999999999999.zst",
                "does not fit in 64 bits",
            ),
        ];
        for (key, message) in cases {
            let error = ObjectKey::parse(key).unwrap_err();
            assert!(error.to_string().contains(message), "{key:?}: {error}");
        }
        let long = format!("segments/{}/x", "a".repeat(2000));
        assert!(matches!(
            ObjectKey::parse(&long),
            Err(KeyParseError::TooLong { .. })
        ));
        let error =
            ObjectKey::parse_segment("manifest/orders/00000000000000000001.mlog").unwrap_err();
        assert_eq!(
            error.to_string(),
            "object key \"manifest/orders/00000000000000000001.mlog\" is a manifest chunk key, \
             expected a segment key"
        );
        assert!(ObjectKey::parse_snapshot("segments/o/00000000000000000001.zst").is_err());
        assert!(ObjectKey::parse_manifest_chunk("segments/o/00000000000000000001.zst").is_err());
    }

    #[test]
    fn local_paths() {
        let stream = name("orders");
        assert_eq!(stream_dir(&stream).as_str(), "streams/orders");
        assert_eq!(segments_dir(&stream).as_str(), "streams/orders/segments");
        assert_eq!(manifest_dir(&stream).as_str(), "streams/orders/manifest");
        assert_eq!(tier1_dir(&stream).as_str(), "streams/orders/tier1");
        assert_eq!(snapshots_dir(&stream).as_str(), "streams/orders/snapshots");
        let segment = segment_path(&stream, SegmentId(3));
        assert_eq!(
            segment.as_str(),
            "streams/orders/segments/00000000000000000003.seg"
        );
        assert_eq!(
            parse_segment_file_name(segment.file_name()).unwrap(),
            SegmentId(3)
        );
        let artifact = artifact_path(&stream, SegmentId(3));
        assert_eq!(
            artifact.as_str(),
            "streams/orders/tier1/00000000000000000003.zst"
        );
        assert_eq!(
            parse_artifact_file_name(artifact.file_name()).unwrap(),
            SegmentId(3)
        );
        assert!(parse_segment_file_name("00000000000000000003.seg.tmp").is_err());
        assert!(parse_segment_file_name("00000000000000000003.zst").is_err());
        assert!(parse_artifact_file_name("00000000000000000003.seg").is_err());
        assert!(parse_segment_file_name("current.sealed").is_err());
    }

    #[test]
    fn segment_key_display() {
        let key = SegmentKey::new(name("orders"), SegmentId(5));
        assert_eq!(key.to_string(), "orders/00000000000000000005");
    }

    fn stream_name() -> impl Strategy<Value = StreamName> {
        "[A-Za-z0-9._-]{1,128}"
            .prop_filter("not . or ..", |text| text != "." && text != "..")
            .prop_map(|text| StreamName::new(text).unwrap())
    }

    proptest! {
        #[test]
        fn every_key_round_trips(stream in stream_name(), id: u64, kind in 0u8..3) {
            let key = match kind {
                0 => ObjectKey::Segment { stream, segment_id: SegmentId(id) },
                1 => ObjectKey::ManifestChunk { stream, chunk_index: id },
                _ => ObjectKey::Snapshot { stream, snapshot_id: id },
            };
            let text = key.to_string();
            prop_assert!(text.len() <= OBJECT_KEY_BYTES_MAX as usize);
            prop_assert_eq!(ObjectKey::parse(&text).unwrap(), key);
        }

        #[test]
        fn parse_never_panics_and_accepts_one_spelling(text in "\\PC{0,64}") {
            if let Ok(key) = ObjectKey::parse(&text) {
                prop_assert_eq!(key.to_string(), text);
            }
        }

        #[test]
        fn validation_agrees_with_the_character_rule(text in "\\PC{0,140}") {
            let expected = !text.is_empty()
                && text.len() <= STREAM_NAME_BYTES_MAX as usize
                && text.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && text != "."
                && text != "..";
            prop_assert_eq!(StreamName::new(text.as_str()).is_ok(), expected);
        }
    }
}
