//! zstd compression of blob payloads; incompressible data is stored raw.

use std::cell::RefCell;

use crate::error::{Error, Result};

// zstd contexts are costly to make (a compression context at level 3 allocates about a
// megabyte of tables), so each thread keeps one of each and reuses it for every blob.
// Output does not depend on a context's history: a reused context compresses a blob to
// the same bytes as a fresh one.
thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd-compresses `data` at `level` with this thread's context.
fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some((current, compressor)) if *current == level => compressor.compress(data),
            Some((current, compressor)) => {
                compressor.set_compression_level(level)?;
                *current = level;
                compressor.compress(data)
            }
            None => {
                let (_, compressor) = slot.insert((level, zstd::bulk::Compressor::new(level)?));
                compressor.compress(data)
            }
        }
    })
}

/// Decodes one zstd frame of at most `capacity` bytes into `out` (cleared first) with this
/// thread's context.
fn zstd_decompress_into(payload: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    out.reserve(capacity);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(decompressor) => decompressor,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress_to_buffer(payload, out).map(|_| ())
    })
}

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
        && let Ok(compressed) = zstd_compress(data, level)
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
    let mut data = Vec::new();
    decompress_into(compression, payload, raw_length, object, &mut data)?;
    Ok(data)
}

/// Like [`decompress`], into `out` (cleared first, its allocation reused).
pub fn decompress_into(
    compression: Compression,
    payload: &[u8],
    raw_length: usize,
    object: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    match compression {
        Compression::None => {
            out.clear();
            out.extend_from_slice(payload);
        }
        Compression::Zstd => zstd_decompress_into(payload, raw_length, out)
            .map_err(|e| Error::corrupt(object, format!("zstd: {e}")))?,
    }
    if out.len() != raw_length {
        return Err(Error::corrupt(
            object,
            format!("decoded to {} bytes, expected {raw_length}", out.len()),
        ));
    }
    Ok(())
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

    #[test]
    fn a_reused_context_gives_the_bytes_of_a_fresh_one_at_every_level() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        for level in [3, 1, 19, 3] {
            let mut out = Vec::new();
            assert_eq!(compress_into(level, &data, &mut out), Compression::Zstd);
            let fresh = zstd::bulk::compress(&data, level).expect("compress");
            assert_eq!(out, fresh, "level {level}");
            // A failed decode leaves the thread's context usable.
            assert!(decompress(Compression::Zstd, &out[..10], data.len(), "t").is_err());
            assert_eq!(
                decompress(Compression::Zstd, &out, data.len(), "t").expect("decode"),
                data
            );
        }
    }
}
