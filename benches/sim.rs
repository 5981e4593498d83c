//! Simulator speed and memory: `cargo bench --bench sim`. Prints one line per figure, each
//! with the `bounce-sim` command it stands for; asserts nothing, since shared machines are
//! noisy. Every case is timed `BOUNCE_BENCH_REPS` times (default 3) and the median is quoted,
//! with the median CPU time per chunk transfer (wall time × threads / transfers). Peak memory
//! is the high-water mark of live heap bytes, counted by a wrapping global allocator and
//! reset before each case.
//!
//! `cargo bench --bench sim -- TEXT...` runs only the cases whose `bounce-sim` command
//! contains one of the TEXTs (for instance `-- 'linear,bounce,chain'`): the full set takes
//! minutes, most of it the swarm.

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

/// CPU time of the whole process so far (every thread, finished ones included), from
/// /proc/self/stat in clock ticks of 10 ms; zero where that file does not exist. On a shared
/// machine it is steadier than wall time, which counts the time other jobs hold the cores.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// What a case measured: median wall and CPU time over the repetitions, and the last run's
/// simulations and transfers.
struct Timing {
    wall: Duration,
    cpu: Duration,
    sims: usize,
    transfers: u64,
}

impl Timing {
    /// Median CPU nanoseconds per transfer.
    fn ns_per_transfer(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e9 / self.transfers.max(1) as f64
    }
}

/// Runs `f` `reps` times; `f` returns (simulations, transfers).
fn time<F: FnMut() -> (usize, u64)>(reps: usize, mut f: F) -> Timing {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut out = (0, 0);
    for _ in 0..reps {
        let (start, cpu) = (Instant::now(), cpu_time());
        out = f();
        walls.push(start.elapsed());
        cpus.push(cpu_time().saturating_sub(cpu));
    }
    walls.sort();
    cpus.sort();
    Timing {
        wall: walls[walls.len() / 2],
        cpu: cpus[cpus.len() / 2],
        sims: out.0,
        transfers: out.1,
    }
}

/// True when the case standing for `command` was asked for on the command line (every case
/// when none was named). Cargo passes `--bench` to the binary, hence the flags are skipped.
fn wanted(command: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|f| command.contains(f.as_str()))
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn sweep_case(reps: usize, strategies: &[StrategyKind], names: &str, hosts: u32, runs: u32) {
    let base = SimConfig::new(1, 20 << 30, 125e6);
    for jitter in [0.0, 0.1] {
        let command = format!(
            "bounce-sim --hosts 1..{hosts} --strategy {names} --runs {runs} --jitter {jitter}"
        );
        if !wanted(&command) {
            continue;
        }
        let cfg = SweepConfig {
            hosts: (1..=hosts).collect(),
            strategies: strategies.to_vec(),
            base: SimConfig {
                jitter,
                ..base.clone()
            },
            runs,
            threads: 0,
        };
        let t = time(reps, || {
            let points = sweep(&cfg).expect("sweep runs");
            (points.len(), points.iter().map(|p| p.transfers).sum())
        });
        println!(
            "  {command}: {} simulations, {} transfers in {:.3} s wall, {:.2} s CPU ({:.0} ns \
             CPU per transfer)",
            t.sims,
            t.transfers,
            t.wall.as_secs_f64(),
            t.cpu.as_secs_f64(),
            t.ns_per_transfer()
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

    if wanted("bounce-sim --hosts 1000000 --strategy bounce --jitter 0.1") {
        million_bounce(reps);
    }
    if wanted("bounce-sim --hosts 10000 --size 1000MiB --chunk 10MiB --strategy binomial") {
        binomial_10000(reps);
    }
    if wanted("bounce-sim plan --size 100GiB --bandwidth 10Gbit --latency 300ms --hosts-file") {
        plan_fleet_1000(reps);
    }
}

/// Issue 12: `plan` on a fleet file of 1,000 hosts of four rates, without racks and in three
/// racks, through the same code as the command line (swarm is left out above 200 hosts, as
/// there). With racks, the binomial pipeline's chunk search dominates: its flows cross racks
/// at every step, so each of its chunks re-solves the fair shares of many flows.
///
/// No host runs under a quarter of another's rate. Where a quarter of the hosts do (1 Gbit/s
/// among 10 and 25), the chain's straggler rule splices 250 hosts into leaves, and the plan
/// takes about 8 s (5 s of it the streamed chain). Hosts are listed rack by rack: were
/// every chain hop to cross racks (racks taken in turn), all its flows would share the rack
/// uplinks, and every chunk of the streamed chain would re-solve the fair shares of about a
/// thousand flows, which takes minutes.
fn plan_fleet_1000(reps: usize) {
    let dir = std::env::temp_dir().join(format!("bounce-bench-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for racks in [false, true] {
        let name = if racks {
            "fleet-1000-racks.txt"
        } else {
            "fleet-1000.txt"
        };
        let path = dir.join(name);
        let mut text = String::from("@source up=25Gbit");
        if racks {
            text += " rack=r0\n@rack r0 uplink=400Gbit\n@rack r1 uplink=200Gbit\n\
                     @rack r2 uplink=100Gbit";
        }
        text.push('\n');
        for i in 0..1000 {
            let rate = ["25Gbit", "10Gbit", "10Gbit", "5Gbit"][i % 4];
            text += &format!(
                "10.{}.{}.{} rate={rate}",
                i / 65536,
                (i / 256) % 256,
                i % 256
            );
            if racks {
                // Listed rack by rack, as an inventory usually is.
                text += &format!(" rack=r{}", i * 3 / 1000);
            }
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write the fleet file");
        let command = format!(
            "bounce-sim plan --size 100GiB --bandwidth 10Gbit --latency 300ms --hosts-file {}",
            path.display()
        );
        let mut out = Vec::new();
        let t = time(reps, || {
            out.clear();
            let cli = <bounce::sim::cli::Cli as clap::Parser>::parse_from(command.split(' '));
            bounce::sim::cli::run(cli, &mut out).expect("plan runs");
            (1, 1)
        });
        let text = String::from_utf8_lossy(&out);
        let rec = text
            .lines()
            .find(|l| l.starts_with("recommended: "))
            .unwrap_or("no recommendation");
        println!(
            "  plan, 1000-host fleet file{} (bounce-sim plan --size 100GiB --bandwidth 10Gbit \
             --latency 300ms --hosts-file {name}): {:.3} s; {rec}",
            if racks { " in three racks" } else { "" },
            t.wall.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 4: a million hosts, whole-file doubling with jitter; peak heap of one run.
fn million_bounce(reps: usize) {
    let hosts = 1_000_000;
    let cfg = SimConfig {
        receivers: hosts,
        jitter: 0.1,
        seed: derive_seed(1, hosts, 0),
        ..SimConfig::new(hosts, 20 << 30, 125e6)
    };
    reset_peak();
    let t = time(reps, || {
        let r = simulate(StrategyKind::Bounce, &cfg).expect("runs");
        (1, r.transfers)
    });
    println!(
        "  bounce-sim --hosts 1000000 --strategy bounce --jitter 0.1: {} transfers in {:.3} s \
         ({:.0} ns per transfer), peak heap {:.1} MiB, process VmHWM {}",
        t.transfers,
        t.wall.as_secs_f64(),
        t.ns_per_transfer(),
        peak_mib(),
        vm_hwm()
    );
}

/// Issue 4: a million chunk transfers with the binomial pipeline.
fn binomial_10000(reps: usize) {
    let hosts = 10_000;
    let cfg = SimConfig {
        receivers: hosts,
        chunk: 10 << 20,
        seed: derive_seed(1, hosts, 0),
        ..SimConfig::new(hosts, 1000 << 20, 125e6)
    };
    reset_peak();
    let t = time(reps, || {
        let r = simulate(StrategyKind::Binomial, &cfg).expect("runs");
        (1, r.transfers)
    });
    println!(
        "  bounce-sim --hosts 10000 --size 1000MiB --chunk 10MiB --strategy binomial: {} \
         transfers in {:.3} s ({:.0} ns per transfer), peak heap {:.1} MiB",
        t.transfers,
        t.wall.as_secs_f64(),
        t.ns_per_transfer(),
        peak_mib()
    );
}
