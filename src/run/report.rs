//! The end of a run on paper: the final table and the per-host CSV report.

use std::io::Write;

use super::driver::{HostStatus, RunOutcome};
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
/// `host,from,start_s,end_s,bytes,status,error,digest` (`digest`: the tool the host
/// computed SHA-256 with, `openssl` or `sha256sum`).
pub fn write_csv<W: Write>(w: W, hosts: &[HostSpec], outcome: &RunOutcome) -> csv::Result<()> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "host", "from", "start_s", "end_s", "bytes", "status", "error", "digest",
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
        ])?;
    }
    out.flush()?;
    Ok(())
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
        let note = match (&r.error, r.from) {
            (Some(e), _) => e.clone(),
            (None, Some(f)) => format!("from {}", host_name(hosts, f)),
            (None, None) => String::new(),
        };
        s.push_str(&format!(
            "{:<width$}  {status:<11}  {end:>8}  {:>10}  {note}\n",
            spec.to_string(),
            crate::units::format_size(r.bytes)
        ));
    }
    let ok = outcome
        .hosts
        .iter()
        .filter(|r| r.status.is_some_and(HostStatus::is_ok))
        .count();
    s.push_str(&format!(
        "{ok}/{} hosts done in {:.2}s{}\n",
        outcome.hosts.len(),
        outcome.elapsed.as_secs_f64(),
        if outcome.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    ));
    s
}
