//! One run per DEST per host at a time: the lock a run takes beside DEST when it probes a
//! host, and releases once its copy is in place (or at the run's cleanup).
//!
//! The lock is a directory, `.NAME.bounce-lock` beside DEST: `mkdir` is atomic on every
//! POSIX filesystem, so of two runs that probe the same host at once exactly one takes it.
//! It holds one line, `owner`: the run's id, the controller's host name, pid and boot id, and
//! when it was taken. A second run fails that host at once, naming
//! who holds it and since when; it never waits. A lock whose run is gone is swept by the
//! next run, which names it: no process on the host names the run's id, and either the lock
//! is older than [`STALE_TEMP_MINUTES`] minutes (the stale-temporary-file age), or it was
//! taken by a run of this same machine and boot whose process is gone (a rerun right after
//! a host crashed, or after an interrupted run could not reach it).

use super::names::parent;
pub use super::names::{is_lock, lock_path};
use super::sweep::STALE_TEMP_MINUTES;
use super::Call;

/// Exit status of [`take`] when another run holds the lock (`lock.sh`).
pub const LOCKED_STATUS: i32 = 8;

/// Who takes a lock: a run, from a controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The run's id, as in its temporary names (letters and digits).
    pub run_id: String,
    /// The controller's host name (white space replaced, so the owner line splits on it).
    pub controller: String,
    /// The controller's process id.
    pub pid: u32,
    /// The controller's boot id (`/proc/sys/kernel/random/boot_id`): with it, a pid on this
    /// machine tells whether that run still lives.
    pub boot: String,
    /// The bounce-run processes alive on this machine now, this one included.
    pub live: Vec<u32>,
}

impl Owner {
    /// Run `run_id` of this process on this machine.
    pub fn here(run_id: &str) -> Owner {
        let controller = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_string())
            .unwrap_or_default();
        Owner {
            run_id: run_id.to_string(),
            controller: controller.replace(char::is_whitespace, "_"),
            pid: std::process::id(),
            boot: if boot.is_empty() { "-".into() } else { boot },
            live: live_runs(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.run_id, self.controller, self.pid, self.boot
        )
    }
}

/// The pids of the bounce-run processes alive on this machine (by `/proc/PID/comm`), this
/// one included.
fn live_runs() -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "bounce-run" && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Takes the lock beside `dest` for `owner`, first of a probe. Prints `lock taken`; or
/// `lock swept LINE` (a stale lock, with its owner line, was removed and the lock taken);
/// or `lock none` (something other than a directory is at the lock's name, or DEST's
/// directory cannot be written: nothing is taken, and the write that follows fails on its
/// own if it must). Another run's live lock prints `lock held LINE` and exits
/// [`LOCKED_STATUS`]. DEST's directory is made if missing, as a receiver would make it.
pub fn take(dest: &str, owner: &Owner) -> String {
    let live: Vec<String> = owner.live.iter().map(u32::to_string).collect();
    Call::new("bounce_lock_take")
        .arg(lock_path(dest))
        .arg(parent(dest))
        .arg(owner.line())
        .arg(&owner.run_id)
        .arg(&owner.boot)
        .arg(live.join(" "))
        .arg(STALE_TEMP_MINUTES.to_string())
        .code()
}

/// Removes the lock beside `dest` if run `run_id` holds it; always succeeds.
pub fn release(dest: &str, run_id: &str) -> String {
    release_path(&lock_path(dest), run_id)
}

/// [`release`] of the lock at `lock`: what a run's cleanup does with a lock it registered,
/// which may turn out to be another run's (an interrupt while the probe ran).
pub fn release_path(lock: &str, run_id: &str) -> String {
    Call::new("bounce_lock_release")
        .arg(lock)
        .arg(run_id)
        .code()
}

/// Who holds a lock, as its owner line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The owner line as found (empty if the lock had none).
    pub line: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w: Vec<&str> = self.line.split_whitespace().collect();
        let w = match w[..] {
            // The boot id is for the sweep, not for people.
            [run, controller, pid, _, since] => vec![run, controller, pid, since],
            _ => w,
        };
        match w[..] {
            [run, controller, pid, since] => write!(
                f,
                "run {run} of bounce-run (pid {pid} on {controller}), since {since}"
            ),
            _ if self.line.is_empty() => write!(f, "a run that left no owner line"),
            _ => write!(f, "{}", self.line),
        }
    }
}

/// What [`take`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The lock is this run's.
    Taken,
    /// A stale lock was swept, and the lock is this run's.
    Swept(Holder),
    /// Nothing could be taken (see [`take`]).
    None,
    /// Another run holds it.
    Held(Holder),
}

/// [`take`]'s answer among a probe's output lines, if it is there.
pub fn parse(out: &str) -> Option<Answer> {
    out.lines().find_map(|l| {
        let rest = l.strip_prefix("lock ")?;
        Some(match rest {
            "taken" => Answer::Taken,
            "none" => Answer::None,
            _ => {
                let (word, line) = rest.split_once(' ').unwrap_or((rest, ""));
                let holder = Holder {
                    line: line.trim().to_string(),
                };
                match word {
                    "swept" => Answer::Swept(holder),
                    "held" => Answer::Held(holder),
                    _ => return None,
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    use crate::run::remote::testing::sh;
    use crate::run::shell_quote;

    /// Run `run` of pid 42 on `controller`, each controller a machine (and boot) of its own,
    /// where no other bounce-run is alive.
    fn owner(run: &str, controller: &str) -> Owner {
        Owner {
            run_id: run.into(),
            controller: controller.into(),
            pid: 42,
            boot: format!("boot-of-{controller}"),
            live: vec![42],
        }
    }

    fn answer(out: &std::process::Output) -> Answer {
        parse(&String::from_utf8_lossy(&out.stdout)).expect("a lock line")
    }

    /// Makes `path` (a directory) look `minutes` old.
    fn age(path: &str, minutes: u32) {
        let out = sh(&format!(
            "touch -d '{minutes} minutes ago' -- {}",
            shell_quote(path)
        ));
        assert!(out.status.success());
    }

    #[test]
    fn a_second_run_finds_the_lock_held_and_who_holds_it_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub dir/it's $(x)").display().to_string();
        let first = sh(&take(&dest, &owner("aaaa1111", "ctl-one")));
        assert!(first.status.success());
        assert_eq!(answer(&first), Answer::Taken);
        // The same run asks again (a host probed twice): still its own.
        assert_eq!(
            answer(&sh(&take(&dest, &owner("aaaa1111", "ctl-one")))),
            Answer::Taken
        );

        let second = sh(&take(&dest, &owner("bbbb2222", "ctl-two")));
        assert_eq!(second.status.code(), Some(LOCKED_STATUS));
        let Answer::Held(holder) = answer(&second) else {
            panic!("not held: {second:?}");
        };
        let text = holder.to_string();
        assert!(
            text.starts_with("run aaaa1111 of bounce-run (pid 42 on ctl-one), since 20"),
            "{text}"
        );
        // The same run, asking from another process of its machine, is still its own;
        // another run of that machine while the first lives is not.
        let mut sibling = owner("bcbc1212", "ctl-one");
        sibling.pid = 7;
        sibling.live = vec![7, 42];
        assert_eq!(
            sh(&take(&dest, &sibling)).status.code(),
            Some(LOCKED_STATUS)
        );

        // Only its owner releases it.
        assert!(sh(&release(&dest, "bbbb2222")).status.success());
        assert!(std::path::Path::new(&lock_path(&dest)).is_dir());
        assert!(sh(&release(&dest, "aaaa1111")).status.success());
        assert!(!std::path::Path::new(&lock_path(&dest)).exists());
        assert_eq!(
            answer(&sh(&take(&dest, &owner("bbbb2222", "ctl-two")))),
            Answer::Taken
        );
    }

    #[test]
    fn a_stale_lock_is_swept_and_named_but_not_while_its_run_lives_or_while_it_is_young() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin").display().to_string();
        let l = lock_path(&dest);
        assert!(sh(&take(&dest, &owner("cccc3333", "gone")))
            .status
            .success());
        // Young: held, however dead its run is.
        let young = sh(&take(&dest, &owner("dddd4444", "new")));
        assert_eq!(young.status.code(), Some(LOCKED_STATUS));

        // Old, but a process on the host still names the run (one of its hops).
        age(&l, 20);
        let mut live = Command::new("sh")
            .arg("-c")
            .arg("sleep 30; : .f.bin.bounce-cccc3333-h1.tmp")
            // Its sleep outlives it: not on the test's output, which the shell matrix reads
            // to its end.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let held = sh(&take(&dest, &owner("dddd4444", "new")));
        live.kill().unwrap();
        live.wait().unwrap();
        assert_eq!(held.status.code(), Some(LOCKED_STATUS), "{held:?}");

        // Old, and its run is gone: swept, named, and taken.
        let swept = sh(&take(&dest, &owner("dddd4444", "new")));
        assert!(swept.status.success(), "{swept:?}");
        let Answer::Swept(holder) = answer(&swept) else {
            panic!("not swept: {swept:?}");
        };
        assert!(
            holder.line.starts_with("cccc3333 gone 42 boot-of-gone "),
            "{holder:?}"
        );
        let now = std::fs::read_to_string(format!("{l}/owner")).unwrap();
        assert!(now.starts_with("dddd4444 new 42 boot-of-new "), "{now}");
    }

    #[test]
    fn a_young_lock_of_this_machine_is_swept_once_its_run_has_exited_here() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin").display().to_string();
        // Taken by pid 42 of this machine and boot, minutes ago at most.
        assert!(sh(&take(&dest, &owner("ffff6666", "here")))
            .status
            .success());
        // A second run of the same machine, while pid 42 still runs: held.
        let mut alive = owner("abab7777", "here");
        alive.pid = 43;
        alive.live = vec![42, 43];
        assert_eq!(sh(&take(&dest, &alive)).status.code(), Some(LOCKED_STATUS));
        // Once pid 42 is gone, and no process on the host names its run: swept at once.
        alive.live = vec![43];
        let swept = sh(&take(&dest, &alive));
        assert!(swept.status.success(), "{swept:?}");
        assert!(matches!(answer(&swept), Answer::Swept(_)), "{swept:?}");
        // A run of another machine whose pid happens to be gone here is no proof.
        let mut other = owner("cdcd8888", "elsewhere");
        other.live = vec![];
        assert_eq!(sh(&take(&dest, &other)).status.code(), Some(LOCKED_STATUS));
    }

    #[test]
    fn a_dest_whose_name_is_as_long_as_a_name_may_be_is_locked_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("n".repeat(255)).display().to_string();
        let out = sh(&take(&dest, &owner("abcd0000", "a")));
        assert_eq!(answer(&out), Answer::Taken, "{out:?}");
        assert!(std::path::Path::new(&lock_path(&dest)).is_dir());
    }

    #[test]
    fn a_holder_reads_as_the_run_the_pid_and_the_time_of_its_owner_line() {
        let holder = Holder {
            line: "abcd1234 ctl 7 boot 2026-12-07T00:00:00Z".into(),
        };
        assert_eq!(
            holder.to_string(),
            "run abcd1234 of bounce-run (pid 7 on ctl), since 2026-12-07T00:00:00Z"
        );
    }

    #[test]
    fn a_runs_cleanup_removes_its_own_lock_and_never_another_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin").display().to_string();
        let l = lock_path(&dest);
        assert!(sh(&take(&dest, &owner("1234abcd", "a"))).status.success());
        // Another run registered the lock before its probe found it held, then stopped.
        let other = super::super::cleanup(&[], std::slice::from_ref(&l), "9876fedc");
        assert!(sh(&other).status.success());
        assert!(
            std::path::Path::new(&l).is_dir(),
            "another run's lock was removed"
        );
        let own = super::super::cleanup(&[], std::slice::from_ref(&l), "1234abcd");
        assert!(sh(&own).status.success());
        assert!(
            !std::path::Path::new(&l).exists(),
            "the run's own lock was kept"
        );
    }

    #[test]
    fn something_else_at_the_locks_name_is_neither_followed_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin").display().to_string();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, lock_path(&dest)).unwrap();
        age(&lock_path(&dest), 20);
        let out = sh(&take(&dest, &owner("eeee5555", "x")));
        assert!(out.status.success());
        assert_eq!(answer(&out), Answer::None);
        assert!(std::fs::symlink_metadata(lock_path(&dest))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        assert!(sh(&release(&dest, "eeee5555")).status.success());
        assert!(std::fs::symlink_metadata(lock_path(&dest)).is_ok());
    }
}
