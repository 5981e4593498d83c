//! The lab benchmark's `trees` part (issue 11): a directory of about 2,000 files (the lab
//! test's tree: 2,000 files of 1–64 KiB, three of 50 MiB, a sparse file of 1 GiB holding
//! 16 MiB, about 229 MiB of data) and a sparse image, each printed next to its baseline,
//! measured in the same run.
//!
//! Workload: `BOUNCE_BENCH_HOSTS` hosts (8) at `BOUNCE_BENCH_RATE` (100 Mbit/s), median of
//! `BOUNCE_BENCH_REPS`.
//!
//! - The tree with the chain, against one random file of the same data with the chain
//!   (target: within 1.3×), and what the source sent against the data (target: within
//!   1.1×). The same with bounce, for reference.
//! - A rerun after one 40 KiB file changed: what the source sent (target: that file plus
//!   1 MiB).
//! - `--sparse` on a 1 GiB image holding 16 MiB, against the same image sent whole: the
//!   bytes the busiest link carried, and the makespan.

use super::lab::support::{bounce_run, make_tree, random_file, read_report};
use super::lab::{Lab, LabConfig};
use super::{median, Workload};

const MIB: u64 = 1 << 20;

/// One run of bounce-run with `extra` arguments: its makespan (the last host's end) and the
/// bytes the controller sent.
fn measure(
    lab: &Lab,
    strategy: &str,
    names: &[String],
    src: &std::path::Path,
    dest: &str,
    extra: &[&str],
) -> (f64, u64) {
    let report = lab.scratch().join("trees.csv");
    let tx0 = lab.controller_tx_bytes();
    let mut cmd = bounce_run(lab, strategy, names, &report, src, dest);
    cmd.args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let status = cmd.status().unwrap();
    assert!(status.success(), "{strategy} {}: {status}", src.display());
    let rows = read_report(&report);
    assert!(rows
        .iter()
        .all(|r| r.status == "verified" || r.status == "up-to-date"));
    let end = rows.iter().filter_map(|r| r.end_s).fold(0.0, f64::max);
    (end, lab.controller_tx_bytes() - tx0)
}

/// The `trees` part (see the module docs).
pub fn trees_part() {
    let workload = Workload::from_env();
    let (hosts, reps) = (workload.hosts, workload.reps);
    println!(
        "bounce lab benchmark, trees part: {hosts} hosts at {}, median of {reps}",
        workload.rate
    );
    let lab = Lab::start(
        "bench lab trees",
        LabConfig::hosts(hosts).rate(&workload.rate),
    )
    .expect("lab prerequisites were checked");
    let names = lab.host_names(hosts);
    let tree = lab.scratch().join("model");
    let data = make_tree(&tree);
    let file = lab.scratch().join("same-data.bin");
    random_file(&file, data as usize, 4242);
    println!(
        "{:<44} {:>11} {:>9} {:>13} {:>10}",
        "row", "makespan s", "ratio", "source MiB", "vs data"
    );
    for strategy in ["chain", "bounce"] {
        let mut base = Vec::new();
        let mut t = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..reps {
            lab.clear_data();
            base.push(measure(&lab, strategy, &names, &file, &lab.dest("f.bin"), &[]).0);
            lab.clear_data();
            let (s, tx) = measure(&lab, strategy, &names, &tree, &lab.dest("model"), &[]);
            t.push(s);
            sent.push(tx as f64);
        }
        let (base, t, sent) = (median(base), median(t), median(sent));
        println!(
            "{:<44} {base:>11.2} {:>9} {:>13} {:>10}",
            format!("{strategy}: one file of the same data (baseline)"),
            "1.00",
            "-",
            "-"
        );
        println!(
            "{:<44} {t:>11.2} {:>8.2}× {:>13.1} {:>9.3}×",
            format!(
                "{strategy}: the tree{}",
                if strategy == "chain" {
                    " (target ≤ 1.3×, ≤ 1.1×)"
                } else {
                    ""
                }
            ),
            t / base,
            sent / MIB as f64,
            sent / data as f64
        );
    }

    // A rerun after one file changed: the tree is in place from the last bounce run.
    let changed = tree.join("layer07/sub/f0351.bin");
    let mut sent = Vec::new();
    for k in 0..reps {
        random_file(&changed, 40 << 10, 9000 + k as u64);
        sent.push(measure(&lab, "chain", &names, &tree, &lab.dest("model"), &[]).1 as f64);
    }
    let sent = median(sent);
    println!(
        "{:<44} {:>11} {:>9} {:>13.3} {:>10}",
        "chain rerun, one 40 KiB file changed (target ≤ 1.04 MiB)",
        "-",
        "-",
        sent / MIB as f64,
        "-"
    );

    // --sparse.
    let image = lab.scratch().join("disk.raw");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(1 << 30).unwrap();
    let block = vec![0x5au8; MIB as usize];
    for k in 0..16u64 {
        std::os::unix::fs::FileExt::write_all_at(&f, &block, k * (64 << 20)).unwrap();
    }
    drop(f);
    println!(
        "{:<44} {:>11} {:>9} {:>13} {:>10}",
        "1 GiB image holding 16 MiB, chain", "makespan s", "", "busiest link", "fewer"
    );
    let mut whole_link = 0.0;
    for sparse in [false, true] {
        let mut t = Vec::new();
        let mut link = Vec::new();
        for _ in 0..reps {
            lab.clear_data();
            let rx0: Vec<u64> = (1..=hosts).map(|i| lab.rx_bytes(i)).collect();
            let extra: &[&str] = if sparse { &["--sparse"] } else { &[] };
            t.push(measure(&lab, "chain", &names, &image, &lab.dest("disk.raw"), extra).0);
            link.push(
                (1..=hosts)
                    .map(|i| lab.rx_bytes(i) - rx0[i - 1])
                    .max()
                    .unwrap() as f64,
            );
        }
        let link = median(link);
        if !sparse {
            whole_link = link;
        }
        println!(
            "{:<44} {:>11.2} {:>9} {:>12.1}M {:>9.1}×",
            if sparse {
                "--sparse"
            } else {
                "sent whole (baseline)"
            },
            median(t),
            "",
            link / MIB as f64,
            whole_link / link
        );
    }
}
