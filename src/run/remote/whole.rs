//! Whole-file hops that start on a host (`whole.sh`): the whole copy over one stream, or
//! its parts over several (`--streams`).

use super::hop::HopSsh;
use super::{Call, Codec};
use crate::fleet::HostSpec;

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
/// `receive` job takes it (paced by `ssh`'s upload limit). A watcher on stdin kills the hop
/// when the controller's channel closes (the controller or its connection died), so no copy
/// goes on unattended.
pub fn send_whole(
    ssh: &HopSsh,
    from: SendFrom<'_>,
    to: &HostSpec,
    receive: &str,
    size: u64,
) -> String {
    let (file, compress) = match from {
        SendFrom::File(f) => (f, String::new()),
        SendFrom::Compressing(f, codec) => (f, codec.compress_sh()),
    };
    let [rate, per] = HopSsh::pace_args(ssh.upload_limit);
    Call::new("bounce_send_whole")
        .arg(file)
        .arg(compress)
        .arg(rate)
        .arg(size.to_string())
        .arg(per)
        .args(ssh.args(to, receive))
        .code()
}

/// Run on X: sends `parts` of X's verified copy `from`, each over its own `ssh` to `to`
/// (one connection each, so each has its own cipher on its own core at both ends), into
/// `receives[i]` (see [`super::part_receive`]). Prints `$$` first; what the receivers print
/// comes back interleaved by lines. A part whose ssh fails kills the whole group at once;
/// the same watcher on stdin as [`send_whole`]'s stops it all when the controller goes
/// away. With the ssh's upload limit, each part is paced at an even share of it.
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
    let [rate, per] = HopSsh::pace_args(share);
    let sends: String = parts
        .iter()
        .zip(receives)
        .map(|(p, receive)| {
            let send = Call::new("bounce_send_part")
                .arg(from)
                .arg(p.start.to_string())
                .arg((p.end - p.start).to_string())
                .arg(&rate)
                .arg(&per)
                .args(ssh.args(to, receive))
                .code();
            format!("{send} & w=\"$w $!\"; ")
        })
        .collect();
    format!("echo $$; bounce_guard; w=; {sends}wait $w")
}
