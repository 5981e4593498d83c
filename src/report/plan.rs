//! A plan on paper: the table `bounce-sim plan` prints, and the same as one JSON document
//! (`--json`).

use std::io::Write;

use serde::Serialize;

use crate::sim::{Candidate, Plan, PlanConfig};
use crate::units::{format_rate, format_size};

/// One candidate in the JSON document.
#[derive(Debug, Serialize)]
pub struct CandidateJson {
    /// Strategy name, as `--strategy` takes it.
    pub strategy: &'static str,
    /// Chunk size in bytes; `null` for whole-file strategies.
    pub chunk: Option<u64>,
    /// Modelled as a stream (bounce-run's chain): `chunk` is the model's granularity.
    pub streamed: bool,
    /// Predicted makespan, seconds.
    pub predicted_s: f64,
    /// Predicted makespan over the fluid lower bound.
    pub over_bound: f64,
    /// Bytes the source uploads.
    pub source_bytes: u64,
    /// bounce-run can execute it.
    pub runnable: bool,
}

impl From<&Candidate> for CandidateJson {
    fn from(c: &Candidate) -> Self {
        CandidateJson {
            strategy: c.strategy.name(),
            chunk: c.chunk,
            streamed: c.streamed,
            predicted_s: c.result.makespan,
            over_bound: c.over_bound(),
            source_bytes: c.result.source_bytes,
            runnable: c.runnable,
        }
    }
}

/// The whole plan as `bounce-sim plan --json` prints it.
#[derive(Debug, Serialize)]
pub struct PlanJson {
    /// File size, bytes.
    pub size: u64,
    /// Receivers.
    pub receivers: u32,
    /// B, bytes per second (hosts a fleet file gives rates for run at those).
    pub bandwidth: f64,
    /// Whether a fleet file gave the hosts' rates.
    pub fleet: bool,
    /// Connection setup latency, seconds.
    pub latency_s: f64,
    /// T = S/B, seconds.
    pub t_s: f64,
    /// The network's fluid lower bound, seconds.
    pub lower_bound_s: f64,
    /// Every candidate, fastest first.
    pub candidates: Vec<CandidateJson>,
    /// The candidate to run.
    pub recommended: CandidateJson,
    /// A faster candidate that bounce-run cannot run, if there is one.
    pub faster_simulated_only: Option<CandidateJson>,
    /// Why the recommended candidate is recommended.
    pub why: String,
}

impl PlanJson {
    /// The document for `plan`, made with `cfg`.
    pub fn new(cfg: &PlanConfig, plan: &Plan) -> Self {
        let b = &cfg.base;
        PlanJson {
            size: b.size,
            receivers: b.receivers,
            bandwidth: b.bandwidth,
            fleet: b.network.fleet.is_some(),
            latency_s: b.latency.as_secs_f64(),
            t_s: b.t(),
            lower_bound_s: plan.best().result.lower_bound,
            candidates: plan.candidates.iter().map(CandidateJson::from).collect(),
            recommended: plan.recommended().into(),
            faster_simulated_only: plan.faster_simulated_only().map(Into::into),
            why: plan.why(),
        }
    }
}

/// Writes the plan as one JSON document and a newline.
pub fn write_plan_json(out: &mut dyn Write, cfg: &PlanConfig, plan: &Plan) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &PlanJson::new(cfg, plan))?;
    writeln!(out)
}

/// Writes the candidates' rows under their header, fastest first: strategy, chunk,
/// predicted time, its ratio to the lower bound, what the source uploads (`size` is the
/// file's) and whether bounce-run runs it.
pub fn write_candidates(out: &mut dyn Write, plan: &Plan, size: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>10} {:>14} {:>9} {:>22} {:>11}",
        "strategy", "chunk", "predicted", "×bound", "source uploads", "bounce-run"
    )?;
    for c in &plan.candidates {
        let copies = c.result.source_bytes as f64 / size as f64;
        writeln!(
            out,
            "{:<12} {:>10} {:>12.3} s {:>9.3} {:>22} {:>11}",
            c.strategy.name(),
            chunk_text(c),
            c.result.makespan,
            c.over_bound(),
            format!("{} ({copies:.2}×)", format_size(c.result.source_bytes)),
            if c.runnable { "yes" } else { "-" }
        )?;
    }
    Ok(())
}

fn chunk_text(c: &Candidate) -> String {
    match (c.chunk, c.streamed) {
        (_, true) => "stream".into(),
        (Some(chunk), false) => format_size(chunk),
        (None, false) => "whole file".into(),
    }
}

/// Writes the plan table: one line per candidate, fastest first, then the recommendation
/// and, when one is faster, the best strategy bounce-run cannot run.
pub fn write_plan_table(out: &mut dyn Write, cfg: &PlanConfig, plan: &Plan) -> std::io::Result<()> {
    let b = &cfg.base;
    let rates = if b.network.fleet.is_some() {
        format!(
            "rates from the fleet file (others at {})",
            format_rate(b.bandwidth)
        )
    } else {
        format!("{} per host", format_rate(b.bandwidth))
    };
    writeln!(
        out,
        "Plan: {} to {} hosts, {rates}, latency {}, jitter {}",
        format_size(b.size),
        b.receivers,
        humantime::format_duration(b.latency),
        b.jitter
    )?;
    writeln!(
        out,
        "T = S/B = {:.3} s; fluid lower bound {:.3} s",
        b.t(),
        plan.best().result.lower_bound
    )?;
    write_candidates(out, plan, b.size)?;
    let rec = plan.recommended();
    let chunk = match (rec.chunk, rec.streamed) {
        (Some(c), false) => format!(" with --chunk {}", format_size(c).replace(' ', "")),
        _ => String::new(),
    };
    writeln!(out, "recommended: {}{chunk}: {}", rec.strategy, plan.why())?;
    if let Some(f) = plan.faster_simulated_only() {
        writeln!(
            out,
            "simulated only: {} would be {:.1}% ahead of it ({:.3} s), but bounce-run cannot \
             run it",
            f.strategy,
            (rec.result.makespan / f.result.makespan - 1.0) * 100.0,
            f.result.makespan
        )?;
    }
    Ok(())
}
