//! `bounce-run` on bad input: exit status 2, one line naming the culprit, nothing written,
//! no connection attempted. Also `--dry-run` and `--help`.

use std::path::Path;
use std::process::{Command, Output};

fn bounce_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bounce-run"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("bounce-run runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, exactly one line on stderr containing every `needle`, and no panic.
fn assert_bad_input(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "one line expected, got: {e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} missing from: {e}");
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src.bin"), vec![7u8; 5000]).unwrap();
        Fixture { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn dest(&self) -> String {
        self.path("out/dest.bin")
    }
    fn nothing_written(&self) {
        assert!(
            !Path::new(&self.path("out")).exists(),
            "something was written"
        );
    }
}

#[test]
fn missing_src_exits_2_naming_the_path() {
    let f = Fixture::new();
    let src = f.path("nope.bin");
    let o = bounce_run(&["-H", "127.0.0.1:9", &src, &f.dest()]);
    assert_bad_input(&o, &["SRC", &src]);
    f.nothing_written();
}

#[test]
fn relative_dest_exits_2() {
    let f = Fixture::new();
    let o = bounce_run(&["-H", "127.0.0.1:9", &f.path("src.bin"), "out/dest.bin"]);
    assert_bad_input(&o, &["DEST", "out/dest.bin", "absolute"]);
}

#[test]
fn empty_hosts_file_exits_2() {
    let f = Fixture::new();
    let hosts = f.path("hosts");
    std::fs::write(&hosts, "# nobody\n\n").unwrap();
    let o = bounce_run(&["--hosts-file", &hosts, &f.path("src.bin"), &f.dest()]);
    assert_bad_input(&o, &["no hosts"]);
    f.nothing_written();
}

#[test]
fn unreadable_hosts_file_exits_2_naming_it() {
    let f = Fixture::new();
    let hosts = f.path("missing-hosts");
    let o = bounce_run(&["--hosts-file", &hosts, &f.path("src.bin"), &f.dest()]);
    assert_bad_input(&o, &[&hosts]);
}

#[test]
fn option_injection_in_a_host_exits_2() {
    let f = Fixture::new();
    let o = bounce_run(&[
        "-H=-oProxyCommand=touch /tmp/x",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    assert_bad_input(&o, &["-oProxyCommand", "may not start with '-'"]);
    f.nothing_written();
}

#[test]
fn malformed_host_line_exits_2_naming_file_and_line() {
    let f = Fixture::new();
    let hosts = f.path("hosts");
    std::fs::write(&hosts, "good-host\nbad host;rm\n").unwrap();
    let o = bounce_run(&["--hosts-file", &hosts, &f.path("src.bin"), &f.dest()]);
    assert_bad_input(&o, &[&format!("{hosts}:2")]);
}

#[test]
fn duplicate_host_exits_2() {
    let f = Fixture::new();
    let o = bounce_run(&["-H", "a,b", "-H", "b", &f.path("src.bin"), &f.dest()]);
    assert_bad_input(&o, &["'b'", "listed twice"]);
    f.nothing_written();
}

#[test]
fn no_hosts_at_all_exits_2() {
    let f = Fixture::new();
    let o = bounce_run(&[&f.path("src.bin"), &f.dest()]);
    assert_bad_input(&o, &["no hosts"]);
}

#[test]
fn streams_need_whole_file_hops_and_a_count_in_range() {
    let f = Fixture::new();
    let src = f.path("src.bin");
    // The default strategy is the chain, whose links are single streams.
    let o = bounce_run(&["--streams", "4", "-H", "127.0.0.1:9", &src, &f.dest()]);
    assert_bad_input(&o, &["--streams 4", "chain", "bounce or linear"]);
    f.nothing_written();
    // auto picks among the strategies that cut whole-file hops.
    let o = bounce_run(&[
        "--strategy",
        "auto",
        "--streams",
        "2",
        "--dry-run",
        "-H",
        "a,b,c,d",
        &src,
        &f.dest(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--strategy auto picked bounce") || e.contains("--strategy auto picked linear"),
        "{e}"
    );
    assert!(e.contains("whole-file hops, which --streams 2 cuts"), "{e}");
    f.nothing_written();
    for bad in ["0", "9", "two"] {
        let o = bounce_run(&[
            "--strategy",
            "bounce",
            "--streams",
            bad,
            "-H",
            "127.0.0.1:9",
            &src,
            &f.dest(),
        ]);
        assert_eq!(o.status.code(), Some(2), "--streams {bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("--streams"), "{}", stderr(&o));
        f.nothing_written();
    }
}

#[test]
fn unknown_strategy_exits_2() {
    let f = Fixture::new();
    let o = bounce_run(&[
        "--strategy",
        "swarm",
        "-H",
        "a",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected linear, bounce, chain or auto"));
}

#[test]
fn dry_run_prints_plan_and_prediction_and_connects_to_nothing() {
    let f = Fixture::new();
    // Port 9 on loopback: a connection attempt would fail the run, a dry run never makes one.
    let o = bounce_run(&[
        "--dry-run",
        "--strategy",
        "chain",
        "--chunk",
        "1000",
        "--bandwidth",
        "100Mbit",
        "--latency",
        "0",
        "--join-interval",
        "0",
        "-H",
        "127.0.0.1:9,127.0.0.1:10",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.contains("2 hosts, strategy chain, 5 chunk(s)"), "{out}");
    assert!(out.contains("127.0.0.1:10"), "{out}");
    // Every strategy bounce-run runs is predicted. The streamed chain moves 312.5 kB per
    // 25 ms hop delay at 100 Mbit/s, more than the whole 5000-byte file: one piece, so
    // C = 2 hops take 2 T, with T = 5000 B / 12.5 MB/s = 0.4 ms.
    for k in ["linear ", "bounce ", "chain "] {
        assert!(out.lines().any(|l| l.starts_with(k)), "{k}: {out}");
    }
    assert!(
        out.contains("this run: chain, predicted makespan 0.00s (2.00 T"),
        "{out}"
    );
    f.nothing_written();
}

#[test]
fn dry_run_predicts_a_fleet_files_hosts_at_their_own_rates_and_auto_says_what_it_picked() {
    let f = Fixture::new();
    let fleet = f.path("fleet.txt");
    std::fs::write(
        &fleet,
        "@source up=100Mbit\n127.0.0.1:9 down=20Mbit\n127.0.0.1:10 down=50Mbit up=50Mbit\n",
    )
    .unwrap();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--dry-run",
            "--latency",
            "0",
            "--join-interval",
            "0",
            "--hosts-file",
            &fleet,
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend([f.path("src.bin"), f.dest()]);
        v
    };
    let run = |a: Vec<String>| bounce_run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args(&["--json", "--strategy", "linear"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["receivers"], 2);
    assert_eq!(doc["fleet"], true);
    let linear = doc["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["strategy"] == "linear")
        .unwrap();
    // The source's 100 Mbit/s, shared max-min: the 20 Mbit/s host takes 20, the other its
    // own 50; the slow one ends last at S / 20 Mbit/s.
    let predicted = linear["predicted_s"].as_f64().unwrap();
    assert!((predicted - 5000.0 / 2.5e6).abs() < 1e-12, "{predicted}");
    assert_eq!(linear["runnable"], true);
    assert_eq!(doc["candidates"].as_array().unwrap().len(), 3);

    let o = run(args(&["--strategy", "auto"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let picked = doc["recommended"]["strategy"].as_str().unwrap();
    assert!(
        stderr(&o).contains(&format!("--strategy auto picked {picked}: predicted ")),
        "{}",
        stderr(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("strategy {picked}")), "{out}");
    assert!(out.contains("the lower bound of"), "{out}");

    // A bad attribute is bad input naming the line.
    std::fs::write(&fleet, "127.0.0.1:9\n127.0.0.1:10 down=quick\n").unwrap();
    let o = run(args(&[]));
    assert_bad_input(&o, &["fleet.txt:2", "down=quick"]);
    f.nothing_written();
}

#[test]
fn help_documents_exit_codes() {
    let o = bounce_run(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    for code in ["  0 ", "  1 ", "  2 ", "  130"] {
        assert!(out.contains(code), "{code:?} missing from --help");
    }
}

#[test]
fn short_help_gives_one_line_per_option_and_long_help_the_details() {
    let short = bounce_run(&["-h"]);
    let long = bounce_run(&["--help"]);
    assert_eq!(short.status.code(), Some(0));
    let short = String::from_utf8_lossy(&short.stdout).into_owned();
    let long = String::from_utf8_lossy(&long.stdout).into_owned();
    // Each option's line, and its default, on one line.
    for line in short.lines().filter(|l| l.trim_start().starts_with("--")) {
        assert!(line.len() <= 100, "a -h line runs long: {line}");
    }
    assert!(
        short.lines().count() * 2 < long.lines().count(),
        "-h is not short: {} lines against --help's {}",
        short.lines().count(),
        long.lines().count()
    );
    assert!(
        short.contains("Exit status: 0"),
        "-h names no exit status:\n{short}"
    );
    // The details are in --help: the strategies, one by one, and the hosts file.
    for detail in ["- bounce:", "- auto:", "Hosts file:"] {
        assert!(long.contains(detail), "{detail:?} missing from --help");
        assert!(!short.contains(detail), "{detail:?} in -h");
    }
}

#[test]
fn per_host_dest_that_names_a_directory_exits_2_naming_the_line() {
    let f = Fixture::new();
    let hosts = f.path("hosts");
    for bad in ["/srv/", "/srv/.", "/srv/..", "srv/x"] {
        std::fs::write(&hosts, format!("127.0.0.1:9\n127.0.0.1:10 {bad}\n")).unwrap();
        let o = bounce_run(&["--hosts-file", &hosts, &f.path("src.bin"), &f.dest()]);
        assert_bad_input(&o, &[&format!("{hosts}:2"), bad]);
        f.nothing_written();
    }
}

#[test]
fn dest_with_a_newline_exits_2() {
    let f = Fixture::new();
    let dest = format!("{}\nevil", f.dest());
    let o = bounce_run(&["-H", "127.0.0.1:9", &f.path("src.bin"), &dest]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("newline"), "{}", stderr(&o));
    f.nothing_written();
}

#[test]
fn unwritable_report_exits_2_before_anything_is_done() {
    let f = Fixture::new();
    // Its parent is a regular file, so no report can be written there.
    let report = format!("{}/run.csv", f.path("src.bin"));
    let o = bounce_run(&[
        "--report",
        &report,
        "-H",
        "127.0.0.1:9",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    assert_bad_input(&o, &["--report", &report]);
    f.nothing_written();
    let left: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["src.bin"], "nothing but SRC in its directory");
}

#[test]
fn a_report_in_a_missing_directory_exits_2_and_makes_no_directory() {
    let f = Fixture::new();
    let report = f.path("no/such/run.csv");
    let o = bounce_run(&[
        "--report",
        &report,
        "-H",
        "127.0.0.1:9",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    assert_bad_input(&o, &["--report", &report, "does not exist"]);
    f.nothing_written();
    assert!(
        !std::path::Path::new(&f.path("no")).exists(),
        "a missing --report directory was made"
    );
}

#[test]
fn an_interrupt_while_src_is_still_hashed_exits_130_at_once() {
    let f = Fixture::new();
    // 64 GiB of holes: hashing it takes far longer than this test waits.
    let src = f.path("huge.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    // A listener on loopback that never says a word: ssh waits for its banner, so the run
    // is still connecting, and hashing, when the interrupt comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_bounce-run"))
        .args(["--connect-timeout", "60s", "-H", &host, &src, &f.dest()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "bounce-run ended before it was interrupted"
    );
    let sent = std::time::Instant::now();
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Far less than the hashing would take, however slow the machine.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(10),
            "bounce-run still runs 10 s after SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted"));
    drop(silent);
    f.nothing_written();
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let f = Fixture::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bounce-run"))
        .args([
            "--dry-run",
            "-H",
            "127.0.0.1:9",
            &f.path("src.bin"),
            &f.dest(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -0`: the reader is gone before anything is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_options() {
    let bash = bounce_run(&["--generate", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let text = String::from_utf8_lossy(&bash.stdout);
    assert!(
        text.contains("bounce-run") && text.contains("--strategy") && text.contains("--no-fsync")
    );
    let man = bounce_run(&["--generate", "man"]);
    assert!(man.status.success(), "{}", stderr(&man));
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH bounce-run 1"), "{page}");
    assert!(page.contains("accept\\-new\\-host\\-keys"), "{page}");
    // It stands alone: with a run's arguments it is bad input.
    let mixed = bounce_run(&["--generate", "zsh", "src", "/dest"]);
    assert_eq!(mixed.status.code(), Some(2));
    assert!(mixed.stdout.is_empty());
    let unknown = bounce_run(&["--generate", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("tcsh"));
}

#[test]
fn limit_rate_must_be_a_positive_rate_and_dry_run_predicts_with_it() {
    let f = Fixture::new();
    for bad in ["0Mbit", "fast", "0.5B/s"] {
        let o = bounce_run(&[
            "--limit-rate",
            bad,
            "-H",
            "127.0.0.1:9",
            &f.path("src.bin"),
            &f.dest(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--limit-rate") && stderr(&o).contains(bad),
            "{bad}: {}",
            stderr(&o)
        );
        f.nothing_written();
    }
    // 5000 bytes to 2 hosts at 100 Mbit/s: linear sends 10 kB, 0.8 ms uncapped; under a cap
    // of 8 Mbit/s (1 MB/s) on the source's upload it takes 10 ms.
    let dry = |extra: &[&str]| {
        let mut args = vec![
            "--dry-run",
            "--bandwidth",
            "100Mbit",
            "--latency",
            "0",
            "--join-interval",
            "0",
            "-H",
            "127.0.0.1:9,127.0.0.1:10",
        ];
        args.extend(extra);
        let (src, dest) = (f.path("src.bin"), f.dest());
        args.extend([src.as_str(), dest.as_str()]);
        let o = bounce_run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let linear = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("linear "))
            .unwrap_or_else(|| panic!("{out}"))
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let free = dry(&[]);
    let capped = dry(&["--limit-rate", "8Mbit"]);
    assert!(capped.contains("uploads capped at 8 Mbit/s"), "{capped}");
    assert!(!free.contains("capped"), "{free}");
    assert_eq!((linear(&free), linear(&capped)), (0.001, 0.010));
    f.nothing_written();
}

#[test]
fn compress_takes_a_known_tool_that_must_be_installed_here() {
    let f = Fixture::new();
    let o = bounce_run(&[
        "--compress",
        "xz",
        "-H",
        "127.0.0.1:9",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'xz'"), "{}", stderr(&o));
    // Without the tool on this machine: one line, exit 2, before any connection, and no
    // compressed copy left behind.
    let tmp = f.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bounce-run"))
        .args([
            "--compress",
            "lz4",
            "-H",
            "127.0.0.1:9",
            &f.path("src.bin"),
            &f.dest(),
        ])
        .env("PATH", f.path("no-such-bin"))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_bad_input(&o, &["--compress lz4", "not installed on this machine"]);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    f.nothing_written();
    // A dry run says what a run would do.
    let o = bounce_run(&[
        "--dry-run",
        "--compress",
        "zstd",
        "-H",
        "127.0.0.1:9",
        &f.path("src.bin"),
        &f.dest(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("compress: zstd, once on this machine"),
        "{out}"
    );
}
