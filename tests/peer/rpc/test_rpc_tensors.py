"""Tensors as ``{"dtype", "shape", "data"}``."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from peer.rpc import TensorError, pack_tensor, unpack_tensor
from peer.rpc.tensors import DTYPES


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_round_trip_every_dtype(dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((2, 3, 4)) * 10).astype(dtype)
    wire = msgpack.unpackb(msgpack.packb(pack_tensor(arr)), raw=False)
    back = unpack_tensor(wire)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)


def test_layout_and_byte_order_are_normalised() -> None:
    arr = np.arange(12, dtype=">f4").reshape(3, 4).T  # big-endian and not C-contiguous
    packed = pack_tensor(arr)
    assert packed["dtype"] == "float32" and packed["shape"] == [4, 3]
    assert packed["data"] == np.ascontiguousarray(arr.astype("<f4")).tobytes()
    assert np.array_equal(unpack_tensor(packed), arr)


def test_view_is_read_only_unless_copied() -> None:
    packed = pack_tensor(np.zeros((2, 2), np.float32))
    view = unpack_tensor(packed)
    with pytest.raises(ValueError):
        view[0, 0] = 1
    copy = unpack_tensor(packed, copy=True)
    copy[0, 0] = 1
    assert copy[0, 0] == 1


def test_zero_size_and_scalar() -> None:
    for arr in (np.zeros((0, 5), np.int16), np.array(3.5, np.float64)):
        back = unpack_tensor(pack_tensor(arr))
        assert back.shape == arr.shape and np.array_equal(back, arr)


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2],
        {"dtype": "float32", "shape": [2]},
        {"dtype": "float32", "shape": [2], "data": b"\x00" * 8, "extra": 1},
        {"dtype": "float128", "shape": [1], "data": b"\x00" * 16},
        {"dtype": "object", "shape": [1], "data": b"\x00" * 8},
        {"dtype": 5, "shape": [1], "data": b"\x00" * 4},
        {"dtype": "float32", "shape": [3], "data": b"\x00" * 8},
        {"dtype": "float32", "shape": [-1], "data": b""},
        {"dtype": "float32", "shape": [1.5], "data": b"\x00" * 4},
        {"dtype": "float32", "shape": "2", "data": b"\x00" * 8},
        {"dtype": "float32", "shape": [1] * 40, "data": b"\x00" * 4},
        {"dtype": "float32", "shape": [2], "data": "not bytes"},
    ],
)
def test_bad_tensors_are_typed_errors(obj: object) -> None:
    with pytest.raises(TensorError) as err:
        unpack_tensor(obj)
    assert err.value.code == "bad_tensor"


def test_unsupported_arrays_are_refused() -> None:
    with pytest.raises(TensorError):
        pack_tensor(np.array([object()]))
    with pytest.raises(TensorError):
        pack_tensor(np.array(["text"]))
