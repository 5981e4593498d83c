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

#[path = "../tests/lab/mod.rs"]
mod lab;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bounce::core::StrategyKind;
use bounce::sim::{simulate, SimConfig};
use bounce::units::parse_size;
use lab::support::{bounce_run_bin, random_file, sha256_file, wait_within};
use lab::{Lab, LabConfig};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
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
    let hosts: usize = env_or("BOUNCE_BENCH_HOSTS", "8")
        .parse()
        .expect("BOUNCE_BENCH_HOSTS");
    let size = parse_size(&env_or("BOUNCE_BENCH_SIZE", "64MiB")).expect("BOUNCE_BENCH_SIZE");
    let rate = env_or("BOUNCE_BENCH_RATE", "100mbit");
    let reps: usize = env_or("BOUNCE_BENCH_REPS", "3")
        .parse()
        .expect("BOUNCE_BENCH_REPS");
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
    let latency = median(
        (0..5)
            .map(|_| {
                time_it(&mut push_from_controller(&lab, 1, &tiny, &dest), "tiny hop")
                    .expect("tiny hop")
            })
            .collect(),
    );
    let t1 = median(
        (0..reps)
            .map(|_| {
                lab.clear_data();
                time_it(&mut push_from_controller(&lab, 1, &src, &dest), "t1").expect("t1")
            })
            .collect(),
    );
    assert_eq!(
        sha256_file(&lab.host_file(1, "f.bin")),
        digest,
        "t1 copy differs"
    );
    let bandwidth = size as f64 / (t1 - latency).max(1e-3);
    let cal = Calibration {
        size: size as f64,
        t1,
        latency,
        bandwidth,
        chunk: chunk as f64,
        hosts,
    };
    println!(
        "t1 = {t1:.2} s, hop latency = {:.0} ms, B = {}/s ({:.1} Mbit/s)",
        latency * 1000.0,
        bounce::units::format_size(bandwidth as u64),
        bandwidth * 8.0 / 1e6
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
