"""CLI commands, one module each, so that each stays beside the library call it wraps.

Each module defines click commands and a `register(group)` function.
"""

from __future__ import annotations

import importlib

import click

_MODULES = ("data", "infer", "train", "export", "tflite_cmds", "bench", "bundle", "sweep")


def register_all(group: click.Group) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(f"csideploy.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"csideploy.commands.{name}":
                raise
            continue
        module.register(group)
