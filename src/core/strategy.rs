//! The trait every distribution strategy implements, and the names users pick them by.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::holdings::Holdings;
use super::layout::{Layout, LayoutError};
use super::swarm::SwarmParams;
use super::types::{ChunkRange, HostId};
use super::{Binomial, Bounce, BounceFast, Chain, Linear, Rack, Straggler, Swarm};

/// What a strategy may look at when it plans: read-only state kept by the
/// [`crate::core::Scheduler`].
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// How the file is cut.
    pub layout: &'a Layout,
    /// Which chunks each host holds.
    pub holdings: &'a Holdings,
    /// `failed[h]` is true once host `h` has been given up.
    pub failed: &'a [bool],
    /// `joining[h]` is true while receiver `h` is still being connected (see
    /// [`crate::core::SchedulerConfig::joining`]): nothing may be planned to or from it.
    pub joining: &'a [bool],
    /// The time of the input being handled, on the driver's clock (see the driver contract):
    /// lets a strategy measure rates.
    pub now: Duration,
}

impl View<'_> {
    /// Number of receivers, C.
    pub fn receivers(&self) -> u32 {
        (self.failed.len() - 1) as u32
    }

    /// True once `host` has been given up.
    pub fn is_failed(&self, host: HostId) -> bool {
        self.failed[host.index()]
    }

    /// True while `host` is still joining: not ready for any hop yet.
    pub fn is_joining(&self, host: HostId) -> bool {
        self.joining[host.index()]
    }
}

/// A straggler cut out of a pipeline: see [`Strategy::poll_spliced`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spliced {
    /// The slow host.
    pub host: HostId,
    /// The host that feeds it from now on.
    pub feeder: HostId,
    /// The host that followed it, fed past it from now on (by its old feeder); `None` for
    /// a host that followed none (the last, or a host fed alongside the chain's head to
    /// probe the source, see [`crate::core::Straggler::probe`]).
    pub successor: Option<HostId>,
    /// Its rate over its current feed, in bytes per second.
    pub rate: f64,
    /// Its old feeder's rate, in bytes per second.
    pub reference: f64,
    /// It was cut out for receiving nothing at all while its feeder went on (see
    /// [`crate::core::Straggler::stall`]), rather than for its rate.
    pub stalled: bool,
}

/// A step of a chain's probe of its source (see [`crate::core::Straggler::probe`]): see
/// [`Strategy::poll_probe`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProbeStep {
    /// `host`, taken off the chain's tail, is fed by the source alongside the chain's first
    /// host `head`, which received at `head_rate` bytes per second so far. Transfers still in
    /// flight to `host` come from a feeder it no longer has.
    Started {
        /// The chain's first host.
        head: HostId,
        /// The host fed alongside it.
        host: HostId,
        /// `head`'s rate before the probe, in bytes per second.
        head_rate: f64,
    },
    /// The probe is over: over the same span, `head` received at `head_rate` and `host` at
    /// `host_rate` bytes per second. A host slower than the other by the rule is cut out
    /// (a [`Spliced`] follows); otherwise `host` goes back to the chain's tail, and its
    /// transfers still in flight come from a feeder it no longer has.
    Ended {
        /// The chain's first host.
        head: HostId,
        /// The host that was fed alongside it.
        host: HostId,
        /// `head`'s rate over the probe, in bytes per second.
        head_rate: f64,
        /// `host`'s rate over the probe, in bytes per second.
        host_rate: f64,
        /// What the probe found.
        verdict: ProbeVerdict,
    },
}

/// What a probe of the source found (see [`crate::core::Straggler::probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// The chain's first host receives at less than the rule's ratio of the other: it is
    /// cut out, and the other takes its place.
    FirstSlow,
    /// The other host receives at less than the rule's ratio of the first: it is left fed at
    /// its own pace.
    OtherSlow,
    /// Neither is slow: the source's own link limits the chain, and the other goes back to
    /// its tail.
    SourceBound,
}

/// A distribution strategy: decides which hop to start next.
///
/// The [`crate::core::Scheduler`] wraps a strategy, assigns ids, records holdings, counts
/// attempts and emits events; the strategy only plans. It must never plan a hop whose sender
/// lacks one of the chunks, nor a hop that involves a failed host.
pub trait Strategy: Send {
    /// The name users select the strategy by.
    fn name(&self) -> &'static str;

    /// Called once, before the first [`Strategy::next`], with the holdings the run starts
    /// from: receivers of a resumed run that already hold the file are complete in
    /// `view.holdings` and can serve as senders at once.
    fn start(&mut self, _view: &View<'_>) {}

    /// The next hop to start now as `(from, to, chunks)`, or `None` when nothing can start
    /// until some hop ends. Called repeatedly until it returns `None`.
    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)>;

    /// A hop returned by [`Strategy::next`] ended. When `ok` is true the scheduler has already
    /// recorded the chunks at `to`. `from` or `to` may have failed meanwhile.
    fn finished(&mut self, view: &View<'_>, from: HostId, to: HostId, chunks: ChunkRange, ok: bool);

    /// `host` was given up: never plan a hop to or from it again.
    fn host_lost(&mut self, view: &View<'_>, host: HostId);

    /// The stream feeding `host` has brought its copy to `bytes` bytes, between the ends of
    /// the transfers that carry them (see [`crate::core::Scheduler::handle_progress`]). Only
    /// a strategy that measures rates uses it; the default ignores it.
    fn progress(&mut self, _view: &View<'_>, _host: HostId, _bytes: u64) {}

    /// True if this strategy can start before every receiver is ready: receivers still
    /// joining are left out of its plan (see [`View::is_joining`]) until
    /// [`Strategy::host_joined`] brings them in. The default is false, and a scheduler for
    /// such a strategy refuses joining receivers.
    fn joins_late(&self) -> bool {
        false
    }

    /// `host`, which was joining, is ready: plan for it from now on. When
    /// `view.holdings.is_complete(host)` it already holds the file and may serve at once.
    /// Called only on strategies whose [`Strategy::joins_late`] is true.
    fn host_joined(&mut self, _view: &View<'_>, _host: HostId) {}

    /// The links `(from, to)` this strategy already knows it will use for a long stretch of
    /// the run, so that a driver whose connections are slow to set up (ssh between hosts) can
    /// open them all at once before their first transfer, instead of one after another as the
    /// data reaches each. A hint only, for the links as planned now (a receiver that joins
    /// later may add some); the default is none.
    fn planned_links(&self, _view: &View<'_>) -> Vec<(HostId, HostId)> {
        Vec::new()
    }

    /// True if this strategy can feed a host again from the start after its copy turned out
    /// to be corrupt ([`Strategy::host_reset`]). The default is false: the scheduler then
    /// gives such a host up.
    fn resets(&self) -> bool {
        false
    }

    /// `host`'s copy turned out to be corrupt: it holds nothing now (`view.holdings` says
    /// so) and is to be fed again from its first chunk, by a sender that holds good chunks.
    /// Called only on strategies whose [`Strategy::resets`] is true.
    fn host_reset(&mut self, _view: &View<'_>, _host: HostId) {}

    /// A host the strategy has just cut out of its pipeline for being slow (see
    /// [`crate::core::Straggler`]), drained by the scheduler after every input. The default
    /// never cuts one.
    fn poll_spliced(&mut self) -> Option<Spliced> {
        None
    }

    /// A step of the strategy's probe of its source (see
    /// [`crate::core::Straggler::probe`]), drained by the scheduler after every input,
    /// before [`Strategy::poll_spliced`]. The default never probes.
    fn poll_probe(&mut self) -> Option<ProbeStep> {
        None
    }

    /// A host the strategy feeds from another sender from now on, besides the hosts a
    /// [`Spliced`] or a [`ProbeStep`] names (a leaf moved to another feeder with the host
    /// that fed it), drained by the scheduler after every input. Its transfers still in
    /// flight come from a feeder it no longer has. The default never moves one.
    fn poll_relinked(&mut self) -> Option<HostId> {
        None
    }

    /// Checks the strategy's own invariants (for tests); an `Err` names the broken one.
    fn check_invariants(&self, _view: &View<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// The strategies known by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StrategyKind {
    /// The source sends to every receiver at once: a star, like pscp, pdcp or Ansible.
    Linear,
    /// The blog's whole-file doubling with the three-set scheduler.
    Bounce,
    /// A store-and-forward pipeline through all hosts, chunk by chunk.
    Chain,
    /// The binomial pipeline: a round-optimal chunk schedule, k + ⌈log2(C+1)⌉ − 1 chunk times.
    Binomial,
    /// A BitTorrent-like swarm (Murder, Kraken, Dragonfly): random neighbours, rarest first.
    Swarm,
    /// Bounce that pairs the fastest free holder (by upload) with the fastest waiting host
    /// (by download), so fast hosts become holders early and serve more.
    BounceFast,
    /// Rack-aware doubling: one cross-rack copy per rack, then spread inside the rack.
    Rack,
}

/// What a strategy is built from: the size of the run and the inputs some strategies need.
///
/// Build it with [`StrategyParams::new`] and adjust fields, or with a struct literal ending in
/// `..StrategyParams::default()`, so that new fields do not break callers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StrategyParams {
    /// Number of receivers, C.
    pub receivers: u32,
    /// Seed of the strategy's own random generator (only `swarm` draws random numbers). The
    /// core never uses a global RNG, so the same seed gives the same transfers.
    pub seed: u64,
    /// Tuning of the `swarm` strategy.
    pub swarm: SwarmParams,
    /// Upload capacity of every host in bytes/s, indexed by [`HostId`] (0 = the source);
    /// `None` when unknown. Read by `bounce-fast`.
    pub upload: Option<Arc<[f64]>>,
    /// Download capacity of every host in bytes/s, indexed by [`HostId`]; `None` when
    /// unknown. Read by `bounce-fast`.
    pub download: Option<Arc<[f64]>>,
    /// Rack id of every host, indexed by [`HostId`]: hosts with the same id share their
    /// rack's uplink for flows that leave or enter the rack. `None` when unknown. Read by
    /// `rack`.
    pub rack: Option<Arc<[u32]>>,
    /// Chunks a `chain` link may have in flight at once (0 counts as 1). Drivers run one
    /// link's transfers first in, first out, so more than one only hides each chunk's round
    /// trip: the real runner sets it, the simulator keeps 1.
    pub chain_window: u32,
    /// When a `chain` cuts a slow host out of the pipeline (see [`Straggler`]); `None`
    /// never does. The runner and the simulator both set [`Straggler::default`].
    pub chain_straggler: Option<Straggler>,
}

impl StrategyParams {
    /// `receivers` receivers, seed 0, default swarm tuning.
    pub fn new(receivers: u32) -> Self {
        StrategyParams {
            receivers,
            ..StrategyParams::default()
        }
    }

    /// The same parameters with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same parameters with the given network knowledge. Each table, when given, holds
    /// one entry per host, `receivers + 1` in all, indexed by [`HostId`].
    pub fn with_network(
        mut self,
        upload: Option<Arc<[f64]>>,
        download: Option<Arc<[f64]>>,
        rack: Option<Arc<[u32]>>,
    ) -> Self {
        self.upload = upload;
        self.download = download;
        self.rack = rack;
        self
    }

    /// `table` if it has one entry per host; a table of another length is a bug in the
    /// driver that built these parameters.
    fn per_host<'a, T>(&self, table: &'a Option<Arc<[T]>>, what: &str) -> Option<&'a [T]> {
        let t = table.as_deref()?;
        assert_eq!(
            t.len(),
            self.receivers as usize + 1,
            "StrategyParams::{what} must hold one entry per host (receivers + 1)"
        );
        Some(t)
    }
}

/// What to do with a strategy of a type known at compile time: the argument of
/// [`StrategyKind::build_with`]. A driver whose loop is generic over the strategy gets one copy
/// of the loop per strategy, with the strategy's calls inlined.
pub trait WithStrategy {
    /// What [`WithStrategy::call`] returns.
    type Output;

    /// Runs with `strategy`.
    fn call<S: Strategy + 'static>(self, strategy: S) -> Self::Output;
}

/// Boxes the strategy behind the trait: [`StrategyKind::build`].
struct Boxed;

impl WithStrategy for Boxed {
    type Output = Box<dyn Strategy>;

    fn call<S: Strategy + 'static>(self, strategy: S) -> Box<dyn Strategy> {
        Box::new(strategy)
    }
}

/// A strategy name that is not known.
#[derive(Debug, thiserror::Error)]
#[error("unknown strategy '{0}' (expected one of: linear, bounce, chain, binomial, swarm, bounce-fast, rack, all)")]
pub struct UnknownStrategy(pub String);

impl StrategyKind {
    /// Every strategy, in the order tables and plots list them.
    pub const ALL: [StrategyKind; 7] = [
        StrategyKind::Linear,
        StrategyKind::Bounce,
        StrategyKind::Chain,
        StrategyKind::Binomial,
        StrategyKind::Swarm,
        StrategyKind::BounceFast,
        StrategyKind::Rack,
    ];

    /// The name users select it by.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Linear => "linear",
            StrategyKind::Bounce => "bounce",
            StrategyKind::Chain => "chain",
            StrategyKind::Binomial => "binomial",
            StrategyKind::Swarm => "swarm",
            StrategyKind::BounceFast => "bounce-fast",
            StrategyKind::Rack => "rack",
        }
    }

    /// True when the strategy cuts the file into chunks of `--chunk` bytes; whole-file
    /// strategies move the file as one piece.
    pub fn uses_chunks(self) -> bool {
        matches!(
            self,
            StrategyKind::Chain | StrategyKind::Binomial | StrategyKind::Swarm
        )
    }

    /// The layout this strategy works on for a file of `size` bytes.
    pub fn layout(self, size: u64, chunk: u64) -> Result<Layout, LayoutError> {
        if self.uses_chunks() {
            Layout::new(size, chunk)
        } else {
            Layout::whole(size)
        }
    }

    /// A fresh strategy for the run described by `params`.
    ///
    /// # Panics
    ///
    /// Panics if `params.upload`, `params.download` or `params.rack` is given with a length
    /// other than `params.receivers + 1`.
    pub fn build(self, params: &StrategyParams) -> Box<dyn Strategy> {
        self.build_with(params, Boxed)
    }

    /// A fresh strategy for the run described by `params`, handed to `with` as its own type
    /// rather than boxed behind the trait.
    ///
    /// # Panics
    ///
    /// As [`StrategyKind::build`].
    pub fn build_with<W: WithStrategy>(self, params: &StrategyParams, with: W) -> W::Output {
        let receivers = params.receivers;
        match self {
            StrategyKind::Linear => with.call(Linear::new(receivers)),
            StrategyKind::Bounce => with.call(Bounce::new(receivers)),
            StrategyKind::Chain => with.call(
                Chain::new(receivers, params.chain_window).with_straggler(params.chain_straggler),
            ),
            StrategyKind::Binomial => with.call(Binomial::new(receivers)),
            StrategyKind::Swarm => with.call(Swarm::new(receivers, params.seed, &params.swarm)),
            StrategyKind::BounceFast => with.call(BounceFast::new(
                receivers,
                params.per_host(&params.upload, "upload"),
                params.per_host(&params.download, "download"),
            )),
            StrategyKind::Rack => {
                with.call(Rack::new(receivers, params.per_host(&params.rack, "rack")))
            }
        }
    }

    /// Parses a comma-separated list such as `linear,bounce`, where `all` stands for every
    /// strategy. Duplicates are dropped; order is kept.
    pub fn parse_list(s: &str) -> Result<Vec<StrategyKind>, UnknownStrategy> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            let kinds: Vec<StrategyKind> = if part.eq_ignore_ascii_case("all") {
                StrategyKind::ALL.to_vec()
            } else {
                vec![part.parse()?]
            };
            for k in kinds {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}
