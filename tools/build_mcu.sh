#!/usr/bin/env bash
# Build odt-core and the bare-metal benchmark (firmware/bench-mcu) for the MCU targets.
#
#   tools/build_mcu.sh [--variants LIST] [TARGET...]
#
# TARGETs default to all three: thumbv7em-none-eabihf (Cortex-M4F), thumbv6m-none-eabi
# (Cortex-M0/M0+), riscv32imc-unknown-none-elf. LIST is a comma-separated subset of
#   full      integer models + f32 baseline (what tools/bench_mcu.py measures)
#   int-only  integer models only (soft-float check: no __aeabi_f*/__aeabi_d* may be linked)
#   quick     MLP integer path only (QEMU -singlestep cross-check of the counting plugin)
# (default: full,int-only). Each image is copied to
#   firmware/bench-mcu/target/<TARGET>/release/bench-mcu-<variant>
#
# Needs Debian's rustc-web, cargo-web, rust-web-src (core sources for -Zbuild-std) and lld-22,
# see tools/apt-packages.txt. The rustup toolchain has no MCU targets, so Debian's compiler is
# called explicitly; RUSTC_BOOTSTRAP=1 enables -Zbuild-std on it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${MCU_CARGO:-/usr/bin/cargo}
export RUSTC=${MCU_RUSTC:-/usr/bin/rustc}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

variants=full,int-only
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --variants) variants=$2; shift 2 ;;
        --variants=*) variants=${1#--variants=}; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "build_mcu.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    targets=(thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imc-unknown-none-elf)
fi

for tool in "$CARGO" "$RUSTC" ld.lld-22; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build_mcu.sh: $tool not found; install the packages in tools/apt-packages.txt" >&2
        exit 1
    fi
done
if [ ! -d "$("$RUSTC" --print sysroot)/lib/rustlib/src/rust/library/core" ]; then
    echo "build_mcu.sh: no core sources for -Zbuild-std; install rust-web-src" >&2
    exit 1
fi

features_of() {
    case $1 in
        full) echo "--features real,f32-baseline" ;;
        int-only) echo "--features real" ;;
        quick) echo "--features real,quick" ;;
        *) echo "build_mcu.sh: unknown variant $1" >&2; exit 2 ;;
    esac
}

for t in "${targets[@]}"; do
    # odt-core on its own first (as a package of bench-mcu's standalone workspace: same
    # profile and target directory, and independent of the host workspace's other members).
    echo "==> odt-core for $t"
    (cd "$ROOT/firmware/bench-mcu" && "$CARGO" build --release -p odt-core --lib \
        --target "$t" -Zbuild-std=core)
    for v in ${variants//,/ }; do
        echo "==> bench-mcu ($v) for $t"
        # shellcheck disable=SC2046  # word splitting of the feature flags is intended
        (cd "$ROOT/firmware/bench-mcu" && "$CARGO" build --release --target "$t" \
            -Zbuild-std=core --no-default-features $(features_of "$v"))
        out="$ROOT/firmware/bench-mcu/target/$t/release"
        cp "$out/bench-mcu" "$out/bench-mcu-$v"
        if command -v llvm-size-22 >/dev/null 2>&1; then
            llvm-size-22 "$out/bench-mcu-$v" | sed -n 2p
        fi
    done
done
echo "==> build_mcu.sh: done (${targets[*]})"
