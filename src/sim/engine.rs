//! The next-event loop: runs one strategy once over the network model.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::network::{FlowId, Network};
use super::topology::{NetworkSpec, Topology};
use crate::core::{
    Event, HopError, HostId, Layout, LayoutError, Scheduler, SchedulerConfig, Straggler, Strategy,
    StrategyKind, StrategyParams, Transfer, WithStrategy,
};

/// One simulated distribution: a file of `size` bytes from the source to `receivers` hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Number of receivers, C (the source is not counted).
    pub receivers: u32,
    /// File size S in bytes.
    pub size: u64,
    /// Chunk size in bytes, for the strategies that cut the file.
    pub chunk: u64,
    /// Upload and download capacity B of every host, in bytes per second.
    pub bandwidth: f64,
    /// Setup delay of a connection between two hosts (an ssh session, say): the first
    /// transfer between them waits this long before its bytes flow. Connections then stay
    /// open and carry their transfers one at a time, first in, first out.
    pub latency: Duration,
    /// Fixed cost α of every transfer, on top of its bytes (a process start, a request's
    /// round trip); transfers on one connection pay it one after another.
    pub chunk_overhead: Duration,
    /// The source's own cost per receiver of connecting and probing, paid one receiver after
    /// another (the controller's handshakes share its CPU): receiver i is ready
    /// i·join_interval after the start. A strategy that takes late joiners (linear, bounce,
    /// chain) plans for each receiver as it becomes ready, as `bounce-run` does, and a
    /// chain adds each at its tail; any other starts once the last is ready. Zero: every
    /// receiver is ready at the start.
    pub join_interval: Duration,
    /// Jitter F in [0, 1): each flow's rate is its fair share times a factor drawn uniformly
    /// from [1−F, 1+F].
    pub jitter: f64,
    /// Seed of the jitter's ChaCha8 generator, of the network's random parts and of the
    /// strategy's own generator.
    pub seed: u64,
    /// Capacities other than B, and racks; the default is the uniform network.
    pub network: NetworkSpec,
    /// Hosts that die during the run, and when: every transfer to or from one ends there,
    /// and the strategy goes on without it (a chain feeds the host after it from the one
    /// before, from the first chunk it lacks). A failure naming a host beyond `receivers`
    /// is ignored.
    pub failures: Vec<Failure>,
    /// When a chain cuts a slow host out, and probes its source (see [`Straggler`]): by
    /// default the rule `bounce-run` uses, so that the simulator predicts it. `None` never
    /// does, which gives a chain's closed forms on a uniform network (a probe shares the
    /// source's link for a moment).
    pub straggler: Option<Straggler>,
}

/// A receiver that dies during a simulated run (see [`SimConfig::failures`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Failure {
    /// The receiver, 1..=C.
    pub host: u32,
    /// When it dies, from the start of the run.
    pub at: Duration,
}

impl SimConfig {
    /// `receivers` receivers, a file of `size` bytes, links of `bandwidth` bytes per second;
    /// 64 MiB chunks, no latency, no jitter, seed 1.
    pub fn new(receivers: u32, size: u64, bandwidth: f64) -> Self {
        SimConfig {
            receivers,
            size,
            chunk: 64 << 20,
            bandwidth,
            latency: Duration::ZERO,
            chunk_overhead: Duration::ZERO,
            join_interval: Duration::ZERO,
            jitter: 0.0,
            seed: 1,
            network: NetworkSpec::default(),
            failures: Vec::new(),
            straggler: Some(Straggler::DEFAULT),
        }
    }

    /// T = S/B: one copy of the file over one link, in seconds.
    pub fn t(&self) -> f64 {
        self.size as f64 / self.bandwidth
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    /// No receivers.
    #[error("the number of receivers must be at least 1")]
    NoReceivers,
    /// Bandwidth zero, negative or not a number.
    #[error("bandwidth must be a positive number of bytes per second, got {0}")]
    Bandwidth(f64),
    /// Jitter outside [0, 1).
    #[error("jitter must be in [0, 1), got {0}")]
    Jitter(f64),
    /// The file cannot be cut as asked.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The strategy stopped planning with receivers still incomplete: a bug in the strategy.
    #[error("strategy {strategy} stalled with {open} receivers incomplete")]
    Stalled {
        /// The strategy.
        strategy: &'static str,
        /// Receivers neither complete nor failed.
        open: u32,
    },
}

/// What one simulation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct SimResult {
    /// When the last receiver completed, in seconds.
    pub makespan: f64,
    /// When each receiver completed (index 0, the source, is 0).
    pub host_done: Vec<f64>,
    /// Transfers started.
    pub transfers: u64,
    /// Bytes the source uploaded.
    pub source_bytes: u64,
    /// Chunks the file was cut into for this strategy.
    pub chunks: u32,
    /// The fluid lower bound on any schedule's makespan on this network, in seconds.
    pub lower_bound: f64,
    /// Hosts a chain cut out for being slow (see [`crate::core::Straggler`]).
    pub stragglers: u32,
    /// Probes of the source a chain ran (see [`crate::core::Straggler::probe`]).
    pub probes: u32,
}

/// What happens at a pending event, packed in a `u64` to keep heap entries small: the top bit
/// tells a [`What::Begin`] (index into the waiting transfers) from a [`What::Finish`] (flow
/// index in the high half, its version in the low half).
#[derive(Clone, Copy, Debug)]
enum What {
    /// The transfer's setup delay is over: its bytes start to flow.
    Begin(usize),
    /// A flow should finish now, if its version is still the one it had when scheduled.
    Finish(FlowId, u32),
}

const BEGIN: u64 = 1 << 63;

impl What {
    fn pack(self) -> u64 {
        match self {
            What::Begin(i) => BEGIN | i as u64,
            What::Finish(f, v) => (f.index() as u64) << 31 | u64::from(v & 0x7fff_ffff),
        }
    }

    fn unpack(x: u64, flow: impl Fn(usize) -> FlowId) -> What {
        if x & BEGIN != 0 {
            What::Begin((x & !BEGIN) as usize)
        } else {
            What::Finish(flow((x >> 31) as usize), (x & 0x7fff_ffff) as u32)
        }
    }
}

/// A pending event as one ordered key: the time's bits above the packed event. Virtual times
/// are never negative, and the bits of non-negative `f64`s sort as the numbers do, so the
/// min-heap pops the earliest event, equal times in the order of the packed event, with a
/// single integer comparison.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending(u128);

impl Pending {
    fn new(at: f64, what: u64) -> Self {
        debug_assert!(at >= 0.0, "virtual time runs forward from 0");
        Pending(u128::from(at.to_bits()) << 64 | u128::from(what))
    }

    fn at(self) -> f64 {
        f64::from_bits((self.0 >> 64) as u64)
    }

    fn what(self) -> u64 {
        self.0 as u64
    }
}

/// A connection from one host to another. It pays the setup latency once, when first used,
/// and then carries its transfers one at a time, first in, first out, as an ssh session
/// does. The links the strategy plans ahead are set up before their first transfer, from
/// the time both ends are ready (the start, or a late receiver's join), as `bounce-run`
/// does (rules 7 and 8 of the driver contract): from the source, one latency; between two
/// receivers two, since the runner first connects to the sender and then has it connect to
/// the receiver.
#[derive(Default)]
struct Edge {
    /// When it is (or will be) set up; `None` until first used.
    ready_at: Option<f64>,
    /// A transfer is moving bytes on it, or waiting for its setup.
    active: bool,
    queue: VecDeque<Transfer>,
}

/// The connections each host has opened, by receiver. A host talks to few others (one in a
/// chain, about log2(C) in the binomial pipeline, its neighbours in a swarm), so a short list
/// searched in place beats hashing; a transfer then keeps its connection's place in its
/// sender's list, so its end finds the connection without a search.
struct Edges(Vec<Vec<(u32, Edge)>>);

impl Edges {
    /// The place of the connection from `from` to `to` in `from`'s list, opened if new.
    fn find(&mut self, from: HostId, to: HostId) -> u32 {
        let out = &mut self.0[from.index()];
        match out.iter().position(|(r, _)| *r == to.0) {
            Some(i) => i as u32,
            None => {
                out.push((to.0, Edge::default()));
                (out.len() - 1) as u32
            }
        }
    }

    /// The connection at place `i` of `from`'s list.
    fn get(&mut self, from: HostId, i: u32) -> &mut Edge {
        &mut self.0[from.index()][i as usize].1
    }
}

/// No connection: whole-file transfers do not track them.
const NO_EDGE: u32 = u32::MAX;

/// A transfer on its way, with the place of the connection that carries it in its sender's
/// list (or [`NO_EDGE`]).
#[derive(Clone, Copy)]
struct Job {
    t: Transfer,
    edge: u32,
}

/// The loop is generic over the strategy so that each strategy gets its own copy, with the
/// strategy's calls inlined: the chunked strategies make tens of millions of them per sweep.
struct Loop<S: Strategy> {
    sched: Scheduler<S>,
    topology: Topology,
    net: Network,
    heap: BinaryHeap<Reverse<Pending>>,
    /// Transfers waiting out their setup delay; freed slots are reused.
    waiting: Vec<Option<Job>>,
    waiting_free: Vec<usize>,
    /// The job each flow carries, by flow index.
    flow_job: Vec<Option<Job>>,
    /// Connections between pairs of hosts, when the file has several chunks or the strategy
    /// plans links (otherwise no transfer reuses one in a simulation, which has no
    /// failures).
    edges: Option<Edges>,
    rng: ChaCha8Rng,
    jitter: f64,
    latency: f64,
    overhead: f64,
    /// Receivers still to join and when, earliest first (see [`SimConfig::join_interval`]).
    joins: VecDeque<(f64, HostId)>,
    /// Receivers still to die and when, earliest first (see [`SimConfig::failures`]).
    fails: VecDeque<(f64, HostId)>,
    /// When the run starts: the last receiver's ready time for a strategy that needs every
    /// receiver at the start, 0 otherwise.
    start: f64,
    result: SimResult,
}

impl<S: Strategy> Loop<S> {
    fn push(&mut self, at: f64, what: What) {
        self.heap.push(Reverse(Pending::new(at, what.pack())));
    }

    /// Settles the network after a batch of starts and ends at `now`, and schedules the new
    /// completion time of every flow whose rate changed.
    fn settle(&mut self, now: f64) {
        self.net.settle(now);
        for i in 0..self.net.changed().len() {
            let f = self.net.changed()[i];
            let at = self.net.finish_time(f);
            let v = self.net.version(f);
            self.push(at, What::Finish(f, v));
        }
    }

    /// The driver contract: after every input, drain transfers, then events. `d` is `now` as
    /// the core's `Duration`, converted once per instant by the caller.
    fn drain(&mut self, now: f64, d: Duration) {
        while let Some(t) = self.sched.poll_transfer(d) {
            self.result.transfers += 1;
            if t.from == HostId::SOURCE {
                self.result.source_bytes += t.bytes;
            }
            self.dispatch(now, t);
        }
        while let Some(e) = self.sched.poll_event() {
            match e {
                Event::HostComplete { host, .. } => {
                    self.result.host_done[host.index()] = now;
                    self.result.makespan = self.result.makespan.max(now);
                }
                Event::Straggler { .. } => self.result.stragglers += 1,
                Event::ProbeStarted { .. } => self.result.probes += 1,
                Event::ProbeEnded { .. } | Event::HostFailed { .. } => {}
            }
        }
    }

    /// Starts `t` now, after its connection's setup, or behind the transfers already on its
    /// connection.
    fn dispatch(&mut self, now: f64, t: Transfer) {
        let (setup, edge) = match self.edges.as_mut() {
            None => (self.latency, NO_EDGE),
            Some(edges) => {
                let i = edges.find(t.from, t.to);
                let e = edges.get(t.from, i);
                if e.active {
                    e.queue.push_back(t);
                    return;
                }
                e.active = true;
                let setup = match e.ready_at {
                    None => {
                        e.ready_at = Some(now + self.latency);
                        self.latency
                    }
                    Some(ready) => (ready - now).max(0.0),
                };
                (setup, i)
            }
        };
        let delay = setup + self.overhead;
        self.start_after(now, delay, Job { t, edge });
    }

    /// Starts `job`'s bytes `delay` seconds from `now`.
    fn start_after(&mut self, now: f64, delay: f64, job: Job) {
        if delay > 0.0 {
            let i = match self.waiting_free.pop() {
                Some(i) => i,
                None => {
                    self.waiting.push(None);
                    self.waiting.len() - 1
                }
            };
            self.waiting[i] = Some(job);
            self.push(now + delay, What::Begin(i));
        } else {
            self.begin(now, job);
        }
    }

    fn begin(&mut self, now: f64, job: Job) {
        let t = &job.t;
        let factor = if self.jitter > 0.0 {
            1.0 + self.jitter * (2.0 * self.rng.gen::<f64>() - 1.0)
        } else {
            1.0
        };
        let mut links = [0; 4];
        let n = self.topology.links(t.from.0, t.to.0, &mut links);
        let f = self.net.start(now, &links[..n], t.bytes as f64, factor);
        let slot = f.index();
        if self.flow_job.len() <= slot {
            self.flow_job.resize(slot + 1, None);
        }
        self.flow_job[slot] = Some(job);
    }

    /// Receiver `h` is ready at `at`: it joins, and the links planned ahead because of it
    /// are set up from now, as the runner sets them up once both ends have joined.
    fn join(&mut self, at: f64, h: HostId) {
        let d = duration(at);
        self.sched.handle_host_joined(d, h, false);
        self.set_up_planned_links(at);
        self.drain(at, d);
    }

    /// Sets up from `at` the links the strategy plans now that are not set up yet.
    fn set_up_planned_links(&mut self, at: f64) {
        let latency = self.latency;
        if let Some(edges) = self.edges.as_mut() {
            for (from, to) in self.sched.planned_links() {
                let i = edges.find(from, to);
                let e = edges.get(from, i);
                if e.ready_at.is_none() {
                    let hops = if from == HostId::SOURCE { 1.0 } else { 2.0 };
                    e.ready_at = Some(at + hops * latency);
                }
            }
        }
    }

    /// Receiver `h` dies at `at`: the core is told first (so that a receiver whose sender
    /// died is not charged), then every transfer to or from it ends there, failed: its
    /// flows, those still in their setup and those queued on its connections. The links
    /// planned past it are set up from now.
    fn fail(&mut self, at: f64, h: HostId) {
        let d = duration(at);
        self.sched.handle_host_down(d, h, "the host died");
        let involves = |t: &Transfer| t.from == h || t.to == h;
        let mut dead = Vec::new();
        for slot in 0..self.flow_job.len() {
            if self.flow_job[slot].is_some_and(|j| involves(&j.t)) {
                let job = self.flow_job[slot].take().expect("checked above");
                self.net.remove(FlowId::from_index(slot));
                dead.push(job.t);
            }
        }
        // A cancelled setup leaves its slot empty; its `Begin` frees it.
        for w in &mut self.waiting {
            if w.is_some_and(|j| involves(&j.t)) {
                dead.push(w.take().expect("checked above").t);
            }
        }
        if let Some(edges) = self.edges.as_mut() {
            for (from, out) in edges.0.iter_mut().enumerate() {
                for (to, e) in out.iter_mut() {
                    if from == h.index() || *to == h.0 {
                        dead.extend(e.queue.drain(..));
                        e.active = false;
                    }
                }
            }
        }
        for t in dead {
            self.sched
                .handle_done(d, t.id, Err(HopError::new("the host died")));
        }
        self.set_up_planned_links(at);
        self.drain(at, d);
    }

    fn run(mut self) -> Result<SimResult, SimError> {
        let start = self.start;
        self.drain(start, duration(start));
        self.settle(start);
        loop {
            // A join goes before the network's events at the same instant.
            let next_event = self.heap.peek().map(|Reverse(p)| p.at());
            if let Some(&(at, h)) = self.joins.front() {
                if next_event.is_none_or(|e| at <= e) {
                    self.joins.pop_front();
                    self.join(at, h);
                    self.settle(at);
                    continue;
                }
            }
            // So does a failure: what ends at the same instant as it dies is lost with it.
            if let Some(&(at, h)) = self.fails.front() {
                if next_event.is_none_or(|e| at <= e) && !self.sched.is_finished() {
                    self.fails.pop_front();
                    self.fail(at, h);
                    self.settle(at);
                    continue;
                }
            }
            // Events at the same virtual time form one batch: the scheduler sees them one by
            // one, as the driver contract asks, but the network settles once for all of them.
            let Some(Reverse(first)) = self.heap.pop() else {
                break;
            };
            let at = first.at();
            let d = duration(at);
            self.handle(at, d, first.what());
            while let Some(&Reverse(next)) = self.heap.peek() {
                if next.at() != at {
                    break;
                }
                self.heap.pop();
                self.handle(at, d, next.what());
            }
            self.settle(at);
        }
        if !self.sched.is_finished() {
            return Err(SimError::Stalled {
                strategy: self.sched.strategy_name(),
                open: self
                    .result
                    .host_done
                    .iter()
                    .skip(1)
                    .filter(|&&t| t.is_nan())
                    .count() as u32,
            });
        }
        Ok(self.result)
    }
}

impl<S: Strategy> Loop<S> {
    fn handle(&mut self, at: f64, d: Duration, what: u64) {
        match What::unpack(what, FlowId::from_index) {
            What::Begin(i) => {
                self.waiting_free.push(i);
                // Empty when its host died during the setup.
                if let Some(job) = self.waiting[i].take() {
                    self.begin(at, job);
                }
            }
            What::Finish(f, v) => {
                // Only the version's low 31 bits fit in the packed event.
                if self.net.version(f) & 0x7fff_ffff != v {
                    return;
                }
                let Some(job) = self.flow_job[f.index()].take() else {
                    return;
                };
                self.net.remove(f);
                if let Some(edges) = self.edges.as_mut().filter(|_| job.edge != NO_EDGE) {
                    let e = edges.get(job.t.from, job.edge);
                    let next = e.queue.pop_front();
                    e.active = next.is_some();
                    if let Some(t) = next {
                        self.start_after(at, self.overhead, Job { t, edge: job.edge });
                    }
                }
                self.sched.handle_done(d, job.t.id, Ok(()));
                self.drain(at, d);
            }
        }
    }
}

/// Virtual seconds as the core's `Duration`. The core only stamps events with it, so a plain
/// truncation to nanoseconds is enough, and much cheaper than `Duration::from_secs_f64`.
fn duration(secs: f64) -> Duration {
    Duration::from_nanos((secs * 1e9) as u64)
}

/// Simulates `kind` once under `cfg`.
pub fn simulate(kind: StrategyKind, cfg: &SimConfig) -> Result<SimResult, SimError> {
    if cfg.receivers == 0 {
        return Err(SimError::NoReceivers);
    }
    if !(cfg.bandwidth.is_finite() && cfg.bandwidth > 0.0) {
        return Err(SimError::Bandwidth(cfg.bandwidth));
    }
    if !(0.0..1.0).contains(&cfg.jitter) {
        return Err(SimError::Jitter(cfg.jitter));
    }
    let layout = kind.layout(cfg.size, cfg.chunk)?;
    let topology = cfg.network.build(cfg.receivers, cfg.bandwidth, cfg.seed);
    if let Some(bad) = topology
        .up
        .iter()
        .chain(&topology.down)
        .chain(&topology.rack_uplink)
        .find(|c| !(c.is_finite() && **c > 0.0))
    {
        return Err(SimError::Bandwidth(*bad));
    }
    let mut params = StrategyParams {
        chain_straggler: cfg.straggler,
        ..StrategyParams::new(cfg.receivers).with_seed(cfg.seed)
    };
    if !cfg.network.is_uniform() {
        let rack = (!topology.rack.is_empty()).then(|| topology.rack.as_slice().into());
        params = params.with_network(
            Some(topology.up.as_slice().into()),
            Some(topology.down.as_slice().into()),
            rack,
        );
    }
    kind.build_with(
        &params,
        Start {
            cfg,
            layout,
            topology,
        },
    )
}

/// What a run is built from once its inputs are checked; builds the loop for the strategy's
/// own type and runs it.
struct Start<'a> {
    cfg: &'a SimConfig,
    layout: Layout,
    topology: Topology,
}

impl WithStrategy for Start<'_> {
    type Output = Result<SimResult, SimError>;

    fn call<S: Strategy + 'static>(self, strategy: S) -> Self::Output {
        let Start {
            cfg,
            layout,
            topology,
        } = self;
        let hosts = cfg.receivers as usize + 1;
        let interval = cfg.join_interval.as_secs_f64();
        let late = interval > 0.0 && strategy.joins_late();
        let mut config = SchedulerConfig::new(cfg.receivers);
        let mut joins = VecDeque::new();
        let mut start = 0.0;
        if late {
            config.joining = (1..=cfg.receivers).map(HostId).collect();
            joins = (1..=cfg.receivers)
                .map(|i| (f64::from(i) * interval, HostId(i)))
                .collect();
        } else {
            start = f64::from(cfg.receivers) * interval;
        }
        let sched = Scheduler::new(Box::new(strategy), layout, config);
        let mut host_done = vec![f64::NAN; hosts];
        host_done[0] = 0.0;
        let latency = cfg.latency.as_secs_f64();
        // Connections are tracked when transfers may share them: several chunks, or links set
        // up ahead (a chain of a one-chunk file still sets its links up together), now or as
        // receivers join.
        let planned = sched.planned_links();
        let edges = (layout.count() > 1 || !planned.is_empty() || late).then(|| {
            let mut edges = Edges((0..hosts).map(|_| Vec::new()).collect());
            for (from, to) in planned {
                let i = edges.find(from, to);
                let hops = if from == HostId::SOURCE { 1.0 } else { 2.0 };
                edges.get(from, i).ready_at = Some(start + hops * latency);
            }
            edges
        });
        Loop {
            sched,
            net: topology.network(),
            heap: BinaryHeap::new(),
            waiting: Vec::new(),
            waiting_free: Vec::new(),
            flow_job: Vec::new(),
            edges,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            jitter: cfg.jitter,
            latency,
            overhead: cfg.chunk_overhead.as_secs_f64(),
            joins,
            fails: {
                let mut f: Vec<(f64, HostId)> = cfg
                    .failures
                    .iter()
                    .filter(|f| (1..=cfg.receivers).contains(&f.host))
                    .map(|f| (f.at.as_secs_f64(), HostId(f.host)))
                    .collect();
                f.sort_by(|a, b| a.0.total_cmp(&b.0));
                f.into()
            },
            start,
            result: SimResult {
                makespan: 0.0,
                host_done,
                transfers: 0,
                source_bytes: 0,
                chunks: layout.count(),
                lower_bound: topology.lower_bound(cfg.size),
                stragglers: 0,
                probes: 0,
            },
            topology,
        }
        .run()
    }
}
