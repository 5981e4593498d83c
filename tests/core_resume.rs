//! Resumed runs: receivers that already hold the file get nothing and serve as senders.

use std::time::Duration;

use bounce::core::{HostId, Scheduler, SchedulerConfig, StrategyKind, StrategyParams};

/// Runs the scheduler to the end, completing transfers first in, first out, and returns
/// every transfer as (from, to).
fn run(kind: StrategyKind, receivers: u32, complete: &[u32]) -> Vec<(u32, u32)> {
    let layout = kind.layout(64 << 20, 8 << 20).unwrap();
    let config = SchedulerConfig {
        already_complete: complete.iter().map(|&h| HostId(h)).collect(),
        ..SchedulerConfig::new(receivers)
    };
    let mut s = Scheduler::new(kind.build(&StrategyParams::new(receivers)), layout, config);
    let mut queue = std::collections::VecDeque::new();
    let mut seen = Vec::new();
    loop {
        while let Some(t) = s.poll_transfer(Duration::ZERO) {
            seen.push((t.from.0, t.to.0));
            queue.push_back(t.id);
        }
        while s.poll_event().is_some() {}
        s.check_invariants().unwrap();
        let Some(id) = queue.pop_front() else { break };
        s.handle_done(Duration::ZERO, id, Ok(()));
    }
    assert!(s.is_finished(), "{kind} did not finish");
    seen
}

#[test]
fn every_strategy_sends_nothing_to_receivers_that_already_hold_the_file() {
    for kind in StrategyKind::ALL {
        let seen = run(kind, 7, &[2, 5]);
        assert!(
            seen.iter().all(|&(_, to)| to != 2 && to != 5),
            "{kind} sent to a complete host: {seen:?}"
        );
    }
}

#[test]
fn bounce_and_bounce_fast_use_complete_receivers_as_senders_from_the_start() {
    for kind in [StrategyKind::Bounce, StrategyKind::BounceFast] {
        let seen = run(kind, 3, &[1, 2]);
        // Source and the two complete hosts are the holders: the one waiting host is served
        // by the first of them, and nothing else moves.
        assert_eq!(seen.len(), 1, "{kind}: {seen:?}");
        let seen = run(kind, 6, &[1, 2, 3]);
        // Four holders serve three waiting hosts in one round.
        let senders: std::collections::BTreeSet<u32> = seen.iter().map(|t| t.0).collect();
        assert_eq!(seen.len(), 3, "{kind}: {seen:?}");
        assert_eq!(
            senders.len(),
            3,
            "{kind}: one round needs three senders: {seen:?}"
        );
    }
}

#[test]
fn chain_plans_exactly_the_links_it_uses_from_the_start() {
    for complete in [&[][..], &[3], &[1, 5]] {
        let kind = StrategyKind::Chain;
        let config = SchedulerConfig {
            already_complete: complete.iter().map(|&h| HostId(h)).collect(),
            ..SchedulerConfig::new(5)
        };
        let s = Scheduler::new(
            kind.build(&StrategyParams::new(5)),
            kind.layout(64 << 20, 8 << 20).unwrap(),
            config,
        );
        let mut planned: Vec<(u32, u32)> =
            s.planned_links().iter().map(|(a, b)| (a.0, b.0)).collect();
        planned.sort();
        let mut used = run(kind, 5, complete);
        used.sort();
        used.dedup();
        assert_eq!(planned, used, "complete {complete:?}");
    }
    // Strategies whose links change with every round plan none ahead.
    let s = Scheduler::new(
        StrategyKind::Bounce.build(&StrategyParams::new(5)),
        StrategyKind::Bounce.layout(1 << 20, 1 << 20).unwrap(),
        SchedulerConfig::new(5),
    );
    assert!(s.planned_links().is_empty());
}
