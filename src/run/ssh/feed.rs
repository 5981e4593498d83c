//! Feeding SRC to an ssh from the controller: exactly the bytes that were hashed, through a
//! pipe the kernel fills straight from the page cache.
//!
//! The pipe's read end becomes the ssh's stdin; a thread moves SRC into the other end with
//! `splice(2)`, which hands the page cache's pages to the pipe without copying them through
//! the controller's memory (`std::io::copy` does not: between these two it falls back to
//! 8 KiB reads and writes, 131,072 of each per GiB). A file system that cannot splice gets
//! plain reads and writes of 1 MiB.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::core::HostId;

use super::super::pace::Pacer;
use super::super::transport::ByteCounters;

/// How much one `splice` moves at most, and the size asked of the pipe: between two looks at
/// the stop flag and two counter updates.
const STEP: usize = 1 << 20;

/// Why a feed stopped early: SRC could not be read, or the ssh stopped taking its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FeedError {
    /// Reading SRC failed, or it shrank below what was hashed.
    Read(String),
    /// The pipe into ssh closed (the hop failed on the far side).
    Send(String),
}

/// A running feed. Dropping it stops the thread at its next step.
pub(super) struct Feed {
    /// The read end, to become the ssh's stdin.
    pub reader: Option<OwnedFd>,
    done: oneshot::Receiver<Result<(), FeedError>>,
    stop: Arc<AtomicBool>,
}

impl Feed {
    /// Starts feeding bytes `offset..offset + len` of `path`, counting them in `counters`
    /// for their host, if given, and no faster than `pacer` lets it.
    pub fn start(
        path: &Path,
        offset: u64,
        len: u64,
        counters: Option<(Arc<ByteCounters>, HostId)>,
        pacer: Option<Arc<Pacer>>,
    ) -> std::io::Result<Feed> {
        let (reader, writer) = std::io::pipe()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = oneshot::channel();
        let (path, flag) = (path.to_path_buf(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("bounce-feed".into())
            .spawn(move || {
                let writer = File::from(OwnedFd::from(writer));
                let _ = tx.send(copy(
                    &path,
                    offset..offset + len,
                    writer,
                    counters.as_ref(),
                    pacer.as_deref(),
                    &flag,
                ));
            })?;
        Ok(Feed {
            reader: Some(OwnedFd::from(reader)),
            done,
            stop,
        })
    }

    /// Waits until every byte has gone into the pipe, or the feed failed.
    pub async fn finished(&mut self) -> Result<(), FeedError> {
        (&mut self.done)
            .await
            .unwrap_or_else(|_| Err(FeedError::Send("the feeding thread died".into())))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn copy(
    path: &PathBuf,
    range: std::ops::Range<u64>,
    writer: File,
    counters: Option<&(Arc<ByteCounters>, HostId)>,
    pacer: Option<&Pacer>,
    stop: &AtomicBool,
) -> Result<(), FeedError> {
    let read_err = |e: std::io::Error| FeedError::Read(format!("{}: {e}", path.display()));
    let f = File::open(path).map_err(read_err)?;
    // A larger pipe means fewer wake-ups of ssh; the default of 64 KiB works too.
    let _ = rustix::pipe::fcntl_setpipe_size(&writer, STEP);
    let (offset, end) = (range.start, range.end);
    let mut pos = offset;
    let step = pacer.map_or(STEP, |p| p.step(STEP));
    let mut spliced = true;
    let mut buf = Vec::new();
    while pos < end {
        if stop.load(Ordering::Relaxed) {
            return Err(FeedError::Send("stopped".into()));
        }
        let want = (end - pos).min(step as u64) as usize;
        if let Some(p) = pacer {
            std::thread::sleep(p.reserve(want as u64));
        }
        let n = if spliced {
            let mut off = pos;
            match rustix::pipe::splice(
                &f,
                Some(&mut off),
                &writer,
                None,
                want,
                rustix::pipe::SpliceFlags::MOVE | rustix::pipe::SpliceFlags::MORE,
            ) {
                Ok(n) => n,
                Err(rustix::io::Errno::INVAL) if pos == offset => {
                    // This file system cannot splice: copy it by hand.
                    spliced = false;
                    continue;
                }
                Err(rustix::io::Errno::PIPE) => return Err(FeedError::Send("Broken pipe".into())),
                Err(e) => return Err(read_err(e.into())),
            }
        } else {
            buf.resize(want, 0);
            let n = std::os::unix::fs::FileExt::read_at(&f, &mut buf, pos).map_err(read_err)?;
            (&writer)
                .write_all(&buf[..n])
                .map_err(|e| FeedError::Send(e.to_string()))?;
            n
        };
        if n == 0 {
            return Err(FeedError::Read(format!(
                "{}: it shrank to {pos} bytes during the run",
                path.display()
            )));
        }
        if let Some((c, to)) = counters {
            c.add(*to, n as u64);
        }
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[tokio::test]
    async fn feeds_exactly_the_range_asked_for_even_when_the_file_is_longer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src");
        let data: Vec<u8> = (0..(9 << 20) + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let counters = Arc::new(ByteCounters::new(2));
        let mut feed = Feed::start(
            &p,
            3,
            (9 << 20) - 1,
            Some((Arc::clone(&counters), HostId(1))),
            None,
        )
        .unwrap();
        let mut r = File::from(feed.reader.take().unwrap());
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        feed.finished().await.unwrap();
        drop(feed);
        let got = reading.join().unwrap();
        assert!(got == data[3..3 + (9 << 20) - 1]);
        assert_eq!(counters.get(HostId(1)), (9 << 20) - 1);
    }

    #[tokio::test]
    async fn a_file_shorter_than_hashed_and_a_closed_pipe_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src");
        std::fs::write(&p, b"short").unwrap();
        let counters = Arc::new(ByteCounters::new(2));
        let mut feed =
            Feed::start(&p, 0, 100, Some((Arc::clone(&counters), HostId(1))), None).unwrap();
        let mut r = File::from(feed.reader.take().unwrap());
        let mut got = Vec::new();
        let e = feed.finished().await.unwrap_err();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"short");
        assert!(
            matches!(&e, FeedError::Read(m) if m.contains("shrank to 5 bytes")),
            "{e:?}"
        );

        let mut feed = Feed::start(&p, 0, 5, None, None).unwrap();
        drop(feed.reader.take());
        let e = feed.finished().await.unwrap_err();
        assert!(matches!(e, FeedError::Send(_)), "{e:?}");
    }
}
