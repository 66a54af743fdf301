"""The metric definitions, ``RequestMetrics``, ``exposition`` and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from maas.observability import metrics

DASHBOARD = Path(__file__).parents[3] / "dashboards" / "grafana-maas.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return 0.0


def test_request_metrics_count_per_code_and_reuse_bound_children() -> None:
    recorder = metrics.RequestMetrics("unit-test")
    for code, seconds in [(200, 0.001), (200, 0.002), (400, 0.003)]:
        recorder.observe("m", "1", code, seconds)
    recorder.observe(*metrics.UNRESOLVED, 404, 0.0001)
    text = metrics.exposition()[0].decode()
    labels = {"model": "m", "version": "1", "protocol": "unit-test"}
    assert _sample(text, "maas_requests_total", **labels, code="200") == 2
    assert _sample(text, "maas_requests_total", **labels, code="400") == 1
    assert _sample(text, "maas_request_duration_seconds_count", **labels) == 3
    assert _sample(text, "maas_request_duration_seconds_bucket", **labels, le="0.001") == 1
    unresolved = {"model": "", "version": "", "protocol": "unit-test", "code": "404"}
    assert _sample(text, "maas_requests_total", **unresolved) == 1
    first = recorder._latency[("m", "1")]
    recorder.observe("m", "1", 200, 0.001)
    assert recorder._latency[("m", "1")] is first


def test_exposition_has_process_metrics_and_a_prometheus_content_type() -> None:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    assert b"process_cpu_seconds_total" in body


def test_every_metric_the_dashboard_queries_is_defined() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    queried = {name for expr in exprs for name in re.findall(r"\b(maas_[a-z_]+)", expr)}
    wrappers = [getattr(metrics, name) for name in metrics.__all__]
    defined = {w._name for w in wrappers if isinstance(w, MetricWrapperBase)}
    bases = {_base(name) for name in queried}
    assert bases <= defined, bases - defined
    # Every defined metric has a panel, so a new one is not forgotten.
    assert defined <= bases, defined - bases


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
