"""Optional BM25 through Lucene (pyserini / Anserini): the reference that attnsift's BM25 reproduces.

Needs the ``lucene`` extra (``pip install 'attnsift[lucene]'``: pyserini < 0.35 and faiss-cpu) and a
Java 11+ runtime on PATH or in ``JAVA_HOME``. pyserini imports an OpenAI client at import time and
wants ``OPENAI_API_KEY`` set; this module sets it to a placeholder when it is unset (it is never used).

The interface is :class:`attnsift.retrieval.bm25.BM25Retriever`'s. The Lucene index lives in a
temporary folder until :meth:`LuceneBM25Retriever.save` copies it into an attnsift index folder
(kind ``"bm25-lucene"``, with a checksummed manifest).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from attnsift.errors import IndexCorruptedError, require
from attnsift.io import atomic_dir, read_manifest, write_manifest
from attnsift.config import resolve_config
from attnsift.indexes.corpus import corpus_fields
from attnsift.retrieval.config import BM25Config
from attnsift.types import Candidate, Document, Query, Ranking, Run, as_query, check_k

logger = logging.getLogger(__name__)

KIND = "bm25-lucene"
_STEMMERS = ("porter", "krovetz", None)


def _pyserini() -> Any:
    """Import pyserini's Lucene searcher lazily (it starts a JVM)."""
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-attnsift")
    if not os.environ.get("JAVA_HOME"):
        java = shutil.which("java")
        if java:
            # pyjnius locates libjvm through JAVA_HOME; derive it from the java on PATH.
            os.environ["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    require("faiss", "lucene", "pyserini (it imports faiss)")
    return require("pyserini.search.lucene", "lucene", "the Lucene BM25 backend")


class LuceneBM25Retriever:
    """BM25 with Lucene via pyserini; same interface as :class:`~attnsift.retrieval.bm25.BM25Retriever`.

    Parameters
    ----------
    config : BM25Config, optional
        As for :class:`~attnsift.retrieval.bm25.BM25Retriever`, within what Lucene supports:
        ``method="lucene"``, ``stemmer`` "porter" / "krovetz" / None, ``stopwords`` "en" / None, no
        ``delta``.
    **options
        The same fields as keywords, instead of ``config``.
    """

    name = "bm25-lucene"

    def __init__(self, *, config: BM25Config | None = None, **options: Any) -> None:
        cfg = resolve_config(BM25Config, config, options, "LuceneBM25Retriever")
        if cfg.method != "lucene":
            raise ValueError(f"the Lucene backend scores with Lucene's BM25 only (method='lucene'), got {cfg.method!r}")
        if cfg.stemmer not in _STEMMERS:
            raise ValueError(f"stemmer must be one of {list(_STEMMERS)} for Lucene, got {cfg.stemmer!r}")
        if cfg.stopwords not in ("en", None):
            raise ValueError(f"stopwords must be 'en' or None for Lucene, got {cfg.stopwords!r}")
        self.config = cfg
        self.k1, self.b, self.method = cfg.k1, cfg.b, cfg.method
        self.stemmer, self.stopwords, self.store_text = cfg.stemmer, cfg.stopwords, cfg.store_text
        self._dir: Path | None = None
        self._doc_ids: list[str] = []
        self._documents: dict[str, Document] | None = None
        self._searcher: Any = None

    # ------------------------------------------------------------------ properties
    @property
    def params(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stemmer": self.stemmer, "stopwords": self.stopwords}

    @property
    def num_docs(self) -> int:
        self._require_index()
        return len(self._doc_ids)

    @property
    def documents(self) -> Mapping[str, Document]:
        self._require_index()
        if self._documents is None:
            raise ValueError("this Lucene index was built with store_text=False, so it holds no document texts")
        return MappingProxyType(self._documents)

    def _require_index(self) -> None:
        if self._searcher is None:
            raise ValueError("no Lucene index yet: call .index(documents), from_corpus(...) or load(path) first")

    def _lucene_args(self) -> list[str]:
        args = ["-stemmer", self.stemmer or "none"]
        if self.stopwords is None:
            args.append("-keepStopwords")
        return args

    def _open(self, directory: Path) -> None:
        lucene = _pyserini()
        searcher = lucene.LuceneSearcher(str(directory))
        if (self.stemmer, self.stopwords) != ("porter", "en"):
            from pyserini.analysis import get_lucene_analyzer

            searcher.set_analyzer(get_lucene_analyzer(stemmer=self.stemmer or "none", stopwords=self.stopwords is not None))
        searcher.set_bm25(self.k1, self.b)
        self._searcher = searcher

    # ------------------------------------------------------------------ indexing
    @classmethod
    def from_corpus(cls, corpus: Iterable[Document | str], progress: bool | None = False, *, config: BM25Config | None = None,
                    **options: Any) -> "LuceneBM25Retriever":
        """Build a retriever with ``config`` or ``options`` and index ``corpus``."""
        return cls(config=config, **options).index(corpus, progress=progress)

    def index(self, documents: Iterable[Document | str], progress: bool | None = False,
              threads: int = 1) -> "LuceneBM25Retriever":
        """Index ``documents`` (title + text as one ``contents`` field, like pyserini's BEIR flat indexes);
        anything :func:`attnsift.documents.as_documents` accepts."""
        _pyserini()
        from pyserini.index.lucene import LuceneIndexer

        from attnsift.documents import stream_documents

        docs: list[Document] = list(stream_documents(documents))  # plain strings, mappings, a Corpus too
        if not docs:
            raise ValueError("cannot index an empty corpus: give at least one Document")
        directory = Path(tempfile.mkdtemp(prefix="attnsift-lucene-"))
        weakref.finalize(self, shutil.rmtree, str(directory), True)
        indexer = LuceneIndexer(args=["-index", str(directory), *self._lucene_args()], threads=threads)
        batch = 1000
        for i in range(0, len(docs), batch):
            indexer.add_batch_raw([json.dumps({"id": d.id, "contents": d.contents}) for d in docs[i : i + batch]])
        indexer.close()
        self._dir = directory
        self._doc_ids = [d.id for d in docs]
        self._documents = {d.id: d for d in docs} if self.store_text else None
        self._open(directory)
        return self

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, query: Query | str, k: int = 100) -> Ranking:
        query = as_query(query)
        return self.retrieve_batch([query], k=k)[query.id]

    def retrieve_batch(self, queries: Sequence[Query], k: int = 100, progress: bool = False, n_threads: int = 1) -> Run:
        """Top-``k`` per query via pyserini's ``batch_search`` (``n_threads`` Java threads)."""
        k = check_k(k)
        self._require_index()
        queries = list(queries)
        for q in queries:
            if not isinstance(q, Query):
                raise TypeError(f"retrieve_batch() takes Query objects, got {type(q).__name__}")
        k_eff = min(k, len(self._doc_ids))
        hits = self._searcher.batch_search(
            [q.text for q in queries], [q.id for q in queries], k=k_eff, threads=max(1, n_threads)
        )
        rankings = []
        for q in queries:
            cands = []
            for h in hits.get(q.id, []):
                doc = self._documents.get(h.docid) if self._documents is not None else None
                cands.append(Candidate(h.docid, float(h.score), doc))
            if not cands:
                logger.warning("query %r matched no document in the Lucene index", q.id)
            rankings.append(Ranking(q, tuple(cands)))
        return Run(rankings, name=self.name)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True, *, corpus_fingerprint: str | None = None,
             dataset: str | None = None) -> Path:
        """Copy the Lucene index and the documents into ``path`` atomically, with a manifest.
        ``corpus_fingerprint`` (``Corpus.fingerprint()``) and ``dataset`` are recorded in the manifest,
        for :func:`attnsift.indexes.corpus.check_index_corpus`.
        """
        corpus = corpus_fields(corpus_fingerprint, dataset)
        self._require_index()
        assert self._dir is not None
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            shutil.copytree(self._dir, tmp / "lucene")
            (tmp / "doc_ids.json").write_text(json.dumps(self._doc_ids, ensure_ascii=False), encoding="utf-8")
            if self._documents is not None:
                with open(tmp / "documents.jsonl", "w", encoding="utf-8") as fh:
                    for did in self._doc_ids:
                        d = self._documents[did]
                        fh.write(json.dumps({"id": d.id, "title": d.title, "text": d.text, "metadata": dict(d.metadata)}) + "\n")
            write_manifest(
                tmp, KIND, engine="pyserini", **self.params, num_docs=len(self._doc_ids), store_text=self._documents is not None,
                **corpus,
            )
        return path

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "LuceneBM25Retriever":
        path = Path(path)
        manifest = read_manifest(path, KIND, verify=verify)
        try:
            r = cls(
                k1=manifest["k1"], b=manifest["b"], stemmer=manifest["stemmer"], stopwords=manifest["stopwords"],
                store_text=bool(manifest.get("store_text")),
            )
            r._doc_ids = json.loads((path / "doc_ids.json").read_text(encoding="utf-8"))
            if r.store_text:
                r._documents = {}
                with open(path / "documents.jsonl", encoding="utf-8") as fh:
                    for line in fh:
                        d = json.loads(line)
                        r._documents[d["id"]] = Document(d["id"], d["text"], d.get("title"), d.get("metadata") or {})
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise IndexCorruptedError(f"{path} is not a readable Lucene BM25 index ({exc}); rebuild it") from exc
        r._dir = path / "lucene"
        r._open(r._dir)
        return r
