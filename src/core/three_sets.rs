//! The seed's three sets (set0 holders, set1 waiting, set2 busy), shared by the strategies
//! built on them: `bounce`, `bounce-fast` and `rack`.

use super::strategy::View;
use super::types::HostId;

/// Which of the seed's three sets a host is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Set {
    /// set0: holds the whole file and is free to send.
    Holder,
    /// set1: still waiting for the file.
    Waiting,
    /// set2: busy sending or receiving.
    Busy,
    /// Given up: in no set.
    Gone,
    /// Still joining (see [`View::is_joining`]): in no set yet.
    Joining,
}

/// Checks that host `h`, in set `s`, agrees with its holdings and its failure.
pub(crate) fn check_host(h: HostId, s: Set, view: &View<'_>) -> Result<(), String> {
    if s == Set::Holder && !view.holdings.is_complete(h) {
        return Err(format!("{h} is a holder without the whole file"));
    }
    if s == Set::Waiting && view.holdings.is_complete(h) {
        return Err(format!("{h} is waiting but holds the whole file"));
    }
    if s != Set::Gone && view.is_failed(h) {
        return Err(format!("{h} failed but is still in {s:?}"));
    }
    if (s == Set::Joining) != (view.is_joining(h) && !view.is_failed(h)) {
        return Err(format!(
            "{h} is {s:?} but joining is {}",
            view.is_joining(h)
        ));
    }
    Ok(())
}

/// Checks every host with [`check_host`], and that each holder and waiting host is queued
/// exactly once. `queued` yields every queue entry with the set its queue stands for and the
/// queue's name; entries of lost hosts may linger, as queues drop them lazily.
pub(crate) fn check_sets(
    set: &[Set],
    queued: impl IntoIterator<Item = (HostId, Set, &'static str)>,
    view: &View<'_>,
) -> Result<(), String> {
    let mut seen = vec![0u8; set.len()];
    for (h, want, name) in queued {
        match set[h.index()] {
            s if s == want => seen[h.index()] += 1,
            Set::Gone => {}
            s => return Err(format!("{h} is queued in {name} but is {s:?}")),
        }
    }
    for (i, &s) in set.iter().enumerate() {
        let h = HostId(i as u32);
        let expected = u8::from(matches!(s, Set::Holder | Set::Waiting));
        if seen[i] != expected {
            return Err(format!("{h} is {s:?} but queued {} times", seen[i]));
        }
        check_host(h, s, view)?;
    }
    Ok(())
}
