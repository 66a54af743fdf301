"""``RerankService``: documents ordered by relevance to a query, over an embedder.

The query and the documents are embedded in one call through the embedder's
deployment (its dynamic batcher, its limits on input length), and ranked by the cosine
similarity of each document to the query: the bi-encoder reranking that vLLM, TEI and
Xinference offer for embedding models. A cross-encoder would score each pair jointly
and rank better; no such runtime is registered yet, and it would slot in here, chosen
by the model's signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maas.errors import InvalidRequest
from maas.protocols.management import VersionInfo
from maas.services.completions import TextService

__all__ = ["Ranked", "RerankService"]


@dataclass(frozen=True, slots=True)
class Ranked:
    version: VersionInfo
    #: (document index, relevance score), most relevant first.
    results: list[tuple[int, float]]
    #: Tokens of the query and every document: what a rerank is metered in.
    tokens: int


class RerankService:
    def __init__(self, text: TextService, *, max_documents: int = 1000) -> None:
        self._text = text
        self.max_documents = max_documents

    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        timeout_s: float | None = None,
    ) -> Ranked:
        if len(documents) > self.max_documents:
            raise InvalidRequest(
                f"documents: {len(documents)} given, this server ranks at most "
                f"{self.max_documents} per request",
                details={"param": "documents"},
            )
        embedded = await self._text.embed(model, [query, *documents], timeout_s=timeout_s)
        scores = _cosine(embedded.vectors[0], embedded.vectors[1:])
        order = np.argsort(-scores, kind="stable")[: top_n or len(documents)]
        results = [(int(i), float(scores[i])) for i in order]
        return Ranked(embedded.version, results, embedded.prompt_tokens)


def _cosine(query: np.ndarray, documents: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(documents, axis=1) * np.linalg.norm(query)
    scores: np.ndarray = documents @ query / np.where(norms == 0, 1, norms)
    return scores
