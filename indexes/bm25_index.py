"""On-disk BM25 index: the bm25s score matrix, the vocabulary, document ids and (optionally) texts.

Layout of an index folder (format 2, written atomically through :func:`attnsift.io.atomic_dir`)::

    manifest.json          kind "bm25", engine, parameters, counts, sha256 of every other file
    data.npy               float32 [nnz]        precomputed BM25 term scores (bm25s CSC layout)
    indices.npy            int32   [nnz]        document index of each score
    indptr.npy             int64   [V + 1]      start of each term's postings in data/indices
    nonoccurrence.npy      float32 [V]          only for methods "bm25l" / "bm25+"
    vocab.json             [V] terms, in term-id order
    doc_ids.txt            [N] document ids, one per line, in document-index order
    doc_ids.offsets.npy    int64   [N + 1]      byte offset of each id's line in doc_ids.txt
    id_rank.npy            int32   [N]          each document's position in doc-id order (tie-breaking)
    term_max.npy           float32 [V]          each term's highest score (bounds for skipping terms)
    documents.jsonl        one {"id", "title", "text", "metadata"} per line (when texts are stored)
    documents.offsets.npy  int64   [N + 1]      byte offset of each document's line

The matrix is bm25s's: a (num_docs x V) CSC matrix, which read the other way round is a
(V x num_docs) CSR matrix of term postings, so a query's scores are one sparse product.

Loaded with ``mmap=True`` the arrays are memory-mapped (numpy ``mmap_mode="r"``), document ids and
texts are read from their files when a result needs them (:class:`PackedIds`,
:class:`StoredDocuments`): an index over millions of passages costs little resident memory. Format 1
folders (``doc_ids.json``, no offsets or ranks) are still read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.corpus import corpus_fields
from attnsift.indexes.doc_store import (  # noqa: F401  (re-exported: the BM25 modules import them from here)
    DocumentStore,
    LineWriter,
    PackedIds,
    _map_file,
    document_from_json,
    document_to_json,
    id_ranks,
    rank_ids,
)
from attnsift.io import atomic_dir, read_manifest, write_manifest
from attnsift.types import Document

KIND = "bm25"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)


class StoredDocuments(Mapping[str, Document]):
    """``doc_id -> Document`` over a :class:`DocumentStore` (a BM25 index's texts)."""

    def __init__(self, path: Path, offsets: np.ndarray, doc_ids: Sequence[str]) -> None:
        self.store = DocumentStore(path, offsets, doc_ids)
        self._ids = doc_ids

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def at(self, positions: Iterable[int]) -> list[Document]:
        """The documents at index positions ``positions``."""
        return self.store.at(positions)

    def __getitem__(self, doc_id: str) -> Document:
        pos = self.store.position(doc_id)
        if pos is None:
            raise KeyError(doc_id)
        return self.store.at([pos])[0]


@dataclass
class BM25IndexData:
    """Everything a :class:`~attnsift.retrieval.bm25.BM25Retriever` needs to answer queries.

    Attributes
    ----------
    params : dict
        Scoring and analysis parameters (k1, b, delta, method, stemmer, stopwords, analyzer_version).
    vocab : list of str
        ``[V]`` index terms; a term's position is its id.
    doc_ids : sequence of str
        ``[N]`` document ids (a list, or :class:`PackedIds` when memory-mapped); position = index.
    data, indices, indptr : np.ndarray
        The score matrix in CSC layout: ``data[indptr[t]:indptr[t+1]]`` are term ``t``'s scores in
        the documents ``indices[indptr[t]:indptr[t+1]]``.
    nonoccurrence : np.ndarray or None
        ``[V]`` score of a term in a document that lacks it (BM25L / BM25+ only).
    documents : mapping or None
        ``doc_id -> Document`` when texts are stored (a dict, or :class:`StoredDocuments`).
    id_rank : np.ndarray or None
        ``[N]`` position of each document's id in sorted order (None: computed from ``doc_ids``).
    term_max : np.ndarray or None
        ``[V]`` each term's highest score (None: computed from ``data`` when needed).
    """

    params: dict[str, Any]
    vocab: list[str]
    doc_ids: Sequence[str]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    nonoccurrence: np.ndarray | None = None
    documents: Mapping[str, Document] | None = field(default=None, repr=False)
    id_rank: np.ndarray | None = field(default=None, repr=False)
    term_max: np.ndarray | None = field(default=None, repr=False)

    def max_scores(self) -> np.ndarray:
        """``[V]`` each term's highest score (float32; 0 for a term without postings)."""
        if self.term_max is None:
            out = np.zeros(len(self.vocab), dtype=np.float32)
            lengths = np.diff(self.indptr)
            has = np.flatnonzero(lengths)
            if has.size:
                out[has] = np.maximum.reduceat(np.asarray(self.data), self.indptr[has])
            self.term_max = out
        return self.term_max

    def check(self, where: str = "index", deep: bool = True) -> None:
        """Raise :class:`IndexCorruptedError` if the arrays do not fit together (``deep``: also scan
        the document indices, which reads every posting)."""
        n, v = len(self.doc_ids), len(self.vocab)
        problems = []
        if self.indptr.shape != (v + 1,):
            problems.append(f"indptr has shape {self.indptr.shape}, expected ({v + 1},) for {v} terms")
        elif self.indptr[0] != 0 or self.indptr[-1] != len(self.data) or np.any(np.diff(self.indptr) < 0):
            problems.append("indptr is not a non-decreasing offset array ending at len(data)")
        if self.data.shape != self.indices.shape:
            problems.append(f"data {self.data.shape} and indices {self.indices.shape} differ in length")
        elif deep and len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            problems.append(f"document indices fall outside [0, {n})")
        if self.nonoccurrence is not None and self.nonoccurrence.shape != (v,):
            problems.append(f"nonoccurrence has shape {self.nonoccurrence.shape}, expected ({v},)")
        if self.documents is not None and len(self.documents) != n:
            problems.append(f"{len(self.documents)} stored documents for {n} document ids")
        if self.id_rank is not None and self.id_rank.shape != (n,):
            problems.append(f"id_rank has shape {self.id_rank.shape}, expected ({n},)")
        if self.term_max is not None and self.term_max.shape != (v,):
            problems.append(f"term_max has shape {self.term_max.shape}, expected ({v},)")
        if problems:
            raise IndexCorruptedError(f"{where} is inconsistent ({'; '.join(problems)}); rebuild the index")


def write_doc_ids(doc_ids: Iterable[str], folder: Path) -> int:
    """Write ``doc_ids.txt``, its offsets and ``id_rank.npy`` into ``folder``; returns the count."""
    w = LineWriter(folder / "doc_ids.txt")
    for d in doc_ids:
        w.write(d)
    n = len(w.close(folder / "doc_ids.offsets.npy")) - 1
    np.save(folder / "id_rank.npy", id_ranks(folder / "doc_ids.txt", n), allow_pickle=False)
    return n


def write_index_manifest(folder: Path, params: Mapping[str, Any], num_docs: int, vocab_size: int,
                         store_text: bool, engine: str = "bm25s", corpus: Mapping[str, Any] | None = None) -> None:
    """The manifest of a format-2 index folder (checksums of every file already in ``folder``)."""
    import bm25s

    write_manifest(folder, KIND, format_version=FORMAT_VERSION, engine=engine,
                   engine_version=getattr(bm25s, "__version__", "unknown"), **params, num_docs=num_docs,
                   vocab_size=vocab_size, store_text=store_text, **dict(corpus or corpus_fields()))


def save_bm25_index(index: BM25IndexData, path: str | Path, overwrite: bool = True, engine: str = "bm25s",
                    corpus: Mapping[str, Any] | None = None) -> Path:
    """Write ``index`` to the folder ``path`` atomically, with a checksummed manifest.

    Parameters
    ----------
    index : BM25IndexData
        What to write.
    path : str or Path
        Target folder. It appears only when every file and the manifest are written.
    overwrite : bool
        Replace an existing folder (kept intact until the new one is complete).
    engine : str
        The engine recorded in the manifest.
    corpus : mapping, optional
        The corpus record (:func:`attnsift.indexes.corpus.corpus_fields`), written to the manifest.

    Returns
    -------
    Path
        ``path``.
    """
    index.check("the index to save", deep=not isinstance(index.data, np.memmap))
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        np.save(tmp / "data.npy", np.ascontiguousarray(index.data), allow_pickle=False)
        np.save(tmp / "indices.npy", np.ascontiguousarray(index.indices), allow_pickle=False)
        np.save(tmp / "indptr.npy", np.ascontiguousarray(index.indptr), allow_pickle=False)
        if index.nonoccurrence is not None:
            np.save(tmp / "nonoccurrence.npy", np.ascontiguousarray(index.nonoccurrence), allow_pickle=False)
        np.save(tmp / "term_max.npy", index.max_scores(), allow_pickle=False)
        (tmp / "vocab.json").write_text(json.dumps(index.vocab, ensure_ascii=False), encoding="utf-8")
        write_doc_ids(index.doc_ids, tmp)
        if index.documents is not None:
            w = LineWriter(tmp / "documents.jsonl")
            for doc in _documents_in_order(index):
                w.write(json.dumps(document_to_json(doc), ensure_ascii=False))
            w.close(tmp / "documents.offsets.npy")
        write_index_manifest(tmp, index.params, len(index.doc_ids), len(index.vocab), index.documents is not None,
                             engine=engine, corpus=corpus)
    return path


def _documents_in_order(index: BM25IndexData) -> Iterator[Document]:
    docs = index.documents
    assert docs is not None
    if isinstance(docs, StoredDocuments):
        for i in range(len(index.doc_ids)):
            yield docs.at([i])[0]
    elif callable(getattr(docs, "iter_documents", None)):  # a corpus on disk: one pass, in index order
        for did, doc in zip(index.doc_ids, docs.iter_documents()):
            if doc.id != did:
                raise ValueError(f"the corpus the index was built from changed (document {doc.id!r} where {did!r} "
                                 "was indexed); rebuild the index")
            yield doc
    else:
        for did in index.doc_ids:
            yield docs[did]


def _load_array(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise IndexCorruptedError(f"index file {path} is missing; the index is incomplete, rebuild it") from None
    except (ValueError, OSError, EOFError) as exc:
        raise IndexCorruptedError(f"index file {path} cannot be read ({exc}); rebuild the index") from exc


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptedError(f"index file {path} is missing; the index is incomplete, rebuild it") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexCorruptedError(f"index file {path} is not valid JSON ({exc}); rebuild the index") from exc


def _read_documents(path: Path) -> dict[str, Document]:
    documents = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                documents[d["id"]] = document_from_json(d)
    except FileNotFoundError:
        raise IndexCorruptedError(f"{path} is missing; rebuild the index") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise IndexCorruptedError(f"{path} is unreadable ({exc}); rebuild the index") from exc
    return documents


def _doc_ids_v2(path: Path, mmap: bool) -> tuple[Sequence[str], np.ndarray]:
    offsets = _load_array(path / "doc_ids.offsets.npy", mmap)
    ids_path = path / "doc_ids.txt"
    if not ids_path.is_file():
        raise IndexCorruptedError(f"index file {ids_path} is missing; the index is incomplete, rebuild it")
    if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[-1]) != ids_path.stat().st_size:
        raise IndexCorruptedError(f"{path}/doc_ids.offsets.npy does not fit doc_ids.txt; rebuild the index")
    if mmap:
        return PackedIds(_map_file(ids_path), offsets), offsets
    try:
        ids = ids_path.read_bytes().decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as exc:
        raise IndexCorruptedError(f"{ids_path} is not UTF-8 ({exc}); rebuild the index") from exc
    return ids, offsets


PARAM_KEYS = ("k1", "b", "delta", "method", "stemmer", "stopwords", "analyzer_version")


def load_bm25_index(path: str | Path, verify: bool = True, mmap: bool = False) -> tuple[BM25IndexData, Mapping[str, Any]]:
    """Read an index written by :func:`save_bm25_index` (or the streaming build).

    Parameters
    ----------
    path : str or Path
        The index folder.
    verify : bool
        Check every file's size and sha256 against the manifest (reads every byte once).
    mmap : bool
        Memory-map the arrays and read document ids and texts from their files on demand (format 2;
        a format-1 folder maps its arrays only).

    Returns
    -------
    (BM25IndexData, manifest)

    Raises
    ------
    IndexCorruptedError
        Missing folder or file, checksum mismatch, another kind of index, or arrays that do not fit.
    """
    path = Path(path)
    manifest = read_manifest(path, KIND, verify=verify)
    version = manifest.get("format_version")
    if version not in READABLE_FORMATS:
        raise IndexCorruptedError(
            f"{path} has BM25 index format {version!r}, this attnsift reads {list(READABLE_FORMATS)}; rebuild the index"
        )
    missing = [k for k in PARAM_KEYS if k not in manifest]
    if missing:
        raise IndexCorruptedError(f"{path}/manifest.json lacks {missing}; rebuild the index")
    params = {k: manifest[k] for k in PARAM_KEYS}
    nonocc = None
    if params["method"] in ("bm25l", "bm25+"):
        nonocc = _load_array(path / "nonoccurrence.npy")
    id_rank = term_max = None
    documents: Mapping[str, Document] | None = None
    if version == 1:
        doc_ids: Sequence[str] = _load_json(path / "doc_ids.json")
        if manifest.get("store_text"):
            documents = _read_documents(path / "documents.jsonl")
    else:
        doc_ids, _ = _doc_ids_v2(path, mmap)
        id_rank = _load_array(path / "id_rank.npy", mmap)
        if (path / "term_max.npy").is_file() or "term_max.npy" in manifest.get("files", {}):
            term_max = _load_array(path / "term_max.npy")
        if manifest.get("store_text"):
            if mmap:
                doc_off = _load_array(path / "documents.offsets.npy", mmap)
                docs_path = path / "documents.jsonl"
                if not docs_path.is_file() or int(doc_off[-1]) != docs_path.stat().st_size:
                    raise IndexCorruptedError(f"{docs_path} is missing or does not fit its offsets; rebuild the index")
                documents = StoredDocuments(docs_path, doc_off, doc_ids)
            else:
                documents = _read_documents(path / "documents.jsonl")
    index = BM25IndexData(
        params=params,
        vocab=_load_json(path / "vocab.json"),
        doc_ids=doc_ids,
        data=_load_array(path / "data.npy", mmap),
        indices=_load_array(path / "indices.npy", mmap),
        indptr=_load_array(path / "indptr.npy"),
        nonoccurrence=nonocc,
        documents=documents,
        id_rank=id_rank,
        term_max=term_max,
    )
    if manifest.get("num_docs") != len(index.doc_ids) or manifest.get("vocab_size") != len(index.vocab):
        raise IndexCorruptedError(
            f"{path}: manifest counts (num_docs={manifest.get('num_docs')}, vocab_size={manifest.get('vocab_size')}) "
            f"do not match the files ({len(index.doc_ids)} docs, {len(index.vocab)} terms); rebuild the index"
        )
    # a memory-mapped index is not scanned (that would read every posting); its checksums vouch for it
    index.check(str(path), deep=not mmap)
    return index, manifest
