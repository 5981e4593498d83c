//! Finishing a copy on a host: verifying its temporary file if that is still needed, and
//! renaming it into place (see [`script::install`] and [`script::finalize`]); checking an
//! installed copy again ([`script::check`]); and running `--then` on it ([`script::then`]).
//! All run registered, so an interrupt stops them like any hop.

use crate::core::HostId;

use super::super::script;
use super::super::transport::{ThenOutcome, TransportError};
use super::hosts::Hosts;
use super::reports::failure_text;

impl Hosts {
    /// Renames a copy whose digest was checked as it was written into place.
    pub(super) async fn install_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let out = self
            .run_registered(
                h,
                &script::install(tmp, &t.dest, self.src.meta, self.opts.fsync),
            )
            .await?;
        if !out.status.success() {
            return Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())));
        }
        self.forget_temp(h, tmp);
        Ok(())
    }

    pub(super) async fn finalize_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let digest = self.src_digest().await?;
        let out = self
            .run_registered(
                h,
                &script::finalize(
                    tmp,
                    &t.dest,
                    &digest,
                    self.src.meta,
                    self.opts.fsync,
                    self.hasher(h),
                ),
            )
            .await?;
        if out.status.success() {
            self.forget_temp(h, tmp);
            return Ok(());
        }
        if out.status.code() == Some(script::DIGEST_MISMATCH_STATUS) {
            self.forget_temp(h, tmp);
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
        let out = self.run_registered(h, &script::then(command, dest)).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        match script::parse_then(&text) {
            Some((status, output)) if out.status.success() => Ok(ThenOutcome { status, output }),
            _ => Err(self.remote_err(h, failure_text(&out.stderr, out.status.code()))),
        }
    }

    /// Hashes `h`'s DEST again: `Ok` if it still holds SRC,
    /// [`TransportError::DigestMismatch`] if not.
    pub(super) async fn check_dest(&self, h: HostId) -> Result<(), TransportError> {
        let digest = self.src_digest().await?;
        let dest = &self.target(h).dest;
        let out = self
            .run_registered(h, &script::check(dest, &digest, self.hasher(h)))
            .await?;
        if out.status.success() {
            return Ok(());
        }
        Err(self.check_failure(h, dest, &out))
    }

    /// Why a check of `path` on `h` that exited non-zero failed: a digest mismatch (the
    /// digest found on stdout) or the command's own error.
    fn check_failure(&self, h: HostId, path: &str, out: &std::process::Output) -> TransportError {
        if out.status.code() == Some(script::DIGEST_MISMATCH_STATUS) {
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
