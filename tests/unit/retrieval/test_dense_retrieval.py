"""Encoder parity, dense retrieval on faiss, index save/load and its failure modes (real MiniLM)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.faiss_index import FaissIndex
from attnsift.retrieval.dense import DenseRetriever
from attnsift.retrieval.encoders import Encoder
from attnsift.types import Document, Query

TEXTS = [
    "Cats purr when they are content and sleep most of the day.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Vitamin D supplementation and bone mineral density in older adults.",
    "Python is a programming language with dynamic typing.",
    "Dogs bark at strangers, especially at night.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "Insulin resistance is a hallmark of type 2 diabetes.",
]
DOCS = [Document(f"d{i}", t, title="T" if i % 2 else None) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder("minilm", device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def retriever(encoder) -> DenseRetriever:
    return DenseRetriever.from_corpus(DOCS, encoder=encoder)


@pytest.fixture(scope="module")
def doc_vecs(encoder) -> np.ndarray:
    return encoder.encode_documents([d.contents for d in DOCS])


def _tiny_model(folder, seed):
    """A random 1-layer BERT with MiniLM's tokenizer, saved as a model folder (no download)."""
    from helpers import write_tiny_encoder

    return write_tiny_encoder(folder, seed=seed)


def test_encoder_matches_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(encoder.location, device="cpu")
    texts = TEXTS + ["x", "a " * 400]  # a single token, and one far beyond the 256-token limit
    ours = encoder.encode_documents(texts)
    ref = st.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Batch size and order must not change the vectors (length-sorted batching restores order).
    encoder.batch_size = 64
    try:
        np.testing.assert_allclose(encoder.encode_documents(texts[::-1])[::-1], ours, atol=1e-5)
    finally:
        encoder.batch_size = 3
    assert encoder.name == "sentence-transformers/all-MiniLM-L6-v2" and encoder.dim == 384 and encoder.max_length == 256


def test_prefixes_apply(encoder):
    e = Encoder("minilm", device="cpu", query_prefix="query: ", doc_prefix="passage: ")
    np.testing.assert_allclose(e.encode_queries(["cats"]), encoder.encode_documents(["query: cats"]), atol=1e-5)
    np.testing.assert_allclose(e.encode_documents(["cats"]), encoder.encode_documents(["passage: cats"]), atol=1e-5)


def test_token_vectors_drop_special_tokens(encoder):
    toks = encoder.encode_tokens(["Cats purr.", "a"], is_query=False)
    n_plain = [len(encoder.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ["Cats purr.", "a"]]
    assert [t.shape for t in toks] == [(n_plain[0], 384), (n_plain[1], 384)]
    for t in toks:
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    long = encoder.encode_tokens(["word " * 600], is_query=False)[0]
    assert long.shape[0] == encoder.max_length - 2  # truncated, [CLS]/[SEP] dropped


def test_long_query_is_truncated_with_warning(encoder, caplog):
    words = " ".join(f"w{i}" for i in range(400))
    with caplog.at_level(logging.WARNING, logger="attnsift.retrieval.encoders"):
        v = encoder.encode_queries([words])
    assert any("truncated" in r.getMessage() for r in caplog.records)
    ids = encoder.tokenizer(words, truncation=True, max_length=encoder.max_length, add_special_tokens=False)["input_ids"]
    cut = encoder.tokenizer.decode(ids[: encoder.max_length - 2])
    np.testing.assert_allclose(v, encoder.encode_queries([cut]), atol=1e-4)


def test_flat_search_equals_brute_force(encoder, retriever, doc_vecs):
    queries = ["pets making noise", "economics and interest", "diabetes and insulin"]
    run = retriever.retrieve_batch([Query(f"q{i}", q) for i, q in enumerate(queries)], k=5)
    dv = doc_vecs
    qv = encoder.encode_queries(queries)
    brute = qv @ dv.T
    for i, q in enumerate(queries):
        r = run[f"q{i}"]
        order = np.argsort(-brute[i], kind="stable")[:5]
        assert r.doc_ids == [DOCS[j].id for j in order]
        np.testing.assert_allclose([c.score for c in r], brute[i][order], atol=1e-5)
        assert all(c.document is not None and c.document.id == c.doc_id for c in r)
    assert retriever.retrieve("cats", k=1).doc_ids == ["d0"]
    assert len(retriever.retrieve("cats", k=100)) == len(DOCS)  # k beyond the corpus: all documents


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_approximate_indexes_are_sane(index_type):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    exact = FaissIndex.build(x, "flat").search(q, 10)[1]
    idx = FaissIndex.build(x, index_type, nprobe=8) if index_type == "ivfpq" else FaissIndex.build(x, index_type)
    s, p = idx.search(q, 10)
    assert p.shape == (50, 10) and (np.diff(s, axis=1) <= 1e-6).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, p)])
    top1 = np.mean(p[:, 0] == np.arange(50))
    assert recall > (0.9 if index_type == "hnsw" else 0.3) and top1 > (0.95 if index_type == "hnsw" else 0.6)


def test_dense_retriever_index_types(encoder, doc_vecs):
    for kind in ("hnsw", "ivfpq"):
        r = DenseRetriever(encoder, FaissIndex.build(doc_vecs, kind), DOCS)
        assert r.retrieve("Insulin resistance in type 2 diabetes", k=3).doc_ids[0] == "d7"


def test_save_load_round_trip(tmp_path, retriever, encoder):
    path = retriever.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["encoder"]["name"] == encoder.name and manifest["dim"] == 384 and manifest["doc_count"] == len(DOCS)
    assert manifest["metric"] == "ip" and manifest["normalize"] is True
    loaded = DenseRetriever.load(path, encoder=encoder)
    qs = [Query("a", "stock prices"), Query("b", "plants and light")]
    a, b = retriever.retrieve_batch(qs, k=4), loaded.retrieve_batch(qs, k=4)
    for qid in ("a", "b"):
        assert a[qid].doc_ids == b[qid].doc_ids
        np.testing.assert_allclose([c.score for c in a[qid]], [c.score for c in b[qid]], atol=1e-6)
        assert [c.document.title for c in b[qid]] == [c.document.title for c in a[qid]]
    # Without a model argument, the encoder recorded in the manifest is used.
    assert DenseRetriever.load(path).retrieve("stock prices", k=2).doc_ids == a["a"].doc_ids[:2]


def test_corrupted_index_is_detected(tmp_path, retriever):
    path = retriever.save(tmp_path / "idx")
    with open(path / "index.faiss", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff\xff\xff\xff")
    with pytest.raises(IndexCorruptedError, match="checksum"):
        DenseRetriever.load(path, encoder=retriever.encoder)
    with pytest.raises(IndexCorruptedError, match="no index"):
        DenseRetriever.load(tmp_path / "nowhere")


def test_mismatched_encoder_is_an_error(tmp_path, retriever):
    path = retriever.save(tmp_path / "idx")
    other = Encoder(_tiny_model(tmp_path / "a" / "enc", seed=0))
    with pytest.raises(ValueError, match="built with encoder"):
        DenseRetriever.load(path, encoder=other)
    # Same folder name and dimension but other weights: caught by the probe vector.
    built = DenseRetriever.from_corpus(DOCS, encoder=other).save(tmp_path / "tiny")
    impostor = _tiny_model(tmp_path / "b" / "enc", seed=1)
    with pytest.raises(IndexCorruptedError, match="different vectors"):
        DenseRetriever.load(built, encoder=impostor)
    assert DenseRetriever.load(built, encoder=str(tmp_path / "a" / "enc")).num_docs == len(DOCS)


def test_bad_input(encoder, retriever, tmp_path):
    with pytest.raises(ValueError, match="no documents"):
        DenseRetriever.from_corpus([], encoder=encoder)
    with pytest.raises(ValueError, match="duplicate document id 'd0'"):
        DenseRetriever.from_corpus([DOCS[0], DOCS[0]], encoder=encoder)
    with pytest.raises(TypeError, match="single string"):
        DenseRetriever.from_corpus("plain string", encoder=encoder)
    with pytest.raises(TypeError, match="item 1"):
        DenseRetriever.from_corpus(["a text", 42], encoder=encoder)
    for k in (0, -3):
        with pytest.raises(ValueError, match="positive"):
            retriever.retrieve("cats", k=k)
    with pytest.raises(ValueError, match="index_type"):
        DenseRetriever.from_corpus(DOCS, encoder=encoder, index_type="lsh")
    with pytest.raises(ValueError, match="config.json"):
        Encoder(str(tmp_path))


def test_resumable_encoding_cache(tmp_path, encoder, doc_vecs):
    from attnsift.retrieval.encoders import encode_corpus_cached

    ids, texts = [d.id for d in DOCS], [d.contents for d in DOCS]
    full = encode_corpus_cached(encoder, ids, texts, tmp_path / "c", kinds=("dense", "tokens"), chunk_size=3)
    chunks = sorted((tmp_path / "c").glob("chunk_*.npz"))
    assert len(chunks) == 3
    # Simulate an interruption: the last chunk is lost, then the encoding is resumed.
    chunks[-1].unlink()
    again = encode_corpus_cached(encoder, ids, texts, tmp_path / "c", kinds=("dense", "tokens"), chunk_size=3)
    np.testing.assert_allclose(again["dense"], full["dense"], atol=1e-6)
    assert again["tokens"].dtype == np.float16 and (again["lengths"] == full["lengths"]).all()
    np.testing.assert_allclose(full["dense"], doc_vecs, atol=1e-5)
    # A cache made for other texts is not reused.
    other = encode_corpus_cached(encoder, ids[:3], texts[:3], tmp_path / "c", kinds=("dense",), chunk_size=3)
    assert other["dense"].shape == (3, 384) and len(list((tmp_path / "c").glob("chunk_*.npz"))) == 1

