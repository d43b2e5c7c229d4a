"""Calibration sets that cannot silently mislead the quantizer.

A calibration set fixes every activation range of a static INT8 graph. Three ways it goes
wrong without any error from the quantizer, each caught here:

- A degenerate set (all samples equal, or values with almost no spread) gives ranges of
  width ~0; the quantized graph then clips almost everything. `check_calibration_set`
  refuses it with `DataError`.
- A set from another distribution than the evaluation set (another scenario, another
  normalisation) gives ranges that fit neither. `mismatch_warning` compares the spread of
  the two sets around the CSI zero level and names both sources when they differ strongly.
- Calibrators that stack per-batch statistics (onnxruntime's entropy and percentile) need
  batches of one size: `equal_batch_size` picks the largest size <= the wanted one that
  divides the sample count.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np

from csideploy.errors import DataError

CALIBRATION_BATCH = 64
"""Calibration samples run through the observers at once (ONNX Runtime static INT8)."""
MIN_SPREAD = 1e-4
"""Smallest standard deviation of the calibration values (CSI in [0, 1]) accepted."""
MISMATCH_RATIO = 3.0
"""Spread ratio between calibration and evaluation sets above which a warning is given."""
CSI_ZERO = 0.5
"""The value that means zero in the normalised CSI layout."""


def equal_batch_size(samples: int, wanted: int) -> int:
    """The largest batch size <= `wanted` that divides `samples` (1 at worst)."""
    if samples < 1 or wanted < 1:
        raise ValueError(f"samples and batch size must be >= 1, got {samples}, {wanted}")
    return next(size for size in range(min(samples, wanted), 0, -1) if samples % size == 0)


def check_calibration_set(data: np.ndarray, source: str) -> None:
    """Refuse a calibration set whose values cannot give meaningful activation ranges."""
    values = np.asarray(data, dtype=np.float64)
    if len(values) == 0:
        raise DataError(f"calibration set {source} holds no samples")
    if not np.isfinite(values).all():
        raise DataError(f"calibration set {source} holds NaN or inf")
    spread = float(values.std())
    if spread < MIN_SPREAD:
        raise DataError(
            f"calibration set {source} has {'zero' if spread == 0 else 'near-zero'} variance "
            f"(std {spread:.2g} over {len(values)} samples, at least {MIN_SPREAD:g} needed): "
            "it would fix every activation range to ~0; calibrate on real CSI"
        )
    if len(values) > 1 and float(np.abs(values - values[:1]).max()) == 0.0:
        raise DataError(
            f"calibration set {source}: all {len(values)} samples are identical; "
            "calibrate on distinct CSI samples"
        )


def spread(data: np.ndarray) -> float:
    """RMS distance of the CSI values from the zero level: how strong the channels are."""
    centred = np.asarray(data, dtype=np.float64) - CSI_ZERO
    return float(np.sqrt(np.mean(centred * centred)))


def mismatch_warning(
    calibration: np.ndarray, calibration_source: str, evaluation: np.ndarray, evaluation_source: str
) -> str | None:
    """A one-line warning when the two sets' spreads differ by more than `MISMATCH_RATIO`."""
    calib, evaluation_spread = spread(calibration), spread(evaluation)
    low, high = sorted((calib, evaluation_spread))
    if low > 0 and high / low <= MISMATCH_RATIO:
        return None
    ratio = high / low if low > 0 else float("inf")
    return (
        f"calibration set {calibration_source} (RMS {calib:.3g} around {CSI_ZERO}) and "
        f"evaluation set {evaluation_source} (RMS {evaluation_spread:.3g}) differ by "
        f"{ratio:.1f}x: INT8 ranges fitted on one will not fit the other; calibrate on CSI "
        "from the evaluation source"
    )


class ArrayReader:
    """A `CalibrationDataReader` over an array, batch by batch, restartable."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.batch_size = batch_size
        self._start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start >= len(self.data):
            return None
        batch = self.data[self._start : self._start + self.batch_size]
        self._start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._start = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item

    def set_range(self, start_index: int, end_index: int) -> None:
        self.data = self.data[start_index:end_index]
        self.rewind()


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Keep onnxruntime.quantization's prints, logging and warnings off the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
