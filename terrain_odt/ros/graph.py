"""The one definition of the terrain_odt ROS graph: nodes, their parameters, topics and services.

Everything that starts the graph reads it from here: `launch/robot.launch.py` and
`launch/replay.launch.py` (for `ros2 launch`), the one-process launcher
(`terrain-odt launch`, `terrain_odt.ros.launcher`) and the replay evaluation
(`terrain-odt replay`). Each node declares exactly the parameters listed here (with these
descriptions), and the README's parameter tables are generated from it
(`python -m terrain_odt.ros.graph --markdown`; a test keeps them in sync).

This module imports no ROS package, so launch files, docs and tests can use it anywhere.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BOREALTC_CLASSES",
    "NODES",
    "TOOL_NODES",
    "NodeSpec",
    "ParamSpec",
    "TopicSpec",
    "markdown_tables",
    "node_spec",
]

BOREALTC_CLASSES = ("ASPHALT", "FLOORING", "ICE", "SANDY_LOAM", "SNOW")
"""Class names of the BorealTC terrains (the shipped demo model's classes)."""

ParamValue = bool | int | float | str | list[str] | list[float] | list[int]


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: name, default (its Python type is the parameter's type), description.

    `choices`, `min`, `max` are checked when the node starts (`check`); a value of the wrong
    type is a clear error, except that an integer is accepted for a float parameter.
    """

    name: str
    default: ParamValue
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    #: For list parameters with an empty default: the element type.
    item_type: type = str

    @property
    def type_name(self) -> str:
        d = self.default
        if isinstance(d, bool):
            return "bool"
        if isinstance(d, int):
            return "int"
        if isinstance(d, float):
            return "double"
        if isinstance(d, str):
            return "string"
        item = type(d[0]) if d else self.item_type
        return {str: "string[]", float: "double[]", int: "int[]"}.get(item, "list")

    def check(self, value: Any) -> ParamValue:
        """`value` converted to this parameter's type, or `ValueError` saying what is wrong."""
        if value is None:  # declared without a value, e.g. `-p name:=[]`
            return self.default
        d = self.default
        bad = ValueError(
            f"parameter '{self.name}' must be a {self.type_name}, got {value!r} "
            f"({type(value).__name__})"
        )
        out: ParamValue
        if isinstance(d, bool):
            if not isinstance(value, bool):
                raise bad
            out = value
        elif isinstance(d, int):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            if isinstance(value, float) and not value.is_integer():
                raise bad
            out = int(value)
        elif isinstance(d, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            out = float(value)
            if math.isnan(out):
                raise ValueError(f"parameter '{self.name}' must not be NaN")
        elif isinstance(d, str):
            if not isinstance(value, str):
                raise bad
            out = value
        else:
            item = type(d[0]) if d else self.item_type
            try:
                seq = list(value)
            except TypeError:
                raise bad from None
            if isinstance(value, str | bytes):
                raise bad
            if item is float:
                if any(isinstance(v, bool) or not isinstance(v, int | float) for v in seq):
                    raise bad
                out = [float(v) for v in seq]
            elif item is int:
                if any(isinstance(v, bool) or not isinstance(v, int) for v in seq):
                    raise bad
                out = [int(v) for v in seq]
            else:
                if any(not isinstance(v, str) for v in seq):
                    raise bad
                out = [str(v) for v in seq]
        if self.choices and out not in self.choices:
            raise ValueError(
                f"parameter '{self.name}' must be one of {', '.join(self.choices)}; got {out!r}"
            )
        if isinstance(out, int | float) and not isinstance(out, bool):
            if self.min is not None and out < self.min:
                raise ValueError(f"parameter '{self.name}' must be >= {self.min}, got {out}")
            if self.max is not None and out > self.max:
                raise ValueError(f"parameter '{self.name}' must be <= {self.max}, got {out}")
        return out


@dataclass(frozen=True)
class TopicSpec:
    """A topic or service of a node (for docs and tests): name, type, direction, note."""

    name: str
    type: str
    direction: str  # "sub", "pub", "srv"
    note: str


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph."""

    name: str
    #: console_scripts entry point installed to lib/terrain_odt (what `ros2 launch` runs).
    executable: str
    #: `module:Class` of the rclpy node (what the one-process launcher instantiates).
    factory: str
    description: str
    params: tuple[ParamSpec, ...]
    topics: tuple[TopicSpec, ...] = field(default=())

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no parameter '{name}'")

    def defaults(self) -> dict[str, ParamValue]:
        return {p.name: p.default for p in self.params}


P = ParamSpec
T = TopicSpec

IMU_FEATURES = NodeSpec(
    name="imu_features",
    executable="imu_features",
    factory="terrain_odt.nodes.imu_features:ImuFeaturesNode",
    description="IMU samples → feature windows (the same extractor as offline training).",
    params=(
        P(
            "sample_rate_hz",
            100.0,
            "IMU rate the features are computed at (after decimation), Hz; "
            "must match the model's training data",
            min=1.0,
        ),
        P(
            "input_decimation",
            1,
            "average each block of this many IMU samples into one (e.g. 4 "
            "for a 400 Hz IMU and a 100 Hz model); 1 = off",
            min=1,
            max=64,
        ),
        P("window_s", 1.7, "feature window length, s", min=0.1),
        P("hop_s", 0.5, "hop between window starts, s", min=0.01),
        P(
            "bands",
            [],
            "spectral band edges, Hz, increasing, up to Nyquist (e.g. [0.5, 2.0, 4.0, 25.0]); "
            "empty = derived from sample_rate_hz (the shipped models' bands at 100 Hz); must "
            "match the model (its sidecar's features)",
            item_type=float,
        ),
        P(
            "wheel_joints_left",
            ["left_wheel"],
            "JointState joints of the left side whose velocity and effort make the wheel "
            "features (averaged); empty, with wheel_joints_right empty = IMU features only "
            "(for an IMU-only model)",
        ),
        P("wheel_joints_right", ["right_wheel"], "JointState joints of the right side"),
        P(
            "wheel_radius_m",
            0.1651,
            "JointState velocity (rad/s) times this is the wheel's ground speed (m/s), the unit "
            "the wheel features use (0.1651: Husky A200; 1.0 if your velocities are m/s)",
            min=1e-6,
        ),
        P(
            "wheel_timeout_s",
            0.5,
            "a window waits at most this long (IMU time) for the wheel samples of its span; "
            "then it is judged with what arrived (rejected 'wheels' with too few)",
            min=0.0,
        ),
        P(
            "min_wheel_samples",
            3,
            "fewest wheel samples inside a window (fewer: the window is rejected, 'wheels')",
            min=2,
        ),
        P(
            "max_gap_samples",
            3,
            "longest run of missing samples bridged by interpolation; "
            "longer gaps reject the window",
            min=0,
        ),
        P(
            "rate_tolerance",
            0.1,
            "allowed relative deviation of the sample count per window from the nominal one",
            min=0.0,
            max=1.0,
        ),
        P(
            "stamp_source",
            "header",
            "sample time: 'header' (Imu header.stamp) or 'receipt' "
            "(node clock on arrival, for drivers with bad stamps)",
            choices=("header", "receipt"),
        ),
        P(
            "time_jump_reset_s",
            1.0,
            "a sample older than the newest one by more than this is a "
            "clock jump (e.g. a bag restarted): the window buffer restarts instead of rejecting "
            "every later sample",
            min=0.0,
        ),
        P(
            "imu_poll_hz",
            500.0,
            "0: one callback per IMU message; > 0: polling: drain the IMU queue when the next "
            "window is due (from the observed IMU rate, at most every 0.2 s), polling at this "
            "rate while its last sample is late; far fewer rclpy wake-ups (cheaper at high "
            "IMU rates and in fast replays), up to 1/imu_poll_hz of added latency",
            min=0.0,
            max=2000.0,
        ),
        P("qos_depth", 200, "IMU subscription queue depth (sensor-data QoS, best effort)", min=1),
        P(
            "diagnostics_period_s",
            1.0,
            "period of this node's /diagnostics status, s (0 = off)",
            min=0.0,
        ),
    ),
    topics=(
        T("/imu/data", "sensor_msgs/msg/Imu", "sub", "sensor-data QoS (best effort)"),
        T(
            "/joint_states",
            "sensor_msgs/msg/JointState",
            "sub",
            "wheel velocity and effort (wheel features on), sensor-data QoS",
        ),
        T(
            "/terrain/features",
            "std_msgs/msg/Float64MultiArray",
            "pub",
            "one message per accepted window: data[0:2] = window start and end time (s, the "
            "layout's data_offset = 2), then the features; dim[0] label 'features; <what they "
            "are>' (rate, window, bands, wheels), checked by the bridge against the model",
        ),
        T(
            "/diagnostics",
            "diagnostic_msgs/msg/DiagnosticArray",
            "pub",
            "windows accepted / rejected by reason, dropped samples",
        ),
    ),
)

TERRAIN_LABELER = NodeSpec(
    name="terrain_labeler",
    executable="terrain_labeler",
    factory="terrain_odt.nodes.terrain_labeler:TerrainLabelerNode",
    description="Operator, joystick, map-region and odometry cues → the label in force.",
    params=(
        P(
            "class_names",
            list(BOREALTC_CLASSES),
            "terrain classes a cue may name (case is "
            "ignored); other names are rejected and counted",
        ),
        P(
            "settle_s",
            2.0,
            "a new cue, or motion that became steady again, is only in force "
            "after this long (drops transitions)",
            min=0.0,
        ),
        P(
            "operator_timeout_s",
            0.0,
            "an operator label expires this long after it was last "
            "given (0 = it holds until changed or cleared)",
            min=0.0,
        ),
        P(
            "require_motion",
            True,
            "label only while moving steadily (the odometry gates "
            "below); false = odometry is not needed",
        ),
        P("min_speed", 0.1, "slowest |v| at which a label is in force, m/s", min=0.0),
        P("max_speed", 10.0, "fastest |v| at which a label is in force, m/s", min=0.0),
        P("max_yaw_rate", 1.0, "largest |yaw rate| at which a label is in force, rad/s", min=0.0),
        P(
            "max_accel",
            0.5,
            "largest |dv/dt| over steady_window_s that still counts as steady, m/s²",
            min=0.0,
        ),
        P("steady_window_s", 1.0, "odometry history judged for steadiness, s", min=0.0),
        P("odom_timeout_s", 0.5, "odometry older than this is stale (no label)", min=0.0),
        P(
            "slip_max",
            0.3,
            "largest relative slip |v_cmd − v| / |v_cmd| with a label in force",
            min=0.0,
        ),
        P("slip_min_cmd", 0.05, "slip is only judged when |v_cmd| is at least this, m/s", min=0.0),
        P("cmd_timeout_s", 0.5, "a /cmd_vel older than this is not used for slip", min=0.0),
        P("operator_overrides_regions", True, "an operator cue wins over a map region"),
        P(
            "regions",
            [],
            "map regions, one string each: 'CLASS: x1,y1; x2,y2; x3,y3[; ...]' "
            "(polygon in the odom frame, m)",
        ),
        P(
            "joy_buttons",
            [],
            "joystick button mapping, one string each: 'BUTTON:CLASS' or "
            "'BUTTON:none' (clears the operator label)",
        ),
        P(
            "publish_rate_hz",
            10.0,
            "rate at which /terrain/label is re-published (it is also published on every change)",
            min=0.1,
        ),
        P(
            "diagnostics_period_s",
            1.0,
            "period of this node's /diagnostics status, s (0 = off)",
            min=0.0,
        ),
    ),
    topics=(
        T(
            "/terrain/operator_label",
            "std_msgs/msg/String",
            "sub",
            "operator cue: a class name, or '' / 'none' to clear",
        ),
        T("/joy", "sensor_msgs/msg/Joy", "sub", "joystick cue (see joy_buttons)"),
        T("/odom", "nav_msgs/msg/Odometry", "sub", "speed, yaw rate and position (map regions)"),
        T("/cmd_vel", "geometry_msgs/msg/Twist", "sub", "commanded motion (slip check)"),
        T(
            "/terrain/label",
            "std_msgs/msg/String",
            "pub",
            "the label in force, '' when none (reliable, transient local)",
        ),
        T(
            "/diagnostics",
            "diagnostic_msgs/msg/DiagnosticArray",
            "pub",
            "label in force or why not, rejected cues",
        ),
    ),
)

ODT_BRIDGE = NodeSpec(
    name="odt_bridge",
    executable="odt_bridge",
    factory="terrain_odt.nodes.odt_bridge:OdtBridgeNode",
    description="Feature windows + label → training samples or inference requests on the "
    "co-processor; prediction, accuracy and diagnostics.",
    params=(
        P(
            "serial_port",
            "/dev/ttyUSB0",
            "co-processor device or URL: /dev/ttyUSB0, /dev/pts/N, socket://host:port",
        ),
        P("baud_rate", 921600, "UART speed (also sizes the link timeouts; 0 = unthrottled)", min=0),
        P(
            "model_sidecar",
            "models/borealtc_mlp.json",
            "model JSON sidecar (input quantization, class names, model id) "
            "written by `terrain-odt convert`; required",
        ),
        P(
            "model_blob",
            "models/borealtc_mlp.odtm",
            "model blob to upload when the co-processor runs another model (with upload_model)",
        ),
        P(
            "upload_model",
            False,
            "upload model_blob if the co-processor's model id differs from the sidecar's",
        ),
        P(
            "training_enabled",
            True,
            "train on labelled windows at start (service set_training switches it)",
        ),
        P(
            "learning_rate",
            0.001,
            "on-device SGD learning rate (sent as a 16-bit mantissa and exponent)",
            min=1e-9,
            max=1.0,
        ),
        P(
            "batch_size",
            1,
            "samples per weight update (at most the firmware's compiled batch capacity)",
            min=1,
            max=255,
        ),
        P(
            "train_layers",
            -1,
            "parameter layers trained, counted from the output (-1 = all)",
            min=-1,
        ),
        P(
            "partial_update_topk",
            -1,
            "dynamic partial updates: smallest number of rows updated per layer (-1 = off)",
            min=-1,
            max=254,
        ),
        P(
            "rehearsal_per_class",
            256,
            "this robot's labelled windows kept per class (host RAM, int8) for replay; 0 = none "
            "(replays then come from the model's source windows only)",
            min=0,
        ),
        P(
            "rehearsal_ratio",
            3.0,
            "stored windows replayed per new labelled window, each of a class drawn uniformly, "
            "so long single-terrain stretches do not make the model forget the other terrains "
            "(0 = off)",
            min=0.0,
            max=16.0,
        ),
        P(
            "replay_robot_share",
            1.0,
            "share of replays taken from this robot's labelled windows; the rest come from the "
            "source windows shipped with the model (its pretraining data)",
            min=0.0,
            max=1.0,
        ),
        P(
            "replay_error_share",
            0.1,
            "> 0: each class's share of robot replays scales with how often the model got that "
            "class wrong on this robot (prequentially), reaching replay_robot_share at this "
            "error rate; classes it already gets right are replayed from the source windows "
            "(0 = the same share for every class)",
            min=0.0,
            max=1.0,
        ),
        P(
            "source_replay",
            True,
            "replay and validate on the source windows the model sidecar names "
            "(source_windows), if it has them",
        ),
        P(
            "validation_share",
            0.2,
            "share of labelled windows held back (in blocks of validation_block) and never "
            "trained on: with the source validation windows they judge each update (0 = none)",
            min=0.0,
            max=0.9,
        ),
        P(
            "validation_block",
            8,
            "consecutive labelled windows held back together (neighbouring windows overlap)",
            min=1,
        ),
        P(
            "checkpoint_every",
            20,
            "new training windows between accept/rollback checks: a model that scores worse "
            "than the last accepted one on the validation windows is replaced by it; also "
            "checked when labelled driving ends (0 = never check)",
            min=0,
        ),
        P(
            "rollback_tolerance",
            0.01,
            "a check rolls back when the validation score fell by more than this",
            min=0.0,
            max=1.0,
        ),
        P(
            "validation_source_weight",
            0.8,
            "weight of the source validation windows in the validation score (the rest: "
            "class-balanced accuracy on this robot's held-back windows)",
            min=0.0,
            max=1.0,
        ),
        P(
            "seed",
            0,
            "seed of the replay draws and held-back blocks (and, offset, of the co-processor's "
            "stochastic rounding): the same bag and seed give the same model; other seeds show "
            "how much a result owes to the draws",
            min=0,
            max=65535,
        ),
        P("accuracy_window", 100, "labelled samples in the sliding prequential accuracy", min=1),
        P(
            "max_pending_samples",
            4096,
            "labelled samples held while the co-processor is away; more are dropped and counted",
            min=1,
        ),
        P("connect_timeout_s", 5.0, "wait for a session per connection attempt, s", min=0.1),
        P("link_window", 8, "training frames in flight (go-back-N window)", min=1, max=16),
        P(
            "autosave_period_s",
            300.0,
            "save the fine-tuned model to co-processor flash this "
            "often while it trains, s (0 = off)",
            min=0.0,
        ),
        P("save_on_shutdown", True, "save the model when the node stops (if it trained)"),
        P(
            "diagnostics_period_s",
            1.0,
            "period of /diagnostics (link and trainer health), s",
            min=0.1,
        ),
    ),
    topics=(
        T("/terrain/features", "std_msgs/msg/Float64MultiArray", "sub", "from imu_features"),
        T("/terrain/label", "std_msgs/msg/String", "sub", "from terrain_labeler"),
        T(
            "/terrain/prediction",
            "std_msgs/msg/String",
            "pub",
            "predicted class name, one per window (labelled windows: predicted before training)",
        ),
        T(
            "/terrain/prediction_window",
            "std_msgs/msg/Float64MultiArray",
            "pub",
            "the same prediction with its window: [t_start, t_end, class index, confidence "
            "(NaN for labelled windows), kind (0 inference, 1 labelled and trained, 2 labelled "
            "and held out for validation), label index (-1: none)]; window times are the "
            "/terrain/features stamps, so predictions match windows exactly",
        ),
        T(
            "/terrain/confidence",
            "std_msgs/msg/Float32",
            "pub",
            "softmax probability of the predicted class (unlabelled windows)",
        ),
        T(
            "/terrain/accuracy",
            "std_msgs/msg/Float32",
            "pub",
            "prequential accuracy over the last accuracy_window labelled windows",
        ),
        T("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", "pub", "link and trainer health"),
        T("~/save_model", "std_srvs/srv/Trigger", "srv", "save the model to co-processor flash"),
        T("~/restore_model", "std_srvs/srv/Trigger", "srv", "reload the last saved model"),
        T("~/reset_pretrained", "std_srvs/srv/Trigger", "srv", "reload the pretrained model"),
        T("~/set_training", "std_srvs/srv/SetBool", "srv", "switch on-device training on/off"),
    ),
)

NODES: tuple[NodeSpec, ...] = (IMU_FEATURES, TERRAIN_LABELER, ODT_BRIDGE)
"""The graph, in start order."""


BAG_PLAYER = NodeSpec(
    name="bag_player",
    executable="bag_player",
    factory="terrain_odt.nodes.bag_player:BagPlayerNode",
    description="Plays a rosbag2 with /clock (replay.launch.py where `ros2 bag` is not "
    "installed; the same player as `terrain-odt replay`); exits at the end of the bag.",
    params=(
        P("bag", "", "rosbag2 to play (directory, .mcap or .db3); required"),
        P("rate", 1.0, "playback rate, times real time", min=0.001, max=1000.0),
        P(
            "clock_rate_hz",
            100.0,
            "/clock messages per second of wall time (also one right before each operator label)",
            min=1.0,
            max=10000.0,
        ),
        P(
            "truth_topic",
            "/terrain/label_truth",
            "the bag's ground-truth topic (std_msgs/String, the terrain in force)",
        ),
        P(
            "truth_as_operator",
            False,
            "republish the truth on /terrain/operator_label when it changes (the player acts "
            "as the operator for the whole bag)",
        ),
        P(
            "playback_duration_s",
            0.0,
            "play only this much of the bag from its start, s (0 = all)",
            min=0.0,
        ),
        P(
            "wait_for_subscribers_s",
            10.0,
            "before playing, wait up to this long for a subscriber of the bag's /imu/data, s "
            "(0 = do not wait)",
            min=0.0,
        ),
    ),
    topics=(
        T("/clock", "rosgraph_msgs/msg/Clock", "pub", "bag time, clock_rate_hz (wall)"),
        T("(every topic of the bag)", "(as recorded)", "pub", "raw CDR as recorded, paced"),
        T(
            "/terrain/operator_label",
            "std_msgs/msg/String",
            "pub",
            "the truth, with truth_as_operator",
        ),
    ),
)

TOOL_NODES: tuple[NodeSpec, ...] = (BAG_PLAYER,)
"""Nodes that are not part of the robot's graph (players, simulation): started by the launch
files that need them, never by robot.launch.py or the one-process launcher."""


def node_spec(name: str) -> NodeSpec:
    """The spec of the node called `name` (graph or tool node)."""
    for n in (*NODES, *TOOL_NODES):
        if n.name == name:
            return n
    raise KeyError(
        f"no node '{name}' in the terrain_odt graph "
        f"({', '.join(x.name for x in (*NODES, *TOOL_NODES))})"
    )


def _fmt_default(v: ParamValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    if isinstance(v, str):
        return f"'{v}'"
    return str(v)


def markdown_tables(nodes: Sequence[NodeSpec] = NODES) -> str:
    """README tables: per node, its topics/services and parameters."""
    out: list[str] = []
    for n in nodes:
        out.append(f"#### `{n.name}`: {n.description}\n")
        out.append("| topic / service | type | | |")
        out.append("|---|---|---|---|")
        for t in n.topics:
            out.append(f"| `{t.name}` | `{t.type}` | {t.direction} | {t.note} |")
        out.append("")
        out.append("| parameter | type | default | description |")
        out.append("|---|---|---|---|")
        for p in n.params:
            desc = p.description.replace("|", "\\|")
            out.append(f"| `{p.name}` | {p.type_name} | `{_fmt_default(p.default)}` | {desc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _yaml_value(v: ParamValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return repr(v)


def yaml_config(nodes: Sequence[NodeSpec] = NODES) -> str:
    """`config/terrain_odt.yaml`: every parameter at its default, with its description."""
    lines = [
        "# terrain_odt parameters: every parameter of every node, at its default.",
        "# Generated from terrain_odt/ros/graph.py (python -m terrain_odt.ros.graph --yaml);",
        "# copy and edit for your robot, or override single values (ros2 launch ... name:=value).",
        "# Relative paths are looked up in the current directory, then in the package's share",
        "# directory.",
    ]
    for n in nodes:
        lines += ["", f"{n.name}:", "  ros__parameters:"]
        for p in n.params:
            lines.append(f"    # {p.description} [{p.type_name}]")
            lines.append(f"    {p.name}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the terrain_odt graph definition.")
    ap.add_argument("--markdown", action="store_true", help="README tables")
    ap.add_argument("--yaml", action="store_true", help="config/terrain_odt.yaml")
    args = ap.parse_args(argv)
    if args.yaml:
        print(yaml_config(), end="")
    elif args.markdown:
        print(markdown_tables(), end="")
    else:
        for n in NODES:
            print(f"{n.name}: {n.factory} ({len(n.params)} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
