"""BM25 search over the score matrix: queries in chunks of one sparse product, results as arrays.

A chunk of queries becomes a sparse (Q x V) matrix of query-term counts; one product with the (V x N)
postings gives each query's scores over the documents that match (summed in float32 in term-id
order, like bm25s). The top ``k`` per query become a columnar :class:`~attnsift.types.Ranking`
(``Ranking.presorted``): ids and scores stay arrays until someone needs Candidate objects.
Chunks are bounded by query count and by postings, so a chunk of frequent-term queries over millions
of documents stays within memory; results do not depend on the chunking.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from attnsift.indexes.bm25_index import BM25IndexData, StoredDocuments
from attnsift.retrieval.bm25_blockmax import blockmax_for, blockmax_top
from attnsift.retrieval.bm25_prune import should_prune
from attnsift.types import Document, Query, Ranking

logger = logging.getLogger("attnsift.retrieval.bm25")

# Queries scored per sparse product, and postings per product: bound the (chunk x matching documents)
# intermediate on large corpora (MS MARCO's frequent terms each match millions of passages).
QUERY_CHUNK = 256
POSTING_BUDGET = 1 << 25


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
    keep = None
    if n > 32 * k:
        # the k-th best of every 16th score is at most the k-th best of all: only the scores that
        # reach it (about 16 k of them, unless many tie) can be selected
        sample = scores[::16]
        cut = np.partition(sample, len(sample) - k)[len(sample) - k]
        keep = np.flatnonzero(scores >= cut)
        if len(keep) > n // 2:
            keep = None
        else:
            scores, docs = scores[keep], docs[keep]
    part = np.argpartition(-scores, k - 1)[:k]
    threshold = scores[part].min()
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)
    need = k - above.shape[0]
    if tied.shape[0] > need:
        tied = tied[np.argsort(id_rank[docs[tied]], kind="stable")[:need]]
    out = np.concatenate([above, tied])
    return out if keep is None else keep[out]


class _MappedTexts:
    """Candidates' documents from a ``doc_id -> Document`` dict, looked up when a Ranking needs them."""

    __slots__ = ("documents",)

    def __init__(self, documents: Mapping[str, Document]) -> None:
        self.documents = documents

    def __call__(self, ids: Sequence[str]) -> list[Document]:
        subset = getattr(self.documents, "subset", None)
        if callable(subset) and getattr(self.documents, "source", "memory") != "memory":
            found = subset(ids)  # a corpus on disk: one pass for the whole list
            return [found[i] for i in ids]
        return [self.documents[i] for i in ids]


class _StoredTexts:
    """Candidates' documents read from a stored ``documents.jsonl`` when a Ranking needs them."""

    __slots__ = ("documents", "positions")

    def __init__(self, documents: StoredDocuments, positions: np.ndarray) -> None:
        self.documents, self.positions = documents, positions

    def __call__(self, ids: Sequence[str]) -> list[Document]:
        return self.documents.at(self.positions[: len(ids)].tolist())


def query_chunks(retriever: Any, queries: list[Query],
                 max_queries: int | None = None) -> list[list[tuple[Query, list[int] | None]]]:
    """Analyse the queries; group them so a chunk's sparse product stays within the posting budget
    (and a chunk within ``max_queries`` queries, ``QUERY_CHUNK`` by default)."""
    max_queries = QUERY_CHUNK if max_queries is None else max(1, min(max_queries, QUERY_CHUNK))
    vocab, analyze = retriever._vocab_ids, retriever.analyzer
    lengths = np.diff(retriever._matrix.indptr)
    chunks: list[list[tuple[Query, list[int] | None]]] = [[]]
    budget = 0
    for q in queries:
        terms = analyze(q.text)
        if not terms:
            logger.warning(
                "query %r has no index terms after analysis (%r); returning an empty ranking", q.id, q.text
            )
            item: tuple[Query, list[int] | None] = (q, None)
            cost = 0
        else:
            tids = [vocab[t] for t in terms if t in vocab]
            item, cost = (q, tids), int(lengths[tids].sum()) if tids else 0
        if chunks[-1] and (len(chunks[-1]) >= max_queries or budget + cost > POSTING_BUDGET):
            chunks.append([])
            budget = 0
        chunks[-1].append(item)
        budget += cost
    return chunks if chunks[0] else []


def score_chunk(retriever: Any, items: list[tuple[Query, list[int] | None]], k: int, index: BM25IndexData) -> list[Ranking]:
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(items), dtype=np.int64), [len(t or ()) for _, t in items])
    cols = np.fromiter((t for _, tids in items for t in (tids or ())), dtype=np.int64, count=len(rows))
    qmat = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(items), len(index.vocab)))
    qmat.sum_duplicates()  # [Q, V] query-term counts, term ids ascending
    # Queries over frequent terms skip most postings (exact: see bm25_blockmax); the rest share one product.
    pruned: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    method = index.params.get("method", "lucene")
    if index.nonoccurrence is None and len(index.doc_ids) > k:
        postings = np.diff(index.indptr)
        for qi in range(len(items)):
            lo, hi = qmat.indptr[qi], qmat.indptr[qi + 1]
            tids = qmat.indices[lo:hi]
            if hi > lo and should_prune(method, int(postings[tids].sum()), k):
                found = blockmax_top(index, blockmax_for(retriever), tids, qmat.data[lo:hi], k)
                if found is not None:
                    pruned[qi] = found
    plain = qmat
    if pruned:
        keep = np.ones(len(items), dtype=bool)
        keep[list(pruned)] = False
        plain = qmat.multiply(keep[:, None].astype(np.float32)).tocsr()  # pruned rows emptied
        plain.eliminate_zeros()
    # [Q, N] sparse: only matching documents; each score summed in float32 in term-id order
    scores = plain @ retriever._matrix
    n_docs = len(index.doc_ids)
    out = []
    for qi, (q, tids) in enumerate(items):
        if tids is None:
            out.append(Ranking(q, ()))
            continue
        if qi in pruned:
            docs, vals = pruned[qi]
        else:
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
            if not keep.all():
                docs, vals = docs[keep], vals[keep]
        out.append(_ranking(retriever, q, docs, vals, k, index))
    return out


def _ranking(retriever: Any, q: Query, docs: np.ndarray, vals: np.ndarray, k: int, index: BM25IndexData) -> Ranking:
    """The top ``k`` of ``(docs, vals)`` as a columnar Ranking: best first, ties by doc id."""
    sel = _topk_indices(vals, docs, k, retriever._id_rank)
    d, v = docs[sel], vals[sel]
    order = np.lexsort((retriever._id_rank[d], -v))
    d, v = d[order], v[order]
    ids = retriever._id_array[d].tolist() if retriever._id_array is not None else index.doc_ids.take(d)
    documents = index.documents
    texts = None
    if documents is not None:
        texts = _StoredTexts(documents, d) if isinstance(documents, StoredDocuments) else _MappedTexts(documents)
    return Ranking.presorted(q, ids, v, texts, check=False)

