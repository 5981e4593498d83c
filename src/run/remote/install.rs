//! Putting a verified copy in place (`install.sh`): its metadata and its rename onto DEST,
//! the digest checks before and after, and `--then`.

use super::names::parent;
use super::probe::Hasher;
use super::receive::Decode;
use super::Call;

/// Exit status of [`finalize`], [`verify`] and [`check`] when the digest does not match
/// (`install.sh`).
pub const DIGEST_MISMATCH_STATUS: i32 = 3;

/// The line that ends [`then`]'s output, followed by the command's exit status.
pub const THEN_STATUS_MARK: &str = "bounce-then-status ";

/// Lines of a `--then` command's output kept for the report.
pub const THEN_TAIL_LINES: u32 = 10;

/// Bytes of a `--then` command's output kept for the report, at most: a command that
/// prints one endless line (a progress bar redrawn with `\r`) fills no report.
pub const THEN_TAIL_BYTES: u32 = 4096;

/// What a copy gets at its rename besides its bytes: permission bits and, with
/// `--preserve`, SRC's modification time and owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// SRC's times and owner, applied too.
    pub preserve: Option<Preserve>,
}

impl Meta {
    /// Permission bits alone.
    pub fn mode(mode: u32) -> Meta {
        Meta {
            mode,
            preserve: None,
        }
    }
}

/// SRC's modification time and owner, for `--preserve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preserve {
    /// Seconds since the epoch (negative before 1970).
    pub mtime_secs: i64,
    /// Nanoseconds within that second.
    pub mtime_nanos: u32,
    /// Owner, applied only when the remote user is root.
    pub uid: u32,
    /// Group, applied only when the remote user is root.
    pub gid: u32,
}

impl Preserve {
    /// The modification time as `touch -d` takes it, `@SECONDS.NANOSECONDS`, signed as a
    /// whole: a time before 1970 is stored as seconds rounded down plus positive
    /// nanoseconds, which `@-6.750000000` would misread.
    pub(super) fn touch_date(&self) -> String {
        let total = i128::from(self.mtime_secs) * 1_000_000_000 + i128::from(self.mtime_nanos);
        let sign = if total < 0 { "-" } else { "" };
        let abs = total.unsigned_abs();
        format!("@{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
    }
}

/// Applies `meta` to `tmp` and renames it to `dest`, for a copy whose digest was already
/// checked as it was written (see [`super::stream_receive`]).
///
/// With [`Meta::preserve`], a root login first gives the copy SRC's owner and group, then
/// the whole mode (after `chown`, which clears setuid bits); any other login cannot give
/// the copy SRC's owner, so, as `cp -p` does, it keeps its own and the mode loses setuid
/// and setgid. Then SRC's modification time is applied, to the nanosecond.
///
/// `mv -T` is one `rename(2)` onto DEST itself: it replaces a file or a symlink (never what
/// the link points to) and fails on a directory instead of moving the copy into it. With
/// `fsync`, the copy is flushed before the rename and the directory after it, so that after a
/// power loss DEST holds either its old content or the verified new one.
pub fn install(tmp: &str, dest: &str, meta: Meta, fsync: bool) -> String {
    let mode = meta.mode;
    // `+` makes chown read the ids as numbers, even where they are also names.
    let (owner, mode_not_root, date) = match meta.preserve {
        Some(p) => (
            format!("+{}:+{}", p.uid, p.gid),
            format!("{:o}", mode & !0o6000),
            p.touch_date(),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    Call::new("bounce_install")
        .arg(tmp)
        .arg(dest)
        .arg(parent(dest))
        .arg(format!("{mode:o}"))
        .arg(owner)
        .arg(mode_not_root)
        .arg(date)
        .flag(fsync)
        .code()
}

/// Verifies `tmp` against `digest`, then installs it (see [`install`]). A mismatch
/// removes `tmp` and exits with [`DIGEST_MISMATCH_STATUS`], printing the digest found.
pub fn finalize(
    tmp: &str,
    dest: &str,
    digest: &str,
    meta: Meta,
    fsync: bool,
    hasher: Hasher,
) -> String {
    format!(
        "{}; {}",
        verify(tmp, digest, hasher),
        install(tmp, dest, meta, fsync)
    )
}

/// The check of [`finalize`], alone: `tmp` against `digest`.
pub fn verify(tmp: &str, digest: &str, hasher: Hasher) -> String {
    Call::new("bounce_verify")
        .arg(tmp)
        .arg(digest)
        .arg(hasher.command())
        .code()
}

/// With `--compress`: decompresses `tmp` into `dec` (emptied first, or created
/// exclusively), checks what came out against `digest`, then installs `dec` (see
/// [`install`]); `tmp` stays, for the host's relays and hops. A mismatch, or a copy that
/// does not decompress, removes both and exits with [`DIGEST_MISMATCH_STATUS`], printing
/// the digest found.
pub fn finalize_decoded(
    tmp: &str,
    decode: Decode,
    dest: &str,
    digest: &str,
    meta: Meta,
    fsync: bool,
    hasher: Hasher,
) -> String {
    format!(
        "{}; {}",
        verify_decoded(tmp, decode, digest, hasher),
        install(decode.into, dest, meta, fsync)
    )
}

/// The decompression and check of [`finalize_decoded`], alone.
pub fn verify_decoded(tmp: &str, decode: Decode, digest: &str, hasher: Hasher) -> String {
    Call::new("bounce_verify_decoded")
        .arg(parent(tmp))
        .arg(tmp)
        .arg(decode.codec.decompress_sh())
        .arg(decode.into)
        .arg(digest)
        .arg(hasher.command())
        .code()
}

/// Runs the user's `command` with `sh -c`, its `$1` being `dest` (a separate argument: the
/// command never sees DEST in its own text), standard input from `/dev/null` and standard
/// error into standard output. Prints the last [`THEN_TAIL_LINES`] lines of that, then
/// [`THEN_STATUS_MARK`] and its exit status on a line of their own; `tail` keeps only
/// those, however much the command prints.
pub fn then(command: &str, dest: &str) -> String {
    Call::new("bounce_then")
        .arg(command)
        .arg(dest)
        .arg((THEN_TAIL_LINES + 2).to_string())
        .arg(THEN_TAIL_BYTES.to_string())
        .arg(THEN_STATUS_MARK)
        .code()
}

/// Reads [`then`]'s output: the command's exit status and its last lines, or `None` when
/// the status line is missing (the job itself did not run to its end).
pub fn parse_then(out: &str) -> Option<(i32, String)> {
    let body = out.strip_suffix('\n').unwrap_or(out);
    let (text, last) = body.rsplit_once('\n').unwrap_or(("", body));
    let status = last.strip_prefix(THEN_STATUS_MARK)?.trim().parse().ok()?;
    // The job puts a newline before its status line, in case the output had none.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len().saturating_sub(THEN_TAIL_LINES as usize);
    Some((status, lines[keep..].join("\n")))
}

/// Hashes `dest` and exits [`DIGEST_MISMATCH_STATUS`], printing the digest found, unless it
/// is `digest`: a copy checked again after it was installed.
pub fn check(dest: &str, digest: &str, hasher: Hasher) -> String {
    Call::new("bounce_check")
        .arg(dest)
        .arg(digest)
        .arg(hasher.command())
        .code()
}
