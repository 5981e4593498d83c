//! The lab benchmark of issue 3: `bounce-run` against real sshd hosts with capped links,
//! every figure a ratio to a single-hop copy measured in the same run.
//!
//! ```text
//! sudo -E cargo bench --bench lab            # as root; prints a table, asserts nothing
//! ```
//!
//! Defaults follow the issue: 8 hosts, every link at 100 Mbit/s both ways, a 64 MiB file,
//! the median of 3 repetitions. Override with `BOUNCE_BENCH_HOSTS`, `BOUNCE_BENCH_SIZE`
//! (such as `16MiB`), `BOUNCE_BENCH_RATE` (a `tc` rate such as `100mbit`),
//! `BOUNCE_BENCH_REPS`, `BOUNCE_BENCH_CHUNK` (the chain's chunk, for `bounce-run --chunk`
//! and for the model alike, `1MiB`) and `BOUNCE_BENCH_ONLY`, a comma-separated subset of
//! `linear,bounce,chain,fan-out,tree,tee` to measure (all by default; t1 always).
//!
//! It measures:
//! - t1, a plain `ssh h1 'cat > f' < file` from the controller, and a one-byte hop, from
//!   which B (= size / (t1 − latency)) and the per-hop latency are calibrated;
//! - `bounce-run --strategy linear|bounce|chain` to all hosts (wall clock, process start to
//!   exit, like t1);
//! - the issue's reference shell baselines: a simultaneous fan-out, a lock-step doubling
//!   tree and a naive tee chain.
//!
//! Next to each measurement it prints the target, `bounce::sim`'s prediction for the
//! calibrated B and latency (the same engine as `bounce-sim`), and the closed form of
//! DESIGN.md §2 as a cross-check. Timing needs the machine to itself: run it alone.
//!
//! A second part (`cpu` in `BOUNCE_BENCH_ONLY`) measures CPU per verified byte where CPU is
//! the limit (issue 9): a 1 GiB file (`BOUNCE_BENCH_CPU_SIZE`) over uncapped links to one
//! and two hosts, `bounce-run` next to plain ssh pushes and tee chains timed in the same
//! run, with the whole machine's CPU seconds (from `/proc/stat`; the lab's processes are not
//! children of the benchmark) and the CPU of each kind of process (ssh client, sshd,
//! digest, copies and relays, the controller), sampled from `/proc/PID/stat`; and `--streams`
//! 2 and 4 next to the same strategy over one stream.
//!
//! A third part (`stock`) runs the chain where users run it: Debian's stock ssh and sshd
//! configurations, hosts addressed by IP (`LabConfig::stock`), 8 hosts at 100 Mbit/s with
//! 64 MiB, the same with the lab's slow login shell, and 32 hosts at 25 Mbit/s with 32 MiB
//! (`BOUNCE_BENCH_STOCK`, such as `8:100mbit:64MiB,8:100mbit:64MiB:slow,32:25mbit:32MiB`),
//! each next to its t1 and the simulator's prediction,
//! with the time until the first host starts receiving (the setup) and the time the
//! controller takes to connect to every host at once (`conn`), from which the model's
//! `--join-interval` is calibrated.
//!
//! A fourth part (`faults`, `benches/lab_parts/faults.rs`) runs the chain with one host slow,
//! crashed or cut off mid-stream (issue 10).
//!
//! A fifth part (`fleet`, `benches/lab_parts/fleet.rs`) puts two hosts at a fifth of the rate,
//! describes the lab in a fleet file, and prints `bounce-run --dry-run`'s prediction of each
//! strategy next to its measured makespan (issue 12).
//!
//! A sixth part (`shared`, `benches/lab_parts/shared.rs`) measures `--limit-rate` and
//! `--compress` against their uncapped and uncompressed baselines (issue 11).
//!
//! A seventh part (`trees`, `benches/lab_parts/trees.rs`) sends a directory of about 2,000
//! files against one file of the same data, a rerun after one file changed, and a sparse
//! image with `--sparse` against the same image sent whole (issue 11).
//!
//! An eighth part (`scale`, `benches/lab_parts/scale.rs`) runs the chain to 128 hosts or more
//! in the stock lab and prints what it costs per host beside a login and a plain copy
//! (issue 24).
//!
//! Every lab host logs in with Debian's stock root dotfiles (`tests/lab/mod.rs`).

#[path = "lab_parts/faults.rs"]
mod faults;
#[path = "lab_parts/fleet.rs"]
mod fleet;
#[path = "../tests/lab/mod.rs"]
mod lab;
#[path = "lab_parts/scale.rs"]
mod scale;
#[path = "lab_parts/shared.rs"]
mod shared;
#[path = "lab_parts/trees.rs"]
mod trees;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bounce::core::StrategyKind;
use bounce::sim::{simulate, SimConfig};
use bounce::units::parse_size;
use lab::support::{bounce_run_bin, random_file, sha256_file, wait_within};
use lab::{Lab, LabConfig};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The main part's workload, which the `faults` part shares: `BOUNCE_BENCH_HOSTS` (8),
/// `BOUNCE_BENCH_SIZE` (64 MiB), `BOUNCE_BENCH_RATE` (100mbit), `BOUNCE_BENCH_REPS` (3).
struct Workload {
    hosts: usize,
    size: u64,
    rate: String,
    reps: usize,
}

impl Workload {
    /// The links' rate in Mbit/s, from `BOUNCE_BENCH_RATE` (written as tc takes it, `100mbit`).
    fn rate_mbit(&self) -> f64 {
        self.rate
            .trim_end_matches("mbit")
            .parse()
            .expect("BOUNCE_BENCH_RATE in mbit")
    }

    fn from_env() -> Self {
        Workload {
            hosts: env_or("BOUNCE_BENCH_HOSTS", "8")
                .parse()
                .expect("BOUNCE_BENCH_HOSTS"),
            size: parse_size(&env_or("BOUNCE_BENCH_SIZE", "64MiB")).expect("BOUNCE_BENCH_SIZE"),
            rate: env_or("BOUNCE_BENCH_RATE", "100mbit"),
            reps: env_or("BOUNCE_BENCH_REPS", "3")
                .parse()
                .expect("BOUNCE_BENCH_REPS"),
        }
    }
}

/// True when the row `name` is to be measured (see `BOUNCE_BENCH_ONLY`).
fn wanted(name: &str) -> bool {
    std::env::var("BOUNCE_BENCH_ONLY")
        .map_or(true, |only| only.split(',').any(|w| w.trim() == name))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// ⌈log2(c + 1)⌉: the doubling rounds needed for `c` receivers.
fn rounds(c: usize) -> u32 {
    usize::BITS - c.leading_zeros()
}

/// Times one command to completion, or returns why it failed.
fn time_it(cmd: &mut Command, what: &str) -> Result<f64, String> {
    let start = Instant::now();
    // stdin is the caller's: a source file for ssh pushes, nothing for bounce-run.
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let out = wait_within(child, Duration::from_secs(1800), what);
    let secs = start.elapsed().as_secs_f64();
    if std::env::var_os("BOUNCE_BENCH_TRACE").is_some() {
        print!("{}", String::from_utf8_lossy(&out.stdout));
        print!("{}", String::from_utf8_lossy(&out.stderr));
    }
    if out.status.success() {
        Ok(secs)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!("{what}: {} {last}", out.status))
    }
}

/// Runs all commands at once and returns when the last is done.
fn time_parallel(cmds: Vec<Command>, what: &str) -> Result<f64, String> {
    let start = Instant::now();
    let mut children = Vec::new();
    for mut c in cmds {
        children.push(
            c.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{what}: {e}"))?,
        );
    }
    let mut failure = None;
    for child in children {
        let out = wait_within(child, Duration::from_secs(1800), what);
        if !out.status.success() && failure.is_none() {
            failure = Some(format!(
                "{what}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    match failure {
        None => Ok(start.elapsed().as_secs_f64()),
        Some(f) => Err(f),
    }
}

/// `ssh <to> 'cat > dest' < file` from the controller.
fn push_from_controller(lab: &Lab, to: usize, file: &Path, dest: &str) -> Command {
    let mut c = lab.ssh(&lab.host(to), &format!("cat > '{dest}'"));
    c.stdin(Stdio::from(fs::File::open(file).expect("open source")));
    c
}

/// The median over `reps` of a plain `ssh <to> 'cat > dest' < file` from the controller, each
/// onto a cleared lab: a single hop's time, the baseline of every ratio.
fn single_hop(lab: &Lab, to: usize, file: &Path, dest: &str, reps: usize, what: &str) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                lab.clear_data();
                time_it(&mut push_from_controller(lab, to, file, dest), what).expect(what)
            })
            .collect(),
    )
}

/// The median of 5 plain ssh pushes of the one-byte file `tiny` to h1: what a hop costs
/// besides its bytes.
fn hop_latency(lab: &Lab, tiny: &Path, dest: &str) -> f64 {
    median(
        (0..5)
            .map(|_| {
                time_it(&mut push_from_controller(lab, 1, tiny, dest), "tiny hop")
                    .expect("tiny hop")
            })
            .collect(),
    )
}

/// `ssh <from> "ssh <to> 'cat > dest' < dest"`: a hop that runs on `from`.
fn push_between(lab: &Lab, from: usize, to: usize, dest: &str) -> Command {
    let mut c = lab.ssh(
        &lab.host(from),
        &format!("ssh {} \"cat > '{dest}'\" < '{dest}'", lab.host(to)),
    );
    c.stdin(Stdio::null());
    c
}

struct Calibration {
    size: f64,
    t1: f64,
    latency: f64,
    bandwidth: f64,
    chunk: f64,
    hosts: usize,
}

impl Calibration {
    /// The lab as measured: B from t1 less the one-byte hop's latency.
    fn new(size: u64, t1: f64, latency: f64, chunk: u64, hosts: usize) -> Self {
        Calibration {
            size: size as f64,
            t1,
            latency,
            bandwidth: size as f64 / (t1 - latency).max(1e-3),
            chunk: chunk as f64,
            hosts,
        }
    }
}

/// The simulator's makespan for `kind` on the lab's network as calibrated: every host at
/// B both ways, one setup latency per connection between two hosts, no jitter.
fn simulated(kind: StrategyKind, cal: &Calibration) -> Result<f64, String> {
    let cfg = SimConfig {
        chunk: cal.chunk as u64,
        latency: Duration::from_secs_f64(cal.latency),
        ..SimConfig::new(cal.hosts as u32, cal.size as u64, cal.bandwidth)
    };
    simulate(kind, &cfg)
        .map(|r| r.makespan)
        .map_err(|e| format!("bounce-sim: {e}"))
}

/// The time until the controller has opened a connection to every host in `addrs` at once
/// and run `true` on each: what bounce-run's first step costs, and what grows with C. With
/// `hop`, each host in turn connects to the next (as a chain's relay does) and runs `true`
/// there: in the lab, where every handshake shares the same cores, that is the setup a
/// chain pays per host.
fn connect_all(lab: &Lab, addrs: &[String], hop: bool) -> Result<f64, String> {
    let started = Instant::now();
    let children: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut c = lab.controller("ssh");
            c.arg("-F").arg(lab.ssh_config()).arg(a.as_str());
            if hop {
                let next = &addrs[(i + 1) % addrs.len()];
                c.arg(format!("ssh -o BatchMode=yes {next} true"));
            } else {
                c.arg("true");
            }
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c.spawn().map_err(|e| format!("ssh {a}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for c in children {
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The simulator's model of bounce-run's streamed chain ([`bounce::sim::streamed_chain`], the
/// one `bounce-run --dry-run` and `bounce-sim plan` use): hosts join one after another over
/// `setup` seconds (`--join-interval setup/C`), each link is set up once both its ends have
/// joined, and each hop holds the stream back by [`bounce::run::STREAM_HOP_DELAY`] plus
/// `queue` seconds, what a busy link's queue holds (see [`queue_delay`]).
fn streamed_chain(cal: &Calibration, setup: f64, queue: f64) -> Result<f64, String> {
    let base = SimConfig {
        latency: Duration::from_secs_f64(cal.latency),
        join_interval: Duration::from_secs_f64(setup / cal.hosts as f64),
        ..SimConfig::new(cal.hosts as u32, cal.size as u64, cal.bandwidth)
    };
    let hop_delay = bounce::run::STREAM_HOP_DELAY + Duration::from_secs_f64(queue);
    let cfg = bounce::sim::streamed_chain(&base, hop_delay, u64::MAX);
    simulate(StrategyKind::Chain, &cfg)
        .map(|r| r.makespan)
        .map_err(|e| format!("bounce-sim: {e}"))
}

/// How long a byte waits in a busy link's queue: the round trip the kernel measures on a
/// bulk push's TCP connection halfway through (`ss -ti`'s `rtt`), less the least it ever
/// measured on it (`minrtt`, the empty path). TCP fills whatever queue a link has (here the
/// lab's `tbf`), and in a chain every hop's link is busy, so the last byte waits in each of
/// them: the model adds it to every hop's delay.
fn queue_delay(lab: &Lab, mut push: Command, t1: f64, addr: &str) -> Result<f64, String> {
    let mut child = push
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs_f64(t1 / 2.0));
    let out = lab
        .controller("ss")
        .args(["-tin", "dst", addr, "dport", "=", "22"])
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.split('/').next()?.parse().ok())
    };
    match (field("rtt:"), field("minrtt:")) {
        (Some(rtt), Some(min)) => Ok((rtt - min).max(0.0) / 1000.0),
        _ => Err(format!("no rtt in ss's answer: {text}")),
    }
}

/// The closed forms of DESIGN.md §2 with one setup latency per hop on the critical path:
/// a cross-check of the simulator.
fn closed_form(kind: StrategyKind, cal: &Calibration) -> f64 {
    let c = cal.hosts as f64;
    let t = cal.size / cal.bandwidth;
    let l = cal.latency;
    let k = (cal.size / cal.chunk).ceil().max(1.0);
    match kind {
        StrategyKind::Linear => c * t + l,
        // Its links are set up before the first chunk: λ from the source, 2λ between hosts.
        StrategyKind::Chain => {
            (l + (1.0 + (c - 1.0) / k) * t).max(2.0 * l + (1.0 + (c - 2.0).max(0.0) / k) * t)
        }
        // Whole-file doubling; the other strategies are not measured here.
        _ => f64::from(rounds(cal.hosts)) * (t + l),
    }
}

/// One line of the final table.
struct Row {
    name: String,
    /// The strategy the simulator models this line with.
    model: StrategyKind,
    target: String,
    measured: Result<f64, String>,
}

fn main() {
    if !lab::available("bench lab") {
        return;
    }
    if wanted("cpu") {
        cpu_part();
    }
    if wanted("stock") {
        stock_part();
    }
    if wanted("faults") {
        faults::faults_part();
    }
    if wanted("fleet") {
        fleet::fleet_part();
    }
    if wanted("shared") {
        shared::shared_part();
    }
    if wanted("trees") {
        trees::trees_part();
    }
    if wanted("scale") {
        scale::scale_part();
    }
    let only_parts = std::env::var("BOUNCE_BENCH_ONLY").is_ok_and(|o| {
        o.split(',').all(|w| {
            matches!(
                w.trim(),
                "cpu" | "stock" | "faults" | "fleet" | "shared" | "trees" | "scale"
            )
        })
    });
    if only_parts {
        return;
    }
    let Workload {
        hosts,
        size,
        rate,
        reps,
    } = Workload::from_env();
    let chunk = parse_size(&env_or("BOUNCE_BENCH_CHUNK", "1MiB")).expect("BOUNCE_BENCH_CHUNK");
    println!(
        "bounce lab benchmark: {hosts} hosts, every link {rate} both ways, {} file, \
         median of {reps}",
        bounce::units::format_size(size)
    );

    let lab = Lab::start("bench lab", LabConfig::hosts(hosts).rate(&rate))
        .expect("lab prerequisites were checked");
    let scratch = lab.scratch();
    let src = scratch.join("src.bin");
    random_file(&src, size as usize, 2014);
    let tiny = scratch.join("tiny.bin");
    fs::write(&tiny, b"x").unwrap();
    let dest = lab.dest("f.bin");
    let digest = sha256_file(&src);

    // Calibration: latency from a one-byte hop, t1 from a full single hop.
    let latency = hop_latency(&lab, &tiny, &dest);
    let t1 = single_hop(&lab, 1, &src, &dest, reps, "t1");
    assert_eq!(
        sha256_file(&lab.host_file(1, "f.bin")),
        digest,
        "t1 copy differs"
    );
    let cal = Calibration::new(size, t1, latency, chunk as u64, hosts);
    println!(
        "t1 = {t1:.2} s, hop latency = {:.0} ms, B = {}/s ({:.1} Mbit/s)",
        latency * 1000.0,
        bounce::units::format_size(cal.bandwidth as u64),
        cal.bandwidth * 8.0 / 1e6
    );

    let l = f64::from(rounds(hosts));
    let c = hosts as f64;
    let mut table: Vec<Row> = Vec::new();
    let names = lab.host_names(hosts);

    let runs = [
        (StrategyKind::Linear, "linear", format!("≈ {c:.0}·t1")),
        (
            StrategyKind::Bounce,
            "bounce",
            format!("≤ {:.2}·t1", 1.15 * l),
        ),
        (StrategyKind::Chain, "chain", "≤ 1.30·t1".to_string()),
    ];
    // The runner's chain uses the chunk the model assumes.
    let chunk_arg = chunk.to_string();
    for (kind, name, target) in runs {
        if !wanted(name) {
            continue;
        }
        let mut times = Vec::new();
        let mut failure = None;
        for _ in 0..reps {
            lab.clear_data();
            let report = scratch.join(format!("{name}.csv"));
            let mut cmd = lab.controller(bounce_run_bin());
            cmd.stdin(Stdio::null())
                .arg("-F")
                .arg(lab.ssh_config())
                .args(["--strategy", name, "-H", &names.join(",")])
                .args(["--chunk", &chunk_arg])
                .arg("--report")
                .arg(&report)
                .arg(&src)
                .arg(&dest);
            let res = time_it(&mut cmd, name);
            if std::env::var_os("BOUNCE_BENCH_TRACE").is_some() {
                print!("{}", fs::read_to_string(&report).unwrap_or_default());
            }
            match res {
                Ok(s) => {
                    let bad: Vec<String> = (1..=hosts)
                        .filter(|&i| {
                            let f = lab.host_file(i, "f.bin");
                            !f.is_file() || sha256_file(&f) != digest
                        })
                        .map(|i| lab.host(i))
                        .collect();
                    if bad.is_empty() {
                        times.push(s);
                    } else {
                        failure = Some(format!("{name}: wrong or missing copy on {bad:?}"));
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let result = match failure {
            None => Ok(median(times)),
            Some(e) => Err(e),
        };
        table.push(Row {
            name: format!("bounce-run {name}"),
            model: kind,
            target,
            measured: result,
        });
    }

    // The shell baselines of the issue.
    if wanted("fan-out") {
        let fanout = median_of(reps, &lab, |lab| {
            time_parallel(
                (1..=hosts)
                    .map(|i| push_from_controller(lab, i, &src, &dest))
                    .collect(),
                "fan-out",
            )
        });
        table.push(Row {
            name: "shell fan-out".into(),
            model: StrategyKind::Linear,
            target: "ref 7.7·t1".into(),
            measured: fanout,
        });
    }

    if wanted("tree") {
        let tree = median_of(reps, &lab, |lab| {
            let start = Instant::now();
            let mut holders = vec![0usize];
            let mut next = 1;
            while next <= hosts {
                let mut round = Vec::new();
                for &h in &holders.clone() {
                    if next > hosts {
                        break;
                    }
                    round.push(if h == 0 {
                        push_from_controller(lab, next, &src, &dest)
                    } else {
                        push_between(lab, h, next, &dest)
                    });
                    holders.push(next);
                    next += 1;
                }
                time_parallel(round, "doubling tree round")?;
            }
            Ok(start.elapsed().as_secs_f64())
        });
        table.push(Row {
            name: "shell doubling tree".into(),
            model: StrategyKind::Bounce,
            target: "ref 4.5·t1".into(),
            measured: tree,
        });
    }

    // Each host tees the stream into its file and pipes it on; the script sits in the lab
    // directory, which every host sees at the same path.
    if wanted("tee") {
        let script = scratch.join("tee-chain.sh");
        fs::write(
            &script,
            "#!/bin/sh\n\
         # $1 = this host's index, $2 = the last index, $3 = DEST\n\
         if [ \"$1\" -ge \"$2\" ]; then exec cat > \"$3\"; fi\n\
         tee \"$3\" | ssh \"h$(($1 + 1))\" sh \"$0\" \"$(($1 + 1))\" \"$2\" \"$3\"\n",
        )
        .unwrap();
        let tee = median_of(reps, &lab, |lab| {
            let mut c = lab.ssh(
                "h1",
                &format!("sh '{}' 1 {hosts} '{dest}'", script.display()),
            );
            c.stdin(Stdio::from(fs::File::open(&src).unwrap()));
            time_it(&mut c, "tee chain")
        });
        table.push(Row {
            name: "shell tee chain".into(),
            model: StrategyKind::Chain,
            target: "ref 1.7·t1".into(),
            measured: tee,
        });
    }

    println!();
    println!(
        "{:<22} {:>10} {:>7} {:>11} {:>9} {:>7} {:>9} {:>7}",
        "strategy", "measured s", "ratio", "target", "sim s", "error %", "closed s", "error %"
    );
    for row in &table {
        let sim = simulated(row.model, &cal);
        let closed = closed_form(row.model, &cal);
        let (measured, ratio, failure) = match &row.measured {
            Ok(s) => (format!("{s:.2}"), format!("{:.2}", s / t1), String::new()),
            Err(e) => ("failed".into(), "-".into(), format!("   {e}")),
        };
        let err = |p: f64| match &row.measured {
            Ok(s) => format!("{:+.1}", (p - s) / s * 100.0),
            Err(_) => "-".into(),
        };
        let (sim_s, sim_err, sim_failure) = match sim {
            Ok(p) => (format!("{p:.2}"), err(p), String::new()),
            Err(e) => ("-".into(), "-".into(), format!("   {e}")),
        };
        println!(
            "{:<22} {measured:>10} {ratio:>7} {:>11} {sim_s:>9} {sim_err:>7} {closed:>9.2} {:>7}{failure}{sim_failure}",
            row.name,
            row.target,
            err(closed),
        );
    }
    println!(
        "\nt1 = {:.2} s (single hop, same run). sim: bounce::sim::simulate with B = {:.1} Mbit/s, \
         latency = {:.0} ms per connection, chunk = {}; closed: DESIGN.md §2 plus latency. The \
         shell rows are modelled by linear, bounce and chain.",
        cal.t1,
        cal.bandwidth * 8.0 / 1e6,
        cal.latency * 1000.0,
        bounce::units::format_size(cal.chunk as u64),
    );
}

/// Median of `reps` timed runs after clearing the hosts' disks, checking every copy.
fn median_of(
    reps: usize,
    lab: &Lab,
    mut run: impl FnMut(&Lab) -> Result<f64, String>,
) -> Result<f64, String> {
    let src_digest = sha256_file(&lab.scratch().join("src.bin"));
    let mut times = Vec::new();
    for _ in 0..reps {
        lab.clear_data();
        times.push(run(lab)?);
        for i in 1..=lab.len() {
            let f = lab.host_file(i, "f.bin");
            if !f.is_file() || sha256_file(&f) != src_digest {
                return Err(format!("wrong or missing copy on {}", lab.host(i)));
            }
        }
    }
    Ok(median(times))
}

/// Busy CPU seconds of the whole machine so far: `/proc/stat`'s `cpu` line less idle and
/// iowait.
fn machine_cpu(tick: f64) -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / tick
}

/// Clock ticks per second of `/proc` times.
fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The kind of work a process does, by its command name.
fn category(comm: &str) -> &'static str {
    match comm {
        "ssh" => "ssh",
        c if c.starts_with("sshd") => "sshd",
        "openssl" | "sha256sum" => "digest",
        "tee" | "tail" | "head" | "cat" | "dd" => "copy",
        c if c.starts_with("bounce-run") => "controller",
        _ => "other",
    }
}

const CATEGORIES: [&str; 6] = ["ssh", "sshd", "digest", "copy", "controller", "other"];

/// utime + stime ticks and command name of every process.
fn process_times() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces; the fields after it are fixed.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = rest
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + rest
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        out.insert(pid, (comm, ticks));
    }
    out
}

/// CPU seconds per kind of process while a command runs, sampled every 100 ms (a process
/// that lives shorter than that is missed here, but counted in the machine's total; the
/// sampling itself costs about 1% of a core).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<&'static str, f64>>,
}

impl Sampler {
    fn start(tick: f64) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let before = process_times();
            let mut last: HashMap<u32, (String, u64)> = HashMap::new();
            loop {
                for (pid, (comm, t)) in process_times() {
                    last.insert(pid, (comm, t));
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut by: HashMap<&'static str, f64> = HashMap::new();
            for (pid, (comm, t)) in last {
                let base = before
                    .get(&pid)
                    .filter(|(c, _)| *c == comm)
                    .map_or(0, |(_, t0)| *t0);
                *by.entry(category(&comm)).or_default() += t.saturating_sub(base) as f64 / tick;
            }
            by
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> HashMap<&'static str, f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One measured command of the CPU part: wall and CPU medians over the repetitions.
struct CpuRow {
    name: String,
    baseline: Option<usize>,
    target: &'static str,
    hosts: usize,
    result: Result<(f64, f64, HashMap<&'static str, f64>), String>,
}

fn cpu_part() {
    let size = parse_size(&env_or("BOUNCE_BENCH_CPU_SIZE", "1GiB")).expect("BOUNCE_BENCH_CPU_SIZE");
    let reps: usize = env_or("BOUNCE_BENCH_REPS", "3")
        .parse()
        .expect("BOUNCE_BENCH_REPS");
    let tick = clock_tick();
    println!(
        "bounce lab benchmark, CPU part: {} file, 2 hosts, uncapped links, median of {reps}",
        bounce::units::format_size(size)
    );
    let lab =
        Lab::start("bench lab cpu", LabConfig::hosts(2)).expect("lab prerequisites were checked");
    let scratch = lab.scratch();
    let src = scratch.join("big.bin");
    random_file(&src, size as usize, 9);
    let digest = sha256_file(&src);
    let dest = lab.dest("f.bin");
    let report = scratch.join("cpu.csv");
    let from_file = |c: &mut Command| {
        c.stdin(Stdio::from(fs::File::open(&src).unwrap()));
    };
    let bounce = |strategy: &str, hosts: &str| {
        let mut c = lab.controller(bounce_run_bin());
        c.stdin(Stdio::null())
            .arg("-F")
            .arg(lab.ssh_config())
            .args(["--strategy", strategy, "-H", hosts])
            .arg("--report")
            .arg(&report)
            .arg(&src)
            .arg(&dest);
        c
    };
    let ssh_with = |opts: &[&str], host: &str, remote: &str| {
        let mut c = lab.controller("ssh");
        c.arg("-F")
            .arg(lab.ssh_config())
            .args(opts)
            .arg(host)
            .arg(remote);
        c
    };
    // The lab's config with OpenSSH's default cipher named, which bounce-run obeys: the
    // same run without its AES-GCM preference.
    let chacha_config = scratch.join("chacha_config");
    fs::write(
        &chacha_config,
        format!(
            "Host *\n    Ciphers chacha20-poly1305@openssh.com\n{}",
            fs::read_to_string(lab.ssh_config()).unwrap()
        ),
    )
    .unwrap();
    let streams = |mut c: Command, n: &str| {
        c.args(["--streams", n]);
        c
    };
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let plain = format!("cat > '{dest}'");
    let rows: Vec<(String, Option<usize>, &'static str, usize, Make)> = vec![
        (
            "ssh h1 'cat > f' (default cipher)".into(),
            None,
            "",
            1,
            Box::new(|| {
                let mut c = ssh_with(&[], "h1", &plain);
                from_file(&mut c);
                c
            }),
        ),
        (
            "ssh -c aes128-gcm h1 'cat > f'".into(),
            Some(0),
            "",
            1,
            Box::new(|| {
                let mut c = ssh_with(&["-c", "aes128-gcm@openssh.com"], "h1", &plain);
                from_file(&mut c);
                c
            }),
        ),
        (
            "ssh h1 'tee f | openssl dgst'".into(),
            Some(0),
            "",
            1,
            Box::new(|| {
                let mut c = ssh_with(
                    &[],
                    "h1",
                    &format!("tee '{dest}' | openssl dgst -sha256 -r"),
                );
                from_file(&mut c);
                c
            }),
        ),
        (
            "ssh h1 'tee f | sha256sum'".into(),
            Some(0),
            "",
            1,
            Box::new(|| {
                let mut c = ssh_with(&[], "h1", &format!("tee '{dest}' | sha256sum"));
                from_file(&mut c);
                c
            }),
        ),
        (
            "bounce-run chain -H h1".into(),
            Some(0),
            "≤ 1.25",
            1,
            Box::new(|| bounce("chain", "h1")),
        ),
        (
            "bounce-run chain -H h1 --no-fsync".into(),
            Some(0),
            "",
            1,
            Box::new(|| {
                let mut c = bounce("chain", "h1");
                c.arg("--no-fsync");
                c
            }),
        ),
        (
            "bounce-run chain -H h1, chacha20".into(),
            Some(0),
            "",
            1,
            Box::new(|| {
                let mut c = bounce("chain", "h1");
                replace_config(&mut c, &chacha_config);
                c
            }),
        ),
        (
            "bounce-run bounce -H h1".into(),
            Some(0),
            "≤ 1.25",
            1,
            Box::new(|| bounce("bounce", "h1")),
        ),
        (
            "tee chain h1 -> h2".into(),
            None,
            "",
            2,
            Box::new(|| {
                let mut c = ssh_with(
                    &[],
                    "h1",
                    &format!("tee '{dest}' | ssh h2 \"cat > '{dest}'\""),
                );
                from_file(&mut c);
                c
            }),
        ),
        (
            "bounce-run chain -H h1,h2".into(),
            Some(8),
            "≤ 1.25",
            2,
            Box::new(|| bounce("chain", "h1,h2")),
        ),
        // --streams: each row against the same strategy over one stream (rows 10 and 13).
        (
            "bounce-run linear -H h1".into(),
            Some(0),
            "",
            1,
            Box::new(|| bounce("linear", "h1")),
        ),
        (
            "bounce-run linear -H h1 --streams 2".into(),
            Some(10),
            "",
            1,
            Box::new(|| streams(bounce("linear", "h1"), "2")),
        ),
        (
            "bounce-run linear -H h1 --streams 4".into(),
            Some(10),
            "",
            1,
            Box::new(|| streams(bounce("linear", "h1"), "4")),
        ),
        (
            "bounce-run bounce -H h1,h2".into(),
            None,
            "",
            2,
            Box::new(|| bounce("bounce", "h1,h2")),
        ),
        (
            "bounce-run bounce -H h1,h2 --streams 2".into(),
            Some(13),
            "",
            2,
            Box::new(|| streams(bounce("bounce", "h1,h2"), "2")),
        ),
    ];
    let mut table: Vec<CpuRow> = Vec::new();
    for (name, baseline, target, hosts, make) in &rows {
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut splits: Vec<HashMap<&'static str, f64>> = Vec::new();
        let mut failure = None;
        for _ in 0..reps {
            lab.clear_data();
            let sampler = Sampler::start(tick);
            let cpu0 = machine_cpu(tick);
            let res = time_it(&mut make(), name);
            let cpu = machine_cpu(tick) - cpu0;
            let split = sampler.finish();
            match res {
                Ok(wall) => {
                    let bad = (1..=*hosts).any(|i| {
                        let f = lab.host_file(i, "f.bin");
                        !f.is_file() || sha256_file(&f) != digest
                    });
                    if bad {
                        failure = Some(format!("{name}: a copy is wrong or missing"));
                        break;
                    }
                    walls.push(wall);
                    cpus.push(cpu);
                    splits.push(split);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let result = match failure {
            Some(e) => Err(e),
            None => {
                // The split of the repetition whose wall time is the median.
                let mut order: Vec<usize> = (0..walls.len()).collect();
                order.sort_by(|&a, &b| walls[a].total_cmp(&walls[b]));
                let mid = order[order.len() / 2];
                Ok((median(walls.clone()), median(cpus), splits.swap_remove(mid)))
            }
        };
        table.push(CpuRow {
            name: name.clone(),
            baseline: *baseline,
            target,
            hosts: *hosts,
            result,
        });
    }
    let gib = size as f64 / f64::from(1u32 << 30);
    println!();
    print!(
        "{:<36} {:>7} {:>7} {:>7} {:>8} {:>9}",
        "command", "wall s", "ratio", "target", "CPU s", "CPU s/GiB"
    );
    for c in CATEGORIES {
        print!(" {c:>10}");
    }
    println!();
    for (i, row) in table.iter().enumerate() {
        match &row.result {
            Err(e) => println!("{:<36} failed: {e}", row.name),
            Ok((wall, cpu, split)) => {
                let base = row
                    .baseline
                    .and_then(|b| table[b].result.as_ref().ok().map(|r| r.0));
                let ratio = base.map_or("base".to_string(), |b| format!("{:.2}", wall / b));
                let delivered = gib * row.hosts as f64;
                print!(
                    "{:<36} {wall:>7.2} {ratio:>7} {:>7} {cpu:>8.2} {:>9.2}",
                    row.name,
                    row.target,
                    cpu / delivered
                );
                for c in CATEGORIES {
                    print!(
                        " {:>10.2}",
                        split.get(c).copied().unwrap_or(0.0) / delivered
                    );
                }
                println!();
            }
        }
        let _ = i;
    }
    println!(
        "\nratio: wall time over the row's baseline in the same run (plain ssh for one host, \
         the tee chain for two, the same strategy over one stream for --streams). CPU s: the whole machine's busy CPU during the command. The \
         last columns split it by process kind, per GiB delivered (GiB × hosts): ssh client, \
         sshd, digest (openssl or sha256sum), copy (tee, tail, head, cat, dd), controller \
         (bounce-run), other (shells, stat, sleep; short-lived processes are partly missed).\n"
    );
}

/// The stock-configuration part (see the module docs).
fn stock_part() {
    let spec = env_or(
        "BOUNCE_BENCH_STOCK",
        "8:100mbit:64MiB,8:100mbit:64MiB:slow,32:25mbit:32MiB",
    );
    let reps: usize = env_or("BOUNCE_BENCH_REPS", "3")
        .parse()
        .expect("BOUNCE_BENCH_REPS");
    let chunk = parse_size(&env_or("BOUNCE_BENCH_CHUNK", "1MiB")).expect("BOUNCE_BENCH_CHUNK");
    println!("bounce lab benchmark, stock part: Debian's ssh and sshd configs and root dotfiles, hosts by IP, median of {reps}");
    println!();
    println!(
        "{:<40} {:>7} {:>8} {:>9} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "workload",
        "t1 s",
        "chain s",
        "ratio",
        "target",
        "setup s",
        "sim s",
        "error %",
        "lat ms",
        "conn s",
        "hops s",
        "queue ms"
    );
    for part in spec.split(',') {
        let fields: Vec<&str> = part.trim().split(':').collect();
        let (hosts, rate, size, slow) = match fields[..] {
            [hosts, rate, size] => (hosts, rate, size, false),
            [hosts, rate, size, "slow"] => (hosts, rate, size, true),
            _ => panic!("BOUNCE_BENCH_STOCK: {part:?} is not HOSTS:RATE:SIZE[:slow]"),
        };
        let hosts: usize = hosts.parse().expect("BOUNCE_BENCH_STOCK hosts");
        let size = parse_size(size).expect("BOUNCE_BENCH_STOCK size");
        let target = match (hosts >= 32, slow) {
            (true, _) => "≤ 1.40",
            (false, true) => "≤ 1.40",
            (false, false) => "≤ 1.30",
        };
        let mut cfg = LabConfig::hosts(hosts).rate(rate).stock();
        if slow {
            cfg = cfg.slow_login();
        }
        let lab = Lab::start("bench lab stock", cfg).expect("lab prerequisites were checked");
        let scratch = lab.scratch();
        let src = scratch.join("src.bin");
        random_file(&src, size as usize, 32);
        let tiny = scratch.join("tiny.bin");
        fs::write(&tiny, b"x").unwrap();
        let digest = sha256_file(&src);
        let dest = lab.dest("f.bin");
        let addrs = lab.host_addrs(hosts);
        let push = |file: &Path| {
            let mut c = lab.controller("ssh");
            c.arg("-F")
                .arg(lab.ssh_config())
                .arg(&addrs[0])
                .arg(format!("cat > '{dest}'"))
                .stdin(Stdio::from(fs::File::open(file).unwrap()));
            c
        };
        let latency = median(
            (0..5)
                .map(|_| time_it(&mut push(&tiny), "tiny hop").expect("tiny hop"))
                .collect(),
        );
        // The controller's connections to all hosts at once, as bounce-run opens them, and
        // the same with a hop from each host to the next: the model spreads the latter
        // evenly over the hosts.
        let connect_all_s = median(
            (0..reps)
                .map(|_| connect_all(&lab, &addrs, false).expect("connections to every host"))
                .collect(),
        );
        let hop_all_s = median(
            (0..reps)
                .map(|_| connect_all(&lab, &addrs, true).expect("hops between every host"))
                .collect(),
        );
        let t1 = median(
            (0..reps)
                .map(|_| {
                    lab.clear_data();
                    time_it(&mut push(&src), "t1").expect("t1")
                })
                .collect(),
        );
        let mut walls = Vec::new();
        let mut setups = Vec::new();
        let mut failure = None;
        for _ in 0..reps {
            lab.clear_data();
            let report = scratch.join("stock.csv");
            let mut cmd = lab.controller(bounce_run_bin());
            cmd.stdin(Stdio::null())
                .arg("-F")
                .arg(lab.ssh_config())
                .args(["--strategy", "chain", "-H", &addrs.join(",")])
                .args(["--chunk", &chunk.to_string()])
                .arg("--report")
                .arg(&report)
                .arg(&src)
                .arg(&dest);
            match time_it(&mut cmd, "bounce-run chain") {
                Ok(w) => {
                    let bad = (1..=hosts).any(|i| {
                        let f = lab.host_file(i, "f.bin");
                        !f.is_file() || sha256_file(&f) != digest
                    });
                    if bad {
                        failure = Some("a copy is wrong or missing".to_string());
                        break;
                    }
                    walls.push(w);
                    let first = fs::read_to_string(&report)
                        .unwrap_or_default()
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split(',').nth(2)?.parse::<f64>().ok())
                        .fold(f64::INFINITY, f64::min);
                    setups.push(first);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let name = format!(
            "{hosts} hosts, {rate}, {}{}",
            bounce::units::format_size(size),
            if slow { ", slow login" } else { "" }
        );
        let cal = Calibration::new(size, t1, latency, chunk as u64, hosts);
        let queue = queue_delay(&lab, push(&src), t1, &addrs[0]).unwrap_or_else(|e| {
            eprintln!("queue delay not measured ({e}); the model assumes none");
            0.0
        });
        let sim = streamed_chain(&cal, hop_all_s, queue);
        match failure {
            Some(e) => println!("{name:<40} {t1:>7.2} failed: {e}"),
            None => {
                let wall = median(walls);
                let setup = median(setups);
                let (sim_s, err) = match sim {
                    Ok(p) => (
                        format!("{p:.2}"),
                        format!("{:+.1}", (p - wall) / wall * 100.0),
                    ),
                    Err(e) => (e, "-".into()),
                };
                println!(
                    "{name:<40} {t1:>7.2} {wall:>8.2} {:>9.2} {target:>7} {setup:>7.2} {sim_s:>8} {err:>8} {:>7.0} {connect_all_s:>8.2} {hop_all_s:>8.2} {:>8.0}",
                    wall / t1,
                    latency * 1000.0,
                    queue * 1000.0
                );
            }
        }
    }
    println!(
        "\nt1: a plain `ssh IP 'cat > f' < file` in the same lab; ratio = chain / t1; setup: when \
         the first host started receiving, from bounce-run's report; conn: the controller's \
         connections to every host opened at once (`ssh IP true`), until the last is done; hops: \
         the same with each host then connecting to the next (`ssh IP 'ssh NEXT true'`), a \
         chain's setup per host when all share the lab's cores; sim: bounce::sim's model of \
         the streamed chain, with B and the per-connection latency calibrated from t1 and a \
         one-byte hop, hosts joining evenly over hops (--join-interval hops/C), and held back \
         per hop by half a relay poll (25 ms) and by queue: what a busy link's queue delays a \
         byte, measured as a push's TCP round trip halfway through less its least (ss -ti).\n"
    );
}

/// Points a `bounce-run` command's `-F` at `config` instead.
fn replace_config(cmd: &mut Command, config: &Path) {
    let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let program = cmd.get_program().to_os_string();
    let mut fresh = Command::new(program);
    let mut iter = args.into_iter();
    while let Some(a) = iter.next() {
        if a == "-F" {
            iter.next();
            fresh.arg("-F").arg(config);
        } else {
            fresh.arg(a);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        fresh.current_dir(dir);
    }
    fresh.stdin(Stdio::null());
    *cmd = fresh;
}
