//! The chain's transport: one long-lived pipeline per edge X → Y, of two kinds.
//!
//! - *Streams*, for the links the strategy plans ahead
//!   ([`crate::run::transport::Transport::open_links`]): each set up as soon as both its
//!   hosts have joined, all at once; the source streams SRC into the first host, and every
//!   host relays its copy to the next while it receives it. No request and no acknowledgement sits between the
//!   hops: the receivers report their byte counts to the controller on the side, and those
//!   reports end the core's chunk transfers.
//! - *Request links*, for every other edge (a host cut out of the chain, a stream that
//!   broke): the controller writes one request line per chunk into the link on X; X sends
//!   header and bytes to Y's receive loop, whose acknowledgement flows back through X.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::Session;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::core::{HostId, Layout, Transfer, TransferId};

use super::super::remote;
use super::super::transport::{
    ByteCounters, CleanupFailure, Prepared, Probe, ThenOutcome, Transport, TransportError,
};
use super::hosts::Hosts;
use super::reports::{collect, failure_text, join, last_lines, read_pid, RelayLine, Report};

/// Digests of the copies streamed whole, from their receivers' `end` reports; shared with
/// the tasks that read those reports.
type Streamed = Arc<Mutex<HashMap<HostId, String>>>;

/// The transport of the chain strategy.
pub(super) struct ChainLinks {
    pub(super) hosts: Hosts,
    /// How the file is cut into the core's chunks.
    pub(super) layout: Layout,
    /// The link of each edge.
    links: Mutex<HashMap<(HostId, HostId), LinkCell>>,
    /// By edge: the fence of a relay still being opened (see [`remote::create_fence`]),
    /// which [`ChainLinks::cut_links_into`] removes rather than wait for the relay's sender.
    fences: Mutex<HashMap<(HostId, HostId), (u64, String)>>,
    /// Keys of the relays whose fence a cut removed: their opening fails as rerouted.
    fenced_off: Mutex<HashSet<u64>>,
    /// Edges whose link was cut, its receiver being fed another way, and not opened again
    /// since: a hop planned over one before the cut fails at once, rather than open a
    /// request link from the sender it was cut from.
    cut_edges: Mutex<HashSet<(HostId, HostId)>>,
    streamed: Streamed,
    /// By host: true once its DEST holds the verified file (it was up to date, or its copy
    /// was renamed into place). Locked while a copy is renamed and while a relay from the
    /// host opens the copy it reads (see `spawn_stream`).
    placed: Vec<tokio::sync::Mutex<bool>>,
    /// By host: set once it is given up, which stops a relay from it that is still waiting
    /// for a copy to open (see `spawn_stream`).
    gone: Vec<watch::Sender<bool>>,
    /// By edge: the transfers started on it and not yet written to its link, in the order
    /// the driver started them. A request link takes them in this order, whatever order
    /// their tasks run in: a receiver's copy must grow from its end, for the relay that
    /// follows it (see [`remote::stream_relay`]).
    queues: Mutex<HashMap<(HostId, HostId), VecDeque<TransferId>>>,
    /// Woken whenever a transfer leaves its queue.
    turn: tokio::sync::Notify,
    /// Where each stream's progress goes (see [`Transport::take_progress`]), and the end the
    /// driver takes.
    progress: mpsc::UnboundedSender<(HostId, u64)>,
    progress_rx: Mutex<Option<mpsc::UnboundedReceiver<(HostId, u64)>>>,
}

/// A transfer's place in its edge's queue; leaving it (or dropping it, when the hop ends
/// or is cancelled) lets the next one go.
struct Turn<'a> {
    links: &'a ChainLinks,
    edge: (HostId, HostId),
    id: TransferId,
}

impl Turn<'_> {
    /// Waits until this transfer is the first of its edge's queue.
    async fn wait(&self) {
        loop {
            let notified = self.links.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let first = self
                .links
                .queues
                .lock()
                .unwrap()
                .get(&self.edge)
                .and_then(|q| q.front().copied());
            if first.is_none_or(|f| f == self.id) {
                return;
            }
            notified.await;
        }
    }

    /// Leaves the queue: the next transfer on the edge may write.
    fn leave(&self) {
        let mut queues = self.links.queues.lock().unwrap();
        if let Some(q) = queues.get_mut(&self.edge) {
            q.retain(|&i| i != self.id);
            if q.is_empty() {
                queues.remove(&self.edge);
            }
        }
        drop(queues);
        self.links.turn.notify_waiters();
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl std::ops::Deref for ChainLinks {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

/// A chain link X → Y: the pipeline on the hosts and how the controller talks to it.
pub(super) struct Link {
    key: u64,
    kind: LinkKind,
    /// Held by whoever closes the link, until `reason` is known.
    child: tokio::sync::Mutex<Option<openssh::Child<Arc<Session>>>>,
    stderr: Mutex<Option<JoinHandle<String>>>,
    /// What the link printed on stderr when it was closed: the cause every chunk that was in
    /// flight on it failed for.
    reason: Mutex<Option<String>>,
    /// It was ended on purpose, its receiver being fed another way (see
    /// [`TransportError::Rerouted`]).
    cut: std::sync::atomic::AtomicBool,
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
        progress: watch::Receiver<StreamProgress>,
        /// The relay's stdin, held open for the relay's watcher. Empty for the source's link,
        /// whose feeding task owns it.
        stdin: tokio::sync::Mutex<Option<openssh::ChildStdin>>,
        /// The task reading reports (and, from the source, the one feeding SRC).
        tasks: Vec<JoinHandle<()>>,
        /// Why feeding SRC into the stream stopped early, for a link from the source: the
        /// cause behind a stream that ended short.
        feed_error: Arc<Mutex<Option<super::feed::FeedError>>>,
    },
}

/// What a stream's receiver has reported.
#[derive(Clone, Copy, Debug, Default)]
struct StreamProgress {
    /// Bytes written at the receiver, from the start of the file.
    bytes: u64,
    /// The report stream has ended: no more bytes will come over this link.
    ended: bool,
}

/// The link of one edge, if open; its lock serialises opening and closing.
pub(super) type LinkCell = Arc<tokio::sync::Mutex<Option<Arc<Link>>>>;

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

/// A link's pipeline once both its ends are running.
struct Pipeline {
    child: openssh::Child<Arc<Session>>,
    /// The controller's end of its stdin; `None` when a feed of SRC is its stdin.
    stdin: Option<openssh::ChildStdin>,
    stdout: BufReader<openssh::ChildStdout>,
    stderr: JoinHandle<String>,
}

impl ChainLinks {
    /// The chain's transport over `hosts`, for a file cut as `layout`.
    /// Replaces what is sent and how it is cut (see `SshTransport::set_source`).
    pub(super) fn set_source(&mut self, src: super::SourceFile, layout: Layout) {
        self.hosts.src = src;
        self.layout = layout;
    }

    pub(super) fn new(hosts: Hosts, layout: Layout) -> Self {
        let (progress, progress_rx) = mpsc::unbounded_channel();
        ChainLinks {
            progress,
            progress_rx: Mutex::new(Some(progress_rx)),
            placed: (0..=hosts.targets.len())
                .map(|_| tokio::sync::Mutex::new(false))
                .collect(),
            gone: (0..=hosts.targets.len())
                .map(|_| watch::channel(false).0)
                .collect(),
            queues: Mutex::new(HashMap::new()),
            turn: tokio::sync::Notify::new(),
            hosts,
            layout,
            links: Mutex::new(HashMap::new()),
            fences: Mutex::new(HashMap::new()),
            fenced_off: Mutex::new(HashSet::new()),
            cut_edges: Mutex::new(HashSet::new()),
            streamed: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The temporary file host `h` receives the chain into. The host index keeps two names
    /// for one machine from sharing a temporary file.
    fn chain_tmp(&self, h: HostId) -> String {
        remote::temp_path(&self.target(h).dest, &self.run_id, &format!("-h{}", h.0))
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
        let mut f = tokio::fs::File::open(self.src.send_path())
            .await
            .map_err(local)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(local)?;
        let mut left = len;
        let step = self.pacer.as_ref().map_or(256 << 10, |p| p.step(256 << 10));
        let mut buf = vec![0u8; step];
        while left > 0 {
            let want = buf.len().min(left as usize);
            if let Some(p) = &self.pacer {
                tokio::time::sleep(p.reserve(want as u64)).await;
            }
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
    /// `key`; the pid of the receiving end comes last, except for a chain relay (`relay` is
    /// `Some`), whose own line is tagged and may come first or last (see
    /// [`remote::stream_relay`]); the sender's `placed` guard it carries is let go as soon
    /// as the relay says it has opened its copy. With `fed`, that pipe is the pipeline's
    /// stdin instead of one the controller writes.
    async fn start_pipeline(
        &self,
        key: u64,
        from: HostId,
        to: HostId,
        script: &str,
        fed: Option<std::os::fd::OwnedFd>,
        relay: Option<Option<tokio::sync::MutexGuard<'_, bool>>>,
    ) -> Result<Pipeline, TransportError> {
        let runs_on = if from == HostId::SOURCE { to } else { from };
        let mut child = match fed {
            Some(fd) => self.spawn_fed(runs_on, script, fd).await?,
            None => self.spawn(runs_on, script).await?,
        };
        let stderr = collect(child.stderr().take(), self.tap(runs_on, script));
        let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
        let stdin = child.stdin().take();
        // Each pid is registered as soon as it is read: an interrupt while the relay's ssh
        // to `to` is still in its handshake must find what is already running. (A relay
        // still waiting for its copy is not registered yet; closing its stdin ends it.)
        let mut pids = Vec::new();
        if let Some(mut placed) = relay {
            // The relay's own line and its receiver's, in either order, with the receiver's
            // reports skipped while the relay waits for its copy.
            let mut line = String::new();
            while pids.len() < 2 {
                line.clear();
                let read = stdout.read_line(&mut line).await.unwrap_or(0);
                let (h, p) = match (read, RelayLine::parse(&line)) {
                    (0, _) | (_, None) => (runs_on, None),
                    (_, Some(RelayLine::Progress)) => continue,
                    (_, Some(RelayLine::Relay(p))) => {
                        // The copy is open: it may be renamed into place from now on.
                        placed.take();
                        (runs_on, Some(p))
                    }
                    (_, Some(RelayLine::Receiver(p))) => (to, Some(p)),
                };
                let repeated = pids.iter().any(|&(seen, _)| seen == h);
                match p {
                    Some(p) if !repeated => {
                        self.register_proc(key, h, p);
                        pids.push((h, Some(p)));
                    }
                    _ => {
                        pids.push((h, None));
                        break;
                    }
                }
            }
        } else {
            let first = read_pid(&mut stdout).await;
            if let Some(p) = first {
                self.register_proc(key, runs_on, p);
            }
            pids.push((runs_on, first));
            if from != HostId::SOURCE && first.is_some() {
                let second = read_pid(&mut stdout).await;
                if let Some(p) = second {
                    self.register_proc(key, to, p);
                }
                pids.push((to, second));
            }
        }
        match pids.last() {
            Some(&(_, Some(_))) if pids.iter().all(|(_, p)| p.is_some()) => Ok(Pipeline {
                child,
                stdin,
                stdout,
                stderr,
            }),
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
        self.streamed.lock().unwrap().remove(&to);
        let script = if from == HostId::SOURCE {
            remote::receive_chunks(&t.dest, &to_tmp)
        } else {
            let from_tmp = self.chain_tmp(from);
            // Compressed, the chunks are the compressed copy's, which only the temporary
            // file holds (a host that was up to date has none, and the hop fails).
            let from_dest = match self.src.sends_copy() {
                true => from_tmp.clone(),
                false => self.target(from).dest.clone(),
            };
            remote::send_chunks(
                &self.hop_ssh,
                &from_dest,
                &from_tmp,
                &t.spec,
                &t.dest,
                &to_tmp,
            )
        };
        let p = self
            .start_pipeline(key, from, to, &script, None, None)
            .await?;
        Ok(Link {
            key,
            kind: LinkKind::Requests {
                writer: tokio::sync::Mutex::new(LinkWriter {
                    stdin: p.stdin,
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
            cut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Opens a stream link (see the module docs). A relay from a receiver X reads X's
    /// temporary file, or its DEST once X's copy is in place; X's `placed` lock is held
    /// until the relay says it has opened it, so the rename cannot slip between the choice
    /// and the open.
    async fn spawn_stream(&self, from: HostId, to: HostId) -> Result<Link, TransportError> {
        let key = self.new_key();
        let t = self.target(to);
        let to_tmp = self.chain_tmp(to);
        let resume = self.resume_point(from, to, &to_tmp).await?;
        let from_tmp = match from {
            HostId::SOURCE => String::new(),
            _ => self.chain_tmp(from),
        };
        let placed = match from {
            HostId::SOURCE => None,
            _ => Some(self.placed[from.index()].lock().await),
        };
        self.add_temp(to, &to_tmp);
        // Into a copy this run already wrote to, only what it lacks goes.
        let offset = resume.unwrap_or(0);
        let size = self.src.send_size();
        let dec = remote::decoded_path(&to_tmp);
        let decode = self.decode_into(&dec);
        if decode.is_some() {
            self.add_temp(to, &dec);
        }
        let behind = self.unpack_behind(to);
        let receive = match (resume, &behind) {
            // What an earlier stream into this copy unpacked no longer covers it: the copy
            // is unpacked from scratch once it is whole.
            (Some(n), Some(u)) => {
                remote::stream_resume(&to_tmp, n, size, self.hasher(to), decode, Some(&u.mark))
            }
            (Some(n), None) => {
                remote::stream_resume(&to_tmp, n, size, self.hasher(to), decode, None)
            }
            (None, _) => remote::stream_receive_unpacking(
                &t.dest,
                &to_tmp,
                self.hasher(to),
                decode,
                behind.as_ref().map(|p| self.behind(to, p)).as_ref(),
            ),
        };
        // A relay's receiving end is started by its sender, which may be slow to start it (a
        // slow host's link drops the packets of its new connections): fenced, a cut of this
        // link need not wait for that (see `cut_links_into`).
        let fence = match from {
            HostId::SOURCE => None,
            _ => Some(self.raise_fence(from, to, key).await?),
        };
        let receive = match &fence {
            Some(f) => format!("{}{receive}", remote::pass_fence(f)),
            None => receive,
        };
        let script = match &placed {
            None => receive,
            Some(installed) => {
                let from_dest = &self.target(from).dest;
                let relay_from = match (self.src.codec(), **installed) {
                    (None, true) if !self.src.sends_copy() => {
                        remote::RelayFrom::Installed(from_dest)
                    }
                    // Compressed, a copy in place keeps its compressed bytes in its
                    // temporary file; one that was up to date has none, and compresses its
                    // DEST on the way.
                    (Some(codec), true) if self.wire_copy(from).is_none() => {
                        remote::RelayFrom::Compressing(from_dest, codec)
                    }
                    _ => remote::RelayFrom::Receiving(&from_tmp),
                };
                remote::stream_relay(&self.hop_ssh, relay_from, offset..size, &t.spec, &receive)
            }
        };
        // From the source, SRC is the stream's stdin, fed by the kernel (see `ssh/feed.rs`).
        let mut feed = if from == HostId::SOURCE {
            let f = super::feed::Feed::start(
                self.src.send_path(),
                offset,
                size - offset,
                None,
                self.pacer.clone(),
            )
            .map_err(|e| self.link_err(from, to, format!("cannot make a pipe: {e}")))?;
            Some(f)
        } else {
            None
        };
        let fed = feed.as_mut().and_then(|f| f.reader.take());
        // A relay waits for its sender's copy to appear; if the sender is given up meanwhile,
        // dropping the pipeline closes the relay's stdin and its watcher ends it.
        let mut gone = self.gone[from.index()].subscribe();
        let started = tokio::select! {
            p = self.start_pipeline(key, from, to, &script, fed, placed.map(Some)) => p,
            () = async { drop(gone.wait_for(|g| *g).await) } => {
                self.kill(key, &[]).await;
                Err(self.link_err(from, to, format!("{} was given up", self.name(from))))
            }
        };
        if let Some(f) = &fence {
            // Its own entry only: the same edge may be opening again by now.
            let mut fences = self.fences.lock().unwrap();
            if fences.get(&(from, to)).is_some_and(|(k, _)| *k == key) {
                fences.remove(&(from, to));
            }
            drop(fences);
            if started.is_ok() {
                // Its receiving end removed it as it started.
                self.forget_temp(to, f);
            }
        }
        let p = match started {
            Err(e) if self.fenced_off.lock().unwrap().remove(&key) => {
                return Err(TransportError::Rerouted {
                    link: format!("{} -> {}", self.name(from), self.name(to)),
                    reason: format!("{e}; {} is fed another way", self.name(to)),
                })
            }
            p => p?,
        };
        let (tx, progress) = watch::channel(StreamProgress::default());
        let mut tasks = vec![tokio::spawn(read_reports(
            p.stdout,
            tx,
            to,
            size,
            Arc::clone(&self.counters),
            Arc::clone(&self.streamed),
            self.progress.clone(),
        ))];
        let feed_error = Arc::new(Mutex::new(None));
        if let Some(mut feed) = feed {
            let err = Arc::clone(&feed_error);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = feed.finished().await {
                    *err.lock().unwrap() = Some(e);
                }
            }));
        }
        let stdin = p.stdin;
        Ok(Link {
            key,
            kind: LinkKind::Stream {
                progress,
                stdin: tokio::sync::Mutex::new(stdin),
                tasks,
                feed_error,
            },
            child: tokio::sync::Mutex::new(Some(p.child)),
            stderr: Mutex::new(Some(p.stderr)),
            reason: Mutex::new(None),
            cut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Creates the fence of a relay from `from` into `to` about to be opened under `key` (see
    /// [`remote::create_fence`]), and records it until the relay is open.
    async fn raise_fence(
        &self,
        from: HostId,
        to: HostId,
        key: u64,
    ) -> Result<String, TransportError> {
        let dest = &self.target(to).dest;
        let fence = remote::temp_path(dest, &self.run_id, &format!("-h{}-link{key}", to.0));
        self.add_temp(to, &fence);
        let out = self.run(to, &remote::create_fence(dest, &fence)).await?;
        if !out.status.success() {
            return Err(self.remote_err(
                to,
                format!(
                    "cannot create {fence}: {}",
                    failure_text(&out.stderr, out.status.code())
                ),
            ));
        }
        self.fences
            .lock()
            .unwrap()
            .insert((from, to), (key, fence.clone()));
        Ok(fence)
    }

    /// Where a stream from `from` into `to` resumes: `None` for a host nothing was sent to
    /// yet in this run (a new copy is created), or the length of its copy `to_tmp` when a
    /// link into it was already set up (the host that fed it was lost, or cut out for being
    /// slow). Every other link into `to` is cut first, at `to`'s end, so that nothing else
    /// writes to the copy; the stream then carries only the rest, and the core's chunks
    /// below that length arrive with its first report.
    async fn resume_point(
        &self,
        from: HostId,
        to: HostId,
        to_tmp: &str,
    ) -> Result<Option<u64>, TransportError> {
        // First, so that a link into `to` still being set up has registered its copy.
        self.cut_links_into(to, Some(from)).await;
        if !self.has_temp(to, to_tmp) {
            return Ok(None);
        }
        let out = self.run(to, &remote::copy_length(to_tmp)).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim() {
            "" => Ok(None),
            n => n
                .parse::<u64>()
                .map(|n| Some(n.min(self.src.send_size())))
                .map_err(|_| {
                    self.remote_err(to, format!("cannot read the length of {to_tmp}: {n:?}"))
                }),
        }
    }

    /// Cuts every link into `to` but the one from `keep`: stops its processes on `to` (a
    /// sender that was lost may not answer; what runs there stays registered for cleanup),
    /// so that nothing more is written to `to`'s copy over it. The transfers waiting on it
    /// fail.
    async fn cut_links_into(&self, to: HostId, keep: Option<HostId>) {
        let cells: Vec<((HostId, HostId), LinkCell)> = {
            let mut links = self.links.lock().unwrap();
            let keys: Vec<_> = links
                .keys()
                .copied()
                .filter(|&(a, b)| b == to && Some(a) != keep)
                .collect();
            keys.into_iter()
                .filter_map(|k| Some((k, links.remove(&k)?)))
                .collect()
        };
        for (edge, cell) in cells {
            self.cut_edges.lock().unwrap().insert(edge);
            let mut guard = match cell.try_lock() {
                Ok(g) => g,
                Err(_) => {
                    // Being opened. A relay whose receiving end has not started yet is
                    // stopped by removing its fence, without waiting for its sender, which
                    // may be the slow host this cut is for; one whose end has started must
                    // be waited for, and killed.
                    let fence = self.fences.lock().unwrap().get(&edge).cloned();
                    if let Some((key, f)) = fence {
                        let cut = self.run(to, &remote::cut_fence(&f)).await;
                        if cut.is_ok_and(|o| o.stdout.starts_with(b"cut")) {
                            self.fenced_off.lock().unwrap().insert(key);
                            self.forget_temp(to, &f);
                            continue;
                        }
                    }
                    cell.lock().await
                }
            };
            let Some(link) = guard.take() else { continue };
            let mut child = link.child.lock().await;
            drop(guard);
            self.kill_on(link.key, to).await;
            if let LinkKind::Stream { tasks, .. } = &link.kind {
                for t in tasks {
                    t.abort();
                }
            }
            link.close_input().await;
            *link.reason.lock().unwrap() = Some(format!("{} is fed another way", self.name(to)));
            link.cut.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(child.take());
        }
    }

    fn link_err(&self, from: HostId, to: HostId, reason: String) -> TransportError {
        TransportError::Remote {
            host: format!("{} -> {}", self.name(from), self.name(to)),
            reason,
        }
    }

    fn link_cell(&self, from: HostId, to: HostId) -> LinkCell {
        let mut links = self.links.lock().unwrap();
        Arc::clone(links.entry((from, to)).or_default())
    }

    /// Records that `t` starts now (see [`Transport::starting`]).
    pub(super) fn starting(&self, t: &Transfer) {
        let mut queues = self.queues.lock().unwrap();
        queues.entry((t.from, t.to)).or_default().push_back(t.id);
    }

    /// Sends one chunk over a request link, in its turn, and waits for its acknowledgement.
    async fn request_chunk(
        &self,
        t: &Transfer,
        turn: &Turn<'_>,
        offset: u64,
        writer: &tokio::sync::Mutex<LinkWriter>,
        acks: &tokio::sync::Mutex<LinkAcks>,
    ) -> Result<(), TransportError> {
        let closed = |e: std::io::Error| self.link_err(t.from, t.to, format!("link closed: {e}"));

        turn.wait().await;
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
            turn.leave();
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

    /// Carries one chunk over the link of its edge, opening a request link if none is open.
    pub(super) async fn hop_chunk(&self, t: Transfer) -> Result<(), TransportError> {
        let turn = Turn {
            links: self,
            edge: (t.from, t.to),
            id: t.id,
        };
        let cell = self.link_cell(t.from, t.to);
        let link = {
            let mut guard = cell.lock().await;
            if guard.is_none() {
                if self.cut_edges.lock().unwrap().contains(&(t.from, t.to)) {
                    // Planned before its link was cut: its receiver is fed another way.
                    return Err(TransportError::Rerouted {
                        link: format!("{} -> {}", self.name(t.from), self.name(t.to)),
                        reason: format!("{} is fed another way", self.name(t.to)),
                    });
                }
                *guard = Some(Arc::new(self.spawn_link(t.from, t.to).await?));
            }
            Arc::clone(guard.as_ref().expect("opened above"))
        };
        let offset = self.layout.offset(t.chunks.start);
        let res = match &link.kind {
            LinkKind::Requests { writer, acks } => {
                self.request_chunk(&t, &turn, offset, writer, acks).await
            }
            LinkKind::Stream {
                progress,
                feed_error,
                ..
            } => {
                let end = offset + t.bytes;
                let mut rx = progress.clone();
                let got = rx
                    .wait_for(|s| s.bytes >= end || s.ended)
                    .await
                    .map_or(0, |s| s.bytes);
                if got >= end {
                    Ok(())
                } else {
                    let short = format!(
                        "the stream ended after {got} of {} bytes",
                        self.src.send_size()
                    );
                    match feed_error.lock().unwrap().clone() {
                        // The source's own side failed: say what, not just that it was short.
                        Some(super::feed::FeedError::Read(e)) => Err(TransportError::Local {
                            path: self.src.path.display().to_string(),
                            reason: format!("reading {e} ({short})"),
                        }),
                        Some(super::feed::FeedError::Send(e)) => {
                            Err(self.link_err(t.from, t.to, format!("{short}: sending: {e}")))
                        }
                        None => Err(self.link_err(t.from, t.to, short)),
                    }
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
                if link.cut.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(TransportError::Rerouted {
                        link: format!("{} -> {}", self.name(t.from), self.name(t.to)),
                        reason: join(
                            &match e {
                                TransportError::Remote { reason, .. } => reason,
                                e => e.to_string(),
                            },
                            reason.as_deref().unwrap_or("its link was ended"),
                        ),
                    });
                }
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
                    p.ended || p.bytes >= self.src.send_size()
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
        if let LinkKind::Stream {
            tasks, progress, ..
        } = &link.kind
        {
            if exited {
                // The receiver's last lines (its `end`, with the digest that spares a read
                // back) may still be unread when its exit is: reading ends at their end.
                let mut rx = progress.clone();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| s.ended)).await;
            }
            for t in tasks {
                t.abort();
            }
        }
        if exited {
            self.registry.lock().unwrap().procs.remove(&link.key);
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

    /// Closes every link whose edge passes `filter`; see `close_link` for `graceful`.
    pub(super) async fn close_links(
        &self,
        filter: impl Fn(HostId, HostId) -> bool,
        graceful: bool,
    ) {
        let cells: Vec<_> = {
            let mut links = self.links.lock().unwrap();
            let keys: Vec<_> = links
                .keys()
                .copied()
                .filter(|&(a, b)| filter(a, b))
                .collect();
            keys.into_iter().filter_map(|k| links.remove(&k)).collect()
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

    /// Opens `links` as streams, all at once (see [`Transport::open_links`]), and returns why
    /// each that could not be opened failed. A relay needs nothing from the link into its
    /// sender (it follows the sender's file), so links planned later, as hosts join, open
    /// the same way.
    pub(super) async fn open_streams(&self, links: &[(HostId, HostId)]) -> Vec<TransportError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        // All at once: each relay's ssh setup overlaps every other's.
        let opening: FuturesUnordered<_> = links
            .iter()
            .map(|&(from, to)| async move {
                // Planned again: its hops go over it again.
                self.cut_edges.lock().unwrap().remove(&(from, to));
                let cell = self.link_cell(from, to);
                let mut guard = cell.lock().await;
                if guard.is_none() {
                    // Otherwise the first chunk over this edge opens a request link instead.
                    *guard = Some(Arc::new(self.spawn_stream(from, to).await?));
                }
                Ok(())
            })
            .collect();
        opening
            .filter_map(|r: Result<(), TransportError>| async move { r.err() })
            .collect()
            .await
    }

    /// Lets go of every link at shutdown without running anything on the hosts: their
    /// processes stay registered, and [`Transport::shutdown`] kills them with everything else
    /// on each host in one command.
    pub(super) async fn abandon_links(&self) {
        let cells: Vec<LinkCell> = {
            let mut links = self.links.lock().unwrap();
            links.drain().map(|(_, c)| c).collect()
        };
        for cell in cells {
            let taken = cell.lock().await.take();
            if let Some(link) = taken {
                if let LinkKind::Stream { tasks, .. } = &link.kind {
                    for t in tasks {
                        t.abort();
                    }
                }
                drop(link.child.lock().await.take());
            }
        }
    }
}

/// Reads a stream receiver's reports (see [`remote::stream_receive`]) into `tx`, the byte
/// counters and the driver's `progress`, and records the digest of a copy that arrived whole.
async fn read_reports(
    mut stdout: BufReader<openssh::ChildStdout>,
    tx: watch::Sender<StreamProgress>,
    to: HostId,
    size: u64,
    counters: Arc<ByteCounters>,
    streamed: Streamed,
    progress: mpsc::UnboundedSender<(HostId, u64)>,
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
                    streamed.lock().unwrap().insert(to, digest);
                }
                n
            }
            Some(Report::Part(..)) | None => continue,
        };
        let n = n.min(size);
        counters.set(to, n);
        // Before the hops that wait on `tx` end, so that the core measures the rate in bytes
        // first; a driver that is gone is no reason to stop.
        let _ = progress.send((to, n));
        tx.send_modify(|s| s.bytes = s.bytes.max(n));
    }
    tx.send_modify(|s| s.ended = true);
}

impl Transport for ChainLinks {
    fn take_progress(&self) -> Option<mpsc::UnboundedReceiver<(HostId, u64)>> {
        self.progress_rx.lock().unwrap().take()
    }

    async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
        let prepared = self.hosts.prepare(host).await?;
        if prepared.probe == Probe::UpToDate {
            *self.placed[host.index()].lock().await = true;
        }
        Ok(prepared)
    }

    async fn hop(&self, t: Transfer) -> Result<(), TransportError> {
        match self.hop_chunk(t).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.classify(&t, e).await),
        }
    }

    async fn open_links(&self, links: &[(HostId, HostId)]) -> Vec<TransportError> {
        self.open_streams(links).await
    }

    async fn finalize(&self, host: HostId) -> Result<(), TransportError> {
        // Nothing will be written to it any more.
        self.close_links(|_, to| to == host, true).await;
        let tmp = self.chain_tmp(host);
        let streamed = self.streamed.lock().unwrap().remove(&host);
        let digest = self.src_digest().await?;
        let mut placed = self.placed[host.index()].lock().await;
        if streamed.as_deref() == Some(digest.as_str()) {
            // Hashed as it was written: only the rename is left.
            self.install_tmp(host, &tmp).await?;
        } else {
            self.finalize_tmp(host, &tmp).await?;
        }
        *placed = true;
        Ok(())
    }

    async fn recheck(&self, host: HostId) -> Result<(), TransportError> {
        self.check_dest(host).await
    }

    async fn reset(&self, host: HostId) {
        // Nothing more goes into its copy, and nothing more is relayed from it.
        self.cut_links_into(host, None).await;
        self.close_links(|from, _| from == host, false).await;
        self.streamed.lock().unwrap().remove(&host);
        let mut placed = self.placed[host.index()].lock().await;
        let tmp = self.chain_tmp(host);
        let mut files = vec![(host, remote::decoded_path(&tmp)), (host, tmp)];
        self.set_wire_copy(host, None);
        if *placed {
            // A relay set up from now on waits for its new copy, not this one.
            *placed = false;
            // A tree in place was checked file by file against the manifest, whatever its
            // archive copy holds: it stays.
            if self.src.pack.is_none() {
                files.push((host, self.target(host).dest.clone()));
            }
        }
        self.kill(self.new_key(), &files).await;
    }

    async fn then(&self, host: HostId, command: &str) -> Result<ThenOutcome, TransportError> {
        self.hosts.run_then(host, command).await
    }

    async fn discard(&self, host: HostId) {
        self.gone[host.index()].send_replace(true);
        self.close_links(|a, b| a == host || b == host, false).await;
        self.remove_temps(host).await;
    }

    async fn shutdown(&self) -> Vec<CleanupFailure> {
        // Links first, without waiting on any: what they leave is cleaned up per host.
        self.abandon_links().await;
        self.hosts.shutdown_all().await
    }
}
