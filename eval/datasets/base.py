"""The data set types and the two extension points: document stores and data set loaders.

- :class:`DocumentStore`: where a :class:`Corpus` gets its documents (a JSONL file, an ir_datasets
  docs store, a list in memory).
- :class:`DatasetLoader`: a folder format on disk (BEIR layout is :mod:`.beir`). A new format is one
  new module that defines a loader and calls :func:`register_loader`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable

from attnsift.errors import DataFormatError, DatasetError
from attnsift.eval.datasets.jsonl import JsonlStore
from attnsift.fingerprint import combine, documents_fingerprint, file_fingerprint
from attnsift.types import Document, Query, Run, check_k

__all__ = ["DATA_ENV", "OFFLINE_ENV", "DocumentStore", "MemoryStore", "Corpus", "Dataset", "DatasetInfo",
           "DatasetLoader", "register_loader", "registered_loaders", "loader_for"]

DATA_ENV = "ATTNSIFT_DATA"
OFFLINE_ENV = "ATTNSIFT_OFFLINE"


@runtime_checkable
class DocumentStore(Protocol):
    """The documents behind a :class:`Corpus`.

    Attributes
    ----------
    source : str
        ``"local:/path"``, ``"ir_datasets:<id>"`` or ``"memory"``.
    known_len : int or None
        The number of documents when known without work (shown by ``repr``), else None.
    """

    source: str
    known_len: int | None

    def iter_documents(self) -> Iterator[Document]:
        """Every document, in the store's order."""

    def get(self, doc_id: str) -> Document | None:
        """One document, or None when the id is not in the store."""

    def count(self) -> int:
        """The number of documents."""

    def subset(self, wanted: set[str]) -> dict[str, Document]:
        """The documents whose ids are in ``wanted`` (store order; absent ids left out)."""

    # Optional: ``fingerprint() -> str``, a content hash of the documents that is cheaper than reading
    # them all (a file's hash, cached by size and mtime). Without it, Corpus.fingerprint hashes the documents.


class MemoryStore:
    """Documents held in a dict (a :class:`DocumentStore`)."""

    source = "memory"

    def __init__(self, documents: dict[str, Document]) -> None:
        self._docs = documents
        self.known_len: int | None = len(documents)
        self._fingerprint: str | None = None

    def iter_documents(self) -> Iterator[Document]:
        yield from self._docs.values()

    def get(self, doc_id: str) -> Document | None:
        return self._docs.get(doc_id)

    def count(self) -> int:
        return len(self._docs)

    def subset(self, wanted: set[str]) -> dict[str, Document]:
        return {i: d for i, d in self._docs.items() if i in wanted}

    def fingerprint(self) -> str:
        """A hash of the documents' ids, titles and texts (computed once: the store is not changed)."""
        if self._fingerprint is None:
            self._fingerprint = documents_fingerprint(self._docs.values())
        return self._fingerprint


class Corpus(Mapping[str, Document]):
    """Documents by id, backed by a :class:`DocumentStore`.

    Use :meth:`from_jsonl`, :meth:`from_documents`, or ``Corpus(store)`` for another store (the
    ir_datasets one is :class:`attnsift.eval.datasets.irds.IrdsStore`).

    - :meth:`iter_documents` streams documents without holding them all (store order);
    - ``corpus[doc_id]`` / ``get``: a JSONL corpus is loaded into memory on first random access (fine
      for the local sets); an ir_datasets corpus uses its docs store instead;
    - :meth:`subset` streams and keeps only the ids asked for (to rerank a run over a large
      collection without loading it).
    """

    def __init__(self, store: DocumentStore) -> None:
        if not isinstance(store, DocumentStore):
            raise TypeError(
                f"Corpus takes a DocumentStore, got {type(store).__name__}; build one with Corpus.from_jsonl "
                "or Corpus.from_documents"
            )
        self.store = store

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "Corpus":
        """A corpus over a BEIR ``corpus.jsonl`` (one ``{"_id", "title", "text"}`` object per line)."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"corpus file {path} does not exist; a BEIR corpus.jsonl with one "
                               '{"_id", "title", "text"} object per line is expected there')
        return cls(JsonlStore(path))

    @classmethod
    def from_documents(cls, docs: Iterable[Document]) -> "Corpus":
        """A corpus held in memory; ids must be unique."""
        out: dict[str, Document] = {}
        for i, d in enumerate(docs):
            if not isinstance(d, Document):
                raise TypeError(f"Corpus.from_documents takes Document objects, got {type(d).__name__} at position {i}")
            if d.id in out:
                raise DataFormatError(f"duplicate document id {d.id!r} at position {i} of the documents given")
            out[d.id] = d
        return cls(MemoryStore(out))

    @property
    def source(self) -> str:
        return self.store.source

    def __repr__(self) -> str:
        n = self.store.known_len if self.store.known_len is not None else "?"
        return f"Corpus({self.source}, docs={n})"

    def fingerprint(self) -> str:
        """A content hash of the documents (64 hex characters).

        A ``corpus.jsonl`` corpus: the file's sha256 (cached by size and mtime, so cheap after the first
        time); in memory: the documents' ids, titles and texts; ir_datasets: its id and the files behind
        it that are on this machine. A store without its own ``fingerprint`` has its documents hashed.
        """
        own = getattr(self.store, "fingerprint", None)
        if callable(own):
            return own()
        return documents_fingerprint(self.store.iter_documents())

    def iter_documents(self) -> Iterator[Document]:
        """Stream every document (store order). Duplicate ids raise DataFormatError (file, line, id)."""
        return self.store.iter_documents()

    def __getitem__(self, doc_id: str) -> Document:
        doc = self.store.get(doc_id)
        if doc is None:
            raise KeyError(doc_id)
        return doc

    def __contains__(self, doc_id: object) -> bool:
        try:
            self[doc_id]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return (d.id for d in self.iter_documents())

    def __len__(self) -> int:
        return self.store.count()

    def subset(self, ids: Iterable[str]) -> dict[str, Document]:
        """The documents whose ids are in ``ids``, streamed (the whole corpus is never held).

        Ids not in the corpus are left out of the result (compare lengths to detect them); the
        result follows corpus order.
        """
        if isinstance(ids, str):
            raise TypeError("Corpus.subset takes an iterable of document ids, not a single string")
        return self.store.subset({str(i) for i in ids})


@dataclass
class Dataset:
    """An evaluation data set.

    Attributes
    ----------
    name : str
        Alias, folder name or ir_datasets id.
    corpus : Corpus
    queries : dict
        ``{query_id: Query}`` in file order (only queries with judgements in this split).
    qrels : dict
        ``{query_id: {doc_id: grade}}``.
    runs : dict
        Provided first-stage runs ``{run name: path}``; the name is the file name before its first '.'.
    rel_level : int
        Minimum grade counted relevant by binary measures (2 for TREC DL, else 1).
    source : str
        ``"local:/path"`` or ``"ir_datasets:<id>"``.
    description : str
    split : str
    run_aliases : dict
        Short run names (``"bm25" -> "bm25_flat"``) accepted by :meth:`load_run`.
    run_readers : dict
        ``{run name: reader(path, queries=..., name=...) -> Run}`` for provided runs that are not TREC
        files (MS MARCO's top1000); a run without one is read by :func:`attnsift.trec.read_run`.
    read_from : dict
        What ``"queries"`` and ``"qrels"`` were read from: a file path (fingerprinted by content), or a
        fingerprint already taken (a subset keeps its parent's). Missing: the in-memory content is hashed.
    """

    name: str
    corpus: Corpus
    queries: dict[str, Query]
    qrels: dict[str, dict[str, int]]
    runs: dict[str, Path] = field(default_factory=dict)
    rel_level: int = 1
    source: str = ""
    description: str = ""
    split: str = "test"
    run_aliases: dict[str, str] = field(default_factory=dict)
    read_from: dict[str, Path | str] = field(default_factory=dict, repr=False)
    run_readers: dict[str, Callable[..., Run]] = field(default_factory=dict, repr=False)

    def _part_fingerprint(self, part: str) -> str:
        src = self.read_from.get(part)
        if isinstance(src, Path):
            return file_fingerprint(src)
        if isinstance(src, str):
            return src
        if part == "queries":
            return combine("queries", [[q.id, q.text] for q in self.queries.values()])
        return combine("qrels", {q: dict(sorted(d.items())) for q, d in sorted(self.qrels.items())})

    def fingerprints(self) -> dict[str, str]:
        """Content hashes of what this data set was read from, with its name and split.

        Returns
        -------
        dict
            ``corpus``, ``queries``, ``qrels`` (64 hex characters each: the files' sha256, cached by size
            and mtime, or the in-memory content's), ``name`` and ``split``. A :meth:`subset` has its
            parent's fingerprints: what a query set was taken from is recorded separately by the caller.
        """
        return {"name": self.name, "split": self.split, "corpus": self.corpus.fingerprint(),
                "queries": self._part_fingerprint("queries"), "qrels": self._part_fingerprint("qrels")}

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, split={self.split!r}, queries={len(self.queries)}, "
                f"runs={sorted(self.runs)}, rel_level={self.rel_level}, source={self.source!r})")

    def load_run(self, name: str) -> Run:
        """Read a provided run (``runs`` name or short alias) with this data set's queries attached.

        Lines for queries not in this data set (e.g. after :meth:`subset`) are skipped.
        """
        from attnsift.trec import read_run

        key = self.run_aliases.get(name, name)
        if key not in self.runs:
            avail = sorted(self.runs) + [f"{a} (= {t})" for a, t in sorted(self.run_aliases.items()) if t in self.runs]
            raise ValueError(
                f"data set {self.name!r} has no provided run {name!r}; available: {', '.join(avail) or 'none'}"
            )
        reader = self.run_readers.get(key)
        if reader is not None:
            return reader(self.runs[key], queries=self.queries, name=key)
        return read_run(self.runs[key], queries=self.queries, name=key, skip_unknown=True)

    def subset(self, query_ids: Iterable[str] | int | None = None, *, max_queries: int | None = None) -> "Dataset":
        """A data set restricted to some queries (corpus and runs shared).

        Parameters
        ----------
        query_ids : iterable of str, or int
            The query ids to keep (kept in this data set's query order), or an int meaning
            ``max_queries``.
        max_queries : int
            Keep the first N queries in file order (deterministic).
        """
        if isinstance(query_ids, int) and not isinstance(query_ids, bool):
            query_ids, max_queries = None, query_ids
        if (query_ids is None) == (max_queries is None):
            raise ValueError("give either query_ids (an iterable of ids) or max_queries (a positive integer), not both")
        if max_queries is not None:
            max_queries = check_k(max_queries, "max_queries")
            keep = list(self.queries)[:max_queries]
        else:
            if isinstance(query_ids, str):
                raise TypeError("query_ids must be an iterable of query ids, not a single string")
            wanted = [str(q) for q in query_ids]  # type: ignore[union-attr]
            unknown = [q for q in wanted if q not in self.queries]
            if unknown:
                raise ValueError(
                    f"query ids {unknown[:5]} are not in data set {self.name!r} (split {self.split!r}); "
                    f"it has {len(self.queries)} queries, e.g. {list(self.queries)[:3]}"
                )
            wanted_set = set(wanted)
            keep = [q for q in self.queries if q in wanted_set]
        return dataclasses.replace(
            self,
            queries={q: self.queries[q] for q in keep},
            qrels={q: dict(self.qrels[q]) for q in keep if q in self.qrels},
            runs=dict(self.runs),
            run_aliases=dict(self.run_aliases),
            run_readers=dict(self.run_readers),
            read_from={part: self.read_from.get(part) or self._part_fingerprint(part) for part in ("queries", "qrels")},
            description=f"{self.description} [subset: {len(keep)} of {len(self.queries)} queries]",
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What the caller's name says about a data set, passed to a loader.

    Attributes
    ----------
    name : str
        The name the data set is reported under (alias or folder name).
    rel_level : int
        Minimum grade counted relevant.
    description : str
        Empty: the loader writes its own.
    run_aliases : mapping
        Short run names (``"bm25" -> "bm25_flat"``).
    """

    name: str
    rel_level: int = 1
    description: str = ""
    run_aliases: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class DatasetLoader(Protocol):
    """A folder format on disk.

    Attributes
    ----------
    name : str
        The format's name (``"beir"``).
    """

    name: str

    def matches(self, path: Path) -> bool:
        """Whether ``path`` is a folder in this format (cheap: looks at file names only)."""

    def load(self, path: Path, split: str, info: DatasetInfo) -> Dataset:
        """Read the data set in ``path`` for ``split``; raise DatasetError saying what is missing."""

    def summary(self, path: Path, split: str = "test") -> dict:
        """For listings: ``available`` (bool: everything ``split`` needs is there), ``docs`` and
        ``queries`` (judged queries of ``split``), each None when not cheap to count."""


_LOADERS: list[DatasetLoader] = []


def register_loader(loader: DatasetLoader) -> DatasetLoader:
    """Add a folder format; later registrations are tried first. Returns ``loader``.

    Raises
    ------
    TypeError
        ``loader`` lacks the :class:`DatasetLoader` methods.
    """
    if not isinstance(loader, DatasetLoader):
        raise TypeError(
            f"register_loader takes a DatasetLoader (name, matches, load, summary), "
            f"got {type(loader).__name__}"
        )
    if loader not in _LOADERS:
        _LOADERS.insert(0, loader)
    return loader


def registered_loaders() -> tuple[DatasetLoader, ...]:
    """The folder formats, in the order they are tried."""
    return tuple(_LOADERS)


def loader_for(path: Path, default: DatasetLoader) -> DatasetLoader:
    """The first registered loader that matches the folder ``path``, else ``default`` (whose ``load``
    then says which files are missing)."""
    return next((ld for ld in _LOADERS if ld.matches(path)), default)
