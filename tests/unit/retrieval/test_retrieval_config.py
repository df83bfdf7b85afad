"""First-stage configs: every retriever takes config= or options, conflicts are rejected, encoders take device/dtype."""
from __future__ import annotations

import numpy as np
import pytest

from attnsift.config import config_from_options
from attnsift.retrieval.bm25 import BM25Retriever
from attnsift.retrieval.config import BM25Config, DenseConfig, FusionConfig, LateInteractionConfig
from attnsift.retrieval.fusion import FusionRetriever, reciprocal_rank_fusion
from attnsift.types import Candidate, Document, Query, Ranking

DOCS = [Document("d1", "cats purr and sleep"), Document("d2", "dogs bark at night"), Document("d3", "cats and dogs")]


def test_bm25_config_or_options_not_both():
    cfg = BM25Config(k1=1.2, method="bm25+", delta=1.0)
    r = BM25Retriever.from_corpus(DOCS, config=cfg)
    assert r.config is cfg and r.params["delta"] == 1.0 and r.params["k1"] == 1.2
    assert BM25Retriever(k1="1.2", method="bm25+", delta="1").config == cfg
    with pytest.raises(ValueError, match=r"got config= and options \(k1\)"):
        BM25Retriever(config=cfg, k1=0.5)
    with pytest.raises(TypeError, match="takes config=BM25Config"):
        BM25Retriever(config=FusionConfig())


def test_bm25_default_delta_is_recorded_and_reloads(tmp_path):
    r = BM25Retriever.from_corpus(DOCS)
    assert r.params["delta"] == 0.5 and r.config.delta is None  # manifests keep recording 0.5
    r.save(tmp_path / "i")
    again = BM25Retriever.load(tmp_path / "i")
    assert again.config == r.config
    bm25l = BM25Retriever.from_corpus(DOCS, method="bm25l", delta=0.7)
    bm25l.save(tmp_path / "l")
    assert BM25Retriever.load(tmp_path / "l").config.delta == 0.7


def test_lucene_backend_checks_its_limits_on_the_same_config():
    from attnsift.retrieval.lucene import LuceneBM25Retriever

    with pytest.raises(ValueError, match="method='lucene'"):
        LuceneBM25Retriever(method="bm25l")
    with pytest.raises(ValueError, match="delta=0.3 applies to method bm25l"):
        LuceneBM25Retriever(delta=0.3)
    assert LuceneBM25Retriever(config=BM25Config(k1=1.0)).k1 == 1.0


class _Fixed:
    def __init__(self, name, ids):
        self.name, self.ids = name, ids

    def retrieve_batch(self, queries, k=100):
        from attnsift.types import Run

        return Run([Ranking(q, tuple(Candidate(d, float(len(self.ids) - i)) for i, d in enumerate(self.ids[:k])))
                    for q in queries], name=self.name)


def test_fusion_config_conflicts_and_defaults():
    parts = [_Fixed("a", ["d1", "d2"]), _Fixed("b", ["d2", "d3"])]
    f = FusionRetriever(parts)
    assert (f.method, f.rrf_k, f.normalization, f.weights) == ("rrf", 60.0, "minmax", [1.0, 1.0])
    q = Query("q", "x")
    expected = reciprocal_rank_fusion([p.retrieve_batch([q])["q"] for p in parts], k=60)
    assert f.retrieve(q, k=3).candidates == expected.candidates  # same scores as the plain function
    with pytest.raises(ValueError, match="got 1 fusion weights for 2 retrievers"):
        FusionRetriever(parts, weights=[1.0])
    with pytest.raises(ValueError, match="normalization='zscore' applies to method=score only"):
        FusionRetriever(parts, normalization="zscore")
    with pytest.raises(ValueError, match="rrf_k applies to method=rrf only"):
        FusionRetriever(parts, config=FusionConfig(method="score", rrf_k=10.0))
    with pytest.raises(ValueError, match="expected one of 'rrf', 'score'"):
        FusionRetriever(parts, method="max")
    with pytest.raises(ValueError, match="weights must be finite, >= 0 and not all 0"):
        config_from_options(FusionConfig, {"weights": "0,0"})
    assert FusionRetriever(parts, method="score", normalization="zscore").normalization == "zscore"


def test_index_option_conflicts():
    assert DenseConfig(index_type="ivfpq", nlist=4).index_options() == {"nlist": 4}
    assert DenseConfig(batch_size=8, normalize=False).encoder_options() == {"batch_size": 8, "normalize": False}
    with pytest.raises(ValueError, match="hnsw_m applies to index_type hnsw, got index_type='flat'"):
        DenseConfig(hnsw_m=8)
    assert LateInteractionConfig(nlist=8).index_options() == {"nlist": 8}  # auto may pick IVF-PQ
    assert "normalize" not in LateInteractionConfig().encoder_options()  # token vectors: always normalised
    with pytest.raises(ValueError, match="candidate_k must be an integer >= 1"):
        LateInteractionConfig(candidate_k=0)
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        config_from_options(DenseConfig, {"max_length": "1"})


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("faiss")
    pytest.importorskip("transformers")
    from attnsift.retrieval.encoders import Encoder

    try:
        return Encoder("minilm", device="cpu", batch_size=2)
    except Exception as exc:  # noqa: BLE001 - the bundled model package is optional
        pytest.skip(f"minilm not available: {exc}")


def test_encoder_device_dtype_and_options(minilm):
    import torch

    from attnsift.retrieval.config import EncoderConfig
    from attnsift.retrieval.encoders import Encoder

    assert minilm.device == torch.device("cpu") and minilm.dtype is torch.float32
    assert minilm.encoder_config == EncoderConfig(batch_size=2)
    half = Encoder("minilm", device="cpu", dtype="bfloat16", config=EncoderConfig(batch_size=2))
    assert next(half.model.parameters()).dtype is torch.bfloat16
    texts = [d.text for d in DOCS]
    a, b = minilm.encode_documents(texts), half.encode_documents(texts)
    assert b.dtype == np.float32 and np.abs(a - b).max() < 0.05 and np.abs(a - b).max() > 0  # really bf16
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        Encoder("minilm", device="cpu", dtype="int4")
    with pytest.raises(ValueError, match="pooling='sum': expected one of 'auto', 'mean'"):
        Encoder("minilm", device="cpu", pooling="sum")


def test_prebuilt_encoder_rejects_options_it_would_ignore(minilm, tmp_path):
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    with pytest.raises(ValueError, match="batch_size given with an already built Encoder"):
        DenseRetriever.from_corpus(DOCS, encoder=minilm, batch_size=4)
    with pytest.raises(ValueError, match="device, dtype given with an already built Encoder"):
        LateInteractionRetriever.from_corpus(DOCS, encoder=minilm, device="cpu", dtype="float32")
    dense = DenseRetriever.from_corpus(DOCS, encoder=minilm, config=DenseConfig(index_type="hnsw", hnsw_m=4))
    assert dense.config.index_type == "hnsw" and dense.index.index_type == "hnsw"
    dense.save(tmp_path / "d")
    with pytest.raises(ValueError, match="device given with an already built Encoder"):
        DenseRetriever.load(tmp_path / "d", encoder=minilm, device="cpu")
