"""Checkpoint loading: every format strictly, nothing in a pickle runs, clear errors."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import csideploy.models.checkpoint as checkpoint_module
from csideploy.errors import CheckpointError, UnknownModelError, UnsafeCheckpointError
from csideploy.models import build, get_entry
from csideploy.models.checkpoint import (
    FORMAT,
    default_checkpoint_path,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from csideploy.models.safe_pickle import PickledObject, classify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CLNET_CR64 = FIXTURES / "official" / "clnet_cr64"
REFERENCE = FIXTURES / "reference"


@pytest.fixture(scope="module")
def official() -> Path:
    """The CLNet authors' CR 1/64 files, kept under tests/fixtures: the outdoor model (compare
    it with the published outdoor figure, -2.19 dB, not the indoor one)."""
    if not (CLNET_CR64 / "32encoder.pth.tar").is_file():
        pytest.fail(f"test fixtures missing: expected {CLNET_CR64}")
    return CLNET_CR64


def randomized(name: str, cr: int, seed: int = 0) -> torch.nn.Module:
    """A model whose every parameter and buffer differs from a fresh build."""
    torch.manual_seed(seed)
    model = build(name, cr)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) * 0.2 + (0.5 if "running_var" in key else 0))
            else:
                value.fill_(7)
    return model.eval()


def flat_state(name: str, model: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The state dict in the official flat layout (`encoder.encoder1.x` -> `encoder1.x`)."""
    prefixes = get_entry(name).flat_prefixes
    out = OrderedDict()
    for key, value in model.state_dict().items():
        side, _, rest = key.partition(".")
        assert any(rest.startswith(p) and prefixes[p] == side for p in prefixes), key
        out[rest] = value.clone()
    return out


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def sha256(*paths: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


# --------------------------------------------------------------------------- layouts


def read_key_list(path: Path) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows[key] = (shape, dtype)
    return rows


@pytest.mark.parametrize("name", ["clnet", "crnet"])
def test_models_have_exactly_the_official_keys_and_shapes(name: str) -> None:
    reference = REFERENCE / f"{name}_cr4_state_dict_keys.tsv"
    if not reference.is_file():
        pytest.fail(f"test fixture missing: {reference}")
    model = build(name, 4)
    state = flat_state(name, model) if get_entry(name).flat_prefixes else model.state_dict()
    ours = {k: (str(tuple(v.shape)), str(v.dtype)) for k, v in state.items()}
    assert ours == read_key_list(reference)


# --------------------------------------------------------------------------- project format


def test_project_format_round_trips_and_loads_with_weights_only(tmp_path: Path) -> None:
    model = randomized("crnet", 16)
    out = save_checkpoint(tmp_path / "crnet.pt", model, metadata={"epochs": 3, "tag": ["a"]})
    assert [p.name for p in tmp_path.iterdir()] == ["crnet.pt"]  # no temp file left behind

    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert {k: raw[k] for k in ("format", "version", "model", "cr")} == {
        "format": FORMAT,
        "version": 1,
        "model": "crnet",
        "cr": 16,
    }
    assert raw["metadata"] == {"epochs": 3, "tag": ["a"]}

    loaded = load_checkpoint(out)
    assert (loaded.name, loaded.cr, loaded.source_format) == ("crnet", 16, "csideploy")
    assert loaded.sha256 == sha256(out)
    assert loaded.metadata["epochs"] == 3 and loaded.metadata["path"] == str(out)
    assert loaded.dropped_keys == () and not loaded.model.training
    assert_same_weights(loaded.model, model)
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_project_format_rejects_conflicting_model_or_cr(tmp_path: Path) -> None:
    out = save_checkpoint(tmp_path / "m.pt", build("crnet", 16), metadata={})
    with pytest.raises(CheckpointError, match=r"--cr 4 conflicts with the checkpoint: .*CR 1/16"):
        load_checkpoint(out, cr=4)
    with pytest.raises(CheckpointError, match=r"--model clnet conflicts .* holds crnet"):
        load_checkpoint(out, model="clnet")


def test_save_refuses_metadata_that_is_not_json_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "m.pt", build("crnet", 64), metadata={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_file_atomically(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    save_checkpoint(out, build("crnet", 64), metadata={"run": 1})
    save_checkpoint(out, randomized("crnet", 32), metadata={"run": 2})
    loaded = load_checkpoint(out)
    assert loaded.cr == 32 and loaded.metadata["run"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# --------------------------------------------------------------------------- trainer dicts


@pytest.fixture
def result_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`utils.solver.Result` as the CRNet/CLNet repositories define it, importable for saving
    only; the yielded `forget()` takes it off sys.path and out of sys.modules."""
    package = tmp_path / "authors_repo" / "utils"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "solver.py").write_text(
        "from collections import namedtuple\n"
        "Result = namedtuple('Result', ['nmse', 'rho', 'epoch'])\n"
    )
    root = str(package.parent)
    monkeypatch.syspath_prepend(root)
    solver = importlib.import_module("utils.solver")

    def forget() -> None:
        sys.path.remove(root)
        for name in ("utils.solver", "utils"):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        assert importlib.util.find_spec("utils") is None

    return solver.Result, forget


def test_trainer_dict_with_pickled_results_loads_without_the_authors_code(
    tmp_path: Path, result_class
) -> None:
    result, forget = result_class
    model = randomized("clnet", 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = tmp_path / "checkpoint.pth"
    torch.save(
        {
            "epoch": 999,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"last_epoch": 999, "base_lrs": [2e-3]},
            "best_rho": result(nmse=torch.tensor(-10.5), rho=0.91, epoch=812),
            "best_nmse": result(nmse=-11.25, rho=0.9, epoch=901),
        },
        out,
    )
    forget()

    with pytest.raises(pickle.UnpicklingError, match=r"utils\.solver\.Result"):
        torch.load(out, map_location="cpu", weights_only=True)

    loaded = load_checkpoint(out)  # model and CR from the keys and the codeword layer
    assert "utils" not in sys.modules and "utils.solver" not in sys.modules
    assert (loaded.name, loaded.cr, loaded.source_format) == ("clnet", 16, "trainer-dict")
    assert "encoder.replace_efc.weight" in loaded.inferred_from
    assert loaded.metadata["epoch"] == 999
    assert loaded.metadata["best_nmse"] == {"nmse": -11.25, "rho": 0.9, "epoch": 901}
    assert loaded.metadata["best_rho"]["nmse"] == pytest.approx(-10.5)
    assert loaded.metadata["not_loaded"] == ["optimizer", "scheduler"]
    assert loaded.metadata["unimported_classes"] == ["utils.solver.Result"]
    assert_same_weights(loaded.model, model)


def test_flat_crnet_trainer_dict_is_split_into_encoder_and_decoder(
    tmp_path: Path, result_class
) -> None:
    result, forget = result_class
    model = randomized("crnet", 8, seed=1)
    out = tmp_path / "crnet_best.pth"
    flat = flat_state("crnet", model)
    assert "encoder_fc.weight" in flat and "decoder_fc.weight" in flat
    torch.save({"epoch": 5, "state_dict": flat, "best_nmse": result(-8.0, None, 5)}, out)
    forget()

    loaded = load_checkpoint(out, model="crnet")
    assert (loaded.name, loaded.cr) == ("crnet", 8)
    assert loaded.metadata["best_nmse"] == {"nmse": -8.0, "rho": None, "epoch": 5}
    torch.testing.assert_close(loaded.model.encoder.encoder_fc.weight, flat["encoder_fc.weight"])
    torch.testing.assert_close(
        loaded.model.decoder.decoder_feature.CRBlock2.conv1x1.conv.weight,
        flat["decoder_feature.CRBlock2.conv1x1.conv.weight"],
    )
    assert_same_weights(loaded.model, model)


def test_data_parallel_prefix_is_stripped(tmp_path: Path) -> None:
    model = randomized("crnet", 32, seed=2)
    out = tmp_path / "dp.pth"
    state = {f"module.{k}": v for k, v in flat_state("crnet", model).items()}
    torch.save({"state_dict": state, "epoch": 1}, out)
    loaded = load_checkpoint(out)
    assert (loaded.name, loaded.cr) == ("crnet", 32)
    assert "encoder_fc.weight" in loaded.inferred_from
    assert_same_weights(loaded.model, model)


def test_model_state_dict_key_and_bare_state_dicts(tmp_path: Path) -> None:
    model = randomized("cllwcsinet", 8, seed=3)
    cllw = tmp_path / "cllw.pth"
    torch.save(
        {
            "epoch": 3,
            "model_state_dict": flat_state("cllwcsinet", model),
            "optimizer_state_dict": {},
        },
        cllw,
    )
    loaded = load_checkpoint(cllw, model="cllwcsinet")
    assert (loaded.cr, loaded.source_format) == (8, "trainer-dict")
    assert loaded.metadata["state_key"] == "model_state_dict"
    assert_same_weights(loaded.model, model)

    bare = tmp_path / "bare.pt"
    other = randomized("csinet", 64, seed=4)
    torch.save(other.state_dict(), bare)
    loaded = load_checkpoint(bare, cr=64)
    assert (loaded.name, loaded.source_format) == ("csinet", "state-dict")
    assert_same_weights(loaded.model, other)


def test_a_module_pickled_whole_gives_its_weights_without_importing_classes(
    tmp_path: Path,
) -> None:
    model = randomized("crnet", 64, seed=6)
    out = tmp_path / "whole.pt"
    torch.save(torch.nn.DataParallel(model), out)  # the pickle names csideploy and torch classes
    loaded = load_checkpoint(out)
    assert (loaded.name, loaded.cr, loaded.source_format) == ("crnet", 64, "pickled-module")
    assert loaded.metadata["pickled_class"] == "torch.nn.parallel.data_parallel.DataParallel"
    assert_same_weights(loaded.model, model)


# --------------------------------------------------------------------------- the authors' files


def test_real_clnet_cr64_split_files_load_strictly(official: Path) -> None:
    encoder_file, decoder_file = official / "32encoder.pth.tar", official / "32decoder.pth.tar"
    raw_encoder = torch.load(encoder_file, map_location="cpu", weights_only=True)["state_dict"]
    with pytest.raises(RuntimeError, match="total_ops"):  # why thop keys must go
        build("clnet", 64).encoder.load_state_dict(raw_encoder, strict=True)

    loaded = load_checkpoint(encoder_file, decoder_path=decoder_file)
    assert (loaded.name, loaded.cr, loaded.source_format) == ("clnet", 64, "clnet-split")
    assert loaded.model.codeword_length == 32
    assert loaded.sha256 == sha256(encoder_file, decoder_file)
    dropped = loaded.dropped_keys
    assert len(dropped) == 78
    assert sum(k.startswith("encoder.") for k in dropped) == 28
    assert sum(k.startswith("decoder.") for k in dropped) == 50
    assert all(k.endswith(("total_ops", "total_params")) for k in dropped)
    torch.testing.assert_close(
        loaded.model.encoder.replace_efc.weight, raw_encoder["replace_efc.weight"]
    )

    torch.manual_seed(0)
    x = 0.5 + 0.05 * torch.randn(16, 2, 32, 32)
    with torch.no_grad():
        codeword = loaded.model.encoder(x)
        y = loaded.model(x)
    assert codeword.shape == (16, 32) and torch.isfinite(codeword).all()
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1


def test_real_split_files_found_as_a_pair_and_cr_checked(official: Path) -> None:
    loaded = load_checkpoint(official / "32decoder.pth.tar", model="clnet")
    assert loaded.cr == 64 and loaded.metadata["path"].endswith("32encoder.pth.tar")
    assert loaded.metadata["decoder_path"].endswith("32decoder.pth.tar")
    with pytest.raises(
        CheckpointError,
        match=r"^--cr 4 conflicts with the checkpoint: encoder\.replace_efc\.weight has 32 "
        r"outputs, i\.e\. CR 1/64$",
    ):
        load_checkpoint(official / "32encoder.pth.tar", model="clnet", cr=4)


def test_one_split_file_alone_says_which_file_is_missing(official: Path, tmp_path: Path) -> None:
    lone = tmp_path / "32encoder.pth.tar"
    lone.write_bytes((official / "32encoder.pth.tar").read_bytes())
    with pytest.raises(CheckpointError, match=r"holds only the encoder of clnet.*32decoder"):
        load_checkpoint(lone)


# --------------------------------------------------------------------------- strictness


def clnet_ablation_state() -> dict[str, torch.Tensor]:
    """The 2021-2022 public CLNet variant: Linear encoder_fc/decoder_fc, encoder2 2->16."""
    state = dict(build("clnet", 4).state_dict())
    for key in (
        "encoder.replace_efc.weight",
        "encoder.replace_efc.bias",
        "decoder.replace_dfc.weight",
        "decoder.replace_dfc.bias",
    ):
        del state[key]
    state["encoder.encoder_fc.weight"] = torch.zeros(512, 2048)
    state["encoder.encoder_fc.bias"] = torch.zeros(512)
    state["decoder.decoder_fc.weight"] = torch.zeros(2048, 512)
    state["decoder.decoder_fc.bias"] = torch.zeros(2048)
    state["encoder.encoder2.conv.weight"] = torch.zeros(16, 2, 1, 1)
    return state


def test_key_mismatch_names_missing_unexpected_and_mis_shaped_keys(tmp_path: Path) -> None:
    out = tmp_path / "ablation.pth"
    torch.save({"epoch": 1, "state_dict": clnet_ablation_state()}, out)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(out, model="clnet", cr=4)
    message = str(caught.value)
    assert message.startswith(f"{out} does not match clnet CR 1/4:")
    assert "missing keys (4): encoder.replace_efc.weight, encoder.replace_efc.bias" in message
    assert "decoder.replace_dfc.weight" in message
    assert "unexpected keys (4): encoder.encoder_fc.weight" in message
    assert "decoder.decoder_fc.bias" in message
    assert "shape differences (1): encoder.encoder2.conv.weight (16, 2, 1, 1)" in message
    assert "\n" not in message

    with pytest.raises(CheckpointError, match=r"does not match clnet \(it has no encoder"):
        load_checkpoint(out, model="clnet")  # no CR to build: names are still reported
    with pytest.raises(CheckpointError, match=r"cannot tell which model.*closest: clnet"):
        load_checkpoint(out)


def test_conflicting_cr_is_reported_with_the_codeword_layer(tmp_path: Path) -> None:
    out = tmp_path / "crnet16.pth"
    torch.save({"state_dict": flat_state("crnet", build("crnet", 16))}, out)
    with pytest.raises(
        CheckpointError,
        match=r"--cr 4 conflicts with the checkpoint: "
        r"encoder\.encoder_fc\.weight has 128 outputs, i\.e\. CR 1/16",
    ):
        load_checkpoint(out, model="crnet", cr=4)
    with pytest.raises(UnknownModelError, match="no CR 1/5"):
        load_checkpoint(out, model="crnet", cr=5)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    state = build("csinet", 32).state_dict()
    state["encoder.fc.bias"][0] = float("nan")
    out = tmp_path / "nan.pt"
    torch.save(state, out)
    with pytest.raises(CheckpointError, match=r"encoder\.fc\.bias holds NaN or inf"):
        load_checkpoint(out, model="csinet")


# --------------------------------------------------------------------------- unsafe pickles


class _Payload:
    """A pickle that asks to call `func(*args)` when loaded."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, tuple[_Payload, str]]:
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (_Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "subprocess": (
            _Payload(subprocess.check_call, ["touch", str(marker)]),
            "subprocess.check_call",
        ),
        "eval": (_Payload(eval, code), "builtins.eval"),
        "exec": (_Payload(exec, code), "builtins.exec"),
    }


@pytest.mark.parametrize("attack", ["os.system", "subprocess", "eval", "exec"])
@pytest.mark.parametrize("container", ["pickle-p2", "pickle-p4", "torch-zip", "torch-legacy"])
def test_malicious_pickles_are_refused_and_nothing_runs(
    tmp_path: Path, attack: str, container: str
) -> None:
    marker = tmp_path / "pwned"
    payload, global_name = _attacks(marker)[attack]
    out = tmp_path / "ckpt.pth"
    if container.startswith("pickle"):
        out.write_bytes(pickle.dumps(payload, protocol=int(container[-1])))
    else:
        document = {"state_dict": build("csinet", 64).state_dict(), "epoch": payload}
        torch.save(document, out, _use_new_zipfile_serialization=container == "torch-zip")

    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint(out)
    assert str(caught.value) == f"refusing to load {out}: it asks to call {global_name}"
    assert not marker.exists()


def test_malicious_data_pkl_planted_in_a_torch_zip_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    clean = tmp_path / "clean.pt"
    torch.save(build("csinet", 64).state_dict(), clean)
    planted = tmp_path / "planted.pt"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(planted, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2)
            dst.writestr(info, data)
    with pytest.raises(UnsafeCheckpointError, match=r"it asks to call (posix|nt)\.system"):
        load_checkpoint(planted)
    assert not marker.exists()


def test_classification_of_globals() -> None:
    assert classify("torch._utils._rebuild_tensor_v2") == "torch"
    assert classify("collections.OrderedDict") == "torch"
    assert classify("utils.solver.Result") == "placeholder"
    assert classify("argparse.Namespace") == "placeholder"
    assert classify("numpy.core.multiarray.scalar") == "numpy"
    for name in (
        "posix.system",
        "os.system",
        "builtins.getattr",
        "subprocess.Popen",
        "shutil.rmtree",
        "importlib.import_module",
        "utils.solver.run_shell",
        "torch.hub.load",
        "numpy.load",
        "webbrowser.open",
        "<unnamed global>",
    ):
        assert classify(name) == "refused", name


def test_placeholders_are_inert_records() -> None:
    from csideploy.models.safe_pickle import placeholder_class

    cls = placeholder_class("utils.solver.Result")
    assert cls is placeholder_class("utils.solver.Result")
    record = cls.__new__(cls, -9.0, 0.8, 10)
    assert isinstance(record, PickledObject)
    assert record.as_record() == {"nmse": -9.0, "rho": 0.8, "epoch": 10}
    other = placeholder_class("train.Config")(1, 2)
    other.__setstate__({"lr": 0.1})
    assert other.as_record() == {"class": "train.Config", "args": [1, 2], "state": {"lr": 0.1}}


def test_numpy_scalars_in_a_trainer_dict_load(tmp_path: Path) -> None:
    import numpy as np

    out = tmp_path / "np.pth"
    torch.save(
        {
            "state_dict": build("csinet", 64).state_dict(),
            "best_nmse": np.float64(-7.5),
            "history": np.arange(3.0),
        },
        out,
    )
    loaded = load_checkpoint(out)
    assert loaded.metadata["best_nmse"] == -7.5 and loaded.metadata["history"] == [0, 1, 2]


# --------------------------------------------------------------------------- unreadable files


def test_unreadable_files_are_clear_errors_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint file not found: {missing}")):
        load_checkpoint(missing)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)

    cases = {
        "empty.pt": b"",
        "text.pt": b"this is not a checkpoint\n",
        "random.pt": bytes(range(256)) * 4,
    }
    good = io.BytesIO()
    torch.save(build("csinet", 64).state_dict(), good)
    cases["truncated.pt"] = good.getvalue()[: len(good.getvalue()) // 2]
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=re.escape(f"cannot read {path}")) as caught:
            load_checkpoint(path)
        assert "\n" not in str(caught.value), name

    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(CheckpointError, match=re.escape(f"{listed} holds a list, not a state")):
        load_checkpoint(listed)
    no_weights = tmp_path / "nothing.pt"
    torch.save({"epoch": 3, "note": "no weights"}, no_weights)
    with pytest.raises(CheckpointError, match=r"without 'state_dict'.*keys: epoch, note"):
        load_checkpoint(no_weights)


# --------------------------------------------------------------------------- shipped default


def test_load_model_without_checkpoint_needs_a_shipped_one() -> None:
    assert default_checkpoint_path("crnet", 8) is None
    with pytest.raises(
        CheckpointError,
        match=r"^no checkpoint given and none shipped for crnet CR 1/8; pass --checkpoint FILE$",
    ):
        load_model("crnet", 8)
    shipped = checkpoint_module.CHECKPOINT_DIR / "clnet_cr4_indoor.pt"
    assert default_checkpoint_path("clnet", 4) == (shipped if shipped.is_file() else None)
    with pytest.raises(UnknownModelError):
        load_model("nosuchnet", 4)


def test_load_model_uses_the_shipped_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = randomized("clnet", 4, seed=5)
    save_checkpoint(tmp_path / "clnet_cr4_indoor.pt", model, metadata={"scenario": "indoor"})
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_DIR", tmp_path)
    assert default_checkpoint_path("clnet", 4) == tmp_path / "clnet_cr4_indoor.pt"
    loaded = load_model("clnet")
    assert (loaded.name, loaded.cr, loaded.metadata["scenario"]) == ("clnet", 4, "indoor")
    assert_same_weights(loaded.model, model)
    with pytest.raises(CheckpointError, match="none shipped for clnet CR 1/8"):
        load_model("clnet", 8)
    given = tmp_path / "mine.pt"
    save_checkpoint(given, build("clnet", 8), metadata={})
    assert load_model("clnet", checkpoint=given).cr == 8


def test_build_options_round_trip_through_the_project_format(tmp_path: Path) -> None:
    from csideploy.models import build
    from csideploy.models.checkpoint import load_checkpoint, save_checkpoint

    model = build("lora", 64, quantizer="lsq", bits=4)
    path = save_checkpoint(tmp_path / "lora.pt", model, metadata={})
    loaded = load_checkpoint(path)
    assert loaded.model.build_options == model.build_options
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
