"""The project's own rosbag2 player: a bag's messages (raw CDR, as recorded) and `/clock`, paced
to `rate` × real time, through rclpy publishers.

Used by the replay evaluation (`terrain_odt.evaluation.replay`), by the `bag_player` node that
`replay.launch.py` starts where `ros2 bag` is not installed (it has no pip wheel), and by tests.
Reading uses `rosbags` (mcap and sqlite3, no ROS install needed).

Optionally the player acts as the operator: it republishes the ground truth (a
`std_msgs/String` topic with the terrain in force, `/terrain/label_truth` in the bags
`terrain-odt bag-from-borealtc` writes) on `/terrain/operator_label` when it changes, until
`operator_until_s` seconds into the bag, and clears it then.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "OPERATOR_TOPIC",
    "TRUTH_TOPIC",
    "BagData",
    "BagError",
    "BagMessage",
    "BagPlayer",
    "PlayStats",
    "read_bag",
    "stamp",
    "truth_at",
]

TRUTH_TOPIC = "/terrain/label_truth"
OPERATOR_TOPIC = "/terrain/operator_label"
IMU_TYPE = "sensor_msgs/msg/Imu"


class BagError(RuntimeError):
    """The bag cannot be read (missing, not a bag, no messages); the message says why."""


@dataclass(frozen=True)
class BagMessage:
    t_ns: int
    topic: str
    raw: bytes


@dataclass(frozen=True)
class BagData:
    """All messages of a bag in time order, topic → type, and the truth timeline (ns, class)."""

    messages: list[BagMessage]
    types: dict[str, str]
    truth: list[tuple[int, str]]

    @property
    def t0_ns(self) -> int:
        return self.messages[0].t_ns

    @property
    def duration_s(self) -> float:
        return (self.messages[-1].t_ns - self.messages[0].t_ns) * 1e-9


def read_bag(bag: Path, truth_topic: str = TRUTH_TOPIC) -> BagData:
    """Read every message of `bag` (raw) and decode the truth topic."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not bag.exists():
        raise BagError(f"bag {bag} does not exist")
    store = get_typestore(Stores.ROS2_KILTED) if hasattr(Stores, "ROS2_KILTED") else None
    msgs: list[BagMessage] = []
    types: dict[str, str] = {}
    truth: list[tuple[int, str]] = []
    try:
        with AnyReader([bag], default_typestore=store) as reader:
            for c in reader.connections:
                types[c.topic] = c.msgtype
            for conn, t_ns, raw in reader.messages():
                msgs.append(BagMessage(int(t_ns), conn.topic, bytes(raw)))
                if conn.topic == truth_topic:
                    truth.append((int(t_ns), str(reader.deserialize(raw, conn.msgtype).data)))
    except Exception as exc:  # rosbags raises several unrelated types for bad files
        raise BagError(f"cannot read bag {bag}: {exc}") from exc
    if not msgs:
        raise BagError(f"bag {bag} has no messages")
    msgs.sort(key=lambda m: m.t_ns)
    return BagData(msgs, types, truth)


def msg_class(msgtype: str) -> Any:
    """The rclpy message class of `pkg/msg/Name`, or None if it is not installed."""
    pkg, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def truth_at(truth: Sequence[tuple[int, str]], t_ns: int) -> str | None:
    """Truth in force at `t_ns` (the last truth message at or before it)."""
    lo, hi = 0, len(truth)
    while lo < hi:
        mid = (lo + hi) // 2
        if truth[mid][0] <= t_ns:
            lo = mid + 1
        else:
            hi = mid
    return truth[lo - 1][1] if lo else None


def stamp(t_ns: int) -> Any:
    """`builtin_interfaces/Time` of `t_ns`."""
    from builtin_interfaces.msg import Time

    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


@dataclass
class PlayStats:
    """What one `BagPlayer.play` did."""

    #: Wall time of the playback, s.
    wall_s: float = 0.0
    #: Bag time played, s.
    bag_s: float = 0.0
    #: Messages published per topic.
    counts: dict[str, int] = field(default_factory=dict)
    #: The playback was stopped before the end.
    stopped: bool = False
    skipped_topics: list[str] = field(default_factory=list)


class BagPlayer:
    """Plays `data` on `node`'s publishers. Not thread-safe: one `play` at a time.

    `clock_rate_hz`: `/clock` messages per second of wall time (`ros2 bag play --clock` uses
    40; every node runs a callback per /clock message, so one per IMU sample would cost more
    than the IMU itself). The clock is also published right before every operator label.
    `operator_until_s`: act as the operator until this many seconds into the bag (None: never;
    `math.inf`: the whole bag, like `ros2 bag play --remap truth:=operator`).
    `duration_s`: play only this much of the bag (None: all).
    """

    def __init__(
        self,
        node: Any,
        data: BagData,
        *,
        rate: float = 1.0,
        clock_rate_hz: float = 100.0,
        truth_topic: str = TRUTH_TOPIC,
        operator_until_s: float | None = None,
        duration_s: float | None = None,
        imu_depth: int = 1000,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import String

        if not rate > 0.0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a number > 0, got {rate}")
        if not clock_rate_hz > 0.0:
            raise ValueError(f"clock rate must be > 0 Hz, got {clock_rate_hz}")
        self.data = data
        self.rate = float(rate)
        self.clock_period = 1.0 / float(clock_rate_hz)
        self.truth_topic = truth_topic
        self.operator_until_s = operator_until_s
        end = data.messages[-1].t_ns
        if duration_s is not None and duration_s > 0:
            end = min(end, data.t0_ns + int(duration_s * 1e9))
        self.end_ns = end
        self._clock_msg = Clock
        self._string = String
        self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.pubs: dict[str, Any] = {}
        self.skipped: list[str] = []
        for topic, mtype in data.types.items():
            cls = msg_class(mtype)
            if cls is None:
                self.skipped.append(topic)
                if log is not None:
                    log(f"skipping {topic}: message type {mtype} is not installed")
                continue
            qos: QoSProfile | int = (
                QoSProfile(
                    history=qos_profile_sensor_data.history,
                    depth=imu_depth,
                    reliability=qos_profile_sensor_data.reliability,
                )
                if mtype == IMU_TYPE
                else 100
            )
            self.pubs[topic] = node.create_publisher(cls, topic, qos)
        self.operator_pub = (
            node.create_publisher(String, OPERATOR_TOPIC, 10)
            if operator_until_s is not None
            else None
        )
        #: The /clock value last published (ns).
        self.now_ns = data.t0_ns

    def publish_clock(self, t_ns: int) -> None:
        self.now_ns = t_ns
        self.clock_pub.publish(self._clock_msg(clock=stamp(t_ns)))

    def play(
        self,
        *,
        on_clock: Callable[[int], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> PlayStats:
        """Publish every message up to the end, paced; `on_clock(t_ns)` runs before each
        /clock message, `on_progress(bag seconds)` every 200 messages."""
        data = self.data
        t0 = data.t0_ns
        until_ns = (
            None
            if self.operator_until_s is None
            else (
                math.inf
                if math.isinf(self.operator_until_s)
                else t0 + int(self.operator_until_s * 1e9)
            )
        )
        stats = PlayStats()
        op_state: str | None = None
        next_clock = 0.0
        last_clock = -(1 << 62)
        wall0 = time.monotonic()
        for i, m in enumerate(data.messages):
            if m.t_ns > self.end_ns:
                break
            if should_stop is not None and i % 50 == 0 and should_stop():
                stats.stopped = True
                break
            due = wall0 + (m.t_ns - t0) * 1e-9 / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            is_op = until_ns is not None and m.topic == self.truth_topic
            if (now >= next_clock or is_op) and m.t_ns != last_clock:
                if on_clock is not None:
                    on_clock(m.t_ns)
                self.publish_clock(m.t_ns)
                last_clock = m.t_ns
                next_clock = now + self.clock_period
            pub = self.pubs.get(m.topic)
            if pub is not None:
                pub.publish(m.raw)
                stats.counts[m.topic] = stats.counts.get(m.topic, 0) + 1
            if is_op and self.operator_pub is not None:
                label = truth_at(data.truth, m.t_ns) if m.t_ns < until_ns else ""
                if label != op_state:
                    self.operator_pub.publish(self._string(data=label or ""))
                    op_state = label
            if on_progress is not None and i % 200 == 0:
                on_progress((m.t_ns - t0) * 1e-9)
        stats.wall_s = time.monotonic() - wall0
        stats.bag_s = (min(self.end_ns, data.messages[-1].t_ns) - t0) * 1e-9
        stats.skipped_topics = list(self.skipped)
        if self.operator_pub is not None and op_state:
            self.operator_pub.publish(self._string(data=""))
        return stats

    def tick_past_end(
        self, on_clock: Callable[[int], None] | None = None, steps: int = 10, step_ns: int = 10**7
    ) -> None:
        """Advance /clock a little past the last message, so the last windows get through."""
        end_ns = min(self.end_ns, self.data.messages[-1].t_ns)
        for k in range(1, steps + 1):
            t = end_ns + k * step_ns
            if on_clock is not None:
                on_clock(t)
            self.publish_clock(t)
            time.sleep(0.01)

    def wait_for_subscribers(
        self, topics: Sequence[str], timeout_s: float, should_stop: Callable[[], bool] | None = None
    ) -> list[str]:
        """Wait until each of `topics` that the bag has, and the operator label topic when the
        player acts as the operator, has a subscriber; returns those that still have none after
        `timeout_s`. (The operator label is only published when it changes: one sent before the
        labeler's subscription is matched would be lost for a whole terrain segment.)"""
        pubs = {t: self.pubs[t] for t in topics if t in self.pubs}
        if self.operator_pub is not None:
            pubs[OPERATOR_TOPIC] = self.operator_pub
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [t for t, p in pubs.items() if p.get_subscription_count() == 0]
            if not missing or time.monotonic() >= deadline:
                return missing
            if should_stop is not None and should_stop():
                return missing
            time.sleep(0.02)
