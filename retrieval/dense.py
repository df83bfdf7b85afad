"""Dense (bi-encoder) first stage on faiss.

Documents (``title + " " + text``, as BEIR's dense baselines encode them) are embedded with an
:class:`~attnsift.retrieval.encoders.Encoder` and indexed with faiss (exact ``flat`` inner product by
default; ``hnsw`` and ``ivfpq`` as options). Faiss row positions map back to string document ids.

An index folder holds ``index.faiss``, the documents (``documents.jsonl`` with its offsets and the ids,
see :mod:`attnsift.indexes.doc_store`, so candidates carry their Documents) and ``manifest.json``
(encoder name and configuration, dimension, normalisation, metric, document count, a probe vector,
sha256 per file). :meth:`DenseRetriever.load` checks the manifest: a query encoder that differs from
the one that built the index is an error, not silently meaningless scores.

Documents in memory (a list, a dict) stay a list. A streamed corpus (a path, an attnsift Corpus, a
generator) is written once to a :class:`~attnsift.indexes.doc_store.DocumentStore` on disk and encoded
from it in chunks; a loaded index reads its store from disk: neither holds the corpus's Documents, only
the ``k`` a ranking returns are built.

Usage::

    r = DenseRetriever.from_corpus(docs, encoder="minilm")   # a second run loads the cached encodings
    r.retrieve("does vitamin D help?", k=10)
    r.save("indexes/scifact-dense"); DenseRetriever.load("indexes/scifact-dense")
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from attnsift.config import resolve_config
from attnsift.errors import IndexCorruptedError
from attnsift.io import atomic_dir, read_manifest, write_manifest
from attnsift.indexes.corpus import corpus_fields
from attnsift.indexes.doc_store import DocumentStore, TextsHash, export_store, open_store, spool_documents, take_documents
from attnsift.retrieval.config import DenseConfig
from attnsift.types import Candidate, Document, Query, Ranking, Run, check_k

logger = logging.getLogger(__name__)

KIND = "dense"
#: A fixed text whose encoding the manifest records, to recognise the same encoder weights at load time.
PROBE_TEXT = "attnsift encoder probe: the quick brown fox jumps over the lazy dog"
PROBE_DIMS = 16
PROBE_TOL = 1e-3


# ------------------------------------------------------------------------------- shared helpers
def collect_documents(corpus: Iterable[Document | str] | Mapping[str, Any] | Any, store_dir: str | Path | None = None,
                      progress: bool | None = None) -> Sequence[Document]:
    """A corpus in index order: Documents, plain strings (ids ``d0, d1, ...``), mappings, a dict
    ``id -> text`` (see :func:`attnsift.documents.as_documents`), a path (see
    :func:`attnsift.documents.read_documents`), an attnsift Corpus or an iterator of them.

    What is already in memory (a list, tuple or dict; no ``store_dir``) comes back as a list. A streamed
    source (a path, a Corpus, a generator or other iterator) is written once to a
    :class:`~attnsift.indexes.doc_store.DocumentStore` in ``store_dir`` (default: a temporary folder
    deleted with the store), which is returned: the Documents are never all in memory.

    Raises ValueError on an empty corpus or a duplicate id, TypeError on an item of another type.
    """
    from attnsift.documents import as_documents

    if isinstance(corpus, os.PathLike):
        from attnsift.documents import _source  # its readers, without iter_documents' dict of every id

        path, reader = _source(Path(corpus))
        source: Iterable[Document] = (d for _, d in reader(path))
    elif callable(getattr(corpus, "iter_documents", None)):  # an attnsift Corpus: its store knows the order
        source = corpus.iter_documents()
    elif isinstance(corpus, (str, bytes, Sequence, Mapping)) or not hasattr(corpus, "__iter__"):
        docs = as_documents(corpus)
        return docs if store_dir is None else spool_documents(docs, store_dir, progress=progress)
    else:
        from attnsift.documents import _items  # types checked as as_documents does; duplicates: by the store

        source = (d for _, d in _items(corpus))
    return spool_documents(source, store_dir, progress=progress)


def held_documents(documents: Sequence[Document]) -> tuple[Sequence[Document], Sequence[str]]:
    """``(documents, ids)`` as a retriever keeps them: a store as it is (its ids read from disk), any
    other sequence as a list."""
    if isinstance(documents, DocumentStore):
        return documents, documents.ids
    docs = list(documents)
    return docs, [d.id for d in docs]


def id_rank(owner: Any) -> np.ndarray:
    """``[N]`` each of ``owner.doc_ids``' position in doc-id order (the tie-break), computed once (a
    store's is read from its ``id_rank.npy``)."""
    rank = owner.__dict__.get("_id_rank_cache")
    if rank is None or len(rank) != len(owner.doc_ids):
        if isinstance(owner.documents, DocumentStore):
            rank = owner.documents.id_rank
        else:
            ids = np.asarray(owner.doc_ids, dtype=object)
            rank = np.empty(len(ids), np.int64)
            rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
        owner.__dict__["_id_rank_cache"] = rank
    return rank


def ids_at(ids: Sequence[str], positions: np.ndarray) -> list[str]:
    """The ids at ``positions`` (one gather for ids read from disk)."""
    take = getattr(ids, "take", None)
    return take(positions) if take is not None else [ids[p] for p in positions.tolist()]


def encoder_argument(encoder: Any, options: dict[str, Any], default: Any = None) -> Any:
    """The ``encoder=`` argument, or the deprecated ``model=`` popped from ``options`` (with a warning).

    Both given is a ValueError; neither gives ``default``.
    """
    model = options.pop("model", None)
    if model is not None:
        from attnsift.errors import deprecated

        if encoder is not None:
            raise ValueError(f"got encoder={encoder!r} and model={model!r}; give the encoder once, as encoder=")
        deprecated("model=", "encoder=", stacklevel=4)
        encoder = model
    return default if encoder is None else encoder


def check_encoder_argument(encoder: Any) -> None:
    """:func:`~attnsift.retrieval.encoders.check_encoder_name` for a name (an Encoder is already loaded)."""
    if isinstance(encoder, str) or not hasattr(encoder, "encode_documents"):
        from attnsift.retrieval.encoders import check_encoder_name

        check_encoder_name(encoder)


def encode_documents_cached(encoder: Any, docs: Sequence[Document], cfg: Any, kinds: tuple[str, ...],
                            progress: bool | None = None, *, concatenate: bool = True) -> Any:
    """Encode ``docs`` (their ``contents``) through the encoding cache that ``cfg`` (a DenseConfig or
    LateInteractionConfig) asks for: its ``cache_dir``, else the content-keyed default folder, or none
    with ``cache=False``. ``concatenate=False`` returns the chunks (an
    :class:`~attnsift.retrieval.encoding_cache.EncodedChunks`, read back one file at a time)."""
    from attnsift.retrieval.encoding_cache import default_cache_dir, encode_corpus_cached, texts_fingerprint

    fp = None
    if isinstance(docs, DocumentStore):  # the texts read from disk a chunk at a time
        ids, texts, fp = docs.ids, docs.texts(), docs.texts_sha256
        if fp is None and cfg.cache:
            h = TextsHash()
            for d in docs:
                h.add(d.id, d.contents)
            fp = h.hexdigest()
    else:
        ids, texts = [d.id for d in docs], [d.contents for d in docs]
        fp = texts_fingerprint(ids, texts) if cfg.cache else None
    cache = cfg.cache_dir if cfg.cache_dir is not None else (default_cache_dir(encoder, fp, kinds) if cfg.cache else None)
    return encode_corpus_cached(encoder, ids, texts, cache, kinds=kinds, progress=progress, texts_sha256=fp,
                                concatenate=concatenate)


def as_queries(queries: Sequence[Query | str] | Query | str) -> list[Query]:
    """Queries as Query objects; bare strings get ids ``q0``, ``q1``, ... by position."""
    if isinstance(queries, (Query, str)):
        raise TypeError("retrieve_batch() takes a sequence of queries; use retrieve() for one query")
    out = []
    for i, q in enumerate(queries):
        if isinstance(q, Query):
            out.append(q)
        elif isinstance(q, str):
            out.append(Query(f"q{i}", q))
        else:
            raise TypeError(f"queries must be Query objects or strings, got {type(q).__name__}: {q!r}")
    return out


def check_encoder(encoder: Any, manifest_encoder: dict, probe: Sequence[float] | None, where: Path | str) -> None:
    """Raise IndexCorruptedError if ``encoder`` is not the encoder that built the index at ``where``."""
    mine = encoder.config
    for key in ("name", "dim", "pooling", "normalize", "query_prefix", "doc_prefix"):
        if key in manifest_encoder and mine.get(key) != manifest_encoder[key]:
            raise IndexCorruptedError(
                f"the index at {where} was built with encoder {manifest_encoder.get('name')!r} "
                f"({key}={manifest_encoder[key]!r}), but the query encoder has {key}={mine.get(key)!r}: "
                "its vectors would not be comparable. Load it with the same model, or rebuild the index with this one."
            )
    if probe is not None:
        got = encoder.encode_documents([PROBE_TEXT])[0, : len(probe)]
        if np.abs(got - np.asarray(probe, np.float32)).max() > PROBE_TOL:
            raise IndexCorruptedError(
                f"the encoder {mine['name']!r} gives different vectors from the one that built the index at {where} "
                "(same name, other weights?); load it with the original model or rebuild the index"
            )


def make_encoder(model: Any, encoder_options: Mapping[str, Any], device: Any = None, dtype: Any = None) -> Any:
    """``model`` if it is an :class:`Encoder`, else ``Encoder(model, device=, dtype=, **encoder_options)``.

    Options, a device or a dtype given with an already built Encoder would be silently ignored, so
    they are a ValueError.
    """
    from attnsift.retrieval.encoders import Encoder

    if not isinstance(model, Encoder):
        return Encoder(model, device=device, dtype=dtype, **encoder_options)
    given = [*encoder_options, *(["device"] if device is not None else []), *(["dtype"] if dtype is not None else [])]
    if given:
        raise ValueError(
            f"{', '.join(given)} given with an already built Encoder ({model.name!r}), which keeps its own; "
            "build the Encoder with them, or pass the model name instead"
        )
    return model


def load_encoder(model: Any, manifest_encoder: dict, device: Any = None, dtype: Any = None) -> Any:
    """``model`` (a name or an Encoder), or the encoder recorded in a manifest, with the recorded options."""
    from attnsift.retrieval.encoders import MINILM_ALIASES, Encoder

    if isinstance(model, Encoder):
        return make_encoder(model, {}, device, dtype)
    if model is None:
        name, loc = manifest_encoder["name"], manifest_encoder.get("location")
        # A local folder is reloaded from where it was (its recorded name is only the folder name).
        model = loc if name.lower() not in MINILM_ALIASES and loc and Path(loc).exists() else name
    return Encoder(
        model,
        device=device,
        dtype=dtype,
        max_length=manifest_encoder.get("max_length"),
        query_prefix=manifest_encoder.get("query_prefix", ""),
        doc_prefix=manifest_encoder.get("doc_prefix", ""),
        normalize=manifest_encoder.get("normalize", True),
        pooling=manifest_encoder.get("pooling", "auto"),
        backend=manifest_encoder.get("backend"),  # the queries go through what encoded the documents
    )


def _search_int(key: str, value: Any) -> int:
    """A search option given as an int or a string (CLI) as a positive int."""
    try:
        out = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        out = None
    if isinstance(out, bool) or not isinstance(out, int) or out < 1:
        raise ValueError(f"option {key}={value!r}: expected an integer >= 1")
    return out


# ------------------------------------------------------------------------------------- retriever
class DenseRetriever:
    """Bi-encoder retrieval over a faiss index.

    Build with :meth:`from_corpus` or :meth:`load`.

    Parameters
    ----------
    encoder : Encoder
        Encodes the queries; must be the encoder that embedded the documents.
    index : FaissIndex
        Over the document vectors, rows in the order of ``documents``.
    documents : sequence of Document
        The corpus, in index order: kept as given when a
        :class:`~attnsift.indexes.doc_store.DocumentStore`, else as a list.
    """

    name = "dense"

    def __init__(self, encoder: Any, index: Any, documents: Sequence[Document], probe: Sequence[float] | None = None) -> None:
        if index.ntotal != len(documents):
            raise ValueError(f"the index holds {index.ntotal} vectors but {len(documents)} documents were given")
        if index.dim != encoder.dim:
            raise ValueError(f"the index has dim {index.dim}, the encoder {encoder.name!r} gives dim {encoder.dim}")
        self.encoder = encoder
        self.index = index
        self.documents, self.doc_ids = held_documents(documents)
        self.probe = list(probe) if probe is not None else None
        self.config: DenseConfig | None = None  # how it was built (from_corpus); None when loaded
        self.stats: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"DenseRetriever(encoder={self.encoder.name!r}, index={self.index.index_type!r}, docs={len(self.documents)})"

    @property
    def num_docs(self) -> int:
        return len(self.documents)

    @classmethod
    def from_corpus(
        cls,
        corpus: Iterable[Document | str],
        encoder: str | Any = None,
        *,
        config: DenseConfig | None = None,
        progress: bool | None = None,
        device: Any = None,
        dtype: Any = None,
        store_dir: str | Path | None = None,
        **options: Any,
    ) -> "DenseRetriever":
        """Encode ``corpus`` and index it.

        The encoded corpus is cached by (texts, encoder) under ``$ATTNSIFT_CACHE/encodings``, so a
        second call on the same texts with the same encoder loads the vectors instead of encoding
        (``cache=False`` turns that off; ``cache_dir=`` chooses the folder). The index is filled from
        the cache's chunk files read back one at a time (:class:`~attnsift.retrieval.encoding_cache.EncodedChunks`,
        :meth:`FaissIndex.build_streaming`): beside the index, memory holds one ``add_chunk`` of
        vectors and, for ivfpq, the training sample, never the whole ``[N, dim]`` encoding (without
        the cache the chunks stay in memory); the index is the one :meth:`FaissIndex.build` makes.

        Parameters
        ----------
        corpus : iterable of Document or str, mapping, Corpus or path
            Plain strings get ids ``d0, d1, ...`` (see :func:`attnsift.documents.as_documents`). A list
            is kept in memory; a streamed source (a path, a Corpus, a generator) is written once to a
            document store on disk and encoded from there (:func:`collect_documents`).
        encoder : str or Encoder
            A model name for :class:`Encoder` (``"minilm"``, the default; a folder; a hub id in the local
            cache) or an Encoder. ``model=`` is its deprecated spelling.
        config : DenseConfig, optional
            Index type, encoding cache, encoder overrides, faiss options (see
            :class:`~attnsift.retrieval.config.DenseConfig`); or give them as keyword ``options``.
        progress : bool or None
            Progress on stderr while encoding; None: the process setting (:mod:`attnsift.progress`).
        device, dtype : optional
            Where and in what precision the encoder runs (default: CUDA when available, float32).
        store_dir : path, optional
            Where the documents are stored (any corpus; default for a streamed one: a temporary folder
            under ``$ATTNSIFT_CACHE/spool``, deleted with the retriever). On the file system of the
            folder :meth:`save` writes to, saving hard-links the files instead of copying them.
        **options
            :class:`DenseConfig` fields, strings allowed (``index_type="hnsw"``, ``cache=False``).
        """
        from attnsift.indexes.faiss_index import FaissIndex, check_memory, resolve_index_params

        encoder = encoder_argument(encoder, options, default="minilm")
        cfg = resolve_config(DenseConfig, config, options, "DenseRetriever")
        check_encoder_argument(encoder)
        docs = collect_documents(corpus, store_dir, progress)
        enc_model = make_encoder(encoder, cfg.encoder_options(), device, dtype)
        # nlist against the corpus size, pq_m against the encoder's dimension: before any encoding
        params = resolve_index_params(cfg.index_type, len(docs), enc_model.dim, "ip", **cfg.index_options())
        check_memory(cfg.index_type, len(docs), enc_model.dim, params)  # hnsw, refine: they live in RAM whole
        t0 = time.perf_counter()
        # The chunks, never concatenated: with the cache on they are read back one file at a time (twice
        # for ivfpq: training sample, then filling), so the [N, dim] vectors are never all in memory
        # beside the index; the index is the one FaissIndex.build makes of the same vectors.
        enc = encode_documents_cached(enc_model, docs, cfg, ("dense",), progress, concatenate=False)
        t1 = time.perf_counter()
        index = FaissIndex.build_streaming(enc.batch_source("dense"), enc.n, enc.dim, cfg.index_type, "ip",
                                           progress=progress, **cfg.index_options())
        t2 = time.perf_counter()
        probe = enc_model.encode_documents([PROBE_TEXT], progress=False)[0, :PROBE_DIMS].tolist()
        out = cls(enc_model, index, docs, probe=probe)
        out.config = cfg
        out.stats = {"encode_s": t1 - t0, "index_s": t2 - t1}
        return out

    # ------------------------------------------------------------------ search
    def retrieve(self, query: Query | str, k: int = 100) -> Ranking:
        """Top-``k`` documents for one query (a string gets id ``"q0"``)."""
        q = query if isinstance(query, Query) else as_queries([query])[0]
        return self.retrieve_batch([q], k=k, progress=False)[q.id]

    def retrieve_batch(self, queries: Sequence[Query | str], k: int = 100, progress: bool | None = None) -> Run:
        """Top-``k`` documents per query, as a Run named ``"dense"``; candidates carry their Document.

        Queries longer than the encoder's limit are truncated (with a logged warning).
        """
        k = check_k(k)
        qs = as_queries(queries)
        if not qs:
            return Run((), name=self.name)
        vecs = self.encoder.encode_queries([q.text for q in qs], progress=progress)  # [B, D]
        scores, pos = self.index.search(vecs, k)
        return Run([self._ranking(q, srow, prow) for q, srow, prow in zip(qs, scores, pos)], name=self.name)

    def _ranking(self, query: Query, scores: np.ndarray, positions: np.ndarray) -> Ranking:
        """One query's faiss row as a Ranking, ties by doc id; its Candidates made only when read
        (where :meth:`Ranking.presorted` exists)."""
        keep = positions >= 0
        pos, sc = positions[keep], scores[keep].astype(np.float64)
        order = np.lexsort((self._id_rank()[pos], -sc))
        pos, sc = pos[order], sc[order]
        ids = ids_at(self.doc_ids, pos)
        presorted = getattr(Ranking, "presorted", None)
        docs = self.documents
        if presorted is not None:
            return presorted(query, ids, sc, lambda _ids, rows=pos.tolist(): take_documents(docs, rows), check=False)
        return Ranking(query, tuple(Candidate(d, s, doc) for d, s, doc in zip(ids, sc.tolist(), take_documents(docs, pos.tolist()))))

    def _id_rank(self) -> np.ndarray:
        """``[N]`` each row's position in doc-id order (the tie-break), computed once."""
        return id_rank(self)

    def set_search_options(self, *, nprobe: int | None = None, ef_search: int | None = None,
                           k_factor: int | None = None) -> "DenseRetriever":
        """Trade speed for recall from now on: IVF-PQ ``nprobe`` (lists probed per query), HNSW
        ``ef_search`` (beam width), ``k_factor`` (PQ candidates re-scored per result, for an index built
        with ``refine``). Returns self. A ValueError for an option of another index type."""
        self.index.set_search_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True, *, corpus_fingerprint: str | None = None,
             dataset: str | None = None) -> Path:
        """Write the index folder atomically (temporary folder, then swap) with its manifest.
        ``corpus_fingerprint`` (``Corpus.fingerprint()``) and ``dataset`` are recorded in the manifest,
        for :func:`attnsift.indexes.corpus.check_index_corpus`. Documents held in a store are hard-linked
        into the folder (copied across file systems), never parsed; a list is written once.
        """
        corpus = corpus_fields(corpus_fingerprint, dataset)
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.index.save(tmp)
            export_store(self.documents, tmp)  # a store's files linked or copied, never parsed
            write_manifest(
                tmp,
                KIND,
                encoder={**self.encoder.config, "location": self.encoder.location},
                dim=self.index.dim,
                normalize=self.encoder.normalize,
                metric=self.index.metric,
                doc_count=len(self.documents),
                index=self.index.info(),
                probe=self.probe,
                **corpus,
            )
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: str | Any | None = None, *, verify: bool = True, device: Any = None,
             dtype: Any = None, **options: Any) -> "DenseRetriever":
        """Load an index written by :meth:`save`.

        Parameters
        ----------
        path : path
            The index folder.
        encoder : str or Encoder, optional
            The query encoder; defaults to the one in the manifest. Another encoder is an error.
            ``model=`` is its deprecated spelling.
        verify : bool
            Check every file's checksum first.
        device, dtype : optional
            For the query encoder (as in :meth:`from_corpus`).
        **options
            Search-time options only (strings allowed): ``nprobe`` for an ivfpq index, ``ef_search`` for
            hnsw, ``k_factor`` for an ivfpq index built with ``refine``. A dense index keeps how it was
            built: build options are an error (the message says so).

        Raises
        ------
        ValueError
            Build options, or a search option of another index type.
        IndexCorruptedError
            (a ValueError) missing / modified files, another kind of index, or a mismatched encoder.
        """
        from attnsift.indexes.faiss_index import FaissIndex

        from attnsift.retrieval.config import FAISS_SEARCH_OPTIONS

        encoder = encoder_argument(encoder, options)
        if encoder is not None:
            check_encoder_argument(encoder)
        search = {k: _search_int(k, options.pop(k)) for k in FAISS_SEARCH_OPTIONS if options.get(k) is not None}
        if options:
            raise ValueError(
                f"a saved dense index keeps how it was built; got options {', '.join(sorted(options))}: "
                f"rebuild the index with them or drop them (a loaded index takes {', '.join(FAISS_SEARCH_OPTIONS)})"
            )
        path = Path(path)
        manifest = read_manifest(path, KIND, verify=verify)
        try:
            menc = manifest["encoder"]
            info = manifest["index"]
            doc_count = int(manifest["doc_count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptedError(f"{path}/manifest.json lacks field {exc}; rebuild the index") from exc
        index = FaissIndex.load(path, info)
        index.check_search_params(**search)  # nprobe on an hnsw index...: before the documents and the encoder
        docs = open_store(path, doc_count, index.ntotal, "vectors")  # memory-mapped
        query_encoder = load_encoder(encoder, menc, device=device, dtype=dtype)
        check_encoder(query_encoder, menc, manifest.get("probe"), path)
        index.set_search_params(**search)
        return cls(query_encoder, index, docs, probe=manifest.get("probe"))

    def index_bytes(self) -> int:
        """Bytes of the vector index alone (without texts)."""
        return self.index.nbytes()
