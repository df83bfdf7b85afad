"""The vectorised fusion equals the per-candidate loops it replaced, bit for bit, on random runs with ties.

``old_*`` below are the previous implementations (retrieval/fusion.py before the columnar path),
kept verbatim as the oracle.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from attnsift.retrieval.fusion import FusionRetriever, fuse_columns, reciprocal_rank_fusion, score_fusion
from attnsift.types import Candidate, Document, Query, Ranking, Run


# ------------------------------------------------------------------------------ the previous code
def old_documents(rankings):
    docs = {}
    for r in rankings:
        for c in r.candidates:
            if docs.get(c.doc_id) is None:
                docs[c.doc_id] = c.document
    return docs


def old_rrf(rankings, k=60, weights=None):
    w = [1.0] * len(rankings) if weights is None else list(weights)
    docs = old_documents(rankings)
    scores = dict.fromkeys(docs, 0.0)
    for wi, r in zip(w, rankings):
        for rank, c in enumerate(r.candidates, start=1):
            scores[c.doc_id] += wi / (k + rank)
    return Ranking(rankings[0].query, tuple(Candidate(d, s, docs[d]) for d, s in scores.items()))


def old_normalize_scores(scores, normalization="minmax"):
    s = [float(x) for x in scores]
    if not s:
        return [], 0.0
    if normalization == "minmax":
        lo, hi = min(s), max(s)
        if hi - lo <= 0:
            return [1.0] * len(s), 0.0
        return [(x - lo) / (hi - lo) for x in s], 0.0
    if normalization == "zscore":
        mean = sum(s) / len(s)
        std = math.sqrt(sum((x - mean) ** 2 for x in s) / len(s))
        if std <= 0:
            return [0.0] * len(s), 0.0
        z = [(x - mean) / std for x in s]
        return z, min(z)
    return s, min(s)


def old_score_fusion(rankings, weights=None, normalization="minmax"):
    w = [1.0] * len(rankings) if weights is None else list(weights)
    docs = old_documents(rankings)
    total = dict.fromkeys(docs, 0.0)
    for wi, r in zip(w, rankings):
        normed, fill = old_normalize_scores([c.score for c in r.candidates], normalization)
        got = {c.doc_id: v for c, v in zip(r.candidates, normed)}
        for d in total:
            total[d] += wi * got.get(d, fill)
    return Ranking(rankings[0].query, tuple(Candidate(d, s, docs[d]) for d, s in total.items()))


# ------------------------------------------------------------------------------ random runs
POOL = [Document(f"doc{i:03d}{'xyz'[i % 3]}", f"text {i}") for i in range(300)]


def random_ranking(rng: random.Random, q: Query, n: int, ties: bool, with_docs: bool) -> Ranking:
    docs = rng.sample(POOL, n)
    # coarse scores: many exact ties inside a ranking and across the fused scores
    scores = [float(rng.randint(0, 5)) if ties else rng.uniform(-3, 40) for _ in docs]
    return Ranking(q, tuple(Candidate(d.id, s, d if with_docs else None) for d, s in zip(docs, scores)))


def same(a: Ranking, b: Ranking) -> None:
    assert a.doc_ids == b.doc_ids
    assert [c.score for c in a] == [c.score for c in b]  # exact: the same float operations in the same order
    assert [c.document for c in a] == [c.document for c in b]


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_fusion_equals_the_loops_on_random_rankings(seed):
    rng = random.Random(seed)
    q = Query("q", "text")
    parts = [random_ranking(rng, q, rng.choice([0, 1, 7, 60, 100]), ties=seed % 2 == 0, with_docs=rng.random() < 0.5)
             for _ in range(rng.choice([1, 2, 3]))]
    if not any(len(p) for p in parts):
        parts.append(random_ranking(rng, q, 5, True, True))
    weights = [rng.choice([1.0, 0.3, 0.7, 2.0, 0.0]) for _ in parts]
    if not any(weights):
        weights[0] = 1.0
    for k in (60, 0, 1.5):
        same(reciprocal_rank_fusion(parts, k=k, weights=weights), old_rrf(parts, k=k, weights=weights))
    same(reciprocal_rank_fusion(parts), old_rrf(parts))
    for norm in ("minmax", "zscore", "none"):
        same(score_fusion(parts, weights=weights, normalization=norm), old_score_fusion(parts, weights, norm))


def test_ties_are_broken_by_doc_id_like_a_ranking():
    q = Query("q", "text")
    a = Ranking(q, (Candidate("b", 1.0), Candidate("a", 1.0), Candidate("c", 0.5)))
    b = Ranking(q, (Candidate("c", 1.0), Candidate("a", 0.5), Candidate("b", 0.5)))
    fused = reciprocal_rank_fusion([a, b])
    assert fused.doc_ids == old_rrf([a, b]).doc_ids == ["a", "c", "b"]
    ids, scores = fuse_columns([a.doc_ids, b.doc_ids], [np.zeros(3), np.zeros(3)], "rrf", weights=[1.0, 1.0], rrf_k=60)
    assert ids == ["a", "c", "b"] and scores.tolist() == [c.score for c in fused]
    ids, scores = fuse_columns([[], []], [np.zeros(0), np.zeros(0)], weights=[1.0, 1.0])
    assert ids == [] and scores.shape == (0,)


class Fixed:
    """A first stage that answers from stored rankings (the fusion under test is what runs)."""

    def __init__(self, rankings: dict[str, Ranking], name: str) -> None:
        self.rankings, self.name = rankings, name

    def retrieve_batch(self, queries, k=100):
        return Run([Ranking(q, self.rankings[q.id].candidates[:k]) for q in queries if q.id in self.rankings],
                   name=self.name)


@pytest.mark.parametrize("method, options", [("rrf", {}), ("rrf", {"rrf_k": 10.0, "weights": (0.3, 0.7)}),
                                             ("score", {"normalization": "minmax"}),
                                             ("score", {"normalization": "zscore", "weights": (1.0, 2.0)})])
def test_fusion_retriever_equals_fusing_each_query_the_old_way(method, options):
    rng = random.Random(7)
    qs = [Query(f"q{i}", f"question {i}") for i in range(25)]
    stores = [{q.id: random_ranking(rng, q, rng.choice([0, 3, 40, 80]), ties=i % 2 == 0, with_docs=True)
               for q in qs if rng.random() < 0.9} for i in range(2)]
    r = FusionRetriever([Fixed(stores[0], "a"), Fixed(stores[1], "b")], method=method, depth=50, **options)
    run = r.retrieve_batch(qs, k=30)
    assert list(run) == [q.id for q in qs]
    for q in qs:
        parts = [Ranking(q, s[q.id].candidates[:50]) if q.id in s else Ranking(q, ()) for s in stores]
        old = (old_rrf(parts, k=r.rrf_k, weights=r.weights) if method == "rrf"
               else old_score_fusion(parts, r.weights, r.normalization)).top(30)
        assert run[q.id].scores() == old.scores() and len(run[q.id]) == len(old)  # the arrays, before any candidate
        same(run[q.id], old)
        same(r.fuse(parts, k=30), old)
