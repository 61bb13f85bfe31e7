"""The model sidecar at run time: read it, check every field the host uses, quantize inputs.

`terrain-odt convert` (`terrain_odt.model.toolbox`) writes a JSON sidecar next to each model blob;
the bridge only reads it, with this module (no training code: numpy only). Each value the host
relies on is checked when the file is loaded, and a bad one is refused with a `ModelFileError`
naming the field: a wrong input scale or zero point would quantize every window wrongly, and a
duplicated class name would make labels ambiguous, silently.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..pipeline.finetune import SourceWindows, SourceWindowsError, load_source_windows
from ..signals.features import FeatureConfig
from .blob import BlobError, decode_blob

__all__ = [
    "SIDECAR_FORMAT",
    "ModelFileError",
    "ModelFiles",
    "load_model_files",
    "quantize_features",
    "quantize_with_sidecar",
]

SIDECAR_FORMAT = "terrain_odt.model_sidecar"


class ModelFileError(ValueError):
    """A model sidecar or blob is missing, malformed or inconsistent (the message says which)."""


def quantize_features(
    x: np.ndarray,
    input_scale: float,
    input_zero_point: int,
    mean: np.ndarray | Sequence[float] | None = None,
    scale: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """Raw features → the blob's int8 input:
    `clamp(floor(((x − mean) / scale) / input_scale + 0.5) + zero_point, −128, 127)`."""
    x = np.asarray(x, dtype=np.float64)
    if mean is not None and scale is not None:
        x = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64)
    v = np.floor(x / float(input_scale) + 0.5) + int(input_zero_point)
    return np.clip(v, -128, 127).astype(np.int8)


def quantize_with_sidecar(x: np.ndarray, sidecar: dict[str, Any]) -> np.ndarray:
    """Raw features → int8 blob input, with the parameters a sidecar records."""
    inp = sidecar["input"]
    std = inp.get("standardization") or {}
    return quantize_features(x, inp["scale"], inp["zero_point"], std.get("mean"), std.get("scale"))


@dataclass(frozen=True)
class ModelFiles:
    """What the host needs to know about the co-processor's model (from its sidecar)."""

    sidecar: dict[str, Any]
    model_id: int
    input_len: int
    class_names: tuple[str, ...]
    param_layers: int
    blob: bytes | None = None
    #: Pretraining windows shipped with the model (`finetune.SourceWindows`), if any.
    source: SourceWindows | None = None
    #: What its features are (`FeatureConfig.describe()` of the sidecar's `features`).
    feature_description: str | None = None

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Raw features (n, input_len) → int8 model input, as recorded in the sidecar."""
        return quantize_with_sidecar(np.atleast_2d(np.asarray(x, dtype=np.float64)), self.sidecar)

    def class_index(self, name: str) -> int | None:
        """Index of a class name (case-insensitive), `None` if unknown."""
        low = name.strip().lower()
        for i, n in enumerate(self.class_names):
            if n.lower() == low:
                return i
        return None


def _field(side: dict[str, Any], path: str) -> Any:
    cur: Any = side
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ModelFileError(f"field '{path}' is missing")
        cur = cur[part]
    return cur


def _int(side: dict[str, Any], path: str, lo: int, hi: int) -> int:
    v = _field(side, path)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ModelFileError(f"field '{path}' must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _floats(v: Any, path: str, n: int, positive: bool = False) -> None:
    if not isinstance(v, list) or len(v) != n:
        got = f"{len(v)} values" if isinstance(v, list) else repr(type(v).__name__)
        raise ModelFileError(f"field '{path}' must be a list of {n} numbers, got {got}")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise ModelFileError(f"field '{path}[{i}]' must be a finite number, got {x!r}")
        if positive and not x > 0:
            raise ModelFileError(f"field '{path}[{i}]' must be > 0, got {x!r}")


def validate_sidecar(side: Any) -> tuple[int, int, tuple[str, ...], int]:
    """Check the fields the host uses; (model id, input length, class names, parameter
    layers). `ModelFileError` naming the first bad field."""
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        raise ModelFileError("not a terrain_odt model sidecar (format tag missing)")
    model_id = _int(side, "model_id", 0, 0xFFFF_FFFF)
    input_len = _int(side, "input_len", 1, 65535)
    output_len = _int(side, "output_len", 2, 255)
    names = _field(side, "classes.names")
    if isinstance(names, str) or not isinstance(names, list):
        raise ModelFileError(f"field 'classes.names' must be a list of names, got {names!r}")
    if len(names) != output_len:
        raise ModelFileError(
            f"field 'classes.names' has {len(names)} names for {output_len} outputs"
        )
    seen: dict[str, str] = {}
    for n in names:
        if not isinstance(n, str) or not n.strip():
            raise ModelFileError(f"field 'classes.names': {n!r} is not a class name")
        key = n.strip().lower()
        if key in seen:
            raise ModelFileError(
                f"field 'classes.names': {seen[key]!r} and {n!r} name the same class"
            )
        seen[key] = n
    scale = _field(side, "input.scale")
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise ModelFileError(f"field 'input.scale' must be a finite number > 0, got {scale!r}")
    _int(side, "input.zero_point", -128, 127)
    std = side["input"].get("standardization")
    if std is not None:
        if not isinstance(std, dict):
            raise ModelFileError("field 'input.standardization' must be an object or null")
        _floats(std.get("mean"), "input.standardization.mean", input_len)
        _floats(std.get("scale"), "input.standardization.scale", input_len, positive=True)
    crc = side.get("blob_crc32")
    if crc is not None:
        try:
            int(str(crc), 16)
        except ValueError:
            raise ModelFileError(f"field 'blob_crc32' must be a hex CRC-32, got {crc!r}") from None
    layers = _field(side, "layers")
    if not isinstance(layers, list) or not all(isinstance(r, dict) for r in layers):
        raise ModelFileError("field 'layers' must be a list of layer objects")
    return model_id, input_len, tuple(n for n in names), sum("params" in r for r in layers)


def load_model_files(sidecar_path: str | Path, blob_path: str | Path | None = None) -> ModelFiles:
    """Read and cross-check a sidecar (and optionally its blob); `ModelFileError` if bad."""
    sp = Path(sidecar_path)
    if not str(sidecar_path):
        raise ModelFileError("no model sidecar given (parameter model_sidecar)")
    try:
        side = json.loads(sp.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"model sidecar {sp} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model sidecar {sp} is not readable JSON: {exc}") from None
    try:
        model_id, input_len, names, param_layers = validate_sidecar(side)
    except ModelFileError as exc:
        raise ModelFileError(f"model sidecar {sp}: {exc}") from None
    blob = None
    if blob_path:
        bp = Path(blob_path)
        try:
            blob = bp.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"model blob {bp}: {exc}") from None
        try:
            b = decode_blob(blob)
        except BlobError as exc:
            raise ModelFileError(f"model blob {bp} is malformed: {exc}") from None
        if b.model_id != model_id or b.input_len != input_len:
            raise ModelFileError(
                f"model blob {bp} (id 0x{b.model_id:08x}, {b.input_len} inputs) does not match "
                f"sidecar {sp} (id 0x{model_id:08x}, {input_len} inputs)"
            )
        crc = side.get("blob_crc32")
        if crc is not None and int(str(crc), 16) != zlib.crc32(blob):
            raise ModelFileError(f"model blob {bp} is not the blob sidecar {sp} describes (CRC)")
    source = None
    sw = side.get("source_windows")
    if sw:
        try:
            path = sp.parent / str(sw["file"])
            crc = int(str(sw["crc32"]), 16) if sw.get("crc32") is not None else None
            source = load_source_windows(path, input_len, len(names), crc)
        except (KeyError, TypeError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, SourceWindowsError) else f"field {exc}"
            raise ModelFileError(f"model sidecar {sp}: source_windows: {detail}") from None
    desc = None
    if side.get("features") is not None:
        try:
            desc = FeatureConfig.describe_dict(side["features"])
        except ValueError as exc:
            raise ModelFileError(f"model sidecar {sp}: features: {exc}") from None
        n = side["features"].get("n_features")
        if n is not None and n != input_len:
            raise ModelFileError(
                f"model sidecar {sp}: features: {n} features for a model of {input_len} inputs"
            )
    return ModelFiles(side, model_id, input_len, names, param_layers, blob, source, desc)
