//! Stand-in for `odt_core` with the same API, used only when the crate is built without the
//! `real` feature (`--no-default-features --features f32-baseline`). It let the harness
//! (start-up, markers, QEMU plugin, script) be brought up before firmware/odt-core compiled.
//! The maths is a toy two-layer int8 net: its numbers mean nothing.
//!
//! Switch: `real` (default) -> `use odt_core as odt`; without it -> `use mock as odt`.

#[derive(Clone, Copy, Debug)]
pub enum Error {
    BadInput,
}

pub struct TrainConfig {
    pub lr_shift: u32,
}

impl TrainConfig {
    pub fn all_trainable() -> Self {
        TrainConfig { lr_shift: 4 }
    }
}

pub struct Prediction {
    pub class: u8,
}

pub struct LossOut {
    pub ce_q16: i32,
}

pub struct StepOutput {
    pub loss: LossOut,
}

pub mod models {
    use super::{Error, LossOut, Prediction, StepOutput, TrainConfig};

    pub struct Mock<const IN: usize, const HID: usize, const OUT: usize> {
        w1: [[i8; IN]; HID],
        w2: [[i8; HID]; OUT],
        h: [i8; HID],
        lr_shift: u32,
    }

    pub type TerrainMlp = Mock<102, 64, 5>;
    pub type MnistCnn = Mock<784, 16, 10>;

    impl<const IN: usize, const HID: usize, const OUT: usize> Mock<IN, HID, OUT> {
        pub const INPUT_LEN: usize = IN;
        pub const OUTPUT_LEN: usize = OUT;
        pub const PARAMS: usize = IN * HID + HID * OUT;
        pub const MACS: usize = IN * HID + HID * OUT;
        pub const RAM_BYTES: usize = core::mem::size_of::<Self>();
        pub const FLASH_BYTES: usize = 0;

        pub const fn new() -> Self {
            Mock {
                w1: [[0; IN]; HID],
                w2: [[0; HID]; OUT],
                h: [0; HID],
                lr_shift: 0,
            }
        }

        pub fn init_random(&mut self, seed: u32) {
            let mut s = seed;
            for row in self.w1.iter_mut() {
                for w in row.iter_mut() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *w = ((s >> 24) as i8) >> 3;
                }
            }
            for row in self.w2.iter_mut() {
                for w in row.iter_mut() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *w = ((s >> 24) as i8) >> 3;
                }
            }
        }

        pub fn set_train_config(&mut self, cfg: &TrainConfig) -> Result<(), Error> {
            self.lr_shift = cfg.lr_shift;
            Ok(())
        }

        fn forward(&mut self, x: &[i8], out: &mut [i32; OUT]) -> Result<(), Error> {
            let x: &[i8; IN] = x.try_into().map_err(|_| Error::BadInput)?;
            for (h, row) in self.h.iter_mut().zip(self.w1.iter()) {
                let mut acc = 0i32;
                for (w, v) in row.iter().zip(x.iter()) {
                    acc += *w as i32 * *v as i32;
                }
                *h = (acc >> 8).clamp(0, 127) as i8;
            }
            for (o, row) in out.iter_mut().zip(self.w2.iter()) {
                let mut acc = 0i32;
                for (w, v) in row.iter().zip(self.h.iter()) {
                    acc += *w as i32 * *v as i32;
                }
                *o = acc;
            }
            Ok(())
        }

        pub fn infer(&mut self, x: &[i8]) -> Result<Prediction, Error> {
            let mut out = [0i32; OUT];
            self.forward(x, &mut out)?;
            let mut best = 0;
            for (i, v) in out.iter().enumerate() {
                if *v > out[best] {
                    best = i;
                }
            }
            Ok(Prediction { class: best as u8 })
        }

        /// Stand-in for odt-core's CRC of the trainable state: a plain byte sum.
        pub fn state_crc32(&self) -> u32 {
            let w1 = self.w1.iter().flatten();
            let w2 = self.w2.iter().flatten();
            w1.chain(w2)
                .fold(0u32, |a, &w| a.wrapping_add(w as u8 as u32))
        }

        pub fn train_step(&mut self, x: &[i8], label: u8) -> Result<StepOutput, Error> {
            let mut out = [0i32; OUT];
            self.forward(x, &mut out)?;
            let label = label as usize;
            for (c, row) in self.w2.iter_mut().enumerate() {
                let g: i32 = if c == label { -1 } else { (out[c] > 0) as i32 };
                for (w, h) in row.iter_mut().zip(self.h.iter()) {
                    let d = (g * *h as i32) >> self.lr_shift;
                    *w = (*w as i32 - d).clamp(-128, 127) as i8;
                }
            }
            Ok(StepOutput {
                loss: LossOut { ce_q16: 0 },
            })
        }
    }
}
