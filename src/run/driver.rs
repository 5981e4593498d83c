//! The driver loop: feeds a [`Transport`]'s results into the scheduler core and starts what
//! the core plans, following the driver contract of [`crate::core`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::task::JoinSet;

use crate::core::{
    Event, HopError, HostId, Layout, Scheduler, SchedulerConfig, StrategyKind, Transfer,
};

use super::transport::{CleanupFailure, Probe, Transport, TransportError};

/// Chunks a chain link may have in flight. Links are first in, first out, so this does not
/// change when bytes move; on a request link it lets the next request reach the sender while
/// the previous chunk is still on the wire, instead of paying a round trip and two process
/// starts per chunk. (A stream link moves its bytes without waiting for the core at all; the
/// window only bounds how many of its chunks the core tracks at once.)
pub const CHAIN_WINDOW: u32 = 4;

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
    /// A stale temporary file of an earlier run was removed beside a host's DEST.
    Swept {
        /// The host.
        host: HostId,
        /// The file removed.
        path: String,
    },
    /// A link planned ahead could not be set up; its transfers go another way.
    LinkNotOpened {
        /// Why, naming the link.
        reason: String,
    },
    /// A hop started.
    HopStarted(Transfer),
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
}

enum Task {
    Hop(Transfer, Result<(), TransportError>),
    Finalize(HostId, Result<(), TransportError>),
    /// A host was discarded: nothing for the scheduler.
    Discarded,
}

struct Run<'o, T> {
    transport: Arc<T>,
    records: Vec<HostRecord>,
    tasks: JoinSet<Task>,
    started: Instant,
    observer: &'o mut dyn Observer,
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

    /// Step 2 of the driver contract: start every planned transfer, then handle every event.
    fn drain(&mut self, sched: &mut Scheduler) {
        loop {
            let now = self.now();
            let Some(t) = sched.poll_transfer(now) else {
                break;
            };
            let r = self.record(t.to);
            r.start.get_or_insert(now);
            self.observer.on_event(&RunEvent::HopStarted(t));
            let tr = Arc::clone(&self.transport);
            self.tasks
                .spawn(async move { Task::Hop(t, tr.hop(t).await) });
        }
        while let Some(ev) = sched.poll_event() {
            match ev {
                Event::HostComplete { host, .. } => {
                    let tr = Arc::clone(&self.transport);
                    self.tasks
                        .spawn(async move { Task::Finalize(host, tr.finalize(host).await) });
                }
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
    }

    fn on_task(&mut self, sched: &mut Scheduler, task: Task) {
        match task {
            Task::Hop(t, Ok(())) => {
                let r = self.record(t.to);
                r.from = Some(t.from);
                r.bytes += t.bytes;
                sched.handle_done(self.now(), t.id, Ok(()));
            }
            Task::Hop(t, Err(e)) => {
                let reason = e.to_string();
                self.observer.on_event(&RunEvent::HopFailed {
                    transfer: t,
                    reason: reason.clone(),
                });
                // A dead host is given up at once instead of burning its attempts; both
                // inputs go in before the drain, so nothing is planned for it in between.
                if let Some(h) = e.lost_host() {
                    if h != HostId::SOURCE && !sched.is_failed(h) {
                        sched.handle_host_down(self.now(), h, reason.clone());
                    }
                }
                sched.handle_done(self.now(), t.id, Err(HopError::new(reason)));
            }
            Task::Finalize(host, Ok(())) => self.finish_host(host, HostStatus::Verified, None),
            Task::Finalize(host, Err(e)) => {
                self.finish_host(host, HostStatus::Failed, Some(e.to_string()));
                // It must not pass its bad copy on.
                sched.handle_host_down(self.now(), host, e.to_string());
                let tr = Arc::clone(&self.transport);
                self.tasks.spawn(async move {
                    tr.discard(host).await;
                    Task::Discarded
                });
            }
            Task::Discarded => {}
        }
        self.drain(sched);
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
/// First every receiver is prepared (connected and probed) concurrently; hosts that already
/// hold the file become [`SchedulerConfig::already_complete`] and hosts that cannot be reached
/// are given up before any data moves. Then the scheduler runs until every receiver is
/// verified or failed. On `cancel`, every hop is dropped and hosts not yet done are reported
/// as interrupted.
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
            };
            cfg.receivers as usize
        ],
        tasks: JoinSet::new(),
        started,
        observer,
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

    let mut probes: JoinSet<(HostId, Result<super::Prepared, TransportError>)> = JoinSet::new();
    for i in 1..=cfg.receivers {
        let tr = Arc::clone(&run.transport);
        let h = HostId(i);
        probes.spawn(async move { (h, tr.prepare(h).await) });
    }
    let mut already_complete = Vec::new();
    let mut unreachable = Vec::new();
    loop {
        tokio::select! {
            r = probes.join_next() => match r {
                None => break,
                Some(Ok((h, Ok(prepared)))) => {
                    for path in prepared.swept {
                        run.observer.on_event(&RunEvent::Swept { host: h, path });
                    }
                    run.record(h).hasher = prepared.hasher;
                    let probe = prepared.probe;
                    run.observer.on_event(&RunEvent::Probed { host: h, probe });
                    if probe == Probe::UpToDate {
                        already_complete.push(h);
                    }
                }
                Some(Ok((h, Err(e)))) => unreachable.push((h, e.to_string())),
                Some(Err(e)) => {
                    probes.shutdown().await;
                    return Err(task_failure("a probe", e));
                }
            },
            () = &mut cancel => {
                probes.shutdown().await;
                return Err(Stop::Interrupted);
            }
        }
    }

    let mut sched = Scheduler::new(
        cfg.kind.build(&crate::core::StrategyParams {
            chain_window: CHAIN_WINDOW,
            ..crate::core::StrategyParams::new(cfg.receivers)
        }),
        cfg.layout,
        SchedulerConfig {
            receivers: cfg.receivers,
            max_attempts: cfg.max_attempts,
            already_complete: already_complete.clone(),
        },
    );
    for &h in &already_complete {
        run.finish_host(h, HostStatus::UpToDate, None);
    }
    // Unreachable hosts are given up before the first drain, so no hop is planned to them.
    unreachable.sort_by_key(|(h, _)| *h);
    for (h, reason) in unreachable {
        sched.handle_host_down(run.now(), h, reason);
    }
    let links = sched.planned_links();
    if !links.is_empty() {
        let tr = Arc::clone(&run.transport);
        tokio::select! {
            failed = tr.open_links(&links) => {
                for e in failed {
                    run.observer.on_event(&RunEvent::LinkNotOpened { reason: e.to_string() });
                }
            }
            () = &mut cancel => return Err(Stop::Interrupted),
        }
    }
    run.drain(&mut sched);

    while !(sched.is_finished() && run.tasks.is_empty()) {
        tokio::select! {
            r = run.tasks.join_next() => match r {
                Some(Ok(task)) => run.on_task(&mut sched, task),
                Some(Err(e)) => return Err(task_failure("a hop", e)),
                None => {
                    return Err(Stop::Internal(
                        "the scheduler has transfers in flight but no task runs".into(),
                    ))
                }
            },
            () = &mut cancel => return Err(Stop::Interrupted),
        }
    }
    Ok(())
}
