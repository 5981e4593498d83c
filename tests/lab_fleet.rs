//! A fleet larger than the other lab tests: 48 hosts on slow links, in a lab like users'
//! (Debian's stock ssh and sshd configurations and root dotfiles, hosts addressed by IP).
//! On 2 cores, 95 logins keep the controller busy for seconds while the chain starts, so
//! progress arrives late; the straggler rule must still cut no host of a fleet of equal
//! links (issue 24), and every host must end with SRC's bytes.
//!
//! Needs root; see `tests/lab/mod.rs` for when it skips (loudly) and when it fails. Nothing
//! here times the run: the fleet figures are `cargo bench --bench lab`'s.

mod lab;

use std::time::Duration;

use lab::support::{
    assert_same, bounce_run, random_file, read_report, row, spawn_piped, wait_within,
};
use lab::{Lab, LabConfig};

const MIB: u64 = 1 << 20;

#[test]
fn a_chain_of_48_hosts_at_5_mbit_verifies_every_host_and_cuts_none() {
    let hosts = 48;
    let Some(lab) = Lab::start(
        "a_chain_of_48_hosts_at_5_mbit_verifies_every_host_and_cuts_none",
        LabConfig::hosts(hosts).rate("5mbit").stock(),
    ) else {
        return;
    };
    // 16 MiB at 5 Mbit/s: t1 is about 27 s, long enough that the controller is probed and
    // that a second of late progress would once have made healthy hosts look slow.
    let size = 16 * MIB;
    let src = lab.scratch().join("src.bin");
    random_file(&src, size as usize, 4848);
    let report = lab.scratch().join("fleet.csv");
    let child = spawn_piped(&mut bounce_run(
        &lab,
        "chain",
        &lab.host_addrs(hosts),
        &report,
        &src,
        &lab.dest("f.bin"),
    ));
    // Not a speed target: a bound that only a hang exceeds.
    let out = wait_within(child, Duration::from_secs(300), "bounce-run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- 48 hosts at 5 Mbit/s: {}\n{err}", out.status);
    assert!(out.status.success(), "bounce-run failed: {err}");
    assert!(
        !err.contains("cut out of the chain"),
        "a host of equal links was cut out:\n{err}"
    );
    let rows = read_report(&report);
    for (i, addr) in (1..=hosts).zip(lab.host_addrs(hosts)) {
        let r = row(&rows, &addr);
        assert_eq!(r.status, "verified", "{r:?}");
        assert_eq!(r.bytes, size, "a chunk reached h{i} twice: {r:?}");
        assert_same(&lab, i, "f.bin", &src);
    }
}
