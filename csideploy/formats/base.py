"""The format registry: every artifact format csideploy writes, declared by its own module.

A format module calls `register_format(Format(...))` once, at import: its name (the
`--format` value and the manifest's `format`), the file suffix, the runtime that runs it, the
function that converts a torch module, and the INT8 precisions its converter can write.
`csideploy.formats` imports every format module, so `FORMATS` is complete once it is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from csideploy.errors import CsiDeployError


@dataclass(frozen=True)
class Format:
    """One artifact format.

    `int8`: the INT8 precisions ("int8" static, "dynamic") the format can write; a method a
    format does not list is refused before anything is exported. `extra`: the pip extra its
    converter needs, or None when the base install has it.
    """

    name: str
    suffix: str
    runtime: str
    export: Callable[..., Any]
    int8: tuple[str, ...] = ()
    extra: str | None = None


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add `fmt` to the registry; a second format of the same name is a programming error."""
    if fmt.name in FORMATS and FORMATS[fmt.name] != fmt:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    """The registered format `name`, or an error listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise CsiDeployError(f"unknown export format {name!r}; known: {known}") from None


def check_int8(fmt: Format, precision: str) -> None:
    """Refuse an INT8 precision the format cannot write (instead of silently skipping it)."""
    if precision not in fmt.int8:
        supported = ", ".join(fmt.int8) or "none"
        raise CsiDeployError(
            f"format {fmt.name} cannot write {precision} INT8 (supported: {supported})"
        )
