//! Deterministic drivers shared by the core's integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bounce::core::{
    HostId, Layout, Scheduler, SchedulerConfig, StrategyKind, StrategyParams, Transfer,
};

/// What a step run observed.
pub struct StepRun {
    /// Time of the last completion, in chunk times.
    pub steps: u64,
    /// Every transfer with its start time, in the order the scheduler returned them.
    pub transfers: Vec<(u64, Transfer)>,
    /// Largest number of transfers any one host sent at once.
    pub max_uploads: usize,
    /// Largest number of transfers any one host received at once.
    pub max_downloads: usize,
}

struct StepDriver {
    s: Scheduler,
    now: u64,
    /// (end time, id) -> transfer
    flights: BTreeMap<(u64, u64), Transfer>,
    uploads: Vec<usize>,
    downloads: Vec<usize>,
    run: StepRun,
}

impl StepDriver {
    fn drain(&mut self) {
        while let Some(t) = self.s.poll_transfer(Duration::from_secs(self.now)) {
            let (f, to) = (t.from.index(), t.to.index());
            self.uploads[f] += 1;
            self.downloads[to] += 1;
            self.run.max_uploads = self.run.max_uploads.max(self.uploads[f]);
            self.run.max_downloads = self.run.max_downloads.max(self.downloads[to]);
            self.flights
                .insert((self.now + u64::from(t.chunks.len()), t.id.0), t);
            self.run.transfers.push((self.now, t));
        }
        while self.s.poll_event().is_some() {}
    }
}

/// Runs `kind` over `params.receivers` receivers and `chunks` one-byte chunks where every
/// transfer takes exactly one time unit per chunk, whatever else is in flight. Transfers that
/// end at the same time are reported in the order they started. Panics if the run stalls or
/// leaves a receiver incomplete.
pub fn run_steps(kind: StrategyKind, params: &StrategyParams, chunks: u32) -> StepRun {
    let receivers = params.receivers;
    let layout = Layout::new(u64::from(chunks), 1).unwrap();
    let hosts = receivers as usize + 1;
    let mut d = StepDriver {
        s: Scheduler::new(kind.build(params), layout, SchedulerConfig::new(receivers)),
        now: 0,
        flights: BTreeMap::new(),
        uploads: vec![0; hosts],
        downloads: vec![0; hosts],
        run: StepRun {
            steps: 0,
            transfers: Vec::new(),
            max_uploads: 0,
            max_downloads: 0,
        },
    };
    d.drain();
    while let Some((end, id)) = d.flights.keys().next().copied() {
        let t = d.flights.remove(&(end, id)).unwrap();
        d.now = end;
        d.uploads[t.from.index()] -= 1;
        d.downloads[t.to.index()] -= 1;
        d.s.handle_done(Duration::from_secs(end), t.id, Ok(()));
        d.drain();
    }
    if !d.s.is_finished() {
        for t in &d.run.transfers {
            eprintln!("{t:?}");
        }
    }
    assert!(
        d.s.is_finished(),
        "{kind} with C={receivers}, k={chunks} stalled at t={} with nothing in flight",
        d.now
    );
    for h in 1..=receivers {
        assert!(
            d.s.holdings().is_complete(HostId(h)),
            "{kind}: h{h} incomplete"
        );
    }
    d.run.steps = d.now;
    d.run
}

/// L = ⌈log2(C+1)⌉.
pub fn ceil_log2_hosts(receivers: u32) -> u64 {
    u64::from(u32::BITS - receivers.leading_zeros())
}
