"""Loaders for the data sets the experiments use (read-only copies under `shared/data/`).

The data root is `$TERRAIN_ODT_DATA` when set, else `shared/data` beside the repository
(`<repo>/../shared/data`, where CI and the developer machines keep it). Loaders return numpy arrays
and never download anything.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

DATA_ENV = "TERRAIN_ODT_DATA"

# IDX element types (third byte of the magic) → numpy big-endian dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class DatasetError(Exception):
    """A data file is missing or malformed."""


def data_root() -> Path:
    """Directory that holds the shared data sets (see the module docstring)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped: chosen by the `.gz` suffix) as a numpy array.

    Format: two zero bytes, the element type, the number of dimensions, one big-endian `u32`
    per dimension, then the elements in row-major order.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DatasetError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetError(f"{path}: truncated header")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    itemsize = np.dtype(dtype).itemsize
    if len(data) != head + count * itemsize:
        raise DatasetError(
            f"{path}: {len(data) - head} payload bytes, expected {count * itemsize} for {shape}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=head).reshape(shape)
    return arr.astype(np.dtype(dtype).newbyteorder("="))


@dataclass(frozen=True)
class ImageSplit:
    """Images `(N, H, W)` `uint8` and labels `(N,)` `int64`."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


Split = Literal["train", "test"]
_IDX_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}


def load_idx_images(directory: str | Path, split: Split) -> ImageSplit:
    """An MNIST-layout directory (`train-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`, …)."""
    directory = Path(directory)
    prefix = _IDX_PREFIX[split]
    images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{directory}: images {images.shape} and labels {labels.shape} differ")
    return ImageSplit(images.astype(np.uint8), labels.astype(np.int64))


def load_mnist(split: Split, root: str | Path | None = None) -> ImageSplit:
    """MNIST (60000 train / 10000 test, 28×28 `uint8`, labels 0–9) from `<root>/mnist`."""
    base = Path(root) if root is not None else data_root()
    return load_idx_images(base / "mnist", split)


__all__ = [
    "DATA_ENV",
    "DatasetError",
    "ImageSplit",
    "data_root",
    "load_idx_images",
    "load_mnist",
    "read_idx",
]
