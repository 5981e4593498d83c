//! Mean, minimum and maximum of the runs at each (strategy, hosts) point.

use crate::core::StrategyKind;
use crate::sim::Point;

/// The runs of one strategy at one host count, in units of T.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Receivers, C.
    pub hosts: u32,
    /// Mean makespan over T.
    pub mean: f64,
    /// Smallest makespan over T.
    pub min: f64,
    /// Largest makespan over T.
    pub max: f64,
    /// Number of runs.
    pub runs: u32,
}

/// Groups `points` by (strategy, hosts), keeping the order of first appearance; `t` is S/B in
/// seconds.
pub fn summarize(points: &[Point], t: f64) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for p in points {
        let x = p.makespan / t;
        match out
            .iter_mut()
            .find(|s| s.strategy == p.strategy && s.hosts == p.hosts)
        {
            Some(s) => {
                s.mean += x;
                s.min = s.min.min(x);
                s.max = s.max.max(x);
                s.runs += 1;
            }
            None => out.push(Summary {
                strategy: p.strategy,
                hosts: p.hosts,
                mean: x,
                min: x,
                max: x,
                runs: 1,
            }),
        }
    }
    for s in &mut out {
        s.mean /= f64::from(s.runs);
    }
    out
}
