"""The options of one TFLite conversion and the torch outputs a file must reproduce.

A leaf of `csideploy.formats.tflite`: the conversion, the flatbuffer interface edits and the PT2E
quantizer all read these, and import nothing else from the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from csideploy.errors import DataError, ShapeError

PRECISIONS = ("fp32", "int8", "dynamic")
IO_TYPES = ("int8", "float")
LAYOUTS = ("nchw", "nhwc")
FILE_NAMES = {
    "fp32": "encoder.tflite",
    "int8": "encoder.int8.tflite",
    "dynamic": "encoder.dyn.tflite",
}
"""Conventional file name of each precision inside a bundle."""

TFLITE_EXTRA_MESSAGE = "TFLite export needs the 'tflite' extra: pip install 'csideploy[tflite]'"
SIGNATURE_KEY = "serving_default"
CSI_NCHW = (2, 32, 32)


@dataclass(frozen=True)
class TfliteExportConfig:
    """Options of one TFLite conversion, validated up front.

    `io` applies to ``int8`` only: fp32 and dynamic-range files always have float I/O.
    `calibration_batch` is how many calibration samples run through the observers at once.
    `output_names` names an encoder's outputs in torch order (required when it returns a
    tuple); without it the single output is `output_name`.
    """

    precision: str
    io: str = "int8"
    layout: str = "nchw"
    input_name: str = "csi"
    output_name: str = "codeword"
    calibration_batch: int = 64
    output_names: tuple[str, ...] | None = None
    """Names of the encoder's outputs in torch order; when given, `output_name` is unused."""
    layers: tuple[str, ...] | None = None
    """``int8`` only: quantize just these modules (paths inside the encoder), the rest
    float, with float I/O; None quantizes every layer (full integer)."""

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("io", self.io, IO_TYPES)
        check_choice("layout", self.layout, LAYOUTS)
        check_identifier("input_name", self.input_name)
        if self.output_names is None:
            check_identifier("output_name", self.output_name)
            if self.input_name == self.output_name:
                raise ValueError("input_name and output_name must differ")
        else:
            if isinstance(self.output_names, str):
                raise ValueError(
                    f"output_names must be a sequence of names, got {self.output_names!r}"
                )
            object.__setattr__(self, "output_names", tuple(self.output_names))
            self._check_output_names(self.output_names)
        if self.calibration_batch < 1:
            raise ValueError(f"calibration_batch must be >= 1, got {self.calibration_batch}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if self.io != "float":
                raise ValueError("quantizing selected layers keeps float I/O: pass io='float'")

    def _check_output_names(self, names: tuple[str, ...]) -> None:
        if not names:
            raise ValueError("output_names must name at least one output")
        for name in names:
            check_identifier("output_names", name)
        if len(set(names)) != len(names):
            raise ValueError(f"output_names must be distinct, got {list(names)}")
        if self.input_name in names:
            raise ValueError(f"input_name {self.input_name!r} must differ from the output names")

    @property
    def names(self) -> tuple[str, ...]:
        """The output names in torch order: `output_names`, else (`output_name`,)."""
        return self.output_names if self.output_names is not None else (self.output_name,)

    @property
    def io_dtype(self) -> str:
        """The dtype of the file's input and float outputs (integer outputs keep their own)."""
        return "int8" if self.precision == "int8" and self.io == "int8" else "float32"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input signature, batch 1."""
        return (1, *CSI_NCHW) if self.layout == "nchw" else (1, 32, 32, 2)



@dataclass(frozen=True)
class TorchOutput:
    """One output as the torch encoder returns it at batch 1: what the file must reproduce."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def integer(self) -> bool:
        """Raw integer values (a cast in torch), as opposed to a float tensor."""
        return self.dtype != "float32"



def check_identifier(key: str, name: str) -> None:
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ValueError(f"{key} must be a non-empty identifier, got {name!r}")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_calibration(calibration: np.ndarray | None) -> np.ndarray:
    """Static INT8 calibration CSI, checked before anything converts: NCHW float, finite."""
    if calibration is None:
        raise DataError("static INT8 export needs calibration CSI (N, 2, 32, 32); got none")
    calibration = np.asarray(calibration)
    if calibration.ndim != 4 or tuple(calibration.shape[1:]) != CSI_NCHW:
        raise ShapeError(
            f"calibration: expected shape (N, 2, 32, 32), got {tuple(calibration.shape)}"
        )
    if len(calibration) == 0:
        raise DataError("calibration: the array holds no samples")
    if not np.issubdtype(calibration.dtype, np.floating):
        raise DataError(f"calibration: expected float CSI, got dtype {calibration.dtype}")
    if not np.isfinite(calibration).all():
        raise DataError("calibration: the array holds NaN or inf")
    return calibration.astype(np.float32, copy=False)
