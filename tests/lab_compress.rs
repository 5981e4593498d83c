//! `--compress` against real sshd hosts in the lab (issue 11): SRC is compressed once on the
//! controller, every link carries the compressed bytes, and every host ends with SRC's exact
//! bytes at DEST and nothing else beside it.
//!
//! These need root; see `tests/lab/mod.rs` for when they skip (loudly) and when they fail.

mod lab;

use std::path::Path;
use std::process::Command;

use lab::support::{assert_same, bounce_run, mostly_zeros, read_report, run_logged};
use lab::{Lab, LabConfig};

const MIB: usize = 1 << 20;

/// Whether zstd, lz4 and gzip are installed (the lab's hosts share this machine's): CI
/// installs them and must not skip; elsewhere a test without them says so and skips.
fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = ["zstd", "lz4", "gzip"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {missing:?} not installed"
    );
    eprintln!("SKIPPED {test}: {missing:?} not installed on this machine");
    false
}

/// What `tool` makes of `src` with bounce-run's own arguments: the bytes every link carries.
fn compressed_size(tool: &str, args: &str, src: &Path) -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{tool} {args} < '{}' | wc -c", src.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn compress_zstd_cuts_every_link_five_times_and_every_host_verifies_with_every_strategy() {
    if !tools_present(
        "compress_zstd_cuts_every_link_five_times_and_every_host_verifies_with_every_strategy",
    ) {
        return;
    }
    let Some(lab) = Lab::start(
        "compress_zstd_cuts_every_link_five_times_and_every_host_verifies_with_every_strategy",
        LabConfig::hosts(4),
    ) else {
        return;
    };
    let size = 256 * MIB;
    let src = lab.scratch().join("image.raw");
    mostly_zeros(&src, size, 16, 11);
    let wire = compressed_size("zstd", "-q -c -3 -T0", &src);
    eprintln!("256 MiB compresses to {wire} bytes with zstd");
    assert!(
        wire * 10 < size as u64,
        "the test image compresses too little: {wire}"
    );
    let hosts = lab.host_names(4);
    for strategy in ["linear", "bounce", "chain"] {
        lab.clear_data();
        let before: Vec<u64> = (1..=4).map(|i| lab.rx_bytes(i)).collect();
        let report = lab.scratch().join(format!("{strategy}.csv"));
        let mut cmd = bounce_run(
            &lab,
            strategy,
            &hosts,
            &report,
            &src,
            &lab.dest("image.raw"),
        );
        cmd.args(["--compress", "zstd"]);
        let out = run_logged(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{strategy}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--compress zstd: 256.0 MiB to 16.0 MiB"),
            "{stderr}"
        );
        for (k, r) in read_report(&report).iter().enumerate() {
            assert_eq!(
                (r.status.as_str(), r.bytes),
                ("verified", wire),
                "{strategy}: {} got the compressed bytes once",
                r.host
            );
            let i = k + 1;
            assert_same(&lab, i, "image.raw", &src);
            // Nothing but DEST is left beside it: no compressed copy, no decompressed twin.
            assert_eq!(lab.data_tree(i), ["image.raw"], "{strategy}: h{i}");
            let rx = lab.rx_bytes(i) - before[i - 1];
            eprintln!(
                "{strategy}: h{i} received {rx} bytes on its link for a {size}-byte file ({:.1}× less)",
                size as f64 / rx as f64
            );
            assert!(
                rx * 5 <= size as u64,
                "{strategy}: h{i} received {rx} bytes on its link, not 5× less than {size}"
            );
        }
    }

    // A rerun finds every copy in place and sends nothing; after two copies are lost, a
    // bounce rerun sends them the compressed bytes again, possibly from hosts that were
    // up to date and compress their own DEST on the way.
    let report = lab.scratch().join("again.csv");
    let mut cmd = bounce_run(
        &lab,
        "bounce",
        &hosts,
        &report,
        &src,
        &lab.dest("image.raw"),
    );
    cmd.args(["--compress", "zstd"]);
    assert_eq!(run_logged(&mut cmd).status.code(), Some(0));
    assert!(read_report(&report)
        .iter()
        .all(|r| r.status == "up-to-date" && r.bytes == 0));
    for i in [2, 4] {
        std::fs::remove_file(lab.host_file(i, "image.raw")).unwrap();
    }
    for strategy in ["bounce", "chain"] {
        for i in [2, 4] {
            let _ = std::fs::remove_file(lab.host_file(i, "image.raw"));
        }
        let mut cmd = bounce_run(
            &lab,
            strategy,
            &hosts,
            &report,
            &src,
            &lab.dest("image.raw"),
        );
        cmd.args(["--compress", "zstd"]);
        assert_eq!(run_logged(&mut cmd).status.code(), Some(0), "{strategy}");
        let rows = read_report(&report);
        for (k, r) in rows.iter().enumerate() {
            let i = k + 1;
            let want = if i % 2 == 0 { "verified" } else { "up-to-date" };
            assert_eq!(r.status, want, "{strategy}: {}", r.host);
            assert_same(&lab, i, "image.raw", &src);
            assert_eq!(lab.data_tree(i), ["image.raw"], "{strategy}: h{i}");
        }
    }
}

#[test]
fn compress_lz4_and_gzip_deliver_exact_copies_through_a_chain() {
    if !tools_present("compress_lz4_and_gzip_deliver_exact_copies_through_a_chain") {
        return;
    }
    let Some(lab) = Lab::start(
        "compress_lz4_and_gzip_deliver_exact_copies_through_a_chain",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    let src = lab.scratch().join("image.raw");
    mostly_zeros(&src, 48 * MIB, 6, 12);
    for (tool, args) in [("lz4", "-q -c -1"), ("gzip", "-c -1 -n")] {
        lab.clear_data();
        let wire = compressed_size(tool, args, &src);
        let report = lab.scratch().join(format!("{tool}.csv"));
        let mut cmd = bounce_run(
            &lab,
            "chain",
            &lab.host_names(3),
            &report,
            &src,
            &lab.dest("image.raw"),
        );
        cmd.args(["--compress", tool]);
        assert_eq!(run_logged(&mut cmd).status.code(), Some(0), "{tool}");
        for (k, r) in read_report(&report).iter().enumerate() {
            assert_eq!((r.status.as_str(), r.bytes), ("verified", wire), "{tool}");
            assert_same(&lab, k + 1, "image.raw", &src);
            assert_eq!(lab.data_tree(k + 1), ["image.raw"], "{tool}");
        }
    }
}

#[test]
fn a_compress_tool_missing_on_one_host_is_refused_before_anything_is_written() {
    if !tools_present("a_compress_tool_missing_on_one_host_is_refused_before_anything_is_written") {
        return;
    }
    let Some(lab) = Lab::start(
        "a_compress_tool_missing_on_one_host_is_refused_before_anything_is_written",
        LabConfig::hosts(3),
    ) else {
        return;
    };
    // Host 2 runs in a mount namespace of its own: lz4 is hidden there alone.
    let lz4 = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v lz4"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pid = lab.sshd_pid(2).expect("h2's sshd").to_string();
    let hide = Command::new("nsenter")
        .args(["-t", &pid, "-m", "mount", "--bind", "/dev/null", lz4.trim()])
        .status()
        .unwrap();
    assert!(hide.success());
    let src = lab.scratch().join("image.raw");
    mostly_zeros(&src, 8 * MIB, 2, 13);
    for strategy in ["chain", "bounce"] {
        let report = lab.scratch().join("r.csv");
        let mut cmd = bounce_run(
            &lab,
            strategy,
            &lab.host_names(3),
            &report,
            &src,
            &lab.dest("i.raw"),
        );
        cmd.args(["--compress", "lz4"]);
        let out = run_logged(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{strategy}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 2, "{stderr}");
        let last = stderr.trim().lines().last().unwrap();
        assert!(
            last.contains("h2") && last.contains("'lz4' is not installed there"),
            "{stderr}"
        );
        for i in 1..=3 {
            assert!(
                lab.data_tree(i).is_empty(),
                "{strategy}: h{i} holds {:?}",
                lab.data_tree(i)
            );
        }
    }
}
