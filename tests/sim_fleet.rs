//! The simulator on a fleet file: every host at its own rates, exact, against hand
//! computations (water-filling for linear, the three-set queue for bounce), and the CLI's
//! handling of fleet files.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Output};

use bounce::core::StrategyKind;
use bounce::sim::{simulate, Settings, SimConfig};

const MIB: u64 = 1 << 20;
const MBIT: f64 = 1e6 / 8.0;

/// 20 receivers, each with its own upload and download rate (Mbit/s), some below the fair
/// share of the source's 300 Mbit/s upload across all of them.
const DOWN: [f64; 20] = [
    4.0, 7.0, 9.0, 12.0, 14.0, 16.0, 18.0, 21.0, 23.0, 25.0, 27.0, 31.0, 33.0, 36.0, 39.0, 42.0,
    45.0, 48.0, 51.0, 60.0,
];
const SOURCE_UP: f64 = 300.0;

fn up(i: usize) -> f64 {
    // Distinct, and not in the order of the downloads.
    [
        55.0, 13.0, 90.0, 41.0, 77.0, 23.0, 64.0, 35.0, 99.0, 8.0, 71.0, 46.0, 19.0, 83.0, 29.0,
        58.0, 94.0, 11.0, 67.0, 38.0,
    ][i]
}

fn fleet_text() -> String {
    let mut s = format!("# 20 hosts, each at its own rates\n@source up={SOURCE_UP}Mbit\n");
    for (i, d) in DOWN.iter().enumerate() {
        s += &format!("10.9.0.{} up={}Mbit down={d}Mbit\n", i + 1, up(i));
    }
    s
}

fn fleet_config(dir: &Path, size: u64) -> SimConfig {
    let path = dir.join("fleet.txt");
    std::fs::write(&path, fleet_text()).unwrap();
    let settings = Settings {
        hosts_file: Some(path),
        size: Some(size.to_string()),
        ..Settings::default()
    };
    let resolved = settings.resolve().unwrap();
    assert_eq!(resolved.sweep.hosts, vec![20]);
    SimConfig {
        receivers: 20,
        ..resolved.sweep.base
    }
}

fn assert_close(got: f64, want: f64, what: &str) {
    let rel = ((got - want) / want).abs();
    assert!(
        rel <= 1e-9,
        "{what}: got {got}, want {want} (relative error {rel:e})"
    );
}

/// Linear by hand: the source's upload is shared max-min fairly by the flows still running,
/// each capped by its receiver's download; step from one flow's end to the next.
fn linear_by_hand(size: f64) -> Vec<f64> {
    let cap: Vec<f64> = DOWN.iter().map(|d| d * MBIT).collect();
    let mut left = vec![size; cap.len()];
    let mut done = vec![0.0; cap.len()];
    let mut active: Vec<usize> = (0..cap.len()).collect();
    let mut now = 0.0;
    while !active.is_empty() {
        active.sort_by(|&a, &b| cap[a].total_cmp(&cap[b]));
        let mut spare = SOURCE_UP * MBIT;
        let mut rate = vec![0.0; cap.len()];
        for (n, &f) in active.iter().enumerate() {
            let share = spare / (active.len() - n) as f64;
            rate[f] = cap[f].min(share);
            spare -= rate[f];
        }
        let step = active
            .iter()
            .map(|&f| left[f] / rate[f])
            .fold(f64::INFINITY, f64::min);
        now += step;
        active.retain(|&f| {
            left[f] -= rate[f] * step;
            if left[f] <= size * 1e-12 {
                done[f] = now;
                false
            } else {
                true
            }
        });
    }
    done
}

/// Bounce by hand: free holders in the order they became free (a sender before its
/// receiver), waiting hosts in list order; each copy runs alone on its sender's upload and
/// its receiver's download, at the lower of the two.
fn bounce_by_hand(size: f64) -> Vec<f64> {
    let rate_up = |h: usize| if h == 0 { SOURCE_UP } else { up(h - 1) } * MBIT;
    let mut holders = VecDeque::from([0usize]);
    let mut waiting: VecDeque<usize> = (1..=20).collect();
    let mut busy: Vec<(f64, usize, usize)> = Vec::new();
    let mut done = [0.0; 21];
    let mut now = 0.0;
    loop {
        while !holders.is_empty() && !waiting.is_empty() {
            let (from, to) = (holders.pop_front().unwrap(), waiting.pop_front().unwrap());
            let rate = rate_up(from).min(DOWN[to - 1] * MBIT);
            busy.push((now + size / rate, from, to));
        }
        let Some(i) = (0..busy.len()).min_by(|&a, &b| busy[a].0.total_cmp(&busy[b].0)) else {
            break;
        };
        let (end, from, to) = busy.swap_remove(i);
        now = end;
        done[to] = end;
        holders.push_back(from);
        holders.push_back(to);
    }
    done[1..].to_vec()
}

#[test]
fn linear_on_a_fleet_of_20_distinct_hosts_matches_water_filling() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let r = simulate(StrategyKind::Linear, &fleet_config(dir.path(), size)).unwrap();
    let want = linear_by_hand(size as f64);
    for (h, (&got, &want)) in r.host_done[1..].iter().zip(&want).enumerate() {
        assert_close(got, want, &format!("host {}", h + 1));
    }
    // The slowest download is the last to finish: S / 4 Mbit/s.
    assert_close(r.makespan, size as f64 / (4.0 * MBIT), "makespan");
}

#[test]
fn bounce_on_a_fleet_of_20_distinct_hosts_matches_the_three_set_queue() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let r = simulate(StrategyKind::Bounce, &fleet_config(dir.path(), size)).unwrap();
    let want = bounce_by_hand(size as f64);
    for (h, (&got, &want)) in r.host_done[1..].iter().zip(&want).enumerate() {
        assert_close(got, want, &format!("host {}", h + 1));
    }
    let last = want.iter().copied().fold(0.0, f64::max);
    assert_close(r.makespan, last, "makespan");
}

#[test]
fn a_fleet_is_exact_whatever_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fleet_config(dir.path(), 8 * MIB);
    let a = simulate(StrategyKind::Bounce, &cfg).unwrap();
    let b = simulate(StrategyKind::Bounce, &SimConfig { seed: 99, ..cfg }).unwrap();
    assert_eq!(a.host_done, b.host_done);
}

#[test]
fn fleet_racks_behave_as_racks_do() {
    // Two racks of two hosts behind 10 Mbit/s uplinks, the source in the first: the same
    // network as `--racks 2 --rack-uplink 10Mbit` with three receivers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("racks.txt");
    std::fs::write(
        &path,
        "@source rack=a\n@rack a uplink=10Mbit\n@rack b uplink=10Mbit\n\
         h1 rack=a\nh2 rack=b\nh3 rack=b\n",
    )
    .unwrap();
    let base = |fleet: bool| {
        let s = Settings {
            hosts_file: fleet.then(|| path.clone()),
            hosts: (!fleet).then(|| "3".into()),
            size: Some("16MiB".into()),
            bandwidth: Some("100Mbit".into()),
            network: (!fleet).then(|| bounce::sim::NetworkSettings {
                racks: Some(bounce::sim::RackSettings {
                    count: 2,
                    uplink: "10Mbit".into(),
                }),
                ..Default::default()
            }),
            ..Settings::default()
        };
        SimConfig {
            receivers: 3,
            ..s.resolve().unwrap().sweep.base
        }
    };
    for kind in [
        StrategyKind::Linear,
        StrategyKind::Bounce,
        StrategyKind::Rack,
    ] {
        let (f, r) = (
            simulate(kind, &base(true)).unwrap(),
            simulate(kind, &base(false)).unwrap(),
        );
        assert_eq!(f.host_done, r.host_done, "{kind}");
        assert_eq!(f.lower_bound, r.lower_bound, "{kind}");
    }
}

fn bounce_sim(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bounce-sim"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("bounce-sim starts")
}

#[test]
fn bad_fleet_lines_exit_2_naming_the_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "a up=1Gbit\nb down=fast\n",
            "bounce-sim: --hosts-file: fleet.txt:2: 'down=fast': ",
        ),
        (
            "a rack=r1\n",
            "bounce-sim: --hosts-file: fleet.txt:1: 'rack=r1': rack 'r1' has no '@rack r1 uplink=RATE' line",
        ),
        (
            "@rack r1 uplink=1Gbit\na rack=r1\nb\n",
            "bounce-sim: --hosts-file: fleet.txt:3: 'b': the fleet names racks; this host needs rack=NAME too",
        ),
        (
            "a\na\n",
            "bounce-sim: --hosts-file: fleet.txt:2: host 'a' is listed twice (first at fleet.txt:1)",
        ),
    ] {
        std::fs::write(dir.path().join("fleet.txt"), text).unwrap();
        let out = bounce_sim(
            dir.path(),
            &["--hosts-file", "fleet.txt", "--csv", "o.csv", "--png", "o.png"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(want), "{text:?}: {err}");
        assert!(!dir.path().join("o.csv").exists() && !dir.path().join("o.png").exists());
    }
    std::fs::write(dir.path().join("fleet.txt"), "a\nb\n").unwrap();
    let out = bounce_sim(dir.path(), &["--hosts-file", "fleet.txt", "--hosts", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("--hosts: '3' disagrees with --hosts-file, which lists 2 hosts"),
        "{err}"
    );
    let out = bounce_sim(
        dir.path(),
        &["--hosts-file", "fleet.txt", "--spread", "0.5"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn plan_on_a_1000_host_fleet_file_recommends_what_bounce_run_runs_and_bounce_run_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("@source up=25Gbit\n");
    for i in 0..1000 {
        // No host under a quarter of another's rate: see the note in `benches/sim.rs`.
        let rate = ["25Gbit", "10Gbit", "10Gbit", "5Gbit"][i % 4];
        text += &format!("10.77.{}.{} rate={rate}\n", i / 250, i % 250 + 1);
    }
    std::fs::write(dir.path().join("fleet.txt"), text).unwrap();
    let out = bounce_sim(
        dir.path(),
        &[
            "plan",
            "--json",
            "--size",
            "100GiB",
            "--bandwidth",
            "10Gbit",
            "--latency",
            "300ms",
            "--hosts-file",
            "fleet.txt",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["receivers"], 1000);
    assert_eq!(doc["fleet"], true);
    let rec = &doc["recommended"];
    assert_eq!(rec["runnable"], true, "{rec}");
    // Recommended is the fastest runnable candidate of the table.
    let cands = doc["candidates"].as_array().unwrap();
    let fastest_runnable = cands.iter().find(|c| c["runnable"] == true).unwrap();
    assert_eq!(fastest_runnable, rec);
    // The 5 Gbit/s hosts bound every schedule: S / 5 Gbit/s.
    let bound = doc["lower_bound_s"].as_f64().unwrap();
    assert!(
        (bound - 100.0 * (1u64 << 30) as f64 / 6.25e8).abs() < 1e-6,
        "{bound}"
    );
    // The times in the table are sorted, fastest first.
    let times: Vec<f64> = cands
        .iter()
        .map(|c| c["predicted_s"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // bounce-run accepts that strategy for that fleet (a dry run connects to nothing).
    let strategy = rec["strategy"].as_str().unwrap();
    std::fs::write(dir.path().join("src.bin"), [1u8; 1000]).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_bounce-run"))
        .current_dir(dir.path())
        .args([
            "--dry-run",
            "--strategy",
            strategy,
            "--hosts-file",
            "fleet.txt",
        ])
        .args(["src.bin", "/srv/dest.bin"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(&format!("this run: {strategy}, predicted makespan")),
        "{stdout}"
    );
}

#[test]
fn plan_json_holds_the_tables_figures() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.txt"), fleet_text()).unwrap();
    let args = [
        "plan",
        "--size",
        "64MiB",
        "--latency",
        "100ms",
        "--hosts-file",
        "fleet.txt",
    ];
    let table = bounce_sim(dir.path(), &args);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let json = bounce_sim(dir.path(), &[&args[..], &["--json"]].concat());
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    let cands = doc["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 7, "{doc}");
    for c in cands {
        let name = c["strategy"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name} in {text}"));
        // From the right: the chunk column may be two words ("whole file").
        let cols: Vec<&str> = row.split_whitespace().collect();
        let n = cols.len();
        let predicted: f64 = cols[n - 7].parse().unwrap();
        let over: f64 = cols[n - 5].parse().unwrap();
        assert!(
            (c["predicted_s"].as_f64().unwrap() - predicted).abs() <= 5e-4,
            "{row} vs {c}"
        );
        assert!(
            (c["over_bound"].as_f64().unwrap() - over).abs() <= 5e-4,
            "{row} vs {c}"
        );
        let runnable = if c["runnable"] == true { "yes" } else { "-" };
        assert_eq!(*cols.last().unwrap(), runnable, "{row}");
    }
    let rec = doc["recommended"]["strategy"].as_str().unwrap();
    assert!(text.contains(&format!("recommended: {rec}")), "{text}");
    assert_eq!(
        doc["why"].as_str().unwrap(),
        text.lines()
            .find(|l| l.starts_with("recommended: "))
            .unwrap()
            .split_once(": ")
            .unwrap()
            .1
            .split_once(": ")
            .unwrap()
            .1
    );
}
