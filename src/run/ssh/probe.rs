//! Connecting to a host and probing its DEST before anything is sent.

use std::sync::Arc;

use crate::core::HostId;

use super::super::remote::lock;
use super::super::remote::{self, Hasher};
use super::super::transport::{Found, Prepared, Probe, TransportError};
use super::hosts::Hosts;
use super::reports::failure_text;

impl Hosts {
    /// Connects to `host` unless a check before the run (see `SshTransport::lacking`) has
    /// already: the connection is kept for the run.
    pub(super) async fn connect_once(&self, host: HostId) -> Result<(), TransportError> {
        if self.session(host).is_err() {
            let s = self.connect(host).await?;
            *self.sessions[host.index() - 1].lock().unwrap() = Some(Arc::new(s));
        }
        Ok(())
    }

    /// Takes the lock beside `dest` on `host` by what the probe printed (see [`lock::take`]):
    /// keeps a lock taken registered (by [`Self::locked`]), so that the run's cleanup
    /// releases it, and adds a stale one swept to `found`; another run's lock fails the
    /// host, naming who holds it.
    pub(super) fn lock_answer(
        &self,
        host: HostId,
        dest: &str,
        out: &str,
        found: &mut Vec<Found>,
    ) -> Result<(), TransportError> {
        let path = lock::lock_path(dest);
        match lock::parse(out) {
            Some(lock::Answer::Taken) => {}
            Some(lock::Answer::Swept(holder)) => found.push(Found::SweptLock {
                lock: path,
                holder: holder.to_string(),
            }),
            Some(lock::Answer::Held(holder)) => {
                self.forget_temp(host, &path);
                return Err(TransportError::Locked {
                    host: self.name(host),
                    path: dest.to_string(),
                    holder: holder.to_string(),
                    lock: path,
                });
            }
            Some(lock::Answer::None) | None => self.forget_temp(host, &path),
        }
        Ok(())
    }

    /// `install`, the script that puts a copy in place at `dest`, then, if it succeeded, the
    /// release of this run's lock beside it, in the same session.
    pub(super) fn releasing(&self, dest: &str, install: &str) -> String {
        format!("{install} && {{ {}; }}", lock::release(dest, &self.run_id))
    }

    /// The probe `script` on `host`, after the lock beside `dest` is taken. The lock is
    /// registered before it runs, so that an interrupt while it runs releases it; the
    /// cleanup removes only a lock of this run's.
    pub(super) fn locked(&self, host: HostId, dest: &str, script: &str) -> String {
        self.add_temp(host, &lock::lock_path(dest));
        format!("{}\n{script}", lock::take(dest, &self.lock_owner))
    }

    /// What a probe's exit status `code` says (see [`remote::probe`] and
    /// [`super::super::remote::tree::probe`]): nothing wrong; a tool the run needs is
    /// missing (`tool` names it); DEST is something the copy must not replace; or the probe
    /// failed, as its `stderr` says.
    pub(super) fn probe_status(
        &self,
        host: HostId,
        dest: &str,
        code: Option<i32>,
        stderr: &[u8],
        tool: impl FnOnce() -> String,
    ) -> Result<(), TransportError> {
        let reason = match code {
            Some(0) => return Ok(()),
            Some(remote::TOOL_MISSING_STATUS) => {
                return Err(TransportError::ToolMissing {
                    host: self.name(host),
                    tool: tool(),
                })
            }
            Some(remote::DEST_IS_DIRECTORY_STATUS) => "is a directory; refusing to replace it",
            Some(remote::DEST_NOT_A_FILE_STATUS) => {
                "exists and is neither a regular file nor a symlink; refusing to replace it"
            }
            Some(super::super::remote::tree::DEST_NOT_A_DIRECTORY_STATUS) => {
                "exists and is not a directory; refusing to replace it with SRC's tree"
            }
            _ => return Err(self.remote_err(host, failure_text(stderr, code))),
        };
        Err(TransportError::Dest {
            host: self.name(host),
            path: dest.to_string(),
            reason: reason.into(),
        })
    }

    /// True when `host` lacks the command `tool`.
    pub(super) async fn lacks(&self, host: HostId, tool: &str) -> Result<bool, TransportError> {
        self.connect_once(host).await?;
        let out = self.run(host, &remote::probe::lacks(tool)).await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "missing")
    }

    /// Connects to `host` and probes its DEST (see [`remote::probe`]): what it holds, which
    /// hasher it has, which stale temporary files were swept.
    pub(super) async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
        if self.src.pack.is_some() {
            return self.prepare_pack(host).await;
        }
        self.connect_once(host).await?;
        let dest = self.target(host).dest.clone();
        // Registered like a hop, so that an interrupt while it hashes stops it.
        let probe = remote::probe(&dest, self.src.size, self.src.codec());
        let out = self
            .run_registered(host, &self.locked(host, &dest, &probe))
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = Vec::new();
        self.lock_answer(host, &dest, &text, &mut found)?;
        self.probe_status(host, &dest, out.status.code(), &out.stderr, || {
            self.src.codec().map_or("?", |c| c.tool()).to_string()
        })?;
        let mut probe = None;
        let mut held = None;
        let mut hasher = None;
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("hasher ").and_then(Hasher::from_name) {
                *self.hashers[host.index() - 1].lock().unwrap() = h;
                hasher = Some(h.name().to_string());
            } else if let Some(path) = line.strip_prefix("swept ") {
                found.push(Found::Swept(path.to_string()));
            } else if let Some(digest) = line.strip_prefix("file ") {
                held = Some(digest.trim().to_string());
            } else if matches!(line, "missing" | "link" | "size") {
                probe = Some(Probe::Needed);
            }
        }
        if let Some(held) = held {
            // Only now is SRC's digest needed, and only for a DEST of SRC's size.
            let digest = self.src_digest().await?;
            probe = Some(if held == digest {
                Probe::UpToDate
            } else {
                Probe::Needed
            });
        }
        let probe = probe.ok_or_else(|| {
            self.remote_err(host, format!("unexpected probe answer {:?}", text.trim()))
        })?;
        Ok(Prepared {
            probe,
            found,
            hasher,
        })
    }
}
