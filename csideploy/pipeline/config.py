"""`ExportConfig`: everything `csideploy export` can be told, validated before any step runs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from csideploy.defaults import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_EVAL_SAMPLES,
    DEFAULT_MAX_FIDELITY_NMSE_DB,
    DEFAULT_MAX_NMSE_DROP_DB,
    DEFAULT_MIN_CODEWORD_SQNR_DB,
    DEFAULT_OPSET,
    DEFAULT_QAT_LR,
    DEFAULT_QAT_SAMPLES,
    INT8_LAYER_CHOICES,
    MIN_CALIB_SAMPLES,
    MIN_EVAL_SAMPLES,
)
from csideploy.errors import CsiDeployError, DataError
from csideploy.formats import get_format
from csideploy.formats.base import check_int8
from csideploy.formats.onnx import check_opset
from csideploy.gates.numerics import NMSE_CONVENTION
from csideploy.quantize.base import calibration_methods, get_method
from csideploy.runner import QUICK_RUNS as DEFAULT_RUNS

DEFAULT_OUT_ROOT = "artifacts"


@dataclass(frozen=True)
class ExportConfig:
    """Everything `csideploy export` can be told, validated up front.

    `int8`: None (float only), "static" (QDQ, calibrated) or "dynamic". `calib` / `eval_data`:
    a CSI file (.mat / .npy / .npz), or None for the built-in synthetic indoor sets (seeded,
    disjoint). `out`: None means `artifacts/<model>-cr<N>`. `max_nmse_drop`: the INT8 gate in
    dB (`math.inf` accepts anything).
    """

    model: str
    cr: int | None = None
    checkpoint: str | None = None
    int8: str | None = None
    calib: str | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_method: str = "minmax"
    eval_data: str | None = None
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    max_nmse_drop: float = DEFAULT_MAX_NMSE_DROP_DB
    min_codeword_sqnr: float = DEFAULT_MIN_CODEWORD_SQNR_DB
    """Fidelity gate: lowest codeword SQNR (dB) of an INT8 file against the float encoder."""
    max_fidelity_nmse: float = DEFAULT_MAX_FIDELITY_NMSE_DB
    """Fidelity gate: highest NMSE (dB) of an INT8 reconstruction against the float one."""
    int8_layers: str = "auto"
    """Static INT8: "auto" (layers chosen by measured speed and accuracy), "accuracy" (by
    accuracy only) or "all"."""
    opset: int = DEFAULT_OPSET
    out: str | None = None
    force: bool = False
    formats: tuple[str, ...] = ("onnx",)
    layout: str = "nchw"
    """TFLite input layout: "nchw" as the torch model, or "nhwc" for channel-last buffers."""
    tflite_io: str = "int8"
    """I/O dtype of the full-integer TFLite encoder: "int8" or "float"."""
    version: str = "0.1.0"
    """The bundle's artifact version (semver)."""
    hard_sigmoid: str | None = None
    """None, "encoder" or "all": replace sigmoids with relu6(x + 3) / 6 before export."""
    finetune_epochs: int = 0
    finetune_samples: int = 5000
    qat_epochs: int = 0
    """Quantization-aware fine-tuning of the TFLite INT8 encoder's FC layers (0: off)."""
    qat_data: str | None = None
    """QAT training CSI file; None: the calibration source (`pipeline.qat_step`)."""
    qat_samples: int = DEFAULT_QAT_SAMPLES
    qat_lr: float = DEFAULT_QAT_LR
    latency_runs: int = DEFAULT_RUNS
    convention: str = NMSE_CONVENTION

    def __post_init__(self) -> None:
        method = None if self.int8 is None else get_method(self.int8)
        calibrated = bool(method and method.needs_calibration)
        if self.calib_method not in calibration_methods():
            raise CsiDeployError(
                f"--calib-method must be one of {', '.join(calibration_methods())}, "
                f"got {self.calib_method!r}"
            )
        if self.calib is not None and not calibrated:
            raise CsiDeployError("--calib is only used by static INT8: add --int8 (static)")
        if calibrated and _bad_count(self.calib_samples, MIN_CALIB_SAMPLES):
            raise DataError(
                f"calibration needs at least {MIN_CALIB_SAMPLES} samples, "
                f"got --calib-samples {self.calib_samples}"
            )
        if _bad_count(self.eval_samples, MIN_EVAL_SAMPLES):
            raise DataError(
                f"evaluation needs at least {MIN_EVAL_SAMPLES} samples, "
                f"got --eval-samples {self.eval_samples}"
            )
        if not self.max_nmse_drop >= 0:  # also catches NaN
            raise CsiDeployError(
                f"--max-nmse-drop must be >= 0 dB (or inf), got {self.max_nmse_drop}"
            )
        if self.int8_layers not in INT8_LAYER_CHOICES:
            raise CsiDeployError(
                f"--int8-layers must be one of {', '.join(INT8_LAYER_CHOICES)}, "
                f"got {self.int8_layers!r}"
            )
        if math.isnan(self.min_codeword_sqnr) or math.isnan(self.max_fidelity_nmse):
            raise CsiDeployError("--min-codeword-sqnr and --max-fidelity-nmse must be numbers")
        check_opset(self.opset)
        if not self.formats or len(set(self.formats)) != len(self.formats):
            raise CsiDeployError(f"formats must be distinct and non-empty, got {self.formats}")
        for name in self.formats:
            fmt = get_format(name)
            if self.int8_precision is not None:
                check_int8(fmt, self.int8_precision)
        if self.hard_sigmoid not in (None, "encoder", "all"):
            raise CsiDeployError(
                f"--hard-sigmoid must be encoder or all, got {self.hard_sigmoid!r}"
            )
        if self.finetune_epochs and self.hard_sigmoid is None:
            raise CsiDeployError("--finetune-epochs needs --hard-sigmoid")
        if _bad_count(self.finetune_epochs, 0) or _bad_count(self.finetune_samples, 16):
            raise CsiDeployError("--finetune-epochs must be >= 0 and the samples >= 16")
        _check_qat(self)
        if self.layout not in ("nchw", "nhwc"):
            raise CsiDeployError(f"--layout must be nchw or nhwc, got {self.layout!r}")
        if self.tflite_io not in ("int8", "float"):
            raise CsiDeployError(f"--io must be int8 or float, got {self.tflite_io!r}")
        if not _SEMVER.match(self.version):
            raise CsiDeployError(f"--version must be semver (e.g. 1.0.0), got {self.version!r}")
        if self.latency_runs < 0:
            raise CsiDeployError(f"latency_runs must be >= 0, got {self.latency_runs}")

    @property
    def int8_precision(self) -> str | None:
        """The precision of the INT8 files `int8` asks for ("int8" static, "dynamic"), or None."""
        return None if self.int8 is None else get_method(self.int8).precision

    def output_dir(self, cr: int) -> Path:
        return Path(self.out) if self.out else Path(DEFAULT_OUT_ROOT) / f"{self.model}-cr{cr}"


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)


def _check_qat(config: ExportConfig) -> None:
    """QAT tunes the TFLite INT8 file that a layer plan drives: static INT8, not "all"."""
    if _bad_count(config.qat_epochs, 0):
        raise CsiDeployError(f"--qat-epochs must be an integer >= 0, got {config.qat_epochs}")
    if _bad_count(config.qat_samples, 1):
        raise CsiDeployError(f"--qat-samples must be >= 1, got {config.qat_samples}")
    if not 0 < config.qat_lr <= 1:  # also catches NaN
        raise CsiDeployError(f"--qat-lr must be in (0, 1], got {config.qat_lr}")
    if not config.qat_epochs:
        if config.qat_data is not None:
            raise CsiDeployError("--qat-data is only used with --qat-epochs N (N >= 1)")
        return
    if config.int8 != "static" or config.int8_layers == "all":
        raise CsiDeployError(
            "--qat-epochs fine-tunes the layer plan's static INT8: add --int8 "
            "(not dynamic) and drop --int8-layers all"
        )
    if "tflite" not in config.formats:
        raise CsiDeployError("--qat-epochs tunes the TFLite INT8 encoder: add tflite to --format")
    if config.qat_data is not None and not Path(config.qat_data).is_file():
        raise DataError(f"--qat-data {config.qat_data}: no such file")


def _bad_count(value: int, minimum: int) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < minimum
