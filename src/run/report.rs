//! The end of a run on paper: the final table, the per-host CSV report, and both as one
//! JSON document (`--json`).

use std::io::Write;

use serde::Serialize;

use super::driver::{HostRecord, HostStatus, RunOutcome};
use super::plan::Plan;
use crate::fleet::HostSpec;

/// Name of a host in reports: host 0 is the controller, others as the user wrote them.
fn host_name(hosts: &[HostSpec], id: crate::core::HostId) -> String {
    if id.0 == 0 {
        "controller".to_string()
    } else {
        hosts[id.index() - 1].to_string()
    }
}

/// Writes the CSV report: one row per receiver with the columns
/// `host,from,start_s,end_s,bytes,status,error,digest,then_status,then_output` (`digest`: the
/// tool the host computed SHA-256 with, `openssl` or `sha256sum`; `then_status`: `--then`'s
/// exit status, empty when it did not run; `then_output`: its last lines, or why it could
/// not run).
pub fn write_csv<W: Write>(w: W, hosts: &[HostSpec], outcome: &RunOutcome) -> csv::Result<()> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "host",
        "from",
        "start_s",
        "end_s",
        "bytes",
        "status",
        "error",
        "digest",
        "then_status",
        "then_output",
    ])?;
    for (spec, r) in hosts.iter().zip(&outcome.hosts) {
        let secs = |d: Option<std::time::Duration>| {
            d.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64()))
        };
        out.write_record([
            spec.to_string(),
            r.from.map_or(String::new(), |f| host_name(hosts, f)),
            secs(r.start),
            secs(r.end),
            r.bytes.to_string(),
            r.status.map_or("unknown", HostStatus::as_str).to_string(),
            r.error.clone().unwrap_or_default(),
            r.hasher.clone().unwrap_or_default(),
            then_status(r).map_or(String::new(), |s| s.to_string()),
            then_output(r),
        ])?;
    }
    out.flush()?;
    Ok(())
}

/// `--then`'s exit status on a host, if it ran.
fn then_status(r: &HostRecord) -> Option<i32> {
    r.then.as_ref()?.as_ref().ok().map(|t| t.status)
}

/// `--then`'s last lines on a host, or why it could not run; empty if it was not run.
fn then_output(r: &HostRecord) -> String {
    match &r.then {
        Some(Ok(t)) => t.output.clone(),
        Some(Err(e)) => format!("could not run: {e}"),
        None => String::new(),
    }
}

/// The final table, one line per receiver, then a summary line.
pub fn table(hosts: &[HostSpec], outcome: &RunOutcome) -> String {
    let width = hosts
        .iter()
        .map(|h| h.to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<width$}  {:<11}  {:>8}  {:>10}  {}\n",
        "host", "status", "end_s", "bytes", "from / error"
    );
    for (spec, r) in hosts.iter().zip(&outcome.hosts) {
        let status = r.status.map_or("unknown", HostStatus::as_str);
        let end = r
            .end
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()));
        let mut note = match (&r.error, r.from) {
            (Some(e), _) => e.clone(),
            (None, Some(f)) => format!("from {}", host_name(hosts, f)),
            (None, None) => String::new(),
        };
        match &r.then {
            Some(Ok(t)) => note += &format!("; --then exited {}", t.status),
            Some(Err(_)) => note += "; --then could not run",
            None => {}
        }
        s.push_str(&format!(
            "{:<width$}  {status:<11}  {end:>8}  {:>10}  {note}\n",
            spec.to_string(),
            crate::units::format_size(r.bytes)
        ));
    }
    s.push_str(&summary(outcome));
    s
}

/// The table's last line: the hosts done out of all, and the run's time.
pub fn summary(outcome: &RunOutcome) -> String {
    let ok = outcome
        .hosts
        .iter()
        .filter(|r| r.status.is_some_and(HostStatus::is_ok))
        .count();
    format!(
        "{ok}/{} hosts done in {:.2}s{}\n",
        outcome.hosts.len(),
        outcome.elapsed.as_secs_f64(),
        if outcome.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    )
}

/// One receiver in the JSON document: the CSV report's columns.
#[derive(Debug, Serialize)]
pub struct HostJson {
    /// The host as the user wrote it.
    pub host: String,
    /// `verified`, `up-to-date`, `failed`, `interrupted` or `unknown`.
    pub status: &'static str,
    /// The host that sent it its last piece (`controller` for the source).
    pub from: Option<String>,
    /// When its first hop started, seconds from the start.
    pub start_s: Option<f64>,
    /// When it was verified or given up, seconds from the start.
    pub end_s: Option<f64>,
    /// Bytes it received.
    pub bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The tool it computed SHA-256 with.
    pub digest: Option<String>,
    /// `--then`'s exit status, if it ran.
    pub then_status: Option<i32>,
    /// `--then`'s last lines, or why it could not run; `null` when it was not run.
    pub then_output: Option<String>,
}

/// The run as a whole in the JSON document.
#[derive(Debug, Serialize)]
pub struct SummaryJson {
    /// The strategy that ran.
    pub strategy: &'static str,
    /// SRC's size in bytes.
    pub size: u64,
    /// Receivers.
    pub hosts: usize,
    /// Receivers verified now or already up to date.
    pub ok: usize,
    /// Receivers that failed.
    pub failed: usize,
    /// Receivers where `--then` exited non-zero or could not run.
    pub then_failed: usize,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// True when a signal stopped the run.
    pub interrupted: bool,
    /// What cleanup could not remove, one line each.
    pub cleanup: Vec<String>,
    /// For a directory SRC or `--sparse`: the files the archive held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesSent>,
}

/// For a directory SRC or `--sparse`: how many of SRC's regular files the run sent (a rerun
/// sends only those some host lacked), and their bytes, holes included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FilesSent {
    /// Files in the archive.
    pub sent: usize,
    /// Their bytes.
    pub sent_bytes: u64,
    /// SRC's regular files.
    pub total: usize,
    /// Their bytes.
    pub total_bytes: u64,
}

impl std::fmt::Display for FilesSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} files ({} of {})",
            self.sent,
            self.total,
            crate::units::format_size(self.sent_bytes),
            crate::units::format_size(self.total_bytes)
        )
    }
}

/// The document `--json` prints.
#[derive(Debug, Serialize)]
pub struct RunJson {
    /// The run as a whole.
    pub summary: SummaryJson,
    /// One entry per receiver, in the plan's order.
    pub hosts: Vec<HostJson>,
}

impl RunJson {
    /// The document for `outcome`, a run of `plan` that sent `files` of a tree.
    pub fn new(plan: &Plan, outcome: &RunOutcome, files: Option<FilesSent>) -> Self {
        let hosts = &plan.hosts;
        let host = |(spec, r): (&HostSpec, &HostRecord)| HostJson {
            host: spec.to_string(),
            status: r.status.map_or("unknown", HostStatus::as_str),
            from: r.from.map(|f| host_name(hosts, f)),
            start_s: r.start.map(|d| d.as_secs_f64()),
            end_s: r.end.map(|d| d.as_secs_f64()),
            bytes: r.bytes,
            error: r.error.clone(),
            digest: r.hasher.clone(),
            then_status: then_status(r),
            then_output: r.then.is_some().then(|| then_output(r)),
        };
        let count = |want: fn(HostStatus) -> bool| {
            outcome
                .hosts
                .iter()
                .filter(|r| r.status.is_some_and(want))
                .count()
        };
        RunJson {
            summary: SummaryJson {
                strategy: plan.kind.name(),
                size: plan.size,
                hosts: hosts.len(),
                ok: count(HostStatus::is_ok),
                failed: count(|s| s == HostStatus::Failed),
                then_failed: outcome
                    .hosts
                    .iter()
                    .filter(|r| {
                        matches!(&r.then, Some(Err(_))) || then_status(r).is_some_and(|s| s != 0)
                    })
                    .count(),
                elapsed_s: outcome.elapsed.as_secs_f64(),
                interrupted: outcome.interrupted,
                cleanup: outcome.cleanup.iter().map(ToString::to_string).collect(),
                files,
            },
            hosts: hosts.iter().zip(&outcome.hosts).map(host).collect(),
        }
    }
}

/// `--json`'s document for `outcome`, a run of `plan` that sent `files` of a tree, with a
/// final newline.
pub fn json(plan: &Plan, outcome: &RunOutcome, files: Option<FilesSent>) -> String {
    let mut s = serde_json::to_string_pretty(&RunJson::new(plan, outcome, files))
        .expect("the report holds only strings and numbers");
    s.push('\n');
    s
}
