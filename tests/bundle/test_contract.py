"""`verify` holds every declared fact to the artifact itself, bounds tolerances, compares every
golden form, and anchors the manifest with its own hash (issue 15, item 4)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from bundle_tamper import load_manifest, rehash, save_manifest, tree
from onnx import numpy_helper

from csideploy.bundle.execute import run_artifact_outputs
from csideploy.bundle.verify import verify_bundle
from csideploy.errors import BundleError


def _artifact(manifest: dict, file: str) -> dict:
    return next(a for a in manifest["artifacts"] if a["file"] == file)


def _scale(m: dict) -> None:
    output = _artifact(m, "encoder.int8.tflite")["output"]
    output["scale"] *= 1.5


def _zero_point(m: dict) -> None:
    _artifact(m, "encoder.int8.tflite")["input"]["zero_point"] += 1


def _codeword_length(m: dict) -> None:
    m["model"]["codeword_length"] = m["feedback"]["codeword_length"] = 64


def _cr(m: dict) -> None:
    m["model"]["cr"] = 32


def _shape(m: dict) -> None:
    _artifact(m, "encoder.onnx")["output"]["shape"] = ["batch", 64]


def _value_range(m: dict) -> None:
    for section in [m["input"], *(a["input"] for a in m["artifacts"]), *m["preprocessing"]]:
        if "value_range" in section:
            section["value_range"] = [0.0, 0.5]


def _name(m: dict) -> None:
    m["model"]["name"] = "clnet"


def _preprocessing(m: dict) -> None:
    m["preprocessing"][0]["description"] = "no DFT needed"


EDITS: dict[str, tuple[Callable[[dict], None], str | None, str | None]] = {
    # edit, the artifact the contract check names, what it says (None: only the pin catches it)
    "int8 scale": (_scale, "encoder.int8.tflite", "output 'codeword' scale"),
    "int8 zero_point": (_zero_point, "encoder.int8.tflite", "input 'csi' zero_point -127"),
    "codeword_length": (_codeword_length, "encoder.tflite", "codeword_length 64, the file's"),
    "cr": (_cr, "encoder.tflite", "CR 1/32: a 32-value codeword of a 2048-value input"),
    "output shape": (_shape, "encoder.onnx", "output 'codeword' shape ['batch', 64]"),
    "value_range": (_value_range, "encoder.onnx", "outside the declared input value_range"),
    "model.name": (_name, "encoder.onnx", "model 'clnet', the file says 'crnet'"),
    "preprocessing": (_preprocessing, None, None),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_manifest_edits_are_caught(export_copy: Path, edit: str) -> None:
    mutate, file, message = EDITS[edit]
    published = hashlib.sha256((export_copy / "manifest.json").read_bytes()).hexdigest()
    before = tree(export_copy)
    manifest = load_manifest(export_copy)
    mutate(manifest)
    # Edited alone, the manifest no longer matches its MANIFEST.sha256.
    save_manifest(export_copy, manifest, rehash=False)
    report = verify_bundle(export_copy)
    assert ("MANIFEST.sha256", "sha256") in {(c.file, c.check) for c in report.failures}
    # A forger who rewrites MANIFEST.sha256 too is caught by the file itself ...
    save_manifest(export_copy, manifest, rehash=True)
    report = verify_bundle(export_copy)
    if file is not None:
        details = [c.detail for c in report.failures if c.file == file]
        assert any(message in d for d in details), report.failures
    else:
        assert report.ok, report.failures  # a description no file can contradict ...
    # ... and always by the hash the integrator pinned.
    pinned = verify_bundle(export_copy, expect_sha256=published)
    assert "pinned" in [c.check for c in pinned.failures if c.file == "manifest.json"]
    after = tree(export_copy)
    assert set(after) == set(before)  # verify created nothing
    assert all(
        after[k] == before[k] for k in before if k not in ("manifest.json", "MANIFEST.sha256")
    )
    assert after["manifest.json"] != before["manifest.json"]


def _zero_weights(path: Path) -> None:
    """Every float weight of the ONNX file set to zero (its metadata kept)."""
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f":
            tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(array), tensor.name))
    onnx.save(model, str(path))


def _pb(tensor_path: Path, array: np.ndarray, name: str) -> None:
    tensor_path.write_bytes(numpy_helper.from_array(array, name).SerializeToString())


def test_zeroed_encoder_is_caught_until_a_consistent_forgery_meets_the_pin(
    export_copy: Path,
) -> None:
    published = hashlib.sha256((export_copy / "manifest.json").read_bytes()).hexdigest()
    manifest = load_manifest(export_copy)
    _zero_weights(export_copy / "encoder.onnx")
    rehash(export_copy, manifest, "encoder.onnx")
    save_manifest(export_copy, manifest)
    golden = [c for c in verify_bundle(export_copy).failures if c.file == "encoder.onnx"]
    assert golden and "exceeds 0.0001" in golden[0].detail

    # Loosening the tolerance: past the schema maximum, not JSON at all, or past the bound.
    entry = _artifact(manifest, "encoder.onnx")
    entry["tolerance"]["max_abs"] = 1e9
    save_manifest(export_copy, manifest)
    schema = verify_bundle(export_copy).failures[0]
    assert schema.check == "schema" and "greater than the maximum of 2" in schema.detail
    text = (export_copy / "manifest.json").read_text().replace("1000000000.0", "Infinity")
    (export_copy / "manifest.json").write_text(text)
    schema = verify_bundle(export_copy).failures[0]
    assert "Infinity is not allowed" in schema.detail
    entry["tolerance"]["max_abs"] = 2
    save_manifest(export_copy, manifest)
    details = [c.detail for c in verify_bundle(export_copy).failures]
    assert "tolerance 2 is looser than this artifact allows (0.001)" in details

    # Regenerating expected.npy from the forged encoder leaves the .pb form to betray it.
    entry["tolerance"]["max_abs"] = 1e-4
    inputs = np.load(export_copy / "golden/inputs.npy")
    (forged,) = run_artifact_outputs("onnxruntime", export_copy / "encoder.onnx", inputs)
    np.save(export_copy / "golden/encoder.onnx.expected.npy", forged.astype(np.float32))
    rehash(export_copy, manifest, "golden/encoder.onnx.expected.npy")
    save_manifest(export_copy, manifest)
    failures = verify_bundle(export_copy).failures
    assert [c.file for c in failures] == ["golden/encoder.onnx.test"]
    assert "exceeds" in failures[0].detail

    # Golden vectors a bundle computes from its own encoder prove nothing against a forgery
    # consistent in every file; the manifest hash published by the producer does.
    pb = "golden/encoder.onnx.test/test_data_set_0/output_0.pb"
    _pb(export_copy / pb, forged.astype(np.float32), "codeword")
    rehash(export_copy, manifest, pb)
    save_manifest(export_copy, manifest)
    assert verify_bundle(export_copy).ok
    pinned = verify_bundle(export_copy, expect_sha256=published)
    assert [(c.file, c.check) for c in pinned.failures] == [("manifest.json", "pinned")]


def test_pb_golden_form_is_compared(export_copy: Path) -> None:
    manifest = load_manifest(export_copy)
    pb = "golden/encoder.int8.onnx.test/test_data_set_0/output_0.pb"
    tensor = onnx.TensorProto()
    tensor.ParseFromString((export_copy / pb).read_bytes())
    _pb(export_copy / pb, numpy_helper.to_array(tensor) + np.float32(0.5), "codeword")
    rehash(export_copy, manifest, pb)
    extra = "golden/encoder.int8.onnx.test/test_data_set_0/output_1.pb"
    _pb(export_copy / extra, np.zeros(1, np.float32), "spare")
    manifest["files"].append({"path": extra, "sha256": "0" * 64, "bytes": 0})
    rehash(export_copy, manifest, extra)
    save_manifest(export_copy, manifest)
    (failure,) = verify_bundle(export_copy).failures
    assert failure.file == "golden/encoder.int8.onnx.test"
    assert "output_1.pb" in failure.detail  # an extra .pb is refused before any comparison
    (export_copy / extra).unlink()
    manifest["files"] = [e for e in manifest["files"] if e["path"] != extra]
    save_manifest(export_copy, manifest)
    (failure,) = verify_bundle(export_copy).failures
    assert failure.detail.startswith(".pb max-abs 0.5 exceeds")


def test_expect_sha256_pins_the_manifest(export_copy: Path) -> None:
    digest = hashlib.sha256((export_copy / "manifest.json").read_bytes()).hexdigest()
    assert (export_copy / "MANIFEST.sha256").read_text() == f"{digest}  manifest.json\n"
    report = verify_bundle(export_copy, expect_sha256=digest)
    assert report.ok and report.manifest_sha256 == digest
    assert ("manifest.json", "pinned", True) in {(c.file, c.check, c.ok) for c in report.checks}
    (export_copy / "MANIFEST.sha256").unlink()
    missing = verify_bundle(export_copy).failures
    assert (missing[0].file, missing[0].detail) == ("MANIFEST.sha256", "missing")
    assert {c.detail for c in missing[1:]} == {"not run: the bundle's hashes do not match"}


def test_manifest_is_world_readable_like_every_file(export_copy: Path) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in export_copy.iterdir() if p.is_file()}
    assert modes["manifest.json"] == modes["encoder.onnx"] == modes["MANIFEST.sha256"]
    assert modes["manifest.json"] & 0o044 == 0o044


def test_external_data_is_refused_before_a_runtime_opens_it(export_copy: Path) -> None:
    manifest = load_manifest(export_copy)
    model = onnx.load(str(export_copy / "encoder.onnx"))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/hostname"
    onnx.save(model, str(export_copy / "encoder.onnx"))
    rehash(export_copy, manifest, "encoder.onnx")
    save_manifest(export_copy, manifest)
    failures = [c for c in verify_bundle(export_copy).failures if c.file == "encoder.onnx"]
    assert failures[0].check == "contract"
    assert "points at external weight data" in failures[0].detail


def test_declaration_check_does_not_raise_on_pristine(export_copy: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        verify_bundle(export_copy / "absent")
    report = verify_bundle(export_copy)
    assert report.ok, report.failures
    assert {c.file for c in report.checks if c.check == "golden"} >= {
        "encoder.onnx",
        "golden/encoder.onnx.test",
        "encoder.int8.tflite",
    }
