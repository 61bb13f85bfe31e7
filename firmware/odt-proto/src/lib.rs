//! # odt-proto: the terrain_odt co-processor link protocol, version 1
//!
//! Implements `docs/protocol.md` for the co-processor side (and for tests of the host side):
//!
//! - [`cobs`]: COBS encoding and decoding;
//! - [`frame`]: frames on the wire (`COBS(packet) 0x00`) and the streaming [`FrameDecoder`],
//!   fed byte by byte, which resynchronises at the next `0x00` after any bad frame;
//! - [`packet`]: packets (`version | type | seq | payload | crc32`), CRC-32 from
//!   [`odt_core::blob::crc32`] (the project's one CRC);
//! - [`msg`]: typed [`Request`]s and [`Response`]s, decoded zero-copy from a packet and encoded
//!   into caller-provided buffers.
//!
//! `no_std`, no heap, no panics on any input: every failure is a `Result`.
//!
//! ```
//! use odt_proto::{decode_request, encode_message, FrameDecoder, Request, MAX_FRAME, MAX_PACKET};
//!
//! let mut pkt = [0u8; MAX_PACKET];
//! let mut wire = [0u8; MAX_FRAME];
//! let n = encode_message(7, &Request::Hello { next_train_seq: 100 }, &mut pkt, &mut wire).unwrap();
//!
//! let mut dec = FrameDecoder::<MAX_PACKET>::new();
//! let mut got = None;
//! for &b in &wire[..n] {
//!     if let Some(frame) = dec.push(b) {
//!         got = Some(decode_request(frame.unwrap()).unwrap().1 == Request::Hello { next_train_seq: 100 });
//!     }
//! }
//! assert_eq!(got, Some(true));
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod cobs;
pub mod frame;
pub mod msg;
pub mod packet;

pub use frame::{encode_frame, FrameDecoder, FrameError, PacketDecoder};
pub use msg::{
    frag_bitmap_len, frag_geometry_ok, frag_units, msg_type, DecodeError, ErrorCode, ErrorMsg,
    Info, Message, Request, Response, Scores, SetParams, Stats, TrainAck, ACK_APPLIED,
    ACK_DISABLED, ACK_DUP, PRED_UNKNOWN,
};
pub use packet::Packet;

/// Protocol version carried in every packet.
pub const VERSION: u8 = 1;
/// Header bytes: version, type, sequence number.
pub const HEADER_LEN: usize = 4;
/// CRC bytes at the end of a packet.
pub const CRC_LEN: usize = 4;
/// Header + CRC: the length of a packet with an empty payload.
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// Largest payload.
pub const MAX_PAYLOAD: usize = 1024;
/// Largest packet (before COBS).
pub const MAX_PACKET: usize = MAX_PAYLOAD + OVERHEAD;
/// Largest frame on the wire, delimiter included: `1032 + ceil(1032/254) + 1 = 1038`.
pub const MAX_FRAME: usize = cobs::max_encoded_len(MAX_PACKET) + 1;
/// Largest `UPLOAD_CHUNK` / `DOWNLOAD_DATA` data.
pub const MAX_CHUNK: usize = 512;
/// Features per unit of a fragmented training sample (`TRAIN_FRAG`, `FRAG_ACK`): fragments
/// start at a multiple of it and cover whole units.
pub const FRAG_UNIT: usize = 16;
/// Largest `FRAG_ACK` bitmap: 256 units, samples of up to 4096 features.
pub const MAX_FRAG_BITMAP: usize = 32;
/// Sequence number of an `ERROR` about a frame whose header did not survive.
pub const SEQ_NONE: u16 = 0xFFFF;

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The payload would exceed [`MAX_PAYLOAD`].
    PayloadTooLong,
    /// A list exceeds its wire limit (255 modes or scores, [`MAX_CHUNK`] data bytes).
    FieldTooLong,
}

/// A received frame that is not a usable message, with everything needed for the `ERROR` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// Not a packet (bad COBS, CRC, length): `ERROR(BAD_FRAME)`, `seq` [`SEQ_NONE`].
    Frame(FrameError),
    /// Another protocol version.
    BadVersion {
        /// The frame's sequence number.
        seq: u16,
        /// The version received.
        version: u8,
    },
    /// A type that is not a message of this direction.
    UnknownType {
        /// The frame's sequence number.
        seq: u16,
        /// The type received.
        msg_type: u8,
    },
    /// A payload of the wrong length for its type.
    BadLength {
        /// The frame's sequence number.
        seq: u16,
        /// The payload length received.
        len: u16,
    },
}

impl RxError {
    /// Sequence number of the `ERROR` reply.
    pub const fn seq(&self) -> u16 {
        match *self {
            RxError::Frame(_) => SEQ_NONE,
            RxError::BadVersion { seq, .. }
            | RxError::UnknownType { seq, .. }
            | RxError::BadLength { seq, .. } => seq,
        }
    }

    /// The `ERROR` payload that answers this frame.
    pub const fn to_error(&self) -> ErrorMsg {
        match *self {
            RxError::Frame(e) => ErrorMsg::new(ErrorCode::BadFrame, e.detail()),
            RxError::BadVersion { version, .. } => {
                ErrorMsg::new(ErrorCode::BadVersion, version as u16)
            }
            RxError::UnknownType { msg_type, .. } => {
                ErrorMsg::new(ErrorCode::UnknownType, msg_type as u16)
            }
            RxError::BadLength { len, .. } => ErrorMsg::new(ErrorCode::BadLength, len),
        }
    }
}

impl From<FrameError> for RxError {
    fn from(e: FrameError) -> Self {
        RxError::Frame(e)
    }
}

fn checked_packet(bytes: &[u8]) -> Result<Packet<'_>, RxError> {
    let p = Packet::decode(bytes)?;
    if p.version != VERSION {
        return Err(RxError::BadVersion {
            seq: p.seq,
            version: p.version,
        });
    }
    Ok(p)
}

fn map_decode(seq: u16, e: DecodeError) -> RxError {
    match e {
        DecodeError::UnknownType(msg_type) => RxError::UnknownType { seq, msg_type },
        DecodeError::BadLength(len) => RxError::BadLength { seq, len },
    }
}

/// Decode a packet (a frame after COBS) sent by the host: length, CRC, version, type, payload
/// length, in that order. Returns the sequence number and the request.
pub fn decode_request(packet: &[u8]) -> Result<(u16, Request<'_>), RxError> {
    let p = checked_packet(packet)?;
    let req = Request::decode(p.msg_type, p.payload).map_err(|e| map_decode(p.seq, e))?;
    Ok((p.seq, req))
}

/// Decode a packet sent by the co-processor. Returns the sequence number and the response.
pub fn decode_response(packet: &[u8]) -> Result<(u16, Response<'_>), RxError> {
    let p = checked_packet(packet)?;
    let resp = Response::decode(p.msg_type, p.payload).map_err(|e| map_decode(p.seq, e))?;
    Ok((p.seq, resp))
}

/// Write `msg` as a packet (header, payload, CRC) into `out`; returns the packet length.
pub fn encode_packet<M: Message + ?Sized>(
    seq: u16,
    msg: &M,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let n = msg.payload_len();
    if n > MAX_PAYLOAD {
        return Err(EncodeError::PayloadTooLong);
    }
    if out.len() < n + OVERHEAD {
        return Err(EncodeError::BufferTooSmall);
    }
    packet::write_header(out, VERSION, msg.msg_type(), seq)?;
    let body = out
        .get_mut(HEADER_LEN..HEADER_LEN + n)
        .ok_or(EncodeError::BufferTooSmall)?;
    let written = msg.encode_payload(body)?;
    packet::seal_packet(out, HEADER_LEN + written)
}

/// Write `msg` as a complete frame (packet, COBS, `0x00`) into `frame`, using `packet` as
/// scratch ([`MAX_PACKET`] bytes always suffice, [`MAX_FRAME`] for `frame`); returns the frame
/// length.
pub fn encode_message<M: Message + ?Sized>(
    seq: u16,
    msg: &M,
    packet: &mut [u8],
    frame: &mut [u8],
) -> Result<usize, EncodeError> {
    let n = encode_packet(seq, msg, packet)?;
    encode_frame(packet.get(..n).ok_or(EncodeError::BufferTooSmall)?, frame)
}

#[cfg(test)]
mod tests;
