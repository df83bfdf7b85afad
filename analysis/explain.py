"""``attnsift explain``: which tokens of each candidate drew the query's attention, and how the ranking moved.

An attention reranker can show *why* it ranked a document where it did: the calibrated attention mass
``c(t) = a_query(t) - a_N/A(t)`` of every document token (ICR, METHODS.md section 1). This module
computes that for one query and renders it as a self-contained HTML page (tokens highlighted, rank
change from the first stage, relevance labels from the qrels) and a PNG summary.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from attnsift.io import atomic_write_text
from attnsift.types import Ranking


@dataclass
class ExplainedDocument:
    doc_id: str
    title: str | None
    first_rank: int                      # 1-based rank in the first stage
    new_rank: int                        # 1-based rank after reranking
    first_score: float
    score: float                         # reranker score
    raw: float                           # query attention mass (uncalibrated)
    na: float                            # N/A attention mass
    relevance: int | None                # qrels grade, None = unjudged
    tokens: list[tuple[str, float, float]] = field(default_factory=list)  # (text, query mass, N/A mass)

    @property
    def movement(self) -> int:
        return self.first_rank - self.new_rank


@dataclass
class Explanation:
    dataset: str
    query_id: str
    query: str
    reranker: str
    model: str
    calibration: str
    documents: list[ExplainedDocument]   # in the new (reranked) order
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"first stage": {...}, "reranked": {...}}
    rel_level: int = 1                   # minimum grade counted relevant (2 on TREC DL)


def explain_icr(ds: Any, query_id: str, first: Ranking, reranker: Any, depth: int = 10,
                metrics: Sequence[str] = ("nDCG@10",)) -> Explanation:
    """Rerank ``first.top(depth)`` with an ICR reranker and collect per-token attention for the page.

    Parameters
    ----------
    ds : Dataset
        For the name, the qrels and the relevance level.
    query_id : str
    first : Ranking
        The first stage's ranking of the query, texts attached to (at least) its top ``depth``.
    reranker : ICRReranker
    depth : int
        How many first-stage candidates are reranked and shown.
    metrics : sequence of str
        Per-query measures shown for the first stage and the reranked list.
    """
    from attnsift.eval.metrics import evaluate
    from attnsift.types import Candidate, Run, check_k

    head = first.top(check_k(depth, "depth"))
    details = reranker.score_details(head)
    if details.tokens is None:
        raise ValueError(f"the {len(head)} candidates did not fit one prompt (windows were used); "
                         "explain fewer candidates with --depth or shorten documents with --option max_words=...")
    reranked = Ranking(head.query, tuple(Candidate(c.doc_id, s, c.document) for c, s in zip(head.candidates, details.scores)))
    new_rank = {c.doc_id: i + 1 for i, c in enumerate(reranked.candidates)}
    qrels = ds.qrels.get(query_id, {})
    docs = []
    for i, c in enumerate(head.candidates):
        docs.append(ExplainedDocument(
            doc_id=c.doc_id, title=c.document.title if c.document else None, first_rank=i + 1,
            new_rank=new_rank[c.doc_id], first_score=c.score, score=details.scores[i], raw=details.raw[i],
            na=details.na[i], relevance=qrels.get(c.doc_id), tokens=list(details.tokens[i])))
    docs.sort(key=lambda d: d.new_rank)
    out = {}
    if qrels:
        for label, rk in (("first stage", head), ("reranked", reranked)):
            rep = evaluate(Run([rk]), {query_id: qrels}, metrics=list(metrics), rel_level=ds.rel_level,
                           queries=[query_id])
            out[label] = dict(rep.aggregate)
    return Explanation(ds.name, query_id, head.query.text, getattr(reranker, "name", "icr"),
                       str(getattr(reranker, "model_name", "") or ""), getattr(reranker.config, "calibration", ""),
                       docs, out, rel_level=ds.rel_level)


# ----------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:20px;font-weight:600}
header .q{font-size:17px;color:#ffd68a}
header .meta{font-size:12px;color:#aab3c5;margin-top:6px}
main{padding:18px 28px;max-width:1100px}
.legend{font-size:12px;color:#555;margin:0 0 14px}
.legend span{padding:1px 6px;border-radius:3px;margin:0 4px}
.doc{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:12px 16px;margin:0 0 12px;display:grid;
     grid-template-columns:92px 1fr;gap:14px}
.rank{text-align:center}
.rank .new{font-size:28px;font-weight:700}
.rank .mv{font-size:13px;font-weight:600}
.up{color:#1a8f3c}.down{color:#c0392b}.same{color:#888}
.rank .was{font-size:11px;color:#888}
.badge{display:inline-block;font-size:11px;padding:1px 7px;border-radius:10px;margin-left:6px;vertical-align:middle}
.rel2,.rel3{background:#1a8f3c;color:#fff}.rel1{background:#8fcf9f;color:#10351c}.rel0{background:#eee;color:#555}
.unj{background:#fff;color:#999;border:1px dashed #ccc}
.title{font-weight:600;margin-bottom:4px}
.id{font-size:11px;color:#888;font-weight:400;margin-left:6px}
.scores{font-size:11px;color:#777;margin-top:6px}
.text{line-height:1.7;font-size:14px;white-space:pre-wrap}
.text span{border-radius:2px}
.metrics{font-size:13px;margin:0 0 14px}
"""


def _color(value: float, scale: float) -> str:
    """Orange for attention above the N/A baseline, blue for below; alpha by magnitude."""
    if scale <= 0 or value == 0 or not math.isfinite(value):
        return "transparent"
    a = min(1.0, abs(value) / scale) ** 0.7 * 0.85
    return f"rgba(255,140,0,{a:.3f})" if value > 0 else f"rgba(60,120,220,{a * 0.6:.3f})"


def render_html(ex: Explanation) -> str:
    """A self-contained HTML page (inline CSS, no scripts) for one explanation."""
    deltas = [q - n for d in ex.documents for _, q, n in d.tokens]
    # Colour scale: a high percentile of |c(t)|, so one outlier token does not wash out the rest.
    mags = sorted(abs(x) for x in deltas if math.isfinite(x))
    scale = mags[int(0.98 * (len(mags) - 1))] if mags else 1.0
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>attnsift explain: {e(ex.dataset)} query {e(ex.query_id)}</title><style>{_CSS}</style></head><body>",
             "<header><h1>Why this ranking? Attention of the query on each candidate</h1>",
             f"<div class='q'>“{e(ex.query)}”</div>",
             f"<div class='meta'>data set {e(ex.dataset)} · query {e(ex.query_id)} · reranker {e(ex.reranker)}"
             f"{(' · model ' + e(ex.model)) if ex.model else ''} · calibration {e(ex.calibration)} · "
             f"{len(ex.documents)} candidates</div></header><main>"]
    if ex.metrics:
        cells = " · ".join(f"{e(k)}: " + ", ".join(f"{m} {v:.3f}" for m, v in vals.items()) for k, vals in ex.metrics.items())
        parts.append(f"<p class='metrics'><strong>This query</strong> — {cells}</p>")
    parts.append("<p class='legend'>Token colour: calibrated attention c(t) = mass from the query − mass from the "
                 "content-free “N/A” query. <span style='background:rgba(255,140,0,.8)'>drew the query's attention</span>"
                 "<span style='background:rgba(60,120,220,.45)'>less than the N/A baseline</span> "
                 "Hover a token for its values. Left: new rank, movement from the first stage.</p>")
    for d in ex.documents:
        mv = d.movement
        cls, arrow = ("up", f"▲ {mv}") if mv > 0 else (("down", f"▼ {-mv}") if mv < 0 else ("same", "="))
        if d.relevance is None:
            badge = "<span class='badge unj'>unjudged</span>"
        else:
            badge = f"<span class='badge rel{min(max(d.relevance, 0), 3)}'>relevance {d.relevance}</span>"
        toks = []
        for text, q, n in d.tokens:
            c = q - n
            toks.append(f"<span style='background:{_color(c, scale)}' title='query {q:.2e} · N/A {n:.2e} · c {c:+.2e}'>"
                        f"{e(text)}</span>")
        title = e(d.title) if d.title else "(untitled)"
        parts.append(
            f"<div class='doc'><div class='rank'><div class='new'>{d.new_rank}</div><div class='mv {cls}'>{arrow}</div>"
            f"<div class='was'>was {d.first_rank}</div></div><div><div class='title'>{title}<span class='id'>{e(d.doc_id)}</span>"
            f"{badge}</div><div class='text'>{''.join(toks)}</div>"
            f"<div class='scores'>reranker score {d.score:.4g} · query mass {d.raw:.4g} · N/A mass {d.na:.4g} · "
            f"first-stage score {d.first_score:.4g}</div></div></div>")
    parts.append("</main></body></html>")
    return "".join(parts)


def render_png(ex: Explanation, path: str | Path) -> Path:
    """A two-panel PNG: rank changes (first stage -> reranked) and each candidate's most attended words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ex.documents)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.42 * n + 1.2)),
                                   gridspec_kw={"width_ratios": [1, 2.2]})
    for d in ex.documents:
        relevant = d.relevance is not None and d.relevance >= ex.rel_level
        color = "#1a8f3c" if relevant else ("#9aa3b2" if d.relevance is not None else "#c9ced8")
        ax1.plot([0, 1], [d.first_rank, d.new_rank], "-o", color=color, lw=2.2 if relevant else 1.2, ms=5)
        ax1.text(-0.04, d.first_rank, d.doc_id, ha="right", va="center", fontsize=7)
    ax1.set_xlim(-0.6, 1.1)
    ax1.set_ylim(n + 0.5, 0.5)
    ax1.set_xticks([0, 1], ["first stage", ex.reranker])
    ax1.set_ylabel("rank")
    ax1.set_title("rank changes (green: relevant)", fontsize=10)
    for side in ("top", "right"):
        ax1.spines[side].set_visible(False)

    ax2.axis("off")
    ax2.set_xlim(0, 1)
    ax2.set_ylim(n + 0.5, 0.5)
    ax2.set_title("most attended words per candidate (calibrated)", fontsize=10)
    for d in ex.documents:
        words = _top_words(d.tokens, 6)
        x = 0.0
        ax2.text(x, d.new_rank, f"{d.new_rank:>2}.", fontsize=8, va="center", family="monospace")
        x = 0.05
        for w, c in words:
            ax2.text(x, d.new_rank, w, fontsize=8, va="center",
                     bbox=dict(boxstyle="round,pad=0.2", fc=(1.0, 0.55, 0.0, min(0.85, 0.2 + c)), ec="none"))
            x += min(0.16, 0.02 + 0.012 * len(w))
    fig.suptitle(f"{ex.dataset} · “{ex.query[:90]}”", fontsize=11)
    fig.tight_layout()
    from attnsift.bench.quality import _save_figure

    return _save_figure(plt, fig, path, dpi=110)


def _top_words(tokens: list[tuple[str, float, float]], k: int) -> list[tuple[str, float]]:
    """Merge sub-word pieces into words and return the ``k`` words with the highest calibrated mass (scaled 0-1)."""
    words: list[tuple[str, float]] = []
    cur, val = "", 0.0
    for text, q, n in tokens:
        if (text[:1].isspace() or not cur) and cur.strip():
            words.append((cur.strip(), val))
            cur, val = "", 0.0
        cur += text
        val += q - n
        if text[-1:].isspace():
            words.append((cur.strip(), val))
            cur, val = "", 0.0
    if cur.strip():
        words.append((cur.strip(), val))
    words = [(w, v) for w, v in words if any(ch.isalnum() for ch in w)]
    best = sorted(words, key=lambda wv: -wv[1])[:k]
    top = max((v for _, v in best), default=1.0) or 1.0
    return [(w[:18], max(0.0, v / top)) for w, v in best if v > 0]


def write_explanation(ex: Explanation, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"explain_{ex.dataset}_{ex.query_id}".replace("/", "_")
    html_path = atomic_write_text(out / f"{stem}.html", render_html(ex))
    png_path = render_png(ex, out / f"{stem}.png")
    return html_path, png_path
