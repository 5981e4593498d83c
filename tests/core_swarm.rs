//! The swarm completes every receiver, respects its slots and is reproducible by seed.

mod common;

use bounce::core::{StrategyKind, StrategyParams, SwarmParams};
use common::run_steps;

fn params(receivers: u32, seed: u64) -> StrategyParams {
    StrategyParams::new(receivers).with_seed(seed)
}

fn hops(receivers: u32, chunks: u32, seed: u64) -> Vec<(u64, u32, u32, u32)> {
    run_steps(StrategyKind::Swarm, &params(receivers, seed), chunks)
        .transfers
        .iter()
        .map(|(at, t)| (*at, t.from.0, t.to.0, t.chunks.start))
        .collect()
}

#[test]
fn swarm_completes_every_receiver_for_many_sizes() {
    for c in [1, 2, 3, 5, 8, 13, 40, 100, 500] {
        for k in [1, 2, 7, 30] {
            // run_steps panics on a stall or an incomplete receiver.
            let run = run_steps(StrategyKind::Swarm, &params(c, 7), k);
            assert_eq!(
                run.transfers.len() as u64,
                u64::from(c) * u64::from(k),
                "C={c} k={k}: a piece was sent twice to the same peer"
            );
        }
    }
}

#[test]
fn swarm_never_exceeds_its_upload_and_download_slots() {
    for (up, down) in [(1, 1), (2, 3), (4, 4), (8, 2)] {
        let mut p = params(200, 3);
        p.swarm = SwarmParams {
            upload_slots: up,
            download_slots: down,
            ..SwarmParams::default()
        };
        let run = run_steps(StrategyKind::Swarm, &p, 20);
        assert!(run.max_uploads <= up as usize, "{} > {up}", run.max_uploads);
        assert!(
            run.max_downloads <= down as usize,
            "{} > {down}",
            run.max_downloads
        );
        assert_eq!(run.max_uploads, up as usize, "upload slots should fill up");
    }
}

#[test]
fn swarm_with_the_same_seed_plans_the_same_transfers() {
    assert_eq!(hops(60, 16, 42), hops(60, 16, 42));
}

#[test]
fn swarm_with_another_seed_plans_other_transfers() {
    assert_ne!(hops(60, 16, 42), hops(60, 16, 43));
}

#[test]
fn swarm_finishes_within_a_few_times_the_binomial_optimum() {
    // Not a closed form: a sanity bound that catches a swarm that degenerates into a star.
    let (c, k) = (500u32, 50u32);
    let run = run_steps(StrategyKind::Swarm, &params(c, 1), k);
    let optimum = u64::from(k) + common::ceil_log2_hosts(c) - 1;
    assert!(
        run.steps <= 4 * optimum,
        "swarm took {} steps, optimum {optimum}",
        run.steps
    );
}
