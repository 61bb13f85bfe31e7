//! Build script shared by the board crates (`build = "../esp-shared/build_board.rs"`).
//!
//! Environment variables read at build time:
//!
//! | variable         | default  | meaning                                                        |
//! |------------------|----------|----------------------------------------------------------------|
//! | `ODT_MODEL_BLOB` | (none)   | path of a model blob (FORMAT.md: an MLP within `FirmwareMlp`'s capacity) to embed as the pretrained model; relative paths are relative to the board crate directory |
//! | `ODT_BAUD`       | `921600` | UART baud rate of the host link                                |
//! | `ODT_WDT_MS`     | `5000`   | watchdog timeout in milliseconds                               |
//!
//! The blob is validated here with the firmware's own loader (`odt_core`), so a wrong or
//! corrupt blob fails the build instead of the boot. Without `ODT_MODEL_BLOB` the firmware embeds
//! nothing and boots with `init_random(1)` weights (and says so in its boot banner) unless the
//! flash holds a saved model or a pretrained blob in the `odt` partition.
//!
//! It also passes esp-hal's linker script (`linkall.x`) to the linker, and `-nostartfiles` on
//! Xtensa (linked by Espressif's GCC there).

use std::env;
use std::fs;
use std::path::PathBuf;

use odt_core::models::FirmwareMlp;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    for var in ["ODT_MODEL_BLOB", "ODT_BAUD", "ODT_WDT_MS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    // Pretrained model blob.
    let blob = match env::var_os("ODT_MODEL_BLOB").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = manifest.join(path);
            println!("cargo:rerun-if-changed={}", path.display());
            let bytes = fs::read(&path)
                .unwrap_or_else(|e| panic!("ODT_MODEL_BLOB={}: cannot read: {e}", path.display()));
            let mut model = Box::new(FirmwareMlp::new());
            if let Err(e) = model.load_blob(&bytes) {
                panic!(
                    "ODT_MODEL_BLOB={}: not a valid model blob for this firmware: {e} ({e:?}); the \
                     firmware runs MLPs of up to {} inputs, {}-unit hidden layers, {} classes, {} \
                     Dense layers and {} weights (int8, batch {})",
                    path.display(),
                    FirmwareMlp::MAX_INPUTS,
                    FirmwareMlp::MAX_WIDTH,
                    FirmwareMlp::MAX_OUTPUTS,
                    FirmwareMlp::MAX_DENSE,
                    FirmwareMlp::MAX_PARAMS_WEIGHTS,
                    FirmwareMlp::BATCH
                );
            }
            println!(
                "cargo:warning=embedding pretrained model {} ({} bytes)",
                path.display(),
                bytes.len()
            );
            bytes
        }
        None => Vec::new(),
    };
    fs::write(out.join("pretrained.bin"), &blob).expect("write pretrained.bin");

    // Numeric settings.
    let number = |var: &str, default: u32| -> u32 {
        match env::var(var) {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={v:?}: not a number")),
            _ => default,
        }
    };
    let baud = number("ODT_BAUD", 921_600);
    let wdt_ms = number("ODT_WDT_MS", 5_000);
    assert!(
        (1_200..=5_000_000).contains(&baud),
        "ODT_BAUD={baud}: out of range"
    );
    assert!(
        (500..=60_000).contains(&wdt_ms),
        "ODT_WDT_MS={wdt_ms}: use 500 to 60000"
    );
    fs::write(
        out.join("board_config.rs"),
        format!(
            "/// Host link baud rate (`ODT_BAUD`).\npub const BAUD: u32 = {baud};\n\
             /// Watchdog timeout in ms (`ODT_WDT_MS`).\npub const WATCHDOG_MS: u32 = {wdt_ms};\n"
        ),
    )
    .expect("write board_config.rs");

    // Linker scripts (esp-hal puts linkall.x and the files it includes in its OUT_DIR, which it
    // adds to the search path).
    println!("cargo:rustc-link-arg-bins=-Tlinkall.x");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("xtensa") {
        println!("cargo:rustc-link-arg-bins=-nostartfiles");
    }
    println!("cargo:rerun-if-changed=../esp-shared/build_board.rs");
}
