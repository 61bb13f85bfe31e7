"""The MuJoCo engine: a model built from the world description and a simulator stepping it.

Model (`build_mjcf`): every patch is a heightfield geom of its own (its terrain's friction,
torsional and rolling friction, contact compliance; heights from `World.heightfield`), with
`priority` over the wheels so the contact takes the terrain's parameters; a floor plane 10 cm
below catches a robot that leaves the map. Rolling resistance is not MuJoCo's rolling friction
(on heightfields its soft constraint chatters: 1-2 m/s² of spurious vibration on flat ground)
but a torque on each wheel joint, `-rolling_friction · N · tanh(ω / 0.5 rad/s)` with the
static wheel load `N` and the terrain under that wheel (looked up once per IMU period), the
load soft soil puts on the motors. The rover is a free-floating box chassis with four
sphere wheels on hinge joints (axis +y), each driven by a velocity-loop actuator (`kv`,
torque limit `max_wheel_torque_nm`): its force is the motor torque reported as joint effort. The
wheels are spheres, and a sphere with isotropic friction under MuJoCo's soft contacts hardly
lets a skid-steer turn (the solver spends the friction cone on the lateral direction, unlike
Coulomb friction, which points against the slip): so each sphere sits on a passive "scrub"
hinge (axis x) that lets it roll sideways, reset to angle 0 every IMU period (invisible on a
sphere), against a lateral resistance of `μ · N · v_lat / SCRUB_SPEED_MPS` (joint damping set
from the terrain under that wheel): sideways scrub like a tyre's, Coulomb-capped by the
contact. The IMU is a site on the chassis at the configured mounting with an accelerometer (proper
acceleration: gravity included, +9.81 m/s² up at rest) and a gyro.

`MujocoSim.step(left, right)` advances one IMU period (a whole number of physics steps) with
the wheel speed commands (rad/s) of each side and returns a `Tick`: the IMU sample (averaged
over the period's physics steps, as an IMU's digital low-pass filter does, then white noise and
bias added), side-averaged wheel velocity, position and motor torque, and the ground truth
(pose in the world frame). Everything is deterministic for a given world and seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .world import World, rpy_matrix

__all__ = ["WHEEL_JOINTS", "MujocoSim", "Tick", "build_mjcf"]

#: MuJoCo joint names, per side (front, rear).
WHEEL_JOINTS: dict[str, tuple[str, str]] = {
    "left": ("front_left_wheel", "rear_left_wheel"),
    "right": ("front_right_wheel", "rear_right_wheel"),
}
SETTLE_S = 0.5
SCRUB_SPEED_MPS = 0.15
"""Lateral wheel speed at which the scrub resistance reaches μ · N (viscous below; the
contact's own friction caps it at μ · N above)."""
"""Simulated before time 0 (the rover settles on its wheels; not reported)."""


def _quat(rpy_deg: tuple[float, float, float]) -> tuple[float, float, float, float]:
    r, p, y = (math.radians(v) / 2 for v in rpy_deg)
    cr, sr, cp, sp, cy, sy = (
        math.cos(r),
        math.sin(r),
        math.cos(p),
        math.sin(p),
        math.cos(y),
        math.sin(y),
    )
    return (
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    )


def _f(*v: float) -> str:
    return " ".join(f"{x:.6g}" for x in v)


def build_mjcf(world: World) -> tuple[str, list[np.ndarray]]:
    """MJCF text of `world` and the heights (m) of each patch's heightfield, in patch order
    (`MujocoSim` loads them into the compiled model: the text only declares their grids)."""
    rb = world.robot
    heights = [world.heightfield(i) for i in range(len(world.patches))]
    assets, geoms = [], []
    for i, (p, h) in enumerate(zip(world.patches, heights, strict=True)):
        t = world.terrains[p.terrain]
        lo, hi = float(h.min()), float(h.max())
        elev = max(hi - lo, 1e-6)
        nr, nc = h.shape
        lx, ly = p.size
        cx, cy = p.center
        assets.append(
            f'<hfield name="patch{i}" nrow="{nr}" ncol="{nc}" '
            f'size="{_f(lx / 2, ly / 2, elev, 0.1)}"/>'
        )
        geoms.append(
            f'<geom name="patch{i}_{p.terrain}" type="hfield" hfield="patch{i}" '
            f'pos="{_f(cx, cy, lo)}" priority="1" condim="{4 if t.torsional_friction > 0 else 3}" '
            f'friction="{_f(t.friction, t.torsional_friction, 0.0)}" '
            f'solref="{_f(t.contact_time_s, 1.0)}" contype="1" conaffinity="6" rgba="{_rgba(i)}"/>'
        )
    sx, sy, syaw = rb.start
    lx, ly, lz = rb.chassis_size_m
    z0 = rb.wheel_radius_m + rb.axle_drop_m + 0.01
    q = _quat((0.0, 0.0, syaw))
    wheels, acts = [], []
    for side, ysign in (("left", 1.0), ("right", -1.0)):
        for name, xsign in zip(WHEEL_JOINTS[side], (1.0, -1.0), strict=True):
            pos = _f(xsign * rb.wheelbase_m / 2, ysign * rb.track_width_m / 2, -rb.axle_drop_m)
            wheels.append(
                f'<body name="{name}_hub" pos="{pos}">'
                '<inertial pos="0 0 0" mass="0.05" diaginertia="1e-4 1e-4 1e-4"/>'
                f'<joint name="{name}_scrub" type="hinge" axis="1 0 0"/>'
                f'<body name="{name}">'
                f'<joint name="{name}" type="hinge" axis="0 1 0" damping="0.05" armature="0.02"/>'
                f'<geom type="sphere" size="{_f(rb.wheel_radius_m)}" mass="{_f(rb.wheel_mass_kg)}" '
                f'friction="0.01 0 0" condim="3" contype="2" conaffinity="0" rgba="0.1 0.1 0.1 1"/>'
                "</body></body>"
            )
            acts.append(
                f'<velocity name="{name}_motor" joint="{name}" kv="{_f(rb.wheel_kv)}" '
                f'forcelimited="true" '
                f'forcerange="{_f(-rb.max_wheel_torque_nm, rb.max_wheel_torque_nm)}"/>'
            )
    mq = _quat(world.imu.mount_rpy_deg)
    xml = f"""<mujoco model="{world.name}">
  <compiler angle="radian"/>
  <option timestep="{_f(world.timestep_s)}" integrator="implicitfast"
          cone="elliptic" impratio="10"/>
  <size memory="64M"/>
  <asset>
    {"".join(assets)}
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="500 500 0.1" pos="0 0 -0.1" contype="1"
          conaffinity="6" rgba="0.3 0.3 0.3 1"/>
    {"".join(geoms)}
    <body name="base_link" pos="{_f(sx, sy, z0)}" quat="{_f(*q)}">
      <freejoint name="base"/>
      <geom name="chassis" type="box" size="{_f(lx / 2, ly / 2, lz / 2)}"
            mass="{_f(rb.chassis_mass_kg)}" contype="4" conaffinity="0" rgba="0.9 0.7 0.1 1"/>
      <site name="imu" pos="{_f(*world.imu.mount_xyz)}" quat="{_f(*mq)}"/>
      {"".join(wheels)}
    </body>
  </worldbody>
  <actuator>
    {"".join(acts)}
  </actuator>
  <sensor>
    <accelerometer name="imu_accel" site="imu"/>
    <gyro name="imu_gyro" site="imu"/>
  </sensor>
</mujoco>
"""
    return xml, heights


def _rgba(i: int) -> str:
    palette = [
        (0.35, 0.35, 0.38),
        (0.6, 0.55, 0.45),
        (0.3, 0.6, 0.25),
        (0.85, 0.75, 0.5),
        (0.8, 0.9, 1.0),
        (0.5, 0.4, 0.3),
    ]
    r, g, b = palette[i % len(palette)]
    return _f(r, g, b, 1.0)


@dataclass(frozen=True)
class Tick:
    """One IMU period of the simulation (`t`: its end, s since the start)."""

    t: float
    gyro: tuple[float, float, float]
    accel: tuple[float, float, float]
    #: Side averages (left, right) over the period: wheel velocity (rad/s), motor torque (N·m).
    wheel_vel: tuple[float, float]
    wheel_effort: tuple[float, float]
    #: Side averages of the wheel angles (rad) at the end of the period.
    wheel_pos: tuple[float, float]
    #: Ground truth: chassis pose in the world frame at the end of the period.
    x: float
    y: float
    z: float
    yaw: float


class MujocoSim:
    """The world in MuJoCo, stepped one IMU period at a time."""

    def __init__(self, world: World, seed: int | None = None) -> None:
        import mujoco

        self.world = world
        self._mj = mujoco
        xml, heights = build_mjcf(world)
        self.xml = xml
        self.model = mujoco.MjModel.from_xml_string(xml)
        m = self.model
        for i, h in enumerate(heights):
            lo, hi = float(h.min()), float(h.max())
            norm = (h - lo) / max(hi - lo, 1e-6)
            adr, n = int(m.hfield_adr[i]), int(m.hfield_nrow[i] * m.hfield_ncol[i])
            m.hfield_data[adr : adr + n] = norm.ravel()
        self.data = mujoco.MjData(m)
        self.substeps = round(1.0 / (world.imu.rate_hz * world.timestep_s))
        self.dt = self.substeps * world.timestep_s
        jid = {
            side: [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
            for side, names in WHEEL_JOINTS.items()
        }
        self._dof = {s: [int(m.jnt_dofadr[j]) for j in ids] for s, ids in jid.items()}
        self._qpos = {s: [int(m.jnt_qposadr[j]) for j in ids] for s, ids in jid.items()}
        self._act = {
            s: [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, f"{n}_motor") for n in names]
            for s, names in WHEEL_JOINTS.items()
        }
        self._ctrl_l = np.array(self._act["left"])
        self._ctrl_r = np.array(self._act["right"])
        self._dofs = np.array(self._dof["left"] + self._dof["right"])
        self._acts = np.array(self._act["left"] + self._act["right"])
        self._base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "base_link")
        self._wheel_bodies = [
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
            for n in WHEEL_JOINTS["left"] + WHEEL_JOINTS["right"]
        ]
        rb = world.robot
        self._load = (rb.chassis_mass_kg + 4 * rb.wheel_mass_kg) * 9.81 / 4
        self._rolling = {k: t.rolling_friction for k, t in world.terrains.items()}
        self._friction = {k: t.friction for k, t in world.terrains.items()}
        sid = [
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{n}_scrub")
            for n in WHEEL_JOINTS["left"] + WHEEL_JOINTS["right"]
        ]
        self._scrub_dof = np.array([int(m.jnt_dofadr[j]) for j in sid])
        self._scrub_qpos = np.array([int(m.jnt_qposadr[j]) for j in sid])
        self._scrub_scale = self._load * rb.wheel_radius_m**2 / SCRUB_SPEED_MPS
        imu = world.imu
        self._rng = np.random.default_rng([world.seed if seed is None else seed, 99])
        self._acc_bias = np.asarray(imu.accel_bias, dtype=float)
        self._gyro_bias = np.asarray(imu.gyro_bias, dtype=float)
        #: IMU axes in the chassis frame (columns), for turning IMU readings into chassis ones.
        self.mount_rotation = rpy_matrix(imu.mount_rpy_deg)
        self.t = 0.0
        self._settle()

    def _settle(self) -> None:
        n = round(SETTLE_S / self.world.timestep_s)
        self._mj.mj_step(self.model, self.data, nstep=n)

    def step(self, left: float, right: float) -> Tick:
        """One IMU period with wheel speed commands `left`, `right` (rad/s, each side)."""
        mj, m, d = self._mj, self.model, self.data
        d.ctrl[self._ctrl_l] = left
        d.ctrl[self._ctrl_r] = right
        under = [self.world.terrain_at(*d.xpos[b][:2]) for b in self._wheel_bodies]
        coef = np.array([self._rolling.get(u, 0.0) * self._load for u in under])
        m.dof_damping[self._scrub_dof] = [
            self._friction.get(u, 1.0) * self._scrub_scale for u in under
        ]
        # The scrub hinge only lets the sphere roll sideways: back to 0 (no physical effect on
        # a sphere) so the drive axis stays horizontal.
        d.qpos[self._scrub_qpos] = 0.0
        sens = np.zeros(6)
        vel = np.zeros(4)
        eff = np.zeros(4)
        for _ in range(self.substeps):
            d.qfrc_applied[self._dofs] = -coef * np.tanh(d.qvel[self._dofs] * 2.0)
            mj.mj_step(m, d)
            sens += d.sensordata[:6]
            vel += d.qvel[self._dofs]
            eff += d.actuator_force[self._acts]
        k = 1.0 / self.substeps
        sens *= k
        vel *= k
        eff *= k
        imu = self.world.imu
        acc = sens[:3] + self._acc_bias + self._rng.normal(0.0, imu.accel_noise_std, 3)
        gyr = sens[3:] + self._gyro_bias + self._rng.normal(0.0, imu.gyro_noise_std, 3)
        self.t += self.dt
        pos = d.xpos[self._base]
        qw, qx, qy, qz = d.xquat[self._base]
        yaw = math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        ql, qr = self._qpos["left"], self._qpos["right"]
        return Tick(
            t=self.t,
            gyro=(float(gyr[0]), float(gyr[1]), float(gyr[2])),
            accel=(float(acc[0]), float(acc[1]), float(acc[2])),
            wheel_vel=(0.5 * float(vel[0] + vel[1]), 0.5 * float(vel[2] + vel[3])),
            wheel_effort=(0.5 * float(eff[0] + eff[1]), 0.5 * float(eff[2] + eff[3])),
            wheel_pos=(
                0.5 * float(d.qpos[ql[0]] + d.qpos[ql[1]]),
                0.5 * float(d.qpos[qr[0]] + d.qpos[qr[1]]),
            ),
            x=float(pos[0]),
            y=float(pos[1]),
            z=float(pos[2]),
            yaw=yaw,
        )
