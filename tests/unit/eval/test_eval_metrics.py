"""evaluate(): metric names, rel_level, query-set rules, ranking order."""
from __future__ import annotations

import math

import pytest

from attnsift.eval.metrics import evaluate, parse_metric
from attnsift.types import Candidate, Query, Ranking, Run

QRELS = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"x": 1}, "q3": {"y": 1}}


def _ranking(qid: str, docs: list[tuple[str, float]]) -> Ranking:
    return Ranking(Query(qid, "text"), tuple(Candidate(d, s) for d, s in docs))


@pytest.mark.parametrize(
    "name, display, measure",
    [
        ("nDCG@10", "nDCG@10", "nDCG@10"),
        ("ndcg", "nDCG", "nDCG"),
        ("MRR@10", "MRR@10", "RR(rel=2)@10"),
        ("rr", "RR", "RR(rel=2)"),
        ("R@100", "R@100", "R(rel=2)@100"),
        ("recall@5", "R@5", "R(rel=2)@5"),
        ("P@5", "P@5", "P(rel=2)@5"),
        ("MAP", "AP", "AP(rel=2)"),
        ("AP@100", "AP@100", "AP(rel=2)@100"),
    ],
)
def test_parse_metric_names(name, display, measure):
    d, m = parse_metric(name, rel_level=2)
    assert d == display and str(m) == measure


@pytest.mark.parametrize("bad", ["BLEU", "nDCG@0", "nDCG@x", "R", "P", "", "MRR@10@5"])
def test_unknown_metric_lists_accepted_forms(bad):
    with pytest.raises(ValueError, match="accepted forms"):
        parse_metric(bad)


def test_duplicate_metric_rejected():
    run = {"q1": {"a": 1.0}}
    with pytest.raises(ValueError, match="twice"):
        evaluate(run, QRELS, metrics=["MRR@10", "RR@10"])


def test_rel_level_changes_binary_measures_only():
    # 'b' (grade 1) first, 'a' (grade 2) second.
    run = {"q1": {"b": 2.0, "a": 1.0}}
    r1 = evaluate(run, QRELS, metrics=["RR", "nDCG@10"], rel_level=1)
    r2 = evaluate(run, QRELS, metrics=["RR", "nDCG@10"], rel_level=2)
    assert r1.aggregate["RR"] == pytest.approx(1.0)
    assert r2.aggregate["RR"] == pytest.approx(0.5)
    assert r1.aggregate["nDCG@10"] == pytest.approx(r2.aggregate["nDCG@10"])
    # hand-computed graded nDCG with trec_eval's linear gain: DCG = 1/log2(2) + 2/log2(3); IDCG = 2 + 1/log2(3)
    dcg = 1.0 + 2.0 / math.log2(3)
    idcg = 2.0 + 1.0 / math.log2(3)
    assert r1.aggregate["nDCG@10"] == pytest.approx(dcg / idcg)


def test_run_is_evaluated_in_its_own_order_not_by_raw_ties():
    # Equal scores: the Ranking orders ties by doc id ascending ('a' first); pytrec_eval on the raw
    # scores breaks ties by doc id descending ('z' first). evaluate(Run) must follow the Ranking.
    qrels = {"q": {"a": 1}}
    run = Run([_ranking("q", [("z", 1.0), ("a", 1.0)])])
    assert run["q"].doc_ids == ["a", "z"]
    assert evaluate(run, qrels, metrics=["RR"]).aggregate["RR"] == pytest.approx(1.0)
    raw = evaluate(run.to_dict(), qrels, metrics=["RR"]).aggregate["RR"]
    assert raw == pytest.approx(0.5)


def test_default_query_set_and_dropped_counts():
    run = Run([_ranking("q1", [("a", 3.0)]), _ranking("q2", [("nope", 1.0)]), _ranking("unjudged", [("a", 1.0)])], name="sys")
    rep = evaluate(run, QRELS, metrics=["RR"])
    assert rep.name == "sys"
    assert set(rep.per_query) == {"q1", "q2"}  # q3 has no candidates and is not asked for
    assert rep.num_queries == 2
    assert rep.metadata["dropped_no_qrels"] == 1
    assert rep.aggregate["RR"] == pytest.approx(0.5)


def test_explicit_queries_zero_fill_missing_candidates():
    run = Run([_ranking("q1", [("a", 3.0)]), Ranking(Query("q2", "t"), ())])
    rep = evaluate(run, QRELS, metrics=["RR", "nDCG@10"], queries=["q1", "q2", "q3", "unjudged"])
    assert list(rep.per_query) == ["q1", "q2", "q3"]
    assert rep.per_query["q2"] == {"RR": 0.0, "nDCG@10": 0.0}
    assert rep.per_query["q3"] == {"RR": 0.0, "nDCG@10": 0.0}
    assert rep.metadata["zero_filled"] == 2
    assert rep.metadata["dropped_no_qrels"] == 1
    assert rep.aggregate["RR"] == pytest.approx(1.0 / 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rel_level"):
        evaluate({"q1": {"a": 1.0}}, QRELS, rel_level=0)
    with pytest.raises(TypeError, match="Run or a mapping"):
        evaluate([("q1", "a")], QRELS)
    with pytest.raises(TypeError, match="single string"):
        evaluate({"q1": {"a": 1.0}}, QRELS, queries="q1")


def test_rr_cutoff_is_applied():
    # pytrec_eval has no RR cut-off; evaluate must still give RR@10 = 0 for a hit at rank 16.
    docs = {f"x{i}": 100.0 - i for i in range(15)}
    docs["hit"] = 1.0
    qrels = {"q": {"hit": 2}}
    for rel in (1, 2):
        rep = evaluate({"q": docs}, qrels, metrics=["MRR@10", "RR", "MRR@20"], rel_level=rel)
        assert rep.aggregate == pytest.approx({"MRR@10": 0.0, "RR": 1 / 16, "MRR@20": 1 / 16})


def test_nothing_to_evaluate_is_an_error_not_nan():
    qrels = {"q1": {"d1": 1}}
    with pytest.raises(ValueError, match="nothing to evaluate: run 'empty' is empty"):
        evaluate(Run([], name="empty"), qrels, metrics=["nDCG@10"])
    other = Run([Ranking(Query("q9"), (Candidate("d1", 1.0),))], name="other")
    with pytest.raises(ValueError, match="names 1 queries, none of which has judgements"):
        evaluate(other, qrels, metrics=["nDCG@10"])
    with pytest.raises(ValueError, match="the queries given is empty"):
        evaluate(other, qrels, metrics=["nDCG@10"], queries=[])
