//! Writing output files whole or not at all.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ReportError;

fn io(path: &Path, source: std::io::Error) -> ReportError {
    ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Checks, before any work, that `path` can be written: its directory exists and accepts a
/// new file. A missing directory is refused, not made: a typo in a path must not make
/// directories (as root, anywhere). Nothing is left behind.
pub fn check_writable(path: &Path) -> Result<(), ReportError> {
    if path.is_dir() {
        return Err(io(path, std::io::Error::other("is a directory")));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(io(
                path,
                std::io::Error::other(format!("its directory {} does not exist", dir.display())),
            ));
        }
    }
    let probe = temp_beside(path);
    fs::File::create(&probe).map_err(|e| io(path, e))?;
    fs::remove_file(&probe).map_err(|e| io(path, e))?;
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place, so readers
/// see the old file or the new one, never a half-written one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_whole_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        check_writable(&path).unwrap();
        write_atomically(&path, b"a,b\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a,b\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_refused_by_name_and_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/out.csv");
        let err = check_writable(&path).unwrap_err().to_string();
        assert!(err.contains("no/such/out.csv"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        assert!(!dir.path().join("no").exists(), "a directory was made");
    }

    #[test]
    fn a_directory_is_not_a_writable_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(dir.path()).is_err());
    }
}
