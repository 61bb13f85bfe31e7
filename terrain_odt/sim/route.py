"""The route (a closed path driven `laps` times) and a pure-pursuit follower on it.

`Path` samples the route densely (every 5 cm) with its arc length. `PurePursuit` tracks the
robot's progress along the path (the nearest path point near the previous progress, so a
self-crossing or a lap seam never makes it jump) and steers towards the point `lookahead_m`
ahead: curvature `κ = 2 sin α / L_d` (α: bearing of that point in the robot frame), yaw rate
`ω = v κ` (clipped to `max_yaw_rate`). Speed ramps up and down at `accel_mps2` and the robot
stops at the end of the last lap. Pure Python + numpy; the simulator gives it the robot's pose
(the odometry, as a robot without a map would).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .world import RouteSpec, World

__all__ = ["Path", "PurePursuit", "route_path"]

STEP_M = 0.05


class Path:
    """A closed polyline resampled every `STEP_M` metres: `xy` (n, 2), arc length `s` (n,)."""

    def __init__(self, corners: np.ndarray) -> None:
        pts = np.asarray(corners, dtype=float)
        closed = np.vstack([pts, pts[:1]])
        seg = np.diff(closed, axis=0)
        lens = np.hypot(seg[:, 0], seg[:, 1])
        self.length = float(lens.sum())
        if self.length <= 0:
            raise ValueError("route has zero length")
        cum = np.concatenate([[0.0], np.cumsum(lens)])
        s = np.arange(0.0, self.length, STEP_M)
        self.s = s
        self.xy = np.column_stack(
            [np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])]
        )

    def at(self, s: float) -> tuple[float, float]:
        """Point at arc length `s` (any value: wraps around the loop)."""
        u = (s % self.length) / STEP_M
        i = int(u)
        f = u - i
        a = self.xy[i % len(self.xy)]
        b = self.xy[(i + 1) % len(self.xy)]
        return float(a[0] + f * (b[0] - a[0])), float(a[1] + f * (b[1] - a[1]))

    def heading(self, s: float) -> float:
        x0, y0 = self.at(s)
        x1, y1 = self.at(s + STEP_M)
        return math.atan2(y1 - y0, x1 - x0)


def stadium_corners(xs: tuple[float, float], ys: tuple[float, float]) -> np.ndarray:
    """A stadium: leg along y = ys[0] from xs[0] to xs[1] (+x), a half circle (counter-
    clockwise) to y = ys[1], the leg back to xs[0], a half circle back to the start."""
    r = 0.5 * (ys[1] - ys[0])
    yc = 0.5 * (ys[0] + ys[1])
    n = max(int(math.pi * r / STEP_M), 8)
    a1 = np.linspace(-math.pi / 2, math.pi / 2, n + 1)[1:-1]
    a2 = np.linspace(math.pi / 2, 3 * math.pi / 2, n + 1)[1:-1]
    return np.vstack(
        [
            [[xs[0], ys[0]], [xs[1], ys[0]]],
            np.column_stack([xs[1] + r * np.cos(a1), yc + r * np.sin(a1)]),
            [[xs[1], ys[1]], [xs[0], ys[1]]],
            np.column_stack([xs[0] + r * np.cos(a2), yc + r * np.sin(a2)]),
        ]
    )


def route_path(world: World, frame: str = "odom") -> Path:
    """The world's route in the odometry frame (what the robot follows) or the world frame."""
    rs: RouteSpec = world.route
    if rs.stadium_x is not None and rs.stadium_y is not None:
        pts = stadium_corners(rs.stadium_x, rs.stadium_y)
    elif rs.waypoints:
        pts = np.asarray(rs.waypoints, dtype=float)
    else:
        raise ValueError("the world has no route (route.stadium or route.waypoints)")
    if frame == "odom":
        pts = np.asarray([world.world_to_odom(float(x), float(y)) for x, y in pts])
    return Path(pts)


@dataclass
class Command:
    v: float
    w: float
    done: bool


class PurePursuit:
    """(v, ω) commands along `path` for `laps` laps; `update(t, x, y, yaw)` at any rate."""

    def __init__(
        self,
        path: Path,
        *,
        speed: float,
        laps: int,
        lookahead: float,
        accel: float,
        max_yaw_rate: float,
    ) -> None:
        self.path = path
        self.speed = speed
        self.total = laps * path.length
        self.lookahead = lookahead
        self.accel = accel
        self.max_yaw_rate = max_yaw_rate
        self.progress = 0.0
        self._v = 0.0
        self._t: float | None = None

    @classmethod
    def for_world(cls, world: World) -> PurePursuit:
        rs = world.route
        return cls(
            route_path(world),
            speed=rs.speed_mps,
            laps=rs.laps,
            lookahead=rs.lookahead_m,
            accel=rs.accel_mps2,
            max_yaw_rate=rs.max_yaw_rate,
        )

    @property
    def lap(self) -> int:
        """0-based lap the robot is on (laps done, capped at the last one)."""
        return min(int(self.progress // self.path.length), round(self.total / self.path.length) - 1)

    def _advance(self, x: float, y: float) -> None:
        # Nearest point in [progress - 0.5 m, progress + 2 m] along the path.
        ss = self.progress + np.arange(-0.5, 2.0 + 1e-9, STEP_M)
        ss = ss[(ss >= 0) & (ss <= self.total + 1.0)]
        if not len(ss):
            return
        u = np.mod(ss, self.path.length) / STEP_M
        i = u.astype(int) % len(self.path.xy)
        d = np.hypot(self.path.xy[i, 0] - x, self.path.xy[i, 1] - y)
        self.progress = max(self.progress, float(ss[int(np.argmin(d))]))

    def update(self, t: float, x: float, y: float, yaw: float) -> Command:
        dt = 0.0 if self._t is None else max(t - self._t, 0.0)
        self._t = t
        self._advance(x, y)
        remaining = self.total - self.progress
        if remaining <= 0.05:
            self._v = 0.0
            return Command(0.0, 0.0, True)
        # Speed: ramp to cruise, and down so as to stop at the end (v² = 2 a d).
        target = min(self.speed, math.sqrt(2.0 * self.accel * max(remaining, 0.0)) + 0.05)
        dv = self.accel * dt
        self._v = min(target, self._v + dv) if self._v < target else max(target, self._v - dv)
        tx, ty = self.path.at(min(self.progress + self.lookahead, self.total + self.lookahead))
        dx, dy = tx - x, ty - y
        alpha = math.atan2(dy, dx) - yaw
        ld = max(math.hypot(dx, dy), 1e-3)
        w = self._v * 2.0 * math.sin(alpha) / ld
        w = max(-self.max_yaw_rate, min(self.max_yaw_rate, w))
        return Command(self._v, w, False)
