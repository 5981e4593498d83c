//! `bounce-run` against real sshd hosts in the lab (issue 3): every strategy with 1, 2, 7, 8
//! and 13 hosts, resume, a hostile destination, dead and full hosts, bad input, SIGINT, and
//! proof that remote-to-remote bytes skip the controller.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.
//! Files are small (a few MiB) so the whole file stays well within CI's time on 2 cores;
//! links are capped only where timing matters for the assertion.

mod lab;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lab::support::{
    assert_no_leftover_processes, assert_same, bounce_run, read_report, row, run_logged, sigint,
    wait_until_sent, wait_within, ReportRow,
};
use lab::{Lab, LabConfig};

const MIB: usize = 1 << 20;
const STRATEGIES: [&str; 3] = ["linear", "bounce", "chain"];
/// Exit statuses of the CLI contract.
const EXIT_SOME_FAILED: i32 = 1;
const EXIT_BAD_INPUT: i32 = 2;
const EXIT_INTERRUPTED: i32 = 130;

/// The lines of `known_hosts` text that are not about `host`.
fn known_hosts_without(known_hosts: &str, host: &str) -> String {
    known_hosts
        .lines()
        .filter(|l| !l.starts_with(&format!("{host},")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A copy of the lab's ssh_config for the controller alone, whose known_hosts holds
/// `known_hosts` (the hosts keep the lab's shared one). Returns the config and that file.
fn controller_config_knowing(
    lab: &Lab,
    known_hosts: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let known = lab.scratch().join("controller_known_hosts");
    fs::write(&known, known_hosts).unwrap();
    let shared = lab.ssh_dir().join("known_hosts");
    let text = fs::read_to_string(lab.ssh_config()).unwrap().replace(
        &format!("UserKnownHostsFile {}", shared.display()),
        &format!("UserKnownHostsFile {}", known.display()),
    );
    assert!(text.contains(&known.display().to_string()));
    let config = lab.scratch().join("controller_ssh_config");
    fs::write(&config, text).unwrap();
    (config, known)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks a successful run of `strategy` to hosts `1..=n` of `lab` and that hosts past `n`
/// were left alone.
fn assert_everyone_has_it(lab: &Lab, n: usize, rel: &str, src: &Path, rows: &[ReportRow]) {
    let size = fs::metadata(src).unwrap().len();
    let mode = fs::metadata(src).unwrap().permissions().mode() & 0o777;
    assert_eq!(rows.len(), n, "one report row per host: {rows:#?}");
    for i in 1..=n {
        assert_same(lab, i, rel, src);
        let copy_mode = fs::metadata(lab.host_file(i, rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            copy_mode,
            mode,
            "{}'s copy has mode {copy_mode:o}",
            lab.host(i)
        );
        let r = row(rows, &lab.host(i));
        assert_eq!(r.bytes, size, "{} received {} bytes", lab.host(i), r.bytes);
        assert!(r.error.is_empty(), "{} has an error: {r:?}", lab.host(i));
        assert!(
            r.start_s.is_some() && r.end_s >= r.start_s,
            "{} has no sane times: {r:?}",
            lab.host(i)
        );
    }
    for i in n + 1..=lab.len() {
        assert!(
            lab.data_tree(i).is_empty(),
            "{} was not asked but got {:?}",
            lab.host(i),
            lab.data_tree(i)
        );
    }
}

/// Only the destination (and its parents) exists on host `i`: no temp file is left.
fn assert_only(lab: &Lab, i: usize, expected: &[&str]) {
    let tree = lab.data_tree(i);
    assert_eq!(tree, expected, "{}'s data dir", lab.host(i));
}

fn strategy_copies_identical_files_to_1_2_7_8_13_hosts(strategy: &str, test: &str) {
    let Some(lab) = Lab::start(test, LabConfig::hosts(13)) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 3 * MIB + 12_345, 13);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    // The parent "sub" does not exist on any host: the runner creates it.
    let rel = "sub/f.bin";
    for n in [1, 2, 7, 8, 13] {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}-{n}.csv"));
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &lab.host_names(n),
            &report,
            &src,
            &lab.dest(rel),
        ));
        assert_eq!(out.status.code(), Some(0), "{strategy} to {n} hosts failed");
        let rows = read_report(&report);
        assert_everyone_has_it(&lab, n, rel, &src, &rows);
        for i in 1..=n {
            assert_only(&lab, i, &["sub", "sub/f.bin"]);
        }
        assert_no_leftover_processes(&lab, n);
        assert_eq!(
            fs::read_dir(lab.mnt()).unwrap().count(),
            0,
            "something was written on the controller's side of the mountpoint"
        );
    }
}

#[test]
fn linear_copies_identical_files_to_1_2_7_8_13_hosts() {
    strategy_copies_identical_files_to_1_2_7_8_13_hosts(
        "linear",
        "linear_copies_identical_files_to_1_2_7_8_13_hosts",
    );
}

#[test]
fn bounce_copies_identical_files_to_1_2_7_8_13_hosts() {
    strategy_copies_identical_files_to_1_2_7_8_13_hosts(
        "bounce",
        "bounce_copies_identical_files_to_1_2_7_8_13_hosts",
    );
}

#[test]
fn chain_copies_identical_files_to_1_2_7_8_13_hosts() {
    strategy_copies_identical_files_to_1_2_7_8_13_hosts(
        "chain",
        "chain_copies_identical_files_to_1_2_7_8_13_hosts",
    );
}

#[test]
fn second_run_after_partial_failure_sends_only_what_is_missing() {
    let Some(mut lab) = Lab::start(
        "second_run_after_partial_failure_sends_only_what_is_missing",
        LabConfig::hosts(7),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 4 * MIB, 7);
    let size = 4 * MIB as u64;
    let hosts = lab.host_names(7);
    for strategy in STRATEGIES {
        lab.clear_data();
        lab.stop_sshd(3);
        let report = lab.scratch().join(format!("{strategy}-first.csv"));
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &hosts,
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        assert_eq!(
            out.status.code(),
            Some(EXIT_SOME_FAILED),
            "{strategy}: first run"
        );
        assert!(
            stderr_of(&out).contains("h3"),
            "{strategy}: the failed host is not named"
        );
        let first = read_report(&report);
        assert!(
            !row(&first, "h3").error.is_empty(),
            "{strategy}: h3 failed without a reason"
        );
        for i in (1..=7).filter(|&i| i != 3) {
            assert_same(&lab, i, "f.bin", &src);
        }

        lab.start_sshd(3);
        let report = lab.scratch().join(format!("{strategy}-second.csv"));
        let tx = lab.controller_tx_bytes();
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &hosts,
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        let sent = lab.controller_tx_bytes() - tx;
        assert_eq!(out.status.code(), Some(0), "{strategy}: second run");
        // At most one copy leaves the controller: the missing one.
        assert!(
            sent <= size + size / 10 + 512 * 1024,
            "{strategy}: the controller sent {sent} bytes to resume one {size}-byte copy"
        );
        let second = read_report(&report);
        for i in 1..=7 {
            assert_same(&lab, i, "f.bin", &src);
            assert_only(&lab, i, &["f.bin"]);
        }
        let h3 = row(&second, "h3");
        assert_eq!(h3.bytes, size, "{strategy}: h3 in the second run: {h3:?}");
        for i in (1..=7).filter(|&i| i != 3) {
            let r = row(&second, &lab.host(i));
            assert_eq!(
                r.bytes,
                0,
                "{strategy}: up-to-date {} was sent bytes: {r:?}",
                lab.host(i)
            );
            assert_ne!(
                r.status, h3.status,
                "{strategy}: skipped and sent hosts share a status"
            );
            assert!(r.error.is_empty(), "{strategy}: {r:?}");
        }
        assert_no_leftover_processes(&lab, 7);
    }
}

#[test]
fn hostile_dest_path_is_quoted_and_nothing_is_written_outside_it() {
    let Some(lab) = Lab::start(
        "hostile_dest_path_is_quoted_and_nothing_is_written_outside_it",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB, 3);
    // Every payload would leave a file named pwned* in the remote shell's working
    // directory (the host's home, watched by the lab) if it ever ran.
    let dir = "d $(touch pwned0) 'x";
    let name =
        "sp ace 'sq' \"dq\" $(touch pwned1) `touch pwned2` ; touch pwned3 & touch pwned4 | x";
    let rel = format!("{dir}/{name}");
    for strategy in STRATEGIES {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &lab.host_names(3),
            &report,
            &src,
            &lab.dest(&rel),
        ));
        assert_eq!(out.status.code(), Some(0), "{strategy}: hostile DEST");
        for i in 1..=3 {
            assert_same(&lab, i, &rel, &src);
            assert_only(&lab, i, &[dir, &rel]);
            assert!(
                lab.home_tree(i).is_empty(),
                "{strategy}: h{i} home holds {:?}",
                lab.home_tree(i)
            );
        }
        assert_eq!(
            lab.find_named(&["pwned0", "pwned1", "pwned2", "pwned3", "pwned4"]),
            Vec::<String>::new(),
            "{strategy}: a payload ran"
        );
        assert_eq!(
            fs::read_dir(lab.mnt()).unwrap().count(),
            0,
            "{strategy}: controller-side mnt"
        );
    }
}

#[test]
fn host_without_sshd_fails_alone_and_leaves_nothing_at_its_dest() {
    let Some(lab) = Lab::start(
        "host_without_sshd_fails_alone_and_leaves_nothing_at_its_dest",
        LabConfig::hosts(7).no_sshd(4),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 2 * MIB, 4);
    for strategy in STRATEGIES {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &lab.host_names(7),
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED), "{strategy}");
        assert!(
            stderr_of(&out).contains("h4"),
            "{strategy}: the dead host is not named"
        );
        let rows = read_report(&report);
        let dead = row(&rows, "h4");
        assert!(!dead.error.is_empty(), "{strategy}: {dead:?}");
        assert!(
            lab.data_tree(4).is_empty(),
            "{strategy}: h4 has {:?}",
            lab.data_tree(4)
        );
        for i in (1..=7).filter(|&i| i != 4) {
            assert_same(&lab, i, "f.bin", &src);
            assert_only(&lab, i, &["f.bin"]);
            assert!(
                row(&rows, &lab.host(i)).error.is_empty(),
                "{strategy}: h{i} has an error"
            );
        }
        assert_no_leftover_processes(&lab, 7);
    }
}

#[test]
fn disk_full_host_is_named_with_no_space_left_on_device() {
    let Some(lab) = Lab::start(
        "disk_full_host_is_named_with_no_space_left_on_device",
        LabConfig::hosts(3).tmpfs(2, "1m"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 3 * MIB, 5);
    for strategy in STRATEGIES {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &lab.host_names(3),
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED), "{strategy}");
        let err = stderr_of(&out);
        assert!(
            err.lines()
                .any(|l| l.contains("h2") && l.contains("No space left on device")),
            "{strategy}: no line names h2 with 'No space left on device'"
        );
        let rows = read_report(&report);
        assert!(
            row(&rows, "h2").error.contains("No space left on device"),
            "{strategy}: {rows:?}"
        );
        // The temp file that filled the disk is gone, and nothing is at DEST.
        assert!(
            lab.data_tree(2).is_empty(),
            "{strategy}: h2 has {:?}",
            lab.data_tree(2)
        );
        for i in [1, 3] {
            assert_same(&lab, i, "f.bin", &src);
            assert_only(&lab, i, &["f.bin"]);
        }
        assert_no_leftover_processes(&lab, 3);
    }
}

#[test]
fn verbose_traces_pasteable_commands_remote_stderr_and_hops_and_quiet_says_only_the_end() {
    let Some(lab) = Lab::start(
        "verbose_traces_pasteable_commands_remote_stderr_and_hops_and_quiet_says_only_the_end",
        LabConfig::hosts(3).tmpfs(2, "1m"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 3 * MIB, 6);
    let report = lab.scratch().join("r.csv");
    let dest = lab.dest("f.bin");
    let out =
        run_logged(bounce_run(&lab, "chain", &lab.host_names(3), &report, &src, &dest).arg("-v"));
    assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED));
    let err = stderr_of(&out);
    // Every ssh session is traced with its host, number and job.
    let probe = err
        .lines()
        .find(|l| l.contains("] h1 session ") && l.contains("(bounce_lock_take): ssh -F "))
        .unwrap_or_else(|| panic!("no traced probe of h1:\n{err}"));
    // The full disk's message, as the job writing into h2 (h1's relay) wrote it on stderr.
    assert!(
        err.lines().any(|l| l.contains(" bounce_")
            && l.contains(" stderr: ")
            && l.contains("No space left")),
        "no traced stderr line of the full disk:\n{err}"
    );
    assert!(
        err.contains("scheduler: hop started: controller -> h"),
        "{err}"
    );
    assert!(
        err.contains("scheduler: hop ended: controller -> h"),
        "{err}"
    );
    // The probe's line, pasted into a shell, runs the same job: h1 holds SRC now, so it
    // answers with SRC's digest (and takes the lock again, which is removed after).
    let pasted = probe.split_once("): ").unwrap().1;
    let again = run_logged(lab.controller("bash").arg("-c").arg(pasted));
    assert!(again.status.success(), "{again:?}");
    let digest = lab::support::sha256_file(&src);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&format!("file {digest}")),
        "{again:?}"
    );
    fs::remove_dir_all(lab.host_file(1, ".f.bin.bounce-lock")).unwrap();

    // -q: on a failure, only the errors on stderr and the summary on stdout.
    lab.clear_data();
    let out =
        run_logged(bounce_run(&lab, "chain", &lab.host_names(3), &report, &src, &dest).arg("-q"));
    assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("2/3 hosts done in "), "{stdout}");
    let err = stderr_of(&out);
    assert!(
        !err.is_empty() && err.lines().all(|l| l.starts_with("bounce-run: h2")),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    // And on a success, nothing on stderr at all.
    lab.clear_data();
    let out =
        run_logged(bounce_run(&lab, "chain", &lab.host_names(1), &report, &src, &dest).arg("-q"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr_of(&out), "");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1/1 hosts done in "));
    assert_same(&lab, 1, "f.bin", &src);
}

#[test]
fn bad_input_exits_2_and_writes_nothing_anywhere() {
    let Some(lab) = Lab::start(
        "bad_input_exits_2_and_writes_nothing_anywhere",
        LabConfig::hosts(2),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB, 6);
    let missing = lab.scratch().join("no such file.bin");
    let hosts = lab.host_names(2);
    let cases: Vec<(&str, std::process::Command, String)> = vec![
        (
            "missing SRC",
            bounce_run(
                &lab,
                "bounce",
                &hosts,
                &lab.scratch().join("r1.csv"),
                &missing,
                &lab.dest("f.bin"),
            ),
            missing.display().to_string(),
        ),
        (
            "relative DEST",
            bounce_run(
                &lab,
                "bounce",
                &hosts,
                &lab.scratch().join("r2.csv"),
                &src,
                "relative/f.bin",
            ),
            "relative/f.bin".to_string(),
        ),
        (
            "empty host list",
            bounce_run(
                &lab,
                "bounce",
                &[String::new()],
                &lab.scratch().join("r3.csv"),
                &src,
                &lab.dest("f.bin"),
            ),
            String::new(),
        ),
    ];
    for (what, mut cmd, named) in cases {
        let tx = lab.controller_tx_bytes();
        let out = run_logged(&mut cmd);
        assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{what}");
        let err = stderr_of(&out);
        assert!(!err.trim().is_empty(), "{what}: no message");
        assert!(
            err.contains(&named),
            "{what}: the message does not name {named:?}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{what}: a panic"
        );
        for i in 1..=2 {
            assert!(
                lab.data_tree(i).is_empty(),
                "{what}: h{i} got {:?}",
                lab.data_tree(i)
            );
            assert!(
                lab.home_tree(i).is_empty(),
                "{what}: h{i} home got {:?}",
                lab.home_tree(i)
            );
        }
        // Bad input is found before any file moves; ARP and ssh handshakes stay far below
        // even a 1 MiB copy.
        let sent = lab.controller_tx_bytes() - tx;
        assert!(
            sent < 256 * 1024,
            "{what}: the controller sent {sent} bytes"
        );
    }
}

#[test]
fn sigint_mid_run_cleans_up_and_exits_130() {
    // Capped so that the run is surely still going when the signal comes.
    let Some(lab) = Lab::start(
        "sigint_mid_run_cleans_up_and_exits_130",
        LabConfig::hosts(7).rate("40mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    let size = 16 * MIB;
    lab::support::random_file(&src, size, 130);
    for strategy in STRATEGIES {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let tx0 = lab.controller_tx_bytes();
        let child = bounce_run(
            &lab,
            strategy,
            &lab.host_names(7),
            &report,
            &src,
            &lab.dest("f.bin"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bounce-run");
        // `ip netns exec` execs, so this pid is bounce-run's. Wait until bytes flow.
        let pid = child.id();
        wait_until_sent(&lab, tx0, 2 * MIB as u64);
        std::thread::sleep(Duration::from_millis(300));
        sigint(pid);
        let out = wait_within(child, Duration::from_secs(30), "bounce-run after SIGINT");
        eprintln!(
            "--- {strategy} after SIGINT: {}\n{}",
            out.status,
            stderr_of(&out)
        );
        assert_eq!(
            out.status.code(),
            Some(EXIT_INTERRUPTED),
            "{strategy}: exit status after SIGINT"
        );
        let mut unfinished = 0;
        for i in 1..=7 {
            if lab.host_file(i, "f.bin").exists() {
                // Whatever is at DEST was verified.
                assert_same(&lab, i, "f.bin", &src);
                assert_only(&lab, i, &["f.bin"]);
            } else {
                unfinished += 1;
                assert_only(&lab, i, &[]);
            }
        }
        assert!(
            unfinished > 0,
            "{strategy}: SIGINT came after the run had finished"
        );
        assert_no_leftover_processes(&lab, 7);
    }
}

#[test]
fn remote_to_remote_bytes_skip_the_controller() {
    // Capped, so that the schedule is the model's: the blog's doubling, where the source
    // sends ⌈log2(C+1)⌉ copies, not C.
    let Some(lab) = Lab::start(
        "remote_to_remote_bytes_skip_the_controller",
        LabConfig::hosts(7).rate("100mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    let size = 4 * MIB as u64;
    lab::support::random_file(&src, size as usize, 77);
    let hosts = lab.host_names(7);
    for (strategy, max_copies) in [("linear", 7), ("bounce", 4), ("chain", 1)] {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let tx = lab.controller_tx_bytes();
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &hosts,
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        let sent = lab.controller_tx_bytes() - tx;
        assert_eq!(out.status.code(), Some(0), "{strategy}");
        let rows = read_report(&report);
        // Copies the report says came from the source (any sender that is not a host).
        let from_source = rows.iter().filter(|r| !hosts.contains(&r.from)).count() as u64;
        eprintln!("{strategy}: controller sent {sent} bytes, {from_source} copies from the source");
        assert!(
            from_source >= 1 && from_source <= max_copies,
            "{strategy}: {from_source} copies came from the source: {rows:#?}"
        );
        if strategy == "bounce" {
            assert!(
                from_source >= 3,
                "bounce to 7 needs 3 rounds from the source"
            );
        }
        assert!(
            sent >= from_source * size && sent <= from_source * size * 11 / 10 + 512 * 1024,
            "{strategy}: the controller sent {sent} bytes for {from_source} copies of {size}"
        );
        for i in 1..=7 {
            assert_same(&lab, i, "f.bin", &src);
        }
    }
}

#[test]
fn host_whose_link_dies_mid_run_fails_within_seconds_and_the_rest_complete() {
    // Capped so that the link dies while bytes are flowing to or from h2.
    let Some(lab) = Lab::start(
        "host_whose_link_dies_mid_run_fails_within_seconds_and_the_rest_complete",
        LabConfig::hosts(4).rate("40mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 8 * MIB, 42);
    for strategy in STRATEGIES {
        lab.clear_data();
        lab.link_up(2);
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let tx0 = lab.controller_tx_bytes();
        let child = bounce_run(
            &lab,
            strategy,
            &lab.host_names(4),
            &report,
            &src,
            &lab.dest("f.bin"),
        )
        .arg("--connect-timeout")
        .arg("3s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bounce-run");
        wait_until_sent(&lab, tx0, MIB as u64);
        lab.link_down(2);
        // Not a speed target: a bound that only a hang exceeds.
        let out = wait_within(
            child,
            Duration::from_secs(120),
            "bounce-run with a dead link",
        );
        eprintln!(
            "--- {strategy} with h2's link down: {}\n{}",
            out.status,
            stderr_of(&out)
        );
        assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED), "{strategy}");
        assert!(
            stderr_of(&out).contains("h2"),
            "{strategy}: h2 is not named"
        );
        assert!(
            !lab.host_file(2, "f.bin").exists(),
            "{strategy}: h2 has a file at DEST"
        );
        // h2 could not be cleaned up: whatever is left there is named, not ignored (a
        // directory by its name: the run's lock, with its owner line in it).
        let left: Vec<String> = lab.data_tree(2);
        let err = stderr_of(&out);
        let inside_named = |f: &str| {
            f.rsplit_once('/')
                .is_some_and(|(dir, _)| left.iter().any(|d| d == dir))
        };
        for f in left.iter().filter(|f| !inside_named(f)) {
            assert!(
                err.lines()
                    .any(|l| l.contains("h2: cleanup failed") && l.contains(f.as_str())),
                "{strategy}: {f} left on h2 is not reported: {err}"
            );
        }
        for i in [1, 3, 4] {
            assert_same(&lab, i, "f.bin", &src);
            assert_only(&lab, i, &["f.bin"]);
        }
        lab.link_up(2);
        assert_no_leftover_processes(&lab, 4);
    }
}

#[test]
fn fleet_file_with_user_port_comments_per_host_dest_and_attributes_json_and_auto() {
    let Some(lab) = Lab::start(
        "fleet_file_with_user_port_comments_per_host_dest_and_attributes_json_and_auto",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB, 99);
    let hosts_file = lab.scratch().join("hosts");
    // Fleet attributes are for predictions: the run reads addresses and DESTs only.
    fs::write(
        &hosts_file,
        format!(
            "# lab hosts\n@source up=1Gbit\n\nroot@h1:22 rate=100Mbit\nh2   {} up=1Gbit down=50Mbit\n  h3 # trailing comment\n",
            lab.dest("other-dir/g.bin")
        ),
    )
    .unwrap();
    for strategy in ["linear", "bounce", "chain", "auto"] {
        lab.clear_data();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let out = run_logged(
            lab.controller(lab::support::bounce_run_bin())
                .stdin(Stdio::null())
                .arg("-F")
                .arg(lab.ssh_config())
                .args(["--json", "--strategy", strategy, "--hosts-file"])
                .arg(&hosts_file)
                .arg("--report")
                .arg(&report)
                .arg(&src)
                .arg(lab.dest("f.bin")),
        );
        assert_eq!(out.status.code(), Some(0), "{strategy}");
        assert_same(&lab, 1, "f.bin", &src);
        assert_same(&lab, 2, "other-dir/g.bin", &src);
        assert_same(&lab, 3, "f.bin", &src);
        assert_only(&lab, 2, &["other-dir", "other-dir/g.bin"]);
        let rows = read_report(&report);
        assert_eq!(rows.len(), 3, "{strategy}");
        // --json: one document, the same figures as the report.
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{strategy}: --json is not JSON: {e}\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let summary = &doc["summary"];
        assert_eq!(summary["hosts"], 3, "{doc}");
        assert_eq!(summary["ok"], 3, "{doc}");
        assert_eq!(summary["failed"], 0, "{doc}");
        assert_eq!(summary["size"], MIB as u64, "{doc}");
        if strategy == "auto" {
            let picked = summary["strategy"].as_str().unwrap();
            assert!(STRATEGIES.contains(&picked), "{doc}");
            assert!(
                stderr_of(&out).contains(&format!("--strategy auto picked {picked}: predicted ")),
                "{}",
                stderr_of(&out)
            );
        } else {
            assert_eq!(summary["strategy"], strategy, "{doc}");
        }
        let hosts = doc["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), rows.len());
        for (h, r) in hosts.iter().zip(&rows) {
            assert_eq!(h["host"], r.host.as_str());
            assert_eq!(h["status"], r.status.as_str());
            assert_eq!(h["bytes"], r.bytes);
            assert_eq!(h["from"], r.from.as_str());
            assert_eq!(h["digest"], r.digest.as_str());
            let end = h["end_s"].as_f64().unwrap();
            assert!((end - r.end_s.unwrap()).abs() < 0.0006, "{h} vs {r:?}");
        }
    }

    // A duplicate host is bad input, found before anything is written.
    lab.clear_data();
    fs::write(&hosts_file, "h1\nh2\nh1\n").unwrap();
    let out = run_logged(
        lab.controller(lab::support::bounce_run_bin())
            .stdin(Stdio::null())
            .arg("-F")
            .arg(lab.ssh_config())
            .arg("--hosts-file")
            .arg(&hosts_file)
            .arg(&src)
            .arg(lab.dest("f.bin")),
    );
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "duplicate host");
    assert!(stderr_of(&out).contains("h1"), "the duplicate is not named");
    for i in 1..=3 {
        assert!(
            lab.data_tree(i).is_empty(),
            "h{i} got {:?}",
            lab.data_tree(i)
        );
    }
}

#[test]
fn unknown_host_key_fails_that_host_unless_new_keys_are_accepted() {
    let Some(lab) = Lab::start(
        "unknown_host_key_fails_that_host_unless_new_keys_are_accepted",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB, 5150);
    // The controller's own config and known_hosts, without h2's key. Hops between hosts
    // still use the hosts' full known_hosts.
    let full = fs::read_to_string(lab.ssh_dir().join("known_hosts")).unwrap();
    let without_h2 = known_hosts_without(&full, "h2");
    assert_eq!(without_h2.lines().count(), 2);
    let (config, known) = controller_config_knowing(&lab, &without_h2);
    let run = |strategy: &str, accept: bool| {
        let mut c = lab.controller(lab::support::bounce_run_bin());
        c.stdin(Stdio::null()).arg("-F").arg(&config).args([
            "--strategy",
            strategy,
            "-H",
            "h1,h2,h3",
        ]);
        if accept {
            c.arg("--accept-new-host-keys");
        }
        c.arg(&src).arg(lab.dest("f.bin"));
        run_logged(&mut c)
    };

    // Strict by default: h2 fails, clearly, and only h2.
    let out = run("linear", false);
    assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED));
    let err = stderr_of(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("h2") && l.to_lowercase().contains("host key")),
        "no line names h2 and its host key"
    );
    assert!(lab.data_tree(2).is_empty(), "h2 got {:?}", lab.data_tree(2));
    assert_same(&lab, 1, "f.bin", &src);
    assert_same(&lab, 3, "f.bin", &src);

    // Accepting new keys is explicit, and records the key.
    lab.clear_data();
    let out = run("bounce", true);
    assert_eq!(out.status.code(), Some(0));
    for i in 1..=3 {
        assert_same(&lab, i, "f.bin", &src);
    }
    let recorded = fs::read_to_string(&known).unwrap();
    assert!(
        recorded.lines().count() > 2,
        "h2's key was not recorded: {recorded}"
    );
}

/// The hosts of a chain in order, following the report's `from` column from the
/// controller; stops where a host is fed by none of those left.
fn chain_order(rows: &[ReportRow]) -> Vec<String> {
    let mut order = Vec::new();
    let mut last = "controller".to_string();
    while let Some(r) = rows
        .iter()
        .find(|r| r.from == last && !order.contains(&r.host))
    {
        order.push(r.host.clone());
        last = r.host.clone();
    }
    order
}

#[test]
fn chain_streams_through_every_host_and_falls_back_when_a_relay_cannot_start() {
    let Some(lab) = Lab::start(
        "chain_streams_through_every_host_and_falls_back_when_a_relay_cannot_start",
        LabConfig::hosts(4),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    let size = 3 * MIB + 12345;
    lab::support::random_file(&src, size, 808);
    let hosts = lab.host_names(4);
    let report = lab.scratch().join("chain.csv");

    // Every relay starts: each host gets the file once, from the one before it in the
    // chain (hosts join it in the order they become ready), and no chunk is sent twice.
    let out = run_logged(&mut bounce_run(
        &lab,
        "chain",
        &hosts,
        &report,
        &src,
        &lab.dest("f.bin"),
    ));
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr_of(&out).contains("hop failed"));
    // Every link streams: none fell back to requests.
    assert!(
        !stderr_of(&out).contains("link not set up ahead"),
        "{}",
        stderr_of(&out)
    );
    let rows = read_report(&report);
    let order = chain_order(&rows);
    assert_eq!(order.len(), 4, "not one chain through every host: {rows:?}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.bytes, size as u64, "{r:?}");
        assert_same(&lab, i + 1, "f.bin", &src);
        assert_only(&lab, i + 1, &["f.bin"]);
    }
    assert_no_leftover_processes(&lab, 4);

    // Hops into h3 cannot start (the hosts do not know its key; the controller does): the
    // relay into h3 fails to set up, h3 fails by name, and the others are served past it.
    // The controller reaches h3 a second late, so that h3 joins the chain behind another
    // host rather than straight after the controller.
    lab.clear_data();
    let shared = lab.ssh_dir().join("known_hosts");
    let full = fs::read_to_string(&shared).unwrap();
    let (config, _) = controller_config_knowing(&lab, &full);
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("\nMatch originalhost h3 exec \"sleep 1\"\n");
    fs::write(&config, text).unwrap();
    let without_h3 = known_hosts_without(&full, "h3");
    assert_eq!(without_h3.lines().count() + 1, full.lines().count());
    fs::write(&shared, without_h3).unwrap();
    let mut c = lab.controller(lab::support::bounce_run_bin());
    c.stdin(Stdio::null())
        .arg("-F")
        .arg(&config)
        .args(["--strategy", "chain", "-H", &hosts.join(",")])
        .arg("--report")
        .arg(&report)
        .arg(&src)
        .arg(lab.dest("f.bin"));
    let out = run_logged(&mut c);
    fs::write(&shared, &full).unwrap();
    assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED));
    let rows = read_report(&report);
    let h3 = &rows[2];
    assert_eq!(h3.status, "failed", "{h3:?}");
    assert!(
        h3.error.to_lowercase().contains("host key"),
        "h3's error does not name its host key: {h3:?}"
    );
    assert!(lab.data_tree(3).is_empty(), "h3 got {:?}", lab.data_tree(3));
    // Why the relay into h3 could not be set up is said, not dropped.
    let err = stderr_of(&out);
    assert!(
        err.lines().any(|l| l.contains("link not set up ahead")
            && l.contains(&format!("-> {}", lab.host(3)))
            && l.to_lowercase().contains("host key")),
        "the relay's failure is not reported: {err}"
    );
    // The others still form one chain, past h3.
    let others: Vec<_> = [0, 1, 3].iter().map(|&i| rows[i].clone()).collect();
    assert_eq!(chain_order(&others).len(), 3, "{rows:?}");
    for i in [1, 2, 4] {
        assert_same(&lab, i, "f.bin", &src);
        assert_only(&lab, i, &["f.bin"]);
    }
    assert_no_leftover_processes(&lab, 4);
}

#[test]
fn preserve_keeps_mode_mtime_and_owner_and_the_default_does_not() {
    use std::os::unix::fs::MetadataExt as _;
    let Some(lab) = Lab::start(
        "preserve_keeps_mode_mtime_and_owner_and_the_default_does_not",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB + 7, 4242);
    // setuid, an old time to the nanosecond, and an owner that is not the login (root).
    std::os::unix::fs::chown(&src, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o4750)).unwrap();
    let old = std::time::UNIX_EPOCH + Duration::new(1_300_000_000, 987_654_321);
    fs::File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let want = fs::metadata(&src).unwrap();
    assert_eq!(
        want.mtime_nsec(),
        987_654_321,
        "this filesystem keeps nanoseconds"
    );
    for strategy in STRATEGIES {
        for preserve in [true, false] {
            lab.clear_data();
            let report = lab.scratch().join(format!("{strategy}-{preserve}.csv"));
            let mut cmd = bounce_run(
                &lab,
                strategy,
                &lab.host_names(3),
                &report,
                &src,
                &lab.dest("p.bin"),
            );
            if preserve {
                cmd.arg("--preserve");
            }
            let out = run_logged(&mut cmd);
            assert_eq!(out.status.code(), Some(0), "{strategy} {preserve}");
            for i in 1..=3 {
                assert_same(&lab, i, "p.bin", &src);
                let got = fs::metadata(lab.host_file(i, "p.bin")).unwrap();
                let what = format!("{strategy}, --preserve {preserve}, h{i}");
                if preserve {
                    assert_eq!(got.mode() & 0o7777, 0o4750, "{what}");
                    assert_eq!(
                        (got.mtime(), got.mtime_nsec()),
                        (want.mtime(), want.mtime_nsec()),
                        "{what}"
                    );
                    assert_eq!((got.uid(), got.gid()), (1234, 5678), "{what}");
                } else {
                    assert_eq!(got.mode() & 0o7777, 0o750, "{what}: setuid dropped");
                    assert_ne!(got.mtime(), want.mtime(), "{what}: written now");
                    assert_eq!((got.uid(), got.gid()), (0, 0), "{what}: the login's");
                }
            }
        }
    }
}

#[test]
fn then_runs_on_every_host_with_a_hostile_dest_as_one_argument_and_reports_its_status() {
    let Some(lab) = Lab::start(
        "then_runs_on_every_host_with_a_hostile_dest_as_one_argument_and_reports_its_status",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB, 31);
    let rel = "sp ace 'sq' \"dq\" $(touch pwned1) `touch pwned2`.img";
    // Writes where it was told DEST is, beside it; fails on the host holding a marker.
    let then = r#"printf '%s' "$1" > "$1.then"; echo "checked $(wc -c < "$1")"; [ ! -e "$(dirname "$1")/fail-here" ] || exit 4"#;
    for strategy in STRATEGIES {
        lab.clear_data();
        fs::write(lab.host_file(2, "fail-here"), b"").unwrap();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let mut cmd = bounce_run(
            &lab,
            strategy,
            &lab.host_names(3),
            &report,
            &src,
            &lab.dest(rel),
        );
        cmd.args(["--then", then]);
        let out = run_logged(&mut cmd);
        assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED), "{strategy}");
        assert!(
            stderr_of(&out).contains("h2: --then exited 4: checked 1048576"),
            "{strategy}: {}",
            stderr_of(&out)
        );
        let rows = read_report(&report);
        for i in 1..=3 {
            assert_same(&lab, i, rel, &src);
            let seen = fs::read_to_string(lab.host_file(i, &format!("{rel}.then"))).unwrap();
            assert_eq!(seen, lab.dest(rel), "{strategy}: h{i} got another $1");
            let r = row(&rows, &lab.host(i));
            assert_eq!(r.status, "verified", "{strategy}: h{i}");
            assert_eq!(
                r.then_status,
                Some(if i == 2 { 4 } else { 0 }),
                "{strategy}: h{i}"
            );
            assert_eq!(r.then_output, "checked 1048576", "{strategy}: h{i}");
        }
        assert_eq!(
            lab.find_named(&["pwned1", "pwned2"]),
            Vec::<String>::new(),
            "{strategy}: a payload ran"
        );
    }
    // A rerun finds every copy up to date and runs it again; without the marker it passes.
    fs::remove_file(lab.host_file(2, "fail-here")).unwrap();
    let report = lab.scratch().join("rerun.csv");
    let mut cmd = bounce_run(
        &lab,
        "chain",
        &lab.host_names(3),
        &report,
        &src,
        &lab.dest(rel),
    );
    cmd.args(["--then", then]);
    let out = run_logged(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    for r in read_report(&report) {
        assert_eq!(
            (r.status.as_str(), r.then_status),
            ("up-to-date", Some(0)),
            "{r:?}"
        );
    }
}
