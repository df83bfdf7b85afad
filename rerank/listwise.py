"""Generative listwise reranking (RankGPT-style permutation generation), the baseline ICR must beat.

Sliding windows from the bottom of the list to the top (``window`` [20], ``stride`` [10]); in each
window the LLM is asked, greedily, for a permutation ``[3] > [1] > ...`` of the numbered passages.
Parsing is robust: ids out of range and repeats are dropped, and ids the model forgot keep their
input order after the ones it named. Returned scores are ``n - final position``.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from attnsift.rerank.base import BaseReranker
from attnsift.types import Ranking

_ID = re.compile(r"\[?(\d+)\]?")


def parse_permutation(text: str, n: int) -> list[int]:
    """Turn a generated answer into a permutation of ``range(n)`` (0-based).

    ``"[2] > [1]"`` with n=3 -> ``[1, 0, 2]``: named ids first (first mention wins), then the missing
    ones in input order. Garbage, out-of-range and repeated ids are ignored.
    """
    seen: list[int] = []
    for m in _ID.finditer(text):
        i = int(m.group(1)) - 1
        if 0 <= i < n and i not in seen:
            seen.append(i)
    return seen + [i for i in range(n) if i not in seen]


class ListwiseReranker(BaseReranker):
    """RankGPT-style listwise reranker with a local causal LM.

    Parameters
    ----------
    model : str or PreTrainedModel
        As for :class:`attnsift.rerank.icr.ICRReranker`.
    window, stride : int
        Sliding window [20] and step [10].
    max_words : int
        Words kept per passage in the prompt [100].
    max_new_tokens : int or None
        Generation budget per window (default: 5 tokens per passage + 8).
    """

    name = "listwise"

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, window: int | str = 20, stride: int | str = 10,
                 max_words: int | str = 100, max_new_tokens: int | str | None = None, device: str | None = None,
                 dtype: Any = None):
        try:
            window, stride, max_words = int(window), int(stride), int(max_words)
            max_new_tokens = None if max_new_tokens in (None, "none", "None") else int(max_new_tokens)
        except (TypeError, ValueError):
            raise ValueError("listwise options window, stride, max_words, max_new_tokens must be integers") from None
        if window < 2 or not 1 <= stride < window:
            raise ValueError(f"need window >= 2 and 1 <= stride < window, got window={window}, stride={stride}")
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        if isinstance(model, str):
            from attnsift.rerank.llm import load_causal_lm

            model, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        elif tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: ListwiseReranker(model, tokenizer=...)")
        from attnsift.rerank.icr import _check_causal_lm

        _check_causal_lm(model)
        self.model, self.tokenizer = model, tokenizer
        self.window, self.stride, self.max_words, self.max_new_tokens = window, stride, max_words, max_new_tokens
        self.last_outputs: list[str] = []

    def generate(self, prompt: str, n: int) -> str:
        import torch

        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(next(self.model.parameters()).device)
        budget = self.max_new_tokens or 5 * n + 8
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                                      pad_token_id=pad)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def permute(self, query: str, docs: Sequence[tuple[str | None, str]]) -> list[int]:
        from attnsift.rerank.prompts import build_listwise_prompt

        text = self.generate(build_listwise_prompt(self.tokenizer, query, docs, self.max_words), len(docs))
        self.last_outputs.append(text)
        return parse_permutation(text, len(docs))

    def score(self, ranking: Ranking) -> list[float]:
        if len(ranking) == 0:
            raise ValueError("listwise reranking needs at least one candidate; got an empty ranking")
        docs = [(c.document.title, c.document.text) for c in ranking.candidates]
        n = len(docs)
        order = list(range(n))
        if n > 1:
            start = max(n - self.window, 0)
            while True:
                idx = order[start:start + self.window]
                perm = self.permute(ranking.query.text, [docs[i] for i in idx])
                order[start:start + self.window] = [idx[j] for j in perm]
                if start == 0:
                    break
                start = max(start - self.stride, 0)
        pos = {d: p for p, d in enumerate(order)}
        return [float(n - pos[i]) for i in range(n)]
