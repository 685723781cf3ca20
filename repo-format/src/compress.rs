//! zstd compression of blob payloads; incompressible data is stored raw.

use crate::error::{Error, Result};

/// How a blob's payload is stored (the first plaintext byte of a sealed blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// A single zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Parses the stored byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Compresses `data` at `level`, appending the payload to `out`; returns which encoding was
/// used. Data that zstd cannot shrink by at least 1/64 is stored raw.
pub fn compress_into(level: i32, data: &[u8], out: &mut Vec<u8>) -> Compression {
    if level > 0
        && !data.is_empty()
        && let Ok(compressed) = zstd::bulk::compress(data, level)
        && compressed.len() + data.len() / 64 < data.len()
    {
        out.extend_from_slice(&compressed);
        return Compression::Zstd;
    }
    out.extend_from_slice(data);
    Compression::None
}

/// Decodes a payload whose plaintext length is known to be `raw_length`.
pub fn decompress(
    compression: Compression,
    payload: &[u8],
    raw_length: usize,
    object: &str,
) -> Result<Vec<u8>> {
    let data = match compression {
        Compression::None => payload.to_vec(),
        Compression::Zstd => zstd::bulk::decompress(payload, raw_length)
            .map_err(|e| Error::corrupt(object, format!("zstd: {e}")))?,
    };
    if data.len() != raw_length {
        return Err(Error::corrupt(
            object,
            format!("decoded to {} bytes, expected {raw_length}", data.len()),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), repeat in 1usize..4, level in 0i32..4) {
            let data = data.repeat(repeat);
            let mut out = Vec::new();
            let compression = compress_into(level, &data, &mut out);
            prop_assert!(out.len() <= data.len());
            prop_assert_eq!(decompress(compression, &out, data.len(), "t").unwrap(), data);
        }
    }

    #[test]
    fn compressible_data_is_compressed_and_length_is_checked() {
        let data = vec![b'a'; 100_000];
        let mut out = Vec::new();
        assert_eq!(compress_into(3, &data, &mut out), Compression::Zstd);
        assert!(out.len() < 1000);
        assert!(decompress(Compression::Zstd, &out, 99_999, "t").is_err());
        assert!(decompress(Compression::Zstd, &out[..out.len() / 2], 100_000, "t").is_err());
    }
}
