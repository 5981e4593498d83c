//! A tree, or a file sent with `--sparse`, put in place on a host (`tree.sh`; see
//! [`crate::run::tree`] for the format): probing DEST and listing what it holds, unpacking a
//! verified archive into a staging directory beside DEST, removing what SRC does not have,
//! and the rename that makes the whole tree visible at once.
//!
//! They need GNU tar and GNU find on the host, `mkfifo`, and a GNU `sha256sum` that has `-z`.

use super::names::file_name;
use super::{sweep, Call, Codec};

/// The shell body of this module's jobs.
pub(super) const BODY: &str = include_str!("tree.sh");

/// The exit status of a tree's probe when DEST exists and is not a directory (`tree.sh`).
pub const DEST_NOT_A_DIRECTORY_STATUS: i32 = 7;

/// The line that precedes a listing in a probe's or an unpack's output (`tree.sh`).
pub const LISTING_MARK: &str = "listing";

/// Files above this size are hashed one by one with the host's fastest hasher; smaller ones
/// many to a process with `sha256sum -z`, whose speed then matters less than process starts.
const LARGE_FILE: u64 = 1 << 20;

/// Lists `start` (`.` for a tree, `./NAME` for a single file), relative to the current
/// directory, as NUL-separated fields that [`crate::run::tree::parse_listing`] reads: for
/// every entry `E`, its `find -printf %y` type, octal mode, size, path, link target and
/// inode (names of one file share it);
/// then, if `hashed`, for every regular file `DIGEST  PATH`, hashed as it is read. `$H` is
/// the hasher.
pub fn listing(start: &str, hashed: bool) -> String {
    Call::new("bounce_listing")
        .arg(start)
        .flag(hashed)
        .args(size_args())
        .code()
}

/// The listing's size bounds: files under the first are hashed many to a process, files
/// over the second one by one.
fn size_args() -> [String; 2] {
    [(LARGE_FILE + 1).to_string(), LARGE_FILE.to_string()]
}

/// What is sent, as the host's jobs need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A tree: DEST is a directory.
    Tree,
    /// One file, stored in the archive as [`crate::run::tree::SINGLE_MEMBER`].
    Single,
}

impl Shape {
    /// How `tree.sh` names it.
    fn word(self) -> &'static str {
        match self {
            Shape::Tree => "tree",
            Shape::Single => "single",
        }
    }
}

/// Probes DEST for a tree or a `--sparse` file: checks the tools (GNU tar, and `tool` for
/// `--compress`: a missing one prints `needs TOOL` and exits
/// [`super::TOOL_MISSING_STATUS`]), picks the hasher and sweeps stale temporary files as
/// [`super::probe`] does, then prints `missing`, or [`LISTING_MARK`] followed by
/// the listing of DEST.
///
/// For a tree, a DEST that exists and is not a directory (a symlink included) exits
/// [`DEST_NOT_A_DIRECTORY_STATUS`]. For a single file, DEST is what [`super::probe`]
/// accepts: a directory exits [`super::DEST_IS_DIRECTORY_STATUS`], anything else that is
/// not a regular file or a symlink (which is replaced) [`super::DEST_NOT_A_FILE_STATUS`].
///
/// With `restore` (the probe runs under DEST's lock), a tree whose DEST is absent while
/// one old tree of a killed run ([`super::names::old_tree_path`]) is beside it gets that
/// tree back first, which the probe prints as [`RESTORED`] and its path; several such trees
/// are left alone, each printed as [`UNRESTORED`] and its path.
pub fn probe(dest: &str, shape: Shape, tool: Option<Codec>, restore: bool) -> String {
    let old = match (shape, restore) {
        (Shape::Tree, true) => super::names::old_tree_glob(dest),
        _ => String::new(),
    };
    Call::new("bounce_tree_probe")
        .arg(dest)
        .args(sweep::args(dest))
        .arg(shape.word())
        .arg(tool.map_or("", |t| t.tool()))
        .arg(file_name(dest))
        .args(size_args())
        .arg(&old)
        .code()
}

/// The start of a probe's line naming an old tree it put back at DEST (see [`probe`]).
pub const RESTORED: &str = "restored ";

/// The start of a probe's line naming an old tree it left alone (see [`probe`]).
pub const UNRESTORED: &str = "unrestored ";

/// A tree unpacked while its archive arrives, beside the stream that writes the host's copy
/// (see [`super::stream_receive_unpacking`]): the bytes that are hashed go through a FIFO
/// into `tar -x` as well, so the unpacking costs no time after the last byte and tar reads
/// exactly the bytes the digest covers, not a copy read back from disk.
///
/// The staging directory is made afresh (a failed earlier attempt's is removed first) and,
/// for a rerun, starts as DEST's tree hard-linked, as [`unpack`] does. When tar has read a
/// whole archive, the marker `mark` is created; [`unpack`] then lists the staging directory
/// instead of unpacking again, but only for a copy whose digest was checked as it was
/// written: anything else may have changed the copy since. A tar that fails (a full disk)
/// leaves no marker, and stops reading: the stream goes on into the copy, and [`unpack`]
/// tries again from it. A tar that stopped reading is no error of the stream's: the stream's
/// `tee` goes on to its other output.
#[derive(Clone, Copy, Debug)]
pub struct Behind<'a> {
    /// The staging directory.
    pub stage: &'a str,
    /// The marker of a complete unpacking.
    pub mark: &'a str,
    /// The FIFO between the stream and tar.
    pub fifo: &'a str,
    /// DEST.
    pub dest: &'a str,
    /// Tree or single file.
    pub shape: Shape,
    /// `--preserve`.
    pub preserve: bool,
}

impl Behind<'_> {
    /// `bounce_behind`'s arguments, which the stream's receiver passes on.
    pub(super) fn args(&self) -> [String; 6] {
        [
            self.stage.to_string(),
            self.mark.to_string(),
            self.fifo.to_string(),
            self.dest.to_string(),
            self.shape.word().to_string(),
            if self.preserve { "yes" } else { "no" }.to_string(),
        ]
    }
}

/// Where a single file is in its staging directory. File names in a tree never reach a
/// shell: tar and find read them.
fn single_start() -> String {
    format!("./{}", crate::run::tree::SINGLE_MEMBER)
}

/// Unpacks the verified archive `archive` into `stage`, a new directory beside DEST (mode
/// 0700 until the archive's root entry sets its mode; whatever an earlier attempt left
/// there is removed first), then prints [`LISTING_MARK`] and the listing of what it wrote,
/// not hashed: the archive's digest covered every file's bytes (see
/// [`crate::run::tree::verify_archive`]). With `unpacked`, the marker of a [`Behind`] that
/// already unpacked this very copy as it arrived, and that marker present, only lists.
///
/// For a tree whose DEST is already a directory (a rerun), `stage` starts as DEST's tree
/// hard-linked (`cp -al`: no data is copied), and tar replaces what the archive holds by
/// unlinking it first (GNU tar's default), so DEST's own files are never written to.
/// Without `preserve`, tar keeps the archive's modes but not its owners or times; with it,
/// times, and owners where the host runs as root.
pub fn unpack(
    archive: &str,
    stage: &str,
    dest: &str,
    shape: Shape,
    preserve: bool,
    unpacked: Option<&str>,
) -> String {
    let start = match shape {
        Shape::Tree => ".".to_string(),
        Shape::Single => single_start(),
    };
    Call::new("bounce_unpack")
        .arg(archive)
        .arg(stage)
        .arg(dest)
        .arg(shape.word())
        .flag(preserve)
        .arg(unpacked.unwrap_or(""))
        .arg(start)
        .code()
}

/// Removes `paths` (relative to `stage`, as a listing gave them) from `stage`: what DEST
/// held that SRC does not. The paths are written as octal escapes for `printf`, so any byte
/// in a name (a newline, a byte that is not UTF-8) arrives unchanged. Several commands when
/// the list is long, each under 64 KiB.
pub fn remove(stage: &str, paths: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut len = 0;
    for p in paths {
        let mut octal = String::with_capacity(p.len() * 4);
        for b in p {
            octal.push_str(&format!("\\{b:03o}"));
        }
        if len + octal.len() > 64 << 10 && !batch.is_empty() {
            out.push(
                Call::new("bounce_remove")
                    .arg(stage)
                    .args(batch.drain(..))
                    .code(),
            );
            len = 0;
        }
        len += octal.len() + 3;
        batch.push(octal);
    }
    if !batch.is_empty() {
        out.push(Call::new("bounce_remove").arg(stage).args(batch).code());
    }
    out
}

/// Makes the staged copy DEST. A tree appears at once: `stage` is renamed to DEST, and a
/// DEST that was already a directory is first renamed aside to `old` and removed after, so
/// that DEST is at every moment the old tree, absent for an instant, or the new tree, never
/// a mix (put back if the second rename fails). A single file is renamed from `stage` onto
/// DEST, replacing it atomically. With `fsync`, the staged files reach the disk first
/// (`sync -f`, the whole file system, which a tree of thousands of files needs anyway).
pub fn swap(stage: &str, old: &str, dest: &str, shape: Shape, fsync: bool) -> String {
    Call::new("bounce_swap")
        .arg(stage)
        .arg(old)
        .arg(dest)
        .arg(shape.word())
        .flag(fsync)
        .arg(crate::run::tree::SINGLE_MEMBER)
        .code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tree::{self, Manifest};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicBool;

    use crate::run::remote::testing::{command, sh};

    fn after_mark(out: &[u8]) -> &[u8] {
        let mark = format!("{LISTING_MARK}\n");
        let at = out
            .windows(mark.len())
            .position(|w| w == mark.as_bytes())
            .expect("a listing");
        &out[at + mark.len()..]
    }

    /// A small tree with every kind of entry, names that a shell would mangle, a sparse
    /// file and a file above the large-file threshold.
    fn sample(root: &std::path::Path) {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        std::fs::write(root.join("a/one"), b"one").unwrap();
        std::fs::write(root.join("a/b/-n 'x'\n$(y)"), b"odd name").unwrap();
        std::fs::write(root.join("big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(root.join("zero"), b"").unwrap();
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        std::fs::set_permissions(root.join("a/one"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(root.join("big"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/one", root.join("link")).unwrap();
        std::os::unix::fs::symlink("../one", root.join("a/b/up")).unwrap();
    }

    #[test]
    fn unpack_and_list_reproduce_the_manifest_and_a_rerun_replaces_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        sample(&src);
        let stop = AtomicBool::new(false);
        let m = Manifest::scan_tree(&src, false, &stop).unwrap();
        let all = (0..m.entries.len()).collect();
        let a = tree::archive(&m, &all, false, dir.path()).unwrap();
        assert!(a.size < 8 << 20, "the holes were archived: {}", a.size);
        let dest = dir.path().join("out/dest").display().to_string();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let stage = dir.path().join("out/.dest.stage").display().to_string();
        let old = dir.path().join("out/.dest.old").display().to_string();
        let out = sh(&unpack(
            &a.path.display().to_string(),
            &stage,
            &dest,
            Shape::Tree,
            false,
            None,
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = tree::parse_listing(after_mark(&out.stdout), false).unwrap();
        let diff = tree::compare(&m, &listed, false);
        assert!(diff.is_clean(), "{diff:?}");
        let out = sh(&swap(&stage, &old, &dest, Shape::Tree, true));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        use std::os::unix::fs::MetadataExt;
        let sparse = std::fs::metadata(format!("{dest}/sparse")).unwrap();
        assert_eq!(sparse.len(), 64 << 20);
        assert!(sparse.blocks() * 512 < 1 << 20, "holes were written");

        // The probe sees the same tree.
        let out = sh(&probe(&dest, Shape::Tree, None, true));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = tree::parse_listing(after_mark(&out.stdout), false).unwrap();
        assert!(tree::compare(&m, &listed, true).is_clean());

        // Change one file and add a stray one: only the changed file differs.
        std::fs::write(src.join("a/one"), b"two").unwrap();
        std::fs::write(format!("{dest}/stray\nname"), b"x").unwrap();
        let m2 = Manifest::scan_tree(&src, false, &stop).unwrap();
        let diff = tree::compare(&m2, &listed_of(&dest), true);
        assert_eq!(diff.files.len(), 1);
        assert_eq!(diff.extras, vec![b"stray\nname".to_vec()]);
        let a2 = tree::archive(&m2, &diff.files, false, dir.path()).unwrap();
        assert_eq!(a2.files, (1, 3));
        let kept = std::fs::metadata(format!("{dest}/big")).unwrap().ino();
        let out = sh(&unpack(
            &a2.path.display().to_string(),
            &stage,
            &dest,
            Shape::Tree,
            false,
            None,
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = tree::parse_listing(after_mark(&out.stdout), false).unwrap();
        let diff = tree::compare(&m2, &listed, false);
        assert!(diff.files.is_empty() && diff.others.is_empty(), "{diff:?}");
        assert_eq!(
            std::fs::read(format!("{dest}/a/one")).unwrap(),
            b"one",
            "DEST's own file was written through the hard link"
        );
        for cmd in remove(&stage, &diff.extras) {
            assert!(sh(&cmd).status.success());
        }
        assert!(sh(&swap(&stage, &old, &dest, Shape::Tree, false))
            .status
            .success());
        assert!(tree::compare(&m2, &listed_of(&dest), true).is_clean());
        assert_eq!(
            std::fs::metadata(format!("{dest}/big")).unwrap().ino(),
            kept,
            "an unchanged file was copied instead of linked"
        );
        assert!(!std::path::Path::new(&old).exists());
        assert!(!std::path::Path::new(&stage).exists());
    }

    fn listed_of(dest: &str) -> std::collections::BTreeMap<Vec<u8>, crate::run::tree::Listed> {
        let out = sh(&probe(dest, Shape::Tree, None, true));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tree::parse_listing(after_mark(&out.stdout), false).unwrap()
    }

    #[test]
    fn a_single_sparse_file_keeps_its_holes_and_replaces_dest() {
        let dir = tempfile::tempdir().unwrap();
        // A name no shell or locale may mangle: it never reaches one.
        use std::os::unix::ffi::OsStrExt;
        let src = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"-disk\xff '$(x)'\n.img"));
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(256 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[9u8; 4096], 100 << 20).unwrap();
        let stop = AtomicBool::new(false);
        let m = Manifest::scan_single(&src, 0o640, &stop).unwrap();
        let a = tree::archive(&m, &Default::default(), false, dir.path()).unwrap();
        assert!(a.size < 1 << 20, "{}", a.size);
        let dest = dir.path().join("copy.img").display().to_string();
        std::fs::write(&dest, b"old").unwrap();
        let stage = dir.path().join(".stage").display().to_string();
        let shape = Shape::Single;
        let out = sh(&probe(&dest, shape, None, true));
        let listed = tree::parse_listing(after_mark(&out.stdout), true).unwrap();
        assert_eq!(tree::compare(&m, &listed, true).files.len(), 1);
        let out = sh(&unpack(
            &a.path.display().to_string(),
            &stage,
            &dest,
            shape,
            false,
            None,
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = tree::parse_listing(after_mark(&out.stdout), true).unwrap();
        assert!(tree::compare(&m, &listed, false).is_clean(), "{listed:?}");
        assert!(sh(&swap(&stage, "", &dest, shape, false)).status.success());
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dest).unwrap();
        assert_eq!(meta.len(), 256 << 20);
        assert!(meta.blocks() * 512 < 1 << 20);
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert!(!std::path::Path::new(&stage).exists());
    }

    #[test]
    fn a_tree_refuses_a_dest_that_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"x").unwrap();
        let out = sh(&probe(&dest.display().to_string(), Shape::Tree, None, true));
        assert_eq!(out.status.code(), Some(DEST_NOT_A_DIRECTORY_STATUS));
    }

    #[test]
    fn a_tree_unpacked_as_it_arrives_is_listed_without_unpacking_again() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        sample(&src);
        let stop = AtomicBool::new(false);
        let m = Manifest::scan_tree(&src, false, &stop).unwrap();
        let all = (0..m.entries.len()).collect();
        let a = tree::archive(&m, &all, false, dir.path()).unwrap();
        let at = |n: &str| dir.path().join(n).display().to_string();
        let (dest, tmp, stage, mark, fifo) = (
            at("d"),
            at(".d.tmp"),
            at(".d.stage"),
            at(".d.ok"),
            at(".d.fifo"),
        );
        let behind = Behind {
            stage: &stage,
            mark: &mark,
            fifo: &fifo,
            dest: &dest,
            shape: Shape::Tree,
            preserve: false,
        };
        let receive = |input: &std::path::Path| {
            let _ = std::fs::remove_file(&tmp);
            command(&crate::run::remote::stream_receive_unpacking(
                &dest,
                &tmp,
                crate::run::remote::Hasher::Sha256sum,
                None,
                Some(&behind),
            ))
            .stdin(std::fs::File::open(input).unwrap())
            .output()
            .unwrap()
        };
        let out = receive(&a.path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let digest = crate::run::digest::sha256_file(&a.path).unwrap();
        assert!(text.contains(&format!("end {} {digest}", a.size)), "{text}");
        assert!(
            std::path::Path::new(&mark).is_file(),
            "no marker after a whole archive"
        );
        // The archive file is moved away: a listing that needed it would fail.
        std::fs::rename(&tmp, at("moved")).unwrap();
        let out = sh(&unpack(
            &tmp,
            &stage,
            &dest,
            Shape::Tree,
            false,
            Some(&mark),
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = tree::parse_listing(after_mark(&out.stdout), false).unwrap();
        assert!(tree::compare(&m, &listed, false).is_clean());
        assert!(
            !std::path::Path::new(&mark).exists(),
            "the marker is used once"
        );

        // Half an archive: no marker, and the unpacking from the copy reports tar's error.
        let half = dir.path().join("half");
        let bytes = std::fs::read(&a.path).unwrap();
        std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
        let out = receive(&half);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!std::path::Path::new(&mark).exists());
        let out = sh(&unpack(
            &tmp,
            &stage,
            &dest,
            Shape::Tree,
            false,
            Some(&mark),
        ));
        assert!(!out.status.success());
    }

    #[test]
    fn a_killed_swaps_old_tree_goes_back_to_a_missing_dest_once_and_only_if_it_is_alone() {
        use crate::run::remote::names::old_tree_path;
        let dir = tempfile::tempdir().unwrap();
        // A hostile DEST name: it reaches the host's shell and find's -name.
        let dest = dir.path().join("d $(x) 'q' [*]").display().to_string();
        let old = old_tree_path(&dest, "1111aaaa");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(format!("{old}/kept"), b"k").unwrap();
        let restored = |out: &std::process::Output| -> Vec<String> {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(RESTORED) || l.starts_with(UNRESTORED))
                .map(str::to_string)
                .collect()
        };
        // Without the lock (restore off), nothing moves.
        let out = sh(&probe(&dest, Shape::Tree, None, false));
        assert!(out.status.success(), "{out:?}");
        assert!(restored(&out).is_empty() && !std::path::Path::new(&dest).exists());
        // Under it, the one old tree becomes DEST again and the probe lists it.
        let out = sh(&probe(&dest, Shape::Tree, None, true));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(restored(&out), [format!("{RESTORED}{old}")]);
        assert_eq!(std::fs::read(format!("{dest}/kept")).unwrap(), b"k");
        assert!(!std::path::Path::new(&old).exists());
        assert!(after_mark(&out.stdout).windows(6).any(|w| w == b"./kept"));
        // A DEST that is there is never replaced by an old tree.
        std::fs::create_dir(&old).unwrap();
        let out = sh(&probe(&dest, Shape::Tree, None, true));
        assert!(restored(&out).is_empty(), "{out:?}");
        assert!(std::path::Path::new(&old).is_dir());
        // Two old trees beside a missing DEST: neither is taken, both are named.
        std::fs::remove_dir_all(&dest).unwrap();
        let other = old_tree_path(&dest, "2222bbbb");
        std::fs::create_dir(&other).unwrap();
        let out = sh(&probe(&dest, Shape::Tree, None, true));
        assert!(out.status.success(), "{out:?}");
        let mut named = restored(&out);
        named.sort();
        assert_eq!(
            named,
            [format!("{UNRESTORED}{old}"), format!("{UNRESTORED}{other}")]
        );
        assert!(!std::path::Path::new(&dest).exists());
        // A single file sent with --sparse has no old tree to take back.
        let out = sh(&probe(&dest, Shape::Single, None, true));
        assert!(restored(&out).is_empty(), "{out:?}");
    }
}
