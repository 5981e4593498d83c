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
//! `BOUNCE_BENCH_REPS` and `BOUNCE_BENCH_CHUNK` (the chunk of the chain model, `1MiB`).
//!
//! It measures:
//! - t1, a plain `ssh h1 'cat > f' < file` from the controller, and a one-byte hop, from
//!   which B (= size / (t1 − latency)) and the per-hop latency are calibrated;
//! - `bounce-run --strategy linear|bounce|chain` to all hosts (wall clock, process start to
//!   exit, like t1);
//! - the issue's reference shell baselines: a simultaneous fan-out, a lock-step doubling
//!   tree and a naive tee chain.
//!
//! Next to each measurement it prints the target and the model's prediction for the
//! calibrated B and latency. Timing needs the machine to itself: run it alone.

#[path = "../tests/lab/mod.rs"]
mod lab;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bounce::core::StrategyKind;
use bounce::units::parse_size;
use lab::support::{bounce_run_bin, random_file, sha256_file, wait_within};
use lab::{Lab, LabConfig};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
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

/// The model's time for `strategy`, with the calibrated bandwidth and latency: the closed
/// forms of DESIGN.md §2 plus one setup latency per hop on the critical path.
// The simulator (`bounce::sim::simulate`) has not landed on main yet; when it does, this is
// the one function to switch to it.
fn predict(kind: Option<StrategyKind>, baseline: &str, cal: &Calibration) -> f64 {
    let c = cal.hosts as f64;
    let t = cal.size / cal.bandwidth;
    let l = cal.latency;
    let k = (cal.size / cal.chunk).ceil().max(1.0);
    match (kind, baseline) {
        (Some(StrategyKind::Linear), _) | (None, "fan-out") => c * t + l,
        (Some(StrategyKind::Bounce), _) | (None, "doubling tree") => {
            f64::from(rounds(cal.hosts)) * (t + l)
        }
        (Some(StrategyKind::Chain), _) => (1.0 + (c - 1.0) / k) * t + c * l,
        (None, _) => t + c * l,
    }
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
    let mut table: Vec<(String, Result<f64, String>, String, f64)> = Vec::new();
    let names = lab.host_names(hosts);

    for kind in [
        StrategyKind::Linear,
        StrategyKind::Bounce,
        StrategyKind::Chain,
    ] {
        let name = match kind {
            StrategyKind::Linear => "linear",
            StrategyKind::Bounce => "bounce",
            StrategyKind::Chain => "chain",
        };
        let target = match kind {
            StrategyKind::Linear => format!("≈ {c:.0}·t1"),
            StrategyKind::Bounce => format!("≤ {:.2}·t1", 1.15 * l),
            StrategyKind::Chain => "≤ 1.30·t1".to_string(),
        };
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
                .arg("--report")
                .arg(&report)
                .arg(&src)
                .arg(&dest);
            match time_it(&mut cmd, name) {
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
        table.push((
            format!("bounce-run {name}"),
            result,
            target,
            predict(Some(kind), "", &cal),
        ));
    }

    // The shell baselines of the issue.
    let fanout = median_of(reps, &lab, |lab| {
        time_parallel(
            (1..=hosts)
                .map(|i| push_from_controller(lab, i, &src, &dest))
                .collect(),
            "fan-out",
        )
    });
    table.push((
        "shell fan-out".into(),
        fanout,
        "ref 7.7·t1".into(),
        predict(None, "fan-out", &cal),
    ));

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
    table.push((
        "shell doubling tree".into(),
        tree,
        "ref 4.5·t1".into(),
        predict(None, "doubling tree", &cal),
    ));

    // Each host tees the stream into its file and pipes it on; the script sits in the lab
    // directory, which every host sees at the same path.
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
    table.push((
        "shell tee chain".into(),
        tee,
        "ref 1.7·t1".into(),
        predict(None, "tee chain", &cal),
    ));

    println!();
    println!(
        "{:<22} {:>10} {:>8} {:>12} {:>12} {:>8}",
        "strategy", "measured s", "ratio", "target", "predicted s", "error %"
    );
    for (name, result, target, predicted) in &table {
        match result {
            Ok(s) => println!(
                "{name:<22} {s:>10.2} {:>8.2} {target:>12} {predicted:>12.2} {:>8.1}",
                s / t1,
                (predicted - s) / s * 100.0
            ),
            Err(e) => println!(
                "{name:<22} {:>10} {:>8} {target:>12} {predicted:>12.2} {:>8}   {e}",
                "failed", "-", "-"
            ),
        }
    }
    println!(
        "\nt1 = {:.2} s (single hop, same run); predictions: DESIGN.md §2 closed forms with \
         B and latency calibrated above.",
        cal.t1
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
