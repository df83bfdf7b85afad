"""IVF-PQ with a refine stage (faiss ``IndexRefine``): recall against Flat with and without it, streamed
build, save/load with the manifest's checksums, search-time ``k_factor``, one-line refusals (small
clustered random vectors; MiniLM on 48 short texts for the retriever)."""
from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_faiss_thread")

from attnsift.errors import IndexCorruptedError
from attnsift.indexes import faiss_refine
from attnsift.indexes.faiss_index import FaissIndex, check_memory, estimated_bytes, resolve_index_params
from helpers import TOPIC_NOTES, clustered_vectors

N, DIM = 3000, 32
PQ = {"nlist": 16, "pq_m": 4, "nbits": 6, "nprobe": 4}  # 3 bytes of codes per vector: PQ-limited recall


def clustered(n: int = N, seed: int = 0, centres: int = 300) -> np.ndarray:
    return clustered_vectors(n, DIM, seed, centres)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, q = clustered(), clustered(100, seed=1)
    return x, q, FaissIndex.build(x, "flat").search(q, 10)[1]


@pytest.fixture(scope="module")
def plain(data) -> FaissIndex:
    return FaissIndex.build(data[0], "ivfpq", **PQ)


@pytest.fixture(scope="module")
def sq8(data) -> FaissIndex:
    return FaissIndex.build(data[0], "ivfpq", refine="sq8", **PQ)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# ------------------------------------------------------------------------------------ recall
@pytest.mark.parametrize("refine", ["sq8", "fp16", "flat"])
def test_refine_lifts_recall_over_the_pq_codes_alone(data, plain, refine):
    x, q, truth = data
    idx = FaissIndex.build(x, "ivfpq", refine=refine, **PQ)
    assert idx.params["refine"] == refine and idx.params["k_factor"] == 8 and idx.refined
    assert isinstance(idx.index, faiss.IndexRefine)
    base = recall(plain.search(q, 10)[1], truth)
    refined = recall(idx.search(q, 10)[1], truth)
    assert base < 0.85 and refined >= base + 0.1, (base, refined)  # measured: 0.80 -> 0.94
    # k_factor=1 re-scores the PQ top-k only: the same documents as the PQ codes alone
    assert recall(idx.search(q, 10, k_factor=1)[1], truth) == pytest.approx(base)
    by_k = [recall(idx.search(q, 10, k_factor=k)[1], truth) for k in (1, 2, 16)]
    assert by_k[0] < by_k[1] <= by_k[2] + 1e-9, by_k
    assert idx.index.k_factor == 8  # a per-call k_factor changes nothing after it


def test_refined_scores_are_the_second_copys_inner_products(data, sq8):
    x, q, _ = data
    flat = FaissIndex.build(x, "ivfpq", refine="flat", **PQ)
    scores, pos = flat.search(q[:5], 10)
    exact = np.einsum("bd,bkd->bk", q[:5], x[pos])
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)
    s8, p8 = sq8.search(q[:5], 10)
    np.testing.assert_allclose(s8, np.einsum("bd,bkd->bk", q[:5], x[p8]), atol=0.02)  # 8-bit codes: close


def test_nprobe_and_k_factor_together_per_call_and_from_now_on(data, sq8):
    x, q, truth = data
    low = recall(sq8.search(q, 10, nprobe=1)[1], truth)
    high = recall(sq8.search(q, 10, nprobe=16, k_factor=16)[1], truth)
    assert low < high and sq8.index.k_factor == 8 and sq8._ivf().nprobe == 4
    idx = FaissIndex.build(x, "ivfpq", refine="sq8", **PQ)
    idx.set_search_params(nprobe=16, k_factor=16)
    assert idx.params["k_factor"] == 16 and idx.params["nprobe"] == 16 and idx._ivf().nprobe == 16
    assert recall(idx.search(q, 10)[1], truth) == high


# ------------------------------------------------------------------------------------ building
def test_streamed_refined_build_equals_the_one_shot_build(data, sq8):
    x = data[0]
    batches = lambda: (x[i : i + 333] for i in range(0, N, 333))  # noqa: E731
    streamed = FaissIndex.build_streaming(batches, N, DIM, "ivfpq", refine="sq8", add_chunk=1000, progress=False, **PQ)
    assert faiss.serialize_index(streamed.index).tobytes() == faiss.serialize_index(sq8.index).tobytes()


def test_the_second_copy_is_reserved_once_and_counted_in_the_estimate():
    idx = FaissIndex.create(DIM, 5000, "ivfpq", refine="sq8", nlist=8, pq_m=4, nbits=4)
    codes = faiss.downcast_index(idx.index.refine_index).codes
    assert codes.size() == 0 and idx.ntotal == 0
    params = resolve_index_params("ivfpq", 10**6, 384, refine="sq8")
    plain = resolve_index_params("ivfpq", 10**6, 384)
    assert estimated_bytes("ivfpq", 10**6, 384, params) - estimated_bytes("ivfpq", 10**6, 384, plain) == 384 * 10**6
    assert faiss_refine.refine_bytes_per_vector("fp16", 384) == 768


# ------------------------------------------------------------------------------------ persistence
def test_save_and_load_round_trip_keeps_the_refine_stage(tmp_path, data, sq8):
    q = data[1]
    sq8.save(tmp_path)
    back = FaissIndex.load(tmp_path, sq8.info())
    assert back.refined and back.params["k_factor"] == 8 and isinstance(back.index, faiss.IndexRefine)
    for kw in ({}, {"k_factor": 2}, {"nprobe": 16, "k_factor": 4}):
        for a, b in zip(back.search(q, 10, **kw), sq8.search(q, 10, **kw)):
            np.testing.assert_array_equal(a, b)
    assert back.nbytes() == (tmp_path / "index.faiss").stat().st_size
    # a manifest that says "no refine" over a refined file is caught
    info = {**sq8.info(), "params": {k: v for k, v in sq8.params.items() if k not in ("refine", "k_factor")}}
    with pytest.raises(IndexCorruptedError, match="disagree on refine"):
        FaissIndex.load(tmp_path, info)


# ------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("index_type, params, message", [
    ("ivfpq", {"refine": "sq4"}, "refine must be one of sq8, fp16, flat"),
    ("ivfpq", {"k_factor": 4}, "k_factor=4 sets how many PQ candidates"),
    ("ivfpq", {"refine": "sq8", "k_factor": 0}, "k_factor must be an integer >= 1"),
    ("hnsw", {"refine": "sq8"}, "refine do\\(es\\) not apply to index_type 'hnsw'"),
    ("flat", {"k_factor": 2}, "k_factor do\\(es\\) not apply to index_type 'flat'"),
])
def test_bad_refine_options_are_one_line_errors(index_type, params, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve_index_params(index_type, 10_000, DIM, **params)
    assert "\n" not in str(err.value)


def test_a_second_copy_larger_than_ram_is_refused_before_any_allocation(plain, data):
    total = faiss_refine.total_ram()
    if total is None:
        pytest.skip("this OS does not report its memory")
    n = total // 700  # float32 copy: 2.2x RAM, fp16: 1.1x, sq8: 0.55x
    params = resolve_index_params("ivfpq", n, 384, refine="flat")
    with pytest.raises(ValueError, match=r"refine=flat keeps 1536 bytes per vector: .* use refine=sq8 \(") as err:
        check_memory("ivfpq", n, 384, params)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="refine=flat keeps 1536 bytes per vector"):
        FaissIndex.create(384, n, "ivfpq", refine="flat")
    check_memory("ivfpq", n, 384, resolve_index_params("ivfpq", n, 384, refine="sq8"))  # fits: no error
    with pytest.raises(ValueError, match="k_factor applies to an ivfpq index built with refine"):
        plain.search(data[1][:2], 3, k_factor=4)
    with pytest.raises(ValueError, match="k_factor applies to an ivfpq index built with refine"):
        FaissIndex.build(data[0][:500], "flat").set_search_params(k_factor=4)


# ------------------------------------------------------------------------------------ the retriever
TEXTS = TOPIC_NOTES



def test_dense_retriever_with_refine_round_trip_and_k_factor_at_load(tmp_path, encoder):
    from attnsift.retrieval.dense import DenseRetriever

    qs = ["kittens", "diabetes treatment", "stock prices", "bone density"]
    exact = DenseRetriever.from_corpus(TEXTS, encoder=encoder, cache=False).retrieve_batch(qs, k=5)
    r = DenseRetriever.from_corpus(TEXTS, encoder=encoder, index="ivfpq", nlist=2, m=16, refine="sq8", k_factor="10",
                                   cache=False)
    assert r.index.params["refine"] == "sq8" and r.index.params["k_factor"] == 10
    before = r.retrieve_batch(qs, k=5)
    for qid in before:  # 50 candidates of 48 documents re-scored: the exact top-5
        assert before[qid].doc_ids == exact[qid].doc_ids
    path = r.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["index"]["params"]["refine"] == "sq8"
    loaded = DenseRetriever.load(path, encoder=encoder)
    after = loaded.retrieve_batch(qs, k=5)
    for qid in before:
        assert after[qid].doc_ids == before[qid].doc_ids
        assert [c.score for c in after[qid]] == [c.score for c in before[qid]]
    one = DenseRetriever.load(path, encoder=encoder, k_factor="1")
    assert one.index.index.k_factor == 1 and one.index.params["k_factor"] == 1
    assert loaded.set_search_options(k_factor=1).retrieve_batch(qs, k=5)["q0"].doc_ids == \
        one.retrieve_batch(qs, k=5)["q0"].doc_ids
    with pytest.raises(ValueError, match="option k_factor='0': expected an integer >= 1"):
        DenseRetriever.load(path, encoder=encoder, k_factor="0")
    with pytest.raises(ValueError, match="got options refine"):
        DenseRetriever.load(path, encoder=encoder, refine="flat")
    blob = bytearray((path / "index.faiss").read_bytes())
    blob[-10] ^= 0xFF  # inside the sq8 copy, at the end of the file
    (path / "index.faiss").write_bytes(bytes(blob))
    with pytest.raises(IndexCorruptedError, match="index.faiss"):
        DenseRetriever.load(path, encoder=encoder)


@pytest.mark.parametrize("options, message", [
    ({"refine": "sq8"}, "refine=sq8 re-scores an IVF-PQ index's candidates; got index_type='flat'"),
    ({"index": "ivfpq", "nlist": "2", "k_factor": "4"}, "k_factor=4 sets how many PQ candidates refine re-scores"),
    ({"index": "ivfpq", "refine": "sq2"}, "refine"),
])
def test_dense_config_refuses_refine_misuse_before_encoding(tmp_path, encoder, options, message):
    from attnsift.registry import build_index
    from attnsift.retrieval.config import DenseConfig

    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=message):
        build_index(TEXTS, "dense", encoder=encoder, options={**options, "cache_dir": str(cache)})
    assert not cache.exists()
    assert DenseConfig(index="ivfpq", refine="sq8").index_options() == {"refine": "sq8"}
