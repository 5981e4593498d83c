//! The simulator's chain against its straggler rule (see `bounce::core::Straggler`): noise
//! never cuts a host out, a slow host always is.

use bounce::core::{Straggler, StrategyKind};
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

/// 8 receivers at 100 Mbit/s, host 1 (the chain's first) at `first` both ways, the source's
/// upload at `source`; 64 MiB in 1 MiB chunks; with or without the probe of the source.
fn slow_first(first: f64, source: f64, probe: bool) -> bounce::sim::SimResult {
    let b = 12.5e6;
    let mut down = vec![None; 9];
    down[1] = Some(first);
    let mut up = down.clone();
    up[0] = Some(source);
    let cfg = SimConfig {
        chunk: MIB,
        network: NetworkSpec {
            fleet: Some(std::sync::Arc::new(bounce::sim::FleetNetwork {
                up,
                down,
                rack: Vec::new(),
                rack_uplink: Vec::new(),
            })),
            ..Default::default()
        },
        straggler: Some(Straggler {
            probe: probe.then_some(Straggler::DEFAULT.probe).flatten(),
            ..Straggler::DEFAULT
        }),
        ..SimConfig::new(8, 64 * MIB, b)
    };
    simulate(StrategyKind::Chain, &cfg).expect("simulation runs")
}

#[test]
fn a_slow_first_host_is_found_by_probing_the_source_and_holds_back_nobody() {
    // Host 1 at 10 Mbit/s heads the chain. Nothing behind it can show a faster rate, so
    // without the probe every host waits for it; with it, host 8 is fed by the source
    // alongside host 1, receives at the rest of the source's link, host 1 is cut out and
    // host 8 takes its place.
    let t1 = 64.0 * MIB as f64 / 12.5e6;
    let own = 64.0 * MIB as f64 / 1.25e6;
    let held = slow_first(1.25e6, 12.5e6, false);
    assert_eq!((held.probes, held.stragglers), (0, 0));
    for i in 2..=8 {
        assert!(held.host_done[i] > own, "host {i}: {}", held.host_done[i]);
    }
    let r = slow_first(1.25e6, 12.5e6, true);
    assert_eq!((r.probes, r.stragglers), (1, 1));
    for i in 2..=8 {
        // The probe starts once host 1 has shown its rate over a window (three of its 1 MiB
        // chunks, 2.5 s) and ends once host 8 has shown its own (1.1 s more). The hosts
        // behind host 1 hold 4 MiB by then; once the chunk on its way from host 1 has
        // arrived, they take the rest at the healthy rate, in a pipeline of 1 MiB steps:
        // 9.2 to 9.6 s, under 1.8·t1, against the 54 s they take behind host 1.
        assert!(
            r.host_done[i] < 1.8 * t1,
            "host {i} done at {} s, t1 = {t1} s",
            r.host_done[i]
        );
    }
    // The slow host is fed at its own pace throughout: by the source, then by the tail.
    assert!(
        r.host_done[1] < 1.05 * own,
        "host 1 done at {} s",
        r.host_done[1]
    );
}

#[test]
fn a_slow_source_is_not_mistaken_for_a_slow_first_host() {
    // The source's upload at 10 Mbit/s: the probe's host receives no faster than host 1, so
    // nobody is cut out, and the chain ends late by exactly what the source sent the
    // probe's host: the source's link stays busy throughout.
    let r = slow_first(12.5e6, 1.25e6, true);
    assert_eq!((r.probes, r.stragglers), (1, 0));
    let probe = (r.source_bytes - 64 * MIB) as f64;
    assert!(probe > 0.0, "nothing was probed");
    let tau = MIB as f64 / 12.5e6;
    let want = (64.0 * MIB as f64 + probe) / 1.25e6 + 7.0 * tau;
    assert!(
        (r.makespan - want).abs() <= 1e-9 * want,
        "makespan {} s, want {want} s",
        r.makespan
    );
}
