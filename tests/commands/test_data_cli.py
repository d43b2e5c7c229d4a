"""`csideploy data synth`: a COST2100-layout data set on disk, end to end through the CLI."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from csideploy.calibration import sionna_dataset, sionna_source
from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.calibration.paired import generate_paired, load_paired
from csideploy.calibration.synthetic import generate, split_seeds
from csideploy.cli import main
from csideploy.commands import data as data_cli

HAS_SIONNA = importlib.util.find_spec("sionna") is not None

_CLI = (sys.executable, "-c", "from csideploy.cli import main; main()")


def _synth(*args: str) -> object:
    return CliRunner().invoke(main, ["data", "synth", *args])


def test_synth_writes_the_cost2100_layout(tmp_path: Path) -> None:
    out = tmp_path / "outdoor"
    options = "--scenario outdoor -n 30 --seed 4 --val-fraction 0.2 --test-fraction 0.1"
    result = _synth(*options.split(), "-o", str(out), "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["source"], summary["scenario"], summary["paired"]) == (
        "builtin",
        "outdoor",
        False,
    )
    assert summary["variables"] == ["HT"] and summary["dl_carrier_ghz"] == 0.3
    assert Path(summary["files"]["train"]).name == "DATA_Htrainout.mat"
    train, val, test = (load_csi(out / f"DATA_H{s}out.mat") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (21, 6, 3)
    assert load_csi_freq(out / "DATA_HtestFout_all.mat").shape == (3, 32, 125)
    # the seed reaches the generator: the training split is regenerable from the manifest
    np.testing.assert_array_equal(
        train, generate(21, scenario="outdoor", seed=split_seeds(4)["train"])
    )
    manifest = json.loads((out / "synthetic_dataset.json").read_text())
    assert manifest["scenario"] == "outdoor" and manifest["seed"] == 4


def test_synth_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    args = ("-n", "12", "-o", str(tmp_path), "--no-progress")
    assert _synth(*args).exit_code == 0
    again = _synth(*args)
    assert again.exit_code == 2
    lines = again.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "DATA_Htrainin.mat" in lines[0]
    assert _synth(*args, "--force").exit_code == 0


def test_synth_rejects_fractions_that_leave_no_training_data(tmp_path: Path) -> None:
    fractions = ["--val-fraction", "0.6", "--test-fraction", "0.5"]
    result = _synth("-n", "10", "-o", str(tmp_path / "d"), *fractions, "--no-progress")
    assert result.exit_code == 2
    assert "empty split" in result.output
    assert not (tmp_path / "d" / "DATA_Htrainin.mat").exists()
    assert _synth("-n", "10", "-o", str(tmp_path / "e"), "--val-fraction", "1.5").exit_code == 2


def test_synth_shows_progress_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "indoor"
    proc = subprocess.run(
        [*_CLI, "data", "synth", "--scenario", "indoor", "-n", "20", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "synthetic indoor" in proc.stderr  # the tqdm bar, on stderr
    assert "DATA_Htrainin.mat" in proc.stdout
    assert load_csi(out / "DATA_Htrainin.mat").shape[1:] == (2, 32, 32)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CLI, *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def test_builtin_paired_writes_ul_and_dl(tmp_path: Path) -> None:
    out = tmp_path / "paired"
    args = ("--paired", "-n", "30", "--seed", "3", "-o", str(out), "--no-progress", "--json")
    result = _synth(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["paired"] is True and summary["variables"] == ["HT", "HT_UL"]
    assert (summary["dl_carrier_ghz"], summary["ul_carrier_ghz"]) == pytest.approx((5.3, 5.1))
    assert summary["counts"] == {"train": 20, "val": 6, "test": 4}
    seeds = split_seeds(3)
    for split in ("train", "val", "test"):
        path = Path(summary["files"][split])
        assert path.name == f"DATA_H{split}in.mat"
        dl, ul = load_paired(path)
        assert dl.shape == ul.shape == (summary["counts"][split], 2, 32, 32)
        np.testing.assert_array_equal(load_csi(path), dl)  # plain readers see the DL
        ref_dl, ref_ul = generate_paired(len(dl), scenario="indoor", seed=seeds[split])
        np.testing.assert_array_equal(dl, ref_dl)
        np.testing.assert_array_equal(ul, ref_ul)
    assert {name for name, _, _ in scipy.io.whosmat(summary["files"]["train"])} == {"HT", "HT_UL"}
    assert load_csi_freq(summary["files"]["testF"]).shape == (4, 32, 125)

    # --ul-carrier-ghz reaches the generator; existing files need --force
    before = _snapshot(out)
    other = ("--paired", "--ul-carrier-ghz", "5.3", "-n", "30", "-o", str(out), "--no-progress")
    refused = _synth(*other)
    assert refused.exit_code == 2 and "would overwrite" in refused.output
    assert _snapshot(out) == before
    assert _synth(*other, "--force").exit_code == 0
    manifest = json.loads((out / "paired_dataset.json").read_text())
    assert manifest["ul_carrier_hz"] == pytest.approx(5.3e9)
    assert _snapshot(out)["DATA_Htrainin.mat"] != before["DATA_Htrainin.mat"]


def test_builtin_paired_outdoor_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "outdoor"
    proc = _run_cli(
        "data", "synth", "--paired", "--scenario", "outdoor", "-n", "12", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "paired outdoor" in proc.stderr  # the progress bar
    assert proc.stdout.startswith("builtin outdoor, paired UL/DL: HT = DL 0.3 GHz")
    assert "DATA_Htrainout.mat" in proc.stdout
    dl, ul = load_paired(out / "DATA_Htrainout.mat")
    assert dl.shape == ul.shape and not np.array_equal(dl, ul)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenario", "uma"), "not a scenario of --source builtin, which takes indoor, outdoor"),
        (
            ("--source", "sionna", "--scenario", "outdoor"),
            "not a scenario of --source sionna, which takes uma, umi, rma",
        ),
        (("--los",), "--los applies to --source sionna only"),
        (("--paired", "--dl-carrier-ghz", "2.1"), "--dl-carrier-ghz applies to --source sionna"),
        (("--chunk", "8"), "--chunk applies to --source sionna only"),
        (("--ul-carrier-ghz", "2.0"), "--ul-carrier-ghz applies to paired data only"),
        (("--source", "sionna", "--paired", "--ul-carrier-ghz", "0"), "--ul-carrier-ghz"),
    ],
)
def test_synth_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = tmp_path / "d"
    result = _synth(*args, "-n", "6", "-o", str(out), "--no-progress")
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_missing_sionna_extra_in_a_real_process(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "sionna"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("sionna hidden for this test")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim.parent), env.get("PYTHONPATH")]))
    out = tmp_path / "uma"
    proc = _run_cli("data", "synth", "--source", "sionna", "-n", "6", "-o", str(out), env=env)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error:") and "pip install 'csideploy[sionna]'" in error
    assert "sionna-no-rt" in error and "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_choices_and_defaults_follow_the_library() -> None:
    """The CLI keeps the Sionna choices literal (fast --help); they must match the library,
    and its defaults must be the library's (3.5 GHz, 1024 x 30 kHz, 6 km/h, chunk 256)."""
    assert data_cli.SCENARIOS["sionna"] == sionna_source.SCENARIOS
    assert data_cli.SIONNA_ARRAYS == sionna_source.ARRAYS
    library = inspect.signature(sionna_dataset.write_sionna_dataset).parameters
    command = {p.name: p for p in data_cli.synth_command.params}
    renamed = {"dl_carrier_ghz": "carrier_ghz"}
    for name in data_cli.SIONNA_ONLY:
        expected = library[renamed.get(name, name)].default
        assert command[name].default == expected, name
    assert library["scenario"].default == data_cli.SCENARIOS["sionna"][0]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SIONNA, reason="the optional sionna extra is not installed")
def test_sionna_through_the_cli(tmp_path: Path) -> None:
    # UMi LOS, paired at the DualNet-MP carriers (UL 2.0 / DL 2.1 GHz), uneven last chunk.
    out = tmp_path / "umi"
    options = "--source sionna --scenario umi --los --paired --dl-carrier-ghz 2.1"
    options += " --ul-carrier-ghz 2.0 -n 7 --seed 1 --chunk 3 --no-progress --json"
    result = _synth(*options.split(), "-o", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["source"], summary["scenario"], summary["los"]) == ("sionna", "umi", True)
    assert summary["paired"] is True and "HT_UL" in summary["variables"]
    assert (summary["dl_carrier_ghz"], summary["ul_carrier_ghz"]) == pytest.approx((2.1, 2.0))
    assert summary["counts"] == {"train": 5, "val": 1, "test": 1}
    dl, ul = load_paired(summary["files"]["train"])
    assert dl.shape == ul.shape == (5, 2, 32, 32) and not np.array_equal(dl, ul)
    np.testing.assert_array_equal(load_csi(out / "DATA_Htrainout.mat"), dl)
    config = json.loads((out / "sionna_dataset.json").read_text())["config"]
    assert config["los"] is True and config["paired_ul_dl"] == [2.0, 2.1]
    assert config["ue_speed_kmh"] == 6.0 and config["subcarriers"] == 1024

    before = _snapshot(out)
    refused = _synth(*options.split(), "-o", str(out))
    assert refused.exit_code == 2 and "would overwrite" in refused.output
    assert _snapshot(out) == before

    # Defaults: UMa NLOS at 3.5 GHz, progress on; unpaired files hold no HT_UL.
    fractions = ("--val-fraction", "0.25", "--test-fraction", "0.25")
    plain = _synth("--source", "sionna", "-n", "4", *fractions, "-o", str(tmp_path / "uma"))
    assert plain.exit_code == 0, plain.output
    assert "loading Sionna" in plain.stderr and "sionna uma train" in plain.stderr  # progress
    assert plain.stdout.startswith("sionna uma NLOS, HT at 3.5 GHz; 2 train / 1 val / 1 test")
    names = {name for name, _, _ in scipy.io.whosmat(tmp_path / "uma" / "DATA_Htrainout.mat")}
    assert names == {"HT", "HT_norm"}


def _error_line(result: object) -> str:
    """The CLI's one output line, checked to be an `error:` line (CliRunner mixes stderr in)."""
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output  # type: ignore[attr-defined]
    return lines[0]


def test_force_refuses_a_directory_without_a_csideploy_manifest(tmp_path: Path) -> None:
    """--force replaces only a data set csideploy wrote; user files of the same name stay."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "DATA_Htrainin.mat").write_bytes(b"the user's own file")
    (user / "notes.json").write_text('{"generator": "my lab"}')
    before = _snapshot(user)
    result = _synth("-n", "12", "-o", str(user), "--no-progress", "--force")
    assert result.exit_code == 2
    line = _error_line(result)
    assert str(user) in line and "no csideploy data-set manifest" in line
    assert _snapshot(user) == before  # nothing replaced, nothing added, nothing deleted


def test_force_replaces_a_csideploy_data_set_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert _synth("-n", "12", "--seed", "1", "-o", str(out), "--no-progress").exit_code == 0
    (out / "README.txt").write_text("the user's notes")
    first = load_csi(out / "DATA_Htrainin.mat")
    again = _synth("-n", "12", "--seed", "2", "-o", str(out), "--no-progress", "--force")
    assert again.exit_code == 0, again.output
    assert not np.array_equal(first, load_csi(out / "DATA_Htrainin.mat"))
    assert (out / "README.txt").read_text() == "the user's notes"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_synth_checks_disk_space_before_generating(tmp_path: Path) -> None:
    out = tmp_path / "huge"
    result = _synth("-n", "1000000000000", "-o", str(out), "--no-progress")
    assert result.exit_code == 2
    line = _error_line(result)
    assert re.search(
        r"not enough disk space: needs [\d,]{20,} bytes \([\d.]+ PiB\), [\d,]+ bytes", line
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _unwritable_directory(tmp_path: Path) -> tuple[Path, list[str]]:
    """An existing directory this process cannot create files in, and how to undo that.

    chmod suffices for a normal user; root ignores modes, so there the directory is made
    immutable (chattr +i), or, where the file system refuses that, /sys (read-only) is used.
    """
    target = tmp_path / "locked"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        return target, ["chmod", "755", str(target)]
    done = subprocess.run(["chattr", "+i", str(target)], capture_output=True, check=False)
    if done.returncode == 0:
        return target, ["chattr", "-i", str(target)]
    return Path("/sys"), []


def test_synth_into_an_unwritable_directory_fails_at_once(tmp_path: Path) -> None:
    target, undo = _unwritable_directory(tmp_path)
    before = sorted(p.name for p in target.iterdir())
    try:
        proc = _run_cli("data", "synth", "-n", "500000", "-o", str(target), "--no-progress")
        after = sorted(p.name for p in target.iterdir())
    finally:
        if undo:
            subprocess.run(undo, check=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "cannot write there" in lines[0]
    assert str(target) in lines[0] and proc.stdout == ""
    assert after == before  # nothing left behind
