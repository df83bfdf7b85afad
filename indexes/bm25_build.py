"""Building the BM25 score matrix in parts: constant memory in the corpus size, bm25s's numbers.

:class:`PostingsBuilder` takes analysed documents one at a time (their index terms), and every
``chunk_size`` documents turns the chunk into a *part*: the (document, term, term frequency) triples
of its postings plus the documents' lengths, kept in memory or written to a checksummed ``.npz`` file.
Only the vocabulary, the document frequencies and the documents' lengths grow with the corpus.
:meth:`PostingsBuilder.finish` then knows N, the average length and every term's document frequency,
and merges the parts into the CSC matrix (terms x documents, documents ascending within a term):
each part's postings are scored and scattered straight to their final slots, in memory or in
``data.npy`` / ``indices.npy`` opened as writable memory maps, so the merge also holds one part at a
time.

Scores are computed with bm25s's own scoring functions (``bm25s.scoring``), vectorised over a part:
the same float64 expressions per posting, rounded to float32, so the matrix equals what
``bm25s.BM25.build_index_from_ids`` builds for the same token ids, bit for bit (checked by
tests/unit/retrieval/test_bm25_streaming.py), whatever the chunk size.
"""
from __future__ import annotations

import json
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from attnsift.errors import IndexCorruptedError
from attnsift.io import sha256_file

_NONOCCURRENCE = ("bm25l", "bm25+")


@dataclass(frozen=True)
class Part:
    """One chunk's postings: in memory (``arrays``) or in a file with its sha256."""

    n_docs: int
    n_postings: int
    path: Path | None = None
    sha256: str | None = None
    arrays: dict[str, np.ndarray] | None = None


class PostingsBuilder:
    """Collect analysed documents in parts; merge them into bm25s's score matrix.

    Parameters
    ----------
    k1, b, delta : float
        BM25 parameters (``delta`` for BM25L / BM25+).
    method : str
        bm25s's variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
    chunk_size : int
        Documents per part.
    parts_dir : Path, optional
        Where parts are written (one ``part-NNNNN.npz`` each); None keeps them in memory.

    Attributes
    ----------
    vocab : dict
        ``term -> id``, ids in first-seen order (reproducible for a corpus order).
    parts_written : int
        Parts flushed so far (the peak memory of the build is one part plus the vocabulary, the
        document frequencies and lengths).
    """

    def __init__(self, *, k1: float, b: float, delta: float, method: str, chunk_size: int = 100_000,
                 parts_dir: Path | None = None) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer (documents per part), got {chunk_size!r}")
        self.k1, self.b, self.delta, self.method = k1, b, delta, method
        self.chunk_size = chunk_size
        self.parts_dir = Path(parts_dir) if parts_dir is not None else None
        if self.parts_dir is not None:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.vocab: dict[str, int] = {}
        self.parts: list[Part] = []
        self._df = np.zeros(0, dtype=np.int64)
        self._lengths = array("q")
        self._flat: list[int] = []
        self._chunk_lengths: list[int] = []
        self.num_docs = 0

    @property
    def parts_written(self) -> int:
        return len(self.parts)

    def add(self, terms: Iterable[str]) -> None:
        """Add the next document's index terms (in order; repeats count)."""
        vocab = self.vocab
        ids = list(map(vocab.get, terms))
        if None in ids:  # new terms get the next ids in order of first appearance
            setdefault = vocab.setdefault
            ids = [setdefault(t, len(vocab)) if i is None else i for t, i in zip(terms, ids)]
        self._flat.extend(ids)
        self._chunk_lengths.append(len(ids))
        if len(self._chunk_lengths) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Turn the documents added since the last part into a part."""
        n = len(self._chunk_lengths)
        if not n:
            return
        lengths = np.asarray(self._chunk_lengths, dtype=np.int64)
        terms = np.asarray(self._flat, dtype=np.int64)
        self._flat, self._chunk_lengths = [], []
        local = np.repeat(np.arange(n, dtype=np.int64), lengths)
        keys, tf = np.unique((local << 32) | terms, return_counts=True)  # sorted by (document, term)
        doc = (keys >> 32) + self.num_docs
        term = keys & 0xFFFFFFFF
        if len(self.vocab) > len(self._df):
            self._df = np.concatenate([self._df, np.zeros(len(self.vocab) - len(self._df), dtype=np.int64)])
        self._df += np.bincount(term, minlength=len(self._df))
        self._lengths.extend(lengths.tolist())
        arrays = {"doc": doc.astype(np.int32), "term": term.astype(np.int32), "tf": tf.astype(np.int32)}
        if self.parts_dir is None:
            self.parts.append(Part(n, len(keys), arrays=arrays))
        else:
            path = self.parts_dir / f"part-{len(self.parts):05d}.npz"
            np.savez(path, **arrays)
            self.parts.append(Part(n, len(keys), path=path, sha256=sha256_file(path)))
        self.num_docs += n

    # ------------------------------------------------------------------ merge
    def _read(self, part: Part) -> dict[str, np.ndarray]:
        if part.arrays is not None:
            return part.arrays
        assert part.path is not None
        if not part.path.is_file() or sha256_file(part.path) != part.sha256:
            raise IndexCorruptedError(
                f"index part {part.path} is missing or does not match the checksum recorded when it was written "
                "(the disk or another process changed it); delete the unfinished index and build it again"
            )
        try:
            with np.load(part.path, allow_pickle=False) as z:
                out = {k: z[k] for k in ("doc", "term", "tf")}
        except (ValueError, OSError, KeyError) as exc:
            raise IndexCorruptedError(f"index part {part.path} cannot be read ({exc}); build the index again") from exc
        if any(len(v) != part.n_postings for v in out.values()):
            raise IndexCorruptedError(f"index part {part.path} holds the wrong number of postings; build the index again")
        return out

    def statistics(self) -> tuple[np.ndarray, np.float64, np.ndarray, np.ndarray | None]:
        """``(lengths [N], average length, idf [V] float32, nonoccurrence [V] float32 or None)``, as bm25s
        computes them."""
        from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

        lengths = np.frombuffer(self._lengths, dtype=np.int64) if len(self._lengths) else np.zeros(0, np.int64)
        n = self.num_docs
        avg = np.float64(int(lengths.sum()) / n)  # == numpy's mean of the lengths (exact integer sum)
        idf_fn, tfc_fn = _select_idf_scorer(self.method), _select_tfc_scorer(self.method)
        df = self._df
        idf = np.zeros(len(df), dtype=np.float32)
        nonocc = np.zeros(len(df), dtype=np.float32) if self.method in _NONOCCURRENCE else None
        values, inverse = np.unique(df, return_inverse=True)  # idf depends on df only: one call per value
        per_value = np.zeros(len(values), dtype=np.float64)
        per_nonocc = np.zeros(len(values), dtype=np.float64)
        for j, v in enumerate(values.tolist()):
            if v:
                per_value[j] = idf_fn(v, N=n)
                if nonocc is not None:
                    tfc = tfc_fn(tf_array=0, l_d=avg, l_avg=avg, k1=self.k1, b=self.b, delta=self.delta)
                    per_nonocc[j] = idf_fn(v, N=n) * tfc
        idf[:] = per_value[inverse]
        if nonocc is not None:
            nonocc[:] = per_nonocc[inverse]
        return lengths, avg, idf, nonocc

    def finish(self, out_dir: Path | None = None) -> dict[str, Any]:
        """Merge the parts into the score matrix.

        Parameters
        ----------
        out_dir : Path, optional
            Write ``data.npy`` and ``indices.npy`` there (as memory maps, then flushed); None builds
            them in memory.

        Returns
        -------
        dict
            ``data`` float32 [nnz], ``indices`` int32 [nnz], ``indptr`` int64 [V + 1],
            ``nonoccurrence`` float32 [V] or None, ``num_docs``, ``vocab`` (list of terms), ``term_max``
            float32 [V] (each term's highest score: the bound that lets a search skip it).

        Raises
        ------
        IndexCorruptedError
            A part file changed since it was written.
        """
        from bm25s.scoring import _select_tfc_scorer

        self.flush()
        lengths, avg, idf, nonocc = self.statistics()
        v = len(self.vocab)
        indptr = np.zeros(v + 1, dtype=np.int64)
        np.cumsum(self._df, out=indptr[1:])
        nnz = int(indptr[-1])
        if out_dir is None:
            data, indices = np.empty(nnz, dtype=np.float32), np.empty(nnz, dtype=np.int32)
        else:
            from numpy.lib.format import open_memmap

            data = open_memmap(out_dir / "data.npy", mode="w+", dtype=np.float32, shape=(nnz,))
            indices = open_memmap(out_dir / "indices.npy", mode="w+", dtype=np.int32, shape=(nnz,))
        cursor = indptr[:-1].copy()
        term_max = np.zeros(v, dtype=np.float32)
        tfc_fn = _select_tfc_scorer(self.method)
        for part in self.parts:
            p = self._read(part)
            order = np.argsort(p["term"], kind="stable")  # documents stay ascending within a term
            term, doc = p["term"][order].astype(np.int64), p["doc"][order]
            tf = p["tf"][order].astype(np.float32)
            # bm25s: tfc(tf float32, l_d int, l_avg float64) in float64, times idf (float32), minus the
            # nonoccurrence score for BM25L / BM25+, stored as float32
            scores = idf[term] * tfc_fn(tf_array=tf, l_d=lengths[doc], l_avg=avg, k1=self.k1, b=self.b, delta=self.delta)
            if nonocc is not None:
                scores -= nonocc[term]
            uniq, first, counts = np.unique(term, return_index=True, return_counts=True)
            pos = cursor[term] + (np.arange(len(term), dtype=np.int64) - np.repeat(first, counts))
            scores32 = scores.astype(np.float32)
            data[pos] = scores32
            indices[pos] = doc
            cursor[uniq] += counts
            term_max[uniq] = np.maximum(term_max[uniq], np.maximum.reduceat(scores32, first))
            if part.path is not None:
                part.path.unlink()
        if out_dir is not None:
            data.flush()
            indices.flush()
        self.parts = []
        return {"data": data, "indices": indices, "indptr": indptr, "nonoccurrence": nonocc,
                "num_docs": self.num_docs, "vocab": list(self.vocab), "term_max": term_max}


def parts_record(builder: PostingsBuilder) -> str:
    """The parts written so far, as JSON (file, documents, postings, sha256), for logs and tests."""
    return json.dumps([{"file": p.path.name if p.path else None, "docs": p.n_docs, "postings": p.n_postings,
                        "sha256": p.sha256} for p in builder.parts])
