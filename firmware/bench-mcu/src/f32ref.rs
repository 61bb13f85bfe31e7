//! Plain-f32 training baseline with the same layer shapes as odt-core's models.
//!
//! Straightforward loops, one sample (batch 1): forward, softmax cross-entropy, backward through
//! every layer, SGD update of every weight and bias (all layers trainable). No gradient buffers:
//! each layer first computes the error at its input with the old weights, then updates its own
//! weights. This is what a typical f32 on-device trainer without SIMD does; it is the yardstick
//! for the integer trainer, not an optimised kernel library. On the Cortex-M0 (no FPU) every
//! float operation becomes a soft-float call (`__aeabi_fmul`, `__aeabi_fadd`, ...).
//!
//! Shapes (channels last, valid convolutions, stride 1):
//! * MLP: 102 -> Dense 64 ReLU -> Dense 32 ReLU -> Dense 5.
//! * CNN: 28x28x1 -> Conv 3x3x8 ReLU (26x26x8) -> MaxPool 2 (13x13x8) -> Conv 3x3x16 ReLU
//!   (11x11x16) -> MaxPool 2 (5x5x16 = 400) -> Dense 10.

use crate::Lcg;

/// SGD learning rate (a constant, so that the models are all-zero statics in .bss).
const LR: f32 = 0.01;

// ---------------------------------------------------------------- scalar helpers

/// `e^x` for the softmax (x <= 0 there): 2^k · p(r), |r| <= ln2/2, degree-5 Taylor polynomial.
fn expf(x: f32) -> f32 {
    const LN2: f32 = core::f32::consts::LN_2;
    if x < -87.0 {
        return 0.0;
    }
    if x > 88.0 {
        return f32::MAX;
    }
    let kf = x * core::f32::consts::LOG2_E;
    let k = (if kf < 0.0 { kf - 0.5 } else { kf + 0.5 }) as i32;
    let r = x - k as f32 * LN2;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0)))));
    p * f32::from_bits(((k + 127) as u32) << 23)
}

/// Natural logarithm for the loss value (x > 0): exponent + atanh series on the mantissa.
fn lnf(x: f32) -> f32 {
    if x <= 0.0 {
        return -87.0;
    }
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let s = 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0))));
    e as f32 * core::f32::consts::LN_2 + s
}

/// Softmax cross-entropy: writes dL/dz into `g`, returns the loss in nats.
fn softmax_ce<const N: usize>(z: &[f32; N], label: usize, g: &mut [f32; N]) -> f32 {
    let mut m = z[0];
    for v in z.iter() {
        if *v > m {
            m = *v;
        }
    }
    let mut s = 0.0;
    for (gi, zi) in g.iter_mut().zip(z.iter()) {
        *gi = expf(*zi - m);
        s += *gi;
    }
    let inv = 1.0 / s;
    for gi in g.iter_mut() {
        *gi *= inv;
    }
    let mut zl = 0.0;
    if let (Some(gl), Some(z_l)) = (g.get_mut(label), z.get(label)) {
        *gl -= 1.0;
        zl = *z_l;
    }
    m + lnf(s) - zl
}

fn fill_uniform(w: &mut [f32], a: f32, rng: &mut Lcg) {
    for v in w.iter_mut() {
        // (-a, a) from the top 16 bits.
        *v = a * ((rng.next() >> 16) as f32 * (2.0 / 65536.0) - 1.0);
    }
}

fn argmax<const N: usize>(z: &[f32; N]) -> u8 {
    let mut best = 0usize;
    for (i, v) in z.iter().enumerate() {
        if *v > z[best] {
            best = i;
        }
    }
    best as u8
}

// ---------------------------------------------------------------- dense layer

fn dense_fwd<const I: usize, const O: usize>(
    w: &[[f32; I]; O],
    b: &[f32; O],
    x: &[f32; I],
    y: &mut [f32; O],
    relu: bool,
) {
    for o in 0..O {
        let row = &w[o];
        let mut acc = b[o];
        for i in 0..I {
            acc += row[i] * x[i];
        }
        y[o] = if relu && acc < 0.0 { 0.0 } else { acc };
    }
}

/// `dy` is dL/d(pre-activation). Computes dL/dx (if asked) with the old weights, then updates.
fn dense_bwd<const I: usize, const O: usize>(
    w: &mut [[f32; I]; O],
    b: &mut [f32; O],
    x: &[f32; I],
    dy: &[f32; O],
    dx: Option<&mut [f32; I]>,
    lr: f32,
) {
    if let Some(dx) = dx {
        for v in dx.iter_mut() {
            *v = 0.0;
        }
        for o in 0..O {
            let g = dy[o];
            let row = &w[o];
            for i in 0..I {
                dx[i] += g * row[i];
            }
        }
    }
    for o in 0..O {
        let g = lr * dy[o];
        let row = &mut w[o];
        for i in 0..I {
            row[i] -= g * x[i];
        }
        b[o] -= g;
    }
}

/// ReLU backward on a layer output: zero the error where the output was clamped.
fn relu_bwd(y: &[f32], d: &mut [f32]) {
    for (dv, yv) in d.iter_mut().zip(y.iter()) {
        if *yv <= 0.0 {
            *dv = 0.0;
        }
    }
}

// ---------------------------------------------------------------- conv / pool (3x3, valid)

fn conv3_fwd<
    const H: usize,
    const W: usize,
    const CI: usize,
    const CO: usize,
    const OH: usize,
    const OW: usize,
>(
    x: &[[[f32; CI]; W]; H],
    w: &[[[[f32; CI]; 3]; 3]; CO],
    b: &[f32; CO],
    y: &mut [[[f32; CO]; OW]; OH],
) {
    for oy in 0..OH {
        for ox in 0..OW {
            for co in 0..CO {
                let mut acc = b[co];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let xp = &x[oy + ky][ox + kx];
                        let wp = &w[co][ky][kx];
                        for ci in 0..CI {
                            acc += wp[ci] * xp[ci];
                        }
                    }
                }
                y[oy][ox][co] = if acc < 0.0 { 0.0 } else { acc }; // fused ReLU
            }
        }
    }
}

/// Weight/bias update of a 3x3 conv from `dy` (dL/d pre-activation), after dx was computed.
fn conv3_update<
    const H: usize,
    const W: usize,
    const CI: usize,
    const CO: usize,
    const OH: usize,
    const OW: usize,
>(
    x: &[[[f32; CI]; W]; H],
    w: &mut [[[[f32; CI]; 3]; 3]; CO],
    b: &mut [f32; CO],
    dy: &[[[f32; CO]; OW]; OH],
    lr: f32,
) {
    for co in 0..CO {
        for ky in 0..3 {
            for kx in 0..3 {
                for ci in 0..CI {
                    let mut gsum = 0.0;
                    for oy in 0..OH {
                        for ox in 0..OW {
                            gsum += dy[oy][ox][co] * x[oy + ky][ox + kx][ci];
                        }
                    }
                    w[co][ky][kx][ci] -= lr * gsum;
                }
            }
        }
        let mut gb = 0.0;
        for oy in 0..OH {
            for ox in 0..OW {
                gb += dy[oy][ox][co];
            }
        }
        b[co] -= lr * gb;
    }
}

/// dL/dx of a 3x3 conv (transposed convolution) with the current weights.
fn conv3_dx<
    const H: usize,
    const W: usize,
    const CI: usize,
    const CO: usize,
    const OH: usize,
    const OW: usize,
>(
    w: &[[[[f32; CI]; 3]; 3]; CO],
    dy: &[[[f32; CO]; OW]; OH],
    dx: &mut [[[f32; CI]; W]; H],
) {
    for row in dx.iter_mut() {
        for px in row.iter_mut() {
            for v in px.iter_mut() {
                *v = 0.0;
            }
        }
    }
    for oy in 0..OH {
        for ox in 0..OW {
            for co in 0..CO {
                let g = dy[oy][ox][co];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let wp = &w[co][ky][kx];
                        let dp = &mut dx[oy + ky][ox + kx];
                        for ci in 0..CI {
                            dp[ci] += g * wp[ci];
                        }
                    }
                }
            }
        }
    }
}

/// 2x2 max pooling, stride 2, floor.
fn maxpool_fwd<const H: usize, const W: usize, const C: usize, const PH: usize, const PW: usize>(
    x: &[[[f32; C]; W]; H],
    y: &mut [[[f32; C]; PW]; PH],
) {
    for py in 0..PH {
        for px in 0..PW {
            for c in 0..C {
                let mut m = x[2 * py][2 * px][c];
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let v = x[2 * py + dy][2 * px + dx][c];
                    if v > m {
                        m = v;
                    }
                }
                y[py][px][c] = m;
            }
        }
    }
}

/// Max-pool + ReLU backward, in place: on entry `xd` holds the ReLU outputs of the pooled layer;
/// on exit it holds dL/d(pre-activation): the pooled error goes to the first maximum of each
/// window (scan order) if that output was > 0, everything else (incl. rows/columns no window
/// covers) becomes 0. Saves a second activation-sized buffer.
fn maxpool_relu_bwd_inplace<
    const H: usize,
    const W: usize,
    const C: usize,
    const PH: usize,
    const PW: usize,
>(
    xd: &mut [[[f32; C]; W]; H],
    dy: &[[[f32; C]; PW]; PH],
) {
    const WIN: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];
    for py in 0..PH {
        for px in 0..PW {
            for c in 0..C {
                let mut best = 0;
                let mut m = xd[2 * py][2 * px][c];
                for (k, (dy_, dx_)) in WIN.iter().enumerate().skip(1) {
                    let v = xd[2 * py + dy_][2 * px + dx_][c];
                    if v > m {
                        m = v;
                        best = k;
                    }
                }
                for (k, (dy_, dx_)) in WIN.iter().enumerate() {
                    let cell = &mut xd[2 * py + dy_][2 * px + dx_][c];
                    *cell = if k == best && m > 0.0 {
                        dy[py][px][c]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
    // Border not covered by any window (odd sizes).
    for y in 2 * PH..H {
        for px in xd[y].iter_mut() {
            for v in px.iter_mut() {
                *v = 0.0;
            }
        }
    }
    for row in xd.iter_mut() {
        for x in 2 * PW..W {
            for v in row[x].iter_mut() {
                *v = 0.0;
            }
        }
    }
}

// ---------------------------------------------------------------- MLP

pub struct MlpF32 {
    w1: [[f32; 102]; 64],
    b1: [f32; 64],
    w2: [[f32; 64]; 32],
    b2: [f32; 32],
    w3: [[f32; 32]; 5],
    b3: [f32; 5],
    h1: [f32; 64],
    h2: [f32; 32],
    z: [f32; 5],
    g: [f32; 5],
    d2: [f32; 32],
    d1: [f32; 64],
}

impl MlpF32 {
    pub const INPUT_LEN: usize = 102;
    pub const PARAMS: usize = 102 * 64 + 64 + 64 * 32 + 32 + 32 * 5 + 5;

    pub const fn new() -> Self {
        MlpF32 {
            w1: [[0.0; 102]; 64],
            b1: [0.0; 64],
            w2: [[0.0; 64]; 32],
            b2: [0.0; 32],
            w3: [[0.0; 32]; 5],
            b3: [0.0; 5],
            h1: [0.0; 64],
            h2: [0.0; 32],
            z: [0.0; 5],
            g: [0.0; 5],
            d2: [0.0; 32],
            d1: [0.0; 64],
        }
    }

    /// Uniform He-style initialisation: a = sqrt(6 / fan_in).
    pub fn init(&mut self, seed: u32) {
        let mut rng = Lcg::new(seed);
        fill_uniform(self.w1.as_flattened_mut(), 0.2425, &mut rng); // sqrt(6/102)
        fill_uniform(self.w2.as_flattened_mut(), 0.3062, &mut rng); // sqrt(6/64)
        fill_uniform(self.w3.as_flattened_mut(), 0.4330, &mut rng); // sqrt(6/32)
        self.b1 = [0.0; 64];
        self.b2 = [0.0; 32];
        self.b3 = [0.0; 5];
    }

    fn forward(&mut self, x: &[f32; 102]) {
        dense_fwd(&self.w1, &self.b1, x, &mut self.h1, true);
        dense_fwd(&self.w2, &self.b2, &self.h1, &mut self.h2, true);
        dense_fwd(&self.w3, &self.b3, &self.h2, &mut self.z, false);
    }

    pub fn infer(&mut self, x: &[f32; 102]) -> u8 {
        self.forward(x);
        argmax(&self.z)
    }

    /// One SGD step; returns the loss before the update.
    pub fn train_step(&mut self, x: &[f32; 102], label: u8) -> f32 {
        self.forward(x);
        let loss = softmax_ce(&self.z, label as usize, &mut self.g);
        let lr = LR;
        dense_bwd(
            &mut self.w3,
            &mut self.b3,
            &self.h2,
            &self.g,
            Some(&mut self.d2),
            lr,
        );
        relu_bwd(&self.h2, &mut self.d2);
        dense_bwd(
            &mut self.w2,
            &mut self.b2,
            &self.h1,
            &self.d2,
            Some(&mut self.d1),
            lr,
        );
        relu_bwd(&self.h1, &mut self.d1);
        dense_bwd(&mut self.w1, &mut self.b1, x, &self.d1, None, lr);
        loss
    }
}

// ---------------------------------------------------------------- CNN

pub struct CnnF32 {
    c1w: [[[[f32; 1]; 3]; 3]; 8],
    c1b: [f32; 8],
    c2w: [[[[f32; 8]; 3]; 3]; 16],
    c2b: [f32; 16],
    dw: [[f32; 400]; 10],
    db: [f32; 10],
    /// Conv1 output (ReLU), reused in place for its error in backward.
    a1: [[[f32; 8]; 26]; 26],
    p1: [[[f32; 8]; 13]; 13],
    /// Error at p1.
    dp1: [[[f32; 8]; 13]; 13],
    /// Conv2 output (ReLU), reused in place for its error in backward.
    a2: [[[f32; 16]; 11]; 11],
    p2: [[[f32; 16]; 5]; 5],
    dp2: [[[f32; 16]; 5]; 5],
    z: [f32; 10],
    g: [f32; 10],
}

impl CnnF32 {
    pub const INPUT_LEN: usize = 784;
    pub const PARAMS: usize = 9 * 8 + 8 + 72 * 16 + 16 + 400 * 10 + 10;

    pub const fn new() -> Self {
        CnnF32 {
            c1w: [[[[0.0; 1]; 3]; 3]; 8],
            c1b: [0.0; 8],
            c2w: [[[[0.0; 8]; 3]; 3]; 16],
            c2b: [0.0; 16],
            dw: [[0.0; 400]; 10],
            db: [0.0; 10],
            a1: [[[0.0; 8]; 26]; 26],
            p1: [[[0.0; 8]; 13]; 13],
            dp1: [[[0.0; 8]; 13]; 13],
            a2: [[[0.0; 16]; 11]; 11],
            p2: [[[0.0; 16]; 5]; 5],
            dp2: [[[0.0; 16]; 5]; 5],
            z: [0.0; 10],
            g: [0.0; 10],
        }
    }

    pub fn init(&mut self, seed: u32) {
        let mut rng = Lcg::new(seed);
        fill_uniform(
            self.c1w
                .as_flattened_mut()
                .as_flattened_mut()
                .as_flattened_mut(),
            0.8165,
            &mut rng,
        ); // sqrt(6/9)
        fill_uniform(
            self.c2w
                .as_flattened_mut()
                .as_flattened_mut()
                .as_flattened_mut(),
            0.2887,
            &mut rng,
        ); // sqrt(6/72)
        fill_uniform(self.dw.as_flattened_mut(), 0.1225, &mut rng); // sqrt(6/400)
        self.c1b = [0.0; 8];
        self.c2b = [0.0; 16];
        self.db = [0.0; 10];
    }

    fn forward(&mut self, x: &[[[f32; 1]; 28]; 28]) {
        conv3_fwd(x, &self.c1w, &self.c1b, &mut self.a1);
        maxpool_fwd(&self.a1, &mut self.p1);
        conv3_fwd(&self.p1, &self.c2w, &self.c2b, &mut self.a2);
        maxpool_fwd(&self.a2, &mut self.p2);
        let flat: &[f32; 400] = flatten_400(&self.p2);
        dense_fwd(&self.dw, &self.db, flat, &mut self.z, false);
    }

    pub fn infer(&mut self, x: &[[[f32; 1]; 28]; 28]) -> u8 {
        self.forward(x);
        argmax(&self.z)
    }

    pub fn train_step(&mut self, x: &[[[f32; 1]; 28]; 28], label: u8) -> f32 {
        self.forward(x);
        let loss = softmax_ce(&self.z, label as usize, &mut self.g);
        let lr = LR;
        {
            let flat: &[f32; 400] = flatten_400(&self.p2);
            let dflat: &mut [f32; 400] = flatten_400_mut(&mut self.dp2);
            dense_bwd(&mut self.dw, &mut self.db, flat, &self.g, Some(dflat), lr);
        }
        maxpool_relu_bwd_inplace(&mut self.a2, &self.dp2);
        conv3_dx(&self.c2w, &self.a2, &mut self.dp1);
        conv3_update(&self.p1, &mut self.c2w, &mut self.c2b, &self.a2, lr);
        maxpool_relu_bwd_inplace(&mut self.a1, &self.dp1);
        conv3_update(x, &mut self.c1w, &mut self.c1b, &self.a1, lr);
        loss
    }
}

fn flatten_400(p: &[[[f32; 16]; 5]; 5]) -> &[f32; 400] {
    let s: &[f32] = p.as_flattened().as_flattened();
    match s.try_into() {
        Ok(a) => a,
        Err(_) => crate::io::exit(crate::io::EXIT_CHECK), // unreachable: 5*5*16 == 400
    }
}

fn flatten_400_mut(p: &mut [[[f32; 16]; 5]; 5]) -> &mut [f32; 400] {
    let s: &mut [f32] = p.as_flattened_mut().as_flattened_mut();
    match s.try_into() {
        Ok(a) => a,
        Err(_) => crate::io::exit(crate::io::EXIT_CHECK), // unreachable: 5*5*16 == 400
    }
}
