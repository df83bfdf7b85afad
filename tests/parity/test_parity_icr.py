"""ICR scores from the O(N) recording path equal the reference: two full eager passes with
output_attentions=True (the way the paper's code computes them), to 1e-4 relative."""
from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from attnsift.rerank.icr import ICRConfig, ICRReranker, reference_scores  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402

TEXTS = [
    "Vitamin C (ascorbic acid) prevents scurvy.\nIt is found in citrus.",
    "Naïve Bayes — a [probabilistic] classifier; 数据 {x}.",
    "Short.",
    "The mitochondria is the powerhouse of the cell. " * 4,
    "Scurvy was common among sailors [1] before citrus rations.",
]


def ranking(n: int = len(TEXTS)) -> Ranking:
    return Ranking(Query("q1", "what prevents scurvy?"), tuple(
        Candidate(f"d{i}", 10.0 - i, Document(f"d{i}", t, title="A title" if i == 1 else None))
        for i, t in enumerate(TEXTS[:n])))


@functools.lru_cache(maxsize=None)
def tokenizer():
    from attnsift.rerank.llm import load_tokenizer

    try:
        return load_tokenizer("smollm2-135m")
    except ValueError as exc:
        pytest.skip(str(exc))


@functools.lru_cache(maxsize=None)
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval()


@functools.lru_cache(maxsize=None)
def tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    # A sliding window shorter than the prompt, so the windowed layers really differ from full attention.
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=24,
                           query_pre_attn_scalar=24, max_position_embeddings=2048,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"])
    return Gemma3ForCausalLM(cfg).eval()


def rel_err(a, b) -> float:
    return max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b))


@pytest.mark.parametrize("calibration", ["masked_na", "na", "none"])
@pytest.mark.parametrize("span", ["span_mean", "last_token"])
def test_tiny_llama_matches_eager_two_pass(calibration, span):
    cfg = ICRConfig(calibration=calibration, span=span)
    fast = ICRReranker(tiny_llama(), tokenizer=tokenizer(), config=cfg).score_details(ranking())
    ref = reference_scores(tiny_llama(), tokenizer(), ranking(), cfg)
    assert rel_err(fast.scores, ref.scores) < 1e-4
    assert rel_err(fast.raw, ref.raw) < 1e-4 and rel_err(fast.na, ref.na) < 1e-4


@pytest.mark.parametrize("options", [{"start_layer": 1, "end_layer": 1}, {"end_layer": 0}, {"start_layer": -2},
                                     {"heads": ((0, 1), (2, 3))}])
def test_layer_range_early_exit_and_heads_match(options):
    cfg = ICRConfig(calibration="none", **options)
    fast = ICRReranker(tiny_llama(), tokenizer=tokenizer(), config=cfg).score_details(ranking())
    ref = reference_scores(tiny_llama(), tokenizer(), ranking(), cfg)
    assert rel_err(fast.raw, ref.raw) < 1e-4
    assert rel_err(fast.na, ref.na) < 1e-4


def test_per_head_masses_sum_to_the_scores():
    d = ICRReranker(tiny_llama(), tokenizer=tokenizer(), calibration="none").score_details(ranking())
    assert d.head_raw.shape == (3, 4, len(TEXTS))
    assert rel_err(d.head_raw.sum(dim=(0, 1)).tolist(), d.raw) < 1e-5


@pytest.mark.parametrize("calibration", ["masked_na", "none"])
def test_tiny_gemma3_sliding_window_matches_eager(calibration):
    cfg = ICRConfig(calibration=calibration)
    fast = ICRReranker(tiny_gemma3(), tokenizer=tokenizer(), config=cfg).score_details(ranking())
    ref = reference_scores(tiny_gemma3(), tokenizer(), ranking(), cfg)
    assert fast.num_tokens > 24 * 3  # the window is exceeded
    assert rel_err(fast.scores, ref.scores) < 1e-4


@pytest.mark.slow
def test_smollm2_matches_eager_two_pass():
    from attnsift.rerank.llm import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    for calibration in ("masked_na", "none"):
        cfg = ICRConfig(calibration=calibration)
        fast = ICRReranker(model, tokenizer=tok, config=cfg).score_details(ranking(3))
        ref = reference_scores(model, tok, ranking(3), cfg)
        assert rel_err(fast.scores, ref.scores) < 1e-4


@pytest.mark.model  # real Gemma 3 in CI: its 512-key sliding window exceeded on the real model (a few seconds)
def test_gemma3_270m_beyond_its_sliding_window_matches_eager_two_pass():
    from attnsift.rerank.llm import load_causal_lm

    model, tok = load_causal_lm("gemma3-270m", device="cpu")
    assert any(t == "sliding_attention" for t in model.config.layer_types)
    long = Ranking(Query("q1", "what prevents scurvy?"), tuple(
        Candidate(f"d{i}", 10.0 - i, Document(f"d{i}", (t + " ") * 12)) for i, t in enumerate(TEXTS)))
    for calibration in ("masked_na", "none"):
        cfg = ICRConfig(calibration=calibration, max_words=150)
        fast = ICRReranker(model, tokenizer=tok, config=cfg).score_details(long)
        ref = reference_scores(model, tok, long, cfg)
        assert fast.num_tokens > model.config.sliding_window  # the windowed layers really drop keys
        assert rel_err(fast.scores, ref.scores) < 1e-4
