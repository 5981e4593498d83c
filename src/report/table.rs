//! The readable table `bounce-sim` prints on stdout.

use std::io::Write;

use super::summary::Summary;
use crate::core::StrategyKind;

/// Writes one row per host count and one column per strategy, each cell the mean makespan in
/// units of T, with the min–max range when there were several runs.
pub fn write_table<W: Write>(mut out: W, summaries: &[Summary]) -> std::io::Result<()> {
    let mut strategies: Vec<StrategyKind> = Vec::new();
    let mut hosts: Vec<u32> = Vec::new();
    for s in summaries {
        if !strategies.contains(&s.strategy) {
            strategies.push(s.strategy);
        }
        if !hosts.contains(&s.hosts) {
            hosts.push(s.hosts);
        }
    }
    let ranged = summaries.iter().any(|s| s.runs > 1);
    let width = if ranged { 22 } else { 10 };
    write!(out, "{:>6}", "hosts")?;
    for k in &strategies {
        write!(out, "  {:>width$}", format!("{k}/T"))?;
    }
    writeln!(out)?;
    for &h in &hosts {
        write!(out, "{h:>6}")?;
        for &k in &strategies {
            let cell = summaries
                .iter()
                .find(|s| s.hosts == h && s.strategy == k)
                .map(|s| {
                    if ranged {
                        format!("{:.3} [{:.3}-{:.3}]", s.mean, s.min, s.max)
                    } else {
                        format!("{:.3}", s.mean)
                    }
                })
                .unwrap_or_default();
            write!(out, "  {cell:>width$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
