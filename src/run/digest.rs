//! The SHA-256 of the source, computed once per run, while the run starts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `data`, as `sha256sum` prints it.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lowercase hex SHA-256 of the file at `path`, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let never = AtomicBool::new(false);
    Ok(sha256_file_until(path, None, &never)?.expect("never stopped"))
}

/// [`sha256_file`] of the first `size` bytes if given (the file may not be shorter), that
/// gives up, returning `None`, as soon as `stop` is set: hashing hundreds of GB must not
/// outlast an interrupt.
pub fn sha256_file_until(
    path: &Path,
    size: Option<u64>,
    stop: &AtomicBool,
) -> std::io::Result<Option<String>> {
    Ok(sha256_parts_until(path, size, &[], stop)?.map(|d| d.whole))
}

/// A file's SHA-256, and that of each of its parts (see [`super::split`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// Lowercase hex SHA-256 of the whole file.
    pub whole: String,
    /// Lowercase hex SHA-256 of each part asked for, in order.
    pub parts: Vec<String>,
}

/// [`sha256_file_until`], also hashing each of `parts` (contiguous ranges from 0, as
/// [`super::split::parts`] cuts them) in the same pass, so that the parts' digests are of
/// the very bytes the whole digest is of.
pub fn sha256_parts_until(
    path: &Path,
    size: Option<u64>,
    parts: &[std::ops::Range<u64>],
    stop: &AtomicBool,
) -> std::io::Result<Option<Digests>> {
    let f = std::fs::File::open(path)?;
    let mut f = f.take(size.unwrap_or(u64::MAX));
    let mut h = Sha256::new();
    let mut done = Vec::with_capacity(parts.len());
    let mut part = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        // A block may end one part and start the next.
        let mut at = 0;
        while at < n {
            let Some(p) = parts.get(done.len()) else {
                break;
            };
            let take = (p.end.saturating_sub(read + at as u64)).min((n - at) as u64) as usize;
            part.update(&buf[at..at + take]);
            at += take;
            if read + at as u64 == p.end {
                done.push(hex(&std::mem::take(&mut part).finalize()));
            } else {
                break;
            }
        }
        read += n as u64;
    }
    if let Some(size) = size.filter(|&s| s != read) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("it shrank from {size} to {read} bytes while it was hashed"),
        ));
    }
    // Empty parts (an empty file's one part) end where nothing was read.
    while let Some(p) = parts.get(done.len()) {
        if p.end > read {
            break;
        }
        done.push(hex(&std::mem::take(&mut part).finalize()));
    }
    Ok(Some(Digests {
        whole: hex(&h.finalize()),
        parts: done,
    }))
}

/// SRC's digest, computed on a thread of its own while the hosts are connected, probed and
/// sent their first bytes, and awaited only where it is needed (comparing a probe's digest,
/// checking a copy). Hashing 1 GiB takes about half a second that the run no longer waits
/// for up front.
#[derive(Clone, Debug)]
pub struct PendingDigest(tokio::sync::watch::Receiver<Option<Result<Digests, String>>>);

impl PendingDigest {
    /// A digest already known (of a file cut into no parts).
    pub fn ready(digest: String) -> Self {
        PendingDigest(
            tokio::sync::watch::channel(Some(Ok(Digests {
                whole: digest,
                parts: Vec::new(),
            })))
            .1,
        )
    }

    /// Starts hashing the first `size` bytes of `path`, exactly what is sent even if the
    /// file grows meanwhile, and each of `parts` (for `--streams`; none otherwise) in the
    /// same pass; setting `stop` abandons it.
    pub fn start(
        path: PathBuf,
        size: u64,
        parts: Vec<std::ops::Range<u64>>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        std::thread::Builder::new()
            .name("bounce-hash".into())
            .spawn(move || {
                let r = match sha256_parts_until(&path, Some(size), &parts, &stop) {
                    Ok(Some(d)) => Ok(d),
                    Ok(None) => Err("hashing was stopped".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(Some(r));
            })?;
        Ok(PendingDigest(rx))
    }

    /// [`PendingDigest::start`], then `check` on the same thread: the digest is known only
    /// once `check` has passed too, and is its error otherwise. For a tree's archive, whose
    /// check against the manifest (see [`super::tree::verify_archive`]) then costs the run
    /// nothing before its first byte.
    pub fn start_checked(
        path: PathBuf,
        size: u64,
        stop: Arc<AtomicBool>,
        check: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        std::thread::Builder::new()
            .name("bounce-hash".into())
            .spawn(move || {
                let r = match sha256_parts_until(&path, Some(size), &[], &stop) {
                    Ok(Some(d)) => check().map(|()| d),
                    Ok(None) => Err("hashing was stopped".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(Some(r));
            })?;
        Ok(PendingDigest(rx))
    }

    /// The digest, once it is known; the error says why reading SRC failed.
    pub async fn get(&self) -> Result<String, String> {
        self.all().await.map(|d| d.whole)
    }

    /// The digest and those of the parts asked for, once they are known.
    pub async fn all(&self) -> Result<Digests, String> {
        let mut rx = self.0.clone();
        let r = rx.wait_for(Option::is_some).await;
        match r {
            Ok(v) => v.clone().expect("waited for Some"),
            Err(_) => Err("the hashing thread died".into()),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pending_digest_is_the_files_and_a_missing_file_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let d = PendingDigest::start(p.clone(), 3, vec![], Arc::clone(&stop)).unwrap();
        assert_eq!(d.get().await.unwrap(), sha256_bytes(b"abc"));
        assert_eq!(d.get().await.unwrap(), sha256_bytes(b"abc"), "asked twice");
        // Only the bytes that will be sent: a file that grew is hashed to the planned size.
        let first = PendingDigest::start(p.clone(), 2, vec![], Arc::clone(&stop)).unwrap();
        assert_eq!(first.get().await.unwrap(), sha256_bytes(b"ab"));
        let short = PendingDigest::start(p.clone(), 4, vec![], Arc::clone(&stop)).unwrap();
        assert!(short
            .get()
            .await
            .unwrap_err()
            .contains("shrank from 4 to 3"));
        let missing = PendingDigest::start(dir.path().join("nope"), 3, vec![], stop).unwrap();
        assert!(missing.get().await.unwrap_err().contains("No such file"));
        assert_eq!(PendingDigest::ready("x".into()).get().await.unwrap(), "x");
    }

    #[test]
    fn each_part_is_hashed_in_the_same_pass_as_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // Parts that end inside a read block, on its edge, and past several blocks.
        let data: Vec<u8> = (0..(5 << 20) + 12_345u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        let never = AtomicBool::new(false);
        for streams in [1, 2, 3, 4, 7] {
            let parts = crate::run::split::parts(data.len() as u64, streams);
            let d = sha256_parts_until(&p, Some(data.len() as u64), &parts, &never)
                .unwrap()
                .unwrap();
            assert_eq!(d.whole, sha256_bytes(&data));
            let want: Vec<String> = parts
                .iter()
                .map(|r| sha256_bytes(&data[r.start as usize..r.end as usize]))
                .collect();
            assert_eq!(d.parts, want, "{streams} streams");
        }
        let empty = dir.path().join("e");
        std::fs::write(&empty, b"").unwrap();
        let d = sha256_parts_until(&empty, Some(0), &crate::run::split::parts(0, 4), &never)
            .unwrap()
            .unwrap();
        assert_eq!(d.parts, vec![sha256_bytes(b"")]);
    }

    #[test]
    fn hashing_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let stop = AtomicBool::new(true);
        assert_eq!(sha256_file_until(&p, None, &stop).unwrap(), None);
    }

    #[test]
    fn digest_matches_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let expect = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), expect);
        let out = std::process::Command::new("sha256sum")
            .arg(&p)
            .output()
            .unwrap();
        assert!(String::from_utf8(out.stdout).unwrap().starts_with(expect));
    }
}
