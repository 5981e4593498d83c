//! The scheduler core: who sends which chunks to whom, and when.
//!
//! This module owns every distribution decision and nothing else. It performs no I/O, reads no
//! clock and draws no random numbers, so the simulator (`crate::sim`) and the real runner
//! (`crate::run`) drive exactly the same code. The style is "sans-IO", after quinn-proto and
//! str0m.
//!
//! # Model
//!
//! Host 0 is the source (the controller, "A" in the blog post); hosts `1..=C` are receivers.
//! The file is cut into `k` chunks by a [`Layout`]; whole-file strategies (`linear`, `bounce`)
//! use a single chunk. A [`Transfer`] is plain data: one sender, one receiver and a contiguous
//! range of chunks.
//!
//! # Driver contract
//!
//! Both drivers follow these rules, and every strategy relies on them:
//!
//! 1. Build a [`Scheduler`] with [`Scheduler::new`].
//! 2. **After every input, drain the outputs until there are none**: call
//!    [`Scheduler::poll_transfer`] until it returns `None` and start every transfer it
//!    returned, then call [`Scheduler::poll_event`] until it returns `None`. Inputs are the
//!    construction itself, [`Scheduler::handle_done`], [`Scheduler::handle_host_down`],
//!    [`Scheduler::handle_host_joined`], [`Scheduler::handle_corrupt`] and
//!    [`Scheduler::handle_progress`].
//! 3. Report the end of every started transfer exactly once with
//!    [`Scheduler::handle_done`], `Ok(())` only if its bytes arrived at the receiver. A
//!    failure puts the receiver back among the waiting hosts; after
//!    [`SchedulerConfig::max_attempts`] failures it is given up and
//!    [`Event::HostFailed`] is emitted. Arrived is not always intact: a driver that checks
//!    a copy only once it is whole (the runner hashes each chain stream as it is written,
//!    and a sender's copy may change on disk after its own check) reports a copy found
//!    corrupt with [`Scheduler::handle_corrupt`]; the host then holds nothing, counts one
//!    attempt, and is fed again from the start by a strategy that
//!    [`Strategy::resets`], or is given up.
//! 4. When the driver learns that a host is gone for good (its connection died, its disk is
//!    full), it calls [`Scheduler::handle_host_down`]. Transfers in flight that involve the
//!    host must still be reported through `handle_done` (usually as failures). When a
//!    transfer failed because its sender was lost, report the loss first: such a failure is
//!    then not counted against the receiver's attempts.
//! 5. The run is over when [`Scheduler::is_finished`] returns true: every receiver is either
//!    complete or failed, and nothing is in flight.
//! 6. Several transfers may be in flight between the same two hosts (a chain link with a
//!    window of chunks). Drivers carry them over one connection, first in, first out; no
//!    strategy relies on the order in which they end.
//! 7. [`Scheduler::planned_links`], asked after construction and whenever
//!    [`Scheduler::links_version`] changes (a receiver joined, a host was lost, a straggler
//!    was cut out, a probe of the source started or ended), names the links the strategy
//!    will use from now on for as long as their hosts live (a chain's; a probe's link lasts a
//!    moment, and a link dropped from the plan may come back into it). A driver may set each new one up before its first transfer
//!    (holding back the transfers planned over it meanwhile), and over such a link it may
//!    move every chunk as soon as the sender holds it, ahead of the transfer that plans it:
//!    the strategy would plan exactly that. A link planned into a receiver that already holds
//!    some chunks (its sender was lost or cut out) carries only what it lacks, from its
//!    first missing chunk; a receiver gets its chunks in file order from every strategy that
//!    plans links. Each transfer is still reported through `handle_done` only after it was
//!    polled and its bytes arrived; when such a link breaks, its planned transfers fail like
//!    any other, and the strategy's plan takes over.
//! 8. A driver whose receivers become ready at different times (connections still being
//!    set up) may name them in [`SchedulerConfig::joining`], if the strategy
//!    [`Strategy::joins_late`], and report each with [`Scheduler::handle_host_joined`] once
//!    it is ready, or with `handle_host_down` if it never will be. Nothing is planned to or
//!    from a receiver still joining, so no receiver waits for the slowest to connect.
//! 9. After an [`Event::Straggler`], the slow host and the host that followed it are fed by
//!    other senders ([`Scheduler::links_version`] changes), and so is the probe's host after
//!    an [`Event::ProbeStarted`] or an [`Event::ProbeEnded`], and so are the leaves a cut
//!    host fed. A driver may end the links they were fed over; the transfers in flight on
//!    those links that then fail are not counted against any of them.
//! 10. A driver that knows how far a receiver's stream has got before the transfers that
//!     carry those bytes end may report it with [`Scheduler::handle_progress`] (an input
//!     like the others). It changes no holdings; a strategy that measures rates (the
//!     chain's straggler rule) measures them from it. Reporting it is optional: without it,
//!     rates are measured from `handle_done` alone, at whole chunks.
//!
//! `now` arguments are the time since the start of the run, on whatever clock the driver
//! keeps (virtual for the simulator, monotonic for the runner). The core stamps events with
//! it, and the chain's straggler rule measures rates with it; it never reads a clock.

mod binomial;
mod bounce;
mod bounce_fast;
mod chain;
mod circulant;
mod holdings;
mod layout;
mod linear;
mod rack;
mod scheduler;
mod strategy;
mod swarm;
mod three_sets;
mod types;

pub use binomial::Binomial;
pub use bounce::Bounce;
pub use bounce_fast::BounceFast;
pub use chain::{Chain, Straggler};
pub use holdings::Holdings;
pub use layout::{Layout, LayoutError};
pub use linear::Linear;
pub use rack::Rack;
pub use scheduler::{Scheduler, SchedulerConfig};
pub use strategy::{
    ProbeStep, ProbeVerdict, Spliced, Strategy, StrategyKind, StrategyParams, UnknownStrategy,
    View, WithStrategy,
};
pub use swarm::{Swarm, SwarmParams};
pub use types::{ChunkRange, Event, HopError, HostId, Transfer, TransferId};
