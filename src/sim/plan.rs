//! Planning: which strategy and chunk size ship a file fastest on a given network, found by
//! simulating the candidates (`bounce-sim plan` and `--strategy auto`).

use std::time::Duration;

use super::engine::{simulate, SimConfig, SimError, SimResult};
use crate::core::StrategyKind;

/// Smallest chunk the search considers: below it, per-chunk costs that the model leaves out
/// (process starts, syscalls, digests) dominate on real hosts.
pub const MIN_CHUNK: u64 = 1 << 20;

/// What to plan.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    /// The scenario; `receivers` is the host count planned for, `chunk` is ignored unless
    /// `fixed_chunk` is set.
    pub base: SimConfig,
    /// Strategies to consider.
    pub strategies: Vec<StrategyKind>,
    /// Use this chunk size instead of searching for the best one.
    pub fixed_chunk: Option<u64>,
    /// Largest number of chunk transfers (k·C) one candidate may simulate; bounds the search's
    /// cost at large host counts.
    pub max_transfers: u64,
    /// The strategies bounce-run can execute: the plan marks them, and recommends among
    /// them when there are any.
    pub runnable: Vec<StrategyKind>,
    /// Model the chain as bounce-run runs it, a stream that each hop holds back by this
    /// much ([`streamed_chain`]), instead of searching chunk sizes of a store-and-forward
    /// chain.
    pub stream_hop_delay: Option<Duration>,
}

/// The simulator's model of a streamed chain (bounce-run's): the bytes flow through every
/// host as they arrive, and each hop holds them back by `hop_delay` (a relay's poll). It is
/// the chunked chain with chunks of the bytes that move in one `hop_delay` at the rate the
/// stream runs at (B, or on a fleet its slowest link, which paces the whole stream; never
/// above the network's upload limit), paying
/// no per-chunk overhead, with at most `max_transfers` chunk transfers in all (coarser
/// chunks beyond that, which overstate the per-hop delay). Connection latency and joins stay
/// as in `base`: they are the setup.
pub fn streamed_chain(base: &SimConfig, hop_delay: Duration, max_transfers: u64) -> SimConfig {
    let rate = match &base.network.fleet {
        Some(_) => {
            let t = base
                .network
                .build(base.receivers, base.bandwidth, base.seed);
            let slowest_down = t.down[1..].iter().copied().fold(f64::INFINITY, f64::min);
            t.up[0].min(slowest_down)
        }
        None => base.bandwidth,
    };
    // Every relay's upload is capped too, so the cap paces the stream wherever it binds.
    let rate = base.network.upload_limit.map_or(rate, |l| rate.min(l));
    let per_delay = (rate * hop_delay.as_secs_f64()) as u64;
    let budget = base
        .size
        .div_ceil((max_transfers / u64::from(base.receivers.max(1))).max(1));
    SimConfig {
        chunk: per_delay.max(budget).clamp(1, base.size),
        chunk_overhead: Duration::ZERO,
        ..base.clone()
    }
}

impl PlanConfig {
    /// Plans `base` over every strategy, searching chunk sizes, with at most 4 million chunk
    /// transfers per candidate.
    pub fn new(base: SimConfig) -> Self {
        PlanConfig {
            base,
            strategies: StrategyKind::ALL.to_vec(),
            fixed_chunk: None,
            max_transfers: 4_000_000,
            runnable: Vec::new(),
            stream_hop_delay: None,
        }
    }
}

/// One strategy's best showing.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The strategy.
    pub strategy: StrategyKind,
    /// The chunk size it did best with; `None` for whole-file strategies.
    pub chunk: Option<u64>,
    /// Its simulated run.
    pub result: SimResult,
    /// Chunk sizes tried, with the makespan each gave.
    pub tried: Vec<(u64, f64)>,
    /// bounce-run can execute it.
    pub runnable: bool,
    /// Simulated as a stream ([`streamed_chain`]); `chunk` is then the model's granularity.
    pub streamed: bool,
}

impl Candidate {
    /// The scenario its result was simulated with, on `base`'s network: its chunk (the whole
    /// file for whole-file strategies) and, for a streamed chain, no per-chunk overhead.
    pub fn config(&self, base: &SimConfig) -> SimConfig {
        SimConfig {
            chunk: self.chunk.unwrap_or(base.size),
            chunk_overhead: if self.streamed {
                Duration::ZERO
            } else {
                base.chunk_overhead
            },
            ..base.clone()
        }
    }

    /// Predicted makespan over the fluid lower bound.
    pub fn over_bound(&self) -> f64 {
        self.result.makespan / self.result.lower_bound
    }
}

/// Every candidate, fastest first.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The file size planned for.
    pub size: u64,
    /// Candidates sorted by predicted makespan.
    pub candidates: Vec<Candidate>,
}

impl Plan {
    /// The fastest candidate.
    pub fn best(&self) -> &Candidate {
        &self.candidates[0]
    }

    /// The candidate to use: the fastest that bounce-run can execute, or the fastest of all
    /// when none is marked runnable.
    pub fn recommended(&self) -> &Candidate {
        self.candidates
            .iter()
            .find(|c| c.runnable)
            .unwrap_or(self.best())
    }

    /// The fastest candidate bounce-run cannot execute, when it beats the recommended one.
    pub fn faster_simulated_only(&self) -> Option<&Candidate> {
        let rec = self.recommended();
        self.candidates
            .iter()
            .take_while(|c| !std::ptr::eq(*c, rec))
            .find(|c| !c.runnable)
    }

    /// One line on why the recommended candidate is recommended.
    pub fn why(&self) -> String {
        let best = self.recommended();
        let runnable = self.candidates.iter().any(|c| c.runnable);
        let mut why = format!(
            "fastest predicted{}: {:.3}× the lower bound",
            if runnable {
                " that bounce-run can run"
            } else {
                ""
            },
            best.over_bound()
        );
        let next = self
            .candidates
            .iter()
            .filter(|c| c.runnable == best.runnable && !std::ptr::eq(*c, best))
            .find(|c| c.result.makespan >= best.result.makespan);
        if let Some(second) = next {
            why += &format!(
                ", {:.1}% ahead of {}",
                (second.result.makespan / best.result.makespan - 1.0) * 100.0,
                second.strategy
            );
        }
        let copies = best.result.source_bytes as f64 / self.size as f64;
        why += &format!(", and the source uploads the file {copies:.2} times");
        why
    }
}

/// Finds each strategy's best chunk size and ranks the strategies.
pub fn plan(cfg: &PlanConfig) -> Result<Plan, SimError> {
    let mut candidates = Vec::new();
    for &kind in &cfg.strategies {
        let mut c = best_for(kind, cfg)?;
        c.runnable = cfg.runnable.contains(&kind);
        candidates.push(c);
    }
    candidates.sort_by(|a, b| a.result.makespan.total_cmp(&b.result.makespan));
    Ok(Plan {
        size: cfg.base.size,
        candidates,
    })
}

fn run(kind: StrategyKind, cfg: &PlanConfig, chunk: u64) -> Result<SimResult, SimError> {
    simulate(
        kind,
        &SimConfig {
            chunk,
            ..cfg.base.clone()
        },
    )
}

/// The chunk sizes a search may try: powers of two from the one giving the most chunks the
/// budget allows (and at least [`MIN_CHUNK`]) up to the whole file.
fn chunk_ladder(cfg: &PlanConfig) -> Vec<u64> {
    let size = cfg.base.size;
    let max_chunks = (cfg.max_transfers / u64::from(cfg.base.receivers.max(1))).max(1);
    let smallest = size.div_ceil(max_chunks).max(MIN_CHUNK).next_power_of_two();
    let mut ladder = Vec::new();
    let mut c = smallest;
    while c < size {
        ladder.push(c);
        c *= 2;
    }
    ladder.push(size);
    ladder
}

fn best_for(kind: StrategyKind, cfg: &PlanConfig) -> Result<Candidate, SimError> {
    let candidate = |chunk: Option<u64>, result: SimResult, tried| Candidate {
        strategy: kind,
        chunk,
        result,
        tried,
        runnable: false,
        streamed: false,
    };
    if !kind.uses_chunks() {
        let result = run(kind, cfg, cfg.base.size)?;
        return Ok(candidate(None, result, Vec::new()));
    }
    if let (StrategyKind::Chain, Some(delay)) = (kind, cfg.stream_hop_delay) {
        let stream = streamed_chain(&cfg.base, delay, cfg.max_transfers);
        let result = simulate(kind, &stream)?;
        let tried = vec![(stream.chunk, result.makespan)];
        return Ok(Candidate {
            streamed: true,
            ..candidate(Some(stream.chunk), result, tried)
        });
    }
    if let Some(chunk) = cfg.fixed_chunk {
        let result = run(kind, cfg, chunk)?;
        let tried = vec![(chunk, result.makespan)];
        return Ok(candidate(Some(chunk), result, tried));
    }
    // Makespan against chunk size is U-shaped: too few chunks and the pipeline barely
    // overlaps, too many and per-chunk latency adds up. Walk down the ladder from the whole
    // file and stop two steps after the makespan last improved.
    let ladder = chunk_ladder(cfg);
    let mut tried = Vec::new();
    let mut best: Option<(u64, SimResult)> = None;
    let mut since_best = 0;
    for &chunk in ladder.iter().rev() {
        let r = run(kind, cfg, chunk)?;
        tried.push((chunk, r.makespan));
        if best.as_ref().is_none_or(|(_, b)| r.makespan < b.makespan) {
            best = Some((chunk, r));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= 2 {
                break;
            }
        }
    }
    let (chunk, result) = best.expect("the ladder holds at least the whole file");
    Ok(candidate(Some(chunk), result, tried))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_blog_scenario_recommends_a_pipeline_and_ranks_linear_last() {
        let base = SimConfig::new(10, 20 * GIB, 125e6);
        let p = plan(&PlanConfig::new(base)).unwrap();
        let last = p.candidates.last().unwrap();
        assert_eq!(last.strategy, StrategyKind::Linear);
        assert!(last.result.makespan >= 10.0 * 20.0 * GIB as f64 / 125e6 * (1.0 - 1e-9));
        assert!(p.best().strategy.uses_chunks(), "{:?}", p.best().strategy);
        assert!(p.best().over_bound() < 1.05, "{}", p.best().over_bound());
    }

    #[test]
    fn a_cost_per_chunk_makes_the_search_stop_short_of_the_smallest_chunk() {
        let base = SimConfig {
            latency: std::time::Duration::from_millis(300),
            chunk_overhead: std::time::Duration::from_millis(50),
            ..SimConfig::new(100, 100 * GIB, 1.25e9)
        };
        let cfg = PlanConfig {
            strategies: vec![StrategyKind::Binomial],
            ..PlanConfig::new(base)
        };
        let p = plan(&cfg).unwrap();
        let smallest = *chunk_ladder(&cfg).first().unwrap();
        let chosen = p.best().chunk.unwrap();
        assert!(
            chosen > smallest,
            "chose {chosen}, the smallest is {smallest}"
        );
        // The choice beats both its neighbours on the ladder.
        for &(c, m) in &p.best().tried {
            assert!(m >= p.best().result.makespan, "{c} gave {m}");
        }
    }

    #[test]
    fn a_fixed_chunk_is_used_as_given() {
        let base = SimConfig::new(1000, 100 * GIB, 1.25e9);
        let cfg = PlanConfig {
            strategies: vec![StrategyKind::Bounce, StrategyKind::Binomial],
            fixed_chunk: Some(GIB),
            ..PlanConfig::new(base)
        };
        let p = plan(&cfg).unwrap();
        assert_eq!(p.best().strategy, StrategyKind::Binomial);
        assert_eq!(p.best().chunk, Some(GIB));
        // k = 100, L = 10: (1 + 9/100)·T, within 10% of the floor T.
        assert!(
            (p.best().over_bound() - 1.09).abs() < 1e-9,
            "{}",
            p.best().over_bound()
        );
    }
}
