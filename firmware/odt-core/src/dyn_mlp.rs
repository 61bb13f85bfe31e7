//! An MLP whose layer shapes come from the blob at load time, within a compile-time capacity.
//!
//! [`odt_model!`](crate::odt_model) types are compiled for one network shape. [`DynMlp`] is
//! compiled for a *capacity* instead: at most `MAX_IN` inputs, `MAX_W` units per hidden layer,
//! `MAX_CLASSES` classes, `MAX_HIDDEN + 1` Dense layers (fused ReLU on any of them) and
//! `MAX_WEIGHTS` weights in all. Every buffer is still a fixed-size array (no heap, `no_std`),
//! so its RAM is `size_of` of the type ([`DynMlp::RAM_BYTES`], [`DynMlp::MEMORY`]); a blob of
//! any MLP shape inside the capacity loads, infers and trains exactly like the `odt_model!`
//! type of that shape (same kernels, same order of PRNG draws, same counters, same blob bytes).
//! A blob outside it is refused with [`BlobError::OverCapacity`] or
//! [`BlobError::UnsupportedLayer`] and leaves the model untouched.
//!
//! Layout: the weights of all layers share one arena (`[Wt; MAX_WEIGHTS]`, layer after layer,
//! each `[OUT][IN]` row-major with the blob's own `IN`); every hidden layer owns a
//! `ChannelParams<MAX_W>` and the output layer a `ChannelParams<MAX_CLASSES>`, of which the first
//! `OUT` channels are used. The batch stash keeps each slot's layer input and δ packed with the
//! runtime lengths, as the kernels index them.

use crate::blob::{
    self, BlobError, Crc32, Limit, ModelMeta, Reader, Writer, DESC_BYTES, HEADER_BYTES, MAGIC,
    VERSION,
};
use crate::fixed::{argmax_first, softmax_ce, softmax_q15, Lcg};
use crate::kernels::{self, Geom, Scratch, Slots};
use crate::layer::{ChannelParams, Counters, Kind, TrainCtx, TrainMode, Weight};
use crate::model::{
    Error, MemEntry, Model, Prediction, StepOutput, TrainConfig, TrainerState, MAX_BATCH,
    MAX_PARAM_LAYERS,
};

/// Element-wise copy of the common prefix (never panics on a length mismatch).
fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s;
    }
}

/// Geometry of a Dense layer for the shared kernels.
const fn dense_geom(n_in: usize, n_out: usize) -> Geom {
    Geom {
        h: 1,
        w: 1,
        cin: n_in,
        cout: n_out,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        ph: 0,
        pw: 0,
        oh: 1,
        ow: 1,
    }
}

/// Blob bytes of a Dense parameter section (FORMAT.md), padded to 4.
const fn section_bytes(n_in: usize, n_out: usize) -> usize {
    (4 + 16 * n_out + n_out * n_in + 3) & !3
}

/// The shape of the loaded network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    /// Dense layers (0 before a model is loaded).
    pub layers: usize,
    /// `widths[0]` inputs, `widths[i + 1]` outputs of layer `i`.
    pub widths: [u16; MAX_PARAM_LAYERS + 1],
    /// Fused ReLU on the output of layer `i`.
    pub relu: [bool; MAX_PARAM_LAYERS],
}

impl MlpShape {
    const EMPTY: Self = Self {
        layers: 0,
        widths: [0; MAX_PARAM_LAYERS + 1],
        relu: [false; MAX_PARAM_LAYERS],
    };

    /// Inputs of layer `i`.
    fn n_in(&self, i: usize) -> usize {
        self.widths.get(i).copied().unwrap_or(0) as usize
    }
    /// Outputs of layer `i`.
    fn n_out(&self, i: usize) -> usize {
        self.widths.get(i + 1).copied().unwrap_or(0) as usize
    }
    /// Fused ReLU of layer `i`.
    fn relu(&self, i: usize) -> bool {
        self.relu.get(i).copied().unwrap_or(false)
    }
    /// Offset of layer `i`'s weights in the arena.
    fn w_off(&self, i: usize) -> usize {
        (0..i).map(|j| self.n_in(j) * self.n_out(j)).sum()
    }
    /// Model inputs.
    pub fn input_len(&self) -> usize {
        self.n_in(0)
    }
    /// Classes.
    pub fn classes(&self) -> usize {
        self.n_out(self.layers.saturating_sub(1))
    }
    /// Weights of all layers.
    pub fn weights(&self) -> usize {
        self.w_off(self.layers)
    }
    /// Exact length of this shape's blob.
    pub fn blob_len(&self) -> usize {
        HEADER_BYTES
            + DESC_BYTES * self.layers
            + (0..self.layers)
                .map(|i| section_bytes(self.n_in(i), self.n_out(i)))
                .sum::<usize>()
            + 4
    }
}

/// An activation between two Dense layers, with what the layer that produces it and the layer
/// that reads it keep for training.
struct Hidden<const W: usize, const B: usize> {
    /// Quantization parameters of the layer producing this activation.
    q: ChannelParams<W>,
    /// The activation.
    y: [i8; W],
    /// δ of the producing layer per batch slot (packed, stride = its width).
    ds: [[i16; W]; B],
    /// δ exponents.
    es: [i32; B],
    /// Whether each slot's δ is non-zero.
    nz: [bool; B],
    /// The activation per batch slot as the next layer's input (packed).
    xs: [[i8; W]; B],
}

impl<const W: usize, const B: usize> Hidden<W, B> {
    const fn new() -> Self {
        Self {
            q: ChannelParams::new(),
            y: [0; W],
            ds: [[0; W]; B],
            es: [0; B],
            nz: [false; B],
            xs: [[0; W]; B],
        }
    }
}

/// The logits and what the output layer keeps for training.
struct Output<const C: usize, const B: usize> {
    q: ChannelParams<C>,
    y: [i8; C],
    ds: [[i16; C]; B],
    es: [i32; B],
    nz: [bool; B],
}

impl<const C: usize, const B: usize> Output<C, B> {
    const fn new() -> Self {
        Self {
            q: ChannelParams::new(),
            y: [0; C],
            ds: [[0; C]; B],
            es: [0; B],
            nz: [false; B],
        }
    }
}

/// Make the channels past `n` harmless: a valid multiplier, and the largest exponent of the
/// used channels (so a maximum over all channels, as `to_delta` takes, equals the maximum over
/// the used ones).
fn pad_channels<const OUT: usize>(q: &mut ChannelParams<OUT>, n: usize) {
    let smax = q.s.iter().take(n).copied().max().unwrap_or(0);
    for c in n..OUT {
        if let (Some(m), Some(s)) = (q.m.get_mut(c), q.s.get_mut(c)) {
            *m = 1 << 30;
            *s = smax;
        }
    }
}

/// Dynamic partial updates (docs §5.6) of one layer with `n_out` rows: choose the rows, then
/// zero the δ of every other row in the stash. A row whose δ is zero in every slot gets no
/// weight step (no PRNG draws) and a bias change of 0, which is exactly what skipping it means,
/// so the shared update kernel can then run with every row selected.
#[allow(clippy::too_many_arguments)]
fn mask_topk(
    ds: &mut [i16],
    es: &[i32],
    nslots: usize,
    n_out: usize,
    kmin: u16,
    loss_avg_q15: i32,
    imp: &mut [u32],
    sel: &mut [bool],
) {
    let emax = es.iter().take(nslots).copied().max().unwrap_or(0);
    for (c, ic) in imp.iter_mut().enumerate().take(n_out) {
        let mut total = 0u64;
        for b in 0..nslots {
            let dv = ds.get(b * n_out + c).copied().unwrap_or(0);
            let sh = (emax - es.get(b).copied().unwrap_or(emax)) as u32;
            total += if sh >= 64 {
                0
            } else {
                dv.unsigned_abs() as u64 >> sh
            };
        }
        *ic = total.min(u32::MAX as u64) as u32;
    }
    let kmin = (kmin as usize).min(n_out);
    let loss = loss_avg_q15.clamp(0, 32768) as usize;
    let k = kmin + (((n_out - kmin) * loss) >> 15);
    for s in sel.iter_mut() {
        *s = false;
    }
    for _ in 0..k {
        let mut best: Option<(usize, u32)> = None;
        for (c, (&taken, &v)) in sel.iter().zip(imp.iter()).enumerate().take(n_out) {
            if taken || v == 0 {
                continue;
            }
            if best.is_none_or(|(_, bv)| v > bv) {
                best = Some((c, v));
            }
        }
        match best.and_then(|(b, _)| sel.get_mut(b)) {
            Some(flag) => *flag = true,
            None => break,
        }
    }
    for slot in ds.chunks_mut(n_out.max(1)).take(nslots) {
        for (d, &s) in slot.iter_mut().zip(sel.iter()) {
            if !s {
                *d = 0;
            }
        }
    }
}

/// A sequential MLP (Dense layers, fused ReLU) whose shape is read from the blob, within a
/// compile-time capacity:
///
/// - `MAX_IN`: inputs; `MAX_W`: units of a hidden layer; `MAX_CLASSES`: classes (`≤ MAX_W`);
/// - `MAX_HIDDEN`: hidden layers, so at most `MAX_HIDDEN + 1` Dense layers (`≤ 16`);
/// - `MAX_WEIGHTS`: weights of all layers together (the parameter arena);
/// - `B`: batch capacity; `Wt`: weight storage (`i8` stochastic rounding, or [`crate::Hp`]).
///
/// ```
/// use odt_core::dyn_mlp::DynMlp;
/// use odt_core::models::TerrainMlp;
/// // Up to 128 inputs, 64 units, 8 classes, 3 Dense layers, 12 Ki weights, batch 1.
/// type Cap = DynMlp<128, 64, 8, 2, 12288, 1>;
/// let mut fixed = Box::new(TerrainMlp::new());
/// fixed.init_random(3);
/// let mut blob = vec![0u8; TerrainMlp::BLOB_LEN];
/// fixed.save_blob(&mut blob).unwrap();
/// let mut m = Box::new(Cap::new());
/// m.load_blob(&blob).unwrap();
/// assert_eq!((m.shape().input_len(), m.shape().classes()), (102, 5));
/// assert_eq!(m.state_crc32(), fixed.state_crc32());
/// ```
pub struct DynMlp<
    const MAX_IN: usize,
    const MAX_W: usize,
    const MAX_CLASSES: usize,
    const MAX_HIDDEN: usize,
    const MAX_WEIGHTS: usize,
    const B: usize,
    Wt: Weight = i8,
> {
    w: [Wt; MAX_WEIGHTS],
    hidden: [Hidden<MAX_W, B>; MAX_HIDDEN],
    out: Output<MAX_CLASSES, B>,
    /// Model input.
    x: [i8; MAX_IN],
    /// Model input per batch slot (layer 0's stash, packed).
    xs: [[i8; MAX_IN]; B],
    /// Layer 0's scratch (centred input in forward and update).
    xc: [i32; MAX_IN],
    /// Error ping buffer (also the probabilities of the last inference, and the update
    /// scratch of layers past the first).
    ea: [i32; MAX_W],
    /// Error pong buffer (also the forward scratch of layers past the first).
    eb: [i32; MAX_W],
    imp_w: [u32; MAX_W],
    sel_w: [bool; MAX_W],
    imp_c: [u32; MAX_CLASSES],
    sel_c: [bool; MAX_CLASSES],
    rs: [[i32; 1]; B],
    shape: MlpShape,
    st: TrainerState,
}

impl<
        const MAX_IN: usize,
        const MAX_W: usize,
        const MAX_CLASSES: usize,
        const MAX_HIDDEN: usize,
        const MAX_WEIGHTS: usize,
        const B: usize,
        Wt: Weight,
    > DynMlp<MAX_IN, MAX_W, MAX_CLASSES, MAX_HIDDEN, MAX_WEIGHTS, B, Wt>
{
    const CHECK: () = {
        assert!(MAX_IN >= 1 && MAX_IN <= 65535, "MAX_IN must be 1 to 65535");
        assert!(MAX_W >= 1 && MAX_W <= 65535, "MAX_W must be 1 to 65535");
        assert!(
            MAX_CLASSES >= 1 && MAX_CLASSES <= MAX_W && MAX_CLASSES <= 255,
            "MAX_CLASSES must be 1 to min(MAX_W, 255)"
        );
        assert!(
            MAX_HIDDEN < MAX_PARAM_LAYERS,
            "at most 16 Dense layers (MAX_HIDDEN ≤ 15)"
        );
        assert!(MAX_WEIGHTS >= 1, "MAX_WEIGHTS must be at least 1");
        assert!(B >= 1 && B <= MAX_BATCH, "batch must be 1 to 32");
    };

    /// Most inputs a blob may have.
    pub const MAX_INPUTS: usize = MAX_IN;
    /// Most units of a hidden layer.
    pub const MAX_WIDTH: usize = MAX_W;
    /// Most classes.
    pub const MAX_OUTPUTS: usize = MAX_CLASSES;
    /// Most Dense layers.
    pub const MAX_DENSE: usize = MAX_HIDDEN + 1;
    /// Most weights of all layers together.
    pub const MAX_PARAMS_WEIGHTS: usize = MAX_WEIGHTS;
    /// Compiled batch capacity.
    pub const BATCH: usize = B;
    /// Total RAM of the model, training state included: the size of the type.
    pub const RAM_BYTES: usize = core::mem::size_of::<Self>();
    /// Longest blob a model within the capacity can have (a bound: every layer's section
    /// padding counted in full).
    pub const MAX_BLOB_LEN: usize = HEADER_BYTES
        + DESC_BYTES * (MAX_HIDDEN + 1)
        + 7 * (MAX_HIDDEN + 1)
        + 16 * (MAX_HIDDEN * MAX_W + MAX_CLASSES)
        + MAX_WEIGHTS
        + 4;

    const WEIGHT_BYTES: usize = core::mem::size_of::<[Wt; MAX_WEIGHTS]>();
    const QPARAM_BYTES: usize =
        MAX_HIDDEN * ChannelParams::<MAX_W>::BYTES + ChannelParams::<MAX_CLASSES>::BYTES;
    const ACTS_BYTES: usize = MAX_IN + MAX_HIDDEN * MAX_W + MAX_CLASSES;
    const STASH_BYTES: usize =
        B * MAX_IN + MAX_HIDDEN * B * (MAX_W + 2 * MAX_W + 4 + 1) + B * (2 * MAX_CLASSES + 4 + 1);
    const ERR_BYTES: usize = 4 * (MAX_IN + 2 * MAX_W);
    const UPDATE_BYTES: usize = 5 * MAX_W + 5 * MAX_CLASSES + 4 * B;
    const STATE_BYTES: usize =
        core::mem::size_of::<MlpShape>() + core::mem::size_of::<TrainerState>();
    const LISTED: usize = Self::WEIGHT_BYTES
        + Self::QPARAM_BYTES
        + Self::ACTS_BYTES
        + Self::STASH_BYTES
        + Self::ERR_BYTES
        + Self::UPDATE_BYTES
        + Self::STATE_BYTES;

    /// Every RAM buffer and its size; the entries add up to `RAM_BYTES`.
    pub const MEMORY: &'static [MemEntry] = &[
        MemEntry {
            name: "mlp.weights",
            bytes: Self::WEIGHT_BYTES,
        },
        MemEntry {
            name: "mlp.bias_qparams",
            bytes: Self::QPARAM_BYTES,
        },
        MemEntry {
            name: "mlp.batch_stash",
            bytes: Self::STASH_BYTES,
        },
        MemEntry {
            name: "activations",
            bytes: Self::ACTS_BYTES,
        },
        MemEntry {
            name: "error_buffers",
            bytes: Self::ERR_BYTES,
        },
        MemEntry {
            name: "update_scratch",
            bytes: Self::UPDATE_BYTES,
        },
        MemEntry {
            name: "shape+trainer_state",
            bytes: Self::STATE_BYTES,
        },
        MemEntry {
            name: "alignment",
            bytes: Self::RAM_BYTES - Self::LISTED,
        },
    ];

    /// An empty model (no shape, nothing loaded). `const`, so it can initialise a `static`
    /// (it then lives in `.bss`).
    #[allow(clippy::let_unit_value)]
    pub const fn new() -> Self {
        let () = Self::CHECK;
        Self {
            w: [Wt::ZERO; MAX_WEIGHTS],
            hidden: [const { Hidden::new() }; MAX_HIDDEN],
            out: Output::new(),
            x: [0; MAX_IN],
            xs: [[0; MAX_IN]; B],
            xc: [0; MAX_IN],
            ea: [0; MAX_W],
            eb: [0; MAX_W],
            imp_w: [0; MAX_W],
            sel_w: [false; MAX_W],
            imp_c: [0; MAX_CLASSES],
            sel_c: [false; MAX_CLASSES],
            rs: [[0; 1]; B],
            shape: MlpShape::EMPTY,
            st: TrainerState::new(),
        }
    }

    /// The shape of the loaded model (`layers == 0` before one is loaded).
    pub fn shape(&self) -> &MlpShape {
        &self.shape
    }

    /// Check a network of `n` Dense layers, layer `i` given as its descriptor `(kind, flags,
    /// dims)`, against the blob rules and this capacity (order: FORMAT.md, "Models whose shape
    /// comes from the blob").
    fn check_shape(
        n: usize,
        input_len: usize,
        output_len: usize,
        desc: impl Fn(usize) -> Result<(u8, u8, [u16; 10]), BlobError>,
    ) -> Result<MlpShape, BlobError> {
        let arch = |layer: usize| BlobError::ArchMismatch {
            layer: if layer >= 255 { 255 } else { layer as u8 },
        };
        if n == 0 || n > blob::MAX_LAYERS {
            return Err(arch(255));
        }
        for i in 0..n {
            let (kind, _, _) = desc(i)?;
            if kind != Kind::Dense as u8 {
                return Err(BlobError::UnsupportedLayer {
                    layer: i as u8,
                    kind,
                });
            }
        }
        let mut prev = input_len;
        for i in 0..n {
            let (_, flags, dims) = desc(i)?;
            let (d_in, d_out) = (dims[0] as usize, dims[1] as usize);
            if flags > 1 || dims[2..].iter().any(|&d| d != 0) || d_in == 0 || d_out == 0 {
                return Err(arch(i));
            }
            if d_in != prev {
                return Err(arch(if i == 0 { 255 } else { i }));
            }
            prev = d_out;
        }
        if prev != output_len {
            return Err(arch(255));
        }
        let over = |limit, got: usize, max: usize| BlobError::OverCapacity {
            limit,
            got: u32::try_from(got).unwrap_or(u32::MAX),
            max: u32::try_from(max).unwrap_or(u32::MAX),
        };
        if n > MAX_HIDDEN + 1 {
            return Err(over(Limit::Depth, n, MAX_HIDDEN + 1));
        }
        if input_len > MAX_IN {
            return Err(over(Limit::Inputs, input_len, MAX_IN));
        }
        let mut shape = MlpShape::EMPTY;
        shape.layers = n;
        let mut weights = 0u64;
        for i in 0..n {
            let (_, flags, dims) = desc(i)?;
            if i + 1 < n && dims[1] as usize > MAX_W {
                return Err(over(Limit::Width, dims[1] as usize, MAX_W));
            }
            weights += dims[0] as u64 * dims[1] as u64;
            if let Some(w) = shape.widths.get_mut(i) {
                *w = dims[0];
            }
            if let Some(w) = shape.widths.get_mut(i + 1) {
                *w = dims[1];
            }
            if let Some(r) = shape.relu.get_mut(i) {
                *r = flags == 1;
            }
        }
        if output_len > MAX_CLASSES {
            return Err(over(Limit::Classes, output_len, MAX_CLASSES));
        }
        if weights > MAX_WEIGHTS as u64 {
            let got = usize::try_from(weights).unwrap_or(usize::MAX);
            return Err(over(Limit::Weights, got, MAX_WEIGHTS));
        }
        Ok(shape)
    }

    /// Read (or with `dry` only validate) the parameter sections of `shape` (FORMAT.md
    /// checks from `BadQuant` on).
    fn read_sections(
        &mut self,
        blob: &[u8],
        env: &blob::Envelope,
        shape: &MlpShape,
        dry: bool,
    ) -> Result<(), BlobError> {
        if env.meta.softmax_a <= 0 {
            return Err(BlobError::BadQuant { layer: 255 });
        }
        let end = env.total.saturating_sub(4);
        let mut r = Reader::new(blob, HEADER_BYTES + DESC_BYTES * shape.layers, end);
        let n = shape.layers;
        for i in 0..n {
            let (n_in, n_out) = (shape.n_in(i), shape.n_out(i));
            r.align4()?;
            if i + 1 == n {
                self.out.q.read_first(n_out, &mut r, i as u8, dry)?;
            } else {
                let h = self
                    .hidden
                    .get_mut(i)
                    .ok_or(BlobError::ArchMismatch { layer: i as u8 })?;
                h.q.read_first(n_out, &mut r, i as u8, dry)?;
            }
            let count = n_in * n_out;
            if dry {
                r.skip(count)?;
            } else {
                let off = shape.w_off(i);
                let w = self
                    .w
                    .get_mut(off..off + count)
                    .ok_or(BlobError::ArchMismatch { layer: i as u8 })?;
                for wv in w.iter_mut() {
                    *wv = Wt::from_q(r.i8()?);
                }
            }
            r.align4()?;
        }
        if r.pos() != end || blob.len() > env.total {
            return Err(BlobError::TrailingBytes);
        }
        Ok(())
    }

    /// Load a blob of any MLP shape within the capacity; on error the model is unchanged.
    pub fn load_blob(&mut self, blob: &[u8]) -> Result<(), BlobError> {
        let env = blob::check_envelope(blob)?;
        let shape = Self::check_shape(env.n_layers, env.input_len, env.output_len, |i| {
            blob::raw_desc(blob, i)
        })?;
        self.read_sections(blob, &env, &shape, true)?;
        self.read_sections(blob, &env, &shape, false)?;
        self.shape = shape;
        self.st.meta = env.meta;
        self.loaded();
        Ok(())
    }

    /// Deterministic synthetic weights with valid quantization for an MLP of the given widths
    /// (inputs, hidden units…, classes; ReLU on every layer but the last): the same model as
    /// `init_random(seed)` of the `odt_model!` type of that shape. On error (shape outside the
    /// capacity) the model is unchanged.
    pub fn init_random_mlp(&mut self, widths: &[usize], seed: u32) -> Result<(), BlobError> {
        let n = widths.len().saturating_sub(1);
        let dim = |v: usize| u16::try_from(v).unwrap_or(u16::MAX);
        let desc = |i: usize| -> Result<(u8, u8, [u16; 10]), BlobError> {
            let mut d = [0u16; 10];
            d[0] = dim(widths.get(i).copied().unwrap_or(0));
            d[1] = dim(widths.get(i + 1).copied().unwrap_or(0));
            Ok((Kind::Dense as u8, (i + 1 < n) as u8, d))
        };
        let input = widths.first().copied().unwrap_or(0);
        let output = widths.last().copied().unwrap_or(0);
        let shape = Self::check_shape(n, input, output, desc)?;
        let mut rng = Lcg::new(seed);
        for i in 0..n {
            let (n_in, n_out) = (shape.n_in(i), shape.n_out(i));
            if i + 1 == n {
                self.out.q.z_x = 0;
                self.out.q.z_y = 0;
                self.out.q.init_synthetic_first(n_out, n_in, &mut rng);
            } else if let Some(h) = self.hidden.get_mut(i) {
                h.q.z_x = 0;
                h.q.z_y = 0;
                h.q.init_synthetic_first(n_out, n_in, &mut rng);
            }
            let off = shape.w_off(i);
            for wv in self.w.get_mut(off..off + n_in * n_out).unwrap_or(&mut []) {
                *wv = Wt::from_q(((rng.next16() >> 9) - 64) as i8);
            }
        }
        self.shape = shape;
        self.st.meta = ModelMeta {
            softmax_a: 11819,
            ..Default::default()
        };
        self.loaded();
        Ok(())
    }

    /// A model is in place: pad the unused channels, empty the batch, apply the configuration.
    fn loaded(&mut self) {
        let n = self.shape.layers;
        for i in 0..n {
            let n_out = self.shape.n_out(i);
            if i + 1 == n {
                pad_channels(&mut self.out.q, n_out);
            } else if let Some(h) = self.hidden.get_mut(i) {
                pad_channels(&mut h.q, n_out);
            }
        }
        self.st.loaded = true;
        self.st.slots = 0;
        let cfg = if self.st.cfg.is_valid(B) {
            self.st.cfg
        } else {
            TrainConfig::all_trainable()
        };
        // Valid by construction, so this cannot fail.
        let _ = self.set_train_config(&cfg);
    }

    /// Write the current model as a blob into `out`; returns its length.
    pub fn save_blob(&self, out: &mut [u8]) -> Result<usize, BlobError> {
        let s = &self.shape;
        let meta = &self.st.meta;
        let mut w = Writer::new(out);
        w.bytes(&MAGIC)?;
        w.u16(VERSION)?;
        w.u16(s.layers as u16)?;
        w.u32(meta.model_id)?;
        w.u32(s.input_len() as u32)?;
        w.u32(s.classes() as u32)?;
        w.i8(meta.input_zp)?;
        w.i8(meta.output_zp)?;
        w.u16(0)?;
        w.bytes(&meta.input_scale)?;
        w.bytes(&meta.output_scale)?;
        w.i32(meta.softmax_a)?;
        w.u32(0)?; // total_len, patched below
        for i in 0..s.layers {
            w.u8(Kind::Dense as u8)?;
            w.u8(s.relu(i) as u8)?;
            w.u16(0)?;
            w.u16(s.n_in(i) as u16)?;
            w.u16(s.n_out(i) as u16)?;
            for _ in 2..10 {
                w.u16(0)?;
            }
        }
        for i in 0..s.layers {
            let (n_in, n_out) = (s.n_in(i), s.n_out(i));
            w.align4()?;
            if i + 1 == s.layers {
                self.out.q.write_first(n_out, &mut w)?;
            } else if let Some(h) = self.hidden.get(i) {
                h.q.write_first(n_out, &mut w)?;
            }
            let off = s.w_off(i);
            for wv in self.w.get(off..off + n_in * n_out).unwrap_or(&[]) {
                w.i8(wv.q())?;
            }
            w.align4()?;
        }
        let total = w.pos() + 4;
        w.patch_u32(36, total as u32)?;
        let crc = blob::crc32(w.written());
        w.u32(crc)?;
        Ok(total)
    }

    /// Set learning rate, what trains (per layer, forward order), batch, partial updates and
    /// seed; reseeds the generator and empties a partly filled batch.
    pub fn set_train_config(&mut self, cfg: &TrainConfig) -> Result<(), Error> {
        if !cfg.is_valid(B) {
            return Err(Error::BadConfig);
        }
        self.st.cfg = *cfg;
        self.st.rng = Lcg::new(cfg.seed);
        self.st.slots = 0;
        Ok(())
    }

    /// The active training configuration.
    pub fn train_config(&self) -> &TrainConfig {
        &self.st.cfg
    }

    fn mode(&self, i: usize) -> TrainMode {
        self.st
            .cfg
            .modes
            .get(i)
            .copied()
            .unwrap_or(TrainMode::Frozen)
    }

    fn check_input(&self, x: &[i8]) -> Result<(), Error> {
        if !self.st.loaded {
            return Err(Error::NotLoaded);
        }
        let n = self.shape.input_len();
        if x.len() != n {
            return Err(Error::InputLen {
                expected: n as u16,
                got: x.len().min(65535) as u16,
            });
        }
        Ok(())
    }

    /// Forward pass of the loaded shape; the logits end up in `out.y`.
    fn forward(&mut self, input: &[i8]) {
        let Self {
            w,
            hidden,
            out,
            x,
            xc,
            eb,
            shape,
            st,
            ..
        } = self;
        copy(x, input);
        let mut z = st.meta.input_zp;
        let n = shape.layers;
        for i in 0..n {
            let (n_in, n_out) = (shape.n_in(i), shape.n_out(i));
            if let Some(zs) = st.zps.get_mut(i) {
                *zs = z;
            }
            let off = shape.w_off(i);
            let wl = w.get(off..off + n_in * n_out).unwrap_or(&[]);
            let g = dense_geom(n_in, n_out);
            let relu = shape.relu(i);
            let (lo, hi) = hidden.split_at_mut(i.min(MAX_HIDDEN));
            let xin: &[i8] = if i == 0 {
                x.get(..n_in).unwrap_or(&[])
            } else {
                lo.last().and_then(|p| p.y.get(..n_in)).unwrap_or(&[])
            };
            let scratch: &mut [i32] = if i == 0 { &mut xc[..] } else { &mut eb[..] };
            let ctr = &mut st.ctr;
            if i + 1 == n {
                let y = out.y.get_mut(..n_out).unwrap_or(&mut []);
                kernels::forward::<Wt, MAX_CLASSES>(&g, wl, &out.q, relu, xin, y, ctr, scratch);
                z = out.q.z_y;
            } else if let Some(h) = hi.first_mut() {
                let y = h.y.get_mut(..n_out).unwrap_or(&mut []);
                kernels::forward::<Wt, MAX_W>(&g, wl, &h.q, relu, xin, y, ctr, scratch);
                z = h.q.z_y;
            }
        }
        if let Some(zs) = st.zps.get_mut(n) {
            *zs = z;
        }
    }

    /// Classify one input.
    pub fn infer(&mut self, x: &[i8]) -> Result<Prediction, Error> {
        self.check_input(x)?;
        self.forward(x);
        let c = self.shape.classes();
        let logits = self.out.y.get(..c).unwrap_or(&[]);
        let p = self.ea.get_mut(..c).unwrap_or(&mut []);
        softmax_q15(logits, self.st.meta.softmax_a, p);
        let class = argmax_first(logits);
        Ok(Prediction {
            class: class as u8,
            confidence_q15: p.get(class).copied().unwrap_or(0),
        })
    }

    /// Train on one labelled input (docs §3 to §5); the prediction made before the update is
    /// returned. Applies the update when the batch is complete.
    pub fn train_step(&mut self, x: &[i8], label: u8) -> Result<StepOutput, Error> {
        self.check_input(x)?;
        let classes = self.shape.classes();
        if label as usize >= classes {
            return Err(Error::BadLabel);
        }
        self.forward(x);
        let loss = {
            let logits = self.out.y.get(..classes).unwrap_or(&[]);
            let g = self.ea.get_mut(..classes).unwrap_or(&mut []);
            softmax_ce(logits, label as usize, self.st.meta.softmax_a, g)
        };
        self.st.ctr.steps = self.st.ctr.steps.wrapping_add(1);
        let n = self.shape.layers;
        let Some(lowest) = (0..n).find(|&i| self.mode(i) != TrainMode::Frozen) else {
            return Ok(StepOutput {
                loss,
                applied: false,
            });
        };
        let slot = self.st.slots;
        self.backward(lowest, slot);
        if let Some(v) = self.st.slot_loss.get_mut(slot) {
            *v = loss.loss_q15;
        }
        self.st.slots += 1;
        let mut applied = false;
        if self.st.slots >= self.st.cfg.batch as usize {
            self.apply_update();
            applied = true;
        }
        Ok(StepOutput { loss, applied })
    }

    /// Backward from the loss gradient in `ea` down to layer `lowest`, stashing each layer's
    /// input and δ in batch slot `slot`.
    fn backward(&mut self, lowest: usize, slot: usize) {
        let Self {
            w,
            hidden,
            out,
            x,
            xs,
            ea,
            eb,
            shape,
            st,
            ..
        } = self;
        let n = shape.layers;
        let mut exp = -15;
        let (mut cur, mut other) = (&mut ea[..], &mut eb[..]);
        for i in (lowest..n).rev() {
            let (n_in, n_out) = (shape.n_in(i), shape.n_out(i));
            let relu = shape.relu(i);
            let off = shape.w_off(i);
            let wl = w.get(off..off + n_in * n_out).unwrap_or(&[]);
            let g = dense_geom(n_in, n_out);
            let (lo, hi) = hidden.split_at_mut(i.min(MAX_HIDDEN));
            // This layer's input and its stash.
            let (xin, xst): (&[i8], &mut [i8]) = if i == 0 {
                (&x[..], xs.as_flattened_mut())
            } else {
                match lo.last_mut() {
                    Some(p) => (&p.y[..], p.xs.as_flattened_mut()),
                    None => (&[], &mut []),
                }
            };
            let xin = xin.get(..n_in).unwrap_or(&[]);
            if let Some(d) = xst.get_mut(slot * n_in..(slot + 1) * n_in) {
                copy(d, xin);
            }
            let e_out = cur.get(..n_out).unwrap_or(&[]);
            let span = slot * n_out..(slot + 1) * n_out;
            let (nz, e_d) = if i + 1 == n {
                let y = out.y.get(..n_out).unwrap_or(&[]);
                let ds = out.ds.as_flattened_mut();
                let d = ds.get_mut(span.clone()).unwrap_or(&mut []);
                let (e, nz) = kernels::to_delta::<MAX_CLASSES>(&out.q, relu, y, e_out, exp, d);
                if let (Some(es), Some(nzs)) = (out.es.get_mut(slot), out.nz.get_mut(slot)) {
                    *es = e;
                    *nzs = nz;
                }
                (nz, e)
            } else if let Some(h) = hi.first_mut() {
                let y = h.y.get(..n_out).unwrap_or(&[]);
                let ds = h.ds.as_flattened_mut();
                let d = ds.get_mut(span.clone()).unwrap_or(&mut []);
                let (e, nz) = kernels::to_delta::<MAX_W>(&h.q, relu, y, e_out, exp, d);
                if let (Some(es), Some(nzs)) = (h.es.get_mut(slot), h.nz.get_mut(slot)) {
                    *es = e;
                    *nzs = nz;
                }
                (nz, e)
            } else {
                (false, exp)
            };
            if !nz {
                st.ctr.zero_grad_steps = st.ctr.zero_grad_steps.wrapping_add(1);
            }
            if i == lowest {
                break;
            }
            let e_in = other.get_mut(..n_in).unwrap_or(&mut []);
            if i + 1 == n {
                let d = out.ds.as_flattened().get(span).unwrap_or(&[]);
                kernels::backward::<Wt, MAX_CLASSES>(&g, wl, d, e_in);
            } else if let Some(h) = hi.first() {
                let d = h.ds.as_flattened().get(span).unwrap_or(&[]);
                kernels::backward::<Wt, MAX_W>(&g, wl, d, e_in);
            }
            exp = e_d;
            core::mem::swap(&mut cur, &mut other);
        }
    }

    /// Apply the batch's update to every trainable layer, in forward order (docs §5.4).
    fn apply_update(&mut self) {
        let Self {
            w,
            hidden,
            out,
            xs,
            xc,
            ea,
            imp_w,
            sel_w,
            imp_c,
            sel_c,
            rs,
            shape,
            st,
            ..
        } = self;
        let slots = st.slots.min(MAX_BATCH).min(B);
        let total: i64 = st.slot_loss.iter().take(slots).map(|&v| v as i64).sum();
        let loss_avg_q15 = if slots > 0 {
            (total / slots as i64) as i32
        } else {
            0
        };
        let n = shape.layers;
        for i in 0..n {
            let mode = st.cfg.modes.get(i).copied().unwrap_or(TrainMode::Frozen);
            if mode == TrainMode::Frozen {
                continue;
            }
            let (n_in, n_out) = (shape.n_in(i), shape.n_out(i));
            let off = shape.w_off(i);
            let Some(wl) = w.get_mut(off..off + n_in * n_out) else {
                continue;
            };
            let g = dense_geom(n_in, n_out);
            let (lo, hi) = hidden.split_at_mut(i.min(MAX_HIDDEN));
            let xst: &[i8] = if i == 0 {
                xs.as_flattened()
            } else {
                lo.last().map(|p| p.xs.as_flattened()).unwrap_or(&[])
            };
            let scratch: &mut [i32] = if i == 0 { &mut xc[..] } else { &mut ea[..] };
            let mut ctx = TrainCtx {
                ctr: &mut st.ctr,
                rng: &mut st.rng,
                lr_m: st.cfg.lr_m,
                lr_e: st.cfg.lr_e as i32,
                slots,
                loss_avg_q15,
                topk_min: None,
                scratch,
            };
            let rs = rs.as_flattened_mut();
            let topk = st.cfg.topk_min;
            if i + 1 == n {
                if let Some(k) = topk {
                    let ds = out.ds.as_flattened_mut();
                    mask_topk(ds, &out.es, slots, n_out, k, loss_avg_q15, imp_c, sel_c);
                }
                let s = Slots {
                    xs: xst,
                    ds: out.ds.as_flattened(),
                    es: &out.es,
                    nz: &out.nz,
                };
                let sc = Scratch {
                    rs,
                    imp: &mut *imp_c,
                    sel: &mut *sel_c,
                    vacc: &mut [],
                };
                kernels::update::<Wt, MAX_CLASSES>(&g, wl, &mut out.q, mode, &s, sc, &mut ctx);
            } else if let Some(h) = hi.first_mut() {
                if let Some(k) = topk {
                    let ds = h.ds.as_flattened_mut();
                    mask_topk(ds, &h.es, slots, n_out, k, loss_avg_q15, imp_w, sel_w);
                }
                let s = Slots {
                    xs: xst,
                    ds: h.ds.as_flattened(),
                    es: &h.es,
                    nz: &h.nz,
                };
                let sc = Scratch {
                    rs,
                    imp: &mut *imp_w,
                    sel: &mut *sel_w,
                    vacc: &mut [],
                };
                kernels::update::<Wt, MAX_W>(&g, wl, &mut h.q, mode, &s, sc, &mut ctx);
            }
        }
        st.slots = 0;
        st.ctr.updates = st.ctr.updates.wrapping_add(1);
    }

    /// Logits of the last forward pass.
    pub fn logits(&self) -> &[i8] {
        self.out.y.get(..self.shape.classes()).unwrap_or(&[])
    }

    /// Softmax probabilities (Q15) of the last `infer`.
    pub fn scores_q15(&self) -> &[i32] {
        self.ea.get(..self.shape.classes()).unwrap_or(&[])
    }

    /// Saturation and progress counters.
    pub fn counters(&self) -> Counters {
        self.st.ctr
    }

    /// Blob header fields of the loaded model.
    pub fn meta(&self) -> &ModelMeta {
        &self.st.meta
    }

    /// CRC-32 of the trainable state (stored weights, then biases, per layer), as for
    /// `odt_model!` types.
    pub fn state_crc32(&self) -> u32 {
        let mut c = Crc32::new();
        let s = &self.shape;
        let mut buf = [0u8; 2];
        for i in 0..s.layers {
            let (n_in, n_out) = (s.n_in(i), s.n_out(i));
            let off = s.w_off(i);
            for wv in self.w.get(off..off + n_in * n_out).unwrap_or(&[]) {
                let k = wv.state_bytes(&mut buf);
                c.update(buf.get(..k).unwrap_or(&[]));
            }
            let bias: &[i32] = if i + 1 == s.layers {
                &self.out.q.bias
            } else {
                self.hidden.get(i).map(|h| &h.q.bias[..]).unwrap_or(&[])
            };
            for b in bias.iter().take(n_out) {
                c.update(&b.to_le_bytes());
            }
        }
        c.finish()
    }
}

impl<
        const MAX_IN: usize,
        const MAX_W: usize,
        const MAX_CLASSES: usize,
        const MAX_HIDDEN: usize,
        const MAX_WEIGHTS: usize,
        const B: usize,
        Wt: Weight,
    > Default for DynMlp<MAX_IN, MAX_W, MAX_CLASSES, MAX_HIDDEN, MAX_WEIGHTS, B, Wt>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<
        const MAX_IN: usize,
        const MAX_W: usize,
        const MAX_CLASSES: usize,
        const MAX_HIDDEN: usize,
        const MAX_WEIGHTS: usize,
        const B: usize,
        Wt: Weight,
    > Model for DynMlp<MAX_IN, MAX_W, MAX_CLASSES, MAX_HIDDEN, MAX_WEIGHTS, B, Wt>
{
    fn input_len(&self) -> usize {
        self.shape.input_len()
    }
    fn classes(&self) -> usize {
        self.shape.classes()
    }
    fn ram_bytes(&self) -> usize {
        Self::RAM_BYTES
    }
    fn blob_len(&self) -> usize {
        self.shape.blob_len()
    }
    fn max_blob_len(&self) -> usize {
        Self::MAX_BLOB_LEN
    }
    fn max_input_len(&self) -> usize {
        Self::MAX_INPUTS
    }
    fn infer(&mut self, x: &[i8]) -> Result<Prediction, Error> {
        DynMlp::infer(self, x)
    }
    fn scores_q15(&self) -> &[i32] {
        DynMlp::scores_q15(self)
    }
    fn train_step(&mut self, x: &[i8], label: u8) -> Result<StepOutput, Error> {
        DynMlp::train_step(self, x, label)
    }
    fn set_train_config(&mut self, cfg: &TrainConfig) -> Result<(), Error> {
        DynMlp::set_train_config(self, cfg)
    }
    fn train_config(&self) -> TrainConfig {
        self.st.cfg
    }
    fn counters(&self) -> Counters {
        self.st.ctr
    }
    fn load_blob(&mut self, blob: &[u8]) -> Result<(), BlobError> {
        DynMlp::load_blob(self, blob)
    }
    fn save_blob(&self, out: &mut [u8]) -> Result<usize, BlobError> {
        DynMlp::save_blob(self, out)
    }
    fn meta(&self) -> ModelMeta {
        self.st.meta
    }
    fn state_crc32(&self) -> u32 {
        DynMlp::state_crc32(self)
    }
}
