"""Fixtures shared by tests in several folders."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def private_tmp(tmp_path: Path) -> Iterator[Path]:
    """A private folder as `tempfile`'s default for the test, to see that nothing stays there."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
