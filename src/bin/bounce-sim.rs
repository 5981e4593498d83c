//! `bounce-sim`: simulate distributing one file to many hosts, and draw the figure.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use bounce::report::{self, Figure};
use bounce::sim::{self, NetworkSettings, RackSettings, Settings};

const AFTER_HELP: &str = "\
Strategies:
  linear   the source sends to every host at once (pscp, pdcp, Ansible): C·T
  bounce   the blog's whole-file doubling, three-set scheduler: ⌈log2(C+1)⌉·T
  chain    store-and-forward pipeline, k = ⌈S/chunk⌉ chunks: (1 + (C−1)/k)·T
  binomial binomial pipeline (circulant schedule), optimal: (1 + (L−1)/k)·T, L = ⌈log2(C+1)⌉
  swarm    BitTorrent-like: 6 random neighbours, 4 upload and 4 download slots, rarest first
  all      every strategy above

Units: sizes 20GiB, 64MiB, 1GB; rates 1Gbit, 100Mbit, 125MB/s; durations 200ms, 1.5s.

Exit status:
  0  the simulation ran and its files were written
  1  a file could not be written after the simulation ran
  2  bad input: a flag, a value or the scenario file was wrong (nothing is written)

Examples:
  bounce-sim --hosts 1..64
  bounce-sim --scenario sims/blog-figure.toml
  bounce-sim --hosts 1..64 --strategy all --jitter 0.1 --runs 100";

/// Simulate sending one large file from one source to C hosts.
///
/// Runs a discrete-event simulation of each strategy on a flow-level network model (every host
/// uploads and downloads at B, concurrent flows share links max-min fairly, each transfer
/// starts after --latency, each flow's rate is scaled by a seeded factor in [1−F, 1+F]).
/// Prints a table of makespans in units of T = S/B and writes a CSV and a PNG figure.
#[derive(Debug, Parser)]
#[command(name = "bounce-sim", version, after_help = AFTER_HELP)]
struct Cli {
    /// Read settings from a scenario file (sims/*.toml); flags given here override it.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Receivers C (not counting the source): a number or an inclusive range A..B [default: 1..64]
    #[arg(long, value_name = "C|A..B")]
    hosts: Option<String>,
    /// File size S [default: 20GiB]
    #[arg(long, value_name = "SIZE")]
    size: Option<String>,
    /// Upload and download bandwidth B of every host [default: 1Gbit]
    #[arg(long, value_name = "RATE")]
    bandwidth: Option<String>,
    /// Strategies to compare, comma-separated, or `all` [default: linear,bounce]
    #[arg(long, value_name = "LIST")]
    strategy: Option<String>,
    /// Chunk size for chunked strategies (chain, binomial, swarm) [default: 64MiB]
    #[arg(long, value_name = "SIZE")]
    chunk: Option<String>,
    /// Setup delay before each transfer moves bytes, e.g. an ssh connection [default: 0ms]
    #[arg(long, value_name = "DURATION")]
    latency: Option<String>,
    /// Rate jitter F in [0, 1): each flow's rate is scaled by a factor uniform in [1−F, 1+F] [default: 0]
    #[arg(long, value_name = "F")]
    jitter: Option<f64>,
    /// Base seed; run r at C hosts uses a seed derived from it [default: 1]
    #[arg(long)]
    seed: Option<u64>,
    /// Runs per (strategy, hosts) point [default: 1]
    #[arg(long)]
    runs: Option<u32>,
    /// CSV output, one row per (strategy, hosts, run) [default: plots/bounce-sim.csv]
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// PNG figure output [default: plots/bounce-sim.png]
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// Log-normal spread σ of every receiver's bandwidth around B (seeded) [default: 0]
    #[arg(long, value_name = "SIGMA")]
    spread: Option<f64>,
    /// Upload bandwidth of the source, if not B
    #[arg(long, value_name = "RATE")]
    source_bandwidth: Option<String>,
    /// Split hosts into N racks of consecutive hosts behind shared uplinks (needs --rack-uplink)
    #[arg(long, value_name = "N", requires = "rack_uplink")]
    racks: Option<u32>,
    /// Capacity of each rack's uplink, each direction
    #[arg(long, value_name = "RATE", requires = "racks")]
    rack_uplink: Option<String>,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// An error of the user's input: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

fn run(cli: Cli) -> anyhow::Result<()> {
    let from_file = match &cli.scenario {
        Some(path) => Settings::from_file(path).map_err(|e| BadInput(e.to_string()))?,
        None => Settings::default(),
    };
    let settings = Settings {
        title: None,
        hosts: cli.hosts,
        size: cli.size,
        bandwidth: cli.bandwidth,
        strategy: cli.strategy,
        chunk: cli.chunk,
        latency: cli.latency,
        jitter: cli.jitter,
        seed: cli.seed,
        runs: cli.runs,
        csv: cli.csv,
        png: cli.png,
        network: (cli.spread.is_some() || cli.source_bandwidth.is_some() || cli.racks.is_some())
            .then(|| NetworkSettings {
                source: cli.source_bandwidth,
                spread: cli.spread,
                classes: Vec::new(),
                racks: cli
                    .racks
                    .zip(cli.rack_uplink)
                    .map(|(count, uplink)| RackSettings { count, uplink }),
            }),
    }
    .or(from_file);
    let mut resolved = settings.resolve().map_err(|e| BadInput(e.to_string()))?;
    if let Some(n) = cli.threads {
        resolved.sweep.threads = n;
    }
    for (flag, path) in [("--csv", &resolved.csv), ("--png", &resolved.png)] {
        report::check_writable(path).map_err(|e| BadInput(format!("{flag}: {e}")))?;
    }

    let points = sim::sweep(&resolved.sweep).context("simulation failed")?;
    let base = &resolved.sweep.base;
    let mut csv = Vec::new();
    report::write_csv(&mut csv, base, &points)?;
    let summaries = report::summarize(&points, base.t());
    let png = report::render_png(&Figure {
        title: resolved.title.clone(),
        summaries: &summaries,
        floor: None,
    })?;
    report::write_atomically(&resolved.csv, &csv)?;
    report::write_atomically(&resolved.png, &png)?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", resolved.title)?;
    writeln!(
        out,
        "T = S/B = {:.3} s; makespans below are in units of T",
        base.t()
    )?;
    report::write_table(&mut out, &summaries)?;
    writeln!(
        out,
        "wrote {} and {}",
        resolved.csv.display(),
        resolved.png.display()
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message spans several lines; keep the line that names the flag.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("bounce-sim: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.is::<BadInput>() { 2 } else { 1 };
            eprintln!("bounce-sim: {e:#}");
            ExitCode::from(code)
        }
    }
}
