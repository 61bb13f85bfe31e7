//! Golden vectors shared with the numpy reference (`terrain_odt.model.qnn`, `tools/gen_golden.py`):
//! every step's logits, probabilities, losses and prediction, the counters, the trained blob and
//! the state checksum must match bit for bit.

use std::path::PathBuf;

use odt_core::dyn_mlp::DynMlp;
use odt_core::layers::{AvgPool2d, Conv1d, Conv2d, Dense, Flatten, MaxPool2d};
use odt_core::models::{TerrainMlp, TerrainMlpHp};
use odt_core::{odt_model, BlobError, Hp, Limit, TrainConfig, TrainMode};
use serde_json::Value;

odt_model! { struct MlpI8 { input: 12, batch: 4, weights: i8, budget: 1 << 20,
layers: { a: Dense<12, 8, true>, b: Dense<8, 6, true>, c: Dense<6, 4, false> } } }
odt_model! { struct MlpHp { input: 12, batch: 4, weights: Hp, budget: 1 << 20,
layers: { a: Dense<12, 8, true>, b: Dense<8, 6, true>, c: Dense<6, 4, false> } } }
odt_model! { struct Mlp4I8 { input: 90, batch: 4, weights: i8, budget: 1 << 20,
layers: { a: Dense<90, 48, true>, b: Dense<48, 24, true>, c: Dense<24, 12, true>, d: Dense<12, 4, false> } } }
odt_model! { struct Mlp4Hp { input: 90, batch: 4, weights: Hp, budget: 1 << 20,
layers: { a: Dense<90, 48, true>, b: Dense<48, 24, true>, c: Dense<24, 12, true>, d: Dense<12, 4, false> } } }

/// A model whose shape comes from the blob, with room for every MLP golden case.
type Cap = DynMlp<128, 64, 8, 3, 12288, 4>;
type CapHp = DynMlp<128, 64, 8, 3, 12288, 4, Hp>;
/// The capacity of `capacity_errors.json`.
type CapTest = DynMlp<100, 48, 8, 3, 8000, 1>;

odt_model! { struct Conv1dI8 { input: 48, batch: 4, weights: i8, budget: 1 << 20,
layers: {
    a: Conv1d<16, 3, 4, 3, 1, 1, 16, true>,
    p: MaxPool2d<1, 16, 4, 1, 2>,
    b: Conv1d<8, 4, 4, 3, 2, 0, 3, true>,
    f: Flatten<12>,
    c: Dense<12, 3, false>,
} } }
odt_model! { struct Conv1dHp { input: 48, batch: 4, weights: Hp, budget: 1 << 20,
layers: {
    a: Conv1d<16, 3, 4, 3, 1, 1, 16, true>,
    p: MaxPool2d<1, 16, 4, 1, 2>,
    b: Conv1d<8, 4, 4, 3, 2, 0, 3, true>,
    f: Flatten<12>,
    c: Dense<12, 3, false>,
} } }
odt_model! { struct Conv2dI8 { input: 64, batch: 4, weights: i8, budget: 1 << 20,
layers: {
    a: Conv2d<8, 8, 1, 4, 3, 3, 1, 0, 6, 6, true>,
    p: AvgPool2d<6, 6, 4, 2, 2>,
    b: Conv2d<3, 3, 4, 6, 2, 2, 1, 0, 2, 2, true>,
    q: MaxPool2d<2, 2, 6, 2, 2>,
    f: Flatten<6>,
    c: Dense<6, 4, false>,
} } }
odt_model! { struct Conv2dHp { input: 64, batch: 4, weights: Hp, budget: 1 << 20,
layers: {
    a: Conv2d<8, 8, 1, 4, 3, 3, 1, 0, 6, 6, true>,
    p: AvgPool2d<6, 6, 4, 2, 2>,
    b: Conv2d<3, 3, 4, 6, 2, 2, 1, 0, 2, 2, true>,
    q: MaxPool2d<2, 2, 6, 2, 2>,
    f: Flatten<6>,
    c: Dense<6, 4, false>,
} } }

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ints<T: TryFrom<i64>>(v: &Value) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| T::try_from(x.as_i64().unwrap()).unwrap())
        .collect()
}

fn config(c: &Value) -> TrainConfig {
    let mut cfg = TrainConfig::all_trainable();
    cfg.lr_m = c["lr_m"].as_i64().unwrap() as i32;
    cfg.lr_e = c["lr_e"].as_i64().unwrap() as i8;
    cfg.batch = c["batch"].as_u64().unwrap() as u16;
    cfg.topk_min = c["topk_min"].as_u64().map(|k| k as u16);
    cfg.seed = c["seed"].as_u64().unwrap() as u32;
    cfg.modes = [TrainMode::Frozen; odt_core::model::MAX_PARAM_LAYERS];
    for (i, m) in c["modes"].as_array().unwrap().iter().enumerate() {
        cfg.modes[i] = match m.as_str().unwrap() {
            "all" => TrainMode::All,
            "bias" => TrainMode::BiasOnly,
            "frozen" => TrainMode::Frozen,
            other => panic!("mode {other}"),
        };
    }
    cfg
}

macro_rules! run_case {
    ($ty:ty, $case:expr) => {{
        let case: &Value = $case;
        let name = case["name"].as_str().unwrap();
        let mut m = Box::new(<$ty>::new());
        m.load_blob(&hex(case["blob_hex"].as_str().unwrap()))
            .unwrap();
        m.set_train_config(&config(&case["config"])).unwrap();
        let a = m.meta().softmax_a;
        for (i, st) in case["steps"].as_array().unwrap().iter().enumerate() {
            let x: Vec<i8> = ints(&st["x"]);
            let out = m
                .train_step(&x, st["label"].as_u64().unwrap() as u8)
                .unwrap();
            let logits: Vec<i8> = ints(&st["logits"]);
            assert_eq!(m.logits(), &logits[..], "{name} step {i}: logits");
            let mut p = vec![0i32; logits.len()];
            odt_core::fixed::softmax_q15(&logits, a, &mut p);
            assert_eq!(p, ints::<i32>(&st["p_q15"]), "{name} step {i}: p");
            assert_eq!(
                out.loss.loss_q15 as i64,
                st["loss_q15"].as_i64().unwrap(),
                "{name} step {i}: loss"
            );
            assert_eq!(
                out.loss.ce_q16 as i64,
                st["ce_q16"].as_i64().unwrap(),
                "{name} step {i}: ce"
            );
            assert_eq!(
                out.loss.pred as u64,
                st["pred"].as_u64().unwrap(),
                "{name} step {i}: pred"
            );
        }
        let c = m.counters();
        let want = &case["counters"];
        let got = [
            ("forward_saturations", c.forward_saturations),
            ("update_clips", c.update_clips),
            ("weight_saturations", c.weight_saturations),
            ("zero_grad_steps", c.zero_grad_steps),
            ("steps", c.steps),
            ("updates", c.updates),
        ];
        for (k, v) in got {
            assert_eq!(v as u64, want[k].as_u64().unwrap(), "{name}: counter {k}");
        }
        assert_eq!(
            m.state_crc32() as u64,
            case["final_state_crc32"].as_u64().unwrap(),
            "{name}: state crc"
        );
        let mut buf = vec![0u8; 1 << 16];
        let n = m.save_blob(&mut buf).unwrap();
        assert_eq!(
            buf[..n],
            hex(case["final_blob_hex"].as_str().unwrap())[..],
            "{name}: final blob"
        );
        for (i, inf) in case["infer"].as_array().unwrap().iter().enumerate() {
            let x: Vec<i8> = ints(&inf["x"]);
            m.infer(&x).unwrap();
            assert_eq!(
                m.logits(),
                &ints::<i8>(&inf["logits"])[..],
                "{name} infer {i}"
            );
        }
    }};
}

#[test]
fn golden_training_runs_match_the_python_reference() {
    let mut n = 0;
    let mut paths: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let file = path.file_name().unwrap();
        if file == "blob_errors.json"
            || file == "capacity_errors.json"
            || path.extension().is_none_or(|e| e != "json")
        {
            continue;
        }
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        match (
            case["arch"].as_str().unwrap(),
            case["storage"].as_str().unwrap(),
        ) {
            ("mlp", "i8") => {
                run_case!(MlpI8, &case);
                run_case!(Cap, &case);
            }
            ("mlp", "i16") => {
                run_case!(MlpHp, &case);
                run_case!(CapHp, &case);
            }
            ("terrain", "i8") => {
                run_case!(TerrainMlp, &case);
                run_case!(Cap, &case);
                run_case!(odt_core::models::FirmwareMlp, &case);
            }
            ("terrain", "i16") => {
                run_case!(TerrainMlpHp, &case);
                run_case!(CapHp, &case);
            }
            ("mlp4", "i8") => {
                run_case!(Mlp4I8, &case);
                run_case!(Cap, &case);
                if case["config"]["batch"] == 1 {
                    run_case!(odt_core::models::FirmwareMlp, &case);
                }
            }
            ("mlp4", "i16") => {
                run_case!(Mlp4Hp, &case);
                run_case!(CapHp, &case);
            }
            ("conv1d", "i8") => run_case!(Conv1dI8, &case),
            ("conv1d", "i16") => run_case!(Conv1dHp, &case),
            ("conv2d", "i8") => run_case!(Conv2dI8, &case),
            ("conv2d", "i16") => run_case!(Conv2dHp, &case),
            other => panic!("unknown golden case {other:?}"),
        }
        n += 1;
    }
    assert!(n >= 13, "only {n} golden cases found");
}

#[test]
fn golden_blob_errors_match_the_python_reference() {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("blob_errors.json")).unwrap(),
    )
    .unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let blob = hex(case["blob_hex"].as_str().unwrap());
        let mut m = Box::new(MlpI8::new());
        let err = m.load_blob(&blob).expect_err(name);
        assert_eq!(error_name(err), case["error"].as_str().unwrap(), "{name}");
        // A rejected blob leaves the model untouched.
        assert_eq!(m.infer(&[0; 12]), Err(odt_core::Error::NotLoaded), "{name}");
        // A model whose shape comes from the blob reports the same error, except that a valid
        // blob of another MLP shape (a descriptor mismatch for the fixed type) loads.
        let mut c = Box::new(Cap::new());
        let layer = case["layer"].as_u64();
        if case["error"] == "ArchMismatch" && layer != Some(255) {
            c.load_blob(&blob).expect(name);
        } else {
            assert_eq!(c.load_blob(&blob), Err(err), "{name} (shape from the blob)");
        }
    }
}

fn error_name(e: BlobError) -> &'static str {
    match e {
        BlobError::Truncated => "Truncated",
        BlobError::BadMagic => "BadMagic",
        BlobError::UnsupportedVersion => "UnsupportedVersion",
        BlobError::BadCrc => "BadCrc",
        BlobError::ArchMismatch { .. } => "ArchMismatch",
        BlobError::BadQuant { .. } => "BadQuant",
        BlobError::TrailingBytes => "TrailingBytes",
        BlobError::BufferTooSmall => "BufferTooSmall",
        BlobError::UnsupportedLayer { .. } => "UnsupportedLayer",
        BlobError::OverCapacity { .. } => "OverCapacity",
    }
}

#[test]
fn golden_capacity_errors_match_the_python_reference() {
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("capacity_errors.json")).unwrap(),
    )
    .unwrap();
    let cap = &file["capacity"];
    let want = [
        ("max_inputs", CapTest::MAX_INPUTS),
        ("max_width", CapTest::MAX_WIDTH),
        ("max_classes", CapTest::MAX_OUTPUTS),
        ("max_dense", CapTest::MAX_DENSE),
        ("max_weights", CapTest::MAX_PARAMS_WEIGHTS),
    ];
    for (k, v) in want {
        assert_eq!(cap[k].as_u64().unwrap() as usize, v, "capacity {k}");
    }
    let cases = file["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let blob = hex(case["blob_hex"].as_str().unwrap());
        let mut m = Box::new(CapTest::new());
        let got = m.load_blob(&blob);
        let limit = |s: &str| match s {
            "Inputs" => Limit::Inputs,
            "Width" => Limit::Width,
            "Classes" => Limit::Classes,
            "Depth" => Limit::Depth,
            "Weights" => Limit::Weights,
            other => panic!("limit {other}"),
        };
        let u = |k: &str| case[k].as_u64().unwrap();
        let want = match case["error"].as_str() {
            None => Ok(()),
            Some("OverCapacity") => Err(BlobError::OverCapacity {
                limit: limit(case["limit"].as_str().unwrap()),
                got: u("got") as u32,
                max: u("max") as u32,
            }),
            Some("UnsupportedLayer") => Err(BlobError::UnsupportedLayer {
                layer: u("layer") as u8,
                kind: u("kind") as u8,
            }),
            Some("ArchMismatch") => Err(BlobError::ArchMismatch {
                layer: u("layer") as u8,
            }),
            Some("BadQuant") => Err(BlobError::BadQuant {
                layer: u("layer") as u8,
            }),
            Some(other) => {
                assert_eq!(got.map_err(error_name), Err(other), "{name}");
                continue;
            }
        };
        assert_eq!(got, want, "{name}");
        if got.is_err() {
            assert_eq!(m.infer(&[0; 4]), Err(odt_core::Error::NotLoaded), "{name}");
        } else {
            let mut again = vec![0u8; CapTest::MAX_BLOB_LEN];
            let n = m.save_blob(&mut again).unwrap();
            assert_eq!(again[..n], blob[..], "{name}: saved blob");
        }
    }
}
