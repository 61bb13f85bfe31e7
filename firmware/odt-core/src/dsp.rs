//! Packed-SIMD helpers for Armv7E-M (Cortex-M4/M7 "DSP extension"), with portable fallbacks
//! that compute exactly the same bits on every other target.
//!
//! Stable `asm!` is used because the DSP intrinsics are not stable in `core::arch::arm`. Each
//! helper is a single instruction; the fallbacks are the reference definitions, and the
//! cross-target benchmark checks that both give the same trained state.

/// Two 16-bit lanes of `x` (bytes 0 and 2) sign-extended: `SXTB16`.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let r: u32;
        // SAFETY: a pure register-to-register instruction of this target.
        unsafe {
            core::arch::asm!("sxtb16 {0}, {1}", out(reg) r, in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let lo = (x as u8 as i8 as i16) as u16 as u32;
        let hi = ((x >> 16) as u8 as i8 as i16) as u16 as u32;
        lo | (hi << 16)
    }
}

/// Bytes 1 and 3 of `x` sign-extended to 16-bit lanes: `SXTB16 …, ROR #8`.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let r: u32;
        // SAFETY: a pure register-to-register instruction of this target.
        unsafe {
            core::arch::asm!("sxtb16 {0}, {1}, ror #8", out(reg) r, in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        sxtb16(x >> 8)
    }
}

/// `acc + a.lo·b.lo + a.hi·b.hi` on signed 16-bit lanes: `SMLAD`.
///
/// Callers keep the sums far from `i32` overflow (|lane products| < 2^15·2^8).
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let r: i32;
        // SAFETY: a pure register instruction; it may set the sticky Q flag, which nothing reads.
        unsafe {
            core::arch::asm!("smlad {0}, {1}, {2}, {3}", out(reg) r, in(reg) a, in(reg) b, in(reg) acc, options(pure, nomem, nostack))
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let lo = (a as u16 as i16 as i32) * (b as u16 as i16 as i32);
        let hi = ((a >> 16) as u16 as i16 as i32) * ((b >> 16) as u16 as i16 as i32);
        acc.wrapping_add(lo).wrapping_add(hi)
    }
}

/// Per byte lane, saturating `a − b` (`QSUB8`) and the wrapping difference (`SSUB8`): the
/// lanes differ exactly where the result saturated.
#[inline(always)]
pub fn qsub8_with_wrap(a: u32, b: u32) -> (u32, u32) {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let q: u32;
        let w: u32;
        // SAFETY: pure register instructions; SSUB8 sets the GE flags, which nothing reads.
        unsafe {
            core::arch::asm!(
                "qsub8 {q}, {a}, {b}",
                "ssub8 {w}, {a}, {b}",
                q = out(reg) q, w = out(reg) w, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack)
            )
        };
        (q, w)
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let mut q = 0u32;
        let mut w = 0u32;
        for lane in 0..4 {
            let x = (a >> (8 * lane)) as u8 as i8 as i32;
            let y = (b >> (8 * lane)) as u8 as i8 as i32;
            let d = x - y;
            q |= (d.clamp(-128, 127) as u8 as u32) << (8 * lane);
            w |= (d as u8 as u32) << (8 * lane);
        }
        (q, w)
    }
}

/// Per signed 16-bit lane, the wrapping difference `a − b`: `SSUB16`.
#[inline(always)]
pub fn ssub16(a: u32, b: u32) -> u32 {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let r: u32;
        // SAFETY: a pure register instruction; it sets the GE flags, which nothing reads.
        unsafe {
            core::arch::asm!("ssub16 {0}, {1}, {2}", out(reg) r, in(reg) a, in(reg) b, options(pure, nomem, nostack))
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let lo = (a as u16).wrapping_sub(b as u16) as u32;
        let hi = ((a >> 16) as u16).wrapping_sub((b >> 16) as u16) as u32;
        lo | (hi << 16)
    }
}

/// Bottom half of `a`, bottom half of `b` on top: `PKHBT d, a, b, LSL #16`.
///
/// Plain Rust: LLVM selects `PKHBT` for this pattern on Armv6 and later.
#[inline(always)]
pub fn pkhbt(a: u32, b: u32) -> u32 {
    (a & 0xFFFF) | (b << 16)
}

/// Top half of `a`, top half of `b` at the bottom: `PKHTB d, a, b, ASR #16`.
#[inline(always)]
pub fn pkhtb(a: u32, b: u32) -> u32 {
    (a & 0xFFFF_0000) | (b >> 16)
}

/// Bytes 0 and 2 of `x`, zero-extended to 16-bit lanes: `UXTB16`.
#[inline(always)]
pub fn uxtb16(x: u32) -> u32 {
    x & 0x00FF_00FF
}

/// `acc + Σ |a.byte[i] − b.byte[i]|` over unsigned bytes: `USADA8`.
#[inline(always)]
pub fn usada8(a: u32, b: u32, acc: u32) -> u32 {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let r: u32;
        // SAFETY: a pure register-to-register instruction of this target.
        unsafe {
            core::arch::asm!("usada8 {0}, {1}, {2}, {3}", out(reg) r, in(reg) a, in(reg) b, in(reg) acc, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let mut s = acc;
        for lane in 0..4 {
            let x = (a >> (8 * lane)) as u8;
            let y = (b >> (8 * lane)) as u8;
            s = s.wrapping_add(x.abs_diff(y) as u32);
        }
        s
    }
}

/// Per signed 16-bit lane: `clamp(s, −8, 8)` for `|s| < 2^14`, as `SADD16` (2s), `SSAT16 #5`
/// (to [−16, 15]) and `SHADD16` with 1 (halving add): ⌈sat(2s)/2⌉ is exactly the clamp.
#[inline(always)]
pub fn clamp8_16x2(p: u32) -> u32 {
    #[cfg(all(target_arch = "arm", target_feature = "dsp"))]
    {
        let r: u32;
        // SAFETY: pure register instructions; SADD16/SHADD16 set the GE flags, SSAT16 may set
        // the sticky Q flag; nothing reads them.
        unsafe {
            core::arch::asm!(
                "sadd16 {r}, {p}, {p}",
                "ssat16 {r}, #5, {r}",
                "shadd16 {r}, {r}, {one}",
                r = out(reg) r, p = in(reg) p, one = in(reg) 0x0001_0001u32,
                options(pure, nomem, nostack)
            )
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
    {
        let lo = (p as u16 as i16).clamp(-8, 8) as u16 as u32;
        let hi = ((p >> 16) as u16 as i16).clamp(-8, 8) as u16 as u32;
        lo | (hi << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_match_their_definitions() {
        assert_eq!(sxtb16(0x80_7F_01_FF), 0x007F_FFFF);
        assert_eq!(sxtb16_ror8(0x80_7F_01_FF), 0xFF80_0001);
        assert_eq!(smlad(0x0002_FFFF, 0x0003_0005, 10), 10 - 5 + 6);
        let (q, w) = qsub8_with_wrap(0x80_7F_00_05, 0x01_FF_08_02);
        assert_eq!(q, 0x80_7F_F8_03);
        assert_eq!(w, 0x7F_80_F8_03);
        assert_eq!(pkhbt(0x1234_5678, 0x9ABC_DEF0), 0xDEF0_5678);
        assert_eq!(ssub16(0x0001_0000, 0x0002_0001), 0xFFFF_FFFF);
        assert_eq!(ssub16(0x7FFF_8000, 0xFFFF_0001), 0x8000_7FFF);
        assert_eq!(pkhtb(0x1234_5678, 0x9ABC_DEF0), 0x1234_9ABC);
        assert_eq!(uxtb16(0x1234_5678), 0x0034_0078);
        assert_eq!(usada8(0x01_FF_10_00, 0x03_00_08_00, 5), 5 + 2 + 255 + 8);
        assert_eq!(clamp8_16x2(0x0009_FFF7), 0x0008_FFF8);
        assert_eq!(clamp8_16x2(0x0008_FFF8), 0x0008_FFF8);
        assert_eq!(clamp8_16x2(0x3000_C000), 0x0008_FFF8);
        assert_eq!(clamp8_16x2(0x0007_FFFF), 0x0007_FFFF);
    }

    /// The halving trick equals the clamp on every lane value it is used for.
    #[test]
    fn clamp8_trick_is_the_clamp() {
        for s in -(1i32 << 14) + 1..(1 << 14) {
            let sat = (2 * s).clamp(-16, 15);
            assert_eq!((sat + 1) >> 1, s.clamp(-8, 8), "{s}");
        }
    }
}
