"""The SDK's SSE parser, and the promotion gates: quality drop and signature change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from maas.client._core import SseParser
from maas.errors import QualityDropTooLarge, SignatureChanged
from maas.protocols.jobs import JobEvent, JobInfo
from maas.protocols.management import VersionInfo
from maas.protocols.signature import Signature, TensorSpec
from maas.services.publishing import check_quality_drop, check_signature


def test_sse_parser_rebuilds_events_and_the_final_job() -> None:
    now = datetime.now(UTC).isoformat()
    event = {"seq": 3, "at": now, "type": "log", "data": {"line": "hello"}}
    job = {
        "id": "x",
        "kind": "train",
        "model": "m",
        "state": "succeeded",
        "spec": {},
        "created_at": now,
    }
    lines = [
        ": keep-alive",
        "",
        "id: 3",
        "event: log",
        "data: " + orjson.dumps(event).decode(),
        "",
        "event: end",
        "data: " + orjson.dumps(job).decode(),
        "",
    ]
    parser = SseParser()
    parsed = [p for p in map(parser.feed, lines) if p is not None]
    assert [name for name, _ in parsed] == ["log", "end"]
    assert isinstance(parsed[0][1], JobEvent) and parsed[0][1].data == {"line": "hello"}
    assert isinstance(parsed[1][1], JobInfo) and parsed[1][1].finished


def _version(metadata: dict[str, Any]) -> VersionInfo:
    return VersionInfo(
        model="m",
        version=2,
        framework="onnx",
        digest="sha256:" + "0" * 64,
        size_bytes=1,
        filename="m.onnx",
        signature=Signature(inputs=[], outputs=[]),
        metadata=metadata,
        created_at=datetime.now(UTC),
    )


def test_promotion_gate_refuses_only_a_drop_over_the_threshold() -> None:
    check_quality_drop(_version({}), 0.01)  # not optimized: nothing to check
    check_quality_drop(_version({"optimization": {"quality_drop": 0.005}}), 0.01)
    check_quality_drop(_version({"optimization": {"quality_drop": -0.02}}), 0.01)
    with pytest.raises(QualityDropTooLarge) as refused:
        check_quality_drop(
            _version({"optimization": {"quality_drop": 0.2, "method": "prune"}}), 0.01
        )
    assert refused.value.status == 409 and refused.value.details["threshold"] == 0.01


def _text_signature(output: str, dimensions: int) -> Signature:
    return Signature(
        inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
        outputs=[TensorSpec(name=output, datatype="FP32", shape=[-1, dimensions])],
    )


def test_signature_gate_refuses_any_change_of_tensors() -> None:
    current = _version({}).model_copy(update={"signature": _text_signature("embedding", 384)})
    check_signature(current, _text_signature("embedding", 384), "production")
    for changed in (
        _text_signature("embedding", 768),
        _text_signature("probabilities", 384),
        Signature(
            inputs=[TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1])],
            outputs=current.signature.outputs,
        ),
    ):
        with pytest.raises(SignatureChanged) as refused:
            check_signature(current, changed, "production")
        assert refused.value.status == 409 and refused.value.code == "signature_changed"
        assert refused.value.details["current_version"] == 2
        assert refused.value.details["new"] == changed.model_dump()
