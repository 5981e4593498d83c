//! A tree, or a `--sparse` file, on the hosts (see [`super::super::tree`]): surveying what
//! each DEST holds before the archive is made, probing for the run, and unpacking a
//! verified archive into place, checked file by file against the manifest.

use std::collections::BTreeMap;

use crate::core::HostId;

use super::super::remote::lock;
use super::super::remote::names::Unpacking;
use super::super::remote::tree::LISTING_MARK;
use super::super::remote::{self, Hasher};
use super::super::transport::{Found, Prepared, Probe, TransportError};
use super::super::tree::{self, Listed, Shape};
use super::hosts::Hosts;
use super::reports::failure_text;
use super::Pack;

/// What a host's DEST holds, as its survey found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestState {
    /// Nothing (or, for a single file, a symlink, which the copy replaces).
    Missing,
    /// A tree, or a file: its listing, keyed as [`tree::parse_listing`] keys it.
    Holds(BTreeMap<Vec<u8>, Listed>),
}

impl Pack {
    fn shape(&self) -> remote::tree::Shape {
        match &self.manifest.shape {
            Shape::Tree => remote::tree::Shape::Tree,
            Shape::Single { .. } => remote::tree::Shape::Single,
        }
    }

    fn single(&self) -> bool {
        matches!(self.manifest.shape, Shape::Single { .. })
    }
}

/// Splits a probe's or an unpack's output into its text lines and the listing after
/// [`LISTING_MARK`], if there is one.
fn split_listing(out: &[u8]) -> (String, Option<&[u8]>) {
    let mark = format!("{LISTING_MARK}\n");
    let at = out.windows(mark.len()).position(|w| w == mark.as_bytes());
    // The mark starts a line.
    let at = at.filter(|&i| i == 0 || out[i - 1] == b'\n');
    match at {
        Some(i) => (
            String::from_utf8_lossy(&out[..i]).into_owned(),
            Some(&out[i + mark.len()..]),
        ),
        None => (String::from_utf8_lossy(out).into_owned(), None),
    }
}

impl Hosts {
    fn pack(&self) -> &Pack {
        self.src.pack.as_ref().expect("a tree or --sparse run")
    }

    /// Connects to `h` if it is not yet, and runs the tree probe (see
    /// [`remote::tree::probe`]): records the host's hasher, and returns what its DEST holds
    /// and what it found that earlier runs left (see [`Found`]).
    pub(super) async fn survey_host(
        &self,
        h: HostId,
        lock: bool,
    ) -> Result<(DestState, Vec<Found>), TransportError> {
        self.connect_once(h).await?;
        let pack = self.pack();
        let dest = self.target(h).dest.clone();
        let probe = remote::tree::probe(&dest, pack.shape(), self.src.codec(), lock);
        let script = match lock {
            true => self.locked(h, &dest, &probe),
            false => probe,
        };
        let out = self.run_registered(h, &script).await?;
        let (text, listing) = split_listing(&out.stdout);
        let mut found = Vec::new();
        self.lock_answer(h, &dest, &text, &mut found)?;
        self.probe_status(h, &dest, out.status.code(), &out.stderr, || {
            text.lines()
                .find_map(|l| l.strip_prefix("needs "))
                .unwrap_or("a tool")
                .to_string()
        })?;
        let mut missing = false;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("hasher ") {
                if let Some(x) = Hasher::from_name(name) {
                    *self.hashers[h.index() - 1].lock().unwrap() = x;
                }
            } else if let Some(path) = line.strip_prefix("swept ") {
                found.push(Found::Swept(path.to_string()));
            } else if let Some(path) = line.strip_prefix(remote::tree::RESTORED) {
                found.push(Found::Restored(path.to_string()));
            } else if let Some(path) = line.strip_prefix(remote::tree::UNRESTORED) {
                found.push(Found::Unrestored(path.to_string()));
            } else if line == "missing" {
                missing = true;
            }
        }
        let state = match (missing, listing) {
            (true, _) => DestState::Missing,
            (false, Some(l)) => DestState::Holds(
                tree::parse_listing(l, pack.single()).map_err(|e| self.remote_err(h, e))?,
            ),
            (false, None) => {
                return Err(self.remote_err(h, format!("unexpected probe answer {:?}", text.trim())))
            }
        };
        Ok((state, found))
    }

    /// [`Hosts::prepare`] for a tree: what the survey found, or, for a host the survey could
    /// not reach, a survey now. The host is up to date only when every host was.
    pub(super) async fn prepare_pack(&self, h: HostId) -> Result<Prepared, TransportError> {
        // Taken in a statement of its own: the lock is not held across the survey below.
        let found = self.surveyed[h.index() - 1].lock().unwrap().take();
        let found = match found {
            Some(s) => s,
            None => self.survey_host(h, true).await?.1,
        };
        Ok(Prepared {
            probe: if self.pack().current {
                Probe::UpToDate
            } else {
                Probe::Needed
            },
            found,
            hasher: Some(self.hasher(h).name().to_string()),
        })
    }

    /// The paths through which `h` unpacks a stream as it arrives, in this run.
    fn behind_paths(&self, h: HostId) -> Unpacking {
        Unpacking::new(&self.target(h).dest, &self.run_id)
    }

    /// For a tree, the paths a stream into `h` unpacks through as it arrives (see
    /// [`remote::tree::Behind`]), registered for cleanup; `None` for a single file sent as
    /// it is.
    pub(super) fn unpack_behind(&self, h: HostId) -> Option<Unpacking> {
        self.src.pack.as_ref()?;
        let paths = self.behind_paths(h);
        for p in paths.paths() {
            self.add_temp(h, p);
        }
        Some(paths)
    }

    /// The [`remote::tree::Behind`] of `h` over `paths` (from [`Hosts::unpack_behind`]).
    pub(super) fn behind<'a>(
        &'a self,
        h: HostId,
        paths: &'a Unpacking,
    ) -> remote::tree::Behind<'a> {
        remote::tree::Behind {
            stage: &paths.stage,
            mark: &paths.mark,
            fifo: &paths.fifo,
            dest: &self.target(h).dest,
            shape: self.pack().shape(),
            preserve: self.src.meta.preserve.is_some(),
        }
    }

    /// Unpacks `archive`, a verified copy of the archive on `h`, into a staging directory
    /// beside DEST (or, when `streamed`, takes what the stream that wrote and checked that
    /// copy unpacked as it arrived), compares what is there with the manifest, removes what
    /// SRC does not have, and renames it into place. An entry that does not match fails the
    /// host with [`TransportError::DigestMismatch`] naming it; the staging directory is
    /// removed on any failure, and DEST is left as it was.
    pub(super) async fn install_pack(
        &self,
        h: HostId,
        archive: &str,
        streamed: bool,
    ) -> Result<(), TransportError> {
        let pack = self.pack();
        let dest = self.target(h).dest.clone();
        let Unpacking { stage, mark, .. } = self.behind_paths(h);
        self.add_temp(h, &stage);
        let res = async {
            let out = self
                .run_registered(
                    h,
                    &remote::tree::unpack(
                        archive,
                        &stage,
                        &dest,
                        pack.shape(),
                        self.src.meta.preserve.is_some(),
                        streamed.then_some(mark.as_str()),
                    ),
                )
                .await?;
            if !out.status.success() {
                return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
            }
            let listing = split_listing(&out.stdout)
                .1
                .ok_or_else(|| self.remote_err(h, "the unpacked tree was not listed"))?;
            let listed =
                tree::parse_listing(listing, pack.single()).map_err(|e| self.remote_err(h, e))?;
            let diff = tree::compare(&pack.manifest, &listed, false);
            // The files' bytes were covered by the archive's digest: what is checked here is
            // what tar made of them.
            if let Some(bad) = diff
                .files
                .iter()
                .chain(&diff.others)
                .map(|&i| &pack.manifest.entries[i])
                .next()
            {
                let got = listed.get(&bad.path).map_or("missing".to_string(), |g| {
                    g.digest
                        .clone()
                        .unwrap_or_else(|| format!("type {} mode {:o}", g.kind as char, g.mode))
                });
                return Err(TransportError::DigestMismatch {
                    host: self.name(h),
                    path: format!("{stage}/{}", tree::show(&bad.path)),
                    got,
                });
            }
            for cmd in remote::tree::remove(&stage, &diff.extras) {
                let out = self.run_registered(h, &cmd).await?;
                if !out.status.success() {
                    return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
                }
            }
            let old = remote::old_tree_path(&dest, &self.run_id);
            let swap = remote::tree::swap(&stage, &old, &dest, pack.shape(), self.opts.fsync);
            let out = self
                .run_registered(h, &self.releasing(&dest, &swap))
                .await?;
            if !out.status.success() {
                return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
            }
            self.forget_temp(h, &lock::lock_path(&dest));
            Ok(())
        }
        .await;
        if streamed {
            // The unpack script used the marker up, or it was never made.
            self.forget_temp(h, &mark);
        }
        // Otherwise a stream that unpacked as it arrived may have made it although its
        // digest never reached us (the copy was then checked by reading it back): it stays
        // registered, and the cleanup at the end of the run removes it.
        match &res {
            Ok(()) => self.forget_temp(h, &stage),
            Err(_) => {
                // The staging directory goes at once: it may hold a whole tree.
                let _ = self
                    .clean(
                        h,
                        &[],
                        std::slice::from_ref(&stage),
                        super::registry::CLEANUP_TIMEOUT,
                    )
                    .await
                    .map(|()| self.forget_temp(h, &stage));
            }
        }
        res
    }

    /// Verifies `tmp`, a copy of the archive whose digest could not be checked as it was
    /// written (decompressing it first with `--compress`), then installs it as
    /// [`Hosts::install_pack`] does. The archive stays, for the host's relays and hops.
    pub(super) async fn finalize_pack(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let digest = self.src_digest().await?;
        let dec = remote::decoded_path(tmp);
        let (check, archive) = match self.src.codec() {
            Some(codec) => {
                self.add_temp(h, &dec);
                (
                    remote::verify_decoded(
                        tmp,
                        remote::Decode { codec, into: &dec },
                        &digest,
                        self.hasher(h),
                    ),
                    dec.as_str(),
                )
            }
            None => (remote::verify(tmp, &digest, self.hasher(h)), tmp),
        };
        let out = self.run_registered(h, &check).await?;
        if !out.status.success() {
            if out.status.code() == Some(remote::DIGEST_MISMATCH_STATUS) {
                self.forget_temp(h, tmp);
                self.forget_temp(h, &dec);
            }
            return Err(self.check_failure(h, tmp, &out));
        }
        self.install_verified_pack(h, tmp, archive, false).await
    }

    /// Installs the verified archive `archive` (`tmp` itself, or its decompressed twin) and
    /// keeps `tmp` as the host's copy to send from until the run ends; `streamed` as
    /// [`Hosts::install_pack`] says.
    pub(super) async fn install_verified_pack(
        &self,
        h: HostId,
        tmp: &str,
        archive: &str,
        streamed: bool,
    ) -> Result<(), TransportError> {
        let res = self.install_pack(h, archive, streamed).await;
        if archive != tmp {
            // The decompressed archive has served its purpose.
            let _ = self
                .clean(
                    h,
                    &[],
                    &[archive.to_string()],
                    super::registry::CLEANUP_TIMEOUT,
                )
                .await
                .map(|()| self.forget_temp(h, archive));
        }
        if res.is_ok() {
            self.set_wire_copy(h, Some(tmp));
        }
        res
    }

    /// Lists `h`'s DEST again and compares it with the manifest: `Ok` if it still holds
    /// SRC's tree (or file), [`TransportError::DigestMismatch`] if not.
    pub(super) async fn check_pack(&self, h: HostId) -> Result<(), TransportError> {
        // A check after the copy is in place: its lock is released already, and not taken
        // again.
        match self.survey_host(h, false).await?.0 {
            DestState::Holds(listed)
                if tree::compare(&self.pack().manifest, &listed, true).is_clean() =>
            {
                Ok(())
            }
            _ => Err(TransportError::DigestMismatch {
                host: self.name(h),
                path: self.target(h).dest.clone(),
                got: "a tree that differs from SRC's".into(),
            }),
        }
    }
}
