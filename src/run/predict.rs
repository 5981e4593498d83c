//! `--dry-run`'s prediction: the simulator's makespan for the plan.

use std::time::Duration;

use super::plan::Plan;

/// Lines giving the simulator's predicted makespan for `plan` at `bandwidth` bytes/s per host
/// and `latency` per hop.
pub fn prediction(plan: &Plan, bandwidth: f64, latency: Duration) -> String {
    let mut cfg = crate::sim::SimConfig::new(plan.hosts.len() as u32, plan.size, bandwidth);
    cfg.chunk = plan.layout.chunk_size();
    cfg.latency = latency;
    let t = plan.size as f64 / bandwidth;
    match crate::sim::simulate(plan.kind, &cfg) {
        Ok(r) => format!(
            "predicted makespan at {} per host, {} latency: {:.2}s ({:.2} T, T = S/B = {:.2}s)\n",
            crate::units::format_rate(bandwidth),
            humantime::format_duration(latency),
            r.makespan,
            r.makespan / t,
            t
        ),
        Err(e) => format!("no prediction: {e}\n"),
    }
}
