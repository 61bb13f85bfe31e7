"""float32 reference trainer for the experiments: the same MLP as the integer model, trained with
plain SGD (batch 1) on the same samples, so integer and float fine-tuning compare like for like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FloatParams = list[tuple[np.ndarray, np.ndarray]]  # (weights [out, in], bias [out]) per layer


class FloatMLP:
    """float32 MLP with ReLU hidden layers, softmax cross-entropy, plain SGD (batch 1)."""

    def __init__(self, params: FloatParams) -> None:
        self.w = [np.asarray(w, dtype=np.float32).copy() for w, _ in params]
        self.b = [np.asarray(b, dtype=np.float32).copy() for _, b in params]

    def logits(self, z: np.ndarray) -> np.ndarray:
        a = np.asarray(z, dtype=np.float32)
        for i, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            a = a @ w.T + b
            if i < len(self.w) - 1:
                a = np.maximum(a, 0.0)
        return a

    def accuracy(self, z: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.logits(z).argmax(axis=1) == y)) if len(y) else float("nan")

    def step(
        self, z: np.ndarray, label: int, lr: float, modes: Sequence[str] | None = None
    ) -> None:
        """One SGD step; `modes` ("frozen"/"bias"/"all" per layer, as the integer trainer takes)
        selects the lowest layer that trains, every layer above it trains fully (None: all)."""
        acts = [np.asarray(z, dtype=np.float32)]
        for i, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            a = w @ acts[-1] + b
            acts.append(np.maximum(a, 0.0) if i < len(self.w) - 1 else a)
        p = np.exp(acts[-1] - acts[-1].max())
        g = p / p.sum()
        g[label] -= 1.0
        lr32 = np.float32(lr)
        low = 0 if modes is None else next(i for i, m in enumerate(modes) if m != "frozen")
        for i in range(len(self.w) - 1, low - 1, -1):
            g_in = (self.w[i].T @ g) * (acts[i] > 0) if i > low else None
            self.w[i] -= lr32 * np.outer(g, acts[i])
            self.b[i] -= lr32 * g
            if g_in is not None:
                g = g_in
