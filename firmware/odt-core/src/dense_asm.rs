//! Armv7E-M assembly for the dense forward of a fixed fan-in `N` (Cortex-M4/M7), with the
//! portable code it replaces, which every other target runs and the host tests check.
//!
//! * [`pack_input`]: the centred input `x − z_x` as the 16-bit pairs of [`crate::dense`],
//!   unrolled (`.rept`): six instructions per four inputs.
//! * [`sums4`]: `Σ w·xc` of four rows, unrolled over the fan-in with no loop counter: per two
//!   column groups one `LDM` of four pair words, then per row and group one `LDR`, two
//!   `SXTB16`, two `SMLAD` (41 instructions per 32 multiply-accumulates).
//! * [`Finish::four`]: requantization, zero point, clamp, ReLU and saturation count of four outputs
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
    cfg!(all(target_arch = "arm", target_feature = "dsp")) && n >= 8 && n <= UNROLL_MAX_N
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
    (first $p0:literal, $p1:literal) => {
        group4u!(@ $p0, $p1, concat!("smuad {s1}, {t}, ", $p0, "\n"),
            concat!("smuad {s2}, {t}, ", $p0, "\n"), concat!("smuad {s3}, {t}, ", $p0, "\n"),
            concat!("smuad {s0}, {t}, ", $p0, "\n"))
    };
    ($p0:literal, $p1:literal) => {
        group4u!(@ $p0, $p1, concat!("smlad {s1}, {t}, ", $p0, ", {s1}\n"),
            concat!("smlad {s2}, {t}, ", $p0, ", {s2}\n"),
            concat!("smlad {s3}, {t}, ", $p0, ", {s3}\n"),
            concat!("smlad {s0}, {t}, ", $p0, ", {s0}\n"))
    };
    (@ $p0:literal, $p1:literal, $f1:expr, $f2:expr, $f3:expr, $f0:expr) => {
        concat!(
            "ldr {a}, [{w}, #{n1}]\n",
            "sxtb16 {t}, {a}\n",
            $f1,
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s1}, {a}, ",
            $p1,
            ", {s1}\n",
            "ldr {a}, [{w}, #{n2}]\n",
            "sxtb16 {t}, {a}\n",
            $f2,
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s2}, {a}, ",
            $p1,
            ", {s2}\n",
            "ldr {a}, [{w}, #{n3}]\n",
            "sxtb16 {t}, {a}\n",
            $f3,
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s3}, {a}, ",
            $p1,
            ", {s3}\n",
            "ldr {a}, [{w}], #4\n",
            "sxtb16 {t}, {a}\n",
            $f0,
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
        let (s0, s1, s2, s3): (i32, i32, i32, i32);
        // SAFETY: row r's bytes `blk[r·N .. r·N + N]` (r ≤ 3, 4N ≤ len, checked) are read as
        // `N/4` words then `N mod 4` bytes (`3N + N ≤ 4095` fits the `LDR` offsets as
        // N ≤ UNROLL_MAX_N); `packed[..2·(N/4) + N mod 4]` (checked) is read in order, by
        // `LDM`/`LDRD` (word aligned `i32`). Unaligned `LDR` is allowed on Armv7-M. Read only.
        unsafe {
            core::arch::asm!(
                // The first two groups start the sums (`SMUAD`, no zeroing), N ≥ 8.
                "ldm {x}!, {{r0, r1, r2, r3}}",
                group4u!(first "r0", "r1"),
                group4u!("r2", "r3"),
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
                s0 = out(reg) s0,
                s1 = out(reg) s1,
                s2 = out(reg) s2,
                s3 = out(reg) s3,
                a = out(reg) _,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                g2 = const N / 8 - 1,
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

/// The layer constants of [`Finish::four`].
#[derive(Clone, Copy)]
#[cfg_attr(
    not(all(target_arch = "arm", target_feature = "dsp")),
    allow(dead_code)
)]
pub struct Finish {
    zy: i32,
    zy4: u32,
    relu: bool,
}

impl Finish {
    /// For a layer with parameters `q`.
    #[inline(always)]
    pub fn new<const OUT: usize>(q: &ChannelParams<OUT>, relu: bool) -> Self {
        Self {
            zy: q.z_y as i32,
            zy4: (q.z_y as u8 as u32) * 0x0101_0101,
            relu,
        }
    }

    /// Four outputs from their sums `s` and their channels' biases `b`, multipliers `m` and
    /// exponents `e` (docs §2): the int8 outputs as one little-endian word and the number of
    /// saturations, or `None` when an exponent is outside `[−31, −2]` or the target has no DSP
    /// extension (the caller then runs [`crate::kernels::finish_output`] per output).
    #[inline(always)]
    pub fn four(self, s: [i32; 4], b: &[i32; 4], m: &[i32; 4], e: &[i8; 4]) -> Option<(u32, u32)> {
        #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
        {
            let kw = u32::from_le_bytes(e.map(|v| v as u8));
            let Self { zy, zy4, relu } = self;
            let [mut s0, s1, s2, s3] = s;
            // 8 (more than four outputs) tells that the assembly left the outputs to the caller.
            let mut ns = 8u32;
            // SAFETY (both blocks): reads `b` and `m` (word aligned arrays); registers
            // otherwise. Why each step equals the definition: see `finish4_mirror`.
            if relu {
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
                        pb = in(reg) b.as_ptr(),
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
                        pb = in(reg) b.as_ptr(),
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
            let _ = (self, s, b, m, e);
            None
        }
    }
}

/// Ends the pairs of [`forward_packed_n4`]: no pair word of a centred input is this (its
/// lanes are in [−255, 255]), so the kernel needs no loop counter.
const SENTINEL: u32 = 0x8000_8000;

/// [`crate::dense::forward_packed_n`] in blocks of four rows for a fan-in `n ≥ 8` known at
/// run time: the packed input is `pairs`, two [`SENTINEL`] words, then the `n mod 4` tail (so
/// `2·(n/4) + 2 + n mod 4 ≤ n` words of scratch), each block's sums by [`sums4_n`] and its
/// outputs by [`Finish::four`] (or [`crate::kernels::finish_output`]), the last `rows mod 4`
/// rows one by one. Returns `false` (doing nothing) for `n < 8` or short buffers.
#[allow(clippy::too_many_arguments)]
pub fn forward_packed_n4<const OUT: usize>(
    n: usize,
    rows: usize,
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut crate::layer::Counters,
    scratch: &mut [i32],
) -> bool {
    use crate::kernels::finish_output;
    let groups = n / 4;
    let rows = rows.min(OUT);
    let len = 2 * groups + 2 + n % 4;
    let (Some(x), Some(buf)) = (x.get(..n), scratch.get_mut(..len)) else {
        return false;
    };
    if n < 8 || w.len() < rows * n || y.len() < rows {
        return false;
    }
    let zx = q.z_x as i32;
    let Some((pairs, rest)) = buf.split_at_mut_checked(2 * groups) else {
        return false;
    };
    let Some((sent, tail)) = rest.split_at_mut_checked(2) else {
        return false;
    };
    pack_input_rt(x, zx, pairs, tail);
    sent.fill(SENTINEL as i32);
    let packed = &*buf;
    let (pairs, rest) = packed.split_at(2 * groups);
    let tail = rest.get(2..).unwrap_or(&[]);
    let fin = Finish::new(q, relu);
    let mut sat = 0u32;
    let mut c = 0;
    // (Weight blocks split off one by one: `chunks_exact` of a run-time size keeps a division
    // by it, a divide-by-zero panic path, in the firmware.)
    let mut wrest = w;
    let params = q
        .bias
        .as_chunks::<4>()
        .0
        .iter()
        .zip(q.m.as_chunks::<4>().0)
        .zip(q.s.as_chunks::<4>().0);
    for (out, ((b4, m4), e4)) in y.chunks_exact_mut(4).zip(params).take(rows / 4) {
        let Some((blk, rest)) = wrest.split_at_checked(4 * n) else {
            break;
        };
        wrest = rest;
        let s = sums4_n(n, blk, packed);
        match fin.four(s, b4, m4, e4) {
            Some((word, k)) => {
                for (o, b) in out.iter_mut().zip(word.to_le_bytes()) {
                    *o = b as i8;
                }
                sat += k;
            }
            None => {
                for (k, (o, &v)) in out.iter_mut().zip(&s).enumerate() {
                    *o = finish_output(v, q, c + k, relu, &mut sat);
                }
            }
        }
        c += 4;
    }
    while c < rows {
        let row = w.get(c * n..(c + 1) * n).unwrap_or(&[]);
        let v = dot_packed(row, pairs, tail);
        if let Some(o) = y.get_mut(c) {
            *o = finish_output(v, q, c, relu, &mut sat);
        }
        c += 1;
    }
    ctr.forward_saturations = ctr.forward_saturations.wrapping_add(sat);
    true
}

/// [`pack_input`] for a run-time length (`x.len()` inputs).
#[inline(always)]
fn pack_input_rt(x: &[i8], zx: i32, pairs: &mut [i32], tail: &mut [i32]) {
    let zz = crate::dsp::pkhbt(zx as u32, zx as u32);
    let (xq, xr) = x.as_chunks::<4>();
    for ([p0, p1], x4) in pairs.as_chunks_mut::<2>().0.iter_mut().zip(xq) {
        let v = u32::from_le_bytes([x4[0] as u8, x4[1] as u8, x4[2] as u8, x4[3] as u8]);
        *p0 = crate::dsp::ssub16(crate::dsp::sxtb16(v), zz) as i32;
        *p1 = crate::dsp::ssub16(crate::dsp::sxtb16_ror8(v), zz) as i32;
    }
    for (t, &v) in tail.iter_mut().zip(xr) {
        *t = v as i32 - zx;
    }
}

/// `Σ w·xc` of one row over the packed input (portable; `SMLAD` emulated off Armv7E-M).
#[inline(always)]
fn dot_packed(row: &[i8], pairs: &[i32], tail: &[i32]) -> i32 {
    let (body, rest) = row.as_chunks::<4>();
    let mut s = 0i32;
    for (a, &[p0, p1]) in body.iter().zip(pairs.as_chunks::<2>().0) {
        let a = u32::from_le_bytes([a[0] as u8, a[1] as u8, a[2] as u8, a[3] as u8]);
        s = crate::dsp::smlad(crate::dsp::sxtb16(a), p0 as u32, s);
        s = crate::dsp::smlad(crate::dsp::sxtb16_ror8(a), p1 as u32, s);
    }
    for (&a, &xv) in rest.iter().zip(tail) {
        s = s.wrapping_add(a as i32 * xv);
    }
    s
}

/// One column group of four rows with stride `{n}` in a register: rows 1 and 3 at `[wa, n]`,
/// `[wb, n]`, rows 0 and 2 at `[wa]`, `[wb]` (post-incremented), the pairs in `{p0}`, `{p1}`.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! group4n {
    () => {
        concat!(
            "ldr {a}, [{wa}, {n}]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s1}, {t}, {p0}, {s1}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s1}, {a}, {p1}, {s1}\n",
            "ldr {a}, [{wb}, {n}]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s3}, {t}, {p0}, {s3}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s3}, {a}, {p1}, {s3}\n",
            "ldr {a}, [{wb}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s2}, {t}, {p0}, {s2}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s2}, {a}, {p1}, {s2}\n",
            "ldr {a}, [{wa}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s0}, {t}, {p0}, {s0}\n",
            "sxtb16 {a}, {a}, ror #8\n",
            "smlad {s0}, {a}, {p1}, {s0}\n",
        )
    };
}

/// `Σ w·xc` of the four rows of `blk` (`4n` weights, `n ≥ 8`) over the packed input of
/// [`forward_packed_n4`]. On Armv7E-M one loop of two column groups (44 instructions per 32
/// multiply-accumulates) that ends at the [`SENTINEL`] (all twelve registers hold operands,
/// none is left for a counter), the odd group first, then the tail columns (`LDRSB` + `MLA`).
#[inline(always)]
fn sums4_n(n: usize, blk: &[i8], packed: &[i32]) -> [i32; 4] {
    let groups = n / 4;
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    if groups >= 2
        && blk.len() >= 4 * n
        && packed.len() >= 2 * groups + 2 + n % 4
        && packed.get(2 * groups) == Some(&(SENTINEL as i32))
    {
        let [mut s0, mut s1, mut s2, mut s3] = [0i32; 4];
        // SAFETY: row r's bytes `blk[r·n .. r·n + n]` (4n ≤ len, checked) are read as `n/4`
        // words then `n mod 4` bytes, through `wa` (rows 0, 1) and `wb = wa + 2n` (rows 2, 3);
        // `packed` is read in order: the `2·(n/4)` pair words, the sentinel pair (checked:
        // the loop stops there; the pairs themselves never equal it) and the `n mod 4` tail
        // words, `2·(n/4) + 2 + n mod 4 ≤ len` (checked). Unaligned `LDR` is allowed on
        // Armv7-M; `LDRD` reads word-aligned `i32`s. Read only.
        unsafe {
            core::arch::asm!(
                // An odd group count: one group before the loop of two.
                "cmp {p0}, #0",
                "beq 3f",
                "ldrd {p0}, {p1}, [{x}], #8",
                group4n!(),
                "3:",
                "ldrd {p0}, {p1}, [{x}], #8",
                "2:",
                group4n!(),
                "ldrd {p0}, {p1}, [{x}], #8",
                group4n!(),
                "ldrd {p0}, {p1}, [{x}], #8",
                "cmp {p0}, #0x80008000",
                "bne 2b",
                // The tail columns (x is past the sentinel pair).
                "ands {p1}, {n}, #3",
                "beq 5f",
                "4:",
                "ldr {p0}, [{x}], #4",
                "ldrsb {a}, [{wa}, {n}]",
                "mla {s1}, {a}, {p0}, {s1}",
                "ldrsb {a}, [{wb}, {n}]",
                "mla {s3}, {a}, {p0}, {s3}",
                "ldrsb {a}, [{wb}], #1",
                "mla {s2}, {a}, {p0}, {s2}",
                "ldrsb {a}, [{wa}], #1",
                "mla {s0}, {a}, {p0}, {s0}",
                "subs {p1}, {p1}, #1",
                "bne 4b",
                "5:",
                wa = inout(reg) blk.as_ptr() => _,
                wb = inout(reg) blk.as_ptr().wrapping_add(2 * n) => _,
                n = in(reg) n,
                x = inout(reg) packed.as_ptr() => _,
                s0 = inout(reg) s0,
                s1 = inout(reg) s1,
                s2 = inout(reg) s2,
                s3 = inout(reg) s3,
                a = out(reg) _,
                t = out(reg) _,
                p0 = inout(reg) groups % 2 => _,
                p1 = out(reg) _,
                options(pure, readonly, nostack)
            );
        }
        return [s0, s1, s2, s3];
    }
    let pairs = packed.get(..2 * groups).unwrap_or(&[]);
    let tail = packed.get(2 * groups + 2..).unwrap_or(&[]);
    core::array::from_fn(|r| dot_packed(blk.get(r * n..(r + 1) * n).unwrap_or(&[]), pairs, tail))
}

/// [`Finish::four`]'s algorithm in portable Rust, step by step (for the host tests): with
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

    proptest! {
        /// The four-row run-time kernel (portable sums here) equals the scalar kernel.
        #[test]
        fn forward_packed_n4_equals_scalar(
            n in 1usize..40,
            rows in 1usize..12,
            data in proptest::collection::vec(any::<i8>(), 40 * 13),
            seed in any::<u32>(),
            relu in any::<bool>(),
        ) {
            let (x, w) = data.split_at(n);
            let mut q = ChannelParams::<12>::new();
            let mut r = seed;
            for c in 0..12 {
                r = r.wrapping_mul(1664525).wrapping_add(1013904223);
                q.m[c] = (1 << 30) + (r >> 2) as i32 % (1 << 30);
                q.s[c] = -((r >> 27) as i8) - 2;
                q.bias[c] = (r as i32) >> 14;
            }
            q.z_x = x[0];
            q.z_y = (seed >> 8) as i8;
            let mut want = vec![0i8; rows];
            let mut ctr0 = crate::layer::Counters::default();
            let mut scratch = vec![0i32; n.max(8)];
            crate::dense::forward_scalar_n::<12>(n, rows, w, &q, relu, x, &mut want, &mut ctr0, &mut scratch);
            let mut y = vec![0i8; rows];
            let mut ctr = crate::layer::Counters::default();
            let done = forward_packed_n4::<12>(n, rows, w, &q, relu, x, &mut y, &mut ctr, &mut scratch);
            prop_assert_eq!(done, n >= 8);
            if done {
                prop_assert_eq!(y, want);
                prop_assert_eq!(ctr.forward_saturations, ctr0.forward_saturations);
            }
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
