"""The compiled (numba) plaid kernels against the numpy path: exact MaxSim straight from the packed codes,
centroid interaction, candidate generation; empty and one-token documents, query lengths 1 to 70 (more
than one 64-lane chunk), the impl choice and the fallback without numba."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("torch")
pytest.importorskip("numba")

from attnsift.indexes import plaid_kernel
from attnsift.indexes.plaid_index import PlaidIndex
from attnsift.retrieval.plaid import PlaidSearcher
from helpers import plaid_reference_maxsim as _reference, plaid_toy, unit_rows as _unit

DIM = 64


@pytest.fixture(scope="module")
def small() -> dict:
    """120 documents of 0-30 tokens (two empty, two of one token) drawn around 24 directions."""
    return plaid_toy(3, DIM, lengths=(2, 30), empty=(5, 77), single=(6, 90), qlens=(1, 7, 32, 70))


@pytest.mark.parametrize("lq", [1, 7, 32, 70])
def test_exact_kernel_matches_float64_and_the_numpy_path(small, lq):
    index, q = small["index"], small["queries"][lq]
    docs = np.arange(index.num_docs)
    s = PlaidSearcher(index).centroid_scores(q)
    fast = index.exact_scores(q, s, docs, impl="numba")
    slow = index.exact_scores(q, s, docs, impl="numpy")
    ref = _reference(index, q, docs)
    assert fast.dtype == np.float32 and fast.shape == (index.num_docs,)
    assert np.abs(fast - ref).max() / lq < 2e-6  # float32, in a fixed order: measured ~2e-7
    assert np.abs(slow - ref).max() / lq < 5e-3  # the numpy path rounds residuals and query to bfloat16
    empty = small["lengths"] == 0
    assert np.all(fast[empty] == 0) and np.all(fast[~empty] != 0)
    top = lambda x: set(np.lexsort((docs, -x))[:10].tolist())  # noqa: E731
    assert top(fast) == top(ref)


def test_one_token_documents_score_their_token(small):
    index, q = small["index"], small["queries"][7]
    s = PlaidSearcher(index).centroid_scores(q)
    for d in (6, 90):
        row = np.array([index.offsets[d]])
        want = float((q @ index._unnormalised(row)[0]).sum() * index.inverse_norms(row)[0])  # MaxSim of one token
        got = index.exact_scores(q, s, np.array([d]), impl="numba")[0]
        assert got == pytest.approx(want, abs=1e-5)


def test_centroid_interaction_and_probe_kernels_match_numpy(small):
    index = small["index"]
    for lq, q in small["queries"].items():
        searcher = PlaidSearcher(index, ncells=3)
        s = searcher.centroid_scores(q)
        docs = np.arange(index.num_docs)
        np.testing.assert_allclose(index.centroid_interaction(s, docs, impl="numba"),
                                   index.centroid_interaction(s, docs, impl="numpy"), rtol=1e-6, atol=1e-6)
        a_docs, a = searcher.approximate(q, s, impl="numba")
        b_docs, b = searcher.approximate(q, s, impl="numpy")
        assert a_docs.tolist() == b_docs.tolist()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        short = [searcher.shortlist(q, 10, s, impl=impl).tolist() for impl in ("numba", "numpy")]
        assert short[0] == short[1]


def test_search_numba_and_numpy_agree_and_numpy_can_be_forced(small):
    index = small["index"]
    searcher = PlaidSearcher(index, ncells=4, candidates=30, pool=60)
    for lq, q in small["queries"].items():
        a_docs, a = searcher.search(q, 10, impl="numba")
        b_docs, b = searcher.search(q, 10, impl="numpy")
        auto_docs, auto = searcher.search(q, 10)  # numba is importable here: auto is plaid_kernel.AUTO
        want_docs, want = searcher.search(q, 10, impl=plaid_kernel.AUTO)
        assert auto_docs.tolist() == want_docs.tolist() and np.array_equal(auto, want)
        assert set(a_docs.tolist()) == set(b_docs.tolist())
        np.testing.assert_allclose(a, b, atol=5e-3 * lq)
        assert not np.array_equal(a, b) or lq == 1  # the paths differ (float32 against bfloat16)


def test_results_do_not_depend_on_the_documents_scored_with_them(small):
    index, q = small["index"], small["queries"][32]
    s = PlaidSearcher(index).centroid_scores(q)
    alone = [index.exact_scores(q, s, np.array([d]), impl="numba")[0] for d in range(0, 120, 11)]
    together = index.exact_scores(q, s, np.arange(0, 120, 11), impl="numba")
    assert np.array_equal(np.array(alone, np.float32), together)


def test_bad_impl_refused_in_one_line(small):
    searcher = PlaidSearcher(small["index"])
    q = small["queries"][7]
    with pytest.raises(ValueError, match="impl must be one of") as err:
        searcher.search(q, 5, impl="cuda")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="impl must be one of"):
        small["index"].exact_scores(q, searcher.centroid_scores(q), np.arange(3), impl="fast")


def test_uncacheable_function_compiles_in_memory():
    """Where numba finds no writable cache folder (here: a function without a source file) the kernels are
    compiled without the disk cache instead of failing at import."""
    ns: dict = {}
    exec("def f(x):\n    return x * 2 + 1\n", ns)  # noqa: S102 - a function numba cannot cache
    f = plaid_kernel._jit(ns["f"])
    assert f(20) == 41


def test_without_numba_auto_falls_back_to_numpy_and_numba_names_the_extra(small, tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None  # as if numba were not installed
        import numpy as np
        from attnsift.errors import MissingDependencyError
        from attnsift.indexes import plaid_kernel
        from attnsift.indexes.plaid_index import PlaidIndex
        from attnsift.retrieval.plaid import PlaidSearcher
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        idx = PlaidIndex.build(x, np.full(20, 10), ncentroids=8)
        s = PlaidSearcher(idx, candidates=10)
        assert not plaid_kernel.available() and plaid_kernel.resolve("auto") == "numpy"
        a = s.search(x[:3], 5)
        b = s.search(x[:3], 5, impl="numpy")
        assert a[0].tolist() == b[0].tolist() and np.array_equal(a[1], b[1])
        try:
            s.search(x[:3], 5, impl="numba")
        except MissingDependencyError as exc:
            assert "attnsift[dense]" in str(exc), exc
            print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]


@pytest.mark.parametrize("nbits", [1, 4])
def test_exact_kernel_reads_one_and_four_bit_residuals(nbits):
    rng = np.random.default_rng(nbits)
    toks = _unit(rng.normal(size=(300, 32)))
    index = PlaidIndex.build(toks, np.full(15, 20), ncentroids=8, nbits=nbits)
    q = _unit(rng.normal(size=(5, 32)))
    docs = np.arange(15)
    got = index.exact_scores(q, PlaidSearcher(index).centroid_scores(q), docs, impl="numba")
    assert np.abs(got - _reference(index, q, docs)).max() < 1e-5


def test_best_by_partition_equals_a_full_sort_with_ties():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        docs = rng.choice(1000, n, replace=False)
        scores = rng.integers(0, 4, n).astype(np.float64)  # many ties: the lower position wins
        keep = int(rng.integers(1, 70))
        want = np.sort(docs[np.lexsort((docs, -scores))[:keep]])
        assert PlaidSearcher._best(docs, scores, keep).tolist() == want.tolist()


def test_memory_mapped_index_gives_the_same_results(small, tmp_path):
    index = small["index"]
    mapped = PlaidIndex.load(tmp_path, index.save(tmp_path), mmap=True)
    assert not mapped.residuals.flags.writeable  # read-only maps are read by the kernels as they are
    q = small["queries"][32]
    a, b = PlaidSearcher(index, candidates=20).search(q, 10), PlaidSearcher(mapped, candidates=20).search(q, 10)
    assert a[0].tolist() == b[0].tolist() and np.array_equal(a[1], b[1])
