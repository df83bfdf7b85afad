"""attnsift explain: per-token attention, rank changes, the HTML page and the PNG."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from attnsift.analysis.explain import ExplainedDocument, Explanation, explain_icr, render_html, write_explanation  # noqa: E402
from attnsift.rerank.icr import ICRReranker  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402


@functools.lru_cache(maxsize=None)
def tiny_icr() -> ICRReranker:
    from transformers import LlamaConfig, LlamaForCausalLM

    from attnsift.rerank.llm import load_tokenizer

    try:
        tok = load_tokenizer("smollm2-135m")
    except ValueError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    return ICRReranker(LlamaForCausalLM(cfg).eval(), tokenizer=tok)


@dataclass
class _DS:
    name: str = "toy"
    rel_level: int = 1
    qrels: dict = field(default_factory=lambda: {"q1": {"d1": 1, "d3": 0}})


def _ranking() -> Ranking:
    texts = ["Vitamin C prevents scurvy <b>&</b> more.", "Lime juice on ships\nstopped scurvy.", "Unrelated: rocks.",
             "Sailors [1] and citrus."]
    return Ranking(Query("q1", "what prevents scurvy?"),
                   tuple(Candidate(f"d{i}", 10.0 - i, Document(f"d{i}", t, title=f"T{i}")) for i, t in enumerate(texts)))


def test_tokens_rebuild_each_document_and_scores_match_rerank():
    rr = tiny_icr()
    rk = _ranking()
    details = rr.score_details(rk)
    for c, toks in zip(rk.candidates, details.tokens):
        rebuilt = "".join(t for t, _, _ in toks)
        assert c.document.text in rebuilt  # the document's own text, spaces and newlines included
        assert all(q >= 0 and n >= 0 for _, q, n in toks)
    # raw score = sum of the query mass over the document's tokens (no length normalisation)
    for raw, toks in zip(details.raw, details.tokens):
        assert raw == pytest.approx(sum(q for _, q, _ in toks), rel=1e-4)


def test_explanation_ranks_relevance_and_files(tmp_path: Path):
    rr = tiny_icr()
    ex = explain_icr(_DS(), "q1", _ranking(), rr, depth=4)
    assert sorted(d.new_rank for d in ex.documents) == [1, 2, 3, 4]
    assert [d.new_rank for d in ex.documents] == [1, 2, 3, 4]  # listed in the new order
    by_id = {d.doc_id: d for d in ex.documents}
    assert by_id["d1"].relevance == 1 and by_id["d2"].relevance is None
    assert set(ex.metrics) == {"first stage", "reranked"}
    html_path, png_path = write_explanation(ex, tmp_path)
    page = html_path.read_text()
    import re

    text_only = re.sub(r"<[^>]+>", "", page)  # tokens sit in their own spans; compare the visible text
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in text_only and "<b>" not in page  # escaped, never injected
    assert "<script" not in page and "what prevents scurvy?" in page
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_render_html_colours_and_movement():
    docs = [ExplainedDocument("a", "A", first_rank=3, new_rank=1, first_score=1.0, score=2.0, raw=1.0, na=0.5,
                              relevance=2, tokens=[("hot", 0.9, 0.1), (" cold", 0.1, 0.5)]),
            ExplainedDocument("b", None, first_rank=1, new_rank=2, first_score=3.0, score=1.0, raw=0.5, na=0.5,
                              relevance=None, tokens=[("flat", 0.2, 0.2)])]
    page = render_html(Explanation("toy", "q", "query?", "icr", "m", "none", docs))
    assert "▲ 2" in page and "▼ 1" in page and "unjudged" in page and "relevance 2" in page
    assert "rgba(255,140,0" in page      # above the N/A baseline: orange
    assert "rgba(60,120,220" in page     # below it: blue
    assert "background:transparent" in page  # no difference: no colour
