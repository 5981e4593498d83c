//! The lab: real sshd hosts on one Linux machine, with no route out (DESIGN.md §3).
//!
//! A [`Lab`] owns one network namespace per host plus one for the controller (the source
//! host), each joined by a veth pair to a bridge that has no address in the root namespace.
//! No namespace has a default route, so nothing in the lab can reach anything but the lab.
//! Every host runs its own `/usr/sbin/sshd` inside its namespace and under `unshare -m`, with:
//!
//! - the host's own data directory bind-mounted over the common mountpoint [`Lab::mnt`], so
//!   every host has its own files at the same destination path;
//! - a per-host home directory bind-mounted over `/root`, and the lab's ssh directory over
//!   `/root/.ssh`, so hops that run `ssh` on a host find a config, a key and a known_hosts,
//!   the real `~/.ssh` is never touched, and anything a remote shell drops into its working
//!   directory is visible to the test;
//! - in that home, Debian's stock root dotfiles (`/usr/share/base-files/dot.bashrc` and
//!   `dot.profile`), as a fresh Debian host has them, so that what a login costs is what it
//!   costs users and nothing of this machine's own `~/.bashrc` (which runs pyenv) leaks in;
//!   or, with [`Login::Slow`], a `.bashrc` whose unguarded first lines cost what conda,
//!   pyenv or nvm lines cost, for the hosts of users who have one.
//!
//! Keys are generated at start. [`Lab::ssh_config`] names the hosts `h1..hN`; the
//! controller uses it with `-F`. Everything is torn down by `Drop`, even when a test panics,
//! and [`Lab::start`] first sweeps leftovers of earlier runs whose process is gone.
//!
//! Labs of one process are serialised by a process-wide lock: they share 2 CPU cores, and
//! ssh encryption is what the cores are spent on. Labs of different processes use different
//! names and subnets, so they never collide.
//!
//! Shared by several test targets and the benchmark, each of which uses a different part.
#![allow(dead_code)]

pub mod support;

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Prefix of every network namespace and lab directory name; the sweep keys on it.
const NS_PREFIX: &str = "bounce-lab-";
/// Prefix of every interface name in the root namespace; the sweep keys on it.
const IF_PREFIX: &str = "bl";
/// The sshd binary; sshd refuses to re-exec itself from a relative path.
const SSHD: &str = "/usr/sbin/sshd";
/// Debian's stock root dotfiles, which every host's home starts with.
const STOCK_BASHRC: &str = "/usr/share/base-files/dot.bashrc";
const STOCK_PROFILE: &str = "/usr/share/base-files/dot.profile";
/// The unguarded lines [`Login::Slow`] puts at the top of the stock `.bashrc`: about a
/// hundred short processes, as `eval "$(pyenv init -)"` and its like start, in every ssh
/// session (bash reads `~/.bashrc` for the commands sshd runs, interactive or not).
const SLOW_LOGIN_LINES: &str =
    "# The lab's slow login (tests/lab/mod.rs): no guard for non-interactive shells.\n\
     for _ in 1 2 3 4 5 6 7 8 9 10; do for _ in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done; done\n";
/// Tools the lab cannot work without.
const TOOLS: &[&str] = &[
    "ip",
    "tc",
    "ssh",
    "ssh-keygen",
    "unshare",
    "mount",
    "umount",
];

/// The lab's subnet is a /22, and its hosts' addresses start at .10 of it.
const SUBNET_PREFIX: u32 = 22;
/// The most hosts a lab holds: its subnet's addresses, and interface names of 15 characters
/// (`bl` + pid + `-` + counter + `v999p`).
pub const MAX_HOSTS: usize = 999;

static LAB_LOCK: Mutex<()> = Mutex::new(());
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// What lab to build.
#[derive(Clone, Debug, Default)]
pub struct LabConfig {
    /// Number of remote hosts, named `h1..=hN`.
    pub hosts: usize,
    /// A `tc tbf` rate such as `"100mbit"` on every link, both ways; `None` leaves links
    /// uncapped.
    pub rate: Option<String>,
    /// Hosts whose data directory is a tmpfs of the given size (such as `"1m"`): a full disk.
    pub tmpfs: Vec<(usize, String)>,
    /// Hosts whose sshd is not started: a host that is down from the beginning.
    pub no_sshd: Vec<usize>,
    /// ssh and sshd as Debian ships them, as on users' machines: sshd_config is Debian's
    /// default plus only what the lab needs (address, keys, pid file), and the ssh config
    /// names only the user key and the known_hosts, then includes the system's
    /// `/etc/ssh/ssh_config` (GSSAPI on, no `IdentitiesOnly`, no `LogLevel ERROR`). Address
    /// the hosts by IP ([`Lab::host_addrs`]) to be like users too.
    pub stock: bool,
    /// What the hosts' root dotfiles cost a login.
    pub login: Login,
    /// sshd logs at `LogLevel VERBOSE` (first in its config, so it wins), whose "Starting
    /// session" lines count the sessions a run opens on each host ([`Lab::sshd_log`]).
    pub verbose_log: bool,
}

/// The dotfiles in every host's home, which bash reads for every command sshd runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Login {
    /// Debian's stock `.bashrc` and `.profile`, which run no command.
    #[default]
    Stock,
    /// The stock ones with [`SLOW_LOGIN_LINES`] at the top of `.bashrc`.
    Slow,
}

impl LabConfig {
    /// `n` uncapped hosts, all up.
    pub fn hosts(n: usize) -> Self {
        LabConfig {
            hosts: n,
            ..LabConfig::default()
        }
    }

    /// Caps every link at `rate` (a `tc` rate such as `"100mbit"`).
    pub fn rate(mut self, rate: &str) -> Self {
        self.rate = Some(rate.to_string());
        self
    }

    /// Gives host `i` a tmpfs data directory of `size` (a `mount -o size=` value).
    pub fn tmpfs(mut self, i: usize, size: &str) -> Self {
        self.tmpfs.push((i, size.to_string()));
        self
    }

    /// Leaves host `i` without sshd.
    pub fn no_sshd(mut self, i: usize) -> Self {
        self.no_sshd.push(i);
        self
    }

    /// Stock ssh and sshd configurations (see [`LabConfig::stock`]).
    pub fn stock(mut self) -> Self {
        self.stock = true;
        self
    }

    /// sshd at `LogLevel VERBOSE` (see [`LabConfig::verbose_log`]).
    pub fn verbose_log(mut self) -> Self {
        self.verbose_log = true;
        self
    }

    /// Hosts whose `.bashrc` costs a login what conda, pyenv or nvm lines do (see
    /// [`Login::Slow`]).
    pub fn slow_login(mut self) -> Self {
        self.login = Login::Slow;
        self
    }
}

/// A running lab. Dropping it tears everything down.
pub struct Lab {
    id: String,
    ifid: String,
    dir: PathBuf,
    mnt: PathBuf,
    net: [u8; 3],
    hosts: usize,
    sshd: Vec<Option<Child>>,
    tmpfs: Vec<PathBuf>,
    bridge_made: bool,
    netns_made: Vec<String>,
    login: Login,
    _serial: MutexGuard<'static, ()>,
}

/// Why the lab cannot run here, or `None` when it can.
fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("the lab needs root (network namespaces, bind mounts, tc)".into());
    }
    for dotfile in [STOCK_BASHRC, STOCK_PROFILE] {
        if !Path::new(dotfile).is_file() {
            return Some(format!("{dotfile} is missing (apt-get install base-files)"));
        }
    }
    if !Path::new(SSHD).is_file() {
        return Some(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ));
    }
    for tool in TOOLS {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not on PATH (see notes/lab-ci.md)"));
        }
    }
    None
}

fn is_root() -> bool {
    // The effective uid is the fourth number on the Uid line.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Returns `true` when the lab can run. Otherwise prints a loud reason and returns `false`,
/// or panics when the env var `CI` is set: CI runs as root and must never skip.
pub fn available(test: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("lab test {test} cannot run and CI is set, so it fails: {reason}");
            }
            // Straight to the process's stderr: libtest captures `eprintln!` of passing
            // tests, which would make this skip silent.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED lab test {test}: {reason}\n\
                 !!! (it runs as root with openssh-server and iproute2; in CI it fails)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            false
        }
    }
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and ignores its outcome: teardown goes on whatever fails.
fn quiet(cmd: &mut Command) -> Option<Output> {
    cmd.stdin(Stdio::null()).output().ok()
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every IPv4 network the root namespace already uses, as (address, prefix length).
fn root_networks() -> Vec<(u32, u32)> {
    let mut nets = Vec::new();
    let addrs = sh(&mut cmd("ip", &["-4", "-o", "addr", "show"]));
    let routes = sh(&mut cmd("ip", &["-4", "route", "show", "table", "all"]));
    let words = addrs
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            w.next()
        })
        .chain(routes.lines().filter_map(|l| {
            // Skip the route type keyword (local, broadcast, ...) when there is one.
            l.split_whitespace().find(|w| w.contains('.'))
        }))
        .map(str::to_string)
        .collect::<Vec<_>>();
    for w in words {
        let (a, len) = w.split_once('/').unwrap_or((w.as_str(), "32"));
        if let (Ok(a), Ok(len)) = (a.parse::<Ipv4Addr>(), len.parse::<u32>()) {
            nets.push((u32::from(a), len.min(32)));
        }
    }
    nets
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.0 & mask == b.0 & mask
}

/// Removes what earlier runs left behind: namespaces, interfaces, mounts and directories
/// whose owning process no longer exists.
pub fn sweep_leftovers() {
    let me = std::process::id();
    let dead = |pid: u32| pid != me && !pid_alive(pid);

    // Namespaces are `bounce-lab-<pid>-<n>-<host>`. Their processes must die first: a
    // namespace with a live sshd in it would stay reachable through that process.
    let list = quiet(&mut cmd("ip", &["netns", "list"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if dead(pid) {
            eprintln!("lab: sweeping leftover namespace {name}");
            kill_netns_processes(name);
            quiet(&mut cmd("ip", &["netns", "del", name]));
        }
    }

    // Interfaces are `bl<pid base36>-<n base36>...`, with a dash because base-36 digits
    // include x; deleting a bridge or one end of a veth removes it entirely.
    let links = quiet(&mut cmd("ip", &["-o", "link", "show"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        let Some(rest) = name.strip_prefix(IF_PREFIX) else {
            continue;
        };
        let Some((pid36, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = u32::from_str_radix(pid36, 36) else {
            continue;
        };
        if dead(pid) {
            eprintln!("lab: sweeping leftover interface {name}");
            quiet(&mut cmd("ip", &["link", "del", name]));
        }
    }

    // Lab directories are `<tmp>/bounce-lab-<pid>-<n>`; unmount tmpfs data dirs first.
    let tmp = std::env::temp_dir();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !dead(pid) {
            continue;
        }
        let path = entry.path();
        let prefix = format!("{}/", path.display());
        for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if m.starts_with(&prefix) {
                quiet(&mut cmd("umount", &["-l", m]));
            }
        }
        eprintln!("lab: sweeping leftover directory {}", path.display());
        let _ = fs::remove_dir_all(&path);
    }
}

fn netns_pids(ns: &str) -> Vec<u32> {
    quiet(&mut cmd("ip", &["netns", "pids", ns]))
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_netns_processes(ns: &str) {
    for pid in netns_pids(ns) {
        quiet(&mut cmd("kill", &["-KILL", &pid.to_string()]));
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn keygen(path: &Path, comment: &str) -> String {
    sh(cmd(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"],
    )
    .arg(path));
    let public = fs::read_to_string(path.with_extension("pub"))
        .unwrap_or_else(|e| panic!("read public key of {}: {e}", path.display()));
    public.trim().to_string()
}

impl Lab {
    /// Builds and starts a lab, or returns `None` after a loud message when it cannot run
    /// here (not root, tools missing). With `CI` set it panics instead of returning `None`.
    pub fn start(test: &str, cfg: LabConfig) -> Option<Lab> {
        if !available(test) {
            return None;
        }
        assert!(
            cfg.hosts <= MAX_HOSTS,
            "a lab holds at most {MAX_HOSTS} hosts, not {}",
            cfg.hosts
        );
        let serial = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        sweep_leftovers();

        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{pid}-{n}");
        // Interface names: "bl" + pid in base 36 (≤ 5) + "-" + counter (≤ 2) + a suffix
        // of ≤ 4 ("br", "v13", "vc") stays within the kernel's 15 characters.
        let ifid = format!("{IF_PREFIX}{}-{}", base36(pid), base36(n));
        let net = Self::pick_subnet(pid, n);
        let dir = std::env::temp_dir().join(format!("{NS_PREFIX}{id}"));
        let mnt = dir.join("mnt");

        let mut lab = Lab {
            id,
            ifid,
            dir,
            mnt,
            net,
            hosts: cfg.hosts,
            sshd: (0..=cfg.hosts).map(|_| None).collect(),
            tmpfs: Vec::new(),
            bridge_made: false,
            netns_made: Vec::new(),
            login: cfg.login,
            _serial: serial,
        };
        // From here on, a panic drops `lab` and tears down whatever was built.
        lab.build_files(&cfg);
        lab.build_network(cfg.rate.as_deref());
        for i in 1..=cfg.hosts {
            if !cfg.no_sshd.contains(&i) {
                lab.start_sshd(i);
            }
        }
        Some(lab)
    }

    /// A 10.x.y.0/22 derived from the pid and the counter, skipping any network the root
    /// namespace uses: room for [`MAX_HOSTS`] hosts. The lab's namespaces only see their own
    /// bridge, so the subnet only has to be distinct from what the root namespace routes.
    fn pick_subnet(pid: u32, n: u32) -> [u8; 3] {
        let used = root_networks();
        let mut h = pid
            .wrapping_mul(2_654_435_761)
            .wrapping_add(n.wrapping_mul(40_503));
        for _ in 0..1000 {
            let net = [10, 200 + (h >> 8) as u8 % 50, (h as u8) & !3];
            let candidate = (
                u32::from(Ipv4Addr::new(net[0], net[1], net[2], 0)),
                SUBNET_PREFIX,
            );
            if used.iter().all(|u| u.1 == 0 || !overlaps(*u, candidate)) {
                return net;
            }
            h = h.wrapping_add(1);
        }
        panic!("no free 10.x.y.0/22 subnet for the lab");
    }

    fn build_files(&mut self, cfg: &LabConfig) {
        mkdir(&self.dir, 0o755);
        mkdir(&self.mnt, 0o755);
        // sshd's privilege separation directory.
        mkdir(Path::new("/run/sshd"), 0o755);
        let ssh = self.ssh_dir();
        mkdir(&ssh, 0o700);
        mkdir(&self.controller_home(), 0o700);
        let user_pub = keygen(&ssh.join("id_ed25519"), "bounce-lab user");
        write_file(
            &ssh.join("authorized_keys"),
            &format!("{user_pub}\n"),
            0o600,
        );

        let mut known = String::new();
        let mut config = String::from(
            "# Generated by the bounce lab; the controller uses it with -F, the hosts as\n\
             # /root/.ssh/config.\n",
        );
        for i in 1..=self.hosts {
            let hd = self.host_dir(i);
            mkdir(&hd, 0o755);
            mkdir(&self.data_dir(i), 0o755);
            mkdir(&self.home_dir(i), 0o700);
            mkdir(&self.home_dir(i).join(".ssh"), 0o700);
            for (name, contents) in Self::dotfiles(cfg.login) {
                write_file(&self.home_dir(i).join(name), &contents, 0o644);
            }
            let host_pub = keygen(&hd.join("ssh_host_ed25519_key"), &self.host(i));
            let key = host_pub.split_whitespace().take(2).collect::<Vec<_>>();
            known.push_str(&format!(
                "{},{} {}\n",
                self.host(i),
                self.addr(i),
                key.join(" ")
            ));
            config.push_str(&format!(
                "Host {}\n    HostName {}\n",
                self.host(i),
                self.addr(i)
            ));
            // StrictModes would refuse the lab's keys, which live under the world-writable
            // temporary directory; nothing else here departs from the stock configuration.
            let lab_part = format!(
                "Port 22\n\
                 ListenAddress {addr}\n\
                 HostKey {key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {ssh}/authorized_keys\n\
                 StrictModes no\n{verbose}",
                addr = self.addr(i),
                key = hd.join("ssh_host_ed25519_key").display(),
                pid = hd.join("sshd.pid").display(),
                ssh = ssh.display(),
                verbose = if cfg.verbose_log {
                    "LogLevel VERBOSE\n"
                } else {
                    ""
                },
            );
            let rest = if cfg.stock {
                // Debian 12's /etc/ssh/sshd_config, all of it that is not a comment.
                "Include /etc/ssh/sshd_config.d/*.conf\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM yes\n\
                 X11Forwarding yes\n\
                 PrintMotd no\n\
                 AcceptEnv LANG LC_*\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n"
            } else {
                "PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 AllowAgentForwarding yes\n\
                 AllowTcpForwarding no\n\
                 X11Forwarding no\n\
                 PrintMotd no\n\
                 MaxSessions 100\n\
                 MaxStartups 100:30:200\n\
                 ClientAliveInterval 5\n\
                 LogLevel ERROR\n\
                 Subsystem sftp internal-sftp\n"
            };
            write_file(&hd.join("sshd_config"), &format!("{lab_part}{rest}"), 0o600);
        }
        if cfg.stock {
            // Only what points at the lab's key and known_hosts instead of the real ~/.ssh;
            // the rest is the system's (Debian: GSSAPIAuthentication yes, HashKnownHosts).
            config.push_str(&format!(
                "Host *\n    IdentityFile {ssh}/id_ed25519\n    \
                 UserKnownHostsFile {ssh}/known_hosts\n\
                 Include /etc/ssh/ssh_config\n",
                ssh = ssh.display()
            ));
        } else {
            config.push_str(&format!(
                "Host *\n    User root\n    IdentityFile {ssh}/id_ed25519\n    \
                 UserKnownHostsFile {ssh}/known_hosts\n    GlobalKnownHostsFile /dev/null\n    \
                 StrictHostKeyChecking yes\n    BatchMode yes\n    IdentitiesOnly yes\n    \
                 ConnectTimeout 5\n",
                ssh = ssh.display()
            ));
        }
        write_file(&ssh.join("known_hosts"), &known, 0o600);
        write_file(&ssh.join("config"), &config, 0o600);

        for (i, size) in &cfg.tmpfs {
            let data = self.data_dir(*i);
            sh(cmd(
                "mount",
                &["-t", "tmpfs", "-o", &format!("size={size},mode=0755")],
            )
            .arg("tmpfs")
            .arg(&data));
            self.tmpfs.push(data);
        }
    }

    fn build_network(&mut self, rate: Option<&str>) {
        let bridge = self.bridge();
        sh(&mut cmd("ip", &["link", "add", &bridge, "type", "bridge"]));
        self.bridge_made = true;
        // No address on the bridge: the root namespace stays out of the lab.
        sh(&mut cmd("ip", &["link", "set", &bridge, "up"]));
        for i in 0..=self.hosts {
            let ns = self.netns(i);
            let outer = self.veth(i);
            sh(&mut cmd("ip", &["netns", "add", &ns]));
            self.netns_made.push(ns.clone());
            let tmp_peer = format!("{}p", outer);
            sh(&mut cmd(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", &tmp_peer, "netns", &ns,
                ],
            ));
            sh(&mut cmd(
                "ip",
                &["-n", &ns, "link", "set", &tmp_peer, "name", "eth0"],
            ));
            let cidr = format!("{}/{SUBNET_PREFIX}", self.addr_of(i));
            sh(&mut cmd(
                "ip",
                &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"],
            ));
            sh(&mut cmd("ip", &["-n", &ns, "link", "set", "lo", "up"]));
            sh(&mut cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"]));
            sh(&mut cmd("ip", &["link", "set", &outer, "master", &bridge]));
            sh(&mut cmd("ip", &["link", "set", &outer, "up"]));
            if let Some(rate) = rate {
                let tbf = [
                    "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms",
                ];
                let mut inner = vec!["-n", ns.as_str(), "qdisc", "add", "dev", "eth0"];
                inner.extend(tbf);
                sh(&mut cmd("tc", &inner));
                let mut outer_args = vec!["qdisc", "add", "dev", outer.as_str()];
                outer_args.extend(tbf);
                sh(&mut cmd("tc", &outer_args));
            }
        }
    }

    /// Starts (or restarts) host `i`'s sshd and waits until it listens.
    pub fn start_sshd(&mut self, i: usize) {
        assert!((1..=self.hosts).contains(&i), "no host {i} in this lab");
        if let Some(mut old) = self.sshd[i].take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let hd = self.host_dir(i);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(hd.join("sshd.log"))
            .expect("open sshd log");
        // `ip netns exec`, `unshare` and `sh` all exec, so the child's pid is sshd's.
        let script = "mount --bind \"$1\" /root && mount --bind \"$2\" /root/.ssh && \
                      mount --bind \"$3\" \"$4\" && exec \"$5\" -D -e -f \"$6\"";
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns(i)])
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ])
            .arg("sh")
            .arg(self.home_dir(i))
            .arg(self.ssh_dir())
            .arg(self.data_dir(i))
            .arg(&self.mnt)
            .arg(SSHD)
            .arg(hd.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup sshd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sshd for {}: {e}", self.host(i)));
        let pid = child.id();
        self.sshd[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // /proc/<pid>/net/tcp is that process's namespace's view: port 22 (0016) in
            // state LISTEN (0A).
            let tcp = fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
            if tcp.lines().any(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(":0016") && f[3] == "0A"
            }) {
                return;
            }
            if let Some(Ok(Some(status))) = self.sshd[i].as_mut().map(|c| c.try_wait()) {
                panic!(
                    "sshd of {} exited with {status}: {}",
                    self.host(i),
                    fs::read_to_string(hd.join("sshd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!("sshd of {} does not listen after 10 s", self.host(i));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills every process of host `i` (its sshd and all its sessions): the host is down.
    pub fn stop_sshd(&mut self, i: usize) {
        if let Some(mut child) = self.sshd[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_netns_processes(&self.netns(i));
    }

    /// Takes host `i`'s link down (`ip link set eth0 down` in its namespace).
    pub fn link_down(&self, i: usize) {
        sh(&mut cmd(
            "ip",
            &["-n", &self.netns(i), "link", "set", "eth0", "down"],
        ));
    }

    /// Brings host `i`'s link back up, and waits (up to 10 s) until the kernel says it is:
    /// right after `ip link set up` a veth can still be without carrier, and a connection
    /// tried then is lost.
    pub fn link_up(&self, i: usize) {
        let ns = self.netns(i);
        sh(&mut cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let show = sh(&mut cmd("ip", &["-n", &ns, "link", "show", "eth0"]));
            if show.contains("state UP") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "eth0 of {} is not up 10 s after `ip link set up`: {show}",
                self.host(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Caps host `i`'s link at `rate` both ways from now on (`tc qdisc replace`, the same
    /// `tbf` as [`LabConfig::rate`]): a host slower than the rest.
    pub fn set_rate(&self, i: usize, rate: &str) {
        let tbf = [
            "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms",
        ];
        let ns = self.netns(i);
        let mut inner = vec!["-n", ns.as_str(), "qdisc", "replace", "dev", "eth0"];
        inner.extend(tbf);
        sh(&mut cmd("tc", &inner));
        let outer = self.veth(i);
        let mut outer_args = vec!["qdisc", "replace", "dev", outer.as_str()];
        outer_args.extend(tbf);
        sh(&mut cmd("tc", &outer_args));
    }

    /// Bytes namespace `i` (0 = controller) has received on its eth0.
    pub fn rx_bytes(&self, i: usize) -> u64 {
        self.eth0_counter(i, "rx_bytes")
    }

    /// Bytes the controller's namespace has transmitted on its eth0.
    pub fn controller_tx_bytes(&self) -> u64 {
        self.tx_bytes(0)
    }

    /// Bytes namespace `i` (0 = controller) has transmitted on its eth0.
    pub fn tx_bytes(&self, i: usize) -> u64 {
        self.eth0_counter(i, "tx_bytes")
    }

    fn eth0_counter(&self, i: usize, name: &str) -> u64 {
        let out = sh(&mut cmd(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns(i),
                "cat",
                &format!("/sys/class/net/eth0/statistics/{name}"),
            ],
        ));
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name} of {}: {e}: {out:?}", self.netns(i)))
    }

    /// Processes running in host `i`'s namespace (0 = controller).
    pub fn pids(&self, i: usize) -> Vec<u32> {
        netns_pids(&self.netns(i))
    }

    /// The pid of host `i`'s listening sshd, if it runs.
    pub fn sshd_pid(&self, i: usize) -> Option<u32> {
        self.sshd[i].as_ref().map(Child::id)
    }

    /// Waits up to `timeout` until host `i` runs nothing but its listening sshd, and
    /// returns the pids of whatever else is still there.
    pub fn settle_processes(&self, i: usize, timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let listener = self.sshd_pid(i);
            let extra: Vec<u32> = self
                .pids(i)
                .into_iter()
                .filter(|p| Some(*p) != listener)
                .collect();
            if extra.is_empty() || Instant::now() > deadline {
                return extra;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A command that runs `program` inside the controller's namespace, with its working
    /// directory in the lab so that anything it drops there is seen.
    pub fn controller(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns(0)])
            .arg(program)
            .current_dir(self.controller_home());
        c
    }

    /// `ssh -F <lab config> <host> <remote>` from the controller's namespace.
    pub fn ssh(&self, host: &str, remote: &str) -> Command {
        let mut c = self.controller("ssh");
        c.arg("-F").arg(self.ssh_config()).arg(host).arg(remote);
        c
    }

    /// Host `i`'s name in the ssh config: `h<i>`.
    pub fn host(&self, i: usize) -> String {
        format!("h{i}")
    }

    /// The names of hosts `1..=n`.
    pub fn host_names(&self, n: usize) -> Vec<String> {
        (1..=n).map(|i| self.host(i)).collect()
    }

    /// The addresses of hosts `1..=n`, as a user of a fleet without names writes them.
    pub fn host_addrs(&self, n: usize) -> Vec<String> {
        (1..=n).map(|i| self.addr(i).to_string()).collect()
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts
    }

    /// Host `i`'s address (0 = controller).
    pub fn addr_of(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.net;
        let base = u32::from(Ipv4Addr::new(a, b, c, 0));
        Ipv4Addr::from(base + if i == 0 { 1 } else { 10 + i as u32 })
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.addr_of(i)
    }

    /// The ssh config naming `h1..hN`, for `-F`.
    pub fn ssh_config(&self) -> PathBuf {
        self.ssh_dir().join("config")
    }

    /// The lab ssh directory (config, user key, known_hosts, authorized_keys).
    pub fn ssh_dir(&self) -> PathBuf {
        self.dir.join("ssh")
    }

    /// The mountpoint that every host sees as its own data directory: destination paths
    /// live under it. In the root namespace it stays empty.
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// A destination path under [`Lab::mnt`], as the hosts see it.
    pub fn dest(&self, rel: &str) -> String {
        format!("{}/{rel}", self.mnt.display())
    }

    /// Host `i`'s data directory, as the root namespace (the test) sees it.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.host_dir(i).join("data")
    }

    /// Where the file at destination `rel` of host `i` is, seen from the root namespace.
    pub fn host_file(&self, i: usize, rel: &str) -> PathBuf {
        self.data_dir(i).join(rel)
    }

    /// Host `i`'s home directory (its `/root`), seen from the root namespace.
    pub fn home_dir(&self, i: usize) -> PathBuf {
        self.host_dir(i).join("home")
    }

    /// The controller's working directory.
    pub fn controller_home(&self) -> PathBuf {
        self.dir.join("ctl")
    }

    /// The lab's directory (everything the lab writes is under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A scratch directory for test inputs (source files, reports).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.join("scratch");
        mkdir(&p, 0o755);
        p
    }

    /// Empties every host's data directory, for the next run on the same lab.
    pub fn clear_data(&self) {
        for i in 1..=self.hosts {
            let d = self.data_dir(i);
            if let Ok(entries) = fs::read_dir(&d) {
                for e in entries.flatten() {
                    let p = e.path();
                    let r = if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    r.unwrap_or_else(|err| panic!("clear {}: {err}", p.display()));
                }
            }
        }
    }

    /// Every path under host `i`'s data directory, relative to it, sorted.
    pub fn data_tree(&self, i: usize) -> Vec<String> {
        let root = self.data_dir(i);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// Every path under host `i`'s home, except the bound ssh directory and the dotfiles the
    /// lab put there while they are as it wrote them, sorted.
    pub fn home_tree(&self, i: usize) -> Vec<String> {
        let root = self.home_dir(i);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        let dotfiles = Self::dotfiles(self.login);
        out.retain(|p| {
            p != ".ssh"
                && !dotfiles.iter().any(|(name, contents)| {
                    p == name && fs::read_to_string(root.join(name)).is_ok_and(|c| c == *contents)
                })
        });
        out.sort();
        out
    }

    /// The dotfiles every host's home starts with, by name (see [`Login`]).
    pub fn dotfiles(login: Login) -> Vec<(&'static str, String)> {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_else(|e| panic!("read {p}: {e}"));
        let bashrc = read(STOCK_BASHRC);
        let bashrc = match login {
            Login::Stock => bashrc,
            Login::Slow => format!("{SLOW_LOGIN_LINES}{bashrc}"),
        };
        vec![(".bashrc", bashrc), (".profile", read(STOCK_PROFILE))]
    }

    /// Host `i`'s sshd log (its stderr, with `-e`), as the root namespace sees it.
    pub fn sshd_log(&self, i: usize) -> PathBuf {
        self.host_dir(i).join("sshd.log")
    }

    /// What the hosts' dotfiles cost a login.
    pub fn login(&self) -> Login {
        self.login
    }

    /// Every path under the whole lab directory whose last component is one of `names`.
    pub fn find_named(&self, names: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.dir, &self.dir, &mut out);
        out.retain(|p| p.rsplit('/').next().is_some_and(|n| names.contains(&n)));
        out
    }

    fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.join(self.host(i))
    }

    fn netns(&self, i: usize) -> String {
        if i == 0 {
            format!("{NS_PREFIX}{}-ctl", self.id)
        } else {
            format!("{NS_PREFIX}{}-h{i}", self.id)
        }
    }

    fn bridge(&self) -> String {
        format!("{}br", self.ifid)
    }

    fn veth(&self, i: usize) -> String {
        if i == 0 {
            format!("{}vc", self.ifid)
        } else {
            format!("{}v{i}", self.ifid)
        }
    }

    /// The namespace name of host `i` (0 = controller), for `ip -n`.
    pub fn netns_name(&self, i: usize) -> String {
        self.netns(i)
    }

    /// The bridge's name in the root namespace.
    pub fn bridge_name(&self) -> String {
        self.bridge()
    }

    /// The root-namespace end of host `i`'s veth (0 = controller).
    pub fn veth_name(&self, i: usize) -> String {
        self.veth(i)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &p, out);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 1..=self.hosts {
            if let Some(mut child) = self.sshd[i].take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Sessions, hop processes and the controller's ssh masters live on after sshd.
        for ns in &self.netns_made {
            kill_netns_processes(ns);
        }
        // Deleting a namespace destroys its veth end only asynchronously; deleting the root
        // end removes the pair at once, so nothing is left when drop returns.
        for i in 0..=self.hosts {
            quiet(&mut cmd("ip", &["link", "del", &self.veth_name(i)]));
        }
        for ns in &self.netns_made {
            quiet(&mut cmd("ip", &["netns", "del", ns]));
        }
        if self.bridge_made {
            quiet(&mut cmd("ip", &["link", "del", &self.bridge()]));
        }
        for m in &self.tmpfs {
            if quiet(cmd("umount", &[]).arg(m)).is_none_or(|o| !o.status.success()) {
                quiet(cmd("umount", &["-l"]).arg(m));
            }
        }
        if std::env::var_os("BOUNCE_LAB_KEEP").is_some() {
            eprintln!("lab: keeping {} (BOUNCE_LAB_KEEP)", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            let _ = writeln!(
                std::io::stderr(),
                "lab: cannot remove {}: {e}",
                self.dir.display()
            );
        }
    }
}
