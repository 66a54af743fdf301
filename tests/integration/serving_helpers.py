"""Shared pieces of the serving tests: pushing, deployment status, waiting, scraping."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from maas.client import Client
from maas.protocols.management import DeploymentSpec
from tests.integration.server import RunningServer

__all__ = ["ROW", "deploy", "metric", "push", "scrape", "status", "wait_until"]

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


def push(server: RunningServer, path: Path, name: str, alias: str | None = None) -> int:
    with Client(server.url, api_key=server.api_key) as client:
        return client.push(path, name, alias=alias).version


def deploy(server: RunningServer, name: str, version: int, **spec: object) -> None:
    """Store a ``DeploymentSpec`` (the server redeploys a loaded version with it)."""
    with Client(server.url, api_key=server.api_key) as client:
        client.set_deployment(name, version, DeploymentSpec.model_validate(spec))


def status(http: httpx.Client, name: str, version: object) -> dict[str, object]:
    response = http.get(f"/api/v1/models/{name}/versions/{version}/deployment/status")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def wait_until(condition: Callable[[], object], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def scrape(http: httpx.Client) -> dict[str, list[Sample]]:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def metric(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels`` (0 when absent)."""
    samples = [sample for family in families.values() for sample in family]
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0
