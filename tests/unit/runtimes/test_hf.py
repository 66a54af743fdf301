"""The transformers runtimes on the real offline models: detection, embeddings, safety."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from tests.llm_models import minilm_dir, smollm2_gguf

from maas.errors import ContextLengthExceeded, UnsupportedArtifact
from maas.registry.archives import is_archive, unpacked
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime


def _texts(*texts: str) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=object)


@pytest.fixture(scope="module")
def embedder() -> object:
    return load_runtime("transformers", minilm_dir(), LoadOptions())


def test_a_sentence_transformers_directory_is_an_embedder() -> None:
    info = inspect_artifact(minilm_dir(), "minilm.tar", trust_pickle=False)
    assert (info.framework, info.task) == ("transformers", "embeddings")
    assert info.details["dimensions"] == 384
    assert (info.details["pooling"], info.details["normalize"]) == ("mean", True)
    assert [s.name for s in info.signature.outputs] == ["embedding", "token_count"]


def test_paraphrases_embed_closer_than_unrelated_sentences(embedder: object) -> None:
    out = embedder.predict(  # type: ignore[attr-defined]
        {"text": _texts("A man is eating food.", "A man eats a meal.", "Stocks fell sharply.")}
    )
    vectors = out["embedding"]
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > 0.8 > 0.2 > unrelated
    assert out["token_count"].tolist() == [8, 8, 6]


def test_an_embedding_is_the_same_alone_and_in_a_padded_batch(embedder: object) -> None:
    alone = embedder.predict({"text": _texts("short")})["embedding"]  # type: ignore[attr-defined]
    batch = embedder.predict(  # type: ignore[attr-defined]
        {"text": _texts("short", "a much longer sentence that forces padding of the first")}
    )["embedding"]
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-5)


def test_an_input_past_the_model_limit_is_refused(embedder: object) -> None:
    with pytest.raises(ContextLengthExceeded):
        embedder.predict({"text": _texts("word " * 400)})  # type: ignore[attr-defined]


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsupportedArtifact, match="pickled weights"):
        inspect_artifact(tmp_path, "model.tar", trust_pickle=False)


def test_an_unknown_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Florp"]}))
    # Valid weights, so that only the architecture is left to refuse.
    save_file({"w": np.zeros(1, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UnsupportedArtifact, match="causal LMs"):
        inspect_artifact(tmp_path, "model.tar", trust_pickle=False)


def test_a_packed_model_directory_is_unpacked_once(tmp_path: Path) -> None:
    archive = tmp_path / ("a" * 64)
    with tarfile.open(archive, "w") as tar:
        tar.add(minilm_dir(), arcname="minilm")
    assert is_archive(archive)
    first = unpacked(archive, tmp_path / "cache")
    assert (first / "config.json").is_file() and first.name == "minilm"
    assert unpacked(archive, tmp_path / "cache") == first


def test_a_zip_without_a_config_is_no_model_directory(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", "{}")
    assert not is_archive(path)


def test_a_gguf_file_on_transformers_is_dequantized_once() -> None:
    """GGUF pushes run on llama.cpp; versions registered for transformers still load."""
    cache = Path(os.environ["MAAS_CACHE_DIR"])
    gguf = smollm2_gguf("transformers")
    runtime = load_runtime("transformers", gguf, LoadOptions(cache_dir=cache))
    assert runtime.details["chat_template"] is True  # type: ignore[attr-defined]
    converted = list((cache / "gguf").iterdir())
    assert [p.name for p in converted if not p.name.startswith(".")]  # the cached weights
    out = runtime.predict({"text": _texts("The capital of France is")})
    assert "Paris" in out["text"][0].decode()


def test_a_gguf_conversion_parses_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers parses a GGUF file at each of its three reads in one load (config,
    tokenizer, weights); the conversion hands it one reader and one tensor name map."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from maas.runtimes.hf.loading import _gguf_read_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    parsed: list[object] = []
    original = gguf.GGUFReader

    class CountingReader(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object) -> None:
            parsed.append(args)
            super().__init__(*args)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    with _gguf_read_once():
        configs = [load_gguf_checkpoint(str(path))["config"] for _ in range(3)]
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert gguf.GGUFReader is CountingReader  # given back as it was
    assert len(parsed) == 1
    assert configs[0] == configs[2] and configs[0]["num_hidden_layers"] == 2


def test_int8_linear_layers_stay_close_to_float32() -> None:
    """A deployment's ``quantize: int8``: every linear layer becomes a dynamic int8 one,
    and along float32's greedy answers int8 mostly picks float32's token (measured on
    SmolLM2-135M: 65-73% of steps; benchmarks/llm_int8.py). Broken weights or scales
    would agree on almost none."""
    import torch

    cache = Path(os.environ["MAAS_CACHE_DIR"])
    gguf = smollm2_gguf("transformers")
    f32 = load_runtime("transformers", gguf, LoadOptions(cache_dir=cache))
    int8 = load_runtime("transformers", gguf, LoadOptions(cache_dir=cache, quantize="int8"))
    model = int8._model  # type: ignore[attr-defined]
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert any("quantized" in type(m).__module__ for m in model.modules())
    agree = steps = 0
    for question in ("What is the capital of Germany?", "Name three colours."):
        prompt = f32.encode_chat([{"role": "user", "content": question}])  # type: ignore[attr-defined]
        ref, got = f32.new_batch(), int8.new_batch()  # type: ignore[attr-defined]
        a, b = ref.join(0, prompt), got.join(0, prompt)
        for _ in range(16):
            token = int(np.argmax(a))
            agree += token == int(np.argmax(b))
            steps += 1
            a, b = ref.step({0: token})[0], got.step({0: token})[0]
    assert agree / steps > 0.5, f"int8 agreed with float32 on {agree} of {steps} steps"


def test_a_sequence_classifier_serves_labels_and_probabilities(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    classifier = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir(), num_labels=3, id2label={0: "ok", 1: "defect", 2: "unclear"}
    )
    classifier.save_pretrained(tmp_path, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(tmp_path)
    info = inspect_artifact(tmp_path, "tickets.tar", trust_pickle=False)
    assert (info.task, info.details["labels"]) == (
        "text-classification",
        ["ok", "defect", "unclear"],
    )
    runtime = load_runtime("transformers", tmp_path, LoadOptions())
    out = runtime.predict({"text": _texts("belt motor overheats", "all fine")})
    assert out["probabilities"].shape == (2, 3)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    best = out["probabilities"].argmax(axis=1)
    assert [label.decode() for label in out["label"]] == [
        ["ok", "defect", "unclear"][i] for i in best
    ]
