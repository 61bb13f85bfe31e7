"""A rosbag2 through the terrain_odt graph, on simulated time (for machines with ROS 2).

    ros2 launch terrain_odt replay.launch.py serial_port:=socket://127.0.0.1:5760
    ros2 launch terrain_odt replay.launch.py bag:=/path/to/drive.mcap rate:=2.0 \\
        serial_port:=/dev/ttyUSB0 truth_as_operator:=true

Starts every node of `terrain_odt.ros.graph.NODES` (as robot.launch.py does) with `use_sim_time`
true, and two seconds later the player: `ros2 bag play <bag> --clock 100 --rate <rate>` where
`ros2 bag` is installed, else the project's own `bag_player` node (the player of
`terrain-odt replay`; `ros2 bag` has no pip wheel); `player:=ros2_bag|terrain_odt` chooses.
`playback_duration:=S` plays only the first S seconds of the bag. Parameters:
`params_file` (default: the installed config/terrain_odt.yaml), then `extra_params_file`
(default: config/demo.yaml, the demo bag's model; empty = none), then the override arguments
that are given. `bag` defaults to the installed demo bag (data/demo/borealtc_demo.mcap).
`truth_as_operator:=true` plays the bag's ground truth (/terrain/label_truth) as operator labels,
so the bridge fine-tunes on the whole drive.

The co-processor is a board (`serial_port:=/dev/ttyUSB0`) or the emulator, started separately
from a source checkout, then `serial_port:=socket://127.0.0.1:5760`:

    cd firmware && cargo run --release -p odt-emu -- --baud 921600 \
        --model ../models/borealtc_mlp.odtm --tcp 127.0.0.1:5760

On machines without `ros2`, the equivalent is `terrain-odt replay <bag>`: the same nodes, the
same parameter files, its own player with /clock and the emulator, and it also evaluates
(accuracy before and after on-device fine-tuning, prequential accuracy, confusion matrices).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription

from terrain_odt.ros.launch_description import (
    PLAYERS,
    bag_player_actions,
    declare_graph_arguments,
    graph_node_actions,
    share_path,
)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "bag",
                default_value=share_path("data", "demo", "borealtc_demo.mcap"),
                description="rosbag2 to play (directory, .mcap or .db3)",
            ),
            DeclareLaunchArgument(
                "rate", default_value="1.0", description="playback rate, times real time"
            ),
            DeclareLaunchArgument(
                "playback_duration",
                default_value="0",
                description="play only this many seconds of the bag (0 = all)",
            ),
            DeclareLaunchArgument(
                "player",
                default_value="auto",
                choices=list(PLAYERS),
                description="bag player: ros2_bag (`ros2 bag play`), terrain_odt (the "
                "package's bag_player node), auto = ros2_bag when installed",
            ),
            DeclareLaunchArgument(
                "truth_as_operator",
                default_value="false",
                description="remap the bag's /terrain/label_truth to /terrain/operator_label",
            ),
            *declare_graph_arguments(params_file=share_path("config", "terrain_odt.yaml")),
            DeclareLaunchArgument(
                "extra_params_file",
                default_value=share_path("config", "demo.yaml"),
                description="parameter file loaded after params_file (empty = none)",
            ),
            OpaqueFunction(
                function=graph_node_actions,
                kwargs={
                    "params_file_args": ["params_file", "extra_params_file"],
                    "use_sim_time": True,
                },
            ),
            OpaqueFunction(function=bag_player_actions),
        ]
    )
