"""Named first stages and rerankers, built from a name, a model and loose options.

The CLI, the benchmark specs and Python users all build systems through here, so ``bm25``,
``dense`` with ``model=minilm`` or ``icr`` with ``model=smollm2-135m`` mean the same thing everywhere.
Implementations are imported lazily: naming a system costs nothing until it is built.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from attnsift.config import _coerce
from attnsift.types import Document

log = logging.getLogger(__name__)

RETRIEVERS: dict[str, str] = {
    "bm25": "attnsift.retrieval.bm25:BM25Retriever",
    "dense": "attnsift.retrieval.dense:DenseRetriever",
    "late": "attnsift.retrieval.late_interaction:LateInteractionRetriever",
}
HYBRID = "hybrid"  # BM25 + dense, fused

RERANKERS: dict[str, str] = {
    "none": "attnsift.rerank.base:IdentityReranker",
    "icr": "attnsift.rerank.icr:ICRReranker",
    "listwise": "attnsift.rerank.listwise:ListwiseReranker",
    "blockrank": "attnsift.rerank.blockrank:BlockRankReranker",
}

DEFAULT_MODELS = {"dense": "minilm", "late": "minilm", "icr": "smollm2-135m", "listwise": "smollm2-135m",
                  "blockrank": "smollm2-135m"}


def _resolve(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _unknown(kind: str, name: str, known: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")


def call_with_options(fn: Callable[..., Any], options: Mapping[str, Any] | None, *,
                      signature_of: Callable[..., Any] | None = None, **fixed: Any) -> Any:
    """Call ``fn(**fixed, **options)``, converting string options to the annotated parameter types.

    Unknown option names are rejected with the list of accepted ones, unless the signature takes
    ``**kwargs`` (then they are passed through, and ``fn`` checks them itself). ``signature_of`` names
    the callable whose signature types the options when ``fn`` only forwards them (``from_corpus(**params)``
    forwarding to ``__init__``).
    """
    options = dict(options or {})
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    takes_kwargs = True
    for source in (fn, signature_of) if signature_of is not None else (fn,):
        target = source.__init__ if inspect.isclass(source) else source
        sig = inspect.signature(target)
        try:
            found = typing.get_type_hints(target)
        except Exception:  # unresolvable forward references: convert nothing
            found = {}
        named = {n: p for n, p in sig.parameters.items()
                 if n != "self" and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
        for n, p in named.items():
            params.setdefault(n, p)
            if n in found:
                hints.setdefault(n, found[n])
        # options reach the last signature only if every one before it forwards **kwargs
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        if not takes_kwargs:
            break
    converted = {}
    for key, value in options.items():
        if key in params:
            converted[key] = _coerce(value, hints.get(key, Any), key)
        elif takes_kwargs:
            converted[key] = value
        else:
            accepted = [n for n in params if n not in fixed]
            name = getattr(signature_of or fn, "__name__", fn)
            raise ValueError(f"unknown option {key!r} for {name}; accepted: {', '.join(accepted)}")
    return fn(**fixed, **converted)


def build_retriever(
    name: str,
    corpus: Iterable[Document] | None = None,
    model: str | None = None,
    index: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Any:
    """Build (or load, with ``index``) the first stage called ``name``.

    Parameters
    ----------
    name : {"bm25", "dense", "late", "hybrid"}
    corpus : iterable of Document, optional
        What to index when ``index`` is not given.
    model : str, optional
        Encoder for dense / late interaction (default ``minilm``).
    index : path, optional
        A saved index (``attnsift index``) to load instead of building.
    options : mapping
        Engine parameters (``k1``, ``b`` for BM25; ``index_type`` for dense; ``method``, ``weights`` for hybrid).
    """
    options = dict(options or {})
    if name == HYBRID:
        fusion_opts = {k: options.pop(k) for k in list(options) if k in ("method", "weights", "rrf_k", "depth", "normalization")}
        if corpus is not None and not isinstance(corpus, (list, tuple)) and not hasattr(corpus, "iter_documents"):
            corpus = list(corpus)  # both stages index it: a one-shot iterator would leave the second empty
        parts = [build_retriever("bm25", corpus, progress=progress),
                 build_retriever("dense", corpus, model=model, progress=progress, options=options)]
        fusion = _resolve("attnsift.retrieval.fusion:FusionRetriever")
        return call_with_options(fusion, fusion_opts, retrievers=parts)
    if name not in RETRIEVERS:
        raise _unknown("retriever", name, [*RETRIEVERS, HYBRID])
    cls = _resolve(RETRIEVERS[name])
    if name in DEFAULT_MODELS and model is None:
        model = DEFAULT_MODELS[name]
    if index is not None:
        kwargs = {"model": model} if name in ("dense", "late") else {}
        return cls.load(index, **kwargs)
    if corpus is None:
        raise ValueError(f"retriever {name!r} needs a corpus to index, or an index path (--index) to load")
    fixed: dict[str, Any] = {"corpus": corpus, "progress": progress}
    if name in ("dense", "late"):
        fixed["model"] = model
    elif model is not None:
        raise ValueError(f"retriever {name!r} takes no model (got {model!r}); drop --model or use --retriever dense")
    return call_with_options(cls.from_corpus, options, signature_of=cls, **fixed)


def build_reranker(name: str, model: str | None = None, options: Mapping[str, Any] | None = None) -> Any:
    """Build the reranker called ``name`` (``none`` gives the identity reranker)."""
    if name not in RERANKERS:
        raise _unknown("reranker", name, RERANKERS)
    cls = _resolve(RERANKERS[name])
    if name == "none":
        if model is not None or options:
            raise ValueError("--reranker none takes no model or options")
        return cls()
    return call_with_options(cls, options, model=model or DEFAULT_MODELS[name])
