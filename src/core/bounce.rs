//! `bounce`: the blog's whole-file doubling, driven by its three-set scheduler.

use std::collections::{HashSet, VecDeque};

use super::strategy::{Strategy, View};
use super::three_sets::{check_sets, Set};
use super::types::{ChunkRange, HostId};

/// The seed's scheduler. set0 = holders, set1 = waiting, set2 = busy. It repeatedly pairs the
/// first free holder with the first waiting host; on success both return to the holders, on
/// failure the sender returns to the holders and the receiver to the waiting hosts. Every
/// holder sends the whole file, so the number of holders doubles each round: ⌈log2(C+1)⌉·T.
///
/// On a retry it prefers a holder that has not already failed that receiver, so a broken
/// sender-to-receiver path is routed around when another holder is free. A receiver that
/// joins late enters set1 (or set0, if it already holds the file) when it joins.
///
/// Why it is kept beside `bounce-fast`, which makes exactly these choices when it has no
/// capacities: this is the seed's algorithm transcribed as the post states it (two FIFO
/// queues and three sets), the reference that `bounce-fast` is checked against step for
/// step (`tests/core_bounce_fast.rs`) and the strategy the figure and `bounce-run` name
/// `bounce`. Folding it away would leave the priority-queue version checked against
/// nothing.
pub struct Bounce {
    set: Vec<Set>,
    holders: VecDeque<HostId>,
    waiting: VecDeque<HostId>,
    /// (sender, receiver) pairs whose hop failed.
    failed_pairs: HashSet<(HostId, HostId)>,
}

impl Bounce {
    /// The initial state: set0 = {source}, set1 = every receiver, set2 = {}.
    pub fn new(receivers: u32) -> Self {
        let mut set = vec![Set::Waiting; receivers as usize + 1];
        set[0] = Set::Holder;
        Bounce {
            set,
            holders: VecDeque::from([HostId::SOURCE]),
            waiting: (1..=receivers).map(HostId).collect(),
            failed_pairs: HashSet::new(),
        }
    }

    fn pop_live(&mut self, queue_is_holders: bool) -> Option<HostId> {
        let (queue, want) = if queue_is_holders {
            (&mut self.holders, Set::Holder)
        } else {
            (&mut self.waiting, Set::Waiting)
        };
        while let Some(h) = queue.pop_front() {
            if self.set[h.index()] == want {
                return Some(h);
            }
        }
        None
    }

    /// Picks the first waiting host and the first free holder, preferring a holder that has
    /// not failed that receiver before.
    fn pair(&mut self) -> Option<(HostId, HostId)> {
        let to = self.pop_live(false)?;
        if self.failed_pairs.is_empty() {
            let Some(from) = self.pop_live(true) else {
                self.waiting.push_front(to);
                return None;
            };
            return Some((from, to));
        }
        self.holders.retain(|h| self.set[h.index()] == Set::Holder);
        let pos = self
            .holders
            .iter()
            .position(|&h| !self.failed_pairs.contains(&(h, to)))
            // Every free holder failed it before: retry from the first one anyway.
            .or((!self.holders.is_empty()).then_some(0));
        match pos.and_then(|p| self.holders.remove(p)) {
            Some(from) => Some((from, to)),
            None => {
                self.waiting.push_front(to);
                None
            }
        }
    }
}

impl Strategy for Bounce {
    fn name(&self) -> &'static str {
        "bounce"
    }

    fn start(&mut self, view: &View<'_>) {
        // Receivers of a resumed run that already hold the file start in set0; those still
        // joining enter a set when they join.
        let joining: Vec<HostId> = self
            .waiting
            .iter()
            .copied()
            .filter(|&h| view.holdings.is_complete(h) || view.is_joining(h))
            .collect();
        self.waiting
            .retain(|&h| !view.holdings.is_complete(h) && !view.is_joining(h));
        for h in joining {
            if view.is_joining(h) {
                self.set[h.index()] = Set::Joining;
            } else {
                self.set[h.index()] = Set::Holder;
                self.holders.push_back(h);
            }
        }
    }

    fn joins_late(&self) -> bool {
        true
    }

    fn host_joined(&mut self, view: &View<'_>, host: HostId) {
        if view.holdings.is_complete(host) {
            self.set[host.index()] = Set::Holder;
            self.holders.push_back(host);
        } else {
            self.set[host.index()] = Set::Waiting;
            self.waiting.push_back(host);
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
            self.set[from.index()] = Set::Holder;
            self.holders.push_back(from);
        }
        if self.set[to.index()] == Set::Busy && !view.is_failed(to) {
            if ok {
                self.set[to.index()] = Set::Holder;
                self.holders.push_back(to);
            } else {
                self.failed_pairs.insert((from, to));
                self.set[to.index()] = Set::Waiting;
                self.waiting.push_back(to);
            }
        }
    }

    fn host_lost(&mut self, _view: &View<'_>, host: HostId) {
        // Queued entries of a lost host are dropped lazily when they reach the front.
        self.set[host.index()] = Set::Gone;
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        let holders = self.holders.iter().map(|&h| (h, Set::Holder, "holders"));
        let waiting = self.waiting.iter().map(|&h| (h, Set::Waiting, "waiting"));
        check_sets(&self.set, holders.chain(waiting), view)
    }
}
