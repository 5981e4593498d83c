//! The seam between orchestration and the wire: what the driver asks of a transport.
//!
//! The driver ([`crate::run::driver`]) only decides *when*; a [`Transport`] knows *how*. The
//! real one is [`crate::run::ssh::SshTransport`]; tests use an in-memory one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{HostId, Transfer};

/// Why a transport operation failed. The message names the host or path involved.
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
    /// A remote command failed.
    #[error("{host}: {reason}")]
    Remote {
        /// The host where it failed.
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
}

/// What a host holds before anything is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// DEST already holds the file with the right digest: nothing to send.
    UpToDate,
    /// The host needs the file.
    Needed,
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

/// Moves the file between hosts. Host 0 is the controller (the source); receivers are
/// `1..=C` in the order the user listed them.
///
/// Every method must finish in bounded time even when a host or link dies (keep-alives,
/// timeouts); the driver never adds its own timeouts.
pub trait Transport: Send + Sync + 'static {
    /// Connects to a receiver and tells whether it already holds the file.
    fn prepare(&self, host: HostId) -> impl Future<Output = Result<Probe, TransportError>> + Send;

    /// Carries out one planned transfer. `Ok` means the receiver holds the chunks intact; for
    /// whole-file hops that includes the digest check and the rename into place. On failure
    /// the transport has already stopped the hop's remote processes.
    fn hop(&self, t: Transfer) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sets up `links` ahead of their first transfer (the driver passes
    /// [`crate::core::Scheduler::planned_links`] before the first one starts), so that links
    /// whose setup is slow are set up all at once rather than as the data reaches each
    /// sender, and may carry their data without waiting for each transfer. A hint: a link
    /// that fails here is not reported, since the first hop over it meets the failure again.
    /// The default does nothing.
    fn open_links(&self, _links: &[(HostId, HostId)]) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once a receiver holds every chunk: verifies it and renames it into place, if
    /// [`Transport::hop`] has not already done so.
    fn finalize(&self, host: HostId) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// True while the connection to `host` is up. Used after a failed hop to tell a dead host
    /// from a failed copy.
    fn is_alive(&self, host: HostId) -> impl Future<Output = bool> + Send;

    /// `host` was given up: stop its remote processes and remove its temporary files.
    fn discard(&self, host: HostId) -> impl Future<Output = ()> + Send;

    /// The run is over (finished or interrupted): stop every remote process still running,
    /// remove every temporary file that was not renamed into place, close connections.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}
