//! The registry of what a run leaves on the hosts until it is cleaned up: the remote process
//! groups of running hops and links, and the temporary files not yet renamed into place;
//! and the cleanup itself, which keeps whatever it could not remove for shutdown to try
//! again and report.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::core::HostId;

use super::super::remote;
use super::super::transport::{CleanupFailure, TransportError};
use super::hosts::Hosts;
use super::reports::{collect, error_chain, failure_text, join, read_pid};

/// How long cleanup commands may take on a host before they are abandoned (they are kept for
/// shutdown to try again).
pub(super) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown may take over all hosts together.
pub(super) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);
/// How long shutdown waits before its second pass over temporary files (see
/// `shutdown_host`).
const SECOND_PASS_DELAY: Duration = Duration::from_millis(1500);

/// What may be left on the hosts.
#[derive(Default)]
pub(super) struct Registry {
    /// Temporary files that may exist on each host and were not renamed into place.
    pub(super) temps: HashMap<HostId, BTreeSet<String>>,
    /// Remote process groups of running hops and links, by key.
    pub(super) procs: HashMap<u64, Vec<(HostId, u32)>>,
    next_key: u64,
}

impl Hosts {
    /// Runs `script` on `h` like [`Hosts::run`], registered as a remote process group while
    /// it runs, so that an interrupt stops it: re-hashing a large copy can take minutes.
    pub(super) async fn run_registered(
        &self,
        h: HostId,
        script: &str,
    ) -> Result<std::process::Output, TransportError> {
        use tokio::io::AsyncReadExt as _;
        let key = self.new_key();
        let mut child = self.spawn(h, &format!("echo $$; {script}")).await?;
        drop(child.stdin().take());
        let stderr = collect(child.stderr().take(), self.tap(h, script));
        let mut stdout = tokio::io::BufReader::new(child.stdout().take().expect("piped"));
        if let Some(pid) = read_pid(&mut stdout).await {
            self.register_proc(key, h, pid);
        }
        let mut rest = Vec::new();
        let read = stdout.read_to_end(&mut rest).await;
        let status = child.wait().await;
        self.registry.lock().unwrap().procs.remove(&key);
        let err = stderr.await.unwrap_or_default();
        let status = status.map_err(|e| self.remote_err(h, join(&err, &error_chain(&e))))?;
        read.map_err(|e| self.remote_err(h, format!("reading its output: {e}")))?;
        Ok(std::process::Output {
            status,
            stdout: rest,
            stderr: err.into_bytes(),
        })
    }

    pub(super) fn new_key(&self) -> u64 {
        let mut st = self.registry.lock().unwrap();
        st.next_key += 1;
        st.next_key
    }

    pub(super) fn register_proc(&self, key: u64, h: HostId, pid: u32) {
        let mut st = self.registry.lock().unwrap();
        st.procs.entry(key).or_default().push((h, pid));
    }

    pub(super) fn add_temp(&self, h: HostId, path: &str) {
        let mut st = self.registry.lock().unwrap();
        st.temps.entry(h).or_default().insert(path.to_string());
    }

    pub(super) fn forget_temp(&self, h: HostId, path: &str) {
        let mut st = self.registry.lock().unwrap();
        if let Some(s) = st.temps.get_mut(&h) {
            s.remove(path);
        }
    }

    /// Kills the process groups registered under `key` on `h` only, leaving those on other
    /// hosts registered: a link into `h` whose sender may be unreachable is stopped at the
    /// receiving end at once, without waiting on the sender. What fails stays registered.
    pub(super) async fn kill_on(&self, key: u64, h: HostId) {
        let pids: Vec<u32> = {
            let st = self.registry.lock().unwrap();
            let procs = st.procs.get(&key).map(Vec::as_slice).unwrap_or_default();
            procs
                .iter()
                .filter(|(ph, _)| *ph == h)
                .map(|&(_, p)| p)
                .collect()
        };
        if pids.is_empty() || self.clean(h, &pids, &[], CLEANUP_TIMEOUT).await.is_err() {
            return;
        }
        let mut reg = self.registry.lock().unwrap();
        if let Some(v) = reg.procs.get_mut(&key) {
            v.retain(|(ph, _)| *ph != h);
            if v.is_empty() {
                reg.procs.remove(&key);
            }
        }
    }

    /// True once a temporary file at `path` on `h` was registered in this run (and not
    /// removed since): something may already have been written to it.
    pub(super) fn has_temp(&self, h: HostId, path: &str) -> bool {
        let st = self.registry.lock().unwrap();
        st.temps.get(&h).is_some_and(|s| s.contains(path))
    }

    /// Kills the process groups registered under `key` and removes `files` on their hosts.
    /// What could not be cleaned up on a host stays registered (the pids under `key`, the
    /// files among its temporary files), for [`Transport::shutdown`](super::super::transport::Transport::shutdown) to try again.
    pub(super) async fn kill(&self, key: u64, files: &[(HostId, String)]) {
        // Left registered until their cleanup succeeds: an interrupt may abort this
        // cleanup, and shutdown must still find them.
        let procs = self
            .registry
            .lock()
            .unwrap()
            .procs
            .get(&key)
            .cloned()
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
                    let mut reg = self.registry.lock().unwrap();
                    if let Some(v) = reg.procs.get_mut(&key) {
                        v.retain(|(ph, _)| *ph != h);
                        if v.is_empty() {
                            reg.procs.remove(&key);
                        }
                    }
                }
                Err(_) => {
                    // Shutdown tries again, and reports what it cannot remove.
                    for f in &files {
                        self.add_temp(h, f);
                    }
                }
            }
        }
    }

    /// Runs one cleanup command on `h` within `timeout`.
    pub(super) async fn clean(
        &self,
        h: HostId,
        pids: &[u32],
        files: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        match tokio::time::timeout(
            timeout,
            self.run(h, &remote::cleanup(pids, files, &self.run_id)),
        )
        .await
        {
            Err(_) => Err(format!("timed out after {:.0?}", timeout)),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(failure_text(&out.stderr, out.status.code())),
        }
    }

    /// Removes `h`'s temporary files; those that cannot be removed stay registered.
    pub(super) async fn remove_temps(&self, h: HostId) {
        let files: Vec<String> = self
            .registry
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

    /// Cleans up everything still registered on `h` (see [`Transport::shutdown`](super::super::transport::Transport::shutdown)).
    pub(super) async fn shutdown_host(
        &self,
        h: HostId,
        deadline: tokio::time::Instant,
    ) -> Option<CleanupFailure> {
        let (keys, pids, files) = {
            let st = self.registry.lock().unwrap();
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
        // A lock (an up-to-date host's, or a failed one's) is never made late: only
        // temporary files need the second pass.
        if res.is_ok()
            && files
                .iter()
                .any(|f| !super::super::remote::lock::is_lock(f))
        {
            // A pipeline that was still being set up when the run stopped (its sender's ssh
            // to this host mid-handshake) may create its temporary file just after the
            // first pass: its sender is dead by now, so a second pass a moment later finds
            // everything it will ever write. Only the files: the process groups were killed,
            // and their numbers may already belong to someone else.
            let again = (tokio::time::Instant::now() + SECOND_PASS_DELAY).min(deadline);
            tokio::time::sleep_until(again).await;
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            res = self
                .clean(h, &[], &files, timeout.max(Duration::from_secs(1)))
                .await;
        }
        let mut st = self.registry.lock().unwrap();
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

    /// Temporary files and process groups not cleaned up yet, by host: what may be left if
    /// the controller stops now (a second interrupt).
    pub fn leftovers(&self) -> Vec<(String, Vec<String>)> {
        let st = self.registry.lock().unwrap();
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

    /// Cleans up every host at once under one deadline, then closes the connections; returns
    /// what could not be cleaned up (see [`super::super::Transport::shutdown`]).
    pub(super) async fn shutdown_all(&self) -> Vec<CleanupFailure> {
        use futures_util::future::join_all;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        let hosts: Vec<HostId> = (1..=self.targets.len() as u32).map(HostId).collect();
        let mut failures: Vec<CleanupFailure> =
            join_all(hosts.iter().map(|&h| self.shutdown_host(h, deadline)))
                .await
                .into_iter()
                .flatten()
                .collect();
        let mut taken: Vec<(HostId, Arc<openssh::Session>)> = Vec::new();
        for (i, (s, extra)) in self.sessions.iter().zip(&self.stream_sessions).enumerate() {
            let h = HostId(i as u32 + 1);
            taken.extend(s.lock().unwrap().take().map(|s| (h, s)));
            let mut extra = extra.lock().unwrap();
            let extra = std::mem::take(&mut *extra);
            taken.extend(
                extra
                    .by_stream
                    .into_values()
                    .chain(extra.retired)
                    .map(|s| (h, s)),
            );
        }
        let closing = taken.into_iter().map(|(h, taken)| {
            async move {
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
            }
        });
        failures.extend(join_all(closing).await.into_iter().flatten());
        failures
    }
}
