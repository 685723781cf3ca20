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
