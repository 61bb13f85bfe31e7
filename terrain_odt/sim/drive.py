"""A drive: the engine stepped under a route follower (or `/cmd_vel`), as a stream of sensor
events on the simulated clock. Engine-agnostic (anything with `step(left, right) -> Tick` and
`dt`), ROS-free: the bag recorder (`record`) and the live node (`nodes.sim_node`) turn the
events into messages.

Events, in time order (`t`: seconds since the start of the drive):

* `ImuEvent` every IMU period: gyro (rad/s) and accelerometer (m/s², gravity included) in the
  IMU frame.
* `JointEvent` at `sensors.joint_state_rate_hz`: the side averages of the wheel joints
  (`left_wheel`, `right_wheel`): angle (rad), velocity (rad/s), motor torque (N·m).
* `OdomEvent` at `sensors.odom_rate_hz`: `WheelOdometry` (odom frame = the start pose).
* `CmdEvent` at `sensors.cmd_rate_hz`: the (v, ω) command in force (route follower or the
  last external `/cmd_vel`).
* `LabelEvent` at `sensors.label_rate_hz` and on every change: the class of the patch under
  the chassis centre ('' off the map), from the ground-truth pose.

`Drive.stats()` compares the odometry's distance with the ground truth's (both summed over IMU
periods, horizontal) and gives the lap start times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .mujoco_sim import Tick
from .route import PurePursuit
from .world import World

__all__ = [
    "CmdEvent",
    "Drive",
    "DriveStats",
    "Event",
    "ImuEvent",
    "JointEvent",
    "LabelEvent",
    "OdomEvent",
    "WheelOdometry",
]

#: An external `/cmd_vel` older than this no longer drives the robot (the route takes over).
CMD_TIMEOUT_S = 0.5
#: After the route's end, the drive goes on this long standing still (the last windows close).
HOLD_S = 2.0


class Engine(Protocol):
    dt: float
    mount_rotation: np.ndarray

    def step(self, left: float, right: float) -> Tick: ...


@dataclass(frozen=True)
class ImuEvent:
    t: float
    gyro: tuple[float, float, float]
    accel: tuple[float, float, float]


@dataclass(frozen=True)
class JointEvent:
    t: float
    position: tuple[float, float]
    velocity: tuple[float, float]
    effort: tuple[float, float]


@dataclass(frozen=True)
class OdomEvent:
    t: float
    x: float
    y: float
    yaw: float
    v: float
    w: float


@dataclass(frozen=True)
class CmdEvent:
    t: float
    v: float
    w: float


@dataclass(frozen=True)
class LabelEvent:
    t: float
    name: str


Event = ImuEvent | JointEvent | OdomEvent | CmdEvent | LabelEvent


class WheelOdometry:
    """Planar dead reckoning: speed from the wheels `r (ω_l + ω_r) / 2`; yaw rate from the
    gyro (turned into the chassis frame by the IMU mounting) or, with `yaw_source='wheels'`,
    `r (ω_r − ω_l) / (track · multiplier)` (a skid-steer's effective track is wider than its
    geometric one). Midpoint heading per step."""

    def __init__(
        self,
        radius: float,
        track: float,
        *,
        yaw_source: str = "gyro",
        multiplier: float = 1.0,
        mount_rotation: np.ndarray | None = None,
    ) -> None:
        self.radius = radius
        self.track = track * multiplier
        self.yaw_source = yaw_source
        self.rot = np.eye(3) if mount_rotation is None else np.asarray(mount_rotation)
        self.x = self.y = self.yaw = 0.0
        self.v = self.w = 0.0
        self.distance = 0.0

    def update(self, dt: float, wl: float, wr: float, gyro: tuple[float, float, float]) -> None:
        v = self.radius * 0.5 * (wl + wr)
        if self.yaw_source == "gyro":
            w = float(self.rot[2] @ np.asarray(gyro))
        else:
            w = self.radius * (wr - wl) / self.track
        h = self.yaw + 0.5 * w * dt
        self.x += v * dt * math.cos(h)
        self.y += v * dt * math.sin(h)
        self.yaw = math.remainder(self.yaw + w * dt, math.tau)
        self.v, self.w = v, w
        self.distance += abs(v) * dt


@dataclass
class DriveStats:
    sim_s: float = 0.0
    odom_distance_m: float = 0.0
    truth_distance_m: float = 0.0
    #: Drive time (s) at which each lap began (the first is 0).
    lap_starts_s: list[float] = field(default_factory=list)
    route_done_s: float | None = None
    #: |odometry position − true position| at the end (both in the odom frame), m.
    final_position_error_m: float = 0.0

    @property
    def distance_error(self) -> float | None:
        """|odometry distance − true distance| / true distance."""
        if self.truth_distance_m <= 0:
            return None
        return abs(self.odom_distance_m - self.truth_distance_m) / self.truth_distance_m


class Drive:
    """Steps `engine` along the world's route (`follow_route`) or by external commands."""

    def __init__(self, world: World, engine: Engine, *, follow_route: bool = True) -> None:
        self.world = world
        self.engine = engine
        rb, s = world.robot, world.sensors
        self.odom = WheelOdometry(
            rb.wheel_radius_m,
            rb.track_width_m,
            yaw_source=s.odom_yaw_source,
            multiplier=s.odom_track_multiplier,
            mount_rotation=engine.mount_rotation,
        )
        self.follower = PurePursuit.for_world(world) if follow_route else None
        self._ext: tuple[float, float, float] | None = None  # (t, v, w)
        self.cmd = (0.0, 0.0)
        self._stats = DriveStats(lap_starts_s=[0.0])
        self.t = 0.0

    def set_cmd_vel(self, v: float, w: float) -> None:
        """An external `/cmd_vel`: drives the robot for `CMD_TIMEOUT_S` (over the route)."""
        if math.isfinite(v) and math.isfinite(w):
            self._ext = (self.t, float(v), float(w))

    def stats(self) -> DriveStats:
        st = self._stats
        st.sim_s = self.t
        st.odom_distance_m = self.odom.distance
        return st

    def _wheel_cmd(self, v: float, w: float) -> tuple[float, float]:
        rb = self.world.robot
        half = 0.5 * rb.track_width_m
        return (v - w * half) / rb.wheel_radius_m, (v + w * half) / rb.wheel_radius_m

    def _periods(self, rate_hz: float) -> int:
        return max(round(1.0 / (rate_hz * self.engine.dt)), 1)

    def events(self, duration_s: float | None = None) -> Iterator[Event]:
        """Step and yield events until the route is done (plus `HOLD_S`) or `duration_s`."""
        s = self.world.sensors
        n_cmd = self._periods(s.cmd_rate_hz)
        n_odom = self._periods(s.odom_rate_hz)
        n_joint = self._periods(s.joint_state_rate_hz)
        n_label = self._periods(s.label_rate_hz)
        k = 0
        label: str | None = None
        prev_xy: tuple[float, float] | None = None
        left = right = 0.0
        done_at: float | None = None
        while True:
            if duration_s is not None and self.t >= duration_s - 1e-9:
                break
            if done_at is not None and self.t >= done_at + HOLD_S - 1e-9:
                break
            if k % n_cmd == 0:
                if self._ext is not None and self.t - self._ext[0] < CMD_TIMEOUT_S:
                    v, w = self._ext[1], self._ext[2]
                elif self.follower is not None:
                    c = self.follower.update(self.t, self.odom.x, self.odom.y, self.odom.yaw)
                    v, w = c.v, c.w
                    lap = self.follower.lap
                    while len(self._stats.lap_starts_s) <= lap:
                        self._stats.lap_starts_s.append(self.t)
                    if c.done and done_at is None:
                        done_at = self.t
                        self._stats.route_done_s = self.t
                else:
                    v, w = 0.0, 0.0
                self.cmd = (v, w)
                left, right = self._wheel_cmd(v, w)
                yield CmdEvent(self.t, v, w)
            tick = self.engine.step(left, right)
            k += 1
            self.t = tick.t
            self.odom.update(self.engine.dt, tick.wheel_vel[0], tick.wheel_vel[1], tick.gyro)
            if prev_xy is not None:
                self._stats.truth_distance_m += math.hypot(tick.x - prev_xy[0], tick.y - prev_xy[1])
            prev_xy = (tick.x, tick.y)
            ox, oy = self.world.world_to_odom(tick.x, tick.y)
            self._stats.final_position_error_m = math.hypot(ox - self.odom.x, oy - self.odom.y)
            yield ImuEvent(tick.t, tick.gyro, tick.accel)
            if k % n_joint == 0:
                yield JointEvent(tick.t, tick.wheel_pos, tick.wheel_vel, tick.wheel_effort)
            if k % n_odom == 0:
                o = self.odom
                yield OdomEvent(tick.t, o.x, o.y, o.yaw, o.v, o.w)
            name = self.world.terrain_at(tick.x, tick.y)
            if name != label or k % n_label == 0:
                label = name
                yield LabelEvent(tick.t, name)
