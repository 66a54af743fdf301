"""The KServe Open Inference Protocol (V2) over REST, with Triton's binary extension.

Both halves live here, the server's (decode requests, encode responses) and the SDK's
(encode requests, decode responses), so every tensor rule is written once and what
one side writes the other reads by construction; both match ``tritonclient.http``.

Request bodies are JSON, optionally followed by raw tensor bytes: the
``Inference-Header-Content-Length`` header says where the JSON ends, and each binary
tensor says its ``binary_data_size``. ``tritonclient.http`` sends binary by default.

This is the hot path of every V2 call, so it is plain functions over orjson and
numpy, with no pydantic validation of tensor data: binary tensors are views over the
body, not copies. Every malformed request raises a ``maas.errors`` class with a
message naming the offending tensor, never a bare exception. Size limits (elements
per tensor, bytes per BYTES element) raise ``PayloadTooLarge`` (413), because the fix
is a smaller request rather than a different format; everything else is a 400.

Outputs in JSON carry ``data`` flat, BYTES as UTF-8 strings. A BYTES output that is
not valid UTF-8 goes binary instead, whatever the caller asked: both tritonclient and
our SDK read binary outputs transparently, and nothing is lost. NaN and infinity,
which JSON cannot hold, are written as ``null``; ask for binary to keep them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from maas.errors import (
    InvalidInput,
    PayloadTooLarge,
    RuntimeFailure,
    UnsupportedDatatype,
    UnsupportedMediaType,
)
from maas.protocols.bounds import parse_digits
from maas.protocols.tensors import (
    UNLIMITED,
    DecodeLimits,
    array_from_binary,
    array_from_json,
    bytes_elements,
    datatype_of,
    element_count,
    numpy_dtype,
    serialize_bytes,
    validate_shape,
)

if TYPE_CHECKING:
    from maas.protocols.signature import Signature, TensorSpec

__all__ = [
    "HEADER_LENGTH",
    "REQUEST_MEDIA_TYPES",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "check_media_type",
    "choose_binary_outputs",
    "decode_infer_request",
    "decode_infer_response",
    "decode_tensors",
    "encode_infer_request",
    "encode_infer_response",
    "encode_tensors",
    "join_body",
    "model_metadata",
    "parse_header_length",
    "read_body",
    "requested_max_tokens",
    "server_metadata",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
#: Any larger header length is past the end of any body (checked by ``read_body``).
_MAX_HEADER_LENGTH = 2**63 - 1
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
#: What an inference body may be sent as: JSON, or JSON followed by binary tensors.
#: No type at all is taken too, because ``tritonclient`` sends none.
REQUEST_MEDIA_TYPES = ("application/json", "application/octet-stream")


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One entry of a request's ``outputs``; ``binary`` is None when not stated."""

    name: str
    binary: bool | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded V2 request; ``inputs`` keeps the request's order.

    Binary inputs are read-only views over the request body: copy before writing.
    """

    id: str | None
    inputs: dict[str, NDArray[Any]]
    parameters: dict[str, Any]
    outputs: list[RequestedOutput] | None
    binary_default: bool = False


# -- shared by both directions ---------------------------------------------------------


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int, for routers."""
    if value is None:
        return None
    length = parse_digits(value.strip(), _MAX_HEADER_LENGTH)
    if length is None:
        raise InvalidInput(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes, got {value.strip()[:40]!r}"
        )
    return length


def requested_max_tokens(parameters: Mapping[str, Any]) -> int | None:
    """V2 ``parameters.max_tokens``: the most tokens a language model may generate for
    each text of the call (None: the server's ``default_max_tokens``). Other models
    take no such parameter and ignore it, as V2 lets a server do with parameters."""
    value = parameters.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            "parameters.max_tokens must be a positive integer", details={"max_tokens": value}
        )
    return value


def check_media_type(content_type: str | None) -> None:
    """Refuse an inference body announced as anything but ``REQUEST_MEDIA_TYPES``
    (``UnsupportedMediaType``, 415): a form, XML or multipart body would otherwise be
    parsed as JSON and answered 200 by luck, or fail with a misleading message."""
    if content_type is None:
        return
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type and media_type not in REQUEST_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"V2 inference takes application/json, or application/octet-stream with "
            f"{HEADER_LENGTH} for binary tensors; got {media_type[:80]!r}",
            details={"content_type": media_type[:80]},
        )


def _json_depth(body: bytes, end: int) -> int:
    """Deepest bracket nesting of ``body[:end]``, ignoring brackets inside strings.

    Dropping escaped backslashes and quotes first leaves only real string delimiters,
    so a running parity of quotes tells string from structure, all in numpy.
    """
    text = body[:end].replace(b"\\\\", b"").replace(b'\\"', b"")
    chars = np.frombuffer(text, dtype=np.uint8)
    outside = (np.cumsum(chars == ord('"'), dtype=np.uint8) & 1) == 0  # parity survives wrap
    opens = (chars == ord("[")) | (chars == ord("{"))
    brackets = np.flatnonzero((opens | (chars == ord("]")) | (chars == ord("}"))) & outside)
    steps = np.where(opens[brackets], 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def read_body(body: bytes, header_length: int | None, max_depth: int) -> tuple[Any, int | None]:
    """The JSON header of ``body`` and where its binary part starts (None: no binary part).

    Depth is checked before parsing; counting brackets is a C loop, and only a body
    with more brackets than the limit pays for the exact scan.
    """
    if header_length is None:
        end, binary_start = len(body), None
    elif type(header_length) is not int or not 0 <= header_length <= len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH} must be an integer between 0 and the body size {len(body)}, "
            f"got {header_length!r}"
        )
    else:
        end = binary_start = header_length
    brackets = body.count(b"[", 0, end) + body.count(b"{", 0, end)
    if brackets > max_depth and _json_depth(body, end) > max_depth:
        raise InvalidInput(f"JSON nesting is deeper than the limit of {max_depth} levels")
    try:
        document = orjson.loads(body if end == len(body) else memoryview(body)[:end])
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the body is not valid JSON: {error}") from None
    return document, binary_start


def _tensor_header(entry: object, role: str, seen: Collection[str]) -> tuple[str, str, list[int]]:
    if type(entry) is not dict:
        raise InvalidInput(f"each {role} must be a JSON object, got {type(entry).__name__}")
    name = entry.get("name")
    if type(name) is not str or not name:
        raise InvalidInput(f"each {role} needs a non-empty string 'name'")
    label = f"{role} {name!r}"
    if name in seen:
        raise InvalidInput(f"{label} appears more than once")
    datatype = entry.get("datatype")
    if datatype is None:
        raise InvalidInput(f"{label} has no 'datatype'")
    numpy_dtype(datatype, label)
    if "shape" not in entry:
        raise InvalidInput(f"{label} has no 'shape'")
    return name, datatype, validate_shape(entry["shape"], label)


def decode_tensors(
    entries: object,
    body: bytes,
    binary_start: int | None,
    limits: DecodeLimits,
    *,
    role: str = "input",
    lenient: bool = False,
) -> dict[str, NDArray[Any]]:
    """Decode a V2 ``inputs`` or ``outputs`` list, taking binary tensors in order."""
    if type(entries) is not list:
        raise InvalidInput(f"'{role}s' must be a list of tensors")
    offset, end = binary_start, len(body)
    tensors: dict[str, NDArray[Any]] = {}
    for entry in entries:
        name, datatype, shape = _tensor_header(entry, role, tensors)
        label = f"{role} {name!r}"
        if element_count(shape) > limits.max_tensor_elements:
            raise PayloadTooLarge(
                f"{label}: shape {shape} has more than the limit of "
                f"{limits.max_tensor_elements} elements"
            )
        parameters = entry.get("parameters")
        if parameters is not None and type(parameters) is not dict:
            raise InvalidInput(f"{label}: 'parameters' must be an object")
        size = parameters.get("binary_data_size") if parameters else None
        if size is None:
            if "data" not in entry:
                raise InvalidInput(f"{label} has neither 'data' nor a binary_data_size")
            tensors[name] = array_from_json(
                entry["data"],
                datatype=datatype,
                shape=shape,
                label=label,
                limits=limits,
                lenient=lenient,
            )
            continue
        if "data" in entry:
            raise InvalidInput(f"{label} has both 'data' and a binary_data_size")
        if offset is None:
            raise InvalidInput(f"{label} has a binary_data_size but there is no {HEADER_LENGTH}")
        if type(size) is not int or size < 0:
            raise InvalidInput(f"{label}: binary_data_size must be a non-negative integer")
        if offset + size > end:
            raise InvalidInput(
                f"{label}: binary_data_size {size} runs {offset + size - end} bytes past the body"
            )
        tensors[name] = array_from_binary(
            body, offset, size, datatype=datatype, shape=shape, label=label, limits=limits
        )
        offset += size
    if offset is not None and offset != end:
        raise InvalidInput(f"{end - offset} bytes after the JSON header belong to no tensor")
    return tensors


def encode_tensors(
    arrays: Mapping[str, Any], binary: Collection[str]
) -> tuple[list[dict[str, Any]], list[Any]]:
    """V2 tensor entries for ``arrays`` and, in order, the buffers of the binary ones.

    Numeric JSON data stays a numpy array here: orjson writes it in C, far faster
    than ``tolist()``. Binary buffers are the arrays themselves, joined without a copy.
    """
    entries: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for name, value in arrays.items():
        array = np.asarray(value)
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        entries.append(entry)
        if datatype == "BYTES":
            items = bytes_elements(array)
            if name not in binary:
                try:
                    entry["data"] = [item.decode() for item in items]
                    continue
                except UnicodeDecodeError:
                    pass  # not text: send it binary rather than mangle it
            buffer: Any = serialize_bytes(items)
            size = len(buffer)
        else:
            if array.dtype.byteorder == ">" or not array.flags.c_contiguous:
                array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            if name not in binary:
                entry["data"] = array.reshape(-1)
                continue
            buffer, size = array.reshape(-1), array.nbytes
        entry["parameters"] = {"binary_data_size": size}
        buffers.append(buffer)
    return entries, buffers


def join_body(document: dict[str, Any], buffers: Sequence[Any]) -> tuple[bytes, int | None]:
    """The body and, when binary parts follow the JSON, the JSON's length."""
    header = orjson.dumps(document, option=_DUMPS_OPTIONS)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


# -- server side ----------------------------------------------------------------------


def _requested_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if type(raw) is not list:
        raise InvalidInput("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for entry in raw:
        if type(entry) is not dict or type(entry.get("name")) is not str:
            raise InvalidInput("each requested output must be an object with a string 'name'")
        name = entry["name"]
        if name in seen:
            raise InvalidInput(f"output {name!r} is requested more than once")
        seen.add(name)
        parameters = entry.get("parameters")
        if parameters is not None and type(parameters) is not dict:
            raise InvalidInput(f"output {name!r}: 'parameters' must be an object")
        binary = parameters.get("binary_data") if parameters else None
        if binary is not None and type(binary) is not bool:
            raise InvalidInput(f"output {name!r}: binary_data must be true or false")
        outputs.append(RequestedOutput(name, binary, parameters))
    return outputs


def decode_infer_request(
    body: bytes, header_length: int | None, limits: DecodeLimits
) -> InferRequest:
    """Decode a V2 inference request body; raises ``InvalidRequest`` subclasses or 413."""
    document, binary_start = read_body(body, header_length, limits.max_json_depth)
    if type(document) is not dict:
        raise InvalidInput("the request body must be a JSON object")
    if "inputs" not in document:
        raise InvalidInput("the request has no 'inputs'")
    inputs = decode_tensors(document["inputs"], body, binary_start, limits)
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput("'id' must be a string")
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif type(parameters) is not dict:
        raise InvalidInput("'parameters' must be an object")
    binary_default = parameters.get("binary_data_output", False)
    if type(binary_default) is not bool:
        raise InvalidInput("binary_data_output must be true or false")
    outputs = _requested_outputs(document.get("outputs"))
    return InferRequest(request_id, inputs, parameters, outputs, binary_default)


def choose_binary_outputs(request: InferRequest, output_names: Iterable[str]) -> set[str]:
    """Outputs to send binary: an output's ``binary_data`` beats ``binary_data_output``.

    Which outputs to return at all (only the requested ones, when ``outputs`` is
    given) is the caller's decision; this only decides how each one travels.
    """
    stated = {out.name: out.binary for out in request.outputs or () if out.binary is not None}
    default = request.binary_default
    return {name for name in output_names if stated.get(name, default)}


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, NDArray[Any]],
    parameters: dict[str, Any] | None,
    binary_outputs: Collection[str],
) -> tuple[bytes, int | None]:
    """The response body and, if any output is binary, the value of ``HEADER_LENGTH``."""
    try:
        entries, buffers = encode_tensors(outputs, binary_outputs)
    except UnsupportedDatatype as error:
        raise RuntimeFailure(f"the model returned an output V2 cannot carry: {error}") from None
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    document["outputs"] = entries
    return join_body(document, buffers)


def _specs(tensors: Iterable[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]


def server_metadata(name: str, version: str, extensions: Iterable[str]) -> dict[str, Any]:
    """``GET /v2`` in the V2 shape."""
    return {"name": name, "version": version, "extensions": list(extensions)}


def model_metadata(
    name: str, versions: Sequence[str], platform: str, signature: Signature
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]`` in the V2 shape."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": _specs(signature.inputs),
        "outputs": _specs(signature.outputs),
    }


# -- SDK side -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InferResponse:
    """A decoded V2 response; binary outputs are read-only views over the body."""

    model_name: str
    model_version: str
    id: str | None
    outputs: dict[str, NDArray[Any]]
    parameters: dict[str, Any]


def encode_infer_request(
    inputs: Mapping[str, Any],
    *,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    binary: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a V2 request; ``binary`` applies to inputs and outputs.

    Inputs are numpy arrays (or anything ``np.asarray`` takes); str arrays go as BYTES
    in UTF-8. Without ``outputs`` the server returns every output.
    """
    entries, buffers = encode_tensors(inputs, inputs.keys() if binary else ())
    extra = dict(parameters or {})
    document: dict[str, Any] = {}
    if request_id is not None:
        document["id"] = request_id
    document["inputs"] = entries
    if outputs is None:
        extra["binary_data_output"] = binary
    else:
        document["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    if extra:
        document["parameters"] = extra
    body, header_length = join_body(document, buffers)
    if header_length is None:
        return body, {"Content-Type": "application/json"}
    return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)}


def decode_infer_response(body: bytes, header_length: int | None) -> InferResponse:
    """Decode a V2 inference response; JSON ``null`` in float outputs reads as NaN."""
    document, binary_start = read_body(body, header_length, UNLIMITED.max_json_depth)
    if type(document) is not dict:
        raise InvalidInput("the response body is not a JSON object")
    outputs = decode_tensors(
        document.get("outputs", []), body, binary_start, UNLIMITED, role="output", lenient=True
    )
    parameters = document.get("parameters")
    response_id = document.get("id")
    return InferResponse(
        model_name=str(document.get("model_name", "")),
        model_version=str(document.get("model_version", "")),
        id=response_id if isinstance(response_id, str) else None,
        outputs=outputs,
        parameters=parameters if type(parameters) is dict else {},
    )
