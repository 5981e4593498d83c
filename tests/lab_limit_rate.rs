//! `--limit-rate` against real sshd hosts in the lab (issue 11): what each host, the
//! controller included, puts on its link is sampled once a second while bounce-run runs,
//! and must average the cap within 10%, and stay under it over any 5 s.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.

mod lab;

use lab::support::{assert_same, bounce_run, random_file, read_report, run_sampled};
use lab::{Lab, LabConfig};

const MIB: usize = 1 << 20;

#[test]
fn limit_rate_caps_the_controller_and_every_relay_on_100_mbit_links() {
    let Some(lab) = Lab::start(
        "limit_rate_caps_the_controller_and_every_relay_on_100_mbit_links",
        LabConfig::hosts(3).rate("100mbit"),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    random_file(&src, 32 * MIB, 40);
    // The chain: the controller feeds one host, which relays to the next, which relays to
    // the last (in the order they finished connecting); each of the three uploads one
    // stream.
    let report = lab.scratch().join("chain.csv");
    let mut cmd = bounce_run(
        &lab,
        "chain",
        &lab.host_names(3),
        &report,
        &src,
        &lab.dest("c.bin"),
    );
    cmd.args(["--limit-rate", "40Mbit"]);
    let (status, samples) = run_sampled(&lab, &mut cmd, &[0, 1, 2, 3]);
    assert!(status.success(), "chain: {status}");
    for i in 1..=3 {
        assert_same(&lab, i, "c.bin", &src);
    }
    let rows = read_report(&report);
    for r in &rows {
        assert_eq!(
            (r.status.as_str(), r.bytes),
            ("verified", 32 * MIB as u64),
            "{}",
            r.host
        );
    }
    let senders: Vec<&str> = rows.iter().map(|r| r.from.as_str()).collect();
    assert_eq!(senders.len(), 3);
    for s in &samples {
        let name = if s.name == "the controller" {
            "controller"
        } else {
            s.name.as_str()
        };
        if senders.contains(&name) {
            s.assert_capped(40.0, "chain");
        }
    }

    // Bounce: in its second round the controller and the host that holds the file each
    // send a whole copy.
    lab.clear_data();
    let report = lab.scratch().join("bounce.csv");
    let mut cmd = bounce_run(
        &lab,
        "bounce",
        &lab.host_names(3),
        &report,
        &src,
        &lab.dest("b.bin"),
    );
    cmd.args(["--limit-rate", "40Mbit"]);
    let (status, samples) = run_sampled(&lab, &mut cmd, &[0, 1, 2, 3]);
    assert!(status.success(), "bounce: {status}");
    let rows = read_report(&report);
    let relay = rows
        .iter()
        .find(|r| r.from != "controller")
        .expect("one host was sent the file by another");
    for i in 1..=3 {
        assert_same(&lab, i, "b.bin", &src);
    }
    for s in &samples {
        if s.name == "the controller" || s.name == relay.from {
            s.assert_capped(40.0, "bounce");
        }
    }

    // Linear: the controller's two streams share its cap.
    lab.clear_data();
    let report = lab.scratch().join("linear.csv");
    let mut cmd = bounce_run(
        &lab,
        "linear",
        &lab.host_names(2),
        &report,
        &src,
        &lab.dest("l.bin"),
    );
    cmd.args(["--limit-rate", "40Mbit"]);
    let (status, samples) = run_sampled(&lab, &mut cmd, &[0]);
    assert!(status.success(), "linear: {status}");
    for i in 1..=2 {
        assert_same(&lab, i, "l.bin", &src);
    }
    samples[0].assert_capped(40.0, "linear to 2 hosts");
}
