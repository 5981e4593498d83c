//! The simulator's model of a bounce-run run, for `--dry-run`'s predictions and `--strategy
//! auto`'s pick: the plan's hosts at the fleet file's rates (others at `--bandwidth`), each
//! strategy bounce-run runs modelled as it runs it (whole-file hops; the chain as a stream
//! held back by [`crate::sim::runner::STREAM_HOP_DELAY`] per hop), with the setup it pays (a connection
//! latency per link, and the controller's handshakes one host after another).
//!
//! bounce-run serves hosts in the order they become ready, which nothing knows in advance,
//! and on a mixed fleet that order matters (a slow host served early can hold a fast sender
//! for a long copy). Each prediction is therefore the median over [`JOIN_ORDERS`] orders
//! (fewer above [`MANY_HOSTS`], where each simulation costs more; one when every host is
//! alike): the list's, and others drawn from a fixed seed, with the range they span.

use std::io::Write;
use std::time::Duration;

use super::plan::Plan;
use crate::fleet::HostsError;
use crate::sim::runner::marking_runnable;
use crate::sim::{self, FleetNetwork, NetworkSpec, PlanConfig, SimConfig, SimError};
use crate::units::format_rate;

/// What the prediction assumes of the network, from bounce-run's flags.
#[derive(Clone, Copy, Debug)]
pub struct Assumptions {
    /// Upload and download rate of every host the fleet file gives no rate for, bytes per
    /// second.
    pub bandwidth: f64,
    /// Setup of one ssh connection between two hosts.
    pub latency: Duration,
    /// The controller's cost per host of connecting and probing, paid one host after
    /// another: host i is ready i times this after the start.
    pub join_interval: Duration,
    /// `--limit-rate`: every host's upload cap, bytes per second.
    pub upload_limit: Option<f64>,
}

/// Why there is no prediction.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The fleet file's racks do not add up.
    #[error(transparent)]
    Fleet(#[from] HostsError),
    /// The simulator refused the scenario.
    #[error("the simulator: {0}")]
    Sim(#[from] SimError),
}

/// The planner's configuration for `plan`'s hosts: bounce-run's strategies, all runnable,
/// the chain streamed.
pub fn plan_config(plan: &Plan, a: &Assumptions) -> Result<PlanConfig, PredictError> {
    let fleet = FleetNetwork::from_parts(&plan.source, &plan.hosts, &plan.racks)?;
    let base = SimConfig {
        latency: a.latency,
        join_interval: a.join_interval,
        network: NetworkSpec {
            fleet: Some(std::sync::Arc::new(fleet)),
            upload_limit: a.upload_limit,
            ..NetworkSpec::default()
        },
        ..SimConfig::new(plan.hosts.len() as u32, plan.size, a.bandwidth)
    };
    Ok(PlanConfig {
        strategies: super::RUNNABLE.to_vec(),
        ..marking_runnable(PlanConfig::new(base))
    })
}

/// How many join orders a prediction is the median of.
pub const JOIN_ORDERS: usize = 15;

/// Above this many hosts, a prediction is the median of [`FEWER_JOIN_ORDERS`] join orders.
pub const MANY_HOSTS: usize = 200;

/// How many join orders a prediction for more than [`MANY_HOSTS`] is the median of.
pub const FEWER_JOIN_ORDERS: usize = 5;

/// The join orders worth simulating for `fleet`: none but the list's when the receivers are
/// all alike.
fn join_orders(fleet: &FleetNetwork) -> usize {
    let same = |v: &[Option<f64>]| v[1..].windows(2).all(|w| w[0] == w[1]);
    let racks_alike = fleet.rack.len() < 2 || fleet.rack[1..].windows(2).all(|w| w[0] == w[1]);
    if same(&fleet.up) && same(&fleet.down) && racks_alike {
        1
    } else if fleet.up.len() - 1 > MANY_HOSTS {
        FEWER_JOIN_ORDERS
    } else {
        JOIN_ORDERS
    }
}

/// A prediction: the planner's table with each candidate's median run over the join orders,
/// fastest first, and the range of makespans each spans.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// The configuration the candidates were simulated with (the list's order).
    pub cfg: PlanConfig,
    /// The candidates, each holding its median run.
    pub plan: sim::Plan,
    /// The fastest and slowest makespan of each candidate, in `plan`'s order.
    pub ranges: Vec<(f64, f64)>,
}

/// Every strategy bounce-run runs, simulated on `plan`'s hosts, fastest first (by median over
/// [`JOIN_ORDERS`] join orders).
pub fn predict(plan: &Plan, a: &Assumptions) -> Result<Prediction, PredictError> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let cfg = plan_config(plan, a)?;
    let mut predicted = sim::plan(&cfg)?;
    let fleet = cfg
        .base
        .network
        .fleet
        .clone()
        .expect("plan_config sets a fleet");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6a6f_696e);
    let orders: Vec<Vec<usize>> = (1..join_orders(&fleet))
        .map(|_| {
            let mut o: Vec<usize> = (1..fleet.up.len()).collect();
            o.shuffle(&mut rng);
            o
        })
        .collect();
    let mut ranked = Vec::new();
    for c in predicted.candidates.drain(..) {
        let mut runs = vec![c.result.clone()];
        for order in &orders {
            let mut base = c.config(&cfg.base);
            base.network.fleet = Some(std::sync::Arc::new(reordered(&fleet, order)));
            runs.push(sim::simulate(c.strategy, &base)?);
        }
        runs.sort_by(|x, y| x.makespan.total_cmp(&y.makespan));
        let range = (runs[0].makespan, runs[runs.len() - 1].makespan);
        let median = runs.swap_remove(runs.len() / 2);
        ranked.push((
            sim::Candidate {
                result: median,
                ..c
            },
            range,
        ));
    }
    ranked.sort_by(|x, y| x.0.result.makespan.total_cmp(&y.0.result.makespan));
    let (candidates, ranges) = ranked.into_iter().unzip();
    predicted.candidates = candidates;
    Ok(Prediction {
        cfg,
        plan: predicted,
        ranges,
    })
}

/// `fleet` with its receivers in `order` (indices 1..=C; the source stays first).
fn reordered(fleet: &FleetNetwork, order: &[usize]) -> FleetNetwork {
    let pick = |v: &[Option<f64>]| {
        std::iter::once(v[0])
            .chain(order.iter().map(|&i| v[i]))
            .collect()
    };
    FleetNetwork {
        up: pick(&fleet.up),
        down: pick(&fleet.down),
        rack: if fleet.rack.is_empty() {
            Vec::new()
        } else {
            std::iter::once(fleet.rack[0])
                .chain(order.iter().map(|&i| fleet.rack[i]))
                .collect()
        },
        rack_uplink: fleet.rack_uplink.clone(),
    }
}

/// Writes `--dry-run`'s prediction: what is assumed, one row per strategy, the range over
/// join orders, and the line for the strategy this run uses.
pub fn write_prediction(
    out: &mut dyn Write,
    plan: &Plan,
    a: &Assumptions,
    prediction: &Prediction,
) -> std::io::Result<()> {
    let predicted = &prediction.plan;
    let fleet = plan.has_fleet_attributes();
    writeln!(
        out,
        "predicted by the simulator at {} per host{}{}, {} per connection, {} per host joining:",
        format_rate(a.bandwidth),
        if fleet {
            " unless the fleet file gives rates"
        } else {
            ""
        },
        match a.upload_limit {
            Some(l) => format!(", uploads capped at {}", format_rate(l)),
            None => String::new(),
        },
        humantime::format_duration(a.latency),
        humantime::format_duration(a.join_interval),
    )?;
    crate::report::write_candidates(out, predicted, plan.size)?;
    if prediction.ranges.iter().any(|(lo, hi)| lo != hi) {
        writeln!(
            out,
            "(each the median over the orders in which the hosts may finish connecting; the \
             fastest and slowest: {})",
            predicted
                .candidates
                .iter()
                .zip(&prediction.ranges)
                .map(|(c, (lo, hi))| format!("{} {lo:.2}–{hi:.2}s", c.strategy))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if let Some(c) = predicted
        .candidates
        .iter()
        .find(|c| c.strategy == plan.kind)
    {
        let t = plan.size as f64 / a.bandwidth;
        // T = S/B means little when the fleet gives each host its own rate.
        let scale = if fleet {
            format!(
                "{:.2}× the lower bound of {:.2}s",
                c.over_bound(),
                c.result.lower_bound
            )
        } else {
            format!("{:.2} T, T = S/B = {:.2}s", c.result.makespan / t, t)
        };
        writeln!(
            out,
            "this run: {}, predicted makespan {:.2}s ({scale})",
            plan.kind, c.result.makespan,
        )?;
    }
    Ok(())
}
