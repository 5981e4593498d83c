//! What the host snippets print, read on the controller: the receivers' `at`/`end` reports,
//! the pid lines snippets start with, and stderr turned into one-line reasons.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::core::HostId;

use super::super::transport::ByteCounters;

/// One line of a receiver's reports (see [`remote::stream_receive`](super::super::remote::stream_receive)).
#[derive(Debug, PartialEq)]
pub(super) enum Report {
    /// `at N`: N bytes written so far.
    At(u64),
    /// `end N DIGEST`: the input ended after N bytes, whose SHA-256 is DIGEST.
    End(u64, String),
    /// `part I DIGEST`: part I of a hop over several streams ended, and the SHA-256 of what
    /// was written of it is DIGEST (see `remote::part_receive`).
    Part(u64, String),
}

impl Report {
    pub(super) fn parse(line: &str) -> Option<Report> {
        let mut words = line.split_whitespace();
        let (kind, n) = (words.next()?, words.next()?.parse().ok()?);
        match kind {
            "at" => Some(Report::At(n)),
            "end" => Some(Report::End(n, words.next()?.to_string())),
            "part" => Some(Report::Part(n, words.next()?.to_string())),
            _ => None,
        }
    }
}

/// What a whole-file hop's receivers reported at their end.
#[derive(Debug, Default)]
pub(super) struct Ends {
    /// The `end` report: the bytes written and their digest.
    pub end: Option<(u64, String)>,
    /// The `part` reports of a hop over several streams, by part.
    pub parts: Vec<(u64, String)>,
}

/// Where a receiver's `at` reports go: the host's byte counter, never above `cap`.
pub(super) type Progress<'a> = (&'a ByteCounters, HostId, u64);

/// Reads a whole-file hop's reports to their end (see
/// [`remote::stream_receive`](super::super::remote::stream_receive) and
/// [`remote::part_receive`](super::super::remote::part_receive)), passing byte counts to
/// `progress` if given and the receivers' pid lines to `on_pid`.
pub(super) async fn read_reports<R: AsyncRead + Unpin>(
    mut stdout: BufReader<R>,
    progress: Option<Progress<'_>>,
    on_pid: &(dyn Fn(u32) + Sync),
) -> Ends {
    let mut line = String::new();
    let mut ends = Ends::default();
    loop {
        line.clear();
        match stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => return ends,
            Ok(_) => {}
        }
        match Report::parse(&line) {
            Some(Report::At(n)) => {
                if let Some((c, to, cap)) = progress {
                    c.set(to, n.min(cap));
                }
            }
            Some(Report::End(n, digest)) => ends.end = Some((n, digest)),
            Some(Report::Part(i, digest)) => ends.parts.push((i, digest)),
            None => {
                if let Ok(pid) = line.trim().parse() {
                    on_pid(pid);
                }
            }
        }
    }
}

/// Reads the `echo $$` line a remote snippet starts with.
pub(super) async fn read_pid<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<u32> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    line.trim().parse().ok()
}

/// A line of a chain relay's pipeline before it is running (see `remote::stream_relay`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RelayLine {
    /// `relay PID`: the relay itself, once it has opened the copy it follows.
    Relay(u32),
    /// A bare `PID`: the receiver at the far end.
    Receiver(u32),
    /// An `at N` report of that receiver, which may come before the relay's line while the
    /// relay waits for its copy.
    Progress,
}

impl RelayLine {
    /// Parses one line; `None` for anything else (an `end` report, an error).
    pub(super) fn parse(line: &str) -> Option<RelayLine> {
        let line = line.trim();
        if let Some(p) = line.strip_prefix("relay ") {
            return p.parse().ok().map(RelayLine::Relay);
        }
        if line.starts_with("at ") {
            return Some(RelayLine::Progress);
        }
        line.parse().ok().map(RelayLine::Receiver)
    }
}

/// Collects a child's stderr in the background, keeping the last 8 KiB; with `tap` (a
/// label, given with `-v`), each line is also traced as it arrives.
pub(super) fn collect(
    stderr: Option<openssh::ChildStderr>,
    tap: Option<String>,
) -> JoinHandle<String> {
    tokio::spawn(async move {
        let Some(mut e) = stderr else {
            return String::new();
        };
        let mut kept = Vec::new();
        let mut line = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = e.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Some(label) = &tap {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        trace_line(label, &line);
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 8192 {
                kept.drain(..kept.len() - 8192);
            }
        }
        if let (Some(label), false) = (&tap, line.is_empty()) {
            trace_line(label, &line);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// Traces one line a remote job wrote to stderr.
pub(super) fn trace_line(label: &str, line: &[u8]) {
    crate::run::say::trace(|| format!("{label} stderr: {}", String::from_utf8_lossy(line)));
}

/// The last meaningful lines of a command's stderr, on one line.
pub(super) fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        // When its master connection is gone, the mux client falls back to connecting to
        // the placeholder host "none": noise that hides the real cause.
        .filter(|l| !l.is_empty() && !l.contains("Could not resolve hostname none"))
        .collect();
    lines[lines.len().saturating_sub(2)..].join("; ")
}

pub(super) fn failure_text(stderr: &[u8], code: Option<i32>) -> String {
    let text = last_lines(&String::from_utf8_lossy(stderr));
    match (text.is_empty(), code) {
        (false, _) => text,
        (true, Some(c)) => format!("remote command exited with status {c}"),
        (true, None) => "remote command was killed".into(),
    }
}

pub(super) fn join(a: &str, b: &str) -> String {
    let a = last_lines(a);
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a,
        _ => format!("{a}; {b}"),
    }
}

/// An error and its causes on one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = last_lines(&e.to_string());
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        let t = t.trim();
        if !t.is_empty() && !s.contains(t) {
            s.push_str(": ");
            s.push_str(&last_lines(t));
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{RelayLine, Report};

    #[test]
    fn relay_lines_name_the_relay_its_receiver_or_a_report() {
        assert_eq!(RelayLine::parse("relay 42\n"), Some(RelayLine::Relay(42)));
        assert_eq!(RelayLine::parse("77\n"), Some(RelayLine::Receiver(77)));
        assert_eq!(RelayLine::parse("at 0\n"), Some(RelayLine::Progress));
        assert_eq!(RelayLine::parse("end 0 abc\n"), None);
        assert_eq!(RelayLine::parse("relay x\n"), None);
        assert_eq!(RelayLine::parse("\n"), None);
    }

    #[test]
    fn receiver_reports_parse_and_anything_else_is_ignored() {
        assert_eq!(Report::parse("at 1048576\n"), Some(Report::At(1 << 20)));
        assert_eq!(
            Report::parse("end 13 0c7b\n"),
            Some(Report::End(13, "0c7b".into()))
        );
        assert_eq!(
            Report::parse("part 2 0c7b\n"),
            Some(Report::Part(2, "0c7b".into()))
        );
        for bad in ["", "at", "at x", "end 13", "part 1", "ok 0", "12345"] {
            assert_eq!(Report::parse(bad), None, "{bad:?}");
        }
    }
}
