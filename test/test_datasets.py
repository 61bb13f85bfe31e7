"""The IDX reader on synthetic files; the MNIST loader on the shared copy (skipped if absent)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from terrain_odt.data.datasets import DatasetError, data_root, load_idx_images, load_mnist, read_idx


def _write_idx(path: Path, arr: np.ndarray, type_code: int, dtype: str) -> None:
    head = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = head + arr.astype(dtype).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_read_idx_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
    _write_idx(tmp_path / "a.gz", img, 0x08, ">u1")
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), img)
    ints = rng.integers(-1000, 1000, (7,)).astype(np.int32)
    _write_idx(tmp_path / "b", ints, 0x0C, ">i4")
    out = read_idx(tmp_path / "b")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, ints)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        read_idx(tmp_path / "missing.gz")
    (tmp_path / "magic").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetError):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x00")
    with pytest.raises(DatasetError):
        read_idx(tmp_path / "short")
    (tmp_path / "type").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetError):
        read_idx(tmp_path / "type")


def test_load_idx_images_layout(tmp_path: Path) -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", img, 0x08, ">u1")
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 7]), 0x08, ">u1")
    split = load_idx_images(tmp_path, "test")
    assert len(split) == 2
    assert split.labels.tolist() == [3, 7]
    np.testing.assert_array_equal(split.images, img)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3]), 0x08, ">u1")
    with pytest.raises(DatasetError):
        load_idx_images(tmp_path, "test")


@pytest.mark.skipif(not (data_root() / "mnist").is_dir(), reason="shared/data/mnist not present")
def test_mnist_shared_copy() -> None:
    test = load_mnist("test")
    assert test.images.shape == (10000, 28, 28)
    assert test.images.dtype == np.uint8
    assert test.labels.shape == (10000,)
    assert sorted(set(test.labels.tolist())) == list(range(10))
    assert int(test.images.max()) == 255
