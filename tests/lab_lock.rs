//! One run per DEST per host at a time (`src/run/remote/lock.rs`), against real sshd hosts in the
//! lab: a second run to the same DEST fails that host at once, naming the run that holds
//! it, while the first completes; a lock left by a run that is gone is swept by the next
//! run, which names it; no run leaves its lock behind.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.

mod lab;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::support::{
    assert_same, bounce_run, random_file, read_report, row, spawn_piped, wait_within,
};
use lab::{Lab, LabConfig};

const MIB: usize = 1 << 20;
const EXIT_SOME_FAILED: i32 = 1;

/// The lock beside `f.bin` on host `i`, as the root namespace sees it.
fn lock_of(lab: &Lab, i: usize) -> PathBuf {
    lab.host_file(i, ".f.bin.bounce-lock")
}

/// Names in host `i`'s data directory.
fn names(lab: &Lab, i: usize) -> Vec<String> {
    lab.data_tree(i)
}

#[test]
fn a_second_run_to_the_same_dest_fails_that_host_at_once_naming_the_first() {
    let Some(lab) = Lab::start(
        "a_second_run_to_the_same_dest_fails_that_host_at_once_naming_the_first",
        LabConfig::hosts(2).rate("8mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    random_file(&src, 4 * MIB, 77);
    let dest = lab.dest("f.bin");
    let first = spawn_piped(&mut bounce_run(
        &lab,
        "linear",
        &[lab.host(1)],
        &lab.scratch().join("first.csv"),
        &src,
        &dest,
    ));
    let first_pid = first.id();
    // The first run holds h1's lock once its copy has begun (4 MiB at 8 Mbit/s: 4 s).
    let begun = Instant::now();
    while !names(&lab, 1)
        .iter()
        .any(|n| n.starts_with(".f.bin.bounce-") && n.ends_with(".tmp"))
    {
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "the first run never began h1's copy: {:?}",
            names(&lab, 1)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lock_of(&lab, 1).is_dir(), "no lock beside h1's DEST");

    let report = lab.scratch().join("second.csv");
    let second = spawn_piped(&mut bounce_run(
        &lab,
        "linear",
        &lab.host_names(2),
        &report,
        &src,
        &dest,
    ));
    let second = wait_within(second, Duration::from_secs(60), "the second bounce-run");
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    eprintln!("--- second run: {}\n{err}", second.status);
    assert_eq!(second.status.code(), Some(EXIT_SOME_FAILED), "{err}");
    let rows = read_report(&report);
    let h1 = row(&rows, "h1");
    assert_eq!(h1.status, "failed", "{h1:?}");
    for word in ["locked by run", &format!("pid {first_pid} on"), "since 20"] {
        assert!(
            h1.error.contains(word),
            "{word:?} not in h1's error: {h1:?}"
        );
    }
    assert_eq!(row(&rows, "h2").status, "verified");
    assert_same(&lab, 2, "f.bin", &src);

    let first = wait_within(first, Duration::from_secs(60), "the first bounce-run");
    assert!(
        first.status.success(),
        "the first run failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_same(&lab, 1, "f.bin", &src);
    for i in 1..=2 {
        assert_eq!(names(&lab, i), ["f.bin"], "h{i} holds more than DEST");
    }
}

#[test]
fn a_lock_left_by_a_run_that_is_gone_is_swept_and_named_and_a_young_one_is_not() {
    let Some(lab) = Lab::start(
        "a_lock_left_by_a_run_that_is_gone_is_swept_and_named_and_a_young_one_is_not",
        LabConfig::hosts(1),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    random_file(&src, MIB, 78);
    let dest = lab.dest("f.bin");
    let plant = |minutes: u32| {
        let l = lock_of(&lab, 1);
        fs::create_dir(&l).expect("plant a lock");
        fs::write(
            l.join("owner"),
            "0123abcd otherctl 99 2026-12-01T00:00:00Z\n",
        )
        .unwrap();
        let ok = Command::new("touch")
            .arg("-d")
            .arg(format!("{minutes} minutes ago"))
            .arg(&l)
            .status()
            .unwrap()
            .success();
        assert!(ok, "touch the planted lock");
    };
    let run = |what: &str| {
        let out = spawn_piped(&mut bounce_run(
            &lab,
            "chain",
            &[lab.host(1)],
            &lab.scratch().join("r.csv"),
            &src,
            &dest,
        ));
        let out = wait_within(out, Duration::from_secs(60), what);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- {what}: {}\n{err}", out.status);
        (out, err)
    };

    // Young: the run that holds it may be alive on another controller.
    plant(1);
    let (out, _) = run("a young lock");
    assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED));
    let h1 = row(&read_report(&lab.scratch().join("r.csv")), "h1").clone();
    assert!(
        h1.error.contains(
            "locked by run 0123abcd of bounce-run (pid 99 on otherctl), since 2026-12-01T00:00:00Z"
        ),
        "{h1:?}"
    );
    assert_eq!(
        names(&lab, 1),
        [".f.bin.bounce-lock", ".f.bin.bounce-lock/owner"]
    );
    fs::remove_dir_all(lock_of(&lab, 1)).unwrap();

    // Old, and no process on the host names its run: swept, named, and the copy made.
    plant(20);
    let (out, err) = run("a stale lock");
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("removed the stale lock")
            && err.contains("0123abcd")
            && err.contains("otherctl"),
        "the sweep is not named: {err}"
    );
    assert_same(&lab, 1, "f.bin", &src);
    assert_eq!(names(&lab, 1), ["f.bin"], "the lock was left behind");

    // A rerun that finds h1 up to date releases its lock too.
    let (out, err) = run("an up-to-date rerun");
    assert!(out.status.success(), "{err}");
    assert_eq!(names(&lab, 1), ["f.bin"], "the rerun left its lock behind");
}
