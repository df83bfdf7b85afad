"""ICR's forward passes and their product: the attention masses of one prompt (:class:`ICRMasses`).

The document prefix is encoded ONCE into a KV cache; the real query span and the content-free "N/A"
span then run on top of it (the cache is restored between the two, never re-encoded). During those two
short passes the attention function of :mod:`attnsift.attention_kernels.hf` records, per layer and head,
the mass of the span rows on every context token (through the ``segment_mass`` op).

The masses do not depend on the calibration, the head-profile scoring or the fusion: one
:class:`ICRMasses` serves every scoring of the same prompt. :class:`MassCache` keeps them for
rerankers that share it (siblings made with ``ICRReranker.with_options``, or any ICR reranker given
the same ``mass_cache=``).
"""
from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from attnsift.rerank.icr_scoring import document_scores, inverse_order, masked_segment_sums, segment_sums


@dataclass(frozen=True, eq=False)
class ICRMasses:
    """The attention masses of one ICR prompt over a candidate list (N candidates, caller's order).

    Attributes
    ----------
    raw : tuple[float]          query mass per document (the ``calibration="none"`` score)
    na : tuple[float]           N/A-query mass per document
    calibrated : tuple[float]   sum of (query - N/A) mass (the ``"na"`` score)
    masked : tuple[float]       2-sigma-masked calibrated sum (the ``"masked_na"`` score)
    head_raw, head_na : Tensor (layers, heads, N) float32
        Per-(layer, head) document mass of the recorded layers.
    head_masked : Tensor (layers, heads, N) float32
        Per-(layer, head) 2-sigma-masked calibrated mass (the rule applied to each head on its own).
    layers : tuple[int]         the layers behind the first axis of the head tensors
    num_tokens : int            prompt length
    tokens : tuple
        Per candidate, the document's tokens as ``(text, query_mass, na_mass)`` (masses summed over the
        selected layers and heads): what ``attnsift explain`` draws.
    first_stage : tuple[float]  the candidates' first-stage scores (for fusion)
    seconds : float             wall-clock seconds the forward passes took
    """

    raw: tuple[float, ...]
    na: tuple[float, ...]
    calibrated: tuple[float, ...]
    masked: tuple[float, ...]
    head_raw: Any
    head_na: Any
    head_masked: Any
    layers: tuple[int, ...]
    num_tokens: int
    tokens: tuple
    first_stage: tuple[float, ...]
    seconds: float


class MassCache:
    """A bounded LRU of :class:`ICRMasses`, keyed on everything that shapes the forward passes.

    Give one to several :class:`~attnsift.rerank.icr.ICRReranker` over the same model (or make them
    with ``with_options``) and each prompt is run once for all of them: a benchmark scoring
    ``calibration=masked_na`` and ``calibration=none`` pays for one pass per query.
    """

    def __init__(self, size: int = 256) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"MassCache size must be a positive integer, got {size!r}")
        self.size = size
        self._items: "collections.OrderedDict[Hashable, ICRMasses]" = collections.OrderedDict()

    def get(self, key: Hashable) -> ICRMasses | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: Hashable, masses: ICRMasses) -> None:
        self._items[key] = masses
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def with_first_stage(masses: ICRMasses, first_stage: Sequence[float]) -> ICRMasses:
    """``masses`` carrying other first-stage scores (the cache key leaves them out)."""
    return dataclasses.replace(masses, first_stage=tuple(float(x) for x in first_stage))


def token_pieces(layout: Any, a_q: Any, a_na: Any) -> list[list[tuple[str, float, float]]]:
    """Per document (prompt order), its tokens as ``(text, query_mass, na_mass)``; each piece runs to
    the next token's start, so the pieces rebuild the text with its spaces."""
    pieces = []
    for s, e in layout.doc_spans:
        ends = [layout.offsets[t + 1][0] if t + 1 < e else layout.offsets[t][1] for t in range(s, e)]
        pieces.append([(layout.text[layout.offsets[t][0]:end], float(a_q[t]), float(a_na[t]))
                       for t, end in zip(range(s, e), ends)])
    return pieces


def build_masses(q_mass: Any, na_mass: Any, head_mask: Any, layout: Any, layers: Sequence[int],
                 first_stage: Sequence[float], seconds: float) -> ICRMasses:
    """:class:`ICRMasses` from the per-(layer, head) token masses of the real and the N/A query.

    Parameters
    ----------
    q_mass, na_mass : Tensor (L, H, T_prefix) float32
    head_mask : Tensor (L, H) of 0/1, or None for every head of ``layers``
    layout : :class:`~attnsift.rerank.prompts.PromptLayout` of the real prompt
    """
    import torch

    head_raw = segment_sums(q_mass, layout.doc_spans)  # (L, H, N) prompt order
    head_na = segment_sums(na_mass, layout.doc_spans)
    head_masked = masked_segment_sums(q_mass - na_mass, layout.doc_spans)
    if head_mask is not None:
        q_mass = q_mass * head_mask[:, :, None]
        na_mass = na_mass * head_mask[:, :, None]
    a_q = q_mass.sum(dim=(0, 1))  # (T_prefix,)
    a_na = na_mass.sum(dim=(0, 1))
    raw, na, cal, masked = document_scores(a_q, a_na, layout.doc_spans, layout.order)
    inv = inverse_order(layout.order)
    perm = torch.tensor(inv)
    pieces = token_pieces(layout, a_q, a_na)
    return ICRMasses(tuple(raw), tuple(na), tuple(cal), tuple(masked), head_raw[:, :, perm], head_na[:, :, perm],
                     head_masked[:, :, perm], tuple(layers), layout.num_tokens,
                     tuple(pieces[inv[i]] for i in range(len(inv))), tuple(float(x) for x in first_stage), seconds)


def span_masses(model: Any, attn_name: str, layout: Any, na_layout: Any, layers: Sequence[int], span: str,
                impl: str) -> tuple[Any, Any]:
    """Per-(layer, head) span mass on the prefix tokens for the real and the N/A prompt.

    The shared prefix runs once (up to the last of ``layers``); each span runs on a restored copy of
    its KV cache with the recording attention function ``attn_name``.

    Returns
    -------
    (q_mass, na_mass) : two float32 CPU tensors (len(layers), heads, prefix_len)
    """
    import torch
    from transformers import DynamicCache

    from attnsift.attention_kernels.hf import Recorder, cache_kwarg, recording, run_layers

    qs = layout.query_start
    prefix = layout.input_ids[:qs]
    if na_layout.query_start != qs or na_layout.input_ids[:qs] != prefix:
        # Cannot happen with pre-tokenizers that split at whitespace; guard the invariant anyway.
        raise RuntimeError("ICR: the N/A prompt does not share the real prompt's token prefix; please report this tokenizer")
    device = next(model.parameters()).device
    base = getattr(model, model.base_model_prefix, model)
    kv = cache_kwarg(base.forward)
    last = max(layers)
    layer_set = set(layers)
    prev = model.config._attn_implementation
    model.set_attn_implementation(attn_name)
    try:
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            with recording(Recorder(layers=layer_set, last_layer=last, mode="prefix")):
                run_layers(base, input_ids=torch.tensor([prefix], device=device), use_cache=True, **{kv: cache})
            snapshot = _snapshot(cache)
            out = []
            for lay in (layout, na_layout):
                _restore(cache, snapshot)
                rec = Recorder(layers=layer_set, last_layer=last, mode="query", span=span,
                               total_len=len(lay.input_ids), impl=impl)
                with recording(rec):
                    run_layers(base, input_ids=torch.tensor([lay.input_ids[qs:]], device=device), use_cache=True,
                               **{kv: cache})
                mass = torch.stack([rec.mass[l][0] for l in layers])  # (L, H, T)
                out.append(mass[:, :, :qs].float().cpu())
            del cache, snapshot
    finally:
        model.set_attn_implementation(prev)
    return out[0], out[1]


def _snapshot(cache: Any) -> list[tuple[Any, Any, Any]]:
    # Cache layers replace their tensors on update (torch.cat), so keeping references is a free snapshot.
    return [(getattr(l, "keys", None), getattr(l, "values", None), getattr(l, "cumulative_length", None)) for l in cache.layers]


def _restore(cache: Any, snapshot: list[tuple[Any, Any, Any]]) -> None:
    for layer, (k, v, n) in zip(cache.layers, snapshot):
        if k is None:
            continue
        layer.keys, layer.values = k, v
        if n is not None:
            layer.cumulative_length = n
