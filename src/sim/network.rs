//! The flow-level network model: every host has an upload and a download link, and
//! concurrent flows share each link max-min fairly.
//!
//! Rates are recomputed only for the flows that share a link, directly or through other
//! flows, with the flow that started or ended (its connected component), so a chain of
//! independent hops costs O(1) per event while a star still gets its fair shares.

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
    /// Current rate in bytes per second.
    rate: f64,
    /// Virtual time `remaining` was last brought up to date.
    updated: f64,
    /// Bumped whenever the rate changes, so stale completion events can be recognised.
    version: u32,
    live: bool,
}

/// Links and the flows crossing them.
#[derive(Clone, Debug, Default)]
pub struct Network {
    capacity: Vec<f64>,
    link_flows: Vec<Vec<u32>>,
    flows: Vec<Flow>,
    free: Vec<u32>,
    // Scratch space for the max-min computation, kept to avoid allocating per event.
    stamp: u32,
    link_stamp: Vec<u32>,
    flow_stamp: Vec<u32>,
    comp_links: Vec<u32>,
    comp_flows: Vec<u32>,
    link_left: Vec<f64>,
    link_unfrozen: Vec<u32>,
    changed: Vec<FlowId>,
}

impl Network {
    /// A network of `hosts` hosts where host `h` uploads at `up[h]` and downloads at
    /// `down[h]` bytes per second. Host `h` owns links `2h` (up) and `2h+1` (down).
    pub fn new(up: &[f64], down: &[f64]) -> Self {
        assert_eq!(up.len(), down.len(), "one upload and one download per host");
        let capacity: Vec<f64> = up.iter().zip(down).flat_map(|(&u, &d)| [u, d]).collect();
        let n = capacity.len();
        Network {
            capacity,
            link_flows: vec![Vec::new(); n],
            link_stamp: vec![0; n],
            link_left: vec![0.0; n],
            link_unfrozen: vec![0; n],
            ..Network::default()
        }
    }

    /// Adds a link of `capacity` bytes per second (a rack uplink, say) and returns its index.
    pub fn add_link(&mut self, capacity: f64) -> u32 {
        self.capacity.push(capacity);
        self.link_flows.push(Vec::new());
        self.link_stamp.push(0);
        self.link_left.push(0.0);
        self.link_unfrozen.push(0);
        (self.capacity.len() - 1) as u32
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
    /// `factor`. Returns its id; [`Network::changed`] then lists every flow whose rate changed,
    /// this one included.
    pub fn start(&mut self, now: f64, links: &[u32], bytes: f64, factor: f64) -> FlowId {
        assert!(!links.is_empty() && links.len() <= MAX_LINKS);
        let mut arr = [0u32; MAX_LINKS];
        arr[..links.len()].copy_from_slice(links);
        let flow = Flow {
            links: arr,
            nlinks: links.len() as u8,
            factor,
            bytes,
            remaining: bytes,
            rate: 0.0,
            updated: now,
            version: 0,
            live: true,
        };
        let id = match self.free.pop() {
            Some(i) => {
                let v = self.flows[i as usize].version;
                self.flows[i as usize] = Flow {
                    version: v.wrapping_add(1),
                    ..flow
                };
                i
            }
            None => {
                self.flows.push(flow);
                self.flow_stamp.push(0);
                (self.flows.len() - 1) as u32
            }
        };
        for &l in links {
            self.link_flows[l as usize].push(id);
        }
        self.changed.clear();
        self.rebalance(now, links);
        FlowId(id)
    }

    /// Removes a finished or cancelled flow at `now`; [`Network::changed`] then lists the
    /// flows whose rate changed.
    pub fn remove(&mut self, now: f64, id: FlowId) {
        let f = &mut self.flows[id.0 as usize];
        debug_assert!(f.live, "flow removed twice");
        f.live = false;
        let (links, n) = (f.links, f.nlinks as usize);
        for &l in &links[..n] {
            let v = &mut self.link_flows[l as usize];
            if let Some(p) = v.iter().position(|&x| x == id.0) {
                v.swap_remove(p);
            }
        }
        self.free.push(id.0);
        self.changed.clear();
        self.rebalance(now, &links[..n]);
    }

    /// Flows whose rate changed in the last [`Network::start`] or [`Network::remove`].
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

    /// Recomputes max-min fair rates for the component of flows reachable from `seeds`.
    fn rebalance(&mut self, now: f64, seeds: &[u32]) {
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        self.comp_links.clear();
        self.comp_flows.clear();
        for &l in seeds {
            if self.link_stamp[l as usize] != stamp {
                self.link_stamp[l as usize] = stamp;
                self.comp_links.push(l);
            }
        }
        // Breadth-first over links and the flows that cross them.
        let mut i = 0;
        while i < self.comp_links.len() {
            let l = self.comp_links[i] as usize;
            i += 1;
            for &f in &self.link_flows[l] {
                if self.flow_stamp[f as usize] == stamp {
                    continue;
                }
                self.flow_stamp[f as usize] = stamp;
                self.comp_flows.push(f);
                let flow = &self.flows[f as usize];
                for &l2 in &flow.links[..flow.nlinks as usize] {
                    if self.link_stamp[l2 as usize] != stamp {
                        self.link_stamp[l2 as usize] = stamp;
                        self.comp_links.push(l2);
                    }
                }
            }
        }
        if let [f] = self.comp_flows[..] {
            // A lone flow, as in a chain: it gets its narrowest link.
            let flow = &self.flows[f as usize];
            let share = flow.links[..flow.nlinks as usize]
                .iter()
                .map(|&l| self.capacity[l as usize])
                .fold(f64::INFINITY, f64::min);
            self.set_rate(now, f, share);
            return;
        }
        // Progressive filling: the most constrained link fixes the share of all its flows,
        // which are then frozen and release their claim on their other links.
        for &l in &self.comp_links {
            self.link_left[l as usize] = self.capacity[l as usize];
            self.link_unfrozen[l as usize] = self.link_flows[l as usize].len() as u32;
        }
        let mut unfrozen = self.comp_flows.len();
        // A flow is frozen once its stamp is `stamp + 1`; the next rebalance bumps past it.
        let frozen = stamp.wrapping_add(1);
        while unfrozen > 0 {
            let mut best = f64::INFINITY;
            let mut best_link = u32::MAX;
            for &l in &self.comp_links {
                let n = self.link_unfrozen[l as usize];
                if n > 0 {
                    let share = self.link_left[l as usize].max(0.0) / f64::from(n);
                    if share < best {
                        best = share;
                        best_link = l;
                    }
                }
            }
            if best_link == u32::MAX {
                break;
            }
            for k in 0..self.link_flows[best_link as usize].len() {
                let f = self.link_flows[best_link as usize][k];
                if self.flow_stamp[f as usize] == frozen {
                    continue;
                }
                self.flow_stamp[f as usize] = frozen;
                unfrozen -= 1;
                let flow = &self.flows[f as usize];
                for &l2 in &flow.links[..flow.nlinks as usize] {
                    self.link_left[l2 as usize] -= best;
                    self.link_unfrozen[l2 as usize] -= 1;
                }
                self.set_rate(now, f, best);
            }
        }
        self.stamp = frozen;
    }

    /// Gives flow `f` the fair share `share` (before jitter) from `now` on.
    fn set_rate(&mut self, now: f64, f: u32, share: f64) {
        let flow = &mut self.flows[f as usize];
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

    #[test]
    fn flows_from_one_host_share_its_upload_equally() {
        let mut net = Network::new(&[100.0; 4], &[100.0; 4]);
        let a = net.start(
            0.0,
            &[Network::up_link(0), Network::down_link(1)],
            100.0,
            1.0,
        );
        assert_eq!(net.rate(a), 100.0);
        let b = net.start(
            0.0,
            &[Network::up_link(0), Network::down_link(2)],
            100.0,
            1.0,
        );
        let c = net.start(
            0.0,
            &[Network::up_link(0), Network::down_link(3)],
            100.0,
            1.0,
        );
        for f in [a, b, c] {
            assert!((net.rate(f) - 100.0 / 3.0).abs() < 1e-12);
        }
        net.remove(0.5, c);
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
        let b = net.start(
            0.0,
            &[Network::up_link(2), Network::down_link(3)],
            100.0,
            0.5,
        );
        assert_eq!(net.changed(), &[b]);
        assert_eq!(net.rate(a), 100.0);
        assert_eq!(net.rate(b), 50.0);
    }

    #[test]
    fn progress_is_kept_when_a_rate_changes() {
        let mut net = Network::new(&[100.0; 3], &[100.0; 3]);
        let a = net.start(0.0, &[0, Network::down_link(1)], 100.0, 1.0);
        let b = net.start(0.0, &[0, Network::down_link(2)], 100.0, 1.0);
        // At t=1 each has moved 50 bytes; alone, `a` needs 0.5 s more.
        net.remove(1.0, b);
        assert_eq!(net.finish_time(a), 1.5);
    }
}
