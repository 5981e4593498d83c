//! The simulator against the closed forms of DESIGN.md §2, at zero jitter and zero latency.

use std::time::Duration;

use bounce::core::Straggler;
use bounce::core::StrategyKind;
use bounce::sim::{simulate, SimConfig};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn makespan(kind: StrategyKind, cfg: &SimConfig) -> f64 {
    simulate(kind, cfg).expect("simulation runs").makespan
}

fn assert_close(got: f64, want: f64, what: &str) {
    let rel = ((got - want) / want).abs();
    assert!(
        rel <= 1e-9,
        "{what}: got {got}, want {want} (relative error {rel:e})"
    );
}

/// `receivers` receivers of `size` bytes at `bandwidth` bytes per second, with no straggler
/// rule: these closed forms are the strategies' own. The rule's probe of a chain's source
/// shares the source's link for a moment; its cost has a test of its own below.
fn config(receivers: u32, size: u64, bandwidth: f64) -> SimConfig {
    SimConfig {
        straggler: None,
        ..SimConfig::new(receivers, size, bandwidth)
    }
}

fn blog(receivers: u32) -> SimConfig {
    config(receivers, 20 * GIB, 125e6)
}

#[test]
fn linear_takes_c_times_t() {
    for c in 1..=64 {
        let cfg = blog(c);
        assert_close(
            makespan(StrategyKind::Linear, &cfg),
            f64::from(c) * cfg.t(),
            &format!("C={c}"),
        );
    }
}

#[test]
fn bounce_takes_ceil_log2_c_plus_1_times_t() {
    for c in 1..=64u32 {
        let cfg = blog(c);
        let l = f64::from(32 - c.leading_zeros()); // ⌈log2(C+1)⌉
        assert_close(
            makespan(StrategyKind::Bounce, &cfg),
            l * cfg.t(),
            &format!("C={c}"),
        );
    }
}

#[test]
fn bounce_matches_the_blog_staircase() {
    let t = blog(1).t();
    for (c, rounds) in [
        (1, 1.0),
        (2, 2.0),
        (3, 2.0),
        (4, 3.0),
        (7, 3.0),
        (8, 4.0),
        (15, 4.0),
        (16, 5.0),
    ] {
        assert_close(
            makespan(StrategyKind::Bounce, &blog(c)),
            rounds * t,
            &format!("C={c}"),
        );
    }
}

#[test]
fn chain_takes_one_plus_c_minus_1_over_k_times_t() {
    for c in 1..=64u32 {
        let cfg = blog(c);
        let k = cfg.size.div_ceil(cfg.chunk) as f64;
        let want = (1.0 + f64::from(c - 1) / k) * cfg.t();
        assert_close(makespan(StrategyKind::Chain, &cfg), want, &format!("C={c}"));
    }
}

/// With bounce-run's straggler rule, a chain whose first host has more than the rule's probe
/// span to go probes its source once: its last host is fed by the source alongside the
/// first for about a window, then goes back to the tail. On a uniform network the source's
/// link stays busy throughout and the probe's host waits on nobody, so the chain ends late
/// by exactly what the source sent that host, at the source's rate; and neither host is
/// cut out.
#[test]
fn a_chain_that_probes_its_source_ends_late_by_the_probes_bytes_at_the_source_rate() {
    let rule = Straggler::DEFAULT;
    for c in [2u32, 3, 7, 33] {
        for chunk in [16 * MIB, 64 * MIB] {
            let cfg = SimConfig {
                chunk,
                straggler: Some(rule),
                ..blog(c)
            };
            let r = simulate(StrategyKind::Chain, &cfg).expect("simulation runs");
            let what = format!("C={c}, chunk {chunk}");
            assert_eq!((r.probes, r.stragglers), (1, 0), "{what}");
            let probe = (r.source_bytes - cfg.size) as f64;
            // The probe's host gets about half the source's link for a window and two
            // chunks (its first, and the one that ends the window).
            let tau = chunk as f64 / cfg.bandwidth;
            let most = (rule.window.as_secs_f64() + 2.0 * tau) * cfg.bandwidth;
            assert!(probe > 0.0 && probe <= most, "{what}: probed {probe} bytes");
            let k = cfg.size.div_ceil(chunk) as f64;
            let pipeline = (1.0 + f64::from(c - 1) / k) * cfg.t();
            assert_close(r.makespan, pipeline + probe / cfg.bandwidth, &what);
        }
    }
    // A file whose first host has less than the probe's span to go is not probed.
    let short = SimConfig {
        straggler: Some(rule),
        ..config(8, GIB, 125e6)
    };
    let r = simulate(StrategyKind::Chain, &short).expect("simulation runs");
    assert_eq!((r.probes, r.source_bytes), (0, GIB), "8.6 s to go");
}

#[test]
fn chain_with_a_short_last_chunk_pays_one_full_chunk_per_extra_hop() {
    // 10 MiB in 3 MiB chunks: k = 4 with a 1 MiB tail. The last host finishes at
    // T + (C−1)·chunk/B: the pipeline fills with full chunks.
    let cfg = SimConfig {
        chunk: 3 * MIB,
        ..config(5, 10 * MIB, 1e6)
    };
    let want = cfg.t() + 4.0 * (3 * MIB) as f64 / 1e6;
    assert_close(makespan(StrategyKind::Chain, &cfg), want, "C=5");
}

#[test]
fn latency_is_paid_once_per_connection() {
    let lat = Duration::from_millis(250);
    let cfg = SimConfig {
        latency: lat,
        ..blog(7)
    };
    let t = cfg.t();
    // Linear: one setup, then C·T. Bounce: three rounds, each a new connection.
    assert_close(
        makespan(StrategyKind::Linear, &cfg),
        7.0 * t + 0.25,
        "linear",
    );
    assert_close(
        makespan(StrategyKind::Bounce, &cfg),
        3.0 * (t + 0.25),
        "bounce",
    );
    // Chain: its links are planned from the start, so all are set up before the first
    // chunk, the source's in λ and the others in 2λ (the runner connects to the sender,
    // then the sender to the receiver); after that chunks follow each other on each link:
    // max(λ + (1 + (C−1)/k)·T, 2λ + (1 + (C−2)/k)·T). A setup shorter than a chunk's time
    // hides behind the first chunk; a longer one shows once, on the second link.
    let k = cfg.size.div_ceil(cfg.chunk) as f64;
    let chunk_time = t / k;
    for lat in [0.25, 2.0 * chunk_time] {
        let cfg = SimConfig {
            latency: Duration::from_secs_f64(lat),
            ..blog(7)
        };
        let want = (lat + (1.0 + 6.0 / k) * t).max(2.0 * lat + (1.0 + 5.0 / k) * t);
        assert_close(makespan(StrategyKind::Chain, &cfg), want, "chain");
        // One receiver: only the source's link.
        let one = SimConfig {
            latency: Duration::from_secs_f64(lat),
            ..blog(1)
        };
        assert_close(makespan(StrategyKind::Chain, &one), lat + t, "chain, C=1");
    }
    assert!(0.25 < chunk_time, "both regimes are covered");
    // A one-chunk file: the chain still sets its links up together, then each host waits
    // for the whole file: max(λ + C·T, 2λ + (C − 1)·T), the first here since T > λ.
    let whole = SimConfig {
        latency: lat,
        chunk: cfg.size,
        ..blog(7)
    };
    assert_close(
        makespan(StrategyKind::Chain, &whole),
        0.25 + 7.0 * t,
        "chain, one chunk",
    );
}

#[test]
fn the_source_uploads_what_each_strategy_promises() {
    let cfg = blog(7);
    let r = simulate(StrategyKind::Linear, &cfg).unwrap();
    assert_eq!(r.source_bytes, 7 * cfg.size);
    let r = simulate(StrategyKind::Bounce, &cfg).unwrap();
    assert_eq!(
        r.source_bytes,
        3 * cfg.size,
        "the source sends once per round"
    );
    let r = simulate(StrategyKind::Chain, &cfg).unwrap();
    assert_eq!(
        r.source_bytes, cfg.size,
        "the chain's source uploads the file once"
    );
}

#[test]
fn chain_pays_the_chunk_overhead_on_every_chunk_step() {
    let cfg = SimConfig {
        latency: Duration::from_millis(250),
        chunk_overhead: Duration::from_millis(40),
        ..blog(7)
    };
    // Every link is set up before the first chunk (λ from the source, 2λ between
    // receivers), and every chunk step pays α: with s = T/k + α,
    // max(λ + (k + C − 1)·s, 2λ + (k + C − 2)·s).
    let k = cfg.size.div_ceil(cfg.chunk) as f64;
    let s = cfg.t() / k + 0.04;
    let want = (0.25 + (k + 6.0) * s).max(0.5 + (k + 5.0) * s);
    assert_close(makespan(StrategyKind::Chain, &cfg), want, "chain");
    // A whole-file hop pays both once: bounce's three rounds.
    assert_close(
        makespan(StrategyKind::Bounce, &cfg),
        3.0 * (cfg.t() + 0.29),
        "bounce",
    );
}

#[test]
fn binomial_takes_one_plus_l_minus_1_over_k_times_t() {
    for c in 1..=64u32 {
        let cfg = blog(c);
        let k = cfg.size.div_ceil(cfg.chunk) as f64;
        let l = f64::from(32 - c.leading_zeros());
        let want = (1.0 + (l - 1.0) / k) * cfg.t();
        assert_close(
            makespan(StrategyKind::Binomial, &cfg),
            want,
            &format!("C={c}"),
        );
    }
}

#[test]
fn binomial_is_exact_for_other_chunk_counts_and_equals_bounce_with_one_chunk() {
    for c in [1u32, 2, 3, 5, 6, 7, 9, 12, 13, 31, 33, 63, 100, 200] {
        for k in [1u64, 2, 3, 8, 10, 100] {
            let cfg = SimConfig {
                chunk: 16 * MIB,
                ..config(c, k * 16 * MIB, 125e6)
            };
            let l = f64::from(32 - c.leading_zeros());
            let want = (1.0 + (l - 1.0) / k as f64) * cfg.t();
            let got = makespan(StrategyKind::Binomial, &cfg);
            assert_close(got, want, &format!("C={c} k={k}"));
            if k == 1 {
                assert_close(
                    got,
                    makespan(StrategyKind::Bounce, &cfg),
                    &format!("C={c} k=1 vs bounce"),
                );
            }
        }
    }
}

#[test]
fn no_strategy_beats_the_floor_t() {
    for c in [1u32, 2, 7, 8, 13, 64] {
        let cfg = SimConfig {
            jitter: 0.0,
            ..blog(c)
        };
        for kind in StrategyKind::ALL {
            let m = makespan(kind, &cfg);
            assert!(m >= cfg.t() * (1.0 - 1e-12), "{kind} C={c}: {m} < T");
        }
    }
}

/// Receivers joining one after another (`join_interval` h): a chain of k chunks of time
/// τ = T/k, each host joining at its tail, delivers chunk j to host i at
/// max(h + (i + j)τ, i·h + (j + 1)τ), so the last host is done after
/// max(h + T + (C − 1)τ, C·h + T): the pipeline's own makespan shifted by the first join
/// while the hosts join faster than a chunk moves, the last join plus one T when slower.
#[test]
fn a_chain_of_hosts_joining_one_after_another_takes_its_closed_form() {
    let (size, bandwidth, k) = (64 * MIB, 64e6, 16u32);
    let t = size as f64 / bandwidth;
    let tau = t / f64::from(k);
    for c in [1u32, 2, 5, 12] {
        for h in [0.01 * tau, 0.5 * tau, tau, 2.0 * tau, 3.0 * t] {
            let cfg = SimConfig {
                chunk: size / u64::from(k),
                join_interval: Duration::from_secs_f64(h),
                ..config(c, size, bandwidth)
            };
            let c = f64::from(c);
            let want = (h + t + (c - 1.0) * tau).max(c * h + t);
            let got = makespan(StrategyKind::Chain, &cfg);
            // The join times pass through the core's nanosecond clock.
            assert!(
                (got - want).abs() <= 1e-6 * want,
                "C={c} h={h}: got {got}, want {want}"
            );
        }
    }
}

/// Linear and bounce serve each host as it joins; with hosts joining slower than one copy
/// takes (h ≥ T), every copy runs alone: the last host is done at C·h + T. A strategy that
/// needs every host at the start (binomial) starts once the last has joined: its makespan
/// without joins, shifted by C·h.
#[test]
fn late_joiners_are_served_as_they_join_or_all_at_the_last_join() {
    let cfg = blog(6);
    let t = cfg.t();
    let h = 1.5 * t;
    let joining = SimConfig {
        join_interval: Duration::from_secs_f64(h),
        ..cfg.clone()
    };
    for kind in [StrategyKind::Linear, StrategyKind::Bounce] {
        let got = makespan(kind, &joining);
        let want = 6.0 * h + t;
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "{kind}: got {got}, want {want}"
        );
    }
    let chunked = SimConfig {
        chunk: GIB,
        ..cfg.clone()
    };
    let plain = makespan(StrategyKind::Binomial, &chunked);
    let got = makespan(
        StrategyKind::Binomial,
        &SimConfig {
            join_interval: Duration::from_secs_f64(h),
            ..chunked
        },
    );
    assert!(
        (got - (plain + 6.0 * h)).abs() <= 1e-6 * got,
        "binomial: got {got}, want {}",
        plain + 6.0 * h
    );
}

#[test]
fn a_chain_host_that_dies_costs_the_hosts_behind_it_the_chunk_it_was_passing_on() {
    // C = 6, k = 20 chunks of τ = 1 s. Host i receives chunk c during [(c+i−1)τ, (c+i)τ].
    // Host j dies at t: the chunk host j+1 was receiving from it, c = ⌊t/τ⌋ − j, is lost
    // after δ = t − ⌊t/τ⌋·τ; host j−1 sends it again from t, and every host behind is δ
    // late: the last ends at (k + C − 1)·τ + δ. Nobody else is charged, and the dead host
    // is not waited for.
    let (c, k) = (6u32, 20u64);
    for (j, t) in [(3u32, 7.3f64), (1, 2.55), (2, 19.9), (5, 10.05)] {
        let cfg = SimConfig {
            chunk: MIB,
            failures: vec![bounce::sim::Failure {
                host: j,
                at: Duration::from_secs_f64(t),
            }],
            ..config(c, k * MIB, MIB as f64)
        };
        let r = simulate(StrategyKind::Chain, &cfg).expect("simulation runs");
        let delta = t - t.floor();
        assert_close(
            r.makespan,
            (k as f64 + f64::from(c) - 1.0) + delta,
            &format!("host {j} dies at {t} s"),
        );
        assert!(r.host_done[j as usize].is_nan(), "host {j} completed");
        for i in (1..=c).filter(|&i| i != j) {
            assert!(
                !r.host_done[i as usize].is_nan(),
                "host {i} did not complete"
            );
        }
    }
}

#[test]
fn a_chain_host_that_dies_after_passing_everything_on_costs_nothing() {
    // Host 2 dies once it has sent its last chunk to host 3: the chain ends as if it had
    // not, at (k + C − 1)·τ.
    let cfg = SimConfig {
        chunk: MIB,
        failures: vec![bounce::sim::Failure {
            host: 2,
            at: Duration::from_secs_f64(22.5),
        }],
        ..config(4, 20 * MIB, MIB as f64)
    };
    assert_close(makespan(StrategyKind::Chain, &cfg), 23.0, "late failure");
}

#[test]
fn an_upload_limit_stretches_each_strategy_by_b_over_the_limit() {
    // `--limit-rate L` below B caps every upload, the source's too, and no download: each
    // closed form then holds with T' = S/L.
    let limit = 40e6;
    for c in [1u32, 5, 8, 31] {
        let cfg = SimConfig {
            network: bounce::sim::NetworkSpec {
                upload_limit: Some(limit),
                ..Default::default()
            },
            ..blog(c)
        };
        let t = cfg.size as f64 / limit;
        let l = f64::from(32 - c.leading_zeros());
        let k = cfg.size.div_ceil(cfg.chunk) as f64;
        assert_close(
            makespan(StrategyKind::Linear, &cfg),
            f64::from(c) * t,
            &format!("linear, C={c}"),
        );
        assert_close(
            makespan(StrategyKind::Bounce, &cfg),
            l * t,
            &format!("bounce, C={c}"),
        );
        assert_close(
            makespan(StrategyKind::Chain, &cfg),
            (1.0 + f64::from(c - 1) / k) * t,
            &format!("chain, C={c}"),
        );
        // A cap above B changes nothing.
        let loose = SimConfig {
            network: bounce::sim::NetworkSpec {
                upload_limit: Some(2.0 * cfg.bandwidth),
                ..Default::default()
            },
            ..blog(c)
        };
        assert_close(
            makespan(StrategyKind::Bounce, &loose),
            l * loose.t(),
            &format!("bounce under a loose cap, C={c}"),
        );
    }
}
