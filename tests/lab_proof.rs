//! The lab itself, proven with plain `ssh`: hosts accept the lab key and nothing else, each
//! has its own disk at the same path, hops between hosts bypass the controller, there is no
//! route out, links are capped when asked, faults work, and teardown leaves nothing.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.

mod lab;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use lab::support::{assert_same, processes_started, random_file, run_logged};
use lab::{sh, Lab, LabConfig};

const MIB: usize = 1 << 20;

fn pipe_file(cmd: &mut Command, path: &std::path::Path) -> std::process::Output {
    let file = fs::File::open(path).expect("open source");
    cmd.stdin(Stdio::from(file));
    run_logged(cmd)
}

#[test]
fn lab_hosts_accept_ssh_and_have_separate_disks() {
    let Some(lab) = Lab::start(
        "lab_hosts_accept_ssh_and_have_separate_disks",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("src.bin");
    random_file(&src, 2 * MIB, 1);
    let dest = lab.dest("f.bin");

    // Controller -> h1: only h1 gets the file, and the root namespace's view of the
    // mountpoint stays empty.
    let tx0 = lab.controller_tx_bytes();
    let out = pipe_file(&mut lab.ssh("h1", &format!("cat > '{dest}'")), &src);
    assert!(out.status.success(), "ssh h1 cat failed");
    let sent = lab.controller_tx_bytes() - tx0;
    assert_same(&lab, 1, "f.bin", &src);
    assert!(lab.data_tree(2).is_empty(), "h2 got {:?}", lab.data_tree(2));
    assert!(lab.data_tree(3).is_empty(), "h3 got {:?}", lab.data_tree(3));
    assert_eq!(
        fs::read_dir(lab.mnt()).unwrap().count(),
        0,
        "root mnt not empty"
    );
    assert!(
        sent as usize >= 2 * MIB,
        "controller sent {sent} bytes for a 2 MiB copy"
    );

    // h1 -> h2, started from the controller but run on h1 with h1's /root/.ssh: the bytes
    // go h1 -> h2 and the controller's link carries only the ssh chatter.
    let tx1 = lab.controller_tx_bytes();
    let h1_tx1 = lab.tx_bytes(1);
    let out = run_logged(
        lab.ssh("h1", &format!("ssh h2 \"cat > '{dest}'\" < '{dest}'"))
            .stdin(Stdio::null()),
    );
    assert!(out.status.success(), "hop h1 -> h2 failed");
    assert_same(&lab, 2, "f.bin", &src);
    assert!(lab.data_tree(3).is_empty(), "h3 got {:?}", lab.data_tree(3));
    let ctl = lab.controller_tx_bytes() - tx1;
    let h1 = lab.tx_bytes(1) - h1_tx1;
    assert!(
        ctl < 256 * 1024,
        "the controller sent {ctl} bytes during a hop it is not part of"
    );
    assert!(
        h1 as usize >= 2 * MIB,
        "h1 sent only {h1} bytes for the hop"
    );

    // Nothing lands in the hosts' homes (their /root) or in the real ~/.ssh.
    for i in 1..=3 {
        let home = lab.home_tree(i);
        assert!(
            home.is_empty() || home == [".ssh"],
            "h{i} home holds {home:?}"
        );
    }
}

/// What a session on host `i` sees of its home: `$HOME`, `$PATH`, the names in it and its
/// `.bashrc`, as bash runs a command for sshd (which reads `~/.bashrc` for it).
fn session_home(lab: &Lab, i: usize) -> (String, String, String, String) {
    let out = run_logged(&mut lab.ssh(
        &lab.host(i),
        "printf '%s\\n' \"$HOME\" \"$PATH\"; ls -A ~ | tr '\\n' ' '; echo; cat ~/.bashrc",
    ));
    assert!(out.status.success(), "ssh h{i} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.splitn(4, '\n');
    let mut next = || lines.next().unwrap_or_default().to_string();
    (next(), next(), next(), next())
}

#[test]
fn hosts_log_in_with_debians_stock_dotfiles_and_nothing_of_this_machines_home() {
    let Some(lab) = Lab::start(
        "hosts_log_in_with_debians_stock_dotfiles_and_nothing_of_this_machines_home",
        LabConfig::hosts(2).stock(),
    ) else {
        return;
    };
    let stock = fs::read_to_string("/usr/share/base-files/dot.bashrc").expect("stock bashrc");
    for i in 1..=2 {
        let (home, path, names, bashrc) = session_home(&lab, i);
        assert_eq!(home, "/root", "h{i}'s HOME");
        assert_eq!(
            names.trim(),
            ".bashrc .profile .ssh",
            "h{i}'s home holds {names:?}"
        );
        assert_eq!(bashrc, stock, "h{i}'s .bashrc is not Debian's stock one");
        // This machine's own ~/.bashrc puts pyenv and cargo on PATH; a host's must not.
        assert!(
            !path.contains("pyenv") && !path.contains(".cargo"),
            "h{i}'s PATH has this machine's dotfiles in it: {path}"
        );
        assert_eq!(
            lab.home_tree(i),
            Vec::<String>::new(),
            "h{i}'s home changed"
        );
    }
    drop(lab);

    // The slow login keeps the stock lines under its unguarded ones, and costs what it says:
    // its hundred processes run in every session, interactive or not.
    let Some(lab) = Lab::start(
        "hosts_log_in_with_debians_stock_dotfiles_and_nothing_of_this_machines_home (slow)",
        LabConfig::hosts(1).stock().slow_login(),
    ) else {
        return;
    };
    let (_, _, _, bashrc) = session_home(&lab, 1);
    assert!(
        bashrc.ends_with(&stock) && bashrc.len() > stock.len(),
        "the slow login's .bashrc is not its lines over the stock one: {bashrc:?}"
    );
    let started = |lab: &Lab| {
        let before = processes_started();
        let out = run_logged(&mut lab.ssh("h1", "true"));
        assert!(out.status.success(), "ssh h1 true failed");
        processes_started() - before
    };
    let slow = started(&lab);
    assert!(
        slow >= 100,
        "a session under the slow login started {slow} processes, not its hundred"
    );
}

#[test]
fn lab_has_no_route_out_and_an_addressless_bridge() {
    let Some(lab) = Lab::start(
        "lab_has_no_route_out_and_an_addressless_bridge",
        LabConfig::hosts(2),
    ) else {
        return;
    };
    let bridge_addrs =
        sh(Command::new("ip").args(["-4", "addr", "show", "dev", &lab.bridge_name()]));
    assert!(
        !bridge_addrs.contains("inet "),
        "the bridge has an address in the root namespace: {bridge_addrs}"
    );
    let subnet = {
        let a = lab.addr_of(0).octets();
        format!("{}.{}.{}.0/22", a[0], a[1], a[2])
    };
    for i in 0..=2 {
        let ns = lab.netns_name(i);
        let routes = sh(Command::new("ip").args(["-n", &ns, "-4", "route", "show"]));
        let routes: Vec<&str> = routes.lines().collect();
        assert_eq!(routes.len(), 1, "{ns} routes: {routes:?}");
        assert!(routes[0].starts_with(&subnet), "{ns} routes: {routes:?}");
        let v6 = sh(Command::new("ip").args(["-n", &ns, "-6", "route", "show", "default"]));
        assert!(v6.trim().is_empty(), "{ns} has an IPv6 default route: {v6}");
    }
}

#[test]
fn lab_rejects_unknown_host_keys() {
    let Some(lab) = Lab::start("lab_rejects_unknown_host_keys", LabConfig::hosts(1)) else {
        return;
    };
    let ok = run_logged(lab.ssh("h1", "true").stdin(Stdio::null()));
    assert!(ok.status.success(), "the lab key and known_hosts must work");
    let empty = lab.scratch().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let strict = run_logged(
        lab.controller("ssh")
            .arg("-F")
            .arg(lab.ssh_config())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", empty.display()))
            .args(["h1", "true"])
            .stdin(Stdio::null()),
    );
    assert!(!strict.status.success(), "an unknown host key was accepted");
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("Host key verification failed"),
        "unexpected ssh error"
    );
}

#[test]
fn lab_caps_links_with_tbf_both_ways() {
    let Some(lab) = Lab::start(
        "lab_caps_links_with_tbf_both_ways",
        LabConfig::hosts(1).rate("20mbit"),
    ) else {
        return;
    };
    for i in 0..=1 {
        let inner =
            sh(Command::new("tc").args(["-n", &lab.netns_name(i), "qdisc", "show", "dev", "eth0"]));
        let outer = sh(Command::new("tc").args(["qdisc", "show", "dev", &lab.veth_name(i)]));
        for q in [&inner, &outer] {
            assert!(
                q.contains("tbf") && q.contains("rate 20Mbit"),
                "no 20Mbit tbf: {q}"
            );
        }
    }
}

#[test]
fn lab_faults_stop_sshd_take_links_down_and_fill_disks() {
    let Some(mut lab) = Lab::start(
        "lab_faults_stop_sshd_take_links_down_and_fill_disks",
        LabConfig::hosts(3).tmpfs(3, "1m"),
    ) else {
        return;
    };
    let quick = |lab: &Lab, host: &str| {
        run_logged(
            lab.controller("ssh")
                .arg("-F")
                .arg(lab.ssh_config())
                .args(["-o", "ConnectTimeout=2", host, "true"])
                .stdin(Stdio::null()),
        )
    };

    lab.stop_sshd(1);
    assert!(
        !quick(&lab, "h1").status.success(),
        "h1 answers without sshd"
    );
    lab.start_sshd(1);
    assert!(quick(&lab, "h1").status.success(), "h1 does not come back");

    lab.link_down(2);
    assert!(
        !quick(&lab, "h2").status.success(),
        "h2 answers with its link down"
    );
    lab.link_up(2);
    // The first SYN after the link comes back can still be lost (neighbour discovery
    // restarts): a host that comes back answers one of three tries.
    assert!(
        (0..3).any(|_| quick(&lab, "h2").status.success()),
        "h2 does not come back"
    );

    let src = lab.scratch().join("src.bin");
    random_file(&src, 2 * MIB, 2);
    let out = pipe_file(
        &mut lab.ssh("h3", &format!("cat > '{}'", lab.dest("f"))),
        &src,
    );
    assert!(!out.status.success(), "2 MiB fit in a 1 MiB tmpfs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "the full disk is not reported as such"
    );
}

#[test]
fn lab_teardown_and_sweep_leave_nothing_behind() {
    let Some(lab) = Lab::start(
        "lab_teardown_and_sweep_leave_nothing_behind",
        LabConfig::hosts(2).tmpfs(2, "1m"),
    ) else {
        return;
    };
    let netns: Vec<String> = (0..=2).map(|i| lab.netns_name(i)).collect();
    let links: Vec<String> = std::iter::once(lab.bridge_name())
        .chain((0..=2).map(|i| lab.veth_name(i)))
        .collect();
    let dir = lab.dir().to_path_buf();
    let sshd: Vec<u32> = (1..=2).filter_map(|i| lab.sshd_pid(i)).collect();
    assert_eq!(sshd.len(), 2);
    drop(lab);

    let ns_list = sh(Command::new("ip").args(["netns", "list"]));
    let link_list = sh(Command::new("ip").args(["-o", "link", "show"]));
    for n in &netns {
        assert!(!ns_list.contains(n.as_str()), "namespace {n} survived");
    }
    for l in &links {
        assert!(
            !link_list.contains(&format!(" {l}:")) && !link_list.contains(&format!(" {l}@")),
            "link {l} survived"
        );
    }
    assert!(!dir.exists(), "{} survived", dir.display());
    for pid in sshd {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sshd {pid} survived"
        );
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "a tmpfs survived"
    );

    // Leftovers of a run whose process is gone are swept at the next start.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let ns = format!("bounce-lab-{dead_pid}-0-h1");
    let radix = {
        let mut n = dead_pid;
        let mut s = Vec::new();
        while {
            s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
            n /= 36;
            n > 0
        } {}
        s.reverse();
        String::from_utf8(s).unwrap()
    };
    let bridge = format!("bl{radix}-0br");
    let stale_dir = std::env::temp_dir().join(format!("bounce-lab-{dead_pid}-0"));
    sh(Command::new("ip").args(["netns", "add", &ns]));
    sh(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
    fs::create_dir_all(stale_dir.join("h1/data")).unwrap();
    lab::sweep_leftovers();
    let ns_list = sh(Command::new("ip").args(["netns", "list"]));
    let link_list = sh(Command::new("ip").args(["-o", "link", "show"]));
    assert!(!ns_list.contains(&ns), "stale namespace {ns} not swept");
    assert!(
        !link_list.contains(&format!(" {bridge}:")),
        "stale bridge {bridge} not swept"
    );
    assert!(!stale_dir.exists(), "stale dir not swept");
}
