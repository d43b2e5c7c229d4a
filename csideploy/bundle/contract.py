"""The parts of the manifest that describe the UE contract: pre-processing, payload, tools."""

from __future__ import annotations

from importlib import metadata
from typing import Any

TOOL_DISTRIBUTIONS = (
    "csideploy",
    "torch",
    "onnx",
    "onnxruntime",
    "litert-torch",
    "ai-edge-litert",
    "executorch",
    "numpy",
)


def preprocessing_steps(
    *, antennas: int = 32, subcarriers: int = 1024, delay_rows: int = 32
) -> list[dict[str, Any]]:
    """What the UE must do to its spatial-frequency channel estimate before the encoder."""
    return [
        {
            "step": "angular_delay_dft",
            "description": (
                f"H (antennas x subcarriers = {antennas} x {subcarriers}, complex) -> "
                "Ha = F_a H F_d^H: DFT across antennas (angle), inverse DFT across "
                "subcarriers (delay)"
            ),
            "antennas": antennas,
            "subcarriers": subcarriers,
        },
        {
            "step": "truncate_delay",
            "description": f"keep the first {delay_rows} delay taps: Ha is {antennas} x {delay_rows}",  # noqa: E501
            "keep": delay_rows,
        },
        {
            "step": "split_real_imag",
            "description": "stack real and imaginary parts as channels: (2, angle, delay), NCHW",
            "layout": "(2, 32, 32) = (real/imag, angle, delay)",
        },
        {
            "step": "scale_offset",
            "description": (
                "x = Ha_ri * s + 0.5 with the data set's fixed scale s so values lie in [0, 1] "
                "and 0.5 means zero (the training data's convention)"
            ),
            "zero_offset": 0.5,
            "value_range": [0.0, 1.0],
        },
    ]


def feedback_payload(codeword_length: int, integer_bits: int | None = None) -> dict[str, Any]:
    """Bits per CSI report: for a float32 or an int8 codeword, or, for a model that
    quantizes its own codeword, the bits its integer outputs take on the air."""
    if integer_bits is not None:
        return {
            "codeword_length": codeword_length,
            "bits_per_report": {"transmitted": int(integer_bits)},
        }
    return {
        "codeword_length": codeword_length,
        "bits_per_report": {"float32": 32 * codeword_length, "int8": 8 * codeword_length},
    }


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TOOL_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def declaration_problems(manifest: dict[str, Any]) -> list[str]:
    """Facts the manifest states twice must agree: codeword length and bits per report, and
    the input value range (model, feedback, each artifact, the pre-processing)."""
    length = manifest["model"]["codeword_length"]
    feedback = manifest["feedback"]
    problems = []
    if feedback["codeword_length"] != length:
        problems.append(
            f"feedback codeword_length {feedback['codeword_length']} != model's {length}"
        )
    for key, bits in (("float32", 32), ("int8", 8)):
        declared = feedback["bits_per_report"].get(key)
        if declared is not None and declared != bits * length:
            problems.append(f"bits_per_report {key} {declared} != {bits} x {length}")
    ranges = {
        where: [float(v) for v in section["value_range"]]
        for where, section in _ranged_sections(manifest)
        if isinstance(section, dict) and "value_range" in section
    }
    if len({tuple(r) for r in ranges.values()}) > 1:
        shown = ", ".join(f"{where} {r}" for where, r in ranges.items())
        problems.append(f"the input value ranges differ: {shown}")
    return problems


def _ranged_sections(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    sections: list[tuple[str, Any]] = [("input", manifest.get("input"))]
    sections += [(f"{a['file']} input", a["input"]) for a in manifest["artifacts"]]
    sections += [(f"preprocessing {step.get('step')}", step) for step in manifest["preprocessing"]]
    return sections
