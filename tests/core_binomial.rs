//! The binomial pipeline takes exactly k + L − 1 chunk times, L = ⌈log2(C+1)⌉, for any C.

mod common;

use bounce::core::{StrategyKind, StrategyParams};
use common::{ceil_log2_hosts, run_steps};

fn assert_optimal(receivers: u32, chunks: u32) {
    let run = run_steps(
        StrategyKind::Binomial,
        &StrategyParams::new(receivers),
        chunks,
    );
    assert!(
        run.max_uploads <= 1 && run.max_downloads <= 1,
        "C={receivers} k={chunks}: a host sent {} or received {} chunks at once",
        run.max_uploads,
        run.max_downloads
    );
    let expected = u64::from(chunks) + ceil_log2_hosts(receivers) - 1;
    assert_eq!(
        run.steps, expected,
        "C={receivers} k={chunks}: {} steps, expected k + L - 1 = {expected}",
        run.steps
    );
    assert_eq!(
        run.transfers.len() as u64,
        u64::from(receivers) * u64::from(chunks),
        "C={receivers} k={chunks}: every chunk should cross to every receiver exactly once"
    );
}

#[test]
fn binomial_takes_k_plus_l_minus_one_steps_for_the_listed_sizes() {
    for c in [1, 2, 3, 5, 6, 7, 9, 12, 13, 31, 33, 63, 64, 100, 1000] {
        for k in [1, 2, 3, 8, 10, 100] {
            assert_optimal(c, k);
        }
    }
}

#[test]
fn binomial_takes_k_plus_l_minus_one_steps_for_every_small_size() {
    for c in 1..=140 {
        for k in 1..=12 {
            assert_optimal(c, k);
        }
    }
}

#[test]
fn binomial_with_one_chunk_takes_as_long_as_bounce() {
    for c in [1, 2, 3, 4, 5, 7, 8, 9, 100, 1000] {
        let b = run_steps(StrategyKind::Binomial, &StrategyParams::new(c), 1);
        let bounce = run_steps(StrategyKind::Bounce, &StrategyParams::new(c), 1);
        assert_eq!(b.steps, bounce.steps, "C={c}");
        assert_eq!(b.steps, ceil_log2_hosts(c), "C={c}");
    }
}

#[test]
fn binomial_with_no_receivers_plans_nothing() {
    let run = run_steps(StrategyKind::Binomial, &StrategyParams::new(0), 5);
    assert!(run.transfers.is_empty());
}

#[test]
fn binomial_on_a_resumed_run_sends_nothing_to_complete_hosts() {
    use bounce::core::{HostId, Layout, Scheduler, SchedulerConfig};
    use std::time::Duration;

    let (c, k) = (13u32, 9u32);
    let mut config = SchedulerConfig::new(c);
    config.already_complete = vec![HostId(3), HostId(8)];
    let layout = Layout::new(u64::from(k), 1).unwrap();
    let mut s = Scheduler::new(
        StrategyKind::Binomial.build(&StrategyParams::new(c)),
        layout,
        config,
    );
    let mut pool = std::collections::VecDeque::new();
    let mut hops = 0;
    loop {
        while let Some(t) = s.poll_transfer(Duration::ZERO) {
            assert!(
                t.to != HostId(3) && t.to != HostId(8),
                "sent to a complete host"
            );
            pool.push_back(t);
            hops += 1;
        }
        while s.poll_event().is_some() {}
        s.check_invariants().unwrap();
        let Some(t) = pool.pop_front() else { break };
        s.handle_done(Duration::ZERO, t.id, Ok(()));
    }
    assert!(s.is_finished(), "stalled");
    assert_eq!(hops, (c - 2) * k);
}
