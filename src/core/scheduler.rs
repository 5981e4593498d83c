//! The scheduler: wraps a strategy with the bookkeeping every strategy shares.

use std::collections::VecDeque;
use std::time::Duration;

use super::holdings::Holdings;
use super::layout::Layout;
use super::strategy::{ProbeStep, Strategy, View};
use super::types::{ChunkRange, Event, HopError, HostId, Transfer, TransferId};

/// The strategy's view of a scheduler's state. A macro rather than a method, so that the
/// strategy (another field) can be borrowed mutably beside it.
macro_rules! view {
    ($s:expr) => {
        View {
            layout: &$s.layout,
            holdings: &$s.holdings,
            failed: &$s.failed,
            joining: &$s.joining,
            now: $s.now,
        }
    };
}

/// Settings of a [`Scheduler`] that do not depend on the strategy.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Number of receivers, C. Hosts are `0..=receivers`, host 0 being the source.
    pub receivers: u32,
    /// How many failed hops a receiver may suffer before it is given up.
    pub max_attempts: u32,
    /// Receivers that already hold the whole file (a resumed run): they start as holders and
    /// emit no [`Event::HostComplete`].
    pub already_complete: Vec<HostId>,
    /// Receivers not ready yet (the runner is still connecting to them): nothing is planned
    /// to or from them until [`Scheduler::handle_host_joined`] reports them ready, or
    /// [`Scheduler::handle_host_down`] gives them up. Only for a strategy whose
    /// [`Strategy::joins_late`] is true.
    pub joining: Vec<HostId>,
}

impl SchedulerConfig {
    /// `receivers` receivers, 3 attempts each, nobody complete yet.
    pub fn new(receivers: u32) -> Self {
        SchedulerConfig {
            receivers,
            max_attempts: 3,
            already_complete: Vec::new(),
            joining: Vec::new(),
        }
    }
}

/// What a free transfer slot holds: no id the scheduler hands out is all ones, since that
/// would need 2³² transfers in flight at once.
const EMPTY: Transfer = Transfer {
    id: TransferId(u64::MAX),
    from: HostId(0),
    to: HostId(0),
    chunks: ChunkRange { start: 0, end: 0 },
    bytes: 0,
};

/// A transfer in flight and `Scheduler::started` when it started, kept together since both
/// are read when it ends.
#[derive(Clone, Copy)]
struct Slot {
    t: Transfer,
    seq: u64,
}

/// Drives one strategy through one distribution. See the module docs of [`crate::core`] for
/// the driver contract.
///
/// The strategy is usually chosen at run time (`Scheduler<dyn Strategy>`, the default); a
/// driver that knows its type (the simulator, through [`crate::core::StrategyKind::build_with`])
/// names it, so that the strategy's calls are direct and inlined into the scheduler's.
pub struct Scheduler<S: Strategy + ?Sized = dyn Strategy> {
    strategy: Box<S>,
    layout: Layout,
    holdings: Holdings,
    failed: Vec<bool>,
    /// Receivers not ready yet (see [`SchedulerConfig::joining`]).
    joining: Vec<bool>,
    attempts: Vec<u32>,
    max_attempts: u32,
    /// Transfers started so far; a slot's `seq` is the count when its transfer started.
    started: u64,
    /// `started` when each host last failed: failures of transfers already in flight then
    /// (a window of chunks on a link that died) are one attempt, not several.
    failed_at: Vec<u64>,
    /// `started` when each host's copy was last found corrupt: transfers already in flight
    /// then bring it nothing.
    reset_at: Vec<u64>,
    /// Transfers in flight, by slot: the low 32 bits of a [`TransferId`] name the slot, the
    /// high 32 bits a generation, so a slot can be reused without confusing late reports.
    /// A free slot's transfer is [`EMPTY`]; slots hold plain `Transfer`s rather than
    /// `Option`s so that they can be filled field by field in place.
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    in_flight: usize,
    generation: u32,
    events: VecDeque<Event>,
    /// Receivers neither complete nor failed.
    open: u32,
    /// The time of the latest input (see [`View::now`]).
    now: Duration,
    /// Counts the changes that may have changed the planned links (see
    /// [`Scheduler::links_version`]).
    links_version: u64,
}

impl<S: Strategy + ?Sized> Scheduler<S> {
    /// A scheduler for `strategy` over a file cut by `layout`.
    ///
    /// # Panics
    ///
    /// Panics if `config` names a host that is not a receiver, or names joining receivers for
    /// a strategy that cannot take them (see [`Strategy::joins_late`]).
    pub fn new(strategy: Box<S>, layout: Layout, config: SchedulerConfig) -> Self {
        let hosts = config.receivers as usize + 1;
        let mut holdings = Holdings::new(hosts, layout.count());
        holdings.fill(HostId::SOURCE);
        let mut open = config.receivers;
        for &h in &config.already_complete {
            assert!(
                h != HostId::SOURCE && h.index() < hosts,
                "already_complete names {h}, which is not a receiver"
            );
            if !holdings.is_complete(h) {
                holdings.fill(h);
                open -= 1;
            }
        }
        let failed = vec![false; hosts];
        let mut joining = vec![false; hosts];
        assert!(
            config.joining.is_empty() || strategy.joins_late(),
            "{} cannot start before every receiver is ready",
            strategy.name()
        );
        for &h in &config.joining {
            assert!(
                h != HostId::SOURCE && h.index() < hosts && !holdings.is_complete(h),
                "joining names {h}, which is not a receiver still to be served"
            );
            joining[h.index()] = true;
        }
        let mut strategy = strategy;
        strategy.start(&View {
            layout: &layout,
            holdings: &holdings,
            failed: &failed,
            joining: &joining,
            now: Duration::ZERO,
        });
        Scheduler {
            strategy,
            layout,
            holdings,
            failed,
            joining,
            attempts: vec![0; hosts],
            max_attempts: config.max_attempts.max(1),
            started: 0,
            failed_at: vec![0; hosts],
            reset_at: vec![0; hosts],
            slots: Vec::new(),
            free_slots: Vec::new(),
            in_flight: 0,
            generation: 0,
            events: VecDeque::new(),
            open,
            now: Duration::ZERO,
            links_version: 0,
        }
    }

    /// The strategy's name.
    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    /// How the file is cut.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Which chunks every host holds.
    pub fn holdings(&self) -> &Holdings {
        &self.holdings
    }

    /// True once `host` has been given up.
    pub fn is_failed(&self, host: HostId) -> bool {
        self.failed[host.index()]
    }

    /// The links the strategy expects to use for much of the run, as planned now (see
    /// [`crate::core::Strategy::planned_links`]): a driver may set them up ahead of time.
    pub fn planned_links(&self) -> Vec<(HostId, HostId)> {
        self.strategy.planned_links(&view!(self))
    }

    /// True if the strategy feeds a host whose copy was found corrupt again
    /// ([`Scheduler::handle_corrupt`]) instead of giving it up.
    pub fn resets(&self) -> bool {
        self.strategy.resets()
    }

    /// Changes whenever [`Scheduler::planned_links`] may have changed: a receiver joined, a
    /// host was lost, a straggler was cut out, a probe of the source started or ended, a
    /// corrupt host is fed again (rule 7 of the driver contract).
    pub fn links_version(&self) -> u64 {
        self.links_version
    }

    /// Number of transfers started and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The next transfer to start, or `None` when nothing can start until an input arrives.
    ///
    /// # Panics
    ///
    /// Panics if the strategy plans a hop whose sender lacks a chunk or that involves a failed
    /// host: that is a bug in the strategy, and running on would corrupt the distribution.
    pub fn poll_transfer(&mut self, now: Duration) -> Option<Transfer> {
        self.now = now;
        let view = view!(self);
        let (from, to, chunks) = self.strategy.next(&view)?;
        assert!(
            !chunks.is_empty() && chunks.end <= self.layout.count(),
            "{} planned an empty or out-of-range chunk range {chunks:?}",
            self.strategy.name()
        );
        assert!(
            self.holdings.has_all(from, chunks),
            "{} planned {from} -> {to} for chunks {chunks:?} that {from} does not hold",
            self.strategy.name()
        );
        assert!(
            !self.failed[from.index()] && !self.failed[to.index()] && from != to,
            "{} planned {from} -> {to} with a failed or identical host",
            self.strategy.name()
        );
        assert!(
            !self.joining[from.index()] && !self.joining[to.index()],
            "{} planned {from} -> {to} with a host still joining",
            self.strategy.name()
        );
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { t: EMPTY, seq: 0 });
                (self.slots.len() - 1) as u32
            }
        };
        self.generation = self.generation.wrapping_add(1);
        let id = TransferId(u64::from(self.generation) << 32 | u64::from(slot));
        let bytes = self.layout.bytes(chunks.start, chunks.end);
        // Filled in place from the same values that build the returned copy: copying one
        // `Transfer` into the other reads back bytes just written field by field, and that
        // store-to-load forwarding stall cost a tenth of this function.
        self.started += 1;
        let s = &mut self.slots[slot as usize];
        s.t.id = id;
        s.t.from = from;
        s.t.to = to;
        s.t.chunks = chunks;
        s.t.bytes = bytes;
        s.seq = self.started;
        self.in_flight += 1;
        Some(Transfer {
            id,
            from,
            to,
            chunks,
            bytes,
        })
    }

    /// The next event, or `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Reports the end of transfer `id`: `Ok(())` when the receiver now holds its chunks.
    /// An unknown or already reported id is ignored.
    pub fn handle_done(&mut self, now: Duration, id: TransferId, result: Result<(), HopError>) {
        let slot = (id.0 & u64::from(u32::MAX)) as usize;
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.t.id == id && id != EMPTY.id)
        else {
            return;
        };
        let (t, seq) = (s.t, s.seq);
        s.t.id = EMPTY.id;
        self.now = now;
        self.free_slots.push(slot as u32);
        self.in_flight -= 1;
        let receiver_gone = self.failed[t.to.index()];
        let ok = result.is_ok() && !receiver_gone && seq > self.reset_at[t.to.index()];
        if ok {
            let was_complete = self.holdings.is_complete(t.to);
            self.holdings.add(t.to, t.chunks);
            if !was_complete && self.holdings.is_complete(t.to) {
                self.open -= 1;
                self.events.push_back(Event::HostComplete {
                    host: t.to,
                    at: now,
                });
            }
        }
        let view = view!(self);
        self.strategy.finished(&view, t.from, t.to, t.chunks, ok);
        self.take_spliced(now);
        if let Err(e) = result {
            // A failed duplicate to a host that is complete by now costs it nothing, and
            // neither does a transfer that was already in flight when the host last failed,
            // nor one whose sender was lost (the driver reports that first): the receiver is
            // not to blame.
            let to = t.to.index();
            let new_attempt = seq > self.failed_at[to];
            let sender_gone = t.from != HostId::SOURCE && self.failed[t.from.index()];
            if !receiver_gone && !sender_gone && !self.holdings.is_complete(t.to) && new_attempt {
                self.failed_at[to] = self.started;
                self.attempts[t.to.index()] += 1;
                if self.attempts[t.to.index()] >= self.max_attempts {
                    self.give_up(now, t.to, e.reason);
                }
            }
        }
    }

    /// Reports that the stream feeding `host` has brought its copy to `bytes` bytes, before
    /// the transfers that carry them end: a driver that streams a link's chunks and learns
    /// how far each receiver has got (the runner's chain, from each receiver's progress
    /// lines) reports it, so that a rate is measured in bytes rather than in whole chunks,
    /// and a slow host is found within a fraction of a chunk's time. It changes no holdings:
    /// the chunks still count only once their transfers are reported done. Optional; a
    /// host given up or complete, or the source, is ignored.
    pub fn handle_progress(&mut self, now: Duration, host: HostId, bytes: u64) {
        let i = host.index();
        if host == HostId::SOURCE
            || i >= self.failed.len()
            || self.failed[i]
            || self.holdings.is_complete(host)
        {
            return;
        }
        self.now = now;
        let view = view!(self);
        self.strategy.progress(&view, host, bytes);
        self.take_spliced(now);
    }

    /// Turns the strategy's probe steps and cut-out stragglers into events.
    fn take_spliced(&mut self, now: Duration) {
        while let Some(step) = self.strategy.poll_probe() {
            let event = match step {
                ProbeStep::Started {
                    head,
                    host,
                    head_rate,
                } => {
                    // Its transfers in flight now come from a feeder it no longer has: when
                    // those fail, it is not to blame.
                    self.failed_at[host.index()] = self.started;
                    Event::ProbeStarted {
                        head,
                        host,
                        head_rate,
                        at: now,
                    }
                }
                ProbeStep::Ended {
                    head,
                    host,
                    head_rate,
                    host_rate,
                    verdict,
                } => {
                    self.failed_at[host.index()] = self.started;
                    Event::ProbeEnded {
                        head,
                        host,
                        head_rate,
                        host_rate,
                        verdict,
                        at: now,
                    }
                }
            };
            self.links_version += 1;
            self.events.push_back(event);
        }
        while let Some(h) = self.strategy.poll_relinked() {
            self.failed_at[h.index()] = self.started;
            self.links_version += 1;
        }
        while let Some(sp) = self.strategy.poll_spliced() {
            // Their transfers in flight now come from a feeder they no longer have: when those
            // fail, neither is to blame.
            self.failed_at[sp.host.index()] = self.started;
            if let Some(s) = sp.successor {
                self.failed_at[s.index()] = self.started;
            }
            self.links_version += 1;
            self.events.push_back(Event::Straggler {
                host: sp.host,
                feeder: sp.feeder,
                rate: sp.rate,
                reference: sp.reference,
                stalled: sp.stalled,
                at: now,
            });
        }
    }

    /// Reports that `host`, named in [`SchedulerConfig::joining`], is ready; `complete` when
    /// it turned out to hold the whole file already (a resumed run): it then serves as a
    /// holder and emits no [`Event::HostComplete`], as [`SchedulerConfig::already_complete`]
    /// hosts do. A host not joining (already reported, or given up) is ignored.
    pub fn handle_host_joined(&mut self, now: Duration, host: HostId, complete: bool) {
        self.now = now;
        let i = host.index();
        if i >= self.joining.len() || !self.joining[i] || self.failed[i] {
            return;
        }
        self.joining[i] = false;
        self.links_version += 1;
        if complete {
            self.holdings.fill(host);
            self.open -= 1;
        }
        let view = view!(self);
        self.strategy.host_joined(&view, host);
    }

    /// Reports that `host` is gone for good (a dead link, a full disk): it is given up at once.
    /// Transfers in flight that involve it must still be reported with
    /// [`Scheduler::handle_done`]. The source cannot be given up; calling this for it, or for
    /// a host already given up or complete, does nothing.
    pub fn handle_host_down(&mut self, now: Duration, host: HostId, reason: impl Into<String>) {
        self.now = now;
        if host == HostId::SOURCE || self.failed[host.index()] {
            return;
        }
        if self.holdings.is_complete(host) {
            // A complete host still counts as done for the user, but must not send any more.
            self.failed[host.index()] = true;
            self.links_version += 1;
            let view = view!(self);
            self.strategy.host_lost(&view, host);
            return;
        }
        self.give_up(now, host, reason.into());
    }

    /// Reports that `host`'s copy is corrupt although every transfer to it succeeded: the
    /// bytes it received were not the source's (a sender's copy changed on disk after it was
    /// checked), or its own copy changed. It holds nothing from now on and counts one
    /// failed attempt; a strategy that [`Strategy::resets`] feeds it again from the start
    /// ([`Scheduler::links_version`] changes), any other gives it up, as do exhausted
    /// attempts. A host already complete is open again: it emits
    /// [`Event::HostComplete`] once more when it is. Transfers in flight to it must still
    /// be reported; they no longer count. The source, or a host given up, is ignored.
    pub fn handle_corrupt(&mut self, now: Duration, host: HostId, reason: impl Into<String>) {
        self.now = now;
        let i = host.index();
        if host == HostId::SOURCE || self.failed[i] {
            return;
        }
        if self.holdings.is_complete(host) {
            self.open += 1;
        }
        self.holdings.clear(host);
        self.failed_at[i] = self.started;
        self.reset_at[i] = self.started;
        self.attempts[i] += 1;
        if self.attempts[i] >= self.max_attempts || !self.strategy.resets() {
            self.give_up(now, host, reason.into());
            return;
        }
        self.links_version += 1;
        let view = view!(self);
        self.strategy.host_reset(&view, host);
    }

    fn give_up(&mut self, now: Duration, host: HostId, reason: String) {
        self.failed[host.index()] = true;
        self.links_version += 1;
        self.open -= 1;
        let view = view!(self);
        self.strategy.host_lost(&view, host);
        self.events.push_back(Event::HostFailed {
            host,
            at: now,
            reason,
        });
    }

    /// True when every receiver is complete or failed and no transfer is in flight.
    pub fn is_finished(&self) -> bool {
        self.open == 0 && self.in_flight == 0
    }

    /// Checks the strategy's invariants (for tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        let view = view!(self);
        self.strategy.check_invariants(&view)
    }
}
