//! `bounce-sim`'s command line: its flags, how they map to [`Settings`], and the two things it
//! does with them (simulate a sweep, or plan one host count). The binary only parses, calls
//! [`run`] and turns a [`CliError`] into its exit status.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::scenario::{Resolved, Settings, SettingsError};
use super::topology::{NetworkSettings, RackSettings};
use super::{plan as plan_with, PlanConfig, SimError};
use crate::core::StrategyKind;
use crate::report::{self, Figure, ReportError};
use crate::units::format_size;

const AFTER_HELP: &str = "\
Strategies:
  linear   the source sends to every host at once (pscp, pdcp, Ansible): C·T
  bounce   the blog's whole-file doubling, three-set scheduler: ⌈log2(C+1)⌉·T
  chain    store-and-forward pipeline, k = ⌈S/chunk⌉ chunks: (1 + (C−1)/k)·T
           (plan models it as bounce-run streams it: setup, then a delay per hop)
  binomial binomial pipeline (circulant schedule), optimal: (1 + (L−1)/k)·T, L = ⌈log2(C+1)⌉
  swarm    BitTorrent-like: 6 random neighbours, 4 upload and 4 download slots, rarest first
  bounce-fast  bounce, pairing the fastest free holder with the fastest waiting host
  rack     rack-aware: one cross-rack copy per rack, then doubling inside each rack
  all      every strategy above
  auto     the planner's pick (strategy and chunk size, any strategy) for the largest host
           count

Units: sizes 20GiB, 64MiB, 1GB; rates 1Gbit, 100Mbit, 125MB/s; durations 200ms, 1.5s.

Fleet file (--hosts-file): bounce-run's hosts file, one host per line, with optional
attributes: `web7 up=25Gbit down=25Gbit rack=r2` (`rate=` sets both). `@source up=10Gbit`
describes the source, `@rack r2 uplink=40Gbit` a rack's shared uplink. Unset rates are
--bandwidth. Hosts run in file order, with no random draw.

Exit status:
  0  the simulation ran and its files were written
  1  a file could not be written after the simulation ran
  2  bad input: a flag, a value, the scenario file or the fleet file was wrong (nothing is
     written)

Examples:
  bounce-sim --hosts 1..64
  bounce-sim --scenario sims/blog-figure.toml
  bounce-sim --hosts 1..64 --strategy all --jitter 0.1 --runs 100
  bounce-sim plan --size 100GiB --bandwidth 10Gbit --hosts 1000 --latency 300ms
  bounce-sim plan --size 100GiB --hosts-file fleet.txt --json";

/// Simulate sending one large file from one source to C hosts.
///
/// Runs a discrete-event simulation of each strategy on a flow-level network model (every host
/// uploads and downloads at B, concurrent flows share links max-min fairly, a connection
/// between two hosts takes --latency to set up and then carries its transfers in order, each
/// paying --chunk-overhead, and each flow's rate is scaled by a seeded factor in [1−F, 1+F]).
/// Prints a table of makespans in units of T = S/B and writes a CSV and a PNG figure.
#[derive(Debug, Parser)]
#[command(
    name = "bounce-sim",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print shell completions (bash, zsh, fish, elvish, powershell) or the man page (man)
    /// for bounce-sim, generated from these options, and exit.
    #[arg(long, value_name = "WHAT", exclusive = true)]
    pub generate: Option<crate::cli_docs::Generate>,
    #[command(flatten)]
    args: SimArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Recommend a strategy and chunk size for one host count.
    ///
    /// Simulates every strategy, searching each chunked strategy's best chunk size (powers
    /// of two; a U-shaped search that stops once larger k stops helping), and prints for each
    /// the predicted time, its ratio to the network's fluid lower bound, the bytes the source
    /// uploads, the best chunk size and whether bounce-run can run it. The chain is modelled
    /// as bounce-run streams it. The recommendation is the fastest strategy bounce-run can
    /// run; a faster simulated-only one is shown beside it with its margin. --chunk fixes the
    /// chunk size instead of searching.
    #[command(
        after_help = "Examples:\n  bounce-sim plan --size 100GiB --bandwidth 10Gbit \
                            --hosts 1000 --latency 300ms\n  bounce-sim plan --size 20GiB \
                            --hosts-file fleet.txt --json"
    )]
    Plan(PlanArgs),
}

#[derive(Clone, Debug, clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    sim: SimArgs,
    /// Print the plan as one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Debug, clap::Args)]
struct SimArgs {
    /// Read settings from a scenario file (sims/*.toml); flags given here override it.
    /// Repeat it to run several scenarios, each writing its own outputs.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    scenario: Vec<PathBuf>,
    /// Receivers C (not counting the source): a number, an inclusive range A..B, or a
    /// comma-separated list of both [default: 1..64]
    #[arg(long, value_name = "C|A..B")]
    hosts: Option<String>,
    /// A fleet file: its hosts are the receivers, in order, each at the rates and in the
    /// rack it gives (see below); C is their number.
    #[arg(long, value_name = "FILE")]
    hosts_file: Option<PathBuf>,
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
    /// Setup delay of each connection between two hosts, e.g. an ssh session; connections
    /// stay open and carry their transfers in order [default: 0ms]
    #[arg(long, value_name = "DURATION")]
    latency: Option<String>,
    /// Fixed cost of every transfer (chunk), paid in turn on each connection [default: 0ms]
    #[arg(long, value_name = "DURATION")]
    chunk_overhead: Option<String>,
    /// The source's own cost per receiver of connecting to it, paid one receiver after
    /// another: receiver i is ready i times this after the start, and linear, bounce and chain
    /// serve each as soon as it is ready (as bounce-run does) [default: 0ms]
    #[arg(long, value_name = "DURATION")]
    join_interval: Option<String>,
    /// Receiver HOST dies TIME into every run, such as `3@10s` (repeatable): its transfers
    /// end there and the strategy goes on without it; ignored where C < HOST
    #[arg(long, value_name = "HOST@TIME")]
    fail: Vec<String>,
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
    /// Cap every host's upload, the source's included, at RATE, as bounce-run's --limit-rate
    /// does (downloads are not capped)
    #[arg(long, value_name = "RATE")]
    limit_rate: Option<String>,
    /// Split hosts into N racks of consecutive hosts behind shared uplinks (needs --rack-uplink)
    #[arg(long, value_name = "N", requires = "rack_uplink")]
    racks: Option<u32>,
    /// Capacity of each rack's uplink, each direction
    #[arg(long, value_name = "RATE", requires = "racks")]
    rack_uplink: Option<String>,
    /// Draw the network's fluid lower bound on the figure
    #[arg(long)]
    floor: bool,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// Above this many hosts `plan` leaves swarm out unless asked for: every swarm event
/// rebalances flows across most of the swarm, so a search would take minutes.
const SWARM_PLAN_LIMIT: u32 = 200;

/// Why `bounce-sim` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input was wrong; nothing was written.
    #[error("{0}")]
    BadInput(String),
    /// A setting was wrong; nothing was written.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The simulation could not run.
    #[error("simulation failed: {0}")]
    Sim(#[from] SimError),
    /// An output file could not be produced.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Standard output could not be written.
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
}

impl CliError {
    /// The exit status: 2 for bad input, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) | CliError::Settings(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the command line: a sweep (CSV, PNG, table) or a plan (table or JSON), printed to
/// `out`. Notes go to standard error.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Some(Command::Plan(args)) => plan(args, out),
        None => simulate(cli.args, out),
    }
}

fn settings(cli: SimArgs, file: Option<&Path>) -> Result<Settings, CliError> {
    let mut from_file = match file {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    if cli.hosts_file.is_some() {
        // A fleet file on the command line replaces the scenario's hosts and network, which
        // it would otherwise contradict.
        from_file.hosts = None;
        from_file.network = None;
    }
    Ok(Settings {
        title: None,
        hosts: cli.hosts,
        hosts_file: cli.hosts_file,
        limit_rate: cli.limit_rate,
        size: cli.size,
        bandwidth: cli.bandwidth,
        strategy: cli.strategy,
        chunk: cli.chunk,
        latency: cli.latency,
        chunk_overhead: cli.chunk_overhead,
        join_interval: cli.join_interval,
        fail: (!cli.fail.is_empty()).then_some(cli.fail),
        jitter: cli.jitter,
        seed: cli.seed,
        runs: cli.runs,
        csv: cli.csv,
        png: cli.png,
        floor: cli.floor.then_some(true),
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
    .or(from_file))
}

fn resolve(settings: &Settings, threads: Option<usize>) -> Result<Resolved, CliError> {
    let mut resolved = settings.resolve()?;
    if let Some(n) = threads {
        resolved.sweep.threads = n;
    }
    Ok(resolved)
}

/// The plan's configuration for one host count: bounce-run's strategies marked runnable,
/// its chain modelled as a stream.
fn plan_config(resolved: &Resolved, receivers: u32) -> PlanConfig {
    let mut base = resolved.sweep.base.clone();
    base.receivers = receivers;
    super::runner::marking_runnable(PlanConfig::new(base))
}

/// `--strategy auto`: replaces the strategy and chunk with the planner's pick for the
/// largest host count of the sweep. A sweep simulates every strategy as the simulator models
/// it, so the pick is among all of them, the chain chunked (`plan` and `bounce-run --strategy
/// auto` pick among what bounce-run runs).
fn pick_auto(
    settings: &mut Settings,
    threads: Option<usize>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let Some(list) = settings.strategy.clone() else {
        return Ok(());
    };
    let parts: Vec<&str> = list.split(',').map(str::trim).collect();
    if !parts.iter().any(|p| p.eq_ignore_ascii_case("auto")) {
        return Ok(());
    }
    if parts.len() > 1 {
        return Err(CliError::BadInput(format!(
            "--strategy: '{list}': auto picks one strategy and chunk size, and cannot be combined with others"
        )));
    }
    let probe = Settings {
        strategy: None,
        ..settings.clone()
    };
    let resolved = resolve(&probe, threads)?;
    let hosts = *resolved
        .sweep
        .hosts
        .iter()
        .max()
        .expect("at least one host count");
    let mut base = resolved.sweep.base.clone();
    base.receivers = hosts;
    let cfg = PlanConfig {
        fixed_chunk: settings.chunk.is_some().then_some(base.chunk),
        ..PlanConfig::new(base)
    };
    let plan = plan_with(&cfg)?;
    let best = plan.recommended();
    writeln!(
        out,
        "auto: {} {}at {} hosts ({})",
        best.strategy,
        best.chunk
            .map(|c| format!("with --chunk {} ", format_size(c)))
            .unwrap_or_default(),
        cfg.base.receivers,
        plan.why()
    )?;
    settings.strategy = Some(best.strategy.name().to_string());
    if let Some(c) = best.chunk {
        settings.chunk = Some(c.to_string());
    }
    Ok(())
}

fn plan(args: PlanArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let PlanArgs { sim: args, json } = args;
    let threads = args.threads;
    if args.scenario.len() > 1 {
        return Err(CliError::BadInput(
            "--scenario: plan takes one scenario file".into(),
        ));
    }
    let file = args.scenario.first().cloned();
    let mut s = settings(args, file.as_deref())?;
    if s.hosts.is_none() && s.hosts_file.is_none() {
        return Err(CliError::BadInput(
            "--hosts: plan needs one host count, such as --hosts 1000, or a --hosts-file".into(),
        ));
    }
    let fixed = s.chunk.is_some();
    let strategies = match s.strategy.take() {
        Some(list) if list.trim() != "auto" => Some(list),
        _ => None,
    };
    s.strategy = strategies.clone();
    let resolved = resolve(&s, threads)?;
    let [hosts] = resolved.sweep.hosts[..] else {
        return Err(CliError::BadInput(format!(
            "--hosts: plan takes one host count, not '{}'",
            s.hosts.as_deref().unwrap_or_default()
        )));
    };
    let mut cfg = plan_config(&resolved, hosts);
    if strategies.is_some() {
        cfg.strategies = resolved.sweep.strategies.clone();
    } else if hosts > SWARM_PLAN_LIMIT {
        cfg.strategies.retain(|&k| k != StrategyKind::Swarm);
        eprintln!(
            "note: swarm is left out above {SWARM_PLAN_LIMIT} hosts, where its flow model is slow \
             to simulate; --strategy swarm includes it"
        );
    }
    if fixed {
        cfg.fixed_chunk = Some(cfg.base.chunk);
    }
    let plan = plan_with(&cfg)?;
    if json {
        report::write_plan_json(out, &cfg, &plan)?;
    } else {
        report::write_plan_table(out, &cfg, &plan)?;
    }
    Ok(())
}

fn simulate(args: SimArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if args.scenario.len() <= 1 {
        let file = args.scenario.first().cloned();
        return simulate_one(args, file.as_deref(), out);
    }
    if args.csv.is_some() || args.png.is_some() {
        return Err(CliError::BadInput(
            "--csv and --png name one output; with several --scenario files each writes its own"
                .into(),
        ));
    }
    // Check every file before running any, so bad input writes nothing.
    for file in &args.scenario {
        resolve(&settings(args.clone(), Some(file))?, args.threads)?;
    }
    for (i, file) in args.scenario.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        simulate_one(args.clone(), Some(file), out)?;
    }
    Ok(())
}

fn simulate_one(args: SimArgs, file: Option<&Path>, out: &mut dyn Write) -> Result<(), CliError> {
    let threads = args.threads;
    let mut settings = settings(args, file)?;
    pick_auto(&mut settings, threads, out)?;
    let resolved = resolve(&settings, threads)?;
    for (flag, path, given) in [
        ("--csv", &resolved.csv, settings.csv.is_some()),
        ("--png", &resolved.png, settings.png.is_some()),
    ] {
        // The default `plots/` is made if missing; a directory the user named must exist.
        if let (false, Some(dir)) = (given, path.parent()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::BadInput(format!("{flag}: {}: {e}", dir.display())))?;
        }
        report::check_writable(path).map_err(|e| CliError::BadInput(format!("{flag}: {e}")))?;
    }

    let points = super::sweep(&resolved.sweep)?;
    let base = &resolved.sweep.base;
    let mut csv = Vec::new();
    report::write_csv(&mut csv, base, &points)?;
    let summaries = report::summarize(&points, base.t());
    let png = report::render_png(&Figure {
        title: resolved.title.clone(),
        summaries: &summaries,
        floor: resolved.floor.then(|| {
            (
                "lower bound".to_string(),
                report::floor_points(&points, base.t()),
            )
        }),
    })?;
    report::write_atomically(&resolved.csv, &csv)?;
    report::write_atomically(&resolved.png, &png)?;

    writeln!(out, "{}", resolved.title)?;
    writeln!(
        out,
        "T = S/B = {:.3} s; makespans below are in units of T",
        base.t()
    )?;
    report::write_table(&mut *out, &summaries)?;
    writeln!(
        out,
        "wrote {} and {}",
        resolved.csv.display(),
        resolved.png.display()
    )?;
    Ok(())
}
