#!/usr/bin/env python3
"""Link benchmark: terrain_odt.link against the odt-emu co-processor emulator.

For each emulated UART speed (``--baud``, default 115200 and 921600) it measures, over a
pseudo-terminal:

* training throughput: samples per second over ``--seconds`` (default 10) of pipelined training;
* inference round trip: p50 / p99 milliseconds of ``--infer`` stop-and-wait INFER requests;
* bytes per training frame on the wire, and link efficiency
  ``samples/s × bytes per frame / (baud / 10)`` (1.0 = the UART never idles);

then fault runs (`FAULTS`): ``--fault-samples`` (default 1000) samples with 1 %, 2 % and 5 % of
the bytes corrupted (both directions) and with 2 % of the bytes dropped, counting training
frames and bytes sent, steps applied by the co-processor and steps duplicated or lost, checked
against a clean run of the same samples (equal model hash and downloaded blob), and the time of
the model download over the faulty line. The client sends whole ``TRAIN`` frames while few are
lost and fragments (``TRAIN_FRAG``, docs/protocol.md §2.1) when many are; each fault run is
compared with whole frames only (``fragments=False``, at most ``--whole-frames-cap`` seconds,
0 = skip), the stream before fragments existed. Results go to ``bench/results/link.json``.

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

from terrain_odt.link import LinkTimeout, OdtClient  # noqa: E402
from terrain_odt.link.emulator import emulator, find_emulator  # noqa: E402
from tools import provenance  # noqa: E402

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
    binary: Path,
    x: Any,
    y: Any,
    extra: Sequence[str],
    baud: int = 0,
    retries: int = 12,
    fragments: bool | None = None,
) -> dict[str, Any]:
    """Train all samples once; returns timing, counters, the model hash and blob.
    ``fragments``: `OdtClient`'s (None: fragments when whole frames are lost)."""
    with (
        emulator(binary, baud=baud, extra=extra) as emu,
        OdtClient(
            emu.url, baudrate=baud, retries=retries, connect_timeout=20, fragments=fragments
        ) as odt,
    ):
        t0 = time.perf_counter()
        futs = odt.train_many(x, y, timeout=60)
        odt.flush(timeout=600)
        elapsed = time.perf_counter() - t0
        link = odt.link_stats()  # the training stream's counters
        frag = {"fragmenting_at_end": odt.fragmenting, "frag_size_at_end": odt.frag_size}
        preds = [f.result().pred for f in futs]
        # Stop-and-wait requests on a very noisy line may need more than `retries` attempts.
        stats = _persist(odt.stats)
        info = _persist(odt.hello)
        t1 = time.perf_counter()
        blob = odt.download_model()
        download_s = time.perf_counter() - t1
    return {
        "seconds": elapsed,
        "download_s": download_s,
        "preds": preds,
        "train_steps": stats.train_steps,
        "model_hash": info.model_hash,
        "blob": blob,
        "link": link,
        **frag,
    }


def _persist(request: Any, attempts: int = 20) -> Any:
    for _ in range(attempts - 1):
        try:
            return request()
        except LinkTimeout:
            pass
    return request()


def whole_frames_run(
    binary: Path, x: Any, y: Any, extra: Sequence[str], baud: int, cap_s: float, retries: int = 12
) -> dict[str, Any]:
    """The same samples as whole TRAIN frames only (no fragments: the stream as it was before
    TRAIN_FRAG), for at most `cap_s` seconds: samples acknowledged, rate, frames and bytes."""
    with (
        emulator(binary, baud=baud, extra=extra) as emu,
        OdtClient(
            emu.url, baudrate=baud, retries=retries, connect_timeout=20, fragments=False
        ) as odt,
    ):
        t0 = time.perf_counter()
        futs = odt.train_many(x, y, timeout=60)
        while time.perf_counter() - t0 < cap_s and not all(f.done() for f in futs):
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        link = odt.link_stats()
    acked = sum(f.done() and f.exception() is None for f in futs)
    return {
        "samples": len(futs),
        "samples_acked": acked,
        "finished": acked == len(futs),
        "seconds": round(elapsed, 3),
        "samples_per_s": round(acked / elapsed, 2),
        "train_frames_per_sample": round(link.train_frames_sent / max(acked, 1), 2),
        "train_bytes_per_sample": round(link.train_bytes_sent / max(acked, 1), 1),
        "reconnects": link.reconnects,
    }


#: Fault runs: (kind, rate, share of --fault-samples, bauds); at 5 % corruption the requests
#: around the training (HELLO, STATS, the model download) are slow, so it runs fewer samples.
FAULTS = (
    ("corrupt", 0.01, 1.0, (0, 921600)),
    ("corrupt", 0.02, 1.0, (921600,)),
    ("corrupt", 0.05, 0.2, (921600,)),
    ("drop", 0.02, 1.0, (921600,)),
)


def bench_fault(
    binary: Path, n_total: int, seed: int, log: Any, whole_cap_s: float = 0.0
) -> list[dict[str, Any]]:
    """Samples through byte corruption or frame drops vs. a clean run of the same samples:
    training must apply each exactly once, and the model download must complete."""
    with emulator(binary, baud=0) as emu, OdtClient(emu.url, baudrate=0) as odt:
        info = odt.info
        assert info is not None
    out = []
    for kind, rate, share, bauds in FAULTS:
        n = max(50, round(n_total * share))
        x, y = synthetic_samples(n, info.input_len, info.classes, seed=2)
        log(f"  clean run: {n} samples ...")
        clean = train_run(binary, x, y, extra=["--seed", str(seed)])
        for baud in bauds:
            log(f"  fault run: {n} samples, {kind} rate {rate}, baud {baud or 'unthrottled'} ...")
            flag = "--corrupt-rate" if kind == "corrupt" else "--drop-rate"
            fault = train_run(binary, x, y, extra=[flag, str(rate), "--seed", str(seed)], baud=baud)
            link = fault["link"]
            sent = link.train_frames_sent
            applied = fault["train_steps"]
            same_model = (
                fault["model_hash"] == clean["model_hash"] and fault["blob"] == clean["blob"]
            )
            same_preds = fault["preds"] == clean["preds"]
            run = {
                "fault": kind,
                "rate": rate,
                "baud": baud,
                "samples": n,
                "seconds": round(fault["seconds"], 3),
                "samples_per_s": round(n / fault["seconds"], 2),
                "clean_seconds_unthrottled": round(clean["seconds"], 3),
                "train_frames_sent": sent,
                "train_bytes_sent": link.train_bytes_sent,
                "retransmitted_frames": link.retransmitted_frames,
                "frames_per_sample": round(sent / n, 2),
                "bytes_per_sample": round(link.train_bytes_sent / n, 1),
                "fragments_sent": link.frags_sent,
                "mode_switches": link.mode_switches,
                "fragmenting_at_end": fault["fragmenting_at_end"],
                "frag_size_at_end": fault["frag_size_at_end"],
                "steps_applied": applied,
                "steps_duplicated": max(0, applied - n) if same_model else None,
                "steps_lost": max(0, n - applied) if same_model else None,
                "model_matches_clean_run": same_model,
                "predictions_match_clean_run": same_preds,
                "model_download_complete": fault["blob"] == clean["blob"],
                "model_download_s": round(fault["download_s"], 3),
                "model_download_bytes_per_s": round(len(fault["blob"]) / fault["download_s"], 1),
                "duplicate_acks": link.duplicate_acks,
                "go_backs": link.go_backs,
                "timeouts": link.timeouts,
                "host_frame_errors": link.frame_errors,
                "coprocessor_frame_errors_reported": link.remote_frame_errors,
                "link": link.as_dict(),
            }
            log(
                f"    sent {sent} training frames for {n} samples "
                f"({run['frames_per_sample']}/sample, {run['bytes_per_sample']} B/sample), "
                f"applied {applied}, model matches clean run: {same_model}, "
                f"{run['samples_per_s']} samples/s; download {run['model_download_s']} s"
            )
            if whole_cap_s > 0:
                log(f"    whole frames only (at most {whole_cap_s:.0f} s) ...")
                extra = [flag, str(rate), "--seed", str(seed)]
                whole = whole_frames_run(binary, x, y, extra, baud, whole_cap_s)
                run["whole_frames_only"] = whole
                log(
                    f"    whole frames: {whole['samples_acked']}/{n} samples in "
                    f"{whole['seconds']} s = {whole['samples_per_s']}/s, "
                    f"{whole['train_frames_per_sample']} frames, "
                    f"{whole['train_bytes_per_sample']} B per sample"
                )
            out.append(run)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bauds", type=int, nargs="+", default=[115200, 921600])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--infer", type=int, default=300, help="inference round trips per baud")
    ap.add_argument("--fault-samples", type=int, default=1000)
    ap.add_argument(
        "--whole-frames-cap",
        type=float,
        default=120.0,
        help="seconds per fault run with whole TRAIN frames only, for comparison (0: skip)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-build", action="store_true", help="use the existing odt-emu binary")
    ap.add_argument("--allow-dirty", action="store_true", help=provenance.ALLOW_DIRTY_HELP)
    args = ap.parse_args(argv)
    git = provenance.record(ROOT, [args.out], args.allow_dirty)

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
    fault = bench_fault(binary, args.fault_samples, args.seed, log, args.whole_frames_cap)
    result = {
        "tool": "tools/bench_link.py",
        **git,
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
    ok = all(f["model_matches_clean_run"] and f["steps_applied"] == f["samples"] for f in fault)
    if not ok:
        log("FAULT RUN FAILED: steps lost or duplicated, or the download incomplete")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
