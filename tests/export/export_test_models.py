"""Shared helpers for the export tests: small models with non-trivial BatchNorm, CSI data."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from csideploy.models import CsiAutoencoder, build


def perturb_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folding them into convolutions matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.normal_(0.0, 0.2, generator=generator)
                layer.running_var.uniform_(0.5, 2.0, generator=generator)
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.normal_(0.0, 0.2, generator=generator)
    return module.eval()


def small_model(name: str = "clnet", cr: int = 64, seed: int = 0) -> CsiAutoencoder:
    """An untrained zoo model with seeded weights and perturbed BatchNorm."""
    torch.manual_seed(seed)
    model = build(name, cr)
    perturb_batchnorm(model, seed)
    return model


def synthetic_csi(n: int, seed: int) -> np.ndarray:
    from csideploy.calibration.synthetic import generate

    return generate(n, scenario="indoor", seed=seed)


def _identity_bn(bn: nn.BatchNorm2d, bias: float = 0.0) -> None:
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) == 1
    bn.weight.fill_(1.0)
    bn.bias.fill_(bias)


@torch.no_grad()
def handmade_clnet(cr: int = 32, samples: int = 1000, seed: int = 0) -> CsiAutoencoder:
    """A CLNet whose weights are set, not trained, to reconstruct CSI like a trained one.

    Encoder: the 1x1 "complex input" path passes the two CSI channels through, centred (BN
    mean 0.5; SE gate at a constant 0.5; the spatial-attention path muted), and
    `replace_efc` keeps the entries that carry the most energy in synthetic CSI (angular-delay
    CSI is sparse). Decoder: `replace_dfc` puts them back, the convolutions are identities,
    the CRBlocks add 0 and then -3, and the hard-sigmoid returns the CSI (negative deviations
    shrunk by the LeakyReLUs). Its NMSE is a few dB below zero, so a damaged codeword shows up
    in the NMSE the way it does for a trained model.
    """
    model = build("clnet", cr)
    m = model.codeword_length
    data = synthetic_csi(samples, seed=seed).reshape(samples, -1) - 0.5
    strongest = np.sort(np.argsort((data**2).mean(axis=0))[::-1][:m])
    basis = torch.zeros(2048, m)
    basis[torch.from_numpy(strongest), torch.arange(m)] = 1.0

    for p in model.parameters():
        p.zero_()
    enc, dec = model.encoder, model.decoder
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            _identity_bn(layer)
    enc.encoder2.conv.weight[0, 0] = 1.0
    enc.encoder2.conv.weight[1, 1] = 1.0
    enc.encoder2.bn.running_mean.fill_(0.5)  # centred: csi - 0.5
    enc.encoder_conv.conv1x1_bn.conv.weight[0, 2] = 1.0  # channels 2, 3 = encoder2's 0, 1
    enc.encoder_conv.conv1x1_bn.conv.weight[1, 3] = 1.0
    enc.replace_efc.weight[:, :, 0] = 2.0 * basis.T  # features: 0.5 * (csi - 0.5), leaky

    dec.replace_dfc.weight[:, :, 0] = 6.0 * basis.T  # ConvTranspose1d weight is (in, out, 1)
    dec.replace_dfc.bias[:] = 3.0
    dec.decoder_feature.conv5x5_bn.conv.weight[0, 0, 2, 2] = 1.0
    dec.decoder_feature.conv5x5_bn.conv.weight[1, 1, 2, 2] = 1.0
    _identity_bn(dec.decoder_feature.CRBlock2.conv1x1.bn, bias=-3.0)
    return model.eval()
