"""BM25 index persistence: round trip, corruption detection, atomic saves."""
from __future__ import annotations

import json

import pytest

import attnsift.indexes.bm25_index as bm25_index
from attnsift.errors import IndexCorruptedError
from attnsift.io import write_manifest
from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Document, Query

DOCS = [
    Document("d1", "Vitamin D deficiency is linked to bone loss.", title="Vitamin D", metadata={"url": "u1"}),
    Document("d2", "Aspirin lowers the risk of heart attacks."),
    Document("d3", "Bone density falls with age; calcium and vitamin D help."),
    Document("d4", "Statins reduce cholesterol \u00e9v\u00e9nements \u4e2d."),
]
QUERIES = [Query("q1", "vitamin D bone"), Query("q2", "heart risk aspirin"), Query("q3", "cholesterol \u4e2d")]


def _results(r):
    return {qid: [(c.doc_id, c.score) for c in rk] for qid, rk in r.retrieve_batch(QUERIES, k=10).items()}


@pytest.mark.parametrize("method, store_text", [("lucene", True), ("bm25l", False)])
def test_round_trip_identical(tmp_path, method, store_text):
    r = BM25Retriever.from_corpus(DOCS, method=method, k1=1.2, b=0.75, store_text=store_text)
    out = r.save(tmp_path / "idx")
    assert out == tmp_path / "idx"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "bm25" and manifest["engine"] == "bm25s"
    assert (manifest["k1"], manifest["b"], manifest["method"], manifest["num_docs"]) == (1.2, 0.75, method, 4)
    assert (manifest["stemmer"], manifest["stopwords"]) == ("porter", "en")
    loaded = BM25Retriever.load(out)
    assert (loaded.k1, loaded.b, loaded.method, loaded.num_docs) == (1.2, 0.75, method, 4)
    assert _results(loaded) == _results(r)
    if store_text:
        assert dict(loaded.documents) == dict(r.documents)
        assert loaded.documents["d1"].metadata == {"url": "u1"} and loaded.documents["d1"].title == "Vitamin D"
        assert loaded.retrieve("aspirin", k=1)[0].document.text == DOCS[1].text


@pytest.fixture()
def saved(tmp_path):
    return BM25Retriever.from_corpus(DOCS).save(tmp_path / "idx")


@pytest.mark.parametrize("name", ["data.npy", "vocab.json", "documents.jsonl", "indptr.npy"])
def test_flipped_byte_detected(saved, name):
    p = saved / name
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptedError, match="rebuild"):
        BM25Retriever.load(saved)


def test_missing_file_detected(saved):
    (saved / "indices.npy").unlink()
    with pytest.raises(IndexCorruptedError, match="missing"):
        BM25Retriever.load(saved)
    with pytest.raises(IndexCorruptedError, match="missing"):
        BM25Retriever.load(saved, verify=False)


def test_missing_folder_and_manifest(tmp_path, saved):
    with pytest.raises(IndexCorruptedError):
        BM25Retriever.load(tmp_path / "nowhere")
    (saved / "manifest.json").unlink()
    with pytest.raises(IndexCorruptedError, match="manifest"):
        BM25Retriever.load(saved)


def test_manifest_of_another_kind(tmp_path):
    d = tmp_path / "faiss"
    d.mkdir()
    (d / "vectors.bin").write_bytes(b"\x00" * 16)
    write_manifest(d, "faiss", dim=4)
    with pytest.raises(IndexCorruptedError, match="'faiss'"):
        BM25Retriever.load(d)


def test_inconsistent_counts_and_analyzer_version(saved):
    m = json.loads((saved / "manifest.json").read_text())
    m["num_docs"] = 99
    (saved / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexCorruptedError, match="num_docs"):
        BM25Retriever.load(saved)
    m["num_docs"], m["analyzer_version"] = 4, -1
    (saved / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexCorruptedError, match="analyzer version"):
        BM25Retriever.load(saved)


def test_failed_save_leaves_no_index(tmp_path, monkeypatch):
    r = BM25Retriever.from_corpus(DOCS)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bm25_index, "write_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        r.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


def test_failed_overwrite_keeps_previous_index(tmp_path, monkeypatch):
    old = BM25Retriever.from_corpus(DOCS[:2])
    old.save(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}
    monkeypatch.setattr(bm25_index.np, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        BM25Retriever.from_corpus(DOCS).save(tmp_path / "idx")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == before
    assert BM25Retriever.load(tmp_path / "idx").num_docs == 2


def test_overwrite_false(saved):
    with pytest.raises(FileExistsError):
        BM25Retriever.from_corpus(DOCS).save(saved, overwrite=False)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"k1": -0.1}, ValueError, "k1 must be >= 0"),
    ({"b": 1.5}, ValueError, r"b must be in \[0, 1\]"),
    ({"k1": float("nan")}, TypeError, "k1 must be a finite number"),
    ({"b": True}, TypeError, "b=True: expected a number"),
])
def test_both_bm25_backends_reject_bad_parameters_alike(kwargs, error, message):
    from attnsift.retrieval.lucene import LuceneBM25Retriever

    for cls in (BM25Retriever, LuceneBM25Retriever):  # checked before pyserini is needed
        with pytest.raises(error, match=message):
            cls(**kwargs)


def test_stored_texts_keep_the_bm25_layout(saved):
    """The document store shared with dense / late interaction leaves BM25's files as they were: an ``"id"``
    key per line, offsets beside it, no ``doc_ids.json``; read back through a memory map by id and position."""
    first = json.loads((saved / "documents.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["id", "title", "text", "metadata"] and first["id"] == "d1"
    assert not (saved / "doc_ids.json").exists() and (saved / "documents.offsets.npy").is_file()
    loaded = BM25Retriever.load(saved, mmap=True)
    assert isinstance(loaded._index.documents, bm25_index.StoredDocuments)
    assert loaded.documents["d4"].text == DOCS[3].text and loaded._index.documents.at([1])[0].id == "d2"
