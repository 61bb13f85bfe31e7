"""The terrain_odt graph on a robot: every node of `terrain_odt.ros.graph.NODES`, one process each.

    ros2 launch terrain_odt robot.launch.py serial_port:=/dev/ttyUSB0
    ros2 launch terrain_odt robot.launch.py params_file:=/path/to/my_robot.yaml
    ros2 launch terrain_odt robot.launch.py --show-args

Parameters come from `params_file` (default: the installed config/terrain_odt.yaml, every
parameter at its default), then `use_sim_time` and the override arguments that are given
(serial_port, baud_rate, model_sidecar, model_blob; empty = the file's value).

Without `ros2`/`launch` (pip-only machines), `terrain-odt launch` starts the same nodes from the
same parameter files in one process.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription

from terrain_odt.ros.launch_description import (
    declare_graph_arguments,
    graph_node_actions,
    share_path,
)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *declare_graph_arguments(params_file=share_path("config", "terrain_odt.yaml")),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="follow /clock (a simulator or a bag played with --clock)",
            ),
            OpaqueFunction(
                function=graph_node_actions, kwargs={"params_file_args": ["params_file"]}
            ),
        ]
    )
