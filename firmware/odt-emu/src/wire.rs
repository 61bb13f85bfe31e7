//! What happens to bytes on the emulated wire: UART pacing and seeded fault injection.

use std::time::{Duration, Instant};

/// SplitMix64: small, seedable, good enough for fault injection.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }
}

/// Per-byte faults, applied in both directions.
pub struct Faults {
    /// Probability that a byte is replaced by a different random value.
    pub corrupt_rate: f64,
    /// Probability that a byte is lost.
    pub drop_rate: f64,
    /// Bytes corrupted so far.
    pub corrupted: u64,
    /// Bytes dropped so far.
    pub dropped: u64,
}

impl Faults {
    /// Pass one byte over the wire.
    pub fn apply(&mut self, rng: &mut Rng, b: u8) -> Option<u8> {
        if rng.chance(self.drop_rate) {
            self.dropped += 1;
            return None;
        }
        if rng.chance(self.corrupt_rate) {
            self.corrupted += 1;
            let flip = (rng.next_u64() % 255) as u8 + 1;
            return Some(b ^ flip);
        }
        Some(b)
    }
}

/// A UART's pace: `baud / 10` bytes per second (8N1), or unlimited for baud 0.
pub struct Pace {
    bytes_per_sec: f64,
    credit: f64,
    last: Instant,
}

impl Pace {
    /// Pace for `baud` bits per second (0 = unlimited).
    pub fn new(baud: u32) -> Self {
        Self {
            bytes_per_sec: baud as f64 / 10.0,
            credit: 0.0,
            last: Instant::now(),
        }
    }

    /// How many of `queued` bytes have finished transmitting by `now`.
    pub fn take(&mut self, now: Instant, queued: usize) -> usize {
        if self.bytes_per_sec == 0.0 {
            return queued;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if queued == 0 {
            // An idle line stores no time.
            self.credit = 0.0;
            return 0;
        }
        // At most 5 ms of backlog (e.g. while the peer was not reading).
        self.credit = (self.credit + dt * self.bytes_per_sec).min(self.bytes_per_sec * 0.005 + 1.0);
        let n = (self.credit.floor() as usize).min(queued);
        self.credit -= n as f64;
        n
    }

    /// Put back bytes that could not be delivered after all.
    pub fn refund(&mut self, n: usize) {
        if self.bytes_per_sec != 0.0 {
            self.credit += n as f64;
        }
    }

    /// Time until the next byte is due, if any are queued.
    pub fn next_due(&self, queued: usize) -> Option<Duration> {
        if queued == 0 {
            return None;
        }
        if self.bytes_per_sec == 0.0 {
            return Some(Duration::ZERO);
        }
        let need = (1.0 - self.credit).max(0.0) / self.bytes_per_sec;
        Some(Duration::from_secs_f64(need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_matches_the_baud_rate() {
        let mut p = Pace::new(115_200);
        let t0 = Instant::now();
        p.last = t0;
        assert_eq!(p.take(t0 + Duration::from_millis(1), 10_000), 11);
        assert_eq!(p.take(t0 + Duration::from_millis(3), 10_000), 23);
        // Idle time is not stored.
        assert_eq!(p.take(t0 + Duration::from_secs(1), 0), 0);
        assert_eq!(p.take(t0 + Duration::from_secs(1), 10), 0);
        let mut u = Pace::new(0);
        assert_eq!(u.take(Instant::now(), 1234), 1234);
    }

    #[test]
    fn faults_follow_their_rates() {
        let mut rng = Rng::new(7);
        let mut f = Faults {
            corrupt_rate: 0.1,
            drop_rate: 0.05,
            corrupted: 0,
            dropped: 0,
        };
        let mut changed = 0;
        for i in 0..100_000u32 {
            match f.apply(&mut rng, i as u8) {
                Some(b) if b != i as u8 => changed += 1,
                _ => {}
            }
        }
        assert_eq!(changed, f.corrupted);
        assert!((9_000..10_000).contains(&f.corrupted), "{}", f.corrupted);
        assert!((4_500..5_500).contains(&f.dropped), "{}", f.dropped);
        let mut none = Faults {
            corrupt_rate: 0.0,
            drop_rate: 0.0,
            corrupted: 0,
            dropped: 0,
        };
        assert!((0..1000).all(|i| none.apply(&mut rng, i as u8) == Some(i as u8)));
    }
}
