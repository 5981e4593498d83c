//! The hosts of a run as the controller holds them: their targets, one multiplexed ssh
//! connection each (the `openssh` crate's native mux), what each probe found, and the
//! commands run over those connections. Both jobs, whole-file hops (`ssh/whole.rs`) and
//! chain links (`ssh/link.rs`), are built on it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};

use crate::core::{HostId, Transfer};

use super::super::pace::Pacer;
use super::super::quote::one_line_quote;
use super::super::remote::{self, Hasher, HopSsh};
use super::super::transport::{ByteCounters, Found, TransportError};
use super::super::{say, shell_quote};
use super::registry::Registry;
use super::reports::error_chain;
use super::{config, SourceFile, SshOptions, Target};

/// How long each step of a liveness check may take after a failed hop. The keep-alives
/// (2 s × 3) end a dead connection's master within about this time.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(8);

/// The hosts of one run. Host 0 is the controller; `targets[i - 1]` is receiver `i`.
pub(super) struct Hosts {
    pub(super) targets: Vec<Target>,
    pub(super) sessions: Vec<Mutex<Option<Arc<Session>>>>,
    /// For `--streams`: each receiver's further connections, one per extra stream the
    /// controller feeds it over (a multiplexed connection is one cipher on one core, so the
    /// streams of one hop cannot share it). Made when first needed, closed with the rest.
    pub(super) stream_sessions: Vec<Mutex<StreamSessions>>,
    /// The SHA-256 tool of each receiver, from its probe.
    pub(super) hashers: Vec<Mutex<Hasher>>,
    /// The controller's generated ssh_config, when it prefers AES-GCM.
    controller_config: Option<config::ControllerConfig>,
    pub(super) opts: SshOptions,
    pub(super) hop_ssh: HopSsh,
    pub(super) src: SourceFile,
    pub(super) run_id: String,
    /// Who this run's locks say holds them (see [`super::super::remote::lock`]): read once, as the
    /// run starts, not at every probe (it lists this machine's processes).
    pub(super) lock_owner: super::super::remote::lock::Owner,
    pub(super) counters: Arc<ByteCounters>,
    /// With `--compress`, the compressed copy each receiver holds once its copy is in place
    /// (its temporary file, kept until the run ends), which its hops and relays send from.
    wire_copies: Vec<Mutex<Option<String>>>,
    /// The controller's share of `--limit-rate`, drawn on by every stream it sends.
    pub(super) pacer: Option<Arc<Pacer>>,
    /// The remote processes and temporary files to clean up.
    pub(super) registry: Mutex<Registry>,
    /// For a tree, what each host's survey found that earlier runs left, until its
    /// `prepare` reports it; `None` for a host not surveyed.
    pub(super) surveyed: Vec<Mutex<Option<Vec<Found>>>>,
    /// Sessions traced so far (`-v`), to number them.
    traced: std::sync::atomic::AtomicU64,
}

/// A receiver's connections for `--streams` beyond its own.
#[derive(Default)]
pub(super) struct StreamSessions {
    /// The connection each extra stream (1, 2, …) is fed over.
    pub(super) by_stream: std::collections::HashMap<usize, Arc<Session>>,
    /// Connections found dead and replaced, still to be closed at shutdown.
    pub(super) retired: Vec<Arc<Session>>,
}

impl Hosts {
    /// The hosts `targets`; `run_id` makes temporary names unique to this run. Fails only if
    /// the controller's generated ssh_config (see `ssh/config.rs`) cannot be written to the
    /// temporary directory.
    pub(super) fn new(
        targets: Vec<Target>,
        opts: SshOptions,
        src: SourceFile,
        run_id: String,
        counters: Arc<ByteCounters>,
    ) -> std::io::Result<Self> {
        let hop_ssh = HopSsh {
            accept_new_host_keys: opts.accept_new_host_keys,
            connect_timeout_s: opts.connect_timeout.as_secs().max(1),
            upload_limit: opts.limit_rate,
        };
        let controller_config = if config::cpu_has_aes() {
            Some(config::ControllerConfig::create(
                &std::env::temp_dir(),
                opts.config_file.as_deref(),
            )?)
        } else {
            None
        };
        let pacer = opts.limit_rate.map(|r| Arc::new(Pacer::new(r)));
        Ok(Hosts {
            pacer,
            wire_copies: targets.iter().map(|_| Mutex::new(None)).collect(),
            surveyed: targets.iter().map(|_| Mutex::new(None)).collect(),
            traced: Default::default(),
            sessions: targets.iter().map(|_| Mutex::new(None)).collect(),
            stream_sessions: targets
                .iter()
                .map(|_| Mutex::new(StreamSessions::default()))
                .collect(),
            hashers: targets
                .iter()
                .map(|_| Mutex::new(Hasher::Sha256sum))
                .collect(),
            controller_config,
            targets,
            opts,
            hop_ssh,
            src,
            lock_owner: super::super::remote::lock::Owner::here(&run_id),
            run_id,
            counters,
            registry: Mutex::new(Registry::default()),
        })
    }

    /// SRC's digest, waiting for it if it is still being computed.
    pub(super) async fn src_digest(&self) -> Result<String, TransportError> {
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
    pub(super) async fn spawn_fed(
        &self,
        h: HostId,
        script: &str,
        stdin: std::os::fd::OwnedFd,
    ) -> Result<openssh::Child<Arc<Session>>, TransportError> {
        self.spawn_fed_on(h, self.session(h)?, script, stdin).await
    }

    /// [`Self::spawn_fed`] over `s`, one of `h`'s connections.
    pub(super) async fn spawn_fed_on(
        &self,
        h: HostId,
        s: Arc<Session>,
        script: &str,
        stdin: std::os::fd::OwnedFd,
    ) -> Result<openssh::Child<Arc<Session>>, TransportError> {
        self.trace_command(h, script);
        Session::to_raw_command(s, remote::sh_c(script))
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.remote_err(h, error_chain(&e)))
    }

    /// With `--compress`, receiver `h`'s compressed copy, if it holds one (see
    /// [`Hosts::install_tmp`]); `None` for a host that was up to date, or was reset.
    pub(super) fn wire_copy(&self, h: HostId) -> Option<String> {
        self.wire_copies[h.index() - 1].lock().unwrap().clone()
    }

    /// Records receiver `h`'s compressed copy, or that it has none.
    pub(super) fn set_wire_copy(&self, h: HostId, path: Option<&str>) {
        *self.wire_copies[h.index() - 1].lock().unwrap() = path.map(str::to_string);
    }

    /// With `--compress`, where a copy received into `tmp` is decompressed to.
    pub(super) fn decode_into<'a>(&self, dec: &'a str) -> Option<remote::Decode<'a>> {
        self.src
            .codec()
            .map(|codec| remote::Decode { codec, into: dec })
    }

    /// What a whole-file hop from receiver `h` reads: its DEST, or with `--compress` its
    /// compressed copy (its DEST compressed on the way, when it was up to date).
    pub(super) fn send_from(&self, h: HostId) -> (String, Option<remote::Codec>) {
        let dest = self.target(h).dest.clone();
        match self.src.codec() {
            // An archive is only ever sent from the host's copy of it, which every host
            // that can send holds (none is up to date while anything is sent).
            None if self.src.pack.is_some() => (self.wire_copy(h).unwrap_or(dest), None),
            None => (dest, None),
            Some(codec) => match self.wire_copy(h) {
                Some(copy) => (copy, None),
                None => (dest, Some(codec)),
            },
        }
    }

    /// The SHA-256 tool of receiver `h`.
    pub(super) fn hasher(&self, h: HostId) -> Hasher {
        *self.hashers[h.index() - 1].lock().unwrap()
    }

    pub(super) fn target(&self, h: HostId) -> &Target {
        &self.targets[h.index() - 1]
    }

    pub(super) fn name(&self, h: HostId) -> String {
        if h == HostId::SOURCE {
            "controller".into()
        } else {
            self.target(h).spec.to_string()
        }
    }

    pub(super) fn session(&self, h: HostId) -> Result<Arc<Session>, TransportError> {
        self.sessions[h.index() - 1]
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| TransportError::Connect {
                host: self.name(h),
                reason: "not connected".into(),
            })
    }

    /// Connection `i` of `h` for a hop over several streams: its own (`i` = 0), or the
    /// `i`-th of its stream connections, made now if it does not exist yet or has died (the
    /// dead one is kept for shutdown to close).
    pub(super) async fn stream_session(
        &self,
        h: HostId,
        i: usize,
    ) -> Result<Arc<Session>, TransportError> {
        if i == 0 {
            return self.session(h);
        }
        let known = self.stream_sessions[h.index() - 1]
            .lock()
            .unwrap()
            .by_stream
            .get(&i)
            .cloned();
        if let Some(s) = known {
            if matches!(
                tokio::time::timeout(ALIVE_TIMEOUT, s.check()).await,
                Ok(Ok(()))
            ) {
                return Ok(s);
            }
        }
        let s = Arc::new(self.connect(h).await?);
        let mut all = self.stream_sessions[h.index() - 1].lock().unwrap();
        if let Some(old) = all.by_stream.insert(i, Arc::clone(&s)) {
            all.retired.push(old);
        }
        Ok(s)
    }

    pub(super) fn remote_err(&self, h: HostId, reason: impl Into<String>) -> TransportError {
        TransportError::Remote {
            host: self.name(h),
            reason: reason.into(),
        }
    }

    /// Runs `script` on `h` and returns its output.
    pub(super) async fn run(
        &self,
        h: HostId,
        script: &str,
    ) -> Result<std::process::Output, TransportError> {
        let s = self.session(h)?;
        self.trace_command(h, script);
        let out = s
            .raw_command(remote::sh_c(script))
            .output()
            .await
            .map_err(|e| self.remote_err(h, error_chain(&e)))?;
        if let Some(label) = self.tap(h, script) {
            for line in out.stderr.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                super::reports::trace_line(&label, line);
            }
        }
        Ok(out)
    }

    /// With `-v`, the label a job's stderr lines are traced with: the host and the job.
    pub(super) fn tap(&self, h: HostId, script: &str) -> Option<String> {
        say::tracing().then(|| format!("{} {}", self.name(h), say::job_of(script)))
    }

    /// With `-v`, traces the ssh command about to run `script` on `h`, on one line, as a
    /// person could paste it into bash or zsh: with the user's `-F`, not the ssh_config the run generates
    /// from it (which only puts AES-GCM first, and is gone once the run ends).
    fn trace_command(&self, h: HostId, script: &str) {
        say::trace(|| {
            let spec = &self.target(h).spec;
            let mut line = String::from("ssh");
            if let Some(f) = &self.opts.config_file {
                line += &format!(" -F {}", shell_quote(&f.display().to_string()));
            }
            if let Some(p) = spec.port {
                line += &format!(" -p {p}");
            }
            if let Some(u) = &spec.user {
                line += &format!(" -l {}", shell_quote(u));
            }
            let n = self
                .traced
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            format!(
                "{} session {n} ({}): {line} {} {}",
                self.name(h),
                say::job_of(script),
                shell_quote(&spec.host),
                one_line_quote(&remote::sh_c(script))
            )
        });
    }

    /// Starts `script` on `h` with all three pipes.
    pub(super) async fn spawn(
        &self,
        h: HostId,
        script: &str,
    ) -> Result<openssh::Child<Arc<Session>>, TransportError> {
        let s = self.session(h)?;
        self.trace_command(h, script);
        Session::to_raw_command(s, remote::sh_c(script))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.remote_err(h, error_chain(&e)))
    }

    /// Whether the connection to `h` is still up. Bounded by [`ALIVE_TIMEOUT`]; a check that
    /// does not answer in time counts as down.
    pub(super) async fn alive(&self, h: HostId) -> bool {
        let Ok(s) = self.session(h) else {
            return false;
        };
        if !matches!(
            tokio::time::timeout(ALIVE_TIMEOUT, s.check()).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        // `check` only asks the local master, which outlives a dead host until its
        // keep-alives give up: a command on the host itself says whether it is there. A host
        // that died answers within the keep-alives (2 s × 3), a crash that reset the
        // connection at once.
        matches!(
            tokio::time::timeout(ALIVE_TIMEOUT, self.run(h, "true")).await,
            Ok(Ok(out)) if out.status.success()
        )
    }

    /// Turns a failed hop's error into [`TransportError::Disconnected`] when the sender's or
    /// the receiver's connection is what failed. Runs in the hop's own task, so the driver's
    /// loop never waits for it.
    pub(super) async fn classify(&self, t: &Transfer, e: TransportError) -> TransportError {
        // A link ended on purpose says nothing about its hosts; asking a host that died
        // whether it is there would hold the hop's end for the keep-alives, and with it the
        // new feed of its receiver, which waits for the chunks in flight to end.
        if matches!(
            e,
            TransportError::DigestMismatch { .. }
                | TransportError::Local { .. }
                | TransportError::Rerouted { .. }
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
        let mut sockets: Vec<PathBuf> = self
            .sessions
            .iter()
            .filter_map(|s| {
                let s = s.lock().ok()?;
                s.as_ref().map(|s| s.control_socket().to_path_buf())
            })
            .collect();
        for extra in &self.stream_sessions {
            if let Ok(v) = extra.lock() {
                sockets.extend(
                    v.by_stream
                        .values()
                        .chain(&v.retired)
                        .map(|s| s.control_socket().to_path_buf()),
                );
            }
        }
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
        // The masters read it at their start only; the process is about to exit without
        // running destructors.
        if let Some(c) = &self.controller_config {
            c.remove_now();
        }
    }

    pub(super) async fn connect(&self, h: HostId) -> Result<Session, TransportError> {
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
        // Sessions over the control socket itself (openssh's native mux): one `ssh` master
        // per host, where the process mux started an `ssh -S` for every session too (2.4
        // processes and 11 MB per host at 128 hosts).
        b.connect_mux(&spec.host)
            .await
            .map_err(|e| TransportError::Connect {
                host: self.name(h),
                reason: error_chain(&e),
            })
    }
}
