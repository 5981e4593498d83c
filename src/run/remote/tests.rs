//! Tests of the remote jobs, run on this machine under the shell being tested (see
//! [`super::testing`]).

use super::testing::{argv, command, sh};
use super::*;
use crate::fleet::HostSpec;
use std::process::Command;

/// `code` as a command line for another shell to run: the shell under test, then `-c` and
/// its program.
fn inner(code: &str) -> String {
    argv(code)
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_fence_lets_exactly_one_of_its_receiving_end_and_its_cut_through() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub dir/it's $(x)").display().to_string();
    let fence = temp_path(&dest, "r1", "-h2-link7");
    let receiver = format!("{}echo wrote", pass_fence(&fence));
    // Created once, exclusively, with its directory.
    assert!(sh(&create_fence(&dest, &fence)).status.success());
    assert!(!sh(&create_fence(&dest, &fence)).status.success());
    // The receiving end passes it once; then a cut finds nothing to stop.
    let out = sh(&receiver);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "wrote\n");
    assert_eq!(String::from_utf8_lossy(&sh(&cut_fence(&fence)).stdout), "");
    // Cut first, the receiving end never writes, and says why.
    assert!(sh(&create_fence(&dest, &fence)).status.success());
    assert_eq!(
        String::from_utf8_lossy(&sh(&cut_fence(&fence)).stdout),
        "cut\n"
    );
    let out = sh(&receiver);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("link was cut"));
    // A symlink in its place is not created through.
    let target = dir.path().join("target");
    std::os::unix::fs::symlink(&target, &fence).unwrap();
    assert!(!sh(&create_fence(&dest, &fence)).status.success());
    assert!(!target.exists());
}

/// A directory holding an executable `name` with `body`, to put first on PATH.
fn fake_tool(name: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn sh_with_path(first: &std::path::Path, script: &str) -> std::process::Output {
    let path = format!("{}:{}", first.display(), std::env::var("PATH").unwrap());
    command(script).env("PATH", path).output().unwrap()
}

/// The probe's last line, and its exit status.
fn probe_answer(dest: &str, size: u64) -> (String, Option<i32>) {
    let out = sh(&probe(dest, size, None));
    let text = String::from_utf8(out.stdout).unwrap();
    (
        text.lines().last().unwrap_or("").to_string(),
        out.status.code(),
    )
}

#[test]
fn probe_refuses_a_directory_and_anything_but_a_file_or_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dest");
    std::fs::create_dir(&d).unwrap();
    let dest = d.display().to_string();
    assert_eq!(probe_answer(&dest, 3).1, Some(DEST_IS_DIRECTORY_STATUS));
    let fifo = dir.path().join("fifo").display().to_string();
    assert!(sh(&format!("mkfifo {}", shell_quote(&fifo)))
        .status
        .success());
    assert_eq!(probe_answer(&fifo, 3).1, Some(DEST_NOT_A_FILE_STATUS));
    let missing = dir.path().join("missing").display().to_string();
    assert_eq!(probe_answer(&missing, 3), ("missing".into(), Some(0)));
}

#[test]
fn probe_never_follows_a_symlink_at_dest() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"abc").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Even when the link's target holds exactly the file, DEST is the link: it is
    // replaced, not trusted.
    let (answer, code) = probe_answer(&link.display().to_string(), 3);
    assert_eq!((answer.as_str(), code), ("link", Some(0)));
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert_eq!(probe_answer(&dangling.display().to_string(), 3).0, "link");
    // A symlink to a directory is a symlink too: replacing it never writes into the
    // directory.
    let to_dir = dir.path().join("to_dir");
    std::os::unix::fs::symlink(dir.path(), &to_dir).unwrap();
    assert_eq!(probe_answer(&to_dir.display().to_string(), 3).0, "link");
}

#[test]
fn probe_checks_the_size_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::write(&dest, b"abcd").unwrap();
    let marker = dir.path().join("hashed");
    let m = shell_quote(&marker.display().to_string());
    // Both hashers mark that they ran (openssl's check of the empty input aside).
    let fake = fake_tool(
        "sha256sum",
        &format!("touch {m}; exec /usr/bin/sha256sum \"$@\""),
    );
    let openssl = fake.path().join("openssl");
    std::fs::write(
        &openssl,
        format!(
            "#!/bin/sh\nt=$(cat); [ -z \"$t\" ] || touch {m}; \
             printf %s \"$t\" | /usr/bin/sha256sum | sed 's/ .*/ *stdin/'\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&openssl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dest.display().to_string();
    let out = sh_with_path(fake.path(), &probe(&d, 5, None));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().last(),
        Some("size")
    );
    assert!(!marker.exists(), "a file of the wrong size was hashed");
    let out = sh_with_path(fake.path(), &probe(&d, 4, None));
    let good = crate::run::digest::sha256_bytes(b"abcd");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().last(),
        Some(format!("file {good}").as_str())
    );
    assert!(marker.exists(), "a file of the right size must be hashed");
}

#[test]
fn probe_picks_openssl_only_when_it_hashes_right() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::write(&dest, b"abcd").unwrap();
    let d = dest.display().to_string();
    let good = crate::run::digest::sha256_bytes(b"abcd");
    let hasher_of = |out: &std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text.lines().last(), Some(format!("file {good}").as_str()));
        text.lines()
            .find_map(|l| l.strip_prefix("hasher ").map(str::to_string))
            .unwrap()
    };
    // This machine's own openssl, if it has one that works.
    let real = Command::new("sh")
        .arg("-c")
        .arg("printf abcd | openssl dgst -sha256 -r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).starts_with(&good))
        .unwrap_or(false);
    let expect = if real { "openssl" } else { "sha256sum" };
    assert_eq!(hasher_of(&sh(&probe(&d, 4, None))), expect);
    // An openssl that answers wrongly is not trusted.
    let broken = fake_tool("openssl", "cat > /dev/null; echo '0000 *stdin'");
    assert_eq!(
        hasher_of(&sh_with_path(broken.path(), &probe(&d, 4, None))),
        "sha256sum"
    );
    assert_eq!(Hasher::from_name("openssl"), Some(Hasher::Openssl));
    assert_eq!(Hasher::from_name("sha256sum"), Some(Hasher::Sha256sum));
}

#[test]
fn probe_sweeps_stale_temporary_files_that_no_process_has_open() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/it's [a] *.img", dir.path().display());
    let stale = temp_path(&dest, "deadbeef", "-h1");
    let held = temp_path(&dest, "cafe", "-t3");
    let fresh = temp_path(&dest, "f00d", "");
    let other = temp_path(&format!("{}/other.img", dir.path().display()), "dead", "");
    let unrelated = format!("{}/.it's [a] *.img.keep", dir.path().display());
    for f in [&stale, &held, &fresh, &other, &unrelated] {
        std::fs::write(f, b"partial").unwrap();
    }
    for f in [&stale, &held, &other, &unrelated] {
        let out = sh(&format!("touch -d '-20 minutes' -- {}", shell_quote(f)));
        assert!(out.status.success());
    }
    // A live run holds its temporary file open.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3< {}; exec sleep 30", shell_quote(&held)))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = sh(&probe(&dest, 7, None));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let swept: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("swept "))
        .collect();
    assert_eq!(swept, [stale.as_str()], "{text}");
    assert!(!std::path::Path::new(&stale).exists());
    for f in [&held, &fresh, &other, &unrelated] {
        assert!(std::path::Path::new(f).exists(), "{f} was removed");
    }
    assert_eq!(text.lines().last(), Some("missing"));
}

#[test]
fn probe_sweeps_stale_staging_directories_that_no_process_uses() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/it's [a] *", dir.path().display());
    let stale = stage_path(&dest, "deadbeef");
    let worked_in = stage_path(&dest, "cafe");
    let held = stage_path(&dest, "beef");
    let fresh = stage_path(&dest, "f00d");
    // A rerun's previous tree, renamed aside: the only copy if the run died between its
    // two renames, never swept.
    let old = old_tree_path(&dest, "dead");
    for d in [&stale, &worked_in, &held, &fresh, &old] {
        std::fs::create_dir_all(format!("{d}/sub")).unwrap();
        std::fs::write(format!("{d}/sub/f"), b"partial").unwrap();
    }
    for d in [&stale, &worked_in, &held, &old] {
        let out = sh(&format!("touch -d '-20 minutes' -- {}", shell_quote(d)));
        assert!(out.status.success());
    }
    // A live run unpacks in its staging directory, or holds a file in it open.
    let mut inside = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {}/sub && exec sleep 30",
            shell_quote(&worked_in)
        ))
        .spawn()
        .unwrap();
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3< {}/sub/f; exec sleep 30",
            shell_quote(&held)
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = sh(&probe(&dest, 7, None));
    for c in [&mut inside, &mut holder] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let swept: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("swept "))
        .collect();
    assert_eq!(swept, [stale.as_str()], "{text}");
    assert!(!std::path::Path::new(&stale).exists());
    for d in [&worked_in, &held, &fresh, &old] {
        assert!(std::path::Path::new(d).exists(), "{d} was removed");
    }
}

#[test]
fn temp_files_are_created_exclusively_and_never_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/f", dir.path().display());
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let tmp = temp_path(&dest, "r", "");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let out = sh(&format!(
        "printf 'evil' | {}",
        inner(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
    ));
    assert!(!out.status.success(), "{out:?}");
    let out = sh(&format!(
        "printf '0 4\\nevil' | {}",
        inner(&receive_chunks(&dest, &tmp))
    ));
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8(out.stdout).unwrap().contains("ok"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Nor a FIFO (which `set -C` would open, and block on or feed a reader), nor a
    // symlink to a device.
    std::fs::remove_file(&tmp).unwrap();
    assert!(sh(&format!("mkfifo {}", shell_quote(&tmp)))
        .status
        .success());
    let out = std::process::Command::new("timeout")
        .arg("5")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "printf 'evil' | {}",
            inner(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    std::fs::remove_file(&tmp).unwrap();
    std::os::unix::fs::symlink("/dev/null", &tmp).unwrap();
    let out = sh(&format!(
        "printf 'evil' | {}",
        inner(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
    ));
    assert!(!out.status.success(), "{out:?}");
    // A regular file already there is not taken over by a whole-file receiver...
    std::fs::remove_file(&tmp).unwrap();
    std::fs::write(&tmp, b"xxxxxx").unwrap();
    let out = sh(&format!(
        "printf 'evil' | {}",
        inner(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
    ));
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&tmp).unwrap(), b"xxxxxx");
    // ...but the chunk receiver goes on with this run's partial copy, in place.
    let out = sh(&format!(
        "printf '2 2\\nab' | {}",
        inner(&receive_chunks(&dest, &tmp))
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&tmp).unwrap(), b"xxabxx");
}

#[test]
fn install_replaces_a_symlink_and_never_moves_into_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link").display().to_string();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let tmp = temp_path(&link, "r", "");
    std::fs::write(&tmp, b"new").unwrap();
    let out = sh(&install(&tmp, &link, Meta::mode(0o644), true));
    assert!(out.status.success(), "{out:?}");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_file(), "the link itself is replaced");
    assert_eq!(std::fs::read(&link).unwrap(), b"new");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"old",
        "written through the link"
    );

    let d = dir.path().join("adir");
    std::fs::create_dir(&d).unwrap();
    let dest = d.display().to_string();
    let tmp = temp_path(&dest, "r", "");
    std::fs::write(&tmp, b"new").unwrap();
    let out = sh(&install(&tmp, &dest, Meta::mode(0o644), false));
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "moved into DEST");
}

#[test]
fn install_flushes_the_copy_before_the_rename_and_the_directory_after() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/f", dir.path().display());
    let log = dir.path().join("sync.log").display().to_string();
    let fake = fake_tool(
        "sync",
        &format!(
            "if [ -e {d} ]; then s=present; else s=absent; fi; \
             echo \"$2 $s\" >> {log}; exec /bin/sync \"$@\"",
            d = shell_quote(&dest),
            log = shell_quote(&log),
        ),
    );
    let tmp = temp_path(&dest, "r", "");
    std::fs::write(&tmp, b"new").unwrap();
    let out = sh_with_path(fake.path(), &install(&tmp, &dest, Meta::mode(0o600), true));
    assert!(out.status.success(), "{out:?}");
    let parent_dir = dir.path().display().to_string();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("{tmp} absent\n{parent_dir} present\n")
    );
    // Without fsync nothing is flushed.
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&tmp, b"new").unwrap();
    let out = sh_with_path(fake.path(), &install(&tmp, &dest, Meta::mode(0o600), false));
    assert!(out.status.success(), "{out:?}");
    assert!(!std::path::Path::new(&log).exists());
}

#[test]
fn cleanup_fails_when_a_file_cannot_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f").display().to_string();
    std::fs::write(&f, b"x").unwrap();
    assert!(sh(&cleanup(&[], std::slice::from_ref(&f), "r1"))
        .status
        .success());
    assert!(!std::path::Path::new(&f).exists());
    // A directory cannot be removed by `rm -f`: the failure is reported.
    let out = sh(&cleanup(&[], &[dir.path().display().to_string()], "r1"));
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
}

#[test]
fn temp_names_fit_in_a_file_name_however_long_dest_is() {
    let name = "é".repeat(127); // 254 bytes
    let t = temp_path(&format!("/d/{name}"), "0123456789abcdef", "-h123");
    let file = t.rsplit('/').next().unwrap();
    assert!(file.len() <= 255, "{} bytes", file.len());
    assert!(file.starts_with(".é"));
}

#[test]
fn temp_names_sit_beside_dest() {
    assert_eq!(
        temp_path("/data/a.img", "r1", ""),
        "/data/.a.img.bounce-r1.tmp"
    );
    assert_eq!(temp_path("/a.img", "r1", "-t3"), "/.a.img.bounce-r1-t3.tmp");
    assert_eq!(parent("/a"), "/");
    assert_eq!(parent("/x/y/z"), "/x/y");
}

#[test]
fn receive_finalize_and_probe_work_on_a_hostile_path() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!(
        "{}/new dir/it's $(touch pwned) `x`; & \"q\".bin",
        dir.path().display()
    );
    let tmp = temp_path(&dest, "r", "");
    let data = b"hello bounce\n";
    let digest = "0c7b4d2fe1e2d9b4c6a0d4d3b39a2a7bd0a1b1d1d6f39b1b1f0f1c1e6b8f0d2a";
    // Receive through the chunk loop: two chunks.
    let script = format!(
        "printf '0 6\\nhello 6 7\\nbounce\\n' | {}",
        inner(&receive_chunks(&dest, &tmp))
    );
    let out = sh(&script);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().skip(1).collect::<Vec<_>>(), ["ok 0", "ok 6"]);
    assert_eq!(std::fs::read(&tmp).unwrap(), data);
    // A wrong digest removes the temporary file and leaves DEST alone.
    let out = sh(&finalize(
        &tmp,
        &dest,
        digest,
        Meta::mode(0o644),
        true,
        Hasher::Openssl,
    ));
    assert_eq!(out.status.code(), Some(DIGEST_MISMATCH_STATUS));
    assert!(!std::path::Path::new(&tmp).exists());
    assert!(!std::path::Path::new(&dest).exists());
    // The whole-file receiver, then the right digest.
    let out = sh(&format!(
        "printf 'hello bounce\\n' | {}",
        inner(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
    ));
    assert!(out.status.success(), "{out:?}");
    let good = crate::run::digest::sha256_bytes(data);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().last(),
        Some(format!("end 13 {good}").as_str())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // With --preserve: SRC's mtime to the nanosecond, and (here, where the owner is
    // whoever runs the test) the same owner.
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata(dir.path()).unwrap();
    let meta = Meta {
        mode: 0o640,
        preserve: Some(Preserve {
            mtime_secs: 1_234_567_890,
            mtime_nanos: 123_456_789,
            uid: me.uid(),
            gid: me.gid(),
        }),
    };
    let out = sh(&finalize(&tmp, &dest, &good, meta, true, Hasher::Sha256sum));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let installed = std::fs::metadata(&dest).unwrap();
    assert_eq!(installed.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        (installed.mtime(), installed.mtime_nsec()),
        (1_234_567_890, 123_456_789)
    );
    assert_eq!((installed.uid(), installed.gid()), (me.uid(), me.gid()));
    let out = sh(&probe(&dest, data.len() as u64, None));
    let answer = String::from_utf8(out.stdout).unwrap();
    assert_eq!(answer.lines().last(), Some(format!("file {good}").as_str()));
    assert!(!dir.path().join("pwned").exists());
    assert!(!std::path::Path::new("pwned").exists());
}

#[test]
fn chunks_larger_than_a_block_arrive_whole_and_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/f", dir.path().display());
    let tmp = temp_path(&dest, "r", "");
    // Two chunks of 1.5 MiB on one stream, the second sent first: dd must read exactly
    // each chunk's bytes, leaving the next header in the pipe.
    let len = 3 << 19;
    let data: Vec<u8> = (0..2 * len).map(|i| (i * 7 % 251) as u8).collect();
    let mut stream = Vec::new();
    for off in [len, 0] {
        stream.extend_from_slice(format!("{off} {len}\n").as_bytes());
        stream.extend_from_slice(&data[off..off + len]);
    }
    let input = dir.path().join("stream");
    std::fs::write(&input, &stream).unwrap();
    let out = sh(&format!(
        "{} < {}",
        inner(&receive_chunks(&dest, &tmp)),
        shell_quote(&input.display().to_string())
    ));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let acks: Vec<String> = stdout.lines().skip(1).map(String::from).collect();
    assert_eq!(acks, [format!("ok {len}"), "ok 0".to_string()]);
    assert!(std::fs::read(&tmp).unwrap() == data);
}

#[test]
fn short_chunk_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/f", dir.path().display());
    let tmp = temp_path(&dest, "r", "");
    let out = sh(&format!(
        "printf '0 10\\nabc' | {}",
        inner(&receive_chunks(&dest, &tmp))
    ));
    assert!(!out.status.success());
    assert!(!String::from_utf8(out.stdout).unwrap().contains("ok"));
}

/// A stand-in for `ssh` that runs the remote command here: its last argument.
fn fake_ssh_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nfor a; do last=$a; done\nexec sh -c \"$last\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Starts a relay of `a_tmp` (`size` bytes) to a fake host "h2" whose receiver writes
/// `b_tmp`, in a session of its own as sshd runs it: its watcher kills its process group
/// once stdin closes. The fake ssh's directory lives as long as the returned guard.
fn spawn_relay(
    a_tmp: &str,
    size: u64,
    offset: u64,
    b_dest: &str,
    b_tmp: &str,
) -> (tempfile::TempDir, std::process::Child) {
    let fake = fake_ssh_dir();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let hop = HopSsh {
        accept_new_host_keys: false,
        connect_timeout_s: 1,
        upload_limit: None,
    };
    let to = HostSpec::parse("h2", "test").unwrap();
    let receive = if offset > 0 {
        stream_resume(b_tmp, offset, size, Hasher::Sha256sum, None, None)
    } else {
        stream_receive(b_dest, b_tmp, Hasher::Sha256sum, None)
    };
    let relay = stream_relay(
        &hop,
        RelayFrom::Receiving(a_tmp),
        offset..size,
        &to,
        &receive,
    );
    let child = std::process::Command::new("setsid")
        .arg("-w")
        .args(argv(&relay))
        .env("PATH", &path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (fake, child)
}

#[test]
fn a_probe_for_a_compressed_run_fails_first_on_a_host_without_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/f", dir.path().display());
    let out = command(&probe(&dest, 4, Some(Codec::Lz4)))
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(TOOL_MISSING_STATUS), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    // With the tool on the PATH, the probe goes on as without --compress.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/true", bin.join("lz4")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = command(&probe(&dest, 4, Some(Codec::Lz4)))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("missing\n"));
}

#[test]
fn an_up_to_date_host_compresses_its_dest_on_the_way_for_a_relay_and_a_paced_whole_hop() {
    if !crate::run::codec::installed_for_test(Codec::Zstd, "compressed shell snippets") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a_dest = format!("{}/a/it's $(x).img", dir.path().display());
    std::fs::create_dir_all(parent(&a_dest)).unwrap();
    let mut data = vec![0u8; 3 << 20];
    data[5000..9000].fill(9);
    std::fs::write(&a_dest, &data).unwrap();
    let wire = sh(&format!(
        "{} < {}",
        Codec::Zstd.compress_sh(),
        shell_quote(&a_dest)
    ))
    .stdout;
    let want = crate::run::digest::sha256_bytes(&data);
    let fake = fake_ssh_dir();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let to = HostSpec::parse("h2", "test").unwrap();
    for (k, limit) in [None, Some(200_000u64)].into_iter().enumerate() {
        let hop = HopSsh {
            accept_new_host_keys: false,
            connect_timeout_s: 1,
            upload_limit: limit,
        };
        let b_dest = format!("{}/b{k}/f.img", dir.path().display());
        let (b_tmp, b_dec) = (temp_path(&b_dest, "r", "-h2"), format!("{b_dest}.dec"));
        let receive = stream_receive(
            &b_dest,
            &b_tmp,
            Hasher::Sha256sum,
            Some(Decode {
                codec: Codec::Zstd,
                into: &b_dec,
            }),
        );
        // The relay from an installed copy; the whole-file hop, paced, from the same.
        let script = if limit.is_none() {
            stream_relay(
                &hop,
                RelayFrom::Compressing(&a_dest, Codec::Zstd),
                0..wire.len() as u64,
                &to,
                &receive,
            )
        } else {
            send_whole(
                &hop,
                SendFrom::Compressing(&a_dest, Codec::Zstd),
                &to,
                &receive,
                wire.len() as u64,
            )
        };
        let started = std::time::Instant::now();
        // The controller's channel stays open until the hop ends: its closing would
        // stop the hop.
        let mut child = std::process::Command::new("setsid")
            .arg("-w")
            .args(argv(&script))
            .env("PATH", &path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let channel = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(channel);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("end {} {want}", wire.len())),
            "{limit:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::read(&b_tmp).unwrap() == wire, "{limit:?}");
        assert!(std::fs::read(&b_dec).unwrap() == data, "{limit:?}");
        if let Some(rate) = limit {
            let floor = (wire.len() as u64).saturating_sub(rate / 4) as f64 / rate as f64;
            assert!(
                started.elapsed().as_secs_f64() >= floor,
                "{} bytes at {rate} B/s took {:?}",
                wire.len(),
                started.elapsed()
            );
        }
    }
}

#[test]
fn a_hop_over_several_streams_writes_each_part_in_place_and_hashes_it() {
    let dir = tempfile::tempdir().unwrap();
    let b_dest = format!("{}/b dir/it's $(x) `y`.bin", dir.path().display());
    let b_tmp = temp_path(&b_dest, "r", "-t1");
    let data: Vec<u8> = (0..(5 << 20) + 4321)
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    let from = dir.path().join("-from x");
    std::fs::write(&from, &data).unwrap();
    let fake = fake_ssh_dir();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let to = HostSpec::parse("h2", "test").unwrap();
    let parts = crate::run::split::parts(data.len() as u64, 3);
    assert_eq!(parts.len(), 3);
    for limit in [None, Some(64 << 20)] {
        let _ = std::fs::remove_file(&b_tmp);
        let made = sh(&create_for_parts(&b_dest, &b_tmp));
        assert!(made.status.success(), "{made:?}");
        let file = String::from_utf8(made.stdout).unwrap().trim().to_string();
        let hop = HopSsh {
            accept_new_host_keys: false,
            connect_timeout_s: 1,
            upload_limit: limit,
        };
        let receives: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| part_receive(&b_tmp, &file, i, p.clone(), Hasher::Openssl, i == 0))
            .collect();
        let script = send_parts(&hop, &from.display().to_string(), &parts, &to, &receives);
        let mut child = std::process::Command::new("setsid")
            .arg("-w")
            .args(argv(&script))
            .env("PATH", &path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        assert!(status.success(), "{status:?}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        // The sender's pid, then each receiver's pid, progress and its part's digest, in
        // any order.
        assert!(lines[0].parse::<u32>().is_ok(), "{out}");
        let pids = lines.iter().filter(|l| l.parse::<u32>().is_ok()).count();
        assert_eq!(pids, 4, "{out}");
        for (i, p) in parts.iter().enumerate() {
            let want = format!(
                "part {i} {}",
                crate::run::digest::sha256_bytes(&data[p.start as usize..p.end as usize])
            );
            assert!(lines.contains(&want.as_str()), "{want} not in {out}");
        }
        assert!(lines
            .iter()
            .all(|l| l.parse::<u32>().is_ok() || l.starts_with("at ") || l.starts_with("part ")));
        assert!(std::fs::read(&b_tmp).unwrap() == data, "limit {limit:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&b_tmp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(!dir.path().join("x").exists() && !std::path::Path::new("x").exists());
    // The copy is made exclusively: a file already there is never written to.
    let theirs = dir.path().join("theirs");
    std::fs::write(&b_tmp, b"theirs").unwrap();
    assert!(!sh(&create_for_parts(&b_dest, &b_tmp)).status.success());
    assert_eq!(std::fs::read(&b_tmp).unwrap(), b"theirs");
    // A part writes only into the file the run made: not another file put in its place,
    // not through a symlink, and it creates nothing where the copy went missing.
    let receive = |file: &str| {
        sh(&format!(
            "printf abc | {}",
            inner(&part_receive(
                &b_tmp,
                file,
                1,
                0..3,
                Hasher::Sha256sum,
                false
            ))
        ))
    };
    let other = receive("1:1");
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("not the copy this run made"));
    assert_eq!(std::fs::read(&b_tmp).unwrap(), b"theirs");
    std::fs::rename(&b_tmp, &theirs).unwrap();
    std::os::unix::fs::symlink(&theirs, &b_tmp).unwrap();
    let id = String::from_utf8(
        sh(&format!(
            "stat -L -c %d:%i {}",
            shell_quote(&theirs.display().to_string())
        ))
        .stdout,
    )
    .unwrap();
    assert!(
        !receive(id.trim()).status.success(),
        "written through a symlink"
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs");
    std::fs::remove_file(&b_tmp).unwrap();
    assert!(!receive(id.trim()).status.success());
    assert!(
        !std::path::Path::new(&b_tmp).exists(),
        "a part created the copy"
    );
}

#[test]
fn a_stream_is_received_hashed_and_relayed_as_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let a_dest = format!("{}/a/it's $(x) `y`.bin", dir.path().display());
    let b_dest = format!("{}/b dir/f.bin", dir.path().display());
    let (a_tmp, b_tmp) = (
        temp_path(&a_dest, "r", "-h1"),
        temp_path(&b_dest, "r", "-h2"),
    );
    let data: Vec<u8> = (0..(3 << 20) + 777).map(|i| (i * 31 % 253) as u8).collect();
    let input = dir.path().join("input");
    std::fs::write(&input, &data).unwrap();
    // A's receiver gets its input slowly, so that the relay follows a growing file.
    let mut receiver = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{{ head -c 1000000; sleep 0.3; cat; }} < {} | {}",
            shell_quote(&input.display().to_string()),
            inner(&stream_receive(&a_dest, &a_tmp, Hasher::Openssl, None))
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut a_out = std::io::BufReader::new(receiver.stdout.take().unwrap());
    let mut pid = String::new();
    std::io::BufRead::read_line(&mut a_out, &mut pid).unwrap();
    let (_fake, mut child) = spawn_relay(&a_tmp, data.len() as u64, 0, &b_dest, &b_tmp);
    let stdin = child.stdin.take().unwrap();
    let mut b = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut b).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(status.success(), "{status:?}: {b}");
    let mut a_rest = String::new();
    std::io::Read::read_to_string(&mut a_out, &mut a_rest).unwrap();
    assert!(receiver.wait().unwrap().success());
    let digest = crate::run::digest::sha256_bytes(&data);
    let end = format!("end {} {digest}", data.len());
    assert_eq!(a_rest.lines().last(), Some(end.as_str()), "{a_rest}");
    let lines: Vec<&str> = b.lines().collect();
    // The relay's tagged pid and B's receiver's pid in either order, then reports, and
    // B's own end.
    assert!(lines.len() >= 3, "{b}");
    let mut first: Vec<&str> = lines[..2].to_vec();
    first.sort();
    assert!(
        first[0].parse::<u32>().is_ok() && first[1].starts_with("relay "),
        "{b}"
    );
    assert!(lines[2..]
        .iter()
        .all(|l| l.starts_with("at ") || l.starts_with("end ")));
    assert_eq!(lines.last(), Some(&end.as_str()), "{b}");
    assert!(std::fs::read(&a_tmp).unwrap() == data);
    assert!(std::fs::read(&b_tmp).unwrap() == data);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&b_tmp).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!dir.path().join("x").exists() && !std::path::Path::new("x").exists());
}

#[test]
fn a_relay_resumes_a_copy_from_its_length_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a_dest = format!("{}/a/f.bin", dir.path().display());
    let b_dest = format!("{}/b/it's $(x).bin", dir.path().display());
    let (a_tmp, b_tmp) = (
        temp_path(&a_dest, "r", "-h1"),
        temp_path(&b_dest, "r", "-h2"),
    );
    let data: Vec<u8> = (0..(2 << 20) + 333).map(|i| (i * 17 % 251) as u8).collect();
    let offset = 1_234_567u64;
    std::fs::create_dir_all(parent(&a_dest)).unwrap();
    std::fs::create_dir_all(parent(&b_dest)).unwrap();
    // B already holds the first `offset` bytes (its sender died); A, which takes over,
    // holds less than that at first and catches up while the relay waits for it.
    std::fs::write(&b_tmp, &data[..offset as usize]).unwrap();
    std::fs::write(&a_tmp, &data[..1000]).unwrap();
    let (_fake, mut child) = spawn_relay(&a_tmp, data.len() as u64, offset, &b_dest, &b_tmp);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(std::fs::metadata(&b_tmp).unwrap().len(), offset);
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(&a_tmp)
        .unwrap();
    std::io::Write::write_all(&mut a, &data[1000..]).unwrap();
    drop(a);
    let stdin = child.stdin.take().unwrap();
    let mut b = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut b).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(status.success(), "{status:?}: {b}");
    // The whole file's digest, though only its rest came over the link.
    let end = format!(
        "end {} {}",
        data.len(),
        crate::run::digest::sha256_bytes(&data)
    );
    assert_eq!(b.lines().last(), Some(end.as_str()), "{b}");
    assert!(std::fs::read(&b_tmp).unwrap() == data);
    assert!(!dir.path().join("x").exists() && !std::path::Path::new("x").exists());
}

#[test]
fn an_installed_copy_is_checked_again_on_a_hostile_path() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/it's $(x) `y`.bin", dir.path().display());
    std::fs::write(&dest, b"hello").unwrap();
    let good = crate::run::digest::sha256_bytes(b"hello");
    for hasher in [Hasher::Sha256sum, Hasher::Openssl] {
        assert!(sh(&check(&dest, &good, hasher)).status.success());
        let bad = sh(&check(&dest, &"0".repeat(64), hasher));
        assert_eq!(bad.status.code(), Some(DIGEST_MISMATCH_STATUS));
        assert_eq!(String::from_utf8_lossy(&bad.stdout).trim(), good);
    }
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    assert!(!dir.path().join("x").exists() && !std::path::Path::new("x").exists());
}

#[test]
fn compressed_copies_are_received_resumed_and_finalized_by_their_decompressed_digest() {
    if !crate::run::codec::installed_for_test(Codec::Zstd, "compressed shell snippets") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| format!("{}/{n}", dir.path().display());
    let mut data = vec![0u8; 2 << 20];
    for (i, b) in data.iter_mut().enumerate().step_by(4099) {
        *b = (i % 251) as u8;
    }
    std::fs::write(path("data"), &data).unwrap();
    let out = sh(&format!(
        "{} < {} > {}",
        Codec::Zstd.compress_sh(),
        path("data"),
        path("wire")
    ));
    assert!(out.status.success(), "{out:?}");
    let wire = std::fs::read(path("wire")).unwrap();
    let want = crate::run::digest::sha256_bytes(&data);
    let dest = path("it's $(x).img");
    fn decode(into: &str) -> Option<Decode<'_>> {
        Some(Decode {
            codec: Codec::Zstd,
            into,
        })
    }
    // Received whole: the copy keeps the compressed bytes, its twin the decompressed
    // ones, and the digest is of the latter.
    let (tmp, dec) = (temp_path(&dest, "r", "-h1"), path("h1-d"));
    let out = sh(&format!(
        "{} < {}",
        inner(&stream_receive(
            &dest,
            &tmp,
            Hasher::Sha256sum,
            decode(&dec)
        )),
        path("wire")
    ));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.ends_with(&format!("end {} {want}\n", wire.len())),
        "{text}"
    );
    assert!(std::fs::read(&tmp).unwrap() == wire);
    assert!(std::fs::read(&dec).unwrap() == data);
    // Resumed at half the compressed bytes, over a partial twin from the broken stream:
    // the whole copy is decompressed again.
    let half = wire.len() / 2;
    let (tmp2, dec2) = (path("h2.tmp"), path("h2-d"));
    std::fs::write(&tmp2, &wire[..half]).unwrap();
    std::fs::write(&dec2, b"partial").unwrap();
    std::fs::write(path("rest"), &wire[half..]).unwrap();
    let resume = stream_resume(
        &tmp2,
        half as u64,
        wire.len() as u64,
        Hasher::Sha256sum,
        decode(&dec2),
        None,
    );
    let out = sh(&format!("{} < {}", inner(&resume), path("rest")));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.ends_with(&format!("end {} {want}\n", wire.len())),
        "{text}"
    );
    assert!(std::fs::read(&dec2).unwrap() == data);
    // Finalized from the compressed copy: DEST gets the decompressed bytes, the copy
    // stays for sending on; a corrupt copy removes both and leaves DEST alone.
    let meta = Meta {
        mode: 0o640,
        preserve: None,
    };
    let fin = |tmp: &str, dec: &str| {
        sh(&finalize_decoded(
            tmp,
            Decode {
                codec: Codec::Zstd,
                into: dec,
            },
            &dest,
            &want,
            meta,
            false,
            Hasher::Openssl,
        ))
    };
    let out = fin(&tmp2, &path("f-d"));
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read(&dest).unwrap() == data);
    assert!(std::fs::read(&tmp2).unwrap() == wire);
    assert!(!std::path::Path::new(&path("f-d")).exists());
    let mut bad = wire.clone();
    bad[half] ^= 0x55;
    std::fs::write(&tmp2, &bad).unwrap();
    std::fs::remove_file(&dest).unwrap();
    let out = fin(&tmp2, &path("g-d"));
    assert_eq!(out.status.code(), Some(DIGEST_MISMATCH_STATUS), "{out:?}");
    assert!(!std::path::Path::new(&tmp2).exists());
    assert!(!std::path::Path::new(&path("g-d")).exists());
    assert!(!std::path::Path::new(&dest).exists());
}

#[test]
fn a_resumed_copy_of_another_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = format!("{}/.f.tmp", dir.path().display());
    std::fs::write(&tmp, b"12345").unwrap();
    let out = sh(&format!(
        "printf 'abc' | {}",
        inner(&stream_resume(&tmp, 4, 8, Hasher::Sha256sum, None, None))
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds 5 bytes, not 4"), "{err}");
    assert_eq!(std::fs::read(&tmp).unwrap(), b"12345");
    let link = format!("{}/.link.tmp", dir.path().display());
    std::os::unix::fs::symlink(&tmp, &link).unwrap();
    let out = sh(&format!(
        "printf 'abc' | {}",
        inner(&stream_resume(&link, 5, 8, Hasher::Sha256sum, None, None))
    ));
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&tmp).unwrap(), b"12345");
}

#[test]
fn hops_prefer_aes_gcm_unless_the_hosts_ssh_config_names_ciphers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("args").display().to_string();
    // `ssh -G` answers like OpenSSH: the default list with `-F /dev/null`, the host's
    // configured one (USER_CIPHERS, if set) otherwise. Any other call logs its arguments.
    let fake = fake_tool(
        "ssh",
        &format!(
            "case \" $* \" in\n\
             *' -F /dev/null -G '*) echo 'ciphers chacha20-poly1305@openssh.com,aes128-ctr';;\n\
             *' -G '*) echo \"ciphers ${{USER_CIPHERS:-chacha20-poly1305@openssh.com,aes128-ctr}}\";;\n\
             *) echo \"$*\" >> {};;\n\
             esac",
            shell_quote(&log)
        ),
    );
    let hop = HopSsh {
        accept_new_host_keys: false,
        connect_timeout_s: 5,
        upload_limit: None,
    };
    let to = HostSpec::parse("h2.example", "test").unwrap();
    let cmd = hop.command(&to, "true");
    let aes = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == "aes");
    for (user, expect) in [("", aes), ("aes256-ctr", false)] {
        let _ = std::fs::remove_file(&log);
        let path = format!(
            "{}:{}",
            fake.path().display(),
            std::env::var("PATH").unwrap()
        );
        let out = command(&cmd)
            .env("PATH", path)
            .env("USER_CIPHERS", user)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let args = std::fs::read_to_string(&log).unwrap();
        assert!(args.contains("-- h2.example sh -c "), "{args}");
        assert_eq!(
            args.contains(&format!("-oCiphers={PREFERRED_CIPHERS} ")),
            expect,
            "configured ciphers {user:?}: {args}"
        );
    }
}

#[test]
fn chunk_sender_reads_requested_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"0123456789").unwrap();
    let src = src.display().to_string();
    for limit in [None, Some(1000)] {
        let script = chunk_reader(&src, "/nonexistent-tmp", limit);
        let started = std::time::Instant::now();
        let out = sh(&format!(
            "printf '2 3\\n8 2\\n0 300\\n' | {}",
            inner(&script)
        ));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let body = stdout.split_once('\n').unwrap().1;
        assert_eq!(body, "2 3\n2348 2\n890 300\n0123456789", "limit {limit:?}");
        if limit.is_some() {
            // The third chunk waits for the first two's 5 ms at 1000 B/s: a lower
            // bound, which no slow machine can break.
            assert!(started.elapsed().as_micros() >= 5000);
        }
    }
}

#[test]
fn a_paced_upload_passes_exactly_its_bytes_and_no_faster_than_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let out_path = dir.path().join("out");
    // 4 MB/s for 2.5 MB of a longer input: one period's worth (1 MB) goes at once, and
    // the rest waits its turn.
    let started = std::time::Instant::now();
    let out = sh(&format!(
        "{} < {} > {}",
        inner(&pace(4_000_000, 2_500_000)),
        shell_quote(&input.display().to_string()),
        shell_quote(&out_path.display().to_string()),
    ));
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read(&out_path).unwrap() == data[..2_500_000]);
    assert!(
        took >= std::time::Duration::from_millis(375),
        "2.5 MB at 4 MB/s took only {took:?}"
    );
}

#[test]
fn a_relay_waits_for_its_copy_and_follows_it_as_chunks_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let a_dest = format!("{}/a/f.bin", dir.path().display());
    let b_dest = format!("{}/b/f.bin", dir.path().display());
    let (a_tmp, b_tmp) = (
        temp_path(&a_dest, "r", "-h1"),
        temp_path(&b_dest, "r", "-h2"),
    );
    let data: Vec<u8> = (0..(8 << 20))
        .map(|i| ((i * 31 + i / 7919) % 253) as u8)
        .collect();
    let input = dir.path().join("input");
    std::fs::write(&input, &data).unwrap();
    // The relay starts before its copy exists, as a relay to a host that joined late
    // does, and the copy is then written chunk by chunk, in order, as a request link
    // writes it.
    let (_fake, mut child) = spawn_relay(&a_tmp, data.len() as u64, 0, &b_dest, &b_tmp);
    let stdin = child.stdin.take().unwrap();
    // Long enough for the far end to report before the relay has its copy.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // Chunks by request, 1 MiB each, in order, fed with pauses.
    let mut feeder = String::new();
    for c in 0..8u64 {
        feeder.push_str(&format!(
            "echo '{} 1048576'; dd if={} bs=1M skip={c} count=1 status=none; sleep 0.05; ",
            c << 20,
            shell_quote(&input.display().to_string())
        ));
    }
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{{ {feeder} }} | {}",
            inner(&receive_chunks(&a_dest, &a_tmp))
        ))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut b).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(status.success(), "{b}");
    assert!(std::fs::read(&a_tmp).unwrap() == data, "a differs");
    assert!(std::fs::read(&b_tmp).unwrap() == data, "b differs");
    let digest = crate::run::digest::sha256_bytes(&data);
    let end = format!("end {} {digest}", data.len());
    assert_eq!(b.lines().last(), Some(end.as_str()), "{b}");
    // The receiver's pid came first, then its reports while the relay waited, and the
    // relay's own line (which the controller reads past those reports) only after.
    let lines: Vec<&str> = b.lines().collect();
    let relay = lines
        .iter()
        .position(|l| l.starts_with("relay "))
        .expect(&b);
    assert!(lines[0].parse::<u32>().is_ok(), "{b}");
    assert!(lines[1..relay].iter().all(|l| l.starts_with("at ")), "{b}");
    assert!(relay > 1, "no report came before the relay's line: {b}");
}

#[test]
fn then_passes_dest_as_one_argument_and_reports_status_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/it's a $(rm -rf x) \"file\"", dir.path().display());
    let cmd = "printf '%s' \"$1\" > \"$1.seen\"; seq 1 25; echo oops >&2; exit 7";
    let out = sh(&then(cmd, &dest));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, tail) = parse_then(&text).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(status, 7);
    let want: Vec<String> = (17..=25)
        .map(|i| i.to_string())
        .chain(["oops".into()])
        .collect();
    assert_eq!(tail, want.join("\n"));
    assert_eq!(
        std::fs::read_to_string(format!("{dest}.seen")).unwrap(),
        dest
    );
    // No output, no trailing newline, a signal.
    let (status, tail) =
        parse_then(&String::from_utf8_lossy(&sh(&then("true", "/x")).stdout)).unwrap();
    assert_eq!((status, tail.as_str()), (0, ""));
    let (_, tail) = parse_then(&String::from_utf8_lossy(
        &sh(&then("printf last", "/x")).stdout,
    ))
    .unwrap();
    assert_eq!(tail, "last");
    let (status, _) = parse_then(&String::from_utf8_lossy(
        &sh(&then("kill -TERM $$", "/x")).stdout,
    ))
    .unwrap();
    assert_eq!(status, 143);
    assert_eq!(parse_then("no status here\n"), None);
}

#[test]
fn preserved_times_before_1970_are_signed_as_a_whole() {
    let at = |mtime_secs, mtime_nanos| Preserve {
        mtime_secs,
        mtime_nanos,
        uid: 0,
        gid: 0,
    };
    // -5.25 s is stored as -6 s + 0.75 s.
    assert_eq!(at(-6, 750_000_000).touch_date(), "@-5.250000000");
    assert_eq!(at(-1, 0).touch_date(), "@-1.000000000");
    assert_eq!(at(1_234_567_890, 5).touch_date(), "@1234567890.000000005");
}

#[test]
fn a_login_that_is_not_root_keeps_its_owner_and_drops_setuid_as_cp_p_does() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/tool", dir.path().display());
    let tmp = temp_path(&dest, "r", "");
    std::fs::write(&tmp, b"#!/bin/sh\n").unwrap();
    // `id -u` says 1000; a chown to 4242 would fail, and must not be tried.
    let fake = fake_tool("id", "echo 1000");
    let meta = Meta {
        mode: 0o4755,
        preserve: Some(Preserve {
            mtime_secs: 1_000_000_000,
            mtime_nanos: 0,
            uid: 4242,
            gid: 4242,
        }),
    };
    let out = sh_with_path(fake.path(), &install(&tmp, &dest, meta, false));
    assert!(out.status.success(), "{out:?}");
    let m = std::fs::metadata(&dest).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_ne!(m.uid(), 4242);
}

/// True when `tool` runs here; under CI its absence fails the test instead of skipping it.
fn tool_for_test(tool: &str, test: &str) -> bool {
    if Command::new(tool).arg("--help").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {tool} is not installed"
    );
    eprintln!("SKIPPED {test}: {tool} is not installed on this machine");
    false
}

#[test]
fn every_job_passes_its_tests_under_dash_and_busybox_sh() {
    // The run under another shell does not start this test again.
    if std::env::var_os("BOUNCE_TEST_SH").is_some() {
        return;
    }
    let me = std::env::current_exe().unwrap();
    for (shell, tool) in [("dash", "dash"), ("busybox sh", "busybox")] {
        if !tool_for_test(tool, "the remote jobs under another shell") {
            continue;
        }
        let out = Command::new(&me)
            .args(["run::remote::", "--skip", "under_dash_and_busybox"])
            .env("BOUNCE_TEST_SH", shell)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "under {shell}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The filter matched this module's tests, not nothing.
        let ran = text
            .lines()
            .find_map(|l| l.strip_prefix("test result: ok. "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        assert!(ran >= 40, "under {shell} only {ran} tests ran:\n{text}");
    }
}

#[test]
fn the_library_is_clean_under_shellcheck() {
    if !tool_for_test("shellcheck", "shellcheck over the remote jobs") {
        return;
    }
    let all: String = library().collect::<Vec<_>>().join("\n");
    let mut child = Command::new("shellcheck")
        .args(["-s", "sh", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), all.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_program_defines_what_its_code_calls_and_nothing_more() {
    // Every function a body calls is in the library.
    for f in functions() {
        for c in &f.calls {
            assert!(
                functions().iter().any(|g| g.name == c),
                "{} calls {c}, which no .sh file defines",
                f.name
            );
        }
    }
    // A quoted argument that looks like a call (a DEST, a nested program) defines nothing.
    let code = format!(
        "bounce_fence_cut {}",
        shell_quote("bounce_probe 'x' && bounce_cleanup")
    );
    let p = program(&code);
    assert!(p.starts_with("bounce_fence_cut() {\n"), "{p}");
    assert!(!p.contains("bounce_probe()"), "{p}");
    assert!(!p.contains("bounce_cleanup()"), "{p}");
    // What a function calls comes along, once; comments stay behind.
    let p = program(&stream_receive("/d/f", "/d/.t", Hasher::Sha256sum, None));
    assert_eq!(p.matches("bounce_create_excl() {").count(), 1, "{p}");
    assert!(p.contains("bounce_report_size() {"), "{p}");
    assert!(!p.contains("# "), "{p}");
    assert!(!p.contains("bounce_receive_chunks() {"), "{p}");
}

#[test]
fn a_host_whose_tail_lacks_pid_fails_its_probe_in_one_line() {
    if !tool_for_test("busybox", "a probe on a host with BusyBox's tail") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let busybox = super::testing::shell_path("busybox");
    std::os::unix::fs::symlink(busybox, bin.join("tail")).unwrap();
    let dest = format!("{}/f", dir.path().display());
    for code in [
        probe(&dest, 4, None),
        tree::probe(&dest, tree::Shape::Tree, None, true),
    ] {
        let out = sh_with_path(&bin, &code);
        assert_eq!(out.status.code(), Some(TOOLS_LACKING_STATUS), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("tail --pid") && err.contains("GNU coreutils"),
            "{err}"
        );
        assert!(!err.contains("tee"), "{err}");
    }
    // With the GNU tools, the same probe answers.
    assert_eq!(probe_answer(&dest, 4), ("missing".into(), Some(0)));
}

#[test]
fn a_link_by_requests_answers_its_pid_then_each_chunk_once_it_is_on_the_far_disk() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a/f it's").display().to_string();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(&src, b"0123456789").unwrap();
    let b_dest = dir.path().join("b/f").display().to_string();
    let b_tmp = temp_path(&b_dest, "r", "-h2");
    let fake = fake_ssh_dir();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let hop = HopSsh {
        accept_new_host_keys: false,
        connect_timeout_s: 1,
        upload_limit: None,
    };
    let to = HostSpec::parse("h2", "test").unwrap();
    // X's copy was renamed into place: the link reads DEST.
    let link = send_chunks(&hop, &src, "/nonexistent-tmp", &to, &b_dest, &b_tmp);
    let out = command(&format!("printf '2 3\\n8 2\\n0 2\\n' | {}", inner(&link)))
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // X's pid (the group the controller kills), Y's, then one answer per chunk.
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[..2].iter().all(|l| l.parse::<u32>().is_ok()),
        "{text}"
    );
    assert_eq!(lines[2..], ["ok 2", "ok 8", "ok 0"], "{text}");
    let got = std::fs::read(&b_tmp).unwrap();
    assert_eq!(&got[..5], b"01234", "{got:?}");
    assert_eq!(&got[8..], b"89");
}
