"""When a BM25 query skips postings: the exact block-max search (:mod:`attnsift.retrieval.bm25_blockmax`)
against one sparse product over all of its terms' postings.

On MS MARCO a query such as "what is the kalinor bumate" matches millions of passages through
"what", while its top 1,000 are decided by a few thousand: such a query reads only the posting blocks
whose score bounds reach its top ``k``; a query over rare terms only is cheaper as part of its
chunk's sparse product. Both give bit-identical rankings and scores. Scores must be non-negative
(``lucene``, ``robertson``, ``atire``); BM25L / BM25+ always take the full product.
"""
from __future__ import annotations

#: A query is pruned when its terms hold at least this many postings (and 8 x k): below that the
#: sparse product is as fast. A module attribute, so tests can force either path.
PRUNE_MIN_POSTINGS = 200_000

PRUNABLE_METHODS = ("lucene", "robertson", "atire")


def should_prune(method: str, postings: int, k: int) -> bool:
    """Whether a query with ``postings`` postings in its terms takes the block-max path."""
    return method in PRUNABLE_METHODS and postings >= max(PRUNE_MIN_POSTINGS, 8 * k)
