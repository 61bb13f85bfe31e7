//! The co-processor application: protocol session, training, model transfer, storage.

use core::ops::Range;

use odt_core::blob::{crc32, BlobError, Limit};
use odt_core::model::MAX_PARAM_LAYERS;
use odt_core::{Error as ModelError, Model, TrainConfig, TrainMode};
use odt_proto::{
    decode_request, encode_message, frag_bitmap_len, frag_units, ErrorCode, ErrorMsg, FrameError,
    Info, PacketDecoder, Request, Response, RxError, Scores, SetParams, Stats, TrainAck,
    ACK_APPLIED, ACK_DISABLED, ACK_DUP, FRAG_UNIT, MAX_CHUNK, MAX_FRAG_BITMAP, MAX_FRAME,
    MAX_PACKET, PRED_UNKNOWN,
};

use crate::hal::{Flash, Region, Transport};
use crate::storage::{self, StorageError};
use crate::FIRMWARE_VERSION;

/// Outcomes of applied training samples remembered for duplicate acknowledgements.
pub const OUTCOME_RING: usize = 16;
/// A `TRAIN` this many sequence numbers (or fewer) before the expected one is a duplicate.
pub const DUP_WINDOW: u16 = 32768;
/// Features of the buffer that assembles a fragmented training sample (`TRAIN_FRAG`) unless
/// the [`App`] type says otherwise: the input capacity of the firmware's model (`FirmwareMlp`).
pub const DEFAULT_MAX_INPUTS: usize = odt_core::models::FirmwareMlp::MAX_INPUTS;
/// Divergence threshold of the loss EMA (0.9 in Q15).
pub const DIVERGENCE_LOSS_Q15: i32 = 29491;
/// Samples since the last model replacement before divergence is judged.
pub const DIVERGENCE_MIN_STEPS: u32 = 64;

/// Static facts about the firmware build the application reports in `INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// `major << 16 | minor << 8 | patch`.
    pub firmware_version: u32,
    /// The model type's compiled batch capacity (e.g. `FirmwareMlp::BATCH`).
    pub batch_capacity: u8,
}

impl AppConfig {
    /// This crate's firmware version and the given batch capacity.
    pub const fn new(batch_capacity: u8) -> Self {
        Self {
            firmware_version: FIRMWARE_VERSION,
            batch_capacity,
        }
    }
}

/// Where the model came from at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootSource {
    /// A save slot (0 or 1) and its generation.
    Slot {
        /// Slot index.
        slot: u8,
        /// Save generation.
        generation: u32,
    },
    /// The pretrained region.
    Pretrained,
    /// Nothing valid in flash: the model is as it was handed to [`App::new`].
    Unchanged,
}

/// What happened at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Where the model was loaded from.
    pub source: BootSource,
    /// This boot's number (from the flash record; 0 if the board has none).
    pub boot_count: u32,
}

/// Why the application cannot start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The blob buffer (`B`) is smaller than the longest blob the model can load or save.
    BufferTooSmall {
        /// The model's `max_blob_len()`.
        need: usize,
        /// `B`.
        have: usize,
    },
    /// The fragment buffer (`I`) is smaller than the longest input the model can take.
    InputBufferTooSmall {
        /// The model's `max_input_len()`.
        need: usize,
        /// `I`.
        have: usize,
    },
}

/// What the shared blob buffer currently holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlobState {
    /// Nothing of interest.
    Idle,
    /// An upload in progress (or just completed: `UPLOAD_END` may be repeated).
    Upload { total_len: u32, crc: u32 },
    /// A snapshot of the model taken by `DOWNLOAD` at offset 0.
    Snapshot { len: usize },
}

/// Outcome of an applied training sample.
#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    seq: u16,
    valid: bool,
    pred: u8,
    loss_q15: u16,
    flags: u8,
}

/// Training-stream session (after `HELLO`).
#[derive(Clone, Copy, Debug)]
struct Session {
    expected: u16,
    ring: [Outcome; OUTCOME_RING],
}

impl Session {
    fn new(expected: u16) -> Self {
        Self {
            expected,
            ring: [Outcome::default(); OUTCOME_RING],
        }
    }
    fn slot(seq: u16) -> usize {
        seq as usize % OUTCOME_RING
    }
    fn lookup(&self, seq: u16) -> Option<Outcome> {
        self.ring
            .get(Self::slot(seq))
            .copied()
            .filter(|o| o.valid && o.seq == seq)
    }
    fn store(&mut self, o: Outcome) {
        if let Some(s) = self.ring.get_mut(Self::slot(o.seq)) {
            *s = o;
        }
    }
}

/// A training sample being assembled from `TRAIN_FRAG`s (`docs/protocol.md` §2.1): only the
/// expected one, in a buffer of `I` features sized at compile time.
#[derive(Clone, Copy, Debug)]
struct Partial<const I: usize> {
    /// Whether `seq`/`label`/`total`/`held` describe a sample being assembled.
    active: bool,
    seq: u16,
    label: u8,
    total: u16,
    /// Units held: bit `u % 8` of byte `u / 8`.
    held: [u8; MAX_FRAG_BITMAP],
    features: [i8; I],
}

impl<const I: usize> Partial<I> {
    const fn new() -> Self {
        Self {
            active: false,
            seq: 0,
            label: 0,
            total: 0,
            held: [0; MAX_FRAG_BITMAP],
            features: [0; I],
        }
    }

    /// Take a fragment of sample `seq`; a different sample (or none) before starts over.
    /// Returns whether the sample is complete. The decoder checked the geometry (whole units
    /// within `total`) and the caller `total <= I`.
    fn insert(&mut self, seq: u16, label: u8, total: u16, offset: u16, data: &[i8]) -> bool {
        if !(self.active && self.seq == seq && self.label == label && self.total == total) {
            self.active = true;
            self.seq = seq;
            self.label = label;
            self.total = total;
            self.held = [0; MAX_FRAG_BITMAP];
        }
        let start = offset as usize;
        if let Some(dst) = self.features.get_mut(start..start + data.len()) {
            for (d, &x) in dst.iter_mut().zip(data) {
                *d = x;
            }
            let first = start / FRAG_UNIT;
            let end = (start + data.len()).div_ceil(FRAG_UNIT);
            for u in first..end {
                if let Some(b) = self.held.get_mut(u / 8) {
                    *b |= 1u8 << (u % 8);
                }
            }
        }
        (0..frag_units(total as usize)).all(|u| {
            self.held
                .get(u / 8)
                .is_some_and(|b| b & (1u8 << (u % 8)) != 0)
        })
    }

    /// The `FRAG_ACK` bitmap of the sample being assembled.
    fn bitmap(&self) -> &[u8] {
        self.held
            .get(..frag_bitmap_len(self.total as usize))
            .unwrap_or(&[])
    }
}

/// Response encoder and transport.
struct Tx<T> {
    transport: T,
    packet: [u8; MAX_PACKET],
    frame: [u8; MAX_FRAME],
    errors: u32,
}

impl<T: Transport> Tx<T> {
    fn send(&mut self, seq: u16, resp: &Response<'_>) {
        match encode_message(seq, resp, &mut self.packet, &mut self.frame) {
            Ok(n) => {
                if self
                    .transport
                    .write(self.frame.get(..n).unwrap_or(&[]))
                    .is_err()
                {
                    self.errors = self.errors.wrapping_add(1);
                }
            }
            // Cannot happen for the responses built here (all fit MAX_PAYLOAD).
            Err(_) => self.errors = self.errors.wrapping_add(1),
        }
    }
    fn error(&mut self, seq: u16, e: ErrorMsg) {
        self.send(seq, &Response::Error(e));
    }
}

fn err(code: ErrorCode, detail: u16) -> ErrorMsg {
    ErrorMsg::new(code, detail)
}

fn flash_err(e: StorageError) -> ErrorMsg {
    err(ErrorCode::Flash, e.detail())
}

/// `ERROR(BAD_MODEL)` detail of a loader error (`docs/protocol.md` §3.9).
pub const fn blob_error_detail(e: BlobError) -> u16 {
    match e {
        BlobError::Truncated => 1,
        BlobError::BadMagic => 2,
        BlobError::UnsupportedVersion => 3,
        BlobError::BadCrc => 4,
        BlobError::ArchMismatch { .. } => 5,
        BlobError::BadQuant { .. } => 6,
        BlobError::TrailingBytes => 7,
        BlobError::BufferTooSmall => 8,
        BlobError::UnsupportedLayer { .. } => 10,
        BlobError::OverCapacity { limit, .. } => match limit {
            Limit::Inputs => 11,
            Limit::Width => 12,
            Limit::Classes => 13,
            Limit::Depth => 14,
            Limit::Weights => 15,
        },
    }
}

/// `ERROR(BAD_MODEL)` detail of an upload whose CRC-32 differs from `UPLOAD_BEGIN`'s.
pub const UPLOAD_CRC_DETAIL: u16 = 9;

/// Everything but the receive decoder (so a decoded frame can borrow the decoder while the
/// state is mutated).
struct State<'a, T, F, const B: usize, const I: usize> {
    model: &'a mut dyn Model,
    flash: F,
    tx: Tx<T>,
    cfg: AppConfig,
    boot: BootInfo,
    blob: [u8; B],
    blob_state: BlobState,
    session: Option<Session>,
    partial: Partial<I>,
    enabled: bool,
    preq_correct: u32,
    preq_samples: u32,
    loss_ema: i32,
    diverged: bool,
    frame_errors: u32,
}

/// The co-processor application.
///
/// - `T`: the serial [`Transport`] to the host;
/// - `F`: the [`Flash`] holding the save slots, the pretrained model and the boot record;
/// - `B`: bytes of the blob buffer shared by upload, download and save/restore; at least the
///   longest blob the model can load ([`Model::max_blob_len`]: `FirmwareMlp::MAX_BLOB_LEN` for
///   the firmware's model, whose shape comes from the blob; `BLOB_LEN` of an `odt_model!` type);
/// - `I`: features of the buffer that assembles a fragmented training sample (`TRAIN_FRAG`); at
///   least the longest input the model can take ([`Model::max_input_len`]), by default
///   [`DEFAULT_MAX_INPUTS`], the firmware model's.
///
/// RAM: `B` + `I` + about 3.2 KiB (receive, packet and frame buffers) + the model (borrowed). Create
/// it once, then call [`poll`](App::poll) from the main loop (or [`feed`](App::feed) with bytes
/// taken from an interrupt-filled buffer).
pub struct App<'a, T, F, const B: usize, const I: usize = DEFAULT_MAX_INPUTS> {
    rx: PacketDecoder,
    s: State<'a, T, F, B, I>,
}

impl<'a, T: Transport, F: Flash, const B: usize, const I: usize> App<'a, T, F, B, I> {
    /// Boot: count the boot in flash, load the newest valid saved model (else the pretrained
    /// one, else keep `model` as it is), and wait for frames. No session is open until the host's
    /// `HELLO`.
    pub fn new(
        model: &'a mut dyn Model,
        transport: T,
        flash: F,
        cfg: AppConfig,
    ) -> Result<Self, InitError> {
        let need = model.max_blob_len();
        if B < need {
            return Err(InitError::BufferTooSmall { need, have: B });
        }
        let need = model.max_input_len();
        if I < need {
            return Err(InitError::InputBufferTooSmall { need, have: I });
        }
        let mut app = App {
            rx: PacketDecoder::new(),
            s: State {
                model,
                flash,
                tx: Tx {
                    transport,
                    packet: [0; MAX_PACKET],
                    frame: [0; MAX_FRAME],
                    errors: 0,
                },
                cfg,
                boot: BootInfo {
                    source: BootSource::Unchanged,
                    boot_count: 0,
                },
                blob: [0; B],
                blob_state: BlobState::Idle,
                session: None,
                partial: Partial::new(),
                enabled: true,
                preq_correct: 0,
                preq_samples: 0,
                loss_ema: 0,
                diverged: false,
                frame_errors: 0,
            },
        };
        let s = &mut app.s;
        s.boot.boot_count = storage::bump_boot_count(&mut s.flash);
        s.boot.source = match s.load_saved() {
            Ok(info) => BootSource::Slot {
                slot: (info.region == Region::Slot1) as u8,
                generation: info.generation,
            },
            Err(_) => match s.load_pretrained() {
                Ok(()) => BootSource::Pretrained,
                Err(_) => BootSource::Unchanged,
            },
        };
        Ok(app)
    }

    /// Read every byte the transport has, process every complete frame and send the responses.
    /// Returns the number of frames processed (good or bad). Never blocks (beyond the transport's
    /// writes).
    pub fn poll(&mut self) -> usize {
        let mut buf = [0u8; 64];
        let mut frames = 0;
        loop {
            match self.s.tx.transport.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => frames += self.feed(buf.get(..n).unwrap_or(&[])),
                Err(_) => {
                    // Lost bytes: the frame they belonged to fails its CRC and is answered.
                    self.s.tx.errors = self.s.tx.errors.wrapping_add(1);
                    break;
                }
            }
        }
        frames
    }

    /// Process received bytes (as [`poll`](App::poll) does with what it reads); returns the
    /// number of frames completed.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut frames = 0;
        for &b in bytes {
            if let Some(r) = self.rx.push(b) {
                frames += 1;
                self.s.on_frame(r);
            }
        }
        frames
    }

    /// Where the model came from at boot, and the boot count.
    pub fn boot_info(&self) -> BootInfo {
        self.s.boot
    }

    /// The statistics a `STATS` request would return now.
    pub fn stats(&self) -> Stats {
        self.s.stats()
    }

    /// The training sequence number expected next (`None` before `HELLO`).
    pub fn expected_train_seq(&self) -> Option<u16> {
        self.s.session.map(|s| s.expected)
    }

    /// Transport read/write errors so far.
    pub fn transport_errors(&self) -> u32 {
        self.s.tx.errors
    }

    /// The model.
    pub fn model(&self) -> &dyn Model {
        &*self.s.model
    }

    /// The transport (e.g. to move bytes into it from an interrupt buffer).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.s.tx.transport
    }

    /// The flash.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.s.flash
    }

    /// Stop: give back the transport and the flash (e.g. to simulate a reset with the same
    /// devices).
    pub fn into_parts(self) -> (T, F) {
        (self.s.tx.transport, self.s.flash)
    }
}

impl<T: Transport, F: Flash, const B: usize, const I: usize> State<'_, T, F, B, I> {
    fn stats(&self) -> Stats {
        let c = self.model.counters();
        Stats {
            train_steps: c.steps,
            updates: c.updates,
            preq_correct: self.preq_correct,
            preq_samples: self.preq_samples,
            loss_ema_q15: self.loss_ema.max(0) as u32,
            forward_saturations: c.forward_saturations,
            update_clips: c.update_clips,
            weight_saturations: c.weight_saturations,
            zero_grad_steps: c.zero_grad_steps,
            frame_errors: self.frame_errors,
            training_enabled: self.enabled as u8,
            diverged: self.diverged as u8,
        }
    }

    fn info(&self) -> Info {
        Info {
            protocol_version: odt_proto::VERSION as u16,
            firmware_version: self.cfg.firmware_version,
            model_id: self.model.meta().model_id,
            model_hash: self.model.state_crc32(),
            input_len: u16::try_from(self.model.input_len()).unwrap_or(u16::MAX),
            classes: u8::try_from(self.model.classes()).unwrap_or(u8::MAX),
            batch_capacity: self.cfg.batch_capacity,
            model_ram: u32::try_from(self.model.ram_bytes()).unwrap_or(u32::MAX),
            train_steps: self.model.counters().steps,
            boot_count: self.boot.boot_count,
            next_train_seq: self.session.map_or(0, |s| s.expected),
        }
    }

    fn on_frame(&mut self, r: Result<&[u8], FrameError>) {
        match r.map_err(RxError::Frame).and_then(decode_request) {
            Ok((seq, req)) => self.handle(seq, req),
            Err(e) => {
                self.frame_errors = self.frame_errors.wrapping_add(1);
                self.tx.error(e.seq(), e.to_error());
            }
        }
    }

    fn handle(&mut self, seq: u16, req: Request<'_>) {
        let result: Result<(), ErrorMsg> = match req {
            Request::Hello { next_train_seq } => {
                self.hello(next_train_seq);
                let info = self.info();
                self.tx.send(seq, &Response::Info(info));
                return;
            }
            Request::Train { label, features } => self.train(seq, label, features).map(|ack| {
                self.tx.send(seq, &Response::TrainAck(ack));
            }),
            Request::TrainFrag {
                label,
                total,
                offset,
                data,
            } => self
                .train_frag(seq, label, total, offset, data)
                .map(|done| match done {
                    Some(ack) => self.tx.send(seq, &Response::TrainAck(ack)),
                    None => {
                        let held = self.partial.bitmap();
                        self.tx.send(seq, &Response::FragAck { offset, held });
                    }
                }),
            Request::Infer { features } => self.infer(features).map(|class| {
                let scores_q15 = Scores::Q15(self.model.scores_q15());
                self.tx
                    .send(seq, &Response::Prediction { class, scores_q15 });
            }),
            Request::Stats => {
                let st = self.stats();
                self.tx.send(seq, &Response::Stats(st));
                return;
            }
            Request::SetParams(p) => self
                .set_params(&p)
                .map(|()| self.tx.send(seq, &Response::Ok)),
            Request::Save => self.save().map(|()| self.tx.send(seq, &Response::Ok)),
            Request::Restore => self.restore().map(|()| self.tx.send(seq, &Response::Ok)),
            Request::ResetPretrained => self
                .reset_pretrained()
                .map(|()| self.tx.send(seq, &Response::Ok)),
            Request::UploadBegin { total_len, crc32 } => self
                .upload_begin(total_len, crc32)
                .map(|()| self.tx.send(seq, &Response::Ok)),
            Request::UploadChunk { offset, data } => self
                .upload_chunk(offset, data)
                .map(|()| self.tx.send(seq, &Response::Ok)),
            Request::UploadEnd => self.upload_end().map(|()| self.tx.send(seq, &Response::Ok)),
            Request::Download { offset, max_len } => {
                self.download(offset, max_len).map(|(total_len, range)| {
                    let data = self.blob.get(range).unwrap_or(&[]);
                    self.tx.send(
                        seq,
                        &Response::DownloadData {
                            total_len,
                            offset,
                            data,
                        },
                    );
                })
            }
        };
        if let Err(e) = result {
            self.tx.error(seq, e);
        }
    }

    // -- session and training ------------------------------------------------------------------

    fn hello(&mut self, next: u16) {
        // Any HELLO discards a partly assembled sample (the host resends its fragments).
        self.partial.active = false;
        if let Some(s) = &self.session {
            let behind = s.expected.wrapping_sub(next);
            // Resuming: the host's next sample was already applied (its ack was lost) and is
            // remembered. Keep counting so the resent samples are acknowledged as duplicates.
            if behind == 0 || (behind as usize <= OUTCOME_RING && s.lookup(next).is_some()) {
                return;
            }
        }
        self.session = Some(Session::new(next));
    }

    fn train(&mut self, seq: u16, label: u8, features: &[i8]) -> Result<TrainAck, ErrorMsg> {
        if features.len() != self.model.input_len() {
            self.frame_errors = self.frame_errors.wrapping_add(1);
            let len = u16::try_from(features.len() + 1).unwrap_or(u16::MAX);
            return Err(err(ErrorCode::BadLength, len));
        }
        if let Some(dup) = self.train_gate(seq)? {
            return Ok(dup);
        }
        self.apply_expected(seq, label, features)
    }

    /// A `TRAIN_FRAG` (§2.1): `Some(ack)` once its sample is applied (or was before: a
    /// duplicate), `None` while it is incomplete (answered `FRAG_ACK`).
    fn train_frag(
        &mut self,
        seq: u16,
        label: u8,
        total: u16,
        offset: u16,
        data: &[i8],
    ) -> Result<Option<TrainAck>, ErrorMsg> {
        let n = total as usize;
        if n != self.model.input_len() || n > I {
            self.frame_errors = self.frame_errors.wrapping_add(1);
            let len = u16::try_from(data.len() + 5).unwrap_or(u16::MAX);
            return Err(err(ErrorCode::BadLength, len));
        }
        if let Some(dup) = self.train_gate(seq)? {
            return Ok(Some(dup));
        }
        if label as usize >= self.model.classes() {
            // Refused at its first fragment, like a TRAIN: consumes the number.
            return self.apply_expected(seq, label, &[]).map(Some);
        }
        if !self.partial.insert(seq, label, total, offset, data) {
            return Ok(None);
        }
        let features = self.partial.features;
        self.apply_expected(seq, label, features.get(..n).unwrap_or(&[]))
            .map(Some)
    }

    /// Session and sequence checks of a training sample `seq` (§2): `Some(ack)` for a
    /// duplicate (acknowledged again, not applied), `None` for the expected sample.
    fn train_gate(&self, seq: u16) -> Result<Option<TrainAck>, ErrorMsg> {
        let Some(sess) = self.session.as_ref() else {
            return Err(err(ErrorCode::NoSession, 0));
        };
        let behind = sess.expected.wrapping_sub(seq);
        if behind == 0 {
            return Ok(None);
        }
        if behind <= DUP_WINDOW {
            let ack = match sess.lookup(seq) {
                Some(o) => TrainAck {
                    pred: o.pred,
                    loss_q15: o.loss_q15,
                    flags: o.flags | ACK_DUP,
                },
                None => TrainAck {
                    pred: PRED_UNKNOWN,
                    loss_q15: 0,
                    flags: ACK_DUP,
                },
            };
            return Ok(Some(ack));
        }
        Err(err(ErrorCode::OutOfOrder, sess.expected))
    }

    /// Apply the expected sample `seq` (its session and sequence checked by
    /// [`train_gate`](Self::train_gate)); a label that is not a class is refused before the
    /// features are looked at.
    fn apply_expected(
        &mut self,
        seq: u16,
        label: u8,
        features: &[i8],
    ) -> Result<TrainAck, ErrorMsg> {
        let Some(sess) = self.session.as_mut() else {
            return Err(err(ErrorCode::NoSession, 0));
        };
        // The expected sample: consumed whatever happens next, so the stream moves on (and a
        // partly assembled sample, this one or an older, is done with).
        sess.expected = sess.expected.wrapping_add(1);
        self.partial.active = false;
        let rejected = Outcome {
            seq,
            valid: true,
            pred: PRED_UNKNOWN,
            loss_q15: 0,
            flags: 0,
        };
        if label as usize >= self.model.classes() {
            sess.store(rejected);
            return Err(err(ErrorCode::BadLabel, label as u16));
        }
        let step = if self.enabled {
            self.model.train_step(features, label).map(|o| {
                let flags = if o.applied { ACK_APPLIED } else { 0 };
                (o.loss.pred, o.loss.loss_q15, flags)
            })
        } else {
            self.model.infer(features).map(|p| {
                let p_label = self
                    .model
                    .scores_q15()
                    .get(label as usize)
                    .copied()
                    .unwrap_or(0);
                (p.class, 32768 - p_label, ACK_DISABLED)
            })
        };
        match step {
            Ok((pred, loss, flags)) => {
                let loss_q15 = loss.clamp(0, u16::MAX as i32) as u16;
                sess.store(Outcome {
                    seq,
                    valid: true,
                    pred,
                    loss_q15,
                    flags,
                });
                self.record(label, pred, loss_q15);
                Ok(TrainAck {
                    pred,
                    loss_q15,
                    flags,
                })
            }
            Err(e) => {
                sess.store(rejected);
                Err(model_err(e, label))
            }
        }
    }

    fn record(&mut self, label: u8, pred: u8, loss_q15: u16) {
        let loss = loss_q15 as i32;
        self.loss_ema = if self.preq_samples == 0 {
            loss
        } else {
            self.loss_ema + (loss - self.loss_ema) / 16
        };
        self.preq_samples = self.preq_samples.wrapping_add(1);
        if pred == label {
            self.preq_correct = self.preq_correct.wrapping_add(1);
        }
        if self.preq_samples >= DIVERGENCE_MIN_STEPS && self.loss_ema > DIVERGENCE_LOSS_Q15 {
            self.diverged = true;
        }
    }

    /// A new model is in place: prequential figures start over.
    fn model_replaced(&mut self) {
        self.partial.active = false;
        self.preq_correct = 0;
        self.preq_samples = 0;
        self.loss_ema = 0;
        self.diverged = false;
    }

    fn infer(&mut self, features: &[i8]) -> Result<u8, ErrorMsg> {
        if features.len() != self.model.input_len() {
            self.frame_errors = self.frame_errors.wrapping_add(1);
            let len = u16::try_from(features.len()).unwrap_or(u16::MAX);
            return Err(err(ErrorCode::BadLength, len));
        }
        self.model
            .infer(features)
            .map(|p| p.class)
            .map_err(|e| model_err(e, 0))
    }

    fn set_params(&mut self, p: &SetParams<'_>) -> Result<(), ErrorMsg> {
        let bad = err(ErrorCode::BadParams, 0);
        if p.enabled > 1 || p.modes.len() > MAX_PARAM_LAYERS {
            return Err(bad);
        }
        let mut modes = [TrainMode::Frozen; MAX_PARAM_LAYERS];
        for (m, &v) in modes.iter_mut().zip(p.modes) {
            *m = match v {
                0 => TrainMode::Frozen,
                1 => TrainMode::BiasOnly,
                2 => TrainMode::All,
                _ => return Err(bad),
            };
        }
        let cfg = TrainConfig {
            lr_m: p.lr_m as i32,
            lr_e: p.lr_e,
            modes,
            batch: p.batch as u16,
            topk_min: (p.topk_min != 0xFF).then_some(p.topk_min as u16),
            seed: p.seed,
        };
        // The model validates the rest (learning rate, batch against its capacity) and changes
        // nothing on error.
        self.model.set_train_config(&cfg).map_err(|_| bad)?;
        self.enabled = p.enabled == 1;
        Ok(())
    }

    // -- storage -------------------------------------------------------------------------------

    fn save(&mut self) -> Result<(), ErrorMsg> {
        self.blob_state = BlobState::Idle;
        let n = self
            .model
            .save_blob(&mut self.blob)
            .map_err(|e| err(ErrorCode::BadModel, blob_error_detail(e)))?;
        let blob = self.blob.get(..n).unwrap_or(&[]);
        storage::save(&mut self.flash, blob).map_err(flash_err)?;
        Ok(())
    }

    /// Load the newest valid slot whose blob the model accepts.
    fn load_saved(&mut self) -> Result<storage::SlotInfo, ErrorMsg> {
        self.blob_state = BlobState::Idle;
        let slots = storage::valid_slots(&mut self.flash).map_err(flash_err)?;
        let mut last = flash_err(StorageError::NothingSaved);
        for info in slots.into_iter().flatten() {
            match storage::read_slot(&mut self.flash, &info, &mut self.blob) {
                Ok(blob) => match self.model.load_blob(blob) {
                    Ok(()) => {
                        self.model_replaced();
                        return Ok(info);
                    }
                    Err(e) => last = err(ErrorCode::BadModel, blob_error_detail(e)),
                },
                Err(e) => last = flash_err(e),
            }
        }
        Err(last)
    }

    fn restore(&mut self) -> Result<(), ErrorMsg> {
        self.load_saved().map(|_| ())
    }

    fn load_pretrained(&mut self) -> Result<(), ErrorMsg> {
        self.blob_state = BlobState::Idle;
        let blob = storage::read_pretrained(&mut self.flash, &mut self.blob).map_err(flash_err)?;
        self.model
            .load_blob(blob)
            .map_err(|e| err(ErrorCode::BadModel, blob_error_detail(e)))?;
        self.model_replaced();
        Ok(())
    }

    fn reset_pretrained(&mut self) -> Result<(), ErrorMsg> {
        self.load_pretrained()
    }

    // -- model transfer ------------------------------------------------------------------------

    fn upload_begin(&mut self, total_len: u32, crc: u32) -> Result<(), ErrorMsg> {
        if total_len as usize > B {
            return Err(err(
                ErrorCode::TooLarge,
                u16::try_from(B).unwrap_or(u16::MAX),
            ));
        }
        self.blob_state = BlobState::Upload { total_len, crc };
        Ok(())
    }

    fn upload_chunk(&mut self, offset: u32, data: &[u8]) -> Result<(), ErrorMsg> {
        let bad = err(ErrorCode::BadParams, 0);
        let BlobState::Upload { total_len, .. } = self.blob_state else {
            return Err(bad);
        };
        let start = offset as usize;
        let end = start.checked_add(data.len()).ok_or(bad)?;
        if end > total_len as usize {
            return Err(bad);
        }
        self.blob
            .get_mut(start..end)
            .ok_or(bad)?
            .copy_from_slice(data);
        Ok(())
    }

    fn upload_end(&mut self) -> Result<(), ErrorMsg> {
        let BlobState::Upload { total_len, crc } = self.blob_state else {
            return Err(err(ErrorCode::BadParams, 0));
        };
        let blob = self.blob.get(..total_len as usize).unwrap_or(&[]);
        if crc32(blob) != crc {
            return Err(err(ErrorCode::BadModel, UPLOAD_CRC_DETAIL));
        }
        self.model
            .load_blob(blob)
            .map_err(|e| err(ErrorCode::BadModel, blob_error_detail(e)))?;
        self.model_replaced();
        Ok(())
    }

    fn download(&mut self, offset: u32, max_len: u16) -> Result<(u32, Range<usize>), ErrorMsg> {
        let len = match self.blob_state {
            BlobState::Snapshot { len } if offset != 0 => len,
            _ => {
                self.blob_state = BlobState::Idle;
                let n = self
                    .model
                    .save_blob(&mut self.blob)
                    .map_err(|e| err(ErrorCode::BadModel, blob_error_detail(e)))?;
                self.blob_state = BlobState::Snapshot { len: n };
                n
            }
        };
        let start = offset as usize;
        if start > len {
            return Err(err(ErrorCode::BadParams, 0));
        }
        let end = len.min(start + (max_len as usize).min(MAX_CHUNK));
        Ok((len as u32, start..end))
    }
}

fn model_err(e: ModelError, label: u8) -> ErrorMsg {
    match e {
        ModelError::BadLabel => err(ErrorCode::BadLabel, label as u16),
        ModelError::InputLen { got, .. } => err(ErrorCode::BadLength, got),
        ModelError::BadConfig => err(ErrorCode::BadParams, 0),
        // No weights at all: nothing valid in flash and none uploaded yet.
        ModelError::NotLoaded => err(ErrorCode::BadModel, 0),
    }
}
