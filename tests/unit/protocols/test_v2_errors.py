"""Every malformed request is a maas error with a message naming what is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from maas.errors import (
    InvalidInput,
    MaasError,
    PayloadTooLarge,
    RuntimeFailure,
    ShapeMismatch,
    UnsupportedDatatype,
)
from maas.protocols.tensors import DecodeLimits
from maas.protocols.v2 import (
    HEADER_LENGTH,
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    parse_header_length,
)

LIMITS = DecodeLimits()


def _body(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **fields})


def _tensor(datatype: str, shape: list[int], data: Any, name: str = "x") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _refused(
    body: bytes,
    error: type[MaasError],
    match: str,
    header_length: int | None = None,
    limits: DecodeLimits = LIMITS,
) -> None:
    with pytest.raises(error, match=match) as caught:
        decode_infer_request(body, header_length, limits)
    assert type(caught.value) is error


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"inputs": [', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"id": "a"}', "has no 'inputs'"),
        (b'{"inputs": {"x": 1}}', "'inputs' must be a list"),
        (b'{"inputs": [5]}', "each input must be a JSON object, got int"),
        (_body({"datatype": "FP32", "shape": [1], "data": [1]}), "non-empty string 'name'"),
        (_body({"name": 3, "datatype": "FP32", "shape": [1], "data": [1]}), "string 'name'"),
        (_body({"name": "x", "datatype": "FP32", "data": [1]}), "input 'x' has no 'shape'"),
        (_body({"name": "x", "shape": [1], "data": [1]}), "input 'x' has no 'datatype'"),
        (_body({"name": "x", "shape": [1], "datatype": "FP32"}), "input 'x' has neither 'data'"),
        (_body(_tensor("FP32", [1], [1]), _tensor("FP32", [1], [2])), "'x' appears more than"),
        (_body(_tensor("FP32", [-1, 4], [1])), r"input 'x': shape must be .* got \[-1, 4\]"),
        (_body(_tensor("FP32", "4", [1])), "input 'x': shape must be a list"),
        (_body(_tensor("FP32", [1], 1.0)), "input 'x': data must be a list, got float"),
        (_body(_tensor("FP32", [3], ["abc", 1, 2])), "FP32 data must be numbers, got strings"),
        (_body(_tensor("FP32", [2], [True, False])), "FP32 data must be numbers, got booleans"),
        (_body(_tensor("FP32", [2], [1, None])), "FP32 data must be numbers, got nulls"),
        (_body(_tensor("FP32", [2], [{"a": 1}, 2])), "FP32 data must be numbers"),
        (_body(_tensor("FP16", [1], [1e6])), "input 'x': a value is out of the range of FP16"),
        (_body(_tensor("FP32", [1], [1e300])), "out of the range of FP32"),
        (_body(_tensor("UINT8", [2], [1, 300])), r"value 300 is out of the range of UINT8 \[0"),
        (_body(_tensor("UINT32", [1], [-1])), "value -1 is out of the range of UINT32"),
        (_body(_tensor("INT8", [1], [-129])), "value -129 is out of the range of INT8"),
        (_body(_tensor("INT64", [1], [2**63])), "value 9223372036854775808 is out of the range"),
        (_body(_tensor("UINT64", [2], [-1, 2**64 - 1])), "value -1 is out of the range of UINT64"),
        (_body(_tensor("INT64", [2], [1, 1.5])), "INT64 data must be integers, got float 1.5"),
        (_body(_tensor("UINT64", [2], [2**64 - 1, 0.5])), "UINT64 data must be integers, got fl"),
        (_body(_tensor("INT32", [1], ["7"])), "INT32 data must be integers, got strings"),
        (_body(_tensor("BOOL", [2], [1, 0])), "BOOL data must be true or false, got integers"),
        (_body(_tensor("INT32", [2, 2], [[1, 2], [3]])), "input 'x': data is not a regular"),
        (_body(_tensor("BYTES", [2], ["a", 5])), "input 'x': BYTES data must be strings, got int"),
        (_body(_tensor("BYTES", [2], [["a"], ["b", "c"]])), "BYTES data must be strings, got list"),
        (_body(_tensor("FP32", [1], [1]), id=5), "'id' must be a string"),
        (_body(_tensor("FP32", [1], [1]), parameters=[1]), "'parameters' must be an object"),
        (
            _body(_tensor("FP32", [1], [1]), parameters={"binary_data_output": "yes"}),
            "binary_data_output must be true or false",
        ),
        (_body(_tensor("FP32", [1], [1]), outputs={"y": 1}), "'outputs' must be a list"),
        (_body(_tensor("FP32", [1], [1]), outputs=[{"n": "y"}]), "with a string 'name'"),
        (
            _body(_tensor("FP32", [1], [1]), outputs=[{"name": "y"}, {"name": "y"}]),
            "output 'y' is requested more than once",
        ),
        (
            _body(_tensor("FP32", [1], [1]), outputs=[{"name": "y", "parameters": 1}]),
            "output 'y': 'parameters' must be an object",
        ),
        (
            _body(
                _tensor("FP32", [1], [1]), outputs=[{"name": "y", "parameters": {"binary_data": 1}}]
            ),
            "output 'y': binary_data must be true or false",
        ),
    ],
)
def test_malformed_requests_are_invalid_input(body: bytes, match: str) -> None:
    _refused(body, InvalidInput, match)


@pytest.mark.parametrize("datatype", ["FP8", "BF16", "float32", 5])
def test_unknown_datatype_is_unsupported(datatype: object) -> None:
    _refused(
        _body({"name": "x", "datatype": datatype, "shape": [1], "data": [1]}),
        UnsupportedDatatype,
        f"input 'x': datatype {datatype!r} is not a V2 datatype",
    )


@pytest.mark.parametrize(
    ("shape", "data", "count"),
    [([2, 2], [1, 2, 3], 3), ([1], [], 0), ([], [1, 2], 2), ([0, 3], [1], 1)],
)
def test_element_count_must_match_the_shape(shape: list[int], data: list[int], count: int) -> None:
    _refused(
        _body(_tensor("INT32", shape, data, name="pixels")),
        ShapeMismatch,
        rf"input 'pixels': shape \[{', '.join(map(str, shape))}\] needs .* data has {count}$",
    )


def test_bytes_shape_mismatch_names_the_input() -> None:
    _refused(_body(_tensor("BYTES", [3], ["a"], name="text")), ShapeMismatch, "input 'text'")


def _binary(
    size: Any, payload: bytes, datatype: str = "FP32", shape: list[int] | None = None
) -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": shape or [2, 2],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    return header + payload, len(header)


@pytest.mark.parametrize(
    ("size", "payload", "match"),
    [
        (
            12,
            b"\0" * 12,
            r"input 'x': binary_data_size is 12 bytes but FP32 of shape \[2, 2\] takes 16",
        ),
        (16, b"\0" * 12, "input 'x': binary_data_size 16 runs 4 bytes past the body"),
        (16, b"\0" * 20, "4 bytes after the JSON header belong to no tensor"),
        (-1, b"", "binary_data_size must be a non-negative integer"),
        (1.5, b"", "binary_data_size must be a non-negative integer"),
    ],
)
def test_bad_binary_sizes(size: Any, payload: bytes, match: str) -> None:
    body, header_length = _binary(size, payload)
    _refused(body, InvalidInput, match, header_length)


def test_bool_binary_bytes_must_be_zero_or_one() -> None:
    body, header_length = _binary(2, b"\x01\x02", "BOOL", [2])
    _refused(body, InvalidInput, "input 'x': BOOL binary data must be bytes 0 or 1", header_length)


def test_binary_bytes_tensor_must_fill_its_size_exactly() -> None:
    body, header_length = _binary(7, b"\x01\0\0\0a\0\0", "BYTES", [2])
    _refused(body, InvalidInput, "input 'x': binary BYTES data ends after 1 of 2", header_length)


def test_binary_size_without_header_length() -> None:
    body, _ = _binary(16, b"")
    _refused(
        body, InvalidInput, "input 'x' has a binary_data_size but there is no Inference-Header"
    )


def test_data_and_binary_at_once() -> None:
    header = _body(
        {
            "name": "x",
            "datatype": "FP32",
            "shape": [1],
            "data": [1],
            "parameters": {"binary_data_size": 4},
        }
    )
    _refused(header + b"\0" * 4, InvalidInput, "both 'data' and a binary_data_size", len(header))


@pytest.mark.parametrize("header_length", [10_000, -1, "12", 12.0, True])
def test_bad_header_length(header_length: Any) -> None:
    body, _ = encode_infer_request({"x": np.ones(4, dtype=np.float32)})
    _refused(
        body, InvalidInput, "Inference-Header-Content-Length must be an integer", header_length
    )


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "١٢"])
def test_parse_header_length_refuses_non_integers(value: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length must be"):
        parse_header_length(value)


def test_parse_header_length_reads_integers() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length(" 42 ") == 42


def test_thousand_level_nesting_is_refused_cleanly() -> None:
    deep = b'{"inputs": [' + b"[" * 1000 + b"]" * 1000 + b"]}"
    _refused(deep, InvalidInput, "JSON nesting is deeper than the limit of 32 levels")
    _refused(deep, InvalidInput, "deeper than the limit of 1000", limits=DecodeLimits(1000))
    past_orjson = b"[" * 1100 + b"]" * 1100
    _refused(past_orjson, InvalidInput, "not valid JSON", limits=DecodeLimits(5000))


def test_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    limits = DecodeLimits(max_json_depth=5)
    ok = _body(_tensor("INT32", [2, 2], [[1, 2], [3, 4]], name='[[[{{{\\"[[['))  # depth 5
    assert list(decode_infer_request(ok, None, limits).inputs) == ['[[[{{{\\"[[[']
    too_deep = _body(_tensor("INT32", [1, 1, 1], [[[1]]]))  # depth 6
    _refused(too_deep, InvalidInput, "deeper than the limit of 5", limits=limits)
    many_rows = _body(_tensor("INT32", [100, 1], [[i] for i in range(100)]))
    assert decode_infer_request(many_rows, None, limits).inputs["x"].shape == (100, 1)


def test_element_limits_are_payload_too_large() -> None:
    limits = DecodeLimits(max_tensor_elements=10, max_bytes_element=4)
    too_many = _body(_tensor("FP32", [11], [0] * 11))
    _refused(too_many, PayloadTooLarge, r"input 'x': shape \[11\] has more", limits=limits)
    _refused(
        _body(_tensor("FP32", [10**9, 10**9], [])),
        PayloadTooLarge,
        "more than the limit of 16777216 elements",
    )
    long_text = _body(_tensor("BYTES", [1], ["abcde"]))
    message = "input 'x': a BYTES element is 5 bytes, over the limit of 4"
    _refused(long_text, PayloadTooLarge, message, limits=limits)
    body, headers = encode_infer_request({"x": np.array([b"abcde"], dtype=object)})
    message = "input 'x': BYTES element 0 is 5 bytes"
    _refused(body, PayloadTooLarge, message, int(headers[HEADER_LENGTH]), limits)


def test_every_truncation_of_a_binary_body_is_a_maas_error() -> None:
    body, headers = encode_infer_request(
        {"x": np.arange(6, dtype=np.int16), "s": np.array(["ab", "c"]), "b": np.array([True])}
    )
    header_length = int(headers[HEADER_LENGTH])
    for cut in range(len(body)):
        for length in {header_length, min(cut, header_length)}:
            with pytest.raises(MaasError):
                decode_infer_request(body[:cut], length, LIMITS)


def test_unsupported_output_dtype_is_the_servers_fault() -> None:
    with pytest.raises(RuntimeFailure, match="complex128"):
        encode_infer_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs={"y": np.zeros(2, dtype=np.complex128)},
            parameters=None,
            binary_outputs=set(),
        )


def test_client_refuses_a_non_object_response() -> None:
    with pytest.raises(InvalidInput, match="not a JSON object"):
        decode_infer_response(b"[]", None)


def test_input_parameters_must_be_an_object() -> None:
    entry = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": [1]}
    _refused(_body(entry), InvalidInput, "input 'x': 'parameters' must be an object")


def test_client_refuses_strings_in_a_float_output() -> None:
    body = b'{"outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":[null,"a"]}]}'
    with pytest.raises(InvalidInput, match="output 'y': FP32 data must be numbers"):
        decode_infer_response(body, None)
