"""The datatype map, shape helpers and the BYTES wire format."""

from __future__ import annotations

import numpy as np
import pytest

from maas.config import LimitSettings
from maas.errors import InvalidInput, PayloadTooLarge, UnsupportedDatatype
from maas.protocols.signature import V2_DATATYPES
from maas.protocols.tensors import (
    DATATYPES,
    MAX_DIMENSIONS,
    MAX_EXTENT,
    DecodeLimits,
    datatype_of,
    deserialize_bytes,
    element_count,
    numpy_dtype,
    serialize_bytes,
    validate_shape,
)


def test_every_signature_datatype_has_a_numpy_dtype() -> None:
    assert set(DATATYPES) == set(V2_DATATYPES)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_datatype_of_inverts_the_map(datatype: str) -> None:
    assert datatype_of(np.zeros(2, dtype=DATATYPES[datatype])) == datatype
    big_endian = np.zeros(2, dtype=DATATYPES[datatype].newbyteorder(">"))
    assert datatype_of(big_endian) == datatype


@pytest.mark.parametrize(
    "array",
    [np.array(["a"]), np.array([b"a"]), np.array([b"a"], dtype=object)],
    ids=["str", "bytes", "object"],
)
def test_text_and_object_arrays_are_bytes(array: np.ndarray) -> None:
    assert datatype_of(array) == "BYTES"


def test_unsupported_numpy_dtypes_are_refused() -> None:
    with pytest.raises(UnsupportedDatatype, match="complex128"):
        datatype_of(np.zeros(1, dtype=np.complex128))


def test_unknown_v2_datatype_is_refused_with_its_name() -> None:
    with pytest.raises(UnsupportedDatatype, match=r"'FP8'.*one of BOOL"):
        numpy_dtype("FP8", "input 'x'")


def test_shapes() -> None:
    assert element_count([]) == 1
    assert element_count([0, 4]) == 0
    assert element_count([2, 3]) == 6
    assert validate_shape([2, 0], "input 'x'") == [2, 0]
    for bad in ([-1], [1.0], "2", None, [True]):
        with pytest.raises(InvalidInput, match="input 'x': shape must be"):
            validate_shape(bad, "input 'x'")


def test_limits_from_settings() -> None:
    settings = LimitSettings(max_json_depth=5, max_tensor_elements=10, max_bytes_element=3)
    assert DecodeLimits.from_settings(settings) == DecodeLimits(5, 10, 3)


def test_bytes_layout_matches_the_binary_extension() -> None:
    body = serialize_bytes([b"ab", b"", "é".encode()])
    assert body == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x02\x00\x00\x00\xc3\xa9"
    decoded = deserialize_bytes(
        b"xx" + body, 2, 2 + len(body), count=3, label="input 's'", max_element=10
    )
    assert decoded.tolist() == [b"ab", b"", "é".encode()]


def test_bytes_decoding_checks_every_boundary() -> None:
    body = serialize_bytes([b"abc", b"de"])
    with pytest.raises(InvalidInput, match="ends after 2 of 3 elements"):
        deserialize_bytes(body, 0, len(body), count=3, label="input 's'", max_element=10)
    with pytest.raises(InvalidInput, match="leaves 6 bytes"):
        deserialize_bytes(body, 0, len(body), count=1, label="input 's'", max_element=10)
    with pytest.raises(InvalidInput, match="element 1 runs past"):
        deserialize_bytes(body, 0, len(body) - 1, count=2, label="input 's'", max_element=10)
    with pytest.raises(PayloadTooLarge, match="input 's': BYTES element 0 is 3 bytes"):
        deserialize_bytes(body, 0, len(body), count=2, label="input 's'", max_element=2)


@pytest.mark.parametrize(
    "shape", [[2**32, 2**32, 0], [2**31, 2**31, 0], [1] * (MAX_DIMENSIONS + 1), [2**57, 0]]
)
def test_shapes_numpy_cannot_build_are_invalid_input(shape: list[int]) -> None:
    with pytest.raises(InvalidInput):
        validate_shape(shape, "input 'x'")


def test_every_shape_that_passes_can_be_built() -> None:
    for shape in ([1] * (MAX_DIMENSIONS - 1) + [0], [2**28, 2**28, 0], [MAX_EXTENT, 0]):
        assert np.empty(0).reshape(validate_shape(shape, "x")).size == 0
