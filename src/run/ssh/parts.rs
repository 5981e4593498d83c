//! A whole-file hop cut into several ssh streams (`--streams`, see [`crate::run::split`]):
//! each part of the file goes over its own connection into the receiver's copy at its
//! offset, hashed on the way, and the copy is installed once every part's digest is the
//! one the controller computed for it from SRC.
//!
//! - controller → Y: one feed per part, each over another of Y's connections (one
//!   multiplexed connection would put every stream through one cipher on one core);
//! - X → Y: a pipeline on X runs one `ssh Y` per part ([`remote::send_parts`]).
//!
//! A copy that arrives compressed, or an archive, still has to be decompressed or unpacked
//! in order: once its parts are in, it is finished by reading it back, as a copy written by
//! request is ([`super::hosts::Hosts::finalize_tmp`]).

use std::ops::Range;

use crate::core::{HostId, Transfer};

use super::super::remote;
use super::super::transport::TransportError;
use super::reports::failure_text;
use super::whole::WholeFileHops;

impl WholeFileHops {
    /// Sends `t` over one stream per part of `parts`, then verifies and installs the copy.
    pub(super) async fn hop_parts(
        &self,
        t: Transfer,
        parts: &[Range<u64>],
    ) -> Result<(), TransportError> {
        let key = self.new_key();
        let to = self.target(t.to).clone();
        let tmp = remote::temp_path(&to.dest, &self.run_id, &format!("-t{}", t.id.0));
        self.add_temp(t.to, &tmp);
        let size = self.src.send_size();
        let hasher = self.hasher(t.to);
        self.counters.set(t.to, 0);
        let res = async {
            // One round trip over Y's connection: the parts' receivers start at once, so none
            // of them can be the one that creates the copy.
            let made = self
                .run_registered(t.to, &remote::create_for_parts(&to.dest, &tmp))
                .await?;
            if !made.status.success() {
                return Err(self.remote_err(t.to, failure_text(&made.stderr, made.status.code())));
            }
            let file = String::from_utf8_lossy(&made.stdout).trim().to_string();
            let receives: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| remote::part_receive(&tmp, &file, i, p.clone(), hasher, i == 0))
                .collect();
            let mut got: Vec<(u64, String)> = if t.from == HostId::SOURCE {
                self.fed_parts(key, t.to, parts, &receives).await?
            } else {
                let (from, _) = self.send_from(t.from);
                let script = remote::send_parts(&self.hop_ssh, &from, parts, &to.spec, &receives);
                self.sent_by_host(key, t, &script, size).await?.parts
            };
            got.sort();
            let want = self
                .src
                .digest
                .all()
                .await
                .map_err(|reason| TransportError::Local {
                    path: self.src.path.display().to_string(),
                    reason,
                })?;
            let whole = got.len() == parts.len()
                && got
                    .iter()
                    .enumerate()
                    .all(|(i, (j, d))| *j == i as u64 && want.parts.get(i) == Some(d));
            // A copy to decompress or unpack in order, or a part that was not what SRC holds
            // there, is read back: that says which, and names a mismatch.
            self.place(t.to, &tmp, whole && !self.src.sends_copy())
                .await
        }
        .await;
        self.settle(key, t.to, &tmp, res).await
    }

    /// The controller → Y half of [`Self::hop_parts`]: feeds each part over another of Y's
    /// connections and returns the parts' digests its receivers reported. Every part runs
    /// to its end, so that no receiver is left unregistered; once one fails, the others'
    /// receivers are stopped, so that they fail too instead of running to their end.
    async fn fed_parts(
        &self,
        key: u64,
        to: HostId,
        parts: &[Range<u64>],
        receives: &[String],
    ) -> Result<Vec<(u64, String)>, TransportError> {
        use futures_util::stream::{FuturesUnordered, StreamExt as _};
        let mut feeds: FuturesUnordered<_> = parts
            .iter()
            .zip(receives)
            .enumerate()
            .map(|(i, (p, r))| async move {
                let session = self.stream_session(to, i).await?;
                Ok::<_, TransportError>(self.fed(key, to, session, r, p.clone()).await?.parts)
            })
            .collect();
        let mut got = Vec::new();
        let mut failed = None;
        while let Some(r) = feeds.next().await {
            match r {
                Ok(p) => got.extend(p),
                Err(e) if failed.is_none() => {
                    self.kill(key, &[]).await;
                    failed = Some(e);
                }
                Err(_) => {}
            }
        }
        failed.map_or(Ok(got), Err)
    }
}
