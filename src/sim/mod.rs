//! The discrete-event simulator behind `bounce-sim`: a next-event loop on a virtual clock
//! that drives the scheduler core over a flow-level network model.
//!
//! - `network`: hosts' upload and download capacities, max-min fair sharing;
//! - `topology`: per-host capacities and racks, and the fluid lower bound;
//! - `engine`: the event loop that runs one strategy once ([`simulate`]);
//! - `scenario`: settings from the command line and `sims/*.toml`, checked;
//! - [`cli`]: `bounce-sim`'s flags and what it does with them;
//! - [`plan`](fn@plan): the search behind `bounce-sim plan` and `--strategy auto`;
//! - [`sweep`](fn@sweep): many runs over host counts, strategies and seeds, on all cores, in a
//!   deterministic order.
//!
//! Time is virtual and kept as `f64` seconds. Every operation on it is IEEE-754 arithmetic in
//! a fixed order, so the same inputs give bit-identical results on any machine.

pub mod cli;
mod engine;
mod network;
mod plan;
pub mod runner;
mod scenario;
mod sweep;
mod topology;

pub use engine::{simulate, Failure, SimConfig, SimError, SimResult};
pub use network::{FlowId, Network};
pub use plan::{plan, streamed_chain, Candidate, Plan, PlanConfig, MIN_CHUNK};
pub use scenario::{parse_hosts, Resolved, Settings, SettingsError};
pub use sweep::{derive_seed, sweep, Point, SweepConfig};
pub use topology::{
    ClassSettings, FleetNetwork, HostClass, NetworkSettings, NetworkSpec, RackSettings, RackSpec,
    Topology,
};
