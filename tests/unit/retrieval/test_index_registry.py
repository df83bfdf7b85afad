"""build_index / save / load_index round trips for every kind, index_info, hybrid save and load, encoder= and
the deprecated model=, check_model before work."""
import json
import warnings
from pathlib import Path

import pytest

from attnsift import build_index, index_info, load_index
from attnsift.errors import AttnsiftDeprecationWarning, IndexCorruptedError
from attnsift.registry import build_retriever, check_model, check_options
from attnsift.types import Document

TEXTS = ["Vitamin C deficiency causes scurvy in sailors.", "Lemons and limes contain ascorbic acid.",
         "Granite is an igneous rock.", "Vitamin D helps calcium absorption for bone density.",
         "Adults need seven hours of sleep.", "Sailing ships crossed the Atlantic.",
         "Milk is a source of calcium and vitamin D.", "Stars fuse hydrogen into helium.",
         "Attention heads can rerank passages.", "BM25 ranks documents by term statistics."]
QUERIES = ["what causes scurvy", "calcium and bones", "how do stars shine"]


def _rankings(index, k=5):
    return [[(c.doc_id, round(c.score, 5)) for c in index.retrieve(q, k=k)] for q in QUERIES]


def test_bm25_from_texts_save_load_same_ranking(tmp_path: Path):
    index = build_index(TEXTS, progress=False)
    assert index.retrieve("what causes scurvy", k=1).doc_ids == ["d0"]
    index.save(tmp_path / "bm25")
    loaded = load_index(tmp_path / "bm25")
    assert type(loaded).__name__ == "BM25Retriever"
    assert _rankings(loaded) == _rankings(index)
    info = index_info(tmp_path / "bm25")
    assert info["retriever"] == "bm25" and info["docs"] == 10 and info["encoder"] is None
    assert info["corpus_fingerprint"] == index.corpus_fingerprint and len(info["corpus_fingerprint"]) == 64
    assert info["created"][:2] == "20"


def test_build_index_from_a_path_records_the_file_fingerprint(tmp_path: Path):
    from attnsift.eval.datasets import Corpus

    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"id": f"x{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    index = build_index(p, progress=False)
    assert index.retrieve("stars helium", k=1).doc_ids == ["x7"]
    assert index.corpus_fingerprint == Corpus.from_jsonl(p).fingerprint()
    index.save(tmp_path / "i")
    assert index_info(tmp_path / "i")["corpus_fingerprint"] == Corpus.from_jsonl(p).fingerprint()


def test_checks_before_reading_documents(tmp_path: Path):
    missing = tmp_path / "nothing.jsonl"
    with pytest.raises(ValueError, match="unknown retriever 'bm52'"):
        build_index(missing, "bm52")
    with pytest.raises(ValueError, match="unknown option"):
        build_index(missing, options={"colour": "red"})
    with pytest.raises(ValueError, match="takes no model"):
        build_index(missing, encoder="minilm")
    with pytest.raises(FileNotFoundError, match="no documents at"):
        build_index(missing)


def test_check_model_and_check_options_accept_encoder():
    check_options("retriever", "hybrid", {"encoder": "minilm", "method": "score"})
    check_options("retriever", "dense", {"encoder": "minilm"})
    with pytest.raises(ValueError, match="unknown option"):
        check_options("retriever", "bm25", {"encoder": "minilm"})
    check_model("retriever", "dense", None)
    with pytest.raises(ValueError, match="takes no model"):
        check_model("retriever", "bm25", "minilm")
    with pytest.raises(ValueError, match="none takes no model"):
        check_model("reranker", "none", "smollm2-135m")


def test_load_index_errors(tmp_path: Path):
    with pytest.raises(IndexCorruptedError, match="no index at"):
        load_index(tmp_path / "absent")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"kind": "converted-model", "files": {}}))
    with pytest.raises(IndexCorruptedError, match="not a first-stage index"):
        load_index(tmp_path / "other")
    build_index(TEXTS[:3], progress=False).save(tmp_path / "b")
    with pytest.raises(ValueError, match="takes no encoder"):
        load_index(tmp_path / "b", encoder="minilm")
    with pytest.raises(ValueError, match="is a 'bm25' index, not 'dense'"):
        build_retriever("dense", index=tmp_path / "b")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("faiss")
    from attnsift.retrieval.encoders import resolve_model

    try:
        resolve_model("minilm")
    except (ValueError, OSError) as exc:
        pytest.skip(f"minilm is not available offline: {exc}")


def test_dense_round_trip(minilm, tmp_path: Path):
    docs = [Document(f"m{i}", t) for i, t in enumerate(TEXTS)]
    index = build_index(docs, "dense", encoder="minilm", device="cpu", progress=False)
    assert index.retrieve("what causes scurvy", k=1).doc_ids == ["m0"]
    index.save(tmp_path / "dense")
    loaded = load_index(tmp_path / "dense", device="cpu")
    assert type(loaded).__name__ == "DenseRetriever"
    assert [[d for d, _ in r] for r in _rankings(loaded)] == [[d for d, _ in r] for r in _rankings(index)]
    info = index_info(tmp_path / "dense")
    assert info["retriever"] == "dense" and info["docs"] == 10 and "MiniLM" in info["encoder"]


def test_hybrid_round_trip_encoder_in_options_and_deprecated_model(minilm, tmp_path: Path):
    # an encoder key inside options is the encoder (it used to crash with "multiple values for 'model'")
    index = build_index(TEXTS, "hybrid", options={"encoder": "minilm", "method": "score"}, device="cpu",
                        progress=False)
    assert index.retrieve("what causes scurvy", k=1).doc_ids == ["d0"]
    index.save(tmp_path / "hyb")
    info = index_info(tmp_path / "hyb")
    assert info["retriever"] == "hybrid" and [p["retriever"] for p in info["parts"]] == ["bm25", "dense"]
    assert info["fusion"]["method"] == "score" and info["docs"] == 10
    loaded = load_index(tmp_path / "hyb", device="cpu")
    assert type(loaded).__name__ == "FusionRetriever" and loaded.method == "score"
    assert [[d for d, _ in r] for r in _rankings(loaded)] == [[d for d, _ in r] for r in _rankings(index)]
    # search-time fusion options may change on load; build_retriever("hybrid", index=...) works now
    rrf = build_retriever("hybrid", index=tmp_path / "hyb", options={"method": "rrf"}, device="cpu")
    assert rrf.method == "rrf" and rrf.retrieve("stars", k=1).doc_ids == ["d7"]
    with pytest.warns(AttnsiftDeprecationWarning, match="model="):
        legacy = build_retriever("hybrid", TEXTS[:4], options={"model": "minilm"}, device="cpu", progress=False)
    assert legacy.retrieve("scurvy", k=1).doc_ids == ["d0"]
    with pytest.raises(ValueError, match="two encoders"):
        build_retriever("dense", TEXTS[:2], encoder="minilm", options={"encoder": "other"})
    # a damaged part is caught by the hybrid's own manifest
    part = tmp_path / "hyb" / "part0-bm25" / "vocab.json"
    part.write_text(part.read_text().replace("scurvi", "scurvy"))
    with pytest.raises(IndexCorruptedError, match="checksum"):
        load_index(tmp_path / "hyb")


def test_model_keyword_is_deprecated_not_removed():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="takes no model"):
            build_retriever("bm25", TEXTS, model="minilm")
    assert any(issubclass(w.category, AttnsiftDeprecationWarning) for w in caught)
