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

from attnsift.config import resolve_config
from attnsift.errors import IndexCorruptedError
from attnsift.indexes.bm25_index import BM25IndexData, load_bm25_index, save_bm25_index
from attnsift.indexes.corpus import corpus_fields
from attnsift.retrieval.analysis import ANALYZER_VERSION, Analyzer
from attnsift.retrieval.config import BM25_METHODS, NONOCCURRENCE_METHODS, BM25Config, check_bm25_params
from attnsift.types import Candidate, Document, Query, Ranking, Run, as_query, check_k

logger = logging.getLogger(__name__)

METHODS = BM25_METHODS
__all__ = ["BM25Config", "BM25Retriever", "METHODS", "check_bm25_params"]

# Queries scored per sparse product: bounds the (chunk x num_docs) intermediate for large corpora.
_QUERY_CHUNK = 256


def _topk_indices(scores: np.ndarray, docs: np.ndarray, k: int, id_rank: np.ndarray) -> np.ndarray:
    """Positions of the ``k`` best entries of ``scores``; ties at the cut broken by doc-id rank.

    Parameters
    ----------
    scores : np.ndarray
        ``[n]`` scores.
    docs : np.ndarray
        ``[n]`` document indices of those scores.
    k : int
        How many to keep.
    id_rank : np.ndarray
        ``[num_docs]`` position of each document's id in sorted order.
    """
    n = scores.shape[0]
    if n <= k:
        return np.arange(n)
    part = np.argpartition(-scores, k - 1)[:k]
    threshold = scores[part].min()
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)
    need = k - above.shape[0]
    if tied.shape[0] > need:
        tied = tied[np.argsort(id_rank[docs[tied]], kind="stable")[:need]]
    return np.concatenate([above, tied])


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

    def index(self, documents: Iterable[Document | str] | Any, progress: bool | None = None) -> "BM25Retriever":
        """Index ``documents`` (their ``contents``: title + text), replacing any previous index.

        Parameters
        ----------
        documents : iterable of Document or str, a mapping ``id -> Document`` or ``id -> text``, or a Corpus
            The corpus (see :func:`attnsift.documents.as_documents`; plain strings get ids ``d0, d1, ...``).
            Ids must be unique. Streamed: a generator is read once.
        progress : bool, optional
            Progress on stderr (analysis, then index building); None: the process setting
            (:mod:`attnsift.progress`).

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
        import bm25s

        from attnsift import progress as prog
        from attnsift.documents import stream_documents

        doc_ids: list[str] = []
        stored: dict[str, Document] = {}
        vocab: dict[str, int] = {}
        corpus_ids: list[list[int]] = []
        analyze = self.analyzer
        total = len(documents) if hasattr(documents, "__len__") and not isinstance(documents, (str, bytes)) else None
        for doc in prog.bar(stream_documents(documents), desc="BM25 analyze", total=total, unit="doc",
                            progress=progress):
            doc_ids.append(doc.id)
            if self.store_text:
                stored[doc.id] = doc
            # setdefault assigns ids in first-seen order, so vocab ids are reproducible for a corpus order.
            corpus_ids.append([vocab.setdefault(t, len(vocab)) for t in analyze(doc.contents)])
        if not doc_ids:
            raise ValueError("cannot index an empty corpus: give at least one Document")
        if not vocab:
            raise ValueError(
                f"none of the {len(doc_ids)} documents has an index term after analysis "
                f"({self.analyzer!r}); check that the documents have text"
            )

        engine = bm25s.BM25(k1=self.k1, b=self.b, delta=self.delta, method=self.method)
        with prog.step(f"BM25 index ({len(doc_ids)} documents)", progress=progress):
            # bm25s's own bars stay off: one line of ours instead
            scores = engine.build_index_from_ids(
                unique_token_ids=list(range(len(vocab))), corpus_token_ids=corpus_ids, show_progress=False
            )
        nonocc = getattr(engine, "nonoccurrence_array", None)
        index = BM25IndexData(
            params=self.params,
            vocab=list(vocab),
            doc_ids=doc_ids,
            data=np.asarray(scores["data"], dtype=np.float32),
            indices=np.asarray(scores["indices"], dtype=np.int32),
            indptr=np.asarray(scores["indptr"], dtype=np.int64),
            nonoccurrence=None if nonocc is None else np.asarray(nonocc, dtype=np.float32),
            documents=stored if self.store_text else None,
        )
        self._set_index(index)
        logger.info("indexed %d documents, %d terms, %d postings", len(doc_ids), len(vocab), len(index.data))
        return self

    def _set_index(self, index: BM25IndexData) -> None:
        import scipy.sparse as sp

        index.check()
        self._index = index
        self._vocab_ids = {t: i for i, t in enumerate(index.vocab)}
        # bm25s's CSC (N x V) read as CSR (V x N): row t holds term t's postings.
        self._matrix = sp.csr_matrix(
            (index.data, index.indices, index.indptr), shape=(len(index.vocab), len(index.doc_ids))
        )
        self._id_rank = np.argsort(np.argsort(np.asarray(index.doc_ids, dtype=object), kind="stable"), kind="stable")

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
        if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads == 0 or n_threads < -1:
            raise ValueError(f"n_threads must be a positive integer or -1 (all CPUs), got {n_threads!r}")
        if n_threads == -1:
            import os

            n_threads = os.cpu_count() or 1

        chunks = [queries[i : i + _QUERY_CHUNK] for i in range(0, len(queries), _QUERY_CHUNK)]
        if n_threads > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                parts = list(pool.map(lambda c: self._score_chunk(c, k, index), chunks))
        else:
            from attnsift import progress as prog

            parts = [self._score_chunk(c, k, index)
                     for c in prog.bar(chunks, desc="BM25 retrieve", unit="chunk", progress=progress)]
        return Run((r for part in parts for r in part), name=self.name)

    def _score_chunk(self, queries: list[Query], k: int, index: BM25IndexData) -> list[Ranking]:
        import scipy.sparse as sp

        rows: list[int] = []
        cols: list[int] = []
        empty: set[int] = set()
        for qi, q in enumerate(queries):
            terms = self.analyzer(q.text)
            if not terms:
                logger.warning(
                    "query %r has no index terms after analysis (%r); returning an empty ranking", q.id, q.text
                )
                empty.add(qi)
                continue
            for t in terms:
                tid = self._vocab_ids.get(t)
                if tid is not None:
                    rows.append(qi)
                    cols.append(tid)
        n_docs = len(index.doc_ids)
        qmat = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(len(queries), len(index.vocab)),
        )  # [Q, V] query-term counts (duplicates summed)
        qmat.sum_duplicates()
        qmat.sort_indices()
        scores = (qmat @ self._matrix).tocsr()  # [Q, N] sparse: only matching documents
        scores.sort_indices()
        out = []
        for qi, q in enumerate(queries):
            if qi in empty:
                out.append(Ranking(q, ()))
                continue
            lo, hi = scores.indptr[qi], scores.indptr[qi + 1]
            docs = scores.indices[lo:hi]
            vals = scores.data[lo:hi]
            if index.nonoccurrence is not None:
                # BM25L / BM25+: a document lacking a query term still scores nonoccurrence[t] for it.
                row_terms = qmat.indices[qmat.indptr[qi] : qmat.indptr[qi + 1]]
                if row_terms.size == 0:
                    out.append(Ranking(q, ()))
                    continue
                counts = qmat.data[qmat.indptr[qi] : qmat.indptr[qi + 1]]
                dense = np.full(n_docs, np.float32((index.nonoccurrence[row_terms] * counts).sum()), dtype=np.float32)
                dense[docs] += vals
                docs, vals = np.arange(n_docs), dense
            else:
                keep = vals > 0
                docs, vals = docs[keep], vals[keep]
            sel = _topk_indices(vals, docs, k, self._id_rank)
            cands = []
            for j in sel:
                did = index.doc_ids[docs[j]]
                doc = index.documents[did] if index.documents is not None else None
                cands.append(Candidate(did, float(vals[j]), doc))
            out.append(Ranking(q, tuple(cands)))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True, *, corpus_fingerprint: str | None = None,
             dataset: str | None = None) -> Path:
        """Write the index to the folder ``path`` atomically (temporary folder, then swap).

        The manifest records the engine, k1, b, delta, method, stemmer, stopwords, the document count
        and a sha256 per file. Returns ``path``.

        ``corpus_fingerprint`` (``Corpus.fingerprint()``) and ``dataset`` are recorded in the manifest,
        for :func:`attnsift.indexes.corpus.check_index_corpus`.
        """
        # build_index records the corpus it read on the retriever, so index.save(path) keeps it
        corpus = corpus_fields(corpus_fingerprint or getattr(self, "corpus_fingerprint", None),
                               dataset or getattr(self, "dataset", None))
        return save_bm25_index(self._require_index(), path, overwrite=overwrite, engine="bm25s", corpus=corpus)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, **options: Any) -> "BM25Retriever":
        """Load an index written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
            The index folder.
        verify : bool
            Check every file against the manifest's checksums first.
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
        index, manifest = load_bm25_index(path, verify=verify)
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
        return retriever
