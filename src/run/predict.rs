//! The simulator's model of a bounce-run run, for `--dry-run`'s predictions and `--strategy
//! auto`'s pick: the plan's hosts at the fleet file's rates (others at `--bandwidth`), each
//! strategy bounce-run runs modelled as it runs it (whole-file hops; the chain as a stream
//! held back by [`super::STREAM_HOP_DELAY`] per hop), with the setup it pays (a connection
//! latency per link, and the controller's handshakes one host after another).

use std::io::Write;
use std::time::Duration;

use super::plan::Plan;
use crate::fleet::HostsError;
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
            ..NetworkSpec::default()
        },
        ..SimConfig::new(plan.hosts.len() as u32, plan.size, a.bandwidth)
    };
    Ok(PlanConfig {
        strategies: super::RUNNABLE.to_vec(),
        runnable: super::RUNNABLE.to_vec(),
        stream_hop_delay: Some(super::STREAM_HOP_DELAY),
        ..PlanConfig::new(base)
    })
}

/// Every strategy bounce-run runs, simulated on `plan`'s hosts, fastest first.
pub fn predict(plan: &Plan, a: &Assumptions) -> Result<(PlanConfig, sim::Plan), PredictError> {
    let cfg = plan_config(plan, a)?;
    let predicted = sim::plan(&cfg)?;
    Ok((cfg, predicted))
}

/// Writes `--dry-run`'s prediction: what is assumed, one row per strategy, and the line for
/// the strategy this run uses.
pub fn write_prediction(
    out: &mut dyn Write,
    plan: &Plan,
    a: &Assumptions,
    predicted: &sim::Plan,
) -> std::io::Result<()> {
    let fleet = plan.has_fleet_attributes();
    writeln!(
        out,
        "predicted by the simulator at {} per host{}, {} per connection, {} per host joining:",
        format_rate(a.bandwidth),
        if fleet {
            " unless the fleet file gives rates"
        } else {
            ""
        },
        humantime::format_duration(a.latency),
        humantime::format_duration(a.join_interval),
    )?;
    crate::report::write_candidates(out, predicted, plan.size)?;
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
