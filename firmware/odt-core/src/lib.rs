//! # odt-core: integer-only on-device training for microcontrollers
//!
//! A `#![no_std]`, heap-free library that runs **and fine-tunes** int8-quantized neural
//! networks with integer arithmetic only: int8 weights and activations, int32 biases and
//! accumulators, per-output-channel weight scales, fixed-point requantization, a fixed-point
//! softmax cross-entropy, integer error signals (block floating point) and integer SGD updates
//! that do not lose sub-step changes (stochastic rounding, or 16-bit master weights).
//!
//! Shapes are const generics; a model declared with [`odt_model!`] owns every buffer it needs,
//! so its RAM is `size_of` of its type, known and budget-checked at compile time
//! (`RAM_BYTES`, `MEMORY`). [`DynMlp`] is the other kind of model type: an MLP whose layer
//! shapes come from the blob at load time, within a compile-time capacity (every buffer still
//! fixed); the co-processor firmware runs one ([`models::FirmwareMlp`]). The arithmetic is specified in `docs/integer_training.md` and the
//! model file format in `firmware/FORMAT.md`; a numpy reference (`terrain_odt.model.qnn`) computes
//! the same bits, checked by shared golden vectors.
//!
//! Nothing in this crate panics on any input: malformed blobs, labels, inputs and
//! configurations are error values.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod blob;
mod dense;
mod dense_asm;
pub mod dsp;
pub mod dyn_mlp;
pub mod fixed;
pub mod kernels;
pub mod layer;
pub mod layers;
pub mod model;
pub mod models;

pub use blob::{BlobError, Limit};
pub use dyn_mlp::DynMlp;
pub use layer::{Counters, Hp, Kind, Layer, LayerDesc, LayerShape, TrainMode, Weight};
pub use model::{Error, MemEntry, Model, Prediction, StepOutput, TrainConfig};
