"""Our SDK codec against our server codec, both directions, every datatype."""

from __future__ import annotations

import numpy as np
import pytest
from tests.unit.protocols.helpers_v2 import ALL, SHAPES, assert_same, sample

from maas.protocols.signature import Signature, TensorSpec
from maas.protocols.tensors import DecodeLimits
from maas.protocols.v2 import (
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    choose_binary_outputs,
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    model_metadata,
    server_metadata,
)

LIMITS = DecodeLimits()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ALL)
def test_request_round_trip(datatype: str, shape: list[int], binary: bool) -> None:
    tensor = sample(datatype, shape)
    body, headers = encode_infer_request(
        {"x": tensor, "y": sample("FP32", [1, 2])}, request_id="r-1", binary=binary
    )
    header_length = int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else None
    assert (header_length is not None) == binary
    request = decode_infer_request(body, header_length, LIMITS)
    assert list(request.inputs) == ["x", "y"]
    assert_same(request.inputs["x"], tensor)
    assert request.id == "r-1"
    assert request.binary_default is binary


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ALL)
def test_response_round_trip(datatype: str, shape: list[int], binary: bool) -> None:
    tensor = sample(datatype, shape)
    body, header_length = encode_infer_response(
        model_name="iris",
        model_version="3",
        request_id="r-1",
        outputs={"out": tensor},
        parameters={"took_ms": 1},
        binary_outputs={"out"} if binary else set(),
    )
    assert (header_length is not None) == binary
    response = decode_infer_response(body, header_length)
    assert (response.model_name, response.model_version, response.id) == ("iris", "3", "r-1")
    assert response.parameters == {"took_ms": 1}
    assert_same(response.outputs["out"], tensor)


def test_str_arrays_travel_as_utf8_bytes() -> None:
    body, _ = encode_infer_request({"s": np.array([["héllo", "a"]])}, binary=False)
    assert b'"data":["h\xc3\xa9llo","a"]' in body
    request = decode_infer_request(body, None, LIMITS)
    assert request.inputs["s"].tolist() == [["héllo".encode(), b"a"]]


def test_non_utf8_bytes_output_goes_binary_even_when_json_was_asked() -> None:
    tensor = np.array([b"\xff\xfe", b"ok"], dtype=object)
    body, header_length = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"s": tensor, "n": np.arange(3)},
        parameters=None,
        binary_outputs=set(),
    )
    assert header_length is not None
    response = decode_infer_response(body, header_length)
    assert_same(response.outputs["s"], tensor)
    assert response.outputs["n"].tolist() == [0, 1, 2]
    assert response.id is None


def test_nan_is_null_in_json_and_reads_back_as_nan() -> None:
    body, header_length = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"y": np.array([1.0, np.nan], dtype=np.float32)},
        parameters=None,
        binary_outputs=(),
    )
    assert b'"data":[1.0,null]' in body
    out = decode_infer_response(body, header_length).outputs["y"]
    assert out.dtype == np.float32
    assert out[0] == 1.0
    assert np.isnan(out[1])


def test_non_contiguous_and_big_endian_outputs_are_written_correctly() -> None:
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    outputs = {"t": base.T, "be": base.astype(">i4")}
    for binary in (set(), {"t", "be"}):
        body, header_length = encode_infer_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs=outputs,
            parameters=None,
            binary_outputs=binary,
        )
        decoded = decode_infer_response(body, header_length).outputs
        np.testing.assert_array_equal(decoded["t"], base.T)
        np.testing.assert_array_equal(decoded["be"], base.astype(np.int32))


def test_nested_json_data_is_flattened_row_major() -> None:
    body = (
        b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]},'
        b'{"name":"s","shape":[1,2],"datatype":"BYTES","data":[["a","b"]]}]}'
    )
    request = decode_infer_request(body, None, LIMITS)
    assert request.inputs["x"].tolist() == [[1, 2], [3, 4]]
    assert request.inputs["x"].dtype == np.int32
    assert request.inputs["s"].tolist() == [[b"a", b"b"]]


def test_json_numbers_convert_to_float_and_fp16() -> None:
    body = (
        b'{"inputs":[{"name":"a","shape":[2],"datatype":"FP16","data":[1,0.5]},'
        b'{"name":"b","shape":[1],"datatype":"FP64","data":[3]}]}'
    )
    inputs = decode_infer_request(body, None, LIMITS).inputs
    assert inputs["a"].dtype == np.float16
    assert inputs["a"].tolist() == [1.0, 0.5]
    assert inputs["b"].tolist() == [3.0]


def test_request_fields_are_kept() -> None:
    body, headers = encode_infer_request(
        {"x": np.ones(2, dtype=np.float32)},
        outputs=["a", "b"],
        parameters={"priority": 2},
        binary=False,
    )
    assert headers == {"Content-Type": "application/json"}
    request = decode_infer_request(body, None, LIMITS)
    assert request.id is None
    assert request.parameters == {"priority": 2}
    assert request.outputs == [
        RequestedOutput("a", False, {"binary_data": False}),
        RequestedOutput("b", False, {"binary_data": False}),
    ]


@pytest.mark.parametrize(
    ("default", "outputs", "expected"),
    [
        (False, None, set()),
        (True, None, {"a", "b"}),
        (True, [RequestedOutput("a", False)], {"b"}),
        (False, [RequestedOutput("a", True), RequestedOutput("b")], {"a"}),
    ],
)
def test_per_output_binary_data_overrides_the_request_default(
    default: bool, outputs: list[RequestedOutput] | None, expected: set[str]
) -> None:
    request = InferRequest(None, {}, {}, outputs, default)
    assert choose_binary_outputs(request, ["a", "b"]) == expected


def test_metadata_shapes() -> None:
    assert server_metadata("maas", "0.1", ["binary_tensor_data"]) == {
        "name": "maas",
        "version": "0.1",
        "extensions": ["binary_tensor_data"],
    }
    signature = Signature(
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="INT64", shape=[-1])],
    )
    assert model_metadata("iris", ["1", "2"], "sklearn", signature) == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "sklearn",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    }


def test_binary_inputs_are_views_over_the_body() -> None:
    body, headers = encode_infer_request({"x": np.arange(4, dtype=np.float32)})
    request = decode_infer_request(body, int(headers[HEADER_LENGTH]), LIMITS)
    assert not request.inputs["x"].flags.writeable
    assert not request.inputs["x"].flags.owndata
