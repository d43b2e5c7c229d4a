"""Guarded stand-ins for the numpy reconstructors a checkpoint's pickle may call.

Handing the unpickler `numpy.ndarray` and `numpy.dtype` themselves lets a pickle call
`ndarray((1,), dtype('O'), buffer=b'AAAAAAAA')`: an object array whose one element is the
pointer 0x4141414141414141, which kills the process as soon as anything looks at it. So the
names a numpy pickle uses map to these functions instead:

- `numpy.dtype` builds an inert `DtypeSpec`; the dtype is made only when an array or scalar
  is, from a plain numeric type (bool, int, uint, float, complex) and a byte order, never
  from the pickle's field or object layout;
- `numpy.core.multiarray._reconstruct` starts a `PickledArray`, whose `__setstate__` checks
  dtype, shape and the byte count before numpy builds anything;
- `numpy.core.multiarray.scalar` reads a number from exactly `itemsize` bytes;
- `numpy.ndarray` called directly (no numpy pickle does that) is refused.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from csideploy.errors import UnsafeCheckpointError

NUMERIC_KINDS = "biufc"
"""numpy kinds a checkpoint's arrays may have: no objects, strings, voids or records."""
MAX_ARRAY_BYTES = 2**31
"""Largest numpy array a checkpoint's pickle may rebuild (its bytes are in the pickle)."""


class DtypeSpec:
    """What a pickle said about a dtype; turned into a numeric `np.dtype` only on use."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        """The numeric dtype described, or `UnsafeCheckpointError` for anything else."""
        code = self.args[0] if self.args else None
        if not isinstance(code, str) or len(code) > 8:
            raise UnsafeCheckpointError(f"numpy dtype {_short(code)}: not a type code")
        try:
            dtype = np.dtype(code)
        except TypeError:
            raise UnsafeCheckpointError(f"unknown numpy dtype {code!r}") from None
        if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields or dtype.subdtype:
            raise UnsafeCheckpointError(
                f"numpy dtype {code!r} ({dtype.kind!r} kind): only plain numbers "
                "load from a checkpoint, never objects or pointers"
            )
        return dtype.newbyteorder(self._byte_order())

    def _byte_order(self) -> str:
        state = self.state
        if state is None:
            return "="
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise UnsafeCheckpointError("a numpy dtype with fields or sub-arrays")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise UnsafeCheckpointError(f"numpy byte order {_short(order)}")
        return "=" if order == "|" else order


class PickledArray(np.ndarray):
    """The array `_reconstruct` starts; its state is checked before numpy fills it."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafeCheckpointError("a numpy array state of unknown layout")
        version, shape, spec, fortran, raw = state
        if not isinstance(spec, DtypeSpec):
            raise UnsafeCheckpointError(f"a numpy array of dtype {_short(spec)}")
        dtype = spec.resolve()
        if not (isinstance(shape, tuple) and all(_count(n) for n in shape)):
            raise UnsafeCheckpointError(f"numpy array shape {_short(shape)}")
        nbytes = math.prod(shape) * dtype.itemsize
        if not isinstance(raw, bytes) or len(raw) != nbytes or nbytes > MAX_ARRAY_BYTES:
            raise UnsafeCheckpointError(
                f"a numpy array of shape {shape}: {_size(raw)} data bytes for {nbytes} expected"
            )
        super().__setstate__((version, shape, dtype, bool(fortran), raw))


def guarded_reconstruct(subtype: Any, shape: Any, typecode: Any) -> PickledArray:
    """An empty `PickledArray` for the pickle's BUILD step to fill (arguments are ignored)."""
    return np.ndarray.__new__(PickledArray, (0,), np.uint8)


def guarded_scalar(spec: Any, raw: Any = None) -> Any:
    """A numpy scalar from exactly `itemsize` bytes of a numeric dtype."""
    if not isinstance(spec, DtypeSpec):
        raise UnsafeCheckpointError(f"a numpy scalar of dtype {_short(spec)}")
    dtype = spec.resolve()
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise UnsafeCheckpointError(
            f"a numpy {dtype} scalar from {_size(raw)} bytes ({dtype.itemsize} needed)"
        )
    return np.frombuffer(raw, dtype=dtype)[0].copy()


def refused_ndarray(*args: Any, **kwargs: Any) -> Any:
    """`numpy.ndarray(...)` called by a pickle: only hand-made pickles do it; refused."""
    raise UnsafeCheckpointError(
        "numpy.ndarray(...) called directly by the pickle (an array over raw memory)"
    )


_GUARDS = {
    "numpy.dtype": DtypeSpec,
    "numpy.ndarray": refused_ndarray,
    "numpy.core.multiarray._reconstruct": guarded_reconstruct,
    "numpy._core.multiarray._reconstruct": guarded_reconstruct,
    "numpy.core.multiarray.scalar": guarded_scalar,
    "numpy._core.multiarray.scalar": guarded_scalar,
}
NUMPY_NAMES = frozenset(_GUARDS)
"""The numpy globals a checkpoint may name."""


def numpy_safe_globals(names: set[str]) -> list[tuple[Any, str]]:
    """(guard, name) pairs for the unpickler, plus the guard classes BUILD may fill."""
    pairs: list[tuple[Any, str]] = [(_GUARDS[n], n) for n in sorted(names) if n in _GUARDS]
    if pairs:
        module = __name__
        pairs += [(DtypeSpec, f"{module}.DtypeSpec"), (PickledArray, f"{module}.PickledArray")]
    return pairs


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40


def _size(raw: Any) -> str:
    return str(len(raw)) if isinstance(raw, (bytes, bytearray)) else f"no ({type(raw).__name__})"


def _short(value: Any) -> str:
    """A type name, never the repr of something a pickle built."""
    if isinstance(value, str):
        return repr(value[:20])
    return f"a {type(value).__name__}"
