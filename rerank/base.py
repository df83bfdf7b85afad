"""Shared machinery for rerankers: top-k handling, batching, input checks."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from attnsift.types import Candidate, Ranking, Run, check_k, missing_query_text


@dataclass(frozen=True)
class Reranked:
    """What one reranking produced: the ranking and the seconds its scoring cost.

    ``seconds`` is the compute the scores took, also when they were served from a shared
    computation (two ICR calibrations share one forward pass; each reports that pass's cost).
    """

    ranking: Ranking
    seconds: float


class BaseReranker:
    """Implements :class:`attnsift.Reranker` on top of :meth:`score`.

    Subclasses implement ``score(ranking) -> list[float]``: one score per candidate of ``ranking``
    (in the ranking's order; the ranking holds only the candidates to rerank, all with text).

    ``rerank(ranking, k)`` rescores the top ``k`` candidates (all when ``k`` is None). The remaining
    candidates keep their first-stage order below them: their scores are replaced by values lower than
    every reranked score, so the output is one well-formed Ranking.
    """

    name = "reranker"
    needs_text = True

    def score(self, ranking: Ranking) -> Sequence[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, ranking: Ranking) -> None:
        if not isinstance(ranking, Ranking):
            raise TypeError(f"rerank() takes a Ranking, got {type(ranking).__name__}")
        if self.needs_text:
            if ranking.query.text is None:
                raise missing_query_text(ranking.query.id)
            missing = [c.doc_id for c in ranking.candidates if c.document is None]
            if missing:
                raise ValueError(
                    f"{self.name}: candidates {missing[:5]} of query {ranking.query.id!r} carry no document text. "
                    "Attach texts with `ranking.with_documents(corpus)` or give Pipeline a corpus= "
                    "(retrievers built from a corpus attach them automatically)."
                )

    def score_timed(self, ranking: Ranking) -> tuple[Sequence[float], float]:
        """:meth:`score` and the seconds computing the scores cost (wall clock here; a reranker serving
        scores from a shared computation reports what that computation cost)."""
        t0 = time.perf_counter()
        scores = self.score(ranking)
        return scores, time.perf_counter() - t0

    def rerank(self, ranking: Ranking, k: int | None = None) -> Ranking:
        """Rescore the top ``k`` candidates (all when None); the rest keep their order below them."""
        return self.rerank_detailed(ranking, k).ranking

    def rerank_detailed(self, ranking: Ranking, k: int | None = None) -> Reranked:
        """:meth:`rerank` plus the seconds its scoring took (what benchmarks record per query)."""
        if k is not None:
            check_k(k)
        if not isinstance(ranking, Ranking):
            raise TypeError(f"rerank() takes a Ranking, got {type(ranking).__name__}")
        head = ranking.top(k)
        tail = ranking.candidates[len(head):]
        if len(head) == 0:
            return Reranked(ranking, 0.0)
        self._check(head)
        scores, seconds = self.score_timed(head)
        scores = list(scores)
        if len(scores) != len(head):
            raise RuntimeError(f"{self.name} returned {len(scores)} scores for {len(head)} candidates")
        new = [Candidate(c.doc_id, float(s), c.document) for c, s in zip(head.candidates, scores)]
        if tail:
            floor = min(c.score for c in new)
            # Tail keeps first-stage order strictly below every reranked candidate.
            new += [Candidate(c.doc_id, floor - 1.0 - i, c.document) for i, c in enumerate(tail)]
        return Reranked(Ranking(ranking.query, tuple(new)), seconds)

    def rerank_batch(self, run: Run, k: int | None = None, progress: bool | None = None) -> Run:
        """Rerank every ranking of ``run``; a Run named ``<run>+<reranker>``.

        ``progress`` (None: the process setting, :func:`attnsift.progress.is_enabled`) shows a counter
        over the queries on stderr.
        """
        from attnsift import progress as _progress

        items = _progress.bar(list(run.values()), desc=f"rerank ({self.name})", unit="queries", progress=progress)
        return Run([self.rerank(r, k) for r in items], name=f"{run.name}+{self.name}")


class IdentityReranker(BaseReranker):
    """Keeps the first-stage order (the `--reranker none` baseline)."""

    name = "none"
    needs_text = False

    def score(self, ranking: Ranking) -> list[float]:
        return [c.score for c in ranking.candidates]
