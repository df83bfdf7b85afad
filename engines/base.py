"""The engine protocol, the local engine and the pieces engines share.

An engine runs the reranking stage of a :class:`attnsift.Pipeline` (and, for ``attnsift index``, the
encoding of a corpus) somewhere: :class:`LocalEngine` in this process, exactly as the pipeline does
without an engine; :class:`attnsift.engines.ray.RayEngine` on a pool of Ray actors, one model each.
The core does not import this package: ``Pipeline.run(queries, engine=...)`` calls any object that
has the methods of :class:`Engine`.

What "identical" means: an engine returns, for every query, the ranking the local run returns, score
for score (``float`` equality, so the TREC run files are equal byte for byte: scores are written with
``repr``). Engines guarantee it by running the same code on the same inputs one query at a time (a
query's prompt never shares a batch with another's); the float32 arithmetic of a forward pass is the
same when the model, the device, the precision and the torch build are the same. Thread counts
change the order of some CPU reductions in principle; the tests check the local run at 2 torch
threads against Ray workers at 1 thread each (equal on this machine's torch build, see
``tests/integration/test_ray_engine.py``), and :class:`RayEngine` pins each worker's thread count.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, NamedTuple, Protocol, Sequence, runtime_checkable

from attnsift.engines.recipe import RerankerRecipe

__all__ = ["Engine", "LocalEngine", "EngineResult", "merge_truncation", "ENGINES"]

ENGINES = ("local", "ray")


class EngineResult(NamedTuple):
    """One query's result from an engine."""

    index: int  #: its position in the rankings given to the engine
    ranking: Any  #: the reranked Ranking (candidates carry their documents)
    seconds: float  #: what the scoring cost (the worker's wall clock)


@runtime_checkable
class Engine(Protocol):
    """What :meth:`attnsift.Pipeline.stream` asks of an engine.

    ``rerank_stream(reranker, rankings, depth, ordered=True)`` reranks the top ``depth`` of each ranking
    (every one holds candidates with texts and a query text) and yields :class:`EngineResult`
    ``(index into rankings, reranked ranking, scoring seconds)``, each index once; in index order when
    ``ordered``, else as results arrive. ``reranker`` is a built reranker or a
    :class:`~attnsift.engines.recipe.RerankerRecipe`. ``truncation`` afterwards holds the run's cut
    documents (:meth:`attnsift.rerank.base.TruncationCount.as_dict`), and one cut warning was logged.
    """

    name: str

    def rerank_stream(self, reranker: Any, rankings: Sequence[Any], depth: int | None, *,
                      ordered: bool = True) -> Iterator[EngineResult]: ...


class LocalEngine:
    """Reranking in this process, one query after another: what a pipeline does without an engine."""

    name = "local"

    def __init__(self) -> None:
        self.truncation: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return "LocalEngine()"

    def rerank_stream(self, reranker: Any, rankings: Sequence[Any], depth: int | None, *,
                      ordered: bool = True) -> Iterator[EngineResult]:
        rr = reranker.reranker if isinstance(reranker, RerankerRecipe) else reranker
        detailed = getattr(rr, "rerank_detailed", None)
        scope = getattr(rr, "truncation_run", None)
        with scope() if scope is not None else contextlib.nullcontext():
            for i, ranking in enumerate(rankings):
                if detailed is not None:
                    out = detailed(ranking, depth)
                    yield EngineResult(i, out.ranking, float(out.seconds))
                else:
                    t0 = time.perf_counter()
                    ranked = rr.rerank(ranking, depth)
                    yield EngineResult(i, ranked, time.perf_counter() - t0)
        self.truncation = getattr(rr, "truncation", None)

    def close(self) -> None:
        """Nothing to release (the same call as :meth:`RayEngine.close`)."""

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def merge_truncation(figures: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The cut-document figure of a run from the figures of its parts (one per worker batch):
    counts add up, limits take the smallest, the longest document the largest."""
    figures = [f for f in figures if f]
    if not figures:
        return None
    units: dict[str, dict[str, Any]] = {}
    for unit in ("words", "tokens"):
        cut = sum(f[unit]["cut"] for f in figures)
        limits = [f[unit]["limit"] for f in figures if f[unit]["limit"] is not None]
        longest = [f[unit]["longest"] for f in figures if f[unit]["longest"] is not None]
        units[unit] = {"cut": cut, "limit": min(limits) if limits else None, "longest": max(longest) if longest else None}
    unit = "words" if units["words"]["cut"] else "tokens" if units["tokens"]["cut"] else None
    main = units[unit] if unit else {"limit": None, "longest": None}
    return {"documents": sum(f["documents"] for f in figures), "cut": sum(f["cut"] for f in figures), "unit": unit,
            "limit": main["limit"], "longest": main["longest"], **units}
