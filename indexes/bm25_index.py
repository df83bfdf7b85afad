"""On-disk BM25 index: the bm25s score matrix, the vocabulary, document ids and (optionally) texts.

Layout of an index folder (written atomically through :func:`attnsift.io.atomic_dir`)::

    manifest.json        kind "bm25", engine, parameters, counts, sha256 of every other file
    data.npy             float32 [nnz]        precomputed BM25 term scores (bm25s CSC layout)
    indices.npy          int32   [nnz]        document index of each score
    indptr.npy           int64   [V + 1]      start of each term's postings in data/indices
    nonoccurrence.npy    float32 [V]          only for methods "bm25l" / "bm25+"
    vocab.json           [V] terms, in term-id order
    doc_ids.json         [N] document ids, in document-index order
    documents.jsonl      one {"id", "title", "text", "metadata"} per line (when texts are stored)

The matrix is bm25s's: a (num_docs x V) CSC matrix, which read the other way round is a
(V x num_docs) CSR matrix of term postings, so a query's scores are one sparse product.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.corpus import corpus_fields
from attnsift.io import atomic_dir, read_manifest, write_manifest
from attnsift.types import Document

KIND = "bm25"
FORMAT_VERSION = 1


@dataclass
class BM25IndexData:
    """Everything a :class:`~attnsift.retrieval.bm25.BM25Retriever` needs to answer queries.

    Attributes
    ----------
    params : dict
        Scoring and analysis parameters (k1, b, delta, method, stemmer, stopwords, analyzer_version).
    vocab : list of str
        ``[V]`` index terms; a term's position is its id.
    doc_ids : list of str
        ``[N]`` document ids; a document's position is its index.
    data, indices, indptr : np.ndarray
        The score matrix in CSC layout: ``data[indptr[t]:indptr[t+1]]`` are term ``t``'s scores in
        the documents ``indices[indptr[t]:indptr[t+1]]``.
    nonoccurrence : np.ndarray or None
        ``[V]`` score of a term in a document that lacks it (BM25L / BM25+ only).
    documents : dict or None
        ``doc_id -> Document`` when texts are stored.
    """

    params: dict[str, Any]
    vocab: list[str]
    doc_ids: list[str]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    nonoccurrence: np.ndarray | None = None
    documents: dict[str, Document] | None = field(default=None, repr=False)

    def check(self, where: str = "index") -> None:
        """Raise :class:`IndexCorruptedError` if the arrays do not fit together."""
        n, v = len(self.doc_ids), len(self.vocab)
        problems = []
        if self.indptr.shape != (v + 1,):
            problems.append(f"indptr has shape {self.indptr.shape}, expected ({v + 1},) for {v} terms")
        elif self.indptr[0] != 0 or self.indptr[-1] != len(self.data) or np.any(np.diff(self.indptr) < 0):
            problems.append("indptr is not a non-decreasing offset array ending at len(data)")
        if self.data.shape != self.indices.shape:
            problems.append(f"data {self.data.shape} and indices {self.indices.shape} differ in length")
        elif len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            problems.append(f"document indices fall outside [0, {n})")
        if self.nonoccurrence is not None and self.nonoccurrence.shape != (v,):
            problems.append(f"nonoccurrence has shape {self.nonoccurrence.shape}, expected ({v},)")
        if self.documents is not None and len(self.documents) != n:
            problems.append(f"{len(self.documents)} stored documents for {n} document ids")
        if problems:
            raise IndexCorruptedError(f"{where} is inconsistent ({'; '.join(problems)}); rebuild the index")


def _document_to_json(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "title": doc.title, "text": doc.text, "metadata": dict(doc.metadata)}


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
    import bm25s

    index.check("the index to save")
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        np.save(tmp / "data.npy", np.ascontiguousarray(index.data), allow_pickle=False)
        np.save(tmp / "indices.npy", np.ascontiguousarray(index.indices), allow_pickle=False)
        np.save(tmp / "indptr.npy", np.ascontiguousarray(index.indptr), allow_pickle=False)
        if index.nonoccurrence is not None:
            np.save(tmp / "nonoccurrence.npy", np.ascontiguousarray(index.nonoccurrence), allow_pickle=False)
        (tmp / "vocab.json").write_text(json.dumps(index.vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "doc_ids.json").write_text(json.dumps(index.doc_ids, ensure_ascii=False), encoding="utf-8")
        if index.documents is not None:
            with open(tmp / "documents.jsonl", "w", encoding="utf-8") as fh:
                for did in index.doc_ids:
                    fh.write(json.dumps(_document_to_json(index.documents[did]), ensure_ascii=False) + "\n")
        write_manifest(
            tmp,
            KIND,
            format_version=FORMAT_VERSION,
            engine=engine,
            engine_version=getattr(bm25s, "__version__", "unknown"),
            **index.params,
            num_docs=len(index.doc_ids),
            vocab_size=len(index.vocab),
            store_text=index.documents is not None,
            **dict(corpus or corpus_fields()),
        )
    return path


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
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


PARAM_KEYS = ("k1", "b", "delta", "method", "stemmer", "stopwords", "analyzer_version")


def load_bm25_index(path: str | Path, verify: bool = True) -> tuple[BM25IndexData, Mapping[str, Any]]:
    """Read an index written by :func:`save_bm25_index`.

    Parameters
    ----------
    path : str or Path
        The index folder.
    verify : bool
        Check every file's size and sha256 against the manifest (reads every byte once).

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
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptedError(
            f"{path} has BM25 index format {manifest.get('format_version')!r}, this attnsift reads "
            f"{FORMAT_VERSION}; rebuild the index"
        )
    missing = [k for k in PARAM_KEYS if k not in manifest]
    if missing:
        raise IndexCorruptedError(f"{path}/manifest.json lacks {missing}; rebuild the index")
    params = {k: manifest[k] for k in PARAM_KEYS}
    nonocc = None
    if params["method"] in ("bm25l", "bm25+"):
        nonocc = _load_array(path / "nonoccurrence.npy")
    documents = None
    doc_ids = _load_json(path / "doc_ids.json")
    if manifest.get("store_text"):
        documents = {}
        try:
            with open(path / "documents.jsonl", encoding="utf-8") as fh:
                for line in fh:
                    d = json.loads(line)
                    documents[d["id"]] = Document(d["id"], d["text"], d.get("title"), d.get("metadata") or {})
        except FileNotFoundError:
            raise IndexCorruptedError(f"{path / 'documents.jsonl'} is missing; rebuild the index") from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise IndexCorruptedError(f"{path / 'documents.jsonl'} is unreadable ({exc}); rebuild the index") from exc
    index = BM25IndexData(
        params=params,
        vocab=_load_json(path / "vocab.json"),
        doc_ids=doc_ids,
        data=_load_array(path / "data.npy"),
        indices=_load_array(path / "indices.npy"),
        indptr=_load_array(path / "indptr.npy"),
        nonoccurrence=nonocc,
        documents=documents,
    )
    if manifest.get("num_docs") != len(index.doc_ids) or manifest.get("vocab_size") != len(index.vocab):
        raise IndexCorruptedError(
            f"{path}: manifest counts (num_docs={manifest.get('num_docs')}, vocab_size={manifest.get('vocab_size')}) "
            f"do not match the files ({len(index.doc_ids)} docs, {len(index.vocab)} terms); rebuild the index"
        )
    index.check(str(path))
    return index, manifest
