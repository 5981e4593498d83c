//! `bounce-run`'s promises about DEST, temporary files and cleanup (issue 8), against real
//! sshd hosts in the lab: a directory or a symlink at DEST, stale temporary files of an
//! earlier run, setuid bits, a source that grows during the run, an interrupt while a host
//! still hashes DEST, and a second interrupt during cleanup.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.

mod lab;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use lab::support::{
    assert_no_leftover_processes, assert_same, bounce_run, read_report, row, run_logged, sigint,
    spawn_piped, wait_until_sent, wait_within,
};
use lab::{Lab, LabConfig};

const MIB: usize = 1 << 20;
const STRATEGIES: [&str; 3] = ["linear", "bounce", "chain"];
const EXIT_SOME_FAILED: i32 = 1;
const EXIT_INTERRUPTED: i32 = 130;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The processes of host `i` whose command name is one of `names`.
fn running(lab: &Lab, i: usize, names: &[&str]) -> Vec<u32> {
    lab.pids(i)
        .into_iter()
        .filter(|p| {
            let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            names.contains(&comm.trim())
        })
        .collect()
}

#[test]
fn a_directory_at_dest_is_refused_naming_the_host_and_nothing_moves_into_it() {
    let Some(lab) = Lab::start(
        "a_directory_at_dest_is_refused_naming_the_host_and_nothing_moves_into_it",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 2 * MIB, 8);
    for strategy in STRATEGIES {
        lab.clear_data();
        fs::create_dir(lab.host_file(2, "f.bin")).unwrap();
        // Twice: a rerun must not claim the copy either.
        for attempt in 0..2 {
            let report = lab.scratch().join(format!("{strategy}-{attempt}.csv"));
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
                err.lines().any(|l| l.contains("h2")
                    && l.contains(&lab.dest("f.bin"))
                    && l.contains("is a directory")),
                "{strategy}: no line names h2, its DEST and 'is a directory': {err}"
            );
            let rows = read_report(&report);
            assert_eq!(row(&rows, "h2").status, "failed", "{strategy}: {rows:?}");
            assert_eq!(row(&rows, "h2").bytes, 0);
            assert_eq!(
                lab.data_tree(2),
                ["f.bin"],
                "{strategy}: the directory at h2's DEST is untouched and empty"
            );
            for i in [1, 3] {
                assert_same(&lab, i, "f.bin", &src);
                assert_eq!(lab.data_tree(i), ["f.bin"], "{strategy}: h{i}");
            }
        }
        assert_no_leftover_processes(&lab, 3);
    }
}

#[test]
fn a_symlink_at_dest_is_replaced_and_never_written_through() {
    let Some(lab) = Lab::start(
        "a_symlink_at_dest_is_replaced_and_never_written_through",
        LabConfig::hosts(2),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 2 * MIB, 9);
    let other = lab.scratch().join("other.bin");
    lab::support::random_file(&other, 2 * MIB, 10);
    for strategy in STRATEGIES {
        lab.clear_data();
        // h1's link points at a file that already holds SRC's bytes: it must not be trusted.
        // h2's points at a different file of the same size, which must not be overwritten.
        let mnt = lab.mnt();
        fs::copy(&src, lab.host_file(1, "target.bin")).unwrap();
        fs::copy(&other, lab.host_file(2, "target.bin")).unwrap();
        for i in [1, 2] {
            std::os::unix::fs::symlink(mnt.join("target.bin"), lab.host_file(i, "f.bin")).unwrap();
        }
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let out = run_logged(&mut bounce_run(
            &lab,
            strategy,
            &lab.host_names(2),
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        assert_eq!(out.status.code(), Some(0), "{strategy}");
        let rows = read_report(&report);
        for i in [1, 2] {
            let meta = fs::symlink_metadata(lab.host_file(i, "f.bin")).unwrap();
            assert!(
                meta.file_type().is_file(),
                "{strategy}: h{i}'s DEST is still a symlink"
            );
            assert_same(&lab, i, "f.bin", &src);
            assert_eq!(row(&rows, &lab.host(i)).status, "verified", "{strategy}");
        }
        assert_eq!(
            fs::read(lab.host_file(2, "target.bin")).unwrap(),
            fs::read(&other).unwrap(),
            "{strategy}: written through h2's symlink"
        );
        assert_no_leftover_processes(&lab, 2);
    }
}

#[test]
fn stale_temporary_files_are_swept_and_live_ones_kept() {
    let Some(lab) = Lab::start(
        "stale_temporary_files_are_swept_and_live_ones_kept",
        LabConfig::hosts(2),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, MIB, 11);
    let stale = ".f.bin.bounce-00112233deadbeef-h1.tmp";
    let recent = ".f.bin.bounce-44556677deadbeef-t4.tmp";
    for i in [1, 2] {
        fs::write(lab.host_file(i, stale), b"left by a killed controller").unwrap();
        fs::write(lab.host_file(i, recent), b"maybe a live run's").unwrap();
        let old = std::process::Command::new("touch")
            .args(["-d", "-30 minutes"])
            .arg(lab.host_file(i, stale))
            .status()
            .unwrap();
        assert!(old.success());
    }
    let report = lab.scratch().join("run.csv");
    let out = run_logged(&mut bounce_run(
        &lab,
        "chain",
        &lab.host_names(2),
        &report,
        &src,
        &lab.dest("f.bin"),
    ));
    assert_eq!(out.status.code(), Some(0));
    let err = stderr_of(&out);
    for i in [1, 2] {
        assert_same(&lab, i, "f.bin", &src);
        assert_eq!(
            lab.data_tree(i),
            [recent, "f.bin"],
            "h{i}: the stale file is swept, the recent one kept"
        );
        assert!(
            err.lines().any(|l| l.contains(&lab.host(i))
                && l.contains("removed stale temporary file")
                && l.contains(stale)),
            "the sweep on h{i} is not reported: {err}"
        );
    }
}

#[test]
fn setuid_and_setgid_bits_reach_the_hosts_only_when_asked() {
    let Some(lab) = Lab::start(
        "setuid_and_setgid_bits_reach_the_hosts_only_when_asked",
        LabConfig::hosts(2),
    ) else {
        return;
    };
    let src = lab.scratch().join("tool");
    lab::support::random_file(&src, MIB, 12);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o6755)).unwrap();
    for (keep, expect) in [(false, 0o755), (true, 0o6755)] {
        lab.clear_data();
        let report = lab.scratch().join(format!("keep-{keep}.csv"));
        let mut cmd = bounce_run(
            &lab,
            "bounce",
            &lab.host_names(2),
            &report,
            &src,
            &lab.dest("tool"),
        );
        if keep {
            cmd.arg("--keep-setid");
        }
        let out = run_logged(&mut cmd);
        assert_eq!(out.status.code(), Some(0));
        for i in [1, 2] {
            assert_same(&lab, i, "tool", &src);
            let mode = fs::metadata(lab.host_file(i, "tool"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            assert_eq!(mode, expect, "h{i} with --keep-setid {keep}: {mode:o}");
        }
    }
}

#[test]
fn a_source_that_grows_during_the_run_is_sent_as_hashed_and_reported() {
    // Capped so that the source is still being sent when it grows.
    let Some(lab) = Lab::start(
        "a_source_that_grows_during_the_run_is_sent_as_hashed_and_reported",
        LabConfig::hosts(3).rate("40mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    let size = 8 * MIB;
    let original = lab.scratch().join("original.bin");
    lab::support::random_file(&original, size, 13);
    for strategy in STRATEGIES {
        lab.clear_data();
        fs::copy(&original, &src).unwrap();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let tx0 = lab.controller_tx_bytes();
        let child = spawn_piped(&mut bounce_run(
            &lab,
            strategy,
            &lab.host_names(3),
            &report,
            &src,
            &lab.dest("f.bin"),
        ));
        wait_until_sent(&lab, tx0, MIB as u64);
        // An appender, like a log or a VM image still being written.
        let mut f = fs::OpenOptions::new().append(true).open(&src).unwrap();
        std::io::Write::write_all(&mut f, &vec![0x5a; MIB]).unwrap();
        drop(f);
        let out = wait_within(child, Duration::from_secs(120), "bounce-run");
        let err = stderr_of(&out);
        eprintln!("--- {strategy}: {}\n{err}", out.status);
        assert_eq!(
            out.status.code(),
            Some(EXIT_SOME_FAILED),
            "{strategy}: {err}"
        );
        assert!(
            err.contains("changed during the run"),
            "{strategy}: the change is not reported: {err}"
        );
        let rows = read_report(&report);
        for i in 1..=3 {
            // Every host holds exactly the bytes that were hashed, none of the appended ones.
            assert_same(&lab, i, "f.bin", &original);
            assert_eq!(
                row(&rows, &lab.host(i)).status,
                "verified",
                "{strategy}: h{i}"
            );
        }
        assert_no_leftover_processes(&lab, 3);
    }
}

#[test]
fn an_interrupt_while_a_host_hashes_dest_stops_the_hashing() {
    let Some(lab) = Lab::start(
        "an_interrupt_while_a_host_hashes_dest_stops_the_hashing",
        LabConfig::hosts(1),
    ) else {
        return;
    };
    // DEST of SRC's size, so the probe must hash it: 3 GiB take the host's hasher seconds
    // (openssl about 1.2 GB/s here, sha256sum about 270 MB/s).
    let size = 3u64 << 30;
    let src = lab.scratch().join("big.img");
    fs::File::create(&src).unwrap().set_len(size).unwrap();
    let dest = fs::File::create(lab.host_file(1, "big.img")).unwrap();
    dest.set_len(size).unwrap();
    drop(dest);
    let report = lab.scratch().join("run.csv");
    let child = spawn_piped(&mut bounce_run(
        &lab,
        "bounce",
        &lab.host_names(1),
        &report,
        &src,
        &lab.dest("big.img"),
    ));
    let pid = child.id();
    let started = Instant::now();
    // The hasher itself, whichever the probe picked: the probe's shell is not enough.
    while running(&lab, 1, &["openssl", "sha256sum"]).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the host never started hashing DEST"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sigint(pid);
    let out = wait_within(child, Duration::from_secs(30), "bounce-run after SIGINT");
    eprintln!("--- {}\n{}", out.status, stderr_of(&out));
    assert_eq!(out.status.code(), Some(EXIT_INTERRUPTED));
    assert_no_leftover_processes(&lab, 1);
    assert_eq!(lab.data_tree(1), ["big.img"]);
}

#[test]
fn a_second_interrupt_during_cleanup_exits_at_once_naming_what_may_be_left() {
    let Some(lab) = Lab::start(
        "a_second_interrupt_during_cleanup_exits_at_once_naming_what_may_be_left",
        LabConfig::hosts(2).rate("20mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, 16 * MIB, 14);
    let report = lab.scratch().join("run.csv");
    let configs_before = generated_configs();
    let tx0 = lab.controller_tx_bytes();
    let child = spawn_piped(&mut bounce_run(
        &lab,
        "linear",
        &lab.host_names(2),
        &report,
        &src,
        &lab.dest("f.bin"),
    ));
    let pid = child.id();
    wait_until_sent(&lab, tx0, 2 * MIB as u64);
    // h2 can no longer be reached, so cleaning it up stalls until its keep-alives give up.
    lab.link_down(2);
    sigint(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let second = Instant::now();
    sigint(pid);
    let out = wait_within(
        child,
        Duration::from_secs(30),
        "bounce-run after two SIGINTs",
    );
    let waited = second.elapsed();
    let err = stderr_of(&out);
    eprintln!("--- {} after {waited:?}\n{err}", out.status);
    lab.link_up(2);
    assert_eq!(out.status.code(), Some(EXIT_INTERRUPTED), "{err}");
    assert!(err.contains("interrupted again"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("may be left on h2") && l.contains(".f.bin.bounce-")),
        "h2's temporary file is not named: {err}"
    );
    // The first interrupt's cleanup would have waited seconds more for h2's keep-alives.
    assert!(
        waited < Duration::from_secs(4),
        "the second interrupt took {waited:?} to end the run"
    );
    // h1 was reachable: its part of the cleanup had time to finish.
    assert_eq!(lab.data_tree(1), Vec::<String>::new());
    // Nothing of the controller's outlives it: its ssh masters were told to exit (they
    // would persist otherwise), and its generated ssh_config is gone.
    let masters = lab.settle_processes(0, Duration::from_secs(5));
    assert!(masters.is_empty(), "the controller still runs {masters:?}");
    assert_eq!(
        generated_configs(),
        configs_before,
        "the controller's generated ssh_config was left"
    );
}

/// The controllers' generated ssh_config directories in the temporary directory.
fn generated_configs() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".bounce-ssh-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
