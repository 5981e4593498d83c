//! How much bounce-run says on stderr, set once by `-q` or `-v`, and the lines it says:
//! the run's notes (`bounce-run: …`), and with `-v` the trace of every ssh command, every
//! line a remote job writes to stderr and every step of the scheduler, each stamped with
//! the seconds since the run started. Errors are never silenced: they are the binary's.
//!
//! The level is process-wide, as a logger's is: the ssh layer, the session and the progress
//! display all say things, and none of them should carry a flag through every call.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// How much is said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `-q`: errors and the final line only.
    Quiet = 0,
    /// Notes and progress.
    Normal = 1,
    /// `-v`: notes, progress as plain lines, and the trace.
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Normal as u8);
static START: OnceLock<Instant> = OnceLock::new();

/// Sets the level, and starts the clock the trace is stamped with.
pub fn set(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    START.get_or_init(Instant::now);
}

/// The level set.
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Level::Quiet,
        1 => Level::Normal,
        _ => Level::Verbose,
    }
}

/// True with `-v`.
pub fn tracing() -> bool {
    level() == Level::Verbose
}

/// Seconds since [`set`] was first called (or since this first call).
pub fn elapsed() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// A line stamped with [`elapsed`], as the plain progress lines and the trace are.
pub fn stamped(text: &str) -> String {
    format!("[{:>7.2}s] {text}", elapsed())
}

/// A note of the run (`bounce-run: TEXT`), unless `-q`.
pub fn note(text: impl std::fmt::Display) {
    if level() >= Level::Normal {
        eprintln!("bounce-run: {text}");
    }
}

/// A line of the trace, with `-v` only. `text` is made only then.
pub fn trace(text: impl FnOnce() -> String) {
    if tracing() {
        eprintln!("{}", stamped(&text()));
    }
}

/// The job a script runs, for the trace: the first `bounce_` function its code calls, or
/// its first word.
pub fn job_of(script: &str) -> &str {
    let mut words = script
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|'))
        .map(|w| w.trim_start_matches(['(', '{', '!']));
    let first = words.clone().find(|w| !w.is_empty()).unwrap_or("");
    words.find(|w| w.starts_with("bounce_")).unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripts_job_is_its_first_bounce_call() {
        assert_eq!(job_of("echo $$; bounce_probe '/d/f' 'x'"), "bounce_probe");
        assert_eq!(
            job_of("{ bounce_lock_take 'a'; } && bounce_tree_probe"),
            "bounce_lock_take"
        );
        assert_eq!(job_of("true"), "true");
        assert_eq!(job_of(""), "");
    }
}
