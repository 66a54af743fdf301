"""The OpenAI API against the real demo server, with the official ``openai`` SDK
(one server for the module: the tests of servers of their own are in
``test_openai_servers.py``, so that they run beside these on another worker).

The demo registers SmolLM2-135M-Instruct (GGUF) as ``smollm2`` and all-MiniLM-L6-v2
as ``minilm``; every answer here comes from those real models.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import json
import socket
import threading
import time
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.integration.openai_helpers import (
    CAPITAL,
    WEATHER_TOOL,
    close_sdks,  # noqa: F401 (autouse: closes SDKs)
    openai_error,
    openai_sdk,
)
from tests.integration.server import RunningServer
from tests.llm_models import minilm_dir, smollm2_gguf


@pytest.fixture(scope="module")
def llm(demo_server: RunningServer) -> RunningServer:
    smollm2_gguf(), minilm_dir()  # skip with the reason where the packages are absent
    return demo_server


def _key(server: RunningServer, **spec: Any) -> str:
    with server.client() as http:
        response = http.post("/api/v1/keys", json={"name": "openai-test", **spec})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


class _Tokenizer:
    """SmolLM2's tokens counted apart from maas's code: the chat template rendered with
    jinja2 as transformers renders it, tokenized by llama.cpp's vocabulary alone."""

    def __init__(self) -> None:
        import ctypes

        import jinja2
        import llama_cpp

        self._lib, self._ctypes = llama_cpp, ctypes
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(smollm2_gguf()).encode(), params)
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        template = llama_cpp.llama_model_chat_template(model, None).decode()
        self._template = jinja2.Environment().from_string(template)

    def _tokens(self, text: str, special: bool) -> list[int]:
        data = text.encode()
        buffer = (self._ctypes.c_int32 * (len(data) + 8))()
        count = self._lib.llama_tokenize(
            self._vocab, data, len(data), buffer, len(buffer), False, special
        )
        return list(buffer[:count])

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._template.render(messages=messages, add_generation_prompt=True)
        return self._tokens(text, special=True)

    def text(self, text: str) -> list[int]:
        return self._tokens(text, special=False)


@functools.cache
def _tokenizer() -> _Tokenizer:
    return _Tokenizer()


def _metric(server: RunningServer, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=server.auth_headers).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_for_metric(server: RunningServer, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _metric(server, name, **labels) == value:
            return
        time.sleep(0.1)
    pytest.fail(f"{name} {labels} never reached {value}: {_metric(server, name, **labels)}")


def _prompt_tokens(messages: list[dict[str, str]]) -> int:
    return len(_tokenizer().chat(messages))


def test_greedy_chat_answers_paris_with_exact_usage(llm: RunningServer) -> None:
    answer = openai_sdk(llm).chat.completions.create(
        model="smollm2", messages=CAPITAL, temperature=0, max_tokens=32
    )
    choice = answer.choices[0]
    assert "Berlin" in (choice.message.content or "")
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.model == "smollm2"
    tokenizer = _tokenizer()
    prompt_ids = tokenizer.chat(CAPITAL)
    completion_ids = tokenizer.text(choice.message.content or "")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(prompt_ids)
    assert answer.usage.completion_tokens == len(completion_ids)
    assert answer.usage.total_tokens == len(prompt_ids) + len(completion_ids)


def test_streamed_chunks_concatenate_to_the_answer(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    question = [{"role": "user", "content": "Write one sentence about the sea."}]
    whole = sdk.chat.completions.create(
        model="smollm2", messages=question, temperature=0, max_tokens=40
    )
    chunks = list(
        sdk.chat.completions.create(
            model="smollm2",
            messages=question,
            temperature=0,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([t for t in texts if t]) > 3
    assert "".join(texts) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_raw_stream_is_server_sent_events_ending_in_done(llm: RunningServer) -> None:
    body = {"model": "smollm2", "messages": CAPITAL, "max_tokens": 5, "stream": True}
    with llm.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_length_stop_n_and_seed(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    short = sdk.chat.completions.create(model="smollm2", messages=CAPITAL, max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    unstopped = sdk.chat.completions.create(
        model="smollm2", messages=CAPITAL, temperature=0, max_tokens=32
    ).choices[0]
    whole = unstopped.message.content or ""
    assert "Berlin" in whole  # else the stop below could not take effect
    stopped = sdk.chat.completions.create(
        model="smollm2", messages=CAPITAL, temperature=0, stop=["Berlin"], max_tokens=32
    ).choices[0]
    assert stopped.message.content == whole[: whole.index("Berlin")]  # cut right before it
    assert stopped.finish_reason == "stop"
    story = [{"role": "user", "content": "Tell me a story about a dragon."}]

    def sample(seed: int) -> list[str]:
        answer = sdk.chat.completions.create(
            model="smollm2", messages=story, n=2, seed=seed, temperature=1.0, max_tokens=12
        )
        assert [c.index for c in answer.choices] == [0, 1]
        return [c.message.content or "" for c in answer.choices]

    first = sample(7)
    assert first == sample(7)
    assert first[0] != first[1]


def test_legacy_completions(llm: RunningServer) -> None:
    answer = openai_sdk(llm).completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert answer.object == "text_completion"
    assert "Paris" in answer.choices[0].text
    assert answer.usage is not None and answer.usage.completion_tokens <= 4


def test_embeddings_place_paraphrases_closer(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    texts = ["A man is eating food.", "A man eats a meal.", "The stock market fell sharply."]
    as_floats = sdk.embeddings.create(model="minilm", input=texts, encoding_format="float")
    vectors = np.array([item.embedding for item in as_floats.data])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > 0.8 > vectors[0] @ vectors[2]
    from transformers import AutoTokenizer  # imports torch: only where a test needs it

    counted = AutoTokenizer.from_pretrained(minilm_dir())(texts)["input_ids"]
    assert as_floats.usage.prompt_tokens == sum(len(ids) for ids in counted)
    by_default = sdk.embeddings.create(model="minilm", input=texts)  # the SDK asks for base64
    np.testing.assert_allclose(np.array([i.embedding for i in by_default.data]), vectors, atol=1e-6)
    with llm.client() as http:
        raw = http.post(
            "/v1/embeddings", json={"model": "minilm", "input": "hi", "encoding_format": "base64"}
        ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.shape == (384,)
    cut = sdk.embeddings.create(model="minilm", input="hi", dimensions=64, encoding_format="float")
    assert len(cut.data[0].embedding) == 64


def test_models_lists_only_what_the_key_sees(llm: RunningServer) -> None:
    assert {"smollm2", "minilm", "iris"} <= {m.id for m in openai_sdk(llm).models.list()}
    key = _key(llm, role="consumer", models=["minilm"])
    assert [m.id for m in openai_sdk(llm, key).models.list()] == ["minilm"]
    with pytest.raises(openai.NotFoundError):
        openai_sdk(llm, key).chat.completions.create(model="smollm2", messages=CAPITAL)


def test_errors_have_openai_shape_and_status(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such-model", messages=CAPITAL)
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "word " * 9000}]
        )
    assert too_long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad_param:
        sdk.chat.completions.create(model="smollm2", messages=CAPITAL, temperature=5)
    assert bad_param.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unsupported:
        sdk.chat.completions.create(model="smollm2", messages=CAPITAL, presence_penalty=1.0)
    assert "presence_penalty" in unsupported.value.body["message"]  # type: ignore[index]
    sdk.chat.completions.create(model="smollm2", messages=CAPITAL, max_tokens=1, presence_penalty=0)
    with pytest.raises(openai.BadRequestError) as wrong_task:
        sdk.embeddings.create(model="smollm2", input="hi")
    assert wrong_task.value.body["code"] == "unsupported_task"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai_sdk(llm, "maas_wrong_key").models.list()
    with llm.client() as http:
        for body in (b"", b"{not json", b"[1]", b'{"model": "smollm2"}'):
            response = http.post("/v1/chat/completions", content=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert set(error) >= {"message", "type", "param", "code"}


def test_token_limits_refuse_with_429(llm: RunningServer) -> None:
    key = _key(llm, models=["smollm2", "minilm"], limits={"tokens_per_minute": 20})
    sdk = openai_sdk(llm, key)
    sdk.chat.completions.create(model="smollm2", messages=CAPITAL, max_tokens=4)  # 37+4 tokens
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="smollm2", messages=CAPITAL, max_tokens=4)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    error = openai_error(refused.value.response, 429, "rate_limited")
    assert error["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError) as embedding:  # the same budget
        sdk.embeddings.create(model="minilm", input="hi")
    assert int(embedding.value.response.headers["retry-after"]) >= 1


def test_tokens_are_metered_per_key(llm: RunningServer) -> None:
    key = _key(llm, models=["smollm2"])
    answer = openai_sdk(llm, key).chat.completions.create(
        model="smollm2", messages=CAPITAL, max_tokens=6
    )
    assert answer.usage is not None
    expected = (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # usage records are written in batches
        with llm.client(headers={"Authorization": f"Bearer {key}"}) as http:
            rows = http.get("/api/v1/usage", params={"group_by": "key"}).json()["rows"]
        if rows and (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == expected:
            assert len(rows) == 1  # a key sees its own usage only
            return
        time.sleep(0.3)
    pytest.fail(f"usage never showed {expected}: {rows}")


def test_concurrent_streams_share_forward_passes(llm: RunningServer) -> None:
    before = _metric(llm, "maas_batch_size_count", model="smollm2")
    shared_before = before - _metric(llm, "maas_batch_size_bucket", model="smollm2", le="1.0")
    sdk = openai_sdk(llm)

    def one(question: str) -> str:
        answer = sdk.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=24,
        )
        return answer.choices[0].message.content or ""

    questions = ["Name a fruit.", "Name a colour.", "Name an animal.", "Name a planet."]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, questions))
    assert all(answers)
    after = _metric(llm, "maas_batch_size_count", model="smollm2")
    shared_after = after - _metric(llm, "maas_batch_size_bucket", model="smollm2", le="1.0")
    assert shared_after > shared_before  # some decode steps ran several sequences at once
    assert _metric(llm, "maas_time_to_first_token_seconds_count", model="smollm2") >= 4
    assert _metric(llm, "maas_tokens_generated_total", model="smollm2") > 0


def test_a_client_that_hangs_up_frees_its_sequence(llm: RunningServer) -> None:
    count = [{"role": "user", "content": "Count from one to one thousand."}]
    # ignore_eos: only the hang-up can end it within the wait (2000 tokens take minutes)
    body = {"model": "smollm2", "messages": count, "max_tokens": 2000, "stream": True,
            "ignore_eos": True}  # fmt: skip
    with llm.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        for _ in zip(range(3), response.iter_lines(), strict=False):
            pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _metric(llm, "maas_sequences_running", model="smollm2") == 0:
            return
        time.sleep(0.1)
    pytest.fail("the abandoned sequence kept running")


def _v2_text(llm: RunningServer, prompt: str, **parameters: Any) -> httpx.Response:
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [prompt]}],
        "parameters": parameters,
    }
    # Without max_tokens an answer is up to 512 greedy tokens (test_ray_chat's is):
    # about 10 s alone and several times that beside the suite's other workers.
    with llm.client(timeout=90) as http:
        return http.post("/v2/models/smollm2/infer", json=body)


def test_v2_infer_on_the_chat_model(llm: RunningServer) -> None:
    response = _v2_text(llm, "The capital of France is", max_tokens=24)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "text" and "Paris" in output["data"][0]


def test_v2_max_tokens_bounds_a_language_models_answer(llm: RunningServer) -> None:
    """``parameters.max_tokens`` caps each text's completion (greedy, so the shorter
    answer is the start of the longer one); a value that is not a positive integer is
    400 ``invalid_input``, never the server's default."""
    answers = []
    for max_tokens in (1, 12):
        response = _v2_text(llm, "The capital of France is", max_tokens=max_tokens)
        assert response.status_code == 200, response.text
        answers.append(response.json()["outputs"][0]["data"][0])
    one, twelve = answers
    assert one and twelve.startswith(one) and len(one) < len(twelve) and "Paris" in twelve
    for bad in (0, -3, 2.5, "8", True):
        response = _v2_text(llm, "Hi", max_tokens=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "invalid_input"
        assert "max_tokens" in response.json()["error"]


def test_max_completion_tokens_wins_over_max_tokens(llm: RunningServer) -> None:
    answer = openai_sdk(llm).chat.completions.create(
        model="smollm2", messages=CAPITAL, temperature=0, max_tokens=20, max_completion_tokens=3
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert answer.choices[0].finish_reason == "length"


def test_system_and_assistant_turns_reach_the_chat_template(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    talk: list[dict[str, str]] = [
        {"role": "system", "content": "You are a pirate. Answer like one."},
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": "Arr, ahoy matey!"},
        *CAPITAL,
    ]

    def prompt_tokens(messages: list[dict[str, str]]) -> int:
        answer = sdk.chat.completions.create(
            model="smollm2",
            messages=messages,
            temperature=0,
            max_tokens=1,  # type: ignore[arg-type]
        )
        assert answer.usage is not None
        return answer.usage.prompt_tokens

    assert prompt_tokens(talk) == _prompt_tokens(talk) != _prompt_tokens(CAPITAL)
    as_developer = [{**talk[0], "role": "developer"}, *talk[1:]]  # OpenAI's newer name
    assert prompt_tokens(as_developer) == _prompt_tokens(talk)


def test_top_p_narrows_sampling_to_the_likeliest_token(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    story = [{"role": "user", "content": "Tell me a story about a dragon."}]

    def answers(**sampling: Any) -> list[str]:
        answer = sdk.chat.completions.create(
            model="smollm2",
            messages=story,
            max_tokens=12,
            **sampling,  # type: ignore[arg-type]
        )
        return [choice.message.content or "" for choice in answer.choices]

    (greedy,) = answers(temperature=0)
    assert answers(temperature=1.5, top_p=0.001, n=2, seed=5) == [greedy, greedy]
    assert answers(temperature=1.5, top_p=1.0, n=2, seed=5) != [greedy, greedy]


def test_seed_takes_openai_signed_64_bit_range(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)

    def sample(seed: int) -> str:
        answer = sdk.chat.completions.create(
            model="smollm2", messages=CAPITAL, temperature=1.0, max_tokens=6, seed=seed
        )
        return answer.choices[0].message.content or ""

    assert sample(-1) == sample(-1)
    assert sample(-(2**63)) == sample(-(2**63))
    with llm.client() as http:
        for seed in (2**63, 2**64, -(10**30)):
            body = {"model": "smollm2", "messages": CAPITAL, "max_tokens": 1, "seed": seed}
            error = openai_error(
                http.post("/v1/chat/completions", json=body), 400, "invalid_request"
            )
            assert error["param"] == "seed"
            completion = {"model": "smollm2", "prompt": "Hi", "max_tokens": 1, "seed": seed}
            error = openai_error(http.post("/v1/completions", json=completion), 400,
                                  "invalid_request")  # fmt: skip
            assert error["param"] == "seed"


def test_an_unresolvable_model_reference_is_model_not_found(llm: RunningServer) -> None:
    huge = "99999999999999999999"
    with llm.client() as http:
        for model in (f"minilm:{huge}", "minilm:77", "minilm:no-such-alias"):
            response = http.post("/v1/embeddings", json={"model": model, "input": "hi"})
            openai_error(response, 404, "model_not_found")
        for model in (f"smollm2:{huge}", "smollm2:77"):
            body = {"model": model, "messages": CAPITAL, "max_tokens": 1}
            openai_error(http.post("/v1/chat/completions", json=body), 404, "model_not_found")
            body = {"model": model, "prompt": "Hi", "max_tokens": 1}
            openai_error(http.post("/v1/completions", json=body), 404, "model_not_found")
        for model in ("iris:77", f"iris:{huge}", "iris:no-such-alias", "no-such-model"):
            openai_error(http.get(f"/v1/models/{model}"), 404, "model_not_found")
    card = openai_sdk(llm).models.retrieve("iris:1")
    assert (card.id, card.object) == ("iris:1", "model")
    assert openai_sdk(llm).models.retrieve("iris").id == "iris"


def test_streamed_completions_match_the_answer_with_usage(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    whole = sdk.completions.create(
        model="smollm2", prompt="The sea is", max_tokens=12, temperature=0
    )
    chunks = list(
        sdk.completions.create(
            model="smollm2", prompt="The sea is", max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert {chunk.object for chunk in chunks} == {"text_completion"}
    pieces = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert len([p for p in pieces if p.text]) > 3
    assert "".join(p.text for p in pieces) == whole.choices[0].text
    assert [p.finish_reason for p in pieces][-1] == whole.choices[0].finish_reason
    assert {p.finish_reason for p in pieces[:-1]} == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_n_choices_stream_each_index_with_usage(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    story = [{"role": "user", "content": "Tell me a story about a dragon."}]
    sampling: dict[str, Any] = {"n": 3, "seed": 11, "temperature": 1.0, "max_tokens": 10}
    whole = sdk.chat.completions.create(model="smollm2", messages=story, **sampling)  # type: ignore[arg-type]
    chunks = list(
        sdk.chat.completions.create(
            model="smollm2", messages=story, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, **sampling,
        )
    )  # fmt: skip
    texts: dict[int, str] = {}
    finishes: dict[int, list[str | None]] = {}
    roles: dict[int, str | None] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        roles.setdefault(choice.index, choice.delta.role)  # the first chunk names the role
        texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert roles == {0: "assistant", 1: "assistant", 2: "assistant"}
    # Seeded choices are repeatable: each index streams exactly its non-streamed text.
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert len(set(texts.values())) > 1
    for choice in whole.choices:  # one finish per choice, on its last chunk
        assert finishes[choice.index][-1] == choice.finish_reason
        assert set(finishes[choice.index][:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_a_non_streaming_client_that_hangs_up_frees_its_sequence(llm: RunningServer) -> None:
    _wait_for_metric(llm, "maas_sequences_running", 0, model="smollm2")
    generated = _metric(llm, "maas_tokens_generated_total", model="smollm2")
    count = [{"role": "user", "content": "Count from one to one thousand."}]
    # ignore_eos: only the hang-up can end it before max_tokens
    body = json.dumps({"model": "smollm2", "messages": count, "max_tokens": 900,
                       "ignore_eos": True}).encode()  # fmt: skip
    host, port = llm.hostport.rsplit(":", 1)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {llm.hostport}\r\n"
        f"Authorization: Bearer {llm.api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(head.encode() + body)
        _wait_for_metric(llm, "maas_sequences_running", 1, model="smollm2")
    _wait_for_metric(llm, "maas_sequences_running", 0, model="smollm2")
    # It ended because the caller left, not because it ran out of tokens.
    assert _metric(llm, "maas_tokens_generated_total", model="smollm2") - generated < 900


def test_sequences_past_the_running_batch_wait_and_leave_with_their_caller(
    llm: RunningServer,
) -> None:
    _wait_for_metric(llm, "maas_sequences_running", 0, model="smollm2")
    itl_before = _metric(llm, "maas_inter_token_latency_seconds_count", model="smollm2")
    count = [{"role": "user", "content": "Count from one to one thousand."}]
    # 16 choices fill the demo's running batch (max_running 16); 2 more must wait. (16
    # budgets of prompt + 400 tokens fit the default KV cache of 8192: all 16 run.)
    body = {"model": "smollm2", "messages": count, "max_tokens": 400, "ignore_eos": True,
            "stream": True, "temperature": 0}  # fmt: skip
    with (
        llm.client() as http,
        http.stream("POST", "/v1/chat/completions", json={**body, "n": 16}) as full,
    ):
        lines = full.iter_lines()  # held: a dropped iterator closes the connection
        next(lines)
        with http.stream("POST", "/v1/chat/completions", json={**body, "n": 2}) as queued:
            queued_lines = queued.iter_lines()
            next(queued_lines)
            # (the running gauge is set after each step, the waiting one at each admission)
            _wait_for_metric(llm, "maas_sequences_running", 16, model="smollm2")
            _wait_for_metric(llm, "maas_sequences_waiting", 2, model="smollm2")
    _wait_for_metric(llm, "maas_sequences_waiting", 0, model="smollm2")
    _wait_for_metric(llm, "maas_sequences_running", 0, model="smollm2")
    assert _metric(llm, "maas_inter_token_latency_seconds_count", model="smollm2") > itl_before


def test_concurrent_embedding_requests_share_a_batch(llm: RunningServer) -> None:
    def shared() -> float:  # batches of more than one row
        total = _metric(llm, "maas_batch_size_count", model="minilm")
        return total - _metric(llm, "maas_batch_size_bucket", model="minilm", le="1.0")

    before = shared()
    clients = [llm.client() for _ in range(12)]
    for http in clients:  # connected before the race starts
        http.get("/health/live")
    start = threading.Barrier(len(clients))

    def one(index: int) -> None:
        start.wait()
        body = {"model": "minilm", "input": f"sentence number {index}"}  # one row each
        response = clients[index].post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text

    try:
        for _ in range(5):  # each round is one race of 12 one-row requests
            with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
                list(pool.map(one, range(len(clients))))
            if shared() > before:
                return
    finally:
        for http in clients:
            http.close()
    pytest.fail("no batch ever held more than one request's row")


def test_embedding_tokens_are_metered_per_key(llm: RunningServer) -> None:
    key = _key(llm, models=["minilm"])
    texts = ["A man is eating food.", "The stock market fell sharply on Monday."]
    answer = openai_sdk(llm, key).embeddings.create(model="minilm", input=texts)
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(minilm_dir())(texts)["input_ids"]
    counted = sum(len(ids) for ids in encoded)
    assert answer.usage.prompt_tokens == counted
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # usage records are written in batches
        with llm.client(headers={"Authorization": f"Bearer {key}"}) as http:
            rows = http.get("/api/v1/usage", params={"group_by": "key"}).json()["rows"]
        if rows and rows[0]["prompt_tokens"] == counted:
            assert rows[0]["completion_tokens"] == 0
            return
        time.sleep(0.3)
    pytest.fail(f"usage never showed {counted} prompt tokens: {rows}")


def test_a_consumer_key_meets_hidden_models_and_management_as_openai_expects(
    llm: RunningServer,
) -> None:
    key = _key(llm, role="consumer", models=["minilm*"])
    bearer = {"Authorization": f"Bearer {key}"}

    def refusal(path: str, model: str, **body: Any) -> tuple[int, dict[str, Any]]:
        with llm.client(headers=bearer) as http:
            response = http.post(path, json={"model": model, **body})
        error = openai_error(response, 404, "model_not_found")
        error["message"] = error["message"].replace(model.partition(":")[0], "MODEL")
        return response.status_code, response.json() | {"request_id": None, "error": error}

    for path, body in (
        ("/v1/chat/completions", {"messages": CAPITAL, "max_tokens": 1}),
        ("/v1/embeddings", {"input": "hi"}),
    ):
        # smollm2 exists but is outside the key's patterns; minilm-ghost matches and is missing
        assert refusal(path, "smollm2", **body) == refusal(path, "minilm-ghost", **body)
        assert refusal(path, "smollm2:1", **body) == refusal(path, "minilm-ghost:1", **body)
    with llm.client(headers=bearer) as http:
        forbidden = http.post("/api/v1/keys", json={"name": "escalate", "role": "admin"})
        assert forbidden.status_code == 403, forbidden.text
        assert forbidden.json()["code"] == "forbidden"
        assert isinstance(forbidden.json()["error"], str)  # maas's shape off /v1
        openai_forbidden = http.get("/v1/models/smollm2")  # hidden: as missing, not 403
        openai_error(openai_forbidden, 404, "model_not_found")


# -- structured output, tools, logprobs, stops (llama.cpp) -----------------------------

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population": {"type": "integer", "minimum": 0},
        "coastal": {"type": "boolean"},
    },
    "required": ["city", "country", "population", "coastal"],
    "additionalProperties": False,
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris?"}]


def test_json_schema_answers_always_parse_and_validate(llm: RunningServer) -> None:
    import jsonschema

    sdk = openai_sdk(llm)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
    }
    cities = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo"]
    for index, city in enumerate(cities):
        answer = sdk.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": f"Describe {city} as JSON."}],
            response_format=response_format,  # type: ignore[arg-type]
            temperature=0.8,
            seed=index,
            n=2,
            max_tokens=120,
        )
        for choice in answer.choices:
            assert choice.finish_reason == "stop", choice
            jsonschema.validate(json.loads(choice.message.content or ""), CITY_SCHEMA)
    streamed = sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Describe Rome."}],
        response_format=response_format, max_tokens=120, stream=True,  # type: ignore[arg-type]
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    jsonschema.validate(json.loads(text), CITY_SCHEMA)
    any_object = sdk.chat.completions.create(
        model="smollm2", messages=CAPITAL, response_format={"type": "json_object"},
        max_tokens=120, temperature=0,
    )  # fmt: skip
    assert isinstance(json.loads(any_object.choices[0].message.content or ""), dict)


def test_a_tool_call_round_trip(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    asked = sdk.chat.completions.create(
        model="smollm2", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required", temperature=0, max_tokens=60,
    )  # fmt: skip
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert isinstance(arguments["city"], str)
    conversation: list[Any] = [
        *WEATHER_QUESTION,
        choice.message.model_dump(exclude_none=True),
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": '{"temperature_c": 21, "sky": "sunny"}',
        },
    ]
    answered = sdk.chat.completions.create(
        model="smollm2", messages=conversation, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none", temperature=0, max_tokens=60,
    )  # fmt: skip
    reply = answered.choices[0]
    assert reply.finish_reason in ("stop", "length") and not reply.message.tool_calls
    assert reply.message.content
    # The usage counts the conversation with the tool's answer in it.
    assert answered.usage is not None and asked.usage is not None
    assert answered.usage.prompt_tokens > 0
    # Streamed: the call arrives as tool_calls deltas, and the reason is tool_calls.
    chunks = list(
        sdk.chat.completions.create(
            model="smollm2", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            temperature=0, max_tokens=60, stream=True,
        )
    )  # fmt: skip
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function is not None
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    streamed_args = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(streamed_args) == arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_choice_auto_may_answer_in_text(llm: RunningServer) -> None:
    answer = openai_sdk(llm).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}],
        tools=[WEATHER_TOOL], temperature=0, max_tokens=30,  # type: ignore[list-item]
    )  # fmt: skip
    choice = answer.choices[0]
    if choice.message.tool_calls:  # the model chose to call: then it is a whole call
        assert choice.finish_reason == "tool_calls"
        json.loads(choice.message.tool_calls[0].function.arguments)  # type: ignore[union-attr]
    else:
        assert choice.message.content and not choice.message.content.startswith("{")


def test_logprobs_have_openai_shape(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    answer = sdk.chat.completions.create(
        model="smollm2", messages=CAPITAL, temperature=0, max_tokens=12,
        logprobs=True, top_logprobs=3,
    )  # fmt: skip
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert answer.usage is not None and len(entries) == answer.usage.completion_tokens
    assert "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        assert entry.logprob <= 0 and bytes(entry.bytes or []) == entry.token.encode()
        values = [top.logprob for top in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the likeliest
        assert entry.logprob == pytest.approx(values[0])
    chunks = list(
        sdk.chat.completions.create(
            model="smollm2", messages=CAPITAL, temperature=0, max_tokens=12,
            logprobs=True, stream=True,
        )
    )  # fmt: skip
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content or []]  # fmt: skip
    assert [e.token for e in streamed] == [e.token for e in entries]
    legacy = sdk.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0,
        logprobs=2,
    )  # fmt: skip
    logprobs = legacy.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.top_logprobs
    assert "".join(logprobs.tokens) == legacy.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs)


def test_a_stop_sequence_split_across_tokens_never_leaks(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    story = [{"role": "user", "content": "Write two sentences about the sea."}]
    whole = sdk.chat.completions.create(
        model="smollm2", messages=story, temperature=0, max_tokens=40, logprobs=True
    ).choices[0]
    tokens = [e.token for e in (whole.logprobs.content or [])]  # type: ignore[union-attr]
    # A stop string made of the end of one token and the start of the next.
    index = next(
        i for i in range(3, len(tokens) - 1)
        if len(tokens[i].strip()) >= 3 and len(tokens[i + 1].strip()) >= 2
    )  # fmt: skip
    stop = tokens[i := index][-2:] + tokens[i + 1][:2]
    text = whole.message.content or ""
    expected = text[: text.index(stop)]
    answer = sdk.chat.completions.create(
        model="smollm2", messages=story, temperature=0, max_tokens=40, stop=[stop]
    ).choices[0]
    assert (answer.message.content, answer.finish_reason) == (expected, "stop")
    pieces = [
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(
            model="smollm2", messages=story, temperature=0, max_tokens=40, stop=[stop],
            stream=True,
        )
        if c.choices
    ]  # fmt: skip
    assert "".join(pieces) == expected and stop[:2] not in "".join(pieces)[len(expected) - 1 :]


def test_concurrent_greedy_streams_match_the_same_requests_alone(llm: RunningServer) -> None:
    sdk = openai_sdk(llm)
    questions = [f"Name {n} things that are {c}." for n, c in
                 [("two", "red"), ("three", "blue"), ("four", "green"), ("two", "cold"),
                  ("three", "loud"), ("four", "soft")]]  # fmt: skip

    def ask(question: str) -> str:
        chunks = sdk.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": question}],
            temperature=0, max_tokens=30, stream=True,
        )  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    alone = [ask(q) for q in questions]
    with concurrent.futures.ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(ask, questions))
    assert together == alone
