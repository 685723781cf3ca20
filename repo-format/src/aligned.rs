//! Memory aligned for direct I/O (`O_DIRECT`), which wants the buffer, the file offset and
//! the length aligned to the device's logical block. [`ALIGN`] (4 KiB) suits every Linux
//! block device and filesystem we know of.
//!
//! The alignment comes from where in a slightly larger `Vec` the bytes start, so no
//! `unsafe` allocation is needed.

/// Alignment of direct I/O's memory, offsets and lengths.
pub const ALIGN: usize = 4096;

/// Bytes aligned to [`ALIGN`] in memory, in an allocation that is reused.
#[derive(Debug, Default)]
pub struct AlignedBuffer {
    storage: Vec<u8>,
    /// Where the aligned bytes start in `storage`.
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// An empty buffer that holds `capacity` bytes without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buffer = Self::default();
        buffer.reserve(capacity);
        buffer
    }

    /// Bytes it holds without growing.
    pub fn capacity(&self) -> usize {
        // `start` is below ALIGN: the bytes past `capacity` are only slack.
        self.storage.len().saturating_sub(ALIGN)
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The number of bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when it holds [`Self::capacity`] bytes.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// The bytes held, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Makes it hold `len` bytes (growing if needed) and returns them to be overwritten:
    /// they hold whatever the buffer held before, or zeros.
    pub fn resize_for_overwrite(&mut self, len: usize) -> &mut [u8] {
        self.reserve(len);
        self.len = len;
        self.as_mut_slice()
    }

    /// Forgets the bytes held, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Replaces the bytes held with a copy of `bytes` (growing if needed); returns the copy.
    pub fn fill(&mut self, bytes: &[u8]) -> &[u8] {
        self.len = 0;
        self.reserve(bytes.len());
        self.append(bytes);
        self.as_slice()
    }

    /// Appends as much of `bytes` as fits without growing; returns how many bytes that is.
    pub fn append(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.capacity() - self.len);
        let end = self.start + self.len;
        self.storage[end..end + taken].copy_from_slice(&bytes[..taken]);
        self.len += taken;
        taken
    }

    /// Makes room for `capacity` bytes in all, dropping the bytes held if it must grow.
    fn reserve(&mut self, capacity: usize) {
        if self.capacity() < capacity {
            self.storage = vec![0; capacity + ALIGN];
            self.start = self.storage.as_ptr().align_offset(ALIGN);
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_aligned_and_exact() {
        let mut buffer = AlignedBuffer::default();
        for length in [ALIGN, 3 * ALIGN, ALIGN, 10 * ALIGN, 5] {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 7 + length) as u8).collect();
            let copy = buffer.fill(&bytes);
            assert_eq!(copy, bytes.as_slice());
            assert_eq!(copy.as_ptr() as usize % ALIGN, 0, "{length}");
        }
    }

    #[test]
    fn appends_stop_at_the_capacity() {
        let mut buffer = AlignedBuffer::with_capacity(2 * ALIGN);
        assert_eq!(buffer.capacity(), 2 * ALIGN);
        let bytes: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 253) as u8).collect();
        assert_eq!(buffer.append(&bytes[..100]), 100);
        assert_eq!(buffer.append(&bytes[100..]), 2 * ALIGN - 100);
        assert!(buffer.is_full());
        assert_eq!(buffer.as_slice(), &bytes[..2 * ALIGN]);
        assert_eq!(buffer.as_slice().as_ptr() as usize % ALIGN, 0);
        buffer.clear();
        assert!(buffer.is_empty());
        assert_eq!(buffer.append(&bytes[..7]), 7);
        assert_eq!(buffer.as_slice(), &bytes[..7]);
    }

    #[test]
    fn a_resized_buffer_keeps_its_allocation_until_it_must_grow() {
        let mut buffer = AlignedBuffer::with_capacity(2 * ALIGN);
        buffer.resize_for_overwrite(2 * ALIGN).fill(7);
        let before = buffer.as_slice().as_ptr();
        let bytes = buffer.resize_for_overwrite(ALIGN + 1);
        assert_eq!(bytes.len(), ALIGN + 1);
        assert!(bytes.iter().all(|&b| b == 7), "the bytes held before");
        assert_eq!(buffer.as_slice().as_ptr(), before, "no new allocation");
        let grown = buffer.resize_for_overwrite(3 * ALIGN);
        assert_eq!(grown.len(), 3 * ALIGN);
        assert_eq!(grown.as_ptr() as usize % ALIGN, 0);
        assert!(buffer.capacity() >= 3 * ALIGN);
    }
}
