//! The SHA-256 of the source, computed once per run.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `data`, as `sha256sum` prints it.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lowercase hex SHA-256 of the file at `path`, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let never = AtomicBool::new(false);
    Ok(sha256_file_until(path, &never)?.expect("never stopped"))
}

/// [`sha256_file`] that gives up, returning `None`, as soon as `stop` is set: hashing
/// hundreds of GB must not outlast an interrupt.
pub fn sha256_file_until(path: &Path, stop: &AtomicBool) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let stop = AtomicBool::new(true);
        assert_eq!(sha256_file_until(&p, &stop).unwrap(), None);
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
