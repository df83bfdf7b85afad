"""Pipeline: the one runner. A first stage (a retriever, or a provided run), the reranker on the top
``depth`` candidates, then the cut to ``k``.

The CLI (``rerank``, ``retrieve``, ``explain``, ``analyze heads``), the quality benchmark and Python users
all run through :class:`Pipeline`, so "first stage", "depth" and "k" mean the same thing everywhere::

    first_stage_k   how many candidates the first stage returns per query (default 100)
    depth           how many of them the reranker rescores (default: all first_stage_k)
    k               how many the pipeline returns (default: all the first stage returned)

A provided run (DL19's BM25 run, a TREC file) stands in for the first stage: its ranking of each query,
cut to ``first_stage_k``. :func:`first_stage` picks the first stage of a data set, with the rule that a
data set providing a run named like the requested retriever uses that run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from attnsift import progress as _progress
from attnsift.concurrency import in_thread, shared_lock
from attnsift.types import Candidate, Query, Ranking, Reranker, Retriever, Run, as_query, check_k, missing_query_text

log = logging.getLogger(__name__)

DEFAULT_FIRST_STAGE_K = 100


def check_cuts(first_stage_k: int = DEFAULT_FIRST_STAGE_K, depth: int | None = None, k: int | None = None,
               reranked: bool = True) -> tuple[int, int | None, int | None]:
    """Validate a pipeline's cut-offs; returns ``(first_stage_k, depth, k)`` with ``depth`` resolved.

    ``depth`` defaults to ``first_stage_k`` when there is a reranker and stays None without one.

    Raises
    ------
    ValueError
        A non-positive value, ``depth`` or ``k`` above ``first_stage_k`` (the first stage cannot supply
        them), or ``depth`` without a reranker.
    """
    first_stage_k = check_k(first_stage_k, "first_stage_k")
    for name, value in (("depth", depth), ("k", k)):
        if value is None:
            continue
        check_k(value, name)
        if value > first_stage_k:
            raise ValueError(
                f"{name} ({value}) is larger than first_stage_k ({first_stage_k}); the first stage returns only "
                f"first_stage_k candidates: raise first_stage_k to at least {value} or lower {name}"
            )
    if depth is not None and not reranked:
        raise ValueError(f"depth={depth} is how many candidates a reranker rescores, but there is no reranker; "
                         "give a reranker or drop depth")
    if depth is None and reranked:
        depth = first_stage_k
    return first_stage_k, depth, k


@dataclass(frozen=True)
class PipelineResult:
    """One query through the pipeline.

    Attributes
    ----------
    query : Query
    first_stage : Ranking
        The first stage's candidates (at most ``first_stage_k``), texts attached where a stage needed them.
    ranking : Ranking
        The final ranking: reranked top ``depth``, the rest below in first-stage order, cut to ``k``.
    first_stage_seconds : float
        This query's share of the first-stage search (index building and document loading excluded).
    rerank_seconds : float
        What the reranker's scoring of this query cost (0 without a reranker).
    """

    query: Query
    first_stage: Ranking
    ranking: Ranking
    first_stage_seconds: float
    rerank_seconds: float

    @property
    def seconds(self) -> float:
        """First-stage share plus reranking."""
        return self.first_stage_seconds + self.rerank_seconds


class Pipeline:
    """First stage, then the reranker on the top ``depth`` candidates, then the cut to ``k``.

    Parameters
    ----------
    first_stage : Retriever or Run
        A retriever (``BM25Retriever``, a dense retriever, a fusion, ...), or a provided Run that stands
        in for retrieval: each query's ranking in it, cut to ``first_stage_k``. Query texts come from
        the queries the pipeline is run on, so a run read from a file needs no texts of its own.
    reranker : Reranker, optional
        Second stage; ``None`` keeps the first-stage order.
    first_stage_k : int
        How many candidates the first stage returns per query.
    depth : int, optional
        How many of the first-stage candidates the reranker rescores (default: all ``first_stage_k``).
        Only with a reranker.
    k : int, optional
        How many candidates the pipeline returns (default: all that the first stage returned, so
        measures such as R@100 stay evaluable; a RAG application passes e.g. ``k=5``).
    corpus : mapping doc_id -> Document, or an object with ``subset(ids) -> dict``, optional
        Texts for candidates that carry none (a provided run, an index loaded without documents): read
        in one pass per run for the top ``depth`` (without a reranker: for the returned candidates).

    Raises
    ------
    TypeError
        A first stage that is neither a Retriever nor a Run, a reranker without ``rerank``, a bad corpus.
    ValueError
        ``depth`` or ``k`` larger than ``first_stage_k``, or ``depth`` without a reranker.

    Examples
    --------
    >>> pipe = Pipeline(BM25Retriever.from_corpus(docs), ICRReranker("smollm2-135m"), depth=20, k=5)
    >>> pipe("what causes scurvy?").doc_ids
    >>> Pipeline(dataset.load_run("bm25"), icr, depth=20, corpus=dataset.corpus).run(dataset.queries)
    """

    def __init__(
        self,
        first_stage: Retriever | Run,
        reranker: Reranker | None = None,
        *,
        first_stage_k: int = DEFAULT_FIRST_STAGE_K,
        depth: int | None = None,
        k: int | None = None,
        corpus: Mapping[str, Any] | Any | None = None,
    ) -> None:
        if not isinstance(first_stage, Run) and not (hasattr(first_stage, "retrieve") and hasattr(first_stage, "retrieve_batch")):
            raise TypeError(f"first_stage must be a Retriever (retrieve, retrieve_batch) or a Run, "
                            f"got {type(first_stage).__name__}")
        if reranker is not None and not hasattr(reranker, "rerank"):
            raise TypeError(f"reranker must implement rerank(ranking, k), got {type(reranker).__name__}")
        if corpus is not None and not (isinstance(corpus, Mapping) or hasattr(corpus, "subset")):
            raise TypeError(f"corpus must be a mapping doc_id -> Document or have subset(ids), got {type(corpus).__name__}")
        self.first_stage = first_stage
        self.reranker = reranker
        self.first_stage_k, self.depth, self.k = check_cuts(first_stage_k, depth, k, reranked=reranker is not None)
        self.corpus = corpus
        self._calls = 0

    @property
    def first_stage_name(self) -> str:
        """The first stage's name: the Run's name, or the retriever's ``name``."""
        return str(getattr(self.first_stage, "name", None) or type(self.first_stage).__name__)

    @property
    def name(self) -> str:
        """The name of the runs this pipeline produces (their TREC tag): ``first`` or ``first+reranker``."""
        if self.reranker is None:
            return self.first_stage_name
        return f"{self.first_stage_name}+{getattr(self.reranker, 'name', type(self.reranker).__name__)}"

    def __repr__(self) -> str:
        return (f"Pipeline({self.name!r}, first_stage_k={self.first_stage_k}, depth={self.depth}, k={self.k}, "
                f"corpus={'yes' if self.corpus is not None else 'no'})")

    def __call__(self, query: Query | str) -> Ranking:
        """The final ranking for one query (a text, or a Query; over a provided run, a Query it ranks)."""
        return self.result(query).ranking

    def result(self, query: Query | str) -> PipelineResult:
        """``pipeline(query)`` with the first-stage ranking and the timings (a :class:`PipelineResult`)."""
        if isinstance(self.first_stage, Run) and not isinstance(query, Query):
            raise TypeError(f"a pipeline over the provided run {self.first_stage.name!r} ranks only that run's queries: "
                            f"call it with a Query whose id the run holds, not a {type(query).__name__}")
        q = as_query(query, default_id=f"q{self._calls}")
        self._calls += 1
        # One query (RAG use): no progress lines, and not a run: a cut document is reported the first time only.
        return next(self._stream([q], False, run_scope=False))

    async def arun(self, query: Query | str) -> Ranking:
        """``pipeline(query)`` without blocking the event loop (retrieval and reranking in a worker thread);
        concurrent calls take turns on the reranker's model (the lock ``arerank`` takes), else the pipeline's."""
        return (await self.aresult(query)).ranking

    async def aresult(self, query: Query | str) -> PipelineResult:
        """:meth:`result` without blocking the event loop (see :meth:`arun`)."""
        owner = self.reranker if self.reranker is not None and hasattr(self.reranker, "__dict__") else self
        return await in_thread(shared_lock(owner), self.result, query)

    def run(self, queries: Iterable[Query | str] | Mapping[str, Query] | None = None,
            progress: bool | None = None, engine: Any = None) -> Run:
        """Run every query; a Run named :attr:`name`, queries in the given order.

        ``queries`` may be None over a provided run: its own queries (which need texts to be reranked).
        ``progress`` and ``engine``: see :meth:`stream`.
        """
        return Run((r.ranking for r in self.stream(queries, progress=progress, engine=engine)), name=self.name)

    def stream(self, queries: Iterable[Query | str] | Mapping[str, Query] | None = None,
               progress: bool | None = None, engine: Any = None, ordered: bool = True) -> Iterator[PipelineResult]:
        """Yield one :class:`PipelineResult` per query, in order, as each is reranked.

        The first stage runs for all queries at once (``retrieve_batch``) and texts are read in one pass
        before the first result; reranking then proceeds query by query, so a consumer can record
        each result as it comes (resumable benchmarks).

        ``progress`` (None: the process setting, :func:`attnsift.progress.is_enabled`: on in the CLI
        unless ``--quiet``, in Python when stderr is a terminal) reports each long step on stderr: the
        first stage, reading candidate texts from a corpus on disk, the reranking counter, and one
        :class:`attnsift.progress.Estimator` line when the reranking will take over a minute.

        ``engine`` runs the reranking elsewhere: an object with ``rerank_stream(reranker, rankings, depth,
        ordered=)`` (:class:`attnsift.engines.Engine`; e.g. ``RayEngine``: Ray actors, one model each).
        The first stage and the text lookup run here; the rankings equal the local ones score for score
        (:mod:`attnsift.engines.base`). ``ordered=False`` yields results as the engine returns them.
        """
        if engine is not None and not callable(getattr(engine, "rerank_stream", None)):
            raise TypeError(f"engine must have rerank_stream(reranker, rankings, depth) (attnsift.engines: LocalEngine, "
                            f"RayEngine), got {type(engine).__name__}")
        return self._stream(queries, progress, run_scope=True, engine=engine, ordered=ordered)

    def _stream(self, queries: Any, progress: bool | None, run_scope: bool, engine: Any = None,
                ordered: bool = True) -> Iterator[PipelineResult]:
        qs = self._queries(queries)
        t0 = time.perf_counter()
        first = self._first_stage_run(qs, progress)
        share = (time.perf_counter() - t0) / max(len(qs), 1)
        if self.corpus is not None and (self.reranker is None or getattr(self.reranker, "needs_text", True)):
            first = attach_texts(first, self.corpus, self.depth if self.reranker is not None else self.k, progress=progress)
        if self.reranker is None:
            for q in qs:
                yield PipelineResult(first[q.id].query, first[q.id], first[q.id].top(self.k), share, 0.0)
            return
        if engine is not None:
            yield from self._engine_stream(qs, first, share, progress, engine, ordered)
            return
        est = _progress.Estimator(len(qs), "queries", hint=self._estimate_hint(), progress=progress,
                                  device=self._reranker_device())
        # A run counts the documents the reranker cut and reports them once, when it ends (rerank/base.py).
        scope = getattr(self.reranker, "truncation_run", None) if run_scope else None
        with scope() if scope is not None else contextlib.nullcontext(), \
                _progress.bar(desc=f"rerank ({self.name})", total=len(qs), unit="queries", progress=progress) as counter:
            for q in qs:
                ranking = first[q.id]
                final, seconds = ranking, 0.0
                if len(ranking):
                    if ranking.query.text is None:
                        raise missing_query_text(q.id, self.first_stage_name)
                    t1 = time.perf_counter()
                    final, seconds = self._rerank(ranking)
                    est.observe(time.perf_counter() - t1)
                counter.update(1)
                yield PipelineResult(ranking.query, ranking, final.top(self.k), share, seconds)

    def _engine_stream(self, qs: list[Query], first: Run, share: float, progress: bool | None, engine: Any,
                       ordered: bool) -> Iterator[PipelineResult]:
        """The non-empty rankings reranked by ``engine``; empty ones pass through (in place, or first)."""
        ranked = [n for n, q in enumerate(qs) if len(first[q.id])]
        for n in ranked:
            if first[qs[n].id].query.text is None:
                raise missing_query_text(qs[n].id, self.first_stage_name)
        empty = [n for n in range(len(qs)) if not len(first[qs[n].id])]

        def result(n: int, ranking: Ranking | None = None, seconds: float = 0.0) -> PipelineResult:
            src = first[qs[n].id]
            return PipelineResult(src.query, src, (src if ranking is None else ranking).top(self.k), share, seconds)

        stream = engine.rerank_stream(self.reranker, [first[qs[n].id] for n in ranked], self.depth, ordered=ordered)
        desc = f"rerank ({self.name}, {getattr(engine, 'name', type(engine).__name__)} engine)"
        with _progress.bar(desc=desc, total=len(qs), unit="queries", progress=progress) as counter:
            for res in stream:
                n = ranked[res.index]
                while empty and (empty[0] < n or not ordered):
                    counter.update(1)
                    yield result(empty.pop(0))
                counter.update(1)
                yield result(n, res.ranking, float(res.seconds))
            for n in empty:
                counter.update(1)
                yield result(n)

    def _estimate_hint(self) -> str:
        config = getattr(self.reranker, "config", None)
        words = getattr(config, "max_words", None)
        shorter = f" or shorter documents (--option max_words=, now {words})" if words else ""
        return f"fewer queries (--max-queries), a lower depth (--depth, now {self.depth}){shorter} shorten it"

    def _reranker_device(self) -> str | None:
        try:
            device = getattr(self.reranker, "device", None)
        except Exception:  # a reranker without parameters
            return None
        return None if device is None or callable(device) else str(device)

    def _queries(self, queries: Any) -> list[Query]:
        if queries is None:
            if not isinstance(self.first_stage, Run):
                raise TypeError("run() needs the queries to search for (a list of Query or str, or a mapping id -> Query)")
            return [r.query for r in self.first_stage.values()]
        if isinstance(queries, (str, Query)):
            raise TypeError("run() takes many queries (a list or a mapping); for one query call the pipeline: pipeline(query)")
        if isinstance(queries, Mapping):
            queries = queries.values()
        return [as_query(q, default_id=f"q{i}") for i, q in enumerate(queries)]

    def _first_stage_run(self, queries: list[Query], progress: bool | None = None) -> Run:
        stage = self.first_stage
        if isinstance(stage, Run):
            rankings, missing = [], 0
            for q in queries:
                found = stage.get(q.id)
                missing += found is None
                query = q if q.text is not None or found is None else found.query
                rankings.append(Ranking(query, () if found is None else found.candidates[: self.first_stage_k]))
            if missing:
                log.warning("%d of %d queries have no ranking in the run %r; they get empty rankings",
                            missing, len(queries), stage.name)
            return Run(rankings, name=stage.name)
        for q in queries:
            if q.text is None:
                raise missing_query_text(q.id)
        with _progress.step(f"first stage ({self.first_stage_name}): {len(queries)} queries", progress):
            found = stage.retrieve_batch(queries, k=self.first_stage_k)
        return Run((found[q.id] if q.id in found else Ranking(q) for q in queries), name=self.first_stage_name)

    def _rerank(self, ranking: Ranking) -> tuple[Ranking, float]:
        detailed = getattr(self.reranker, "rerank_detailed", None)
        if detailed is not None:
            out = detailed(ranking, self.depth)
            return out.ranking, float(out.seconds)
        t0 = time.perf_counter()
        ranked = self.reranker.rerank(ranking, self.depth)
        return ranked, time.perf_counter() - t0


def attach_texts(run: Run, corpus: Mapping[str, Any] | Any, depth: int | None = None,
                 progress: bool | None = None) -> Run:
    """Attach documents from ``corpus`` to the top ``depth`` candidates of every ranking (all when None).

    One lookup for the whole run (``corpus.subset(ids)`` streams a large corpus once: MS MARCO's 8.8M
    passages are read for the few the run names); candidates that carry a document keep it, order and
    scores are untouched. Reading a corpus on disk is one progress step (``progress``: see
    :func:`attnsift.progress.is_enabled`).

    Raises
    ------
    ValueError
        A candidate document the corpus does not hold (the run belongs to another data set).
    """
    needed = {c.doc_id for rk in run.values() for c in rk.top(depth) if c.document is None}
    if not needed:
        return run
    source = getattr(corpus, "source", "memory")
    if hasattr(corpus, "subset") and source != "memory":
        with _progress.step(f"reading {len(needed)} candidate texts from {source}", progress):
            docs = corpus.subset(needed)
    elif hasattr(corpus, "subset"):
        docs = corpus.subset(needed)
    elif isinstance(corpus, Mapping):
        docs = {d: corpus[d] for d in needed if d in corpus}
    else:
        raise TypeError(f"corpus must be a mapping doc_id -> Document or have subset(ids), got {type(corpus).__name__}")
    missing = needed - set(docs)
    if missing:
        where = getattr(corpus, "source", None) or f"{type(corpus).__name__} of {len(corpus)} documents"
        raise ValueError(f"{len(missing)} candidate documents of run {run.name!r} (e.g. {sorted(missing)[:3]}) are not in "
                         f"the corpus ({where}); the run does not belong to this data set")

    def attached(rk: Ranking) -> Ranking:
        return Ranking(rk.query, tuple(Candidate(c.doc_id, c.score, docs[c.doc_id]) if c.document is None and c.doc_id in docs
                                       else c for c in rk.candidates))

    return Run((attached(rk) for rk in run.values()), name=run.name)


def _ranks_none(run: Run, dataset: Any, what: str) -> ValueError:
    split = getattr(dataset, "split", None)
    of = f"{dataset.name}" + (f" ({split})" if split else "")
    if not len(run):
        return ValueError(f"{what} is empty: it ranks no query; write a run with `attnsift retrieve --save-run`")
    return ValueError(f"{what} ranks none of the {len(dataset.queries)} queries of {of}; "
                      "is it a run for another data set or split?")


def restrict_to_run(dataset: Any, run: Run, *, max_queries: int | None = None, strict: bool = False,
                    warn: Callable[[str], None] | None = None) -> Any:
    """``dataset`` cut to the queries ``run`` ranks (in the data set's order), then to the first ``max_queries``.

    A run that covers only some queries is evaluated (and reranked) on those: scoring the missing ones
    as 0 would report a wrong number. The missing queries, and the run's queries the data set does
    not have, are counted in one warning (``warn``, default: the log).

    ``dataset``: anything with ``name``, ``queries`` and ``subset(ids)`` / ``subset(max_queries=N)``;
    ``max_queries``: the first N covered queries (data set order); ``strict``: missing queries are an
    error instead of a warning; ``warn`` receives the warning's one line. Returns ``dataset`` itself
    when the run covers every query, else the covered subset.

    Raises
    ------
    ValueError
        The data set has no queries, the run ranks none of them (or is empty), or ``strict`` and some
        queries are missing.
    """
    if max_queries is not None:
        check_k(max_queries, "max_queries")
    what = f"run {run.name!r}"
    if not dataset.queries:
        raise ValueError(f"data set {dataset.name} has no queries to evaluate {what} on; check its queries and qrels files")
    covered = [q for q in dataset.queries if q in run]
    if not covered:
        raise _ranks_none(run, dataset, what)
    missing = len(dataset.queries) - len(covered)
    extra = sum(1 for q in run if q not in dataset.queries)
    if missing or extra:
        split = getattr(dataset, "split", None)
        msg = (f"{what} covers {len(covered)} of the {len(dataset.queries)} queries of {dataset.name}"
               + (f" ({split})" if split else "") + (f"; {missing} have no ranking" if missing else "")
               + (f"; it also ranks {extra} queries the data set does not have (ignored)" if extra else ""))
        if missing and strict:
            raise ValueError(f"{msg}; without --strict only the covered queries are evaluated")
        (warn or log.warning)(f"{msg}; evaluating the {len(covered)} covered queries only")
    sub = dataset.subset(covered) if missing else dataset
    return sub.subset(max_queries=max_queries) if max_queries is not None else sub


def provided_run(dataset: Any, retriever: str = "bm25", run: Run | str | os.PathLike | None = None) -> Run | None:
    """The run that stands in for the first stage on ``dataset``, or None when the retriever must run.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``name``, ``queries``, ``runs``, ``run_aliases`` and ``load_run(name)``
        (:class:`attnsift.eval.datasets.Dataset`).
    retriever : str
        The requested first stage. A data set that provides a run of that name uses it (DL19 provides
        ``bm25``: its local corpus is only the pool its runs retrieved, so indexing it would not be BM25).
    run : Run, path or str, optional
        An explicit run: a Run, a TREC file (read with query ids only; the texts come from the data set
        when the pipeline runs) or the name of a run the data set provides.

    Raises
    ------
    ValueError
        ``run`` is neither a file nor a run of the data set (the message lists its runs), or a file ranks
        none of the data set's queries.
    """
    if isinstance(run, Run):
        return run
    if run is not None:
        path = Path(run)
        if path.is_file():
            from attnsift.trec import read_run

            found = read_run(path, name=path.stem)
            if dataset.queries and not any(q in found for q in dataset.queries):
                raise _ranks_none(found, dataset, f"run file {path}")
            return found
        return dataset.load_run(str(run))
    if retriever in getattr(dataset, "runs", {}) or retriever in getattr(dataset, "run_aliases", {}):
        log.info("%s provides a %r run: it stands in for the %s first stage", dataset.name, retriever, retriever)
        return dataset.load_run(retriever)
    return None


def first_stage(dataset: Any, retriever: str = "bm25", *, run: Run | str | os.PathLike | None = None,
                encoder: Any = None, options: Mapping[str, Any] | None = None, progress: bool | None = None,
                device: Any = None, index: str | os.PathLike | None = None, model: Any = None) -> Retriever | Run:
    """The first stage for ``dataset``: the run of :func:`provided_run`, else ``retriever`` over its corpus.

    ``retriever``: a registry name (``bm25``, ``dense``, ``late``, ``hybrid``); ``run``: see
    :func:`provided_run`; ``encoder``, ``options``: the retriever's (:func:`attnsift.registry.build_retriever`;
    a provided run takes neither: giving them is an error, not silently unused settings); ``progress``:
    while indexing (None: the process setting); ``device``: where the encoder runs; ``index``: a saved
    index of ``retriever``'s kind to load instead of indexing the corpus; ``model``: deprecated ``encoder``.
    """
    if model is not None:
        from attnsift.errors import deprecated

        deprecated("model=", "encoder=")
        if encoder is not None:
            raise ValueError("give the encoder once: encoder= (model= is its deprecated spelling)")
        encoder = model
    found = provided_run(dataset, retriever, run)
    if found is not None:
        if encoder is not None or options or index is not None:
            given = ", ".join([*(["encoder=" + str(encoder)] if encoder is not None else []),
                               *(["index=" + str(index)] if index is not None else []), *map(str, options or {})])
            raise ValueError(f"the first stage of {dataset.name} is the provided run {found.name!r}, which takes no "
                             f"encoder, index or options (given: {given}); drop them, or give another --retriever")
        return found
    from attnsift.registry import build_retriever

    # BM25 keeps a reference to a corpus on disk (texts read on demand) instead of copying its Documents.
    corpus = None if index is not None else dataset.corpus if retriever == "bm25" else dataset.corpus.iter_documents()
    return build_retriever(retriever, corpus, encoder=encoder, index=index, options=options, progress=progress,
                           device=device)
