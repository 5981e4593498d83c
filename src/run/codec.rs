//! `--compress`: the tools that compress SRC once, on this machine, and decompress it on
//! each host, and the file of compressed bytes (the *wire* copy) that every hop then
//! carries.
//!
//! SRC is compressed into a temporary file before the run, so that the wire copy has a
//! size, and every strategy (the chain's byte offsets, resumes and repairs included) moves
//! it exactly as it moves an uncompressed file. Each host keeps the wire bytes it receives
//! in its temporary copy, which its relays and hops read, and decompresses them on the way
//! into a second temporary file, hashed as it is written against SRC's digest: the logical
//! content is what is verified, and that second file is what is renamed to DEST.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// A compressor present as a command on this machine and on the hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// `zstd` at its default level 3, on every core.
    Zstd,
    /// `lz4` at its fastest level.
    Lz4,
    /// `gzip -1`: the slowest of the three, but found everywhere.
    Gzip,
}

impl Codec {
    /// Every codec, in `--compress`'s order.
    pub const ALL: [Codec; 3] = [Codec::Zstd, Codec::Lz4, Codec::Gzip];

    /// The command's name, which is also how `--compress` names it.
    pub fn tool(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Gzip => "gzip",
        }
    }

    /// Arguments that compress stdin to stdout, the same here and on a host that compresses
    /// its own DEST (so that both give the same bytes where the tool's version is the same).
    fn compress_args(self) -> &'static [&'static str] {
        match self {
            Codec::Zstd => &["-q", "-c", "-3", "-T0"],
            Codec::Lz4 => &["-q", "-c", "-1"],
            Codec::Gzip => &["-c", "-1", "-n"],
        }
    }

    /// A shell command that compresses stdin to stdout.
    pub fn compress_sh(self) -> String {
        std::iter::once(self.tool())
            .chain(self.compress_args().iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A shell command that decompresses stdin to stdout, and fails on a truncated or
    /// corrupt input.
    pub fn decompress_sh(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd -q -d -c",
            Codec::Lz4 => "lz4 -q -d -c",
            Codec::Gzip => "gzip -d -c",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tool())
    }
}

/// Why SRC could not be compressed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The tool is not installed on this machine.
    #[error("--compress {0}: '{0}' is not installed on this machine")]
    Missing(Codec),
    /// The tool ran and failed, or its output could not be written.
    #[error("--compress {codec}: compressing {src} failed: {reason}")]
    Failed {
        /// The codec.
        codec: Codec,
        /// SRC.
        src: String,
        /// What went wrong.
        reason: String,
    },
}

/// SRC compressed: the bytes every hop carries. The temporary file is removed once the last
/// clone of this is dropped.
#[derive(Clone, Debug)]
pub struct Wire {
    /// How it was compressed.
    pub codec: Codec,
    /// The compressed file, on this machine.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    _file: Arc<tempfile::TempPath>,
}

/// Compresses `src` with `codec` into a temporary file in `dir` (created there with mode
/// 0600, removed when the returned [`Wire`] is dropped).
pub fn compress(codec: Codec, src: &Path, dir: &Path) -> Result<Wire, CodecError> {
    let failed = |reason: String| CodecError::Failed {
        codec,
        src: src.display().to_string(),
        reason,
    };
    let input = std::fs::File::open(src).map_err(|e| failed(e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".bounce-wire-")
        .tempfile_in(dir)
        .map_err(|e| {
            failed(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?;
    let output = tmp.reopen().map_err(|e| failed(e.to_string()))?;
    let status = Command::new(codec.tool())
        .args(codec.compress_args())
        .stdin(input)
        .stdout(output)
        .stderr(Stdio::piped())
        .output();
    let out = match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CodecError::Missing(codec))
        }
        Err(e) => return Err(failed(e.to_string())),
        Ok(o) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(match err.trim().lines().last() {
            Some(l) => l.to_string(),
            None => out.status.to_string(),
        }));
    }
    let size = tmp
        .as_file()
        .metadata()
        .map_err(|e| failed(e.to_string()))?
        .len();
    let path = tmp.into_temp_path();
    Ok(Wire {
        codec,
        path: path.to_path_buf(),
        size,
        _file: Arc::new(path),
    })
}

/// For tests that need `codec`'s tool: true when it is installed. CI installs all three
/// (`.ci/run`) and must not skip, so there a missing tool fails the test; elsewhere the
/// test says it skips.
#[cfg(test)]
pub(crate) fn installed_for_test(codec: Codec, test: &str) -> bool {
    if Command::new(codec.tool()).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {codec} is not installed"
    );
    eprintln!("SKIPPED {test}: {codec} is not installed on this machine");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_codec_round_trips_through_its_own_shell_commands() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut data = vec![0u8; 3 << 20];
        data[1000..2000].fill(7);
        std::fs::write(&src, &data).unwrap();
        for codec in Codec::ALL {
            if !installed_for_test(codec, "round trip") {
                continue;
            }
            let wire = compress(codec, &src, dir.path()).unwrap();
            assert!(wire.size * 20 < data.len() as u64, "{codec}: {}", wire.size);
            let out = Command::new("sh")
                .arg("-c")
                .arg(codec.decompress_sh())
                .stdin(std::fs::File::open(&wire.path).unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "{codec}");
            assert!(out.stdout == data, "{codec}");
            // The same bytes from the shell command a host would run on its DEST.
            let again = Command::new("sh")
                .arg("-c")
                .arg(codec.compress_sh())
                .stdin(std::fs::File::open(&src).unwrap())
                .output()
                .unwrap();
            assert!(
                again.stdout == std::fs::read(&wire.path).unwrap(),
                "{codec}"
            );
            let path = wire.path.clone();
            drop(wire);
            assert!(
                !path.exists(),
                "{codec}: the wire copy outlived its last holder"
            );
        }
    }
}
