//! The OpenSSH transport: one multiplexed connection per host, and every hop as a small
//! shell pipeline on the hosts (see [`super::remote`]). Each job has its type and file:
//!
//! - `ssh/hosts.rs`: the hosts, their connections and the commands run over them;
//! - `ssh/probe.rs`: connecting and probing DEST before anything is sent;
//! - `ssh/registry.rs`: what may be left on the hosts, and cleaning it up;
//! - `ssh/install.rs`: verifying a copy and renaming it into place;
//! - `ssh/pack.rs`: a tree (or a `--sparse` file): surveying DEST, unpacking, placing;
//! - `ssh/feed.rs`: feeding SRC from the controller;
//! - `ssh/reports.rs`: reading what the snippets print;
//! - `ssh/config.rs`: the controller's ssh_config;
//! - `WholeFileHops` (`ssh/whole.rs`): the transport of linear and bounce;
//! - `ssh/parts.rs`: a whole-file hop cut into several streams (`--streams`);
//! - `ChainLinks` (`ssh/link.rs`): the transport of the chain, whose streams can change
//!   without touching whole-file hops.
//!
//! [`SshTransport`] is the one the runner builds: whichever of the two its strategy needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::core::{HostId, Layout, Transfer};

use super::transport::{
    ByteCounters, CleanupFailure, Prepared, ThenOutcome, Transport, TransportError,
};
use crate::fleet::HostSpec;

mod config;
mod feed;
mod hosts;
mod install;
mod link;
mod pack;
mod parts;
mod probe;
mod registry;
mod reports;
mod whole;

pub use pack::DestState;

use link::ChainLinks;
use whole::WholeFileHops;

/// How to reach the hosts.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// `-F`: the controller's ssh_config.
    pub config_file: Option<PathBuf>,
    /// Accept unknown host keys (and record them) instead of failing the host.
    pub accept_new_host_keys: bool,
    /// ConnectTimeout, for the controller's connections and the hops between hosts.
    pub connect_timeout: Duration,
    /// Flush each copy to disk before renaming it into place (see
    /// [`super::remote::install`]).
    pub fsync: bool,
    /// `--limit-rate`: the most each host, the controller included, uploads per second.
    pub limit_rate: Option<u64>,
    /// `--streams`: the ssh streams each whole-file hop is cut into (see
    /// [`super::split`]); 1 sends each hop as one stream.
    pub streams: u32,
}

/// The file being sent, as read once on the controller.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path on the controller.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, and with `--preserve` times and owner, applied at the rename.
    pub meta: super::remote::Meta,
    /// Lowercase hex SHA-256, possibly still being computed.
    pub digest: super::digest::PendingDigest,
    /// With `--compress`, SRC compressed: what the hops carry instead of SRC.
    pub wire: Option<super::codec::Wire>,
    /// For a directory SRC, or `--sparse`: `path` is then the archive made of it, and this
    /// is what the archive must unpack to.
    pub pack: Option<Pack>,
}

/// What an archive sent in place of a tree or a `--sparse` file must unpack to on every
/// host.
#[derive(Clone, Debug)]
pub struct Pack {
    /// SRC's entries and digests.
    pub manifest: Arc<super::tree::Manifest>,
    /// Every host already holds SRC's tree: nothing is sent (a host that lacks anything
    /// takes the whole archive, made of what any host lacks).
    pub current: bool,
}

impl SourceFile {
    /// The file the hops carry: SRC, or its compressed copy.
    pub fn send_path(&self) -> &std::path::Path {
        self.wire.as_ref().map_or(&self.path, |w| &w.path)
    }

    /// The size of what the hops carry.
    pub fn send_size(&self) -> u64 {
        self.wire.as_ref().map_or(self.size, |w| w.size)
    }

    /// True when a host's copy to send from is its temporary file, not its DEST: the hops
    /// carry compressed bytes, or an archive.
    pub fn sends_copy(&self) -> bool {
        self.wire.is_some() || self.pack.is_some()
    }

    /// How the hops' bytes are compressed, if they are.
    pub fn codec(&self) -> Option<super::codec::Codec> {
        self.wire.as_ref().map(|w| w.codec)
    }
}

/// One receiver and its paths.
#[derive(Clone, Debug)]
pub struct Target {
    /// How the user named it.
    pub spec: HostSpec,
    /// Its DEST.
    pub dest: String,
}

/// The real transport: whole-file hops or chain links, as the strategy needs. Host 0 is the
/// controller; `targets[i - 1]` is receiver `i`.
pub struct SshTransport(Job);

/// The two jobs, each its own transport. One exists per run, so the variants' sizes do not
/// matter.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// For linear and bounce.
    WholeFile(WholeFileHops),
    /// For the chain.
    Chain(ChainLinks),
}

impl SshTransport {
    /// A transport for `targets`; `chunked` selects chain links (the file cut as `layout`)
    /// instead of whole-file hops. `run_id` makes temporary names unique to this run. Fails
    /// only if the controller's generated ssh_config (see `ssh/config.rs`) cannot be written
    /// to the temporary directory.
    pub fn new(
        targets: Vec<Target>,
        opts: SshOptions,
        src: SourceFile,
        layout: Layout,
        chunked: bool,
        run_id: String,
        counters: Arc<ByteCounters>,
    ) -> std::io::Result<Self> {
        let hosts = hosts::Hosts::new(targets, opts, src, run_id, counters)?;
        Ok(SshTransport(if chunked {
            Job::Chain(ChainLinks::new(hosts, layout))
        } else {
            Job::WholeFile(WholeFileHops { hosts })
        }))
    }

    /// For a tree or a `--sparse` file, before the archive exists: connects to every host
    /// and lists what its DEST holds (see [`DestState`]), each host's answer in `targets`'
    /// order. The connections stay for the run; [`Transport::prepare`] then reuses what
    /// was found.
    pub async fn survey(&self) -> Vec<Result<DestState, TransportError>> {
        let hosts = self.hosts();
        let all = (1..=hosts.targets.len()).map(|i| async move {
            let h = HostId(i as u32);
            let (state, found) = hosts.survey_host(h, true).await?;
            *hosts.surveyed[i - 1].lock().unwrap() = Some(found);
            Ok(state)
        });
        futures_util::future::join_all(all).await
    }

    /// Connects to every host and returns the names of those that lack the command `tool`
    /// (`--compress`'s), before anything is written: a run that needs it everywhere can
    /// then stop as bad input. A host that cannot be reached is not named here; the run
    /// fails it as it would. The connections stay for the run.
    pub async fn lacking(&self, tool: &str) -> Vec<String> {
        let hosts = self.hosts();
        let all = (1..=hosts.targets.len()).map(|i| async move {
            let h = HostId(i as u32);
            matches!(hosts.lacks(h, tool).await, Ok(true)).then(|| hosts.name(h))
        });
        futures_util::future::join_all(all)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Replaces what is sent, once the survey has shown what the archive must hold; the
    /// chain cuts it as `layout`.
    pub fn set_source(&mut self, src: SourceFile, layout: Layout) {
        match &mut self.0 {
            Job::WholeFile(w) => w.hosts.src = src,
            Job::Chain(c) => c.set_source(src, layout),
        }
    }

    fn hosts(&self) -> &hosts::Hosts {
        match &self.0 {
            Job::WholeFile(t) => &t.hosts,
            Job::Chain(t) => &t.hosts,
        }
    }

    /// Ends every ssh master connection at once, without running anything on the hosts:
    /// for a second interrupt (see `Hosts::drop_connections_now`).
    pub fn drop_connections_now(&self) {
        self.hosts().drop_connections_now();
    }

    /// Temporary files and process groups not cleaned up yet, by host: what may be left if
    /// the controller stops now.
    pub fn leftovers(&self) -> Vec<(String, Vec<String>)> {
        self.hosts().leftovers()
    }
}

impl Transport for SshTransport {
    async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
        self.hosts().prepare(host).await
    }

    fn starting(&self, t: &Transfer) {
        if let Job::Chain(c) = &self.0 {
            c.starting(t);
        }
    }

    fn take_progress(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<(HostId, u64)>> {
        match &self.0 {
            Job::WholeFile(_) => None,
            Job::Chain(c) => c.take_progress(),
        }
    }

    async fn hop(&self, t: Transfer) -> Result<(), TransportError> {
        match &self.0 {
            Job::WholeFile(w) => w.hop(t).await,
            Job::Chain(c) => c.hop(t).await,
        }
    }

    async fn open_links(&self, links: &[(HostId, HostId)]) -> Vec<TransportError> {
        match &self.0 {
            Job::WholeFile(w) => w.open_links(links).await,
            Job::Chain(c) => c.open_links(links).await,
        }
    }

    async fn finalize(&self, host: HostId) -> Result<(), TransportError> {
        match &self.0 {
            Job::WholeFile(w) => w.finalize(host).await,
            Job::Chain(c) => c.finalize(host).await,
        }
    }

    async fn recheck(&self, host: HostId) -> Result<(), TransportError> {
        match &self.0 {
            Job::WholeFile(w) => w.recheck(host).await,
            Job::Chain(c) => c.recheck(host).await,
        }
    }

    async fn reset(&self, host: HostId) {
        match &self.0 {
            Job::WholeFile(w) => w.reset(host).await,
            Job::Chain(c) => c.reset(host).await,
        }
    }

    async fn then(&self, host: HostId, command: &str) -> Result<ThenOutcome, TransportError> {
        self.hosts().run_then(host, command).await
    }

    async fn discard(&self, host: HostId) {
        match &self.0 {
            Job::WholeFile(w) => w.discard(host).await,
            Job::Chain(c) => c.discard(host).await,
        }
    }

    async fn shutdown(&self) -> Vec<CleanupFailure> {
        match &self.0 {
            Job::WholeFile(w) => w.shutdown().await,
            Job::Chain(c) => c.shutdown().await,
        }
    }
}
