//! How the file is cut into chunks.

/// Why a layout could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The file size was zero.
    #[error("file size must be greater than 0 bytes")]
    EmptyFile,
    /// The chunk size was zero.
    #[error("chunk size must be greater than 0 bytes")]
    ZeroChunk,
    /// More chunks than a `u32` can count.
    #[error("{size} bytes in chunks of {chunk} bytes makes more than 4294967295 chunks")]
    TooManyChunks {
        /// The file size.
        size: u64,
        /// The chunk size.
        chunk: u64,
    },
}

/// A file of `size` bytes cut into `k` chunks of `chunk` bytes; the last one may be shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    size: u64,
    chunk: u64,
    count: u32,
}

impl Layout {
    /// Cuts `size` bytes into chunks of at most `chunk` bytes. A chunk larger than the file
    /// gives one chunk.
    pub fn new(size: u64, chunk: u64) -> Result<Self, LayoutError> {
        if size == 0 {
            return Err(LayoutError::EmptyFile);
        }
        if chunk == 0 {
            return Err(LayoutError::ZeroChunk);
        }
        let chunk = chunk.min(size);
        let count = size.div_ceil(chunk);
        let count = u32::try_from(count).map_err(|_| LayoutError::TooManyChunks { size, chunk })?;
        Ok(Layout { size, chunk, count })
    }

    /// The whole file as a single chunk.
    pub fn whole(size: u64) -> Result<Self, LayoutError> {
        Layout::new(size, size.max(1))
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size of every chunk but possibly the last.
    pub fn chunk_size(&self) -> u64 {
        self.chunk
    }

    /// Number of chunks, `k`.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Byte offset of chunk `i`.
    pub fn offset(&self, i: u32) -> u64 {
        u64::from(i) * self.chunk
    }

    /// Size of chunk `i` in bytes.
    pub fn len(&self, i: u32) -> u64 {
        let start = self.offset(i);
        (self.size - start).min(self.chunk)
    }

    /// Bytes in chunks `start..end`.
    pub fn bytes(&self, start: u32, end: u32) -> u64 {
        if end <= start {
            return 0;
        }
        let hi = (u64::from(end) * self.chunk).min(self.size);
        hi - self.offset(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_chunk_is_shorter_when_size_is_not_a_multiple() {
        let l = Layout::new(10, 4).unwrap();
        assert_eq!(l.count(), 3);
        assert_eq!((l.len(0), l.len(1), l.len(2)), (4, 4, 2));
        assert_eq!(l.bytes(0, 3), 10);
        assert_eq!(l.bytes(1, 3), 6);
        assert_eq!(l.offset(2), 8);
    }

    #[test]
    fn chunk_larger_than_file_gives_one_chunk() {
        let l = Layout::new(10, 100).unwrap();
        assert_eq!(l.count(), 1);
        assert_eq!(l.len(0), 10);
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert_eq!(Layout::new(0, 4), Err(LayoutError::EmptyFile));
        assert_eq!(Layout::new(4, 0), Err(LayoutError::ZeroChunk));
    }
}
