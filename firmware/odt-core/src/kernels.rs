//! One implementation of the parameter-layer arithmetic for Dense, Conv1d and Conv2d.
//!
//! A Dense layer is a 1×1 convolution over a 1×1 image, a Conv1d one over a 1×L image, so a single
//! geometry-driven kernel serves all three and the Python reference mirrors one function, not
//! three. The geometry comes from const generics, so after inlining the loops over unit
//! dimensions fold away. Computed indices go through `get`, never `[]`: a bad geometry cannot
//! panic, it can only skip work (and geometries are checked at compile time anyway).

use crate::fixed::{requant, sat_i32, scale_sat, shr_round, DELTA_BITS, R_MAX, V_MAX};
use crate::layer::{ChannelParams, Counters, TrainCtx, TrainMode, Weight};

/// `a[i]`, or the default when out of range: kernels never index with `[]` so that no panic
/// path exists even where the optimiser cannot prove an index in range.
#[inline(always)]
fn at<T: Copy + Default>(a: &[T], i: usize) -> T {
    a.get(i).copied().unwrap_or_default()
}

/// Shape of a (possibly degenerate) 2-D convolution, input `[h][w][cin]`, weights
/// `[cout][kh][kw][cin]`, output `[oh][ow][cout]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Vertical zero padding.
    pub ph: usize,
    /// Horizontal zero padding.
    pub pw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geom {
    /// Input elements.
    pub const fn in_len(&self) -> usize {
        self.h * self.w * self.cin
    }
    /// Output elements.
    pub const fn out_len(&self) -> usize {
        self.oh * self.ow * self.cout
    }
    /// Weights per output channel.
    pub const fn fan(&self) -> usize {
        self.kh * self.kw * self.cin
    }
    /// Output positions.
    pub const fn npos(&self) -> usize {
        self.oh * self.ow
    }
    /// Whether this is a fully connected layer (1×1 everything).
    pub const fn is_dense(&self) -> bool {
        self.h == 1 && self.w == 1 && self.kh == 1 && self.kw == 1 && self.oh == 1 && self.ow == 1
    }
    /// Multiply-accumulates of one forward pass (padding included).
    pub const fn macs(&self) -> usize {
        self.npos() * self.cout * self.fan()
    }
    /// Whether the output size follows from the input, kernel, stride and padding.
    pub const fn is_consistent(&self) -> bool {
        self.sh > 0
            && self.sw > 0
            && self.h + 2 * self.ph >= self.kh
            && self.w + 2 * self.pw >= self.kw
            && self.oh == (self.h + 2 * self.ph - self.kh) / self.sh + 1
            && self.ow == (self.w + 2 * self.pw - self.kw) / self.sw + 1
    }

    /// Input row/column read by output position `o` and tap `k`, if inside the image.
    #[inline(always)]
    fn src(o: usize, k: usize, stride: usize, pad: usize, n: usize) -> Option<usize> {
        let i = (o * stride + k).checked_sub(pad)?;
        if i < n {
            Some(i)
        } else {
            None
        }
    }

    /// Input row under output row `oh` and kernel row `kh`, if inside the image.
    #[inline(always)]
    fn in_row(&self, oh: usize, kh: usize) -> Option<usize> {
        Self::src(oh, kh, self.sh, self.ph, self.h)
    }

    /// Input column under output column `ow` and kernel column `kw`, if inside the image.
    #[inline(always)]
    fn in_col(&self, ow: usize, kw: usize) -> Option<usize> {
        Self::src(ow, kw, self.sw, self.pw, self.w)
    }

    /// First input column under output column `ow` when the whole kernel row is inside the
    /// image (then its `kw·cin` inputs are one contiguous run).
    #[inline(always)]
    fn in_cols_full(&self, ow: usize) -> Option<usize> {
        let left = ow * self.sw;
        if left >= self.pw && left - self.pw + self.kw <= self.w {
            Some(left - self.pw)
        } else {
            None
        }
    }

    /// Offset of input pixel `(ih, iw)` (its `cin` channels follow).
    #[inline(always)]
    const fn in_at(&self, ih: usize, iw: usize) -> usize {
        (ih * self.w + iw) * self.cin
    }

    /// Offset of tap `(kh, kw)` in one output channel's weights (its `cin` weights follow).
    #[inline(always)]
    const fn w_at(&self, kh: usize, kw: usize) -> usize {
        (kh * self.kw + kw) * self.cin
    }
}

/// The receptive field of output position `(oh, ow)` of a [`Geom`]: `body` runs for every tap
/// inside the image, in kernel order, with `xo` and `wo` the offsets of its `cin` inputs
/// ([`Geom::in_at`]) and weights ([`Geom::w_at`]); padding taps are skipped (their centred input
/// is 0). The one definition of the walk for [`forward_definition`], [`backward`] and
/// [`conv_row_sums_definition`]. A macro, not a method taking a closure: the closure form
/// changed the register allocation of the inlined callers (a few more instructions per step on
/// the MCU benchmarks); the expansion is the hand-written loop.
macro_rules! for_each_tap {
    ($g:expr, $oh:expr, $ow:expr, |$xo:ident, $wo:ident| $body:block) => {{
        let g: &Geom = $g;
        let (oh, ow) = ($oh, $ow);
        for kh in 0..g.kh {
            let Some(ih) = g.in_row(oh, kh) else {
                continue;
            };
            for kw in 0..g.kw {
                let Some(iw) = g.in_col(ow, kw) else {
                    continue;
                };
                let ($xo, $wo) = (g.in_at(ih, iw), g.w_at(kh, kw));
                $body
            }
        }
    }};
}

/// Forward pass (docs §2). `scratch` receives the centred input `x − z_x` once, so the inner
/// loop is a plain multiply-accumulate shared by every output channel.
#[allow(clippy::too_many_arguments)]
pub fn forward<Wt: Weight, const OUT: usize>(
    g: &Geom,
    w: &[Wt],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    // Dense on int8 weights: the packed (Armv7E-M) or blocked (elsewhere) kernels of
    // `crate::dense`, with the shape taken at run time; the same sums, outputs and counts.
    if g.is_dense() {
        if let Some(w8) = Wt::as_i8(w) {
            let rows = g.cout.min(OUT).min(y.len());
            crate::dense::forward_n::<OUT>(g.cin, rows, w8, q, relu, x, y, ctr, scratch);
            return;
        }
    }
    // Convolutions on int8 weights: one patch per output position, then the same Dense kernels
    // (packed on Armv7E-M, blocked elsewhere) over the `cout` rows.
    if let Some(w8) = Wt::as_i8(w) {
        let packed = crate::dense::PACKED;
        if conv_forward_patches::<OUT>(g, w8, q, relu, x, y, ctr, scratch, packed) {
            return;
        }
    }
    forward_definition::<Wt, OUT>(g, w, q, relu, x, y, ctr, scratch);
}

/// Longest patch (`kh·kw·cin`) of [`conv_forward_patches`]; longer ones take the definition.
pub const PATCH_MAX: usize = 256;

/// Convolution forward by patches: for every output position the `kh·kw·cin` inputs under the
/// kernel are gathered (padding as `z_x`, i.e. a centred 0) and the `cout` rows are one Dense
/// layer over them ([`crate::dense::forward_packed_n`] with `packed`, else
/// [`crate::dense::forward_scalar_n`]). The sums are the same integers as in
/// [`forward_definition`] (padding contributes 0), so outputs and counts are equal. Returns
/// `false` (doing nothing) when the shape does not fit (patch longer than [`PATCH_MAX`], too
/// little scratch, short buffers); the caller then runs the definition.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward_patches<const OUT: usize>(
    g: &Geom,
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
    packed: bool,
) -> bool {
    let fan = g.fan();
    let rows = g.cout;
    if fan == 0
        || fan > PATCH_MAX
        || rows == 0
        || rows > OUT
        || w.len() < rows * fan
        || scratch.len() < fan
        || y.len() < g.out_len()
        || x.len() < g.in_len()
    {
        return false;
    }
    let mut buf = [0i8; PATCH_MAX];
    let Some(patch) = buf.get_mut(..fan) else {
        return false;
    };
    let run = g.kw * g.cin;
    let zx = q.z_x;
    let mut outs = y.chunks_exact_mut(rows);
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            let mut dst = patch.chunks_exact_mut(run.max(1));
            for kh in 0..g.kh {
                let Some(d) = dst.next() else {
                    break;
                };
                let Some(ih) = g.in_row(oh, kh) else {
                    d.fill(zx);
                    continue;
                };
                // The whole kernel row inside the image: one contiguous run of the input.
                if let Some(iw) = g.in_cols_full(ow) {
                    let xo = g.in_at(ih, iw);
                    let src = x.get(xo..xo + run).unwrap_or(&[]);
                    for (a, &b) in d.iter_mut().zip(src) {
                        *a = b;
                    }
                    continue;
                }
                for (kw, dk) in d.chunks_exact_mut(g.cin.max(1)).enumerate() {
                    match g.in_col(ow, kw) {
                        Some(iw) => {
                            let xo = g.in_at(ih, iw);
                            let src = x.get(xo..xo + g.cin).unwrap_or(&[]);
                            for (a, &b) in dk.iter_mut().zip(src) {
                                *a = b;
                            }
                        }
                        None => dk.fill(zx),
                    }
                }
            }
            let Some(out) = outs.next() else {
                return true;
            };
            let p = &*patch;
            if packed {
                crate::dense::forward_packed_n::<OUT>(fan, rows, w, q, relu, p, out, ctr, scratch);
            } else {
                crate::dense::forward_scalar_n::<OUT>(fan, rows, w, q, relu, p, out, ctr, scratch);
            }
        }
    }
    true
}

/// The forward definition for any geometry and weight type (docs §2): per output position and
/// channel, `Σ w·(x − z_x)` over the taps inside the image.
#[allow(clippy::too_many_arguments)]
pub fn forward_definition<Wt: Weight, const OUT: usize>(
    g: &Geom,
    w: &[Wt],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    let zx = q.z_x as i32;
    let xc = match scratch.get_mut(..x.len()) {
        Some(xc) => xc,
        None => return,
    };
    for (c, &v) in xc.iter_mut().zip(x) {
        *c = v as i32 - zx;
    }
    let xc = &*xc;
    let fan = g.fan();
    let mut out = y.iter_mut();
    let mut sat = 0u32;
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            for (c, row) in w.chunks_exact(fan.max(1)).take(OUT).enumerate() {
                let mut sum = 0i32;
                for_each_tap!(g, oh, ow, |xo, wo| {
                    if let (Some(xs), Some(ws)) = (xc.get(xo..xo + g.cin), row.get(wo..wo + g.cin))
                    {
                        sum = sum.wrapping_add(dot(ws, xs));
                    }
                });
                // The products cannot overflow i32 for fan-in ≤ 65793; the bias add saturates
                // and the ReLU clamp is not a saturation (docs §2).
                let v = finish_output(sum, q, c, relu, &mut sat);
                if let Some(o) = out.next() {
                    *o = v;
                }
            }
        }
    }
    ctr.forward_saturations = ctr.forward_saturations.wrapping_add(sat);
}

/// Requantize, clamp and count output channel `c` (docs §2).
#[inline(always)]
pub(crate) fn finish_output<const OUT: usize>(
    sum: i32,
    q: &ChannelParams<OUT>,
    c: usize,
    relu: bool,
    sat: &mut u32,
) -> i8 {
    let acc = at(&q.bias, c).saturating_add(sum);
    // `z_y + requant` saturated to i32 is on the same side of [−128, 127] as the exact sum, so
    // the clamp and the count are those of the exact value.
    let v = requant(acc, at(&q.m, c), at(&q.s, c)).saturating_add(q.z_y as i32);
    let y = v.clamp(-128, 127);
    if relu {
        *sat += (v > 127) as u32;
        y.max(q.z_y as i32) as i8
    } else {
        *sat += (v != y) as u32;
        y as i8
    }
}

#[inline(always)]
fn dot<Wt: Weight>(w: &[Wt], xc: &[i32]) -> i32 {
    let mut acc = 0i32;
    for (a, &b) in w.iter().zip(xc) {
        acc = acc.wrapping_add(a.q() as i32 * b);
    }
    acc
}

/// Error wrt the int8 output → δ (docs §4.1). Returns `(exponent, nonzero)`.
pub fn to_delta<const OUT: usize>(
    q: &ChannelParams<OUT>,
    relu: bool,
    y: &[i8],
    e: &[i32],
    exp: i32,
    d: &mut [i16],
) -> (i32, bool) {
    to_delta_with::<OUT, false>(q, relu, y, e, exp, d)
}

/// [`to_delta`] for layers with several output positions (convolutions): after pooling most
/// errors are 0, and their term is 0 without the 64-bit product (the same result).
pub fn to_delta_positions<const OUT: usize>(
    q: &ChannelParams<OUT>,
    relu: bool,
    y: &[i8],
    e: &[i32],
    exp: i32,
    d: &mut [i16],
) -> (i32, bool) {
    to_delta_with::<OUT, true>(q, relu, y, e, exp, d)
}

/// [`to_delta`]; with `SKIP_ZERO` a zero error gives a zero term without the product (the same
/// value: `shr_round(0, k) = 0`).
#[inline(always)]
fn to_delta_with<const OUT: usize, const SKIP_ZERO: bool>(
    q: &ChannelParams<OUT>,
    relu: bool,
    y: &[i8],
    e: &[i32],
    exp: i32,
    d: &mut [i16],
) -> (i32, bool) {
    let smax = q.max_s() as i32;
    let zy = q.z_y;
    // Channel-major chunks (one per output position) instead of a cycling channel index, and
    // inactive ReLU outputs first: most of them cost a compare.
    let term = |m: i32, s: i8, yj: i8, ej: i32| -> i64 {
        if (relu && yj == zy) || (SKIP_ZERO && ej == 0) {
            0
        } else {
            shr_round(ej as i64 * m as i64, smax - s as i32)
        }
    };
    let mut max_abs = 0u64;
    for (yc, ec) in y.chunks(OUT).zip(e.chunks(OUT)) {
        for (((&yj, &ej), &m), &s) in yc.iter().zip(ec).zip(&q.m).zip(&q.s) {
            max_abs = max_abs.max(term(m, s, yj, ej).unsigned_abs());
        }
    }
    let e0 = exp + smax - 31;
    if max_abs == 0 {
        d.fill(0);
        return (e0, false);
    }
    let r = crate::fixed::normalize_shift(max_abs, DELTA_BITS);
    for ((dc, yc), ec) in d.chunks_mut(OUT).zip(y.chunks(OUT)).zip(e.chunks(OUT)) {
        for ((((dj, &yj), &ej), &m), &s) in dc.iter_mut().zip(yc).zip(ec).zip(&q.m).zip(&q.s) {
            // An inactive ReLU output's term is 0, and so is its δ (no shift needed).
            *dj = if (relu && yj == zy) || (SKIP_ZERO && ej == 0) {
                0
            } else {
                shr_round(term(m, s, yj, ej), r) as i16
            };
        }
    }
    (e0 + r, true)
}

/// Error wrt the input from δ: the transposed convolution (docs §4.2).
pub fn backward<Wt: Weight, const OUT: usize>(g: &Geom, w: &[Wt], d: &[i16], e_in: &mut [i32]) {
    // Dense on int8 weights: the kernels of `crate::dense` with the run-time shape.
    if g.is_dense() {
        if let Some(w8) = Wt::as_i8(w) {
            crate::dense::backward_n(g.cin, g.cout.min(OUT), w8, d, e_in);
            return;
        }
    }
    if let Some(w8) = Wt::as_i8(w) {
        if crate::dense::PACKED {
            backward_pairs::<OUT>(g, w8, d, e_in);
            return;
        }
    }
    backward_definition::<Wt, OUT>(g, w, d, e_in);
}

/// [`backward`] for any geometry and weight type: per position, live row and tap inside the
/// image, `e_in += δ·w` over the tap's `cin` inputs (wrapping sums, docs §4.2).
pub fn backward_definition<Wt: Weight, const OUT: usize>(
    g: &Geom,
    w: &[Wt],
    d: &[i16],
    e_in: &mut [i32],
) {
    e_in.fill(0);
    let fan = g.fan();
    let mut dj = d.iter();
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            for row in w.chunks_exact(fan.max(1)).take(OUT) {
                let dv = match dj.next() {
                    Some(&v) if v != 0 => v as i32,
                    _ => continue,
                };
                for_each_tap!(g, oh, ow, |xo, wo| {
                    if let (Some(es), Some(ws)) =
                        (e_in.get_mut(xo..xo + g.cin), row.get(wo..wo + g.cin))
                    {
                        for (ev, wv) in es.iter_mut().zip(ws) {
                            *ev = ev.wrapping_add(dv * wv.q() as i32);
                        }
                    }
                });
            }
        }
    }
}

/// [`backward_definition`] on int8 weights with the live rows (δ ≠ 0) of each output position
/// taken in pairs, as the dense kernel does ([`crate::dense::back2_rows`]: both δ in one word,
/// `SXTB16` and `SMLAxy` on Armv7E-M, four partial sums loaded and stored once per pair): per
/// kernel row inside the image one contiguous run of `kw·cin` inputs and weights, tap by tap
/// where padding cuts it. An odd live row gets a zero partner (it adds nothing). The wrapping
/// sums do not depend on the order of the terms, so `e_in` is the definition's.
pub fn backward_pairs<const OUT: usize>(g: &Geom, w: &[i8], d: &[i16], e_in: &mut [i32]) {
    e_in.fill(0);
    let fan = g.fan();
    let rows = (w.len() / fan.max(1)).min(OUT);
    let row = |c: usize| w.get(c * fan..(c + 1) * fan).unwrap_or(&[]);
    let mut dj = d.iter();
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            let mut pend: Option<(usize, i32)> = None;
            for c in 0..rows {
                let dv = match dj.next() {
                    Some(&v) if v != 0 => v as i32,
                    _ => continue,
                };
                match pend.take() {
                    None => pend = Some((c, dv)),
                    Some((c0, d0)) => back_pair(g, oh, ow, row(c0), row(c), d0, dv, e_in),
                }
            }
            if let Some((c0, d0)) = pend {
                back_pair(g, oh, ow, row(c0), row(c0), d0, 0, e_in);
            }
        }
    }
}

/// Two rows' contribution at output position `(oh, ow)` to the input error (see
/// [`backward_pairs`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn back_pair(
    g: &Geom,
    oh: usize,
    ow: usize,
    r0: &[i8],
    r1: &[i8],
    d0: i32,
    d1: i32,
    e_in: &mut [i32],
) {
    let run = g.kw * g.cin;
    for kh in 0..g.kh {
        let Some(ih) = g.in_row(oh, kh) else {
            continue;
        };
        if let Some(iw) = g.in_cols_full(ow) {
            let (xo, wo) = (g.in_at(ih, iw), g.w_at(kh, 0));
            if let (Some(es), Some(a), Some(b)) = (
                e_in.get_mut(xo..xo + run),
                r0.get(wo..wo + run),
                r1.get(wo..wo + run),
            ) {
                crate::dense::back2_rows(a, b, d0, d1, es);
            }
            continue;
        }
        for kw in 0..g.kw {
            let Some(iw) = g.in_col(ow, kw) else {
                continue;
            };
            let (xo, wo) = (g.in_at(ih, iw), g.w_at(kh, kw));
            if let (Some(es), Some(a), Some(b)) = (
                e_in.get_mut(xo..xo + g.cin),
                r0.get(wo..wo + g.cin),
                r1.get(wo..wo + g.cin),
            ) {
                crate::dense::back2_rows(a, b, d0, d1, es);
            }
        }
    }
}

/// Stored samples of one batch, flat over the slots.
pub struct Slots<'a> {
    /// Layer inputs, `slots × in_len`.
    pub xs: &'a [i8],
    /// δ, `slots × out_len`.
    pub ds: &'a [i16],
    /// δ exponents.
    pub es: &'a [i32],
    /// Whether each slot's δ is non-zero.
    pub nz: &'a [bool],
}

/// Scratch a parameter layer owns for its update.
pub struct Scratch<'a, const OUT: usize> {
    /// Step factors `r`, `slots × npos`.
    pub rs: &'a mut [i32],
    /// Row importance for partial updates.
    pub imp: &'a mut [u32; OUT],
    /// Selected rows.
    pub sel: &'a mut [bool; OUT],
    /// Per-weight accumulators of one row for convolutions (`fan` long; empty for Dense).
    pub vacc: &'a mut [i64],
}

/// Apply the batch's update to weights and biases (docs §5).
#[allow(clippy::too_many_arguments)]
pub fn update<Wt: Weight, const OUT: usize>(
    g: &Geom,
    w: &mut [Wt],
    q: &mut ChannelParams<OUT>,
    mode: TrainMode,
    s: &Slots<'_>,
    sc: Scratch<'_, OUT>,
    ctx: &mut TrainCtx<'_>,
) {
    if mode == TrainMode::Frozen {
        return;
    }
    let nslots = ctx.slots.min(s.es.len());
    let (in_len, out_len, npos, fan) = (g.in_len(), g.out_len(), g.npos(), g.fan());
    select_rows::<OUT>(s, nslots, npos, out_len, ctx, sc.imp, sc.sel);
    if g.is_dense() && nslots == 1 && mode == TrainMode::All && Wt::STOCHASTIC {
        if let Some(w8) = Wt::as_i8_mut(w) {
            let e = at(s.es, 0);
            crate::dense::update_b1::<OUT>(fan, w8, q, s.xs, s.ds, e, sc.sel, ctx);
            return;
        }
    }
    let zx = q.z_x as i32;
    // Dense, batch 1: centre the stored input once for all rows.
    let mut xc_max = 0u32;
    if npos == 1 && nslots == 1 {
        if let Some(xc) = ctx.scratch.get_mut(..fan) {
            for (c, &v) in xc.iter_mut().zip(s.xs) {
                *c = v as i32 - zx;
                xc_max = xc_max.max(c.unsigned_abs());
            }
        }
    }
    let mut clips = 0u32;
    let mut wsat = 0u32;
    for (c, row) in w.chunks_exact_mut(fan.max(1)).take(OUT).enumerate() {
        if !at(sc.sel, c) {
            continue;
        }
        // One pass over the row's δ: the step factors (all weights trainable) and, per slot,
        // the δ total and step of the bias (round to nearest, §5.3). A zero δ gives r = 0
        // without a clip (`scale_sat(0, ..)`); a zero total a zero bias step (`bias_step(0, ..)`).
        let all = mode == TrainMode::All;
        let mut any = false;
        let mut live = false;
        let mut db = 0i64;
        for b in 0..nslots {
            let mut tot = 0i64;
            for pos in 0..npos {
                let dv = s.ds.get(b * out_len + pos * OUT + c).copied().unwrap_or(0) as i64;
                let mut r = 0i64;
                if dv != 0 {
                    live = true;
                    tot += dv;
                    if all {
                        let big_r = ctx.lr_m as i64 * at(&q.um, c) as i64 * dv;
                        let e = ctx.lr_e + at(&q.ue, c) as i32 + at(s.es, b) + 16;
                        let (rv, clip) = scale_sat(big_r, e, R_MAX);
                        clips += clip as u32;
                        any |= rv != 0;
                        r = rv;
                    }
                }
                if all {
                    if let Some(slot) = sc.rs.get_mut(b * npos + pos) {
                        *slot = r as i32;
                    }
                }
            }
            if tot != 0 {
                let t = ctx.lr_m as i64 * at(&q.ubm, c) as i64 * tot;
                let e = ctx.lr_e + at(&q.ube, c) as i32 + at(s.es, b);
                let (d, clip) = bias_step(t, e);
                clips += clip as u32;
                db += d;
            }
        }
        // A row whose δ is zero in every slot and position changes nothing (weights skipped,
        // §5.4; bias step and clip counts 0).
        if !live {
            continue;
        }
        if all && any {
            if npos == 1 && nslots == 1 {
                // Dense, batch 1: the hot path; |r·xc| < 2^28 fits i32. When |r|·max|xc|
                // cannot exceed V_MAX the clamp is a no-op and is left out of the loop.
                let r = sc.rs.first().copied().unwrap_or(0);
                let xc = ctx.scratch.get(..fan).unwrap_or(&[]);
                // A local generator stays in a register (through `ctx` it is stored per weight).
                let mut rng = *ctx.rng;
                let mut cut = 0i32;
                let no_clamp = (r.unsigned_abs() as i64) * (xc_max as i64) <= V_MAX;
                if no_clamp && Wt::STOCHASTIC && Wt::as_i8(row).is_some() {
                    if let Some(row8) = Wt::as_i8_mut(row) {
                        cut = crate::dense::sr_row(row8, xc, r, &mut rng) as i32;
                    }
                } else if no_clamp {
                    for (wv, &xv) in row.iter_mut().zip(xc) {
                        cut |= wv.step(r * xv, &mut rng);
                    }
                } else {
                    for (wv, &xv) in row.iter_mut().zip(xc) {
                        let v = r * xv;
                        let vc = v.clamp(-(V_MAX as i32), V_MAX as i32);
                        clips += (vc != v) as u32;
                        cut |= wv.step(vc, &mut rng);
                    }
                }
                wsat += (cut != 0) as u32;
                *ctx.rng = rng;
            } else if sc.vacc.len() == fan {
                let (a, b) = update_row_conv(g, row, zx, s, nslots, sc.rs, sc.vacc, ctx);
                clips += a;
                wsat += b;
            } else {
                let (a, b) = update_row_general(g, row, zx, s, nslots, sc.rs, in_len, ctx);
                clips += a;
                wsat += b;
            }
        }
        if let Some(bias) = q.bias.get_mut(c) {
            *bias = sat_i32(*bias as i64 - db);
        }
    }
    ctx.ctr.update_clips = ctx.ctr.update_clips.wrapping_add(clips);
    ctx.ctr.weight_saturations = ctx.ctr.weight_saturations.wrapping_add(wsat);
}

/// `clamp(t·2^e)` to the i32 range exactly for `e ≥ 0`, `sat_i32(shr_round(t, −e))` otherwise.
pub(crate) fn bias_step(t: i64, e: i32) -> (i64, bool) {
    if e >= 0 {
        let k = e as u32;
        let hi = i32::MAX as i64;
        let lo = i32::MIN as i64;
        if k >= 32 {
            return match t {
                0 => (0, false),
                t if t > 0 => (hi, true),
                _ => (lo, true),
            };
        }
        if t > (hi >> k) {
            (hi, true)
        } else if t < (lo >> k) {
            (lo, true)
        } else {
            (t << k, false)
        }
    } else {
        let v = shr_round(t, -e);
        let c = sat_i32(v) as i64;
        (c, c != v)
    }
}

/// Convolution row update: accumulate `Σ r·xc` per weight position-outer (contiguous runs of
/// `cin` inputs, one 32×32→64 multiply-accumulate each), then step every weight once in memory
/// order. Integer sums do not depend on order, so this equals the per-weight definition.
#[allow(clippy::too_many_arguments)]
fn update_row_conv<Wt: Weight>(
    g: &Geom,
    row: &mut [Wt],
    zx: i32,
    s: &Slots<'_>,
    nslots: usize,
    rs: &[i32],
    vacc: &mut [i64],
    ctx: &mut TrainCtx<'_>,
) -> (u32, u32) {
    if !conv_row_sums(g, zx, s.xs, nslots, rs, vacc, ctx.scratch) {
        conv_row_sums_definition(g, zx, s.xs, nslots, rs, vacc);
    }
    let mut clips = 0u32;
    let mut cut = 0i32;
    let mut rng = *ctx.rng;
    for (wv, &v) in row.iter_mut().zip(vacc.iter()) {
        let vc = v.clamp(-V_MAX, V_MAX);
        clips += (vc != v) as u32;
        cut |= wv.step(vc as i32, &mut rng);
    }
    *ctx.rng = rng;
    (clips, (cut != 0) as u32)
}

/// `vacc[k] = Σ r·(x − z_x)` over every slot and output position of one row, the definition:
/// per position, per tap inside the image, 64-bit products.
pub fn conv_row_sums_definition(
    g: &Geom,
    zx: i32,
    xs_all: &[i8],
    nslots: usize,
    rs: &[i32],
    vacc: &mut [i64],
) {
    let (in_len, npos) = (g.in_len(), g.npos());
    vacc.fill(0);
    for b in 0..nslots {
        let xs = xs_all.get(b * in_len..(b + 1) * in_len).unwrap_or(&[]);
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let r = rs.get(b * npos + oh * g.ow + ow).copied().unwrap_or(0) as i64;
                if r == 0 {
                    continue;
                }
                for_each_tap!(g, oh, ow, |xo, wo| {
                    if let (Some(xr), Some(ar)) =
                        (xs.get(xo..xo + g.cin), vacc.get_mut(wo..wo + g.cin))
                    {
                        for (a, &xv) in ar.iter_mut().zip(xr) {
                            *a += r * (xv as i32 - zx) as i64;
                        }
                    }
                });
            }
        }
    }
}

/// [`conv_row_sums_definition`] for unpadded convolutions with 32-bit sums: the positions with
/// `r ≠ 0` are listed once in `list` (pairs `r`, input offset), then every run of `kw·cin`
/// weights (contiguous in weights and input) is summed in blocks whose accumulators stay in
/// registers over the list, as `Σ r·x − z_x·Σ r`. With `Σ|r| ≤ 2^24` every `Σ r·x` fits i32
/// (`|x| ≤ 128`), so the sums are the exact integers. Returns `false` (sums not computed) when
/// the geometry is padded, `list` is shorter than two words per position or `Σ|r|` is larger.
pub fn conv_row_sums(
    g: &Geom,
    zx: i32,
    xs: &[i8],
    nslots: usize,
    rs: &[i32],
    vacc: &mut [i64],
    list: &mut [i32],
) -> bool {
    conv_row_sums_with(g, zx, xs, nslots, rs, vacc, list, crate::dense::PACKED)
}

/// [`conv_row_sums`] with the paired path chosen by `pairs` (the target's default is
/// [`crate::dense::PACKED`]; the host tests run both). With `pairs` and every live r a signed
/// 16-bit value (the usual case: the largest in ten MNIST CNN benchmark steps is 5122), the
/// live positions go two by two with `r₁`, `r₂` packed in one word, in blocks of 4 (or 3)
/// weights read as one word per position: on Armv7E-M a loop in assembly (`SXTB16`, then `SMLABB`/
/// `SMLATB` with `r₁` and `SMLABT`/`SMLATT` with `r₂`), elsewhere the same sums in Rust
/// (`SMLAD` on the two inputs put side by side). They are the same wrapping 32-bit sums as
/// the one-by-one path, so the results are bit for bit the same.
#[allow(clippy::too_many_arguments)]
pub fn conv_row_sums_with(
    g: &Geom,
    zx: i32,
    xs: &[i8],
    nslots: usize,
    rs: &[i32],
    vacc: &mut [i64],
    list: &mut [i32],
    pairs: bool,
) -> bool {
    let (in_len, npos) = (g.in_len(), g.npos());
    if g.ph != 0 || g.pw != 0 || vacc.len() != g.fan() || xs.len() < nslots * in_len {
        return false;
    }
    let Some(list) = list.get_mut(..2 * nslots * npos) else {
        return false;
    };
    let Some(rs) = rs.get(..nslots * npos) else {
        return false;
    };
    // One pass over the step factors: the live entries, Σ|r| (saturating: only `≤ 2^24`
    // matters), Σ r (wrapping: exact whenever Σ|r| ≤ 2^24) and the OR of `r ^ (r >> 31)`,
    // below 2^15 exactly when every r fits a signed 16-bit lane.
    let mut n = 0usize;
    let mut sum_abs = 0u32;
    let mut rsum = 0i32;
    let mut mag = 0i32;
    {
        let mut slots = list.chunks_exact_mut(2);
        let step = g.sw * g.cin;
        for (b, rsb) in rs.chunks_exact(npos.max(1)).enumerate() {
            for (oh, rrow) in rsb.chunks_exact(g.ow.max(1)).enumerate() {
                let base0 = b * in_len + g.in_at(oh * g.sh, 0);
                for (ow, &r) in rrow.iter().enumerate() {
                    if r == 0 {
                        continue;
                    }
                    if let Some([lr, lb]) = slots.next() {
                        *lr = r;
                        *lb = (base0 + ow * step) as i32;
                        n += 1;
                    }
                    sum_abs = sum_abs.saturating_add(r.unsigned_abs());
                    rsum = rsum.wrapping_add(r);
                    mag |= r ^ (r >> 31);
                }
            }
        }
    }
    if sum_abs > 1 << 24 {
        return false;
    }
    let run = g.kw * g.cin;
    let corr = zx as i64 * rsum as i64;
    if pairs && mag < 1 << 15 && n >= 2 {
        if let Some(live) = pair_up(list, n) {
            for (kh, acc) in vacc.chunks_exact_mut(run.max(1)).enumerate() {
                let ko = g.in_at(kh, 0);
                let mut j = 0usize;
                while j < run {
                    let left = run - j;
                    let Some(a) = acc.get_mut(j..) else {
                        break;
                    };
                    let o = ko + j;
                    // Blocks of 4 (not 8): the Thumb loop of [`pair_loop`] keeps its
                    // accumulators, both bases and the input pointer in registers.
                    j += if left >= 4 {
                        block_pairs::<4>(xs, o, &live, corr, a)
                    } else if left == 3 {
                        block_pairs::<3>(xs, o, &live, corr, a)
                    } else if left == 2 {
                        block_pairs::<2>(xs, o, &live, corr, a)
                    } else {
                        block_pairs::<1>(xs, o, &live, corr, a)
                    };
                }
            }
            return true;
        }
    }
    let live = list.get(..2 * n).unwrap_or(&[]).as_chunks::<2>().0;
    for (kh, acc) in vacc.chunks_exact_mut(run.max(1)).enumerate() {
        let ko = g.in_at(kh, 0);
        let mut j = 0usize;
        while j < run {
            let left = run - j;
            let Some(a) = acc.get_mut(j..) else {
                break;
            };
            let o = ko + j;
            j += if left >= 8 {
                block_sums::<8>(xs, o, live, corr, a)
            } else if left >= 4 {
                block_sums::<4>(xs, o, live, corr, a)
            } else if left == 3 {
                block_sums::<3>(xs, o, live, corr, a)
            } else if left == 2 {
                block_sums::<2>(xs, o, live, corr, a)
            } else {
                block_sums::<1>(xs, o, live, corr, a)
            };
        }
    }
    true
}

/// `acc[i] = Σ r·x[base + o + i] − corr` for `i < N` over the live list; returns `N`.
#[inline(always)]
fn block_sums<const N: usize>(
    xs: &[i8],
    o: usize,
    live: &[[i32; 2]],
    corr: i64,
    acc: &mut [i64],
) -> usize {
    let mut a = [0i32; N];
    let xs = xs.get(o..).unwrap_or(&[]);
    for &[r, base] in live {
        if let Some(x) = xs.get(base as usize..).and_then(|t| t.first_chunk::<N>()) {
            for (ai, &xv) in a.iter_mut().zip(x) {
                *ai = ai.wrapping_add(r.wrapping_mul(xv as i32));
            }
        }
    }
    for (v, &ai) in acc.iter_mut().zip(&a) {
        *v = ai as i64 - corr;
    }
    N
}

/// The live entries of [`conv_row_sums_with`] two by two, for 16-bit `r`: the quads
/// `(r₁, base₁, r₁ | r₂ << 16, base₂)` (the live list in place, the packed pair over `r₂`; an
/// odd last entry gets `r₂ = 0` at its own base), `maxb` the largest base, and a quad with a
/// zero packed word after the last one, the end mark of the Thumb loop (a packed word is
/// never 0: its low half is a live `r ≠ 0`).
struct Pairs<'a> {
    quads: &'a [[i32; 4]],
    maxb: usize,
}

/// Pair the `n ≥ 1` live entries at the front of `list` in place ([`Pairs`]); `None` when
/// `list` has no room for the odd entry's partner and the end mark.
fn pair_up(list: &mut [i32], n: usize) -> Option<Pairs<'_>> {
    let np = n.div_ceil(2);
    // The end mark is a whole quad (the Thumb loop loads four words before testing).
    if list.len() < 4 * np + 4 {
        return None;
    }
    if n % 2 == 1 {
        let b = list.get(2 * n - 1).copied().unwrap_or(0);
        if let Some([r2, b2]) = list.get_mut(2 * n..2 * n + 2) {
            *r2 = 0;
            *b2 = b;
        }
    }
    if let Some(z) = list.get_mut(4 * np + 2) {
        *z = 0;
    }
    let (quads, _) = list.get_mut(..4 * np)?.as_chunks_mut::<4>();
    let mut maxb = 0usize;
    for q in quads.iter_mut() {
        q[2] = crate::dsp::pkhbt(q[0] as u32, q[2] as u32) as i32;
        // Bases are increasing, but the check below must not rely on it.
        maxb = maxb.max(q[1] as u32 as usize).max(q[3] as u32 as usize);
    }
    Some(Pairs { quads, maxb })
}

/// [`block_sums`] over [`Pairs`]: `acc[i] = Σ r₁·x[base₁ + o + i] + r₂·x[base₂ + o + i] −
/// corr` for `i < N ≤ 4`, from one word per position. Word loads may not run past `xs`: when
/// `maxb + o + 4` is beyond it, the word starts `4 − N` bytes earlier (ending at the block's
/// last input); when that is before `xs`, the bytes are read one by one.
#[inline(always)]
fn block_pairs<const N: usize>(
    xs: &[i8],
    o: usize,
    live: &Pairs<'_>,
    corr: i64,
    acc: &mut [i64],
) -> usize {
    let mut a = [0i32; N];
    let s = 4 - N;
    if live.maxb + o + 4 <= xs.len() {
        pair_loop::<N>(xs, o, 0, live, &mut a);
    } else if o >= s && live.maxb + o + N <= xs.len() {
        pair_loop::<N>(xs, o - s, s, live, &mut a);
    } else {
        for &[r1, p, rr, q] in live.quads {
            let r2 = rr >> 16;
            for (i, ai) in a.iter_mut().enumerate() {
                let x = |b: i32| xs.get(b as usize + o + i).copied().unwrap_or(0) as i32;
                *ai = ai
                    .wrapping_add(r1.wrapping_mul(x(p)))
                    .wrapping_add(r2.wrapping_mul(x(q)));
            }
        }
    }
    for (v, &ai) in acc.iter_mut().zip(&a) {
        *v = ai as i64 - corr;
    }
    N
}

/// One position of the Thumb pair loop: the word at `xb + base`, its bytes as 16-bit lanes
/// (`SXTB16`), three or four `SMLAxy` with `r₁` (`B`) or `r₂` (`T`) of the packed word in r2.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! pair_pos {
    (4, $base:literal, $y:literal) => {
        concat!(
            "ldr {t}, [{xb}, ",
            $base,
            "]\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlab",
            $y,
            " {a0}, {u}, r2, {a0}\n",
            "smlat",
            $y,
            " {a2}, {u}, r2, {a2}\n",
            "smlab",
            $y,
            " {a1}, {t}, r2, {a1}\n",
            "smlat",
            $y,
            " {a3}, {t}, r2, {a3}\n",
        )
    };
    (3, $base:literal, $y:literal) => {
        concat!(
            "ldr {t}, [{xb}, ",
            $base,
            "]\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlab",
            $y,
            " {a0}, {u}, r2, {a0}\n",
            "smlab",
            $y,
            " {a1}, {t}, r2, {a1}\n",
            "smlat",
            $y,
            " {a2}, {u}, r2, {a2}\n",
            "@ {a3} unused\n",
        )
    };
    // Three inputs in bytes 1..3 of the word (the last block of an input).
    (31, $base:literal, $y:literal) => {
        concat!(
            "ldr {t}, [{xb}, ",
            $base,
            "]\n",
            "sxtb16 {u}, {t}, ror #16\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlab",
            $y,
            " {a0}, {t}, r2, {a0}\n",
            "smlab",
            $y,
            " {a1}, {u}, r2, {a1}\n",
            "smlat",
            $y,
            " {a2}, {t}, r2, {a2}\n",
            "@ {a3} unused\n",
        )
    };
}

/// The Thumb pair loop over the quads from `cur` up to the end mark: per quad one `LDM`, the
/// end test and 14 (four inputs) or 12 (three) instructions for 8 or 6 multiply-accumulates.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! pair_asm {
    ($kind:tt, $xb:expr, $cur:expr, $a:expr) => {{
        let [mut a0, mut a1, mut a2, mut a3] = $a;
        // SAFETY: reads the quads from `cur` to the end mark (inside the list, written by
        // `pair_up`) and, per quad, one word at `xb + base` for both bases, inside `xs` (the
        // caller's `maxb` check); registers only otherwise. SMLAxy wrap like the Rust sums
        // (the Q flag they may set is read by nothing).
        unsafe {
            core::arch::asm!(
                "2:",
                "ldm {cur}!, {{r0, r1, r2, r3}}",
                "cbz r2, 3f",
                pair_pos!($kind, "r1", "b"),
                pair_pos!($kind, "r3", "t"),
                "b 2b",
                "3:",
                cur = inout(reg) $cur => _,
                xb = in(reg) $xb,
                t = out(reg) _,
                u = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(nostack, readonly),
            );
        }
        [a0, a1, a2, a3]
    }};
}

/// The inner loop of [`block_pairs`]: words from `o` (every base `≤ maxb`, checked by the
/// caller so that `base + o + 4 ≤ xs.len()`), byte `t` of them feeding `a[t − s]`. On
/// Armv7E-M blocks of 4 and 3 run in assembly ([`pair_asm`]); this Rust loop (`SMLAD` on
/// the two positions side by side) is the same sums everywhere else.
#[inline(always)]
fn pair_loop<const N: usize>(xs: &[i8], o: usize, s: usize, live: &Pairs<'_>, a: &mut [i32; N]) {
    let x0 = xs.as_ptr().wrapping_add(o);
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    if N == 4 || N == 3 {
        let cur = live.quads.as_ptr();
        let acc = [0i32; 4];
        let acc = match (N, s) {
            (4, _) => pair_asm!(4, x0, cur, acc),
            (_, 0) => pair_asm!(3, x0, cur, acc),
            _ => pair_asm!(31, x0, cur, acc),
        };
        for (ai, &v) in a.iter_mut().zip(&acc) {
            *ai = v;
        }
        return;
    }
    use crate::dsp::{pkhbt, pkhtb, smlad, sxtb16, sxtb16_ror8};
    for &[_, p, rr, q] in live.quads {
        // SAFETY: `p, q ≤ maxb` and `maxb + o + 4 ≤ xs.len()` (the caller's check), so both
        // 4-byte reads are inside `xs`; unaligned reads are allowed.
        let (wa, wb) = unsafe {
            (
                x0.add(p as u32 as usize).cast::<u32>().read_unaligned(),
                x0.add(q as u32 as usize).cast::<u32>().read_unaligned(),
            )
        };
        let (ae, ao, be, bo) = (sxtb16(wa), sxtb16_ror8(wa), sxtb16(wb), sxtb16_ror8(wb));
        // Byte t of the words, both positions side by side: (x₁[t], x₂[t]).
        let lanes = [pkhbt(ae, be), pkhbt(ao, bo), pkhtb(be, ae), pkhtb(bo, ao)];
        for (t, &xl) in lanes.iter().enumerate() {
            if t >= s {
                if let Some(ai) = a.get_mut(t - s) {
                    *ai = smlad(xl, rr as u32, *ai);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn update_row_general<Wt: Weight>(
    g: &Geom,
    row: &mut [Wt],
    zx: i32,
    s: &Slots<'_>,
    nslots: usize,
    rs: &[i32],
    in_len: usize,
    ctx: &mut TrainCtx<'_>,
) -> (u32, u32) {
    let npos = g.npos();
    let mut clips = 0u32;
    let mut cut = 0i32;
    let mut wi = row.iter_mut();
    for kh in 0..g.kh {
        for kw in 0..g.kw {
            for ci in 0..g.cin {
                let Some(wv) = wi.next() else {
                    return (clips, (cut != 0) as u32);
                };
                let mut v = 0i64;
                for b in 0..nslots {
                    let xs = s.xs.get(b * in_len..(b + 1) * in_len).unwrap_or(&[]);
                    for oh in 0..g.oh {
                        let Some(ih) = g.in_row(oh, kh) else {
                            continue;
                        };
                        for ow in 0..g.ow {
                            let r = rs.get(b * npos + oh * g.ow + ow).copied().unwrap_or(0);
                            if r == 0 {
                                continue;
                            }
                            let Some(iw) = g.in_col(ow, kw) else {
                                continue;
                            };
                            if let Some(&xv) = xs.get(g.in_at(ih, iw) + ci) {
                                v += r as i64 * (xv as i32 - zx) as i64;
                            }
                        }
                    }
                }
                let vc = v.clamp(-V_MAX, V_MAX);
                clips += (vc != v) as u32;
                cut |= wv.step(vc as i32, ctx.rng);
            }
        }
    }
    (clips, (cut != 0) as u32)
}

/// Choose the rows to update (docs §5.6); without partial updates every row is selected.
fn select_rows<const OUT: usize>(
    s: &Slots<'_>,
    nslots: usize,
    npos: usize,
    out_len: usize,
    ctx: &TrainCtx<'_>,
    imp: &mut [u32; OUT],
    sel: &mut [bool; OUT],
) {
    let Some(kmin) = ctx.topk_min else {
        sel.fill(true);
        return;
    };
    sel.fill(false);
    let emax = s.es.iter().take(nslots).copied().max().unwrap_or(0);
    for (c, ic) in imp.iter_mut().enumerate() {
        let mut total = 0u64;
        for b in 0..nslots {
            let mut sum = 0u64;
            for pos in 0..npos {
                let dv = s.ds.get(b * out_len + pos * OUT + c).copied().unwrap_or(0);
                sum += dv.unsigned_abs() as u64;
            }
            let sh = (emax - s.es.get(b).copied().unwrap_or(emax)) as u32;
            total += if sh >= 64 { 0 } else { sum >> sh };
        }
        *ic = total.min(u32::MAX as u64) as u32;
    }
    let kmin = (kmin as usize).min(OUT);
    let loss = ctx.loss_avg_q15.clamp(0, 32768) as usize;
    let k = kmin + (((OUT - kmin) * loss) >> 15);
    for _ in 0..k {
        // Largest importance among unselected rows; ties keep the lower index.
        let mut best: Option<(usize, u32)> = None;
        for (c, (&taken, &v)) in sel.iter().zip(imp.iter()).enumerate() {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params<const OUT: usize>(seed: u32, zx: i8, zy: i8) -> ChannelParams<OUT> {
        let mut q = ChannelParams::<OUT>::new();
        let mut s = seed;
        for c in 0..OUT {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            q.m[c] = (1 << 30) + (s >> 2) as i32 % (1 << 30);
            q.s[c] = -((s >> 27) as i8) - 4;
            q.bias[c] = (s as i32) >> 16;
        }
        q.z_x = zx;
        q.z_y = zy;
        q
    }

    /// Geometries with padding, strides, and unit and non-unit dimensions.
    fn geom() -> impl Strategy<Value = Geom> {
        (
            1usize..9,
            1usize..9,
            1usize..6,
            1usize..9,
            1usize..4,
            1usize..4,
            1usize..3,
            1usize..3,
        )
            .prop_flat_map(|(h, w, cin, cout, kh, kw, sh, sw)| {
                (0..kh.min(2), 0..kw.min(2)).prop_filter_map(
                    "kernel larger than image",
                    move |(ph, pw)| {
                        if h + 2 * ph < kh || w + 2 * pw < kw {
                            return None;
                        }
                        let oh = (h + 2 * ph - kh) / sh + 1;
                        let ow = (w + 2 * pw - kw) / sw + 1;
                        Some(Geom {
                            h,
                            w,
                            cin,
                            cout,
                            kh,
                            kw,
                            sh,
                            sw,
                            ph,
                            pw,
                            oh,
                            ow,
                        })
                    },
                )
            })
    }

    proptest! {
        #[test]
        fn conv_forward_packed_and_scalar_equal_the_definition(
            g in geom(),
            data in proptest::collection::vec(any::<i8>(), 2 * 8 * 8 * 8 * 5),
            seed in any::<u32>(),
            relu in any::<bool>(),
        ) {
            const OUT: usize = 8;
            prop_assume!(g.is_consistent());
            let (x, w) = data.split_at(g.in_len());
            let w = &w[..g.cout * g.fan()];
            let q = params::<OUT>(seed, x[0], (seed >> 8) as i8);
            let mut want = vec![0i8; g.out_len()];
            let mut ctr0 = Counters::default();
            let mut scratch = vec![0i32; g.in_len().max(g.fan())];
            forward_definition::<i8, OUT>(&g, w, &q, relu, x, &mut want, &mut ctr0, &mut scratch);
            for packed in [false, true] {
                let mut y = vec![0i8; g.out_len()];
                let mut ctr = Counters::default();
                prop_assert!(conv_forward_patches::<OUT>(
                    &g, w, &q, relu, x, &mut y, &mut ctr, &mut scratch, packed
                ));
                prop_assert_eq!(&y, &want, "packed={}", packed);
                prop_assert_eq!(ctr.forward_saturations, ctr0.forward_saturations);
            }
            let mut y = vec![0i8; g.out_len()];
            let mut ctr = Counters::default();
            forward::<i8, OUT>(&g, w, &q, relu, x, &mut y, &mut ctr, &mut scratch);
            prop_assert_eq!(&y, &want);
        }

        #[test]
        fn conv_backward_pairs_equal_the_definition(
            g in geom(),
            data in proptest::collection::vec(any::<i8>(), 8 * 8 * 5 * 9),
            // Up to 10 × 10 positions (8 × 8 with padding 1) of up to 8 channels.
            dsel in proptest::collection::vec((0u8..3, -(1i16 << 12)..=(1 << 12)), 10 * 10 * 8),
        ) {
            const OUT: usize = 8;
            prop_assume!(g.is_consistent());
            let w = &data[..g.cout * g.fan()];
            // Mostly zero δ (as after pooling), so live rows come in odd and even counts.
            let d: Vec<i16> = dsel[..g.npos() * g.cout]
                .iter()
                .map(|&(k, v)| if k == 0 { v } else { 0 })
                .collect();
            let mut want = vec![7i32; g.in_len()];
            backward_definition::<i8, OUT>(&g, w, &d, &mut want);
            let mut got = vec![-3i32; g.in_len()];
            backward_pairs::<OUT>(&g, w, &d, &mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn conv_row_sums_equal_the_definition(
            g in geom(),
            nslots in 1usize..3,
            data in proptest::collection::vec(any::<i8>(), 2 * 8 * 8 * 5),
            rsel in proptest::collection::vec((0u8..4, -(1i32 << 20)..=(1 << 20)), 2 * 10 * 10),
            zx in any::<i8>(),
        ) {
            prop_assume!(g.is_consistent());
            let xs = &data[..nslots * g.in_len()];
            // Mostly zero or small step factors, some at the limit (then Σ|r| may exceed 2^24).
            let rs: Vec<i32> = rsel[..nslots * g.npos()]
                .iter()
                .map(|&(k, r)| match k { 0 | 1 => 0, 2 => r >> 12, _ => r })
                .collect();
            let mut want = vec![0i64; g.fan()];
            conv_row_sums_definition(&g, zx as i32, xs, nslots, &rs, &mut want);
            let mut got = vec![0i64; g.fan()];
            let mut list = vec![0i32; 2 * nslots * g.npos()];
            let fast = conv_row_sums(&g, zx as i32, xs, nslots, &rs, &mut got, &mut list);
            let sum_abs: u64 = rs.iter().map(|r| r.unsigned_abs() as u64).sum();
            prop_assert_eq!(fast, g.ph == 0 && g.pw == 0 && sum_abs <= 1 << 24);
            if fast {
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn conv_row_sums_pairs_equal_the_definition(
            g in geom(),
            nslots in 1usize..3,
            data in proptest::collection::vec(any::<i8>(), 2 * 8 * 8 * 5),
            rsel in proptest::collection::vec((0u8..8, any::<i16>()), 2 * 10 * 10),
            zx in any::<i8>(),
        ) {
            prop_assume!(g.is_consistent());
            let xs = &data[..nslots * g.in_len()];
            // 16-bit step factors (the paired path), zeros, the lane limits and, rarely, one
            // that does not fit (then the one-by-one path).
            let rs: Vec<i32> = rsel[..nslots * g.npos()]
                .iter()
                .map(|&(k, r)| match k {
                    0..=2 => 0,
                    3 => i16::MIN as i32,
                    4 => i16::MAX as i32,
                    5 => (r >> 8) as i32,
                    6 if r % 64 == 0 => 1 << 16,
                    _ => r as i32,
                })
                .collect();
            let mut want = vec![0i64; g.fan()];
            conv_row_sums_definition(&g, zx as i32, xs, nslots, &rs, &mut want);
            for pairs in [false, true] {
                let mut got = vec![0i64; g.fan()];
                let mut list = vec![0i32; 2 * nslots * g.npos()];
                let fast = conv_row_sums_with(
                    &g, zx as i32, xs, nslots, &rs, &mut got, &mut list, pairs,
                );
                prop_assert_eq!(fast, g.ph == 0 && g.pw == 0);
                if fast {
                    prop_assert_eq!(&got, &want);
                }
            }
        }
    }
}
