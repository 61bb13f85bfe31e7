"""`bag_player`: a rosbag2 with /clock through `bagplay.BagPlayer` (replay.launch.py's player
where `ros2 bag` is not installed). Exits when the bag has been played."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from rclpy.node import Node

from ..data.bagplay import IMU_TYPE, BagError, BagPlayer, read_bag
from ..paths import resolve
from ..ros.graph import BAG_PLAYER
from .common import ParamError, declare_params, run_node


class BagPlayerNode(Node):
    """Thin wrapper: parameters → `BagPlayer`; `play` is run by `main` in the main thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(BAG_PLAYER.name, **kwargs)
        p = declare_params(self, BAG_PLAYER)
        if not p["bag"]:
            raise ParamError("bag_player: parameter 'bag' (the rosbag2 to play) is required")
        bag = resolve(str(p["bag"]))
        try:
            self.data = read_bag(Path(bag), str(p["truth_topic"]))
        except BagError as exc:
            raise ParamError(f"bag_player: parameter 'bag': {exc}") from exc
        duration = float(p["playback_duration_s"])
        self.player = BagPlayer(
            self,
            self.data,
            rate=float(p["rate"]),
            clock_rate_hz=float(p["clock_rate_hz"]),
            truth_topic=str(p["truth_topic"]),
            operator_until_s=math.inf if p["truth_as_operator"] else None,
            duration_s=duration if duration > 0 else None,
            log=self.get_logger().warning,
        )
        self.wait_s = float(p["wait_for_subscribers_s"])
        self.imu_topics = [t for t, ty in self.data.types.items() if ty == IMU_TYPE]
        self.get_logger().info(
            f"{bag}: {len(self.data.messages)} messages, {self.data.duration_s:.1f} s, topics "
            f"{', '.join(sorted(self.player.pubs))}; rate {float(p['rate']):g}x"
        )

    def play(self, stop: threading.Event) -> int:
        log = self.get_logger()
        if self.wait_s > 0 and self.imu_topics:
            missing = self.player.wait_for_subscribers(self.imu_topics, self.wait_s, stop.is_set)
            if missing and not stop.is_set():
                log.warning(f"no subscriber of {', '.join(missing)} after {self.wait_s:g} s")
        if stop.is_set():
            return 0
        stats = self.player.play(should_stop=stop.is_set)
        self.player.tick_past_end()
        log.info(
            f"{'stopped' if stats.stopped else 'played'} {stats.bag_s:.1f} s of bag in "
            f"{stats.wall_s:.1f} s ({sum(stats.counts.values())} messages)"
        )
        return 0


def main(args: list[str] | None = None) -> int:
    return run_node(BagPlayerNode, args, work=lambda node, stop: node.play(stop))


if __name__ == "__main__":
    raise SystemExit(main())
