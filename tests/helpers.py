"""Shared test helpers (tests/ is on sys.path through its conftest)."""
from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=None)
def tiny_llama_and_tokenizer(layers: int = 2, heads: int = 2, seed: int = 0):
    """A tiny random Llama with SmolLM2's tokenizer (skips the test when the tokenizer is missing)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from attnsift.rerank.llm import load_tokenizer

    try:
        tok = load_tokenizer("smollm2-135m")
    except ValueError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=4096)
    return LlamaForCausalLM(cfg).eval(), tok


def toy_ranking(n: int = 5):
    """A Ranking of ``n`` short documents of different lengths, first-stage scores 10, 9, ... (query q1)."""
    from attnsift.types import Candidate, Document, Query, Ranking

    return Ranking(Query("q1", "what prevents scurvy?"), tuple(
        Candidate(f"d{i}", float(10 - i), Document(f"d{i}", " ".join(f"w{i}x{j}" for j in range(6 + i))))
        for i in range(n)))


def tiny_icr(**options):
    """An ICRReranker over a 3-layer, 2-head random Llama (seed 1) with SmolLM2's tokenizer."""
    from attnsift.rerank.icr import ICRReranker

    m, t = tiny_llama_and_tokenizer(layers=3, heads=2, seed=1)
    return ICRReranker(m, tokenizer=t, **options)
