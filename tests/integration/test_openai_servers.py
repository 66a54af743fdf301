"""OpenAI API tests on servers of their own (a full queue, pushes by the CLI, a model
without a grammar engine): apart from ``test_openai.py``, whose tests share the
language-model demo server on one xdist worker, so these run beside them on another."""

from __future__ import annotations

import os
import re
from pathlib import Path

import openai
import pytest

from tests.forked import run_maas
from tests.integration.openai_helpers import (
    CAPITAL,
    WEATHER_TOOL,
    close_sdks,  # noqa: F401 (autouse: closes SDKs)
    openai_error,
    openai_sdk,
)
from tests.integration.server import RunningServer, start_server
from tests.integration.serving_helpers import push
from tests.llm_models import minilm_dir, smollm2_gguf


def test_a_full_generation_queue_answers_429(tmp_path: Path) -> None:
    smollm2_gguf()
    server = start_server(
        tmp_path / "home",
        "--demo",
        env={
            "MAAS_DEMO_MODELS": '["smollm2"]',
            "MAAS_GENERATION__MAX_RUNNING": "1",
            "MAAS_GENERATION__MAX_WAITING": "0",
        },
        timeout_s=300,
    )
    try:
        with server.client() as http:  # 2 sequences can never fit in 1 running + 0 waiting
            body = {"model": "smollm2", "messages": CAPITAL, "max_tokens": 1, "n": 2}
            error = openai_error(http.post("/v1/chat/completions", json=body), 400,
                                  "invalid_request")  # fmt: skip
            assert error["param"] == "n"
            body = {"model": "smollm2", "prompt": ["a", "b"], "max_tokens": 1}
            error = openai_error(http.post("/v1/completions", json=body), 400,
                                  "invalid_request")  # fmt: skip
            assert error["param"] == "prompt"
            body = {"model": "smollm2", "prompt": ["a"], "max_tokens": 1}
            assert http.post("/v1/completions", json=body).status_code == 200
        # ignore_eos: the first stream must still hold its slot when the second arrives
        long = {"model": "smollm2", "max_tokens": 300, "stream": True, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Count to five hundred."}]}  # fmt: skip
        with (
            server.client() as http,
            http.stream("POST", "/v1/chat/completions", json=long) as running,
        ):
            # Hold the line iterator: a discarded one is closed at once, and httpx then
            # closes the connection, which cancels the stream and frees the slot.
            lines = running.iter_lines()
            next(lines)  # the one slot is taken
            refused = http.post("/v1/chat/completions", json={**long, "stream": False})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "generation_queue_full"
            assert int(refused.headers["retry-after"]) >= 1
    finally:
        server.stop()


def test_pushing_a_gguf_and_a_model_directory_with_the_cli(fresh_server: RunningServer) -> None:
    env = {"MAAS_URL": fresh_server.url, "MAAS_API_KEY": fresh_server.api_key or ""}

    def cli(*args: str) -> str:
        result = run_maas(args, {**os.environ, **env}, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert re.search(r"chat:1", cli("models", "push", str(smollm2_gguf()), "--name", "chat",
                                    "--alias", "production"))  # fmt: skip
    assert re.search(r"embed:1", cli("models", "push", str(minilm_dir()), "--name", "embed",
                                     "--alias", "production"))  # fmt: skip
    sdk = openai_sdk(fresh_server)
    answer = sdk.chat.completions.create(model="chat", messages=CAPITAL, temperature=0)
    assert "Berlin" in (answer.choices[0].message.content or "")
    vectors = sdk.embeddings.create(model="embed:production", input=["a", "b"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == 384
    with fresh_server.client() as http:
        version = http.get("/api/v1/models/embed/versions/1").json()
    assert version["framework"] == "transformers"
    assert version["metadata"]["task"] == "embeddings"
    assert version["deployment"]["max_batch_size"] > 1  # embedders batch by default


def test_structured_output_needs_a_grammar_engine(
    fresh_server: RunningServer, tmp_path: Path
) -> None:
    """A transformers chat model cannot hold its output to a grammar: 400 naming the
    parameter; logprobs work on it too."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path / "tiny"
    vocab = {"<|endoftext|>": 0, **{chr(97 + i): i + 1 for i in range(26)}, " ": 27}
    from tokenizers import Tokenizer, models

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")),
        eos_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(vocab_size=28, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64, eos_token_id=0)  # fmt: skip
    # Random weights, but the same each run: sampled freely, this model ended an answer
    # at once (its end token) in about one run of ten, and the counts below failed.
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    push(fresh_server, directory, "tiny", alias="production")
    sdk = openai_sdk(fresh_server)
    for extra, param in (
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [WEATHER_TOOL]}, "tools"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model="tiny", messages=CAPITAL, max_tokens=2, **extra)
        assert refused.value.body["param"] == param  # type: ignore[index]
    answer = sdk.completions.create(
        model="tiny", prompt="a b", max_tokens=2, logprobs=1, temperature=0
    )
    assert answer.choices[0].logprobs is not None
    # int8 linear layers: a deployment setting of transformers models; the model is
    # redeployed and answers; a llama.cpp model (quantized already) refuses it.
    with fresh_server.client() as http:
        version = http.get("/api/v1/models/tiny/versions/1").json()
        spec = {**version["deployment"], "quantize": "int8"}
        changed = http.put("/api/v1/models/tiny/versions/1/deployment", json=spec)
        assert changed.status_code == 200, changed.text
        assert changed.json()["deployment"]["quantize"] == "int8"
    again = sdk.completions.create(model="tiny", prompt="a b", max_tokens=2, temperature=0)
    assert again.usage is not None and again.usage.completion_tokens == 2
    push(fresh_server, smollm2_gguf(), "gguf")
    with fresh_server.client() as http:
        spec = {**http.get("/api/v1/models/gguf/versions/1").json()["deployment"]}
        refused = http.put(
            "/api/v1/models/gguf/versions/1/deployment", json={**spec, "quantize": "int8"}
        )
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["code"] == "invalid_deployment" and "llama.cpp" in body["error"]
        assert http.get("/api/v1/models/gguf/versions/1").json()["deployment"]["quantize"] is None
