"""ICR: in-context reranking from attention (Chen et al., ICLR 2025), in O(N) memory.

One prompt holds all candidates (reverse first-stage order, top-1 nearest the query) followed by the
late instruction and the query. Scoring is two steps with an API each:

- :meth:`ICRReranker.masses` runs the model (:mod:`attnsift.rerank.icr_masses`: the document prefix
  encoded once, the query span and the "N/A" span on top of it) and returns :class:`ICRMasses`, which
  do not depend on the calibration, the head-profile scoring or the fusion;
- :meth:`ICRReranker.scores` turns masses into this reranker's scores
  (:mod:`attnsift.rerank.icr_scoring`, METHODS.md section 1).

Rerankers that differ only in scoring options share the masses through a :class:`MassCache`
(``reranker.with_options(calibration="none")`` makes such a sibling; or pass ``mass_cache=``).

Long lists: when the prompt exceeds ``max_context_tokens`` (default: the model's context), candidates
are reranked in sliding windows from the bottom of the list to the top (``window``, ``stride``, the
RankGPT scheme). Each window is reordered by its ICR scores; the returned scores are ``n - position``
(window scores are not comparable across windows, positions are). A list of at most ``window``
candidates that does not fit is one prompt with its documents cut to an equal share of tokens.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from attnsift.rerank.icr_config import CALIBRATIONS, FUSION_OPTIONS, NA_QUERY, SPANS, ICRConfig, is_profile
from attnsift.rerank.icr_masses import ICRMasses, MassCache, build_masses, span_masses, with_first_stage
from attnsift.rerank.icr_scoring import document_scores, final_scores
from attnsift.rerank.llm_base import LLMReranker, positional_scores, slide_windows
from attnsift.types import Candidate, Document, Ranking

log = logging.getLogger(__name__)

__all__ = ["CALIBRATIONS", "FUSION_OPTIONS", "NA_QUERY", "SPANS", "ICRConfig", "ICRDetails", "ICRMasses",
           "ICRReranker", "MassCache", "reference_scores"]


@dataclass
class ICRDetails:
    """Everything one ICR scoring of a candidate list produced (caller's order).

    Attributes (N candidates)
    ----------
    raw, na, calibrated, masked : list[float]
        As in :class:`ICRMasses` (one prompt), or the last window's values (several windows).
    scores : list[float]         the scores of this reranker's configuration
    head_raw, head_na, head_masked : Tensor (layers, heads, N) or None
        Per-(layer, head) masses (None when the list was scored in several windows).
    layers : list[int]           the layers behind the first axis of ``head_raw``
    num_tokens : int             prompt length
    windows : int                number of windows used
    tokens : list or None        per candidate ``(text, query_mass, na_mass)`` tokens (one prompt only)
    seconds : float              seconds the forward passes took (also when the masses came from a cache)
    cuts : list[DocumentCut] or None
        What the prompts held of each candidate (:class:`attnsift.rerank.base.DocumentCut`).
    token_limit : int or None    the smallest per-document token cap the prompts applied
    passages : list[tuple[int, int]] or None
        With ``passages=max``: per candidate ``(number of passages, index of the best one)``; the
        per-candidate values above are the best passage's.
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
    seconds: float = 0.0
    cuts: Any = None
    token_limit: int | None = None
    passages: Any = None


class ICRReranker(LLMReranker):
    """Zero-shot attention reranker (ICR) over any Hugging Face causal LM.

    Parameters
    ----------
    model, tokenizer, device, dtype
        As for :class:`~attnsift.rerank.llm_base.LLMReranker`.
    config : ICRConfig, optional
    mass_cache : MassCache, optional
        Share forward passes with other ICR rerankers over the same model (default: a cache of its own,
        shared with the siblings made by :meth:`with_options`).
    **options
        :class:`ICRConfig` fields (strings are parsed), e.g. ``calibration="none"``, ``heads="10:3,12:0"``.
    """

    name = "icr"
    config_class = ICRConfig
    truncation_hint = ("--option max_words= (none: no cut) or --option passages=max (score every part, keep the "
                       "best) changes this")

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, *, config: ICRConfig | None = None,
                 device: str | None = None, dtype: Any = None, mass_cache: MassCache | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config=config, device=device, dtype=dtype, **options)
        from attnsift.attention_kernels.hf import register

        if mass_cache is not None and not isinstance(mass_cache, MassCache):
            raise TypeError(f"mass_cache must be a MassCache, got {type(mass_cache).__name__}")
        self.attn_name = register()
        self.mass_cache = mass_cache if mass_cache is not None else MassCache()
        self._configure()

    # ------------------------------------------------------------------ configuration
    def _configure(self) -> None:
        nl, nh = self.num_layers, self.num_heads
        self.profile, self.head_scorer = None, None
        cfg = self.config
        if is_profile(cfg.heads):
            from attnsift.rerank.head_scoring import (packaged_profile, read_profile, scorer_from_profile,
                                                      warn_profile_options)

            path = packaged_profile(self.model_name) if cfg.heads == "auto" else cfg.heads
            self.profile = read_profile(path)
            warn_profile_options(self.profile, cfg, path)
            if self.profile.get("reranker", "icr") != "icr":
                raise ValueError(f"{path} is a head profile for {self.profile['reranker']}, not ICR")
            self.head_scorer = scorer_from_profile(self.profile, nl, nh)
            if cfg.orders == 2 and self.head_scorer.variant == "prior":
                raise ValueError("orders=2 cannot be combined with a 'prior' head profile (its prior is tied to one "
                                 "order); use orders=1 or a profile of another variant")
            if cfg.fusion == "profile" and self.head_scorer.fusion is None:
                raise ValueError(f"head profile {path} records no fusion weight; use fusion=interp with fusion_weight=")
        self.layers, self.head_mask = self._resolve_layers(nl, nh)

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

        def norm(v: int | None, default: int, name: str) -> int:
            if v is None:
                return default
            w = v + nl if v < 0 else v
            if not 0 <= w < nl:
                raise ValueError(f"{name}={v} is outside this model's {nl} layers (0..{nl - 1}, or -{nl}..-1)")
            return w

        start, end = norm(cfg.start_layer, 0, "start_layer"), norm(cfg.end_layer, nl - 1, "end_layer")
        if start > end:
            raise ValueError(f"start_layer {cfg.start_layer} (layer {start}) is after end_layer {cfg.end_layer} "
                             f"(layer {end}); give start_layer <= end_layer")
        return list(range(start, end + 1)), None

    @property
    def context_budget(self) -> int:
        """Token budget of one prompt: ``max_context_tokens`` capped by the model's positions."""
        cfg = self.model.config.get_text_config()
        limit = int(getattr(cfg, "max_position_embeddings", 0) or 1 << 30)
        return min(limit, self.config.max_context_tokens or limit)

    # ------------------------------------------------------------------ the two steps
    def masses(self, ranking: Ranking) -> ICRMasses:
        """The attention masses of ``ranking``'s one prompt (from the mass cache when a reranker sharing
        it computed them already; ``seconds`` is then what that computation cost).

        Raises
        ------
        ValueError
            An empty ranking, candidates without text, or a list that needs sliding windows (more
            than ``window`` candidates that do not fit ``max_context_tokens``): use :meth:`score_details`.
        """
        query, docs, first = self._inputs(ranking)
        if self.config.passages != "none":
            raise ValueError(f"masses() gives the masses of one prompt over the candidates; with passages="
                             f"{self.config.passages} the candidates are passages: use score_details()")
        fitted = self._fit_one_prompt(query, docs)
        if fitted is None:
            raise ValueError(f"ICR: {len(docs)} candidates do not fit one prompt of {self.context_budget} tokens and "
                             f"exceed window={self.config.window}; score them in sliding windows with score_details() "
                             "or rerank(), or raise max_context_tokens / lower max_words")
        return self._masses(ranking, query, docs, first, *fitted)

    def scores(self, masses: ICRMasses) -> list[float]:
        """This reranker's scores (calibration or head profile, then fusion) of one prompt's ``masses``.
        (``orders=2`` averages the scores of two prompts: :meth:`score` does that.)"""
        if not isinstance(masses, ICRMasses):
            raise TypeError(f"scores() takes the ICRMasses of masses(), got {type(masses).__name__}")
        if self.head_scorer is not None and not set(self.layers) <= set(masses.layers):
            raise ValueError(f"these masses hold layers {list(masses.layers)}; this reranker's head profile needs "
                             f"{self.layers}: compute them with this reranker's masses()")
        return final_scores(masses, self.config.calibration, self.head_scorer, masses.layers, self.config.fusion,
                            self.config.fusion_weight)

    def _masses(self, ranking: Ranking, query: str, docs: list, first: list[float], layout: Any,
                cap: int | None) -> ICRMasses:
        key = self._mass_key(ranking)
        hit = self.mass_cache.get(key)
        if hit is not None:
            return with_first_stage(hit, first)
        out = self._compute(query, docs, layout, cap, first)
        self.mass_cache.put(key, out)
        return out

    def _mass_key(self, ranking: Ranking) -> tuple:
        pairs = tuple(self.head_scorer.heads) if self.head_scorer is not None else self.config.heads
        docs = tuple((c.doc_id, c.document.title, c.document.text) for c in ranking.candidates)
        param = next(self.model.parameters())
        model = (self.model_name, type(self.model).__name__, str(param.dtype), str(param.device))
        return (model, self.config.mass_key, tuple(self.layers), pairs, ranking.query.text, docs)

    def _compute(self, query: str, docs: Sequence[tuple[str | None, str]], layout: Any, cap: int | None,
                 first: Sequence[float]) -> ICRMasses:
        t0 = time.perf_counter()
        # The N/A prompt holds the very same (equally truncated) documents.
        na_layout = self._layout(NA_QUERY, docs, cap)
        q_mass, na_mass = span_masses(self.model, self.attn_name, layout, na_layout, self.layers, self.config.span,
                                      self.config.impl)
        return build_masses(q_mass, na_mass, self.head_mask, layout, self.layers, first, time.perf_counter() - t0)

    # ------------------------------------------------------------------ scoring
    def score(self, ranking: Ranking) -> list[float]:
        return self.score_details(ranking).scores

    def score_timed(self, ranking: Ranking) -> tuple[list[float], float]:
        d = self.score_details(ranking)
        return d.scores, d.seconds

    def score_details(self, ranking: Ranking) -> ICRDetails:
        """Score every candidate of ``ranking`` and return all intermediate quantities (and what the
        prompts cut of each document, which :meth:`rerank` counts in :attr:`truncation`)."""
        details = self._details(ranking)
        if details.cuts is not None:
            self._remember_cuts(ranking, details.cuts, details.token_limit)
        return details

    def _details(self, ranking: Ranking) -> ICRDetails:
        query, docs, first = self._inputs(ranking)
        if self.config.orders == 2:
            import numpy as np

            from attnsift.rerank.head_scoring import aggregate

            base = self._sibling(dataclasses.replace(self.config, orders=1))._details(ranking)
            flip = self._sibling(dataclasses.replace(self.config, orders=1, reverse=not self.config.reverse))
            other = flip._details(ranking)
            both = aggregate(np.array([base.scores, other.scores], dtype=np.float64), "z")
            return dataclasses.replace(base, scores=[float(x) for x in both], seconds=base.seconds + other.seconds)
        if self.config.passages == "max":
            return self._passage_details(ranking, first)
        fitted = self._fit_one_prompt(query, docs)
        if fitted is None:
            t0 = time.perf_counter()
            details = self._score_windows(query, docs, first)
            details.seconds = time.perf_counter() - t0
            return details
        m = self._masses(ranking, query, docs, first, *fitted)
        return ICRDetails(list(m.raw), list(m.na), list(m.calibrated), list(m.masked), self.scores(m), m.head_raw,
                          m.head_na, list(m.layers), m.head_masked, m.num_tokens, 1, list(m.tokens), m.seconds,
                          list(fitted[0].cuts), fitted[1])

    def _passage_scorer(self) -> "ICRReranker":
        """The sibling that scores passages as plain candidates: no word cut, no fusion (fused per document)."""
        kept = self.__dict__.get("_passages_inner")
        if kept is None or kept[0] != self.config:
            cfg = dataclasses.replace(self.config, passages="none", passage_words=ICRConfig.passage_words,
                                      passage_stride=ICRConfig.passage_stride, max_words=None, fusion="none",
                                      fusion_weight=ICRConfig.fusion_weight)
            kept = self.__dict__["_passages_inner"] = (self.config, self._sibling(cfg))
        return kept[1]

    def _passage_details(self, ranking: Ranking, first: list[float]) -> ICRDetails:
        """``passages=max``: every document's passages scored as candidates, the best passage per document."""
        import numpy as np

        from attnsift.rerank.base import DocumentCut
        from attnsift.rerank.head_scoring import fuse
        from attnsift.rerank.prompts import split_passages

        cfg = self.config
        owner: dict[str, tuple[int, int]] = {}
        cands, counts = [], []
        for i, c in enumerate(ranking.candidates):
            parts = split_passages(c.document.text, cfg.passage_words, cfg.passage_stride)
            counts.append(len(parts))
            for k, text in enumerate(parts):
                # Zero-padded: equal first-stage scores keep the passages in text order (ties sort by id).
                pid = f"{c.doc_id}#p{k:05d}"
                owner[pid] = (i, k)
                cands.append(Candidate(pid, c.score, Document(pid, text, c.document.title)))
        expanded = Ranking(ranking.query, tuple(cands))
        d = self._passage_scorer()._details(expanded)
        n = len(ranking)
        best = [-1] * n
        for j, c in enumerate(expanded.candidates):
            i, _ = owner[c.doc_id]
            if best[i] < 0 or d.scores[j] > d.scores[best[i]]:
                best[i] = j
        s = np.array([d.scores[j] for j in best], dtype=np.float64)
        f = np.asarray(first, dtype=np.float64)
        if cfg.fusion == "profile":
            s = fuse(s, f, self.head_scorer.fusion_weight, self.head_scorer.fusion)
        elif cfg.fusion != "none":
            s = fuse(s, f, float(cfg.fusion_weight), cfg.fusion)

        def pick(xs: Any) -> Any:
            if xs is None:
                return None
            if isinstance(xs, list):
                return [xs[j] for j in best]
            return xs[..., best]  # (L, H, N_passages) -> (L, H, N)

        cuts = None
        if d.cuts is not None:
            # A document is read whole; a passage may still lose tokens (max_doc_tokens, the context).
            worst: list[Any] = [None] * n
            for j, c in enumerate(expanded.candidates):
                i, _ = owner[c.doc_id]
                pc = d.cuts[j]
                if worst[i] is None or (pc.tokens or 0) - (pc.tokens_kept or 0) > (worst[i].tokens or 0) - (worst[i].tokens_kept or 0):
                    worst[i] = pc
            cuts = []
            for i, c in enumerate(ranking.candidates):
                words = len(c.document.text.split())
                cuts.append(DocumentCut(words, words, worst[i].tokens, worst[i].tokens_kept))
        passages = [(counts[i], owner[expanded.candidates[best[i]].doc_id][1]) for i in range(n)]
        return ICRDetails(pick(d.raw), pick(d.na), pick(d.calibrated), pick(d.masked), [float(x) for x in s],
                          pick(d.head_raw), pick(d.head_na), d.layers, pick(d.head_masked), d.num_tokens, d.windows,
                          pick(d.tokens), d.seconds, cuts, d.token_limit, passages)

    def _inputs(self, ranking: Ranking) -> tuple[str, list, list[float]]:
        if not isinstance(ranking, Ranking):
            raise TypeError(f"ICR scores a Ranking, got {type(ranking).__name__}")
        if len(ranking) == 0:
            raise ValueError(f"ICR needs at least one candidate; got an empty ranking for query {ranking.query.id!r}")
        self._check(ranking)
        docs = [(c.document.title, c.document.text) for c in ranking.candidates]
        return ranking.query.text, docs, [c.score for c in ranking.candidates]

    def _score_windows(self, query: str, docs: Sequence[tuple[str | None, str]], first: Sequence[float]) -> ICRDetails:
        n = len(docs)
        raw, na, cal, masked = ([math.nan] * n for _ in range(4))
        cuts: list[Any] = [None] * n
        caps: list[int] = []

        def reorder(idx: list[int]) -> list[int]:
            sub = [docs[i] for i in idx]
            layout, cap = self._fit_layout(query, sub, force=True)
            if cap is not None:
                caps.append(cap)
            m = self._compute(query, sub, layout, cap, [first[i] for i in idx])
            for j, i in enumerate(idx):
                raw[i], na[i], cal[i], masked[i] = m.raw[j], m.na[j], m.calibrated[j], m.masked[j]
                # The smallest share of a document any window read is what it was cut to.
                if cuts[i] is None or (layout.cuts[j].tokens_kept or 0) < (cuts[i].tokens_kept or 0):
                    cuts[i] = layout.cuts[j]
            s = self.scores(m)
            return sorted(range(len(idx)), key=lambda j: -s[j])  # stable: ties keep the current order

        order, windows = slide_windows(n, self.config.window, self.config.stride, reorder)
        return ICRDetails(raw, na, cal, masked, positional_scores(order), windows=windows, cuts=cuts,
                          token_limit=min(caps) if caps else None)

    # ------------------------------------------------------------------ prompts
    def _layout(self, query: str, docs: Sequence[tuple[str | None, str]], max_doc_tokens: int | None) -> Any:
        from attnsift.rerank.prompts import build_icr_prompt

        return build_icr_prompt(self.tokenizer, query, docs, self.config.instruction, self.config.max_words,
                                max_doc_tokens, self.config.reverse)

    def _fit_one_prompt(self, query: str, docs: Sequence[tuple[str | None, str]]) -> tuple[Any, int | None] | None:
        """The one prompt of the list, or None when it needs sliding windows."""
        fitted = self._fit_layout(query, docs)
        if fitted is None and len(docs) <= self.config.window:
            # One window holds the whole list: one prompt with the documents cut by tokens, so the scores
            # stay comparable (not positions) and the per-head and per-token masses are kept.
            fitted = self._fit_layout(query, docs, force=True)
        return fitted

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


def reference_scores(model: Any, tokenizer: Any, ranking: Ranking, config: ICRConfig | None = None) -> ICRDetails:
    """ICR the slow way: two full eager passes with ``output_attentions=True`` (for benchmarks).
    Materialises every layer's (heads x T x T) attention: small prompts only."""
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
    raw, na, cal, masked = document_scores(q_mass.sum(dim=(0, 1)), na_mass.sum(dim=(0, 1)), layout.doc_spans,
                                           layout.order)
    scores = {"none": raw, "na": cal, "masked_na": masked}[config.calibration]
    return ICRDetails(raw, na, cal, masked, list(scores), num_tokens=layout.num_tokens, layers=list(rr.layers))
