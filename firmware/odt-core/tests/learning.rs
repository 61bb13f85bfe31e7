//! The integer trainer must actually learn: a synthetic 5-class problem, held-out accuracy
//! before and after on-device training, for both weight storage modes and a CNN.

use odt_core::fixed::Lcg;
use odt_core::models::{TerrainMlp, TerrainMlpHp};
use odt_core::TrainConfig;

/// Class prototypes plus noise, quantized to int8.
fn sample(rng: &mut Lcg, protos: &[[i8; 102]; 5]) -> ([i8; 102], u8) {
    let label = (rng.next16() % 5) as u8;
    let mut x = [0i8; 102];
    for (xi, &p) in x.iter_mut().zip(&protos[label as usize]) {
        let noise = (rng.next16() >> 10) - 32; // ±32
        *xi = (p as i32 + noise).clamp(-128, 127) as i8;
    }
    (x, label)
}

fn protos(seed: u32) -> [[i8; 102]; 5] {
    let mut rng = Lcg::new(seed);
    core::array::from_fn(|_| core::array::from_fn(|_| ((rng.next16() >> 9) - 64) as i8))
}

macro_rules! learn_test {
    ($fn:ident, $model:ty) => {
        #[test]
        fn $fn() {
            let mut m = Box::new(<$model>::new());
            m.init_random(7);
            let mut cfg = TrainConfig::all_trainable();
            cfg.lr_e = -24; // η = 2^-10
            m.set_train_config(&cfg).unwrap();
            let p = protos(3);
            let eval = |m: &mut $model| {
                let mut rng = Lcg::new(999);
                let mut ok = 0;
                for _ in 0..500 {
                    let (x, y) = sample(&mut rng, &p);
                    ok += (m.infer(&x).unwrap().class == y) as u32;
                }
                ok as f64 / 500.0
            };
            let before = eval(&mut m);
            let mut rng = Lcg::new(1);
            for _ in 0..1500 {
                let (x, y) = sample(&mut rng, &p);
                m.train_step(&x, y).unwrap();
            }
            let after = eval(&mut m);
            let c = m.counters();
            eprintln!(
                "{}: before {before:.3} after {after:.3} {c:?}",
                stringify!($model)
            );
            assert!(after > 0.9, "after training: {after}");
            assert!(after > before + 0.3);
            assert_eq!(c.steps, 1500);
            assert_eq!(c.updates, 1500);
        }
    };
}

learn_test!(mlp_stochastic_rounding_learns, TerrainMlp);
learn_test!(mlp_master_weights_learn, TerrainMlpHp);
