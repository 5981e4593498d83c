//! The network a simulation runs on: each host's upload and download capacity, and racks of
//! hosts behind shared uplinks. A [`NetworkSpec`] describes it for any host count; a
//! [`Topology`] is that description built for one run.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::network::Network;
use crate::fleet::{Fleet, HostAttrs, HostSpec, HostsError, RackUplink};

/// A class of receivers with their own capacities, such as "30% of hosts at 1 Gbit".
#[derive(Clone, Debug, PartialEq)]
pub struct HostClass {
    /// Fraction of the receivers in this class, in (0, 1].
    pub share: f64,
    /// Upload capacity, bytes per second.
    pub upload: f64,
    /// Download capacity, bytes per second.
    pub download: f64,
}

/// Racks: hosts are split into `count` racks of consecutive ids (the source is in rack 0);
/// a flow between racks crosses the sender's rack uplink and the receiver's rack downlink.
#[derive(Clone, Debug, PartialEq)]
pub struct RackSpec {
    /// Number of racks.
    pub count: u32,
    /// Capacity of each rack's uplink, in each direction, bytes per second.
    pub uplink: f64,
}

/// How to build the network for any number of receivers. The default is the uniform network
/// of DESIGN.md: every host uploads and downloads at the same rate B.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkSpec {
    /// Upload capacity of the source, if not B.
    pub source_upload: Option<f64>,
    /// Receivers' classes; receivers in no class run at B. Members are picked by the seeded
    /// generator, so slow hosts are spread through the host list.
    pub classes: Vec<HostClass>,
    /// Log-normal spread σ: every receiver's capacities are multiplied by e^(σ·N(0,1)), so
    /// the median stays the class's rate.
    pub spread: f64,
    /// Racks behind oversubscribed uplinks, if any.
    pub racks: Option<RackSpec>,
    /// Every host's capacities and rack, as a fleet file gives them; when set, it is the
    /// network (`classes`, `spread` and `racks` are not used) and the run must have as many
    /// receivers as it has hosts.
    pub fleet: Option<Arc<FleetNetwork>>,
    /// A cap on every host's upload, the source's included, bytes per second (`--limit-rate`):
    /// each upload capacity is the lower of its own and this.
    pub upload_limit: Option<f64>,
}

/// A network given host by host, from a fleet file: exact, with no random draw. Index 0 is
/// the source. A rate left unset is B, and the source's upload falls back on
/// `NetworkSpec::source_upload` before B.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetNetwork {
    /// Upload capacity per host, bytes per second.
    pub up: Vec<Option<f64>>,
    /// Download capacity per host, bytes per second.
    pub down: Vec<Option<f64>>,
    /// Rack of each host; empty when the fleet names no rack.
    pub rack: Vec<u32>,
    /// Uplink of each rack, each direction; `None` for the rack of its own that a source
    /// named in no rack sits in, whose uplink is the source's upload and so never binds.
    pub rack_uplink: Vec<Option<f64>>,
}

impl FleetNetwork {
    /// The network a fleet describes. Racks are numbered in the order of their `@rack`
    /// lines; once one host names a rack, every receiver must, and every rack named needs
    /// its `@rack` line. Errors name the line.
    pub fn from_fleet(fleet: &Fleet) -> Result<FleetNetwork, HostsError> {
        Self::from_parts(&fleet.source, &fleet.hosts, &fleet.racks)
    }

    /// [`FleetNetwork::from_fleet`] on a fleet's parts.
    pub fn from_parts(
        source: &HostAttrs,
        hosts: &[HostSpec],
        racks: &[RackUplink],
    ) -> Result<FleetNetwork, HostsError> {
        let attrs = std::iter::once(source).chain(hosts.iter().map(|h| &h.attrs));
        let up = attrs.clone().map(|a| a.up).collect();
        let down = attrs.clone().map(|a| a.down).collect();
        let racked = attrs.clone().any(|a| a.rack.is_some());
        let mut rack = Vec::new();
        let mut rack_uplink: Vec<Option<f64>> = racks.iter().map(|r| Some(r.uplink)).collect();
        if racked {
            let index = |name: &str, origin: &str| {
                racks
                    .iter()
                    .position(|r| r.name == name)
                    .map(|i| i as u32)
                    .ok_or_else(|| HostsError::Attribute {
                        origin: origin.to_string(),
                        field: format!("rack={name}"),
                        reason: format!("rack '{name}' has no '@rack {name} uplink=RATE' line"),
                    })
            };
            rack.push(match &source.rack {
                Some(name) => index(name, "@source")?,
                None => {
                    rack_uplink.push(None);
                    rack_uplink.len() as u32 - 1
                }
            });
            for h in hosts {
                let name = h
                    .attrs
                    .rack
                    .as_deref()
                    .ok_or_else(|| HostsError::Attribute {
                        origin: h.origin.clone(),
                        field: h.to_string(),
                        reason: "the fleet names racks; this host needs rack=NAME too".into(),
                    })?;
                rack.push(index(name, &h.origin)?);
            }
        } else {
            rack_uplink.clear();
        }
        Ok(FleetNetwork {
            up,
            down,
            rack,
            rack_uplink,
        })
    }

    /// Number of receivers.
    pub fn receivers(&self) -> u32 {
        self.up.len() as u32 - 1
    }

    fn build(&self, bandwidth: f64, source_upload: Option<f64>, limit: Option<f64>) -> Topology {
        let mut up: Vec<f64> = self.up.iter().map(|u| u.unwrap_or(bandwidth)).collect();
        up[0] = self.up[0].or(source_upload).unwrap_or(bandwidth);
        cap(&mut up, limit);
        let down = self.down.iter().map(|d| d.unwrap_or(bandwidth)).collect();
        let rack_uplink = self
            .rack_uplink
            .iter()
            .map(|u| u.unwrap_or(up[0]))
            .collect();
        Topology {
            up,
            down,
            rack: self.rack.clone(),
            rack_uplink,
        }
    }
}

impl NetworkSpec {
    /// True when every host runs at B with no racks.
    pub fn is_uniform(&self) -> bool {
        self.source_upload.is_none()
            && self.upload_limit.is_none()
            && self.fleet.is_none()
            && self.classes.is_empty()
            && self.spread == 0.0
            && self.racks.is_none()
    }

    /// The network for `receivers` receivers at base rate `bandwidth`, drawing class members
    /// and spread from `seed`.
    ///
    /// Panics if a fleet is set with another number of receivers: settings check it.
    pub fn build(&self, receivers: u32, bandwidth: f64, seed: u64) -> Topology {
        if let Some(fleet) = &self.fleet {
            assert_eq!(fleet.receivers(), receivers, "a fleet fixes the host count");
            return fleet.build(bandwidth, self.source_upload, self.upload_limit);
        }
        let n = receivers as usize + 1;
        let mut up = vec![bandwidth; n];
        let mut down = vec![bandwidth; n];
        if !self.classes.is_empty() || self.spread > 0.0 {
            // A generator of its own, so the network does not shift the flows' jitter.
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6E65_7477_6F72_6B00);
            let mut order: Vec<usize> = (1..n).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            let mut next = 0usize;
            for class in &self.classes {
                let count =
                    ((class.share * receivers as f64).round() as usize).min(order.len() - next);
                for &h in &order[next..next + count] {
                    up[h] = class.upload;
                    down[h] = class.download;
                }
                next += count;
            }
            if self.spread > 0.0 {
                for h in 1..n {
                    let f = (self.spread * standard_normal(&mut rng)).exp();
                    up[h] *= f;
                    down[h] *= f;
                }
            }
        }
        if let Some(u) = self.source_upload {
            up[0] = u;
        }
        cap(&mut up, self.upload_limit);
        let racks = self.racks.as_ref().map(|r| {
            let count = r.count.clamp(1, n as u32) as usize;
            let rack = (0..n).map(|h| (h * count / n) as u32).collect();
            (rack, vec![r.uplink; count])
        });
        let (rack, rack_uplink) = racks.unwrap_or_default();
        Topology {
            up,
            down,
            rack,
            rack_uplink,
        }
    }
}

/// Lowers every upload capacity above `limit` to it.
fn cap(up: &mut [f64], limit: Option<f64>) {
    if let Some(l) = limit {
        for u in up {
            *u = u.min(l);
        }
    }
}

/// Box–Muller: one standard normal sample from two uniform ones.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One run's network: capacities per host (index 0 is the source) and, optionally, racks.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// Upload capacity per host, bytes per second.
    pub up: Vec<f64>,
    /// Download capacity per host, bytes per second.
    pub down: Vec<f64>,
    /// Rack of each host; empty when there are no racks.
    pub rack: Vec<u32>,
    /// Uplink capacity of each rack (each direction); empty when there are no racks.
    pub rack_uplink: Vec<f64>,
}

impl Topology {
    /// Number of hosts, the source included.
    pub fn hosts(&self) -> usize {
        self.up.len()
    }

    /// The links of the flow model: host h owns links 2h (up) and 2h+1 (down); rack r owns
    /// links 2·hosts + 2r (out) and 2·hosts + 2r + 1 (in).
    pub fn network(&self) -> Network {
        let mut net = Network::new(&self.up, &self.down);
        for &u in &self.rack_uplink {
            net.add_link(u);
            net.add_link(u);
        }
        net
    }

    /// The links a flow from `from` to `to` crosses, written to `out`; returns how many.
    pub fn links(&self, from: u32, to: u32, out: &mut [u32; 4]) -> usize {
        out[0] = Network::up_link(from);
        out[1] = Network::down_link(to);
        if self.rack.is_empty() {
            return 2;
        }
        let (rf, rt) = (self.rack[from as usize], self.rack[to as usize]);
        if rf == rt {
            return 2;
        }
        let base = 2 * self.hosts() as u32;
        out[2] = base + 2 * rf;
        out[3] = base + 2 * rt + 1;
        4
    }

    /// The fluid lower bound on any schedule's makespan for a file of `size` bytes: the
    /// source must upload it once, the slowest receiver download it once, all receivers
    /// together need C·S of upload from everyone, and each rack without the source must pull
    /// it once through its uplink.
    pub fn lower_bound(&self, size: u64) -> f64 {
        let s = size as f64;
        let c = (self.hosts() - 1) as f64;
        let slowest = self.down[1..].iter().copied().fold(f64::INFINITY, f64::min);
        let total_up: f64 = self.up.iter().sum();
        let mut bound = (s / self.up[0]).max(s / slowest).max(c * s / total_up);
        if !self.rack.is_empty() {
            for (r, &u) in self.rack_uplink.iter().enumerate() {
                let has_receiver = self.rack.iter().skip(1).any(|&x| x as usize == r);
                if r as u32 != self.rack[0] && has_receiver {
                    bound = bound.max(s / u);
                }
            }
        }
        bound
    }
}

/// The `[network]` table of a scenario file, in human units.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// Source upload, such as `10Gbit`.
    pub source: Option<String>,
    /// Log-normal σ of every receiver's capacities.
    pub spread: Option<f64>,
    /// Classes of receivers.
    #[serde(default, rename = "class")]
    pub classes: Vec<ClassSettings>,
    /// Racks.
    pub racks: Option<RackSettings>,
}

/// One `[[network.class]]` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassSettings {
    /// Fraction of the receivers, in (0, 1].
    pub share: f64,
    /// Upload and download rate, unless given separately.
    pub bandwidth: Option<String>,
    /// Upload rate.
    pub upload: Option<String>,
    /// Download rate.
    pub download: Option<String>,
}

/// The `[network.racks]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RackSettings {
    /// Number of racks.
    pub count: u32,
    /// Each rack's uplink rate, each direction.
    pub uplink: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_network_is_uniform() {
        let t = NetworkSpec::default().build(3, 10.0, 1);
        assert_eq!(t.up, vec![10.0; 4]);
        assert_eq!(t.down, vec![10.0; 4]);
        assert!(t.rack.is_empty());
        assert_eq!(t.lower_bound(100), 10.0);
    }

    #[test]
    fn a_class_gets_its_share_of_receivers() {
        let spec = NetworkSpec {
            classes: vec![HostClass {
                share: 0.3,
                upload: 1.0,
                download: 2.0,
            }],
            ..NetworkSpec::default()
        };
        let t = spec.build(10, 10.0, 7);
        assert_eq!(t.up[1..].iter().filter(|&&u| u == 1.0).count(), 3);
        assert_eq!(t.down[1..].iter().filter(|&&d| d == 2.0).count(), 3);
        assert_eq!(t.up[0], 10.0, "the source is not a receiver");
        // The slowest download bounds the makespan.
        assert_eq!(t.lower_bound(100), 50.0);
    }

    #[test]
    fn racks_group_consecutive_hosts_and_cross_rack_flows_use_uplinks() {
        let spec = NetworkSpec {
            racks: Some(RackSpec {
                count: 2,
                uplink: 5.0,
            }),
            ..NetworkSpec::default()
        };
        let t = spec.build(3, 10.0, 1);
        assert_eq!(t.rack, vec![0, 0, 1, 1]);
        let mut out = [0; 4];
        assert_eq!(t.links(0, 1, &mut out), 2);
        assert_eq!(t.links(1, 2, &mut out), 4);
        assert_eq!(out, [2, 5, 8, 11]);
        // Rack 1 must pull 100 bytes through a 5 B/s uplink.
        assert_eq!(t.lower_bound(100), 20.0);
    }

    #[test]
    fn an_upload_limit_caps_every_upload_and_no_download() {
        let spec = NetworkSpec {
            source_upload: Some(40.0),
            upload_limit: Some(4.0),
            ..NetworkSpec::default()
        };
        let t = spec.build(3, 10.0, 1);
        assert_eq!(t.up, vec![4.0; 4]);
        assert_eq!(t.down, vec![10.0; 4]);
        assert!(!spec.is_uniform());
        let loose = NetworkSpec {
            upload_limit: Some(20.0),
            ..NetworkSpec::default()
        };
        assert_eq!(loose.build(3, 10.0, 1).up, vec![10.0; 4]);
    }

    #[test]
    fn the_spread_is_seeded_and_keeps_the_median_near_b() {
        let spec = NetworkSpec {
            spread: 0.5,
            ..NetworkSpec::default()
        };
        let a = spec.build(1001, 100.0, 3);
        assert_eq!(a, spec.build(1001, 100.0, 3));
        assert_ne!(a, spec.build(1001, 100.0, 4));
        let mut ups = a.up[1..].to_vec();
        ups.sort_by(f64::total_cmp);
        let median = ups[ups.len() / 2];
        assert!((median / 100.0 - 1.0).abs() < 0.1, "median {median}");
    }
}
