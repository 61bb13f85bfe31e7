//! Armv7E-M assembly for the dense forward of a fixed fan-in `N` (Cortex-M4/M7), with the
//! portable code it replaces, which every other target runs and the host tests check.
//!
//! * [`pack_input`]: the centred input `x − z_x` as the 16-bit pairs of [`crate::dense`],
//!   unrolled (`.rept`): six instructions per four inputs.
//! * [`sums4`]: `Σ w·xc` of four rows, unrolled over the fan-in with no loop counter: per two
//!   column groups one `LDM` of four pair words, then per row and group one `LDR`, two
//!   `SXTB16`, two `SMLAD` (41 instructions per 32 multiply-accumulates).
//! * [`finish4`]: requantization, zero point, clamp, ReLU and saturation count of four outputs
//!   (docs §2) in about 14 instructions each, for requant exponents `s ∈ [−31, −2]` (the
//!   one-word path of [`crate::fixed::requant`]); otherwise the caller runs
//!   [`crate::kernels::finish_output`]. Bit for bit the same outputs and counts.
//!
//! The host cannot run Thumb code: [`finish4_mirror`] is the same algorithm in Rust, step by
//! step, and the tests check it against the definition; the benchmark's cross-target equality
//! checks the assembly itself.

use crate::layer::ChannelParams;

/// Largest `N` unrolled by [`sums4`] and [`pack_input`] (code size: about 5 instructions per
/// weight column); wider layers keep the looped kernel.
#[cfg_attr(
    not(all(target_arch = "arm", target_feature = "dsp")),
    allow(dead_code)
)]
pub const UNROLL_MAX_N: usize = 128;

/// Whether the unrolled kernels serve fan-in `n` on this target.
#[cfg_attr(
    not(all(target_arch = "arm", target_feature = "dsp")),
    allow(dead_code)
)]
pub const fn unrolled(n: usize) -> bool {
    cfg!(all(target_arch = "arm", target_feature = "dsp")) && n >= 4 && n <= UNROLL_MAX_N
}

/// The packed centred input of [`crate::dense::forward_packed`]: `pairs` gets
/// `(xc[4k], xc[4k+2])`, `(xc[4k+1], xc[4k+3])` per group of four, `tail` the last `N mod 4`
/// as `i32`. `pairs` and `tail` must be contiguous for [`sums4`].
#[inline(always)]
pub fn pack_input<const N: usize>(x: &[i8], zx: i32, pairs: &mut [i32], tail: &mut [i32]) {
    let zz = crate::dsp::pkhbt(zx as u32, zx as u32);
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    if unrolled(N)
        && x.len() >= N
        && pairs.len() == 2 * (N / 4)
        && tail.len() == N % 4
        && pairs.as_ptr_range().end as usize == tail.as_ptr() as usize
    {
        // SAFETY: reads `x[..N]` (unaligned `LDR` is allowed on Armv7-M), writes the
        // `2·(N/4) + N mod 4` words of `pairs` then `tail` (contiguous, checked; word
        // aligned, `STRD`), both exclusively borrowed.
        unsafe {
            core::arch::asm!(
                ".rept {g}",
                "ldr {a}, [{x}], #4",
                "sxtb16 {t}, {a}",
                "sxtb16 {a}, {a}, ror #8",
                "ssub16 {t}, {t}, {zz}",
                "ssub16 {a}, {a}, {zz}",
                "strd {t}, {a}, [{p}], #8",
                ".endr",
                ".rept {tl}",
                "ldrsb {a}, [{x}], #1",
                "sub {a}, {a}, {zx}",
                "str {a}, [{p}], #4",
                ".endr",
                x = inout(reg) x.as_ptr() => _,
                p = inout(reg) pairs.as_mut_ptr() => _,
                zz = in(reg) zz,
                zx = in(reg) zx,
                a = out(reg) _,
                t = out(reg) _,
                g = const N / 4,
                tl = const N % 4,
                options(nostack)
            );
        }
        return;
    }
    let (xq, xr) = x.as_chunks::<4>();
    // `as_chunks` (fixed-size arrays) rather than `chunks_exact`: zipping the latter keeps a
    // division by the chunk size, i.e. a divide-by-zero panic path, in the firmware.
    // (x[4k], x[4k+2]) and (x[4k+1], x[4k+3]) sign-extended (SXTB16), minus z_x per lane
    // (SSUB16): |x − z_x| ≤ 255 fits a lane.
    for ([p0, p1], x4) in pairs.as_chunks_mut::<2>().0.iter_mut().zip(xq) {
        let v = u32::from_le_bytes([x4[0] as u8, x4[1] as u8, x4[2] as u8, x4[3] as u8]);
        *p0 = crate::dsp::ssub16(crate::dsp::sxtb16(v), zz) as i32;
        *p1 = crate::dsp::ssub16(crate::dsp::sxtb16_ror8(v), zz) as i32;
    }
    for (t, &v) in tail.iter_mut().zip(xr) {
        *t = v as i32 - zx;
    }
}

/// One column group of four rows: the pair words in `$p0`, `$p1`; rows 1 to 3 at immediate
/// offsets `N`, `2N`, `3N` from `{w}`, row 0 at `{w}` (post-incremented by 4, so every group
/// is the same code).
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! group4u {
    ($p0:literal, $p1:literal) => {
        concat!(
            "ldr {a}, [{w}, #{n1}]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s1}, {t}, ",
            $p0,
            ", {s1}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s1}, {a}, ",
            $p1,
            ", {s1}\n",
            "ldr {a}, [{w}, #{n2}]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s2}, {t}, ",
            $p0,
            ", {s2}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s2}, {a}, ",
            $p1,
            ", {s2}\n",
            "ldr {a}, [{w}, #{n3}]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s3}, {t}, ",
            $p0,
            ", {s3}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s3}, {a}, ",
            $p1,
            ", {s3}\n",
            "ldr {a}, [{w}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s0}, {t}, ",
            $p0,
            ", {s0}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s0}, {a}, ",
            $p1,
            ", {s0}\n",
        )
    };
}

/// `Σ w·xc` of the four rows of `blk` (`4N` weights) over the packed input at `packed`
/// (`pairs` then `tail`, contiguous, as [`pack_input`] writes them), unrolled; `None` where
/// [`unrolled`] is false or `blk` is short (the caller then runs the looped kernel).
#[inline(always)]
pub fn sums4<const N: usize>(blk: &[i8], packed: &[i32]) -> Option<[i32; 4]> {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    if unrolled(N) && blk.len() >= 4 * N && packed.len() >= 2 * (N / 4) + N % 4 {
        let [mut s0, mut s1, mut s2, mut s3] = [0i32; 4];
        // SAFETY: row r's bytes `blk[r·N .. r·N + N]` (r ≤ 3, 4N ≤ len, checked) are read as
        // `N/4` words then `N mod 4` bytes (`3N + N ≤ 4095` fits the `LDR` offsets as
        // N ≤ UNROLL_MAX_N); `packed[..2·(N/4) + N mod 4]` (checked) is read in order, by
        // `LDM`/`LDRD` (word aligned `i32`). Unaligned `LDR` is allowed on Armv7-M. Read only.
        unsafe {
            core::arch::asm!(
                ".rept {g2}",
                "ldm {x}!, {{r0, r1, r2, r3}}",
                group4u!("r0", "r1"),
                group4u!("r2", "r3"),
                ".endr",
                ".rept {g1}",
                "ldrd r0, r1, [{x}], #8",
                group4u!("r0", "r1"),
                ".endr",
                ".rept {tl}",
                "ldr r0, [{x}], #4",
                "ldrsb {a}, [{w}, #{n1}]",
                "mla {s1}, {a}, r0, {s1}",
                "ldrsb {a}, [{w}, #{n2}]",
                "mla {s2}, {a}, r0, {s2}",
                "ldrsb {a}, [{w}, #{n3}]",
                "mla {s3}, {a}, r0, {s3}",
                "ldrsb {a}, [{w}], #1",
                "mla {s0}, {a}, r0, {s0}",
                ".endr",
                w = inout(reg) blk.as_ptr() => _,
                x = inout(reg) packed.as_ptr() => _,
                s0 = inout(reg) s0,
                s1 = inout(reg) s1,
                s2 = inout(reg) s2,
                s3 = inout(reg) s3,
                a = out(reg) _,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                g2 = const N / 8,
                g1 = const (N / 4) % 2,
                tl = const N % 4,
                n1 = const N,
                n2 = const 2 * N,
                n3 = const 3 * N,
                options(pure, readonly, nostack)
            );
        }
        return Some([s0, s1, s2, s3]);
    }
    let _ = (blk, packed);
    None
}

/// `v = requant(bias + sum) + z_y` of one output into `$s` (the sum), bias and multiplier at
/// byte `$o` of `{pb}`, `{pm}`, ASR amount in the low byte of `$k` (after `$kprep`, which
/// may use `{t}` once the multiplier is consumed).
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! fin_v {
    ($s:literal, $o:literal, $k:literal, $kprep:literal) => {
        concat!(
            "ldr {t}, [{pb}, #",
            $o,
            "]\n",
            "qadd ",
            $s,
            ", ",
            $s,
            ", {t}\n",
            "ldr {t}, [{pm}, #",
            $o,
            "]\n",
            "smull {lo}, ",
            $s,
            ", ",
            $s,
            ", {t}\n",
            $kprep,
            "\n",
            "asr ",
            $s,
            ", ",
            $s,
            ", ",
            $k,
            "\n",
            "add ",
            $s,
            ", ",
            $s,
            ", #1\n",
            "add ",
            $s,
            ", {zy}, ",
            $s,
            ", asr #1\n",
        )
    };
}

/// [`fin_v`] then the ReLU saturation count `$count` (of `v < 128` into `{ns}`, from
/// `{lo} = v − 128`) and the clamp to int8.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! fin {
    ($s:literal, $o:literal, $k:literal, $kprep:literal, $count:literal) => {
        concat!(
            fin_v!($s, $o, $k, $kprep),
            "sub {lo}, ",
            $s,
            ", #128\n",
            $count,
            "\n",
            "ssat ",
            $s,
            ", #8, ",
            $s,
            "\n",
        )
    };
}

/// Outputs `c .. c + 4` from their sums `s` (docs §2): the four int8 outputs as one
/// little-endian word and the number of saturations, or `None` when a requant exponent is
/// outside `[−31, −2]`, the channels do not exist, or the target has no DSP extension (the
/// caller then runs [`crate::kernels::finish_output`] per output).
#[inline(always)]
pub fn finish4<const OUT: usize>(
    s: [i32; 4],
    q: &ChannelParams<OUT>,
    c: usize,
    relu: bool,
) -> Option<(u32, u32)> {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let (Some(bias), Some(m), Some(sh)) = (
            q.bias.get(c..c + 4),
            q.m.get(c..c + 4),
            q.s.get(c..c + 4).and_then(|v| v.first_chunk::<4>()),
        ) else {
            return None;
        };
        let kw = u32::from_le_bytes([sh[0] as u8, sh[1] as u8, sh[2] as u8, sh[3] as u8]);
        let zy = q.z_y as i32;
        let [mut s0, s1, s2, s3] = s;
        // 8 (more than four outputs) tells that the assembly left the outputs to the caller.
        let mut ns = 8u32;
        // SAFETY (both blocks): reads `bias[c..c + 4]` and `m[c..c + 4]` (word aligned, in
        // bounds, checked above); registers otherwise. Why each step equals the definition:
        // see `finish4_mirror`.
        if relu {
            let zy4 = (q.z_y as u8 as u32) * 0x0101_0101;
            unsafe {
                core::arch::asm!(
                    // k = 254 − s per byte (ASR amounts for t = 31 − s: k = t − 33); every
                    // k ≤ 29 or leave it to the caller.
                    "mov {t}, #0xFEFEFEFE",
                    "usub8 {kw}, {t}, {kw}",
                    "mov {t}, #0x1D1D1D1D",
                    "uqsub8 {t}, {kw}, {t}",
                    "cmp {t}, #0",
                    "bne 9f",
                    fin!("{s0}", "0", "{kw}", "", "lsr {ns}, {lo}, #31"),
                    fin!("{s1}", "4", "{t}", "lsr {t}, {kw}, #8", "add {ns}, {ns}, {lo}, lsr #31"),
                    fin!("{s2}", "8", "{t}", "lsr {t}, {kw}, #16", "add {ns}, {ns}, {lo}, lsr #31"),
                    fin!("{s3}", "12", "{t}", "lsr {t}, {kw}, #24", "add {ns}, {ns}, {lo}, lsr #31"),
                    "bfi {s0}, {s1}, #8, #8",
                    "bfi {s0}, {s2}, #16, #8",
                    "bfi {s0}, {s3}, #24, #8",
                    // ReLU: max(y, z_y) per byte.
                    "ssub8 {t}, {s0}, {zy4}",
                    "sel {s0}, {s0}, {zy4}",
                    "9:",
                    s0 = inout(reg) s0,
                    s1 = inout(reg) s1 => _,
                    s2 = inout(reg) s2 => _,
                    s3 = inout(reg) s3 => _,
                    kw = inout(reg) kw => _,
                    ns = inout(reg) ns,
                    pb = in(reg) bias.as_ptr(),
                    pm = in(reg) m.as_ptr(),
                    zy = in(reg) zy,
                    zy4 = in(reg) zy4,
                    t = out(reg) _,
                    lo = out(reg) _,
                    options(pure, readonly, nostack)
                );
            }
        } else {
            unsafe {
                core::arch::asm!(
                    "mov {t}, #0xFEFEFEFE",
                    "usub8 {kw}, {t}, {kw}",
                    "mov {t}, #0x1D1D1D1D",
                    "uqsub8 {t}, {kw}, {t}",
                    "cmp {t}, #0",
                    "bne 9f",
                    fin_v!("{s0}", "0", "{kw}", ""),
                    // Not saturated iff v = clamp(v): count those (CLZ(0) = 32).
                    "ssat {t}, #8, {s0}",
                    "sub {lo}, {s0}, {t}",
                    "clz {lo}, {lo}",
                    "lsr {ns}, {lo}, #5",
                    "mov {s0}, {t}",
                    fin_v!("{s1}", "4", "{t}", "lsr {t}, {kw}, #8"),
                    "ssat {t}, #8, {s1}",
                    "sub {lo}, {s1}, {t}",
                    "clz {lo}, {lo}",
                    "add {ns}, {ns}, {lo}, lsr #5",
                    "bfi {s0}, {t}, #8, #8",
                    fin_v!("{s2}", "8", "{t}", "lsr {t}, {kw}, #16"),
                    "ssat {t}, #8, {s2}",
                    "sub {lo}, {s2}, {t}",
                    "clz {lo}, {lo}",
                    "add {ns}, {ns}, {lo}, lsr #5",
                    "bfi {s0}, {t}, #16, #8",
                    fin_v!("{s3}", "12", "{t}", "lsr {t}, {kw}, #24"),
                    "ssat {t}, #8, {s3}",
                    "sub {lo}, {s3}, {t}",
                    "clz {lo}, {lo}",
                    "add {ns}, {ns}, {lo}, lsr #5",
                    "bfi {s0}, {t}, #24, #8",
                    "9:",
                    s0 = inout(reg) s0,
                    s1 = inout(reg) s1 => _,
                    s2 = inout(reg) s2 => _,
                    s3 = inout(reg) s3 => _,
                    kw = inout(reg) kw => _,
                    ns = inout(reg) ns,
                    pb = in(reg) bias.as_ptr(),
                    pm = in(reg) m.as_ptr(),
                    zy = in(reg) zy,
                    t = out(reg) _,
                    lo = out(reg) _,
                    options(pure, readonly, nostack)
                );
            }
        }
        if ns > 4 {
            return None;
        }
        Some((s0 as u32, 4 - ns))
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let _ = (s, q, c, relu);
        None
    }
}

/// [`finish4`]'s algorithm in portable Rust, step by step (for the host tests): with
/// `k = 254 − (s as u8)` per byte (the `USUB8`), the fast path needs every `k ≤ 29`, i.e.
/// `s ∈ [−31, −2]` (`UQSUB8` against 29 is zero); then `hi = (acc·m) >> 32` (`SMULL`),
/// `((hi >> k) + 1) >> 1` is [`crate::fixed::requant`]'s one-word path (`t = 31 − s = k + 33`)
/// and `|hi| ≤ 2^30` makes the `+ z_y` exact (no saturation); the ReLU count is `v ≥ 128`
/// (`v − 128 < 0` counts the others), the other one `v ≠ clamp(v)` (`CLZ`), the ReLU itself a
/// per-byte maximum (`SSUB8` + `SEL`).
#[cfg(test)]
pub fn finish4_mirror<const OUT: usize>(
    s: [i32; 4],
    q: &ChannelParams<OUT>,
    c: usize,
    relu: bool,
) -> Option<(u32, u32)> {
    let (bias, m, sh) = (
        q.bias.get(c..c + 4)?,
        q.m.get(c..c + 4)?,
        q.s.get(c..c + 4)?,
    );
    let ks: [u8; 4] = core::array::from_fn(|r| 254u8.wrapping_sub(sh[r] as u8));
    if ks.iter().any(|&k| k > 29) {
        return None;
    }
    let mut word = 0u32;
    let mut ns = 0u32;
    for r in 0..4 {
        let acc = s[r].saturating_add(bias[r]);
        let hi = ((acc as i64 * m[r] as i64) >> 32) as i32;
        let v = q.z_y as i32 + (((hi >> ks[r]) + 1) >> 1);
        let y = v.clamp(-128, 127);
        let (y, not_sat) = if relu {
            (y.max(q.z_y as i32), v < 128)
        } else {
            (y, v == y)
        };
        ns += not_sat as u32;
        word |= (y as u8 as u32) << (8 * r);
    }
    Some((word, 4 - ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::finish_output;
    use proptest::prelude::*;

    proptest! {
        /// The fast finishing equals the definition wherever it applies, and applies to every
        /// exponent in [−31, −2].
        #[test]
        fn finish4_mirror_is_finish_output(
            s in proptest::array::uniform4(any::<i32>()),
            m in proptest::array::uniform4(any::<i32>()),
            sh in proptest::array::uniform4(-40i8..=2),
            bias in proptest::array::uniform4(any::<i32>()),
            zy in any::<i8>(),
            relu in any::<bool>(),
            big in any::<bool>(),
        ) {
            let mut q = ChannelParams::<6>::new();
            q.m[1..5].copy_from_slice(&m);
            q.s[1..5].copy_from_slice(&sh);
            q.bias[1..5].copy_from_slice(&bias);
            q.z_y = zy;
            // Also sums small enough that the outputs are not all saturated.
            let s = if big { s } else { s.map(|v| v >> 20) };
            let q = q;
            let got = finish4_mirror(s, &q, 1, relu);
            prop_assert_eq!(got.is_some(), sh.iter().all(|&v| (-31..=-2).contains(&v)));
            if let Some((word, sat)) = got {
                let mut want_sat = 0;
                let want: Vec<i8> =
                    (0..4).map(|r| finish_output(s[r], &q, 1 + r, relu, &mut want_sat)).collect();
                prop_assert_eq!(word.to_le_bytes().map(|b| b as i8).to_vec(), want);
                prop_assert_eq!(sat, want_sat);
            }
            prop_assert!(finish4_mirror(s, &q, 3, relu).is_none());
        }
    }

    #[test]
    fn finish4_mirror_at_the_edges() {
        let mut q = ChannelParams::<4>::new();
        for (&m, &sh) in [i32::MIN, i32::MAX, 1 << 30, -1]
            .iter()
            .zip(&[-2i8, -31, -2, -31])
        {
            for &s in &[i32::MIN, i32::MAX, 0, -1, 127, 128] {
                for &zy in &[-128i8, 0, 127] {
                    q.m = [m; 4];
                    q.s = [sh; 4];
                    q.bias = [i32::MAX, i32::MIN, 0, -5];
                    q.z_y = zy;
                    for relu in [false, true] {
                        let (word, sat) = finish4_mirror([s; 4], &q, 0, relu).unwrap();
                        let mut want_sat = 0;
                        for r in 0..4 {
                            let y = finish_output(s, &q, r, relu, &mut want_sat);
                            assert_eq!(word.to_le_bytes()[r] as i8, y);
                        }
                        assert_eq!(sat, want_sat);
                    }
                }
            }
        }
    }
}
