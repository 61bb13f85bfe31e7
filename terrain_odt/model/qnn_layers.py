"""The layers of the bit-exact numpy reference (`terrain_odt.model.qnn`): Dense, Conv1d, Conv2d,
MaxPool2d, AvgPool2d, ReLU and Flatten, each with its forward pass and its error back-propagation
(`docs/integer_training.md` §2, §4). Matrix products are taken in `float64` where every partial sum
is an integer below 2^53 (so the result is exact whatever the summation order); the bounds are
noted at each use.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from terrain_odt.model.blob import LayerDesc, ParamSection
from terrain_odt.model.qnn_fixed import (
    DELTA_BITS,
    ERR_BITS,
    I32_MAX,
    I32_MIN,
    IntArray,
    ShiftPlan,
    clip,
    normalize,
)

Storage = Literal["i8", "i16"]


# ---------------------------------------------------------------------------------------------
# Layers. Activations are flat `int64` buffers of shape (N, len) in HWC order.


class Layer:
    """Base class: a layer of the model, built from its descriptor."""

    desc: LayerDesc

    @property
    def in_len(self) -> int:
        return self.desc.in_len

    @property
    def out_len(self) -> int:
        return self.desc.out_len

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        raise NotImplementedError

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        """Error at the output (flat mantissas, exponent) → error at the input (§4.2)."""
        raise NotImplementedError


class ParamLayer(Layer):
    """Dense, Conv1d and Conv2d: int8 weights (or an i16 master), per-channel quantization."""

    def __init__(self, desc: LayerDesc, sec: ParamSection, storage: Storage) -> None:
        self.desc = desc
        self.relu = desc.relu
        self.storage: Storage = storage
        self.cout = desc.out_channels
        self.fan = desc.fan
        self.z_x = int(sec.z_x)
        self.z_y = int(sec.z_y)
        self.m = sec.m.astype(np.int64)
        self.s = sec.s.astype(np.int64)
        self.ue = sec.ue.astype(np.int64)
        self.ube = sec.ube.astype(np.int64)
        self.um = sec.um.astype(np.int64)
        self.ubm = sec.ubm.astype(np.int64)
        self.bias = sec.bias.astype(np.int64)
        self.w8 = sec.weights.reshape(self.cout, self.fan).astype(np.int64)
        self.w16: IntArray | None = self.w8 * 256 + 128 if storage == "i16" else None
        self.s_max = int(self.s.max())
        self._dshift = self.s_max - self.s  # in [0, 61]
        self._dround = (np.int64(1) << self._dshift) >> 1
        self._t = 31 - self.s  # requant shift, in [1, 62]
        self._tround = np.int64(1) << (self._t - 1)
        self._in_len = desc.in_len
        self._out_len = desc.out_len
        self.n_pos = self._out_len // self.cout
        self._plans: dict[tuple[bool, int], ShiftPlan] = {}  # (bias?, E) → plan; per config
        self._sync()
        self._geometry()

    def _geometry(self) -> None:
        raise NotImplementedError

    def _sync(self, rows: IntArray | None = None) -> None:
        """Refresh the derived copies of the forward weights after a change (of `rows` only,
        when given; the bias copy always)."""
        if rows is None:
            if self.w16 is not None:
                self.w8 = self.w16 >> 8
            self.w_f = self.w8.astype(np.float64)
        elif rows.size:
            if self.w16 is not None:
                self.w8[rows] = self.w16[rows] >> 8
            self.w_f[rows] = self.w8[rows]
        self.bias_f = self.bias.astype(np.float64)

    def section(self) -> ParamSection:
        w = self.w8 if self.w16 is None else self.w16 >> 8
        return ParamSection(
            self.z_x,
            self.z_y,
            self.m,
            self.s,
            self.ue,
            self.ube,
            self.um,
            self.ubm,
            self.bias,
            w.reshape(self.desc.weight_shape),
        )

    def cols(self, x: IntArray) -> IntArray:
        """`xc = x − z_x` gathered per output position: float64 (N·n_pos, FAN), zero padding."""
        raise NotImplementedError

    def forward_cols(self, cols: np.ndarray, n: int) -> tuple[IntArray, int]:
        # |acc| <= 2^31 + FAN·128·255 < 2^53: the float64 product is exact.
        acc = (cols @ self.w_f.T + self.bias_f).astype(np.int64)
        acc = clip(acc, I32_MIN, I32_MAX)
        # requant (§1.2): |acc·m| < 2^62
        v = self.z_y + clip((acc * self.m + self._tround) >> self._t, I32_MIN, I32_MAX)
        if self.relu:  # values below z_y are the ReLU's clamp, not a saturation
            nsat = int(np.count_nonzero(v > 127))
            y = clip(v, self.z_y, 127)
        else:
            nsat = int(np.count_nonzero((v < -128) | (v > 127)))
            y = clip(v, -128, 127)
        return y.reshape(n, self._out_len), nsat

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return self.forward_cols(self.cols(x), x.shape[0])

    def to_delta(self, e: IntArray, exp: int, y: IntArray) -> tuple[IntArray, int, bool]:
        """§4.1: error at the int8 output → δ (n_pos, OUT) with its exponent."""
        e = e.reshape(self.n_pos, self.cout)
        if self.relu:
            e = np.where(y.reshape(self.n_pos, self.cout) == self.z_y, np.int64(0), e)
        t = (e * self.m + self._dround) >> self._dshift  # shr_round by S − s[c] ∈ [0, 61]
        return normalize(t, exp + self.s_max - 31, DELTA_BITS)

    def input_error(self, delta: IntArray) -> IntArray:
        """§4.2: δ (n_pos, OUT) → error at the input (flat, same exponent)."""
        raise NotImplementedError


class Dense(ParamLayer):
    def _geometry(self) -> None:
        pass

    def cols(self, x: IntArray) -> np.ndarray:
        return (x - self.z_x).astype(np.float64)

    def input_error(self, delta: IntArray) -> IntArray:
        # |δ| <= 2^12, |w| <= 128: sums far below 2^53
        return (delta.astype(np.float64) @ self.w_f).astype(np.int64).reshape(self._in_len)


class _Conv(ParamLayer):
    """Shared im2col machinery; Conv1d is the H = 1 case."""

    h: int
    w: int
    cin: int
    kh: int
    kw: int
    stride: int
    pad_h: int
    pad_w: int
    oh: int
    ow: int

    def _setup(self) -> None:
        hp, wp = self.h + 2 * self.pad_h, self.w + 2 * self.pad_w
        self.hp, self.wp = hp, wp
        oy = np.arange(self.oh)[:, None, None, None, None] * self.stride
        ox = np.arange(self.ow)[None, :, None, None, None] * self.stride
        ky = np.arange(self.kh)[None, None, :, None, None]
        kx = np.arange(self.kw)[None, None, None, :, None]
        ci = np.arange(self.cin)[None, None, None, None, :]
        idx = ((oy + ky) * wp + (ox + kx)) * self.cin + ci
        self.gidx = idx.reshape(self.oh * self.ow, self.fan)  # into the padded flat input
        self.gidx_flat = self.gidx.ravel()
        self.padded_len = hp * wp * self.cin

    def _pad(self, xc: IntArray) -> IntArray:
        n = xc.shape[0]
        if self.pad_h == 0 and self.pad_w == 0:
            return xc
        buf = np.zeros((n, self.hp, self.wp, self.cin), dtype=xc.dtype)
        buf[:, self.pad_h : self.pad_h + self.h, self.pad_w : self.pad_w + self.w, :] = xc.reshape(
            n, self.h, self.w, self.cin
        )
        return buf.reshape(n, self.padded_len)

    def cols(self, x: IntArray) -> np.ndarray:
        xc = self._pad((x - self.z_x).astype(np.float64))
        return xc[:, self.gidx].reshape(-1, self.fan)

    def input_error(self, delta: IntArray) -> IntArray:
        g = delta.astype(np.float64) @ self.w_f  # (n_pos, FAN), exact
        acc = np.bincount(self.gidx_flat, weights=g.ravel(), minlength=self.padded_len)
        acc = acc.reshape(self.hp, self.wp, self.cin)[
            self.pad_h : self.pad_h + self.h, self.pad_w : self.pad_w + self.w, :
        ]
        return acc.astype(np.int64).reshape(self.in_len)


class Conv1d(_Conv):
    def _geometry(self) -> None:
        length, cin, _cout, k, stride, pad, lout = self.desc.dims[:7]
        self.h, self.w, self.cin = 1, length, cin
        self.kh, self.kw, self.stride = 1, k, stride
        self.pad_h, self.pad_w, self.oh, self.ow = 0, pad, 1, lout
        self._setup()


class Conv2d(_Conv):
    def _geometry(self) -> None:
        h, w, cin, _cout, kh, kw, stride, pad, oh, ow = self.desc.dims
        self.h, self.w, self.cin = h, w, cin
        self.kh, self.kw, self.stride = kh, kw, stride
        self.pad_h = self.pad_w = pad
        self.oh, self.ow = oh, ow
        self._setup()


class _Pool(Layer):
    def __init__(self, desc: LayerDesc) -> None:
        self.desc = desc
        self.h, self.w, self.c, self.ph, self.pw = desc.dims[:5]
        self.oh, self.ow = self.h // self.ph, self.w // self.pw
        self.n = self.ph * self.pw

    def windows(self, x: IntArray) -> IntArray:
        """(N, OH, OW, PH·PW, C), window elements in row-major scan order."""
        n = x.shape[0]
        v = x.reshape(n, self.h, self.w, self.c)[:, : self.oh * self.ph, : self.ow * self.pw, :]
        v = v.reshape(n, self.oh, self.ph, self.ow, self.pw, self.c).transpose(0, 1, 3, 2, 4, 5)
        return v.reshape(n, self.oh, self.ow, self.n, self.c)

    def scatter(self, ew: IntArray) -> IntArray:
        """Inverse of `windows` for one sample: (OH, OW, PH·PW, C) → flat input, 0 elsewhere."""
        v = ew.reshape(self.oh, self.ow, self.ph, self.pw, self.c).transpose(0, 2, 1, 3, 4)
        out = np.zeros((self.h, self.w, self.c), dtype=np.int64)
        out[: self.oh * self.ph, : self.ow * self.pw, :] = v.reshape(
            self.oh * self.ph, self.ow * self.pw, self.c
        )
        return out.reshape(self.in_len)


class MaxPool2d(_Pool):
    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return self.windows(x).max(axis=3).reshape(x.shape[0], self.out_len), 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        win = self.windows(x.reshape(1, -1))[0]
        first = np.argmax(win, axis=2)  # first maximal element in scan order
        ew = np.zeros_like(win)
        np.put_along_axis(ew, first[:, :, None, :], e.reshape(self.oh, self.ow, 1, self.c), axis=2)
        return self.scatter(ew), exp


class AvgPool2d(_Pool):
    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        s = self.windows(x).sum(axis=3)
        y = (2 * s + self.n) // (2 * self.n)  # div_floor, round half up
        return y.reshape(x.shape[0], self.out_len), 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        qn = (65536 + self.n // 2) // self.n
        t = e.reshape(self.oh, self.ow, 1, self.c) * qn
        ew = np.broadcast_to(t, (self.oh, self.ow, self.n, self.c))
        out, exp2, _ = normalize(self.scatter(ew), exp - 16, ERR_BITS)
        return out, exp2


class ReLU(Layer):
    def __init__(self, desc: LayerDesc, z: int) -> None:
        self.desc = desc
        self.z = z

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return np.maximum(x, self.z), 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        return np.where(x.reshape(-1) > self.z, e, np.int64(0)), exp


class Flatten(Layer):
    def __init__(self, desc: LayerDesc) -> None:
        self.desc = desc

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return x, 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        return e, exp


__all__ = [
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "Dense",
    "Flatten",
    "Layer",
    "MaxPool2d",
    "ParamLayer",
    "ReLU",
    "Storage",
]
