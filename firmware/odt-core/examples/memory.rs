//! Print the compile-time RAM/flash table of the shipped models:
//! `cargo run -p odt-core --example memory` (also `make mem`).

use odt_core::models::{FirmwareMlp, MnistCnn, TerrainMlp, TerrainMlpHp, FIRMWARE_MLP_BUDGET};
use odt_core::MemEntry;

fn table(name: &str, params: usize, ram: usize, flash: usize, budget: usize, mem: &[MemEntry]) {
    println!(
        "{name}: {params} parameters, RAM {ram} B (budget {budget} B), pretrained blob {flash} B"
    );
    println!("  {:<24} {:>8}", "buffer", "bytes");
    for e in mem {
        println!("  {:<24} {:>8}", e.name, e.bytes);
    }
    let sum: usize = mem.iter().map(|e| e.bytes).sum();
    println!("  {:<24} {:>8}", "total", sum);
    println!(
        "  bytes per parameter, all buffers: {:.2}; weights+biases+stash only: {:.2}\n",
        ram as f64 / params as f64,
        mem.iter()
            .filter(|e| e.name.contains('.'))
            .map(|e| e.bytes)
            .sum::<usize>() as f64
            / params as f64
    );
}

fn main() {
    println!(
        "FirmwareMlp (the co-processor firmware's model, shape from the blob): capacity {} inputs, \
         hidden layers of <= {} units, {} classes, {} Dense layers, {} weights, batch {}; \
         blob buffer {} B",
        FirmwareMlp::MAX_INPUTS,
        FirmwareMlp::MAX_WIDTH,
        FirmwareMlp::MAX_OUTPUTS,
        FirmwareMlp::MAX_DENSE,
        FirmwareMlp::MAX_PARAMS_WEIGHTS,
        FirmwareMlp::BATCH,
        FirmwareMlp::MAX_BLOB_LEN,
    );
    table(
        "FirmwareMlp",
        FirmwareMlp::MAX_PARAMS_WEIGHTS,
        FirmwareMlp::RAM_BYTES,
        FirmwareMlp::MAX_BLOB_LEN,
        FIRMWARE_MLP_BUDGET,
        FirmwareMlp::MEMORY,
    );
    table(
        "TerrainMlp (i8, stochastic rounding)",
        TerrainMlp::PARAMS,
        TerrainMlp::RAM_BYTES,
        TerrainMlp::FLASH_BYTES,
        TerrainMlp::BUDGET_BYTES,
        TerrainMlp::MEMORY,
    );
    table(
        "TerrainMlpHp (i16 master weights)",
        TerrainMlpHp::PARAMS,
        TerrainMlpHp::RAM_BYTES,
        TerrainMlpHp::FLASH_BYTES,
        TerrainMlpHp::BUDGET_BYTES,
        TerrainMlpHp::MEMORY,
    );
    table(
        "MnistCnn (i8)",
        MnistCnn::PARAMS,
        MnistCnn::RAM_BYTES,
        MnistCnn::FLASH_BYTES,
        MnistCnn::BUDGET_BYTES,
        MnistCnn::MEMORY,
    );
}
