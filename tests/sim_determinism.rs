//! Seeded jitter: reproducible, seed-dependent, and centred on the jitter-free result.

use bounce::core::StrategyKind;
use bounce::sim::{simulate, sweep, SimConfig, SweepConfig};

fn base() -> SimConfig {
    SimConfig::new(1, 20 << 30, 125e6)
}

#[test]
fn the_same_seed_gives_the_same_makespan_and_another_seed_a_different_one() {
    for kind in StrategyKind::ALL {
        let cfg = SimConfig {
            receivers: 13,
            jitter: 0.1,
            seed: 42,
            ..base()
        };
        let a = simulate(kind, &cfg).unwrap().makespan;
        let b = simulate(kind, &cfg).unwrap().makespan;
        let c = simulate(kind, &SimConfig { seed: 43, ..cfg })
            .unwrap()
            .makespan;
        assert_eq!(a.to_bits(), b.to_bits(), "{kind}");
        assert_ne!(a, c, "{kind}: another seed must change the result");
    }
}

/// With F = 0.1 and 100 runs, the mean makespan stays within 5% of the jitter-free value.
/// (The worst case, about +4.5%, is bounce just below a power of two, where the last round
/// waits for the slowest of many parallel hops; see the README.)
#[test]
fn jitter_of_a_tenth_moves_the_mean_over_100_runs_by_less_than_5_percent() {
    for hosts in [1, 2, 3, 7, 8, 15, 31, 63, 64] {
        let cfg = SweepConfig {
            hosts: hosts..=hosts,
            strategies: StrategyKind::ALL.to_vec(),
            base: SimConfig {
                jitter: 0.1,
                ..base()
            },
            runs: 100,
            threads: 0,
        };
        let points = sweep(&cfg).unwrap();
        for kind in StrategyKind::ALL {
            let runs: Vec<f64> = points
                .iter()
                .filter(|p| p.strategy == kind)
                .map(|p| p.makespan)
                .collect();
            assert_eq!(runs.len(), 100);
            let mean = runs.iter().sum::<f64>() / 100.0;
            let exact = simulate(
                kind,
                &SimConfig {
                    receivers: hosts,
                    ..base()
                },
            )
            .unwrap()
            .makespan;
            let dev = (mean - exact) / exact;
            assert!(
                dev.abs() < 0.05,
                "{kind} C={hosts}: mean {mean} vs {exact} ({:+.2}%)",
                dev * 100.0
            );
            let spread = runs.iter().cloned().fold(f64::NAN, f64::max)
                - runs.iter().cloned().fold(f64::NAN, f64::min);
            assert!(spread > 0.0, "{kind} C={hosts}: jitter must vary the runs");
        }
    }
}
