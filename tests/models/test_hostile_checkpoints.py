"""Hostile checkpoints: every one is refused with the project's own error; none crashes, hangs
or exhausts memory. The files are built here, opcode by opcode where a pickler would refuse."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import re
import select
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hostile_pickles import (
    dtype_of,
    in_torch_zip,
    op_bytes,
    op_global,
    op_int,
    op_text,
    trainer_dict,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csideploy.cli import main
from csideploy.errors import CheckpointError, UnsafeCheckpointError
from csideploy.models import build
from csideploy.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]

_OBJECT_ARRAYS = {
    # ndarray((1,), dtype('O'), b'AAAAAAAA'): an array whose element is a wild pointer
    "ndarray-over-raw-bytes": (
        op_global("numpy", "ndarray")
        + op_int(1)
        + b"\x85"
        + dtype_of("O")
        + op_bytes(b"A" * 8)
        + b"\x87R",
        "numpy.ndarray(...) called directly by the pickle (an array over raw memory)",
    ),
    # the way numpy pickles arrays, with an object dtype and a list of objects
    "reconstruct-object-array": (
        op_global("numpy.core.multiarray", "_reconstruct")
        + op_global("numpy", "ndarray")
        + op_int(0)
        + b"\x85"
        + op_bytes(b"b")
        + b"\x87R"
        + b"("
        + op_int(1)
        + op_int(1)
        + b"\x85"
        + dtype_of("O")
        + b"\x89]"
        + op_int(7)
        + b"at"
        + b"b",
        "numpy dtype 'O' ('O' kind): only plain numbers load from a checkpoint, never objects "
        "or pointers",
    ),
    "object-scalar": (
        op_global("numpy.core.multiarray", "scalar")
        + dtype_of("O")
        + op_bytes(b"A" * 8)
        + b"\x86R",
        "numpy dtype 'O' ('O' kind): only plain numbers load from a checkpoint, never objects "
        "or pointers",
    ),
    # a record dtype whose BUILD state adds an object field
    "record-with-object-field": (
        op_global("numpy.core.multiarray", "scalar")
        + dtype_of(
            "V8",
            b"("
            + op_int(3)
            + op_text("|")
            + b"N("
            + op_text("a")
            + b"t}"
            + op_text("a")
            + dtype_of("O")
            + op_int(0)
            + b"\x86s"
            + op_int(8)
            + op_int(1)
            + op_int(63)
            + b"t",
        )
        + op_bytes(b"A" * 8)
        + b"\x86R",
        "numpy dtype 'V8' ('V' kind): only plain numbers load from a checkpoint, never objects "
        "or pointers",
    ),
}


# --------------------------------------------------------------------------- object dtypes


@pytest.mark.parametrize("container", ["pickle", "torch-zip"])
@pytest.mark.parametrize("attack", sorted(_OBJECT_ARRAYS))
def test_object_and_pointer_dtypes_are_refused_before_an_array_is_built(
    tmp_path: Path, attack: str, container: str
) -> None:
    value, reason = _OBJECT_ARRAYS[attack]
    pickled = trainer_dict(value)
    path = tmp_path / "ckpt.pth"
    path.write_bytes(pickled if container == "pickle" else in_torch_zip(pickled))
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == f"refusing to load {path}: {reason}"


def _hostile_file(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.pth"
    path.write_bytes(in_torch_zip(trainer_dict(_OBJECT_ARRAYS["ndarray-over-raw-bytes"][0])))
    return path


def test_infer_on_a_pointer_array_checkpoint_is_one_error_line_in_a_real_process(
    tmp_path: Path,
) -> None:
    ckpt = _hostile_file(tmp_path)
    x = tmp_path / "x.npy"
    np.save(x, np.full((2, 2, 32, 32), 0.5, np.float32))
    out = tmp_path / "y.npy"
    code = "from csideploy.cli import main; main()"
    args = ["infer", "--model", "csinet", "--checkpoint", ckpt, "--input", x, "--output", out]
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2, done.stderr  # 139 was the segmentation fault
    assert done.stderr == (
        f"error: refusing to load {ckpt}: numpy.ndarray(...) called directly by the pickle "
        "(an array over raw memory)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.pth", "x.npy"]


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_evaluate_and_export_refuse_it_too_and_write_nothing(tmp_path: Path, command: str) -> None:
    ckpt = _hostile_file(tmp_path)
    data = tmp_path / "csi.npy"
    np.save(data, np.random.default_rng(0).uniform(0.4, 0.6, (4, 2, 32, 32)).astype(np.float32))
    out = tmp_path / "artifacts"
    args = ["--model", "csinet", "--checkpoint", str(ckpt)]
    args += ["--data", str(data)] if command == "evaluate" else ["--out", str(out)]
    result = CliRunner().invoke(main, [command, *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: refusing to load {ckpt}: numpy.ndarray(...)")
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csi.npy", "hostile.pth"]


def test_plain_numpy_arrays_and_scalars_still_load(tmp_path: Path) -> None:
    path = tmp_path / "np.pth"
    torch.save(
        {
            "state_dict": build("csinet", 64).state_dict(),
            "rho": np.float32(0.5),
            "big_endian": np.arange(3, dtype=">i4"),
            "flags": np.array([True, False]),
            "steps": np.int64(7),
        },
        path,
    )
    meta = load_checkpoint(path).metadata
    assert (meta["rho"], meta["big_endian"], meta["flags"], meta["steps"]) == (
        0.5,
        [0, 1, 2],
        [True, False],
        7,
    )


# --------------------------------------------------------------------------- bombs and depth


def test_shared_references_cannot_expand_into_a_bomb(tmp_path: Path) -> None:
    bomb: list = [1]
    for _ in range(40):  # 2^40 leaves in a file of about a kilobyte
        bomb = [bomb, bomb]
    path = tmp_path / "bomb.pth"
    torch.save({"state_dict": build("csinet", 64).state_dict(), "epoch": bomb}, path)
    assert path.stat().st_size < 600_000  # the weights; the bomb itself is a few kilobytes
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"{path}: holds over 100000 values (shared references expand without bound?); not a "
        "checkpoint this toolkit reads"
    )


def test_a_deeply_nested_list_is_refused_before_it_is_built(tmp_path: Path) -> None:
    depth = 20_000
    path = tmp_path / "deep.pth"
    path.write_bytes(trainer_dict(b"]" * depth + b"a" * (depth - 1)))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == f"cannot read {path}: its pickle nests deeper than 200 levels"


# --------------------------------------------------------------------------- zip containers


def test_a_truncated_zip_checkpoint_says_so_and_names_the_file(tmp_path: Path) -> None:
    whole = io.BytesIO()
    torch.save(build("csinet", 64).state_dict(), whole)
    data = whole.getvalue()
    for fraction in (0.3, 0.9, 0.999):
        path = tmp_path / f"cut{fraction}.pt"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        assert str(caught.value).startswith(
            f"cannot read {path}: a truncated or corrupt zip archive ("
        ), str(caught.value)
        assert "codec" not in str(caught.value)


def test_a_zip_member_claiming_far_more_than_it_stores_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zipbomb.pt"
    clean = io.BytesIO()
    torch.save({"epoch": 1}, clean)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("archive/data/0", bytes(20 * 2**20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"cannot read {path}: zip member archive/data/0 claims 20971520 bytes from "
        ),
    ):
        load_checkpoint(path)


# --------------------------------------------------------------------------- fuzzing in a jail

_WORKER = """
import json, resource, sys, traceback
limit = 3 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import torch
torch.set_num_threads(1)
from csideploy.errors import CsiDeployError
from csideploy.models.checkpoint import load_checkpoint
for line in sys.stdin:
    try:
        load_checkpoint(line.strip())
        answer = "loaded"
    except CsiDeployError as error:
        answer = "project-error"
    except BaseException:
        answer = "UNEXPECTED " + traceback.format_exc(limit=4)
    print(json.dumps(answer), flush=True)
"""
_ANSWER_SECONDS = 60  # a hang, not a slow answer: one load takes milliseconds


class Jail:
    """One process that loads files with at most 3 GiB of address space; its crash or hang is
    a test failure, not a dead test worker."""

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def load(self, path: Path) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], _ANSWER_SECONDS)
        if not ready:
            self.process.kill()
            pytest.fail(f"loading {path} did not finish within {_ANSWER_SECONDS} s")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            pytest.fail(f"the loader process died (exit {code}) on {path}")
        return json.loads(line)


@pytest.fixture(scope="module")
def jail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jail]:
    jail = Jail(tmp_path_factory.mktemp("jail"))
    yield jail
    jail.process.kill()
    jail.process.wait()


Result = collections.namedtuple("Result", ["nmse", "rho", "epoch"])


def _as_authors_record(data: bytes) -> bytes:
    """The file with this module's `Result` renamed `utils.solver.Result`, as the CRNet / CLNet
    trainers write it (a class this process cannot import)."""
    old, new = f"{__name__}\nResult\n".encode(), b"utils.solver\nResult\n"
    if data[:2] != b"PK":
        return data.replace(old, new)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info).replace(old, new))
    return out.getvalue()


def _seeds() -> list[bytes]:
    """Real files to mutate: a trainer dict with an authors' record and numpy values, in both
    containers torch writes, and bare pickles."""
    document = {
        "state_dict": build("csinet", 64).state_dict(),
        "best_nmse": Result(-9.0, 0.8, 10),
        "rho": np.float64(0.5),
        "history": np.arange(3.0),
        "epoch": 3,
    }
    out = []
    for zip_format in (True, False):
        buffer = io.BytesIO()
        torch.save(document, buffer, _use_new_zipfile_serialization=zip_format)
        out.append(_as_authors_record(buffer.getvalue()))
    small = {"epoch": 1, "values": [1.5, "x", (2, None)], "arr": np.ones((2, 3), np.float32)}
    out += [pickle.dumps(small, protocol=2), pickle.dumps(small, protocol=4)]
    return out


_SEEDS = _seeds()
_SNIPPETS = [
    b"}",
    b"]",
    b")",
    b"(",
    b"t",
    b"\x85",
    b"\x86",
    b"\x87",
    b"l",
    b"d",
    b"a",
    b"e",
    b"s",
    b"u",
    b"b",
    b"R",
    b"\x81",
    b"0",
    b"2",
    b"N",
    b"\x88",
    b"\x89",
    b"K\x01",
    b"J\xff\xff\xff\x7f",
    b"q\x00",
    b"h\x00",
    b"q\x01",
    b"h\x01",
    op_text("O"),
    op_text("f8"),
    op_text("<"),
    op_bytes(b"A" * 8),
    op_bytes(b"b"),
    dtype_of("O"),
    dtype_of("f8"),
    dtype_of("V8"),
    op_global("numpy", "ndarray"),
    op_global("numpy", "dtype"),
    op_global("numpy.core.multiarray", "_reconstruct"),
    op_global("numpy.core.multiarray", "scalar"),
    op_global("collections", "OrderedDict"),
    op_global("torch._utils", "_rebuild_tensor_v2"),
    op_global("utils.solver", "Result"),
    op_global("torch", "FloatStorage"),
    b"Q",
]


@st.composite
def hostile_files(draw: st.DrawFn) -> bytes:
    """Random bytes, mutated real checkpoints, or random pickle programs, raw or zipped."""
    kind = draw(st.sampled_from(["random", "mutated", "mutated-pickle", "program"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "program":
        body = b"".join(draw(st.lists(st.sampled_from(_SNIPPETS), max_size=40)))
        pickled = b"\x80\x02" + body + b"."
        return in_torch_zip(pickled) if draw(st.booleans()) else pickled
    seed = draw(st.sampled_from(_SEEDS))
    if kind == "mutated-pickle" and seed[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(seed)) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            return in_torch_zip(_mutate(draw, archive.read(name)))
    return _mutate(draw, seed)


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    """A few flips, insertions, deletions or a truncation of `data`."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and out:
            out[at] = draw(st.integers(0, 255))
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        else:
            del out[at:]
    return bytes(out)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=hostile_files())
def test_fuzzed_checkpoints_only_ever_raise_the_projects_error(
    jail: Jail, tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzzed.pth"
    path.write_bytes(data)
    assert jail.load(path) in ("project-error", "loaded")


def test_a_tuple_nested_a_million_deep_does_not_kill_the_loader(jail: Jail, tmp_path: Path) -> None:
    # hashing such a dict key overflows the C stack: a segmentation fault before the bound
    path = tmp_path / "tuple.pth"
    path.write_bytes(b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + op_int(1) + b"s.")
    assert jail.load(path) == "project-error"
    with pytest.raises(CheckpointError, match="its pickle nests deeper than 200 levels"):
        load_checkpoint(path)
