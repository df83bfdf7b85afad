"""attnsift in Haystack (the ``@component`` API of Haystack 2.x and 3.x): a ranker and a retriever.

Needs ``haystack-ai`` (``pip install 'attnsift[haystack]'``); tested with haystack-ai 3.4::

    from attnsift.integrations.haystack import AttnsiftRanker, AttnsiftRetriever

    ranker = AttnsiftRanker(reranker="icr", model="smollm2-135m", top_k=3)
    ranker.run(query="what causes scurvy?", documents=docs)["documents"]     # best first
    retriever = AttnsiftRetriever(index="my-index", reranker="icr", depth=20, top_k=5)

Both serialise like Haystack's own components (``to_dict`` / ``from_dict``, so ``Pipeline.dumps`` /
``Pipeline.loads(..., allowed_modules=["attnsift"])`` keep them): what is stored is the reranker's registry
name, model and options (and the index path), never a model object. The model loads in ``warm_up`` (or on
the first run). The rerank score is ``Document.score`` and ``meta["attnsift_score"]``, beside
``attnsift_first_stage_rank`` (1-based) and ``attnsift_first_stage_score`` (the incoming ``score``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from attnsift.integrations._common import (Hit, Incoming, PipelineSpec, RerankerSpec, arerank_items, asearch,
                                           check_count, rerank_items, require_framework, search)

_hs = require_framework("haystack", "haystack", "attnsift.integrations.haystack")

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402

__all__ = ["AttnsiftRanker", "AttnsiftRetriever"]


def _incoming(doc: Any, title_key: str | None, who: str) -> Incoming:
    if not isinstance(doc, Document):
        raise TypeError(f"{who}: documents must be Haystack Documents, got {type(doc).__name__}")
    title = doc.meta.get(title_key) if title_key else None
    return Incoming(doc.id, doc.content, title, doc.score)


def _with_hit(doc: Document, hit: Hit) -> Document:
    """A copy of ``doc`` (id, content, embedding, other meta kept) with the hit's score and meta entries."""
    return dataclasses.replace(doc, score=hit.score, meta={**doc.meta, **hit.metadata()})


def _new_document(hit: Hit, title_key: str | None) -> Document:
    d = hit.document
    title = {title_key: d.title} if title_key and d.title else {}
    return Document(id=d.id, content=d.text, meta={**dict(d.metadata), **title, **hit.metadata()}, score=hit.score)


def _top_k(value: Any, default: int | None, who: str) -> int | None:
    return default if value is None else check_count(value, "top_k", who)


@component
class AttnsiftRanker:
    """Rerank Haystack Documents with an attnsift reranker: documents in, documents out (best first).

    Parameters
    ----------
    reranker : str
        A registry name: ``icr`` [default], ``blockrank``, ``listwise``, ``cross-encoder``, ``none``. A
        ready reranker object works too, but serialises only when it names its model (loaded by name).
    model : str, optional
        The reranker's model (default: the registry's, ``smollm2-135m`` for ICR; a local folder works).
    options : dict, optional
        The reranker's options (``{"max_words": 100}``).
    device : str, optional
        Where the model runs (default: CUDA when available).
    top_k : int or None
        How many documents to return [10]; None: all. ``run(top_k=)`` overrides it per call.
    depth : int or None
        How many of the input documents (input order = first-stage order) are rescored; the rest
        follow in input order (None: all).
    title_key : str or None
        The meta key whose string value is the document's title ["title"].
    """

    def __init__(self, reranker: Any = "icr", model: str | None = None, options: dict[str, Any] | None = None,
                 device: str | None = None, top_k: int | None = 10, depth: int | None = None,
                 title_key: str | None = "title") -> None:
        who = type(self).__name__
        self.top_k, self.depth = check_count(top_k, "top_k", who), check_count(depth, "depth", who)
        self.title_key = title_key
        self._spec = RerankerSpec(reranker, model, options, device, who)

    def warm_up(self) -> None:
        """Load the model (Haystack pipelines call this before the first run; a run calls it otherwise)."""
        self._spec.get()

    def to_dict(self) -> dict[str, Any]:
        """The component as Haystack serialises components: the reranker's name, model and options.

        Raises
        ------
        ValueError
            A reranker object over a model loaded in Python (nothing names it).
        """
        return default_to_dict(self, **self._spec.describe(), top_k=self.top_k, depth=self.depth,
                               title_key=self.title_key)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttnsiftRanker":
        """The component :meth:`to_dict` wrote (the model loads at ``warm_up`` or the first run)."""
        return default_from_dict(cls, data)

    def _items(self, documents: list[Document]) -> list[Incoming]:
        if not isinstance(documents, list):
            raise TypeError(f"{type(self).__name__}: documents must be a list of Haystack Documents, "
                            f"got {type(documents).__name__}")
        return [_incoming(d, self.title_key, type(self).__name__) for d in documents]

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The best ``top_k`` of ``documents`` for ``query``: copies with ``score`` and the ``attnsift_*`` meta.

        Raises
        ------
        ValueError
            An empty query, a document without content, a bad ``top_k``.
        """
        found = rerank_items(self._spec, query, self._items(documents), self.depth,
                             _top_k(top_k, self.top_k, type(self).__name__), type(self).__name__)
        return {"documents": [_with_hit(documents[h.position], h) for h in found]}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, documents: list[Document],
                        top_k: int | None = None) -> dict[str, list[Document]]:
        """:meth:`run` without blocking the event loop (the model runs in a worker thread)."""
        found = await arerank_items(self._spec, query, self._items(documents), self.depth,
                                    _top_k(top_k, self.top_k, type(self).__name__), type(self).__name__)
        return {"documents": [_with_hit(documents[h.position], h) for h in found]}


@component
class AttnsiftRetriever:
    """Search a saved attnsift index (first stage, then an optional reranker): query in, documents out.

    Parameters
    ----------
    index : str or Path
        A folder written by ``attnsift index`` or ``build_index(...).save(path)`` (loaded at ``warm_up``).
    reranker : str, optional
        A registry name (None [default]: first stage only); ``model``, ``options``, ``device`` as for
        :class:`AttnsiftRanker`.
    first_stage_k, depth : int
        As for :class:`attnsift.Pipeline` [100, all].
    top_k : int
        How many documents to return [10]; ``run(top_k=)`` may ask for fewer.
    title_key : str or None
        The meta key the documents' titles go under ["title"].
    """

    def __init__(self, index: str | Path, reranker: str | None = None, model: str | None = None,
                 options: dict[str, Any] | None = None, device: str | None = None, first_stage_k: int = 100,
                 depth: int | None = None, top_k: int = 10, title_key: str | None = "title") -> None:
        who = type(self).__name__
        if not isinstance(index, (str, Path)):
            raise TypeError(f"{who}: index must be a saved index folder (str or Path), got {type(index).__name__}; "
                            "save it with index.save(path)")
        if reranker is not None and not isinstance(reranker, str):
            raise TypeError(f"{who}: reranker must be a registry name (e.g. 'icr') so the component serialises, "
                            f"got {type(reranker).__name__}")
        self.index, self.top_k, self.title_key = str(index), check_count(top_k, "top_k", who, none_ok=False), title_key
        self.settings = {"reranker": reranker, "model": model, "options": options, "device": device,
                         "first_stage_k": first_stage_k, "depth": depth}
        self._spec = PipelineSpec(None, self.index, reranker, model, options, device, first_stage_k, depth,
                                  self.top_k, who)

    def warm_up(self) -> None:
        """Load the index and the reranker's model."""
        self._spec.get()

    def to_dict(self) -> dict[str, Any]:
        """The component as Haystack serialises components (index path and settings)."""
        return default_to_dict(self, index=self.index, **self.settings, top_k=self.top_k, title_key=self.title_key)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttnsiftRetriever":
        """The component :meth:`to_dict` wrote."""
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, list[Document]]:
        """The best ``top_k`` documents for ``query``: ``score`` and the ``attnsift_*`` meta set."""
        k = _top_k(top_k, self.top_k, type(self).__name__)
        found = search(self._spec, query, type(self).__name__)
        return {"documents": [_new_document(h, self.title_key) for h in found[:k]]}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, top_k: int | None = None) -> dict[str, list[Document]]:
        """:meth:`run` without blocking the event loop."""
        k = _top_k(top_k, self.top_k, type(self).__name__)
        found = await asearch(self._spec, query, type(self).__name__)
        return {"documents": [_new_document(h, self.title_key) for h in found[:k]]}
