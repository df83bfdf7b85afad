"""BM25 parity: rank_bm25 (same tokens), a hand-computed Lucene score, and Lucene itself via pyserini."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Document, Query

rank_bm25 = pytest.importorskip("rank_bm25")

WORDS = [f"w{i}" for i in range(40)]


def _corpus(seed: int = 0, n_docs: int = 12) -> list[Document]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        n = int(rng.integers(3, 15))
        docs.append(Document(f"d{i:02d}", " ".join(rng.choice(WORDS, size=n))))
    return docs


def _plain(docs, **kw) -> tuple[BM25Retriever, list[list[str]]]:
    # No stemming or stopwords, so rank_bm25 sees exactly the tokens BM25Retriever indexes.
    r = BM25Retriever.from_corpus(docs, stemmer=None, stopwords=None, **kw)
    return r, [r.analyzer(d.contents) for d in docs]


QUERY = "w1 w3 w3 w7 w12 w20 w33"


def test_robertson_times_k1_plus_1_equals_bm25okapi():
    k1, b = 1.5, 0.75
    docs = _corpus()
    r, toks = _plain(docs, k1=k1, b=b, method="robertson")
    n = len(docs)
    df = {w: sum(w in t for t in toks) for w in WORDS}
    qtoks = r.analyzer(QUERY)
    # Precondition: BM25Okapi's idf is negative (then replaced by epsilon * mean idf) for df > N/2, where
    # bm25s's "robertson" clamps to 0 instead; the query terms must stay below N/2 to be comparable.
    assert all(df[w] < n / 2 for w in qtoks), df
    okapi = rank_bm25.BM25Okapi(toks, k1=k1, b=b).get_scores(qtoks)
    ours = r.retrieve(Query("q", QUERY), k=n).scores()
    assert len(ours) > 3
    for i, d in enumerate(docs):
        assert ours.get(d.id, 0.0) * (k1 + 1) == pytest.approx(okapi[i], rel=1e-5, abs=1e-6), d.id


# rank_bm25's BM25L is not comparable: its get_scores multiplies each term's BM25L weight by the raw
# term frequency once more (and so gives non-matching documents 0), unlike Lv & Zhai's BM25L that
# bm25s implements. BM25+ agrees exactly, including the delta that non-matching documents receive.
@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_bm25plus_equals_rank_bm25(delta):
    k1, b = 1.2, 0.75
    docs = _corpus(seed=1)
    r, toks = _plain(docs, k1=k1, b=b, method="bm25+", delta=delta)
    qtoks = r.analyzer(QUERY)
    theirs = rank_bm25.BM25Plus(toks, k1=k1, b=b, delta=delta).get_scores(qtoks)
    ours = r.retrieve(Query("q", QUERY), k=len(docs)).scores()
    assert len(ours) == len(docs)  # non-occurrence scores make every document a candidate
    for i, d in enumerate(docs):
        assert ours[d.id] == pytest.approx(theirs[i], rel=1e-5, abs=1e-6), d.id


def test_lucene_score_by_hand():
    docs = [
        Document("d1", "apple banana"),
        Document("d2", "apple apple cherry"),
        Document("d3", "banana date date date"),
    ]
    k1, b = 0.9, 0.4
    r = BM25Retriever.from_corpus(docs, k1=k1, b=b, stemmer=None, stopwords=None)
    got = r.retrieve("apple date", k=3).scores()
    n, avgdl = 3, (2 + 3 + 4) / 3
    idf_apple = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))  # df(apple) = 2
    idf_date = math.log(1 + (n - 1 + 0.5) / (1 + 0.5))  # df(date) = 1

    def tf_part(tf, dl):  # Lucene >= 8: no (k1 + 1) factor
        return tf / (tf + k1 * (1 - b + b * dl / avgdl))

    want = {
        "d1": idf_apple * tf_part(1, 2),
        "d2": idf_apple * tf_part(2, 3),
        "d3": idf_date * tf_part(3, 4),
    }
    assert got.keys() == want.keys()
    for d, s in want.items():
        assert got[d] == pytest.approx(s, rel=1e-6)
    assert r.retrieve("apple date", k=3).doc_ids == ["d3", "d2", "d1"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pyserini") is None, reason="pyserini (attnsift[lucene]) not installed")
def test_scores_equal_lucene_via_pyserini():
    from attnsift.retrieval.lucene import LuceneBM25Retriever

    # Documents under 24 terms: Lucene stores their lengths exactly (longer ones are quantized).
    docs = [
        Document("a", "The children's hospital treats bone fractures in 3 wards.", title="Hospital"),
        Document("b", "Vitamin D and calcium supply for bone density in older adults."),
        Document("c", "Assembly of the p53 protein; technology for U.S. labs."),
        Document("d", "Heart attack risk rises with age, says the 2019 study."),
        Document("e", "Bone bone bone: a study of fractures and vitamin intake."),
    ]
    queries = [Query("q1", "bone fractures"), Query("q2", "vitamin D study"), Query("q3", "assembly technologies")]
    ours = BM25Retriever.from_corpus(docs).retrieve_batch(queries, k=5)
    lucene = LuceneBM25Retriever.from_corpus(docs).retrieve_batch(queries, k=5)
    for q in queries:
        a, b = ours[q.id].scores(), lucene[q.id].scores()
        assert a.keys() == b.keys(), q.id
        for d in a:
            assert a[d] == pytest.approx(b[d], rel=1e-4), (q.id, d)
