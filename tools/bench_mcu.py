#!/usr/bin/env python3
"""Bare-metal MCU benchmark of odt-core: exact instruction counts under QEMU.

Builds firmware/bench-mcu for three instruction sets (tools/build_mcu.sh), runs each image in
QEMU with the counting plugin tools/qemu_icount/libicount.so, and writes bench/results/mcu.json:
one entry per (target, model) with the executed-instruction counts of one inference, one integer
training step (batch 1, all layers trainable) and the same step in plain f32, plus image sizes
(llvm-size-22), the model constants printed by the firmware and the checks below.

Checks:
* repeatability: every target runs ``--runs`` times (default 2); the marker hit counts must be
  identical, else the script fails;
* plugin vs. QEMU's own per-instruction log: the ``quick`` image (MLP integer path only) runs once
  with ``-singlestep -d exec,nochain`` and the trace lines between marker hits must equal the
  plugin's counts (``--no-crosscheck`` skips it);
* soft float: the ``int-only`` image (no f32 baseline) must link no soft-float helper
  (``__aeabi_f*``, ``__aeabi_d*``, ``__addsf3``-style, compiler_builtins::float) and call none, else
  the script fails (exit code 3) and writes nothing; the ``full`` image is the positive control
  (it must show soft-float helpers on the FPU-less targets, else the check itself is broken). On
  the Cortex-M4F the int-only image must contain no VFP instruction (also fatal).
* provenance: the results record the git revision; from a work tree with uncommitted changes
  the script refuses to run unless given ``--allow-dirty``, and then records the diff (hash and
  stat, ``tools/provenance.py``).

Usage: ``python3 tools/bench_mcu.py [--skip-build] [--runs N] [--targets T ...] [--out PATH]
[--allow-dirty]``. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import provenance  # noqa: E402

BENCH_DIR = ROOT / "firmware" / "bench-mcu"
PLUGIN_DIR = ROOT / "tools" / "qemu_icount"
PLUGIN = PLUGIN_DIR / "libicount.so"
BUILD_SCRIPT = ROOT / "tools" / "build_mcu.sh"
DEFAULT_OUT = ROOT / "bench" / "results" / "mcu.json"

LLVM_NM = "llvm-nm-22"
LLVM_SIZE = "llvm-size-22"
LLVM_OBJDUMP = "llvm-objdump-22"
QEMU_TIMEOUT_S = 900
PROFILE_TOP = 10

MODEL_NAMES = {"mlp": "terrain_mlp", "cnn": "mnist_cnn"}
MODEL_SHAPES = {
    "mlp": "102 -> Dense 64 ReLU -> Dense 32 ReLU -> Dense 5",
    "cnn": (
        "28x28x1 -> Conv3x3 8 ReLU -> MaxPool2 -> Conv3x3 16 ReLU -> MaxPool2 -> Dense 400->10"
    ),
}

SOFT_FLOAT_RE = re.compile(
    r"^(?:__aeabi_(?:f|d|cf|cd|i2f|i2d|ui2f|ui2d|l2f|l2d|ul2f|ul2d)\w*"
    r"|__(?:add|sub|mul|div|neg)[sdt]f3"
    r"|__fix(?:uns)?[sdt]f[sdt]i"
    r"|__float(?:un)?[sdt]i[sdt]f"
    r"|__(?:eq|ne|lt|le|gt|ge|un|unord|cmp)[sdt]f2"
    r"|__extend[sdth]f[sdt]f2|__trunc[sdt]f[sdh]f2|__powi[sdt]f2)$"
)
VFP_MNEMONIC_RE = re.compile(r"^v[a-z0-9]*(?:\.f(?:16|32|64)|\.[su]32\.f32|\.f32\.[su]32)?$")
INT_HELPER_PREFIXES = ("__aeabi_", "__mul", "__div", "__udiv", "__mod", "__umod", "__ash", "__lsh")
PANIC_RE = re.compile(r"panicking|panic_bounds_check|slice_index_fail|slice_\w+_fail|panic_fmt")


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    isa: str
    fpu: str
    board: str
    qemu: tuple[str, ...]
    notes: tuple[str, ...] = ()


# ARM boards: output and exit code through semihosting (text on QEMU's stderr).
def argv(command: str) -> tuple[str, ...]:
    return tuple(shlex.split(command))


COMMON_ARM = argv(
    "-nographic -monitor none -serial none -semihosting-config enable=on,target=native"
)

TARGETS: tuple[Target, ...] = (
    Target(
        triple="thumbv7em-none-eabihf",
        cpu="Cortex-M4F",
        isa="ARMv7E-M (Thumb-2, DSP)",
        fpu="FPv4-SP single precision (enabled at start-up)",
        board="mps2-an386",
        qemu=(*argv("qemu-system-arm -machine mps2-an386 -cpu cortex-m4"), *COMMON_ARM),
        notes=("Output and exit code through ARM semihosting.",),
    ),
    Target(
        triple="thumbv6m-none-eabi",
        cpu="Cortex-M0 (ARMv6-M, same instruction set as the M0+)",
        isa="ARMv6-M (Thumb-1 + a few Thumb-2)",
        fpu="none (f32 is soft-float: __aeabi_f*)",
        board="microbit",
        qemu=(
            *argv("qemu-system-arm -machine microbit -global nrf51-soc.sram-size=0x40000"),
            *COMMON_ARM,
        ),
        notes=(
            "QEMU's nRF51 is given 256 KiB SRAM (-global nrf51-soc.sram-size=0x40000; the real "
            "chip has 16 KiB) so that one image holds both models and the f32 baseline (see "
            "elf_bss; ram_bytes is what one integer model needs). Instruction counts do not "
            "depend on the memory size.",
            "QEMU's microbit CPU is a Cortex-M0; thumbv6m code is the same on a Cortex-M0+.",
            "Output and exit code through ARM semihosting.",
        ),
    ),
    Target(
        triple="riscv32imc-unknown-none-elf",
        cpu="RV32IMC",
        isa="RV32IMC",
        fpu="none (f32 is soft-float: __addsf3, __mulsf3, ...)",
        board="virt",
        qemu=argv(
            "qemu-system-riscv32 -machine virt -bios none -nographic -monitor none -serial stdio"
        ),
        notes=(
            "QEMU's rv32 CPU implements more extensions than IMC; the image only uses RV32IMC.",
            "Output on the NS16550 UART, exit code through the sifive_test device (0x100000).",
        ),
    ),
)


# ----------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[bench_mcu] {msg}", flush=True)


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float | None = None) -> str:
    """Run a command, return its stdout; raise with its output on failure."""
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def elf_path(triple: str, variant: str) -> Path:
    return BENCH_DIR / "target" / triple / "release" / f"bench-mcu-{variant}"


def marker_address(elf: Path) -> int:
    """Address of the firmware's bench_marker function (Thumb bit cleared)."""
    for line in run([LLVM_NM, str(elf)]).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "bench_marker":
            return int(parts[0], 16) & ~1  # Thumb symbol values have bit 0 set
    raise RuntimeError(f"symbol bench_marker not found in {elf}")


def elf_sizes(elf: Path) -> dict[str, int]:
    lines = run([LLVM_SIZE, "--format=berkeley", str(elf)]).splitlines()
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


# ----------------------------------------------------------------------------- QEMU runs


@dataclass
class Bracket:
    model: str
    phase: str
    index: int
    raw: int = 0


@dataclass
class Run:
    header: str
    models: dict[str, dict[str, int]]
    brackets: list[Bracket]
    results: list[str]
    stacks: dict[str, int]  # "<model> <int|f32>" -> bytes
    hits: list[int]
    total: int
    command: list[str]
    seconds: float


def parse_kv(tokens: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if sep:
            out[key] = value
    return out


def plugin_arg(marker: int, hits_file: Path) -> str:
    return f"{PLUGIN},marker=0x{marker:x},out={hits_file}"


def run_qemu(target: Target, elf: Path, marker: int, workdir: Path, tag: str) -> Run:
    hits_file = workdir / f"hits-{target.triple}-{tag}.txt"
    cmd = [*target.qemu, "-kernel", str(elf), "-plugin", plugin_arg(marker, hits_file)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_TIMEOUT_S, check=False)
    seconds = time.monotonic() - t0
    text = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(
            f"{target.triple}: QEMU exited with {proc.returncode} "
            f"(101 panic, 102 fault, 103 odt-core error)\n{shlex.join(cmd)}\n{text[-4000:]}"
        )
    header = ""
    models: dict[str, dict[str, int]] = {}
    brackets: list[Bracket] = []
    results: list[str] = []
    stacks: dict[str, int] = {}
    done = -1
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] == "BENCH-MCU":
            header = line.strip()
        elif tokens[0] == "MODEL":
            kv = parse_kv(tokens[1:])
            name = kv.pop("name")
            models[name] = {k: int(v) for k, v in kv.items()}
        elif tokens[0] == "BRACKET" and len(tokens) == 4:
            brackets.append(Bracket(tokens[1], tokens[2], int(tokens[3])))
        elif tokens[0] == "RESULT":
            results.append(line.strip())
        elif tokens[0] == "STACK" and len(tokens) == 4:
            stacks[f"{tokens[1]} {tokens[2]}"] = int(parse_kv(tokens[3:])["used_bytes"])
        elif tokens[0] == "DONE":
            done = int(parse_kv(tokens[1:])["brackets"])
    if done != len(brackets):
        raise RuntimeError(f"{target.triple}: incomplete output\n{text[-4000:]}")
    hits: list[int] = []
    total = -1
    for line in hits_file.read_text().splitlines():
        tokens = line.split()
        if tokens[:2] == ["icount", "total"]:
            total = int(tokens[2])
        elif tokens and tokens[0] == "hit":
            hits.append(int(tokens[2]))
    if len(hits) != 2 * len(brackets):
        raise RuntimeError(f"{target.triple}: {len(hits)} marker hits for {len(brackets)} brackets")
    for j, b in enumerate(brackets):
        b.raw = hits[2 * j + 1] - hits[2 * j]
    return Run(header, models, brackets, results, stacks, hits, total, cmd, seconds)


def text_symbols(elf: Path) -> list[tuple[int, str]]:
    """(address, demangled name) of the code symbols, sorted by address."""
    syms = []
    for line in run([LLVM_NM, "--defined-only", "-C", str(elf)]).splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16) & ~1, parts[2]))
    return sorted(syms)


def profile_brackets(
    target: Target, elf: Path, marker: int, first: int, last: int, steps: int, workdir: Path
) -> list[dict[str, Any]]:
    """Instructions per function inside brackets first..last-1, per step (top entries)."""
    hits_file = workdir / f"hits-{target.triple}-prof.txt"
    prof_file = workdir / f"prof-{target.triple}.txt"
    plugin = f"{plugin_arg(marker, hits_file)},profile={prof_file},brackets={first}:{last}"
    cmd = [*target.qemu, "-kernel", str(elf), "-plugin", plugin]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{target.triple}: profile run failed\n{proc.stderr[-2000:]}")
    syms = text_symbols(elf)
    addrs = [a for a, _ in syms]
    per_func: dict[str, int] = {}
    for line in prof_file.read_text().splitlines():
        _, vaddr, n_insns, execs = line.split()
        i = bisect.bisect_right(addrs, int(vaddr, 16)) - 1
        name = syms[i][1] if i >= 0 else "?"
        per_func[name] = per_func.get(name, 0) + int(n_insns) * int(execs)
    total = sum(per_func.values())
    top = sorted(per_func.items(), key=lambda kv: -kv[1])[:PROFILE_TOP]
    return [
        {"function": name, "instructions_per_step": round(n / steps), "share": round(n / total, 4)}
        for name, n in top
    ]


def singlestep_crosscheck(target: Target, elf: Path, marker: int, workdir: Path) -> dict[str, Any]:
    """Count instructions between marker hits from QEMU's own exec log (1 insn per block)."""
    plugin_run = run_qemu(target, elf, marker, workdir, "quick")
    # QEMU's exec log is streamed through a pipe (-D /dev/stdout): millions of lines, no file.
    # The firmware's own output is not needed here, so the RISC-V UART goes to null.
    base = [("null" if arg == "stdio" else arg) for arg in target.qemu]
    flags = ["-singlestep", "-d", "exec,nochain", "-D"]
    cmd = [*base, "-kernel", str(elf), *flags, "/dev/stdout"]
    n_trace = 0
    marker_lines: list[int] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("Trace "):
                continue
            # "Trace 0: 0x7f.. [cs_base/pc/flags/cflags] symbol"
            lb = line.find("[")
            fields = line[lb + 1 : line.find("]", lb)].split("/")
            if int(fields[1], 16) == marker:
                marker_lines.append(n_trace)
            n_trace += 1
        rc = proc.wait(timeout=QEMU_TIMEOUT_S)
    if rc != 0:
        raise RuntimeError(f"{target.triple}: singlestep run failed ({rc}): {shlex.join(cmd)}")
    log_counts = [
        marker_lines[2 * j + 1] - marker_lines[2 * j] for j in range(len(marker_lines) // 2)
    ]
    plugin_counts = [b.raw for b in plugin_run.brackets]
    return {
        "image": "quick (MLP integer path only)",
        "brackets": len(plugin_counts),
        "plugin_counts": plugin_counts,
        "singlestep_log_counts": log_counts,
        "plugin_total": plugin_run.total,
        "singlestep_log_total": n_trace,
        "match": log_counts == plugin_counts and plugin_run.total == n_trace,
        "command": shlex.join([*base, "-kernel", str(elf.relative_to(ROOT)), *flags, "exec.log"]),
    }


# ----------------------------------------------------------------------------- static checks


def defined_symbols(elf: Path) -> list[str]:
    return [ln.split()[-1] for ln in run([LLVM_NM, str(elf)]).splitlines() if ln.strip()]


def soft_float_symbols(elf: Path) -> list[str]:
    found = []
    for name in defined_symbols(elf):
        if SOFT_FLOAT_RE.match(name) or "compiler_builtins5float" in name:
            found.append(name)
    return sorted(set(found))


@dataclass
class Disasm:
    calls: dict[str, int] = field(default_factory=dict)  # callee -> call sites
    panic_sites: dict[str, int] = field(default_factory=dict)  # caller -> panic call sites
    vfp: dict[str, int] = field(default_factory=dict)  # mnemonic -> count


CALL_MNEMONICS = {"bl", "blx", "b", "b.w", "jal", "j", "call", "tail", "c.j", "c.jal"}
FUNC_RE = re.compile(r"^[0-9a-f]+ <(.+)>:$")
TARGET_RE = re.compile(r"<([^>+]+)(?:\+0x[0-9a-f]+)?>")


def disassemble(elf: Path, arm: bool) -> Disasm:
    out = run([LLVM_OBJDUMP, "-d", "-C", "--no-show-raw-insn", str(elf)])
    dis = Disasm()
    current = ""
    for line in out.splitlines():
        m = FUNC_RE.match(line)
        if m:
            current = m.group(1)
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip().endswith(":"):
            continue
        mnemonic = parts[1].strip()
        if arm and VFP_MNEMONIC_RE.match(mnemonic) and mnemonic not in {"vpush", "vpop"}:
            dis.vfp[mnemonic] = dis.vfp.get(mnemonic, 0) + 1
        if mnemonic in CALL_MNEMONICS and len(parts) > 2:
            t = TARGET_RE.search(parts[2])
            if t and t.group(1) != current:
                callee = t.group(1)
                dis.calls[callee] = dis.calls.get(callee, 0) + 1
                if PANIC_RE.search(callee) and not PANIC_RE.search(current):
                    dis.panic_sites[current] = dis.panic_sites.get(current, 0) + 1
    return dis


def soft_float_callees(dis: Disasm) -> list[str]:
    return sorted(c for c in dis.calls if SOFT_FLOAT_RE.match(c) or "compiler_builtins::float" in c)


class SoftFloatError(RuntimeError):
    """An integer-only image links or calls floating point (or the check cannot be trusted)."""


def check_int_image(
    triple: str,
    symbols: list[str],
    calls: list[str],
    control_symbols: int,
    vfp: dict[str, int] | None = None,
) -> None:
    """Fail unless the int-only image is free of soft-float helpers (and, on the M4F, of VFP
    instructions). `control_symbols` counts the soft-float symbols of the full image, which links
    the f32 baseline: none found there means the detection itself is broken."""
    problems = []
    if symbols:
        problems.append(f"links soft-float helpers {', '.join(symbols)}")
    if calls:
        problems.append(f"calls soft-float helpers {', '.join(calls)}")
    if vfp:
        problems.append(f"contains VFP instructions {vfp}")
    if control_symbols <= 0:
        problems.append(
            "the positive control (full image with the f32 baseline) shows no soft-float "
            "symbol, so the detection cannot be trusted"
        )
    if problems:
        raise SoftFloatError(
            f"{triple}: integer-only image (soft-float check) " + "; ".join(problems)
        )


# ----------------------------------------------------------------------------- aggregation


def stats(values: list[int]) -> dict[str, Any]:
    return {
        "mean": round(statistics.fmean(values), 1),
        "min": min(values),
        "max": max(values),
        "samples": values,
    }


def bench_target(
    target: Target, runs: int, crosscheck: bool, profile: bool, workdir: Path
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    full = elf_path(target.triple, "full")
    int_only = elf_path(target.triple, "int-only")
    marker = marker_address(full)
    log(f"{target.triple}: running {runs}x on QEMU {target.board} (marker at 0x{marker:x})")
    all_runs = []
    for r in range(runs):
        res = run_qemu(target, full, marker, workdir, f"run{r}")
        log(
            f"{target.triple}: run {r + 1}/{runs}: {res.total} instructions, "
            f"{len(res.brackets)} brackets, {res.seconds:.1f} s"
        )
        all_runs.append(res)
    first = all_runs[0]
    repeatable = all(r.hits == first.hits and r.total == first.total for r in all_runs[1:])
    if not repeatable:
        raise RuntimeError(f"{target.triple}: instruction counts differ between runs")
    log(f"{target.triple}: counts identical across {runs} runs")

    empty = [b.raw for b in first.brackets if b.phase == "empty"]
    if not empty or len(set(empty)) != 1:
        raise RuntimeError(f"{target.triple}: empty brackets differ: {empty}")
    overhead = empty[0]

    cross: dict[str, Any] | None = None
    if crosscheck:
        log(f"{target.triple}: -singlestep -d exec,nochain cross-check on the quick image")
        quick = elf_path(target.triple, "quick")
        cross = singlestep_crosscheck(target, quick, marker_address(quick), workdir)
        log(
            f"{target.triple}: cross-check {'OK' if cross['match'] else 'MISMATCH'} "
            f"({cross['brackets']} brackets, total {cross['plugin_total']})"
        )
        if not cross["match"]:
            raise RuntimeError(f"{target.triple}: plugin and singlestep log disagree: {cross}")

    profiles: dict[str, list[dict[str, Any]]] = {}
    if profile:
        for key in ("mlp", "cnn"):
            idx = [j for j, b in enumerate(first.brackets) if b.model == key and b.phase == "train"]
            log(f"{target.triple}: profiling the {key} integer training steps")
            profiles[key] = profile_brackets(
                target, full, marker, idx[0], idx[-1] + 1, len(idx), workdir
            )

    log(f"{target.triple}: sizes and soft-float check")
    arm = target.triple.startswith("thumb")
    size_full = elf_sizes(full)
    size_int = elf_sizes(int_only)
    sf_int_syms = soft_float_symbols(int_only)
    dis_int = disassemble(int_only, arm)
    sf_int_calls = soft_float_callees(dis_int)
    sf_full_syms = soft_float_symbols(full)
    dis_full = disassemble(full, arm)
    int_helpers = sorted(s for s in defined_symbols(int_only) if s.startswith(INT_HELPER_PREFIXES))
    vfp_int = dict(sorted(dis_int.vfp.items())) if target.triple.endswith("eabihf") else None
    panic_sites = dict(sorted(dis_full.panic_sites.items(), key=lambda kv: -kv[1]))
    log(
        f"{target.triple}: soft-float symbols in int-only image: {sf_int_syms or 'none'}; "
        f"in full image (control): {len(sf_full_syms)}"
    )
    check_int_image(target.triple, sf_int_syms, sf_int_calls, len(sf_full_syms), vfp_int)

    entries = []
    int_results: dict[str, list[str]] = {}
    for key in ("mlp", "cnn"):
        consts = first.models[key]
        per_phase: dict[str, list[int]] = {}
        for b in first.brackets:
            if b.model == key:
                per_phase.setdefault(b.phase, []).append(b.raw - overhead)
        infer = stats(per_phase["infer"])
        train = stats(per_phase["train"])
        infer_f32 = stats(per_phase["infer_f32"])
        train_f32 = stats(per_phase["train_f32"])
        params = consts["params"]
        trainable = params  # TrainConfig::all_trainable(): every weight and bias trains
        int_results[key] = [
            r for r in first.results if r.split()[1] == key and not r.split()[2].endswith("_f32")
        ]
        entries.append(
            {
                "target": target.triple,
                "cpu": target.cpu,
                "isa": target.isa,
                "fpu": target.fpu,
                "qemu_machine": target.board,
                "model": MODEL_NAMES[key],
                "model_shape": MODEL_SHAPES[key],
                "params": params,
                "trainable_params": trainable,
                "macs": consts["macs"],
                "ram_bytes": consts["ram_bytes"],
                "flash_bytes": consts["flash_bytes"],
                "f32_params": consts["f32_params"],
                "f32_ram_bytes": consts["f32_ram_bytes"],
                "stack_bytes": first.stacks.get(f"{key} int"),
                "stack_bytes_f32": first.stacks.get(f"{key} f32"),
                "elf_text": size_full["text"],
                "elf_data": size_full["data"],
                "elf_bss": size_full["bss"],
                "elf_scope": "whole benchmark image (both models, int8 + f32 baseline, harness)",
                "elf_int_only_text": size_int["text"],
                "elf_int_only_data": size_int["data"],
                "elf_int_only_bss": size_int["bss"],
                "instructions_infer": round(infer["mean"]),
                "instructions_train_step": round(train["mean"]),
                "instructions_infer_f32": round(infer_f32["mean"]),
                "instructions_train_step_f32": round(train_f32["mean"]),
                "instructions_per_param_train": round(train["mean"] / trainable, 2),
                "instructions_per_mac_infer": round(infer["mean"] / consts["macs"], 2),
                "f32_over_int_ratio": round(train_f32["mean"] / train["mean"], 3),
                "f32_over_int_ratio_infer": round(infer_f32["mean"] / infer["mean"], 3),
                "detail": {
                    "infer": infer,
                    "train_step": train,
                    "infer_f32": infer_f32,
                    "train_step_f32": train_f32,
                },
                "soft_float_symbols_in_int_path": sorted(set(sf_int_syms) | set(sf_int_calls)),
                "soft_float_check": {
                    "image": str(int_only.relative_to(ROOT)),
                    "method": (
                        "llvm-nm-22 symbols and llvm-objdump-22 call targets of the int-only "
                        "image (no f32 baseline; --gc-sections keeps only reachable code)"
                    ),
                    "soft_float_symbols": sf_int_syms,
                    "soft_float_call_targets": sf_int_calls,
                    "integer_helper_symbols": int_helpers,
                    "control_full_image_soft_float_symbols": len(sf_full_syms),
                    "vfp_instructions_in_int_image": vfp_int,
                },
                "profile_train_step": profiles.get(key),
                "panic_call_sites_full_image": panic_sites,
                "marker_overhead_instructions": overhead,
                "warmup_runs": 2,
                "repeatable": repeatable,
                "runs": runs,
                "singlestep_crosscheck": cross,
                "qemu_command": shlex.join(
                    [
                        *target.qemu,
                        "-kernel",
                        str(full.relative_to(ROOT)),
                        "-plugin",
                        f"tools/qemu_icount/libicount.so,marker=0x{marker:x},out=hits.txt",
                    ]
                ),
                "notes": [
                    *target.notes,
                    "Counts are executed guest instructions (exact, from the TCG plugin), not "
                    "cycles: QEMU is not cycle-accurate. Each figure is the mean over the "
                    "measured calls after 2 warm-up calls (4 inferences, 8 training steps, 4 "
                    "synthetic samples round-robin, sample s has label s mod classes); "
                    "min/max/samples are in 'detail'. The 'empty' bracket cost (marker call) is "
                    "subtracted.",
                    "Integer training-step counts vary with the data: rows whose step factor is "
                    "0 are skipped (docs/integer_training.md §5.4).",
                    "f32 baseline: src/f32ref.rs in firmware/bench-mcu (plain loops, same "
                    "shapes, softmax-CE, backward and SGD of every layer, no gradient buffers).",
                    "ram_bytes: odt-core's RAM_BYTES (the model object: weights, activations, "
                    "error buffers, trainer state). stack_bytes: measured stack high-water mark "
                    "of the model's whole benchmark block (init, inference, training), counted "
                    "from the top of the stack, so it includes the start-up and harness frames.",
                ],
            }
        )
    return entries, int_results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-build", action="store_true", help="use the existing images")
    ap.add_argument("--runs", type=int, default=2, help="QEMU runs per target (>= 1)")
    ap.add_argument("--no-crosscheck", action="store_true", help="skip the singlestep check")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-function profile")
    ap.add_argument(
        "--targets",
        nargs="+",
        default=[t.triple for t in TARGETS],
        choices=[t.triple for t in TARGETS],
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--allow-dirty", action="store_true", help=provenance.ALLOW_DIRTY_HELP)
    args = ap.parse_args(argv)
    git = provenance.record(ROOT, [args.out], args.allow_dirty)

    for tool in (
        "make",
        "gcc",
        LLVM_NM,
        LLVM_SIZE,
        LLVM_OBJDUMP,
        "qemu-system-arm",
        "qemu-system-riscv32",
    ):
        if shutil.which(tool) is None:
            log(f"missing tool: {tool} (install the packages in tools/apt-packages.txt)")
            return 1
    targets = [t for t in TARGETS if t.triple in args.targets]
    crosscheck = not args.no_crosscheck

    log("building the QEMU plugin")
    run(["make", "-C", str(PLUGIN_DIR)])
    if not args.skip_build:
        variants = "full,int-only" + (",quick" if crosscheck else "")
        log(f"building odt-core and bench-mcu ({variants}) for {', '.join(args.targets)}")
        t0 = time.monotonic()
        run([str(BUILD_SCRIPT), "--variants", variants, *args.targets], timeout=3600)
        log(f"build done in {time.monotonic() - t0:.0f} s")

    versions = {
        "qemu": first_line(["qemu-system-arm", "--version"]),
        "rustc": first_line(["/usr/bin/rustc", "--version"]),
        "lld": first_line(["ld.lld-22", "--version"]),
    }
    entries: list[dict[str, Any]] = []
    int_results: dict[str, dict[str, list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_mcu_") as tmp:
        for target in targets:
            try:
                target_entries, results = bench_target(
                    target, args.runs, crosscheck, not args.no_profile, Path(tmp)
                )
            except SoftFloatError as exc:
                log(f"FAILED: {exc}")
                log(f"nothing written to {args.out}")
                return 3
            entries.extend(target_entries)
            int_results[target.triple] = results
    # The integer arithmetic is exact: every target must print the same results (class, loss).
    reference = next(iter(int_results.values()))
    same = all(r == reference for r in int_results.values())
    log(f"integer results identical across targets: {same}")
    for e in entries:
        e["int_results_identical_across_targets"] = same
        e["versions"] = versions
        e.update(git)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(entries, indent=2) + "\n")
    log(f"wrote {args.out}")
    print(
        f"{'target':30} {'model':12} {'infer':>10} {'train':>10} {'train_f32':>11} {'f32/int':>8}"
    )
    for e in entries:
        print(
            f"{e['target']:30} {e['model']:12} {e['instructions_infer']:>10} "
            f"{e['instructions_train_step']:>10} {e['instructions_train_step_f32']:>11} "
            f"{e['f32_over_int_ratio']:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
