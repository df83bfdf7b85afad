"""Generative listwise reranking (RankGPT-style permutation generation), the baseline ICR must beat.

Sliding windows from the bottom of the list to the top (``window`` [20], ``stride`` [10]); in each
window the LLM is asked, greedily, for a permutation ``[3] > [1] > ...`` of the numbered passages.
Parsing is robust: ids out of range and repeats are dropped, and ids the model forgot keep their
input order after the ones it named. Returned scores are ``n - final position``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from attnsift.config import Config
from attnsift.rerank.llm_base import LLMReranker, positional_scores, slide_windows
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


@dataclass(frozen=True)
class ListwiseConfig(Config):
    """Options of :class:`ListwiseReranker`.

    Attributes
    ----------
    window, stride : int
        Sliding window [20] and step [10]; ``window >= 2``, ``1 <= stride < window``.
    max_words : int
        Words kept per passage in the prompt [100].
    max_new_tokens : int or None
        Generation budget per window (None: 5 tokens per passage + 8).
    """

    window: int = 20
    stride: int = 10
    max_words: int = 100
    max_new_tokens: int | None = None

    def validate(self) -> None:
        for name, low in (("window", 2), ("stride", 1), ("max_words", 1), ("max_new_tokens", 1)):
            v = getattr(self, name)
            if v is None and name == "max_new_tokens":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}"
                                 f"{' or None' if name == 'max_new_tokens' else ''}, got {v!r}")
        if self.stride >= self.window:
            raise ValueError(f"stride must be smaller than window (windows must overlap), got stride={self.stride} "
                             f"with window={self.window}")


class ListwiseReranker(LLMReranker):
    """RankGPT-style listwise reranker with a local causal LM.

    Parameters
    ----------
    model, tokenizer, config, device, dtype, **options
        As for :class:`~attnsift.rerank.llm_base.LLMReranker`; options are :class:`ListwiseConfig` fields.

    Attributes
    ----------
    last_outputs : list[str]
        The generated answer of every window so far (for inspection).
    """

    name = "listwise"
    config_class = ListwiseConfig

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, *, config: ListwiseConfig | None = None,
                 device: str | None = None, dtype: Any = None, **options: Any) -> None:
        super().__init__(model, tokenizer, config=config, device=device, dtype=dtype, **options)
        self.last_outputs: list[str] = []

    def generate(self, prompt: str, n: int) -> str:
        """Greedy answer of the model to ``prompt`` (a window of ``n`` passages)."""
        import torch

        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(self.device)
        budget = self.config.max_new_tokens or 5 * n + 8
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                                      pad_token_id=pad)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def permute(self, query: str, docs: Sequence[tuple[str | None, str]]) -> list[int]:
        """The model's order of one window's ``docs`` (0-based, best first)."""
        from attnsift.rerank.prompts import build_listwise_prompt

        text = self.generate(build_listwise_prompt(self.tokenizer, query, docs, self.config.max_words), len(docs))
        self.last_outputs.append(text)
        return parse_permutation(text, len(docs))

    def score(self, ranking: Ranking) -> list[float]:
        if len(ranking) == 0:
            raise ValueError("listwise reranking needs at least one candidate; got an empty ranking")
        docs = [(c.document.title, c.document.text) for c in ranking.candidates]
        if len(docs) == 1:
            return [1.0]
        order, _ = slide_windows(len(docs), self.config.window, self.config.stride,
                                 lambda idx: self.permute(ranking.query.text, [docs[i] for i in idx]))
        return positional_scores(order)
