//! Plain data exchanged between the scheduler core and its drivers.

use std::fmt;
use std::time::Duration;

/// A host in a run. `HostId(0)` is always the source; receivers are `1..=C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl HostId {
    /// The source host, which holds the whole file from the start.
    pub const SOURCE: HostId = HostId(0);

    /// The host's index, for indexing per-host tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// Identifies one planned transfer for its whole life, unique within a [`crate::core::Scheduler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

/// A half-open range of chunk indices, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRange {
    /// First chunk of the range.
    pub start: u32,
    /// One past the last chunk of the range.
    pub end: u32,
}

impl ChunkRange {
    /// The range holding exactly `chunk`.
    pub fn single(chunk: u32) -> Self {
        ChunkRange {
            start: chunk,
            end: chunk + 1,
        }
    }

    /// Number of chunks in the range.
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// True when the range holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Iterates over the chunk indices.
    pub fn iter(&self) -> std::ops::Range<u32> {
        self.start..self.end
    }
}

/// One planned copy: `from` sends the chunks `chunks` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Unique id, to be passed back to [`crate::core::Scheduler::handle_done`].
    pub id: TransferId,
    /// The sending host, which holds every chunk of `chunks`.
    pub from: HostId,
    /// The receiving host.
    pub to: HostId,
    /// Chunks carried by this transfer.
    pub chunks: ChunkRange,
    /// Bytes carried: the sum of the sizes of the chunks.
    pub bytes: u64,
}

/// Why a transfer failed, as reported by the driver. The receiver is the host charged with
/// the attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopError {
    /// Human-readable reason, such as "No space left on device".
    pub reason: String,
}

impl HopError {
    /// A failure with the given reason.
    pub fn new(reason: impl Into<String>) -> Self {
        HopError {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for HopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for HopError {}

/// Something the drivers should know about, drained with
/// [`crate::core::Scheduler::poll_event`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The host now holds every chunk.
    HostComplete {
        /// The host.
        host: HostId,
        /// When its last chunk arrived.
        at: Duration,
    },
    /// A strategy cut a host that receives far slower than its feeder out of its pipeline
    /// (see [`crate::core::Straggler`]): the hosts behind it are fed past it, and it is fed
    /// by `feeder` at its own pace. Transfers still in flight to it and to its old successor
    /// end without counting as attempts.
    Straggler {
        /// The slow host.
        host: HostId,
        /// The host that feeds it from now on.
        feeder: HostId,
        /// Its rate over its current feed, in bytes per second.
        rate: f64,
        /// The rate it was measured against (its old feeder's; for a host cut by a probe of
        /// the source, the other host's), in bytes per second.
        reference: f64,
        /// It had received nothing at all for the rule's stall span, whatever its rate
        /// before.
        stalled: bool,
        /// When it was cut out.
        at: Duration,
    },
    /// A chain's first host receives slowly enough for a probe of the source (see
    /// [`crate::core::Straggler::probe`]): `host` is fed by the source alongside it, so that
    /// a slow first host can be told from a slow source. Transfers still in flight to `host`
    /// end without counting as attempts.
    ProbeStarted {
        /// The chain's first host.
        head: HostId,
        /// The host fed alongside it.
        host: HostId,
        /// `head`'s rate so far, in bytes per second.
        head_rate: f64,
        /// When the probe started.
        at: Duration,
    },
    /// A probe of the source is over: what each host received at over the same span. A
    /// host slower than the other by the rule is cut out ([`Event::Straggler`] follows);
    /// otherwise `host` goes back to the chain's tail (its transfers still in flight end
    /// without counting as attempts), and the source's own link is what limits the chain.
    ProbeEnded {
        /// The chain's first host.
        head: HostId,
        /// The host that was fed alongside it.
        host: HostId,
        /// `head`'s rate over the probe, in bytes per second.
        head_rate: f64,
        /// `host`'s rate over the probe, in bytes per second.
        host_rate: f64,
        /// What the probe found.
        verdict: crate::core::ProbeVerdict,
        /// When it ended.
        at: Duration,
    },
    /// The host was given up: it will receive nothing more and send nothing more.
    HostFailed {
        /// The host.
        host: HostId,
        /// When it was given up.
        at: Duration,
        /// The last reason it failed with.
        reason: String,
    },
}
