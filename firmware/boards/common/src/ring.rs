//! Fixed-size byte ring buffer between a receive interrupt (producer) and the main loop
//! (consumer). The board crates keep it in a `critical_section::Mutex<RefCell<Ring<N>>>`; the
//! ring itself holds no lock.

/// A byte FIFO of capacity `N`. When it is full, further bytes are dropped and counted: the link
/// protocol recovers from lost bytes (the damaged frame fails its CRC and is retransmitted).
pub struct Ring<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
    dropped: u32,
    errors: u32,
}

impl<const N: usize> Ring<N> {
    /// An empty ring (`const`, for a `static`).
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            head: 0,
            len: 0,
            dropped: 0,
            errors: 0,
        }
    }

    /// Bytes waiting.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are waiting.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append as much of `data` as fits; returns how many bytes were stored (the rest is
    /// counted as dropped).
    pub fn push_slice(&mut self, data: &[u8]) -> usize {
        let mut stored = 0;
        for &b in data {
            if self.len == N {
                break;
            }
            let at = (self.head + self.len) % N;
            if let Some(slot) = self.buf.get_mut(at) {
                *slot = b;
            }
            self.len += 1;
            stored += 1;
        }
        let lost = (data.len() - stored) as u32;
        self.dropped = self.dropped.saturating_add(lost);
        stored
    }

    /// Move up to `out.len()` bytes into `out`, oldest first; returns how many.
    pub fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for o in out.iter_mut().take(n) {
            *o = self.buf.get(self.head).copied().unwrap_or(0);
            self.head = (self.head + 1) % N;
        }
        self.len -= n;
        n
    }

    /// Record a receive error reported by the hardware (overrun, framing, parity).
    pub fn note_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
    }

    /// Bytes dropped because the ring was full, and hardware receive errors, since the last
    /// call; both counters restart at zero.
    pub fn take_losses(&mut self) -> (u32, u32) {
        let r = (self.dropped, self.errors);
        self.dropped = 0;
        self.errors = 0;
        r
    }
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_across_wrap() {
        let mut r = Ring::<5>::new();
        let mut out = [0u8; 8];
        assert_eq!(r.push_slice(&[1, 2, 3]), 3);
        assert_eq!(r.pop_into(&mut out[..2]), 2);
        assert_eq!(&out[..2], &[1, 2]);
        assert_eq!(r.push_slice(&[4, 5, 6, 7]), 4); // wraps
        assert_eq!(r.len(), 5);
        assert_eq!(r.pop_into(&mut out), 5);
        assert_eq!(&out[..5], &[3, 4, 5, 6, 7]);
        assert!(r.is_empty());
        assert_eq!(r.take_losses(), (0, 0));
    }

    #[test]
    fn overflow_drops_and_counts() {
        let mut r = Ring::<4>::new();
        assert_eq!(r.push_slice(&[1, 2, 3, 4, 5, 6]), 4);
        r.note_error();
        assert_eq!(r.take_losses(), (2, 1));
        assert_eq!(r.take_losses(), (0, 0));
        let mut out = [0u8; 4];
        assert_eq!(r.pop_into(&mut out), 4);
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn long_random_stream_is_preserved() {
        let mut r = Ring::<64>::new();
        let mut x = 12345u32;
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (x >> 16) as usize % 40;
            let chunk: Vec<u8> = (0..n).map(|i| (x as usize + i) as u8).collect();
            let k = r.push_slice(&chunk);
            sent.extend_from_slice(&chunk[..k]);
            let mut out = [0u8; 33];
            let m = (x >> 8) as usize % 34;
            let k = r.pop_into(&mut out[..m]);
            got.extend_from_slice(&out[..k]);
        }
        let mut out = [0u8; 64];
        let k = r.pop_into(&mut out);
        got.extend_from_slice(&out[..k]);
        assert_eq!(sent, got);
    }
}
