//! Checking a run's inputs before anything is touched: SRC, DEST, the host list and the
//! numeric options. Every error here means exit status 2.

use std::path::{Path, PathBuf};

use super::remote::Preserve;
use crate::core::{Layout, StrategyKind};

use crate::fleet::{dest_problem, HostAttrs, HostList, HostSpec, HostsError, RackUplink};

/// A bad invocation, detected before any connection is made or any file written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// SRC is missing, unreadable or not a regular file.
    #[error("SRC {path}: {reason}")]
    Source {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// DEST is not an absolute path to a file (see [`dest_problem`]).
    #[error("DEST '{dest}' {reason}: it must be an absolute path to a file")]
    Dest {
        /// The path given.
        dest: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The host list is bad.
    #[error(transparent)]
    Hosts(#[from] HostsError),
    /// A flag's value is out of range.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, such as `--chunk`.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Where the hosts come from, in command-line order.
#[derive(Clone, Debug)]
pub enum HostSource {
    /// One `-H host[,host...]` argument.
    Arg(String),
    /// One `--hosts-file FILE`.
    File(PathBuf),
}

/// A checked run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The strategy.
    pub kind: StrategyKind,
    /// The source file, or directory.
    pub src: PathBuf,
    /// True when SRC is a directory, sent as a tree (see [`super::tree`]).
    pub is_dir: bool,
    /// Its size in bytes; for a tree, the data its files hold, holes excluded.
    pub size: u64,
    /// The permission bits applied to every copy: SRC's, less setuid and setgid unless
    /// asked for (`--keep-setid`, `--preserve`).
    pub mode: u32,
    /// SRC's modification time and owner, applied to every copy with `--preserve`.
    pub preserve: Option<Preserve>,
    /// SRC's modification time when it was checked, to tell whether it changed during the
    /// run.
    pub modified: Option<std::time::SystemTime>,
    /// The receivers, in order, with their DEST and fleet attributes.
    pub hosts: Vec<HostSpec>,
    /// The source's fleet attributes (`@source`).
    pub source: HostAttrs,
    /// Rack uplinks (`@rack`).
    pub racks: Vec<RackUplink>,
    /// The default DEST.
    pub dest: String,
    /// How the file is cut.
    pub layout: Layout,
}

impl Plan {
    /// Checks SRC, DEST and the hosts; `chunk` is the chain's chunk size. SRC's setuid and
    /// setgid bits are kept only with `keep_setid` or `preserve`; with `preserve`, its
    /// modification time and owner are taken too.
    pub fn build(
        kind: StrategyKind,
        src: &Path,
        dest: &str,
        sources: &[HostSource],
        chunk: u64,
        keep_setid: bool,
        preserve: bool,
    ) -> Result<Plan, PlanError> {
        if let Some(reason) = dest_problem(dest) {
            return Err(PlanError::Dest {
                dest: dest.to_string(),
                reason,
            });
        }
        let mut list = HostList::new();
        for s in sources {
            match s {
                HostSource::Arg(a) => list.add_arg(a)?,
                HostSource::File(f) => list.add_file(f)?,
            }
        }
        let fleet = list.finish()?;
        let bad_src = |reason: String| PlanError::Source {
            path: src.to_path_buf(),
            reason,
        };
        let f = std::fs::File::open(src).map_err(|e| bad_src(e.to_string()))?;
        let meta = f.metadata().map_err(|e| bad_src(e.to_string()))?;
        let is_dir = meta.is_dir();
        let size = if is_dir {
            // A tree of empty files still sends an archive of headers.
            super::tree::data_estimate(src)
                .map_err(|e| bad_src(e.to_string()))?
                .max(1)
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(bad_src("neither a regular file nor a directory".into()));
        };
        if size == 0 {
            return Err(bad_src("is empty; there is nothing to send".into()));
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let keep = if keep_setid || preserve {
            0o7777
        } else {
            0o1777
        };
        let mode = meta.permissions().mode() & keep;
        let preserve = preserve.then(|| Preserve {
            mtime_secs: meta.mtime(),
            mtime_nanos: meta.mtime_nsec() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if chunk == 0 {
            return Err(PlanError::Flag {
                flag: "--chunk",
                reason: "must be greater than 0".into(),
            });
        }
        let layout = layout(kind, size, chunk)?;
        Ok(Plan {
            kind,
            src: src.to_path_buf(),
            is_dir,
            size,
            mode,
            preserve,
            modified: meta.modified().ok(),
            hosts: fleet.hosts,
            source: fleet.source,
            racks: fleet.racks,
            dest: dest.to_string(),
            layout,
        })
    }

    /// Switches to strategy `kind` (`--strategy auto`'s pick), cutting the file for it with
    /// chunks of `chunk` bytes.
    pub fn set_kind(&mut self, kind: StrategyKind, chunk: u64) -> Result<(), PlanError> {
        self.layout = layout(kind, self.size, chunk)?;
        self.kind = kind;
        Ok(())
    }

    /// Cuts `size` bytes instead of SRC's for the current strategy: what the hops carry
    /// when it is not SRC itself (`--compress`).
    pub fn cut_for(&mut self, size: u64, chunk: u64) -> Result<(), PlanError> {
        self.layout = layout(self.kind, size, chunk)?;
        Ok(())
    }

    /// True when the fleet file gave rates or racks, for the source or any host.
    pub fn has_fleet_attributes(&self) -> bool {
        !self.source.is_empty()
            || !self.racks.is_empty()
            || self.hosts.iter().any(|h| !h.attrs.is_empty())
    }

    /// The DEST of receiver `i` (0-based).
    pub fn dest_of(&self, i: usize) -> &str {
        self.hosts[i].dest_or(&self.dest)
    }
}

fn layout(kind: StrategyKind, size: u64, chunk: u64) -> Result<Layout, PlanError> {
    kind.layout(size, chunk).map_err(|e| PlanError::Flag {
        flag: "--chunk",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn plan_for(src: &Path, keep_setid: bool) -> Plan {
        Plan::build(
            StrategyKind::Bounce,
            src,
            "/d/f",
            &[HostSource::Arg("h1".into())],
            1 << 20,
            keep_setid,
            false,
        )
        .unwrap()
    }

    #[test]
    fn setuid_and_setgid_bits_are_dropped_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tool");
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o6755)).unwrap();
        assert_eq!(plan_for(&src, false).mode, 0o755);
        assert_eq!(plan_for(&src, true).mode, 0o6755);
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o1640)).unwrap();
        assert_eq!(
            plan_for(&src, false).mode,
            0o1640,
            "the sticky bit is harmless"
        );
    }

    #[test]
    fn dest_must_name_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        std::fs::write(&src, b"x").unwrap();
        for bad in ["rel", "/", "/srv/", "/srv/.", "/srv/..", "/a\nb", "/a\0b"] {
            let e = Plan::build(
                StrategyKind::Bounce,
                &src,
                bad,
                &[HostSource::Arg("h1".into())],
                1 << 20,
                false,
                false,
            )
            .unwrap_err();
            assert!(matches!(e, PlanError::Dest { .. }), "{bad:?}: {e}");
        }
    }
}
