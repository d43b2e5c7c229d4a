"""Typed errors: every failure a user can cause maps to one class and one clear message.

The CLI turns any `CsiDeployError` into a one-line message on stderr and exit code 2
(`exit_code`), so a user sees what went wrong and which key, shape or file caused it.
"""

from __future__ import annotations


class CsiDeployError(Exception):
    """Base class of every error the project raises on purpose."""

    exit_code = 2


class UnknownModelError(CsiDeployError, KeyError):
    """A model name or compression ratio that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ShapeError(CsiDeployError, ValueError):
    """A tensor or array with the wrong shape (names the tensor and both shapes)."""


class DataError(CsiDeployError, ValueError):
    """A CSI data file that is missing, empty, malformed or holds NaN/inf."""


class CheckpointError(CsiDeployError, ValueError):
    """A checkpoint that cannot be read, is unsafe, or does not match the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle asks to call something outside the allow-list."""


class DivergedError(CsiDeployError):
    """Training produced a non-finite loss or validation NMSE; nothing is saved from it."""


class ToleranceError(CsiDeployError):
    """A numerics gate failed: an artifact differs from the float model beyond tolerance."""

    exit_code = 3


class MissingDependencyError(CsiDeployError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class OutputExistsError(CsiDeployError, FileExistsError):
    """An output path exists and `--force` was not given."""


class BundleError(CsiDeployError):
    """A handset bundle (directory or tarball) that is malformed, unsafe or fails verification."""


class OutputError(CsiDeployError):
    """An output location that cannot be written: no permission, or not enough disk space."""


class DistributedError(CsiDeployError):
    """A torchrun launch this run cannot use (bad variables, a batch that does not split)."""


class ShardError(CsiDeployError):
    """Shards of a fanned-out job failed after their retries; finished shards are kept, so a
    rerun does only the rest. Exit code 4, distinct from bad input (2) and failed gates (3)."""

    exit_code = 4
