"""BlockRank: block-sparse in-context ranking with early exit (Gupta et al., 2025; METHODS.md section 2).

The prompt is split into blocks (instruction + query, one block per document, a last block ending in
``Final Answer: [``). Each document block attends only to block 0 and itself and all documents share
one position range, so the cost grows linearly with the number of candidates and their order does not
matter. The score of a document is the attention of the last ``query_positions`` tokens at one middle
layer, re-softmaxed over the document tokens only, averaged over heads and rows, summed over the
document's tokens. The layers above the scoring layer and the LM head are never run.

Zero-shot here; fine-tuning (L_lm + lambda * InfoNCE over these scores) is ``train/`` (attnsift.train).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from attnsift.config import Config
from attnsift.rerank.head_scoring import parse_heads
from attnsift.rerank.llm_base import LLMReranker
from attnsift.types import Ranking

log = logging.getLogger(__name__)

_IMPLS = ("auto", "reference", "triton", "flex", "dense")
_IDS = ("rank", "hash")


@dataclass(frozen=True)
class BlockRankConfig(Config):
    """Options of :class:`BlockRankReranker` (unknown keys are rejected by :func:`config_from_options`).

    Attributes
    ----------
    block_tokens : int or None
        H: each document block is cut to at most this many tokens [384 at evaluation; 160 in training].
        None: no cut (the longest block sets the size).
    scoring_layer : int, "auto", a profile path, or None
        Decoder layer whose attention is read, 0-based; None = the middle layer (``num_layers // 2``; in a
        model with sliding-window layers, the full-attention layer nearest to it: see
        :func:`default_scoring_layer`);
        ``"auto"`` = the layer chosen on held-out queries in the profile shipped for the model
        (``rerank/profiles/blockrank-<model>.json``), or that of a profile file written by
        ``attnsift analyze heads --reranker blockrank``.
    heads : "auto", a profile path, "layer:head,..." or None
        Score from these (layer, head) pairs instead of all heads of one layer: per-head BlockRank
        scores, combined as the profile says (``sum``: mean; ``z``: standardised mean). The pass stops
        after the last selected layer. ``"auto"``: the shipped profile's selection.
    final_offset : int
        First position id of the last block [16384, the reference code's]. Clamped down so that the
        last block ends inside the model's ``max_position_embeddings`` (8192 for SmolLM2: the
        last block then starts at 8192 - its length).
    max_words : int
        Document content (title + text) cut to this many whitespace words before tokenization.
    query_positions : int
        How many final tokens score (2: the ``[`` token and the one before it).
    impl : str
        Kernel choice for the block-sparse attention and the segment mass: ``auto`` (Triton on CUDA,
        else the PyTorch reference), ``reference``, ``triton``, ``flex`` or ``dense`` (quadratic oracle;
        the segment mass then uses the reference).
    ids : str
        The ``ID: i`` written in each document: ``rank`` = 0..N-1 in the first-stage order (the
        paper's prompt); ``hash`` = ranks of a hash of the doc ids, so the IDs, and therefore every
        score, do not depend on the first-stage order at all.
    """

    block_tokens: int | None = 384
    scoring_layer: int | str | None = None
    final_offset: int = 16384
    max_words: int = 300
    query_positions: int = 2
    impl: str = "auto"
    ids: str = "rank"
    heads: Any = None

    def validate(self) -> None:
        if isinstance(self.scoring_layer, str) and self.scoring_layer != "auto" and not self.scoring_layer.endswith(".json"):
            raise ValueError(f"scoring_layer must be a layer index, 'auto' or a .json profile, got {self.scoring_layer!r}")
        if self.heads is not None:
            object.__setattr__(self, "heads", parse_heads(self.heads))
        if self.block_tokens is not None and (isinstance(self.block_tokens, bool) or not isinstance(self.block_tokens, int) or self.block_tokens < 16):
            raise ValueError(f"block_tokens must be an integer >= 16 or None, got {self.block_tokens!r}")
        if self.scoring_layer is not None and not isinstance(self.scoring_layer, str) and (isinstance(self.scoring_layer, bool) or not isinstance(self.scoring_layer, int) or self.scoring_layer < 0):
            raise ValueError(
                f"scoring_layer must be a 0-based layer index >= 0 or None (the middle layer), got {self.scoring_layer!r}"
            )
        for name in ("final_offset", "max_words", "query_positions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.impl not in _IMPLS:
            raise ValueError(f"impl must be one of {', '.join(_IMPLS)}, got {self.impl!r}")
        if self.ids not in _IDS:
            raise ValueError(f"ids must be one of {', '.join(_IDS)}, got {self.ids!r}")


def default_scoring_layer(text_config: Any, num_layers: int) -> int:
    """The middle layer ``num_layers // 2``, or, when the config's ``layer_types`` make it a sliding-window
    layer (Gemma 2/3, Cohere 2, ...) or a chunked one (Llama 4), the full-attention layer nearest to it (the lower one on a tie): the
    scoring rows sit at the end of the prompt, and a window there would not reach the first documents."""
    mid = num_layers // 2
    types = list(getattr(text_config, "layer_types", None) or [])
    if len(types) != num_layers or types[mid] not in ("sliding_attention", "chunked_attention"):
        return mid
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    return min(full, key=lambda i: (abs(i - mid), i)) if full else mid


def layer_chunk(text_config: Any, layer: int) -> int | None:
    """The attention chunk of decoder ``layer`` (Llama 4's ``chunked_attention`` layers; None: not chunked)."""
    types = getattr(text_config, "layer_types", None) or ()
    size = getattr(text_config, "attention_chunk_size", None)
    return int(size) if size and layer < len(types) and types[layer] == "chunked_attention" else None


def layer_window(text_config: Any, layer: int) -> int | None:
    """The sliding window of decoder ``layer`` (None: full attention): every layer's ``sliding_window``, or,
    in a config with ``layer_types``, that of its ``sliding_attention`` layers only."""
    window = getattr(text_config, "sliding_window", None)
    types = getattr(text_config, "layer_types", None)
    if types:
        return window if layer < len(types) and types[layer] == "sliding_attention" else None
    return window


class BlockRankReranker(LLMReranker):
    """Zero-shot BlockRank reranker.

    Parameters
    ----------
    model, tokenizer, config, device, dtype, **options
        As for :class:`~attnsift.rerank.llm_base.LLMReranker`; options are :class:`BlockRankConfig`
        fields, possibly as strings (``scoring_layer="15"``).

    Examples
    --------
    >>> reranker = BlockRankReranker("smollm2-135m", scoring_layer=15)   # doctest: +SKIP
    >>> reranked = reranker.rerank(ranking, k=20)                          # doctest: +SKIP
    """

    name = "blockrank"
    truncation_hint = "--option max_words= or --option block_tokens= changes this"
    config_class = BlockRankConfig

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, *, config: BlockRankConfig | None = None,
                 device: str | None = None, dtype: Any = None, **options: Any) -> None:
        super().__init__(model, tokenizer, config=config, device=device, dtype=dtype, **options)
        self._configure()

    def _configure(self) -> None:
        model_name = self.model_name
        tcfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        self.profile = None
        self.head_pairs, self.head_aggregate = None, "sum"
        layer = self.config.scoring_layer
        if isinstance(layer, str) or isinstance(self.config.heads, str):
            from attnsift.rerank.head_scoring import packaged_profile, read_profile, warn_profile_options

            ref = layer if isinstance(layer, str) else self.config.heads
            path = packaged_profile(model_name, reranker="blockrank") if ref == "auto" else ref
            self.profile = read_profile(path)
            warn_profile_options(self.profile, self.config, path)
            if self.profile.get("reranker", "icr") != "blockrank":
                raise ValueError(f"{path} is a profile for {self.profile.get('reranker', 'icr')}, not BlockRank")
            if (self.profile.get("num_layers"), self.profile.get("num_heads")) != (self.num_layers, self.num_heads):
                raise ValueError(f"profile {path} is for a {self.profile.get('num_layers')}x{self.profile.get('num_heads')} "
                                 f"model, not this {self.num_layers}x{self.num_heads} one")
            if isinstance(layer, str):
                layer = int(self.profile["scoring_layer"])
        if self.config.heads is not None:
            if isinstance(self.config.heads, str):
                sel = self.profile["selection"]
                self.head_pairs = [tuple(h) for h in sel["heads"]]
                self.head_aggregate = sel["aggregate"]
            else:
                self.head_pairs = list(self.config.heads)
            bad = [p for p in self.head_pairs if not (0 <= p[0] < self.num_layers and 0 <= p[1] < self.num_heads)]
            if bad:
                raise ValueError(f"heads {bad} are outside this model ({self.num_layers} layers x {self.num_heads} heads)")
        if layer is None:
            layer = default_scoring_layer(tcfg, self.num_layers)
        if not 0 <= layer < self.num_layers:
            raise ValueError(
                f"scoring_layer={layer} is out of range: this model has {self.num_layers} layers "
                f"(0..{self.num_layers - 1}); leave it unset for the middle layer ({self.num_layers // 2})"
            )
        self.scoring_layer = int(layer)
        self.max_positions = getattr(tcfg, "max_position_embeddings", None)
        if self.max_positions is not None and self.config.final_offset > self.max_positions:
            log.info("blockrank: final_offset %d is beyond the model's %d positions; the last block is placed "
                     "at the end of the context instead", self.config.final_offset, self.max_positions)

    def _labels(self, ranking: Ranking) -> list[int]:
        if self.config.ids == "rank":
            return list(range(len(ranking)))
        keys = [hashlib.sha1(c.doc_id.encode()).hexdigest() + c.doc_id for c in ranking.candidates]
        rank = {k: i for i, k in enumerate(sorted(keys))}
        return [rank[k] for k in keys]

    def prompt(self, ranking: Ranking, order: list[int] | None = None) -> Any:
        """The :class:`~attnsift.rerank.blockrank_prompts.BlockPrompt` for ``ranking`` (documents placed
        in ``order``, default the ranking's order)."""
        from attnsift.rerank.blockrank_prompts import build_blockrank_prompt

        docs = [(c.document.title, c.document.text) for c in ranking.candidates]
        prompt = build_blockrank_prompt(
            self.tokenizer, ranking.query.text, docs, block_tokens=self.config.block_tokens,
            max_words=self.config.max_words, final_offset=self.config.final_offset,
            max_positions=self.max_positions, labels=self._labels(ranking), order=order,
        )
        # What max_words and block_tokens cut, counted and reported once per run (rerank/base.py).
        self._remember_cuts(ranking, list(prompt.cuts), self.config.block_tokens)
        return prompt

    def score(self, ranking: Ranking) -> list[float]:
        """One score per candidate of ``ranking`` (in its order).

        Raises
        ------
        ValueError
            Empty ranking, candidates without text, a prompt that does not fit the model's positions.
        """
        if not isinstance(ranking, Ranking):
            raise TypeError(f"score() takes a Ranking, got {type(ranking).__name__}")
        if len(ranking) == 0:
            raise ValueError(f"{self.name}: ranking of query {ranking.query.id!r} has no candidates to score")
        self._check(ranking)
        if self.head_pairs is not None:
            import numpy as np

            from attnsift.rerank.head_scoring import aggregate

            layers, per_head = self.score_heads(ranking, sorted({l for l, _ in self.head_pairs}))
            li = {l: i for i, l in enumerate(layers)}
            vals = np.stack([per_head[li[l], h] for l, h in self.head_pairs]).astype(np.float64)
            return [float(x) for x in aggregate(vals, self.head_aggregate)]
        return self.score_prompt(self.prompt(ranking))

    def score_heads(self, ranking: Ranking, layers: Any = None) -> tuple[list[int], Any]:
        """Per-(layer, head) BlockRank scores of every candidate, from ONE forward pass.

        Returns ``(layers, array [len(layers), heads, N])`` in the ranking's order (default: every
        layer). The mean over heads of a layer is the BlockRank score read at that layer.
        """
        import numpy as np
        import torch

        from attnsift.attention_kernels.hf_blockrank import BlockRankCapture, head_document_scores, run_capture

        if len(ranking) == 0:
            raise ValueError(f"{self.name}: ranking of query {ranking.query.id!r} has no candidates to score")
        self._check(ranking)
        layers = list(range(self.num_layers)) if layers is None else sorted(int(l) for l in layers)
        if not layers or not all(0 <= l < self.num_layers for l in layers):
            raise ValueError(f"layers must be within 0..{self.num_layers - 1}, got {layers}")
        prompt = self.prompt(ranking)
        T = prompt.num_tokens
        P = min(self.config.query_positions, prompt.block_offsets[-1] - prompt.block_offsets[-2])
        for layer in layers:
            self._check_window(prompt, layer, P)
        cap = BlockRankCapture(
            block_offsets=torch.tensor(prompt.block_offsets, dtype=torch.int64), scoring_layer=layers[0],
            query_rows=torch.arange(T - P, T, dtype=torch.int64), early_exit=True, impl=self.config.impl,
            extra_layers=tuple(layers[1:]),
        )
        with torch.no_grad():
            run_capture(self.model, torch.tensor(prompt.input_ids), torch.tensor(prompt.position_ids), cap)
            seg_impl = self.config.impl if self.config.impl in ("auto", "reference", "triton") else "reference"
            per = head_document_scores(cap, impl=seg_impl)
        arr = np.stack([per[l].cpu().numpy() for l in layers])  # [L, H, S] prompt order
        out = np.empty_like(arr)
        for j, idx in enumerate(prompt.order):
            out[:, :, idx] = arr[:, :, j]
        return layers, out

    def _check_window(self, prompt: Any, layer: int, rows: int) -> None:
        """Refuse, before the forward pass, a sliding-window scoring ``layer`` whose window does not reach from
        the first scoring row back to the first document (its scores would miss the first documents)."""
        text_config = self.model.config.get_text_config()
        window, chunk = layer_window(text_config, layer), layer_chunk(text_config, layer)
        first_row, first_doc = prompt.num_tokens - rows, prompt.block_offsets[1]
        what = None
        if window is not None and first_row - window + 1 > first_doc:
            what = f"a sliding-window layer (window {window})"
        # A chunk is a hard boundary: every scoring row must share the first document's chunk.
        elif chunk is not None and (prompt.num_tokens - 1) // chunk * chunk > first_doc:
            what = f"a chunked-attention layer (chunks of {chunk} tokens)"
        if what:
            raise ValueError(
                f"BlockRank: scoring layer {layer} is {what} that does not reach back to the first document of this "
                f"{prompt.num_tokens}-token prompt; score at a full-attention layer (scoring_layer=) or shorten the "
                "prompt (fewer candidates, smaller block_tokens)")

    def score_prompt(self, prompt: Any, early_exit: bool = True) -> list[float]:
        """Scores of a built prompt, in the caller's document order (``prompt.order`` undone)."""
        import torch

        from attnsift.attention_kernels.hf_blockrank import BlockRankCapture, document_scores, run_capture

        T = prompt.num_tokens
        P = min(self.config.query_positions, prompt.block_offsets[-1] - prompt.block_offsets[-2])
        self._check_window(prompt, self.scoring_layer, P)
        cap = BlockRankCapture(
            block_offsets=torch.tensor(prompt.block_offsets, dtype=torch.int64),
            scoring_layer=self.scoring_layer,
            query_rows=torch.arange(T - P, T, dtype=torch.int64),
            early_exit=early_exit,
            impl=self.config.impl,
        )
        with torch.no_grad():
            run_capture(self.model, torch.tensor(prompt.input_ids), torch.tensor(prompt.position_ids), cap)
            seg_impl = self.config.impl if self.config.impl in ("auto", "reference", "triton") else "reference"
            per_block = document_scores(cap, impl=seg_impl).tolist()  # prompt order
        scores = [0.0] * len(per_block)
        for j, idx in enumerate(prompt.order):
            scores[idx] = float(per_block[j])
        return scores
