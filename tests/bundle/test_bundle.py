"""Bundle schema, golden vectors, tamper detection, reproducible tarballs, safe extraction."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csideploy.bundle.manifest import manifest_schema, parse_manifest, read_manifest
from csideploy.bundle.pack import pack_bundle
from csideploy.bundle.verify import verify_bundle
from csideploy.errors import BundleError


def test_manifest_is_schema_valid_and_lists_golden_files(bundle: Path) -> None:
    import jsonschema

    manifest = json.loads((bundle / "manifest.json").read_text())
    jsonschema.Draft202012Validator.check_schema(manifest_schema())
    jsonschema.validate(manifest, manifest_schema())
    listed = {entry["path"] for entry in manifest["files"]}
    assert "golden/inputs.npy" in listed
    assert "golden/encoder.onnx.expected.npy" in listed
    assert "golden/encoder.onnx.test/test_data_set_0/input_0.pb" in listed
    assert "decoder.onnx" not in listed
    assert [entry["path"] for entry in manifest["bs_side"]] == ["decoder.onnx"]


def test_onnx_test_data_matches_npy(bundle: Path) -> None:
    from onnx import TensorProto, numpy_helper

    test_dir = bundle / "golden/encoder.onnx.test/test_data_set_0"
    arrays = []
    for name in ("input_0.pb", "output_0.pb"):
        tensor = TensorProto()
        tensor.ParseFromString((test_dir / name).read_bytes())
        arrays.append(numpy_helper.to_array(tensor))
    np.testing.assert_array_equal(arrays[0], np.load(bundle / "golden/inputs.npy"))
    np.testing.assert_array_equal(arrays[1], np.load(bundle / "golden/encoder.onnx.expected.npy"))


def test_pristine_bundle_verifies(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert report.ok, report.failures
    assert {c.check for c in report.checks} == {"schema", "sha256", "contract", "golden"}


@pytest.mark.parametrize(
    "victim",
    [
        "encoder.onnx",
        "README.md",
        "numerics.json",
        "golden/inputs.npy",
        "golden/encoder.onnx.expected.npy",
        "golden/encoder.onnx.test/test_data_set_0/output_0.pb",
        "decoder.onnx",
    ],
)
def test_one_flipped_byte_fails_naming_the_file(bundle: Path, victim: str) -> None:
    path = bundle / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_bundle(bundle)
    assert not report.ok
    assert victim in {c.file for c in report.failures}


def test_tampered_manifest_fails_schema_or_hash(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "f" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report = verify_bundle(bundle)
    assert not report.ok
    (bundle / "manifest.json").write_text("{not json")
    report = verify_bundle(bundle)
    assert [c.file for c in report.failures] == ["manifest.json", "MANIFEST.sha256"]


def test_unlisted_file_fails(bundle: Path) -> None:
    (bundle / "extra.bin").write_bytes(b"surprise")
    report = verify_bundle(bundle)
    assert [c.file for c in report.failures] == ["extra.bin"]


def test_tarball_is_reproducible_and_ue_only(bundle: Path, tmp_path: Path) -> None:
    first = pack_bundle(bundle, out=tmp_path / "a.tar.gz")
    os.utime(bundle / "encoder.onnx", (1, 1))
    second = pack_bundle(bundle, out=tmp_path / "b.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
    assert names == sorted(names, key=lambda n: (n.count("/") > 0, n)) or names
    assert "clnet-cr64/encoder.onnx" in names
    assert not any(name.endswith("decoder.onnx") for name in names)
    assert verify_bundle(first).ok


def test_default_tarball_lands_beside_the_directory(bundle: Path) -> None:
    target = pack_bundle(bundle)
    assert target == bundle.with_name("clnet-cr64.tar.gz")
    assert target.is_file()


def _evil_tarball(path: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("bundle/manifest.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("bundle/../../escape.txt", tarfile.REGTYPE, "'..'"),
        ("/etc/evil.txt", tarfile.REGTYPE, "absolute path"),
        ("bundle/link", tarfile.SYMTYPE, "link entry"),
        ("bundle/hard", tarfile.LNKTYPE, "link entry"),
    ],
)
def test_unsafe_tarball_entries_are_refused_by_name(
    tmp_path: Path, name: str, kind: bytes, message: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        member.linkname = "/etc/passwd"
    tarball = _evil_tarball(tmp_path / "evil.tar.gz", member)
    with pytest.raises(BundleError, match=message) as caught:
        verify_bundle(tarball)
    assert name.lstrip("/") in str(caught.value) or name in str(caught.value)
    assert not (tmp_path.parent / "escape.txt").exists()


_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, _NoTorch())
from csideploy.cli import main
sys.argv = ["csideploy", *sys.argv[1:]]
main()
"""


def test_verify_cli_runs_without_torch(bundle: Path, tmp_path: Path) -> None:
    tarball = pack_bundle(bundle, out=tmp_path / "ue.tar.gz")
    for target in (bundle, tarball):
        result = subprocess.run(
            [sys.executable, "-c", _BLOCK_TORCH, "verify", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "verified" in result.stdout
    (bundle / "README.md").write_text("changed\n")
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH, "verify", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "FAIL sha256   README.md" in result.stdout


def test_verify_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        verify_bundle(tmp_path / "absent")


def test_read_manifest_requires_the_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        read_manifest(tmp_path)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), _json_values.map(json.dumps)))
def test_manifest_reader_fuzz_only_raises_bundle_error(text: bytes | str) -> None:
    try:
        manifest = parse_manifest(text)
    except BundleError as error:
        assert str(error).startswith("manifest.json: ")
    else:
        assert manifest["schema_version"] == "1.0"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["model", "files", "artifacts", "schema_version", "feedback"]),
    value=_json_values,
)
def test_manifest_reader_fuzz_mutated_fields(
    pristine_bundle: Path, key: str, value: object
) -> None:
    manifest = json.loads((pristine_bundle / "manifest.json").read_text())
    manifest[key] = value
    try:
        parse_manifest(json.dumps(manifest))
    except BundleError as error:
        message = str(error)
        assert (
            key in message
            or "top level" in message
            or "invalid" in message
            or (
                "Infinity is not allowed" in message  # not JSON: it would defeat tolerance bounds
            )
        )
