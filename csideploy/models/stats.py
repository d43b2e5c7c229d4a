"""Model figures: parameter counts and Conv + Linear multiply-accumulates.

MACs are counted by `torch.utils.flop_counter` on a batch-1 forward pass (it counts
convolutions and matrix products as 2 FLOPs per multiply-accumulate); BatchNorm, activations
and pooling are not counted, which is the convention of the papers' tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from csideploy.models.registry import CsiAutoencoder, build, get_entry
from csideploy.models.zoo_weights import find_shipped


def count_params(module: nn.Module) -> int:
    """Learnable parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, *example: torch.Tensor) -> int:
    """Conv + Linear multiply-accumulates of one forward pass on `example` (all inputs)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*example)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class ModelFigures:
    """One row of `csideploy models`."""

    name: str
    cr: int
    params_total: int
    params_encoder: int
    params_decoder: int
    macs_encoder: int
    macs_total: int
    codeword_length: int
    weights: str | None = None
    """Scenario of the weights the package ships for this (model, CR), or None."""
    nmse_builtin_db: float | None = None
    """Shipped weights' NMSE on the built-in evaluation set of their scenario."""
    nmse_cost2100_db: float | None = None
    """Shipped weights' NMSE on COST2100-model indoor data (indoor weights only)."""

    def as_dict(self) -> dict[str, int | str | float | None]:
        return asdict(self)


def figures(model: CsiAutoencoder) -> ModelFigures:
    """Params and batch-1 MACs of a built model."""
    entry = get_entry(model.model_name)
    example = torch.zeros(1, *entry.input_spec.shape)
    shipped = find_shipped(model.model_name, model.cr)
    return ModelFigures(
        name=model.model_name,
        cr=model.cr,
        params_total=count_params(model),
        params_encoder=count_params(model.encoder),
        params_decoder=count_params(model.decoder),
        macs_encoder=count_macs(model.encoder, example),
        macs_total=count_macs(model, example),
        codeword_length=model.codeword_length,
        weights=None if shipped is None else shipped.scenario,
        nmse_builtin_db=None if shipped is None else shipped.nmse_db("builtin"),
        nmse_cost2100_db=None if shipped is None else shipped.nmse_db("cost2100"),
    )


def zoo_figures(names: list[str] | None = None) -> list[ModelFigures]:
    """Figures of every (model, CR) in the zoo, or of the named models."""
    from csideploy.models.registry import list_models

    rows = []
    for name in names or list_models():
        for cr in get_entry(name).crs:
            rows.append(figures(build(name, cr)))
    return rows
