//! Simulator speed: `cargo bench --bench sim`. Prints figures; asserts nothing, since
//! shared machines are noisy. Each case is timed several times and the median is quoted.

use std::time::{Duration, Instant};

use bounce::core::StrategyKind;
use bounce::sim::{sweep, SimConfig, SweepConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut() -> usize>(reps: usize, mut f: F) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..reps {
        let start = Instant::now();
        n = f();
        times.push(start.elapsed());
    }
    (median(times), n)
}

fn main() {
    let base = SimConfig::new(1, 20 << 30, 125e6);
    println!(
        "bounce-sim benchmark (median of 5, {} threads)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (label, jitter) in [("jitter 0", 0.0), ("jitter 0.1", 0.1)] {
        let cfg = SweepConfig {
            hosts: 1..=64,
            strategies: StrategyKind::ALL.to_vec(),
            base: SimConfig {
                jitter,
                ..base.clone()
            },
            runs: 100,
            threads: 0,
        };
        let (t, n) = time(5, || sweep(&cfg).expect("sweep runs").len());
        println!(
            "  --hosts 1..64 --strategy all --runs 100, {label}: {n} simulations in {:.3} s",
            t.as_secs_f64()
        );
    }
}
