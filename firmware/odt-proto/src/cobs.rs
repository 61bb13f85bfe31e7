//! Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999).
//!
//! Standard COBS, byte-identical to Python's `cobs.cobs`: a block code `c` (1 to 255) is followed
//! by `c − 1` data bytes and, unless `c == 0xFF` or it is the last block, an implied zero. A packet
//! whose last block is a full `0xFF` block gets no extra trailing `0x01` code (decoders accept
//! both). The encoding of `n` bytes is at most [`max_encoded_len`]`(n)` bytes long and contains
//! no zero; the frame delimiter `0x00` is added by [`crate::frame::encode_frame`].
//!
//! This is ~60 lines, so it is written here rather than pulled in: it must match the Python
//! side byte for byte (golden frames), never panic and never allocate.

/// Why COBS encoding or decoding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CobsError {
    /// The output buffer is too small.
    OutputTooSmall,
    /// The encoded input contains a zero byte (a frame delimiter inside a frame).
    ZeroByte,
    /// A block code promises more bytes than the input has.
    Truncated,
}

/// Largest encoding of `n` bytes: `n + max(1, ceil(n / 254))`.
pub const fn max_encoded_len(n: usize) -> usize {
    let blocks = n.div_ceil(254);
    n + if blocks == 0 { 1 } else { blocks }
}

fn put(dst: &mut [u8], at: usize, v: u8) -> Result<(), CobsError> {
    *dst.get_mut(at).ok_or(CobsError::OutputTooSmall)? = v;
    Ok(())
}

/// Encode `src` into `dst` (no delimiter); returns the encoded length.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    let mut code_at = 0usize;
    let mut out = 1usize;
    let mut code: u8 = 1;
    for (i, &b) in src.iter().enumerate() {
        if b == 0 {
            put(dst, code_at, code)?;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            put(dst, out, b)?;
            out += 1;
            code += 1;
            if code == 0xFF {
                put(dst, code_at, code)?;
                code = 1;
                if i + 1 == src.len() {
                    // A full block ends the input: no trailing code.
                    return Ok(out);
                }
                code_at = out;
                out += 1;
            }
        }
    }
    put(dst, code_at, code)?;
    Ok(out)
}

/// Decode `src` (the bytes between two delimiters, no zero allowed) into `dst`; returns the
/// decoded length. An empty `src` decodes to nothing.
pub fn decode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    let mut i = 0usize;
    let mut out = 0usize;
    while let Some(&code) = src.get(i) {
        if code == 0 {
            return Err(CobsError::ZeroByte);
        }
        i += 1;
        let n = code as usize - 1;
        let block = src.get(i..i + n).ok_or(CobsError::Truncated)?;
        if block.contains(&0) {
            return Err(CobsError::ZeroByte);
        }
        dst.get_mut(out..out + n)
            .ok_or(CobsError::OutputTooSmall)?
            .copy_from_slice(block);
        out += n;
        i += n;
        if code != 0xFF && i < src.len() {
            put(dst, out, 0)?;
            out += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(src: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; max_encoded_len(src.len())];
        let n = encode(src, &mut d).unwrap();
        d.truncate(n);
        d
    }

    #[test]
    fn known_vectors() {
        // Wikipedia's COBS examples.
        assert_eq!(enc(&[]), [0x01]);
        assert_eq!(enc(&[0x00]), [0x01, 0x01]);
        assert_eq!(enc(&[0x00, 0x00]), [0x01, 0x01, 0x01]);
        assert_eq!(enc(&[0x00, 0x11, 0x00]), [0x01, 0x02, 0x11, 0x01]);
        assert_eq!(
            enc(&[0x11, 0x22, 0x00, 0x33]),
            [0x03, 0x11, 0x22, 0x02, 0x33]
        );
        assert_eq!(
            enc(&[0x11, 0x22, 0x33, 0x44]),
            [0x05, 0x11, 0x22, 0x33, 0x44]
        );
        assert_eq!(
            enc(&[0x11, 0x00, 0x00, 0x00]),
            [0x02, 0x11, 0x01, 0x01, 0x01]
        );
        let a: Vec<u8> = (1..=254).collect();
        let mut e = vec![0xFF];
        e.extend(&a);
        assert_eq!(enc(&a), e);
        let mut b = vec![0u8];
        b.extend(&a);
        let mut e = vec![0x01, 0xFF];
        e.extend(&a);
        assert_eq!(enc(&b), e);
        let c: Vec<u8> = (1..=255).collect();
        let mut e = vec![0xFF];
        e.extend(1..=254u8);
        e.extend([0x02, 0xFF]);
        assert_eq!(enc(&c), e);
        let mut d: Vec<u8> = (2..=255).collect();
        d.push(0);
        let mut e = vec![0xFF];
        e.extend(2..=255u8);
        e.extend([0x01, 0x01]);
        assert_eq!(enc(&d), e);
        let mut f: Vec<u8> = (3..=255).collect();
        f.extend([0, 1]);
        let mut e = vec![0xFE];
        e.extend(3..=255u8);
        e.extend([0x02, 0x01]);
        assert_eq!(enc(&f), e);
    }

    #[test]
    fn decode_accepts_trailing_code_after_full_block() {
        let a: Vec<u8> = (1..=254).collect();
        let mut e = vec![0xFF];
        e.extend(&a);
        e.push(0x01);
        let mut out = [0u8; 300];
        let n = decode(&e, &mut out).unwrap();
        assert_eq!(&out[..n], &a[..]);
    }

    #[test]
    fn decode_errors() {
        let mut out = [0u8; 16];
        assert_eq!(decode(&[0x03, 0x11], &mut out), Err(CobsError::Truncated));
        assert_eq!(decode(&[0x02, 0x00], &mut out), Err(CobsError::ZeroByte));
        assert_eq!(decode(&[0x00], &mut out), Err(CobsError::ZeroByte));
        assert_eq!(
            decode(&[0x05, 1, 2, 3, 4], &mut out[..3]),
            Err(CobsError::OutputTooSmall)
        );
        assert_eq!(decode(&[], &mut out), Ok(0));
    }

    #[test]
    fn encode_output_too_small() {
        let mut d = [0u8; 4];
        assert_eq!(
            encode(&[1, 2, 3, 4], &mut d),
            Err(CobsError::OutputTooSmall)
        );
        assert_eq!(encode(&[], &mut []), Err(CobsError::OutputTooSmall));
    }

    proptest! {
        #[test]
        fn round_trip(src in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let e = enc(&src);
            prop_assert!(e.len() <= max_encoded_len(src.len()));
            prop_assert!(!e.contains(&0));
            let mut out = vec![0u8; src.len()];
            let n = decode(&e, &mut out).unwrap();
            prop_assert_eq!(&out[..n], &src[..]);
        }

        #[test]
        fn round_trip_sparse(src in proptest::collection::vec(prop_oneof![Just(0u8), 1u8..=255], 0..1200)) {
            let e = enc(&src);
            prop_assert!(e.len() <= max_encoded_len(src.len()));
            let mut out = vec![0u8; src.len()];
            let n = decode(&e, &mut out).unwrap();
            prop_assert_eq!(&out[..n], &src[..]);
        }

        #[test]
        fn decode_never_panics(src in proptest::collection::vec(any::<u8>(), 0..600), cap in 0usize..700) {
            let mut out = vec![0u8; cap];
            let _ = decode(&src, &mut out);
        }
    }
}
