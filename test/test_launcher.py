"""`terrain-odt launch --emulator`: the emulator is supervised like a board that resets (issue
12): killed, it is restarted on the same URL with its flash, counted in /diagnostics, and the
graph never stops for it; Ctrl-C still ends everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int, name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and comm == name:
            out.append(int(d.name))
    return out


def _wait_line(proc: subprocess.Popen, lines: list[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} in:\n{''.join(lines)}")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_emulator_killed_is_restarted_and_the_graph_keeps_running(
    emu_bin: Path, tmp_path: Path
) -> None:
    stats = tmp_path / "stats.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "terrain_odt.cli", "launch", "--emulator"]
    cmd += ["-p", "odt_bridge.baud_rate:=0", "--stats-out", str(stats)]
    cmd += ["-p", "odt_bridge.model_sidecar:=models/borealtc_imu_mlp.json"]
    cmd += ["-p", "odt_bridge.model_blob:=models/borealtc_imu_mlp.odtm"]
    cmd += ["-p", "imu_features.wheel_joints_left:=[]", "-p", "imu_features.wheel_joints_right:=[]"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        _wait_line(proc, lines, "ready: co-processor connected", 60)
        emus = _children(proc.pid, "odt-emu")
        assert len(emus) == 1
        os.kill(emus[0], signal.SIGKILL)
        _wait_line(proc, lines, "restarted (1)", 20)
        assert proc.poll() is None  # the graph did not stop
        time.sleep(2.0)  # the bridge reconnects to the same URL
        assert len(_children(proc.pid, "odt-emu")) == 1
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        lines.append(out)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    st = json.loads(stats.read_text())
    assert st["emulator"]["restarts"] == 1 and st["emulator"]["alive"]
    # The bridge came back to the restarted emulator (a new boot of the same flash).
    link = st["odt_bridge"]["link"]
    assert link["reconnects"] >= 1 and link["coprocessor_resets"] >= 1, link
    assert st["odt_bridge"]["coprocessor"]["boot_count"] == 2
