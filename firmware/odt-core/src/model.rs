//! Sequential models: the shared training driver and the `odt_model!` macro that declares a
//! model type with every buffer sized at compile time.

use crate::blob::ModelMeta;
use crate::fixed::{softmax_ce, softmax_q15, Lcg, LossOut};
use crate::layer::{Counters, Layer, TrainCtx, TrainMode};

/// Most parameter layers a training configuration addresses.
pub const MAX_PARAM_LAYERS: usize = 16;
/// Largest batch a model may be compiled with.
pub const MAX_BATCH: usize = 32;

/// Errors of the runtime API (inputs, labels, configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The input vector has the wrong length.
    InputLen {
        /// Elements the model takes.
        expected: u16,
        /// Elements given.
        got: u16,
    },
    /// The label is not a class of the model.
    BadLabel,
    /// A training parameter is out of range.
    BadConfig,
    /// No weights loaded yet (load a blob or call `init_random`).
    NotLoaded,
}

/// Training parameters (set at run time, e.g. over the serial link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainConfig {
    /// Learning-rate mantissa, `[2^14, 2^15)`; `η = lr_m · 2^lr_e`.
    pub lr_m: i32,
    /// Learning-rate exponent.
    pub lr_e: i8,
    /// What each parameter layer learns, in forward order; entries past the model's layers are
    /// ignored.
    pub modes: [TrainMode; MAX_PARAM_LAYERS],
    /// Samples per update, 1 to the compiled batch size.
    pub batch: u16,
    /// Dynamic partial updates: minimum rows per layer (`None`: update every row).
    pub topk_min: Option<u16>,
    /// Seed of the stochastic-rounding generator.
    pub seed: u32,
}

impl TrainConfig {
    /// Every layer trains, batch 1, `η = 2^−6`, no partial updates.
    pub const fn all_trainable() -> Self {
        Self {
            lr_m: 1 << 14,
            lr_e: -20,
            modes: [TrainMode::All; MAX_PARAM_LAYERS],
            batch: 1,
            topk_min: None,
            seed: 0x2545_F491,
        }
    }

    /// Only the last `n` of the model's `total` parameter layers train.
    pub const fn last_layers(n: usize, total: usize) -> Self {
        let mut c = Self::all_trainable();
        let mut i = 0;
        while i < MAX_PARAM_LAYERS {
            c.modes[i] = if i + n >= total && i < total {
                TrainMode::All
            } else {
                TrainMode::Frozen
            };
            i += 1;
        }
        c
    }

    /// Whether the values are in range for a model with batch capacity `max_batch`.
    pub const fn is_valid(&self, max_batch: usize) -> bool {
        self.lr_m >= (1 << 14)
            && self.lr_m < (1 << 15)
            && self.batch >= 1
            && self.batch as usize <= max_batch
    }
}

/// Result of an inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// Predicted class (first maximal logit).
    pub class: u8,
    /// Its softmax probability, Q15.
    pub confidence_q15: i32,
}

/// Result of one training step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepOutput {
    /// Loss figures and prediction made *before* this sample's update (prequential).
    pub loss: LossOut,
    /// Whether this sample completed a batch and the weights changed.
    pub applied: bool,
}

/// One row of the per-buffer memory table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemEntry {
    /// Buffer name.
    pub name: &'static str,
    /// Bytes of RAM.
    pub bytes: usize,
}

/// What the co-processor application needs from a model, implemented by every `odt_model!`
/// type and by [`crate::DynMlp`] (object safe, so firmware can hold `&mut dyn Model`).
pub trait Model {
    /// Input length (int8 features).
    fn input_len(&self) -> usize;
    /// Number of classes.
    fn classes(&self) -> usize;
    /// RAM of the model type in bytes (compile-time constant).
    fn ram_bytes(&self) -> usize;
    /// Exact length of this model's blob.
    fn blob_len(&self) -> usize;
    /// Longest blob this model type can load or save (its blob buffer size); the blob of the
    /// one shape it runs unless the shape comes from the blob (`DynMlp`).
    fn max_blob_len(&self) -> usize {
        self.blob_len()
    }
    /// Largest input length this model type can take (its input buffer): the one shape's
    /// unless the shape comes from the blob (`DynMlp`: its input capacity).
    fn max_input_len(&self) -> usize {
        self.input_len()
    }
    /// Classify one input.
    fn infer(&mut self, x: &[i8]) -> Result<Prediction, Error>;
    /// Softmax probabilities (Q15) of the last inference.
    fn scores_q15(&self) -> &[i32];
    /// Train on one labelled input.
    fn train_step(&mut self, x: &[i8], label: u8) -> Result<StepOutput, Error>;
    /// Set the training configuration.
    fn set_train_config(&mut self, cfg: &TrainConfig) -> Result<(), Error>;
    /// The active training configuration.
    fn train_config(&self) -> TrainConfig;
    /// Counters.
    fn counters(&self) -> Counters;
    /// Load a blob (the model is unchanged on error).
    fn load_blob(&mut self, blob: &[u8]) -> Result<(), crate::blob::BlobError>;
    /// Save the model as a blob into `out`.
    fn save_blob(&self, out: &mut [u8]) -> Result<usize, crate::blob::BlobError>;
    /// Blob header fields of the loaded model.
    fn meta(&self) -> ModelMeta;
    /// CRC-32 of the trainable state.
    fn state_crc32(&self) -> u32;
}

/// Activation and error buffers shared by all layers.
pub struct Workspace<const ACT: usize, const ERR: usize> {
    /// Input then every layer's output, back to back.
    pub acts: [i8; ACT],
    /// Error ping buffer.
    pub ea: [i32; ERR],
    /// Error pong buffer.
    pub eb: [i32; ERR],
}

impl<const ACT: usize, const ERR: usize> Workspace<ACT, ERR> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        Self {
            acts: [0; ACT],
            ea: [0; ERR],
            eb: [0; ERR],
        }
    }
}

impl<const ACT: usize, const ERR: usize> Default for Workspace<ACT, ERR> {
    fn default() -> Self {
        Self::new()
    }
}

/// Training state that is not per layer.
pub struct TrainerState {
    /// Active configuration.
    pub cfg: TrainConfig,
    /// Counters.
    pub ctr: Counters,
    /// Stochastic-rounding generator.
    pub rng: Lcg,
    /// Samples stashed in the current batch.
    pub slots: usize,
    /// Per-slot loss (Q15) for partial updates.
    pub slot_loss: [i32; MAX_BATCH],
    /// Blob header fields of the loaded model.
    pub meta: ModelMeta,
    /// Zero point at the input of each layer (and the output at the end).
    pub zps: [i8; crate::blob::MAX_LAYERS + 1],
    /// Whether weights have been loaded.
    pub loaded: bool,
}

impl TrainerState {
    /// Fresh, all-zero state (so a `static` model lives in `.bss`); the configuration becomes
    /// [`TrainConfig::all_trainable`] when a model is loaded.
    pub const fn new() -> Self {
        Self {
            cfg: TrainConfig {
                lr_m: 0,
                lr_e: 0,
                modes: [TrainMode::Frozen; MAX_PARAM_LAYERS],
                batch: 0,
                topk_min: None,
                seed: 0,
            },
            ctr: Counters {
                forward_saturations: 0,
                update_clips: 0,
                weight_saturations: 0,
                zero_grad_steps: 0,
                steps: 0,
                updates: 0,
            },
            rng: Lcg::new(0),
            slots: 0,
            slot_loss: [0; MAX_BATCH],
            meta: ModelMeta {
                model_id: 0,
                input_zp: 0,
                output_zp: 0,
                input_scale: [0; 4],
                output_scale: [0; 4],
                softmax_a: 0,
            },
            zps: [0; crate::blob::MAX_LAYERS + 1],
            loaded: false,
        }
    }
}

impl Default for TrainerState {
    fn default() -> Self {
        Self::new()
    }
}

/// Sum of a const slice (for model constants).
pub const fn sum(v: &[usize]) -> usize {
    let mut s = 0;
    let mut i = 0;
    while i < v.len() {
        s += v[i];
        i += 1;
    }
    s
}

/// Maximum of a const slice.
pub const fn max(v: &[usize]) -> usize {
    let mut m = 0;
    let mut i = 0;
    while i < v.len() {
        if v[i] > m {
            m = v[i];
        }
        i += 1;
    }
    m
}

/// Last element of a const slice (0 if empty).
pub const fn last(v: &[usize]) -> usize {
    if v.is_empty() {
        0
    } else {
        v[v.len() - 1]
    }
}

/// Compile-time check that layer shapes chain: input → layer 0 → layer 1 → …
pub const fn check_chain(input: usize, ins: &[usize], outs: &[usize]) {
    assert!(
        !ins.is_empty() && ins.len() <= crate::blob::MAX_LAYERS,
        "1 to 32 layers"
    );
    assert!(
        ins[0] == input,
        "the first layer's input length differs from the model input"
    );
    let mut i = 1;
    while i < ins.len() {
        assert!(
            ins[i] == outs[i - 1],
            "a layer's input length differs from the previous output"
        );
        i += 1;
    }
}

/// Borrowed view of a model used by the shared driver.
pub struct Run<'a> {
    /// The layers in forward order.
    pub layers: &'a mut [&'a mut dyn Layer],
    /// Activations.
    pub acts: &'a mut [i8],
    /// Error ping buffer.
    pub ea: &'a mut [i32],
    /// Error pong buffer.
    pub eb: &'a mut [i32],
    /// State.
    pub st: &'a mut TrainerState,
    /// Model input length.
    pub input_len: usize,
    /// Number of classes.
    pub classes: usize,
    /// Compiled batch capacity.
    pub max_batch: usize,
}

impl Run<'_> {
    fn check_input(&self, x: &[i8]) -> Result<(), Error> {
        if !self.st.loaded {
            return Err(Error::NotLoaded);
        }
        if x.len() != self.input_len {
            return Err(Error::InputLen {
                expected: self.input_len as u16,
                got: x.len().min(65535) as u16,
            });
        }
        Ok(())
    }

    /// Forward pass; returns the offset of the logits in `acts`. With `keep_input` the input is
    /// copied to the front of `acts` first (training stashes it from there); inference reads it
    /// in place (the same outputs, without the copy).
    fn forward(&mut self, x: &[i8], keep_input: bool) -> usize {
        if keep_input {
            for (a, &v) in self.acts.iter_mut().zip(x) {
                *a = v;
            }
        }
        let mut off = 0;
        let mut z = self.st.meta.input_zp;
        for (i, l) in self.layers.iter().enumerate() {
            let (n_in, n_out) = (l.in_len(), l.out_len());
            if let Some(zs) = self.st.zps.get_mut(i) {
                *zs = z;
            }
            let (a, b) = self.acts.split_at_mut((off + n_in).min(self.acts.len()));
            let xin = if i == 0 && !keep_input {
                x
            } else {
                a.get(off..).unwrap_or(&[])
            };
            let y = b.get_mut(..n_out).unwrap_or(&mut []);
            l.forward(xin, z, y, &mut self.st.ctr, self.eb);
            z = l.out_zp(z);
            off += n_in;
        }
        off
    }

    /// Inference: class and confidence; the Q15 probabilities are left in `ea`.
    pub fn infer(&mut self, x: &[i8]) -> Result<Prediction, Error> {
        self.check_input(x)?;
        let off = self.forward(x, false);
        let logits = self.acts.get(off..off + self.classes).unwrap_or(&[]);
        let p = self.ea.get_mut(..self.classes).unwrap_or(&mut []);
        softmax_q15(logits, self.st.meta.softmax_a, p);
        let class = crate::fixed::argmax_first(logits);
        Ok(Prediction {
            class: class as u8,
            confidence_q15: p.get(class).copied().unwrap_or(0),
        })
    }

    /// One training step (docs §3 to §5): forward, loss, backward to the lowest trainable layer,
    /// stash; applies the update when the batch is complete.
    pub fn train_step(&mut self, x: &[i8], label: u8) -> Result<StepOutput, Error> {
        self.check_input(x)?;
        if label as usize >= self.classes {
            return Err(Error::BadLabel);
        }
        let off = self.forward(x, true);
        let logits = self.acts.get(off..off + self.classes).unwrap_or(&[]);
        let g = self.ea.get_mut(..self.classes).unwrap_or(&mut []);
        let loss = softmax_ce(logits, label as usize, self.st.meta.softmax_a, g);
        self.st.ctr.steps = self.st.ctr.steps.wrapping_add(1);

        let Some(lowest) = self.lowest_trainable() else {
            return Ok(StepOutput {
                loss,
                applied: false,
            });
        };
        let slot = self.st.slots;
        let mut offs = [0usize; crate::blob::MAX_LAYERS + 1];
        let mut o = 0;
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(v) = offs.get_mut(i) {
                *v = o;
            }
            o += l.in_len();
        }
        if let Some(v) = offs.get_mut(self.layers.len()) {
            *v = o;
        }
        let mut exp = -15;
        let (mut cur, mut other) = (&mut *self.ea, &mut *self.eb);
        for i in (lowest..self.layers.len()).rev() {
            let Some(l) = self.layers.get_mut(i) else {
                break;
            };
            let (n_in, n_out) = (l.in_len(), l.out_len());
            let xo = offs.get(i).copied().unwrap_or(0);
            let yo = offs.get(i + 1).copied().unwrap_or(0);
            let xin = self.acts.get(xo..xo + n_in).unwrap_or(&[]);
            let y = self.acts.get(yo..yo + n_out).unwrap_or(&[]);
            let e_out = cur.get(..n_out).unwrap_or(&[]);
            let e_in = other.get_mut(..n_in).unwrap_or(&mut []);
            if l.has_params() {
                if !l.stash(slot, xin, y, e_out, exp) {
                    self.st.ctr.zero_grad_steps = self.st.ctr.zero_grad_steps.wrapping_add(1);
                }
                if i == lowest {
                    break;
                }
                exp = l.backward_delta(slot, e_in);
            } else {
                let z = self.st.zps.get(i).copied().unwrap_or(0);
                exp = l.backward_data(xin, z, e_out, exp, e_in);
            }
            core::mem::swap(&mut cur, &mut other);
        }
        if let Some(v) = self.st.slot_loss.get_mut(slot) {
            *v = loss.loss_q15;
        }
        self.st.slots += 1;
        let mut applied = false;
        if self.st.slots >= self.st.cfg.batch as usize {
            self.apply_update();
            applied = true;
        }
        Ok(StepOutput { loss, applied })
    }

    fn lowest_trainable(&self) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.has_params() && l.mode() != TrainMode::Frozen)
    }

    fn apply_update(&mut self) {
        let slots = self.st.slots.min(MAX_BATCH);
        let total: i64 = self
            .st
            .slot_loss
            .iter()
            .take(slots)
            .map(|&v| v as i64)
            .sum();
        let st = &mut *self.st;
        let mut ctx = TrainCtx {
            ctr: &mut st.ctr,
            rng: &mut st.rng,
            lr_m: st.cfg.lr_m,
            lr_e: st.cfg.lr_e as i32,
            slots,
            loss_avg_q15: if slots > 0 {
                (total / slots as i64) as i32
            } else {
                0
            },
            topk_min: st.cfg.topk_min,
            scratch: self.ea,
        };
        for l in self.layers.iter_mut() {
            if l.has_params() {
                l.update(&mut ctx);
            }
        }
        st.slots = 0;
        st.ctr.updates = st.ctr.updates.wrapping_add(1);
    }

    /// Apply a configuration: modes to the parameter layers, reseed, empty the batch.
    pub fn set_config(&mut self, cfg: &TrainConfig) -> Result<(), Error> {
        if !cfg.is_valid(self.max_batch) {
            return Err(Error::BadConfig);
        }
        let mut k = 0;
        for l in self.layers.iter_mut() {
            if l.has_params() {
                l.set_mode(cfg.modes.get(k).copied().unwrap_or(TrainMode::Frozen));
                k += 1;
            }
        }
        self.st.cfg = *cfg;
        self.st.rng = Lcg::new(cfg.seed);
        self.st.slots = 0;
        Ok(())
    }
}

/// Declare a sequential model type whose buffers are all sized at compile time.
///
/// ```
/// use odt_core::odt_model;
/// use odt_core::layers::Dense;
/// odt_model! {
///     /// A tiny classifier.
///     pub struct Tiny {
///         input: 8,
///         batch: 1,
///         weights: i8,
///         budget: 4096,
///         layers: { fc1: Dense<8, 4, true>, fc2: Dense<4, 3, false> }
///     }
/// }
/// assert_eq!(Tiny::PARAMS, 8 * 4 + 4 + 4 * 3 + 3);
/// assert!(Tiny::RAM_BYTES <= 4096);
/// ```
///
/// Each layer is written with its shape parameters only; the macro appends the batch size and
/// the weight storage (`i8`: stochastic rounding, `odt_core::Hp`: 16-bit master weights).
/// A model whose RAM exceeds `budget` bytes, or whose layer shapes do not chain, fails to build.
#[macro_export]
macro_rules! odt_model {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            input: $input:expr,
            batch: $batch:expr,
            weights: $wt:ty,
            budget: $budget:expr,
            layers: { $( $lname:ident : $lty:ident < $($arg:tt),* > ),+ $(,)? }
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                #[doc = concat!("Layer `", stringify!($lname), "`.")]
                pub $lname: $lty<$($arg,)* {$batch}, $wt>,
            )+
            ws: $crate::model::Workspace<
                { $crate::model::sum(&[$input $(, <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::OUT_LEN)+]) },
                { $crate::model::max(&[$input $(, <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::OUT_LEN)+]) },
            >,
            st: $crate::model::TrainerState,
        }

        const _: () = {
            $crate::model::check_chain(
                $input,
                &[$(<$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::IN_LEN),+],
                &[$(<$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::OUT_LEN),+],
            );
            assert!($batch >= 1 && $batch <= $crate::model::MAX_BATCH, "batch must be 1 to 32");
            assert!(
                $name::RAM_BYTES <= $budget,
                concat!(stringify!($name), ": RAM exceeds the configured budget")
            );
        };

        #[allow(dead_code)]
        impl $name {
            /// Input length (int8 features).
            pub const INPUT_LEN: usize = $input;
            /// Number of classes.
            pub const OUTPUT_LEN: usize =
                $crate::model::last(&[$(<$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::OUT_LEN),+]);
            /// Parameters (weights and biases).
            pub const PARAMS: usize = 0 $(+ <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::PARAMS)+;
            /// Parameters that can train (all of them; what does train is chosen at run time).
            pub const TRAINABLE_PARAMS: usize = Self::PARAMS;
            /// Multiply-accumulates of one inference.
            pub const MACS: usize = 0 $(+ <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::MACS)+;
            /// Number of layers.
            pub const NUM_LAYERS: usize = [$(stringify!($lname)),+].len();
            /// Compiled batch capacity.
            pub const BATCH: usize = $batch;
            /// Total RAM of the model, training state included: the size of the type.
            pub const RAM_BYTES: usize = core::mem::size_of::<Self>();
            /// The configured RAM budget.
            pub const BUDGET_BYTES: usize = $budget;
            /// Length of this model's blob.
            pub const BLOB_LEN: usize = $crate::blob::HEADER_BYTES
                + $crate::blob::DESC_BYTES * Self::NUM_LAYERS
                $(+ <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::BLOB_BYTES)+
                + 4;
            /// Flash for the pretrained model kept for "reset to pretrained" (code not included).
            pub const FLASH_BYTES: usize = Self::BLOB_LEN;
            const ACTS_BYTES: usize =
                $crate::model::sum(&[$input $(, <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::OUT_LEN)+]);
            const ERR_BYTES: usize = 8
                * $crate::model::max(&[$input $(, <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::OUT_LEN)+]);
            const LISTED: usize = Self::ACTS_BYTES + Self::ERR_BYTES
                + core::mem::size_of::<$crate::model::TrainerState>()
                $(+ core::mem::size_of::<$lty<$($arg,)* {$batch}, $wt>>())+;
            /// Every RAM buffer and its size; the entries add up to `RAM_BYTES`.
            pub const MEMORY: &'static [$crate::model::MemEntry] = &[
                $(
                    $crate::model::MemEntry {
                        name: concat!(stringify!($lname), ".weights"),
                        bytes: <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::WEIGHT_BYTES,
                    },
                    $crate::model::MemEntry {
                        name: concat!(stringify!($lname), ".bias_qparams"),
                        bytes: <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::QPARAM_BYTES,
                    },
                    $crate::model::MemEntry {
                        name: concat!(stringify!($lname), ".batch_stash"),
                        bytes: <$lty<$($arg,)* {$batch}, $wt> as $crate::LayerShape>::STASH_BYTES,
                    },
                )+
                $crate::model::MemEntry { name: "activations", bytes: Self::ACTS_BYTES },
                $crate::model::MemEntry { name: "error_buffers", bytes: Self::ERR_BYTES },
                $crate::model::MemEntry {
                    name: "trainer_state",
                    bytes: core::mem::size_of::<$crate::model::TrainerState>(),
                },
                $crate::model::MemEntry { name: "alignment", bytes: Self::RAM_BYTES - Self::LISTED },
            ];

            /// A zeroed model; load a blob (or `init_random`) before use. `const`, so it can
            /// initialise a `static` (it then lives in `.bss`).
            pub const fn new() -> Self {
                Self {
                    $( $lname: <$lty<$($arg,)* {$batch}, $wt>>::new(), )+
                    ws: $crate::model::Workspace::new(),
                    st: $crate::model::TrainerState::new(),
                }
            }

            fn run<R>(&mut self, f: impl FnOnce(&mut $crate::model::Run<'_>) -> R) -> R {
                let mut layers = [$( &mut self.$lname as &mut dyn $crate::Layer ),+];
                let mut run = $crate::model::Run {
                    layers: &mut layers,
                    acts: &mut self.ws.acts,
                    ea: &mut self.ws.ea,
                    eb: &mut self.ws.eb,
                    st: &mut self.st,
                    input_len: Self::INPUT_LEN,
                    classes: Self::OUTPUT_LEN,
                    max_batch: Self::BATCH,
                };
                f(&mut run)
            }

            /// Deterministic synthetic weights with valid quantization (benchmarks, tests).
            pub fn init_random(&mut self, seed: u32) {
                let mut rng = $crate::fixed::Lcg::new(seed);
                $( $crate::Layer::init_synthetic(&mut self.$lname, &mut rng); )+
                self.st.meta = $crate::blob::ModelMeta { softmax_a: 11819, ..Default::default() };
                self.st.loaded = true;
                self.apply_current_config();
            }

            /// Load a blob; on error the model is unchanged.
            pub fn load_blob(&mut self, blob: &[u8]) -> Result<(), $crate::blob::BlobError> {
                let mut layers = [$( &mut self.$lname as &mut dyn $crate::Layer ),+];
                $crate::blob::load(&mut layers, blob, Self::INPUT_LEN, Self::OUTPUT_LEN, true)?;
                let meta = $crate::blob::load(&mut layers, blob, Self::INPUT_LEN, Self::OUTPUT_LEN, false)?;
                self.st.meta = meta;
                self.st.loaded = true;
                self.st.slots = 0;
                self.apply_current_config();
                Ok(())
            }

            /// Re-apply the active configuration to freshly loaded layers (the default one if
            /// none was set yet).
            fn apply_current_config(&mut self) {
                let cfg = if self.st.cfg.is_valid(Self::BATCH) {
                    self.st.cfg
                } else {
                    $crate::TrainConfig::all_trainable()
                };
                // Valid by construction, so this cannot fail.
                let _ = self.set_train_config(&cfg);
            }

            /// Write the current model as a blob into `out`; returns its length.
            pub fn save_blob(&self, out: &mut [u8]) -> Result<usize, $crate::blob::BlobError> {
                let layers = [$( &self.$lname as &dyn $crate::Layer ),+];
                $crate::blob::save(&layers, &self.st.meta, Self::INPUT_LEN, Self::OUTPUT_LEN, out)
            }

            /// Set learning rate, what trains, batch, partial updates and seed.
            pub fn set_train_config(&mut self, cfg: &$crate::TrainConfig) -> Result<(), $crate::Error> {
                self.run(|r| r.set_config(cfg))
            }

            /// The active training configuration.
            pub fn train_config(&self) -> &$crate::TrainConfig {
                &self.st.cfg
            }

            /// Classify one input.
            pub fn infer(&mut self, x: &[i8]) -> Result<$crate::Prediction, $crate::Error> {
                self.run(|r| r.infer(x))
            }

            /// Train on one labelled input (prediction made before the update is returned).
            pub fn train_step(&mut self, x: &[i8], label: u8) -> Result<$crate::StepOutput, $crate::Error> {
                self.run(|r| r.train_step(x, label))
            }

            /// Logits of the last forward pass.
            pub fn logits(&self) -> &[i8] {
                let off = Self::ACTS_BYTES - Self::OUTPUT_LEN;
                self.ws.acts.get(off..).unwrap_or(&[])
            }

            /// Softmax probabilities (Q15) of the last `infer`.
            pub fn scores_q15(&self) -> &[i32] {
                self.ws.ea.get(..Self::OUTPUT_LEN).unwrap_or(&[])
            }

            /// Saturation and progress counters.
            pub fn counters(&self) -> $crate::Counters {
                self.st.ctr
            }

            /// Blob header fields of the loaded model.
            pub fn meta(&self) -> &$crate::blob::ModelMeta {
                &self.st.meta
            }

            /// CRC-32 of the trainable state (stored weights, then biases, per layer).
            pub fn state_crc32(&self) -> u32 {
                let mut c = $crate::blob::Crc32::new();
                $( $crate::Layer::visit_state(&self.$lname, &mut |b: &[u8]| c.update(b)); )+
                c.finish()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $crate::model::Model for $name {
            fn input_len(&self) -> usize {
                Self::INPUT_LEN
            }
            fn classes(&self) -> usize {
                Self::OUTPUT_LEN
            }
            fn ram_bytes(&self) -> usize {
                Self::RAM_BYTES
            }
            fn blob_len(&self) -> usize {
                Self::BLOB_LEN
            }
            fn infer(&mut self, x: &[i8]) -> Result<$crate::Prediction, $crate::Error> {
                $name::infer(self, x)
            }
            fn scores_q15(&self) -> &[i32] {
                $name::scores_q15(self)
            }
            fn train_step(&mut self, x: &[i8], label: u8) -> Result<$crate::StepOutput, $crate::Error> {
                $name::train_step(self, x, label)
            }
            fn set_train_config(&mut self, cfg: &$crate::TrainConfig) -> Result<(), $crate::Error> {
                $name::set_train_config(self, cfg)
            }
            fn train_config(&self) -> $crate::TrainConfig {
                self.st.cfg
            }
            fn counters(&self) -> $crate::Counters {
                self.st.ctr
            }
            fn load_blob(&mut self, blob: &[u8]) -> Result<(), $crate::blob::BlobError> {
                $name::load_blob(self, blob)
            }
            fn save_blob(&self, out: &mut [u8]) -> Result<usize, $crate::blob::BlobError> {
                $name::save_blob(self, out)
            }
            fn meta(&self) -> $crate::blob::ModelMeta {
                self.st.meta
            }
            fn state_crc32(&self) -> u32 {
                $name::state_crc32(self)
            }
        }
    };
}
