"""ONNX export of each side: graph contents, parity with torch, dynamic batch, metadata,
reproducibility."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from export_test_models import small_model

from csideploy.errors import CsiDeployError, ShapeError
from csideploy.formats.onnx import (
    DECODER_IO,
    ENCODER_IO,
    OnnxRunner,
    check_opset,
    export_onnx,
    inspect_onnx,
)
from csideploy.transforms import linearize_pointwise_convs

METADATA = {"model": "clnet", "cr": "64", "role": "encoder", "codeword_length": "32"}


@pytest.fixture(scope="module")
def exported(clnet64, tmp_path_factory):
    """encoder.onnx and decoder.onnx of a CLNet CR 1/64 (kernel-1 convs linearized)."""
    out = tmp_path_factory.mktemp("onnx")
    encoder = linearize_pointwise_convs(clnet64.encoder).module
    decoder = linearize_pointwise_convs(clnet64.decoder).module
    enc = export_onnx(encoder, out / "encoder.onnx", role="encoder", input_name=ENCODER_IO[0],
                      output_name=ENCODER_IO[1], input_shape=(2, 32, 32), metadata=METADATA)
    dec = export_onnx(decoder, out / "decoder.onnx", role="decoder", input_name=DECODER_IO[0],
                      output_name=DECODER_IO[1], input_shape=(32,),
                      metadata={**METADATA, "role": "decoder"})
    return out, enc, dec


def test_interfaces_are_named_with_a_dynamic_batch(exported):
    _, enc, dec = exported
    assert [(t.name, t.shape, t.dtype) for t in enc.inputs] == [
        ("csi", ("batch", 2, 32, 32), "float32")
    ]
    assert [(t.name, t.shape) for t in enc.outputs] == [("codeword", ("batch", 32))]
    assert [(t.name, t.shape) for t in dec.inputs] == [("codeword", ("batch", 32))]
    assert [(t.name, t.shape) for t in dec.outputs] == [("csi_hat", ("batch", 2, 32, 32))]
    assert enc.opset == dec.opset == 18


def test_encoder_graph_holds_no_decoder_and_vice_versa(exported):
    _, enc, dec = exported
    named = [n for n in enc.initializer_names if "." in n]
    assert named and all(n.startswith("encoder.") for n in named)
    assert not any("decoder" in n or "replace_dfc" in n for n in enc.initializer_names)
    assert all(n.startswith("decoder.") for n in dec.initializer_names if "." in n)
    assert not any(n.startswith("encoder.") for n in dec.initializer_names)
    # CLNet's encoder: attention (ReduceMax/Mean, Sigmoid) and FC layers (Gemm: SE x2 +
    # the linearized replace_efc); the decoder: no attention, one Gemm, 1 + 2 x 6 convs.
    assert enc.op_counts["Gemm"] == 3 and enc.op_counts["ReduceMax"] == 1
    assert enc.op_counts["Conv"] == 6
    assert dec.op_counts["Gemm"] == 1 and dec.op_counts["Conv"] == 13
    assert "ReduceMax" not in dec.op_counts and "Sigmoid" not in dec.op_counts
    assert "BatchNormalization" not in enc.op_counts  # folded into the convolutions


def test_onnxruntime_matches_torch(exported, clnet64, eval_csi):
    out, _, _ = exported
    with torch.no_grad():
        codeword = clnet64.encoder(torch.from_numpy(eval_csi)).numpy()
        csi_hat = clnet64.decoder(torch.from_numpy(codeword)).numpy()
    onnx_codeword = OnnxRunner(out / "encoder.onnx")(eval_csi)
    onnx_csi_hat = OnnxRunner(out / "decoder.onnx")(codeword)
    assert np.abs(onnx_codeword - codeword).max() <= 1e-4
    assert np.abs(onnx_csi_hat - csi_hat).max() <= 1e-4
    assert np.abs(codeword).max() > 1e-2  # a meaningful comparison, not zeros


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch(exported, eval_csi, batch):
    out, _, _ = exported
    runner = OnnxRunner(out / "encoder.onnx")
    single = np.concatenate([runner(eval_csi[i : i + 1]) for i in range(batch)])
    batched = runner(eval_csi[:batch], batch_size=batch)
    assert batched.shape == (batch, 32)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_metadata_props_are_written_sorted(exported):
    out, enc, _ = exported
    model = onnx.load(str(out / "encoder.onnx"))
    keys = [p.key for p in model.metadata_props]
    assert keys == sorted(METADATA)
    assert enc.metadata == METADATA
    assert model.producer_name == "csideploy"


def test_export_is_byte_identical_and_free_of_provenance(exported, clnet64, tmp_path):
    out, enc, _ = exported
    encoder = linearize_pointwise_convs(clnet64.encoder).module
    again = export_onnx(encoder, tmp_path / "encoder.onnx", role="encoder",
                        input_name="csi", output_name="codeword", input_shape=(2, 32, 32),
                        metadata=METADATA)
    assert again.sha256 == enc.sha256
    assert (tmp_path / "encoder.onnx").read_bytes() == (out / "encoder.onnx").read_bytes()
    data = (out / "encoder.onnx").read_bytes()
    for trace in (b".py", b"stack_trace", b"/tmp", b"site-packages"):
        assert trace not in data
    model = onnx.load(str(out / "encoder.onnx"))
    assert all(not node.metadata_props and not node.doc_string for node in model.graph.node)


def test_crnet_exports_too(tmp_path, eval_csi):
    model = small_model("crnet", 32, seed=3)
    info = export_onnx(model.encoder, tmp_path / "e.onnx", role="encoder", input_name="csi",
                       output_name="codeword", input_shape=(2, 32, 32))
    with torch.no_grad():
        expected = model.encoder(torch.from_numpy(eval_csi)).numpy()
    assert np.abs(OnnxRunner(tmp_path / "e.onnx")(eval_csi) - expected).max() <= 1e-4
    assert info.outputs[0].shape == ("batch", 64)
    assert inspect_onnx(tmp_path / "e.onnx").sha256 == info.sha256


@pytest.mark.parametrize("opset", [13, 16, 99, True])
def test_unsupported_opsets_are_refused(opset):
    with pytest.raises(CsiDeployError, match="opset"):
        check_opset(opset)


def test_runner_names_a_wrong_shape(exported):
    out, _, _ = exported
    with pytest.raises(ShapeError, match="csi"):
        OnnxRunner(out / "encoder.onnx")(np.zeros((2, 2, 32, 16), np.float32))
