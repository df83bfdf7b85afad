"""Exact top-k BM25 that skips frequent terms' postings (MaxScore, term at a time), for large corpora.

On MS MARCO a query such as "what is the kalinor bumate" matches millions of passages through
"what", while its top 1,000 are decided by the rare terms. Each term's highest score (``term_max``)
bounds what it can add to a document. Terms are read in decreasing bound order into a float64
accumulator; once at least ``k`` documents have a partial score and the bounds of the terms not yet
read sum to less than the ``k``-th best partial score, no unseen document can reach the top ``k``:
the remaining (frequent) terms are only looked up for the candidates (a binary search in each
posting list) instead of read whole.

The candidates' scores are then computed exactly as the sparse product computes them (float32
products and sums, in term-id order), so rankings are bit-identical to the unpruned search; the
bounds carry a relative margin (1e-4) far above float32 rounding, so a document outside the
candidates is strictly below the ``k``-th score, never tied with it. Scores must be non-negative
(``lucene``, ``robertson``, ``atire``); BM25L / BM25+ always take the full product.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

#: A query is pruned when its terms hold at least this many postings (and 8 x k): below that the
#: sparse product is as fast. Module attributes, so tests can force either path.
PRUNE_MIN_POSTINGS = 200_000
MARGIN = 1e-4


class _Scratch(threading.local):
    """Per-thread document-sized scratch arrays, zero between queries."""

    acc: np.ndarray | None = None
    seen: np.ndarray | None = None

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.acc is None or len(self.acc) != n:
            self.acc, self.seen = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=bool)
        return self.acc, self.seen


_SCRATCH = _Scratch()


def should_prune(method: str, postings: int, k: int) -> bool:
    """Whether a query with ``postings`` postings in its terms takes the pruned path."""
    return method in ("lucene", "robertson", "atire") and postings >= max(PRUNE_MIN_POSTINGS, 8 * k)


def pruned_top(index: Any, term_max: np.ndarray, tids: np.ndarray, counts: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Candidates that hold the exact top ``k`` of one query, with their exact scores.

    Parameters
    ----------
    index : BM25IndexData
    term_max : np.ndarray
        ``[V]`` each term's highest score.
    tids : np.ndarray
        ``[m]`` the query's term ids, ascending, unique.
    counts : np.ndarray
        ``[m]`` float32 how often each term occurs in the query.
    k : int

    Returns
    -------
    (docs, scores) or None
        ``docs`` int ``[c]`` ascending, ``scores`` float32 ``[c]`` equal to the sparse product's; None
        when no term could be skipped (the caller runs the product).
    """
    data, indices, indptr = index.data, index.indices, index.indptr
    ub = counts.astype(np.float64) * term_max[tids].astype(np.float64)
    order = np.argsort(-ub, kind="stable")
    rest = np.append(np.cumsum(ub[order][::-1])[::-1][1:], 0.0)  # bounds of the terms after each
    acc, seen = _SCRATCH.get(len(index.doc_ids))
    touched: list[np.ndarray] = []
    n_touched, theta, stop = 0, 0.0, None
    try:
        for j, ti in enumerate(order.tolist()):
            s, e = int(indptr[tids[ti]]), int(indptr[tids[ti] + 1])
            d = np.asarray(indices[s:e])
            acc[d] += float(counts[ti]) * np.asarray(data[s:e], dtype=np.float64)  # ids unique within a term
            new = d[~seen[d]]
            seen[new] = True
            touched.append(new)
            n_touched += len(new)
            if j + 1 < len(order) and n_touched >= k:
                cand = np.concatenate(touched) if len(touched) > 1 else touched[0]
                touched = [cand]
                part = acc[cand]
                theta = float(np.partition(part, len(part) - k)[len(part) - k])
                if rest[j] < theta * (1 - MARGIN):
                    stop = j
                    break
        if stop is None:
            return None
        cand = touched[0] if len(touched) == 1 else np.concatenate(touched)
        keep = acc[cand] + rest[stop] >= theta * (1 - MARGIN)
        docs = np.sort(cand[keep])
    finally:
        for t in touched:
            acc[t] = 0.0
            seen[t] = False
    out = np.zeros(len(docs), dtype=np.float32)
    for ti in range(len(tids)):  # ascending term ids: the sparse product's order of summation
        s, e = int(indptr[tids[ti]]), int(indptr[tids[ti] + 1])
        post = indices[s:e]
        pos = np.minimum(np.searchsorted(post, docs), e - s - 1)
        hit = np.asarray(post[pos]) == docs
        vals = np.asarray(data[s:e])[pos]
        out += np.where(hit, counts[ti] * vals, np.float32(0))
    return docs, out
