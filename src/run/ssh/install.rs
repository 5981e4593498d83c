//! Finishing a copy on a host: verifying its temporary file if that is still needed, and
//! renaming it into place (see [`script::install`] and [`script::finalize`]). Both run
//! registered, so an interrupt stops them like any hop.

use crate::core::HostId;

use super::super::script;
use super::super::transport::TransportError;
use super::hosts::Hosts;
use super::reports::failure_text;

impl Hosts {
    /// Renames a copy whose digest was checked as it was written into place.
    pub(super) async fn install_tmp(&self, h: HostId, tmp: &str) -> Result<(), TransportError> {
        let t = self.target(h);
        let out = self
            .run_registered(
                h,
                &script::install(tmp, &t.dest, self.src.mode, self.opts.fsync),
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
                    self.src.mode,
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
            return Err(TransportError::DigestMismatch {
                host: self.name(h),
                path: tmp.to_string(),
                got: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            });
        }
        Err(self.remote_err(h, failure_text(&out.stderr, out.status.code())))
    }
}
