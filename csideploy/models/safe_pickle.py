"""Read untrusted `torch.save` files without running anything they ask for.

A pickle is a program: every `GLOBAL` it names may be called while it loads. The files users
hand the toolkit (CRNet / CLNet trainer dicts in particular) name classes from the authors'
repositories, such as `utils.solver.Result`, so `torch.load(weights_only=True)` refuses them
and `weights_only=False` would import and run whatever the file names.

`safe_load` does neither. It first lists every global each pickle in the file names and sorts
them:

- globals torch's weights-only unpickler already allows (tensors, storages, OrderedDict);
- a few numpy reconstructors for scalars and arrays, resolved to numpy itself;
- anything else that looks like a class from outside the standard library becomes an inert
  `PickledObject` subclass carrying the constructor arguments and state (nothing imported);
- everything else (the standard library, functions, shell and process modules) is refused
  with `UnsafeCheckpointError` naming the global, before any byte is unpickled.

The load itself always runs through torch's weights-only unpickler with the placeholders
registered as safe globals, so even a global the scan misreads cannot run.
"""

from __future__ import annotations

import io
import pickletools
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from csideploy.errors import CheckpointError, UnsafeCheckpointError

KNOWN_RECORDS: Mapping[str, tuple[str, ...]] = {
    "utils.solver.Result": ("nmse", "rho", "epoch"),
}
"""Field names of namedtuples that official trainers pickle (the class itself is never imported)."""

_NUMPY_RECONSTRUCTORS = (
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
)

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
_MAX_PICKLES_IN_LEGACY_FILE = 5  # magic, protocol, sys_info, object, storage keys


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
        return f"<pickled {self.qualified_name} args={self.args!r}>"

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
        (_numpy_object(python3_name(name)), name)
        if kinds[name] == "numpy"
        else (placeholder_class(python3_name(name)), name)
        for name in names
        if kinds[name] in ("numpy", "placeholder")
    ]
    if "numpy" in kinds.values():
        extra += _numpy_dtype_classes()  # BUILD of a dtype checks the dtype's concrete class
    try:
        with torch.serialization.safe_globals(extra), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PROTOCOL_WARNING)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # torch raises many types for a bad file; all mean "unreadable"
        raise CheckpointError(f"cannot read {label}: {_torch_reason(error)}") from None


def classify(name: str) -> str:
    """'torch', 'numpy', 'placeholder' or 'refused' for a global `module.attr` in a pickle."""
    if name in _torch_allowed():
        return "torch"
    if name in _NUMPY_RECONSTRUCTORS or _is_numpy_dtype_class(name):
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


def globals_in_torch_file(data: bytes, *, label: str) -> set[str]:
    """Every global named by the pickles of a zip or legacy `torch.save` file."""
    if data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                pickles = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
        except (zipfile.BadZipFile, OSError, RuntimeError) as error:
            raise CheckpointError(f"cannot read {label}: broken zip archive ({error})") from None
        if not pickles:
            raise CheckpointError(f"cannot read {label}: a zip archive without data.pkl")
        return {name for blob in pickles for name in _scan(io.BytesIO(blob), label=label)}
    stream = io.BytesIO(data)
    found: set[str] = set()
    for index in range(_MAX_PICKLES_IN_LEGACY_FILE):
        start = stream.tell()
        try:
            found.update(_scan(stream, label=label))
        except CheckpointError:
            if index == 0:
                raise
            # past the pickles of a legacy file lie raw storage bytes
            stream.seek(start)
            break
        if stream.tell() >= len(data):
            break
    return found


def _scan(stream: io.BytesIO, *, label: str) -> Iterator[str]:
    """The globals one pickle names, including protocol-4 STACK_GLOBAL pairs."""
    strings: list[str] = []
    memo: dict[int, Any] = {}
    top: Any = None
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            kind = opcode.name
            if kind in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                yield _canonical(module, attr)
                top = None
            elif kind == "STACK_GLOBAL":
                yield _canonical(*strings[-2:]) if len(strings) >= 2 else "<unnamed global>"
                top = None
            elif kind in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(str(arg))
                top = str(arg)
            elif kind == "MEMOIZE":
                memo[len(memo)] = top
            elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = top
            elif kind in ("GET", "BINGET", "LONG_BINGET"):
                top = memo.get(int(arg))
                if isinstance(top, str):
                    strings.append(top)
            else:
                top = None
    except (ValueError, EOFError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"cannot read {label}: not a PyTorch checkpoint ({_first_line(error)})"
        ) from None


def python3_name(name: str) -> str:
    """The Python 3 name of a global that a protocol-2 pickle wrote under its Python 2 name
    (`commands.check_call` is `subprocess.check_call`), as `pickle` itself would map it."""
    import _compat_pickle

    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"


def _canonical(module: str, attr: str) -> str:
    """Python-2 names as torch's unpickler maps them (`__builtin__` -> `builtins`, ...)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    if (module, attr) in NAME_MAPPING:
        module, attr = NAME_MAPPING[(module, attr)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{attr}"


def _torch_allowed() -> frozenset[str]:
    """Globals torch's weights-only unpickler accepts without help."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
    except ImportError:  # a torch without the helper: let its unpickler decide alone
        return frozenset({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"})
    return frozenset(_get_allowed_globals())


def _is_numpy_dtype_class(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    return module == "numpy.dtypes" and attr.endswith("DType") and attr.isidentifier()


def _numpy_object(name: str) -> Any:
    """The numpy object behind an allow-listed reconstructor name."""
    import numpy as np

    module, _, attr = name.rpartition(".")
    if module == "numpy":
        return getattr(np, attr)
    if module == "numpy.dtypes":
        found = getattr(np.dtypes, attr, None)
        if found is None:
            raise CheckpointError(f"numpy {np.__version__} has no dtype class {attr}")
        return found
    multiarray = getattr(np, "_core", None) or np.core
    return getattr(multiarray.multiarray, attr)


def _numpy_dtype_classes() -> list[tuple[type, str]]:
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    if dtypes is None:
        return []
    return [
        (cls, f"numpy.dtypes.{name}")
        for name in dir(dtypes)
        if name.endswith("DType") and isinstance(cls := getattr(dtypes, name), type)
    ]


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def plain(value: Any, *, max_items: int = 16) -> Any:
    """A JSON-safe copy of a value from a checkpoint (placeholders become records)."""
    if isinstance(value, PickledObject):
        return plain(value.as_record(), max_items=max_items)
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return value.item()
        if value.numel() <= max_items:
            return value.tolist()
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, Mapping):
        return {str(k): plain(v, max_items=max_items) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, max_items=max_items) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):  # also numpy scalars that subclass int / float
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic):
        return plain(value.item(), max_items=max_items)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if value.size <= max_items:
            return plain(value.tolist(), max_items=max_items)
        return f"array{value.shape}"
    return repr(value)


def pickled_module_state(obj: PickledObject) -> dict[str, torch.Tensor] | None:
    """The state dict of an `nn.Module` pickled whole (`torch.save(model)`), read from the
    placeholder tree's `_parameters` / `_buffers` / `_modules`; None if `obj` is no module."""
    if not _is_pickled_module(obj):
        return None
    out: dict[str, torch.Tensor] = {}
    _collect_module_state(obj, "", out)
    return out


def _is_pickled_module(obj: Any) -> bool:
    return (
        isinstance(obj, PickledObject)
        and isinstance(obj.state, Mapping)
        and isinstance(obj.state.get("_parameters"), Mapping)
    )


def _collect_module_state(obj: PickledObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = obj.state
    for name, value in state.get("_parameters", {}).items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value.detach()
    transient = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in transient:
            out[f"{prefix}{name}"] = value
    for name, child in (state.get("_modules") or {}).items():
        if _is_pickled_module(child):
            _collect_module_state(child, f"{prefix}{name}.", out)


def iter_placeholders(value: Any) -> Iterable[PickledObject]:
    """Every placeholder inside a loaded structure (for reporting which classes were stubbed)."""
    if isinstance(value, PickledObject):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from iter_placeholders(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_placeholders(v)
