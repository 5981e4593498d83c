//! `bounce-fast`: bounce without capacities, fastest-first with them.

mod common;

use std::sync::Arc;

use bounce::core::{StrategyKind, StrategyParams};
use common::{ceil_log2_hosts, run_steps};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(start, from, to)` of every transfer of a run.
fn hops(run: &common::StepRun) -> Vec<(u64, u32, u32)> {
    run.transfers
        .iter()
        .map(|(at, t)| (*at, t.from.0, t.to.0))
        .collect()
}

#[test]
fn bounce_fast_without_capacities_makes_the_transfers_of_bounce_step_for_step() {
    for c in 0..=70 {
        let p = StrategyParams::new(c);
        let fast = run_steps(StrategyKind::BounceFast, &p, 1);
        let plain = run_steps(StrategyKind::Bounce, &p, 1);
        assert_eq!(hops(&fast), hops(&plain), "C={c}");
        assert_eq!(fast.steps, plain.steps, "C={c}");
    }
}

#[test]
fn bounce_fast_pairs_the_fastest_holder_with_the_fastest_waiting_host() {
    // Capacities by host: h0 (the source) 4, h1 1, h2 9, h3 2, h4 7, h5 3; upload = download.
    // t=0: only h0 holds; the fastest receiver is h2.
    // t=1: holders h2 (9) and h0 (4); waiting by speed h4 (7), h5 (3), h3, h1:
    //      h2 -> h4, then h0 -> h5.
    // t=2: holders h2 (9), h4 (7), h0 (4), h5 (3); waiting h3 (2), h1 (1):
    //      h2 -> h3, then h4 -> h1.
    let caps: Arc<[f64]> = [4.0, 1.0, 9.0, 2.0, 7.0, 3.0].into();
    let p = StrategyParams::new(5).with_network(Some(caps.clone()), Some(caps), None);
    let run = run_steps(StrategyKind::BounceFast, &p, 1);
    assert_eq!(
        hops(&run),
        vec![(0, 0, 2), (1, 2, 4), (1, 0, 5), (2, 2, 3), (2, 4, 1)]
    );
}

#[test]
fn bounce_fast_ranks_holders_by_upload_and_waiting_hosts_by_download() {
    // h1 uploads fast but downloads slowly, h2 the opposite. h2 is served first (fastest
    // download); then h2 is the slowest uploader and h0 serves the next receiver.
    let up: Arc<[f64]> = [5.0, 9.0, 1.0, 1.0].into();
    let down: Arc<[f64]> = [5.0, 1.0, 9.0, 2.0].into();
    let p = StrategyParams::new(3).with_network(Some(up), Some(down), None);
    let run = run_steps(StrategyKind::BounceFast, &p, 1);
    assert_eq!(hops(&run), vec![(0, 0, 2), (1, 0, 3), (1, 2, 1)]);
}

#[test]
fn bounce_fast_with_capacities_still_doubles_the_holders_every_hop_time() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for c in [1u32, 2, 5, 64, 100, 1000, 4097] {
        let mut table = || -> Arc<[f64]> { (0..=c).map(|_| rng.gen_range(1.0..100.0)).collect() };
        let down = table();
        let p = StrategyParams::new(c).with_network(Some(table()), Some(down.clone()), None);
        let run = run_steps(StrategyKind::BounceFast, &p, 1);
        assert_eq!(run.steps, ceil_log2_hosts(c), "C={c}");
        assert_eq!(run.max_uploads, 1, "C={c}");
        assert_eq!(run.transfers.len(), c as usize, "C={c}");
        // Without failures every pairing takes the best waiting host, so receivers are
        // served in order of download capacity. (Which holder sends depends on which hops
        // have ended when a pairing is made: the hand-checked cases above cover that.)
        let served: Vec<f64> = run
            .transfers
            .iter()
            .map(|(_, t)| down[t.to.index()])
            .collect();
        assert!(served.windows(2).all(|w| w[0] >= w[1]), "C={c}");
    }
}
