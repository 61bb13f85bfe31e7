//! Property tests: the blob decoder and the trainer never panic on arbitrary input, blobs round
//! trip, corruption is detected, and the fixed-point helpers match exact wide-integer references.

use odt_core::fixed::{requant, scale_sat, shr_round, Lcg};
use odt_core::layers::{AvgPool2d, Conv1d, Dense, Flatten, MaxPool2d};
use odt_core::{odt_model, BlobError, TrainConfig, TrainMode, Weight};
use proptest::prelude::*;

odt_model! { struct Net { input: 24, batch: 3, weights: i8, budget: 1 << 20,
layers: {
    a: Conv1d<8, 3, 4, 3, 1, 1, 8, true>,
    p: MaxPool2d<1, 8, 4, 1, 2>,
    q: AvgPool2d<1, 4, 4, 1, 2>,
    f: Flatten<8>,
    b: Dense<8, 6, true>,
    c: Dense<6, 3, false>,
} } }

fn valid_blob(seed: u32) -> Vec<u8> {
    let mut m = Box::new(Net::new());
    m.init_random(seed);
    let mut buf = vec![0u8; Net::BLOB_LEN];
    let n = m.save_blob(&mut buf).unwrap();
    assert_eq!(n, Net::BLOB_LEN);
    buf
}

fn floor_div_pow2(x: i128, r: u32) -> i128 {
    x.div_euclid(1i128 << r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_load(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let mut m = Box::new(Net::new());
        prop_assert!(m.load_blob(&bytes).is_err());
    }

    #[test]
    fn any_single_byte_change_is_rejected(seed in any::<u32>(), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut blob = valid_blob(seed);
        let i = pos.index(blob.len());
        blob[i] ^= x;
        let mut m = Box::new(Net::new());
        prop_assert!(m.load_blob(&blob).is_err());
        prop_assert_eq!(m.infer(&[0; 24]), Err(odt_core::Error::NotLoaded));
    }

    #[test]
    fn truncated_or_extended_blobs_are_rejected(seed in any::<u32>(), cut in any::<prop::sample::Index>(), extra in 1usize..8) {
        let blob = valid_blob(seed);
        let n = cut.index(blob.len());
        let mut m = Box::new(Net::new());
        prop_assert_eq!(m.load_blob(&blob[..n]), Err(BlobError::Truncated));
        let mut longer = blob.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(m.load_blob(&longer), Err(BlobError::TrailingBytes));
    }

    #[test]
    fn blobs_round_trip(seed in any::<u32>()) {
        let blob = valid_blob(seed);
        let mut m = Box::new(Net::new());
        m.load_blob(&blob).unwrap();
        let mut again = vec![0u8; Net::BLOB_LEN];
        m.save_blob(&mut again).unwrap();
        prop_assert_eq!(blob, again);
        let mut small = vec![0u8; Net::BLOB_LEN - 1];
        prop_assert_eq!(m.save_blob(&mut small), Err(BlobError::BufferTooSmall));
    }

    #[test]
    fn shr_round_matches_wide_reference(x in -(1i64 << 62)..(1i64 << 62), r in -8i32..70) {
        let got = shr_round(x, r) as i128;
        let want = if r >= 63 { 0 } else if r > 0 {
            floor_div_pow2(x as i128 + (1i128 << (r - 1)), r as u32)
        } else {
            (x as i128) << (-r)
        };
        if r >= 0 || (x.unsigned_abs() as u128) << (-r) < (1u128 << 62) {
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn requant_is_within_half_a_step(acc in any::<i32>(), m in (1i32 << 30)..i32::MAX, s in -31i8..=0) {
        let exact = acc as f64 * m as f64 / 2f64.powi(31 - s as i32);
        let got = requant(acc, m, s) as f64;
        prop_assert!((got - exact).abs() <= 0.5 + 1e-9 || got.abs() >= i32::MAX as f64 - 1.0);
    }

    #[test]
    fn requant_fast_path_equals_the_definition(acc in any::<i32>(), m in (1i32 << 30)..=i32::MAX, s in -31i8..=30) {
        let def = odt_core::fixed::sat_i32(shr_round(acc as i64 * m as i64, 31 - s as i32));
        prop_assert_eq!(requant(acc, m, s), def);
    }

    #[test]
    fn scale_sat_is_clamped_exact_scaling(x in -(1i64 << 45)..(1i64 << 45), k in -60i32..60) {
        let lim = 1i64 << 20;
        let (v, clipped) = scale_sat(x, k, lim);
        let exact: i128 = if k >= 0 { (x as i128) << k } else { floor_div_pow2(x as i128 + (1i128 << (-k - 1)), (-k) as u32) };
        let want = exact.clamp(-(lim as i128), lim as i128);
        prop_assert_eq!(v as i128, want);
        prop_assert_eq!(clipped, exact != want);
    }

    #[test]
    fn training_never_panics_and_counts(
        seed in any::<u32>(),
        lr_m in (1i32 << 14)..(1i32 << 15),
        lr_e in -40i8..0,
        modes in proptest::collection::vec(0u8..3, 3),
        batch in 1u16..=3,
        topk in proptest::option::of(0u16..8),
        samples in proptest::collection::vec((proptest::collection::vec(any::<i8>(), 24), 0u8..3), 1..12),
    ) {
        let mut m = Box::new(Net::new());
        m.init_random(seed);
        let mut cfg = TrainConfig::all_trainable();
        cfg.lr_m = lr_m;
        cfg.lr_e = lr_e;
        cfg.batch = batch;
        cfg.topk_min = topk;
        for (i, &k) in modes.iter().enumerate() {
            cfg.modes[i] = [TrainMode::Frozen, TrainMode::BiasOnly, TrainMode::All][k as usize];
        }
        m.set_train_config(&cfg).unwrap();
        for (x, y) in &samples {
            let out = m.train_step(x, *y).unwrap();
            prop_assert!(out.loss.loss_q15 >= 0 && out.loss.loss_q15 <= 32768);
            prop_assert!(out.loss.ce_q16 >= 0);
            prop_assert!((out.loss.pred as usize) < 3);
        }
        let c = m.counters();
        prop_assert_eq!(c.steps as usize, samples.len());
        let trains = modes.iter().any(|&k| k != 0);
        let expect_updates = if trains { samples.len() / batch as usize } else { 0 };
        prop_assert_eq!(c.updates as usize, expect_updates);
        prop_assert!(m.train_step(&[0; 23], 0).is_err());
        prop_assert_eq!(m.train_step(&[0; 24], 3), Err(odt_core::Error::BadLabel));
    }
}

#[test]
fn bad_configs_are_rejected() {
    let mut m = Box::new(Net::new());
    m.init_random(1);
    let mut cfg = TrainConfig::all_trainable();
    cfg.batch = 4; // compiled capacity is 3
    assert_eq!(m.set_train_config(&cfg), Err(odt_core::Error::BadConfig));
    cfg.batch = 0;
    assert_eq!(m.set_train_config(&cfg), Err(odt_core::Error::BadConfig));
    cfg.batch = 1;
    cfg.lr_m = 1 << 15;
    assert_eq!(m.set_train_config(&cfg), Err(odt_core::Error::BadConfig));
}

#[test]
fn stochastic_rounding_is_unbiased_and_keeps_sub_step_updates() {
    // A change of 0.3 quantization steps (v = 0.3·2^16) applied 10 000 times moves an i8 weight
    // by about 3000 steps in expectation; deterministic rounding would move it by 0.
    let mut rng = Lcg::new(12345);
    let v = (0.3 * 65536.0) as i32;
    let mut total = 0i64;
    for _ in 0..10_000 {
        let mut w: i8 = 0;
        w.step(v, &mut rng);
        total -= w as i64;
    }
    let mean = total as f64 / 10_000.0;
    assert!((mean - 0.3).abs() < 0.02, "mean step {mean}");
    // Master weights accumulate the same change exactly.
    let mut hp = odt_core::Hp::from_q(0);
    for _ in 0..100 {
        hp.step(v / 10, &mut rng);
    }
    // Start at +0.5 step (centred); each update moves (1966 + 128) >> 8 = 8/256 step, so 100 of
    // them give 0.5 − 3.125 = −2.625 and the forward weight floor(−2.625) = −3.
    assert_eq!(hp.q(), -3);
    assert_eq!(hp.0, 128 - 800);
}
