//! What `bounce-run` executes, as the simulator and the planner model it: the strategies it
//! runs and how long each hop of its chain holds the stream back. Both the runner and the
//! simulator read these from here, below both of them.

use std::time::Duration;

use super::PlanConfig;
use crate::core::StrategyKind;

/// The strategies bounce-run executes: whole-file hops (linear, bounce) and the streamed
/// chain. The planner marks them and `--strategy auto` picks among them.
pub const RUNNABLE: [StrategyKind; 3] = [
    StrategyKind::Linear,
    StrategyKind::Bounce,
    StrategyKind::Chain,
];

/// How often a chain relay's `tail` looks for more of the copy it follows, in milliseconds
/// (`relay.sh`): at each hop a stream waits up to this (half of it on average), and once the
/// relay has sent the whole file it ends within this.
pub const RELAY_POLL_MS: u32 = 50;

/// How long each hop of bounce-run's chain holds the stream back, on average: half a relay's
/// poll ([`RELAY_POLL_MS`]). The simulator's streamed chain uses it
/// ([`super::streamed_chain`]).
pub const STREAM_HOP_DELAY: Duration = Duration::from_millis(RELAY_POLL_MS as u64 / 2);

/// `cfg` with the strategies bounce-run runs marked runnable, and its chain modelled as it
/// runs it: a stream held back by [`STREAM_HOP_DELAY`] per hop.
pub fn marking_runnable(cfg: PlanConfig) -> PlanConfig {
    PlanConfig {
        runnable: RUNNABLE.to_vec(),
        stream_hop_delay: Some(STREAM_HOP_DELAY),
        ..cfg
    }
}
