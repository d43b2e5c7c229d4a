"""CSI from the authors' COST2100 channel model, run under GNU Octave as a separate program.

The model (MATLAB, GPL-3) is not part of this package: the user names its directory
(`--cost2100-dir`, the folder holding `cost2100.m` or its parent), and this module starts Octave
processes that run the package's own driver (`octave/csideploy_cost2100.m`) against it. Settings
follow the CsiNet data (docs/data.md): `IndoorHall_5GHz` LOS at 5.3 GHz +- 10 MHz with the BS at
the centre of a 20 m square, or `SemiUrban_300MHz` LOS at 275-295 MHz in a 400 m square; 1024
tones, a 32-position half-wavelength virtual linear array at the BS, one single-antenna UE drawn
uniformly in the square per sample, one snapshot.

Each Octave process draws a batch of samples and saves, per sample, the first 32 delay rows of
the IFFT over the tones (antenna x delay) and the channel at the 125 rho frequencies; Python
takes the DFT over antennas and writes the released convention (`convention`). Draws that stop
with "No active cluster!" are redrawn inside the driver; a batch whose process leaves no
readable output is run again with a new seed (Octave exits 1 even on success, so the output
file, not the exit code, tells). The model reseeds its generator from the elapsed time
(`rand('twister', toc*1e5)`); the driver's own `tic`/`toc` (`octave/toc.m`) draw that value
from the seeded generator instead, so a batch's samples depend only on its seed and size.
Batches and their seeds depend only on `n` and `seed` (`plan_batches`), never on how many
processes or Ray workers draw them: the files are the same bytes for the same seed and `n`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.errors import DataError, MissingDependencyError

GENERATOR_ID = "csideploy.cost2100/1"
DRIVER_DIR = Path(__file__).with_name("octave")
MAX_ATTEMPTS = 3
"""Runs of one batch before giving up (each with a new seed)."""
BATCH_TIMEOUT_S = 3600.0
SEEDS = "batch i: SeedSequence(seed).generate_state(batches)[i] % 2**31"


@dataclass(frozen=True)
class Cost2100Preset:
    """One COST2100 network as the CsiNet data were made with it."""

    network: str
    link_scenario: str
    band_hz: tuple[float, float]
    bs_xyz: tuple[float, float, float]
    square_m: tuple[float, float]
    spacing_m: float

    @property
    def carrier_hz(self) -> float:
        return sum(self.band_hz) / 2


PRESETS = {
    "indoor": Cost2100Preset(
        "IndoorHall_5GHz", "LOS", (5.29e9, 5.31e9), (10.0, 10.0, 0.0), (0.0, 20.0), 0.0283
    ),
    "outdoor": Cost2100Preset(
        "SemiUrban_300MHz", "LOS", (2.75e8, 2.95e8), (0.0, 0.0, 0.0), (-200.0, 200.0), 0.526
    ),
}


def find_octave() -> str:
    """The Octave executable, or a MissingDependencyError saying how to install it."""
    for name in ("octave-cli", "octave"):
        found = shutil.which(name)
        if found:
            return found
    raise MissingDependencyError(
        "--source cost2100 needs GNU Octave (e.g. apt-get install --no-install-recommends octave)"
    )


def model_dir(path: str | os.PathLike[str]) -> Path:
    """The folder holding `cost2100.m`: `path` itself or its `matlab/` folder; else DataError."""
    root = Path(path)
    for candidate in (root, root / "matlab"):
        if (candidate / "cost2100.m").is_file():
            return candidate.resolve()
    raise DataError(
        f"{root}: no cost2100.m here or in {root / 'matlab'}; --cost2100-dir must name the "
        "COST2100 model's MATLAB code"
    )


def _eval_line(preset: Cost2100Preset, model: Path, n: int, seed: int, out: Path) -> str:
    """The Octave statement that runs the driver for one batch."""

    def vec(values: Any) -> str:
        return "[" + " ".join(repr(float(v)) for v in values) + "]"

    args = ", ".join(
        [
            _quote(str(model)),
            _quote(preset.network),
            _quote(preset.link_scenario),
            repr(preset.band_hz[0]),
            repr(preset.band_hz[1]),
            vec(preset.bs_xyz),
            vec(preset.square_m),
            repr(preset.spacing_m),
            str(n),
            str(seed),
            _quote(str(out)),
        ]
    )
    return f"addpath({_quote(str(DRIVER_DIR))}); csideploy_cost2100({args});"


def _quote(text: str) -> str:
    """An Octave single-quoted string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass
class BatchResult:
    """What one batch produced: CSI and HF_all in the released convention, redraws, reruns."""

    x: np.ndarray
    hf: np.ndarray
    redraws: int
    reruns: int


def run_batch(
    preset: Cost2100Preset, model: Path, n: int, seed: int, work: Path, octave: str
) -> BatchResult:
    """Draw `n` samples in one Octave process (rerun up to MAX_ATTEMPTS times on failure)."""
    log = ""
    for attempt in range(MAX_ATTEMPTS):
        out = work / f"batch-{seed}-{attempt}.mat"
        line = _eval_line(preset, model, n, seed + 7919 * attempt, out)
        try:
            proc = subprocess.run(
                [octave, "--no-gui", "--quiet", "--no-window-system", "--norc", "--eval", line],
                capture_output=True,
                text=True,
                timeout=BATCH_TIMEOUT_S,
                cwd=work,
            )
            log = proc.stderr
        except subprocess.TimeoutExpired:
            log = f"timed out after {BATCH_TIMEOUT_S:.0f} s"
        result = _read_batch(out, n)
        if result is not None:
            x, hf, redraws = result
            return BatchResult(x, hf, redraws, attempt)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    tail = " | ".join(e for e in errors if "preparing to exit" not in e)[:500] or log[-300:]
    raise DataError(f"COST2100 under Octave produced no output after {MAX_ATTEMPTS} runs: {tail}")


def _read_batch(out: Path, n: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The batch file converted to the released convention, or None when missing/bad."""
    import scipy.io

    from csideploy.calibration.convention import released_csi, released_freq

    try:
        saved = scipy.io.loadmat(out)
        hd, hf = np.asarray(saved["Hd"]), np.asarray(saved["Hf"])
        redraws = int(np.asarray(saved["redraws"]).ravel()[0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    finally:
        out.unlink(missing_ok=True)
    hd, hf = hd.reshape(-1, 32, 32), hf.reshape(-1, 32, 125)
    if len(hd) != n or len(hf) != n or not (np.isfinite(hd).all() and np.isfinite(hf).all()):
        return None
    x, factors = released_csi(np.fft.fft(hd, axis=1))
    return x, released_freq(np.fft.fft(hf, axis=1), factors), redraws


def batch_sizes(n: int, largest: int = 25, spread: int = 32) -> list[int]:
    """Split `n` samples into batches of `ceil(n / spread)`, at most `largest` (about `spread`
    batches for small `n`: work for many processes); depends on `n` only, so the data do not
    depend on the number of workers."""
    per = max(1, min(largest, -(-n // spread)))
    return [min(per, n - start) for start in range(0, n, per)]


def plan_batches(n: int, seed: int) -> list[tuple[int, int]]:
    """(samples, Octave seed) of every batch, in order: fixed by `n` and `seed` alone."""
    sizes = batch_sizes(n)
    seeds = np.random.SeedSequence(seed).generate_state(len(sizes)) % 2**31
    return [(size, int(s)) for size, s in zip(sizes, seeds, strict=True)]


BatchSource = Callable[
    [list[tuple[int, int]], Path, Callable[[int], object]], Iterable[BatchResult]
]
"""(batch plan, scratch folder, progress callback) -> the batches' results in plan order."""


def local_batches(preset: Cost2100Preset, model: Path, workers: int) -> BatchSource:
    """Batches drawn by `workers` Octave processes at a time on this machine."""

    def draw(
        batches: list[tuple[int, int]], work: Path, done: Callable[[int], object]
    ) -> Iterator[BatchResult]:
        octave = find_octave()

        def one(batch: tuple[int, int]) -> BatchResult:
            result = run_batch(preset, model, batch[0], batch[1], work, octave)
            done(batch[0])
            return result

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield from pool.map(one, batches)

    return draw


def settings(preset: Cost2100Preset, model: Path, octave: str) -> dict[str, Any]:
    """The manifest's record of how the data were drawn."""
    version = subprocess.run(
        [octave, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        **asdict(preset),
        "tones": 1024,
        "bs_array": "32-position virtual linear array along x (MIMO_VLA_omni style)",
        "ue": "one antenna, uniform in the square, z = 0, one snapshot per sample",
        "model_dir": str(model),
        "octave": version[0] if version else "unknown",
    }


def write_cost2100_dataset(
    out_dir: str | os.PathLike[str],
    *,
    cost2100_dir: str | os.PathLike[str],
    scenario: str = "indoor",
    n: int = 150,
    seed: int = 0,
    workers: int = 1,
    val_fraction: float = 0.2,
    test_fraction: float = 2 / 15,
    overwrite: bool = False,
    progress: bool = False,
    batches: BatchSource | None = None,
) -> dict[str, Path]:
    """Draw `n` COST2100 samples and write them as the built-in writer does; paths by role.

    Files: `DATA_H{train,val,test}{in|out}.mat` (`HT`), `DATA_HtestF{in|out}_all.mat`
    (`HF_all`) and `cost2100_dataset.json` (settings, Octave version, redraws, reruns).
    Every check of the output location runs before Octave starts. `batches`: who draws the
    batches of `plan_batches(n, seed)` (default: `workers` Octave processes here;
    `cost2100_shards` runs them as Ray tasks); the files are the same either way.
    """
    import json

    from csideploy.calibration.dataset_writer import _split_counts, dataset_bytes
    from csideploy.calibration.layout import split_filename
    from csideploy.calibration.output_guard import (
        check_disk_space,
        move_into_place,
        refuse_existing,
        staged_output,
    )

    if scenario not in PRESETS:
        raise ValueError(f"unknown COST2100 scenario {scenario!r}; expected indoor or outdoor")
    preset, model, octave = PRESETS[scenario], model_dir(cost2100_dir), find_octave()
    counts = _split_counts(n, val_fraction, test_fraction)
    names = {s: split_filename(s, scenario) for s in ("train", "val", "test", "testF")}
    names["manifest"] = "cost2100_dataset.json"
    target = Path(out_dir)
    refuse_existing(target, names.values(), overwrite)
    with staged_output(target) as staging:  # first: an unwritable target fails here, at once
        check_disk_space(target, dataset_bytes(counts))
        source = batches or local_batches(preset, model, workers)
        tally = _write_batches(staging, names, counts, preset.network, source, seed, progress)
        manifest = {
            "generator": GENERATOR_ID,
            "note": "COST2100 model channels; not the released files (the same seed and n "
            "give the same files)",
            "batches": {"count": len(batch_sizes(n)), "largest": batch_sizes(n)[0], "seeds": SEEDS},
            "scenario": scenario,
            "n": n,
            "seed": seed,
            "counts": counts,
            "files": names,
            "scaling": "per sample: x / (2 max |Re, Im|) + 0.5",
            "angle_bins": "centred (fftshift over the antenna DFT)",
            "zero_offset": 0.5,
            "hf_frequencies": "fractional subcarriers 1024*m/257, m=0..124, angle domain",
            "settings": settings(preset, model, octave),
            **tally,
        }
        (staging / names["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
        move_into_place(staging, target, names.values())
    return {role: target / name for role, name in names.items()}


def _write_batches(
    staging: Path,
    names: dict[str, str],
    counts: dict[str, int],
    network: str,
    batches: BatchSource,
    seed: int,
    progress: bool,
) -> dict[str, int]:
    """Stream the batches into the split files in order; returns redraw / rerun counts."""
    from contextlib import ExitStack

    from tqdm.auto import tqdm

    from csideploy.calibration.mat_stream import open_mat_writer

    n = sum(counts.values())
    bounds = np.cumsum([0, counts["train"], counts["val"], counts["test"]])
    tally = {"redraws": 0, "reruns": 0}
    with ExitStack() as stack:
        writers = [
            stack.enter_context(
                open_mat_writer(staging / names[s], {"HT": (counts[s], 2048, np.float32)})
            )
            for s in ("train", "val", "test")
        ]
        shape = {"HF_all": (counts["test"], 4000, np.complex64)}
        freq = stack.enter_context(open_mat_writer(staging / names["testF"], shape))
        bar = stack.enter_context(
            tqdm(total=n, unit="sample", desc=f"cost2100 {network}", disable=not progress)
        )
        work = staging / "octave"
        work.mkdir()
        stack.callback(shutil.rmtree, work, True)  # Octave's scratch never reaches the target
        start = 0
        for batch in batches(plan_batches(n, seed), work, bar.update):
            for row in range(len(batch.x)):
                split = int(np.searchsorted(bounds, start + row, side="right")) - 1
                local = start + row - int(bounds[split])
                writers[split].write("HT", local, batch.x[row : row + 1])
                if split == 2:
                    freq.write("HF_all", local, batch.hf[row : row + 1])
            start += len(batch.x)
            tally["redraws"] += batch.redraws
            tally["reruns"] += batch.reruns
        for writer in (*writers, freq):
            writer.close()
    return tally
