//! Typed messages (`docs/protocol.md` §3): requests from the host, responses from the
//! co-processor, their payload encodings and decodings. Decoded messages borrow from the packet
//! buffer (no copies, no heap); encoders write into caller-provided buffers.
//!
//! This module holds what both directions share (type bytes, [`DecodeError`], the [`Message`]
//! trait, the little-endian cursors); the requests (host → co-processor) and the responses
//! (co-processor → host) are in their own submodules, re-exported here.

use crate::EncodeError;

mod requests;
mod responses;

pub use requests::{frag_bitmap_len, frag_geometry_ok, frag_units, Request, SetParams};
pub use responses::{
    ErrorCode, ErrorMsg, Info, Response, Scores, Stats, TrainAck, ACK_APPLIED, ACK_DISABLED,
    ACK_DUP, PRED_UNKNOWN,
};

/// Message type bytes.
pub mod msg_type {
    /// Open (or resume) a session; answered by `INFO`.
    pub const HELLO: u8 = 0x01;
    /// One training sample; answered by `TRAIN_ACK`.
    pub const TRAIN: u8 = 0x02;
    /// Classify one input; answered by `PREDICTION`.
    pub const INFER: u8 = 0x03;
    /// Ask for the statistics; answered by `STATS` (0x84).
    pub const STATS: u8 = 0x04;
    /// Set training parameters; answered by `OK`.
    pub const SET_PARAMS: u8 = 0x05;
    /// Save the model to flash; answered by `OK`.
    pub const SAVE: u8 = 0x06;
    /// Reload the last saved model; answered by `OK`.
    pub const RESTORE: u8 = 0x07;
    /// Reload the pretrained model; answered by `OK`.
    pub const RESET_PRETRAINED: u8 = 0x08;
    /// Start a model upload; answered by `OK`.
    pub const UPLOAD_BEGIN: u8 = 0x09;
    /// A piece of the uploaded blob; answered by `OK`.
    pub const UPLOAD_CHUNK: u8 = 0x0A;
    /// Validate and load the uploaded blob; answered by `OK`.
    pub const UPLOAD_END: u8 = 0x0B;
    /// Read a piece of the current model's blob; answered by `DOWNLOAD_DATA`.
    pub const DOWNLOAD: u8 = 0x0C;
    /// A fragment of one training sample; answered by `FRAG_ACK`, or by `TRAIN_ACK` once the
    /// sample is complete (or was applied before).
    pub const TRAIN_FRAG: u8 = 0x0D;
    /// Error response.
    pub const ERROR: u8 = 0x7F;
    /// Response to `HELLO`.
    pub const INFO: u8 = 0x81;
    /// Response to `TRAIN`.
    pub const TRAIN_ACK: u8 = 0x82;
    /// Response to `INFER`.
    pub const PREDICTION: u8 = 0x83;
    /// Response to `STATS` (the doc calls it `STATS` too).
    pub const STATS_REPLY: u8 = 0x84;
    /// Empty success response.
    pub const OK: u8 = 0x85;
    /// Response to `DOWNLOAD`.
    pub const DOWNLOAD_DATA: u8 = 0x8C;
    /// Response to a `TRAIN_FRAG` that left its sample incomplete: the units held.
    pub const FRAG_ACK: u8 = 0x8D;

    /// The doc's name of a message type (`STATS` for both 0x04 and 0x84).
    pub const fn name(t: u8) -> Option<&'static str> {
        Some(match t {
            HELLO => "HELLO",
            TRAIN => "TRAIN",
            INFER => "INFER",
            STATS | STATS_REPLY => "STATS",
            SET_PARAMS => "SET_PARAMS",
            SAVE => "SAVE",
            RESTORE => "RESTORE",
            RESET_PRETRAINED => "RESET_PRETRAINED",
            UPLOAD_BEGIN => "UPLOAD_BEGIN",
            UPLOAD_CHUNK => "UPLOAD_CHUNK",
            UPLOAD_END => "UPLOAD_END",
            DOWNLOAD => "DOWNLOAD",
            TRAIN_FRAG => "TRAIN_FRAG",
            ERROR => "ERROR",
            INFO => "INFO",
            TRAIN_ACK => "TRAIN_ACK",
            PREDICTION => "PREDICTION",
            OK => "OK",
            DOWNLOAD_DATA => "DOWNLOAD_DATA",
            FRAG_ACK => "FRAG_ACK",
            _ => return None,
        })
    }
}

/// Why a payload does not decode as its message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a type of this direction (`ERROR(UNKNOWN_TYPE)`, detail = the type).
    UnknownType(u8),
    /// Wrong payload length for the type (`ERROR(BAD_LENGTH)`, detail = the length).
    BadLength(u16),
}

/// Anything that can be sent: its type byte and payload encoding.
pub trait Message {
    /// The message type byte.
    fn msg_type(&self) -> u8;
    /// Length of the encoded payload.
    fn payload_len(&self) -> usize;
    /// Write the payload into `out`; returns [`payload_len`](Message::payload_len) bytes.
    fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError>;
}

// ---------------------------------------------------------------------------------------------
// Little-endian cursors.

struct W<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> W<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + b.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
    fn i8s(&mut self, v: &[i8]) -> Result<(), EncodeError> {
        let end = self.pos + v.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall)?;
        for (d, &s) in dst.iter_mut().zip(v) {
            *d = s as u8;
        }
        self.pos = end;
        Ok(())
    }
    fn done(self) -> usize {
        self.pos
    }
}

/// Reader over a payload whose length has been checked; out-of-range reads give 0 (never
/// reached after the length checks, but no panic either way).
struct R<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take<const K: usize>(&mut self) -> [u8; K] {
        let mut out = [0u8; K];
        if let Some(s) = self.buf.get(self.pos..self.pos + K) {
            out.copy_from_slice(s);
        }
        self.pos += K;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn i8(&mut self) -> i8 {
        self.take::<1>()[0] as i8
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn slice(&mut self, n: usize) -> &'a [u8] {
        let s = self.buf.get(self.pos..self.pos + n).unwrap_or(&[]);
        self.pos += n;
        s
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
}

/// View `u8` bytes as `i8` features without copying.
#[allow(unsafe_code)]
pub fn as_i8(b: &[u8]) -> &[i8] {
    // SAFETY: `u8` and `i8` have the same size, alignment and validity (every bit pattern is
    // valid for both); the returned slice borrows `b` for the same lifetime and length.
    unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<i8>(), b.len()) }
}

fn expect_len(payload: &[u8], n: usize) -> Result<(), DecodeError> {
    if payload.len() == n {
        Ok(())
    } else {
        Err(DecodeError::BadLength(len16(payload.len())))
    }
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn count_u8(n: usize) -> Result<u8, EncodeError> {
    u8::try_from(n).map_err(|_| EncodeError::FieldTooLong)
}
