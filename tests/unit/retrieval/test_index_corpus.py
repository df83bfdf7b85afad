"""Indexes record their corpus; searching one for another corpus is an error unless forced."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from attnsift.errors import IndexCorruptedError
from attnsift.fingerprint import documents_fingerprint
from attnsift.indexes.corpus import check_index_corpus, corpus_fields
from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.types import Document

DOCS_A = [Document("a1", "aspirin lowers the risk of stroke"), Document("a2", "statins and heart disease")]
DOCS_B = [Document("b1", "glucose metabolism in mice"), Document("b2", "vitamin d and bone density")]


def test_bm25_index_records_its_corpus_and_refuses_another(tmp_path: Path, caplog):
    fp_a, fp_b = documents_fingerprint(DOCS_A), documents_fingerprint(DOCS_B)
    path = BM25Retriever.from_corpus(DOCS_A).save(tmp_path / "idx", corpus_fingerprint=fp_a, dataset="scifact")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["corpus"] == {"fingerprint": fp_a, "dataset": "scifact"}
    assert check_index_corpus(path, fp_a, "scifact") == {"fingerprint": fp_a, "dataset": "scifact"}
    with pytest.raises(IndexCorruptedError, match=r"built on data set 'scifact' .* not on data set 'nfcorpus'.*--force") as info:
        check_index_corpus(path, fp_b, "nfcorpus")
    assert "\n" not in str(info.value) and "attnsift index --dataset nfcorpus" in str(info.value)
    with caplog.at_level(logging.WARNING):
        check_index_corpus(path, fp_b, "nfcorpus", force=True)
    assert "using it anyway (force)" in caplog.text
    BM25Retriever.load(path)  # the recorded corpus does not disturb loading


def _build(kind: str):
    if kind == "bm25":
        return BM25Retriever.from_corpus(DOCS_A)
    pytest.importorskip("faiss")
    pytest.importorskip("torch")
    from attnsift.retrieval.encoders import Encoder

    encoder = Encoder("minilm", device="cpu")
    if kind == "dense":
        from attnsift.retrieval.dense import DenseRetriever

        return DenseRetriever.from_corpus(DOCS_A, encoder=encoder)
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    return LateInteractionRetriever.from_corpus(DOCS_A, encoder=encoder)


@pytest.mark.parametrize("kind", ["bm25", "dense", "late"])
def test_every_first_stage_index_records_its_corpus(tmp_path: Path, kind: str):
    fp = documents_fingerprint(DOCS_A)
    path = _build(kind).save(tmp_path / kind, corpus_fingerprint=fp, dataset="scifact")
    assert json.loads((path / "manifest.json").read_text())["corpus"] == {"fingerprint": fp, "dataset": "scifact"}
    with pytest.raises(IndexCorruptedError, match="built on data set 'scifact'"):
        check_index_corpus(path, documents_fingerprint(DOCS_B), "nfcorpus")


def test_index_without_a_corpus_record_is_accepted_with_a_warning(tmp_path: Path, caplog):
    path = BM25Retriever.from_corpus(DOCS_A).save(tmp_path / "idx")
    with caplog.at_level(logging.WARNING):
        rec = check_index_corpus(path, documents_fingerprint(DOCS_B), "nfcorpus")
    assert rec["fingerprint"] is None and "records no corpus" in caplog.text


def test_bad_corpus_arguments(tmp_path: Path):
    r = BM25Retriever.from_corpus(DOCS_A)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        r.save(tmp_path / "idx", corpus_fingerprint="scifact")
    with pytest.raises(TypeError, match="dataset must be a non-empty string"):
        corpus_fields(None, "")
    assert not (tmp_path / "idx").exists()  # checked before anything is written
    path = r.save(tmp_path / "idx")
    with pytest.raises(TypeError, match="needs the corpus's fingerprint"):
        check_index_corpus(path, None)
    with pytest.raises(TypeError, match="force must be True or False"):
        check_index_corpus(path, documents_fingerprint(DOCS_A), force="yes")
    with pytest.raises(IndexCorruptedError, match="no index at"):
        check_index_corpus(tmp_path / "nothing", documents_fingerprint(DOCS_A))


@pytest.mark.skipif(not os.environ.get("ATTNSIFT_DATA"), reason="needs ATTNSIFT_DATA (real SciFact and NFCorpus)")
def test_scifact_index_searched_for_nfcorpus_is_an_error(tmp_path: Path):
    from attnsift.eval.datasets import load_dataset

    try:
        scifact, nfcorpus = load_dataset("scifact"), load_dataset("nfcorpus")
    except Exception as exc:  # noqa: BLE001 - a data set not present here
        pytest.skip(str(exc))
    docs = list(scifact.corpus.iter_documents())[:50]
    path = BM25Retriever.from_corpus(docs).save(tmp_path / "scifact-idx", corpus_fingerprint=scifact.corpus.fingerprint(),
                                                dataset=scifact.name)
    check_index_corpus(path, scifact.corpus.fingerprint(), scifact.name)
    with pytest.raises(IndexCorruptedError, match="built on data set 'scifact'"):
        check_index_corpus(path, nfcorpus.corpus.fingerprint(), nfcorpus.name)
