"""Bench specs name the encoder (``encoder=``), saved indexes stand in for first stages, and a result's key
records both (issue 20)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from attnsift.bench.quality import index_for, key_fields, run_quality_bench
from attnsift.bench.specs import SystemSpec
from attnsift.bench.stages import SavedIndex, match_indexes, read_saved_index
from attnsift.errors import AttnsiftDeprecationWarning

DOCS = {"d1": "Vitamin C deficiency causes scurvy in sailors.", "d2": "Lemons and limes contain ascorbic acid.",
        "d3": "Granite is an igneous rock.", "d4": "Vitamin D helps calcium absorption for bone density.",
        "d5": "Stars fuse hydrogen into helium."}
QUERIES = {"q1": "what causes scurvy", "q2": "vitamin D and bones", "q3": "how do stars shine"}
QRELS = [("q1", "d1"), ("q1", "d2"), ("q2", "d4"), ("q3", "d5")]


def _beir(root: Path, docs=DOCS) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS))
    return root


def _index(dataset: Path, out: Path) -> Path:
    from attnsift.eval.datasets import load_dataset
    from attnsift.retrieval.bm25 import BM25Retriever

    ds = load_dataset(str(dataset))
    BM25Retriever.from_corpus(ds.corpus.iter_documents(), progress=False).save(
        out, corpus_fingerprint=ds.corpus.fingerprint(), dataset=ds.name)
    return out


# --------------------------------------------------------------------------------------------- specs
def test_encoder_key_is_the_model_slot():
    a, b = SystemSpec.parse("dense[encoder=minilm]"), SystemSpec.parse("dense:minilm")
    assert a == b and a.label == b.label == "dense:minilm"
    assert SystemSpec.parse("hybrid[encoder=minilm;rrf_k=60]").first.options == (("rrf_k", "60"),)
    assert SystemSpec.parse("dense").encoder == "minilm"  # the default, named
    assert SystemSpec.parse("hybrid").to_dict()["first_stage"]["encoder"] == "minilm"
    assert "encoder" not in SystemSpec.parse("bm25").to_dict()["first_stage"]


def test_model_key_of_a_first_stage_is_deprecated_but_works():
    with pytest.warns(AttnsiftDeprecationWarning, match="spec key model= of a dense first stage.*use encoder="):
        spec = SystemSpec.parse("dense[model=minilm]+icr")
    assert spec.first.model == "minilm" and spec.first.options == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SystemSpec.parse("dense[encoder=minilm]+icr")  # the new spelling does not warn


@pytest.mark.parametrize("text, message", [("bm25[encoder=minilm]", "runs no encoder"),
                                           ("dense:minilm[encoder=e5]", "names two encoders")])
def test_encoder_key_errors(text, message):
    with pytest.raises(ValueError, match=message):
        SystemSpec.parse(text)


def test_the_key_records_the_encoder_also_for_hybrid(tmp_path):
    from attnsift.bench.store import stage_fingerprint
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import DEFAULT_MODELS

    ds = load_dataset(str(_beir(tmp_path / "tiny")))
    fps = ds.fingerprints()
    keys = {text: key_fields(ds, fps, SystemSpec.parse(text), ["nDCG@10"])
            for text in ("hybrid", "hybrid[encoder=other-encoder]", "dense")}
    assert keys["hybrid"]["system"]["first_stage"]["encoder"] == "minilm"
    assert keys["hybrid"] != keys["hybrid[encoder=other-encoder]"]
    # hybrid's encoder files are part of the key (they were not: hybrid is no key of DEFAULT_MODELS)
    assert stage_fingerprint(SystemSpec.parse("hybrid").first, ds, DEFAULT_MODELS, first=True) is not None
    assert key_fields(ds, fps, SystemSpec.parse("bm25"), ["nDCG@10"], device="cpu")["device"] == "cpu"


# --------------------------------------------------------------------------------------------- indexes
def test_read_and_match_saved_indexes(tmp_path):
    from attnsift.eval.datasets import load_dataset

    a, b = _beir(tmp_path / "a"), _beir(tmp_path / "b", dict(DOCS, d5="Stars shine."))
    ia, ib = _index(a, tmp_path / "ia"), _index(b, tmp_path / "ib")
    sa = read_saved_index(ia)
    assert (sa.kind, sa.encoder, sa.dataset) == ("bm25", None, "a") and len(sa.identity) == 64
    fps = {name: load_dataset(str(p)).corpus.fingerprint() for name, p in (("a", a), ("b", b))}
    assert match_indexes([sa, read_saved_index(ib)], fps) == {"a": [sa], "b": [read_saved_index(ib)]}
    with pytest.raises(ValueError, match=r"built on data set 'b'.*none of the listed data sets \(a\)"):
        match_indexes([read_saved_index(ib)], {"a": fps["a"]})
    with pytest.raises(ValueError, match="both bm25 indexes of a"):
        match_indexes([sa, SavedIndex(tmp_path / "copy", "bm25", "bm25", None, sa.corpus_fingerprint, "a", "x")],
                      {"a": fps["a"]})
    with pytest.raises(ValueError, match="records no corpus"):
        match_indexes([SavedIndex(tmp_path, "bm25", "bm25", None, None, None, "x")], fps)


def test_which_spec_an_index_stands_in_for(tmp_path):
    bm25 = SavedIndex(tmp_path, "bm25", "bm25", None, "f" * 64, "a", "x")
    dense = SavedIndex(tmp_path, "dense", "dense", "minilm", "f" * 64, "a", "y")
    assert index_for(SystemSpec.parse("bm25+icr"), [dense, bm25]) is bm25
    assert index_for(SystemSpec.parse("bm25[k1=1.2]"), [bm25]) is None  # an index keeps its build options
    assert index_for(SystemSpec.parse("dense[encoder=minilm]"), [bm25, dense]) is dense
    assert index_for(SystemSpec.parse("dense:other"), [dense]) is None
    assert index_for(SystemSpec.parse("late"), [bm25, dense]) is None


def test_bench_with_an_index_gives_the_same_numbers_under_its_own_key(tmp_path):
    data = _beir(tmp_path / "tiny")
    idx = _index(data, tmp_path / "idx")
    built = run_quality_bench([str(data)], ["bm25"], tmp_path / "built", progress=False, plots=False)
    loaded = run_quality_bench([str(data)], ["bm25"], tmp_path / "loaded", progress=False, plots=False, indexes=[idx])
    b, l = built.get(str(data), "bm25"), loaded.get(str(data), "bm25")
    assert b.report.aggregate == l.report.aggregate and b.report.per_query == l.report.per_query
    assert b.folder.parent.name != l.folder.parent.name  # keyed by what made it: the index is in the key
    assert loaded.metadata["indexes"] == {str(data): [str(idx)]}
    with pytest.raises(ValueError, match="none of the listed data sets"):
        run_quality_bench([str(data)], ["bm25"], tmp_path / "x", progress=False, plots=False,
                          indexes=[_index(_beir(tmp_path / "other", dict(DOCS, d1="x")), tmp_path / "oidx")])
    assert not (tmp_path / "x").exists()  # nothing written
