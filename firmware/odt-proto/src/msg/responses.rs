//! Responses: the co-processor → host messages (`docs/protocol.md` §3), their decoding from a
//! payload and their encoding.

use super::{count_u8, expect_len, len16, DecodeError, Message, R, W};
use crate::{EncodeError, MAX_CHUNK, MAX_FRAG_BITMAP};

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
        /// `16u .. 16u + 16`); [`frag_bitmap_len`](super::frag_bitmap_len) bytes, 1 to [`MAX_FRAG_BITMAP`].
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
