//! The chain's straggler rule measured from progress (`Scheduler::handle_progress`), as the
//! runner reports it: a host's copy length every half second, arriving late by a jitter.
//!
//! A small stream model drives the core on a 10 ms step: each receiver's copy grows at its
//! link's rate, never past what its sender holds, through the chunks in flight to it in
//! file order; a chunk is reported done when the copy covers it, and progress is reported
//! as the runner's receivers do. The source's upload is shared by the receivers it feeds,
//! and a receiver fed over a new link has its old one cut, as the runner cuts it.

use std::collections::HashMap;
use std::time::Duration;

use bounce::core::{
    Event, HopError, HostId, Scheduler, SchedulerConfig, Straggler, StrategyKind, StrategyParams,
    Transfer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MIB: u64 = 1 << 20;
const STEP_MS: u64 = 10;
/// How often a receiver reports its copy's length, as the runner's stream receivers do.
const REPORT_MS: u64 = 500;

/// What one run of the model showed.
struct Outcome {
    /// Each cut-out host, with when it was cut, in seconds, and whether for a stall.
    cut: Vec<(u32, f64, bool)>,
    /// Each cut-out host's new feeder, in the order of `cut`.
    cut_onto: Vec<u32>,
    /// When each receiver's first bytes arrived, in seconds.
    first_byte: HashMap<u32, f64>,
    /// When each receiver completed, in seconds.
    done: HashMap<u32, f64>,
    /// Each host fed by the source alongside the first to probe it, with when, in seconds.
    probed: Vec<(u32, f64)>,
}

/// How a run of the model goes.
struct Model<'a> {
    /// Each receiver's link rate in bytes per second, by host from 1.
    rates: &'a [f64],
    size: u64,
    /// Every receiver reports its copy every half second; without, the core sees only chunk
    /// ends.
    progress: bool,
    /// Each report arrives up to this late.
    jitter_ms: u64,
    /// Receivers whose link stops, this long after their first bytes, for this long (ms).
    pauses: &'a [(u32, u64, u64)],
    /// The source's upload in bytes per second, shared by the receivers it feeds (the head
    /// of the chain, and a probe's host).
    source_up: f64,
    seed: u64,
}

/// Runs a chain of `m.rates.len()` receivers over a `m.size`-byte file in 1 MiB chunks, with
/// the runner's straggler rule.
fn run(m: &Model<'_>) -> Outcome {
    run_with(m, Straggler::default())
}

/// [`run`] with straggler rule `rule`.
fn run_with(m: &Model<'_>, rule: Straggler) -> Outcome {
    let Model {
        rates,
        size,
        progress,
        jitter_ms,
        pauses,
        source_up,
        seed,
    } = *m;
    let receivers = rates.len() as u32;
    let kind = StrategyKind::Chain;
    let params = StrategyParams {
        chain_window: 4,
        chain_straggler: Some(rule),
        ..StrategyParams::new(receivers)
    };
    let layout = kind.layout(size, MIB).unwrap();
    let mut s = Scheduler::new(kind.build(&params), layout, SchedulerConfig::new(receivers));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = receivers as usize + 1;
    // Bytes each host holds (a prefix), as fractions accumulate.
    let mut held: Vec<f64> = vec![0.0; n];
    held[0] = size as f64;
    let mut flying: Vec<Transfer> = Vec::new();
    // Reports on their way: (arrival ms, host, bytes).
    let mut reports: Vec<(u64, u32, u64)> = Vec::new();
    let mut out = Outcome {
        cut: Vec::new(),
        cut_onto: Vec::new(),
        first_byte: HashMap::new(),
        done: HashMap::new(),
        probed: Vec::new(),
    };
    let phase: Vec<u64> = (0..n).map(|_| rng.gen_range(0..REPORT_MS)).collect();
    let mut now_ms = 0u64;
    let drain = |s: &mut Scheduler, flying: &mut Vec<Transfer>, out: &mut Outcome, now: u64| {
        let at = Duration::from_millis(now);
        loop {
            while let Some(t) = s.poll_transfer(at) {
                flying.push(t);
            }
            // As the runner does, a receiver fed over a new link has its old one cut: what
            // was still on its way over that one fails (rule 9 of the driver contract).
            let planned = s.planned_links();
            let Some(i) = flying.iter().position(|t| {
                !planned.contains(&(t.from, t.to)) && planned.iter().any(|&(_, to)| to == t.to)
            }) else {
                break;
            };
            let t = flying.remove(i);
            s.handle_done(at, t.id, Err(HopError::new("its link was cut")));
        }
        while let Some(e) = s.poll_event() {
            match e {
                Event::Straggler {
                    host,
                    stalled,
                    feeder,
                    ..
                } => {
                    out.cut.push((host.0, now as f64 / 1e3, stalled));
                    out.cut_onto.push(feeder.0);
                }
                Event::HostComplete { host, .. } => {
                    out.done.insert(host.0, now as f64 / 1e3);
                }
                Event::ProbeStarted { host, .. } => out.probed.push((host.0, now as f64 / 1e3)),
                Event::ProbeEnded { .. } => {}
                Event::HostFailed { host, reason, .. } => panic!("{host} failed: {reason}"),
            }
        }
        s.check_invariants().unwrap();
    };
    drain(&mut s, &mut flying, &mut out, now_ms);
    while !s.is_finished() {
        now_ms += STEP_MS;
        assert!(now_ms < 600_000, "the model did not end in ten minutes");
        let dt = STEP_MS as f64 / 1e3;
        // Each receiver's copy grows through its lowest chunk in flight.
        let snapshot = held.clone();
        let mut ended = Vec::new();
        let mut moving: Vec<(usize, Transfer, f64)> = Vec::new();
        for to in 1..n {
            let Some(t) = flying
                .iter()
                .filter(|t| t.to.index() == to)
                .min_by_key(|t| t.chunks.start)
            else {
                continue;
            };
            let paused = out.first_byte.get(&(to as u32)).is_some_and(|&f| {
                let since = now_ms - (f * 1e3).round() as u64;
                pauses
                    .iter()
                    .any(|&(h, from, len)| h == to as u32 && since >= from && since < from + len)
            });
            moving.push((to, *t, if paused { 0.0 } else { rates[to - 1] }));
        }
        // The source's upload is shared max-min fairly by the receivers it feeds.
        let mut fed: Vec<&mut (usize, Transfer, f64)> = moving
            .iter_mut()
            .filter(|m| m.1.from == HostId::SOURCE)
            .collect();
        fed.sort_by(|a, b| a.2.total_cmp(&b.2));
        let mut left = source_up;
        let count = fed.len();
        for (i, m) in fed.into_iter().enumerate() {
            m.2 = m.2.min(left / (count - i) as f64);
            left -= m.2;
        }
        for (to, t, rate) in moving {
            let end = layout.offset(t.chunks.end - 1) + layout.len(t.chunks.end - 1);
            let cap = snapshot[t.from.index()].min(end as f64);
            let before = held[to];
            held[to] = (held[to] + rate * dt).min(cap).max(held[to]);
            if before == 0.0 && held[to] > 0.0 {
                out.first_byte.insert(to as u32, now_ms as f64 / 1e3);
            }
            if held[to] >= end as f64 {
                ended.push(t.id);
            }
        }
        for id in ended {
            flying.retain(|t| t.id != id);
            s.handle_done(Duration::from_millis(now_ms), id, Ok(()));
            drain(&mut s, &mut flying, &mut out, now_ms);
        }
        if progress {
            for (h, &ph) in phase.iter().enumerate().skip(1) {
                if now_ms % REPORT_MS == ph / STEP_MS * STEP_MS {
                    let delay = rng.gen_range(0..=jitter_ms);
                    reports.push((now_ms + delay, h as u32, held[h] as u64));
                }
            }
            reports.sort_by_key(|r| r.0);
            while reports.first().is_some_and(|r| r.0 <= now_ms) {
                let (_, h, bytes) = reports.remove(0);
                s.handle_progress(Duration::from_millis(now_ms), HostId(h), bytes);
                drain(&mut s, &mut flying, &mut out, now_ms);
            }
        }
    }
    out
}

/// 100 Mbit/s, in bytes per second.
const FAST: f64 = 100e6 / 8.0;

#[test]
fn a_host_ten_times_slower_is_cut_out_within_a_second_of_its_first_bytes() {
    let mut rates = vec![FAST; 7];
    rates[2] = FAST / 10.0;
    let out = run(&Model {
        rates: &rates,
        size: 64 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[],
        source_up: FAST,
        seed: 1,
    });
    assert_eq!(out.cut.len(), 1, "cut: {:?}", out.cut);
    let (host, at, stalled) = out.cut[0];
    assert_eq!((host, stalled), (3, false));
    let first = out.first_byte[&3];
    // One window (1 s) past its first report, which comes within a report interval and its
    // delay of its first bytes.
    assert!(
        at - first <= 1.0 + 0.5 + 0.1 + 0.05,
        "cut at {at:.2}s, its first bytes at {first:.2}s"
    );
    // The hosts behind it then end close to where a healthy chain would.
    let healthy = run(&Model {
        rates: &[FAST; 7],
        size: 64 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[],
        source_up: FAST,
        seed: 1,
    });
    let last = |o: &Outcome| {
        (1..=7)
            .filter(|&h| h != 3)
            .map(|h| o.done[&h])
            .fold(0.0, f64::max)
    };
    assert!(
        last(&out) <= last(&healthy) + 1.5,
        "healthy hosts ended at {:.2}s, {:.2}s without the slow host",
        last(&out),
        last(&healthy)
    );
}

#[test]
fn measured_from_chunk_ends_alone_the_same_host_is_cut_a_chunk_later() {
    let mut rates = vec![FAST; 7];
    rates[2] = FAST / 10.0;
    let model = |progress| Model {
        rates: &rates,
        size: 64 * MIB,
        progress,
        jitter_ms: 100,
        pauses: &[],
        source_up: FAST,
        seed: 2,
    };
    let with = run(&model(true));
    let without = run(&model(false));
    assert_eq!(without.cut.len(), 1, "cut: {:?}", without.cut);
    let chunk_time = MIB as f64 / (FAST / 10.0);
    assert!(
        without.cut[0].1 - with.cut[0].1 >= chunk_time * 0.5,
        "from progress at {:.2}s, from chunk ends at {:.2}s",
        with.cut[0].1,
        without.cut[0].1
    );
}

#[test]
fn hosts_at_three_quarters_of_the_rate_with_late_progress_are_never_cut() {
    for seed in 0..20 {
        let rates: Vec<f64> = (0..7)
            .map(|i| if i % 2 == 0 { FAST } else { FAST * 0.75 })
            .collect();
        // Each report up to 1.5 s late: three report intervals.
        let out = run(&Model {
            rates: &rates,
            size: 32 * MIB,
            progress: true,
            jitter_ms: 1500,
            pauses: &[],
            source_up: FAST,
            seed,
        });
        assert!(out.cut.is_empty(), "seed {seed}: cut {:?}", out.cut);
        assert_eq!(out.done.len(), 7);
    }
}

#[test]
fn a_link_that_pauses_for_most_of_a_second_as_it_starts_is_not_cut() {
    for seed in 0..20 {
        // Host 3's link carries its first bytes, then nothing for 0.7 s (its relay
        // set up while the CPUs were busy with other handshakes), then goes at full rate.
        let out = run(&Model {
            rates: &[FAST; 7],
            size: 32 * MIB,
            progress: true,
            jitter_ms: 100,
            pauses: &[(3, 20, 700)],
            source_up: FAST,
            seed,
        });
        assert!(out.cut.is_empty(), "seed {seed}: cut {:?}", out.cut);
        assert_eq!(out.done.len(), 7);
    }
}

#[test]
fn a_host_whose_link_dies_before_a_window_is_measured_is_cut_out_as_stalled() {
    // Host 3's link stops for good 0.3 s after its first bytes (it comes back after a
    // minute, so that the model ends), long before its rate is measured over a window.
    let out = run(&Model {
        rates: &[FAST; 7],
        size: 64 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[(3, 300, 60_000)],
        source_up: FAST,
        seed: 3,
    });
    assert_eq!(out.cut.len(), 1, "cut: {:?}", out.cut);
    let (host, at, stalled) = out.cut[0];
    assert_eq!((host, stalled), (3, true));
    let first = out.first_byte[&3];
    // The stall span (2 s) after its last progress, which comes within a report interval
    // and its delay of when the link stopped.
    assert!(
        at - first <= 0.3 + 2.0 + 0.5 + 0.1 + 0.05,
        "cut at {at:.2}s, its first bytes at {first:.2}s"
    );
    // The hosts behind it are fed past it and do not wait the minute.
    for h in [4, 5, 6, 7] {
        assert!(
            out.done[&h] < first + 20.0,
            "h{h} ended at {:.2}s",
            out.done[&h]
        );
    }
}

#[test]
fn a_slow_first_host_is_found_by_a_probe_of_the_source_and_cut_out() {
    // Host 1 heads the chain at a tenth of the rate: nothing behind it can show a faster
    // one. The source, at the hosts' rate, is probed with the chain's last host.
    let mut rates = vec![FAST; 7];
    rates[0] = FAST / 10.0;
    let model = |seed| Model {
        rates: &rates,
        size: 64 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[],
        source_up: FAST,
        seed,
    };
    for seed in 0..10 {
        let out = run(&model(seed));
        assert_eq!(out.probed.len(), 1, "seed {seed}: probed {:?}", out.probed);
        let (probe, started) = out.probed[0];
        assert_eq!(probe, 7, "seed {seed}: the probe's host is not the last");
        assert_eq!(out.cut.len(), 1, "seed {seed}: cut {:?}", out.cut);
        let (host, at, stalled) = out.cut[0];
        assert_eq!((host, stalled), (1, false), "seed {seed}");
        let first = out.first_byte[&1];
        // Each rate is shown over a window (1 s) from a host's first report after it is
        // fed (within a report interval and its delay, 0.6 s), and known at the first
        // report past the window (another 0.6 s): 2.2 s for host 1, then 2.2 s for host 7.
        assert!(
            started - first <= 2.2 + 0.05,
            "seed {seed}: probe at {started:.2}s, first bytes at {first:.2}s"
        );
        assert!(
            at - started <= 2.2 + 0.05,
            "seed {seed}: cut at {at:.2}s, probe at {started:.2}s"
        );
        // Every other host then takes what it lacks as in a healthy chain: it ends no
        // later than it would have in one started at the cut (against 10·S/B behind host
        // 1).
        let healthy = run(&Model {
            rates: &[FAST; 7],
            ..model(seed)
        });
        for h in 2..=7 {
            assert!(
                out.done[&h] <= at + healthy.done[&h],
                "seed {seed}: h{h} ended at {:.2}s, host 1 cut at {at:.2}s, {:.2}s healthy",
                out.done[&h],
                healthy.done[&h]
            );
        }
    }
}

#[test]
fn a_slow_source_is_never_taken_for_a_slow_first_host() {
    for seed in 0..10 {
        // The source at a tenth of the hosts' rate, reports up to 1.5 s late, and hosts at
        // three quarters of the rate: the probe finds the source's link is the limit and
        // cuts nobody out.
        let rates: Vec<f64> = (0..7)
            .map(|i| if i % 2 == 0 { FAST } else { FAST * 0.75 })
            .collect();
        let out = run(&Model {
            rates: &rates,
            size: 32 * MIB,
            progress: true,
            jitter_ms: 1500,
            pauses: &[],
            source_up: FAST / 10.0,
            seed,
        });
        assert_eq!(out.probed.len(), 1, "seed {seed}: probed {:?}", out.probed);
        assert!(out.cut.is_empty(), "seed {seed}: cut {:?}", out.cut);
        assert_eq!(out.done.len(), 7);
    }
}

#[test]
fn a_run_whose_first_host_has_little_to_go_is_not_probed() {
    // 32 MiB at 100 Mbit/s: 2.7 s to go, far under the 15 s a probe needs to pay.
    let out = run(&Model {
        rates: &[FAST; 7],
        size: 32 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[],
        source_up: FAST,
        seed: 4,
    });
    assert!(out.probed.is_empty(), "probed {:?}", out.probed);
}

#[test]
fn a_first_host_that_stops_receiving_during_the_probe_is_cut_out() {
    // 256 MiB at 100 Mbit/s: 21 s to go, so the source is probed 1.2 s in. Just after,
    // before a window of the probe, host 1, the first, stops receiving for a minute. Its
    // rate over the probe is measured up to a stall span (2 s) ago when it reports nothing
    // newer, so it sinks below a quarter of the probe host's, and it is cut out 4.2 s in:
    // the others do not wait the minute (measured only up to its last report, it never
    // showed a window of the probe, and was cut only once it received again).
    let out = run(&Model {
        rates: &[FAST; 7],
        size: 256 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[(1, 1250, 60_000)],
        source_up: FAST,
        seed: 5,
    });
    assert_eq!(out.probed.len(), 1, "probed {:?}", out.probed);
    assert!(
        out.cut.iter().any(|&(h, _, _)| h == 1),
        "host 1 was not cut: {:?}",
        out.cut
    );
    let t1 = 256.0 * MIB as f64 / FAST;
    for h in 2..=7 {
        assert!(
            out.done[&h] < t1 + 10.0,
            "h{h} ended at {:.2}s, t1 {t1:.2}s",
            out.done[&h]
        );
    }
}

/// 5 Mbit/s, in bytes per second.
const SLOW_LINK: f64 = 5e6 / 8.0;

/// The rule as it was before rates had to be sustained and cuts were bounded.
const UNBOUNDED: Straggler = Straggler {
    sustain: 0,
    cut_share: 1.0,
    ..Straggler::DEFAULT
};

#[test]
fn a_fleet_of_equal_slow_links_with_a_busy_controllers_reports_loses_no_host() {
    // 128 hosts at 5 Mbit/s, the source too, 40 MiB (t1 = 67 s), and reports up to 8 s
    // late, as a controller busy with 255 logins on 2 cores can deliver them. Over a second,
    // a late report makes a rate look several times what a link carries, or a fraction of
    // it: the rule as it was cut healthy hosts all through the run (in the lab, dozens, as
    // each one cut onto the source's upload slowed the chain's head further).
    let model = |seed| Model {
        rates: &[SLOW_LINK; 128],
        size: 40 * MIB,
        progress: true,
        jitter_ms: 8000,
        pauses: &[],
        source_up: SLOW_LINK,
        seed,
    };
    let before = run_with(&model(0), UNBOUNDED);
    assert!(
        before.cut.len() >= 5,
        "the old rule cut only {:?}: this model no longer shows the collapse",
        before.cut
    );
    for seed in 0..3 {
        let out = run(&model(seed));
        assert!(out.cut.is_empty(), "seed {seed}: cut {:?}", out.cut);
        assert_eq!(out.done.len(), 128, "seed {seed}");
    }
}

#[test]
fn every_slow_host_is_cut_and_none_is_fed_by_the_source() {
    // 40 hosts at 100 Mbit/s, 13 of them at a tenth of it, spread along the chain. Each cut
    // host shows its rate over its new feed within seconds, so the bound on cuts in flight
    // (4 here) delays no genuinely slow host: all 13 are cut, none onto the source's upload,
    // and the healthy hosts end no later than under the rule without the bound (each cut
    // costs them about a second, 14 s in all over a healthy chain's 9.3 s).
    let rates: Vec<f64> = (0..40)
        .map(|i| if i % 3 == 1 { FAST / 10.0 } else { FAST })
        .collect();
    let model = |rates| Model {
        rates,
        size: 64 * MIB,
        progress: true,
        jitter_ms: 100,
        pauses: &[],
        source_up: FAST,
        seed: 6,
    };
    let out = run(&model(&rates));
    let mut cut: Vec<u32> = out.cut.iter().map(|c| c.0).collect();
    cut.sort();
    let slow: Vec<u32> = (1..=40).filter(|h| (h - 1) % 3 == 1).collect();
    assert_eq!(cut, slow, "cut {:?}", out.cut);
    assert!(
        out.cut_onto.iter().all(|&f| f != 0),
        "a host was cut onto the source: {:?} onto {:?}",
        out.cut,
        out.cut_onto
    );
    let healthy = run(&model(&[FAST; 40]));
    let old = run_with(&model(&rates), UNBOUNDED);
    let last = |o: &Outcome| {
        (1..=40)
            .filter(|h| !slow.contains(h))
            .map(|h| o.done[&h])
            .fold(0.0, f64::max)
    };
    assert!(
        last(&out) <= last(&old) + 0.5,
        "healthy hosts ended at {:.2}s, {:.2}s in a healthy chain, {:.2}s without the bound",
        last(&out),
        last(&healthy),
        last(&old)
    );
}
