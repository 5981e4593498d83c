//! `bounce-sim` as a user runs it: exit codes, one-line errors, files written whole.

use std::path::Path;
use std::process::{Command, Output};

/// Runs bounce-sim in `dir`, with an empty `out/` there when an argument names it (as
/// [`with_outputs`] does): a directory an output flag names must exist.
fn bounce_sim(dir: &Path, args: &[&str]) -> Output {
    if args.iter().any(|a| a.starts_with("out/")) {
        std::fs::create_dir_all(dir.join("out")).expect("make out/");
    }
    Command::new(env!("CARGO_BIN_EXE_bounce-sim"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("bounce-sim starts")
}

fn with_outputs<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--csv", "out/sim.csv", "--png", "out/sim.png"]);
    v
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_flag_and_value_and_writes_nothing() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--hosts", "0"], "--hosts", "'0'"),
        (&["--hosts", "64..1"], "--hosts", "'64..1'"),
        (&["--size", "0"], "--size", "'0'"),
        (&["--size", "huge"], "--size", "'huge'"),
        (&["--bandwidth", "0"], "--bandwidth", "'0'"),
        (&["--bandwidth", "0Gbit"], "--bandwidth", "'0Gbit'"),
        (&["--jitter", "1.5"], "--jitter", "'1.5'"),
        (&["--strategy", "teleport"], "--strategy", "'teleport'"),
        (&["--latency", "soon"], "--latency", "'soon'"),
        (&["--runs", "0"], "--runs", "'0'"),
        (&["--chunk", "0"], "--chunk", "'0'"),
        (&["--seed", "minus-one"], "--seed", "'minus-one'"),
        (&["--fail", "3"], "--fail", "'3'"),
        (&["--fail", "0@1s"], "--fail", "'0@1s'"),
        (&["--fail", "3@soon"], "--fail", "'soon'"),
        (&["--limit-rate", "0"], "--limit-rate", "'0'"),
        (&["--limit-rate", "fast"], "--limit-rate", "'fast'"),
        (
            &["--scenario", "no-such.toml"],
            "--scenario",
            "no-such.toml",
        ),
    ];
    for (args, flag, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = bounce_sim(dir.path(), &with_outputs(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let written = std::fs::read_dir(dir.path().join("out")).unwrap().count();
        assert_eq!(written, 0, "{args:?} created output");
    }
}

#[test]
fn an_unwritable_png_path_exits_2_before_simulating_and_leaves_no_csv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), b"a file, not a directory").unwrap();
    let out = bounce_sim(
        dir.path(),
        &[
            "--hosts",
            "1..4",
            "--csv",
            "sim.csv",
            "--png",
            "blocker/sim.png",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--png") && stderr.contains("blocker/sim.png"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("sim.csv").exists());
}

#[test]
fn a_csv_in_a_missing_directory_exits_2_and_makes_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(
        dir.path(),
        &[
            "--hosts",
            "1..4",
            "--csv",
            "no/such/sim.csv",
            "--png",
            "sim.png",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--csv") && stderr.contains("no/such/sim.csv"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("no").exists(), "a directory was made");
    assert!(!dir.path().join("sim.png").exists());
}

#[test]
fn without_output_flags_the_default_plots_directory_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(dir.path(), &["--hosts", "1..4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("plots/bounce-sim.csv").is_file());
    assert!(dir.path().join("plots/bounce-sim.png").is_file());
}

#[test]
fn a_good_run_writes_a_csv_row_per_point_a_png_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(
        dir.path(),
        &with_outputs(&[
            "--hosts",
            "1..8",
            "--strategy",
            "all",
            "--runs",
            "2",
            "--jitter",
            "0.05",
        ]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("out/sim.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    for col in [
        "strategy",
        "hosts",
        "run",
        "seed",
        "size_bytes",
        "bandwidth_bytes_per_s",
        "makespan_s",
        "t_s",
        "makespan_over_t",
    ] {
        assert!(header.split(',').any(|c| c == col), "missing column {col}");
    }
    assert_eq!(lines.count(), 8 * bounce::core::StrategyKind::ALL.len() * 2);
    let png = std::fs::read(dir.path().join("out/sim.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("linear/T") && stdout.contains("chain/T"),
        "{stdout}"
    );
    // Nothing but the two outputs: no temporary files left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        2
    );
}

#[test]
fn the_same_seed_gives_byte_identical_csv_and_another_seed_different_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| {
        let csv = format!("{name}.csv");
        let png = format!("{name}.png");
        let out = bounce_sim(
            dir.path(),
            &[
                "--hosts",
                "1..16",
                "--strategy",
                "all",
                "--jitter",
                "0.1",
                "--runs",
                "3",
                "--seed",
                seed,
                "--csv",
                &csv,
                "--png",
                &png,
                "--threads",
                "2",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(dir.path().join(csv)).unwrap()
    };
    let a = run("7", "a");
    let b = run("7", "b");
    let c = run("8", "c");
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed must change the numbers");
}

#[test]
fn the_csv_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let csv = format!("t{threads}.csv");
        let png = format!("t{threads}.png");
        let out = bounce_sim(
            dir.path(),
            &[
                "--hosts",
                "1..12",
                "--strategy",
                "all",
                "--jitter",
                "0.2",
                "--runs",
                "4",
                "--csv",
                &csv,
                "--png",
                &png,
                "--threads",
                threads,
            ],
        );
        assert!(out.status.success());
        std::fs::read(dir.path().join(csv)).unwrap()
    };
    assert_eq!(run("1"), run("3"));
}

#[test]
fn a_scenario_file_sets_defaults_that_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "hosts = \"1..3\"\nsize = \"1GiB\"\nbandwidth = \"1Gbit\"\nstrategy = \"bounce\"\ncsv = \"s.csv\"\npng = \"s.png\"\n",
    )
    .unwrap();
    let out = bounce_sim(dir.path(), &["--scenario", "s.toml", "--hosts", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].starts_with("bounce,5,0,"), "{}", rows[0]);
}

#[test]
fn an_unknown_scenario_key_is_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), "hostz = \"1..3\"\n").unwrap();
    let out = bounce_sim(dir.path(), &["--scenario", "s.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("hostz"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn plan_at_1000_hosts_recommends_what_bounce_run_runs_and_shows_the_faster_binomial_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(
        dir.path(),
        &[
            "plan",
            "--size",
            "100GiB",
            "--bandwidth",
            "10Gbit",
            "--hosts",
            "1000",
            "--chunk",
            "1GiB",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = stdout
        .lines()
        .find(|l| l.starts_with("recommended: "))
        .unwrap_or_else(|| panic!("no recommendation in {stdout}"));
    // bounce-run streams its chain: setup, then 25 ms per hop, over 999 hops.
    assert!(
        rec.starts_with("recommended: chain: fastest predicted that bounce-run can run"),
        "{rec}"
    );
    let row = stdout.lines().find(|l| l.starts_with("chain ")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], *cols.last().unwrap()), ("stream", "yes"), "{row}");
    let predicted: f64 = cols[2].parse().unwrap();
    let t = 100.0 * (1u64 << 30) as f64 / 1.25e9;
    // 999 hops of a 25 ms lag, in chunks of the 31.25 MB that move in 25 ms at 10 Gbit/s.
    let chunk = 1.25e9 * 0.025;
    let k = (100.0 * (1u64 << 30) as f64 / chunk).ceil();
    let closed = (1.0 + 999.0 / k) * t;
    // bounce-run probes its source once (the first host has far more than 15 s to go):
    // the chain ends late by what the source sent the probe's host, at the source's rate,
    // which the uploads column shows to a tenth of a GiB.
    let uploads: f64 = cols[5].parse().unwrap();
    assert_eq!(cols[6], "GiB", "{row}");
    let probe = (uploads - 100.0) * (1u64 << 30) as f64 / 1.25e9;
    let rounding = 0.05 * (1u64 << 30) as f64 / 1.25e9;
    assert!(
        probe > 0.0 && (predicted - closed - probe).abs() <= rounding + 1e-3,
        "{predicted} vs {closed} and a probe of {probe} s"
    );
    // The faster binomial pipeline is shown beside it, as simulated only.
    let row = stdout.lines().find(|l| l.starts_with("binomial ")).unwrap();
    let ratio: f64 = row.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(ratio <= 1.10, "{row}");
    assert!(row.trim_end().ends_with('-'), "{row}");
    let beside = stdout
        .lines()
        .find(|l| l.starts_with("simulated only: binomial would be "))
        .unwrap_or_else(|| panic!("no simulated-only line in {stdout}"));
    assert!(beside.contains("% ahead of it"), "{beside}");
    // Every strategy but swarm (left out at this size, with a note) is ranked.
    for k in ["linear", "bounce", "chain", "bounce-fast", "rack"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{k} "))),
            "{k} missing: {stdout}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("swarm is left out"));
    // Nothing is written by plan.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn plan_on_the_blog_scenario_ranks_linear_last_and_bounce_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(
        dir.path(),
        &["plan", "--hosts", "10", "--strategy", "linear,bounce"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("linear ") || l.starts_with("bounce "))
        .collect();
    assert!(
        rows[0].starts_with("bounce ") && rows[1].starts_with("linear "),
        "{stdout}"
    );
    // C = 10: bounce takes ⌈log2 11⌉ = 4 T, linear 10 T; the floor is T.
    assert!(rows[0].contains(" 4.000 "), "{}", rows[0]);
    assert!(rows[1].contains(" 10.000 "), "{}", rows[1]);
}

#[test]
fn plan_takes_one_host_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(dir.path(), &["plan", "--hosts", "1..4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--hosts") && stderr.contains("1..4"),
        "{stderr}"
    );
}

#[test]
fn auto_picks_a_strategy_and_chunk_by_simulating_and_then_sweeps_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(
        dir.path(),
        &with_outputs(&[
            "--hosts",
            "30",
            "--size",
            "10GiB",
            "--strategy",
            "auto",
            "--latency",
            "100ms",
            // A cost per chunk step: the binomial pipeline's depth of ⌈log2 31⌉ − 1 = 4
            // steps then beats the chain's 29 (without one, the two are within 1%).
            "--chunk-overhead",
            "5ms",
        ]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("auto: binomial with --chunk "),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(dir.path().join("out/sim.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().starts_with("binomial,30,"),
        "{csv}"
    );
    let out = bounce_sim(dir.path(), &with_outputs(&["--strategy", "auto,bounce"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let zsh = bounce_sim(dir.path(), &["--generate", "zsh"]);
    assert!(zsh.status.success());
    let text = String::from_utf8_lossy(&zsh.stdout);
    assert!(text.starts_with("#compdef bounce-sim"), "{text}");
    assert!(text.contains("--join-interval") && text.contains("plan"));
    let man = bounce_sim(dir.path(), &["--generate", "man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH bounce-sim 1") && page.contains("join\\-interval"));
    // Nothing is simulated or written.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    let mixed = bounce_sim(dir.path(), &["--generate", "man", "--hosts", "3"]);
    assert_eq!(mixed.status.code(), Some(2));
    assert!(mixed.stdout.is_empty());
}

#[test]
fn a_failure_makes_the_chain_repair_and_is_ignored_where_the_host_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = bounce_sim(
        dir.path(),
        &with_outputs(&[
            "--hosts",
            "2..6",
            "--size",
            "20MiB",
            "--chunk",
            "1MiB",
            "--bandwidth",
            "16Mbit",
            "--strategy",
            "chain",
            "--fail",
            "5@7.3s",
        ]),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let csv = std::fs::read_to_string(dir.path().join("out/sim.csv")).unwrap();
    let makespans: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(12).unwrap().parse().unwrap())
        .collect();
    // τ = 0.524288 s, and the first host has less than 15 s to go, so the source is not
    // probed. Up to C = 4 host 5 does not exist: (k + C − 1)·τ. At C = 5 it is the last and
    // dies: host 4 ends at (k + 3)·τ. At C = 6 host 6 loses the part of the chunk in
    // flight, which it started at 13τ: (k + 5)·τ + (7.3 − 13τ).
    let tau = 0.524288;
    let want = [
        21.0 * tau,
        22.0 * tau,
        23.0 * tau,
        23.0 * tau,
        25.0 * tau + (7.3 - 13.0 * tau),
    ];
    for (got, want) in makespans.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{makespans:?} against {want}");
    }
}

#[test]
fn limit_rate_caps_every_upload_from_the_command_line_and_from_a_scenario() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "limit_rate = \"8Mbit\"\ncsv = \"s.csv\"\npng = \"s.png\"\n",
    )
    .unwrap();
    let common = [
        "--hosts",
        "1..3",
        "--size",
        "10MB",
        "--bandwidth",
        "80Mbit",
        "--strategy",
        "linear,bounce",
    ];
    // 10 MB at 1 MB/s is 10 s a hop, against 1 s uncapped: linear C·10 s, bounce
    // ⌈log2(C + 1)⌉·10 s; rows by C, then strategy.
    let want = [10.0, 10.0, 20.0, 20.0, 30.0, 20.0];
    let flag = [&common[..], &["--limit-rate", "8Mbit"]].concat();
    let scenario = [&common[..], &["--scenario", "s.toml"]].concat();
    for args in [with_outputs(&flag), scenario] {
        let out = bounce_sim(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let csv_path = if args.contains(&"s.toml") {
            "s.csv"
        } else {
            "out/sim.csv"
        };
        let csv = std::fs::read_to_string(dir.path().join(csv_path)).unwrap();
        let makespans: Vec<f64> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(12).unwrap().parse().unwrap())
            .collect();
        assert_eq!(makespans.len(), want.len(), "{csv}");
        for (got, want) in makespans.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{args:?}: {makespans:?}");
        }
    }
}
