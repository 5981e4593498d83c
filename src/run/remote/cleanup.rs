//! The end of a run on a host (`cleanup.sh`): its process groups killed, its temporary
//! files removed, its lock released.

use super::Call;

/// Kills the process groups `pids` (those already gone are fine) and removes `files`;
/// exits non-zero, with `rm`'s message on stderr, if a file could not be removed. A lock
/// among them (see [`super::lock`]) is removed only if run `run_id` holds it; a staging
/// directory goes with what it holds.
pub fn cleanup(pids: &[u32], files: &[String], run_id: &str) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    Call::new("bounce_cleanup")
        .arg(run_id)
        .arg(pids.join(" "))
        .args(files)
        .code()
}
