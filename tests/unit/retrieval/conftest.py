"""Fixtures shared by the retrieval unit tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_faiss_thread():
    """One OpenMP thread for faiss (use with ``pytestmark = pytest.mark.usefixtures("one_faiss_thread")``):
    spinning threads made k-means 10x slower on the shared CI VM, and a parallel HNSW insert depends on the
    threads' timing."""
    faiss = pytest.importorskip("faiss")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder():
    """The real all-MiniLM-L6-v2 on the CPU (a test module may override this fixture with a tiny model)."""
    pytest.importorskip("sentence_transformers")
    from attnsift.retrieval.encoders import Encoder

    return Encoder("minilm", device="cpu")
