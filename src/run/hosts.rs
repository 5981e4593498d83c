//! The host list: parsing `[user@]host[:port]` specs from `-H` and hosts files.

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

/// One receiver as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    hosts: Vec<HostSpec>,
}

impl HostList {
    /// An empty list.
    pub fn new() -> Self {
        HostList::default()
    }

    fn push(&mut self, h: HostSpec) -> Result<(), HostsError> {
        if let Some(first) = self.hosts.iter().find(|o| o.key() == h.key()) {
            return Err(HostsError::Duplicate {
                origin: h.origin.clone(),
                spec: h.to_string(),
                first: first.origin.clone(),
            });
        }
        self.hosts.push(h);
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
            let mut fields = line.split_whitespace();
            let Some(spec) = fields.next() else {
                continue;
            };
            let origin = format!("{name}:{}", i + 1);
            let mut h = HostSpec::parse(spec, &origin)?;
            if let Some(dest) = fields.next() {
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
            if let Some(extra) = fields.next() {
                return Err(HostsError::Malformed {
                    origin,
                    spec: spec.to_string(),
                    reason: format!("unexpected third field '{extra}' (expected: host [DEST])"),
                });
            }
            self.push(h)?;
        }
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

    /// The hosts, failing when there are none.
    pub fn finish(self) -> Result<Vec<HostSpec>, HostsError> {
        if self.hosts.is_empty() {
            return Err(HostsError::Empty);
        }
        Ok(self.hosts)
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
        let hs = l.finish().unwrap();
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
}
