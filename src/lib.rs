//! bounce: send one large file from one machine to many, as fast as the network allows.
//!
//! - [`core`]: the sans-IO scheduler shared by both drivers, and its strategies;
//! - [`sim`]: the discrete-event simulator (`bounce-sim`);
//! - [`report`]: CSV and PNG writers;
//! - [`units`]: human units for sizes, rates and durations.

pub mod core;
pub mod report;
pub mod sim;
pub mod units;
