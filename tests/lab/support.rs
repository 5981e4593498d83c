//! Test inputs and outputs around the lab: source files, digests, `bounce-run` invocations
//! and its `--report` CSV.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{RngCore as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};

use super::Lab;

/// Writes `size` bytes of seeded pseudo-random data to `path`: incompressible, and
/// different per seed so a stale copy from another test cannot pass for the right one.
pub fn random_file(path: &Path, size: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    fs::write(path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a raw VM image as it often is to `path`: `size` bytes, mostly zeros, with `data`
/// blocks of 1 MiB of seeded random bytes spread evenly through it.
pub fn mostly_zeros(path: &Path, size: usize, data: usize, seed: u64) {
    const MIB: usize = 1 << 20;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; size];
    let stride = size / data;
    for k in 0..data {
        rng.fill_bytes(&mut bytes[k * stride..k * stride + MIB]);
    }
    fs::write(path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let digest = Sha256::digest(&data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Panics unless host `i` holds a byte-identical copy of `src` at destination `rel`.
pub fn assert_same(lab: &Lab, i: usize, rel: &str, src: &Path) {
    let copy = lab.host_file(i, rel);
    assert!(
        copy.is_file(),
        "{} has no file at {rel}; its data dir holds {:?}",
        lab.host(i),
        lab.data_tree(i)
    );
    assert_eq!(
        sha256_file(&copy),
        sha256_file(src),
        "{}'s copy at {rel} differs from the source",
        lab.host(i)
    );
}

/// The `bounce-run` binary built for this test run.
pub fn bounce_run_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bounce-run"))
}

/// `bounce-run -F <lab config> --strategy <strategy> -H <hosts> --report <report> <extra>
/// SRC DEST` in the controller's namespace.
pub fn bounce_run(
    lab: &Lab,
    strategy: &str,
    hosts: &[String],
    report: &Path,
    src: &Path,
    dest: &str,
) -> Command {
    bounce_run_with(lab, &lab.ssh_config(), strategy, hosts, report, src, dest)
}

/// [`bounce_run`] with the controller's ssh_config `config` instead of the lab's.
pub fn bounce_run_with(
    lab: &Lab,
    config: &Path,
    strategy: &str,
    hosts: &[String],
    report: &Path,
    src: &Path,
    dest: &str,
) -> Command {
    let mut c = lab.controller(bounce_run_bin());
    c.stdin(Stdio::null())
        .arg("-F")
        .arg(config)
        .args(["--strategy", strategy])
        .arg("-H")
        .arg(hosts.join(","))
        .arg("--report")
        .arg(report)
        .arg(src)
        .arg(dest);
    c
}

/// A copy of the lab's ssh_config, for the controller alone, under which the controller
/// reaches each host `(i, seconds)` that many seconds late: a host that joins a run after
/// the others.
pub fn config_delaying(lab: &Lab, delays: &[(usize, f64)]) -> PathBuf {
    let mut text = fs::read_to_string(lab.ssh_config()).expect("read the lab's ssh_config");
    for &(i, secs) in delays {
        text.push_str(&format!(
            "\nMatch originalhost {} exec \"sleep {secs}\"\n",
            lab.host(i)
        ));
    }
    let config = lab.scratch().join("delaying_ssh_config");
    fs::write(&config, text).expect("write the delaying ssh_config");
    config
}

/// Runs a command and returns its output, printing stdout and stderr for the test log.
/// A command still running after `timeout` is killed and fails the test: a run must never
/// hang on a dead host.
pub fn run_logged_within(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = wait_within(child, timeout, &format!("{cmd:?}"));
    eprintln!(
        "--- {cmd:?} -> {}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run_logged_within`] with a generous bound for small lab transfers.
pub fn run_logged(cmd: &mut Command) -> Output {
    run_logged_within(cmd, Duration::from_secs(120))
}

/// Waits for a child whose stdout and stderr are piped, killing it after `timeout`.
pub fn wait_within(mut child: Child, timeout: Duration, what: &str) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "{what} still ran after {timeout:?} and was killed; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Starts a command with stdout and stderr piped, for [`wait_within`].
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The machine's `processes` counter (`/proc/stat`): processes started since boot, whatever
/// namespace they run in.
pub fn processes_started() -> u64 {
    let stat = fs::read_to_string("/proc/stat").expect("read /proc/stat");
    stat.lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a processes line in /proc/stat")
}

/// Waits until the controller's namespace has sent `bytes` more than `tx0`, or 20 s: the
/// point where a run is surely moving data.
pub fn wait_until_sent(lab: &Lab, tx0: u64, bytes: u64) {
    let started = Instant::now();
    while lab.controller_tx_bytes() < tx0 + bytes && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGINT to a process.
pub fn sigint(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot send SIGINT to {pid}");
}

/// Panics unless hosts `1..=n` run nothing but their listening sshd and the controller's
/// namespace runs nothing at all (no ssh masters, no hop processes) within a few seconds.
///
/// An sshd child that never got past authentication (`sshd: [accepted]`, `sshd: [net]`,
/// `[preauth]`) is not counted: it runs nothing of the run's. One is left behind when a
/// link dies in the middle of a connection's handshake, and lives until its next TCP
/// retransmission after the link is back, which can be a minute away.
pub fn assert_no_leftover_processes(lab: &Lab, n: usize) {
    for i in 0..=n {
        let extra = lab.settle_processes(i, Duration::from_secs(5));
        let who = if i == 0 {
            "the controller".to_string()
        } else {
            lab.host(i)
        };
        let names: Vec<String> = extra
            .iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            })
            .filter(|name| !name.is_empty() && !is_preauth_sshd(name))
            .collect();
        assert!(names.is_empty(), "{who} still runs {names:?}");
    }
}

/// True for an sshd child still in its handshake, before any command of a user.
fn is_preauth_sshd(cmdline: &str) -> bool {
    let c = cmdline.trim();
    c.starts_with("sshd: [accepted]") || c.starts_with("sshd: [net]") || c.ends_with("[preauth]")
}

/// One row of `bounce-run --report`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReportRow {
    /// The receiving host, as given on the command line.
    pub host: String,
    /// Who sent it the file (the source or another host).
    pub from: String,
    /// Start of the host's transfer, seconds since the run began.
    pub start_s: Option<f64>,
    /// End of the host's transfer, seconds since the run began.
    pub end_s: Option<f64>,
    /// Bytes the host received in this run.
    pub bytes: u64,
    /// Outcome, such as verified, up to date or failed.
    pub status: String,
    /// Why the host failed, empty otherwise.
    pub error: String,
    /// The tool the host computed SHA-256 with (`openssl` or `sha256sum`), empty for a host
    /// that was never probed.
    pub digest: String,
    /// `--then`'s exit status, if it ran.
    pub then_status: Option<i32>,
    /// `--then`'s last lines, or why it could not run.
    pub then_output: String,
}

/// Reads a `--report` CSV, checking the header is exactly the contract's.
pub fn read_report(path: &Path) -> Vec<ReportRow> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("read report {}: {e}", path.display()));
    let header = text.lines().next().unwrap_or_default();
    assert_eq!(
        header.trim(),
        "host,from,start_s,end_s,bytes,status,error,digest,then_status,then_output",
        "report header of {}",
        path.display()
    );
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .collect::<Result<Vec<ReportRow>, _>>()
        .unwrap_or_else(|e| panic!("parse report {}: {e}\n{text}", path.display()))
}

/// The report row of `host`.
pub fn row<'a>(rows: &'a [ReportRow], host: &str) -> &'a ReportRow {
    rows.iter()
        .find(|r| r.host == host || r.host.ends_with(&format!("@{host}")))
        .unwrap_or_else(|| panic!("no report row for {host} in {rows:#?}"))
}

/// One host's link as sampled: its transmit rate over each second of the run, in Mbit/s.
pub struct Samples {
    /// The host, or "the controller".
    pub name: String,
    /// Mbit/s transmitted in each second of the run.
    pub mbit: Vec<f64>,
}

impl Samples {
    /// The samples from the first to the last second the link carried a tenth of `cap` or
    /// more: the seconds this host was uploading.
    pub fn active(&self, cap: f64) -> &[f64] {
        let busy = |r: &f64| *r >= cap / 10.0;
        match (
            self.mbit.iter().position(busy),
            self.mbit.iter().rposition(busy),
        ) {
            (Some(a), Some(b)) => &self.mbit[a..=b],
            _ => &[],
        }
    }

    /// The mean rate over the seconds it was uploading (see [`Samples::active`]), less the
    /// first and the last, each only partly busy; NaN for fewer than three such seconds.
    pub fn busy_mean(&self, cap: f64) -> f64 {
        let active = self.active(cap);
        if active.len() < 3 {
            return f64::NAN;
        }
        let inner = &active[1..active.len() - 1];
        inner.iter().sum::<f64>() / inner.len() as f64
    }

    /// The highest mean rate over any 5 s of the seconds it was uploading.
    pub fn worst_5s(&self, cap: f64) -> f64 {
        self.active(cap)
            .windows(5)
            .map(|w| w.iter().sum::<f64>() / 5.0)
            .fold(f64::NAN, f64::max)
    }

    /// Checks the cap: over the seconds it was uploading, less the first and the last (each
    /// only partly busy), the link averaged `cap` within 10%; and no 5 s averaged above
    /// 110% of it.
    pub fn assert_capped(&self, cap: f64, what: &str) {
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
        let mean = self.busy_mean(cap);
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
pub fn run_sampled(
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

/// What a tree holds, entry by entry: type, mode, size, link target and content digest.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut items: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        items.sort();
        for p in items {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {mode:o}")
            } else {
                format!("file {mode:o} {} {}", m.len(), sha256_file(&p))
            };
            out.insert(rel, what);
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let m = std::fs::metadata(root).unwrap();
    out.insert(
        ".".into(),
        format!("dir {:o}", m.permissions().mode() & 0o7777),
    );
    walk(root, root, &mut out);
    out
}

/// The tree under `root`: 2,000 small files of 1–64 KiB in 40 directories, three
/// of 50 MiB, a sparse file of 1 GiB holding 16 MiB of data, a symlink, an empty directory,
/// and modes 0600, 0644 and 0755. Returns the bytes of data, holes excluded.
pub fn make_tree(root: &Path) -> u64 {
    let mut data = 0u64;
    for d in 0..40 {
        let dir = root.join(format!("layer{d:02}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let k = d * 50 + f;
            let size = 1024 + (k * 7919) % (63 * 1024);
            let p = dir.join(format!("f{k:04}.bin"));
            random_file(&p, size, 1000 + k as u64);
            let mode = [0o600, 0o644, 0o755][k % 3];
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            data += size as u64;
        }
    }
    std::fs::create_dir_all(root.join("weights")).unwrap();
    for s in 0..3 {
        random_file(
            &root.join(format!("weights/shard-{s}.safetensors")),
            50 * (1 << 20),
            77 + s,
        );
        data += 50 * (1 << 20) as u64;
    }
    let disk = std::fs::File::create(root.join("disk.raw")).unwrap();
    disk.set_len(1 << 30).unwrap();
    let mut rng_block = vec![0u8; 1 << 20];
    for k in 0..16u64 {
        use rand::{RngCore as _, SeedableRng as _};
        rand_chacha::ChaCha8Rng::seed_from_u64(500 + k).fill_bytes(&mut rng_block);
        std::os::unix::fs::FileExt::write_all_at(&disk, &rng_block, k * (64 << 20)).unwrap();
    }
    data += 16 << 20;
    std::fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("weights/shard-0.safetensors", root.join("latest")).unwrap();
    std::fs::write(root.join("config.json"), b"{\"layers\": 40}\n").unwrap();
    data + 15
}
