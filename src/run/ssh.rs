//! The OpenSSH transport: one multiplexed connection per host (the `openssh` crate's
//! process mux), and every hop as a small shell pipeline on the hosts (see [`super::script`]).
//!
//! - controller → Y: SRC is streamed into a receiver on Y over Y's connection;
//! - X → Y: a pipeline on X runs `ssh Y` with X's own ssh setup, so the bytes never pass
//!   through the controller;
//! - chain: one long-lived link per edge X → Y, of two kinds.
//!   - *Streams*, for the links the strategy plans from the start
//!     ([`Transport::open_links`]): all set up at once before any data moves; the source
//!     streams SRC into the first host, and every host relays its copy to the next while it
//!     receives it. No request and no acknowledgement sits between the hops: the receivers
//!     report their byte counts to the controller on the side, and those reports end the
//!     core's chunk transfers.
//!   - *Request links*, for every other edge (a host cut out of the chain, a stream that
//!     broke): the controller writes one request line per chunk into the link on X; X sends
//!     header and bytes to Y's receive loop, whose acknowledgement flows back through X.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::{HostId, Layout, Transfer};

use super::hosts::HostSpec;
use super::script::{self, HopSsh};
use super::transport::{ByteCounters, Probe, Transport, TransportError};

/// How to reach the hosts.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// `-F`: the controller's ssh_config.
    pub config_file: Option<PathBuf>,
    /// Accept unknown host keys (and record them) instead of failing the host.
    pub accept_new_host_keys: bool,
    /// ConnectTimeout, for the controller's connections and the hops between hosts.
    pub connect_timeout: Duration,
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
    /// Lowercase hex SHA-256.
    pub digest: String,
}

/// One receiver and its paths.
#[derive(Clone, Debug)]
pub struct Target {
    /// How the user named it.
    pub spec: HostSpec,
    /// Its DEST.
    pub dest: String,
}

/// A chain link X → Y: the pipeline on the hosts and how the controller talks to it.
struct Link {
    key: u64,
    kind: LinkKind,
    /// Held by whoever closes the link, until `reason` is known.
    child: tokio::sync::Mutex<Option<openssh::Child<Arc<Session>>>>,
    stderr: Mutex<Option<JoinHandle<String>>>,
    /// What the link printed on stderr when it was closed: the cause every chunk that was in
    /// flight on it failed for.
    reason: Mutex<Option<String>>,
}

impl Link {
    /// Closes the controller's side of the link's stdin, if it holds it.
    async fn close_input(&self) {
        match &self.kind {
            LinkKind::Requests { writer, .. } => drop(writer.lock().await.stdin.take()),
            LinkKind::Stream { stdin, .. } => drop(stdin.lock().await.take()),
        }
    }
}

/// What a link carries.
enum LinkKind {
    /// Chunks on request. Several may be in flight: requests are written under `writer`,
    /// each taking the next ticket; acknowledgements come back in request order and are read
    /// under `acks` by whichever hop is waiting, each hop taking the line of its own ticket.
    Requests {
        writer: tokio::sync::Mutex<LinkWriter>,
        acks: tokio::sync::Mutex<LinkAcks>,
    },
    /// The whole file as one stream, relayed without waiting for the controller.
    Stream {
        /// The receiver's reports, kept up to date by `tasks`.
        progress: watch::Receiver<Streamed>,
        /// The relay's stdin: the receiver's pid goes in first, then it is held open for the
        /// relay's watcher. Empty for the source's link, whose feeding task owns it.
        stdin: tokio::sync::Mutex<Option<openssh::ChildStdin>>,
        /// The pid of the receiving end, which the receiver's own relay follows.
        receiver_pid: u32,
        /// The task reading reports (and, from the source, the one feeding SRC).
        tasks: Vec<JoinHandle<()>>,
    },
}

/// What a stream's receiver has reported.
#[derive(Clone, Copy, Debug, Default)]
struct Streamed {
    /// Bytes written at the receiver, from the start of the file.
    bytes: u64,
    /// The report stream has ended: no more bytes will come over this link.
    ended: bool,
}

/// The link of one edge, if open; its lock serialises opening and closing.
type LinkCell = Arc<tokio::sync::Mutex<Option<Arc<Link>>>>;

struct LinkWriter {
    /// `None` once the link is being closed.
    stdin: Option<openssh::ChildStdin>,
    next_ticket: u64,
}

struct LinkAcks {
    stdout: BufReader<openssh::ChildStdout>,
    /// Tickets whose acknowledgement has been read.
    read: u64,
    /// Acknowledgements read but not yet taken by their hop.
    lines: HashMap<u64, String>,
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

/// How long cleanup commands may take on a host before they are abandoned.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

impl SshTransport {
    /// A transport for `targets`; `chunked` selects chain links instead of whole-file hops.
    /// `run_id` makes temporary names unique to this run.
    pub fn new(
        targets: Vec<Target>,
        opts: SshOptions,
        src: SourceFile,
        layout: Layout,
        chunked: bool,
        run_id: String,
        counters: Arc<ByteCounters>,
    ) -> Self {
        let hop_ssh = HopSsh {
            accept_new_host_keys: opts.accept_new_host_keys,
            connect_timeout_s: opts.connect_timeout.as_secs().max(1),
        };
        SshTransport {
            sessions: targets.iter().map(|_| Mutex::new(None)).collect(),
            targets,
            opts,
            hop_ssh,
            src,
            layout,
            chunked,
            run_id,
            counters,
            state: Arc::new(Mutex::new(State::default())),
        }
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
            let _ = tokio::time::timeout(
                CLEANUP_TIMEOUT,
                self.run(h, &script::cleanup(&pids, &files)),
            )
            .await;
        }
    }

    /// Renames a copy whose digest was checked as it was written into place.
    async fn install_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let out = self
            .run(h, &script::install(tmp, &t.dest, self.src.mode))
            .await?;
        if !out.status.success() {
            return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
        }
        self.forget_temp(h, tmp);
        Ok(())
    }

    async fn finalize_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let out = self
            .run(
                h,
                &script::finalize(tmp, &t.dest, &self.src.digest, self.src.mode),
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
                let mut child = self
                    .spawn(t.to, &script::stream_receive(&to.dest, &tmp))
                    .await?;
                let stderr = collect(child.stderr().take());
                let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
                let pid = read_pid(&mut stdout).await;
                let pid = match pid {
                    Some(p) => p,
                    None => return Err(self.remote_err(t.to, stderr.await.unwrap_or_default())),
                };
                self.register_proc(key, t.to, pid);
                let mut stdin = child.stdin().take().expect("piped");
                // The controller counts what it sends; the receiver's reports only end it.
                let (sent, end) = tokio::join!(
                    async {
                        let sent = self.copy_range(&mut stdin, t.to, 0, self.src.size).await;
                        drop(stdin);
                        sent
                    },
                    read_end_report(stdout, None)
                );
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
                let script =
                    script::send_whole(&self.hop_ssh, &from.dest, &to.spec, &to.dest, &tmp);
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
            if end == Some((self.src.size, self.src.digest.clone())) {
                // Hashed as it was written: only the rename is left.
                self.install_tmp(t.to, &tmp).await
            } else {
                self.finalize_tmp(t.to, &tmp).await
            }
        }
        .await;
        if res.is_err() {
            self.kill(key, &[(t.to, tmp.clone())]).await;
            self.forget_temp(t.to, &tmp);
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

    /// Starts a link's pipeline: on `to` for a link from the source, on `from` otherwise (where
    /// it runs ssh to `to`). Returns once both ends have printed their pids, registered under
    /// `key`; the pid of the receiving end comes last.
    async fn start_pipeline(
        &self,
        key: u64,
        from: HostId,
        to: HostId,
        script: &str,
    ) -> Result<Pipeline, TransportError> {
        let runs_on = if from == HostId::SOURCE { to } else { from };
        let mut child = self.spawn(runs_on, script).await?;
        let stderr = collect(child.stderr().take());
        let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
        let stdin = child.stdin().take().expect("piped");
        let mut pids = vec![(runs_on, read_pid(&mut stdout).await)];
        if from != HostId::SOURCE {
            pids.push((to, read_pid(&mut stdout).await));
        }
        for &(h, p) in &pids {
            if let Some(p) = p {
                self.register_proc(key, h, p);
            }
        }
        match pids.last() {
            Some(&(_, Some(receiver_pid))) if pids.iter().all(|(_, p)| p.is_some()) => {
                Ok(Pipeline {
                    child,
                    stdin,
                    stdout,
                    stderr,
                    receiver_pid,
                })
            }
            _ => {
                // Without its stdin the relay's watcher ends it, if the relay is still waiting.
                drop(stdin);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let err = tokio::time::timeout(Duration::from_secs(1), stderr)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                self.kill(key, &[]).await;
                Err(self.link_err(from, to, failure_text(err.as_bytes(), None)))
            }
        }
    }

    /// Opens a request link (see the module docs).
    async fn spawn_link(&self, from: HostId, to: HostId) -> Result<Link, TransportError> {
        let key = self.new_key();
        let t = self.target(to);
        let to_tmp = self.chain_tmp(to);
        self.add_temp(to, &to_tmp);
        // Chunks written on request may follow a stream: its digest no longer covers them.
        self.state.lock().unwrap().streamed.remove(&to);
        let script = if from == HostId::SOURCE {
            script::receive_chunks(&t.dest, &to_tmp)
        } else {
            let f = self.target(from);
            script::send_chunks(
                &self.hop_ssh,
                &f.dest,
                &self.chain_tmp(from),
                &t.spec,
                &t.dest,
                &to_tmp,
            )
        };
        let p = self.start_pipeline(key, from, to, &script).await?;
        Ok(Link {
            key,
            kind: LinkKind::Requests {
                writer: tokio::sync::Mutex::new(LinkWriter {
                    stdin: Some(p.stdin),
                    next_ticket: 0,
                }),
                acks: tokio::sync::Mutex::new(LinkAcks {
                    stdout: p.stdout,
                    read: 0,
                    lines: HashMap::new(),
                }),
            },
            child: tokio::sync::Mutex::new(Some(p.child)),
            stderr: Mutex::new(Some(p.stderr)),
            reason: Mutex::new(None),
        })
    }

    /// Opens a stream link (see the module docs). A relay from a receiver waits for that
    /// receiver's pid on stdin, which [`Transport::open_links`] passes on.
    async fn spawn_stream(&self, from: HostId, to: HostId) -> Result<Link, TransportError> {
        let key = self.new_key();
        let t = self.target(to);
        let to_tmp = self.chain_tmp(to);
        self.add_temp(to, &to_tmp);
        let script = if from == HostId::SOURCE {
            script::stream_receive(&t.dest, &to_tmp)
        } else {
            script::stream_relay(
                &self.hop_ssh,
                &self.chain_tmp(from),
                self.src.size,
                &t.spec,
                &t.dest,
                &to_tmp,
            )
        };
        let p = self.start_pipeline(key, from, to, &script).await?;
        let (tx, progress) = watch::channel(Streamed::default());
        let mut tasks = vec![tokio::spawn(read_reports(
            p.stdout,
            tx,
            to,
            self.src.size,
            Arc::clone(&self.counters),
            Arc::clone(&self.state),
        ))];
        let stdin = if from == HostId::SOURCE {
            tasks.push(tokio::spawn(feed(self.src.path.clone(), p.stdin)));
            None
        } else {
            Some(p.stdin)
        };
        Ok(Link {
            key,
            kind: LinkKind::Stream {
                progress,
                stdin: tokio::sync::Mutex::new(stdin),
                receiver_pid: p.receiver_pid,
                tasks,
            },
            child: tokio::sync::Mutex::new(Some(p.child)),
            stderr: Mutex::new(Some(p.stderr)),
            reason: Mutex::new(None),
        })
    }

    fn link_err(&self, from: HostId, to: HostId, reason: String) -> TransportError {
        TransportError::Remote {
            host: format!("{} -> {}", self.name(from), self.name(to)),
            reason,
        }
    }

    fn link_cell(&self, from: HostId, to: HostId) -> LinkCell {
        let mut st = self.state.lock().unwrap();
        Arc::clone(st.links.entry((from, to)).or_default())
    }

    /// Closes the stream on `edge` before any chunk used it: the next chunk over the edge
    /// opens a request link instead.
    async fn drop_stream(&self, edge: (HostId, HostId), link: &Arc<Link>) {
        let cell = self.link_cell(edge.0, edge.1);
        let mut guard = cell.lock().await;
        if guard.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            guard.take();
        }
        let child = link.child.lock().await;
        drop(guard);
        self.close_link(link, child, false).await;
    }

    /// Sends one chunk over a request link and waits for its acknowledgement.
    async fn request_chunk(
        &self,
        t: &Transfer,
        offset: u64,
        writer: &tokio::sync::Mutex<LinkWriter>,
        acks: &tokio::sync::Mutex<LinkAcks>,
    ) -> Result<(), TransportError> {
        let closed = |e: std::io::Error| self.link_err(t.from, t.to, format!("link closed: {e}"));

        let ticket = {
            let mut w = writer.lock().await;
            let stdin = w.stdin.as_mut().ok_or_else(|| {
                self.link_err(t.from, t.to, "link closed by an earlier failure".into())
            })?;
            stdin
                .write_all(format!("{offset} {}\n", t.bytes).as_bytes())
                .await
                .map_err(closed)?;
            if t.from == HostId::SOURCE {
                self.copy_range(stdin, t.to, offset, t.bytes).await?;
            }
            stdin.flush().await.map_err(closed)?;
            w.next_ticket += 1;
            w.next_ticket - 1
        };
        let line = loop {
            let mut a = acks.lock().await;
            if let Some(line) = a.lines.remove(&ticket) {
                break line;
            }
            let mut line = String::new();
            if a.stdout.read_line(&mut line).await.map_err(closed)? == 0 {
                return Err(self.link_err(
                    t.from,
                    t.to,
                    "link ended before acknowledging the chunk".into(),
                ));
            }
            let n = a.read;
            a.read += 1;
            a.lines.insert(n, line);
        };
        if line.trim() != format!("ok {offset}") {
            return Err(self.link_err(
                t.from,
                t.to,
                format!("unexpected acknowledgement {:?}", line.trim()),
            ));
        }
        Ok(())
    }

    async fn hop_chunk(&self, t: Transfer) -> Result<(), TransportError> {
        let cell = self.link_cell(t.from, t.to);
        let link = {
            let mut guard = cell.lock().await;
            if guard.is_none() {
                *guard = Some(Arc::new(self.spawn_link(t.from, t.to).await?));
            }
            Arc::clone(guard.as_ref().expect("opened above"))
        };
        let offset = self.layout.offset(t.chunks.start);
        let res = match &link.kind {
            LinkKind::Requests { writer, acks } => {
                self.request_chunk(&t, offset, writer, acks).await
            }
            LinkKind::Stream { progress, .. } => {
                let end = offset + t.bytes;
                let mut rx = progress.clone();
                let got = rx
                    .wait_for(|s| s.bytes >= end || s.ended)
                    .await
                    .map_or(0, |s| s.bytes);
                if got >= end {
                    Ok(())
                } else {
                    Err(self.link_err(
                        t.from,
                        t.to,
                        format!("the stream ended after {got} of {} bytes", self.src.size),
                    ))
                }
            }
        };
        match res {
            Ok(()) => {
                // A stream's reports keep its receiver's count; the source counts its own.
                if t.from != HostId::SOURCE && matches!(link.kind, LinkKind::Requests { .. }) {
                    self.counters.add(t.to, t.bytes);
                }
                Ok(())
            }
            Err(e) => {
                // The first hop to fail closes the link; the others fail with it, and the
                // next chunk on this edge opens a fresh one. The closer takes the child's
                // lock before letting go of the cell, so the others wait for the cause.
                let mut guard = cell.lock().await;
                let reason = match guard.as_ref() {
                    Some(l) if Arc::ptr_eq(l, &link) => {
                        let l = guard.take().expect("checked above");
                        let child = l.child.lock().await;
                        drop(guard);
                        self.close_link(&l, child, false).await
                    }
                    _ => {
                        drop(guard);
                        let _closed = link.child.lock().await;
                        link.reason.lock().unwrap().clone()
                    }
                };
                self.counters.set(t.to, self.layout.offset(t.chunks.start));
                Err(match (e, reason) {
                    (TransportError::Remote { host, reason }, Some(why)) => {
                        TransportError::Remote {
                            host,
                            reason: join(&reason, &why),
                        }
                    }
                    (e, _) => e,
                })
            }
        }
    }

    /// Ends a link: gracefully (closing its input and waiting) or by killing it. Returns what
    /// it printed on stderr.
    async fn close_link(
        &self,
        link: &Link,
        mut child: tokio::sync::MutexGuard<'_, Option<openssh::Child<Arc<Session>>>>,
        graceful: bool,
    ) -> Option<String> {
        // A stream still moving has nothing to finish gracefully: only one that has carried
        // the whole file, or ended, is waited for.
        let graceful = graceful
            && match &link.kind {
                LinkKind::Requests { .. } => true,
                LinkKind::Stream { progress, .. } => {
                    let p = progress.borrow();
                    p.ended || p.bytes >= self.src.size
                }
            };
        if !graceful {
            // Kill first: a hop blocked writing into a stalled link is released by it.
            self.kill(link.key, &[]).await;
        }
        // A request link ends when its input does. A relay ends by itself, and closing its
        // input first would kill it through its watcher.
        let is_stream = matches!(link.kind, LinkKind::Stream { .. });
        if !is_stream {
            link.close_input().await;
        }
        let exited = match child.take() {
            Some(c) if graceful => matches!(
                tokio::time::timeout(Duration::from_secs(3), c.wait()).await,
                Ok(Ok(s)) if s.success()
            ),
            _ => false,
        };
        link.close_input().await;
        if let LinkKind::Stream { tasks, .. } = &link.kind {
            for t in tasks {
                t.abort();
            }
        }
        if exited {
            self.state.lock().unwrap().procs.remove(&link.key);
        } else if graceful {
            self.kill(link.key, &[]).await;
        }
        let stderr = link.stderr.lock().unwrap().take();
        let err = match stderr {
            Some(h) => tokio::time::timeout(Duration::from_secs(1), h)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        let text = last_lines(&err);
        let reason = (!text.is_empty()).then_some(text);
        link.reason.lock().unwrap().clone_from(&reason);
        reason
    }

    async fn close_links(&self, filter: impl Fn(HostId, HostId) -> bool, graceful: bool) {
        let cells: Vec<_> = {
            let mut st = self.state.lock().unwrap();
            let keys: Vec<_> = st
                .links
                .keys()
                .copied()
                .filter(|&(a, b)| filter(a, b))
                .collect();
            keys.into_iter()
                .filter_map(|k| st.links.remove(&k))
                .collect()
        };
        for cell in cells {
            let mut guard = cell.lock().await;
            if let Some(link) = guard.take() {
                let child = link.child.lock().await;
                drop(guard);
                self.close_link(&link, child, graceful).await;
            }
        }
    }

    async fn remove_temps(&self, h: HostId) {
        let files: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .temps
            .remove(&h)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        if !files.is_empty() && h != HostId::SOURCE {
            let _ =
                tokio::time::timeout(CLEANUP_TIMEOUT, self.run(h, &script::cleanup(&[], &files)))
                    .await;
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
        if let Some(f) = &self.opts.config_file {
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
    async fn prepare(&self, host: HostId) -> Result<Probe, TransportError> {
        let s = self.connect(host).await?;
        *self.sessions[host.index() - 1].lock().unwrap() = Some(Arc::new(s));
        let out = self
            .run(host, &script::probe(&self.target(host).dest))
            .await?;
        if !out.status.success() {
            return Err(self.remote_err(host, failure_text(&out.stderr, out.status.code())));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let found = text.split_whitespace().next().unwrap_or("");
        Ok(if found == self.src.digest {
            Probe::UpToDate
        } else {
            Probe::Needed
        })
    }

    async fn hop(&self, t: Transfer) -> Result<(), TransportError> {
        if self.chunked {
            self.hop_chunk(t).await
        } else {
            self.hop_whole(t).await
        }
    }

    async fn open_links(&self, links: &[(HostId, HostId)]) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        if !self.chunked {
            return;
        }
        // All at once: each relay's ssh setup overlaps every other's.
        let mut opening: FuturesUnordered<_> = links
            .iter()
            .map(|&(from, to)| async move {
                let cell = self.link_cell(from, to);
                let mut guard = cell.lock().await;
                if guard.is_some() {
                    return None;
                }
                // An error is met again, and reported, by the first chunk over this edge.
                let link = Arc::new(self.spawn_stream(from, to).await.ok()?);
                *guard = Some(Arc::clone(&link));
                Some(((from, to), link))
            })
            .collect();
        let mut streams: Vec<((HostId, HostId), Arc<Link>)> = Vec::new();
        let mut waiting: Vec<usize> = Vec::new();
        while let Some(opened) = opening.next().await {
            let Some((edge, link)) = opened else { continue };
            if edge.0 != HostId::SOURCE {
                waiting.push(streams.len());
            }
            streams.push((edge, link));
            // A relay from X follows X's stream receiver: tell it which process that is as
            // soon as both are up, so it starts while others are still being set up.
            let mut still = Vec::new();
            for i in waiting.drain(..) {
                let ((from, to), ref relay) = streams[i];
                let upstream = streams.iter().find_map(|((_, t), l)| match &l.kind {
                    LinkKind::Stream { receiver_pid, .. } if *t == from => Some(*receiver_pid),
                    _ => None,
                });
                match upstream {
                    None => still.push(i),
                    Some(pid) => {
                        if !tell_pid(relay, pid).await {
                            // Its chunks go over a request link instead.
                            self.drop_stream((from, to), relay).await;
                        }
                    }
                }
            }
            waiting = still;
        }
        // A relay whose sender has no stream coming in would wait forever.
        for i in waiting {
            let (edge, ref relay) = streams[i];
            self.drop_stream(edge, relay).await;
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
        if streamed.as_deref() == Some(self.src.digest.as_str()) {
            // Hashed as it was written: only the rename is left.
            return self.install_tmp(host, &tmp).await;
        }
        self.finalize_tmp(host, &tmp).await
    }

    async fn is_alive(&self, host: HostId) -> bool {
        let Ok(s) = self.session(host) else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.check()).await,
            Ok(Ok(()))
        )
    }

    async fn discard(&self, host: HostId) {
        self.close_links(|a, b| a == host || b == host, false).await;
        self.remove_temps(host).await;
    }

    async fn shutdown(&self) {
        self.close_links(|_, _| true, true).await;
        let keys: Vec<u64> = self.state.lock().unwrap().procs.keys().copied().collect();
        for k in keys {
            self.kill(k, &[]).await;
        }
        for i in 1..=self.targets.len() {
            self.remove_temps(HostId(i as u32)).await;
        }
        for s in &self.sessions {
            let taken = s.lock().unwrap().take();
            if let Some(s) = taken.and_then(|a| Arc::try_unwrap(a).ok()) {
                let _ = tokio::time::timeout(CLEANUP_TIMEOUT, s.close()).await;
            }
        }
    }
}

/// A link's pipeline once both its ends are running.
struct Pipeline {
    child: openssh::Child<Arc<Session>>,
    stdin: openssh::ChildStdin,
    stdout: BufReader<openssh::ChildStdout>,
    stderr: JoinHandle<String>,
    /// The pid of the receiving end's snippet.
    receiver_pid: u32,
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

/// Reads a stream receiver's reports (see [`script::stream_receive`]) into `tx` and the byte
/// counters, and records the digest of a copy that arrived whole.
async fn read_reports(
    mut stdout: BufReader<openssh::ChildStdout>,
    tx: watch::Sender<Streamed>,
    to: HostId,
    size: u64,
    counters: Arc<ByteCounters>,
    state: Arc<Mutex<State>>,
) {
    let mut line = String::new();
    let mut ended = false;
    loop {
        line.clear();
        match stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if ended {
            continue;
        }
        let n = match Report::parse(&line) {
            Some(Report::At(n)) => n,
            Some(Report::End(n, digest)) => {
                ended = true;
                if n == size {
                    state.lock().unwrap().streamed.insert(to, digest);
                }
                n
            }
            None => continue,
        };
        let n = n.min(size);
        counters.set(to, n);
        tx.send_modify(|s| s.bytes = s.bytes.max(n));
    }
    tx.send_modify(|s| s.ended = true);
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

/// Streams the file at `path` into a stream receiver's stdin, then closes it.
async fn feed(path: PathBuf, mut stdin: openssh::ChildStdin) {
    // A failure shows as a short stream in the receiver's report.
    if let Ok(mut f) = tokio::fs::File::open(&path).await {
        if tokio::io::copy(&mut f, &mut stdin).await.is_ok() {
            let _ = stdin.shutdown().await;
        }
    }
}

/// Starts a relay: writes the pid it is to follow into its stdin. False if it is gone.
async fn tell_pid(relay: &Link, pid: u32) -> bool {
    let LinkKind::Stream { stdin, .. } = &relay.kind else {
        return false;
    };
    let mut stdin = stdin.lock().await;
    match stdin.as_mut() {
        Some(w) => {
            w.write_all(format!("{pid}\n").as_bytes()).await.is_ok() && w.flush().await.is_ok()
        }
        None => false,
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
    let mut s = e.to_string();
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
