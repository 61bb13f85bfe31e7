"""Unit tests of the numpy reference (`terrain_odt.model.qnn`) and a second, independent reference.

`Naive` below is a slow, literal, loop-by-loop transcription of docs/integer_training.md in plain
Python ints. It shares nothing with `terrain_odt.model.qnn` except the blob reader, so its agreement
with the vectorised model and with the golden files is evidence that both are right.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from terrain_odt.model import qnn
from terrain_odt.model.blob import Kind, LayerDesc, ParamSection, decode_blob
from terrain_odt.model.qnn import ModelMeta, QModel, TrainConfig
from terrain_odt.model.quantize import (
    activation_qparams,
    calibrate_ranges,
    lr_to_fixed,
    quantize_model,
    quantize_multiplier,
)
from terrain_odt.model.quantize import softmax_a as qnn_softmax_a

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def shr_round(x: int, r: int) -> int:
    if r >= 63:
        return 0
    if r > 0:
        return (x + (1 << (r - 1))) >> r
    if r == 0:
        return x
    return x << (-r)


def sat_i32(x: int) -> int:
    return max(I32_MIN, min(I32_MAX, x))


def clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def normalize(t: list[int], e: int, bits: int) -> tuple[list[int], int, bool]:
    mx = max((abs(v) for v in t), default=0)
    if mx == 0:
        return [0] * len(t), e, True
    r = mx.bit_length() - bits
    return [shr_round(v, r) for v in t], e + r, False


def exp2_frac(f: int) -> int:
    p = (2648 * f) >> 16
    p = ((15212 - p) * f) >> 16
    p = ((45340 - p) * f) >> 16
    return 65536 - p


def log2_q16(s: int) -> int:
    k = s.bit_length() - 1
    m = (s << 16) >> k
    fr = m - 65536
    return (k << 16) + fr + ((22610 * fr * (65536 - fr)) >> 32)


def softmax(y: list[int], label: int, a: int) -> tuple[list[int], list[int], int, int, int]:
    ymax = max(y)
    v = [a * (yi - ymax) for yi in y]
    e = []
    for vi in v:
        n, f = (-vi) >> 16, (-vi) & 0xFFFF
        e.append(exp2_frac(f) >> n if n < 32 else 0)
    s = sum(e)
    p = [(ei * 32768 + s // 2) // s for ei in e]
    g = [p[i] - (32768 if i == label else 0) for i in range(len(y))]
    ce = max(((log2_q16(s) - (16 << 16) - v[label]) * 45426) >> 16, 0)
    pred = next(i for i, yi in enumerate(y) if yi == ymax)
    return p, g, 32768 - p[label], ce, pred


def geometry(d: LayerDesc) -> tuple[int, ...]:
    """(H, W, CIN, COUT, KH, KW, STRIDE, PAD_H, PAD_W, OH, OW)."""
    if d.kind == Kind.DENSE:
        return (1, 1, d.dims[0], d.dims[1], 1, 1, 1, 0, 0, 1, 1)
    if d.kind == Kind.CONV1D:
        length, cin, cout, k, stride, pad, lout = d.dims[:7]
        return (1, length, cin, cout, 1, k, stride, 0, pad, 1, lout)
    h, w, cin, cout, kh, kw, stride, pad, oh, ow = d.dims
    return (h, w, cin, cout, kh, kw, stride, pad, pad, oh, ow)


@dataclass
class Params:
    zx: int
    zy: int
    m: list[int]
    s: list[int]
    ue: list[int]
    ube: list[int]
    um: list[int]
    ubm: list[int]
    bias: list[int]
    w: list[list[int]]  # stored: int8, or the i16 master


@dataclass
class Naive:
    data: bytes
    storage: str = "i8"
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        blob = decode_blob(self.data)
        self.descs = blob.layers
        self.softmax_a = blob.softmax_a
        self.input_zp = blob.input_zp
        self.p: dict[int, Params] = {}
        for i, (d, sec) in enumerate(zip(self.descs, blob.params, strict=True)):
            if sec is None:
                continue
            rows = sec.weights.reshape(d.out_channels, d.fan).tolist()
            if self.storage == "i16":
                rows = [[q * 256 + 128 for q in row] for row in rows]
            self.p[i] = Params(
                sec.z_x, sec.z_y, sec.m.tolist(), sec.s.tolist(), sec.ue.tolist(),
                sec.ube.tolist(), sec.um.tolist(), sec.ubm.tolist(), sec.bias.tolist(), rows,
            )  # fmt: skip
        self.counters = dict.fromkeys(
            ["forward_saturations", "update_clips", "weight_saturations", "zero_grad_steps",
             "steps", "updates"], 0,
        )  # fmt: skip
        self.state = 0
        self.slots: list[dict[int, tuple[list[int], list[int], int]]] = []
        self.losses: list[int] = []

    def wq(self, i: int, c: int, j: int) -> int:
        w = self.p[i].w[c][j]
        return w if self.storage == "i8" else w >> 8

    def configure(
        self, lr_m: int, lr_e: int, modes: list[str], batch: int, topk_min: int | None, seed: int
    ) -> None:
        self.lr_m, self.lr_e, self.batch, self.topk_min = lr_m, lr_e, batch, topk_min
        pidx = sorted(self.p)
        self.modes = {pidx[k]: modes[k] for k in range(len(pidx))}
        self.state = seed
        self.slots, self.losses = [], []

    def next16(self) -> int:
        self.state = (self.state * 1664525 + 1013904223) % (1 << 32)
        return self.state >> 16

    # forward --------------------------------------------------------------------------------
    def forward(self, x: list[int]) -> tuple[list[list[int]], list[int]]:
        acts = [list(x)]
        zps = []
        z = self.input_zp
        for i, d in enumerate(self.descs):
            zps.append(z)
            xin = acts[-1]
            if d.has_params:
                y = self.param_forward(i, d, xin)
                z = self.p[i].zy
            elif d.kind in (Kind.MAXPOOL2D, Kind.AVGPOOL2D):
                y = []
                h, w, ch, ph, pw = d.dims[:5]
                for oy in range(h // ph):
                    for ox in range(w // pw):
                        for c in range(ch):
                            win = [
                                xin[((oy * ph + py) * w + ox * pw + px) * ch + c]
                                for py in range(ph)
                                for px in range(pw)
                            ]
                            n = ph * pw
                            y.append(
                                max(win)
                                if d.kind == Kind.MAXPOOL2D
                                else (2 * sum(win) + n) // (2 * n)
                            )
            elif d.kind == Kind.RELU:
                y = [max(v, z) for v in xin]
            else:
                y = list(xin)
            acts.append(y)
        return acts, zps

    def param_forward(self, i: int, d: LayerDesc, x: list[int]) -> list[int]:
        p = self.p[i]
        h, w, cin, cout, kh, kw, st, pdh, pdw, oh, ow = geometry(d)
        y = []
        for oy in range(oh):
            for ox in range(ow):
                for c in range(cout):
                    acc = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * st + ky - pdh, ox * st + kx - pdw
                            if not (0 <= iy < h and 0 <= ix < w):
                                continue
                            for ci in range(cin):
                                wv = self.wq(i, c, (ky * kw + kx) * cin + ci)
                                acc += wv * (x[(iy * w + ix) * cin + ci] - p.zx)
                    acc = sat_i32(p.bias[c] + acc)
                    v = p.zy + sat_i32(shr_round(acc * p.m[c], 31 - p.s[c]))
                    if v > 127 or (v < -128 and not d.relu):
                        self.counters["forward_saturations"] += 1
                    y.append(clamp(v, p.zy if d.relu else -128, 127))
        return y

    # training -------------------------------------------------------------------------------
    def train_step(self, x: list[int], label: int) -> tuple[list[int], list[int], int, int, int]:
        acts, zps = self.forward(x)
        logits = acts[-1]
        p, g, loss, ce, pred = softmax(logits, label, self.softmax_a)
        self.counters["steps"] += 1
        trainable = [i for i in sorted(self.p) if self.modes[i] != "frozen"]
        if not trainable:
            return logits, p, loss, ce, pred
        low = trainable[0]
        e, exp = g, -15
        slots = {}
        for i in range(len(self.descs) - 1, low - 1, -1):
            d = self.descs[i]
            if d.has_params:
                delta, dexp, zero = self.to_delta(i, d, e, exp, acts[i + 1])
                self.counters["zero_grad_steps"] += zero
                if self.modes[i] != "frozen":
                    slots[i] = (acts[i], delta, dexp)
                if i > low:
                    e, exp = self.input_error(i, d, delta), dexp
            else:
                e, exp = self.backward(d, e, exp, acts[i], zps[i])
        self.slots.append(slots)
        self.losses.append(loss)
        if len(self.slots) == self.batch:
            self.update()
            self.counters["updates"] += 1
            self.slots, self.losses = [], []
        return logits, p, loss, ce, pred

    def to_delta(
        self, i: int, d: LayerDesc, e: list[int], exp: int, y: list[int]
    ) -> tuple[list[int], int, bool]:
        p = self.p[i]
        cout = d.out_channels
        smax = max(p.s)
        t = []
        for j, ej in enumerate(e):
            c = j % cout
            mask = 0 if (d.relu and y[j] == p.zy) else 1
            t.append(shr_round(ej * mask * p.m[c], smax - p.s[c]))
        return normalize(t, exp + smax - 31, 12)

    def input_error(self, i: int, d: LayerDesc, delta: list[int]) -> list[int]:
        h, w, cin, cout, kh, kw, st, pdh, pdw, oh, ow = geometry(d)
        e_in = [0] * (h * w * cin)
        for oy in range(oh):
            for ox in range(ow):
                for c in range(cout):
                    dv = delta[(oy * ow + ox) * cout + c]
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * st + ky - pdh, ox * st + kx - pdw
                            if not (0 <= iy < h and 0 <= ix < w):
                                continue
                            for ci in range(cin):
                                e_in[(iy * w + ix) * cin + ci] += dv * self.wq(
                                    i, c, (ky * kw + kx) * cin + ci
                                )
        return e_in

    def backward(
        self, d: LayerDesc, e: list[int], exp: int, x: list[int], z: int
    ) -> tuple[list[int], int]:
        if d.kind in (Kind.MAXPOOL2D, Kind.AVGPOOL2D):
            h, w, ch, ph, pw = d.dims[:5]
            n = ph * pw
            qn = (65536 + n // 2) // n
            t = [0] * (h * w * ch)
            o = 0
            for oy in range(h // ph):
                for ox in range(w // pw):
                    for c in range(ch):
                        idx = [
                            ((oy * ph + py) * w + ox * pw + px) * ch + c
                            for py in range(ph)
                            for px in range(pw)
                        ]
                        if d.kind == Kind.MAXPOOL2D:
                            best = idx[0]
                            for k in idx:
                                if x[k] > x[best]:
                                    best = k
                            t[best] = e[o]
                        else:
                            for k in idx:
                                t[k] = e[o] * qn
                        o += 1
            if d.kind == Kind.MAXPOOL2D:
                return t, exp
            out, e2, _ = normalize(t, exp - 16, 24)
            return out, e2
        if d.kind == Kind.RELU:
            return [ej if xj > z else 0 for ej, xj in zip(e, x, strict=True)], exp
        return list(e), exp

    def update(self) -> None:
        for i in sorted(self.p):
            mode = self.modes[i]
            if mode == "frozen":
                continue
            d = self.descs[i]
            p = self.p[i]
            h, w, cin, cout, kh, kw, st, pdh, pdw, oh, ow = geometry(d)
            npos = oh * ow
            slots = [s[i] for s in self.slots]
            sel = self.select(cout, npos, slots)
            for c in range(cout):
                if not sel[c]:
                    continue
                if mode == "all":
                    r = []
                    for _x, delta, eb in slots:
                        rb = []
                        for pos in range(npos):
                            big_r = self.lr_m * p.um[c] * delta[pos * cout + c]
                            xk = self.lr_e + p.ue[c] + eb + 16
                            v = big_r * 2**xk if xk >= 0 else shr_round(big_r, -xk)
                            if v > 2**20 or v < -(2**20):
                                self.counters["update_clips"] += 1
                            rb.append(clamp(v, -(2**20), 2**20))
                        r.append(rb)
                    if any(v != 0 for rb in r for v in rb):
                        row_saturated = False
                        for ky in range(kh):
                            for kx in range(kw):
                                for ci in range(cin):
                                    j = (ky * kw + kx) * cin + ci
                                    v = 0
                                    for b, (x, _delta, _eb) in enumerate(slots):
                                        for oy in range(oh):
                                            for ox in range(ow):
                                                iy = oy * st + ky - pdh
                                                ix = ox * st + kx - pdw
                                                if 0 <= iy < h and 0 <= ix < w:
                                                    xc = x[(iy * w + ix) * cin + ci] - p.zx
                                                    v += r[b][oy * ow + ox] * xc
                                    vmax = 8 * 2**16
                                    if abs(v) > vmax:
                                        self.counters["update_clips"] += 1
                                    v = clamp(v, -vmax, vmax)
                                    if self.storage == "i8":
                                        nw = p.w[c][j] - ((v + self.next16()) >> 16)
                                        lo, hi = -128, 127
                                    else:
                                        nw = p.w[c][j] - ((v + 128) >> 8)
                                        lo, hi = -32768, 32767
                                    if not lo <= nw <= hi:
                                        row_saturated = True
                                    p.w[c][j] = clamp(nw, lo, hi)
                        # one count per row with any clamped weight (docs §5.2)
                        self.counters["weight_saturations"] += row_saturated
                db = 0
                for _x, delta, eb in slots:
                    tot = sum(delta[pos * cout + c] for pos in range(npos))
                    t = self.lr_m * p.ubm[c] * tot
                    xb = self.lr_e + p.ube[c] + eb
                    v = t * 2**xb if xb >= 0 else shr_round(t, -xb)
                    if not I32_MIN <= v <= I32_MAX:
                        self.counters["update_clips"] += 1
                    db += sat_i32(v)
                p.bias[c] = sat_i32(p.bias[c] - db)

    def select(
        self, cout: int, npos: int, slots: list[tuple[list[int], list[int], int]]
    ) -> list[bool]:
        if self.topk_min is None:
            return [True] * cout
        e_max = max(eb for _x, _d, eb in slots)
        imp = []
        for c in range(cout):
            tot = 0
            for _x, delta, eb in slots:
                ssum = sum(abs(delta[pos * cout + c]) for pos in range(npos))
                sh = e_max - eb
                tot += 0 if sh >= 64 else ssum >> sh
            imp.append(min(tot, 2**32 - 1))
        kmin = min(self.topk_min, cout)
        loss_avg = sum(self.losses) // len(self.losses)
        k = kmin + (((cout - kmin) * loss_avg) >> 15)
        order = sorted(range(cout), key=lambda c: (-imp[c], c))[:k]
        return [c in order and imp[c] > 0 for c in range(cout)]

    def state_crc32(self) -> int:
        crc = 0
        for i in sorted(self.p):
            p = self.p[i]
            for row in p.w:
                for v in row:
                    if self.storage == "i8":
                        crc = zlib.crc32((v & 0xFF).to_bytes(1, "little"), crc)
                    else:
                        crc = zlib.crc32(v.to_bytes(2, "little", signed=True), crc)
            for b in p.bias:
                crc = zlib.crc32(b.to_bytes(4, "little", signed=True), crc)
        return crc


# =============================================================================================
# Tests


GOLDEN = Path(__file__).resolve().parent.parent / "firmware" / "odt-core" / "golden"
CASE_FILES = sorted(
    p for p in GOLDEN.glob("*.json") if p.name not in ("blob_errors.json", "capacity_errors.json")
)


def test_golden_files_exist() -> None:
    assert len(CASE_FILES) >= 10


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_naive_reference_reproduces_golden(path: Path) -> None:
    """The literal loop transcription agrees with the golden file (made by the numpy code)."""
    case = json.loads(path.read_text())
    ref = Naive(bytes.fromhex(case["blob_hex"]), case["storage"])
    cfg = case["config"]
    ref.configure(
        cfg["lr_m"], cfg["lr_e"], cfg["modes"], cfg["batch"], cfg["topk_min"], cfg["seed"]
    )
    for k, step in enumerate(case["steps"]):
        logits, p, loss, ce, pred = ref.train_step(step["x"], step["label"])
        assert logits == step["logits"], f"step {k}"
        assert (p, loss, ce, pred) == (
            step["p_q15"],
            step["loss_q15"],
            step["ce_q16"],
            step["pred"],
        )
    assert ref.counters == case["counters"]
    for inf in case["infer"]:
        assert ref.forward(inf["x"])[0][-1] == inf["logits"]
    assert ref.state_crc32() == case["final_state_crc32"]


def _random_model(rng: np.random.Generator, arch: str, storage: str) -> QModel:
    L = LayerDesc
    if arch == "mlp":
        n_in, h1, h2, n_out = (int(v) for v in rng.integers(2, 9, 4))
        descs = [
            L.dense(n_in, h1, True),
            L.dense(h1, h2, bool(rng.integers(2))),
            L.dense(h2, n_out),
        ]
    elif arch == "conv1d":
        descs = [
            L.conv1d(9, 2, 3, 3, 2, 2, relu=True),  # LOUT = 6
            L.avgpool2d(1, 6, 3, 1, 4),  # floor: 1 window, 2 positions left out
            L.relu_layer(3),
            L.dense(3, 3),
        ]
    else:
        descs = [
            L.conv2d(5, 5, 2, 3, 3, 2, 2, 1, relu=True),  # KH 3, KW 2, stride 2, pad 1: 3x3
            L.maxpool2d(3, 3, 3, 2, 2),  # floor: 1x1, the last row and column left out
            L.flatten(3),
            L.dense(3, 4),
        ]
    params = []
    for d in descs:
        if d.has_params:
            params.append(
                (
                    rng.normal(0, np.sqrt(2 / d.fan), d.weight_shape),
                    rng.normal(0, 0.2, d.out_channels),
                )
            )
    inq = activation_qparams(-float(rng.uniform(0.1, 1.5)), float(rng.uniform(0.1, 1.5)))
    xq = rng.integers(-128, 128, (64, descs[0].in_len))
    ranges = calibrate_ranges(descs, params, inq.scale * (xq - inq.zero_point))
    shrink = float(rng.choice([1.0, 0.5]))
    outq = [activation_qparams(lo * shrink, max(hi * shrink, 1e-3)) for lo, hi in ranges]
    return quantize_model(descs, params, inq, outq, storage=storage)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(24))
def test_qmodel_matches_naive_on_random_models(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    arch = ["mlp", "conv1d", "conv2d"][seed % 3]
    storage = "i16" if seed % 4 == 3 else "i8"
    model = _random_model(rng, arch, storage)
    ref = Naive(model.to_blob(), storage)
    n_param = len(model.param_idx)
    modes = [str(rng.choice(["frozen", "bias", "all", "all"])) for _ in range(n_param)]
    batch = int(rng.integers(1, 4))
    topk = None if rng.integers(2) else int(rng.integers(0, 4))
    lr_m, lr_e = lr_to_fixed(float(10 ** rng.uniform(-3, 1)))
    cfg = TrainConfig(lr_m, lr_e, tuple(modes), batch, topk, int(rng.integers(0, 2**32)))
    model.set_config(cfg)
    ref.configure(lr_m, lr_e, modes, batch, topk, cfg.seed)
    for _ in range(12):
        x = rng.integers(-128, 128, model.input_len)
        label = int(rng.integers(model.output_len))
        got = model.train_step(x, label)
        want = ref.train_step(x.tolist(), label)
        assert got.logits.tolist() == want[0]
        assert (got.p_q15, got.loss_q15, got.ce_q16, got.pred) == tuple(want[1:])
    assert model.counters.as_dict() == ref.counters
    assert model.state_crc32() == ref.state_crc32()
    xs = rng.integers(-128, 128, (20, model.input_len))
    assert model.predict_batch(xs).tolist() == [ref.forward(x.tolist())[0][-1] for x in xs]


def test_counters_exercised_by_random_models() -> None:
    """The random-model comparison above must reach the interesting branches."""
    totals = dict.fromkeys(["forward_saturations", "update_clips", "weight_saturations",
                            "zero_grad_steps"], 0)  # fmt: skip
    for seed in range(24):
        rng = np.random.default_rng(1000 + seed)
        model = _random_model(rng, ["mlp", "conv1d", "conv2d"][seed % 3], "i8")
        n_param = len(model.param_idx)
        lr_m, lr_e = lr_to_fixed(4.0)
        model.set_config(TrainConfig(lr_m, lr_e, ("all",) * n_param, 1, None, 7))
        for _ in range(12):
            model.train_step(rng.integers(-128, 128, model.input_len), 0)
        for k in totals:
            totals[k] += getattr(model.counters, k)
    assert all(v > 0 for v in totals.values()), totals


# --- helpers ----------------------------------------------------------------------------------


def test_shr_round_examples() -> None:
    assert qnn.shr_round(5, 1) == 3
    assert qnn.shr_round(-5, 1) == -2
    assert qnn.shr_round(-6, 2) == -1
    assert qnn.shr_round(7, 0) == 7
    assert qnn.shr_round(3, -2) == 12
    assert qnn.shr_round(2**62, 63) == 0
    assert qnn.shr_round(-(2**62), 70) == 0


def test_shr_round_arr_matches_scalar() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-(2**40), 2**40, 4000)
    r = rng.integers(-10, 80, 4000)
    r[:50] = 0
    got = qnn.shr_round_arr(x, r)
    assert got.tolist() == [shr_round(int(a), int(b)) for a, b in zip(x, r, strict=True)]
    for k in (-3, 0, 1, 17, 62, 63, 100):
        assert qnn.shr_round_arr(x[:100], k).tolist() == [shr_round(int(a), k) for a in x[:100]]


def test_shr_round_is_round_half_up() -> None:
    x = np.arange(-1000, 1000)
    assert (qnn.shr_round_arr(x, 3) == np.floor(x / 8 + 0.5)).all()


@pytest.mark.parametrize("lo,hi", [(-(2**20), 2**20), (I32_MIN, I32_MAX)])
def test_scale_sat_matches_exact_ints(lo: int, hi: int) -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(-(2**42), 2**42, 5000) >> rng.integers(0, 42, 5000)
    k = rng.integers(-70, 70, 5000)
    val, clipped = qnn.scale_sat_arr(x, k, lo, hi)
    for a, b, v, c in zip(x.tolist(), k.tolist(), val.tolist(), clipped.tolist(), strict=True):
        exact = a * 2**b if b >= 0 else shr_round(a, -b)
        assert v == clamp(exact, lo, hi)
        assert c == (exact != clamp(exact, lo, hi))


def test_normalize_mantissa_width() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        t = rng.integers(-(2 ** int(rng.integers(1, 50))), 2**20, 7)
        out, e, zero = qnn.normalize(t, 3, 12)
        ref_out, ref_e, ref_zero = normalize(t.tolist(), 3, 12)
        assert (out.tolist(), e, zero) == (ref_out, ref_e, ref_zero)
        if not zero:
            assert 2**11 <= int(np.abs(out).max()) <= 2**12
    out, e, zero = qnn.normalize(np.zeros(4, dtype=np.int64), -7, 12)
    assert zero and e == -7 and not out.any()


def test_requant_matches_real_multiplier() -> None:
    rng = np.random.default_rng(6)
    for _ in range(200):
        real = float(10 ** rng.uniform(-6, 1.5))
        m, s = quantize_multiplier(real)
        acc = rng.integers(-(2**20), 2**20, 50)
        got = qnn.requant_arr(acc, np.int64(m), np.int64(s))
        exact = acc * (m / 2.0 ** (31 - s))
        assert np.all(np.abs(got - exact) <= 0.5 + 1e-9 * np.abs(exact))


def test_exp2_frac_and_log2_accuracy() -> None:
    f = np.arange(0, 65536, 7)
    approx = np.array([qnn.exp2_frac(int(v)) for v in f]) / 65536.0
    assert np.max(np.abs(approx / 2.0 ** (-f / 65536.0) - 1)) < 2.6e-4
    for s in [1, 2, 3, 1000, 65536, 65537, 123456789, 2**40 + 12345]:
        assert abs(qnn.log2_q16(s) / 65536.0 - math.log2(s)) < 0.008


# --- softmax --------------------------------------------------------------------------------


def test_softmax_probabilities_sum_to_one() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        y = rng.integers(-128, 128, n).tolist()
        a = qnn_softmax_a(float(rng.uniform(0.01, 0.5)))
        out = qnn.softmax_ce(y, 0, a)
        assert abs(sum(out.p_q15) - 32768) <= n // 2 + 1
        assert all(p >= 0 for p in out.p_q15)
        assert sum(out.g_q15) == sum(out.p_q15) - 32768
        assert out.pred == int(np.argmax(y))


def test_softmax_close_to_float() -> None:
    rng = np.random.default_rng(8)
    for _ in range(300):
        n = int(rng.integers(2, 10))
        s_y = float(rng.uniform(0.02, 0.15))
        y = rng.integers(-128, 128, n)
        label = int(rng.integers(n))
        out = qnn.softmax_ce(y.tolist(), label, qnn_softmax_a(s_y))
        z = s_y * y
        p = np.exp(z - z.max())
        p /= p.sum()
        assert np.max(np.abs(np.array(out.p_q15) / 32768 - p)) < 2e-3
        ce = -math.log(p[label])
        if ce < 12:  # moderate logits
            assert abs(out.ce_q16 / 65536 - ce) < 0.01, (y, label, s_y)
        assert out.loss_q15 == 32768 - out.p_q15[label]


def test_softmax_matches_naive() -> None:
    rng = np.random.default_rng(9)
    for _ in range(200):
        y = rng.integers(-128, 128, 5).tolist()
        a = int(rng.integers(1, 40000))
        label = int(rng.integers(5))
        o = qnn.softmax_ce(y, label, a)
        assert (o.p_q15, o.g_q15, o.loss_q15, o.ce_q16, o.pred)[2:] == softmax(y, label, a)[2:]
        assert o.p_q15 == softmax(y, label, a)[0]


def test_softmax_first_maximum_and_extremes() -> None:
    o = qnn.softmax_ce([5, 9, 9, -3], 2, 3000)
    assert o.pred == 1
    o = qnn.softmax_ce([127, -128, -128], 0, 200000)  # the others underflow to 0
    assert o.p_q15 == [32768, 0, 0] and o.g_q15 == [0, 0, 0] and o.loss_q15 == 0 and o.ce_q16 == 0


# --- LCG and stochastic rounding ---------------------------------------------------------------


def test_lcg_draws_match_the_scalar_loop() -> None:
    for seed in (0, 1, 0x2545F491, 2**32 - 1):
        a, b = qnn.Lcg(seed), qnn.Lcg(seed)
        seq = [a.next16() for _ in range(5000)]
        got = np.concatenate([b.draws(1), b.draws(0), b.draws(999), b.draws(4000)])
        assert got.tolist() == seq
        assert a.state == b.state


def test_lcg_known_values() -> None:
    # state_1 = 1664525·1 + 1013904223 = 1015568748
    g = qnn.Lcg(1)
    assert g.next16() == 1015568748 >> 16
    assert g.state == 1015568748
    g = qnn.Lcg(0)
    g.draws(3)
    s = 0
    for _ in range(3):
        s = (s * 1664525 + 1013904223) % 2**32
    assert g.state == s


@pytest.mark.parametrize("v", [1, 1000, 16384, 32768, 65535, 65537, 100000, -1, -30000, -200000])
def test_stochastic_rounding_is_unbiased(v: int) -> None:
    g = qnn.Lcg(12345)
    n = 200_000
    steps = (v + g.draws(n)) >> 16
    assert abs(steps.mean() - v / 65536) < 0.005
    assert set(np.unique(steps).tolist()) <= {v >> 16, (v >> 16) + 1}


def test_hp_master_rounds_to_nearest() -> None:
    # w16 ← w16 − ((v + 128) >> 8): v in Q16 steps → Q8 master; 8 sub-steps of 1/8 step make 1
    w16 = 5 * 256 + 128
    for _ in range(8):
        w16 -= (65536 // 8 + 128) >> 8
    assert w16 >> 8 == 4


# --- forward semantics --------------------------------------------------------------------------


def _one_dense(relu: bool, z_y: int, bias: int) -> QModel:
    desc = LayerDesc.dense(1, 1, relu)
    sec = ParamSection(0, z_y, [1 << 30], [0], [0], [0], [1 << 14], [1 << 14], [bias], [[1]])
    meta = ModelMeta(0, 0, z_y, 0, 0, 1000)
    return QModel.from_parts([desc], [sec], meta)


@pytest.mark.parametrize(
    "relu,z_y,x,bias,y,sat",
    [
        (False, 0, 100, 0, 50, 0),  # M = 0.5
        (False, 0, 127, 200, 127, 1),  # 163 > 127
        (False, 0, -128, -200, -128, 1),  # −164 < −128
        (True, -128, -128, -200, -128, 0),  # below z_y: the ReLU's clamp, not a saturation
        (True, 10, -100, 0, 10, 0),
        (True, 10, 127, 100, 124, 0),  # 10 + round(227 / 2) = 124
        (True, 10, 127, 300, 127, 1),  # 10 + 214 > 127
    ],
)
def test_forward_saturation_rule(relu: bool, z_y: int, x: int, bias: int, y: int, sat: int) -> None:
    m = _one_dense(relu, z_y, bias)
    out, _ = m.forward(np.array([x]))
    expect_v = z_y + shr_round((x + bias) * (1 << 30), 31)
    assert int(out[0]) == clamp(expect_v, z_y if relu else -128, 127) == y
    assert m.counters.forward_saturations == int(expect_v > 127 or (expect_v < -128 and not relu))
    assert m.counters.forward_saturations == sat


def test_accumulator_saturates() -> None:
    m = _one_dense(False, 0, I32_MAX)
    out, _ = m.forward(np.array([127]))  # b + 127 saturates to I32_MAX, then · 0.5
    assert int(out[0]) == 127
    assert m.layers[0].forward(np.array([[127]]))[0][0, 0] == 127


def test_predict_batch_equals_forward() -> None:
    rng = np.random.default_rng(11)
    for arch in ("mlp", "conv1d", "conv2d"):
        model = _random_model(rng, arch, "i8")
        xs = rng.integers(-128, 128, (300, model.input_len))
        batch = model.predict_batch(xs, chunk=64)
        before = model.counters.forward_saturations
        for x, row in zip(xs, batch, strict=True):
            assert model.forward(x)[0].tolist() == row.tolist()
        assert model.predict_batch(xs).tolist() == batch.tolist()
        assert model.counters.forward_saturations >= before


def test_train_step_without_trainable_layers_only_counts_steps() -> None:
    rng = np.random.default_rng(12)
    model = _random_model(rng, "mlp", "i8")
    blob = model.to_blob()
    model.set_config(TrainConfig(1 << 14, -10, ("frozen",) * 3, 2, None, 1))
    for _ in range(4):
        model.train_step(rng.integers(-128, 128, model.input_len), 0)
    assert model.to_blob() == blob
    assert model.counters.steps == 4 and model.counters.updates == 0


def test_train_config_validation() -> None:
    with pytest.raises(ValueError):
        TrainConfig(1 << 15, 0, ("all",))
    with pytest.raises(ValueError):
        TrainConfig(1 << 14, 0, ("sometimes",))
    with pytest.raises(ValueError):
        TrainConfig(1 << 14, 0, ("all",), batch=0)
    rng = np.random.default_rng(13)
    model = _random_model(rng, "mlp", "i8")
    with pytest.raises(ValueError):
        model.set_config(TrainConfig(1 << 14, 0, ("all",)))
    with pytest.raises(RuntimeError):
        model.train_step(np.zeros(model.input_len, dtype=int), 0)


def test_i16_storage_round_trip_and_crc() -> None:
    rng = np.random.default_rng(14)
    m8 = _random_model(rng, "mlp", "i8")
    blob = m8.to_blob()
    m16 = QModel.from_blob(blob, storage="i16")
    assert m16.to_blob() == blob  # w16 >> 8 == q
    layer = m16.param_layers[0]
    assert layer.w16 is not None and (layer.w16 == layer.w8 * 256 + 128).all()
    crc = 0
    for la in m16.param_layers:
        assert la.w16 is not None
        crc = zlib.crc32(la.w16.astype("<i2").tobytes(), crc)
        crc = zlib.crc32(la.bias.astype("<i4").tobytes(), crc)
    assert m16.state_crc32() == crc
    assert m8.state_crc32() != crc


def test_train_step_speed_mlp() -> None:
    """102-64-32-5 MLP: a batch-1 training step stays around a millisecond."""
    rng = np.random.default_rng(15)
    descs = [LayerDesc.dense(102, 64, True), LayerDesc.dense(64, 32, True), LayerDesc.dense(32, 5)]
    params = [
        (rng.normal(0, np.sqrt(2 / d.fan), d.weight_shape), rng.normal(0, 0.1, d.out_channels))
        for d in descs
    ]
    inq = activation_qparams(-1, 1)
    xq = rng.integers(-128, 128, (256, 102))
    ranges = calibrate_ranges(descs, params, inq.scale * (xq - inq.zero_point))
    model = quantize_model(descs, params, inq, [activation_qparams(*r) for r in ranges])
    lr_m, lr_e = lr_to_fixed(1e-3)
    model.set_config(TrainConfig(lr_m, lr_e, ("all", "all", "all"), 1, None, 1))
    xs = rng.integers(-128, 128, (300, 102))
    ys = rng.integers(0, 5, 300)
    t0 = time.perf_counter()
    for x, y in zip(xs, ys, strict=True):
        model.train_step(x, int(y))
    per_step = (time.perf_counter() - t0) / len(xs)
    assert per_step < 5e-3, per_step  # generous for slow CI machines; ~1 ms on a laptop
