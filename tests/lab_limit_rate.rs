//! `--limit-rate` against real sshd hosts in the lab (issue 11): what each host, the
//! controller included, puts on its link is sampled once a second while bounce-run runs,
//! and must average the cap within 10%, and stay under it over any 5 s.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.

mod lab;

use std::process::Stdio;
use std::time::{Duration, Instant};

use lab::support::{assert_same, bounce_run, random_file, read_report};
use lab::{Lab, LabConfig};

const MIB: usize = 1 << 20;

/// One host's link as sampled: its transmit rate over each second of the run, in Mbit/s.
struct Samples {
    name: String,
    mbit: Vec<f64>,
}

impl Samples {
    /// The samples from the first to the last second the link carried a tenth of `cap` or
    /// more: the seconds this host was uploading.
    fn active(&self, cap: f64) -> &[f64] {
        let busy = |r: &f64| *r >= cap / 10.0;
        match (
            self.mbit.iter().position(busy),
            self.mbit.iter().rposition(busy),
        ) {
            (Some(a), Some(b)) => &self.mbit[a..=b],
            _ => &[],
        }
    }

    /// Checks the cap: over the seconds it was uploading, less the first and the last (each
    /// only partly busy), the link averaged `cap` within 10%; and no 5 s averaged above
    /// 110% of it.
    fn assert_capped(&self, cap: f64, what: &str) {
        let active = self.active(cap);
        eprintln!(
            "{what}: {} transmitted Mbit/s each second: {active:.1?}",
            self.name
        );
        assert!(
            active.len() >= 5,
            "{what}: {} uploaded for only {} s: {:.1?}",
            self.name,
            active.len(),
            self.mbit
        );
        let inner = &active[1..active.len() - 1];
        let mean = inner.iter().sum::<f64>() / inner.len() as f64;
        eprintln!(
            "{what}: {} averaged {mean:.1} Mbit/s under a cap of {cap} Mbit/s",
            self.name
        );
        assert!(
            (0.9 * cap..=1.1 * cap).contains(&mean),
            "{what}: {} averaged {mean:.1} Mbit/s, not {cap} ± 10%: {active:.1?}",
            self.name
        );
        for w in active.windows(5) {
            let m = w.iter().sum::<f64>() / 5.0;
            assert!(
                m <= 1.1 * cap,
                "{what}: {} sent {m:.1} Mbit/s over 5 s, above {cap} + 10%: {active:.1?}",
                self.name
            );
        }
    }
}

/// Runs `cmd` to its end, sampling the transmit counters of namespaces `watch` (0 is the
/// controller) once a second. Returns its exit status and the samples.
fn run_sampled(
    lab: &Lab,
    cmd: &mut std::process::Command,
    watch: &[usize],
) -> (std::process::ExitStatus, Vec<Samples>) {
    let log = lab.scratch().join("run.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let read = |i: usize| lab.tx_bytes(i);
    let mut last: Vec<(u64, Instant)> = watch.iter().map(|&i| (read(i), Instant::now())).collect();
    let mut samples: Vec<Samples> = watch
        .iter()
        .map(|&i| Samples {
            name: if i == 0 {
                "the controller".into()
            } else {
                lab.host(i)
            },
            mbit: Vec::new(),
        })
        .collect();
    let started = Instant::now();
    let status = loop {
        std::thread::sleep(Duration::from_secs(1));
        for (k, &i) in watch.iter().enumerate() {
            let (now_bytes, now) = (read(i), Instant::now());
            let (b, t) = last[k];
            samples[k]
                .mbit
                .push((now_bytes - b) as f64 * 8.0 / (now - t).as_secs_f64() / 1e6);
            last[k] = (now_bytes, now);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("bounce-run did not end within 120 s");
        }
    };
    eprintln!(
        "--- {cmd:?} -> {status}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    (status, samples)
}

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
