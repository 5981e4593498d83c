//! `rack`: whole-file doubling that crosses each rack's uplink once, then spreads inside.

use std::collections::{HashMap, VecDeque};

use super::strategy::{Strategy, View};
use super::three_sets::{check_host, Set};
use super::types::{ChunkRange, HostId};

/// One rack's share of the three sets.
#[derive(Clone, Debug, Default)]
struct RackState {
    /// Free holders, first in first out; entries of lost hosts are dropped lazily.
    holders: VecDeque<HostId>,
    /// Waiting hosts, first in first out; entries of lost hosts are dropped lazily.
    waiting: VecDeque<HostId>,
    /// Hosts in `Set::Holder`.
    free_holders: u32,
    /// Hosts in `Set::Waiting`.
    waiting_count: u32,
    /// Hosts that hold the whole file and are not lost, busy or not.
    live_holders: u32,
    /// Cross-rack copies in flight into this rack (at most one).
    inbound: u32,
    /// Cross-rack copies in flight out of this rack (at most one).
    outbound: u32,
    /// Receivers in the rack when the run started, to seed big racks first.
    size: u32,
    /// Queued in `Rack::targets` / `Rack::senders` / `Rack::local`.
    in_targets: bool,
    in_senders: bool,
    in_local: bool,
}

impl RackState {
    /// Nobody in the rack holds the file, none is on its way in, and someone waits for it.
    fn needs_seed(&self) -> bool {
        self.live_holders == 0 && self.inbound == 0 && self.waiting_count > 0
    }

    /// The rack may send one copy out now. A lone holder serves its own rack first, so a
    /// freshly seeded rack starts its local doubling at once; from two holders on, one of
    /// them keeps the uplink busy seeding other racks.
    fn can_send(&self) -> bool {
        self.outbound == 0
            && self.free_holders > 0
            && (self.waiting_count == 0 || self.live_holders >= 2)
    }

    /// A free holder and a waiting host of this rack can be paired.
    fn can_pair(&self) -> bool {
        self.free_holders > 0 && self.waiting_count > 0
    }
}

/// Rack-aware whole-file doubling.
///
/// **Rule.** Each rack that does not hold the file receives exactly one copy from outside,
/// sent to its "leader" (its first waiting host); everything else moves inside racks, with
/// the seed's doubling (first free holder of the rack to first waiting host of the rack).
/// Cross-rack copies take priority, under two limits:
///
/// - a rack sends at most one copy out at a time, so seeds spread over distinct sending
///   racks (the source's rack first, as it holds first) and the number of seeded racks
///   doubles per cross-rack copy time, like bounce over racks;
/// - a rack whose only holder still has rack-mates waiting serves them first; once it has
///   two holders, one of them keeps the uplink busy while the rest double inside.
///
/// Racks are seeded biggest first, since their inside doubling takes longest.
///
/// **Why it beats bounce when uplinks are oversubscribed.** Bounce pairs hosts without
/// regard to racks, so about (R−1)/R of its hops cross racks, and in the middle rounds
/// dozens of flows share one rack uplink at once, each at a fraction of its rate. Here each
/// uplink carries at most one flow out and one flow in at any time: R−1 cross-rack copies
/// in all instead of about C·(R−1)/R, each at the full uplink rate, while the doubling
/// inside racks runs on the hosts' own links, which are not oversubscribed.
///
/// **Failures.** As in bounce: on a failed hop the sender returns to the holders and the
/// receiver to the waiting hosts; a retry prefers a holder that has not failed that
/// receiver. A rack whose seed failed, or whose every holder was lost, is seeded again, so
/// with failures a rack may receive more than one cross-rack copy.
///
/// Without rack ids (or with a single rack) nothing crosses a rack and the strategy makes
/// exactly the choices of `bounce`.
pub struct Rack {
    set: Vec<Set>,
    /// Dense rack index of every host.
    rack_of: Vec<u32>,
    racks: Vec<RackState>,
    /// Racks that may need a seed, biggest first; validated when popped.
    targets: VecDeque<u32>,
    /// Racks that may be able to send a seed; validated when popped.
    senders: VecDeque<u32>,
    /// Racks that may be able to pair inside; validated when popped.
    local: VecDeque<u32>,
    /// Receiver -> the distinct senders whose hop to it failed.
    failed_senders: HashMap<HostId, Vec<HostId>>,
}

impl Rack {
    /// The initial state: the source holds, every receiver waits. `rack`, when known, holds
    /// one rack id per host, indexed by [`HostId`].
    pub fn new(receivers: u32, rack: Option<&[u32]>) -> Self {
        let hosts = receivers as usize + 1;
        let mut dense: HashMap<u32, u32> = HashMap::new();
        let rack_of: Vec<u32> = match rack {
            None => vec![0; hosts],
            Some(ids) => ids
                .iter()
                .map(|&id| {
                    let n = dense.len() as u32;
                    *dense.entry(id).or_insert(n)
                })
                .collect(),
        };
        let count = rack_of.iter().max().map_or(1, |&m| m as usize + 1);
        let mut s = Rack {
            set: vec![Set::Waiting; hosts],
            rack_of,
            racks: vec![RackState::default(); count],
            targets: VecDeque::new(),
            senders: VecDeque::new(),
            local: VecDeque::new(),
            failed_senders: HashMap::new(),
        };
        s.set[0] = Set::Holder;
        let r0 = &mut s.racks[s.rack_of[0] as usize];
        r0.holders.push_back(HostId::SOURCE);
        r0.free_holders = 1;
        r0.live_holders = 1;
        for h in (1..=receivers).map(HostId) {
            let r = &mut s.racks[s.rack_of[h.index()] as usize];
            r.waiting.push_back(h);
            r.waiting_count += 1;
            r.size += 1;
        }
        let mut order: Vec<u32> = (0..count as u32).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(s.racks[r as usize].size));
        for r in order {
            s.touch(r);
        }
        s
    }

    /// Queues rack `r` wherever its state now allows a pairing.
    fn touch(&mut self, r: u32) {
        let st = &mut self.racks[r as usize];
        if st.needs_seed() && !st.in_targets {
            st.in_targets = true;
            self.targets.push_back(r);
        }
        if st.can_send() && !st.in_senders {
            st.in_senders = true;
            self.senders.push_back(r);
        }
        if st.can_pair() && !st.in_local {
            st.in_local = true;
            self.local.push_back(r);
        }
    }

    /// The first rack of `queue` that passes `ok`, dropping those that do not.
    fn front_valid(
        queue: &mut VecDeque<u32>,
        racks: &mut [RackState],
        ok: fn(&RackState) -> bool,
        flag: fn(&mut RackState) -> &mut bool,
    ) -> Option<u32> {
        while let Some(&r) = queue.front() {
            if ok(&racks[r as usize]) {
                return Some(r);
            }
            queue.pop_front();
            *flag(&mut racks[r as usize]) = false;
        }
        None
    }

    /// Pops the first waiting host of rack `r`.
    fn take_waiting(&mut self, r: u32) -> HostId {
        let st = &mut self.racks[r as usize];
        loop {
            let h = st.waiting.pop_front().expect("waiting_count > 0");
            if self.set[h.index()] == Set::Waiting {
                st.waiting_count -= 1;
                self.set[h.index()] = Set::Busy;
                return h;
            }
        }
    }

    /// Pops the first free holder of rack `r` that has not failed `to` before, or the first
    /// free holder if all have.
    fn take_holder(&mut self, r: u32, to: HostId) -> HostId {
        let st = &mut self.racks[r as usize];
        let set = &self.set;
        let pos = match self.failed_senders.get(&to) {
            None => {
                while set[st.holders.front().expect("free_holders > 0").index()] != Set::Holder {
                    st.holders.pop_front();
                }
                0
            }
            Some(failed) => {
                st.holders.retain(|h| set[h.index()] == Set::Holder);
                st.holders
                    .iter()
                    .position(|h| !failed.contains(h))
                    .unwrap_or(0)
            }
        };
        let h = st.holders.remove(pos).expect("free_holders > 0");
        st.free_holders -= 1;
        self.set[h.index()] = Set::Busy;
        h
    }

    fn make_holder(&mut self, h: HostId) {
        let st = &mut self.racks[self.rack_of[h.index()] as usize];
        st.holders.push_back(h);
        st.free_holders += 1;
        self.set[h.index()] = Set::Holder;
    }
}

impl Strategy for Rack {
    fn name(&self) -> &'static str {
        "rack"
    }

    fn start(&mut self, view: &View<'_>) {
        // Receivers of a resumed run that already hold the file start as holders of their
        // rack, so that rack needs no seed.
        for i in 1..self.set.len() {
            let h = HostId(i as u32);
            if !view.holdings.is_complete(h) {
                continue;
            }
            let r = self.rack_of[i];
            let st = &mut self.racks[r as usize];
            st.waiting.retain(|&w| w != h);
            st.waiting_count -= 1;
            st.live_holders += 1;
            self.make_holder(h);
        }
        for r in 0..self.racks.len() as u32 {
            self.touch(r);
        }
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        let whole = ChunkRange {
            start: 0,
            end: view.layout.count(),
        };
        if let Some(t) = Self::front_valid(
            &mut self.targets,
            &mut self.racks,
            RackState::needs_seed,
            |s| &mut s.in_targets,
        ) {
            if let Some(s) = Self::front_valid(
                &mut self.senders,
                &mut self.racks,
                RackState::can_send,
                |s| &mut s.in_senders,
            ) {
                let to = self.take_waiting(t);
                let from = self.take_holder(s, to);
                self.racks[t as usize].inbound += 1;
                self.racks[s as usize].outbound += 1;
                // The sending rack goes to the back, so the next seed leaves by another
                // uplink if one is free.
                self.senders.pop_front();
                self.racks[s as usize].in_senders = false;
                self.touch(s);
                self.touch(t);
                return Some((from, to, whole));
            }
        }
        let r = Self::front_valid(&mut self.local, &mut self.racks, RackState::can_pair, |s| {
            &mut s.in_local
        })?;
        let to = self.take_waiting(r);
        let from = self.take_holder(r, to);
        self.touch(r);
        Some((from, to, whole))
    }

    fn finished(&mut self, view: &View<'_>, from: HostId, to: HostId, _c: ChunkRange, ok: bool) {
        let (rf, rt) = (self.rack_of[from.index()], self.rack_of[to.index()]);
        if rf != rt {
            self.racks[rf as usize].outbound -= 1;
            self.racks[rt as usize].inbound -= 1;
        }
        if self.set[from.index()] == Set::Busy && !view.is_failed(from) {
            self.make_holder(from);
        }
        if self.set[to.index()] == Set::Busy && !view.is_failed(to) {
            if ok {
                self.racks[rt as usize].live_holders += 1;
                self.make_holder(to);
            } else {
                let senders = self.failed_senders.entry(to).or_default();
                if !senders.contains(&from) {
                    senders.push(from);
                }
                let st = &mut self.racks[rt as usize];
                st.waiting.push_back(to);
                st.waiting_count += 1;
                self.set[to.index()] = Set::Waiting;
            }
        }
        self.touch(rf);
        self.touch(rt);
    }

    fn host_lost(&mut self, view: &View<'_>, host: HostId) {
        let r = self.rack_of[host.index()];
        let st = &mut self.racks[r as usize];
        match self.set[host.index()] {
            Set::Holder => st.free_holders -= 1,
            Set::Waiting => st.waiting_count -= 1,
            Set::Busy | Set::Gone | Set::Joining => {}
        }
        if self.set[host.index()] != Set::Gone && view.holdings.is_complete(host) {
            st.live_holders -= 1;
        }
        // Queued entries are dropped lazily when they reach the front.
        self.set[host.index()] = Set::Gone;
        self.failed_senders.remove(&host);
        self.touch(r);
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        let mut want = vec![RackState::default(); self.racks.len()];
        for (i, s) in self.set.iter().enumerate() {
            let h = HostId(i as u32);
            let w = &mut want[self.rack_of[i] as usize];
            match s {
                Set::Holder => w.free_holders += 1,
                Set::Waiting => w.waiting_count += 1,
                Set::Busy | Set::Gone | Set::Joining => {}
            }
            if *s != Set::Gone && view.holdings.is_complete(h) {
                w.live_holders += 1;
            }
            check_host(h, *s, view)?;
        }
        for (r, (st, w)) in self.racks.iter().zip(&want).enumerate() {
            for (queue, set, name) in [
                (&st.holders, Set::Holder, "holders"),
                (&st.waiting, Set::Waiting, "waiting"),
            ] {
                let mut seen = 0;
                for &h in queue {
                    if self.rack_of[h.index()] as usize != r {
                        return Err(format!("{h} is queued in the {name} of another rack"));
                    }
                    match self.set[h.index()] {
                        x if x == set => seen += 1,
                        Set::Gone => {}
                        x => return Err(format!("{h} is queued in {name} but is {x:?}")),
                    }
                }
                let count = if set == Set::Holder {
                    st.free_holders
                } else {
                    st.waiting_count
                };
                if seen != count {
                    return Err(format!("rack {r} queues {seen} {name} but counts {count}"));
                }
            }
            if (st.free_holders, st.waiting_count, st.live_holders)
                != (w.free_holders, w.waiting_count, w.live_holders)
            {
                return Err(format!(
                    "rack {r} counts (free, waiting, live) = {:?}, the hosts say {:?}",
                    (st.free_holders, st.waiting_count, st.live_holders),
                    (w.free_holders, w.waiting_count, w.live_holders)
                ));
            }
            if st.inbound > 1 || st.outbound > 1 {
                return Err(format!(
                    "rack {r} has {} copies coming in and {} going out",
                    st.inbound, st.outbound
                ));
            }
            // Nothing that could start may be left unqueued, or the run could stall.
            if st.needs_seed() && !st.in_targets
                || st.can_send() && !st.in_senders
                || st.can_pair() && !st.in_local
            {
                return Err(format!("rack {r} could pair but is not queued"));
            }
        }
        Ok(())
    }
}
