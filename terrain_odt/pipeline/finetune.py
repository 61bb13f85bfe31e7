"""How the bridge fine-tunes without forgetting (no ROS, no link): what trains, when to roll back.

A robot labels terrain in long stretches of one class, while a batch-1 SGD learner drifts toward
whatever it saw last: trained window by window on such a stream the model forgets the other
classes (measured in `docs/RESULTS.md`, "Cross-run laps"). Three mechanisms keep fine-tuning on
the robot from hurting the ground it drives next:

* **Mixed replay** (`ReplayPlanner`). After each new labelled window, `ratio` stored windows are
  trained again, each of a class drawn uniformly, taken from this robot's labelled windows with
  probability `robot_share` (when it has any of that class) and otherwise from the *source
  windows* shipped with the model (a class-balanced sample of its pretraining data, int8, see
  `SourceWindows`). The device thus trains on a balanced mixture of the old and the new domain,
  close to retraining on both, instead of on the stream's order.
* **Held-out validation** (`Holdout`). Every `1/share`-th block of `block` consecutive labelled
  windows is never trained on: those windows (blocks, because neighbouring windows overlap) and
  the source validation windows shipped with the model are the validation set.
* **Accept or roll back** (`Guard`). Every `checkpoint_every` new training windows the bridge
  scores the co-processor's model on the validation set it froze at the previous check
  (`score`: `source_weight` × accuracy on the source windows + the rest × class-balanced
  accuracy on this robot's held-out windows). If the score fell by more than `tolerance` below
  that of the last accepted model on the same windows, the last accepted model (kept on the
  host) is uploaded again: a **rollback**; otherwise the current model becomes the accepted one.
  Rollbacks are counted and shown in `/diagnostics`.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Guard",
    "Holdout",
    "ReplayPlanner",
    "SourceWindows",
    "SourceWindowsError",
    "Stored",
    "load_source_windows",
    "save_source_windows",
    "score",
]


class SourceWindowsError(ValueError):
    """The source-window file is missing, malformed or does not fit the model."""


@dataclass(frozen=True)
class SourceWindows:
    """Int8 model inputs of pretraining windows, shipped with a model (`<model>.windows.npz`).

    `replay_*` are replayed on the device next to the robot's windows; `val_*` only score.
    """

    replay_x: np.ndarray
    replay_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray

    @property
    def input_len(self) -> int:
        return int(self.replay_x.shape[1])


def save_source_windows(
    path: str | Path,
    replay: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
) -> int:
    """Write the file (`np.savez`, int8 inputs, uint8 labels); returns its CRC-32."""
    rx, ry = np.asarray(replay[0]), np.asarray(replay[1])
    vx, vy = np.asarray(val[0]), np.asarray(val[1])
    for name, a in (("replay", rx), ("validation", vx)):
        if a.ndim != 2 or a.dtype != np.int8:
            raise ValueError(f"{name} windows must be an int8 (n, input_len) array")
    p = Path(path)
    with p.open("wb") as f:
        np.savez(
            f,
            replay_x=rx,
            replay_y=ry.astype(np.uint8),
            val_x=vx,
            val_y=vy.astype(np.uint8),
        )
    return zlib.crc32(p.read_bytes())


def load_source_windows(
    path: str | Path, input_len: int, n_classes: int, crc32: int | None = None
) -> SourceWindows:
    """Read and check a source-window file against the model (`SourceWindowsError` if bad)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SourceWindowsError(f"source windows {p}: {exc}") from None
    if crc32 is not None and zlib.crc32(raw) != crc32:
        raise SourceWindowsError(f"source windows {p}: CRC does not match the sidecar")
    import io

    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in ("replay_x", "replay_y", "val_x", "val_y")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise SourceWindowsError(f"source windows {p} are not a windows file: {exc}") from None
    for kind in ("replay", "val"):
        x, y = arrays[f"{kind}_x"], arrays[f"{kind}_y"]
        if x.ndim != 2 or x.dtype != np.int8 or x.shape[1] != input_len:
            raise SourceWindowsError(
                f"source windows {p}: {kind}_x must be int8 (n, {input_len}), got "
                f"{x.dtype} {x.shape}"
            )
        if y.shape != (x.shape[0],) or (y.size and int(y.max()) >= n_classes):
            raise SourceWindowsError(
                f"source windows {p}: {kind}_y must hold {x.shape[0]} labels < {n_classes}"
            )
    return SourceWindows(
        arrays["replay_x"], arrays["replay_y"].astype(np.int64),
        arrays["val_x"], arrays["val_y"].astype(np.int64),
    )  # fmt: skip


_UIDS = itertools.count()


@dataclass
class Stored:
    """A window kept on the host: int8 model input and label (`uid`: unique per window, the
    key of cached predictions)."""

    q: np.ndarray
    label: int
    uid: int = field(default_factory=lambda: next(_UIDS))


class ReplayPlanner:
    """The mixed replay of the module doc: a reservoir per class of this robot's windows plus
    the source windows, and the draw of replays after each new window. Deterministic per seed."""

    def __init__(
        self,
        n_classes: int,
        per_class: int,
        ratio: float,
        robot_share: float,
        source: SourceWindows | None = None,
        seed: int = 0,
        error_share: float = 0.0,
    ) -> None:
        if per_class < 0 or ratio < 0 or not 0.0 <= robot_share <= 1.0:
            raise ValueError("per_class and ratio must be >= 0, robot_share in [0, 1]")
        if not error_share >= 0.0:
            raise ValueError("error_share must be >= 0")
        #: > 0: a class's robot share scales with its prequential error rate, reaching
        #: `robot_share` at this error rate (a class the model already gets right on this
        #: robot is replayed from the source windows: nothing to fix, keep what it knows).
        self.error_share = error_share
        self._seen_pred = [0] * n_classes
        self._wrong = [0] * n_classes
        self.n_classes = n_classes
        self.per_class = per_class
        self.ratio = ratio
        self.robot_share = robot_share
        self.robot: list[list[Stored]] = [[] for _ in range(n_classes)]
        self.seen = [0] * n_classes
        self.source: list[list[Stored]] = [[] for _ in range(n_classes)]
        if source is not None:
            for q, y in zip(source.replay_x, source.replay_y, strict=True):
                self.source[int(y)].append(Stored(q, int(y)))
        self._rng = np.random.default_rng(seed)
        self._credit = 0.0

    @property
    def stored(self) -> int:
        """Robot windows kept (the source windows are not counted)."""
        return sum(len(b) for b in self.robot)

    @property
    def source_windows(self) -> int:
        return sum(len(b) for b in self.source)

    def add(self, q: np.ndarray, label: int) -> None:
        """Keep a labelled window (uniform reservoir of `per_class` per class)."""
        if self.per_class <= 0:
            return
        self.seen[label] += 1
        s = Stored(q, label)
        buf = self.robot[label]
        if len(buf) < self.per_class:
            buf.append(s)
        else:
            j = int(self._rng.integers(self.seen[label]))
            if j < self.per_class:
                buf[j] = s

    def record(self, label: int, correct: bool) -> None:
        """A labelled window's prequential outcome (predicted before it trained)."""
        self._seen_pred[label] += 1
        self._wrong[label] += int(not correct)

    def share(self, k: int) -> float:
        """The probability that a replay of class `k` comes from this robot's windows."""
        if self.error_share <= 0:
            return self.robot_share
        n = self._seen_pred[k]
        err = self._wrong[k] / n if n else 1.0
        return self.robot_share * min(1.0, err / self.error_share)

    def draw(self) -> list[Stored]:
        """The replays to train after a new window (`ratio` on average)."""
        self._credit += self.ratio
        n = int(self._credit)
        self._credit -= n
        out: list[Stored] = []
        classes = [k for k in range(self.n_classes) if self.robot[k] or self.source[k]]
        if not classes:
            return out
        for _ in range(n):
            k = classes[int(self._rng.integers(len(classes)))]
            robot, source = self.robot[k], self.source[k]
            use_robot = bool(robot) and (not source or self._rng.random() < self.share(k))
            pool = robot if use_robot else source
            out.append(pool[int(self._rng.integers(len(pool)))])
        return out


class Holdout:
    """Which labelled windows are held back for validation (whole blocks), and the held-back
    windows themselves (a uniform reservoir of `per_class` per class)."""

    def __init__(
        self, n_classes: int, share: float, block: int, per_class: int = 64, seed: int = 0
    ) -> None:
        if not 0.0 <= share < 1.0 or block < 1:
            raise ValueError("share must be in [0, 1) and block >= 1")
        self.period = round(1.0 / share) if share > 0 else 0
        self.block = block
        self.per_class = per_class
        self.windows: list[list[Stored]] = [[] for _ in range(n_classes)]
        self.seen = [0] * n_classes
        self._count = 0
        self._rng = np.random.default_rng([seed, 3])

    def take(self, q: np.ndarray, label: int) -> bool:
        """Count one labelled window; True (and kept) if it is held back."""
        i = self._count
        self._count += 1
        if self.period < 2 or (i // self.block) % self.period != self.period - 1:
            return False
        self.seen[label] += 1
        buf = self.windows[label]
        s = Stored(q, label)
        if len(buf) < self.per_class:
            buf.append(s)
        else:
            j = int(self._rng.integers(self.seen[label]))
            if j < self.per_class:
                buf[j] = s
        return True

    @property
    def held(self) -> int:
        return sum(len(b) for b in self.windows)

    def snapshot(self) -> list[Stored]:
        """The held-back windows now, class by class (a copy: later takes do not change it)."""
        return [s for b in self.windows for s in b]


def score(
    robot_pred: Sequence[int],
    robot_y: Sequence[int],
    source_pred: Sequence[int],
    source_y: Sequence[int],
    source_weight: float,
) -> float | None:
    """`source_weight` × source accuracy + (1 − it) × class-balanced robot accuracy; the weight
    moves to the part that exists when the other is empty; `None` with neither."""
    parts: list[tuple[float, float]] = []
    if len(source_y):
        sp, sy = np.asarray(source_pred), np.asarray(source_y)
        parts.append((source_weight, float(np.mean(sp == sy))))
    if len(robot_y):
        rp, ry = np.asarray(robot_pred), np.asarray(robot_y)
        bal = float(np.mean([np.mean(rp[ry == k] == k) for k in np.unique(ry)]))
        parts.append((1.0 - source_weight, bal))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][1]
    w = sum(p[0] for p in parts)
    return sum(a * b for a, b in parts) / w if w > 0 else float(np.mean([b for _, b in parts]))


@dataclass
class Guard:
    """Accept/rollback bookkeeping (the check itself talks to the co-processor, in the bridge).

    `frozen`: the validation windows of the last check, on which the next check compares the
    current model with the accepted one; `best_score`: the accepted model's score on them.
    """

    every: int
    tolerance: float
    source_weight: float
    frozen: list[Stored] = field(default_factory=list)
    best_score: float | None = None
    best_blob: bytes | None = None
    since_check: int = 0
    checks: int = 0
    accepted: int = 0
    rollbacks: int = 0
    last_score: float | None = None
    #: The last check rolled back (the training since the check before made things worse).
    last_rolled_back: bool = False

    def due(self) -> bool:
        return self.every > 0 and self.since_check >= self.every

    def judge(self, current: float | None) -> bool:
        """True: keep the current model (accept); False: roll back to the accepted one."""
        self.checks += 1
        self.since_check = 0
        self.last_score = current
        ok = (
            current is None
            or self.best_score is None
            or current >= self.best_score - self.tolerance
        )
        self.last_rolled_back = not ok
        return ok
