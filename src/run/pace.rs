//! `--limit-rate` on the controller: one schedule that every stream the source sends draws
//! from, so that together they stay under the cap (linear sends to every host at once).
//!
//! The hosts pace their own uploads with a shell loop instead ([`super::remote::pace`]):
//! nothing but POSIX tools runs there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A cap on the bytes per second sent, shared by every sender that holds it. Each sender
/// reserves its next step before sending it and sleeps until its turn; an idle spell earns no
/// credit, so no burst above the cap follows one.
#[derive(Debug)]
pub struct Pacer {
    /// Bytes per second.
    rate: f64,
    /// When the next reserved byte may go.
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A cap of `bytes_per_s` (at least 1).
    pub fn new(bytes_per_s: u64) -> Self {
        Pacer {
            rate: bytes_per_s.max(1) as f64,
            next: Mutex::new(None),
        }
    }

    /// The cap, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// How many bytes to send between two reservations: a sixteenth of a second's worth,
    /// between 4 KiB and `max`, so that the cap holds over any fraction of a second without
    /// a reservation per packet.
    pub fn step(&self, max: usize) -> usize {
        ((self.rate / 16.0) as usize).clamp(4096, max.max(4096))
    }

    /// Reserves the next `n` bytes and returns how long to wait before sending them.
    pub fn reserve(&self, n: u64) -> Duration {
        self.reserve_at(Instant::now(), n)
    }

    fn reserve_at(&self, now: Instant, n: u64) -> Duration {
        let mut next = self.next.lock().unwrap();
        let start = next.map_or(now, |t| t.max(now));
        *next = Some(start + Duration::from_secs_f64(n as f64 / self.rate));
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_share_one_schedule_and_an_idle_spell_earns_no_burst() {
        let p = Pacer::new(1000);
        let t0 = Instant::now();
        assert_eq!(p.reserve_at(t0, 500), Duration::ZERO);
        // A second sender waits for the first one's half second.
        assert_eq!(p.reserve_at(t0, 250), Duration::from_millis(500));
        // The first sender's next step comes after both.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(p.reserve_at(t1, 1000), Duration::from_millis(650));
        // Ten idle seconds later, the next step goes at once, and the one after it waits its
        // full share again.
        let t2 = t0 + Duration::from_secs(12);
        assert_eq!(p.reserve_at(t2, 2000), Duration::ZERO);
        assert_eq!(p.reserve_at(t2, 1), Duration::from_secs(2));
    }

    #[test]
    fn steps_are_a_sixteenth_of_a_second_within_bounds() {
        assert_eq!(Pacer::new(5_000_000).step(1 << 20), 312_500);
        assert_eq!(Pacer::new(1000).step(1 << 20), 4096);
        assert_eq!(Pacer::new(10_000_000_000).step(1 << 20), 1 << 20);
    }
}
