//! The lab benchmark's `fleet` part (issue 12): `bounce-run --dry-run` on a fleet file of
//! mixed rates predicts every strategy it runs, and each prediction is printed next to the
//! same strategy's measured makespan in the same run (target: within 10%).
//!
//! Workload: `BOUNCE_BENCH_HOSTS` (8) hosts at `BOUNCE_BENCH_RATE` (100 Mbit/s) both ways, of
//! which h3 and h6 run at a fifth of it (20 Mbit/s), a `BOUNCE_BENCH_SIZE` (64 MiB) file,
//! median of `BOUNCE_BENCH_REPS`. The fleet file gives every host its rate as measured
//! (a plain ssh push to one fast and one slow host: what ssh achieves through `tbf`), and
//! `--latency` and `--join-interval` are measured too: a one-byte ssh hop, and the
//! controller's connections to every host at once, divided by their number. The measured
//! makespan is the last host's end in the run's report.

use std::fs;
use std::process::Stdio;

use super::lab::support::{bounce_run_bin, random_file, read_report, sha256_file};
use super::lab::{Lab, LabConfig};
use super::{connect_all, hop_latency, median, single_hop, Workload};

/// The slow hosts.
const SLOW: [usize; 2] = [3, 6];

/// The `fleet` part (see the module docs).
pub fn fleet_part() {
    let workload = Workload::from_env();
    let slow = format!("{}mbit", workload.rate_mbit() / 5.0);
    let Workload {
        hosts,
        size,
        rate,
        reps,
    } = workload;
    println!(
        "bounce lab benchmark, fleet part: {hosts} hosts at {rate}, h{} and h{} at {slow}, {} \
         file, median of {reps}",
        SLOW[0],
        SLOW[1],
        bounce::units::format_size(size)
    );
    let lab = Lab::start("bench lab fleet", LabConfig::hosts(hosts).rate(&rate))
        .expect("lab prerequisites were checked");
    for &i in &SLOW {
        lab.set_rate(i, &slow);
    }
    let scratch = lab.scratch();
    let src = scratch.join("src.bin");
    random_file(&src, size as usize, 1212);
    let digest = sha256_file(&src);
    let tiny = scratch.join("tiny.bin");
    fs::write(&tiny, b"x").unwrap();
    let dest = lab.dest("f.bin");

    // Calibration, all in this run.
    let latency = hop_latency(&lab, &tiny, &dest);
    let fast_t1 = single_hop(&lab, 1, &src, &dest, reps, "fast hop");
    let slow_t1 = single_hop(&lab, SLOW[0], &src, &dest, reps.min(2), "slow hop");
    let (fast_b, slow_b) = (
        size as f64 / (fast_t1 - latency),
        size as f64 / (slow_t1 - latency),
    );
    let addrs = lab.host_addrs(hosts);
    let conn = median(
        (0..3)
            .map(|_| connect_all(&lab, &addrs, false).expect("connect to every host"))
            .collect(),
    );
    let join = conn / hosts as f64;
    let mbit = |b: f64| b * 8.0 / 1e6;
    println!(
        "fast hop {fast_t1:.2} s ({:.1} Mbit/s), slow hop {slow_t1:.2} s ({:.1} Mbit/s), \
         hop latency {:.0} ms, connections {conn:.2} s for {hosts} ({:.0} ms each)",
        mbit(fast_b),
        mbit(slow_b),
        latency * 1000.0,
        join * 1000.0
    );

    // The fleet file, as an operator who measured their links would write it.
    let fleet = scratch.join("fleet.txt");
    let mut text = format!("@source rate={:.3}Mbit\n", mbit(fast_b));
    for (i, a) in addrs.iter().enumerate() {
        let b = if SLOW.contains(&(i + 1)) {
            slow_b
        } else {
            fast_b
        };
        text += &format!("{a} rate={:.3}Mbit\n", mbit(b));
    }
    fs::write(&fleet, &text).unwrap();
    let dry = lab
        .controller(bounce_run_bin())
        .stdin(Stdio::null())
        .args(["--dry-run", "--json", "--hosts-file"])
        .arg(&fleet)
        .args(["--latency", &format!("{}ms", (latency * 1000.0).round())])
        .args(["--join-interval", &format!("{}ms", (join * 1000.0).round())])
        .arg(&src)
        .arg(&dest)
        .output()
        .expect("bounce-run --dry-run");
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("--json");
    let predicted = |name: &str| {
        doc["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .find(|c| c["strategy"] == name)
            .and_then(|c| c["predicted_s"].as_f64())
            .expect("a prediction per runnable strategy")
    };
    println!(
        "recommended by the dry run: {}",
        doc["recommended"]["strategy"]
    );
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>8} {:>10}",
        "strategy", "measured", "predicted", "error", "target"
    );
    for name in ["linear", "bounce", "chain"] {
        let mut ends = Vec::new();
        let mut failure = None;
        for _ in 0..reps {
            lab.clear_data();
            let report = scratch.join(format!("fleet-{name}.csv"));
            let out = lab
                .controller(bounce_run_bin())
                .stdin(Stdio::null())
                .arg("-F")
                .arg(lab.ssh_config())
                .args(["--strategy", name, "--hosts-file"])
                .arg(&fleet)
                .arg("--report")
                .arg(&report)
                .arg(&src)
                .arg(&dest)
                .output()
                .expect("bounce-run");
            let rows = read_report(&report);
            let bad = (1..=hosts).find(|&i| {
                let f = lab.host_file(i, "f.bin");
                rows[i - 1].status != "verified" || !f.is_file() || sha256_file(&f) != digest
            });
            if let (false, _) | (_, Some(_)) = (out.status.success(), bad) {
                failure = Some(format!(
                    "exit {:?}, h{bad:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ));
                break;
            }
            ends.push(rows.iter().filter_map(|r| r.end_s).fold(0.0, f64::max));
        }
        let p = predicted(name);
        match failure {
            None => {
                let m = median(ends);
                println!(
                    "{name:<10} {m:>8.2} s {p:>8.2} s {:>+7.1}% {:>10}",
                    (p / m - 1.0) * 100.0,
                    "≤ ±10%"
                );
            }
            Some(e) => println!("{name:<10} failed: {e}"),
        }
    }
}
