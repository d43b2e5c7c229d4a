"""The synthetic CSI generator: determinism, format, physics-shaped statistics, data sets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from csideploy.calibration import synthetic as syn
from csideploy.calibration.dataset_writer import write_synthetic_dataset
from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.calibration.synthetic_dft import _angular_delay_chunk
from csideploy.errors import OutputExistsError
from csideploy.metrics import rho


def test_same_seed_gives_identical_bytes() -> None:
    a = syn.generate(300, scenario="indoor", seed=3)
    b = syn.generate(300, scenario="indoor", seed=3)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, syn.generate(300, scenario="indoor", seed=4))


def test_threads_do_not_change_the_output() -> None:
    n = 2 * syn.CHUNK + 17
    one = syn.generate(n, scenario="outdoor", seed=9, workers=1)
    many = syn.generate(n, scenario="outdoor", seed=9, workers=3)
    assert one.tobytes() == many.tobytes()


@pytest.mark.parametrize("scenario", ["indoor", "outdoor"])
def test_shape_dtype_and_range(scenario: str) -> None:
    x, hf = syn.generate(64, scenario=scenario, seed=1, return_freq=True)
    assert x.shape == (64, 2, 32, 32)
    assert x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert abs(float(np.median(x)) - 0.5) < 0.01  # most entries are near zero (0.5)
    assert hf.shape == (64, 32, 125)
    assert hf.dtype == np.complex64
    assert np.isfinite(hf).all()


@pytest.mark.parametrize("scenario", ["indoor", "outdoor"])
def test_closed_form_matches_explicit_2d_dft(scenario: str) -> None:
    cfg = syn.SyntheticConfig.preset(scenario)
    paths = syn._draw_paths(cfg, 6, syn._rng(11, 0))
    fast = _angular_delay_chunk(paths)
    slow = syn.angular_delay_reference(paths)
    assert np.abs(fast - slow).max() <= 1e-5 * np.abs(slow).max()


def test_closed_form_holds_next_to_grid_points() -> None:
    """Paths (nudged) onto the exact DFT grid, where the series' closed form is 0/0."""
    sin_angle = np.array([[0.0, 1 / 16, -0.5, 0.3]])
    delay = np.array([[0.0, 1.0, 5.0, 2.5]])
    paths = syn.Paths(
        sin_angle=syn._off_grid(sin_angle * 16) / 16,
        delay=syn._off_grid(delay),
        gain=np.array([[1.0, 0.5j, -0.3, 0.2 + 0.1j]]),
    )
    fast = _angular_delay_chunk(paths)
    slow = syn.angular_delay_reference(paths)
    assert np.isfinite(fast).all()
    assert np.abs(fast - slow).max() <= 1e-5 * np.abs(slow).max()


def test_indoor_energy_sits_in_the_first_delay_columns() -> None:
    profile = syn.delay_energy_profile(syn.generate(1000, scenario="indoor", seed=5))
    assert profile.shape == (32,)
    assert profile.sum() == pytest.approx(1.0)
    assert profile[:4].sum() > 0.8  # measured: about 0.98


def test_outdoor_is_less_sparse_in_delay_than_indoor() -> None:
    indoor = syn.delay_energy_profile(syn.generate(500, scenario="indoor", seed=5))
    outdoor = syn.delay_energy_profile(syn.generate(500, scenario="outdoor", seed=5))
    assert outdoor[:2].sum() < indoor[:2].sum() - 0.2


@pytest.mark.parametrize("scenario", ["indoor", "outdoor"])
def test_hf_matches_x_so_perfect_reconstruction_scores_rho_near_one(scenario: str) -> None:
    x, hf = syn.generate(100, scenario=scenario, seed=2, return_freq=True)
    assert rho(hf, x) > 0.97  # short of 1 only by energy outside the 32 kept delay rows
    other = syn.generate(100, scenario=scenario, seed=3)
    assert rho(hf, other) < 0.5


@pytest.mark.parametrize("scenario", ["indoor", "outdoor"])
def test_every_sample_is_scaled_by_its_own_largest_component(scenario: str) -> None:
    """The released convention: max |x - 0.5| is 0.5 in every sample, not once per data set."""
    x = syn.generate(200, scenario=scenario, seed=6)
    peaks = np.abs(x - 0.5).reshape(len(x), -1).max(axis=1)
    np.testing.assert_allclose(peaks, 0.5, atol=1e-6)
    assert 0.015 < float((x - 0.5).std()) < 0.05  # COST2100-model indoor: about 0.027


def test_angle_bins_are_centred() -> None:
    """A path at zero angle lands in angle bin 16 (fftshift), not bin 0."""
    paths = syn.Paths(
        sin_angle=syn._off_grid(np.zeros((1, 1))),
        delay=syn._off_grid(np.full((1, 1), 3.0)),
        gain=np.ones((1, 1), dtype=complex),
    )
    ha = np.abs(_angular_delay_chunk(paths)[0])
    assert np.unravel_index(int(ha.argmax()), ha.shape) == (16, 3)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="clusters_min"):
        syn.SyntheticConfig(clusters_min=5, clusters_max=2)
    with pytest.raises(ValueError, match="angular_spread_deg"):
        syn.SyntheticConfig(angular_spread_deg=-1.0)
    with pytest.raises(ValueError, match="subpaths"):
        syn.SyntheticConfig(subpaths=0)
    with pytest.raises(ValueError, match="sector_deg"):
        syn.SyntheticConfig(sector_deg=200.0)
    with pytest.raises(ValueError, match="first_arrival_min_ns"):
        syn.SyntheticConfig(first_arrival_min_ns=60.0, first_arrival_ns=50.0)
    with pytest.raises(ValueError, match="pdp_decay_ns"):
        syn.SyntheticConfig(pdp_decay_ns=float("nan"))
    with pytest.raises(ValueError, match="indoor or outdoor"):
        syn.SyntheticConfig.preset("urban")
    with pytest.raises(dataclasses.FrozenInstanceError):
        syn.SyntheticConfig.preset("indoor").subpaths = 3  # type: ignore[misc]


def test_custom_config_stays_in_range() -> None:
    cfg = dataclasses.replace(syn.SyntheticConfig.preset("indoor"), subpaths=4)
    x = syn.generate(50, scenario=cfg, seed=0)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n must be"):
        syn.generate(0)
    with pytest.raises(ValueError, match="seed must be"):
        syn.generate(5, seed=-1)


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    x = syn.generate(10, progress=True)
    assert x.shape == (10, 2, 32, 32)
    assert "synthetic indoor" in capsys.readouterr().err


def test_default_calibration_and_evaluation_differ() -> None:
    cal = syn.default_calibration(40)
    ev = syn.default_evaluation(40)
    assert cal.shape == ev.shape == (40, 2, 32, 32)
    assert not np.array_equal(cal, ev)
    assert np.array_equal(cal, syn.generate(40, scenario="indoor", seed=syn.CALIBRATION_SEED))


def _row_set(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_write_synthetic_dataset(tmp_path: Path) -> None:
    out = tmp_path / "data"
    paths = write_synthetic_dataset(
        out, scenario="indoor", n=60, seed=4, val_fraction=0.25, test_fraction=0.25
    )
    assert {p.name for p in out.iterdir()} == {
        "DATA_Htrainin.mat",
        "DATA_Hvalin.mat",
        "DATA_Htestin.mat",
        "DATA_HtestFin_all.mat",
        "synthetic_dataset.json",
    }
    train, val, test = (load_csi(paths[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (30, 15, 15)
    hf = load_csi_freq(paths["testF"])
    assert hf.shape == (15, 32, 125)
    assert rho(hf, test) > 0.97
    # disjoint seeds: no sample appears in two splits
    rows = [_row_set(train), _row_set(val), _row_set(test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    manifest = json.loads(paths["manifest"].read_text())
    seeds = manifest["split_seeds"]
    assert len(set(seeds.values())) == 3
    assert manifest["scaling"].startswith("per sample")
    assert manifest["generator"] == syn.GENERATOR_ID
    assert "NOT COST2100" in manifest["note"]
    # each split is exactly generate() with its recorded seed
    assert np.array_equal(val, syn.generate(15, scenario="indoor", seed=seeds["val"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_write_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    kwargs = {"scenario": "outdoor", "n": 12, "val_fraction": 0.25, "test_fraction": 0.25}
    first = write_synthetic_dataset(tmp_path, seed=1, **kwargs)
    assert first["train"].name == "DATA_Htrainout.mat"
    with pytest.raises(OutputExistsError, match=r"DATA_Htrainout\.mat"):
        write_synthetic_dataset(tmp_path, seed=2, **kwargs)
    before = load_csi(first["train"])
    write_synthetic_dataset(tmp_path, seed=2, overwrite=True, **kwargs)
    assert not np.array_equal(before, load_csi(first["train"]))
    with pytest.raises(ValueError, match="empty split"):
        write_synthetic_dataset(tmp_path / "x", n=3, val_fraction=0.1, test_fraction=0.1)


def test_split_seeds_are_disjoint_and_stable() -> None:
    seeds = syn.split_seeds(0)
    assert seeds == syn.split_seeds(0)
    assert len(set(seeds.values())) == 3
    assert set(seeds.values()).isdisjoint(syn.split_seeds(1).values())
