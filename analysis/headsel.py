"""Head and layer selection, calibration variants and fusion, from stored per-head masses (issue 7).

Input: what :func:`attnsift.analysis.heads.collect_head_masses` stored for a set of queries, and their
qrels. Everything here is numpy arithmetic over those arrays: the per-head nDCG@10 grid (the heatmap),
the per-layer curve, the choice of heads / variant / combination / fusion weight on HELD-OUT queries,
and the application of that choice to other query sets. The scoring itself is
:class:`attnsift.rerank.head_scoring.HeadScorer`, the very code the ICR reranker runs.

nDCG@10 here is trec_eval's (linear gains, log2 discount, ideal ranking over all judged documents), on
reranked top-k lists; ties keep the first-stage order. Reported figures are recomputed with
:func:`attnsift.eval.metrics.evaluate` on real runs.
"""
from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from attnsift.analysis.heads import QueryFeatures
from attnsift.rerank.head_scoring import (AGGREGATES, FUSIONS, PROFILE_FORMAT, HeadScorer, head_values,
                                          resample_prior)
from attnsift.types import Candidate, Query, Ranking, Run

# Variants compared in the analysis (``na`` is a diagnostic, never selected).
SELECTABLE = ("raw", "cal", "masked", "norm", "prior")
K_GRID = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 270)
W_GRID = tuple(round(x, 2) for x in np.arange(0.0, 1.0001, 0.05))


@dataclass
class Judged:
    """One query's stored masses plus its gains (first-stage order) and ideal DCG@10."""

    f: QueryFeatures
    gains: np.ndarray
    idcg: float


_DISCOUNT = 1.0 / np.log2(np.arange(2, 12))


def judge(features: Sequence[QueryFeatures], qrels: Mapping[str, Mapping[str, int]]) -> list[Judged]:
    """Attach gains to the queries that have judgements (others are left out, as ``evaluate`` does)."""
    out = []
    for f in features:
        q = qrels.get(f.qid)
        if not q:
            continue
        gains = np.array([max(int(q.get(d, 0)), 0) for d in f.doc_ids], dtype=np.float64)
        ideal = np.sort(np.array([max(int(g), 0) for g in q.values()], dtype=np.float64))[::-1][:10]
        out.append(Judged(f, gains, float((ideal * _DISCOUNT[: len(ideal)]).sum())))
    return out


def ndcg10(scores: np.ndarray, j: Judged) -> np.ndarray:
    """nDCG@10 of ranking the query's candidates by each row of ``scores`` (..., N)."""
    if j.idcg <= 0:
        return np.zeros(scores.shape[:-1])
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, axis=-1, kind="stable")[..., :10]
    g = j.gains[order]
    return (g * _DISCOUNT[: g.shape[-1]]).sum(axis=-1) / j.idcg


def first_stage_ndcg(judged: Sequence[Judged]) -> float:
    return float(np.mean([ndcg10(np.asarray(j.f.first_stage), j) for j in judged]))


def position_prior(judged: Sequence[Judged] | Sequence[QueryFeatures]) -> np.ndarray:
    """(L, H, N) mean over queries of ``raw / sum raw`` at each first-stage position (lists of equal N)."""
    feats = [getattr(j, "f", j) for j in judged]
    n = max(f.raw.shape[-1] for f in feats)
    rows = [f.raw / np.maximum(f.raw.sum(axis=-1, keepdims=True), 1e-12) for f in feats if f.raw.shape[-1] == n]
    return np.mean(rows, axis=0)


def per_head_ndcg(judged: Sequence[Judged], variant: str, prior: np.ndarray | None = None) -> np.ndarray:
    """(L, H) mean nDCG@10 of ranking by each single head's ``variant`` values."""
    total = None
    for j in judged:
        f = j.f
        p = None
        if prior is not None:
            L, H, n0 = prior.shape
            p = resample_prior(prior.reshape(L * H, n0), f.raw.shape[-1]).reshape(L, H, -1)
        v = head_values(f.raw.astype(np.float64), f.na.astype(np.float64), f.masked.astype(np.float64), variant, p)
        n = ndcg10(v, j)
        total = n if total is None else total + n
    return total / len(judged)


def per_layer_ndcg(judged: Sequence[Judged], variant: str, prior: np.ndarray | None = None,
                   how: str = "sum") -> np.ndarray:
    """(L,) mean nDCG@10 of ranking by all heads of one layer combined."""
    L = judged[0].f.raw.shape[0]
    H = judged[0].f.raw.shape[1]
    out = np.zeros(L)
    for layer in range(L):
        heads = [(layer, h) for h in range(H)]
        out[layer] = evaluate_selection(judged, heads, variant, how, prior)
    return out


def _prior_for(heads: Sequence[tuple[int, int]], prior: np.ndarray | None) -> np.ndarray | None:
    if prior is None:
        return None
    return np.stack([prior[l, h] for l, h in heads])


def selection_scores(judged: Sequence[Judged], heads: Sequence[tuple[int, int]], variant: str, how: str,
                     prior: np.ndarray | None = None, fusion: str | None = None,
                     weight: float | None = None) -> list[np.ndarray]:
    """Per query, the document scores of a selection (the reranker's arithmetic)."""
    L = judged[0].f.raw.shape[0]
    scorer = HeadScorer(heads, variant, how, _prior_for(heads, prior) if variant == "prior" else None, fusion, weight)
    return [scorer.scores(j.f.raw, j.f.na, j.f.masked, list(range(L)), j.f.first_stage) for j in judged]


def evaluate_selection(judged: Sequence[Judged], heads: Sequence[tuple[int, int]], variant: str, how: str,
                       prior: np.ndarray | None = None, fusion: str | None = None, weight: float | None = None) -> float:
    scores = selection_scores(judged, heads, variant, how, prior, fusion, weight)
    return float(np.mean([ndcg10(s, j) for s, j in zip(scores, judged)]))


def ranked_heads(grid: np.ndarray) -> list[tuple[int, int]]:
    """(layer, head) pairs by descending value of ``grid`` (L, H); ties by layer, then head."""
    L, H = grid.shape
    flat = sorted(((float(grid[l, h]), l, h) for l in range(L) for h in range(H)), key=lambda t: (-t[0], t[1], t[2]))
    return [(l, h) for _, l, h in flat]


def select(judged: Sequence[Judged], variants: Sequence[str] = SELECTABLE, aggregates: Sequence[str] = AGGREGATES,
           k_grid: Sequence[int] = K_GRID, w_grid: Sequence[float] = W_GRID) -> dict[str, Any]:
    """Choose heads, variant, combination and fusion weight on ``judged`` (held-out queries).

    For each variant the heads are ranked by their single-head nDCG@10; the top ``k`` are combined for
    every ``k`` in ``k_grid`` and each aggregate. The best configuration (ties: smaller k) is kept, then
    the fusion weight of both fusion methods is chosen on the same queries.
    """
    L, H = judged[0].f.raw.shape[:2]
    prior = position_prior(judged)
    shown = [v for v in ("raw", "na_mass", "cal", "masked", "norm", "prior") if v in variants or (v == "na_mass" and "cal" in variants)]
    grids = {v: per_head_ndcg(judged, v, prior) for v in shown}
    layers = {v: per_layer_ndcg(judged, v, prior).tolist() for v in ("raw", "cal", "masked", "norm") if v in variants}
    all_heads = [(l, h) for l in range(L) for h in range(H)]
    table = []
    for v in variants:
        order = ranked_heads(grids[v])
        for how in aggregates:
            for k in k_grid:
                if k > len(order):
                    continue
                table.append({"variant": v, "aggregate": how, "k": k,
                              "ndcg": evaluate_selection(judged, order[:k], v, how, prior)})
    # All heads of all layers (the published recipe's sum), for reference.
    reference = {v: evaluate_selection(judged, all_heads, v, "sum", prior) for v in ("raw", "cal", "masked", "norm")
                 if v in variants}
    best = max(table, key=lambda r: (round(r["ndcg"], 10), -r["k"]))
    heads = ranked_heads(grids[best["variant"]])[: best["k"]]
    fusion_table = []
    for method in FUSIONS:
        for w in w_grid:
            fusion_table.append({"method": method, "weight": float(w),
                                 "ndcg": evaluate_selection(judged, heads, best["variant"], best["aggregate"], prior,
                                                            method, float(w))})
    fbest = max(fusion_table, key=lambda r: (round(r["ndcg"], 10), r["method"] == "interp", r["weight"]))
    selection = {"variant": best["variant"], "aggregate": best["aggregate"], "k": best["k"],
                 "heads": [list(x) for x in heads], "heldout_ndcg": best["ndcg"]}
    if best["variant"] == "prior":
        selection["prior"] = _prior_for(heads, prior).tolist()
    return {
        "per_head": {v: g.tolist() for v, g in grids.items()},
        "per_layer": layers,
        "all_heads": reference,
        "first_stage": first_stage_ndcg(judged),
        "table": table,
        "selection": selection,
        "fusion": {"method": fbest["method"], "weight": fbest["weight"], "heldout_ndcg": fbest["ndcg"]},
        "fusion_table": fusion_table,
        "queries": len(judged),
    }


def make_profile(analysis: Mapping[str, Any], model: str, num_layers: int, num_heads: int,
                 selected_on: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON profile (what ``heads=<profile>`` reads) from :func:`select`'s result."""
    return {
        "format": PROFILE_FORMAT,
        "version": 1,
        "model": model,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "selected_on": dict(selected_on),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.system()}",
        **dict(analysis),
    }


def selection_run(judged: Sequence[Judged], heads: Sequence[tuple[int, int]], variant: str, how: str,
                  prior: np.ndarray | None = None, fusion: str | None = None, weight: float | None = None,
                  name: str = "heads") -> Run:
    """A Run (for :func:`attnsift.eval.metrics.evaluate`) of a selection over ``judged``'s queries."""
    return scores_run(judged, selection_scores(judged, heads, variant, how, prior, fusion, weight), name)


def scores_run(judged: Sequence[Judged], scores: Sequence[np.ndarray], name: str) -> Run:
    """A Run of any per-query document scores (``judged`` order); ties keep the first-stage order."""
    return Run((_ranking(j.f, s) for j, s in zip(judged, scores)), name=name)


def first_stage_as_run(judged: Sequence[Judged], name: str = "bm25") -> Run:
    return Run((_ranking(j.f, np.asarray(j.f.first_stage)) for j in judged), name=name)


def _ranking(f: QueryFeatures, scores: np.ndarray) -> Ranking:
    # Ties keep the first-stage order, as in ndcg10: a tiny rank-based epsilon breaks them.
    n = len(f.doc_ids)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    rank_score = np.empty(n)
    rank_score[order] = np.arange(n, 0, -1, dtype=np.float64)
    return Ranking(Query(f.qid), tuple(Candidate(d, float(r)) for d, r in zip(f.doc_ids, rank_score)))


# ------------------------------------------------------------------------------------------ figures
def plot_head_heatmap(profile: Mapping[str, Any], path: Any, variants: Sequence[str] = ("raw", "norm", "masked")) -> Any:
    """Layer x head heatmaps of single-head nDCG@10 (one panel per variant), selected heads boxed."""
    from attnsift.bench.quality import _plt, _save_figure

    plt = _plt()
    grids = [np.asarray(profile["per_head"][v]) for v in variants]
    L, H = grids[0].shape
    fig, axes = plt.subplots(1, len(variants), figsize=(3.2 * len(variants) + 1, 0.22 * L + 2), sharey=True)
    axes = np.atleast_1d(axes)
    lo = min(float(g.min()) for g in grids)
    hi = max(float(g.max()) for g in grids)
    sel = {tuple(x) for x in profile["selection"]["heads"]}
    for ax, v, g in zip(axes, variants, grids):
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(f"{v}", fontsize=10)
        ax.set_xlabel("head")
        ax.set_xticks(range(H))
        if v == profile["selection"]["variant"]:
            for l, h in sel:
                ax.add_patch(plt.Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.2))
    axes[0].set_ylabel("layer")
    fs = profile.get("first_stage")
    where = profile.get("selected_on", {})
    fig.suptitle(f"{profile.get('model')}: single-head nDCG@10 on {where.get('dataset')} {where.get('split')} "
                 f"({profile.get('queries')} q; first stage {fs:.3f}); red = selected", fontsize=9)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="nDCG@10")
    return _save_figure(plt, fig, path)


def plot_layer_curve(profile: Mapping[str, Any], path: Any) -> Any:
    """nDCG@10 of each layer's heads combined, per variant, against the first stage."""
    from attnsift.bench.quality import _plt, _save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for v, ys in profile["per_layer"].items():
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=v)
    ax.axhline(profile["first_stage"], color="black", ls="--", lw=1, label="first stage")
    ax.set_xlabel("layer")
    ax.set_ylabel("nDCG@10")
    where = profile.get("selected_on", {})
    ax.set_title(f"{profile.get('model')}: one layer's heads summed ({where.get('dataset')} {where.get('split')})",
                 fontsize=9)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return _save_figure(plt, fig, path)
