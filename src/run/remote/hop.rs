//! What a host runs to reach the next one (`hop.sh`): the `ssh` of a hop that starts on a
//! host, and the pacing of a host's upload under `--limit-rate` (`fragments.sh`).

use super::{sh_c, Call};
use crate::fleet::HostSpec;

/// The ciphers bounce asks for when it may choose: OpenSSH's default set with AES-GCM
/// first. The server takes the first of these it also offers, so AES-GCM is used when both
/// ends have it, and the rest keep every other server reachable. On a CPU with AES
/// instructions AES-GCM costs about half of chacha20-poly1305 (OpenSSH's first choice).
pub const PREFERRED_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

/// How often a host's paced upload (see [`pace`]) looks at the clock, in milliseconds.
pub const PACE_PERIOD_MS: u64 = 250;

/// Options for `ssh` run on a host to reach the next one.
#[derive(Clone, Debug)]
pub struct HopSsh {
    /// `StrictHostKeyChecking=accept-new` instead of `yes`.
    pub accept_new_host_keys: bool,
    /// ConnectTimeout in whole seconds.
    pub connect_timeout_s: u64,
    /// `--limit-rate`: what each upload from a host may send per second (see [`pace`]).
    pub upload_limit: Option<u64>,
}

impl HopSsh {
    /// `bounce_ssh`'s arguments to run `remote` (code, see [`super::program`]) on `to`,
    /// which the jobs that start a hop take last.
    ///
    /// The ssh asks for [`PREFERRED_CIPHERS`] when the sending host's CPU has AES
    /// instructions and its own ssh configuration leaves the ciphers at OpenSSH's default
    /// (`ssh -G` says the same with and without it); a configuration that names ciphers is
    /// obeyed.
    pub fn args(&self, to: &HostSpec, remote: &str) -> [String; 7] {
        let strict = if self.accept_new_host_keys {
            "accept-new"
        } else {
            "yes"
        };
        [
            strict.to_string(),
            self.connect_timeout_s.max(1).to_string(),
            to.port.map_or(String::new(), |p| p.to_string()),
            to.user.clone().unwrap_or_default(),
            to.host.clone(),
            PREFERRED_CIPHERS.to_string(),
            sh_c(remote),
        ]
    }

    /// The ssh alone: runs `remote` on `to`.
    pub fn command(&self, to: &HostSpec, remote: &str) -> String {
        Call::new("bounce_ssh").args(self.args(to, remote)).code()
    }

    /// The pacing arguments (`RATE PER`, empty without a limit) of an upload of `rate`
    /// bytes per second, or of this hop's own limit when `rate` is `None`.
    pub(crate) fn pace_args(rate: Option<u64>) -> [String; 2] {
        match rate {
            None => [String::new(), String::new()],
            Some(rate) => {
                let rate = rate.max(1);
                [rate.to_string(), per_period(rate).to_string()]
            }
        }
    }
}

/// What a paced upload of `rate` bytes per second moves each [`PACE_PERIOD_MS`].
fn per_period(rate: u64) -> u64 {
    (rate * PACE_PERIOD_MS / 1000).max(1)
}

/// A filter that passes the first `total` bytes of stdin to stdout at `rate` bytes per
/// second at most, for `--limit-rate` on a host: every [`PACE_PERIOD_MS`] one `dd` moves a
/// period's worth, then the loop sleeps until that period's deadline. Over any stretch
/// longer than a period the rate stays under the cap; within one, the bytes go at the
/// link's rate. It costs four process starts a period (`dd`, `date`, `sleep` and the
/// subshell that formats the sleep), whatever the rate.
pub fn pace(rate: u64, total: u64) -> String {
    let rate = rate.max(1);
    Call::new("bounce_pace")
        .arg(rate.to_string())
        .arg(total.to_string())
        .arg(per_period(rate).to_string())
        .code()
}
