"""The cells of a sweep: every (model, CR, format, INT8 mode, target), named for folders.

Only cells whose model has shipped trained weights at that CR are run: figures of an
untrained model would read like results. The others are listed as skipped, with the CRs the
zoo does ship for that model.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass

from csideploy.errors import CsiDeployError

FORMATS = ("onnx", "tflite", "pte")
FLOAT = "none"
"""The INT8 mode that exports float files only."""


@dataclass(frozen=True)
class Cell:
    """One grid point; `int8` None is a float-only export, `target` None means no bench."""

    model: str
    cr: int
    fmt: str
    int8: str | None
    target: str | None

    @property
    def name(self) -> str:
        """Folder name: `clnet-cr4-onnx-static[-local]`, only safe characters."""
        parts = [self.model, f"cr{self.cr}", self.fmt, self.int8 or "float"]
        if self.target is not None:
            parts.append(re.sub(r"[^A-Za-z0-9.]+", "_", self.target).strip("_") or "target")
        return "-".join(parts)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def split_list(text: str, option: str) -> tuple[str, ...]:
    """`a,b` -> ('a', 'b') without blanks or repeats; CsiDeployError when empty."""
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items:
        raise CsiDeployError(f"{option} is empty")
    return items


def int_list(text: str, option: str) -> tuple[int, ...]:
    """`4,32` -> (4, 32); CsiDeployError naming the option for anything else."""
    try:
        return tuple(int(item) for item in split_list(text, option))
    except ValueError:
        raise CsiDeployError(f"{option} must be a comma list of integers, got {text!r}") from None


def build_grid(
    models: tuple[str, ...],
    crs: tuple[int, ...],
    formats: tuple[str, ...],
    int8_modes: tuple[str, ...],
    targets: tuple[str, ...],
) -> list[Cell]:
    """Every combination, in option order; unknown names are a CsiDeployError up front."""
    from csideploy.models.registry import get_entry
    from csideploy.quantize.base import method_names

    for model in models:
        get_entry(model)  # UnknownModelError naming the model
    _known("--format", formats, FORMATS)
    _known("--int8", int8_modes, (FLOAT, *method_names()))
    combos = itertools.product(models, crs, formats, int8_modes, targets or (None,))
    return [
        Cell(model, cr, fmt, None if mode == FLOAT else mode, target)
        for model, cr, fmt, mode, target in combos
    ]


def split_trained(cells: list[Cell]) -> tuple[list[Cell], list[tuple[str, str]]]:
    """(cells with shipped weights, [(cell name, why skipped)])."""
    from csideploy.models.zoo_weights import find_shipped, shipped_crs

    trained: list[Cell] = []
    skipped: list[tuple[str, str]] = []
    for cell in cells:
        if find_shipped(cell.model, cell.cr) is not None:
            trained.append(cell)
            continue
        crs = ", ".join(f"1/{cr}" for cr in shipped_crs(cell.model)) or "none"
        skipped.append(
            (cell.name, f"no shipped weights for {cell.model} at CR 1/{cell.cr} (shipped: {crs})")
        )
    return trained, skipped


def _known(option: str, given: tuple[str, ...], known: tuple[str, ...]) -> None:
    unknown = [item for item in given if item not in known]
    if unknown:
        raise CsiDeployError(f"{option}: unknown {unknown[0]!r}; known: {', '.join(known)}")
