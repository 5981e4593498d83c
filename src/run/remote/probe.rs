//! The probe of a file's DEST, before anything is sent (`probe.sh`): which hasher the host
//! uses, the stale files swept beside DEST (see [`super::sweep`]), and what DEST holds.
//! A tree's probe starts the same way (see [`super::tree`]).

use super::{sweep, Call, Codec};

/// Exit status of [`probe`] when DEST is a directory (`probe.sh`, `tree.sh`).
pub const DEST_IS_DIRECTORY_STATUS: i32 = 4;
/// Exit status of [`probe`] when DEST exists and is neither a regular file nor a symlink.
pub const DEST_NOT_A_FILE_STATUS: i32 = 5;
/// Exit status of [`probe`] when the `--compress` tool is not installed.
pub const TOOL_MISSING_STATUS: i32 = 6;
/// Exit status of every probe on a host whose tools lack an option the jobs use (BusyBox's
/// `tail` has no `--pid`): one line on stderr names them, and the host fails with it.
pub const TOOLS_LACKING_STATUS: i32 = 9;

/// The tool a host computes SHA-256 with, chosen by [`probe`]: the fastest it has.
///
/// GNU `sha256sum` hashes at about 270 MB/s on the development machine, `openssl dgst`
/// (which uses the CPU's SHA extensions) at about 1.2 GB/s: at 10 Gbit/s the difference is
/// four cores on every host. Both print the digest as their first word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hasher {
    /// `openssl dgst -sha256 -r`.
    Openssl,
    /// GNU coreutils' `sha256sum`, which every supported host has.
    Sha256sum,
}

impl Hasher {
    /// The command that hashes stdin (`probe.sh` sets `H` to the same).
    pub fn command(self) -> &'static str {
        match self {
            Hasher::Openssl => "openssl dgst -sha256 -r",
            Hasher::Sha256sum => "sha256sum",
        }
    }

    /// Its name in the probe's answer and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Hasher::Openssl => "openssl",
            Hasher::Sha256sum => "sha256sum",
        }
    }

    /// The hasher named `name`.
    pub fn from_name(name: &str) -> Option<Hasher> {
        match name {
            "openssl" => Some(Hasher::Openssl),
            "sha256sum" => Some(Hasher::Sha256sum),
            _ => None,
        }
    }
}

/// Tells what DEST is before anything is sent, after sweeping stale temporary files.
///
/// The transport runs it registered (its pid printed before it), so that an interrupt while
/// it still hashes stops it. Prints `hasher NAME`, the [`Hasher`] this host will use
/// (`openssl` if it computes SHA-256 right, `sha256sum` otherwise), then one `swept PATH`
/// line per stale temporary file or staging directory removed, then one of: `missing`;
/// `link` (a symlink, which the copy will replace); `size` (a regular file of another size
/// than `size`, not hashed); `file DIGEST` (a regular file of that size). A directory exits
/// [`DEST_IS_DIRECTORY_STATUS`]; anything else that is not a regular file exits
/// [`DEST_NOT_A_FILE_STATUS`]. With `tool` (`--compress`), a host without that command
/// exits [`TOOL_MISSING_STATUS`] first; a host whose tools lack an option the jobs use
/// exits [`TOOLS_LACKING_STATUS`].
pub fn probe(dest: &str, size: u64, tool: Option<Codec>) -> String {
    Call::new("bounce_probe")
        .arg(dest)
        .args(sweep::args(dest))
        .arg(size.to_string())
        .arg(tool.map_or("", |t| t.tool()))
        .code()
}

/// Prints `missing` when the host has no command `tool` (a `--compress` tool, checked on
/// every host before anything is written).
pub fn lacks(tool: &str) -> String {
    Call::new("bounce_lacks").arg(tool).code()
}
