//! The flow-level network model: every host has an upload and a download link, and
//! concurrent flows share each link max-min fairly.
//!
//! Changes are batched: [`Network::start`] and [`Network::remove`] only record which links
//! changed, and [`Network::settle`] then recomputes the fair shares once for the whole batch
//! (the engine settles once per distinct virtual time, so the C flows of a star that end
//! together cost one recomputation, not C).
//!
//! A settle does not recompute the whole connected component of flows sharing links. It
//! starts from the flows on the changed links (the region), computes their max-min shares by
//! progressive filling with every other flow held at its current share, and then checks the
//! max-min condition (every flow has a saturated link on which no flow gets more) on the
//! flows next to the region. A flow that fails it joins the region and the region is solved
//! again. Max-min shares are unique, so the answer is the same as a full recomputation (to a
//! relative 1e-12); a swarm, whose component spans every peer, then costs a few flows per
//! event instead of all of them. When the region has no outside neighbour (a star, a lone
//! flow) it is the whole component and no check is needed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A flow in the network, valid until it is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId(u32);

impl FlowId {
    /// A dense index: the network reuses the slots of removed flows, so per-flow tables can
    /// be plain vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id whose [`FlowId::index`] is `i`.
    pub fn from_index(i: usize) -> Self {
        FlowId(i as u32)
    }
}

const MAX_LINKS: usize = 4;

/// Relative slack of the max-min check: sums of a few hundred shares round at ~1e-14.
const EPS: f64 = 1e-12;

/// Up to this many links, progressive filling scans them for the lowest level; above, it
/// keeps them in a heap.
const SCAN_LINKS: usize = 16;

/// A link: its capacity, its flows and whether they changed.
#[derive(Clone, Debug)]
struct Link {
    /// Bytes per second.
    capacity: f64,
    /// The flows crossing it, in no particular order.
    flows: Vec<u32>,
    /// True while the link is in `Network::dirty`: a chain hop removes and starts a flow on
    /// the same two links, and settling scans each link's flows only once.
    dirty_now: bool,
    /// The stamp of the last settle that found the link changed.
    dirty_stamp: u32,
}

#[derive(Clone, Debug)]
struct Flow {
    links: [u32; MAX_LINKS],
    nlinks: u8,
    /// Multiplies the fair share: the seeded jitter.
    factor: f64,
    /// Bytes the flow carries in all.
    bytes: f64,
    /// Bytes still to move as of `updated`.
    remaining: f64,
    /// Current max-min share in bytes per second, before `factor`.
    share: f64,
    /// Current rate in bytes per second: `share * factor`.
    rate: f64,
    /// Virtual time `remaining` was last brought up to date.
    updated: f64,
    /// Bumped whenever the rate changes, so stale completion events can be recognised.
    version: u32,
    live: bool,
}

impl Flow {
    fn links(&self) -> &[u32] {
        &self.links[..self.nlinks as usize]
    }
}

/// Links and the flows crossing them.
#[derive(Clone, Debug, Default)]
pub struct Network {
    /// What every step touches per link, kept in one entry per link.
    links: Vec<Link>,
    flows: Vec<Flow>,
    free: Vec<u32>,
    /// Links whose set of flows changed since the last settle, each once.
    dirty: Vec<u32>,
    changed: Vec<FlowId>,
    // Scratch space for the max-min computation, kept to avoid allocating per settle. Marks
    // are stamps: a flow is in the region when `in_region[f] == stamp`, and so on.
    stamp: u32,
    link_mark: Vec<u32>,
    link_seen: Vec<u32>,
    in_region: Vec<u32>,
    frozen: Vec<u32>,
    checked: Vec<u32>,
    new_share: Vec<f64>,
    /// The link each region flow froze on in the last fill (`u32::MAX`: alone on its links).
    freeze_link: Vec<u32>,
    link_left: Vec<f64>,
    link_unfrozen: Vec<u32>,
    link_load: Vec<f64>,
    link_max: Vec<f64>,
    region: Vec<u32>,
    touched: Vec<u32>,
    suspects: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Network {
    /// A network of `hosts` hosts where host `h` uploads at `up[h]` and downloads at
    /// `down[h]` bytes per second. Host `h` owns links `2h` (up) and `2h+1` (down).
    pub fn new(up: &[f64], down: &[f64]) -> Self {
        assert_eq!(up.len(), down.len(), "one upload and one download per host");
        let mut net = Network::default();
        // Sized once: grown by doubling, the link tables of a million hosts would hold their
        // old and new buffers at once at the last doubling.
        let n = 2 * up.len();
        net.links.reserve_exact(n);
        for v in [
            &mut net.link_mark,
            &mut net.link_seen,
            &mut net.link_unfrozen,
        ] {
            v.reserve_exact(n);
        }
        for v in [&mut net.link_left, &mut net.link_load, &mut net.link_max] {
            v.reserve_exact(n);
        }
        for (&u, &d) in up.iter().zip(down) {
            net.add_link(u);
            net.add_link(d);
        }
        net
    }

    /// Adds a link of `capacity` bytes per second (a rack uplink, say) and returns its index.
    pub fn add_link(&mut self, capacity: f64) -> u32 {
        self.links.push(Link {
            capacity,
            flows: Vec::new(),
            dirty_now: false,
            dirty_stamp: 0,
        });
        self.link_mark.push(0);
        self.link_seen.push(0);
        self.link_left.push(0.0);
        self.link_unfrozen.push(0);
        self.link_load.push(0.0);
        self.link_max.push(0.0);
        (self.links.len() - 1) as u32
    }

    /// The upload link of host `h`.
    pub fn up_link(h: u32) -> u32 {
        2 * h
    }

    /// The download link of host `h`.
    pub fn down_link(h: u32) -> u32 {
        2 * h + 1
    }

    /// Starts a flow of `bytes` over `links` at virtual time `now`, its fair share scaled by
    /// `factor`. Its rate is zero until the next [`Network::settle`].
    // Inlined into the engine's one call site: a call per chunk transfer costs more than the
    // body's own work for a chain hop.
    #[inline(always)]
    pub fn start(&mut self, now: f64, links: &[u32], bytes: f64, factor: f64) -> FlowId {
        assert!(!links.is_empty() && links.len() <= MAX_LINKS);
        let id = match self.free.pop() {
            Some(i) => i,
            None => {
                self.flows.push(Flow {
                    links: [0; MAX_LINKS],
                    nlinks: 0,
                    factor: 0.0,
                    bytes: 0.0,
                    remaining: 0.0,
                    share: 0.0,
                    rate: 0.0,
                    updated: 0.0,
                    version: u32::MAX,
                    live: false,
                });
                self.in_region.push(0);
                self.frozen.push(0);
                self.checked.push(0);
                self.new_share.push(0.0);
                self.freeze_link.push(u32::MAX);
                (self.flows.len() - 1) as u32
            }
        };
        // Field by field, in place: building a `Flow` and copying it in reads back bytes
        // just written in smaller pieces, a store-forwarding stall on every start.
        let flow = &mut self.flows[id as usize];
        for (k, &l) in links.iter().enumerate() {
            flow.links[k] = l;
        }
        flow.nlinks = links.len() as u8;
        flow.factor = factor;
        flow.bytes = bytes;
        flow.remaining = bytes;
        flow.share = 0.0;
        flow.rate = 0.0;
        flow.updated = now;
        flow.version = flow.version.wrapping_add(1);
        flow.live = true;
        for &l in links {
            let link = &mut self.links[l as usize];
            link.flows.push(id);
            if !std::mem::replace(&mut link.dirty_now, true) {
                self.dirty.push(l);
            }
        }
        FlowId(id)
    }

    /// Removes a finished or cancelled flow; the others' shares change at the next
    /// [`Network::settle`].
    // Inlined into the engine's one call site: a call per chunk transfer costs more than the
    // body's own work for a chain hop.
    #[inline(always)]
    pub fn remove(&mut self, id: FlowId) {
        let f = &mut self.flows[id.0 as usize];
        debug_assert!(f.live, "flow removed twice");
        f.live = false;
        let (links, n) = (f.links, f.nlinks as usize);
        for &l in &links[..n] {
            let link = &mut self.links[l as usize];
            if let Some(p) = link.flows.iter().position(|&x| x == id.0) {
                link.flows.swap_remove(p);
            }
            if !std::mem::replace(&mut link.dirty_now, true) {
                self.dirty.push(l);
            }
        }
        self.free.push(id.0);
    }

    /// Flows whose rate changed in the last [`Network::settle`].
    pub fn changed(&self) -> &[FlowId] {
        &self.changed
    }

    /// The flow's current version: bumped whenever its completion time moves.
    pub fn version(&self, id: FlowId) -> u32 {
        self.flows[id.0 as usize].version
    }

    /// When the flow will finish at its current rate.
    pub fn finish_time(&self, id: FlowId) -> f64 {
        let f = &self.flows[id.0 as usize];
        if f.remaining <= 0.0 {
            f.updated
        } else if f.rate > 0.0 {
            f.updated + f.remaining / f.rate
        } else {
            f64::INFINITY
        }
    }

    /// The flow's current rate in bytes per second.
    pub fn rate(&self, id: FlowId) -> f64 {
        self.flows[id.0 as usize].rate
    }

    /// Number of flows in progress.
    pub fn live_flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            for v in [
                &mut self.link_mark,
                &mut self.link_seen,
                &mut self.in_region,
                &mut self.frozen,
                &mut self.checked,
            ] {
                v.fill(0);
            }
            for link in &mut self.links {
                link.dirty_stamp = 0;
            }
            self.stamp = 1;
        }
        self.stamp
    }

    /// Brings every rate up to date with the flows started and removed since the last
    /// settle, at virtual time `now`; [`Network::changed`] then lists the flows whose rate
    /// changed (new flows included).
    pub fn settle(&mut self, now: f64) {
        self.changed.clear();
        if self.dirty.is_empty() {
            return;
        }
        let rs = self.next_stamp();
        self.region.clear();
        for i in 0..self.dirty.len() {
            let l = self.dirty[i] as usize;
            let link = &mut self.links[l];
            link.dirty_now = false;
            link.dirty_stamp = rs;
            for k in 0..self.links[l].flows.len() {
                let f = self.links[l].flows[k];
                if self.in_region[f as usize] != rs {
                    self.in_region[f as usize] = rs;
                    // A flow alone on all its links (a chain hop, a bounce pair) shares
                    // nothing: it gets its narrowest link at once, outside any region.
                    match self.lone_share(f) {
                        Some(share) => self.set_rate(now, f, share),
                        None => self.region.push(f),
                    }
                }
            }
        }
        self.dirty.clear();
        if self.region.is_empty() {
            return;
        }
        while !self.fill(rs) && self.grow(rs) {}
        for i in 0..self.region.len() {
            let f = self.region[i];
            self.set_rate(now, f, self.new_share[f as usize]);
        }
    }

    /// The capacity of flow `f`'s narrowest link when it is alone on all its links, else
    /// `None`.
    fn lone_share(&self, f: u32) -> Option<f64> {
        let mut share = f64::INFINITY;
        for &m in self.flows[f as usize].links() {
            let link = &self.links[m as usize];
            if link.flows.len() != 1 {
                return None;
            }
            share = share.min(link.capacity);
        }
        Some(share)
    }

    /// Max-min shares of the region's flows by progressive filling, every other flow held at
    /// its share: the most constrained link fixes the share of its unfrozen flows, which
    /// then release their claim on their other links. Returns true when no flow outside the
    /// region shares a link with it, so that the shares are exact.
    fn fill(&mut self, rs: u32) -> bool {
        let ts = self.next_stamp();
        let fs = self.next_stamp();
        self.touched.clear();
        for &f in &self.region {
            for &l in self.flows[f as usize].links() {
                if self.link_mark[l as usize] != ts {
                    self.link_mark[l as usize] = ts;
                    self.touched.push(l);
                }
            }
        }
        let mut closed = true;
        for &l in &self.touched {
            let mut left = self.links[l as usize].capacity;
            let mut n = 0;
            for &g in &self.links[l as usize].flows {
                if self.in_region[g as usize] == rs {
                    n += 1;
                } else {
                    left -= self.flows[g as usize].share;
                    closed = false;
                }
            }
            self.link_left[l as usize] = left;
            self.link_unfrozen[l as usize] = n;
        }
        // A flow alone on all its links (a chain hop, a bounce pair) gets its narrowest one.
        let mut unfrozen = self.region.len();
        for &f in &self.region {
            if let Some(share) = self.lone_share(f) {
                let links = self.flows[f as usize].links();
                self.new_share[f as usize] = share;
                self.frozen[f as usize] = fs;
                // Alone on its links: nobody there can get more.
                self.freeze_link[f as usize] = u32::MAX;
                for &l in links {
                    self.link_unfrozen[l as usize] = 0;
                }
                unfrozen -= 1;
            }
        }
        if unfrozen == 0 {
            return closed;
        }
        if self.touched.len() <= SCAN_LINKS {
            // Few links: a scan for the lowest level beats a heap.
            loop {
                let mut best = (u64::MAX, u32::MAX);
                for &l in &self.touched {
                    if self.link_unfrozen[l as usize] > 0 {
                        let key = self.level(l);
                        if key < best.0 {
                            best = (key, l);
                        }
                    }
                }
                if best.1 == u32::MAX {
                    break;
                }
                self.freeze(best.1, f64::from_bits(best.0), rs, fs, false);
            }
            return closed;
        }
        self.heap.clear();
        for &l in &self.touched {
            if self.link_unfrozen[l as usize] > 0 {
                let key = self.level(l);
                self.heap.push(Reverse((key, l)));
            }
        }
        while let Some(Reverse((key, l))) = self.heap.pop() {
            if self.link_unfrozen[l as usize] == 0 || self.level(l) != key {
                continue; // a newer entry for this link is in the heap
            }
            self.freeze(l, f64::from_bits(key), rs, fs, true);
        }
        closed
    }

    /// Freezes the region's unfrozen flows on link `l` at share `best`, releasing their claim
    /// on their other links (whose new levels go on the heap when `heap` is set).
    fn freeze(&mut self, l: u32, best: f64, rs: u32, fs: u32, heap: bool) {
        for k in 0..self.links[l as usize].flows.len() {
            let f = self.links[l as usize].flows[k] as usize;
            if self.in_region[f] != rs || self.frozen[f] == fs {
                continue;
            }
            self.frozen[f] = fs;
            self.new_share[f] = best;
            self.freeze_link[f] = l;
            let flow = &self.flows[f];
            let (links, n) = (flow.links, flow.nlinks as usize);
            for &m in &links[..n] {
                self.link_left[m as usize] -= best;
                self.link_unfrozen[m as usize] -= 1;
                if heap && m != l && self.link_unfrozen[m as usize] > 0 {
                    let key = self.level(m);
                    self.heap.push(Reverse((key, m)));
                }
            }
        }
    }

    /// The share link `l` can still give each of its unfrozen flows, as ordered bits.
    fn level(&self, l: u32) -> u64 {
        let left = self.link_left[l as usize];
        let share = if left > 0.0 {
            left / f64::from(self.link_unfrozen[l as usize])
        } else {
            0.0
        };
        share.to_bits()
    }

    /// The share flow `f` would get: the region's new one, or its current one.
    fn share_of(&self, f: u32, rs: u32) -> f64 {
        if self.in_region[f as usize] == rs {
            self.new_share[f as usize]
        } else {
            self.flows[f as usize].share
        }
    }

    /// Load and largest share on link `l` under the region's new shares, cached per check.
    fn link_stats(&mut self, l: u32, rs: u32, ss: u32) -> (f64, f64) {
        let i = l as usize;
        if self.link_seen[i] != ss {
            let (mut load, mut max) = (0.0, 0.0f64);
            for &g in &self.links[i].flows {
                let s = self.share_of(g, rs);
                load += s;
                max = max.max(s);
            }
            self.link_seen[i] = ss;
            self.link_load[i] = load;
            self.link_max[i] = max;
        }
        (self.link_load[i], self.link_max[i])
    }

    /// True when flow `f` has a bottleneck under the new shares: a saturated link on which no
    /// flow gets more than it does.
    fn has_bottleneck(&mut self, f: u32, rs: u32, ss: u32) -> bool {
        let s = self.share_of(f, rs);
        let flow = &self.flows[f as usize];
        let (links, n) = (flow.links, flow.nlinks as usize);
        links[..n].iter().any(|&m| {
            let (load, max) = self.link_stats(m, rs, ss);
            load >= self.links[m as usize].capacity * (1.0 - EPS) && s >= max * (1.0 - EPS)
        })
    }

    /// Checks the max-min condition around the region: on every outside flow that shares a
    /// changed link with it, and on every region flow against the outside flows of the link
    /// it froze on. Outside flows that fail it, and the outside neighbours of region flows
    /// that fail it, join the region. Returns true when the region grew and must be solved
    /// again.
    fn grow(&mut self, rs: u32) -> bool {
        let ss = self.next_stamp();
        let cs = self.next_stamp();
        self.suspects.clear();
        let mut stuck = false;
        for i in 0..self.touched.len() {
            let l = self.touched[i];
            // A link whose flows and shares are all as before cannot have broken the
            // condition for the outside flows on it (it held before this settle), nor be
            // overloaded.
            let changed = self.links[l as usize].dirty_stamp == rs
                || self.links[l as usize].flows.iter().any(|&g| {
                    self.in_region[g as usize] == rs
                        && self.new_share[g as usize] != self.flows[g as usize].share
                });
            if !changed {
                continue;
            }
            let (load, _) = self.link_stats(l, rs, ss);
            let overloaded = load > self.links[l as usize].capacity * (1.0 + EPS);
            for k in 0..self.links[l as usize].flows.len() {
                let g = self.links[l as usize].flows[k];
                if self.in_region[g as usize] == rs {
                    continue;
                }
                if overloaded {
                    self.suspects.push(g);
                }
                if self.checked[g as usize] == cs {
                    continue;
                }
                self.checked[g as usize] = cs;
                if !self.has_bottleneck(g, rs, ss) {
                    self.suspects.push(g);
                }
            }
        }
        // A region flow froze where its link saturated, at a share no other region flow
        // there exceeds: it has its bottleneck unless an outside flow there gets more.
        for i in 0..self.region.len() {
            let f = self.region[i];
            let l = self.freeze_link[f as usize];
            if l == u32::MAX {
                continue;
            }
            let s = self.new_share[f as usize] * (1.0 + EPS);
            let ok = self.links[l as usize]
                .flows
                .iter()
                .all(|&h| self.in_region[h as usize] == rs || self.flows[h as usize].share <= s);
            if ok {
                continue;
            }
            let before = self.suspects.len();
            let flow = &self.flows[f as usize];
            for &m in flow.links() {
                for &h in &self.links[m as usize].flows {
                    if self.in_region[h as usize] != rs {
                        self.suspects.push(h);
                    }
                }
            }
            stuck |= self.suspects.len() == before;
        }
        let before = self.region.len();
        for i in 0..self.suspects.len() {
            let g = self.suspects[i];
            if self.in_region[g as usize] != rs {
                self.in_region[g as usize] = rs;
                self.region.push(g);
            }
        }
        if self.region.len() > before {
            return true;
        }
        if !stuck {
            return false;
        }
        // A region flow fails the check with no outside neighbour to blame (rounding at the
        // edge of EPS): solve the whole component, which is exact by construction.
        self.take_component(rs);
        true
    }

    /// Grows the region to its whole connected component, breadth-first over shared links.
    fn take_component(&mut self, rs: u32) {
        let mut i = 0;
        while i < self.region.len() {
            let f = self.region[i] as usize;
            i += 1;
            let flow = &self.flows[f];
            let (links, n) = (flow.links, flow.nlinks as usize);
            for &m in &links[..n] {
                for k in 0..self.links[m as usize].flows.len() {
                    let g = self.links[m as usize].flows[k];
                    if self.in_region[g as usize] != rs {
                        self.in_region[g as usize] = rs;
                        self.region.push(g);
                    }
                }
            }
        }
    }

    /// Gives flow `f` the fair share `share` (before jitter) from `now` on.
    fn set_rate(&mut self, now: f64, f: u32, share: f64) {
        let flow = &mut self.flows[f as usize];
        flow.share = share;
        let rate = share * flow.factor;
        if rate != flow.rate {
            flow.remaining -= flow.rate * (now - flow.updated);
            // Rounding may leave a hair of a byte either way; a flow within a billionth of
            // its bytes of the end is finished.
            if flow.remaining < flow.bytes * 1e-9 {
                flow.remaining = 0.0;
            }
            flow.updated = now;
            flow.rate = rate;
            flow.version = flow.version.wrapping_add(1);
            self.changed.push(FlowId(f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn flows_from_one_host_share_its_upload_equally() {
        let mut net = Network::new(&[100.0; 4], &[100.0; 4]);
        let up = Network::up_link(0);
        let a = net.start(0.0, &[up, Network::down_link(1)], 100.0, 1.0);
        net.settle(0.0);
        assert_eq!(net.rate(a), 100.0);
        let b = net.start(0.0, &[up, Network::down_link(2)], 100.0, 1.0);
        let c = net.start(0.0, &[up, Network::down_link(3)], 100.0, 1.0);
        net.settle(0.0);
        for f in [a, b, c] {
            assert!((net.rate(f) - 100.0 / 3.0).abs() < 1e-12);
        }
        net.remove(c);
        net.settle(0.5);
        assert_eq!(net.rate(a), 50.0);
        assert_eq!(net.rate(b), 50.0);
    }

    #[test]
    fn a_slow_download_frees_upload_for_the_others() {
        // Host 1 downloads at 10: the source's 100 goes 10 to it and 45 to each other.
        let mut net = Network::new(&[100.0, 100.0, 100.0, 100.0], &[100.0, 10.0, 100.0, 100.0]);
        let a = net.start(0.0, &[0, Network::down_link(1)], 1.0, 1.0);
        let b = net.start(0.0, &[0, Network::down_link(2)], 1.0, 1.0);
        let c = net.start(0.0, &[0, Network::down_link(3)], 1.0, 1.0);
        net.settle(0.0);
        assert_eq!(net.rate(a), 10.0);
        assert_eq!(net.rate(b), 45.0);
        assert_eq!(net.rate(c), 45.0);
    }

    #[test]
    fn disjoint_flows_do_not_disturb_each_other() {
        let mut net = Network::new(&[100.0; 4], &[100.0; 4]);
        let a = net.start(
            0.0,
            &[Network::up_link(0), Network::down_link(1)],
            100.0,
            1.0,
        );
        net.settle(0.0);
        let b = net.start(
            0.0,
            &[Network::up_link(2), Network::down_link(3)],
            100.0,
            0.5,
        );
        net.settle(0.0);
        assert_eq!(net.changed(), &[b]);
        assert_eq!(net.rate(a), 100.0);
        assert_eq!(net.rate(b), 50.0);
    }

    #[test]
    fn progress_is_kept_when_a_rate_changes() {
        let mut net = Network::new(&[100.0; 3], &[100.0; 3]);
        let a = net.start(0.0, &[0, Network::down_link(1)], 100.0, 1.0);
        let b = net.start(0.0, &[0, Network::down_link(2)], 100.0, 1.0);
        net.settle(0.0);
        // At t=1 each has moved 50 bytes; alone, `a` needs 0.5 s more.
        net.remove(b);
        net.settle(1.0);
        assert_eq!(net.finish_time(a), 1.5);
    }

    /// Max-min shares of `flows` (lists of links) by plain progressive filling over all of
    /// them: the reference the incremental settle must agree with.
    fn reference(capacity: &[f64], flows: &[Vec<u32>]) -> Vec<f64> {
        let mut left = capacity.to_vec();
        let mut share = vec![f64::NAN; flows.len()];
        loop {
            let mut best = (f64::INFINITY, usize::MAX);
            for (l, &c) in left.iter().enumerate() {
                let n = flows
                    .iter()
                    .zip(&share)
                    .filter(|(f, s)| s.is_nan() && f.contains(&(l as u32)))
                    .count();
                if n > 0 && c.max(0.0) / (n as f64) < best.0 {
                    best = (c.max(0.0) / (n as f64), l);
                }
            }
            if best.1 == usize::MAX {
                return share;
            }
            for (f, s) in flows.iter().zip(share.iter_mut()) {
                if s.is_nan() && f.contains(&(best.1 as u32)) {
                    *s = best.0;
                    for &m in f {
                        left[m as usize] -= best.0;
                    }
                }
            }
        }
    }

    /// Random swarms of flows over hosts of unequal capacities, started and removed in
    /// random batches: after every settle each live flow has its max-min share.
    #[test]
    fn settling_only_the_affected_region_gives_the_max_min_shares() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for round in 0..200 {
            let hosts = rng.gen_range(2..12u32);
            let up: Vec<f64> = (0..hosts)
                .map(|_| rng.gen_range(1..5) as f64 * 10.0)
                .collect();
            let down: Vec<f64> = (0..hosts)
                .map(|_| rng.gen_range(1..5) as f64 * 10.0)
                .collect();
            let mut net = Network::new(&up, &down);
            let rack_link = net.add_link(25.0);
            let capacity: Vec<f64> = (0..hosts)
                .flat_map(|h| [up[h as usize], down[h as usize]])
                .chain([25.0])
                .collect();
            let mut live: Vec<(FlowId, Vec<u32>)> = Vec::new();
            for step in 0..60 {
                for _ in 0..rng.gen_range(0..4) {
                    if !live.is_empty() && rng.gen_bool(0.45) {
                        let (id, _) = live.swap_remove(rng.gen_range(0..live.len()));
                        net.remove(id);
                    } else {
                        let a = rng.gen_range(0..hosts);
                        let b = (a + rng.gen_range(1..hosts)) % hosts;
                        let mut links = vec![Network::up_link(a), Network::down_link(b)];
                        if rng.gen_bool(0.2) {
                            links.push(rack_link);
                        }
                        let id = net.start(f64::from(step), &links, 1e9, 1.0);
                        live.push((id, links));
                    }
                }
                net.settle(f64::from(step));
                let flows: Vec<Vec<u32>> = live.iter().map(|(_, l)| l.clone()).collect();
                let want = reference(&capacity, &flows);
                for ((id, _), w) in live.iter().zip(want) {
                    let got = net.rate(*id);
                    assert!(
                        (got - w).abs() <= 1e-9 * w.max(1.0),
                        "round {round} step {step}: flow {id:?} got {got}, want {w}"
                    );
                }
            }
        }
    }
}
