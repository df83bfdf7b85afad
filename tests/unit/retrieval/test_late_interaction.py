"""Late interaction: MaxSim masking, exactness against brute force, float16 storage, save/load."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")
torch = pytest.importorskip("torch")

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.token_index import TokenIndex
from attnsift.retrieval.encoders import Encoder
from attnsift.retrieval.late_interaction import LateInteractionRetriever
from helpers import SIX_TOPIC_TEXTS

from attnsift.types import Document, Query

TEXTS = SIX_TOPIC_TEXTS
DOCS = [Document(f"d{i}", t) for i, t in enumerate(TEXTS)]


def oracle_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    """float64 MaxSim of one query [Lq, D] against one document [Ld, D]."""
    return float((q.astype(np.float64) @ d.astype(np.float64).T).max(axis=1).sum())


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def late(encoder) -> LateInteractionRetriever:
    # candidate_k beyond the token count: every document is a candidate, so results must be exact.
    return LateInteractionRetriever.from_corpus(DOCS, encoder=encoder, candidate_k=10_000)


def test_storage_is_float16_with_offsets(late, encoder):
    idx = late.index
    assert idx.tokens.dtype == np.float16 and idx.num_docs == len(DOCS)
    lens = [len(encoder.tokenizer(d.contents, add_special_tokens=False)["input_ids"]) for d in DOCS]
    assert np.diff(idx.offsets).tolist() == lens
    bpd = idx.bytes_per_doc()
    assert bpd["vectors"] == pytest.approx(np.mean(lens) * 384 * 2)


def test_retrieval_equals_brute_force_maxsim(late, encoder):
    queries = ["noisy pets at night", "diabetes and insulin", "programming languages"]
    run = late.retrieve_batch([Query(f"q{i}", q) for i, q in enumerate(queries)], k=4)
    qtok = encoder.encode_tokens(queries, is_query=True)
    dtok = [late.index.tokens[late.index.offsets[i] : late.index.offsets[i + 1]].astype(np.float32) for i in range(len(DOCS))]
    for i, qt in enumerate(qtok):
        brute = np.array([oracle_maxsim(qt, d) for d in dtok])
        order = sorted(range(len(DOCS)), key=lambda j: (-brute[j], DOCS[j].id))[:4]
        r = run[f"q{i}"]
        assert r.doc_ids == [DOCS[j].id for j in order]
        np.testing.assert_allclose([c.score for c in r], brute[order], rtol=1e-5, atol=1e-4)
        assert all(c.document is not None for c in r)
    assert run["q1"].doc_ids[0] == "d5"


def test_query_padding_does_not_change_scores(late, encoder):
    """A short query scored in a batch with a long one (so it is padded) scores as when alone."""
    short, long_ = encoder.encode_tokens(["cats", "stock market interest rates and central bank policy decisions"], is_query=True)
    assert short.shape[0] < long_.shape[0]
    docs = np.arange(len(DOCS))
    alone = late.score([short], docs)[0]
    batched = late.score([long_, short], docs)
    np.testing.assert_allclose(batched[1], alone, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batched[0], late.score([long_], docs)[0], rtol=1e-6, atol=1e-6)
    # The query-length normaliser counts real tokens only, not padded positions.
    normed = LateInteractionRetriever(encoder, late.index, DOCS, normalize="query_length")
    np.testing.assert_allclose(normed.score([long_, short], docs)[1], alone / short.shape[0], rtol=1e-6, atol=1e-6)
    dtok = [late.index.tokens[late.index.offsets[i] : late.index.offsets[i + 1]].astype(np.float32) for i in docs]
    np.testing.assert_allclose(alone, [oracle_maxsim(short, d) for d in dtok], rtol=1e-5, atol=1e-4)


def test_ann_candidates_with_ivfpq(encoder):
    r = LateInteractionRetriever.from_corpus(DOCS, encoder=encoder, index_type="ivfpq", candidate_k=8)
    assert r.index.ann.index_type == "ivfpq"
    top = r.retrieve("Insulin resistance and type 2 diabetes", k=3)
    assert top.doc_ids[0] == "d5" and 1 <= len(top) <= 3


def test_save_load_round_trip_and_corruption(tmp_path, late, encoder):
    path = late.save(tmp_path / "late")
    loaded = LateInteractionRetriever.load(path, encoder=encoder)
    assert loaded.index.tokens.dtype == np.float16
    a, b = late.retrieve("bone health", k=3), loaded.retrieve("bone health", k=3)
    assert a.doc_ids == b.doc_ids and [c.score for c in a] == pytest.approx([c.score for c in b])
    with open(path / "tokens.npy", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x7f" * 8)
    with pytest.raises(IndexCorruptedError, match="checksum"):
        LateInteractionRetriever.load(path, encoder=encoder)


def test_bad_input(encoder, late):
    with pytest.raises(ValueError, match="no documents"):
        LateInteractionRetriever.from_corpus([], encoder=encoder)
    with pytest.raises(ValueError, match="positive"):
        late.retrieve("cats", k=0)
    with pytest.raises(ValueError, match="normalize"):
        LateInteractionRetriever(encoder, late.index, DOCS, normalize="max")
    with pytest.raises(ValueError, match="sum to"):
        TokenIndex.build(np.zeros((4, 8), np.float32), np.array([1, 2]))
    with pytest.raises(ValueError, match="plaid index's CPU kernels; this is a faiss token index"):
        LateInteractionRetriever(encoder, late.index, DOCS, impl="numba")
    with pytest.raises(ValueError, match="impl"):
        LateInteractionRetriever(encoder, late.index, DOCS, impl="fast")



def test_saved_documents_are_memory_mapped_and_earlier_folders_load(tmp_path, late):
    """A loaded index reads its documents from disk by position (no list of Documents); a folder as
    earlier attnsift wrote it (``documents.jsonl`` + ``doc_ids.json`` only) loads the same."""
    from attnsift.indexes.doc_store import DocumentStore, PackedIds
    from attnsift.io import read_manifest, write_manifest

    path = late.save(tmp_path / "late")
    loaded = LateInteractionRetriever.load(path)
    assert isinstance(loaded.documents, DocumentStore) and isinstance(loaded.doc_ids, PackedIds)
    want = late.retrieve("cats and dogs", k=3)
    got = loaded.retrieve("cats and dogs", k=3)
    assert [(c.doc_id, c.score, c.document.text) for c in got] == [(c.doc_id, c.score, c.document.text) for c in want]
    m = read_manifest(path, "late")
    for name in ("documents.offsets.npy", "doc_ids.txt", "doc_ids.offsets.npy", "id_rank.npy"):
        (path / name).unlink()
    write_manifest(path, "late", **{k: v for k, v in m.items() if k not in ("kind", "files", "attnsift_version")})
    old = LateInteractionRetriever.load(path)
    assert old.doc_ids == [d.id for d in DOCS]
    assert [c.doc_id for c in old.retrieve("cats and dogs", k=3)] == [c.doc_id for c in want]


def test_plaid_retriever_takes_the_cpu_kernel_choice(encoder):
    pytest.importorskip("numba")
    r = LateInteractionRetriever.from_corpus(DOCS, encoder=encoder, index="plaid", cache=False, candidates=6)
    forced = LateInteractionRetriever(encoder, r.index, DOCS, impl="numpy", candidates=6)
    assert forced.impl == "numpy" and r.impl == "auto"
    a, b = r.retrieve("vitamin deficiency", k=5), forced.retrieve("vitamin deficiency", k=5)
    assert a.doc_ids == b.doc_ids  # the compiled path and the numpy fallback agree on a small corpus
    assert np.allclose([c.score for c in a], [c.score for c in b], atol=2e-2)
