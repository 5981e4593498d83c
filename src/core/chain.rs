//! `chain`: a store-and-forward pipeline through all hosts, chunk by chunk.

use std::time::Duration;

use super::strategy::{ProbeStep, ProbeVerdict, Spliced, Strategy, View};
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
///
/// With a [`Straggler`] rule, a host that receives far slower than its feeder is cut out
/// the same way as a lost one, and then hangs off the chain's last host as a *leaf*, fed the
/// rest of the file at its own pace (its chunks still in file order). A leaf whose feeder
/// is lost hangs off the new last host. A first host too slow for the file is found by a
/// probe of the source (see [`Straggler::probe`]).
pub struct Chain {
    /// Each host's place in the chain, by host: one entry per step rather than one table per
    /// field, since every step reads the successor's whole entry.
    places: Vec<Place>,
    /// Most chunks in flight on one link.
    window: u32,
    /// Hosts whose outgoing link may be able to start a hop.
    ready: Vec<HostId>,
    /// When a slow host is cut out; `None` never.
    straggler: Option<Straggler>,
    /// The rule's window and stall span in nanoseconds, and its sustained bytes.
    window_ns: u64,
    stall_ns: u64,
    sustain: u64,
    /// The most cuts in flight at once (see [`Straggler::cut_share`]).
    max_cuts: usize,
    /// Hosts cut out for being slow, each feeding nobody, listed by the host that feeds them
    /// (its `prev`, a host of the chain): empty until the first one, then one list per host,
    /// so that a host's next chunk looks only at its own leaves.
    leaves_of: Vec<Vec<HostId>>,
    /// How many leaves there are. Usually none, so the per-chunk path only checks that.
    leaf_count: usize,
    /// The highest rate measured so far: the reference for a host fed by the source, whose
    /// own rate is not measured.
    best: Option<Rate>,
    /// Hosts cut out and not yet announced (see [`Strategy::poll_spliced`]).
    spliced: Vec<Spliced>,
    /// Where the probe of the source stands (see [`Straggler::probe`]).
    probing: Probing,
    /// Probe steps not yet announced, oldest first (see [`Strategy::poll_probe`]).
    probe_steps: Vec<ProbeStep>,
    /// Leaves moved to another feeder and not yet announced (see
    /// [`Strategy::poll_relinked`]).
    relinked: Vec<HostId>,
}

/// Where a chain's probe of its source stands (see [`Straggler::probe`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Probing {
    /// None has started.
    Not,
    /// `host` is fed by the source alongside `head`, the chain's first host, whose rate
    /// over the probe is measured from `mark` (nanoseconds into the run, bytes it held).
    Running {
        host: HostId,
        head: HostId,
        mark: (u64, u64),
    },
    /// One ran, or cannot run any more: a run probes once, and its rates stay the
    /// reference of every host fed by the source.
    Done,
}

/// When a chain cuts a slow host out of its pipeline, so that it cannot hold back the hosts
/// behind it.
///
/// Every host's rate is measured in bytes over its current feed: from the first arrival
/// after it was last (re)linked, to now. An arrival is a chunk's end, or, from a driver that
/// reports it ([`crate::core::Scheduler::handle_progress`]), any growth of the host's copy in
/// between, so that a host whose chunks each take longer than the window is still measured
/// within the window. Once that span is at least `window` long, a host
/// that is not the chain's last and receives at less than `ratio` times its feeder's rate
/// (the best rate measured anywhere, for a host fed by the source) is cut out: its
/// successor is fed by its feeder from the first chunk it lacks, and the slow host hangs off
/// the chain's last host, which feeds it at its own pace from then on (that host's upload
/// is otherwise idle), or stays with its feeder when the last host is slow or already feeds
/// one; never with the source, whose upload feeds the chain's head (a host cut there would
/// slow the whole chain, and the next head would look slow in turn). Only the first slow
/// host of a run of them is cut: the hosts behind it are measured against it, and measured
/// afresh once it is gone. Rates are compared only once they are sustained (see
/// [`Straggler::sustain`]), and only so many cuts may be in flight at once (see
/// [`Straggler::cut_share`]). A host that has received nothing for
/// `stall` while its feeder received more than a link's window and four chunks has
/// stalled (a dead link, before the keep-alives notice), and is cut out the same way.
///
/// Measured from chunk ends alone, a host is credited with the chunk on its way as if it
/// had just arrived (the most it can be receiving at). Measured from a driver's progress,
/// only what arrived counts, and progress that arrives late (the runner's comes every half
/// second, through ssh) can make a rate look slower than it is, by the delay over the span.
/// The defaults (a quarter, over one second) leave alone any host at three quarters of its
/// feeder's rate or more unless its progress arrives more than 1.5 s late, and a link that
/// pauses for 0.7 s as it starts (as one set up while its hosts' CPUs are busy setting up
/// others can: a span of half a second was seen to cut such links), and cut a host ten times
/// slower than its feeder about a second after its first bytes.
///
/// A host fed by the source is measured against the best rate seen. No host behind the first
/// can show more than the first relays to it, so a slow first host cannot be told from a
/// slow source by the chain alone: that is what the `probe` is for. The rule sees only
/// download rates: a host that receives fast but uploads slowly makes its successor look
/// slow, and it is the successor that is cut.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Straggler {
    /// Fraction of the feeder's rate under which a host is cut out.
    pub ratio: f64,
    /// Shortest span a rate is measured over.
    pub window: Duration,
    /// How long a host may receive nothing at all while its feeder goes on before it counts
    /// as stalled.
    pub stall: Duration,
    /// When to probe the source, so that a slow first host is not mistaken for a slow
    /// source: once the first host's rate over a window leaves more than this to go for
    /// the rest of the file, the chain's last host is taken off the chain and fed by the
    /// source alongside the first, for at least a window of both. If the first receives at
    /// less than `ratio` times the other, it is cut out, and the other takes its place at
    /// the head of the chain; if the other is that slow, it is cut out instead; otherwise
    /// it goes back to the chain's tail, and the source's own link is what limits the
    /// chain. A run probes at most once, and not while the chain's last host is its first
    /// or already holds the whole file (a host that joins later may make one possible).
    ///
    /// The probe costs the first host the share of the source's upload that the other takes
    /// meanwhile: about half a window's worth of the source's rate when both share its link,
    /// nothing when the source's link is faster than a host's. A run too short for the
    /// probe to pay (less than this to go at the first host's rate) never probes, and a
    /// slow first host then holds it back. `None` never probes.
    pub probe: Option<Duration>,
    /// Fewest bytes a rate that can cut a host is measured over, beside `window`, so that
    /// every rate the rule compares is sustained: more than the buffers on a path hold
    /// (ssh's 2 MiB channel window, the sockets', a shaper's bucket), and long against how
    /// late a report can be. A feeder's rate, and the best rate (the reference of a host fed
    /// by the source), count only once they span this much; a host is measured against one
    /// for at least the time that rate takes to move this much. On fast links `window`
    /// rules; on slow ones (4 MiB is 6.7 s at 5 Mbit/s) this does.
    pub sustain: u64,
    /// The most receivers, as a share of them (at least one), that may be cut out and not
    /// yet have shown a rate over a window of their new feed: a rule misled by a busy
    /// controller cuts a few hosts at a time, not the fleet, while genuinely slow hosts,
    /// which soon show their rate as leaves, are not held back.
    pub cut_share: f64,
}

impl Straggler {
    /// A quarter of the feeder's rate, over one second and 4 MiB; a stall of two seconds; a
    /// probe of the source when the first host has more than 15 s to go, so that it costs
    /// at most a few percent of a run's time; at most one receiver in ten cut out and not
    /// yet measured on its new feed. What the runner and the simulator use.
    pub const DEFAULT: Straggler = Straggler {
        ratio: 0.25,
        window: Duration::from_secs(1),
        stall: Duration::from_secs(2),
        probe: Some(Duration::from_secs(15)),
        sustain: 4 << 20,
        cut_share: 0.1,
    };
}

impl Default for Straggler {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A rate as bytes over nanoseconds, compared by cross-multiplying: the simulator measures
/// one at every chunk, and a division costs more than the rest of the check.
#[derive(Clone, Copy, Debug)]
struct Rate {
    bytes: f64,
    nanos: f64,
}

impl Rate {
    /// True when this rate is below `ratio` times `other`.
    fn below(self, ratio: f64, other: Rate) -> bool {
        self.bytes * other.nanos < ratio * other.bytes * self.nanos
    }

    /// True when this rate is above `other`.
    fn above(self, other: Rate) -> bool {
        self.bytes * other.nanos > other.bytes * self.nanos
    }

    /// In bytes per second.
    fn per_sec(self) -> f64 {
        self.bytes / self.nanos * 1e9
    }
}

/// A host's links in the chain and what is on its way to it.
#[derive(Clone, Copy, Debug)]
struct Place {
    /// Its successor while it is live (`None` for the last, and for a leaf).
    next: Option<HostId>,
    /// Its predecessor (for a leaf, its feeder) while it is live.
    prev: Option<HostId>,
    /// Chunks in flight to it.
    inbound: u32,
    /// Every chunk below it is held by the host or in flight to it.
    cursor: u32,
    /// A chunk to it failed: nothing more is sent to it until every chunk still in flight
    /// to it has ended, so that it is then fed from its first missing chunk on.
    draining: bool,
    /// It was cut out for being slow: fed by `prev`, forwarding to nobody.
    leaf: bool,
    /// It was cut out and has not yet shown a rate over a window of its new feed: a cut in
    /// flight (see [`Straggler::cut_share`]).
    cut_pending: bool,
    /// Its rate's span over its current feed: the first arrival (nanoseconds into the run,
    /// bytes held then), if anything arrived since it was last (re)linked.
    since: Option<(u64, u64)>,
    /// When its latest arrival was, in nanoseconds into the run.
    last: u64,
    /// The longest its copy was reported to be (see [`Strategy::progress`]); 0 from a
    /// driver that does not report progress.
    reported: u64,
    /// Its current feed's rate is measured from progress: no chunk on its way is credited.
    by_progress: bool,
    /// The chunks its feeder held then: a feeder that gets many more while it gets none
    /// means it has stalled.
    feeder_then: u32,
}

impl Chain {
    /// The chain source → 1 → 2 → … → C, with up to `window` chunks in flight per link,
    /// cutting out no straggler.
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
                    leaf: false,
                    cut_pending: false,
                    since: None,
                    last: 0,
                    reported: 0,
                    by_progress: false,
                    feeder_then: 0,
                })
                .collect(),
            window: window.max(1),
            ready: vec![HostId::SOURCE],
            straggler: None,
            window_ns: 0,
            stall_ns: 0,
            sustain: 0,
            max_cuts: 0,
            leaves_of: Vec::new(),
            leaf_count: 0,
            best: None,
            spliced: Vec::new(),
            probing: Probing::Not,
            probe_steps: Vec::new(),
            relinked: Vec::new(),
        }
    }

    /// The same chain, cutting out slow hosts by `rule` (`None`: never).
    pub fn with_straggler(mut self, rule: Option<Straggler>) -> Self {
        self.straggler = rule;
        self.window_ns = rule.map_or(0, |r| r.window.as_nanos() as u64);
        self.stall_ns = rule.map_or(0, |r| r.stall.as_nanos() as u64);
        self.sustain = rule.map_or(0, |r| r.sustain);
        let receivers = self.places.len() - 1;
        self.max_cuts = rule.map_or(0, |r| ((receivers as f64 * r.cut_share) as usize).max(1));
        self
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

    /// The chunk `h` may send `s` now, if any, marked as in flight.
    #[inline(always)]
    fn take_chunk(&mut self, view: &View<'_>, h: HostId, s: HostId) -> Option<u32> {
        let k = view.layout.count();
        let c = self.skip_held(view, s);
        if c >= k {
            // The successor has everything (a resumed run): it forwards in our place.
            self.ready.push(s);
            return None;
        }
        let to = &mut self.places[s.index()];
        if to.inbound >= self.window || to.draining || !view.holdings.has(h, c) {
            // Woken again when a chunk to `s` ends or `h` receives one.
            return None;
        }
        to.inbound += 1;
        to.cursor = c + 1;
        if to.inbound < self.window {
            // The window may allow another chunk on this link.
            self.ready.push(h);
        } else if self.skip_held(view, s) >= k {
            // With the window full, popping `h` again would only find this: the successor
            // has everything now and forwards in our place. Done here, it saves a push and a
            // pop per chunk (the simulator's window is 1).
            self.ready.push(s);
        }
        Some(c)
    }

    /// The leaves `h` feeds.
    fn leaves_fed_by(&self, h: HostId) -> &[HostId] {
        self.leaves_of.get(h.index()).map_or(&[], Vec::as_slice)
    }

    /// Makes `leaf` a leaf fed by `feeder`.
    fn add_leaf(&mut self, feeder: HostId, leaf: HostId) {
        if self.leaves_of.is_empty() {
            self.leaves_of = vec![Vec::new(); self.places.len()];
        }
        self.leaves_of[feeder.index()].push(leaf);
        self.leaf_count += 1;
    }

    /// The last host of the chain (the source when no receiver is left in it).
    fn tail(&self) -> HostId {
        let mut tail = HostId::SOURCE;
        while let Some(n) = self.places[tail.index()].next {
            tail = n;
        }
        tail
    }

    /// Who feeds a new leaf, or the leaves of a lost host: the chain's last host, whose
    /// upload nothing else uses, if it feeds no leaf yet and is not measurably slow itself
    /// (by `rule`; a slow last host would make every leaf slower still); otherwise
    /// `fallback`, its feeder so far, whose upload it then shares with the chain. Never the
    /// source, whose upload feeds the chain's head: every host it took on would slow the
    /// whole chain. In its place, the host nearest the tail that feeds no leaf and is not
    /// measurably slow, else the tail all the same; `None` says that there is no tail.
    fn leaf_feeder(&self, view: &View<'_>, fallback: HostId, rule: Straggler) -> Option<HostId> {
        let tail = self.tail();
        // Its upload is what counts, which is not measured: only a host that is measurably
        // slow itself is passed over.
        let now = view.now.as_nanos() as u64;
        let can_feed = |h: HostId| {
            self.leaves_fed_by(h).is_empty()
                && !matches!(
                    (self.rate_at_best(view, h, now), self.reference(view, h)),
                    (Some(rate), Some(r)) if rate.below(rule.ratio, r)
                )
        };
        if tail != HostId::SOURCE && can_feed(tail) {
            return Some(tail);
        }
        if fallback != HostId::SOURCE {
            return Some(fallback);
        }
        let mut h = tail;
        while h != HostId::SOURCE {
            if can_feed(h) {
                return Some(h);
            }
            h = self.places[h.index()].prev?;
        }
        (tail != HostId::SOURCE).then_some(tail)
    }

    /// Hosts cut out that are still receiving and have not yet shown a rate over a window of
    /// their new feed: cuts whose outcome is not known. A rule misled by late reports cuts
    /// many hosts at once; genuinely slow hosts show their rate as leaves and stop counting.
    fn cuts_in_flight(&self, view: &View<'_>) -> usize {
        self.leaves_of
            .iter()
            .flatten()
            .filter(|&&l| self.places[l.index()].cut_pending && !view.holdings.is_complete(l))
            .count()
    }

    /// `rate`, if it spans the rule's sustained bytes: a rate that may be compared.
    fn sustained(&self, rate: Option<Rate>) -> Option<Rate> {
        rate.filter(|r| r.bytes >= self.sustain as f64)
    }

    /// True when `rate` spans at least the time `reference` takes to move the rule's
    /// sustained bytes: long enough to be compared with it.
    fn long_against(&self, rate: Rate, reference: Rate) -> bool {
        rate.nanos * reference.bytes >= self.sustain as f64 * reference.nanos
    }

    /// The bytes `h` is known to hold: what its chunks that ended add up to, or its latest
    /// progress if that is further.
    fn held(&self, view: &View<'_>, h: HostId) -> u64 {
        let chunks = u64::from(view.holdings.count(h)) * view.layout.chunk_size();
        chunks
            .min(view.layout.size())
            .max(self.places[h.index()].reported)
    }

    /// `h`'s rate over its current feed up to `now`, once that span is at least the rule's
    /// window: the most it can be receiving at. Measured from chunk ends, the chunk on its
    /// way counts as if it had just arrived, so that a chunk that takes longer than the
    /// window is not mistaken for a slow host. Measured from progress, which a driver sends
    /// now and then, the span ends at its latest progress: what came since is not known
    /// yet (a host that sends none at all is found by the stall rule).
    fn rate_at_best(&self, view: &View<'_>, h: HostId, now: u64) -> Option<Rate> {
        let p = &self.places[h.index()];
        if p.by_progress {
            return self.shown_rate(view, h);
        }
        let (t0, b0) = p.since?;
        let span = now.saturating_sub(t0);
        (span >= self.window_ns && span > 0).then(|| Rate {
            bytes: (self.held(view, h).saturating_sub(b0) + view.layout.chunk_size()) as f64,
            nanos: span as f64,
        })
    }

    /// What `h`'s rate is measured against: its feeder's while that one received (one that
    /// has all its chunks is not slowed down by having nothing left to receive), or the
    /// best rate seen for a host fed by the source.
    fn reference(&self, view: &View<'_>, h: HostId) -> Option<Rate> {
        match self.places[h.index()].prev? {
            HostId::SOURCE => self.best,
            feeder => self.sustained(self.shown_rate(view, feeder)),
        }
    }

    /// Hangs the leaves fed by `host`, which no longer feeds any, off `tail`, and wakes
    /// `tail`, which may have a leaf to feed now (this one, or a new one).
    fn rehang_leaves_of(&mut self, host: HostId, tail: HostId) {
        if let Some(moved) = self.leaves_of.get_mut(host.index()).map(std::mem::take) {
            for &l in &moved {
                let leaf = &mut self.places[l.index()];
                leaf.prev = Some(tail);
                // Its chunks still in flight from `host` may fail with the old link, which
                // is not its fault.
                leaf.draining = leaf.inbound > 0;
                self.relinked.push(l);
            }
            self.leaves_of[tail.index()].extend(moved);
        }
        self.ready.push(tail);
    }

    /// Starts measuring afresh every host of the chain from `from` on: their rates so far
    /// were bounded by a feeder that has just changed.
    fn remeasure_from(&mut self, from: Option<HostId>) {
        let mut h = from;
        while let Some(x) = h {
            let p = &mut self.places[x.index()];
            p.since = None;
            p.by_progress = false;
            h = p.next;
        }
    }

    /// `h`'s rate over its current feed, between its first and its latest arrival, once that
    /// span is at least the rule's window: what it has shown it can receive.
    fn shown_rate(&self, view: &View<'_>, h: HostId) -> Option<Rate> {
        let p = &self.places[h.index()];
        let (t0, b0) = p.since?;
        let span = p.last.saturating_sub(t0);
        (span >= self.window_ns && span > 0).then(|| Rate {
            bytes: self.held(view, h).saturating_sub(b0) as f64,
            nanos: span as f64,
        })
    }

    /// Records that `h`'s copy grew just now, then measures it, and its successor if that is
    /// measured from progress (its feeder's rate, which it is measured against, may just
    /// have become known) or has received nothing for a window (it may have stalled).
    fn arrived(&mut self, view: &View<'_>, h: HostId, rule: Straggler) {
        let now = view.now.as_nanos() as u64;
        let held = self.held(view, h);
        let feeder_then = self.places[h.index()]
            .prev
            .map_or(0, |p| view.holdings.count(p));
        // The probe's host is measured over its feed from the source only: what still
        // arrives over its old feed (draining) would count that feed's setup as slowness.
        let probed_early = matches!(self.probing, Probing::Running { host, .. } if host == h)
            && self.places[h.index()].draining;
        let p = &mut self.places[h.index()];
        if p.since.is_none() && !probed_early {
            p.since = Some((now, held));
        }
        p.last = now;
        p.feeder_then = feeder_then;
        let next = p.next;
        if p.cut_pending && self.shown_rate(view, h).is_some() {
            self.places[h.index()].cut_pending = false;
        }
        self.check_straggler(view, h, now, rule);
        match self.probing {
            Probing::Not if self.places[0].next == Some(h) => {
                self.start_probe(view, h, now, rule);
            }
            Probing::Running { host, head, .. } if h == host || h == head => {
                self.check_probe(view, now, rule);
            }
            _ => {}
        }
        if let Some(n) = next {
            let p = &self.places[n.index()];
            if p.by_progress || now.saturating_sub(p.last) >= self.window_ns {
                self.check_straggler(view, n, now, rule);
            }
        }
    }

    /// Cuts `h` out of the chain if it is a straggler by `rule` (see [`Straggler`]); `now`
    /// is `view.now` in nanoseconds.
    fn check_straggler(&mut self, view: &View<'_>, h: HostId, now: u64, rule: Straggler) {
        let place = self.places[h.index()];
        let (Some(feeder), Some(successor)) = (place.prev, place.next) else {
            return;
        };
        if place.since.is_none() {
            // Nothing arrived on its current feed yet: nothing to measure.
            return;
        }
        if let Some(shown) = self.sustained(self.shown_rate(view, h)) {
            if self.best.is_none_or(|b| shown.above(b)) {
                self.best = Some(shown);
            }
        }
        // A host that stopped receiving altogether (a dead link, a hung disk) while its
        // feeder went on is cut out at once, without waiting for its average to sink, nor
        // for a rate at all (its link may die before a window of it is measured): more
        // chunks than a link holds in flight reached the feeder, over the stall span, and
        // not one reached it.
        let stalled = feeder != HostId::SOURCE
            && now.saturating_sub(place.last) >= self.stall_ns
            && view.holdings.count(feeder) > place.feeder_then + self.window + 4;
        let measured = self.rate_at_best(view, h, now).zip(self.reference(view, h));
        let slow = measured.is_some_and(|(rate, reference)| {
            self.long_against(rate, reference) && rate.below(rule.ratio, reference)
        });
        if !slow && !stalled {
            return;
        }
        if self.cuts_in_flight(view) >= self.max_cuts {
            return;
        }
        // Looked up before the relink below, so the walk back from the tail may pass `h`:
        // a host that cannot be told slow (a stall) must not become its own feeder.
        let Some(new_feeder) = self.leaf_feeder(view, feeder, rule).filter(|&f| f != h) else {
            return;
        };
        let nothing = Rate {
            bytes: 0.0,
            nanos: 1.0,
        };
        let (rate, reference) = measured.unwrap_or((
            self.shown_rate(view, h).unwrap_or(nothing),
            self.reference(view, h).unwrap_or(nothing),
        ));
        // Past it: its successor is fed by its feeder, from the first chunk it lacks once the
        // chunks on their way from `h` have ended (they may fail: the driver replaces the
        // link).
        self.places[feeder.index()].next = Some(successor);
        let s = &mut self.places[successor.index()];
        s.prev = Some(feeder);
        s.draining = s.inbound > 0;
        self.remeasure_from(Some(successor));
        // It hangs off the tail if that can serve it, or stays with its feeder.
        let p = &mut self.places[h.index()];
        p.next = None;
        p.prev = Some(new_feeder);
        p.leaf = true;
        p.cut_pending = true;
        if new_feeder != feeder {
            p.draining = p.inbound > 0;
            // Measured over its new feed, to tell when the cut's outcome is known.
            p.since = None;
            p.by_progress = false;
        }
        self.rehang_leaves_of(h, new_feeder);
        self.add_leaf(new_feeder, h);
        self.ready.push(feeder);
        self.spliced.push(Spliced {
            host: h,
            feeder: new_feeder,
            successor: Some(successor),
            rate: rate.per_sec(),
            reference: reference.per_sec(),
            stalled: !slow,
        });
    }

    /// Makes `host` the chain's last host, fed by the one that was, and wakes that one.
    fn link_at_tail(&mut self, host: HostId) {
        let tail = self.tail();
        self.places[tail.index()].next = Some(host);
        self.places[host.index()].prev = Some(tail);
        self.ready.push(tail);
    }

    /// Takes `host` off the leaves of `feeder`.
    fn remove_leaf(&mut self, feeder: HostId, host: HostId) {
        self.leaves_of[feeder.index()].retain(|&l| l != host);
        self.leaf_count -= 1;
        let p = &mut self.places[host.index()];
        p.leaf = false;
        p.cut_pending = false;
    }

    /// Starts the probe of the source (see [`Straggler::probe`]) if `head`, the chain's first
    /// host, has shown a rate that leaves more than the rule's probe span to go, and the
    /// chain has a last host to probe with. `now` is `view.now` in nanoseconds.
    fn start_probe(&mut self, view: &View<'_>, head: HostId, now: u64, rule: Straggler) {
        let Some(after) = rule.probe else {
            self.probing = Probing::Done;
            return;
        };
        let Some(rate) = self.shown_rate(view, head) else {
            return;
        };
        let held = self.held(view, head);
        let left = view.layout.size().saturating_sub(held) as f64;
        // Time to go is left·nanos/bytes: compared cross-multiplied, a head that received
        // nothing over its window has forever to go.
        if left * rate.nanos <= after.as_nanos() as f64 * rate.bytes {
            return;
        }
        if self.best.is_some_and(|b| rate.below(rule.ratio, b)) {
            // Measurably slow already: the rule cuts it without a probe.
            return;
        }
        let host = self.tail();
        if host == head || view.holdings.is_complete(host) {
            // Nobody to probe with (yet: a host may join).
            return;
        }
        let before = self.places[host.index()]
            .prev
            .expect("a receiver at the tail has a predecessor");
        self.places[before.index()].next = None;
        // Its leaves, if any, hang off the new last host.
        self.rehang_leaves_of(host, before);
        let p = &mut self.places[host.index()];
        p.prev = Some(HostId::SOURCE);
        p.leaf = true;
        p.draining = p.inbound > 0;
        p.since = None;
        p.by_progress = false;
        self.add_leaf(HostId::SOURCE, host);
        self.ready.push(HostId::SOURCE);
        self.probing = Probing::Running {
            host,
            head,
            mark: (now, held),
        };
        self.probe_steps.push(ProbeStep::Started {
            head,
            host,
            head_rate: rate.per_sec(),
        });
    }

    /// Ends the probe once both its hosts have shown a rate over a window of it: cuts out
    /// the first host if it receives at less than the rule's ratio of the other (which
    /// takes its place), or the other if it is that slow; puts the other back at the
    /// chain's tail otherwise. `now` is `view.now` in nanoseconds.
    fn check_probe(&mut self, view: &View<'_>, now: u64, rule: Straggler) {
        let Probing::Running { host, head, mark } = self.probing else {
            return;
        };
        match self.places[0].next {
            Some(h) if h == head => {}
            Some(h) => {
                // The first host was lost (or cut out): the probe measures the new one
                // from now on.
                let held = self.held(view, h);
                self.probing = Probing::Running {
                    host,
                    head: h,
                    mark: (now, held),
                };
                return;
            }
            None => {
                // No chain is left but the probe's host: it heads it, over the link it has.
                self.remove_leaf(HostId::SOURCE, host);
                self.places[0].next = Some(host);
                self.probing = Probing::Done;
                return;
            }
        }
        if view.holdings.is_complete(host) {
            // It has everything: nothing to put back, nothing to measure.
            self.probing = Probing::Done;
            return;
        }
        let Some(host_rate) = self.shown_rate(view, host) else {
            return;
        };
        // The first host's rate over the probe, as the rule measures it: at best (crediting
        // the chunk on its way, unless measured from progress) to cut it, and as shown to
        // cut the other, so that neither is cut for the coarseness of whole chunks.
        // Measured from progress, the span ends at its latest report, or a stall span ago if
        // that is later: a first host that stops receiving altogether is found slow too.
        let p = &self.places[head.index()];
        let (end, credit) = match p.by_progress {
            true => (p.last.max(now.saturating_sub(self.stall_ns)), 0),
            false => (now, view.layout.chunk_size()),
        };
        let span = end.saturating_sub(mark.0);
        if span < self.window_ns || span == 0 {
            return;
        }
        let got = self.held(view, head).saturating_sub(mark.1);
        let head_best = Rate {
            bytes: (got + credit) as f64,
            nanos: span as f64,
        };
        let shown_span = p.last.saturating_sub(mark.0);
        let head_shown = (shown_span >= self.window_ns && shown_span > 0).then_some(Rate {
            bytes: got as f64,
            nanos: shown_span as f64,
        });
        for r in head_shown.into_iter().chain([host_rate]) {
            if self.sustained(Some(r)).is_some() && self.best.is_none_or(|b| r.above(b)) {
                self.best = Some(r);
            }
        }
        // Either host is found slow only by sustained rates (see [`Straggler::sustain`]):
        // until then a verdict that would cut waits, while one that cuts nobody is given as
        // soon as both rates are known.
        let head_slow = head_best.below(rule.ratio, host_rate) && !view.holdings.is_complete(head);
        if head_slow
            && (self.sustained(Some(host_rate)).is_none()
                || !self.long_against(head_best, host_rate))
        {
            return;
        }
        let head_rate = match (head_slow, head_shown) {
            (false, Some(r)) => r,
            _ => head_best,
        };
        let host_slow = !head_slow && head_shown.is_some_and(|r| host_rate.below(rule.ratio, r));
        if host_slow
            && (self.sustained(head_shown).is_none() || !self.long_against(host_rate, head_rate))
        {
            return;
        }
        self.probing = Probing::Done;
        self.probe_steps.push(ProbeStep::Ended {
            head,
            host,
            head_rate: head_rate.per_sec(),
            host_rate: host_rate.per_sec(),
            verdict: match (head_slow, host_slow) {
                (true, _) => ProbeVerdict::FirstSlow,
                (_, true) => ProbeVerdict::OtherSlow,
                _ => ProbeVerdict::SourceBound,
            },
        });
        if head_slow {
            // The first host is slow: the probe's host, fed by the source already, takes its
            // place and feeds its successor.
            self.remove_leaf(HostId::SOURCE, host);
            let successor = self.places[head.index()].next;
            self.places[0].next = Some(host);
            self.places[host.index()].next = successor;
            if let Some(s) = successor {
                let s = &mut self.places[s.index()];
                s.prev = Some(host);
                s.draining = s.inbound > 0;
            }
            self.remeasure_from(successor);
            // The probe's host heads the chain now, so there is a last host to take it.
            let feeder = self
                .leaf_feeder(view, HostId::SOURCE, rule)
                .unwrap_or_else(|| self.tail());
            let p = &mut self.places[head.index()];
            p.next = None;
            p.prev = Some(feeder);
            p.leaf = true;
            if feeder != HostId::SOURCE {
                p.draining = p.inbound > 0;
            }
            self.rehang_leaves_of(head, feeder);
            self.add_leaf(feeder, head);
            self.ready.push(HostId::SOURCE);
            self.ready.push(host);
            self.spliced.push(Spliced {
                host: head,
                feeder,
                successor,
                rate: head_rate.per_sec(),
                reference: host_rate.per_sec(),
                stalled: false,
            });
        } else if host_slow {
            // The probe's host is slow: it becomes a leaf of a host of the chain (whose head
            // is still in it, so there is a last host), never of the source, whose upload
            // feeds the chain.
            self.remove_leaf(HostId::SOURCE, host);
            let feeder = self
                .leaf_feeder(view, HostId::SOURCE, rule)
                .unwrap_or_else(|| self.tail());
            let p = &mut self.places[host.index()];
            p.prev = Some(feeder);
            p.leaf = true;
            p.draining = p.inbound > 0;
            self.add_leaf(feeder, host);
            self.ready.push(feeder);
            self.spliced.push(Spliced {
                host,
                feeder,
                successor: None,
                rate: host_rate.per_sec(),
                reference: head_rate.per_sec(),
                stalled: false,
            });
        } else {
            // Neither is slow: the source's link is the limit. The probe's host goes back
            // to the tail, where nobody waits on it.
            self.remove_leaf(HostId::SOURCE, host);
            self.link_at_tail(host);
            let p = &mut self.places[host.index()];
            p.draining = p.inbound > 0;
            self.remeasure_from(Some(host));
        }
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
        self.link_at_tail(host);
    }

    // Inlined into the scheduler's `poll_transfer`: the simulator calls it twice per chunk,
    // and left to itself the compiler keeps it out of line (7% more instructions per chunk).
    #[inline(always)]
    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        while let Some(h) = self.ready.pop() {
            if view.is_failed(h) {
                continue;
            }
            if let Some(s) = self.places[h.index()].next {
                if let Some(c) = self.take_chunk(view, h, s) {
                    if self.leaf_count > 0 && !self.leaves_fed_by(h).is_empty() {
                        // Its leaves are looked at when it is popped again.
                        self.ready.push(h);
                    }
                    return Some((h, s, ChunkRange::single(c)));
                }
            }
            if self.leaf_count == 0 {
                continue;
            }
            for i in 0..self.leaves_fed_by(h).len() {
                let l = self.leaves_of[h.index()][i];
                if let Some(c) = self.take_chunk(view, h, l) {
                    self.ready.push(h);
                    return Some((h, l, ChunkRange::single(c)));
                }
            }
        }
        None
    }

    fn finished(&mut self, view: &View<'_>, _from: HostId, to: HostId, c: ChunkRange, ok: bool) {
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
        if let (true, Some(rule)) = (ok, self.straggler) {
            self.arrived(view, to, rule);
        }
    }

    fn progress(&mut self, view: &View<'_>, host: HostId, bytes: u64) {
        let Some(rule) = self.straggler else {
            return;
        };
        if bytes <= self.held(view, host) {
            return;
        }
        let p = &mut self.places[host.index()];
        p.reported = bytes;
        p.by_progress = true;
        self.arrived(view, host, rule);
    }

    fn host_lost(&mut self, view: &View<'_>, host: HostId) {
        let i = host.index();
        if matches!(self.probing, Probing::Running { host: h, .. } if h == host) {
            // The probe ends with its host; the reference stays what it was.
            self.probing = Probing::Done;
        }
        if self.places[i].leaf {
            if let Some(f) = self.places[i].prev.take() {
                self.remove_leaf(f, host);
            }
            return;
        }
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
        // The hosts behind it paused while it was found dead.
        self.remeasure_from(n);
        if !self.leaves_fed_by(host).is_empty() {
            // Its leaves must be fed by someone: by its feeder, even the source, if no other
            // host can take them.
            let feeder = match (p, self.straggler) {
                (Some(p), Some(rule)) => self.leaf_feeder(view, p, rule).unwrap_or(p),
                (Some(p), None) => p,
                (None, _) => self.tail(),
            };
            self.rehang_leaves_of(host, feeder);
        }
    }

    fn resets(&self) -> bool {
        true
    }

    fn host_reset(&mut self, view: &View<'_>, host: HostId) {
        if let Probing::Running { host: h, head, .. } = self.probing {
            if head == host {
                // A probe measures its rate afresh, from the nothing it now holds.
                let now = view.now.as_nanos() as u64;
                self.probing = Probing::Running {
                    host: h,
                    head,
                    mark: (now, 0),
                };
            }
        }
        // It keeps its place and is fed from its first chunk again, in file order as
        // always; the hosts it feeds wait for what they lack.
        let place = &mut self.places[host.index()];
        place.cursor = 0;
        place.since = None;
        place.reported = 0;
        place.by_progress = false;
        // What is still on its way to it brings it nothing now; it is fed again once that
        // has ended.
        place.draining = place.inbound > 0;
        if let Some(p) = place.prev {
            self.ready.push(p);
        }
    }

    fn poll_spliced(&mut self) -> Option<Spliced> {
        self.spliced.pop()
    }

    fn poll_probe(&mut self) -> Option<ProbeStep> {
        (!self.probe_steps.is_empty()).then(|| self.probe_steps.remove(0))
    }

    fn poll_relinked(&mut self) -> Option<HostId> {
        self.relinked.pop()
    }

    fn planned_links(&self, view: &View<'_>) -> Vec<(HostId, HostId)> {
        // Every link of the chain carries the whole file, and a link's setup would otherwise
        // wait for the first chunk to reach its sender: C setups one after another. A leaf's
        // carries the rest of it.
        let chain = self
            .places
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((HostId(i as u32), p.next?)));
        let leaves = self
            .leaves_of
            .iter()
            .enumerate()
            .flat_map(|(f, ls)| ls.iter().map(move |&l| (HostId(f as u32), l)));
        chain
            .chain(leaves)
            .filter(|&(h, s)| !view.is_failed(h) && !view.holdings.is_complete(s))
            .collect()
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        let mut listed = 0;
        for (f, ls) in self.leaves_of.iter().enumerate() {
            for &l in ls {
                let p = &self.places[l.index()];
                if !p.leaf || p.prev != Some(HostId(f as u32)) {
                    return Err(format!("{l} is listed as a leaf of h{f}, but is not one"));
                }
                listed += 1;
            }
        }
        let leaves = self
            .places
            .iter()
            .filter(|p| p.leaf && p.prev.is_some())
            .count();
        if listed != self.leaf_count || leaves != listed {
            return Err(format!(
                "{listed} leaves listed, {} counted, {leaves} fed",
                self.leaf_count
            ));
        }
        for (i, place) in self.places.iter().enumerate() {
            let h = HostId(i as u32);
            if place.inbound > self.window {
                return Err(format!("{h} has {} chunks in flight", place.inbound));
            }
            if place.draining && place.inbound == 0 {
                return Err(format!("{h} is draining with nothing in flight"));
            }
            if place.leaf {
                if place.next.is_some() {
                    return Err(format!("leaf {h} forwards to {:?}", place.next));
                }
                match place.prev {
                    Some(f) if view.is_failed(h) => {
                        return Err(format!("failed leaf {h} fed by {f}"))
                    }
                    Some(f) if view.is_failed(f) || self.places[f.index()].leaf => {
                        return Err(format!("leaf {h} is fed by failed or leaf host {f}"))
                    }
                    _ => {}
                }
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
