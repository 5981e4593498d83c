//! The POSIX shell snippets run on the hosts. Every path and host name is passed through
//! [`shell_quote`]; the snippets need only `sh`, GNU coreutils, `find` and, for hops that
//! start on a host, an `ssh` client there.
//!
//! Every snippet that moves data prints `echo $$` before any data flows (the receiver once its
//! file exists): sshd puts each command in a session of its own, so that pid is also the
//! process group the runner kills (`kill -TERM -PID`) to stop a hop's whole pipeline on that
//! host.
//!
//! What the snippets promise about files (the README's "Failure behaviour" repeats it):
//!
//! - temporary files sit beside DEST as `.NAME.bounce-RUNID….tmp`, RUNID random per run; each
//!   is created exclusively (`dd conv=excl`, `O_EXCL`), mode 0600, and a symlink, FIFO or
//!   anything else already at its name is refused;
//! - DEST itself is only ever replaced by `mv -T` (one `rename(2)`): a directory at DEST is
//!   refused, and a symlink at DEST is replaced by the file, never written through;
//! - a copy is flushed (`sync FILE`) before that rename and the directory after it, unless
//!   the run says otherwise, so a power loss leaves the old DEST or the verified new one.

pub use super::codec::Codec;
use super::quote::shell_quote;
use crate::fleet::HostSpec;

/// Exit status of [`finalize`] when the digest does not match.
pub const DIGEST_MISMATCH_STATUS: i32 = 3;
/// Exit status of [`probe`] when DEST is a directory.
pub const DEST_IS_DIRECTORY_STATUS: i32 = 4;
/// Exit status of [`probe`] when DEST exists and is neither a regular file nor a symlink.
pub const DEST_NOT_A_FILE_STATUS: i32 = 5;
/// Exit status of [`probe`] when the `--compress` tool is not installed.
pub const TOOL_MISSING_STATUS: i32 = 6;
/// Temporary files of other runs untouched for longer than this are stale (see [`probe`]).
pub const STALE_TEMP_MINUTES: u32 = 10;

/// How much of DEST's name goes into its temporary names, so that they fit in the 255 bytes
/// a file name may have however long DEST's is.
const TEMP_NAME_KEEP: usize = 200;

/// The tool a host computes SHA-256 with, chosen by [`probe`]: the fastest it has.
///
/// GNU `sha256sum` hashes at about 270 MB/s on the development machine, `openssl dgst`
/// (which uses the CPU's SHA extensions) at about 1.2 GB/s: at 10 Gbit/s the difference is
/// four cores on every host. Both print the digest as their first word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hasher {
    /// `openssl dgst -sha256 -r`.
    Openssl,
    /// GNU coreutils' `sha256sum`, which every supported host has.
    Sha256sum,
}

impl Hasher {
    /// The command that hashes stdin.
    pub fn command(self) -> &'static str {
        match self {
            Hasher::Openssl => "openssl dgst -sha256 -r",
            Hasher::Sha256sum => "sha256sum",
        }
    }

    /// Its name in the probe's answer and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Hasher::Openssl => "openssl",
            Hasher::Sha256sum => "sha256sum",
        }
    }

    /// The hasher named `name`.
    pub fn from_name(name: &str) -> Option<Hasher> {
        match name {
            "openssl" => Some(Hasher::Openssl),
            "sha256sum" => Some(Hasher::Sha256sum),
            _ => None,
        }
    }
}

/// SHA-256 of nothing: the probe checks that `openssl` computes it before trusting it.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Wraps a snippet so it runs under `sh` whatever the login shell is.
pub fn sh_c(script: &str) -> String {
    format!("sh -c {}", shell_quote(script))
}

/// The directory part of an absolute path (`/` for a file in the root).
pub fn parent(dest: &str) -> &str {
    match dest.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &dest[..i],
    }
}

/// DEST's file name as temporary names use it: at most [`TEMP_NAME_KEEP`] bytes, cut on a
/// character boundary.
pub(crate) fn temp_stem(dest: &str) -> &str {
    let name = &dest[dest.rfind('/').map_or(0, |i| i + 1)..];
    let mut end = name.len().min(TEMP_NAME_KEEP);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The temporary name beside `dest` for run `run_id`: `.NAME.bounce-RUNID{tag}.tmp`.
pub fn temp_path(dest: &str, run_id: &str, tag: &str) -> String {
    let dir = parent(dest);
    let sep = if dir.ends_with('/') { "" } else { "/" };
    format!("{dir}{sep}.{}.bounce-{run_id}{tag}.tmp", temp_stem(dest))
}

/// The staging directory beside `dest` that a tree is unpacked into for run `run_id`.
pub fn stage_path(dest: &str, run_id: &str) -> String {
    temp_path(dest, run_id, STAGE_TAG)
}

/// Where a rerun's old tree is renamed to for an instant, while the new one takes its place.
pub fn old_tree_path(dest: &str, run_id: &str) -> String {
    temp_path(dest, run_id, "-old")
}

const STAGE_TAG: &str = "-stage";

/// True for a path made by [`stage_path`].
fn is_stage(path: &str) -> bool {
    path.ends_with(&format!("{STAGE_TAG}.tmp"))
}

/// With `--compress`, the temporary file beside `tmp` that its decompressed bytes go to
/// (`tmp` itself keeps the compressed bytes, which the host's relays and hops read).
pub fn decoded_path(tmp: &str) -> String {
    format!("{}-d.tmp", tmp.strip_suffix(".tmp").unwrap_or(tmp))
}

/// Where a host decompresses the bytes it receives, with `--compress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decode<'a> {
    /// The compressor the bytes went through.
    pub codec: Codec,
    /// The temporary file the decompressed bytes go to ([`decoded_path`]).
    pub into: &'a str,
}

/// A `find -name` pattern matching the temporary names of every run beside `dest`.
fn temp_glob(dest: &str) -> String {
    temp_glob_ending(dest, ".tmp")
}

/// [`temp_glob`] for the names that end in `end`.
fn temp_glob_ending(dest: &str, end: &str) -> String {
    let mut s = String::from(".");
    for c in temp_stem(dest).chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push_str(".bounce-*");
    s.push_str(end);
    s
}

/// Tells what DEST is before anything is sent, after sweeping stale temporary files.
///
/// The transport runs it registered (its pid printed before it), so that an interrupt while
/// it still hashes stops it. Prints `hasher NAME`, the [`Hasher`] this host will use
/// (`openssl` if it computes SHA-256 right, `sha256sum` otherwise), then one `swept PATH`
/// line per stale temporary file or staging directory removed, then one of: `missing`; `link` (a symlink, which the copy will replace); `size` (a regular file of
/// another size than `size`, not hashed); `file DIGEST` (a regular file of that size). A
/// directory exits [`DEST_IS_DIRECTORY_STATUS`]; anything else that is not a regular file
/// exits [`DEST_NOT_A_FILE_STATUS`]. With `tool` (`--compress`), a host without that
/// command exits [`TOOL_MISSING_STATUS`] first.
///
/// A temporary file beside DEST is stale when it is ours (same owner), untouched for more
/// than [`STALE_TEMP_MINUTES`] minutes and open in no process: every live run keeps its
/// temporary files open while it writes them (see [`stream_receive`], [`receive_chunks`]).
/// The check is by inode (`find -L … -samefile`), so no spelling of the path can fool it.
/// The processes' list is taken before `find` starts: `find` holds the file it compares
/// with open itself, and must not see its own descriptor. Stat'ing every open file can
/// hang on a dead network mount: after 10 s the check is abandoned and the file kept.
///
/// A tree's staging directory ([`stage_path`]) left by a run that was killed is swept the
/// same way, whole: when it is ours, its own entries untouched for more than
/// [`STALE_TEMP_MINUTES`] minutes, and no process has a file in it open or works in it
/// (a live run's `tar` does both). A rerun's previous tree set aside ([`old_tree_path`])
/// is never swept: if its run died between its two renames, it is the only copy.
pub fn probe(dest: &str, size: u64, tool: Option<Codec>) -> String {
    let tool = tool.map_or(String::new(), |t| {
        format!(
            "command -v {} > /dev/null 2>&1 || exit {TOOL_MISSING_STATUS}\n",
            t.tool()
        )
    });
    format!(
        "{tool}{prelude}\n\
         if [ -L \"$d\" ]; then echo link\n\
         elif [ -d \"$d\" ]; then exit {DEST_IS_DIRECTORY_STATUS}\n\
         elif [ ! -e \"$d\" ]; then echo missing\n\
         elif [ ! -f \"$d\" ]; then exit {DEST_NOT_A_FILE_STATUS}\n\
         elif [ \"$(stat -c %s -- \"$d\")\" != {size} ]; then echo size\n\
         else h=$($H < \"$d\") || exit 1; echo \"file ${{h%% *}}\"; fi",
        prelude = probe_prelude(dest),
    )
}

/// The start of every probe: sets `d` to DEST and `H` to the hasher's command (printing
/// `hasher NAME`), then sweeps the stale temporary files beside DEST (printing `swept PATH`
/// for each), as [`probe`] describes.
pub fn probe_prelude(dest: &str) -> String {
    format!(
        "d={d}\n\
         if x=$({openssl} < /dev/null 2>/dev/null) && [ \"${{x%% *}}\" = {EMPTY_SHA256} ]; \
         then H='{openssl}'; echo 'hasher openssl'; else H=sha256sum; echo 'hasher sha256sum'; fi\n\
         s=$(find {dir} -mindepth 1 -maxdepth 1 -name {glob} -type f -user \"$(id -u)\" \
         -mmin +{STALE_TEMP_MINUTES} 2>/dev/null)\n\
         [ -z \"$s\" ] || printf '%s\\n' \"$s\" | while IFS= read -r f; do \
         set -- /proc/[0-9]*/fd; \
         b=$(timeout -s KILL 10 find -L \"$@\" -mindepth 1 -maxdepth 1 -samefile \"$f\" \
         -print -quit 2>/dev/null; echo \":$?\"); \
         case $b in :137) ;; :*) rm -f -- \"$f\" && echo \"swept $f\";; esac; done\n\
         s=$(find {dir} -mindepth 1 -maxdepth 1 -name {stages} -type d -user \"$(id -u)\" \
         -mmin +{STALE_TEMP_MINUTES} 2>/dev/null)\n\
         [ -z \"$s\" ] || printf '%s\\n' \"$s\" | while IFS= read -r f; do \
         r=$(readlink -f -- \"$f\") || continue; \
         p=$(printf '%s' \"$r\" | sed 's/[][*?\\\\]/\\\\&/g'); \
         set -- /proc/[0-9]*/fd /proc/[0-9]*/cwd; \
         b=$(timeout -s KILL 10 find \"$@\" -maxdepth 1 \\( -lname \"$p\" -o -lname \"$p/*\" \\) \
         -print -quit 2>/dev/null; echo \":$?\"); \
         case $b in :137) ;; :*) rm -rf -- \"$f\" && echo \"swept $f\";; esac; done",
        openssl = Hasher::Openssl.command(),
        d = shell_quote(dest),
        dir = shell_quote(parent(dest)),
        glob = shell_quote(&temp_glob(dest)),
        stages = shell_quote(&temp_glob_ending(dest, &format!("{STAGE_TAG}.tmp"))),
    )
}

/// Creates `tmp` exclusively and opens it on fd 3 (mode 0600, `dest`'s parents created):
/// fails if anything is already there.
///
/// `dd conv=excl` opens with `O_CREAT|O_EXCL`, which never follows a symlink and never opens
/// a FIFO or a device; the shell's own `set -C` would (it refuses only a regular file). The
/// new file is then opened on fd 3 and checked to be a regular file before anything is
/// written.
fn create_exclusive(dest: &str, tmp: &str) -> String {
    create_exclusive_on(dest, tmp, 3)
}

/// `create_exclusive` on descriptor `fd`.
fn create_exclusive_on(dest: &str, tmp: &str, fd: u8) -> String {
    format!(
        "mkdir -p -- {dir} && umask 077 && dd if=/dev/null of={tmp} conv=excl status=none \
         && exec {fd}<> {tmp} && [ -f /dev/fd/{fd} ] || exit 1",
        dir = shell_quote(parent(dest)),
        tmp = shell_quote(tmp),
    )
}

/// Creates `fence`, a temporary file beside `dest`, empty and exclusively: a link's
/// receiving end passes it before writing anything ([`pass_fence`]), so that the controller
/// can stop that end from ever writing by removing it first ([`cut_fence`]), without
/// waiting for the link's sender. Exits 1, the cause on stderr, if it cannot.
pub fn create_fence(dest: &str, fence: &str) -> String {
    format!(
        "mkdir -p -- {dir} && umask 077 && dd if=/dev/null of={f} conv=excl status=none",
        dir = shell_quote(parent(dest)),
        f = shell_quote(fence),
    )
}

/// What a link's receiving end runs before anything else: removes `fence` (see
/// [`create_fence`]), or exits 1 with the cause on stderr when it is gone, the link having
/// been cut before this end started. One `rm` of one name, so exactly one of this and
/// [`cut_fence`] succeeds.
pub fn pass_fence(fence: &str) -> String {
    format!(
        "rm -- {} 2>/dev/null || {{ echo \"this link was cut before its receiving end started\" >&2; \
         exit 1; }}; ",
        shell_quote(fence)
    )
}

/// Removes `fence` (see [`create_fence`]) and prints `cut` if it was there: the receiving
/// end it guards will then never write. Prints nothing when that end has passed it.
pub fn cut_fence(fence: &str) -> String {
    format!("rm -- {} 2>/dev/null && echo cut", shell_quote(fence))
}

/// The stage that decompresses a stream and writes the result to descriptor 6, passing it
/// on to be hashed. A truncated or corrupt input ends the decompressor early; the rest of
/// its input is drained, so that the stage before it is not killed by a closed pipe, and
/// the digest, of what came out, then tells the copy is wrong.
fn decode_stage(codec: Codec) -> String {
    format!(
        "{{ {}; cat > /dev/null; }} | {{ tee --output-error=exit -- /dev/fd/6 || kill -TERM 0; }}",
        codec.decompress_sh()
    )
}

/// Receives chunks into `tmp`: reads `OFFSET LENGTH` lines, each followed by exactly LENGTH
/// bytes, writes them at OFFSET and answers `ok OFFSET` once they are on disk.
///
/// `tmp` may already hold this run's chunks (a stream into it broke, and the rest comes by
/// request): then it must be a regular file, not a symlink; otherwise it is created
/// exclusively. It stays open on fd 3 while the loop runs, which also marks it as live for
/// other runs' sweeps (see [`probe`]).
///
/// One `dd` per chunk reads exactly LENGTH bytes (`fullblock,count_bytes`) and writes them in
/// place; its own byte count, read from its summary in the C locale, proves the whole chunk
/// arrived. A single process per chunk matters: a chain starts one per chunk on every host.
/// On failure only dd's first line, the one naming the cause, goes to stderr.
pub fn receive_chunks(dest: &str, tmp: &str) -> String {
    format!(
        "echo $$; if [ -L {tmp} ] || {{ [ -e {tmp} ] && [ ! -f {tmp} ]; }}; then \
         echo \"refusing to write through \"{tmp}\": not a regular file\" >&2; exit 1; fi; \
         if [ -e {tmp} ]; then exec 3<> {tmp} && [ -f /dev/fd/3 ] || exit 1; else {create}; fi\n\
         while read off len; do \
         r=$(LC_ALL=C dd of=/dev/fd/3 bs=1M iflag=fullblock,count_bytes count=\"$len\" \
         seek=\"$off\" oflag=seek_bytes conv=notrunc 2>&1) \
         || {{ printf '%s\\n' \"$r\" | head -n 1 >&2; exit 1; }}; \
         n=${{r##*records out}}; n=${{n#?}}; n=${{n%% *}}; \
         [ \"$n\" = \"$len\" ] || {{ echo \"short chunk at $off\" >&2; exit 1; }}; \
         echo \"ok $off\"; done",
        create = create_exclusive(dest, tmp),
        tmp = shell_quote(tmp),
    )
}

/// Receives the whole file as one stream on stdin into `tmp` (created exclusively, see
/// `create_exclusive`), hashing it on the way: the receiving end of every whole-file hop
/// and of every chain stream. Prints `$$` once `tmp` exists (a chain relay follows that
/// file), then `at N`, the bytes written so far, twice a second, and once its input ends
/// `end N DIGEST`: the bytes written and their SHA-256. A failed write (a full disk) kills
/// its process group at once (sshd runs it in a session of its own), with the cause on
/// stderr.
///
/// `tee` writes through `/dev/fd/3`, the file this snippet created, so nothing put at the
/// name afterwards is written to.
///
/// Nothing waits for the `at` reports (they feed progress and the core's bookkeeping), so
/// they are kept rare: each costs two process starts on a host that is busy relaying.
///
/// With `decode` (`--compress`), `tmp` receives the compressed bytes and a second file,
/// `decode.into`, created exclusively too, their decompression; the digest is of the
/// decompressed bytes, and `at` and `end` still count what `tmp` holds.
pub fn stream_receive(dest: &str, tmp: &str, hasher: Hasher, decode: Option<Decode>) -> String {
    stream_receive_unpacking(dest, tmp, hasher, decode, None)
}

/// [`stream_receive`], for a tree's archive: with `unpack`, the bytes that are hashed
/// (decompressed, with `decode`) are also unpacked as they arrive (see
/// [`super::tree_script::Behind`]), and `end` is printed once that is over too.
pub fn stream_receive_unpacking(
    dest: &str,
    tmp: &str,
    hasher: Hasher,
    decode: Option<Decode>,
    unpack: Option<&super::tree_script::Behind>,
) -> String {
    let (start, tap, join) = match unpack {
        None => (String::new(), String::new(), ""),
        Some(b) => (b.start(), b.tap(), "wait \"$x\"; "),
    };
    let (create_dec, dec) = match decode {
        None => (String::new(), String::new()),
        Some(d) => (
            format!("{}; ", create_exclusive_on(dest, d.into, 6)),
            format!("{} | ", decode_stage(d.codec)),
        ),
    };
    format!(
        "{create}; {create_dec}{start}echo $$; \
         ( while sleep 0.5 > /dev/null 2>&1; do echo \"at $(stat -c %s -- {tmp})\"; done ) & p=$!; \
         h=$({{ tee --output-error=exit -- /dev/fd/3 || kill -TERM 0; }} | {dec}{tap}{hash}); \
         kill \"$p\" 2>/dev/null; {join}\
         echo \"end $(stat -c %s -- {tmp}) ${{h%% *}}\"",
        create = create_exclusive(dest, tmp),
        tmp = shell_quote(tmp),
        hash = hasher.command(),
    )
}

/// Continues a chain stream into `tmp`, this run's copy, which already holds the file's
/// first `offset` bytes (the host that fed it was lost or cut out): appends stdin to it, and
/// hashes the whole copy, `size` bytes, by following it from its start as it grows, so no
/// byte is sent twice and the digest still covers the whole file. Prints the same lines as
/// [`stream_receive`]; refuses (exit 1, the cause on stderr) a `tmp` that is not a regular
/// file or does not hold exactly `offset` bytes.
///
/// With `decode`, the whole copy is decompressed again from its start into `decode.into`
/// (emptied first, or created exclusively), and the digest is of that.
pub fn stream_resume(
    tmp: &str,
    offset: u64,
    size: u64,
    hasher: Hasher,
    decode: Option<Decode>,
) -> String {
    let (open_dec, dec) = match decode {
        None => (String::new(), String::new()),
        Some(d) => {
            let f = shell_quote(d.into);
            (
                format!(
                    "if [ -L {f} ] || {{ [ -e {f} ] && [ ! -f {f} ]; }}; then \
                     echo \"refusing to write through \"{f}\": not a regular file\" >&2; exit 1; \
                     elif [ -e {f} ]; then umask 077 && exec 6> {f} || exit 1; \
                     else {}; fi; ",
                    create_exclusive_on(tmp, d.into, 6)
                ),
                format!("{} | ", decode_stage(d.codec)),
            )
        }
    };
    format!(
        "if [ -L {t} ] || [ ! -f {t} ]; then echo \"no copy to resume at \"{t} >&2; exit 1; fi; \
         exec 3<> {t} && [ -f /dev/fd/3 ] || exit 1; n=$(stat -c %s -- {t}); \
         [ \"$n\" = {offset} ] || {{ echo \"the copy at \"{t}\" holds $n bytes, not {offset}\" >&2; exit 1; }}; \
         {open_dec}echo $$; \
         ( while sleep 0.5 > /dev/null 2>&1; do echo \"at $(stat -c %s -- {t})\"; done ) & p=$!; \
         exec 4<&0; {{ cat <&4 >> /dev/fd/3 || kill -TERM 0; }} & w=$!; exec 4<&-; \
         h=$(tail -c +1 -f --pid=$w -s 0.05 /dev/fd/3 | head -c {size} | {dec}{hash}); \
         wait $w; kill \"$p\" 2>/dev/null; \
         echo \"end $(stat -c %s -- {t}) ${{h%% *}}\"",
        t = shell_quote(tmp),
        hash = hasher.command(),
    )
}

/// The ciphers bounce asks for when it may choose: OpenSSH's default set with AES-GCM
/// first. The server takes the first of these it also offers, so AES-GCM is used when both
/// ends have it, and the rest keep every other server reachable. On a CPU with AES
/// instructions AES-GCM costs about half of chacha20-poly1305 (OpenSSH's first choice).
pub const PREFERRED_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

/// Options for `ssh` run on a host to reach the next one.
#[derive(Clone, Debug)]
pub struct HopSsh {
    /// `StrictHostKeyChecking=accept-new` instead of `yes`.
    pub accept_new_host_keys: bool,
    /// ConnectTimeout in whole seconds.
    pub connect_timeout_s: u64,
    /// `--limit-rate`: what each upload from a host may send per second (see [`pace`]).
    pub upload_limit: Option<u64>,
}

impl HopSsh {
    /// `ssh OPTIONS -- HOST 'sh -c REMOTE'`, to be run on a host to reach `to`.
    ///
    /// The ssh asks for [`PREFERRED_CIPHERS`] when the sending host's CPU has AES
    /// instructions and its own ssh configuration leaves the ciphers at OpenSSH's default
    /// (`ssh -G` says the same with and without it); a configuration that names ciphers is
    /// obeyed.
    pub fn command(&self, to: &HostSpec, remote: &str) -> String {
        let strict = if self.accept_new_host_keys {
            "accept-new"
        } else {
            "yes"
        };
        let h = shell_quote(&to.host);
        let mut s = format!(
            "ssh $(grep -qw aes /proc/cpuinfo 2>/dev/null && \
             [ \"$(ssh -G -- {h} 2>/dev/null | grep '^ciphers ')\" = \
             \"$(ssh -F /dev/null -G -- {h} 2>/dev/null | grep '^ciphers ')\" ] && \
             echo -oCiphers={PREFERRED_CIPHERS}) \
             -T -x -o BatchMode=yes -o StrictHostKeyChecking={strict} \
             -o ConnectTimeout={} -o ServerAliveInterval=2 -o ServerAliveCountMax=3",
            self.connect_timeout_s.max(1)
        );
        if let Some(p) = to.port {
            s.push_str(&format!(" -p {p}"));
        }
        if let Some(u) = &to.user {
            s.push_str(&format!(" -l {}", shell_quote(u)));
        }
        s.push_str(&format!(
            " -- {} {}",
            shell_quote(&to.host),
            shell_quote(&sh_c(remote))
        ));
        s
    }
}

/// How often a host's paced upload (see [`pace`]) looks at the clock, in milliseconds.
pub const PACE_PERIOD_MS: u64 = 250;

/// Waits until `$t`, a deadline in microseconds since the epoch; a deadline already past
/// moves to now, so that a sender held up by its input earns no burst afterwards.
const PACE_WAIT: &str = "d=$((t - $(date +%s%6N))); if [ $d -gt 0 ]; then sleep $((d / 1000000)).$(printf %06d $((d % 1000000))); else t=$((t - d)); fi";

/// A filter that passes the first `total` bytes of stdin to stdout at `rate` bytes per
/// second at most, for `--limit-rate` on a host: every [`PACE_PERIOD_MS`] one `dd` moves a
/// period's worth, then the loop sleeps until that period's deadline. Over any stretch
/// longer than a period the rate stays under the cap; within one, the bytes go at the
/// link's rate. It costs four process starts a period (`dd`, `date`, `sleep` and the
/// subshell that formats the sleep), whatever the rate.
pub fn pace(rate: u64, total: u64) -> String {
    let rate = rate.max(1);
    let per = (rate * PACE_PERIOD_MS / 1000).max(1);
    format!(
        "t=$(date +%s%6N); l={total}; while [ $l -gt 0 ]; do n={per}; [ $n -le $l ] || n=$l;          dd bs=1M count=$n iflag=fullblock,count_bytes status=none || exit 1; l=$((l - n));          t=$((t + n * 1000000 / {rate})); {PACE_WAIT}; done"
    )
}

/// What a whole-file hop from a host reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFrom<'a> {
    /// A file sent as it is: the host's DEST, or with `--compress` the compressed copy it
    /// received in this run.
    File(&'a str),
    /// With `--compress`, a DEST that was up to date, compressed on the way (the host has no
    /// compressed copy of its own).
    Compressing(&'a str, Codec),
}

/// Run on X: sends X's verified copy (see [`SendFrom`]), `size` bytes, to `to`, whose
/// `receive` snippet takes it (paced by `ssh`'s upload limit). A watcher on stdin kills the hop when the controller's
/// channel closes (the controller or its connection died), so no copy goes on unattended.
/// (An asynchronous list's stdin is /dev/null unless redirected explicitly, hence the copy
/// of stdin on fd 4.)
pub fn send_whole(
    ssh: &HopSsh,
    from: SendFrom<'_>,
    to: &HostSpec,
    receive: &str,
    size: u64,
) -> String {
    let send = ssh.command(to, receive);
    let send = match (from, ssh.upload_limit) {
        (SendFrom::File(f), None) => format!("exec {send} < {} 4<&-", shell_quote(f)),
        (SendFrom::File(f), Some(rate)) => format!(
            "{{ {}; }} < {} 4<&- | {send} 4<&-",
            pace(rate, size),
            shell_quote(f)
        ),
        (SendFrom::Compressing(f, codec), limit) => format!(
            "{} < {} 4<&- | {}{send} 4<&-",
            codec.compress_sh(),
            shell_quote(f),
            limit.map_or(String::new(), |rate| format!(
                "{{ {}; }} | ",
                pace(rate, size)
            ))
        ),
    };
    format!(
        "echo $$; exec 4<&0; {{ cat > /dev/null; kill -TERM 0; }} <&4 > /dev/null 2>&1 & {send}"
    )
}

/// Creates `tmp`, the copy a hop over several streams (`--streams`) writes its parts into,
/// exclusively (see `create_exclusive`), and prints its identity, `DEVICE:INODE`: each
/// part's receiver ([`part_receive`]) writes only into that very file.
pub fn create_for_parts(dest: &str, tmp: &str) -> String {
    format!(
        "{}; stat -L -c %d:%i /dev/fd/3",
        create_exclusive(dest, tmp)
    )
}

/// Receives part `index`, bytes `part`, of a hop cut into several streams (`--streams`, see
/// [`crate::run::split`]) on stdin, writing it in place into `tmp`, and hashing it on the
/// way. `tmp` was made by [`create_for_parts`], which printed `file`: the part is written
/// only if what it opens is that file, a regular file of this login's, not a symlink (the
/// open never creates a file). Prints `$$` once `tmp` is open, then, once its input ends,
/// `part INDEX DIGEST`: the SHA-256 of exactly what it wrote. A short or altered part has
/// another digest, so no byte count is needed. With `report`, it also prints `at N` twice a
/// second, N being the bytes the copy holds on disk so far over all parts (its allocated
/// blocks: the parts write at different offsets, so the file's size says nothing). A failed
/// write kills its process group at once, with the cause on stderr.
pub fn part_receive(
    tmp: &str,
    file: &str,
    index: usize,
    part: std::ops::Range<u64>,
    hasher: Hasher,
    report: bool,
) -> String {
    let t = shell_quote(tmp);
    let (start, stop) = if report {
        (
            format!(
                "( while sleep 0.5 > /dev/null 2>&1; do \
                 echo \"at $(($(stat -c '%b * %B' -- {t})))\"; done ) & p=$!; "
            ),
            "kill \"$p\" 2>/dev/null; ",
        )
    } else {
        (String::new(), "")
    };
    // Opened for reading, which creates nothing; dd opens it again through /dev/fd/3 to
    // write, which reaches the same file whatever is at the name by then. tee hands each
    // block to the hasher and, through fd 7, to that dd, which writes it at the part's
    // offset (tee itself cannot seek); the digest comes back on fd 8.
    format!(
        "if [ -L {t} ] || [ ! -f {t} ]; then echo \"no copy at \"{t}\" to write part {index} into\" >&2; exit 1; fi; \
         exec 3< {t} || exit 1; \
         if [ \"$(stat -L -c %d:%i /dev/fd/3)\" != {file} ] || [ ! -O /dev/fd/3 ]; then \
         echo \"refusing to write part {index} into \"{t}\": not the copy this run made\" >&2; exit 1; fi; \
         echo $$; {start}\
         h=$( {{ {{ {{ tee --output-error=exit -- /dev/fd/7 || kill -TERM 0; }} | {hash} >&8 7>&-; }} 7>&1 | \
         {{ dd of=/dev/fd/3 bs=1M seek={offset} oflag=seek_bytes conv=notrunc status=none 8>&- \
         || kill -TERM 0; }}; }} 8>&1 ); \
         {stop}echo \"part {index} ${{h%% *}}\"",
        file = shell_quote(file),
        hash = hasher.command(),
        offset = part.start,
    )
}

/// Run on X: sends `parts` of X's verified copy `from`, each over its own `ssh` to `to`
/// (one connection each, so each has its own cipher on its own core at both ends), into
/// `receives[i]` (see [`part_receive`]). Prints `$$` first; what the receivers print comes
/// back interleaved by lines. A part whose ssh fails kills the whole group at once; the
/// same watcher on stdin as [`send_whole`]'s stops it all when the controller goes away.
/// With the ssh's upload limit, each part is paced at an even share of it.
pub fn send_parts(
    ssh: &HopSsh,
    from: &str,
    parts: &[std::ops::Range<u64>],
    to: &HostSpec,
    receives: &[String],
) -> String {
    let share = ssh
        .upload_limit
        .map(|r| (r / parts.len().max(1) as u64).max(1));
    let sends: String = parts
        .iter()
        .zip(receives)
        .map(|(p, receive)| {
            let len = p.end - p.start;
            let pace = share.map_or(String::new(), |r| format!("{{ {}; }} | ", pace(r, len)));
            format!(
                "{{ {{ dd if={f} bs=1M skip={skip} count={len} iflag=skip_bytes,count_bytes \
                 status=none 4<&- || kill -TERM 0; }} | {pace}{ssh} 4<&- || kill -TERM 0; }} & \
                 w=\"$w $!\"; ",
                f = shell_quote(from),
                skip = p.start,
                ssh = ssh.command(to, receive),
            )
        })
        .collect();
    format!(
        "echo $$; exec 4<&0; {{ cat > /dev/null; kill -TERM 0; }} <&4 > /dev/null 2>&1 & \
         w=; {sends}wait $w"
    )
}

/// Run on X: a chain link to `to`. Reads `OFFSET LENGTH` requests on stdin and sends each
/// chunk from X's copy (its temporary file while it is still receiving, DEST once renamed) to
/// the receive loop on `to`, whose acknowledgements come back on stdout.
///
/// The copy is opened once and each chunk is read through `/dev/fd/3`, which reopens the same
/// file even after it is renamed into place.
pub fn send_chunks(
    ssh: &HopSsh,
    from_dest: &str,
    from_tmp: &str,
    to: &HostSpec,
    to_dest: &str,
    to_tmp: &str,
) -> String {
    // When the link to Y dies, the reader would wait for the next request forever while the
    // controller waits for an acknowledgement: kill the whole group so the controller sees
    // the link close.
    format!(
        "{} | {{ {}; s=$?; [ $s -eq 0 ] || kill -TERM 0; exit $s; }}",
        chunk_reader(from_dest, from_tmp, ssh.upload_limit),
        ssh.command(to, &receive_chunks(to_dest, to_tmp))
    )
}

/// The reading half of [`send_chunks`]: prints `$$`, then for each request line the same
/// line followed by the requested bytes. With a `limit` (bytes per second), each chunk waits
/// until the ones before it have had their time at that rate.
pub fn chunk_reader(from_dest: &str, from_tmp: &str, limit: Option<u64>) -> String {
    let (start, wait) = match limit {
        None => (String::new(), String::new()),
        Some(rate) => (
            "t=$(date +%s%6N); ".to_string(),
            format!("{PACE_WAIT}; t=$((t + len * 1000000 / {})); ", rate.max(1)),
        ),
    };
    format!(
        "echo $$; f={tmp}; [ -e \"$f\" ] || f={dest}; exec 3< \"$f\" || exit 1; {start}\n\
         while read off len; do {wait}printf '%s %s\\n' \"$off\" \"$len\"; \
         dd if=/dev/fd/3 bs=1M skip=\"$off\" count=\"$len\" iflag=skip_bytes,count_bytes status=none || exit 1; \
         done",
        tmp = shell_quote(from_tmp),
        dest = shell_quote(from_dest),
    )
}

/// Where a chain relay on X reads X's copy from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayFrom<'a> {
    /// X's temporary file, which X is receiving or about to receive: the relay waits up to
    /// [`RELAY_WAIT_S`] seconds for it to appear.
    Receiving(&'a str),
    /// X's DEST, which holds the verified file (X was up to date, or is done).
    Installed(&'a str),
    /// With `--compress`, X's DEST, which was up to date, compressed on the way: the same
    /// bytes as SRC's compressed copy where X's tool is the same version as this machine's.
    Compressing(&'a str, Codec),
}

/// How long a relay waits for its sender's temporary file to appear, in seconds.
pub const RELAY_WAIT_S: u32 = 30;

/// How often a relay's `tail` looks for more of the copy it follows, in milliseconds: at
/// each hop a stream waits up to this (half of it on average), and once the relay has sent
/// the whole file it ends within this.
pub const RELAY_POLL_MS: u32 = 50;

/// Run on X: relays bytes `bytes` (`offset..size`) of X's copy of a `size`-byte file to
/// `to`, whose `receive` snippet takes them ([`stream_receive`], or [`stream_resume`] for a
/// copy that already holds the bytes before `offset`), while X receives it, for a chain link
/// planned ahead.
///
/// The ssh to `to` starts at once, so its setup overlaps the wait for X's copy. Meanwhile the
/// relay waits for the copy to appear (see [`RelayFrom`]), opens it, and only then prints
/// `relay $$`: once the controller has read that line, X's copy may be renamed into place,
/// and the relay keeps reading the same file through its descriptor. The far end prints its
/// own pid as every [`stream_receive`] does; the two lines come in either order.
///
/// GNU `tail -f` follows the copy as it grows, through the descriptor (`/dev/fd/5`, so it
/// polls every [`RELAY_POLL_MS`]: inotify cannot watch that name), with no process started
/// per look; `head` stops after `size` bytes, then ends the sentinel `sleep` that
/// `tail --pid` watches, so that `tail` ends too (with an upload limit, [`pace`] takes
/// `head`'s place). The relay does not watch X's receiver: if X's copy
/// stops growing, the controller ends the relay (X is retried or given up), and while X is
/// fed again another way (a request link after a broken stream) the relay just goes on
/// following the same file, which the core has only ever grow from its end (see
/// [`crate::core::Chain`]).
///
/// The rest of stdin is a watcher: when the controller's channel closes, the relay's whole
/// process group is killed. (An asynchronous list's stdin is /dev/null unless redirected,
/// and dash applies that before `<&0`: hence fd 4.) When the ssh to `to` fails, the relay
/// kills its whole group at once.
///
/// Following the file, rather than a pipe filled by the receiver, keeps the two apart: a
/// relay that dies, lags or never starts cannot stall X's own copy.
pub fn stream_relay(
    ssh: &HopSsh,
    from: RelayFrom<'_>,
    bytes: std::ops::Range<u64>,
    to: &HostSpec,
    receive: &str,
) -> String {
    let open = match from {
        RelayFrom::Receiving(tmp) => {
            let t = shell_quote(tmp);
            // Looks every 50 ms for half a second, then every 200 ms: a relay set up ahead
            // may wait seconds, and a sleep is a process start on a host that is busy
            // setting up others.
            format!(
                "i=0; w=0.05; until [ -f {t} ] && [ ! -L {t} ]; do i=$((i + 1)); \
                 [ $i -le {tries} ] || {{ echo \"no file \"{t}\" to relay\" >&2; exit 1; }}; \
                 sleep $w; [ $i -lt 10 ] || w=0.2; done; exec 5< {t} || exit 1",
                tries = 10 + (RELAY_WAIT_S * 5),
            )
        }
        RelayFrom::Installed(dest) | RelayFrom::Compressing(dest, _) => {
            format!("exec 5< {} || exit 1", shell_quote(dest))
        }
    };
    // A relay that resumes a copy at an offset waits for its own copy to reach that far: it
    // may be behind the host it feeds (it took that host's place at the chain's tail), and
    // `tail` must not start past the end of what it follows.
    let reach = if bytes.start > 0 && !matches!(from, RelayFrom::Compressing(..)) {
        format!(
            "while [ \"$(stat -L -c %s /dev/fd/5)\" -lt {} ]; do sleep 0.2; done; ",
            bytes.start
        )
    } else {
        String::new()
    };
    format!(
        "exec 4<&0 6>&1; {{ cat > /dev/null; kill -TERM 0; }} <&4 > /dev/null 2>&1 6>&- & \
         {{ exec 4<&-; {open}; echo \"relay $$\" >&6; exec 6>&-; {reach}\
         sleep 2147483647 > /dev/null & w=$!; \
         {follow} | {{ {take}; kill $w; }}; }} | \
         {{ exec 4<&- 6>&-; {}; s=$?; [ $s -eq 0 ] || kill -TERM 0; exit $s; }}",
        ssh.command(to, receive),
        follow = match from {
            RelayFrom::Compressing(_, codec) => format!(
                "{{ {} <&5 | tail -c +{}; }}",
                codec.compress_sh(),
                bytes.start + 1
            ),
            _ => format!(
                "tail -c +{} -f --pid=$w -s {} /dev/fd/5",
                bytes.start + 1,
                f64::from(RELAY_POLL_MS) / 1000.0
            ),
        },
        take = match ssh.upload_limit {
            None => format!("head -c {}", bytes.end - bytes.start),
            Some(rate) => pace(rate, bytes.end - bytes.start),
        },
    )
}

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
    fn touch_date(&self) -> String {
        let total = i128::from(self.mtime_secs) * 1_000_000_000 + i128::from(self.mtime_nanos);
        let sign = if total < 0 { "-" } else { "" };
        let abs = total.unsigned_abs();
        format!("@{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
    }
}

/// Applies `meta` to `tmp` and renames it to `dest`, for a copy whose digest was already
/// checked as it was written (see [`stream_receive`]).
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
    let t = shell_quote(tmp);
    let d = shell_quote(dest);
    let mode = meta.mode;
    let mut s = String::new();
    match meta.preserve {
        // `+` makes chown read the ids as numbers, even where they are also names.
        Some(p) => {
            s += &format!(
                "if [ \"$(id -u)\" = 0 ]; then chown -- +{}:+{} {t} && chmod {mode:o} -- {t}; \
                 else chmod {:o} -- {t}; fi && touch -c -m -d {} -- {t} && ",
                p.uid,
                p.gid,
                mode & !0o6000,
                p.touch_date()
            );
        }
        None => s += &format!("chmod {mode:o} -- {t} && "),
    }
    if fsync {
        s += &format!(
            "sync -- {t} && mv -T -f -- {t} {d} && sync -- {dir}",
            dir = shell_quote(parent(dest)),
        );
    } else {
        s += &format!("mv -T -f -- {t} {d}");
    }
    s
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
    let t = shell_quote(tmp);
    format!(
        "h=$({hash} < {t}) || exit 1; h=${{h%% *}}; \
         if [ \"$h\" != {digest} ]; then rm -f -- {t}; echo \"$h\"; exit {DIGEST_MISMATCH_STATUS}; fi",
        digest = shell_quote(digest),
        hash = hasher.command(),
    )
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
    let (t, f) = (shell_quote(tmp), shell_quote(decode.into));
    format!(
        "if [ -L {f} ] || {{ [ -e {f} ] && [ ! -f {f} ]; }}; then \
         echo \"refusing to write through \"{f}\": not a regular file\" >&2; exit 1; \
         elif [ -e {f} ]; then umask 077 && exec 6> {f} || exit 1; else {create}; fi; \
         h=$({dec} < {t} | {{ tee --output-error=exit -- /dev/fd/6 || kill -TERM $$; }} | {hash}) || exit 1; \
         h=${{h%% *}}; exec 6>&-; \
         if [ \"$h\" != {digest} ]; then rm -f -- {t} {f}; echo \"$h\"; exit {DIGEST_MISMATCH_STATUS}; fi",
        create = create_exclusive_on(tmp, decode.into, 6),
        dec = decode.codec.decompress_sh(),
        digest = shell_quote(digest),
        hash = hasher.command(),
    )
}

/// The line that ends [`then`]'s output, followed by the command's exit status.
pub const THEN_STATUS_MARK: &str = "bounce-then-status ";

/// Lines of a `--then` command's output kept for the report.
pub const THEN_TAIL_LINES: u32 = 10;

/// Bytes of a `--then` command's output kept for the report, at most: a command that
/// prints one endless line (a progress bar redrawn with `\r`) fills no report.
pub const THEN_TAIL_BYTES: u32 = 4096;

/// Runs the user's `command` with `sh -c`, its `$1` being `dest` (quoted, as a separate
/// argument: the command never sees DEST in its own text), standard input from `/dev/null`
/// and standard error into standard output. Prints the last [`THEN_TAIL_LINES`] lines of that,
/// then [`THEN_STATUS_MARK`] and its exit status on a line of their own; `tail` keeps only
/// those, however much the command prints.
pub fn then(command: &str, dest: &str) -> String {
    format!(
        "{{ sh -c {} bounce-then {} </dev/null 2>&1; s=$?; printf '\\n{THEN_STATUS_MARK}%d\\n' \"$s\"; }} \
         | tail -n {} | tail -c {THEN_TAIL_BYTES}",
        shell_quote(command),
        shell_quote(dest),
        THEN_TAIL_LINES + 2
    )
}

/// Reads [`then`]'s output: the command's exit status and its last lines, or `None` when
/// the status line is missing (the snippet itself did not run to its end).
pub fn parse_then(out: &str) -> Option<(i32, String)> {
    let body = out.strip_suffix('\n').unwrap_or(out);
    let (text, last) = body.rsplit_once('\n').unwrap_or(("", body));
    let status = last.strip_prefix(THEN_STATUS_MARK)?.trim().parse().ok()?;
    // The snippet puts a newline before its status line, in case the output had none.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len().saturating_sub(THEN_TAIL_LINES as usize);
    Some((status, lines[keep..].join("\n")))
}

/// Hashes `dest` and exits [`DIGEST_MISMATCH_STATUS`], printing the digest found, unless it
/// is `digest`: a copy checked again after it was installed.
pub fn check(dest: &str, digest: &str, hasher: Hasher) -> String {
    format!(
        "h=$({hash} < {d}) || exit 1; h=${{h%% *}}; \
         [ \"$h\" = {digest} ] || {{ echo \"$h\"; exit {DIGEST_MISMATCH_STATUS}; }}",
        d = shell_quote(dest),
        digest = shell_quote(digest),
        hash = hasher.command(),
    )
}

/// Kills the process groups `pids` (those already gone are fine) and removes `files`;
/// exits non-zero, with `rm`'s message on stderr, if a file could not be removed. A lock
/// among them (see [`super::lock`]) is removed only if run `run_id` holds it.
pub fn cleanup(pids: &[u32], files: &[String], run_id: &str) -> String {
    let mut s = String::from("e=0; ");
    for p in pids {
        s.push_str(&format!("kill -TERM -{p} 2>/dev/null; "));
    }
    for f in files {
        if super::lock::is_lock(f) {
            s.push_str(&format!("{}; ", super::lock::release_path(f, run_id)));
            continue;
        }
        // A tree's staging directory (see `tree_script::unpack`) goes with what it holds.
        let flags = if is_stage(f) { "-rf" } else { "-f" };
        s.push_str(&format!("rm {flags} -- {} || e=1; ", shell_quote(f)));
    }
    s.push_str("exit $e");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(script: &str) -> std::process::Output {
        Command::new("sh").arg("-c").arg(script).output().unwrap()
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
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .output()
            .unwrap()
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
            "printf 'evil' | sh -c {}",
            shell_quote(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
        ));
        assert!(!out.status.success(), "{out:?}");
        let out = sh(&format!(
            "printf '0 4\\nevil' | sh -c {}",
            shell_quote(&receive_chunks(&dest, &tmp))
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
                "printf 'evil' | sh -c {}",
                shell_quote(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
            ))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        std::fs::remove_file(&tmp).unwrap();
        std::os::unix::fs::symlink("/dev/null", &tmp).unwrap();
        let out = sh(&format!(
            "printf 'evil' | sh -c {}",
            shell_quote(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
        ));
        assert!(!out.status.success(), "{out:?}");
        // A regular file already there is not taken over by a whole-file receiver...
        std::fs::remove_file(&tmp).unwrap();
        std::fs::write(&tmp, b"xxxxxx").unwrap();
        let out = sh(&format!(
            "printf 'evil' | sh -c {}",
            shell_quote(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
        ));
        assert!(!out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"xxxxxx");
        // ...but the chunk receiver goes on with this run's partial copy, in place.
        let out = sh(&format!(
            "printf '2 2\\nab' | sh -c {}",
            shell_quote(&receive_chunks(&dest, &tmp))
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
            "printf '0 6\\nhello 6 7\\nbounce\\n' | sh -c {}",
            shell_quote(&receive_chunks(&dest, &tmp))
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
            "printf 'hello bounce\\n' | sh -c {}",
            shell_quote(&stream_receive(&dest, &tmp, Hasher::Sha256sum, None))
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
            "sh -c {} < {}",
            shell_quote(&receive_chunks(&dest, &tmp)),
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
            "printf '0 10\\nabc' | sh -c {}",
            shell_quote(&receive_chunks(&dest, &tmp))
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
            stream_resume(b_tmp, offset, size, Hasher::Sha256sum, None)
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
            .args(["-w", "sh", "-c", &relay])
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
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe(&dest, 4, Some(Codec::Lz4)))
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
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe(&dest, 4, Some(Codec::Lz4)))
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
                .args(["-w", "sh", "-c", &script])
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
                .args(["-w", "sh", "-c", &script])
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
            assert!(lines.iter().all(|l| l.parse::<u32>().is_ok()
                || l.starts_with("at ")
                || l.starts_with("part ")));
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
                "printf abc | sh -c {}",
                shell_quote(&part_receive(
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
                "{{ head -c 1000000; sleep 0.3; cat; }} < {} | sh -c {}",
                shell_quote(&input.display().to_string()),
                shell_quote(&stream_receive(&a_dest, &a_tmp, Hasher::Openssl, None))
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
            "sh -c {} < {}",
            shell_quote(&stream_receive(
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
        );
        let out = sh(&format!(
            "sh -c {} < {}",
            shell_quote(&resume),
            path("rest")
        ));
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
            "printf 'abc' | sh -c {}",
            shell_quote(&stream_resume(&tmp, 4, 8, Hasher::Sha256sum, None))
        ));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("holds 5 bytes, not 4"), "{err}");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"12345");
        let link = format!("{}/.link.tmp", dir.path().display());
        std::os::unix::fs::symlink(&tmp, &link).unwrap();
        let out = sh(&format!(
            "printf 'abc' | sh -c {}",
            shell_quote(&stream_resume(&link, 5, 8, Hasher::Sha256sum, None))
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
            let out = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
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
                "printf '2 3\\n8 2\\n0 300\\n' | sh -c {}",
                shell_quote(&script)
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
            "sh -c {} < {} > {}",
            shell_quote(&pace(4_000_000, 2_500_000)),
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
                "{{ {feeder} }} | sh -c {}",
                shell_quote(&receive_chunks(&a_dest, &a_tmp))
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
}
