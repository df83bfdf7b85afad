"""IVF-PQ and HNSW dense indexes: recall against Flat, streamed filling, options checked before work,
save/load with checksums (small clustered random vectors; MiniLM on 48 short texts for the retriever)."""
from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_faiss_thread")

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.faiss_index import FaissIndex, estimated_bytes, resolve_index_params, sample_positions
from helpers import TOPIC_NOTES, clustered_vectors

N, DIM = 3000, 32


def clustered(n: int = N, seed: int = 0, centres: int = 300) -> np.ndarray:
    return clustered_vectors(n, DIM, seed, centres)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = clustered()
    q = clustered(100, seed=1)
    truth = FaissIndex.build(x, "flat").search(q, 10)[1]
    return x, q, truth


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def serialized(index: FaissIndex) -> bytes:
    return faiss.serialize_index(index.index).tobytes()


# ------------------------------------------------------------------------------------ recall
def test_ivfpq_recall_at_10_against_flat_and_the_nprobe_trade_off(data):
    x, q, truth = data
    idx = FaissIndex.build(x, "ivfpq", nlist=16, pq_m=16, nbits=6, nprobe=4)
    assert idx.params == {"nlist": 16, "pq_m": 16, "nbits": 6, "nprobe": 4, "train_size": 100_000, "seed": 0,
                          "train_size_used": N}
    by_nprobe = {p: recall(idx.search(q, 10, nprobe=p)[1], truth) for p in (1, 4, 16)}
    # 12 bytes of codes per vector (against 128 as float32): recall@10 >= 0.8 with 4 of 16 lists probed
    assert by_nprobe[4] >= 0.8, by_nprobe
    assert by_nprobe[1] < by_nprobe[4] <= by_nprobe[16] + 1e-9
    assert idx.params["nprobe"] == 4 and idx.index.nprobe == 4  # a per-call nprobe changes nothing after it
    assert recall(idx.search(q, 10)[1], truth) == by_nprobe[4]


def test_hnsw_recall_at_10_against_flat(data):
    x, q, truth = data
    idx = FaissIndex.build(x, "hnsw", hnsw_m=16, ef_construction=64)
    assert recall(idx.search(q, 10, ef_search=16)[1], truth) <= recall(idx.search(q, 10, ef_search=128)[1], truth)
    assert recall(idx.search(q, 10)[1], truth) >= 0.95  # efSearch 128 by default


# ------------------------------------------------------------------------------------ streaming
def test_streamed_ivfpq_equals_one_shot_add(data):
    x = data[0]
    batches = lambda: (x[i : i + 333] for i in range(0, N, 333))  # noqa: E731  (odd size: chunks do not align)
    streamed = FaissIndex.build_streaming(batches, N, DIM, "ivfpq", nlist=16, pq_m=8, nbits=6, train_size=2500,
                                          add_chunk=1000, progress=False)
    # the same procedure by hand, with faiss's one-shot add of every vector
    oneshot = FaissIndex.create(DIM, N, "ivfpq", nlist=16, pq_m=8, nbits=6, train_size=2500)
    oneshot.train(x[sample_positions(N, 2500, 0)])
    oneshot.index.add(x)
    assert serialized(streamed) == serialized(oneshot)
    assert serialized(FaissIndex.build(x, "ivfpq", nlist=16, pq_m=8, nbits=6, train_size=2500)) == serialized(oneshot)
    flat = FaissIndex.build_streaming(batches, N, DIM, "flat", progress=False)
    assert serialized(flat) == serialized(FaissIndex.build(x, "flat"))


def test_streamed_hnsw_does_not_depend_on_the_batch_size(data):
    x = data[0]
    # one faiss thread (the fixture): a parallel HNSW insert is ordered by the threads' timing
    a = FaissIndex.build_streaming(lambda: (x[i : i + 97] for i in range(0, N, 97)), N, DIM, "hnsw", hnsw_m=8,
                                   ef_construction=32, add_chunk=1000, progress=False)
    b = FaissIndex.build(x, "hnsw", hnsw_m=8, ef_construction=32, add_chunk=1000)
    assert serialized(a) == serialized(b)


def test_streaming_refuses_a_wrong_count_or_a_one_shot_iterator(data):
    x = data[0]
    with pytest.raises(ValueError, match="the batches held 2000 vectors, 3000 were announced"):
        FaissIndex.build_streaming(lambda: iter((x[:2000],)), N, DIM, "flat", progress=False)
    with pytest.raises(ValueError, match="more than the 100 vectors announced"):
        FaissIndex.build_streaming(lambda: iter((x[:2000],)), 100, DIM, "flat", progress=False)
    with pytest.raises(TypeError, match="batches must be a function"):
        FaissIndex.build_streaming(iter((x,)), N, DIM, "ivfpq", progress=False)
    with pytest.raises(ValueError, match=r"vectors must be \[n, 32\]"):
        FaissIndex.build_streaming(lambda: iter((x[:, :16],)), N, DIM, "flat", progress=False)
    untrained = FaissIndex.create(DIM, N, "ivfpq", nlist=8)
    with pytest.raises(ValueError, match="not trained yet"):
        untrained.add(x[:10])


# ------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("kind, params, message", [
    ("ivfpq", {"nlist": 5000}, r"nlist \(5000\) exceeds the 3000 training vectors"),
    ("ivfpq", {"pq_m": 7}, r"pq_m \(m\) must divide the dimension 32, got 7; choose one of \[1, 2, 4, 8, 16, 32\]"),
    ("ivfpq", {"nbits": 12}, "nbits=12 trains 4096 centroids per sub-quantiser but only 3000 training vectors"),
    ("ivfpq", {"nbits": 17}, r"nbits must be in 1..16"),
    ("ivfpq", {"nprobe": 0}, "nprobe must be an integer >= 1"),
    ("ivfpq", {"hnsw_m": 8}, "hnsw_m do\\(es\\) not apply to index_type 'ivfpq'"),
    ("hnsw", {"hnsw_m": 1}, "hnsw_m must be an integer >= 2"),
    ("hnsw", {"nlist": 4}, "nlist do\\(es\\) not apply to index_type 'hnsw'"),
    ("flat", {"efsearch": 4}, "unknown faiss option\\(s\\) efsearch"),
    ("ivf", {}, "index_type must be one of"),
])
def test_bad_options_are_one_line_errors(kind, params, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve_index_params(kind, N, DIM, **params)
    assert "\n" not in str(err.value)


def test_defaults_scale_with_the_collection_and_memory_is_estimated():
    p = resolve_index_params("ivfpq", 8_841_823, 384)  # nlist: 4 sqrt(N) = 11,894, capped at 100,000 / 39
    assert p == {"nlist": 2564, "pq_m": 48, "nbits": 8, "nprobe": 16, "train_size": 100_000, "seed": 0}
    assert resolve_index_params("ivfpq", 500, 384)["nbits"] == 6  # PQ needs 2**nbits training vectors
    assert resolve_index_params("ivfpq", 8_841_823, 384, train_size=500_000)["nlist"] == 11894
    assert resolve_index_params("flat", 10, 8, seed=3) == {}  # a seed changes nothing there: accepted
    assert estimated_bytes("ivfpq", 8_841_823, 384, p) < 1e9 < 15e9 < estimated_bytes("hnsw", 8_841_823, 384,
                                                                                    resolve_index_params("hnsw", 1, 384))
    with pytest.raises(ValueError, match="needs about .* GB in memory, more than this machine's"):
        FaissIndex.create(384, 10**10, "hnsw")


def test_search_options_belong_to_their_index_type(data):
    x = data[0]
    flat = FaissIndex.build(x[:500], "flat")
    with pytest.raises(ValueError, match="nprobe applies to an ivfpq index, this one is 'flat'"):
        flat.search(x[:2], 3, nprobe=4)
    ivf = FaissIndex.build(x[:1000], "ivfpq", nlist=8, pq_m=8)
    with pytest.raises(ValueError, match=r"nprobe \(9\) exceeds the index's nlist \(8\)"):
        ivf.set_search_params(nprobe=9)
    with pytest.raises(ValueError, match="ef_search applies to an hnsw index"):
        ivf.search(x[:2], 3, ef_search=10)


# ------------------------------------------------------------------------------------ the retriever
TEXTS = TOPIC_NOTES



def test_dense_ivfpq_round_trip_with_search_options_and_checksums(tmp_path, encoder):
    from attnsift.retrieval.dense import DenseRetriever

    r = DenseRetriever.from_corpus(TEXTS, encoder=encoder, index="ivfpq", nlist=4, m=16, nprobe=2, cache=False)
    assert r.index.index_type == "ivfpq" and r.index.params["pq_m"] == 16 and r.index.params["nbits"] == 3
    qs = ["kittens", "diabetes treatment", "stock prices", "bone density"]
    before = r.set_search_options(nprobe=4).retrieve_batch(qs, k=5)
    path = r.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["index"]["index_type"] == "ivfpq" and manifest["index"]["params"]["nlist"] == 4
    loaded = DenseRetriever.load(path, encoder=encoder, nprobe="4")
    after = loaded.retrieve_batch(qs, k=5)
    for qid in before:
        assert after[qid].doc_ids == before[qid].doc_ids
        assert [c.score for c in after[qid]] == [c.score for c in before[qid]]
        assert [c.document.text for c in after[qid]] == [c.document.text for c in before[qid]]
    with pytest.raises(ValueError, match="ef_search applies to an hnsw index, this one is 'ivfpq'"):
        DenseRetriever.load(path, encoder=encoder, ef_search=10)
    with pytest.raises(ValueError, match="a saved dense index keeps how it was built; got options nlist"):
        DenseRetriever.load(path, encoder=encoder, nlist=8)
    blob = bytearray((path / "index.faiss").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "index.faiss").write_bytes(bytes(blob))
    with pytest.raises(IndexCorruptedError, match="index.faiss"):
        DenseRetriever.load(path, encoder=encoder)


@pytest.mark.parametrize("options, message", [
    ({"index": "ivfpq", "nlist": "100"}, r"nlist \(100\) exceeds the 48 training vectors"),
    ({"index": "ivfpq", "m": "7"}, r"pq_m \(m\) must divide the dimension 384, got 7"),
    ({"index": "flat", "m": "8"}, "m=8 \\(faiss's M\\) applies to index_type ivfpq .* or hnsw"),
    ({"index": "hnsw", "nprobe": "4"}, "nprobe applies to index_type ivfpq, got index_type='hnsw'"),
])
def test_bad_options_refused_before_encoding(tmp_path, encoder, options, message):
    from attnsift.registry import build_index

    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=message):
        build_index(TEXTS, "dense", encoder=encoder, options={**options, "cache_dir": str(cache)})
    assert not cache.exists()  # nothing was encoded


def test_cli_index_takes_the_faiss_options(tmp_path, encoder):
    from typer.testing import CliRunner

    from attnsift.cli.main import app

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "idx"
    res = CliRunner().invoke(app, ["index", "--input", str(docs), "--out", str(out), "--retriever", "dense",
                                   "--device", "cpu", "--retriever-option", "index=ivfpq", "--retriever-option", "nlist=4",
                                   "--retriever-option", "m=8", "--retriever-option", "cache=false"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "manifest.json").read_text())["index"]
    assert info["index_type"] == "ivfpq" and info["params"]["nlist"] == 4 and info["params"]["pq_m"] == 8
    bad = CliRunner().invoke(app, ["index", "--input", str(docs), "--out", str(tmp_path / "bad"), "--retriever", "dense",
                                   "--retriever-option", "index=ivfpq", "--retriever-option", "m=7"])
    assert bad.exit_code == 2 and "must divide the dimension 384" in bad.output
