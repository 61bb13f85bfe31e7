//! Fixed-point primitives shared by every layer (docs/integer_training.md §1, §3, §4).
//!
//! Everything here is integer arithmetic; the functions are `const`-free of panics: shifts are
//! range-checked so no input can overflow or panic.

/// Mantissa width of the error signals δ (|δ| ≤ 2^12), see §4.
pub const DELTA_BITS: u32 = 12;
/// Mantissa width of intermediate error vectors after average pooling, see §4.2.
pub const ERR_BITS: u32 = 24;
/// Largest per-unit step factor `r` in Q16 steps (§5.1).
pub const R_MAX: i64 = 1 << 20;
/// Largest weight change per update, in Q16 steps: 8 quantization steps (§5.2).
pub const V_MAX: i64 = 8 << 16;

/// Round-half-up arithmetic shift right by `r` (left shift when `r < 0`).
///
/// Shifts of 63 or more return 0. Left shifts wrap; callers bound the operand first.
#[inline(always)]
pub fn shr_round(x: i64, r: i32) -> i64 {
    if r >= 63 {
        0
    } else if r > 0 {
        x.wrapping_add(1i64 << (r - 1)) >> r
    } else if r == 0 {
        x
    } else {
        let l = (-r) as u32;
        if l >= 64 {
            0
        } else {
            x.wrapping_shl(l)
        }
    }
}

/// Saturate an `i64` to the `i32` range.
#[inline(always)]
pub fn sat_i32(x: i64) -> i32 {
    if x > i32::MAX as i64 {
        i32::MAX
    } else if x < i32::MIN as i64 {
        i32::MIN
    } else {
        x as i32
    }
}

/// `clamp(x · 2^k, -lim, lim)` computed exactly for `k ≥ 0`; returns the value and whether it
/// was clamped.
#[inline]
pub fn shl_sat(x: i64, k: i32, lim: i64) -> (i64, bool) {
    debug_assert!(k >= 0);
    let k = k as u32;
    let bound = if k >= 63 { 0 } else { lim >> k };
    if x > bound {
        (lim, true)
    } else if x < -bound {
        (-lim, true)
    } else {
        let v = x << k.min(62);
        if v > lim {
            (lim, true)
        } else if v < -lim {
            (-lim, true)
        } else {
            (v, false)
        }
    }
}

/// `clamp(round(x · 2^k), -lim, lim)` for any sign of `k` (§5.1 and §5.3).
#[inline]
pub fn scale_sat(x: i64, k: i32, lim: i64) -> (i64, bool) {
    if k >= 0 {
        shl_sat(x, k, lim)
    } else {
        let v = shr_round(x, -k);
        if v > lim {
            (lim, true)
        } else if v < -lim {
            (-lim, true)
        } else {
            (v, false)
        }
    }
}

/// A real multiplier `M = m · 2^(s − 31)` with `m ∈ [2^30, 2^31)`, `s ∈ [−31, 30]` (§1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Multiplier {
    /// Q31 mantissa.
    pub m: i32,
    /// Exponent.
    pub s: i8,
}

impl Multiplier {
    /// Whether the pair is inside the ranges the format allows.
    pub const fn is_valid(self) -> bool {
        self.m >= (1 << 30) && self.s >= -31 && self.s <= 30
    }
}

/// Requantize an accumulator: `sat_i32(shr_round(acc · m, 31 − s))`.
///
/// For total shifts `t = 31 − s ≥ 33` (every multiplier below 1/4) only the high word of the
/// product matters: with `p = hi·2^32 + lo`, `⌊(p + 2^(t−1)) / 2^t⌋ = (hi + 2^(t−33)) >> (t−32)`
/// because `lo / 2^32 < 1` cannot carry past a multiple of `2^(t−32)`. On 32-bit cores that is
/// one `SMULL`, an add and a shift instead of a 64-bit variable shift; the result is identical.
#[inline(always)]
pub fn requant(acc: i32, m: i32, s: i8) -> i32 {
    let t = 31 - s as i32;
    if (33..=62).contains(&t) {
        let hi = ((acc as i64 * m as i64) >> 32) as i32;
        // |acc·m| < 2^62, so |hi| < 2^30. Rounding half up by `k = t − 32 ≥ 1` bits:
        // ⌊(hi + 2^(k−1)) / 2^k⌋ = (⌊hi / 2^(k−1)⌋ + 1) >> 1 (the dropped low bits are below
        // half a step either way), one shift and an add cheaper.
        ((hi >> (t - 33)) + 1) >> 1
    } else {
        sat_i32(shr_round(acc as i64 * m as i64, t))
    }
}

/// Bit length of `|x|` (0 for 0).
#[inline(always)]
pub fn bit_length(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Shift that brings the largest magnitude `max_abs` to `bits` bits (§4, `normalize`).
#[inline]
pub fn normalize_shift(max_abs: u64, bits: u32) -> i32 {
    bit_length(max_abs) as i32 - bits as i32
}

/// `2^(−f/65536)` in Q16 for `f ∈ [0, 65536)` (cubic, relative error < 2.6e−4).
#[inline]
pub fn exp2_frac(f: i64) -> i64 {
    let mut p = (2648 * f) >> 16;
    p = ((15212 - p) * f) >> 16;
    p = ((45340 - p) * f) >> 16;
    65536 - p
}

/// `log2(x)` in Q16 for `x ≥ 1` (error < 0.008 bit).
#[inline]
pub fn log2_q16(x: u64) -> i64 {
    if x == 0 {
        return 0;
    }
    let k = 63 - x.leading_zeros() as i64;
    // m = x / 2^k in Q16, in [65536, 131072)
    let m = if k >= 16 {
        (x >> (k - 16)) as i64
    } else {
        (x << (16 - k)) as i64
    };
    let fr = m - 65536;
    (k << 16) + fr + ((22610 * fr * (65536 - fr)) >> 32)
}

/// Result of the fixed-point softmax cross-entropy (§3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossOut {
    /// `32768 − p_label` (one minus confidence, Q15).
    pub loss_q15: i32,
    /// Cross-entropy in nats, Q16.
    pub ce_q16: i32,
    /// Arg-max of the logits (first maximum).
    pub pred: u8,
}

/// Softmax probabilities (Q15) of int8 logits; writes `p` and returns `(S, v_label-free sum)`.
///
/// `p.len()` must equal `logits.len()`; extra entries are ignored.
pub fn softmax_q15(logits: &[i8], softmax_a: i32, p: &mut [i32]) -> u64 {
    let ymax = logits.iter().copied().max().unwrap_or(0) as i32;
    let mut sum: u64 = 0;
    for (pi, &y) in p.iter_mut().zip(logits) {
        let e = exp_term(y as i32 - ymax, softmax_a);
        *pi = e as i32;
        sum += e;
    }
    if sum == 0 {
        return 0;
    }
    // Every term is at most 2^16, so the numerators and the sum fit 32 bits for any realistic
    // class count: a 32-bit division (one `UDIV` on Armv7-M, a short helper elsewhere) gives
    // the same quotient as the 64-bit one, which stays for the rest.
    let sum32 = u32::try_from(sum).ok().and_then(core::num::NonZeroU32::new);
    for pi in p.iter_mut() {
        let num = *pi as u64 * 32768 + sum / 2;
        *pi = match (sum32, u32::try_from(num)) {
            (Some(s), Ok(n)) => (n / s) as i32,
            _ => (num / sum) as i32,
        };
    }
    sum
}

#[inline]
fn exp_term(d: i32, a: i32) -> u64 {
    let nv = -(a as i64 * d as i64); // ≥ 0
    let n = nv >> 16;
    let f = nv & 0xFFFF;
    if n >= 32 {
        0
    } else {
        (exp2_frac(f) >> n) as u64
    }
}

/// Index of the first maximal element (0 for an empty slice).
pub fn argmax_first(v: &[i8]) -> usize {
    let mut best = (0usize, i8::MIN);
    for (i, &y) in v.iter().enumerate() {
        if i == 0 || y > best.1 {
            best = (i, y);
        }
    }
    best.0
}

/// Fixed-point softmax cross-entropy: fills `g` with the Q15 gradient wrt the real logits
/// (`p − onehot(label)`) and returns the loss figures.
pub fn softmax_ce(logits: &[i8], label: usize, softmax_a: i32, g: &mut [i32]) -> LossOut {
    let sum = softmax_q15(logits, softmax_a, g);
    let pred = argmax_first(logits);
    let p_label = g.get(label).copied().unwrap_or(0);
    if let Some(gl) = g.get_mut(label) {
        *gl -= 32768;
    }
    let ymax = logits.iter().copied().max().unwrap_or(0) as i64;
    let d_label = logits.get(label).copied().unwrap_or(0) as i64 - ymax;
    let v_label = softmax_a as i64 * d_label;
    let l2 = log2_q16(sum);
    let ce = ((l2 - (16 << 16) - v_label) * 45426) >> 16;
    LossOut {
        loss_q15: 32768 - p_label,
        ce_q16: sat_i32(ce.max(0)),
        pred: pred as u8,
    }
}

/// The stochastic-rounding generator: a 32-bit LCG (§5.2), one draw per updated weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lcg {
    /// Current state.
    pub state: u32,
}

impl Lcg {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u32) -> Self {
        Self { state: seed }
    }

    /// Advance and return the top 16 bits.
    #[inline(always)]
    pub fn next16(&mut self) -> i32 {
        self.state = self.state.wrapping_mul(1664525).wrapping_add(1013904223);
        (self.state >> 16) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shr_round_rounds_half_up() {
        assert_eq!(shr_round(5, 1), 3);
        assert_eq!(shr_round(-5, 1), -2);
        assert_eq!(shr_round(-6, 2), -1);
        assert_eq!(shr_round(7, 0), 7);
        assert_eq!(shr_round(3, -2), 12);
        assert_eq!(shr_round(i64::MAX, 70), 0);
    }

    #[test]
    fn requant_matches_real_multiplier() {
        // M = 0.75 = 2^30·1.5 / 2^31 → m = 3·2^29 with s = 0
        let m = 3 << 29;
        assert_eq!(requant(100, m, 0), 75);
        assert_eq!(requant(-100, m, 0), -75);
        assert_eq!(requant(i32::MAX, i32::MAX, 30), i32::MAX);
    }

    #[test]
    fn softmax_probabilities_sum_to_one() {
        let logits = [10i8, -3, 40, 0, 7];
        let mut p = [0i32; 5];
        let a = (0.1f64 * core::f64::consts::LOG2_E * 65536.0).round() as i32;
        softmax_q15(&logits, a, &mut p);
        let s: i32 = p.iter().sum();
        assert!((s - 32768).abs() <= 3, "{s}");
        let expect: [f64; 5] = {
            let e: [f64; 5] = core::array::from_fn(|i| (0.1 * (logits[i] as f64 - 40.0)).exp());
            let t: f64 = e.iter().sum();
            core::array::from_fn(|i| e[i] / t)
        };
        for i in 0..5 {
            assert!((p[i] as f64 / 32768.0 - expect[i]).abs() < 1e-3);
        }
    }

    #[test]
    fn cross_entropy_close_to_float() {
        let logits = [10i8, -3, 40, 0, 7];
        let mut g = [0i32; 5];
        let a = (0.1f64 * core::f64::consts::LOG2_E * 65536.0).round() as i32;
        let out = softmax_ce(&logits, 0, a, &mut g);
        let e: f64 = logits.iter().map(|&l| (0.1 * l as f64).exp()).sum();
        let ce = -((0.1 * 10.0f64).exp() / e).ln();
        assert!(
            (out.ce_q16 as f64 / 65536.0 - ce).abs() < 0.01,
            "{} {ce}",
            out.ce_q16
        );
        assert_eq!(out.pred, 2);
        assert!(g[0] < 0 && g[2] > 0);
    }

    #[test]
    fn scale_sat_clamps_both_ways() {
        assert_eq!(scale_sat(3, 2, 100), (12, false));
        assert_eq!(scale_sat(30, 2, 100), (100, true));
        assert_eq!(scale_sat(-30, 80, 100), (-100, true));
        assert_eq!(scale_sat(-7, -1, 100), (-3, false));
        assert_eq!(scale_sat(0, 80, 100), (0, false));
    }
}
