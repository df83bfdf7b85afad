"""BM25 first stage on an embedded bm25s index, with Lucene-like English analysis.

Defaults reproduce pyserini's BEIR "flat" BM25 (k1=0.9, b=0.4, title + text in one field, Lucene's
``EnglishAnalyzer``, Lucene's BM25 formula). See :mod:`attnsift.retrieval.analysis` for the analysis
chain and ``benchmarks/results/bm25.md`` for measured effectiveness and speed.

Scoring
-------
bm25s precomputes, for every (term, document) pair, the term's BM25 contribution and stores it in a
sparse (V x N) postings matrix. A batch of queries becomes a sparse (Q x V) matrix of query-term
counts, and one sparse product gives every query's scores over the documents that match. A
repeated query term counts as many times as it appears (like Anserini's bag-of-words queries).

Result semantics
----------------
* Only documents that match at least one query term (score > 0) are returned, as in Lucene; a ranking
  can therefore be shorter than ``k``. ``k`` larger than the corpus is allowed. For ``method="bm25l"``
  and ``"bm25+"`` every document has a positive score, so up to ``k`` documents are returned.
* A query whose text has no index terms after analysis (only stopwords or punctuation) returns an
  empty Ranking and logs a warning; a query whose terms are all absent from the corpus returns an
  empty Ranking.
* Ties are broken by document id (ascending), also at the k-th position, so results do not depend on
  batch size, thread count or corpus order.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from attnsift.concurrency import resolve_threads
from attnsift.config import resolve_config
from attnsift.errors import IndexCorruptedError
from attnsift.indexes.bm25_index import BM25IndexData, PackedIds, load_bm25_index, rank_ids, save_bm25_index
from attnsift.indexes.corpus import corpus_fields
from attnsift.retrieval.analysis import ANALYZER_VERSION, Analyzer
from attnsift.retrieval.bm25_search import query_chunks, score_chunk
from attnsift.retrieval.config import BM25_METHODS, NONOCCURRENCE_METHODS, BM25Config, check_bm25_params
from attnsift.types import Document, Query, Ranking, Run, as_query, check_k

logger = logging.getLogger(__name__)

METHODS = BM25_METHODS
__all__ = ["BM25Config", "BM25Retriever", "METHODS", "check_bm25_params"]

#: Documents per part of a build (the build holds one part's postings at a time).
DEFAULT_CHUNK_SIZE = 100_000
#: Postings files larger than this are memory-mapped by load(mmap=None).
MMAP_AUTO_BYTES = 512 << 20


class BM25Retriever:
    """BM25 over a corpus, indexed in memory with bm25s; saved and loaded as a checksummed folder.

    Parameters
    ----------
    config : BM25Config, optional
        k1, b, method, stemmer, stopwords, store_text, delta (see
        :class:`~attnsift.retrieval.config.BM25Config`; defaults reproduce Anserini's BEIR BM25).
    **options
        The same fields as keywords (strings allowed: ``k1="1.2"``), instead of ``config``.

    Examples
    --------
    >>> docs = [Document("d1", "BM25 ranks documents"), Document("d2", "attention reranks them")]
    >>> BM25Retriever.from_corpus(docs).retrieve("ranking documents", k=1).doc_ids
    ['d1']
    """

    name = "bm25"

    def __init__(self, *, config: BM25Config | None = None, **options: Any) -> None:
        self.config = resolve_config(BM25Config, config, options, "BM25Retriever")
        self.analyzer = Analyzer(stemmer=self.config.stemmer, stopwords=self.config.stopwords)
        self._index: BM25IndexData | None = None
        self._vocab_ids: dict[str, int] = {}
        self._matrix: Any = None  # scipy.sparse.csr_matrix [V, N]
        self._id_rank: np.ndarray | None = None
        self._source: tuple[Path, Mapping[str, Any], bool] | None = None  # (folder, manifest, verify) if loaded
        self._blockmax: Any = None  # bm25_blockmax.BlockMax, made on first use

    # ------------------------------------------------------------------ properties
    # the scoring parameters, read from the config (one source of truth)
    k1 = property(lambda self: self.config.k1, doc="Term-frequency saturation.")
    b = property(lambda self: self.config.b, doc="Length normalisation.")
    delta = property(lambda self: self.config.effective_delta, doc="BM25L / BM25+ delta (0.5 unless set).")
    method = property(lambda self: self.config.method, doc="bm25s scoring variant.")
    store_text = property(lambda self: self.config.store_text, doc="Whether documents are kept.")

    @property
    def stemmer(self) -> str | None:
        return self.analyzer.stemmer_name

    @property
    def stopwords(self) -> str | None:
        return self.analyzer.stopwords_name

    @property
    def params(self) -> dict[str, Any]:
        """Scoring and analysis parameters, as recorded in a saved index's manifest."""
        return {
            "k1": self.k1,
            "b": self.b,
            "delta": self.delta,
            "method": self.method,
            "stemmer": self.stemmer,
            "stopwords": self.stopwords,
            "analyzer_version": ANALYZER_VERSION,
        }

    @property
    def is_indexed(self) -> bool:
        return self._index is not None

    @property
    def num_docs(self) -> int:
        """Number of indexed documents."""
        return len(self._require_index().doc_ids)

    @property
    def doc_ids(self) -> list[str]:
        """Indexed document ids, in index order."""
        return list(self._require_index().doc_ids)

    @property
    def documents(self) -> Mapping[str, Document]:
        """Read-only ``doc_id -> Document`` (only when built with ``store_text=True``)."""
        index = self._require_index()
        if index.documents is None:
            raise ValueError(
                "this BM25 index was built with store_text=False, so it holds no document texts; "
                "rebuild with store_text=True or attach texts with Ranking.with_documents(corpus)"
            )
        return MappingProxyType(index.documents)

    def __repr__(self) -> str:
        n = len(self._index.doc_ids) if self._index is not None else "not indexed"
        return (
            f"BM25Retriever(k1={self.k1}, b={self.b}, method={self.method!r}, stemmer={self.stemmer!r}, "
            f"stopwords={self.stopwords!r}, docs={n})"
        )

    def _require_index(self) -> BM25IndexData:
        if self._index is None:
            raise ValueError(
                "the BM25 retriever has no index yet: call .index(documents), BM25Retriever.from_corpus(...) "
                "or BM25Retriever.load(path) first"
            )
        return self._index

    # ------------------------------------------------------------------ indexing
    @classmethod
    def from_corpus(cls, corpus: Iterable[Document | str] | Any, progress: bool | None = None, *,
                    config: BM25Config | None = None, **options: Any) -> "BM25Retriever":
        """Build a retriever with ``config`` or ``options`` (see the class) and index ``corpus``
        (anything :func:`attnsift.documents.as_documents` accepts: Documents, plain strings, mappings,
        a Corpus)."""
        return cls(config=config, **options).index(corpus, progress=progress)

    def index(self, documents: Iterable[Document | str] | Any, progress: bool | None = None, *,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> "BM25Retriever":
        """Index ``documents`` (their ``contents``: title + text), replacing any previous index.

        Parameters
        ----------
        documents : iterable of Document or str, a mapping ``id -> Document`` or ``id -> text``, or a Corpus
            The corpus (see :func:`attnsift.documents.as_documents`; plain strings get ids ``d0, d1, ...``).
            Ids must be unique. Streamed: a generator is read once. A Corpus on disk is not copied:
            with ``store_text`` candidates read their texts from it when needed.
        progress : bool, optional
            Progress on stderr (analysis, then index building); None: the process setting
            (:mod:`attnsift.progress`).
        chunk_size : int
            Documents analysed per part (in memory; :meth:`build` writes parts to disk).

        Returns
        -------
        BM25Retriever
            ``self``, for chaining.

        Raises
        ------
        ValueError
            Empty corpus, or a duplicate document id (named in the message).
        TypeError
            An item that is not a Document, a string or a mapping.
        """
        from attnsift import progress as prog
        from attnsift.documents import stream_documents
        from attnsift.indexes.bm25_build import PostingsBuilder

        doc_ids: list[str] = []
        stored: dict[str, Document] = {}
        # a corpus on disk (a Corpus over a file) keeps its texts: candidates read them from it on demand
        on_disk = callable(getattr(documents, "iter_documents", None)) and getattr(documents, "source", "memory") != "memory"
        builder = PostingsBuilder(k1=self.k1, b=self.b, delta=self.delta, method=self.method, chunk_size=chunk_size)
        analyze = self.analyzer
        total = len(documents) if hasattr(documents, "__len__") and not isinstance(documents, (str, bytes)) else None
        for doc in prog.bar(stream_documents(documents), desc="BM25 analyze", total=total, unit="doc",
                            progress=progress):
            doc_ids.append(doc.id)
            if self.store_text and not on_disk:
                stored[doc.id] = doc
            builder.add(analyze(doc.contents))
        self._check_built(len(doc_ids), builder)
        with prog.step(f"BM25 index ({len(doc_ids)} documents)", progress=progress):
            m = builder.finish()
        index = BM25IndexData(params=self.params, vocab=m["vocab"], doc_ids=doc_ids, data=m["data"],
                              indices=m["indices"], indptr=m["indptr"], nonoccurrence=m["nonoccurrence"],
                              documents=(documents if on_disk else stored) if self.store_text else None,
                              term_max=m["term_max"])
        self._set_index(index)
        logger.info("indexed %d documents, %d terms, %d postings", len(doc_ids), len(index.vocab), len(index.data))
        return self

    def _check_built(self, n_docs: int, builder: Any) -> None:
        if not n_docs:
            raise ValueError("cannot index an empty corpus: give at least one Document")
        if not builder.vocab:
            raise ValueError(
                f"none of the {n_docs} documents has an index term after analysis "
                f"({self.analyzer!r}); check that the documents have text"
            )

    @classmethod
    def build(cls, documents: Iterable[Document | str] | Any, path: str | Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
              overwrite: bool = False, corpus_fingerprint: str | None = None, dataset: str | None = None,
              progress: bool | None = None, config: BM25Config | None = None, **options: Any) -> "BM25Retriever":
        """Index a corpus of any size straight to the folder ``path``, then load it memory-mapped.

        The streaming build: documents are analysed ``chunk_size`` at a time, each chunk's postings
        written as a checksummed part, and the parts merged into the index files on disk; texts (with
        ``store_text``) go straight to ``documents.jsonl``. Memory stays one part plus the vocabulary
        and one number per document, whatever the corpus size. The index equals what
        ``from_corpus(documents).save(path)`` writes, file for file.

        Parameters
        ----------
        documents : iterable of Document or str, mapping, or a Corpus (streamed from its store)
        path : str or Path
            The index folder (written atomically; parts live in it until the merge).
        chunk_size : int
            Documents per part.
        overwrite : bool
            Replace an existing folder.
        corpus_fingerprint, dataset : str, optional
            Recorded in the manifest (see :meth:`save`).
        progress : bool, optional
            Progress on stderr (None: the process setting).
        config, **options
            As for the class.

        Returns
        -------
        BM25Retriever
            The saved index, loaded with ``mmap=True``.

        Raises
        ------
        ValueError
            Empty corpus, a duplicate document id, a bad chunk size or option.
        """
        import json

        from attnsift import progress as prog
        from attnsift.documents import stream_documents
        from attnsift.indexes.bm25_build import PostingsBuilder
        from attnsift.indexes.bm25_index import LineWriter, document_to_json, id_ranks, write_index_manifest
        from attnsift.io import atomic_dir
        from attnsift.retrieval.bm25_blockmax import build_sidecar

        self = cls(config=config, **options)
        corpus = corpus_fields(corpus_fingerprint, dataset)
        PostingsBuilder(k1=self.k1, b=self.b, delta=self.delta, method=self.method, chunk_size=chunk_size)  # checks
        path = Path(path)
        total = len(documents) if hasattr(documents, "__len__") and not isinstance(documents, (str, bytes)) else None
        with atomic_dir(path, overwrite=overwrite) as tmp:
            builder = PostingsBuilder(k1=self.k1, b=self.b, delta=self.delta, method=self.method,
                                      chunk_size=chunk_size, parts_dir=tmp / "parts")
            ids = LineWriter(tmp / "doc_ids.txt")
            texts = LineWriter(tmp / "documents.jsonl") if self.store_text else None
            analyze = self.analyzer
            for doc in prog.bar(stream_documents(documents), desc="BM25 analyze", total=total, unit="doc",
                                progress=progress):
                ids.write(doc.id)
                if texts is not None:
                    texts.write(json.dumps(document_to_json(doc), ensure_ascii=False))
                builder.add(analyze(doc.contents))
            n = len(ids.close(tmp / "doc_ids.offsets.npy")) - 1
            if texts is not None:
                texts.close(tmp / "documents.offsets.npy")
            self._check_built(n, builder)
            np.save(tmp / "id_rank.npy", id_ranks(tmp / "doc_ids.txt", n), allow_pickle=False)  # duplicates: ValueError
            with prog.step(f"BM25 merge ({n} documents, {builder.parts_written + 1} parts)", progress=progress):
                m = builder.finish(out_dir=tmp)
            (tmp / "parts").rmdir()
            np.save(tmp / "indptr.npy", m["indptr"], allow_pickle=False)
            np.save(tmp / "term_max.npy", m["term_max"], allow_pickle=False)
            if m["nonoccurrence"] is not None:
                np.save(tmp / "nonoccurrence.npy", m["nonoccurrence"], allow_pickle=False)
            (tmp / "vocab.json").write_text(json.dumps(m["vocab"], ensure_ascii=False), encoding="utf-8")
            del m
            write_index_manifest(tmp, self.params, n, len(builder.vocab), self.store_text, corpus=corpus)
            built, manifest = load_bm25_index(tmp, verify=False, mmap=True)
            build_sidecar(tmp, built, manifest)  # block maxima beside the index (checked by their own key)
            del built
        out = cls.load(path, verify=False, mmap=True)
        out.corpus_fingerprint, out.dataset = corpus["corpus"]["fingerprint"], corpus["corpus"]["dataset"]
        logger.info("built %s: %d documents in %d parts", path, n, builder.parts_written)
        return out

    def _set_index(self, index: BM25IndexData) -> None:
        import scipy.sparse as sp

        index.check(deep=not isinstance(index.data, np.memmap))
        self._index, self._blockmax, self._source = index, None, None
        self._vocab_ids = {t: i for i, t in enumerate(index.vocab)}
        # bm25s's CSC (N x V) read as CSR (V x N): row t holds term t's postings. int32 offsets when
        # they fit, so scipy keeps the (possibly memory-mapped) int32 indices instead of an int64 copy.
        indptr = index.indptr.astype(np.int32) if len(index.data) < 2**31 - 1 else index.indptr
        self._matrix = sp.csr_matrix((index.data, index.indices, indptr), shape=(len(index.vocab), len(index.doc_ids)),
                                     copy=False)
        self._id_rank = np.asarray(index.id_rank) if index.id_rank is not None else rank_ids(index.doc_ids)
        self._id_array = None if isinstance(index.doc_ids, PackedIds) else np.asarray(list(index.doc_ids), dtype=object)

    # ------------------------------------------------------------------ retrieval
    def query_terms(self, text: str) -> list[str]:
        """Index terms of a query text (analysis only, unknown terms included)."""
        return self.analyzer(text)

    def retrieve(self, query: Query | str, k: int = 100) -> Ranking:
        """Top-``k`` documents for one query (a :class:`Query` or a string, given id ``"q0"``).

        Returns
        -------
        Ranking
            At most ``k`` candidates, best first; they carry their Document when texts are stored.
        """
        query = as_query(query)
        return self.retrieve_batch([query], k=k)[query.id]

    def retrieve_batch(
        self, queries: Sequence[Query], k: int = 100, progress: bool | None = False, n_threads: int = 1
    ) -> Run:
        """Top-``k`` documents for each query, as a :class:`Run` named ``"bm25"``.

        Parameters
        ----------
        queries : sequence of Query
            Unique query ids.
        k : int
            Cut-off per query (positive; larger than the corpus is fine).
        progress : bool
            Progress bar over query chunks.
        n_threads : int
            Threads scoring query chunks in parallel (1 = in this thread; -1 = one per CPU).

        Returns
        -------
        Run
            One Ranking per query, in the order given.
        """
        k = check_k(k)
        index = self._require_index()
        if isinstance(queries, (Query, str)):
            raise TypeError("retrieve_batch() takes a sequence of Query objects; use retrieve() for one query")
        queries = list(queries)
        for q in queries:
            if not isinstance(q, Query):
                raise TypeError(f"retrieve_batch() takes Query objects, got {type(q).__name__}: {q!r}")
        n_threads = resolve_threads(n_threads)

        # with threads, chunks small enough that every thread gets several (results do not depend on it)
        chunks = query_chunks(self, queries, None if n_threads == 1 else max(64, -(-len(queries) // (4 * n_threads))))
        if n_threads > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                parts = list(pool.map(lambda c: score_chunk(self, c, k, index), chunks))
        else:
            from attnsift import progress as prog

            parts = [score_chunk(self, c, k, index)
                     for c in prog.bar(chunks, desc="BM25 retrieve", unit="chunk", progress=progress)]
        return Run((r for part in parts for r in part), name=self.name)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True, *, corpus_fingerprint: str | None = None,
             dataset: str | None = None) -> Path:
        """Write the index to the folder ``path`` atomically (temporary folder, then swap).

        The manifest records the engine, k1, b, delta, method, stemmer, stopwords, the document count
        and a sha256 per file; the block maxima of the frequent terms are written beside them
        (:mod:`attnsift.retrieval.bm25_blockmax`). Returns ``path``.

        ``corpus_fingerprint`` (``Corpus.fingerprint()``) and ``dataset`` are recorded in the manifest,
        for :func:`attnsift.indexes.corpus.check_index_corpus`.
        """
        # build_index records the corpus it read on the retriever, so index.save(path) keeps it
        corpus = corpus_fields(corpus_fingerprint or getattr(self, "corpus_fingerprint", None),
                               dataset or getattr(self, "dataset", None))
        from attnsift.io import read_manifest
        from attnsift.retrieval.bm25_blockmax import build_sidecar

        out = save_bm25_index(self._require_index(), path, overwrite=overwrite, engine="bm25s", corpus=corpus)
        build_sidecar(out, self._index, read_manifest(out, "bm25", verify=False))  # block maxima beside it
        return out

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, *, mmap: bool | None = None, **options: Any) -> "BM25Retriever":
        """Load an index written by :meth:`save` or :meth:`build`.

        Parameters
        ----------
        path : str or Path
            The index folder.
        verify : bool
            Check every file against the manifest's checksums first.
        mmap : bool, optional
            Memory-map the postings and read document ids and texts from their files on demand
            (resident memory stays small for a corpus of millions); None: when the postings exceed
            512 MiB.
        **options
            None accepted: an index keeps the parameters it was built with (the message says so).

        Raises
        ------
        ValueError
            Options given (they would be silently ignored).
        IndexCorruptedError
            Missing, modified or mismatched files, or an index of another kind or analyzer version;
            the message says to rebuild it.
        """
        if options:
            raise ValueError(
                f"a saved BM25 index keeps the parameters it was built with; got options {', '.join(sorted(options))}: "
                "rebuild the index with them (attnsift index --option ...) or drop them"
            )
        if mmap is None:
            data = Path(path) / "data.npy"
            mmap = data.is_file() and data.stat().st_size > MMAP_AUTO_BYTES
        index, manifest = load_bm25_index(path, verify=verify, mmap=bool(mmap))
        p = index.params
        if p["analyzer_version"] != ANALYZER_VERSION:
            raise IndexCorruptedError(
                f"{path} was built with analyzer version {p['analyzer_version']}, this attnsift uses "
                f"{ANALYZER_VERSION}; queries would be analyzed differently, so rebuild the index"
            )
        try:
            config = BM25Config(
                k1=p["k1"],
                b=p["b"],
                method=p["method"],
                stemmer=p["stemmer"],
                stopwords=p["stopwords"],
                store_text=index.documents is not None,
                # every manifest records delta (0.5 by default); only BM25L / BM25+ use it
                delta=p["delta"] if p["method"] in NONOCCURRENCE_METHODS else None,
            )
            retriever = cls(config=config)
        except (TypeError, ValueError) as exc:
            raise IndexCorruptedError(f"{path}/manifest.json has invalid parameters ({exc}); rebuild the index") from exc
        retriever._set_index(index)
        retriever._source = (Path(path), manifest, verify)
        return retriever
