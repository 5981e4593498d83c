//! The ssh_config the controller's connections use: the user's own, with AES-GCM put first
//! among the ciphers unless that configuration names ciphers itself.
//!
//! OpenSSH takes the first value it reads for an option. So a generated file that
//! `Include`s the user's configuration (their `-F` file, or `~/.ssh/config` and then
//! `/etc/ssh/ssh_config`, which is what ssh reads without `-F`) and only then says
//! `Ciphers` changes nothing that the user decided, and changes the default otherwise.

use std::path::{Path, PathBuf};

use super::super::remote::PREFERRED_CIPHERS;

/// A generated ssh_config in a private directory, removed when dropped.
#[derive(Debug)]
pub struct ControllerConfig {
    dir: PathBuf,
    file: PathBuf,
}

impl ControllerConfig {
    /// Writes the configuration that includes `user_config` (the `-F` file, if any) and
    /// prefers AES-GCM, in a new directory of mode 0700 under `parent`.
    pub fn create(parent: &Path, user_config: Option<&Path>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = parent.join(format!(".bounce-ssh-{}", random_hex()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let me = ControllerConfig {
            file: dir.join("ssh_config"),
            dir,
        };
        let mut text = String::from("# Written by bounce-run for one run; removed after it.\n");
        let includes: Vec<PathBuf> = match user_config {
            Some(p) => vec![std::path::absolute(p)?],
            None => {
                let mut v = Vec::new();
                if let Some(home) = std::env::var_os("HOME") {
                    v.push(Path::new(&home).join(".ssh/config"));
                }
                v.push(PathBuf::from("/etc/ssh/ssh_config"));
                v
            }
        };
        for p in includes {
            text.push_str(&format!("Include {}\n", quote_config(&p)));
        }
        text.push_str(&format!("Host *\n    Ciphers {PREFERRED_CIPHERS}\n"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&me.file)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        Ok(me)
    }

    /// The file to pass to ssh with `-F`.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Removes the file and its directory now, for a controller about to exit without
    /// running destructors (a second interrupt). Dropping it afterwards is harmless.
    pub fn remove_now(&self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for ControllerConfig {
    fn drop(&mut self) {
        self.remove_now();
    }
}

/// A path as one ssh_config word: in double quotes, which ssh_config strips.
fn quote_config(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

fn random_hex() -> String {
    use rand::RngCore as _;
    format!("{:016x}", rand::rngs::OsRng.next_u64())
}

/// True when this machine's CPU has AES instructions (x86 `aes`, Arm `aes` among its
/// features): only then is AES-GCM the cheaper cipher.
pub fn cpu_has_aes() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
                .any(|l| l.split_whitespace().any(|w| w == "aes"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ciphers `ssh -G` resolves for a host with `config`.
    fn resolved_ciphers(config: &Path) -> String {
        let out = std::process::Command::new("ssh")
            .arg("-F")
            .arg(config)
            .args(["-G", "example-host"])
            .output()
            .expect("ssh -G runs (no connection is made)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("ciphers ").map(str::to_string))
            .expect("ssh -G prints the ciphers")
    }

    #[test]
    fn aes_gcm_comes_first_unless_the_users_config_names_ciphers() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user config");
        std::fs::write(&user, "Host example-host\n    Port 2222\n").unwrap();
        let c = ControllerConfig::create(dir.path(), Some(&user)).unwrap();
        assert_eq!(resolved_ciphers(c.path()), PREFERRED_CIPHERS);
        // The rest of the user's configuration still applies.
        let g = std::process::Command::new("ssh")
            .arg("-F")
            .arg(c.path())
            .args(["-G", "example-host"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&g.stdout).contains("\nport 2222\n"));
        drop(c);

        std::fs::write(&user, "Host *\n    Ciphers aes256-ctr\n").unwrap();
        let c = ControllerConfig::create(dir.path(), Some(&user)).unwrap();
        assert_eq!(resolved_ciphers(c.path()), "aes256-ctr");
        let (file, parent) = (c.path().to_path_buf(), c.dir.clone());
        drop(c);
        assert!(!file.exists() && !parent.exists(), "removed when dropped");
    }
}
