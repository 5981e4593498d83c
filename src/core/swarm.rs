//! `swarm`: a BitTorrent-like swarm, the model of Murder, Kraken and Dragonfly.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::strategy::{Strategy, View};
use super::types::{ChunkRange, HostId};

/// Tuning of the [`Swarm`] strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmParams {
    /// Neighbours every peer connects to at the start (default 6; Kraken and BitTorrent
    /// clients keep a handful to a few dozen). Connections are symmetric, so a peer may be
    /// picked by others too: it has between `neighbours` and `2 × neighbours` of them (fewer
    /// when the swarm is smaller).
    pub neighbours: u32,
    /// Concurrent uploads per peer, BitTorrent's unchoke slots (default 4).
    pub upload_slots: u32,
    /// Concurrent downloads per peer, one piece each (default 4).
    pub download_slots: u32,
}

impl Default for SwarmParams {
    fn default() -> Self {
        SwarmParams {
            neighbours: 6,
            upload_slots: 4,
            download_slots: 4,
        }
    }
}

/// A swarm of peers exchanging pieces (chunks) with their neighbours, the source being the
/// initial seed.
///
/// - At the start every peer is linked to one random earlier peer (so the swarm is
///   connected) and then to random peers until it has `neighbours` of them, none with more
///   than twice that.
/// - A peer with a free download slot picks, among the pieces it lacks that a neighbour with
///   a free upload slot holds, the rarest one among its neighbours; ties (and the choice of
///   uploader) are broken by the seeded generator, so the same seed gives the same run.
/// - A failed piece is asked for again. A lost peer is dropped from its neighbours, each of
///   which gets a random live peer instead. If nothing is in flight and nothing can start
///   while peers are incomplete (the swarm was cut apart), each stuck peer is linked to a
///   random complete peer, the source at worst, so the run always ends.
///
/// Work per event is proportional to the neighbours' count times the words of a bitset of
/// pieces, never to the number of peers.
pub struct Swarm {
    params: SwarmParams,
    rng: ChaCha8Rng,
    nbrs: Vec<Vec<u32>>,
    uploads: Vec<u32>,
    downloads: Vec<u32>,
    /// Built at the first call, when the piece count is known.
    state: Option<Pieces>,
    /// Peers that may be able to start a download.
    ready: VecDeque<u32>,
    in_ready: Vec<bool>,
    in_flight: u64,
    /// Live peers that are not complete yet.
    remaining: u32,
    /// Peers that completed (or started complete), in order; may hold lost peers.
    complete: Vec<u32>,
    lost: Vec<bool>,
}

/// Per-peer piece bookkeeping.
struct Pieces {
    chunks: usize,
    words: usize,
    /// `avail[x * chunks + c]`: neighbours of x holding piece c.
    avail: Vec<u32>,
    /// Bitsets of pieces each peer is downloading.
    pending: Vec<u64>,
}

impl Swarm {
    /// A swarm of the source and `receivers` peers, wired by a generator seeded with `seed`.
    pub fn new(receivers: u32, seed: u64, params: &SwarmParams) -> Self {
        let n = receivers as usize + 1;
        let params = SwarmParams {
            neighbours: params.neighbours.max(1),
            upload_slots: params.upload_slots.max(1),
            download_slots: params.download_slots.max(1),
        };
        let mut s = Swarm {
            rng: ChaCha8Rng::seed_from_u64(seed),
            nbrs: vec![Vec::new(); n],
            uploads: vec![0; n],
            downloads: vec![0; n],
            state: None,
            ready: VecDeque::new(),
            in_ready: vec![false; n],
            in_flight: 0,
            remaining: 0,
            complete: Vec::new(),
            lost: vec![false; n],
            params,
        };
        s.wire();
        s
    }

    fn cap(&self) -> usize {
        2 * self.params.neighbours as usize
    }

    fn linked(&self, a: u32, b: u32) -> bool {
        self.nbrs[a as usize].contains(&b)
    }

    /// The initial random graph: a random recursive tree for connectivity, then random
    /// extra links up to the target degree.
    fn wire(&mut self) {
        let n = self.nbrs.len() as u32;
        let want = (self.params.neighbours as usize).min(n as usize - 1);
        let cap = self.cap();
        for i in 1..n {
            let mut j = self.rng.gen_range(0..i);
            for _ in 0..8 {
                if self.nbrs[j as usize].len() < cap {
                    break;
                }
                j = self.rng.gen_range(0..i);
            }
            self.nbrs[i as usize].push(j);
            self.nbrs[j as usize].push(i);
        }
        for i in 0..n {
            let mut tries = 4 * want + 8;
            while self.nbrs[i as usize].len() < want && tries > 0 {
                tries -= 1;
                let j = self.rng.gen_range(0..n);
                if j != i && self.nbrs[j as usize].len() < cap && !self.linked(i, j) {
                    self.nbrs[i as usize].push(j);
                    self.nbrs[j as usize].push(i);
                }
            }
        }
    }

    fn ensure_init(&mut self, view: &View<'_>) {
        if self.state.is_some() {
            return;
        }
        let n = self.nbrs.len();
        let chunks = view.layout.count() as usize;
        let words = chunks.div_ceil(64);
        let mut p = Pieces {
            chunks,
            words,
            avail: vec![0; n * chunks],
            pending: vec![0; n * words],
        };
        for x in 0..n {
            for &y in &self.nbrs[x] {
                add_avail(&mut p, view, x, y as usize, 1);
            }
        }
        self.state = Some(p);
        for h in 0..n as u32 {
            let host = HostId(h);
            if view.is_failed(host) {
                self.lost[h as usize] = true;
            } else if view.holdings.is_complete(host) {
                self.complete.push(h);
            } else {
                self.remaining += 1;
                self.queue(h);
            }
        }
    }

    fn queue(&mut self, h: u32) {
        if !self.in_ready[h as usize] && !self.lost[h as usize] {
            self.in_ready[h as usize] = true;
            self.ready.push_back(h);
        }
    }

    fn queue_neighbours(&mut self, h: u32) {
        for i in 0..self.nbrs[h as usize].len() {
            let x = self.nbrs[h as usize][i];
            self.queue(x);
        }
    }

    /// The rarest piece `d` can fetch now and who from, ties broken at random.
    fn pick(&mut self, view: &View<'_>, d: u32) -> Option<(u32, u32)> {
        let p = self.state.as_ref().expect("initialised");
        let mine = view.holdings.words(HostId(d));
        let pend = &p.pending[d as usize * p.words..(d as usize + 1) * p.words];
        let avail = &p.avail[d as usize * p.chunks..(d as usize + 1) * p.chunks];
        let mut best: Option<(u32, u32)> = None;
        let mut best_avail = u32::MAX;
        let mut ties = 0u32;
        for &u in &self.nbrs[d as usize] {
            if self.lost[u as usize] || self.uploads[u as usize] >= self.params.upload_slots {
                continue;
            }
            let theirs = view.holdings.words(HostId(u));
            for w in 0..p.words {
                let mut bits = theirs[w] & !mine[w] & !pend[w];
                while bits != 0 {
                    let c = w as u32 * 64 + bits.trailing_zeros();
                    bits &= bits - 1;
                    let a = avail[c as usize];
                    if a < best_avail {
                        best_avail = a;
                        best = Some((u, c));
                        ties = 1;
                    } else if a == best_avail {
                        ties += 1;
                        if self.rng.gen_range(0..ties) == 0 {
                            best = Some((u, c));
                        }
                    }
                }
            }
        }
        best
    }

    /// Links `a` and `b` and counts each one's pieces in the other's availability.
    fn link(&mut self, view: &View<'_>, a: u32, b: u32) {
        self.nbrs[a as usize].push(b);
        self.nbrs[b as usize].push(a);
        let p = self.state.as_mut().expect("initialised");
        add_avail(p, view, a as usize, b as usize, 1);
        add_avail(p, view, b as usize, a as usize, 1);
        self.queue(a);
        self.queue(b);
    }

    /// A random live complete peer, the source when a few draws find none.
    fn random_holder(&mut self, view: &View<'_>) -> u32 {
        for _ in 0..8 {
            if self.complete.is_empty() {
                break;
            }
            let h = self.complete[self.rng.gen_range(0..self.complete.len())];
            if !view.is_failed(HostId(h)) {
                return h;
            }
        }
        0
    }

    /// Gives `x` a new random live neighbour in place of a lost one.
    fn replace_neighbour(&mut self, view: &View<'_>, x: u32) {
        let n = self.nbrs.len() as u32;
        let cap = self.cap();
        for _ in 0..8 {
            let j = self.rng.gen_range(0..n);
            if j != x
                && !self.lost[j as usize]
                && !view.is_failed(HostId(j))
                && self.nbrs[j as usize].len() < cap
                && !self.linked(x, j)
            {
                self.link(view, x, j);
                return;
            }
        }
        if self.nbrs[x as usize].is_empty() {
            let h = self.random_holder(view);
            if h != x && !self.linked(x, h) {
                self.link(view, x, h);
            }
        }
    }

    /// Nothing in flight, nothing startable, peers incomplete: the swarm is cut apart. Every
    /// stuck peer is linked to a random complete peer.
    fn break_stall(&mut self, view: &View<'_>) {
        for d in 1..self.nbrs.len() as u32 {
            let host = HostId(d);
            if self.lost[d as usize] || view.holdings.is_complete(host) {
                continue;
            }
            if self.pick(view, d).is_none() {
                let h = self.random_holder(view);
                if !self.linked(d, h) {
                    self.link(view, d, h);
                } else if h != 0 && !self.linked(d, 0) {
                    self.link(view, d, 0);
                }
            }
            self.queue(d);
        }
    }
}

/// Adds `delta` to x's availability count of every piece y holds.
fn add_avail(p: &mut Pieces, view: &View<'_>, x: usize, y: usize, delta: i32) {
    let words = view.holdings.words(HostId(y as u32));
    let row = &mut p.avail[x * p.chunks..(x + 1) * p.chunks];
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let c = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            row[c] = row[c].wrapping_add_signed(delta);
        }
    }
}

impl Strategy for Swarm {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        self.ensure_init(view);
        let mut stall_broken = false;
        loop {
            let Some(d) = self.ready.pop_front() else {
                if self.in_flight == 0 && self.remaining > 0 && !stall_broken {
                    stall_broken = true;
                    self.break_stall(view);
                    continue;
                }
                return None;
            };
            self.in_ready[d as usize] = false;
            let host = HostId(d);
            if self.lost[d as usize]
                || view.holdings.is_complete(host)
                || self.downloads[d as usize] >= self.params.download_slots
            {
                continue;
            }
            let Some((u, c)) = self.pick(view, d) else {
                continue;
            };
            self.uploads[u as usize] += 1;
            self.downloads[d as usize] += 1;
            self.in_flight += 1;
            let p = self.state.as_mut().expect("initialised");
            p.pending[d as usize * p.words + c as usize / 64] |= 1u64 << (c % 64);
            // It may have more free download slots.
            self.queue(d);
            return Some((HostId(u), host, ChunkRange::single(c)));
        }
    }

    fn finished(&mut self, view: &View<'_>, from: HostId, to: HostId, c: ChunkRange, ok: bool) {
        self.ensure_init(view);
        let (u, d) = (from.0, to.0);
        self.uploads[u as usize] -= 1;
        self.downloads[d as usize] -= 1;
        self.in_flight -= 1;
        let p = self.state.as_mut().expect("initialised");
        let chunk = c.start;
        p.pending[d as usize * p.words + chunk as usize / 64] &= !(1u64 << (chunk % 64));
        if ok {
            for &x in &self.nbrs[d as usize] {
                p.avail[x as usize * p.chunks + chunk as usize] += 1;
            }
            if view.holdings.is_complete(to) {
                self.remaining -= 1;
                self.complete.push(d);
            }
            self.queue_neighbours(d);
        }
        self.queue(d);
        self.queue_neighbours(u);
    }

    fn host_lost(&mut self, view: &View<'_>, host: HostId) {
        self.ensure_init(view);
        let h = host.0;
        if self.lost[h as usize] {
            return;
        }
        self.lost[h as usize] = true;
        if !view.holdings.is_complete(host) {
            self.remaining -= 1;
        }
        let old = std::mem::take(&mut self.nbrs[h as usize]);
        for &x in &old {
            self.nbrs[x as usize].retain(|&y| y != h);
            let p = self.state.as_mut().expect("initialised");
            add_avail(p, view, x as usize, h as usize, -1);
        }
        for &x in &old {
            if !self.lost[x as usize] {
                self.replace_neighbour(view, x);
                self.queue(x);
            }
        }
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        let Some(p) = &self.state else {
            return Ok(());
        };
        let n = self.nbrs.len();
        let mut remaining = 0;
        for x in 0..n {
            let hx = HostId(x as u32);
            if self.lost[x] != view.is_failed(hx) {
                return Err(format!(
                    "{hx}: lost {} but failed {}",
                    self.lost[x],
                    view.is_failed(hx)
                ));
            }
            if !self.lost[x] && !view.holdings.is_complete(hx) {
                remaining += 1;
            }
            if self.uploads[x] > self.params.upload_slots {
                return Err(format!("{hx} uploads {} pieces at once", self.uploads[x]));
            }
            if self.downloads[x] > self.params.download_slots {
                return Err(format!(
                    "{hx} downloads {} pieces at once",
                    self.downloads[x]
                ));
            }
            let pend = &p.pending[x * p.words..(x + 1) * p.words];
            let pending: u32 = pend.iter().map(|w| w.count_ones()).sum();
            if !self.lost[x] && pending != self.downloads[x] {
                return Err(format!(
                    "{hx} has {pending} pending pieces but {} downloads",
                    self.downloads[x]
                ));
            }
            if self.lost[x] {
                // A lost peer is never asked again; its counts are left as they were.
                continue;
            }
            let mut avail = vec![0u32; p.chunks];
            for &y in &self.nbrs[x] {
                let hy = HostId(y);
                if y as usize == x || self.lost[y as usize] || !self.linked(y, x as u32) {
                    return Err(format!("{hx} has a bad neighbour {hy}"));
                }
                for (c, a) in avail.iter_mut().enumerate() {
                    *a += u32::from(view.holdings.has(hy, c as u32));
                }
            }
            if avail[..] != p.avail[x * p.chunks..(x + 1) * p.chunks] {
                return Err(format!("{hx}: piece availability out of date"));
            }
        }
        if remaining != self.remaining {
            return Err(format!(
                "{} peers counted incomplete, {remaining} are",
                self.remaining
            ));
        }
        Ok(())
    }
}
