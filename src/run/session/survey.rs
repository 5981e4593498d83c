//! A tree's part of a session: every host's survey, the archive of what some host lacks,
//! and its compression.

use std::sync::Arc;

use super::super::cli::Cli;
use super::super::codec;
use super::super::plan::Plan;
use super::super::report;
use super::super::say;
use super::super::ssh::{DestState, SshTransport};
use super::super::transport::TransportError;
use super::super::tree;
use super::prepare::codec_error;
use super::{signals, stop, RunError};
use crate::units;

/// What a tree's survey decided: the files the archive holds, and whether every host was
/// up to date already.
pub(super) struct Sent {
    /// The files the archive holds, against all of SRC's.
    pub files: report::FilesSent,
    /// Every host was up to date already.
    pub current: bool,
}

/// A tree's survey of every host, then its archive of what some host lacks, compressed with
/// `--compress` (into `wire`), the plan cut for what the hops carry.
pub(super) async fn pack_tree(
    cli: &Cli,
    plan: &mut Plan,
    transport: &mut SshTransport,
    manifest: &Arc<tree::Manifest>,
    sigs: &tokio::sync::watch::Receiver<u32>,
    wire: &mut Option<codec::Wire>,
) -> Result<(tree::Archive, Sent), RunError> {
    // Rehashing every host's tree can take minutes: an interrupt stops it.
    let survey = tokio::select! {
        s = transport.survey() => s,
        () = signals(sigs.clone(), 1) => {
            let why = vec!["interrupted while the hosts' trees were listed".to_string()];
            return Err(RunError::Interrupted(stop(transport, why).await));
        }
    };
    let bad: Vec<String> = survey
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| {
            matches!(
                e,
                TransportError::Dest { .. } | TransportError::ToolMissing { .. }
            )
        })
        .map(ToString::to_string)
        .collect();
    if !bad.is_empty() {
        return Err(RunError::Input(stop(transport, bad).await));
    }
    let (send, current) = what_to_send(manifest, &survey);
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir();
    let made = {
        let (m, keep) = (Arc::clone(manifest), cli.keep_setid || cli.preserve);
        tokio::task::spawn_blocking(move || tree::archive(&m, &send, keep, &dir)).await
    };
    let archive = match made {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(RunError::Failed(stop(transport, vec![e.to_string()]).await)),
        Err(e) => {
            let why = vec![format!("making the archive: {e}")];
            return Err(RunError::Failed(stop(transport, why).await));
        }
    };
    let (all_files, all_bytes) = manifest.files();
    let files = report::FilesSent {
        sent: archive.files.0,
        sent_bytes: archive.files.1,
        total: all_files,
        total_bytes: all_bytes,
    };
    say::note(format!(
        "{}: {files} in an archive of {}, made in {:.2}s",
        if current {
            "every host is up to date"
        } else {
            "sending"
        },
        units::format_size(archive.size),
        started.elapsed().as_secs_f64()
    ));
    if let Some(codec) = cli.compress.codec() {
        let started = std::time::Instant::now();
        match codec::compress(codec, &archive.path, &std::env::temp_dir()) {
            Ok(w) => {
                say::note(format!(
                    "--compress {codec}: {} to {} in {:.2}s",
                    units::format_size(archive.size),
                    units::format_size(w.size),
                    started.elapsed().as_secs_f64()
                ));
                *wire = Some(w);
            }
            Err(e) => {
                let err = codec_error(e);
                let code = err.exit_code();
                let why = stop(transport, err.lines().to_vec()).await;
                return Err(if code == 2 {
                    RunError::Input(why)
                } else {
                    RunError::Failed(why)
                });
            }
        }
    }
    let carried = wire.as_ref().map_or(archive.size, |w| w.size);
    if let Err(e) = plan.cut_for(carried, cli.chunk) {
        return Err(RunError::Input(stop(transport, vec![e.to_string()]).await));
    }
    Ok((archive, Sent { files, current }))
}

/// Which of the manifest's regular files the archive must hold, from every host's survey,
/// and whether every host is already up to date. A host that lacks its DEST, or that the
/// survey could not reach, needs them all.
fn what_to_send(
    m: &tree::Manifest,
    survey: &[Result<DestState, TransportError>],
) -> (std::collections::BTreeSet<usize>, bool) {
    let all = || {
        m.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, tree::EntryKind::File { .. }))
            .map(|(i, _)| i)
            .collect()
    };
    let mut send = std::collections::BTreeSet::new();
    let mut current = true;
    for r in survey {
        match r {
            Ok(DestState::Holds(listed)) => {
                let d = tree::compare(m, listed, true);
                current &= d.is_clean();
                send.extend(d.files);
            }
            _ => return (all(), false),
        }
    }
    (send, current)
}
