"""The trained default's TFLite INT8 encoder with its FC layers forced to static int8 by
post-training quantization (no QAT): the "before" row of docs/int8.md's QAT section.

The layer plan keeps the 2048 -> 512 FC float in TFLite (its only fitting form is ONNX
Runtime's blockwise dynamic one); this forces it, plainly calibrated (per-tensor input
range, per-channel weights, no equalisation), on the default calibration set, and scores the
file on the calibration and evaluation sets as the export would.

    python benchmarks/tflite_fc_ptq.py /tmp/ptq
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from csideploy.bundle.execute import run_artifact_outputs
from csideploy.calibration import synthetic
from csideploy.gates.numerics import encoder_numerics, float_reference
from csideploy.models.ue_graph import flat_codeword
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.steps import load_step, split_step
from csideploy.quantize.tflite_pt2e import pt2e_export_tflite

LAYER_SETS = {"FC": ("replace_efc",), "FC + SE FCs": ("replace_efc", "se.fc.0", "se.fc.2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = split_step(load_step(ExportConfig(model="clnet"))[0].model)
    sets = {
        "calibration": synthetic.default_calibration(256),
        "evaluation": synthetic.default_evaluation(1000),
    }
    refs = {
        name: float_reference(
            split.encoder, split.decoder, csi, exported_encoder=split.export_encoder
        )
        for name, csi in sets.items()
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for label, layers in LAYER_SETS.items():
        path = args.out_dir / f"{'_'.join(layers)}.tflite"
        artifact = pt2e_export_tflite(
            split.export_encoder, path, precision="int8", calibration=sets["calibration"],
            io="float", layers=layers, overwrite=True,
        )  # fmt: skip
        for name, csi in sets.items():
            codewords = flat_codeword(run_artifact_outputs("litert", path, csi))
            n = encoder_numerics(refs[name], split.decoder, codewords)
            print(
                f"{label:<12} {name:<11} dNMSE {n.delta_nmse_db:+.4f} dB  codeword SQNR "
                f"{n.codeword_sqnr_db:.1f} dB  fidelity {n.fidelity_nmse_db:.1f} dB  "
                f"{artifact.num_bytes:,} bytes"
            )


if __name__ == "__main__":
    main()
