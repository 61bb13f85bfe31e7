//! Concrete layers. Shapes are const generics; each type checks its geometry at compile time and
//! owns every buffer its training needs (weights, per-channel parameters, the batch stash), so a
//! model's RAM is `size_of` of its type.
//!
//! Every layer takes the batch size `B` and the weight storage `Wt` as its last two parameters;
//! the `odt_model!` macro appends them, so model definitions name only the shapes.

use core::marker::PhantomData;

use crate::blob::{BlobError, Reader, Writer};
use crate::fixed::{normalize_shift, shr_round, Lcg, ERR_BITS};
use crate::kernels::{self, Geom, Scratch, Slots};
use crate::layer::{
    ChannelParams, Counters, Kind, Layer, LayerDesc, LayerShape, TrainCtx, TrainMode, Weight,
};

const fn dims<const N: usize>(d: [usize; N]) -> [u16; 10] {
    let mut out = [0u16; 10];
    let mut i = 0;
    while i < N {
        out[i] = d[i] as u16;
        i += 1;
    }
    out
}

/// Element-wise copy of the common prefix (never panics on a length mismatch).
fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s;
    }
}

/// Blob bytes of a parameter section (FORMAT.md), padded to 4.
const fn section_bytes(out: usize, fan: usize) -> usize {
    let n = 4 + out * 16 + out * fan;
    (n + 3) & !3
}

/// Implements `Layer` for a parameter layer whose fields follow the common layout.
macro_rules! impl_param_layer {
    ([$($g:tt)*] $ty:ty, $out:ident, $relu:ident) => {
        impl<$($g)*> Layer for $ty {
            fn desc(&self) -> LayerDesc {
                Self::DESC
            }
            fn in_len(&self) -> usize {
                Self::GEOM.in_len()
            }
            fn out_len(&self) -> usize {
                Self::GEOM.out_len()
            }
            fn has_params(&self) -> bool {
                true
            }
            fn out_zp(&self, _z_in: i8) -> i8 {
                self.q.z_y
            }
            fn forward(&self, x: &[i8], _z_x: i8, y: &mut [i8], ctr: &mut Counters, scratch: &mut [i32]) {
                self.fwd(x, y, ctr, scratch);
            }
            fn stash(&mut self, slot: usize, x: &[i8], y: &[i8], e_out: &[i32], exp: i32) -> bool {
                if slot >= B {
                    return false;
                }
                let n_in = Self::GEOM.in_len();
                let n_out = Self::GEOM.out_len();
                if let Some(xs) = self.xs.flatten_all_mut().chunks_exact_mut(n_in.max(1)).nth(slot) {
                    copy(xs, x);
                }
                let (e, nz) = match self.ds.flatten_all_mut().chunks_exact_mut(n_out.max(1)).nth(slot) {
                    Some(d) if Self::GEOM.npos() > 1 => {
                        kernels::to_delta_positions::<$out>(&self.q, $relu, y, e_out, exp, d)
                    }
                    Some(d) => kernels::to_delta::<$out>(&self.q, $relu, y, e_out, exp, d),
                    None => (exp, false),
                };
                if let (Some(es), Some(nzs)) = (self.es.get_mut(slot), self.nz.get_mut(slot)) {
                    *es = e;
                    *nzs = nz;
                }
                nz
            }
            fn backward_delta(&self, slot: usize, e_in: &mut [i32]) -> i32 {
                let n_out = Self::GEOM.out_len();
                if let Some(d) = self.ds_flat().chunks_exact(n_out.max(1)).nth(slot) {
                    self.bwd(d, e_in);
                }
                self.es.get(slot).copied().unwrap_or(0)
            }
            fn update(&mut self, ctx: &mut TrainCtx<'_>) {
                let g = Self::GEOM;
                let Self { w, q, mode, xs, ds, es, nz, rs, imp, sel, vacc } = self;
                let slots = Slots {
                    xs: xs.flatten_all(),
                    ds: ds.flatten_all(),
                    es,
                    nz,
                };
                let sc = Scratch { rs: rs.flatten_all_mut(), imp, sel, vacc: vacc.flatten_all_mut() };
                kernels::update::<Wt, $out>(&g, w.flatten_all_mut(), q, *mode, &slots, sc, ctx);
            }
            fn set_mode(&mut self, mode: TrainMode) {
                self.mode = mode;
            }
            fn mode(&self) -> TrainMode {
                self.mode
            }
            fn read_params(&mut self, r: &mut Reader<'_>, layer: u8, dry: bool) -> Result<(), BlobError> {
                r.align4()?;
                self.q.read(r, layer, dry)?;
                let w = self.w.flatten_all_mut();
                for wv in w.iter_mut() {
                    let q = r.i8()?;
                    if !dry {
                        *wv = Wt::from_q(q);
                    }
                }
                r.align4()
            }
            fn write_params(&self, wr: &mut Writer<'_>) -> Result<(), BlobError> {
                wr.align4()?;
                self.q.write(wr)?;
                for wv in self.w_flat() {
                    wr.i8(wv.q())?;
                }
                wr.align4()
            }
            fn init_synthetic(&mut self, rng: &mut Lcg) {
                self.q.init_synthetic(Self::GEOM.fan(), rng);
                for wv in self.w.flatten_all_mut() {
                    *wv = Wt::from_q(((rng.next16() >> 9) - 64) as i8);
                }
            }
            fn visit_state(&self, f: &mut dyn FnMut(&[u8])) {
                let mut buf = [0u8; 2];
                for wv in self.w_flat() {
                    let n = wv.state_bytes(&mut buf);
                    f(&buf[..n]);
                }
                for b in &self.q.bias {
                    f(&b.to_le_bytes());
                }
            }
        }

        impl<$($g)*> Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<$($g)*> LayerShape for $ty {
            const IN_LEN: usize = Self::GEOM.in_len();
            const OUT_LEN: usize = Self::GEOM.out_len();
            const PARAMS: usize = $out * Self::GEOM.fan() + $out;
            const MACS: usize = Self::GEOM.macs();
            const WEIGHT_BYTES: usize = $out * Self::GEOM.fan() * Wt::BYTES;
            const QPARAM_BYTES: usize = ChannelParams::<$out>::BYTES;
            const STASH_BYTES: usize = core::mem::size_of::<Self>()
                - Self::WEIGHT_BYTES
                - Self::QPARAM_BYTES;
            const BLOB_BYTES: usize = section_bytes($out, Self::GEOM.fan());
        }
    };
}

/// Flattening nested arrays into one slice (each level is contiguous).
pub trait FlattenAll {
    /// Element type.
    type Elem;
    /// All elements as one slice.
    fn flatten_all(&self) -> &[Self::Elem];
    /// All elements as one mutable slice.
    fn flatten_all_mut(&mut self) -> &mut [Self::Elem];
}

impl<T: crate::layer::Scalar> FlattenAll for [T] {
    type Elem = T;
    fn flatten_all(&self) -> &[T] {
        self
    }
    fn flatten_all_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T, const N: usize> FlattenAll for [[T; N]]
where
    [T]: FlattenAll,
{
    type Elem = <[T] as FlattenAll>::Elem;
    fn flatten_all(&self) -> &[Self::Elem] {
        self.as_flattened().flatten_all()
    }
    fn flatten_all_mut(&mut self) -> &mut [Self::Elem] {
        self.as_flattened_mut().flatten_all_mut()
    }
}

impl<T, const N: usize> FlattenAll for [T; N]
where
    [T]: FlattenAll,
{
    type Elem = <[T] as FlattenAll>::Elem;
    fn flatten_all(&self) -> &[Self::Elem] {
        self.as_slice().flatten_all()
    }
    fn flatten_all_mut(&mut self) -> &mut [Self::Elem] {
        self.as_mut_slice().flatten_all_mut()
    }
}

// ---------------------------------------------------------------------------------------------

/// Fully connected layer `IN → OUT`, weights `[OUT][IN]`.
pub struct Dense<const IN: usize, const OUT: usize, const RELU: bool, const B: usize, Wt: Weight> {
    w: [[Wt; IN]; OUT],
    q: ChannelParams<OUT>,
    mode: TrainMode,
    xs: [[i8; IN]; B],
    ds: [[i16; OUT]; B],
    es: [i32; B],
    nz: [bool; B],
    rs: [[i32; 1]; B],
    vacc: [i64; 0],
    imp: [u32; OUT],
    sel: [bool; OUT],
}

impl<const IN: usize, const OUT: usize, const RELU: bool, const B: usize, Wt: Weight>
    Dense<IN, OUT, RELU, B, Wt>
{
    const GEOM: Geom = Geom {
        h: 1,
        w: 1,
        cin: IN,
        cout: OUT,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        ph: 0,
        pw: 0,
        oh: 1,
        ow: 1,
    };
    const DESC: LayerDesc = LayerDesc {
        kind: Kind::Dense,
        relu: RELU,
        dims: dims([IN, OUT]),
    };
    const CHECK: () = assert!(IN > 0 && OUT > 0 && B > 0 && IN < 65536 && OUT < 65536);

    /// A zeroed layer (load a blob or call `init_synthetic` before use).
    #[allow(clippy::let_unit_value)]
    pub const fn new() -> Self {
        let () = Self::CHECK;
        Self {
            w: [[Wt::ZERO; IN]; OUT],
            q: ChannelParams::new(),
            mode: TrainMode::Frozen,
            xs: [[0; IN]; B],
            ds: [[0; OUT]; B],
            es: [0; B],
            nz: [false; B],
            rs: [[0; 1]; B],
            vacc: [],
            imp: [0; OUT],
            sel: [false; OUT],
        }
    }
    fn w_flat(&self) -> &[Wt] {
        self.w.flatten_all()
    }
    fn ds_flat(&self) -> &[i16] {
        self.ds.flatten_all()
    }
    fn fwd(&self, x: &[i8], y: &mut [i8], ctr: &mut Counters, scratch: &mut [i32]) {
        match Wt::as_i8(self.w_flat()) {
            Some(w8) => crate::dense::forward::<IN, OUT>(w8, &self.q, RELU, x, y, ctr, scratch),
            None => {
                let w = self.w_flat();
                kernels::forward::<Wt, OUT>(&Self::GEOM, w, &self.q, RELU, x, y, ctr, scratch)
            }
        }
    }
    fn bwd(&self, d: &[i16], e_in: &mut [i32]) {
        match Wt::as_i8(self.w_flat()) {
            Some(w8) => crate::dense::backward::<IN, OUT>(w8, d, e_in),
            None => kernels::backward::<Wt, OUT>(&Self::GEOM, self.w_flat(), d, e_in),
        }
    }
}

impl_param_layer!([const IN: usize, const OUT: usize, const RELU: bool, const B: usize, Wt: Weight]
    Dense<IN, OUT, RELU, B, Wt>, OUT, RELU);

/// 1-D convolution over `[L][CIN]`, weights `[COUT][K][CIN]`, output `[LOUT][COUT]`.
pub struct Conv1d<
    const L: usize,
    const CIN: usize,
    const COUT: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const LOUT: usize,
    const RELU: bool,
    const B: usize,
    Wt: Weight,
> {
    w: [[[Wt; CIN]; K]; COUT],
    q: ChannelParams<COUT>,
    mode: TrainMode,
    xs: [[[i8; CIN]; L]; B],
    ds: [[[i16; COUT]; LOUT]; B],
    es: [i32; B],
    nz: [bool; B],
    rs: [[i32; LOUT]; B],
    vacc: [[i64; CIN]; K],
    imp: [u32; COUT],
    sel: [bool; COUT],
}

impl<
        const L: usize,
        const CIN: usize,
        const COUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const LOUT: usize,
        const RELU: bool,
        const B: usize,
        Wt: Weight,
    > Conv1d<L, CIN, COUT, K, S, P, LOUT, RELU, B, Wt>
{
    const GEOM: Geom = Geom {
        h: 1,
        w: L,
        cin: CIN,
        cout: COUT,
        kh: 1,
        kw: K,
        sh: 1,
        sw: S,
        ph: 0,
        pw: P,
        oh: 1,
        ow: LOUT,
    };
    const DESC: LayerDesc = LayerDesc {
        kind: Kind::Conv1d,
        relu: RELU,
        dims: dims([L, CIN, COUT, K, S, P, LOUT]),
    };
    const CHECK: () = assert!(
        Self::GEOM.is_consistent() && B > 0,
        "Conv1d: LOUT must equal (L + 2P - K)/S + 1"
    );

    /// A zeroed layer.
    #[allow(clippy::let_unit_value)]
    pub const fn new() -> Self {
        let () = Self::CHECK;
        Self {
            w: [[[Wt::ZERO; CIN]; K]; COUT],
            q: ChannelParams::new(),
            mode: TrainMode::Frozen,
            xs: [[[0; CIN]; L]; B],
            ds: [[[0; COUT]; LOUT]; B],
            es: [0; B],
            nz: [false; B],
            rs: [[0; LOUT]; B],
            vacc: [[0; CIN]; K],
            imp: [0; COUT],
            sel: [false; COUT],
        }
    }
    fn w_flat(&self) -> &[Wt] {
        self.w.flatten_all()
    }
    fn ds_flat(&self) -> &[i16] {
        self.ds.flatten_all()
    }
    fn fwd(&self, x: &[i8], y: &mut [i8], ctr: &mut Counters, scratch: &mut [i32]) {
        let w = self.w_flat();
        kernels::forward::<Wt, COUT>(&Self::GEOM, w, &self.q, RELU, x, y, ctr, scratch);
    }
    fn bwd(&self, d: &[i16], e_in: &mut [i32]) {
        kernels::backward::<Wt, COUT>(&Self::GEOM, self.w_flat(), d, e_in);
    }
}

impl_param_layer!([const L: usize, const CIN: usize, const COUT: usize, const K: usize,
    const S: usize, const P: usize, const LOUT: usize, const RELU: bool, const B: usize, Wt: Weight]
    Conv1d<L, CIN, COUT, K, S, P, LOUT, RELU, B, Wt>, COUT, RELU);

/// 2-D convolution over `[H][W][CIN]`, weights `[COUT][KH][KW][CIN]`, output `[OH][OW][COUT]`.
pub struct Conv2d<
    const H: usize,
    const W: usize,
    const CIN: usize,
    const COUT: usize,
    const KH: usize,
    const KW: usize,
    const S: usize,
    const P: usize,
    const OH: usize,
    const OW: usize,
    const RELU: bool,
    const B: usize,
    Wt: Weight,
> {
    w: [[[[Wt; CIN]; KW]; KH]; COUT],
    q: ChannelParams<COUT>,
    mode: TrainMode,
    xs: [[[[i8; CIN]; W]; H]; B],
    ds: [[[[i16; COUT]; OW]; OH]; B],
    es: [i32; B],
    nz: [bool; B],
    rs: [[[i32; OW]; OH]; B],
    vacc: [[[i64; CIN]; KW]; KH],
    imp: [u32; COUT],
    sel: [bool; COUT],
}

impl<
        const H: usize,
        const W: usize,
        const CIN: usize,
        const COUT: usize,
        const KH: usize,
        const KW: usize,
        const S: usize,
        const P: usize,
        const OH: usize,
        const OW: usize,
        const RELU: bool,
        const B: usize,
        Wt: Weight,
    > Conv2d<H, W, CIN, COUT, KH, KW, S, P, OH, OW, RELU, B, Wt>
{
    const GEOM: Geom = Geom {
        h: H,
        w: W,
        cin: CIN,
        cout: COUT,
        kh: KH,
        kw: KW,
        sh: S,
        sw: S,
        ph: P,
        pw: P,
        oh: OH,
        ow: OW,
    };
    const DESC: LayerDesc = LayerDesc {
        kind: Kind::Conv2d,
        relu: RELU,
        dims: dims([H, W, CIN, COUT, KH, KW, S, P, OH, OW]),
    };
    const CHECK: () = assert!(
        Self::GEOM.is_consistent() && B > 0,
        "Conv2d: OH/OW must equal (H + 2P - K)/S + 1"
    );

    /// A zeroed layer.
    #[allow(clippy::let_unit_value)]
    pub const fn new() -> Self {
        let () = Self::CHECK;
        Self {
            w: [[[[Wt::ZERO; CIN]; KW]; KH]; COUT],
            q: ChannelParams::new(),
            mode: TrainMode::Frozen,
            xs: [[[[0; CIN]; W]; H]; B],
            ds: [[[[0; COUT]; OW]; OH]; B],
            es: [0; B],
            nz: [false; B],
            rs: [[[0; OW]; OH]; B],
            vacc: [[[0; CIN]; KW]; KH],
            imp: [0; COUT],
            sel: [false; COUT],
        }
    }
    fn w_flat(&self) -> &[Wt] {
        self.w.flatten_all()
    }
    fn ds_flat(&self) -> &[i16] {
        self.ds.flatten_all()
    }
    fn fwd(&self, x: &[i8], y: &mut [i8], ctr: &mut Counters, scratch: &mut [i32]) {
        let w = self.w_flat();
        kernels::forward::<Wt, COUT>(&Self::GEOM, w, &self.q, RELU, x, y, ctr, scratch);
    }
    fn bwd(&self, d: &[i16], e_in: &mut [i32]) {
        kernels::backward::<Wt, COUT>(&Self::GEOM, self.w_flat(), d, e_in);
    }
}

impl_param_layer!([const H: usize, const W: usize, const CIN: usize, const COUT: usize,
    const KH: usize, const KW: usize, const S: usize, const P: usize, const OH: usize,
    const OW: usize, const RELU: bool, const B: usize, Wt: Weight]
    Conv2d<H, W, CIN, COUT, KH, KW, S, P, OH, OW, RELU, B, Wt>, COUT, RELU);

// ---------------------------------------------------------------------------------------------

/// Parameterless layers have no RAM of their own beyond their (zero-sized) marker.
macro_rules! impl_shape_no_params {
    ([$($g:tt)*] $ty:ty, $in:expr, $out:expr) => {
        impl<$($g)*> LayerShape for $ty {
            const IN_LEN: usize = $in;
            const OUT_LEN: usize = $out;
            const PARAMS: usize = 0;
            const MACS: usize = 0;
            const WEIGHT_BYTES: usize = 0;
            const QPARAM_BYTES: usize = 0;
            const STASH_BYTES: usize = 0;
            const BLOB_BYTES: usize = 0;
        }
    };
}

/// Max pooling with window = stride = `PH × PW` over `[H][W][C]`.
pub struct MaxPool2d<
    const H: usize,
    const W: usize,
    const C: usize,
    const PH: usize,
    const PW: usize,
    const B: usize,
    Wt,
>(PhantomData<fn() -> Wt>);

/// Average pooling with window = stride = `PH × PW` over `[H][W][C]`.
pub struct AvgPool2d<
    const H: usize,
    const W: usize,
    const C: usize,
    const PH: usize,
    const PW: usize,
    const B: usize,
    Wt,
>(PhantomData<fn() -> Wt>);

/// Iterate the pooling windows: calls `f(out_index, [input indices of the window])`.
fn for_windows(
    h: usize,
    w: usize,
    c: usize,
    ph: usize,
    pw: usize,
    mut f: impl FnMut(usize, &mut dyn Iterator<Item = usize>),
) {
    let (oh, ow) = (h / ph, w / pw);
    let mut o = 0;
    for y in 0..oh {
        for x in 0..ow {
            for ch in 0..c {
                let mut it = (0..ph).flat_map(move |i| {
                    (0..pw).map(move |j| ((y * ph + i) * w + x * pw + j) * c + ch)
                });
                f(o, &mut it);
                o += 1;
            }
        }
    }
}

macro_rules! impl_pool {
    ($name:ident, $kind:expr, $fwd:expr, $bwd:ident) => {
        impl<const H: usize, const W: usize, const C: usize, const PH: usize, const PW: usize, const B: usize, Wt>
            $name<H, W, C, PH, PW, B, Wt>
        {
            const CHECK: () = assert!(PH > 0 && PW > 0 && H >= PH && W >= PW);
            /// The layer.
            #[allow(clippy::let_unit_value)]
            pub const fn new() -> Self {
                let () = Self::CHECK;
                Self(PhantomData)
            }
        }
        impl<const H: usize, const W: usize, const C: usize, const PH: usize, const PW: usize, const B: usize, Wt> Default
            for $name<H, W, C, PH, PW, B, Wt>
        {
            fn default() -> Self {
                Self::new()
            }
        }
        impl_shape_no_params!([const H: usize, const W: usize, const C: usize, const PH: usize, const PW: usize, const B: usize, Wt]
            $name<H, W, C, PH, PW, B, Wt>, H * W * C, (H / PH) * (W / PW) * C);
        impl<const H: usize, const W: usize, const C: usize, const PH: usize, const PW: usize, const B: usize, Wt>
            Layer for $name<H, W, C, PH, PW, B, Wt>
        {
            fn desc(&self) -> LayerDesc {
                LayerDesc { kind: $kind, relu: false, dims: dims([H, W, C, PH, PW]) }
            }
            fn in_len(&self) -> usize {
                H * W * C
            }
            fn out_len(&self) -> usize {
                (H / PH) * (W / PW) * C
            }
            fn forward(&self, x: &[i8], _z_x: i8, y: &mut [i8], _ctr: &mut Counters, _scratch: &mut [i32]) {
                $fwd(H, W, C, PH, PW, x, y);
            }
            fn backward_data(&self, x: &[i8], _z_x: i8, e_out: &[i32], exp: i32, e_in: &mut [i32]) -> i32 {
                $bwd(H, W, C, PH, PW, x, e_out, exp, e_in)
            }
        }
    };
}

/// The window of every max-pooling output, in the order of [`for_windows`], without its
/// iterator: `f(out_index, index of the window's first maximum (row-major), maximum)`.
#[inline(always)]
fn max_windows(
    h: usize,
    w: usize,
    c: usize,
    ph: usize,
    pw: usize,
    x: &[i8],
    mut f: impl FnMut(usize, usize, i8),
) {
    let (oh, ow) = (h / ph, w / pw);
    let mut o = 0;
    for y in 0..oh {
        for xo in 0..ow {
            let base = (y * ph * w + xo * pw) * c;
            for ch in 0..c {
                let mut best: Option<(usize, i8)> = None;
                for i in 0..ph {
                    for j in 0..pw {
                        let k = base + (i * w + j) * c + ch;
                        if let Some(&v) = x.get(k) {
                            if best.is_none_or(|(_, b)| v > b) {
                                best = Some((k, v));
                            }
                        }
                    }
                }
                if let Some((k, v)) = best {
                    f(o, k, v);
                }
                o += 1;
            }
        }
    }
}

/// Not inlined: one copy for every max-pooling layer (the loops do not unroll per shape).
#[inline(never)]
fn max_fwd(h: usize, w: usize, c: usize, ph: usize, pw: usize, x: &[i8], y: &mut [i8]) {
    max_windows(h, w, c, ph, pw, x, |o, _, v| {
        if let Some(out) = y.get_mut(o) {
            *out = v;
        }
    });
}

fn avg_fwd(h: usize, w: usize, c: usize, ph: usize, pw: usize, x: &[i8], y: &mut [i8]) {
    for_windows(h, w, c, ph, pw, |o, win| {
        let s: i64 = win.filter_map(|i| x.get(i).map(|&v| v as i64)).sum();
        let n = (ph * pw) as i64;
        if let Some(out) = y.get_mut(o) {
            *out = (2 * s + n).div_euclid(2 * n).clamp(-128, 127) as i8;
        }
    });
}

/// Not inlined, as [`max_fwd`].
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn max_bwd(
    h: usize,
    w: usize,
    c: usize,
    ph: usize,
    pw: usize,
    x: &[i8],
    e_out: &[i32],
    exp: i32,
    e_in: &mut [i32],
) -> i32 {
    e_in.fill(0);
    max_windows(h, w, c, ph, pw, x, |o, i, _| {
        if let (Some(&e), Some(dst)) = (e_out.get(o), e_in.get_mut(i)) {
            *dst = e;
        }
    });
    exp
}

#[allow(clippy::too_many_arguments)]
fn avg_bwd(
    h: usize,
    w: usize,
    c: usize,
    ph: usize,
    pw: usize,
    _x: &[i8],
    e_out: &[i32],
    exp: i32,
    e_in: &mut [i32],
) -> i32 {
    let n = (ph * pw) as i64;
    let qn = (65536 + n / 2) / n;
    let max_abs = e_out
        .iter()
        .map(|&e| (e as i64 * qn).unsigned_abs())
        .max()
        .unwrap_or(0);
    e_in.fill(0);
    if max_abs == 0 {
        return exp - 16;
    }
    let r = normalize_shift(max_abs, ERR_BITS);
    for_windows(h, w, c, ph, pw, |o, win| {
        let v = shr_round(e_out.get(o).copied().unwrap_or(0) as i64 * qn, r) as i32;
        for i in win {
            if let Some(dst) = e_in.get_mut(i) {
                *dst = v;
            }
        }
    });
    exp - 16 + r
}

impl_pool!(MaxPool2d, Kind::MaxPool2d, max_fwd, max_bwd);
impl_pool!(AvgPool2d, Kind::AvgPool2d, avg_fwd, avg_bwd);

/// The parameterless layers that keep the length (`LEN` elements in and out): one definition of
/// the marker type, `new`/`Default`, the shape and the [`Layer`] methods they share
/// (`desc`, `in_len`, `out_len`), around the layer's own `forward` (and `backward_data` where
/// the trait's default does not fit).
macro_rules! same_len_layer {
    ($(#[$attr:meta])* $name:ident, $kind:expr, { $($methods:tt)* }) => {
        $(#[$attr])*
        pub struct $name<const LEN: usize, const B: usize, Wt>(PhantomData<fn() -> Wt>);

        impl<const LEN: usize, const B: usize, Wt> $name<LEN, B, Wt> {
            /// The layer.
            pub const fn new() -> Self {
                Self(PhantomData)
            }
        }
        impl<const LEN: usize, const B: usize, Wt> Default for $name<LEN, B, Wt> {
            fn default() -> Self {
                Self::new()
            }
        }
        impl_shape_no_params!([const LEN: usize, const B: usize, Wt] $name<LEN, B, Wt>, LEN, LEN);

        impl<const LEN: usize, const B: usize, Wt> Layer for $name<LEN, B, Wt> {
            fn desc(&self) -> LayerDesc {
                LayerDesc {
                    kind: $kind,
                    relu: false,
                    dims: dims([LEN]),
                }
            }
            fn in_len(&self) -> usize {
                LEN
            }
            fn out_len(&self) -> usize {
                LEN
            }
            $($methods)*
        }
    };
}

same_len_layer!(
    /// Stand-alone ReLU on `LEN` elements: `y = max(x, z_x)`.
    Relu,
    Kind::Relu,
    {
        fn forward(
            &self,
            x: &[i8],
            z_x: i8,
            y: &mut [i8],
            _ctr: &mut Counters,
            _scratch: &mut [i32],
        ) {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.max(z_x);
            }
        }
        fn backward_data(
            &self,
            x: &[i8],
            z_x: i8,
            e_out: &[i32],
            exp: i32,
            e_in: &mut [i32],
        ) -> i32 {
            for ((o, &e), &v) in e_in.iter_mut().zip(e_out).zip(x) {
                *o = if v > z_x { e } else { 0 };
            }
            exp
        }
    }
);

same_len_layer!(
    /// Flatten `LEN` elements (identity on the flat HWC buffer).
    Flatten,
    Kind::Flatten,
    {
        fn forward(
            &self,
            x: &[i8],
            _z_x: i8,
            y: &mut [i8],
            _ctr: &mut Counters,
            _scratch: &mut [i32],
        ) {
            copy(y, x);
        }
    }
);
