"""End to end with the real SmolLM2-135M-Instruct: a Ranking of real SciFact documents reranked by
ICR and by the listwise baseline through the public API (slow: model load and CPU forward passes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402

DATA = Path(os.environ.get("ATTNSIFT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _ranking(n: int = 5) -> Ranking:
    path = DATA / "scifact" / "corpus.jsonl"
    if not path.is_file():
        pytest.skip(f"SciFact not found at {path}; set ATTNSIFT_DATA")
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line, _ in zip(fh, range(n)):
            d = json.loads(line)
            docs.append(Document(d["_id"], d["text"], d.get("title")))
    return Ranking(Query("q", "diffusion tensor imaging of newborn white matter"),
                   tuple(Candidate(d.id, float(n - i), d) for i, d in enumerate(docs)))


@pytest.mark.slow
def test_icr_smollm2_end_to_end():
    from attnsift.rerank.icr import ICRReranker

    r = _ranking()
    rr = ICRReranker("smollm2-135m", max_words=60, device="cpu")
    det = rr.score_details(r)
    assert len(det.scores) == len(r) and all(x == x for x in det.scores)
    # The document about newborn white matter (the query's topic) draws the most attention once the
    # content-free N/A query's is taken out (calibrated and masked, the reranker's default score). The raw
    # mass alone is mostly position: the first document in the prompt (the last candidate) draws about as
    # much from the N/A query as from the real one.
    best = lambda xs: max(range(len(r)), key=lambda i: xs[i])  # noqa: E731
    assert best(det.calibrated) == 0 and best(det.masked) == 0 and best(det.scores) == 0
    far = len(r) - 1
    assert abs(det.raw[far] - det.na[far]) < 0.05 * det.raw[far]
    assert det.raw[0] - det.na[0] > 3 * max(abs(det.raw[i] - det.na[i]) for i in range(1, len(r)))
    out = rr.rerank(r, k=3)
    assert sorted(out.doc_ids) == sorted(r.doc_ids)
    assert rr.score(r) == rr.score(r)  # deterministic


@pytest.mark.slow
def test_listwise_smollm2_end_to_end():
    from attnsift.rerank.listwise import ListwiseReranker

    r = _ranking(4)
    out = ListwiseReranker("smollm2-135m", max_words=30, device="cpu").rerank(r)
    assert sorted(out.doc_ids) == sorted(r.doc_ids)


@pytest.mark.model  # real models in CI: one short list (~30 s each with the GGUF conversion on a clean cache)
@pytest.mark.parametrize("model,words", [("smollm2-135m", 30), ("gemma3-270m", 150)])
def test_icr_heads_auto_equals_the_profile_applied_to_all_heads(model, words):
    """The shipped profile on the real model: the pass over the selected layers (early exit where the
    last one is not the model's last) gives the scores the offline analysis computes from a full all-heads
    pass (the analysis and the reranker agree, so the profile's held-out figures are what users get).
    Gemma's prompt is longer than its 512-key sliding window, so the selection is checked where the windowed
    layers drop keys (both passes share the attention code: that the windowing itself is right is checked
    against eager attention in tests/parity/test_parity_icr.py)."""
    import numpy as np

    from attnsift.rerank.head_scoring import packaged_profile, read_profile, scorer_from_profile
    from attnsift.rerank.icr import ICRReranker

    r = _ranking(4)
    full = ICRReranker(model, max_words=words, device="cpu").score_details(r)
    auto = ICRReranker(model, max_words=words, device="cpu", heads="auto")
    if model == "gemma3-270m":
        assert full.num_tokens > 512  # beyond the sliding window
    else:
        assert max(auto.layers) < auto.num_layers - 1  # early exit: the last layers never run
    want = scorer_from_profile(read_profile(packaged_profile(model)), full.head_raw.shape[0],
                               full.head_raw.shape[1]).attention_scores(
        full.head_raw.numpy(), full.head_na.numpy(), full.head_masked.numpy(), full.layers)
    np.testing.assert_allclose(auto.score(r), want, rtol=1e-4, atol=1e-7)
