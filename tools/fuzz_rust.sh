#!/usr/bin/env bash
# Coverage-guided fuzzing of the firmware's decoders (cargo-fuzz, libFuzzer), SECONDS per target.
# cargo-fuzz needs nightly compiler flags (-Zsanitizer): RUSTC_BOOTSTRAP=1 enables them on the
# stable toolchain for this build only. cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
seconds=${1:-20}
cd "$(dirname "${BASH_SOURCE[0]}")/../firmware/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked -q
fi
export RUSTC_BOOTSTRAP=1
for t in frames blob; do
    echo "fuzz target $t (Rust)"
    cargo fuzz run "$t" -- -max_total_time="$seconds" -print_final_stats=0 2>&1 \
        | grep -E "^(Done|==[0-9]+==|SUMMARY|thread .* panicked)" || true
    # cargo fuzz exits non-zero on a crash (set -e stops here then, via PIPESTATUS).
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed (artifacts in firmware/fuzz/artifacts/$t)"
        exit "$status"
    fi
done
