"""Every registered model keeps the zoo's contract (published figures: `test_zoo.py`). Driven by
the registry, so a family registered in `csideploy/models/zoo/` is covered without edits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_test_helpers import onnx_run

from csideploy.models import build, get_entry, list_models
from csideploy.models.registry import resolve_model_name

MODELS = list_models()


def _smallest(name: str) -> tuple[torch.nn.Module, int]:
    """The model at its highest reduction (fewest weights), seeded, in eval mode."""
    torch.manual_seed(0)
    cr = max(get_entry(name).crs)
    return build(name, cr), cr


@pytest.mark.parametrize("name", MODELS)
def test_forward_is_decoder_of_encoder_with_the_declared_codeword(name: str) -> None:
    model, _ = _smallest(name)
    x = torch.rand(3, *get_entry(name).input_spec.shape)
    with torch.no_grad():
        codeword = model.encoder(x)
        assert codeword.shape == (3, model.codeword_length)
        assert torch.equal(model(x), model.decoder(codeword))
    assert model(x).shape == x.shape


@pytest.mark.parametrize("name", MODELS)
def test_encoder_onnx_matches_torch(name: str, tmp_path: Path) -> None:
    model, _ = _smallest(name)
    x = torch.rand(2, *get_entry(name).input_spec.shape)
    with torch.no_grad():
        expected = model.encoder(x).numpy()
    (got,) = onnx_run(model.encoder, x, tmp_path / f"{name}.onnx")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=get_entry(name).onnx_tolerance, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_latent_variant_resolves_to_a_conv_model(name: str) -> None:
    entry = get_entry(name)
    if entry.latent == "conv":
        assert resolve_model_name(name, "conv") == name
    if entry.conv_variant_of:
        assert resolve_model_name(entry.conv_variant_of, "conv") == name
        assert get_entry(entry.conv_variant_of).latent == "fc"
