//! Frames on the wire: `COBS(packet) 0x00`, and a streaming decoder fed byte by byte.

use crate::cobs;
use crate::{EncodeError, MAX_FRAME, MAX_PACKET};

/// A frame that could not be turned into a packet (`ERROR(BAD_FRAME)`, `docs/protocol.md` §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes between two delimiters are not a COBS encoding (a block code runs past the end).
    Cobs,
    /// The packet's CRC-32 does not match.
    Crc,
    /// The packet is shorter than 8 bytes.
    Truncated,
    /// More than [`MAX_FRAME`] bytes on the wire, or a packet longer than [`MAX_PACKET`] (or than
    /// the decoder's buffer).
    Oversized,
}

impl FrameError {
    /// The `detail` of `ERROR(BAD_FRAME)`: 1 COBS, 2 CRC, 3 truncated, 4 oversized.
    pub const fn detail(self) -> u16 {
        match self {
            FrameError::Cobs => 1,
            FrameError::Crc => 2,
            FrameError::Truncated => 3,
            FrameError::Oversized => 4,
        }
    }

    /// The inverse of [`detail`](Self::detail).
    pub const fn from_detail(d: u16) -> Option<Self> {
        match d {
            1 => Some(FrameError::Cobs),
            2 => Some(FrameError::Crc),
            3 => Some(FrameError::Truncated),
            4 => Some(FrameError::Oversized),
            _ => None,
        }
    }

    /// Upper-case name used in the doc and the golden frames (`COBS`, `CRC`, …).
    pub const fn name(self) -> &'static str {
        match self {
            FrameError::Cobs => "COBS",
            FrameError::Crc => "CRC",
            FrameError::Truncated => "TRUNCATED",
            FrameError::Oversized => "OVERSIZED",
        }
    }
}

/// COBS-encode `packet` into `out` and append the `0x00` delimiter; returns the frame length.
pub fn encode_frame(packet: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let n = cobs::encode(packet, out).map_err(|_| EncodeError::BufferTooSmall)?;
    *out.get_mut(n).ok_or(EncodeError::BufferTooSmall)? = 0;
    Ok(n + 1)
}

/// Streaming frame decoder: push received bytes one at a time; every `0x00` ends a frame and
/// yields its decoded packet bytes or why it is unusable.
///
/// COBS is decoded on the fly into a buffer of `N` bytes (use [`MAX_PACKET`]), so a frame is
/// never stored encoded and an oversized frame is detected the moment it would overflow, without
/// writing past the buffer; the rest of it is skipped up to the next `0x00`, where the decoder
/// resynchronises. An empty frame (two delimiters in a row, or a delimiter sent to flush line
/// noise) yields nothing.
///
/// The decoder does not check CRCs or lengths: pass the packet to
/// [`Packet::decode`](crate::Packet::decode) (or [`decode_request`](crate::decode_request)).
#[derive(Clone, Debug)]
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    /// Decoded bytes of the current frame.
    len: usize,
    /// Encoded bytes of the current frame so far (without the delimiter).
    raw: usize,
    /// Data bytes left in the current COBS block.
    remaining: u8,
    /// Whether the current block ends with an implied zero (if another block follows).
    pending_zero: bool,
    /// The current frame is bad; skip to the next delimiter, then report this.
    error: Option<FrameError>,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder, waiting for the start of a frame.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            raw: 0,
            remaining: 0,
            pending_zero: false,
            error: None,
        }
    }

    /// Forget any partial frame (e.g. after a UART error); the next byte starts a new frame.
    pub fn reset(&mut self) {
        self.len = 0;
        self.raw = 0;
        self.remaining = 0;
        self.pending_zero = false;
        self.error = None;
    }

    /// Whether a frame is partly received.
    pub fn in_frame(&self) -> bool {
        self.raw != 0 || self.error.is_some()
    }

    fn emit(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.error = Some(FrameError::Oversized),
        }
    }

    /// Feed one received byte. Returns `Some` when it completed a frame: `Ok(packet)` (still to
    /// be CRC-checked) or the [`FrameError`] of a bad frame (`Cobs` or `Oversized`).
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte == 0 {
            let (len, raw, remaining, error) = (self.len, self.raw, self.remaining, self.error);
            self.reset();
            if let Some(e) = error {
                return Some(Err(e));
            }
            if raw == 0 {
                return None;
            }
            if remaining != 0 {
                return Some(Err(FrameError::Cobs));
            }
            return Some(Ok(self.buf.get(..len).unwrap_or(&[])));
        }
        if self.error.is_some() {
            return None;
        }
        self.raw += 1;
        if self.raw >= MAX_FRAME {
            // MAX_FRAME counts the delimiter.
            self.error = Some(FrameError::Oversized);
            return None;
        }
        if self.remaining == 0 {
            if self.pending_zero {
                self.emit(0);
            }
            self.remaining = byte - 1;
            self.pending_zero = byte != 0xFF;
        } else {
            self.emit(byte);
            self.remaining -= 1;
        }
        None
    }
}

/// A [`FrameDecoder`] sized for the largest packet of the protocol.
pub type PacketDecoder = FrameDecoder<MAX_PACKET>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cobs::max_encoded_len;
    use proptest::prelude::*;

    fn frame(packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; max_encoded_len(packet.len()) + 1];
        let n = encode_frame(packet, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn run<const N: usize>(
        d: &mut FrameDecoder<N>,
        bytes: &[u8],
    ) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut v = Vec::new();
        for &b in bytes {
            if let Some(r) = d.push(b) {
                v.push(r.map(|p| p.to_vec()));
            }
        }
        v
    }

    #[test]
    fn decodes_back_to_back_frames_and_skips_empty_ones() {
        let mut d = PacketDecoder::new();
        let mut bytes = vec![0, 0];
        bytes.extend(frame(&[1, 0, 2, 3]));
        bytes.push(0);
        bytes.extend(frame(&[]));
        bytes.extend(frame(&[0; 10]));
        let out = run(&mut d, &bytes);
        assert_eq!(out, vec![Ok(vec![1, 0, 2, 3]), Ok(vec![]), Ok(vec![0; 10])]);
        assert!(!d.in_frame());
    }

    #[test]
    fn bad_cobs_then_resync() {
        let mut d = PacketDecoder::new();
        let mut bytes = vec![0x05, 1, 2, 0];
        bytes.extend(frame(&[9, 9, 9, 9, 9, 9, 9, 9]));
        let out = run(&mut d, &bytes);
        assert_eq!(out, vec![Err(FrameError::Cobs), Ok(vec![9; 8])]);
    }

    #[test]
    fn oversized_by_packet_length_never_overflows() {
        let mut d = FrameDecoder::<16>::new();
        let mut bytes = frame(&[7u8; 17]);
        bytes.extend(frame(&[7u8; 16]));
        let out = run(&mut d, &bytes);
        assert_eq!(out, vec![Err(FrameError::Oversized), Ok(vec![7; 16])]);
    }

    #[test]
    fn oversized_by_wire_length() {
        let mut d = PacketDecoder::new();
        // Largest legal packet: 1032 bytes encode to 1037 + delimiter = MAX_FRAME.
        let big = frame(&[0xAA; MAX_PACKET]);
        assert_eq!(big.len(), MAX_FRAME);
        assert_eq!(run(&mut d, &big), vec![Ok(vec![0xAA; MAX_PACKET])]);
        // One more packet byte is oversized.
        let too_big = frame(&[0xAA; MAX_PACKET + 1]);
        assert_eq!(run(&mut d, &too_big), vec![Err(FrameError::Oversized)]);
        // A non-canonical run of empty blocks: short packet, long frame.
        let mut junk = vec![0x01; MAX_FRAME + 10];
        junk.push(0);
        assert_eq!(run(&mut d, &junk), vec![Err(FrameError::Oversized)]);
        // Endless noise without a delimiter yields nothing and does not overflow.
        for _ in 0..100_000 {
            assert!(d.push(0x55).is_none());
        }
        assert_eq!(run(&mut d, &[0]), vec![Err(FrameError::Oversized)]);
    }

    #[test]
    fn error_detail_codes() {
        for e in [
            FrameError::Cobs,
            FrameError::Crc,
            FrameError::Truncated,
            FrameError::Oversized,
        ] {
            assert_eq!(FrameError::from_detail(e.detail()), Some(e));
        }
        assert_eq!(FrameError::from_detail(0), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let mut d = FrameDecoder::<64>::new();
            for b in bytes {
                if let Some(Ok(p)) = d.push(b) {
                    prop_assert!(p.len() <= 64);
                }
            }
        }

        #[test]
        fn streaming_matches_batch_decode(packets in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 1..600), 1..5)) {
            let mut d = PacketDecoder::new();
            let mut bytes = Vec::new();
            for p in &packets {
                bytes.extend(frame(p));
            }
            let out = run(&mut d, &bytes);
            let want: Vec<_> = packets.iter().map(|p| Ok(p.clone())).collect();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn resyncs_after_garbage(garbage in proptest::collection::vec(any::<u8>(), 0..3000),
                                 packet in proptest::collection::vec(any::<u8>(), 1..300)) {
            let mut d = PacketDecoder::new();
            let mut bytes = garbage;
            bytes.push(0);
            bytes.extend(frame(&packet));
            let out = run(&mut d, &bytes);
            prop_assert_eq!(out.last().cloned(), Some(Ok(packet)));
        }
    }
}
