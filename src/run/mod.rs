//! The real runner behind `bounce-run`: drives the scheduler core over OpenSSH.
//!
//! - [`hosts`]: the host list (`-H`, hosts files);
//! - [`plan`]: checking the inputs before anything is touched;
//! - [`predict`]: `--dry-run`'s simulated makespan;
//! - [`quote`]: quoting for remote shells;
//! - [`transport`]: the [`Transport`] trait, the seam that lets the orchestration be tested
//!   without ssh;
//! - [`driver`]: the loop around [`crate::core::Scheduler`];
//! - [`script`]: the POSIX shell snippets run on the hosts;
//! - [`ssh`]: the OpenSSH transport;
//! - [`digest`]: the SHA-256 of the source;
//! - [`report`]: the final table and the per-host CSV;
//! - [`progress`]: progress bars on a terminal, plain lines otherwise.

pub mod digest;
pub mod driver;
pub mod hosts;
pub mod plan;
pub mod predict;
pub mod progress;
pub mod quote;
pub mod report;
pub mod script;
pub mod ssh;
pub mod transport;

pub use driver::{
    drive, DriveConfig, DriveError, HostRecord, HostStatus, Observer, RunEvent, RunOutcome,
    CHAIN_WINDOW,
};
pub use hosts::{HostList, HostSpec, HostsError};
pub use quote::shell_quote;
pub use transport::{ByteCounters, CleanupFailure, Prepared, Probe, Transport, TransportError};
