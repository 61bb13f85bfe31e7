"""The sidecar loader refuses every bad value the host would use, naming the field (issue 12):
a CRC that is not hex, an input scale of 0, negative, NaN or infinite, a zero point out of
int8, duplicate class names, class names as one string, a standardisation of the wrong length,
a feature configuration that does not fit the model."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from terrain_odt.model.sidecar import ModelFileError, load_model_files

ROOT = Path(__file__).resolve().parent.parent
SIDECAR = ROOT / "models" / "borealtc_imu_mlp.json"
BLOB = SIDECAR.with_suffix(".odtm")


def with_change(tmp: Path, change: Any) -> Path:
    side = json.loads(SIDECAR.read_text())
    change(side)
    for f in SIDECAR.parent.glob(SIDECAR.stem + ".*"):
        if f.suffix != ".json":
            shutil.copy(f, tmp / f.name)
    out = tmp / SIDECAR.name
    # allow_nan: the point is to write what a broken tool could write
    out.write_text(json.dumps(side, allow_nan=True))
    return out


def setter(path: str, value: Any) -> Any:
    def f(side: dict) -> None:
        *head, last = path.split(".")
        cur = side
        for k in head:
            cur = cur[k]
        cur[last] = copy.deepcopy(value)

    return f


CASES = [
    ("blob_crc32", "zz", "blob_crc32"),
    ("input.scale", 0.0, "input.scale"),
    ("input.scale", -0.1, "input.scale"),
    ("input.scale", math.nan, "input.scale"),
    ("input.scale", math.inf, "input.scale"),
    ("input.scale", "0.1", "input.scale"),
    ("input.zero_point", 128, "input.zero_point"),
    ("input.zero_point", -129, "input.zero_point"),
    ("input.zero_point", 1.5, "input.zero_point"),
    ("classes.names", ["ASPHALT", "ICE", "ice", "SNOW", "X"], "name the same class"),
    ("classes.names", "ASPHALT,FLOORING,ICE,SANDY_LOAM,SNOW", "must be a list of names"),
    ("classes.names", ["A", "B"], "2 names for 5 outputs"),
    ("classes.names", ["A", "B", "", "D", "E"], "is not a class name"),
    ("input.standardization.mean", [0.0] * 10, "input.standardization.mean"),
    ("input.standardization.scale", [0.0] * 102, "input.standardization.scale[0]"),
    ("model_id", -1, "model_id"),
    ("input_len", "102", "input_len"),
    ("layers", "dense", "layers"),
    ("features", {"sample_rate_hz": 100.0}, "features"),
]


@pytest.mark.parametrize(("field", "value", "message"), CASES)
def test_bad_values_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    path = with_change(tmp_path, setter(field, value))
    with pytest.raises(ModelFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_model_files(path, tmp_path / BLOB.name)


def test_missing_fields_and_wrong_feature_count(tmp_path: Path) -> None:
    path = with_change(tmp_path, lambda s: s["input"].pop("zero_point"))
    with pytest.raises(ModelFileError, match=r"'input\.zero_point' is missing"):
        load_model_files(path)
    path = with_change(tmp_path, lambda s: s["features"].update(n_features=110))
    with pytest.raises(ModelFileError, match="110 features for a model of 102 inputs"):
        load_model_files(path)


def test_the_shipped_sidecars_load(tmp_path: Path) -> None:
    for side in sorted((ROOT / "models").glob("*.json")):
        m = load_model_files(side, side.with_suffix(".odtm"))
        assert m.feature_description and m.source is not None
