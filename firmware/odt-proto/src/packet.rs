//! Packets: `version u8 | type u8 | seq u16 | payload | crc32 u32` (`docs/protocol.md` §1).

use odt_core::blob::{crc32, Crc32};

use crate::frame::FrameError;
use crate::{EncodeError, CRC_LEN, HEADER_LEN, MAX_PACKET, MAX_PAYLOAD, OVERHEAD};

/// A packet whose length and CRC have been checked (version and type not yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Protocol version byte.
    pub version: u8,
    /// Message type byte.
    pub msg_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// Payload bytes (at most [`MAX_PAYLOAD`]).
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Check the length (`Truncated` below 8 bytes, `Oversized` above [`MAX_PACKET`]) and the
    /// CRC-32 of a decoded frame, and split it into its fields.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        if bytes.len() < OVERHEAD {
            return Err(FrameError::Truncated);
        }
        if bytes.len() > MAX_PACKET {
            return Err(FrameError::Oversized);
        }
        let body_len = bytes.len() - CRC_LEN;
        let (body, tail) = bytes.split_at(body_len);
        let stored = u32::from_le_bytes([
            tail.first().copied().unwrap_or(0),
            tail.get(1).copied().unwrap_or(0),
            tail.get(2).copied().unwrap_or(0),
            tail.get(3).copied().unwrap_or(0),
        ]);
        if crc32(body) != stored {
            return Err(FrameError::Crc);
        }
        let b = |i: usize| body.get(i).copied().unwrap_or(0);
        Ok(Packet {
            version: b(0),
            msg_type: b(1),
            seq: u16::from_le_bytes([b(2), b(3)]),
            payload: body.get(HEADER_LEN..).unwrap_or(&[]),
        })
    }

    /// Write the packet (header, payload, CRC) into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(EncodeError::PayloadTooLong);
        }
        let n = OVERHEAD + self.payload.len();
        let out = out.get_mut(..n).ok_or(EncodeError::BufferTooSmall)?;
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        let seq = self.seq.to_le_bytes();
        head.copy_from_slice(&[self.version, self.msg_type, seq[0], seq[1]]);
        let (pay, crc) = rest.split_at_mut(self.payload.len());
        pay.copy_from_slice(self.payload);
        let mut c = Crc32::new();
        c.update(head);
        c.update(pay);
        crc.copy_from_slice(&c.finish().to_le_bytes());
        Ok(n)
    }
}

/// Write a packet header for `msg_type`/`seq` into `out[..4]`, leaving the payload to the
/// caller, then [`seal_packet`] adds the CRC. Used to build a packet in place without copying
/// the payload.
pub(crate) fn write_header(
    out: &mut [u8],
    version: u8,
    msg_type: u8,
    seq: u16,
) -> Result<(), EncodeError> {
    let s = seq.to_le_bytes();
    out.get_mut(..HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall)?
        .copy_from_slice(&[version, msg_type, s[0], s[1]]);
    Ok(())
}

/// Append the CRC-32 of `out[..body_len]` after it; returns the packet length.
pub(crate) fn seal_packet(out: &mut [u8], body_len: usize) -> Result<usize, EncodeError> {
    let crc = crc32(out.get(..body_len).ok_or(EncodeError::BufferTooSmall)?);
    out.get_mut(body_len..body_len + CRC_LEN)
        .ok_or(EncodeError::BufferTooSmall)?
        .copy_from_slice(&crc.to_le_bytes());
    Ok(body_len + CRC_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_errors() {
        let p = Packet {
            version: 1,
            msg_type: 2,
            seq: 0xBEEF,
            payload: &[0, 1, 2],
        };
        let mut buf = [0u8; 32];
        let n = p.encode(&mut buf).unwrap();
        assert_eq!(n, 11);
        assert_eq!(&buf[..4], &[1, 2, 0xEF, 0xBE]);
        assert_eq!(Packet::decode(&buf[..n]), Ok(p));
        assert_eq!(Packet::decode(&buf[..7]), Err(FrameError::Truncated));
        assert_eq!(Packet::decode(&buf[..n - 1]), Err(FrameError::Crc));
        let mut big = vec![0u8; MAX_PACKET + 1];
        assert_eq!(Packet::decode(&big), Err(FrameError::Oversized));
        let long = vec![0u8; MAX_PAYLOAD + 1];
        let p = Packet {
            version: 1,
            msg_type: 2,
            seq: 0,
            payload: &long,
        };
        assert_eq!(p.encode(&mut big), Err(EncodeError::PayloadTooLong));
        let p = Packet {
            version: 1,
            msg_type: 2,
            seq: 0,
            payload: &[1, 2],
        };
        assert_eq!(p.encode(&mut [0u8; 9]), Err(EncodeError::BufferTooSmall));
        // The CRC is zlib's crc32 of header + payload.
        let n = p.encode(&mut buf).unwrap();
        assert_eq!(&buf[n - 4..n], &crc32(&[1, 2, 0, 0, 1, 2]).to_le_bytes());
    }

    proptest! {
        #[test]
        fn any_single_byte_corruption_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            seq in any::<u16>(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
            let p = Packet { version: 1, msg_type: 3, seq, payload: &payload };
            let mut buf = vec![0u8; 300];
            let n = p.encode(&mut buf).unwrap();
            let i = at.index(n);
            buf[i] ^= x;
            prop_assert_eq!(Packet::decode(&buf[..n]), Err(FrameError::Crc));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = Packet::decode(&bytes);
        }
    }
}
