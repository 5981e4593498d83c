//! The simulator's CSV: one row per (strategy, hosts, run).

use std::io::Write;

use super::ReportError;
use crate::sim::{Point, SimConfig};

/// Writes a header and one row per point. `base` gives the size, bandwidth, chunk, latency,
/// overheads and jitter shared by every point. Floats are written in Rust's shortest round-trip form,
/// so the same inputs give the same bytes on every machine.
pub fn write_csv<W: Write>(out: W, base: &SimConfig, points: &[Point]) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "strategy",
        "hosts",
        "run",
        "seed",
        "size_bytes",
        "bandwidth_bytes_per_s",
        "chunk_bytes",
        "chunks",
        "latency_s",
        "chunk_overhead_s",
        "join_interval_s",
        "jitter",
        "makespan_s",
        "t_s",
        "makespan_over_t",
        "transfers",
        "source_bytes",
        "lower_bound_s",
        "makespan_over_bound",
    ])?;
    let t = base.t();
    for p in points {
        w.write_record([
            p.strategy.name().to_string(),
            p.hosts.to_string(),
            p.run.to_string(),
            p.seed.to_string(),
            base.size.to_string(),
            base.bandwidth.to_string(),
            base.chunk.to_string(),
            p.chunks.to_string(),
            base.latency.as_secs_f64().to_string(),
            base.chunk_overhead.as_secs_f64().to_string(),
            base.join_interval.as_secs_f64().to_string(),
            base.jitter.to_string(),
            p.makespan.to_string(),
            t.to_string(),
            (p.makespan / t).to_string(),
            p.transfers.to_string(),
            p.source_bytes.to_string(),
            p.lower_bound.to_string(),
            (p.makespan / p.lower_bound).to_string(),
        ])?;
    }
    w.flush().map_err(|e| ReportError::Csv(e.into()))?;
    Ok(())
}
