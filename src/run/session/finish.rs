//! The end of a session that ran: the `--report` CSV, the table or `--json` on stdout, and
//! everything that makes the exit status other than 0.

use super::super::cli::Cli;
use super::super::plan::Plan;
use super::super::{report, say, tree, HostStatus, RunOutcome};
use super::RunError;

/// The end of a run that went to its end: the `--report` CSV, the table (or `--json`) on
/// stdout, then whatever makes the exit status other than 0.
pub(super) fn finish(
    cli: &Cli,
    plan: &Plan,
    outcome: &RunOutcome,
    files: Option<report::FilesSent>,
    manifest: Option<&tree::Manifest>,
) -> Result<(), RunError> {
    let mut why = Vec::new();
    // The report first: a closed stdout (`| head`) must not cost it.
    if let Some(p) = &cli.report {
        let mut csv = Vec::new();
        let written = report::write_csv(&mut csv, &plan.hosts, outcome)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::report::write_atomically(p, &csv).map_err(|e| e.to_string()));
        if let Err(e) = written {
            why.push(format!("--report: {e}"));
        }
    }
    {
        use std::io::Write as _;
        let text = if cli.json {
            report::json(plan, outcome, files)
        } else {
            let mut t = report::table(&plan.hosts, outcome);
            if let Some(f) = files {
                t.push_str(&format!("files sent: {f}\n"));
            }
            if say::level() == say::Level::Quiet {
                // The summary: the table's last line, before the files sent.
                t = report::summary(outcome);
            }
            t
        };
        // A reader that went away is no failure of the run's.
        let _ = write!(std::io::stdout().lock(), "{text}");
    }
    why.extend(outcome.cleanup.iter().map(ToString::to_string));
    for (h, r) in plan.hosts.iter().zip(&outcome.hosts) {
        match &r.then {
            Some(Ok(t)) if t.status != 0 => {
                let last = t.output.lines().last().unwrap_or("no output");
                why.push(format!("{h}: --then exited {}: {last}", t.status));
            }
            Some(Err(e)) => why.push(format!("{h}: --then could not run: {e}")),
            _ => {}
        }
    }
    if let Some(change) = src_changed(plan, manifest) {
        why.push(format!(
            "SRC {} changed during the run ({change}); the copies hold the {} bytes hashed at \
             the start, which may mix old and new content: rerun once SRC is stable",
            plan.src.display(),
            plan.size
        ));
    }
    if outcome.interrupted {
        return Err(RunError::Interrupted(why));
    }
    if outcome.all_ok() && why.is_empty() {
        return Ok(());
    }
    for (h, r) in plan.hosts.iter().zip(&outcome.hosts) {
        if !r.status.is_some_and(HostStatus::is_ok) {
            why.push(format!(
                "{h} failed: {}",
                r.error.as_deref().unwrap_or("unknown reason")
            ));
        }
    }
    Err(RunError::Failed(why))
}

/// How SRC differs now from when the plan checked it (or, for a tree or a `--sparse`
/// file, from when it was hashed), if it does.
fn src_changed(plan: &Plan, manifest: Option<&tree::Manifest>) -> Option<String> {
    if let Some(m) = manifest {
        return match tree::fingerprint(&plan.src) {
            Err(e) => Some(format!("it can no longer be read: {e}")),
            Ok(f) if f != m.fingerprint => Some("some of its entries were modified".into()),
            Ok(_) => None,
        };
    }
    let meta = match std::fs::metadata(&plan.src) {
        Ok(m) => m,
        Err(e) => return Some(format!("it can no longer be read: {e}")),
    };
    if meta.len() != plan.size {
        Some(format!(
            "its size went from {} to {} bytes",
            plan.size,
            meta.len()
        ))
    } else if meta.modified().ok() != plan.modified {
        Some("it was modified".into())
    } else {
        None
    }
}
