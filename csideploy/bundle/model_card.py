"""The bundle's README.md: a model card for the handset integrator, rendered from the manifest."""

from __future__ import annotations

from typing import Any


def render_model_card(manifest: dict[str, Any]) -> str:
    """Markdown that tells an integrator what to feed the encoder and how to check it."""
    model = manifest["model"]
    lines = [
        f"# {model['name']} CR 1/{model['cr']} UE encoder, version {manifest['artifact_version']}",
        "",
        "Everything a handset needs to run and check the CSI-feedback encoder. The BS-side "
        "decoder is not part of this bundle.",
        "",
        "## Verify and run in five lines",
        "",
        "```bash",
        "csideploy verify BUNDLE.tar.gz --expect-sha256 HASH   # HASH: the manifest sha256",
        "                                      # its producer published (not from this bundle)",
        "python runner.py --artifacts . --runtime auto --runs 200   # latency, numpy + runtime",
        "```",
        "```python",
        "import numpy as np, onnxruntime as ort",
        "x = np.load('golden/inputs.npy')                      # (K, 2, 32, 32) float32",
        "s = ort.InferenceSession('encoder.onnx')",
        "codeword = s.run(['codeword'], {'csi': x})[0]          # (K, codeword_length)",
        "assert np.allclose(codeword, np.load('golden/encoder.onnx.expected.npy'), atol=1e-4)",
        "```",
        "",
        "## Input pre-processing (UE side)",
        "",
    ]
    lines += [
        f"{k}. `{step['step']}`: {step['description']}"
        for k, step in enumerate(manifest["preprocessing"], 1)
    ]
    lines += [
        "",
        "## Artifacts",
        "",
        "| file | format | precision | input | output | tolerance |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_artifact_row(a) for a in manifest["artifacts"]]
    bits = manifest["feedback"]["bits_per_report"]
    payload = ", ".join(f"{k}: {v} bits" for k, v in sorted(bits.items()))
    calibration = manifest["calibration"]
    lines += [
        "",
        "## Feedback payload",
        "",
        f"Codeword length {manifest['feedback']['codeword_length']}; per report {payload}.",
        "",
        "## Provenance",
        "",
        f"- source checkpoint sha256 `{model['checkpoint']['sha256']}` "
        f"({model['checkpoint']['source_format']})",
        f"- calibration: {calibration['source']}, {calibration['samples']} samples, "
        f"{calibration['method']}",
        "- tools: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest["tools"].items()) if v),
        "",
    ]
    return "\n".join(lines)


def _tensor(spec: dict[str, Any]) -> str:
    shape = "x".join(str(d) for d in spec["shape"])
    text = f"`{spec['name']}` {spec['dtype']} [{shape}]"
    if spec.get("layout"):
        text += f" {spec['layout']}"
    if spec.get("scale") is not None:
        text += f" (scale {spec['scale']:.6g}, zero point {spec['zero_point']})"
    return text


def _artifact_row(artifact: dict[str, Any]) -> str:
    return (
        f"| {artifact['file']} | {artifact['format']} | {artifact['precision']} | "
        f"{_tensor(artifact['input'])} | {_tensor(artifact['output'])} | "
        f"{artifact['tolerance']['max_abs']:g} |"
    )
