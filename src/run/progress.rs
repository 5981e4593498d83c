//! What the user sees while a run goes on: indicatif bars on a terminal (bytes and rate per
//! host, hosts done out of C), one plain line per event otherwise, stamped with the seconds
//! since the run started.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::driver::{HostStatus, Observer, RunEvent};
use super::say;
use super::transport::{ByteCounters, Found, Probe};
use crate::core::{HostId, Transfer};

/// Shows progress; an [`Observer`] for the driver.
pub struct Progress {
    names: Vec<String>,
    /// Who last started sending to each receiver: a new sender is worth a line.
    feeders: Vec<Option<HostId>>,
    /// Receivers counted in `done`: one found corrupt after it was is counted again.
    counted: Vec<bool>,
    bars: Option<Bars>,
    done: u64,
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: Vec<ProgressBar>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Progress for receivers named `names` (`names[i]` is host `i + 1`) of a `size`-byte
    /// file. With `bars` false (stderr is not a terminal), events are printed as plain lines.
    /// Must be called inside a tokio runtime.
    pub fn new(names: Vec<String>, counters: Arc<ByteCounters>, size: u64, bars: bool) -> Self {
        let bars = bars.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(names.len() as u64));
            overall.set_style(
                ProgressStyle::with_template("{prefix} {pos}/{len} hosts done  {elapsed_precise}  {msg}")
                    .expect("valid template"),
            );
            overall.set_prefix("bounce-run");
            let style = ProgressStyle::with_template(
                "{prefix:24!} {bar:30} {binary_bytes:>10}/{binary_total_bytes} {binary_bytes_per_sec:>12} {msg}",
            )
            .expect("valid template");
            let hosts: Vec<ProgressBar> = names
                .iter()
                .map(|n| {
                    let b = multi.add(ProgressBar::new(size));
                    b.set_style(style.clone());
                    b.set_prefix(n.clone());
                    b.set_message("connecting");
                    b
                })
                .collect();
            let tick_bars = hosts.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    for (i, b) in tick_bars.iter().enumerate() {
                        if !b.is_finished() {
                            b.set_position(counters.get(HostId(i as u32 + 1)));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            Bars {
                multi,
                overall,
                hosts,
                ticker,
            }
        });
        Progress {
            feeders: vec![None; names.len()],
            counted: vec![false; names.len()],
            names,
            bars,
            done: 0,
        }
    }

    fn name(&self, h: HostId) -> &str {
        if h == HostId::SOURCE {
            "controller"
        } else {
            &self.names[h.index() - 1]
        }
    }

    /// Prints a line above the bars, or plainly; nothing with `-q`.
    fn line(&self, text: String) {
        if say::level() == say::Level::Quiet {
            return;
        }
        match &self.bars {
            Some(b) => b.multi.suspend(|| eprintln!("{text}")),
            None => self.plain(&text),
        }
    }

    /// Prints a plain line, stamped with the time since the start; nothing with `-q`.
    fn plain(&self, text: &str) {
        if say::level() != say::Level::Quiet {
            eprintln!("{}", say::stamped(text));
        }
    }

    /// With `-v`, traces a hop the scheduler started or ended.
    fn trace_hop(&self, t: &Transfer, what: &str) {
        say::trace(|| {
            format!(
                "scheduler: hop {what}: {} -> {}, chunks {}..{} ({})",
                self.name(t.from),
                self.name(t.to),
                t.chunks.start,
                t.chunks.end,
                crate::units::format_size(t.bytes)
            )
        });
    }

    /// Removes the bars before the final table is printed.
    pub fn finish(self) {
        if let Some(b) = self.bars {
            b.ticker.abort();
            b.overall.finish();
            let _ = b.multi.clear();
        }
    }
}

impl Observer for Progress {
    fn on_event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Probed { host, probe } => {
                let msg = match probe {
                    Probe::UpToDate => "up to date",
                    Probe::Needed => "connected",
                };
                match &self.bars {
                    Some(b) => b.hosts[host.index() - 1].set_message(msg),
                    None => self.plain(&format!("{}: {msg}", self.name(*host))),
                }
            }
            RunEvent::Found { host, found } => {
                let host = self.name(*host);
                self.line(match found {
                    Found::Swept(path) => {
                        format!(
                            "{host}: removed stale temporary file {path} (no live run had it open)"
                        )
                    }
                    Found::SweptLock { lock, holder } => format!(
                        "{host}: removed the stale lock {lock}, left by {holder}: its run is gone \
                         (no process of it is left on the host)"
                    ),
                    Found::Restored(path) => format!(
                        "{host}: DEST was missing and {path}, the tree a killed run had set \
                         aside, was beside it: moved it back to DEST; only what differs is sent"
                    ),
                    Found::Unrestored(path) => format!(
                        "{host}: left {path} alone: several killed runs' trees are beside the \
                         missing DEST, and which one it was is not known"
                    ),
                })
            }
            RunEvent::LinkNotOpened { reason } => self.line(format!(
                "link not set up ahead: {reason}; its chunks go by request instead"
            )),
            RunEvent::Straggler {
                host,
                feeder,
                rate,
                reference,
                stalled_for,
            } => {
                let why = match stalled_for {
                    Some(d) => format!(
                        "has received nothing for {:.1} s while its feeder went on",
                        d.as_secs_f64()
                    ),
                    None => format!(
                        "receives at {} against its feeder's {}",
                        crate::units::format_rate(*rate),
                        crate::units::format_rate(*reference)
                    ),
                };
                self.line(format!(
                    "{}: {why}: cut out of the chain, fed by {} at its own pace",
                    self.name(*host),
                    self.name(*feeder)
                ))
            }
            RunEvent::ProbeStarted {
                head,
                host,
                head_rate,
            } => self.line(format!(
                "{}: receives at {}, too slowly to tell whether it or the controller is slow: \
                 {} is fed by the controller alongside it for a moment",
                self.name(*head),
                crate::units::format_rate(*head_rate),
                self.name(*host)
            )),
            RunEvent::ProbeEnded {
                head,
                host,
                head_rate,
                host_rate,
                source_bound,
            } => {
                let verdict = match source_bound {
                    true => format!(
                        ": the controller's link is what limits the chain, and {} goes back to \
                         its tail",
                        self.name(*host)
                    ),
                    false => String::new(),
                };
                self.line(format!(
                    "probe of the controller: {} received at {} and {} at {} over the same span{verdict}",
                    self.name(*head),
                    crate::units::format_rate(*head_rate),
                    self.name(*host),
                    crate::units::format_rate(*host_rate),
                ))
            }
            RunEvent::Corrupt { host, reason } => {
                self.feeders[host.index() - 1] = None;
                if std::mem::take(&mut self.counted[host.index() - 1]) {
                    self.done -= 1;
                }
                self.line(format!(
                    "{reason}; {} is fed again from a good copy",
                    self.name(*host)
                ))
            }
            RunEvent::HopStarted(t) => {
                self.trace_hop(t, "started");
                let msg = format!("from {}", self.name(t.from));
                let feeder = &mut self.feeders[t.to.index() - 1];
                let new_feeder = feeder.replace(t.from) != Some(t.from);
                match &self.bars {
                    Some(b) => b.hosts[t.to.index() - 1].set_message(msg),
                    None if new_feeder => {
                        self.plain(&format!("{}: receiving {msg}", self.name(t.to)))
                    }
                    None => {}
                }
            }
            RunEvent::HopDone(t) => self.trace_hop(t, "ended"),
            RunEvent::HopFailed { transfer, reason } => self.line(format!(
                "{} -> {}: hop failed: {reason}",
                self.name(transfer.from),
                self.name(transfer.to)
            )),
            RunEvent::HostDone {
                host,
                status,
                error,
            } => {
                if status.is_ok() && !std::mem::replace(&mut self.counted[host.index() - 1], true) {
                    self.done += 1;
                }
                let text = match error {
                    Some(e) => format!("{}: {}: {e}", self.name(*host), status.as_str()),
                    None => format!("{}: {}", self.name(*host), status.as_str()),
                };
                match &self.bars {
                    Some(b) => {
                        let bar = &b.hosts[host.index() - 1];
                        bar.set_message(status.as_str());
                        if *status == HostStatus::Verified {
                            bar.set_position(bar.length().unwrap_or(0));
                        }
                        bar.finish();
                        b.overall.set_position(self.done);
                        if !status.is_ok() {
                            self.line(text);
                        }
                    }
                    None => self.plain(&text),
                }
            }
            RunEvent::Then { host, result } => self.line(match result {
                Ok(status) => format!("{}: --then exited {status}", self.name(*host)),
                Err(e) => format!("{}: --then could not run: {e}", self.name(*host)),
            }),
        }
    }
}
