//! A small, explicit binary codec: little-endian fixed-width integers and `u32`-length-prefixed
//! byte strings. Every on-disk record in `docs/FORMAT.md` is written with it, so the spec can
//! name each field's width.
//!
//! Decoding never panics and never allocates more than the input could hold: a length or count
//! that exceeds the remaining bytes is an error.

/// Appends encoded fields to a byte vector.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An encoder that appends to `buf`.
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    /// Writes one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Writes a `u16`, little-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Writes a `u32`, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Writes a `u64`, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Writes an `i64`, little-endian two's complement.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Writes bytes as they are (fixed-size fields).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Writes a `u32` length followed by the bytes.
    ///
    /// # Panics
    /// Never for inputs below 4 GiB; longer fields are a caller bug (records are far smaller).
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(&bytes[..len as usize]);
        self
    }

    /// Writes a UTF-8 string as length-prefixed bytes.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// Writes a `u32` element count.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated: {field} needs {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes are left over after the record.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// A version byte names a version this build cannot read: the record is not damaged,
    /// it was written by a newer (or unknown) format.
    #[error("{field} {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Field being read.
        field: &'static str,
        /// Version found.
        found: u8,
        /// The one version this build reads.
        supported: u8,
    },
}

impl DecodeError {
    /// Builds an [`DecodeError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Reads fields from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current offset into the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a format version byte and fails with [`DecodeError::UnsupportedVersion`] unless
    /// it is `supported`.
    pub fn version(&mut self, field: &'static str, supported: u8) -> Result<(), DecodeError> {
        match self.u8(field)? {
            version if version == supported => Ok(()),
            found => Err(DecodeError::UnsupportedVersion {
                field,
                found,
                supported,
            }),
        }
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `i64`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// Reads a `u32`-length-prefixed byte string.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::invalid(field, "not UTF-8"))
    }

    /// Reads a `u32` element count and checks that `count * min_element_len` bytes remain,
    /// so a forged count cannot make the caller allocate more than the input holds.
    pub fn count(
        &mut self,
        min_element_len: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        let needed = n.saturating_mul(min_element_len.max(1));
        if needed > self.remaining() {
            return Err(DecodeError::invalid(
                field,
                format!(
                    "count {n} cannot fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fields_round_trip(a: u8, b: u16, c: u32, d: u64, e: i64, s in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut enc = Encoder::new();
            enc.u8(a).u16(b).u32(c).u64(d).i64(e).bytes(&s).raw(&[7; 3]);
            let bytes = enc.finish();
            let mut dec = Decoder::new(&bytes);
            prop_assert_eq!(dec.u8("a").unwrap(), a);
            prop_assert_eq!(dec.u16("b").unwrap(), b);
            prop_assert_eq!(dec.u32("c").unwrap(), c);
            prop_assert_eq!(dec.u64("d").unwrap(), d);
            prop_assert_eq!(dec.i64("e").unwrap(), e);
            prop_assert_eq!(dec.bytes("s").unwrap(), &s[..]);
            prop_assert_eq!(dec.array::<3>("r").unwrap(), [7; 3]);
            prop_assert!(dec.finish().is_ok());
        }

        #[test]
        fn truncation_is_an_error(cut in 0usize..30) {
            let mut enc = Encoder::new();
            enc.u64(1).bytes(b"0123456789abcdef");
            let bytes = enc.finish();
            let cut = cut.min(bytes.len() - 1);
            let mut dec = Decoder::new(&bytes[..cut]);
            let result = dec.u64("a").and_then(|_| dec.bytes("b").map(|_| ()));
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn forged_count_is_rejected() {
        let bytes = u32::MAX.to_le_bytes();
        let mut dec = Decoder::new(&bytes);
        assert!(matches!(
            dec.count(32, "entries"),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn only_the_supported_version_is_read() {
        assert!(Decoder::new(&[3, 9]).version("tree version", 3).is_ok());
        let mut dec = Decoder::new(&[4]);
        let error = dec.version("tree version", 3).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tree version 4 is not supported (this build reads 3)"
        );
        assert!(matches!(
            error,
            DecodeError::UnsupportedVersion {
                found: 4,
                supported: 3,
                ..
            }
        ));
        assert!(Decoder::new(&[]).version("tree version", 3).is_err());
    }
}
