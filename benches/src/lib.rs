//! Shared inputs for bunker's benchmarks.

/// Deterministic pseudo-random bytes (xorshift64), incompressible like encrypted or
/// compressed data.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that compress about as well as source code.
pub fn text_bytes(len: usize) -> Vec<u8> {
    let words = [
        "fn ", "let ", "match ", "return ", "struct ", "impl ", "self", "\n    ", "{ ", "} ", "x",
        "y", "42", ";",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut state = 7u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state % words.len() as u64) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// A tiny deterministic generator (SplitMix64) for synthetic ids.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator; the same seed gives the same stream.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 32 pseudo-random bytes (a uniformly distributed id).
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0; 32];
        for part in out.chunks_exact_mut(8) {
            part.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}
