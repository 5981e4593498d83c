//! `--streams N`: where the parts of a whole-file hop fall when it is cut into N ssh
//! streams, each over a part of the file (as mscp cuts a single copy).
//!
//! One ssh stream is one cipher on one core at each end: on a link faster than that
//! (AES-GCM in OpenSSH runs at about 1–2 GB/s per core), a hop over several streams moves
//! the file at several cores' rate. The parts are contiguous, cover the file exactly once
//! and start on MiB boundaries, so each stream reads and writes whole blocks; the
//! controller hashes each part as it hashes SRC (see [`super::digest::PendingDigest`]) and
//! every receiver checks each part it wrote against that.

use std::ops::Range;

/// Where parts start: a multiple of this, so every stream's reads and writes are whole
/// blocks.
pub const ALIGN: u64 = 1 << 20;

/// The most streams a hop may use. All of a hop's streams connect to its receiver at once,
/// and sshd's default `MaxStartups 10:30:100` starts refusing logins beyond 10 unfinished
/// at a time: 8 leaves room for the controller's own and another hop's.
pub const MAX_STREAMS: u32 = 8;

/// The parts of a file of `size` bytes for `streams` streams: at most `streams`
/// contiguous ranges covering `0..size` exactly once, every one but the last a whole
/// number of [`ALIGN`] bytes and none empty (a file under `streams` MiB gets fewer parts).
/// An empty file is one empty part.
pub fn parts(size: u64, streams: u32) -> Vec<Range<u64>> {
    let streams = u64::from(streams.max(1));
    let per = size.div_ceil(streams).div_ceil(ALIGN).max(1) * ALIGN;
    let mut out = Vec::new();
    let mut start = 0;
    while start < size || out.is_empty() {
        let end = (start + per).min(size);
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_files_get_fewer_parts_and_an_empty_file_one() {
        assert_eq!(parts(0, 4), vec![0..0]);
        assert_eq!(parts(10, 4), vec![0..10]);
        assert_eq!(
            parts(3 * ALIGN + 1, 4),
            vec![
                0..ALIGN,
                ALIGN..2 * ALIGN,
                2 * ALIGN..3 * ALIGN,
                3 * ALIGN..3 * ALIGN + 1
            ]
        );
        assert_eq!(parts(8 * ALIGN, 1), vec![0..8 * ALIGN]);
        assert_eq!(
            parts(8 * ALIGN, 3),
            vec![0..3 * ALIGN, 3 * ALIGN..6 * ALIGN, 6 * ALIGN..8 * ALIGN]
        );
    }

    proptest! {
        #[test]
        fn parts_cover_the_file_once_in_order_on_block_boundaries(
            size in 0u64..(1 << 40),
            streams in 1u32..=MAX_STREAMS,
        ) {
            let p = parts(size, streams);
            prop_assert!(!p.is_empty() && p.len() <= streams as usize);
            prop_assert_eq!(p[0].start, 0);
            prop_assert_eq!(p.last().unwrap().end, size);
            for w in p.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
                prop_assert!(w[0].end > w[0].start, "no empty part");
                prop_assert_eq!(w[1].start % ALIGN, 0);
            }
            // The parts are as even as the alignment allows: none longer than an even share
            // rounded up to a block.
            let even = size.div_ceil(u64::from(streams)).div_ceil(ALIGN).max(1) * ALIGN;
            prop_assert!(p.iter().all(|r| r.end - r.start <= even));
        }
    }
}
