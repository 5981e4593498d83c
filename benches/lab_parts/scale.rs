//! The `scale` part of the lab benchmark (issue 24): the chain to a fleet of 48 to 999 hosts
//! in the stock lab (Debian's ssh and sshd configurations and root dotfiles, hosts by IP),
//! on links slow enough that the 2 cores are not the limit once the data flows, with what
//! the run costs per host beside its baselines from the same lab:
//!
//! - t1, a plain `ssh IP 'cat > f'` of the same file to one host;
//! - a login, `ssh IP true` to 8 hosts one after another: CPU seconds and processes each;
//! - the chain: its makespan against t1 and against the moment the last host began to
//!   receive (plus t1), the setup (until the first host receives), hosts cut out and hosts
//!   verified; the machine's CPU seconds and processes started per host; ssh logins and
//!   sessions per host, from each sshd's log; the controller's processes and their RSS per
//!   host at the run's peak, sampled every half second.
//!
//! `BOUNCE_BENCH_SCALE` (default `128:5mbit:40MiB`) lists `HOSTS:RATE:SIZE` workloads,
//! comma-separated; `BOUNCE_BENCH_LOGIN=slow` gives the hosts the lab's slow login shell.
//! Run alone: `BOUNCE_BENCH_ONLY=scale sudo -E cargo bench --bench lab`.

use std::fs;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::lab::support::{
    bounce_run_bin, processes_started, random_file, read_report, sha256_file,
};
use super::lab::{Lab, LabConfig};
use super::{clock_tick, env_or, machine_cpu, time_it};
use bounce::units::parse_size;

/// Resident set size of `pid`, in bytes (0 once it is gone).
fn rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The peak of the controller namespace's process count and their RSS together, sampled
/// every half second until stopped.
struct ControllerPeak {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, u64)>,
}

impl ControllerPeak {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let ns = lab.netns_name(0);
        let thread = std::thread::spawn(move || {
            let mut peak = (0usize, 0u64);
            while !flag.load(Ordering::Relaxed) {
                let out = std::process::Command::new("ip")
                    .args(["netns", "pids", &ns])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let pids: Vec<u32> = out
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                let total: u64 = pids.iter().map(|&p| rss(p)).sum();
                peak = (peak.0.max(pids.len()), peak.1.max(total));
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            peak
        });
        ControllerPeak { stop, thread }
    }

    fn finish(self) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

/// Lines of host `i`'s sshd log that contain `what`.
fn log_count(lab: &Lab, i: usize, what: &str) -> usize {
    fs::read_to_string(lab.sshd_log(i))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// Logins and sessions of every host so far, summed.
fn logins_and_sessions(lab: &Lab, hosts: usize) -> (usize, usize) {
    (1..=hosts).fold((0, 0), |(l, s), i| {
        (
            l + log_count(lab, i, "Accepted publickey"),
            s + log_count(lab, i, "Starting session"),
        )
    })
}

/// The scale part (see the module docs).
pub fn scale_part() {
    let spec = env_or("BOUNCE_BENCH_SCALE", "128:5mbit:40MiB");
    let slow = env_or("BOUNCE_BENCH_LOGIN", "stock") == "slow";
    let tick = clock_tick();
    println!(
        "bounce lab benchmark, scale part: the stock lab ({} login), one run each",
        if slow { "slow" } else { "stock" }
    );
    for part in spec.split(',') {
        let fields: Vec<&str> = part.trim().split(':').collect();
        let [hosts, rate, size] = fields[..] else {
            panic!("BOUNCE_BENCH_SCALE: {part:?} is not HOSTS:RATE:SIZE");
        };
        let hosts: usize = hosts.parse().expect("BOUNCE_BENCH_SCALE hosts");
        let size = parse_size(size).expect("BOUNCE_BENCH_SCALE size");
        let mut cfg = LabConfig::hosts(hosts).rate(rate).stock().verbose_log();
        if slow {
            cfg = cfg.slow_login();
        }
        let started = Instant::now();
        let lab = Lab::start("bench lab scale", cfg).expect("lab prerequisites were checked");
        println!();
        println!(
            "{hosts} hosts at {rate}, {size} bytes (lab built in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let scratch = lab.scratch();
        let src = scratch.join("src.bin");
        random_file(&src, size as usize, 128);
        let digest = sha256_file(&src);
        let dest = lab.dest("f.bin");
        let addrs = lab.host_addrs(hosts);

        // Baselines: one login, and one plain copy.
        let logins = 8.min(hosts);
        let (cpu0, proc0) = (machine_cpu(tick), processes_started());
        for addr in &addrs[..logins] {
            let mut c = lab.controller("ssh");
            c.arg("-F").arg(lab.ssh_config()).arg(addr).arg("true");
            time_it(&mut c, "ssh true").expect("a login");
        }
        let login_cpu = (machine_cpu(tick) - cpu0) / logins as f64;
        let login_procs = (processes_started() - proc0) as f64 / logins as f64;
        let mut push = lab.controller("ssh");
        push.arg("-F")
            .arg(lab.ssh_config())
            .arg(&addrs[0])
            .arg(format!("cat > '{dest}'"))
            .stdin(Stdio::from(fs::File::open(&src).expect("open SRC")));
        let t1 = time_it(&mut push, "t1").expect("t1");
        lab.clear_data();

        // The chain.
        let (l0, s0) = logins_and_sessions(&lab, hosts);
        let report = scratch.join("scale.csv");
        let mut cmd = lab.controller(bounce_run_bin());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .arg("-F")
            .arg(lab.ssh_config())
            .args(["--strategy", "chain", "-H", &addrs.join(",")])
            .arg("--report")
            .arg(&report)
            .arg(&src)
            .arg(&dest);
        let (cpu0, proc0) = (machine_cpu(tick), processes_started());
        let peak = ControllerPeak::start(&lab);
        let begun = Instant::now();
        let out = cmd.output().expect("run bounce-run");
        let wall = begun.elapsed().as_secs_f64();
        let (peak_procs, peak_rss) = peak.finish();
        let cpu = machine_cpu(tick) - cpu0;
        let procs = processes_started() - proc0;
        let (l1, s1) = logins_and_sessions(&lab, hosts);
        let err = String::from_utf8_lossy(&out.stderr);
        let cuts = err.matches("cut out of the chain").count();
        let rows = read_report(&report);
        let verified = (1..=hosts)
            .filter(|&i| {
                let f = lab.host_file(i, "f.bin");
                f.is_file() && sha256_file(&f) == digest
            })
            .count();
        let first_start = rows
            .iter()
            .filter_map(|r| r.start_s)
            .fold(f64::INFINITY, f64::min);
        let last_start = rows.iter().filter_map(|r| r.start_s).fold(0.0, f64::max);
        let makespan = rows.iter().filter_map(|r| r.end_s).fold(0.0, f64::max);
        if std::env::var_os("BOUNCE_BENCH_TRACE").is_some() {
            eprintln!("{err}");
        }
        let h = hosts as f64;
        println!("{:<52} {:>10} {:>10}", "row", "measured", "baseline");
        println!(
            "{:<52} {:>10} {:>10}",
            "bounce-run exit status",
            out.status.code().unwrap_or(-1),
            "0"
        );
        println!(
            "{:<52} {:>10} {:>10}",
            "hosts verified byte-identical", verified, hosts
        );
        println!(
            "{:<52} {:>10} {:>10}",
            "hosts cut out (equal links)", cuts, 0
        );
        println!(
            "{:<52} {:>9.2}s {:>9.2}s",
            "makespan (report's last end) vs t1", makespan, t1
        );
        println!("{:<52} {:>10.3} {:>10}", "  ratio to t1", makespan / t1, "");
        println!(
            "{:<52} {:>9.2}s {:>9.2}s",
            "makespan vs last host's start + t1 (target ≤ 1.05)",
            makespan,
            last_start + t1
        );
        println!(
            "{:<52} {:>10.3} {:>10}",
            "  ratio",
            makespan / (last_start + t1),
            ""
        );
        println!(
            "{:<52} {:>9.2}s {:>10}",
            "setup: first host receives", first_start, ""
        );
        println!(
            "{:<52} {:>9.2}s {:>10}",
            "last host begins to receive", last_start, ""
        );
        println!(
            "{:<52} {:>9.2}s {:>10}",
            "wall clock, process start to exit", wall, ""
        );
        println!(
            "{:<52} {:>9.2}s {:>9.2}s",
            "CPU s of the run, machine-wide, vs 2 logins/host",
            cpu,
            2.0 * h * login_cpu
        );
        println!(
            "{:<52} {:>9.3}s {:>9.3}s",
            "CPU s per host vs one login",
            cpu / h,
            login_cpu
        );
        println!(
            "{:<52} {:>10.1} {:>10.1}",
            "processes started per host vs one login",
            procs as f64 / h,
            login_procs
        );
        println!(
            "{:<52} {:>10.2} {:>10}",
            "ssh logins per host (sshd: Accepted publickey)",
            (l1 - l0) as f64 / h,
            "2"
        );
        println!(
            "{:<52} {:>10.2} {:>10}",
            "ssh sessions per host (sshd: Starting session)",
            (s1 - s0) as f64 / h,
            "≤ 2"
        );
        println!(
            "{:<52} {:>10.2} {:>10}",
            "controller processes per host at the peak",
            peak_procs as f64 / h,
            "1"
        );
        println!(
            "{:<52} {:>8.2}MB {:>8}MB",
            "controller RSS per host at the peak (target ≤ 6)",
            peak_rss as f64 / h / 1e6,
            "6"
        );
    }
}
