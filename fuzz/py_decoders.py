"""atheris targets for the Python decoders of outside bytes (see fuzz/README.md).

    python fuzz/py_decoders.py TARGET [libFuzzer flags, e.g. -max_total_time=20]

TARGET: frames | cdr | blob | sidecar. Each call must either succeed or raise the API's own
error type (`FrameError`s are returned, not raised, by the frame decoder); anything else is a
crash libFuzzer reports with the input.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from terrain_odt.data.cdr import CdrError, imu_sample
    from terrain_odt.link import FrameDecoder
    from terrain_odt.model.blob import BlobError, decode_blob
    from terrain_odt.model.sidecar import ModelFileError, load_model_files

ROOT = Path(__file__).resolve().parent.parent
SIDECAR = json.loads((ROOT / "models" / "borealtc_imu_mlp.json").read_text())
TMP = Path(tempfile.mkdtemp(prefix="fuzz-sidecar-"))


def frames(data: bytes) -> None:
    dec = FrameDecoder(input_len=102)
    # Split the input in two feeds: frames across read boundaries.
    cut = data[0] if data else 0
    for part in (data[1 : 1 + cut], data[1 + cut :]):
        for item in dec.feed(part):
            assert item is not None


def cdr(data: bytes) -> None:
    with contextlib.suppress(CdrError):
        imu_sample(data)


def blob(data: bytes) -> None:
    with contextlib.suppress(BlobError):
        decode_blob(data)


def _mutate(obj: object, fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if fdp.ConsumeProbability() < 0.05:
                continue  # drop a field
            out[k] = _mutate(v, fdp, depth + 1)
        return out
    if isinstance(obj, list):
        if obj and fdp.ConsumeProbability() < 0.05:
            return obj[: fdp.ConsumeIntInRange(0, len(obj))]
        return [_mutate(v, fdp, depth + 1) for v in obj[:200]]
    if fdp.ConsumeProbability() < 0.1:
        choice = fdp.ConsumeIntInRange(0, 6)
        return [
            fdp.ConsumeUnicodeNoSurrogates(8),
            fdp.ConsumeInt(4),
            fdp.ConsumeRegularFloat(),
            float("nan"),
            None,
            [],
            {},
        ][choice]
    return obj


def sidecar(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    side = _mutate(SIDECAR, fdp)
    path = TMP / "m.json"
    path.write_text(json.dumps(side, allow_nan=True))
    with contextlib.suppress(ModelFileError):
        load_model_files(path)


TARGETS = {"frames": frames, "cdr": cdr, "blob": blob, "sidecar": sidecar}


def main() -> None:
    name = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in TARGETS else "frames"
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
