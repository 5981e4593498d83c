//! Every name a run gives a file on a host, from one place: the temporary names beside DEST
//! (`.NAME.bounce-RUNID{tag}.tmp`), the staging directory of a tree, a rerun's old tree set
//! aside, the decompressed twin of a copy, the lock, and the patterns the sweep matches.

/// How much of DEST's name goes into its temporary names, so that they fit in the 255 bytes
/// a file name may have however long DEST's is.
const TEMP_NAME_KEEP: usize = 200;

/// The tag of a rerun's old tree set aside (see [`old_tree_path`]).
const OLD_TAG: &str = "-old";

/// The tag of a tree's staging directory (see [`stage_path`]).
const STAGE_TAG: &str = "-stage";

/// The directory part of an absolute path (`/` for a file in the root).
pub fn parent(dest: &str) -> &str {
    match dest.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &dest[..i],
    }
}

/// DEST's last component.
pub fn file_name(dest: &str) -> &str {
    dest.rsplit('/').next().unwrap_or(dest)
}

/// DEST's file name as temporary names use it: at most [`TEMP_NAME_KEEP`] bytes, cut on a
/// character boundary.
pub(crate) fn temp_stem(dest: &str) -> &str {
    let name = file_name(dest);
    let mut end = name.len().min(TEMP_NAME_KEEP);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// `dest`'s directory with `name` in it.
fn beside(dest: &str, name: &str) -> String {
    let dir = parent(dest);
    let sep = if dir.ends_with('/') { "" } else { "/" };
    format!("{dir}{sep}{name}")
}

/// The temporary name beside `dest` for run `run_id`: `.NAME.bounce-RUNID{tag}.tmp`.
pub fn temp_path(dest: &str, run_id: &str, tag: &str) -> String {
    beside(
        dest,
        &format!(".{}.bounce-{run_id}{tag}.tmp", temp_stem(dest)),
    )
}

/// The staging directory beside `dest` that a tree is unpacked into for run `run_id`.
pub fn stage_path(dest: &str, run_id: &str) -> String {
    temp_path(dest, run_id, STAGE_TAG)
}

/// The paths a tree's stream unpacks through as it arrives, beside DEST, for one run (see
/// [`super::tree::Behind`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacking {
    /// The staging directory ([`stage_path`]).
    pub stage: String,
    /// The marker of a complete unpacking.
    pub mark: String,
    /// The FIFO between the stream and tar.
    pub fifo: String,
}

impl Unpacking {
    /// Those of run `run_id` beside `dest`.
    pub fn new(dest: &str, run_id: &str) -> Unpacking {
        Unpacking {
            stage: stage_path(dest, run_id),
            mark: temp_path(dest, run_id, "-unpacked"),
            fifo: temp_path(dest, run_id, "-fifo"),
        }
    }

    /// All three.
    pub fn paths(&self) -> [&str; 3] {
        [&self.stage, &self.mark, &self.fifo]
    }
}

/// Where a rerun's old tree is renamed to for an instant, while the new one takes its place.
pub fn old_tree_path(dest: &str, run_id: &str) -> String {
    temp_path(dest, run_id, OLD_TAG)
}

/// A `find -name` pattern matching the old trees ([`old_tree_path`]) of every run beside
/// `dest`.
pub fn old_tree_glob(dest: &str) -> String {
    temp_glob_ending(dest, &format!("{OLD_TAG}.tmp"))
}

/// With `--compress`, the temporary file beside `tmp` that its decompressed bytes go to
/// (`tmp` itself keeps the compressed bytes, which the host's relays and hops read).
pub fn decoded_path(tmp: &str) -> String {
    format!("{}-d.tmp", tmp.strip_suffix(".tmp").unwrap_or(tmp))
}

/// The lock beside `dest` (see [`super::lock`]): `.NAME.bounce-lock`, NAME cut as in
/// temporary names so that it fits in a file name however long DEST's is.
pub fn lock_path(dest: &str) -> String {
    beside(dest, &format!(".{}.bounce-lock", temp_stem(dest)))
}

/// True for a path made by [`lock_path`]: a directory, released only by its run
/// (`cleanup.sh` matches the same ending).
pub fn is_lock(path: &str) -> bool {
    path.ends_with(".bounce-lock")
}

/// A `find -name` pattern matching the temporary files of every run beside `dest`.
pub fn temp_glob(dest: &str) -> String {
    temp_glob_ending(dest, ".tmp")
}

/// A `find -name` pattern matching the staging directories of every run beside `dest`.
pub fn stage_glob(dest: &str) -> String {
    temp_glob_ending(dest, &format!("{STAGE_TAG}.tmp"))
}

/// [`temp_glob`] for the names that end in `end`.
fn temp_glob_ending(dest: &str, end: &str) -> String {
    let mut s = String::from(".");
    for c in temp_stem(dest).chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push_str(".bounce-*");
    s.push_str(end);
    s
}
