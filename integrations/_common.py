"""What the LangChain, LlamaIndex and Haystack components share: framework documents to a :class:`Ranking`
and back, the reranker or pipeline a component holds (built lazily from a name), and the metadata keys.

Each framework module only reads its document type into :class:`Incoming` records and writes :class:`Hit`
results back onto copies of the original objects; the conversion rules live here, once:

- ids: the framework document's id when it has a usable one (a non-empty string without whitespace,
  not seen before in the list), else a positional id ``#<position>``;
- order: the input order is the first-stage order. The framework's scores become the candidates'
  first-stage scores when they reproduce that order (a reranker that fuses first-stage scores sees
  them); otherwise positional scores ``n, n-1, ...`` keep it;
- results: the rerank score and three metadata keys, :data:`SCORE`, :data:`FIRST_STAGE_RANK` (1-based)
  and :data:`FIRST_STAGE_SCORE` (the framework's incoming score, None when it had none).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from attnsift.concurrency import in_thread, shared_lock
from attnsift.errors import require
from attnsift.types import Candidate, Document, Query, Ranking

#: metadata key of the rerank score
SCORE = "attnsift_score"
#: metadata key of the document's 1-based rank in the first stage (the component's input order)
FIRST_STAGE_RANK = "attnsift_first_stage_rank"
#: metadata key of the document's first-stage score (None when the input carried none)
FIRST_STAGE_SCORE = "attnsift_first_stage_score"
#: every metadata key the components write
METADATA_KEYS = (SCORE, FIRST_STAGE_RANK, FIRST_STAGE_SCORE)


def require_framework(module: str, extra: str, purpose: str) -> ModuleType:
    """Import a framework module or raise :class:`attnsift.MissingDependencyError` naming the extra
    (``pip install 'attnsift[langchain]'``, ``[llamaindex]``, ``[haystack]``)."""
    return require(module, extra, purpose)


@dataclass(frozen=True)
class Incoming:
    """One framework document as attnsift reads it (``text`` and ``title`` unchecked, checked by :func:`to_ranking`)."""

    id: Any
    text: Any
    title: Any = None
    score: Any = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Hit:
    """One reranked document: where it came from and what to write back.

    Attributes
    ----------
    position : int
        Its index in the component's input list (retrievers: in the first stage's list).
    document : Document
        The attnsift document that was scored.
    score : float
        The rerank score (the framework's score field).
    first_stage_rank : int
        1-based rank in the first stage.
    first_stage_score : float or None
        The first stage's score (the incoming framework score; None when it had none).
    """

    position: int
    document: Document
    score: float
    first_stage_rank: int
    first_stage_score: float | None

    def metadata(self) -> dict[str, Any]:
        """The three ``attnsift_*`` metadata entries."""
        return {SCORE: self.score, FIRST_STAGE_RANK: self.first_stage_rank, FIRST_STAGE_SCORE: self.first_stage_score}


def check_query(query: Any, who: str) -> str:
    """The query text, or a one-line error: not a string, or empty."""
    if not isinstance(query, str):
        raise TypeError(f"{who}: the query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{who}: the query is empty; give the question the documents should be ranked for")
    return query


def check_count(value: Any, name: str, who: str, none_ok: bool = True) -> int | None:
    """A positive integer setting (``top_n``, ``depth``, ``k``...), or None when allowed."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer{' or None' if none_ok else ''}, got {value!r}")
    return value


def _usable_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        return None
    return value


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def to_ranking(query: str, items: Sequence[Incoming], who: str) -> tuple[Ranking, list[float | None]]:
    """The candidates ``items`` (first-stage order) for ``query`` as a :class:`Ranking`.

    Returns
    -------
    (ranking, incoming_scores)
        The ranking lists the items in input order; ``incoming_scores[i]`` is item ``i``'s framework
        score (None when it had none or a non-finite one).

    Raises
    ------
    ValueError
        An empty query, or an item without text (None or not a string): the message names its position.
    """
    query = check_query(query, who)
    ids: list[str | None] = [_usable_id(it.id) for it in items]
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if doc_id is not None and doc_id in seen:
            ids[i] = None  # a repeated id (Haystack gives equal contents equal ids): this one becomes positional
        elif doc_id is not None:
            seen.add(doc_id)
    for i, doc_id in enumerate(ids):
        if doc_id is None:
            doc_id, n = f"#{i}", 0
            while doc_id in seen:
                n += 1
                doc_id = f"#{i}.{n}"
            ids[i] = doc_id
            seen.add(doc_id)
    docs = []
    for i, (it, doc_id) in enumerate(zip(items, ids)):
        if not isinstance(it.text, str):
            got = "None" if it.text is None else type(it.text).__name__
            raise ValueError(f"{who}: document {i} (id {it.id!r}) has no text (got {got}); attnsift reranks text: "
                             "drop such documents or convert them to text first")
        title = it.title if isinstance(it.title, str) and it.title else None
        docs.append(Document(doc_id, it.text, title, dict(it.metadata or {})))
    scores = [_score(it.score) for it in items]
    n = len(docs)
    positional = [float(n - i) for i in range(n)]
    if n and all(s is not None for s in scores):
        given = Ranking(Query("q", query), tuple(Candidate(d.id, s, d) for d, s in zip(docs, scores)))
        if given.doc_ids == [d.id for d in docs]:  # the framework scores keep the input order: hand them on
            return given, scores
    return Ranking(Query("q", query), tuple(Candidate(d.id, s, d) for d, s in zip(docs, positional))), scores


def hits(final: Ranking, first: Ranking, incoming: Sequence[float | None] | None = None) -> list[Hit]:
    """The candidates of ``final`` (best first) as :class:`Hit`s, with their rank and score in ``first``.

    ``incoming``: the framework scores of :func:`to_ranking` (first-stage order); None: ``first``'s scores.
    """
    where = {c.doc_id: i for i, c in enumerate(first.candidates)}
    out = []
    for c in final.candidates:
        i = where[c.doc_id]
        doc = c.document if c.document is not None else first.candidates[i].document
        if doc is None:
            raise ValueError(f"document {c.doc_id!r} carries no text: give the Pipeline a corpus= or use an index "
                             "that stores texts, so the framework documents have content")
        fs = first.candidates[i].score if incoming is None else incoming[i]
        out.append(Hit(i, doc, float(c.score), i + 1, fs))
    return out


# --------------------------------------------------------------------------------------------- rerankers
def _registry() -> Any:
    from attnsift import registry

    return registry


def _options_of(reranker: Any) -> dict[str, Any]:
    """The options of a reranker object that differ from its config's defaults (pairs written as ``l:h,...``)."""
    config = getattr(reranker, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}
    default = type(config)().to_dict()
    out = {}
    for key, value in config.to_dict().items():
        if value == default.get(key):
            continue
        if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            value = ",".join(f"{a}:{b}" for a, b in value)
        out[key] = value
    return out


class RerankerSpec:
    """The reranker a component uses: an object, or a registry name + model + options built on first use.

    Parameters
    ----------
    reranker : str or reranker
        A registry name (``icr``, ``blockrank``, ``listwise``, ``cross-encoder``, ``none``) or a ready
        attnsift reranker (anything with ``rerank(ranking, k)``).
    model : str, optional
        The model of a named reranker (default: the registry's, ``smollm2-135m`` for ICR).
    options : mapping, optional
        The named reranker's config fields.
    device : str, optional
        Where a named reranker's model runs.
    who : str
        The component, for messages.

    Raises
    ------
    ValueError
        An unknown name, option or model (checked without loading anything), or model/options given
        with a reranker object.
    TypeError
        Neither a name nor an object with ``rerank``.
    """

    def __init__(self, reranker: Any = "icr", model: str | None = None, options: Mapping[str, Any] | None = None,
                 device: str | None = None, who: str = "attnsift") -> None:
        self.who = who
        self._object: Any = None
        self._lock = threading.Lock()
        self.named = isinstance(reranker, str)
        if isinstance(reranker, str):
            reg = _registry()
            reg.check_options("reranker", reranker, options)
            reg.check_model("reranker", reranker, model)
            self.name, self.model, self.options, self.device = reranker, model, dict(options or {}), device
        elif hasattr(reranker, "rerank"):
            if model is not None or options or device is not None:
                raise ValueError(f"{who}: model=, options= and device= build a reranker given by name; a reranker "
                                 "object comes built: drop them, or give reranker='icr' (a name) with them")
            self._object = reranker
            self.name, self.model, self.options, self.device = getattr(reranker, "name", None), None, {}, None
        else:
            raise TypeError(f"{who}: reranker must be a registry name (e.g. 'icr') or an attnsift reranker, "
                            f"got {type(reranker).__name__}")

    def get(self) -> Any:
        """The reranker (built from its name on the first call; later calls return the same object)."""
        if self._object is None:
            with self._lock:
                if self._object is None:
                    self._object = _registry().build_reranker(self.name, self.model, self.options, device=self.device)
        return self._object

    def describe(self) -> dict[str, Any]:
        """``{"reranker", "model", "options", "device"}``: what rebuilds it (for ``to_dict``).

        Raises
        ------
        ValueError
            A reranker object that cannot be named: not a registry reranker, or over a model loaded
            in Python (no name or folder to load it from again).
        """
        if self.named:
            return {"reranker": self.name, "model": self.model, "options": dict(self.options), "device": self.device}
        obj = self._object
        name = getattr(obj, "name", None)
        if name not in _registry().RERANKERS:
            raise ValueError(f"{self.who}: cannot serialise a {type(obj).__name__}, which is not a registry reranker; "
                             "give reranker= as a name (e.g. 'icr') with model= and options=")
        model = getattr(obj, "model_name", None) if name != "none" else None
        if name != "none" and not model:
            raise ValueError(f"{self.who}: cannot serialise a {name} reranker over a model loaded in Python (it has no "
                             "name or folder to load it from); give reranker=, model= (a name or saved folder) and options=")
        return {"reranker": name, "model": str(model) if model is not None else None, "options": _options_of(obj),
                "device": None}


async def arerank(reranker: Any, ranking: Ranking, depth: int | None) -> Ranking:
    """``reranker.rerank(ranking, depth)`` off the event loop (its ``arerank`` when it has one)."""
    if hasattr(reranker, "arerank"):
        return await reranker.arerank(ranking, depth)
    return await in_thread(shared_lock(reranker), reranker.rerank, ranking, depth)


def rerank_items(spec: RerankerSpec, query: Any, items: Sequence[Incoming], depth: int | None, top_n: int | None,
                 who: str) -> list[Hit]:
    """Rerank the framework documents ``items`` (first-stage order) for ``query``: the best ``top_n`` hits.

    The reranker rescores the first ``depth`` items (all when None); the rest follow in input order.
    No documents: no hits (and no model loaded).
    """
    ranking, incoming = to_ranking(query, items, who)
    if not len(ranking):
        return []
    final = spec.get().rerank(ranking, depth).top(top_n)
    return hits(final, ranking, incoming)


async def arerank_items(spec: RerankerSpec, query: Any, items: Sequence[Incoming], depth: int | None,
                        top_n: int | None, who: str) -> list[Hit]:
    """:func:`rerank_items` without blocking the event loop (the model runs in a worker thread)."""
    ranking, incoming = to_ranking(query, items, who)
    if not len(ranking):
        return []
    reranker = await in_thread(None, spec.get)  # a first call loads the model: not on the loop either
    final = (await arerank(reranker, ranking, depth)).top(top_n)
    return hits(final, ranking, incoming)


# --------------------------------------------------------------------------------------------- pipelines
class PipelineSpec:
    """The Pipeline a retriever component runs: a ready one, or built on first use from an index.

    Parameters
    ----------
    pipeline : Pipeline, optional
        A ready pipeline (then give none of the other settings).
    index : path or retriever, optional
        A saved index (loaded with :func:`attnsift.load_index`) or a retriever object.
    reranker, model, options, device
        The second stage (:class:`RerankerSpec`); ``reranker=None`` keeps the first-stage order.
    first_stage_k, depth, k
        As for :class:`attnsift.Pipeline`.
    """

    def __init__(self, pipeline: Any = None, index: Any = None, reranker: Any = None, model: str | None = None,
                 options: Mapping[str, Any] | None = None, device: str | None = None, first_stage_k: int = 100,
                 depth: int | None = None, k: int | None = None, who: str = "attnsift") -> None:
        from attnsift.pipeline import Pipeline, check_cuts

        self.who = who
        self._lock = threading.Lock()
        if pipeline is not None:
            if not isinstance(pipeline, Pipeline):
                raise TypeError(f"{who}: pipeline must be an attnsift Pipeline, got {type(pipeline).__name__}")
            if index is not None or reranker is not None or model is not None or options or device is not None:
                raise ValueError(f"{who}: give a ready pipeline= or the settings to build one (index=, reranker=, "
                                 "model=, options=, device=), not both")
            self._pipeline, self.index, self.reranker = pipeline, None, None
            return
        if index is None:
            raise ValueError(f"{who}: give pipeline= (an attnsift Pipeline) or index= (a saved index folder or a retriever)")
        if isinstance(index, (str, Path)):
            if not Path(index).is_dir():
                raise ValueError(f"{who}: no index folder at {index}; build one with `attnsift index` or "
                                 "attnsift.build_index(docs).save(path)")
        elif not (hasattr(index, "retrieve") and hasattr(index, "retrieve_batch")):
            raise TypeError(f"{who}: index must be a saved index folder or a retriever, got {type(index).__name__}")
        self.index = index
        self.reranker = None if reranker is None else RerankerSpec(reranker, model, options, device, who)
        if reranker is None and (model is not None or options or device is not None):
            raise ValueError(f"{who}: model=, options= and device= belong to a reranker: give reranker= too")
        self.cuts = check_cuts(first_stage_k, depth, k, reranked=reranker is not None)
        self._pipeline = None

    def get(self) -> Any:
        """The Pipeline (loaded and built on the first call)."""
        if self._pipeline is None:
            with self._lock:
                if self._pipeline is None:
                    from attnsift.pipeline import Pipeline

                    first = self.index
                    if isinstance(first, (str, Path)):
                        first = _registry().load_index(first)
                    fs_k, depth, k = self.cuts
                    self._pipeline = Pipeline(first, None if self.reranker is None else self.reranker.get(),
                                              first_stage_k=fs_k, depth=depth, k=k)
        return self._pipeline


def _one_result(pipeline: Any, query: str) -> Any:
    # One query through the pipeline with its first stage kept (the retrievers report first-stage rank and
    # score). Pipeline.result(query) when the pipeline has it; else the stream pipeline(query) itself uses.
    detailed = getattr(pipeline, "result", None)
    if callable(detailed):
        return detailed(query)
    return next(pipeline._stream([Query("q", query)], False, run_scope=False))


def search(spec: PipelineSpec, query: Any, who: str) -> list[Hit]:
    """The pipeline of ``spec`` on ``query`` (checked before anything loads): the final ranking as
    :class:`Hit`s with first-stage rank and score."""
    query = check_query(query, who)
    result = _one_result(spec.get(), query)
    return hits(result.ranking, result.first_stage)


async def asearch(spec: PipelineSpec, query: Any, who: str) -> list[Hit]:
    """:func:`search` without blocking the event loop: loading, retrieval and reranking run in worker
    threads, the model taking turns on the lock ``Pipeline.arun`` uses."""
    query = check_query(query, who)
    pipeline = await in_thread(None, spec.get)  # a first call loads the index and the model
    detailed = getattr(pipeline, "aresult", None)
    if callable(detailed):
        result = await detailed(query)
    else:
        owner = pipeline.reranker if pipeline.reranker is not None and hasattr(pipeline.reranker, "__dict__") else pipeline
        result = await in_thread(shared_lock(owner), _one_result, pipeline, query)
    return hits(result.ranking, result.first_stage)
