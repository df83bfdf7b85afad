"""attnsift.eval.datasets.synthetic_msmarco (behind benchmarks/synthetic_msmarco.py): the official format, byte-for-byte reproducibility, findable queries."""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

MODULE = ["-m", "attnsift.eval.datasets.synthetic_msmarco"]
FILES = ("collection.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv", "top1000.dev.tsv")


@pytest.fixture(scope="module")
def gen():
    from attnsift.eval.datasets import synthetic_msmarco

    return synthetic_msmarco


@pytest.fixture(scope="module")
def small(gen, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "msmarco-passage"
    gen.generate(3000, 60, out, seed=7, top1000_queries=5, top1000_depth=50, tar=True, progress=False)
    return out


def _lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


def test_official_format(small):
    coll = _lines(small / "collection.tsv")
    assert [int(p) for p, _ in coll] == list(range(3000))
    assert all(len(f) == 2 and re.fullmatch(r"[A-Z][a-z]*( [a-z]+)+", f[1]) for f in coll)
    words = np.array([len(t.split()) for _, t in coll])
    assert 48 < words.mean() < 64 and np.median(words) < words.mean() and words.max() > 2 * words.mean()
    queries = _lines(small / "queries.dev.small.tsv")
    assert len(queries) == 60 and all(len(f) == 2 and f[0].isdigit() for f in queries)
    assert 4 <= np.mean([len(t.split()) for _, t in queries]) <= 8
    qrels = _lines(small / "qrels.dev.small.tsv")
    assert [f[0] for f in qrels] == [f[0] for f in queries]
    assert all(f[1] == "0" and f[3] == "1" and 0 <= int(f[2]) < 3000 for f in qrels)
    text = dict(coll)
    rel = {q: p for q, _, p, _ in qrels}
    top = _lines(small / "top1000.dev.tsv")
    assert len(top) == 5 * 50 and all(len(f) == 4 for f in top)
    assert {f[0] for f in top} == {q for q, _ in queries[:5]}
    assert all(text[f[1]] == f[3] and dict(queries)[f[0]] == f[2] for f in top)  # passage and query texts as listed
    assert all(any(f[0] == q and f[1] == rel[q] for f in top) for q, _ in queries[:5])  # the relevant one is a candidate
    with tarfile.open(small / "queries.tar.gz") as tf:
        assert sorted(tf.getnames()) == ["qrels.dev.small.tsv", "queries.dev.small.tsv"]
        assert tf.extractfile("queries.dev.small.tsv").read() == (small / "queries.dev.small.tsv").read_bytes()


def test_words_are_words_for_the_analyzer(small):
    from attnsift.retrieval.analysis import Analyzer

    text = " ".join(t for _, t in _lines(small / "collection.tsv")[:200])
    terms = Analyzer()(text)
    assert terms and not any(t.isdigit() for t in terms)
    assert len(set(terms)) > 1000


def test_same_seed_same_bytes_other_seed_other_bytes(gen, small, tmp_path):
    again = tmp_path / "again"
    gen.generate(3000, 60, again, seed=7, top1000_queries=5, top1000_depth=50, tar=True, progress=False)
    for name in FILES + ("collection.tar.gz", "queries.tar.gz", "top1000.dev.tar.gz"):
        assert (again / name).read_bytes() == (small / name).read_bytes(), name
    other = tmp_path / "other"
    gen.generate(3000, 60, other, seed=8, top1000_queries=5, top1000_depth=50, progress=False)
    assert (other / "collection.tsv").read_bytes() != (small / "collection.tsv").read_bytes()


def test_bm25_finds_the_relevant_passage(small):
    from attnsift.retrieval.bm25 import BM25Retriever
    from attnsift.types import Document, Query

    docs = [Document(p, t) for p, t in _lines(small / "collection.tsv")]
    bm25 = BM25Retriever().index(docs, progress=False)
    rel = {q: p for q, _, p, _ in _lines(small / "qrels.dev.small.tsv")}
    hits = [rel[q] in bm25.retrieve(Query(q, t), k=10).doc_ids for q, t in _lines(small / "queries.dev.small.tsv")]
    assert np.mean(hits) >= 0.8


def test_command_line(tmp_path):
    proc = subprocess.run([sys.executable, *MODULE, "--passages", "500", "--queries", "10", "--out",
                           str(tmp_path / "o"), "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "500/500 passages" in proc.stderr and '"passages": 500' in proc.stdout
    assert sum(1 for _ in open(tmp_path / "o" / "collection.tsv")) == 500
    bad = subprocess.run([sys.executable, *MODULE, "--passages", "5", "--queries", "10", "--out",
                          str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cannot exceed" in bad.stderr
