"""KServe V2 over gRPC as pure data: its messages, and tensors to and from them.

The messages come from ``grpc_predict_v2.desc``, the FileDescriptorSet protoc makes of
``grpc_predict_v2.proto`` (KServe's public specification, plus Triton's streaming
call). Regenerate it after editing the .proto (grpcio-tools ships protoc)::

    cd src && python -m grpc_tools.protoc -I maas/protocols/v2grpc \\
        --descriptor_set_out=maas/protocols/v2grpc/grpc_predict_v2.desc grpc_predict_v2.proto

They are built in a descriptor pool of their own, not protobuf's default one: Triton's
client defines the same ``inference.*`` names in the default pool, and a process that
holds both (a test, a gateway that also calls Triton) must not see them collide. The
classes are typed ``Any`` because protobuf builds their attributes at run time.

Tensors go as ``raw_input_contents``/``raw_output_contents`` (row-major little-endian
bytes; BYTES as u32-length-prefixed elements, as in the binary extension of V2 REST)
or, on input, in the typed ``contents`` lists. Every malformed request raises a
``maas.errors`` class, as the REST codec does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from maas.errors import InvalidInput, PayloadTooLarge
from maas.protocols.tensors import (
    DATATYPES,
    DecodeLimits,
    array_from_binary,
    bytes_elements,
    datatype_of,
    element_count,
    numpy_dtype,
    serialize_bytes,
)

__all__ = [
    "SERVICE",
    "DecodedInfer",
    "decode_infer_request",
    "encode_infer_response",
    "message",
    "parameter_value",
]

#: The full name of the service, as gRPC routes it.
SERVICE = "inference.GRPCInferenceService"


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    data = resources.files(__package__).joinpath("grpc_predict_v2.desc").read_bytes()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    return pool


_POOL = _pool()


def message(name: str) -> Any:
    """The message class ``inference.<name>``."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))


#: ``InferTensorContents`` field of each datatype (FP16 and BF16 only travel raw).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True, slots=True)
class DecodedInfer:
    id: str
    inputs: dict[str, np.ndarray]
    #: Output names asked for; None: every output.
    outputs: list[str] | None
    parameters: dict[str, Any]


def parameter_value(parameter: Any) -> Any:
    """The value an ``InferParameter`` holds (None when it holds none)."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def decode_infer_request(request: Any, limits: DecodeLimits) -> DecodedInfer:
    """A ``ModelInferRequest``'s tensors as numpy arrays, checked against ``limits``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        label = f"input {name!r}"
        if not name:
            raise InvalidInput(f"input {index} has no name")
        if name in inputs:
            raise InvalidInput(f"{label} is given twice")
        datatype = tensor.datatype
        numpy_dtype(datatype, label)  # UnsupportedDatatype for a name V2 does not have
        shape = list(tensor.shape)
        if any(dim < 0 for dim in shape):
            raise InvalidInput(f"{label}: shape must be non-negative integers, got {shape}")
        if element_count(shape) > limits.max_tensor_elements:
            raise PayloadTooLarge(
                f"{label}: shape {shape} has more than the limit of "
                f"{limits.max_tensor_elements} elements"
            )
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"{label} has both contents and raw_input_contents")
            body = raw[index]
            inputs[name] = array_from_binary(
                body, 0, len(body), datatype=datatype, shape=shape, label=label, limits=limits
            )
        else:
            inputs[name] = _from_contents(tensor, datatype, shape, label, limits)
    outputs = [output.name for output in request.outputs] or None
    parameters = {key: parameter_value(value) for key, value in request.parameters.items()}
    return DecodedInfer(request.id, inputs, outputs, parameters)


def _from_contents(
    tensor: Any, datatype: str, shape: list[int], label: str, limits: DecodeLimits
) -> np.ndarray:
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InvalidInput(f"{label}: {datatype} travels only in raw_input_contents")
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(
            f"{label}: shape {shape} needs {count} elements but contents has {len(values)}"
        )
    if datatype == "BYTES":
        for index, item in enumerate(values):
            if len(item) > limits.max_bytes_element:
                raise PayloadTooLarge(
                    f"{label}: BYTES element {index} is {len(item)} bytes, over the limit of "
                    f"{limits.max_bytes_element}"
                )
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        return np.array(values, dtype=DATATYPES[datatype]).reshape(shape)
    except OverflowError:
        raise InvalidInput(f"{label}: a value does not fit {datatype}") from None


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Mapping[str, Any],
    *,
    response_class: Any = None,
) -> Any:
    """A ``ModelInferResponse`` carrying ``outputs`` as raw contents."""
    response = (response_class or _INFER_RESPONSE)(
        model_name=model_name, model_version=model_version, id=request_id
    )
    raw: list[bytes] = []
    for name, value in outputs.items():
        array = np.asarray(value)
        datatype = datatype_of(array)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        raw.append(_raw(array, datatype))
    response.raw_output_contents.extend(raw)
    return response


def _raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes(bytes_elements(array))
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


_INFER_RESPONSE = message("ModelInferResponse")
