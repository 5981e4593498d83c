//! Simulator speed and memory: `cargo bench --bench sim`. Prints one line per figure, each
//! with the `bounce-sim` command it stands for; asserts nothing, since shared machines are
//! noisy. Every case is timed `BOUNCE_BENCH_REPS` times (default 3) and the median is quoted,
//! with the median CPU time per chunk transfer (wall time × threads / transfers). Peak memory
//! is the high-water mark of live heap bytes, counted by a wrapping global allocator and
//! reset before each case.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bounce::core::StrategyKind;
use bounce::sim::{derive_seed, simulate, sweep, SimConfig, SweepConfig};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn peak_mib() -> f64 {
    PEAK.load(Ordering::Relaxed) as f64 / f64::from(1 << 20)
}

/// The process's resident high-water mark, from /proc/self/status (Linux only).
fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

/// Runs `f` `reps` times; returns the median wall time and what the last run returned
/// (simulations, transfers).
fn time<F: FnMut() -> (usize, u64)>(reps: usize, mut f: F) -> (Duration, usize, u64) {
    let mut times = Vec::new();
    let mut out = (0, 0);
    for _ in 0..reps {
        let start = Instant::now();
        out = f();
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() / 2], out.0, out.1)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn ns_per_transfer(t: Duration, threads: usize, transfers: u64) -> f64 {
    t.as_secs_f64() * threads as f64 * 1e9 / transfers.max(1) as f64
}

fn sweep_case(reps: usize, strategies: &[StrategyKind], names: &str, hosts: u32, runs: u32) {
    let base = SimConfig::new(1, 20 << 30, 125e6);
    for jitter in [0.0, 0.1] {
        let cfg = SweepConfig {
            hosts: 1..=hosts,
            strategies: strategies.to_vec(),
            base: SimConfig {
                jitter,
                ..base.clone()
            },
            runs,
            threads: 0,
        };
        let (t, sims, transfers) = time(reps, || {
            let points = sweep(&cfg).expect("sweep runs");
            (points.len(), points.iter().map(|p| p.transfers).sum())
        });
        println!(
            "  bounce-sim --hosts 1..{hosts} --strategy {names} --runs {runs} --jitter {jitter}: \
             {sims} simulations, {transfers} transfers in {:.3} s ({:.0} ns CPU per transfer)",
            t.as_secs_f64(),
            ns_per_transfer(t, threads(), transfers)
        );
    }
}

fn main() {
    let reps = std::env::var("BOUNCE_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    println!(
        "bounce-sim benchmark (median of {reps}, {} threads; --size 20GiB --bandwidth 1Gbit \
         --chunk 64MiB unless given)",
        threads()
    );

    // Issue 2: the blog's figure, 100 runs per point.
    sweep_case(
        reps,
        &[
            StrategyKind::Linear,
            StrategyKind::Bounce,
            StrategyKind::Chain,
        ],
        "linear,bounce,chain",
        64,
        100,
    );

    // Every strategy, swarm included.
    sweep_case(reps, &StrategyKind::ALL, "all", 64, 100);

    // A swarm alone: its flows share links across the whole swarm.
    sweep_case(reps, &[StrategyKind::Swarm], "swarm", 64, 10);

    // Issue 4: a million hosts, whole-file doubling with jitter; peak heap of one run.
    let hosts = 1_000_000;
    let cfg = SimConfig {
        receivers: hosts,
        jitter: 0.1,
        seed: derive_seed(1, hosts, 0),
        ..SimConfig::new(hosts, 20 << 30, 125e6)
    };
    reset_peak();
    let (t, _, transfers) = time(reps, || {
        let r = simulate(StrategyKind::Bounce, &cfg).expect("runs");
        (1, r.transfers)
    });
    println!(
        "  bounce-sim --hosts 1000000 --strategy bounce --jitter 0.1: {transfers} transfers in \
         {:.3} s, peak heap {:.1} MiB, process VmHWM {}",
        t.as_secs_f64(),
        peak_mib(),
        vm_hwm()
    );

    // Issue 4: a million chunk transfers with the binomial pipeline.
    let hosts = 10_000;
    let cfg = SimConfig {
        receivers: hosts,
        chunk: 10 << 20,
        seed: derive_seed(1, hosts, 0),
        ..SimConfig::new(hosts, 1000 << 20, 125e6)
    };
    reset_peak();
    let (t, _, transfers) = time(reps, || {
        let r = simulate(StrategyKind::Binomial, &cfg).expect("runs");
        (1, r.transfers)
    });
    println!(
        "  bounce-sim --hosts 10000 --size 1000MiB --chunk 10MiB --strategy binomial: \
         {transfers} transfers in {:.3} s ({:.0} ns per transfer), peak heap {:.1} MiB",
        t.as_secs_f64(),
        ns_per_transfer(t, 1, transfers),
        peak_mib()
    );
}
