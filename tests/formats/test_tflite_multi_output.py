"""TFLite export of handset graphs with several outputs and integer outputs, run on LiteRT.

DualNet-MP's UE graph returns (magnitude int8, phase int8, sign uint8); LORA's returns one
int8 (LSQ) or uint8 (LSZQ) codeword. Integer outputs must come out of the file as raw integers
(no scale, no DEQUANTIZE) in every precision, named and ordered as torch returns them. Every
file is converted once per module and reused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from csideploy import runner
from csideploy.bundle.execute import run_artifact_outputs
from csideploy.formats.tflite import (
    TfliteArtifact,
    TfliteExportConfig,
    export_tflite,
    inspect_tflite,
)
from csideploy.models import build
from csideploy.models.ue_graph import flat_codeword
from csideploy.models.zoo import dualnet_mp, lora
from csideploy.models.zoo.dualnet_mp import CircularConv2d
from csideploy.quantize.tflite_pt2e import pt2e_export_tflite


def encode_csi_outputs(path, csi: np.ndarray) -> list[np.ndarray]:
    """Every output (N, M_k) of NCHW CSI as the export's gate runs a .tflite file: quantized
    outputs dequantized, integer outputs without a scale as their levels."""
    return [y.reshape(len(y), -1) for y in run_artifact_outputs("litert", path, csi)]


def encode_csi(path, csi: np.ndarray) -> np.ndarray:
    """The decoder's float codeword (N, M): every output as float32, concatenated."""
    return flat_codeword(run_artifact_outputs("litert", path, csi))


DUALNET_NAMES = ("magnitude", "phase", "sign")
DUALNET_SPECS = (("int8", (1, 256)), ("int8", (1, 128)), ("uint8", (1, 256)))
LORA_SCHEMES = {"lsq": ((0.01,), "int8"), "lszq": ((0.01, -1.2), "uint8")}
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _random_csi(n: int, seed: int) -> np.ndarray:
    """Uniform CSI in [0, 1]: every magnitude, phase and sign occurs."""
    return np.random.default_rng(seed).random((n, 2, 32, 32), dtype=np.float32)


def _torch_outputs(module: nn.Module, csi: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        result = module(torch.from_numpy(csi))
    tensors = result if isinstance(result, tuple) else (result,)
    return [t.numpy().reshape(len(csi), -1) for t in tensors]


def _level_gap(levels: np.ndarray, reference: np.ndarray) -> tuple[float, int, float]:
    """(fraction of entries that differ, max |diff|, mean |diff|), in integer levels."""
    diff = np.abs(levels.astype(np.int32) - reference.astype(np.int32))
    return float(np.mean(diff > 0)), int(diff.max()), float(diff.mean())


def _assert_same_levels(levels: np.ndarray, reference: np.ndarray) -> None:
    """Equal up to rounding ties: at most 1e-3 of the entries differ, and by one level."""
    assert levels.dtype == reference.dtype
    fraction, largest, _ = _level_gap(levels, reference)
    assert fraction <= 1e-3 and largest <= 1, (fraction, largest)


def _lora_ue(scheme: str) -> nn.Module:
    parameters, _ = LORA_SCHEMES[scheme]
    torch.manual_seed(1)
    model = build("lora", 16, quantizer=scheme, bits=8).eval()
    model.encoder.quantizer.set_parameters(*parameters)
    return lora.ue_encoder(model)


@pytest.fixture(scope="module")
def evaluation() -> np.ndarray:
    return _random_csi(64, seed=21)


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return _random_csi(32, seed=22)


@pytest.fixture(scope="module")
def graphs() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "dualnet": dualnet_mp.ue_encoder(build("dualnet-mp", 8).eval()),
        "lsq": _lora_ue("lsq"),
        "lszq": _lora_ue("lszq"),
    }


@pytest.fixture(scope="module")
def artifact(
    tmp_path_factory: pytest.TempPathFactory,
    graphs: dict[str, nn.Module],
    calibration: np.ndarray,
) -> Callable[..., TfliteArtifact]:
    """Convert on first request, then reuse: artifact(graph, precision, io=..., layout=...)."""
    cache: dict[tuple[str, str, str, str], TfliteArtifact] = {}
    out_dir = tmp_path_factory.mktemp("tflite-multi")

    def get(
        graph: str, precision: str, *, io: str = "int8", layout: str = "nchw"
    ) -> TfliteArtifact:
        key = (graph, precision, io, layout)
        if key not in cache:
            names = {"dualnet": DUALNET_NAMES, "lsq": ("codeword",)}.get(graph)
            cache[key] = pt2e_export_tflite(
                graphs[graph],
                out_dir / f"{graph}-{precision}-{io}-{layout}.tflite",
                precision=precision,
                calibration=calibration if precision == "int8" else None,
                io=io,
                layout=layout,
                output_names=names,
            )
        return cache[key]

    return get


# --- DualNet-MP: three integer outputs ------------------------------------------------------


def test_dualnet_fp32_outputs_are_named_typed_and_shaped(artifact):
    result = artifact("dualnet", "fp32")
    assert result.input.dtype == "float32" and result.input.name == "csi"
    promised = tuple((name, *spec) for name, spec in zip(DUALNET_NAMES, DUALNET_SPECS, strict=True))
    assert tuple((o.name, o.dtype, o.shape) for o in result.outputs) == promised
    assert all(o.scale is None and o.zero_point is None for o in result.outputs)
    assert result.output == result.outputs[0]
    assert inspect_tflite(result.path).outputs == result.outputs

    model = runner.open_model("litert", result.path, 1, 1)
    assert tuple(spec["name"] for spec in model.outputs) == DUALNET_NAMES
    assert [spec["dtype"] for spec in model.outputs] == ["int8", "int8", "uint8"]
    assert [spec["scale"] for spec in model.outputs] == [None] * 3
    summary = result.to_dict()
    assert [o["name"] for o in summary["outputs"]] == list(DUALNET_NAMES)
    assert summary["output"] == summary["outputs"][0]


def test_dualnet_fp32_levels_and_sign_bits_match_torch(artifact, graphs, evaluation):
    outputs = encode_csi_outputs(artifact("dualnet", "fp32").path, evaluation)
    magnitude, phase, sign = _torch_outputs(graphs["dualnet"], evaluation)
    assert [y.shape for y in outputs] == [(64, 256), (64, 128), (64, 256)]
    _assert_same_levels(outputs[0], magnitude)
    _assert_same_levels(outputs[1], phase)
    assert outputs[2].dtype == np.uint8
    np.testing.assert_array_equal(outputs[2], sign)
    assert set(np.unique(outputs[2])) == {0, 1}


def test_circular_padding_matches_torch(tmp_path, evaluation):
    """Wrap padding (slices + concatenations) feeding a valid convolution, as plain float."""
    torch.manual_seed(4)
    conv = CircularConv2d(2, 4, 7).eval()
    result = export_tflite(conv, tmp_path / "cconv.tflite", precision="fp32")
    assert {"SLICE", "CONCATENATION", "CONV_2D"} <= set(result.ops)
    assert result.output.shape == (1, 4, 32, 32)
    expected = _torch_outputs(conv, evaluation[:16])[0]
    np.testing.assert_allclose(
        encode_csi(result.path, evaluation[:16]), expected, rtol=0, atol=1e-5
    )


def test_dualnet_full_integer_keeps_integer_outputs(artifact, graphs, evaluation):
    result = artifact("dualnet", "int8")
    assert result.input.dtype == "int8" and result.input.scale > 0
    assert tuple((o.dtype, o.shape) for o in result.outputs) == DUALNET_SPECS
    assert all(o.scale is None for o in result.outputs)
    assert result.weight_dtypes == ("int8",)
    assert not WEIGHT_OPS & set(result.float_ops)
    # The levelling (scale, round, clamp) stays float in front of the casts.
    assert {"CAST", "CEIL", "MINIMUM", "MAXIMUM"} <= set(result.float_ops)
    # So does the feature math on the input (|H|, cos = re / |H|) before the first conv.
    assert {"SQRT", "DIV"} <= set(result.float_ops)

    model = runner.open_model("litert", result.path, 1, 1)
    assert [spec["scale"] for spec in model.outputs] == [None] * 3
    outputs = encode_csi_outputs(result.path, evaluation)
    magnitude, phase, sign = _torch_outputs(graphs["dualnet"], evaluation)
    # Loose bounds: the untrained branches see int8 features (measured: magnitude 2.5 % of
    # entries off, max 1 level; phase 29 %, max 3, mean 0.29; sign 0.02 %, the imaginary
    # parts within one input step of zero).
    assert [y.dtype for y in outputs] == [np.int8, np.int8, np.uint8]
    fraction, largest, mean = _level_gap(outputs[0], magnitude)
    assert fraction <= 0.05 and largest <= 2 and mean <= 0.05
    fraction, largest, mean = _level_gap(outputs[1], phase)
    assert fraction <= 0.45 and largest <= 6 and mean <= 0.5
    fraction, largest, _ = _level_gap(outputs[2], sign)
    assert fraction <= 2e-3 and largest <= 1


def test_dualnet_dynamic_range_runs(artifact, graphs, evaluation):
    result = artifact("dualnet", "dynamic")
    assert result.weight_dtypes == ("int8",) and result.input.dtype == "float32"
    assert tuple((o.dtype, o.shape) for o in result.outputs) == DUALNET_SPECS
    outputs = encode_csi_outputs(result.path, evaluation)
    expected = _torch_outputs(graphs["dualnet"], evaluation)
    for levels, reference in zip(outputs[:2], expected[:2], strict=True):
        fraction, largest, _ = _level_gap(levels, reference)
        assert fraction <= 0.2 and largest <= 1
    np.testing.assert_array_equal(outputs[2], expected[2])


def test_multi_output_runner_api(artifact, evaluation):
    path = artifact("dualnet", "fp32").path
    model = runner.open_model("litert", path, 1, 1)
    raw = model([evaluation[:1]])
    assert [y.shape for y in raw] == [(1, 256), (1, 128), (1, 256)]
    rows = runner.run_rows(model, evaluation[:3])
    one_by_one = [runner.run_rows(model, evaluation[i : i + 1]) for i in range(3)]
    for k, y in enumerate(rows):
        np.testing.assert_array_equal(y, np.concatenate([o[k] for o in one_by_one]))
    with pytest.raises(runner.Skip, match=r"outputs \['magnitude', 'phase', 'sign'\]"):
        run_artifact_outputs("litert", path, evaluation[:1], ["magnitude", "sign"])
    latency = runner.quick_latency("litert", path, 5, warmup=1)
    assert 0 < latency.min_us <= latency.p50_us


# --- LORA: one integer codeword -------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["lsq", "lszq"])
def test_lora_fp32_levels_match_torch(artifact, graphs, evaluation, scheme):
    result = artifact(scheme, "fp32")
    dtype = LORA_SCHEMES[scheme][1]
    assert (result.output.name, result.output.dtype, result.output.shape) == (
        "codeword",
        dtype,
        (1, 128),
    )
    assert result.output.scale is None
    (levels,) = encode_csi_outputs(result.path, evaluation)
    (reference,) = _torch_outputs(graphs[scheme], evaluation)
    _assert_same_levels(levels, reference)
    # encode_csi gives the same levels as float32 (what the decoder's codeword is built from).
    np.testing.assert_array_equal(encode_csi(result.path, evaluation), levels.astype(np.float32))


@pytest.mark.parametrize(("scheme", "io"), [("lsq", "int8"), ("lszq", "float")])
def test_lora_full_integer_codeword_stays_integer(artifact, graphs, evaluation, scheme, io):
    result = artifact(scheme, "int8", io=io)
    dtype = LORA_SCHEMES[scheme][1]
    assert result.input.dtype == ("int8" if io == "int8" else "float32")
    assert (result.output.dtype, result.output.scale) == (dtype, None)
    assert "FULLY_CONNECTED" not in result.float_ops
    (levels,) = encode_csi_outputs(result.path, evaluation)
    (reference,) = _torch_outputs(graphs[scheme], evaluation)
    assert levels.dtype == np.dtype(dtype)
    # Measured: 16.5 % of the levels off, mean 0.17; max 9, where the projection's int8
    # output saturates a few extreme values.
    fraction, largest, mean = _level_gap(levels, reference)
    assert fraction <= 0.3 and largest <= 16 and mean <= 0.3


@pytest.mark.parametrize("scheme", ["lsq", "lszq"])
def test_lora_dynamic_range_runs(artifact, graphs, evaluation, scheme):
    result = artifact(scheme, "dynamic")
    assert result.weight_dtypes == ("int8",) and result.output.scale is None
    (levels,) = encode_csi_outputs(result.path, evaluation)
    fraction, largest, _ = _level_gap(levels, _torch_outputs(graphs[scheme], evaluation)[0])
    assert fraction <= 0.2 and largest <= 1


def test_lora_nhwc_gives_the_nchw_levels(artifact, evaluation):
    nhwc = artifact("lsq", "fp32", layout="nhwc")
    assert nhwc.input.shape == (1, 32, 32, 2)
    np.testing.assert_array_equal(
        encode_csi_outputs(nhwc.path, evaluation)[0],
        encode_csi_outputs(artifact("lsq", "fp32").path, evaluation)[0],
    )


# --- output order and mixed outputs ---------------------------------------------------------


class ManyHeads(nn.Module):
    """Eleven outputs of equal shape and dtype, head k = projection + k."""

    def __init__(self, heads: int = 11) -> None:
        super().__init__()
        self.fc = nn.Linear(2048, 4)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.fc(x.flatten(1))
        return tuple(y + float(k) for k in range(self.heads))


class LevelsAndValue(nn.Module):
    """(integer levels of the projection, the float projection itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2048, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x.flatten(1))
        return torch.clamp(torch.round(y * 20), -128, 127).to(torch.int8), y


def test_outputs_keep_torch_order_and_names(tmp_path, evaluation):
    """Names sort opposite to torch order, and output_10 sorts before output_2: the file's
    signature and subgraph outputs still follow torch order."""
    torch.manual_seed(5)
    module = ManyHeads().eval()
    names = tuple(f"head_{chr(ord('k') - k)}" for k in range(11))  # head_k ... head_a
    result = export_tflite(module, tmp_path / "heads.tflite", precision="fp32", output_names=names)
    assert tuple(o.name for o in result.outputs) == names
    assert tuple(o.name for o in inspect_tflite(result.path).outputs) == names
    model = runner.open_model("litert", result.path, 1, 1)
    assert tuple(spec["name"] for spec in model.outputs) == names
    outputs = encode_csi_outputs(result.path, evaluation[:4])
    expected = _torch_outputs(module, evaluation[:4])
    for k, (y, reference) in enumerate(zip(outputs, expected, strict=True)):
        np.testing.assert_allclose(y, reference, rtol=0, atol=1e-4, err_msg=names[k])
        np.testing.assert_allclose(y - outputs[0], k, rtol=0, atol=1e-4)


@pytest.mark.parametrize("io", ["int8", "float"])
def test_full_integer_float_output_follows_io_integer_output_does_not(
    tmp_path, calibration, evaluation, io
):
    """The float output is int8 with a scale (io int8) or dequantized (io float); the integer
    output is the raw int8 levels either way, though the float value also feeds the levels."""
    torch.manual_seed(6)
    module = LevelsAndValue().eval()
    result = pt2e_export_tflite(
        module,
        tmp_path / f"mixed-{io}.tflite",
        precision="int8",
        calibration=calibration,
        io=io,
        output_names=("levels", "value"),
    )
    levels, value = result.outputs
    assert (levels.name, levels.dtype, levels.scale) == ("levels", "int8", None)
    assert value.name == "value"
    if io == "int8":
        assert value.dtype == "int8" and value.scale > 0
    else:
        assert value.dtype == "float32" and value.scale is None
    got_levels, got_value = encode_csi_outputs(result.path, evaluation[:8])
    want_levels, want_value = _torch_outputs(module, evaluation[:8])
    assert got_levels.dtype == np.int8 and got_value.dtype == np.float32
    noise = np.sum((got_value - want_value) ** 2)
    assert 10 * np.log10(np.sum(want_value**2) / noise) > 20
    fraction, _, mean = _level_gap(got_levels, want_levels)
    assert fraction <= 0.2 and mean <= 0.3


# --- errors ---------------------------------------------------------------------------------


class Int64Output(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1), (x.flatten(1) > 0.5).long()


@pytest.mark.parametrize(
    ("module", "names", "message"),
    [
        (LevelsAndValue(), None, "returns 2 outputs; pass output_names"),
        (LevelsAndValue(), ("a", "b", "c"), r"output_names has 3 names \(a, b, c\) but .* 2"),
        (nn.Linear(32, 4), ("a", "b"), "output_names has 2 names"),
        (Int64Output(), ("x", "bits"), "'bits' is torch.int64"),
    ],
)
def test_output_names_must_fit_the_module(tmp_path, module, names, message):
    with pytest.raises(ValueError, match=message):
        export_tflite(module.eval(), tmp_path / "x.tflite", precision="fp32", output_names=names)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("a", "a"), "must be distinct"),
        (("csi", "b"), "must differ from the output names"),
        ((), "at least one output"),
        (("ok", "not ok"), "output_names must be a non-empty identifier"),
        ("codeword", "sequence of names"),
    ],
)
def test_config_rejects_bad_output_names(names, message):
    with pytest.raises(ValueError, match=message):
        TfliteExportConfig("fp32", output_names=names)


def test_config_output_names_take_over_output_name():
    config = TfliteExportConfig("fp32", output_name="unused", output_names=["a", "b"])
    assert config.names == ("a", "b") and config.output_names == ("a", "b")
    assert TfliteExportConfig("fp32").names == ("codeword",)
