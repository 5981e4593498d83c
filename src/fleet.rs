//! The host list and fleet file: `[user@]host[:port]` specs from `-H` and hosts files, and
//! what a fleet file may say about each host besides: its upload and download rates and its
//! rack, and the same for the source.
//!
//! A line is `HOST [DEST] [KEY=VALUE...]`, with keys `up`, `down`, `rate` (both) and
//! `rack`. Two directives describe what is not a receiver: `@source KEY=VALUE...` (the
//! machine bounce-run runs on) and `@rack NAME uplink=RATE` (a rack's shared uplink, each
//! direction). bounce-run reads the addresses and DESTs; the rates and racks feed the
//! simulator's predictions (`bounce-sim --hosts-file`, `bounce-run --dry-run` and
//! `--strategy auto`).

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a host list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The hosts file could not be read.
    #[error("cannot read hosts file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A host spec is not `[user@]host[:port]`.
    #[error("{origin}: bad host '{spec}': {reason}")]
    Malformed {
        /// Where the spec came from: `-H` or `FILE:LINE`.
        origin: String,
        /// The offending spec.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A per-host DEST override is not an absolute path to a file (see [`dest_problem`]).
    #[error("{origin}: destination '{dest}' for host '{spec}' {reason}")]
    BadDest {
        /// Where the spec came from.
        origin: String,
        /// The host.
        spec: String,
        /// The offending path.
        dest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host appears twice.
    #[error("{origin}: host '{spec}' is listed twice (first at {first})")]
    Duplicate {
        /// Where the second occurrence came from.
        origin: String,
        /// The host.
        spec: String,
        /// Where the first occurrence came from.
        first: String,
    },
    /// A `KEY=VALUE` attribute or an `@` directive is wrong.
    #[error("{origin}: '{field}': {reason}")]
    Attribute {
        /// Where it came from: `FILE:LINE`.
        origin: String,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No host at all.
    #[error("no hosts given (use -H host[,host...] or --hosts-file FILE with at least one host)")]
    Empty,
}

/// What is wrong with `dest` as a DEST, the global one or a host's: it must be an absolute
/// path that names a file (not `/`, nor one ending in `/`, `/.` or `/..`), and hold no NUL
/// or newline (the hosts' answers are read line by line).
pub fn dest_problem(dest: &str) -> Option<&'static str> {
    if !dest.starts_with('/') {
        Some("is not an absolute path")
    } else if dest.ends_with('/') || dest.ends_with("/.") || dest.ends_with("/..") {
        Some("names a directory, not a file")
    } else if dest.contains('\0') || dest.contains('\n') {
        Some("holds a NUL or newline character")
    } else {
        None
    }
}

/// What a fleet file says about one host beyond its address. Rates left unset are the
/// run's `--bandwidth`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostAttrs {
    /// Upload rate, bytes per second.
    pub up: Option<f64>,
    /// Download rate, bytes per second.
    pub down: Option<f64>,
    /// The rack it sits in, by name.
    pub rack: Option<String>,
}

impl HostAttrs {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == HostAttrs::default()
    }

    /// Sets one `KEY=VALUE` field; `origin` is used in errors.
    fn set(&mut self, field: &str, origin: &str) -> Result<(), HostsError> {
        let bad = |reason: String| HostsError::Attribute {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE (up, down, rate or rack)".into()))?;
        match key {
            "up" => self.up = Some(positive_rate(value).map_err(bad)?),
            "down" => self.down = Some(positive_rate(value).map_err(bad)?),
            "rate" => {
                let r = positive_rate(value).map_err(bad)?;
                self.up = Some(r);
                self.down = Some(r);
            }
            "rack" => self.rack = Some(rack_name(value).map_err(bad)?),
            _ => {
                return Err(bad(format!(
                    "unknown attribute '{key}' (expected up, down, rate or rack)"
                )))
            }
        }
        Ok(())
    }
}

fn positive_rate(text: &str) -> Result<f64, String> {
    let r = crate::units::parse_rate(text).map_err(|e| e.to_string())?;
    if !(r.is_finite() && r > 0.0) {
        return Err(format!("rate '{text}' must be greater than 0"));
    }
    Ok(r)
}

fn rack_name(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.chars().all(is_name_char) {
        return Err(format!(
            "rack name '{text}' may hold only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(text.to_string())
}

/// A rack's shared uplink, from an `@rack NAME uplink=RATE` line.
#[derive(Clone, Debug, PartialEq)]
pub struct RackUplink {
    /// The rack's name, as hosts' `rack=` give it.
    pub name: String,
    /// Capacity of the uplink in each direction, bytes per second.
    pub uplink: f64,
    /// Where it was given (`FILE:LINE`).
    pub origin: String,
}

/// The whole host list: the receivers in order, and what the fleet file said about the
/// source and the racks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fleet {
    /// The receivers, in the order given.
    pub hosts: Vec<HostSpec>,
    /// The source's attributes, from an `@source` line.
    pub source: HostAttrs,
    /// Rack uplinks, from `@rack` lines.
    pub racks: Vec<RackUplink>,
}

/// One receiver as the user named it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSpec {
    /// Login user, if given.
    pub user: Option<String>,
    /// Host name, ssh_config alias or address (IPv6 without brackets).
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Destination path for this host, overriding DEST.
    pub dest: Option<String>,
    /// Where it was listed (`-H` or `FILE:LINE`), for messages.
    pub origin: String,
    /// Rates and rack from a fleet file; empty for `-H` hosts.
    pub attrs: HostAttrs,
}

impl HostSpec {
    /// Parses `[user@]host[:port]` or `[user@][v6addr][:port]`; `origin` is used in errors.
    pub fn parse(spec: &str, origin: &str) -> Result<HostSpec, HostsError> {
        let bad = |reason: &str| HostsError::Malformed {
            origin: origin.to_string(),
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if spec.starts_with('-') {
            return Err(bad("host names may not start with '-'"));
        }
        let (user, rest) = match spec.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, spec),
        };
        if let Some(u) = user {
            if u.is_empty() || u.starts_with('-') || !u.chars().all(is_name_char) {
                return Err(bad("user names may hold only letters, digits, '.', '_' and '-' and may not start with '-'"));
            }
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':port' after ']'"))?,
                ),
            };
            if addr.is_empty()
                || !addr.chars().all(|c| {
                    c.is_ascii_hexdigit() || ":.%".contains(c) || c.is_ascii_alphanumeric()
                })
            {
                return Err(bad("not an IPv6 address"));
            }
            (addr, port)
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: a port needs the bracket form.
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&n| n != 0)
                    .ok_or_else(|| bad("port must be a number from 1 to 65535"))?,
            ),
        };
        if host.is_empty() {
            return Err(bad("empty host name"));
        }
        if host.starts_with('-') {
            return Err(bad("host names may not start with '-'"));
        }
        if !host
            .chars()
            .all(|c| is_name_char(c) || c == ':' || c == '%')
        {
            return Err(bad(
                "host names may hold only letters, digits, '.', '_', '-' (and ':' or '%' in IPv6 addresses)",
            ));
        }
        Ok(HostSpec {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            dest: None,
            origin: origin.to_string(),
            attrs: HostAttrs::default(),
        })
    }

    /// The identity used to find duplicates.
    fn key(&self) -> (Option<String>, String, Option<u16>) {
        (self.user.clone(), self.host.to_ascii_lowercase(), self.port)
    }

    /// The destination on this host: its override, or `dest`.
    pub fn dest_or<'a>(&'a self, dest: &'a str) -> &'a str {
        self.dest.as_deref().unwrap_or(dest)
    }
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Accumulates hosts from `-H` lists and hosts files, in order, rejecting duplicates.
#[derive(Debug, Default)]
pub struct HostList {
    fleet: Fleet,
    /// Where the `@source` line was, once one has been read.
    source_origin: Option<String>,
}

impl HostList {
    /// An empty list.
    pub fn new() -> Self {
        HostList::default()
    }

    fn push(&mut self, h: HostSpec) -> Result<(), HostsError> {
        if let Some(first) = self.fleet.hosts.iter().find(|o| o.key() == h.key()) {
            return Err(HostsError::Duplicate {
                origin: h.origin.clone(),
                spec: h.to_string(),
                first: first.origin.clone(),
            });
        }
        self.fleet.hosts.push(h);
        Ok(())
    }

    /// Adds the hosts of one `-H host[,host...]` argument.
    pub fn add_arg(&mut self, arg: &str) -> Result<(), HostsError> {
        for part in arg.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(HostsError::Malformed {
                    origin: "-H".into(),
                    spec: arg.to_string(),
                    reason: "empty host in list".into(),
                });
            }
            self.push(HostSpec::parse(part, "-H")?)?;
        }
        Ok(())
    }

    /// Adds the hosts of a hosts file's text; `name` is used in messages.
    pub fn add_text(&mut self, name: &str, text: &str) -> Result<(), HostsError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace().peekable();
            let Some(first) = fields.next() else {
                continue;
            };
            let origin = format!("{name}:{}", i + 1);
            match first {
                "@source" => self.add_source(fields, &origin)?,
                "@rack" => self.add_rack(fields, &origin)?,
                directive if directive.starts_with('@') => {
                    return Err(HostsError::Attribute {
                        origin,
                        field: directive.to_string(),
                        reason: "unknown directive (expected @source or @rack)".into(),
                    })
                }
                spec => {
                    let mut h = HostSpec::parse(spec, &origin)?;
                    // A DEST is a path, an attribute a KEY=VALUE: a DEST comes first.
                    if let Some(dest) = fields.next_if(|f| f.starts_with('/') || !f.contains('=')) {
                        if let Some(reason) = dest_problem(dest) {
                            return Err(HostsError::BadDest {
                                origin,
                                spec: spec.to_string(),
                                dest: dest.to_string(),
                                reason,
                            });
                        }
                        h.dest = Some(dest.to_string());
                    }
                    for field in fields {
                        h.attrs.set(field, &origin)?;
                    }
                    self.push(h)?;
                }
            }
        }
        Ok(())
    }

    fn add_source<'a>(
        &mut self,
        fields: impl Iterator<Item = &'a str>,
        origin: &str,
    ) -> Result<(), HostsError> {
        if let Some(first) = &self.source_origin {
            return Err(HostsError::Attribute {
                origin: origin.to_string(),
                field: "@source".into(),
                reason: format!("the source is described twice (first at {first})"),
            });
        }
        for field in fields {
            self.fleet.source.set(field, origin)?;
        }
        self.source_origin = Some(origin.to_string());
        Ok(())
    }

    fn add_rack<'a>(
        &mut self,
        mut fields: impl Iterator<Item = &'a str>,
        origin: &str,
    ) -> Result<(), HostsError> {
        let bad = |field: &str, reason: String| HostsError::Attribute {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        let usage = || bad("@rack", "expected '@rack NAME uplink=RATE'".into());
        let name = fields.next().ok_or_else(usage)?;
        let name = rack_name(name).map_err(|r| bad(name, r))?;
        let field = fields.next().ok_or_else(usage)?;
        let uplink = match field.split_once('=') {
            Some(("uplink", v)) => positive_rate(v).map_err(|r| bad(field, r))?,
            _ => return Err(usage()),
        };
        if let Some(extra) = fields.next() {
            return Err(bad(extra, "unexpected field after uplink=RATE".into()));
        }
        if let Some(first) = self.fleet.racks.iter().find(|r| r.name == name) {
            return Err(bad(
                "@rack",
                format!(
                    "rack '{name}' is described twice (first at {})",
                    first.origin
                ),
            ));
        }
        self.fleet.racks.push(RackUplink {
            name,
            uplink,
            origin: origin.to_string(),
        });
        Ok(())
    }

    /// Reads and adds a hosts file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), HostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_text(&path.display().to_string(), &text)
    }

    /// The fleet, failing when it has no hosts.
    pub fn finish(self) -> Result<Fleet, HostsError> {
        if self.fleet.hosts.is_empty() {
            return Err(HostsError::Empty);
        }
        Ok(self.fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostSpec {
        HostSpec::parse(s, "-H").unwrap()
    }

    #[test]
    fn specs_parse_user_host_and_port() {
        let h = p("root@web-1.example:2222");
        assert_eq!(h.user.as_deref(), Some("root"));
        assert_eq!(h.host, "web-1.example");
        assert_eq!(h.port, Some(2222));
        assert_eq!(p("alias").port, None);
        assert_eq!(p("127.0.0.1:22").host, "127.0.0.1");
    }

    #[test]
    fn ipv6_addresses_take_brackets_for_ports() {
        let h = p("[::1]:2200");
        assert_eq!((h.host.as_str(), h.port), ("::1", Some(2200)));
        assert_eq!(h.to_string(), "[::1]:2200");
        let h = p("u@fe80::1");
        assert_eq!((h.host.as_str(), h.port), ("fe80::1", None));
        assert_eq!(p("[::1]").port, None);
    }

    #[test]
    fn option_injection_and_shell_characters_are_rejected() {
        for bad in [
            "-oProxyCommand=x",
            "u@-host",
            "-u@host",
            "host;rm",
            "a b",
            "h$(x)",
            "h:0",
            "h:99999",
            "h:",
            "@h",
            "[::1",
            "[::1]x",
        ] {
            assert!(HostSpec::parse(bad, "-H").is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn hosts_file_takes_comments_blank_lines_and_dest_overrides() {
        let mut l = HostList::new();
        l.add_text("hosts", "# all\n\na  /data/x.img # first\n  b:2200\n")
            .unwrap();
        let hs = l.finish().unwrap().hosts;
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].dest.as_deref(), Some("/data/x.img"));
        assert_eq!(hs[1].port, Some(2200));
        assert_eq!(hs[1].origin, "hosts:4");
    }

    #[test]
    fn duplicate_hosts_are_an_error_naming_both_places() {
        let mut l = HostList::new();
        l.add_arg("a,b").unwrap();
        let e = l.add_text("hosts", "\nb\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "hosts:2: host 'b' is listed twice (first at -H)"
        );
    }

    #[test]
    fn relative_override_and_empty_lists_are_errors() {
        let mut l = HostList::new();
        assert!(matches!(
            l.add_text("f", "a rel/path"),
            Err(HostsError::BadDest { .. })
        ));
        assert!(matches!(HostList::new().finish(), Err(HostsError::Empty)));
        assert!(HostList::new().add_arg("a,,b").is_err());
    }

    #[test]
    fn fleet_lines_take_rates_racks_and_directives() {
        let mut l = HostList::new();
        l.add_text(
            "fleet",
            "@source up=25Gbit rack=r1\n@rack r1 uplink=40Gbit\n@rack r2 uplink=10Gbit\n\
             web7 up=25Gbit down=10Gbit rack=r2\nweb8 /srv/x rate=1Gbit rack=r1 # slow\nweb9\n",
        )
        .unwrap();
        let f = l.finish().unwrap();
        assert_eq!(f.source.up, Some(25e9 / 8.0));
        assert_eq!(f.source.rack.as_deref(), Some("r1"));
        assert_eq!(f.racks.len(), 2);
        assert_eq!(
            (f.racks[1].name.as_str(), f.racks[1].uplink),
            ("r2", 10e9 / 8.0)
        );
        let h = &f.hosts;
        assert_eq!(
            (h[0].attrs.up, h[0].attrs.down),
            (Some(25e9 / 8.0), Some(10e9 / 8.0))
        );
        assert_eq!(h[1].dest.as_deref(), Some("/srv/x"));
        assert_eq!(
            (h[1].attrs.up, h[1].attrs.down),
            (Some(1e9 / 8.0), Some(1e9 / 8.0))
        );
        assert!(h[2].attrs.is_empty());
    }

    #[test]
    fn bad_attribute_lines_name_the_line_and_the_field() {
        for (text, want) in [
            ("a\nb up=fast\n", "f:2: 'up=fast': "),
            (
                "a up=0Gbit\n",
                "f:1: 'up=0Gbit': rate '0Gbit' must be greater than 0",
            ),
            (
                "a speed=1Gbit\n",
                "f:1: 'speed=1Gbit': unknown attribute 'speed'",
            ),
            ("a /x rack=r1 oops\n", "f:1: 'oops': expected KEY=VALUE"),
            (
                "a rack=r$1\n",
                "f:1: 'rack=r$1': rack name 'r$1' may hold only",
            ),
            (
                "@source up=1Gbit\n@source down=1Gbit\n",
                "f:2: '@source': the source is described twice (first at f:1)",
            ),
            (
                "@rack r1\n",
                "f:1: '@rack': expected '@rack NAME uplink=RATE'",
            ),
            (
                "@rack r1 uplink=1Gbit\n@rack r1 uplink=2Gbit\n",
                "f:2: '@rack': rack 'r1' is described twice",
            ),
            (
                "@racks r1 uplink=1Gbit\n",
                "f:1: '@racks': unknown directive",
            ),
        ] {
            let e = HostList::new().add_text("f", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
