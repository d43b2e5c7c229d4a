"""Fixtures of the report tests: the bench tests' artifact directory, built once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _load_helpers():
    spec = importlib.util.spec_from_file_location(
        "csideploy_test_bench_artifacts",
        Path(__file__).resolve().parents[1] / "bench" / "_bench_artifacts.py",
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _load_helpers()


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helpers.build_artifacts(tmp_path_factory.getbasetemp() / "bench-artifacts")


@pytest.fixture
def workdir(artifact_dir: Path, tmp_path: Path) -> Path:
    return helpers.copy_without_marker(artifact_dir, tmp_path / artifact_dir.name)
