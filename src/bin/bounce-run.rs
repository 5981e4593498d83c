//! `bounce-run`: push one file from this machine to many hosts over OpenSSH.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};

use bounce::core::{HostId, StrategyKind};
use bounce::run::plan::{HostSource, Plan};
use bounce::run::progress::Progress;
use bounce::run::ssh::{SourceFile, SshOptions, SshTransport, Target};
use bounce::run::{drive, report, ByteCounters, DriveConfig};
use bounce::units;

const EXIT_CODES: &str = "\
Exit status:
  0    every host holds a verified copy at DEST (sent now, or already up to date)
  1    some hosts failed; each is named with its reason (the others completed)
  2    bad invocation or input (missing or unreadable SRC, empty or malformed host list,
       relative DEST, duplicate host, bad flag value), detected before anything is written
  130  interrupted (SIGINT or SIGTERM): remote processes stopped, temporary files removed,
       nothing unverified left at DEST

Hosts file: one `[user@]host[:port]` (or `[v6addr]:port`) per line, optionally followed by
a DEST for that host; `#` starts a comment. Hops between hosts run `ssh` on the sending host
with its own ~/.ssh setup, addressing the next host exactly as written here.";

/// Send one large file from this machine to many hosts over OpenSSH, fast: hosts that already
/// hold the file send it on, so the source's upload is not the bottleneck.
#[derive(Parser, Debug)]
#[command(name = "bounce-run", version, after_help = EXIT_CODES)]
struct Cli {
    /// How the file spreads: linear (source to all at once), bounce (whole-file doubling) or
    /// chain (streamed through all hosts in list order, each relaying it as it arrives).
    #[arg(long, default_value = "bounce", value_parser = parse_kind)]
    strategy: StrategyKind,
    /// Read receivers from FILE (repeatable; order is kept).
    #[arg(long = "hosts-file", value_name = "FILE")]
    hosts_file: Vec<PathBuf>,
    /// Receivers, comma-separated `[user@]host[:port]` (repeatable).
    #[arg(short = 'H', value_name = "HOST[,HOST...]")]
    hosts: Vec<String>,
    /// Write one CSV row per host: host,from,start_s,end_s,bytes,status,error.
    #[arg(long, value_name = "FILE.csv")]
    report: Option<PathBuf>,
    /// Print the plan and the simulator's predicted time; connect to nothing.
    #[arg(long)]
    dry_run: bool,
    /// ssh_config file for the controller's connections.
    #[arg(short = 'F', value_name = "ssh_config")]
    ssh_config: Option<PathBuf>,
    /// Accept and record unknown host keys (StrictHostKeyChecking=accept-new) instead of
    /// failing those hosts.
    #[arg(long)]
    accept_new_host_keys: bool,
    /// Chunk size the chain is tracked in: progress is counted in chunks, and when a host in
    /// the chain is lost its successor is sent the chunks it lacks, one request each.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    chunk: u64,
    /// Failed hops a host may suffer (each retried from another holder when possible) before
    /// it is given up.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// ssh ConnectTimeout, for the controller and for hops between hosts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Per-host bandwidth assumed by --dry-run's prediction.
    #[arg(long, default_value = "1Gbit", value_parser = parse_rate)]
    bandwidth: f64,
    /// Setup latency of an ssh connection between two hosts, assumed by --dry-run's
    /// prediction.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    latency: Duration,
    /// The file to send, on this machine.
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// Absolute path of the copy on every host (a hosts file may override it per host).
    #[arg(value_name = "DEST")]
    dest: String,
}

/// The strategies the runner's transport implements: whole-file hops (linear, bounce) and
/// chain links (streams, and chunk requests after a failure).
fn parse_kind(s: &str) -> Result<StrategyKind, String> {
    match s.parse::<StrategyKind>() {
        Ok(k @ (StrategyKind::Linear | StrategyKind::Bounce | StrategyKind::Chain)) => Ok(k),
        _ => Err(format!(
            "unknown strategy '{s}' for bounce-run (expected linear, bounce or chain)"
        )),
    }
}
fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size(s).map_err(|e| e.to_string())
}
fn parse_rate(s: &str) -> Result<f64, String> {
    units::parse_rate(s).map_err(|e| e.to_string())
}
fn parse_duration(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

/// Reads -H and --hosts-file in the order they were given.
fn host_sources(m: &clap::ArgMatches, cli: &Cli) -> Vec<HostSource> {
    let mut v: Vec<(usize, HostSource)> = Vec::new();
    if let Some(idx) = m.indices_of("hosts") {
        v.extend(idx.zip(cli.hosts.iter().map(|h| HostSource::Arg(h.clone()))));
    }
    if let Some(idx) = m.indices_of("hosts_file") {
        v.extend(idx.zip(cli.hosts_file.iter().map(|f| HostSource::File(f.clone()))));
    }
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, s)| s).collect()
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let sources = host_sources(&matches, &cli);
    let plan = match Plan::build(cli.strategy, &cli.src, &cli.dest, &sources, cli.chunk) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bounce-run: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.dry_run {
        print!("{}", dry_run(&cli, &plan));
        return ExitCode::SUCCESS;
    }
    match run(cli, plan) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bounce-run: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dry_run(cli: &Cli, plan: &Plan) -> String {
    let mut s = format!(
        "plan: {} {} ({}) to {} hosts, strategy {}, {} chunk(s) of {}\n",
        plan.src.display(),
        units::format_size(plan.size),
        plan.size,
        plan.hosts.len(),
        plan.kind,
        plan.layout.count(),
        units::format_size(plan.layout.chunk_size()),
    );
    for (i, h) in plan.hosts.iter().enumerate() {
        s.push_str(&format!("  {:>3}  {h}  {}\n", i + 1, plan.dest_of(i)));
    }
    s.push_str(&bounce::run::predict::prediction(
        plan,
        cli.bandwidth,
        cli.latency,
    ));
    s
}

fn run(cli: Cli, plan: Plan) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, plan))
}

async fn run_async(cli: Cli, plan: Plan) -> anyhow::Result<ExitCode> {
    // Installed first, so an interrupt during hashing is not lost (or ignored, for a
    // background job whose shell set SIGINT to SIG_IGN).
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let report_file = match &cli.report {
        Some(p) => Some(
            std::fs::File::create(p)
                .with_context(|| format!("--report {}: cannot create", p.display()))?,
        ),
        None => None,
    };
    let src = plan.src.clone();
    let digest = tokio::task::spawn_blocking(move || bounce::run::digest::sha256_file(&src))
        .await?
        .with_context(|| format!("reading SRC {}", plan.src.display()))?;
    let run_id = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let receivers = plan.hosts.len() as u32;
    let counters = Arc::new(ByteCounters::new(plan.hosts.len() + 1));
    let targets = plan
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Target {
            spec: h.clone(),
            dest: plan.dest_of(i).to_string(),
        })
        .collect();
    let transport = Arc::new(SshTransport::new(
        targets,
        SshOptions {
            config_file: cli.ssh_config.clone(),
            accept_new_host_keys: cli.accept_new_host_keys,
            connect_timeout: cli.connect_timeout,
        },
        SourceFile {
            path: plan.src.clone(),
            size: plan.size,
            mode: plan.mode,
            digest,
        },
        plan.layout,
        plan.kind.uses_chunks(),
        run_id,
        Arc::clone(&counters),
    ));
    let names: Vec<String> = plan.hosts.iter().map(ToString::to_string).collect();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = Progress::new(names, counters, plan.size, tty);
    let cfg = DriveConfig {
        kind: plan.kind,
        layout: plan.layout,
        max_attempts: cli.max_attempts,
        receivers,
    };
    let cancel = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    let outcome = drive(transport, &cfg, cancel, &mut progress).await;
    progress.finish();
    print!("{}", report::table(&plan.hosts, &outcome));
    if let (Some(f), Some(p)) = (report_file, &cli.report) {
        report::write_csv(f, &plan.hosts, &outcome)
            .with_context(|| format!("--report {}: cannot write", p.display()))?;
    }
    let _ = HostId::SOURCE;
    Ok(if outcome.interrupted {
        ExitCode::from(130)
    } else if outcome.all_ok() {
        ExitCode::SUCCESS
    } else {
        for (h, r) in plan.hosts.iter().zip(&outcome.hosts) {
            if !r.status.is_some_and(bounce::run::HostStatus::is_ok) {
                eprintln!(
                    "bounce-run: {h} failed: {}",
                    r.error.as_deref().unwrap_or("unknown reason")
                );
            }
        }
        ExitCode::from(1)
    })
}
