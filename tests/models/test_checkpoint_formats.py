"""Two more checkpoint formats: the CLLWCsiNet authors' trainer dict, and the original CsiNet
Keras weights (.h5), which load through h5py alone, strictly, with clear errors.

The .h5 files are written here in Keras' HDF5 weight layout (`layer_names`, one group per layer
with `weight_names`, datasets `conv2d_1/kernel:0` ...), Keras shapes: Conv2D kernel
(kh, kw, in, out), Dense kernel (in, out), BatchNormalization over the 32 delay columns.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from csideploy.errors import CheckpointError
from csideploy.models import build
from csideploy.models.checkpoint import load_checkpoint
from csideploy.models.keras_h5 import _BATCH_NORMS, _CONVS, _DENSES


def _random_csinet(cr: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build("csinet", cr)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) * 0.2 + (0.5 if "running_var" in key else 0))
    return model.eval()


def write_keras_h5(
    path: Path, model: torch.nn.Module, *, whole_model: bool = False, first_index: int = 1
) -> None:
    """`model`'s weights in the layout Keras 2.0.9 writes for CsiNet."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    layers: list[tuple[str, dict[str, np.ndarray]]] = []
    for i, key in enumerate(_CONVS):
        kernel = state[f"{key}.weight"].transpose(2, 3, 1, 0)  # (out,in,kh,kw) -> (kh,kw,in,out)
        weights = {"kernel": kernel, "bias": state[f"{key}.bias"]}
        layers.append((f"conv2d_{i + first_index}", weights))
    for i, key in enumerate(_BATCH_NORMS):
        names = {
            "gamma": "weight",
            "beta": "bias",
            "moving_mean": "running_mean",
            "moving_variance": "running_var",
        }
        weights = {keras: state[f"{key}.{ours}"] for keras, ours in names.items()}
        layers.append((f"batch_normalization_{i + first_index}", weights))
    for i, key in enumerate(_DENSES):
        layers.append(
            (
                f"dense_{i + first_index}",
                {"kernel": state[f"{key}.weight"].T, "bias": state[f"{key}.bias"]},
            )
        )
    with h5py.File(path, "w") as h5:
        root = h5.create_group("model_weights") if whole_model else h5
        root.attrs["layer_names"] = [name.encode() for name, _ in layers] + [b"input_1"]
        root.attrs["keras_version"] = b"2.0.9"
        root.attrs["backend"] = b"tensorflow"
        root.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for name, weights in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w in weights]
            for w, value in weights.items():
                group.create_dataset(f"{name}/{w}:0", data=value.astype(np.float32))


@pytest.mark.parametrize("whole_model", [False, True])
def test_keras_csinet_weights_load_and_reconstruct_like_the_torch_model(
    tmp_path: Path, whole_model: bool
) -> None:
    reference = _random_csinet(16)
    path = tmp_path / "model_CsiNet_indoor_dim128.h5"
    write_keras_h5(path, reference, whole_model=whole_model)
    loaded = load_checkpoint(path)
    assert (loaded.name, loaded.cr, loaded.source_format) == ("csinet", 16, "keras-h5")
    assert loaded.metadata["keras_version"] == "2.0.9"
    x = torch.rand(4, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference(x), rtol=0, atol=0)
    bn = loaded.model.encoder.conv_bn.bn.bn
    assert bn.num_features == 32 and bn.eps == 1e-3  # per delay column, Keras' default eps


def test_layer_numbers_need_not_start_at_one(tmp_path: Path) -> None:
    reference = _random_csinet(32, seed=1)
    path = tmp_path / "later_session.h5"
    write_keras_h5(path, reference, first_index=9)  # conv2d_9 ... conv2d_16: numeric order
    loaded = load_checkpoint(path, model="csinet", cr=32)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)


def test_wrong_layouts_name_the_group_dataset_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    write_keras_h5(path, _random_csinet(16))
    with h5py.File(path, "a") as h5:
        data = h5["conv2d_3/conv2d_3/kernel:0"][()]
        del h5["conv2d_3/conv2d_3/kernel:0"]
        h5["conv2d_3"].create_dataset("conv2d_3/kernel:0", data=data[:, :, :4, :])
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"{path}: conv2d_3 gives decoder.refine1.body.2.conv.weight shape (16, 4, 3, 3)"
        ),
    ):
        load_checkpoint(path)

    with h5py.File(path, "a") as h5:
        del h5["dense_2"]
    with pytest.raises(CheckpointError, match=r"1 dense_\* weight groups \(dense_1\), CsiNet has"):
        load_checkpoint(path)

    other = tmp_path / "bn.h5"
    write_keras_h5(other, _random_csinet(16))
    with h5py.File(other, "a") as h5:
        group = h5["batch_normalization_2"]
        kept = [str(n) for n in group.attrs["weight_names"] if "gamma" not in str(n)]
        group.attrs["weight_names"] = [n.encode() for n in kept]
    with pytest.raises(CheckpointError, match=r"batch_normalization_2: no gamma weight"):
        load_checkpoint(other)

    with pytest.raises(CheckpointError, match=r"Keras \.h5 file of CsiNet; --model crnet"):
        load_checkpoint(other, model="crnet")


def test_a_truncated_or_non_keras_hdf5_file_is_a_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.h5"
    write_keras_h5(good, _random_csinet(16))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read {truncated} as a Keras")):
        load_checkpoint(truncated)
    plain = tmp_path / "data.h5"
    with h5py.File(plain, "w") as h5:
        h5["HT"] = np.zeros((2, 2048))
    with pytest.raises(CheckpointError, match=r"0 conv2d_\* weight groups \(none\), CsiNet has 8"):
        load_checkpoint(plain)


def test_the_cllwcsinet_authors_trainer_dict_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("cllwcsinet", 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 2, 32, 32)).square().mean().backward()
    optimizer.step()
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100)
    path = tmp_path / "cllwcsinet_cr8.pth"
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "epoch": 499,
            "optimizer_state_dict": optimizer.state_dict(),
            "lr_state_dict": schedule.state_dict(),
        },
        path,
    )
    loaded = load_checkpoint(path)
    assert (loaded.name, loaded.cr, loaded.source_format) == ("cllwcsinet", 8, "trainer-dict")
    assert loaded.metadata["epoch"] == 499
    assert loaded.metadata["not_loaded"] == ["optimizer_state_dict", "lr_state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
