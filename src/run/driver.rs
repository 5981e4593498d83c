//! The driver loop: feeds a [`Transport`]'s results into the scheduler core and starts what
//! the core plans, following the driver contract of [`crate::core`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::task::JoinSet;

use std::collections::{HashMap, HashSet};

use crate::core::{
    Event, HopError, HostId, Layout, Scheduler, SchedulerConfig, Strategy, StrategyKind, Transfer,
};

use super::transport::{
    CleanupFailure, Found, Prepared, Probe, ThenOutcome, Transport, TransportError,
};

/// Chunks a chain link may have in flight. Links are first in, first out, so this does not
/// change when bytes move; on a request link it lets the next request reach the sender while
/// the previous chunk is still on the wire, instead of paying a round trip and two process
/// starts per chunk. (A stream link moves its bytes without waiting for the core at all; the
/// window only bounds how many of its chunks the core tracks at once.)
pub const CHAIN_WINDOW: u32 = 4;

/// The chain's straggler rule in a run.
const STRAGGLER: crate::core::Straggler = crate::core::Straggler::DEFAULT;

/// How a receiver ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStatus {
    /// Its copy was verified against the digest and renamed into place.
    Verified,
    /// It already held the file: nothing was sent.
    UpToDate,
    /// It was given up; nothing unverified is left at DEST.
    Failed,
    /// The run was interrupted before it finished.
    Interrupted,
}

impl HostStatus {
    /// The word used in tables and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Verified => "verified",
            HostStatus::UpToDate => "up-to-date",
            HostStatus::Failed => "failed",
            HostStatus::Interrupted => "interrupted",
        }
    }

    /// True for the two good outcomes.
    pub fn is_ok(self) -> bool {
        matches!(self, HostStatus::Verified | HostStatus::UpToDate)
    }
}

/// What happened to one receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRecord {
    /// The host that sent it its last (or only) piece.
    pub from: Option<HostId>,
    /// When its first hop started.
    pub start: Option<Duration>,
    /// When it was verified or given up.
    pub end: Option<Duration>,
    /// Bytes it received in successful hops.
    pub bytes: u64,
    /// How it ended; `None` while the run is going on.
    pub status: Option<HostStatus>,
    /// The last error, for failed hosts.
    pub error: Option<String>,
    /// The tool it computed SHA-256 with, if the transport said.
    pub hasher: Option<String>,
    /// How `--then` ended on it: its exit status and output, or why it could not run;
    /// `None` when it was not run.
    pub then: Option<Result<ThenOutcome, String>>,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// One record per receiver: `hosts[i]` is `HostId(i + 1)`.
    pub hosts: Vec<HostRecord>,
    /// True when the run was interrupted.
    pub interrupted: bool,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// What [`Transport::shutdown`] could not clean up.
    pub cleanup: Vec<CleanupFailure>,
}

/// A run that stopped because of a defect in bounce itself (a panic in the driver, the core
/// or a transport task). Cleanup ran all the same.
#[derive(Debug, thiserror::Error)]
#[error("internal error: {message}")]
pub struct DriveError {
    /// What went wrong.
    pub message: String,
    /// What cleanup could not remove.
    pub cleanup: Vec<CleanupFailure>,
}

impl RunOutcome {
    /// True when every receiver is verified or up to date.
    pub fn all_ok(&self) -> bool {
        self.hosts
            .iter()
            .all(|h| h.status.is_some_and(HostStatus::is_ok))
    }
}

/// What the driver tells the progress display.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// A receiver was connected and probed.
    Probed {
        /// The host.
        host: HostId,
        /// What it holds.
        probe: Probe,
    },
    /// A host's probe found something an earlier run left beside its DEST.
    Found {
        /// The host.
        host: HostId,
        /// What, and what was done with it.
        found: Found,
    },
    /// A link planned ahead could not be set up; its transfers go another way.
    LinkNotOpened {
        /// Why, naming the link.
        reason: String,
    },
    /// A host received far slower than its feeder and was cut out of the chain (see
    /// [`crate::core::Straggler`]): the hosts behind it are fed past it, and it is fed by
    /// `feeder` at its own pace.
    Straggler {
        /// The slow host.
        host: HostId,
        /// Its new feeder.
        feeder: HostId,
        /// Its rate, bytes per second.
        rate: f64,
        /// Its old feeder's rate, bytes per second.
        reference: f64,
        /// How long it had received nothing while its feeder went on (a dead link, a hung
        /// disk), when that, rather than a slow rate, is why it was cut out.
        stalled_for: Option<Duration>,
    },
    /// The chain's first host received slowly enough to probe the controller (see
    /// [`crate::core::Straggler::probe`]): `host` is fed by the controller alongside it for
    /// a moment.
    ProbeStarted {
        /// The chain's first host.
        head: HostId,
        /// The host fed alongside it.
        host: HostId,
        /// `head`'s rate so far, bytes per second.
        head_rate: f64,
    },
    /// The probe of the controller is over: what each host received at over the same span.
    ProbeEnded {
        /// The chain's first host.
        head: HostId,
        /// The host that was fed alongside it.
        host: HostId,
        /// `head`'s rate, bytes per second.
        head_rate: f64,
        /// `host`'s rate, bytes per second.
        host_rate: f64,
        /// Neither is slow by the rule: the controller's own link limits the chain (and a
        /// [`RunEvent::Straggler`] follows otherwise).
        source_bound: bool,
    },
    /// A receiver's copy did not match SRC although every byte arrived (or a verified copy
    /// changed on disk): it is fed again from the start, from a good copy, unless it has
    /// no attempts left.
    Corrupt {
        /// The host.
        host: HostId,
        /// Why, such as the digest mismatch.
        reason: String,
    },
    /// A hop started.
    HopStarted(Transfer),
    /// A transfer ended with every byte at its receiver.
    HopDone(Transfer),
    /// A hop failed (it may be retried).
    HopFailed {
        /// The hop.
        transfer: Transfer,
        /// Why.
        reason: String,
    },
    /// A receiver reached its final status.
    HostDone {
        /// The host.
        host: HostId,
        /// Its status.
        status: HostStatus,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// `--then` ended on a host: its exit status, or why it could not run.
    Then {
        /// The host.
        host: HostId,
        /// Its exit status, or why it could not run.
        result: Result<i32, String>,
    },
}

/// Receives [`RunEvent`]s as they happen.
pub trait Observer {
    /// Called for every event, in order.
    fn on_event(&mut self, event: &RunEvent);
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_event(&mut self, _event: &RunEvent) {}
}

/// What the driver needs besides the transport.
#[derive(Clone, Debug)]
pub struct DriveConfig {
    /// The strategy.
    pub kind: StrategyKind,
    /// How the file is cut (see [`StrategyKind::layout`]).
    pub layout: Layout,
    /// Failed hops a receiver may suffer before it is given up.
    pub max_attempts: u32,
    /// Number of receivers, C.
    pub receivers: u32,
    /// A command run on every host whose copy is in place once the transfer is over
    /// (`--then`), with its DEST as `$1`.
    pub then: Option<String>,
}

enum Task {
    /// A receiver was connected and probed, or could not be.
    Prepared(HostId, Result<Prepared, TransportError>),
    /// Links planned ahead were set up; the errors name those that could not be.
    LinksOpened((HostId, HostId), Vec<TransportError>),
    Hop(Transfer, Result<(), TransportError>),
    Finalize(HostId, Result<(), TransportError>),
    /// A host that fed a corrupt copy to `.1` was checked again; `.2` is why `.1` failed.
    Rechecked(HostId, HostId, String, Result<(), TransportError>),
    /// A corrupt host's links and copies were removed.
    Reset(HostId),
    /// A host was discarded: nothing for the scheduler.
    Discarded,
    /// `--then` ran on a host, or could not.
    Then(HostId, Result<ThenOutcome, TransportError>),
}

struct Run<'o, T> {
    transport: Arc<T>,
    records: Vec<HostRecord>,
    tasks: JoinSet<Task>,
    started: Instant,
    observer: &'o mut dyn Observer,
    /// The core, once it can start: at once for a strategy that takes receivers as they join,
    /// after every probe otherwise.
    sched: Option<Scheduler>,
    /// The strategy, until `sched` is built from it.
    strategy: Option<Box<dyn Strategy>>,
    /// Probe results held back for a strategy that needs every receiver at the start.
    held: Vec<(HostId, Result<Prepared, TransportError>)>,
    probes_left: u32,
    /// The core's [`Scheduler::links_version`] when the planned links were last asked for
    /// (rule 7 of the driver contract).
    links_seen: Option<u64>,
    /// Every link planned and asked for, while it stays planned: each is set up once for as
    /// long as it is planned. One planned into a receiver that already holds part of the
    /// file (its sender was lost or cut out) carries the rest.
    asked: HashSet<(HostId, HostId)>,
    /// Planned links still being set up, and the transfers planned over them meanwhile,
    /// which start once their link is up (or has failed, and they go another way).
    /// (How many setups of each are under way: a link dropped from the plan and planned
    /// again may be set up again before its first setup has ended.)
    opening: HashMap<(HostId, HostId), u32>,
    deferred: Vec<Transfer>,
    /// Hosts whose copy was found corrupt, until the transport has removed it and their
    /// links; transfers to or from them wait meanwhile.
    resetting: HashSet<HostId>,
    layout: Layout,
    max_attempts: u32,
}

impl<T: Transport> Run<'_, T> {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn record(&mut self, h: HostId) -> &mut HostRecord {
        &mut self.records[h.index() - 1]
    }

    fn finish_host(&mut self, host: HostId, status: HostStatus, error: Option<String>) {
        let now = self.now();
        let r = self.record(host);
        if r.status.is_some() {
            return;
        }
        r.status = Some(status);
        r.end = Some(now);
        r.error.clone_from(&error);
        self.observer.on_event(&RunEvent::HostDone {
            host,
            status,
            error,
        });
    }

    fn start_hop(&mut self, t: Transfer) {
        let now = self.now();
        self.record(t.to).start.get_or_insert(now);
        self.observer.on_event(&RunEvent::HopStarted(t));
        self.transport.starting(&t);
        let tr = Arc::clone(&self.transport);
        self.tasks
            .spawn(async move { Task::Hop(t, tr.hop(t).await) });
    }

    /// Step 2 of the driver contract: set up the links newly planned ahead, start every
    /// planned transfer, then handle every event.
    fn drain(&mut self) {
        let Some(mut sched) = self.sched.take() else {
            return;
        };
        let mut links: Vec<(HostId, HostId)> = Vec::new();
        if self.links_seen != Some(sched.links_version()) {
            self.links_seen = Some(sched.links_version());
            links = sched.planned_links();
            // A link dropped from the plan (its receiver went to another feeder, as a probe's
            // host does and comes back) is set up again if it is planned again: its old
            // stream was cut when the other feeder's was set up.
            let planned: HashSet<(HostId, HostId)> = links.iter().copied().collect();
            let fed: HashSet<HostId> = links.iter().map(|&(_, to)| to).collect();
            self.asked.retain(|l| planned.contains(l));
            // A transfer held back for a link no longer planned, into a receiver that now has
            // another feeder, would never go: that link is cut as the new one is set up
            // (rule 9), which need not wait for it. It ends now, so that its receiver is
            // fed from its first missing chunk at once.
            let stale: Vec<Transfer> = self
                .deferred
                .iter()
                .filter(|t| !planned.contains(&(t.from, t.to)) && fed.contains(&t.to))
                .copied()
                .collect();
            self.deferred.retain(|t| !stale.contains(t));
            let now = self.now();
            for t in stale {
                let why = format!("{} is fed another way", t.to);
                sched.handle_done(now, t.id, Err(HopError::new(why)));
            }
            // A host being reset gets its links once that is done.
            links.retain(|&(a, b)| {
                !self.resetting.contains(&a)
                    && !self.resetting.contains(&b)
                    && self.asked.insert((a, b))
            });
        }
        // One task per link: the transfers over each wait for their own link only.
        for link in links {
            *self.opening.entry(link).or_default() += 1;
            let tr = Arc::clone(&self.transport);
            self.tasks.spawn(async move {
                let failed = tr.open_links(&[link]).await;
                Task::LinksOpened(link, failed)
            });
        }
        let now = self.now();
        let (go, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|t| !self.held_back(t));
        self.deferred = wait;
        for t in go {
            // A host given up while the transfer waited must not be used now: its copy may
            // be gone, or wrong.
            let gone = [t.from, t.to]
                .iter()
                .find(|&&h| h != HostId::SOURCE && sched.is_failed(h))
                .copied();
            match gone {
                Some(h) => {
                    sched.handle_done(now, t.id, Err(HopError::new(format!("{h} was given up"))))
                }
                None => self.start_hop(t),
            }
        }
        loop {
            let now = self.now();
            let Some(t) = sched.poll_transfer(now) else {
                break;
            };
            if self.held_back(&t) {
                self.deferred.push(t);
            } else {
                self.start_hop(t);
            }
        }
        while let Some(ev) = sched.poll_event() {
            match ev {
                Event::HostComplete { host, .. } => {
                    let tr = Arc::clone(&self.transport);
                    self.tasks
                        .spawn(async move { Task::Finalize(host, tr.finalize(host).await) });
                }
                Event::Straggler {
                    host,
                    feeder,
                    rate,
                    reference,
                    stalled,
                    ..
                } => self.observer.on_event(&RunEvent::Straggler {
                    host,
                    feeder,
                    rate,
                    reference,
                    stalled_for: stalled.then_some(STRAGGLER.stall),
                }),
                Event::ProbeStarted {
                    head,
                    host,
                    head_rate,
                    ..
                } => self.observer.on_event(&RunEvent::ProbeStarted {
                    head,
                    host,
                    head_rate,
                }),
                Event::ProbeEnded {
                    head,
                    host,
                    head_rate,
                    host_rate,
                    verdict,
                    ..
                } => self.observer.on_event(&RunEvent::ProbeEnded {
                    head,
                    host,
                    head_rate,
                    host_rate,
                    source_bound: verdict == crate::core::ProbeVerdict::SourceBound,
                }),
                Event::HostFailed { host, reason, .. } => {
                    self.finish_host(host, HostStatus::Failed, Some(reason));
                    let tr = Arc::clone(&self.transport);
                    self.tasks.spawn(async move {
                        tr.discard(host).await;
                        Task::Discarded
                    });
                }
            }
        }
        self.sched = Some(sched);
    }

    /// True while `t` must wait: its link is still being set up, or one of its hosts is
    /// being reset.
    fn held_back(&self, t: &Transfer) -> bool {
        self.opening.contains_key(&(t.from, t.to))
            || self.resetting.contains(&t.from)
            || self.resetting.contains(&t.to)
    }

    /// `host`'s copy is corrupt: the core forgets it at once, so that nothing is sent from
    /// it, and what is planned to or from it waits until the transport has removed its
    /// copies and links.
    fn corrupt(&mut self, host: HostId, reason: String) {
        self.observer.on_event(&RunEvent::Corrupt {
            host,
            reason: reason.clone(),
        });
        let now = self.now();
        self.sched_mut().handle_corrupt(now, host, reason);
        if self.sched_mut().is_failed(host) {
            // Out of attempts: given up (and discarded) like any other.
            return;
        }
        self.resetting.insert(host);
        self.asked.retain(|&(from, to)| from != host && to != host);
        let tr = Arc::clone(&self.transport);
        self.tasks.spawn(async move {
            tr.reset(host).await;
            Task::Reset(host)
        });
    }

    /// Takes in a probe's result: into the core, or held until every probe is in.
    fn on_prepared(&mut self, h: HostId, result: Result<Prepared, TransportError>) {
        self.probes_left -= 1;
        let up_to_date = match &result {
            Ok(prepared) => {
                for found in &prepared.found {
                    let found = found.clone();
                    self.observer.on_event(&RunEvent::Found { host: h, found });
                }
                self.record(h).hasher.clone_from(&prepared.hasher);
                let probe = prepared.probe;
                self.observer.on_event(&RunEvent::Probed { host: h, probe });
                probe == Probe::UpToDate
            }
            Err(_) => false,
        };
        if up_to_date {
            self.finish_host(h, HostStatus::UpToDate, None);
        }
        let now = self.now();
        match self.sched.as_mut() {
            Some(sched) => match result {
                Ok(_) => sched.handle_host_joined(now, h, up_to_date),
                Err(e) => sched.handle_host_down(now, h, e.to_string()),
            },
            None => {
                self.held.push((h, result));
                if self.probes_left == 0 {
                    self.start_after_probes(now);
                }
            }
        }
    }

    /// Builds the core for a strategy that needs every receiver at the start, from the held
    /// probe results: hosts that hold the file start complete, unreachable ones are given up
    /// before the first drain, so no hop is planned to them.
    fn start_after_probes(&mut self, now: Duration) {
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|(h, _)| *h);
        let already_complete = held
            .iter()
            .filter(|(_, r)| matches!(r, Ok(p) if p.probe == Probe::UpToDate))
            .map(|(h, _)| *h)
            .collect();
        let strategy = self.strategy.take().expect("built once");
        let mut sched = Scheduler::new(
            strategy,
            self.layout,
            SchedulerConfig {
                receivers: self.records.len() as u32,
                max_attempts: self.max_attempts,
                already_complete,
                joining: Vec::new(),
            },
        );
        for (h, r) in held {
            if let Err(e) = r {
                sched.handle_host_down(now, h, e.to_string());
            }
        }
        self.sched = Some(sched);
    }

    /// Rule 10 of the driver contract: a stream into `h` has brought its copy to `bytes`.
    fn on_progress(&mut self, h: HostId, bytes: u64) {
        let now = self.now();
        if let Some(sched) = self.sched.as_mut() {
            sched.handle_progress(now, h, bytes);
            self.drain();
        }
    }

    fn on_task(&mut self, task: Task) {
        let now = self.now();
        match task {
            Task::Prepared(h, result) => self.on_prepared(h, result),
            Task::LinksOpened(link, failed) => {
                // A link cut while it was being set up (its receiver is fed another way) is
                // no news: the cut was told.
                let failed = failed
                    .into_iter()
                    .filter(|e| !matches!(e, TransportError::Rerouted { .. }));
                for e in failed {
                    self.observer.on_event(&RunEvent::LinkNotOpened {
                        reason: e.to_string(),
                    });
                }
                // The transfers held back for it start in the drain below.
                if let Some(n) = self.opening.get_mut(&link) {
                    *n -= 1;
                    if *n == 0 {
                        self.opening.remove(&link);
                    }
                }
            }
            Task::Hop(t, Ok(())) => {
                self.observer.on_event(&RunEvent::HopDone(t));
                let r = self.record(t.to);
                r.from = Some(t.from);
                r.bytes += t.bytes;
                self.sched_mut().handle_done(now, t.id, Ok(()));
            }
            Task::Hop(t, Err(e)) => {
                let reason = e.to_string();
                self.observer.on_event(&RunEvent::HopFailed {
                    transfer: t,
                    reason: reason.clone(),
                });
                let sched = self.sched_mut();
                // A dead host is given up at once instead of burning its attempts; both
                // inputs go in before the drain, so nothing is planned for it in between.
                if let Some(h) = e.lost_host() {
                    if h != HostId::SOURCE && !sched.is_failed(h) {
                        sched.handle_host_down(now, h, reason.clone());
                    }
                }
                sched.handle_done(now, t.id, Err(HopError::new(reason)));
            }
            Task::Finalize(host, Ok(())) => self.finish_host(host, HostStatus::Verified, None),
            Task::Finalize(host, Err(e @ TransportError::DigestMismatch { .. }))
                if self.sched_mut().resets() =>
            {
                // Every byte arrived, and yet the copy is wrong: the bytes it was fed differ
                // from SRC. A feeder that passed its own check as it wrote may have had its
                // copy change on disk since: it is checked again first.
                let reason = e.to_string();
                let feeder = self.record(host).from.filter(|&f| {
                    f != HostId::SOURCE
                        && self.records[f.index() - 1].status == Some(HostStatus::Verified)
                });
                match feeder {
                    Some(f) => {
                        let tr = Arc::clone(&self.transport);
                        self.tasks.spawn(async move {
                            let r = tr.recheck(f).await;
                            Task::Rechecked(f, host, reason, r)
                        });
                    }
                    None => self.corrupt(host, reason),
                }
            }
            Task::Rechecked(feeder, host, reason, result) => {
                // Only a copy that reads back wrong is the feeder's fault; a check that
                // could not run says nothing about it.
                if let Err(e @ TransportError::DigestMismatch { .. }) = result {
                    let r = self.record(feeder);
                    r.status = None;
                    r.end = None;
                    self.corrupt(
                        feeder,
                        format!("{e} after it was verified: its copy changed on disk"),
                    );
                }
                self.corrupt(host, reason);
            }
            Task::Reset(host) => {
                self.resetting.remove(&host);
                // Its links are asked for again, now that they can be set up afresh.
                self.links_seen = None;
            }
            Task::Finalize(host, Err(e)) => {
                self.finish_host(host, HostStatus::Failed, Some(e.to_string()));
                // It must not pass its bad copy on.
                self.sched_mut().handle_host_down(now, host, e.to_string());
                let tr = Arc::clone(&self.transport);
                self.tasks.spawn(async move {
                    tr.discard(host).await;
                    Task::Discarded
                });
            }
            Task::Discarded => {}
            Task::Then(host, result) => {
                let result = result.map_err(|e| e.to_string());
                self.observer.on_event(&RunEvent::Then {
                    host,
                    result: result.as_ref().map(|o| o.status).map_err(Clone::clone),
                });
                self.record(host).then = Some(result);
            }
        }
        self.drain();
    }

    /// The core, which exists once a hop or a finalize could have started.
    fn sched_mut(&mut self) -> &mut Scheduler {
        self.sched
            .as_mut()
            .expect("hops start only once the scheduler is built")
    }

    /// Starts `command` on every host whose copy is in place.
    fn start_then(&mut self, command: &str) {
        for (i, r) in self.records.iter().enumerate() {
            if r.status.is_some_and(HostStatus::is_ok) {
                let (tr, host, command) = (
                    Arc::clone(&self.transport),
                    HostId(i as u32 + 1),
                    command.to_string(),
                );
                self.tasks
                    .spawn(async move { Task::Then(host, tr.then(host, &command).await) });
            }
        }
    }

    /// True when the core has finished and no task is left.
    fn is_over(&self) -> bool {
        self.tasks.is_empty() && self.sched.as_ref().is_some_and(Scheduler::is_finished)
    }

    /// Marks every host not done yet as interrupted.
    fn interrupted(&mut self) {
        for i in 0..self.records.len() {
            self.finish_host(
                HostId(i as u32 + 1),
                HostStatus::Interrupted,
                Some("interrupted".into()),
            );
        }
    }
}

/// Why [`run_to_end`] stopped early.
enum Stop {
    Interrupted,
    Internal(String),
}

/// Runs one distribution to the end, or until `cancel` resolves.
///
/// Every receiver is prepared (connected and probed) concurrently. For a strategy that takes
/// receivers as they join ([`crate::core::Strategy::joins_late`]: linear, bounce and chain),
/// each joins the run as soon as its probe is back, so data flows to the first hosts while
/// others are still connecting; links the strategy plans ahead are set up as they appear,
/// and the transfers planned over one wait only for that link. Any other strategy starts
/// once every probe is back. Hosts that already hold the file join complete, and hosts that
/// cannot be reached are given up before anything is planned to them. The scheduler then
/// runs until every receiver is verified or failed. On `cancel`, every hop is dropped and
/// hosts not yet done are reported as interrupted.
///
/// [`Transport::shutdown`] runs once at the end whatever happened: after success, an
/// interrupt, or a panic anywhere in the driver, the core or a task (which is returned as a
/// [`DriveError`]), so remote processes and temporary files are always removed.
pub async fn drive<T: Transport>(
    transport: Arc<T>,
    cfg: &DriveConfig,
    cancel: impl Future<Output = ()>,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, DriveError> {
    let started = Instant::now();
    let mut run = Run {
        transport: Arc::clone(&transport),
        records: vec![
            HostRecord {
                from: None,
                start: None,
                end: None,
                bytes: 0,
                status: None,
                error: None,
                hasher: None,
                then: None,
            };
            cfg.receivers as usize
        ],
        tasks: JoinSet::new(),
        started,
        observer,
        sched: None,
        strategy: None,
        held: Vec::new(),
        probes_left: cfg.receivers,
        links_seen: None,
        asked: HashSet::new(),
        opening: HashMap::new(),
        deferred: Vec::new(),
        resetting: HashSet::new(),
        layout: cfg.layout,
        max_attempts: cfg.max_attempts,
    };
    let result = AssertUnwindSafe(run_to_end(&mut run, cfg, cancel))
        .catch_unwind()
        .await;
    // Tasks still running are stopped before their remote processes are cleaned up.
    run.tasks.shutdown().await;
    let stop = match result {
        Ok(Ok(())) => None,
        Ok(Err(stop)) => Some(stop),
        Err(panic) => Some(Stop::Internal(panic_message(panic.as_ref()))),
    };
    let cleanup = transport.shutdown().await;
    match stop {
        Some(Stop::Internal(message)) => Err(DriveError { message, cleanup }),
        stop => {
            let interrupted = matches!(stop, Some(Stop::Interrupted));
            if interrupted {
                run.interrupted();
            }
            Ok(RunOutcome {
                elapsed: started.elapsed(),
                hosts: run.records,
                interrupted,
                cleanup,
            })
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A task's panic or cancellation, as the reason the run stops.
fn task_failure(what: &str, e: tokio::task::JoinError) -> Stop {
    let why = match e.try_into_panic() {
        Ok(p) => panic_message(p.as_ref()),
        Err(e) => e.to_string(),
    };
    Stop::Internal(format!("{what} task failed: {why}"))
}

async fn run_to_end<T: Transport>(
    run: &mut Run<'_, T>,
    cfg: &DriveConfig,
    cancel: impl Future<Output = ()>,
) -> Result<(), Stop> {
    tokio::pin!(cancel);

    let strategy = cfg.kind.build(&crate::core::StrategyParams {
        chain_window: CHAIN_WINDOW,
        chain_straggler: Some(STRAGGLER),
        ..crate::core::StrategyParams::new(cfg.receivers)
    });
    if strategy.joins_late() {
        // Each receiver joins as soon as it is probed: no host waits for the slowest.
        run.sched = Some(Scheduler::new(
            strategy,
            cfg.layout,
            SchedulerConfig {
                receivers: cfg.receivers,
                max_attempts: cfg.max_attempts,
                already_complete: Vec::new(),
                joining: (1..=cfg.receivers).map(HostId).collect(),
            },
        ));
    } else {
        run.strategy = Some(strategy);
    }
    for i in 1..=cfg.receivers {
        let tr = Arc::clone(&run.transport);
        let h = HostId(i);
        run.tasks
            .spawn(async move { Task::Prepared(h, tr.prepare(h).await) });
    }
    if cfg.receivers == 0 && run.sched.is_none() {
        run.start_after_probes(run.now());
    }
    run.drain();

    let mut progress = run.transport.take_progress();
    while !run.is_over() {
        tokio::select! {
            Some((h, bytes)) = async {
                match progress.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => run.on_progress(h, bytes),
            r = run.tasks.join_next() => match r {
                Some(Ok(task)) => run.on_task(task),
                Some(Err(e)) => return Err(task_failure("a transport", e)),
                None => {
                    return Err(Stop::Internal(
                        "the scheduler has transfers in flight but no task runs".into(),
                    ))
                }
            },
            () = &mut cancel => return Err(Stop::Interrupted),
        }
    }
    // Only now is every copy final (a verified feeder may yet be found corrupt while the
    // hosts it fed are checked).
    if let Some(command) = &cfg.then {
        run.start_then(command);
        while let Some(r) = tokio::select! {
            r = run.tasks.join_next() => r,
            () = &mut cancel => return Err(Stop::Interrupted),
        } {
            match r {
                Ok(task) => run.on_task(task),
                Err(e) => return Err(task_failure("a --then command", e)),
            }
        }
    }
    Ok(())
}
