//! Sweeps: one simulation per (strategy, host count, run), spread over threads, collected in
//! a fixed order so the output does not depend on the thread count.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::engine::{simulate, SimConfig, SimError};
use crate::core::StrategyKind;

/// What to sweep over.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// Receiver counts C, inclusive.
    pub hosts: RangeInclusive<u32>,
    /// Strategies, in output order.
    pub strategies: Vec<StrategyKind>,
    /// Size, bandwidth, chunk, latency and jitter; `receivers` and `seed` are set per point.
    pub base: SimConfig,
    /// Runs per (strategy, hosts).
    pub runs: u32,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
}

/// One simulated point of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Receivers, C.
    pub hosts: u32,
    /// Run number, from 0.
    pub run: u32,
    /// The seed this run used.
    pub seed: u64,
    /// Makespan in seconds.
    pub makespan: f64,
    /// Transfers started.
    pub transfers: u64,
    /// Bytes the source uploaded.
    pub source_bytes: u64,
    /// Chunks the file was cut into.
    pub chunks: u32,
    /// The fluid lower bound for this point's network, in seconds.
    pub lower_bound: f64,
}

/// The seed of run `run` at `hosts` receivers, derived from the user's `base` seed with
/// SplitMix64 so nearby inputs give unrelated seeds. Every strategy gets the same seed at the
/// same point, so their comparison is paired.
pub fn derive_seed(base: u64, hosts: u32, run: u32) -> u64 {
    let mut z = base
        .wrapping_add(u64::from(hosts).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(u64::from(run).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs every point of the sweep; points come out ordered by host count, then strategy, then
/// run.
pub fn sweep(cfg: &SweepConfig) -> Result<Vec<Point>, SimError> {
    let mut jobs = Vec::new();
    for hosts in cfg.hosts.clone() {
        for &strategy in &cfg.strategies {
            for run in 0..cfg.runs {
                jobs.push((strategy, hosts, run));
            }
        }
    }
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(jobs.len().max(1));
    let results: Vec<Mutex<Option<Result<Point, SimError>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(strategy, hosts, run)) = jobs.get(i) else {
                    break;
                };
                let seed = derive_seed(cfg.base.seed, hosts, run);
                let sim = SimConfig {
                    receivers: hosts,
                    seed,
                    ..cfg.base.clone()
                };
                let point = simulate(strategy, &sim).map(|r| Point {
                    strategy,
                    hosts,
                    run,
                    seed,
                    makespan: r.makespan,
                    transfers: r.transfers,
                    source_bytes: r.source_bytes,
                    chunks: r.chunks,
                    lower_bound: r.lower_bound,
                });
                *results[i]
                    .lock()
                    .expect("no worker panics while holding it") = Some(point);
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no worker panics while holding it")
                .expect("every job ran")
        })
        .collect()
}
