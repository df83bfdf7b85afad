"""Centroid scores computed transposed (``S^T`` in the kernels' layout) and candidate generation from them,
against float64 and the numpy path; queries searched in threads give the same Run as one thread."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("torch")
pytest.importorskip("numba")

from attnsift.indexes import plaid_kernel, plaid_scores
from attnsift.retrieval.late_interaction import LateInteractionRetriever
from attnsift.retrieval.plaid import PlaidSearcher
from attnsift.types import Document, Query
from helpers import plaid_toy

DIM = 48


@pytest.fixture(scope="module")
def small() -> dict:
    """90 documents of 0-25 tokens around 16 directions, 30 centroids (not a multiple of the group of 4)."""
    return plaid_toy(11, DIM, ndocs=90, nwords=16, lengths=(1, 25), empty=(3, 50), ncentroids=30,
                     qlens=(1, 8, 21, 64, 70))


@pytest.mark.parametrize("lq", [1, 8, 21, 64, 70])
def test_scores_t_is_q_c_transposed_in_the_kernels_layout(small, lq):
    index, q = small["index"], small["queries"][lq]
    st = plaid_scores.centroid_scores_t(index, q)
    nch, cw = plaid_kernel.layout(lq)
    assert st.shape == (nch, index.ncentroids, cw) and st.dtype == np.float32
    want = (q.astype(np.float64) @ index.centroids.astype(np.float64).T)  # [Lq, K]
    flat = st.transpose(1, 0, 2).reshape(index.ncentroids, nch * cw)  # [K, lanes]
    assert np.abs(flat[:, :lq].T - want).max() < 1e-6  # float32 fused multiply-adds: ~1e-7 on unit vectors
    assert not flat[:, lq:].any()  # padding lanes are zero
    s = PlaidSearcher(index).centroid_scores(q)  # the torch product the numpy path uses
    np.testing.assert_allclose(plaid_kernel.transposed(s), st, atol=1e-6)


@pytest.mark.parametrize("ncells", [1, 3, 30])
def test_probe_from_scores_t_matches_the_numpy_path(small, ncells):
    index = small["index"]
    searcher = PlaidSearcher(index, ncells=ncells)
    for lq, q in small["queries"].items():
        s = searcher.centroid_scores(q)
        st = plaid_kernel.transposed(s)  # the same float32 values on both paths
        a_docs, a = plaid_scores.probe(index, st, lq, searcher.ncells)
        b_docs, b = searcher.approximate(q, s, impl="numpy")
        assert a_docs.tolist() == b_docs.tolist() and a_docs.size > 0
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        c_docs, _ = searcher.approximate(q, impl="numba")  # S^T computed by the kernel
        assert c_docs.tolist() == a_docs.tolist()


def test_probe_ties_keep_the_lower_centroid_and_scratch_is_reset():
    # 3 centroids, 2 query tokens; token 0 ties centroids 1 and 2 (keeps 1), token 1 prefers 2
    st = np.zeros((1, 3, 8), np.float32)
    st[0, :, 0] = [0.1, 0.5, 0.5]
    st[0, :, 1] = [0.2, 0.1, 0.9]
    index = SimpleNamespace(num_docs=4, ivf_offsets=np.array([0, 1, 2, 3], np.int64),
                            ivf_docs=np.array([0, 1, 2], np.int32))
    docs, scores = plaid_scores.probe(index, st, 2, 1)
    assert docs.tolist() == [1, 2]  # centroid 1 holds document 1, centroid 2 document 2
    # ncells=1: a token's lowest probed score is its best, so every candidate scores 0.5 + 0.9
    np.testing.assert_allclose(scores, [1.4, 1.4], rtol=1e-6)
    again, _ = plaid_scores.probe(index, st, 2, 1)
    assert again.tolist() == docs.tolist()  # the per-thread scratch arrays were left at zero


TEXTS = ["Cats sleep most of the day.", "Insulin regulates blood sugar.", "Python is a programming language.",
         "Vitamin D supports bone health.", "Central banks set interest rates.", "Dogs love long walks.",
         "Metformin treats type 2 diabetes.", "Rust compiles to fast native code.",
         "Calcium and bones.", "Stock markets fell today."]
DOCS = [Document(f"d{i}", t) for i, t in enumerate(TEXTS)]
QUERIES = [Query(f"q{i}", t) for i, t in enumerate(["sleeping cats", "diabetes drugs", "systems programming",
                                                     "bone density", "interest rates", "dog walking"])]


@pytest.fixture(scope="module")
def late() -> LateInteractionRetriever:
    from attnsift.retrieval.encoders import Encoder

    return LateInteractionRetriever.from_corpus(DOCS, encoder=Encoder("minilm", device="cpu"), index="plaid",
                                                cache=False, candidates=5)


def test_threads_give_the_same_run_and_bad_counts_are_refused(late):
    qtok = late.encoder.encode_tokens([q.text for q in QUERIES], is_query=True)
    one = late.retrieve_encoded(QUERIES, qtok, k=4)
    for n in (2, 3, -1):
        many = late.retrieve_encoded(QUERIES, qtok, k=4, n_threads=n)
        assert list(many) == list(one)  # query order kept
        assert many.to_dict() == one.to_dict()  # ids and scores, bit for bit
    assert late.retrieve_batch(QUERIES, k=4, n_threads=2).to_dict() == late.retrieve_batch(QUERIES, k=4).to_dict()
    top = one["q1"]
    assert top.candidates[0].document is not None and top.candidates[0].document.id == top.doc_ids[0]
    assert [c.score for c in top] == sorted((c.score for c in top), reverse=True)
    for bad in (0, -2, True, "2", 1.5):
        with pytest.raises(ValueError, match="n_threads must be a positive integer or -1"):
            late.retrieve_batch(QUERIES, k=4, n_threads=bad)
