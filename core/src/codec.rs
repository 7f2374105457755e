//! Shared encoding conventions of every on-disk and on-wire format in AOF2.
//!
//! Every format is fixed-width little-endian, starts with a magic and a version, and
//! covers every byte with a CRC32 (IEEE, via `crc32fast`). Encoders write into a
//! caller-owned [`bytes::BufMut`]; decoders read a byte slice through [`Reader`], which
//! tracks the absolute offset of each field so that every [`DecodeError`] says *what*
//! was wrong and *where*.
//!
//! **Invariants**
//! - Decoding never panics and never allocates more than a named limit allows: every
//!   variable-length field is checked against its `*_max` limit before it is read.
//! - `usize` never appears on disk; lengths are `u32` or `u64`.

use thiserror::Error;

/// CRC32 (IEEE) of `bytes`; the one checksum every AOF2 format uses.
#[must_use]
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// CRC32 (IEEE) over several byte slices, as if they were concatenated.
#[must_use]
pub fn crc32_parts(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// A decode failure: what was being decoded, the absolute byte offset, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{what} at byte {offset}: truncated, needed {needed} bytes but {available} remain")]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{what} at byte {offset}: bad magic {found:#x}, expected {expected:#x}")]
    BadMagic {
        what: &'static str,
        offset: u64,
        found: u64,
        expected: u64,
    },
    #[error("{what} at byte {offset}: unsupported version {found} (this build reads {supported})")]
    UnsupportedVersion {
        what: &'static str,
        offset: u64,
        found: u16,
        supported: u16,
    },
    #[error(
        "{what} at byte {offset}: checksum mismatch, stored {stored:#010x}, computed {computed:#010x}"
    )]
    ChecksumMismatch {
        what: &'static str,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("{what} at byte {offset}: length {length} exceeds the limit {limit}")]
    LimitExceeded {
        what: &'static str,
        offset: u64,
        length: u64,
        limit: u64,
    },
    #[error("{what} at byte {offset}: {reason}")]
    Invalid {
        what: &'static str,
        offset: u64,
        reason: String,
    },
}

impl DecodeError {
    /// The absolute byte offset the error refers to.
    #[must_use]
    pub fn offset(&self) -> u64 {
        match self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::BadMagic { offset, .. }
            | DecodeError::UnsupportedVersion { offset, .. }
            | DecodeError::ChecksumMismatch { offset, .. }
            | DecodeError::LimitExceeded { offset, .. }
            | DecodeError::Invalid { offset, .. } => *offset,
        }
    }
}

/// A bounds-checked little-endian reader over a byte slice.
///
/// `base` is the absolute offset of `bytes[0]` in the file or object, so errors name
/// the real position. Every getter returns [`DecodeError::Truncated`] instead of
/// panicking when the slice is too short.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    base: u64,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, whose first byte sits at absolute offset `base`.
    #[must_use]
    pub fn new(bytes: &'a [u8], base: u64, what: &'static str) -> Self {
        Reader {
            bytes,
            position: 0,
            base,
            what,
        }
    }

    /// Changes the name used in errors (e.g. when moving from a header to a payload).
    pub fn set_what(&mut self, what: &'static str) {
        self.what = what;
    }

    /// The name used in errors.
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Absolute offset of the next byte to be read.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.base + self.position as u64
    }

    /// Position relative to the start of the slice.
    #[must_use]
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes left to read.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// The unread bytes, without consuming them.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.position..]
    }

    /// Reads `count` bytes.
    pub fn bytes(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < count {
            return Err(DecodeError::Truncated {
                what: self.what,
                offset: self.offset(),
                needed: count as u64,
                available: self.remaining() as u64,
            });
        }
        let out = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(out)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64` magic and fails with [`DecodeError::BadMagic`] at
    /// its offset unless it is `expected`.
    pub fn expect_magic(&mut self, expected: u64) -> Result<(), DecodeError> {
        let at = self.offset();
        let found = self.u64()?;
        if found != expected {
            return Err(DecodeError::BadMagic {
                what: self.what,
                offset: at,
                found,
                expected,
            });
        }
        Ok(())
    }

    /// Reads a `u16` format version and fails with
    /// [`DecodeError::UnsupportedVersion`] at its offset unless it is `supported`.
    pub fn expect_version(&mut self, supported: u16) -> Result<(), DecodeError> {
        let at = self.offset();
        let found = self.u16()?;
        if found != supported {
            return Err(DecodeError::UnsupportedVersion {
                what: self.what,
                offset: at,
                found,
                supported,
            });
        }
        Ok(())
    }

    /// Reads a `u32` length prefix and checks it against `limit` *before* reading the
    /// bytes, so a corrupt length never causes a large allocation.
    pub fn length_prefixed(&mut self, limit: u32) -> Result<&'a [u8], DecodeError> {
        let at = self.offset();
        let length = self.u32()?;
        if length > limit {
            return Err(DecodeError::LimitExceeded {
                what: self.what,
                offset: at,
                length: u64::from(length),
                limit: u64::from(limit),
            });
        }
        self.bytes(length as usize)
    }

    /// An [`DecodeError::Invalid`] at the current offset.
    #[must_use]
    pub fn invalid(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            what: self.what,
            offset: self.offset(),
            reason: reason.into(),
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.invalid(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// Writes a `u32` length prefix then the bytes. The caller has checked `bytes` against
/// its limit; a longer slice is a bug.
pub fn put_length_prefixed(buf: &mut impl bytes::BufMut, bytes: &[u8]) {
    let length = u32::try_from(bytes.len()).expect("callers check lengths against u32 limits");
    buf.put_u32_le(length);
    buf.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_absolute_offsets() {
        let bytes = [1u8, 0, 2, 0, 0, 0];
        let mut reader = Reader::new(&bytes, 100, "thing");
        assert_eq!(reader.u16().unwrap(), 1);
        assert_eq!(reader.offset(), 102);
        assert_eq!(reader.u32().unwrap(), 2);
        let error = reader.u8().unwrap_err();
        assert_eq!(error.offset(), 106);
        assert!(error.to_string().contains("thing at byte 106"), "{error}");
    }

    #[test]
    fn length_prefix_is_checked_before_reading() {
        let mut bytes = vec![];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = Reader::new(&bytes, 0, "blob");
        let error = reader.length_prefixed(16).unwrap_err();
        assert!(
            matches!(error, DecodeError::LimitExceeded { length, limit: 16, .. } if length == u64::from(u32::MAX))
        );
    }

    #[test]
    fn crc32_parts_equals_whole() {
        assert_eq!(crc32_parts(&[b"ab", b"cd"]), crc32(b"abcd"));
    }
}
