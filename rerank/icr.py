"""ICR: in-context reranking from attention (Chen et al., ICLR 2025), in O(N) memory.

One prompt holds all candidates (reverse first-stage order, top-1 nearest the query) followed by the
late instruction and the query. The document prefix is encoded ONCE into a KV cache; the real query
span and the content-free "N/A" span then run on top of it (the cache is restored between the two,
never re-encoded). During those two short passes the attention function of
:mod:`attnsift.attention_kernels.hf` records, per layer and head, the mass of the query-span rows on
every context token, without ever building a keys x keys attention matrix.

Score of a document (METHODS.md section 1)::

    a(t)   = sum over selected layers and heads, mean over span rows, of A[l, h, q, t]
    none      : sum over the document's tokens of a_query(t)
    na        : sum of c(t) = a_query(t) - a_NA(t)
    masked_na : sum of c(t) over tokens with c(t) > mean(c) - 2 std(c) (per document)

Long lists: when the prompt exceeds ``max_context_tokens`` (default: the model's context), candidates
are reranked in sliding windows from the bottom of the list to the top (``window``, ``stride``, the
RankGPT scheme). Each window is reordered by its ICR scores; the final order is the resulting
permutation and the returned scores are ``n - position`` (window scores are not comparable across
windows, positions are). Every candidate is scored at least once, so the ranking is a permutation.
A list of at most ``window`` candidates that does not fit is one prompt with its documents cut to an
equal share of tokens (real scores, per-head masses kept).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from attnsift.rerank.base import BaseReranker
from attnsift.types import Ranking

log = logging.getLogger(__name__)

CALIBRATIONS = ("masked_na", "na", "none")
FUSION_OPTIONS = ("none", "interp", "rrf", "profile")
SPANS = ("span_mean", "last_token")
NA_QUERY = "N/A"


@dataclass(frozen=True)
class ICRConfig:
    """Options of :class:`ICRReranker` (unknown keys are rejected).

    Attributes
    ----------
    calibration : "masked_na" | "na" | "none"
    max_words : int or None
        Whitespace words kept per document [300].
    max_doc_tokens : int or None
        Tokens kept per document after the word cut (None: no cut).
    instruction : "ie" | "qa"
        Late instruction: retrieval-style ("ie") or question answering ("qa").
    start_layer, end_layer : int or None
        Inclusive layer range summed (None: first / last). The forward pass stops after ``end_layer``.
        Negative values count from the end (-1 = last layer).
    span : "span_mean" | "last_token"
        Mean over all query-span rows, or the last prompt token only.
    heads : tuple of (layer, head), "auto", a profile path, or None
        Sum only these heads (None: all heads of the selected layers). Overrides the layer range.
        ``"auto"`` or a ``.json`` head profile (``attnsift analyze heads``): score from the profile's
        heads, per-head calibration and combination, chosen on held-out queries; ``calibration`` is
        then not used. Layers after the last selected one are not run.
    fusion : "none" | "interp" | "rrf" | "profile"
        Fuse the attention scores with the first-stage scores (min-max interpolation or reciprocal
        rank fusion); ``"profile"`` takes method and weight from the head profile.
    fusion_weight : float
        The attention scores' share in the fusion, in [0, 1] [0.5].
    orders : 1 or 2
        Position debiasing by permutation: 2 scores the list a second time in the opposite prompt
        order and averages the two (standardised) score vectors, so each document is seen near and
        far from the query. Costs a second pass.
    window, stride : int
        Sliding windows for lists that do not fit ``max_context_tokens``.
    max_context_tokens : int or None
        Token budget of one prompt (None: the model's ``max_position_embeddings``).
    reverse : bool
        Reverse first-stage order in the prompt (top-1 nearest the query) [True].
    """

    calibration: str = "masked_na"
    max_words: int | None = 300
    max_doc_tokens: int | None = None
    instruction: str = "ie"
    start_layer: int | None = None
    end_layer: int | None = None
    span: str = "span_mean"
    heads: tuple[tuple[int, int], ...] | str | None = None
    window: int = 20
    stride: int = 10
    max_context_tokens: int | None = None
    reverse: bool = True
    fusion: str = "none"
    fusion_weight: float = 0.5
    orders: int = 1

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.span not in SPANS:
            raise ValueError(f"span must be one of {SPANS}, got {self.span!r}")
        if self.instruction not in ("ie", "qa"):
            raise ValueError(f"instruction must be 'ie' or 'qa', got {self.instruction!r}")
        for name in ("max_words", "max_doc_tokens", "max_context_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        for name in ("start_layer", "end_layer"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise TypeError(f"{name} must be an integer or None, got {v!r}")
        if not (isinstance(self.window, int) and self.window >= 2):
            raise ValueError(f"window must be an integer >= 2, got {self.window!r}")
        if not (isinstance(self.stride, int) and 1 <= self.stride < self.window):
            raise ValueError(f"stride must be an integer in [1, window), got {self.stride!r} (window {self.window})")
        if self.orders not in (1, 2) or isinstance(self.orders, bool):
            raise ValueError(f"orders must be 1 or 2, got {self.orders!r}")
        if self.fusion not in FUSION_OPTIONS:
            raise ValueError(f"fusion must be one of {FUSION_OPTIONS}, got {self.fusion!r}")
        if isinstance(self.fusion_weight, bool) or not isinstance(self.fusion_weight, (int, float)) \
                or not 0.0 <= float(self.fusion_weight) <= 1.0:
            raise ValueError(f"fusion_weight must be a number in [0, 1], got {self.fusion_weight!r}")
        if self.fusion == "profile" and not isinstance(self.heads, str):
            raise ValueError("fusion=profile takes its weight from a head profile: also give heads=auto or heads=<profile.json>")
        if isinstance(self.heads, str):
            if self.heads != "auto" and not self.heads.endswith(".json"):
                raise ValueError(f"heads must be (layer, head) pairs, 'auto' or a .json head profile, got {self.heads!r}")
        elif self.heads is not None:
            try:
                heads = tuple((int(l), int(h)) for l, h in self.heads)
            except (TypeError, ValueError):
                raise TypeError(f"heads must be a list of (layer, head) pairs, got {self.heads!r}") from None
            if not heads:
                raise ValueError("heads must list at least one (layer, head) pair, or be None for all heads")
            object.__setattr__(self, "heads", heads)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ICRConfig":
        """Build from ``key=value`` options (CLI strings are parsed to the field types).

        ``heads`` as a string: ``"10:3,12:0"`` (layer:head pairs), ``auto`` or a profile path.
        ``none`` / ``null`` -> None.
        """
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"unknown ICR option(s) {unknown}; valid options: {sorted(names)}")
        kwargs: dict[str, Any] = {}
        for key, value in options.items():
            kwargs[key] = _parse_option(key, value) if isinstance(value, str) else value
        return cls(**kwargs)


_INT_FIELDS = {"max_words", "max_doc_tokens", "start_layer", "end_layer", "window", "stride", "max_context_tokens", "orders"}


def _parse_option(key: str, value: str) -> Any:
    v = value.strip()
    if key in _INT_FIELDS | {"heads"} and v.lower() in ("none", "null", ""):
        return None
    if key in _INT_FIELDS:
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"ICR option {key} expects an integer, got {value!r}") from None
    if key == "reverse":
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"ICR option reverse expects true/false, got {value!r}")
    if key == "fusion_weight":
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"ICR option fusion_weight expects a number in [0, 1], got {value!r}") from None
    if key == "heads":
        if v == "auto" or v.endswith(".json"):
            return v
        try:
            return tuple(tuple(int(x) for x in pair.split(":")) for pair in v.split(","))
        except ValueError:
            raise ValueError(f"ICR option heads expects 'layer:head,layer:head', 'auto' or a .json head profile, got {value!r}") from None
    return v


@dataclass
class ICRDetails:
    """Everything one ICR scoring of a candidate list produced (prompt order -> caller order mapped).

    Attributes (N candidates in the caller's order)
    ----------
    raw : list[float]            query mass per document (``calibration="none"`` score)
    na : list[float]             N/A mass per document
    calibrated : list[float]     sum of (query - N/A) mass (``"na"`` score)
    masked : list[float]         2-sigma-masked calibrated score (``"masked_na"`` score)
    scores : list[float]         the scores of the configured calibration
    head_raw, head_na : Tensor (layers, heads, N) or None
        Per-(layer, head) document mass of the selected layers (for head analysis), float32.
    head_masked : Tensor (layers, heads, N) or None
        Per-(layer, head) 2-sigma-masked calibrated mass (the ``masked_na`` rule applied to each head
        on its own), float32.
    layers : list[int]           the layers behind the first axis of ``head_raw``
    num_tokens : int             prompt length
    windows : int                number of windows used
    tokens : list or None
        Per candidate (caller's order), the document's tokens as ``(text, query_mass, na_mass)``
        tuples (masses summed over the selected layers and heads, mean over span rows); what
        ``attnsift explain`` draws. None when the list was scored in several windows.
    """

    raw: list[float]
    na: list[float]
    calibrated: list[float]
    masked: list[float]
    scores: list[float]
    head_raw: Any = None
    head_na: Any = None
    layers: list[int] = field(default_factory=list)
    head_masked: Any = None
    num_tokens: int = 0
    windows: int = 1
    tokens: Any = None
    seconds: float = 0.0  # wall-clock seconds the forward passes took (also when served from the cache)


# Rerankers that differ only in calibration (a benchmark running `icr` and `icr[calibration=none]`)
# share one forward pass per candidate list: score_details computes every calibration at once.
_DETAILS_CACHE: "collections.OrderedDict[tuple, tuple[Any, ICRDetails]]" = collections.OrderedDict()
_DETAILS_CACHE_SIZE = 256


def _pick_scores(d: ICRDetails, calibration: str) -> list[float]:
    return list({"none": d.raw, "na": d.calibrated, "masked_na": d.masked}[calibration])


class ICRReranker(BaseReranker):
    """Zero-shot attention reranker (ICR) over any Hugging Face causal LM.

    Parameters
    ----------
    model : str or PreTrainedModel
        Alias (``smollm2-135m``, ``gemma3-270m``), folder, .gguf file, hub id, or a loaded model.
    tokenizer : optional
        Needed when ``model`` is a loaded model (must be a fast tokenizer).
    config : ICRConfig, optional
    device, dtype : optional
        For loading by name (defaults: CUDA if present, float32 on CPU / bfloat16 on GPU).
    **options
        ICRConfig fields (strings are parsed), e.g. ``calibration="none"``.
    """

    name = "icr"

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, config: ICRConfig | None = None,
                 device: str | None = None, dtype: Any = None, **options: Any):
        if config is not None and options:
            raise ValueError("give either config= or keyword options, not both")
        self.config = config if config is not None else ICRConfig.from_options(options)
        self.model_name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
        if isinstance(model, str):
            from attnsift.rerank.llm import load_causal_lm

            model, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        elif tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: ICRReranker(model, tokenizer=...)")
        _check_causal_lm(model)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("ICR needs a fast tokenizer (character offsets give exact document spans)")
        from attnsift.attention_kernels.hf import register

        self.model, self.tokenizer = model, tokenizer
        self.attn_name = register()
        nl = model.config.get_text_config().num_hidden_layers
        nh = model.config.get_text_config().num_attention_heads
        self.num_layers = nl
        self.profile, self.head_scorer = None, None
        if isinstance(self.config.heads, str):
            from attnsift.rerank.head_scoring import (packaged_profile, read_profile, scorer_from_profile,
                                                      warn_profile_options)

            path = packaged_profile(self.model_name) if self.config.heads == "auto" else self.config.heads
            self.profile = read_profile(path)
            warn_profile_options(self.profile, self.config, path)
            if self.profile.get("reranker", "icr") != "icr":
                raise ValueError(f"{path} is a head profile for {self.profile['reranker']}, not ICR")
            self.head_scorer = scorer_from_profile(self.profile, nl, nh)
            if self.config.orders == 2 and self.head_scorer.variant == "prior":
                raise ValueError("orders=2 cannot be combined with a 'prior' head profile (its prior is tied to one order)")
            if self.config.fusion == "profile" and self.head_scorer.fusion is None:
                raise ValueError(f"head profile {path} records no fusion weight; use fusion=interp with fusion_weight=")
        self.layers, self.head_mask = self._resolve_layers(nl, nh)

    # ------------------------------------------------------------------ configuration
    def _resolve_layers(self, nl: int, nh: int) -> tuple[list[int], Any]:
        import torch

        cfg = self.config
        pairs = self.head_scorer.heads if self.head_scorer is not None else cfg.heads
        if pairs is not None:
            for l, h in pairs:
                if not (0 <= l < nl and 0 <= h < nh):
                    raise ValueError(f"head ({l}, {h}) is outside this model ({nl} layers x {nh} heads)")
            layers = sorted({l for l, _ in pairs})
            mask = torch.zeros(len(layers), nh)
            for l, h in pairs:
                mask[layers.index(l), h] = 1.0
            return layers, mask

        def norm(v: int | None, default: int) -> int:
            if v is None:
                return default
            v = v + nl if v < 0 else v
            if not 0 <= v < nl:
                raise ValueError(f"layer {v} is outside this model's {nl} layers (0..{nl - 1})")
            return v

        start, end = norm(cfg.start_layer, 0), norm(cfg.end_layer, nl - 1)
        if start > end:
            raise ValueError(f"start_layer {start} is after end_layer {end}")
        return list(range(start, end + 1)), None

    @property
    def context_budget(self) -> int:
        cfg = self.model.config.get_text_config()
        limit = int(getattr(cfg, "max_position_embeddings", 0) or 1 << 30)
        return min(limit, self.config.max_context_tokens or limit)

    # ------------------------------------------------------------------ scoring
    def score(self, ranking: Ranking) -> list[float]:
        return self.score_details(ranking).scores

    def _opposite_order(self) -> "ICRReranker":
        return copy_with_config(self, dataclasses.replace(self.config, reverse=not self.config.reverse, orders=1))

    def _cache_key(self, ranking: Ranking) -> tuple:
        # Everything that shapes the forward passes; the calibration only picks among computed scores.
        # The recorded layers stand for the head selection (a profile path may change its content).
        cfg = dataclasses.replace(self.config, calibration="none", fusion="none", fusion_weight=0.5, heads=None,
                                  start_layer=None, end_layer=None)
        docs = tuple((c.doc_id, c.document.title, c.document.text) for c in ranking.candidates)
        pairs = tuple(self.head_scorer.heads) if self.head_scorer is not None else self.config.heads
        return (id(self.model), cfg, tuple(self.layers), pairs, ranking.query.text, docs)

    def score_details(self, ranking: Ranking) -> ICRDetails:
        """Score every candidate of ``ranking`` and return all intermediate quantities."""
        if not isinstance(ranking, Ranking):
            raise TypeError(f"score_details() takes a Ranking, got {type(ranking).__name__}")
        if len(ranking) == 0:
            raise ValueError("ICR needs at least one candidate; got an empty ranking")
        self._check(ranking)
        if self.config.orders == 2:
            import numpy as np

            from attnsift.rerank.head_scoring import aggregate

            one = dataclasses.replace(self.config, orders=1)
            base = copy_with_config(self, one).score_details(ranking)
            flip = self._opposite_order().score_details(ranking)
            both = aggregate(np.array([base.scores, flip.scores], dtype=np.float64), "z")
            return dataclasses.replace(base, scores=[float(x) for x in both], seconds=base.seconds + flip.seconds)
        first = [c.score for c in ranking.candidates]
        key = self._cache_key(ranking)
        hit = _DETAILS_CACHE.get(key)
        if hit is not None and hit[0] is self.model:
            _DETAILS_CACHE.move_to_end(key)
            details = dataclasses.replace(hit[1], scores=self._final_scores(hit[1], first))
            self.last_compute_seconds = details.seconds
            return details
        t0 = time.perf_counter()
        docs = [(c.document.title, c.document.text) for c in ranking.candidates]
        query = ranking.query.text
        fitted = self._fit_layout(query, docs)
        if fitted is None and len(docs) <= self.config.window:
            # One window holds the whole list: score it in one prompt with the documents cut by tokens,
            # so the scores stay comparable (not positions) and the per-head and per-token masses are kept.
            fitted = self._fit_layout(query, docs, force=True)
        details = (self._score_window(query, docs, *fitted, first=first) if fitted is not None
                   else self._score_windows(query, docs, first))
        details.seconds = time.perf_counter() - t0
        self.last_compute_seconds = details.seconds
        if details.windows == 1:  # merged windows depend on the calibration: not shareable
            _DETAILS_CACHE[key] = (self.model, details)
        while len(_DETAILS_CACHE) > _DETAILS_CACHE_SIZE:
            _DETAILS_CACHE.popitem(last=False)
        return details

    def _layout(self, query: str, docs: Sequence[tuple[str | None, str]], max_doc_tokens: int | None):
        from attnsift.rerank.prompts import build_icr_prompt

        return build_icr_prompt(self.tokenizer, query, docs, self.config.instruction, self.config.max_words,
                                max_doc_tokens, self.config.reverse)

    def _fit_layout(self, query: str, docs: Sequence[tuple[str | None, str]], force: bool = False):
        """The prompt of ``docs`` if it fits the budget (shrinking documents by tokens when ``force``)."""
        budget = self.context_budget
        layout = self._layout(query, docs, self.config.max_doc_tokens)
        # The N/A prompt is never longer than the real one by more than a few tokens.
        margin = 8
        if layout.num_tokens + margin <= budget:
            return layout, self.config.max_doc_tokens
        if not force and len(docs) > 1 and len(docs) > self.config.window // 2:
            return None
        # Cut every document to an equal share of what the fixed parts leave.
        empty = self._layout(query, [(None, "") for _ in docs], None).num_tokens
        share = (budget - margin - empty) // len(docs)
        while share >= 1:
            cap = share if self.config.max_doc_tokens is None else min(share, self.config.max_doc_tokens)
            layout = self._layout(query, docs, cap)
            if layout.num_tokens + margin <= budget:
                log.info("ICR: documents cut to %d tokens to fit %d tokens of context", cap, budget)
                return layout, cap
            share = int(share * 0.9)
        raise ValueError(
            f"the ICR prompt for {len(docs)} document(s) does not fit {budget} tokens even with 1-token documents; "
            "raise max_context_tokens, lower window, or shorten the query"
        )

    def _final_scores(self, d: ICRDetails, first: Sequence[float]) -> list[float]:
        """The configured scores of one window: the calibration's (or the head profile's), then the
        optional fusion with the first-stage scores ``first`` (caller's order)."""
        import numpy as np

        from attnsift.rerank.head_scoring import fuse

        hs = self.head_scorer
        if hs is not None:
            s = hs.attention_scores(d.head_raw.numpy(), d.head_na.numpy(), d.head_masked.numpy(), self.layers)
        else:
            s = np.asarray(_pick_scores(d, self.config.calibration), dtype=np.float64)
        if self.config.fusion == "profile":
            s = fuse(s, np.asarray(first, dtype=np.float64), hs.fusion_weight, hs.fusion)
        elif self.config.fusion != "none":
            s = fuse(s, np.asarray(first, dtype=np.float64), float(self.config.fusion_weight), self.config.fusion)
        return [float(x) for x in s]

    def _score_windows(self, query: str, docs: Sequence[tuple[str | None, str]], first: Sequence[float]) -> ICRDetails:
        n = len(docs)
        w, s = self.config.window, self.config.stride
        order = list(range(n))  # current permutation, best first
        raw = [math.nan] * n
        na = [math.nan] * n
        cal = [math.nan] * n
        masked = [math.nan] * n
        start = max(n - w, 0)
        windows = 0
        while True:
            idx = order[start:start + w]
            sub = [docs[i] for i in idx]
            d = self._score_window(query, sub, *self._fit_layout(query, sub, force=True), first=[first[i] for i in idx])
            windows += 1
            for j, i in enumerate(idx):
                raw[i], na[i], cal[i], masked[i] = d.raw[j], d.na[j], d.calibrated[j], d.masked[j]
            # Stable sort: ties keep the current order.
            ranked = sorted(range(len(idx)), key=lambda j: -d.scores[j])
            order[start:start + w] = [idx[j] for j in ranked]
            if start == 0:
                break
            start = max(start - s, 0)
        pos = {doc: p for p, doc in enumerate(order)}
        scores = [float(n - pos[i]) for i in range(n)]
        return ICRDetails(raw, na, cal, masked, scores, windows=windows)

    def _score_window(self, query: str, docs: Sequence[tuple[str | None, str]], layout: Any, cap: int | None,
                      first: Sequence[float]) -> ICRDetails:
        import torch

        # The N/A prompt holds the very same (equally truncated) documents.
        na_layout = self._layout(query=NA_QUERY, docs=docs, max_doc_tokens=cap)
        q_mass, na_mass = self._span_masses(layout, na_layout)  # (L, H, T_prefix) each
        heads = self.head_mask
        head_raw = _segment_sums(q_mass, layout.doc_spans)  # (L, H, N) prompt order
        head_na = _segment_sums(na_mass, layout.doc_spans)
        head_masked = _masked_segment_sums(q_mass - na_mass, layout.doc_spans)
        if heads is not None:
            q_mass = q_mass * heads[:, :, None]
            na_mass = na_mass * heads[:, :, None]
        a_q = q_mass.sum(dim=(0, 1))  # (T_prefix,)
        a_na = na_mass.sum(dim=(0, 1))
        (raw, na, cal, masked), inv = _document_scores(a_q, a_na, layout)
        pick = lambda xs: [xs[inv[i]] for i in range(len(docs))]  # noqa: E731
        perm = torch.tensor(inv)
        pieces = []
        for s, e in layout.doc_spans:
            # Each piece runs to the next token's start, so the pieces rebuild the text with its spaces.
            ends = [layout.offsets[t + 1][0] if t + 1 < e else layout.offsets[t][1] for t in range(s, e)]
            pieces.append([(layout.text[layout.offsets[t][0]:end], float(a_q[t]), float(a_na[t]))
                           for t, end in zip(range(s, e), ends)])
        d = ICRDetails(raw, na, cal, masked, [], head_raw[:, :, perm], head_na[:, :, perm],
                       list(self.layers), head_masked[:, :, perm], layout.num_tokens, tokens=pick(pieces))
        d.scores = self._final_scores(d, first)
        return d

    def _span_masses(self, layout: Any, na_layout: Any) -> tuple[Any, Any]:
        """Per-(layer, head) span mass on the prefix tokens for the real and the N/A query.

        Returns two float32 tensors (layers, heads, prefix_len), layers = ``self.layers``.
        """
        import torch
        from transformers import DynamicCache

        from attnsift.attention_kernels.hf import Recorder, cache_kwarg, recording, run_layers

        qs = layout.query_start
        prefix = layout.input_ids[:qs]
        if na_layout.query_start != qs or na_layout.input_ids[:qs] != prefix:
            # Cannot happen with pre-tokenizers that split at whitespace; guard the invariant anyway.
            raise RuntimeError("ICR: the N/A prompt does not share the real prompt's token prefix; please report this tokenizer")
        model = self.model
        device = next(model.parameters()).device
        base = getattr(model, model.base_model_prefix, model)
        kv = cache_kwarg(base.forward)
        last = max(self.layers)
        layer_set = set(self.layers)
        prev = model.config._attn_implementation
        model.set_attn_implementation(self.attn_name)
        try:
            with torch.inference_mode():
                cache = DynamicCache(config=model.config)
                with recording(Recorder(layers=layer_set, last_layer=last, mode="prefix")):
                    run_layers(base, input_ids=torch.tensor([prefix], device=device), use_cache=True, **{kv: cache})
                snapshot = _snapshot(cache)
                out = []
                for lay in (layout, na_layout):
                    _restore(cache, snapshot)
                    span_ids = lay.input_ids[qs:]
                    rec = Recorder(layers=layer_set, last_layer=last, mode="query", span=self.config.span,
                                   total_len=len(lay.input_ids))
                    with recording(rec):
                        run_layers(base, input_ids=torch.tensor([span_ids], device=device), use_cache=True,
                                   **{kv: cache})
                    mass = torch.stack([rec.mass[l][0] for l in self.layers])  # (L, H, T)
                    out.append(mass[:, :, :qs].float().cpu())
                del cache, snapshot
        finally:
            model.set_attn_implementation(prev)
        return out[0], out[1]


def copy_with_config(rr: "ICRReranker", config: ICRConfig) -> "ICRReranker":
    import copy

    other = copy.copy(rr)
    other.config = config
    return other


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


def _segment_sums(mass: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """(L, H, T) token mass -> (L, H, N) document mass over ``spans``."""
    import torch

    return torch.stack([mass[:, :, s:e].sum(dim=-1) for s, e in spans], dim=-1)


def _masked_segment_sums(c: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """(L, H, T) calibrated token mass -> (L, H, N): per head and document, the sum over tokens with
    c > mean - 2 std (the ``masked_na`` rule, applied to each head separately)."""
    import torch

    out = []
    for s, e in spans:
        seg = c[:, :, s:e].double()
        if e - s > 1:
            keep = seg > (seg.mean(dim=-1, keepdim=True) - 2 * seg.std(dim=-1, keepdim=True))
            out.append((seg * keep).sum(dim=-1))
        else:
            out.append(seg.sum(dim=-1))
    return torch.stack(out, dim=-1).float()


def _document_scores(a_q: Any, a_na: Any, layout: Any) -> tuple[tuple[list[float], ...], list[int]]:
    """Per-document raw, N/A, calibrated and masked-calibrated sums from the per-token span masses of
    the real and the N/A query (``a_q``, ``a_na``: (T_prefix,)), in the caller's document order.

    The masked sum drops the document's tokens whose calibrated mass is below mean - 2 std (METHODS.md).
    Also returns ``inv``: the prompt position of each caller-order document.
    """
    c = a_q - a_na
    raw, na, cal, masked = [], [], [], []
    for s, e in layout.doc_spans:
        seg = c[s:e].double()
        raw.append(float(a_q[s:e].double().sum()))
        na.append(float(a_na[s:e].double().sum()))
        cal.append(float(seg.sum()))
        masked.append(float(seg[seg > seg.mean() - 2 * seg.std()].sum()) if seg.numel() > 1 else float(seg.sum()))
    inv = [0] * len(layout.order)
    for j, i in enumerate(layout.order):
        inv[i] = j
    return tuple([xs[inv[i]] for i in range(len(inv))] for xs in (raw, na, cal, masked)), inv


def _check_causal_lm(model: Any) -> None:
    try:
        from transformers import PreTrainedModel
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover
        from attnsift.errors import require

        require("transformers", "llm", "ICR")
        raise
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel or a model name, got {type(model).__name__}")
    names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if type(model).__name__ not in names and not type(model).__name__.endswith("ForCausalLM"):
        raise ValueError(
            f"{type(model).__name__} is not a causal language model; ICR needs a decoder-only LM "
            "(e.g. AutoModelForCausalLM: SmolLM2, Llama, Mistral, Qwen, Gemma)"
        )


def reference_scores(model: Any, tokenizer: Any, ranking: Ranking, config: ICRConfig | None = None) -> ICRDetails:
    """The reference way: two full eager passes with ``output_attentions=True`` (for parity tests
    and benchmarks). Materialises every layer's (heads x T x T) attention: small prompts only."""
    import torch

    config = config or ICRConfig()
    rr = ICRReranker(model, tokenizer=tokenizer, config=config)
    docs = [(c.document.title, c.document.text) for c in ranking.candidates]
    layout = rr._layout(ranking.query.text, docs, config.max_doc_tokens)
    na_layout = rr._layout(NA_QUERY, docs, config.max_doc_tokens)
    device = next(model.parameters()).device
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    masses = []
    try:
        with torch.inference_mode():
            for lay in (layout, na_layout):
                out = model(input_ids=torch.tensor([lay.input_ids], device=device), output_attentions=True, use_cache=False)
                att = torch.stack([out.attentions[l][0].float() for l in rr.layers])  # (L, H, T, T)
                rows = att[:, :, lay.query_start:] if config.span == "span_mean" else att[:, :, -1:]
                masses.append(rows.mean(dim=2)[:, :, : layout.query_start].cpu())  # (L, H, T_prefix)
    finally:
        model.set_attn_implementation(prev)
    q_mass, na_mass = masses
    if rr.head_mask is not None:
        q_mass, na_mass = q_mass * rr.head_mask[:, :, None], na_mass * rr.head_mask[:, :, None]
    a_q, a_na = q_mass.sum(dim=(0, 1)), na_mass.sum(dim=(0, 1))
    (raw, na, cal, masked), _ = _document_scores(a_q, a_na, layout)
    scores = {"none": raw, "na": cal, "masked_na": masked}[config.calibration]
    return ICRDetails(raw, na, cal, masked, list(scores), num_tokens=layout.num_tokens, layers=list(rr.layers))
