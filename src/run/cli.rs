//! `bounce-run`'s command line: its options, their help, and the exit statuses it documents.
//! The session they drive is [`super::session`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::codec::Codec;
use super::plan::HostSource;
use crate::core::StrategyKind;
use crate::units;

/// What `-h` says after the options; `--help` says [`EXIT_CODES`].
pub const EXIT_SHORT: &str = "\
Exit status: 0 every host holds a verified copy, 1 some hosts failed (each named), 2 bad
input (nothing written), 130 interrupted. `--help` says more, and describes the hosts file.";

/// What `--help` says after the options: every exit status, the hosts file, `--json`.
pub const EXIT_CODES: &str = "\
Exit status:
  0    every host holds a verified copy at DEST (sent now, or already up to date), and
       --then, if given, exited 0 on each
  1    some hosts failed, each named with its reason (the others completed); or cleanup
       could not remove something, named with its host; or SRC changed during the run; or
       --then failed on some host, named with its exit status
  2    bad invocation or input (missing or unreadable SRC, empty or malformed host list,
       a DEST that is not an absolute path to a file, duplicate host, bad flag value, an
       unwritable --report, a --compress tool missing here or on a host; for a directory SRC or
       --sparse: a symlink leading out of the tree, a FIFO, socket or device in it, a DEST
       that is not a directory for a tree, GNU tar missing on a host), detected before
       anything is written
  130  interrupted (SIGINT or SIGTERM): remote processes stopped, temporary files removed
       (what could not be is named, as for 1), nothing unverified left at DEST. A second
       interrupt during that cleanup exits at once, naming what may be left on which host.

Hosts file: one `[user@]host[:port]` (or `[v6addr]:port`) per line, optionally followed by
a DEST for that host; `#` starts a comment. Hops between hosts run `ssh` on the sending host
with its own ~/.ssh setup, addressing the next host exactly as written here. A hosts file is
also a fleet file: attributes after the host give its rates and rack, for --dry-run's
predictions and --strategy auto (`web7 /srv/x up=25Gbit down=10Gbit rack=r2`, `rate=` sets
both), `@source up=10Gbit` describes this machine and `@rack r2 uplink=40Gbit` a rack's
shared uplink. The run itself ignores them.

--json prints one JSON document on stdout when the run ends, in place of the table:
{\"summary\": {...}, \"hosts\": [{\"host\", \"status\", \"from\", \"start_s\", \"end_s\",
\"bytes\", \"error\", \"digest\", \"then_status\", \"then_output\"}, ...]}.";

/// Send one large file from this machine to many hosts over OpenSSH, fast: hosts that already
/// hold the file send it on, so the source's upload is not the bottleneck.
#[derive(Parser, Debug)]
#[command(name = "bounce-run", version, after_help = EXIT_SHORT, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// How the file spreads: chain, bounce, linear or auto
    ///
    /// - chain (the default): streamed through all hosts in the order they become ready, each
    ///   relaying it as it arrives. A dead host is passed by a stream that resumes at its
    ///   successor's byte count; a host under a quarter of its feeder's sustained rate is cut
    ///   out and fed at its own pace; a first host too slow for a run with more than 15 s to
    ///   go is found by feeding another host from the controller beside it for a moment; the
    ///   hosts that took a corrupt host's bytes are fed again.
    /// - bounce: the post's whole-file doubling. Every hop is a whole-file copy from a host
    ///   whose copy was verified first, so no host passes on bytes nobody has checked yet.
    /// - linear: the source sends to every host at once.
    /// - auto: the one the simulator predicts fastest for these hosts, with the rates the
    ///   fleet file gives, or --bandwidth; it says what it picked and why before it starts.
    ///
    /// The README compares them, with the commands that measured them.
    #[arg(long, default_value = "chain", value_parser = parse_choice, verbatim_doc_comment)]
    pub strategy: Choice,
    /// Read receivers from FILE (repeatable; order is kept)
    #[arg(long = "hosts-file", value_name = "FILE")]
    pub hosts_file: Vec<PathBuf>,
    /// Receivers, comma-separated `[user@]host[:port]` (repeatable)
    #[arg(short = 'H', value_name = "HOST[,HOST...]")]
    pub hosts: Vec<String>,
    /// Write one CSV row per host to FILE.csv, whose directory must exist
    ///
    /// Columns: host,from,start_s,end_s,bytes,status,error,digest,then_status,then_output.
    /// Checked before anything is sent, and written whole or not at all.
    #[arg(long, value_name = "FILE.csv")]
    pub report: Option<PathBuf>,
    /// Print the plan and each strategy's predicted time; connect to nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON document instead of the table
    ///
    /// With --dry-run, the prediction as `bounce-sim plan --json` prints it.
    #[arg(long)]
    pub json: bool,
    /// Trace every ssh command, every remote stderr line and every scheduler step
    ///
    /// Each ssh command bounce-run starts is printed with its host, a session number and
    /// its job, as one line a person can paste into bash or zsh (`$'…'` quoting); each line a remote job writes to
    /// stderr, with its host and job, as it arrives; and each hop the scheduler starts and
    /// ends, with its chunks. Lines are stamped with the seconds since the start, and
    /// progress is shown as plain lines, not bars.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Say only what went wrong and the final line
    ///
    /// No progress and no notes on stderr; on stdout the table's last line (the hosts done
    /// and the time) instead of the table. Errors, and --json, are as without it.
    #[arg(short, long)]
    pub quiet: bool,
    /// ssh_config file for the controller's connections
    #[arg(short = 'F', value_name = "ssh_config")]
    pub ssh_config: Option<PathBuf>,
    /// Accept and record unknown host keys instead of failing those hosts
    ///
    /// As StrictHostKeyChecking=accept-new. By default an unknown host key fails its host.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Chunk size the chain tracks progress, repairs and stragglers in
    ///
    /// A link that cannot stream sends the chunks it lacks one request each.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub chunk: u64,
    /// Failed hops a host may suffer before it is given up
    ///
    /// Each failed hop is retried from another holder when possible.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Keep SRC's setuid and setgid bits on the copies (dropped by default)
    #[arg(long)]
    pub keep_setid: bool,
    /// Keep SRC's modification time, and as root its owner, group and whole mode
    ///
    /// As `cp -p` does: where the remote login is root, owner, group and whole mode
    /// (setuid and setgid included); a login that is not root keeps its own owner, and the
    /// copy SRC's mode less setuid and setgid. By default a copy gets SRC's permission bits
    /// less setuid and setgid, the time it was written and the login's owner.
    #[arg(long)]
    pub preserve: bool,
    /// Run CMD with `sh -c` on every host whose copy is in place, DEST as `$1`
    ///
    /// Once the transfer is over, on every host whose copy is verified and in place
    /// (up-to-date ones included), e.g. `--then 'virsh define "$1"'`. Its exit status and
    /// last lines of output go in the report; a host where it fails makes the exit status 1.
    #[arg(long, value_name = "CMD")]
    pub then: Option<String>,
    /// Rename each verified copy into place without flushing it to disk first
    ///
    /// Faster on slow disks, but after a power loss DEST may hold a file that never reached
    /// the disk.
    #[arg(long)]
    pub no_fsync: bool,
    /// Cap what each host uploads, this machine included (e.g. `400Mbit`, `50MB`)
    ///
    /// Per second, over any few seconds. This machine's streams share the cap; on the hosts
    /// each upload is paced on its own (a chain host feeding a spliced-out slow host besides
    /// its successor can send up to twice RATE). Downloads are not capped. --dry-run and
    /// --strategy auto predict with it.
    #[arg(long, value_name = "RATE", value_parser = parse_limit)]
    pub limit_rate: Option<u64>,
    /// Compress SRC once here, send it compressed, decompress it on each host
    ///
    /// Into a temporary file under $TMPDIR, with zstd, lz4 or gzip; each host checks what
    /// comes out against SRC's digest. The tool must be installed here and on every host
    /// (checked on all of them before anything is sent: exit 2, naming the hosts without
    /// it). Pays on compressible files (sparse or mostly empty images) over links slower than
    /// the tool; the default sends SRC as it is.
    #[arg(long, value_name = "TOOL", value_enum, default_value_t = Compress::None)]
    pub compress: Compress,
    /// Send a single-file SRC without its holes (GNU tar on every host)
    ///
    /// Holes are neither sent nor written, so a raw image of 100 GB holding 10 GB of data
    /// costs 10 GB on every link and every disk. SRC goes through a GNU tar archive, and each
    /// host checks the file it unpacks against SRC's digest (of its content, holes read as
    /// zeros). A directory SRC always keeps its files' holes.
    #[arg(long)]
    pub sparse: bool,
    /// Cut each whole-file hop (linear, bounce) into N ssh streams, at most 8
    ///
    /// Each stream goes over its own connection with its own part of the file, as mscp does
    /// for one copy: one ssh stream is one cipher on one core at each end, so on a link
    /// faster than a core can encrypt, hosts with cores to spare move a hop up to N times as
    /// fast. Each part is hashed as it is written and checked against the same part of SRC.
    /// N is at most 8: a hop's streams log in at once, and sshd refuses logins beyond 10 at
    /// once by default. 1 by default: on 2-core hosts, where one stream's cipher already has
    /// a core to itself, more streams only add handshakes and processes. The chain takes no
    /// --streams: its links are single streams that its repairs resume at a byte offset
    /// (--strategy auto then picks among bounce and linear).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=crate::run::split::MAX_STREAMS as i64))]
    pub streams: u32,
    /// ssh ConnectTimeout, for the controller and for hops between hosts
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Per-host bandwidth that --dry-run and --strategy auto assume
    ///
    /// For hosts the fleet file gives no rate for.
    #[arg(long, default_value = "1Gbit", value_parser = parse_rate)]
    pub bandwidth: f64,
    /// Setup latency of an ssh connection that --dry-run and --strategy auto assume
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub latency: Duration,
    /// The controller's cost per host of connecting, for --dry-run and --strategy auto
    ///
    /// Handshakes share the controller's CPU, so host i is ready about i times this after
    /// the start.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub join_interval: Duration,
    /// Print shell completions or the man page, and exit
    ///
    /// bash, zsh, fish, elvish, powershell, or man: generated from these options.
    #[arg(long, value_name = "WHAT", exclusive = true)]
    pub generate: Option<crate::cli_docs::Generate>,
    /// The file to send, or a directory: its tree is sent whole
    ///
    /// A directory's tree (regular files, directories, symlinks that stay inside it) is sent
    /// whole and appears at DEST at once, complete and verified; a rerun sends only the files
    /// some host lacks.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Absolute path of the copy on every host
    ///
    /// A hosts file may override it per host; for a directory SRC, the directory it becomes.
    #[arg(value_name = "DEST")]
    pub dest: String,
}

/// `--compress`: a [`Codec`], or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    /// SRC is sent as it is.
    None,
    /// [`Codec::Zstd`].
    Zstd,
    /// [`Codec::Lz4`].
    Lz4,
    /// [`Codec::Gzip`].
    Gzip,
}

impl Compress {
    /// The codec, if any.
    pub fn codec(self) -> Option<Codec> {
        match self {
            Compress::None => None,
            Compress::Zstd => Some(Codec::Zstd),
            Compress::Lz4 => Some(Codec::Lz4),
            Compress::Gzip => Some(Codec::Gzip),
        }
    }
}

/// `--strategy`: one of the strategies the runner implements, or the simulator's pick.
#[derive(Clone, Copy, Debug)]
pub enum Choice {
    /// This strategy.
    Kind(StrategyKind),
    /// The one the simulator predicts fastest.
    Auto,
}

/// The strategies the runner's transport implements ([`crate::run::RUNNABLE`]), or auto.
fn parse_choice(s: &str) -> Result<Choice, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Choice::Auto);
    }
    match s.parse::<StrategyKind>() {
        Ok(k) if crate::run::RUNNABLE.contains(&k) => Ok(Choice::Kind(k)),
        _ => Err(format!(
            "unknown strategy '{s}' for bounce-run (expected linear, bounce, chain or auto)"
        )),
    }
}
/// A size in human units.
fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size(s).map_err(|e| e.to_string())
}
/// A rate in human units.
fn parse_rate(s: &str) -> Result<f64, String> {
    units::parse_rate(s).map_err(|e| e.to_string())
}
/// `--limit-rate`: a rate of at least one byte per second, in whole bytes per second.
fn parse_limit(s: &str) -> Result<u64, String> {
    let r = units::parse_rate(s).map_err(|e| e.to_string())?;
    if r < 1.0 {
        return Err(format!(
            "'{s}' is below 1 byte per second: the cap must be above 0"
        ));
    }
    Ok(r as u64)
}
/// A duration in human units.
fn parse_duration(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

/// Reads -H and --hosts-file in the order they were given.
pub fn host_sources(m: &clap::ArgMatches, cli: &Cli) -> Vec<HostSource> {
    let mut v: Vec<(usize, HostSource)> = Vec::new();
    if let Some(idx) = m.indices_of("hosts") {
        v.extend(idx.zip(cli.hosts.iter().map(|h| HostSource::Arg(h.clone()))));
    }
    if let Some(idx) = m.indices_of("hosts_file") {
        v.extend(idx.zip(cli.hosts_file.iter().map(|f| HostSource::File(f.clone()))));
    }
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, s)| s).collect()
}
