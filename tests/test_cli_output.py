"""What commands print: csideploy's own lines on the terminal, other libraries' in the log.

Native libraries write to file descriptor 2 directly; these tests write the same way (raw
`os.write`, a child process inheriting the descriptors) and check that the text lands in
the log file, not on the real stderr, and that `-v` replays it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from csideploy import console

NATIVE = "I0000 port.cc:153] oneDNN custom operations are on."


def _run(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter whose log goes under tmp_path (never the user's cache)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60
    )


STEP = f"""
import os, subprocess, sys, warnings
from csideploy import console
console.configure(verbose=len(sys.argv) > 1, command="probe")
with console.step("convert"):
    os.write(2, b"{NATIVE}\\n")
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child noise\\\\n')"])
    warnings.warn("LeafSpec is deprecated", FutureWarning)
print("summary line")
print(console.log_note(), file=sys.stderr)
"""


def test_step_keeps_library_output_in_the_log(tmp_path: Path) -> None:
    done = _run(STEP, tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"  convert     \.\.\. \d+\.\d s\nsummary line\n", done.stdout)
    assert NATIVE not in done.stderr and "child noise" not in done.stderr
    assert "FutureWarning" not in done.stderr
    log = tmp_path / "cache" / "csideploy" / "logs" / "probe.log"
    assert f"in {log}; -v shows them" in done.stderr
    text = log.read_text()
    assert text.startswith("--- convert\n")
    assert NATIVE in text and "child noise" in text and "LeafSpec is deprecated" in text


def test_verbose_replays_library_output(tmp_path: Path) -> None:
    done = _run(STEP, tmp_path, "-v")
    assert done.returncode == 0, done.stderr
    assert NATIVE in done.stderr and "child noise" in done.stderr
    assert done.stdout.endswith(" s\nsummary line\n")


def test_own_stderr_passes_progress_through(tmp_path: Path) -> None:
    code = """
import os, sys
from csideploy import console
console.configure(verbose=False, command="probe")
with console.captured("train", own_stderr=True):
    sys.stderr.write("epoch 1/1: 100%\\n")
    os.write(2, b"native noise\\n")
"""
    done = _run(code, tmp_path)
    assert done.stderr == "epoch 1/1: 100%\n"
    log = tmp_path / "cache" / "csideploy" / "logs" / "probe.log"
    assert log.read_text() == "--- train\nnative noise\n"


def test_descriptors_restored_after_an_error(tmp_path: Path) -> None:
    code = """
import os, sys
from csideploy import console
console.configure(verbose=False, command="probe")
try:
    with console.step("load"):
        raise ValueError("bad")
except ValueError:
    pass
os.write(2, b"after\\n")
"""
    done = _run(code, tmp_path)
    assert done.stdout == "  load        ... failed\n"
    assert done.stderr == "after\n"


def test_cli_verbose_flag_and_errors(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "csideploy.cli", "-v", "report", str(tmp_path / "missing")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path / 'missing'}: not a directory\n"
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", ["models", "report"])
def test_json_outputs_match_their_schema(command: str, tmp_path: Path) -> None:
    import jsonschema
    from click.testing import CliRunner

    from csideploy.cli import main

    schema = json.loads(
        (Path(console.__file__).parent / "bundle" / "cli-output.schema.json").read_text()
    )
    args = ["models", "--json", "--model", "clnet"]
    if command == "report":
        folder = tmp_path / "run"
        folder.mkdir()
        (folder / "numerics.json").write_text(json.dumps({"model": "clnet", "cr": 4}))
        args = ["report", str(folder), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, {**schema, "$ref": f"#/$defs/{command}"})
    if command == "report":
        assert document["ship"] == [None]
