//! A chain's links that start on a host (`relay.sh`): the relay that streams a host's copy
//! to the next host while it still arrives, and the link by requests that sends chunks.

use super::hop::HopSsh;
use super::receive::receive_chunks;
use super::{Call, Codec};
use crate::fleet::HostSpec;

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

pub use crate::sim::runner::RELAY_POLL_MS;

/// Run on X: relays bytes `bytes` (`offset..size`) of X's copy of a `size`-byte file to
/// `to`, whose `receive` job takes them ([`super::stream_receive`], or
/// [`super::stream_resume`] for a copy that already holds the bytes before `offset`), while
/// X receives it, for a chain link planned ahead.
///
/// The ssh to `to` starts at once, so its setup overlaps the wait for X's copy. Meanwhile
/// the relay waits for the copy to appear (see [`RelayFrom`]), opens it, and only then
/// prints `relay $$`: once the controller has read that line, X's copy may be renamed into
/// place, and the relay keeps reading the same file through its descriptor. The far end
/// prints its own pid as every receiver does; the two lines come in either order.
///
/// GNU `tail -f` follows the copy as it grows, through the descriptor (`/dev/fd/5`, so it
/// polls every [`RELAY_POLL_MS`]: inotify cannot watch that name), with no process started
/// per look; `head` stops after the bytes, then ends the sentinel `sleep` that `tail --pid`
/// watches, so that `tail` ends too (with an upload limit, [`super::pace`] takes `head`'s
/// place). The relay does not watch X's receiver: if X's copy stops growing, the controller
/// ends the relay (X is retried or given up), and while X is fed again another way (a
/// request link after a broken stream) the relay just goes on following the same file,
/// which the core has only ever grow from its end (see [`crate::core::Chain`]).
///
/// The rest of stdin is a watcher: when the controller's channel closes, the relay's whole
/// process group is killed. When the ssh to `to` fails, the relay kills its whole group at
/// once. Following the file, rather than a pipe filled by the receiver, keeps the two
/// apart: a relay that dies, lags or never starts cannot stall X's own copy.
pub fn stream_relay(
    ssh: &HopSsh,
    from: RelayFrom<'_>,
    bytes: std::ops::Range<u64>,
    to: &HostSpec,
    receive: &str,
) -> String {
    let (mode, file, compress) = match from {
        RelayFrom::Receiving(tmp) => ("receiving", tmp, String::new()),
        RelayFrom::Installed(dest) => ("installed", dest, String::new()),
        RelayFrom::Compressing(dest, codec) => ("compressing", dest, codec.compress_sh()),
    };
    let [rate, per] = HopSsh::pace_args(ssh.upload_limit);
    Call::new("bounce_relay")
        .arg(mode)
        .arg(file)
        .arg((10 + RELAY_WAIT_S * 5).to_string())
        .arg(bytes.start.to_string())
        .arg((bytes.end - bytes.start).to_string())
        .arg(compress)
        .arg(rate)
        .arg(per)
        .arg((f64::from(RELAY_POLL_MS) / 1000.0).to_string())
        .args(ssh.args(to, receive))
        .code()
}

/// Run on X: a chain link to `to`. Reads `OFFSET LENGTH` requests on stdin and sends each
/// chunk from X's copy (its temporary file while it is still receiving, DEST once renamed)
/// to the receive loop on `to` ([`receive_chunks`]), whose acknowledgements come back on
/// stdout. With the ssh's upload limit, each chunk waits until the ones before it have had
/// their time at that rate.
///
/// The copy is opened once and each chunk is read through `/dev/fd/3`, which reopens the
/// same file even after it is renamed into place.
pub fn send_chunks(
    ssh: &HopSsh,
    from_dest: &str,
    from_tmp: &str,
    to: &HostSpec,
    to_dest: &str,
    to_tmp: &str,
) -> String {
    Call::new("bounce_send_chunks")
        .args(reader_args(from_dest, from_tmp, ssh.upload_limit))
        .args(ssh.args(to, &receive_chunks(to_dest, to_tmp)))
        .code()
}

/// The reading half of [`send_chunks`]: prints `$$`, then for each request line the same
/// line followed by the requested bytes. With a `limit` (bytes per second), each chunk waits
/// until the ones before it have had their time at that rate.
pub fn chunk_reader(from_dest: &str, from_tmp: &str, limit: Option<u64>) -> String {
    let [tmp, dest, rate] = reader_args(from_dest, from_tmp, limit);
    format!(
        "echo $$; {}; {}",
        Call::new("bounce_chunk_open").arg(tmp).arg(dest).code(),
        Call::new("bounce_chunk_reader").arg(rate).code()
    )
}

/// `bounce_send_chunks`'s first arguments: the copy, DEST, and the limit (empty without
/// one).
fn reader_args(from_dest: &str, from_tmp: &str, limit: Option<u64>) -> [String; 3] {
    [
        from_tmp.to_string(),
        from_dest.to_string(),
        limit.map_or(String::new(), |r| r.max(1).to_string()),
    ]
}
