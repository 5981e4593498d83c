//! A directory SRC, or a single file sent with `--sparse`, as the controller sees it: the
//! walk of the tree into a [`Manifest`] (every entry's type, mode, size, link target and
//! SHA-256, and which files are hard links to one another), the archive the hops carry instead of SRC, and the comparison of a host's
//! listing (see [`super::remote::tree`]) with the manifest.
//!
//! # The format on the wire
//!
//! The hops carry one POSIX pax archive made by GNU tar (`--format=pax --sparse`), built
//! once on the controller into a temporary file, exactly as `--compress` builds its
//! compressed copy: it has a size and a SHA-256, so every strategy moves it as it moves a
//! single file (the chain's streams, resumes and repairs included), every host checks the
//! archive's digest as it receives it, and its relays forward it as it arrives. The
//! manifest of digests stays on the controller, which checks that every file in the archive
//! has the manifest's digest ([`verify_archive`]): a host whose archive passed its digest
//! therefore wrote every file's bytes as SRC's digest says, checked as they were written.
//! What tar made of them is then listed by the host (types, modes, sizes, link targets,
//! inodes, so that the names of one file in SRC are those of one file there) and compared with the manifest before the tree is renamed into place.
//!
//! Why tar and not a framing of our own: every host already has GNU tar, it writes holes as
//! holes (pax sparse maps, so a file's holes cost nothing on the wire or on the host's disk),
//! recreates modes, link targets and empty directories, and refuses members that climb out
//! of the directory it unpacks into. A framing of our own would need a decoder on every
//! host, written in shell, for each of those. What tar lacks, a per-file digest, is the
//! manifest's job, and the digest of the whole archive covers the bytes in transit.
//!
//! A rerun sends only what differs: the hosts' listings are compared with the manifest
//! first, and the archive holds every directory and symlink (they cost a header each) but
//! only the regular files that some host lacks or holds with other content or mode.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What an entry of the tree is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file: its size and the lowercase hex SHA-256 of its logical content
    /// (holes read as zeros).
    File {
        /// Size in bytes, holes included.
        size: u64,
        /// SHA-256.
        digest: String,
    },
    /// A symbolic link, sent as a link: never followed.
    Symlink {
        /// Where it points, as stored in the link.
        target: Vec<u8>,
    },
}

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the tree's root, `/`-separated; the root itself is `.`.
    pub path: Vec<u8>,
    /// Permission bits as they must be on the hosts.
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// The name a single file is stored under in its archive, whatever its own: the hosts'
/// snippets then never name it, and no byte of SRC's name reaches a remote shell.
pub const SINGLE_MEMBER: &str = "data";

/// What is sent: a tree, or one file with `--sparse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// SRC is a directory; DEST becomes one.
    Tree,
    /// SRC is one file, sent through the archive so that its holes stay holes; `name` is
    /// its file name, which tar reads it by (it is stored as [`SINGLE_MEMBER`]).
    Single {
        /// SRC's file name.
        name: Vec<u8>,
    },
}

/// The walk of SRC: every entry, sorted by path (a directory before what it holds).
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The directory tar runs in: SRC for a tree, SRC's parent for a single file.
    pub base: PathBuf,
    /// Tree or single file.
    pub shape: Shape,
    /// The entries.
    pub entries: Vec<Entry>,
    /// Bytes of data in regular files, holes excluded (the blocks they occupy, capped at
    /// their size): about what the archive carries.
    pub data_bytes: u64,
    /// [`fingerprint`] of SRC, taken before it was hashed.
    pub fingerprint: u64,
    /// Hard links: each regular file (an index into `entries`) that is another name of an
    /// earlier one in the tree, mapped to the first of its names, as tar stores them (the
    /// first as a file, the others as links to it).
    pub links: BTreeMap<usize, usize>,
}

/// Why SRC cannot be sent as a tree. Each is bad input: exit status 2, nothing written.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A file or directory could not be read.
    #[error("SRC {path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A symlink is absolute or climbs out of the tree: it is refused, never followed.
    #[error("SRC {path}: symlink to '{target}' points outside the tree; refusing to send it")]
    SymlinkEscapes {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
    },
    /// A FIFO, socket or device.
    #[error("SRC {path}: {what}; only regular files, directories and symlinks are sent")]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The hashing was stopped by an interrupt.
    #[error("interrupted while hashing SRC")]
    Interrupted,
    /// A file's content in the archive is not what was hashed: it changed in between.
    #[error("SRC {path}: changed while it was archived; rerun once SRC is stable")]
    Changed {
        /// The file, relative to SRC.
        path: String,
    },
    /// tar is missing or failed on the controller.
    #[error("making the archive of {base}: {reason}")]
    Archive {
        /// The directory tar ran in.
        base: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Manifest {
    /// Walks the directory `root`, hashing every regular file. Setuid and setgid bits are
    /// dropped from every mode unless `keep_setid`. Symlinks are recorded, never followed;
    /// one that is absolute or leads out of the tree is refused, as are FIFOs, sockets and
    /// devices. Stops early, with [`TreeError::Interrupted`], once `stop` is set.
    pub fn scan_tree(root: &Path, keep_setid: bool, stop: &AtomicBool) -> Result<Self, TreeError> {
        let mut m = Manifest {
            base: root.to_path_buf(),
            shape: Shape::Tree,
            entries: Vec::new(),
            data_bytes: 0,
            fingerprint: fingerprint(root)?,
            links: BTreeMap::new(),
        };
        // SRC itself may be a symlink to the directory, as the command line names it.
        let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
        m.entries.push(Entry {
            path: b".".to_vec(),
            mode: mode_of(&meta, keep_setid),
            kind: EntryKind::Dir,
        });
        let mut inodes = Inodes::default();
        m.walk(root, &[], keep_setid, stop, &mut inodes)?;
        let mut order: Vec<usize> = (0..m.entries.len()).collect();
        order.sort_by(|&a, &b| m.entries[a].path.cmp(&m.entries[b].path));
        let mut first: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        let mut sorted = Vec::with_capacity(order.len());
        for (at, was) in order.into_iter().enumerate() {
            if let Some(&key) = inodes.of.get(&was) {
                let leader = *first.entry(key).or_insert(at);
                if leader != at {
                    m.links.insert(at, leader);
                }
            }
            sorted.push(m.entries[was].clone());
        }
        m.entries = sorted;
        Ok(m)
    }

    /// The first name of entry `i`'s file: `i` itself unless it is a hard link to an
    /// earlier one (see [`Manifest::links`]).
    pub fn leader(&self, i: usize) -> usize {
        self.links.get(&i).copied().unwrap_or(i)
    }

    /// The single regular file `file`, sent with `--sparse`: its mode is `mode`.
    pub fn scan_single(file: &Path, mode: u32, stop: &AtomicBool) -> Result<Self, TreeError> {
        let name = file
            .file_name()
            .ok_or_else(|| io_err(file, "has no file name"))?
            .as_bytes()
            .to_vec();
        let base = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fingerprint = fingerprint(file)?;
        let meta = std::fs::metadata(file).map_err(|e| io_err(file, e))?;
        let digest = hash(file, stop)?;
        Ok(Manifest {
            fingerprint,
            base,
            shape: Shape::Single { name },
            data_bytes: data_of(&meta),
            entries: vec![Entry {
                path: b".".to_vec(),
                mode,
                kind: EntryKind::File {
                    size: meta.len(),
                    digest,
                },
            }],
            links: BTreeMap::new(),
        })
    }

    /// Adds what `dir` holds, its path `rel` in the tree, to the entries, noting in
    /// `inodes` each regular file that has other names, whose content is then read once.
    fn walk(
        &mut self,
        dir: &Path,
        rel: &[u8],
        keep_setid: bool,
        stop: &AtomicBool,
        inodes: &mut Inodes,
    ) -> Result<(), TreeError> {
        let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
        for item in rd {
            let item = item.map_err(|e| io_err(dir, e))?;
            let path = item.path();
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(item.file_name().as_bytes());
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
            let ft = meta.file_type();
            let mode = mode_of(&meta, keep_setid);
            if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| io_err(&path, e))?;
                let target = target.as_os_str().as_bytes().to_vec();
                if escapes(&r, &target) {
                    return Err(TreeError::SymlinkEscapes {
                        path,
                        target: String::from_utf8_lossy(&target).into_owned(),
                    });
                }
                self.entries.push(Entry {
                    path: r,
                    mode,
                    kind: EntryKind::Symlink { target },
                });
            } else if ft.is_dir() {
                self.entries.push(Entry {
                    path: r.clone(),
                    mode,
                    kind: EntryKind::Dir,
                });
                self.walk(&path, &r, keep_setid, stop, inodes)?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                let known = (meta.nlink() > 1)
                    .then(|| inodes.first.get(&key).copied())
                    .flatten();
                let digest = match known.map(|i| &self.entries[i].kind) {
                    Some(EntryKind::File { digest, .. }) => digest.clone(),
                    _ => {
                        self.data_bytes += data_of(&meta);
                        hash(&path, stop)?
                    }
                };
                if meta.nlink() > 1 {
                    inodes.first.entry(key).or_insert(self.entries.len());
                    inodes.of.insert(self.entries.len(), key);
                }
                self.entries.push(Entry {
                    path: r,
                    mode,
                    kind: EntryKind::File {
                        size: meta.len(),
                        digest,
                    },
                });
            } else {
                use std::os::unix::fs::FileTypeExt;
                let what = if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else {
                    "a device"
                };
                return Err(TreeError::Unsupported { path, what });
            }
        }
        Ok(())
    }

    /// The number of regular files, and their total size.
    pub fn files(&self) -> (usize, u64) {
        self.entries.iter().fold((0, 0), |(n, b), e| match &e.kind {
            EntryKind::File { size, .. } => (n + 1, b + size),
            _ => (n, b),
        })
    }
}

/// The regular files of a walk that have more than one name, by (device, inode).
#[derive(Default)]
struct Inodes {
    /// Each such file's (device, inode), by its index in the walk's entries.
    of: BTreeMap<usize, (u64, u64)>,
    /// The first entry of the walk with each (device, inode).
    first: BTreeMap<(u64, u64), usize>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TreeError {
    TreeError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn mode_of(meta: &std::fs::Metadata, keep_setid: bool) -> u32 {
    let keep = if keep_setid { 0o7777 } else { 0o1777 };
    meta.permissions().mode() & keep
}

/// The bytes a file's data occupies, holes excluded.
fn data_of(meta: &std::fs::Metadata) -> u64 {
    (meta.blocks() * 512).min(meta.len())
}

fn hash(path: &Path, stop: &AtomicBool) -> Result<String, TreeError> {
    super::digest::sha256_file_until(path, None, stop)
        .map_err(|e| io_err(path, e))?
        .ok_or(TreeError::Interrupted)
}

/// True when the symlink at `link` (relative to the root) with `target` would resolve,
/// read as a path, outside the root: an absolute target, or one whose `..` climb above it.
/// Every link in the tree is checked, so a path through other links of the tree stays
/// inside it too.
pub fn escapes(link: &[u8], target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    // The link's own directory: every component of its path but the last.
    let mut depth = link.split(|&c| c == b'/').count() as i64 - 1;
    for part in target.split(|&c| c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// The archive the hops carry: a temporary file on the controller, removed once the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct Archive {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// The regular files it holds, and their total size (holes included).
    pub files: (usize, u64),
    _file: Arc<tempfile::TempPath>,
}

/// Archives every directory and symlink of `m`, and the regular files in `send` (indices
/// into `m.entries`), into a temporary file in `dir`. What it holds is checked against the
/// manifest by [`verify_archive`], which the caller runs before any host installs it. With `preserve`, owners, modes and
/// times are stored as they are; otherwise setuid and setgid are dropped (the hosts take the
/// manifest's modes, and their own time and owner).
pub fn archive(
    m: &Manifest,
    send: &BTreeSet<usize>,
    keep_setid: bool,
    dir: &Path,
) -> Result<Archive, TreeError> {
    let failed = |reason: String| TreeError::Archive {
        base: m.base.clone(),
        reason,
    };
    let mut list = tempfile::Builder::new()
        .prefix(".bounce-list-")
        .tempfile_in(dir)
        .map_err(|e| failed(format!("cannot create a file in {}: {e}", dir.display())))?;
    // A file goes with every other name of it, so that tar stores the first as the file
    // and the others as links to it.
    let leaders: BTreeSet<usize> = send.iter().map(|&i| m.leader(i)).collect();
    let mut files = (0, 0);
    for (i, e) in m.entries.iter().enumerate() {
        let name: &[u8] = match (&m.shape, &e.kind) {
            (Shape::Single { name }, _) => name,
            (Shape::Tree, EntryKind::File { size, .. }) => {
                if !leaders.contains(&m.leader(i)) {
                    continue;
                }
                files = (files.0 + 1, files.1 + size);
                &e.path
            }
            (Shape::Tree, _) => &e.path,
        };
        if let (Shape::Single { .. }, EntryKind::File { size, .. }) = (&m.shape, &e.kind) {
            files = (1, *size);
        }
        list.write_all(name)
            .and_then(|()| list.write_all(b"\0"))
            .map_err(|e| failed(e.to_string()))?;
    }
    list.flush().map_err(|e| failed(e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".bounce-tree-")
        .tempfile_in(dir)
        .map_err(|e| failed(format!("cannot create a file in {}: {e}", dir.display())))?;
    let mut cmd = Command::new("tar");
    cmd.arg("--create").arg("--file").arg(tmp.path()).args([
        "--format=pax",
        "--sparse",
        "--numeric-owner",
        "--no-recursion",
        "--pax-option=delete=atime,delete=ctime",
    ]);
    match (&m.shape, m.entries.first()) {
        // One file takes the mode the plan gave it, as an uncompressed copy would, and the
        // fixed name (in the C locale, `.*` matches any byte of its own name).
        (Shape::Single { .. }, Some(e)) => {
            cmd.arg(format!("--mode={:o}", e.mode))
                .arg(format!("--transform=s|.*|{SINGLE_MEMBER}|"))
                .env("LC_ALL", "C");
        }
        _ if !keep_setid => {
            cmd.arg("--mode=ug-s");
        }
        _ => {}
    }
    cmd.arg("-C")
        .arg(&m.base)
        .arg("--null")
        .arg("--files-from")
        .arg(list.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = match cmd.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(failed("'tar' is not installed on this machine".into()))
        }
        Err(e) => return Err(failed(e.to_string())),
        Ok(o) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(match err.trim().lines().next() {
            Some(l) => l.to_string(),
            None => out.status.to_string(),
        }));
    }
    let size = tmp
        .as_file()
        .metadata()
        .map_err(|e| failed(e.to_string()))?
        .len();
    let path = tmp.into_temp_path();
    Ok(Archive {
        path: path.to_path_buf(),
        size,
        files,
        _file: Arc::new(path),
    })
}

/// Reads the archive at `path` back and checks that every regular file in it holds, holes
/// expanded, exactly the content whose digest the manifest has.
///
/// This is what binds the archive to the manifest: a host that receives the archive with
/// the archive's digest intact has every file's bytes as SRC's digest says they are, checked
/// as they were written, and only the structure of what tar unpacked (types, modes, sizes,
/// link targets) is left to compare. Reads the pax format GNU tar writes: `x` headers with
/// `path`, `size` and the `GNU.sparse.*` keys of sparse format 1.0 (a map of decimal
/// `offset`/`length` lines at the start of the member's data, padded to a block).
pub fn verify_archive(path: &Path, m: &Manifest) -> Result<(), TreeError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |e: std::io::Error| io_err(path, e);
    let bad = |what: String| TreeError::Archive {
        base: m.base.clone(),
        reason: format!("unexpected archive: {what}"),
    };
    let want: BTreeMap<&[u8], usize> = match &m.shape {
        Shape::Tree => m
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_slice(), i))
            .collect(),
        Shape::Single { .. } => (0..m.entries.len())
            .map(|i| (SINGLE_MEMBER.as_bytes(), i))
            .collect(),
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io)?);
    let mut block = [0u8; 512];
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    // Reads `n` bytes into the hasher (or nowhere).
    let mut feed = |r: &mut dyn Read, mut n: u64, h: Option<&mut Sha256>| -> std::io::Result<()> {
        let mut h = h;
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..k])?;
            if let Some(h) = h.as_deref_mut() {
                h.update(&buf[..k]);
            }
            n -= k as u64;
        }
        Ok(())
    };
    let pad = |n: u64| (512 - n % 512) % 512;
    loop {
        r.read_exact(&mut block).map_err(io)?;
        if block.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let field = |a: usize, b: usize| {
            let f = &block[a..b];
            &f[..f.iter().position(|&c| c == 0).unwrap_or(f.len())]
        };
        let octal = |a: usize, b: usize| {
            let s = String::from_utf8_lossy(field(a, b)).trim().to_string();
            u64::from_str_radix(&s, 8).map_err(|_| bad(format!("a size field {s:?}")))
        };
        let size = octal(124, 136)?;
        let kind = block[156];
        let mut name = field(345, 500).to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(field(0, 100));
        match kind {
            b'x' => {
                let mut data = vec![0u8; size as usize];
                r.read_exact(&mut data).map_err(io)?;
                feed(&mut r, pad(size), None).map_err(io)?;
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let sp = rest
                        .iter()
                        .position(|&c| c == b' ')
                        .ok_or_else(|| bad("a pax record".into()))?;
                    let len: usize = std::str::from_utf8(&rest[..sp])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .filter(|&l| l > sp + 1 && l <= rest.len())
                        .ok_or_else(|| bad("a pax record length".into()))?;
                    let rec = &rest[sp + 1..len - 1];
                    if let Some(eq) = rec.iter().position(|&c| c == b'=') {
                        pax.insert(
                            String::from_utf8_lossy(&rec[..eq]).into_owned(),
                            rec[eq + 1..].to_vec(),
                        );
                    }
                    rest = &rest[len..];
                }
                continue;
            }
            b'0' | 0 => {}
            b'1' => {
                // A hard link: another name of a file the manifest links it to.
                let target = pax
                    .get("linkpath")
                    .cloned()
                    .unwrap_or_else(|| field(157, 257).to_vec());
                let path_in = pax.get("path").cloned().unwrap_or(name);
                let (p, t) = (rel(&path_in), rel(&target));
                let linked = want
                    .get(p.as_slice())
                    .zip(want.get(t.as_slice()))
                    .is_some_and(|(&a, &b)| a != b && m.leader(a) == m.leader(b));
                if !linked {
                    return Err(TreeError::Changed { path: show(&p) });
                }
                feed(&mut r, size + pad(size), None).map_err(io)?;
                pax.clear();
                continue;
            }
            _ => {
                feed(&mut r, size + pad(size), None).map_err(io)?;
                pax.clear();
                continue;
            }
        }
        let num = |k: &str| -> Option<u64> {
            pax.get(k)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        };
        let stored = num("size").unwrap_or(size);
        let path_in = pax
            .get("GNU.sparse.name")
            .or_else(|| pax.get("path"))
            .cloned()
            .unwrap_or(name);
        let rel = path_in.strip_prefix(b"./").unwrap_or(&path_in).to_vec();
        let mut h = Sha256::new();
        let logical = if num("GNU.sparse.major") == Some(1) {
            let real =
                num("GNU.sparse.realsize").ok_or_else(|| bad("no GNU.sparse.realsize".into()))?;
            // The map: decimal lines, a count then offset/length pairs, in whole blocks.
            let mut nums = Vec::new();
            let mut line = Vec::new();
            let mut map_len = 0u64;
            let mut count = None;
            while count.is_none_or(|c: u64| (nums.len() as u64) < 2 * c) {
                r.read_exact(&mut block).map_err(io)?;
                map_len += 512;
                for &c in &block {
                    if count.is_some_and(|c: u64| nums.len() as u64 == 2 * c) {
                        break;
                    }
                    if c == b'\n' {
                        let v: u64 = std::str::from_utf8(&line)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| bad("a sparse map".into()))?;
                        line.clear();
                        match count {
                            None => count = Some(v),
                            Some(_) => nums.push(v),
                        }
                    } else {
                        line.push(c);
                    }
                }
            }
            let mut pos = 0u64;
            let mut data = 0u64;
            for pair in nums.chunks(2) {
                let (off, len) = (pair[0], pair[1]);
                if off < pos {
                    return Err(bad("a sparse map out of order".into()));
                }
                let mut gap = off - pos;
                while gap > 0 {
                    let k = gap.min(zeros.len() as u64) as usize;
                    h.update(&zeros[..k]);
                    gap -= k as u64;
                }
                feed(&mut r, len, Some(&mut h)).map_err(io)?;
                pos = off + len;
                data += len;
            }
            let mut gap = real
                .checked_sub(pos)
                .ok_or_else(|| bad("a sparse map past the end".into()))?;
            while gap > 0 {
                let k = gap.min(zeros.len() as u64) as usize;
                h.update(&zeros[..k]);
                gap -= k as u64;
            }
            let left = stored
                .checked_sub(map_len + data)
                .ok_or_else(|| bad("a sparse member's size".into()))?;
            feed(&mut r, left + pad(stored), None).map_err(io)?;
            real
        } else {
            feed(&mut r, stored, Some(&mut h)).map_err(io)?;
            feed(&mut r, pad(stored), None).map_err(io)?;
            stored
        };
        pax.clear();
        let digest = super::digest::hex(&h.finalize());
        let ok = want.get(rel.as_slice()).is_some_and(|&i| {
            m.entries[i].kind
                == EntryKind::File {
                    size: logical,
                    digest: digest.clone(),
                }
        });
        if !ok {
            return Err(TreeError::Changed { path: show(&rel) });
        }
    }
}

/// One entry of a host's listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// `find -printf %y`: `f`, `d`, `l`, or another letter for anything else.
    pub kind: u8,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// A symlink's target.
    pub target: Vec<u8>,
    /// The inode: names of one regular file share it.
    pub inode: u64,
    /// A regular file's SHA-256, if it could be read.
    pub digest: Option<String>,
}

/// Parses the NUL-separated listing that [`super::remote::tree::listing`] prints, keyed by
/// the path relative to the listed root: `.` for the root, and for a `single` file.
pub fn parse_listing(out: &[u8], single: bool) -> Result<BTreeMap<Vec<u8>, Listed>, String> {
    let rel = |p: &[u8]| if single { b".".to_vec() } else { rel(p) };
    let mut fields = out.split(|&c| c == 0);
    let mut map: BTreeMap<Vec<u8>, Listed> = BTreeMap::new();
    let bad = |what: &str| format!("unexpected listing from the host: {what}");
    while let Some(f) = fields.next() {
        if f.is_empty() {
            continue;
        }
        if f == b"E" {
            let mut next = || fields.next().ok_or_else(|| bad("a record is cut short"));
            let kind = *next()?.first().ok_or_else(|| bad("no type"))?;
            let mode = parse_num(next()?, 8).ok_or_else(|| bad("a mode"))?;
            let size = parse_num(next()?, 10).ok_or_else(|| bad("a size"))?;
            let path = rel(next()?);
            let target = next()?.to_vec();
            let inode = parse_num(next()?, 10).ok_or_else(|| bad("an inode"))?;
            let e = map.entry(path).or_default();
            (e.kind, e.mode, e.size, e.target, e.inode) = (kind, mode as u32, size, target, inode);
        } else {
            // `HASH  PATH`, from sha256sum -z or the loop for large files.
            let at = f
                .windows(2)
                .position(|w| w == b"  ")
                .ok_or_else(|| bad("a digest record"))?;
            let digest = String::from_utf8_lossy(&f[..at]).into_owned();
            map.entry(rel(&f[at + 2..])).or_default().digest = Some(digest);
        }
    }
    Ok(map)
}

fn parse_num(f: &[u8], radix: u32) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(f).ok()?, radix).ok()
}

/// `./a/b` → `a/b`; `.` stays `.`.
fn rel(p: &[u8]) -> Vec<u8> {
    p.strip_prefix(b"./").unwrap_or(p).to_vec()
}

/// How a host's tree differs from the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Regular files (indices into the manifest's entries) the host lacks, or holds with
    /// other content, size or mode.
    pub files: BTreeSet<usize>,
    /// Directories and symlinks (indices into the manifest's entries) missing or wrong.
    pub others: Vec<usize>,
    /// Paths the host holds that SRC does not have.
    pub extras: Vec<Vec<u8>>,
}

impl Diff {
    /// True when the host's tree is exactly the manifest's.
    pub fn is_clean(&self) -> bool {
        self.files.is_empty() && self.others.is_empty() && self.extras.is_empty()
    }
}

/// Compares a host's listing with the manifest: paths, types, modes, sizes, link targets
/// and, when the listing `hashed` them, file digests. Owners and times are not compared.
pub fn compare(m: &Manifest, listed: &BTreeMap<Vec<u8>, Listed>, hashed: bool) -> Diff {
    let mut d = Diff::default();
    for (i, e) in m.entries.iter().enumerate() {
        let got = listed.get(&e.path);
        let same = got.is_some_and(|g| match &e.kind {
            EntryKind::Dir => g.kind == b'd' && g.mode == e.mode,
            EntryKind::Symlink { target } => g.kind == b'l' && &g.target == target,
            EntryKind::File { size, digest } => {
                g.kind == b'f'
                    && g.mode == e.mode
                    && g.size == *size
                    && (!hashed || g.digest.as_deref() == Some(digest.as_str()))
            }
        });
        if !same {
            match e.kind {
                EntryKind::File { .. } => {
                    d.files.insert(i);
                }
                _ => d.others.push(i),
            }
        }
    }
    // Hard links: the names of one file in SRC must be the names of one file on the host,
    // and of no other. A file that differs goes with all its names.
    let mut leader_of_inode: BTreeMap<u64, usize> = BTreeMap::new();
    let mut unlinked = BTreeSet::new();
    for (i, e) in m.entries.iter().enumerate() {
        let Some(g) = listed.get(&e.path).filter(|g| g.kind == b'f') else {
            continue;
        };
        if !matches!(e.kind, EntryKind::File { .. }) {
            continue;
        }
        let leader = m.leader(i);
        let ours = *leader_of_inode.entry(g.inode).or_insert(leader);
        let leaders_inode = listed.get(&m.entries[leader].path).map(|l| l.inode);
        if ours != leader || leaders_inode != Some(g.inode) {
            unlinked.insert(leader);
            unlinked.insert(m.leader(ours));
        }
    }
    let differs: BTreeSet<usize> = d
        .files
        .iter()
        .map(|&i| m.leader(i))
        .chain(unlinked)
        .collect();
    d.files.extend((0..m.entries.len()).filter(|&i| {
        matches!(m.entries[i].kind, EntryKind::File { .. }) && differs.contains(&m.leader(i))
    }));
    if m.shape == Shape::Tree {
        let known: BTreeSet<&[u8]> = m.entries.iter().map(|e| e.path.as_slice()).collect();
        d.extras = listed
            .keys()
            .filter(|p| !known.contains(p.as_slice()))
            .cloned()
            .collect();
    }
    d
}

/// A hash of every path under `root` (or of the file `root`) with its type, size and
/// modification time, in a fixed order: it changes when SRC changes, for the end of a run
/// to say so.
pub fn fingerprint(root: &Path) -> Result<u64, TreeError> {
    use std::hash::{Hash, Hasher};
    fn walk(p: &Path, h: &mut std::collections::hash_map::DefaultHasher) -> Result<(), TreeError> {
        let m = std::fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
        (m.len(), m.mtime(), m.mtime_nsec(), m.mode()).hash(h);
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| io_err(p, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| io_err(p, e))?;
            names.sort();
            for n in names {
                n.as_bytes().hash(h);
                walk(&p.join(n), h)?;
            }
        }
        Ok(())
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    walk(root, &mut h)?;
    Ok(h.finish())
}

/// The bytes of data in the regular files under `root`, holes excluded, without reading
/// them: what the plan and the prediction take as the size of a tree.
pub fn data_estimate(root: &Path) -> Result<u64, TreeError> {
    let mut total = 0;
    for item in std::fs::read_dir(root).map_err(|e| io_err(root, e))? {
        let item = item.map_err(|e| io_err(root, e))?;
        let meta = item.metadata().map_err(|e| io_err(&item.path(), e))?;
        if meta.is_dir() {
            total += data_estimate(&item.path())?;
        } else if meta.is_file() {
            total += data_of(&meta);
        }
    }
    Ok(total)
}

/// A human name for an entry's path, for messages.
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_that_climb_out_of_the_tree_are_caught() {
        assert!(!escapes(b"a/link", b"../b"));
        assert!(!escapes(b"a/b/link", b"../../c/./d"));
        assert!(escapes(b"link", b"../x"));
        assert!(escapes(b"a/link", b"../../x"));
        assert!(escapes(b"a/link", b"b/../../../x"));
        assert!(escapes(b"a/link", b"/etc/passwd"));
        assert!(!escapes(b"link", b"a/b/../c"));
    }

    #[test]
    fn the_archive_is_checked_against_the_manifest_holes_included() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/a"), b"alpha").unwrap();
        let f = std::fs::File::create(src.join("holes")).unwrap();
        f.set_len(40 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"data in the middle", 7 << 20).unwrap();
        let stop = AtomicBool::new(false);
        let m = Manifest::scan_tree(&src, false, &stop).unwrap();
        let all = (0..m.entries.len()).collect();
        let a = archive(&m, &all, false, dir.path()).unwrap();
        assert_eq!(a.files, (2, 5 + (40 << 20)));
        assert!(a.size < 1 << 20);
        verify_archive(&a.path, &m).unwrap();
        // A file that changes between the hashing and the archive is caught.
        std::fs::write(src.join("d/a"), b"omega").unwrap();
        let a = archive(&m, &all, false, dir.path()).unwrap();
        let e = verify_archive(&a.path, &m).unwrap_err();
        assert!(
            matches!(e, TreeError::Changed { ref path } if path == "d/a"),
            "{e}"
        );
        std::fs::write(src.join("d/a"), b"alpha").unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"X", 30 << 20).unwrap();
        let a = archive(&m, &all, false, dir.path()).unwrap();
        let e = verify_archive(&a.path, &m).unwrap_err();
        assert!(
            matches!(e, TreeError::Changed { ref path } if path == "holes"),
            "{e}"
        );
    }

    #[test]
    fn listings_parse_with_any_byte_in_a_name() {
        let fields: [&[u8]; 23] = [
            b"E",
            b"d",
            b"755",
            b"4096",
            b".",
            b"",
            b"11",
            b"E",
            b"f",
            b"644",
            b"3",
            b"./a\nb",
            b"",
            b"12",
            b"E",
            b"l",
            b"777",
            b"1",
            b"./l",
            b"a\nb",
            b"13",
            b"0123  ./a\nb",
            b"",
        ];
        let out = fields.join(&0u8);
        let map = parse_listing(&out, false).unwrap();
        assert_eq!(map.len(), 3);
        let f = &map[&b"a\nb".to_vec()];
        assert_eq!((f.kind, f.mode, f.size, f.inode), (b'f', 0o644, 3, 12));
        assert_eq!(f.digest.as_deref(), Some("0123"));
        assert_eq!(map[&b"l".to_vec()].target, b"a\nb");
        let cut: [&[u8]; 7] = [b"E", b"f", b"644", b"3", b"./a", b"", b""];
        assert!(parse_listing(&cut.join(&0u8), false).is_err());
    }

    /// A listing of `m`'s tree as a host with `inodes` (one per path; a path not given is
    /// its own file) would print it, hashed.
    fn listing_of(m: &Manifest, inodes: &[(&[u8], u64)]) -> BTreeMap<Vec<u8>, Listed> {
        m.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let inode = inodes
                    .iter()
                    .find(|(p, _)| *p == e.path.as_slice())
                    .map_or(1000 + i as u64, |&(_, n)| n);
                let listed = match &e.kind {
                    EntryKind::Dir => Listed {
                        kind: b'd',
                        mode: e.mode,
                        inode,
                        ..Listed::default()
                    },
                    EntryKind::Symlink { target } => Listed {
                        kind: b'l',
                        target: target.clone(),
                        inode,
                        ..Listed::default()
                    },
                    EntryKind::File { size, digest } => Listed {
                        kind: b'f',
                        mode: e.mode,
                        size: *size,
                        inode,
                        digest: Some(digest.clone()),
                        ..Listed::default()
                    },
                };
                (e.path.clone(), listed)
            })
            .collect()
    }

    #[test]
    fn hard_links_are_read_once_archived_as_links_and_compared_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("a"), vec![5u8; 100_000]).unwrap();
        std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
        std::fs::hard_link(src.join("a"), src.join("d/e")).unwrap();
        std::fs::write(src.join("c"), vec![5u8; 100_000]).unwrap();
        let stop = AtomicBool::new(false);
        let m = Manifest::scan_tree(&src, false, &stop).unwrap();
        let at = |p: &[u8]| m.entries.iter().position(|e| e.path == p).unwrap();
        let (a, b, c, e) = (at(b"a"), at(b"b"), at(b"c"), at(b"d/e"));
        assert_eq!(m.links, BTreeMap::from([(b, a), (e, a)]));
        assert_eq!(m.data_bytes, 200_000, "a's data is counted once, c's once");

        // Sending one name sends them all: the archive holds a as a file, b and d/e as
        // links to it, and the controller's check of it accepts that.
        let arch = archive(&m, &BTreeSet::from([e]), false, dir.path()).unwrap();
        assert!(arch.size < 120_000, "the links carried data: {}", arch.size);
        verify_archive(&arch.path, &m).unwrap();
        let listed = Command::new("tar")
            .args(["-t", "-v", "-f"])
            .arg(&arch.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&listed.stdout);
        assert_eq!(text.matches("link to a").count(), 2, "{text}");

        // A host whose names are SRC's files: clean. One whose b is a file of its own, or
        // whose c is another name of a: that group, and only it, is sent again.
        let good = listing_of(&m, &[(b"a", 1), (b"b", 1), (b"d/e", 1)]);
        assert!(compare(&m, &good, true).is_clean());
        let split = listing_of(&m, &[(b"a", 1), (b"d/e", 1)]);
        assert_eq!(compare(&m, &split, true).files, BTreeSet::from([a, b, e]));
        let joined = listing_of(&m, &[(b"a", 1), (b"b", 1), (b"d/e", 1), (b"c", 1)]);
        assert_eq!(
            compare(&m, &joined, true).files,
            BTreeSet::from([a, b, c, e])
        );

        // An archive whose link joins two files SRC keeps apart is refused.
        std::fs::remove_file(src.join("c")).unwrap();
        std::fs::hard_link(src.join("a"), src.join("c")).unwrap();
        let arch = archive(&m, &BTreeSet::from([a, c]), false, dir.path()).unwrap();
        assert!(matches!(
            verify_archive(&arch.path, &m),
            Err(TreeError::Changed { ref path }) if path == "c"
        ));
    }
}
