"""``maas serve --ray ADDRESS`` with a language model: a real server process whose
SmolLM2 (GGUF, llama.cpp) runs with its scheduler in a Ray actor on a (simulated)
cluster of a head and a worker node on loopback, called with the official ``openai``
client.

The server runs one sequence at a time (``max_running`` 1, nothing waits), so that
queue-full and a hang-up that frees the replica's slot show directly."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import RunningServer, start_server
from tests.llm_models import smollm2_gguf
from tests.ray_cluster import Cluster, loopback_cluster

pytestmark = pytest.mark.timeout(300)

CAPITAL = [{"role": "user", "content": "What is the capital of Germany?"}]
STATUS = "/api/v1/models/smollm2/versions/1/deployment/status"
DEPLOYMENT = "/api/v1/models/smollm2/versions/1/deployment"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    smollm2_gguf()  # skip with the reason where the package is absent
    with loopback_cluster(workers=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home: Path = tmp_path_factory.mktemp("ray-chat-home")
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "MAAS_DEMO_MODELS": '["smollm2"]',
        "MAAS_GENERATION__MAX_RUNNING": "1",
        "MAAS_GENERATION__MAX_WAITING": "0",
        "MAAS_CLUSTER__HEALTH_INTERVAL_S": "0.5",
    }
    running = start_server(home, "--demo", "--ray", cluster.address, env=env, timeout_s=240)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sdk(server: RunningServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    yield client
    client.close()


def _status(server: RunningServer) -> dict[str, Any]:
    with server.client() as http:
        status: dict[str, Any] = http.get(STATUS).json()
    return status


def _greedy(sdk: openai.OpenAI) -> tuple[str, Any]:
    answer = sdk.chat.completions.create(
        model="smollm2", messages=CAPITAL, temperature=0, max_tokens=24
    )
    return answer.choices[0].message.content or "", answer.usage


def _wait_for(condition: Any, what: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} never happened")


def test_a_chat_streams_from_a_replica_on_the_cluster(
    server: RunningServer, sdk: openai.OpenAI
) -> None:
    status = _status(server)
    assert status["workers"] == "ray" and status["ready"], status
    assert len(status["pids"]) == 1 and server.process.pid not in status["pids"]
    assert len(status["nodes"]) == 1
    chunks = list(
        sdk.chat.completions.create(
            model="smollm2",
            messages=CAPITAL,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole, usage = _greedy(sdk)
    assert "Berlin" in whole and streamed == whole
    assert chunks[-1].usage == usage and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_greedy_answers_equal_the_in_process_ones(
    server: RunningServer, sdk: openai.OpenAI
) -> None:
    on_cluster = _greedy(sdk)
    with server.client() as http:
        pinned = http.put(DEPLOYMENT, json={"workers": "threads"})
        assert pinned.status_code == 200, pinned.text
        assert _status(server)["workers"] == "threads"
        try:
            assert _greedy(sdk) == on_cluster
        finally:
            back = http.put(DEPLOYMENT, json={"workers": "auto"})
            assert back.status_code == 200, back.text
    assert _status(server)["workers"] == "ray"


def test_structured_output_and_refusals_keep_their_codes(
    server: RunningServer, sdk: openai.OpenAI
) -> None:
    answer = sdk.chat.completions.create(
        model="smollm2",
        messages=CAPITAL,
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "word " * 9000}]
        )
    assert too_long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "context" in too_long.value.body["message"]  # type: ignore[index]


def test_tokens_are_metered(server: RunningServer, sdk: openai.OpenAI) -> None:
    with server.client() as http:
        response = http.post("/api/v1/keys", json={"name": "ray-chat", "models": ["smollm2"]})
        assert response.status_code == 201, response.text
        key = response.json()["key"]
    own = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    try:
        answer = own.chat.completions.create(model="smollm2", messages=CAPITAL, max_tokens=6)
    finally:
        own.close()
    assert answer.usage is not None
    expected = (answer.usage.prompt_tokens, answer.usage.completion_tokens)

    def metered() -> bool:
        with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            rows = http.get("/api/v1/usage", params={"group_by": "key"}).json()["rows"]
        return bool(rows) and (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == expected

    _wait_for(metered, f"usage {expected}", timeout_s=20)
    # The replica's scheduler counts in its own process; the gateway's /metrics has
    # what it relayed: every token of this answer (and the earlier tests'), and a time
    # to first token for each answer.
    with server.client() as http:
        families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    tokens = sum(
        s.value
        for s in families["maas_tokens_generated"].samples
        if s.name == "maas_tokens_generated_total" and s.labels["model"] == "smollm2"
    )
    answers = sum(
        s.value
        for s in families["maas_time_to_first_token_seconds"].samples
        if s.name.endswith("_count") and s.labels["model"] == "smollm2"
    )
    assert tokens >= answer.usage.completion_tokens and answers >= 1


COUNT = [{"role": "user", "content": "Count from one to one thousand."}]
#: ignore_eos and most of the context as the budget: only a hang-up (or a lost replica)
#: ends such an answer within any of the waits below.
LONG = {"max_tokens": 6000, "ignore_eos": True}


def test_a_full_replica_refuses_with_429_and_a_hang_up_frees_its_slot(
    server: RunningServer,
) -> None:
    long_stream = {"model": "smollm2", "messages": COUNT, "stream": True, **LONG}
    with server.client() as http:
        with http.stream("POST", "/v1/chat/completions", json=long_stream) as first:
            lines = first.iter_lines()  # held: a dropped iterator closes the response
            for _ in zip(range(3), lines, strict=False):
                pass
            body = {"model": "smollm2", "messages": CAPITAL, "max_tokens": 2}
            refused = http.post("/v1/chat/completions", json=body)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "generation_queue_full"
            assert int(refused.headers["retry-after"]) >= 1

        def served() -> bool:
            return http.post("/v1/chat/completions", json=body).status_code == 200

        _wait_for(served, "a request served after the hang-up", timeout_s=30)


def test_v2_infer_on_the_chat_model_runs_on_the_replica(server: RunningServer) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                        "data": ["The capital of Germany is"]}]}  # fmt: skip
    # V2 sets no max_tokens: up to 512 greedy tokens, about 10 s alone and several
    # times that beside the suite's other workers.
    with server.client(timeout=90) as http:
        response = http.post("/v2/models/smollm2/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "text" and "Berlin" in output["data"][0]


def test_a_replica_lost_mid_answer_ends_it_clearly_and_ray_restarts_it(
    server: RunningServer, sdk: openai.OpenAI
) -> None:
    (pid,) = _status(server)["pids"]
    stream = sdk.chat.completions.create(
        model="smollm2",
        messages=COUNT,  # type: ignore[arg-type]
        max_tokens=6000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    pieces = iter(stream)
    next(pieces)  # the role
    next(pieces)  # the first piece of text: the replica is mid-answer
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as lost:
        for _ in pieces:
            pass
    assert lost.value.body["code"] == "worker_crashed", lost.value.body  # type: ignore[index]
    assert "lost" in lost.value.message

    def restarted() -> bool:
        status = _status(server)
        return bool(status["ready"] and status["pids"] and status["pids"] != [pid])

    _wait_for(restarted, "the replica restarted")
    text, _ = _greedy(sdk)
    assert "Berlin" in text
