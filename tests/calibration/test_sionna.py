"""3GPP TR 38.901 data through Sionna (the optional `sionna` extra).

With the extra installed the generator runs for real on a few drops; without it, writing a
data set must fail with MissingDependencyError naming the extra. The missing-extra path is
also checked with Sionna hidden from the import system, whatever is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from csideploy.calibration.sionna_dataset import write_sionna_dataset
from csideploy.calibration.sionna_source import SionnaConfig, sionna_chunks
from csideploy.errors import MissingDependencyError

HAS_SIONNA = importlib.util.find_spec("sionna") is not None


def _rho(x: np.ndarray, hf: np.ndarray) -> np.ndarray:
    """Cosine similarity between HF_all and the 257-point FFT of the kept delay rows."""
    ha = (x[:, 0] - 0.5) + 1j * (x[:, 1] - 0.5)
    padded = np.zeros((len(ha), 32, 257), dtype=complex)
    padded[:, :, :32] = ha
    hf_hat = np.fft.fft(padded, axis=2)[:, :, :125]
    num = np.abs((hf_hat.conj() * hf).sum(axis=1))
    return num / (np.linalg.norm(hf_hat, axis=1) * np.linalg.norm(hf, axis=1))


def _assert_missing(out: Path) -> None:
    with pytest.raises(MissingDependencyError) as info:
        write_sionna_dataset(out, scenario="uma", n=6, progress=False)
    message = str(info.value)
    assert "csideploy[sionna]" in message and "sionna-no-rt" in message
    assert not out.exists()  # fails before touching the disk


def test_missing_extra_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sionna", None)  # as if the extra were not installed
    _assert_missing(tmp_path / "uma")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="scenario must be one of"):
        SionnaConfig(scenario="inh")
    with pytest.raises(ValueError, match="32 antennas x 32 delay rows"):
        SionnaConfig(antennas=64)
    with pytest.raises(ValueError, match="paired_ul_dl must be two positive carriers"):
        SionnaConfig(paired_ul_dl=(2.0, -2.1))
    cfg = SionnaConfig(scenario="umi", paired_ul_dl=(2.0, 2.1))
    assert (cfg.dl_carrier_hz, cfg.ul_carrier_hz, cfg.bs_height) == (2.1e9, 2.0e9, 10.0)


@pytest.mark.slow
def test_sionna_path(tmp_path: Path) -> None:
    """Real generation when the extra is installed; the error message when it is not."""
    if not HAS_SIONNA:
        _assert_missing(tmp_path / "uma")
        return

    # UMa NLOS, unpaired, uneven last chunk; HF_all for rho.
    cfg = SionnaConfig(scenario="uma", los=False)
    rng_state = torch.random.get_rng_state()
    chunks = list(sionna_chunks(5, cfg, seed=3, chunk=2, with_freq=True))
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG left alone
    assert [c.start for c in chunks] == [0, 2, 4]
    x = np.concatenate([c.dl for c in chunks])
    hf = np.concatenate([c.hf for c in chunks])
    norm = np.concatenate([c.norm for c in chunks])
    assert x.shape == (5, 2, 32, 32) and x.dtype == np.float32 and hf.shape == (5, 32, 125)
    assert x.min() >= 0.0 and x.max() <= 1.0 and (norm > 0).all()
    # the released convention: x = 0.5 + Ha / (2 peak), so every sample reaches 0 or 1
    assert np.allclose(np.abs(x - 0.5).reshape(5, -1).max(axis=1), 0.5, rtol=1e-6)
    assert np.median(_rho(x, hf)) > 0.8
    again = np.concatenate([c.dl for c in sionna_chunks(5, cfg, seed=3, chunk=2)])
    assert np.array_equal(again, x)
    other = next(iter(sionna_chunks(2, cfg, seed=4, chunk=2))).dl
    assert not np.array_equal(other, x[:2])

    # UMi UL/DL pairs at 2.0 / 2.1 GHz (DualNet-MP), written as a data set.
    from csideploy.calibration.io import load_csi, load_csi_freq
    from csideploy.calibration.paired import load_paired

    result = write_sionna_dataset(
        tmp_path / "umi",
        scenario="umi",
        n=8,
        seed=1,
        chunk=4,
        progress=False,
        paired_ul_dl=(2.0, 2.1),
    )
    assert result.counts == {"train": 5, "val": 2, "test": 1}
    assert sorted(p.name for p in (tmp_path / "umi").iterdir()) == [
        "DATA_HtestFout_all.mat",
        "DATA_Htestout.mat",
        "DATA_Htrainout.mat",
        "DATA_Hvalout.mat",
        "sionna_dataset.json",
    ]
    dl, ul = load_paired(result.files["train"])
    assert np.array_equal(load_csi(result.files["train"]), dl)
    assert load_csi_freq(result.files["testF"]).shape == (1, 32, 125)
    a = ((dl[:, 0] - 0.5) + 1j * (dl[:, 1] - 0.5)).reshape(len(dl), -1)
    b = ((ul[:, 0] - 0.5) + 1j * (ul[:, 1] - 0.5)).reshape(len(ul), -1)
    mag = np.median([np.corrcoef(np.abs(p), np.abs(q))[0, 1] for p, q in zip(a, b, strict=True)])
    cplx = np.median(
        np.abs((a * b.conj()).sum(1)) / np.sqrt((np.abs(a) ** 2).sum(1) * (np.abs(b) ** 2).sum(1))
    )
    assert mag > 0.5 and cplx < mag - 0.2
    assert result.manifest["ul_carrier_hz"] == 2.0e9
    assert result.manifest["source"].startswith("sionna ")
