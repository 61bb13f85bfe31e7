"""The layouts of the graph's two `std_msgs/Float64MultiArray` topics, in one place.

* `/terrain/features` (`imu_features` → `odt_bridge`, `graph.IMU_FEATURES`): one feature window,
  `data = [t_start, t_end, f_0, ..., f_{n-1}]`, `layout.data_offset = 2` (`STAMP_ELEMENTS`), one
  dimension of size `n` labelled `"features"` or `"features; <description>"`, the description
  being `FeatureConfig.describe()` (what the features are; the bridge checks it against the
  model's sidecar).
* `/terrain/prediction_window` (`odt_bridge` → replay and tools, `graph.ODT_BRIDGE`): one answer
  with its window, `data` = the six `WINDOW_FIELDS`, the answer kind coded by `KIND_CODES`.

Plain Python, no ROS at import: `pack_features` / `parse_features` work on the message's fields
(the deterministic evaluation uses them without a message); the parsers take anything shaped like
a `Float64MultiArray` (`.layout.data_offset`, `.layout.dim[i].label`, `.data`); only the two
`*_message` builders import `std_msgs`, when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from std_msgs.msg import Float64MultiArray

    from ..pipeline.bridge import Outcome
    from .features import WindowEvent

FEATURES_TOPIC = "/terrain/features"
#: Leading elements of a features message: window start and end time (s).
STAMP_ELEMENTS = 2
#: Label of a features message's dimension (before the optional "; <description>").
FEATURES_LABEL = "features"
_DESC_SEP = "; "

PREDICTION_WINDOW_TOPIC = "/terrain/prediction_window"
#: Codes of the answer kind in a /terrain/prediction_window message (its element 4).
KIND_CODES = {"infer": 0.0, "train": 1.0, "heldout": 2.0}
WINDOW_FIELDS = ("t_start", "t_end", "class_index", "confidence", "kind", "label_index")


# ---------------------------------------------------------------------------------------------
# /terrain/features


@dataclass(frozen=True)
class PackedFeatures:
    """The fields of a /terrain/features message."""

    data: list[float]
    data_offset: int
    label: str
    size: int


def features_label(description: str = "") -> str:
    """The dimension label that carries `description` (none when it is empty)."""
    return f"{FEATURES_LABEL}{_DESC_SEP}{description}" if description else FEATURES_LABEL


def description_from_label(label: str) -> str | None:
    """The description in a dimension label (None: the sender did not say)."""
    _, sep, desc = label.partition(_DESC_SEP)
    return desc if sep else None


def pack_features(
    t_start: float, t_end: float, features: Any, description: str = ""
) -> PackedFeatures:
    """A window's message fields; `features` is a 1-D numpy array (or a sequence of floats)."""
    values = features.tolist() if hasattr(features, "tolist") else list(features)
    return PackedFeatures(
        data=[t_start, t_end, *values],
        data_offset=STAMP_ELEMENTS,
        label=features_label(description),
        size=len(values),
    )


def parse_features(data: Sequence[float], data_offset: int) -> tuple[float, float, list[float]]:
    """(t_start, t_end, features) from a features message's `data` and `layout.data_offset`;
    `ValueError` if malformed."""
    off = int(data_offset)
    if off != STAMP_ELEMENTS or len(data) <= off:
        raise ValueError(
            f"features message with data_offset {off} and {len(data)} values "
            f"(expected offset {STAMP_ELEMENTS} and at least one feature)"
        )
    return float(data[0]), float(data[1]), list(data[off:])


def features_message(ev: WindowEvent, description: str = "") -> Float64MultiArray:
    """A window as published on /terrain/features (see `graph.IMU_FEATURES`); `description`
    (`FeatureConfig.describe()`) says what the features are."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    assert ev.features is not None
    p = pack_features(ev.t_start, ev.t_end, ev.features, description)
    msg = Float64MultiArray()
    msg.layout.data_offset = p.data_offset
    msg.layout.dim = [MultiArrayDimension(label=p.label, size=p.size, stride=p.size)]
    msg.data = p.data
    return msg


def features_description(msg: Any) -> str | None:
    """What the features of a /terrain/features message are (None: the sender did not say)."""
    dims = msg.layout.dim
    if not dims:
        return None
    return description_from_label(dims[0].label)


def parse_features_message(msg: Any) -> tuple[float, float, list[float]]:
    """(t_start, t_end, features) of a /terrain/features message; `ValueError` if malformed."""
    return parse_features(msg.data, msg.layout.data_offset)


# ---------------------------------------------------------------------------------------------
# /terrain/prediction_window


def prediction_window_data(o: Outcome) -> list[float]:
    """The `WINDOW_FIELDS` of one answer, in order (-1 for what it lacks, NaN confidence)."""
    return [
        float(o.t_start),
        float(o.t_end),
        float(o.predicted) if o.predicted is not None else -1.0,
        float(o.confidence) if o.confidence is not None else math.nan,
        KIND_CODES.get(o.kind, -1.0),
        float(o.label) if o.label is not None else -1.0,
    ]


def prediction_window_message(o: Outcome) -> Float64MultiArray:
    """One answer with the window it is for (see `graph.ODT_BRIDGE`): the key for matching
    predictions to windows (and to truth at the window, not at arrival)."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=",".join(WINDOW_FIELDS), size=6, stride=6)]
    msg.data = prediction_window_data(o)
    return msg


def parse_prediction_window(msg: Any) -> dict[str, float]:
    """The fields of a /terrain/prediction_window message; `ValueError` if malformed."""
    if len(msg.data) != len(WINDOW_FIELDS):
        raise ValueError(f"prediction window with {len(msg.data)} values, expected 6")
    return dict(zip(WINDOW_FIELDS, (float(v) for v in msg.data), strict=True))


__all__ = [
    "FEATURES_LABEL",
    "FEATURES_TOPIC",
    "KIND_CODES",
    "PREDICTION_WINDOW_TOPIC",
    "STAMP_ELEMENTS",
    "WINDOW_FIELDS",
    "PackedFeatures",
    "description_from_label",
    "features_description",
    "features_label",
    "features_message",
    "pack_features",
    "parse_features",
    "parse_features_message",
    "parse_prediction_window",
    "prediction_window_data",
    "prediction_window_message",
]
