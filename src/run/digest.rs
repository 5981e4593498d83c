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
    let f = std::fs::File::open(path)?;
    let mut f = f.take(size.unwrap_or(u64::MAX));
    let mut h = Sha256::new();
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
        read += n as u64;
    }
    if let Some(size) = size.filter(|&s| s != read) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("it shrank from {size} to {read} bytes while it was hashed"),
        ));
    }
    Ok(Some(hex(&h.finalize())))
}

/// SRC's digest, computed on a thread of its own while the hosts are connected, probed and
/// sent their first bytes, and awaited only where it is needed (comparing a probe's digest,
/// checking a copy). Hashing 1 GiB takes about half a second that the run no longer waits
/// for up front.
#[derive(Clone, Debug)]
pub struct PendingDigest(tokio::sync::watch::Receiver<Option<Result<String, String>>>);

impl PendingDigest {
    /// A digest already known.
    pub fn ready(digest: String) -> Self {
        PendingDigest(tokio::sync::watch::channel(Some(Ok(digest))).1)
    }

    /// Starts hashing the first `size` bytes of `path`, exactly what is sent even if the
    /// file grows meanwhile; setting `stop` abandons it.
    pub fn start(path: PathBuf, size: u64, stop: Arc<AtomicBool>) -> std::io::Result<Self> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        std::thread::Builder::new()
            .name("bounce-hash".into())
            .spawn(move || {
                let r = match sha256_file_until(&path, Some(size), &stop) {
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
                let r = match sha256_file_until(&path, Some(size), &stop) {
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
        let d = PendingDigest::start(p.clone(), 3, Arc::clone(&stop)).unwrap();
        assert_eq!(d.get().await.unwrap(), sha256_bytes(b"abc"));
        assert_eq!(d.get().await.unwrap(), sha256_bytes(b"abc"), "asked twice");
        // Only the bytes that will be sent: a file that grew is hashed to the planned size.
        let first = PendingDigest::start(p.clone(), 2, Arc::clone(&stop)).unwrap();
        assert_eq!(first.get().await.unwrap(), sha256_bytes(b"ab"));
        let short = PendingDigest::start(p.clone(), 4, Arc::clone(&stop)).unwrap();
        assert!(short
            .get()
            .await
            .unwrap_err()
            .contains("shrank from 4 to 3"));
        let missing = PendingDigest::start(dir.path().join("nope"), 3, stop).unwrap();
        assert!(missing.get().await.unwrap_err().contains("No such file"));
        assert_eq!(PendingDigest::ready("x".into()).get().await.unwrap(), "x");
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
