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
    """`text` with every non-printable character (controls, format and separator characters
    such as a carriage return or a right-to-left override) and every backslash escaped as
    Python writes them, so an escape cannot be mistaken for a name's own characters.

    Names inside a tarball or a bundle come from whoever made it: a carriage return in a name
    would let it overwrite the start of its own line with a forged `ok` verdict.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else ascii(c)[1:-1] for c in text)
