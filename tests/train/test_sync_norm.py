"""`GlobalBatchNorm` swapped into a model and back; what a distributed run refuses up front.

The global statistics themselves are checked by the torchrun runs in `test_distributed.py`
(a 2-process CRNet, whose every BatchNorm is swapped, trains the single-process weights).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from csideploy.errors import DistributedError
from csideploy.models import build
from csideploy.train import TrainConfig, train
from csideploy.train.distributed import refuse_data_dependent_init
from csideploy.train.sync_norm import GlobalBatchNorm, swap_norms


def test_swap_shares_tensors_and_restores_the_original_modules() -> None:
    torch.manual_seed(0)
    model = build("crnet", 16)
    originals = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    keys = list(model.state_dict())
    restore = swap_norms(model)
    twins = [m for m in model.modules() if isinstance(m, GlobalBatchNorm)]
    assert len(twins) == len(originals) > 0
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert list(model.state_dict()) == keys
    assert all(
        t.weight is o.weight and t.running_var is o.running_var
        for t, o in zip(twins, originals, strict=True)
    )
    x = torch.rand(4, 2, 32, 32)
    model.train()
    model(x)  # outside a process group: a plain BatchNorm, updating the shared buffers
    assert all(int(o.num_batches_tracked) == 1 for o in originals)
    restore()
    assert [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == originals
    assert not any(isinstance(m, GlobalBatchNorm) for m in model.modules())


def test_quantizer_initialised_from_the_first_batch_is_refused() -> None:
    fresh = build("lora", 4, quantizer="lsq")
    with pytest.raises(DistributedError, match="sets its scale from the first batch"):
        refuse_data_dependent_init(fresh)
    refuse_data_dependent_init(build("lora", 4))  # no quantizer: nothing to refuse


def test_two_stage_recipe_is_refused_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Refused from torchrun's variables alone, before data is read or a rendezvous starts."""
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_PORT": "29500"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "m.pt"
    with pytest.raises(DistributedError, match="two-stage recipe runs in one process"):
        train("dualnet-mp", 8, tmp_path / "absent", TrainConfig(epochs=1), out_path=out)
    assert list(tmp_path.iterdir()) == []
