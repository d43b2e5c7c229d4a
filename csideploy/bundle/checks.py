"""One line of a verification report, and how untrusted text is shown on a terminal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One line of the verification report."""

    file: str
    check: str
    ok: bool
    detail: str


def printable(text: str) -> str:
    """`text` with every control or non-ASCII character escaped (as Python's ascii() does).

    Names inside a tarball or a bundle come from whoever made it: a carriage return in a name
    would let it overwrite the start of its own line with a forged `ok` verdict.
    """
    if text.isascii() and text.isprintable():
        return text
    return ascii(text)[1:-1]
