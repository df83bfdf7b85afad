"""The file-backed document store (attnsift.indexes.doc_store) and the dense / late-interaction retrievers
over it: a streamed corpus is stored once and encoded from disk, giving the index a list gives, byte for
byte; a saved index links the store's files and a loaded one memory-maps them."""
from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.doc_store import DocumentStore, PackedIds, open_store, write_store
from attnsift.types import Document

faiss = pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_faiss_thread")

WORDS = "cat dog bank rate vitamin bone python code plant light king war sugar blood rain river".split()
DOCS = [Document(f"d{i}", " ".join(WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(3 + i % 6)),
                 title=("Tïtle ✓" if i % 4 == 0 else None), metadata={"n": i} if i % 3 == 0 else {})
        for i in range(600)]
NEW_FILES = ("documents.offsets.npy", "doc_ids.txt", "doc_ids.offsets.npy", "id_rank.npy")
QUERIES = ["cat bank", "vitamin bone rain", "python code"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) with MiniLM's tokenizer (tests/helpers.py; no download)."""
    from helpers import write_tiny_cross_encoder

    from attnsift.retrieval.encoders import Encoder

    folder = write_tiny_cross_encoder(tmp_path_factory.mktemp("enc") / "tiny")
    return Encoder(str(folder), device="cpu", batch_size=256, max_length=16)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))


def _same(a: Document, b: Document) -> bool:
    return (a.id, a.text, a.title, dict(a.metadata)) == (b.id, b.text, b.title, dict(b.metadata))


def _rankings(r) -> list:
    run = r.retrieve_batch(QUERIES, k=10, progress=False)
    return [[(c.doc_id, round(c.score, 5), c.document.text) for c in run[q]] for q in run]


# ------------------------------------------------------------------------------------------ the store
def test_store_round_trip_random_access_and_ids(tmp_path):
    from attnsift.retrieval.encoding_cache import texts_fingerprint

    store = write_store(iter(DOCS), tmp_path / "s")
    assert isinstance(store, DocumentStore) and len(store) == len(DOCS)
    assert all(_same(a, b) for a, b in zip(store, DOCS))
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(DOCS), 50).tolist()
    assert all(_same(a, DOCS[p]) for a, p in zip(store.at(picks), picks))
    assert _same(store[-1], DOCS[-1]) and [d.id for d in store[10:13]] == ["d10", "d11", "d12"]
    with pytest.raises(IndexError):
        store[len(DOCS)]
    # ids without building a Document; equal to a list of the same ids
    assert isinstance(store.ids, PackedIds) and store.ids == [d.id for d in DOCS]
    assert store.ids.take(np.array(picks)) == [DOCS[p].id for p in picks]
    assert store.position("d123") == 123 and store.position("nope") is None
    order = np.argsort(np.array([d.id for d in DOCS]), kind="stable")
    np.testing.assert_array_equal(np.asarray(store.id_rank)[order], np.arange(len(DOCS)))
    # the texts' hash is the encoding cache's key, computed while writing
    assert store.texts_sha256 == texts_fingerprint([d.id for d in DOCS], [d.contents for d in DOCS])
    assert store.texts()[5:8] == [d.contents for d in DOCS[5:8]]
    # reopened from disk: the same
    again = open_store(tmp_path / "s", len(DOCS))
    assert again == store and again.ids == store.ids


def test_writer_refuses_bad_corpora_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="duplicate document id 'd1'"):
        write_store(iter([*DOCS[:3], Document("d1", "again")]), tmp_path / "dup")
    assert not any((tmp_path / "dup").iterdir())
    with pytest.raises(ValueError, match="no documents"):
        write_store(iter(()), tmp_path / "empty")
    with pytest.raises(ValueError, match="empty text"):
        write_store([Document("a", " "), Document("b", "")], tmp_path / "blank")


def test_corrupted_files_are_refused(tmp_path):
    write_store(DOCS[:20], tmp_path / "s")
    with pytest.raises(IndexCorruptedError, match="disagree in count"):
        open_store(tmp_path / "s", 21)
    with pytest.raises(IndexCorruptedError, match="vectors"):
        open_store(tmp_path / "s", 20, 19, "vectors")
    short = tmp_path / "short"
    write_store(DOCS[:20], short)
    blob = (short / "documents.jsonl").read_bytes()
    (short / "documents.jsonl").write_bytes(blob[:-30])
    with pytest.raises(IndexCorruptedError, match="does not fit"):
        open_store(short, 20)
    bad = tmp_path / "bad"
    write_store(DOCS[:20], bad)
    off = np.load(bad / "documents.offsets.npy")
    np.save(bad / "documents.offsets.npy", off[:-1])
    with pytest.raises(IndexCorruptedError):
        open_store(bad, 20)
    swapped = tmp_path / "swapped"
    write_store(DOCS[:20], swapped)
    (swapped / "doc_ids.txt").write_text("".join(f"{d.id}\n" for d in reversed(DOCS[:20])))
    with pytest.raises(IndexCorruptedError, match="order"):
        open_store(swapped, 20)
    garbled = tmp_path / "garbled"
    store = write_store(DOCS[:20], garbled)
    lo, hi = int(store.offsets[3]), int(store.offsets[4])
    data = bytearray((garbled / "documents.jsonl").read_bytes())
    data[lo:hi - 1] = b"x" * (hi - 1 - lo)
    (garbled / "documents.jsonl").write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match="line 4 is unreadable"):
        open_store(garbled, 20)[3]
    (garbled / "doc_ids.txt").unlink()
    with pytest.raises(IndexCorruptedError, match="missing"):
        open_store(garbled, 20)


def test_earlier_folder_without_offsets_is_read(tmp_path):
    folder = tmp_path / "old"
    write_store(DOCS[:50], folder)
    for name in NEW_FILES:
        (folder / name).unlink()
    store = open_store(folder, 50)
    assert store.ids == [d.id for d in DOCS[:50]] and all(_same(a, b) for a, b in zip(store, DOCS[:50]))
    with pytest.raises(IndexCorruptedError):
        open_store(folder, 49)


# ------------------------------------------------------------------------------------------ dense
def _faiss_bytes(r) -> bytes:
    return faiss.serialize_index(r.index.index).tobytes()


def test_dense_from_a_generator_equals_the_list_build(encoder, tmp_path):
    from attnsift.fingerprint import cache_root
    from attnsift.retrieval.dense import DenseRetriever

    listed = DenseRetriever.from_corpus(DOCS, encoder=encoder, index_type="ivfpq", nlist=4, pq_m=4, nbits=4,
                                        train_size=400, progress=False)
    streamed = DenseRetriever.from_corpus((d for d in DOCS), encoder=encoder, index_type="ivfpq", nlist=4, pq_m=4,
                                          nbits=4, train_size=400, progress=False)
    assert isinstance(listed.documents, list) and isinstance(streamed.documents, DocumentStore)
    # one encoding-cache folder: the store's hash is the key the list gives, and the vectors were reused
    assert len(list((cache_root() / "encodings").iterdir())) == 1
    assert _faiss_bytes(streamed) == _faiss_bytes(listed)
    assert _rankings(streamed) == _rankings(listed)
    assert streamed.doc_ids == listed.doc_ids and streamed.num_docs == len(DOCS)
    # an attnsift-readable path and an iterator over a list give the same index
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in DOCS))
    from_path = DenseRetriever.from_corpus(path, encoder=encoder, cache=False, progress=False)
    flat = DenseRetriever.from_corpus(iter(DOCS), encoder=encoder, cache=False, progress=False)
    assert _faiss_bytes(from_path) == _faiss_bytes(flat)
    assert _rankings(from_path) == _rankings(flat)


def test_dense_save_links_the_store_and_load_maps_it(encoder, tmp_path):
    from attnsift.retrieval.dense import DenseRetriever

    r = DenseRetriever.from_corpus(iter(DOCS), encoder=encoder, progress=False, store_dir=tmp_path / "store")
    path = r.save(tmp_path / "idx")
    assert os.path.samefile(path / "documents.jsonl", tmp_path / "store" / "documents.jsonl")  # a hard link
    loaded = DenseRetriever.load(path)
    assert isinstance(loaded.documents, DocumentStore) and isinstance(loaded.doc_ids, PackedIds)
    assert _rankings(loaded) == _rankings(r)
    # the list build writes the same bytes
    listed = DenseRetriever.from_corpus(DOCS, encoder=encoder, progress=False).save(tmp_path / "listed")
    for name in ("index.faiss", "documents.jsonl", "doc_ids.json", *NEW_FILES):
        assert (path / name).read_bytes() == (listed / name).read_bytes(), name
    # what earlier attnsift reads (doc_ids.json + "_id" lines, parsed in full) is all there
    ids = json.loads((path / "doc_ids.json").read_text())
    old = [json.loads(line) for line in (path / "documents.jsonl").read_text(encoding="utf-8").splitlines()]
    assert ids == [o["_id"] for o in old] == [d.id for d in DOCS]
    # a short documents file is one line of IndexCorruptedError (checksums, or the offsets without them)
    blob = (path / "documents.jsonl").read_bytes()
    os.unlink(path / "documents.jsonl")
    (path / "documents.jsonl").write_bytes(blob[:-10])
    for verify in (True, False):
        with pytest.raises(IndexCorruptedError) as err:
            DenseRetriever.load(path, verify=verify)
        assert "\n" not in str(err.value)


def test_dense_index_of_earlier_attnsift_loads(encoder, tmp_path):
    from attnsift.io import read_manifest, write_manifest
    from attnsift.retrieval.dense import DenseRetriever

    r = DenseRetriever.from_corpus(DOCS, encoder=encoder, progress=False)
    path = r.save(tmp_path / "idx")
    m = read_manifest(path, "dense")
    for name in NEW_FILES:
        (path / name).unlink()
    write_manifest(path, "dense", **{k: v for k, v in m.items() if k not in ("kind", "files", "attnsift_version")})
    loaded = DenseRetriever.load(path)
    assert isinstance(loaded.documents, DocumentStore) and isinstance(loaded.doc_ids, list)
    assert _rankings(loaded) == _rankings(r)
    again = loaded.save(tmp_path / "resaved")  # saved again: in the new layout
    assert all((again / n).is_file() for n in NEW_FILES) and _rankings(DenseRetriever.load(again)) == _rankings(r)


def test_temporary_store_goes_with_the_retriever(encoder):
    from attnsift.fingerprint import cache_root
    from attnsift.retrieval.dense import DenseRetriever

    r = DenseRetriever.from_corpus(iter(DOCS[:40]), encoder=encoder, cache=False, progress=False)
    folder = r.documents.path.parent
    assert folder.parent == cache_root() / "spool" and folder.is_dir()
    del r
    gc.collect()
    assert not folder.exists()


# ------------------------------------------------------------------------------------------ late interaction
@pytest.mark.parametrize("options", [{"index_type": "flat"}, {"index": "plaid", "ncentroids": 16, "kmeans_iters": 2}],
                         ids=["flat", "plaid"])
def test_late_from_a_generator_equals_the_list_build(encoder, tmp_path, options):
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    docs = DOCS[:200]
    listed = LateInteractionRetriever.from_corpus(docs, encoder=encoder, progress=False, **options)
    streamed = LateInteractionRetriever.from_corpus((d for d in docs), encoder=encoder, progress=False, **options)
    assert isinstance(streamed.documents, DocumentStore)
    assert _rankings(streamed) == _rankings(listed)
    a, b = listed.save(tmp_path / "a"), streamed.save(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir() if p.name != "manifest.json")
    assert names == sorted(p.name for p in b.iterdir() if p.name != "manifest.json")
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    loaded = LateInteractionRetriever.load(b)
    assert isinstance(loaded.documents, DocumentStore) and _rankings(loaded) == _rankings(listed)


# ------------------------------------------------------------------------------- build_index streams
@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_build_index_streams_a_file_into_a_store_with_the_list_fingerprint(tmp_path, encoder, suffix):
    from attnsift import build_index
    from attnsift.documents import corpus_record
    from attnsift.fingerprint import documents_fingerprint

    path = tmp_path / f"corpus{suffix}"
    rows = DOCS[:50]
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in rows), encoding="utf-8")
    else:
        path.write_text("".join(f"{d.id}\t{d.text}\n" for d in rows), encoding="utf-8")
    listed, fp_list, _ = corpus_record(path)
    streamed, fp_stream, _ = corpus_record(path, stream=True)
    assert isinstance(listed, list) and not isinstance(streamed, list) and fp_stream == fp_list
    if suffix == ".tsv":
        assert fp_stream == documents_fingerprint(listed)
    r = build_index(path, "dense", encoder=encoder, options={"index_type": "flat"})
    assert isinstance(r.documents, DocumentStore)  # the Documents are on disk, not in a list
    assert r.corpus_fingerprint == fp_list
    assert [d.id for d in r.documents] == [d.id for d in rows]


def test_build_index_streams_a_dataset_corpus(tmp_path, encoder):
    from attnsift import build_index
    from attnsift.eval.datasets import Corpus

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in DOCS[:40]), encoding="utf-8")
    corpus = Corpus.from_jsonl(path)
    r = build_index(corpus, "dense", encoder=encoder, options={"index_type": "flat"})
    assert isinstance(r.documents, DocumentStore) and r.corpus_fingerprint == corpus.fingerprint()
    listed = build_index([Document(d.id, d.text) for d in DOCS[:40]], "dense", encoder=encoder, options={"index_type": "flat"})
    assert isinstance(listed.documents, list) and listed.documents == r.documents
