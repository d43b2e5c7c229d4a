"""CSI file reading and writing: COST2100 round trips, every bad input, dataset layout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.calibration.layout import find_split, resolve_data, resolve_split, split_filename
from csideploy.calibration.mat_write import save_csi_freq_mat, save_csi_mat
from csideploy.errors import DataError, ShapeError


@pytest.fixture
def csi() -> np.ndarray:
    """Five samples of valid CSI in the COST2100 convention, float32 (5, 2, 32, 32)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.3, 0.7, size=(5, 2, 32, 32)).astype(np.float32)


@pytest.fixture
def hf() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.standard_normal((3, 32, 125)) + 1j * rng.standard_normal((3, 32, 125))).astype(
        np.complex64
    )


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def _write_mat(path: Path, **variables: object) -> Path:
    scipy.io.savemat(path, variables)
    return path


# --------------------------------------------------------------------------- round trips


def test_mat_round_trip_is_exact(tmp_path: Path, csi: np.ndarray) -> None:
    path = save_csi_mat(tmp_path / "DATA_Htestin.mat", csi)
    assert np.array_equal(load_csi(path), csi)


def test_mat_file_has_cost2100_layout(tmp_path: Path, csi: np.ndarray) -> None:
    path = save_csi_mat(tmp_path / "a.mat", csi)
    raw = scipy.io.loadmat(path)["HT"]
    assert raw.shape == (5, 2048)
    assert raw.dtype == np.float32
    # [real 1024 | imag 1024], each row-major (angle, delay) with delay fastest
    assert np.array_equal(raw[2, :1024], csi[2, 0].ravel())
    assert np.array_equal(raw[2, 1024:], csi[2, 1].ravel())
    assert raw[1, 1] == csi[1, 0, 0, 1]  # second entry: delay 1 of angle 0


def test_mat_float64_and_flat_input(tmp_path: Path, csi: np.ndarray) -> None:
    wide = _rows(csi).astype(np.float64)
    path = save_csi_mat(tmp_path / "b.mat", wide, variable="H", extra={"note": "x"})
    mat = scipy.io.loadmat(path)
    assert mat["H"].dtype == np.float64
    assert "note" in mat
    got = load_csi(path, variable="H")
    assert got.dtype == np.float32
    assert np.array_equal(got, csi)


def test_limit_keeps_first_samples(tmp_path: Path, csi: np.ndarray) -> None:
    path = save_csi_mat(tmp_path / "c.mat", csi)
    assert np.array_equal(load_csi(path, limit=2), csi[:2])
    assert np.array_equal(load_csi(path, limit=50), csi)
    with pytest.raises(ValueError, match="limit"):
        load_csi(path, limit=0)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path, csi: np.ndarray) -> None:
    path = save_csi_mat(tmp_path / "d.mat", csi)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_csi_mat(path, csi[:2], extra={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mat"]


def test_save_rejects_wrong_shapes(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"\(3, 100\)"):
        save_csi_mat(tmp_path / "e.mat", np.zeros((3, 100)))
    with pytest.raises(ShapeError):
        save_csi_mat(tmp_path / "e.mat", np.zeros((0, 2048)))
    with pytest.raises(ValueError, match="overwrite"):
        save_csi_mat(tmp_path / "e.mat", np.zeros((1, 2048)), extra={"HT": 1})


def test_npy_inputs(tmp_path: Path, csi: np.ndarray) -> None:
    np.save(tmp_path / "wide.npy", _rows(csi))
    np.save(tmp_path / "shaped.npy", csi.astype(np.float64))
    assert np.array_equal(load_csi(tmp_path / "wide.npy"), csi)
    assert np.array_equal(load_csi(tmp_path / "shaped.npy", limit=3), csi[:3])


def test_loaded_arrays_are_writable(tmp_path: Path, csi: np.ndarray) -> None:
    np.save(tmp_path / "w.npy", csi)
    got = load_csi(tmp_path / "w.npy")
    got[0, 0, 0, 0] = 0.25  # not a read-only memory map
    assert np.load(tmp_path / "w.npy")[0, 0, 0, 0] == csi[0, 0, 0, 0]


def test_npz_inputs(tmp_path: Path, csi: np.ndarray) -> None:
    np.savez(tmp_path / "ht.npz", HT=_rows(csi), other=np.zeros(3))
    np.savez(tmp_path / "csi.npz", csi=csi, other=np.zeros(3))
    np.savez(tmp_path / "single.npz", whatever=csi)
    np.savez(tmp_path / "named.npz", mine=csi, other=np.zeros(3))
    for name in ("ht", "csi", "single"):
        assert np.array_equal(load_csi(tmp_path / f"{name}.npz"), csi)
    assert np.array_equal(load_csi(tmp_path / "named.npz", variable="mine"), csi)
    with pytest.raises(DataError, match=r"'mine', 'other'"):
        load_csi(tmp_path / "named.npz")
    with pytest.raises(DataError, match=r"no array 'HT'.*'mine', 'other'"):
        load_csi(tmp_path / "named.npz", variable="HT")


# --------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.mat: CSI data file not found"):
        load_csi(tmp_path / "nope.mat")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_csi(tmp_path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"data\.csv: unknown CSI file extension '\.csv'"):
        load_csi(path)


def test_missing_variable_lists_present_ones(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "f.mat", H=np.zeros((2, 2048)), Hval=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"f\.mat: no variable 'HT'; variables present: .*'H'"):
        load_csi(path)


def test_wrong_width_names_both_shapes(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "g.mat", HT=np.full((4, 1000), 0.5))
    with pytest.raises(DataError, match=r"shape \(4, 1000\), expected \(N, 2048\)"):
        load_csi(path)


def test_transposed_data_gets_a_hint(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "h.mat", HT=np.full((2048, 3), 0.5))
    with pytest.raises(DataError, match="looks transposed"):
        load_csi(path)


def test_nan_is_counted_and_located(tmp_path: Path, csi: np.ndarray) -> None:
    bad = csi.copy()
    bad[3, 0, 1, 2] = np.nan
    bad[4, 1, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"2 non-finite values \(2 NaN, 0 inf\).*sample index 3"):
        load_csi(tmp_path / "nan.npy")


def test_inf_is_reported(tmp_path: Path, csi: np.ndarray) -> None:
    bad = _rows(csi).astype(np.float64)
    bad[1, 7] = np.inf
    path = _write_mat(tmp_path / "inf.mat", HT=bad)
    with pytest.raises(DataError, match=r"1 non-finite values \(0 NaN, 1 inf\).*sample index 1"):
        load_csi(path)


def test_empty_array(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "empty.mat", HT=np.zeros((0, 2048)))
    with pytest.raises(DataError, match="empty"):
        load_csi(path)


def test_out_of_range_means_unnormalised(tmp_path: Path, csi: np.ndarray) -> None:
    np.save(tmp_path / "raw.npy", (csi - 0.5) * 40.0)
    with pytest.raises(DataError, match=r"values range over \[-[0-9.]+, [0-9.]+\].*un-normalised"):
        load_csi(tmp_path / "raw.npy")


def test_small_overshoot_is_tolerated(tmp_path: Path, csi: np.ndarray) -> None:
    near = csi.copy()
    near[0, 0, 0, 0] = 1.005
    near[0, 0, 0, 1] = -0.004
    np.save(tmp_path / "near.npy", near)
    assert load_csi(tmp_path / "near.npy").shape == (5, 2, 32, 32)


def test_complex_csi_is_rejected(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.zeros((2, 2048), dtype=np.complex64))
    with pytest.raises(DataError, match="must be real"):
        load_csi(tmp_path / "c.npy")


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(".mat", "not a readable MATLAB"), (".npy", "not a NumPy .npy"), (".npz", "not a NumPy .npz")],
)
def test_corrupt_files(tmp_path: Path, suffix: str, message: str) -> None:
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"this is not a data file at all" * 30)
    with pytest.raises(DataError, match=rf"junk\{suffix}: {message}"):
        load_csi(path)


def test_pickled_npy_is_not_loaded(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: not a readable \.npy array"):
        load_csi(tmp_path / "obj.npy")


# --------------------------------------------------------------------------- MATLAB v7.3


def _write_v73(path: Path, **variables: np.ndarray) -> Path:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header, arrays transposed."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as h5:
        for name, value in variables.items():
            if np.iscomplexobj(value):
                compound = np.dtype([("real", "<f4"), ("imag", "<f4")])
                data = np.empty(value.T.shape, dtype=compound)
                data["real"], data["imag"] = value.T.real, value.T.imag
            else:
                data = value.T
            h5.create_dataset(name, data=data)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    return path


def test_v73_mat_is_read_with_h5py(tmp_path: Path, csi: np.ndarray) -> None:
    path = _write_v73(tmp_path / "v73.mat", HT=_rows(csi).astype(np.float64))
    assert np.array_equal(load_csi(path), csi)
    assert np.array_equal(load_csi(path, limit=2), csi[:2])
    with pytest.raises(DataError, match=r"no variable 'X'; variables present: 'HT'"):
        load_csi(path, variable="X")


def test_v73_freq_is_read_with_h5py(tmp_path: Path, hf: np.ndarray) -> None:
    path = _write_v73(tmp_path / "v73f.mat", HF_all=hf.reshape(3, -1))
    assert np.array_equal(load_csi_freq(path), hf)


def test_v73_without_h5py_names_the_extra(
    tmp_path: Path, csi: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write_v73(tmp_path / "v73.mat", HT=_rows(csi))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(DataError, match=r"v7\.3.*csideploy\[hdf5\]"):
        load_csi(path)


# --------------------------------------------------------------------------- HF_all


def test_freq_round_trip(tmp_path: Path, hf: np.ndarray) -> None:
    path = save_csi_freq_mat(tmp_path / "DATA_HtestFin_all.mat", hf)
    assert scipy.io.loadmat(path)["HF_all"].shape == (3, 4000)
    got = load_csi_freq(path)
    assert got.dtype == np.complex64
    assert np.array_equal(got, hf)
    assert np.array_equal(load_csi_freq(path, limit=1), hf[:1])


def test_freq_npz_and_npy(tmp_path: Path, hf: np.ndarray) -> None:
    np.savez(tmp_path / "f.npz", anything=hf.reshape(3, -1))
    np.save(tmp_path / "f.npy", hf)
    assert np.array_equal(load_csi_freq(tmp_path / "f.npz"), hf)
    assert np.array_equal(load_csi_freq(tmp_path / "f.npy", limit=2), hf[:2])


def test_freq_errors(tmp_path: Path, hf: np.ndarray) -> None:
    real = _write_mat(tmp_path / "real.mat", HF_all=np.zeros((2, 4000)))
    with pytest.raises(DataError, match="must be complex"):
        load_csi_freq(real)
    narrow = _write_mat(tmp_path / "narrow.mat", HF_all=np.zeros((2, 400), dtype=complex))
    with pytest.raises(DataError, match=r"shape \(2, 400\), expected \(N, 4000\)"):
        load_csi_freq(narrow)
    bad = hf.copy()
    bad[2, 0, 0] = np.nan
    nan = save_csi_freq_mat(tmp_path / "nan.mat", bad)
    with pytest.raises(DataError, match="sample index 2"):
        load_csi_freq(nan)
    with pytest.raises(DataError, match="variables present: 'HF_all'"):
        load_csi_freq(nan, variable="HF")


# --------------------------------------------------------------------------- dataset layout


def test_split_filenames() -> None:
    assert split_filename("train", "indoor") == "DATA_Htrainin.mat"
    assert split_filename("val", "out") == "DATA_Hvalout.mat"
    assert split_filename("testF", "outdoor") == "DATA_HtestFout_all.mat"
    with pytest.raises(ValueError, match="split"):
        split_filename("dev", "indoor")
    with pytest.raises(ValueError, match="scenario"):
        split_filename("train", "urban")


def test_find_and_resolve_splits(tmp_path: Path, csi: np.ndarray) -> None:
    for split in ("train", "val", "test"):
        save_csi_mat(tmp_path / split_filename(split, "indoor"), csi)
    assert find_split(tmp_path, "val", "indoor") == tmp_path / "DATA_Hvalin.mat"
    assert resolve_split(tmp_path, "test") == tmp_path / "DATA_Htestin.mat"
    assert resolve_data(tmp_path, split="train") == tmp_path / "DATA_Htrainin.mat"
    assert resolve_data(tmp_path / "DATA_Hvalin.mat") == tmp_path / "DATA_Hvalin.mat"
    with pytest.raises(DataError, match=r"no DATA_Htestout\.mat .*holds: DATA_Htestin\.mat"):
        find_split(tmp_path, "test", "outdoor")


def test_both_scenarios_need_a_choice(tmp_path: Path, csi: np.ndarray) -> None:
    save_csi_mat(tmp_path / "DATA_Htestin.mat", csi)
    np.save(tmp_path / "DATA_Htestout.npy", csi)
    with pytest.raises(DataError, match="both indoor and outdoor"):
        resolve_split(tmp_path, "test")
    assert resolve_split(tmp_path, "test", "outdoor") == tmp_path / "DATA_Htestout.npy"


def test_directory_without_expected_files_lists_contents(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match=r"no test split found .*holds: readme\.txt, sub/"):
        resolve_data(tmp_path)
    with pytest.raises(DataError, match=r"not found"):
        resolve_data(tmp_path / "missing")
    with pytest.raises(DataError, match="directory not found"):
        find_split(tmp_path / "missing", "train", "indoor")


def test_saved_file_permissions_follow_umask(tmp_path: Path, csi: np.ndarray) -> None:
    path = save_csi_mat(tmp_path / "perm.mat", csi)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
