"""Block-max pruned BM25: bit-identical to the plain sparse product, threads, the sidecar beside the index."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

import attnsift.retrieval.bm25_blockmax as bb
import attnsift.retrieval.bm25_prune as bp
import attnsift.retrieval.bm25_search as bs
from attnsift.indexes.bm25_index import PackedIds
from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Document, Query

# a Zipf vocabulary: a few words in most documents ("what"), a long tail of rare ones
VOCAB = ["what", "how", "much"] + [f"w{i}" for i in range(300)]


def _docs(n: int = 1500, seed: int = 0) -> list[Document]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        words = [VOCAB[min(int(rnd.paretovariate(0.7)) - 1, len(VOCAB) - 1)] for _ in range(rnd.randint(1, 30))]
        out.append(Document(f"p{rnd.randint(0, 10**5)}-{i}", " ".join(words)))
    return out


def _queries(n: int = 80, seed: int = 1) -> list[Query]:
    rnd = random.Random(seed)
    qs = []
    for i in range(n):
        words = [rnd.choice(["what", "how", "how much", "what what"])] if i % 5 else []
        words += [f"w{rnd.randint(3, 299)}" for _ in range(rnd.randint(1, 4))]
        qs.append(Query(f"q{i}", " ".join(words)))
    return qs + [Query("only-frequent", "what how"), Query("one", "what"), Query("absent", "zzzz")]


def _answers(run) -> dict:
    return {qid: (rk.doc_ids, [np.float32(s).view(np.uint32).item() for s in rk.scores().values()])
            for qid, rk in run.items()}


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 documents, a row for every term in >= 2% of documents, every query pruned."""
    monkeypatch.setattr(bb, "BLOCK_SHIFT", 3)
    monkeypatch.setattr(bb, "MIN_POSTINGS", 1)
    monkeypatch.setattr(bb, "ROW_FRACTION", 0.02)
    calls = {"blocks": 0, "docs": 0, "pruned": 0}
    for name, key in (("score_blocks", "blocks"), ("score_docs", "docs")):
        orig = getattr(bb._Query, name)

        def counted(self, *args, _orig=orig, _key=key):
            calls[_key] += 1
            return _orig(self, *args)

        monkeypatch.setattr(bb._Query, name, counted)
    top = bs.blockmax_top

    def counted_top(*a, **kw):
        calls["pruned"] += 1
        return top(*a, **kw)

    monkeypatch.setattr(bs, "blockmax_top", counted_top)
    return calls


@pytest.mark.parametrize("k", [1, 7, 100, 1000])
def test_pruned_rankings_are_bit_identical_to_the_product(monkeypatch, small_blocks, k):
    r = BM25Retriever.from_corpus(_docs(), store_text=False)
    queries = _queries()
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 10**12)
    full = _answers(r.retrieve_batch(queries, k=k))
    assert small_blocks["pruned"] == 0
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 0)
    pruned = _answers(r.retrieve_batch(queries, k=k))
    assert pruned == full
    assert sum(len(ids) for ids, _ in full.values()) > 0
    if k <= 100:  # queries with >= 8 k postings are pruned
        assert small_blocks["pruned"] >= 20
        assert small_blocks["blocks"] > 0 and small_blocks["docs"] > 0  # both ways of scoring ran


def test_pruning_skips_most_documents(monkeypatch, small_blocks):
    r = BM25Retriever.from_corpus(_docs(3000, seed=5), store_text=False)
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 0)
    bm = bb.blockmax_for(r)
    index = r._index
    q = Query("q", "what w40")
    tids = np.array(sorted(r._vocab_ids[t] for t in r.analyzer(q.text)))
    docs, vals = bb.blockmax_top(index, bm, tids, np.ones(len(tids), np.float32), 5)
    matching = int(np.diff(index.indptr)[tids].sum())
    assert len(docs) < matching / 3  # the frequent term's other blocks were never read
    assert r.retrieve(q, k=5).doc_ids == BM25Retriever.from_corpus(_docs(3000, seed=5)).retrieve(q, k=5).doc_ids


def test_bounds_hold_for_every_block(small_blocks):
    r = BM25Retriever.from_corpus(_docs(), store_text=False)
    bm, index = bb.blockmax_for(r), r._index
    assert len(bm.terms) > 0
    for row, t in enumerate(bm.terms.tolist()):
        s, e = index.indptr[t], index.indptr[t + 1]
        blocks = index.indices[s:e] >> bm.shift
        bound = bm.maxima[row].astype(np.float64) * bm.scale[row]
        assert np.all(index.data[s:e] <= bound[blocks])
        assert np.all(bound[blocks] <= index.data[s:e].max() * (1 + 1e-4))
        holders = np.zeros(len(r.doc_ids), dtype=bool)
        holders[index.indices[s:e]] = True
        assert np.array_equal(bm.has(row, np.arange(len(r.doc_ids))), holders)


def test_threads_give_the_same_results(monkeypatch, small_blocks):
    r = BM25Retriever.from_corpus(_docs(), store_text=False)
    monkeypatch.setattr(bs, "QUERY_CHUNK", 8)  # several chunks per thread
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 0)
    queries = _queries(120, seed=7)
    one = _answers(r.retrieve_batch(queries, k=50, n_threads=1))
    assert _answers(r.retrieve_batch(queries, k=50, n_threads=2)) == one
    assert _answers(r.retrieve_batch(queries, k=50, n_threads=-1)) == one


def test_negative_scores_take_the_product(monkeypatch):
    # robertson's idf is negative for a term in more than half of the documents
    docs = [Document(f"d{i}", "common " + ("rare" if i % 7 == 0 else "other")) for i in range(60)]
    r = BM25Retriever.from_corpus(docs, method="robertson", store_text=False)
    q = [Query("q", "common rare")]
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 10**12)
    full = _answers(r.retrieve_batch(q, k=5))
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 0)
    assert _answers(r.retrieve_batch(q, k=5)) == full


def test_sidecar_written_read_and_checked(monkeypatch, small_blocks, tmp_path):
    docs = _docs(800)
    queries = _queries(40)
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 0)
    built = BM25Retriever.build(docs, tmp_path / "idx", store_text=False, chunk_size=300)
    meta = json.loads((tmp_path / "idx" / "blockmax.json").read_text())  # written by the build
    assert meta["shift"] == 3 and set(meta["files"]) == set(bb.FILES)
    expected = _answers(built.retrieve_batch(queries, k=20))
    loaded = BM25Retriever.load(tmp_path / "idx", mmap=True)
    assert _answers(loaded.retrieve_batch(queries, k=20)) == expected
    assert isinstance(loaded._blockmax.maxima, np.memmap)  # read from the sidecar, not recomputed

    # an index without the sidecar (built before it existed) loads, answers the same and writes it
    for name in ("blockmax.json", *bb.FILES):
        (tmp_path / "idx" / name).unlink()
    old = BM25Retriever.load(tmp_path / "idx", mmap=False)
    assert _answers(old.retrieve_batch(queries, k=20)) == expected
    assert (tmp_path / "idx" / "blockmax.json").is_file()
    fresh = bb.compute_blockmax(old._index)
    assert np.array_equal(np.load(tmp_path / "idx" / "blockmax.npy"), fresh.maxima)

    # a damaged sidecar is recomputed (and rewritten), never used
    raw = bytearray((tmp_path / "idx" / "blockmax.npy").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "idx" / "blockmax.npy").write_bytes(bytes(raw))
    damaged = BM25Retriever.load(tmp_path / "idx")
    assert _answers(damaged.retrieve_batch(queries, k=20)) == expected
    assert np.array_equal(np.asarray(damaged._blockmax.maxima), fresh.maxima)
    assert (tmp_path / "idx" / "blockmax.npy").read_bytes() != bytes(raw)

    # other parameters: another key, so the stored rows are not reused
    monkeypatch.setattr(bb, "BLOCK_SHIFT", 4)
    other = BM25Retriever.load(tmp_path / "idx")
    assert _answers(other.retrieve_batch(queries, k=20)) == expected
    assert other._blockmax.shift == 4 and json.loads((tmp_path / "idx" / "blockmax.json").read_text())["shift"] == 4


def test_read_only_folder_keeps_the_rows_in_memory(monkeypatch, small_blocks, tmp_path):
    monkeypatch.setattr(bp, "PRUNE_MIN_POSTINGS", 0)
    r = BM25Retriever.from_corpus(_docs(300), store_text=False)
    r.save(tmp_path / "idx")
    for name in ("blockmax.json", *bb.FILES):  # an index saved before the sidecar existed
        (tmp_path / "idx" / name).unlink()
    loaded = BM25Retriever.load(tmp_path / "idx")

    def refuse(*a, **kw):
        raise PermissionError("read-only")

    monkeypatch.setattr(bb, "write_sidecar", refuse)
    q = _queries(20)
    assert _answers(loaded.retrieve_batch(q, k=10)) == _answers(r.retrieve_batch(q, k=10))
    assert loaded._blockmax is not None and not (tmp_path / "idx" / "blockmax.json").exists()


def test_packed_ids_take_gathers_utf8_ids():
    ids = ["a", "bé", "", "x\ty", "ünï-42"]
    blob = ("\n".join(ids) + "\n").encode()
    offsets = np.cumsum([0] + [len(i.encode()) + 1 for i in ids])
    p = PackedIds(blob, offsets)
    assert p.take(np.array([4, 1, 2, 0, 3])) == ["ünï-42", "bé", "", "a", "x\ty"]
    assert p.take(np.array([], dtype=np.int64)) == [] and p.take([3]) == ["x\ty"]


def test_top_k_selection_keeps_ties_by_id_on_long_score_lists():
    from attnsift.retrieval.bm25_search import _topk_indices

    rng = np.random.default_rng(0)
    for trial in range(24):
        n, k = int(rng.integers(1, 40000)), int(rng.integers(1, 1200))
        levels = int(rng.integers(1, 40))  # few distinct scores: many ties at the k-th
        scores = (rng.integers(0, levels, n) if trial % 2 else rng.random(n)).astype(np.float32)
        docs, id_rank = rng.permutation(n), rng.permutation(n)
        expected = np.lexsort((id_rank[docs], -scores))[:k]
        assert sorted(_topk_indices(scores, docs, k, id_rank).tolist()) == sorted(expected.tolist())
