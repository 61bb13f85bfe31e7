//! Bare-metal benchmark of odt-core's integer trainer on QEMU microcontroller boards.
//!
//! The firmware runs every measured operation between two calls of [`bench_marker`]. The QEMU
//! TCG plugin in `tools/qemu_icount/` is told the marker's address and records the number of
//! guest instructions executed before each marker call; `tools/bench_mcu.py` pairs the hits
//! with the `BRACKET` lines printed here (one line per bracket, printed *before* the bracket's
//! first marker, so printing is never counted) and subtracts the cost of an empty bracket.
//!
//! Output protocol (one line each, semihosting on ARM, UART on RISC-V):
//! ```text
//! BENCH-MCU v1 arch=<arm|riscv32> f32_baseline=<0|1> odt=<real|mock>
//! MODEL name=<mlp|cnn|fwmlp> input_len=.. output_len=.. params=.. macs=.. ram_bytes=.. flash_bytes=..
//!       f32_params=.. f32_ram_bytes=..
//! BRACKET <model> <phase> <index>       (phase: empty, infer, train, infer_f32, train_f32)
//! RESULT <model> <phase> <index> class=.. loss_mnats=..
//! STACK <model> <int|f32> used_bytes=..  (stack high-water mark of that block, from the top)
//! DONE brackets=<n>
//! ```
//! Exit code 0 on success; see `io::EXIT_*` for the failure codes (panic = 101).

#![no_std]
#![no_main]

mod io;
mod rt;

#[cfg(feature = "f32-baseline")]
mod f32ref;
#[cfg(not(feature = "real"))]
mod mock;

#[cfg(not(feature = "real"))]
use mock as odt;
#[cfg(feature = "real")]
use odt_core as odt;

use core::ptr::addr_of_mut;
use io::LineBuf;
#[cfg(feature = "real")]
use odt::models::FirmwareMlp;
use odt::models::{MnistCnn, TerrainMlp};

/// Warm-up runs (not measured) before the measured ones.
const WARMUP: u32 = 2;
/// Measured inferences per model.
const N_INFER: u32 = 4;
/// Measured training steps per model (int8 and f32 alike).
const N_TRAIN: u32 = 8;
/// Distinct synthetic samples, used round-robin; sample `s` has label `s % OUTPUT_LEN`.
const N_SAMPLES: usize = 4;

// Models and their inputs are statics in .bss, never on the stack (the CNN is tens of KiB).
// odt-core's `const fn new()` is all-zero bytes, so the model statics cost no flash.
static mut MLP: TerrainMlp = TerrainMlp::new();
static mut CNN: MnistCnn = MnistCnn::new();
static mut X_MLP: [[i8; TerrainMlp::INPUT_LEN]; N_SAMPLES] =
    [[0; TerrainMlp::INPUT_LEN]; N_SAMPLES];
static mut X_CNN: [[i8; MnistCnn::INPUT_LEN]; N_SAMPLES] = [[0; MnistCnn::INPUT_LEN]; N_SAMPLES];

/// The model the co-processor firmware runs (`FirmwareMlp`, shape from the blob at run time),
/// loaded with the shipped default model (`models/borealtc_mlp.odtm`, 110-64-32-5).
#[cfg(feature = "real")]
static mut FW: FirmwareMlp = FirmwareMlp::new();
#[cfg(feature = "real")]
static FW_BLOB: &[u8] = include_bytes!("../../../models/borealtc_mlp.odtm");
/// Inputs of the shipped model (checked against the loaded blob).
#[cfg(feature = "real")]
const FW_INPUT_LEN: usize = 110;
#[cfg(feature = "real")]
static mut X_FW: [[i8; FW_INPUT_LEN]; N_SAMPLES] = [[0; FW_INPUT_LEN]; N_SAMPLES];

#[cfg(feature = "f32-baseline")]
static mut MLP_F32: f32ref::MlpF32 = f32ref::MlpF32::new();
#[cfg(feature = "f32-baseline")]
static mut CNN_F32: f32ref::CnnF32 = f32ref::CnnF32::new();
#[cfg(feature = "f32-baseline")]
static mut XF_MLP: [[f32; 102]; N_SAMPLES] = [[0.0; 102]; N_SAMPLES];
#[cfg(feature = "f32-baseline")]
static mut XF_CNN: [[[[f32; 1]; 28]; 28]; N_SAMPLES] = [[[[0.0; 1]; 28]; 28]; N_SAMPLES];

// The f32 baseline must see the same samples as the integer models.
#[cfg(feature = "f32-baseline")]
const _: () = {
    assert!(f32ref::MlpF32::INPUT_LEN == TerrainMlp::INPUT_LEN);
    assert!(f32ref::CnnF32::INPUT_LEN == MnistCnn::INPUT_LEN);
};

/// The instruction-count marker. Its body is a return (with a frame-pointer push/pop on ARM:
/// 3 instructions); the plugin counts the instructions executed before each call. Not inlined,
/// and the empty `asm!` (without `nomem`) is a compiler memory barrier, so no model work moves
/// across a marker.
#[no_mangle]
#[inline(never)]
pub extern "C" fn bench_marker(id: u32) {
    // SAFETY: empty assembly; only consumes `id`.
    unsafe {
        core::arch::asm!("/* bench_marker {0} */", in(reg) id, options(nostack, preserves_flags))
    };
}

static mut BRACKETS: u32 = 0;

/// Run `f` between two markers, after announcing the bracket.
#[inline(always)]
fn bracket<R>(model: &str, phase: &str, idx: u32, f: impl FnOnce() -> R) -> R {
    LineBuf::new()
        .s("BRACKET ")
        .s(model)
        .s(" ")
        .s(phase)
        .s(" ")
        .u(idx as u64)
        .flush();
    // SAFETY: single-threaded, no interrupts.
    unsafe { BRACKETS += 1 };
    bench_marker(1);
    let r = f();
    bench_marker(2);
    core::hint::black_box(r)
}

/// 32-bit LCG for the synthetic data (same constants as odt-core's stochastic rounding).
pub struct Lcg(u32);

impl Lcg {
    pub const fn new(seed: u32) -> Self {
        Lcg(seed)
    }
    pub fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }
}

trait OrExit<T> {
    fn or_exit(self) -> T;
}

impl<T, E> OrExit<T> for Result<T, E> {
    #[inline(always)]
    fn or_exit(self) -> T {
        match self {
            Ok(v) => v,
            Err(_) => {
                io::line("ODT-ERROR");
                io::exit(io::EXIT_ODT_ERROR)
            }
        }
    }
}

fn print_model(
    name: &str,
    input_len: usize,
    output_len: usize,
    params: usize,
    macs: usize,
    ram: usize,
    flash: usize,
    f32_params: usize,
    f32_ram: usize,
) {
    LineBuf::new()
        .s("MODEL name=")
        .s(name)
        .kv("input_len", input_len as i64)
        .kv("output_len", output_len as i64)
        .kv("params", params as i64)
        .kv("macs", macs as i64)
        .kv("ram_bytes", ram as i64)
        .kv("flash_bytes", flash as i64)
        .kv("f32_params", f32_params as i64)
        .kv("f32_ram_bytes", f32_ram as i64)
        .flush();
}

/// Stack high-water mark of one model's benchmark block (inits, warm-up and measured calls).
fn stack_report(model: &str, kind: &str) {
    LineBuf::new()
        .s("STACK ")
        .s(model)
        .s(" ")
        .s(kind)
        .kv("used_bytes", rt::stack::used() as i64)
        .flush();
}

fn result(model: &str, phase: &str, idx: u32, class: i64, loss_mnats: i64) {
    LineBuf::new()
        .s("RESULT ")
        .s(model)
        .s(" ")
        .s(phase)
        .s(" ")
        .u(idx as u64)
        .kv("class", class)
        .kv("loss_mnats", loss_mnats)
        .flush();
}

/// Integer inference + training benchmark for one odt-core model (same code for both types).
/// `$init(m)` puts the model in place and returns its number of classes.
macro_rules! bench_int {
    ($name:expr, $ty:ty, $model:expr, $xs:expr, $seed:expr, $init:expr) => {{
        let m: &mut $ty = $model;
        let xs = $xs;
        let mut rng = Lcg::new($seed ^ 0x5EED);
        for x in xs.iter_mut() {
            for v in x.iter_mut() {
                *v = (rng.next() >> 24) as u8 as i8;
            }
        }
        let n_out = ($init)(&mut *m, $seed) as u32;
        m.set_train_config(&odt::TrainConfig::all_trainable())
            .or_exit();
        for k in 0..WARMUP {
            core::hint::black_box(m.infer(&xs[k as usize % N_SAMPLES]).or_exit());
        }
        for k in 0..N_INFER {
            let x = &xs[k as usize % N_SAMPLES];
            let p = bracket($name, "infer", k, || m.infer(x)).or_exit();
            result($name, "infer", k, p.class as i64, -1);
        }
        for k in 0..WARMUP {
            let label = ((k as usize % N_SAMPLES) as u32 % n_out) as u8;
            core::hint::black_box(m.train_step(&xs[k as usize % N_SAMPLES], label).or_exit());
        }
        for k in 0..N_TRAIN {
            let x = &xs[k as usize % N_SAMPLES];
            let label = ((k as usize % N_SAMPLES) as u32 % n_out) as u8;
            let out = bracket($name, "train", k, || m.train_step(x, label)).or_exit();
            // Cross-entropy before the update, Q16 nats -> milli-nats.
            let loss_mnats = (out.loss.ce_q16 as i64 * 1000) >> 16;
            result($name, "train", k, label as i64, loss_mnats);
        }
        // The whole trained state, so that the cross-target comparison covers every weight.
        result($name, "state", 0, m.state_crc32() as i64, -1);
    }};
}

#[cfg(feature = "f32-baseline")]
macro_rules! bench_f32 {
    ($name:expr, $model:expr, $xq:expr, $xf:expr, $n_out:expr, $seed:expr) => {{
        let m = $model;
        let xq = $xq;
        let xf = $xf;
        // Same samples as the integer model, real value = q / 64.
        for (dst, src) in xf.iter_mut().zip(xq.iter()) {
            let dst: &mut [f32] = f32_flat(dst);
            for (d, s) in dst.iter_mut().zip(src.iter()) {
                *d = *s as f32 * (1.0 / 64.0);
            }
        }
        m.init($seed);
        for k in 0..WARMUP {
            core::hint::black_box(m.infer(&xf[k as usize % N_SAMPLES]));
        }
        for k in 0..N_INFER {
            let x = &xf[k as usize % N_SAMPLES];
            let c = bracket($name, "infer_f32", k, || m.infer(x));
            result($name, "infer_f32", k, c as i64, -1);
        }
        for k in 0..WARMUP {
            let label = ((k as usize % N_SAMPLES) as u32 % $n_out) as u8;
            core::hint::black_box(m.train_step(&xf[k as usize % N_SAMPLES], label));
        }
        for k in 0..N_TRAIN {
            let x = &xf[k as usize % N_SAMPLES];
            let label = ((k as usize % N_SAMPLES) as u32 % $n_out) as u8;
            let loss = bracket($name, "train_f32", k, || m.train_step(x, label));
            result($name, "train_f32", k, label as i64, (loss * 1000.0) as i64);
        }
    }};
}

#[cfg(feature = "f32-baseline")]
trait F32Flat {
    fn flat(&mut self) -> &mut [f32];
}
#[cfg(feature = "f32-baseline")]
impl F32Flat for [f32; 102] {
    fn flat(&mut self) -> &mut [f32] {
        self
    }
}
#[cfg(feature = "f32-baseline")]
impl F32Flat for [[[f32; 1]; 28]; 28] {
    fn flat(&mut self) -> &mut [f32] {
        self.as_flattened_mut().as_flattened_mut()
    }
}
#[cfg(feature = "f32-baseline")]
fn f32_flat<T: F32Flat>(t: &mut T) -> &mut [f32] {
    t.flat()
}

#[no_mangle]
pub extern "C" fn bench_main() -> ! {
    LineBuf::new()
        .s("BENCH-MCU v1 arch=")
        .s(if cfg!(target_arch = "arm") {
            "arm"
        } else {
            "riscv32"
        })
        .kv("f32_baseline", cfg!(feature = "f32-baseline") as i64)
        .s(" odt=")
        .s(if cfg!(feature = "real") {
            "real"
        } else {
            "mock"
        })
        .flush();

    #[cfg(feature = "f32-baseline")]
    let (mlp_f32_ram, cnn_f32_ram) = (
        core::mem::size_of::<f32ref::MlpF32>(),
        core::mem::size_of::<f32ref::CnnF32>(),
    );
    #[cfg(not(feature = "f32-baseline"))]
    let (mlp_f32_ram, cnn_f32_ram) = (0usize, 0usize);
    #[cfg(feature = "f32-baseline")]
    let (mlp_f32_params, cnn_f32_params) = (f32ref::MlpF32::PARAMS, f32ref::CnnF32::PARAMS);
    #[cfg(not(feature = "f32-baseline"))]
    let (mlp_f32_params, cnn_f32_params) = (0usize, 0usize);

    print_model(
        "mlp",
        TerrainMlp::INPUT_LEN,
        TerrainMlp::OUTPUT_LEN,
        TerrainMlp::PARAMS,
        TerrainMlp::MACS,
        TerrainMlp::RAM_BYTES,
        TerrainMlp::FLASH_BYTES,
        mlp_f32_params,
        mlp_f32_ram,
    );
    print_model(
        "cnn",
        MnistCnn::INPUT_LEN,
        MnistCnn::OUTPUT_LEN,
        MnistCnn::PARAMS,
        MnistCnn::MACS,
        MnistCnn::RAM_BYTES,
        MnistCnn::FLASH_BYTES,
        cnn_f32_params,
        cnn_f32_ram,
    );

    #[cfg(feature = "real")]
    {
        // Shape and sizes of the shipped model in the firmware's model (loaded once here for
        // the MODEL line; the benchmark block loads it again).
        // SAFETY: single-threaded bare metal; the static is not borrowed elsewhere yet.
        let fw: &mut FirmwareMlp = unsafe { &mut *addr_of_mut!(FW) };
        fw.load_blob(FW_BLOB).or_exit();
        let sh = *fw.shape();
        let biases: usize = sh
            .widths
            .iter()
            .skip(1)
            .take(sh.layers)
            .map(|&v| v as usize)
            .sum();
        print_model(
            "fwmlp",
            sh.input_len(),
            sh.classes(),
            sh.weights() + biases,
            sh.weights(),
            FirmwareMlp::RAM_BYTES,
            FW_BLOB.len(),
            0,
            0,
        );
    }

    // Cost of an empty bracket (marker call + return), subtracted by the script.
    for k in 0..3 {
        bracket("none", "empty", k, || ());
    }

    // SAFETY: single-threaded bare metal, no interrupts; each static is borrowed once here.
    unsafe {
        let mlp: &mut TerrainMlp = &mut *addr_of_mut!(MLP);
        let cnn: &mut MnistCnn = &mut *addr_of_mut!(CNN);
        rt::stack::paint();
        bench_int!(
            "mlp",
            TerrainMlp,
            mlp,
            &mut *addr_of_mut!(X_MLP),
            0x0D7_0001,
            |m: &mut TerrainMlp, seed| {
                m.init_random(seed);
                TerrainMlp::OUTPUT_LEN
            }
        );
        stack_report("mlp", "int");
        if cfg!(feature = "quick") {
            LineBuf::new()
                .s("DONE")
                .kv("brackets", BRACKETS as i64)
                .flush();
            io::exit(io::EXIT_OK);
        }
        rt::stack::paint();
        bench_int!(
            "cnn",
            MnistCnn,
            cnn,
            &mut *addr_of_mut!(X_CNN),
            0x0D7_0002,
            |m: &mut MnistCnn, seed| {
                m.init_random(seed);
                MnistCnn::OUTPUT_LEN
            }
        );
        stack_report("cnn", "int");
        #[cfg(feature = "real")]
        {
            let fw: &mut FirmwareMlp = &mut *addr_of_mut!(FW);
            rt::stack::paint();
            bench_int!(
                "fwmlp",
                FirmwareMlp,
                fw,
                &mut *addr_of_mut!(X_FW),
                0x0D7_0003,
                |m: &mut FirmwareMlp, _seed| {
                    m.load_blob(FW_BLOB).or_exit();
                    if m.shape().input_len() != FW_INPUT_LEN {
                        io::line("FWMLP-SHAPE");
                        io::exit(io::EXIT_CHECK);
                    }
                    m.shape().classes()
                }
            );
            stack_report("fwmlp", "int");
        }
        #[cfg(feature = "f32-baseline")]
        {
            rt::stack::paint();
            bench_f32!(
                "mlp",
                &mut *addr_of_mut!(MLP_F32),
                &*addr_of_mut!(X_MLP),
                &mut *addr_of_mut!(XF_MLP),
                TerrainMlp::OUTPUT_LEN as u32,
                0x0F3_0001
            );
            stack_report("mlp", "f32");
            rt::stack::paint();
            bench_f32!(
                "cnn",
                &mut *addr_of_mut!(CNN_F32),
                &*addr_of_mut!(X_CNN),
                &mut *addr_of_mut!(XF_CNN),
                MnistCnn::OUTPUT_LEN as u32,
                0x0F3_0002
            );
            stack_report("cnn", "f32");
        }
    }

    // SAFETY: single-threaded.
    let n = unsafe { BRACKETS };
    LineBuf::new().s("DONE").kv("brackets", n as i64).flush();
    io::exit(io::EXIT_OK)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    io::line("PANIC");
    io::exit(io::EXIT_PANIC)
}
