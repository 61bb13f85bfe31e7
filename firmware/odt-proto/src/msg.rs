//! Typed messages (`docs/protocol.md` §3): requests from the host, responses from the
//! co-processor, their payload encodings and decodings. Decoded messages borrow from the packet
//! buffer (no copies, no heap); encoders write into caller-provided buffers.

use crate::{EncodeError, FRAG_UNIT, MAX_CHUNK, MAX_FRAG_BITMAP};

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

// ---------------------------------------------------------------------------------------------
// Requests.

/// `SET_PARAMS` payload (§3.5). Values are kept as sent; the application validates them
/// (`ERROR(BAD_PARAMS)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetParams<'a> {
    /// Training on (1) or off (0).
    pub enabled: u8,
    /// Learning-rate mantissa, `[2^14, 2^15)`.
    pub lr_m: u16,
    /// Learning-rate exponent.
    pub lr_e: i8,
    /// Samples per update.
    pub batch: u8,
    /// Minimum rows per layer of partial updates, `0xFF` = off.
    pub topk_min: u8,
    /// Per parameter layer (forward order): 0 frozen, 1 bias only, 2 all. `n_modes` on the wire
    /// is its length.
    pub modes: &'a [u8],
    /// Stochastic-rounding seed.
    pub seed: u32,
}

/// A host → co-processor message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `HELLO`: start or resume a session.
    Hello {
        /// The host's next training sequence number.
        next_train_seq: u16,
    },
    /// `TRAIN`: one labelled sample.
    Train {
        /// Class label.
        label: u8,
        /// Input features (the model's input length; checked by the application).
        features: &'a [i8],
    },
    /// `INFER`: classify one input.
    Infer {
        /// Input features.
        features: &'a [i8],
    },
    /// `STATS`.
    Stats,
    /// `SET_PARAMS`.
    SetParams(SetParams<'a>),
    /// `SAVE`.
    Save,
    /// `RESTORE`.
    Restore,
    /// `RESET_PRETRAINED`.
    ResetPretrained,
    /// `UPLOAD_BEGIN`.
    UploadBegin {
        /// Blob length in bytes.
        total_len: u32,
        /// CRC-32 of the whole blob.
        crc32: u32,
    },
    /// `UPLOAD_CHUNK`.
    UploadChunk {
        /// Byte offset in the blob.
        offset: u32,
        /// At most [`MAX_CHUNK`] bytes.
        data: &'a [u8],
    },
    /// `UPLOAD_END`.
    UploadEnd,
    /// `DOWNLOAD`.
    Download {
        /// Byte offset in the blob.
        offset: u32,
        /// Most bytes wanted (at most [`MAX_CHUNK`]).
        max_len: u16,
    },
    /// `TRAIN_FRAG`: a piece of one labelled sample (`docs/protocol.md` §2.1). The decoder
    /// checks the fragment's geometry against `total` ([`frag_geometry_ok`]); the application
    /// checks `total` against the model's input length.
    TrainFrag {
        /// Class label of the whole sample.
        label: u8,
        /// Features of the whole sample (the model's input length).
        total: u16,
        /// Offset of `data` in the sample, a multiple of [`FRAG_UNIT`].
        offset: u16,
        /// Whole units of the sample (the last unit may be short), at least one byte.
        data: &'a [i8],
    },
}

/// Units of [`FRAG_UNIT`] features of a sample of `total` features (the last may be short).
pub const fn frag_units(total: usize) -> usize {
    total.div_ceil(FRAG_UNIT)
}

/// Bytes of a `FRAG_ACK` bitmap for a sample of `total` features (at least 1).
pub const fn frag_bitmap_len(total: usize) -> usize {
    let n = frag_units(total).div_ceil(8);
    if n == 0 {
        1
    } else {
        n
    }
}

/// Whether a fragment of `len` features at `offset` covers whole units of a sample of `total`
/// features: `offset` a multiple of [`FRAG_UNIT`], `1 ≤ len`, `offset + len ≤ total`, `len` a
/// multiple of the unit unless the fragment ends the sample, and a bitmap of at most
/// [`MAX_FRAG_BITMAP`] bytes.
pub const fn frag_geometry_ok(total: usize, offset: usize, len: usize) -> bool {
    let end = offset + len;
    len >= 1
        && offset.is_multiple_of(FRAG_UNIT)
        && end <= total
        && (len.is_multiple_of(FRAG_UNIT) || end == total)
        && frag_bitmap_len(total) <= MAX_FRAG_BITMAP
}

impl<'a> Request<'a> {
    /// Decode the payload of a request of type `msg_type`.
    pub fn decode(msg_type: u8, payload: &'a [u8]) -> Result<Self, DecodeError> {
        use crate::msg::msg_type as t;
        let mut r = R::new(payload);
        let bad = || DecodeError::BadLength(len16(payload.len()));
        Ok(match msg_type {
            t::HELLO => {
                expect_len(payload, 2)?;
                Request::Hello {
                    next_train_seq: r.u16(),
                }
            }
            t::TRAIN => {
                let (&label, features) = payload.split_first().ok_or_else(bad)?;
                Request::Train {
                    label,
                    features: as_i8(features),
                }
            }
            t::INFER => Request::Infer {
                features: as_i8(payload),
            },
            t::STATS | t::SAVE | t::RESTORE | t::RESET_PRETRAINED | t::UPLOAD_END => {
                expect_len(payload, 0)?;
                match msg_type {
                    t::STATS => Request::Stats,
                    t::SAVE => Request::Save,
                    t::RESTORE => Request::Restore,
                    t::RESET_PRETRAINED => Request::ResetPretrained,
                    _ => Request::UploadEnd,
                }
            }
            t::SET_PARAMS => {
                let n_modes = *payload.get(6).ok_or_else(bad)? as usize;
                expect_len(payload, 11 + n_modes)?;
                let enabled = r.u8();
                let lr_m = r.u16();
                let lr_e = r.i8();
                let batch = r.u8();
                let topk_min = r.u8();
                let _n = r.u8();
                let modes = r.slice(n_modes);
                let seed = r.u32();
                Request::SetParams(SetParams {
                    enabled,
                    lr_m,
                    lr_e,
                    batch,
                    topk_min,
                    modes,
                    seed,
                })
            }
            t::UPLOAD_BEGIN => {
                expect_len(payload, 8)?;
                Request::UploadBegin {
                    total_len: r.u32(),
                    crc32: r.u32(),
                }
            }
            t::UPLOAD_CHUNK => {
                if payload.len() < 4 || payload.len() > 4 + MAX_CHUNK {
                    return Err(bad());
                }
                Request::UploadChunk {
                    offset: r.u32(),
                    data: r.rest(),
                }
            }
            t::DOWNLOAD => {
                expect_len(payload, 6)?;
                Request::Download {
                    offset: r.u32(),
                    max_len: r.u16(),
                }
            }
            t::TRAIN_FRAG => {
                if payload.len() < 6 {
                    return Err(bad());
                }
                let label = r.u8();
                let total = r.u16();
                let offset = r.u16();
                let data = as_i8(r.rest());
                if !frag_geometry_ok(total as usize, offset as usize, data.len()) {
                    return Err(bad());
                }
                Request::TrainFrag {
                    label,
                    total,
                    offset,
                    data,
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

impl Message for Request<'_> {
    fn msg_type(&self) -> u8 {
        use crate::msg::msg_type as t;
        match self {
            Request::Hello { .. } => t::HELLO,
            Request::Train { .. } => t::TRAIN,
            Request::Infer { .. } => t::INFER,
            Request::Stats => t::STATS,
            Request::SetParams(_) => t::SET_PARAMS,
            Request::Save => t::SAVE,
            Request::Restore => t::RESTORE,
            Request::ResetPretrained => t::RESET_PRETRAINED,
            Request::UploadBegin { .. } => t::UPLOAD_BEGIN,
            Request::UploadChunk { .. } => t::UPLOAD_CHUNK,
            Request::UploadEnd => t::UPLOAD_END,
            Request::Download { .. } => t::DOWNLOAD,
            Request::TrainFrag { .. } => t::TRAIN_FRAG,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Request::Hello { .. } => 2,
            Request::Train { features, .. } => 1 + features.len(),
            Request::Infer { features } => features.len(),
            Request::SetParams(p) => 11 + p.modes.len(),
            Request::UploadBegin { .. } => 8,
            Request::UploadChunk { data, .. } => 4 + data.len(),
            Request::Download { .. } => 6,
            Request::TrainFrag { data, .. } => 5 + data.len(),
            Request::Stats
            | Request::Save
            | Request::Restore
            | Request::ResetPretrained
            | Request::UploadEnd => 0,
        }
    }

    fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = W::new(out);
        match *self {
            Request::Hello { next_train_seq } => w.u16(next_train_seq)?,
            Request::Train { label, features } => {
                w.u8(label)?;
                w.i8s(features)?;
            }
            Request::Infer { features } => w.i8s(features)?,
            Request::SetParams(p) => {
                w.u8(p.enabled)?;
                w.u16(p.lr_m)?;
                w.u8(p.lr_e as u8)?;
                w.u8(p.batch)?;
                w.u8(p.topk_min)?;
                w.u8(count_u8(p.modes.len())?)?;
                w.bytes(p.modes)?;
                w.u32(p.seed)?;
            }
            Request::UploadBegin { total_len, crc32 } => {
                w.u32(total_len)?;
                w.u32(crc32)?;
            }
            Request::UploadChunk { offset, data } => {
                if data.len() > MAX_CHUNK {
                    return Err(EncodeError::FieldTooLong);
                }
                w.u32(offset)?;
                w.bytes(data)?;
            }
            Request::Download { offset, max_len } => {
                w.u32(offset)?;
                w.u16(max_len)?;
            }
            Request::TrainFrag {
                label,
                total,
                offset,
                data,
            } => {
                w.u8(label)?;
                w.u16(total)?;
                w.u16(offset)?;
                w.i8s(data)?;
            }
            Request::Stats
            | Request::Save
            | Request::Restore
            | Request::ResetPretrained
            | Request::UploadEnd => {}
        }
        Ok(w.done())
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

/// `INFO` payload (§3.1), 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// Protocol version (1).
    pub protocol_version: u16,
    /// Firmware version, `major << 16 | minor << 8 | patch`.
    pub firmware_version: u32,
    /// Model id from the blob header.
    pub model_id: u32,
    /// CRC-32 of the current trainable state.
    pub model_hash: u32,
    /// Input length.
    pub input_len: u16,
    /// Number of classes.
    pub classes: u8,
    /// Compiled batch capacity.
    pub batch_capacity: u8,
    /// RAM used by the model in bytes.
    pub model_ram: u32,
    /// Training steps so far.
    pub train_steps: u32,
    /// Boot count from flash.
    pub boot_count: u32,
    /// The training sequence number the co-processor expects next.
    pub next_train_seq: u16,
}

/// `TRAIN_ACK` flag: a duplicate, not applied (again).
pub const ACK_DUP: u8 = 1;
/// `TRAIN_ACK` flag: this sample completed a batch and the weights changed.
pub const ACK_APPLIED: u8 = 2;
/// `TRAIN_ACK` flag: training is off, only the prediction was made.
pub const ACK_DISABLED: u8 = 4;
/// `pred` of a duplicate acknowledgement whose outcome is no longer remembered.
pub const PRED_UNKNOWN: u8 = 0xFF;

/// `TRAIN_ACK` payload (§3.2), 4 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainAck {
    /// Class predicted before this sample trained (prequential), or [`PRED_UNKNOWN`].
    pub pred: u8,
    /// `32768 − p(label)`, Q15.
    pub loss_q15: u16,
    /// [`ACK_DUP`] | [`ACK_APPLIED`] | [`ACK_DISABLED`].
    pub flags: u8,
}

/// `STATS` response payload (§3.4), 42 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Training steps.
    pub train_steps: u32,
    /// Updates applied.
    pub updates: u32,
    /// Prequential correct predictions since boot or the last model replacement.
    pub preq_correct: u32,
    /// Prequential samples since boot or the last model replacement.
    pub preq_samples: u32,
    /// EMA (α = 1/16) of `loss_q15`.
    pub loss_ema_q15: u32,
    /// Forward saturations.
    pub forward_saturations: u32,
    /// Update clips.
    pub update_clips: u32,
    /// Weight saturations.
    pub weight_saturations: u32,
    /// Zero-gradient steps.
    pub zero_grad_steps: u32,
    /// Frames received with errors.
    pub frame_errors: u32,
    /// Training enabled (0/1).
    pub training_enabled: u8,
    /// Divergence flag (0/1).
    pub diverged: u8,
}

/// Q15 scores of a `PREDICTION`, in whichever form they are at hand.
#[derive(Clone, Copy, Debug)]
pub enum Scores<'a> {
    /// As on the wire: little-endian `u16` pairs (a decoded message).
    Wire(&'a [u8]),
    /// Plain values.
    U16(&'a [u16]),
    /// The model's `i32` probabilities; encoded clamped to `0..=65535`.
    Q15(&'a [i32]),
}

impl Scores<'_> {
    /// Number of scores.
    pub fn len(&self) -> usize {
        match self {
            Scores::Wire(b) => b.len() / 2,
            Scores::U16(v) => v.len(),
            Scores::Q15(v) => v.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Score `i`.
    pub fn get(&self, i: usize) -> Option<u16> {
        match self {
            Scores::Wire(b) => Some(u16::from_le_bytes([*b.get(2 * i)?, *b.get(2 * i + 1)?])),
            Scores::U16(v) => v.get(i).copied(),
            Scores::Q15(v) => v.get(i).map(|&x| x.clamp(0, u16::MAX as i32) as u16),
        }
    }
    /// The scores in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

impl PartialEq for Scores<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Scores<'_> {}

/// `ERROR` codes (§3.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: a frame that is not a packet (detail: [`FrameError::detail`](crate::FrameError::detail)).
    BadFrame,
    /// 2: another protocol version (detail: the version).
    BadVersion,
    /// 3: unknown message type (detail: the type).
    UnknownType,
    /// 4: wrong payload length (detail: the length).
    BadLength,
    /// 5: `TRAIN` before `HELLO`.
    NoSession,
    /// 6: a `TRAIN` past the expected sequence number (detail: the expected number).
    OutOfOrder,
    /// 7: a parameter out of range.
    BadParams,
    /// 8: a blob rejected (detail: the loader's error code).
    BadModel,
    /// 9: an upload longer than the blob buffer (detail: the maximum).
    TooLarge,
    /// 10: flash storage failed.
    Flash,
    /// 11: a label that is not a class (detail: the label).
    BadLabel,
    /// A code this crate does not know.
    Unknown(u8),
}

impl ErrorCode {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            ErrorCode::BadFrame => 1,
            ErrorCode::BadVersion => 2,
            ErrorCode::UnknownType => 3,
            ErrorCode::BadLength => 4,
            ErrorCode::NoSession => 5,
            ErrorCode::OutOfOrder => 6,
            ErrorCode::BadParams => 7,
            ErrorCode::BadModel => 8,
            ErrorCode::TooLarge => 9,
            ErrorCode::Flash => 10,
            ErrorCode::BadLabel => 11,
            ErrorCode::Unknown(c) => c,
        }
    }
    /// From the wire value (total).
    pub const fn from_u8(c: u8) -> Self {
        match c {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::BadVersion,
            3 => ErrorCode::UnknownType,
            4 => ErrorCode::BadLength,
            5 => ErrorCode::NoSession,
            6 => ErrorCode::OutOfOrder,
            7 => ErrorCode::BadParams,
            8 => ErrorCode::BadModel,
            9 => ErrorCode::TooLarge,
            10 => ErrorCode::Flash,
            11 => ErrorCode::BadLabel,
            c => ErrorCode::Unknown(c),
        }
    }
    /// The doc's name (`BAD_FRAME`, …; `UNKNOWN` for unknown codes).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::BadVersion => "BAD_VERSION",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::BadLength => "BAD_LENGTH",
            ErrorCode::NoSession => "NO_SESSION",
            ErrorCode::OutOfOrder => "OUT_OF_ORDER",
            ErrorCode::BadParams => "BAD_PARAMS",
            ErrorCode::BadModel => "BAD_MODEL",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Flash => "FLASH",
            ErrorCode::BadLabel => "BAD_LABEL",
            ErrorCode::Unknown(_) => "UNKNOWN",
        }
    }
}

/// `ERROR` payload (§3.9), 3 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// What went wrong.
    pub code: ErrorCode,
    /// Code-specific detail.
    pub detail: u16,
}

impl ErrorMsg {
    /// An error with a detail.
    pub const fn new(code: ErrorCode, detail: u16) -> Self {
        Self { code, detail }
    }
}

/// A co-processor → host message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// `INFO`.
    Info(Info),
    /// `TRAIN_ACK`.
    TrainAck(TrainAck),
    /// `PREDICTION`.
    Prediction {
        /// Predicted class.
        class: u8,
        /// Softmax probabilities, Q15 (`n` on the wire is their count).
        scores_q15: Scores<'a>,
    },
    /// `STATS` (0x84).
    Stats(Stats),
    /// `OK`.
    Ok,
    /// `DOWNLOAD_DATA`.
    DownloadData {
        /// Length of the whole blob.
        total_len: u32,
        /// Offset of `data` in the blob.
        offset: u32,
        /// At most [`MAX_CHUNK`] bytes.
        data: &'a [u8],
    },
    /// `FRAG_ACK`: a `TRAIN_FRAG` was taken, its sample is still incomplete.
    FragAck {
        /// `offset` of the `TRAIN_FRAG` answered.
        offset: u16,
        /// Units of the sample held now: bit `u % 8` of byte `u / 8` is unit `u` (features
        /// `16u .. 16u + 16`); [`frag_bitmap_len`] bytes, 1 to [`MAX_FRAG_BITMAP`].
        held: &'a [u8],
    },
    /// `ERROR`.
    Error(ErrorMsg),
}

impl<'a> Response<'a> {
    /// Decode the payload of a response of type `msg_type`.
    pub fn decode(msg_type: u8, payload: &'a [u8]) -> Result<Self, DecodeError> {
        use crate::msg::msg_type as t;
        let mut r = R::new(payload);
        let bad = || DecodeError::BadLength(len16(payload.len()));
        Ok(match msg_type {
            t::INFO => {
                expect_len(payload, 32)?;
                Response::Info(Info {
                    protocol_version: r.u16(),
                    firmware_version: r.u32(),
                    model_id: r.u32(),
                    model_hash: r.u32(),
                    input_len: r.u16(),
                    classes: r.u8(),
                    batch_capacity: r.u8(),
                    model_ram: r.u32(),
                    train_steps: r.u32(),
                    boot_count: r.u32(),
                    next_train_seq: r.u16(),
                })
            }
            t::TRAIN_ACK => {
                expect_len(payload, 4)?;
                Response::TrainAck(TrainAck {
                    pred: r.u8(),
                    loss_q15: r.u16(),
                    flags: r.u8(),
                })
            }
            t::PREDICTION => {
                let n = *payload.get(1).ok_or_else(bad)? as usize;
                expect_len(payload, 2 + 2 * n)?;
                let class = r.u8();
                let _n = r.u8();
                Response::Prediction {
                    class,
                    scores_q15: Scores::Wire(r.rest()),
                }
            }
            t::STATS_REPLY => {
                expect_len(payload, 42)?;
                Response::Stats(Stats {
                    train_steps: r.u32(),
                    updates: r.u32(),
                    preq_correct: r.u32(),
                    preq_samples: r.u32(),
                    loss_ema_q15: r.u32(),
                    forward_saturations: r.u32(),
                    update_clips: r.u32(),
                    weight_saturations: r.u32(),
                    zero_grad_steps: r.u32(),
                    frame_errors: r.u32(),
                    training_enabled: r.u8(),
                    diverged: r.u8(),
                })
            }
            t::OK => {
                expect_len(payload, 0)?;
                Response::Ok
            }
            t::DOWNLOAD_DATA => {
                if payload.len() < 8 || payload.len() > 8 + MAX_CHUNK {
                    return Err(bad());
                }
                Response::DownloadData {
                    total_len: r.u32(),
                    offset: r.u32(),
                    data: r.rest(),
                }
            }
            t::FRAG_ACK => {
                if payload.len() < 3 || payload.len() > 2 + MAX_FRAG_BITMAP {
                    return Err(bad());
                }
                Response::FragAck {
                    offset: r.u16(),
                    held: r.rest(),
                }
            }
            t::ERROR => {
                expect_len(payload, 3)?;
                Response::Error(ErrorMsg {
                    code: ErrorCode::from_u8(r.u8()),
                    detail: r.u16(),
                })
            }
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

impl Message for Response<'_> {
    fn msg_type(&self) -> u8 {
        use crate::msg::msg_type as t;
        match self {
            Response::Info(_) => t::INFO,
            Response::TrainAck(_) => t::TRAIN_ACK,
            Response::Prediction { .. } => t::PREDICTION,
            Response::Stats(_) => t::STATS_REPLY,
            Response::Ok => t::OK,
            Response::DownloadData { .. } => t::DOWNLOAD_DATA,
            Response::FragAck { .. } => t::FRAG_ACK,
            Response::Error(_) => t::ERROR,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Response::Info(_) => 32,
            Response::TrainAck(_) => 4,
            Response::Prediction { scores_q15, .. } => 2 + 2 * scores_q15.len(),
            Response::Stats(_) => 42,
            Response::Ok => 0,
            Response::DownloadData { data, .. } => 8 + data.len(),
            Response::FragAck { held, .. } => 2 + held.len(),
            Response::Error(_) => 3,
        }
    }

    fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = W::new(out);
        match *self {
            Response::Info(i) => {
                w.u16(i.protocol_version)?;
                w.u32(i.firmware_version)?;
                w.u32(i.model_id)?;
                w.u32(i.model_hash)?;
                w.u16(i.input_len)?;
                w.u8(i.classes)?;
                w.u8(i.batch_capacity)?;
                w.u32(i.model_ram)?;
                w.u32(i.train_steps)?;
                w.u32(i.boot_count)?;
                w.u16(i.next_train_seq)?;
            }
            Response::TrainAck(a) => {
                w.u8(a.pred)?;
                w.u16(a.loss_q15)?;
                w.u8(a.flags)?;
            }
            Response::Prediction { class, scores_q15 } => {
                w.u8(class)?;
                w.u8(count_u8(scores_q15.len())?)?;
                for s in scores_q15.iter() {
                    w.u16(s)?;
                }
            }
            Response::Stats(s) => {
                for v in [
                    s.train_steps,
                    s.updates,
                    s.preq_correct,
                    s.preq_samples,
                    s.loss_ema_q15,
                    s.forward_saturations,
                    s.update_clips,
                    s.weight_saturations,
                    s.zero_grad_steps,
                    s.frame_errors,
                ] {
                    w.u32(v)?;
                }
                w.u8(s.training_enabled)?;
                w.u8(s.diverged)?;
            }
            Response::Ok => {}
            Response::DownloadData {
                total_len,
                offset,
                data,
            } => {
                if data.len() > MAX_CHUNK {
                    return Err(EncodeError::FieldTooLong);
                }
                w.u32(total_len)?;
                w.u32(offset)?;
                w.bytes(data)?;
            }
            Response::FragAck { offset, held } => {
                if held.is_empty() || held.len() > MAX_FRAG_BITMAP {
                    return Err(EncodeError::FieldTooLong);
                }
                w.u16(offset)?;
                w.bytes(held)?;
            }
            Response::Error(e) => {
                w.u8(e.code.to_u8())?;
                w.u16(e.detail)?;
            }
        }
        Ok(w.done())
    }
}
