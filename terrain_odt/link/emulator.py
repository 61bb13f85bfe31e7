"""Run the co-processor emulator (`firmware/odt-emu`) as a child process.

`odt-emu` runs the real firmware application (odt-app + odt-core) on the host behind a
pseudo-terminal or a TCP socket, so everything above the UART (the link client, the ROS bridge,
the replay evaluation) runs unchanged against it. `find_emulator` locates (and, in a source
checkout, builds) the binary; `Emulator` starts one process and exposes the URL that
`terrain_odt.link.OdtClient` opens.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["EMU_BIN", "FIRMWARE", "Emulator", "EmulatorError", "emulator", "find_emulator"]

#: Source checkout layout: `<repo>/terrain_odt/link/emulator.py` and `<repo>/firmware`.
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
EMU_BIN = FIRMWARE / "target" / "release" / "odt-emu"
#: Environment variable naming an odt-emu binary (installed packages have no firmware tree).
ENV_VAR = "TERRAIN_ODT_EMU"


class EmulatorError(RuntimeError):
    """The emulator could not be found, built or started."""


def _cargo() -> str | None:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    return cargo if Path(cargo).exists() else None


def find_emulator(build: bool = True, log: Callable[[str], None] | None = None) -> Path | None:
    """The odt-emu binary: `$TERRAIN_ODT_EMU`, else the checkout's release build.

    With `build`, runs `cargo build --release -p odt-emu` in the checkout first (a no-op when
    up to date). Returns `None` when there is no binary and it cannot be built.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise EmulatorError(f"{ENV_VAR}={env} is not a file")
        return path
    if build and (FIRMWARE / "Cargo.toml").is_file():
        cargo = _cargo()
        if cargo is not None:
            if log:
                log(f"building odt-emu (cargo build --release -p odt-emu in {FIRMWARE})")
            subprocess.run(
                [cargo, "build", "--release", "-q", "-p", "odt-emu"], cwd=FIRMWARE, check=True
            )
    return EMU_BIN if EMU_BIN.exists() else None


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """One odt-emu process. `url` is what `OdtClient` opens.

    `tcp_port=None` runs it on a pseudo-terminal (its first stdout line is `PTY /dev/pts/N`);
    otherwise it listens on `127.0.0.1:tcp_port` (0: a free port; `TCP ADDR` on stdout).
    `baud` paces both directions like a UART (0: unthrottled); `model` is a pretrained blob
    written to the emulated flash at start.
    """

    port: int | None = None

    def __init__(
        self,
        binary: Path,
        *,
        baud: int = 0,
        flash: Path | None = None,
        model: Path | None = None,
        tcp_port: int | None = None,
        extra: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        args = [str(binary), "--baud", str(baud), "--quiet"]
        if flash is not None:
            args += ["--flash", str(flash)]
        if model is not None:
            args += ["--model", str(model)]
        if tcp_port is not None:
            args += ["--tcp", f"127.0.0.1:{tcp_port}"]
        args += list(extra)
        self.args = args
        self.stderr: list[str] = []
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            raise EmulatorError(f"cannot start {binary}: {exc}") from exc
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        deadline = time.monotonic() + start_timeout
        line = self._first_line(deadline)
        if tcp_port is None:
            if not line.startswith("PTY "):
                self.stop()
                raise EmulatorError(f"odt-emu: expected 'PTY /dev/pts/N', got {line!r}")
            self.url = line.split(None, 1)[1].strip()
        else:
            if not line.startswith("TCP "):
                self.stop()
                raise EmulatorError(f"odt-emu: expected 'TCP ADDR', got {line!r}")
            addr = line.split(None, 1)[1].strip()
            self.port = int(addr.rsplit(":", 1)[1])
            self.url = f"socket://{addr}"
            self._wait_listening(self.port, deadline)
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _first_line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line:
                    return line
                self._fail_start(exiting=True)  # stdout closed before the banner
            if self.proc.poll() is not None:
                self._fail_start(exiting=True)
        self._fail_start(exiting=False)

    def _fail_start(self, exiting: bool) -> NoReturn:
        """The emulator exited (or hung) before its banner: raise with its own reason (the
        error line it wrote on stderr, e.g. why it refused a `--model` blob)."""
        if exiting:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.stop()
        self._stderr_thread.join(timeout=5)  # everything it wrote to stderr
        code = self.proc.returncode
        errors = [ln.strip() for ln in self.stderr if "error" in ln]
        reason = errors[-1].removeprefix("odt-emu: error: ") if errors else None
        why = f": {reason}" if reason else ""
        status = f" (exit status {code})" if code is not None else ""
        raise EmulatorError(
            f"odt-emu did not start{why}{status}\n"
            f"command: {' '.join(self.args)}\n{self.stderr_text}".rstrip()
        )

    def _wait_listening(self, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"odt-emu not listening on {port}: {' '.join(self.args)}")

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-200]

    @property
    def stderr_text(self) -> str:
        """The last lines the emulator wrote to stderr."""
        return "".join(self.stderr[-50:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a power cut, or an unplugged board)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def emulator(binary: Path, **kw: Any) -> Iterator[Emulator]:
    """`Emulator` with a private flash file unless one is given."""
    with contextlib.ExitStack() as stack:
        if kw.get("flash") is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="odt-emu-")))
            kw["flash"] = tmp / "flash.bin"
        emu = stack.enter_context(Emulator(binary, **kw))
        yield emu
