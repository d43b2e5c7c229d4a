"""Hard-sigmoid substitution: numerics, scope, functional calls, and an exported graph."""

from __future__ import annotations

import math

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from csideploy.errors import CsiDeployError, ShapeError
from csideploy.models import build
from csideploy.models.blocks import HardSigmoid
from csideploy.transforms import (
    find_sigmoids,
    hard_sigmoid_study,
    model_nmse_db,
    replace_sigmoid,
)


def _sigmoid_modules(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Sigmoid)]


def _fx_sigmoid_nodes(module: nn.Module) -> list[str]:
    graph = fx.symbolic_trace(module).graph
    functions = {torch.sigmoid, torch.sigmoid_, torch.special.expit, F.sigmoid}
    return [
        n.name
        for n in graph.nodes
        if (n.op == "call_function" and n.target in functions)
        or (n.op == "call_method" and n.target in ("sigmoid", "sigmoid_"))
    ]


def _onnx_ops(module: nn.Module, x: torch.Tensor) -> tuple[set[str], onnx.ModelProto]:
    program = torch.onnx.export(module.eval(), (x,), dynamo=True, external_data=False)
    proto = program.model_proto
    return {node.op_type for node in proto.graph.node}, proto


def test_hard_sigmoid_is_relu6_formula_and_torch_hardsigmoid_exactly() -> None:
    grid = torch.linspace(-10.0, 10.0, 200_001)
    out = HardSigmoid()(grid)
    assert torch.equal(out, F.relu6(grid + 3.0) / 6.0)
    assert float((out - F.hardsigmoid(grid)).abs().max()) == 0.0
    assert float(out[grid <= -3].max()) == 0.0 and float(out[grid >= 3].min()) == 1.0


def test_clnet_encoder_sigmoids_are_replaced_and_decoder_untouched() -> None:
    torch.manual_seed(0)
    model = build("clnet", 4)
    report = replace_sigmoid(model, scope="encoder")

    assert not report.nothing_to_replace
    assert [r.path for r in report.replaced] == ["encoder.sa.sigmoid", "encoder.se.fc.3"]
    assert {r.kind for r in report.replaced} == {"module"}
    new = report.model
    # Module scan, fx graph scan and the library's own scan agree: nothing left.
    assert _sigmoid_modules(new.encoder) == []
    assert _fx_sigmoid_nodes(new.encoder) == []
    assert find_sigmoids(new.encoder) == []
    assert isinstance(new.encoder.sa.sigmoid, HardSigmoid)
    # The input model is untouched.
    assert _sigmoid_modules(model.encoder) == ["sa.sigmoid", "se.fc.3"]
    # Same keys, same weights: only activations changed.
    assert new.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(new.state_dict()[key], value)
    x = torch.rand(4, 2, 32, 32)
    with torch.no_grad():
        codeword = model.encoder(x)
        assert torch.equal(new.decoder(codeword), model.decoder(codeword))
        assert not torch.equal(new.encoder(x), codeword)


def test_decoder_sigmoid_is_kept_for_encoder_scope_and_replaced_for_all() -> None:
    model = build("crnet", 16)
    encoder_only = replace_sigmoid(model, scope="encoder")
    assert _sigmoid_modules(encoder_only.model.decoder) == ["sigmoid"]
    everything = replace_sigmoid(model, scope="all")
    assert [r.path for r in everything.replaced] == ["decoder.sigmoid"]
    assert _sigmoid_modules(everything.model.decoder) == []
    assert find_sigmoids(everything.model.decoder) == []


def test_crnet_encoder_reports_nothing_to_replace() -> None:
    model = build("crnet", 8)
    report = replace_sigmoid(model, scope="encoder")
    assert report.nothing_to_replace
    assert report.replaced == ()
    assert "no sigmoid in the encoder" in report.message
    assert "crnet" in report.message
    assert report.as_dict()["nothing_to_replace"] is True
    x = torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(report.model(x), model(x))


class _Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = y.clone()
        z.sigmoid_()
        return x * torch.sigmoid(y) + F.sigmoid(y) - y.sigmoid() + z


class _FunctionalEncoder(nn.Module):
    """A user encoder that calls sigmoid in every functional spelling."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.gate = _Gate()
        self.fc = nn.Linear(2048, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.special.expit(self.gate(x)).flatten(1))


def _reference_hard(encoder: _FunctionalEncoder, x: torch.Tensor) -> torch.Tensor:
    y = encoder.gate.conv(x)
    gated = x * F.hardsigmoid(y) + F.hardsigmoid(y) - F.hardsigmoid(y) + F.hardsigmoid(y)
    return encoder.fc(F.hardsigmoid(gated).flatten(1))


def test_functional_sigmoid_calls_are_rewritten() -> None:
    torch.manual_seed(1)
    model = build("crnet", 32)
    model.encoder = _FunctionalEncoder(model.codeword_length)
    report = replace_sigmoid(model)

    kinds = sorted((r.path, r.kind, r.target) for r in report.replaced)
    assert kinds == sorted(
        [
            ("encoder", "function", "torch.special.expit"),
            ("encoder.gate", "function", "torch.sigmoid"),
            ("encoder.gate", "method", "Tensor.sigmoid"),
            ("encoder.gate", "method", "Tensor.sigmoid"),
            ("encoder.gate", "method", "Tensor.sigmoid_"),
        ]
    )
    new = report.model
    assert _fx_sigmoid_nodes(new.encoder) == []
    assert find_sigmoids(new.encoder) == []
    assert new.state_dict().keys() == model.state_dict().keys()
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(new.encoder(x), _reference_hard(model.encoder, x))
        assert torch.equal(new.decoder(new.encoder(x)), new(x))
    ops, _ = _onnx_ops(new.encoder, x[:1])
    assert "Sigmoid" not in ops


def test_only_the_calling_submodule_is_rewritten() -> None:
    model = build("crnet", 32)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = _Gate()
            self.fc = nn.Linear(2048, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.gate(x).flatten(1))

    model.encoder = Encoder()
    report = replace_sigmoid(model)
    assert report.rewritten_graphs == ("encoder.gate",)
    assert isinstance(report.model.encoder, Encoder)
    assert isinstance(report.model.encoder.gate, fx.GraphModule)


def test_substituted_clnet_encoder_exports_without_sigmoid() -> None:
    torch.manual_seed(2)
    model = build("clnet", 4)
    x = torch.rand(1, 2, 32, 32)
    ops_before, _ = _onnx_ops(model.encoder, x)
    assert "Sigmoid" in ops_before
    new = replace_sigmoid(model, scope="encoder").model
    ops, proto = _onnx_ops(new.encoder, x)
    assert "Sigmoid" not in ops
    assert "HardSigmoid" in ops or "Clip" in ops
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = new.encoder(x).numpy()
    assert abs(out - expected).max() < 1e-4


def test_bad_scope_and_model_without_halves_are_clear_errors() -> None:
    with pytest.raises(CsiDeployError, match="scope must be one of encoder, all"):
        replace_sigmoid(build("clnet", 4), scope="decoder")
    with pytest.raises(CsiDeployError, match="no `encoder` submodule"):
        replace_sigmoid(nn.Sequential(nn.Sigmoid()))


def _toy_csi(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    delay = torch.exp(-torch.arange(32.0) / 4.0)
    return (0.5 + 0.15 * torch.randn(n, 2, 32, 1, generator=g) * delay).clamp(0, 1)


def test_study_measures_before_after_and_finetuned() -> None:
    torch.manual_seed(0)
    model = build("clnet", 16)
    eval_x, train_x = _toy_csi(40, 1), _toy_csi(60, 2)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    result = hard_sigmoid_study(
        model, eval_x, train_x=train_x, finetune_epochs=2, lr=1e-3, batch_size=20
    )
    assert result.nmse_before_db == pytest.approx(model_nmse_db(model, eval_x), abs=1e-9)
    assert result.nmse_after_db != result.nmse_before_db
    assert result.nmse_after_db == pytest.approx(
        model_nmse_db(replace_sigmoid(model).model, eval_x), abs=1e-9
    )
    assert result.nmse_finetuned_db is not None and math.isfinite(result.nmse_finetuned_db)
    assert result.nmse_finetuned_db == pytest.approx(model_nmse_db(result.model, eval_x))
    assert result.finetune_epochs == 2 and result.finetune_samples == 60
    assert result.finetune_seconds is not None and result.finetune_seconds > 0
    assert result.replaced == ("encoder.sa.sigmoid (torch.nn.Sigmoid)",
                               "encoder.se.fc.3 (torch.nn.Sigmoid)")
    assert find_sigmoids(result.model.encoder) == []
    assert result.as_dict()["n_eval"] == 40
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key])


def test_study_without_finetune_and_with_nothing_to_replace() -> None:
    model = build("crnet", 16)
    x = _toy_csi(20, 3)
    result = hard_sigmoid_study(model, x.numpy())
    assert result.nothing_to_replace
    assert result.nmse_after_db == result.nmse_before_db
    assert result.nmse_finetuned_db is None and result.finetune_seconds is None
    with pytest.raises(CsiDeployError, match="pass train_x"):
        hard_sigmoid_study(model, x, finetune_epochs=1)
    with pytest.raises(ShapeError, match=r"eval_x: expected shape \(N, 2, 32, 32\)"):
        hard_sigmoid_study(model, torch.rand(4, 2048))


class _Branchy(nn.Module):
    """An encoder fx cannot trace (data-dependent branch)."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.gate = nn.Sigmoid()
        self.fc = nn.Linear(2048, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 10.0:
            x = -x
        gated = torch.sigmoid(x) if self.functional else self.gate(x)
        return self.fc(gated.flatten(1))


def test_untraceable_encoder_is_checked_by_a_forward_pass() -> None:
    model = build("crnet", 32)
    model.encoder = _Branchy(functional=False)
    report = replace_sigmoid(model)
    assert [r.path for r in report.replaced] == ["encoder.gate"]
    assert report.checked_by_forward == ("encoder",)
    model.encoder = _Branchy(functional=True)
    with pytest.raises(CsiDeployError, match=r"cannot trace encoder .* calls torch.sigmoid"):
        replace_sigmoid(model)
