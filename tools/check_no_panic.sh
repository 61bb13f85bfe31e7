#!/usr/bin/env bash
# Link-time check that the firmware (odt-core + odt-proto + odt-app with FirmwareMlp) has no
# reachable panic path, for each MCU instruction set. See firmware/nopanic-check/src/main.rs.
#
#   tools/check_no_panic.sh [TARGET...]   (default: thumbv7em-none-eabihf riscv32imc-unknown-none-elf thumbv6m-none-eabi)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${MCU_CARGO:-/usr/bin/cargo}
export RUSTC=${MCU_RUSTC:-/usr/bin/rustc}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
TARGET_DIR=${NOPANIC_TARGET_DIR:-$ROOT/firmware/nopanic-check/target}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(thumbv7em-none-eabihf riscv32imc-unknown-none-elf thumbv6m-none-eabi)
status=0
for t in "${targets[@]}"; do
    var="CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_LINKER"
    export "$var"=ld.lld-22
    for what in "" app; do
        label=${what:-proto}
        echo "no-panic check: $t ($label)"
        if ! "$CARGO" build --quiet --release --manifest-path "$ROOT/firmware/nopanic-check/Cargo.toml" \
            --target "$t" -Zbuild-std=core --target-dir "$TARGET_DIR" ${what:+--features "$what"} 2>/tmp/nopanic.$$; then
            if grep -q __odt_panic_path_is_reachable /tmp/nopanic.$$; then
                echo "FAIL: a panic path is reachable in the $label build for $t; locations:" >&2
                "$CARGO" build --quiet --release --manifest-path "$ROOT/firmware/nopanic-check/Cargo.toml" \
                    --target "$t" -Zbuild-std=core --target-dir "$TARGET_DIR" --features "${what:+$what,}locate"
                python3 "$ROOT/tools/panic_locations.py" "$TARGET_DIR/$t/release/odt-nopanic-check" >&2 || true
            else
                cat /tmp/nopanic.$$ >&2
            fi
            status=1
        fi
        rm -f /tmp/nopanic.$$
    done
done
[ $status -eq 0 ] && echo "no-panic check: OK (no reachable panic in ${targets[*]})"
exit $status
