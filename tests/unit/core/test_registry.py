"""attnsift.registry: build_retriever / build_reranker, options reaching each component's config."""
from __future__ import annotations

from pathlib import Path

import pytest

from attnsift import registry
from attnsift.errors import IndexCorruptedError
from attnsift.registry import build_reranker, build_retriever
from attnsift.types import Document, Query

DOCS = [Document("d1", "Vitamin C deficiency causes scurvy in sailors.", "Scurvy"),
        Document("d2", "Lemons and limes contain ascorbic acid.", "Citrus"),
        Document("d3", "Granite is an igneous rock.", "Rocks"),
        Document("d4", "Vitamin D helps calcium absorption for bone density.", "Bones"),
        Document("d5", "Stars fuse hydrogen into helium.", "Stars")]
QUERIES = [Query("q1", "what causes scurvy"), Query("q2", "vitamin D and bones"), Query("q3", "how do stars shine")]
BEST = {"q1": "d1", "q2": "d4", "q3": "d5"}


def test_bm25_options_are_parsed_and_checked():
    r = build_retriever("bm25", DOCS, options={"k1": "1.2", "b": "0.75", "stopwords": "none"})
    assert (r.config.k1, r.config.b, r.config.stopwords) == (1.2, 0.75, None)
    assert {q.id: r.retrieve(q, k=1).doc_ids[0] for q in QUERIES} == BEST
    with pytest.raises(ValueError, match="unknown option.*k3 for BM25Config; accepted: b, delta, k1"):
        build_retriever("bm25", DOCS, options={"k3": "1"})
    with pytest.raises(ValueError, match="expected one of 'lucene', 'robertson'"):
        build_retriever("bm25", DOCS, options={"method": "tfidf"})
    with pytest.raises(ValueError, match=r"b must be in \[0, 1\]"):
        build_retriever("bm25", DOCS, options={"b": "1.5"})
    with pytest.raises(ValueError, match="delta=0.3 applies to method bm25l or bm25\\+ only"):
        build_retriever("bm25", DOCS, options={"delta": "0.3"})


def test_bm25_takes_no_model_device_or_dtype_and_a_loaded_index_no_options(tmp_path: Path):
    with pytest.raises(ValueError, match="takes no model"):
        build_retriever("bm25", DOCS, encoder="minilm")
    with pytest.raises(ValueError, match="runs no model, so it takes no device"):
        build_retriever("bm25", DOCS, device="cpu")
    with pytest.raises(ValueError, match="needs a corpus"):
        build_retriever("bm25")
    build_retriever("bm25", DOCS, options={"k1": "1.1"}).save(tmp_path / "idx")
    assert build_retriever("bm25", index=tmp_path / "idx").config.k1 == 1.1
    with pytest.raises(ValueError, match="keeps the parameters it was built with; got options k1"):
        build_retriever("bm25", index=tmp_path / "idx", options={"k1": "0.9"})


class _Recorder:
    """Stands in for a reranker class: records how the registry constructs it."""

    def __init__(self, model, tokenizer=None, *, config=None, device=None, dtype=None, **options):
        self.args = (model, device, dtype, options)


def test_build_reranker_contract(monkeypatch):
    monkeypatch.setitem(registry.RERANKERS, "icr", f"{__name__}:_Recorder")
    rr = build_reranker("icr", options={"calibration": "none"}, device="cpu", dtype="float32")
    assert rr.args == ("smollm2-135m", "cpu", "float32", {"calibration": "none"})
    assert build_reranker("icr", model="other").args == ("other", None, None, {})


def test_build_reranker_none_and_errors():
    assert build_reranker("none").name == "none"
    with pytest.raises(ValueError, match="takes no model or options"):
        build_reranker("none", options={"x": "1"})
    with pytest.raises(ValueError, match="takes no dtype"):
        build_reranker("none", dtype="float32")
    with pytest.raises(ValueError, match="unknown reranker 'nope'; choose one of: blockrank, cross-encoder, icr, listwise, none"):
        build_reranker("nope")


def test_build_reranker_icr_real_model():
    pytest.importorskip("transformers")
    try:
        rr = build_reranker("icr", options={"calibration": "none", "max_words": "50"}, device="cpu", dtype="float32")
    except ValueError as exc:  # the offline model is not installed here
        pytest.skip(str(exc))
    assert rr.config.calibration == "none" and rr.config.max_words == 50
    assert next(rr.model.parameters()).dtype.is_floating_point
    with pytest.raises(ValueError, match="calibration"):
        build_reranker("icr", options={"calibration": "sometimes"}, device="cpu")


@pytest.fixture(scope="module")
def minilm_ready():
    pytest.importorskip("faiss")
    pytest.importorskip("transformers")
    from attnsift.retrieval.encoders import resolve_model

    try:
        resolve_model("minilm")
    except Exception as exc:  # noqa: BLE001 - the bundled model package is optional
        pytest.skip(f"minilm not available: {exc}")


@pytest.mark.parametrize("name, options", [("dense", {}), ("dense", {"index_type": "hnsw", "hnsw_m": "8"}),
                                           ("late", {"candidate_k": "64"}), ("hybrid", {}),
                                           ("hybrid", {"method": "score", "weights": "0.4,0.6"})])
def test_model_backed_first_stages(minilm_ready, name, options):
    r = build_retriever(name, DOCS, options=options, device="cpu", dtype="float32")
    run = r.retrieve_batch(QUERIES, k=3)
    assert {q.id: run[q.id].doc_ids[0] for q in QUERIES} == BEST
    if name == "hybrid":
        assert r.method == options.get("method", "rrf")
        assert r.retrievers[1].encoder.device.type == "cpu"
    else:
        assert r.encoder.device.type == "cpu" and str(r.encoder.dtype) == "torch.float32"


def test_hybrid_and_dense_conflicts(minilm_ready, tmp_path: Path):
    with pytest.raises(ValueError, match="rrf_k applies to method=rrf only"):
        build_retriever("hybrid", DOCS, options={"method": "score", "rrf_k": "10"})
    with pytest.raises(ValueError, match="got 3 fusion weights for 2 retrievers"):
        build_retriever("hybrid", DOCS, options={"weights": "1,1,1"})
    with pytest.raises(ValueError, match="nlist applies to index_type ivfpq, got index_type='flat'"):
        build_retriever("dense", DOCS, options={"nlist": "4"})
    with pytest.raises(ValueError, match="unknown option.*colour for DenseConfig; accepted: backend, batch_size"):
        build_retriever("dense", DOCS, options={"colour": "red"})
    with pytest.raises(IndexCorruptedError, match="has no manifest.json"):
        build_retriever("hybrid", index=tmp_path)


def test_loaded_indexes_take_search_options_only(minilm_ready, tmp_path: Path):
    build_retriever("late", DOCS, device="cpu").save(tmp_path / "late")
    loaded = build_retriever("late", index=tmp_path / "late", options={"candidate_k": "5", "normalize": "query_length"})
    assert (loaded.candidate_k, loaded.normalize) == (5, "query_length")
    with pytest.raises(ValueError, match="index_type cannot change on load \\(accepted: candidate_k, normalize, impl\\)"):
        build_retriever("late", index=tmp_path / "late", options={"index_type": "flat"})
    build_retriever("dense", DOCS).save(tmp_path / "dense")
    assert build_retriever("dense", index=tmp_path / "dense", device="cpu").retrieve("scurvy", k=1).doc_ids == ["d1"]
    with pytest.raises(ValueError, match="dense index keeps how it was built; got options index_type"):
        build_retriever("dense", index=tmp_path / "dense", options={"index_type": "hnsw"})


def test_check_options_checks_a_named_component_without_building_it():
    from attnsift.registry import check_options

    check_options("retriever", "bm25", {"k1": "0.9", "b": "0.4"})
    check_options("retriever", "hybrid", {"method": "rrf", "index_type": "flat"})
    check_options("reranker", "icr", {"calibration": "none", "max_words": "50"})
    check_options("reranker", "none", {})
    with pytest.raises(ValueError, match="b"):
        check_options("retriever", "bm25", {"b": "1.5"})
    with pytest.raises(ValueError, match="accepted"):
        check_options("reranker", "icr", {"nonsense": "1"})
    with pytest.raises(ValueError, match="unknown retriever"):
        check_options("retriever", "bm26", {})
    with pytest.raises(ValueError, match="unknown reranker"):
        check_options("reranker", "icrr", {})
    with pytest.raises(ValueError, match="takes no options"):
        check_options("reranker", "none", {"x": "1"})
