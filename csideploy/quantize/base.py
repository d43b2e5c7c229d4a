"""The INT8 method registry: what `--int8` can ask for, and what each method needs and writes.

A `QuantMethod` is format-independent: its name (the `--int8` value), the precision its files
record in the manifest, the infix of its file names (`encoder.<infix>.<suffix>`) and the
calibration methods it accepts (none: it needs no calibration set). The formats that can write
it say so by precision (`csideploy.formats.base.Format.int8`); the conversion itself lives in
the method family's module (`onnx_qdq`, `tflite_pt2e`). This module imports nothing heavy, so
the command line reads its choices from here without loading numpy, onnx or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from csideploy.errors import CsiDeployError


@dataclass(frozen=True)
class QuantMethod:
    """One INT8 method; `calibration` lists the range-setting methods it accepts."""

    name: str
    precision: str
    file_infix: str
    calibration: tuple[str, ...] = ()
    description: str = ""

    @property
    def needs_calibration(self) -> bool:
        """True when the method calibrates activation ranges on a calibration set."""
        return bool(self.calibration)

    def file_name(self, suffix: str) -> str:
        """The encoder file this method writes in a format with `suffix` (e.g. ".onnx")."""
        return f"encoder.{self.file_infix}{suffix}"


QUANT_METHODS: dict[str, QuantMethod] = {}


def register_method(method: QuantMethod) -> QuantMethod:
    """Add `method`; a second, different method under one name is a programming error."""
    if method.name in QUANT_METHODS and QUANT_METHODS[method.name] != method:
        raise ValueError(f"INT8 method {method.name!r} is registered twice")
    QUANT_METHODS[method.name] = method
    return method


def get_method(name: str) -> QuantMethod:
    """The registered method `name`, or the `--int8` error listing the known ones."""
    try:
        return QUANT_METHODS[name]
    except KeyError:
        known = ", ".join(QUANT_METHODS)
        raise CsiDeployError(f"--int8 must be one of {known}, got {name!r}") from None


def encoder_file(suffix: str, precision: str) -> str:
    """The encoder file of a format (`suffix`, e.g. ".tflite") at `precision` ("fp32" or a
    method's precision): the one place the export's encoder file names come from."""
    if precision == "fp32":
        return f"encoder{suffix}"
    for method in QUANT_METHODS.values():
        if method.precision == precision:
            return method.file_name(suffix)
    raise CsiDeployError(f"no INT8 method writes precision {precision!r}")


def method_names() -> tuple[str, ...]:
    """Every `--int8` value, in registration order."""
    return tuple(QUANT_METHODS)


def calibration_methods() -> tuple[str, ...]:
    """Every `--calib-method` value any method accepts, in registration order."""
    seen: dict[str, None] = {}
    for method in QUANT_METHODS.values():
        seen.update(dict.fromkeys(method.calibration))
    return tuple(seen)


register_method(
    QuantMethod(
        name="static",
        precision="int8",
        file_infix="int8",
        calibration=("minmax", "entropy", "percentile"),
        description="int8 weights and activations; activation ranges calibrated on CSI",
    )
)
register_method(
    QuantMethod(
        name="dynamic",
        precision="dynamic",
        file_infix="dyn",
        description="int8 weights; activations quantized at run time, no calibration set",
    )
)
