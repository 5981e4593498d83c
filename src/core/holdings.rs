//! Which chunks every host holds, as one flat bitset.

use super::types::{ChunkRange, HostId};

/// Per-host chunk bitsets, stored flat so that a million hosts cost one allocation.
#[derive(Clone, Debug)]
pub struct Holdings {
    words_per_host: usize,
    chunks: u32,
    bits: Vec<u64>,
    counts: Vec<u32>,
}

impl Holdings {
    /// `hosts` hosts holding nothing, for a file of `chunks` chunks.
    pub fn new(hosts: usize, chunks: u32) -> Self {
        let words_per_host = (chunks as usize).div_ceil(64);
        Holdings {
            words_per_host,
            chunks,
            bits: vec![0; words_per_host * hosts],
            counts: vec![0; hosts],
        }
    }

    /// Number of hosts tracked.
    pub fn hosts(&self) -> usize {
        self.counts.len()
    }

    /// True when `host` holds `chunk`.
    pub fn has(&self, host: HostId, chunk: u32) -> bool {
        let w = self.words_per_host * host.index() + (chunk / 64) as usize;
        self.bits[w] & (1u64 << (chunk % 64)) != 0
    }

    /// True when `host` holds every chunk of `range`.
    pub fn has_all(&self, host: HostId, range: ChunkRange) -> bool {
        if range.start == 0 && range.end == self.chunks {
            return self.is_complete(host);
        }
        range.iter().all(|c| self.has(host, c))
    }

    /// Number of chunks `host` holds.
    pub fn count(&self, host: HostId) -> u32 {
        self.counts[host.index()]
    }

    /// True when `host` holds the whole file.
    pub fn is_complete(&self, host: HostId) -> bool {
        self.counts[host.index()] == self.chunks
    }

    /// The bitset words of `host`: bit `c % 64` of word `c / 64` is set when it holds chunk
    /// `c`. Lets strategies compare whole holdings a word at a time.
    pub(crate) fn words(&self, host: HostId) -> &[u64] {
        let start = self.words_per_host * host.index();
        &self.bits[start..start + self.words_per_host]
    }

    /// Records that `host` holds `range`.
    #[inline]
    pub fn add(&mut self, host: HostId, range: ChunkRange) {
        for c in range.iter() {
            let w = self.words_per_host * host.index() + (c / 64) as usize;
            let bit = 1u64 << (c % 64);
            if self.bits[w] & bit == 0 {
                self.bits[w] |= bit;
                self.counts[host.index()] += 1;
            }
        }
    }

    /// Records that `host` holds nothing (its copy turned out to be corrupt).
    pub fn clear(&mut self, host: HostId) {
        let start = self.words_per_host * host.index();
        self.bits[start..start + self.words_per_host].fill(0);
        self.counts[host.index()] = 0;
    }

    /// Records that `host` holds the whole file.
    pub fn fill(&mut self, host: HostId) {
        self.add(
            host,
            ChunkRange {
                start: 0,
                end: self.chunks,
            },
        );
    }
}
