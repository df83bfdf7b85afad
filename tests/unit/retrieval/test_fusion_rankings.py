"""Fusion math on hand-worked examples: RRF, min-max and z-score fusion, FusionRetriever."""
from __future__ import annotations

import math

import pytest

from attnsift.retrieval.fusion import FusionRetriever, normalize_scores, reciprocal_rank_fusion, score_fusion
from attnsift.types import Candidate, Document, Query, Ranking, Run

Q = Query("q1", "question")


def ranking(scores: dict[str, float], q: Query = Q) -> Ranking:
    return Ranking(q, tuple(Candidate(d, s) for d, s in scores.items()))


A = ranking({"a": 3.0, "b": 2.0, "c": 1.0})  # ranks a1 b2 c3
B = ranking({"c": 0.9, "d": 0.5, "a": 0.1})  # ranks c1 d2 a3


def test_rrf_known_ranks():
    fused = reciprocal_rank_fusion([A, B], k=60)
    s = fused.scores()
    assert s["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert s["b"] == pytest.approx(1 / 62)
    assert s["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert s["d"] == pytest.approx(1 / 62)
    # a and c tie exactly, b and d tie: ties broken by doc id.
    assert fused.doc_ids == ["a", "c", "b", "d"]
    w = reciprocal_rank_fusion([A, B], k=0, weights=[2.0, 1.0]).scores()
    assert w == pytest.approx({"a": 2 / 1 + 1 / 3, "b": 2 / 2, "c": 2 / 3 + 1 / 1, "d": 1 / 2})


def test_rrf_keeps_documents():
    doc = Document("z", "text of z")
    r1 = Ranking(Q, (Candidate("z", 1.0),))
    r2 = Ranking(Q, (Candidate("z", 5.0, doc),))
    assert reciprocal_rank_fusion([r1, r2])[0].document == doc


def test_minmax_score_fusion():
    fused = score_fusion([A, B], normalization="minmax").scores()
    # A -> a 1, b .5, c 0 ; B -> c 1, d .5, a 0 ; missing -> 0
    assert fused == pytest.approx({"a": 1.0, "b": 0.5, "c": 1.0, "d": 0.5})
    w = score_fusion([A, B], weights=[0.25, 0.75]).scores()
    assert w == pytest.approx({"a": 0.25, "b": 0.125, "c": 0.75, "d": 0.375})


def test_zscore_fusion():
    z, fill = normalize_scores([3.0, 2.0, 1.0], "zscore")
    sd = math.sqrt(2 / 3)
    assert z == pytest.approx([1 / sd, 0.0, -1 / sd]) and fill == pytest.approx(-1 / sd)
    fused = score_fusion([A, B], normalization="zscore").scores()
    zb, fb = normalize_scores([0.9, 0.5, 0.1], "zscore")
    assert fused["b"] == pytest.approx(0.0 + fb)  # b missing from B gets B's lowest z
    assert fused["a"] == pytest.approx(1 / sd + zb[2])
    assert normalize_scores([2.0, 2.0], "minmax") == ([1.0, 1.0], 0.0)
    assert normalize_scores([2.0, 2.0], "zscore") == ([0.0, 0.0], 0.0)


def test_fusion_bad_input():
    with pytest.raises(ValueError, match="different queries"):
        reciprocal_rank_fusion([A, ranking({"a": 1.0}, Query("q2", "other"))])
    with pytest.raises(ValueError, match="weights"):
        score_fusion([A, B], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        score_fusion([A, B], weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="normalization"):
        score_fusion([A, B], normalization="rank")
    with pytest.raises(ValueError, match="at least one"):
        reciprocal_rank_fusion([])
    with pytest.raises(TypeError):
        reciprocal_rank_fusion(A)


class Fixed:
    """A retriever that returns fixed scores (a stand-in first stage; the fusion is what is tested)."""

    def __init__(self, name, table):
        self.name, self.table = name, table

    def retrieve_batch(self, queries, k=100):
        return Run([Ranking(q, tuple(Candidate(d, s) for d, s in self.table[q.id].items())).top(k) for q in queries])


def test_fusion_retriever():
    r1 = Fixed("x", {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}})
    r2 = Fixed("y", {"q1": {"c": 0.9, "d": 0.5, "a": 0.1}})
    hyb = FusionRetriever([r1, r2], method="rrf", depth=2)
    got = hyb.retrieve_batch([Q], k=3)["q1"]
    # depth 2: x gives a1 b2, y gives c1 d2.
    assert got.scores() == pytest.approx({"a": 1 / 61, "c": 1 / 61, "b": 1 / 62})
    assert hyb.retrieve_batch([Q], k=3).name == "hybrid"
    sf = FusionRetriever([r1, r2], method="score", weights=[1, 1], depth=3)
    assert sf.retrieve(Q, k=1).doc_ids == ["a"]
    with pytest.raises(ValueError, match="positive"):
        hyb.retrieve(Q, k=0)
    with pytest.raises(ValueError, match="method"):
        FusionRetriever([r1], method="max")
    with pytest.raises(TypeError, match="Retriever"):
        FusionRetriever([object()])
