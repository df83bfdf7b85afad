"""Pipeline: first stage, optional reranker, final cut-off."""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping

from attnsift.types import Query, Ranking, Reranker, Retriever, Run, as_query, check_k


class Pipeline:
    """Retrieve ``first_stage_k`` candidates, rerank them, keep ``final_k``.

    Parameters
    ----------
    retriever : Retriever
        First stage (``BM25Retriever``, a dense retriever, a fusion, ...).
    reranker : Reranker, optional
        Second stage; ``None`` keeps the first-stage order.
    first_stage_k : int
        How many candidates the first stage returns (and the reranker sees).
    final_k : int
        How many candidates the pipeline returns.
    corpus : mapping doc_id -> Document, optional
        Used to attach texts to candidates when the retriever does not (e.g. a provided run).

    Examples
    --------
    >>> pipe = Pipeline(BM25Retriever.from_corpus(docs), ICRReranker("smollm2-135m"), first_stage_k=20)
    >>> pipe("what causes scurvy?").top(3)
    """

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None = None,
        first_stage_k: int = 100,
        final_k: int = 10,
        corpus: Mapping[str, Any] | None = None,
    ) -> None:
        if not hasattr(retriever, "retrieve"):
            raise TypeError(f"retriever must implement retrieve(query, k), got {type(retriever).__name__}")
        if reranker is not None and not hasattr(reranker, "rerank"):
            raise TypeError(f"reranker must implement rerank(ranking, k), got {type(reranker).__name__}")
        self.retriever = retriever
        self.reranker = reranker
        self.first_stage_k = check_k(first_stage_k, "first_stage_k")
        self.final_k = check_k(final_k, "final_k")
        if self.final_k > self.first_stage_k:
            raise ValueError(
                f"final_k ({final_k}) is larger than first_stage_k ({first_stage_k}); "
                "the pipeline cannot return more candidates than the first stage finds"
            )
        self.corpus = corpus
        self._counter = itertools.count()

    def _second_stage(self, ranking: Ranking) -> Ranking:
        if self.reranker is not None:
            if self.corpus is not None and any(c.document is None for c in ranking.candidates):
                ranking = ranking.with_documents(self.corpus)
            ranking = self.reranker.rerank(ranking)
        return ranking.top(self.final_k)

    def __call__(self, query: Query | str) -> Ranking:
        q = as_query(query, default_id=f"q{next(self._counter)}")
        ranking = self.retriever.retrieve(q, k=self.first_stage_k)
        return self._second_stage(ranking)

    def run(self, queries: Iterable[Query] | Mapping[str, Query], progress: bool = False) -> Run:
        """Run every query; returns a Run with ``final_k`` candidates per query."""
        if isinstance(queries, Mapping):
            queries = list(queries.values())
        queries = [as_query(q, default_id=f"q{i}") for i, q in enumerate(queries)]
        first = self.retriever.retrieve_batch(queries, k=self.first_stage_k)
        items = list(first.values())
        if progress and self.reranker is not None:
            from tqdm.auto import tqdm

            items = tqdm(items, desc="rerank", unit="q", leave=False)
        name = first.name if self.reranker is None else f"{first.name}+{getattr(self.reranker, 'name', 'rerank')}"
        return Run((self._second_stage(r) for r in items), name=name)
