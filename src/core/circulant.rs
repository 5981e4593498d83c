//! The round-optimal chunk broadcast schedule that `binomial` follows, for any number of hosts.
//!
//! The classic binomial pipeline (hosts exchange along hypercube dimension t mod d in step t)
//! only exists for 2^d hosts. For any p hosts this module computes the schedule of
//! J. L. Träff, "Round-optimal n-Block Broadcast Schedules in Logarithmic Time" (2023,
//! arXiv:2312.11236), which reaches the lower bound of n − 1 + ⌈log2 p⌉ rounds in the model
//! where each host sends one block and receives one block per round:
//!
//! - q = ⌈log2 p⌉ and skips s_q = p, s_i = ⌈s_{i+1}/2⌉, so s_0 = 1;
//! - in round t, with k = t mod q, host r receives from host (r − s_k) mod p, so every host
//!   has exactly q fixed partners (a circulant graph);
//! - which block it receives is a per-host table of q entries, periodic with period q (the
//!   block number grows by q per phase), computed in O(log p) per host by a depth-first
//!   search over canonical sums of skips;
//! - rounds are shifted so that the last block is the last to be injected, and block numbers
//!   past the end stand for the last block (a host receives it only the first time).
//!
//! For p a power of two the skips are 1, 2, 4, … and the schedule is a binomial pipeline.

/// The receive schedule of every host for one broadcast of `blocks` blocks among `hosts`.
pub(crate) struct CirculantSchedule {
    hosts: u32,
    blocks: u32,
    /// Rounds per phase, q = ⌈log2 p⌉.
    q: u32,
    /// s_0..=s_q.
    skips: Vec<u32>,
    /// Rounds skipped before round 0 so that the last block ends the schedule.
    shift: u32,
    /// `table[r * q + k]`: block offset host r receives in phase round k of phase 0.
    table: Vec<i8>,
    /// First round in which each host receives the last block (`u32::MAX` for the source).
    last_round: Vec<u32>,
}

impl CirculantSchedule {
    /// The schedule for `hosts` hosts (host 0 is the source) and `blocks` blocks.
    pub(crate) fn new(hosts: u32, blocks: u32) -> Self {
        assert!(hosts >= 1 && blocks >= 1, "schedule needs hosts and blocks");
        let q = u32::BITS - (hosts - 1).leading_zeros();
        let mut skips = vec![0u32; q as usize + 1];
        skips[q as usize] = hosts;
        for i in (0..q as usize).rev() {
            skips[i] = skips[i + 1].div_ceil(2);
        }
        let shift = if q == 0 {
            0
        } else {
            (q - (blocks - 1) % q) % q
        };
        let mut s = CirculantSchedule {
            hosts,
            blocks,
            q,
            skips,
            shift,
            table: vec![0; hosts as usize * q as usize],
            last_round: vec![u32::MAX; hosts as usize],
        };
        let mut search = Search::new(&s.skips);
        for r in 1..hosts {
            let row = search.receive_table(r);
            let base = r as usize * q as usize;
            s.table[base..base + q as usize].copy_from_slice(&row);
            s.last_round[r as usize] = s.first_round_of_last_block(r);
        }
        s
    }

    /// Total number of rounds, n − 1 + q.
    pub(crate) fn rounds(&self) -> u32 {
        self.blocks - 1 + self.q
    }

    fn phase_round(&self, round: u32) -> usize {
        ((round + self.shift) % self.q) as usize
    }

    /// The block number `host` receives in `round` before clamping; negative before the
    /// pipeline reaches it.
    fn raw_block(&self, host: u32, round: u32) -> i64 {
        // One unsigned division gives both the phase and the phase round.
        let abs = round + self.shift;
        let (phase, k) = (abs / self.q, abs % self.q);
        let entry = i64::from(self.table[host as usize * self.q as usize + k as usize]);
        entry + i64::from(self.q) * i64::from(phase) - i64::from(self.shift)
    }

    fn first_round_of_last_block(&self, host: u32) -> u32 {
        let last = i64::from(self.blocks) - 1;
        let q = i64::from(self.q);
        let shift = i64::from(self.shift);
        (0..self.q as usize)
            .map(|k| {
                let entry = i64::from(self.table[host as usize * self.q as usize + k]);
                // Smallest phase x with entry + q·x − shift ≥ last, for absolute round q·x + k.
                let need = last + shift - entry;
                let x = if need <= 0 { 0 } else { (need + q - 1) / q };
                let mut abs = q * x + k as i64;
                if abs < shift {
                    abs += q;
                }
                abs - shift
            })
            .min()
            .map_or(u32::MAX, |r| r as u32)
    }

    /// The host `host` receives from in `round`.
    pub(crate) fn sender(&self, host: u32, round: u32) -> u32 {
        // host < hosts and 1 <= s <= hosts: a conditional add replaces the modulo.
        let s = self.skips[self.phase_round(round)];
        if host >= s {
            host - s
        } else {
            host + (self.hosts - s)
        }
    }

    /// The host `host` sends to in `round`.
    pub(crate) fn receiver(&self, host: u32, round: u32) -> u32 {
        let s = self.skips[self.phase_round(round)];
        let r = u64::from(host) + u64::from(s);
        let p = u64::from(self.hosts);
        (if r >= p { r - p } else { r }) as u32
    }

    /// The block `host` receives in `round`, or `None` when it receives nothing new then.
    pub(crate) fn block(&self, host: u32, round: u32) -> Option<u32> {
        if host == 0 || round >= self.rounds() {
            return None;
        }
        let raw = self.raw_block(host, round);
        let last = i64::from(self.blocks) - 1;
        if raw < 0 || (raw >= last && round != self.last_round[host as usize]) {
            return None;
        }
        Some(raw.min(last) as u32)
    }

    /// The first round at or after `from` in which `host` receives a block.
    pub(crate) fn next_receive(&self, host: u32, from: u32) -> Option<u32> {
        if host == 0 {
            return None;
        }
        // The last block may arrive before earlier ones, so scan to the end of the schedule.
        (from..self.rounds()).find(|&t| self.block(host, t).is_some())
    }

    /// The first round at or after `from` in which `host` sends a block.
    pub(crate) fn next_send(&self, host: u32, from: u32) -> Option<u32> {
        (from..self.rounds()).find(|&t| self.block(self.receiver(host, t), t).is_some())
    }
}

/// The depth-first search that fills one host's receive table (Träff 2023, Section 3).
///
/// A host r receives its "base block" b along the canonical path from the source, the greedy
/// sum of decreasing skips that ends with s_b; in every other phase round it receives a block
/// of the previous phase. The search walks canonical skip sums in decreasing skip order and
/// gives each phase round k the first skip index e whose subtree reaches the sender r − s_k in
/// time, so that the q blocks of a phase are all different.
struct Search<'a> {
    skips: &'a [u32],
    q: usize,
    /// Doubly linked list of skip indices not yet assigned, in decreasing order; index q + 1
    /// is the sentinel.
    down: Vec<usize>,
    up: Vec<usize>,
    out: Vec<usize>,
    target: i64,
}

impl<'a> Search<'a> {
    fn new(skips: &'a [u32]) -> Self {
        let q = skips.len() - 1;
        Search {
            skips,
            q,
            down: vec![0; q + 2],
            up: vec![0; q + 2],
            out: vec![0; q],
            target: 0,
        }
    }

    fn skip(&self, i: usize) -> i64 {
        i64::from(self.skips[i])
    }

    fn unlink(&mut self, e: usize) {
        let (d, u) = (self.down[e], self.up[e]);
        self.up[d] = u;
        self.down[u] = d;
    }

    /// Host r's base block: the index of the last skip in the greedy decomposition of r.
    fn base_block(&self, r: u32) -> usize {
        let mut sum = 0u64;
        for i in (0..self.q).rev() {
            let next = sum + u64::from(self.skips[i]);
            if next == u64::from(r) {
                return i;
            }
            if next < u64::from(r) {
                sum = next;
            }
        }
        self.q
    }

    /// Host r's table: the block offset it receives in each phase round (base block b ≥ 0,
    /// or e − q < 0 for a block of the previous phase).
    fn receive_table(&mut self, r: u32) -> Vec<i8> {
        let q = self.q;
        let sentinel = q + 1;
        // List: sentinel → q → q−1 → … → 0 → sentinel.
        for e in 0..=q {
            self.down[e] = if e == 0 { sentinel } else { e - 1 };
            self.up[e] = if e == q { sentinel } else { e + 1 };
        }
        self.down[sentinel] = q;
        self.up[sentinel] = 0;
        let b = self.base_block(r);
        self.unlink(b);
        let p = self.skip(q);
        self.target = i64::from(r) + p;
        let filled = self.visit(0, 2 * p, q, 0);
        debug_assert_eq!(filled, q, "receive table of host {r} incomplete");
        self.out
            .iter()
            .map(|&e| if e == q { b as i8 } else { e as i8 - q as i8 })
            .collect()
    }

    /// Visits the canonical subtree below `node`, with children bounded by `bound`, trying
    /// skip indices from `e` down; assigns phase rounds from `k` on and returns the next
    /// unassigned phase round.
    fn visit(&mut self, node: i64, mut bound: i64, mut e: usize, mut k: usize) -> usize {
        let sentinel = self.q + 1;
        let r = self.target;
        while e != sentinel && k < self.q {
            let child = node + self.skip(e);
            if child <= r - self.skip(k) && child < bound {
                if child <= r - self.skip(k + 1) {
                    k = self.visit(child, bound, e, k);
                    if k >= self.q {
                        return k;
                    }
                }
                if node > r - self.skip(k + 1) {
                    return k;
                }
                bound = child;
                self.out[k] = e;
                k += 1;
                self.unlink(e);
            }
            e = self.down[e];
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the schedule round by round and checks that every sender holds what it sends,
    /// that nobody receives a block twice, and that everybody ends with every block.
    fn check(hosts: u32, blocks: u32) {
        let s = CirculantSchedule::new(hosts, blocks);
        let n = blocks as usize;
        let mut held = vec![vec![false; n]; hosts as usize];
        held[0] = vec![true; n];
        for t in 0..s.rounds() {
            let mut arrivals = Vec::new();
            for r in 1..hosts {
                if let Some(b) = s.block(r, t) {
                    let f = s.sender(r, t);
                    assert!(
                        held[f as usize][b as usize],
                        "p={hosts} n={blocks}: round {t}: {f} sends block {b} to {r} without it"
                    );
                    assert!(
                        !held[r as usize][b as usize],
                        "p={hosts} n={blocks}: round {t}: {r} receives block {b} twice"
                    );
                    assert_eq!(s.receiver(f, t), r);
                    arrivals.push((r, b));
                }
            }
            for (r, b) in arrivals {
                held[r as usize][b as usize] = true;
            }
        }
        for r in 0..hosts {
            assert!(
                held[r as usize].iter().all(|&h| h),
                "p={hosts} n={blocks}: host {r} misses blocks after {} rounds",
                s.rounds()
            );
        }
    }

    #[test]
    fn schedule_is_valid_and_complete_for_every_small_host_count() {
        for hosts in 1..=300 {
            for blocks in [1, 2, 3, 4, 5, 7, 8, 9, 13, 20] {
                check(hosts, blocks);
            }
        }
    }

    #[test]
    fn schedule_is_valid_for_large_host_counts() {
        for hosts in [513, 1000, 1001, 1024, 1025, 2047, 3000] {
            for blocks in [1, 2, 11, 25] {
                check(hosts, blocks);
            }
        }
    }

    #[test]
    fn skips_halve_from_the_host_count() {
        let s = CirculantSchedule::new(13, 4);
        assert_eq!(s.skips, vec![1, 2, 4, 7, 13]);
        assert_eq!(s.rounds(), 4 - 1 + 4);
    }
}
