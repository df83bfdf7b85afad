"""Tiny random-weight models of every decoder family attnsift checks, and the eager oracles they are held to.

Each :class:`Family` builds, offline, a 3-4 layer model from its transformers config class with the family's
own attention features kept (GQA, sliding windows and layer types, QK-norm, logit soft-capping, partial
rotary, attention biases), sized to SmolLM2's tokenizer. ``tests/parity/test_families.py`` and
``benchmarks/families.py`` (the table in docs/families.md) both run :func:`check_family`.

The oracles are independent of the library's scoring: ICR's masses come from the full eager attention
matrices (``output_attentions=True``) of the whole prompt, with the document and query-span tokens found
from the tokenizer's character offsets; BlockRank's from an eager forward under the dense BlockRank mask
(and the family's sliding window, applied the way transformers applies it).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from helpers import block_scores_from_attention

#: Error budget: max |score difference| / largest raw score (the parity tests' budget).
ICR_TOL = 2e-6
#: BlockRank scores sum to one over the documents: an absolute budget.
BLOCKRANK_TOL = 2e-5
#: The window of the sliding-window families: shorter than the toy prompts, so it really cuts keys.
WINDOW = 24
#: The window of the all-sliding families (Mistral, Starcoder2) in the BlockRank check: shorter than its
#: prompt (so the lower layers' window cuts keys) yet reaching the first document from the scoring rows.
BLOCKRANK_WINDOW = 200

QUERY = "what prevents scurvy?"
TEXTS = [
    "Vitamin C (ascorbic acid) prevents scurvy. It is found in citrus fruit and fresh vegetables.",
    "Naive Bayes is a probabilistic classifier used for text.",
    "Short.",
    "The mitochondria is the powerhouse of the cell; it makes ATP from sugar and oxygen.",
    "Scurvy was common among sailors before citrus rations were given on long voyages.",
]


@dataclass(frozen=True)
class Family:
    """One decoder family: how to build its tiny model and what its attention has.

    Attributes
    ----------
    name : str          the family as users know it ("Gemma 2")
    model_type : str    transformers' ``model_type``
    features : str      the attention features the tiny model keeps
    config : callable   ``config(vocab_size) -> PretrainedConfig``
    model_class : str   the transformers causal-LM class
    """

    name: str
    model_type: str
    features: str
    config: Callable[[int], Any]
    model_class: str
    sharpen: float = 4.0
    #: config changes for the BlockRank check (a window every layer has must reach the first document)
    blockrank_config: dict = field(default_factory=dict)


def _cls(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def _base(vocab: int, **kw: Any) -> dict:
    out = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=4096, attention_dropout=0.0)
    out.update(kw)
    return out


def _c(config_class: str, **kw: Any) -> Callable[[int], Any]:
    return lambda vocab: _cls(config_class)(**_base(vocab, **kw))


_SWA4 = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]

FAMILIES: list[Family] = [
    Family("Llama", "llama", "GQA 4:2", _c("LlamaConfig"), "LlamaForCausalLM"),
    Family("Mistral", "mistral", f"GQA 4:2, sliding window {WINDOW} (every layer)",
           _c("MistralConfig", sliding_window=WINDOW), "MistralForCausalLM",
           blockrank_config={"sliding_window": BLOCKRANK_WINDOW}),
    Family("Qwen2", "qwen2", "GQA 4:2, q/k/v biases",
           _c("Qwen2Config"), "Qwen2ForCausalLM"),
    Family("Qwen3", "qwen3", "GQA 4:2, QK-norm, head_dim 32 != hidden/heads",
           _c("Qwen3Config", head_dim=32), "Qwen3ForCausalLM"),
    Family("Gemma", "gemma", "multi-query (4:1), head_dim 16",
           _c("GemmaConfig", num_key_value_heads=1, head_dim=16), "GemmaForCausalLM"),
    Family("Gemma 2", "gemma2", f"GQA 4:2, attention logit soft-capping 5, query_pre_attn_scalar, sliding window {WINDOW} "
           "on alternate layers", _c("Gemma2Config", num_hidden_layers=4, head_dim=16, sliding_window=WINDOW,
                                     query_pre_attn_scalar=24, attn_logit_softcapping=5.0, layer_types=_SWA4),
           "Gemma2ForCausalLM", sharpen=10.0),  # sharp enough that the cap bites (5% of the masses)
    Family("Gemma 3", "gemma3_text", f"multi-query (4:1), QK-norm, sliding window {WINDOW} on 3 of 4 layers",
           _c("Gemma3TextConfig", num_hidden_layers=4, num_key_value_heads=1, head_dim=16, sliding_window=WINDOW,
              query_pre_attn_scalar=24,
              layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]),
           "Gemma3ForCausalLM"),
    Family("Phi-3", "phi3", "fused qkv, partial rotary (half the head dims)",
           _c("Phi3Config", partial_rotary_factor=0.5, pad_token_id=0), "Phi3ForCausalLM"),
    Family("Phi", "phi", "partial rotary 0.5, q/k/v biases, parallel block",
           _c("PhiConfig", partial_rotary_factor=0.5, num_key_value_heads=4), "PhiForCausalLM"),
    Family("OLMo 2", "olmo2", "QK-norm over all heads, post-norm", _c("Olmo2Config"), "Olmo2ForCausalLM"),
    Family("Granite", "granite", "attention_multiplier (logit scale 0.1), embedding/residual multipliers",
           _c("GraniteConfig", attention_multiplier=0.1, embedding_multiplier=2.0, residual_multiplier=0.5,
              logits_scaling=2.0), "GraniteForCausalLM"),
    Family("Cohere (Command-R)", "cohere", "parallel block, LayerNorm, interleaved rotary",
           _c("CohereConfig", use_qk_norm=False), "CohereForCausalLM"),
    Family("StableLM", "stablelm", "partial rotary 0.25, LayerNorm", _c("StableLmConfig", partial_rotary_factor=0.25),
           "StableLmForCausalLM"),
    Family("StarCoder2", "starcoder2", f"GQA 4:2, biases, sliding window {WINDOW}",
           _c("Starcoder2Config", sliding_window=WINDOW), "Starcoder2ForCausalLM",
           blockrank_config={"sliding_window": BLOCKRANK_WINDOW}),
    Family("SmolLM3", "smollm3", "GQA 4:2, no RoPE on every 2nd layer (NoPE)",
           _c("SmolLM3Config", num_hidden_layers=4, no_rope_layer_interval=2, pad_token_id=0), "SmolLM3ForCausalLM"),
    Family("Mixtral", "mixtral", f"GQA 4:2, sliding window {WINDOW}, mixture of experts",
           _c("MixtralConfig", sliding_window=WINDOW, num_local_experts=2, num_experts_per_tok=1), "MixtralForCausalLM",
           blockrank_config={"sliding_window": BLOCKRANK_WINDOW}),
    Family("Cohere 2 (Command R7B)", "cohere2", f"sliding window {WINDOW} on 3 of 4 layers, no RoPE on the full layer, "
           "parallel block", _c("Cohere2Config", num_hidden_layers=4, sliding_window=WINDOW,
                                layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                             "sliding_attention"]), "Cohere2ForCausalLM"),
    Family("DeepSeek-V3", "deepseek_v3", "multi-head latent attention (low-rank q/kv, decoupled RoPE dims, value "
           "dim != key dim), mixture of experts",
           _c("DeepseekV3Config", num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
              qk_nope_head_dim=16, v_head_dim=12, n_routed_experts=2, num_experts_per_tok=1, n_group=1, topk_group=1,
              moe_intermediate_size=32, first_k_dense_replace=1), "DeepseekV3ForCausalLM"),
    Family("Llama 4", "llama4_text", f"chunked attention (chunk {WINDOW}) on 3 of 4 layers, no RoPE and attention "
           "temperature tuning on the full layer, QK-norm, mixture of experts",
           _c("Llama4TextConfig", num_hidden_layers=4, head_dim=16, attention_chunk_size=WINDOW,
              layer_types=["chunked_attention", "chunked_attention", "chunked_attention", "full_attention"],
              no_rope_layers=[1, 1, 1, 0], num_local_experts=2, num_experts_per_tok=1, intermediate_size_mlp=128,
              interleave_moe_layer_step=2, attn_temperature_tuning=True, floor_scale=8, attn_scale=0.1,
              use_qk_norm=True), "Llama4ForCausalLM"),
    Family("gpt-oss", "gpt_oss", f"attention sinks, q/k/v biases, sliding window {WINDOW} on alternate layers, "
           "mixture of experts", _c("GptOssConfig", num_hidden_layers=4, head_dim=16, sliding_window=WINDOW,
                                    num_local_experts=2, num_experts_per_tok=1, layer_types=_SWA4,
                                    pad_token_id=0), "GptOssForCausalLM"),
]


def family(name: str) -> Family:
    """The :class:`Family` named ``name`` (its name or model_type)."""
    for f in FAMILIES:
        if name in (f.name, f.model_type):
            return f
    raise KeyError(f"no family {name!r}; known: {', '.join(f.model_type for f in FAMILIES)}")


#: Configs of models attnsift refuses, built offline: kind -> (config class, keyword arguments).
REFUSED: dict[str, tuple[str, dict]] = {
    "encoder": ("BertConfig", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)),
    "seq2seq": ("T5Config", dict(d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16)),
    "state-space": ("MambaConfig", dict(hidden_size=32, num_hidden_layers=1, state_size=4)),
    "hybrid": ("JambaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                   intermediate_size=64, attn_layer_period=2, attn_layer_offset=1,
                                   expert_layer_period=2, expert_layer_offset=1, num_experts=2)),
    "recurrent": ("RecurrentGemmaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=64, lru_width=32)),
    "linear-attention hybrid": ("Qwen3NextConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                                        num_key_value_heads=1, intermediate_size=64)),
}


def refused_config(kind: str) -> Any:
    """The config of a model of ``kind`` (a key of :data:`REFUSED`)."""
    name, kw = REFUSED[kind]
    return _cls(name)(**kw)


@functools.lru_cache(maxsize=None)
def tokenizer() -> Any:
    """SmolLM2's fast tokenizer (offline: from the installed GGUF package)."""
    from attnsift.rerank.llm import load_tokenizer

    return load_tokenizer("smollm2-135m")


@functools.lru_cache(maxsize=None)
def build(name: str, seed: int = 0, for_blockrank: bool = False) -> Any:
    """The tiny random-weight model of family ``name`` (eval mode, float32, cached); ``for_blockrank``
    applies the family's :attr:`Family.blockrank_config`."""
    import torch

    f = family(name)
    torch.manual_seed(seed)
    config = f.config(len(tokenizer()))
    for key, value in (f.blockrank_config if for_blockrank else {}).items():
        setattr(config, key, value)
    model = _cls(f.model_class)(config).eval()
    # Random init gives near-uniform attention; sharper q/k weights make the documents' scores differ.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in ("q_proj.weight", "k_proj.weight", "qkv_proj.weight", "query_key_value.weight",
                                       "q_b_proj.weight")):
                p.mul_(f.sharpen)
            elif n.endswith("self_attn.sinks"):  # gpt-oss: sinks that take a real share of every row
                p.normal_(0.0, 2.0)
    return model


def toy_ranking(texts: list[str] = TEXTS) -> Any:
    """The toy ranking every family scores (query q1, first-stage scores 10, 9, ...)."""
    from attnsift.types import Candidate, Document, Query, Ranking

    return Ranking(Query("q1", QUERY), tuple(Candidate(f"d{i}", 10.0 - i, Document(f"d{i}", t, title="A title" if i == 1 else None))
                                             for i, t in enumerate(texts)))


# ------------------------------------------------------------------ the eager oracles
def _eager(model: Any, **kwargs: Any) -> Any:
    import torch

    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(output_attentions=True, use_cache=False, **kwargs).attentions
    finally:
        model.set_attn_implementation(prev)


def icr_oracle(model: Any, tok: Any, text: str, query: str, doc_starts: list[int], instr: int) -> dict:
    """ICR's raw, N/A and masked-calibrated masses per document (prompt order) from eager attention.

    ``text`` is the prompt; ``doc_starts`` the character starts of the document blocks, ``instr`` the start
    of the late instruction (the query span runs from there to the end). Every layer and head counts.
    """
    na_text = text[:text.rindex(f"Query: {query}")] + "Query: N/A" + text[text.rindex(f"Query: {query}") + len(f"Query: {query}"):]
    ends = [s - 2 for s in doc_starts[1:]] + [instr - 2]

    def masses(t: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
        import torch

        enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        q_start = next(i for i, (s, e) in enumerate(offsets) if e > s and e > instr)
        spans = []
        for start, end in zip(doc_starts, ends):
            toks = [i for i, (s, e) in enumerate(offsets[:q_start]) if e > s and s < end and e > start]
            spans.append((toks[0], toks[-1] + 1))
        att = _eager(model, input_ids=torch.tensor([enc["input_ids"]]))
        a = np.zeros(len(offsets))
        for layer in att:
            a += layer[0].double().numpy()[:, q_start:, :].mean(axis=1).sum(axis=0)
        return a, spans

    a_q, spans = masses(text)
    a_na, _ = masses(na_text)
    out: dict[str, list[float]] = {"none": [], "na_mass": [], "masked_na": []}
    for s, e in spans:
        c = a_q[s:e] - a_na[s:e]
        keep = c > c.mean() - 2 * c.std(ddof=1) if e - s > 1 else np.ones(1, dtype=bool)
        out["none"].append(float(a_q[s:e].sum()))
        out["na_mass"].append(float(a_na[s:e].sum()))
        out["masked_na"].append(float(c[keep].sum()))
    return out


def blockrank_oracle(model: Any, prompt: Any, layer: int, rows: int) -> list[float]:
    """BlockRank scores (caller's order) from an eager forward under the dense BlockRank mask (and, on the
    family's sliding-window layers, the window over token distance; on chunked layers, the chunks by token index:
    as transformers builds them)."""
    import torch

    from attnsift.attention_kernels.block_sparse.api import dense_mask

    T, off = prompt.num_tokens, prompt.block_offsets
    allowed = dense_mask(torch.tensor(off), T)
    tc = model.config.get_text_config()
    window = getattr(tc, "sliding_window", None)
    i = torch.arange(T)
    windowed = allowed & (i[:, None] - i[None, :] < window) if window else allowed
    neg = torch.finfo(torch.float32).min

    def additive(m: Any) -> Any:
        return torch.zeros(T, T).masked_fill(~m, neg)[None, None]

    size = getattr(tc, "attention_chunk_size", None)
    chunked = allowed & (i[:, None] // size == i[None, :] // size) if size else allowed  # Llama 4, by token index
    kinds = set(getattr(tc, "layer_types", None) or [])
    if kinds:
        mask: Any = {k: additive(windowed if k == "sliding_attention" else chunked if k == "chunked_attention"
                                 else allowed) for k in kinds}
    else:
        mask = additive(windowed)
    att = _eager(model, input_ids=torch.tensor([prompt.input_ids]), position_ids=torch.tensor([prompt.position_ids]),
                 attention_mask=mask)
    return block_scores_from_attention(att[layer], off, prompt.order, rows)


# ------------------------------------------------------------------ one family's check
@dataclass
class FamilyResult:
    """What :func:`check_family` found for one family (``*_error``: a float, or the message of a failure)."""

    family: Family
    icr: Any = None
    blockrank: Any = None
    listwise: Any = None
    num_tokens: int = 0
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (isinstance(self.icr, float) and self.icr <= ICR_TOL and isinstance(self.blockrank, float)
                and self.blockrank <= BLOCKRANK_TOL and self.listwise is True)


def check_icr(model: Any, tok: Any) -> tuple[float, int]:
    """Max |ICR score - eager oracle| / largest raw score over raw, N/A and masked-calibrated; prompt tokens."""
    from attnsift.rerank.icr import ICRReranker

    rk = toy_ranking()
    rr = ICRReranker(model, tokenizer=tok, calibration="masked_na")
    d = rr.score_details(rk)
    layout = rr._layout(QUERY, [(c.document.title, c.document.text) for c in rk.candidates], None)
    text = layout.text
    instr = text.index("Please find information")
    starts, pos = [], text.index("Here are some paragraphs:")
    for number, i in enumerate(layout.order, start=1):
        doc = rk.candidates[i].document
        pos = text.index(f"[{number}] {(doc.title or doc.text)[:12]}", pos)
        starts.append(pos)
    want = icr_oracle(model, tok, text, QUERY, starts, instr)
    inv = [0] * len(layout.order)
    for p, i in enumerate(layout.order):
        inv[i] = p
    err = 0.0
    for got, key in ((d.raw, "none"), (d.na, "na_mass"), (d.masked, "masked_na")):
        err = max(err, max(abs(g - want[key][inv[i]]) for i, g in enumerate(got)))
    return err / max(want["none"]), d.num_tokens


def check_blockrank(model: Any, tok: Any) -> float:
    """Max |BlockRank score - eager oracle| at the default scoring layer (scores sum to one), and at the last
    layer when it is a sliding-window layer: compared when its window reaches the first document, refused
    otherwise."""
    from attnsift.rerank.blockrank import BlockRankReranker, layer_window

    rk = toy_ranking()
    err, compared = 0.0, 0
    tc = model.config.get_text_config()
    n = tc.num_hidden_layers
    for layer in (None, n - 1) if layer_window(tc, n - 1) is not None else (None,):
        rr = BlockRankReranker(model, tok, scoring_layer=layer, impl="reference")
        try:
            got = rr.score(rk)
        except ValueError as exc:
            if "sliding-window layer" not in str(exc) or layer is None:
                raise
            continue
        want = blockrank_oracle(model, rr.prompt(rk), rr.scoring_layer, rows=2)
        err = max(err, max(abs(g - w) for g, w in zip(got, want)))
        compared += 1
    if compared < 1:
        raise RuntimeError(f"BlockRank was compared at {compared} layer(s) only")
    return err


def check_listwise(model: Any, tok: Any) -> bool:
    """The listwise baseline reorders the toy list (a permutation of its documents)."""
    from attnsift.rerank.listwise import ListwiseReranker

    rk = toy_ranking()
    out = ListwiseReranker(model, tok, window=5, stride=2, max_new_tokens=12).rerank(rk)
    return sorted(out.doc_ids) == sorted(rk.doc_ids)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())[:200]


def check_family(name: str) -> FamilyResult:
    """Run ICR, BlockRank and listwise on the family's tiny model; failures are recorded, not raised."""
    import torch

    f = family(name)
    res = FamilyResult(f)
    tok = tokenizer()
    threads = torch.get_num_threads()
    # One thread: on models this small, a second one only spins (10x slower on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        _run_checks(f, res, tok)
    finally:
        torch.set_num_threads(threads)
    return res


def _run_checks(f: Family, res: FamilyResult, tok: Any) -> None:
    for what, fn in (("icr", check_icr), ("blockrank", check_blockrank), ("listwise", check_listwise)):
        t0 = time.perf_counter()
        try:
            value = fn(build(f.model_type, for_blockrank=what == "blockrank" and bool(f.blockrank_config)), tok)
            if what == "icr":
                value, res.num_tokens = value
            setattr(res, what, value)
        except Exception as exc:  # noqa: BLE001 - the table records what failed
            setattr(res, what, _one_line(exc))
        res.seconds[what] = time.perf_counter() - t0
