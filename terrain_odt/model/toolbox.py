"""Model toolbox: pretrain a float MLP, quantize it, export the firmware blob and its sidecar.

    fm = pretrain_mlp(X_train, y_train, hidden=(64, 32), seed=0)
    qm = quantize_model(fm, X_train)                # int8, activation ranges from data
    export(qm, "terrain.odtm", float_model=fm)      # + terrain.json (the sidecar)
    evaluate(fm, qm, X_test, y_test)                # float vs int8 accuracy, held-out split

or `convert(X_train, y_train, X_test=..., y_test=..., out="terrain.odtm")` for all of it.

**Feature standardisation is a host-side input step, not folded into the first layer.** The
blob's input is `q = clamp(round_half_up(((x − mean) / scale) / s_in) + z_in, −128, 127)` per
feature, with `mean`, `scale` (from a `StandardScaler`-style fit on the training data) and
`s_in`, `z_in` in the sidecar (`quantize_features` computes it). Folding would give a plain float
first layer, but then one int8 input scale would have to cover raw features whose ranges differ by
orders of magnitude (variances next to frequencies), and the small ones would quantize to a few
levels. Standardised features share one scale well.

Calibration: the input and every Dense/Conv output get an asymmetric int8 range observed on
`X_calib` (min/max, or the `percentile`/`100 − percentile` points to ignore outliers; ranges
always contain 0). The logits always use the full min/max: clipping them would flatten the
softmax gradient exactly on the confidently wrong samples fine-tuning needs. Weights are
symmetric per output channel (`terrain_odt.model.quantize`).

The sidecar (JSON) carries what the host and the firmware build need beyond the blob: input
quantization and standardisation, class names, the blob's `model_id`, length and CRC, the
`odt_model!` declaration of the architecture and a RAM estimate.

**Source windows.** With `source=(X, y)` (the pretraining data), `export` also writes
`<blob stem>.windows.npz`: a class-balanced sample of those windows as int8 model inputs, some
for replay on the device next to the robot's own windows, distinct ones for validation
(`terrain_odt.pipeline.finetune`), named in the sidecar (`source_windows`, with the file's CRC-32).
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terrain_odt.model import quantize as q
from terrain_odt.model.blob import (
    FIRMWARE_CAPACITY,
    Blob,
    BlobError,
    Kind,
    LayerDesc,
    decode_blob,
)
from terrain_odt.model.qnn import QModel, Storage
from terrain_odt.model.sidecar import SIDECAR_FORMAT, quantize_features, quantize_with_sidecar
from terrain_odt.pipeline.finetune import save_source_windows

SIDECAR_VERSION = 1
Progress = Callable[[str], None]
#: Source windows written per class by `export(source=...)`: replayed / validation only.
SOURCE_REPLAY_PER_CLASS = 128
SOURCE_VAL_PER_CLASS = 32


def _noop(_msg: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Float model


@dataclass
class FloatModel:
    """A float model in the blob's layer list and weight layout, plus its input standardisation.

    `params` has `(w, b)` per Dense/Conv layer (`[OUT][IN]`, `[COUT][K][CIN]`,
    `[COUT][KH][KW][CIN]`); output `i` is the class with label `labels[i]`, named
    `class_names[i]`. `mean`/`scale` are `None` when inputs are used as they are.
    """

    descs: list[LayerDesc]
    params: list[tuple[np.ndarray, np.ndarray]]
    labels: list[Any]
    class_names: list[str]
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_len(self) -> int:
        return self.descs[0].in_len

    @property
    def n_classes(self) -> int:
        return self.descs[-1].out_len

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_len:
            raise ValueError(f"expected features of shape (N, {self.input_len}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or infinity")
        return x

    def standardize(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        if self.mean is None or self.scale is None:
            return x
        return (x - self.mean) / self.scale

    def logits(self, x: np.ndarray) -> np.ndarray:
        return q.float_forward(self.descs, self.params, self.standardize(x))[-1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Output index (not label) of each sample."""
        return np.argmax(self.logits(x), axis=1)

    def label_index(self, y: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Output index of each label; `ValueError` for a label the model does not know."""
        lookup = {_jsonable(v): i for i, v in enumerate(self.labels)}
        out = np.empty(len(y), dtype=np.int64)
        for k, v in enumerate(np.asarray(y).tolist()):
            if v not in lookup:
                raise ValueError(f"label {v!r} is not one of the model's classes {self.labels}")
            out[k] = lookup[v]
        return out


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _mlp_descs(n_in: int, hidden: Sequence[int], n_out: int) -> list[LayerDesc]:
    dims = [n_in, *hidden, n_out]
    return [
        LayerDesc.dense(dims[i], dims[i + 1], relu=i < len(dims) - 2) for i in range(len(dims) - 1)
    ]


def pretrain_mlp(
    x: np.ndarray,
    y: Sequence[Any] | np.ndarray,
    hidden: Sequence[int] = (64, 32),
    *,
    seed: int = 0,
    epochs: int = 200,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    alpha: float = 1e-4,
    standardize: bool = True,
    class_names: Sequence[str] | None = None,
    tol: float = 1e-4,
    patience: int = 10,
    progress: Progress | None = None,
) -> FloatModel:
    """Train a ReLU MLP (scikit-learn `MLPClassifier`, Adam, softmax cross-entropy) in float.

    Runs up to `epochs` passes and stops early when the training loss has not improved by `tol`
    for `patience` passes (scikit-learn's rule). Outputs are the sorted distinct labels of `y`;
    `class_names`, if given, names them in that order. `progress` gets one line per epoch.
    """
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dev extra
        raise ImportError(
            "pretraining needs scikit-learn: pip install 'terrain_odt[dev]' or scikit-learn"
        ) from exc
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need X (N, F) and y (N,), got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinity")
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive, got {tuple(hidden)}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes.tolist()}")
    if class_names is not None and len(class_names) != len(classes):
        raise ValueError(
            f"{len(class_names)} class names for {len(classes)} classes {classes.tolist()}"
        )
    mean = scale = None
    z = x
    if standardize:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # constant features: leave as centred
        z = (x - mean) / scale
    progress = progress or _noop
    mlp = MLPClassifier(
        hidden_layer_sizes=tuple(int(h) for h in hidden),
        activation="relu",
        solver="adam",
        alpha=alpha,
        batch_size=min(batch_size, len(x)),
        learning_rate_init=learning_rate,
        random_state=seed,
        shuffle=True,
    )
    best, stale = math.inf, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of single-epoch partial_fit
        for epoch in range(epochs):
            mlp.partial_fit(z, y, classes=classes)
            loss = float(mlp.loss_)
            progress(f"pretrain epoch {epoch + 1}/{epochs} loss {loss:.4f}")
            if loss > best - tol:
                stale += 1
                if stale >= patience:
                    break
            else:
                stale = 0
            best = min(best, loss)
    params = [
        (np.asarray(w).T.copy(), np.asarray(b).copy())
        for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)
    ]
    if len(classes) == 2:  # one logistic output: logits (−z/2, z/2) have the same softmax
        w, b = params[-1]
        params[-1] = (np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2]))
    labels = [_jsonable(c) for c in classes.tolist()]
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in labels]
    return FloatModel(
        descs=_mlp_descs(x.shape[1], hidden, len(classes)),
        params=params,
        labels=labels,
        class_names=names,
        mean=mean,
        scale=scale,
        info={
            "trainer": "sklearn.neural_network.MLPClassifier (adam, relu)",
            "hidden": [int(h) for h in hidden],
            "seed": seed,
            "epochs_run": len(mlp.loss_curve_),
            "final_loss": float(mlp.loss_curve_[-1]),
            "batch_size": min(batch_size, len(x)),
            "learning_rate": learning_rate,
            "alpha": alpha,
            "n_train": len(x),
        },
    )


# ---------------------------------------------------------------------------------------------
# Quantization


def _range(a: np.ndarray, percentile: float | None) -> tuple[float, float]:
    if percentile is None or percentile >= 100.0:
        lo, hi = float(a.min()), float(a.max())
    else:
        lo, hi = (float(v) for v in np.percentile(a, [100.0 - percentile, percentile]))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-6:  # a dead layer: any small range will do
        hi = lo + 1e-3
    return lo, hi


def quantize_model(
    float_model: FloatModel,
    x_calib: np.ndarray,
    *,
    percentile: float | None = None,
    model_id: int | None = None,
    storage: Storage = "i8",
) -> QModel:
    """The int8 model of `float_model`, activation ranges calibrated on `x_calib` (raw features).

    `percentile` (e.g. 99.99) clips the input and hidden ranges to that percentile (and
    `100 − percentile` below); the logits keep min/max. `model_id` defaults to the CRC-32 of the
    blob written with id 0, i.e. its stored CRC (a fingerprint of architecture, weights and
    quantization).
    """
    if percentile is not None and not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    z = float_model.standardize(x_calib)
    if len(z) == 0:
        raise ValueError("no calibration samples")
    descs, params = float_model.descs, float_model.params
    acts = q.float_forward(descs, params, z)
    in_q = q.activation_qparams(*_range(acts[0], percentile))
    pidx = [i for i, d in enumerate(descs) if d.has_params]
    out_q = [
        q.activation_qparams(*_range(acts[i + 1], None if i == pidx[-1] else percentile))
        for i in pidx
    ]
    qm = q.quantize_model(descs, params, in_q, out_q, model_id=0, storage=storage)
    # the blob's own CRC (a CRC over data *and* its CRC would be the same constant for all)
    qm.meta.model_id = (
        zlib.crc32(qm.to_blob()[:-4]) if model_id is None else int(model_id) & 0xFFFFFFFF
    )
    return qm


def quantize_inputs(float_model: FloatModel, qmodel: QModel, x: np.ndarray) -> np.ndarray:
    """`quantize_features` with the model's standardisation and input quantization."""
    blob = qmodel.to_blob_obj()
    return quantize_features(
        float_model._check_x(x),
        blob.input_scale,
        blob.input_zp,
        float_model.mean,
        float_model.scale,
    )


def evaluate(
    float_model: FloatModel, qmodel: QModel, x: np.ndarray, y: Sequence[Any] | np.ndarray
) -> dict[str, Any]:
    """Float and int8 accuracy (and their agreement) on `(x, y)`, e.g. a held-out split."""
    idx = float_model.label_index(y)
    if len(idx) == 0:
        raise ValueError("no samples to evaluate")
    pf = float_model.predict(x)
    pq = np.argmax(qmodel.predict_batch(quantize_inputs(float_model, qmodel, x)), axis=1)
    return {
        "n": len(idx),
        "float_acc": float(np.mean(pf == idx)),
        "int8_acc": float(np.mean(pq == idx)),
        "delta_pp": float(100.0 * (np.mean(pq == idx) - np.mean(pf == idx))),
        "agreement": float(np.mean(pq == pf)),
    }


def group_split(
    groups: Sequence[Any] | np.ndarray,
    test_frac: float = 0.25,
    seed: int = 0,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test index arrays holding out whole groups (e.g. recording runs), never windows
    of one run on both sides. At least one group goes each way.

    With `labels` (one per sample; a group's label is that of its first sample) the split is
    stratified: per label, `round(test_frac · groups)` of its groups (at least 1 if it has 2,
    never all) are held out, so every class stays on the training side.
    """
    g = np.asarray(groups)
    uniq = np.unique(g)
    if len(uniq) < 2:
        raise ValueError("a group split needs at least two groups")
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_frac}")
    rng = np.random.default_rng(seed)
    if labels is None:
        strata = [uniq]
    else:
        lab = np.asarray(labels)
        if lab.shape != g.shape:
            raise ValueError(f"labels {lab.shape} do not match groups {g.shape}")
        first = {k: lab[i] for i, k in reversed(list(enumerate(g.tolist())))}
        glab = np.array([first[k] for k in uniq.tolist()])
        strata = [uniq[glab == v] for v in np.unique(glab)]
    test_groups: list[Any] = []
    for members in strata:
        n_test = min(max(1, round(test_frac * len(members))), len(members) - 1)
        test_groups += members[rng.permutation(len(members))[:n_test]].tolist()
    if not test_groups:
        raise ValueError("no class has two groups: nothing can be held out")
    mask = np.isin(g, test_groups)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---------------------------------------------------------------------------------------------
# Architecture text, memory estimate


_RUST_TYPES = {
    Kind.DENSE: ("Dense", "fc", 2),
    Kind.CONV1D: ("Conv1d", "conv", 7),
    Kind.CONV2D: ("Conv2d", "conv", 10),
    Kind.MAXPOOL2D: ("MaxPool2d", "pool", 5),
    Kind.AVGPOOL2D: ("AvgPool2d", "pool", 5),
    Kind.RELU: ("Relu", "relu", 1),
    Kind.FLATTEN: ("Flatten", "flat", 1),
}


def rust_layers(descs: Sequence[LayerDesc]) -> list[str]:
    """`name: Type<dims…>` lines of an `odt_model!` layer list (names fc1, conv1, pool1, …)."""
    counts: dict[str, int] = {}
    out = []
    for d in descs:
        ty, prefix, n = _RUST_TYPES[Kind(d.kind)]
        counts[prefix] = counts.get(prefix, 0) + 1
        args = [str(v) for v in d.dims[:n]]
        if d.has_params:
            args.append("true" if d.relu else "false")
        out.append(f"{prefix}{counts[prefix]}: {ty}<{', '.join(args)}>")
    return out


def rust_snippet(
    descs: Sequence[LayerDesc],
    name: str = "TerrainModel",
    batch: int = 1,
    storage: Storage = "i8",
    budget: int | None = None,
) -> str:
    """The `odt_model!` declaration of an architecture (paste into the firmware)."""
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a Rust identifier")
    est = estimate_memory(descs, batch, storage)["total"]
    budget = budget or (math.ceil(est * 1.25 / 1024) * 1024)
    types = sorted({_RUST_TYPES[Kind(d.kind)][0] for d in descs})
    imports = types[0] if len(types) == 1 else "{" + ", ".join(types) + "}"
    wt = "i8" if storage == "i8" else "odt_core::Hp"
    layers = "".join(f"            {line},\n" for line in rust_layers(descs))
    return (
        f"use odt_core::layers::{imports};\n"
        "use odt_core::odt_model;\n\n"
        "odt_model! {\n"
        f"    pub struct {name} {{\n"
        f"        input: {descs[0].in_len},\n"
        f"        batch: {batch},\n"
        f"        weights: {wt},\n"
        f"        budget: {budget // 1024} * 1024, // RAM estimate {est} B\n"
        "        layers: {\n"
        f"{layers}"
        "        }\n"
        "    }\n"
        "}\n"
    )


def _round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def estimate_memory(
    descs: Sequence[LayerDesc], batch: int = 1, storage: Storage = "i8"
) -> dict[str, Any]:
    """RAM of the model in odt-core, per buffer (`make mem`'s table), from the struct layouts of
    `odt-core` as of this writing on a 64-bit host; the firmware's `RAM_BYTES` is authoritative
    (32-bit targets differ by a few bytes of `usize` in the trainer state)."""
    wb = 1 if storage == "i8" else 2
    entries: list[tuple[str, int]] = []
    total = 0
    names = [line.split(":")[0] for line in rust_layers(descs)]
    for name, d in zip(names, descs, strict=True):
        if not d.has_params:
            continue
        out, fan = d.out_channels, d.fan
        weights = out * fan * wb
        qparams = _round_up(out * 15 + 2, 4)  # m, s, um, ue, ubm, ube, bias; z_x, z_y
        dd = d.dims
        if d.kind == Kind.DENSE:
            xs, npos, vacc = dd[0], 1, 0
        elif d.kind == Kind.CONV1D:
            xs, npos, vacc = dd[0] * dd[1], dd[6], dd[3] * dd[1]
        else:
            xs, npos, vacc = dd[0] * dd[1] * dd[2], dd[8] * dd[9], dd[4] * dd[5] * dd[2]
        # mode, xs, ds (i16), es (i32), nz, rs (i32 per position), vacc (i64), imp (u32), sel
        stash = 1 + batch * (xs + 2 * npos * out + 4 + 1 + 4 * npos) + 8 * vacc + 5 * out
        size = _round_up(weights + qparams + stash, 8)
        entries += [
            (f"{name}.weights", weights),
            (f"{name}.bias_qparams", qparams),
            (f"{name}.batch_stash", size - weights - qparams),
        ]
        total += size
    lens = [descs[0].in_len] + [d.out_len for d in descs]
    acts, err = sum(lens), 8 * max(lens)
    entries += [("activations", acts), ("error_buffers", err), ("trainer_state", 256)]
    listed = total + acts + err + 256
    total = _round_up(total + _round_up(acts + err, 4) + 256, 8)
    entries.append(("alignment", total - listed))
    params = sum(d.out_channels * d.fan + d.out_channels for d in descs if d.has_params)
    blob_len = 40 + 24 * len(descs) + sum(d.section_len() for d in descs) + 4
    return {"entries": dict(entries), "total": total, "params": params, "blob_len": blob_len}


# ---------------------------------------------------------------------------------------------
# Export


def sidecar_dict(
    qmodel: QModel,
    blob: bytes | None = None,
    *,
    float_model: FloatModel | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "TerrainModel",
    batch: int = 1,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON sidecar of a model (see the module doc)."""
    data = qmodel.to_blob() if blob is None else blob
    b = decode_blob(data)
    descs = list(b.layers)
    if class_names is None and float_model is not None:
        class_names = float_model.class_names
    names = list(class_names) if class_names is not None else [str(i) for i in range(b.output_len)]
    if len(names) != b.output_len:
        raise ValueError(f"{len(names)} class names for {b.output_len} outputs")
    std = None
    if float_model is not None and float_model.mean is not None and float_model.scale is not None:
        std = {"mean": float_model.mean.tolist(), "scale": float_model.scale.tolist()}
    out: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "model_id": b.model_id,
        "model_id_hex": f"0x{b.model_id:08x}",
        "blob_len": len(data),
        "blob_crc32": f"0x{zlib.crc32(data):08x}",
        "input_len": b.input_len,
        "output_len": b.output_len,
        "input": {
            "scale": b.input_scale,
            "zero_point": b.input_zp,
            "standardization": std,
            "formula": (
                "q = clamp(floor(((x - mean) / scale) / input.scale + 0.5) + input.zero_point, "
                "-128, 127)"
                if std
                else "q = clamp(floor(x / input.scale + 0.5) + input.zero_point, -128, 127)"
            ),
        },
        "output": {"scale": b.output_scale, "zero_point": b.output_zp, "softmax_a": b.softmax_a},
        "classes": {
            "names": names,
            "labels": list(float_model.labels) if float_model is not None else None,
        },
        "layers": layer_table(b),
        "rust": {
            "layers": rust_layers(descs),
            "odt_model": rust_snippet(descs, name, batch, qmodel.storage),
        },
        "memory": estimate_memory(descs, batch, qmodel.storage),
    }
    if float_model is not None:
        out["pretrain"] = float_model.info
    if extra:
        out.update(extra)
    return out


def layer_table(b: Blob) -> list[dict[str, Any]]:
    """Per layer: kind, dims, ReLU and (Dense/Conv) the quantization in readable units."""
    rows = []
    for i, (d, sec) in enumerate(zip(b.layers, b.params, strict=True)):
        n = _RUST_TYPES[Kind(d.kind)][2]
        row: dict[str, Any] = {
            "index": i,
            "kind": _RUST_TYPES[Kind(d.kind)][0],
            "dims": list(d.dims[:n]),
            "relu": d.relu,
        }
        if sec is not None:
            mult = [q.multiplier_to_real(int(m), int(s)) for m, s in zip(sec.m, sec.s, strict=True)]
            row.update(
                z_x=int(sec.z_x),
                z_y=int(sec.z_y),
                multiplier_range=[min(mult), max(mult)],
                weight_range=[int(sec.weights.min()), int(sec.weights.max())],
                bias_range=[int(sec.bias.min()), int(sec.bias.max())],
                params=int(sec.weights.size + sec.bias.size),
            )
        rows.append(row)
    return rows


def export(
    qmodel: QModel,
    path: str | Path,
    *,
    float_model: FloatModel | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "TerrainModel",
    batch: int = 1,
    extra: dict[str, Any] | None = None,
    source: tuple[np.ndarray, Sequence[Any] | np.ndarray] | None = None,
    source_val: tuple[np.ndarray, Sequence[Any] | np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write the blob to `path` and the sidecar next to it (`path` with suffix `.json`); with
    `source` (raw features and labels of the pretraining data, needs `float_model`) also the
    source windows (see the module doc).

    Returns both paths. The blob is re-read and checked before anything is written.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: the blob path must not end in .json (that is the sidecar)")
    data = qmodel.to_blob()
    side = sidecar_dict(
        qmodel,
        data,
        float_model=float_model,
        class_names=class_names,
        name=name,
        batch=batch,
        extra=extra,
    )
    side["blob"] = path.name
    sidecar = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        if float_model is None:
            raise ValueError("source windows need the float model (its standardisation)")
        side["source_windows"] = write_source_windows(
            path.with_suffix(".windows.npz"),
            float_model,
            qmodel,
            *source,
            val=source_val,
            seed=seed,
        )
    path.write_bytes(data)
    sidecar.write_text(json.dumps(side, indent=2) + "\n")
    return path, sidecar


def write_source_windows(
    path: Path,
    float_model: FloatModel,
    qmodel: QModel,
    x: np.ndarray,
    y: Sequence[Any] | np.ndarray,
    *,
    val: tuple[np.ndarray, Sequence[Any] | np.ndarray] | None = None,
    replay_per_class: int = SOURCE_REPLAY_PER_CLASS,
    val_per_class: int = SOURCE_VAL_PER_CLASS,
    seed: int = 0,
) -> dict[str, Any]:
    """A class-balanced sample of `(x, y)` as int8 model inputs → `path`; the sidecar entry.
    Validation windows come from `val` (e.g. runs held out of pretraining) when given, else
    from `(x, y)` (disjoint from the replay windows)."""
    idx = float_model.label_index(y)
    if val is None:
        vx, vidx = np.asarray(x), idx
    else:
        vx, vidx = np.asarray(val[0]), float_model.label_index(val[1])
    rng = np.random.default_rng([seed, 11])
    rep: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for k in range(float_model.n_classes):
        cand = rng.permutation(np.flatnonzero(idx == k))
        rep.append(cand[:replay_per_class])
        if val is None:
            vals.append(cand[replay_per_class : replay_per_class + val_per_class])
        else:
            vals.append(rng.permutation(np.flatnonzero(vidx == k))[:val_per_class])
    ri, vi = np.sort(np.concatenate(rep)), np.sort(np.concatenate(vals))
    rq = quantize_inputs(float_model, qmodel, np.asarray(x)[ri])
    vq = quantize_inputs(float_model, qmodel, vx[vi])
    crc = save_source_windows(path, (rq, idx[ri]), (vq, vidx[vi]))
    return {
        "file": path.name,
        "crc32": f"0x{crc:08x}",
        "replay": len(ri),
        "validation": len(vi),
        "drawn_from": (
            "pretraining windows, class-balanced (replay and validation disjoint)"
            if val is None
            else "replay: pretraining windows; validation: windows of runs held out of "
            "pretraining; both class-balanced"
        ),
    }


def load_sidecar(path: str | Path) -> dict[str, Any]:
    """Read a sidecar and check its format tag."""
    side = json.loads(Path(path).read_text())
    if side.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a terrain_odt model sidecar")
    return side


# ---------------------------------------------------------------------------------------------
# One call


@dataclass
class ConvertResult:
    float_model: FloatModel
    qmodel: QModel
    report: dict[str, Any]
    blob_path: Path | None = None
    sidecar_path: Path | None = None


def convert(
    x_train: np.ndarray,
    y_train: Sequence[Any] | np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    y_test: Sequence[Any] | np.ndarray | None = None,
    out: str | Path | None = None,
    hidden: Sequence[int] = (64, 32),
    seed: int = 0,
    percentile: float | None = None,
    calib_max: int = 5000,
    class_names: Sequence[str] | None = None,
    model_id: int | None = None,
    storage: Storage = "i8",
    name: str = "TerrainModel",
    batch: int = 1,
    progress: Progress | None = None,
    source_windows: bool = True,
    features: dict[str, Any] | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    source_val_frac: float = 0.0,
    **pretrain_kwargs: Any,
) -> ConvertResult:
    """Pretrain, quantize (calibrated on up to `calib_max` training samples), evaluate on the
    held-out split the caller gives (`x_test`, `y_test`; the training split otherwise, marked so
    in the report) and, with `out`, export blob and sidecar (with `features`, the
    `FeatureConfig.to_dict()` the windows were made with: the bridge then refuses windows made
    otherwise; with `source_windows`, the source-window file for fine-tuning; with `groups`
    and `source_val_frac`, that share of the groups (runs, per class) is held out of
    pretraining and gives the source validation windows, so the accept/rollback check on the
    robot measures generalisation to runs the model never saw)."""
    progress = progress or _noop
    source_val = None
    if source_val_frac > 0:
        if groups is None:
            raise ValueError("source_val_frac needs groups (e.g. the run of each window)")
        tr, va = group_split(groups, source_val_frac, seed, labels=y_train)
        xa, ya = np.asarray(x_train), np.asarray(y_train)
        source_val = (xa[va], ya[va])
        x_train, y_train = xa[tr], ya[tr]
        progress(f"source validation: {len(va)} windows of held-out groups, not pretrained on")
    fm = pretrain_mlp(
        x_train,
        y_train,
        hidden,
        seed=seed,
        class_names=class_names,
        progress=progress,
        **pretrain_kwargs,
    )
    x_train = np.asarray(x_train, dtype=np.float64)
    calib = x_train
    if len(calib) > calib_max:
        calib = calib[np.sort(np.random.default_rng(seed).choice(len(calib), calib_max, False))]
    progress(f"quantize: calibrating on {len(calib)} samples")
    qm = quantize_model(fm, calib, percentile=percentile, model_id=model_id, storage=storage)
    report: dict[str, Any] = {"train": evaluate(fm, qm, x_train, y_train)}
    if x_test is not None and y_test is not None:
        report["test"] = evaluate(fm, qm, x_test, y_test)
    report["held_out"] = "test" in report
    report["calibration"] = {"samples": len(calib), "percentile": percentile}
    ev = report["test"] if report["held_out"] else report["train"]
    which = "held-out" if report["held_out"] else "training (no held-out split given)"
    progress(
        f"accuracy on {which} data: float {100 * ev['float_acc']:.2f} %, "
        f"int8 {100 * ev['int8_acc']:.2f} % ({ev['delta_pp']:+.2f} pp), n = {ev['n']}"
    )
    res = ConvertResult(fm, qm, report)
    if out is not None:
        res.blob_path, res.sidecar_path = export(
            qm,
            out,
            float_model=fm,
            name=name,
            batch=batch,
            extra={"metrics": report, **({"features": features} if features else {})},
            source=(x_train, y_train) if source_windows else None,
            source_val=source_val,
            seed=seed,
        )
        progress(f"wrote {res.blob_path} and {res.sidecar_path}")
    return res


# ---------------------------------------------------------------------------------------------
# Inspection


def firmware_verdict(data: bytes) -> str:
    """Whether the co-processor firmware (odt-app with `FirmwareMlp`, its model shape from the
    blob) loads this blob: `"runs it"` or `"refuses it: <the loader's reason>"`."""
    c = FIRMWARE_CAPACITY
    try:
        decode_blob(data, capacity=c)
    except BlobError as exc:
        return f"refuses it: {exc}"
    return (
        f"runs it (capacity {c.max_inputs} inputs, {c.max_width}-unit hidden layers, "
        f"{c.max_classes} classes, {c.max_dense} Dense layers, {c.max_weights} weights)"
    )


def describe_blob(data: bytes, batch: int = 1, storage: Storage = "i8") -> str:
    """Human-readable summary of a blob: header, layers, quantization, memory, `odt_model!`.

    Raises `BlobError` (from `decode_blob`) for a malformed blob.
    """
    b = decode_blob(data)
    descs = list(b.layers)
    mem = estimate_memory(descs, batch, storage)
    lines = [
        f"model_id 0x{b.model_id:08x}, {len(descs)} layers, input {b.input_len} int8, "
        f"{b.output_len} classes, {len(data)} bytes (CRC ok)",
        f"co-processor firmware: {firmware_verdict(data)}",
        f"input  scale {b.input_scale:.6g} zero point {b.input_zp}",
        f"logits scale {b.output_scale:.6g} zero point {b.output_zp} softmax_a {b.softmax_a}",
        "",
        f"{'#':>2}  {'layer':<34} {'z_x':>4} {'z_y':>4}  {'multiplier':<21} {'weights':<11} params",
    ]
    for row, line in zip(layer_table(b), rust_layers(descs), strict=True):
        if "z_x" in row:
            lo, hi = row["multiplier_range"]
            wlo, whi = row["weight_range"]
            lines.append(
                f"{row['index']:>2}  {line:<34} {row['z_x']:>4} {row['z_y']:>4}  "
                f"{lo:<9.3g}…{hi:<11.3g} [{wlo:>4},{whi:>4}] {row['params']}"
            )
        else:
            lines.append(f"{row['index']:>2}  {line}")
    lines += [
        "",
        f"parameters {mem['params']}; RAM estimate {mem['total']} B "
        f"(batch {batch}, {storage} weights):",
    ]
    lines += [f"  {k:<24} {v:>8}" for k, v in mem["entries"].items()]
    lines += ["", rust_snippet(descs, batch=batch, storage=storage)]
    return "\n".join(lines)


__all__ = [
    "ConvertResult",
    "FloatModel",
    "convert",
    "describe_blob",
    "estimate_memory",
    "evaluate",
    "export",
    "firmware_verdict",
    "group_split",
    "load_sidecar",
    "pretrain_mlp",
    "quantize_features",
    "quantize_inputs",
    "quantize_model",
    "quantize_with_sidecar",
    "rust_layers",
    "rust_snippet",
    "sidecar_dict",
]
