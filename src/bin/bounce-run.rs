//! `bounce-run`: push one file from this machine to many hosts over OpenSSH.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};

use bounce::core::StrategyKind;
use bounce::run::codec::{self, Codec, CodecError};
use bounce::run::plan::{HostSource, Plan};
use bounce::run::predict::Assumptions;
use bounce::run::progress::Progress;
use bounce::run::ssh::{DestState, Pack, SourceFile, SshOptions, SshTransport, Target};
use bounce::run::transport::{Transport, TransportError};
use bounce::run::tree;
use bounce::run::{drive, report, ByteCounters, DriveConfig};
use bounce::units;

/// What `-h` says after the options; `--help` says [`EXIT_CODES`].
const EXIT_SHORT: &str = "\
Exit status: 0 every host holds a verified copy, 1 some hosts failed (each named), 2 bad
input (nothing written), 130 interrupted. `--help` says more, and describes the hosts file.";

const EXIT_CODES: &str = "\
Exit status:
  0    every host holds a verified copy at DEST (sent now, or already up to date), and
       --then, if given, exited 0 on each
  1    some hosts failed, each named with its reason (the others completed); or cleanup
       could not remove something, named with its host; or SRC changed during the run; or
       --then failed on some host, named with its exit status
  2    bad invocation or input (missing or unreadable SRC, empty or malformed host list,
       a DEST that is not an absolute path to a file, duplicate host, bad flag value, an
       unwritable --report, a --compress tool missing here or on a host; for a directory SRC or
       --sparse: a symlink leading out of the tree, a FIFO, socket or device in it, a DEST
       that is not a directory for a tree, GNU tar missing on a host), detected before
       anything is written
  130  interrupted (SIGINT or SIGTERM): remote processes stopped, temporary files removed
       (what could not be is named, as for 1), nothing unverified left at DEST. A second
       interrupt during that cleanup exits at once, naming what may be left on which host.

Hosts file: one `[user@]host[:port]` (or `[v6addr]:port`) per line, optionally followed by
a DEST for that host; `#` starts a comment. Hops between hosts run `ssh` on the sending host
with its own ~/.ssh setup, addressing the next host exactly as written here. A hosts file is
also a fleet file: attributes after the host give its rates and rack, for --dry-run's
predictions and --strategy auto (`web7 /srv/x up=25Gbit down=10Gbit rack=r2`, `rate=` sets
both), `@source up=10Gbit` describes this machine and `@rack r2 uplink=40Gbit` a rack's
shared uplink. The run itself ignores them.

--json prints one JSON document on stdout when the run ends, in place of the table:
{\"summary\": {...}, \"hosts\": [{\"host\", \"status\", \"from\", \"start_s\", \"end_s\",
\"bytes\", \"error\", \"digest\", \"then_status\", \"then_output\"}, ...]}.";

/// Send one large file from this machine to many hosts over OpenSSH, fast: hosts that already
/// hold the file send it on, so the source's upload is not the bottleneck.
#[derive(Parser, Debug)]
#[command(name = "bounce-run", version, after_help = EXIT_SHORT, after_long_help = EXIT_CODES)]
struct Cli {
    /// How the file spreads: chain, bounce, linear or auto
    ///
    /// - chain (the default): streamed through all hosts in the order they become ready, each
    ///   relaying it as it arrives. A dead host is passed by a stream that resumes at its
    ///   successor's byte count; a host under a quarter of its feeder's sustained rate is cut
    ///   out and fed at its own pace; a first host too slow for a run with more than 15 s to
    ///   go is found by feeding another host from the controller beside it for a moment; the
    ///   hosts that took a corrupt host's bytes are fed again.
    /// - bounce: the post's whole-file doubling. Every hop is a whole-file copy from a host
    ///   whose copy was verified first, so no host passes on bytes nobody has checked yet.
    /// - linear: the source sends to every host at once.
    /// - auto: the one the simulator predicts fastest for these hosts, with the rates the
    ///   fleet file gives, or --bandwidth; it says what it picked and why before it starts.
    ///
    /// The README compares them, with the commands that measured them.
    #[arg(long, default_value = "chain", value_parser = parse_choice, verbatim_doc_comment)]
    strategy: Choice,
    /// Read receivers from FILE (repeatable; order is kept)
    #[arg(long = "hosts-file", value_name = "FILE")]
    hosts_file: Vec<PathBuf>,
    /// Receivers, comma-separated `[user@]host[:port]` (repeatable)
    #[arg(short = 'H', value_name = "HOST[,HOST...]")]
    hosts: Vec<String>,
    /// Write one CSV row per host to FILE.csv, whose directory must exist
    ///
    /// Columns: host,from,start_s,end_s,bytes,status,error,digest,then_status,then_output.
    /// Checked before anything is sent, and written whole or not at all.
    #[arg(long, value_name = "FILE.csv")]
    report: Option<PathBuf>,
    /// Print the plan and each strategy's predicted time; connect to nothing
    #[arg(long)]
    dry_run: bool,
    /// Print the report as one JSON document instead of the table
    ///
    /// With --dry-run, the prediction as `bounce-sim plan --json` prints it.
    #[arg(long)]
    json: bool,
    /// ssh_config file for the controller's connections
    #[arg(short = 'F', value_name = "ssh_config")]
    ssh_config: Option<PathBuf>,
    /// Accept and record unknown host keys instead of failing those hosts
    ///
    /// As StrictHostKeyChecking=accept-new. By default an unknown host key fails its host.
    #[arg(long)]
    accept_new_host_keys: bool,
    /// Chunk size the chain tracks progress, repairs and stragglers in
    ///
    /// A link that cannot stream sends the chunks it lacks one request each.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    chunk: u64,
    /// Failed hops a host may suffer before it is given up
    ///
    /// Each failed hop is retried from another holder when possible.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Keep SRC's setuid and setgid bits on the copies (dropped by default)
    #[arg(long)]
    keep_setid: bool,
    /// Keep SRC's modification time, and as root its owner, group and whole mode
    ///
    /// As `cp -p` does: where the remote login is root, owner, group and whole mode
    /// (setuid and setgid included); a login that is not root keeps its own owner, and the
    /// copy SRC's mode less setuid and setgid. By default a copy gets SRC's permission bits
    /// less setuid and setgid, the time it was written and the login's owner.
    #[arg(long)]
    preserve: bool,
    /// Run CMD with `sh -c` on every host whose copy is in place, DEST as `$1`
    ///
    /// Once the transfer is over, on every host whose copy is verified and in place
    /// (up-to-date ones included), e.g. `--then 'virsh define "$1"'`. Its exit status and
    /// last lines of output go in the report; a host where it fails makes the exit status 1.
    #[arg(long, value_name = "CMD")]
    then: Option<String>,
    /// Rename each verified copy into place without flushing it to disk first
    ///
    /// Faster on slow disks, but after a power loss DEST may hold a file that never reached
    /// the disk.
    #[arg(long)]
    no_fsync: bool,
    /// Cap what each host uploads, this machine included (e.g. `400Mbit`, `50MB`)
    ///
    /// Per second, over any few seconds. This machine's streams share the cap; on the hosts
    /// each upload is paced on its own (a chain host feeding a spliced-out slow host besides
    /// its successor can send up to twice RATE). Downloads are not capped. --dry-run and
    /// --strategy auto predict with it.
    #[arg(long, value_name = "RATE", value_parser = parse_limit)]
    limit_rate: Option<u64>,
    /// Compress SRC once here, send it compressed, decompress it on each host
    ///
    /// Into a temporary file under $TMPDIR, with zstd, lz4 or gzip; each host checks what
    /// comes out against SRC's digest. The tool must be installed here and on every host
    /// (checked on all of them before anything is sent: exit 2, naming the hosts without
    /// it). Pays on compressible files (sparse or mostly empty images) over links slower than
    /// the tool; the default sends SRC as it is.
    #[arg(long, value_name = "TOOL", value_enum, default_value_t = Compress::None)]
    compress: Compress,
    /// Send a single-file SRC without its holes (GNU tar on every host)
    ///
    /// Holes are neither sent nor written, so a raw image of 100 GB holding 10 GB of data
    /// costs 10 GB on every link and every disk. SRC goes through a GNU tar archive, and each
    /// host checks the file it unpacks against SRC's digest (of its content, holes read as
    /// zeros). A directory SRC always keeps its files' holes.
    #[arg(long)]
    sparse: bool,
    /// Cut each whole-file hop (linear, bounce) into N ssh streams, at most 8
    ///
    /// Each stream goes over its own connection with its own part of the file, as mscp does
    /// for one copy: one ssh stream is one cipher on one core at each end, so on a link
    /// faster than a core can encrypt, hosts with cores to spare move a hop up to N times as
    /// fast. Each part is hashed as it is written and checked against the same part of SRC.
    /// N is at most 8: a hop's streams log in at once, and sshd refuses logins beyond 10 at
    /// once by default. 1 by default: on 2-core hosts, where one stream's cipher already has
    /// a core to itself, more streams only add handshakes and processes. The chain takes no
    /// --streams: its links are single streams that its repairs resume at a byte offset
    /// (--strategy auto then picks among bounce and linear).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=bounce::run::split::MAX_STREAMS as i64))]
    streams: u32,
    /// ssh ConnectTimeout, for the controller and for hops between hosts
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Per-host bandwidth that --dry-run and --strategy auto assume
    ///
    /// For hosts the fleet file gives no rate for.
    #[arg(long, default_value = "1Gbit", value_parser = parse_rate)]
    bandwidth: f64,
    /// Setup latency of an ssh connection that --dry-run and --strategy auto assume
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    latency: Duration,
    /// The controller's cost per host of connecting, for --dry-run and --strategy auto
    ///
    /// Handshakes share the controller's CPU, so host i is ready about i times this after
    /// the start.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    join_interval: Duration,
    /// Print shell completions or the man page, and exit
    ///
    /// bash, zsh, fish, elvish, powershell, or man: generated from these options.
    #[arg(long, value_name = "WHAT", exclusive = true)]
    generate: Option<bounce::cli_docs::Generate>,
    /// The file to send, or a directory: its tree is sent whole
    ///
    /// A directory's tree (regular files, directories, symlinks that stay inside it) is sent
    /// whole and appears at DEST at once, complete and verified; a rerun sends only the files
    /// some host lacks.
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// Absolute path of the copy on every host
    ///
    /// A hosts file may override it per host; for a directory SRC, the directory it becomes.
    #[arg(value_name = "DEST")]
    dest: String,
}

/// `--compress`: a [`Codec`], or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Compress {
    None,
    Zstd,
    Lz4,
    Gzip,
}

impl Compress {
    fn codec(self) -> Option<Codec> {
        match self {
            Compress::None => None,
            Compress::Zstd => Some(Codec::Zstd),
            Compress::Lz4 => Some(Codec::Lz4),
            Compress::Gzip => Some(Codec::Gzip),
        }
    }
}

/// `--strategy`: one of the strategies the runner implements, or the simulator's pick.
#[derive(Clone, Copy, Debug)]
enum Choice {
    Kind(StrategyKind),
    Auto,
}

/// The strategies the runner's transport implements ([`bounce::run::RUNNABLE`]), or auto.
fn parse_choice(s: &str) -> Result<Choice, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Choice::Auto);
    }
    match s.parse::<StrategyKind>() {
        Ok(k) if bounce::run::RUNNABLE.contains(&k) => Ok(Choice::Kind(k)),
        _ => Err(format!(
            "unknown strategy '{s}' for bounce-run (expected linear, bounce, chain or auto)"
        )),
    }
}
fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size(s).map_err(|e| e.to_string())
}
fn parse_rate(s: &str) -> Result<f64, String> {
    units::parse_rate(s).map_err(|e| e.to_string())
}
/// `--limit-rate`: a rate of at least one byte per second, in whole bytes per second.
fn parse_limit(s: &str) -> Result<u64, String> {
    let r = units::parse_rate(s).map_err(|e| e.to_string())?;
    if r < 1.0 {
        return Err(format!(
            "'{s}' is below 1 byte per second: the cap must be above 0"
        ));
    }
    Ok(r as u64)
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
    if let Some(&what) = matches.get_one::<bounce::cli_docs::Generate>("generate") {
        if let Err(e) = bounce::cli_docs::print(what, Cli::command()) {
            eprintln!("bounce-run: writing to stdout: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let sources = host_sources(&matches, &cli);
    let kind = match cli.strategy {
        Choice::Kind(k) => k,
        // Cut for the chain until the pick is known: a whole-file pick re-cuts it.
        Choice::Auto => StrategyKind::Chain,
    };
    let mut plan = match Plan::build(
        kind,
        &cli.src,
        &cli.dest,
        &sources,
        cli.chunk,
        cli.keep_setid,
        cli.preserve,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bounce-run: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = &cli.report {
        if !cli.dry_run {
            if let Err(e) = bounce::report::check_writable(p) {
                eprintln!("bounce-run: --report: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let assumptions = Assumptions {
        bandwidth: cli.bandwidth,
        latency: cli.latency,
        join_interval: cli.join_interval,
        upload_limit: cli.limit_rate.map(|r| r as f64),
    };
    let predicted = if cli.dry_run || matches!(cli.strategy, Choice::Auto) {
        match bounce::run::predict::predict(&plan, &assumptions) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("bounce-run: cannot predict: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    if let (Choice::Auto, Some(prediction)) = (cli.strategy, &predicted) {
        let p = &prediction.plan;
        // --streams cuts whole-file hops: the fastest strategy that makes them.
        let whole = p
            .candidates
            .iter()
            .find(|c| c.runnable && !c.strategy.uses_chunks());
        let (pick, why) = match whole {
            Some(c) if cli.streams > 1 => (
                c,
                format!(
                    "the fastest with whole-file hops, which --streams {} cuts",
                    cli.streams
                ),
            ),
            _ => (p.recommended(), p.why()),
        };
        if let Err(e) = plan.set_kind(pick.strategy, cli.chunk) {
            eprintln!("bounce-run: {e}");
            return ExitCode::from(2);
        }
        eprintln!(
            "bounce-run: --strategy auto picked {}: predicted {:.2}s, {why}",
            pick.strategy, pick.result.makespan,
        );
    }
    if cli.streams > 1 && plan.kind.uses_chunks() {
        eprintln!(
            "bounce-run: --streams {} needs whole-file hops (--strategy bounce or linear): \
             the {} strategy sends each link as one stream, which its repairs resume at a \
             byte offset",
            cli.streams, plan.kind
        );
        return ExitCode::from(2);
    }
    if cli.dry_run {
        let prediction = predicted.as_ref().expect("a dry run predicts");
        let out = &mut std::io::stdout().lock();
        // A reader that went away (`| head`) is no error of ours.
        let _ = if cli.json {
            bounce::report::write_plan_json(out, &prediction.cfg, &prediction.plan)
        } else {
            dry_run(out, &plan, &assumptions, prediction, cli.compress.codec())
        };
        return ExitCode::SUCCESS;
    }
    let manifest = if plan.is_dir || cli.sparse {
        match scan(&plan, cli.keep_setid || cli.preserve) {
            Ok(m) => Some(Arc::new(m)),
            Err(code) => return code,
        }
    } else {
        None
    };
    // A tree's archive is compressed once it is made, after the hosts are surveyed.
    let wire = match cli.compress.codec() {
        Some(codec) if manifest.is_none() => match compress(codec, &mut plan, cli.chunk) {
            Ok(w) => Some(w),
            Err(code) => return code,
        },
        _ => None,
    };
    match run(cli, plan, wire, manifest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bounce-run: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Walks and hashes a directory SRC, or a `--sparse` file, saying on stderr what it found.
fn scan(plan: &Plan, keep_setid: bool) -> Result<tree::Manifest, ExitCode> {
    let started = std::time::Instant::now();
    // Nothing is written anywhere yet: an interrupt may simply end the process.
    let never = std::sync::atomic::AtomicBool::new(false);
    let m = if plan.is_dir {
        tree::Manifest::scan_tree(&plan.src, keep_setid, &never)
    } else {
        tree::Manifest::scan_single(&plan.src, plan.mode, &never)
    }
    .map_err(|e| {
        eprintln!("bounce-run: {e}");
        ExitCode::from(2)
    })?;
    let (files, bytes) = m.files();
    eprintln!(
        "bounce-run: SRC holds {} entries, {files} regular files, {} ({} of data, holes excluded), hashed in {:.2}s",
        m.entries.len(),
        units::format_size(bytes),
        units::format_size(m.data_bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// Compresses SRC for `--compress` and cuts the compressed bytes for the strategy, saying
/// on stderr what it cost. On failure, says why and returns the exit status: 2 when the
/// tool is missing here, 1 otherwise.
fn compress(codec: Codec, plan: &mut Plan, chunk: u64) -> Result<codec::Wire, ExitCode> {
    let started = std::time::Instant::now();
    let wire = codec::compress(codec, &plan.src, &std::env::temp_dir()).map_err(|e| {
        eprintln!("bounce-run: {e}");
        match e {
            CodecError::Missing(_) => ExitCode::from(2),
            CodecError::Failed { .. } => ExitCode::from(1),
        }
    })?;
    if let Err(e) = plan.cut_for(wire.size, chunk) {
        eprintln!("bounce-run: {e}");
        return Err(ExitCode::from(2));
    }
    eprintln!(
        "bounce-run: --compress {codec}: {} to {} ({:.1}× less on every link) in {:.2}s",
        units::format_size(plan.size),
        units::format_size(wire.size),
        plan.size as f64 / wire.size.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(wire)
}

fn dry_run(
    out: &mut dyn std::io::Write,
    plan: &Plan,
    assumptions: &Assumptions,
    prediction: &bounce::run::predict::Prediction,
    compress: Option<Codec>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "plan: {} {} ({}) to {} hosts, strategy {}, {} chunk(s) of {}",
        plan.src.display(),
        units::format_size(plan.size),
        plan.size,
        plan.hosts.len(),
        plan.kind,
        plan.layout.count(),
        units::format_size(plan.layout.chunk_size()),
    )?;
    for (i, h) in plan.hosts.iter().enumerate() {
        writeln!(out, "  {:>3}  {h}  {}", i + 1, plan.dest_of(i))?;
    }
    if let Some(codec) = compress {
        writeln!(
            out,
            "compress: {codec}, once on this machine before the transfer (not done by a dry \
             run); every host needs {codec}. The prediction is for SRC's full size: the \
             links carry less"
        )?;
    }
    bounce::run::predict::write_prediction(out, plan, assumptions, prediction)
}

fn run(
    cli: Cli,
    plan: Plan,
    wire: Option<codec::Wire>,
    manifest: Option<Arc<tree::Manifest>>,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, plan, wire, manifest))
}

/// Counts SIGINT and SIGTERM: the first stops the run, a second one during cleanup exits.
fn watch_signals() -> anyhow::Result<tokio::sync::watch::Receiver<u32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

/// Resolves once at least `n` signals have come.
async fn signals(mut rx: tokio::sync::watch::Receiver<u32>, n: u32) {
    let _ = rx.wait_for(|&k| k >= n).await;
}

/// A random run id, so that no one can predict a run's temporary names before it starts
/// (they show in the hosts' process lists once it runs; exclusive creation protects them).
fn random_run_id() -> String {
    use rand::RngCore as _;
    format!("{:016x}", rand::rngs::OsRng.next_u64())
}

async fn run_async(
    cli: Cli,
    mut plan: Plan,
    mut wire: Option<codec::Wire>,
    manifest: Option<Arc<tree::Manifest>>,
) -> anyhow::Result<ExitCode> {
    // Installed first, so an interrupt during hashing is not lost (or ignored, for a
    // background job whose shell set SIGINT to SIG_IGN).
    let sigs = watch_signals()?;
    // SRC is hashed while the hosts are connected and the first bytes sent; whatever ends
    // the run stops the hashing too.
    let stop_hashing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A tree's archive is hashed once it exists, after the survey.
    let digest = match manifest {
        Some(_) => bounce::run::digest::PendingDigest::ready(String::new()),
        None => bounce::run::digest::PendingDigest::start(
            plan.src.clone(),
            plan.size,
            // A compressed SRC's hops carry other bytes, checked once decompressed.
            if cli.streams > 1 && wire.is_none() {
                bounce::run::split::parts(plan.size, cli.streams)
            } else {
                Vec::new()
            },
            Arc::clone(&stop_hashing),
        )
        .context("starting to hash SRC")?,
    };
    struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop_hashing = StopOnDrop(Arc::clone(&stop_hashing));
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
    let meta = bounce::run::remote::Meta {
        mode: plan.mode,
        preserve: plan.preserve,
    };
    let mut transport = SshTransport::new(
        targets,
        SshOptions {
            config_file: cli.ssh_config.clone(),
            accept_new_host_keys: cli.accept_new_host_keys,
            connect_timeout: cli.connect_timeout,
            fsync: !cli.no_fsync,
            limit_rate: cli.limit_rate,
            streams: cli.streams,
        },
        SourceFile {
            path: plan.src.clone(),
            size: plan.size,
            meta,
            digest,
            wire: wire.clone(),
            pack: manifest.clone().map(|manifest| Pack {
                manifest,
                current: false,
            }),
        },
        plan.layout,
        plan.kind.uses_chunks(),
        random_run_id(),
        Arc::clone(&counters),
    )
    .context("writing the controller's ssh_config")?;
    // A --compress tool missing on a host is bad input, found before anything is written (a
    // tree's survey checks it with the rest).
    if let (Some(codec), None) = (cli.compress.codec(), &manifest) {
        let lacking = transport.lacking(codec.tool()).await;
        if !lacking.is_empty() {
            for host in &lacking {
                eprintln!(
                    "bounce-run: {}",
                    TransportError::ToolMissing {
                        host: host.clone(),
                        tool: codec.tool().to_string(),
                    }
                );
            }
            for c in transport.shutdown().await {
                eprintln!("bounce-run: {c}");
            }
            return Ok(ExitCode::from(2));
        }
    }
    // Kept until the run ends: the hops read it.
    let mut _archive = None;
    let mut files = None;
    if let Some(manifest) = &manifest {
        // Rehashing every host's tree can take minutes: an interrupt stops it.
        let survey = tokio::select! {
            s = transport.survey() => s,
            () = signals(sigs.clone(), 1) => {
                eprintln!("bounce-run: interrupted while the hosts' trees were listed");
                for c in transport.shutdown().await {
                    eprintln!("bounce-run: {c}");
                }
                return Ok(ExitCode::from(130));
            }
        };
        let mut bad = false;
        for e in survey.iter().filter_map(|r| r.as_ref().err()) {
            if matches!(
                e,
                TransportError::Dest { .. } | TransportError::ToolMissing { .. }
            ) {
                eprintln!("bounce-run: {e}");
                bad = true;
            }
        }
        if bad {
            for c in transport.shutdown().await {
                eprintln!("bounce-run: {c}");
            }
            return Ok(ExitCode::from(2));
        }
        let (send, current) = what_to_send(manifest, &survey);
        let started = std::time::Instant::now();
        let dir = std::env::temp_dir();
        let archive = {
            let (m, keep) = (Arc::clone(manifest), cli.keep_setid || cli.preserve);
            tokio::task::spawn_blocking(move || tree::archive(&m, &send, keep, &dir)).await?
        };
        let archive = match archive {
            Ok(a) => a,
            Err(e) => {
                eprintln!("bounce-run: {e}");
                transport.shutdown().await;
                return Ok(ExitCode::from(1));
            }
        };
        let (all_files, all_bytes) = manifest.files();
        eprintln!(
            "bounce-run: {}: {} in an archive of {}, made in {:.2}s",
            if current {
                "every host is up to date"
            } else {
                "sending"
            },
            report::FilesSent {
                sent: archive.files.0,
                sent_bytes: archive.files.1,
                total: all_files,
                total_bytes: all_bytes,
            },
            units::format_size(archive.size),
            started.elapsed().as_secs_f64()
        );
        if let Some(codec) = cli.compress.codec() {
            let started = std::time::Instant::now();
            match codec::compress(codec, &archive.path, &std::env::temp_dir()) {
                Ok(w) => {
                    eprintln!(
                        "bounce-run: --compress {codec}: {} to {} in {:.2}s",
                        units::format_size(archive.size),
                        units::format_size(w.size),
                        started.elapsed().as_secs_f64()
                    );
                    wire = Some(w);
                }
                Err(e) => {
                    eprintln!("bounce-run: {e}");
                    transport.shutdown().await;
                    return Ok(ExitCode::from(match e {
                        CodecError::Missing(_) => 2,
                        CodecError::Failed { .. } => 1,
                    }));
                }
            }
        }
        let carried = wire.as_ref().map_or(archive.size, |w| w.size);
        if let Err(e) = plan.cut_for(carried, cli.chunk) {
            eprintln!("bounce-run: {e}");
            transport.shutdown().await;
            return Ok(ExitCode::from(2));
        }
        let (path, m) = (archive.path.clone(), Arc::clone(manifest));
        let digest = bounce::run::digest::PendingDigest::start_checked(
            archive.path.clone(),
            archive.size,
            Arc::clone(&stop_hashing),
            move || tree::verify_archive(&path, &m).map_err(|e| e.to_string()),
        )
        .context("starting to hash the archive")?;
        transport.set_source(
            SourceFile {
                path: archive.path.clone(),
                size: archive.size,
                meta,
                digest,
                wire: wire.clone(),
                pack: Some(Pack {
                    manifest: Arc::clone(manifest),
                    current,
                }),
            },
            plan.layout,
        );
        files = Some(report::FilesSent {
            sent: archive.files.0,
            sent_bytes: archive.files.1,
            total: all_files,
            total_bytes: all_bytes,
        });
        _archive = Some(archive);
    }
    let transport = Arc::new(transport);
    // A second interrupt while the first one's cleanup runs: leave at once, and say what
    // may be left where.
    let leftovers = Arc::clone(&transport);
    let second = sigs.clone();
    tokio::spawn(async move {
        signals(second, 2).await;
        eprintln!("bounce-run: interrupted again: closing every connection and exiting without finishing cleanup");
        leftovers.drop_connections_now();
        let left = leftovers.leftovers();
        for (host, items) in &left {
            eprintln!("bounce-run: may be left on {host}: {}", items.join(", "));
        }
        if left.is_empty() {
            eprintln!("bounce-run: nothing of this run was left registered on any host");
        }
        std::process::exit(130);
    });
    let names: Vec<String> = plan.hosts.iter().map(ToString::to_string).collect();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The counters count what the hops carry.
    let carried = match (&wire, &_archive) {
        (Some(w), _) => w.size,
        (None, Some(a)) => a.size,
        (None, None) => plan.size,
    };
    let parts = bounce::run::split::parts(carried, cli.streams).len();
    if parts > 1 {
        let one = if wire.is_some() {
            " (a host that compresses its DEST on the way sends over one)"
        } else {
            ""
        };
        eprintln!(
            "bounce-run: each hop goes over {parts} ssh streams, each carrying a part of {}{one}",
            units::format_size(carried)
        );
    }
    let mut progress = Progress::new(names, counters, carried, tty);
    let cfg = DriveConfig {
        kind: plan.kind,
        layout: plan.layout,
        max_attempts: cli.max_attempts,
        receivers,
        then: cli.then.clone(),
    };
    let result = drive(transport, &cfg, signals(sigs, 1), &mut progress).await;
    progress.finish();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            for c in &e.cleanup {
                eprintln!("bounce-run: {c}");
            }
            anyhow::bail!("{e} (the run was stopped and cleaned up)");
        }
    };
    let mut failed = false;
    // The report first: a closed stdout (`| head`) must not cost it.
    if let Some(p) = &cli.report {
        let mut csv = Vec::new();
        report::write_csv(&mut csv, &plan.hosts, &outcome)
            .with_context(|| format!("--report {}: cannot write", p.display()))?;
        if let Err(e) = bounce::report::write_atomically(p, &csv) {
            eprintln!("bounce-run: --report: {e}");
            failed = true;
        }
    }
    {
        use std::io::Write as _;
        let text = if cli.json {
            report::json(&plan, &outcome, files)
        } else {
            let mut t = report::table(&plan.hosts, &outcome);
            if let Some(f) = files {
                t.push_str(&format!("files sent: {f}\n"));
            }
            t
        };
        // A reader that went away is no failure of the run's.
        let _ = write!(std::io::stdout().lock(), "{text}");
    }
    for c in &outcome.cleanup {
        eprintln!("bounce-run: {c}");
        failed = true;
    }
    for (h, r) in plan.hosts.iter().zip(&outcome.hosts) {
        match &r.then {
            Some(Ok(t)) if t.status != 0 => {
                let last = t.output.lines().last().unwrap_or("no output");
                eprintln!("bounce-run: {h}: --then exited {}: {last}", t.status);
                failed = true;
            }
            Some(Err(e)) => {
                eprintln!("bounce-run: {h}: --then could not run: {e}");
                failed = true;
            }
            _ => {}
        }
    }
    if let Some(change) = src_changed(&plan, manifest.as_deref()) {
        eprintln!(
            "bounce-run: SRC {} changed during the run ({change}); the copies hold the {} \
             bytes hashed at the start, which may mix old and new content: rerun once SRC \
             is stable",
            plan.src.display(),
            plan.size
        );
        failed = true;
    }
    Ok(if outcome.interrupted {
        ExitCode::from(130)
    } else if outcome.all_ok() && !failed {
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

/// Which of the manifest's regular files the archive must hold, from every host's survey,
/// and whether every host is already up to date. A host that lacks its DEST, or that the
/// survey could not reach, needs them all.
fn what_to_send(
    m: &tree::Manifest,
    survey: &[Result<DestState, TransportError>],
) -> (std::collections::BTreeSet<usize>, bool) {
    let all = || {
        m.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, tree::EntryKind::File { .. }))
            .map(|(i, _)| i)
            .collect()
    };
    let mut send = std::collections::BTreeSet::new();
    let mut current = true;
    for r in survey {
        match r {
            Ok(DestState::Holds(listed)) => {
                let d = tree::compare(m, listed, true);
                current &= d.is_clean();
                send.extend(d.files);
            }
            _ => return (all(), false),
        }
    }
    (send, current)
}

/// How SRC differs now from when the plan checked it (or, for a tree or a `--sparse`
/// file, from when it was hashed), if it does.
fn src_changed(plan: &Plan, manifest: Option<&tree::Manifest>) -> Option<String> {
    if let Some(m) = manifest {
        return match tree::fingerprint(&plan.src) {
            Err(e) => Some(format!("it can no longer be read: {e}")),
            Ok(f) if f != m.fingerprint => Some("some of its entries were modified".into()),
            Ok(_) => None,
        };
    }
    let meta = match std::fs::metadata(&plan.src) {
        Ok(m) => m,
        Err(e) => return Some(format!("it can no longer be read: {e}")),
    };
    if meta.len() != plan.size {
        Some(format!(
            "its size went from {} to {} bytes",
            plan.size,
            meta.len()
        ))
    } else if meta.modified().ok() != plan.modified {
        Some("it was modified".into())
    } else {
        None
    }
}
