//! The runner's orchestration (driver loop around the scheduler core) against an in-memory
//! transport: byte-identical delivery, retries, dead hosts, resume and cancellation, with no
//! ssh involved.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bounce::core::{HostId, StrategyKind, Transfer};
use bounce::run::digest::sha256_bytes;
use bounce::run::{
    drive, CleanupFailure, DriveConfig, DriveError, Found, HostStatus, Observer, Prepared, Probe,
    RunEvent, RunOutcome, ThenOutcome, Transport, TransportError, CHAIN_WINDOW,
};

/// The strategies bounce-run offers.
const RUNNER: [StrategyKind; 3] = [
    StrategyKind::Linear,
    StrategyKind::Bounce,
    StrategyKind::Chain,
];

#[derive(Default)]
struct FakeState {
    dest: HashMap<HostId, Vec<u8>>,
    tmp: HashMap<HostId, Vec<u8>>,
    /// Chain chunks each host's `tmp` holds; they may arrive out of order, as the windowed
    /// links of the real transport let them.
    chunks: HashMap<HostId, HashSet<u32>>,
    unreachable: HashSet<HostId>,
    /// The host's connection dies the first time a hop touches it.
    dies_on_hop: HashSet<HostId>,
    /// The host's connection dies the first time it sends.
    dies_sending: HashSet<HostId>,
    dead: HashSet<HostId>,
    /// Remaining failures for hops from `.0` to `.1`; `u32::MAX` means always.
    fail_pair: HashMap<(HostId, HostId), u32>,
    /// Every hop to this host fails (a full disk).
    fail_to: HashSet<HostId>,
    /// The next copy to this host arrives corrupted.
    corrupt_once: HashSet<HostId>,
    /// Every copy to this host arrives corrupted.
    always_corrupt: HashSet<HostId>,
    /// The copy of this host changes on disk once it has sent its first chunk on: that chunk
    /// and everything read from the copy later carry a flipped byte, while the host's own
    /// check (made as it wrote, as a chain receiver's is) still passes.
    changes_on_disk: HashSet<HostId>,
    /// Hosts whose copy changed on disk: their own check at finalize passes regardless.
    changed: HashSet<HostId>,
    /// Hosts checked again, and hosts reset, in order.
    rechecked: Vec<HostId>,
    resets: Vec<HostId>,
    hang: bool,
    /// Setting up links never ends.
    hang_open: bool,
    /// Links set up ahead of time, and how many hops had started by then.
    opened: Vec<((HostId, HostId), usize)>,
    hops: Vec<(HostId, HostId, bool)>,
    discarded: Vec<HostId>,
    shutdown: bool,
    /// How many times shutdown ran.
    shutdowns: u32,
    /// Every hop panics (a defect in a transport task).
    panic_on_hop: bool,
    /// Links that cannot be set up ahead.
    open_fails: HashSet<(HostId, HostId)>,
    /// Stale temporary files the probe of each host sweeps.
    found: HashMap<HostId, Vec<Found>>,
    /// What shutdown reports it could not clean up.
    cleanup_fails: Vec<CleanupFailure>,
    /// `--then` runs: the host, the command, and whether its DEST held SRC then.
    thens: Vec<(HostId, String, bool)>,
    /// Hosts where `--then` exits with this status.
    then_fails: HashMap<HostId, i32>,
}

struct Fake {
    data: Vec<u8>,
    digest: String,
    chunk: u64,
    chunked: bool,
    st: Mutex<FakeState>,
}

impl Fake {
    fn new(size: usize, chunked: bool) -> Self {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        let digest = sha256_bytes(&data);
        let mut st = FakeState::default();
        st.dest.insert(HostId::SOURCE, data.clone());
        Fake {
            data,
            digest,
            chunk: 1000,
            chunked,
            st: Mutex::new(st),
        }
    }

    fn fail(&self, h: HostId, reason: &str) -> TransportError {
        TransportError::Remote {
            host: h.to_string(),
            reason: reason.into(),
        }
    }
}

impl Transport for Fake {
    async fn prepare(&self, host: HostId) -> Result<Prepared, TransportError> {
        let st = self.st.lock().unwrap();
        if st.unreachable.contains(&host) {
            return Err(TransportError::Connect {
                host: host.to_string(),
                reason: "Connection refused".into(),
            });
        }
        let probe = match st.dest.get(&host) {
            Some(d) if sha256_bytes(d) == self.digest => Probe::UpToDate,
            _ => Probe::Needed,
        };
        Ok(Prepared {
            probe,
            found: st.found.get(&host).cloned().unwrap_or_default(),
            hasher: None,
        })
    }

    async fn hop(&self, t: Transfer) -> Result<(), TransportError> {
        tokio::task::yield_now().await;
        if self.st.lock().unwrap().hang {
            std::future::pending::<()>().await;
        }
        if self.st.lock().unwrap().panic_on_hop {
            panic!("hop {} -> {} broke an invariant", t.from, t.to);
        }
        let mut st = self.st.lock().unwrap();
        let mut outcome = Ok(());
        if st.dies_sending.remove(&t.from) {
            st.dead.insert(t.from);
        }
        for h in [t.from, t.to] {
            if st.dies_on_hop.remove(&h) {
                st.dead.insert(h);
            }
            if st.dead.contains(&h) {
                outcome = Err(TransportError::Disconnected {
                    host: h.to_string(),
                    id: h,
                    reason: "Broken pipe".into(),
                });
            }
        }
        if st.fail_to.contains(&t.to) {
            outcome = Err(self.fail(t.to, "No space left on device"));
        }
        if let Some(n) = st.fail_pair.get_mut(&(t.from, t.to)) {
            if *n > 0 {
                *n = n.saturating_sub(u32::from(*n != u32::MAX));
                outcome = Err(self.fail(t.to, "broken pipe"));
            }
        }
        if outcome.is_err() {
            st.hops.push((t.from, t.to, false));
            if !self.chunked {
                st.tmp.remove(&t.to);
            }
            return outcome;
        }
        let off = (u64::from(t.chunks.start) * self.chunk) as usize;
        let end = off + t.bytes as usize;
        if st.changes_on_disk.remove(&t.from) {
            st.changed.insert(t.from);
            let copy = match st.dest.get_mut(&t.from) {
                Some(d) => d,
                None => st.tmp.get_mut(&t.from).expect("a sender holds a copy"),
            };
            copy[off] ^= 0x55;
        }
        let sender = match st.dest.get(&t.from) {
            Some(d) => d.clone(),
            None => {
                let held = st.chunks.get(&t.from).cloned().unwrap_or_default();
                assert!(
                    t.chunks.iter().all(|c| held.contains(&c)),
                    "{} sent chunks {:?} it does not hold",
                    t.from,
                    t.chunks
                );
                st.tmp[&t.from].clone()
            }
        };
        let mut piece = sender[off..end].to_vec();
        if st.corrupt_once.remove(&t.to) || st.always_corrupt.contains(&t.to) {
            piece[0] ^= 0xff;
        }
        st.hops.push((t.from, t.to, true));
        if self.chunked {
            let tmp = st.tmp.entry(t.to).or_default();
            if tmp.len() < end {
                tmp.resize(end, 0);
            }
            tmp[off..end].copy_from_slice(&piece);
            st.chunks.entry(t.to).or_default().extend(t.chunks.iter());
            Ok(())
        } else {
            if sha256_bytes(&piece) != self.digest {
                return Err(TransportError::DigestMismatch {
                    host: t.to.to_string(),
                    path: "tmp".into(),
                    got: sha256_bytes(&piece),
                });
            }
            st.dest.insert(t.to, piece);
            Ok(())
        }
    }

    async fn open_links(&self, links: &[(HostId, HostId)]) -> Vec<TransportError> {
        if self.st.lock().unwrap().hang_open {
            std::future::pending::<()>().await;
        }
        let mut st = self.st.lock().unwrap();
        let started = st.hops.len();
        st.opened.extend(links.iter().map(|&l| (l, started)));
        links
            .iter()
            .filter(|l| st.open_fails.contains(l))
            .map(|(a, b)| TransportError::Remote {
                host: format!("{a} -> {b}"),
                reason: "Host key verification failed.".into(),
            })
            .collect()
    }

    async fn finalize(&self, host: HostId) -> Result<(), TransportError> {
        if !self.chunked {
            return Ok(());
        }
        let mut st = self.st.lock().unwrap();
        // A copy that fails is left as it is (the real one is deleted, but a relay that has
        // it open goes on reading it) until the driver resets or discards the host.
        let tmp = st.tmp.get(&host).cloned().unwrap_or_default();
        if sha256_bytes(&tmp) != self.digest && !st.changed.contains(&host) {
            return Err(TransportError::DigestMismatch {
                host: host.to_string(),
                path: "tmp".into(),
                got: sha256_bytes(&tmp),
            });
        }
        st.tmp.remove(&host);
        st.chunks.remove(&host);
        st.dest.insert(host, tmp);
        Ok(())
    }

    async fn recheck(&self, host: HostId) -> Result<(), TransportError> {
        let mut st = self.st.lock().unwrap();
        st.rechecked.push(host);
        let got = sha256_bytes(st.dest.get(&host).map(Vec::as_slice).unwrap_or_default());
        if got == self.digest {
            Ok(())
        } else {
            Err(TransportError::DigestMismatch {
                host: host.to_string(),
                path: "dest".into(),
                got,
            })
        }
    }

    async fn reset(&self, host: HostId) {
        let mut st = self.st.lock().unwrap();
        st.resets.push(host);
        st.tmp.remove(&host);
        st.chunks.remove(&host);
        st.dest.remove(&host);
        st.changed.remove(&host);
    }

    async fn then(&self, host: HostId, command: &str) -> Result<ThenOutcome, TransportError> {
        let mut st = self.st.lock().unwrap();
        let in_place = st.dest.get(&host).is_some_and(|d| *d == self.data);
        st.thens.push((host, command.to_string(), in_place));
        let status = st.then_fails.get(&host).copied().unwrap_or(0);
        Ok(ThenOutcome {
            status,
            output: format!("ran on {host}"),
        })
    }

    async fn discard(&self, host: HostId) {
        let mut st = self.st.lock().unwrap();
        st.tmp.remove(&host);
        st.chunks.remove(&host);
        st.discarded.push(host);
    }

    async fn shutdown(&self) -> Vec<CleanupFailure> {
        let mut st = self.st.lock().unwrap();
        st.tmp.clear();
        st.chunks.clear();
        st.shutdown = true;
        st.shutdowns += 1;
        st.cleanup_fails.clone()
    }
}

fn cfg(kind: StrategyKind, receivers: u32, fake: &Fake) -> DriveConfig {
    DriveConfig {
        kind,
        layout: kind.layout(fake.data.len() as u64, fake.chunk).unwrap(),
        max_attempts: 3,
        receivers,
        then: None,
    }
}

async fn run(fake: &Arc<Fake>, kind: StrategyKind, receivers: u32) -> RunOutcome {
    run_observed(fake, kind, receivers, &mut bounce::run::driver::NoObserver)
        .await
        .expect("no internal error")
}

/// Drives `fake` with the configuration `c`, observing nothing.
async fn run_with(fake: &Arc<Fake>, c: &DriveConfig) -> RunOutcome {
    drive(
        Arc::clone(fake),
        c,
        std::future::pending(),
        &mut bounce::run::driver::NoObserver,
    )
    .await
    .expect("no internal error")
}

async fn run_observed(
    fake: &Arc<Fake>,
    kind: StrategyKind,
    receivers: u32,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, DriveError> {
    let c = cfg(kind, receivers, fake);
    let o = drive(Arc::clone(fake), &c, std::future::pending(), observer).await;
    assert_eq!(
        fake.st.lock().unwrap().shutdowns,
        1,
        "shutdown runs exactly once, whatever happened"
    );
    o
}

/// Keeps every event.
#[derive(Default)]
struct Events(Vec<RunEvent>);

impl Observer for Events {
    fn on_event(&mut self, event: &RunEvent) {
        self.0.push(event.clone());
    }
}

/// An observer that panics when the first hop starts: a panic inside the driver's own loop,
/// where the core's assertions would fire too.
struct PanicsOnHop;

impl Observer for PanicsOnHop {
    fn on_event(&mut self, event: &RunEvent) {
        if matches!(event, RunEvent::HopStarted(_)) {
            panic!("the observer broke");
        }
    }
}

/// Runs until an interrupt 50 ms in, which must end the run promptly.
async fn run_interrupted(fake: &Arc<Fake>, kind: StrategyKind, receivers: u32) -> RunOutcome {
    let c = cfg(kind, receivers, fake);
    let o = tokio::time::timeout(
        Duration::from_secs(10),
        drive(
            Arc::clone(fake),
            &c,
            tokio::time::sleep(Duration::from_millis(50)),
            &mut bounce::run::driver::NoObserver,
        ),
    )
    .await
    .expect("an interrupted run returns promptly")
    .expect("no internal error");
    assert!(o.interrupted);
    o
}

fn status(o: &RunOutcome, h: u32) -> HostStatus {
    o.hosts[h as usize - 1]
        .status
        .expect("every host has a final status")
}

fn fake(kind: StrategyKind) -> Arc<Fake> {
    Arc::new(Fake::new(10_500, kind.uses_chunks()))
}

#[tokio::test]
async fn every_strategy_delivers_identical_bytes_to_every_host() {
    for kind in RUNNER {
        for c in [1u32, 2, 7, 8, 13] {
            let f = fake(kind);
            let o = run(&f, kind, c).await;
            assert!(o.all_ok(), "{kind} with {c} hosts: {o:?}");
            let st = f.st.lock().unwrap();
            for h in 1..=c {
                assert_eq!(st.dest[&HostId(h)], f.data, "{kind}: host {h} differs");
                assert_eq!(status(&o, h), HostStatus::Verified);
            }
            assert!(st.tmp.is_empty() && st.shutdown);
        }
    }
}

#[tokio::test]
async fn failed_hop_is_retried_from_another_holder() {
    let f = fake(StrategyKind::Bounce);
    f.st.lock()
        .unwrap()
        .fail_pair
        .insert((HostId::SOURCE, HostId(1)), u32::MAX);
    let o = run(&f, StrategyKind::Bounce, 3).await;
    assert!(o.all_ok(), "{o:?}");
    let from = o.hosts[0].from.unwrap();
    assert_ne!(
        from,
        HostId::SOURCE,
        "host 1 must get the file from another holder"
    );
    let st = f.st.lock().unwrap();
    assert!(st.hops.contains(&(HostId::SOURCE, HostId(1), false)));
    assert_eq!(st.dest[&HostId(1)], f.data);
}

#[tokio::test]
async fn host_is_given_up_after_max_attempts_and_the_others_complete() {
    for kind in RUNNER {
        let f = fake(kind);
        f.st.lock().unwrap().fail_to.insert(HostId(2));
        let o = run(&f, kind, 4).await;
        assert!(!o.all_ok());
        assert_eq!(status(&o, 2), HostStatus::Failed, "{kind}");
        assert_eq!(
            o.hosts[1].error.as_deref(),
            Some("h2: No space left on device")
        );
        for h in [1, 3, 4] {
            assert_eq!(status(&o, h), HostStatus::Verified, "{kind}: host {h}");
        }
        let st = f.st.lock().unwrap();
        let tries = st.hops.iter().filter(|(_, to, _)| *to == HostId(2)).count();
        if kind == StrategyKind::Chain {
            // Chunks already in flight on a link when it fails fail with it: one attempt.
            assert!(
                (3..=3 * CHAIN_WINDOW as usize).contains(&tries),
                "{kind}: {tries} hops to the failing host"
            );
        } else {
            assert_eq!(
                tries, 3,
                "{kind}: exactly max_attempts hops to the failing host"
            );
        }
        assert!(
            !st.dest.contains_key(&HostId(2)),
            "nothing at DEST of a failed host"
        );
        assert!(st.discarded.contains(&HostId(2)));
    }
}

#[tokio::test]
async fn dead_host_is_given_up_at_once_without_burning_attempts() {
    for kind in RUNNER {
        let f = fake(kind);
        f.st.lock().unwrap().dies_on_hop.insert(HostId(2));
        let o = run(&f, kind, 5).await;
        assert_eq!(status(&o, 2), HostStatus::Failed, "{kind}");
        assert!(o.hosts[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with("connection to h2 lost"));
        for h in [1, 3, 4, 5] {
            assert_eq!(status(&o, h), HostStatus::Verified, "{kind}: host {h}");
        }
        let st = f.st.lock().unwrap();
        let tries = st.hops.iter().filter(|(_, to, _)| *to == HostId(2)).count();
        // Only the hops in flight when it died: one, or one window of chunks.
        let window = if kind == StrategyKind::Chain {
            CHAIN_WINDOW as usize
        } else {
            1
        };
        assert!((1..=window).contains(&tries), "{kind}: {tries} hops");
    }
}

#[tokio::test]
async fn unreachable_host_fails_before_any_data_moves_and_others_complete() {
    for kind in RUNNER {
        let f = fake(kind);
        f.st.lock().unwrap().unreachable.insert(HostId(3));
        let o = run(&f, kind, 7).await;
        assert_eq!(status(&o, 3), HostStatus::Failed);
        assert!(o.hosts[2]
            .error
            .as_deref()
            .unwrap()
            .contains("Connection refused"));
        for h in [1, 2, 4, 5, 6, 7] {
            assert_eq!(status(&o, h), HostStatus::Verified, "{kind}: host {h}");
        }
        let st = f.st.lock().unwrap();
        assert!(st
            .hops
            .iter()
            .all(|(a, b, _)| *a != HostId(3) && *b != HostId(3)));
    }
}

#[tokio::test]
async fn resumed_run_sends_only_what_is_missing_and_up_to_date_hosts_still_send() {
    for kind in RUNNER {
        let f = fake(kind);
        {
            let mut st = f.st.lock().unwrap();
            for h in [1, 2, 4] {
                st.dest.insert(HostId(h), f.data.clone());
            }
            st.dest.insert(HostId(3), b"stale".to_vec());
        }
        let o = run(&f, kind, 5).await;
        assert!(o.all_ok(), "{o:?}");
        for h in [1, 2, 4] {
            assert_eq!(status(&o, h), HostStatus::UpToDate);
            assert_eq!(o.hosts[h as usize - 1].bytes, 0, "{kind}: host {h}");
        }
        assert_eq!(status(&o, 3), HostStatus::Verified);
        let st = f.st.lock().unwrap();
        assert!(st.hops.iter().all(|(_, to, _)| ![1, 2, 4].contains(&to.0)));
        assert_eq!(st.dest[&HostId(3)], f.data);
        if kind == StrategyKind::Chain {
            // 2 -> 3 in the chain: the up-to-date host forwards.
            assert!(st
                .hops
                .iter()
                .any(|(a, b, _)| *a == HostId(2) && *b == HostId(3)));
        }
    }
}

#[tokio::test]
async fn corrupted_copy_is_rejected_and_retried() {
    let f = fake(StrategyKind::Linear);
    f.st.lock().unwrap().corrupt_once.insert(HostId(1));
    let o = run(&f, StrategyKind::Linear, 2).await;
    assert!(o.all_ok(), "{o:?}");
    let st = f.st.lock().unwrap();
    assert_eq!(st.dest[&HostId(1)], f.data);
}

#[tokio::test]
async fn a_corrupted_chain_copy_is_fed_again_and_never_left_at_dest() {
    // h2's copy arrives with a flipped byte: its check at the end fails. Its feeder h1 is
    // checked again (and is fine), h2 is fed again from the start and ends verified.
    let f = fake(StrategyKind::Chain);
    f.st.lock().unwrap().corrupt_once.insert(HostId(2));
    let o = run(&f, StrategyKind::Chain, 2).await;
    assert!(o.all_ok(), "{o:?}");
    let st = f.st.lock().unwrap();
    assert_eq!(st.dest[&HostId(2)], f.data);
    assert_eq!(st.rechecked, [HostId(1)]);
    assert_eq!(st.resets, [HostId(2)]);
}

#[tokio::test]
async fn a_chain_copy_corrupted_every_time_fails_the_host_and_leaves_nothing_at_dest() {
    let f = fake(StrategyKind::Chain);
    // Out of attempts (3): given up like any failed host, nothing at its DEST.
    f.st.lock().unwrap().always_corrupt.insert(HostId(2));
    let o = run(&f, StrategyKind::Chain, 2).await;
    assert_eq!(status(&o, 1), HostStatus::Verified);
    assert_eq!(status(&o, 2), HostStatus::Failed);
    assert!(o.hosts[1]
        .error
        .as_deref()
        .unwrap()
        .contains("digest mismatch"));
    assert!(!f.st.lock().unwrap().dest.contains_key(&HostId(2)));
}

#[tokio::test]
async fn a_chain_host_whose_copy_changed_on_disk_is_found_and_everyone_is_fed_again() {
    // h1's copy changes on disk after it checked it as it wrote: it passes its own check,
    // and feeds h2 a bad byte. h2's check fails; h1 is checked again, found wrong, and both
    // are fed again from good copies. Nobody ends with a wrong file or is given up.
    let f = fake(StrategyKind::Chain);
    f.st.lock().unwrap().changes_on_disk.insert(HostId(1));
    let o = run(&f, StrategyKind::Chain, 3).await;
    assert!(o.all_ok(), "{o:?}");
    let st = f.st.lock().unwrap();
    for h in 1..=3 {
        assert_eq!(st.dest[&HostId(h)], f.data, "h{h}");
    }
    assert_eq!(st.rechecked, [HostId(1)]);
    let mut resets = st.resets.clone();
    resets.sort();
    // h3 may have been fed from h2's bad copy too: it is reset if so, never given up.
    assert_eq!(&resets[..2], [HostId(1), HostId(2)], "{resets:?}");
    assert!(st.discarded.is_empty(), "{:?}", st.discarded);
}

#[tokio::test]
async fn cancellation_stops_the_run_and_cleans_up() {
    for kind in RUNNER {
        let f = fake(kind);
        f.st.lock().unwrap().hang = true;
        let o = run_interrupted(&f, kind, 4).await;
        for h in 1..=4 {
            assert_eq!(status(&o, h), HostStatus::Interrupted);
        }
        let st = f.st.lock().unwrap();
        assert!(st.shutdown, "{kind}: shutdown must run on interrupt");
        assert!(st.tmp.is_empty());
        assert_eq!(st.dest.len(), 1, "only the source holds the file");
    }
}

#[tokio::test]
async fn a_chain_sets_up_the_links_it_uses_before_the_first_hop() {
    let f = fake(StrategyKind::Chain);
    // Host 2 already holds the file: the chain goes 1 -> 3 past it, through 2's place.
    f.st.lock().unwrap().dest.insert(HostId(2), f.data.clone());
    let o = run(&f, StrategyKind::Chain, 4).await;
    assert!(o.all_ok(), "{o:?}");
    {
        let st = f.st.lock().unwrap();
        let mut opened: Vec<(u32, u32)> = st.opened.iter().map(|((a, b), _)| (a.0, b.0)).collect();
        opened.sort();
        let mut used: Vec<(u32, u32)> = st.hops.iter().map(|(a, b, _)| (a.0, b.0)).collect();
        used.sort();
        used.dedup();
        assert_eq!(opened, used);
        assert!(st.opened.iter().all(|&(_, started)| started == 0));
    }

    for kind in [StrategyKind::Linear, StrategyKind::Bounce] {
        let f = fake(kind);
        assert!(run(&f, kind, 4).await.all_ok());
        assert!(f.st.lock().unwrap().opened.is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn cancellation_while_links_are_set_up_stops_the_run() {
    let f = fake(StrategyKind::Chain);
    f.st.lock().unwrap().hang_open = true;
    run_interrupted(&f, StrategyKind::Chain, 4).await;
    let st = f.st.lock().unwrap();
    assert!(st.shutdown && st.hops.is_empty());
}

#[tokio::test]
async fn a_panicking_hop_task_stops_the_run_and_still_cleans_up() {
    for kind in RUNNER {
        let f = fake(kind);
        f.st.lock().unwrap().panic_on_hop = true;
        let e = run_observed(&f, kind, 3, &mut bounce::run::driver::NoObserver)
            .await
            .expect_err("a panic is an internal error");
        assert!(e.message.contains("broke an invariant"), "{kind}: {e}");
        assert!(f.st.lock().unwrap().shutdown, "{kind}");
    }
}

#[tokio::test]
async fn a_panic_in_the_driver_loop_still_cleans_up() {
    for kind in RUNNER {
        let f = fake(kind);
        let e = run_observed(&f, kind, 3, &mut PanicsOnHop)
            .await
            .expect_err("a panic is an internal error");
        assert!(e.message.contains("the observer broke"), "{kind}: {e}");
    }
}

#[tokio::test]
async fn a_lost_sender_is_given_up_and_its_receiver_keeps_its_attempts() {
    // With one attempt per host, a receiver charged for its sender's death would be given up.
    // Bounce sends source -> 1 first, then host 1 sends on while the source serves another:
    // host 1 dies there, and its receiver is served again by a holder that is alive.
    let f = fake(StrategyKind::Bounce);
    f.st.lock().unwrap().dies_sending.insert(HostId(1));
    let c = DriveConfig {
        max_attempts: 1,
        ..cfg(StrategyKind::Bounce, 3, &f)
    };
    let o = run_with(&f, &c).await;
    for h in [2, 3] {
        assert_eq!(status(&o, h), HostStatus::Verified, "host {h}: {o:?}");
        assert_ne!(o.hosts[h as usize - 1].from, Some(HostId(1)), "host {h}");
    }
    let st = f.st.lock().unwrap();
    assert!(
        st.hops.iter().any(|&(a, _, ok)| a == HostId(1) && !ok),
        "host 1 did try to send: {:?}",
        st.hops
    );
    assert_eq!(st.dest[&HostId(2)], f.data);
    assert_eq!(st.dest[&HostId(3)], f.data);
}

#[tokio::test]
async fn links_that_cannot_be_set_up_ahead_are_reported_and_the_chain_goes_on() {
    let f = fake(StrategyKind::Chain);
    f.st.lock()
        .unwrap()
        .open_fails
        .insert((HostId(1), HostId(2)));
    let mut events = Events::default();
    let o = run_observed(&f, StrategyKind::Chain, 3, &mut events)
        .await
        .unwrap();
    assert!(o.all_ok(), "{o:?}");
    let reasons: Vec<&str> = events
        .0
        .iter()
        .filter_map(|e| match e {
            RunEvent::LinkNotOpened { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["h1 -> h2: Host key verification failed."]);
}

#[tokio::test]
async fn swept_files_and_failed_cleanups_reach_the_caller() {
    let f = fake(StrategyKind::Linear);
    {
        let mut st = f.st.lock().unwrap();
        st.found.insert(
            HostId(2),
            vec![Found::Swept("/d/.f.bounce-old.tmp".to_string())],
        );
        st.cleanup_fails.push(CleanupFailure {
            host: "h1".into(),
            reason: "timed out".into(),
            left: vec!["/d/.f.bounce-x.tmp".into()],
        });
    }
    let mut events = Events::default();
    let o = run_observed(&f, StrategyKind::Linear, 2, &mut events)
        .await
        .unwrap();
    assert!(o.all_ok());
    assert!(events.0.iter().any(|e| matches!(
        e,
        RunEvent::Found { host, found: Found::Swept(path) }
            if *host == HostId(2) && path == "/d/.f.bounce-old.tmp"
    )));
    assert_eq!(o.cleanup.len(), 1);
    assert_eq!(
        o.cleanup[0].to_string(),
        "h1: cleanup failed (timed out); may be left: /d/.f.bounce-x.tmp"
    );
}

#[tokio::test]
async fn then_runs_once_on_every_host_in_place_after_the_transfer_and_never_on_failed_ones() {
    for kind in [
        StrategyKind::Linear,
        StrategyKind::Bounce,
        StrategyKind::Chain,
    ] {
        let f = fake(kind);
        {
            let mut st = f.st.lock().unwrap();
            st.fail_to.insert(HostId(2));
            st.dest.insert(HostId(4), f.data.clone());
            st.then_fails.insert(HostId(3), 5);
        }
        let c = DriveConfig {
            then: Some("load \"$1\"".into()),
            ..cfg(kind, 4, &f)
        };
        let o = run_with(&f, &c).await;
        let thens = f.st.lock().unwrap().thens.clone();
        let mut ran: Vec<HostId> = thens.iter().map(|t| t.0).collect();
        ran.sort();
        // Host 2 failed, host 4 was up to date: hosts 1, 3 and 4, once each, each with its
        // copy in place, with the command as given.
        assert_eq!(ran, vec![HostId(1), HostId(3), HostId(4)], "{kind}");
        assert!(
            thens.iter().all(|t| t.2 && t.1 == "load \"$1\""),
            "{kind}: {thens:?}"
        );
        let status = |i: usize| o.hosts[i].then.clone().map(|r| r.map(|t| t.status));
        assert_eq!(status(0), Some(Ok(0)), "{kind}");
        assert_eq!(status(1), None, "{kind}");
        assert_eq!(status(2), Some(Ok(5)), "{kind}");
        assert_eq!(status(3), Some(Ok(0)), "{kind}");
        // Without --then, nothing runs.
        let f = fake(kind);
        run(&f, kind, 3).await;
        assert!(f.st.lock().unwrap().thens.is_empty());
    }
}
