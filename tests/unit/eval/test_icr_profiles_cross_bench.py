"""benchmarks/icr_profiles_cross.py: a profile's selection scored on stored masses."""
import numpy as np
import pytest
from helpers import load_benchmark

from attnsift.analysis.heads import QueryFeatures
from attnsift.analysis.headsel import judge


def _judged(n_queries=30, n_docs=20, seed=0):
    # Head (1, 0) carries relevance (mass on the relevant documents), head (0, 1) is noise; BM25 is noise too.
    rng = np.random.default_rng(seed)
    feats, qrels = [], {}
    for q in range(n_queries):
        docs = [f"d{q}_{i}" for i in range(n_docs)]
        rel = set(rng.choice(n_docs, size=3, replace=False).tolist())
        raw = rng.uniform(0, 1, size=(2, 2, n_docs))
        raw[1, 0] += np.array([3.0 if i in rel else 0.0 for i in range(n_docs)])
        na = np.zeros_like(raw)
        feats.append(QueryFeatures(f"q{q}", docs, rng.uniform(0, 1, n_docs), raw, na, raw.copy()))
        qrels[f"q{q}"] = {docs[i]: 1 for i in rel}
    return judge(feats, qrels), qrels


def _profile(heads):
    return {"selection": {"variant": "raw", "aggregate": "sum", "heads": heads}}


def test_cross_scores_tells_the_informative_head_from_the_noise():
    bench = load_benchmark("icr_profiles_cross")
    judged, qrels = _judged()
    profiles = {"good": _profile([[1, 0]]), "noise": _profile([[0, 1]])}
    r = bench.cross_scores(judged, qrels, profiles)
    assert r["queries"] == 30 and 0.0 <= r["bm25"] <= 1.0
    good, noise = r["profiles"]["good"], r["profiles"]["noise"]
    assert good["ndcg10"] > 0.95 and good["delta"] > 0.3 and good["p"] < 0.001
    assert abs(noise["delta"]) < 0.2 and noise["p"] > 0.001
    assert good["delta"] == pytest.approx(good["ndcg10"] - r["bm25"])
    # A judged query with no stored candidates counts as 0 for every system (as in icr_heads.py).
    qrels = {**qrels, "q_empty": {"dx": 1}}
    r2 = bench.cross_scores(judged, qrels, profiles, queries=[*(j.f.qid for j in judged), "q_empty"])
    assert r2["queries"] == 31 and r2["bm25"] == pytest.approx(r["bm25"] * 30 / 31)
    assert r2["profiles"]["good"]["ndcg10"] == pytest.approx(good["ndcg10"] * 30 / 31)
