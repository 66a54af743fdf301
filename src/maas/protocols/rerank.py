"""The rerank API as pure data, in the Jina/Cohere shape that vLLM, TEI and Xinference
accept: ``{model, query, documents, top_n, return_documents}`` in, ``{id, model,
results: [{index, relevance_score, document: {text}}], usage: {total_tokens}}`` out,
most relevant first. A document is a string or ``{"text": …}`` (Cohere's object form).
Fields other servers take that do not change the ranking are accepted and ignored.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["RerankRequest", "rerank_response"]


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=300)
    query: str = Field(min_length=1)
    documents: list[str | _Document] = Field(min_length=1)
    #: How many results to return, most relevant first; None or 0: all (vLLM's 0).
    top_n: int | None = Field(None, ge=0)
    return_documents: bool = True

    @field_validator("documents")
    @classmethod
    def _non_empty(cls, value: list[str | _Document]) -> list[str | _Document]:
        if any(not (d if isinstance(d, str) else d.text) for d in value):
            raise ValueError("documents must not contain empty texts")
        return value

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def rerank_response(
    model: str,
    results: Sequence[tuple[int, float]],
    documents: Sequence[str] | None,
    total_tokens: int,
) -> dict[str, Any]:
    """The answer; ``documents`` None leaves each result's ``document`` out."""
    items = []
    for index, score in results:
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if documents is not None:
            item["document"] = {"text": documents[index]}
        items.append(item)
    return {
        "id": f"rerank-{secrets.token_hex(12)}",
        "model": model,
        "results": items,
        "usage": {"total_tokens": total_tokens},
    }
