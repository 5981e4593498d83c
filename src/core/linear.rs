//! `linear`: the source sends to every receiver at once, as pscp, pdcp and Ansible do.

use std::collections::VecDeque;

use super::strategy::{Strategy, View};
use super::types::{ChunkRange, HostId};

/// The star: every receiver gets the whole file straight from the source, all at once, so
/// they share the source's upload and the makespan is C·T. A receiver that joins late is
/// served after those already queued.
pub struct Linear {
    pending: VecDeque<HostId>,
}

impl Linear {
    /// A star over receivers `1..=receivers`.
    pub fn new(receivers: u32) -> Self {
        Linear {
            pending: (1..=receivers).map(HostId).collect(),
        }
    }
}

impl Strategy for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn start(&mut self, view: &View<'_>) {
        // Receivers still joining are queued when they join.
        self.pending.retain(|&h| !view.is_joining(h));
    }

    fn joins_late(&self) -> bool {
        true
    }

    fn host_joined(&mut self, _view: &View<'_>, host: HostId) {
        // A complete host is skipped when it reaches the front.
        self.pending.push_back(host);
    }

    fn next(&mut self, view: &View<'_>) -> Option<(HostId, HostId, ChunkRange)> {
        while let Some(h) = self.pending.pop_front() {
            if view.is_failed(h) || view.holdings.is_complete(h) {
                continue;
            }
            let whole = ChunkRange {
                start: 0,
                end: view.layout.count(),
            };
            return Some((HostId::SOURCE, h, whole));
        }
        None
    }

    fn finished(&mut self, view: &View<'_>, _from: HostId, to: HostId, _c: ChunkRange, ok: bool) {
        if !ok && !view.is_failed(to) {
            self.pending.push_back(to);
        }
    }

    fn host_lost(&mut self, _view: &View<'_>, _host: HostId) {
        // Failed hosts are skipped when they reach the front of `pending`.
    }
}
