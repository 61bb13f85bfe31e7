"""terrain_odt.data.cdr: the hand-written Imu decoder against rclpy's own serializer, and bad
bytes."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Imu

from terrain_odt.data.cdr import CdrError, imu_sample

FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
# Any text but NUL (rosidl strings are C strings); non-ASCII characters make the UTF-8 byte length
# (what the CDR length field counts) differ from the character count.
FRAME_ID = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    max_size=40,
)
VEC = st.tuples(FINITE, FINITE, FINITE)


def make_imu(
    sec: int,
    nanosec: int,
    frame_id: str,
    gyro: tuple[float, float, float],
    acc: tuple[float, float, float],
    fill: float = 0.0,
) -> Imu:
    m = Imu()
    m.header.stamp.sec = sec
    m.header.stamp.nanosec = nanosec
    m.header.frame_id = frame_id
    m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = gyro
    m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = acc
    # The fields the decoder skips get values too, so a wrong offset reads something else.
    m.orientation.x = m.orientation.y = m.orientation.z = m.orientation.w = fill
    m.orientation_covariance = [fill + i for i in range(9)]
    m.angular_velocity_covariance = [fill + 10 + i for i in range(9)]
    m.linear_acceleration_covariance = [fill + 20 + i for i in range(9)]
    return m


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sec=st.integers(-(2**31), 2**31 - 1),
    nanosec=st.integers(0, 999_999_999),
    frame_id=FRAME_ID,
    gyro=VEC,
    acc=VEC,
    fill=FINITE,
)
def test_matches_rclpy_serializer(sec, nanosec, frame_id, gyro, acc, fill):
    raw = serialize_message(make_imu(sec, nanosec, frame_id, gyro, acc, fill))
    assert raw[:2] == b"\x00\x01"  # rclpy writes little-endian plain CDR
    t, *values = imu_sample(raw)
    assert t == sec + nanosec * 1e-9
    assert values == [*gyro, *acc]
    # Bytes from a raw subscription may come as a bytearray or memoryview.
    assert imu_sample(bytearray(raw)) == imu_sample(memoryview(raw)) == (t, *values)


@pytest.mark.parametrize("n", range(41))
def test_every_frame_id_length(n: int):
    """Each frame_id length (all paddings to the 8-byte boundary) with distinct values."""
    gyro, acc = (1.0 + n, -2.5, 3.25), (0.125, -9.81, 1e300)
    raw = serialize_message(make_imu(1_700_000_000, 123_456_789, "f" * n, gyro, acc, fill=7.0))
    t, *values = imu_sample(raw)
    assert t == pytest.approx(1_700_000_000.123456789, abs=1e-6)
    assert values == [*gyro, *acc]


def test_non_finite_values_are_passed_through():
    """The decoder reports what is on the wire; the feature stream rejects non-finite values."""
    raw = serialize_message(
        make_imu(3, 0, "imu", (math.nan, math.inf, -math.inf), (0.0, -0.0, math.nan))
    )
    t, *values = imu_sample(raw)
    assert t == 3.0
    want = [math.nan, math.inf, -math.inf, 0.0, -0.0, math.nan]
    assert all(same(a, b) for a, b in zip(values, want, strict=True))


def big_endian(raw: bytes, frame_id_len: int) -> bytes:
    """The same message in big-endian CDR (rclpy writes only little-endian)."""
    le = raw[4:]
    sec, nsec, slen = struct.unpack_from("<iII", le, 0)
    assert slen == frame_id_len + 1
    head = struct.pack(">iII", sec, nsec, slen) + le[12 : 12 + slen]
    off = (12 + slen + 7) & ~7
    pad = le[len(head) : off]
    n = (len(le) - off) // 8
    body = struct.pack(f">{n}d", *struct.unpack_from(f"<{n}d", le, off))
    return b"\x00\x00\x00\x00" + head + pad + body


def test_big_endian_encapsulation():
    raw = serialize_message(make_imu(12, 5, "base_imu", (0.1, 0.2, 0.3), (4.0, 5.0, 6.0), 1.0))
    be = big_endian(raw, len("base_imu"))
    assert len(be) == len(raw)
    assert imu_sample(be) == imu_sample(raw)


# ---------------------------------------------------------------------------------------------
# malformed bytes: always CdrError, never another exception


GOOD = serialize_message(make_imu(1, 2, "imu_link", (0.1, 0.2, 0.3), (0.4, 0.5, 9.8)))


@pytest.mark.parametrize("n", range(len(GOOD)))
def test_every_truncation_is_a_cdr_error(n: int):
    with pytest.raises(CdrError):
        imu_sample(GOOD[:n])


@pytest.mark.parametrize(
    "head",
    [
        b"\x00\x02",  # PL_CDR_BE (parameter list, not plain data)
        b"\x00\x03",  # PL_CDR_LE
        b"\x00\x06",  # CDR2_BE (XCDR2)
        b"\x00\x07",  # CDR2_LE
        b"\x01\x00",
        b"\xff\xff",
    ],
)
def test_wrong_encapsulation_is_a_cdr_error(head: bytes):
    with pytest.raises(CdrError, match="encapsulation"):
        imu_sample(head + GOOD[2:])


def test_frame_id_length_beyond_the_message_is_a_cdr_error():
    for slen in (len(GOOD), 2**31 - 1, 2**32 - 1):
        bad = GOOD[:12] + struct.pack("<I", slen) + GOOD[16:]
        with pytest.raises(CdrError, match="too short"):
            imu_sample(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_decode_or_raise_cdr_error(data: bytes):
    for raw in (data, b"\x00\x01\x00\x00" + data, b"\x00\x00\x00\x00" + data):
        try:
            out = imu_sample(raw)
        except CdrError:
            continue
        assert len(out) == 7 and all(isinstance(v, float) for v in out)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_length_field_is_a_cdr_error_or_in_bounds(data):
    """A garbled frame_id length either still fits (decoded from in-bounds bytes) or raises."""
    slen = data.draw(st.integers(0, 2**32 - 1))
    cut = data.draw(st.integers(0, len(GOOD)))
    bad = (GOOD[:12] + struct.pack("<I", slen) + GOOD[16:])[:cut]
    try:
        out = imu_sample(bad)
    except CdrError:
        return
    assert len(out) == 7
