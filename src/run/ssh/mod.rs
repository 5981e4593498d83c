//! The OpenSSH transport: one multiplexed connection per host (the `openssh` crate's
//! process mux), and every hop as a small shell pipeline on the hosts (see [`super::script`]).
//!
//! - controller → Y: SRC is streamed into a receiver on Y over Y's connection;
//! - X → Y: a pipeline on X runs `ssh Y` with X's own ssh setup, so the bytes never pass
//!   through the controller;
//! - chain: one long-lived link per edge X → Y (see `ssh/link.rs`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

use crate::core::{HostId, Layout, Transfer};

use super::hosts::HostSpec;
use super::script::{self, Hasher, HopSsh};
use super::transport::{ByteCounters, CleanupFailure, Prepared, Probe, Transport, TransportError};

mod config;
mod feed;
mod link;

use link::LinkCell;

/// How to reach the hosts.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// `-F`: the controller's ssh_config.
    pub config_file: Option<PathBuf>,
    /// Accept unknown host keys (and record them) instead of failing the host.
    pub accept_new_host_keys: bool,
    /// ConnectTimeout, for the controller's connections and the hops between hosts.
    pub connect_timeout: Duration,
    /// Flush each copy to disk before renaming it into place (see [`script::install`]).
    pub fsync: bool,
}

/// The file being sent, as read once on the controller.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path on the controller.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits applied at the rename.
    pub mode: u32,
    /// Lowercase hex SHA-256, possibly still being computed.
    pub digest: super::digest::PendingDigest,
}

/// One receiver and its paths.
#[derive(Clone, Debug)]
pub struct Target {
    /// How the user named it.
    pub spec: HostSpec,
    /// Its DEST.
    pub dest: String,
}

#[derive(Default)]
struct State {
    /// Digests of the copies streamed whole, from their receivers' `end` reports.
    streamed: HashMap<HostId, String>,
    /// Temporary files that may exist on each host and were not renamed into place.
    temps: HashMap<HostId, BTreeSet<String>>,
    /// Remote process groups of running hops and links, by key.
    procs: HashMap<u64, Vec<(HostId, u32)>>,
    next_key: u64,
    links: HashMap<(HostId, HostId), LinkCell>,
}

/// The real transport. Host 0 is the controller; `targets[i - 1]` is receiver `i`.
pub struct SshTransport {
    targets: Vec<Target>,
    sessions: Vec<Mutex<Option<Arc<Session>>>>,
    /// The SHA-256 tool of each receiver, from its probe.
    hashers: Vec<Mutex<Hasher>>,
    /// The controller's generated ssh_config, when it prefers AES-GCM.
    controller_config: Option<config::ControllerConfig>,
    opts: SshOptions,
    hop_ssh: HopSsh,
    src: SourceFile,
    layout: Layout,
    chunked: bool,
    run_id: String,
    counters: Arc<ByteCounters>,
    /// Shared with the tasks that read stream reports.
    state: Arc<Mutex<State>>,
}

/// How long cleanup commands may take on a host before they are abandoned (they are kept for
/// [`Transport::shutdown`] to try again).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Transport::shutdown`] may take over all hosts together.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);
/// How long shutdown waits before its second pass over temporary files (see
/// `shutdown_host`).
const SECOND_PASS_DELAY: Duration = Duration::from_millis(1500);
/// How long a liveness check of a connection may take after a failed hop. The keep-alives
/// (2 s × 3) end a dead connection's master within about this time.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(8);

impl SshTransport {
    /// A transport for `targets`; `chunked` selects chain links instead of whole-file hops.
    /// `run_id` makes temporary names unique to this run. Fails only if the controller's
    /// generated ssh_config (see `ssh/config.rs`) cannot be written to the temporary
    /// directory.
    pub fn new(
        targets: Vec<Target>,
        opts: SshOptions,
        src: SourceFile,
        layout: Layout,
        chunked: bool,
        run_id: String,
        counters: Arc<ByteCounters>,
    ) -> std::io::Result<Self> {
        let hop_ssh = HopSsh {
            accept_new_host_keys: opts.accept_new_host_keys,
            connect_timeout_s: opts.connect_timeout.as_secs().max(1),
        };
        let controller_config = if config::cpu_has_aes() {
            Some(config::ControllerConfig::create(
                &std::env::temp_dir(),
                opts.config_file.as_deref(),
            )?)
        } else {
            None
        };
        Ok(SshTransport {
            sessions: targets.iter().map(|_| Mutex::new(None)).collect(),
            hashers: targets
                .iter()
                .map(|_| Mutex::new(Hasher::Sha256sum))
                .collect(),
            controller_config,
            targets,
            opts,
            hop_ssh,
            src,
            layout,
            chunked,
            run_id,
            counters,
            state: Arc::new(Mutex::new(State::default())),
        })
    }

    /// SRC's digest, waiting for it if it is still being computed.
    async fn src_digest(&self) -> Result<String, TransportError> {
        self.src
            .digest
            .get()
            .await
            .map_err(|reason| TransportError::Local {
                path: self.src.path.display().to_string(),
                reason,
            })
    }

    /// Starts `script` on `h` with `stdin` as its standard input, and stdout and stderr
    /// piped.
    async fn spawn_fed(
        &self,
        h: HostId,
        script: &str,
        stdin: std::os::fd::OwnedFd,
    ) -> Result<openssh::Child<Arc<Session>>, TransportError> {
        let s = self.session(h)?;
        Session::to_raw_command(s, script::sh_c(script))
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.remote_err(h, error_chain(&e)))
    }

    /// The SHA-256 tool of receiver `h`.
    fn hasher(&self, h: HostId) -> Hasher {
        *self.hashers[h.index() - 1].lock().unwrap()
    }

    fn target(&self, h: HostId) -> &Target {
        &self.targets[h.index() - 1]
    }

    fn name(&self, h: HostId) -> String {
        if h == HostId::SOURCE {
            "controller".into()
        } else {
            self.target(h).spec.to_string()
        }
    }

    fn chain_tmp(&self, h: HostId) -> String {
        // The host index keeps two names for one machine from sharing a temporary file.
        script::temp_path(&self.target(h).dest, &self.run_id, &format!("-h{}", h.0))
    }

    fn session(&self, h: HostId) -> Result<Arc<Session>, TransportError> {
        self.sessions[h.index() - 1]
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| TransportError::Connect {
                host: self.name(h),
                reason: "not connected".into(),
            })
    }

    fn remote_err(&self, h: HostId, reason: impl Into<String>) -> TransportError {
        TransportError::Remote {
            host: self.name(h),
            reason: reason.into(),
        }
    }

    fn new_key(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.next_key += 1;
        st.next_key
    }

    fn register_proc(&self, key: u64, h: HostId, pid: u32) {
        let mut st = self.state.lock().unwrap();
        st.procs.entry(key).or_default().push((h, pid));
    }

    fn add_temp(&self, h: HostId, path: &str) {
        let mut st = self.state.lock().unwrap();
        st.temps.entry(h).or_default().insert(path.to_string());
    }

    fn forget_temp(&self, h: HostId, path: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(s) = st.temps.get_mut(&h) {
            s.remove(path);
        }
    }

    /// Runs `script` on `h` and returns its output.
    async fn run(&self, h: HostId, script: &str) -> Result<std::process::Output, TransportError> {
        let s = self.session(h)?;
        s.raw_command(script::sh_c(script))
            .output()
            .await
            .map_err(|e| self.remote_err(h, error_chain(&e)))
    }

    /// Starts `script` on `h` with all three pipes.
    async fn spawn(
        &self,
        h: HostId,
        script: &str,
    ) -> Result<openssh::Child<Arc<Session>>, TransportError> {
        let s = self.session(h)?;
        Session::to_raw_command(s, script::sh_c(script))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.remote_err(h, error_chain(&e)))
    }

    /// Kills the process groups registered under `key` and removes `files` on their hosts.
    /// What could not be cleaned up on a host stays registered (the pids under `key`, the
    /// files among its temporary files), for [`Transport::shutdown`] to try again.
    async fn kill(&self, key: u64, files: &[(HostId, String)]) {
        let procs = self
            .state
            .lock()
            .unwrap()
            .procs
            .remove(&key)
            .unwrap_or_default();
        let mut by_host: HashMap<HostId, (Vec<u32>, Vec<String>)> = HashMap::new();
        for (h, pid) in procs {
            by_host.entry(h).or_default().0.push(pid);
        }
        for (h, f) in files {
            by_host.entry(*h).or_default().1.push(f.clone());
        }
        // The sending side first, so the receiver sees its input end.
        let mut hosts: Vec<_> = by_host.into_iter().collect();
        hosts.sort_by_key(|(h, (pids, _))| (pids.is_empty(), *h));
        for (h, (pids, files)) in hosts {
            if h == HostId::SOURCE {
                continue;
            }
            match self.clean(h, &pids, &files, CLEANUP_TIMEOUT).await {
                Ok(()) => {
                    for f in &files {
                        self.forget_temp(h, f);
                    }
                }
                Err(_) => {
                    // Shutdown tries again, and reports what it cannot remove.
                    for f in &files {
                        self.add_temp(h, f);
                    }
                    for p in pids {
                        self.register_proc(key, h, p);
                    }
                }
            }
        }
    }

    /// Runs one cleanup command on `h` within `timeout`.
    async fn clean(
        &self,
        h: HostId,
        pids: &[u32],
        files: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.run(h, &script::cleanup(pids, files))).await {
            Err(_) => Err(format!("timed out after {:.0?}", timeout)),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(failure_text(&out.stderr, out.status.code())),
        }
    }

    /// Whether the connection to `h` is still up. Bounded by [`ALIVE_TIMEOUT`]; a check that
    /// does not answer in time counts as down.
    async fn alive(&self, h: HostId) -> bool {
        let Ok(s) = self.session(h) else {
            return false;
        };
        matches!(
            tokio::time::timeout(ALIVE_TIMEOUT, s.check()).await,
            Ok(Ok(()))
        )
    }

    /// Turns a failed hop's error into [`TransportError::Disconnected`] when the sender's or
    /// the receiver's connection is what failed. Runs in the hop's own task, so the driver's
    /// loop never waits for it.
    async fn classify(&self, t: &Transfer, e: TransportError) -> TransportError {
        if matches!(
            e,
            TransportError::DigestMismatch { .. } | TransportError::Local { .. }
        ) {
            return e;
        }
        for h in [t.from, t.to] {
            if h != HostId::SOURCE && !self.alive(h).await {
                return TransportError::Disconnected {
                    host: self.name(h),
                    id: h,
                    reason: e.to_string(),
                };
            }
        }
        e
    }

    /// Ends every ssh master connection at once (`ssh -O exit`, a local request to each
    /// master, all in parallel, at most about 2 s), without running anything on the hosts:
    /// for a second interrupt. Masters persist after the controller exits, so they must be
    /// told; once they are gone, sshd ends every session of the run, and the watchers in the
    /// hop snippets stop their pipelines. Temporary files stay (see [`Self::leftovers`]).
    pub fn drop_connections_now(&self) {
        let sockets: Vec<PathBuf> = self
            .sessions
            .iter()
            .filter_map(|s| {
                let s = s.lock().ok()?;
                s.as_ref().map(|s| s.control_socket().to_path_buf())
            })
            .collect();
        let mut children: Vec<_> = sockets
            .iter()
            .filter_map(|ctl| {
                std::process::Command::new("ssh")
                    .arg("-S")
                    .arg(ctl)
                    .args(["-O", "exit", "none"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            if children.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Temporary files and process groups not cleaned up yet, by host: what may be left if
    /// the controller stops now (a second interrupt).
    pub fn leftovers(&self) -> Vec<(String, Vec<String>)> {
        let st = self.state.lock().unwrap();
        let mut by_host: std::collections::BTreeMap<HostId, Vec<String>> = Default::default();
        for (h, files) in &st.temps {
            by_host.entry(*h).or_default().extend(files.iter().cloned());
        }
        for procs in st.procs.values() {
            for (h, pid) in procs {
                by_host
                    .entry(*h)
                    .or_default()
                    .push(format!("process group {pid}"));
            }
        }
        by_host
            .into_iter()
            .filter(|(h, v)| *h != HostId::SOURCE && !v.is_empty())
            .map(|(h, v)| (self.name(h), v))
            .collect()
    }

    /// Renames a copy whose digest was checked as it was written into place.
    async fn install_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let out = self
            .run(
                h,
                &script::install(tmp, &t.dest, self.src.mode, self.opts.fsync),
            )
            .await?;
        if !out.status.success() {
            return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
        }
        self.forget_temp(h, tmp);
        Ok(())
    }

    async fn finalize_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let digest = self.src_digest().await?;
        let out = self
            .run(
                h,
                &script::finalize(
                    tmp,
                    &t.dest,
                    &digest,
                    self.src.mode,
                    self.opts.fsync,
                    self.hasher(h),
                ),
            )
            .await?;
        if out.status.success() {
            self.forget_temp(h, tmp);
            return Ok(());
        }
        if out.status.code() == Some(script::DIGEST_MISMATCH_STATUS) {
            self.forget_temp(h, tmp);
            return Err(TransportError::DigestMismatch {
                host: self.name(h),
                path: tmp.to_string(),
                got: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            });
        }
        Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())))
    }

    async fn hop_whole(&self, t: Transfer) -> Result<(), TransportError> {
        let key = self.new_key();
        let to = self.target(t.to).clone();
        let tmp = script::temp_path(&to.dest, &self.run_id, &format!("-t{}", t.id.0));
        self.add_temp(t.to, &tmp);
        self.counters.set(t.to, 0);
        let res = async {
            let end = if t.from == HostId::SOURCE {
                // The controller counts what it sends; the receiver's reports only end it.
                let mut feed = feed::Feed::start(
                    &self.src.path,
                    0,
                    self.src.size,
                    Some((Arc::clone(&self.counters), t.to)),
                )
                .map_err(|e| self.remote_err(t.to, format!("cannot make a pipe: {e}")))?;
                let reader = feed.reader.take().expect("taken once");
                let mut child = self
                    .spawn_fed(
                        t.to,
                        &script::stream_receive(&to.dest, &tmp, self.hasher(t.to)),
                        reader,
                    )
                    .await?;
                let stderr = collect(child.stderr().take());
                let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
                let pid = read_pid(&mut stdout).await;
                let pid = match pid {
                    Some(p) => p,
                    None => return Err(self.remote_err(t.to, stderr.await.unwrap_or_default())),
                };
                self.register_proc(key, t.to, pid);
                let (sent, end) = tokio::join!(feed.finished(), read_end_report(stdout, None));
                let sent = sent.map_err(|e| match e {
                    feed::FeedError::Read(reason) => TransportError::Local {
                        path: self.src.path.display().to_string(),
                        reason,
                    },
                    feed::FeedError::Send(e) => {
                        self.remote_err(t.to, format!("connection closed while sending: {e}"))
                    }
                });
                let status = child.wait().await;
                let err = stderr.await.unwrap_or_default();
                // When the receiver fails (a full disk, say) our writes fail with a broken
                // pipe; the receiver's own message is the one that names the cause.
                if let Ok(st) = &status {
                    if !st.success() && !last_lines(&err).is_empty() {
                        return Err(self.remote_err(t.to, failure_text(err.as_bytes(), st.code())));
                    }
                }
                sent?;
                match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        return Err(self.remote_err(t.to, failure_text(err.as_bytes(), s.code())))
                    }
                    Err(e) => return Err(self.remote_err(t.to, join(&err, &error_chain(&e)))),
                }
                end
            } else {
                let from = self.target(t.from);
                let script = script::send_whole(
                    &self.hop_ssh,
                    &from.dest,
                    &to.spec,
                    &to.dest,
                    &tmp,
                    self.hasher(t.to),
                );
                let mut child = self.spawn(t.from, &script).await?;
                // Held open until the hop ends: its closing tells the watcher on X to stop.
                let keep_open = child.stdin().take();
                let stderr = collect(child.stderr().take());
                let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
                if let Some(p) = read_pid(&mut stdout).await {
                    self.register_proc(key, t.from, p);
                }
                if let Some(p) = read_pid(&mut stdout).await {
                    self.register_proc(key, t.to, p);
                }
                let end = read_end_report(stdout, Some((&self.counters, t.to))).await;
                let status = child.wait().await;
                drop(keep_open);
                let err = stderr.await.unwrap_or_default();
                let hop = format!("{} -> {}", self.name(t.from), self.name(t.to));
                match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        return Err(TransportError::Remote {
                            host: hop,
                            reason: failure_text(err.as_bytes(), s.code()),
                        })
                    }
                    Err(e) => {
                        return Err(TransportError::Remote {
                            host: hop,
                            reason: join(&err, &error_chain(&e)),
                        })
                    }
                }
                self.counters.set(t.to, self.src.size);
                end
            };
            let digest = self.src_digest().await?;
            if end == Some((self.src.size, digest)) {
                // Hashed as it was written: only the rename is left.
                self.install_tmp(t.to, &tmp).await
            } else {
                self.finalize_tmp(t.to, &tmp).await
            }
        }
        .await;
        if res.is_err() {
            self.kill(key, &[(t.to, tmp.clone())]).await;
            self.counters.set(t.to, 0);
        } else {
            self.state.lock().unwrap().procs.remove(&key);
        }
        res
    }

    /// Writes bytes `offset..offset + len` of SRC into `w`, counting them for `to`.
    async fn copy_range<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        to: HostId,
        offset: u64,
        len: u64,
    ) -> Result<(), TransportError> {
        let local = |e: std::io::Error| TransportError::Local {
            path: self.src.path.display().to_string(),
            reason: e.to_string(),
        };
        let mut f = tokio::fs::File::open(&self.src.path).await.map_err(local)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(local)?;
        let mut left = len;
        let mut buf = vec![0u8; 256 << 10];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = f.read(&mut buf[..want]).await.map_err(local)?;
            if n == 0 {
                return Err(local(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "source file shrank during the run",
                )));
            }
            w.write_all(&buf[..n]).await.map_err(|e| {
                self.remote_err(to, format!("connection closed while sending: {e}"))
            })?;
            self.counters.add(to, n as u64);
            left -= n as u64;
        }
        Ok(())
    }

    /// Removes `h`'s temporary files; those that cannot be removed stay registered.
    async fn remove_temps(&self, h: HostId) {
        let files: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .temps
            .get(&h)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if !files.is_empty()
            && h != HostId::SOURCE
            && self.clean(h, &[], &files, CLEANUP_TIMEOUT).await.is_ok()
        {
            for f in &files {
                self.forget_temp(h, f);
            }
        }
    }

    /// Cleans up everything still registered on `h` (see [`Transport::shutdown`]).
    async fn shutdown_host(
        &self,
        h: HostId,
        deadline: tokio::time::Instant,
    ) -> Option<CleanupFailure> {
        let (keys, pids, files) = {
            let st = self.state.lock().unwrap();
            let mut keys = Vec::new();
            let mut pids = Vec::new();
            for (k, procs) in &st.procs {
                for (ph, p) in procs {
                    if *ph == h {
                        keys.push(*k);
                        pids.push(*p);
                    }
                }
            }
            let files: Vec<String> = st
                .temps
                .get(&h)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            (keys, pids, files)
        };
        if pids.is_empty() && files.is_empty() {
            return None;
        }
        let left = || {
            files
                .iter()
                .cloned()
                .chain(pids.iter().map(|p| format!("process group {p}")))
                .collect()
        };
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut res = self.clean(h, &pids, &files, timeout).await;
        if res.is_ok() && !files.is_empty() {
            // A pipeline that was still being set up when the run stopped (its sender's ssh
            // to this host mid-handshake) may create its temporary file just after the
            // first pass: its sender is dead by now, so a second pass a moment later finds
            // everything it will ever write.
            let again = (tokio::time::Instant::now() + SECOND_PASS_DELAY).min(deadline);
            tokio::time::sleep_until(again).await;
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            res = self
                .clean(h, &pids, &files, timeout.max(Duration::from_secs(1)))
                .await;
        }
        let mut st = self.state.lock().unwrap();
        match res {
            Ok(()) => {
                st.temps.remove(&h);
                for k in keys {
                    if let Some(v) = st.procs.get_mut(&k) {
                        v.retain(|(ph, _)| *ph != h);
                    }
                }
                st.procs.retain(|_, v| !v.is_empty());
                None
            }
            Err(reason) => Some(CleanupFailure {
                host: self.name(h),
                reason,
                left: left(),
            }),
        }
    }

    async fn connect(&self, h: HostId) -> Result<Session, TransportError> {
        let spec = &self.target(h).spec;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if self.opts.accept_new_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(self.opts.connect_timeout)
        .server_alive_interval(Duration::from_secs(2))
        .control_directory(std::env::temp_dir());
        if let Some(c) = &self.controller_config {
            b.config_file(c.path());
        } else if let Some(f) = &self.opts.config_file {
            b.config_file(f);
        }
        if let Some(u) = &spec.user {
            b.user(u.clone());
        }
        if let Some(p) = spec.port {
            b.port(p);
        }
        b.connect(&spec.host)
            .await
            .map_err(|e| TransportError::Connect {
                host: self.name(h),
                reason: error_chain(&e),
            })
    }
}

impl Transport for SshTransport {
    async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
        let s = self.connect(host).await?;
        *self.sessions[host.index() - 1].lock().unwrap() = Some(Arc::new(s));
        let dest = self.target(host).dest.clone();
        // Registered like a hop, so that an interrupt while it hashes stops it.
        let key = self.new_key();
        let mut child = self
            .spawn(host, &script::probe(&dest, self.src.size))
            .await?;
        let stderr = collect(child.stderr().take());
        let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
        if let Some(pid) = read_pid(&mut stdout).await {
            self.register_proc(key, host, pid);
        }
        let mut text = String::new();
        let read = stdout.read_to_string(&mut text).await;
        let status = child.wait().await;
        self.state.lock().unwrap().procs.remove(&key);
        let err = stderr.await.unwrap_or_default();
        let status = status.map_err(|e| self.remote_err(host, join(&err, &error_chain(&e))))?;
        let dest_err = |reason: &str| TransportError::Dest {
            host: self.name(host),
            path: dest.clone(),
            reason: reason.into(),
        };
        match status.code() {
            Some(0) => {}
            Some(script::DEST_IS_DIRECTORY_STATUS) => {
                return Err(dest_err("is a directory; refusing to replace it"))
            }
            Some(script::DEST_NOT_A_FILE_STATUS) => {
                return Err(dest_err(
                    "exists and is neither a regular file nor a symlink; refusing to replace it",
                ))
            }
            code => return Err(self.remote_err(host, failure_text(err.as_bytes(), code))),
        }
        read.map_err(|e| self.remote_err(host, format!("reading the probe's answer: {e}")))?;
        let mut swept = Vec::new();
        let mut probe = None;
        let mut hasher = None;
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("hasher ").and_then(Hasher::from_name) {
                *self.hashers[host.index() - 1].lock().unwrap() = h;
                hasher = Some(h.name().to_string());
            } else if let Some(path) = line.strip_prefix("swept ") {
                swept.push(path.to_string());
            } else if matches!(line, "missing" | "link" | "size") {
                probe = Some(Probe::Needed);
            }
        }
        if probe.is_none() {
            let found = text
                .lines()
                .find_map(|l| l.strip_prefix("file "))
                .map(|f| f.trim().to_string());
            if let Some(found) = found {
                // Only now is SRC's digest needed, and only for a DEST of SRC's size.
                let digest = self.src_digest().await?;
                probe = Some(if found == digest {
                    Probe::UpToDate
                } else {
                    Probe::Needed
                });
            }
        }
        let probe = probe.ok_or_else(|| {
            self.remote_err(host, format!("unexpected probe answer {:?}", text.trim()))
        })?;
        Ok(Prepared {
            probe,
            swept,
            hasher,
        })
    }

    async fn hop(&self, t: Transfer) -> Result<(), TransportError> {
        let res = if self.chunked {
            self.hop_chunk(t).await
        } else {
            self.hop_whole(t).await
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) => Err(self.classify(&t, e).await),
        }
    }

    async fn open_links(&self, links: &[(HostId, HostId)]) -> Vec<TransportError> {
        if self.chunked {
            self.open_streams(links).await
        } else {
            Vec::new()
        }
    }

    async fn finalize(&self, host: HostId) -> Result<(), TransportError> {
        if !self.chunked {
            return Ok(()); // hop_whole verified and renamed already
        }
        // Nothing will be written to it any more.
        self.close_links(|_, to| to == host, true).await;
        let tmp = self.chain_tmp(host);
        let streamed = self.state.lock().unwrap().streamed.remove(&host);
        let digest = self.src_digest().await?;
        if streamed.as_deref() == Some(digest.as_str()) {
            // Hashed as it was written: only the rename is left.
            return self.install_tmp(host, &tmp).await;
        }
        self.finalize_tmp(host, &tmp).await
    }

    async fn discard(&self, host: HostId) {
        self.close_links(|a, b| a == host || b == host, false).await;
        self.remove_temps(host).await;
    }

    async fn shutdown(&self) -> Vec<CleanupFailure> {
        use futures_util::future::join_all;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        // Links first, without waiting on any: what they leave is cleaned up per host below.
        self.abandon_links().await;
        let hosts: Vec<HostId> = (1..=self.targets.len() as u32).map(HostId).collect();
        let mut failures: Vec<CleanupFailure> =
            join_all(hosts.iter().map(|&h| self.shutdown_host(h, deadline)))
                .await
                .into_iter()
                .flatten()
                .collect();
        let closing = self.sessions.iter().enumerate().filter_map(|(i, s)| {
            let taken = s.lock().unwrap().take()?;
            let h = HostId(i as u32 + 1);
            Some(async move {
                match Arc::try_unwrap(taken) {
                    Ok(s) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match tokio::time::timeout(left.max(Duration::from_secs(1)), s.close())
                            .await
                        {
                            // A connection that is already gone has nothing left to close.
                            Ok(_) => None,
                            Err(_) => Some(CleanupFailure {
                                host: self.name(h),
                                reason: "its ssh master did not exit in time".into(),
                                left: vec!["the controller's ssh master process".into()],
                            }),
                        }
                    }
                    // Still shared by a task that outlived the run (a defect); it is closed
                    // when that task lets go of it.
                    Err(_) => Some(CleanupFailure {
                        host: self.name(h),
                        reason: "its connection was still in use at shutdown".into(),
                        left: vec!["the controller's ssh master process".into()],
                    }),
                }
            })
        });
        failures.extend(join_all(closing).await.into_iter().flatten());
        failures
    }
}

/// One line of a receiver's reports (see [`script::stream_receive`]).
#[derive(Debug, PartialEq)]
enum Report {
    /// `at N`: N bytes written so far.
    At(u64),
    /// `end N DIGEST`: the input ended after N bytes, whose SHA-256 is DIGEST.
    End(u64, String),
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        let mut words = line.split_whitespace();
        let (kind, n) = (words.next()?, words.next()?.parse().ok()?);
        match kind {
            "at" => Some(Report::At(n)),
            "end" => Some(Report::End(n, words.next()?.to_string())),
            _ => None,
        }
    }
}

/// Reads a whole-file receiver's reports to their end (see [`script::stream_receive`]),
/// passing its byte counts to `counters` if given, and returns its `end` report: the bytes
/// written and their digest.
async fn read_end_report(
    mut stdout: BufReader<openssh::ChildStdout>,
    counters: Option<(&ByteCounters, HostId)>,
) -> Option<(u64, String)> {
    let mut line = String::new();
    let mut end = None;
    loop {
        line.clear();
        match stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => return end,
            Ok(_) => {}
        }
        match Report::parse(&line) {
            Some(Report::At(n)) => {
                if let Some((c, to)) = counters {
                    c.set(to, n);
                }
            }
            Some(Report::End(n, digest)) => end = Some((n, digest)),
            None => {}
        }
    }
}

/// Reads the `echo $$` line a remote snippet starts with.
async fn read_pid<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<u32> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    line.trim().parse().ok()
}

/// Collects a child's stderr in the background, keeping the last 8 KiB.
fn collect(stderr: Option<openssh::ChildStderr>) -> JoinHandle<String> {
    tokio::spawn(async move {
        let Some(mut e) = stderr else {
            return String::new();
        };
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = e.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 8192 {
                kept.drain(..kept.len() - 8192);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// The last meaningful lines of a command's stderr, on one line.
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        // When its master connection is gone, the mux client falls back to connecting to
        // the placeholder host "none": noise that hides the real cause.
        .filter(|l| !l.is_empty() && !l.contains("Could not resolve hostname none"))
        .collect();
    lines[lines.len().saturating_sub(2)..].join("; ")
}

fn failure_text(stderr: &[u8], code: Option<i32>) -> String {
    let text = last_lines(&String::from_utf8_lossy(stderr));
    match (text.is_empty(), code) {
        (false, _) => text,
        (true, Some(c)) => format!("remote command exited with status {c}"),
        (true, None) => "remote command was killed".into(),
    }
}

fn join(a: &str, b: &str) -> String {
    let a = last_lines(a);
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a,
        _ => format!("{a}; {b}"),
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = last_lines(&e.to_string());
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        let t = t.trim();
        if !t.is_empty() && !s.contains(t) {
            s.push_str(": ");
            s.push_str(&last_lines(t));
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn receiver_reports_parse_and_anything_else_is_ignored() {
        assert_eq!(Report::parse("at 1048576\n"), Some(Report::At(1 << 20)));
        assert_eq!(
            Report::parse("end 13 0c7b\n"),
            Some(Report::End(13, "0c7b".into()))
        );
        for bad in ["", "at", "at x", "end 13", "ok 0", "12345"] {
            assert_eq!(Report::parse(bad), None, "{bad:?}");
        }
    }
}
