"""Paired UL/DL data from the built-in generator, and the bounded-memory MAT v5 writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.calibration.mat_write import save_csi_mat
from csideploy.calibration.paired import (
    UL_VARIABLE,
    MatStreamWriter,
    generate_paired,
    load_paired,
    write_paired_dataset,
)
from csideploy.calibration.synthetic import generate, split_seeds
from csideploy.errors import DataError, OutputExistsError, ShapeError


def complex_ad(x: np.ndarray) -> np.ndarray:
    """(N, 2, 32, 32) [0, 1]-offset CSI -> complex (N, 1024)."""
    return ((x[:, 0] - 0.5) + 1j * (x[:, 1] - 0.5)).reshape(len(x), -1)


def pair_statistics(dl: np.ndarray, ul: np.ndarray) -> dict[str, float]:
    """Median per-sample correlations of magnitudes, complex values and delay profiles."""
    a, b = complex_ad(dl), complex_ad(ul)
    mag = [np.corrcoef(np.abs(x), np.abs(y))[0, 1] for x, y in zip(a, b, strict=True)]
    cplx = np.abs((a * b.conj()).sum(1)) / np.sqrt(
        (np.abs(a) ** 2).sum(1) * (np.abs(b) ** 2).sum(1)
    )
    pa = (np.abs(a.reshape(-1, 32, 32)) ** 2).sum(1)  # energy per delay column
    pb = (np.abs(b.reshape(-1, 32, 32)) ** 2).sum(1)
    delay = [np.corrcoef(x, y)[0, 1] for x, y in zip(pa, pb, strict=True)]
    return {
        "magnitude": float(np.median(mag)),
        "complex": float(np.median(cplx)),
        "delay": float(np.median(delay)),
    }


@pytest.mark.parametrize("scenario", ["indoor", "outdoor"])
def test_pairs_share_geometry_but_not_phases(scenario: str) -> None:
    dl, ul = generate_paired(400, scenario=scenario, seed=7)
    assert dl.shape == ul.shape == (400, 2, 32, 32) and dl.dtype == ul.dtype == np.float32
    assert np.array_equal(dl, generate(400, scenario=scenario, seed=7))  # DL = synthetic data
    assert ul.min() >= 0.0 and ul.max() <= 1.0
    stats = pair_statistics(dl, ul)
    # Same delays and angles: the angular-delay magnitudes and the delay profiles follow
    # each other; fresh path phases: the complex values do not.
    assert stats["magnitude"] > 0.7
    assert stats["delay"] > 0.8
    # (outdoor clusters are narrow, nearly one angular-delay bin each, so fresh phases
    # decorrelate the complex values less there)
    assert stats["complex"] < stats["magnitude"] - (0.3 if scenario == "indoor" else 0.2)
    # Same drops: a DL sample matches its own UL far better than another drop's UL.
    shuffled = pair_statistics(dl, np.roll(ul, 1, axis=0))
    assert shuffled["magnitude"] < 0.5 * stats["magnitude"]


def test_pairs_are_deterministic_and_carrier_dependent() -> None:
    a = generate_paired(64, scenario="indoor", seed=1)
    b = generate_paired(64, scenario="indoor", seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    near = generate_paired(64, scenario="indoor", seed=1, ul_carrier_hz=5.3e9)
    # A zero duplex gap keeps the array response: only the path phases change.
    assert pair_statistics(*near)["magnitude"] > pair_statistics(*a)["magnitude"] - 0.05
    with pytest.raises(ValueError, match="ul_carrier_hz must be positive"):
        generate_paired(4, ul_carrier_hz=-1.0)
    with pytest.raises(ValueError, match="n must be an integer"):
        generate_paired(0)


def test_write_paired_dataset_layout(tmp_path: Path) -> None:
    out = tmp_path / "paired"
    result = write_paired_dataset(out, scenario="indoor", n=30, seed=4)
    assert result.counts == {"train": 20, "val": 6, "test": 4}
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "DATA_HtestFin_all.mat",
        "DATA_Htestin.mat",
        "DATA_Htrainin.mat",
        "DATA_Hvalin.mat",
        "paired_dataset.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["paired"]  # no staging left behind
    seeds = split_seeds(4)
    for split in ("train", "val", "test"):
        dl, ul = load_paired(result.files[split])
        ref_dl, ref_ul = generate_paired(result.counts[split], scenario="indoor", seed=seeds[split])
        assert np.array_equal(dl, ref_dl) and np.array_equal(ul, ref_ul)
        assert np.array_equal(load_csi(result.files[split]), dl)  # plain readers see the DL
    variables = {name for name, _, _ in scipy.io.whosmat(result.files["train"])}
    assert variables == {"HT", UL_VARIABLE}
    hf = load_csi_freq(result.files["testF"])
    _, ref_hf = generate(4, scenario="indoor", seed=seeds["test"], return_freq=True)
    assert np.allclose(hf, ref_hf, atol=1e-6)
    manifest = json.loads(result.files["manifest"].read_text())
    assert manifest["ul_carrier_hz"] == pytest.approx(5.1e9)
    assert manifest["variables"] == {"HT": "downlink CSI", "HT_UL": "uplink CSI, same drops"}
    with pytest.raises(OutputExistsError, match="would overwrite"):
        write_paired_dataset(out, scenario="indoor", n=30, seed=4)
    write_paired_dataset(out, scenario="indoor", n=30, seed=5, overwrite=True)


def test_load_paired_rejects_unpaired_files(tmp_path: Path) -> None:
    path = save_csi_mat(tmp_path / "plain.mat", generate(3, seed=0))
    with pytest.raises(DataError, match=r"not a paired UL/DL file.*HT_UL"):
        load_paired(path)


def test_stream_writer_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    real = rng.random((37, 2048), dtype=np.float32)
    cplx = (rng.standard_normal((37, 4000)) + 1j * rng.standard_normal((37, 4000))).astype(
        np.complex64
    )
    column = rng.random((37, 1))
    spec = {
        "HT": (37, 2048, np.float32),
        "HF_all": (37, 4000, np.complex64),
        "HT_norm": (37, 1, np.float64),
    }
    with MatStreamWriter(tmp_path / "x.mat", spec) as writer:
        for start in range(0, 37, 10):  # uneven chunks
            writer.write("HT", start, real[start : start + 10])
            writer.write("HF_all", start, cplx[start : start + 10])
            writer.write("HT_norm", start, column[start : start + 10])
        path = writer.close()
    loaded = scipy.io.loadmat(path)
    assert loaded["HT"].dtype == np.float32 and np.array_equal(loaded["HT"], real)
    assert np.array_equal(loaded["HF_all"], cplx) and np.array_equal(loaded["HT_norm"], column)
    assert np.array_equal(load_csi(path).reshape(37, -1), real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mat"]


def test_stream_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="4 GiB limit"):
        MatStreamWriter(tmp_path / "big.mat", {"HT": (600_000, 2048, np.float32)})
    with pytest.raises(ValueError, match="not a valid MATLAB variable name"):
        MatStreamWriter(tmp_path / "bad.mat", {"_x": (2, 2, np.float32)})
    with MatStreamWriter(tmp_path / "part.mat", {"HT": (4, 2048, np.float32)}) as writer:
        with pytest.raises(ShapeError, match="does not fit"):
            writer.write("HT", 3, np.zeros((2, 2048), np.float32))
        writer.write("HT", 0, np.zeros((2, 2048), np.float32))
        with pytest.raises(DataError, match="rows not written"):
            writer.close()
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary maps left
