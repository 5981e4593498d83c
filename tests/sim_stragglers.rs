//! The simulator's chain against its straggler rule (see `bounce::core::Straggler`): noise
//! never cuts a host out, a slow host always is.

use bounce::core::StrategyKind;
use bounce::sim::{simulate, HostClass, NetworkSpec, SimConfig};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn jitter_of_twenty_percent_cuts_no_host_out_of_a_chain_and_a_slow_class_does() {
    // The straggler rule leaves healthy hosts alone under ±20% rate jitter, with either
    // the simulator's one chunk in flight or more, and cuts hosts ten times slower out.
    for c in [4u32, 16, 48] {
        for seed in 1..=4 {
            let cfg = SimConfig {
                chunk: 16 * MIB,
                jitter: 0.2,
                seed,
                ..SimConfig::new(c, 2 * GIB, 125e6)
            };
            let r = simulate(StrategyKind::Chain, &cfg).expect("simulation runs");
            assert_eq!(r.stragglers, 0, "C={c}, seed {seed}: healthy hosts cut out");
        }
    }
    let slow = SimConfig {
        chunk: 16 * MIB,
        network: NetworkSpec {
            classes: vec![HostClass {
                share: 0.3,
                upload: 12.5e6,
                download: 12.5e6,
            }],
            ..Default::default()
        },
        ..SimConfig::new(32, 2 * GIB, 125e6)
    };
    let r = simulate(StrategyKind::Chain, &slow).expect("simulation runs");
    assert!(r.stragglers > 0, "no slow host was cut out");
}
