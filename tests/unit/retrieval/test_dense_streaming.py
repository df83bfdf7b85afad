"""``DenseRetriever.from_corpus`` builds its faiss index from the encoding cache's chunk files, one at a
time (``encode_corpus_cached(concatenate=False)`` + ``FaissIndex.build_streaming``): the index is
byte-for-byte the one ``FaissIndex.build`` makes of the concatenated vectors (tiny random BERT,
1,300 documents = 3 chunks of 512)."""
from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_faiss_thread")

from attnsift.indexes.faiss_index import FaissIndex
from attnsift.retrieval.dense import DenseRetriever
from attnsift.retrieval.encoders import Encoder
from attnsift.retrieval.encoding_cache import EncodedChunks, encode_corpus_cached
from attnsift.types import Document

N = 1300
WORDS = "cat dog bank rate vitamin bone python code plant light king war sugar blood rain river".split()
DOCS = [Document(f"d{i}", " ".join(WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(3 + i % 6)))
        for i in range(N)]
IVFPQ = {"nlist": 8, "pq_m": 8, "nbits": 4, "nprobe": 4, "train_size": 1000}  # a seeded sample of 1,000
HNSW = {"hnsw_m": 8, "ef_construction": 32, "ef_search": 32}



@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Encoder:
    """A random 1-layer BERT (hidden 32) with MiniLM's tokenizer, from a model folder (no download)."""
    from helpers import write_tiny_encoder

    folder = write_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny")
    return Encoder(folder, device="cpu", batch_size=256, max_length=16)


@pytest.fixture(scope="module")
def vectors(encoder, tmp_path_factory) -> np.ndarray:
    ids, texts = [d.id for d in DOCS], [d.contents for d in DOCS]
    return encode_corpus_cached(encoder, ids, texts, tmp_path_factory.mktemp("ref"), progress=False)["dense"]


def serialized(index: FaissIndex) -> bytes:
    return faiss.serialize_index(index.index).tobytes()


def test_chunks_are_read_back_one_file_at_a_time(encoder, vectors, tmp_path):
    ids, texts = [d.id for d in DOCS], [d.contents for d in DOCS]
    enc = encode_corpus_cached(encoder, ids, texts, tmp_path, concatenate=False, progress=False)
    assert isinstance(enc, EncodedChunks) and (enc.n, enc.dim) == (N, encoder.dim)
    assert enc._parts is None  # nothing held: the batches come from the files
    assert [b.shape[0] for b in enc.batches()] == [512, 512, 276]
    np.testing.assert_array_equal(np.concatenate(list(enc.batch_source()())), vectors)
    # A second call finds the chunks without reading their arrays, and gives the same batches.
    again = encode_corpus_cached(encoder, ids, texts, tmp_path, concatenate=False, progress=False)
    np.testing.assert_array_equal(np.concatenate(list(again.batches())), vectors)
    # Without a cache folder the chunks are held in memory; the same vectors.
    held = encode_corpus_cached(encoder, ids, texts, None, concatenate=False, progress=False)
    assert held._parts is not None
    np.testing.assert_array_equal(np.concatenate(list(held.batches())), vectors)
    with pytest.raises(ValueError, match="kind"):
        next(enc.batches("tokens"))


def test_streaming_with_a_lost_chunk_resumes(encoder, vectors, tmp_path):
    ids, texts = [d.id for d in DOCS], [d.contents for d in DOCS]
    encode_corpus_cached(encoder, ids, texts, tmp_path, progress=False)
    (tmp_path / "chunk_000001.npz").unlink()
    (tmp_path / "chunk_000002.npz").write_bytes(b"not a zip")
    enc = encode_corpus_cached(encoder, ids, texts, tmp_path, concatenate=False, progress=False)
    np.testing.assert_allclose(np.concatenate(list(enc.batches())), vectors, atol=1e-6)


@pytest.mark.parametrize("index_type, options", [("flat", {}), ("ivfpq", IVFPQ), ("hnsw", HNSW),
                                                 ("ivfpq", {**IVFPQ, "refine": "sq8"})])
def test_from_corpus_index_equals_build_on_the_concatenated_vectors(encoder, vectors, tmp_path, index_type, options):
    built = FaissIndex.build(vectors, index_type, "ip", **options)
    expected = serialized(built)
    cold = DenseRetriever.from_corpus(DOCS, encoder=encoder, index_type=index_type, cache_dir=tmp_path / "c",
                                      progress=False, **options)
    assert serialized(cold.index) == expected
    warm = DenseRetriever.from_corpus(DOCS, encoder=encoder, index_type=index_type, cache_dir=tmp_path / "c",
                                      progress=False, **options)  # every chunk read back from the cache
    assert serialized(warm.index) == expected
    uncached = DenseRetriever.from_corpus(DOCS, encoder=encoder, index_type=index_type, cache=False,
                                          progress=False, **options)
    assert serialized(uncached.index) == expected
    if options.get("refine"):
        assert warm.index.refined
    scores = built.search(encoder.encode_queries(["vitamin rain"]), 5)[0][0]  # (ties are ordered by id there)
    np.testing.assert_allclose([c.score for c in warm.retrieve("vitamin rain", k=5)], scores, rtol=1e-6)


def test_a_corpus_streams_into_a_store_and_gives_the_same_index(encoder, vectors, tmp_path):
    """An attnsift Corpus (here a BEIR folder's) is stored once on disk and encoded from there, 3 chunks of
    512 read back a chunk at a time: the index is the one the concatenated vectors give."""
    import json

    from attnsift.eval.datasets import load_dataset
    from attnsift.indexes.doc_store import DocumentStore

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n"
                                               for d in DOCS))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin rain"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    corpus = load_dataset(str(root)).corpus
    r = DenseRetriever.from_corpus(corpus, encoder=encoder, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(r.documents, DocumentStore) and r.doc_ids == [d.id for d in DOCS]
    assert serialized(r.index) == serialized(FaissIndex.build(vectors, "flat", "ip"))
    hits = r.retrieve("vitamin rain", k=5)
    assert [c.document.text for c in hits] == [DOCS[int(c.doc_id[1:])].text for c in hits]
