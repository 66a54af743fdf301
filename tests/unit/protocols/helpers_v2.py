"""Sample tensors of every V2 datatype, shared by the protocol tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from maas.protocols.tensors import DATATYPES

NUMERIC = [name for name in DATATYPES if name not in ("BYTES",)]
ALL = list(DATATYPES)
SHAPES = [[2, 3], [1], [], [0, 4], [3, 1, 2]]


def sample(datatype: str, shape: list[int]) -> NDArray[Any]:
    """A tensor of ``shape`` whose values include the extremes of ``datatype``."""
    count = int(np.prod(shape))
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        pool = [b"", b"abc", "grüße ✓".encode(), b"x" * 300]
        flat = np.empty(count, dtype=object)
        flat[:] = [pool[i % len(pool)] for i in range(count)]
        return flat.reshape(shape)
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        pool_ints = [int(info.min), int(info.max), 0, 1, 7]
        return np.array([pool_ints[i % 5] for i in range(count)], dtype=dtype).reshape(shape)
    pool_floats = [0.1, -2.5, 1e-3, 3.0, 65504.0 if datatype == "FP16" else 1e30]
    return np.array([pool_floats[i % 5] for i in range(count)], dtype=dtype).reshape(shape)


def assert_same(actual: NDArray[Any], expected: NDArray[Any]) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.dtype == object
        assert actual.ravel().tolist() == expected.ravel().tolist()
    else:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
