"""The int8 forms of one FC layer of an exported float ONNX encoder, side by side.

For the FC layer `--node` of `encoder.onnx` in an export directory, this writes the encoder
with only that layer in int8, in each form ONNX Runtime offers, and prints its NMSE loss
against the float model (float torch decoder), codeword SQNR and reconstruction fidelity
against float, size, and latency relative to the float file (interleaved in this process,
1 thread, batch 1, medians of `--repeats` rounds and their range):

- static QDQ, per-channel weights, per-tensor input range calibrated with MinMax;
- dynamic per-tensor (`quantize_dynamic`: DynamicQuantizeLinear + MatMulInteger);
- blockwise (`csideploy.quantize.blockwise_fc`: MatMulNBits, 8-bit weights, int8 input
  quantized per block at run time) for each `--blocks` size.

Evaluation on built-in indoor CSI (seed 2002), calibration on built-in indoor CSI (seed
1001), as `csideploy export` does by default. Only prints.

    csideploy export --model clnet --int8 --format onnx --out /tmp/cr4
    python benchmarks/int8_fc_forms.py /tmp/cr4 --model clnet
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from int8_peers import interleaved

from csideploy.calibration import synthetic
from csideploy.formats.onnx import OnnxRunner
from csideploy.gates.numerics import encoder_numerics, float_reference
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.steps import load_step, split_step
from csideploy.quantize import blockwise_fc
from csideploy.quantize import onnx_qdq as q


def forms(float_path: Path, node: str, blocks: list[int], work: Path) -> dict[str, Path]:
    """The encoder with `node` alone in int8, one file per form."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = q.preprocess(float_path, work / "prepared.onnx")
    files = {"float": float_path}
    static = work / "static.onnx"
    calibration = synthetic.default_calibration(256)
    q.quantize_static_onnx(
        prepared, static, calibration, workdir=work, nodes=[node], preprocessed=True
    )
    files["static QDQ, per-tensor input"] = static
    split = onnx.load(str(prepared))
    matmul = blockwise_fc.split_gemm(split, node)  # quantize_dynamic takes MatMul, not Gemm
    onnx.save(split, str(work / "split.onnx"))
    dynamic = work / "dynamic.onnx"
    quantize_dynamic(
        str(work / "split.onnx"), str(dynamic), nodes_to_quantize=[matmul],
        op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
    )  # fmt: skip
    files["dynamic per-tensor (MatMulInteger)"] = dynamic
    for block in blocks:
        path = work / f"block{block}.onnx"
        model = blockwise_fc.to_blockwise(onnx.load(str(prepared)), [node], block_size=block)
        onnx.save(model, str(path))
        files[f"blockwise {block} (MatMulNBits)"] = path
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--model", default="clnet")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--node", default="encoder.replace_efc/Gemm")
    parser.add_argument("--blocks", default="16,32,64,128,256")
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="int8-fc-forms-"))
    files = forms(
        args.export_dir / "encoder.onnx", args.node, [int(b) for b in args.blocks.split(",")], work
    )
    split = split_step(
        load_step(ExportConfig(model=args.model, checkpoint=args.checkpoint))[0].model
    )
    csi = synthetic.default_evaluation(args.eval_samples)
    reference = float_reference(
        split.encoder, split.decoder, csi, convention="linear",
        exported_encoder=split.export_encoder,
    )  # fmt: skip
    runners = {name: OnnxRunner(path) for name, path in files.items()}
    x = csi[:1]
    calls = [lambda r=r: r.session.run(None, {r.input_name: x}) for r in runners.values()]
    rounds = np.array([interleaved(calls, args.runs) for _ in range(args.repeats)])
    ratios = rounds / rounds[:, :1]
    print(f"{args.model} {args.node}: eval {len(csi)}, float NMSE {reference.nmse_db:.2f} dB")
    print("| form | dNMSE (dB) | codeword SQNR (dB) | fidelity (dB) | bytes | /float | range |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k, (name, runner) in enumerate(runners.items()):
        n = encoder_numerics(reference, split.decoder, runner(csi).astype(np.float32))
        print(
            f"| {name} | {n.delta_nmse_db:+.4f} | {n.codeword_sqnr_db:.1f} | "
            f"{n.fidelity_nmse_db:.1f} | {files[name].stat().st_size:,} | "
            f"{np.median(ratios[:, k]):.2f} | {ratios[:, k].min():.2f}-{ratios[:, k].max():.2f} |"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
