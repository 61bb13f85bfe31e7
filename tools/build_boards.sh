#!/usr/bin/env bash
# Build the ESP32 board firmware (firmware/boards/) and test its host-side logic.
#
#   tools/build_boards.sh [--no-test] [--test-only] [--images]
#
# 1. `cargo test` of firmware/boards/common (partition layout, flash mapping with odt-app's
#    storage and App on an in-memory NOR flash, receive ring, boot banner) with the host
#    toolchain ($CARGO, default `cargo`). --no-test skips it; --test-only does only this.
# 2. The ESP32-C3 firmware (RISC-V, riscv32imc-unknown-none-elf) with Debian's compiler, as
#    tools/build_mcu.sh does: two variants, host link on UART0 and on USB-serial-JTAG, copied to
#      $TARGET_DIR/riscv32imc-unknown-none-elf/release/odt-esp32c3-{uart,usb}
# 3. --images: also convert each ELF into a flashable app image (.bin) with esptool
#    (`pip install esptool`; `esptool elf2image` + `image-info`), if esptool is on PATH.
# 4. The ESP32 (Xtensa) firmware only when ODT_BUILD_XTENSA=1 and Espressif's toolchain is
#    installed (`espup install`, `cargo +esp`): Debian's LLVM has no working Xtensa backend, so
#    CI skips it and says so.
#
# Environment: ODT_MODEL_BLOB (embed a pretrained TerrainMlp blob), ODT_BAUD, ODT_WDT_MS (see
# firmware/boards/README.md); BOARDS_TARGET_DIR (default firmware/boards/target);
# MCU_CARGO / MCU_RUSTC (default /usr/bin/cargo, /usr/bin/rustc).
# Needs the packages of tools/apt-packages.txt (rustc-web, cargo-web, rust-web-src, lld-22) and
# crates.io (esp-hal and friends; the first build downloads them).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BOARDS=$ROOT/firmware/boards
TARGET_DIR=${BOARDS_TARGET_DIR:-$BOARDS/target}
HOST_CARGO=${CARGO:-cargo}
MCU_CARGO=${MCU_CARGO:-/usr/bin/cargo}
MCU_RUSTC=${MCU_RUSTC:-/usr/bin/rustc}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

run_tests=1
test_only=0
images=0
while [ $# -gt 0 ]; do
    case $1 in
        --no-test) run_tests=0; shift ;;
        --test-only) test_only=1; shift ;;
        --images) images=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "build_boards.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

if [ "$run_tests" = 1 ]; then
    echo "==> firmware/boards/common: cargo test (host)"
    t0=$(date +%s)
    (cd "$BOARDS/common" && "$HOST_CARGO" test --quiet --target-dir "$TARGET_DIR")
    echo "    host tests: $(elapsed "$t0")"
fi

if [ "$test_only" = 1 ]; then
    exit 0
fi

for tool in "$MCU_CARGO" "$MCU_RUSTC" ld.lld-22; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build_boards.sh: $tool not found; install the packages in tools/apt-packages.txt" >&2
        exit 1
    fi
done
if [ ! -d "$("$MCU_RUSTC" --print sysroot)/lib/rustlib/src/rust/library/core" ]; then
    echo "build_boards.sh: no core sources for -Zbuild-std; install rust-web-src" >&2
    exit 1
fi

# ESP32-C3 with Debian's rustc: -Zbuild-std (no prebuilt core for the target) and the LLVM
# linker (Debian ships no rust-lld). Both are given here, not in the crate's .cargo/config.toml,
# which stays right for a developer's rustup toolchain.
C3_TARGET=riscv32imc-unknown-none-elf
C3_OUT=$TARGET_DIR/$C3_TARGET/release
build_c3() { # variant, extra cargo args...
    local variant=$1
    shift
    echo "==> firmware/boards/esp32c3 ($variant) for $C3_TARGET"
    local t0
    t0=$(date +%s)
    (cd "$BOARDS/esp32c3" &&
        RUSTC="$MCU_RUSTC" RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_RISCV32IMC_UNKNOWN_NONE_ELF_LINKER=ld.lld-22 \
        "$MCU_CARGO" build --release --locked --target "$C3_TARGET" -Zbuild-std=core \
            --target-dir "$TARGET_DIR" "$@")
    cp "$C3_OUT/odt-esp32c3" "$C3_OUT/odt-esp32c3-$variant"
    echo "    $variant: $(elapsed "$t0") -> $C3_OUT/odt-esp32c3-$variant"
    if command -v llvm-size-22 >/dev/null 2>&1; then
        llvm-size-22 "$C3_OUT/odt-esp32c3-$variant" | sed -n 2p
    fi
}
build_c3 uart
build_c3 usb --features usb-serial-jtag

if [ "$images" = 1 ]; then
    if command -v esptool >/dev/null 2>&1; then
        for v in uart usb; do
            echo "==> app image odt-esp32c3-$v.bin (esptool elf2image)"
            esptool --chip esp32c3 elf2image --flash-mode dio --flash-size 4MB \
                -o "$C3_OUT/odt-esp32c3-$v.bin" "$C3_OUT/odt-esp32c3-$v" >/dev/null
            esptool image-info "$C3_OUT/odt-esp32c3-$v.bin" |
                grep -E "^(Image size|Checksum|Validation hash|Project name)"
        done
    else
        echo "==> --images: esptool not on PATH (pip install esptool): skipped"
    fi
fi

if [ "${ODT_BUILD_XTENSA:-0}" = 1 ]; then
    echo "==> firmware/boards/esp32 for xtensa-esp32-none-elf (Espressif toolchain)"
    t0=$(date +%s)
    # Unset the Debian compiler settings: the esp toolchain (rust-toolchain.toml) brings its own.
    (cd "$BOARDS/esp32" && env -u RUSTC -u RUSTC_BOOTSTRAP \
        cargo +esp build --release --locked --target-dir "$TARGET_DIR")
    echo "    esp32: $(elapsed "$t0")"
else
    echo "==> firmware/boards/esp32 (Xtensa): not built (needs Espressif's toolchain from espup;" \
        "Debian's LLVM has no Xtensa backend). Set ODT_BUILD_XTENSA=1 where espup is installed."
fi
echo "==> build_boards.sh: done"
