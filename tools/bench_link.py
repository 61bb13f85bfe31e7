#!/usr/bin/env python3
"""Link benchmark: terrain_odt.link against the odt-emu co-processor emulator.

For each emulated UART speed (``--baud``, default 115200 and 921600) it measures, over a
pseudo-terminal:

* training throughput: samples per second over ``--seconds`` (default 10) of pipelined training;
* inference round trip: p50 / p99 milliseconds of ``--infer`` stop-and-wait INFER requests;
* bytes per training frame on the wire, and link efficiency
  ``samples/s × bytes per frame / (baud / 10)`` (1.0 = the UART never idles);

then fault runs: ``--fault-samples`` (default 1000) samples with 1 % of the bytes corrupted
(``--corrupt-rate 0.01``, both directions; unthrottled and at 921600 baud, ``--fault-bauds``),
counting training frames sent, steps
applied by the co-processor and steps duplicated or lost, checked against a clean run of the same
samples (equal model hash and downloaded blob). Results go to ``bench/results/link.json``.

Usage: ``python3 tools/bench_link.py [--seconds S] [--bauds B ...] [--out PATH] [--no-build]``
Python standard library + pyserial + numpy (+ terrain_odt.link).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from terrain_odt.emulator import emulator, find_emulator  # noqa: E402
from terrain_odt.link import OdtClient  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "link.json"


# ---------------------------------------------------------------------------------------------
# Workload


def synthetic_samples(n: int, input_len: int, classes: int, seed: int = 0) -> tuple[Any, Any]:
    """Deterministic int8 features with a learnable class structure, and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centers = rng.integers(-60, 60, size=(classes, input_len))
    noise = rng.normal(0, 25, size=(n, input_len))
    x = np.clip(centers[labels] + noise, -128, 127).astype(np.int8)
    return x, labels


def bench_baud(binary: Path, baud: int, seconds: float, n_infer: int, log: Any) -> dict[str, Any]:
    """Throughput, inference RTT and efficiency at one emulated baud rate."""
    with emulator(binary, baud=baud) as emu, OdtClient(emu.url, baudrate=baud) as odt:
        info = odt.info
        assert info is not None
        x, y = synthetic_samples(4096, info.input_len, info.classes, seed=1)
        # Warm-up (first frames, page faults), then the timed run.
        odt.train_many(x[:32], y[:32])
        odt.flush()
        log(f"  {baud} baud: training for {seconds:.0f} s ...")
        n = 0
        t0 = time.perf_counter()
        last = t0
        while time.perf_counter() - t0 < seconds:
            i = n % len(x)
            k = min(64, len(x) - i)
            odt.train_many(x[i : i + k], y[i : i + k], timeout=60)
            n += k
            # Keep the queue short so the measurement ends close to `seconds`.
            while odt.pending_samples > 48:
                time.sleep(0.002)
            now = time.perf_counter()
            if now - last >= 2.0:
                log(f"    {now - t0:4.1f} s: {n - odt.pending_samples} samples acknowledged")
                last = now
        odt.flush(timeout=120)
        elapsed = time.perf_counter() - t0
        frame_bytes = odt.train_frame_bytes
        sps = n / elapsed
        eff = sps * frame_bytes / (baud / 10) if baud else None
        log(f"    {n} samples in {elapsed:.2f} s = {sps:.1f}/s, {frame_bytes} B/frame, eff {eff}")

        log(f"  {baud} baud: {n_infer} inferences ...")
        rtts = []
        for j in range(n_infer):
            t = time.perf_counter()
            odt.infer(x[j % len(x)])
            rtts.append(time.perf_counter() - t)
        rtt_ms = np.asarray(rtts) * 1e3
        p50, p99 = float(np.percentile(rtt_ms, 50)), float(np.percentile(rtt_ms, 99))
        log(f"    inference round trip p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        stats = odt.stats()
        link = odt.link_stats()
        return {
            "baud": baud,
            "train": {
                "samples": n,
                "seconds": round(elapsed, 3),
                "samples_per_s": round(sps, 2),
                "bytes_per_frame": frame_bytes,
                "link_efficiency": round(eff, 4) if eff is not None else None,
                "uart_limit_samples_per_s": round(baud / 10 / frame_bytes, 2) if baud else None,
                "coprocessor_train_steps": stats.train_steps,
                "train_ack_rtt_p50_ms": _r(link.train_rtt_p50_ms),
                "train_ack_rtt_p99_ms": _r(link.train_rtt_p99_ms),
            },
            "infer": {
                "n": n_infer,
                "rtt_p50_ms": round(p50, 3),
                "rtt_p99_ms": round(p99, 3),
                "request_bytes": len(_infer_frame(info.input_len)),
            },
            "link": link.as_dict(),
        }


def _infer_frame(input_len: int) -> bytes:
    from terrain_odt.link import Infer, encode_frame

    return encode_frame(Infer(bytes(range(1, input_len + 1))), 1)


def _r(v: float) -> float | None:
    return None if v != v else round(v, 3)


def train_run(
    binary: Path, x: Any, y: Any, extra: Sequence[str], baud: int = 0, retries: int = 12
) -> dict[str, Any]:
    """Train all samples once; returns timing, counters, the model hash and blob."""
    with (
        emulator(binary, baud=baud, extra=extra) as emu,
        OdtClient(emu.url, baudrate=baud, retries=retries, connect_timeout=20) as odt,
    ):
        t0 = time.perf_counter()
        futs = odt.train_many(x, y, timeout=60)
        odt.flush(timeout=600)
        elapsed = time.perf_counter() - t0
        preds = [f.result().pred for f in futs]
        stats = odt.stats()
        info = odt.hello()
        blob = odt.download_model()
        link = odt.link_stats()
    return {
        "seconds": elapsed,
        "preds": preds,
        "train_steps": stats.train_steps,
        "model_hash": info.model_hash,
        "blob": blob,
        "link": link,
    }


def bench_fault(
    binary: Path, n: int, rate: float, seed: int, bauds: Sequence[int], log: Any
) -> list[dict[str, Any]]:
    """``n`` samples through ``rate`` byte corruption vs. a clean run of the same samples."""
    with emulator(binary, baud=0) as emu, OdtClient(emu.url, baudrate=0) as odt:
        info = odt.info
        assert info is not None
    x, y = synthetic_samples(n, info.input_len, info.classes, seed=2)
    log(f"  clean run: {n} samples ...")
    clean = train_run(binary, x, y, extra=["--seed", str(seed)])
    out = []
    for baud in bauds:
        log(f"  fault run: {n} samples, corrupt rate {rate}, baud {baud or 'unthrottled'} ...")
        fault = train_run(
            binary, x, y, extra=["--corrupt-rate", str(rate), "--seed", str(seed)], baud=baud
        )
        link = fault["link"]
        sent = n + link.retransmitted_frames
        applied = fault["train_steps"]
        same_model = fault["model_hash"] == clean["model_hash"] and fault["blob"] == clean["blob"]
        same_preds = fault["preds"] == clean["preds"]
        run = {
            "corrupt_rate": rate,
            "baud": baud,
            "samples": n,
            "seconds": round(fault["seconds"], 3),
            "samples_per_s": round(n / fault["seconds"], 2),
            "clean_seconds_unthrottled": round(clean["seconds"], 3),
            "train_frames_sent": sent,
            "retransmitted_frames": link.retransmitted_frames,
            "frames_per_sample": round(sent / n, 2),
            "steps_applied": applied,
            "steps_duplicated": max(0, applied - n) if same_model else None,
            "steps_lost": max(0, n - applied) if same_model else None,
            "model_matches_clean_run": same_model,
            "predictions_match_clean_run": same_preds,
            "duplicate_acks": link.duplicate_acks,
            "go_backs": link.go_backs,
            "timeouts": link.timeouts,
            "host_frame_errors": link.frame_errors,
            "coprocessor_frame_errors_reported": link.remote_frame_errors,
            "link": link.as_dict(),
        }
        log(
            f"    sent {sent} training frames for {n} samples ({run['frames_per_sample']}/sample)"
            f", applied {applied}, model matches clean run: {same_model}, predictions match: "
            f"{same_preds}, {fault['seconds']:.1f} s"
        )
        out.append(run)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bauds", type=int, nargs="+", default=[115200, 921600])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--infer", type=int, default=300, help="inference round trips per baud")
    ap.add_argument("--fault-samples", type=int, default=1000)
    ap.add_argument("--corrupt-rate", type=float, default=0.01)
    ap.add_argument(
        "--fault-bauds", type=int, nargs="+", default=[0, 921600], help="0 = unthrottled"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-build", action="store_true", help="use the existing odt-emu binary")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    binary = find_emulator(build=not args.no_build, log=log)
    if binary is None:
        print("odt-emu not found and cargo unavailable", file=sys.stderr)
        return 2
    log(f"==> link benchmark with {binary.relative_to(ROOT)}")
    runs = []
    for baud in args.bauds:
        runs.append(bench_baud(binary, baud, args.seconds, args.infer, log))
    log("==> fault run")
    fault = bench_fault(
        binary, args.fault_samples, args.corrupt_rate, args.seed, args.fault_bauds, log
    )
    result = {
        "tool": "tools/bench_link.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "transport": "pseudo-terminal, emulated UART timing (odt-emu --baud)",
        "window": 8,
        "runs": runs,
        "fault": fault,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"==> wrote {args.out}")
    ok = all(
        f["model_matches_clean_run"] and f["steps_applied"] == args.fault_samples for f in fault
    )
    if not ok:
        log("FAULT RUN FAILED: steps lost or duplicated")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
