//! Scenario settings: what a `sims/*.toml` file or the command line asks the simulator to
//! do, checked and turned into a [`SweepConfig`].
//!
//! Both sources give the same keys as strings in human units; command-line values override
//! the file's, and every error names the flag that was wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::engine::{Failure, SimConfig};
use super::sweep::SweepConfig;
use super::topology::{FleetNetwork, HostClass, NetworkSettings, NetworkSpec, RackSpec};
use crate::core::StrategyKind;
use crate::fleet::HostList;
use crate::units::{format_rate, format_size, parse_duration, parse_rate, parse_size};

/// A setting that is missing, malformed or out of range. Its message names the flag.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    /// A flag's value is wrong.
    #[error("--{flag}: {message}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// The scenario file could not be read or parsed.
    #[error("--scenario {path}: {message}")]
    Scenario {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(flag: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        flag,
        message: message.into(),
    }
}

/// Settings as given, before checking: every field optional, values in human units.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Title of the figure; by default it names S and B.
    pub title: Option<String>,
    /// Receivers: `C` or `A..B` inclusive.
    pub hosts: Option<String>,
    /// File size S, such as `20GiB`.
    pub size: Option<String>,
    /// Per-host bandwidth B, such as `1Gbit`.
    pub bandwidth: Option<String>,
    /// Strategies: a comma-separated list, or `all`.
    pub strategy: Option<String>,
    /// Chunk size for the chunked strategies.
    pub chunk: Option<String>,
    /// Setup latency of each connection between two hosts, such as `200ms`.
    pub latency: Option<String>,
    /// Fixed cost of every transfer, such as `5ms`.
    pub chunk_overhead: Option<String>,
    /// The source's serial cost per receiver of connecting to it, such as `20ms`.
    pub join_interval: Option<String>,
    /// Jitter F in [0, 1).
    pub jitter: Option<f64>,
    /// Base seed.
    pub seed: Option<u64>,
    /// Runs per point.
    pub runs: Option<u32>,
    /// Where to write the CSV.
    pub csv: Option<PathBuf>,
    /// Where to write the PNG.
    pub png: Option<PathBuf>,
    /// Draw the fluid lower bound on the figure.
    pub floor: Option<bool>,
    /// Capacities other than B, and racks.
    pub network: Option<NetworkSettings>,
    /// Receivers that die during each run, as `HOST@TIME` such as `3@10s`.
    pub fail: Option<Vec<String>>,
    /// A cap on every host's upload, the source's included, such as `400Mbit`.
    pub limit_rate: Option<String>,
    /// A fleet file (bounce-run's hosts file with `up=`, `down=`, `rack=` attributes): its
    /// hosts are the receivers, in order, at their own rates.
    pub hosts_file: Option<PathBuf>,
}

/// Checked settings, ready to run.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The sweep to run.
    pub sweep: SweepConfig,
    /// Where the CSV goes.
    pub csv: PathBuf,
    /// Where the PNG goes.
    pub png: PathBuf,
    /// The figure's title.
    pub title: String,
    /// Whether the figure shows the lower bound.
    pub floor: bool,
}

impl Settings {
    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        let err = |message: String| SettingsError::Scenario {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut settings: Settings =
            toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
        // A fleet file named in a scenario is found beside it, wherever it is run from.
        if let (Some(f), Some(dir)) = (&mut settings.hosts_file, path.parent()) {
            if f.is_relative() {
                *f = dir.join(&*f);
            }
        }
        Ok(settings)
    }

    /// These settings, with every field left unset here taken from `base`.
    pub fn or(self, base: Settings) -> Settings {
        Settings {
            title: self.title.or(base.title),
            hosts: self.hosts.or(base.hosts),
            size: self.size.or(base.size),
            bandwidth: self.bandwidth.or(base.bandwidth),
            strategy: self.strategy.or(base.strategy),
            chunk: self.chunk.or(base.chunk),
            latency: self.latency.or(base.latency),
            chunk_overhead: self.chunk_overhead.or(base.chunk_overhead),
            join_interval: self.join_interval.or(base.join_interval),
            jitter: self.jitter.or(base.jitter),
            seed: self.seed.or(base.seed),
            runs: self.runs.or(base.runs),
            csv: self.csv.or(base.csv),
            png: self.png.or(base.png),
            floor: self.floor.or(base.floor),
            fail: self.fail.or(base.fail),
            hosts_file: self.hosts_file.or(base.hosts_file),
            limit_rate: self.limit_rate.or(base.limit_rate),
            network: match (self.network, base.network) {
                (Some(a), Some(b)) => Some(NetworkSettings {
                    source: a.source.or(b.source),
                    spread: a.spread.or(b.spread),
                    classes: if a.classes.is_empty() {
                        b.classes
                    } else {
                        a.classes
                    },
                    racks: a.racks.or(b.racks),
                }),
                (a, b) => a.or(b),
            },
        }
    }

    /// Checks every value, filling in the defaults of `bounce-sim --help`.
    pub fn resolve(&self) -> Result<Resolved, SettingsError> {
        let fleet = self.hosts_file.as_deref().map(read_fleet).transpose()?;
        let hosts = match (&fleet, self.hosts.as_deref()) {
            (None, hosts) => parse_hosts(hosts.unwrap_or("1..64"))?,
            (Some(f), None) => vec![f.receivers()],
            (Some(f), Some(given)) => {
                let n = f.receivers();
                if parse_hosts(given)? != [n] {
                    return Err(invalid(
                        "hosts",
                        format!("'{given}' disagrees with --hosts-file, which lists {n} hosts"),
                    ));
                }
                vec![n]
            }
        };
        let size = parse_size(self.size.as_deref().unwrap_or("20GiB"))
            .map_err(|e| invalid("size", e.to_string()))?;
        if size == 0 {
            return Err(invalid(
                "size",
                "'0' is empty: the file must have at least 1 byte",
            ));
        }
        let bw_text = self.bandwidth.as_deref().unwrap_or("1Gbit");
        let bandwidth = parse_rate(bw_text).map_err(|e| invalid("bandwidth", e.to_string()))?;
        if bandwidth <= 0.0 {
            return Err(invalid(
                "bandwidth",
                format!("'{bw_text}' must be greater than 0"),
            ));
        }
        let upload_limit = self
            .limit_rate
            .as_deref()
            .map(|r| rate("limit-rate", r))
            .transpose()?;
        let strategies =
            StrategyKind::parse_list(self.strategy.as_deref().unwrap_or("linear,bounce"))
                .map_err(|e| invalid("strategy", e.to_string()))?;
        let chunk = parse_size(self.chunk.as_deref().unwrap_or("64MiB"))
            .map_err(|e| invalid("chunk", e.to_string()))?;
        if chunk == 0 {
            return Err(invalid(
                "chunk",
                "'0' is empty: chunks must have at least 1 byte",
            ));
        }
        if size.div_ceil(chunk) > u64::from(u32::MAX) {
            return Err(invalid(
                "chunk",
                format!("{chunk} bytes cuts the file into too many chunks"),
            ));
        }
        let latency = parse_duration(self.latency.as_deref().unwrap_or("0ms"))
            .map_err(|e| invalid("latency", e.to_string()))?;
        let chunk_overhead = parse_duration(self.chunk_overhead.as_deref().unwrap_or("0ms"))
            .map_err(|e| invalid("chunk-overhead", e.to_string()))?;
        let join_interval = parse_duration(self.join_interval.as_deref().unwrap_or("0ms"))
            .map_err(|e| invalid("join-interval", e.to_string()))?;
        let jitter = self.jitter.unwrap_or(0.0);
        if !(0.0..1.0).contains(&jitter) {
            return Err(invalid("jitter", format!("'{jitter}' is outside [0, 1)")));
        }
        let runs = self.runs.unwrap_or(1);
        if runs == 0 {
            return Err(invalid("runs", "'0': at least 1 run is needed"));
        }
        let title = self.title.clone().unwrap_or_else(|| {
            format!(
                "Sending S = {} to C hosts at B = {} per host",
                format_size(size),
                format_rate(bandwidth)
            )
        });
        Ok(Resolved {
            sweep: SweepConfig {
                hosts,
                strategies,
                base: SimConfig {
                    receivers: 1,
                    size,
                    chunk,
                    bandwidth,
                    latency,
                    chunk_overhead,
                    join_interval,
                    jitter,
                    seed: self.seed.unwrap_or(1),
                    network: NetworkSpec {
                        fleet: fleet.map(Arc::new),
                        upload_limit,
                        ..resolve_network(self.network.as_ref(), self.hosts_file.is_some())?
                    },
                    failures: self
                        .fail
                        .iter()
                        .flatten()
                        .map(|f| parse_failure(f))
                        .collect::<Result<_, _>>()?,
                    straggler: Some(crate::core::Straggler::DEFAULT),
                },
                runs,
                threads: 0,
            },
            csv: self
                .csv
                .clone()
                .unwrap_or_else(|| "plots/bounce-sim.csv".into()),
            png: self
                .png
                .clone()
                .unwrap_or_else(|| "plots/bounce-sim.png".into()),
            title,
            floor: self.floor.unwrap_or(false),
        })
    }
}

/// Parses `HOST@TIME`, such as `3@10s`: receiver 3 dies 10 s into the run.
fn parse_failure(text: &str) -> Result<Failure, SettingsError> {
    let bad = |why: &str| invalid("fail", format!("'{text}' {why}"));
    let (host, at) = text
        .split_once('@')
        .ok_or_else(|| bad("is not HOST@TIME, such as 3@10s"))?;
    let host: u32 = host
        .trim()
        .parse()
        .map_err(|_| bad("does not start with a receiver's number"))?;
    if host == 0 {
        return Err(bad("names the source (0), which cannot fail"));
    }
    let at = parse_duration(at.trim()).map_err(|e| invalid("fail", e.to_string()))?;
    Ok(Failure { host, at })
}

fn rate(flag: &'static str, text: &str) -> Result<f64, SettingsError> {
    let r = parse_rate(text).map_err(|e| invalid(flag, e.to_string()))?;
    if r <= 0.0 {
        return Err(invalid(flag, format!("'{text}' must be greater than 0")));
    }
    Ok(r)
}

/// Reads a fleet file into the network it describes.
fn read_fleet(path: &Path) -> Result<FleetNetwork, SettingsError> {
    let mut list = HostList::new();
    list.add_file(path)
        .and_then(|()| list.finish())
        .and_then(|fleet| FleetNetwork::from_fleet(&fleet))
        .map_err(|e| invalid("hosts-file", e.to_string()))
}

/// The network settings, checked. With a fleet file, which gives every host's rates and
/// racks, the settings that draw or group hosts are refused rather than ignored.
fn resolve_network(n: Option<&NetworkSettings>, fleet: bool) -> Result<NetworkSpec, SettingsError> {
    let Some(n) = n else {
        return Ok(NetworkSpec::default());
    };
    if fleet {
        for (given, flag) in [
            (n.spread.is_some(), "spread"),
            (!n.classes.is_empty(), "network.class"),
            (n.racks.is_some(), "racks"),
        ] {
            if given {
                return Err(invalid(
                    flag,
                    "--hosts-file gives each host's rates and rack; leave this out",
                ));
            }
        }
    }
    let spread = n.spread.unwrap_or(0.0);
    if !(spread.is_finite() && spread >= 0.0) {
        return Err(invalid(
            "spread",
            format!("'{spread}' must be a number ≥ 0"),
        ));
    }
    let mut classes = Vec::new();
    let mut total = 0.0;
    for c in &n.classes {
        if !(c.share > 0.0 && c.share <= 1.0) {
            return Err(invalid(
                "network.class",
                format!("share '{}' is outside (0, 1]", c.share),
            ));
        }
        total += c.share;
        let both = c.bandwidth.as_deref();
        let up = c.upload.as_deref().or(both);
        let down = c.download.as_deref().or(both);
        let (Some(up), Some(down)) = (up, down) else {
            return Err(invalid(
                "network.class",
                "needs bandwidth, or upload and download",
            ));
        };
        classes.push(HostClass {
            share: c.share,
            upload: rate("network.class", up)?,
            download: rate("network.class", down)?,
        });
    }
    if total > 1.0 + 1e-9 {
        return Err(invalid(
            "network.class",
            format!("shares add up to {total}, more than 1"),
        ));
    }
    let racks = match &n.racks {
        Some(r) if r.count == 0 => return Err(invalid("racks", "'0': at least 1 rack")),
        Some(r) => Some(RackSpec {
            count: r.count,
            uplink: rate("rack-uplink", &r.uplink)?,
        }),
        None => None,
    };
    Ok(NetworkSpec {
        source_upload: n
            .source
            .as_deref()
            .map(|s| rate("source-bandwidth", s))
            .transpose()?,
        classes,
        spread,
        racks,
        fleet: None,
        upload_limit: None,
    })
}

/// Parses `--hosts`: a comma-separated list of host counts `C` and inclusive ranges `A..B`,
/// such as `1..64` or `50,100,200..202`; every count at least 1. Returns the counts in
/// ascending order, each once.
pub fn parse_hosts(s: &str) -> Result<Vec<u32>, SettingsError> {
    let num = |t: &str| -> Result<u32, SettingsError> {
        let n: u32 = t.trim().parse().map_err(|_| {
            invalid(
                "hosts",
                format!("'{s}' is not a host count C, a range A..B, or a list of them"),
            )
        })?;
        if n == 0 {
            return Err(invalid(
                "hosts",
                format!("'{s}': host counts start at 1 (C counts receivers)"),
            ));
        }
        Ok(n)
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once("..") {
            Some((a, b)) => {
                let b = b.strip_prefix('=').unwrap_or(b);
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(invalid(
                        "hosts",
                        format!("'{s}' is empty: {a} is greater than {b}"),
                    ));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_a_count_or_an_inclusive_range() {
        assert_eq!(parse_hosts("64"), Ok(vec![64]));
        assert_eq!(parse_hosts("1..64"), Ok((1..=64).collect()));
        assert_eq!(parse_hosts("2..=8"), Ok((2..=8).collect()));
        assert_eq!(
            parse_hosts("1000,50,100..101,50"),
            Ok(vec![50, 100, 101, 1000])
        );
    }

    #[test]
    fn bad_host_counts_name_the_flag_and_value() {
        for bad in ["0", "64..1", "x", "1..", "0..4", "1,,2"] {
            let e = parse_hosts(bad).unwrap_err().to_string();
            assert!(e.starts_with("--hosts: '"), "{e}");
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn command_line_values_override_the_scenario() {
        let file = Settings {
            hosts: Some("1..8".into()),
            runs: Some(3),
            ..Settings::default()
        };
        let cli = Settings {
            hosts: Some("4".into()),
            ..Settings::default()
        };
        let r = cli.or(file).resolve().unwrap();
        assert_eq!(r.sweep.hosts, vec![4]);
        assert_eq!(r.sweep.runs, 3);
    }

    #[test]
    fn out_of_range_values_are_rejected_by_flag() {
        let cases = [
            (
                Settings {
                    size: Some("0".into()),
                    ..Settings::default()
                },
                "--size",
            ),
            (
                Settings {
                    bandwidth: Some("0Gbit".into()),
                    ..Settings::default()
                },
                "--bandwidth",
            ),
            (
                Settings {
                    jitter: Some(1.5),
                    ..Settings::default()
                },
                "--jitter",
            ),
            (
                Settings {
                    strategy: Some("teleport".into()),
                    ..Settings::default()
                },
                "--strategy",
            ),
            (
                Settings {
                    runs: Some(0),
                    ..Settings::default()
                },
                "--runs",
            ),
            (
                Settings {
                    latency: Some("soon".into()),
                    ..Settings::default()
                },
                "--latency",
            ),
        ];
        for (s, flag) in cases {
            let e = s.resolve().unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
    }
}
