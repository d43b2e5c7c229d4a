"""SSQ, LSQ and LSZQ: values on the grid, clamping, and the straight-through gradients of
LORA eq. 31-33 (and Esser et al.'s scaled step-size gradient)."""

from __future__ import annotations

import math

import pytest
import torch

from csideploy.models.quantizers import (
    LearnedScaleQuantizer,
    LearnedScaleZeroQuantizer,
    SumOfSigmoidQuantizer,
    make_quantizer,
    round_ste,
)


def staircase(u: torch.Tensor, bits: int) -> torch.Tensor:
    """SSQ's hard limit by definition: qmin + number of thresholds (i + 0.5) below t."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    t = u * 2 ** (bits - 1)
    thresholds = torch.arange(qmin, qmax, dtype=torch.float64) + 0.5
    return qmin + (t.double().unsqueeze(-1) > thresholds).sum(-1).to(u.dtype)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_ssq_hard_is_the_sigmoid_staircase_limit(bits: int) -> None:
    q = SumOfSigmoidQuantizer(bits).eval()
    half = 2 ** (bits - 1)
    # Random inputs, inputs beyond [-1, 1], and inputs exactly on thresholds.
    u = torch.cat(
        [
            torch.rand(2000) * 2.4 - 1.2,
            (torch.arange(-half, half) + 0.5) / half,
            torch.tensor([-5.0, 5.0]),
        ]
    )
    out = q(u)
    assert torch.equal(out, staircase(u, bits))
    assert torch.equal(out, out.round())
    assert out.min() >= -half and out.max() <= half - 1
    assert float(q(torch.tensor([9.0]))) == half - 1  # clamped at the top level
    assert q.to_integer(u).dtype == torch.int8
    assert torch.equal(q.to_integer(u).float(), out)
    assert torch.allclose(q.dequantize(out), out / half)


def test_ssq_soft_matches_hard_between_thresholds_and_has_unit_mean_slope() -> None:
    q = SumOfSigmoidQuantizer(4, steepness=25.0).train()
    half = 8
    centres = torch.arange(-half, half, dtype=torch.float32) / half
    assert torch.allclose(q(centres), q.hard(centres), atol=1e-4)
    # The soft staircase is differentiable everywhere; between its first and last thresholds
    # its slope averages to one level per level step (d level / du = half_range on average).
    u = torch.linspace(-7.5 / half, 6.5 / half, 40001, requires_grad=True)
    q(u).sum().backward()
    grad = u.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad >= 0).all()
    assert float(grad.mean()) == pytest.approx(half, rel=0.02)


def test_ssq_straight_through_forward_is_hard_backward_is_soft() -> None:
    q = SumOfSigmoidQuantizer(3, straight_through=True).train()
    u = torch.linspace(-1, 1, 101, requires_grad=True)
    out = q(u)
    assert torch.equal(out.detach(), q.hard(u.detach()))
    out.sum().backward()
    soft_u = u.detach().clone().requires_grad_(True)
    q.soft(soft_u).sum().backward()
    assert torch.allclose(u.grad, soft_u.grad)


def test_round_ste_passes_gradient() -> None:
    x = torch.tensor([0.2, 1.5, -2.7], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y.detach(), torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def _lsq(bits: int, scale: float, *, grad_scale: bool = True) -> LearnedScaleQuantizer:
    q = LearnedScaleQuantizer(bits, grad_scale=grad_scale).train()
    q.set_parameters(scale)
    return q


def test_lsq_forward_is_on_the_grid_and_clamped() -> None:
    q = _lsq(4, 0.1)
    r = torch.linspace(-2, 2, 401)
    out = q(r).detach()
    levels = out / 0.1
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    assert float(levels.min()) == pytest.approx(-8) and float(levels.max()) == pytest.approx(7)
    inside = (r / 0.1 > -8) & (r / 0.1 < 7)
    assert torch.allclose(out[inside], torch.round(r[inside] / 0.1) * 0.1, atol=1e-6)
    q.eval()
    ints = q.to_integer(r)
    assert ints.dtype == torch.int8 and int(ints.min()) == -8 and int(ints.max()) == 7
    assert torch.allclose(ints.float() * 0.1, q(r).detach(), atol=1e-6)


@pytest.mark.parametrize("grad_scale", [True, False])
def test_lsq_backward_matches_esser_and_eq32(grad_scale: bool) -> None:
    scale = 0.1
    q = _lsq(4, scale, grad_scale=grad_scale)
    r = torch.tensor([[-2.0, -0.33, 0.04, 0.26, 0.69, 1.5]], requires_grad=True)
    out = q(r)
    out.sum().backward()
    v = r.detach() / scale
    inside = (v > -8) & (v < 7)
    # d r_hat / d r: 1 inside the clipping range, 0 outside.
    assert torch.equal(r.grad, inside.float())
    # d r_hat / d s: round(v) - v inside, the bound outside; times g = 1/sqrt(N * Qp).
    # The parameter is log s, so its gradient is s * (d loss / d s).
    expected = torch.where(inside, torch.round(v) - v, torch.clamp(v, -8, 7).round())
    g = 1.0 / math.sqrt(r.shape[1] * 7) if grad_scale else 1.0
    grad = q.log_scale.grad
    assert grad is not None and torch.isfinite(grad)
    assert float(grad) == pytest.approx(scale * g * float(expected.sum()), rel=1e-5)


def test_lsq_initialises_from_the_first_training_batch() -> None:
    q = LearnedScaleQuantizer(8).train()
    r = torch.randn(64, 32)
    q(r)
    assert bool(q.initialized)
    assert q.spec().scale == pytest.approx(2 * float(r.abs().mean()) / math.sqrt(127), rel=1e-5)
    assert [name for name, _ in q.named_parameters()] == ["log_scale"]
    before = q.spec().scale
    q(r * 10)
    assert q.spec().scale == before  # only once


def test_lszq_grid_zero_point_and_gradients() -> None:
    q = LearnedScaleZeroQuantizer(4, grad_scale=False).train()
    q.set_parameters(0.25, -1.0)
    assert q.spec().scale == pytest.approx(0.25) and q.spec().zero_point == pytest.approx(-1.0)
    r = torch.tensor([[-3.0, -0.9, 0.1, 0.62, 2.0, 4.0]], requires_grad=True)
    out = q(r)
    v = (r.detach() + 1.0) / 0.25
    inside = (v > 0) & (v < 15)
    expected = torch.clamp(v, 0, 15).round() * 0.25 - 1.0
    assert torch.allclose(out.detach(), expected, atol=1e-6)
    out.sum().backward()
    assert torch.equal(r.grad, inside.float())
    # eq. 33: d r_hat / d z = 0 inside, 1 outside (z = zero_level * unit, unit = 0.25).
    assert float(q.zero_level.grad) == pytest.approx(0.25 * float((~inside).sum()))
    # eq. 32: d r_hat / d s = round(v) - v inside, the bound (0 or 15) outside; the parameter
    # is log s, and z = zero_level * unit does not move with s.
    ds = torch.where(inside, torch.round(v) - v, torch.clamp(v, 0, 15).round())
    assert float(q.log_scale.grad) == pytest.approx(0.25 * float(ds.sum()), rel=1e-5)
    q.eval()
    ints = q.to_integer(r.detach())
    assert ints.dtype == torch.uint8
    assert torch.equal(ints.float(), torch.clamp(v, 0, 15).round())
    spec = q.spec()
    assert (spec.scheme, spec.bits, spec.qmin, spec.qmax, spec.dtype) == ("lszq", 4, 0, 15, "uint8")
    assert spec.scale == pytest.approx(0.25) and spec.zero_point == pytest.approx(-1.0)


def test_lszq_initialises_to_the_batch_range() -> None:
    q = LearnedScaleZeroQuantizer(8).train()
    r = torch.rand(16, 8) * 3 - 1
    q(r)
    assert [name for name, _ in q.named_parameters()] == ["log_scale", "zero_level"]
    assert q.spec().zero_point == pytest.approx(float(r.min()))
    assert q.spec().scale == pytest.approx(float(r.max() - r.min()) / 255, rel=1e-5)
    assert torch.allclose(q(r), r, atol=q.spec().scale / 2 + 1e-6)


def test_gradients_are_finite_for_extreme_inputs() -> None:
    for q in (LearnedScaleQuantizer(8), LearnedScaleZeroQuantizer(8)):
        q.train()
        r = torch.tensor([[0.0, 1e-30, -1e6, 1e6, 3.0]], requires_grad=True)
        q(r).sum().backward()
        grads = [r.grad, *(p.grad for p in q.parameters())]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_make_quantizer_and_bad_options() -> None:
    assert make_quantizer(None) is None
    assert isinstance(make_quantizer("lsq", 4), LearnedScaleQuantizer)
    assert isinstance(make_quantizer("lszq", 8), LearnedScaleZeroQuantizer)
    with pytest.raises(ValueError, match="unknown quantizer 'qat'"):
        make_quantizer("qat")
    with pytest.raises(ValueError, match="bits must be one of"):
        LearnedScaleQuantizer(12)
    with pytest.raises(ValueError, match="scale must be positive"):
        LearnedScaleQuantizer(8).set_parameters(0.0)
    with pytest.raises(ValueError, match="steepness must be positive"):
        SumOfSigmoidQuantizer(4, steepness=0)
