#!/usr/bin/env python3
"""Write the golden vectors of `firmware/odt-core/golden/` with the numpy reference.

    python tools/gen_golden.py [OUT_DIR]

Deterministic: re-running it rewrites byte-identical files. Each `<case>.json` holds an initial
blob, a training configuration, the per-step outputs of `QModel.train_step`, the counters after
training, a few inferences with the trained model, and the final blob and state CRC;
`blob_errors.json` holds invalid blobs and the error a loader must report;
`capacity_errors.json` holds blobs for a firmware whose model shape comes from the blob
(`odt_core::DynMlp` with the capacity in the file) and the error it must report (or none).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from tools import _common as common
except ModuleNotFoundError:  # run as `python tools/<name>.py`: the root is not on sys.path yet
    import _common as common  # type: ignore[no-redef]

from terrain_odt.model.blob import Capacity, LayerDesc, decode_blob, encode_blob, fix_crc
from terrain_odt.model.qnn import QModel, Storage, TrainConfig
from terrain_odt.model.quantize import (
    QParams,
    activation_qparams,
    calibrate_ranges,
    lr_to_fixed,
    quantize_model,
)

ROOT = common.ROOT
GOLDEN_DIR = ROOT / "firmware" / "odt-core" / "golden"

L = LayerDesc
ARCHS: dict[str, list[LayerDesc]] = {
    "mlp": [L.dense(12, 8, relu=True), L.dense(8, 6, relu=True), L.dense(6, 4)],
    # the shipped terrain classifier's shape (odt_core::models::TerrainMlp)
    "terrain": [L.dense(102, 64, relu=True), L.dense(64, 32, relu=True), L.dense(32, 5)],
    # another robot's model: 90 inputs, three hidden layers, 4 classes (shape from the blob)
    "mlp4": [
        L.dense(90, 48, relu=True),
        L.dense(48, 24, relu=True),
        L.dense(24, 12, relu=True),
        L.dense(12, 4),
    ],
    "conv1d": [
        L.conv1d(16, 3, 4, 3, 1, 1, relu=True),
        L.maxpool2d(1, 16, 4, 1, 2),
        L.conv1d(8, 4, 4, 3, 2, 0, relu=True),
        L.flatten(12),
        L.dense(12, 3),
    ],
    "conv2d": [
        L.conv2d(8, 8, 1, 4, 3, 3, 1, 0, relu=True),
        L.avgpool2d(6, 6, 4, 2, 2),
        L.conv2d(3, 3, 4, 6, 2, 2, 1, 0, relu=True),
        L.maxpool2d(2, 2, 6, 2, 2),
        L.flatten(6),
        L.dense(6, 4),
    ],
}


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    seed: int
    input_range: tuple[float, float]
    range_scale: float = 1.0  # < 1 shrinks the calibrated ranges: provokes forward saturations


MODELS: dict[str, ModelSpec] = {
    # input zero point -64
    "mlp": ModelSpec("mlp", 101, (-0.5, 1.5)),
    # the same float model with activation ranges at 35 %: saturates in the forward pass
    "mlp_sat": ModelSpec("mlp", 101, (-0.5, 1.5), 0.35),
    "terrain": ModelSpec("terrain", 404, (-1.0, 1.0)),
    "mlp4": ModelSpec("mlp4", 505, (-0.5, 1.5)),
    # input zero point 25: zero padding is z_x, not 0
    "conv1d": ModelSpec("conv1d", 202, (-1.2, 0.8)),
    # input zero point -128 (image-like)
    "conv2d": ModelSpec("conv2d", 303, (0.0, 1.0)),
}


def _grid(v: float) -> float:
    """Round a calibrated bound to 1/256 so that BLAS rounding differences cannot leak."""
    return float(np.round(v * 256.0) / 256.0)


def float_params(descs: Sequence[LayerDesc], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-initialised float weights (blob layout) and small biases."""
    rng = np.random.default_rng(seed)
    out = []
    for d in descs:
        if not d.has_params:
            continue
        w = rng.normal(0.0, np.sqrt(2.0 / d.fan), d.weight_shape)
        b = rng.normal(0.0, 0.1, d.out_channels)
        out.append((w, b))
    return out


def build_model(name: str, storage: Storage = "i8") -> QModel:
    spec = MODELS[name]
    descs = ARCHS[spec.arch]
    params = float_params(descs, spec.seed)
    inq = activation_qparams(*spec.input_range)
    rng = np.random.default_rng(spec.seed + 1)
    xq = rng.integers(-128, 128, (512, descs[0].in_len))
    ranges = calibrate_ranges(descs, params, inq.scale * (xq - inq.zero_point))
    outq: list[QParams] = []
    for lo, hi in ranges:
        outq.append(activation_qparams(_grid(lo * spec.range_scale), _grid(hi * spec.range_scale)))
    model_id = zlib.crc32(name.encode())
    return quantize_model(descs, params, inq, outq, model_id=model_id, storage=storage)


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    storage: Storage
    lr: float
    modes: tuple[str, ...]
    batch: int = 1
    topk_min: int | None = None
    steps: int = 32
    seed: int = 0x5EED


CASES: list[Case] = [
    Case("mlp_i8_all", "mlp", "i8", 0.005, ("all", "all", "all")),
    Case("mlp_i16_all", "mlp", "i16", 0.005, ("all", "all", "all")),
    Case("mlp_batch3", "mlp", "i8", 0.005, ("all", "all", "all"), batch=3, steps=30),
    Case("mlp_topk", "mlp", "i8", 0.01, ("all", "all", "all"), batch=2, topk_min=2),
    Case("mlp_last_layer", "mlp", "i8", 0.01, ("frozen", "frozen", "all")),
    Case("mlp_bias_only", "mlp", "i8", 0.05, ("bias", "bias", "bias")),
    Case("mlp_mixed", "mlp", "i16", 0.01, ("all", "frozen", "bias"), batch=2),
    Case("mlp_high_lr", "mlp_sat", "i8", 16.0, ("all", "all", "all"), steps=40),
    # batch 1: the shipped firmware's TerrainMlp runs these too
    Case("terrain_i8_all", "terrain", "i8", 0.005, ("all", "all", "all")),
    Case("terrain_topk", "terrain", "i8", 0.01, ("frozen", "all", "all"), topk_min=6),
    Case("mlp4_i8_all", "mlp4", "i8", 0.005, ("all", "all", "all", "all")),
    Case("mlp4_batch2_topk", "mlp4", "i8", 0.01, ("bias", "all", "all", "all"), 2, 3),
    Case("mlp4_i16_mixed", "mlp4", "i16", 0.01, ("frozen", "all", "bias", "all"), batch=2),
    Case("conv1d_i8_all", "conv1d", "i8", 0.005, ("all", "all", "all")),
    Case("conv2d_i8_all", "conv2d", "i8", 0.02, ("all", "all", "all")),
    Case("conv2d_i16_batch2", "conv2d", "i16", 0.02, ("all", "all", "all"), batch=2),
]


def hexs(data: bytes) -> str:
    return data.hex()


def run_case(case: Case) -> dict[str, Any]:
    model = build_model(case.model, case.storage)
    initial = model.to_blob()
    lr_m, lr_e = lr_to_fixed(case.lr)
    cfg = TrainConfig(lr_m, lr_e, case.modes, case.batch, case.topk_min, case.seed)
    model.set_config(cfg)
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    steps = []
    for _ in range(case.steps):
        x = rng.integers(-128, 128, model.input_len)
        label = int(rng.integers(0, model.output_len))
        r = model.train_step(x, label)
        steps.append(
            {
                "x": [int(v) for v in x],
                "label": label,
                "logits": [int(v) for v in r.logits],
                "p_q15": [int(v) for v in r.p_q15],
                "loss_q15": r.loss_q15,
                "ce_q16": r.ce_q16,
                "pred": r.pred,
            }
        )
    counters = model.counters.as_dict()
    infer = []
    for _ in range(4):
        x = rng.integers(-128, 128, model.input_len)
        logits, _ = model.forward(x)
        infer.append({"x": [int(v) for v in x], "logits": [int(v) for v in logits]})
    return {
        "name": case.name,
        "arch": ARCHS_NAME[case.model],
        "storage": case.storage,
        "blob_hex": hexs(initial),
        "config": {
            "lr_m": lr_m,
            "lr_e": lr_e,
            "modes": list(case.modes),
            "batch": case.batch,
            "topk_min": case.topk_min,
            "seed": case.seed,
        },
        "steps": steps,
        "counters": counters,
        "infer": infer,
        "final_blob_hex": hexs(model.to_blob()),
        "final_state_crc32": model.state_crc32(),
    }


ARCHS_NAME = {name: spec.arch for name, spec in MODELS.items()}


def blob_error_vectors() -> list[dict[str, Any]]:
    """Invalid blobs derived from the `mlp` model and the error each must produce."""
    good = build_model("mlp").to_blob()
    blob = decode_blob(good)
    out: list[dict[str, Any]] = []

    def add(name: str, data: bytes, error: str, layer: int | None = None) -> None:
        out.append({"name": name, "blob_hex": data.hex(), "error": error, "layer": layer})

    add("truncated_header", good[:40], "Truncated")
    add("truncated_body", good[:-1], "Truncated")
    short_len = bytearray(good)
    struct.pack_into("<I", short_len, 36, 100)  # sections run past total_len - 4
    add("total_len_too_small", fix_crc(bytes(short_len[:100])), "Truncated")
    bad_magic = bytearray(good)
    bad_magic[0:4] = b"ODTX"
    add("bad_magic", fix_crc(bytes(bad_magic)), "BadMagic")
    v2 = bytearray(good)
    struct.pack_into("<H", v2, 4, 2)
    add("version_2", fix_crc(bytes(v2)), "UnsupportedVersion")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    add("flipped_byte", bytes(flipped), "BadCrc")
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    add("flipped_crc", bytes(bad_crc), "BadCrc")
    # a valid blob of another architecture: Dense 12->9, 9->6, 6->4
    other = quantize_other_arch()
    add("arch_dense_12_9", other, "ArchMismatch", 0)
    hdr = bytearray(good)
    struct.pack_into("<I", hdr, 16, 5)  # output_len 5
    add("arch_output_len", fix_crc(bytes(hdr)), "ArchMismatch", 255)
    relu_flag = bytearray(good)
    relu_flag[40 + 24 * 2 + 1] = 1  # fused ReLU on the last layer
    add("arch_relu_flag", fix_crc(bytes(relu_flag)), "ArchMismatch", 2)
    sec = blob.params[1]
    assert sec is not None
    sec.m = sec.m.copy()
    sec.m[3] = (1 << 30) - 1
    add("bad_quant_m", encode_blob(blob), "BadQuant", 1)
    blob = decode_blob(good)
    sec = blob.params[0]
    assert sec is not None
    sec.s = sec.s.copy()
    sec.s[0] = 31
    add("bad_quant_s", encode_blob(blob), "BadQuant", 0)
    blob = decode_blob(good)
    sec = blob.params[2]
    assert sec is not None
    sec.um = sec.um.copy()
    sec.um[1] = (1 << 14) - 1
    add("bad_quant_um", encode_blob(blob), "BadQuant", 2)
    blob = decode_blob(good)
    blob.softmax_a = 0
    add("softmax_a_zero", encode_blob(blob), "BadQuant", 255)
    cut = bytearray(good[:-12])  # the last section loses 8 bytes of weights
    struct.pack_into("<I", cut, 36, len(cut) + 4)
    add("section_truncated", fix_crc(bytes(cut) + bytes(4)), "Truncated")
    gap = bytearray(good[:-4] + bytes(4))
    struct.pack_into("<I", gap, 36, len(good) + 4)  # 4 unused bytes before the CRC
    add("gap_before_crc", fix_crc(bytes(gap) + bytes(4)), "TrailingBytes")
    add("trailing_bytes", good + b"\x00", "TrailingBytes")
    return out


#: The capacity `capacity_errors.json` is checked against
#: (odt_core::DynMlp<100, 48, 8, 3, 8000, _>): holds `mlp4` (90-48-24-12-4) and `mlp`, not
#: `terrain` (102 inputs).
TEST_CAPACITY = Capacity(max_inputs=100, max_width=48, max_classes=8, max_dense=4, max_weights=8000)


def quantized(descs: Sequence[LayerDesc], seed: int) -> bytes:
    """A valid blob of any architecture (random float weights, fixed activation ranges)."""
    params = float_params(descs, seed)
    inq = activation_qparams(-0.5, 1.5)
    outq = [activation_qparams(0.0, 4.0) for _ in descs if _.has_params]
    outq[-1] = activation_qparams(-8, 8)
    return quantize_model(descs, params, inq, outq, model_id=seed).to_blob()


def capacity_error_vectors() -> dict[str, Any]:
    """Blobs for a firmware whose model shape comes from the blob, and its verdict."""
    cases: list[dict[str, Any]] = []

    def add(name: str, data: bytes, error: str | None, **detail: int | str) -> None:
        cases.append({"name": name, "blob_hex": data.hex(), "error": error, **detail})

    mlp4 = build_model("mlp4").to_blob()
    add("mlp4_fits", mlp4, None)
    add("mlp_fits", build_model("mlp").to_blob(), None)
    add("one_layer_fits", quantized([L.dense(100, 8)], 11), None)
    add("width_48_fits", quantized([L.dense(20, 48, relu=True), L.dense(48, 8)], 12), None)
    add(
        "terrain_inputs",
        build_model("terrain").to_blob(),
        "OverCapacity",
        limit="Inputs",
        got=102,
        max=100,
    )
    wide = [L.dense(20, 50, relu=True), L.dense(50, 4)]
    add("too_wide", quantized(wide, 13), "OverCapacity", limit="Width", got=50, max=48)
    classes = [L.dense(20, 16, relu=True), L.dense(16, 9)]
    add("too_many_classes", quantized(classes, 14), "OverCapacity", limit="Classes", got=9, max=8)
    deep = [L.dense(10, 8, relu=True)] + [L.dense(8, 8, relu=True)] * 3 + [L.dense(8, 4)]
    add("too_deep", quantized(deep, 15), "OverCapacity", limit="Depth", got=5, max=4)
    heavy = [L.dense(100, 48, relu=True)] + [L.dense(48, 48, relu=True)] * 2 + [L.dense(48, 8)]
    add(
        "too_many_weights",
        quantized(heavy, 16),
        "OverCapacity",
        limit="Weights",
        got=9792,
        max=8000,
    )
    # the first refused limit in check order: depth before inputs
    deep_wide = [L.dense(200, 8, relu=True)] + [L.dense(8, 8, relu=True)] * 3 + [L.dense(8, 4)]
    add(
        "depth_before_inputs", quantized(deep_wide, 17), "OverCapacity", limit="Depth", got=5, max=4
    )
    add("conv1d", build_model("conv1d").to_blob(), "UnsupportedLayer", layer=0, kind=2)
    relu = [L.dense(12, 8), L.relu_layer(8), L.dense(8, 4)]
    add("relu_layer", quantized(relu, 18), "UnsupportedLayer", layer=1, kind=6)
    hdr = bytearray(mlp4)
    struct.pack_into("<I", hdr, 12, 91)  # input_len 91, first layer takes 90
    add("header_input_len", fix_crc(bytes(hdr)), "ArchMismatch", layer=255)
    hdr = bytearray(mlp4)
    struct.pack_into("<I", hdr, 16, 5)  # output_len 5, last layer gives 4
    add("header_output_len", fix_crc(bytes(hdr)), "ArchMismatch", layer=255)
    flags = bytearray(mlp4)
    flags[40 + 24 * 2 + 1] = 2  # undefined flag bit on layer 2
    add("bad_flags", fix_crc(bytes(flags)), "ArchMismatch", layer=2)
    blob = decode_blob(mlp4)
    sec = blob.params[3]
    assert sec is not None
    sec.ubm = sec.ubm.copy()
    sec.ubm[2] = 7
    add("bad_quant_last_layer", encode_blob(blob), "BadQuant", layer=3)
    flipped = bytearray(build_model("terrain").to_blob())
    flipped[500] ^= 4
    add("corrupt_terrain", bytes(flipped), "BadCrc")
    cap = TEST_CAPACITY
    return {
        "capacity": {
            "max_inputs": cap.max_inputs,
            "max_width": cap.max_width,
            "max_classes": cap.max_classes,
            "max_dense": cap.max_dense,
            "max_weights": cap.max_weights,
        },
        "cases": cases,
    }


def quantize_other_arch() -> bytes:
    descs = [L.dense(12, 9, relu=True), L.dense(9, 6, relu=True), L.dense(6, 4)]
    params = float_params(descs, 7)
    inq = activation_qparams(-0.5, 1.5)
    outq = [activation_qparams(0.0, 4.0), activation_qparams(0.0, 4.0), activation_qparams(-8, 8)]
    return quantize_model(descs, params, inq, outq).to_blob()


def dumps(obj: Any) -> str:
    """JSON with one top-level key per line and one list element per line for long lists."""
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        inner = ",\n".join("  " + json.dumps(o, separators=(",", ":")) for o in obj)
        return "[\n" + inner + "\n ]"
    return json.dumps(obj, separators=(",", ":"))


def write_json(path: Path, obj: Any) -> None:
    if isinstance(obj, dict):
        body = ",\n".join(f" {json.dumps(k)}: {dumps(v)}" for k, v in obj.items())
        text = "{\n" + body + "\n}\n"
    else:
        text = dumps(obj) + "\n"
    assert json.loads(text) == obj
    common.write_text(path, text)


def generate(out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case in CASES:
        data = run_case(case)
        path = out_dir / f"{case.name}.json"
        write_json(path, data)
        written.append(path)
        log(f"{path.name}: {data['counters']}")
    path = out_dir / "blob_errors.json"
    write_json(path, blob_error_vectors())
    written.append(path)
    log(f"{path.name}: written")
    path = out_dir / "capacity_errors.json"
    write_json(path, capacity_error_vectors())
    written.append(path)
    log(f"{path.name}: written")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    # Deterministic output, not a recorded result: no provenance, hence no --allow-dirty.
    ap = common.parser(__doc__, allow_dirty=False)
    ap.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=GOLDEN_DIR,
        metavar="OUT_DIR",
        help="(default: %(default)s)",
    )
    generate(ap.parse_args(argv).out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
