"""Scoring documents from selected attention heads, and head profiles (issue 7).

A *head profile* is a JSON file written by ``attnsift analyze heads``: per-(layer, head) nDCG@10 on
held-out queries, and the selection made there (which heads, how each head's mass is calibrated, how
the heads are combined, and the weight of the fusion with the first stage). The ICR reranker takes one
through ``heads=<path>`` or ``heads=auto`` (the profile shipped for the model).

The arithmetic lives here, in numpy, and is shared by the offline analysis (which scores thousands of
head subsets from stored masses) and by the reranker, so the two give the same scores by construction.

Per head, with ``R`` the real query's mass per document, ``A`` the N/A query's, ``M`` the per-head
2-sigma-masked calibrated mass, and ``P`` a per-position prior (mean of ``R / sum R`` at each prompt
position over held-out queries)::

    raw    : R
    na_mass: A                      (diagnostic: the content-free query alone; old profiles say "na",
                                     which is still read: it is not ICR's calibration="na", R - A)
    cal    : R - A                  (ICR's calibration, per head)
    masked : M                      (ICR's masked_na, per head)
    norm   : R / sum R - A / sum A  (distributions over the documents, then subtracted)
    prior  : R / sum R - P          (position debiasing with a prior estimated once per model)

Combination over the selected heads: ``sum`` adds the per-head values; ``z`` standardises each head's
values over the candidate list (mean 0, std 1) and averages, so no single head dominates by scale.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

VARIANTS = ("raw", "na_mass", "cal", "masked", "norm", "prior")
#: earlier names of head variants, still accepted (profiles written before the rename)
_RENAMED = {"na": "na_mass"}
AGGREGATES = ("sum", "z")
FUSIONS = ("interp", "rrf")
PROFILE_FORMAT = "attnsift-head-profile"
RRF_K = 60.0

_EPS = 1e-12


def variant_name(variant: str) -> str:
    """The current name of a head variant (``"na"`` -> ``"na_mass"``; others unchanged)."""
    return _RENAMED.get(variant, variant)


def head_values(raw: np.ndarray, na: np.ndarray, masked: np.ndarray | None, variant: str,
                prior: np.ndarray | None = None) -> np.ndarray:
    """Per-head document values (..., N) of ``variant`` from masses of shape (..., N)."""
    variant = variant_name(variant)
    if variant == "raw":
        return raw
    if variant == "na_mass":
        return na
    if variant == "cal":
        return raw - na
    if variant == "masked":
        if masked is None:
            raise ValueError("variant 'masked' needs the per-head masked masses")
        return masked
    rn = raw / np.maximum(raw.sum(axis=-1, keepdims=True), _EPS)
    if variant == "norm":
        return rn - na / np.maximum(na.sum(axis=-1, keepdims=True), _EPS)
    if variant == "prior":
        if prior is None:
            raise ValueError("variant 'prior' needs a position prior")
        return rn - prior
    raise ValueError(f"unknown head variant {variant!r}; valid: {VARIANTS}")


def aggregate(values: np.ndarray, how: str) -> np.ndarray:
    """Combine per-head values (K, N) into document scores (N,)."""
    if how == "sum":
        return values.sum(axis=0)
    if how == "z":
        mu = values.mean(axis=-1, keepdims=True)
        sd = values.std(axis=-1, keepdims=True)
        return ((values - mu) / np.maximum(sd, _EPS)).mean(axis=0)
    raise ValueError(f"unknown aggregate {how!r}; valid: {AGGREGATES}")


def resample_prior(prior: np.ndarray, n: int) -> np.ndarray:
    """A per-position prior (K, N0) over first-stage positions, resampled to ``n`` positions
    (linear interpolation on relative position; renormalised to sum 1 per head)."""
    prior = np.asarray(prior, dtype=np.float64)
    n0 = prior.shape[-1]
    if n == n0:
        return prior
    if n == 1:
        return np.ones(prior.shape[:-1] + (1,))
    x0 = np.linspace(0.0, 1.0, n0)
    x = np.linspace(0.0, 1.0, n)
    out = np.stack([np.interp(x, x0, row) for row in prior.reshape(-1, n0)]).reshape(prior.shape[:-1] + (n,))
    return out / np.maximum(out.sum(axis=-1, keepdims=True), _EPS)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return np.zeros_like(x) if hi - lo <= _EPS else (x - lo) / (hi - lo)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks by descending value; ties keep list order (the first-stage order)."""
    order = np.argsort(-np.asarray(x, dtype=np.float64), kind="stable")
    r = np.empty(len(order))
    r[order] = np.arange(1, len(order) + 1)
    return r


def fuse(attention: np.ndarray, first_stage: np.ndarray, weight: float, method: str = "interp") -> np.ndarray:
    """Fusion of attention scores with first-stage scores; ``weight`` is the attention's share.

    interp: ``w * minmax(attention) + (1 - w) * minmax(first_stage)``;
    rrf:    ``w / (60 + rank_attention) + (1 - w) / (60 + rank_first_stage)``.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    if method == "interp":
        return weight * minmax(attention) + (1.0 - weight) * minmax(first_stage)
    if method == "rrf":
        return weight / (RRF_K + _ranks(attention)) + (1.0 - weight) / (RRF_K + _ranks(first_stage))
    raise ValueError(f"unknown fusion {method!r}; valid: {FUSIONS}")


class HeadScorer:
    """Scores a candidate list from per-head masses with a fixed selection (from a profile)."""

    def __init__(self, heads: Sequence[tuple[int, int]], variant: str = "norm", aggregate: str = "sum",
                 prior: Any = None, fusion: str | None = None, fusion_weight: float | None = None):
        variant = variant_name(variant)
        if variant not in VARIANTS:
            raise ValueError(f"unknown head variant {variant!r}; valid: {VARIANTS}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; valid: {AGGREGATES}")
        self.heads = [(int(l), int(h)) for l, h in heads]
        if not self.heads:
            raise ValueError("a head selection needs at least one (layer, head)")
        self.variant, self.how = variant, aggregate
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        if variant == "prior" and (self.prior is None or self.prior.shape[0] != len(self.heads)):
            raise ValueError("variant 'prior' needs a prior of shape (len(heads), positions)")
        self.fusion, self.fusion_weight = fusion, fusion_weight

    def attention_scores(self, raw: np.ndarray, na: np.ndarray, masked: np.ndarray | None,
                         layers: Sequence[int]) -> np.ndarray:
        """Document scores (N,) from masses (len(layers), heads, N) in first-stage order."""
        index = {l: i for i, l in enumerate(layers)}
        try:
            li = [index[l] for l, _ in self.heads]
        except KeyError as e:
            raise ValueError(f"layer {e.args[0]} of the head selection was not recorded (layers {list(layers)})") from None
        hi = [h for _, h in self.heads]
        sel = lambda a: None if a is None else np.asarray(a, dtype=np.float64)[li, hi]  # noqa: E731
        prior = None
        if self.variant == "prior":
            prior = resample_prior(self.prior, np.asarray(raw).shape[-1])
        vals = head_values(sel(raw), sel(na), sel(masked), self.variant, prior)
        return aggregate(vals, self.how)

    def scores(self, raw: np.ndarray, na: np.ndarray, masked: np.ndarray | None, layers: Sequence[int],
               first_stage: np.ndarray) -> np.ndarray:
        a = self.attention_scores(raw, na, masked, layers)
        if self.fusion is None or self.fusion_weight is None:
            return a
        return fuse(a, np.asarray(first_stage, dtype=np.float64), self.fusion_weight, self.fusion)


# ---------------------------------------------------------------------------------------- profiles
def is_profile(heads: Any) -> bool:
    """Whether ``heads`` names a head profile (``"auto"`` or a ``.json`` path) rather than (layer, head) pairs."""
    return isinstance(heads, str)


def parse_heads(value: Any) -> tuple[tuple[int, int], ...] | str | None:
    """``heads`` as given (``"10:3,12:0"``, ``"auto"``, ``"p.json"``, pairs or None) -> pairs, a profile, or None.

    Raises
    ------
    ValueError
        Anything else, with the accepted forms.
    """
    accepted = "(layer, head) pairs such as '10:3,12:0', 'auto', a .json head profile, or none"
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == "auto" or text.endswith(".json"):
            return text
        try:
            pairs = tuple(tuple(int(x) for x in p.split(":")) for p in text.split(",") if p.strip())
        except ValueError:
            raise ValueError(f"heads must be {accepted}; got {value!r}") from None
    else:
        try:
            pairs = tuple(tuple(int(x) for x in p) for p in value)
        except (TypeError, ValueError):
            raise ValueError(f"heads must be {accepted}; got {value!r}") from None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f"heads must be {accepted} (at least one pair, two numbers each); got {value!r}")
    return tuple((int(l), int(h)) for l, h in pairs)


def packaged_profile(model_name: str, reranker: str = "icr") -> Path:
    """The profile shipped for ``model_name`` (an alias such as ``smollm2-135m``) and ``reranker``
    (``icr`` or ``blockrank``): ``rerank/profiles/<reranker>-<model>.json``."""
    import re

    here = Path(__file__).resolve().parent / "profiles"
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", str(model_name))
    path = here / f"{reranker}-{slug}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in here.glob("*.json"))
        raise ValueError(
            f"{reranker}: no head profile ships for model {model_name!r} (shipped: {shipped}), so 'auto' cannot be "
            f"resolved. Make one with `attnsift analyze heads --reranker {reranker} --model {model_name} --dataset "
            "nfcorpus --split dev --out profile.json` and pass its path instead of auto"
        )
    return path


def read_profile(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"head profile {path} does not exist; make one with `attnsift analyze heads`")
    try:
        prof = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"head profile {path} is not valid JSON ({e}); regenerate it with `attnsift analyze heads`") from None
    if not isinstance(prof, dict) or prof.get("format") != PROFILE_FORMAT or "selection" not in prof:
        raise ValueError(f"{path} is not an attnsift head profile (format {PROFILE_FORMAT!r} with a 'selection')")
    return prof


def profile_option_mismatch(prof: Mapping[str, Any], config: Any) -> dict[str, tuple[str, str]]:
    """Reranker options the profile was selected with (``analyze heads --option``, and its ``--max-words``)
    that ``config`` sets otherwise: ``{name: (profile's value, config's value)}``. Logged as a warning by the rerankers:
    heads chosen under one setting are not known to be good under another."""
    where = prof.get("selected_on") or {}
    chosen = dict(where.get("options") or {})
    if where.get("max_words") is not None:  # the document cut the masses were collected at
        chosen.setdefault("max_words", where["max_words"])
    return {k: (str(v), str(getattr(config, k))) for k, v in chosen.items()
            if hasattr(config, k) and str(getattr(config, k)) != str(v)}


def warn_profile_options(prof: Mapping[str, Any], config: Any, path: Any) -> None:
    diff = profile_option_mismatch(prof, config)
    if diff:
        logging.getLogger("attnsift.rerank").warning(
            "head profile %s was selected with %s; this reranker has %s. Pass the same --option values to "
            "score as the profile was chosen", path, ", ".join(f"{k}={a}" for k, (a, _) in diff.items()),
            ", ".join(f"{k}={b}" for k, (_, b) in diff.items()))


def scorer_from_profile(prof: Mapping[str, Any], num_layers: int | None = None, num_heads: int | None = None) -> HeadScorer:
    sel = prof["selection"]
    if num_layers is not None and (prof.get("num_layers"), prof.get("num_heads")) != (num_layers, num_heads):
        raise ValueError(
            f"head profile for a {prof.get('num_layers')}x{prof.get('num_heads')} model ({prof.get('model')}) does not "
            f"fit this {num_layers}x{num_heads} model; make a profile for it with `attnsift analyze heads`"
        )
    fusion = prof.get("fusion") or {}
    return HeadScorer([tuple(x) for x in sel["heads"]], sel["variant"], sel["aggregate"], sel.get("prior"),
                      fusion.get("method"), fusion.get("weight"))
