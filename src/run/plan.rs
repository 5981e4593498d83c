//! Checking a run's inputs before anything is touched: SRC, DEST, the host list and the
//! numeric options. Every error here means exit status 2.

use std::path::{Path, PathBuf};

use crate::core::{Layout, StrategyKind};

use super::hosts::{HostList, HostSpec, HostsError};

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
    /// DEST is not an absolute path, or names a directory.
    #[error("DEST '{0}' must be an absolute path to a file")]
    Dest(String),
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
    /// The source file.
    pub src: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
    /// The receivers, in order, with their DEST.
    pub hosts: Vec<HostSpec>,
    /// The default DEST.
    pub dest: String,
    /// How the file is cut.
    pub layout: Layout,
}

impl Plan {
    /// Checks SRC, DEST and the hosts; `chunk` is the chain's chunk size.
    pub fn build(
        kind: StrategyKind,
        src: &Path,
        dest: &str,
        sources: &[HostSource],
        chunk: u64,
    ) -> Result<Plan, PlanError> {
        if !dest.starts_with('/')
            || dest.ends_with('/')
            || dest.ends_with("/.")
            || dest.ends_with("/..")
        {
            return Err(PlanError::Dest(dest.to_string()));
        }
        if dest.contains('\0') {
            return Err(PlanError::Dest(dest.to_string()));
        }
        let mut list = HostList::new();
        for s in sources {
            match s {
                HostSource::Arg(a) => list.add_arg(a)?,
                HostSource::File(f) => list.add_file(f)?,
            }
        }
        let hosts = list.finish()?;
        let bad_src = |reason: String| PlanError::Source {
            path: src.to_path_buf(),
            reason,
        };
        let f = std::fs::File::open(src).map_err(|e| bad_src(e.to_string()))?;
        let meta = f.metadata().map_err(|e| bad_src(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad_src("not a regular file".into()));
        }
        if meta.len() == 0 {
            return Err(bad_src("is empty; there is nothing to send".into()));
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if chunk == 0 {
            return Err(PlanError::Flag {
                flag: "--chunk",
                reason: "must be greater than 0".into(),
            });
        }
        let layout = kind
            .layout(meta.len(), chunk)
            .map_err(|e| PlanError::Flag {
                flag: "--chunk",
                reason: e.to_string(),
            })?;
        Ok(Plan {
            kind,
            src: src.to_path_buf(),
            size: meta.len(),
            mode,
            hosts,
            dest: dest.to_string(),
            layout,
        })
    }

    /// The DEST of receiver `i` (0-based).
    pub fn dest_of(&self, i: usize) -> &str {
        self.hosts[i].dest_or(&self.dest)
    }
}
