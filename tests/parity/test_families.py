"""Every checked decoder family (tests/families.py) runs ICR, BlockRank and the listwise baseline on a tiny
random-weight model built offline from its config, and ICR's and BlockRank's scores match an independent
eager-attention computation within the parity budgets. benchmarks/families.py writes the same checks as
the table in docs/families.md. The checks run on one torch thread (a
second one only spins on models this small): the whole matrix takes seconds.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import families as F  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only spins (see families.check_family)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    try:
        return F.tokenizer()
    except ValueError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("model_type", [f.model_type for f in F.FAMILIES])
def test_family_icr_blockrank_listwise_match_eager(model_type, tok):
    res = F.check_family(model_type)
    assert isinstance(res.icr, float), f"ICR failed on {model_type}: {res.icr}"
    assert res.icr <= F.ICR_TOL, f"ICR on {model_type}: {res.icr:.2e} (relative) > {F.ICR_TOL}"
    assert res.num_tokens > F.WINDOW * 3  # the prompt is longer than the sliding windows: they really cut keys
    assert isinstance(res.blockrank, float), f"BlockRank failed on {model_type}: {res.blockrank}"
    assert res.blockrank <= F.BLOCKRANK_TOL, f"BlockRank on {model_type}: {res.blockrank:.2e} > {F.BLOCKRANK_TOL}"
    assert res.listwise is True, f"listwise failed on {model_type}: {res.listwise}"
    assert res.ok


def test_the_checked_models_keep_their_family_features(tok):
    """The tiny configs really have the attention features the table claims."""
    g2 = F.build("gemma2").config
    assert g2.attn_logit_softcapping == 5.0 and "sliding_attention" in g2.layer_types and g2.sliding_window == F.WINDOW
    g3 = F.build("gemma3_text").config
    assert g3.layer_types.count("sliding_attention") == 3 and g3.num_key_value_heads == 1
    assert F.build("qwen2").model.layers[0].self_attn.q_proj.bias is not None
    assert hasattr(F.build("qwen3").model.layers[0].self_attn, "q_norm")
    assert F.build("phi3").config.rope_parameters["partial_rotary_factor"] == 0.5
    assert F.build("stablelm").config.rope_parameters["partial_rotary_factor"] == 0.25
    assert F.build("mistral").config.sliding_window == F.WINDOW
    assert F.build("mistral", for_blockrank=True).config.sliding_window == F.BLOCKRANK_WINDOW
    assert F.build("granite").config.attention_multiplier == 0.1


def test_softcap_changes_the_scores(tok):
    """The parity check can fail: Gemma 2's soft-capping matters, so an implementation that ignored it
    would not match the oracle."""
    from attnsift.rerank.icr import ICRReranker

    model = F.build("gemma2")
    base = ICRReranker(model, tokenizer=tok, calibration="none").score(F.toy_ranking())
    cap = model.config.attn_logit_softcapping
    try:
        for layer in model.model.layers:
            layer.self_attn.attn_logit_softcapping = None
        plain = ICRReranker(model, tokenizer=tok, calibration="none").score(F.toy_ranking())
    finally:
        for layer in model.model.layers:
            layer.self_attn.attn_logit_softcapping = cap
    assert max(abs(a - b) for a, b in zip(base, plain)) > 1e-3 * max(base)


def test_blockrank_default_layer_is_full_attention_and_short_windows_are_refused(tok):
    from attnsift.rerank.blockrank import BlockRankReranker

    model = F.build("gemma3_text")  # layers: sliding, sliding, full, sliding
    rr = BlockRankReranker(model, tok, impl="reference")
    assert rr.scoring_layer == 2
    with pytest.raises(ValueError, match="sliding-window layer .*window 24.* full-attention layer"):
        BlockRankReranker(model, tok, scoring_layer=3, impl="reference").score(F.toy_ranking())
    g2 = BlockRankReranker(F.build("gemma2"), tok, impl="reference")  # sliding, full, sliding, full: middle 2
    assert g2.scoring_layer == 1


def test_attention_sinks_change_the_scores(tok):
    """gpt-oss's sinks take a share of every row: without them the ICR masses differ (so parity with the
    eager oracle, which applies them, would fail for an implementation that ignored them)."""
    from attnsift.rerank.icr import ICRReranker

    model = F.build("gpt_oss")
    base = ICRReranker(model, tokenizer=tok, calibration="none").score(F.toy_ranking())
    saved = [layer.self_attn.sinks.detach().clone() for layer in model.model.layers]
    try:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.fill_(-1e4)  # exp(-1e4) = 0: no sink
        plain = ICRReranker(model, tokenizer=tok, calibration="none").score(F.toy_ranking())
    finally:
        with torch.no_grad():
            for layer, s in zip(model.model.layers, saved):
                layer.self_attn.sinks.copy_(s)
    assert max(abs(a - b) for a, b in zip(base, plain)) > 1e-3 * max(base)


@pytest.mark.model  # the real Gemma 3 270M: BlockRank beyond its 512-key sliding window (about 10 s)
def test_gemma3_270m_blockrank_beyond_its_sliding_window_matches_eager():
    from attnsift.rerank.blockrank import BlockRankReranker
    from attnsift.rerank.llm import load_causal_lm

    try:
        model, tk = load_causal_lm("gemma3-270m", device="cpu")
    except ValueError as exc:
        pytest.skip(str(exc))
    rk = F.toy_ranking([(t + " ") * 7 for t in F.TEXTS])
    rr = BlockRankReranker(model, tk, impl="reference")
    assert model.config.layer_types[rr.scoring_layer] == "full_attention"  # 11, not the sliding middle layer 9
    prompt = rr.prompt(rk)
    assert prompt.num_tokens > model.config.sliding_window  # the lower sliding layers really cut keys
    got = rr.score(rk)
    want = F.blockrank_oracle(model, prompt, rr.scoring_layer, rows=2)
    assert max(abs(g - w) for g, w in zip(got, want)) <= F.BLOCKRANK_TOL


def test_masked_attention_equals_the_block_sparse_oracle_and_applies_its_extras():
    """BlockRank's exact path for soft-capping / windows / sinks / another value dim: without any of them it
    is the block-sparse dense oracle; each one changes the output (GQA 4:2, odd T, chunks of 7 rows)."""
    from attnsift.attention_kernels.block_sparse.api import block_sparse_attention
    from attnsift.attention_kernels.hf_blockrank import masked_attention

    torch.manual_seed(0)
    T, D = 29, 8
    q, k, v = torch.randn(4, T, D) * 2, torch.randn(2, T, D) * 2, torch.randn(2, T, D)
    off = torch.tensor([0, 5, 12, 20, 24, T])
    want, _ = block_sparse_attention(q, k, v, off, scale=D ** -0.5, impl="dense")
    plain = masked_attention(q, k, v, off, D ** -0.5, chunk=7)
    torch.testing.assert_close(plain, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked_attention(q, k, v, off, None, window=T, chunk=7), want, rtol=1e-5, atol=1e-6)
    for extra in ({"softcap": 1.0}, {"window": 6}, {"sinks": torch.full((4,), 2.0)}):
        assert (masked_attention(q, k, v, off, D ** -0.5, chunk=7, **extra) - want).abs().max() > 1e-3, extra
    wide = torch.randn(2, T, 12)  # values of another head dim (DeepSeek's latent attention)
    out = masked_attention(q, k, wide, off, D ** -0.5, chunk=7)
    assert out.shape == (4, T, 12)
    torch.testing.assert_close(out[:, :, :D], masked_attention(q, k, wide[..., :D], off, D ** -0.5), rtol=1e-5, atol=1e-6)


def test_llama4_chunked_attention_is_applied_and_a_chunked_scoring_layer_is_refused(tok):
    """Llama 4 attends within fixed chunks on 3 of 4 layers: BlockRank masks the chunks like transformers does
    (its scores move with the chunk size), reads the full-attention layer by default, and refuses a chunked
    scoring layer whose chunk does not hold the first document."""
    from attnsift.rerank.blockrank import BlockRankReranker

    model = F.build("llama4_text")
    assert model.config.layer_types.count("chunked_attention") == 3 and model.config.attention_chunk_size == F.WINDOW
    rr = BlockRankReranker(model, tok, impl="reference")
    assert rr.scoring_layer == 3
    chunked = rr.score(F.toy_ranking())
    model.config.attention_chunk_size = 100_000  # no chunk boundary inside the prompt
    try:
        unchunked = rr.score(F.toy_ranking())
    finally:
        model.config.attention_chunk_size = F.WINDOW
    assert max(abs(a - b) for a, b in zip(chunked, unchunked)) > 1e-3
    with pytest.raises(ValueError, match=r"chunked-attention layer \(chunks of 24 tokens\).*full-attention layer"):
        BlockRankReranker(model, tok, scoring_layer=2, impl="reference").score(F.toy_ranking())
