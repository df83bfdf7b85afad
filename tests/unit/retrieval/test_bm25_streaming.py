"""BM25 built in parts and merged, on disk and memory-mapped: the same index, in constant memory."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

import attnsift.indexes.bm25_build as bm25_build
import attnsift.retrieval.bm25_prune as bm25_prune
import attnsift.retrieval.bm25_search as bm25_search
from attnsift.errors import IndexCorruptedError
from attnsift.indexes.bm25_build import PostingsBuilder
from attnsift.indexes.bm25_index import PackedIds, StoredDocuments
from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Document, Query

WORDS = [f"w{i}" for i in range(60)] + ["vitamin", "bone", "heart", "aspirin", "risk", "the", "of"]


def _corpus(n: int = 300, seed: int = 0) -> list[Document]:
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        # Zipf-ish: low word numbers are frequent; some documents have no index term at all
        words = [WORDS[min(int(rnd.paretovariate(0.8)) - 1, len(WORDS) - 1)] for _ in range(rnd.randint(0, 25))]
        docs.append(Document(f"doc-{rnd.randint(0, 10**6)}-{i}", " ".join(words) or "the of",
                             title=rnd.choice([None, "Vitamin heart"])))
    return docs


QUERIES = [Query("q1", "vitamin bone"), Query("q2", "heart risk aspirin w1"), Query("q3", "w0 w2 w3 w4 w5 w6"),
           Query("q4", "the of"), Query("q5", "w0 w0 w1 unknownword"), Query("q6", "w59 w58 w0")]


def _results(r: BM25Retriever, k: int = 50) -> dict:
    return {qid: [(c.doc_id, c.score) for c in rk] for qid, rk in r.retrieve_batch(QUERIES, k=k).items()}


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_parts_merge_to_bm25s_own_matrix_bit_for_bit(method):
    import bm25s

    docs = _corpus(257)
    an = BM25Retriever().analyzer
    tokens = [an(d.contents) for d in docs]
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in ts] for ts in tokens]
    engine = bm25s.BM25(k1=1.2, b=0.75, delta=0.5, method=method)
    ref = engine.build_index_from_ids(unique_token_ids=list(range(len(vocab))), corpus_token_ids=ids, show_progress=False)
    for chunk in (1, 7, 1000):
        b = PostingsBuilder(k1=1.2, b=0.75, delta=0.5, method=method, chunk_size=chunk)
        for ts in tokens:
            b.add(ts)
        m = b.finish()
        assert b.num_docs == len(docs)
        assert np.array_equal(m["data"].view(np.uint32), np.asarray(ref["data"], np.float32).view(np.uint32))
        assert np.array_equal(m["indices"], ref["indices"]) and np.array_equal(m["indptr"], ref["indptr"])
        if method in ("bm25l", "bm25+"):
            assert np.array_equal(m["nonoccurrence"], np.asarray(engine.nonoccurrence_array, np.float32))


def test_streamed_build_equals_in_memory_build_file_for_file(tmp_path):
    docs = _corpus()
    mem = BM25Retriever.from_corpus(docs).save(tmp_path / "mem")
    BM25Retriever.build(docs, tmp_path / "disk", chunk_size=13)  # 24 parts
    names = sorted(p.name for p in mem.iterdir())
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == names
    for name in names:
        if name != "manifest.json":
            assert (mem / name).read_bytes() == (tmp_path / "disk" / name).read_bytes(), name
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (mem, tmp_path / "disk"))
    assert m1["files"] == m2["files"]
    assert not (tmp_path / "disk" / "parts").exists()
    assert _results(BM25Retriever.load(tmp_path / "disk")) == _results(BM25Retriever.from_corpus(docs))


def test_build_returns_a_memory_mapped_index_equal_to_the_normal_load(tmp_path):
    docs = _corpus()
    r = BM25Retriever.build(docs, tmp_path / "idx", chunk_size=50, corpus_fingerprint="ab" * 32, dataset="toy")
    assert isinstance(r._index.data, np.memmap) and isinstance(r._index.doc_ids, PackedIds)
    assert isinstance(r._index.documents, StoredDocuments)
    plain = BM25Retriever.load(tmp_path / "idx", mmap=False)
    assert not isinstance(plain._index.data, np.memmap) and isinstance(plain._index.doc_ids, list)
    assert _results(r) == _results(plain) == _results(BM25Retriever.from_corpus(docs))
    assert r.doc_ids == plain.doc_ids == [d.id for d in docs]
    # texts read on demand from documents.jsonl
    top = r.retrieve("vitamin heart", k=3)
    assert [c.document for c in top] == [plain.documents[c.doc_id] for c in top]
    assert r.documents[docs[5].id] == docs[5] and r.documents[docs[5].id].title == docs[5].title
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["corpus"] == {"fingerprint": "ab" * 32, "dataset": "toy"} and manifest["format_version"] == 2
    assert (r.corpus_fingerprint, r.dataset) == ("ab" * 32, "toy")


def test_store_text_false_and_corpus_attach(tmp_path):
    docs = _corpus(50)
    r = BM25Retriever.build(docs, tmp_path / "idx", chunk_size=8, store_text=False)
    assert not (tmp_path / "idx" / "documents.jsonl").exists()
    assert all(c.document is None for c in r.retrieve("w1 w2", k=5))
    with pytest.raises(ValueError, match="store_text=False"):
        r.documents


def test_corrupted_part_is_refused(tmp_path):
    b = PostingsBuilder(k1=0.9, b=0.4, delta=0.5, method="lucene", chunk_size=10, parts_dir=tmp_path / "parts")
    an = BM25Retriever().analyzer
    for d in _corpus(40):
        b.add(an(d.contents))
    assert b.parts_written == 4
    part = tmp_path / "parts" / "part-00002.npz"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    part.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptedError, match="part-00002.npz.*checksum"):
        b.finish()


def test_build_memory_is_one_part_whatever_the_corpus_size(tmp_path, monkeypatch):
    """Constant memory: the builder never holds more than chunk_size documents' postings, and the
    merge reads one part at a time (counted, not timed)."""
    held, reads = [], []
    flush = PostingsBuilder.flush

    def counting_flush(self):
        held.append(len(self._chunk_lengths))
        flush(self)

    read = PostingsBuilder._read

    def counting_read(self, part):
        reads.append(part.n_docs)
        assert part.arrays is None  # on disk: nothing kept in memory between flush and merge
        return read(self, part)

    monkeypatch.setattr(PostingsBuilder, "flush", counting_flush)
    monkeypatch.setattr(PostingsBuilder, "_read", counting_read)
    for n in (100, 400):
        held.clear(), reads.clear()
        BM25Retriever.build(_corpus(n), tmp_path / f"idx{n}", chunk_size=16, store_text=False)
        assert max(held) <= 16 and sum(held) == n
        assert len(reads) == -(-n // 16) and max(reads) <= 16


def test_build_refuses_bad_input_before_work(tmp_path):
    with pytest.raises(ValueError, match="chunk_size"):
        BM25Retriever.build(_corpus(5), tmp_path / "a", chunk_size=0)
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever.build([], tmp_path / "b")
    dup = [Document("x", "vitamin"), Document("y", "bone"), Document("x", "heart")]
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        BM25Retriever.build(dup, tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    BM25Retriever.build(_corpus(5), tmp_path / "d")
    with pytest.raises(FileExistsError):
        BM25Retriever.build(_corpus(5), tmp_path / "d")


def test_memory_mapped_index_checksums_and_round_trip(tmp_path):
    r = BM25Retriever.build(_corpus(), tmp_path / "idx", chunk_size=40)
    again = r.save(tmp_path / "copy")  # a mapped index saves like any other
    for name in ("data.npy", "doc_ids.txt", "documents.jsonl", "id_rank.npy"):
        assert (again / name).read_bytes() == (tmp_path / "idx" / name).read_bytes()
    p = tmp_path / "idx" / "doc_ids.txt"
    raw = bytearray(p.read_bytes())
    raw[3] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptedError, match="checksum"):
        BM25Retriever.load(tmp_path / "idx", mmap=True)


def test_format_1_index_still_loads(tmp_path):
    """An index written before the streaming build (doc_ids.json, no offsets/ranks) loads and answers alike."""
    from attnsift.io import write_manifest

    docs = _corpus(60)
    r = BM25Retriever.from_corpus(docs)
    d = tmp_path / "v1"
    d.mkdir()
    idx = r._index
    for name in ("data", "indices", "indptr"):
        np.save(d / f"{name}.npy", np.asarray(getattr(idx, name)))
    (d / "vocab.json").write_text(json.dumps(idx.vocab))
    (d / "doc_ids.json").write_text(json.dumps(list(idx.doc_ids)))
    with open(d / "documents.jsonl", "w") as fh:
        for doc in docs:
            fh.write(json.dumps({"id": doc.id, "title": doc.title, "text": doc.text, "metadata": {}}) + "\n")
    write_manifest(d, "bm25", format_version=1, engine="bm25s", **r.params, num_docs=len(docs),
                   vocab_size=len(idx.vocab), store_text=True)
    for mmap in (False, True):
        old = BM25Retriever.load(d, mmap=mmap)
        assert _results(old) == _results(r)


@pytest.mark.parametrize("k", [1, 3, 20])
def test_pruned_search_equals_the_full_product(monkeypatch, k):
    docs = _corpus(400, seed=3)
    r = BM25Retriever.from_corpus(docs, store_text=False)
    queries = [Query(f"q{i}", " ".join(random.Random(i).choices(WORDS, k=random.Random(i).randint(2, 6))))
               for i in range(60)]
    monkeypatch.setattr(bm25_prune, "PRUNE_MIN_POSTINGS", 10**12)
    full = r.retrieve_batch(queries, k=k)
    monkeypatch.setattr(bm25_prune, "PRUNE_MIN_POSTINGS", 0)
    taken = []
    blockmax_top = bm25_search.blockmax_top

    def counting(*a, **kw):
        out = blockmax_top(*a, **kw)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(bm25_search, "blockmax_top", counting)
    pruned = r.retrieve_batch(queries, k=k)
    assert sum(taken) >= 10  # the pruned path answered many of them
    for q in queries:
        assert pruned[q.id] == full[q.id]
        assert [c.score for c in pruned[q.id]] == [c.score for c in full[q.id]]


def test_builder_rejects_a_bad_chunk_size():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            bm25_build.PostingsBuilder(k1=0.9, b=0.4, delta=0.5, method="lucene", chunk_size=bad)


def test_a_corpus_on_disk_is_referenced_not_copied(tmp_path):
    from attnsift.eval.datasets.base import Corpus

    docs = _corpus(40)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": d.title or "", "text": d.text}) + "\n" for d in docs))
    corpus = Corpus.from_jsonl(path)
    r = BM25Retriever.from_corpus(corpus)
    assert r._index.documents is corpus  # no Document copies held by the index
    top = r.retrieve("vitamin heart w1", k=5)
    assert [c.document for c in top] == [corpus[c.doc_id] for c in top]
    assert _results(r) == _results(BM25Retriever.from_corpus(docs))
    r.save(tmp_path / "a")
    BM25Retriever.from_corpus(list(corpus.iter_documents())).save(tmp_path / "b")
    assert (tmp_path / "a" / "documents.jsonl").read_bytes() == (tmp_path / "b" / "documents.jsonl").read_bytes()
