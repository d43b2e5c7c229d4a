"""Bounded-memory writing: blocks of the generator, MATLAB v5 and v7.3 streams, disk checks."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from csideploy.calibration import synthetic as syn
from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.calibration.mat73_stream import Mat73StreamWriter
from csideploy.calibration.mat_stream import MatStreamWriter, fits_v5, open_mat_writer
from csideploy.calibration.output_guard import check_disk_space
from csideploy.errors import OutputError


def test_blocks_are_generate_byte_for_byte() -> None:
    n = 3 * syn.CHUNK + 5
    whole, hf = syn.generate(n, scenario="outdoor", seed=8, return_freq=True)
    blocks = list(
        syn.generate_blocks(n, scenario="outdoor", seed=8, return_freq=True, block=syn.CHUNK)
    )
    assert [start for start, _x, _hf in blocks] == [0, 256, 512, 768]
    assert np.concatenate([x for _s, x, _h in blocks]).tobytes() == whole.tobytes()
    assert np.concatenate([h for _s, _x, h in blocks]).tobytes() == hf.tobytes()


def test_v5_or_v73_by_size() -> None:
    assert fits_v5({"HT": (524_287, 2048, np.float32)})
    assert not fits_v5({"HT": (524_288, 2048, np.float32)})
    assert not fits_v5({"HF_all": (150_000, 4000, np.complex64)})  # 4.8 GB of complex


def test_v73_stream_round_trip(tmp_path: Path) -> None:
    """A v7.3 (HDF5) file written in chunks reads back through the project's reader."""
    x, hf = syn.generate(7, seed=2, return_freq=True)
    csi_path, freq_path = tmp_path / "DATA_Htestin.mat", tmp_path / "DATA_HtestFin_all.mat"
    with Mat73StreamWriter(csi_path, {"HT": (7, 2048, np.float32)}) as writer:
        writer.write("HT", 0, x[:4])
        writer.write("HT", 4, x[4:])
        writer.close()
    with Mat73StreamWriter(freq_path, {"HF_all": (7, 4000, np.complex64)}) as writer:
        writer.write("HF_all", 0, hf)
        writer.close()
    assert csi_path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(csi_path, "r") as h5:  # MATLAB's column-major (7, 2048) is HDF5 (2048, 7)
        assert h5["HT"].shape == (2048, 7) and h5["HT"].attrs["MATLAB_class"] == b"single"
    np.testing.assert_array_equal(load_csi(csi_path), x)
    np.testing.assert_array_equal(load_csi_freq(freq_path), hf)
    assert sorted(p.name for p in tmp_path.iterdir()) == [freq_path.name, csi_path.name]


def test_unfinished_streams_leave_nothing(tmp_path: Path) -> None:
    for writer_class in (MatStreamWriter, Mat73StreamWriter):
        with (
            pytest.raises(RuntimeError),
            writer_class(tmp_path / "x.mat", {"HT": (4, 2048, np.float32)}) as writer,
        ):
            writer.write("HT", 0, np.zeros((2, 2048), np.float32))
            raise RuntimeError("generation failed half-way")
        assert list(tmp_path.iterdir()) == []


def test_open_mat_writer_picks_v5_for_small_files(tmp_path: Path) -> None:
    writer = open_mat_writer(tmp_path / "a.mat", {"HT": (3, 2048, np.float32)})
    assert isinstance(writer, MatStreamWriter)
    writer.abort()


def test_disk_check_names_bytes_needed_and_free(tmp_path: Path) -> None:
    check_disk_space(tmp_path / "new" / "dir", 1024)  # fits: no error
    with pytest.raises(OutputError, match=r"needs 1,000,000,000,000,000,000 bytes .* free on"):
        check_disk_space(tmp_path / "new" / "dir", 10**18)


def test_splits_over_4_gib_get_a_v73_writer(tmp_path: Path) -> None:
    """600,000 samples do not fit MATLAB v5; the writer is v7.3 (HDF5 allocates lazily)."""
    writer = open_mat_writer(tmp_path / "big.mat", {"HT": (600_000, 2048, np.float32)})
    assert isinstance(writer, Mat73StreamWriter)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
