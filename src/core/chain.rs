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
/// the first chunk the successor lacks. A failed chunk is sent again from the same point,
/// once every other chunk in flight to that host has ended too.
///
/// Each host therefore receives its chunks in file order: every chunk planned to a host
/// follows, on the same link, all the chunks below it that the host does not hold yet. A
/// receiver's copy then only ever grows from its end, which is what lets a runner relay it
/// onwards by following the file as it grows (`bounce-run`'s chain does).
///
/// Receivers still joining when the run starts are left out, and each joins at the tail when
/// it is ready: the chain's order is the order the hosts became ready in, so a host that
/// connects late delays nobody before it, and the hosts after it only by as much as it
/// joined late.
pub struct Chain {
    /// Each host's place in the chain, by host: one entry per step rather than one table per
    /// field, since every step reads the successor's whole entry.
    places: Vec<Place>,
    /// Most chunks in flight on one link.
    window: u32,
    /// Hosts whose outgoing link may be able to start a hop.
    ready: Vec<HostId>,
}

/// A host's links in the chain and what is on its way to it.
#[derive(Clone, Copy, Debug)]
struct Place {
    /// Its successor while it is live (`None` for the last).
    next: Option<HostId>,
    /// Its predecessor while it is live.
    prev: Option<HostId>,
    /// Chunks in flight to it.
    inbound: u32,
    /// Every chunk below it is held by the host or in flight to it.
    cursor: u32,
    /// A chunk to it failed: nothing more is sent to it until every chunk still in flight
    /// to it has ended, so that it is then fed from its first missing chunk on.
    draining: bool,
}

impl Chain {
    /// The chain source → 1 → 2 → … → C, with up to `window` chunks in flight per link.
    pub fn new(receivers: u32, window: u32) -> Self {
        let n = receivers as usize + 1;
        Chain {
            places: (0..n)
                .map(|i| Place {
                    next: (i + 1 < n).then(|| HostId(i as u32 + 1)),
                    prev: (i > 0).then(|| HostId(i as u32 - 1)),
                    inbound: 0,
                    cursor: 0,
                    draining: false,
                })
                .collect(),
            window: window.max(1),
            ready: vec![HostId::SOURCE],
        }
    }

    /// Moves `s`'s cursor past the chunks it already holds and returns it.
    fn skip_held(&mut self, view: &View<'_>, s: HostId) -> u32 {
        let k = view.layout.count();
        let place = &mut self.places[s.index()];
        let mut c = place.cursor;
        while c < k && view.holdings.has(s, c) {
            c += 1;
        }
        place.cursor = c;
        c
    }
}

impl Strategy for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn start(&mut self, view: &View<'_>) {
        if !view.joining.iter().any(|&j| j) {
            return;
        }
        // Link only the ready hosts, in host order; the others join at the tail.
        let mut last = HostId::SOURCE;
        for p in &mut self.places {
            p.next = None;
            p.prev = None;
        }
        for i in 1..self.places.len() {
            let h = HostId(i as u32);
            if !view.is_joining(h) {
                self.places[last.index()].next = Some(h);
                self.places[i].prev = Some(last);
                last = h;
            }
        }
    }

    fn joins_late(&self) -> bool {
        true
    }

    fn host_joined(&mut self, _view: &View<'_>, host: HostId) {
        let mut tail = HostId::SOURCE;
        while let Some(n) = self.places[tail.index()].next {
            tail = n;
        }
        self.places[tail.index()].next = Some(host);
        self.places[host.index()].prev = Some(tail);
        self.ready.push(tail);
    }

    // Inlined into the scheduler's `poll_transfer`: the simulator calls it twice per chunk,
    // and left to itself the compiler keeps it out of line (7% more instructions per chunk).
    #[inline(always)]
    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        let k = view.layout.count();
        while let Some(h) = self.ready.pop() {
            if view.is_failed(h) {
                continue;
            }
            let Some(s) = self.places[h.index()].next else {
                continue;
            };
            let c = self.skip_held(view, s);
            if c >= k {
                // The successor has everything (a resumed run): it forwards in our place.
                self.ready.push(s);
                continue;
            }
            let to = &mut self.places[s.index()];
            if to.inbound >= self.window || to.draining || !view.holdings.has(h, c) {
                // Woken again when a chunk to `s` ends or `h` receives one.
                continue;
            }
            to.inbound += 1;
            to.cursor = c + 1;
            if to.inbound < self.window {
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
        let place = &mut self.places[to.index()];
        place.inbound -= 1;
        if !ok {
            place.cursor = place.cursor.min(c.start);
            place.draining = true;
        }
        if place.inbound == 0 {
            place.draining = false;
        }
        let prev = place.prev;
        // `to` may forward what it got, and its predecessor may send more. That is `from`,
        // unless `from` was cut out meanwhile: then only this end tells the new one.
        self.ready.push(to);
        if let Some(p) = prev {
            self.ready.push(p);
        }
    }

    fn host_lost(&mut self, _view: &View<'_>, host: HostId) {
        let i = host.index();
        let (p, n) = (self.places[i].prev.take(), self.places[i].next.take());
        if let Some(p) = p {
            self.places[p.index()].next = n;
            self.ready.push(p);
        }
        if let Some(n) = n {
            let next = &mut self.places[n.index()];
            next.prev = p;
            // Its chunks still in flight from the lost host will fail: the new sender waits
            // for them, so that it does not write past the gap they leave.
            next.draining = next.inbound > 0;
        }
    }

    fn planned_links(&self, view: &View<'_>) -> Vec<(HostId, HostId)> {
        // Every link of the chain carries the whole file, and a link's setup would otherwise
        // wait for the first chunk to reach its sender: C setups one after another.
        self.places
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((HostId(i as u32), p.next?)))
            .filter(|&(h, s)| !view.is_failed(h) && !view.holdings.is_complete(s))
            .collect()
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        for (i, place) in self.places.iter().enumerate() {
            let h = HostId(i as u32);
            if place.inbound > self.window {
                return Err(format!("{h} has {} chunks in flight", place.inbound));
            }
            if place.draining && place.inbound == 0 {
                return Err(format!("{h} is draining with nothing in flight"));
            }
            if let Some(n) = place.next {
                if view.is_failed(n) || view.is_joining(n) {
                    return Err(format!("{h} forwards to failed or joining host {n}"));
                }
                if self.places[n.index()].prev != Some(h) {
                    return Err(format!("{h} forwards to {n}, whose predecessor is not {h}"));
                }
            }
        }
        Ok(())
    }
}
