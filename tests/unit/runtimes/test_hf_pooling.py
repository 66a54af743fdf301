"""Sentence-transformers pooling modes on the real all-MiniLM-L6-v2 weights.

Each case copies the model directory (the weights linked, not copied) with another
``1_Pooling/config.json`` or ``modules.json``, and checks the served vectors against
the encoder's own hidden states pooled here by the formula the mode names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.llm_models import minilm_dir

from maas.errors import UnsupportedArtifact
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime

TEXTS = ("A man is eating food.", "Stocks fell sharply on Monday after the report.")


def _variant(tmp_path: Path, pooling: dict[str, Any], modules: list[str]) -> Path:
    """A copy of MiniLM whose pooling config and module list are ``pooling``, ``modules``."""
    source, target = minilm_dir(), tmp_path / "model"
    target.mkdir()
    for item in source.iterdir():
        if item.is_file() and item.name != "modules.json":
            (target / item.name).symlink_to(item)
    (target / "1_Pooling").mkdir()
    config = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": False, **pooling}
    (target / "1_Pooling" / "config.json").write_text(json.dumps(config))
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    entries = [
        {"idx": i, "name": str(i), "path": paths.get(kind, f"{i}_{kind}"),
         "type": f"sentence_transformers.models.{kind}"}
        for i, kind in enumerate(modules)
    ]  # fmt: skip
    (target / "modules.json").write_text(json.dumps(entries))
    return target


def _hidden_states(text: str) -> np.ndarray:
    """The encoder's last hidden states for ``text`` alone (no padding): (tokens, 384)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    with torch.inference_mode():
        hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
    return hidden.numpy().astype(np.float64)


def test_weightedmean_and_lasttoken_pool_as_named_and_concatenate(tmp_path: Path) -> None:
    model = _variant(
        tmp_path,
        {"pooling_mode_weightedmean_tokens": True, "pooling_mode_lasttoken": True},
        ["Transformer", "Pooling"],  # no Normalize: the raw pooled values are compared
    )
    info = inspect_artifact(model, "model.tar", trust_pickle=False)
    assert info.details["pooling"] == "weightedmean+lasttoken"
    assert info.details["dimensions"] == 768 and info.details["normalize"] is False
    runtime = load_runtime("transformers", model, LoadOptions())
    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    batch = runtime.predict({"text": texts})["embedding"]  # the first text is padded
    assert batch.shape == (2, 768)
    for row, text in zip(batch, TEXTS, strict=True):
        hidden = _hidden_states(text)
        weights = np.arange(1, len(hidden) + 1, dtype=np.float64)[:, None]
        weighted = (hidden * weights).sum(axis=0) / weights.sum()
        np.testing.assert_allclose(row[:384], weighted, atol=1e-4)
        np.testing.assert_allclose(row[384:], hidden[-1], atol=1e-4)
        assert not np.allclose(row[:384], hidden.mean(axis=0), atol=1e-3)  # not plain mean


def test_a_module_maas_does_not_implement_refuses_the_model(tmp_path: Path) -> None:
    model = _variant(
        tmp_path, {"pooling_mode_mean_tokens": True}, ["Transformer", "Pooling", "Dense"]
    )
    with pytest.raises(UnsupportedArtifact, match="Dense"):
        inspect_artifact(model, "model.tar", trust_pickle=False)


@pytest.mark.parametrize(
    ("pooling", "match"),
    [({"pooling_mode_fancy_tokens": True}, "pooling_mode_fancy_tokens"), ({}, "no pooling")],
)
def test_an_unknown_or_missing_pooling_mode_refuses_the_model(
    tmp_path: Path, pooling: dict[str, Any], match: str
) -> None:
    model = _variant(tmp_path, pooling, ["Transformer", "Pooling", "Normalize"])
    with pytest.raises(UnsupportedArtifact, match=match):
        inspect_artifact(model, "model.tar", trust_pickle=False)
