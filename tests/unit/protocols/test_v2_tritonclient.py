"""Compatibility with what the official ``tritonclient.http`` really sends and reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tests.unit.protocols.helpers_v2 import ALL, SHAPES, assert_same, sample

from maas.protocols.tensors import DecodeLimits
from maas.protocols.v2 import choose_binary_outputs, decode_infer_request, encode_infer_response

LIMITS = DecodeLimits()


def _triton_input(name: str, tensor: np.ndarray, binary: bool) -> Any:
    datatype = triton.np_to_triton_dtype(tensor.dtype) if tensor.dtype != object else "BYTES"
    infer_input = triton.InferInput(name, list(tensor.shape), datatype)
    infer_input.set_data_from_numpy(tensor, binary_data=binary)
    return infer_input


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ALL)
def test_tritonclient_request_decodes(datatype: str, shape: list[int], binary: bool) -> None:
    tensor = sample(datatype, shape)
    other = sample("INT64", [2])
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [_triton_input("x", tensor, binary), _triton_input("other", other, not binary)],
        outputs=[triton.InferRequestedOutput("y", binary_data=binary)],
        request_id="req-7",
    )
    request = decode_infer_request(body, header_length, LIMITS)
    assert_same(request.inputs["x"], tensor)
    assert_same(request.inputs["other"], other)
    assert request.id == "req-7"
    assert choose_binary_outputs(request, ["y", "z"]) == ({"y"} if binary else set())


def test_tritonclient_without_outputs_asks_for_binary_everything() -> None:
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [_triton_input("x", sample("FP32", [1, 4]), True)],
        parameters={"custom": "yes"},
        priority=3,
    )
    request = decode_infer_request(body, header_length, LIMITS)
    assert request.binary_default is True
    assert request.outputs is None
    assert request.parameters["custom"] == "yes"
    assert request.parameters["priority"] == 3
    assert choose_binary_outputs(request, ["a", "b"]) == {"a", "b"}


def _as_triton_reads(tensor: np.ndarray, binary: bool) -> np.ndarray:
    """tritonclient reads JSON BYTES as str objects and binary ones as bytes."""
    if tensor.dtype != object or binary:
        return tensor
    out = np.empty(tensor.shape, dtype=object)
    out.ravel()[:] = [item.decode() for item in tensor.ravel()]
    return out


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ALL)
def test_tritonclient_reads_our_response(datatype: str, shape: list[int], binary: bool) -> None:
    tensor = sample(datatype, shape)
    other = sample("FP32", [2, 2])
    body, header_length = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id="req-7",
        outputs={"out": tensor, "other": other},
        parameters=None,
        binary_outputs={"out"} if binary else {"other"},
    )
    result = triton.InferenceServerClient.parse_response_body(body, header_length=header_length)
    assert_same(result.as_numpy("out"), _as_triton_reads(tensor, binary))
    assert_same(result.as_numpy("other"), other)
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_name"] == "m"


def test_tritonclient_reads_an_all_json_response_without_header_length() -> None:
    tensor = np.arange(6, dtype=np.int32).reshape(2, 3)
    body, header_length = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"out": tensor},
        parameters=None,
        binary_outputs=set(),
    )
    assert header_length is None
    result = triton.InferenceServerClient.parse_response_body(body)
    assert_same(result.as_numpy("out"), tensor)
