"""Terrain labelling: when is a terrain label "in force"? All logic of the `terrain_labeler` node.

Plain Python (no ROS): the node converts messages into calls on `Labeler` and publishes
`Labeler.state(now).data` (the class name, or `""` when no label is in force) on
`/terrain/label`. The bridge keeps what it receives there in a `LabelTimeline` and asks it
whether one label was in force over a whole feature window.

**Cues.** A cue proposes a label:

- *operator*: `Labeler.operator(t, name)` (a topic carrying a class name; `None`, `""` or
  `"none"` clears) and `Labeler.joy(t, buttons)` (a press, i.e. a 0 → 1 edge, of a button
  mapped by `LabelerConfig.joy_mapping` to a class or to `None` = clear). Both write the same
  operator slot, the latest action wins. With `operator_timeout_s > 0` the operator label
  expires that long after it was last set or re-asserted (same name again, same button again);
  with 0 it holds until changed or cleared.
- *region*: while the latest odometry position lies inside one of `LabelerConfig.regions`
  (polygons in the odom frame), that region's label; the first matching region in configured
  order wins where regions overlap. With `require_motion=False` the position stops counting
  once the odometry is stale; with gating on, stale odometry blocks every label anyway and the
  reason reported is `odom_stale`.

The operator cue wins over the region cue unless `operator_overrides_regions=False`.

**Gating** (`require_motion=True`, the default) admits a cue only while the robot moves steadily.
Checks in this order, the first failing one is the reason reported:

1. `no_odom`: no odometry since start (or since the last time reset).
2. `odom_stale`: the latest odometry is `odom_timeout_s` old or older.
3. `too_slow` / `too_fast`: `|v| < min_speed` / `|v| > max_speed` (latest odometry).
4. `turning`: `|yaw_rate| > max_yaw_rate`.
5. `unsteady`: `|dv/dt| > max_accel`, where `dv/dt` is the **least-squares slope** of the odometry
   speed against time over the odometry samples of the `steady_window_s` seconds up to the latest
   one (`t_k > t_latest − steady_window_s`; computed when odometry arrives, so it does not change
   while the latest sample ages: staleness is check 2). A least-squares fit uses every sample in the
   window, so one noisy or quantised sample moves it little, whereas a maximum finite difference at
   the ~6.5 Hz of the BorealTC Husky wheel odometry (one 0.008 m/s quantisation step over 0.154 s is
   already 0.05 m/s²) reacts to every spike: on the demo bag's odometry the 1 s slope stays within
   the default 0.5 m/s² at 98.7 % of samples, the maximum finite difference only at 94 %. Fewer than
   `steady_min_samples` samples in the window, or samples spanning less than half of it, count as
   `unsteady` (not enough evidence yet, e.g. just after start or after an odometry gap).
6. `slip`: only while a commanded velocity is recent (`cmd_vel` received less than
   `cmd_timeout_s` ago) and `|v_cmd| >= slip_min_cmd`: the relative slip
   `|v_cmd − v| / |v_cmd|` must not exceed `slip_max`. **Without a recent `cmd_vel` (in
   particular when none was ever received: not every robot publishes one) the slip check is
   skipped.**

With `require_motion=False` no gating is done and odometry is not needed (only for regions).

**Transitions are dropped.** A label is in force at `t` only when the cue has carried that same
label since at least `t − settle_s` *and* gating has passed without interruption since at least
`t − settle_s`. A cue change is any change of the proposed label, including to or from no label
(new operator label, entering or leaving a region, expiry); a change of the cue's source with the
same label (e.g. operator confirms the region's class) is not a change.

**Exactness.** Everything is a function of time that only changes at inputs or at known instants
(odometry becoming stale, `cmd_vel` or the operator label expiring). Before an input or query at `t`
the labeler replays those instants between its previous time and `t`, so a gating failure between
two calls (e.g. an odometry gap longer than `odom_timeout_s`) is never missed, whatever the call
pattern. Time conditions are right-continuous: odometry of age `odom_timeout_s` is already stale, a
`cmd_vel` of age `cmd_timeout_s` no longer counts, an operator label of age `operator_timeout_s` has
expired.

**Bad input** never raises from `odom`, `cmd_vel` or `joy`: non-finite values are rejected
(method returns `False`) and counted in `Labeler.counters["nonfinite_inputs"]`. An unknown class
name passed to `operator` raises `UnknownLabel` (a `ValueError` whose message names the label
and the known classes), is counted in `counters["unknown_labels"]` and leaves the state as it was.

**Time.** All methods take a time `t` in seconds (ROS time, possibly sim time). A step back by at
most `backwards_tolerance_s` is treated as "now" (messages of different topics may arrive
slightly out of order). A larger step back (bag restarted or looped, clock jump) resets all
history (operator label, odometry, `cmd_vel`, joystick, timers; counters are kept) and is counted
in `counters["time_resets"]`. A forward jump needs no special case: odometry simply becomes stale.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

CLEAR_WORDS: frozenset[str] = frozenset({"", "none"})
"""Operator names (after strip, case-insensitive) that clear the operator label."""

REASONS: tuple[str, ...] = (
    "in_force",
    "no_cue",
    "settling",
    "no_odom",
    "odom_stale",
    "too_slow",
    "too_fast",
    "turning",
    "unsteady",
    "slip",
)
"""Every value `LabelState.reason` can take."""

SOURCES: tuple[str, ...] = ("operator", "joy", "region")
"""Every non-None value `LabelState.source` can take."""

COUNTERS: tuple[str, ...] = ("unknown_labels", "nonfinite_inputs", "time_resets", "ambiguous_joy")
"""Keys of `Labeler.counters` (always present, starting at 0)."""

_FORBIDDEN_IN_NAMES = frozenset(":;,")


class UnknownLabel(ValueError):
    """A class name that is not in the configured class list.

    `str(exc)` reads e.g. `unknown label 'GRAVEL'; known: ASPHALT, FLOORING, ICE`.
    """

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown label {name!r}; known: {', '.join(self.known)}")


def resolve_label(name: str | None, class_names: Sequence[str]) -> str | None:
    """Canonical configured class name for `name`, or `None` for a clear word.

    Matching ignores case and surrounding whitespace; `None`, `""` and `"none"` (any case) mean
    "no label" and give `None`. Anything else not in `class_names` raises `UnknownLabel`.
    """
    if name is None:
        return None
    key = str(name).strip().casefold()
    if key in CLEAR_WORDS:
        return None
    for c in class_names:
        if c.casefold() == key:
            return c
    raise UnknownLabel(str(name), class_names)


def _validate_class_names(class_names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(class_names)
    if not names:
        raise ValueError("class_names is empty: at least one terrain class is needed")
    seen: dict[str, str] = {}
    for n in names:
        if not isinstance(n, str) or not n or n != n.strip():
            raise ValueError(f"bad class name {n!r}: must be a non-empty string without padding")
        if n.casefold() in CLEAR_WORDS:
            raise ValueError(f"class name {n!r} is reserved (it clears the label)")
        if _FORBIDDEN_IN_NAMES & set(n):
            raise ValueError(f"class name {n!r} must not contain any of ':', ';', ','")
        if n.casefold() in seen:
            raise ValueError(f"class names {seen[n.casefold()]!r} and {n!r} differ only in case")
        seen[n.casefold()] = n
    return names


# ---------------------------------------------------------------------------------------------
# regions


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray-casting test, vectorised over points and edges.

    `points` is `(n, 2)` (or `(2,)`), `polygon` `(k, 2)` vertices in order (either orientation,
    not closed: the last vertex connects back to the first). Returns `(n,)` bool. Works for
    concave polygons; self-intersecting ones follow the even-odd rule.

    **Boundary:** no tolerance. A horizontal ray towards +x counts edges crossed with the
    half-open rule `(y1 > y) != (y2 > y)` and a strict `x < x_cross`, so a point on an edge is
    inside on the "left / bottom" edges and outside on the "right / top" ones (the unit square
    behaves like `[0, 1)²`). Regions that share an edge therefore get each point of that edge
    exactly once (up to floating-point rounding of the crossing abscissa).
    """
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=float)
    x, y = p[:, :1], p[:, 1:]  # (n, 1): broadcast against the (k,) edges
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(poly, -1, axis=0).T
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never straddle
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = np.count_nonzero(straddles & (x < x_cross), axis=1)
    return crossings % 2 == 1


@dataclass(frozen=True, eq=False)
class Region:
    """A map region: a polygon in the odom frame (x, y in metres) tagged with a class name.

    `polygon` is converted to a read-only `(k, 2)` float array, `k >= 3`, finite, non-zero area
    (a repeated first vertex at the end is dropped). Boundary rule: see `points_in_polygon`.
    Compared by identity (`eq=False`) because of the array field.
    """

    label: str
    polygon: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"region label must be a non-empty string, got {self.label!r}")
        poly = np.array(self.polygon, dtype=float)
        if poly.ndim != 2 or poly.shape[1] != 2:
            raise ValueError(f"region {self.label}: polygon must be (k, 2), got {poly.shape}")
        if len(poly) > 3 and np.array_equal(poly[0], poly[-1]):
            poly = poly[:-1]
        if len(poly) < 3:
            raise ValueError(f"region {self.label}: a polygon needs >= 3 vertices, got {len(poly)}")
        if not np.isfinite(poly).all():
            raise ValueError(f"region {self.label}: polygon has non-finite coordinates")
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if not area > 0:
            raise ValueError(f"region {self.label}: polygon has zero area (collinear vertices?)")
        poly.flags.writeable = False
        object.__setattr__(self, "polygon", poly)

    def contains(self, x: float, y: float) -> bool:
        """Whether the point `(x, y)` is inside (boundary rule: see `points_in_polygon`)."""
        return bool(points_in_polygon(np.array([x, y]), self.polygon)[0])


def parse_regions(specs: Sequence[str], class_names: Sequence[str]) -> tuple[Region, ...]:
    """Parse region specs `"CLASS: x1,y1; x2,y2; x3,y3[; ...]"` (odom frame, metres).

    The class name is matched case-insensitively and stored in its configured spelling. Blank
    specs are skipped (ROS 2 string-array parameters cannot be empty, `['']` is the usual
    default), as is a trailing `;`. Raises `ValueError` naming the offending spec and the problem.
    """
    out: list[Region] = []
    for i, spec in enumerate(specs):
        if not spec or not spec.strip():
            continue
        where = f"region spec #{i} {spec!r}"
        name, sep, body = spec.partition(":")
        if not sep:
            raise ValueError(f"{where}: expected 'CLASS: x1,y1; x2,y2; x3,y3[; ...]'")
        try:
            label = resolve_label(name, class_names)
        except UnknownLabel as exc:
            raise ValueError(f"{where}: {exc}") from None
        if label is None:
            raise ValueError(f"{where}: a region needs a class name, not {name.strip()!r}")
        parts = [p for p in body.split(";") if p.strip()]
        vertices = []
        for p in parts:
            xy = p.split(",")
            try:
                if len(xy) != 2:
                    raise ValueError
                vx, vy = float(xy[0]), float(xy[1])
            except ValueError:
                raise ValueError(f"{where}: bad vertex {p.strip()!r}, expected 'x,y'") from None
            if not (math.isfinite(vx) and math.isfinite(vy)):
                raise ValueError(f"{where}: vertex {p.strip()!r} is not finite")
            vertices.append((vx, vy))
        try:
            out.append(Region(label, np.array(vertices, dtype=float).reshape(-1, 2)))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(out)


def parse_joy_mapping(specs: Sequence[str], class_names: Sequence[str]) -> dict[int, str | None]:
    """Parse joystick specs `"BUTTON:CLASS"` or `"BUTTON:none"` into `{button: label or None}`.

    `BUTTON` is a 0-based index into `sensor_msgs/Joy.buttons`; `none` maps the button to
    "clear the operator label". Class names are matched case-insensitively. Blank specs are
    skipped. Raises `ValueError` naming the offending spec (bad format, negative or duplicate
    button, unknown class).
    """
    out: dict[int, str | None] = {}
    for i, spec in enumerate(specs):
        if not spec or not spec.strip():
            continue
        where = f"joy mapping spec #{i} {spec!r}"
        button, sep, name = spec.partition(":")
        try:
            if not sep:
                raise ValueError
            b = int(button.strip())
        except ValueError:
            raise ValueError(f"{where}: expected 'BUTTON:CLASS' or 'BUTTON:none'") from None
        if b < 0:
            raise ValueError(f"{where}: button index must be >= 0")
        if b in out:
            raise ValueError(f"{where}: button {b} is mapped twice")
        if not name.strip():
            raise ValueError(f"{where}: missing class name (use 'none' to clear)")
        try:
            out[b] = resolve_label(name, class_names)
        except UnknownLabel as exc:
            raise ValueError(f"{where}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------------
# configuration and state


def _check(
    name: str, value: float, *, lo: float = 0.0, strict: bool = False, inf: bool = False
) -> None:
    """Raise a `ValueError` naming `name` unless `value` is a number `>= lo` (`> lo` if strict),
    not NaN, and finite unless `inf`."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or not (value > lo if strict else value >= lo):
        raise ValueError(f"{name} must be a number {'>' if strict else '>='} {lo}, got {value!r}")
    if not inf and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class LabelerConfig:
    """Parameters of `Labeler` (see the module docstring for their meaning).

    Units: seconds, metres, m/s, m/s², rad/s. `class_names`, `regions` and `joy_mapping` accept
    any sequence / mapping; they are stored as tuples / a read-only mapping, with region and
    joystick labels in their canonical configured spelling. `__post_init__` raises `ValueError`
    with a message naming the bad field.
    """

    class_names: tuple[str, ...]
    settle_s: float = 2.0
    """Time a new cue, or gating after a failure, must hold before a label is in force."""
    operator_timeout_s: float = 0.0
    """0: the operator label holds until changed or cleared; > 0: expires after this long."""
    require_motion: bool = True
    """Odometry gating on; False: labels depend on cues only, odometry is not needed."""
    min_speed: float = 0.1
    max_speed: float = math.inf
    max_yaw_rate: float = 1.0
    max_accel: float = 0.5
    """Bound on |least-squares slope of speed| over `steady_window_s`."""
    steady_window_s: float = 1.0
    odom_timeout_s: float = 0.5
    slip_max: float = 0.3
    """Largest allowed relative slip |v_cmd − v| / |v_cmd|."""
    slip_min_cmd: float = 0.05
    """Slip is only checked while |v_cmd| is at least this."""
    cmd_timeout_s: float = 0.5
    operator_overrides_regions: bool = True
    regions: tuple[Region, ...] = ()
    joy_mapping: Mapping[int, str | None] = field(default_factory=dict)
    steady_min_samples: int = 3
    """Fewest odometry samples in the steadiness window for a slope estimate (minimum 2)."""
    backwards_tolerance_s: float = 0.1
    """Steps back in time up to this are treated as "now"; larger ones reset the history."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", _validate_class_names(self.class_names))
        _check("settle_s", self.settle_s)
        _check("operator_timeout_s", self.operator_timeout_s)
        _check("min_speed", self.min_speed)
        _check("max_speed", self.max_speed, inf=True)
        if not self.max_speed > self.min_speed:
            raise ValueError(
                f"max_speed ({self.max_speed}) must be greater than min_speed ({self.min_speed})"
            )
        _check("max_yaw_rate", self.max_yaw_rate, inf=True)
        _check("max_accel", self.max_accel, inf=True)
        _check("steady_window_s", self.steady_window_s, strict=True)
        _check("odom_timeout_s", self.odom_timeout_s, strict=True)
        _check("slip_max", self.slip_max, inf=True)
        _check("slip_min_cmd", self.slip_min_cmd, strict=True, inf=True)
        _check("cmd_timeout_s", self.cmd_timeout_s, strict=True)
        _check("backwards_tolerance_s", self.backwards_tolerance_s)
        if not isinstance(self.steady_min_samples, int) or self.steady_min_samples < 2:
            raise ValueError(
                f"steady_min_samples must be an int >= 2, got {self.steady_min_samples!r}"
            )
        regions = []
        for r in self.regions:
            if not isinstance(r, Region):
                raise ValueError(f"regions must hold Region objects, got {type(r).__name__}")
            try:
                label = resolve_label(r.label, self.class_names)
            except UnknownLabel as exc:
                raise ValueError(f"region: {exc}") from None
            if label is None:
                raise ValueError(f"region label {r.label!r} is not a class")
            regions.append(r if label == r.label else Region(label, r.polygon))
        object.__setattr__(self, "regions", tuple(regions))
        joy: dict[int, str | None] = {}
        for b, name in dict(self.joy_mapping).items():
            if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 0:
                raise ValueError(f"joy_mapping: button must be an int >= 0, got {b!r}")
            try:
                joy[int(b)] = resolve_label(name, self.class_names)
            except UnknownLabel as exc:
                raise ValueError(f"joy_mapping button {b}: {exc}") from None
        object.__setattr__(self, "joy_mapping", MappingProxyType(joy))


@dataclass(frozen=True)
class LabelState:
    """The labeler's answer at one instant.

    `label`: class in force, or `None`. `cue` / `source`: the label currently proposed and by
    whom (`"operator"`, `"joy"`, `"region"`), whether in force or not (`None` without a cue).
    `reason`: `"in_force"`, or why not (`"no_cue"`, `"settling"` or a gating reason, see the
    module docstring). `label is not None` exactly when `reason == "in_force"`.
    """

    label: str | None
    source: str | None
    reason: str
    cue: str | None = None

    @property
    def in_force(self) -> bool:
        return self.label is not None

    @property
    def data(self) -> str:
        """Value for the `std_msgs/String` on `/terrain/label`: the label, or `""`."""
        return self.label or ""


# ---------------------------------------------------------------------------------------------
# labeler


@dataclass
class _Odom:
    t: float
    v: float
    yaw_rate: float
    stale_at: float  # fresh while now < stale_at
    region: str | None  # label of the first region containing the position


@dataclass
class _Operator:
    label: str
    source: str  # "operator" | "joy"
    expires_at: float  # math.inf without operator_timeout_s


class Labeler:
    """Decides at each instant whether a terrain label is in force (see the module docstring).

    Inputs: `operator`, `joy`, `odom`, `cmd_vel`; query: `state`. Every call takes the current
    time `t` in seconds and advances the labeler's clock. `counters` (a `Counter` with the keys
    of `COUNTERS`) counts rejected inputs and time resets for diagnostics.
    """

    def __init__(self, cfg: LabelerConfig) -> None:
        self.cfg = cfg
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.reset()

    # -- public ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget operator label, odometry, cmd_vel, joystick state and timers; keep counters."""
        self._now: float | None = None
        self._odom: _Odom | None = None
        self._window: deque[tuple[float, float]] = deque()  # (t, v) of the steadiness window
        self._slope: float | None = None  # least-squares dv/dt over it (None: too little data)
        self._cmd: tuple[float, float] | None = None  # (v_cmd, expires_at)
        self._op: _Operator | None = None
        self._joy_prev: tuple[bool, ...] = ()
        self._cue: tuple[str, str] | None = None  # (label, source)
        self._cue_since = -math.inf
        self._gate: str | None = "no_odom" if self.cfg.require_motion else None
        self._gate_ok_since: float | None = None if self.cfg.require_motion else -math.inf

    @property
    def now(self) -> float | None:
        """Latest time seen (None before the first call and right after a reset)."""
        return self._now

    def operator(self, t: float, name: str | None) -> bool:
        """Operator topic: set the operator label to `name`, or clear it (`None`, `""`, `"none"`).

        Re-sending the current label refreshes `operator_timeout_s` and is not a cue change.
        Raises `UnknownLabel` (a `ValueError`) for a name not in `class_names`; that is counted
        in `counters["unknown_labels"]` and changes nothing. Returns `False` (counted in
        `nonfinite_inputs`, nothing changed) for a non-finite `t`, else `True`.
        """
        try:
            label = resolve_label(name, self.cfg.class_names)
        except UnknownLabel:
            self.counters["unknown_labels"] += 1
            raise
        tt = self._accept_time(t)
        if tt is None:
            return False
        self._advance(tt)
        self._set_operator(tt, label, "operator")
        self._evaluate(tt)
        return True

    def joy(self, t: float, buttons: Sequence[int]) -> bool:
        """Joystick message (`sensor_msgs/Joy.buttons`): act on presses of mapped buttons.

        A press is a 0 → 1 edge against the previous message (before the first message, and
        after a reset, every button counts as released; buttons missing from a shorter array
        count as released). A held button does nothing more. When several mapped buttons with
        different meanings are pressed in the same message, the message is ignored and counted
        in `counters["ambiguous_joy"]`. Returns `True` when a press set or cleared the operator
        label, `False` otherwise (also for a non-finite `t`, counted in `nonfinite_inputs`).
        """
        tt = self._accept_time(t)
        if tt is None:
            return False
        pressed = tuple(bool(b) for b in buttons)
        prev = self._joy_prev
        self._joy_prev = pressed
        actions = {
            self.cfg.joy_mapping[i]
            for i, down in enumerate(pressed)
            if down and not (i < len(prev) and prev[i]) and i in self.cfg.joy_mapping
        }
        if not actions:
            return False
        if len(actions) > 1:
            self.counters["ambiguous_joy"] += 1
            return False
        self._advance(tt)
        self._set_operator(tt, actions.pop(), "joy")
        self._evaluate(tt)
        return True

    def odom(self, t: float, x: float, y: float, v: float, yaw_rate: float) -> bool:
        """Odometry: position `(x, y)` in the odom frame (m), forward speed `v` (m/s, signed)
        and `yaw_rate` (rad/s). Returns `False` (counted in `nonfinite_inputs`, nothing
        changed) when any value or `t` is not finite, else `True`."""
        if not all(math.isfinite(a) for a in (x, y, v, yaw_rate)):
            self.counters["nonfinite_inputs"] += 1
            return False
        tt = self._accept_time(t)
        if tt is None:
            return False
        self._advance(tt)
        region = next((r.label for r in self.cfg.regions if r.contains(x, y)), None)
        self._odom = _Odom(tt, float(v), float(yaw_rate), tt + self.cfg.odom_timeout_s, region)
        window = self._window
        window.append((tt, float(v)))
        while window[0][0] <= tt - self.cfg.steady_window_s:
            window.popleft()
        self._slope = self._speed_slope()
        self._evaluate(tt)
        return True

    def cmd_vel(self, t: float, v: float, yaw_rate: float) -> bool:
        """Commanded velocity (`geometry_msgs/Twist`: `linear.x`, `angular.z`), for the slip
        check; `yaw_rate` is only checked for finiteness. Returns `False` (counted in
        `nonfinite_inputs`, nothing changed) for non-finite input, else `True`."""
        if not (math.isfinite(v) and math.isfinite(yaw_rate)):
            self.counters["nonfinite_inputs"] += 1
            return False
        tt = self._accept_time(t)
        if tt is None:
            return False
        self._advance(tt)
        self._cmd = (float(v), tt + self.cfg.cmd_timeout_s)
        self._evaluate(tt)
        return True

    def state(self, t: float) -> LabelState:
        """The label in force at `t` (advances the clock to `t`).

        Raises `ValueError` for a non-finite `t` (a caller bug, unlike bad message content).
        """
        if not math.isfinite(t):
            raise ValueError(f"state() needs a finite time, got {t!r}")
        tt = self._accept_time(t)
        assert tt is not None
        self._advance(tt)
        self._evaluate(tt)
        cue = self._cue
        if cue is None:
            return LabelState(None, None, "no_cue")
        label, source = cue
        if self._gate is not None:
            return LabelState(None, source, self._gate, label)
        assert self._gate_ok_since is not None
        if tt - max(self._cue_since, self._gate_ok_since) < self.cfg.settle_s:
            return LabelState(None, source, "settling", label)
        return LabelState(label, source, "in_force", label)

    # -- internals ------------------------------------------------------------------------------

    def _accept_time(self, t: float) -> float | None:
        """Finite check, backwards-time handling. Returns the effective time or None."""
        if not math.isfinite(t):
            self.counters["nonfinite_inputs"] += 1
            return None
        t = float(t)
        if self._now is not None and t < self._now:
            if self._now - t > self.cfg.backwards_tolerance_s:
                self.counters["time_resets"] += 1
                self.reset()
            else:
                t = self._now
        return t

    def _set_operator(self, t: float, label: str | None, source: str) -> None:
        if label is None:
            self._op = None
            return
        timeout = self.cfg.operator_timeout_s
        self._op = _Operator(label, source, t + timeout if timeout > 0 else math.inf)

    def _advance(self, t: float) -> None:
        """Replay the instants in (now, t) where the cue or the gate can change on their own."""
        if self._now is None:
            self._now = t
            return
        now = self._now
        instants: set[float] = set()
        if self._op is not None:
            instants.add(self._op.expires_at)
        if self._odom is not None:
            instants.add(self._odom.stale_at)
        if self.cfg.require_motion and self._cmd is not None:
            instants.add(self._cmd[1])
        for c in sorted(c for c in instants if now < c < t):
            self._evaluate(c)
        self._now = t

    def _cue_at(self, t: float) -> tuple[str, str] | None:
        op = self._op
        op_cue = (op.label, op.source) if op is not None and t < op.expires_at else None
        o = self._odom
        region_cue = None
        if o is not None and o.region is not None and (self.cfg.require_motion or t < o.stale_at):
            region_cue = (o.region, "region")
        if self.cfg.operator_overrides_regions:
            return op_cue or region_cue
        return region_cue or op_cue

    def _gate_at(self, t: float) -> str | None:
        """Gating reason at `t`, or None when gating passes."""
        cfg = self.cfg
        if not cfg.require_motion:
            return None
        o = self._odom
        if o is None:
            return "no_odom"
        if t >= o.stale_at:
            return "odom_stale"
        speed = abs(o.v)
        if speed < cfg.min_speed:
            return "too_slow"
        if speed > cfg.max_speed:
            return "too_fast"
        if abs(o.yaw_rate) > cfg.max_yaw_rate:
            return "turning"
        slope = self._slope
        if slope is None or abs(slope) > cfg.max_accel:
            return "unsteady"
        if self._cmd is not None and t < self._cmd[1]:
            v_cmd = self._cmd[0]
            if abs(v_cmd) >= cfg.slip_min_cmd and abs(v_cmd - o.v) / abs(v_cmd) > cfg.slip_max:
                return "slip"
        return None

    def _speed_slope(self) -> float | None:
        """Least-squares slope of v(t) over the steadiness window, None with too little data."""
        if len(self._window) < self.cfg.steady_min_samples:
            return None
        a = np.array(self._window)
        if a[-1, 0] - a[0, 0] < 0.5 * self.cfg.steady_window_s:
            return None
        ts = a[:, 0] - a[:, 0].mean()  # centred: Unix-time stamps would lose precision
        return float(np.dot(ts, a[:, 1] - a[:, 1].mean()) / np.dot(ts, ts))

    def _evaluate(self, t: float) -> None:
        """Update cue and gate at `t` and the times since which they have held."""
        cue = self._cue_at(t)
        if (cue and cue[0]) != (self._cue and self._cue[0]):
            self._cue_since = t
        self._cue = cue
        gate = self._gate_at(t)
        if gate is not None:
            self._gate_ok_since = None
        elif self._gate_ok_since is None:
            self._gate_ok_since = t
        self._gate = gate


# ---------------------------------------------------------------------------------------------
# timeline (bridge side)


@dataclass
class _Segment:
    start: float
    last: float  # latest record of this label in the run
    label: str | None


class LabelTimeline:
    """Labels as received on `/terrain/label`, queried over intervals (used by the bridge).

    The timeline is a step function: from a record at `t` its label is in force until the next
    record. It is *known* only up to `max_hold_s` after a record: with a finite `max_hold_s`
    (sensible when the labeler publishes periodically, e.g. 2 to 3 publish periods) a silent or
    dead labeler stops vouching for its last label; the default `math.inf` suits a publisher that
    only sends changes. Records are compressed into runs of one label, so memory grows with the
    number of label changes, not of messages; runs that ended more than `horizon_s` before the
    latest record are dropped (at most `max_segments` runs are kept in any case).

    `record` accepts a class name or `None` / `""` (no label). Time handling as in `Labeler`: a
    step back up to `backwards_tolerance_s` is treated as "now", a larger one clears the
    timeline (counted in `counters["time_resets"]`); a non-finite time is ignored (counted in
    `counters["nonfinite_inputs"]`).
    """

    def __init__(
        self,
        horizon_s: float = 60.0,
        max_hold_s: float = math.inf,
        backwards_tolerance_s: float = 0.1,
        max_segments: int = 10_000,
    ) -> None:
        _check("horizon_s", horizon_s, strict=True, inf=True)
        _check("max_hold_s", max_hold_s, strict=True, inf=True)
        _check("backwards_tolerance_s", backwards_tolerance_s)
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        self.horizon_s = horizon_s
        self.max_hold_s = max_hold_s
        self.backwards_tolerance_s = backwards_tolerance_s
        self.max_segments = max_segments
        self.counters: Counter[str] = Counter(time_resets=0, nonfinite_inputs=0)
        self.clear()

    def clear(self) -> None:
        """Forget every record (counters are kept)."""
        self._segs: list[_Segment] = []
        self._starts: list[float] = []
        self._latest: float | None = None

    def __len__(self) -> int:
        """Number of stored runs (one per label change within the horizon)."""
        return len(self._segs)

    def record(self, t: float, label: str | None) -> bool:
        """Record that `label` (`None` or `""`: no label) was in force from `t` on.

        Returns False (and counts it) when `t` is not finite.
        """
        if not math.isfinite(t):
            self.counters["nonfinite_inputs"] += 1
            return False
        t = float(t)
        label = label or None
        if self._latest is not None and t < self._latest:
            if self._latest - t > self.backwards_tolerance_s:
                self.counters["time_resets"] += 1
                self.clear()
            else:
                t = self._latest
        self._latest = t
        segs, starts = self._segs, self._starts
        if segs and segs[-1].start == t and segs[-1].label != label:
            segs.pop()  # superseded at the same instant: never in force for any duration
            starts.pop()
        if segs and segs[-1].label == label and t <= segs[-1].last + self.max_hold_s:
            segs[-1].last = t
        else:
            segs.append(_Segment(t, t, label))
            starts.append(t)
        # keep the run in force at the horizon cut-off and everything after it
        drop = bisect.bisect_right(starts, t - self.horizon_s) - 1
        drop = max(drop, len(segs) - self.max_segments)
        if drop > 0:
            del segs[:drop]
            del starts[:drop]
        return True

    def label_at(self, t: float) -> str | None:
        """Label in force at `t`, or None (no label, or not known at `t`)."""
        return self.label_over(t, t)

    def label_over(self, t0: float, t1: float) -> str | None:
        """The label if one and the same label was in force over all of `[t0, t1]`, else None.

        None also when any part of the interval lies before the first retained record, or more
        than `max_hold_s` after the record that vouches for it. A record exactly at `t1` with
        another label (or none) makes the answer None (closed interval). Raises `ValueError`
        unless `t0 <= t1`, both finite.
        """
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 <= t1):
            raise ValueError(f"label_over needs finite t0 <= t1, got [{t0}, {t1}]")
        i = bisect.bisect_right(self._starts, t0) - 1
        if i < 0:
            return None
        seg = self._segs[i]
        if seg.label is None:
            return None
        if i + 1 < len(self._starts) and self._starts[i + 1] <= t1:
            return None  # another run starts inside: a change, or a gap with the same label
        if t1 > seg.last + self.max_hold_s:
            return None
        return seg.label
