//! The seam between orchestration and the wire: what the driver asks of a transport.
//!
//! The driver ([`crate::run::driver`]) only decides *when*; a [`Transport`] knows *how*. The
//! real one is [`crate::run::ssh::SshTransport`]; tests use an in-memory one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{HostId, Transfer};

/// Why a transport operation failed. The message names the host or path involved.
///
/// The kind tells the driver which scheduler input it is (see [`TransportError::lost_host`]):
/// a host whose connection is gone is given up at once, anything else is a failed hop that
/// may be retried.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// Could not connect to or authenticate with a host.
    #[error("cannot connect to {host}: {reason}")]
    Connect {
        /// The host.
        host: String,
        /// What ssh said.
        reason: String,
    },
    /// The connection to a host was lost: the host crashed, its sshd died or its link went
    /// down. Nothing more can be done on it in this run.
    #[error("connection to {host} lost: {reason}")]
    Disconnected {
        /// The host, as the user named it.
        host: String,
        /// The host's id.
        id: HostId,
        /// What failed when the loss was noticed.
        reason: String,
    },
    /// A remote command failed on a host that is still reachable.
    #[error("{host}: {reason}")]
    Remote {
        /// The host (or `X -> Y` for a hop between hosts) where it failed.
        host: String,
        /// What the command said, such as "No space left on device".
        reason: String,
    },
    /// The copy on a host does not match the source's digest.
    #[error("{host}: digest mismatch on {path} (got {got})")]
    DigestMismatch {
        /// The host.
        host: String,
        /// The temporary file checked.
        path: String,
        /// The digest found.
        got: String,
    },
    /// A local read of the source failed.
    #[error("reading {path}: {reason}")]
    Local {
        /// The source file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// Another run holds the lock beside DEST on a host (see [`super::remote::lock`]): the host fails
    /// at once, before anything is written there.
    #[error("{host}: DEST {path} is locked by {holder}; one run per DEST at a time (remove {lock} if that run is gone and you cannot wait for it to be swept)")]
    Locked {
        /// The host.
        host: String,
        /// Its DEST.
        path: String,
        /// Who holds the lock, as its owner line says.
        holder: String,
        /// The lock's path.
        lock: String,
    },
    /// DEST on a host cannot take the copy (it is a directory, say): refused before anything
    /// is written there.
    #[error("{host}: DEST {path} {reason}")]
    Dest {
        /// The host.
        host: String,
        /// Its DEST.
        path: String,
        /// What is wrong, such as "is a directory".
        reason: String,
    },
    /// A hop's link was ended on purpose because its receiver is fed another way from now on
    /// (its sender was cut out of a chain or lost, or its copy is fed again from the start):
    /// neither host is at fault, and nothing needs to be asked of them to say so.
    #[error("{link}: {reason}")]
    Rerouted {
        /// `X -> Y`.
        link: String,
        /// What the hop was doing when its link was ended.
        reason: String,
    },
    /// A command the run needs (GNU tar, the `--compress` tool) is not installed on a host.
    #[error("{host}: '{tool}' is not installed there, and this run needs it on every host")]
    ToolMissing {
        /// The host.
        host: String,
        /// The command.
        tool: String,
    },
}

impl TransportError {
    /// The receiver whose connection this error says is gone, if any: the driver gives it up
    /// at once (`handle_host_down`) instead of spending its attempts.
    pub fn lost_host(&self) -> Option<HostId> {
        match self {
            TransportError::Disconnected { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// What a host holds before anything is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// DEST already holds the file with the right digest: nothing to send.
    UpToDate,
    /// The host needs the file.
    Needed,
}

/// The result of [`Transport::prepare`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// What the host holds.
    pub probe: Probe,
    /// What the probe found beside DEST that earlier runs left, and what it did with it.
    pub found: Vec<Found>,
    /// The tool the host computes SHA-256 with, for the report, if the transport says.
    pub hasher: Option<String>,
}

/// Something an earlier run left beside a host's DEST, as its probe found and dealt with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A stale temporary file or staging directory, removed.
    Swept(String),
    /// A stale lock, removed.
    SweptLock {
        /// The lock's path.
        lock: String,
        /// Who had left it, as its owner line says.
        holder: String,
    },
    /// A tree a killed run had set aside while DEST was absent: moved back to DEST, so
    /// that only what differs is sent.
    Restored(String),
    /// One of several such trees: left where it is, since which one DEST was is not known.
    Unrestored(String),
}

/// Something [`Transport::shutdown`] could not clean up: what may be left, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{host}: cleanup failed ({reason}); may be left: {}", .left.join(", "))]
pub struct CleanupFailure {
    /// The host.
    pub host: String,
    /// Why: the host was unreachable, the cleanup timed out, `rm` failed.
    pub reason: String,
    /// Temporary files and remote process groups that may still be there.
    pub left: Vec<String>,
}

/// Bytes received so far by each host, updated by the transport while hops run and read by
/// the progress display.
#[derive(Debug)]
pub struct ByteCounters {
    bytes: Vec<AtomicU64>,
}

impl ByteCounters {
    /// Counters for `hosts` hosts (source included), all zero.
    pub fn new(hosts: usize) -> Self {
        ByteCounters {
            bytes: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Adds `n` bytes received by `host`.
    pub fn add(&self, host: HostId, n: u64) {
        self.bytes[host.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the bytes received by `host` (after a failed hop restarts from zero).
    pub fn set(&self, host: HostId, n: u64) {
        self.bytes[host.index()].store(n, Ordering::Relaxed);
    }

    /// Bytes received by `host`.
    pub fn get(&self, host: HostId) -> u64 {
        self.bytes[host.index()].load(Ordering::Relaxed)
    }
}

/// How a `--then` command ended on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThenOutcome {
    /// Its exit status (128 + the signal's number when a signal ended it, as shells say).
    pub status: i32,
    /// The last lines it printed, standard output and error together.
    pub output: String,
}

/// Moves the file between hosts. Host 0 is the controller (the source); receivers are
/// `1..=C` in the order the user listed them.
///
/// Every method must finish in bounded time even when a host or link dies (keep-alives,
/// timeouts); the driver never adds its own timeouts.
pub trait Transport: Send + Sync + 'static {
    /// Connects to a receiver and tells whether it already holds the file. A DEST that cannot
    /// take the copy is [`TransportError::Dest`].
    fn prepare(
        &self,
        host: HostId,
    ) -> impl Future<Output = Result<Prepared, TransportError>> + Send;

    /// Called synchronously, in the order the driver starts transfers, just before
    /// [`Transport::hop`] is called for `t`. The hops themselves run concurrently and may
    /// reach the wire in any order; a transport that carries several transfers of one link
    /// over one connection keeps them first in, first out (rule 6 of the driver contract) by
    /// the order recorded here. The default does nothing.
    fn starting(&self, _t: &Transfer) {}

    /// Where the transport reports how far each stream into a receiver has got, as
    /// `(receiver, bytes its copy holds)`, while the bytes arrive and ahead of the hops that
    /// carry them (rule 10 of the driver contract), so that the core measures rates in bytes.
    /// The driver takes it once, before the first transfer; the default reports nothing.
    fn take_progress(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<(HostId, u64)>> {
        None
    }

    /// Carries out one planned transfer. `Ok` means the receiver holds the chunks intact; for
    /// whole-file hops that includes the digest check and the rename into place. On failure
    /// the transport has already stopped the hop's remote processes, and the error says
    /// whether a host's connection is gone ([`TransportError::lost_host`]).
    fn hop(&self, t: Transfer) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sets up `links` ahead of their first transfer (the driver passes
    /// [`crate::core::Scheduler::planned_links`] before the first one starts), so that links
    /// whose setup is slow are set up all at once rather than as the data reaches each
    /// sender, and may carry their data without waiting for each transfer. Returns why each
    /// link that could not be set up failed; its transfers then go another way, so this is
    /// for the log, not for the scheduler. The default does nothing.
    fn open_links(
        &self,
        _links: &[(HostId, HostId)],
    ) -> impl Future<Output = Vec<TransportError>> + Send {
        async { Vec::new() }
    }

    /// Called once a receiver holds every chunk: verifies it and renames it into place, if
    /// [`Transport::hop`] has not already done so.
    fn finalize(&self, host: HostId) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Checks again, by reading it back, the copy that `host` holds at DEST: `Ok` if it
    /// still matches SRC's digest, [`TransportError::DigestMismatch`] if not. The driver
    /// asks this of a host whose copy was verified as it was written but that fed another
    /// host a copy that does not match (its copy changed on disk after it was hashed). The
    /// default finds nothing wrong.
    fn recheck(&self, _host: HostId) -> impl Future<Output = Result<(), TransportError>> + Send {
        async { Ok(()) }
    }

    /// `host`'s copy is corrupt and it is to be fed again from the start: stop every link
    /// into it and out of it, and remove its temporary copy and any copy this run put at
    /// its DEST, so that nothing corrupt stays there or is passed on. The default does
    /// nothing.
    fn reset(&self, _host: HostId) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Runs `command` on `host`, whose copy is verified and in place, with its DEST as the
    /// command's `$1` (`--then`): returns how it exited and the tail of what it printed.
    /// It runs registered like any hop, so an interrupt stops it.
    fn then(
        &self,
        host: HostId,
        command: &str,
    ) -> impl Future<Output = Result<ThenOutcome, TransportError>> + Send;

    /// `host` was given up: stop its remote processes and remove its temporary files. What
    /// cannot be removed now is kept for [`Transport::shutdown`], which tries again.
    fn discard(&self, host: HostId) -> impl Future<Output = ()> + Send;

    /// The run is over (finished, interrupted, or stopped by an internal error): stop every
    /// remote process still running, remove every temporary file that was not renamed into
    /// place, close connections; all hosts at once, under one overall deadline. Returns what
    /// could not be cleaned up.
    fn shutdown(&self) -> impl Future<Output = Vec<CleanupFailure>> + Send;
}
