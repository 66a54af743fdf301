"""Job log lines as a person following the job should see them."""

from __future__ import annotations

import logging

import pytest

from maas.jobs.logclean import LogCleaner


def _logged_lines(emit: object) -> list[str]:
    """What a job process writes to stderr when ``emit`` logs: the child's format."""
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        emit()  # type: ignore[operator]
    finally:
        root.removeHandler(handler)
    return [line for record in records for line in record.splitlines()]


def test_a_transformers_load_report_of_a_fresh_head_is_dropped() -> None:
    loading = pytest.importorskip("transformers.utils.loading_report", reason="the [llm] extra")

    class BertForSequenceClassification:
        pass

    info = loading.LoadStateDictInfo(
        missing_keys={"classifier.weight", "classifier.bias"},
        unexpected_keys=set(),
        mismatched_keys=set(),
        error_msgs=[],
        conversion_errors={},
        skipped_pp_keys=set(),
    )
    lines = _logged_lines(
        lambda: loading.log_state_dict_report(
            BertForSequenceClassification(),
            "/tmp/minilm",
            False,
            info,
            logger=logging.getLogger("tests.load_report"),  # to the capturing root handler
        )
    )
    assert any("LOAD REPORT" in line and "\x1b[" in line for line in lines), lines
    assert any("MISSING" in line for line in lines)
    cleaner = LogCleaner()
    kept = [cleaner.clean(line) for line in [*lines, "step 1: loss 0.52"]]
    assert [line for line in kept if line is not None] == ["step 1: loss 0.52"], kept


def test_colour_codes_go_and_onnxruntime_preprocessing_advice_is_dropped() -> None:
    quantize = pytest.importorskip("onnxruntime.quantization.quantize", reason="the [onnx] extra")
    advice = next(
        line
        for line in _logged_lines(
            lambda: quantize.logging.warning(
                "Please consider to run pre-processing before quantization. Refer to example: "
            )
        )
    )
    cleaner = LogCleaner()
    assert cleaner.clean(advice) is None
    assert cleaner.clean("\x1b[1m\x1b[31mepoch 2\x1b[0m done") == "epoch 2 done"
    assert cleaner.clean("   ") is None
