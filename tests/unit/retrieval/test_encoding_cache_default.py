"""The encoded corpus is cached by (texts, encoder) by default: a second build does not encode again.

Real MiniLM (the bundled offline alias) and a tiny random BERT saved as a folder; the encoder's calls are
counted with a subclass of the real Encoder, not a mock.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("transformers")

from attnsift.retrieval.dense import PROBE_TEXT, DenseRetriever
from attnsift.retrieval.encoders import Encoder
from attnsift.retrieval.encoding_cache import default_cache_dir, texts_fingerprint
from helpers import SIX_TOPIC_TEXTS

from attnsift.types import Document

TEXTS = SIX_TOPIC_TEXTS
DOCS = [Document(f"d{i}", t) for i, t in enumerate(TEXTS)]


class CountingEncoder(Encoder):
    """The real encoder, recording every document text it encodes (the probe text aside)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoded: list[str] = []

    def _encode(self, texts, is_query, want, progress):
        self.encoded += [t for t in texts if t != PROBE_TEXT and not is_query]
        return super()._encode(texts, is_query, want, progress)


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    """Every test gets its own $ATTNSIFT_CACHE (the default cache lives under it)."""
    root = tmp_path / "attnsift-cache"
    monkeypatch.setenv("ATTNSIFT_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def counting() -> CountingEncoder:
    return CountingEncoder("minilm", device="cpu")


def _folders(root):
    enc = root / "encodings"
    return sorted(p.name for p in enc.iterdir()) if enc.is_dir() else []


def test_second_build_reads_the_cache(counting, cache_root, caplog, capsys):
    counting.encoded.clear()
    first = DenseRetriever.from_corpus(DOCS, counting, progress=False)
    assert sorted(counting.encoded) == sorted(TEXTS)
    folders = _folders(cache_root)
    assert len(folders) == 1 and folders[0].startswith("all-MiniLM-L6-v2-dense-")
    with caplog.at_level(logging.INFO, logger="attnsift.retrieval.encoders"):
        second = DenseRetriever.from_corpus(DOCS, encoder=counting, progress=True)
    assert sorted(counting.encoded) == sorted(TEXTS)  # nothing encoded the second time
    assert _folders(cache_root) == folders
    assert "reusing cached encodings of 6 documents (minilm)" in capsys.readouterr().err
    assert any("reusing cached encodings of 6 documents" in r.getMessage() for r in caplog.records)
    q = "does vitamin D help bones?"
    assert first.retrieve(q, k=3).doc_ids == second.retrieve(q, k=3).doc_ids
    assert first.retrieve(q, k=1).doc_ids == ["d2"]
    np.testing.assert_array_equal(first.index.search(counting.encode_queries([q]), 6)[0],
                                  second.index.search(counting.encode_queries([q]), 6)[0])


def test_changed_text_is_a_miss(counting, cache_root):
    DenseRetriever.from_corpus(DOCS, counting)
    counting.encoded.clear()
    changed = DOCS[:-1] + [Document("d5", "Insulin resistance is a hallmark of type 1 diabetes.")]
    r = DenseRetriever.from_corpus(changed, counting)
    assert len(counting.encoded) == len(changed)  # the whole (single) chunk again, in a new folder
    assert len(_folders(cache_root)) == 2
    np.testing.assert_allclose(r.index.search(counting.encode_documents([changed[-1].text]), 1)[0][0, 0], 1.0, atol=1e-5)
    # Same texts under other ids: another corpus, another key.
    ids = [d.id for d in DOCS]
    assert texts_fingerprint(ids, TEXTS) != texts_fingerprint([i + "x" for i in ids], TEXTS)


def test_other_encoder_options_are_a_miss(counting, cache_root):
    DenseRetriever.from_corpus(DOCS, counting)
    prefixed = CountingEncoder("minilm", device="cpu", doc_prefix="passage: ")
    DenseRetriever.from_corpus(DOCS, prefixed)
    assert sorted(prefixed.encoded) == sorted(TEXTS)
    shorter = CountingEncoder("minilm", device="cpu", max_length=16)
    DenseRetriever.from_corpus(DOCS, shorter)
    assert len(shorter.encoded) == len(TEXTS)
    assert len(_folders(cache_root)) == 3
    fp = texts_fingerprint([d.id for d in DOCS], TEXTS)
    half = Encoder("minilm", device="cpu", dtype="bfloat16")
    assert default_cache_dir(half, fp, ["dense"]) != default_cache_dir(counting, fp, ["dense"])
    assert default_cache_dir(counting, fp, ["tokens"]) != default_cache_dir(counting, fp, ["dense"])
    assert default_cache_dir(counting, fp, ["dense"]).parent == cache_root / "encodings"


def test_other_weights_in_the_same_folder_are_a_miss(tmp_path):
    from helpers import write_tiny_encoder

    folder = tmp_path / "enc"
    write_tiny_encoder(folder)
    fp = "0" * 64
    before = default_cache_dir(Encoder(str(folder), device="cpu"), fp, ["dense"])
    weights = next(folder.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # replaced weights: another mtime
    after = default_cache_dir(Encoder(str(folder), device="cpu"), fp, ["dense"])
    assert before != after and before.name.startswith("enc-dense-")


def test_cache_off_and_explicit_folder(counting, cache_root, tmp_path):
    counting.encoded.clear()
    DenseRetriever.from_corpus(DOCS, counting, cache=False)
    DenseRetriever.from_corpus(DOCS, counting, cache="false")  # the CLI's spelling
    assert len(counting.encoded) == 2 * len(TEXTS) and _folders(cache_root) == []
    mine = tmp_path / "mine"
    DenseRetriever.from_corpus(DOCS, counting, cache_dir=mine)
    DenseRetriever.from_corpus(DOCS, counting, cache_dir=str(mine))
    assert len(counting.encoded) == 3 * len(TEXTS) and (mine / "cache.json").is_file()
    assert _folders(cache_root) == []
    with pytest.raises(ValueError, match="cache=False turns the encoding cache off, but cache_dir="):
        DenseRetriever.from_corpus(DOCS, counting, cache=False, cache_dir=mine)


def test_late_interaction_caches_tokens(counting, cache_root):
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    counting.encoded.clear()
    a = LateInteractionRetriever.from_corpus(DOCS, counting, candidate_k=1000)
    b = LateInteractionRetriever.from_corpus(DOCS, encoder=counting, candidate_k=1000)
    assert len(counting.encoded) == len(TEXTS)
    assert [f.split("-tokens-")[0] for f in _folders(cache_root)] == ["all-MiniLM-L6-v2"]
    np.testing.assert_array_equal(a.index.offsets, b.index.offsets)
    np.testing.assert_array_equal(a.index.tokens, b.index.tokens)
    assert a.retrieve("cats purring", k=2).doc_ids == b.retrieve("cats purring", k=2).doc_ids


def test_strings_are_documents(counting):
    r = DenseRetriever.from_corpus(TEXTS, counting)
    top = r.retrieve("stock market and interest rates", k=1)[0]
    assert top.doc_id == "d1" and top.document.text == TEXTS[1]
    r2 = DenseRetriever.from_corpus({"cat": TEXTS[0], "bank": TEXTS[1]}, counting)
    assert r2.retrieve("kittens", k=1).doc_ids == ["cat"]
