"""Every registered model matches the parameter counts and MACs it declares as published."""

from __future__ import annotations

import pytest
import torch

from csideploy.errors import UnknownModelError
from csideploy.models import build, get_entry, list_models
from csideploy.models.stats import count_macs, count_params, figures

PUBLISHED = [(name, cr) for name in list_models() for cr in get_entry(name).published]


def test_registry_lists_the_paper_models() -> None:
    assert {"csinet", "crnet", "clnet"} <= set(list_models())


@pytest.mark.parametrize(("name", "cr"), PUBLISHED)
def test_params_and_macs_match_published(name: str, cr: int) -> None:
    model = build(name, cr)
    published = get_entry(name).published[cr]
    row = figures(model)
    if published.params_total is not None:
        assert row.params_total == published.params_total
    if published.params_encoder is not None:
        assert row.params_encoder == published.params_encoder
    if published.macs_encoder_m is not None:
        assert round(row.macs_encoder / 1e6, 3) == pytest.approx(published.macs_encoder_m)
    if published.macs_total_m is not None:
        # Published with two decimals, not consistently rounded (3.287M is listed as 3.28M).
        assert abs(row.macs_total / 1e6 - published.macs_total_m) < 0.01
    # Weights shared by both sides (LORA) are counted once in the total.
    assert max(row.params_encoder, row.params_decoder) <= row.params_total
    assert row.params_total <= row.params_encoder + row.params_decoder
    assert row.codeword_length == get_entry(name).codeword_length(cr)


def test_csinet_totals_match_cllwcsinet_table() -> None:
    totals = {cr: count_params(build("csinet", cr)) for cr in (4, 8, 16)}
    # The table lists thousands, truncated.
    assert {cr: n // 1000 for cr, n in totals.items()} == {4: 2103, 8: 1054, 16: 530}


def test_macs_counts_only_conv_and_linear() -> None:
    layer = torch.nn.Sequential(torch.nn.Linear(10, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(3))
    assert count_macs(layer.eval(), torch.zeros(1, 10)) == 30


def test_unknown_model_and_cr_are_clear_errors() -> None:
    with pytest.raises(UnknownModelError, match=r"known models: .*clnet"):
        build("nope", 4)
    with pytest.raises(UnknownModelError, match="no CR 1/5"):
        build("clnet", 5)


def test_hard_sigmoid_is_exact_and_passes_gradient_when_saturated() -> None:
    from csideploy.models.blocks import SATURATED_GRADIENT, HardSigmoid

    x = torch.linspace(-6, 6, 121, requires_grad=True)
    layer = HardSigmoid().train()
    y = layer(x)
    assert torch.equal(y, torch.nn.functional.hardsigmoid(x.detach()))
    y.sum().backward()
    inside = (x.detach() > -3) & (x.detach() < 3)
    assert torch.allclose(x.grad[inside], torch.full_like(x.grad[inside], 1 / 6))
    assert torch.allclose(x.grad[~inside], torch.full_like(x.grad[~inside], SATURATED_GRADIENT / 6))
    with torch.no_grad():
        assert torch.equal(layer.eval()(x), y)
