//! `bounce-fast`: the seed's three-set doubling, pairing the fastest hosts first.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::strategy::{Strategy, View};
use super::three_sets::{check_sets, Set};
use super::types::{ChunkRange, HostId};

/// A queued host. The heap pops the highest `key`, then the highest `tie`, then the lowest
/// `seq`: with equal capacities that is first in, first out, exactly the seed's queues.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: f64,
    tie: f64,
    seq: u64,
    host: HostId,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then(self.tie.total_cmp(&other.tie))
            .then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

/// The seed's three-set scheduler with priority queues instead of FIFO queues: it pairs the
/// free holder with the highest upload capacity with the waiting host with the highest
/// download capacity (ties: the higher upload, since the receiver becomes a holder next).
///
/// Why: a hop runs at about min(upload of the sender, download of the receiver). Serving the
/// fastest receivers first makes them holders early, and the fastest holders are the ones
/// handed the next receiver as soon as they are free, so fast hosts carry more of the tree
/// and slow hosts end up as leaves. Each pairing costs O(log n) (two binary heaps), which
/// keeps a million hosts cheap.
///
/// Without capacities every key is equal, the heaps fall back to arrival order and the
/// strategy makes exactly the choices of `bounce`, failures included: on failure the sender
/// returns to the holders and the receiver to the waiting hosts, and a retry prefers the
/// best holder that has not already failed that receiver.
pub struct BounceFast {
    set: Vec<Set>,
    upload: Option<Vec<f64>>,
    download: Option<Vec<f64>>,
    holders: BinaryHeap<Entry>,
    waiting: BinaryHeap<Entry>,
    /// Arrival counter, for first-in-first-out among equal capacities.
    seq: u64,
    /// Receiver -> the distinct senders whose hop to it failed.
    failed_senders: HashMap<HostId, Vec<HostId>>,
}

impl BounceFast {
    /// The initial state: set0 = {source}, set1 = every receiver, set2 = {}. `upload` and
    /// `download`, when known, hold one capacity per host, indexed by [`HostId`].
    pub fn new(receivers: u32, upload: Option<&[f64]>, download: Option<&[f64]>) -> Self {
        let mut set = vec![Set::Waiting; receivers as usize + 1];
        set[0] = Set::Holder;
        let mut s = BounceFast {
            set,
            upload: upload.map(<[f64]>::to_vec),
            download: download.map(<[f64]>::to_vec),
            holders: BinaryHeap::new(),
            waiting: BinaryHeap::with_capacity(receivers as usize),
            seq: 0,
            failed_senders: HashMap::new(),
        };
        s.push(HostId::SOURCE, Set::Holder);
        for h in (1..=receivers).map(HostId) {
            s.push(h, Set::Waiting);
        }
        s
    }

    fn capacity(table: &Option<Vec<f64>>, h: HostId) -> f64 {
        table.as_ref().map_or(0.0, |t| t[h.index()])
    }

    /// Queues `h` in the set `to`, behind every host of equal capacity already there.
    fn push(&mut self, h: HostId, to: Set) {
        self.set[h.index()] = to;
        self.seq += 1;
        let up = Self::capacity(&self.upload, h);
        let entry = match to {
            Set::Holder => Entry {
                key: up,
                tie: 0.0,
                seq: self.seq,
                host: h,
            },
            Set::Waiting => Entry {
                key: Self::capacity(&self.download, h),
                tie: up,
                seq: self.seq,
                host: h,
            },
            Set::Busy | Set::Gone | Set::Joining => {
                unreachable!("only holders and waiting hosts are queued")
            }
        };
        match to {
            Set::Holder => self.holders.push(entry),
            _ => self.waiting.push(entry),
        }
    }

    /// Pops the best entry of a heap whose host is still in `want`; entries of lost hosts
    /// are dropped here, lazily.
    fn pop_live(heap: &mut BinaryHeap<Entry>, set: &[Set], want: Set) -> Option<Entry> {
        while let Some(e) = heap.pop() {
            if set[e.host.index()] == want {
                return Some(e);
            }
        }
        None
    }

    /// Picks the best waiting host and the best free holder that has not failed it before
    /// (or the best holder if all of them have).
    fn pair(&mut self) -> Option<(HostId, HostId)> {
        let to = Self::pop_live(&mut self.waiting, &self.set, Set::Waiting)?;
        let failed = self
            .failed_senders
            .get(&to.host)
            .map_or(&[][..], Vec::as_slice);
        // At most `failed.len()` holders are ruled out, so the first acceptable one is among
        // the best `failed.len() + 1`.
        let mut popped = Vec::new();
        let mut chosen = None;
        while popped.len() <= failed.len() {
            let Some(e) = Self::pop_live(&mut self.holders, &self.set, Set::Holder) else {
                break;
            };
            if !failed.contains(&e.host) {
                chosen = Some(e);
                break;
            }
            popped.push(e);
        }
        if chosen.is_none() && !popped.is_empty() {
            chosen = Some(popped.remove(0));
        }
        self.holders.extend(popped);
        match chosen {
            Some(from) => Some((from.host, to.host)),
            None => {
                self.waiting.push(to);
                None
            }
        }
    }
}

impl Strategy for BounceFast {
    fn name(&self) -> &'static str {
        "bounce-fast"
    }

    fn start(&mut self, view: &View<'_>) {
        // Receivers of a resumed run that already hold the file start among the holders.
        let complete = |h: HostId| view.holdings.is_complete(h);
        self.waiting.retain(|e| !complete(e.host));
        for i in 1..self.set.len() {
            let h = HostId(i as u32);
            if complete(h) {
                self.push(h, Set::Holder);
            }
        }
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        let (from, to) = self.pair()?;
        self.set[from.index()] = Set::Busy;
        self.set[to.index()] = Set::Busy;
        let whole = ChunkRange {
            start: 0,
            end: view.layout.count(),
        };
        Some((from, to, whole))
    }

    fn finished(&mut self, view: &View<'_>, from: HostId, to: HostId, _c: ChunkRange, ok: bool) {
        if self.set[from.index()] == Set::Busy && !view.is_failed(from) {
            self.push(from, Set::Holder);
        }
        if self.set[to.index()] == Set::Busy && !view.is_failed(to) {
            if ok {
                self.push(to, Set::Holder);
            } else {
                let senders = self.failed_senders.entry(to).or_default();
                if !senders.contains(&from) {
                    senders.push(from);
                }
                self.push(to, Set::Waiting);
            }
        }
    }

    fn host_lost(&mut self, _view: &View<'_>, host: HostId) {
        // Queued entries of a lost host are dropped lazily when they reach the top.
        self.set[host.index()] = Set::Gone;
        self.failed_senders.remove(&host);
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        let holders = self
            .holders
            .iter()
            .map(|e| (e.host, Set::Holder, "holders"));
        let waiting = self
            .waiting
            .iter()
            .map(|e| (e.host, Set::Waiting, "waiting"));
        check_sets(&self.set, holders.chain(waiting), view)
    }
}
