//! `DynMlp` (shape from the blob) against the fixed `odt_model!` types: for every shape both can
//! hold, loading, inference, training (every mode, batch, partial updates), counters, saved
//! blobs and state checksums are identical; blobs over the capacity are refused, never panic,
//! and leave the model as it was.

use odt_core::dyn_mlp::DynMlp;
use odt_core::layers::Dense;
use odt_core::models::{FirmwareMlp, TerrainMlp};
use odt_core::{odt_model, BlobError, Hp, Limit, Model, TrainConfig, TrainMode};
use proptest::prelude::*;

odt_model! { struct One { input: 20, batch: 4, weights: i8, budget: 1 << 20,
layers: { a: Dense<20, 7, false> } } }
odt_model! { struct Two { input: 33, batch: 4, weights: i8, budget: 1 << 20,
layers: { a: Dense<33, 17, true>, b: Dense<17, 4, false> } } }
odt_model! { struct Three { input: 90, batch: 4, weights: i8, budget: 1 << 20,
layers: { a: Dense<90, 48, true>, b: Dense<48, 24, true>, c: Dense<24, 12, true>, d: Dense<12, 4, false> } } }
odt_model! { struct Wide { input: 5, batch: 4, weights: i8, budget: 1 << 20,
layers: { a: Dense<5, 40, true>, b: Dense<40, 3, true> } } }
odt_model! { struct ThreeHp { input: 90, batch: 4, weights: Hp, budget: 1 << 20,
layers: { a: Dense<90, 48, true>, b: Dense<48, 24, true>, c: Dense<24, 12, true>, d: Dense<12, 4, false> } } }

/// A capacity that holds every fixed model above (inputs < widths for `Wide`).
type Cap = DynMlp<128, 64, 16, 3, 8192, 4>;
type CapHp = DynMlp<128, 64, 16, 3, 8192, 4, Hp>;

fn blob_of<M: Model>(m: &M) -> Vec<u8> {
    let mut b = vec![0u8; m.blob_len()];
    let n = m.save_blob(&mut b).unwrap();
    assert_eq!(n, b.len());
    b
}

fn config(modes: &[u8], batch: u16, topk: Option<u16>, lr_e: i8, seed: u32) -> TrainConfig {
    let mut cfg = TrainConfig::all_trainable();
    cfg.lr_e = lr_e;
    cfg.batch = batch;
    cfg.topk_min = topk;
    cfg.seed = seed;
    for (i, &k) in modes.iter().enumerate() {
        cfg.modes[i] = [TrainMode::Frozen, TrainMode::BiasOnly, TrainMode::All][k as usize];
    }
    cfg
}

/// Drive `a` and `b` through the same loads, steps and inferences; everything observable must
/// match.
fn same_run(a: &mut dyn Model, b: &mut dyn Model, cfg: &TrainConfig, samples: &[(Vec<i8>, u8)]) {
    let blob = {
        let mut v = vec![0u8; a.blob_len()];
        let n = a.save_blob(&mut v).unwrap();
        v.truncate(n);
        v
    };
    b.load_blob(&blob).unwrap();
    assert_eq!(a.state_crc32(), b.state_crc32());
    assert_eq!((a.input_len(), a.classes()), (b.input_len(), b.classes()));
    assert_eq!(a.blob_len(), b.blob_len());
    a.set_train_config(cfg).unwrap();
    b.set_train_config(cfg).unwrap();
    for (i, (x, y)) in samples.iter().enumerate() {
        let ra = a.train_step(x, *y).unwrap();
        let rb = b.train_step(x, *y).unwrap();
        assert_eq!(ra, rb, "step {i}");
        let pa = a.infer(x).unwrap();
        let pb = b.infer(x).unwrap();
        assert_eq!(pa, pb, "infer {i}");
        assert_eq!(a.scores_q15(), b.scores_q15(), "scores {i}");
    }
    assert_eq!(a.counters(), b.counters());
    assert_eq!(a.state_crc32(), b.state_crc32());
    let mut ba = vec![0u8; a.blob_len()];
    let mut bb = vec![0u8; b.max_blob_len()];
    let na = a.save_blob(&mut ba).unwrap();
    let nb = b.save_blob(&mut bb).unwrap();
    assert_eq!(ba[..na], bb[..nb]);
}

fn samples(n_in: usize, classes: u8, raw: &[(Vec<i8>, u8)]) -> Vec<(Vec<i8>, u8)> {
    raw.iter()
        .map(|(x, y)| {
            let x = (0..n_in)
                .map(|k| x[k % x.len()].wrapping_add(k as i8))
                .collect();
            (x, y % classes)
        })
        .collect()
}

macro_rules! against {
    ($fixed:ty, $cap:ty, $seed:expr, $cfg:expr, $raw:expr) => {{
        let mut a = Box::new(<$fixed>::new());
        a.init_random($seed);
        let mut b = Box::new(<$cap>::new());
        let s = samples(<$fixed>::INPUT_LEN, <$fixed>::OUTPUT_LEN as u8, $raw);
        same_run(&mut *a, &mut *b, $cfg, &s);
    }};
}

#[test]
fn terrain_mlp_blob_runs_identically_in_the_firmware_model() {
    let mut a = Box::new(TerrainMlp::new());
    a.init_random(1);
    let mut b = Box::new(FirmwareMlp::new());
    // The synthetic model of a shape equals the fixed type's.
    b.init_random_mlp(&[102, 64, 32, 5], 1).unwrap();
    assert_eq!(blob_of(&*a), blob_of(&*b));
    let raw: Vec<_> = (0..40)
        .map(|i| {
            (
                (0..17)
                    .map(|k| ((i * 37 + k * 11) % 251) as u8 as i8)
                    .collect(),
                i as u8,
            )
        })
        .collect();
    let s = samples(102, 5, &raw);
    same_run(&mut *a, &mut *b, &TrainConfig::all_trainable(), &s);
    let mut cfg = config(&[0, 2, 1], 1, Some(3), -18, 9);
    same_run(&mut *a, &mut *b, &cfg, &s);
    cfg.lr_e = -8; // clips and saturations
    same_run(&mut *a, &mut *b, &cfg, &s);
    assert!(a.counters().update_clips > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fixed_shapes_train_identically(
        which in 0usize..6,
        seed in any::<u32>(),
        modes in proptest::collection::vec(0u8..3, 4),
        batch in 1u16..=4,
        topk in proptest::option::of(0u16..20),
        lr_e in -28i8..-10,
        raw in proptest::collection::vec((proptest::collection::vec(any::<i8>(), 1..9), any::<u8>()), 1..14),
    ) {
        let cfg = config(&modes, batch, topk, lr_e, seed ^ 0x55);
        match which {
            0 => against!(One, Cap, seed, &cfg, &raw),
            1 => against!(Two, Cap, seed, &cfg, &raw),
            2 => against!(Three, Cap, seed, &cfg, &raw),
            3 => against!(Wide, Cap, seed, &cfg, &raw),
            4 => against!(ThreeHp, CapHp, seed, &cfg, &raw),
            _ => {
                // The shipped shape in the firmware's model (both batch 1).
                let cfg = TrainConfig { batch: 1, ..cfg };
                against!(TerrainMlp, FirmwareMlp, seed, &cfg, &raw)
            }
        }
    }

    #[test]
    fn random_shapes_within_capacity_load_train_and_round_trip(
        input in 1usize..=128,
        hidden in proptest::collection::vec(1usize..=40, 0..=3),
        classes in 1usize..=16,
        seed in any::<u32>(),
        batch in 1u16..=4,
        topk in proptest::option::of(0u16..8),
        raw in proptest::collection::vec((proptest::collection::vec(any::<i8>(), 1..9), any::<u8>()), 1..10),
    ) {
        let widths: Vec<usize> = [input].into_iter().chain(hidden).chain([classes]).collect();
        let weights: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
        prop_assume!(weights <= 8192);
        let mut m = Box::new(Cap::new());
        m.init_random_mlp(&widths, seed).unwrap();
        let blob = blob_of(&*m);
        prop_assert!(blob.len() <= Cap::MAX_BLOB_LEN);
        let mut n = Box::new(Cap::new());
        n.load_blob(&blob).unwrap();
        prop_assert_eq!(n.state_crc32(), m.state_crc32());
        prop_assert_eq!(blob_of(&*n), blob.clone());
        n.set_train_config(&config(&[2, 2, 2, 2], batch, topk, -16, seed)).unwrap();
        for (x, y) in samples(widths[0], classes as u8, &raw) {
            let r = n.train_step(&x, y).unwrap();
            prop_assert!((r.loss.pred as usize) < classes);
        }
        prop_assert_eq!(n.counters().steps as usize, raw.len());
        prop_assert_eq!(n.counters().updates as usize, raw.len() / batch as usize);
        prop_assert!(n.train_step(&vec![0; widths[0] + 1], 0).is_err());
        prop_assert_eq!(n.train_step(&vec![0; widths[0]], classes as u8), Err(odt_core::Error::BadLabel));
        // The trained model saves and reloads to the same state.
        let trained = blob_of(&*n);
        let mut o = Box::new(Cap::new());
        o.load_blob(&trained).unwrap();
        prop_assert_eq!(o.state_crc32(), n.state_crc32());
    }

    #[test]
    fn over_capacity_blobs_are_refused_and_change_nothing(
        widths in proptest::collection::vec(1usize..=90, 2..=6),
        seed in any::<u32>(),
    ) {
        // Build the blob with a larger capacity, load it into a small one.
        let mut big = Box::new(DynMlp::<128, 128, 90, 5, 60000, 1>::new());
        big.init_random_mlp(&widths, seed).unwrap();
        let blob = blob_of(&*big);
        type Small = DynMlp<48, 32, 8, 2, 2000, 1>;
        let mut m = Box::new(Small::new());
        m.init_random_mlp(&[10, 8, 3], 5).unwrap();
        let before = (m.state_crc32(), blob_of(&*m));
        let n = widths.len() - 1;
        let weights: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
        let want = if n > 3 {
            Some((Limit::Depth, n, 3))
        } else if widths[0] > 48 {
            Some((Limit::Inputs, widths[0], 48))
        } else if let Some(&w) = widths[1..n].iter().find(|&&w| w > 32) {
            Some((Limit::Width, w, 32))
        } else if widths[n] > 8 {
            Some((Limit::Classes, widths[n], 8))
        } else if weights > 2000 {
            Some((Limit::Weights, weights, 2000))
        } else {
            None
        };
        match want {
            Some((limit, got, max)) => {
                let err = m.load_blob(&blob).unwrap_err();
                prop_assert_eq!(err, BlobError::OverCapacity { limit, got: got as u32, max: max as u32 });
                prop_assert_eq!((m.state_crc32(), blob_of(&*m)), before);
                prop_assert_eq!(m.infer(&[1; 10]).map(|_| ()), Ok(()));
                prop_assert_eq!(m.init_random_mlp(&widths, seed), Err(err));
            }
            None => prop_assert!(m.load_blob(&blob).is_ok()),
        }
    }

    #[test]
    fn arbitrary_and_corrupted_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        seed in any::<u32>(),
        pos in any::<prop::sample::Index>(),
        x in 1u8..=255,
    ) {
        let mut m = Box::new(Cap::new());
        prop_assert!(m.load_blob(&bytes).is_err());
        prop_assert_eq!(m.infer(&[0; 3]), Err(odt_core::Error::NotLoaded));
        let mut t = Box::new(Three::new());
        t.init_random(seed);
        let mut blob = blob_of(&*t);
        let i = pos.index(blob.len());
        blob[i] ^= x;
        prop_assert!(m.load_blob(&blob).is_err());
        prop_assert_eq!(m.infer(&[0; 90]), Err(odt_core::Error::NotLoaded));
    }
}

#[test]
fn non_mlp_and_malformed_descriptors_are_refused() {
    let mut t = Box::new(Two::new());
    t.init_random(3);
    let good = blob_of(&*t);
    let fix = |mut b: Vec<u8>| {
        let n = b.len() - 4;
        let crc = odt_core::blob::crc32(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let mut m = Box::new(Cap::new());
    // A convolution descriptor (same section length would not matter: refused first).
    let mut conv = good.clone();
    conv[40 + 24] = 2;
    assert!(m.load_blob(&fix(conv)).is_err());
    let mut relu = good.clone();
    relu[40 + 24] = 6;
    assert_eq!(
        m.load_blob(&fix(relu)),
        Err(BlobError::UnsupportedLayer { layer: 1, kind: 6 })
    );
    let mut flags = good.clone();
    flags[40 + 1] = 3;
    assert_eq!(
        m.load_blob(&fix(flags)),
        Err(BlobError::ArchMismatch { layer: 0 })
    );
    let mut header_in = good.clone();
    header_in[12] = 34;
    assert_eq!(
        m.load_blob(&fix(header_in)),
        Err(BlobError::ArchMismatch { layer: 255 })
    );
    let mut header_out = good.clone();
    header_out[16] = 5;
    assert_eq!(
        m.load_blob(&fix(header_out)),
        Err(BlobError::ArchMismatch { layer: 255 })
    );
    assert_eq!(m.infer(&[0; 33]), Err(odt_core::Error::NotLoaded));
    m.load_blob(&good).unwrap();
    assert_eq!(m.shape().layers, 2);
    let e = BlobError::OverCapacity {
        limit: Limit::Inputs,
        got: 300,
        max: 256,
    };
    assert_eq!(e.to_string(), "300 inputs > capacity 256");
}
