//! The lab benchmark's `faults` part (issue 10): the streamed chain when one host is slow,
//! crashes or loses its link, each row next to the fault-free chain and t1 measured in the
//! same run, median of `BOUNCE_BENCH_REPS`.
//!
//! Workload: `BOUNCE_BENCH_HOSTS` (8) hosts at `BOUNCE_BENCH_RATE` (100 Mbit/s) both ways,
//! a `BOUNCE_BENCH_SIZE` (64 MiB) file; the faulty host is h4, and h8 connects a second late
//! so that it joins the chain last and h4 has hosts behind it. Rows:
//!
//! - straggler: h4 at a tenth of the rate from the start; the healthy hosts' last end against
//!   t1 (target ≤ 1.4), and h4's end against its own single hop at its rate (≤ 1.2);
//! - first: the same slow h4, heading the chain (every other host connects half a second
//!   late), where only a probe of the controller tells it from a slow controller; the same
//!   two measures;
//! - crash: every process of h4 killed once its copy holds 40% of the file; the other hosts'
//!   last end against the fault-free chain (target ≤ 1.15× + 1 s);
//! - link down: h4's link taken down at 40%; the others' last end against the keep-alive
//!   bound (6 s) plus 1.2× what the remaining 60% needs at B.
//!
//! Every row also checks every surviving host's copy and prints the most bytes any of them
//! received on its link (the file once, plus ssh's framing: at most S + 2 MiB), and how many
//! hosts the straggler rule cut out (the most in any of its runs: none without a fault).
//!
//! `BOUNCE_BENCH_FAULTS=straggler,first,crash,down` runs only the fault rows named (all by
//! default); the fault-free chain and t1 are always measured, as every row's baseline.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::lab::support::{
    bounce_run_with, config_delaying, random_file, read_report, sha256_file, wait_within,
};
use super::lab::{Lab, LabConfig};
use super::{median, single_hop, Workload};

/// The host that is slow, crashes or loses its link.
const VICTIM: usize = 4;

/// One run of the chain: its wall time, the last end among the hosts other than `VICTIM`
/// and the victim's end (seconds since the run began, from the report), and the most bytes
/// a surviving host received.
#[derive(Clone)]
struct ChainRun {
    wall: f64,
    others_end: f64,
    /// When the fault was made, seconds since the run began (0 without one).
    fault_at: f64,
    victim_end: Option<f64>,
    max_rx: u64,
    /// Hosts the straggler rule cut out (the most in any run of a median).
    cuts: usize,
}

/// The length of host `i`'s temporary copy of f.bin, if any.
fn temp_len(lab: &Lab, i: usize) -> u64 {
    fs::read_dir(lab.host_file(i, ""))
        .ok()
        .and_then(|d| {
            d.flatten().find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                (n.starts_with(".f.bin.bounce-") && n.ends_with(".tmp"))
                    .then(|| e.metadata().map(|m| m.len()).unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// Runs the chain to every host, calling `fault` once h4's copy holds `at` bytes (never
/// when `at` is `None`), and checks every surviving host's copy.
fn run_chain(
    lab: &mut Lab,
    config: &Path,
    src: &Path,
    digest: &str,
    at: Option<u64>,
    fault: &dyn Fn(&mut Lab),
) -> Result<ChainRun, String> {
    let hosts = lab.len();
    lab.clear_data();
    let report = lab.scratch().join("faults.csv");
    let rx0: Vec<u64> = (1..=hosts).map(|i| lab.rx_bytes(i)).collect();
    let mut cmd = bounce_run_with(
        lab,
        config,
        "chain",
        &lab.host_names(hosts),
        &report,
        src,
        &lab.dest("f.bin"),
    );
    cmd.args(["--connect-timeout", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("bounce-run: {e}"))?;
    let mut fault_at = 0.0;
    if let Some(at) = at {
        while temp_len(lab, VICTIM) < at && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
        fault_at = start.elapsed().as_secs_f64();
        fault(lab);
    }
    let out = wait_within(child, Duration::from_secs(1800), "bounce-run chain");
    let wall = start.elapsed().as_secs_f64();
    if std::env::var_os("BOUNCE_BENCH_TRACE").is_some() {
        print!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let cuts = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("cut out of the chain"))
        .count();
    let rows = read_report(&report);
    let mut others_end: f64 = 0.0;
    let mut max_rx = 0;
    for i in 1..=hosts {
        let r = &rows[i - 1];
        if i == VICTIM && at.is_some() {
            continue;
        }
        let f = lab.host_file(i, "f.bin");
        if r.status != "verified" || !f.is_file() || sha256_file(&f) != digest {
            return Err(format!("h{i}: {} {}", r.status, r.error));
        }
        if i != VICTIM {
            others_end = others_end.max(r.end_s.unwrap_or(f64::NAN));
        }
        max_rx = max_rx.max(lab.rx_bytes(i) - rx0[i - 1]);
    }
    Ok(ChainRun {
        wall,
        others_end,
        fault_at,
        victim_end: rows[VICTIM - 1].end_s,
        max_rx,
        cuts,
    })
}

/// Median of `reps` runs of `one` (each field on its own), or the first failure.
fn median_runs(
    reps: usize,
    mut one: impl FnMut() -> Result<ChainRun, String>,
) -> Result<ChainRun, String> {
    let runs: Vec<ChainRun> = (0..reps).map(|_| one()).collect::<Result<_, _>>()?;
    let of = |f: fn(&ChainRun) -> f64| median(runs.iter().map(f).collect());
    let victim: Vec<f64> = runs.iter().filter_map(|r| r.victim_end).collect();
    Ok(ChainRun {
        wall: of(|r| r.wall),
        others_end: of(|r| r.others_end),
        fault_at: of(|r| r.fault_at),
        victim_end: (!victim.is_empty()).then(|| median(victim)),
        max_rx: runs.iter().map(|r| r.max_rx).max().unwrap_or(0),
        cuts: runs.iter().map(|r| r.cuts).max().unwrap_or(0),
    })
}

/// Prints one row: what was measured, what it is compared with, their ratio as the target
/// states it, and the most bytes a surviving host received.
fn row(
    name: &str,
    r: &Result<ChainRun, String>,
    measure: impl Fn(&ChainRun) -> (f64, f64, f64),
    target: &str,
) {
    match r {
        Ok(run) => {
            let (measured, base, ratio) = measure(run);
            println!(
                "{name:<46} {measured:>9.2} {base:>9.2} {ratio:>8.2} {target:>16} {:>11.2} {:>5}",
                run.max_rx as f64 / 1048576.0,
                run.cuts
            );
        }
        Err(e) => println!("{name:<46} failed: {e}"),
    }
}

/// True when the fault row `name` is to be run (`BOUNCE_BENCH_FAULTS`, all by default).
fn fault_wanted(name: &str) -> bool {
    std::env::var("BOUNCE_BENCH_FAULTS").map_or(true, |v| v.split(',').any(|f| f.trim() == name))
}

/// The `faults` part (see the module docs).
pub fn faults_part() {
    let workload = Workload::from_env();
    let slow = format!("{}mbit", workload.rate_mbit() / 10.0);
    let Workload {
        hosts,
        size,
        rate,
        reps,
    } = workload;
    println!(
        "bounce lab benchmark, faults part: {hosts} hosts at {rate}, {} file, h{VICTIM} faulty, median of {reps}",
        bounce::units::format_size(size)
    );
    let mut lab = Lab::start("bench lab faults", LabConfig::hosts(hosts).rate(&rate))
        .expect("lab prerequisites were checked");
    let src = lab.scratch().join("src.bin");
    random_file(&src, size as usize, 1010);
    let digest = sha256_file(&src);
    let dest = lab.dest("f.bin");
    // The last host connects a little late, so that it joins the chain last and the victim
    // has hosts behind it; the fault-free chain is measured the same way.
    let config = config_delaying(&lab, &[(hosts, 0.3)]);

    let t1 = single_hop(&lab, 1, &src, &dest, reps, "t1");
    let b = size as f64 / t1;
    println!(
        "t1 = {t1:.2} s (a plain ssh push to h1), B = {:.1} Mbit/s",
        b * 8.0 / 1e6
    );
    println!();
    println!(
        "{:<46} {:>9} {:>9} {:>8} {:>16} {:>11} {:>5}",
        "workload", "measured", "base", "ratio", "target", "max rx MiB", "cuts"
    );

    let none = |_: &mut Lab| {};
    let free = median_runs(reps, || {
        run_chain(&mut lab, &config, &src, &digest, None, &none)
    });
    let tf = free.as_ref().map(|r| r.others_end).unwrap_or(f64::NAN);
    row(
        "chain, no fault: last host vs t1",
        &free,
        |r| (r.others_end, t1, r.others_end / t1),
        "",
    );

    let first = fault_wanted("first");
    if fault_wanted("straggler") || first {
        // The victim heads the chain when every other host connects later.
        let delays: Vec<(usize, f64)> = (1..=hosts)
            .filter(|&i| i != VICTIM)
            .map(|i| (i, 0.5))
            .collect();
        let heading = config_delaying(&lab, &delays);
        let mut configs = Vec::new();
        if fault_wanted("straggler") {
            configs.push(("", config.as_path()));
        }
        if first {
            configs.push((", heading the chain", heading.as_path()));
        }
        straggler_rows(&mut lab, &configs, &src, &digest, &rate, &slow, reps, t1);
    }
    let at = Some(size * 2 / 5);
    if fault_wanted("crash") {
        // Crash at 40%: every process of the victim killed; restarted for the next run.
        let crash = median_runs(reps, || {
            let r = run_chain(&mut lab, &config, &src, &digest, at, &|lab: &mut Lab| {
                lab.stop_sshd(VICTIM)
            });
            lab.start_sshd(VICTIM);
            r
        });
        row(
            &format!("h{VICTIM} crashes at 40%: others vs no fault"),
            &crash,
            |r| (r.others_end, tf, (r.others_end - 1.0) / tf),
            "(x−1 s)/base ≤ 1.15",
        );
    }
    if fault_wanted("down") {
        let down = median_runs(reps, || {
            let r = run_chain(&mut lab, &config, &src, &digest, at, &|lab: &mut Lab| {
                lab.link_down(VICTIM)
            });
            lab.link_up(VICTIM);
            r
        });
        let bound = 6.0 + 1.2 * 0.6 * size as f64 / b;
        row(
            &format!("h{VICTIM}'s link down at 40%: others after it"),
            &down,
            |r| {
                (
                    r.others_end - r.fault_at,
                    bound,
                    (r.others_end - r.fault_at) / bound,
                )
            },
            "≤ 1.00",
        );
        println!();
        println!(
            "link row: from the moment the link went down; bound = 6 s of keep-alives + 1.2 × \
             the 60% of the file left, at B"
        );
    }
}

/// The straggler rows: the victim at `slow` for the whole run, against t1 for the healthy
/// hosts and against its own single hop at `slow` for itself, once per ssh config in
/// `configs` (which sets the chain's order), each named by its label.
#[allow(clippy::too_many_arguments)]
fn straggler_rows(
    lab: &mut Lab,
    configs: &[(&str, &Path)],
    src: &Path,
    digest: &str,
    rate: &str,
    slow: &str,
    reps: usize,
    t1: f64,
) {
    let dest = lab.dest("f.bin");
    lab.set_rate(VICTIM, slow);
    let t_slow = single_hop(lab, VICTIM, src, &dest, reps.min(2), "slow hop");
    let runs: Vec<_> = configs
        .iter()
        .map(|&(label, config)| {
            let r = median_runs(reps, || {
                run_chain(lab, config, src, digest, None, &|_: &mut Lab| {})
            });
            (label, r)
        })
        .collect();
    lab.set_rate(VICTIM, rate);
    for (label, straggler) in &runs {
        row(
            &format!("h{VICTIM} at {slow}{label}: healthy vs t1"),
            straggler,
            |r| (r.others_end, t1, r.others_end / t1),
            "≤ 1.40",
        );
        row(
            &format!("h{VICTIM} at {slow}{label}: itself vs own hop"),
            straggler,
            |r| {
                let v = r.victim_end.unwrap_or(f64::NAN);
                (v, t_slow, v / t_slow)
            },
            "≤ 1.20",
        );
    }
}
