"""Shared pytest setup: the repository root on sys.path (tools/ is imported by some tests) and
DDS isolation for the ROS tests (localhost only, a domain of this run's own)."""

import os
import random
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests that start ROS nodes must not see (or disturb) other graphs on the machine or network:
# DDS discovery on localhost only, and a random domain per pytest run unless one is set.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))


@pytest.fixture(scope="session")
def emu_bin() -> Path:
    """The co-processor emulator (firmware/odt-emu), built with cargo if needed; the tests that
    need it skip only when cargo is missing and no binary exists."""
    from terrain_odt.link.emulator import EMU_BIN, find_emulator

    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        if EMU_BIN.exists():
            return EMU_BIN
        pytest.skip("cargo is not installed: cannot build firmware/odt-emu")
    binary = find_emulator(build=True)
    assert binary is not None, "cargo build --release -p odt-emu produced no binary"
    return binary


# Property tests: random exploration locally; in CI (`.ci/run` sets HYPOTHESIS_PROFILE=ci) a
# fixed derandomized search, so a CI verdict does not depend on the draw.
try:
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # pragma: no cover - hypothesis is a dev extra
    pass
