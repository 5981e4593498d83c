//! The sweep of stale temporary files that every probe starts with (`sweep.sh`).
//!
//! A temporary file beside DEST is stale when it is ours (same owner), untouched for more
//! than [`STALE_TEMP_MINUTES`] minutes and open in no process: every live run keeps its
//! temporary files open while it writes them. The check is by inode (`find -L … -samefile`),
//! so no spelling of the path can fool it. A tree's staging directory left by a run that
//! was killed is swept the same way, whole: when it is ours, its own entries untouched for
//! that long, and no process has a file in it open or works in it (a live run's `tar` does
//! both). A rerun's previous tree set aside ([`super::names::old_tree_path`]) is never
//! swept: if its run died between its two renames, it is the only copy, which the next
//! tree probe moves back ([`super::tree::probe`]).

use super::names::{parent, stage_glob, temp_glob};

/// Temporary files of other runs untouched for longer than this are stale.
pub const STALE_TEMP_MINUTES: u32 = 10;

/// The sweep's arguments for DEST (`bounce_sweep`'s, which the probes pass on): DEST's
/// directory, the patterns of temporary files and staging directories, the age.
pub fn args(dest: &str) -> [String; 4] {
    [
        parent(dest).to_string(),
        temp_glob(dest),
        stage_glob(dest),
        STALE_TEMP_MINUTES.to_string(),
    ]
}
