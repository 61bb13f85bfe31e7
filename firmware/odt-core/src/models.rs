//! The models terrain_odt ships and benchmarks.

use crate::dyn_mlp::DynMlp;
use crate::layers::{Conv2d, Dense, Flatten, MaxPool2d};
use crate::odt_model;

odt_model! {
    /// Terrain classifier: 102 IMU features → 64 → 32 → 5 terrains, stochastic rounding
    /// (1 byte per weight). The co-processor firmware's default model.
    pub struct TerrainMlp {
        input: 102,
        batch: 1,
        weights: i8,
        budget: 32 * 1024,
        layers: {
            fc1: Dense<102, 64, true>,
            fc2: Dense<64, 32, true>,
            fc3: Dense<32, 5, false>,
        }
    }
}

odt_model! {
    /// The terrain MLP with 16-bit master weights (2 bytes per weight, deterministic updates).
    pub struct TerrainMlpHp {
        input: 102,
        batch: 1,
        weights: crate::layer::Hp,
        budget: 32 * 1024,
        layers: {
            fc1: Dense<102, 64, true>,
            fc2: Dense<64, 32, true>,
            fc3: Dense<32, 5, false>,
        }
    }
}

odt_model! {
    /// A small MNIST-sized CNN: 28×28×1 → conv3×3×8 → pool 2 → conv3×3×16 → pool 2 → 10.
    pub struct MnistCnn {
        input: 784,
        batch: 1,
        weights: i8,
        budget: 96 * 1024,
        layers: {
            conv1: Conv2d<28, 28, 1, 8, 3, 3, 1, 0, 26, 26, true>,
            pool1: MaxPool2d<26, 26, 8, 2, 2>,
            conv2: Conv2d<13, 13, 8, 16, 3, 3, 1, 0, 11, 11, true>,
            pool2: MaxPool2d<11, 11, 16, 2, 2>,
            flat: Flatten<400>,
            fc: Dense<400, 10, false>,
        }
    }
}

/// RAM budget of [`FirmwareMlp`] (checked at compile time).
pub const FIRMWARE_MLP_BUDGET: usize = 32 * 1024;

/// The co-processor firmware's model (odt-app on the boards and in odt-emu): any MLP the blob
/// describes with at most 256 inputs, hidden layers of at most 64 units, at most 16 classes,
/// at most 4 Dense layers and 16384 weights, int8 weights with stochastic rounding, batch 1.
/// Holds the shipped terrain models (102 or 110 inputs, 64-32, 5 classes) and smaller ones
/// (e.g. 90-48-24-12-4); RAM in [`FirmwareMlp::MEMORY`] (`make mem`).
pub type FirmwareMlp = DynMlp<256, 64, 16, 3, 16384, 1>;

const _: () = assert!(
    FirmwareMlp::RAM_BYTES <= FIRMWARE_MLP_BUDGET,
    "FirmwareMlp: RAM exceeds the configured budget"
);
