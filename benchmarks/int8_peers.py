"""INT8 encoders side by side: the project's files and what a user would otherwise make.

On the same weights and data (a checkpoint, one CSI file: the first `--eval-samples` samples
evaluate, the next `--calib-samples` calibrate), this writes

- the project's export (`csideploy export --int8`, defaults: layers chosen by measurement);
- onnxruntime `quantize_static` with its defaults (QDQ, per-tensor, MinMax) on the float
  `encoder.onnx`, after `quant_pre_process`;
- litert-torch's documented full-integer recipe (PT2E, `get_symmetric_quantization_config()`,
  calibrate, `convert_pt2e`, `litert_torch.convert` with that quantizer);

and prints for each INT8 file its NMSE loss against the float model (float torch decoder,
`linear` convention), the codeword SQNR against float, its size, and its latency relative to
the float file of the same runtime, measured interleaved in this one process (1 thread,
batch 1, median). onnx2tf is not run here (see docs/int8.md). Only prints.

    python benchmarks/int8_peers.py --model crnet \\
        --checkpoint tests/fixtures/official/crnet/in_64.pth \\
        --data tests/fixtures/cost2100/cost2100_indoor.mat --eval-samples 80 --calib-samples 80
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from csideploy.bundle.execute import run_model_outputs
from csideploy.calibration.io import load_csi
from csideploy.errors import CsiDeployError
from csideploy.formats.onnx import OnnxRunner
from csideploy.gates.numerics import encoder_numerics
from csideploy.models.ue_graph import flat_codeword
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.run import run_export
from csideploy.quantize.onnx_qdq import preprocess
from csideploy.runner import QUICK_WARMUP as DEFAULT_WARMUP
from csideploy.runner import open_model


def ort_default(float_path: Path, out: Path, calibration: np.ndarray, work: Path) -> Path:
    """onnxruntime `quantize_static` with its defaults, fed one sample per batch."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {"csi": row}

    prepared = preprocess(float_path, work / "peer.preprocessed.onnx")
    quantize_static(str(prepared), str(out), Reader())
    return out


def litert_default(encoder: torch.nn.Module, out: Path, calibration: np.ndarray) -> Path:
    """litert-torch's full-integer PT2E recipe, as its documentation shows it."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    sample = torch.from_numpy(calibration[:1])
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config()
    )
    graph = torch.export.export(encoder.eval(), (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(calibration[i : i + 1]))
    quantized = convert_pt2e(prepared, fold_quantize=False)
    quantized.training = False
    edge = litert_torch.convert(
        quantized, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)
    )
    out.write_bytes(bytes(edge.model_content()))
    return out


def interleaved(calls: Sequence[Callable[[], object]], runs: int) -> list[float]:
    """Median microseconds of each call, run in turn `runs` times after a warm-up."""
    times = np.empty((len(calls), runs))
    for run in range(DEFAULT_WARMUP + runs):
        for k, call in enumerate(calls):
            start = time.perf_counter_ns()
            call()
            if run >= DEFAULT_WARMUP:
                times[k, run - DEFAULT_WARMUP] = (time.perf_counter_ns() - start) / 1e3
    return [float(v) for v in np.median(times, axis=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crnet")
    parser.add_argument("--checkpoint", default=None, help="[default: the shipped one]")
    parser.add_argument("--data", required=True)
    parser.add_argument("--eval-samples", type=int, default=80)
    parser.add_argument("--calib-samples", type=int, default=80)
    parser.add_argument("--int8-layers", default="auto")
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_csi(args.data)
    calibration = data[args.eval_samples : args.eval_samples + args.calib_samples]
    work = Path(tempfile.mkdtemp(prefix="int8-peers-"))
    result = run_export(ExportConfig(
        model=args.model, checkpoint=args.checkpoint, int8="static", eval_data=args.data,
        eval_samples=args.eval_samples, calib_samples=args.calib_samples,
        int8_layers=args.int8_layers, formats=("onnx", "tflite"), out=str(work / "export"),
        max_nmse_drop=float("inf"), min_codeword_sqnr=-float("inf"),
        max_fidelity_nmse=float("inf"), latency_runs=1,
    ))  # fmt: skip
    from csideploy.pipeline.steps import load_step, split_step

    split = split_step(
        load_step(ExportConfig(model=args.model, checkpoint=args.checkpoint))[0].model
    )
    reference_csi = data[: args.eval_samples]
    out = result.out_dir
    peers_onnx = ort_default(out / "encoder.onnx", work / "ort-default.onnx", calibration, work)
    peers_tflite = litert_default(split.export_encoder, work / "litert-default.tflite", calibration)

    from csideploy.gates.numerics import float_reference

    reference = float_reference(
        split.encoder,
        split.decoder,
        reference_csi,
        convention="linear",
        exported_encoder=split.export_encoder,
    )
    rows = []
    onnx_files = {
        "float": out / "encoder.onnx",
        "project": out / "encoder.int8.onnx",
        "ort quantize_static defaults": peers_onnx,
    }
    sessions = {k: OnnxRunner(p) for k, p in onnx_files.items()}
    x = reference_csi[:1]
    onnx_us = interleaved(
        [lambda s=s: s.session.run(None, {s.input_name: x}) for s in sessions.values()], args.runs
    )
    for (name, path), us in zip(onnx_files.items(), onnx_us, strict=True):
        codewords = sessions[name](reference_csi)
        rows.append(("ONNX", name, path, codewords, us, onnx_us[0]))
    tflite_files = {
        "float": out / "encoder.tflite",
        "project": out / "encoder.int8.tflite",
        "litert-torch default PT2E": peers_tflite,
    }
    models = {k: open_model("litert", p, 1, 1) for k, p in tflite_files.items()}

    def encode(name: str, csi: np.ndarray) -> np.ndarray:
        return flat_codeword(run_model_outputs(models[name], csi, None, tflite_files[name]))

    tflite_us = interleaved([lambda k=k: encode(k, x) for k in models], args.runs)
    for (name, path), us in zip(tflite_files.items(), tflite_us, strict=True):
        rows.append(("TFLite", name, path, encode(name, reference_csi), us, tflite_us[0]))
    load = os.getloadavg()[0]
    print(
        f"{args.model} {args.checkpoint} on {args.data}: eval {args.eval_samples}, calib "
        f"{len(calibration)}; float NMSE {reference.nmse_db:.2f} dB; load average {load:.1f}"
    )
    print("| runtime | file | dNMSE (dB) | codeword SQNR (dB) | bytes | median us | /float |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for runtime, name, path, codewords, us, float_us in rows:
        try:
            n = encoder_numerics(reference, split.decoder, codewords.astype(np.float32))
        except CsiDeployError as error:  # a peer file that does not encode this model
            print(f"| {runtime} | {name} | unusable: {error} | | | | |")
            continue
        print(
            f"| {runtime} | {name} | {n.delta_nmse_db:+.3f} | {n.codeword_sqnr_db:.1f} | "
            f"{path.stat().st_size:,} | {us:.1f} | {us / float_us:.2f} |"
        )


if __name__ == "__main__":
    main()
