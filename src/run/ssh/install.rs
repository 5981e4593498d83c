//! Finishing a copy on a host: verifying its temporary file if that is still needed, and
//! renaming it into place (see [`remote::install`] and [`remote::finalize`]); checking an
//! installed copy again ([`remote::check`]); and running `--then` on it ([`remote::then`]).
//! All run registered, so an interrupt stops them like any hop.

use crate::core::HostId;

use super::super::remote;
use super::super::remote::lock;
use super::super::transport::{ThenOutcome, TransportError};
use super::hosts::Hosts;
use super::reports::failure_text;

impl Hosts {
    /// Renames a copy whose digest was checked as it was written into place. With
    /// `--compress` that is its decompressed twin ([`remote::decoded_path`]), and `tmp`, the
    /// compressed bytes, stays as the host's copy to send from until the run ends.
    pub(super) async fn install_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let dec = remote::decoded_path(tmp);
        if self.src.pack.is_some() {
            let archive = if self.src.codec().is_some() {
                dec.as_str()
            } else {
                tmp
            };
            return self.install_verified_pack(h, tmp, archive, true).await;
        }
        let file = match self.src.codec() {
            Some(_) => dec.as_str(),
            None => tmp,
        };
        let install = remote::install(file, &t.dest, self.src.meta, self.opts.fsync);
        let out = self
            .run_registered(h, &self.releasing(&t.dest, &install))
            .await?;
        if !out.status.success() {
            return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
        }
        self.forget_temp(h, file);
        self.forget_temp(h, &lock::lock_path(&t.dest));
        if self.src.codec().is_some() {
            self.set_wire_copy(h, Some(tmp));
        }
        Ok(())
    }

    /// Verifies a copy whose digest could not be checked as it was written (it was written
    /// by request, or in streams that broke), then renames it into place; with `--compress`,
    /// decompresses it first, as [`Hosts::install_tmp`] says.
    pub(super) async fn finalize_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        if self.src.pack.is_some() {
            return self.finalize_pack(h, tmp).await;
        }
        let t = self.target(h);
        let digest = self.src_digest().await?;
        let dec = remote::decoded_path(tmp);
        let script = match self.src.codec() {
            Some(codec) => remote::finalize_decoded(
                tmp,
                remote::Decode { codec, into: &dec },
                &t.dest,
                &digest,
                self.src.meta,
                self.opts.fsync,
                self.hasher(h),
            ),
            None => remote::finalize(
                tmp,
                &t.dest,
                &digest,
                self.src.meta,
                self.opts.fsync,
                self.hasher(h),
            ),
        };
        if self.src.codec().is_some() {
            self.add_temp(h, &dec);
        }
        let out = self
            .run_registered(h, &self.releasing(&t.dest, &script))
            .await?;
        if out.status.success() {
            self.forget_temp(h, &lock::lock_path(&t.dest));
            if self.src.codec().is_some() {
                self.forget_temp(h, &dec);
                self.set_wire_copy(h, Some(tmp));
            } else {
                self.forget_temp(h, tmp);
            }
            return Ok(());
        }
        if out.status.code() == Some(remote::DIGEST_MISMATCH_STATUS) {
            self.forget_temp(h, tmp);
            self.forget_temp(h, &dec);
        }
        Err(self.check_failure(h, tmp, &out))
    }

    /// Runs `--then`'s `command` on `h` with its DEST as `$1`.
    pub(super) async fn run_then(
        &self,
        h: HostId,
        command: &str,
    ) -> Result<ThenOutcome, TransportError> {
        let dest = &self.target(h).dest;
        let out = self.run_registered(h, &remote::then(command, dest)).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        match remote::parse_then(&text) {
            Some((status, output)) if out.status.success() => Ok(ThenOutcome { status, output }),
            _ => Err(self.remote_err(h, failure_text(&out.stderr, out.status.code()))),
        }
    }

    /// Hashes `h`'s DEST again: `Ok` if it still holds SRC,
    /// [`TransportError::DigestMismatch`] if not.
    pub(super) async fn check_dest(&self, h: HostId) -> Result<(), TransportError> {
        if self.src.pack.is_some() {
            return self.check_pack(h).await;
        }
        let digest = self.src_digest().await?;
        let dest = &self.target(h).dest;
        let out = self
            .run_registered(h, &remote::check(dest, &digest, self.hasher(h)))
            .await?;
        if out.status.success() {
            return Ok(());
        }
        Err(self.check_failure(h, dest, &out))
    }

    /// Why a check of `path` on `h` that exited non-zero failed: a digest mismatch (the
    /// digest found on stdout) or the command's own error.
    pub(super) fn check_failure(
        &self,
        h: HostId,
        path: &str,
        out: &std::process::Output,
    ) -> TransportError {
        if out.status.code() == Some(remote::DIGEST_MISMATCH_STATUS) {
            TransportError::DigestMismatch {
                host: self.name(h),
                path: path.to_string(),
                got: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            }
        } else {
            self.remote_err(h, failure_text(&out.stderr, out.status.code()))
        }
    }
}
