//! Requests: the host → co-processor messages (`docs/protocol.md` §3), their decoding from a
//! payload and their encoding.

use super::{as_i8, count_u8, expect_len, len16, DecodeError, Message, R, W};
use crate::{EncodeError, FRAG_UNIT, MAX_CHUNK, MAX_FRAG_BITMAP};

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
