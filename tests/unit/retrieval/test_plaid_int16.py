"""The int16 exact stage of the plaid search (``impl="int16"``, :mod:`attnsift.indexes.plaid_kernel16`):
within its stated bound of float64 MaxSim over the same compressed tokens, the same top-10 as the float32
kernel on a small index, an odd number of packed positions, independence from the other documents, and
the missing-extra error without numba."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("torch")
pytest.importorskip("numba")

from attnsift.indexes import plaid_kernel, plaid_kernel16
from attnsift.indexes.plaid_index import PlaidIndex
from attnsift.retrieval.plaid import PlaidSearcher
from helpers import plaid_reference_maxsim as _reference, plaid_toy, unit_rows as _unit

DIM = 64


def _corpus(seed: int, dim: int, ndocs: int = 120) -> tuple[PlaidIndex, np.ndarray, np.ndarray]:
    """Documents of 0-30 tokens around 24 directions (two empty), and the directions."""
    toy = plaid_toy(seed, dim, ndocs=ndocs, empty=(5, ndocs - 3))
    return toy["index"], toy["lengths"], toy["words"]


@pytest.fixture(scope="module")
def small() -> dict:
    return plaid_toy(3, DIM, empty=(5, 117), qlens=(1, 7, 32, 70), query_seed=4)


@pytest.mark.parametrize("lq", [1, 7, 32, 70])
def test_int16_within_its_bound_of_float64_and_same_top10_as_float32(small, lq):
    index, q = small["index"], small["queries"][lq]
    docs = np.arange(index.num_docs)
    s = PlaidSearcher(index).centroid_scores(q)
    got = index.exact_scores(q, s, docs, impl="int16")
    f32 = index.exact_scores(q, s, docs, impl="numba")
    ref = _reference(index, q, docs)
    bound = plaid_kernel16.int16_bound(index, q)
    err = np.abs(got - ref).max()
    assert got.dtype == np.float32 and got.shape == (index.num_docs,)
    assert err <= bound + 2e-6 * lq  # the rounding bound plus float32 arithmetic
    assert bound < 2e-3 * lq  # and the bound is small: ~1e-4 per query token
    assert err > np.abs(f32 - ref).max() or lq == 1  # it is a different (rounded) computation
    assert np.all(got[small["lengths"] == 0] == 0) and np.all(got[small["lengths"] > 0] != 0)
    top = lambda x: np.lexsort((docs, -x))[:10].tolist()  # noqa: E731
    assert top(got) == top(f32)


def test_int16_search_gives_the_float32_top10(small):
    searcher = PlaidSearcher(small["index"], ncells=4, candidates=30, pool=60)
    for q in small["queries"].values():
        a_docs, a = searcher.search(q, 10, impl="int16")
        b_docs, b = searcher.search(q, 10, impl="numba")
        assert a_docs.tolist() == b_docs.tolist()
        np.testing.assert_allclose(a, b, atol=2e-3 * q.shape[0])
    assert plaid_kernel.resolve("int16") == "int16" and plaid_kernel.resolve("auto") == plaid_kernel.AUTO


def test_odd_number_of_packed_positions():
    """dim 36 at 2 bits: 9 packed bytes per token (the odd tail of the two-accumulator loop)."""
    index, _, words = _corpus(7, 36, ndocs=40)
    assert index.residuals.shape[1] == 9
    rng = np.random.default_rng(8)
    q = _unit(words[rng.integers(0, 24, 9)] + 0.3 * rng.normal(size=(9, 36)) / 6)
    docs = np.arange(index.num_docs)
    got = index.exact_scores(q, PlaidSearcher(index).centroid_scores(q), docs, impl="int16")
    assert np.abs(got - _reference(index, q, docs)).max() <= plaid_kernel16.int16_bound(index, q) + 2e-5


def test_int16_scores_do_not_depend_on_the_other_documents(small):
    index, q = small["index"], small["queries"][32]
    s = PlaidSearcher(index).centroid_scores(q)
    alone = [index.exact_scores(q, s, np.array([d]), impl="int16")[0] for d in range(0, 120, 11)]
    together = index.exact_scores(q, s, np.arange(0, 120, 11), impl="int16")
    assert np.array_equal(np.array(alone, np.float32), together)


def test_int16_without_numba_names_the_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None  # as if numba were not installed
        from attnsift.errors import MissingDependencyError
        from attnsift.indexes import plaid_kernel
        try:
            plaid_kernel.resolve("int16")
        except MissingDependencyError as exc:
            assert "attnsift[dense]" in str(exc) and "int16" in str(exc), exc
            print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]
