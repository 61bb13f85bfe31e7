//! Dense kernels on int8 weights: the hot loops of the fully connected layers.
//!
//! Two implementations of each kernel compute exactly the same integers:
//! * **packed**, for Armv7E-M (Cortex-M4/M7): two signed 16-bit multiply-accumulates per `SMLAD`
//!   on weights sign-extended in pairs by `SXTB16` (see [`crate::dsp`]), four rows at a time so
//!   that the packed input is loaded once per four rows;
//! * **scalar**, for every other target (Armv6-M, RV32IMC, the host): one multiply-accumulate
//!   per weight, four rows at a time, which is what those instruction sets do best.
//!
//! [`PACKED`] picks one at compile time. Both are compiled everywhere (the packed one on top of
//! the portable emulation of the DSP instructions), so the host tests check that they agree.
//! Integer sums do not depend on the order of the terms and never overflow here (|w·xc| < 2^16,
//! fan-in < 2^15), so both equal the definition in docs/integer_training.md §2.

use crate::dsp;
use crate::fixed::{sat_i32, scale_sat, Lcg, R_MAX, V_MAX};
use crate::kernels::{bias_step, finish_output};
use crate::layer::{ChannelParams, Counters, TrainCtx, Weight};

/// Whether this target uses the packed (SMLAD) kernels.
pub const PACKED: bool = cfg!(all(target_arch = "arm", target_feature = "dsp"));

/// Rows processed together by the blocked loops (the scalar ones on Armv6-M: two, its eight
/// low registers hold no more).
const ROWS: usize = 4;

/// RISC-V (RV32IMC): scalar assembly for the update rows.
const RV32: bool = cfg!(target_arch = "riscv32");

/// Armv6-M (Cortex-M0/M0+): Thumb-1 only.
const THUMB1: bool = cfg!(all(target_arch = "arm", not(target_feature = "thumb2")));

/// Four int8 weights as one little-endian word (one `LDR`).
#[inline(always)]
fn word(w: &[i8; 4]) -> u32 {
    u32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8])
}

/// Dense forward (docs §2) with the kernel of this target; `w` holds `OUT` rows of `N`
/// weights.
#[inline(always)]
pub fn forward<const N: usize, const OUT: usize>(
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    if PACKED {
        forward_packed::<N, OUT>(w, q, relu, x, y, ctr, scratch);
    } else {
        forward_scalar::<N, OUT>(w, q, relu, x, y, ctr, scratch);
    }
}

/// Packed dense forward. The centred input `xc = x − z_x` is stored once as 16-bit pairs
/// `(xc[4k], xc[4k+2])`, `(xc[4k+1], xc[4k+3])` so that `SXTB16` of a 4-byte weight word lines
/// up with them; the last `n mod 4` inputs stay plain `i32`. Needs `n/4·2 + n mod 4 ≤ n` words
/// of scratch.
pub fn forward_packed<const N: usize, const OUT: usize>(
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    let n = N;
    let groups = n / 4;
    let zx = q.z_x as i32;
    let (Some(x), Some(buf)) = (x.get(..n), scratch.get_mut(..n - 2 * groups)) else {
        return;
    };
    let (pairs, tail) = buf.split_at_mut(2 * groups);
    crate::dense_asm::pack_input::<N>(x, zx, pairs, tail);
    let packed = &*buf;
    let (pairs, tail) = packed.split_at(2 * groups);
    let pairs = pairs.as_chunks::<2>().0;
    let mut sat = 0u32;
    let mut c = 0;
    let fin = crate::dense_asm::Finish::new(q, relu);
    // Blocks of four rows with their channel parameters, by iterators (pointer increments).
    let blocks = w
        .chunks_exact((ROWS * n).max(1))
        .zip(y.chunks_exact_mut(ROWS))
        .zip(q.bias.as_chunks::<ROWS>().0)
        .zip(q.m.as_chunks::<ROWS>().0)
        .zip(q.s.as_chunks::<ROWS>().0);
    for ((((blk, out), b4), m4), s4) in blocks {
        // Unrolled on Armv7E-M (the pairs and the tail are contiguous in `buf`).
        let s = match crate::dense_asm::sums4::<N>(blk, packed) {
            Some(s) => s,
            None => rows4_packed::<N>(blk, pairs, tail),
        };
        match fin.four(s, b4, m4, s4) {
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
        c += ROWS;
    }
    while c < OUT {
        let Some(row) = w.get(c * n..(c + 1) * n) else {
            break;
        };
        let v = row_packed(row, pairs, tail);
        if let Some(o) = y.get_mut(c) {
            *o = finish_output(v, q, c, relu, &mut sat);
        }
        c += 1;
    }
    ctr.forward_saturations = ctr.forward_saturations.wrapping_add(sat);
}

/// `Σ w·xc` of four consecutive rows of length `N` (packed input, see [`forward_packed`]).
///
/// On Armv7E-M the column groups are done in assembly (LLVM spills the 4-row block) and the
/// function is not inlined, so that its few live values stay in registers.
#[cfg_attr(all(target_arch = "arm", target_feature = "dsp"), inline(never))]
#[cfg_attr(not(all(target_arch = "arm", target_feature = "dsp")), inline(always))]
fn rows4_packed<const N: usize>(blk: &[i8], pairs: &[[i32; 2]], tail: &[i32]) -> [i32; 4] {
    let mut s = [0i32; 4];
    let groups = N / 4;
    let (Some(blk), Some(pairs)) = (blk.get(..4 * N), pairs.get(..groups)) else {
        return s;
    };
    // Column groups done by the assembly loop, if any.
    let done = rows4_asm::<N>(&mut s, blk, pairs);
    for g in done..groups {
        let o = 4 * g;
        let (Some(&[p0, p1]), Some(a), Some(b), Some(c), Some(d)) = (
            pairs.get(g),
            blk.get(o..o + 4),
            blk.get(N + o..N + o + 4),
            blk.get(2 * N + o..2 * N + o + 4),
            blk.get(3 * N + o..3 * N + o + 4),
        ) else {
            break;
        };
        let (p0, p1) = (p0 as u32, p1 as u32);
        for (acc, wv) in s.iter_mut().zip([a, b, c, d]) {
            let wv = u32::from_le_bytes([wv[0] as u8, wv[1] as u8, wv[2] as u8, wv[3] as u8]);
            *acc = dsp::smlad(dsp::sxtb16(wv), p0, *acc);
            *acc = dsp::smlad(dsp::sxtb16_ror8(wv), p1, *acc);
        }
    }
    for (k, &xv) in tail.iter().enumerate() {
        let j = 4 * groups + k;
        for (r, acc) in s.iter_mut().enumerate() {
            *acc = acc.wrapping_add(at(blk, r * N + j) as i32 * xv);
        }
    }
    s
}

/// `a[i]`, or 0 when out of range (no panic path).
#[inline(always)]
fn at(a: &[i8], i: usize) -> i8 {
    a.get(i).copied().unwrap_or(0)
}

/// One column group (4 columns) of four rows: the word of row `r` at `[w, #offset_r]`, the
/// pairs at `[x], #8` (post-incremented). Operands `a`, `t`, `p0`, `p1` are scratch.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! group4 {
    ($o0:literal, $o1:literal, $o2:literal, $o3:literal) => {
        concat!(
            "ldrd {p0}, {p1}, [{x}], #8\n",
            "ldr {a}, ",
            $o0,
            "\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s0}, {t}, {p0}, {s0}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s0}, {t}, {p1}, {s0}\n",
            "ldr {a}, [{w}, #",
            $o1,
            "]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s1}, {t}, {p0}, {s1}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s1}, {t}, {p1}, {s1}\n",
            "ldr {a}, [{w}, #",
            $o2,
            "]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s2}, {t}, {p0}, {s2}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s2}, {t}, {p1}, {s2}\n",
            "ldr {a}, [{w}, #",
            $o3,
            "]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s3}, {t}, {p0}, {s3}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s3}, {t}, {p1}, {s3}\n",
        )
    };
}

/// The column groups of four rows in assembly on Armv7E-M: two groups per loop iteration,
/// then the odd one; returns the number of groups done (all of `pairs`). Elsewhere it does
/// nothing and the caller's loop over single groups (the same instructions, emulated) does all.
#[inline(always)]
fn rows4_asm<const N: usize>(s: &mut [i32; 4], blk: &[i8], pairs: &[[i32; 2]]) -> usize {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let groups = pairs.len();
        // Immediate offsets of `LDR` reach 4095 bytes; beyond that the portable loop does it.
        if groups == 0 || 3 * N + 8 > 4095 || blk.len() < 3 * N + 4 * groups {
            return 0;
        }
        let [mut s0, mut s1, mut s2, mut s3] = *s;
        // Pre-incremented by 8 before each pair of groups (the first load's writeback); after
        // the loop it points 8 bytes before the odd group, if any.
        let mut w = blk.as_ptr().wrapping_sub(8);
        let mut x = pairs.as_ptr();
        // SAFETY (both blocks): row r's word of group g is read at `blk + r·N + 4g`, g <
        // groups, all inside `blk` (3N + 4·groups ≤ len, checked above; row 3 is the last);
        // the pairs of group g at `pairs + 8g` < `pairs.len()`. Unaligned `LDR` is allowed on
        // Armv7-M (rows are not word aligned); `LDRD` reads the word-aligned `i32` pairs.
        if groups >= 2 {
            unsafe {
                core::arch::asm!(
                    "2:",
                    group4!("[{w}, #8]!", "{n1}", "{n2}", "{n3}"),
                    group4!("[{w}, #4]", "{n1p}", "{n2p}", "{n3p}"),
                    "subs {k}, #1",
                    "bne 2b",
                    w = inout(reg) w,
                    x = inout(reg) x,
                    k = inout(reg) groups / 2 => _,
                    s0 = inout(reg) s0,
                    s1 = inout(reg) s1,
                    s2 = inout(reg) s2,
                    s3 = inout(reg) s3,
                    a = out(reg) _,
                    t = out(reg) _,
                    p0 = out(reg) _,
                    p1 = out(reg) _,
                    n1 = const N,
                    n2 = const 2 * N,
                    n3 = const 3 * N,
                    n1p = const N + 4,
                    n2p = const 2 * N + 4,
                    n3p = const 3 * N + 4,
                    options(readonly, nostack)
                );
            }
        }
        if groups % 2 == 1 {
            unsafe {
                core::arch::asm!(
                    group4!("[{w}, #8]", "{n1q}", "{n2q}", "{n3q}"),
                    w = in(reg) w,
                    x = inout(reg) x => _,
                    s0 = inout(reg) s0,
                    s1 = inout(reg) s1,
                    s2 = inout(reg) s2,
                    s3 = inout(reg) s3,
                    a = out(reg) _,
                    t = out(reg) _,
                    p0 = out(reg) _,
                    p1 = out(reg) _,
                    n1q = const N + 8,
                    n2q = const 2 * N + 8,
                    n3q = const 3 * N + 8,
                    options(pure, readonly, nostack)
                );
            }
        }
        *s = [s0, s1, s2, s3];
        groups
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let _ = (s, blk, pairs);
        0
    }
}

/// `Σ w·xc` of one row (packed input).
#[inline(always)]
fn row_packed(row: &[i8], pairs: &[[i32; 2]], tail: &[i32]) -> i32 {
    let (body, rest) = row.as_chunks::<4>();
    let mut s = 0i32;
    for (a, &[p0, p1]) in body.iter().zip(pairs) {
        let a = word(a);
        s = dsp::smlad(dsp::sxtb16(a), p0 as u32, s);
        s = dsp::smlad(dsp::sxtb16_ror8(a), p1 as u32, s);
    }
    for (&a, &xv) in rest.iter().zip(tail) {
        s = s.wrapping_add(a as i32 * xv);
    }
    s
}

/// Scalar dense forward: centred input as `i32` in scratch (`n` words), four rows at a time.
pub fn forward_scalar<const N: usize, const OUT: usize>(
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    let n = N;
    let zx = q.z_x as i32;
    let (Some(x), Some(xc)) = (x.get(..n), scratch.get_mut(..n)) else {
        return;
    };
    for (c, &v) in xc.iter_mut().zip(x) {
        *c = v as i32 - zx;
    }
    let xc = &*xc;
    let mut sat = 0u32;
    let mut c = 0;
    macro_rules! blocks {
        ($rows:literal, $f:ident) => {
            while c + $rows <= OUT {
                let Some(blk) = w.get(c * n..(c + $rows) * n) else {
                    break;
                };
                let Some(out) = y.get_mut(c..c + $rows) else {
                    break;
                };
                let s = $f::<N>(blk, xc);
                for (k, (o, &v)) in out.iter_mut().zip(&s).enumerate() {
                    *o = finish_output(v, q, c + k, relu, &mut sat);
                }
                c += $rows;
            }
        };
    }
    if THUMB1 {
        blocks!(2, rows2_scalar);
    } else {
        blocks!(4, rows4_scalar);
    }
    while c < OUT {
        let Some(row) = w.get(c * n..(c + 1) * n) else {
            break;
        };
        let mut v = 0i32;
        for (&a, &xv) in row.iter().zip(xc) {
            v = v.wrapping_add(a as i32 * xv);
        }
        if let Some(o) = y.get_mut(c) {
            *o = finish_output(v, q, c, relu, &mut sat);
        }
        c += 1;
    }
    ctr.forward_saturations = ctr.forward_saturations.wrapping_add(sat);
}

/// `Σ w·xc` of two consecutive rows of length `N` (plain `i32` input).
#[inline(always)]
fn rows2_scalar<const N: usize>(blk: &[i8], xc: &[i32]) -> [i32; 2] {
    let Some((r0, r1)) = blk.split_at_checked(N) else {
        return [0; 2];
    };
    let (mut s0, mut s1) = (0i32, 0i32);
    for ((&a, &b), &xv) in r0.iter().zip(r1).zip(xc) {
        s0 = s0.wrapping_add(a as i32 * xv);
        s1 = s1.wrapping_add(b as i32 * xv);
    }
    [s0, s1]
}

/// `Σ w·xc` of four consecutive rows of length `N` (plain `i32` input).
#[inline(always)]
fn rows4_scalar<const N: usize>(blk: &[i8], xc: &[i32]) -> [i32; 4] {
    let Some((r0, rest)) = blk.split_at_checked(N) else {
        return [0; 4];
    };
    let Some((r1, rest)) = rest.split_at_checked(N) else {
        return [0; 4];
    };
    let Some((r2, r3)) = rest.split_at_checked(N) else {
        return [0; 4];
    };
    #[allow(unused_mut)]
    let mut acc = [0i32; 4];
    #[cfg(target_arch = "riscv32")]
    let tail = {
        let done = rows4_rv32::<N>(&mut acc, blk, xc);
        r0.iter().zip(r1).zip(r2).zip(r3).zip(xc).skip(done)
    };
    #[cfg(not(target_arch = "riscv32"))]
    let tail = r0.iter().zip(r1).zip(r2).zip(r3).zip(xc);
    let [mut s0, mut s1, mut s2, mut s3] = acc;
    for ((((&a, &b), &c), &d), &xv) in tail {
        s0 = s0.wrapping_add(a as i32 * xv);
        s1 = s1.wrapping_add(b as i32 * xv);
        s2 = s2.wrapping_add(c as i32 * xv);
        s3 = s3.wrapping_add(d as i32 * xv);
    }
    [s0, s1, s2, s3]
}

/// One column of four rows (RV32): `lb` at row offsets `$o0..$o3`, one `mul` and `add` each.
#[cfg(target_arch = "riscv32")]
macro_rules! rv_col {
    ($x:literal, $o0:literal, $o1:literal, $o2:literal, $o3:literal) => {
        concat!(
            "lb {w}, ",
            $o0,
            "({wp})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s0}, {s0}, {w}\n",
            "lb {w}, ",
            $o1,
            "({wp})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s1}, {s1}, {w}\n",
            "lb {w}, ",
            $o2,
            "({wp})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s2}, {s2}, {w}\n",
            "lb {w}, ",
            $o3,
            "({wp})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s3}, {s3}, {w}\n",
        )
    };
}

/// The columns of [`rows4_scalar`] in groups of four, in assembly on RV32IMC (LLVM spills the
/// unrolled 4-row loop); returns the columns done (elsewhere none).
#[cfg(target_arch = "riscv32")]
#[inline(always)]
fn rows4_rv32<const N: usize>(s: &mut [i32; 4], blk: &[i8], xc: &[i32]) -> usize {
    {
        let groups = N.min(xc.len()) / 4;
        // `lb` offsets are 12-bit signed: rows up to 3N + 3 < 2048.
        if groups == 0 || 3 * N + 3 > 2047 || blk.len() < 4 * N {
            return 0;
        }
        let [mut s0, mut s1, mut s2, mut s3] = *s;
        // SAFETY: row r's byte of column j at `blk + r·N + j`, j < 4·groups ≤ N, inside `blk`
        // (len ≥ 4N); `xc[..4·groups]` word aligned; read only.
        unsafe {
            core::arch::asm!(
                "2:",
                "lw {x0}, 0({xp})",
                "lw {x1}, 4({xp})",
                "lw {x2}, 8({xp})",
                "lw {x3}, 12({xp})",
                rv_col!("{x0}", "0", "{n1}", "{n2}", "{n3}"),
                rv_col!("{x1}", "1", "{n1a}", "{n2a}", "{n3a}"),
                rv_col!("{x2}", "2", "{n1b}", "{n2b}", "{n3b}"),
                rv_col!("{x3}", "3", "{n1c}", "{n2c}", "{n3c}"),
                "addi {xp}, {xp}, 16",
                "addi {wp}, {wp}, 4",
                "bne {wp}, {end}, 2b",
                xp = inout(reg) xc.as_ptr() => _,
                wp = inout(reg) blk.as_ptr() => _,
                end = in(reg) blk.as_ptr().wrapping_add(4 * groups),
                s0 = inout(reg) s0,
                s1 = inout(reg) s1,
                s2 = inout(reg) s2,
                s3 = inout(reg) s3,
                x0 = out(reg) _,
                x1 = out(reg) _,
                x2 = out(reg) _,
                x3 = out(reg) _,
                w = out(reg) _,
                n1 = const N,
                n2 = const 2 * N,
                n3 = const 3 * N,
                n1a = const N + 1,
                n2a = const 2 * N + 1,
                n3a = const 3 * N + 1,
                n1b = const N + 2,
                n2b = const 2 * N + 2,
                n3b = const 3 * N + 2,
                n1c = const N + 3,
                n2c = const 2 * N + 3,
                n3c = const 3 * N + 3,
                options(readonly, nostack)
            );
        }
        *s = [s0, s1, s2, s3];
        4 * groups
    }
}

/// Dense forward (docs §2) for a fan-in `n` and row count `rows` known only at run time (the
/// shape of a model loaded from a blob, [`crate::dyn_mlp::DynMlp`]): `w` holds `rows` rows of
/// `n` weights. The same arithmetic as [`forward`] with kernels that take the row stride from a
/// register (three rows per packed block, four per scalar one).
#[allow(clippy::too_many_arguments)]
pub fn forward_n<const OUT: usize>(
    n: usize,
    rows: usize,
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    if PACKED {
        forward_packed_n::<OUT>(n, rows, w, q, relu, x, y, ctr, scratch);
    } else {
        forward_scalar_n::<OUT>(n, rows, w, q, relu, x, y, ctr, scratch);
    }
}

/// [`forward_packed`] with run-time `n` and `rows`: the input packed the same way, blocks of
/// three rows (their words at `w`, `w + n`, `w + 2n`: register offsets), the rest one by one.
#[allow(clippy::too_many_arguments)]
pub fn forward_packed_n<const OUT: usize>(
    n: usize,
    rows: usize,
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    // Armv7E-M: blocks of four rows, sums and outputs in assembly.
    if PACKED && crate::dense_asm::forward_packed_n4(n, rows, w, q, relu, x, y, ctr, scratch) {
        return;
    }
    let groups = n / 4;
    let zx = q.z_x as i32;
    let (Some(x), Some(buf)) = (x.get(..n), scratch.get_mut(..n - 2 * groups)) else {
        return;
    };
    let Some((pairs, tail)) = buf.split_at_mut_checked(2 * groups) else {
        return;
    };
    let (xq, xr) = x.as_chunks::<4>();
    let zz = dsp::pkhbt(zx as u32, zx as u32);
    for ([p0, p1], x4) in pairs.as_chunks_mut::<2>().0.iter_mut().zip(xq) {
        let v = word(x4);
        *p0 = dsp::ssub16(dsp::sxtb16(v), zz) as i32;
        *p1 = dsp::ssub16(dsp::sxtb16_ror8(v), zz) as i32;
    }
    for (t, &v) in tail.iter_mut().zip(xr) {
        *t = v as i32 - zx;
    }
    let pairs = pairs.as_chunks::<2>().0;
    let tail = &*tail;
    let rows = rows.min(OUT);
    let mut sat = 0u32;
    let mut c = 0;
    while c + 3 <= rows {
        let Some(blk) = w.get(c * n..(c + 3) * n) else {
            break;
        };
        let Some(out) = y.get_mut(c..c + 3) else {
            break;
        };
        let s = rows3_packed_n(n, blk, pairs, tail);
        for (k, (o, &v)) in out.iter_mut().zip(&s).enumerate() {
            *o = finish_output(v, q, c + k, relu, &mut sat);
        }
        c += 3;
    }
    while c < rows {
        let Some(row) = w.get(c * n..(c + 1) * n) else {
            break;
        };
        let v = row_packed(row, pairs, tail);
        if let Some(o) = y.get_mut(c) {
            *o = finish_output(v, q, c, relu, &mut sat);
        }
        c += 1;
    }
    ctr.forward_saturations = ctr.forward_saturations.wrapping_add(sat);
}

/// `Σ w·xc` of three consecutive rows of length `n` (packed input, see [`forward_packed`]).
/// Not inlined on Armv7E-M, so that the assembly loop gets its eleven registers.
#[cfg_attr(all(target_arch = "arm", target_feature = "dsp"), inline(never))]
#[cfg_attr(not(all(target_arch = "arm", target_feature = "dsp")), inline(always))]
fn rows3_packed_n(n: usize, blk: &[i8], pairs: &[[i32; 2]], tail: &[i32]) -> [i32; 3] {
    let mut s = [0i32; 3];
    let groups = n / 4;
    let (Some(blk), Some(pairs)) = (blk.get(..3 * n), pairs.get(..groups)) else {
        return s;
    };
    if rows3_asm(&mut s, n, blk, pairs, tail) {
        return s;
    }
    for g in 0..groups {
        let o = 4 * g;
        let w4 = |o: usize| blk.get(o..).and_then(|r| r.first_chunk::<4>());
        let (Some(&[p0, p1]), Some(a), Some(b), Some(c)) =
            (pairs.get(g), w4(o), w4(n + o), w4(2 * n + o))
        else {
            break;
        };
        let (p0, p1) = (p0 as u32, p1 as u32);
        for (acc, wv) in s.iter_mut().zip([a, b, c]) {
            let wv = word(wv);
            *acc = dsp::smlad(dsp::sxtb16(wv), p0, *acc);
            *acc = dsp::smlad(dsp::sxtb16_ror8(wv), p1, *acc);
        }
    }
    for (k, &xv) in tail.iter().enumerate() {
        let j = 4 * groups + k;
        for (r, acc) in s.iter_mut().enumerate() {
            *acc = acc.wrapping_add(at(blk, r * n + j) as i32 * xv);
        }
    }
    s
}

/// One column group (4 columns) of three rows with stride `{n}`: rows 1 and 2 at `[w, n]` and
/// `[w, n, LSL #1]`, row 0 at `[w], #4` (post-incremented), the pairs at `[x], #8`.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! group3 {
    () => {
        concat!(
            "ldrd {p0}, {p1}, [{x}], #8\n",
            "ldr {a}, [{w}, {n}]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s1}, {t}, {p0}, {s1}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s1}, {t}, {p1}, {s1}\n",
            "ldr {a}, [{w}, {n}, lsl #1]\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s2}, {t}, {p0}, {s2}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s2}, {t}, {p1}, {s2}\n",
            "ldr {a}, [{w}], #4\n",
            "sxtb16 {t}, {a}\n",
            "smlad {s0}, {t}, {p0}, {s0}\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {s0}, {t}, {p1}, {s0}\n",
        )
    };
}

/// The columns of three rows in assembly on Armv7E-M: the column groups two per loop
/// iteration, then the odd one, then the `n mod 4` tail columns (`tail` follows `pairs` in
/// memory, as [`forward_packed_n`] lays them out; one `LDRSB` and `MLA` per weight). Returns
/// whether it did all (then the caller's loops do nothing); elsewhere it does nothing.
#[inline(always)]
fn rows3_asm(s: &mut [i32; 3], n: usize, blk: &[i8], pairs: &[[i32; 2]], tail: &[i32]) -> bool {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let groups = pairs.len();
        let contiguous = pairs.as_ptr_range().end as usize == tail.as_ptr() as usize;
        if groups != n / 4 || tail.len() != n % 4 || !contiguous || blk.len() < 3 * n {
            return false;
        }
        let [mut s0, mut s1, mut s2] = *s;
        // SAFETY: row r's bytes `blk[r·n .. r·n + n]` (r ≤ 2, 3n ≤ len, checked above) are read
        // as `groups` words then `n mod 4` bytes; the pairs (`8·groups` bytes) and the tail
        // (`4·(n mod 4)` bytes) are read in order from `pairs.as_ptr()`, contiguous (checked).
        // Unaligned `LDR` is allowed on Armv7-M; `LDRD` reads the word-aligned `i32` pairs.
        // Read only.
        unsafe {
            core::arch::asm!(
                "subs {k}, {k}, #2",
                "blt 3f",
                "2:",
                group3!(),
                group3!(),
                "subs {k}, {k}, #2",
                "bge 2b",
                "3:",
                // k = −1: one group left; k = −2: none.
                "adds {k}, {k}, #1",
                "bne 4f",
                group3!(),
                "4:",
                "ands {k}, {n}, #3",
                "beq 6f",
                "5:",
                "ldr {p0}, [{x}], #4",
                "ldrsb {a}, [{w}, {n}]",
                "mla {s1}, {a}, {p0}, {s1}",
                "ldrsb {a}, [{w}, {n}, lsl #1]",
                "mla {s2}, {a}, {p0}, {s2}",
                "ldrsb {a}, [{w}], #1",
                "mla {s0}, {a}, {p0}, {s0}",
                "subs {k}, {k}, #1",
                "bne 5b",
                "6:",
                w = inout(reg) blk.as_ptr() => _,
                x = inout(reg) pairs.as_ptr() => _,
                k = inout(reg) groups => _,
                n = in(reg) n,
                s0 = inout(reg) s0,
                s1 = inout(reg) s1,
                s2 = inout(reg) s2,
                a = out(reg) _,
                t = out(reg) _,
                p0 = out(reg) _,
                p1 = out(reg) _,
                options(pure, readonly, nostack)
            );
        }
        *s = [s0, s1, s2];
        true
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let _ = (s, n, blk, pairs, tail);
        false
    }
}

/// [`forward_scalar`] with run-time `n` and `rows`.
#[allow(clippy::too_many_arguments)]
pub fn forward_scalar_n<const OUT: usize>(
    n: usize,
    rows: usize,
    w: &[i8],
    q: &ChannelParams<OUT>,
    relu: bool,
    x: &[i8],
    y: &mut [i8],
    ctr: &mut Counters,
    scratch: &mut [i32],
) {
    let zx = q.z_x as i32;
    let (Some(x), Some(xc)) = (x.get(..n), scratch.get_mut(..n)) else {
        return;
    };
    for (c, &v) in xc.iter_mut().zip(x) {
        *c = v as i32 - zx;
    }
    let xc = &*xc;
    let rows = rows.min(OUT);
    let mut sat = 0u32;
    let mut c = 0;
    macro_rules! blocks {
        ($rows:literal, $f:ident) => {
            while c + $rows <= rows {
                let Some(blk) = w.get(c * n..(c + $rows) * n) else {
                    break;
                };
                let Some(out) = y.get_mut(c..c + $rows) else {
                    break;
                };
                let s = $f(n, blk, xc);
                for (k, (o, &v)) in out.iter_mut().zip(&s).enumerate() {
                    *o = finish_output(v, q, c + k, relu, &mut sat);
                }
                c += $rows;
            }
        };
    }
    if THUMB1 {
        blocks!(2, rows2_scalar_n);
    } else {
        blocks!(4, rows4_scalar_n);
    }
    while c < rows {
        let Some(row) = w.get(c * n..(c + 1) * n) else {
            break;
        };
        let mut v = 0i32;
        for (&a, &xv) in row.iter().zip(xc) {
            v = v.wrapping_add(a as i32 * xv);
        }
        if let Some(o) = y.get_mut(c) {
            *o = finish_output(v, q, c, relu, &mut sat);
        }
        c += 1;
    }
    ctr.forward_saturations = ctr.forward_saturations.wrapping_add(sat);
}

/// [`rows2_scalar`] with run-time `n`.
#[inline(always)]
fn rows2_scalar_n(n: usize, blk: &[i8], xc: &[i32]) -> [i32; 2] {
    let Some((r0, r1)) = blk.split_at_checked(n) else {
        return [0; 2];
    };
    let (mut s0, mut s1) = (0i32, 0i32);
    for ((&a, &b), &xv) in r0.iter().zip(r1).zip(xc) {
        s0 = s0.wrapping_add(a as i32 * xv);
        s1 = s1.wrapping_add(b as i32 * xv);
    }
    [s0, s1]
}

/// [`rows4_scalar`] with run-time `n` (on RV32IMC the columns in assembly with four row
/// pointers, [`rows4_rv32_n`]).
#[inline(always)]
fn rows4_scalar_n(n: usize, blk: &[i8], xc: &[i32]) -> [i32; 4] {
    let Some((r0, rest)) = blk.split_at_checked(n) else {
        return [0; 4];
    };
    let Some((r1, rest)) = rest.split_at_checked(n) else {
        return [0; 4];
    };
    let Some((r2, r3)) = rest.split_at_checked(n) else {
        return [0; 4];
    };
    #[allow(unused_mut)]
    let mut acc = [0i32; 4];
    #[cfg(target_arch = "riscv32")]
    let tail = {
        let done = rows4_rv32_n(&mut acc, [r0, r1, r2, r3], xc);
        r0.iter().zip(r1).zip(r2).zip(r3).zip(xc).skip(done)
    };
    #[cfg(not(target_arch = "riscv32"))]
    let tail = r0.iter().zip(r1).zip(r2).zip(r3).zip(xc);
    let [mut s0, mut s1, mut s2, mut s3] = acc;
    for ((((&a, &b), &c), &d), &xv) in tail {
        s0 = s0.wrapping_add(a as i32 * xv);
        s1 = s1.wrapping_add(b as i32 * xv);
        s2 = s2.wrapping_add(c as i32 * xv);
        s3 = s3.wrapping_add(d as i32 * xv);
    }
    [s0, s1, s2, s3]
}

/// One column of [`rows4_rv32_n`]: `lb` at byte `$o` of the four row pointers, one `mul` and
/// `add` each with the input word `$x`.
#[cfg(target_arch = "riscv32")]
macro_rules! rv_col4p {
    ($x:literal, $o:literal) => {
        concat!(
            "lb {w}, ",
            $o,
            "({q0})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s0}, {s0}, {w}\n",
            "lb {w}, ",
            $o,
            "({q1})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s1}, {s1}, {w}\n",
            "lb {w}, ",
            $o,
            "({q2})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s2}, {s2}, {w}\n",
            "lb {w}, ",
            $o,
            "({q3})\n",
            "mul {w}, {w}, ",
            $x,
            "\n",
            "add {s3}, {s3}, {w}\n",
        )
    };
}

/// The columns of [`rows4_scalar_n`] in groups of eight, in assembly on RV32IMC (one pointer
/// per row, so eight columns per iteration cost what [`rows4_rv32`]'s two groups of four do);
/// returns the columns done.
#[cfg(target_arch = "riscv32")]
#[inline(always)]
fn rows4_rv32_n(s: &mut [i32; 4], rows: [&[i8]; 4], xc: &[i32]) -> usize {
    let n = rows
        .iter()
        .map(|r| r.len())
        .min()
        .unwrap_or(0)
        .min(xc.len());
    let groups = n / 8;
    if groups == 0 {
        return 0;
    }
    let [r0, r1, r2, r3] = rows;
    let [mut s0, mut s1, mut s2, mut s3] = *s;
    // SAFETY: reads `r_k[..8·groups]` and `xc[..8·groups]` (word aligned), all in bounds
    // (8·groups ≤ n); read only.
    unsafe {
        core::arch::asm!(
            "2:",
            "lw {x0}, 0({xp})",
            "lw {x1}, 4({xp})",
            "lw {x2}, 8({xp})",
            "lw {x3}, 12({xp})",
            rv_col4p!("{x0}", "0"),
            rv_col4p!("{x1}", "1"),
            rv_col4p!("{x2}", "2"),
            rv_col4p!("{x3}", "3"),
            "lw {x0}, 16({xp})",
            "lw {x1}, 20({xp})",
            "lw {x2}, 24({xp})",
            "lw {x3}, 28({xp})",
            rv_col4p!("{x0}", "4"),
            rv_col4p!("{x1}", "5"),
            rv_col4p!("{x2}", "6"),
            rv_col4p!("{x3}", "7"),
            "addi {xp}, {xp}, 32",
            "addi {q1}, {q1}, 8",
            "addi {q2}, {q2}, 8",
            "addi {q3}, {q3}, 8",
            "addi {q0}, {q0}, 8",
            "bne {q0}, {end}, 2b",
            xp = inout(reg) xc.as_ptr() => _,
            q0 = inout(reg) r0.as_ptr() => _,
            q1 = inout(reg) r1.as_ptr() => _,
            q2 = inout(reg) r2.as_ptr() => _,
            q3 = inout(reg) r3.as_ptr() => _,
            end = in(reg) r0.as_ptr().wrapping_add(8 * groups),
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            s2 = inout(reg) s2,
            s3 = inout(reg) s3,
            x0 = out(reg) _,
            x1 = out(reg) _,
            x2 = out(reg) _,
            x3 = out(reg) _,
            w = out(reg) _,
            options(pure, readonly, nostack)
        );
    }
    *s = [s0, s1, s2, s3];
    8 * groups
}

/// Dense error wrt the input (docs §4.2): `e_in[j] = Σ_c d[c]·w[c][j]` over the rows with a
/// non-zero δ. Packed targets take the live rows in pairs: the two δ in one word, one
/// `SMLAxy` per product on weights sign-extended in pairs by `SXTB16`, the four partial sums of
/// a column group loaded and stored once per pair (`LDM`/`STM`). Elsewhere four rows per pass.
/// Sums wrap like the definition.
#[inline(always)]
pub fn backward<const N: usize, const OUT: usize>(w: &[i8], d: &[i16], e_in: &mut [i32]) {
    backward_with::<N, OUT, PACKED>(w, d, e_in);
}

/// [`backward`] with the pairwise (`P`) or the four-row kernel.
pub fn backward_with<const N: usize, const OUT: usize, const P: bool>(
    w: &[i8],
    d: &[i16],
    e_in: &mut [i32],
) {
    backward_rt::<P>(N, OUT, w, d, e_in);
}

/// [`backward`] for a fan-in `n` and row count `rows` known only at run time (the shape of a
/// model loaded from a blob): the same kernels, so the same sums.
pub fn backward_n(n: usize, rows: usize, w: &[i8], d: &[i16], e_in: &mut [i32]) {
    backward_rt::<PACKED>(n, rows, w, d, e_in);
}

/// The body of [`backward_with`] and [`backward_n`]: `n` inputs, at most `rows` rows of `w`.
#[inline(always)]
fn backward_rt<const P: bool>(n: usize, rows: usize, w: &[i8], d: &[i16], e_in: &mut [i32]) {
    zero(e_in);
    let Some(e) = e_in.get_mut(..n) else {
        return;
    };
    let k = if P { 2 } else { 4 };
    // Up to four pending live rows: (row start, δ).
    let mut pend = [(0usize, 0i32); 4];
    let mut np = 0;
    for (c, &dv) in d.iter().enumerate().take(rows) {
        if dv == 0 {
            continue;
        }
        if let Some(p) = pend.get_mut(np) {
            *p = (c * n, dv as i32);
        }
        np += 1;
        if np == k {
            if P {
                back2(n, w, pend[0], pend[1], e);
            } else {
                back4(n, w, &pend, e);
            }
            np = 0;
        }
    }
    if P && np == 1 {
        // The odd row with a zero partner (adds nothing).
        back2(n, w, pend[0], (pend[0].0, 0), e);
        np = 0;
    }
    for &(o, dv) in pend.iter().take(np) {
        if let Some(row) = w.get(o..o + n) {
            for (ev, &wv) in e.iter_mut().zip(row) {
                *ev = ev.wrapping_add(dv * wv as i32);
            }
        }
    }
}

/// `buf.fill(0)`; on Armv7E-M four words per `STM` (`memclr` takes four instructions a word).
#[inline(always)]
fn zero(buf: &mut [i32]) {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let (q, rest) = buf.as_chunks_mut::<4>();
        if !q.is_empty() {
            // SAFETY: writes `q` (word aligned, 16 bytes per iteration), exclusively borrowed.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "stm {p}!, {{r0, r1, r2, r3}}",
                    "subs {k}, #1",
                    "bne 2b",
                    p = inout(reg) q.as_mut_ptr() => _,
                    k = inout(reg) q.len() => _,
                    in("r0") 0u32,
                    in("r1") 0u32,
                    in("r2") 0u32,
                    in("r3") 0u32,
                    options(nostack)
                );
            }
        }
        rest.fill(0);
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    buf.fill(0);
}

/// Two live rows of [`backward`].
#[inline(always)]
fn back2(n: usize, w: &[i8], (o0, d0): (usize, i32), (o1, d1): (usize, i32), e: &mut [i32]) {
    let (Some(r0), Some(r1)) = (w.get(o0..o0 + n), w.get(o1..o1 + n)) else {
        return;
    };
    back2_rows(r0, r1, d0, d1, e);
}

/// `e[j] += d0·r0[j] + d1·r1[j]` (wrapping) over the common length: [`back2_asm`] on
/// Armv7E-M (|δ| < 2^15), the same sums in Rust for what it leaves.
#[inline(always)]
pub(crate) fn back2_rows(r0: &[i8], r1: &[i8], d0: i32, d1: i32, e: &mut [i32]) {
    let done = back2_asm(r0, r1, d0, d1, e);
    for ((ev, &a), &b) in e.iter_mut().zip(r0).zip(r1).skip(done) {
        *ev = ev.wrapping_add(d0 * a as i32).wrapping_add(d1 * b as i32);
    }
}

/// The column groups of [`back2`] in assembly on Armv7E-M; returns the columns done (elsewhere
/// none). δ must fit 16 bits (|δ| ≤ 2^12, §4).
#[inline(always)]
fn back2_asm(r0: &[i8], r1: &[i8], d0: i32, d1: i32, e: &mut [i32]) -> usize {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let groups = r0.len().min(r1.len()).min(e.len()) / 4;
        if groups == 0 {
            return 0;
        }
        let dd = dsp::pkhbt(d0 as u32, d1 as u32);
        // SAFETY: reads `r0[..4·groups]`, `r1[..4·groups]` (unaligned `LDR` is allowed on
        // Armv7-M), reads and writes `e[..4·groups]` (word aligned, `LDM`/`STM`), all in
        // bounds; `e` is exclusively borrowed. r0–r3 are named for the ascending lists.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldm {ep}, {{r0, r1, r2, r3}}",
                "ldr {a}, [{p0}], #4",
                "sxtb16 {t}, {a}, ror #8",
                "sxtb16 {a}, {a}",
                "smlabb r0, {a}, {dd}, r0",
                "smlatb r2, {a}, {dd}, r2",
                "smlabb r1, {t}, {dd}, r1",
                "smlatb r3, {t}, {dd}, r3",
                "ldr {a}, [{p1}], #4",
                "sxtb16 {t}, {a}, ror #8",
                "sxtb16 {a}, {a}",
                "smlabt r0, {a}, {dd}, r0",
                "smlatt r2, {a}, {dd}, r2",
                "smlabt r1, {t}, {dd}, r1",
                "smlatt r3, {t}, {dd}, r3",
                "stm {ep}!, {{r0, r1, r2, r3}}",
                "subs {k}, #1",
                "bne 2b",
                ep = inout(reg) e.as_mut_ptr() => _,
                p0 = inout(reg) r0.as_ptr() => _,
                p1 = inout(reg) r1.as_ptr() => _,
                k = inout(reg) groups => _,
                dd = in(reg) dd,
                a = out(reg) _,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(nostack)
            );
        }
        4 * groups
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let _ = (r0, r1, d0, d1, e);
        0
    }
}

/// Four live rows of [`backward`] (scalar).
#[inline(always)]
fn back4(n: usize, w: &[i8], rows: &[(usize, i32); 4], e: &mut [i32]) {
    let [(o0, d0), (o1, d1), (o2, d2), (o3, d3)] = *rows;
    let (Some(r0), Some(r1), Some(r2), Some(r3)) = (
        w.get(o0..o0 + n),
        w.get(o1..o1 + n),
        w.get(o2..o2 + n),
        w.get(o3..o3 + n),
    ) else {
        return;
    };
    // (`skip` only where the assembly did a prefix: it costs elsewhere.)
    #[cfg(target_arch = "riscv32")]
    let cols = {
        let done = back4_rv32([r0, r1, r2, r3], [d0, d1, d2, d3], e);
        e.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3).skip(done)
    };
    #[cfg(not(target_arch = "riscv32"))]
    let cols = e.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3);
    for ((((ev, &a), &b), &c), &dd) in cols {
        let s = d0 * a as i32 + d1 * b as i32 + d2 * c as i32 + d3 * dd as i32;
        *ev = ev.wrapping_add(s);
    }
}

/// One column of [`back4_rv32`]: `e += Σ_r d_r·w_r` at byte offset `$j`, word `$e`.
#[cfg(target_arch = "riscv32")]
macro_rules! rv_bcol {
    ($j:literal, $e:literal) => {
        concat!(
            "lb {w}, ",
            $j,
            "({p0})\n",
            "mul {w}, {w}, {d0}\n",
            "add ",
            $e,
            ", ",
            $e,
            ", {w}\n",
            "lb {w}, ",
            $j,
            "({p1})\n",
            "mul {w}, {w}, {d1}\n",
            "add ",
            $e,
            ", ",
            $e,
            ", {w}\n",
            "lb {w}, ",
            $j,
            "({p2})\n",
            "mul {w}, {w}, {d2}\n",
            "add ",
            $e,
            ", ",
            $e,
            ", {w}\n",
            "lb {w}, ",
            $j,
            "({p3})\n",
            "mul {w}, {w}, {d3}\n",
            "add ",
            $e,
            ", ",
            $e,
            ", {w}\n",
        )
    };
}

/// The columns of [`back4`] in groups of four, in assembly on RV32IMC; returns the columns
/// done (elsewhere none).
#[cfg(target_arch = "riscv32")]
#[inline(always)]
fn back4_rv32(rows: [&[i8]; 4], d: [i32; 4], e: &mut [i32]) -> usize {
    {
        let n = rows.iter().map(|r| r.len()).min().unwrap_or(0).min(e.len());
        let groups = n / 4;
        if groups == 0 {
            return 0;
        }
        let [r0, r1, r2, r3] = rows;
        // SAFETY: reads `r_k[..4·groups]`, reads and writes `e[..4·groups]` (word aligned),
        // all in bounds; `e` is exclusively borrowed.
        unsafe {
            core::arch::asm!(
                "2:",
                "lw {e0}, 0({ep})",
                "lw {e1}, 4({ep})",
                "lw {e2}, 8({ep})",
                "lw {e3}, 12({ep})",
                rv_bcol!("0", "{e0}"),
                rv_bcol!("1", "{e1}"),
                rv_bcol!("2", "{e2}"),
                rv_bcol!("3", "{e3}"),
                "sw {e0}, 0({ep})",
                "sw {e1}, 4({ep})",
                "sw {e2}, 8({ep})",
                "sw {e3}, 12({ep})",
                "addi {p0}, {p0}, 4",
                "addi {p1}, {p1}, 4",
                "addi {p2}, {p2}, 4",
                "addi {p3}, {p3}, 4",
                "addi {ep}, {ep}, 16",
                "bne {ep}, {end}, 2b",
                ep = inout(reg) e.as_mut_ptr() => _,
                end = in(reg) e.as_mut_ptr().wrapping_add(4 * groups),
                p0 = inout(reg) r0.as_ptr() => _,
                p1 = inout(reg) r1.as_ptr() => _,
                p2 = inout(reg) r2.as_ptr() => _,
                p3 = inout(reg) r3.as_ptr() => _,
                d0 = in(reg) d[0],
                d1 = in(reg) d[1],
                d2 = in(reg) d[2],
                d3 = in(reg) d[3],
                e0 = out(reg) _,
                e1 = out(reg) _,
                e2 = out(reg) _,
                e3 = out(reg) _,
                w = out(reg) _,
                options(nostack)
            );
        }
        4 * groups
    }
}

/// `a·b` exactly. On Armv6-M (no long multiply, `__aeabi_lmul` otherwise) an `a` in the i32
/// range takes [`mul_i16_split`]; elsewhere the 64-bit product.
#[inline(always)]
fn mul_i16(a: i64, b: i16) -> i64 {
    if THUMB1 {
        if let Ok(a) = i32::try_from(a) {
            return mul_i16_split(a, b);
        }
    }
    a * b as i64
}

/// `a·b` as two 32-bit products of the halves of `a`: `a = h·2^16 + l` with `l ∈ [0, 2^16)`,
/// `|h·b| ≤ 2^30` and `|l·b| < 2^31` fit i32, so `(h·b)·2^16 + l·b` is the exact product.
#[inline(always)]
pub fn mul_i16_split(a: i32, b: i16) -> i64 {
    let hi = (a >> 16) * b as i32;
    let lo = (a & 0xffff) * b as i32;
    ((hi as i64) << 16) + lo as i64
}

/// The update of a Dense layer with int8 weights (stochastic rounding), batch of one, all
/// parameters trainable (docs §5.1 to §5.4): `n` inputs, stored input `xs`, δ `ds` with
/// exponent `e_slot`, rows selected by `sel`. The same arithmetic as the general update, with the
/// centred input computed once, rows with δ = 0 skipped (they change nothing, §5.4) and the
/// per-row bookkeeping in 32-bit where it fits.
#[allow(clippy::too_many_arguments)]
pub fn update_b1<const OUT: usize>(
    n: usize,
    w: &mut [i8],
    q: &mut ChannelParams<OUT>,
    xs: &[i8],
    ds: &[i16],
    e_slot: i32,
    sel: &[bool; OUT],
    ctx: &mut TrainCtx<'_>,
) {
    let zx = q.z_x as i32;
    let (Some(x), Some(xc)) = (xs.get(..n), ctx.scratch.get_mut(..n)) else {
        return;
    };
    let xc_max = centre(x, zx, xc);
    let xc = &*xc;
    let mut rng = *ctx.rng;
    let (mut clips, mut wsat) = (0u32, 0u32);
    let lr_m = ctx.lr_m as i64;
    for (c, &dv) in ds.iter().enumerate().take(OUT) {
        if dv == 0 || !sel.get(c).copied().unwrap_or(false) {
            continue;
        }
        let dv16 = dv;
        let (um, ue) = (
            q.um.get(c).copied().unwrap_or(0),
            q.ue.get(c).copied().unwrap_or(0),
        );
        let e = ctx.lr_e + ue as i32 + e_slot + 16;
        let (r, clip) = scale_sat(mul_i16(mul_i16(lr_m, um), dv16), e, R_MAX);
        clips += clip as u32;
        let r = r as i32;
        if r != 0 {
            let Some(row) = w.get_mut(c * n..c * n + n) else {
                break;
            };
            // |r·xc| ≤ 2^20·255 fits i32; below V_MAX for every input the clamp is a no-op.
            let cut = if r.unsigned_abs() as u64 * xc_max as u64 <= V_MAX as u64 {
                sr_row(row, xc, r, &mut rng)
            } else {
                let (cl, cut) = sr_row_clamped(row, xc, r, &mut rng);
                clips += cl;
                cut
            };
            wsat += (cut != 0) as u32;
        }
        // Bias (round to nearest, §5.3).
        let (ubm, ube) = (
            q.ubm.get(c).copied().unwrap_or(0),
            q.ube.get(c).copied().unwrap_or(0),
        );
        let t = mul_i16(mul_i16(lr_m, ubm), dv16);
        let (d, clip) = bias_step(t, ctx.lr_e + ube as i32 + e_slot);
        clips += clip as u32;
        if let Some(b) = q.bias.get_mut(c) {
            *b = sat_i32(*b as i64 - d);
        }
    }
    *ctx.rng = rng;
    ctx.ctr.update_clips = ctx.ctr.update_clips.wrapping_add(clips);
    ctx.ctr.weight_saturations = ctx.ctr.weight_saturations.wrapping_add(wsat);
}

/// `xc = x − z_x` as `i32`; returns `max |xc|` (0 for no input).
#[inline(always)]
fn centre(x: &[i8], zx: i32, xc: &mut [i32]) -> u32 {
    let (mut lo, mut hi) = (zx, zx);
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    let mut done = 0usize;
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        // Four inputs per iteration: byte-wise running max and min (SSUB8 + SEL), the bytes
        // sign-extended in pairs (SXTB16), centred in pairs (SSUB16), stored as four words.
        let groups = x.len().min(xc.len()) / 4;
        if groups > 0 {
            let zz = dsp::pkhbt(zx as u32, zx as u32);
            let (mut mx, mut mn) = (0x8080_8080u32, 0x7F7F_7F7Fu32);
            // SAFETY: reads `x[..4·groups]` (unaligned `LDR` is allowed on Armv7-M), writes
            // `xc[..4·groups]` (word aligned), both in bounds, `xc` exclusively borrowed.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldr {w}, [{xp}], #4",
                    "ssub8 {t}, {w}, {mx}",
                    "sel {mx}, {w}, {mx}",
                    "ssub8 {t}, {mn}, {w}",
                    "sel {mn}, {w}, {mn}",
                    "sxtb16 {a}, {w}",
                    "sxtb16 {b}, {w}, ror #8",
                    "ssub16 {a}, {a}, {zz}",
                    "ssub16 {b}, {b}, {zz}",
                    "sxth {t}, {a}",
                    "sxth {w}, {b}",
                    "strd {t}, {w}, [{op}], #16",
                    "asr {t}, {a}, #16",
                    "asr {w}, {b}, #16",
                    "strd {t}, {w}, [{op}, #-8]",
                    "subs {k}, #1",
                    "bne 2b",
                    xp = inout(reg) x.as_ptr() => _,
                    op = inout(reg) xc.as_mut_ptr() => _,
                    k = inout(reg) groups => _,
                    mx = inout(reg) mx,
                    mn = inout(reg) mn,
                    zz = in(reg) zz,
                    w = out(reg) _,
                    t = out(reg) _,
                    a = out(reg) _,
                    b = out(reg) _,
                    options(nostack)
                );
            }
            for k in 0..4 {
                hi = hi.max((mx >> (8 * k)) as u8 as i8 as i32);
                lo = lo.min((mn >> (8 * k)) as u8 as i8 as i32);
            }
            done = 4 * groups;
        }
    }
    // (`skip` where the assembly did a prefix: it compiles best there; plain elsewhere.)
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    let tail = xc.iter_mut().zip(x).skip(done);
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    let tail = xc.iter_mut().zip(x);
    for (c, &v) in tail {
        let v = v as i32;
        lo = lo.min(v);
        hi = hi.max(v);
        *c = v - zx;
    }
    (hi - zx).max(zx - lo) as u32
}

/// A stochastic-rounding row whose changes `r·xc` may exceed `V_MAX`: `v` is clamped first
/// (one update clip each). Returns `(clips, saturation flag)`.
#[inline(never)]
pub fn sr_row_clamped(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> (u32, u32) {
    if PACKED {
        return sr_row_clamped_packed(row, xc, r, rng);
    }
    if RV32 {
        return sr_row_clamped_rv32(row, xc, r, rng);
    }
    if THUMB1 {
        // Steps clamped to ±8 (equal to clamping v first, see `sr_row_clamped_packed`), the
        // clips counted as |xc| > V_MAX / |r|.
        let t = (V_MAX as u32)
            .checked_div(r.unsigned_abs())
            .unwrap_or(u32::MAX);
        let clips = count_above(xc.get(..row.len()).unwrap_or(xc), t);
        return (clips, sr_row_thumb1(row, xc, r, rng, true));
    }
    sr_row_clamped_portable(row, xc, r, rng)
}

/// [`sr_row_clamped`] the packed way. Clamping `v` to ±V_MAX before the rounding gives the
/// same step as clamping the unclamped step `(v + rnd) >> 16` to ±8 (`rnd < 2^16`: beyond
/// ±V_MAX both are ±8), so the steps come from [`sr_row`]'s arithmetic plus a packed clamp of
/// the 16-bit lanes ([`dsp::clamp8_16x2`]); the clips, `|r·xc| > V_MAX`, are the inputs with
/// `|xc| > ⌊V_MAX / |r|⌋`, counted in a separate pass. Needs `r ≠ 0`.
#[inline(always)]
pub fn sr_row_clamped_packed(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> (u32, u32) {
    let n = row.len().min(xc.len());
    let (Some(row), Some(xc)) = (row.get_mut(..n), xc.get(..n)) else {
        return (0, 0);
    };
    let t = (V_MAX as u32)
        .checked_div(r.unsigned_abs())
        .unwrap_or(u32::MAX);
    let clips = count_above(xc, t);
    let (mut cut, done) = sr_row_clamped_asm(row, xc, r, rng);
    let (Some(row), Some(xc)) = (row.get_mut(done..), xc.get(done..)) else {
        return (clips, cut);
    };
    let (body, rest) = row.as_chunks_mut::<4>();
    let split = 4 * body.len();
    for (w4, xq) in body.iter_mut().zip(xc.as_chunks::<4>().0) {
        let mut tv = [0i32; 4];
        for (tj, &xv) in tv.iter_mut().zip(xq) {
            *tj = r.wrapping_mul(xv).wrapping_add(rng.next16());
        }
        // PKHTB: the steps (t >> 16) of weights 0 and 2, 1 and 3, as 16-bit lanes.
        let lanes = |a: i32, b: i32| ((a >> 16) as u32 & 0xFFFF) | (b as u32 & 0xFFFF_0000);
        let s02 = dsp::uxtb16(dsp::clamp8_16x2(lanes(tv[0], tv[2])));
        let s13 = dsp::uxtb16(dsp::clamp8_16x2(lanes(tv[1], tv[3])));
        let steps = s02 | (s13 << 8);
        let (q, wrapped) = dsp::qsub8_with_wrap(word(w4), steps);
        cut |= q ^ wrapped;
        *w4 = q.to_le_bytes().map(|b| b as i8);
    }
    let lim = V_MAX as i32;
    for (wv, &xv) in rest.iter_mut().zip(xc.get(split..).unwrap_or(&[])) {
        cut |= wv.step(r.wrapping_mul(xv).clamp(-lim, lim), rng) as u32;
    }
    (clips, cut)
}

/// [`sr_row_clamped`] in plain Rust (the definition).
#[inline(always)]
pub fn sr_row_clamped_portable(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> (u32, u32) {
    let lim = V_MAX as i32;
    let mut clips = 0u32;
    let mut cut = 0i32;
    for (wv, &xv) in row.iter_mut().zip(xc) {
        let v = r.wrapping_mul(xv);
        // |v| > V_MAX, as one unsigned compare.
        clips += (v.wrapping_add(lim) as u32 > 2 * lim as u32) as u32;
        cut |= wv.step(v.clamp(-lim, lim), rng);
    }
    (clips, cut as u32)
}

/// One group of four weights of the stochastic-rounding row (see [`sr_row_asm`]); with
/// `clamp`, the lane clamp of [`sr_row_clamped_asm`] before the bytes are packed.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! sr_group {
    ($($clamp:literal)?) => {
        concat!(
            "ldm {xp}!, {{r0, r1, r2, r3}}\n",
            "mla {s}, {s}, {a}, {c}\n",
            "mul r0, {r}, r0\n",
            "add r0, r0, {s}, lsr #16\n",
            "mla {s}, {s}, {a}, {c}\n",
            "mul r1, {r}, r1\n",
            "add r1, r1, {s}, lsr #16\n",
            "mla {s}, {s}, {a}, {c}\n",
            "mul r2, {r}, r2\n",
            "add r2, r2, {s}, lsr #16\n",
            "mla {s}, {s}, {a}, {c}\n",
            "mul r3, {r}, r3\n",
            "add r3, r3, {s}, lsr #16\n",
            "pkhtb r0, r2, r0, asr #16\n",
            "pkhtb r1, r3, r1, asr #16\n",
            $($clamp, "mov.w r2, #0x00010001\n",
            "sadd16 r0, r0, r0\n",
            "ssat16 r0, #5, r0\n",
            "shadd16 r0, r0, r2\n",
            "sadd16 r1, r1, r1\n",
            "ssat16 r1, #5, r1\n",
            "shadd16 r1, r1, r2\n",)?
            "uxtb16 r0, r0\n",
            "uxtb16 r1, r1\n",
            "orr r0, r0, r1, lsl #8\n",
            "ldr r1, [{wp}]\n",
            "qsub8 r2, r1, r0\n",
            "ssub8 r3, r1, r0\n",
            "usada8 {cut}, r2, r3, {cut}\n",
            "str r2, [{wp}], #4\n",
        )
    };
}

/// Runs [`sr_group!`] over `groups` groups: two per loop iteration, then the odd one.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
macro_rules! sr_groups {
    ($xc:expr, $row:expr, $groups:expr, $state:ident, $cut:ident, $r:expr $(, $clamp:literal)?) => {{
        let mut xp = $xc.as_ptr();
        let mut wp = $row.as_mut_ptr();
        // SAFETY (both blocks): reads `xc[..4·groups]` (LDM, word aligned) and reads/writes
        // `row[..4·groups]` (unaligned word access is allowed on Armv7-M), both in bounds;
        // `row` is exclusively borrowed. r0–r3 are named for the ascending `LDM` list.
        if $groups >= 2 {
            unsafe {
                core::arch::asm!(
                    "2:",
                    sr_group!($($clamp)?),
                    sr_group!($($clamp)?),
                    "subs {k}, #1",
                    "bne 2b",
                    xp = inout(reg) xp,
                    wp = inout(reg) wp,
                    k = inout(reg) $groups / 2 => _,
                    s = inout(reg) $state,
                    cut = inout(reg) $cut,
                    r = in(reg) $r,
                    a = in(reg) 1_664_525u32,
                    c = in(reg) 1_013_904_223u32,
                    out("r0") _,
                    out("r1") _,
                    out("r2") _,
                    out("r3") _,
                    options(nostack)
                );
            }
        }
        if $groups % 2 == 1 {
            unsafe {
                core::arch::asm!(
                    sr_group!($($clamp)?),
                    xp = inout(reg) xp => _,
                    wp = inout(reg) wp => _,
                    s = inout(reg) $state,
                    cut = inout(reg) $cut,
                    r = in(reg) $r,
                    a = in(reg) 1_664_525u32,
                    c = in(reg) 1_013_904_223u32,
                    out("r0") _,
                    out("r1") _,
                    out("r2") _,
                    out("r3") _,
                    options(nostack)
                );
            }
        }
    }};
}

/// `#{j : |xc[j]| > t}`. In assembly on Armv7E-M for `t ≤ V_MAX`: `|x| > t ⟺ x + t > 2t`
/// unsigned, counted through the carry of `CMP 2t, x + t` (which counts the others).
#[inline(always)]
fn count_above(xc: &[i32], t: u32) -> u32 {
    #[allow(unused_mut)]
    let (mut n, mut done) = (0u32, 0usize);
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let groups = xc.len() / 4;
        if groups > 0 && t <= V_MAX as u32 {
            let mut below = 0u32;
            // SAFETY: reads `xc[..4·groups]` (word aligned, `LDM`), in bounds.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldm {xp}!, {{r0, r1, r2, r3}}",
                    "add r0, r0, {t}",
                    "cmp {t2}, r0",
                    "adc {b}, {b}, #0",
                    "add r1, r1, {t}",
                    "cmp {t2}, r1",
                    "adc {b}, {b}, #0",
                    "add r2, r2, {t}",
                    "cmp {t2}, r2",
                    "adc {b}, {b}, #0",
                    "add r3, r3, {t}",
                    "cmp {t2}, r3",
                    "adc {b}, {b}, #0",
                    "subs {k}, #1",
                    "bne 2b",
                    xp = inout(reg) xc.as_ptr() => _,
                    k = inout(reg) groups => _,
                    b = inout(reg) below,
                    t = in(reg) t,
                    t2 = in(reg) 2 * t,
                    out("r0") _,
                    out("r1") _,
                    out("r2") _,
                    out("r3") _,
                    options(readonly, nostack)
                );
            }
            done = 4 * groups;
            n = done as u32 - below;
        }
    }
    for &xv in xc.get(done..).unwrap_or(&[]) {
        n += (xv.unsigned_abs() > t) as u32;
    }
    n
}

/// The groups of four weights of [`sr_row_clamped_packed`] in assembly on Armv7E-M: the loop
/// of [`sr_row_asm`] plus the lane clamp (`SADD16`, `SSAT16 #5`, `SHADD16` with 1, the
/// constant in a register that is free at that point). Returns the saturation flag and the
/// weights done; elsewhere `(0, 0)`.
#[inline(always)]
fn sr_row_clamped_asm(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> (u32, usize) {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let groups = row.len().min(xc.len()) / 4;
        if groups == 0 {
            return (0, 0);
        }
        let mut cut = 0u32;
        let mut state = rng.state;
        sr_groups!(xc, row, groups, state, cut, r, "");
        rng.state = state;
        (cut, 4 * groups)
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let _ = (row, xc, r, rng);
        (0, 0)
    }
}

/// One row of the stochastic-rounding update on int8 weights (docs §5.2; Dense, one slot):
/// `w ← clamp(w − ((r·xc + rnd) >> 16), −128, 127)`, one generator draw per weight in memory
/// order. Requires `|r·xc| ≤ V_MAX` for every weight (steps in −8..=8, products in `i32`).
/// Returns a non-zero value when a weight saturated.
#[inline(always)]
pub fn sr_row(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> u32 {
    if PACKED {
        let (mut cut, done) = sr_row_asm(row, xc, r, rng);
        if let (Some(row), Some(xc)) = (row.get_mut(done..), xc.get(done..)) {
            cut |= sr_row_packed(row, xc, r, rng);
        }
        cut
    } else if RV32 {
        sr_row_rv32(row, xc, r, rng)
    } else if THUMB1 {
        sr_row_thumb1(row, xc, r, rng, false)
    } else {
        sr_row_scalar(row, xc, r, rng)
    }
}

/// [`sr_row`], four weights per packed saturating subtract (`QSUB8`; `SSUB8` tells where it
/// saturated).
#[inline(always)]
pub fn sr_row_packed(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> u32 {
    let (body, rest) = row.as_chunks_mut::<4>();
    let split = body.len() * 4;
    let mut cut = 0u32;
    for (w4, xq) in body.iter_mut().zip(xc.as_chunks::<4>().0) {
        let word = word(w4);
        let mut steps = 0u32;
        for (j, &xv) in xq.iter().enumerate() {
            let step = (r * xv + rng.next16()) >> 16;
            steps |= ((step as u32) & 0xFF) << (8 * j);
        }
        let (q, wrapped) = dsp::qsub8_with_wrap(word, steps);
        cut |= q ^ wrapped;
        *w4 = q.to_le_bytes().map(|b| b as i8);
    }
    for (wv, &xv) in rest.iter_mut().zip(xc.get(split..).unwrap_or(&[])) {
        cut |= wv.step(r * xv, rng) as u32;
    }
    cut
}

/// [`sr_row`], one weight at a time (the definition).
#[inline(always)]
pub fn sr_row_scalar(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> u32 {
    let mut cut = 0i32;
    for (wv, &xv) in row.iter_mut().zip(xc) {
        cut |= wv.step(r * xv, rng);
    }
    cut as u32
}

/// One weight of the RV32 stochastic-rounding row at byte offsets `$xo` (of `xc`) and `$wo`
/// (of the row): generator step, `(r·xc + rnd) >> 16`, `w − step` stored wrapped, and
/// `w − step + 128` ORed into `acc`: bits above the low byte mean that some weight left the
/// int8 range (then the row is redone by [`sr_fixup`]).
#[cfg(target_arch = "riscv32")]
macro_rules! rv_weight {
    ($xo:literal, $wo:literal) => {
        concat!(
            "lw {x}, ",
            $xo,
            "({xp})\n",
            "mul {s}, {s}, {a}\n",
            "add {s}, {s}, {c}\n",
            "srli {t}, {s}, 16\n",
            "mul {x}, {x}, {r}\n",
            "add {x}, {x}, {t}\n",
            "srai {x}, {x}, 16\n",
            "lb {w}, ",
            $wo,
            "({wp})\n",
            "sub {w}, {w}, {x}\n",
            "addi {t}, {w}, 128\n",
            "or {acc}, {acc}, {t}\n",
            "sb {w}, ",
            $wo,
            "({wp})\n",
        )
    };
}

/// [`sr_row`] in assembly on RV32IMC, four weights per loop iteration (LLVM's unrolled loop
/// spills); elsewhere the scalar loop.
#[inline(always)]
fn sr_row_rv32(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> u32 {
    #[cfg(target_arch = "riscv32")]
    {
        let n = row.len().min(xc.len());
        let mut acc = 0u32;
        let start = *rng;
        let mut state = rng.state;
        let mut xp = xc.as_ptr();
        let mut wp = row.as_mut_ptr();
        // SAFETY (both blocks; the second runs for the last n mod 4): reads `xc[..n]` (word
        // aligned), reads and writes `row[..n]`,
        // in bounds; `row` is exclusively borrowed; register operands otherwise.
        if n >= 4 {
            unsafe {
                core::arch::asm!(
                    "2:",
                    rv_weight!("0", "0"),
                    rv_weight!("4", "1"),
                    rv_weight!("8", "2"),
                    rv_weight!("12", "3"),
                    "addi {xp}, {xp}, 16",
                    "addi {wp}, {wp}, 4",
                    "bne {wp}, {end}, 2b",
                    xp = inout(reg) xp,
                    wp = inout(reg) wp,
                    end = in(reg) row.as_mut_ptr().wrapping_add(n & !3),
                    s = inout(reg) state,
                    acc = inout(reg) acc,
                    r = in(reg) r,
                    a = in(reg) 1_664_525u32,
                    c = in(reg) 1_013_904_223u32,
                    x = out(reg) _,
                    t = out(reg) _,
                    w = out(reg) _,
                    options(nostack)
                );
            }
        }
        for _ in 0..n % 4 {
            unsafe {
                core::arch::asm!(
                    rv_weight!("0", "0"),
                    "addi {xp}, {xp}, 4",
                    "addi {wp}, {wp}, 1",
                    xp = inout(reg) xp,
                    wp = inout(reg) wp,
                    s = inout(reg) state,
                    acc = inout(reg) acc,
                    r = in(reg) r,
                    a = in(reg) 1_664_525u32,
                    c = in(reg) 1_013_904_223u32,
                    x = out(reg) _,
                    t = out(reg) _,
                    w = out(reg) _,
                    options(nostack)
                );
            }
        }
        rng.state = state;
        if acc & !0xFF != 0 {
            sr_fixup(row, xc, r, start, false);
            return 1;
        }
        0
    }
    #[cfg(not(target_arch = "riscv32"))]
    {
        sr_row_scalar(row, xc, r, rng)
    }
}

/// One weight of the Armv6-M stochastic-rounding row at byte offset `$o`; r0 = xc (`LDM`), r1
/// scratch, r2 = weight, r3 = generator, r4/r5 = pointers; r8 = end, r9 = multiplier,
/// r10 = increment, r11 = `r`, r12 = flag, in high registers (Thumb-1 `MULS` takes low ones: one `MOV` each). Out of the int8 range
/// (sign-extending the low byte changes the value) it branches to `$slow`, which clamps and
/// returns to `$back`. With `clamp`, steps beyond ±8 (`v` beyond ±V_MAX) go to `$hi`/`$lo`.
#[cfg(all(target_arch = "arm", not(target_feature = "thumb2")))]
macro_rules! t1_weight {
    ($o:literal, $slow:literal, $back:literal $(, $hi:literal, $lo:literal, $cback:literal)?) => {
        concat!(
            "ldm r4!, {{r0}}\n",
            "mov r1, r9\n",
            "muls r3, r1, r3\n",
            "add r3, r10\n",
            "mov r1, r11\n",
            "muls r0, r1, r0\n",
            "lsrs r1, r3, #16\n",
            "adds r0, r0, r1\n",
            "asrs r0, r0, #16\n",
            $("cmp r0, #8\n",
            "bgt ", $hi, "f\n",
            "movs r1, #8\n",
            "cmn r0, r1\n",
            "blt ", $lo, "f\n",
            $cback, ":\n",)?
            "ldrb r2, [r5, #", $o, "]\n",
            "sxtb r2, r2\n",
            "subs r2, r2, r0\n",
            "sxtb r1, r2\n",
            "cmp r1, r2\n",
            "bne ", $slow, "f\n",
            $back, ":\n",
            "strb r2, [r5, #", $o, "]\n",
        )
    };
}

/// The out-of-line clamp of [`t1_weight!`]: `±128 ^ 127` from the sign, the flag set.
#[cfg(all(target_arch = "arm", not(target_feature = "thumb2")))]
macro_rules! t1_slow {
    ($slow:literal, $back:literal) => {
        concat!(
            $slow,
            ":\n",
            "asrs r2, r2, #31\n",
            "movs r1, #127\n",
            "eors r2, r1\n",
            "mov r12, r1\n",
            "b ",
            $back,
            "b\n",
        )
    };
}

/// The out-of-line step clamp of a clamped row: ±8.
#[cfg(all(target_arch = "arm", not(target_feature = "thumb2")))]
macro_rules! t1_clamp {
    ($hi:literal, $lo:literal, $cback:literal) => {
        concat!(
            $hi,
            ":\n",
            "movs r0, #8\n",
            "b ",
            $cback,
            "b\n",
            $lo,
            ":\n",
            "movs r0, #8\n",
            "negs r0, r0\n",
            "b ",
            $cback,
            "b\n",
        )
    };
}

/// [`sr_row`] (or, with `clamp`, the steps of [`sr_row_clamped`], whose clips the caller
/// counts) in assembly on Armv6-M, two weights per loop iteration; elsewhere the scalar loop.
#[inline(always)]
fn sr_row_thumb1(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg, clamp: bool) -> u32 {
    #[cfg(all(target_arch = "arm", not(target_feature = "thumb2")))]
    {
        let n = row.len().min(xc.len());
        let mut cut = 0u32;
        let mut state = rng.state;
        let mut xp = xc.as_ptr();
        let mut wp = row.as_mut_ptr();
        let pairs = n / 2;
        // SAFETY (all blocks): reads `xc[..n]` (word aligned), reads and writes `row[..n]`,
        // in bounds (the loop runs `n / 2` pairs, the single block the last odd weight);
        // `row` is exclusively borrowed; r0–r5 named for Thumb-1's low-register forms. The high
        // registers (only clobbers in Thumb-1 asm) are loaded from a parameter array that r0
        // points to (end, multiplier, increment, r, flag); the flag comes back in r0.
        macro_rules! run {
            ($pair0:expr, $pair1:expr, $tail:expr, $($extra:expr),*) => {
                if pairs > 0 {
                    unsafe {
                        core::arch::asm!(
                            "ldr r1, [r0, #0]",
                            "mov r8, r1",
                            "ldr r1, [r0, #4]",
                            "mov r9, r1",
                            "ldr r1, [r0, #8]",
                            "mov r10, r1",
                            "ldr r1, [r0, #12]",
                            "mov r11, r1",
                            "ldr r1, [r0, #16]",
                            "mov r12, r1",
                            "2:",
                            $pair0,
                            $pair1,
                            "adds r5, #2",
                            "cmp r5, r8",
                            "bne 2b",
                            "b 9f",
                            $($extra,)*
                            "9:",
                            "mov r0, r12",
                            inout("r0") [wp.wrapping_add(2 * pairs) as u32, 1_664_525, 1_013_904_223, r as u32, cut].as_ptr() => cut,
                            inout("r3") state,
                            inout("r4") xp,
                            inout("r5") wp,
                            out("r1") _,
                            out("r2") _,
                            out("r8") _,
                            out("r9") _,
                            out("r10") _,
                            out("r11") _,
                            out("r12") _,
                            options(nostack)
                        );
                    }
                }
                if n % 2 == 1 {
                    unsafe {
                        core::arch::asm!(
                            "ldr r1, [r0, #0]",
                            "mov r8, r1",
                            "ldr r1, [r0, #4]",
                            "mov r9, r1",
                            "ldr r1, [r0, #8]",
                            "mov r10, r1",
                            "ldr r1, [r0, #12]",
                            "mov r11, r1",
                            "ldr r1, [r0, #16]",
                            "mov r12, r1",
                            $tail,
                            "b 9f",
                            $($extra,)*
                            "9:",
                            "mov r0, r12",
                            inout("r0") [0, 1_664_525, 1_013_904_223, r as u32, cut].as_ptr() => cut,
                            inout("r3") state,
                            inout("r4") xp => _,
                            inout("r5") wp => _,
                            out("r1") _,
                            out("r2") _,
                            out("r8") _,
                            out("r9") _,
                            out("r10") _,
                            out("r11") _,
                            out("r12") _,
                            options(nostack)
                        );
                    }
                }
            };
        }
        if clamp {
            run!(
                t1_weight!("0", "3", "4", "20", "21", "22"),
                t1_weight!("1", "5", "6", "23", "24", "25"),
                t1_weight!("0", "3", "4", "20", "21", "22"),
                t1_slow!("3", "4"),
                t1_slow!("5", "6"),
                t1_clamp!("20", "21", "22"),
                t1_clamp!("23", "24", "25")
            );
        } else {
            run!(
                t1_weight!("0", "3", "4"),
                t1_weight!("1", "5", "6"),
                t1_weight!("0", "3", "4"),
                t1_slow!("3", "4"),
                t1_slow!("5", "6")
            );
        }
        rng.state = state;
        cut
    }
    #[cfg(not(all(target_arch = "arm", not(target_feature = "thumb2"))))]
    {
        if clamp {
            sr_row_clamped_portable(row, xc, r, rng).1
        } else {
            sr_row_scalar(row, xc, r, rng)
        }
    }
}

/// Redo a stochastic-rounding row whose weights were stored wrapped (no clamp) from the
/// generator state at its start: the wrapped byte plus the step gives back the old weight
/// (it was in range), then `clamp(w − step)` is the defined result (`clamp`: `v` of a clamped
/// row, §5.2).
#[cfg_attr(not(target_arch = "riscv32"), allow(dead_code))]
#[inline(never)]
fn sr_fixup(row: &mut [i8], xc: &[i32], r: i32, mut rng: Lcg, clamp: bool) {
    let lim = V_MAX as i32;
    for (wv, &xv) in row.iter_mut().zip(xc) {
        let v = r.wrapping_mul(xv);
        let v = if clamp { v.clamp(-lim, lim) } else { v };
        let step = v.wrapping_add(rng.next16()) >> 16;
        let old = (*wv as i32).wrapping_add(step) as i8 as i32;
        *wv = (old - step).clamp(-128, 127) as i8;
    }
}

/// [`sr_row_clamped`] in assembly on RV32IMC: `v = r·xc` beyond ±V_MAX is clamped and counted
/// out of line; elsewhere the portable loop.
#[inline(always)]
fn sr_row_clamped_rv32(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> (u32, u32) {
    #[cfg(target_arch = "riscv32")]
    {
        let n = row.len().min(xc.len());
        if n == 0 {
            return (0, 0);
        }
        let (mut acc, mut clips) = (0u32, 0u32);
        let start = *rng;
        let mut state = rng.state;
        // SAFETY: reads `xc[..n]` (word aligned), reads and writes `row[..n]`, in bounds;
        // `row` is exclusively borrowed.
        unsafe {
            core::arch::asm!(
                "2:",
                "lw {x}, 0({xp})",
                "mul {s}, {s}, {a}",
                "add {s}, {s}, {c}",
                "mul {x}, {x}, {r}",
                "blt {vm}, {x}, 7f",
                "blt {x}, {nvm}, 8f",
                "6:",
                "srli {t}, {s}, 16",
                "add {x}, {x}, {t}",
                "srai {x}, {x}, 16",
                "lb {w}, 0({wp})",
                "sub {w}, {w}, {x}",
                "addi {t}, {w}, 128",
                "or {acc}, {acc}, {t}",
                "sb {w}, 0({wp})",
                "addi {xp}, {xp}, 4",
                "addi {wp}, {wp}, 1",
                "bne {wp}, {end}, 2b",
                "j 9f",
                "7:",
                "mv {x}, {vm}",
                "addi {cl}, {cl}, 1",
                "j 6b",
                "8:",
                "mv {x}, {nvm}",
                "addi {cl}, {cl}, 1",
                "j 6b",
                "9:",
                xp = inout(reg) xc.as_ptr() => _,
                wp = inout(reg) row.as_mut_ptr() => _,
                end = in(reg) row.as_mut_ptr().wrapping_add(n),
                s = inout(reg) state,
                acc = inout(reg) acc,
                cl = inout(reg) clips,
                r = in(reg) r,
                a = in(reg) 1_664_525u32,
                c = in(reg) 1_013_904_223u32,
                vm = in(reg) V_MAX as i32,
                nvm = in(reg) -(V_MAX as i32),
                x = out(reg) _,
                t = out(reg) _,
                w = out(reg) _,
                options(nostack)
            );
        }
        rng.state = state;
        if acc & !0xFF != 0 {
            sr_fixup(row, xc, r, start, true);
            return (clips, 1);
        }
        (clips, 0)
    }
    #[cfg(not(target_arch = "riscv32"))]
    {
        sr_row_clamped_portable(row, xc, r, rng)
    }
}

/// The groups of four weights of [`sr_row`] in assembly on Armv7E-M: per weight one `MLA`
/// (generator), `MUL` and `ADD … LSR #16` (`r·xc + rnd`); per four, the steps packed into bytes
/// (`PKHTB`, `UXTB16`, `ORR`), `QSUB8`/`SSUB8` and `USADA8` (saturation flag). Returns the flag
/// and the number of weights done; elsewhere `(0, 0)`.
#[inline(always)]
fn sr_row_asm(row: &mut [i8], xc: &[i32], r: i32, rng: &mut Lcg) -> (u32, usize) {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let groups = row.len().min(xc.len()) / 4;
        if groups == 0 {
            return (0, 0);
        }
        let mut cut = 0u32;
        let mut state = rng.state;
        sr_groups!(xc, row, groups, state, cut, r);
        rng.state = state;
        (cut, 4 * groups)
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let _ = (row, xc, r, rng);
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parameters that make every output distinct and some saturate.
    fn params<const OUT: usize>(seed: u32, zx: i8, zy: i8) -> ChannelParams<OUT> {
        let mut q = ChannelParams::<OUT>::new();
        let mut s = seed;
        for c in 0..OUT {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            q.m[c] = (1 << 30) + (s >> 2) as i32 % (1 << 30);
            q.s[c] = -((s >> 27) as i8) - 2;
            q.bias[c] = (s as i32) >> 14;
        }
        q.z_x = zx;
        q.z_y = zy;
        q
    }

    /// The definition: one row at a time, `Σ w·(x − z_x)`, then [`finish_output`].
    fn reference<const OUT: usize>(
        n: usize,
        w: &[i8],
        q: &ChannelParams<OUT>,
        relu: bool,
        x: &[i8],
    ) -> (Vec<i8>, u32) {
        let mut sat = 0;
        let y = (0..OUT)
            .map(|c| {
                let s: i32 = (0..n)
                    .map(|j| w[c * n + j] as i32 * (x[j] as i32 - q.z_x as i32))
                    .sum();
                finish_output(s, q, c, relu, &mut sat)
            })
            .collect();
        (y, sat)
    }

    fn check<const N: usize, const OUT: usize>(w: &[i8], x: &[i8], seed: u32, relu: bool) {
        let q = params::<OUT>(seed, x[0], (seed >> 8) as i8);
        let (want, want_sat) = reference::<OUT>(N, w, &q, relu, x);
        // Kernel 0/1: const shape scalar/packed; 2/3: run-time shape scalar/packed (the
        // run-time ones with a wider channel capacity than rows, as DynMlp uses them).
        let qw = {
            let mut qw = params::<16>(seed, x[0], (seed >> 8) as i8);
            qw.m[..OUT].copy_from_slice(&q.m);
            qw.s[..OUT].copy_from_slice(&q.s);
            qw.bias[..OUT].copy_from_slice(&q.bias);
            qw
        };
        for kernel in 0..4 {
            let mut y = vec![0i8; OUT];
            let mut ctr = Counters::default();
            let mut scratch = vec![0i32; N];
            match kernel {
                0 => forward_scalar::<N, OUT>(w, &q, relu, x, &mut y, &mut ctr, &mut scratch),
                1 => forward_packed::<N, OUT>(w, &q, relu, x, &mut y, &mut ctr, &mut scratch),
                2 => {
                    forward_scalar_n::<16>(N, OUT, w, &qw, relu, x, &mut y, &mut ctr, &mut scratch)
                }
                _ => {
                    forward_packed_n::<16>(N, OUT, w, &qw, relu, x, &mut y, &mut ctr, &mut scratch)
                }
            }
            assert_eq!(y, want, "kernel={kernel} N={N} OUT={OUT}");
            assert_eq!(ctr.forward_saturations, want_sat, "kernel={kernel}");
        }
    }

    /// Every shape class: fan-in below, at and above multiples of 4 and 8, row counts with and
    /// without a remainder of the 4-row blocks.
    fn check_all(data: &[i8], seed: u32, relu: bool) {
        macro_rules! shapes {
            ($($n:literal)*) => {$(
                let (x, w) = data.split_at($n);
                check::<$n, 1>(&w[..$n], x, seed, relu);
                check::<$n, 4>(&w[..4 * $n], x, seed, relu);
                check::<$n, 5>(&w[..5 * $n], x, seed, relu);
                check::<$n, 10>(&w[..10 * $n], x, seed, relu);
                check::<$n, 3>(&w[..3 * $n], x, seed, relu);
                check::<$n, 7>(&w[..7 * $n], x, seed, relu);
            )*};
        }
        shapes!(1 2 3 4 5 7 8 9 12 15 16 17 24 31 102 110);
    }

    #[test]
    fn extreme_values() {
        let all_min = vec![-128i8; 11 * 110];
        let mut mixed = vec![127i8; 110];
        mixed.extend((0..10 * 110).map(|j| if j % 3 == 0 { 127 } else { -128 }));
        for (k, x) in mixed.iter_mut().take(110).enumerate() {
            if k % 2 == 0 {
                *x = -128;
            }
        }
        check_all(&all_min, 1, false);
        check_all(&mixed, 2, true);
    }

    /// Packed and scalar stochastic-rounding rows: same weights, flag and generator state.
    fn check_sr(w: &[i8], xc: &[i32], r: i32, seed: u32) {
        let (mut a, mut b) = (w.to_vec(), w.to_vec());
        let (mut ra, mut rb) = (Lcg::new(seed), Lcg::new(seed));
        let ca = sr_row_packed(&mut a, xc, r, &mut ra);
        let cb = sr_row_scalar(&mut b, xc, r, &mut rb);
        assert_eq!(a, b);
        assert_eq!(ca != 0, cb != 0);
        assert_eq!(ra.state, rb.state);
        let (mut c, mut rc) = (w.to_vec(), Lcg::new(seed));
        let cc = sr_row(&mut c, xc, r, &mut rc);
        assert_eq!((c, cc != 0, rc.state), (b, cb != 0, rb.state));
    }

    proptest! {
        #[test]
        fn sr_rows_agree(
            w in proptest::collection::vec(any::<i8>(), 0..70),
            x in proptest::collection::vec(-255i32..=255, 70),
            r_log in 0u32..21,
            r_raw in any::<i32>(),
            seed in any::<u32>(),
        ) {
            // |r·xc| ≤ V_MAX: |r| ≤ 2^19 / max|xc|, any magnitude up to that.
            let xmax = x.iter().take(w.len()).map(|v| v.unsigned_abs()).max().unwrap_or(0).max(1);
            let rmax = ((8i64 << 16) / xmax as i64) as i32;
            let r = (r_raw % (1 << r_log).min(rmax).max(1)).clamp(-rmax, rmax);
            check_sr(&w, &x[..w.len()], r, seed);
        }

        #[test]
        fn backward_equals_the_definition(
            d in proptest::collection::vec(prop_oneof![Just(0i16), -4096i16..=4096], 10),
            w in proptest::collection::vec(any::<i8>(), 10 * 110),
            e0 in any::<i32>(),
        ) {
            macro_rules! shapes {
                ($($n:literal)*) => {$(
                    let mut want = vec![0i32; $n];
                    for c in 0..10 {
                        for j in 0..$n {
                            want[j] = want[j].wrapping_add(d[c] as i32 * w[c * $n + j] as i32);
                        }
                    }
                    for kernel in 0..3 {
                        let mut got = vec![e0; $n + 1];
                        match kernel {
                            0 => backward_with::<$n, 10, false>(&w[..10 * $n], &d, &mut got),
                            1 => backward_with::<$n, 10, true>(&w[..10 * $n], &d, &mut got),
                            _ => backward_n($n, 10, &w[..10 * $n], &d, &mut got),
                        }
                        prop_assert_eq!(&got[..$n], &want[..]);
                        prop_assert_eq!(got[$n], 0);
                    }
                )*};
            }
            shapes!(1 3 4 5 8 9 64 102 110);
        }

        #[test]
        fn fixup_recovers_wrapped_rows(
            w in proptest::collection::vec(any::<i8>(), 0..70),
            x in proptest::collection::vec(-255i32..=255, 70),
            r in -(1i32 << 11)..=(1 << 11),
            seed in any::<u32>(),
        ) {
            let x = &x[..w.len()];
            let (mut want, mut rw) = (w.clone(), Lcg::new(seed));
            sr_row_scalar(&mut want, x, r, &mut rw);
            // What the unchecked loop stores: w − step wrapped to a byte.
            let (mut got, mut rg) = (w.clone(), Lcg::new(seed));
            for (wv, &xv) in got.iter_mut().zip(x) {
                let step = (r * xv + rg.next16()) >> 16;
                *wv = (*wv as i32 - step) as i8;
            }
            sr_fixup(&mut got, x, r, Lcg::new(seed), false);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn clamped_row_counts_and_steps(
            w in proptest::collection::vec(any::<i8>(), 0..70),
            x in proptest::collection::vec(-255i32..=255, 70),
            r in -(1i32 << 20)..=(1 << 20),
            seed in any::<u32>(),
        ) {
            let x = &x[..w.len()];
            let r = if r == 0 { 1 } else { r };
            let (mut a, mut ra) = (w.clone(), Lcg::new(seed));
            let (clips, cut) = sr_row_clamped(&mut a, x, r, &mut ra);
            let (mut p, mut rp) = (w.clone(), Lcg::new(seed));
            let (pclips, pcut) = sr_row_clamped_packed(&mut p, x, r, &mut rp);
            prop_assert_eq!((&p, pclips, pcut != 0, rp.state), (&a, clips, cut != 0, ra.state));
            let (mut b, mut rb) = (w.clone(), Lcg::new(seed));
            let (mut want_clips, mut want_cut) = (0u32, 0i32);
            for (wv, &xv) in b.iter_mut().zip(x) {
                let v = r * xv;
                let vc = v.clamp(-(V_MAX as i32), V_MAX as i32);
                want_clips += (vc != v) as u32;
                want_cut |= wv.step(vc, &mut rb);
            }
            prop_assert_eq!((a, clips, cut != 0, ra.state), (b, want_clips, want_cut != 0, rb.state));
        }

        #[test]
        fn split_product_is_exact(a in any::<i32>(), b in any::<i16>()) {
            prop_assert_eq!(mul_i16_split(a, b), a as i64 * b as i64);
            prop_assert_eq!(mul_i16(a as i64, b), a as i64 * b as i64);
        }

        #[test]
        fn packed_and_scalar_equal_the_definition(
            seed in any::<u32>(),
            relu in any::<bool>(),
            data in proptest::collection::vec(any::<i8>(), 11 * 110),
        ) {
            check_all(&data, seed, relu);
        }
    }
}
