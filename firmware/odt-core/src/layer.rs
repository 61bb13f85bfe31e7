//! The layer interface, weight storage modes and per-channel quantization parameters.

use crate::blob::{BlobError, Reader, Writer};
use crate::fixed::{Lcg, Multiplier};

/// Layer kinds as numbered in `firmware/FORMAT.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Fully connected.
    Dense = 1,
    /// 1-D convolution, channels last.
    Conv1d = 2,
    /// 2-D convolution, HWC.
    Conv2d = 3,
    /// Max pooling, window = stride.
    MaxPool2d = 4,
    /// Average pooling, window = stride.
    AvgPool2d = 5,
    /// Stand-alone ReLU.
    Relu = 6,
    /// Flatten (identity on the flat buffer).
    Flatten = 7,
}

/// A layer's architecture descriptor (the 24-byte record of the blob).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDesc {
    /// Kind of layer.
    pub kind: Kind,
    /// Fused ReLU on the output.
    pub relu: bool,
    /// Dimensions in the order of FORMAT.md; unused entries are 0.
    pub dims: [u16; 10],
}

/// What a parameter layer learns (docs §5.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrainMode {
    /// Not updated (errors still flow through it to lower layers that train).
    #[default]
    Frozen,
    /// Only the biases are updated.
    BiasOnly,
    /// Weights and biases are updated.
    All,
}

/// Saturation and progress counters (docs §6). They let the caller detect divergence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requantized outputs that fell outside `[−128, 127]` before clamping.
    pub forward_saturations: u32,
    /// Clamped per-row step factors, weight changes or bias changes.
    pub update_clips: u32,
    /// Rows (output channels) in which an update clamped at least one weight.
    pub weight_saturations: u32,
    /// Layer backward passes whose error signal was all zero.
    pub zero_grad_steps: u32,
    /// Training samples processed.
    pub steps: u32,
    /// Batches applied.
    pub updates: u32,
}

/// Plain element types stored in layer buffers (lets nested arrays flatten generically).
pub trait Scalar: Copy {}
impl Scalar for i8 {}
impl Scalar for i16 {}
impl Scalar for i32 {}
impl Scalar for i64 {}
impl Scalar for u32 {}
impl Scalar for bool {}
impl Scalar for Hp {}

/// Storage of one weight: how forward reads it and how an update changes it (docs §5.2).
pub trait Weight: Scalar + 'static {
    /// Zero weight.
    const ZERO: Self;
    /// Bytes per stored weight.
    const BYTES: usize;
    /// Whether updates draw from the stochastic-rounding generator.
    const STOCHASTIC: bool;
    /// The int8 value forward uses.
    fn q(self) -> i8;
    /// Store an int8 weight loaded from a blob.
    fn from_q(q: i8) -> Self;
    /// Apply a step of `v` Q16 quantization steps (`|v| ≤ V_MAX`) in the descent direction;
    /// returns the amount cut off by saturation (0 when the result is in range), so callers can
    /// OR it into a per-row flag.
    fn step(&mut self, v: i32, rng: &mut Lcg) -> i32;
    /// Little-endian bytes of the stored value (for the state checksum).
    fn state_bytes(self, out: &mut [u8; 2]) -> usize;
    /// The weights as plain int8, when that is how they are stored (enables packed kernels).
    fn as_i8(_w: &[Self]) -> Option<&[i8]> {
        None
    }
    /// Mutable view as plain int8, when that is how they are stored.
    fn as_i8_mut(_w: &mut [Self]) -> Option<&mut [i8]> {
        None
    }
}

/// Stochastic rounding into int8 storage: 1 byte per weight.
impl Weight for i8 {
    const ZERO: Self = 0;
    const BYTES: usize = 1;
    const STOCHASTIC: bool = true;
    #[inline(always)]
    fn q(self) -> i8 {
        self
    }
    #[inline(always)]
    fn from_q(q: i8) -> Self {
        q
    }
    #[inline(always)]
    fn step(&mut self, v: i32, rng: &mut Lcg) -> i32 {
        let step = (v + rng.next16()) >> 16;
        let w = *self as i32 - step;
        let c = w.clamp(-128, 127);
        *self = c as i8;
        w - c
    }
    fn state_bytes(self, out: &mut [u8; 2]) -> usize {
        out[0] = self as u8;
        1
    }
    fn as_i8(w: &[Self]) -> Option<&[i8]> {
        Some(w)
    }
    fn as_i8_mut(w: &mut [Self]) -> Option<&mut [i8]> {
        Some(w)
    }
}

/// High-precision master weight: int16 with 8 fraction bits, 2 bytes per weight; forward uses
/// the high byte. Sub-step updates accumulate deterministically, no random numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hp(pub i16);

impl Weight for Hp {
    const ZERO: Self = Hp(0);
    const BYTES: usize = 2;
    const STOCHASTIC: bool = false;
    #[inline(always)]
    fn q(self) -> i8 {
        (self.0 >> 8) as i8
    }
    #[inline(always)]
    fn from_q(q: i8) -> Self {
        Hp(((q as i16) << 8) | 0x80)
    }
    #[inline(always)]
    fn step(&mut self, v: i32, _rng: &mut Lcg) -> i32 {
        let w = self.0 as i32 - ((v + 128) >> 8);
        let c = w.clamp(i16::MIN as i32, i16::MAX as i32);
        self.0 = c as i16;
        w - c
    }
    fn state_bytes(self, out: &mut [u8; 2]) -> usize {
        *out = self.0.to_le_bytes();
        2
    }
}

/// Per-output-channel quantization and update parameters of a parameter layer.
#[derive(Clone, Copy, Debug)]
pub struct ChannelParams<const OUT: usize> {
    /// Requant multiplier mantissas.
    pub m: [i32; OUT],
    /// Requant exponents.
    pub s: [i8; OUT],
    /// Weight-update factor mantissas `u = s_y / s_w²`.
    pub um: [i16; OUT],
    /// Weight-update factor exponents.
    pub ue: [i8; OUT],
    /// Bias-update factor mantissas `ub = s_y / (s_x s_w)²`.
    pub ubm: [i16; OUT],
    /// Bias-update factor exponents.
    pub ube: [i8; OUT],
    /// Biases, accumulator units.
    pub bias: [i32; OUT],
    /// Input zero point.
    pub z_x: i8,
    /// Output zero point.
    pub z_y: i8,
}

impl<const OUT: usize> ChannelParams<OUT> {
    /// Bytes of RAM these parameters occupy.
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// All-zero parameters (not a valid model until loaded). All-zero so that a `static`
    /// model is placed in `.bss` and costs no flash for its initial value.
    pub const fn new() -> Self {
        Self {
            m: [0; OUT],
            s: [0; OUT],
            um: [0; OUT],
            ue: [0; OUT],
            ubm: [0; OUT],
            ube: [0; OUT],
            bias: [0; OUT],
            z_x: 0,
            z_y: 0,
        }
    }

    /// Largest requant exponent (`S` of §4.1).
    pub fn max_s(&self) -> i8 {
        self.s.iter().copied().max().unwrap_or(0)
    }

    /// Read (or, with `dry`, only validate) a parameter section header and per-channel arrays.
    pub(crate) fn read(
        &mut self,
        r: &mut Reader<'_>,
        layer: u8,
        dry: bool,
    ) -> Result<(), BlobError> {
        self.read_first(OUT, r, layer, dry)
    }

    /// [`read`](Self::read) for a section of `n ≤ OUT` channels (a layer whose width comes
    /// from the blob): fills entries `0..n`, leaves the others as they are.
    pub(crate) fn read_first(
        &mut self,
        n: usize,
        r: &mut Reader<'_>,
        layer: u8,
        dry: bool,
    ) -> Result<(), BlobError> {
        let n = n.min(OUT);
        let z_x = r.i8()?;
        let z_y = r.i8()?;
        let _reserved = r.u16()?;
        if !dry {
            self.z_x = z_x;
            self.z_y = z_y;
        }
        for mc in self.m.iter_mut().take(n) {
            let m = r.i32()?;
            if m < (1 << 30) {
                return Err(BlobError::BadQuant { layer });
            }
            if !dry {
                *mc = m;
            }
        }
        for sc in self.s.iter_mut().take(n) {
            let s = r.i8()?;
            if !(Multiplier { m: 1 << 30, s }).is_valid() {
                return Err(BlobError::BadQuant { layer });
            }
            if !dry {
                *sc = s;
            }
        }
        read_i8s(r, self.ue.get_mut(..n).unwrap_or(&mut []), dry)?;
        read_i8s(r, self.ube.get_mut(..n).unwrap_or(&mut []), dry)?;
        r.skip(n)?;
        for arr in [&mut self.um, &mut self.ubm] {
            for v in arr.iter_mut().take(n) {
                let x = r.i16()?;
                if x < (1 << 14) {
                    return Err(BlobError::BadQuant { layer });
                }
                if !dry {
                    *v = x;
                }
            }
        }
        for b in self.bias.iter_mut().take(n) {
            let x = r.i32()?;
            if !dry {
                *b = x;
            }
        }
        Ok(())
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), BlobError> {
        self.write_first(OUT, w)
    }

    /// [`write`](Self::write) of the first `n ≤ OUT` channels.
    pub(crate) fn write_first(&self, n: usize, w: &mut Writer<'_>) -> Result<(), BlobError> {
        let n = n.min(OUT);
        w.i8(self.z_x)?;
        w.i8(self.z_y)?;
        w.u16(0)?;
        for &m in self.m.iter().take(n) {
            w.i32(m)?;
        }
        for arr in [&self.s, &self.ue, &self.ube] {
            for &v in arr.iter().take(n) {
                w.i8(v)?;
            }
        }
        for _ in 0..n {
            w.u8(0)?;
        }
        for arr in [&self.um, &self.ubm] {
            for &v in arr.iter().take(n) {
                w.i16(v)?;
            }
        }
        for &b in self.bias.iter().take(n) {
            w.i32(b)?;
        }
        Ok(())
    }

    /// Plausible synthetic parameters for benchmarks and tests, as if activations had scale
    /// 2^−5, weights 2^−6 (±64 ≈ ±1) and logits 2^−3: the requant shift keeps outputs of
    /// `fan_in` products in range, and the update factors follow docs §5 for those scales.
    pub fn init_synthetic(&mut self, fan_in: usize, seed: &mut Lcg) {
        self.init_synthetic_first(OUT, fan_in, seed);
    }

    /// [`init_synthetic`](Self::init_synthetic) of the first `n ≤ OUT` channels (the same
    /// draws as a `ChannelParams<n>`).
    pub fn init_synthetic_first(&mut self, n: usize, fan_in: usize, seed: &mut Lcg) {
        let n = n.min(OUT);
        let mut shift = 3;
        let mut f = 1;
        while f * f < fan_in {
            f *= 2;
            shift += 1;
        }
        for c in 0..n {
            self.m[c] = (1 << 30) + (seed.next16() << 13);
            self.s[c] = -(shift as i8);
            // u = 2^-3 / 2^-12 = 2^9 = 2^14 · 2^-5; ub = 2^-3 / 2^-22 = 2^19 = 2^14 · 2^5
            self.um[c] = (1 << 14) + (seed.next16() >> 3) as i16;
            self.ue[c] = -5;
            self.ubm[c] = (1 << 14) + (seed.next16() >> 3) as i16;
            self.ube[c] = 5;
            self.bias[c] = (seed.next16() - 32768) >> 4;
        }
    }
}

impl<const OUT: usize> Default for ChannelParams<OUT> {
    fn default() -> Self {
        Self::new()
    }
}

fn read_i8s(r: &mut Reader<'_>, out: &mut [i8], dry: bool) -> Result<(), BlobError> {
    for v in out.iter_mut() {
        let x = r.i8()?;
        if !dry {
            *v = x;
        }
    }
    Ok(())
}

/// Bookkeeping shared by all layers during one training step.
pub struct TrainCtx<'a> {
    /// Counters to bump.
    pub ctr: &'a mut Counters,
    /// Stochastic-rounding generator.
    pub rng: &'a mut Lcg,
    /// Learning-rate mantissa `lr_m ∈ [2^14, 2^15)`.
    pub lr_m: i32,
    /// Learning-rate exponent.
    pub lr_e: i32,
    /// Slots filled in this batch.
    pub slots: usize,
    /// Loss (Q15, `1 − p_label`) averaged over the batch, for partial updates.
    pub loss_avg_q15: i32,
    /// Minimum rows per layer for dynamic partial updates; `None` updates every row.
    pub topk_min: Option<u16>,
    /// Free buffer at least as long as any layer input (contents undefined).
    pub scratch: &'a mut [i32],
}

/// Compile-time facts of a layer type: shapes and memory, used for the model's constants.
pub trait LayerShape {
    /// Input activations (int8 elements).
    const IN_LEN: usize;
    /// Output activations (int8 elements).
    const OUT_LEN: usize;
    /// Trainable parameters (weights and biases).
    const PARAMS: usize;
    /// Multiply-accumulates of one forward pass.
    const MACS: usize;
    /// RAM bytes of the weights.
    const WEIGHT_BYTES: usize;
    /// RAM bytes of biases and per-channel quantization/update parameters.
    const QPARAM_BYTES: usize;
    /// RAM bytes kept per batch for the update (inputs, δ, exponents).
    const STASH_BYTES: usize;
    /// Bytes of this layer's parameter section in a blob.
    const BLOB_BYTES: usize;
}

/// Object-safe runtime interface every layer implements; the model drives a slice of these.
pub trait Layer {
    /// Architecture descriptor (checked against blobs).
    fn desc(&self) -> LayerDesc;
    /// Input length.
    fn in_len(&self) -> usize;
    /// Output length.
    fn out_len(&self) -> usize;
    /// Whether the layer has weights (Dense/Conv).
    fn has_params(&self) -> bool {
        false
    }
    /// Output zero point given the input zero point.
    fn out_zp(&self, z_in: i8) -> i8 {
        z_in
    }
    /// Forward pass. Slices have exactly `in_len`/`out_len` elements; `scratch` (at least
    /// `in_len` long, contents undefined) is free for the layer to use.
    fn forward(&self, x: &[i8], z_x: i8, y: &mut [i8], ctr: &mut Counters, scratch: &mut [i32]);
    /// Backward through a parameterless layer: error wrt `y` → error wrt `x`; returns the new
    /// exponent.
    fn backward_data(&self, _x: &[i8], _z_x: i8, e_out: &[i32], exp: i32, e_in: &mut [i32]) -> i32 {
        for (a, &b) in e_in.iter_mut().zip(e_out) {
            *a = b;
        }
        exp
    }
    /// Parameter layers: turn the error wrt `y` into δ, store it and a copy of `x` in batch
    /// slot `slot`; returns false when δ is all zero.
    fn stash(&mut self, _slot: usize, _x: &[i8], _y: &[i8], _e_out: &[i32], _exp: i32) -> bool {
        false
    }
    /// Parameter layers: error wrt the input from the δ in `slot`; returns its exponent.
    fn backward_delta(&self, _slot: usize, _e_in: &mut [i32]) -> i32 {
        0
    }
    /// Parameter layers: apply the batch's update.
    fn update(&mut self, _ctx: &mut TrainCtx<'_>) {}
    /// Parameter layers: what trains.
    fn set_mode(&mut self, _mode: TrainMode) {}
    /// Parameter layers: current training mode.
    fn mode(&self) -> TrainMode {
        TrainMode::Frozen
    }
    /// Parameter layers: read (or validate only, `dry`) the blob section.
    fn read_params(
        &mut self,
        _r: &mut Reader<'_>,
        _layer: u8,
        _dry: bool,
    ) -> Result<(), BlobError> {
        Ok(())
    }
    /// Parameter layers: write the blob section.
    fn write_params(&self, _w: &mut Writer<'_>) -> Result<(), BlobError> {
        Ok(())
    }
    /// Parameter layers: synthetic weights for benchmarks.
    fn init_synthetic(&mut self, _rng: &mut Lcg) {}
    /// Parameter layers: feed the stored state (weights as stored, then biases) to `f`.
    fn visit_state(&self, _f: &mut dyn FnMut(&[u8])) {}
}
