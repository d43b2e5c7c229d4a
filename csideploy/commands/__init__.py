"""CLI commands, one module each, so that each stays beside the library call it wraps.

Each module defines click commands and a `register(group)` function.
"""

from __future__ import annotations

import importlib

import click

_MODULES = ("models", "data", "train", "evaluate", "infer", "export", "bench", "bundle", "sweep")


def register_all(group: click.Group) -> None:
    """Add every module's commands to `group` (a missing module is a packaging bug: it raises)."""
    for name in _MODULES:
        importlib.import_module(f"csideploy.commands.{name}").register(group)
