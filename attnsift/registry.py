"""Named first stages and rerankers, built from a name, a model and loose options.

The CLI, the benchmark specs and Python users all build systems through here, so ``bm25``,
``dense`` with ``model=minilm`` or ``icr`` with ``model=smollm2-135m`` mean the same thing everywhere.
Implementations are imported lazily: naming a system costs nothing until it is built. Options are
not parsed here: each component builds its frozen config from them
(:func:`attnsift.config.config_from_options`), so the same checks apply from Python, the CLI and specs.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

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


def _no_device(kind: str, name: str, device: Any, dtype: Any) -> None:
    given = [n for n, v in (("device", device), ("dtype", dtype)) if v is not None]
    if given:
        raise ValueError(f"{kind} {name!r} runs no model, so it takes no {' or '.join(given)}; drop {' and '.join(given)}")


#: the config class of each named first stage (hybrid: fusion options + the dense part's, see _split_hybrid)
RETRIEVER_CONFIGS: dict[str, str] = {
    "bm25": "attnsift.retrieval.config:BM25Config",
    "dense": "attnsift.retrieval.config:DenseConfig",
    "late": "attnsift.retrieval.config:LateInteractionConfig",
}


def _split_hybrid(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hybrid options -> (fusion options, dense options)."""
    fusion_keys = {f.name for f in dataclasses.fields(_resolve("attnsift.retrieval.config:FusionConfig"))}
    return ({k: v for k, v in options.items() if k in fusion_keys},
            {k: v for k, v in options.items() if k not in fusion_keys})


def check_options(kind: str, name: str, options: Mapping[str, Any] | None) -> None:
    """Check a named component's options against its config without building it (no model, no index).

    Parameters
    ----------
    kind : {"retriever", "reranker"}
    name : str
        A name of :data:`RETRIEVERS` (or ``hybrid``) or :data:`RERANKERS`.
    options : mapping
        Config fields, strings allowed.

    Raises
    ------
    ValueError
        An unknown name, an unknown option or a value the config rejects.
    """
    from attnsift.config import config_from_options

    options = dict(options or {})
    if kind == "retriever":
        if name == HYBRID:
            fusion, dense = _split_hybrid(options)
            config_from_options(_resolve("attnsift.retrieval.config:FusionConfig"), fusion)
            config_from_options(_resolve(RETRIEVER_CONFIGS["dense"]), dense)
        elif name in RETRIEVER_CONFIGS:
            config_from_options(_resolve(RETRIEVER_CONFIGS[name]), options)
        else:
            raise _unknown("retriever", name, [*RETRIEVER_CONFIGS, HYBRID])
    elif kind == "reranker":
        if name not in RERANKERS:
            raise _unknown("reranker", name, RERANKERS)
        if name == "none":
            if options:
                raise ValueError("--reranker none takes no options")
            return
        config_from_options(_resolve(RERANKERS[name]).config_class, options)
    else:
        raise ValueError(f"kind must be 'retriever' or 'reranker', got {kind!r}")


def build_retriever(
    name: str,
    corpus: Iterable[Document] | None = None,
    model: str | None = None,
    index: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Any:
    """Build (or load, with ``index``) the first stage called ``name``.

    Parameters
    ----------
    name : {"bm25", "dense", "late", "hybrid"}
    corpus : iterable of Document, optional
        What to index when ``index`` is not given.
    model : str, optional
        Encoder for dense / late interaction / hybrid (default ``minilm`` when building; a loaded
        index defaults to the encoder its manifest records).
    index : path, optional
        A saved index (``attnsift index``) to load instead of building.
    options : mapping
        The retriever's config fields, strings allowed (``BM25Config``: ``k1``, ``b``, ...;
        ``DenseConfig``: ``index_type``, ...; ``LateInteractionConfig``; for hybrid the
        ``FusionConfig`` fields, the others going to the dense part). A loaded index takes only the
        options that apply at search time.
    progress : bool
        Progress bars while indexing.
    device, dtype : optional
        For the encoder of dense / late / hybrid (default: CUDA when available, float32); BM25 takes none.

    Raises
    ------
    ValueError
        An unknown name or option (the message lists the accepted ones), options that contradict each
        other, a model, device or dtype for BM25, or neither a corpus nor an index.
    """
    options = dict(options or {})
    if name == HYBRID:
        if index is not None:
            raise ValueError("a hybrid first stage is built from a corpus; saved hybrid indexes do not exist (drop --index)")
        fusion_opts, options = _split_hybrid(options)
        if corpus is not None and not isinstance(corpus, (list, tuple)) and not hasattr(corpus, "iter_documents"):
            corpus = list(corpus)  # both stages index it: a one-shot iterator would leave the second empty
        parts = [build_retriever("bm25", corpus, progress=progress),
                 build_retriever("dense", corpus, model=model, options=options, progress=progress, device=device,
                                 dtype=dtype)]
        return _resolve("attnsift.retrieval.fusion:FusionRetriever")(parts, **fusion_opts)
    if name not in RETRIEVERS:
        raise _unknown("retriever", name, [*RETRIEVERS, HYBRID])
    cls = _resolve(RETRIEVERS[name])
    model_based = name in DEFAULT_MODELS
    if not model_based:
        if model is not None:
            raise ValueError(f"retriever {name!r} takes no model (got {model!r}); drop --model or use --retriever dense")
        _no_device("retriever", name, device, dtype)
    if index is not None:
        extra = {"model": model, "device": device, "dtype": dtype} if model_based else {}
        return cls.load(index, **extra, **options)
    if corpus is None:
        raise ValueError(f"retriever {name!r} needs a corpus to index, or an index path (--index) to load")
    if model_based:
        return cls.from_corpus(corpus, model or DEFAULT_MODELS[name], progress=progress, device=device, dtype=dtype,
                               **options)
    return cls.from_corpus(corpus, progress=progress, **options)


def build_reranker(name: str, model: str | None = None, options: Mapping[str, Any] | None = None,
                   device: Any = None, dtype: Any = None) -> Any:
    """Build the reranker called ``name`` (``none`` gives the identity reranker).

    Parameters
    ----------
    name : {"none", "icr", "listwise", "blockrank"}
    model : str, optional
        The language model (default: :data:`DEFAULT_MODELS` for ``name``).
    options : mapping
        The reranker's config fields, strings allowed; unknown keys are rejected by its config.
    device, dtype : optional
        Where and in what precision the model runs (default: CUDA when available; float32 on the
        CPU, bfloat16 on CUDA).

    Returns
    -------
    Reranker
        ``cls(model, device=device, dtype=dtype, **options)``.
    """
    if name not in RERANKERS:
        raise _unknown("reranker", name, RERANKERS)
    cls = _resolve(RERANKERS[name])
    if name == "none":
        if model is not None or options:
            raise ValueError("--reranker none takes no model or options")
        _no_device("reranker", name, device, dtype)
        return cls()
    return cls(model or DEFAULT_MODELS[name], device=device, dtype=dtype, **dict(options or {}))
