"""Named first stages and rerankers, built from a name, a model and loose options.

The CLI, the benchmark specs and Python users all build systems through here, so ``bm25``, ``dense`` with
``encoder=minilm`` or ``icr`` with ``model=smollm2-135m`` mean the same thing everywhere. Implementations are
imported lazily: naming a system costs nothing until it is built. Options are not parsed here: each component
builds its frozen config from them (:func:`attnsift.config.config_from_options`), one set of checks for all.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any, Iterable, Mapping

from attnsift.documents import as_documents, corpus_record
from attnsift.errors import deprecated
from attnsift.types import Document

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
    "cross-encoder": "attnsift.rerank.cross_encoder:CrossEncoderReranker",
}

#: the model a component uses when none is named (a reranker missing here has no default: it needs --model)
DEFAULT_MODELS = {"dense": "minilm", "late": "minilm", "icr": "smollm2-135m", "listwise": "smollm2-135m",
                  "blockrank": "smollm2-135m"}

#: how each reranker's model name is checked without loading it (default: a causal LM's check)
MODEL_CHECKS: dict[str, str] = {"cross-encoder": "attnsift.rerank.cross_encoder:check_cross_encoder_name"}
_LM_CHECK = "attnsift.rerank.llm:check_model_name"


def missing_model(name: str) -> ValueError:
    """The one-line error for a reranker that has no default model and was given none."""
    return ValueError(f"reranker {name!r} needs a model and attnsift ships none for it: give --model (a local folder, "
                      f"or a hub id in the local cache, e.g. cross-encoder/ms-marco-MiniLM-L6-v2 after `hf download`; "
                      f"in a bench spec: bm25+{name}:PATH)")


def _resolve(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _unknown(kind: str, name: str, known: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")


def _no_device(kind: str, name: str, device: Any, dtype: Any) -> None:
    # device="auto" asks for nothing in particular: a stage that runs no model takes it
    given = [n for n, v in (("device", device), ("dtype", dtype)) if v is not None and not (n == "device" and v == "auto")]
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


ENCODER_KEYS = ("encoder", "model")  # an encoder given inside options (model: the old spelling)


def _pop_encoder(options: dict[str, Any]) -> Any:
    """Take the encoder out of ``options`` (``encoder=``, or the deprecated ``model=``)."""
    legacy = options.pop("model", None)
    enc = options.pop("encoder", None)
    if legacy is not None:
        deprecated("the option model=", "encoder=", stacklevel=4)
        if enc is not None and enc != legacy:
            raise ValueError(f"options give two encoders (encoder={enc!r}, model={legacy!r}); give encoder= only")
    return enc if enc is not None else legacy


def _one_encoder(*given: Any) -> Any:
    picked = [g for g in given if g is not None]
    for g in picked[1:]:
        if g is not picked[0] and g != picked[0]:
            raise ValueError(f"two encoders given ({picked[0]!r} and {g!r}); give one (encoder=)")
    return picked[0] if picked else None


def check_options(kind: str, name: str, options: Mapping[str, Any] | None) -> None:
    """Check a named component's options against its config without building it (no model, no index).

    Parameters
    ----------
    kind : {"retriever", "reranker"}
    name : str
        A name of :data:`RETRIEVERS` (or ``hybrid``) or :data:`RERANKERS`.
    options : mapping
        Config fields, strings allowed. Dense, late and hybrid also take ``encoder`` (the encoder's
        name, as ``encoder=`` does; ``model`` is its deprecated spelling).

    Raises
    ------
    ValueError
        An unknown name, an unknown option or a value the config rejects.
    """
    from attnsift.config import config_from_options

    options = dict(options or {})
    if kind == "retriever":
        if name in DEFAULT_MODELS or name == HYBRID:
            for key in ENCODER_KEYS:
                options.pop(key, None)
        if name == HYBRID:
            fusion, dense = _split_hybrid(options)
            config_from_options(_resolve("attnsift.retrieval.config:FusionConfig"), fusion)
            config_from_options(_resolve(RETRIEVER_CONFIGS["dense"]), dense)
        elif name == "late":  # the faiss token index or the compressed (plaid) one: options of either
            _resolve("attnsift.retrieval.late_interaction:check_late_options")(options)
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


def _optional_check(module: str, attr: str) -> Any:
    """``module.attr`` when the module has it (a check another part of attnsift provides), else None."""
    try:
        return getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None


def check_model(kind: str, name: str, model: Any) -> None:
    """Check, before any expensive work and without loading anything, that ``model`` can be resolved.

    Parameters
    ----------
    kind : {"retriever", "reranker"}
    name : str
        The component (``dense``, ``late``, ``hybrid``, ``bm25``; ``icr``, ``listwise``...).
    model : str or object, optional
        The encoder (retrievers) or the reranker's model (checked by :data:`MODEL_CHECKS`); None (the
        default model; an error for a reranker with none) and objects (a ready encoder) are not checked.

    Raises
    ------
    ValueError
        BM25 (or ``--reranker none``) given a model, a reranker with no default model given none, or a name
        neither a known short name nor a local folder nor a hub id (the message is the model's own check's).
    """
    if model is None:
        if kind == "reranker" and name in RERANKERS and name != "none" and name not in DEFAULT_MODELS:
            raise missing_model(name)
        return
    if kind == "retriever":
        if name not in DEFAULT_MODELS and name != HYBRID:
            if name in RETRIEVERS:
                raise ValueError(f"retriever {name!r} takes no model (got encoder {model!r}); drop --encoder, or use "
                                 "--retriever dense, late or hybrid")
            raise _unknown("retriever", name, [*RETRIEVERS, HYBRID])
        check = _optional_check("attnsift.retrieval.encoders", "check_encoder_name")
    elif kind == "reranker":
        if name == "none":
            raise ValueError("--reranker none takes no model; drop --model or choose a reranker")
        if name not in RERANKERS:
            raise _unknown("reranker", name, RERANKERS)
        check = _optional_check(*MODEL_CHECKS.get(name, _LM_CHECK).split(":"))
    else:
        raise ValueError(f"kind must be 'retriever' or 'reranker', got {kind!r}")
    if check is not None and isinstance(model, (str, Path)):
        check(str(model))


def _accepts(fn: Any, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def build_retriever(
    name: str,
    corpus: Iterable[Document | str] | Any = None,
    encoder: Any = None,
    index: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    device: Any = None,
    dtype: Any = None,
    model: Any = None,
) -> Any:
    """Build (or load, with ``index``) the first stage called ``name``.

    Parameters
    ----------
    name : {"bm25", "dense", "late", "hybrid"}
    corpus : iterable of Document or str, mapping or Corpus, optional
        What to index when ``index`` is not given (see :func:`attnsift.documents.as_documents`).
    encoder : str or Encoder, optional
        Encoder for dense / late interaction / hybrid (default ``minilm`` when building; a loaded
        index defaults to the encoder its manifest records). Also accepted as ``options["encoder"]``.
    index : path, optional
        A saved index (``attnsift index``, ``index.save``) to load instead of building; its kind must
        be ``name``'s.
    options : mapping
        The retriever's config fields, strings allowed (``BM25Config``: ``k1``, ``b``, ...;
        ``DenseConfig``: ``index_type``, ...; ``LateInteractionConfig``; for hybrid the
        ``FusionConfig`` fields, the others going to the dense part). A loaded index takes only the
        options that apply at search time.
    progress : bool, optional
        Progress on stderr while indexing (None: the process setting, :mod:`attnsift.progress`).
    device, dtype : optional
        For the encoder of dense / late / hybrid (default: CUDA when available, float32); BM25 takes none.
    model : optional
        Deprecated spelling of ``encoder`` (warns).

    Raises
    ------
    ValueError
        An unknown name or option (the message lists the accepted ones), options that contradict each
        other, an encoder, device or dtype for BM25, an index of another kind, or neither a corpus
        nor an index.
    """
    options = dict(options or {})
    if model is not None:
        deprecated("build_retriever(model=...)", "encoder=")
    if name in DEFAULT_MODELS or name == HYBRID:
        encoder = _one_encoder(encoder, model, _pop_encoder(options))
    else:
        encoder = _one_encoder(encoder, model)
    if index is not None:
        if corpus is not None:
            raise ValueError("give a corpus to index or an index to load, not both")
        kind = index_kind(index)
        if _KIND_NAMES.get(kind, kind) != name:
            raise ValueError(f"the index at {index} is a {_KIND_NAMES.get(kind, kind)!r} index, not {name!r}; "
                             f"drop --retriever (the index says its kind) or give --retriever {_KIND_NAMES.get(kind, kind)}")
        return load_index(index, encoder=encoder, options=options, device=device, dtype=dtype, progress=progress)
    if corpus is None:
        raise ValueError(f"retriever {name!r} needs a corpus to index, or an index path (--index) to load")
    if name == HYBRID:
        fusion_opts, options = _split_hybrid(options)
        if not isinstance(corpus, (list, tuple)) and not hasattr(corpus, "iter_documents"):
            corpus = as_documents(corpus)  # both stages index it: a one-shot iterator would leave the second empty
        parts = [build_retriever("bm25", corpus, progress=progress),
                 build_retriever("dense", corpus, encoder, options=options, progress=progress, device=device,
                                 dtype=dtype)]
        return _resolve("attnsift.retrieval.fusion:FusionRetriever")(parts, **fusion_opts)
    if name not in RETRIEVERS:
        raise _unknown("retriever", name, [*RETRIEVERS, HYBRID])
    cls = _resolve(RETRIEVERS[name])
    if name not in DEFAULT_MODELS:
        if encoder is not None:
            raise ValueError(f"retriever {name!r} takes no model (got encoder {encoder!r}); drop --encoder, or use "
                             "--retriever dense, late or hybrid")
        _no_device("retriever", name, device, dtype)
        return cls.from_corpus(corpus, progress=progress, **options)
    encoder = encoder or DEFAULT_MODELS[name]
    if _accepts(cls.from_corpus, "encoder"):
        return cls.from_corpus(corpus, encoder=encoder, progress=progress, device=device, dtype=dtype, **options)
    return cls.from_corpus(corpus, encoder, progress=progress, device=device, dtype=dtype, **options)


def build_reranker(name: str, model: str | None = None, options: Mapping[str, Any] | None = None,
                   device: Any = None, dtype: Any = None) -> Any:
    """Build the reranker called ``name`` (``none`` gives the identity reranker).

    Parameters
    ----------
    name : {"none", "icr", "listwise", "blockrank", "cross-encoder"}
    model : str, optional
        The model (default: :data:`DEFAULT_MODELS` for ``name``; the cross-encoder has none: required).
    options : mapping
        The reranker's config fields, strings allowed; unknown keys are rejected by its config.
    device, dtype : optional
        Where and in what precision the model runs (``cpu``, ``cuda``, ``cuda:N``, ``auto``; default:
        CUDA when available; float32 on the CPU, bfloat16 on CUDA for language models).

    Returns
    -------
    Reranker
        ``cls(model, device=device, dtype=dtype, **options)``, with ``built_with`` recording these arguments.
    """
    if name not in RERANKERS:
        raise _unknown("reranker", name, RERANKERS)
    cls = _resolve(RERANKERS[name])
    if name == "none":
        if model is not None or options:
            raise ValueError("--reranker none takes no model or options")
        _no_device("reranker", name, device, dtype)
        return cls()
    if model is None and name not in DEFAULT_MODELS:
        raise missing_model(name)
    out = cls(model or DEFAULT_MODELS[name], device=device, dtype=dtype, **dict(options or {}))
    out.built_with = {"name": name, "model": model, "options": dict(options or {}), "device": device, "dtype": dtype}
    return out


# --------------------------------------------------------------------------------------------- saved indexes
#: manifest kind -> the class whose ``load`` reads it
INDEX_LOADERS: dict[str, str] = {
    "bm25": "attnsift.retrieval.bm25:BM25Retriever",
    "bm25-lucene": "attnsift.retrieval.lucene:LuceneBM25Retriever",
    "dense": "attnsift.retrieval.dense:DenseRetriever",
    "late": "attnsift.retrieval.late_interaction:LateInteractionRetriever",
    HYBRID: "attnsift.retrieval.fusion:FusionRetriever",
}
_KIND_NAMES = {"bm25-lucene": "bm25"}  # manifest kind -> the --retriever name it answers to
_ENCODED = ("dense", "late", HYBRID)


def index_kind(path: str | Path) -> str:
    """The kind a saved index's manifest records (``bm25``, ``dense``, ``late``, ``hybrid``...), read
    without checksums.

    Raises
    ------
    IndexCorruptedError
        No index at ``path``, or a manifest of no kind attnsift loads.
    """
    from attnsift.errors import IndexCorruptedError
    from attnsift.io import read_manifest

    kind = read_manifest(path, None, verify=False).get("kind")
    if kind not in INDEX_LOADERS:
        raise IndexCorruptedError(f"{path} holds a {kind!r} folder, not a first-stage index "
                                  f"({', '.join(INDEX_LOADERS)}); point --index to a folder `attnsift index` wrote")
    return kind


def load_index(path: str | Path, *, encoder: Any = None, options: Mapping[str, Any] | None = None,
               device: Any = None, dtype: Any = None, progress: bool | None = None, verify: bool = True) -> Any:
    """Load a saved first-stage index of any kind (the manifest says which).

    Parameters
    ----------
    path : str or Path
        A folder written by ``attnsift index``, :func:`build_index` ``(...).save(path)`` or a retriever's
        ``save``.
    encoder : str, optional
        The query encoder of a dense / late / hybrid index (default: the one the index records; another
        is an error).
    options : mapping, optional
        Search-time options (late: ``candidate_k``, ``normalize``; hybrid: the fusion fields); an
        index keeps how it was built, so build options are an error.
    device, dtype : optional
        For the query encoder; BM25 takes none.
    progress : bool, optional
        One progress line while loading (None: the process setting).
    verify : bool
        Check every file against the manifest's checksums (reads every byte once).

    Returns
    -------
    Retriever
        ``BM25Retriever``, ``LuceneBM25Retriever``, ``DenseRetriever``, ``LateInteractionRetriever`` or
        ``FusionRetriever``.

    Raises
    ------
    IndexCorruptedError
        No index, a damaged one, or a folder of another kind.
    ValueError
        An encoder, device or dtype for a BM25 index, or options the index does not take.
    """
    from attnsift import progress as prog

    kind = index_kind(path)
    options = dict(options or {})
    if kind in _ENCODED:
        encoder = _one_encoder(encoder, _pop_encoder(options))
    cls = _resolve(INDEX_LOADERS[kind])
    with prog.step(f"loading {kind} index {path}", progress=progress):
        if kind not in _ENCODED:
            if encoder is not None:
                raise ValueError(f"the index at {path} is a {kind} index, which takes no encoder (got {encoder!r}); "
                                 "drop --encoder")
            _no_device("index", str(path), device, dtype)
            return cls.load(path, verify=verify, **options)
        if kind == HYBRID or _accepts(cls.load, "encoder"):
            return cls.load(path, verify=verify, encoder=encoder, device=device, dtype=dtype, **options)
        return cls.load(path, verify=verify, model=encoder, device=device, dtype=dtype, **options)


def index_info(path: str | Path) -> dict[str, Any]:
    """What a saved index is, read from its manifest (no vectors or postings loaded, no checksums).

    Returns
    -------
    dict
        ``path``, ``retriever`` (the kind), ``encoder`` (the dense / late encoder's name, None for
        BM25; hybrid: its dense part's), ``docs``, ``corpus_fingerprint``, ``dataset``, ``created``
        (ISO time the manifest was written), ``attnsift_version``, ``parts`` (hybrid: each part's info).

    Raises
    ------
    IndexCorruptedError
        No index at ``path`` or a folder of another kind.
    """
    import datetime

    from attnsift.io import MANIFEST, read_manifest

    path = Path(path)
    kind = index_kind(path)
    m = read_manifest(path, None, verify=False)
    corpus = m.get("corpus") if isinstance(m.get("corpus"), dict) else {}
    enc = m.get("encoder")
    created = m.get("created") or datetime.datetime.fromtimestamp(
        (path / MANIFEST).stat().st_mtime, tz=datetime.timezone.utc).isoformat(timespec="seconds")
    info: dict[str, Any] = {
        "path": str(path), "retriever": kind,
        "encoder": enc.get("name") if isinstance(enc, dict) else enc,
        "docs": m.get("num_docs", m.get("doc_count")),
        "corpus_fingerprint": corpus.get("fingerprint"), "dataset": corpus.get("dataset"),
        "created": created, "attnsift_version": m.get("attnsift_version"),
    }
    if kind == HYBRID:
        info["parts"] = [index_info(path / p["path"]) for p in m.get("parts", [])]
        info["encoder"] = next((p["encoder"] for p in info["parts"] if p["encoder"]), None)
        info["fusion"] = m.get("fusion")
    return info


def build_index(documents: Any, retriever: str = "bm25", *, encoder: Any = None,
                options: Mapping[str, Any] | None = None, device: Any = None, dtype: Any = None,
                progress: bool | None = None) -> Any:
    """Index your own documents: the first step of a RAG application.

    Parameters
    ----------
    documents : list of str or Document, mapping, Corpus, Dataset, or a path
        Texts (ids ``d0, d1, ...``), Documents, anything :func:`attnsift.documents.as_documents` takes,
        or a file / folder :func:`attnsift.read_documents` reads (``.jsonl``, ``.tsv``, a folder of
        ``.txt``/``.md`` files, a BEIR folder).
    retriever : {"bm25", "dense", "hybrid", "late"}
    encoder : str, optional
        The encoder of dense / late / hybrid (default ``minilm``); BM25 takes none.
    options : mapping, optional
        The retriever's config fields (see :func:`build_retriever`).
    device, dtype : optional
        For the encoder.
    progress : bool, optional
        Progress on stderr (None: the process setting; in Python on when stderr is a terminal).

    Returns
    -------
    Retriever
        Ready to search (``.retrieve("question", k=5)``) and to ``.save(path)``; the corpus
        fingerprint is recorded on it (and in the saved manifest).

    Raises
    ------
    ValueError
        An unknown retriever, option or encoder name (checked before any document is read), no
        documents, duplicate ids, or a malformed file (``file:line`` in the message).

    Examples
    --------
    >>> from attnsift import build_index, load_index
    >>> index = build_index(["BM25 ranks documents", "attention reranks them"])
    >>> index.retrieve("ranking", k=1).doc_ids
    ['d0']
    """
    if retriever not in RETRIEVERS and retriever != HYBRID:
        raise _unknown("retriever", retriever, [*RETRIEVERS, HYBRID])
    options = dict(options or {})
    check_options("retriever", retriever, options)
    if retriever in DEFAULT_MODELS or retriever == HYBRID:
        encoder = _one_encoder(encoder, _pop_encoder(options))
    check_model("retriever", retriever, encoder)
    docs, fingerprint, dataset = corpus_record(documents, stream=retriever in ("dense", "late"))  # to a store on disk
    out = build_retriever(retriever, docs, encoder, options=options, progress=progress, device=device, dtype=dtype)
    out.corpus_fingerprint, out.dataset = fingerprint, dataset
    return out
