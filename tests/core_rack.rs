//! `rack`: one cross-rack copy per rack, then doubling inside each rack.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bounce::core::{StrategyKind, StrategyParams};
use common::{run_steps, StepRun};

/// `(start, from, to)` of every transfer of a run.
fn hops(run: &StepRun) -> Vec<(u64, u32, u32)> {
    run.transfers
        .iter()
        .map(|(at, t)| (*at, t.from.0, t.to.0))
        .collect()
}

/// `racks` racks of `per_rack` hosts each, host 0 (the source) in the first.
fn racks(racks: u32, per_rack: u32) -> Arc<[u32]> {
    (0..racks * per_rack).map(|h| 100 + h / per_rack).collect()
}

/// The most cross-rack flows that leave (or enter) one rack at the same time, over every
/// rack. In the step model every whole-file hop lasts one step, so flows overlap exactly
/// when they start at the same step.
fn max_uplink_flows(run: &StepRun, rack: &[u32]) -> (usize, usize) {
    let mut out: HashMap<(u64, u32), usize> = HashMap::new();
    let mut inn: HashMap<(u64, u32), usize> = HashMap::new();
    for (at, t) in &run.transfers {
        let (rf, rt) = (rack[t.from.index()], rack[t.to.index()]);
        if rf != rt {
            *out.entry((*at, rf)).or_default() += 1;
            *inn.entry((*at, rt)).or_default() += 1;
        }
    }
    (
        out.values().copied().max().unwrap_or(0),
        inn.values().copied().max().unwrap_or(0),
    )
}

fn cross_rack(run: &StepRun, rack: &[u32]) -> Vec<u32> {
    let mut v: Vec<u32> = run
        .transfers
        .iter()
        .filter(|(_, t)| rack[t.from.index()] != rack[t.to.index()])
        .map(|(_, t)| rack[t.to.index()])
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn rack_without_rack_ids_makes_the_transfers_of_bounce_step_for_step() {
    for c in 0..=70 {
        let p = StrategyParams::new(c);
        let rack = run_steps(StrategyKind::Rack, &p, 1);
        let plain = run_steps(StrategyKind::Bounce, &p, 1);
        assert_eq!(hops(&rack), hops(&plain), "C={c}");
    }
}

#[test]
fn rack_follows_its_rule_on_two_racks_of_two() {
    // Rack 100 = {h0, h1}, rack 101 = {h2, h3}.
    // t=0: h0 is the only holder and h1 waits beside it: serve the own rack first, h0 -> h1.
    // t=1: rack 100 has two holders: one seeds rack 101's leader h2; h1 has nobody to serve.
    // t=2: h2 doubles inside its rack: h2 -> h3.
    let rack = racks(2, 2);
    let p = StrategyParams::new(3).with_network(None, None, Some(rack));
    let run = run_steps(StrategyKind::Rack, &p, 1);
    assert_eq!(hops(&run), vec![(0, 0, 1), (1, 0, 2), (2, 2, 3)]);
}

#[test]
fn rack_makes_exactly_one_cross_rack_transfer_into_each_rack_without_the_file() {
    for (n_racks, per_rack) in [(2u32, 1u32), (3, 5), (8, 8), (20, 50), (33, 3), (64, 1)] {
        let rack = racks(n_racks, per_rack);
        let c = n_racks * per_rack - 1;
        let p = StrategyParams::new(c).with_network(None, None, Some(rack.clone()));
        let run = run_steps(StrategyKind::Rack, &p, 1);
        let want: Vec<u32> = (1..n_racks).map(|r| 100 + r).collect();
        assert_eq!(
            cross_rack(&run, &rack),
            want,
            "{n_racks} racks of {per_rack}"
        );
        assert_eq!(run.transfers.len(), c as usize);
    }
}

#[test]
fn rack_puts_at_most_one_flow_each_way_on_an_uplink_where_bounce_piles_them_up() {
    // 20 racks of 50 hosts: bounce sends ~95% of its 999 hops across racks, many at once
    // through the same uplink; rack sends 19, one at a time per uplink and direction.
    let rack = racks(20, 50);
    let c = 999;
    let p = StrategyParams::new(c).with_network(None, None, Some(rack.clone()));
    let aware = run_steps(StrategyKind::Rack, &p, 1);
    let plain = run_steps(StrategyKind::Bounce, &p, 1);
    assert_eq!(max_uplink_flows(&aware, &rack), (1, 1));
    assert_eq!(cross_rack(&aware, &rack).len(), 19);
    let (out, inn) = max_uplink_flows(&plain, &rack);
    assert!(out > 10 && inn > 10, "bounce: {out} out, {inn} in");
    assert!(cross_rack(&plain, &rack).len() > 900);
    // The price when uplinks are as fast as hosts (this step model): the rounds over racks
    // overlap with the doubling inside racks, so 13 hop times instead of bounce's 10. With
    // oversubscribed uplinks bounce's 10 rounds each crawl at a share of an uplink.
    assert_eq!(plain.steps, 10);
    assert_eq!(aware.steps, 13);
}
