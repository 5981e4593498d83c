//! The real runner behind `bounce-run`: drives the scheduler core over OpenSSH.
//!
//! - [`cli`]: `bounce-run`'s options and the exit statuses it documents;
//! - [`session`]: one `bounce-run` session, from its options to its exit status;
//! - [`plan`]: checking the inputs before anything is touched;
//! - [`predict`]: `--dry-run`'s simulated makespan;
//! - [`quote`]: quoting for remote shells;
//! - [`transport`]: the [`Transport`] trait, the seam that lets the orchestration be tested
//!   without ssh;
//! - [`driver`]: the loop around [`crate::core::Scheduler`];
//! - [`remote`]: the jobs run on the hosts, one module each, with their shell bodies;
//! - [`ssh`]: the OpenSSH transport;
//! - [`codec`]: `--compress`, SRC compressed once for every hop;
//! - [`tree`]: a directory SRC (or a `--sparse` file): its manifest, its archive, the
//!   comparison with what a host holds;
//! - [`digest`]: the SHA-256 of the source;
//! - [`pace`]: `--limit-rate` on the controller;
//! - [`split`]: `--streams`, where the parts of a hop over several streams fall;
//! - [`report`]: the final table and the per-host CSV;
//! - [`progress`]: progress bars on a terminal, plain lines otherwise.

pub mod cli;
pub mod codec;
pub mod digest;
pub mod driver;
pub mod pace;
pub mod plan;
pub mod predict;
pub mod progress;
pub mod quote;
pub mod remote;
pub mod report;
pub mod session;
pub mod split;
pub mod ssh;
pub mod transport;
pub mod tree;

pub use crate::fleet::{HostList, HostSpec, HostsError};
pub use driver::{
    drive, DriveConfig, DriveError, HostRecord, HostStatus, Observer, RunEvent, RunOutcome,
    CHAIN_WINDOW,
};
pub use quote::shell_quote;

use crate::core::StrategyKind;

/// The strategies bounce-run executes: whole-file hops (linear, bounce) and the streamed
/// chain. The planner marks them and `--strategy auto` picks among them.
pub const RUNNABLE: [StrategyKind; 3] = [
    StrategyKind::Linear,
    StrategyKind::Bounce,
    StrategyKind::Chain,
];

/// How long each hop of bounce-run's chain holds the stream back, on average: half a relay's
/// poll ([`remote::RELAY_POLL_MS`]). The simulator's streamed chain uses it
/// ([`crate::sim::streamed_chain`]).
pub const STREAM_HOP_DELAY: std::time::Duration =
    std::time::Duration::from_millis(remote::RELAY_POLL_MS as u64 / 2);
pub use transport::{
    ByteCounters, CleanupFailure, Prepared, Probe, ThenOutcome, Transport, TransportError,
};
