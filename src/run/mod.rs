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
//! - [`progress`]: progress bars on a terminal, plain lines otherwise;
//! - [`say`]: how much is said on stderr (`-q`, `-v`), and the `-v` trace.

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
pub mod say;
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

pub use crate::sim::runner::{RUNNABLE, STREAM_HOP_DELAY};
pub use transport::{
    ByteCounters, CleanupFailure, Found, Prepared, Probe, ThenOutcome, Transport, TransportError,
};
