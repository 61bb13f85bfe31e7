"""The /terrain/features and /terrain/prediction_window layouts (`terrain_odt.signals.feature_msg`):
packing and parsing agree, malformed messages are refused, the ROS messages carry the same
fields. The plain part needs no ROS."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from terrain_odt.signals import feature_msg as fm
from terrain_odt.signals.features import WindowEvent


def fake_msg(data: list[float], offset: int, labels: list[str]) -> SimpleNamespace:
    """Shaped like a std_msgs/Float64MultiArray, without ROS."""
    dims = [SimpleNamespace(label=lb, size=0, stride=0) for lb in labels]
    return SimpleNamespace(data=data, layout=SimpleNamespace(data_offset=offset, dim=dims))


def test_pack_then_parse_round_trips() -> None:
    x = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    p = fm.pack_features(1.0, 2.69, x, "imu 102 (x); wheels")
    assert p.data == [1.0, 2.69, 0.5, -1.25, 3.0]
    assert p.data_offset == fm.STAMP_ELEMENTS == 2
    assert p.size == 3
    assert p.label == "features; imu 102 (x); wheels"
    assert fm.parse_features(p.data, p.data_offset) == (1.0, 2.69, [0.5, -1.25, 3.0])
    # the description is everything after the first separator, "; " inside it included
    assert fm.description_from_label(p.label) == "imu 102 (x); wheels"


def test_no_description() -> None:
    p = fm.pack_features(0.0, 1.0, [1.0], "")
    assert p.label == fm.FEATURES_LABEL == "features"
    assert fm.description_from_label(p.label) is None
    assert fm.features_description(fake_msg(p.data, 2, [])) is None
    assert fm.features_description(fake_msg(p.data, 2, [p.label])) is None


@pytest.mark.parametrize(
    ("data", "offset"),
    [([0.0, 1.0], 2), ([0.0, 1.0, 5.0], 0), ([0.0, 1.0, 5.0], 3), ([], 2)],
)
def test_malformed_features_are_refused(data: list[float], offset: int) -> None:
    with pytest.raises(ValueError, match="data_offset"):
        fm.parse_features(data, offset)
    with pytest.raises(ValueError):
        fm.parse_features_message(fake_msg(data, offset, ["features"]))


def test_parse_features_message_reads_the_fields() -> None:
    msg = fake_msg([3.0, 4.5, 1.0, 2.0], 2, ["features; d"])
    assert fm.parse_features_message(msg) == (3.0, 4.5, [1.0, 2.0])
    assert fm.features_description(msg) == "d"


def outcome(**kw: object) -> SimpleNamespace:
    base = {
        "t_start": 1.0,
        "t_end": 2.0,
        "predicted": 3,
        "confidence": 0.75,
        "kind": "train",
        "label": 2,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def test_prediction_window_fields() -> None:
    data = fm.prediction_window_data(outcome())  # type: ignore[arg-type]
    assert data == [1.0, 2.0, 3.0, 0.75, 1.0, 2.0]
    got = fm.parse_prediction_window(SimpleNamespace(data=data))
    assert list(got) == list(fm.WINDOW_FIELDS)
    assert got["kind"] == fm.KIND_CODES["train"]
    empty = fm.prediction_window_data(
        outcome(predicted=None, confidence=None, kind="other", label=None)  # type: ignore[arg-type]
    )
    assert empty[2] == -1.0 and math.isnan(empty[3]) and empty[4] == -1.0 and empty[5] == -1.0
    with pytest.raises(ValueError, match="expected 6"):
        fm.parse_prediction_window(SimpleNamespace(data=data[:5]))


def test_ros_messages_carry_the_layout() -> None:
    pytest.importorskip("std_msgs.msg")
    ev = WindowEvent(10.0, 11.69, np.arange(4, dtype=np.float64), None)
    msg = fm.features_message(ev, "desc")
    assert msg.layout.data_offset == 2
    assert [(d.label, d.size, d.stride) for d in msg.layout.dim] == [("features; desc", 4, 4)]
    assert list(msg.data) == [10.0, 11.69, 0.0, 1.0, 2.0, 3.0]
    assert fm.parse_features_message(msg) == (10.0, 11.69, [0.0, 1.0, 2.0, 3.0])
    assert fm.features_description(msg) == "desc"
    win = fm.prediction_window_message(outcome())  # type: ignore[arg-type]
    assert win.layout.dim[0].label == ",".join(fm.WINDOW_FIELDS)
    assert fm.parse_prediction_window(win)["class_index"] == 3.0
