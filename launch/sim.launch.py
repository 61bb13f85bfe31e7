"""The terrain world in Gazebo (gz sim Harmonic or later) with the terrain_odt graph on sim time.

    ros2 launch terrain_odt sim.launch.py serial_port:=socket://127.0.0.1:5760 \\
        model_sidecar:=$PWD/build/sim/pretrained.json model_blob:=$PWD/build/sim/pretrained.odtm

NOT RUN on the machine terrain_odt is developed on (Gazebo cannot be installed there): the
generated files are only parsed by the tests (test/test_sim.py); the closed-loop result comes
from the MuJoCo engine (`make sim`). Needs a ROS 2 install with `ros_gz_sim`/`gz sim` and
`ros_gz_bridge`.

At launch, the world description (`world`, default the installed config/sim_world.yaml) is
exported with `terrain_odt.sim.gazebo.export_gazebo` into `export_dir` (the same files as
`terrain-odt sim --export-gazebo DIR`): world and robot SDF, the ros_gz_bridge configuration and
the nodes' parameters for this world (class names, map regions, IMU rate, wheel joints). Then:
`gz sim -r <export_dir>/world.sdf` (models found through GZ_SIM_RESOURCE_PATH), the bridge
(`/clock`, `/imu/data`, `/odom`, `/tf`, `/joint_states` from Gazebo, `/cmd_vel` to it), and every
node of the terrain_odt graph with `use_sim_time` and the parameter files `params_file`, then
the exported `terrain_odt_sim.yaml`, then the override arguments. Drive with any `/cmd_vel`
source (teleop, Nav2); the MuJoCo engine's route follower is not part of the Gazebo export.
The model must have this world's classes (e.g. the one `make sim` pretrains).
"""

import os

from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.launch_description import LaunchDescription
from launch_ros.actions import Node

from terrain_odt.ros.launch_description import (
    declare_graph_arguments,
    graph_node_actions,
    share_path,
)


def _sim_actions(context):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from terrain_odt.sim.gazebo import export_gazebo
    from terrain_odt.sim.world import load_world

    cfg = context.launch_configurations
    out = Path(cfg["export_dir"])
    export_gazebo(load_world(cfg["world"]), out, wheels=cfg.get("wheels", "true") == "true")
    cfg["sim_params_file"] = str(out / "terrain_odt_sim.yaml")
    resource = os.pathsep.join(p for p in (str(out), os.environ.get("GZ_SIM_RESOURCE_PATH")) if p)
    return [
        SetEnvironmentVariable("GZ_SIM_RESOURCE_PATH", resource),
        ExecuteProcess(cmd=["gz", "sim", "-r", str(out / "world.sdf")], output="screen"),
        Node(
            package="ros_gz_bridge",
            executable="parameter_bridge",
            name="terrain_sim_bridge",
            parameters=[{"config_file": str(out / "bridge.yaml"), "use_sim_time": True}],
            output="screen",
        ),
        *graph_node_actions(
            context, params_file_args=["params_file", "sim_params_file"], use_sim_time=True
        ),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "world",
                default_value=share_path("config", "sim_world.yaml"),
                description="terrain world description (terrain_odt/sim/world.py)",
            ),
            DeclareLaunchArgument(
                "export_dir",
                default_value="/tmp/terrain_odt_gazebo",
                description="where the Gazebo files generated from the world are written",
            ),
            DeclareLaunchArgument(
                "wheels",
                default_value="true",
                description="wheel features on (false: IMU-only model)",
            ),
            *declare_graph_arguments(params_file=share_path("config", "terrain_odt.yaml")),
            OpaqueFunction(function=_sim_actions),
        ]
    )
