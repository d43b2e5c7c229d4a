"""Read untrusted `torch.save` files without running anything they ask for.

A pickle is a program: every `GLOBAL` it names may be called while it loads. The files users
hand the toolkit (CRNet / CLNet trainer dicts in particular) name classes from the authors'
repositories, such as `utils.solver.Result`, so `torch.load(weights_only=True)` refuses them
and `weights_only=False` would import and run whatever the file names.

`safe_load` does neither. It first lists every global each pickle in the file names and sorts
them:

- globals torch's weights-only unpickler already allows (tensors, storages, OrderedDict);
- the numpy reconstructors for scalars and arrays, through the guards of `numpy_guard`
  (numeric dtypes only: no object arrays, nothing over raw memory);
- anything else that looks like a class from outside the standard library becomes an inert
  `PickledObject` subclass carrying the constructor arguments and state (nothing imported);
- everything else (the standard library, functions, shell and process modules) is refused
  with `UnsafeCheckpointError` naming the global, before any byte is unpickled.

The load itself always runs through torch's weights-only unpickler with the placeholders
registered as safe globals, so even a global the scan misreads cannot run. The scan
(`pickle_scan`) also bounds each pickle's size, opcode count and nesting depth, and every walk
over what was loaded (`plain`, `iter_placeholders`, `pickled_module_state`) is bounded in
values visited and depth, so shared references cannot expand into a bomb.
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from csideploy.errors import CheckpointError, UnsafeCheckpointError
from csideploy.models.numpy_guard import NUMPY_NAMES, numpy_safe_globals
from csideploy.models.pickle_scan import _first_line, globals_in_torch_file, python3_name

KNOWN_RECORDS: Mapping[str, tuple[str, ...]] = {
    "utils.solver.Result": ("nmse", "rho", "epoch"),
}
"""Field names of namedtuples that official trainers pickle (the class itself is never imported)."""

_INERT_STDLIB_CLASSES = frozenset(
    {
        "argparse.Namespace",
        "datetime.date",
        "datetime.datetime",
        "datetime.timedelta",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
    }
)
"""Standard-library data classes that checkpoints commonly carry; they become placeholders."""

_REFUSED_ROOTS = frozenset(
    {
        "__builtin__",
        "builtins",
        "cloudpickle",
        "commands",
        "dill",
        "IPython",
        "joblib",
        "nt",
        "os",
        "pip",
        "posix",
        "setuptools",
    }
)
"""Top-level modules never turned into placeholders, whatever the name looks like."""

_PROTOCOL_WARNING = r"Detected pickle protocol"
MAX_VALUES = 100_000
"""Most values a walk over a loaded checkpoint visits (shared references count each time)."""
MAX_WALK_DEPTH = 100
"""Deepest nesting a walk over a loaded checkpoint follows."""


class PickledObject:
    """An inert stand-in for an object whose class the loader refuses to import.

    It keeps what the pickle supplied (`args` to the constructor, `state` for `__setstate__`)
    and does nothing else.
    """

    qualified_name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Constructor arguments are kept by `__new__`; nothing else happens."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.qualified_name} with {len(self.args)} args>"

    def as_record(self) -> dict[str, Any]:
        """A plain dict: the known field names when the class is a known record, else args/state."""
        fields = KNOWN_RECORDS.get(self.qualified_name)
        if fields is not None and len(fields) == len(self.args) and not self.kwargs:
            return dict(zip(fields, self.args, strict=True))
        record: dict[str, Any] = {"class": self.qualified_name, "args": list(self.args)}
        if self.kwargs:
            record["kwargs"] = dict(self.kwargs)
        if self.state is not None:
            record["state"] = self.state
        return record


_PLACEHOLDERS: dict[str, type[PickledObject]] = {}


def placeholder_class(qualified_name: str) -> type[PickledObject]:
    """The (cached) placeholder subclass standing for `qualified_name`."""
    cls = _PLACEHOLDERS.get(qualified_name)
    if cls is None:
        module, _, name = qualified_name.rpartition(".")
        cls = type(
            name,
            (PickledObject,),
            {"__module__": module, "__qualname__": name, "qualified_name": qualified_name},
        )
        _PLACEHOLDERS[qualified_name] = cls
    return cls


def safe_load(data: bytes, *, label: str) -> Any:
    """Unpickle a `torch.save` file's bytes with tensors mapped to the CPU and nothing run.

    `label` names the file in errors. Raises `UnsafeCheckpointError` for a pickle that asks to
    call something outside the allow-list and `CheckpointError` for anything unreadable.
    """
    names = sorted(globals_in_torch_file(data, label=label))
    kinds = {name: classify(python3_name(name)) for name in names}
    refused = sorted({python3_name(name) for name in names if kinds[name] == "refused"})
    if refused:
        raise UnsafeCheckpointError(
            f"refusing to load {label}: it asks to call {', '.join(refused)}"
        )
    # registered under the name torch's unpickler will look up
    extra = [
        (placeholder_class(python3_name(name)), name)
        for name in names
        if kinds[name] == "placeholder"
    ]
    extra += numpy_safe_globals({name for name in names if kinds[name] == "numpy"})
    try:
        with torch.serialization.safe_globals(extra), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PROTOCOL_WARNING)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except CheckpointError as error:
        raise type(error)(f"refusing to load {label}: {error}") from None
    except RecursionError:
        raise CheckpointError(f"cannot read {label}: its pickle nests too deep") from None
    except Exception as error:  # torch raises many types for a bad file; all mean "unreadable"
        raise CheckpointError(f"cannot read {label}: {_torch_reason(error)}") from None


def classify(name: str) -> str:
    """'torch', 'numpy', 'placeholder' or 'refused' for a global `module.attr` in a pickle."""
    if name in _torch_allowed():
        return "torch"
    if name in NUMPY_NAMES:
        return "numpy"
    module, _, attr = name.rpartition(".")
    root = module.split(".", 1)[0]
    if not module or root in _REFUSED_ROOTS:
        return "refused"
    if name in _INERT_STDLIB_CLASSES:
        return "placeholder"
    if root in sys.stdlib_module_names:
        return "refused"
    return "placeholder" if _looks_like_class(attr) else "refused"


def _torch_allowed() -> frozenset[str]:
    """Globals torch's weights-only unpickler accepts without help."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
    except ImportError:  # a torch without the helper: let its unpickler decide alone
        return frozenset({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"})
    return frozenset(_get_allowed_globals())


def _torch_reason(error: BaseException) -> str:
    """The line of torch's weights-only error that says what failed, not the boilerplate."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if rest:
                return rest
            if index + 1 < len(lines):
                return lines[index + 1]
    return _first_line(error)


def _looks_like_class(attr: str) -> bool:
    """CapWords names are classes by convention; functions and modules are lower case."""
    name = attr.lstrip("_")
    return bool(name) and name[0].isupper() and "." not in name and name.isidentifier()


class _Walk:
    """Counts the values a walk visits and how deep it goes; an error past either bound."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.visited = 0

    def enter(self, depth: int) -> None:
        self.visited += 1
        if self.visited > MAX_VALUES:
            raise CheckpointError(
                f"{self.label}: holds over {MAX_VALUES} values (shared references expand "
                "without bound?); not a checkpoint this toolkit reads"
            )
        if depth > MAX_WALK_DEPTH:
            raise CheckpointError(f"{self.label}: nests deeper than {MAX_WALK_DEPTH} levels")


_SCALAR_TYPES = (torch.device, torch.dtype, complex)


def plain(value: Any, *, max_items: int = 16, label: str = "the checkpoint") -> Any:
    """A JSON-safe copy of a value from a checkpoint (placeholders become records).

    Bounded: over `MAX_VALUES` values visited or `MAX_WALK_DEPTH` levels is a `CheckpointError`
    naming `label`. Objects of other types become their type name, never their repr."""
    return _plain(value, max_items, _Walk(label), 0)


def _plain(value: Any, max_items: int, walk: _Walk, depth: int) -> Any:
    walk.enter(depth)
    if isinstance(value, PickledObject):
        return _plain(value.as_record(), max_items, walk, depth + 1)
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return value.item()
        if value.numel() <= max_items:
            return value.tolist()
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, Mapping):
        return {str(k): _plain(v, max_items, walk, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, max_items, walk, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):  # also numpy scalars that subclass int / float
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _plain(value.item(), max_items, walk, depth + 1)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if value.size <= max_items:
            return _plain(value.tolist(), max_items, walk, depth + 1)
        return f"array{value.shape}"
    if isinstance(value, _SCALAR_TYPES):
        return str(value)
    return f"<{type(value).__name__}>"


def pickled_module_state(
    obj: PickledObject, *, label: str = "the checkpoint"
) -> dict[str, torch.Tensor] | None:
    """The state dict of an `nn.Module` pickled whole (`torch.save(model)`), read from the
    placeholder tree's `_parameters` / `_buffers` / `_modules`; None if `obj` is no module."""
    if not _is_pickled_module(obj):
        return None
    out: dict[str, torch.Tensor] = {}
    _collect_module_state(obj, "", out, _Walk(label), 0)
    return out


def _is_pickled_module(obj: Any) -> bool:
    return (
        isinstance(obj, PickledObject)
        and isinstance(obj.state, Mapping)
        and isinstance(obj.state.get("_parameters"), Mapping)
    )


def _collect_module_state(
    obj: PickledObject, prefix: str, out: dict[str, torch.Tensor], walk: _Walk, depth: int
) -> None:
    walk.enter(depth)
    state = obj.state
    for name, value in state.get("_parameters", {}).items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value.detach()
    transient = state.get("_non_persistent_buffers_set") or set()
    buffers = state.get("_buffers") or {}
    for name, value in buffers.items() if isinstance(buffers, Mapping) else ():
        if isinstance(value, torch.Tensor) and name not in transient:
            out[f"{prefix}{name}"] = value
    modules = state.get("_modules") or {}
    for name, child in modules.items() if isinstance(modules, Mapping) else ():
        if _is_pickled_module(child):
            _collect_module_state(child, f"{prefix}{name}.", out, walk, depth + 1)


def iter_placeholders(value: Any, *, label: str = "the checkpoint") -> Iterator[PickledObject]:
    """Every placeholder inside a loaded structure (for reporting which classes were stubbed),
    bounded like `plain`."""
    walk = _Walk(label)
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        walk.enter(depth)
        if isinstance(item, PickledObject):
            yield item
        elif isinstance(item, Mapping):
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend((v, depth + 1) for v in item)
