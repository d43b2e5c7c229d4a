"""Every shipped checkpoint: the file its index names, its card, and its figures re-measured."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from csideploy.calibration.io import load_csi
from csideploy.calibration.synthetic import EVALUATION_SEED, generate
from csideploy.errors import CheckpointError
from csideploy.evaluate import evaluate
from csideploy.models import load_model
from csideploy.models.zoo_weights import (
    CHECKPOINT_DIR,
    ShippedCheckpoint,
    read_index,
    shipped_checkpoints,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COST2100_INDOOR = FIXTURES / "cost2100" / "cost2100_indoor.mat"
ENTRIES = shipped_checkpoints()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def entry_id(entry: ShippedCheckpoint) -> str:
    return f"{entry.model}-cr{entry.cr}"


def test_the_default_model_ships_weights() -> None:
    assert ("clnet", 4) in {(e.model, e.cr) for e in ENTRIES}
    assert ("crnet", 64) in {(e.model, e.cr) for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_file_card_and_licence_are_as_indexed(entry: ShippedCheckpoint) -> None:
    data = (CHECKPOINT_DIR / entry.file).read_bytes()
    assert len(data) == entry.bytes
    assert hashlib.sha256(data).hexdigest() == entry.sha256
    card = (CHECKPOINT_DIR / entry.card).read_text()
    assert entry.file in card
    for source, figure in entry.nmse.items():
        assert f"{figure.db:+.2f}" in card, (source, figure.db)
    if not entry.licence.startswith("MIT (csideploy)"):
        assert re.search(r"LICENSE\.[\w.]+", card), "a third-party file needs its licence named"
        licence = re.search(r"LICENSE\.[\w.]+", card).group(0)
        assert "Permission is hereby granted" in (CHECKPOINT_DIR / licence).read_text()


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_figures_are_re_measured(entry: ShippedCheckpoint) -> None:
    """The recorded NMSE comes back from the same samples, to the rounding of the index."""
    loaded = load_model(entry.model, entry.cr)
    assert (loaded.name, loaded.cr) == (entry.model, entry.cr)
    assert set(entry.nmse) >= {"builtin"}
    builtin = entry.nmse["builtin"]
    x = generate(builtin.samples, scenario=entry.scenario, seed=EVALUATION_SEED)
    assert evaluate(loaded.model, x).nmse_db == pytest.approx(builtin.db, abs=0.01)
    if entry.scenario == "indoor":
        x = load_csi(COST2100_INDOOR)
        measured = evaluate(loaded.model, x).nmse_db
        assert measured == pytest.approx(entry.nmse["cost2100"].db, abs=0.01)


def test_a_malformed_index_names_what_is_wrong(tmp_path: Path) -> None:
    raw = json.loads((CHECKPOINT_DIR / "zoo.json").read_text())
    del raw["checkpoints"][0]["sha256"]
    (tmp_path / "zoo.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"malformed entry \(KeyError\('sha256'\)\)"):
        read_index(tmp_path / "zoo.json")
    raw["schema"] = "other/9"
    (tmp_path / "zoo.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="expected csideploy-zoo/1"):
        read_index(tmp_path / "zoo.json")


def test_models_command_shows_the_shipped_weights_and_their_figures() -> None:
    from click.testing import CliRunner

    from csideploy.cli import main

    result = CliRunner().invoke(main, ["models", "--model", "crnet", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["cr"]: row for row in json.loads(result.output)}
    entry = next(e for e in ENTRIES if (e.model, e.cr) == ("crnet", 64))
    assert rows[64]["weights"] == "indoor"
    assert rows[64]["nmse_builtin_db"] == entry.nmse_db("builtin")
    assert rows[64]["nmse_cost2100_db"] == entry.nmse_db("cost2100")
    assert rows[8]["weights"] is None and rows[8]["nmse_builtin_db"] is None
    table = CliRunner().invoke(main, ["models", "--model", "crnet"]).output
    builtin, cost2100 = entry.nmse_db("builtin"), entry.nmse_db("cost2100")
    assert f"indoor ({builtin:+.2f} / {cost2100:+.2f} dB)" in table
