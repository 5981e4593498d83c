//! `chain`: a store-and-forward pipeline through all hosts, chunk by chunk.

use super::strategy::{Strategy, View};
use super::types::{ChunkRange, HostId};

/// Host i forwards chunk j to host i+1 as soon as it holds it. With k equal chunks the last
/// host is done after (1 + (C−1)/k)·T.
///
/// Up to `window` chunks may be in flight on one link at a time. Drivers run the transfers of
/// one link first in, first out (see the driver contract), so a window does not change when
/// bytes move; it lets a driver queue the next chunk's request while the previous chunk's
/// bytes are still on the wire, hiding each chunk's round trip. A window of 1 is strict
/// store-and-forward with one chunk per link.
///
/// A lost host is cut out of the chain: its predecessor carries on with its successor, from
/// the first chunk the successor lacks. A failed chunk is sent again from the same point.
pub struct Chain {
    /// Successor of each live host in the chain (`None` for the last).
    next: Vec<Option<HostId>>,
    /// Predecessor of each live host.
    prev: Vec<Option<HostId>>,
    /// Chunks in flight to each host.
    inbound: Vec<u32>,
    /// Every chunk below `cursor[h]` is held by h or in flight to it.
    cursor: Vec<u32>,
    /// Most chunks in flight on one link.
    window: u32,
    /// Hosts whose outgoing link may be able to start a hop.
    ready: Vec<HostId>,
}

impl Chain {
    /// The chain source → 1 → 2 → … → C, with up to `window` chunks in flight per link.
    pub fn new(receivers: u32, window: u32) -> Self {
        let n = receivers as usize + 1;
        Chain {
            next: (0..n)
                .map(|i| (i + 1 < n).then(|| HostId(i as u32 + 1)))
                .collect(),
            prev: (0..n)
                .map(|i| (i > 0).then(|| HostId(i as u32 - 1)))
                .collect(),
            inbound: vec![0; n],
            cursor: vec![0; n],
            window: window.max(1),
            ready: vec![HostId::SOURCE],
        }
    }
}

impl Chain {
    /// Moves `s`'s cursor past the chunks it already holds and returns it.
    fn skip_held(&mut self, view: &View<'_>, s: HostId) -> u32 {
        let k = view.layout.count();
        let mut c = self.cursor[s.index()];
        while c < k && view.holdings.has(s, c) {
            c += 1;
        }
        self.cursor[s.index()] = c;
        c
    }
}

impl Strategy for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        let k = view.layout.count();
        while let Some(h) = self.ready.pop() {
            if view.is_failed(h) {
                continue;
            }
            let Some(s) = self.next[h.index()] else {
                continue;
            };
            let c = self.skip_held(view, s);
            if c >= k {
                // The successor has everything (a resumed run): it forwards in our place.
                self.ready.push(s);
                continue;
            }
            if self.inbound[s.index()] >= self.window || !view.holdings.has(h, c) {
                // Woken again when a chunk to `s` ends or `h` receives one.
                continue;
            }
            self.inbound[s.index()] += 1;
            self.cursor[s.index()] = c + 1;
            if self.inbound[s.index()] < self.window {
                // The window may allow another chunk on this link.
                self.ready.push(h);
            } else if self.skip_held(view, s) >= k {
                // With the window full, popping `h` again would only find this: the
                // successor has everything now and forwards in our place. Done here, it
                // saves a push and a pop per chunk (the simulator's window is 1).
                self.ready.push(s);
            }
            return Some((h, s, ChunkRange::single(c)));
        }
        None
    }

    fn finished(&mut self, _view: &View<'_>, _from: HostId, to: HostId, c: ChunkRange, ok: bool) {
        self.inbound[to.index()] -= 1;
        if !ok {
            self.cursor[to.index()] = self.cursor[to.index()].min(c.start);
        }
        // `to` may forward what it got, and its predecessor may send more. That is `from`,
        // unless `from` was cut out meanwhile: then only this end tells the new one.
        self.ready.push(to);
        if let Some(p) = self.prev[to.index()] {
            self.ready.push(p);
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

    fn planned_links(&self, view: &View<'_>) -> Vec<(HostId, HostId)> {
        // Every link of the chain carries the whole file, and a link's setup would otherwise
        // wait for the first chunk to reach its sender: C setups one after another.
        (0..self.next.len())
            .filter_map(|i| Some((HostId(i as u32), self.next[i]?)))
            .filter(|&(h, s)| !view.is_failed(h) && !view.holdings.is_complete(s))
            .collect()
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        for i in 0..self.next.len() {
            let h = HostId(i as u32);
            if self.inbound[i] > self.window {
                return Err(format!("{h} has {} chunks in flight", self.inbound[i]));
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
