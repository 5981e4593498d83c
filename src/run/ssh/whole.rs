//! Whole-file hops, for linear and bounce: each hop sends the whole file to one receiver,
//! from the controller or from a host that holds it, and ends with that copy verified and
//! renamed into place.
//!
//! - controller → Y: SRC is fed into a receiver on Y over Y's connection (`ssh/feed.rs`);
//! - X → Y: a pipeline on X runs `ssh Y` with X's own ssh setup, so the bytes never pass
//!   through the controller.

use std::sync::Arc;

use tokio::io::BufReader;

use crate::core::{HostId, Transfer};

use super::super::remote;
use super::super::split;
use super::super::transport::{CleanupFailure, Prepared, ThenOutcome, Transport, TransportError};
use super::feed;
use super::hosts::Hosts;
use super::reports::{
    collect, error_chain, failure_text, join, last_lines, read_pid, read_reports, Ends,
};

/// The transport of the whole-file strategies.
pub(super) struct WholeFileHops {
    pub(super) hosts: Hosts,
}

impl std::ops::Deref for WholeFileHops {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

impl WholeFileHops {
    pub(super) async fn hop_whole(&self, t: Transfer) -> Result<(), TransportError> {
        let size = self.src.send_size();
        let parts = split::parts(size, self.opts.streams);
        // A host that compresses its DEST on the way has no compressed copy to cut.
        if parts.len() > 1 && (t.from == HostId::SOURCE || self.send_from(t.from).1.is_none()) {
            return self.hop_parts(t, &parts).await;
        }
        let key = self.new_key();
        let to = self.target(t.to).clone();
        let tmp = remote::temp_path(&to.dest, &self.run_id, &format!("-t{}", t.id.0));
        let dec = remote::decoded_path(&tmp);
        let decode = self.decode_into(&dec);
        self.add_temp(t.to, &tmp);
        if decode.is_some() {
            self.add_temp(t.to, &dec);
        }
        let behind = self.unpack_behind(t.to);
        let receive = remote::stream_receive_unpacking(
            &to.dest,
            &tmp,
            self.hasher(t.to),
            decode,
            behind.as_ref().map(|p| self.behind(t.to, p)).as_ref(),
        );
        self.counters.set(t.to, 0);
        let res = async {
            let end = if t.from == HostId::SOURCE {
                let session = self.session(t.to)?;
                self.fed(key, t.to, session, &receive, 0..size).await?.end
            } else {
                let (from, compressing) = self.send_from(t.from);
                let from = match compressing {
                    Some(codec) => remote::SendFrom::Compressing(&from, codec),
                    None => remote::SendFrom::File(&from),
                };
                let script = remote::send_whole(&self.hop_ssh, from, &to.spec, &receive, size);
                self.sent_by_host(key, t, &script, size).await?.end
            };
            let digest = self.src_digest().await?;
            self.place(t.to, &tmp, end == Some((size, digest))).await
        }
        .await;
        self.settle(key, t.to, &tmp, res).await
    }

    /// Runs `script`, a hop's pipeline on its sending host X ([`remote::send_whole`] or
    /// [`remote::send_parts`]), to its end, and returns what the receivers on Y reported.
    /// X prints its pid first; every other pid line is a receiver's. The channel's stdin is
    /// held open until the hop ends: its closing tells the watcher on X to stop.
    pub(super) async fn sent_by_host(
        &self,
        key: u64,
        t: Transfer,
        script: &str,
        size: u64,
    ) -> Result<Ends, TransportError> {
        let mut child = self.spawn(t.from, script).await?;
        let keep_open = child.stdin().take();
        let stderr = collect(child.stderr().take(), self.tap(t.from, script));
        let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
        if let Some(p) = read_pid(&mut stdout).await {
            self.register_proc(key, t.from, p);
        }
        let ends = read_reports(stdout, Some((&self.counters, t.to, size)), &|pid| {
            self.register_proc(key, t.to, pid)
        })
        .await;
        let status = child.wait().await;
        drop(keep_open);
        let err = stderr.await.unwrap_or_default();
        let hop = format!("{} -> {}", self.name(t.from), self.name(t.to));
        match status {
            Ok(s) if s.success() => {
                self.counters.set(t.to, size);
                Ok(ends)
            }
            Ok(s) => Err(TransportError::Remote {
                host: hop,
                reason: failure_text(err.as_bytes(), s.code()),
            }),
            Err(e) => Err(TransportError::Remote {
                host: hop,
                reason: join(&err, &error_chain(&e)),
            }),
        }
    }

    /// Renames a hop's copy `tmp` on `to` into place: at once if it was `verified` as it
    /// was written, after reading it back otherwise.
    pub(super) async fn place(
        &self,
        to: HostId,
        tmp: &str,
        verified: bool,
    ) -> Result<(), TransportError> {
        if verified {
            self.install_tmp(to, tmp).await
        } else {
            self.finalize_tmp(to, tmp).await
        }
    }

    /// Ends a hop (its processes registered under `key`) into `tmp` on `to`, whose outcome
    /// is `res`: a failed one is stopped, and its copy (and a decompressed twin) removed.
    pub(super) async fn settle(
        &self,
        key: u64,
        to: HostId,
        tmp: &str,
        res: Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        if res.is_err() {
            let mut files = vec![(to, tmp.to_string())];
            if self.src.codec().is_some() {
                files.push((to, remote::decoded_path(tmp)));
            }
            self.kill(key, &files).await;
            self.counters.set(to, 0);
        } else {
            self.registry.lock().unwrap().procs.remove(&key);
        }
        res
    }
}

impl WholeFileHops {
    /// Feeds bytes `range` of what the hops carry from the controller into `receive`, run on
    /// `to` over `session` (its connection, or one of its extra ones for `--streams`), and
    /// returns what the receiver reported at its end. The controller counts what it sends;
    /// the receiver's reports only end it.
    pub(super) async fn fed(
        &self,
        key: u64,
        to: HostId,
        session: Arc<openssh::Session>,
        receive: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Ends, TransportError> {
        let mut feed = feed::Feed::start(
            self.src.send_path(),
            range.start,
            range.end - range.start,
            Some((Arc::clone(&self.counters), to)),
            self.pacer.clone(),
        )
        .map_err(|e| self.remote_err(to, format!("cannot make a pipe: {e}")))?;
        let reader = feed.reader.take().expect("taken once");
        let mut child = self.spawn_fed_on(to, session, receive, reader).await?;
        let stderr = collect(child.stderr().take(), self.tap(to, receive));
        let mut stdout = BufReader::new(child.stdout().take().expect("piped"));
        let pid = match read_pid(&mut stdout).await {
            Some(p) => p,
            None => {
                let err = last_lines(&stderr.await.unwrap_or_default());
                let why = if err.is_empty() {
                    "the receiver did not start: its session closed".to_string()
                } else {
                    err
                };
                return Err(self.remote_err(to, why));
            }
        };
        self.register_proc(key, to, pid);
        let (sent, ends) = tokio::join!(feed.finished(), read_reports(stdout, None, &|_| {}));
        let sent = sent.map_err(|e| match e {
            feed::FeedError::Read(reason) => TransportError::Local {
                path: self.src.path.display().to_string(),
                reason,
            },
            feed::FeedError::Send(e) => {
                self.remote_err(to, format!("connection closed while sending: {e}"))
            }
        });
        let status = child.wait().await;
        let err = stderr.await.unwrap_or_default();
        // When the receiver fails (a full disk, say) our writes fail with a broken pipe; the
        // receiver's own message is the one that names the cause.
        if let Ok(st) = &status {
            if !st.success() && !last_lines(&err).is_empty() {
                return Err(self.remote_err(to, failure_text(err.as_bytes(), st.code())));
            }
        }
        sent?;
        match status {
            Ok(s) if s.success() => Ok(ends),
            Ok(s) => Err(self.remote_err(to, failure_text(err.as_bytes(), s.code()))),
            Err(e) => Err(self.remote_err(to, join(&err, &error_chain(&e)))),
        }
    }
}

impl Transport for WholeFileHops {
    async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
        self.hosts.prepare(host).await
    }

    async fn hop(&self, t: Transfer) -> Result<(), TransportError> {
        match self.hop_whole(t).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.classify(&t, e).await),
        }
    }

    async fn finalize(&self, _host: HostId) -> Result<(), TransportError> {
        Ok(()) // every hop verified and renamed its copy already
    }

    async fn then(&self, host: HostId, command: &str) -> Result<ThenOutcome, TransportError> {
        self.hosts.run_then(host, command).await
    }

    async fn discard(&self, host: HostId) {
        self.remove_temps(host).await;
    }

    async fn shutdown(&self) -> Vec<CleanupFailure> {
        self.hosts.shutdown_all().await
    }
}
