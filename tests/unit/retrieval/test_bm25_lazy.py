"""Columnar (lazy) Rankings: BM25 results stay arrays until candidates are touched, and are the same value."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Candidate, Document, Query, Ranking, Run

DOCS = [Document("d3", "apple banana"), Document("d1", "apple banana"), Document("d2", "apple cherry"),
        Document("d10", "banana cherry apple"), Document("d0", "durian")]


def _eager(r: Ranking) -> Ranking:
    return Ranking(r.query, tuple(Candidate(c.doc_id, c.score, c.document) for c in r))


def _lazy(r: Ranking) -> Ranking:
    return Ranking.presorted(r.query, [c.doc_id for c in r], np.asarray([c.score for c in r], dtype=np.float32),
                             [c.document for c in r])


@pytest.fixture(scope="module")
def bm25():
    return BM25Retriever.from_corpus(DOCS)


def test_bm25_results_are_lazy_and_equal_to_eager_rankings(bm25):
    run = bm25.retrieve_batch([Query("q", "apple banana"), Query("e", "zzz")], k=10)
    r = run["q"]
    assert "candidates" not in r.__dict__  # nothing made yet
    assert len(r) == 4 and r.doc_ids == ["d1", "d3", "d10", "d2"]  # read from the arrays
    assert "candidates" not in r.__dict__
    eager = _eager(r)
    assert r == eager and eager == r and hash(r) == hash(eager)
    assert "candidates" in r.__dict__
    assert all(type(c) is Candidate and type(c.score) is float and type(c.doc_id) is str for c in r)
    assert r.candidates[0].document == DOCS[1]
    assert len(run["e"]) == 0 and run["e"] == Ranking(Query("e", "zzz"))


def test_ties_broken_by_doc_id_like_eager_sorting(bm25):
    r = bm25.retrieve("apple banana", k=10)
    scores = [c.score for c in r]
    assert scores[0] == scores[1]  # d1 and d3 tie exactly
    assert r.doc_ids[:2] == ["d1", "d3"]
    assert r.doc_ids == Ranking(r.query, tuple(reversed(r.candidates))).doc_ids
    # the cut at k keeps the smaller id among equal scores
    assert bm25.retrieve("apple banana", k=1).doc_ids == ["d1"]


def test_top_scores_len_stay_columnar(bm25):
    r = bm25.retrieve("apple banana cherry", k=10)
    t = r.top(2)
    assert "candidates" not in t.__dict__ and "candidates" not in r.__dict__
    assert t.doc_ids == r.doc_ids[:2] and len(t) == 2
    assert r.scores() == {c.doc_id: c.score for c in _eager(r)}
    assert t == _eager(r).top(2)
    assert r.top(100) == r and r.top(None) is r
    fresh = bm25.retrieve("apple banana cherry", k=10)
    assert fresh.top(100) is fresh  # nothing to cut: the same columnar Ranking
    with pytest.raises(ValueError):
        r.top(0)


def test_run_to_dict_and_equality_with_eager_run(bm25):
    qs = [Query("a", "apple"), Query("b", "cherry durian")]
    lazy = bm25.retrieve_batch(qs, k=3)
    eager = Run((_eager(r) for r in lazy.values()), name="bm25")
    assert lazy.to_dict() == eager.to_dict()
    assert dict(lazy) == dict(eager)


def test_pickle_copy_and_repr(bm25):
    r = bm25.retrieve("apple banana", k=3)
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.candidates == r.candidates and "_columns" not in back.__dict__
    assert copy.deepcopy(r) == r and copy.copy(r) == r
    assert repr(r) == repr(_eager(r))
    with pytest.raises(AttributeError, match="nope"):
        r.nope
    with pytest.raises(Exception):
        r.query = Query("x", "y")  # still frozen


def test_presorted_checks_what_it_is_given():
    q = Query("q", "text")
    ok = Ranking.presorted(q, ["a", "b", "c"], np.asarray([3.0, 2.0, 2.0]))
    assert ok == Ranking(q, (Candidate("a", 3.0), Candidate("b", 2.0), Candidate("c", 2.0)))
    with pytest.raises(ValueError, match="descending"):
        Ranking.presorted(q, ["a", "b"], [1.0, 2.0])
    with pytest.raises(ValueError, match="ascending doc-id"):
        Ranking.presorted(q, ["b", "a"], [1.0, 1.0])
    with pytest.raises(ValueError, match="twice"):
        Ranking.presorted(q, ["a", "a"], [2.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        Ranking.presorted(q, ["a"], [float("nan")])
    with pytest.raises(ValueError, match="2 doc ids"):
        Ranking.presorted(q, ["a", "b"], [1.0])
    with pytest.raises(TypeError, match="str doc ids"):
        Ranking.presorted(q, [np.str_("a")], [1.0])
    with pytest.raises(ValueError, match="whitespace"):
        Ranking.presorted(q, ["a b"], [1.0])
    with pytest.raises(TypeError, match="Query"):
        Ranking.presorted("q", ["a"], [1.0])


def test_lazy_equals_eager_on_a_real_retrieval_and_with_documents(bm25):
    r = bm25.retrieve("banana", k=5)
    assert _lazy(r) == r
    stripped = Ranking.presorted(r.query, r.doc_ids, np.asarray([c.score for c in r], np.float32))
    attached = stripped.with_documents({d.id: d for d in DOCS})
    assert [c.document for c in attached] == [c.document for c in r]


def test_threads_give_the_same_lazy_results(bm25):
    qs = [Query(f"q{i}", t) for i, t in enumerate(["apple", "banana cherry", "durian apple"] * 200)]
    assert dict(bm25.retrieve_batch(qs, k=3, n_threads=1)) == dict(bm25.retrieve_batch(qs, k=3, n_threads=-1))
