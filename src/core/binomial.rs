//! `binomial`: the binomial pipeline, k + ⌈log2(C+1)⌉ − 1 chunk times for any C.

use std::collections::VecDeque;

use super::circulant::CirculantSchedule;
use super::strategy::{Strategy, View};
use super::types::{ChunkRange, HostId};

/// How the strategy plans: the optimal schedule until a host is lost, then a simpler rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Following the round schedule.
    Schedule,
    /// A host was lost: the schedule relies on every host relaying, so from now on complete
    /// hosts serve incomplete ones, bounce-style.
    Greedy,
}

/// The binomial pipeline over k chunks: optimal for equal bandwidths, (1 + (L−1)/k)·T with
/// L = ⌈log2(C+1)⌉, i.e. k + L − 1 steps of one chunk time in which every host sends at most
/// one chunk and receives at most one chunk. With k = 1 it is bounce: L·T.
///
/// The round schedule is Träff's circulant schedule (see `circulant`), which is optimal for
/// every host count, not only powers of two. Drivers are asynchronous, so rounds are not a
/// barrier: each host works through its own receive rounds and send rounds in order, and the
/// hop of round t starts as soon as its sender holds the chunk, the sender has finished its
/// previous send and the receiver its previous receive. Every hop then starts no later than
/// its round (by induction over rounds), so at zero jitter the makespan is exactly the
/// schedule's, and with jitter the run still progresses hop by hop.
///
/// A failed hop is retried as planned. Once a host is lost the schedule is abandoned (other
/// hosts relied on it to relay): hosts that hold the whole file send each incomplete host its
/// first missing run of chunks, pairing the first free holder with the first waiting host, as
/// in `bounce`. That fallback doubles the holders per round, so the run ends with every live
/// receiver complete.
pub struct Binomial {
    receivers: u32,
    /// Built at the first call, when the chunk count is known.
    plan: Option<CirculantSchedule>,
    mode: Mode,
    /// Per host: the next round it sends in (`NONE` when done).
    send_at: Vec<u32>,
    /// Per host: the next round it receives in (`NONE` when done).
    recv_at: Vec<u32>,
    sending: Vec<bool>,
    receiving: Vec<bool>,
    /// Hosts whose next send may be able to start.
    ready: Vec<HostId>,
    /// Greedy mode: complete hosts free to send, and incomplete hosts free to receive; a host
    /// is queued at most once in each (`queued_*`).
    holders: VecDeque<HostId>,
    waiting: VecDeque<HostId>,
    queued_holder: Vec<bool>,
    queued_waiting: Vec<bool>,
}

const NONE: u32 = u32::MAX;

impl Binomial {
    /// The binomial pipeline for receivers `1..=receivers`.
    pub fn new(receivers: u32) -> Self {
        let n = receivers as usize + 1;
        Binomial {
            receivers,
            plan: None,
            mode: Mode::Schedule,
            send_at: vec![NONE; n],
            recv_at: vec![NONE; n],
            sending: vec![false; n],
            receiving: vec![false; n],
            ready: Vec::new(),
            holders: VecDeque::new(),
            waiting: VecDeque::new(),
            queued_holder: vec![false; n],
            queued_waiting: vec![false; n],
        }
    }

    fn ensure_plan(&mut self, view: &View<'_>) {
        if self.plan.is_some() || self.receivers == 0 {
            return;
        }
        let plan = CirculantSchedule::new(self.receivers + 1, view.layout.count());
        for h in 0..=self.receivers {
            self.send_at[h as usize] = plan.next_send(h, 0).unwrap_or(NONE);
            self.recv_at[h as usize] = plan.next_receive(h, 0).unwrap_or(NONE);
        }
        // Pushed in reverse so that hosts are tried in increasing order.
        self.ready = (0..=self.receivers).rev().map(HostId).collect();
        self.plan = Some(plan);
    }

    fn advance_send(&mut self, h: HostId) {
        let plan = self.plan.as_ref().expect("plan built");
        let t = self.send_at[h.index()];
        self.send_at[h.index()] = plan.next_send(h.0, t + 1).unwrap_or(NONE);
    }

    /// Moves `h` past its current receive and queues the sender of its next one.
    fn advance_recv(&mut self, h: HostId) {
        let plan = self.plan.as_ref().expect("plan built");
        let t = self.recv_at[h.index()];
        let next = plan.next_receive(h.0, t + 1).unwrap_or(NONE);
        self.recv_at[h.index()] = next;
        if next != NONE {
            self.ready.push(HostId(plan.sender(h.0, next)));
        }
    }

    /// The scheduled hop of `from`'s next send, if it can start now.
    fn try_scheduled(
        &mut self,
        view: &View<'_>,
        from: HostId,
    ) -> Option<(HostId, HostId, ChunkRange)> {
        loop {
            let t = self.send_at[from.index()];
            if t == NONE || self.sending[from.index()] {
                return None;
            }
            let plan = self.plan.as_ref().expect("plan built");
            let to = HostId(plan.receiver(from.0, t));
            if self.recv_at[to.index()] != t || self.receiving[to.index()] {
                // `to` is still behind; its previous hop's end will queue `from` again.
                return None;
            }
            let chunk = plan
                .block(to.0, t)
                .expect("a planned round carries a chunk");
            if view.holdings.has(to, chunk) {
                // Already there (a resumed run): the hop is done without moving a byte.
                self.advance_send(from);
                self.advance_recv(to);
                self.ready.push(to);
                continue;
            }
            if !view.holdings.has(from, chunk) {
                // `from` gets it in an earlier round; that hop's end queues `from` again.
                return None;
            }
            self.sending[from.index()] = true;
            self.receiving[to.index()] = true;
            return Some((from, to, ChunkRange::single(chunk)));
        }
    }

    fn enter_greedy(&mut self, view: &View<'_>) {
        if self.mode == Mode::Greedy {
            return;
        }
        self.mode = Mode::Greedy;
        self.ready.clear();
        for h in 0..=self.receivers {
            self.requeue(view, HostId(h));
        }
    }

    /// Queues `h` as a free holder or a free waiting host, whichever it is.
    fn requeue(&mut self, view: &View<'_>, h: HostId) {
        let i = h.index();
        if view.is_failed(h) {
            return;
        }
        if view.holdings.is_complete(h) {
            if !self.sending[i] && !self.queued_holder[i] {
                self.queued_holder[i] = true;
                self.holders.push_back(h);
            }
        } else if !self.receiving[i] && !self.queued_waiting[i] {
            self.queued_waiting[i] = true;
            self.waiting.push_back(h);
        }
    }

    fn next_greedy(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        let to = loop {
            let h = self.waiting.pop_front()?;
            self.queued_waiting[h.index()] = false;
            if !view.is_failed(h) && !self.receiving[h.index()] && !view.holdings.is_complete(h) {
                break h;
            }
        };
        let from = loop {
            let Some(h) = self.holders.pop_front() else {
                self.queued_waiting[to.index()] = true;
                self.waiting.push_front(to);
                return None;
            };
            self.queued_holder[h.index()] = false;
            if !view.is_failed(h) && !self.sending[h.index()] {
                break h;
            }
        };
        let k = view.layout.count();
        let start = (0..k)
            .find(|&c| !view.holdings.has(to, c))
            .expect("an incomplete host lacks a chunk");
        let end = (start..k).find(|&c| view.holdings.has(to, c)).unwrap_or(k);
        self.sending[from.index()] = true;
        self.receiving[to.index()] = true;
        Some((from, to, ChunkRange { start, end }))
    }
}

impl Strategy for Binomial {
    fn name(&self) -> &'static str {
        "binomial"
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        self.ensure_plan(view);
        if self.mode == Mode::Greedy {
            return self.next_greedy(view);
        }
        while let Some(h) = self.ready.pop() {
            if let Some(hop) = self.try_scheduled(view, h) {
                return Some(hop);
            }
        }
        None
    }

    fn finished(&mut self, view: &View<'_>, from: HostId, to: HostId, _c: ChunkRange, ok: bool) {
        self.ensure_plan(view);
        self.sending[from.index()] = false;
        self.receiving[to.index()] = false;
        match self.mode {
            Mode::Schedule => {
                if ok {
                    self.advance_send(from);
                    self.advance_recv(to);
                }
                // On failure the same hop is retried: nothing advances.
                self.ready.push(to);
                self.ready.push(from);
            }
            Mode::Greedy => {
                self.requeue(view, from);
                self.requeue(view, to);
            }
        }
    }

    fn host_lost(&mut self, view: &View<'_>, _host: HostId) {
        self.ensure_plan(view);
        self.enter_greedy(view);
    }

    fn check_invariants(&self, view: &View<'_>) -> Result<(), String> {
        let hosts = self.receivers as usize + 1;
        let any_failed = (0..hosts).any(|i| view.is_failed(HostId(i as u32)));
        if any_failed && self.mode == Mode::Schedule {
            return Err("a host was lost but the schedule is still followed".into());
        }
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        match self.mode {
            Mode::Schedule => {
                for r in 1..hosts as u32 {
                    let h = HostId(r);
                    let upto = self.recv_at[h.index()].min(plan.rounds());
                    if self.receiving[h.index()] && self.recv_at[h.index()] == NONE {
                        return Err(format!("{h} receives with no receive round left"));
                    }
                    for t in 0..upto {
                        if let Some(c) = plan.block(r, t) {
                            if !view.holdings.has(h, c) {
                                return Err(format!("{h} is past round {t} but lacks chunk {c}"));
                            }
                        }
                    }
                }
            }
            Mode::Greedy => {
                for (queue, flags, name) in [
                    (&self.holders, &self.queued_holder, "holders"),
                    (&self.waiting, &self.queued_waiting, "waiting"),
                ] {
                    let mut seen = vec![0u32; hosts];
                    for h in queue {
                        seen[h.index()] += 1;
                    }
                    for i in 0..hosts {
                        if seen[i] != u32::from(flags[i]) {
                            return Err(format!(
                                "h{i} is queued {} times in {name}, flag {}",
                                seen[i], flags[i]
                            ));
                        }
                    }
                }
                for h in &self.holders {
                    if !view.is_failed(*h) && !view.holdings.is_complete(*h) {
                        return Err(format!("{h} is a holder without the whole file"));
                    }
                }
            }
        }
        Ok(())
    }
}
