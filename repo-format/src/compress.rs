//! zstd compression of blob payloads; incompressible data is stored raw.

use std::cell::RefCell;

use crate::error::{Error, Result};

// zstd contexts are costly to make (a compression context at level 3 allocates about a
// megabyte of tables), so each thread keeps one of each and reuses it for every blob, with
// the buffer compressed blobs are written into. Output does not depend on a context's
// history: a reused context compresses a blob to the same bytes as a fresh one.
thread_local! {
    static COMPRESSOR: RefCell<Option<Compressing>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// A thread's compression context, the level it is set to, and its output buffer.
struct Compressing {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    output: Vec<u8>,
}

/// zstd-compresses `data` at `level` with this thread's context, into its output buffer;
/// calls `use_output` with the compressed bytes (`None` if zstd failed).
fn zstd_compress<R>(data: &[u8], level: i32, use_output: impl FnOnce(Option<&[u8]>) -> R) -> R {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let state = match slot.take() {
            Some(state) if state.level == level => Ok(state),
            Some(mut state) => state
                .compressor
                .set_compression_level(level)
                .map(|()| Compressing { level, ..state }),
            None => zstd::bulk::Compressor::new(level).map(|compressor| Compressing {
                level,
                compressor,
                output: Vec::new(),
            }),
        };
        let Ok(mut state) = state else {
            return use_output(None);
        };
        state.output.clear();
        state
            .output
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        let compressed = state.compressor.compress_to_buffer(data, &mut state.output);
        let result = use_output(compressed.ok().map(|_| state.output.as_slice()));
        // A large blob's buffer is not kept: a thread would hold it for the whole run.
        if state.output.capacity() > KEPT_OUTPUT {
            state.output = Vec::new();
        }
        *slot = Some(state);
        result
    })
}

/// Largest compression output buffer a thread keeps between blobs (a blob of about 2 MiB).
const KEPT_OUTPUT: usize = 2 << 20;

/// Decodes one zstd frame of at most `capacity` bytes into `out` (cleared first) with this
/// thread's context.
fn zstd_decompress_into(payload: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    out.reserve(capacity);
    with_decompressor(|decompressor| decompressor.decompress_to_buffer(payload, out).map(|_| ()))
}

/// Calls `decode` with this thread's decompression context.
fn with_decompressor<R>(
    decode: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<R>,
) -> std::io::Result<R> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(decompressor) => decompressor,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decode(decompressor)
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

/// Compresses `data` at `level` and calls `use_payload` with the encoding used and the
/// payload: zstd's output (in this thread's buffer, valid during the call), or `data` itself
/// when zstd cannot shrink it by at least 1/64.
pub fn compress_with<R>(
    level: i32,
    data: &[u8],
    use_payload: impl FnOnce(Compression, &[u8]) -> R,
) -> R {
    if level <= 0 || data.is_empty() {
        return use_payload(Compression::None, data);
    }
    zstd_compress(data, level, |compressed| match compressed {
        Some(compressed) if compressed.len() + data.len() / 64 < data.len() => {
            use_payload(Compression::Zstd, compressed)
        }
        _ => use_payload(Compression::None, data),
    })
}

/// Compresses `data` at `level`, appending the payload to `out`; returns which encoding was
/// used. Data that zstd cannot shrink by at least 1/64 is stored raw.
pub fn compress_into(level: i32, data: &[u8], out: &mut Vec<u8>) -> Compression {
    compress_with(level, data, |compression, payload| {
        out.extend_from_slice(payload);
        compression
    })
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

/// Like [`decompress_into`], into `out`, which is exactly as long as the plaintext must be:
/// for a caller that chose where the bytes go (an aligned buffer, a reused one).
pub fn decompress_to_slice(
    compression: Compression,
    payload: &[u8],
    object: &str,
    out: &mut [u8],
) -> Result<()> {
    let decoded = match compression {
        Compression::None => {
            if let Some(out) = out.get_mut(..payload.len()) {
                out.copy_from_slice(payload);
            }
            payload.len()
        }
        Compression::Zstd => with_decompressor(|d| d.decompress_to_buffer(payload, out))
            .map_err(|e| Error::corrupt(object, format!("zstd: {e}")))?,
    };
    if decoded != out.len() {
        return Err(Error::corrupt(
            object,
            format!("decoded to {decoded} bytes, expected {}", out.len()),
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
            prop_assert_eq!(&decompress(compression, &out, data.len(), "t").unwrap(), &data);
            let mut exact = vec![0xa5; data.len()];
            decompress_to_slice(compression, &out, "t", &mut exact).unwrap();
            prop_assert_eq!(exact, data.clone());
            let mut longer = vec![0; data.len() + 1];
            prop_assert!(decompress_to_slice(compression, &out, "t", &mut longer).is_err());
            if let Some(shorter) = data.len().checked_sub(1) {
                let mut shorter = vec![0; shorter];
                prop_assert!(decompress_to_slice(compression, &out, "t", &mut shorter).is_err());
            }
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
        // A blob larger than the output buffer a thread keeps, between the others.
        let large = data.repeat(16);
        for (level, data) in [(3, &data), (1, &data), (3, &large), (19, &data), (3, &data)] {
            let data = data.as_slice();
            let mut out = Vec::new();
            assert_eq!(compress_into(level, data, &mut out), Compression::Zstd);
            let fresh = zstd::bulk::compress(data, level).expect("compress");
            assert_eq!(out, fresh, "level {level}");
            // A failed decode leaves the thread's context usable.
            assert!(decompress(Compression::Zstd, &out[..10], data.len(), "t").is_err());
            assert_eq!(
                decompress(Compression::Zstd, &out, data.len(), "t").expect("decode"),
                data
            );
        }
    }

    #[test]
    fn data_zstd_cannot_shrink_is_handed_over_as_it_is() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..300_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let (compression, same) = compress_with(3, &random, |compression, payload| {
            (compression, payload.as_ptr() == random.as_ptr())
        });
        assert_eq!((compression, same), (Compression::None, true));
        let (compression, length) = compress_with(0, b"level zero", |c, p| (c, p.len()));
        assert_eq!((compression, length), (Compression::None, 10));
    }
}
