"""Tensors on the wire: ``{"dtype": str, "shape": [int, ...], "data": bytes}``.

``data`` is the array's C-order bytes in little-endian byte order; ``dtype`` is a numpy dtype
name from ``DTYPES``. Decoding checks every field and that the bytes match the shape exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from peer.rpc.errors import TensorError

DTYPES = frozenset(
    {
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    }
)
MAX_DIMS = 32


def pack_tensor(array: Any) -> dict[str, Any]:
    """Encode a numpy array (or anything ``np.asarray`` accepts, e.g. a CPU torch tensor)."""
    try:
        arr = np.asarray(array)
    except Exception as exc:  # arbitrary objects may fail in arbitrary ways
        raise TensorError(f"not an array: {type(exc).__name__}: {exc}") from exc
    name = arr.dtype.name
    if name not in DTYPES:
        raise TensorError(f"dtype {arr.dtype!s} cannot travel; supported: {sorted(DTYPES)}")
    if arr.ndim > MAX_DIMS:
        raise TensorError(f"{arr.ndim} dimensions; at most {MAX_DIMS}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return {"dtype": name, "shape": list(arr.shape), "data": np.ascontiguousarray(arr).tobytes()}


def unpack_tensor(obj: Any, *, copy: bool = False) -> np.ndarray[Any, Any]:
    """Decode a tensor dict. Without ``copy`` the array is a read-only view of ``data``."""
    if not isinstance(obj, dict):
        raise TensorError(f"a tensor is a dict, got {type(obj).__name__}")
    missing = {"dtype", "shape", "data"} - obj.keys()
    if missing:
        raise TensorError(f"tensor dict lacks {sorted(missing)}")
    extra = obj.keys() - {"dtype", "shape", "data"}
    if extra:
        raise TensorError(f"tensor dict has unknown keys {sorted(map(str, extra))}")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise TensorError(f"unknown dtype {dtype!r}; supported: {sorted(DTYPES)}")
    if not isinstance(shape, list | tuple) or len(shape) > MAX_DIMS:
        raise TensorError(f"shape must be a list of at most {MAX_DIMS} ints")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise TensorError(f"shape entries must be non-negative ints, got {shape!r}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TensorError(f"data must be bytes, got {type(data).__name__}")
    dt = np.dtype(dtype).newbyteorder("<")
    count = 1
    for d in shape:
        count *= d
    expected = count * dt.itemsize
    if len(data) != expected:
        raise TensorError(
            f"data has {len(data)} bytes; {dtype} of shape {list(shape)} needs {expected}"
        )
    arr = np.frombuffer(data, dtype=dt, count=count).reshape(shape)
    if dt != dt.newbyteorder("="):
        arr = arr.astype(dt.newbyteorder("="))
    return arr.copy() if copy else arr
