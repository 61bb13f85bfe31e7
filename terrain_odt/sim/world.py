"""The terrain world, described once: terrains, patches, the rover, its sensors and its route.

A world is a YAML file (the shipped one: `config/sim_world.yaml`) with these sections:

* `terrains`: per class name, the surface: `friction` (sliding, MuJoCo's first friction
  coefficient, Gazebo's `mu`), `torsional_friction`, `rolling_friction` (m: rolling resistance
  torque per newton of load, i.e. rolling-resistance coefficient × wheel radius), `contact_time_s`
  (contact compliance: MuJoCo's solref time constant, larger = softer ground), and `roughness`,
  the vibration signature: a heightfield of band-limited isotropic noise with standard deviation
  `rms_m` and wavelengths between `wavelength_m[0]` and `wavelength_m[1]` (the bump spectrum;
  the IMU sees it as vibration at frequency speed / wavelength).
* `patches`: rectangles `{terrain: CLASS, x: [x0, x1], y: [y0, y1]}` in the world frame (m),
  not overlapping. Each gets its own heightfield (seeded from the world seed and the patch
  index), tapered to height 0 at its border so neighbouring patches meet without a step.
* `robot`: a 4-wheel skid-steer rover (wheel radius, track width, wheelbase, masses, motor
  torque limit and velocity-loop gain), starting at `start: [x, y, yaw_deg]`.
* `imu`: rate (Hz), mounting (`mount_xyz`, `mount_rpy_deg` relative to the chassis), white noise
  and constant biases of the accelerometer and gyro.
* `sensors`: `joint_state_rate_hz`, `odom_rate_hz`, `odom_yaw_source` (`gyro`: yaw rate from
  the IMU, as skid-steer robots usually fuse it; `wheels`: from the wheel speed difference and
  `odom_track_multiplier`), `label_rate_hz` of the ground-truth topic.
* `route`: a stadium (two straight legs joined by half circles) `{stadium: {x: [xa, xb],
  y: [ya, yb]}}` or a closed polyline `{waypoints: [[x, y], ...]}`, `speed_mps`, `laps`,
  `lookahead_m`, `accel_mps2`.
* `physics`: `timestep_s`, `hfield_cell_m`; `seed` (heightfields and sensor noise).

`load_world(path, overrides)` reads one; overrides are `section.key=YAML` strings, so another
drive of the same world (another speed, IMU mounting or noise) is the same file plus a few
overrides. Everything here is plain Python + numpy: the engines (`mujoco_sim`, `gazebo`) and the
labeler configuration (`regions_odom`, `node_params`) all read a `World`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = [
    "DEFAULT_WORLD",
    "Imu",
    "Patch",
    "Robot",
    "RouteSpec",
    "Sensors",
    "Terrain",
    "World",
    "WorldError",
    "load_world",
    "rpy_matrix",
]

DEFAULT_WORLD = "config/sim_world.yaml"
"""The shipped world (resolved like the other shared files, `terrain_odt.paths.resolve`)."""


class WorldError(ValueError):
    """A world description that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Terrain:
    name: str
    friction: float
    torsional_friction: float
    rolling_friction: float
    contact_time_s: float
    rms_m: float
    wavelength_m: tuple[float, float]


@dataclass(frozen=True)
class Patch:
    terrain: str
    x: tuple[float, float]
    y: tuple[float, float]

    def contains(self, px: float, py: float) -> bool:
        """Half-open `[x0, x1) × [y0, y1)`, so a point on a shared edge is in one patch."""
        return self.x[0] <= px < self.x[1] and self.y[0] <= py < self.y[1]

    @property
    def center(self) -> tuple[float, float]:
        return 0.5 * (self.x[0] + self.x[1]), 0.5 * (self.y[0] + self.y[1])

    @property
    def size(self) -> tuple[float, float]:
        return self.x[1] - self.x[0], self.y[1] - self.y[0]


@dataclass(frozen=True)
class Robot:
    wheel_radius_m: float = 0.165
    track_width_m: float = 0.555
    wheelbase_m: float = 0.512
    chassis_size_m: tuple[float, float, float] = (0.99, 0.67, 0.25)
    chassis_mass_kg: float = 46.0
    wheel_mass_kg: float = 2.5
    #: Height of the wheel axles under the chassis centre, m.
    axle_drop_m: float = 0.08
    max_wheel_torque_nm: float = 40.0
    #: Wheel velocity loop gain, N·m per rad/s (MuJoCo `velocity` actuator `kv`).
    wheel_kv: float = 8.0
    #: (x, y, yaw_deg) in the world frame; the odometry frame starts here.
    start: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Imu:
    rate_hz: float = 200.0
    mount_xyz: tuple[float, float, float] = (0.0, 0.0, 0.1)
    mount_rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    accel_noise_std: float = 0.02
    gyro_noise_std: float = 0.002
    accel_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gyro_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    frame_id: str = "imu_link"


@dataclass(frozen=True)
class Sensors:
    joint_state_rate_hz: float = 50.0
    odom_rate_hz: float = 50.0
    odom_yaw_source: str = "gyro"
    odom_track_multiplier: float = 1.0
    label_rate_hz: float = 1.0
    cmd_rate_hz: float = 20.0


@dataclass(frozen=True)
class RouteSpec:
    #: Closed polyline (world frame); a stadium is turned into one by `route.route_points`.
    waypoints: tuple[tuple[float, float], ...] = ()
    stadium_x: tuple[float, float] | None = None
    stadium_y: tuple[float, float] | None = None
    speed_mps: float = 1.0
    laps: int = 2
    lookahead_m: float = 1.2
    accel_mps2: float = 0.5
    max_yaw_rate: float = 1.0


@dataclass(frozen=True)
class World:
    name: str
    terrains: Mapping[str, Terrain]
    patches: tuple[Patch, ...]
    robot: Robot = field(default_factory=Robot)
    imu: Imu = field(default_factory=Imu)
    sensors: Sensors = field(default_factory=Sensors)
    route: RouteSpec = field(default_factory=RouteSpec)
    timestep_s: float = 0.001
    hfield_cell_m: float = 0.025
    seed: int = 1
    #: The dictionary it was read from, after overrides (recorded with each drive).
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """Terrain classes in description order (the model's class order is sorted names)."""
        return list(self.terrains)

    def terrain_at(self, x: float, y: float) -> str:
        """The class of the patch under world point (x, y); '' outside every patch."""
        for p in self.patches:
            if p.contains(x, y):
                return p.terrain
        return ""

    def bounds(self) -> tuple[float, float, float, float]:
        xs = [v for p in self.patches for v in p.x]
        ys = [v for p in self.patches for v in p.y]
        return min(xs), max(xs), min(ys), max(ys)

    # ----------------------------------------------------------------------------------------
    # Heightfields

    def heightfield(self, index: int) -> np.ndarray:
        """Heights (m) of patch `index` on its grid: shape (rows along y, columns along x),
        node (r, c) at x = x0 + c · dx, y = y0 + r · dy (dx, dy ≈ `hfield_cell_m`)."""
        p = self.patches[index]
        t = self.terrains[p.terrain]
        lx, ly = p.size
        nc = max(round(lx / self.hfield_cell_m) + 1, 3)
        nr = max(round(ly / self.hfield_cell_m) + 1, 3)
        dx, dy = lx / (nc - 1), ly / (nr - 1)
        rng = np.random.default_rng([self.seed, index])
        noise = rng.standard_normal((nr, nc))
        spec = np.fft.rfft2(noise)
        fy = np.fft.fftfreq(nr, d=dy)[:, None]
        fx = np.fft.rfftfreq(nc, d=dx)[None, :]
        f = np.hypot(fx, fy)
        lo, hi = 1.0 / t.wavelength_m[1], 1.0 / t.wavelength_m[0]
        spec[(f < lo) | (f > hi)] = 0.0
        h = np.fft.irfft2(spec, s=(nr, nc))
        sd = float(h.std())
        h = h * (t.rms_m / sd) if sd > 0 else np.zeros_like(h)
        # Taper to 0 at the border (0.3 m raised cosine) so neighbouring patches meet level.
        taper = 0.3
        wx = _edge_window(nc, dx, taper)
        wy = _edge_window(nr, dy, taper)
        return h * wy[:, None] * wx[None, :]

    # ----------------------------------------------------------------------------------------
    # What the robot's software is told (the odometry frame starts at the robot's start pose)

    def world_to_odom(self, x: float, y: float) -> tuple[float, float]:
        sx, sy, syaw = self.robot.start
        c, s = math.cos(math.radians(syaw)), math.sin(math.radians(syaw))
        dx, dy = x - sx, y - sy
        return c * dx + s * dy, -s * dx + c * dy

    def regions_odom(self) -> list[str]:
        """`terrain_labeler.regions`: every patch as 'CLASS: x1,y1; ...' in the odom frame."""
        out = []
        for p in self.patches:
            corners = [(p.x[0], p.y[0]), (p.x[1], p.y[0]), (p.x[1], p.y[1]), (p.x[0], p.y[1])]
            pts = [self.world_to_odom(x, y) for x, y in corners]
            out.append(f"{p.terrain}: " + "; ".join(f"{x:.4g},{y:.4g}" for x, y in pts))
        return out

    def node_params(
        self,
        *,
        wheels: bool = True,
        feature_rate_hz: float = 100.0,
        model: str | None = None,
        joints: tuple[Sequence[str], Sequence[str]] = (["left_wheel"], ["right_wheel"]),
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """A ROS parameter file (as a dict) for the terrain_odt graph on this world: class
        names and map regions for the labeler, the IMU rate (decimated to `feature_rate_hz`
        when the IMU is a multiple of it), the wheel joints and radius (or IMU-only features
        with `wheels=False`), and `model` (blob path without `.odtm`) for the bridge."""
        dec = self.imu.rate_hz / feature_rate_hz
        if dec < 1 or abs(dec - round(dec)) > 1e-9:
            raise WorldError(
                f"imu.rate_hz {self.imu.rate_hz:g} is not a multiple of the feature rate "
                f"{feature_rate_hz:g}"
            )
        left, right = (list(joints[0]), list(joints[1])) if wheels else ([], [])
        out: dict[str, dict[str, dict[str, Any]]] = {
            "imu_features": {
                "ros__parameters": {
                    "sample_rate_hz": float(feature_rate_hz),
                    "input_decimation": round(dec),
                    "wheel_joints_left": left,
                    "wheel_joints_right": right,
                    "wheel_radius_m": self.robot.wheel_radius_m,
                }
            },
            "terrain_labeler": {
                "ros__parameters": {
                    "class_names": sorted(self.class_names),
                    "regions": self.regions_odom(),
                    "max_yaw_rate": 1.0,
                }
            },
        }
        if model is not None:
            out["odt_bridge"] = {
                "ros__parameters": {
                    "model_sidecar": f"{model}.json",
                    "model_blob": f"{model}.odtm",
                    "save_on_shutdown": False,
                    "autosave_period_s": 0.0,
                }
            }
        return out


def _edge_window(n: int, step: float, taper_m: float) -> np.ndarray:
    d = np.minimum(np.arange(n), np.arange(n)[::-1]) * step
    w = np.clip(d / taper_m, 0.0, 1.0) if taper_m > 0 else np.ones(n)
    return 0.5 - 0.5 * np.cos(np.pi * w)


def rpy_matrix(rpy_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix of roll, pitch, yaw (degrees; R = Rz(yaw) · Ry(pitch) · Rx(roll), the
    ROS / URDF convention): columns are the rotated frame's axes in the parent frame."""
    r, p, y = (math.radians(v) for v in rpy_deg)
    cr, sr, cp, sp, cy, sy = (
        math.cos(r),
        math.sin(r),
        math.cos(p),
        math.sin(p),
        math.cos(y),
        math.sin(y),
    )
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


# ---------------------------------------------------------------------------------------------
# Loading


def _floats(v: Any, n: int, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise WorldError(f"{what}: expected {n} numbers, got {v!r}") from None
    if len(out) != n or not all(math.isfinite(x) for x in out):
        raise WorldError(f"{what}: expected {n} finite numbers, got {v!r}")
    return out


def _pos(v: Any, what: str, *, zero_ok: bool = False) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise WorldError(f"{what}: expected a number, got {v!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero_ok):
        raise WorldError(f"{what}: must be {'>= 0' if zero_ok else '> 0'}, got {v!r}")
    return x


def _section(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key) or {}
    if not isinstance(v, dict):
        raise WorldError(f"{key}: expected a mapping")
    return dict(v)


def _known(d: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    extra = sorted(set(d) - set(keys))
    if extra:
        raise WorldError(f"{what}: unknown key(s) {', '.join(extra)} (known: {', '.join(keys)})")


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`data` with `a.b.c=VALUE` overrides applied (VALUE is YAML: `route.speed_mps=0.5`,
    `imu.mount_rpy_deg=[0,0,90]`)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not sep or not parts:
            raise WorldError(f"override {item!r} is not KEY.PATH=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WorldError(f"override {item!r}: bad YAML value: {exc}") from None
        node: Any = out
        for p in parts[:-1]:
            if not isinstance(node, dict):
                raise WorldError(f"override {item!r}: {p} is not a section")
            node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise WorldError(f"override {item!r}: not a section")
        node[parts[-1]] = value
    return out


def world_from_dict(data: Mapping[str, Any]) -> World:
    """A checked `World` from its dictionary (the YAML file's content)."""
    _known(
        data,
        ("name", "seed", "terrains", "patches", "robot", "imu", "sensors", "route", "physics"),
        "world",
    )
    terrains: dict[str, Terrain] = {}
    tdata = _section(data, "terrains")
    if not tdata:
        raise WorldError("terrains: at least one terrain is needed")
    for name, t in tdata.items():
        what = f"terrains.{name}"
        if not isinstance(t, dict):
            raise WorldError(f"{what}: expected a mapping")
        _known(
            t,
            ("friction", "torsional_friction", "rolling_friction", "contact_time_s", "roughness"),
            what,
        )
        rough = t.get("roughness") or {}
        _known(rough, ("rms_m", "wavelength_m"), f"{what}.roughness")
        wl = _floats(rough.get("wavelength_m", (0.05, 0.5)), 2, f"{what}.roughness.wavelength_m")
        if not 0 < wl[0] < wl[1]:
            raise WorldError(f"{what}.roughness.wavelength_m: need 0 < min < max, got {wl}")
        terrains[str(name)] = Terrain(
            name=str(name),
            friction=_pos(t.get("friction", 0.8), f"{what}.friction"),
            torsional_friction=_pos(
                t.get("torsional_friction", 0.005), f"{what}.torsional_friction", zero_ok=True
            ),
            rolling_friction=_pos(
                t.get("rolling_friction", 0.0), f"{what}.rolling_friction", zero_ok=True
            ),
            contact_time_s=_pos(t.get("contact_time_s", 0.01), f"{what}.contact_time_s"),
            rms_m=_pos(rough.get("rms_m", 0.0), f"{what}.roughness.rms_m", zero_ok=True),
            wavelength_m=(wl[0], wl[1]),
        )
    patches: list[Patch] = []
    for i, p in enumerate(data.get("patches") or []):
        what = f"patches[{i}]"
        if not isinstance(p, dict):
            raise WorldError(f"{what}: expected a mapping")
        _known(p, ("terrain", "x", "y"), what)
        if p.get("terrain") not in terrains:
            raise WorldError(f"{what}.terrain: {p.get('terrain')!r} is not one of the terrains")
        x = _floats(p.get("x"), 2, f"{what}.x")
        y = _floats(p.get("y"), 2, f"{what}.y")
        if not (x[0] < x[1] and y[0] < y[1]):
            raise WorldError(f"{what}: need x0 < x1 and y0 < y1")
        patches.append(Patch(str(p["terrain"]), (x[0], x[1]), (y[0], y[1])))
    if not patches:
        raise WorldError("patches: at least one patch is needed")
    for i, a in enumerate(patches):
        for j in range(i):
            b = patches[j]
            if a.x[0] < b.x[1] and b.x[0] < a.x[1] and a.y[0] < b.y[1] and b.y[0] < a.y[1]:
                raise WorldError(f"patches[{j}] and patches[{i}] overlap")

    r = _section(data, "robot")
    _known(r, tuple(Robot.__dataclass_fields__), "robot")
    dr = Robot()
    robot = Robot(
        wheel_radius_m=_pos(r.get("wheel_radius_m", dr.wheel_radius_m), "robot.wheel_radius_m"),
        track_width_m=_pos(r.get("track_width_m", dr.track_width_m), "robot.track_width_m"),
        wheelbase_m=_pos(r.get("wheelbase_m", dr.wheelbase_m), "robot.wheelbase_m"),
        chassis_size_m=_floats(  # type: ignore[arg-type]
            r.get("chassis_size_m", dr.chassis_size_m), 3, "robot.chassis_size_m"
        ),
        chassis_mass_kg=_pos(r.get("chassis_mass_kg", dr.chassis_mass_kg), "robot.chassis_mass_kg"),
        wheel_mass_kg=_pos(r.get("wheel_mass_kg", dr.wheel_mass_kg), "robot.wheel_mass_kg"),
        axle_drop_m=float(r.get("axle_drop_m", dr.axle_drop_m)),
        max_wheel_torque_nm=_pos(
            r.get("max_wheel_torque_nm", dr.max_wheel_torque_nm), "robot.max_wheel_torque_nm"
        ),
        wheel_kv=_pos(r.get("wheel_kv", dr.wheel_kv), "robot.wheel_kv"),
        start=_floats(r.get("start", dr.start), 3, "robot.start"),  # type: ignore[arg-type]
    )

    m = _section(data, "imu")
    _known(m, tuple(Imu.__dataclass_fields__), "imu")
    di = Imu()
    imu = Imu(
        rate_hz=_pos(m.get("rate_hz", di.rate_hz), "imu.rate_hz"),
        mount_xyz=_floats(m.get("mount_xyz", di.mount_xyz), 3, "imu.mount_xyz"),  # type: ignore[arg-type]
        mount_rpy_deg=_floats(  # type: ignore[arg-type]
            m.get("mount_rpy_deg", di.mount_rpy_deg), 3, "imu.mount_rpy_deg"
        ),
        accel_noise_std=_pos(
            m.get("accel_noise_std", di.accel_noise_std), "imu.accel_noise_std", zero_ok=True
        ),
        gyro_noise_std=_pos(
            m.get("gyro_noise_std", di.gyro_noise_std), "imu.gyro_noise_std", zero_ok=True
        ),
        accel_bias=_floats(m.get("accel_bias", di.accel_bias), 3, "imu.accel_bias"),  # type: ignore[arg-type]
        gyro_bias=_floats(m.get("gyro_bias", di.gyro_bias), 3, "imu.gyro_bias"),  # type: ignore[arg-type]
        frame_id=str(m.get("frame_id", di.frame_id)),
    )

    s = _section(data, "sensors")
    _known(s, tuple(Sensors.__dataclass_fields__), "sensors")
    ds = Sensors()
    sensors = Sensors(
        joint_state_rate_hz=_pos(
            s.get("joint_state_rate_hz", ds.joint_state_rate_hz), "sensors.joint_state_rate_hz"
        ),
        odom_rate_hz=_pos(s.get("odom_rate_hz", ds.odom_rate_hz), "sensors.odom_rate_hz"),
        odom_yaw_source=str(s.get("odom_yaw_source", ds.odom_yaw_source)),
        odom_track_multiplier=_pos(
            s.get("odom_track_multiplier", ds.odom_track_multiplier),
            "sensors.odom_track_multiplier",
        ),
        label_rate_hz=_pos(s.get("label_rate_hz", ds.label_rate_hz), "sensors.label_rate_hz"),
        cmd_rate_hz=_pos(s.get("cmd_rate_hz", ds.cmd_rate_hz), "sensors.cmd_rate_hz"),
    )
    if sensors.odom_yaw_source not in ("gyro", "wheels"):
        raise WorldError("sensors.odom_yaw_source: must be 'gyro' or 'wheels'")

    q = _section(data, "route")
    _known(
        q,
        ("waypoints", "stadium", "speed_mps", "laps", "lookahead_m", "accel_mps2", "max_yaw_rate"),
        "route",
    )
    dq = RouteSpec()
    wps: tuple[tuple[float, float], ...] = ()
    sx = sy = None
    if q.get("stadium") is not None:
        st = q["stadium"]
        if not isinstance(st, dict):
            raise WorldError("route.stadium: expected {x: [xa, xb], y: [ya, yb]}")
        _known(st, ("x", "y"), "route.stadium")
        ax = _floats(st.get("x"), 2, "route.stadium.x")
        ay = _floats(st.get("y"), 2, "route.stadium.y")
        if not (ax[0] < ax[1] and ay[0] < ay[1]):
            raise WorldError("route.stadium: need xa < xb and ya < yb")
        sx, sy = (ax[0], ax[1]), (ay[0], ay[1])
    elif q.get("waypoints"):
        wps = tuple(
            (lambda v: (v[0], v[1]))(_floats(w, 2, f"route.waypoints[{i}]"))
            for i, w in enumerate(q["waypoints"])
        )
        if len(wps) < 2:
            raise WorldError("route.waypoints: at least 2 points")
    laps = q.get("laps", dq.laps)
    if isinstance(laps, bool) or not isinstance(laps, int) or laps < 1:
        raise WorldError(f"route.laps: a positive integer, got {laps!r}")
    route = RouteSpec(
        waypoints=wps,
        stadium_x=sx,
        stadium_y=sy,
        speed_mps=_pos(q.get("speed_mps", dq.speed_mps), "route.speed_mps"),
        laps=laps,
        lookahead_m=_pos(q.get("lookahead_m", dq.lookahead_m), "route.lookahead_m"),
        accel_mps2=_pos(q.get("accel_mps2", dq.accel_mps2), "route.accel_mps2"),
        max_yaw_rate=_pos(q.get("max_yaw_rate", dq.max_yaw_rate), "route.max_yaw_rate"),
    )

    ph = _section(data, "physics")
    _known(ph, ("timestep_s", "hfield_cell_m"), "physics")
    timestep = _pos(ph.get("timestep_s", 0.001), "physics.timestep_s")
    rate_ratio = 1.0 / (imu.rate_hz * timestep)
    if abs(rate_ratio - round(rate_ratio)) > 1e-6:
        raise WorldError(
            f"imu.rate_hz {imu.rate_hz:g}: the IMU period must be a whole number of physics "
            f"steps ({timestep:g} s)"
        )
    for name, t in terrains.items():
        if t.contact_time_s < 2 * timestep:
            raise WorldError(
                f"terrains.{name}.contact_time_s must be at least 2 physics steps "
                f"({2 * timestep:g} s)"
            )
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise WorldError(f"seed: a non-negative integer, got {seed!r}")
    return World(
        name=str(data.get("name", "world")),
        terrains=terrains,
        patches=tuple(patches),
        robot=robot,
        imu=imu,
        sensors=sensors,
        route=route,
        timestep_s=timestep,
        hfield_cell_m=_pos(ph.get("hfield_cell_m", 0.025), "physics.hfield_cell_m"),
        seed=seed,
        source=copy.deepcopy(dict(data)),
    )


def load_world(path: str | Path = DEFAULT_WORLD, overrides: Sequence[str] = ()) -> World:
    """The world of YAML file `path` (relative paths: cwd, then the package's share dir)."""
    from ..paths import resolve

    f = resolve(path)
    try:
        data = yaml.safe_load(Path(f).read_text())
    except OSError as exc:
        raise WorldError(f"world file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise WorldError(f"world file {path}: bad YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise WorldError(f"world file {path}: not a mapping")
    return world_from_dict(apply_overrides(data, overrides))
