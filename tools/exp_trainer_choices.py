#!/usr/bin/env python3
"""Measure each design choice of the integer trainer (issue "trainer core") on MNIST under shift.

    python tools/exp_trainer_choices.py [--quick] [--json PATH] [--md PATH] [--img-dir DIR]

Setup: MNIST (`shared/data/mnist`) → pixels/255 → PCA to 102 dims (fit on the source training
set) → MLP 102-64-32-10 with ReLU, pretrained in float on upright digits (scikit-learn
`MLPClassifier`), quantized with `terrain_odt.model.quantize` (calibration on source data). Target
domain: digits rotated by +30..+45 degrees (one direction, a random angle per image), PCA from the
source. On-device fine-tuning with `terrain_odt.model.qnn.QModel.train_step` (the bit-exact
reference of
`firmware/odt-core`), one pass over N target samples; accuracy on held-out rotated MNIST *test*
images. The learning rate of every family is chosen on a rotated validation split (taken from the
MNIST training images, disjoint from the adaptation pool), never on the test set.

Comparisons (one table each in the generated page):
1. sub-step updates: i8 + stochastic rounding (default) vs i16 master vs the ABLATION "i8
   round-to-nearest" (the stochastic-rounding draw replaced by the constant 2^15, i.e. the update
   `(v + 2^15) >> 16`: every update below half a step is lost, like MicroFlow-ODT);
2. gradient scaling: QAS per-channel factors vs ABLATIONS "uniform" (one factor for every weight
   row of every layer and one for every bias) and "plain integer SGD" (one factor for weights and
   biases alike: SGD on the stored integers), each over a learning-rate sweep, with the counters;
3. what trains: last layer, last two, all;
4. dynamic partial updates: top-k off vs k_min = 4, 8 (rows actually changed are counted);
5. mini-batches of 1, 4, 8.
Reference: float32 SGD (batch 1, all layers) of the float model on the same samples.

Outputs (full run): bench/results/trainer_choices.json, docs/trainer_choices.md,
docs/img/trainer_choices_*.png. `--quick` (a smoke run, under 2 minutes) writes to
build/trainer_choices_quick/ instead. Deterministic: every random choice is seeded; numpy
linear algebra runs on one thread.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:
    from tools import _common as common
except ModuleNotFoundError:  # run as `python tools/<name>.py`: the root is not on sys.path yet
    import _common as common  # type: ignore[no-redef]

from terrain_odt.data.datasets import load_mnist
from terrain_odt.model.blob import LayerDesc
from terrain_odt.model.floatref import FloatMLP, FloatParams
from terrain_odt.model.qnn import Lcg, QModel, Storage, TrainConfig
from terrain_odt.model.quantize import (
    QParams,
    activation_qparams,
    calibrate_ranges,
    lr_to_fixed,
    mant_exp16,
    quantize_model,
    quantize_weights,
)
from tools import provenance

Rounding = Literal["sr", "rtn"]
Scaling = Literal["qas", "uniform", "plain"]

ROOT = common.ROOT
ALL3 = ("all", "all", "all")
DEFAULT_JSON = ROOT / "bench" / "results" / "trainer_choices.json"
DEFAULT_MD = ROOT / "docs" / "trainer_choices.md"
DEFAULT_IMG = ROOT / "docs" / "img"
QUICK_DIR = ROOT / "build" / "trainer_choices_quick"


log = common.logger("exp_trainer_choices")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ExpConfig:
    """Everything that defines a run (recorded verbatim in the JSON)."""

    quick: bool
    seeds: tuple[int, ...]
    n_report: tuple[int, ...]  # N target samples at which results are reported (one pass)
    n_curve: tuple[int, ...]  # extra evaluation points for the learning curves (test set only)
    lrs: tuple[float, ...]  # learning-rate sweep (integer families and the float reference)
    n_source: int  # upright training images used for PCA and pretraining
    n_calib: int  # of which used for quantization calibration
    n_pool: int  # rotated adaptation pool (MNIST training images not used as source)
    n_val: int  # rotated validation images (lr selection)
    n_test: int  # rotated MNIST test images (reported accuracy)
    angle_deg: tuple[float, float] = (30.0, 45.0)
    pca_dims: int = 102
    hidden: tuple[int, int] = (64, 32)
    pretrain_epochs: int = 20
    pretrain_batch: int = 128
    topk: tuple[int, ...] = (4, 8)
    batches: tuple[int, ...] = (4, 8)
    split_seed: int = 0
    rotation_seed: int = 1
    pretrain_seed: int = 0
    lcg_seed_base: int = 1000

    @property
    def n_max(self) -> int:
        return max(self.n_report)

    @property
    def n_main(self) -> int:
        """The N of the headline columns (1000 when reported)."""
        return 1000 if 1000 in self.n_report else self.n_report[-1]


FULL = ExpConfig(
    quick=False,
    seeds=(0, 1, 2, 3, 4),
    n_report=(300, 1000),
    n_curve=(0, 50, 100, 200, 500),
    lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    n_source=50000,
    n_calib=5000,
    n_pool=8000,
    n_val=2000,
    n_test=10000,
)
QUICK = ExpConfig(
    quick=True,
    seeds=(0, 1),
    n_report=(100, 300),
    n_curve=(0,),
    lrs=(1e-3, 3e-3, 1e-2),
    n_source=10000,
    n_calib=2000,
    n_pool=1000,
    n_val=500,
    n_test=2000,
    pretrain_epochs=10,
)


@dataclass(frozen=True)
class Variant:
    """One trainer configuration (an integer family when `lr` is left to the sweep)."""

    key: str
    label: str
    storage: Storage = "i8"
    rounding: Rounding = "sr"
    scaling: Scaling = "qas"
    modes: tuple[str, ...] = ALL3
    batch: int = 1
    topk_min: int | None = None


DEFAULT = Variant("qas-i8sr", "i8 + stochastic rounding (default)")
SWEEP_VARIANTS = (
    DEFAULT,
    Variant("qas-i16", "i16 master weights", storage="i16"),
    Variant("qas-i8rtn", "ABLATION i8 round-to-nearest", rounding="rtn"),
    Variant("uniform", "ABLATION uniform factors (1 for weights, 1 for biases)", scaling="uniform"),
    Variant("plain", "ABLATION plain integer SGD (1 factor for all)", scaling="plain"),
)
FLOAT_KEY = "float32"


def fixed_variants(cfg: ExpConfig) -> list[Variant]:
    """Variants run at the default learning rate only (comparisons 3–5)."""
    out = [
        Variant("last1", "last layer only", modes=("frozen", "frozen", "all")),
        Variant("last2", "last two layers", modes=("frozen", "all", "all")),
    ]
    out += [Variant(f"topk{k}", f"top-k, k_min = {k}", topk_min=k) for k in cfg.topk]
    out += [Variant(f"batch{b}", f"batch {b}", batch=b) for b in cfg.batches]
    return out


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    """Features of every split: float PCA features `z*` and their int8 quantization `q*`."""

    z_pool: np.ndarray
    y_pool: np.ndarray
    z_val: np.ndarray
    y_val: np.ndarray
    z_test: np.ndarray  # rotated test images
    z_up: np.ndarray  # the same test images upright (source domain, for forgetting)
    y_test: np.ndarray
    z_src: np.ndarray
    y_src: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    q_pool: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q_val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q_test: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q_up: np.ndarray = field(default_factory=lambda: np.zeros(0))


def rotate_images(images: np.ndarray, lo: float, hi: float, seed: int) -> tuple[np.ndarray, Any]:
    """Each image rotated by its own angle ~ U(lo, hi) degrees (bilinear, same size); /255."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    angles: np.ndarray = np.asarray(rng.uniform(lo, hi, images.shape[0]), dtype=np.float64)
    out = np.empty(images.shape, dtype=np.float32)
    for i, (img, ang) in enumerate(zip(images, angles, strict=True)):
        out[i] = ndimage.rotate(img.astype(np.float32), float(ang), reshape=False, order=1)
    return np.clip(out, 0.0, 255.0) / 255.0, angles


def prepare_data(cfg: ExpConfig) -> tuple[Data, Any]:
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    train, test = load_mnist("train"), load_mnist("test")
    perm = np.random.default_rng(cfg.split_seed).permutation(len(train))
    n_tgt = cfg.n_pool + cfg.n_val
    src_idx = perm[: cfg.n_source]
    tgt_idx = perm[len(train) - n_tgt :]  # never overlaps the source set
    if cfg.n_source + n_tgt > len(train):
        raise ValueError("source and target splits overlap")
    x_src = train.images[src_idx].reshape(len(src_idx), -1).astype(np.float32) / 255.0
    pca = PCA(cfg.pca_dims, svd_solver="randomized", random_state=cfg.split_seed).fit(x_src)
    lo, hi = cfg.angle_deg
    tgt_img, tgt_ang = rotate_images(train.images[tgt_idx], lo, hi, cfg.rotation_seed)
    te_sel = np.arange(cfg.n_test)
    te_img, te_ang = rotate_images(test.images[te_sel], lo, hi, cfg.rotation_seed + 1)
    up = test.images[te_sel].astype(np.float32) / 255.0

    def proj(a: np.ndarray) -> np.ndarray:
        return pca.transform(a.reshape(a.shape[0], -1)).astype(np.float64)

    z_tgt = proj(tgt_img)
    y_tgt = train.labels[tgt_idx]
    data = Data(
        z_pool=z_tgt[: cfg.n_pool],
        y_pool=y_tgt[: cfg.n_pool],
        z_val=z_tgt[cfg.n_pool :],
        y_val=y_tgt[cfg.n_pool :],
        z_test=proj(te_img),
        z_up=proj(up),
        y_test=test.labels[te_sel],
        z_src=proj(x_src),
        y_src=train.labels[src_idx],
    )
    data.info = {
        "source": f"MNIST train, {cfg.n_source} upright images (fixed permutation)",
        "pool": f"MNIST train, {cfg.n_pool} other images, rotated",
        "val": f"MNIST train, {cfg.n_val} other images, rotated (lr selection only)",
        "test": f"MNIST t10k, first {cfg.n_test} images, rotated (and upright for forgetting)",
        "angles_deg": {
            "pool_val_mean": float(tgt_ang.mean()),
            "test_mean": float(te_ang.mean()),
            "range": list(cfg.angle_deg),
        },
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "seconds": time.perf_counter() - t0,
    }
    return data, pca


# ---------------------------------------------------------------------------------------------
# Float model: pretraining and the float32 SGD reference


def pretrain(cfg: ExpConfig, data: Data) -> FloatParams:
    """Float MLP on the source features; weights in the blob layout (`[OUT][IN]`)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        hidden_layer_sizes=cfg.hidden,
        activation="relu",
        solver="adam",
        batch_size=cfg.pretrain_batch,
        max_iter=cfg.pretrain_epochs,
        random_state=cfg.pretrain_seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(data.z_src, data.y_src)
    return [
        (np.asarray(w).T.copy(), np.asarray(b).copy())
        for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# Integer model, ablations


class RoundHalfUpLcg(Lcg):
    """ABLATION of §5.2: the draw is the constant 2^15, so `step = (v + 2^15) >> 16` rounds to
    the nearest step (half up) and every update below half a step is lost."""

    def draws(self, n: int) -> np.ndarray:
        return np.full(max(n, 0), 1 << 15, dtype=np.int64)


def real_factors(model: QModel, bias: bool) -> list[np.ndarray]:
    """Per layer, the update factors `u = um·2^ue` (or `ub`) as floats."""
    out = []
    for la in model.param_layers:
        m, e = (la.ubm, la.ube) if bias else (la.um, la.ue)
        out.append(m.astype(np.float64) * np.exp2(e.astype(np.float64)))
    return out


def geomean(arrs: Sequence[np.ndarray]) -> float:
    return float(np.exp(np.mean(np.log(np.concatenate(arrs)))))


def with_uniform_factors(model: QModel, scaling: Scaling) -> QModel:
    """ABLATION of QAS: every weight row of every layer gets one factor `K_w` = the geometric mean
    of the QAS factors; biases get `K_b` = the geometric mean of the QAS bias factors
    ("uniform") or `K_w` too ("plain": SGD on the stored integers, where the gradient wrt an
    integer weight is `dL/dacc · xc` and wrt an integer bias `dL/dacc`)."""
    m = model.copy()
    ku = mant_exp16(geomean(real_factors(model, bias=False)))
    kb = ku if scaling == "plain" else mant_exp16(geomean(real_factors(model, bias=True)))
    for la in m.param_layers:
        la.um[:], la.ue[:] = ku
        la.ubm[:], la.ube[:] = kb
        la._plans.clear()
    return m


def quantize_input(z: np.ndarray, q: QParams) -> np.ndarray:
    """Host-side int8 quantization of the features (what the device receives)."""
    v = np.floor(np.asarray(z) / q.scale + 0.5) + q.zero_point
    return np.clip(v, -128, 127).astype(np.int64)


def int_accuracy(model: QModel, xq: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict_batch(xq).argmax(axis=1) == y))


@dataclass
class Quantized:
    model: QModel
    input_q: QParams
    s_w: list[np.ndarray]  # per layer, per channel weight scales (for real-valued changes)
    descs: list[LayerDesc]


def build_quantized(cfg: ExpConfig, params: FloatParams, data: Data) -> Quantized:
    dims = [cfg.pca_dims, *cfg.hidden, 10]
    descs = [
        LayerDesc.dense(dims[i], dims[i + 1], relu=i < len(dims) - 2) for i in range(len(dims) - 1)
    ]
    calib = data.z_src[: cfg.n_calib]
    inq = activation_qparams(min(float(calib.min()), 0.0), max(float(calib.max()), 0.0))
    outq = [activation_qparams(lo, hi) for lo, hi in calibrate_ranges(descs, params, calib)]
    model = quantize_model(descs, params, inq, outq, model_id=0x4D4E4953, storage="i8")
    s_w = [quantize_weights(w)[1] for w, _ in params]
    return Quantized(model, inq, s_w, descs)


# ---------------------------------------------------------------------------------------------
# One run


class Tracker:
    """Per update and trained layer: rows whose weights or bias changed, stored weights changed,
    forward (int8) weights changed and, for the i16 master, the size of each weight change."""

    def __init__(self, model: QModel, modes: Sequence[str]) -> None:
        self.layers = [
            la for la, md in zip(model.param_layers, modes, strict=True) if md != "frozen"
        ]
        n = len(self.layers)
        self.rows_changed = [0] * n
        self.rows_total = [0] * n
        self.w_changed = [0] * n
        self.w8_changed = [0] * n
        self.w_total = [0] * n
        self.nonzero = 0  # i16: nonzero weight changes
        self.below_half = 0  # i16: of which |Δw16| < 128 (half an int8 step: lost by RTN)
        self.mass_total = 0
        self.mass_below_half = 0
        self.updates = 0
        self._before: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    @staticmethod
    def _stored(la: Any) -> np.ndarray:
        return la.w8 if la.w16 is None else la.w16

    def before(self) -> None:
        self._before = [
            (self._stored(la).copy(), la.w8.copy(), la.bias.copy()) for la in self.layers
        ]

    def after(self, applied: bool) -> None:
        if not applied:
            return
        self.updates += 1
        for j, (la, (w0, w80, b0)) in enumerate(zip(self.layers, self._before, strict=True)):
            dw = self._stored(la) - w0
            rows = (dw != 0).any(axis=1) | (la.bias != b0)
            self.rows_changed[j] += int(rows.sum())
            self.rows_total[j] += int(rows.size)
            self.w_changed[j] += int(np.count_nonzero(dw))
            self.w8_changed[j] += int(np.count_nonzero(la.w8 != w80))
            self.w_total[j] += int(dw.size)
            if la.w16 is not None:
                nz = np.abs(dw[dw != 0])
                self.nonzero += int(nz.size)
                self.below_half += int(np.count_nonzero(nz < 128))
                self.mass_total += int(nz.sum())
                self.mass_below_half += int(nz[nz < 128].sum())

    def summary(self) -> dict[str, Any]:
        def frac(a: int, b: int) -> float | None:
            return a / b if b else None

        out: dict[str, Any] = {
            "updates": self.updates,
            "rows_changed_frac": frac(sum(self.rows_changed), sum(self.rows_total)),
            "rows_changed_frac_per_layer": [
                frac(a, b) for a, b in zip(self.rows_changed, self.rows_total, strict=True)
            ],
            "stored_weights_changed_frac": frac(sum(self.w_changed), sum(self.w_total)),
            "int8_weights_changed_frac": frac(sum(self.w8_changed), sum(self.w_total)),
        }
        if self.nonzero:
            out["i16_changes_below_half_step_frac"] = self.below_half / self.nonzero
            out["i16_change_mass_below_half_step_frac"] = self.mass_below_half / self.mass_total
        return out


def rel_change(
    w0: Sequence[np.ndarray], w1: Sequence[np.ndarray], scale: Sequence[np.ndarray]
) -> list[float]:
    """Per layer ‖ΔW‖/‖W₀‖ of the real weights (`scale` per output row; 1 for float)."""
    out = []
    for a, b, s in zip(w0, w1, scale, strict=True):
        sa = np.asarray(s, dtype=np.float64)[:, None]
        out.append(float(np.linalg.norm(sa * (b - a)) / np.linalg.norm(sa * a)))
    return out


def sample_order(cfg: ExpConfig, seed: int) -> np.ndarray:
    """The adaptation samples of a seed (indices into the pool, in training order)."""
    return np.random.default_rng([seed, 7]).permutation(cfg.n_pool)[: cfg.n_max]


def eval_points(cfg: ExpConfig) -> list[int]:
    return sorted({*cfg.n_report, *(n for n in cfg.n_curve if n <= cfg.n_max)})


def run_int(
    cfg: ExpConfig,
    base: QModel,
    var: Variant,
    lr: float,
    seed: int,
    data: Data,
    s_w: Sequence[np.ndarray],
) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = base.copy()
    lr_m, lr_e = lr_to_fixed(lr)
    tc = TrainConfig(lr_m, lr_e, var.modes, var.batch, var.topk_min, cfg.lcg_seed_base + seed)
    model.set_config(tc)
    if var.rounding == "rtn":
        model.lcg = RoundHalfUpLcg(tc.seed)
    order = sample_order(cfg, seed)
    xs, ys = data.q_pool[order], data.y_pool[order]
    w_init = [la.w8.astype(np.float64) for la in model.param_layers]
    tracker = Tracker(model, var.modes)
    points = eval_points(cfg)
    curve: dict[str, float] = {}
    report: dict[str, Any] = {}

    def evaluate(n: int) -> None:
        curve[str(n)] = int_accuracy(model, data.q_test, data.y_test)
        if n in cfg.n_report:
            report[str(n)] = {
                "test": curve[str(n)],
                "val": int_accuracy(model, data.q_val, data.y_val),
                "upright": int_accuracy(model, data.q_up, data.y_test),
                "counters": model.counters.as_dict(),
            }

    for i in range(cfg.n_max):
        if i in points:
            evaluate(i)
        upd = model.counters.updates
        tracker.before()
        model.train_step(xs[i], int(ys[i]))
        tracker.after(model.counters.updates != upd)
    evaluate(cfg.n_max)
    w_end = [la.w8.astype(np.float64) for la in model.param_layers]
    return {
        "variant": var.key,
        "lr": lr,
        "lr_fixed": [lr_m, lr_e],
        "seed": seed,
        "lcg_seed": tc.seed,
        "report": report,
        "curve": curve,
        "track": tracker.summary(),
        "rel_change_per_layer": rel_change(w_init, w_end, s_w),
        "seconds": time.perf_counter() - t0,
    }


def run_float(
    cfg: ExpConfig, params: FloatParams, lr: float, seed: int, data: Data
) -> dict[str, Any]:
    t0 = time.perf_counter()
    net = FloatMLP(params)
    order = sample_order(cfg, seed)
    zs, ys = data.z_pool[order], data.y_pool[order]
    w_init = [w.astype(np.float64) for w in net.w]
    points = eval_points(cfg)
    curve: dict[str, float] = {}
    report: dict[str, Any] = {}

    def evaluate(n: int) -> None:
        curve[str(n)] = net.accuracy(data.z_test, data.y_test)
        if n in cfg.n_report:
            report[str(n)] = {
                "test": curve[str(n)],
                "val": net.accuracy(data.z_val, data.y_val),
                "upright": net.accuracy(data.z_up, data.y_test),
            }

    for i in range(cfg.n_max):
        if i in points:
            evaluate(i)
        net.step(zs[i], int(ys[i]), lr)
    evaluate(cfg.n_max)
    ones = [np.ones(w.shape[0]) for w in net.w]
    return {
        "variant": FLOAT_KEY,
        "lr": lr,
        "seed": seed,
        "report": report,
        "curve": curve,
        "rel_change_per_layer": rel_change(w_init, [w.astype(np.float64) for w in net.w], ones),
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------
# Aggregation


def dump_json(payload: dict[str, Any]) -> str:
    """Indented JSON, except that each element of `runs` takes one line."""
    runs = payload.get("runs", [])
    head = json.dumps({k: v for k, v in payload.items() if k != "runs"}, indent=1)
    body = ",\n".join("  " + json.dumps(r) for r in runs)
    return head[:-2] + ',\n "runs": [\n' + body + "\n ]\n}\n"


def stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


class Results:
    """All runs, indexed by (variant, lr) → seed → record."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self._idx: dict[tuple[str, float], dict[int, dict[str, Any]]] = {}

    def add(self, rec: dict[str, Any]) -> None:
        self.runs.append(rec)
        self._idx.setdefault((rec["variant"], rec["lr"]), {})[rec["seed"]] = rec

    def get(self, key: str, lr: float) -> list[dict[str, Any]]:
        by_seed = self._idx[(key, lr)]
        return [by_seed[s] for s in sorted(by_seed)]

    def metric(self, key: str, lr: float, n: int, what: str = "test") -> list[float]:
        return [r["report"][str(n)][what] for r in self.get(key, lr)]

    def counter(self, key: str, lr: float, n: int, name: str) -> list[float]:
        return [r["report"][str(n)]["counters"][name] for r in self.get(key, lr)]

    def track(self, key: str, lr: float, name: str) -> list[float]:
        return [r["track"][name] for r in self.get(key, lr) if r["track"].get(name) is not None]

    def best_lr(self, key: str, lrs: Sequence[float], n_report: Sequence[int]) -> float:
        """Largest mean validation accuracy over seeds and every reported N."""

        def score(lr: float) -> float:
            return float(np.mean([self.metric(key, lr, n, "val") for n in n_report]))

        return max(lrs, key=score)


def pct(v: float) -> str:
    return f"{100.0 * v:.1f}"


def fmt_stat(values: Sequence[float]) -> str:
    s = stats(values)
    return f"{pct(s['mean'])} ({pct(s['min'])}–{pct(s['max'])})"


def fmt_diff(a: Sequence[float], b: Sequence[float]) -> str:
    """Paired difference a − b over seeds in percentage points: mean (min–max)."""
    d = np.asarray(a) - np.asarray(b)
    return f"{100 * d.mean():+.1f} ({100 * d.min():+.1f}…{100 * d.max():+.1f})"


def fmt_lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def stash_bytes(descs: Sequence[LayerDesc], modes: Sequence[str], batch: int) -> int:
    """§5.7 batch storage: per trainable layer and slot, input (i8) and δ (i16) (exponents
    not counted)."""
    return sum(
        batch * (d.in_len + 2 * d.out_len)
        for d, m in zip(descs, modes, strict=True)
        if m != "frozen"
    )


def grad_buffer_bytes(descs: Sequence[LayerDesc], modes: Sequence[str]) -> int:
    """An i32 gradient per trainable parameter (MicroFlow-ODT's buffer)."""
    return sum(
        4 * (d.in_len * d.out_len + d.out_len)
        for d, m in zip(descs, modes, strict=True)
        if m != "frozen"
    )


# ---------------------------------------------------------------------------------------------
# The page


@dataclass
class Summary:
    lr_default: float
    best_lrs: dict[str, float]
    tables: dict[str, Any]
    markdown: str
    section7: str


def summarize(
    cfg: ExpConfig, res: Results, q: Quantized, pre: dict[str, Any], meta: dict[str, Any]
) -> Summary:
    keys = [v.key for v in SWEEP_VARIANTS] + [FLOAT_KEY]
    best = {k: res.best_lr(k, cfg.lrs, cfg.n_report) for k in keys}
    lr0 = best[DEFAULT.key]
    ns = cfg.n_report
    nm = cfg.n_main
    ref = res.metric(DEFAULT.key, lr0, nm)
    labels = {v.key: v.label for v in (*SWEEP_VARIANTS, *fixed_variants(cfg))}
    labels[FLOAT_KEY] = "float32 SGD reference"
    tables: dict[str, Any] = {}

    def acc_cells(key: str, lr: float) -> list[str]:
        return [fmt_stat(res.metric(key, lr, n)) for n in ns]

    def row_json(key: str, lr: float) -> dict[str, Any]:
        out: dict[str, Any] = {"variant": key, "label": labels[key], "lr": lr}
        for n in ns:
            out[f"test_N{n}"] = stats(res.metric(key, lr, n))
            out[f"upright_N{n}"] = stats(res.metric(key, lr, n, "upright"))
        if key != FLOAT_KEY:
            out["counters_N" + str(nm)] = {
                c: stats(res.counter(key, lr, nm, c))
                for c in ("update_clips", "weight_saturations", "forward_saturations")
            }
            for t in (
                "rows_changed_frac",
                "int8_weights_changed_frac",
                "i16_changes_below_half_step_frac",
                "i16_change_mass_below_half_step_frac",
            ):
                vals = res.track(key, lr, t)
                if vals:
                    out[t] = stats(vals)
        out["rel_change_per_layer"] = [
            float(v) for v in np.mean([r["rel_change_per_layer"] for r in res.get(key, lr)], axis=0)
        ]
        return out

    n_head = [f"acc @N={n} %" for n in ns]
    d_head = f"Δ vs default @N={nm} (pp)"
    seeds_txt = f"{len(cfg.seeds)} seeds"

    # --- before / reference
    before_rows = [
        ["float32 model, no adaptation", pct(pre["float_rot_test"]), pct(pre["float_up_test"])],
        ["int8 model, no adaptation", pct(pre["int_rot_test"]), pct(pre["int_up_test"])],
    ]
    lr_f = best[FLOAT_KEY]
    t_before = md_table(["model", "rotated test %", "upright test %"], before_rows)

    # --- 1. storage
    bytes_w = {"i8": 1, "i16": 2}
    n_weights = sum(d.in_len * d.out_len for d in q.descs)
    rows1, json1 = [], []
    for key in ("qas-i8sr", "qas-i16", "qas-i8rtn"):
        v = next(x for x in SWEEP_VARIANTS if x.key == key)
        diff = "—" if key == DEFAULT.key else fmt_diff(res.metric(key, lr0, nm), ref)
        changed = res.track(key, lr0, "int8_weights_changed_frac")
        rows1.append(
            [
                labels[key],
                str(bytes_w[v.storage]),
                str(bytes_w[v.storage] * n_weights),
                *acc_cells(key, lr0),
                diff,
                f"{100 * np.mean(changed):.2f}",
            ]
        )
        json1.append(row_json(key, lr0) | {"bytes_per_weight": bytes_w[v.storage]})
    rows1.append(
        [
            f"{labels[FLOAT_KEY]} (lr {fmt_lr(lr_f)})",
            "4",
            str(4 * n_weights),
            *acc_cells(FLOAT_KEY, lr_f),
            fmt_diff(res.metric(FLOAT_KEY, lr_f, nm), ref),
            "—",
        ]
    )
    json1.append(row_json(FLOAT_KEY, lr_f) | {"bytes_per_weight": 4})
    t1 = md_table(
        [
            "weight storage",
            "B/weight",
            "weight RAM B",
            *n_head,
            d_head,
            "int8 weights changed per update %",
        ],
        rows1,
    )
    sub_below = stats(res.track("qas-i16", lr0, "i16_changes_below_half_step_frac"))
    sub_mass = stats(res.track("qas-i16", lr0, "i16_change_mass_below_half_step_frac"))
    tables["1_storage"] = {"lr": lr0, "rows": json1, "i16_below_half_step": sub_below}
    tables["1_storage"]["i16_mass_below_half_step"] = sub_mass

    # storage and scaling across the sweep
    sweep_keys = [v.key for v in SWEEP_VARIANTS] + [FLOAT_KEY]
    rows_sweep = []
    sweep_json: dict[str, Any] = {}
    for key in sweep_keys:
        cells = []
        for lr in cfg.lrs:
            s = stats(res.metric(key, lr, nm))
            cell = pct(s["mean"])
            cells.append(f"**{cell}**" if lr == best[key] else cell)
        rows_sweep.append([labels[key], *cells])
        sweep_json[key] = {
            fmt_lr(lr): {str(n): stats(res.metric(key, lr, n)) for n in ns} for lr in cfg.lrs
        } | {"best_lr_by_val": best[key]}
    t_sweep = md_table(["variant", *(f"lr {fmt_lr(lr)}" for lr in cfg.lrs)], rows_sweep)
    tables["sweep_test_acc"] = sweep_json

    # counters across the sweep
    rows_cnt = []
    cnt_json: dict[str, Any] = {}
    for key in [v.key for v in SWEEP_VARIANTS]:
        cells = []
        cnt_json[key] = {}
        for lr in cfg.lrs:
            uc = stats(res.counter(key, lr, nm, "update_clips"))["mean"]
            ws = stats(res.counter(key, lr, nm, "weight_saturations"))["mean"]
            cells.append(f"{uc:.0f} / {ws:.0f}")
            cnt_json[key][fmt_lr(lr)] = {"update_clips": uc, "weight_saturations": ws}
        rows_cnt.append([labels[key], *cells])
    t_cnt = md_table(["variant", *(f"lr {fmt_lr(lr)}" for lr in cfg.lrs)], rows_cnt)
    tables["sweep_counters_mean"] = cnt_json

    # --- 2. scaling at each family's best lr
    rows2, json2 = [], []
    for key in ("qas-i8sr", "uniform", "plain", FLOAT_KEY):
        lr = best[key]
        rc = row_json(key, lr)
        rel_txt = " / ".join(f"{100 * v:.1f}" for v in rc["rel_change_per_layer"])
        if key == FLOAT_KEY:
            cnt = "—"
        else:
            uc = stats(res.counter(key, lr, nm, "update_clips"))["mean"]
            ws = stats(res.counter(key, lr, nm, "weight_saturations"))["mean"]
            cnt = f"{uc:.0f} / {ws:.0f}"
        rows2.append([labels[key], fmt_lr(lr), *acc_cells(key, lr), cnt, rel_txt])
        json2.append(rc)
    t2 = md_table(
        [
            "gradient scaling",
            "best lr (val)",
            *n_head,
            f"update clips / weight sat. @N={nm}",
            "‖ΔW‖/‖W‖ per layer %",
        ],
        rows2,
    )
    qas_u = [
        {
            "u_min": float(u.min()),
            "u_median": float(np.median(u)),
            "u_max": float(u.max()),
            "ub_median": float(np.median(ub)),
        }
        for u, ub in zip(real_factors(q.model, False), real_factors(q.model, True), strict=True)
    ]
    tables["2_scaling"] = {"rows": json2, "qas_factors_per_layer": qas_u}
    fac_rows = [
        [f"layer {i + 1}", *(f"{f[k]:.3g}" for k in ("u_min", "u_median", "u_max", "ub_median"))]
        for i, f in enumerate(qas_u)
    ]
    t_fac = md_table(["layer", "u min", "u median", "u max", "ub median"], fac_rows)

    # --- 3–5 at the default lr
    def choice_table(
        name: str, keys: Sequence[str], extra: Callable[[str], list[str]], hx: list[str]
    ) -> str:
        rows, js = [], []
        for key in keys:
            diff = "—" if key == DEFAULT.key else fmt_diff(res.metric(key, lr0, nm), ref)
            rows.append([labels[key], *acc_cells(key, lr0), diff, *extra(key)])
            js.append(row_json(key, lr0))
        tables[name] = {"lr": lr0, "rows": js}
        return md_table(["variant", *n_head, d_head, *hx], rows)

    var_by_key = {v.key: v for v in (*SWEEP_VARIANTS, *fixed_variants(cfg))}

    def modes_extra(key: str) -> list[str]:
        v = var_by_key[key]
        params = sum(
            d.in_len * d.out_len + d.out_len
            for d, m in zip(q.descs, v.modes, strict=True)
            if m != "frozen"
        )
        up = stats(res.metric(key, lr0, nm, "upright"))["mean"]
        return [str(params), str(stash_bytes(q.descs, v.modes, 1)), pct(up)]

    labels[DEFAULT.key] = "all layers (default)"
    t3 = choice_table(
        "3_what_trains",
        ["last1", "last2", DEFAULT.key],
        modes_extra,
        ["trained params", "stash B (batch 1)", f"upright acc @N={nm} %"],
    )

    def topk_extra(key: str) -> list[str]:
        per_layer = np.mean(
            [r["track"]["rows_changed_frac_per_layer"] for r in res.get(key, lr0)], axis=0
        )
        return [
            f"{100 * stats(res.track(key, lr0, 'rows_changed_frac'))['mean']:.1f}",
            " / ".join(f"{100 * v:.0f}" for v in per_layer),
        ]

    labels[DEFAULT.key] = "top-k off (default)"
    t4 = choice_table(
        "4_partial_updates",
        [DEFAULT.key, *(f"topk{k}" for k in cfg.topk)],
        topk_extra,
        ["rows changed per update %", "per layer %"],
    )

    def batch_extra(key: str) -> list[str]:
        v = var_by_key[key]
        upd = stats([r["track"]["updates"] for r in res.get(key, lr0)])["mean"]
        return [
            f"{upd:.0f}",
            str(stash_bytes(q.descs, v.modes, v.batch)),
            str(grad_buffer_bytes(q.descs, v.modes)),
        ]

    labels[DEFAULT.key] = "batch 1 (default)"
    t5 = choice_table(
        "5_batch",
        [DEFAULT.key, *(f"batch{b}" for b in cfg.batches)],
        batch_extra,
        [f"updates @N={cfg.n_max}", "stash B", "i32 gradient buffer B (not used)"],
    )
    labels[DEFAULT.key] = DEFAULT.label

    # --- findings (computed)
    def paired_pp(a: str, b: str, lr: float) -> float:
        """Mean paired difference a − b in percentage points at N = n_main."""
        return 100 * float(np.mean(np.asarray(res.metric(a, lr, nm)) - res.metric(b, lr, nm)))

    findings = {
        "rtn_minus_sr_pp_per_lr": {
            fmt_lr(lr): paired_pp("qas-i8rtn", DEFAULT.key, lr) for lr in cfg.lrs
        },
        "i16_minus_sr_pp_per_lr": {
            fmt_lr(lr): paired_pp("qas-i16", DEFAULT.key, lr) for lr in cfg.lrs
        },
    }
    tables["findings"] = findings

    pre_line = (
        f"Before adaptation the int8 model scores {pct(pre['int_rot_test'])} % on rotated test "
        f"digits ({pct(pre['int_up_test'])} % upright); the float model "
        f"{pct(pre['float_rot_test'])} % ({pct(pre['float_up_test'])} %)."
    )
    # a compact table for docs/integer_training.md §7
    s7_rows = [
        ["no adaptation (int8)", "—", pct(pre["int_rot_test"]), "—"],
        [
            "float32 SGD reference",
            fmt_lr(lr_f),
            fmt_stat(res.metric(FLOAT_KEY, lr_f, nm)),
            fmt_diff(res.metric(FLOAT_KEY, lr_f, nm), ref),
        ],
    ]
    s7_keys: list[tuple[str, str, float]] = [
        ("qas-i8sr", "**default**: i8 + SR, QAS, all layers, batch 1, top-k off", lr0),
        ("qas-i16", "i16 master (2 B/weight)", lr0),
        ("qas-i8rtn", "ablation: i8 round-to-nearest", lr0),
        ("uniform", "ablation: uniform factors (own best lr)", best["uniform"]),
        ("plain", "ablation: plain integer SGD (own best lr)", best["plain"]),
        ("last1", "last layer only", lr0),
        ("last2", "last two layers", lr0),
        *((f"topk{k}", f"top-k, k_min = {k}", lr0) for k in cfg.topk),
        *((f"batch{b}", f"batch {b}", lr0) for b in cfg.batches),
    ]
    for key, lab, lr in s7_keys:
        m = res.metric(key, lr, nm)
        s7_rows.append(
            [lab, fmt_lr(lr), fmt_stat(m), "—" if key == DEFAULT.key else fmt_diff(m, ref)]
        )
    s7 = md_table(
        ["trainer", "lr", f"rotated test acc @N={nm} %", "Δ vs default (pp, paired)"], s7_rows
    )

    # conclusions: numbers from this run, directions by sign
    def mean_of(key: str, lr: float, what: str = "test") -> float:
        return float(np.mean(res.metric(key, lr, nm, what)))

    def signed(v: float) -> str:
        return f"{v:+.1f} pp"

    lr_ok = [lr for lr in cfg.lrs if lr <= lr0 * 3.5]  # up to the default and the next lr
    i16_max = max(abs(findings["i16_minus_sr_pp_per_lr"][fmt_lr(lr)]) for lr in lr_ok)
    lr_lo = cfg.lrs[0]
    qas_vs_float = max(
        abs(100 * (mean_of(DEFAULT.key, lr) - mean_of(FLOAT_KEY, lr))) for lr in cfg.lrs
    )

    def rel(key: str, lr: float) -> str:
        v = np.mean([r["rel_change_per_layer"] for r in res.get(key, lr)], axis=0)
        return " / ".join(f"{100 * x:.0f}" for x in v)

    def rows_pct(key: str) -> str:
        return f"{100 * stats(res.track(key, lr0, 'rows_changed_frac'))['mean']:.1f} %"

    clips0 = stats(res.counter(DEFAULT.key, lr0, nm, "update_clips"))["mean"]
    lr_hi = [lr for lr in cfg.lrs if lr > lr0]
    clips_hi = (
        stats(res.counter(DEFAULT.key, lr_hi[0], nm, "update_clips"))["mean"] if lr_hi else 0.0
    )
    conc = [
        f"1. **Storage: i8 + stochastic rounding.** It matches the i16 master within "
        f"{i16_max:.1f} pp at every lr up to {fmt_lr(lr_ok[-1])} with half the weight RAM "
        f"(1 vs 2 B/weight). Round-to-nearest int8 gives "
        f"{signed(findings['rtn_minus_sr_pp_per_lr'][fmt_lr(lr0)])} at the default lr and "
        f"{signed(findings['rtn_minus_sr_pp_per_lr'][fmt_lr(lr_lo)])} at lr {fmt_lr(lr_lo)}: "
        f"{100 * sub_below['mean']:.0f} % of the weight changes are below half a step.",
        f"2. **Scaling: QAS.** Its best lr is {fmt_lr(lr0)} (float SGD: {fmt_lr(lr_f)}), its "
        f"accuracy stays within {qas_vs_float:.1f} pp of float SGD at every lr of the sweep, and "
        f"its per-layer relative changes ({rel(DEFAULT.key, lr0)} %) compare with float SGD's "
        f"({rel(FLOAT_KEY, lr_f)} %), with no per-layer clip norm. At their own best lr the "
        f"uniform and plain ablations reach {pct(mean_of('uniform', best['uniform']))} % and "
        f"{pct(mean_of('plain', best['plain']))} % (QAS {pct(mean_of(DEFAULT.key, lr0))} %), with "
        f"per-layer changes {rel('uniform', best['uniform'])} % and "
        f"{rel('plain', best['plain'])} %. The update-clip counter is "
        f"{clips0:.0f} after N={nm} at the default lr"
        + (f" and {clips_hi:.0f} at lr {fmt_lr(lr_hi[0])}." if lr_hi else "."),
        f"3. **What trains: all layers.** Last layer only "
        f"{signed(paired_pp('last1', DEFAULT.key, lr0))}, last two "
        f"{signed(paired_pp('last2', DEFAULT.key, lr0))} against all "
        f"layers; the price is forgetting (upright accuracy "
        f"{pct(mean_of(DEFAULT.key, lr0, 'upright'))} % vs {pct(mean_of('last1', lr0, 'upright'))}"
        f" % with the last layer only, {pct(pre['int_up_test'])} % before).",
        "4. **Dynamic partial updates: optional, off by default.** "
        + "; ".join(
            f"k_min = {k}: {rows_pct(f'topk{k}')} of the rows change per update "
            f"(off: {rows_pct(DEFAULT.key)}), "
            f"{signed(paired_pp(f'topk{k}', DEFAULT.key, lr0))}"
            for k in cfg.topk
        )
        + ".",
        "5. **Mini-batches: supported, batch 1 by default.** "
        + "; ".join(
            f"batch {b}: {signed(paired_pp(f'batch{b}', DEFAULT.key, lr0))}"
            f" with {cfg.n_main // b} instead of {cfg.n_main} updates"
            for b in cfg.batches
        )
        + "; the stash grows by B·(IN + 2·OUT) bytes, far below an i32 gradient buffer.",
    ]
    conclusions = "\n".join(conc)
    tables["conclusions"] = conc

    md = PAGE.format(
        quick=" (QUICK SMOKE RUN: not the recorded results)" if cfg.quick else "",
        seeds=", ".join(map(str, cfg.seeds)),
        n_seeds=len(cfg.seeds),
        ns=", ".join(map(str, ns)),
        nm=nm,
        n_test=cfg.n_test,
        n_val=cfg.n_val,
        n_pool=cfg.n_pool,
        n_source=cfg.n_source,
        a0=cfg.angle_deg[0],
        a1=cfg.angle_deg[1],
        lrs=", ".join(fmt_lr(x) for x in cfg.lrs),
        lr0=fmt_lr(lr0),
        lr_f=fmt_lr(lr_f),
        wall=meta["wall_seconds"] / 60.0,
        pre_line=pre_line,
        t_before=t_before,
        t1=t1,
        t_sweep=t_sweep,
        t_cnt=t_cnt,
        t2=t2,
        t_fac=t_fac,
        t3=t3,
        t4=t4,
        t5=t5,
        sub_below=100 * sub_below["mean"],
        sub_mass=100 * sub_mass["mean"],
        seeds_txt=seeds_txt,
        rtn_per_lr=", ".join(
            f"{k}: {v:+.1f}" for k, v in findings["rtn_minus_sr_pp_per_lr"].items()
        ),
        i16_per_lr=", ".join(
            f"{k}: {v:+.1f}" for k, v in findings["i16_minus_sr_pp_per_lr"].items()
        ),
        img=meta.get("img_rel", "img"),
        python=meta["python"],
        s7=s7,
        conclusions=conclusions,
    )
    return Summary(lr0, best, tables, md, s7)


PAGE = """# Trainer design choices, measured{quick}

Generated by `tools/exp_trainer_choices.py` (`make exp-choices`); raw numbers in
`bench/results/trainer_choices.json`. Every number below comes from that run
(wall time {wall:.1f} min, Python {python}).

**Setup.** MNIST, pixels/255 → PCA to 102 dims (fit on {n_source} upright training images) →
MLP 102-64-32-10 (ReLU), the shape of the shipped terrain MLP 102-64-32-5, pretrained in float
(scikit-learn `MLPClassifier`, Adam) on the upright source images and quantized with
`terrain_odt.model.quantize` (per-channel int8 weights, calibration on source data). **Shift:**
target
digits rotated by +{a0:.0f}…+{a1:.0f}° (random angle per image, one direction), PCA from the
source. **Adaptation:** one pass over N target samples drawn from a pool of {n_pool} rotated
training images, with the bit-exact integer trainer (`terrain_odt.model.qnn`, =
`firmware/odt-core`).
**Evaluation:** {n_test} held-out rotated MNIST test images (never trained on); the same images
upright for forgetting. **Seeds:** {n_seeds} ({seeds}); one pretrained model, each seed draws
its own adaptation samples and order and seeds the stochastic-rounding LCG. Cells: mean
(min–max over seeds); Δ columns are paired per seed. **Learning rates:** each family's lr is
chosen from the sweep ({lrs}) on {n_val} rotated validation images (MNIST training images
outside the pool), never on the test set. Default lr: **{lr0}**; float32 SGD reference:
{lr_f}. Comparisons 3–5 use the default lr.

{pre_line}

{t_before}

## Summary (N={nm}; Δ paired per seed against the default)

{s7}

## Conclusions

{conclusions}

## 1. Updates smaller than one quantization step

At the default lr. "int8 weights changed" is the share of forward (int8) weights that moved per
update (higher = fewer updates lost). In the i16 run, **{sub_below:.0f} %** of the non-zero
weight changes were smaller than half an int8 step ({sub_mass:.0f} % of the total change): a
round-to-nearest int8 trainer drops exactly those.

{t1}

Across the lr sweep (rotated test accuracy % at N={nm}, mean over {seeds_txt}; bold = the lr
chosen on validation):

{t_sweep}

Round-to-nearest minus SR per lr (pp): {rtn_per_lr}.
i16 minus SR per lr (pp): {i16_per_lr}.

![lr sweep]({img}/trainer_choices_lr_sweep.png)

## 2. Gradient scaling without per-layer clip norms

QAS gives every output channel its own factor `u = s_y/s_w²` (and `ub = s_y/(s_x s_w)²`), so
one lr means the same real step in every layer, as in float SGD. The ablations keep the
block-floating-point errors and the clamps (`R_MAX`, `VMAX`) but use one factor for all rows.
Each family at the lr it does best with (validation); "‖ΔW‖/‖W‖" is the relative change of the
real weights per layer after N={nm}, to compare with float SGD.

{t2}

Update clips / weight saturations (mean counts after N={nm}) over the sweep. A weight
saturation is a row with a clamped weight in one update; the i16 master counts more of them
because any push of a weight already at the edge clamps it, while stochastic rounding only
clamps when the rounded step crosses the edge.

{t_cnt}

QAS factors of the quantized model (the spread is what a single factor cannot follow):

{t_fac}

## 3. What trains

{t3}

## 4. Dynamic partial updates

Rows changed = rows of a trainable layer whose weights or bias actually changed in an update,
measured by comparing the parameters before and after every update (averaged over all
updates). Without top-k most rows already stay put: samples whose Q15 gradient rounds to zero
and rows whose ReLU is off give δ = 0.

{t4}

## 5. Mini-batches (stored as activations, not gradients)

Per-sample learning rate unchanged (§5.2 sums over the slots), so batch B makes N/B updates.
"stash B" is the §5.7 buffer (per trainable layer and slot: input i8 + δ i16, exponents not
counted), next to the i32 gradient buffer it replaces.

{t5}

![learning curves]({img}/trainer_choices_curves.png)
"""


# ---------------------------------------------------------------------------------------------
# Plots


def make_plots(cfg: ExpConfig, res: Results, best: dict[str, float], img_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dev extra
        log("matplotlib not available: no plots")
        return []
    img_dir.mkdir(parents=True, exist_ok=True)
    meta = {"Software": None}
    nm = cfg.n_main
    written = []

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    labels = {v.key: v.label for v in SWEEP_VARIANTS} | {FLOAT_KEY: "float32 SGD"}
    for key in [v.key for v in SWEEP_VARIANTS] + [FLOAT_KEY]:
        m = [100 * stats(res.metric(key, lr, nm))["mean"] for lr in cfg.lrs]
        lo = [100 * stats(res.metric(key, lr, nm))["min"] for lr in cfg.lrs]
        hi = [100 * stats(res.metric(key, lr, nm))["max"] for lr in cfg.lrs]
        style = "--" if key == FLOAT_KEY else "-"
        (line,) = ax.plot(cfg.lrs, m, style, marker="o", label=labels[key])
        ax.fill_between(cfg.lrs, lo, hi, color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel(f"rotated test accuracy % (N={nm})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = img_dir / "trainer_choices_lr_sweep.png"
    fig.savefig(p, dpi=110, metadata=meta)
    plt.close(fig)
    written.append(str(p))

    order = [v.key for v in SWEEP_VARIANTS] + [FLOAT_KEY, "last1"]
    colors = {key: f"C{i}" for i, key in enumerate(order)}  # as in the sweep plot
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), sharey=True)
    lr0 = best[DEFAULT.key]
    lr_lo = cfg.lrs[1] if len(cfg.lrs) > 1 and cfg.lrs[1] < lr0 else cfg.lrs[0]
    panels = [
        (
            f"each at its lr (default η = {lr0:g})",
            [
                (DEFAULT.key, lr0, "i8 + SR (default)"),
                ("qas-i16", lr0, "i16 master"),
                ("qas-i8rtn", lr0, "i8 round-to-nearest"),
                ("plain", best["plain"], "plain integer SGD"),
                ("last1", lr0, "last layer only"),
                (FLOAT_KEY, best[FLOAT_KEY], "float32 SGD"),
            ],
        ),
        (
            f"sub-step regime: η = {lr_lo:g}",
            [
                (DEFAULT.key, lr_lo, "i8 + SR"),
                ("qas-i16", lr_lo, "i16 master"),
                ("qas-i8rtn", lr_lo, "i8 round-to-nearest"),
                (FLOAT_KEY, lr_lo, "float32 SGD"),
            ],
        ),
    ]
    for ax, (title, curves) in zip(axes, panels, strict=True):
        for key, lr, lab in curves:
            recs = res.get(key, lr)
            xs = sorted(int(k) for k in recs[0]["curve"])
            ys = [100 * float(np.mean([r["curve"][str(x)] for r in recs])) for x in xs]
            style = "--" if key == FLOAT_KEY else "-"
            ax.plot(xs, ys, style, marker=".", color=colors[key], label=f"{lab} (η {lr:g})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("target samples seen (one pass)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"rotated test accuracy % (mean of {len(cfg.seeds)} seeds)")
    fig.tight_layout()
    p = img_dir / "trainer_choices_curves.png"
    fig.savefig(p, dpi=110, metadata=meta)
    plt.close(fig)
    written.append(str(p))
    return written


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="short smoke run (< 2 min)")
    ap.add_argument("--json", type=Path, help="output JSON")
    ap.add_argument("--md", type=Path, help="output results page")
    ap.add_argument("--img-dir", type=Path, help="directory of the PNG plots")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_json = args.json or (QUICK_DIR / "trainer_choices.json" if cfg.quick else DEFAULT_JSON)
    out_md = args.md or (QUICK_DIR / "trainer_choices.md" if cfg.quick else DEFAULT_MD)
    img_dir = args.img_dir or (QUICK_DIR / "img" if cfg.quick else DEFAULT_IMG)
    plots = [img_dir / f"trainer_choices_{k}.png" for k in ("lr_sweep", "curves")]
    git = provenance.record(ROOT, [out_json, out_md, *plots], args.allow_dirty)

    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    with threadpool_limits(limits=1):  # frugal, and the tiny products are faster on one thread
        res, q, pre, times, best_info = run_all(cfg)
    wall = time.perf_counter() - t_start
    import scipy
    import sklearn

    try:
        img_rel = str(img_dir.resolve().relative_to(out_md.parent.resolve()))
    except ValueError:
        img_rel = str(img_dir.resolve())
    meta: dict[str, Any] = {
        "wall_seconds": wall,
        "phase_seconds": times,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "machine": platform.machine(),
        **git,
        "img_rel": img_rel,
        "threads": 1,
    }
    summ = summarize(cfg, res, q, pre, meta)
    plots = make_plots(cfg, res, summ.best_lrs, img_dir)
    payload = {
        "experiment": "trainer design choices (issue 'trainer core')",
        "command": "python tools/exp_trainer_choices.py" + (" --quick" if cfg.quick else ""),
        "config": asdict(cfg),
        "variants": [asdict(v) for v in (*SWEEP_VARIANTS, *fixed_variants(cfg))],
        "meta": meta,
        "pretrain": pre,
        "lr_default": summ.lr_default,
        "best_lr_by_val": summ.best_lrs,
        "lr_selection": best_info,
        "tables": summ.tables,
        "section7_markdown": summ.section7,
        "plots": [str(Path(p).relative_to(ROOT)) if ROOT in Path(p).parents else p for p in plots],
        "runs": res.runs,
    }
    common.write_text(out_json, dump_json(common.rounded(payload, 6)))
    common.write_text(out_md, summ.markdown)
    log(f"wrote {out_json}, {out_md}" + (f", {len(plots)} plots in {img_dir}" if plots else ""))
    print("\n" + summ.section7 + "\n", flush=True)
    log(f"wall time {wall:.0f} s ({wall / 60:.1f} min); default lr {fmt_lr(summ.lr_default)}")
    return 0


def run_all(
    cfg: ExpConfig,
) -> tuple[Results, Quantized, dict[str, Any], dict[str, float], dict[str, Any]]:
    times: dict[str, float] = {}
    t = time.perf_counter()
    log(
        f"{'QUICK ' if cfg.quick else ''}config: seeds {cfg.seeds}, N {cfg.n_report}, lrs {cfg.lrs}"
    )
    data, _pca = prepare_data(cfg)
    times["data"] = time.perf_counter() - t
    log(f"data ready in {times['data']:.1f} s ({data.info['pca_explained_variance']:.3f} var.)")

    t = time.perf_counter()
    params = pretrain(cfg, data)
    times["pretrain"] = time.perf_counter() - t
    q = build_quantized(cfg, params, data)
    for name in ("pool", "val", "test", "up"):
        setattr(data, f"q_{name}", quantize_input(getattr(data, f"z_{name}"), q.input_q))
    fnet = FloatMLP(params)
    pre: dict[str, Any] = {
        "float_up_test": fnet.accuracy(data.z_up, data.y_test),
        "float_rot_test": fnet.accuracy(data.z_test, data.y_test),
        "int_up_test": int_accuracy(q.model, data.q_up, data.y_test),
        "int_rot_test": int_accuracy(q.model, data.q_test, data.y_test),
        "int_rot_val": int_accuracy(q.model, data.q_val, data.y_val),
        "input_qparams": asdict(q.input_q),
        "input_saturated_frac_test": float(np.mean(np.abs(data.q_test) >= 127)),
        "data": data.info,
        "seconds": times["pretrain"],
    }
    log(
        f"pretrained in {times['pretrain']:.1f} s: float {pct(pre['float_up_test'])} % upright / "
        f"{pct(pre['float_rot_test'])} % rotated; int8 {pct(pre['int_up_test'])} / "
        f"{pct(pre['int_rot_test'])} %"
    )

    bases: dict[tuple[Storage, Scaling], QModel] = {("i8", "qas"): q.model}
    bases[("i16", "qas")] = QModel.from_blob(q.model.to_blob(), storage="i16")
    bases[("i8", "uniform")] = with_uniform_factors(q.model, "uniform")
    bases[("i8", "plain")] = with_uniform_factors(q.model, "plain")

    res = Results()
    fixed = fixed_variants(cfg)
    n_runs = (len(SWEEP_VARIANTS) + 1) * len(cfg.lrs) * len(cfg.seeds) + len(fixed) * len(cfg.seeds)
    done = 0
    t_runs = time.perf_counter()

    def progress(rec: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        accs = " ".join(f"N{n}={pct(rec['report'][str(n)]['test'])}" for n in cfg.n_report)
        el = time.perf_counter() - t_runs
        eta = el / done * (n_runs - done)
        log(
            f"[{done:3d}/{n_runs}] {rec['variant']:<10} lr {fmt_lr(rec['lr']):<5} "
            f"seed {rec['seed']}: {accs} ({rec['seconds']:.1f} s, eta {eta:.0f} s)"
        )

    # phase A: learning-rate sweeps
    for var in SWEEP_VARIANTS:
        base = bases[(var.storage, var.scaling)]
        for lr in cfg.lrs:
            for seed in cfg.seeds:
                rec = run_int(cfg, base, var, lr, seed, data, q.s_w)
                res.add(rec)
                progress(rec)
    for lr in cfg.lrs:
        for seed in cfg.seeds:
            rec = run_float(cfg, params, lr, seed, data)
            res.add(rec)
            progress(rec)
    lr0 = res.best_lr(DEFAULT.key, cfg.lrs, cfg.n_report)
    val_scores = {
        key: {
            fmt_lr(lr): float(np.mean([res.metric(key, lr, n, "val") for n in cfg.n_report]))
            for lr in cfg.lrs
        }
        for key in [v.key for v in SWEEP_VARIANTS] + [FLOAT_KEY]
    }
    log(f"default lr (best validation accuracy of {DEFAULT.key}): {fmt_lr(lr0)}")
    # phase B: the other choices at the default lr
    for var in fixed:
        base = bases[(var.storage, var.scaling)]
        for seed in cfg.seeds:
            rec = run_int(cfg, base, var, lr0, seed, data, q.s_w)
            res.add(rec)
            progress(rec)
    times["runs"] = time.perf_counter() - t_runs
    best_info = {
        "rule": "argmax over the sweep of the mean validation accuracy (seeds × reported N)",
        "val_scores": val_scores,
    }
    return res, q, pre, times, best_info


if __name__ == "__main__":
    raise SystemExit(main())
