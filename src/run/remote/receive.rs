//! The receiving ends (`receive.sh`): a whole stream into a new copy, a stream that resumes
//! a copy at a byte offset, chunks by request, and the parts of a hop over several streams;
//! and the report lines they print.
//!
//! Every receiver keeps its copy open while it writes it, which also marks the copy as
//! live for other runs' sweeps (see [`super::sweep`]). Nothing waits for the `at` reports
//! (they feed progress and the core's bookkeeping), so they are kept rare: each costs two
//! process starts on a host that is busy relaying.

use super::names::parent;
use super::probe::Hasher;
use super::tree::Behind;
use super::{Call, Codec};

/// Where a host decompresses the bytes it receives, with `--compress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decode<'a> {
    /// The compressor the bytes went through.
    pub codec: Codec,
    /// The temporary file the decompressed bytes go to ([`super::decoded_path`]).
    pub into: &'a str,
}

/// Receives chunks into `tmp`: reads `OFFSET LENGTH` lines, each followed by exactly LENGTH
/// bytes, writes them at OFFSET and answers `ok OFFSET` once they are on disk.
///
/// `tmp` may already hold this run's chunks (a stream into it broke, and the rest comes by
/// request): then it must be a regular file, not a symlink; otherwise it is created
/// exclusively. One `dd` per chunk reads exactly LENGTH bytes and writes them in place; its
/// own byte count proves the whole chunk arrived. A single process per chunk matters: a
/// chain starts one per chunk on every host. On failure only dd's first line, the one
/// naming the cause, goes to stderr.
pub fn receive_chunks(dest: &str, tmp: &str) -> String {
    Call::new("bounce_receive_chunks")
        .arg(parent(dest))
        .arg(tmp)
        .code()
}

/// Receives the whole file as one stream on stdin into `tmp` (created exclusively),
/// hashing it on the way: the receiving end of every whole-file hop and of every chain
/// stream. Prints `$$` once `tmp` exists (a chain relay follows that file), then `at N`, the
/// bytes written so far, twice a second, and once its input ends `end N DIGEST`: the bytes
/// written and their SHA-256. A failed write (a full disk) kills its process group at once,
/// with the cause on stderr.
///
/// `tee` writes through `/dev/fd/3`, the file this job created, so nothing put at the name
/// afterwards is written to. With `decode` (`--compress`), `tmp` receives the compressed
/// bytes and a second file, `decode.into`, created exclusively too, their decompression;
/// the digest is of the decompressed bytes, and `at` and `end` still count what `tmp` holds.
pub fn stream_receive(dest: &str, tmp: &str, hasher: Hasher, decode: Option<Decode>) -> String {
    stream_receive_unpacking(dest, tmp, hasher, decode, None)
}

/// [`stream_receive`], for a tree's archive: with `unpack`, the bytes that are hashed
/// (decompressed, with `decode`) are also unpacked as they arrive (see [`Behind`]), and
/// `end` is printed once that is over too.
pub fn stream_receive_unpacking(
    dest: &str,
    tmp: &str,
    hasher: Hasher,
    decode: Option<Decode>,
    unpack: Option<&Behind>,
) -> String {
    let call = Call::new("bounce_receive_stream")
        .arg(parent(dest))
        .arg(tmp)
        .arg(hasher.command())
        .args(decode_args(decode));
    match unpack {
        None => call.args(["", "", "", "", "", ""]),
        Some(b) => call.args(b.args()),
    }
    .code()
}

/// A [`Decode`]'s two arguments: the decompressor's command line and the file it writes,
/// both empty without one.
fn decode_args(decode: Option<Decode<'_>>) -> [&str; 2] {
    match decode {
        None => ["", ""],
        Some(d) => [d.codec.decompress_sh(), d.into],
    }
}

/// Continues a chain stream into `tmp`, this run's copy, which already holds the file's
/// first `offset` bytes (the host that fed it was lost or cut out): appends stdin to it, and
/// hashes the whole copy, `size` bytes, by following it from its start as it grows, so no
/// byte is sent twice and the digest still covers the whole file. Prints the same lines as
/// [`stream_receive`]; refuses (exit 1, the cause on stderr) a `tmp` that is not a regular
/// file or does not hold exactly `offset` bytes.
///
/// With `decode`, the whole copy is decompressed again from its start into `decode.into`
/// (emptied first, or created exclusively), and the digest is of that. With `unpacked`, the
/// marker of an unpacking that an earlier stream into this copy made, it is removed first:
/// that unpacking no longer covers the copy, which is unpacked from scratch once whole.
pub fn stream_resume(
    tmp: &str,
    offset: u64,
    size: u64,
    hasher: Hasher,
    decode: Option<Decode>,
    unpacked: Option<&str>,
) -> String {
    let resume = Call::new("bounce_resume_stream")
        .arg(parent(tmp))
        .arg(tmp)
        .arg(offset.to_string())
        .arg(size.to_string())
        .arg(hasher.command())
        .args(decode_args(decode))
        .code();
    match unpacked {
        None => resume,
        Some(mark) => format!("rm -f -- {}; {resume}", super::shell_quote(mark)),
    }
}

/// Prints the length of `tmp` when it is a regular file (not a symlink), nothing otherwise:
/// how far a copy that a broken stream left got, before a link resumes it.
pub fn copy_length(tmp: &str) -> String {
    Call::new("bounce_copy_length").arg(tmp).code()
}

/// Creates `tmp`, the copy a hop over several streams (`--streams`) writes its parts into,
/// exclusively, and prints its identity, `DEVICE:INODE`: each part's receiver
/// ([`part_receive`]) writes only into that very file.
pub fn create_for_parts(dest: &str, tmp: &str) -> String {
    Call::new("bounce_create_for_parts")
        .arg(parent(dest))
        .arg(tmp)
        .code()
}

/// Receives part `index`, bytes `part`, of a hop cut into several streams (`--streams`, see
/// [`crate::run::split`]) on stdin, writing it in place into `tmp`, and hashing it on the
/// way. `tmp` was made by [`create_for_parts`], which printed `file`: the part is written
/// only if what it opens is that file, a regular file of this login's, not a symlink (the
/// open never creates a file). Prints `$$` once `tmp` is open, then, once its input ends,
/// `part INDEX DIGEST`: the SHA-256 of exactly what it wrote. A short or altered part has
/// another digest, so no byte count is needed. With `report`, it also prints `at N` twice a
/// second, N being the bytes the copy holds on disk so far over all parts. A failed write
/// kills its process group at once, with the cause on stderr.
pub fn part_receive(
    tmp: &str,
    file: &str,
    index: usize,
    part: std::ops::Range<u64>,
    hasher: Hasher,
    report: bool,
) -> String {
    Call::new("bounce_receive_part")
        .arg(tmp)
        .arg(file)
        .arg(index.to_string())
        .arg(part.start.to_string())
        .arg(hasher.command())
        .flag(report)
        .code()
}
