//! One `bounce-run` session, from parsed options to its exit status: the plan, the
//! `--strategy auto` pick, `--dry-run`, the scan of a tree, `--compress`, the transport's
//! assembly, the run, and its report. [`RunError::exit_code`] is the one place that maps
//! what went wrong to an exit status.
//!
//! - `prepare.rs`: what happens before any connection (scan, compression, `--dry-run`);
//! - `survey.rs`: a tree's survey of the hosts and its archive;
//! - `finish.rs`: the report, and what makes the exit status other than 0.

mod finish;
mod prepare;
mod survey;

use std::sync::Arc;

use super::cli::{Choice, Cli};
use super::codec;
use super::plan::{HostSource, Plan};
use super::predict::{Assumptions, Prediction};
use super::progress::Progress;
use super::ssh::{Pack, SourceFile, SshOptions, SshTransport, Target};
use super::transport::{Transport, TransportError};
use super::{digest, drive, remote, say, split, tree, ByteCounters, DriveConfig};
use crate::core::StrategyKind;
use crate::units;
use finish::finish;
use prepare::{compress, dry_run, scan};
use survey::pack_tree;

/// Why a session did not end with every host holding a verified copy. Each variant holds
/// the lines that say why, in the order they are printed (the binary prefixes each with its
/// name); what was already printed during the run is not repeated.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad invocation or input, found before anything was written: exit status 2.
    #[error("{}", .0.join("\n"))]
    Input(Vec<String>),
    /// The run failed as a whole, or on some hosts, or left something behind: exit 1.
    #[error("{}", .0.join("\n"))]
    Failed(Vec<String>),
    /// Interrupted (SIGINT or SIGTERM), and cleaned up: exit 130.
    #[error("{}", .0.join("\n"))]
    Interrupted(Vec<String>),
}

impl RunError {
    /// The exit status `bounce-run --help` documents for it.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Input(_) => 2,
            RunError::Failed(_) => 1,
            RunError::Interrupted(_) => 130,
        }
    }

    /// The lines that say why.
    pub fn lines(&self) -> &[String] {
        match self {
            RunError::Input(l) | RunError::Failed(l) | RunError::Interrupted(l) => l,
        }
    }

    pub(super) fn input(line: impl std::fmt::Display) -> RunError {
        RunError::Input(vec![line.to_string()])
    }

    pub(super) fn failed(line: impl std::fmt::Display) -> RunError {
        RunError::Failed(vec![line.to_string()])
    }
}

/// Runs the session `cli` asks for, the hosts read from `sources` in their order.
pub fn run(cli: Cli, sources: &[HostSource]) -> Result<(), RunError> {
    say::set(match (cli.quiet, cli.verbose) {
        (true, _) => say::Level::Quiet,
        (_, true) => say::Level::Verbose,
        _ => say::Level::Normal,
    });
    let kind = match cli.strategy {
        Choice::Kind(k) => k,
        // Cut for the chain until the pick is known: a whole-file pick re-cuts it.
        Choice::Auto => StrategyKind::Chain,
    };
    let mut plan = Plan::build(
        kind,
        &cli.src,
        &cli.dest,
        sources,
        cli.chunk,
        cli.keep_setid,
        cli.preserve,
    )
    .map_err(RunError::input)?;
    if let (Some(p), false) = (&cli.report, cli.dry_run) {
        crate::report::check_writable(p).map_err(|e| RunError::input(format!("--report: {e}")))?;
    }
    let assumptions = Assumptions {
        bandwidth: cli.bandwidth,
        latency: cli.latency,
        join_interval: cli.join_interval,
        upload_limit: cli.limit_rate.map(|r| r as f64),
    };
    let predicted = if cli.dry_run || matches!(cli.strategy, Choice::Auto) {
        Some(
            super::predict::predict(&plan, &assumptions)
                .map_err(|e| RunError::input(format!("cannot predict: {e}")))?,
        )
    } else {
        None
    };
    if let (Choice::Auto, Some(prediction)) = (cli.strategy, &predicted) {
        pick(&cli, &mut plan, prediction)?;
    }
    if cli.streams > 1 && plan.kind.uses_chunks() {
        return Err(RunError::input(format!(
            "--streams {} needs whole-file hops (--strategy bounce or linear): the {} \
             strategy sends each link as one stream, which its repairs resume at a byte offset",
            cli.streams, plan.kind
        )));
    }
    if cli.dry_run {
        let prediction = predicted.as_ref().expect("a dry run predicts");
        let out = &mut std::io::stdout().lock();
        // A reader that went away (`| head`) is no error of ours.
        let _ = if cli.json {
            crate::report::write_plan_json(out, &prediction.cfg, &prediction.plan)
        } else {
            dry_run(out, &plan, &assumptions, prediction, cli.compress.codec())
        };
        return Ok(());
    }
    let manifest = if plan.is_dir || cli.sparse {
        Some(Arc::new(scan(&plan, cli.keep_setid || cli.preserve)?))
    } else {
        None
    };
    // A tree's archive is compressed once it is made, after the hosts are surveyed.
    let wire = match cli.compress.codec() {
        Some(codec) if manifest.is_none() => Some(compress(codec, &mut plan, cli.chunk)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RunError::failed(format!("starting the async runtime: {e}")))?;
    rt.block_on(run_async(cli, plan, wire, manifest))
}

/// `--strategy auto`: sets the plan's strategy to the prediction's pick, and says why.
fn pick(cli: &Cli, plan: &mut Plan, prediction: &Prediction) -> Result<(), RunError> {
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
    plan.set_kind(pick.strategy, cli.chunk)
        .map_err(RunError::input)?;
    say::note(format!(
        "--strategy auto picked {}: predicted {:.2}s, {why}",
        pick.strategy, pick.result.makespan,
    ));
    Ok(())
}

/// Counts SIGINT and SIGTERM: the first stops the run, a second one during cleanup exits.
fn watch_signals() -> Result<tokio::sync::watch::Receiver<u32>, RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind, name| {
        signal(kind).map_err(|e| RunError::failed(format!("installing the {name} handler: {e}")))
    };
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
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
pub(super) async fn signals(mut rx: tokio::sync::watch::Receiver<u32>, n: u32) {
    let _ = rx.wait_for(|&k| k >= n).await;
}

/// A random run id, so that no one can predict a run's temporary names before it starts
/// (they show in the hosts' process lists once it runs; exclusive creation protects them).
fn random_run_id() -> String {
    use rand::RngCore as _;
    format!("{:016x}", rand::rngs::OsRng.next_u64())
}

/// Ends every connection of a run that stops before it starts, and says what its cleanup
/// could not remove: `why`'s lines, then those.
pub(super) async fn stop(transport: &SshTransport, mut why: Vec<String>) -> Vec<String> {
    why.extend(transport.shutdown().await.iter().map(ToString::to_string));
    why
}

/// Sets the hashing of SRC to stop when dropped: whatever ends the run stops it too.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The session once the plan holds: connects, sends, reports.
async fn run_async(
    cli: Cli,
    mut plan: Plan,
    mut wire: Option<codec::Wire>,
    manifest: Option<Arc<tree::Manifest>>,
) -> Result<(), RunError> {
    // Installed first, so an interrupt during hashing is not lost (or ignored, for a
    // background job whose shell set SIGINT to SIG_IGN).
    let sigs = watch_signals()?;
    // SRC is hashed while the hosts are connected and the first bytes sent.
    let stop_hashing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A tree's archive is hashed once it exists, after the survey.
    let digest = match manifest {
        Some(_) => digest::PendingDigest::ready(String::new()),
        None => digest::PendingDigest::start(
            plan.src.clone(),
            plan.size,
            // A compressed SRC's hops carry other bytes, checked once decompressed.
            if cli.streams > 1 && wire.is_none() {
                split::parts(plan.size, cli.streams)
            } else {
                Vec::new()
            },
            Arc::clone(&stop_hashing),
        )
        .map_err(|e| RunError::failed(format!("starting to hash SRC: {e}")))?,
    };
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
    let meta = remote::Meta {
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
    .map_err(|e| RunError::failed(format!("writing the controller's ssh_config: {e}")))?;
    // A --compress tool missing on a host is bad input, found before anything is written (a
    // tree's survey checks it with the rest).
    if let (Some(codec), None) = (cli.compress.codec(), &manifest) {
        let lacking = transport.lacking(codec.tool()).await;
        if !lacking.is_empty() {
            let why = lacking
                .iter()
                .map(|host| {
                    TransportError::ToolMissing {
                        host: host.clone(),
                        tool: codec.tool().to_string(),
                    }
                    .to_string()
                })
                .collect();
            return Err(RunError::Input(stop(&transport, why).await));
        }
    }
    // Kept until the run ends: the hops read it.
    let mut archive = None;
    let mut files = None;
    if let Some(manifest) = &manifest {
        let (a, sent) =
            pack_tree(&cli, &mut plan, &mut transport, manifest, &sigs, &mut wire).await?;
        let stop_archive = Arc::clone(&stop_hashing);
        let (path, m) = (a.path.clone(), Arc::clone(manifest));
        let digest = digest::PendingDigest::start_checked(a.path.clone(), a.size, stop_archive, {
            move || tree::verify_archive(&path, &m).map_err(|e| e.to_string())
        });
        let digest = match digest {
            Ok(d) => d,
            Err(e) => {
                let why = vec![format!("starting to hash the archive: {e}")];
                return Err(RunError::Failed(stop(&transport, why).await));
            }
        };
        transport.set_source(
            SourceFile {
                path: a.path.clone(),
                size: a.size,
                meta,
                digest,
                wire: wire.clone(),
                pack: Some(Pack {
                    manifest: Arc::clone(manifest),
                    current: sent.current,
                }),
            },
            plan.layout,
        );
        files = Some(sent.files);
        archive = Some(a);
    }
    let transport = Arc::new(transport);
    exit_on_second_signal(Arc::clone(&transport), sigs.clone());
    let names: Vec<String> = plan.hosts.iter().map(ToString::to_string).collect();
    // Bars on a terminal, unless -v (a trace is a log, which bars would break up) or -q.
    let tty =
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && say::level() == say::Level::Normal;
    // The counters count what the hops carry.
    let carried = match (&wire, &archive) {
        (Some(w), _) => w.size,
        (None, Some(a)) => a.size,
        (None, None) => plan.size,
    };
    let parts = split::parts(carried, cli.streams).len();
    if parts > 1 {
        let one = if wire.is_some() {
            " (a host that compresses its DEST on the way sends over one)"
        } else {
            ""
        };
        say::note(format!(
            "each hop goes over {parts} ssh streams, each carrying a part of {}{one}",
            units::format_size(carried)
        ));
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
    let outcome = result.map_err(|e| {
        let mut why: Vec<String> = e.cleanup.iter().map(ToString::to_string).collect();
        why.push(format!("{e} (the run was stopped and cleaned up)"));
        RunError::Failed(why)
    })?;
    finish(&cli, &plan, &outcome, files, manifest.as_deref())
}

/// A second interrupt while the first one's cleanup runs: leave at once, and say what may
/// be left where.
fn exit_on_second_signal(transport: Arc<SshTransport>, sigs: tokio::sync::watch::Receiver<u32>) {
    tokio::spawn(async move {
        signals(sigs, 2).await;
        eprintln!("bounce-run: interrupted again: closing every connection and exiting without finishing cleanup");
        transport.drop_connections_now();
        let left = transport.leftovers();
        for (host, items) in &left {
            eprintln!("bounce-run: may be left on {host}: {}", items.join(", "));
        }
        if left.is_empty() {
            eprintln!("bounce-run: nothing of this run was left registered on any host");
        }
        std::process::exit(130);
    });
}
