//! Picks the memory map and linker script for the QEMU board that emulates each target.
//!
//! | target                      | QEMU board                 | memory map                     |
//! |-----------------------------|----------------------------|--------------------------------|
//! | thumbv7em-none-eabihf       | mps2-an386 (Cortex-M4F)    | link/memory-mps2-an386.x       |
//! | thumbv6m-none-eabi          | microbit (nRF51, Cortex-M0)| link/memory-microbit.x         |
//! | riscv32imc-unknown-none-elf | virt, -bios none           | link/riscv-virt.ld             |

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let link = manifest.join("link");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=link");
    println!("cargo:rerun-if-changed=build.rs");

    let memory = match target.as_str() {
        "thumbv7em-none-eabihf" => Some("memory-mps2-an386.x"),
        "thumbv6m-none-eabi" => Some("memory-microbit.x"),
        _ => None,
    };
    if let Some(memory) = memory {
        fs::copy(link.join(memory), out.join("memory.x")).expect("copy memory.x");
        println!("cargo:rustc-link-search={}", out.display());
        println!("cargo:rustc-link-search={}", link.display());
        println!("cargo:rustc-link-arg-bins=-Tarm.ld");
    } else if target.starts_with("riscv32") {
        println!("cargo:rustc-link-search={}", link.display());
        println!("cargo:rustc-link-arg-bins=-Triscv-virt.ld");
    }
    // Anything else (e.g. `cargo check` on the host) gets no linker script: the crate only
    // builds for the three targets above.
}
