"""Real `ros2 launch` of launch/robot.launch.py and launch/replay.launch.py, pip only.

`launch`, `launch_ros` and the ros2 CLI come from ../shared/wheels/ros2-launch (`make setup`
installs them). Two install modes are run:

- the editable dev install of `make setup` (.venv, with the ament layout linked in by
  `python -m terrain_odt.ament_layout dev-install`): robot.launch.py, fed by the project's bag
  player from this process;
- `pip install .`: the package built as a wheel (as `pip install .` builds it) and installed into
  a fresh venv, where its own `.pth` puts the venv on AMENT_PREFIX_PATH; replay.launch.py, whose
  default bag, parameter files and node launchers all come from that venv and which plays the
  bag with its own `bag_player` node (there is no `ros2 bag` here), and robot.launch.py (nodes
  up, bridge connected, clean stop). To stay fast that venv gets its dependencies (rclpy, launch,
  numpy, ...) from .venv through a path-only `.pth` instead of a download of 250 MB; a full
  `pip install .[ros]` into an empty venv is the same install, checked by hand (README).

Each launch runs against a fresh `odt-emu`, in a process group of its own; the test waits until
the three nodes are up (and, with data, predictions arrive on /terrain/prediction), then sends
SIGINT to the whole group (what Ctrl-C in a terminal does) and checks that everything ends
cleanly: exit status 0, no traceback, every node "finished cleanly", the bridge saved its
fine-tuned model (when it trained).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from terrain_odt import ament_layout
from terrain_odt.ros.graph import NODES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROS2 = BIN / "ros2"
DEMO_BAG = ROOT / "data" / "demo" / "borealtc_demo.mcap"
MODEL = ROOT / "models" / "borealtc_mlp"
#: .ci/run sets this: in CI a missing `ros2 launch` is a failure, not a skip.
REQUIRE = os.environ.get("TERRAIN_ODT_REQUIRE_ROS2_LAUNCH") == "1"


@pytest.fixture(scope="module")
def ros2() -> Path:
    try:
        import launch_ros
    except ImportError:
        launch_ros = None
    if launch_ros is None or not ROS2.exists():
        msg = "ros2 launch is not installed (make setup installs ../shared/wheels/ros2-launch)"
        if REQUIRE:
            pytest.fail(msg)
        pytest.skip(msg)
    return ROS2


class Launch:
    """`ros2 launch ...` in its own process group, output collected."""

    #: Every launch started (killed after each test, whatever happened: `_kill_launches`).
    started: ClassVar[list[Launch]] = []

    def __init__(self, args: list[str], env: dict[str, str], python: Path | None = None) -> None:
        """`python`: run the ros2 script with that interpreter (another venv's) instead."""
        self.lines: list[str] = []
        cmd = [str(ROS2)] if python is None else [str(python), str(ROS2)]
        self.proc = subprocess.Popen(
            [*cmd, "launch", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        Launch.started.append(self)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self, timeout: float = 40.0) -> int:
        """SIGINT to the whole process group (Ctrl-C), then wait."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"ros2 launch did not end {timeout} s after SIGINT:\n{self.text}")
        self._reader.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(autouse=True)
def _kill_launches() -> Iterator[None]:
    """A failing test leaves no `ros2 launch` (and its nodes) running."""
    yield
    while Launch.started:
        Launch.started.pop().kill()


class Listener:
    """An rclpy node in this process: node names in the graph, predictions received."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("test_ros2_launch_listener", context=self.context)
        self.predictions: list[str] = []
        self.node.create_subscription(
            String, "/terrain/prediction", lambda m: self.predictions.append(m.data), 100
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.spin()

    def node_names(self) -> set[str]:
        return set(self.node.get_node_names())

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


def wait_for(cond: Any, timeout: float, what: str, launch: Launch) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if launch.proc.poll() is not None:
            pytest.fail(
                f"ros2 launch exited ({launch.proc.returncode}) before {what}:\n{launch.text}"
            )
        if time.monotonic() > deadline or "process has died" in launch.text:
            launch.kill()
            pytest.fail(f"no {what} after {timeout} s:\n{launch.text}")
        time.sleep(0.1)


def check_clean_shutdown(launch: Launch, rc: int, names: list[str], saved: bool = True) -> None:
    text = launch.text
    assert rc == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "terminate called" not in text and "process has died" not in text, text
    for name in names:
        assert any(
            ln.startswith(f"[INFO] [{name}-") and "process has finished cleanly" in ln
            for ln in launch.lines
        ), f"{name} did not finish cleanly:\n{text}"
    if saved:  # the bridge trained on the operator's labels and saved the model on the way out
        assert "model saved to co-processor flash" in text, text


@pytest.fixture
def emu(emu_bin: Path, tmp_path: Path) -> Iterator[Any]:
    from terrain_odt.link.emulator import emulator

    with emulator(emu_bin, baud=921600, tcp_port=0, model=MODEL.with_suffix(".odtm")) as e:
        yield e


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def test_robot_launch_editable_install(ros2: Path, emu: Any) -> None:
    from terrain_odt.data.bagplay import BagPlayer, read_bag

    # The editable install's own layout (make setup), found through the .pth in site-packages:
    # nothing set up in the environment.
    env = _env()
    env.pop("AMENT_PREFIX_PATH", None)
    launch = Launch(
        [
            "terrain_odt",
            "robot.launch.py",
            f"serial_port:={emu.url}",
            f"model_sidecar:={MODEL.with_suffix('.json')}",
            f"model_blob:={MODEL.with_suffix('.odtm')}",
            "use_sim_time:=true",
        ],
        env,
    )
    listener = Listener()
    try:
        names = [n.name for n in NODES]
        wait_for(lambda: set(names) <= listener.node_names(), 60.0, "nodes", launch)
        # The robot: 40 s of the demo drive at 10x with /clock, its truth as operator labels.
        data = read_bag(DEMO_BAG)
        player = BagPlayer(listener.node, data, rate=10.0, operator_until_s=1e9, duration_s=40.0)
        missing = player.wait_for_subscribers(["/imu/data", "/odom"], 30.0)
        assert not missing, launch.text
        player.play()
        wait_for(lambda: len(listener.predictions) >= 20, 30.0, "predictions", launch)
    finally:
        listener.close()
    rc = launch.interrupt()
    check_clean_shutdown(launch, rc, names)
    # What ros2 launch found: the source tree's files, linked into the venv.
    installed = BIN.parent / "share" / "terrain_odt" / "launch" / "robot.launch.py"
    assert installed.resolve() == ROOT / "launch" / "robot.launch.py"


# ---- pip install . (a wheel) ------------------------------------------------------------------


@dataclass
class PipInstall:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site(self) -> Path:
        return Path(sysconfig.get_path("purelib", vars={"base": str(self.venv)}))

    def env(self) -> dict[str, str]:
        """Nothing ament set: the wheel's `.pth` must find the package."""
        env = _env()
        for var in ("AMENT_PREFIX_PATH", "PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(var, None)
        return env


@pytest.fixture(scope="module")
def pip_install(tmp_path_factory: pytest.TempPathFactory) -> PipInstall:
    """The package built as a wheel (as `pip install .` builds it: isolated, with current
    setuptools) and installed with pip into a new venv."""
    out = tmp_path_factory.mktemp("pip_install")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), str(ROOT)], check=True, cwd=out)
    (wheel,) = out.glob("terrain_odt-*.whl")
    inst = PipInstall(wheel, out / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(inst.venv)], check=True)
    # The dependencies: .venv's site-packages on sys.path (a path line; .venv's own .pth files,
    # e.g. its editable terrain_odt, are not run). The ROS libraries' LD_LIBRARY_PATH is this
    # process's (set up by the rclpy wheels' bootstrapper), inherited.
    deps = Path(sysconfig.get_path("purelib"))
    (inst.site / "zz_test_dependencies.pth").write_text(f"{deps}\n")
    subprocess.run(
        [*pip, "--python", str(inst.python), "install", "--no-deps", "--no-compile", str(wheel)],
        check=True,
    )
    return inst


def test_wheel_has_the_ament_layout(pip_install: PipInstall) -> None:
    data = "terrain_odt-0.1.0.data/data/"
    with zipfile.ZipFile(pip_install.wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert z.read(ament_layout.PTH_NAME).decode() == ament_layout.PTH_LINE
    for dest, files in ament_layout.data_files(ROOT):
        for f in files:
            assert f"{data}{dest}/{Path(f).name}" in infos, f
    venv = pip_install.venv
    for spec in NODES:
        info = infos[f"{data}lib/terrain_odt/{spec.executable}"]
        assert (info.external_attr >> 16) & 0o111, f"{spec.executable} is not executable"
        installed = venv / "lib" / "terrain_odt" / spec.executable
        assert os.access(installed, os.X_OK), installed
        script = venv / "bin" / spec.executable
        assert script.read_text().startswith(f"#!{pip_install.python}\n"), script
    assert (venv / ament_layout.MARKER_DIR / "terrain_odt").is_file()
    # The venv's interpreter: its own terrain_odt, and the .pth put the venv on the ament path.
    probe = subprocess.run(
        [
            str(pip_install.python),
            "-c",
            "import os, terrain_odt; print(terrain_odt.__file__); "
            "print(os.environ['AMENT_PREFIX_PATH'])",
        ],
        env=pip_install.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    module, ament_path = probe.stdout.splitlines()
    assert Path(module) == pip_install.site / "terrain_odt" / "__init__.py"
    assert ament_path == str(venv)


def test_replay_launch_pip_install(ros2: Path, emu: Any, pip_install: PipInstall) -> None:
    launch = Launch(
        [
            "terrain_odt",
            "replay.launch.py",
            f"serial_port:={emu.url}",
            "rate:=10",
            "playback_duration:=40",
            "truth_as_operator:=true",
        ],
        pip_install.env(),
        python=pip_install.python,
    )
    listener = Listener()
    try:
        names = [n.name for n in NODES]
        wait_for(lambda: set(names) <= listener.node_names(), 60.0, "nodes", launch)
        wait_for(lambda: len(listener.predictions) >= 20, 60.0, "predictions", launch)
        wait_for(lambda: "[bag_player]: played" in launch.text, 30.0, "end of the bag", launch)
        # The player exits by itself at the end of the bag (as `ros2 bag play` does).
        wait_for(
            lambda: any("[bag_player-" in ln and "finished cleanly" in ln for ln in launch.lines),
            10.0,
            "bag_player exit",
            launch,
        )
    finally:
        listener.close()
    rc = launch.interrupt()
    # config/demo.yaml (replay.launch.py's extra_params_file) keeps the co-processor's flash
    # as it was: save_on_shutdown false.
    check_clean_shutdown(launch, rc, [*names, "bag_player"], saved=False)
    assert "model saved to co-processor flash" not in launch.text
    # Everything came from the venv: the default bag, the parameter files.
    share = pip_install.venv / "share" / "terrain_odt"
    assert str(share / "data" / "demo" / "borealtc_demo.mcap") in launch.text


def test_robot_launch_pip_install(ros2: Path, emu: Any, pip_install: PipInstall) -> None:
    """Light: the three nodes start from the venv, the bridge connects, SIGINT stops them."""
    launch = Launch(
        [
            "terrain_odt",
            "robot.launch.py",
            f"serial_port:={emu.url}",
            f"model_sidecar:={MODEL.with_suffix('.json')}",
            f"model_blob:={MODEL.with_suffix('.odtm')}",
        ],
        pip_install.env(),
        python=pip_install.python,
    )
    listener = Listener()
    try:
        names = [n.name for n in NODES]
        wait_for(lambda: set(names) <= listener.node_names(), 60.0, "nodes", launch)
        wait_for(lambda: f"co-processor at {emu.url}" in launch.text, 30.0, "link", launch)
        # Each node process: lib/terrain_odt/<node> exec'd the venv's console script.
        for name in names:
            started = rf"\[{name}-\d+\]: process started with pid \[(\d+)\]"
            (pid,) = re.findall(started, launch.text)
            python, script = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:2]
            assert python == str(pip_install.python)
            assert os.path.normpath(script) == str(pip_install.venv / "bin" / name)
    finally:
        listener.close()
    rc = launch.interrupt()
    check_clean_shutdown(launch, rc, names, saved=False)
    assert "not using the co-processor" not in launch.text, launch.text
