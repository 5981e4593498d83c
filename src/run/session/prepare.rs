//! What a session does before any connection: the scan of a tree (or a `--sparse` file),
//! `--compress`, and `--dry-run`'s text.

use super::super::codec::{self, Codec, CodecError};
use super::super::plan::Plan;
use super::super::predict::{Assumptions, Prediction};
use super::super::say;
use super::super::tree;
use super::RunError;
use crate::units;

/// Walks and hashes a directory SRC, or a `--sparse` file, saying on stderr what it found.
pub(super) fn scan(plan: &Plan, keep_setid: bool) -> Result<tree::Manifest, RunError> {
    let started = std::time::Instant::now();
    // Nothing is written anywhere yet: an interrupt may simply end the process.
    let never = std::sync::atomic::AtomicBool::new(false);
    let m = if plan.is_dir {
        tree::Manifest::scan_tree(&plan.src, keep_setid, &never)
    } else {
        tree::Manifest::scan_single(&plan.src, plan.mode, &never)
    }
    .map_err(RunError::input)?;
    let (files, bytes) = m.files();
    say::note(format!(
        "SRC holds {} entries, {files} regular files, {} ({} of data, holes excluded), hashed in {:.2}s",
        m.entries.len(),
        units::format_size(bytes),
        units::format_size(m.data_bytes),
        started.elapsed().as_secs_f64()
    ));
    Ok(m)
}

/// What a failed compression is: bad input when the tool is missing here, a failure
/// otherwise.
pub(super) fn codec_error(e: CodecError) -> RunError {
    match e {
        CodecError::Missing(_) => RunError::input(e),
        CodecError::Failed { .. } => RunError::failed(e),
    }
}

/// Compresses SRC for `--compress` and cuts the compressed bytes for the strategy, saying
/// on stderr what it cost.
pub(super) fn compress(codec: Codec, plan: &mut Plan, chunk: u64) -> Result<codec::Wire, RunError> {
    let started = std::time::Instant::now();
    let wire = codec::compress(codec, &plan.src, &std::env::temp_dir()).map_err(codec_error)?;
    plan.cut_for(wire.size, chunk).map_err(RunError::input)?;
    say::note(format!(
        "--compress {codec}: {} to {} ({:.1}× less on every link) in {:.2}s",
        units::format_size(plan.size),
        units::format_size(wire.size),
        plan.size as f64 / wire.size.max(1) as f64,
        started.elapsed().as_secs_f64()
    ));
    Ok(wire)
}

/// `--dry-run`'s text: the plan, each host and its DEST, and the prediction.
pub(super) fn dry_run(
    out: &mut dyn std::io::Write,
    plan: &Plan,
    assumptions: &Assumptions,
    prediction: &Prediction,
    compress: Option<Codec>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "plan: {} {} ({}) to {} hosts, strategy {}, {} chunk(s) of {}",
        plan.src.display(),
        units::format_size(plan.size),
        plan.size,
        plan.hosts.len(),
        plan.kind,
        plan.layout.count(),
        units::format_size(plan.layout.chunk_size()),
    )?;
    for (i, h) in plan.hosts.iter().enumerate() {
        writeln!(out, "  {:>3}  {h}  {}", i + 1, plan.dest_of(i))?;
    }
    if let Some(codec) = compress {
        writeln!(
            out,
            "compress: {codec}, once on this machine before the transfer (not done by a dry \
             run); every host needs {codec}. The prediction is for SRC's full size: the \
             links carry less"
        )?;
    }
    super::super::predict::write_prediction(out, plan, assumptions, prediction)
}
