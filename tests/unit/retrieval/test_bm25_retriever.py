"""BM25Retriever: indexing, retrieval semantics, bad inputs, determinism."""
from __future__ import annotations

import logging

import pytest

from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Document, Query, Ranking, Run

DOCS = [
    Document("d1", "Vitamin D deficiency is linked to bone loss in older adults.", title="Vitamin D and bones"),
    Document("d2", "Aspirin lowers the risk of heart attacks but raises bleeding risk."),
    Document("d3", "Bone density falls with age; calcium and vitamin D slow the loss."),
    Document("d4", "Statins reduce cholesterol and cardiovascular events."),
    Document("d5", "Green tea contains antioxidants."),
]


@pytest.fixture(scope="module")
def bm25() -> BM25Retriever:
    return BM25Retriever.from_corpus(DOCS)


def test_retrieves_relevant_first_and_carries_documents(bm25):
    r = bm25.retrieve(Query("q1", "vitamin D bone loss"), k=3)
    assert isinstance(r, Ranking)
    assert r.doc_ids[:2] in (["d1", "d3"], ["d3", "d1"])
    assert all(c.document is not None and c.document.id == c.doc_id for c in r)
    scores = [c.score for c in r]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_title_is_indexed(bm25):
    # "bones" occurs only in d1's title
    assert bm25.retrieve("bones", k=5).doc_ids[0] == "d1"


def test_string_query_and_properties(bm25):
    r = bm25.retrieve("statins cholesterol", k=10)
    assert r.query.id == "q0" and r.doc_ids == ["d4"]  # only matching documents are returned
    assert bm25.num_docs == 5
    assert set(bm25.documents) == {d.id for d in DOCS}
    assert bm25.name == "bm25"


def test_k_larger_than_corpus_returns_all_matching(bm25):
    r = bm25.retrieve("the risk of bone loss and vitamin tea cholesterol", k=1000)
    assert sorted(r.doc_ids) == ["d1", "d2", "d3", "d4", "d5"]


@pytest.mark.parametrize("k, exc", [(0, ValueError), (-3, ValueError), (True, TypeError), (2.5, TypeError)])
def test_bad_k(bm25, k, exc):
    with pytest.raises(exc):
        bm25.retrieve("vitamin", k=k)
    with pytest.raises(exc):
        bm25.retrieve_batch([Query("q", "vitamin")], k=k)


def test_stopword_only_query_returns_empty_ranking_with_warning(bm25, caplog):
    with caplog.at_level(logging.WARNING, logger="attnsift.retrieval.bm25"):
        r = bm25.retrieve(Query("qs", "the and of"), k=10)
    assert len(r) == 0 and r.query.id == "qs"
    assert any("no index terms" in rec.getMessage() for rec in caplog.records)


def test_unknown_terms_give_empty_ranking(bm25):
    assert len(bm25.retrieve("zyxwvut", k=10)) == 0


def test_empty_query_text_is_rejected_by_query_type():
    with pytest.raises(ValueError):
        Query("q", "   ")


def test_duplicate_ids_named():
    with pytest.raises(ValueError, match="'dup'"):
        BM25Retriever.from_corpus([Document("dup", "a b"), Document("x", "c"), Document("dup", "d")])


def test_empty_corpus_and_wrong_items():
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever.from_corpus([])
    with pytest.raises(TypeError, match="Documents, strings or mappings"):
        BM25Retriever.from_corpus([42])
    with pytest.raises(TypeError, match="not a single string"):
        BM25Retriever.from_corpus("just a string")
    with pytest.raises(ValueError, match="has an index term"):
        BM25Retriever.from_corpus([Document("a", "the of"), Document("b", "!!")])


def test_not_indexed_and_bad_params():
    with pytest.raises(ValueError, match="no index"):
        BM25Retriever().retrieve("x")
    with pytest.raises(ValueError):
        BM25Retriever(k1=-1)
    with pytest.raises(ValueError):
        BM25Retriever(b=1.5)
    with pytest.raises(ValueError, match="method"):
        BM25Retriever(method="tfidf")
    assert BM25Retriever(k1="1.2", method="bm25l", delta="0.7").params["delta"] == 0.7  # options are parsed
    with pytest.raises(ValueError, match="k1='high': expected a number"):
        BM25Retriever(k1="high")
    with pytest.raises(TypeError, match="expected a number"):
        BM25Retriever(k1=[0.9])


def test_mapping_corpus_accepted():
    r = BM25Retriever.from_corpus({d.id: d for d in DOCS})
    assert r.num_docs == len(DOCS)


def test_batch_equals_single_and_is_a_named_run(bm25):
    queries = [Query("a", "vitamin D"), Query("b", "heart attack risk"), Query("c", "the")]
    run = bm25.retrieve_batch(queries, k=3)
    assert isinstance(run, Run) and run.name == "bm25" and list(run) == ["a", "b", "c"]
    for q in queries:
        single = bm25.retrieve(q, k=3)
        assert [(c.doc_id, c.score) for c in single] == [(c.doc_id, c.score) for c in run[q.id]]
    with pytest.raises(TypeError):
        bm25.retrieve_batch(["not a query"])
    with pytest.raises(ValueError):
        bm25.retrieve_batch(queries, n_threads=0)


def test_results_do_not_depend_on_chunking_or_threads():
    docs = [Document(f"d{i:03d}", f"word{i % 7} shared word{i % 11} common{i % 3}") for i in range(60)]
    r = BM25Retriever.from_corpus(docs)
    queries = [Query(f"q{i}", f"word{i % 7} common{i % 3} word{i % 5}") for i in range(600)]  # > one chunk
    one = r.retrieve_batch(queries, k=7).to_dict()
    threaded = r.retrieve_batch(queries, k=7, n_threads=2).to_dict()
    assert one == threaded
    assert one["q5"] == r.retrieve(queries[5], k=7).scores()


def test_ties_broken_by_doc_id_even_at_the_cutoff():
    # identical documents tie exactly; the k best must be the smallest ids, whatever the corpus order
    ids = ["z9", "b2", "m5", "a1", "k4"]
    docs = [Document(i, "identical text here") for i in ids] + [Document("other", "different words")]
    for order in (docs, list(reversed(docs))):
        r = BM25Retriever.from_corpus(order).retrieve("identical", k=3)
        assert r.doc_ids == ["a1", "b2", "k4"]


def test_store_text_false():
    r = BM25Retriever.from_corpus(DOCS, store_text=False)
    ranking = r.retrieve("vitamin", k=2)
    assert all(c.document is None for c in ranking)
    with pytest.raises(ValueError, match="store_text"):
        r.documents


@pytest.mark.parametrize("method", ["robertson", "atire", "bm25l", "bm25+"])
def test_other_methods_rank_the_obvious_document_first(method):
    r = BM25Retriever.from_corpus(DOCS, method=method)
    ranking = r.retrieve("statins cholesterol", k=5)
    assert ranking.doc_ids[0] == "d4"
    if method in ("bm25l", "bm25+"):
        assert len(ranking) == 5  # every document gets the non-occurrence score
