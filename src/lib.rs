//! bounce: send one large file from one machine to many, as fast as the network allows.
//!
//! - [`core`]: the sans-IO scheduler shared by both drivers, and its strategies;
//! - [`fleet`]: the host list and fleet file (`-H`, `--hosts-file`), with per-host rates
//!   and racks;
//! - [`sim`]: the discrete-event simulator (`bounce-sim`);
//! - [`report`]: CSV and PNG writers;
//! - [`run`]: the OpenSSH runner (`bounce-run`);
//! - [`units`]: human units for sizes, rates and durations;
//! - [`cli_docs`]: shell completions and man pages for both binaries.

pub mod cli_docs;
pub mod core;
pub mod fleet;
pub mod report;
pub mod run;
pub mod sim;
pub mod units;
