"""The COST2100 data-set layout: `DATA_H{split}{in,out}` file names and how a split is found."""

from __future__ import annotations

import os
from pathlib import Path

from csideploy.calibration.io import (
    DATA_EXTENSIONS,
    SCENARIOS,
    SPLITS,
)
from csideploy.errors import DataError


def split_filename(split: str, scenario: str, ext: str = ".mat") -> str:
    """The COST2100 file name of a split, e.g. `DATA_Htrainin.mat`, `DATA_HtestFout_all.mat`.

    `split` is train, val, test, or `testF` for the frequency-domain HF_all file.
    """
    tag = _scenario_tag(scenario)
    if split == "testF":
        return f"DATA_HtestF{tag}_all{ext}"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or testF")
    return f"DATA_H{split}{tag}{ext}"


def _scenario_tag(scenario: str) -> str:
    """'in' or 'out' for a scenario name (indoor/outdoor/in/out)."""
    try:
        return SCENARIOS[scenario.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown scenario {scenario!r}; expected indoor or outdoor") from None


def _candidates(data_dir: Path, split: str, scenario: str) -> list[Path]:
    """Existing files for (split, scenario), in order of preference (.mat, .npz, .npy)."""
    exts = (".mat",) if split == "testF" else DATA_EXTENSIONS
    names = [split_filename(split, scenario, ext) for ext in exts]
    return [data_dir / n for n in names if (data_dir / n).is_file()]


def find_split(data_dir: str | os.PathLike[str], split: str, scenario: str) -> Path:
    """The file of `split` (train/val/test/testF) and `scenario` in `data_dir`.

    Looks for `DATA_H{split}{in,out}.mat` (then .npz, .npy). A DataError lists what the
    directory holds when the file is not there.
    """
    root = _existing_dir(data_dir)
    found = _candidates(root, split, scenario)
    if found:
        return found[0]
    raise DataError(
        f"{root}: no {split_filename(split, scenario)} for the {split} split "
        f"({_scenario_name(scenario)}); the directory holds: {_listing(root)}"
    )


def resolve_split(
    data_dir: str | os.PathLike[str], split: str, scenario: str | None = None
) -> Path:
    """Like `find_split`, with `scenario` inferred when only one scenario is present."""
    root = _existing_dir(data_dir)
    if scenario is not None:
        return find_split(root, split, scenario)
    present = [s for s in ("indoor", "outdoor") if _candidates(root, split, s)]
    if len(present) == 1:
        return _candidates(root, split, present[0])[0]
    if len(present) == 2:
        raise DataError(
            f"{root}: holds both indoor and outdoor {split} data; choose one with the "
            "scenario (indoor or outdoor)"
        )
    raise DataError(
        f"{root}: no {split} split found (expected {split_filename(split, 'in')} or "
        f"{split_filename(split, 'out')}); the directory holds: {_listing(root)}"
    )


def resolve_data(
    spec: str | os.PathLike[str], *, split: str = "test", scenario: str | None = None
) -> Path:
    """A CSI file from `spec`: the file itself, or `split` of the dataset directory `spec`."""
    path = Path(spec)
    if path.is_dir():
        return resolve_split(path, split, scenario)
    if not path.exists():
        raise DataError(f"{path}: CSI data file or directory not found")
    return path


def _existing_dir(data_dir: str | os.PathLike[str]) -> Path:
    """`data_dir` as a Path, or a DataError when it is not a directory."""
    root = Path(data_dir)
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "directory not found"
        raise DataError(f"{root}: data {what}")
    return root


def _scenario_name(scenario: str) -> str:
    return "indoor" if _scenario_tag(scenario) == "in" else "outdoor"


def _listing(root: Path, limit: int = 20) -> str:
    """The names in `root`, sorted, at most `limit` of them, or `(nothing)`."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not names:
        return "(nothing)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
