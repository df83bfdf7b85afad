import math
from pathlib import Path

import pytest

from attnsift import Candidate, Document, Query, Ranking, Run
from attnsift.rerank.base import BaseReranker, IdentityReranker
from attnsift.types import check_k, missing_query_text


def test_ranking_sorts_by_score_then_doc_id():
    q = Query("q1", "hello")
    r = Ranking(q, (Candidate("b", 1.0), Candidate("c", 2.0), Candidate("a", 1.0)))
    assert r.doc_ids == ["c", "a", "b"]
    assert r.top(2).doc_ids == ["c", "a"]
    assert r.top(None) is r
    assert len(r.top(10)) == 3


def test_ranking_rejects_duplicates_and_bad_candidates():
    q = Query("q1", "hello")
    with pytest.raises(ValueError, match="twice"):
        Ranking(q, (Candidate("a", 1.0), Candidate("a", 2.0)))
    with pytest.raises(TypeError):
        Ranking(q, ("a",))
    with pytest.raises(ValueError, match="NaN"):
        Candidate("a", math.nan)
    with pytest.raises(TypeError):
        Candidate("a", "high")


@pytest.mark.parametrize("bad", ["", "a b", "tab\tid"])
def test_ids_must_be_nonempty_without_whitespace(bad):
    with pytest.raises(ValueError, match="whitespace"):
        Document(bad, "text")


def test_query_text_must_not_be_empty():
    with pytest.raises(ValueError, match="empty text"):
        Query("q", "   ")
    with pytest.raises(TypeError, match="str or None"):
        Query("q", 5)
    assert Query(5, "x").id == "5"  # int ids are normalised to strings


def test_query_may_carry_only_its_id():
    q = Query("q1")
    assert q.text is None and q == Query("q1", None)
    err = missing_query_text("q1", "bm25_flat")
    assert isinstance(err, ValueError)
    assert "run 'bm25_flat' has no query text for 'q1'" in str(err) and "--dataset" in str(err)
    assert "read_run(path, queries=" in str(missing_query_text("q1"))


def test_candidate_document_id_must_match():
    with pytest.raises(ValueError, match="does not match"):
        Candidate("a", 1.0, Document("b", "t"))


def test_document_contents_joins_title():
    assert Document("d", "body", title="Title").contents == "Title body"
    assert Document("d", "body").contents == "body"


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_check_k_rejects(k):
    with pytest.raises((ValueError, TypeError)):
        check_k(k)


def test_run_mapping_and_dict_round_trip(tmp_path: Path):
    q1, q2 = Query("1", "a"), Query("2", "b")
    run = Run([Ranking(q1, (Candidate("x", 3.0), Candidate("y", 1.0))), Ranking(q2, (Candidate("z", 0.5),))])
    assert list(run) == ["1", "2"]
    assert run.to_dict() == {"1": {"x": 3.0, "y": 1.0}, "2": {"z": 0.5}}
    again = Run.from_dict(run.to_dict(), queries={"1": q1, "2": q2})
    assert again.to_dict() == run.to_dict()
    assert again["1"].query.text == "a"
    with pytest.raises(ValueError, match="two rankings"):
        Run([Ranking(q1), Ranking(q1)])


class _Reverse(BaseReranker):
    name = "reverse"

    def score(self, ranking):
        return [float(i) for i in range(len(ranking))]  # last candidate gets the best score


def _ranking(n=5, with_text=True):
    q = Query("q", "question")
    return Ranking(q, tuple(Candidate(f"d{i}", float(n - i), Document(f"d{i}", f"text {i}") if with_text else None)
                            for i in range(n)))


def test_base_reranker_top_k_keeps_tail_below_head():
    out = _Reverse().rerank(_ranking(5), k=3)
    assert out.doc_ids == ["d2", "d1", "d0", "d3", "d4"]
    assert min(c.score for c in out.top(3)) > max(c.score for c in out.candidates[3:])


def test_base_reranker_requires_text_with_helpful_message():
    with pytest.raises(ValueError, match="with_documents"):
        _Reverse().rerank(_ranking(3, with_text=False))
    # the identity reranker does not need texts
    assert IdentityReranker().rerank(_ranking(3, with_text=False)).doc_ids == ["d0", "d1", "d2"]


def test_base_reranker_empty_and_single():
    empty = Ranking(Query("q", "x"))
    assert len(_Reverse().rerank(empty)) == 0
    one = _ranking(1)
    assert _Reverse().rerank(one).doc_ids == ["d0"]
