"""Shared pytest setup: the repository root on sys.path (tools/ is imported by some tests) and
DDS isolation for the ROS tests (localhost only, a domain of this run's own)."""

import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests that start ROS nodes must not see (or disturb) other graphs on the machine or network:
# DDS discovery on localhost only, and a random domain per pytest run unless one is set.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
