//! The streamed chain when hosts fail or lag (issue 10), against real sshd hosts in the lab:
//! a host that crashes mid-stream, two adjacent ones that crash together, a host ten times
//! slower than the rest (in the middle of the chain, and at its head, where only a probe of
//! the controller tells it from a slow controller), and a host whose copy changes on disk
//! behind its check. Every other
//! host must end with SRC's bytes, fed past the failed or slow host by a stream that resumes
//! where its copy ends, so that no byte reaches it twice; a host fed a corrupt copy is fed
//! again from a good one.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.
//! Nothing here times the run: speed figures are `cargo bench --bench lab`'s.

mod lab;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lab::support::{assert_same, bounce_run, bounce_run_with, read_report, row, wait_within};
use lab::{Lab, LabConfig};

const MIB: u64 = 1 << 20;
const EXIT_SOME_FAILED: i32 = 1;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The length of host `i`'s temporary copy of `name`, if it has one.
fn temp_len(lab: &Lab, i: usize, name: &str) -> Option<u64> {
    let dir = lab.host_file(i, "");
    fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        (n.starts_with(&format!(".{name}.bounce-")) && n.ends_with(".tmp"))
            .then(|| e.metadata().map(|m| m.len()).unwrap_or(0))
    })
}

/// Waits until at least `count + 1` hosts are receiving (hold a temporary copy) and the
/// `count + 1`th furthest along holds `bytes`, then returns the `count` hosts right behind
/// the furthest: in a chain, copies are ordered as the hosts are, so these are adjacent and
/// the host before them is alive to take over.
fn pick_victims(lab: &Lab, hosts: usize, count: usize, bytes: u64) -> Vec<usize> {
    let started = Instant::now();
    loop {
        let mut receiving: Vec<(u64, usize)> = (1..=hosts)
            .filter_map(|i| temp_len(lab, i, "f.bin").map(|n| (n, i)))
            .collect();
        receiving.sort_by(|a, b| b.cmp(a));
        if receiving.len() > count && receiving[count].0 >= bytes {
            return receiving[1..=count].iter().map(|&(_, i)| i).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never {count} hosts behind another with {bytes} bytes: {receiving:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a 6-host chain of `size` bytes over 40 Mbit/s links and crashes `count` adjacent
/// hosts in the middle of it (every process of theirs, sshd included) once they hold 40% of
/// the file. Every other host must be verified with SRC's bytes, having received no more
/// than the file and 2 MiB of ssh traffic on its link.
fn chain_survives_crashes(test: &str, count: usize) {
    let Some(mut lab) = Lab::start(test, LabConfig::hosts(6).rate("40mbit")) else {
        return;
    };
    let size = 8 * MIB;
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, size as usize, 4040);
    let report = lab.scratch().join("chain.csv");
    let rx0: Vec<u64> = (0..=6).map(|i| lab.rx_bytes(i)).collect();
    let child = bounce_run(
        &lab,
        "chain",
        &lab.host_names(6),
        &report,
        &src,
        &lab.dest("f.bin"),
    )
    .args(["--connect-timeout", "3s"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn bounce-run");
    let victims = pick_victims(&lab, 6, count, size * 2 / 5);
    for &v in &victims {
        lab.stop_sshd(v);
    }
    // Not a speed target: a bound that only a hang exceeds.
    let out = wait_within(child, Duration::from_secs(120), "bounce-run");
    let err = stderr_of(&out);
    eprintln!("--- {test}: crashed {victims:?}: {}\n{err}", out.status);
    assert_eq!(out.status.code(), Some(EXIT_SOME_FAILED), "{err}");
    let rows = read_report(&report);
    for (i, &rx_before) in rx0.iter().enumerate().skip(1) {
        let r = row(&rows, &lab.host(i));
        if victims.contains(&i) {
            assert_eq!(r.status, "failed", "{r:?}");
            assert!(
                !lab.host_file(i, "f.bin").exists(),
                "h{i} has a file at DEST"
            );
            continue;
        }
        assert_eq!(r.status, "verified", "{r:?}\n{err}");
        assert_same(&lab, i, "f.bin", &src);
        assert_eq!(r.bytes, size, "no chunk reached h{i} twice: {r:?}");
        // Each byte of the file reached it once: what its link carried in is the file, the
        // ssh framing and the controller's few commands.
        let rx = lab.rx_bytes(i) - rx_before;
        assert!(
            rx <= size + 2 * MIB,
            "h{i} received {rx} bytes for a file of {size}: bytes were sent twice\n{err}"
        );
    }

    // The crashed hosts come back, and a rerun sends only what they lack: the hosts that
    // have the file receive nothing of it, the crashed ones one copy each.
    for &v in &victims {
        lab.start_sshd(v);
    }
    let rx0: Vec<u64> = (0..=6).map(|i| lab.rx_bytes(i)).collect();
    let out = lab::support::run_logged(
        bounce_run(
            &lab,
            "chain",
            &lab.host_names(6),
            &report,
            &src,
            &lab.dest("f.bin"),
        )
        .args(["--connect-timeout", "3s"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let rows = read_report(&report);
    for (i, &rx_before) in rx0.iter().enumerate().skip(1) {
        let r = row(&rows, &lab.host(i));
        let rx = lab.rx_bytes(i) - rx_before;
        if victims.contains(&i) {
            assert_eq!(r.status, "verified", "{r:?}");
            assert_same(&lab, i, "f.bin", &src);
            assert!(
                rx <= size + 2 * MIB,
                "h{i} received {rx} bytes on the rerun"
            );
        } else {
            assert_eq!(r.status, "up-to-date", "{r:?}");
            assert!(
                rx < MIB,
                "h{i}, up to date, received {rx} bytes on the rerun"
            );
        }
    }
}

#[test]
fn a_chain_host_that_crashes_mid_stream_is_passed_and_no_byte_is_sent_twice() {
    chain_survives_crashes(
        "a_chain_host_that_crashes_mid_stream_is_passed_and_no_byte_is_sent_twice",
        1,
    );
}

#[test]
fn two_adjacent_chain_hosts_that_crash_together_are_passed_and_no_byte_is_sent_twice() {
    chain_survives_crashes(
        "two_adjacent_chain_hosts_that_crash_together_are_passed_and_no_byte_is_sent_twice",
        2,
    );
}

#[test]
fn a_slow_host_is_cut_out_of_the_chain_and_holds_back_nobody() {
    // h3 at a tenth of the others' rate. It connects half a second late and h6 a second
    // late, so that h3 joins the chain behind hosts that show what a healthy rate is, and
    // before h6, which it would hold back.
    let err = slow_host_is_cut(
        "a_slow_host_is_cut_out_of_the_chain_and_holds_back_nobody",
        3,
        &[(3, 0.5), (6, 1.0)],
        8 * MIB,
    );
    assert!(
        !err.contains("probe") && !err.contains("alongside it"),
        "a probe ran: {err}"
    );
}

#[test]
fn a_slow_first_host_is_found_by_probing_the_controller_and_holds_back_nobody() {
    // h1 at a tenth of the others' rate, and the others connect half a second late: h1
    // heads the chain, where no host behind it can show a faster rate. With 30 s to go at
    // its rate, the controller is probed: the chain's last host is fed by the controller
    // beside h1, receives ten times faster, and takes h1's place.
    let err = slow_host_is_cut(
        "a_slow_first_host_is_found_by_probing_the_controller_and_holds_back_nobody",
        1,
        &[(2, 0.5), (3, 0.5), (4, 0.5), (5, 0.5), (6, 0.5)],
        16 * MIB,
    );
    let probe = err
        .lines()
        .find(|l| l.contains("probe of the controller: h1 received at"))
        .unwrap_or_else(|| panic!("no probe of the controller: {err}"));
    assert!(!probe.contains("limits the chain"), "{probe}");
    assert!(
        err.lines()
            .any(|l| l.contains("h1: receives at")
                && l.contains("fed by the controller alongside it")),
        "the probe's start was not told: {err}"
    );
}

/// Runs a 6-host chain of `size` bytes over 40 Mbit/s links with host `slow` at 4 Mbit/s,
/// the controller's connections to some hosts delayed (`delays`, seconds) to set the
/// chain's order. The slow host must be cut out, every host verified with SRC's bytes and
/// no chunk twice, and every other host done before it. Returns the run's stderr.
fn slow_host_is_cut(test: &str, slow: usize, delays: &[(usize, f64)], size: u64) -> String {
    let Some(lab) = Lab::start(test, LabConfig::hosts(6).rate("40mbit")) else {
        return String::new();
    };
    lab.set_rate(slow, "4mbit");
    let config = lab::support::config_delaying(&lab, delays);
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, size as usize, 77);
    let report = lab.scratch().join("chain.csv");
    let rx0: Vec<u64> = (0..=6).map(|i| lab.rx_bytes(i)).collect();
    let mut c = bounce_run_with(
        &lab,
        &config,
        "chain",
        &lab.host_names(6),
        &report,
        &src,
        &lab.dest("f.bin"),
    );
    let out = lab::support::run_logged_within(&mut c, Duration::from_secs(180));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let name = lab.host(slow);
    assert!(
        err.lines()
            .any(|l| l.contains(&format!("{name}: receives at"))
                && l.contains("cut out of the chain")),
        "{name} was not cut out: {err}"
    );
    let rows = read_report(&report);
    let slow_end = row(&rows, &name).end_s.unwrap();
    for (i, &rx_before) in rx0.iter().enumerate().skip(1) {
        let r = row(&rows, &lab.host(i));
        assert_eq!(r.status, "verified", "{r:?}");
        assert_same(&lab, i, "f.bin", &src);
        // No chunk reached it twice.
        assert_eq!(r.bytes, size, "{r:?}");
        // Nor did its link carry the file twice. The slow host's old link is cut at its
        // end while its sender's buffers still hold what a 4 Mbit/s link has not yet
        // carried; ssh delivers it to nobody, so its own counter is not held to this.
        let rx = lab.rx_bytes(i) - rx_before;
        assert!(
            i == slow || rx <= size + 2 * MIB,
            "h{i} received {rx} bytes for {size}"
        );
        // Fed through the slow host they could not end before it; fed past it, they end
        // long before.
        if i != slow {
            assert!(
                r.end_s.unwrap() < slow_end / 2.0,
                "h{i} ended at {:?}, after the slow host ({slow_end})\n{err}",
                r.end_s
            );
        }
    }
    assert_no_temp_left(&lab, 6, Path::new("f.bin"));
    err
}

/// Panics if any of hosts `1..=n` still holds a temporary copy of `name`.
fn assert_no_temp_left(lab: &Lab, n: usize, name: &Path) {
    let name = name.display().to_string();
    for i in 1..=n {
        assert_eq!(temp_len(lab, i, &name), None, "h{i} kept a temporary copy");
    }
}

#[test]
fn a_relay_whose_copy_changed_on_disk_is_found_and_every_host_ends_with_srcs_bytes() {
    let Some(lab) = Lab::start(
        "a_relay_whose_copy_changed_on_disk_is_found_and_every_host_ends_with_srcs_bytes",
        LabConfig::hosts(4).rate("40mbit"),
    ) else {
        return;
    };
    // h4 connects three seconds late: until then the last of h1..h3 relays to nobody, and
    // its copy is changed on disk behind its in-stream hash. Its relay to h4 then sends
    // bytes that differ from what it hashed.
    let config = lab::support::config_delaying(&lab, &[(4, 3.0)]);
    let size = 8 * MIB;
    let src = lab.scratch().join("src.bin");
    lab::support::random_file(&src, size as usize, 99);
    let report = lab.scratch().join("chain.csv");
    let child = bounce_run_with(
        &lab,
        &config,
        "chain",
        &lab.host_names(4),
        &report,
        &src,
        &lab.dest("f.bin"),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn bounce-run");
    // The last host of the chain so far is the one furthest behind; once it holds 2 MiB,
    // 4 KiB at 1 MiB are overwritten in its copy.
    let started = Instant::now();
    let victim = loop {
        let mut receiving: Vec<(u64, usize)> = (1..=3)
            .filter_map(|i| temp_len(&lab, i, "f.bin").map(|n| (n, i)))
            .collect();
        receiving.sort();
        if receiving.len() == 3 && receiving[0].0 >= 2 * MIB {
            break receiving[0].1;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{receiving:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let dir = lab.host_file(victim, "");
    let tmp = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tmp"))
        .expect("the victim's temporary copy");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&tmp).unwrap();
        f.seek(SeekFrom::Start(MIB)).unwrap();
        f.write_all(&[0xaa; 4096]).unwrap();
    }
    let out = wait_within(child, Duration::from_secs(120), "bounce-run");
    let err = stderr_of(&out);
    eprintln!("--- changed h{victim}'s copy: {}\n{err}", out.status);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines().any(
            |l| l.contains(&format!("{}: ", lab.host(victim))) && l.contains("changed on disk")
        ),
        "h{victim}'s changed copy was not found: {err}"
    );
    let rows = read_report(&report);
    for i in 1..=4 {
        assert_eq!(row(&rows, &lab.host(i)).status, "verified", "{rows:?}");
        assert_same(&lab, i, "f.bin", &src);
    }
    assert_no_temp_left(&lab, 4, Path::new("f.bin"));
}
