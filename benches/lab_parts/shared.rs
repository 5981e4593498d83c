//! The lab benchmark's `shared` part (issue 11): pushes over links that others share, and
//! of compressible images. Each row is printed next to its baseline, measured in the same
//! run.
//!
//! Workload: up to 4 of `BOUNCE_BENCH_HOSTS` hosts at `BOUNCE_BENCH_RATE` (100 Mbit/s),
//! chain, median of `BOUNCE_BENCH_REPS` where a time is quoted.
//!
//! - `--limit-rate` at 40% of the link rate, on a 32 MiB file: the controller's and every
//!   relay's transmit rate, sampled each second from the interface counters, against the
//!   same run uncapped (target: the cap ± 10%, and no 5 s above the cap + 10%).
//! - `--compress zstd` on a 256 MiB image holding 16 MiB of data: the bytes each link
//!   carried and the makespan, against `--compress none` (target: at least 5× fewer bytes
//!   on every link).

use super::lab::support::{bounce_run, mostly_zeros, random_file, read_report, run_sampled};
use super::lab::{Lab, LabConfig};
use super::{median, Workload};

const MIB: usize = 1 << 20;

/// The `shared` part (see the module docs).
pub fn shared_part() {
    let workload = Workload::from_env();
    let hosts = workload.hosts.min(4);
    let rate_mbit = workload.rate_mbit();
    let reps = workload.reps;
    println!(
        "bounce lab benchmark, shared part: {hosts} hosts at {}, chain, median of {reps}",
        workload.rate
    );
    let lab = Lab::start(
        "bench lab shared",
        LabConfig::hosts(hosts).rate(&workload.rate),
    )
    .expect("lab prerequisites were checked");
    let names = lab.host_names(hosts);
    let watch: Vec<usize> = (0..=hosts).collect();

    // --limit-rate.
    let cap = (rate_mbit * 0.4).round();
    let src = lab.scratch().join("src.bin");
    random_file(&src, 32 * MIB, 1111);
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "limit-rate (32 MiB)", "sender", "Mbit/s", "worst 5 s"
    );
    for limit in [None, Some(cap)] {
        lab.clear_data();
        let report = lab.scratch().join("limit.csv");
        let mut cmd = bounce_run(&lab, "chain", &names, &report, &src, &lab.dest("f.bin"));
        if let Some(l) = limit {
            cmd.args(["--limit-rate", &format!("{l}Mbit")]);
        }
        let (status, samples) = run_sampled(&lab, &mut cmd, &watch);
        assert!(status.success(), "limit {limit:?}: {status}");
        let senders: Vec<String> = read_report(&report).into_iter().map(|r| r.from).collect();
        let what = match limit {
            None => "uncapped (baseline)".to_string(),
            Some(l) => format!(
                "--limit-rate {l}Mbit (target {:.0}–{:.0})",
                0.9 * l,
                1.1 * l
            ),
        };
        // What counts as busy: a tenth of the cap, both runs alike.
        for s in &samples {
            let name = if s.name == "the controller" {
                "controller"
            } else {
                s.name.as_str()
            };
            if senders.iter().any(|f| f == name) {
                // A run shorter than 5 s has no 5 s window.
                let worst = s.worst_5s(cap);
                let worst = if worst.is_nan() {
                    "-".to_string()
                } else {
                    format!("{worst:.1}")
                };
                println!(
                    "{what:<34} {name:>12} {:>12.1} {worst:>12}",
                    s.busy_mean(cap)
                );
            }
        }
    }

    // --compress.
    let image = lab.scratch().join("image.raw");
    let size = 256 * MIB;
    mostly_zeros(&image, size, 16, 2222);
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "compress (256 MiB, 16 MiB data)", "makespan s", "link MiB", "fewer bytes"
    );
    for tool in ["none", "zstd"] {
        let mut times = Vec::new();
        let mut link = Vec::new();
        for _ in 0..reps {
            lab.clear_data();
            let before: Vec<u64> = (1..=hosts).map(|i| lab.rx_bytes(i)).collect();
            let report = lab.scratch().join("compress.csv");
            let mut cmd = bounce_run(&lab, "chain", &names, &report, &image, &lab.dest("i.raw"));
            cmd.args(["--compress", tool])
                .stdout(std::process::Stdio::null());
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{tool}: {out:?}");
            let rows = read_report(&report);
            assert!(rows.iter().all(|r| r.status == "verified"), "{tool}");
            times.push(rows.iter().filter_map(|r| r.end_s).fold(0.0, f64::max));
            // The busiest link: what the host that received most took in.
            link.push(
                (1..=hosts)
                    .map(|i| lab.rx_bytes(i) - before[i - 1])
                    .max()
                    .unwrap() as f64,
            );
        }
        let link = median(link);
        println!(
            "{:<34} {:>12.2} {:>12.1} {:>11.1}×",
            format!(
                "--compress {tool}{}",
                if tool == "none" {
                    " (baseline)"
                } else {
                    " (target ≥ 5×)"
                }
            ),
            median(times),
            link / MIB as f64,
            size as f64 / link
        );
    }
}
