"""INT8 ONNX encoders: static QDQ (calibrated, per-channel) and dynamic (MatMul/Gemm only)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from export_test_models import handmade_clnet, synthetic_csi
from onnx import numpy_helper

from csideploy.errors import DataError
from csideploy.formats.onnx import OnnxRunner, export_onnx
from csideploy.metrics import sqnr_db
from csideploy.quantize.diagnostics import float_ops, layer_sqnr
from csideploy.quantize.onnx_qdq import float_nodes, quantize_dynamic_onnx, quantize_static_onnx
from csideploy.transforms import linearize_pointwise_convs


@pytest.fixture(scope="module")
def float_encoder(clnet64, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant")
    export_onnx(linearize_pointwise_convs(clnet64.encoder).module, out / "encoder.onnx",
                role="encoder", input_name="csi", output_name="codeword",
                input_shape=(2, 32, 32))
    return out / "encoder.onnx"


@pytest.fixture(scope="module")
def calibration():
    return synthetic_csi(64, seed=5)


@pytest.fixture(scope="module")
def static(float_encoder, calibration, tmp_path_factory):
    work = tmp_path_factory.mktemp("static")
    graph = quantize_static_onnx(float_encoder, work / "q.onnx", calibration, workdir=work)
    return work / "q.onnx", graph


def test_static_graph_is_qdq_with_int8_per_channel_weights(static):
    path, graph = static
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    constants = {t.name: t for t in model.graph.initializer}
    weight = "encoder.replace_efc.weight_quantized"
    assert weight in graph.params.quantized_weights
    assert constants[weight].data_type == onnx.TensorProto.INT8
    scales = [numpy_helper.to_array(constants[n.input[1]]) for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] == weight]
    assert scales and scales[0].shape == (32,)  # one scale per output feature
    assert graph.params.mode == "static" and graph.params.per_channel
    assert graph.params.output is not None and graph.params.output.dtype == "int8"


def test_layers_reading_the_raw_csi_stay_float_by_default(static):
    path, graph = static
    readers = ("encoder.encoder1.conv3x3_bn/Conv", "encoder.encoder2/Conv")
    assert graph.params.excluded_nodes == readers
    assert graph.params.input is None  # the handset feeds float CSI
    model = onnx.load(str(path))
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "csi" for n in model.graph.node)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert set(readers) <= set(convs)
    assert all(not convs[name].input[1].endswith("_DequantizeLinear_Output") for name in readers)


def _feature_codeword_graph() -> onnx.GraphProto:
    """csi -> Sub -> Sqrt -> Conv -> Relu -> Flatten -> Gemm -> Tanh -> Mul -> Ceil -> Clip ->
    Cast: feature math, two learned layers, then a levelling codeword quantizer."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.float32(0.5), "half"),
        numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(size=(8, 4 * 30 * 30)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.float32(127.0), "levels"),
        numpy_helper.from_array(np.float32(-128.0), "lo"),
        numpy_helper.from_array(np.float32(127.0), "hi"),
    ]
    chain = [
        ("Sub", ["csi", "half"], "centred", {}),
        ("Sqrt", ["centred"], "root", {}),
        ("Conv", ["root", "conv_w"], "conv", {}),
        ("Relu", ["conv"], "relu", {}),
        ("Flatten", ["relu"], "flat", {}),
        ("Gemm", ["flat", "fc_w"], "fc", {"transB": 1}),
        ("Tanh", ["fc"], "tanh", {}),
        ("Mul", ["tanh", "levels"], "scaled", {}),
        ("Ceil", ["scaled"], "ceil", {}),
        ("Clip", ["ceil", "lo", "hi"], "clipped", {}),
        ("Cast", ["clipped"], "codeword", {"to": TensorProto.INT8}),
    ]
    nodes = [
        helper.make_node(op, inputs, [out], name=op, **attrs) for op, inputs, out, attrs in chain
    ]
    return helper.make_graph(
        nodes,
        "features",
        [helper.make_tensor_value_info("csi", TensorProto.FLOAT, [1, 2, 32, 32])],
        [helper.make_tensor_value_info("codeword", TensorProto.INT8, [1, 8])],
        inits,
    )


def test_feature_math_and_codeword_levelling_stay_float():
    graph = _feature_codeword_graph()
    # Learned layers (Conv, Gemm) and what lies between them are quantized; the Cast and the
    # Flatten only move data.
    assert float_nodes(graph) == ["Sub", "Sqrt", "Tanh", "Mul", "Ceil", "Clip"]
    assert float_nodes(graph, float_input=False) == ["Tanh", "Mul", "Ceil", "Clip"]


def test_layers_reading_the_csi_directly_are_the_clnet_float_nodes(float_encoder):
    graph = onnx.load(str(float_encoder)).graph
    assert float_nodes(graph) == ["encoder.encoder1.conv3x3_bn/Conv", "encoder.encoder2/Conv"]
    assert float_nodes(graph, float_input=False) == []


def test_quantized_input_records_its_scale(float_encoder, calibration, tmp_path):
    graph = quantize_static_onnx(float_encoder, tmp_path / "q.onnx", calibration,
                                 float_input=False, workdir=tmp_path)
    assert graph.params.excluded_nodes == ()
    assert graph.params.input is not None and graph.params.input.dtype == "int8"
    assert 0 < graph.params.input.scale <= 1 / 200  # CSI spans at most [0, 1]


def test_static_int8_tracks_the_float_encoder(static, clnet64, eval_csi):
    path, _ = static
    with torch.no_grad():
        expected = clnet64.encoder(torch.from_numpy(eval_csi)).numpy()
    assert sqnr_db(expected, OnnxRunner(path)(eval_csi)) > 10.0


def test_static_quantization_is_reproducible(float_encoder, calibration, static, tmp_path):
    path, _ = static
    quantize_static_onnx(float_encoder, tmp_path / "again.onnx", calibration, workdir=tmp_path)
    assert (tmp_path / "again.onnx").read_bytes() == path.read_bytes()


def test_attention_ops_stay_float_in_the_static_graph(static, tmp_path):
    path, _ = static
    left = float_ops(path, workdir=tmp_path)
    assert {"ReduceMax", "ReduceMean"} <= set(left)
    assert "Gemm" not in left  # every FC layer runs as an integer kernel


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(float_encoder, calibration, method, tmp_path):
    graph = quantize_static_onnx(float_encoder, tmp_path / "q.onnx", calibration,
                                 method=method, workdir=tmp_path)
    assert graph.params.calibration_method == method
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}


def test_static_needs_calibration(float_encoder, tmp_path):
    with pytest.raises(DataError, match="calibration"):
        quantize_static_onnx(float_encoder, tmp_path / "q.onnx",
                             np.zeros((0, 2, 32, 32), np.float32), workdir=tmp_path)


def test_dynamic_quantizes_fc_layers_only(float_encoder, tmp_path):
    graph = quantize_dynamic_onnx(float_encoder, tmp_path / "d.onnx", workdir=tmp_path)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "d.onnx")).graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops and "Conv" in ops
    assert "QuantizeLinear" not in ops
    assert any("replace_efc" in name for name in graph.params.quantized_weights)
    assert graph.params.op_types_to_quantize == ("MatMul", "Gemm")
    left = float_ops(tmp_path / "d.onnx", workdir=tmp_path)
    assert "Conv" in left and "Gemm" not in left and "MatMul" not in left


def test_layer_table_ranks_the_damaged_tensors_first(eval_csi, tmp_path):
    """Calibrated on constant CSI (0.5 = no channel), the ranges are useless."""
    model = handmade_clnet(32)
    export_onnx(linearize_pointwise_convs(model.encoder).module, tmp_path / "f.onnx",
                role="encoder", input_name="csi", output_name="codeword",
                input_shape=(2, 32, 32))
    broken = np.full((64, 2, 32, 32), 0.5, np.float32)
    graph = quantize_static_onnx(tmp_path / "f.onnx", tmp_path / "bad.onnx", broken,
                                 workdir=tmp_path)
    rows = layer_sqnr(graph.preprocessed_path, tmp_path / "bad.onnx", eval_csi,
                      workdir=tmp_path)
    ranked = [row.local_sqnr_db for row in rows if row.local_sqnr_db is not None]
    assert len(ranked) > 10 and ranked == sorted(ranked)
    assert rows[0].local_sqnr_db < 10.0 and rows[0].node.startswith("encoder.")
    codeword = next(row for row in rows if row.tensor == "codeword")
    assert codeword.sqnr_db < 10.0  # the damage reaches the codeword


def test_sqnr_db():
    x = np.ones(100)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0)
    assert sqnr_db(np.zeros(3), np.ones(3)) == float("-inf")
