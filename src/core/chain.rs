//! `chain`: a store-and-forward pipeline through all hosts, chunk by chunk.

use super::strategy::{Strategy, View};
use super::types::{ChunkRange, HostId};

/// Host i forwards chunk j to host i+1 as soon as it holds it, one chunk at a time per link.
/// With k equal chunks the last host is done after (1 + (C−1)/k)·T.
///
/// Receivers get chunks in order, so what a host holds is always a prefix of the file. A lost
/// host is cut out of the chain: its predecessor carries on with its successor, from the
/// first chunk the successor lacks.
pub struct Chain {
    /// Successor of each live host in the chain (`None` for the last).
    next: Vec<Option<HostId>>,
    /// Predecessor of each live host.
    prev: Vec<Option<HostId>>,
    /// True while the host is sending a chunk.
    sending: Vec<bool>,
    /// True while the host is receiving a chunk.
    receiving: Vec<bool>,
    /// Hosts whose outgoing link may be able to start a hop.
    ready: Vec<HostId>,
}

impl Chain {
    /// The chain source → 1 → 2 → … → C.
    pub fn new(receivers: u32) -> Self {
        let n = receivers as usize + 1;
        Chain {
            next: (0..n)
                .map(|i| (i + 1 < n).then(|| HostId(i as u32 + 1)))
                .collect(),
            prev: (0..n)
                .map(|i| (i > 0).then(|| HostId(i as u32 - 1)))
                .collect(),
            sending: vec![false; n],
            receiving: vec![false; n],
            ready: vec![HostId::SOURCE],
        }
    }
}

impl Strategy for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        while let Some(h) = self.ready.pop() {
            if view.is_failed(h) || self.sending[h.index()] {
                continue;
            }
            let Some(s) = self.next[h.index()] else {
                continue;
            };
            if self.receiving[s.index()] {
                continue;
            }
            let chunk = view.holdings.count(s);
            if chunk >= view.layout.count() {
                // The successor is complete (a resumed run): skip it for the next one.
                self.ready.push(s);
                continue;
            }
            if !view.holdings.has(h, chunk) {
                continue;
            }
            self.sending[h.index()] = true;
            self.receiving[s.index()] = true;
            return Some((h, s, ChunkRange::single(chunk)));
        }
        None
    }

    fn finished(&mut self, _view: &View<'_>, from: HostId, to: HostId, _c: ChunkRange, _ok: bool) {
        self.sending[from.index()] = false;
        self.receiving[to.index()] = false;
        self.ready.push(from);
        self.ready.push(to);
        // `from` may have been cut out meanwhile: then `to`'s new predecessor was waiting
        // for `to` to be free, and only this end tells it.
        if let Some(p) = self.prev[to.index()] {
            if p != from {
                self.ready.push(p);
            }
        }
    }

    fn host_lost(&mut self, _view: &View<'_>, host: HostId) {
        let i = host.index();
        let (p, n) = (self.prev[i].take(), self.next[i].take());
        if let Some(p) = p {
            self.next[p.index()] = n;
            self.ready.push(p);
        }
        if let Some(n) = n {
            self.prev[n.index()] = p;
        }
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        for i in 0..self.next.len() {
            let h = HostId(i as u32);
            let count = view.holdings.count(h);
            if (0..count).any(|c| !view.holdings.has(h, c)) {
                return Err(format!("{h} holds {count} chunks that are not a prefix"));
            }
            if let Some(n) = self.next[i] {
                if view.is_failed(n) {
                    return Err(format!("{h} forwards to failed host {n}"));
                }
            }
        }
        Ok(())
    }
}
