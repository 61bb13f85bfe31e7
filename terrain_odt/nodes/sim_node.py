"""Live simulation node (`terrain-odt sim`): the MuJoCo drive published on ROS with `/clock`.

Publishes `/clock` (at most 100 Hz of sim time), `/imu/data` (sensor-data QoS), `/odom`,
`/joint_states` (`left_wheel`, `right_wheel`: side averages, sensor-data QoS) and
`/terrain/label_truth` (the patch class under the robot, 1 Hz and on change; reliable,
transient local); subscribes `/cmd_vel` (a recent one drives the robot, otherwise the route
follower does, or with `drive='cmd_vel'` the robot stands still). Paced to `rate` × real
time (0: as fast as it simulates). Run the terrain_odt graph with `use_sim_time` next to it,
e.g. `terrain-odt launch --use-sim-time --params-file <terrain-odt sim --write-params FILE>`.
The logic is `terrain_odt.sim` (no ROS there); this module only turns events into messages.
"""

from __future__ import annotations

import math
import sys
import time

import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import String

from ..sim.drive import Drive, ImuEvent, JointEvent, LabelEvent, OdomEvent
from ..sim.record import JOINT_NAMES
from ..sim.world import World

__all__ = ["SimNode", "run_live"]


def _stamp(t: float) -> Time:
    ns = round(t * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimNode(Node):
    """Publishers and the `/cmd_vel` subscription of the live simulation."""

    def __init__(self, drive: Drive) -> None:
        super().__init__("terrain_sim")
        self.drive = drive
        self.imu_frame = drive.world.imu.frame_id
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.pub_clock = self.create_publisher(Clock, "/clock", 10)
        self.pub_imu = self.create_publisher(Imu, "/imu/data", qos_profile_sensor_data)
        self.pub_odom = self.create_publisher(Odometry, "/odom", 10)
        self.pub_joints = self.create_publisher(
            JointState, "/joint_states", qos_profile_sensor_data
        )
        self.pub_label = self.create_publisher(String, "/terrain/label_truth", latched)
        self.create_subscription(Twist, "/cmd_vel", self._on_cmd, 10)
        self._last_clock = -1

    def _on_cmd(self, msg: Twist) -> None:
        self.drive.set_cmd_vel(msg.linear.x, msg.angular.z)

    def clock(self, t: float) -> None:
        slot = math.floor(t * 100)
        if slot != self._last_clock:
            self._last_clock = slot
            self.pub_clock.publish(Clock(clock=_stamp(t)))

    def publish(self, e: object) -> None:
        if isinstance(e, ImuEvent):
            m = Imu()
            m.header.stamp = _stamp(e.t)
            m.header.frame_id = self.imu_frame
            m.orientation_covariance[0] = -1.0
            m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = e.gyro
            a = m.linear_acceleration
            a.x, a.y, a.z = e.accel
            self.pub_imu.publish(m)
        elif isinstance(e, JointEvent):
            j = JointState()
            j.header.stamp = _stamp(e.t)
            j.header.frame_id = "base_link"
            j.name = list(JOINT_NAMES)
            j.position = list(e.position)
            j.velocity = list(e.velocity)
            j.effort = list(e.effort)
            self.pub_joints.publish(j)
        elif isinstance(e, OdomEvent):
            o = Odometry()
            o.header.stamp = _stamp(e.t)
            o.header.frame_id = "odom"
            o.child_frame_id = "base_link"
            o.pose.pose.position.x, o.pose.pose.position.y = e.x, e.y
            o.pose.pose.orientation.z = math.sin(0.5 * e.yaw)
            o.pose.pose.orientation.w = math.cos(0.5 * e.yaw)
            o.twist.twist.linear.x, o.twist.twist.angular.z = e.v, e.w
            self.pub_odom.publish(o)
        elif isinstance(e, LabelEvent):
            self.pub_label.publish(String(data=e.name))


def run_live(
    world: World,
    *,
    rate: float = 1.0,
    drive: str = "route",
    duration_s: float | None = None,
    args: list[str] | None = None,
) -> int:
    """Run the live simulation until the route is done (`drive='route'`), `duration_s`, or
    Ctrl-C. Returns the exit status."""
    from ..sim.mujoco_sim import MujocoSim

    if drive == "cmd_vel" and duration_s is None:
        duration_s = math.inf
    rclpy.init(args=args)
    node: SimNode | None = None
    try:
        d = Drive(world, MujocoSim(world), follow_route=drive == "route")
        node = SimNode(d)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        log = node.get_logger()
        log.info(
            f"world {world.name}: {len(world.patches)} patches, driving "
            f"{'the route' if drive == 'route' else 'by /cmd_vel'} at "
            f"{'full speed' if rate <= 0 else f'{rate:g}x real time'}"
        )
        t_wall0 = time.monotonic()
        next_spin = 0.0
        for e in d.events(None if duration_s == math.inf else duration_s):
            node.clock(e.t)
            node.publish(e)
            if e.t >= next_spin:  # callbacks (/cmd_vel) at 50 Hz of sim time
                next_spin = e.t + 0.02
                ex.spin_once(timeout_sec=0.0)
                if not rclpy.ok():
                    break
                if rate > 0:
                    ahead = e.t / rate - (time.monotonic() - t_wall0)
                    if ahead > 0:
                        time.sleep(ahead)
        st = d.stats()
        log.info(
            f"done: {st.sim_s:.1f} s simulated; odometry {st.odom_distance_m:.2f} m, true "
            f"{st.truth_distance_m:.2f} m"
        )
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # a bad world or engine error: one line, no traceback
        print(f"terrain-odt sim: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
