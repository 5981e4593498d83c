//! Connecting to a host and probing its DEST before anything is sent.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, BufReader};

use crate::core::HostId;

use super::super::script::{self, Hasher};
use super::super::transport::{Prepared, Probe, TransportError};
use super::hosts::Hosts;
use super::reports::{collect, error_chain, failure_text, join, read_pid};

impl Hosts {
    /// Connects to `host` and probes its DEST (see [`script::probe`]): what it holds, which
    /// hasher it has, which stale temporary files were swept.
    pub(super) async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
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
        self.registry.lock().unwrap().procs.remove(&key);
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
}
