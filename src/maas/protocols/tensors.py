"""V2 tensors as numpy arrays: the datatype map, shapes and the BYTES wire format.

Shared by the server codec and the SDK codec in ``maas.protocols.v2``, so both sides
agree on one definition of every datatype. Little-endian dtypes are named explicitly
because the binary extension fixes the byte order, not the host.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from maas.errors import InvalidInput, PayloadTooLarge, ShapeMismatch, UnsupportedDatatype

if TYPE_CHECKING:  # only the attribute names are used; keeps pydantic-settings off the SDK path
    from maas.config import LimitSettings

__all__ = [
    "DATATYPES",
    "MAX_DIMENSIONS",
    "MAX_EXTENT",
    "UNLIMITED",
    "DecodeLimits",
    "array_from_binary",
    "array_from_json",
    "bytes_elements",
    "datatype_of",
    "deserialize_bytes",
    "element_count",
    "numpy_dtype",
    "serialize_bytes",
    "validate_shape",
]

#: V2 datatype -> numpy dtype. BYTES maps to ``object`` (an array of ``bytes``).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# (kind, itemsize) -> V2 datatype; byte order does not matter for naming.
_BY_KIND: dict[tuple[str, int], str] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items() if name != "BYTES"
}
_LENGTH = struct.Struct("<I")
#: numpy's own limit on dimensions (``NPY_MAXDIMS``): past it no array can be built.
MAX_DIMENSIONS = 64
#: The largest product of a shape's non-zero dimensions. An empty tensor has no data to
#: bound, yet numpy still refuses a shape whose extent times 8 bytes overflows a signed
#: 64-bit size; this keeps every shape that passes buildable, far past any real tensor.
MAX_EXTENT = 2**56


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on what one request may make the server allocate.

    JSON depth guards the parser and our flattening; element counts and BYTES lengths
    bound memory before a model ever sees the tensor.
    """

    max_json_depth: int = 32
    max_tensor_elements: int = 16 * 1024 * 1024
    max_bytes_element: int = 1024 * 1024

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> DecodeLimits:
        return cls(
            max_json_depth=settings.max_json_depth,
            max_tensor_elements=settings.max_tensor_elements,
            max_bytes_element=settings.max_bytes_element,
        )


#: What the SDK applies to a server's responses: the server is trusted for size.
UNLIMITED = DecodeLimits(max_json_depth=1000, max_tensor_elements=2**62, max_bytes_element=2**62)


def numpy_dtype(datatype: str, label: str = "tensor") -> np.dtype[Any]:
    """The numpy dtype of a V2 datatype; ``UnsupportedDatatype`` for any other name."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        known = ", ".join(DATATYPES)
        raise UnsupportedDatatype(
            f"{label}: datatype {datatype!r} is not a V2 datatype (one of {known})",
            details={"datatype": str(datatype)},
        ) from None


def datatype_of(array: NDArray[Any]) -> str:
    """The V2 datatype that carries ``array``: str, bytes and object arrays are BYTES."""
    dtype = array.dtype
    if dtype.kind in "USO":
        return "BYTES"
    name = _BY_KIND.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise UnsupportedDatatype(
            f"numpy dtype {dtype} has no V2 datatype", details={"dtype": str(dtype)}
        )
    return name


def validate_shape(shape: object, label: str) -> list[int]:
    """``shape`` as a list of non-negative ints that numpy can build, or ``InvalidInput``.

    The element limit alone does not do: a shape with a zero has no elements, yet
    numpy refuses ``[2**32, 2**32, 0]`` or 65 dimensions outright (``ValueError``), so
    both bounds are checked here, once for the JSON and the binary paths. A non-empty
    shape is bounded by its element count instead (``PayloadTooLarge``, by the caller).
    """
    if type(shape) is not list or any(type(dim) is not int or dim < 0 for dim in shape):
        raise InvalidInput(f"{label}: shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInput(
            f"{label}: shape has {len(shape)} dimensions, more than the limit of {MAX_DIMENSIONS}"
        )
    if 0 in shape and math.prod(dim for dim in shape if dim) > MAX_EXTENT:
        raise InvalidInput(
            f"{label}: shape {shape} is too large to build, even with no elements "
            f"(its non-zero dimensions multiply past {MAX_EXTENT})"
        )
    return shape


def element_count(shape: Sequence[int]) -> int:
    """Elements of a tensor of ``shape``; ``[]`` is a scalar, one element."""
    return math.prod(shape)


def _as_bytes(item: object) -> bytes:
    if type(item) is bytes:
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    return str(item).encode()  # what tritonclient does with other objects


def bytes_elements(array: NDArray[Any]) -> list[bytes]:
    """The elements of a str/bytes/object array as ``bytes`` (str as UTF-8), row-major."""
    flat: list[Any] = array.ravel().tolist()
    if array.dtype.kind == "S":
        return flat
    return [_as_bytes(item) for item in flat]


def serialize_bytes(items: Sequence[bytes]) -> bytes:
    """The binary extension's BYTES layout: each element as a u32 LE length, then it."""
    pack = _LENGTH.pack
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        append(pack(len(item)))
        append(item)
    return b"".join(parts)


def deserialize_bytes(
    buffer: bytes, start: int, end: int, *, count: int, label: str, max_element: int
) -> NDArray[Any]:
    """``count`` BYTES elements from ``buffer[start:end]``, which they must fill exactly.

    Takes offsets rather than a slice so that a large body is never copied whole.
    """
    out = np.empty(count, dtype=object)
    unpack = _LENGTH.unpack_from
    offset = start
    for index in range(count):
        if offset + 4 > end:
            raise InvalidInput(f"{label}: binary BYTES data ends after {index} of {count} elements")
        (length,) = unpack(buffer, offset)
        if length > max_element:
            raise PayloadTooLarge(
                f"{label}: BYTES element {index} is {length} bytes, over the limit of {max_element}"
            )
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"{label}: BYTES element {index} runs past its binary_data_size")
        out[index] = buffer[offset : offset + length]
        offset += length
    if offset != end:
        raise InvalidInput(
            f"{label}: binary_data_size leaves {end - offset} bytes after the {count} BYTES "
            "elements of its shape"
        )
    return out


def array_from_binary(
    body: bytes,
    start: int,
    size: int,
    *,
    datatype: str,
    shape: list[int],
    label: str,
    limits: DecodeLimits,
) -> NDArray[Any]:
    """A tensor from its ``size`` bytes at ``body[start:]``: a read-only view unless BYTES.

    The view costs nothing per element, which is what makes binary requests cheap.
    """
    count = element_count(shape)
    if datatype == "BYTES":
        flat = deserialize_bytes(
            body,
            start,
            start + size,
            count=count,
            label=label,
            max_element=limits.max_bytes_element,
        )
        return flat.reshape(shape)
    dtype = DATATYPES[datatype]
    needed = count * dtype.itemsize
    if size != needed:
        raise InvalidInput(
            f"{label}: binary_data_size is {size} bytes but {datatype} of shape {shape} "
            f"takes {needed}"
        )
    array = np.frombuffer(body, dtype=dtype, count=count, offset=start)
    if datatype == "BOOL" and count and int(array.view(np.uint8).max()) > 1:
        raise InvalidInput(f"{label}: BOOL binary data must be bytes 0 or 1")
    return array.reshape(shape)


_KIND_WORDS = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "non-integer numbers",
    "U": "strings",
    "O": "nulls, objects or out-of-range numbers",
}


def _exact_integers(data: list[Any], label: str, datatype: str) -> tuple[NDArray[Any], str]:
    """The slow path for integers numpy could not type: exact Python ints, or an error."""
    values: list[Any] = np.array(data, dtype=object).ravel().tolist()
    for item in values:
        if type(item) is not int:
            raise InvalidInput(
                f"{label}: {datatype} data must be integers, got {type(item).__name__} {item!r}"
            )
    low, high = min(values), max(values)
    if low >= 0 and high < 2**64:
        return np.array(values, dtype=np.uint64), "u"
    if low >= -(2**63) and high < 2**63:
        return np.array(values, dtype=np.int64), "i"
    raise InvalidInput(
        f"{label}: value {low if low < 0 else high} is out of the range of {datatype}"
    )


def _numbers_from_json(data: list[Any], datatype: str, label: str, lenient: bool) -> NDArray[Any]:
    """Numbers checked against ``datatype``: no strings, no silent truncation or wrap-around.

    numpy would happily parse ``"1.5"``, truncate ``1.5`` to an INT64 and (in older
    versions) wrap ``300`` into a UINT8, so infer first and convert only what is exact.
    """
    dtype = DATATYPES[datatype]
    try:
        raw = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{label}: data is not a regular nested list") from None
    if raw.size == 0:
        return np.empty(0, dtype=dtype)
    kind: str = raw.dtype.kind
    if dtype.kind == "b":
        if kind == "b":
            return raw.ravel()
        expected = "true or false"
    elif dtype.kind == "f":
        if lenient and kind == "O":  # JSON null is how a server writes NaN
            with contextlib.suppress(ValueError, TypeError):
                raw, kind = np.array(data, dtype=np.float64), "f"
        if kind in "iuf":
            with np.errstate(over="ignore"):
                out = raw.astype(dtype).ravel()
            if dtype.itemsize < 8 and np.isinf(out).any() and not np.isinf(raw).any():
                raise InvalidInput(f"{label}: a value is out of the range of {datatype}")
            return out
        expected = "numbers"
    else:
        if kind in "fO":  # int64 mixed with uint64-only values promotes to float64
            raw, kind = _exact_integers(data, label, datatype)
        if kind in "iu":
            info = np.iinfo(dtype)
            low, high = int(raw.min()), int(raw.max())
            if low < info.min or high > info.max:
                raise InvalidInput(
                    f"{label}: value {low if low < info.min else high} is out of the range "
                    f"of {datatype} [{info.min}, {info.max}]"
                )
            return raw.astype(dtype).ravel()
        expected = "integers"
    got = _KIND_WORDS.get(kind, str(raw.dtype))
    raise InvalidInput(f"{label}: {datatype} data must be {expected}, got {got}")


def _bytes_from_json(data: list[Any], label: str, max_element: int) -> NDArray[Any]:
    """BYTES travel in JSON as strings; they become UTF-8 ``bytes`` like binary ones."""
    try:
        nested = np.array(data, dtype=object)
    except ValueError:
        raise InvalidInput(f"{label}: data is not a regular nested list") from None
    encoded: list[bytes] = []
    append = encoded.append
    for item in nested.ravel().tolist():
        if type(item) is not str:
            raise InvalidInput(f"{label}: BYTES data must be strings, got {type(item).__name__}")
        value = item.encode()
        if len(value) > max_element:
            raise PayloadTooLarge(
                f"{label}: a BYTES element is {len(value)} bytes, over the limit of {max_element}"
            )
        append(value)
    out = np.empty(len(encoded), dtype=object)
    out[:] = encoded
    return out


def array_from_json(
    data: object,
    *,
    datatype: str,
    shape: list[int],
    label: str,
    limits: DecodeLimits,
    lenient: bool = False,
) -> NDArray[Any]:
    """A tensor from V2 JSON ``data``, flat or nested (row-major), reshaped to ``shape``.

    ``lenient`` reads JSON null as NaN in float tensors: the SDK needs it for server
    responses; a server keeps it off so a request's missing value is an error.
    """
    if type(data) is not list:
        raise InvalidInput(f"{label}: data must be a list, got {type(data).__name__}")
    if datatype == "BYTES":
        flat = _bytes_from_json(data, label, limits.max_bytes_element)
    else:
        flat = _numbers_from_json(data, datatype, label, lenient)
    count = element_count(shape)
    if flat.size != count:
        raise ShapeMismatch(
            f"{label}: shape {shape} needs {count} elements but data has {flat.size}"
        )
    return flat.reshape(shape)
