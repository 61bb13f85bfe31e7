"""Models of other shapes on the emulated co-processor (firmware/odt-emu).

The firmware's model is an MLP whose shape comes from the blob, within a compile-time capacity
(`odt_core::models::FirmwareMlp`, `terrain_odt.model.blob.FIRMWARE_CAPACITY`). Here another robot's
model (90 inputs, hidden 32-16, 4 classes, made by `terrain_odt.model.toolbox.convert` from random
data) runs on `odt-emu` from `--model` and by upload, trains and infers over the link bit for
bit like the numpy reference, and blobs over the capacity are refused with the loader's reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from terrain_odt.link import BlobErrorCode, ErrorCode, OdtClient, RemoteError, SetParams
from terrain_odt.link.emulator import EmulatorError, emulator
from terrain_odt.model.blob import (
    FIRMWARE_CAPACITY,
    LayerDesc,
    OverCapacity,
    decode_blob,
)
from terrain_odt.model.qnn import QModel, TrainConfig
from terrain_odt.model.toolbox import convert, load_sidecar, quantize_with_sidecar

ROOT = Path(__file__).resolve().parent.parent
N_IN, HIDDEN, CLASSES = 90, (32, 16), 4
PARAMS = SetParams(enabled=True, lr_m=1 << 14, lr_e=-20, modes=(2, 2, 2), seed=0x2545_F491)


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Another robot's model and data: 90 raw features, 4 terrains."""
    rng = np.random.default_rng(4)
    centers = rng.normal(0.0, 1.5, (CLASSES, N_IN))
    y = rng.integers(0, CLASSES, 600)
    x = centers[y] + rng.normal(0.0, 1.0, (600, N_IN))
    out = tmp_path_factory.mktemp("robot") / "robot.odtm"
    res = convert(
        x[:400],
        y[:400],
        hidden=HIDDEN,
        seed=2,
        out=out,
        epochs=30,
        class_names=["ASPHALT", "GRASS", "GRAVEL", "SAND"],
        source_windows=False,
    )
    assert res.blob_path is not None and res.sidecar_path is not None
    side = load_sidecar(res.sidecar_path)
    return {
        "blob": res.blob_path.read_bytes(),
        "path": res.blob_path,
        "side": side,
        "xq": quantize_with_sidecar(x[400:], side),
        "y": y[400:],
    }


def reference(blob: bytes) -> QModel:
    """The numpy reference in the firmware's state after loading `blob` and `PARAMS`."""
    m = QModel.from_blob(blob)
    m.set_config(TrainConfig(PARAMS.lr_m, PARAMS.lr_e, ("all",) * 3, 1, None, PARAMS.seed))
    return m


def test_robot_model_is_not_the_terrain_shape_and_fits(robot: dict[str, Any]) -> None:
    b = decode_blob(robot["blob"], capacity=FIRMWARE_CAPACITY)
    assert [d.dims[:2] for d in b.layers] == [(90, 32), (32, 16), (16, 4)]


def test_other_shape_trains_and_infers_over_the_link_like_the_reference(
    emu_bin: Path, robot: dict[str, Any]
) -> None:
    xq, y = robot["xq"], robot["y"]
    ref = reference(robot["blob"])
    with emulator(emu_bin, model=robot["path"]) as emu, OdtClient(emu.url, baudrate=0) as odt:
        info = odt.info
        assert info is not None
        assert (info.input_len, info.classes) == (N_IN, CLASSES)
        assert info.model_id == robot["side"]["model_id"]
        assert info.model_hash == ref.state_crc32()
        assert info.model_ram > 0
        odt.set_params(PARAMS)
        # inference: the reference's class and probabilities
        for x in xq[:8]:
            pred = odt.infer(x)
            logits, _ = ref.forward(x, count=False)
            assert pred.predicted == int(np.argmax(logits))
            assert len(pred.scores_q15) == CLASSES
        # training: every prequential prediction and loss, then the trained model, bit for bit
        res = [f.result(20) for f in odt.train_many(xq, y)]
        want = [ref.train_step(x, int(lab)) for x, lab in zip(xq, y, strict=True)]
        assert [r.pred for r in res] == [w.pred for w in want]
        assert [r.loss_q15 for r in res] == [w.loss_q15 for w in want]
        assert odt.hello().model_hash == ref.state_crc32()
        assert odt.download_model() == ref.to_blob()
        st = odt.stats()
        assert st.train_steps == len(y) and st.preq_correct > len(y) // 2


def test_upload_switches_between_shapes(emu_bin: Path, robot: dict[str, Any]) -> None:
    terrain = (ROOT / "models" / "borealtc_imu_mlp.odtm").read_bytes()
    with emulator(emu_bin) as emu, OdtClient(emu.url, baudrate=0) as odt:
        assert odt.info is not None and odt.info.input_len == 102
        info = odt.upload_model(robot["blob"])
        assert (info.input_len, info.classes) == (N_IN, CLASSES)
        assert info.model_hash == reference(robot["blob"]).state_crc32()
        x = robot["xq"][0]
        assert 0 <= odt.infer(x).predicted < CLASSES
        odt.train(x, 3).result(10)
        with pytest.raises(ValueError):
            odt.train(x, 4)  # the client checks labels against INFO
        odt.save()
        info = odt.upload_model(terrain)
        assert (info.input_len, info.classes) == (102, 5)
        odt.restore()  # the saved 90-input model comes back from flash
        info = odt.hello()
        assert (info.input_len, info.classes) == (N_IN, CLASSES)
        assert odt.info is not None and odt.info.input_len == N_IN


def over_capacity_blob() -> bytes:
    """A valid blob with 300 inputs (the firmware takes at most 256)."""
    from tools.gen_golden import quantized

    return quantized([LayerDesc.dense(300, 16, relu=True), LayerDesc.dense(16, 4)], 5)


def test_over_capacity_blob_is_refused_with_the_reason(emu_bin: Path, tmp_path: Path) -> None:
    blob = over_capacity_blob()
    with pytest.raises(OverCapacity, match="300 inputs > capacity 256"):
        decode_blob(blob, capacity=FIRMWARE_CAPACITY)
    path = tmp_path / "big.odtm"
    path.write_bytes(blob)
    # at start: the emulator's own reason, not a missing banner
    with (
        pytest.raises(EmulatorError, match="300 inputs > capacity 256") as exc,
        emulator(emu_bin, model=path),
    ):
        pass
    assert "not a valid model blob for this firmware" in str(exc.value)
    assert "exit status 2" in str(exc.value)
    # by upload: ERROR(BAD_MODEL, TOO_MANY_INPUTS), and the running model is unchanged
    with emulator(emu_bin) as emu, OdtClient(emu.url, baudrate=0) as odt:
        before = odt.hello()
        with pytest.raises(RemoteError) as err:
            odt.upload_model(blob)
        assert err.value.code == ErrorCode.BAD_MODEL
        assert err.value.detail == BlobErrorCode.TOO_MANY_INPUTS
        assert "TOO_MANY_INPUTS" in str(err.value)
        after = odt.hello()
        assert (after.model_hash, after.input_len) == (before.model_hash, before.input_len)
